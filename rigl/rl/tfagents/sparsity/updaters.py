"""The registry of mask-update rules: static, SET, RigL, magnitude pruning.

Every rule implements one small interface (`MaskUpdater`): whether a step
updates masks, the drop fraction at a step (the schedule), and the scores
by which connections are dropped and regrown. An update on a layer with `a`
active weights follows the original suite (rigl_tf2 `generic_mask_update`):

1. drop n = int(d * a) active weights of smallest |w| (scored |mask * w|,
   ties to the lower flat index, as `tf.math.top_k`);
2. grow n among the positions not kept, by largest score: random for SET,
   |dense gradient| for RigL;
3. a connection that is dropped and regrown at the same update keeps its
   weight and optimizer moments (`reinit_when_same=False`, the original's
   default); the others start at 0 (`grow_init='zero'`), or, as ANF-TD3's
   `unif` and `xavier` options, at one random value per layer and update
   drawn from U(+-1/sqrt(fan_in)) or U(+-sqrt(12/(fan_in + fan_out))), with
   their optimizer moments (Adam m, v) at 0. Dropped weights become 0 with
   their moments.

A new rule is one class decorated with `@register('name')`; gin's
`mask_updater(update_alg=...)` builds the rule a run names. The optimizer
that runs a rule inside the train step is `masked_optimizer.MaskedOptimizer`.
"""

import math
from typing import Callable, Dict, Optional, Sequence

import gin
import tensorflow as tf

from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.run import settings

# The registry of mask-update rules: name -> MaskUpdater subclass (see
# `register`). A new rule is one registered class.
UPDATERS: Dict[str, type] = {}
SCHEDULES = ('constant', 'cosine', 'learning_rate')
GROW_INITS = ('zero', 'unif', 'xavier')
# Per layer, per update: what `MaskedOptimizer.update_stats` records.
UPDATE_STATS = ('grown', 'regrown_just_dropped', 'grad_active',
                'grad_grown', 'grad_all', 'dropped_weight')


def register(name: str):
    """Class decorator: makes a `MaskUpdater` subclass the rule `name`
    (`mask_updater.update_alg`, the sparse method's name)."""
    def add(cls):
        if name in UPDATERS:
            raise ValueError(f'mask updater {name!r} is registered twice.')
        cls.name_for_errors = name
        UPDATERS[name] = cls
        return cls
    return add


