"""Mask updaters (static, SET, RigL) and the optimizer that runs them.

Every algorithm implements one small interface (`MaskUpdater`): whether a step
updates masks, the drop fraction at a step, and the score by which dropped
connections are regrown. An update on a layer with `a` active weights:

1. drop n = floor(d * a) active weights of smallest |w|;
2. grow n among the positions not kept, by largest score: random for SET,
   |dense gradient| on the current batch for RigL;
3. grown weights start at 0 (`grow_init='zero'`), or, as ANF-TD3's
   `unif` and `xavier` options, all at one random value per layer and update
   drawn from U(+-1/sqrt(fan_in)) or U(+-sqrt(12/(fan_in + fan_out)));
   the optimizer moments (Adam m, v) of every position whose state changed
   (dropped or grown) are reset to 0.

`MaskedOptimizer` wraps the agent's optimizer: it masks gradients, applies
them, advances gradual pruning ('prune' mode) and runs the updater on update
steps, all inside the agent's `tf.function` train
step, so an agent only swaps its optimizers to become sparse.
"""

import math
from typing import Callable, Dict, List, Optional, Sequence

import gin
import tensorflow as tf

from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.run import settings

UPDATE_ALGS = ('static', 'set', 'rigl')
SCHEDULES = ('constant', 'cosine', 'learning_rate')
GROW_INITS = ('zero', 'unif', 'xavier')


