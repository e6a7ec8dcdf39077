"""Sparsity budgets, masks and parameter/FLOP statistics for layer shapes.

Everything here works on plain shapes and numpy arrays, so it is the single
home of the arithmetic that the TF-Agents wrappers and the tests rely on:

* `get_sparsities` spreads a global sparsity target s over layers. Two
  families with two budget conventions (docs/sparsity_conventions.md):
  - the State-of-Sparse-Training suite's 'uniform', 'erdos_renyi' and
    'erdos_renyi_kernel' (ERK). The target covers the free layers only:
    layers in `dense_layers` (unwrapped) and layers with a custom or input
    layer sparsity are outside it. 'uniform' gives every free layer s; ER/ERK
    choose densities proportional to a raw score so that the free layers hold
    (1 - s) of their own weights. A layer whose density would exceed 1 is made
    dense and stays inside the budget (its full size is spent from it).
  - ANF's 'anf_uniform', 'anf_er' and 'anf_new' (ANF calls them 'uniform',
    'ER' and 'new'): the target covers the whole network, dense and fixed
    layers included, with ANF's raw scores. A target that no assignment
    reaches (fixed layers too dense or too sparse) is an error naming the
    numbers.
  At s == 0 every free layer is dense, for every method.
* `create_masks` draws masks with exactly floor(s * N) zeros per layer.
* `fixed_sparse_init` redraws active weights with a scale taken from the
  mask's real fan-in and fan-out (Glorot-uniform for a dense mask).
* `network_stats` counts active parameters and inference FLOPs of an MLP or
  conv net through `micronet_counting`.

Bad arguments raise a one-line ValueError naming the parameter and value.
"""

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Dict, List, Optional, Tuple

import numpy as np

from micronet_counting import counting

Shape = Tuple[int, ...]

SUITE_METHODS = ('uniform', 'erdos_renyi', 'erdos_renyi_kernel')
ANF_METHODS = ('anf_uniform', 'anf_er', 'anf_new')
METHODS = SUITE_METHODS + ANF_METHODS
# ANF's own spellings, accepted so ANF command lines carry over.
_ANF_ALIASES = {'ER': 'anf_er', 'new': 'anf_new'}


