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
import math
from typing import Callable, List, Optional, Sequence, Tuple

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

from rigl.rl.tfagents import mask_updaters
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import tf_agents_private as tfa_private
from rigl.rl.tfagents.run import seeding


TARGET_SPARSITY_MODES = ('mask', 'magnitude')


class SparseTargetsMixin:
    """Keeps target networks as sparse as their online networks.

    Subclasses list `masked_targets()`: pairs of (the MaskedOptimizer of the
    online networks, their target networks, in the same order) and call
    `_init_sparse_targets()` with their target update period at the end of
    `__init__`; the targets are made sparse after each train step. Two modes:

    * 'mask' (default): a target carries its online network's mask. Polyak
      averaging copies masks (tau 1 for non-trainable variables) but blends
      kernels, so after a mask change the targets are re-masked on every
      train step until a target update has copied the new masks.
    * 'magnitude' (ANF): after every train step each target layer with more
      non-zeros than k, its online layer's active weights, loses its
      smallest |weights| down to k, so a target never holds more non-zeros
      than its online network; its mask marks its non-zeros.
    """

    def masked_targets(self) -> Sequence[Tuple[mask_updaters.MaskedOptimizer,
                                               Sequence[tf.Module]]]:
        raise NotImplementedError

    @property
    def target_networks(self) -> List[tf.Module]:
        return [network for _, targets in self.masked_targets()
                for network in targets]

    def _compressed_pairs(self) -> List[Tuple[int, List[Tuple]]]:
        """Per masked optimizer with 'sparse'-execution layers: its index
        and the (online, target) `CompressedDense` pairs of its targets."""
        pairs = []
        for index, (optimizer, targets) in enumerate(self.masked_targets()):
            target_layers = [layer for network in targets
                             for layer in sparse_layers.masked_layers(network)]
            layers = [(online, target) for online, target in
                      zip(optimizer.layers, target_layers)
                      if isinstance(online, sparse_layers.CompressedDense)]
            if layers:
                pairs.append((index, layers))
        return pairs

    def _get_target_updater(self, tau=1.0, period=1):
        """TF-Agents' target update; with 'sparse'-execution layers, each
        update first moves a target layer's values onto its online layer's
        positions if they changed since the last update (the masked
        equivalent: Polyak averaging, then the copied mask zeroes the
        rest), so Polyak averaging acts on matching values."""
        compressed = self._compressed_pairs()
        if not compressed:
            return super()._get_target_updater(tau, period)
        update_every_call = super()._get_target_updater(tau, 1)
        self._positions_synced_at = [
            tf.Variable(-1, dtype=tf.int64, trainable=False)
            for _ in compressed]

        def adopt_positions_then_update():
            ops = []
            for synced_at, (index, layers) in zip(self._positions_synced_at,
                                                  compressed):
                optimizer = self.masked_targets()[index][0]

                def adopt(layers=layers, synced_at=synced_at,
                          optimizer=optimizer):
                    moved = [target.adopt_positions(online)
                             for online, target in layers]
                    with tf.control_dependencies(moved):
                        return synced_at.assign(optimizer.last_mask_change).op

                ops.append(tf.cond(tf.not_equal(optimizer.last_mask_change,
                                                synced_at), adopt, tf.no_op))
            with tf.control_dependencies(ops):
                return update_every_call()

        return common.Periodically(adopt_positions_then_update, period,
                                   'update_targets_sparse_execution')

    def _init_sparse_targets(self, mode: str,
                             target_update_period: int) -> None:
        """Sets the target sparsity `mode` (`TARGET_SPARSITY_MODES`); after
        a mask change the targets are re-masked for `target_update_period`
        train steps (until a target update has copied the new masks)."""
        if mode not in TARGET_SPARSITY_MODES:
            raise ValueError(f'target sparsity mode is {mode!r}; allowed: '
                             f'{", ".join(TARGET_SPARSITY_MODES)}.')
        if mode == 'magnitude' and self._compressed_pairs():
            raise ValueError(
                "ANF's magnitude-pruned targets (target_sparsity="
                "'magnitude') keep their own positions, which "
                "sparse_execution='sparse' does not support; use "
                "train_eval.sparse_execution='masked'.")
        self._target_sparsity = mode
        self._sparse_targets_period = target_update_period
        # Per optimizer: its last_mask_change when last seen, and the train
        # step at which a new change was first seen.
        self._seen_mask_change = [
            tf.Variable(-1, dtype=tf.int64, trainable=False)
            for _ in self.masked_targets()]
        self._mask_change_seen_at = [
            tf.Variable(-10 ** 9, dtype=tf.int64, trainable=False)
            for _ in self.masked_targets()]

    def _train(self, experience, weights=None):
        loss_info = super()._train(experience, weights)
        with tf.control_dependencies([self._sparsify_targets(
                loss_info, self._sparse_targets_period)]):
            return tf.nest.map_structure(tf.identity, loss_info)

    def _sparsify_targets(self, after, target_update_period: int):
        """Re-masks or prunes the targets (after the ops in `after`)."""
        step = tf.cast(self.train_step_counter, tf.int64)
        ops = []
        with tf.control_dependencies(tf.nest.flatten(after)):
            for index, (optimizer, targets) in enumerate(
                    self.masked_targets()):
                if self._target_sparsity == 'magnitude':
                    ops.append(_prune_targets_by_magnitude(
                        optimizer.layers, targets))
                    continue
                seen, seen_at = (self._seen_mask_change[index],
                                 self._mask_change_seen_at[index])
                changed = tf.not_equal(optimizer.last_mask_change, seen)
                at = seen_at.assign(tf.where(changed, step, seen_at))
                with tf.control_dependencies([at]):
                    noted = seen.assign(optimizer.last_mask_change)
                with tf.control_dependencies([noted]):
                    ops.append(tf.cond(
                        step - at <= target_update_period,
                        lambda targets=targets: sparse_layers.apply_masks(
                            targets), tf.no_op))
        return tf.group(ops)