class MaskUpdater(tf.Module):
    """Drop-and-grow on a schedule; subclasses choose the grow score.

    Args:
        update_freq: steps between updates (> 0).
        init_drop_fraction: d0 in [0, 1].
        schedule_alg: 'constant' (d0), 'cosine' (d0 * (1 + cos(pi t/T)) / 2,
            T = last_update_step) or 'learning_rate' (d0 * lr(t) / lr(0)).
        begin_step: no update before this step.
        last_update_step: no update after this step.
        seed: seed of the random scores (SET) and of grown values.
        grow_init: value of grown connections: 'zero', or one value per layer
            and update shared by all its grown connections, drawn uniformly
            within +-1/sqrt(fan_in) ('unif') or +-sqrt(12/(fan_in+fan_out))
            ('xavier'), as ANF-TD3 does. Drawn from a stateless stream of
            (seed, step, layer), so a resumed run grows the same values.
    """

    name_for_errors = 'static'

    def __init__(self, update_freq: int = 1000, init_drop_fraction: float = 0.3,
                 schedule_alg: str = 'cosine', begin_step: int = 0,
                 last_update_step: int = 800000, seed: Optional[int] = None,
                 grow_init: str = 'zero'):
        super().__init__(name=f'{self.name_for_errors}_mask_updater')
        name = 'mask_updater.'
        settings.check(name + 'update_freq', update_freq, int, low=1)
        init_drop_fraction = settings.check(
            name + 'init_drop_fraction', init_drop_fraction, float, 0, 1)
        settings.check(name + 'begin_step', begin_step, int, low=0)
        settings.check(name + 'last_update_step', last_update_step, int,
                       low=0)
        settings.check(name + 'seed', seed, Optional[int], low=0)
        if schedule_alg not in SCHEDULES:
            raise ValueError(f'mask_updater.schedule_alg is {schedule_alg!r}; '
                             f'allowed: {", ".join(SCHEDULES)}.')
        if grow_init not in GROW_INITS:
            raise ValueError(f'mask_updater.grow_init is {grow_init!r}; '
                             f'allowed: {", ".join(GROW_INITS)}.')
        if begin_step > last_update_step:
            raise ValueError(
                'mask_updater needs begin_step <= last_update_step, got '
                f'begin_step={begin_step}, last_update_step={last_update_step}.')
        self.update_freq = update_freq
        self.init_drop_fraction = float(init_drop_fraction)
        self.schedule_alg = schedule_alg
        self.begin_step = begin_step
        self.last_update_step = last_update_step
        self.learning_rate_fn: Optional[Callable] = None
        self.grow_init = grow_init
        self._seed = seed
        self.last_drop_fraction = tf.Variable(0.0, trainable=False,
                                              name='last_drop_fraction')

    @property
    def updates_masks(self) -> bool:
        return True

    def is_update_step(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.int64)
        return tf.logical_and(
            tf.equal(step % self.update_freq, 0),
            tf.logical_and(step >= self.begin_step,
                           step <= self.last_update_step))

    def drop_fraction(self, step: tf.Tensor) -> tf.Tensor:
        d0 = tf.constant(self.init_drop_fraction, tf.float32)
        if self.schedule_alg == 'constant':
            return d0
        if self.schedule_alg == 'cosine':
            horizon = float(max(self.last_update_step, 1))
            t = tf.minimum(tf.cast(step, tf.float32), horizon)
            return d0 * 0.5 * (1.0 + tf.cos(math.pi * t / horizon))
        if self.learning_rate_fn is None:
            raise ValueError("schedule_alg 'learning_rate' needs an optimizer "
                             'whose learning rate is a schedule.')
        lr_now = tf.cast(self.learning_rate_fn(step), tf.float32)
        lr_start = tf.cast(self.learning_rate_fn(0), tf.float32)
        return d0 * lr_now / lr_start

    def grow_scores(self, step: tf.Tensor, layer_index: int,
                    kernel: tf.Tensor, dense_grad: tf.Tensor) -> tf.Tensor:
        """Scores of every position; the largest non-kept ones are grown."""
        raise NotImplementedError

    def update(self, step: tf.Tensor, layers: Sequence['sparse_layers.MaskedLayer'],
               dense_grads: Sequence[tf.Tensor],
               slots: Sequence[Sequence[tf.Variable]]) -> tf.Operation:
        """Drops and regrows connections of every layer (one update step)."""
        fraction = self.drop_fraction(step)
        ops = [self.last_drop_fraction.assign(fraction)]
        for index, (layer, grad, layer_slots) in enumerate(
                zip(layers, dense_grads, slots)):
            ops.append(self._update_layer(step, index, fraction, layer, grad,
                                          layer_slots))
        return tf.group(ops)

    def _update_layer(self, step, index, fraction, layer, dense_grad, slots):
        mask = tf.reshape(layer.mask, [-1])
        kernel = tf.reshape(layer.kernel, [-1])
        size = tf.size(mask)
        active = tf.cast(tf.reduce_sum(mask), tf.int32)
        num_drop = tf.cast(tf.floor(fraction * tf.cast(active, tf.float32)),
                           tf.int32)
        # A fully dense layer (e.g. ANF's hidden layers) has nowhere else to
        # grow: regrowing where it dropped would only zero weights.
        num_drop = tf.where(active < size, num_drop, 0)
        lowest = tf.constant(-float('inf'))
        keep_score = tf.where(mask > 0, tf.abs(kernel), lowest)
        _, keep_index = tf.math.top_k(keep_score, k=active - num_drop)
        kept = tf.scatter_nd(keep_index[:, None],
                             tf.ones_like(keep_index, tf.float32), [size])
        scores = tf.reshape(
            self.grow_scores(step, index, layer.kernel, dense_grad), [-1])
        grow_score = tf.where(kept > 0, lowest, scores)
        _, grow_index = tf.math.top_k(grow_score, k=num_drop)
        grown = tf.scatter_nd(grow_index[:, None],
                              tf.ones_like(grow_index, tf.float32), [size])
        shape = tf.shape(layer.mask)
        kept = tf.reshape(kept, shape)
        grown = tf.reshape(grown, shape)
        new_kernel = layer.kernel * kept
        if self.grow_init != 'zero':
            new_kernel += grown * self.grown_value(step, index, layer.kernel)
        ops = [layer.mask.assign(kept + grown),
               layer.kernel.assign(new_kernel)]
        ops += [slot.assign(slot * kept) for slot in slots]
        return tf.group(ops)

    def grown_value(self, step: tf.Tensor, layer_index: int,
                    kernel: tf.Variable) -> tf.Tensor:
        """The one value every connection grown in a layer at a step gets."""
        shape = kernel.shape.as_list()
        receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
        fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
        if self.grow_init == 'unif':
            bound = 1.0 / math.sqrt(fan_in)
        else:
            bound = math.sqrt(12.0 / (fan_in + fan_out))
        seed = tf.random.experimental.stateless_fold_in(
            tf.stack([tf.constant(self._seed or 0, tf.int64),
                      tf.cast(step, tf.int64)]), 7919 + layer_index)
        return tf.random.stateless_uniform([], seed, -bound, bound,
                                           dtype=kernel.dtype)


class StaticUpdater(MaskUpdater):
    """Static sparse training: masks never change."""

    @property
    def updates_masks(self) -> bool:
        return False

    def is_update_step(self, step):
        return tf.constant(False)


