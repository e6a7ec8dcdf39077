"""TF-Agents agents whose train step keeps their networks sparse.

A sparse agent (1) wraps each optimizer in `MaskedOptimizer`, which masks
gradients, keeps masked weights at 0 and runs the mask updater inside the
train step, and (2) re-zeroes the masked weights of its target networks after
a mask change of their online network, or prunes them by magnitude (ANF),
with `sparsity.targets.SparseTargetsMixin`.

Sampling in the train step draws its seeds from `sample_rng`, a
`tf.random.Generator` that is checkpointed with the agent, so a resumed run
continues the random stream instead of replaying its start.
"""

import logging
import math
from typing import Callable, Optional, Sequence, Tuple

from absl import logging as absl_logging
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.agents.dqn import dqn_agent
from tf_agents.agents.ppo import ppo_clip_agent
from tf_agents.agents.sac import sac_agent
from tf_agents.agents.td3 import td3_agent
from tf_agents.trajectories import policy_step
from tf_agents.utils import common
from tf_agents.utils import nest_utils

from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import tf_agents_private as tfa_private
from rigl.rl.tfagents.algos import optimizers
from rigl.rl.tfagents.run import seeding
from rigl.rl.tfagents.sparsity import clipping
from rigl.rl.tfagents.sparsity import targets
from rigl.rl.tfagents.sparsity.masked_optimizer import MaskedOptimizer
from rigl.rl.tfagents.sparsity.targets import SparseTargetsMixin
from rigl.rl.tfagents.sparsity.updaters import MaskUpdater


# The name tests and older code use.
_prune_targets_by_magnitude = targets.prune_targets_by_magnitude


class AfterStepMaskUpdatesMixin:
    """Mask updates as the original SAC runs them: after the optimizer steps
    of a train step and before the target update, critics first, then the
    actor. RigL's grow gradients are recomputed on the train step's batch at
    the updated weights: the critic loss for the critics, then the actor
    loss through the critics as they now are.

    Subclasses build their optimizers with `masked_actor_critic_optimizers`,
    define `_mask_update_losses` and call `_init_after_step_mask_updates()`
    at the end of `__init__`.
    """

    _mask_update_batch = None

    def _mask_update_losses(
            self, time_steps, actions, next_time_steps,
            weights) -> Sequence[Tuple[MaskedOptimizer, Callable]]:
        """(optimizer, loss function) pairs, in update order."""
        raise NotImplementedError

    def _init_after_step_mask_updates(self) -> None:
        update_target = tfa_private.target_updater(self)

        def update_masks_then_targets():
            with tf.control_dependencies([self._update_masks_after_step()]):
                return update_target()

        tfa_private.set_target_updater(self, update_masks_then_targets)

    def _train(self, experience, weights=None):
        self._mask_update_batch = (experience, weights)
        try:
            return super()._train(experience, weights)
        finally:
            self._mask_update_batch = None

    def _update_masks_after_step(self) -> tf.Operation:
        if self._mask_update_batch is None:  # a target update outside _train
            return tf.no_op()
        experience, weights = self._mask_update_batch
        time_steps, policy_steps, next_time_steps = tfa_private.as_transition(
            self, experience)
        done = tf.no_op()
        for optimizer, loss_fn in self._mask_update_losses(
                time_steps, policy_steps.action, next_time_steps, weights):

            def gradients(kernels, loss_fn=loss_fn):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(kernels)
                    loss = loss_fn()
                return tape.gradient(loss, kernels)

            with tf.control_dependencies([done]):
                done = optimizer.update_masks_after_step(gradients)
        return done