class MaskUpdater(tf.Module):
    """Drop-and-grow on a schedule. A rule overrides the hooks: the drop
    score (`drop_scores`: the lowest active ones are dropped) and the grow
    score (`grow_scores`: the highest of the others are grown), both of
    which see the layer's optimizer state; and `needs_gradients` if the grow
    score reads the dense gradient.

    Args:
        update_freq: steps between updates (> 0).
        init_drop_fraction: d0 in [0, 1].
        schedule_alg: 'constant' (d0), 'cosine' (d0 * (1 + cos(pi t/T)) / 2,
            T = last_update_step) or 'learning_rate' (d0 * lr(t) / lr(0)).
        begin_step: no update before this step.
        last_update_step: no update after this step; 0 means never, a
            negative value no last step (as the original's
            `is_update_iter`; the cosine schedule needs a positive one).
        seed: seed of the random scores (SET) and of grown values.
        grow_init: value of grown connections: 'zero', or one value per layer
            and update shared by all its grown connections, drawn uniformly
            within +-1/sqrt(fan_in) ('unif') or +-sqrt(12/(fan_in+fan_out))
            ('xavier'), as ANF-TD3 does. Drawn from a stateless stream of
            (seed, step, layer), so a resumed run grows the same values.
        reinit_when_same: also restart (weight and moments at the grow init)
            a connection dropped and regrown at the same update. False, as
            the original's default, keeps it as it was.
        use_stateless: random scores from a stateless stream of (seed, step,
            layer), so a resumed run draws the same (else TF's stateful op).
    """

    name_for_errors = 'static'

    def __init__(self, update_freq: int = 1000,
                 init_drop_fraction: float = 0.3,
                 schedule_alg: str = 'cosine', begin_step: int = 0,
                 last_update_step: int = 800000, seed: Optional[int] = None,
                 grow_init: str = 'zero', reinit_when_same: bool = False,
                 use_stateless: bool = True):
        super().__init__(name=f'{self.name_for_errors}_mask_updater')
        name = 'mask_updater.'
        settings.check(name + 'update_freq', update_freq, int, low=1)
        init_drop_fraction = settings.check(
            name + 'init_drop_fraction', init_drop_fraction, float, 0, 1)
        settings.check(name + 'begin_step', begin_step, int, low=0)
        settings.check(name + 'last_update_step', last_update_step, int)
        settings.check(name + 'reinit_when_same', reinit_when_same, bool)
        settings.check(name + 'seed', seed, Optional[int], low=0)
        if schedule_alg not in SCHEDULES:
            raise ValueError(f'mask_updater.schedule_alg is {schedule_alg!r}; '
                             f'allowed: {", ".join(SCHEDULES)}.')
        if grow_init not in GROW_INITS:
            raise ValueError(f'mask_updater.grow_init is {grow_init!r}; '
                             f'allowed: {", ".join(GROW_INITS)}.')
        if schedule_alg == 'cosine' and last_update_step <= 0:
            raise ValueError(
                "mask_updater.schedule_alg 'cosine' anneals to 0 at "
                'last_update_step, which must be positive; got '
                f'{last_update_step}.')
        if 0 <= last_update_step < begin_step:
            raise ValueError(
                'mask_updater needs begin_step <= last_update_step, got '
                f'begin_step={begin_step}, '
                f'last_update_step={last_update_step}.')
        self.update_freq = update_freq
        self.init_drop_fraction = float(init_drop_fraction)
        self.schedule_alg = schedule_alg
        self.begin_step = begin_step
        self.last_update_step = last_update_step
        self.learning_rate_fn: Optional[Callable] = None
        self.grow_init = grow_init
        self.reinit_when_same = reinit_when_same
        self._use_stateless = use_stateless
        self._seed = seed
        self.last_drop_fraction = tf.Variable(0.0, trainable=False,
                                              name='last_drop_fraction')

    @property
    def updates_masks(self) -> bool:
        return True

    @property
    def needs_gradients(self) -> bool:
        """Whether `grow_scores` reads the dense gradient."""
        return False

    def is_update_step(self, step: tf.Tensor) -> tf.Tensor:
        """step % update_freq == 0, within [begin_step, last_update_step]
        (the original's `is_update_iter`; step 0 is an update step)."""
        step = tf.cast(step, tf.int64)
        due = tf.logical_and(tf.equal(step % self.update_freq, 0),
                             step >= self.begin_step)
        if self.last_update_step == 0:
            return tf.constant(False)
        if self.last_update_step > 0:
            due = tf.logical_and(due, step <= self.last_update_step)
        return due

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

    def drop_scores(self, layer_index: int, kernel: tf.Tensor,
                    mask: tf.Tensor, slots: Sequence[tf.Variable]
                    ) -> tf.Tensor:
        """Scores of every position; the highest `active - n` are kept.
        The original's |mask * w|: inactive positions score 0."""
        del layer_index, slots
        return tf.abs(mask * kernel)

    def grow_scores(self, step: tf.Tensor, layer_index: int,
                    kernel: tf.Tensor, dense_grad: tf.Tensor,
                    slots: Sequence[tf.Variable]) -> tf.Tensor:
        """Scores of every position; the largest non-kept ones are grown."""
        raise NotImplementedError

    def update(self, step: tf.Tensor,
               layers: Sequence['sparse_layers.MaskedLayer'],
               dense_grads: Sequence[tf.Tensor],
               slots: Sequence[Sequence[tf.Variable]]) -> tf.Tensor:
        """Drops and regrows connections of every layer (one update step).

        Returns:
            [len(layers), len(UPDATE_STATS)] statistics of the update.
        """
        fraction = self.drop_fraction(step)
        stats = []
        with tf.control_dependencies([self.last_drop_fraction.assign(
                fraction)]):
            for index, (layer, grad, layer_slots) in enumerate(
                    zip(layers, dense_grads, slots)):
                stats.append(self._update_layer(step, index, fraction, layer,
                                                grad, layer_slots))
        return tf.stack(stats)

    def _update_layer(self, step, index, fraction, layer, dense_grad, slots):
        """One layer's drop and grow; returns its `UPDATE_STATS` row."""
        dense_mask, dense_kernel = layer.mask, layer.kernel
        dense_slots = [layer.to_dense(slot) for slot in slots]
        shape = tf.shape(dense_mask)
        mask = tf.reshape(dense_mask, [-1])
        kernel = tf.reshape(dense_kernel, [-1])
        size = tf.size(mask)
        active = tf.cast(tf.reduce_sum(mask), tf.int32)
        num_drop = tf.cast(fraction * tf.cast(active, tf.float32), tf.int32)
        # A fully dense layer (e.g. ANF's hidden layers) has nowhere else to
        # grow: regrowing where it dropped would only zero weights.
        num_drop = tf.where(active < size, num_drop, 0)
        # top_k breaks ties to the lower index, as the original.
        drop_score = tf.reshape(self.drop_scores(
            index, dense_kernel, dense_mask, dense_slots), [-1])
        _, keep_index = tf.math.top_k(drop_score, k=active - num_drop)
        kept = tf.scatter_nd(keep_index[:, None],
                             tf.ones_like(keep_index, tf.float32), [size])
        scores = tf.reshape(self.grow_scores(
            step, index, dense_kernel, dense_grad, dense_slots), [-1])
        grow_score = tf.where(kept > 0, -float('inf'), scores)
        _, grow_index = tf.math.top_k(grow_score, k=num_drop)
        grown = tf.scatter_nd(grow_index[:, None],
                              tf.ones_like(grow_index, tf.float32), [size])
        new_mask = kept + grown
        # Restarted: grown where inactive before (and, with
        # reinit_when_same, where just dropped too).
        restarted = grown if self.reinit_when_same else grown * (1.0 - mask)
        survives = new_mask - restarted
        new_kernel = kernel * survives
        if self.grow_init != 'zero':
            new_kernel += restarted * self.grown_value(step, index,
                                                       dense_kernel)
        ops = layer.rewrite(tf.reshape(new_mask, shape),
                            tf.reshape(new_kernel, shape), slots,
                            tf.reshape(survives, shape))
        with tf.control_dependencies([ops]):
            return self._update_stats(mask, kept, grown, kernel,
                                      tf.reshape(dense_grad, [-1]))

    @staticmethod
    def _update_stats(mask, kept, grown, kernel, dense_grad) -> tf.Tensor:
        """`UPDATE_STATS` of one layer's update (for diagnosis: how much
        regrowth lands where it was just dropped, and the gradient scale at
        kept, grown and all positions)."""
        dropped = mask * (1.0 - kept)
        magnitude = tf.abs(dense_grad)

        def mean_over(where, values):
            return tf.math.divide_no_nan(tf.reduce_sum(where * values),
                                         tf.reduce_sum(where))

        return tf.stack([
            tf.reduce_sum(grown), tf.reduce_sum(grown * dropped),
            mean_over(kept, magnitude), mean_over(grown, magnitude),
            tf.reduce_mean(magnitude), mean_over(dropped, tf.abs(kernel))])

    def grown_value(self, step: tf.Tensor, layer_index: int,
                    kernel: tf.Tensor) -> tf.Tensor:
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