def _prune_targets_by_magnitude(online_layers, targets) -> tf.Operation:
    """ANF's sparse targets: a target layer holding more non-zeros than the k
    active weights of its online layer loses its smallest |w| down to k.

    Most steps need no pruning (the target's support equals the online
    mask's between mask updates), so only the count is computed then, and
    the target's mask follows its non-zeros; pruning selects the few
    smallest among the non-zeros (a top-k over the excess, which is cheap,
    rather than over the k kept).
    """
    target_layers = [layer for network in targets
                     for layer in sparse_layers.masked_layers(network)]
    ops = []
    for online, target in zip(online_layers, target_layers):
        nonzero = tf.cast(tf.not_equal(target.kernel, 0.0), tf.float32)
        excess = tf.cast(tf.reduce_sum(nonzero) - tf.reduce_sum(online.mask),
                         tf.int32)

        def prune(target=target, nonzero=nonzero, excess=excess):
            flat = tf.reshape(target.kernel, [-1])
            smallest_first = tf.where(tf.reshape(nonzero, [-1]) > 0,
                                      -tf.abs(flat), -float('inf'))
            _, drop = tf.math.top_k(smallest_first, k=excess)
            keep = tf.reshape(nonzero, [-1]) - tf.scatter_nd(
                drop[:, None], tf.ones_like(drop, tf.float32), tf.shape(flat))
            keep = tf.reshape(keep, tf.shape(target.mask))
            return tf.group(target.mask.assign(keep),
                            target.kernel.assign(target.kernel * keep))

        ops.append(tf.cond(excess > 0, prune,
                           lambda target=target, nonzero=nonzero:
                           tf.group(target.mask.assign(nonzero))))
    return tf.group(ops)


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

    def _mask_update_losses(self, time_steps, actions, next_time_steps,
                            weights) -> Sequence[Tuple[
                                mask_updaters.MaskedOptimizer, Callable]]:
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
    return (mask_updaters.MaskedOptimizer(
                actor_optimizer, [actor_network], actor_updater,
                seed=seeding.derive(seed, 'actor_updater'),
                update_timing='after_step'),
            mask_updaters.MaskedOptimizer(
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
        actor_updater: mask updater of the actor (gin `mask_updater()` if None).
        critic_updater: mask updater of both critics (likewise).
        seed: seeds the updaters' and the action sampling's streams.
        target_sparsity: 'mask' or 'magnitude' (see `SparseTargetsMixin`).
        Other arguments are `SacAgent`'s.
    """

    def __init__(self, time_step_spec, action_spec, critic_network,
                 actor_network, actor_optimizer, critic_optimizer,
                 alpha_optimizer, critic_network_2=None,
                 actor_updater: Optional[mask_updaters.MaskUpdater] = None,
                 critic_updater: Optional[mask_updaters.MaskUpdater] = None,
                 seed: int = 0, target_sparsity: str = 'mask', **kwargs):
        actor_optimizer, critic_optimizer = masked_actor_critic_optimizers(
            actor_optimizer, critic_optimizer, actor_network,
            [critic_network, critic_network_2], actor_updater,
            critic_updater, seed)
        super().__init__(
            time_step_spec, action_spec, critic_network=critic_network,
            actor_network=actor_network, actor_optimizer=actor_optimizer,
            critic_optimizer=critic_optimizer,
            alpha_optimizer=alpha_optimizer, critic_network_2=critic_network_2,
            **kwargs)
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
            time_steps, policy_state=policy.get_initial_state(batch_size)).action
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
        seed: seeds the updater's stream (collection samples from the loop's
            numpy stream: `algos.ppo.NumpyCollectPolicy`).
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
                 actor_updater: Optional[mask_updaters.MaskUpdater] = None,
                 critic_updater: Optional[mask_updaters.MaskUpdater] = None,
                 seed: int = 0, target_sparsity: str = 'mask', **kwargs):
        actor_optimizer, critic_optimizer = masked_actor_critic_optimizers(
            actor_optimizer, critic_optimizer, actor_network,
            [critic_network, critic_network_2], actor_updater,
            critic_updater, seed)
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

    Epsilon-greedy exploration is done by the algorithm (`algos.dqn`) with
    seeds from `sample_rng`.

    Args:
        updater: mask updater (gin `mask_updater()` if None).
        seed: seeds the updater's and the exploration's streams.
        Other arguments are `DqnAgent`'s.
    """

    def __init__(self, time_step_spec, action_spec, q_network, optimizer,
                 updater: Optional[mask_updaters.MaskUpdater] = None,
                 seed: int = 0, target_update_period: int = 1, **kwargs):
        super().__init__(
            time_step_spec, action_spec, q_network=q_network,
            target_update_period=target_update_period,
            optimizer=mask_updaters.MaskedOptimizer(
                optimizer, [q_network], updater,
                seed=seeding.derive(seed, 'updater')),
            **kwargs)
        self.sample_rng = tf.random.Generator.from_seed(
            seeding.derive(seed, 'dqn_exploration'))
        self._init_sparse_targets('mask', target_update_period)

    def masked_targets(self):
        return [(tfa_private.optimizer(self),
                 [tfa_private.target_q_network(self)])]

