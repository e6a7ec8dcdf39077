"""Gradient clipping in 'sparse' execution, as masked execution clips.

TF-Agents' PPO clips a step's gradients by their global norm before the
optimizer step (DQN, if asked, each by its own norm). In masked execution a
sparse layer's gradient is its dense kernel's, non-zero at inactive
positions too (the `MaskedOptimizer` masks it afterwards), so the norm
counts those entries. A compressed layer's
gradient holds its active positions only, so its norm is smaller and, where
the clip acts, the two executions would take different steps.

`DenseNormClippingOptimizer` clips as masked execution does: each
compressed layer's backward pass adds its dense gradient x^T dy to its
buffer on every step (`CompressedDense.capture_dense_gradient`), and that
buffer's norm stands in for the norm of the layer's values. The buffer,
scaled like the gradients, is also what a before-step mask update reads
(RigL grows by it, grown weights take their first step from it); it is
cleared after every step. This costs one dense product per compressed layer
and step, so such a run saves time in the forward pass and the input
gradient only.
"""

import functools
from typing import Callable, List

import tensorflow as tf

from rigl.rl.tfagents.sparsity import masked_optimizer
from rigl.rl.tfagents.sparsity.compressed import CompressedDense


def _always() -> tf.Tensor:
    return tf.constant(True)


class _Layers:
    """The compressed layers by variable, out of checkpoint tracking (a
    tracked dict could not be saved with these keys, and the layers are
    saved with their networks)."""

    def __init__(self):
        self.by_variable = {}


def _norm(tensor: tf.Tensor) -> tf.Tensor:
    """`tf.clip_by_norm`'s L2 norm (0 for a zero tensor)."""
    squares = tf.reduce_sum(tensor * tensor)
    positive = squares > 0
    return tf.where(positive, tf.sqrt(tf.where(positive, squares, 1.0)),
                    squares)


class DenseNormClippingOptimizer(masked_optimizer.MaskedOptimizer):
    """A `MaskedOptimizer` that first clips the gradients by the norm masked
    execution would compute: their global norm (`tf.clip_by_global_norm`,
    PPO) or each one's own (`tf.clip_by_norm`, DQN's `per_variable`), with
    their arithmetic.

    Args:
        clip_norm: the largest norm (> 0).
        per_variable: clip each gradient by its own norm, not all by their
            global norm.
        Other arguments are `MaskedOptimizer`'s.
    """

    def __init__(self, *args, clip_norm: float, per_variable: bool = False,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if not clip_norm > 0:
            raise ValueError(f'clip_norm must be positive, got {clip_norm!r}.')
        self._clip_norm = float(clip_norm)
        self._per_variable = per_variable
        self._compressed = _Layers()
        for layer in self.layers:
            if isinstance(layer, CompressedDense):
                # Every step now (a before-step mask update reads this buffer
                # too: capturing replaces the one it set up).
                layer.capture_dense_gradient(_always)
                self._compressed.by_variable[layer.weights_variable.ref()] = (
                    layer)

    def _buffers(self) -> List[tf.Variable]:
        return [layer.captured_gradient
                for layer in self._compressed.by_variable.values()]

    def _clip_functions(self, grads_and_vars) -> List[Callable]:
        """Per gradient, what clips it (and its layer's dense buffer)."""
        compressed = self._compressed.by_variable
        counted = [
            compressed[variable.ref()].captured_gradient.read_value()
            if variable.ref() in compressed else grad
            for grad, variable in grads_and_vars]
        clip_norm = tf.constant(self._clip_norm, tf.float32)
        if self._per_variable:
            return [None if grad is None else functools.partial(
                        lambda t, bound: t * clip_norm / bound,
                        bound=tf.maximum(_norm(dense), clip_norm))
                    for (grad, _), dense in zip(grads_and_vars, counted)]
        use_norm = tf.linalg.global_norm(
            [dense for (grad, _), dense in zip(grads_and_vars, counted)
             if grad is not None])
        scale = clip_norm * tf.minimum(1.0 / use_norm, 1.0 / clip_norm)
        scale += use_norm - use_norm  # NaN or inf norms give NaN, as TF's
        return [None if grad is None else (lambda t: t * scale)
                for grad, _ in grads_and_vars]

    def apply_gradients(self, grads_and_vars, **kwargs):
        """Clips (compressed layers counted by their dense gradients), then
        the masked step; clears the dense-gradient buffers after it."""
        grads_and_vars = list(grads_and_vars)
        clips = self._clip_functions(grads_and_vars)
        compressed = self._compressed.by_variable
        clipped, rescaled = [], []
        for (grad, variable), clip in zip(grads_and_vars, clips):
            clipped.append((None if clip is None else clip(grad), variable))
            layer = compressed.get(variable.ref())
            if layer is not None and clip is not None:
                buffer = layer.captured_gradient
                rescaled.append(buffer.assign(clip(buffer.read_value())))
        with tf.control_dependencies(rescaled):
            applied = super().apply_gradients(clipped, **kwargs)
        with tf.control_dependencies([applied]):
            return tf.group([buffer.assign(tf.zeros_like(buffer))
                             for buffer in self._buffers()])
