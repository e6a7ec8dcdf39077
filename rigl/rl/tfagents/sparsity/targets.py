"""Sparse target networks: targets kept as sparse as their online networks.

`SparseTargetsMixin` is mixed into the sparse SAC, TD3 and DQN agents
(`sparse_agents`). TF-Agents' soft update copies non-trainable variables
(the masks) with tau = 1 but blends kernels, so a target would otherwise
hold weights its online network has dropped. Two modes: targets carry their
online network's mask ('mask'), or ANF's magnitude-pruned targets
('magnitude'), which keep their own support of at most as many non-zeros
as their online network; both in masked and in 'sparse' execution
(`CompressedDense` targets).
"""

from typing import Callable, List, Sequence, Tuple

import tensorflow as tf
from tf_agents.utils import common

from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.sparsity import masked_optimizer


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

    With 'sparse' execution a compressed target layer holds values at
    positions of its own: in 'mask' mode it moves onto its online layer's
    positions before a target update; in 'magnitude' mode each target
    update averages over the union of both layers' positions and keeps k
    by magnitude, as the masked prune does (`magnitude_target_update`).
    """

    # The mode the target updater is built for (see `_init_sparse_targets`).
    _target_sparsity = 'mask'

    def masked_targets(self) -> Sequence[
            Tuple[masked_optimizer.MaskedOptimizer, Sequence[tf.Module]]]:
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
        update also keeps a compressed target layer's values on matching
        positions: its online layer's ('mask' mode), or the largest of both
        layers' union ('magnitude', `magnitude_target_update`)."""
        compressed = self._compressed_pairs()
        if not compressed:
            return super()._get_target_updater(tau, period)
        update_every_call = super()._get_target_updater(tau, 1)
        if self._target_sparsity == 'magnitude':
            pairs = [pair for _, layers in compressed for pair in layers]
            return common.Periodically(
                lambda: magnitude_target_update(pairs, tau,
                                                 update_every_call),
                period, 'update_targets_sparse_execution')
        self._positions_synced_at = [
            tf.Variable(-1, dtype=tf.int64, trainable=False)
            for _ in compressed]

        def adopt_positions_then_update():
            """A target layer whose online layer changed positions since
            the last update first moves its values onto them (the masked
            equivalent: Polyak averaging, then the copied mask zeroes the
            rest), so Polyak averaging acts on matching values."""
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
        train steps (until a target update has copied the new masks).

        Subclasses whose mode may be 'magnitude' set `_target_sparsity`
        before TF-Agents' `__init__` builds the target updater."""
        if mode not in TARGET_SPARSITY_MODES:
            raise ValueError(f'target sparsity mode is {mode!r}; allowed: '
                             f'{", ".join(TARGET_SPARSITY_MODES)}.')
        if mode != self._target_sparsity and self._compressed_pairs():
            raise ValueError(
                f'target sparsity {mode!r} was set after the target updater '
                f'was built for {self._target_sparsity!r}.')
        self._target_sparsity = mode
        for _, layers in self._compressed_pairs():
            for _, target in layers:
                target.mask_marks_nonzeros = mode == 'magnitude'
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
                    ops.append(prune_targets_by_magnitude(
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


def magnitude_target_update(pairs, tau: float,
                             update_every_call: Callable) -> tf.Operation:
    """ANF's target update with compressed layers: TF-Agents' soft update
    of every target variable, then each compressed target layer's values
    and positions set to its magnitude-pruned average with its online layer
    (`CompressedDense.magnitude_average`, computed from the values before
    the soft update, which blends them position by position)."""
    averaged = [target.magnitude_average(online, tau)
                for online, target in pairs]
    with tf.control_dependencies(tf.nest.flatten(averaged)):
        soft_update = update_every_call()
    with tf.control_dependencies([soft_update]):
        return tf.group([target.assign_positions(values, positions)
                         for (_, target), (values, positions) in zip(
                             pairs, averaged)])


def prune_targets_by_magnitude(online_layers, targets) -> tf.Operation:
    """ANF's sparse targets: a target layer holding more non-zeros than the k
    active weights of its online layer loses its smallest |w| down to k.

    Most steps need no pruning (the target's support equals the online
    mask's between mask updates), so only the count is computed then, and
    the target's mask follows its non-zeros; pruning selects the few
    smallest among the non-zeros (a top-k over the excess, which is cheap,
    rather than over the k kept). Compressed ('sparse'-execution) target
    layers are pruned in the target update itself
    (`magnitude_target_update`).
    """
    target_layers = [layer for network in targets
                     for layer in sparse_layers.masked_layers(network)]
    ops = []
    for online, target in zip(online_layers, target_layers):
        if isinstance(target, sparse_layers.CompressedDense):
            continue
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
