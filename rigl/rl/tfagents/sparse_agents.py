"""TF-Agents agents whose train step keeps their networks sparse.

A sparse agent (1) wraps each optimizer in `MaskedOptimizer`, which masks
gradients, keeps masked weights at 0 and runs the mask updater inside the
train step, and (2) re-zeroes the masked weights of its target networks after
a mask change of their online network (`SparseTargetsMixin`): TF-Agents' soft
update copies non-trainable variables (the masks) with tau = 1 but blends
kernels, so newly masked target weights would otherwise only decay to 0.

Sampling in the train step draws its seeds from `sample_rng`, a
`tf.random.Generator` that is checkpointed with the agent, so a resumed run
continues the random stream instead of replaying its start.
"""

import logging
from typing import List, Optional, Sequence, Tuple

from absl import logging as absl_logging
import tensorflow as tf
from tf_agents.agents.ppo import ppo_clip_agent
from tf_agents.agents.sac import sac_agent
from tf_agents.trajectories import policy_step
from tf_agents.utils import common
from tf_agents.utils import nest_utils

from rigl.rl.tfagents import mask_updaters
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.run import seeding


class SparseTargetsMixin:
    """Re-masks target networks when their online network's masks change.

    Subclasses list `masked_targets()`: pairs of (the MaskedOptimizer of the
    online networks, their target networks). Masked target weights stay 0
    under Polyak averaging unless a mask changed since the last target
    update, so targets are re-masked only then.
    """

    def masked_targets(self) -> Sequence[Tuple[mask_updaters.MaskedOptimizer,
                                               Sequence[tf.Module]]]:
        raise NotImplementedError

    @property
    def target_networks(self) -> List[tf.Module]:
        return [network for _, targets in self.masked_targets()
                for network in targets]

    def remask_targets(self, after, target_update_period: int):
        """Re-masks targets (after the ops in `after`) where a mask changed
        within the last `target_update_period` optimizer steps."""
        with tf.control_dependencies(tf.nest.flatten(after)):
            return tf.group([
                tf.cond(optimizer.steps_since_mask_change() <=
                        target_update_period,
                        lambda targets=targets: sparse_layers.apply_masks(
                            targets), tf.no_op)
                for optimizer, targets in self.masked_targets()])


def sample_action(policy, time_step, sample_rng: tf.random.Generator):
    """A policy step whose action is sampled with a seed from `sample_rng`
    (TF-Agents' own `action` uses stateful ops that restart on resume)."""
    step = policy.distribution(time_step)
    seeds = tf.cast(sample_rng.make_seeds(len(tf.nest.flatten(step.action))),
                    tf.int32)
    flat = [distribution.sample(seed=seeds[:, index]) for index, distribution
            in enumerate(tf.nest.flatten(step.action))]
    actions = tf.nest.pack_sequence_as(step.action, flat)
    if getattr(policy, '_clip', False):
        actions = tf.nest.map_structure(common.clip_to_spec, actions,
                                        policy.action_spec)
    return policy_step.PolicyStep(actions, step.state, step.info)


class SparseSacAgent(SparseTargetsMixin, sac_agent.SacAgent):
    """SAC with a sparse actor and twin critics, each with a mask updater.

    Build `critic_network_2` yourself (with its own masks): TF-Agents would
    otherwise copy the first critic, weights and masks included.

    Args:
        actor_updater: mask updater of the actor (gin `mask_updater()` if None).
        critic_updater: mask updater of both critics (likewise).
        seed: seeds the updaters' and the action sampling's streams.
        Other arguments are `SacAgent`'s.
    """

    def __init__(self, time_step_spec, action_spec, critic_network,
                 actor_network, actor_optimizer, critic_optimizer,
                 alpha_optimizer, critic_network_2=None,
                 actor_updater: Optional[mask_updaters.MaskUpdater] = None,
                 critic_updater: Optional[mask_updaters.MaskUpdater] = None,
                 seed: int = 0, **kwargs):
        critics = [critic_network] + (
            [critic_network_2] if critic_network_2 is not None else [])
        super().__init__(
            time_step_spec, action_spec, critic_network=critic_network,
            actor_network=actor_network,
            actor_optimizer=mask_updaters.MaskedOptimizer(
                actor_optimizer, [actor_network], actor_updater,
                seed=seeding.derive(seed, 'actor_updater')),
            critic_optimizer=mask_updaters.MaskedOptimizer(
                critic_optimizer, critics, critic_updater,
                seed=seeding.derive(seed, 'critic_updater')),
            alpha_optimizer=alpha_optimizer, critic_network_2=critic_network_2,
            **kwargs)
        self.sample_rng = tf.random.Generator.from_seed(
            seeding.derive(seed, 'sac_sampling'))

    def masked_targets(self):
        return [(self._critic_optimizer, [self._target_critic_network_1,
                                          self._target_critic_network_2])]

    def _actions_and_log_probs(self, time_steps, training=False):
        # SacAgent's own version, sampling with seeds from `sample_rng`.
        batch_size = nest_utils.get_outer_shape(time_steps,
                                                self._time_step_spec)[0]
        policy = self._train_policy if training else self._policy
        distribution = policy.distribution(
            time_steps, policy_state=policy.get_initial_state(batch_size)).action
        seed = tf.cast(self.sample_rng.make_seeds(1)[:, 0], tf.int32)
        actions = tf.nest.map_structure(lambda d: d.sample(seed=seed),
                                        distribution)
        log_pi = common.log_probability(distribution, actions,
                                        self.action_spec)
        return actions, log_pi

    def _train(self, experience, weights):
        loss_info = super()._train(experience, weights)
        with tf.control_dependencies([self.remask_targets(
                loss_info, self._target_update_period)]):
            return tf.nest.map_structure(tf.identity, loss_info)


class _WrappedOptimizerWarningFilter(logging.Filter):
    """Drops PPOAgent's warning about a non-Keras optimizer: MaskedOptimizer
    wraps a Keras optimizer and exposes the learning rate PPO summarises."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(
            'Only tf.keras.optimizers.Optimiers are well supported')


absl_logging.get_absl_logger().addFilter(_WrappedOptimizerWarningFilter())


class SparsePPOAgent(ppo_clip_agent.PPOClipAgent):
    """PPO (clipped objective) with sparse actor and value networks.

    PPO trains both networks with one optimizer, so one `MaskedOptimizer` and
    one mask updater serve both; every minibatch gradient step is a step of
    that optimizer, for the updater and for gradual pruning.

    Args:
        updater: mask updater (gin `mask_updater()` if None).
        seed: seeds the updater's and the action sampling's streams.
        Other arguments are `PPOClipAgent`'s.
    """

    def __init__(self, time_step_spec, action_spec, optimizer, actor_net,
                 value_net,
                 updater: Optional[mask_updaters.MaskUpdater] = None,
                 seed: int = 0, **kwargs):
        super().__init__(
            time_step_spec, action_spec,
            optimizer=mask_updaters.MaskedOptimizer(
                optimizer, [actor_net, value_net], updater,
                seed=seeding.derive(seed, 'updater')),
            actor_net=actor_net, value_net=value_net, **kwargs)
        self.sample_rng = tf.random.Generator.from_seed(
            seeding.derive(seed, 'ppo_sampling'))
