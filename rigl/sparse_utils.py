"""Sparsity budgets, masks and parameter/FLOP statistics for layer shapes.

Everything here works on plain shapes and numpy arrays, so it is the single
home of the arithmetic that the TF-Agents wrappers and the tests rely on:

* `get_sparsities` spreads a global sparsity target over layers. Two families:
  - the State-of-Sparse-Training suite's 'uniform', 'erdos_renyi' and
    'erdos_renyi_kernel' (ERK). 'uniform' gives every sparse layer the target;
    ER/ERK choose per-layer densities proportional to a raw score so that the
    whole network (sparse and dense layers) holds (1 - s) of its weights,
    moving layers whose density would exceed 1 to the dense set.
  - ANF's 'anf_uniform', 'anf_er' and 'anf_new' (ANF calls them 'uniform',
    'ER' and 'new'): the same global target over every layer, with ANF's raw
    scores. A target that no assignment reaches (fixed layers too dense or too
    sparse) is an error naming the numbers.
* `create_masks` draws masks with exactly floor(s * N) zeros per layer.
* `fixed_sparse_init` redraws active weights with a scale taken from the
  mask's real fan-in and fan-out.
* `network_stats` counts active parameters and inference FLOPs of an MLP or
  conv net through `micronet_counting`.
"""

import dataclasses
import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from micronet_counting import counting

Shape = Tuple[int, ...]

SUITE_METHODS = ('uniform', 'erdos_renyi', 'erdos_renyi_kernel')
ANF_METHODS = ('anf_uniform', 'anf_er', 'anf_new')
METHODS = SUITE_METHODS + ANF_METHODS
# ANF's own spellings, accepted so ANF command lines carry over.
_ANF_ALIASES = {'ER': 'anf_er', 'new': 'anf_new'}


def check_sparsity(value: float, name: str = 'sparsity') -> float:
    """Returns `value` as a float if it is a sparsity in [0, 1), else raises."""
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f'{name} must be a number in [0, 1), got {value!r}.') from None
    if not 0.0 <= as_float < 1.0 or math.isnan(as_float):
        raise ValueError(f'{name} must be in [0, 1), got {value!r}.')
    return as_float


def check_shapes(shapes: Sequence[Sequence[int]]) -> List[Shape]:
    """Validates kernel shapes: 2-D Dense (in, out) or 4-D conv (h, w, in, out)."""
    checked = []
    for index, shape in enumerate(shapes):
        shape = tuple(shape)
        if len(shape) not in (2, 4) or not all(
                isinstance(dim, (int, np.integer)) and dim > 0 for dim in shape):
            raise ValueError(
                f'Layer {index} has kernel shape {shape}; allowed are 2-D Dense '
                'kernels (in, out) or 4-D conv kernels (h, w, in, out) of '
                'positive integers.')
        checked.append(tuple(int(dim) for dim in shape))
    if not checked:
        raise ValueError('Need at least one layer shape, got none.')
    return checked


def _raw_density_score(shape: Shape, method: str, erk_power_scale: float,
                       closeness: float) -> float:
    """The unnormalised density of a layer under an ER-style method."""
    if method in ('uniform', 'anf_uniform'):
        return 1.0
    n_in, n_out = shape[-2], shape[-1]
    if method in ('erdos_renyi', 'anf_er'):
        # ER ignores the kernel's spatial dims (and erk_power_scale).
        return (n_in + n_out) / (n_in * n_out)
    if method == 'erdos_renyi_kernel':
        return (sum(shape) / np.prod(shape)) ** erk_power_scale
    if method == 'anf_new':
        fan_in = int(np.prod(shape[:-1]))
        return 2.0 / (fan_in * n_out) ** closeness
    raise AssertionError(method)


def _normalise_method(method: str) -> str:
    method = _ANF_ALIASES.get(method, method)
    if method not in METHODS:
        raise ValueError(
            f'Unknown sparsity distribution {method!r}; known: '
            f'{", ".join(METHODS)} (ANF spellings ER and new also accepted).')
    return method