@register('static')
class StaticUpdater(MaskUpdater):
    """Static sparse training: masks never change."""

    @property
    def updates_masks(self) -> bool:
        return False

    def is_update_step(self, step):
        return tf.constant(False)


@register('set')
class SETUpdater(MaskUpdater):
    """SET (Mocanu et al. 2018): regrow at random positions.

    With `use_stateless` (default) the scores are a function of (seed, step,
    layer), so a resumed run regrows exactly where the uninterrupted one would.
    The seed comes from the run's seed (one stream per optimizer) unless
    `mask_updater.seed` is bound.
    """

    def grow_scores(self, step, layer_index, kernel, dense_grad, slots):
        if not self._use_stateless:
            return tf.random.uniform(tf.shape(kernel))
        seed = tf.random.experimental.stateless_fold_in(
            tf.stack([tf.constant(self._seed or 0, tf.int64),
                      tf.cast(step, tf.int64)]), layer_index)
        return tf.random.stateless_uniform(tf.shape(kernel), seed)


@register('rigl')
class RigLUpdater(MaskUpdater):
    """RigL (Evci et al. 2020): regrow where |dense gradient| is largest."""

    @property
    def needs_gradients(self) -> bool:
        return True

    def grow_scores(self, step, layer_index, kernel, dense_grad, slots):
        return tf.abs(dense_grad)