def masked_actor_critic_optimizers(actor_optimizer, critic_optimizer,
                                   actor_network, critic_networks,
                                   actor_updater, critic_updater, seed: int):
    """The actor's and the critics' MaskedOptimizers ('after_step' mask
    updates, see `AfterStepMaskUpdatesMixin`), each with its own updater
    stream derived from `seed`."""
    return (MaskedOptimizer(
                actor_optimizer, [actor_network], actor_updater,
                seed=seeding.derive(seed, 'actor_updater'),
                update_timing='after_step'),
            MaskedOptimizer(
                critic_optimizer,
                [network for network in critic_networks if network],
                critic_updater, seed=seeding.derive(seed, 'critic_updater'),
                update_timing='after_step'))


def sample_action(policy, time_step, sample_rng: tf.random.Generator):
    """A policy step whose action is sampled with a seed from `sample_rng`
    (TF-Agents' own `action` uses stateful ops that restart on resume)."""
    step = policy.distribution(time_step)
    seeds = tf.cast(sample_rng.make_seeds(len(tf.nest.flatten(step.action))),
                    tf.int32)
    flat = [distribution.sample(seed=seeds[:, index]) for index, distribution
            in enumerate(tf.nest.flatten(step.action))]
    actions = tf.nest.pack_sequence_as(step.action, flat)
    if tfa_private.policy_clips_actions(policy):
        actions = tf.nest.map_structure(common.clip_to_spec, actions,
                                        policy.action_spec)
    return policy_step.PolicyStep(actions, step.state, step.info)


def squashed_normal_sample(distribution, seed) -> Optional[Tuple]:
    """(actions, log-probabilities) of one sample of SAC's tanh-squashed
    diagonal normal, or None for any other distribution.

    Computed from the pre-tanh sample rather than through TFP's bijector
    chain, which inverts the tanh to score the action: the same density
    (log N(u) - log|magnitude| - log(1 - tanh(u)^2), the last in its stable
    form), with about a quarter of the ops and no atanh near the bounds.
    """
    normal = getattr(distribution, 'input_distribution', None)
    if not isinstance(normal, tfp.distributions.MultivariateNormalDiag):
        return None
    loc = normal.parameters.get('loc')
    scale = normal.parameters.get('scale_diag')
    if loc is None or scale is None or loc.shape.rank != 2:
        return None  # one action vector per batch entry only
    noise = tf.random.stateless_normal(tf.shape(loc), seed, dtype=loc.dtype)
    pre_tanh = loc + scale * noise
    actions = (distribution.action_means +
               distribution.action_magnitudes * tf.tanh(pre_tanh))
    log_tanh_derivative = 2.0 * (math.log(2.0) - pre_tanh -
                                 tf.nn.softplus(-2.0 * pre_tanh))
    log_pi = tf.reduce_sum(
        -0.5 * tf.square(noise) - 0.5 * math.log(2.0 * math.pi)
        - tf.math.log(scale) - log_tanh_derivative, axis=-1) - tf.reduce_sum(
            tf.math.log(distribution.action_magnitudes))
    return actions, log_pi