def get_sparsities(
        shapes: Sequence[Sequence[int]],
        method: str,
        sparsity: float,
        dense_layers: Iterable[int] = (),
        custom_sparsities: Optional[Mapping[int, float]] = None,
        input_layer_sparsity: Optional[float] = None,
        erk_power_scale: float = 1.0,
        closeness: float = 0.2) -> List[float]:
    """Spreads a global sparsity target over layers.

    Args:
        shapes: kernel shapes, first (input) layer first.
        method: one of `METHODS` (see the module docstring).
        sparsity: the global target s in [0, 1).
        dense_layers: indices of layers kept dense (e.g. the output layer).
        custom_sparsities: fixed sparsities for some layers, by index.
        input_layer_sparsity: fixed sparsity of layer 0 (ANF); the other
            sparse layers are rescaled to still reach the target, except under
            'uniform' whose layers all get `sparsity`. For the ANF methods with
            `sparsity` == 0, the other layers stay dense.
        erk_power_scale: exponent p of ERK's raw score.
        closeness: exponent c of ANF's 'new' score 2 / (n_in * n_out) ** c.

    Returns:
        One sparsity per layer.

    Raises:
        ValueError: for a sparsity outside [0, 1), an unknown method, bad
            shapes or indices, or a target no assignment can reach.
    """
    shapes = check_shapes(shapes)
    method = _normalise_method(method)
    sparsity = check_sparsity(sparsity)
    num_layers = len(shapes)

    fixed: Dict[int, float] = {}
    for index in dense_layers:
        fixed[check_layer_index(index, num_layers, 'dense_layers')] = 0.0
    for index, value in (custom_sparsities or {}).items():
        fixed[check_layer_index(index, num_layers, 'custom_sparsities')] = (
            check_sparsity(value, f'custom sparsity of layer {index}'))
    if input_layer_sparsity is not None:
        if 0 in fixed:
            raise ValueError('input_layer_sparsity is set but layer 0 is also '
                             'listed as dense or custom; choose one.')
        fixed[0] = check_sparsity(input_layer_sparsity, 'input_layer_sparsity')

    free = [i for i in range(num_layers) if i not in fixed]
    sizes = [int(np.prod(shape)) for shape in shapes]

    if method == 'uniform' or (method in ANF_METHODS and sparsity == 0.0):
        result = [fixed.get(i, sparsity) for i in range(num_layers)]
    else:
        densities = _solve_densities(shapes, sizes, method, sparsity, fixed,
                                     free, erk_power_scale, closeness)
        result = [fixed[i] if i in fixed else 1.0 - densities[i]
                  for i in range(num_layers)]
    for index, (size, layer_sparsity) in enumerate(zip(sizes, result)):
        if (1.0 - layer_sparsity) * size < 1.0 - 1e-9:
            raise ValueError(
                f'Layer {index} (shape {shapes[index]}, {size} weights) would '
                f'keep {(1.0 - layer_sparsity) * size:.3g} < 1 weights at '
                f'sparsity {layer_sparsity:.6f}; lower the sparsity or keep '
                'this layer dense.')
    return result


def check_layer_index(index: int, num_layers: int, name: str) -> int:
    """Returns a layer index in 0..num_layers-1; negative ones count back."""
    if (not isinstance(index, (int, np.integer)) or isinstance(index, bool)
            or not -num_layers <= index < num_layers):
        raise ValueError(f'{name} has layer index {index!r}; allowed are '
                         f'-{num_layers}..{num_layers - 1} for {num_layers} '
                         'layers.')
    return int(index) % num_layers


def _solve_densities(shapes: List[Shape], sizes: List[int], method: str,
                     sparsity: float, fixed: Dict[int, float], free: List[int],
                     erk_power_scale: float,
                     closeness: float) -> Dict[int, float]:
    """Finds eps with sum(eps * raw_l * N_l) == the free layers' budget.

    A layer whose density eps * raw_l would exceed 1 is made dense and eps is
    recomputed for the rest, until every density is at most 1.
    """
    target_active = (1.0 - sparsity) * sum(sizes)
    fixed_active = sum((1.0 - s) * sizes[i] for i, s in fixed.items())
    budget = target_active - fixed_active
    if budget <= 0:
        raise ValueError(
            f'Global sparsity {sparsity} cannot be reached: the dense and '
            f'fixed layers alone hold {fixed_active:.0f} active weights, more '
            f'than the {target_active:.0f} allowed. Lower the sparsity, or '
            'make fewer layers dense.')
    capacity = sum(sizes[i] for i in free)
    if budget > capacity * (1 + 1e-12):
        raise ValueError(
            f'Global sparsity {sparsity} cannot be reached: it needs '
            f'{budget:.0f} active weights in the free layers {free}, which '
            f'hold only {capacity}, because the fixed layers are sparser than '
            'the target. Raise the sparsity or lower input_layer_sparsity / '
            'the custom sparsities.')
    raw = {i: _raw_density_score(shapes[i], method, erk_power_scale, closeness)
           for i in free}
    densities: Dict[int, float] = {}
    sparse = list(free)
    while True:
        eps = budget / sum(raw[i] * sizes[i] for i in sparse)
        too_dense = [i for i in sparse if eps * raw[i] > 1.0]
        if not too_dense:
            densities.update({i: eps * raw[i] for i in sparse})
            return densities
        for index in too_dense:
            densities[index] = 1.0
            budget -= sizes[index]
            sparse.remove(index)


def create_masks(shapes: Sequence[Sequence[int]], sparsities: Sequence[float],
                 seed: Optional[int] = None) -> List[np.ndarray]:
    """Random float32 masks with exactly floor(s * N) zeros per layer."""
    shapes = check_shapes(shapes)
    if len(sparsities) != len(shapes):
        raise ValueError(f'Got {len(sparsities)} sparsities for {len(shapes)} '
                         'layers; need one per layer.')
    rng = np.random.default_rng(seed)
    masks = []
    for index, (shape, sparsity) in enumerate(zip(shapes, sparsities)):
        sparsity = check_sparsity(sparsity, f'sparsity of layer {index}')
        size = int(np.prod(shape))
        num_zeros = math.floor(sparsity * size)
        flat = np.ones(size, dtype=np.float32)
        flat[rng.permutation(size)[:num_zeros]] = 0.0
        masks.append(flat.reshape(shape))
    return masks


