"""The actor-critic algorithms' shared part (SAC, TD3): one actor and two
critics with their masks, and the network-side noise layout they share.

`ActorCriticAlgorithm` builds the three networks, each through
`Algorithm.build_network` (masks, and the compressed twin in 'sparse'
execution), in a fixed order: actor, critic_1, critic_2, so that every run
of a seed draws the same weights and masks. A subclass then builds its
TF-Agents agent on them and calls `_finish_actor_critic`.
"""

from typing import Callable, Dict, Optional, Sequence

import tensorflow as tf

from rigl.rl.tfagents import anf
from rigl.rl.tfagents import networks
from rigl.rl.tfagents import tf_agents_private as tfa_private
from rigl.rl.tfagents.algos import base
from rigl.rl.tfagents.run import seeding


class ActorCriticAlgorithm(base.OffPolicyAlgorithm):
    """An off-policy agent with an actor and two critics (SAC, TD3).

    Subclasses call `_build_actor_critics` for the networks, build `agent`
    on them, then call `_finish_actor_critic`.
    """

    # Actor outputs per action dimension (SAC: a mean and a std).
    actor_output_factor = 1

    def network_losses(self, batch) -> list:
        """The actor-critic agents' losses, as their mask updates use them
        (critic loss for both critics, actor loss for the actor)."""
        losses_of = getattr(self.agent, '_mask_update_losses', None)
        if losses_of is None:
            return super().network_losses(batch)
        transition = base.transition_batch(
            {name: tf.convert_to_tensor(value)
             for name, value in batch.items()})
        pairs = losses_of(transition.time_step, transition.action_step.action,
                          transition.next_time_step, None)
        names = {id(optimizer): [n for n in self.networks if n.startswith(key)]
                 for key, optimizer in self.masked_optimizers.items()}
        return [(names[id(optimizer)], loss) for optimizer, loss in pairs]

    def _build_actor_critics(self, create_actor: Callable[..., tf.Module],
                             widths: Optional[Sequence[float]] = None,
                             initializer: str = 'tf_agents'
                             ) -> Dict[str, tf.Module]:
        """An actor and two critics (SAC, TD3) with their masks, and the
        network-side noise layout they share (if configured).

        Args:
            create_actor: the actor builder of `networks`.
            widths: (actor, critics) width multipliers (default: `width`).
            initializer: the critics' `networks.INITIALIZERS` name (the
                actor's is `create_actor`'s own).
        """
        settings, seed = self.settings, self.seed
        observation_spec, action_spec = self.observation_spec, self.action_spec
        if not action_spec.dtype.is_floating:
            raise ValueError(
                f'{self.name.upper()} needs continuous actions; '
                f'{settings.env_name} has {action_spec}. Use PPO (or DQN) for '
                'discrete ones.')
        self.noise_layout = anf.make_layout(
            observation_spec.shape.num_elements(),
            seeding.derive(seed, 'network_noise'))
        inputs = (self.noise_layout.total if self.noise_layout is not None
                  else observation_spec.shape.num_elements())
        actions = action_spec.shape.num_elements()
        widths = self.widths(
            {'actor': [inputs, *settings.actor_fc_layers,
                       self.actor_output_factor * actions],
             'critic': [inputs + actions, *settings.critic_joint_fc_layers,
                        1]},
            dict(zip(('actor', 'critic'), widths or [settings.width] * 2)))

        def actor(extra):
            return create_actor(
                observation_spec, action_spec, settings.actor_fc_layers,
                self.train_mode(settings.train_mode_actor),
                settings.sparse_output_layer, widths['actor'],
                self.noise_layout,
                wrap_kwargs={**self.sparse_method.wrap_kwargs('actor'),
                             **extra})

        def critic(extra):
            return networks.create_sac_critic_network(
                observation_spec, action_spec, settings.critic_joint_fc_layers,
                self.train_mode(settings.train_mode_value),
                settings.sparse_output_layer, widths['critic'],
                self.noise_layout, initializer,
                wrap_kwargs={**self.sparse_method.wrap_kwargs('critic'),
                             **extra})

        named = {}
        for name, build in (('actor', actor), ('critic_1', critic),
                            ('critic_2', critic)):
            group = 'actor' if name == 'actor' else 'critic'
            named[name] = self.build_network(
                build, observation_spec if name == 'actor' else
                (observation_spec, action_spec), group,
                seeding.derive(seed, 'masks', name))
        return named

    def _finish_actor_critic(self, named: Dict[str, tf.Module]) -> None:
        """Initializes the built actor-critic agent and exposes its networks
        and masked optimizers to the loop."""
        self.agent.initialize()
        self.networks = named
        self.masked_optimizers = {
            'actor': tfa_private.actor_optimizer(self.agent),
            'critic': tfa_private.critic_optimizer(self.agent)}
        self._compile()