@register('prune')
class MagnitudePruning(StaticUpdater):
    """Gradual magnitude pruning (Zhu and Gupta 2017): no drop-and-grow;
    each 'prune'-mode layer (`sparse_layers.wrap_all_layers`) keeps its
    N - floor(s N) largest |w| at the sparsity s its schedule gives
    (`MaskedOptimizer` applies it after the step, on schedule steps)."""

    @staticmethod
    def prune_layer(layer: 'sparse_layers.MaskedLayer', sparsity: tf.Tensor,
                    slots: Sequence[tf.Variable]) -> tf.Operation:
        """Prunes one layer to `sparsity` by magnitude (among the active
        weights), zeroing the pruned weights' optimizer moments."""
        kernel = tf.reshape(layer.kernel, [-1])
        mask = tf.reshape(layer.mask, [-1])
        size = tf.size(kernel)
        num_zeros = tf.cast(tf.floor(sparsity * tf.cast(size, tf.float32)),
                            tf.int32)
        score = tf.where(mask > 0, tf.abs(kernel), -1.0)
        _, keep = tf.math.top_k(score, k=size - num_zeros)
        new_mask = tf.reshape(
            tf.scatter_nd(keep[:, None], tf.ones_like(keep, tf.float32),
                          [size]),
            tf.shape(layer.mask))
        ops = [layer.mask.assign(new_mask),
               layer.kernel.assign(layer.kernel * new_mask)]
        ops += [slot.assign(slot * new_mask) for slot in slots]
        return tf.group(ops)


@gin.configurable
def mask_updater(update_alg: str = '', update_freq: int = 1000,
                 init_drop_fraction: float = 0.3, schedule_alg: str = 'cosine',
                 begin_step: int = 0, last_update_step: int = 800000,
                 use_stateless: bool = True,
                 seed: Optional[int] = None,
                 grow_init: str = 'zero',
                 reinit_when_same: bool = False) -> MaskUpdater:
    """Builds the registered updater `update_alg` ('' is 'static')."""
    algorithm = update_alg or 'static'
    if algorithm == 'prune':
        raise ValueError("mask_updater.update_alg is 'prune'; gradual "
                         "pruning is wrap_all_layers.mode = 'prune'.")
    if algorithm not in UPDATERS:
        allowed = [name for name in UPDATERS if name != 'prune']
        raise ValueError(f'mask_updater.update_alg is {update_alg!r}; '
                         f"allowed: '' (static), {', '.join(allowed)}.")
    return UPDATERS[algorithm](
        update_freq=update_freq, init_drop_fraction=init_drop_fraction,
        schedule_alg=schedule_alg, begin_step=begin_step,
        last_update_step=last_update_step, seed=seed, grow_init=grow_init,
        reinit_when_same=reinit_when_same, use_stateless=use_stateless)