def _as_real(value: object) -> Optional[float]:
    """`value` as a float if it is a real number (not a bool), else None."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value,
                                                             numbers.Real):
        return None
    return float(value)


def check_sparsity(value: float, name: str = 'sparsity') -> float:
    """Returns `value` as a float if it is a sparsity in [0, 1), else raises.

    Strings and bools are refused even when they would convert to a number.
    """
    as_float = _as_real(value)
    if as_float is None:
        raise ValueError(f'{name} must be a real number in [0, 1), got '
                         f'{value!r} of type {type(value).__name__}.')
    if not 0.0 <= as_float < 1.0:  # Also false for NaN.
        raise ValueError(f'{name} must be in [0, 1), got {value!r}.')
    return as_float


def check_exponent(value: float, name: str) -> float:
    """Returns `value` as a float if it is a finite real number >= 0.

    Used for ERK's `erk_power_scale` and ANF's `closeness`; 0 makes either
    method uniform.
    """
    as_float = _as_real(value)
    if as_float is None or not math.isfinite(as_float) or as_float < 0:
        raise ValueError(f'{name} must be a finite real number >= 0, got '
                         f'{value!r}.')
    return as_float


def check_seed(seed: Optional[int], name: str = 'seed') -> Optional[int]:
    """Returns a seed (None or an integer >= 0) as an int; else ValueError."""
    if seed is None:
        return None
    if (isinstance(seed, (bool, np.bool_)) or
            not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f'{name} must be None or an integer >= 0, got '
                         f'{seed!r}.')
    return int(seed)


def check_shapes(shapes: Sequence[Sequence[int]]) -> List[Shape]:
    """Validates kernel shapes: 2-D Dense (in, out) or 4-D conv
    (h, w, in, out)."""
    if isinstance(shapes, (str, bytes)) or not isinstance(
            shapes, (Sequence, np.ndarray)):
        raise ValueError(f'shapes must be a sequence of kernel shapes, got '
                         f'{shapes!r}.')
    checked = []
    for index, shape in enumerate(shapes):
        shape = (tuple(shape) if isinstance(shape, (Sequence, np.ndarray))
                 and not isinstance(shape, (str, bytes)) else (shape,))
        if len(shape) not in (2, 4) or not all(
                isinstance(dim, (int, np.integer)) and
                not isinstance(dim, bool) and dim > 0 for dim in shape):
            raise ValueError(
                f'Layer {index} has kernel shape {shape}; allowed are '
                '2-D Dense kernels (in, out) or 4-D conv kernels '
                '(h, w, in, out) of positive integers.')
        checked.append(tuple(int(dim) for dim in shape))
    if not checked:
        raise ValueError('Need at least one layer shape, got none.')
    return checked


def _log_raw_density_score(shape: Shape, method: str, erk_power_scale: float,
                           closeness: float) -> float:
    """Log of the unnormalised density of a layer under an ER-style method.

    Logs keep large exponents from underflowing to 0 (or overflowing).
    """
    if method in ('uniform', 'anf_uniform'):
        return 0.0
    n_in, n_out = shape[-2], shape[-1]
    if method in ('erdos_renyi', 'anf_er'):
        # ER ignores the kernel's spatial dims (and erk_power_scale).
        return math.log((n_in + n_out) / (n_in * n_out))
    if method == 'erdos_renyi_kernel':
        return erk_power_scale * math.log(sum(shape) / math.prod(shape))
    if method == 'anf_new':
        # 2 / (fan_in * n_out) ** c with fan_in = prod(shape[:-1]).
        return math.log(2.0) - closeness * math.log(math.prod(shape))
    raise AssertionError(method)


def _normalise_method(method: str) -> str:
    if not isinstance(method, str):
        raise ValueError(f'method must be a string, one of '
                         f'{", ".join(METHODS)}; got {method!r}.')
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

    Which layers the target covers depends on the family (module docstring,
    docs/sparsity_conventions.md): the suite's methods cover only the free
    layers (not dense, not fixed); ANF's methods cover every layer.

    Args:
        shapes: kernel shapes, first (input) layer first.
        method: one of `METHODS` (see the module docstring).
        sparsity: the global target s, a real number in [0, 1).
        dense_layers: indices of layers kept dense (e.g. an unwrapped output
            layer).
        custom_sparsities: fixed sparsities in [0, 1) for some layers, by
            index.
        input_layer_sparsity: fixed sparsity in [0, 1) of layer 0. For the
            suite's methods it is a custom sparsity of layer 0; for ANF's the
            other free layers are rescaled so the whole network still reaches
            the target (at s == 0 they stay dense).
        erk_power_scale: exponent p >= 0 of ERK's raw score (finite; 0 makes
            ERK uniform).
        closeness: exponent c >= 0 of ANF's 'new' score 2 / (n_in * n_out) ** c
            (finite; 0 makes it uniform).

    Returns:
        One sparsity per layer, each in [0, 1).

    Raises:
        ValueError: for a bad argument, an ANF target no assignment can reach,
            or a layer that would keep no weight.
    """
    shapes = check_shapes(shapes)
    method = _normalise_method(method)
    sparsity = check_sparsity(sparsity)
    erk_power_scale = check_exponent(erk_power_scale, 'erk_power_scale')
    closeness = check_exponent(closeness, 'closeness')
    num_layers = len(shapes)

    if isinstance(dense_layers, (str, bytes)) or not isinstance(
            dense_layers, Iterable):
        raise ValueError(f'dense_layers must be a sequence of layer indices, '
                         f'got {dense_layers!r}.')
    if custom_sparsities is None:
        custom_sparsities = {}
    if not isinstance(custom_sparsities, Mapping):
        raise ValueError(f'custom_sparsities must be a mapping from layer '
                         f'index to sparsity, got {custom_sparsities!r}.')
    fixed: Dict[int, float] = {}
    for index in dense_layers:
        fixed[check_layer_index(index, num_layers, 'dense_layers')] = 0.0
    for index, value in custom_sparsities.items():
        fixed[check_layer_index(index, num_layers, 'custom_sparsities')] = (
            check_sparsity(value, f'custom_sparsities[{index!r}]'))
    if input_layer_sparsity is not None:
        input_layer_sparsity = check_sparsity(input_layer_sparsity,
                                              'input_layer_sparsity')
        if 0 in fixed:
            raise ValueError('input_layer_sparsity is set but layer 0 is also '
                             'listed as dense or custom; choose one.')
        fixed[0] = input_layer_sparsity

    free = [i for i in range(num_layers) if i not in fixed]
    sizes = [math.prod(shape) for shape in shapes]

    if sparsity == 0.0 or method == 'uniform':
        # Exactly s (0 or the target) on every free layer, no rounding.
        free_sparsities = {i: sparsity for i in free}
    else:
        if method in SUITE_METHODS:
            # The target covers the free layers alone (possibly none), in
            # whole weights as the original suite counts them.
            budget = sum(sizes[i] - math.floor(sparsity * sizes[i])
                         for i in free)
        else:
            budget = _anf_free_budget(sizes, sparsity, fixed, free)
        densities = _solve_densities(shapes, sizes, method, budget, free,
                                     erk_power_scale, closeness)
        free_sparsities = {i: 1.0 - d for i, d in densities.items()}
    result = [fixed[i] if i in fixed else free_sparsities[i]
              for i in range(num_layers)]
    for index in free:
        layer_sparsity, size = result[index], sizes[index]
        if (not 0.0 <= layer_sparsity < 1.0 or
                size - math.floor(layer_sparsity * size) < 1):
            raise ValueError(
                f'Layer {index} (shape {shapes[index]}, {size} weights) would '
                f'get sparsity {layer_sparsity!r} and keep no weight under '
                f'{method} at sparsity={sparsity!r} (erk_power_scale='
                f'{erk_power_scale!r}, closeness={closeness!r}); lower the '
                'sparsity or the exponent, or keep this layer dense.')
    return result