class SETUpdater(MaskUpdater):
    """SET (Mocanu et al. 2018): regrow at random positions.

    With `use_stateless` (default) the scores are a function of (seed, step,
    layer), so a resumed run regrows exactly where the uninterrupted one would.
    The seed comes from the run's seed (one stream per optimizer) unless
    `mask_updater.seed` is bound.
    """

    name_for_errors = 'set'

    def __init__(self, use_stateless: bool = True, **kwargs):
        super().__init__(**kwargs)
        self._use_stateless = use_stateless

    def grow_scores(self, step, layer_index, kernel, dense_grad):
        if not self._use_stateless:
            return tf.random.uniform(tf.shape(kernel))
        seed = tf.random.experimental.stateless_fold_in(
            tf.stack([tf.constant(self._seed or 0, tf.int64),
                      tf.cast(step, tf.int64)]), layer_index)
        return tf.random.stateless_uniform(tf.shape(kernel), seed)


class RigLUpdater(MaskUpdater):
    """RigL (Evci et al. 2020): regrow where |dense gradient| is largest."""

    name_for_errors = 'rigl'

    def grow_scores(self, step, layer_index, kernel, dense_grad):
        return tf.abs(dense_grad)


@gin.configurable
def mask_updater(update_alg: str = '', update_freq: int = 1000,
                 init_drop_fraction: float = 0.3, schedule_alg: str = 'cosine',
                 begin_step: int = 0, last_update_step: int = 800000,
                 use_stateless: bool = True,
                 seed: Optional[int] = None,
                 grow_init: str = 'zero') -> MaskUpdater:
    """Builds the configured updater ('' or 'static', 'set', 'rigl')."""
    algorithm = update_alg or 'static'
    kwargs = dict(update_freq=update_freq,
                  init_drop_fraction=init_drop_fraction,
                  schedule_alg=schedule_alg, begin_step=begin_step,
                  last_update_step=last_update_step, seed=seed,
                  grow_init=grow_init)
    if algorithm == 'static':
        return StaticUpdater(**kwargs)
    if algorithm == 'set':
        return SETUpdater(use_stateless=use_stateless, **kwargs)
    if algorithm == 'rigl':
        return RigLUpdater(**kwargs)
    raise ValueError(f'mask_updater.update_alg is {update_alg!r}; allowed: '
                     f"'' (static), {', '.join(UPDATE_ALGS)}.")


def optimizer_slots(optimizer, variable: tf.Variable) -> List[tf.Variable]:
    """The per-weight state (e.g. Adam m and v) an optimizer keeps for a var.

    Supports Keras optimizers (new and legacy) and tf.compat.v1 optimizers.
    Slots must exist (after the first `apply_gradients`).
    """
    if hasattr(optimizer, '_index_dict'):  # tf.keras (tf_keras) optimizers
        index = optimizer._index_dict[optimizer._var_key(variable)]
        return [getattr(optimizer, name)[index]
                for name in ('_momentums', '_velocities', '_velocity_hats')
                if getattr(optimizer, name, None)]
    if hasattr(optimizer, 'get_slot_names'):  # legacy Keras and tf.compat.v1
        slots = [optimizer.get_slot(variable, name)
                 for name in optimizer.get_slot_names()]
        return [slot for slot in slots if slot is not None]
    raise TypeError(f'Cannot find the slots of optimizer {optimizer!r}.')