class SparseSacAgent(SparseTargetsMixin, AfterStepMaskUpdatesMixin,
                     sac_agent.SacAgent):
    """SAC with a sparse actor and twin critics, each with a mask updater.

    Build `critic_network_2` yourself (with its own masks): TF-Agents would
    otherwise copy the first critic, weights and masks included.

    Args:
        actor_updater: mask updater of the actor (gin `mask_updater()` if
            None).
        critic_updater: mask updater of both critics (likewise).
        seed: seeds the updaters' and the action sampling's streams.
        target_sparsity: 'mask' or 'magnitude' (see `SparseTargetsMixin`).
        Other arguments are `SacAgent`'s.
    """

    def __init__(self, time_step_spec, action_spec, critic_network,
                 actor_network, actor_optimizer, critic_optimizer,
                 alpha_optimizer, critic_network_2=None,
                 actor_updater: Optional[MaskUpdater] = None,
                 critic_updater: Optional[MaskUpdater] = None,
                 seed: int = 0, target_sparsity: str = 'mask', **kwargs):
        actor_optimizer, critic_optimizer = masked_actor_critic_optimizers(
            actor_optimizer, critic_optimizer, actor_network,
            [critic_network, critic_network_2], actor_updater,
            critic_updater, seed)
        self._target_sparsity = target_sparsity  # read by the target updater
        super().__init__(
            time_step_spec, action_spec, critic_network=critic_network,
            actor_network=actor_network, actor_optimizer=actor_optimizer,
            critic_optimizer=critic_optimizer,
            alpha_optimizer=alpha_optimizer, critic_network_2=critic_network_2,
            **kwargs)
        # Its variables now, not inside the first compiled train step
        # (which tf.function would then trace twice).
        optimizers.create_variables(tfa_private.alpha_optimizer(self),
                                    [tfa_private.log_alpha(self)])
        self.sample_rng = tf.random.Generator.from_seed(
            seeding.derive(seed, 'sac_sampling'))
        self._init_sparse_targets(target_sparsity,
                                  tfa_private.target_update_period(self))
        self._init_after_step_mask_updates()

    def masked_targets(self):
        return [(tfa_private.critic_optimizer(self),
                 list(tfa_private.target_critic_networks(self)))]

    def _mask_update_losses(self, time_steps, actions, next_time_steps,
                            weights):
        def critic_loss():
            return tfa_private.critic_loss_weight(self) * self.critic_loss(
                time_steps, actions, next_time_steps,
                td_errors_loss_fn=tfa_private.td_errors_loss_fn(self),
                gamma=tfa_private.gamma(self),
                reward_scale_factor=tfa_private.reward_scale_factor(self),
                weights=weights, training=True)

        def actor_loss():
            loss = tfa_private.actor_loss_weight(self) * self.actor_loss(
                time_steps, weights=weights, training=True)
            self._actor_loss_log_pi = None  # not this step's alpha loss's
            return loss

        return [(tfa_private.critic_optimizer(self), critic_loss),
                (tfa_private.actor_optimizer(self), actor_loss)]

    # The alpha loss reuses the log-probabilities of the actions the actor
    # loss sampled (as SB3 and the SAC authors' code do). TF-Agents samples
    # the actor a third time for it, at about a tenth of the step's time.
    _actor_loss_log_pi = None
    _recording_log_pi = False

    def actor_loss(self, time_steps, weights=None, training=True):
        self._recording_log_pi = True
        try:
            return super().actor_loss(time_steps, weights, training)
        finally:
            self._recording_log_pi = False

    def alpha_loss(self, time_steps, weights=None, training=False):
        log_pi, self._actor_loss_log_pi = self._actor_loss_log_pi, None
        if log_pi is None or getattr(log_pi, 'graph', None) is not getattr(
                time_steps.observation, 'graph', None):
            # Called alone, not after the actor loss of this train step.
            return super().alpha_loss(time_steps, weights, training)
        with tf.name_scope('alpha_loss'):
            entropy_diff = tf.stop_gradient(
                -log_pi - tfa_private.target_entropy(self))
            log_alpha = tfa_private.log_alpha(self)
            alpha = (log_alpha if tfa_private.use_log_alpha_in_alpha_loss(self)
                     else tf.exp(log_alpha))
            alpha_loss = common.aggregate_losses(
                per_example_loss=alpha * entropy_diff,
                sample_weight=weights).total_loss
            tfa_private.alpha_loss_debug_summaries(self, alpha_loss,
                                                   entropy_diff)
            return alpha_loss

    def _actions_and_log_probs(self, time_steps, training=False):
        # SacAgent's own version, sampling with seeds from `sample_rng`.
        batch_size = nest_utils.get_outer_shape(time_steps,
                                                self.time_step_spec)[0]
        policy = tfa_private.train_policy(self) if training else self.policy
        distribution = policy.distribution(
            time_steps,
            policy_state=policy.get_initial_state(batch_size)).action
        seed = tf.cast(self.sample_rng.make_seeds(1)[:, 0], tf.int32)
        squashed = squashed_normal_sample(distribution, seed)
        if squashed is not None:
            actions, log_pi = squashed
        else:
            actions = tf.nest.map_structure(lambda d: d.sample(seed=seed),
                                            distribution)
            log_pi = common.log_probability(distribution, actions,
                                            self.action_spec)
        if self._recording_log_pi:
            self._actor_loss_log_pi = log_pi
        return actions, log_pi



