"""A Dense layer that holds only its active weights ('sparse' execution).

`CompressedDense` replaces a `MaskedLayer` when a run sets
`train_eval.sparse_execution='sparse'`: instead of a dense kernel full of
zeros and a mask, it keeps a `values` variable [nnz] (trainable: the
optimizer's per-weight state is [nnz] too) at `positions` [nnz, 2] (row,
col; row-major, as `tf.where(mask)`), plus the index arrays the sparse
products need (`csr.Structure`). Its forward and backward passes cost in
proportion to nnz (`csr.matmul`).

It offers the sparse-layer interface the mask updaters and statistics use:
`kernel` and `mask` (dense tensors, built on demand), `weights_variable`
(what the optimizer updates), `to_dense` (a per-weight vector such as an
optimizer slot as a dense matrix) and `rewrite` (new mask, kernel and slots,
compressed back). Static, SET and RigL keep each layer's active count, so
the variables' shapes never change.
"""

import contextlib
import functools
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from rigl.rl.tfagents.sparsity import csr

# `dense_forward` without a kernel: the layer's own, built from its values.
_OWN_KERNEL = object()


# Whether backward passes traced (or run eagerly) now may capture dense
# gradients: only a train step's may, not a diagnostic's (`no_capture`).
_capture_enabled = [True]


@contextlib.contextmanager
def no_capture():
    """Within the block, compressed layers capture no dense gradient: for
    gradients taken outside the train step (SNR, plasticity), which would
    otherwise add into the buffer the next mask update reads."""
    _capture_enabled.append(False)
    try:
        yield
    finally:
        _capture_enabled.pop()


class _Untracked:
    """Holds a variable no checkpoint should carry."""

    def __init__(self, variable: tf.Variable):
        self.variable = variable


def _numpy_structure(positions: np.ndarray, shape) -> csr.Structure:
    """`csr.structure` in numpy (for variable initial values)."""
    n_in, n_out = shape
    rows = positions[:, 0].astype(np.int32)
    cols = positions[:, 1].astype(np.int32)
    by_col = np.lexsort((rows, cols)).astype(np.int32)

    def pointers(ids, size):
        return np.concatenate([[0], np.cumsum(np.bincount(
            ids, minlength=size))]).astype(np.int32)

    return csr.Structure(row_ptr=pointers(rows, n_in), col=cols,
                         col_ptr=pointers(cols, n_out),
                         row_by_col=rows[by_col], which_by_col=by_col)


def _polyak(target: tf.Tensor, online: tf.Tensor, tau: float) -> tf.Tensor:
    """TF-Agents' soft update of one variable, with its arithmetic
    (`common.soft_variables_update`), so equal inputs give equal bits."""
    return (1 - tau) * target + tau * online