def _anf_free_budget(sizes: List[int], sparsity: float,
                     fixed: Dict[int, float], free: List[int]) -> float:
    """Active weights left for ANF's free layers under a whole-network target.

    Raises:
        ValueError: if the fixed layers alone exceed the target, or the free
            layers cannot hold what is left.
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
    return budget


def check_layer_index(index: int, num_layers: int, name: str) -> int:
    """Returns a layer index in 0..num_layers-1; negative ones count back."""
    if (not isinstance(index, (int, np.integer)) or isinstance(index, bool)
            or not -num_layers <= index < num_layers):
        raise ValueError(f'{name} has layer index {index!r}; allowed are '
                         f'-{num_layers}..{num_layers - 1} for {num_layers} '
                         'layers.')
    return int(index) % num_layers


# A density above 1 by no more than this is rounding error, not "too dense".
_DENSITY_TOLERANCE = 1e-12


def _solve_densities(shapes: List[Shape], sizes: List[int], method: str,
                     budget: float, free: List[int], erk_power_scale: float,
                     closeness: float) -> Dict[int, float]:
    """Finds eps with sum(eps * raw_l * N_l) == budget over the free layers.

    A layer whose density eps * raw_l exceeds 1 (beyond rounding) is made
    dense, spending its full size from the budget, and eps is recomputed for
    the rest, until every density is at most 1 (rounding overshoot clamped).
    """
    log_raw = {i: _log_raw_density_score(shapes[i], method, erk_power_scale,
                                         closeness) for i in free}
    for index, value in log_raw.items():
        if not math.isfinite(value):
            raise ValueError(
                f'Layer {index} (shape {shapes[index]}) gets a non-finite '
                f'{method} score with erk_power_scale={erk_power_scale!r}, '
                f'closeness={closeness!r}; use a smaller exponent.')
    densities: Dict[int, float] = {}
    sparse = list(free)
    while sparse:
        # Scores relative to the largest one: the top layer's is 1, so the
        # divisor is at least its size and never 0.
        top = max(log_raw[i] for i in sparse)
        raw = {i: math.exp(log_raw[i] - top) for i in sparse}
        eps = budget / sum(raw[i] * sizes[i] for i in sparse)
        too_dense = [i for i in sparse
                     if eps * raw[i] > 1.0 + _DENSITY_TOLERANCE]
        if not too_dense:
            densities.update({i: min(eps * raw[i], 1.0) for i in sparse})
            break
        for index in too_dense:
            densities[index] = 1.0
            budget -= sizes[index]
            sparse.remove(index)
    return densities


def create_masks(shapes: Sequence[Sequence[int]], sparsities: Sequence[float],
                 seed: Optional[int] = None) -> List[np.ndarray]:
    """Random float32 masks with exactly floor(s * N) zeros per layer.

    Args:
        shapes: kernel shapes (2-D Dense or 4-D conv).
        sparsities: one sparsity in [0, 1) per layer.
        seed: None (unseeded) or an integer >= 0.

    Returns:
        One 0/1 float32 mask per layer.
    """
    shapes = check_shapes(shapes)
    seed = check_seed(seed)
    if isinstance(sparsities, (str, bytes)) or not isinstance(
            sparsities, (Sequence, np.ndarray)):
        raise ValueError(f'sparsities must be a sequence with one sparsity '
                         f'per layer, got {sparsities!r}.')
    if len(sparsities) != len(shapes):
        raise ValueError(f'Got {len(sparsities)} sparsities for {len(shapes)} '
                         'layers; need one per layer.')
    checked = [check_sparsity(value, f'sparsities[{index}]')
               for index, value in enumerate(sparsities)]
    rng = np.random.default_rng(seed)
    masks = []
    for shape, sparsity in zip(shapes, checked):
        size = math.prod(shape)
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
    connection into output unit (channel) j from input unit (channel) i gets
    limit sqrt(6 / (fan_in_j + fan_out_i)), where fan_in_j counts the active
    weights into j and fan_out_i those leaving i. For a conv kernel
    (h, w, c_in, c_out) both counts run over the spatial positions too, as in
    the original suite (mask summed over h, w first), so a dense mask of any
    shape gets exactly Keras' glorot_uniform limit (fan_in = h * w * c_in,
    fan_out = h * w * c_out). Inactive positions are 0.

    Args:
        mask: a 2-D (in, out) or 4-D (h, w, in, out) 0/1 mask.
        rng: random generator (a fresh unseeded one if None).

    Returns:
        float32 weights of the mask's shape.
    """
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim not in (2, 4):
        raise ValueError(f'mask has shape {mask.shape}; allowed are 2-D Dense '
                         '(in, out) or 4-D conv (h, w, in, out) masks.')
    rng = rng or np.random.default_rng()
    # (c_in, c_out) connection counts; spatial positions summed for conv.
    channels = mask if mask.ndim == 2 else mask.sum(axis=(0, 1))
    fan_in = channels.sum(axis=0)  # active weights into each output unit
    fan_out = channels.sum(axis=1)  # active weights out of each input unit
    limit = np.sqrt(6.0 / np.maximum(fan_in[None, :] + fan_out[:, None], 1.0))
    weights = rng.uniform(-1.0, 1.0, size=mask.shape) * limit * mask
    return weights.astype(np.float32)


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


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """Where a conv layer sits: its input (height, width), strides, padding."""
    input_spatial: Tuple[int, int]
    strides: Tuple[int, int] = (1, 1)
    padding: str = 'same'