class MaskedOptimizer(tf.Module):
    """An optimizer wrapper that keeps a set of networks sparse.

    Masked weights stay exactly 0 without re-masking every step: their
    gradients are masked, and every position whose mask changes has its
    optimizer moments reset to 0, so Adam-type updates there are exactly 0
    (decoupled weight decay keeps a 0 weight at 0 too). Masks change only on
    update or pruning steps, which also record `last_mask_change`.

    Schedules (mask updates, gradual pruning) count this optimizer's own
    applied steps (`steps`, 0 for the first one), not the agent's train step:
    an optimizer that applies every k-th train step (e.g. TD3's delayed
    actor) still updates its masks every `update_freq` of its own steps.

    Args:
        optimizer: the optimizer to wrap.
        networks: the networks whose `MaskedLayer`s it maintains.
        updater: the mask updater (`mask_updater()` by default).
        seed: seed of the updater's random stream when it is built here and
            `mask_updater.seed` is not bound.
    """

    def __init__(self, optimizer, networks: Sequence[tf.keras.layers.Layer],
                 updater: Optional[MaskUpdater] = None,
                 seed: Optional[int] = None):
        super().__init__(name='masked_optimizer')
        self.optimizer = optimizer
        if updater is None:
            updater = mask_updater()
            if updater._seed is None:
                updater._seed = seed
        self.updater = updater
        self._layers = [layer for network in networks
                        for layer in sparse_layers.masked_layers(network)]
        # Kernel -> layer position (ints: a trackable-valued dict with
        # non-string keys could not be checkpointed).
        self._index_of_kernel: Dict = {
            layer.kernel.ref(): index for index, layer in enumerate(self._layers)}
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                 name='steps')
        self.last_mask_change = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                            name='last_mask_change')
        # Keras keeps a schedule in `_learning_rate` (`learning_rate` gives
        # its current value); tf.compat.v1 optimizers in `_lr`.
        for attribute in ('_learning_rate', 'learning_rate', '_lr'):
            learning_rate = getattr(optimizer, attribute, None)
            if isinstance(learning_rate,
                          tf.keras.optimizers.schedules.LearningRateSchedule):
                self.updater.learning_rate_fn = learning_rate
                break
        if self.updater.schedule_alg == 'learning_rate' and \
                self.updater.updates_masks and \
                self.updater.learning_rate_fn is None:
            raise ValueError("mask_updater.schedule_alg 'learning_rate' needs "
                             'an optimizer whose learning rate is a schedule.')

    @property
    def layers(self) -> List['sparse_layers.MaskedLayer']:
        return list(self._layers)

    def steps_since_mask_change(self) -> tf.Tensor:
        """Applied steps since the last mask change (this step counts 1)."""
        return self.steps - self.last_mask_change

    @property
    def learning_rate(self):
        return self.optimizer.learning_rate

    def apply_gradients(self, grads_and_vars, **kwargs):
        """Masked gradient step, then pruning and mask updates when due."""
        dense_grads = {}
        masked = []
        for grad, variable in grads_and_vars:
            index = self._index_of_kernel.get(variable.ref())
            if index is not None and grad is not None:
                dense_grads[index] = grad
                grad = grad * self._layers[index].mask
            masked.append((grad, variable))
        step = self.steps.read_value()
        applied = self.optimizer.apply_gradients(masked, **kwargs)
        with tf.control_dependencies([applied]):
            maintained = self._maintain_masks(step, dense_grads)
        with tf.control_dependencies([maintained]):
            return self.steps.assign_add(1).op

    def _maintain_masks(self, step: tf.Tensor, dense_grads: Dict):
        """Pruning and mask updates due at this optimizer step."""
        if not dense_grads:
            return tf.no_op()
        indices = sorted(dense_grads)
        layers = [self._layers[i] for i in indices]
        pruned = self._gradual_pruning(step, layers)
        if not self.updater.updates_masks:
            return pruned
        with tf.control_dependencies([pruned]):
            grads = [dense_grads[i] for i in indices]
            slots = [optimizer_slots(self.optimizer, layer.kernel)
                     for layer in layers]

            def update():
                with tf.control_dependencies([
                        self.updater.update(step, layers, grads, slots)]):
                    return self.last_mask_change.assign(step).op

            return tf.cond(self.updater.is_update_step(step), update, tf.no_op)

    def _gradual_pruning(self, step: tf.Tensor,
                         layers: Sequence['sparse_layers.MaskedLayer']):
        """Prunes 'prune'-mode layers by magnitude on their schedule."""
        ops = []
        for layer in layers:
            schedule = layer.pruning_schedule
            if not isinstance(schedule, sparse_layers.pruning_sched.PolynomialDecay):
                continue
            should_prune, sparsity = schedule(step)
            slots = optimizer_slots(self.optimizer, layer.kernel)

            def prune(layer=layer, sparsity=sparsity, slots=slots):
                with tf.control_dependencies([
                        _magnitude_prune(layer, sparsity, slots)]):
                    return self.last_mask_change.assign(step).op

            ops.append(tf.cond(should_prune, prune, tf.no_op))
        return tf.group(ops)


def _magnitude_prune(layer: 'sparse_layers.MaskedLayer', sparsity: tf.Tensor,
                     slots: Sequence[tf.Variable]) -> tf.Operation:
    """Keeps the N - floor(s N) largest |w| (among active ones)."""
    kernel = tf.reshape(layer.kernel, [-1])
    mask = tf.reshape(layer.mask, [-1])
    size = tf.size(kernel)
    num_zeros = tf.cast(tf.floor(sparsity * tf.cast(size, tf.float32)),
                        tf.int32)
    score = tf.where(mask > 0, tf.abs(kernel), -1.0)
    _, keep = tf.math.top_k(score, k=size - num_zeros)
    new_mask = tf.reshape(
        tf.scatter_nd(keep[:, None], tf.ones_like(keep, tf.float32), [size]),
        tf.shape(layer.mask))
    ops = [layer.mask.assign(new_mask),
           layer.kernel.assign(layer.kernel * new_mask)]
    ops += [slot.assign(slot * new_mask) for slot in slots]
    return tf.group(ops)