def _magnitude_union(target: 'CompressedDense', online: 'CompressedDense',
                     blend: Callable) -> Tuple[tf.Tensor, tf.Tensor]:
    """`CompressedDense.magnitude_average` where the positions differ."""
    n_out = target.kernel_shape[1]
    size = target.kernel_shape[0] * n_out

    def flat(layer):
        return (layer.positions[:, 0] * n_out + layer.positions[:, 1])[:, None]

    def scattered(layer, vector):
        return tf.scatter_nd(flat(layer), vector, [size])

    member = (scattered(target, tf.ones_like(target.values)) +
              scattered(online, tf.ones_like(online.values)))
    union = tf.where(member > 0)[:, 0]  # ascending: row-major
    averaged = blend(tf.gather(scattered(target, target.values), union),
                     tf.gather(scattered(online, online.values), union))
    # Dropped first: zeros, then the smallest |w|, ties to the lower index
    # (top_k's order among equal keys).
    drop_first = tf.where(tf.not_equal(averaged, 0.0), -tf.abs(averaged),
                          tf.ones_like(averaged))
    excess = tf.shape(union)[0] - target.active_count
    _, dropped = tf.math.top_k(drop_first, k=excess)
    kept = tf.equal(tf.scatter_nd(dropped[:, None], tf.ones_like(dropped),
                                  tf.shape(union)), 0)
    kept_flat = tf.boolean_mask(union, kept)
    positions = tf.stack([kept_flat // n_out, kept_flat % n_out], axis=1)
    values = tf.boolean_mask(averaged, kept)
    return (tf.ensure_shape(values, target.values.shape),
            tf.ensure_shape(positions, target.positions.shape))


class CompressedDense(tf.keras.layers.Layer):
    """A Keras Dense layer whose kernel is stored as its active weights.

    Args:
        dense: the (unbuilt) Dense layer it stands for: units, activation,
            bias and initialisers come from it.
        mask: the initial 0/1 mask [n_in, units]; its count of ones is the
            layer's fixed number of active weights.
    """

    def __init__(self, dense: tf.keras.layers.Dense, mask: np.ndarray,
                 **kwargs):
        super().__init__(name=kwargs.pop('name', f'compressed_{dense.name}'),
                         **kwargs)
        if not isinstance(dense, tf.keras.layers.Dense):
            raise ValueError(f'CompressedDense stands for a Dense layer, '
                             f'not {type(dense).__name__}.')
        self.units = dense.units
        self.activation = tf.keras.activations.get(dense.activation)
        self.use_bias = dense.use_bias
        self.bias_initializer = dense.bias_initializer
        self.kernel_initializer = dense.kernel_initializer
        self._initial_mask = np.asarray(mask) > 0
        self._dense_kernel: Optional[tf.Tensor] = None
        self._capture_when: Optional[Callable[[], tf.Tensor]] = None
        self._captured: Optional[_Untracked] = None
        # A magnitude-pruned target (ANF): its mask marks its non-zeros, as
        # a masked target's does, not every position it holds.
        self.mask_marks_nonzeros = False

    def build(self, input_shape):
        n_in = int(input_shape[-1])
        if self._initial_mask.shape != (n_in, self.units):
            raise ValueError(
                f'{self.name}: mask shape {self._initial_mask.shape} does '
                f'not match the kernel ({n_in}, {self.units}).')
        self.kernel_shape = (n_in, self.units)
        positions = np.argwhere(self._initial_mask).astype(np.int64)
        nnz = len(positions)
        self.values = self.add_weight(
            'values', shape=[nnz], initializer='zeros', trainable=True)
        self.positions = self.add_weight(
            'positions', shape=[nnz, 2], dtype=tf.int64, trainable=False,
            initializer=tf.constant_initializer(positions))
        structure = _numpy_structure(positions, self.kernel_shape)
        self._structure = csr.Structure(*[
            self.add_weight(name, shape=array.shape, dtype=tf.int32,
                            trainable=False,
                            initializer=tf.constant_initializer(array))
            for name, array in zip(csr.Structure._fields, structure)])
        if self.use_bias:
            self.bias = self.add_weight('bias', shape=[self.units],
                                        initializer=self.bias_initializer,
                                        trainable=True)
        else:
            self.bias = None
        super().build(input_shape)

    def call(self, inputs):
        flat = inputs if inputs.shape.rank == 2 else tf.reshape(
            inputs, [-1, self.kernel_shape[0]])  # e.g. PPO's [batch, time]
        fused_relu = False
        if self._dense_kernel is not None:
            kernel = (self.kernel if self._dense_kernel is _OWN_KERNEL
                      else self._dense_kernel)
            outputs = tf.matmul(flat, kernel)
            if self.bias is not None:
                outputs = tf.nn.bias_add(outputs, self.bias)
        else:
            # Bias and ReLU inside the sparse op (one pass over the output).
            fused_relu = getattr(self.activation, '__name__', '') == 'relu'
            outputs = csr.matmul(
                flat, self.values, csr.Structure(*self._structure),
                self.kernel_shape,
                self._capture if (self._capture_when is not None and
                                  _capture_enabled[-1]) else None,
                bias=self.bias, relu=fused_relu)
        if inputs.shape.rank != 2:
            outputs = tf.reshape(outputs, tf.concat(
                [tf.shape(inputs)[:-1], [self.units]], axis=0))
        return outputs if fused_relu else self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.units])

    # The sparse-layer interface (shared with `sparse_layers.MaskedLayer`).

    @property
    def weights_variable(self) -> tf.Variable:
        """The variable the optimizer updates (its slots are [nnz])."""
        return self.values

    @property
    def active_count(self) -> int:
        return int(self.values.shape[0])

    def to_dense(self, vector: tf.Tensor) -> tf.Tensor:
        """A per-weight vector [nnz] (values, an optimizer slot, ...) as a
        dense [n_in, n_out] matrix, 0 at inactive positions."""
        return tf.scatter_nd(self.positions, vector, self.kernel_shape)

    @property
    def kernel(self) -> tf.Tensor:
        return self.to_dense(self.values)

    @property
    def mask(self) -> tf.Tensor:
        if self.mask_marks_nonzeros:
            return self.to_dense(tf.cast(tf.not_equal(self.values, 0.0),
                                         self.values.dtype))
        return self.to_dense(tf.ones_like(self.values))

    def apply_mask(self) -> tf.Operation:
        return tf.no_op()  # inactive weights are not stored

    def rewrite(self, mask: tf.Tensor, kernel: tf.Tensor,
                slots: Sequence[tf.Variable],
                slot_scale: tf.Tensor) -> tf.Operation:
        """Sets a new mask (same active count) and kernel, and multiplies
        the optimizer slots by `slot_scale` [n_in, n_out], moving them to
        the new positions."""
        new_positions = tf.where(mask > 0)
        checks = [tf.debugging.assert_equal(
            tf.shape(new_positions)[0], self.active_count,
            message=f'{self.name}: a mask update changed the active count')]
        with tf.control_dependencies(checks):
            new_slots = [tf.gather_nd(self.to_dense(slot) * slot_scale,
                                      new_positions) for slot in slots]
            new_values = tf.gather_nd(kernel, new_positions)
        with tf.control_dependencies(new_slots + [new_values]):
            ops = [slot.assign(value) for slot, value in zip(slots, new_slots)]
            ops.append(self.values.assign(new_values))
            ops.append(self.positions.assign(new_positions))
            ops += [variable.assign(value) for variable, value in zip(
                self._structure,
                csr.structure(new_positions, self.kernel_shape))]
        return tf.group(ops)

    def capture_dense_gradient(self, when: Callable[[], tf.Tensor]) -> None:
        """From now on, backward passes during which `when()` is true add
        the dense gradient x^T dy to `captured_gradient` (what an optimizer
        that updates masks before its step needs: RigL grows by it, and
        grown positions take their first step from it)."""
        self._capture_when = when
        self._captured = _Untracked(tf.Variable(
            tf.zeros(self.kernel_shape), trainable=False,
            name=f'{self.name}_captured_gradient'))

    @property
    def captured_gradient(self) -> tf.Variable:
        return self._captured.variable

    def _capture(self, x: tf.Tensor, dy: tf.Tensor) -> tf.Operation:
        captured = self._captured.variable
        return tf.cond(
            self._capture_when(),
            lambda: captured.assign_add(tf.matmul(x, dy,
                                                  transpose_a=True)).op,
            tf.no_op)

    def adopt_positions(self, source: 'CompressedDense') -> tf.Operation:
        """Moves to `source`'s positions, keeping this layer's values where
        they overlap and 0 elsewhere (a target following its online
        layer)."""
        new_values = tf.gather_nd(self.kernel, source.positions)
        with tf.control_dependencies([new_values]):
            ops = [self.values.assign(new_values),
                   self.positions.assign(source.positions)]
            ops += [mine.assign(theirs) for mine, theirs in
                    zip(self._structure, source._structure)]
        return tf.group(ops)

    def magnitude_average(self, online: 'CompressedDense',
                          tau: float) -> Tuple[tf.Tensor, tf.Tensor]:
        """ANF's target update of this (target) layer, on its own positions:
        (1 - tau) * target + tau * online over the union of both layers'
        positions, keeping the layer's active count k by magnitude.

        The masked computation (`sparsity.targets.prune_targets_by_magnitude`)
        drops the smallest non-zeros beyond k, ties to the lower row-major
        index; here the union's zeros go first, then the same non-zeros in
        the same order, so both keep the same weights. Fewer than k
        non-zeros keep some of the union's zeros as padding (values 0), so
        the dense kernel is the same either way. While both layers hold the
        same positions (most steps), only the values are averaged.

        Returns:
            (values [k], positions [k, 2]), row-major: what
            `assign_positions` takes.
        """
        blend = functools.partial(_polyak, tau=tau)
        same = tf.reduce_all(tf.equal(self.positions, online.positions))
        return tf.cond(
            same, lambda: (blend(self.values, online.values),
                           tf.identity(online.positions)),
            lambda: _magnitude_union(self, online, blend))

    def assign_positions(self, values: tf.Tensor,
                         positions: tf.Tensor) -> tf.Operation:
        """Sets values [k] at row-major positions [k, 2] (and the index
        arrays the products read)."""
        ops = [self.values.assign(values), self.positions.assign(positions)]
        ops += [variable.assign(value) for variable, value in zip(
            self._structure, csr.structure(positions, self.kernel_shape))]
        return tf.group(ops)

    def set_weights_from(self, kernel: np.ndarray,
                         bias: Optional[np.ndarray]) -> None:
        """Takes a dense kernel's active weights (and the bias)."""
        positions = self.positions.numpy()
        self.values.assign(kernel[positions[:, 0], positions[:, 1]])
        if self.bias is not None and bias is not None:
            self.bias.assign(bias)

    @contextlib.contextmanager
    def dense_forward(self, kernel: Optional[tf.Tensor] = None):
        """Within the block (while tracing), the layer multiplies by the
        dense `kernel` instead (the gradient with respect to it is the dense
        gradient RigL grows by), or, without one, by its own kernel
        scattered from its values: standard TF ops only, for a saved policy
        that loads without the compiled kernels."""
        self._dense_kernel = _OWN_KERNEL if kernel is None else kernel
        try:
            yield
        finally:
            self._dense_kernel = None
