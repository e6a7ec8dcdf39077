"""Networks evaluated in numpy: PPO's collection and sparse policy export.

A batch-1 call of a TF-Agents policy costs hundreds of microseconds of
dispatch on a CPU, more than the arithmetic of the small networks used in RL.
These helpers read a network's Dense layers (masked or not: a masked kernel
is exactly 0 off its mask) and run them in numpy. `NumpyActor` keeps each
kernel either dense or in compressed sparse rows (scipy CSR, only the
non-zero weights), which is how a sparse policy can actually skip its zero
weights; `benchmarks/sparse_inference_benchmark.py` measures whether it pays.
"""

from typing import List, Sequence, Tuple

import numpy as np
from scipy import sparse as scipy_sparse
import tensorflow as tf

ACTIVATIONS = {'linear': lambda x: x, 'tanh': np.tanh,
               'relu': lambda x: np.maximum(x, 0.0)}

# (kernel [in, out], bias, activation name)
Layer = Tuple[np.ndarray, np.ndarray, str]


def dense_weights(layer) -> Layer:
    """(kernel, bias, activation name) of a Dense layer, masked or not."""
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


class NumpyActor:
    """The greedy action of a SAC actor (MLP trunk, tanh-normal head), in
    numpy, with dense or CSR kernels.

    Activations flow as [features, batch] so that each layer is one
    `W @ x` with W [out, in], the orientation CSR multiplies fastest.
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
        self._layers = []
        for kernel, bias, activation in layers:
            matrix = np.ascontiguousarray(kernel.T, np.float32)
            if sparse:
                matrix = scipy_sparse.csr_matrix(matrix)
            self._layers.append((matrix, bias.astype(np.float32)[:, None],
                                 ACTIVATIONS[activation]))
        self._action_size = len(low)
        self._mid = ((high + low) / 2).astype(np.float32)[:, None]
        self._half_range = ((high - low) / 2).astype(np.float32)[:, None]

    @classmethod
    def from_network(cls, actor_network, action_spec,
                     sparse: bool = True) -> 'NumpyActor':
        """Reads a built SAC actor (`networks.create_sac_actor_network`)."""
        layers = list(actor_network.layers)
        head, trunk = layers[-1], layers[:-1]
        if not hasattr(head, '_projection_layer') or any(
                not isinstance(getattr(layer, 'layer', layer),
                               tf.keras.layers.Dense) for layer in trunk):
            raise ValueError('NumpyActor reads SAC actors: Dense layers and a '
                             'tanh-normal head (no noise-feature layer).')
        weights = [dense_weights(layer) for layer in trunk]
        projection = head._projection_layer  # pylint: disable=protected-access
        weights.append(dense_weights(projection))
        low = np.broadcast_to(action_spec.minimum, action_spec.shape)
        high = np.broadcast_to(action_spec.maximum, action_spec.shape)
        return cls(weights, np.asarray(low, np.float32).ravel(),
                   np.asarray(high, np.float32).ravel(), sparse)

    @property
    def stored_weights(self) -> int:
        """Kernel entries kept (non-zeros when sparse)."""
        return sum(matrix.nnz if self.sparse else matrix.size
                   for matrix, _, _ in self._layers)

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        """Greedy actions for observations [B, in] (or one [in])."""
        single = observations.ndim == 1
        x = np.asarray(observations, np.float32).reshape(
            -1, observations.shape[-1]).T
        for matrix, bias, activation in self._layers:
            x = activation(matrix @ x + bias)
        actions = (self._mid + self._half_range *
                   np.tanh(x[:self._action_size])).T
        return actions[0] if single else actions

    def save(self, path: str) -> None:
        """Writes the kernels (CSR parts when sparse) to an .npz file."""
        arrays = {'mid': self._mid, 'half_range': self._half_range,
                  'sparse': np.array(self.sparse)}
        names = {fn: name for name, fn in ACTIVATIONS.items()}
        for index, (matrix, bias, activation) in enumerate(self._layers):
            if self.sparse:  # [out, in] as CSR parts
                arrays.update({f'data_{index}': matrix.data,
                               f'indices_{index}': matrix.indices,
                               f'indptr_{index}': matrix.indptr,
                               f'shape_{index}': np.array(matrix.shape)})
            else:
                arrays[f'matrix_{index}'] = matrix  # [out, in]
            arrays[f'bias_{index}'] = bias[:, 0]
            arrays[f'activation_{index}'] = np.array(names[activation])
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str) -> 'NumpyActor':
        with np.load(path) as saved:
            sparse = bool(saved['sparse'])
            layers: List[Layer] = []
            index = 0
            while f'bias_{index}' in saved:
                if sparse:
                    matrix = scipy_sparse.csr_matrix(
                        (saved[f'data_{index}'], saved[f'indices_{index}'],
                         saved[f'indptr_{index}']),
                        shape=tuple(saved[f'shape_{index}'])).toarray()
                else:
                    matrix = saved[f'matrix_{index}']
                kernel = matrix.T
                layers.append((kernel, saved[f'bias_{index}'],
                               str(saved[f'activation_{index}'])))
                index += 1
            mid, half = saved['mid'][:, 0], saved['half_range'][:, 0]
        return cls(layers, mid - half, mid + half, sparse)
