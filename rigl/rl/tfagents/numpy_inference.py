"""Networks evaluated outside TensorFlow: PPO's collection and sparse export.

A batch-1 call of a TF-Agents policy costs hundreds of microseconds of
dispatch on a CPU, more than the arithmetic of the small networks used in RL.
These helpers read a network's Dense layers (masked or not: a masked kernel
is exactly 0 off its mask) and run them outside TensorFlow. `NumpyActor`
keeps its kernels either dense (numpy matrix products, the baseline) or in
compressed sparse rows (CSR: only the non-zero weights), evaluated by one
numba-compiled function that runs the whole network, every layer and the
tanh squash, in a single call. That is how a sparse policy can actually
skip its zero weights: a library call per layer (such as scipy's CSR
product) costs more in overhead than the multiply-adds it saves at these
sizes. `benchmarks/sparse_inference_benchmark.py` measures whether it pays.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from rigl.rl.tfagents import tf_agents_private as tfa_private
from rigl.rl.tfagents.sparsity.compressed import CompressedDense

ACTIVATIONS = {'linear': lambda x: x, 'tanh': np.tanh,
               'relu': lambda x: np.maximum(x, 0.0)}

# Activation codes of the compiled sparse path, by ACTIVATIONS name.
_LINEAR, _RELU, _TANH = 0, 1, 2
_ACTIVATION_CODES = {'linear': _LINEAR, 'relu': _RELU, 'tanh': _TANH}

# (kernel [in, out], bias, activation name)
Layer = Tuple[np.ndarray, np.ndarray, str]

# CSR parts of one kernel as W [out, in]: (indptr, indices, data, shape).
_Csr = Tuple[np.ndarray, np.ndarray, np.ndarray, Tuple[int, int]]


def _is_dense(layer) -> bool:
    """A Dense layer: plain, masked, or holding only its active weights
    ('sparse' execution)."""
    return isinstance(getattr(layer, 'layer', layer),
                      (tf.keras.layers.Dense, CompressedDense))


def dense_weights(layer) -> Layer:
    """(kernel, bias, activation name) of a Dense layer, masked or not.

    Reads a Keras Dense layer, a masked wrapper around one (`layer.layer`)
    or any layer with the same `kernel`, `bias` and `activation` attributes
    (a compressed layer's `kernel` is its dense kernel tensor).
    """
    dense = getattr(layer, 'layer', layer)
    activation = getattr(dense.activation, '__name__', 'linear')
    if activation not in ACTIVATIONS:
        raise ValueError(f'numpy inference has no activation {activation!r}')
    return dense.kernel.numpy(), dense.bias.numpy(), activation


def mlp(weights: Sequence[Layer], x: np.ndarray) -> np.ndarray:
    """Dense layers applied to a batch [B, in]."""
    for kernel, bias, activation in weights:
        x = ACTIVATIONS[activation](x @ kernel + bias)
    return x


def _to_csr(matrix: np.ndarray) -> _Csr:
    """CSR parts (int32 indptr and indices, float32 data) of W [out, in].

    Keeps exactly the non-zero entries (a masked-off weight is exactly 0),
    columns ascending within each row.
    """
    rows, columns = np.nonzero(matrix)
    indptr = np.zeros(matrix.shape[0] + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=matrix.shape[0]), out=indptr[1:])
    return (indptr, columns.astype(np.int32),
            matrix[rows, columns].astype(np.float32), matrix.shape)


def _from_csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
              shape: Sequence[int]) -> np.ndarray:
    """The dense W [out, in] of CSR parts."""
    matrix = np.zeros(tuple(int(size) for size in shape), np.float32)
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(indptr))
    matrix[rows, indices] = data
    return matrix


def _check_shapes(layers: Sequence[Layer], action_size: int) -> None:
    """Raises unless the layers chain and the last outputs means and stds.

    The compiled path does not check indices, so a mismatch must be caught
    here rather than read out of bounds.
    """
    if not layers:
        raise ValueError('NumpyActor needs at least one layer')
    n_in = layers[0][0].shape[0]
    for index, (kernel, bias, activation) in enumerate(layers):
        if kernel.ndim != 2 or kernel.shape[0] != n_in or (
                np.shape(bias) != (kernel.shape[1],)):
            raise ValueError(f'layer {index}: kernel {kernel.shape} and bias '
                             f'{np.shape(bias)} do not follow {n_in} inputs')
        if activation not in ACTIVATIONS:
            raise ValueError(f'layer {index}: no activation {activation!r}')
        n_in = kernel.shape[1]
    if n_in < action_size:
        raise ValueError(f'the last layer has {n_in} outputs, fewer than '
                         f'the {action_size} action means')


def _jit(function):
    """`function` compiled by numba, cached on disk where numba can write.

    error_model='numpy': a float division by zero gives inf or NaN instead
    of a checked Python exception, whose branch would stop the loops from
    vectorizing. Numba caches next to this module or in a user-wide
    directory; when neither is writable (a read-only install), it refuses
    to cache at decoration time, and the function is compiled in each
    process instead.
    """
    import numba  # pylint: disable=import-outside-toplevel
    try:
        return numba.njit(cache=True, error_model='numpy')(function)
    except RuntimeError:  # no writable cache location
        return numba.njit(error_model='numpy')(function)


def _compiled_greedy():
    """The compiled `_sparse_greedy`, compiling it (and `_tanh`, which it
    calls) on first use. Numba is imported only here: it costs every
    process that never runs a CSR actor (most runs) a tenth of a second."""
    global _tanh, _sparse_greedy  # pylint: disable=global-statement
    if not hasattr(_sparse_greedy, 'py_func'):
        # Numba reads the global _tanh when it compiles its callers.
        _tanh = _jit(_tanh)
        _sparse_greedy = _jit(_sparse_greedy)
    return _sparse_greedy


def _tanh(value):
    """tanh of a float32 in plain arithmetic, so that loops vectorize.

    Numba compiles np.tanh to one libm call per element, which does not
    vectorize (3072 values: 27 us, numpy's tanh 1 us); this form does
    (4 us).

    In float64: tanh(y) for y = x / 64 (|y| <= 10 / 64) from its Taylor
    series to y**9 (relative error below 1e-10), then doubled six times
    with tanh(2y) = 2 t / (1 + t**2), which does not grow relative error,
    carried as a fraction p / q so that only one division remains. |x| is
    clamped to 10, where tanh rounds to 1 in float32; NaN stays NaN. The
    float32 result is within half an ulp of the exact tanh (numpy's
    float32 tanh: about one ulp).
    """
    y = np.float64(value)
    y = 10.0 if y > 10.0 else y
    y = -10.0 if y < -10.0 else y
    y *= 1.0 / 64.0
    y2 = y * y
    p = y * (1.0 + y2 * (-1.0 / 3.0 + y2 * (2.0 / 15.0 + y2 * (
        -17.0 / 315.0 + y2 * (62.0 / 2835.0)))))
    q = 1.0
    for _ in range(6):
        p, q = 2.0 * p * q, p * p + q * q
    return np.float32(p / q)


def _sparse_greedy(observations, layout, indptr, indices, values, biases,
                   mid, half_range):
    """Greedy actions [B, A] of a CSR MLP for observations [B, in].

    One compiled call for the whole network (no per-layer dispatch).
    Activations flow as [features, batch] buffers. For batch 1 each output
    unit is a dot product gathered over its row's non-zeros, with four
    partial sums so that the additions do not wait on each other. For
    batch B each non-zero weight w[i, j] adds w * x[j, :] to y[i, :]: the
    inner loop runs over B contiguous floats and vectorizes.

    Args:
        observations: float32 [B, in], C-contiguous.
        layout: int64 [layers, 4]: rows to evaluate, offset of the layer's
            row pointers in `indptr`, offset of its bias in `biases`,
            activation code. The last layer evaluates only the action means.
        indptr: int32 row pointers of every layer (out + 1 each), positions
            in the concatenated `indices` and `values`.
        indices: uint32 input index of each non-zero weight, all layers
            (unsigned: compiled indexing then skips negative wraparound).
        values: float32 non-zero weights, all layers.
        biases: float32 biases, all layers.
        mid, half_range: float32 [A], the action bounds' centre and half
            width: the action is mid + half_range * tanh(mean).
    """
    batch, n_in = observations.shape
    width = n_in
    for layer in range(layout.shape[0]):
        width = max(width, layout[layer, 0])
    x = np.empty((width, batch), np.float32)
    y = np.empty((width, batch), np.float32)
    for b in range(batch):
        for j in range(n_in):
            x[j, b] = observations[b, j]
    zero = np.float32(0.0)
    for layer in range(layout.shape[0]):
        rows, pointers, bias_at, activation = layout[layer]
        for i in range(rows):
            start = indptr[pointers + i]
            stop = indptr[pointers + i + 1]
            if batch == 1:
                sum0, sum1, sum2, sum3 = biases[bias_at + i], zero, zero, zero
                k = start
                while k + 4 <= stop:
                    sum0 += values[k] * x[indices[k], 0]
                    sum1 += values[k + 1] * x[indices[k + 1], 0]
                    sum2 += values[k + 2] * x[indices[k + 2], 0]
                    sum3 += values[k + 3] * x[indices[k + 3], 0]
                    k += 4
                while k < stop:
                    sum0 += values[k] * x[indices[k], 0]
                    k += 1
                total = (sum0 + sum1) + (sum2 + sum3)
                if activation == _RELU:
                    total = max(total, zero)
                elif activation == _TANH:
                    total = _tanh(total)
                y[i, 0] = total
                continue
            out = y[i]
            out[:] = biases[bias_at + i]
            for k in range(start, stop):
                weight = values[k]
                source = x[indices[k]]
                for b in range(batch):
                    out[b] += weight * source[b]
            if activation == _RELU:
                for b in range(batch):
                    out[b] = max(out[b], zero)
            elif activation == _TANH:
                for b in range(batch):
                    out[b] = _tanh(out[b])
        x, y = y, x
    n_actions = mid.shape[0]
    for a in range(n_actions):  # squash in place, contiguous over batch
        means = x[a]
        for b in range(batch):
            means[b] = mid[a] + half_range[a] * _tanh(means[b])
    actions = np.empty((batch, n_actions), np.float32)
    for b in range(batch):
        for a in range(n_actions):
            actions[b, a] = x[a, b]
    return actions


class NumpyActor:
    """The greedy action of a SAC actor (MLP trunk, tanh-normal head),
    outside TensorFlow, with dense numpy or compiled CSR kernels.

    Dense: activations flow as [features, batch], so each layer is one numpy
    `W @ x` with W [out, in]. Sparse: each kernel W [out, in] is kept as CSR
    parts (rows = output units), all layers concatenated into flat arrays
    with per-layer offsets, and one numba-compiled call evaluates the whole
    network; it is compiled (or loaded from numba's cache) when the first
    actor is built, so the first action is not slow.
    The greedy action is the squashed mean: mid + half_range * tanh(mean).

    Args:
        layers: (kernel [in, out], bias, activation) input side first; the
            last layer outputs means and then stds.
        low, high: the action bounds.
        sparse: keep kernels as CSR (only their non-zero weights).
    """

    def __init__(self, layers: Sequence[Layer], low: np.ndarray,
                 high: np.ndarray, sparse: bool):
        self.sparse = sparse
        _check_shapes(layers, len(low))
        self._action_size = len(low)
        self._n_in = int(layers[0][0].shape[0])
        self._mid = ((high + low) / 2).astype(np.float32)[:, None]
        self._half_range = ((high - low) / 2).astype(np.float32)[:, None]
        self._biases = [np.asarray(bias, np.float32)
                        for _, bias, _ in layers]
        self._activations = [activation for _, _, activation in layers]
        if not sparse:
            self._layers = [
                (np.ascontiguousarray(kernel.T, np.float32), bias[:, None],
                 ACTIVATIONS[activation])
                for (kernel, _, activation), bias in zip(layers,
                                                         self._biases)]
            return
        self._csr = [_to_csr(np.asarray(kernel, np.float32).T)
                     for kernel, _, _ in layers]
        self._greedy = _compiled_greedy()
        self._pack()
        self(np.zeros((1, self._n_in), np.float32))  # compile

    def _pack(self) -> None:
        """Concatenates the CSR layers into the compiled call's arrays.

        Row pointers are shifted to index the concatenated non-zeros; the
        last layer evaluates only its first rows, the action means (the
        greedy action does not need the stds).
        """
        layout, pointers = [], []
        pointer_at = nonzeros = bias_at = 0
        for index, (indptr, _, data, shape) in enumerate(self._csr):
            last = index == len(self._csr) - 1
            layout.append((self._action_size if last else shape[0],
                           pointer_at, bias_at,
                           _ACTIVATION_CODES[self._activations[index]]))
            pointers.append(indptr.astype(np.int64) + nonzeros)
            pointer_at += len(indptr)
            nonzeros += len(data)
            bias_at += shape[0]
        if nonzeros > np.iinfo(np.int32).max:
            raise ValueError(f'{nonzeros} non-zero weights: too many for '
                             'int32 row pointers')
        self._arrays = (
            np.array(layout, np.int64),
            np.concatenate(pointers).astype(np.int32),
            np.concatenate([indices for _, indices, _, _ in self._csr]
                           ).astype(np.uint32),
            np.concatenate([data for _, _, data, _ in self._csr]),
            np.concatenate(self._biases),
            np.ascontiguousarray(self._mid[:, 0]),
            np.ascontiguousarray(self._half_range[:, 0]))

    @classmethod
    def from_network(cls, actor_network, action_spec,
                     sparse: bool = True) -> 'NumpyActor':
        """Reads a built SAC actor (`networks.create_sac_actor_network`)."""
        layers = list(actor_network.layers)
        head, trunk = layers[-1], layers[:-1]
        try:
            projection = tfa_private.projection_layer(head)
        except AttributeError:
            projection = None
        if projection is None or any(not _is_dense(layer) for layer in trunk):
            raise ValueError('NumpyActor reads SAC actors: Dense layers and a '
                             'tanh-normal head (no noise-feature layer).')
        weights = [dense_weights(layer) for layer in trunk]
        weights.append(dense_weights(projection))
        low = np.broadcast_to(action_spec.minimum, action_spec.shape)
        high = np.broadcast_to(action_spec.maximum, action_spec.shape)
        return cls(weights, np.asarray(low, np.float32).ravel(),
                   np.asarray(high, np.float32).ravel(), sparse)

    @property
    def stored_weights(self) -> int:
        """Kernel entries kept (non-zeros when sparse)."""
        if self.sparse:
            return sum(len(data) for _, _, data, _ in self._csr)
        return sum(matrix.size for matrix, _, _ in self._layers)

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        """Greedy actions for observations [B, in] (or one [in])."""
        single = observations.ndim == 1
        if self.sparse:  # compiled code does not check bounds: check here
            x = np.ascontiguousarray(observations, np.float32)
            if x.ndim not in (1, 2) or x.shape[-1] != self._n_in:
                raise ValueError(f'observations {x.shape}: expected '
                                 f'[B, {self._n_in}] or [{self._n_in}]')
            actions = self._greedy(x[None] if single else x, *self._arrays)
            return actions[0] if single else actions
        x = np.asarray(observations, np.float32).reshape(
            -1, observations.shape[-1]).T
        for matrix, bias, activation in self._layers:
            x = activation(matrix @ x + bias)
        actions = (self._mid + self._half_range *
                   np.tanh(x[:self._action_size])).T
        return actions[0] if single else actions

    def save(self, path: str) -> None:
        """Writes the kernels (CSR parts when sparse) to an .npz file."""
        arrays: Dict[str, np.ndarray] = {
            'mid': self._mid, 'half_range': self._half_range,
            'sparse': np.array(self.sparse)}
        for index, (bias, activation) in enumerate(zip(self._biases,
                                                       self._activations)):
            if self.sparse:  # [out, in] as CSR parts
                indptr, indices, data, shape = self._csr[index]
                arrays.update({f'data_{index}': data,
                               f'indices_{index}': indices,
                               f'indptr_{index}': indptr,
                               f'shape_{index}': np.array(shape)})
            else:
                arrays[f'matrix_{index}'] = self._layers[index][0]
            arrays[f'bias_{index}'] = bias
            arrays[f'activation_{index}'] = np.array(activation)
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str) -> 'NumpyActor':
        """Reads an actor written by `save`."""
        with np.load(path) as saved:
            sparse = bool(saved['sparse'])
            layers: List[Layer] = []
            index = 0
            while f'bias_{index}' in saved:
                if sparse:
                    matrix = _from_csr(
                        saved[f'indptr_{index}'], saved[f'indices_{index}'],
                        saved[f'data_{index}'], saved[f'shape_{index}'])
                else:
                    matrix = saved[f'matrix_{index}']
                layers.append((matrix.T, saved[f'bias_{index}'],
                               str(saved[f'activation_{index}'])))
                index += 1
            mid, half = saved['mid'][:, 0], saved['half_range'][:, 0]
        return cls(layers, mid - half, mid + half, sparse)