def _clipping_optimizer(optimizer, networks, updater, seed: int,
                        gradient_clipping: Optional[float],
                        per_variable: bool
                        ) -> Tuple[MaskedOptimizer, Optional[float]]:
    """The `MaskedOptimizer` of `networks`, and the gradient clipping left to
    TF-Agents: with 'sparse'-execution layers the optimizer clips instead,
    counting their dense gradients as masked execution's norm does
    (`clipping.DenseNormClippingOptimizer`)."""
    compressed = any(isinstance(layer, sparse_layers.CompressedDense)
                     for network in networks
                     for layer in sparse_layers.masked_layers(network))
    if not gradient_clipping or not compressed:
        return (MaskedOptimizer(optimizer, networks, updater, seed=seed),
                gradient_clipping)
    return (clipping.DenseNormClippingOptimizer(
        optimizer, networks, updater, seed=seed, clip_norm=gradient_clipping,
        per_variable=per_variable), None)


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

    With 'sparse'-execution layers, gradient clipping moves from TF-Agents
    into the optimizer (`_clipping_optimizer`), and the L2 term counts
    compressed layers' values.

    Args:
        updater: mask updater (gin `mask_updater()` if None).
        seed: seeds the updater's stream (collection samples from the loop's
            numpy stream: `algos.ppo.NumpyCollectPolicy`).
        Other arguments are `PPOClipAgent`'s.
    """

    def __init__(self, time_step_spec, action_spec, optimizer, actor_net,
                 value_net,
                 updater: Optional[MaskUpdater] = None,
                 seed: int = 0, **kwargs):
        masked_optimizer, kwargs['gradient_clipping'] = _clipping_optimizer(
            optimizer, [actor_net, value_net], updater,
            seeding.derive(seed, 'updater'),
            kwargs.get('gradient_clipping'), per_variable=False)
        super().__init__(
            time_step_spec, action_spec, optimizer=masked_optimizer,
            actor_net=actor_net, value_net=value_net, **kwargs)
        # Our copy of the L2 coefficients (TF-Agents keeps its private).
        self._l2_coefficients = (kwargs.get('policy_l2_reg') or 0.0,
                                 kwargs.get('value_function_l2_reg') or 0.0)

    def l2_regularization_loss(self, debug_summaries: bool = False
                               ) -> tf.Tensor:
        """TF-Agents' L2 term, sum of reg * sum(w^2) over each network's
        kernels, with a compressed layer's values counted as its kernel
        (TF-Agents picks kernels by variable name; they are zero elsewhere,
        so the sum is the masked layer's)."""
        compressed = {
            layer.weights_variable.ref()
            for network in (self.actor_net, tfa_private.value_net(self))
            for layer in sparse_layers.masked_layers(network)
            if isinstance(layer, sparse_layers.CompressedDense)}
        coefficients = self._l2_coefficients
        if not compressed or not any(c > 0 for c in coefficients):
            return super().l2_regularization_loss(debug_summaries)
        losses = [
            common.aggregate_losses(
                regularization_loss=tf.square(variable)).regularization
            * coefficient
            for network, coefficient in zip(
                (self.actor_net, tfa_private.value_net(self)), coefficients)
            for variable in network.trainable_weights
            if 'kernel' in variable.name or variable.ref() in compressed]
        return tf.add_n(losses, name='l2_loss')


class SparseTd3Agent(SparseTargetsMixin, AfterStepMaskUpdatesMixin,
                     td3_agent.Td3Agent):
    """TD3 with a sparse actor and twin critics and sparse targets.

    The actor's optimizer applies only every `actor_update_period` train
    steps and counts its own steps, so the actor's mask updates run on the
    actor's update steps. Exploration noise is added by the algorithm
    (`algos.td3`) with seeds from `sample_rng`.

    Args:
        actor_updater, critic_updater: mask updaters (gin `mask_updater()`
            if None).
        seed: seeds the updaters' and the exploration noise's streams.
        target_sparsity: 'mask' or 'magnitude' (see `SparseTargetsMixin`).
        Other arguments are `Td3Agent`'s.
    """

    def __init__(self, time_step_spec, action_spec, actor_network,
                 critic_network, actor_optimizer, critic_optimizer,
                 critic_network_2=None,
                 actor_updater: Optional[MaskUpdater] = None,
                 critic_updater: Optional[MaskUpdater] = None,
                 seed: int = 0, target_sparsity: str = 'mask', **kwargs):
        actor_optimizer, critic_optimizer = masked_actor_critic_optimizers(
            actor_optimizer, critic_optimizer, actor_network,
            [critic_network, critic_network_2], actor_updater,
            critic_updater, seed)
        self._target_sparsity = target_sparsity  # read by the target updater
        super().__init__(
            time_step_spec, action_spec, actor_network=actor_network,
            critic_network=critic_network, actor_optimizer=actor_optimizer,
            critic_optimizer=critic_optimizer,
            critic_network_2=critic_network_2, **kwargs)
        self.sample_rng = tf.random.Generator.from_seed(
            seeding.derive(seed, 'td3_exploration'))
        self._init_sparse_targets(target_sparsity,
                                  tfa_private.target_update_period(self))
        self._init_after_step_mask_updates()

    def masked_targets(self):
        return [(tfa_private.actor_optimizer(self),
                 [tfa_private.target_actor_network(self)]),
                (tfa_private.critic_optimizer(self),
                 list(tfa_private.target_critic_networks(self)))]

    def _mask_update_losses(self, time_steps, actions, next_time_steps,
                            weights):
        return [(tfa_private.critic_optimizer(self), lambda: self.critic_loss(
                    time_steps, actions, next_time_steps, weights=weights,
                    training=True)),
                (tfa_private.actor_optimizer(self), lambda: self.actor_loss(
                    time_steps, weights=weights, training=True))]



class SparseDqnAgent(SparseTargetsMixin, dqn_agent.DqnAgent):
    """DQN with a sparse Q-network whose target carries its masks.

    Gradient clipping, if any, moves into the optimizer with
    'sparse'-execution layers (`_clipping_optimizer`). Epsilon-greedy
    exploration is done by the algorithm (`algos.dqn`) with
    seeds from `sample_rng`.

    Args:
        updater: mask updater (gin `mask_updater()` if None).
        seed: seeds the updater's and the exploration's streams.
        Other arguments are `DqnAgent`'s.
    """

    def __init__(self, time_step_spec, action_spec, q_network, optimizer,
                 updater: Optional[MaskUpdater] = None,
                 seed: int = 0, target_update_period: int = 1, **kwargs):
        masked_optimizer, kwargs['gradient_clipping'] = _clipping_optimizer(
            optimizer, [q_network], updater, seeding.derive(seed, 'updater'),
            kwargs.get('gradient_clipping'), per_variable=True)
        super().__init__(
            time_step_spec, action_spec, q_network=q_network,
            target_update_period=target_update_period,
            optimizer=masked_optimizer, **kwargs)
        self.sample_rng = tf.random.Generator.from_seed(
            seeding.derive(seed, 'dqn_exploration'))
        self._init_sparse_targets('mask', target_update_period)

    def masked_targets(self):
        return [(tfa_private.optimizer(self),
                 [tfa_private.target_q_network(self)])]