def fixed_sparse_init(mask: np.ndarray,
                      rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Glorot-uniform weights scaled by each connection's real fan-in/out.

    A dense Glorot init assumes every unit sees all its inputs; under a mask a
    unit sees only its active ones, so the variance would be too small. Here a
    connection (i, j) gets limit sqrt(6 / (active inputs of j + active outputs
    of i)). Inactive positions are 0.

    Args:
        mask: a 2-D (in, out) or 4-D (h, w, in, out) 0/1 mask.
        rng: random generator (a fresh unseeded one if None).

    Returns:
        float32 weights of the mask's shape.
    """
    rng = rng or np.random.default_rng()
    matrix = np.asarray(mask, dtype=np.float32).reshape(-1, mask.shape[-1])
    fan_in = matrix.sum(axis=0, keepdims=True)  # active inputs per output unit
    fan_out = matrix.sum(axis=1, keepdims=True)  # active outputs per input row
    limit = np.sqrt(6.0 / np.maximum(fan_in + fan_out, 1.0))
    weights = rng.uniform(-1.0, 1.0, size=matrix.shape) * limit * matrix
    return weights.astype(np.float32).reshape(mask.shape)


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """Counts of one layer; `sparsity` is measured (zeros / weights)."""
    shape: Shape
    sparsity: float
    active_weights: int
    parameters: float
    flops: int


@dataclasses.dataclass(frozen=True)
class NetworkStats:
    """Per-layer and total counts of a network at its masks' sparsity."""
    layers: Tuple[LayerStats, ...]

    @property
    def total_weights(self) -> int:
        return sum(int(np.prod(layer.shape)) for layer in self.layers)

    @property
    def active_weights(self) -> int:
        return sum(layer.active_weights for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.active_weights / self.total_weights

    @property
    def parameters(self) -> float:
        return sum(layer.parameters for layer in self.layers)

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)


def network_stats(shapes: Sequence[Sequence[int]],
                  masks_or_sparsities: Sequence,
                  activations: Optional[Sequence[Optional[str]]] = None,
                  use_bias: bool = True,
                  input_spatial: Optional[Tuple[int, int]] = None,
                  param_bits: int = 32) -> NetworkStats:
    """Active parameters and inference FLOPs of a network, one example.

    Args:
        shapes: kernel shapes, input layer first (2-D Dense or 4-D conv).
        masks_or_sparsities: per layer either a 0/1 mask (sparsity measured
            from it) or a sparsity value.
        activations: per-layer activation names for micronet_counting; by
            default 'relu' on hidden layers and none on the output layer.
        use_bias: whether the layers carry biases.
        input_spatial: (height, width) of the first conv layer's input; needed
            only for conv layers (stride 1, 'same' padding assumed).
        param_bits: bits per parameter for the sparse bitmask cost.

    Returns:
        A `NetworkStats`.
    """
    shapes = check_shapes(shapes)
    if len(masks_or_sparsities) != len(shapes):
        raise ValueError(f'Got {len(masks_or_sparsities)} masks/sparsities for '
                         f'{len(shapes)} layers; need one per layer.')
    if activations is None:
        activations = ['relu'] * (len(shapes) - 1) + [None]
    layers = []
    for index, (shape, item) in enumerate(zip(shapes, masks_or_sparsities)):
        size = int(np.prod(shape))
        if np.ndim(item) == 0:
            sparsity = check_sparsity(item, f'sparsity of layer {index}')
            active = size - math.floor(sparsity * size)
        else:
            if tuple(np.shape(item)) != shape:
                raise ValueError(f'Mask {index} has shape {np.shape(item)}, '
                                 f'but its layer has shape {shape}.')
            active = int(np.count_nonzero(item))
            sparsity = 1.0 - active / size
        layer = _counting_layer(shape, activations[index], use_bias,
                                input_spatial)
        layers.append(LayerStats(
            shape=shape, sparsity=sparsity, active_weights=active,
            parameters=counting.count_parameters(layer, sparsity, param_bits),
            flops=counting.count_ops(layer, sparsity).total))
    return NetworkStats(tuple(layers))


def _counting_layer(shape: Shape, activation: Optional[str], use_bias: bool,
                    input_spatial: Optional[Tuple[int, int]]):
    if len(shape) == 2:
        return counting.FullyConnected(input_size=shape[0],
                                       output_size=shape[1],
                                       use_bias=use_bias, activation=activation)
    if input_spatial is None:
        raise ValueError('Conv layers need input_spatial=(height, width) to '
                         'count FLOPs.')
    return counting.Conv2D(input_height=input_spatial[0],
                           input_width=input_spatial[1],
                           in_channels=shape[2], out_channels=shape[3],
                           kernel_size=(shape[0], shape[1]),
                           use_bias=use_bias, activation=activation)