def network_stats(shapes: Sequence[Sequence[int]],
                  masks_or_sparsities: Sequence,
                  activations: Optional[Sequence[Optional[str]]] = None,
                  use_bias: bool = True,
                  input_spatial: Optional[Tuple[int, int]] = None,
                  param_bits: int = 32,
                  conv_geometry: Optional[Sequence[Optional[ConvGeometry]]]
                  = None) -> NetworkStats:
    """Active parameters and inference FLOPs of a network, one example.

    Args:
        shapes: kernel shapes, input layer first (2-D Dense or 4-D conv).
        masks_or_sparsities: per layer either a 0/1 mask (sparsity measured
            from it) or a sparsity value.
        activations: per-layer activation names for micronet_counting; by
            default 'relu' on hidden layers and none on the output layer.
        use_bias: whether the layers carry biases.
        input_spatial: (height, width) of every conv layer's input when
            `conv_geometry` is not given (stride 1, 'same' padding assumed).
        param_bits: bits per parameter for the sparse bitmask cost.
        conv_geometry: per layer, the `ConvGeometry` of a conv layer (None
            for Dense layers): input size, strides and padding.

    Returns:
        A `NetworkStats`.
    """
    shapes = check_shapes(shapes)
    if len(masks_or_sparsities) != len(shapes):
        raise ValueError(f'Got {len(masks_or_sparsities)} masks/sparsities '
                         f'for {len(shapes)} layers; need one per layer.')
    if activations is None:
        activations = ['relu'] * (len(shapes) - 1) + [None]
    layers = []
    for index, (shape, item) in enumerate(zip(shapes, masks_or_sparsities)):
        size = math.prod(shape)
        if np.ndim(item) == 0:
            sparsity = check_sparsity(
                item, f'masks_or_sparsities[{index}]')
            active = size - math.floor(sparsity * size)
        else:
            if tuple(np.shape(item)) != shape:
                raise ValueError(f'Mask {index} has shape {np.shape(item)}, '
                                 f'but its layer has shape {shape}.')
            active = int(np.count_nonzero(item))
            sparsity = 1.0 - active / size
        geometry = conv_geometry[index] if conv_geometry else None
        if geometry is None and input_spatial is not None:
            geometry = ConvGeometry(tuple(input_spatial))
        layer = _counting_layer(shape, activations[index], use_bias, geometry)
        layers.append(LayerStats(
            shape=shape, sparsity=sparsity, active_weights=active,
            parameters=counting.count_parameters(layer, sparsity, param_bits),
            flops=counting.count_ops(layer, sparsity).total))
    return NetworkStats(tuple(layers))


def _counting_layer(shape: Shape, activation: Optional[str], use_bias: bool,
                    geometry: Optional[ConvGeometry]):
    if len(shape) == 2:
        return counting.FullyConnected(input_size=shape[0],
                                       output_size=shape[1],
                                       use_bias=use_bias,
                                       activation=activation)
    if geometry is None:
        raise ValueError('Conv layers need input_spatial=(height, width) or '
                         'conv_geometry to count FLOPs.')
    return counting.Conv2D(input_height=geometry.input_spatial[0],
                           input_width=geometry.input_spatial[1],
                           in_channels=shape[2], out_channels=shape[3],
                           kernel_size=(shape[0], shape[1]),
                           strides=tuple(geometry.strides),
                           padding=geometry.padding,
                           use_bias=use_bias, activation=activation)
