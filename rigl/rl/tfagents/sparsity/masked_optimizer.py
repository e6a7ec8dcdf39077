"""The optimizer wrapper that keeps networks sparse and runs mask updates.

`MaskedOptimizer` wraps the agent's optimizer: it masks gradients, applies
them, advances gradual pruning ('prune' mode) and runs the mask updater
(`updaters`) on update steps, all inside the agent's `tf.function` train
step, so an agent only swaps its optimizers to become sparse. When the
update runs follows the original agents (`UPDATE_TIMINGS`): DQN and PPO
update masks just before the optimizer step, from that step's gradients;
SAC (and TD3) after all the networks' steps of a train step, from gradients
recomputed on the same batch at the updated weights.
"""

import contextlib
from typing import Callable, Dict, List, Optional, Sequence

import tensorflow as tf

from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.sparsity.updaters import (
    UPDATE_STATS, MagnitudePruning, MaskUpdater, mask_updater)

# 'before_step': the update uses the step's own gradients and the step then
# applies them under the new masks (the original DQN and PPO);
# 'after_step': the agent calls `update_masks_after_step` with gradients
# recomputed after its optimizer steps (the original SAC).
UPDATE_TIMINGS = ('before_step', 'after_step')


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


class _Untracked:
    """Holds variables a checkpoint should not carry (diagnostics, and
    flags that are reset within the train step that sets them)."""

    def __init__(self, **variables):
        self.__dict__.update(variables)


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

    The wrapped optimizer's per-variable state is created at construction,
    in the networks' variable order, so that a checkpoint saves and restores
    it on the same variables in every process (TF-Agents' SAC and TD3 list
    the critics' variables in memory-address order).

    Args:
        optimizer: the optimizer to wrap.
        networks: the networks whose `MaskedLayer`s it maintains (built).
        updater: the mask updater (the run's `SparseMethod.make_updater()`;
            gin's `mask_updater()` if None).
        seed: seed of the updater's random stream unless the updater has
            one of its own (`mask_updater.seed`).
        update_timing: one of `UPDATE_TIMINGS`.
    """

    def __init__(self, optimizer, networks: Sequence[tf.keras.layers.Layer],
                 updater: Optional[MaskUpdater] = None,
                 seed: Optional[int] = None,
                 update_timing: str = 'before_step'):
        super().__init__(name='masked_optimizer')
        if update_timing not in UPDATE_TIMINGS:
            raise ValueError(f'update_timing is {update_timing!r}; allowed: '
                             f'{", ".join(UPDATE_TIMINGS)}.')
        self.optimizer = optimizer
        if updater is None:
            updater = mask_updater()
        if updater._seed is None:
            updater._seed = seed
        self.updater = updater
        self.update_timing = update_timing
        self._layers = [layer for network in networks
                        for layer in sparse_layers.masked_layers(network)]
        build_slots_in_order(optimizer, [
            variable for network in networks
            for variable in network.trainable_variables])
        # Kernel -> layer position (ints: a trackable-valued dict with
        # non-string keys could not be checkpointed).
        self._index_of_kernel: Dict = {
            layer.weights_variable.ref(): index
            for index, layer in enumerate(self._layers)}
        if update_timing == 'before_step' and updater.updates_masks:
            # Sparse-execution layers hold no dense gradient; on update
            # steps their backward pass captures it (RigL grows by it, and
            # grown positions take this step's gradient, as masked ones do).
            for layer in self._layers:
                if isinstance(layer, sparse_layers.CompressedDense):
                    layer.capture_dense_gradient(
                        lambda: self.updater.is_update_step(self.steps))
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                 name='steps')
        self.last_mask_change = tf.Variable(-1, dtype=tf.int64,
                                            trainable=False,
                                            name='last_mask_change')
        self._state = _Untracked(
            update_due=tf.Variable(False, trainable=False),
            update_stats=tf.Variable(
                tf.zeros([len(self._layers), len(UPDATE_STATS)]),
                trainable=False))
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

    def _captures(self, layer) -> bool:
        """Whether `layer` captures its dense gradient for this optimizer's
        before-step mask updates."""
        return (isinstance(layer, sparse_layers.CompressedDense) and
                self.update_timing == 'before_step' and
                self.updater.updates_masks)

    @property
    def update_stats(self) -> tf.Variable:
        """[layer, `UPDATE_STATS`] of the last mask update."""
        return self._state.update_stats

    def steps_since_mask_change(self) -> tf.Tensor:
        """Applied steps since the last mask change (this step counts 1)."""
        return self.steps - self.last_mask_change

    @property
    def learning_rate(self):
        return self.optimizer.learning_rate

    def apply_gradients(self, grads_and_vars, **kwargs):
        """Masked gradient step, pruning and, when due, mask updates."""
        grads_and_vars = list(grads_and_vars)
        dense_grads = {}
        for grad, variable in grads_and_vars:
            index = self._index_of_kernel.get(variable.ref())
            if index is not None and grad is not None:
                layer = self._layers[index]
                dense_grads[index] = (
                    layer.captured_gradient if self._captures(layer)
                    else layer.to_dense(grad))
        step = self.steps.read_value()
        updates = self.updater.updates_masks and bool(dense_grads)
        due = self.updater.is_update_step(step) if updates else None
        before = tf.no_op()
        if updates and self.update_timing == 'before_step':
            before = tf.cond(due, rarely(lambda: self._update(step,
                                                              dense_grads)),
                             tf.no_op)
        captured = []
        with tf.control_dependencies([before]):
            masked = []
            for grad, variable in grads_and_vars:
                index = self._index_of_kernel.get(variable.ref())
                layer = None if index is None else self._layers[index]
                if grad is None or layer is None:
                    pass
                elif isinstance(layer, sparse_layers.MaskedLayer):
                    grad = grad * layer.mask
                elif self._captures(layer) and updates:
                    # After an update, the step's gradient at the new
                    # positions.
                    grad = tf.cond(due, lambda layer=layer: tf.gather_nd(
                        layer.captured_gradient, layer.positions),
                        lambda grad=grad: grad)
                    captured.append(layer.captured_gradient)
                masked.append((grad, variable))
            applied = self.optimizer.apply_gradients(masked, **kwargs)
        with tf.control_dependencies([applied]):
            ops = [self._gradual_pruning(step, dense_grads)]
            if captured:
                ops.append(tf.cond(due, lambda: tf.group(
                    [gradient.assign(tf.zeros_like(gradient))
                     for gradient in captured]), tf.no_op))
            if updates and self.update_timing == 'after_step':
                ops.append(self._state.update_due.assign(due))
        with tf.control_dependencies(ops):
            return self.steps.assign_add(1).op

    def update_masks_after_step(self, dense_gradients: Callable[
            [Sequence[tf.Variable]], Sequence[tf.Tensor]]) -> tf.Operation:
        """Runs the mask update that the last `apply_gradients` found due
        ('after_step' timing): `dense_gradients(kernels)` recomputes the
        loss's gradients with respect to the masked kernels, on the update
        step only."""
        state = self._state
        if not (self.updater.updates_masks and self._layers):
            return tf.no_op()

        def update():
            kernels = [layer.kernel for layer in self._layers]
            if self.updater.needs_gradients:
                with contextlib.ExitStack() as stack:
                    for layer, kernel in zip(self._layers, kernels):
                        if isinstance(layer, sparse_layers.CompressedDense):
                            stack.enter_context(layer.dense_forward(kernel))
                    grads = dict(enumerate(dense_gradients(kernels)))
            else:
                grads = dict(enumerate(tf.zeros_like(kernel)
                                       for kernel in kernels))
            with tf.control_dependencies([self._update(self.steps - 1,
                                                       grads)]):
                return state.update_due.assign(False).op

        return tf.cond(state.update_due.read_value(), rarely(update),
                       tf.no_op)

    def _update(self, step: tf.Tensor, dense_grads: Dict) -> tf.Operation:
        """One mask update of the layers in `dense_grads` (index -> grad)."""
        indices = sorted(dense_grads)
        layers = [self._layers[i] for i in indices]
        slots = [optimizer_slots(self.optimizer, layer.weights_variable)
                 for layer in layers]
        stats = self.updater.update(step, layers,
                                    [dense_grads[i] for i in indices], slots)
        return tf.group(
            self._state.update_stats.scatter_nd_update(
                [[i] for i in indices], stats),
            self.last_mask_change.assign(step))

    def _gradual_pruning(self, step: tf.Tensor, dense_grads: Dict):
        """Prunes 'prune'-mode layers by magnitude on their schedule."""
        ops = []
        for index in sorted(dense_grads):
            layer = self._layers[index]
            schedule = getattr(layer, 'pruning_schedule', None)
            if not isinstance(schedule,
                              sparse_layers.pruning_sched.PolynomialDecay):
                continue
            should_prune, sparsity = schedule(step)
            slots = optimizer_slots(self.optimizer, layer.kernel)

            def prune(layer=layer, sparsity=sparsity, slots=slots):
                with tf.control_dependencies([
                        MagnitudePruning.prune_layer(layer, sparsity,
                                                     slots)]):
                    return self.last_mask_change.assign(step).op

            ops.append(tf.cond(should_prune, prune, tf.no_op))
        return tf.group(ops)


def rarely(branch: Callable[[], tf.Operation]) -> Callable[[], tf.Operation]:
    """`branch` as one call of its own compiled function, for the taken
    side of a `tf.cond` that runs on few steps: a branch's ops inlined into
    the train step cost time on every step, even untaken."""
    def run() -> tf.Tensor:
        with tf.control_dependencies([branch()]):
            return tf.constant(True)

    compiled = tf.function(run, autograph=False,
                           experimental_attributes={'_noinline': True})

    def call():
        with tf.control_dependencies([compiled()]):
            return tf.no_op()

    return call


def build_slots_in_order(optimizer, variables: Sequence[tf.Variable]) -> None:
    """Creates a Keras optimizer's per-variable state for `variables` in
    their order (its checkpoint matches slots to variables by position).
    Other optimizers name their slots by variable and need nothing."""
    build = getattr(optimizer, 'build', None)
    if build is not None and variables and not getattr(
            optimizer, '_built', False):
        build(list(variables))
