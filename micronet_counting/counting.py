"""MicroNet-challenge-style parameter and operation counts for sparse layers.

Counts the storage (parameters) and the inference arithmetic (multiplies and
adds for ONE example) of fully connected, 2-D convolution and depthwise 2-D
convolution layers whose weights have a given sparsity, so that sparse and
dense agents can be compared at equal cost. Pure Python (no TensorFlow), so it
imports instantly. Every number follows from the rules below by hand.

Notation
--------
For a layer, ``N`` is its number of weights (the product of `weight_shape`),
``C`` its number of output channels and ``P`` its number of output spatial
positions:

* ``FullyConnected``: weight shape ``(input_size, output_size)``;
  ``C = output_size``; ``P = 1``.
* ``Conv2D``: weight shape ``(kh, kw, in_channels, out_channels)``;
  ``C = out_channels``; ``P = h_out * w_out``.
* ``DepthwiseConv2D``: weight shape ``(kh, kw, in_channels,
  depth_multiplier)``; ``C = in_channels * depth_multiplier``;
  ``P = h_out * w_out``.

Output sizes use TensorFlow semantics, per spatial axis with input size ``i``,
kernel size ``k`` and stride ``t``:
``'same'``: ``o = ceil(i / t)``; ``'valid'``: ``o = floor((i - k) / t) + 1``
(must be >= 1, i.e. ``k <= i``). Padding is case-insensitive. Dilation is not
supported.

Rule 1: nonzero weights
-----------------------
The weight sparsity ``s`` is the fraction of zero weights, a real number with
``0 <= s < 1``. The number of nonzero weights is
``k = round(N * (1 - s))`` using Python's ``round`` (ties go to the even
integer, e.g. 2.5 -> 2, 3.5 -> 4). Hence a sparsity measured from a mask,
``s = zeros / N``, gives exactly ``k = N - zeros``. Biases are never sparse.

Rule 2: parameters (in units of one ``param_bits``-bit value)
-------------------------------------------------------------
``params = k + B + M`` where ``B = C`` if ``use_bias`` else 0, and the
bitmask term ``M = N / param_bits`` if ``s > 0`` else 0: a sparse layer
stores one bit per weight (``N`` bits) to locate its nonzeros, a dense layer
stores no mask. ``M`` is paid whenever ``s > 0``, even if rounding gives
``k == N``. ``param_bits`` (default 32) only converts mask bits into
parameter-equivalents; weights and biases count 1 each whatever their width.

Rule 3: multiplies and adds (one example, inference)
----------------------------------------------------
Only nonzero weights are multiplied; each output element sums its products,
which costs (products - 1) adds. With the ``k`` nonzeros spread over ``C``
outputs:

* multiplies ``= k * P``
* accumulation adds ``= max(k - C, 0) * P``
* bias adds ``= C * P`` if ``use_bias`` else 0
* activation: ``C * P`` output elements, each costing the multiplies and
  adds of `ACTIVATION_OPS` below, added to the two totals.

For ``FullyConnected`` (``P = 1``): multiplies ``= k``, accumulation adds
``= max(k - output_size, 0)``. The same counts apply at every output position
of a convolution: savings from zero padding at image borders are ignored
(every position is charged the full kernel), as are memory accesses and
sparse-index decoding.

Activation table (per output element: multiplies, adds). Following the
challenge, a transcendental function (exp, log) is one op; we count it, a
division and a multiply by a constant as one multiply each, and a comparison
or an addition/subtraction of a constant as one add each; negation is free:

=============  =====  ====  ====================================
activation     mults  adds  reasoning
=============  =====  ====  ====================================
None/'linear'  0      0     identity
'relu'         0      1     max(x, 0): one comparison
'sigmoid'      2      1     1 / (1 + exp(-x)): exp, +1, divide
'tanh'         3      2     (e - 1) / (e + 1), e = exp(2x): 2x,
                            exp, -1, +1, divide
'swish'        3      1     x * sigmoid(x): sigmoid + one multiply
'elu'          1      2     x > 0 ? x : exp(x) - 1 (alpha = 1):
                            comparison, exp, -1
'softplus'     2      1     log(1 + exp(x)): exp, +1, log
=============  =====  ====  ====================================

Rule 4: networks
----------------
`count_network` adds the per-layer numbers (one sparsity per layer); layers
are independent, so nothing else (inputs, element-wise glue) is counted.

Errors
------
A sparsity outside ``[0, 1)``, NaN or not a real number, a non-positive or
non-integer size, an unknown padding or activation, or a 'valid' kernel larger
than its input raises ``ValueError`` naming the bad value and what is allowed.
An object that is not one of the three layer classes raises ``TypeError``.
"""

import dataclasses
import math
import numbers
import types
from typing import Mapping, Optional, Sequence, Tuple, Union

# Per-output-element cost of each activation as (multiplies, adds); see the
# module docstring for the reasoning behind each entry.
ACTIVATION_OPS: Mapping[Optional[str], Tuple[int, int]] = (
    types.MappingProxyType({
        None: (0, 0),
        'linear': (0, 0),
        'relu': (0, 1),
        'sigmoid': (2, 1),
        'tanh': (3, 2),
        'swish': (3, 1),
        'elu': (1, 2),
        'softplus': (2, 1),
    }))

_PADDINGS = ('same', 'valid')


# ----------------------------------------------------------------------------
# Validation helpers. They return the normalised value so that dataclasses
# store plain Python ints/tuples (hashable, comparable) whatever was passed.
# ----------------------------------------------------------------------------


def _positive_int(name: str, value) -> int:
    """Returns `value` as an int, or raises ValueError if it is not >= 1."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or value < 1):
        raise ValueError(
            f'{name} must be a positive integer (>= 1); got {value!r}.')
    return int(value)


def _positive_int_pair(name: str, value) -> Tuple[int, int]:
    """Returns `value` as an (int, int) pair; a single int means (v, v)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(
            f'{name} must be a positive integer or a pair of positive '
            f'integers (height, width); got {value!r}.')
    return (_positive_int(f'{name}[0]', value[0]),
            _positive_int(f'{name}[1]', value[1]))


def _padding(value) -> str:
    """Returns the lower-cased padding, or raises ValueError if unknown."""
    if not isinstance(value, str) or value.lower() not in _PADDINGS:
        raise ValueError(
            f'padding must be one of {", ".join(map(repr, _PADDINGS))} '
            f'(case-insensitive); got {value!r}.')
    return value.lower()


def _activation(value) -> Optional[str]:
    """Returns `value` unchanged, or raises ValueError if it is unknown."""
    if not (value is None or isinstance(value, str)) or (
            value not in ACTIVATION_OPS):
        allowed = ', '.join(map(repr, ACTIVATION_OPS))
        raise ValueError(
            f'activation must be one of {allowed}; got {value!r}.')
    return value


def _bool(name: str, value) -> bool:
    """Returns `value` as a bool (Python or NumPy), or raises ValueError."""
    is_numpy_bool = getattr(getattr(value, 'dtype', None), 'kind', '') == 'b'
    if not (isinstance(value, bool) or is_numpy_bool):
        raise ValueError(f'{name} must be True or False; got {value!r}.')
    return bool(value)


def _check_sparsity(sparsity) -> float:
    """Returns `sparsity` as a float, or raises ValueError if not in [0, 1)."""
    if (isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real)
            or math.isnan(sparsity) or not 0.0 <= sparsity < 1.0):
        raise ValueError(
            'sparsity must be a real number in [0, 1) (fraction of zero '
            f'weights); got {sparsity!r}.')
    return float(sparsity)


def _conv_output_size(size: int, kernel: int, stride: int, padding: str,
                      axis: str) -> int:
    """Output size along one axis with TensorFlow 'same'/'valid' rules."""
    if padding == 'same':
        return -(-size // stride)  # ceil(size / stride)
    if kernel > size:
        raise ValueError(
            f"padding 'valid' needs kernel {axis} <= input {axis}; got kernel "
            f'{axis} {kernel!r} > input {axis} {size!r}.')
    return (size - kernel) // stride + 1


def _set(obj, name: str, value) -> None:
    """Stores a normalised field value on a frozen dataclass."""
    object.__setattr__(obj, name, value)


# ----------------------------------------------------------------------------
# Layer descriptions.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FullyConnected:
    """A dense layer ``y = act(x @ W + b)`` with ``W`` of shape (in, out).

    Attributes:
      input_size: Number of inputs.
      output_size: Number of outputs (units).
      use_bias: Whether a (dense) bias vector of `output_size` is added.
      activation: A key of `ACTIVATION_OPS` (None means linear).
    """

    input_size: int
    output_size: int
    use_bias: bool = True
    activation: Optional[str] = None

    def __post_init__(self):
        _set(self, 'input_size', _positive_int('input_size', self.input_size))
        _set(self, 'output_size',
             _positive_int('output_size', self.output_size))
        _set(self, 'use_bias', _bool('use_bias', self.use_bias))
        _set(self, 'activation', _activation(self.activation))


@dataclasses.dataclass(frozen=True)
class Conv2D:
    """A 2-D convolution on an NHWC input, one example.

    Attributes:
      input_height: Input rows.
      input_width: Input columns.
      in_channels: Input channels.
      out_channels: Output channels (filters).
      kernel_size: (kh, kw); an int k means (k, k).
      strides: (th, tw); an int t means (t, t).
      padding: 'same' or 'valid' (TensorFlow semantics, case-insensitive).
      use_bias: Whether a (dense) bias of `out_channels` is added.
      activation: A key of `ACTIVATION_OPS` (None means linear).
    """

    input_height: int
    input_width: int
    in_channels: int
    out_channels: int
    kernel_size: Tuple[int, int]
    strides: Tuple[int, int] = (1, 1)
    padding: str = 'same'
    use_bias: bool = True
    activation: Optional[str] = None

    def __post_init__(self):
        for name in ('input_height', 'input_width', 'in_channels',
                     'out_channels'):
            _set(self, name, _positive_int(name, getattr(self, name)))
        _validate_spatial(self)


@dataclasses.dataclass(frozen=True)
class DepthwiseConv2D:
    """A depthwise 2-D convolution: each input channel gets its own filters.

    Attributes:
      input_height: Input rows.
      input_width: Input columns.
      in_channels: Input channels.
      kernel_size: (kh, kw); an int k means (k, k).
      strides: (th, tw); an int t means (t, t).
      padding: 'same' or 'valid' (TensorFlow semantics, case-insensitive).
      depth_multiplier: Filters per input channel; the layer outputs
        ``in_channels * depth_multiplier`` channels.
      use_bias: Whether a (dense) bias of the output channels is added.
      activation: A key of `ACTIVATION_OPS` (None means linear).
    """

    input_height: int
    input_width: int
    in_channels: int
    kernel_size: Tuple[int, int]
    strides: Tuple[int, int] = (1, 1)
    padding: str = 'same'
    depth_multiplier: int = 1
    use_bias: bool = True
    activation: Optional[str] = None

    def __post_init__(self):
        for name in ('input_height', 'input_width', 'in_channels',
                     'depth_multiplier'):
            _set(self, name, _positive_int(name, getattr(self, name)))
        _validate_spatial(self)


Layer = Union[FullyConnected, Conv2D, DepthwiseConv2D]


def _validate_spatial(layer: Union[Conv2D, DepthwiseConv2D]) -> None:
    """Normalises and checks the fields shared by the two convolutions."""
    _set(layer, 'kernel_size',
         _positive_int_pair('kernel_size', layer.kernel_size))
    _set(layer, 'strides', _positive_int_pair('strides', layer.strides))
    _set(layer, 'padding', _padding(layer.padding))
    _set(layer, 'use_bias', _bool('use_bias', layer.use_bias))
    _set(layer, 'activation', _activation(layer.activation))
    output_shape(layer)  # Raises if a 'valid' kernel exceeds the input.


# ----------------------------------------------------------------------------
# Operation counts.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OpCount:
    """Multiplies and adds of an inference pass; `total` is the "FLOPs".

    Counts support ``+`` (and therefore ``sum(counts)``) and `scale`.
    """

    multiplies: int
    adds: int

    @property
    def total(self) -> int:
        """Multiplies plus adds."""
        return self.multiplies + self.adds

    def __add__(self, other: 'OpCount') -> 'OpCount':
        if not isinstance(other, OpCount):
            return NotImplemented
        return OpCount(self.multiplies + other.multiplies,
                       self.adds + other.adds)

    def __radd__(self, other) -> 'OpCount':
        # Lets the built-in sum() start from its default 0.
        if isinstance(other, numbers.Number) and other == 0:
            return self
        return NotImplemented

    def scale(self, factor: float) -> 'OpCount':
        """Returns both counts multiplied by `factor` (e.g. examples per step).

        The result is exact: an int factor keeps ints, a float gives floats.

        Raises:
          ValueError: If `factor` is not a finite real number >= 0.
        """
        if (isinstance(factor, bool) or not isinstance(factor, numbers.Real)
                or not math.isfinite(factor) or factor < 0):
            raise ValueError(
                f'factor must be a finite real number >= 0; got {factor!r}.')
        return OpCount(self.multiplies * factor, self.adds * factor)


def _check_layer(layer) -> None:
    if not isinstance(layer, (FullyConnected, Conv2D, DepthwiseConv2D)):
        raise TypeError(
            'layer must be a FullyConnected, Conv2D or DepthwiseConv2D; got '
            f'{type(layer).__name__}: {layer!r}.')


def weight_shape(layer: Layer) -> Tuple[int, ...]:
    """Returns the weight (kernel) shape, bias excluded.

    (in, out) for FullyConnected, (kh, kw, cin, cout) for Conv2D and
    (kh, kw, cin, depth_multiplier) for DepthwiseConv2D, as in Keras.
    """
    _check_layer(layer)
    if isinstance(layer, FullyConnected):
        return (layer.input_size, layer.output_size)
    kh, kw = layer.kernel_size
    if isinstance(layer, Conv2D):
        return (kh, kw, layer.in_channels, layer.out_channels)
    return (kh, kw, layer.in_channels, layer.depth_multiplier)


def output_shape(layer: Layer) -> Tuple[int, ...]:
    """Returns the output shape of one example.

    (output_size,) for FullyConnected; (h_out, w_out, c_out) for the
    convolutions, with TensorFlow 'same'/'valid' output sizes.

    Raises:
      ValueError: If a 'valid' kernel is larger than its input.
    """
    _check_layer(layer)
    if isinstance(layer, FullyConnected):
        return (layer.output_size,)
    kh, kw = layer.kernel_size
    th, tw = layer.strides
    h_out = _conv_output_size(layer.input_height, kh, th, layer.padding,
                              'height')
    w_out = _conv_output_size(layer.input_width, kw, tw, layer.padding,
                              'width')
    if isinstance(layer, Conv2D):
        channels = layer.out_channels
    else:
        channels = layer.in_channels * layer.depth_multiplier
    return (h_out, w_out, channels)


def _geometry(layer: Layer) -> Tuple[int, int, int]:
    """Returns (N weights, C output channels, P output positions)."""
    num_weights = math.prod(weight_shape(layer))
    out_shape = output_shape(layer)
    channels = out_shape[-1]
    positions = math.prod(out_shape[:-1])  # 1 for FullyConnected.
    return num_weights, channels, positions


def nonzero_weights(layer: Layer, sparsity: float = 0.0) -> int:
    """Returns k = round(N * (1 - sparsity)), the layer's nonzero weights.

    Raises:
      ValueError: If `sparsity` is not a real number in [0, 1).
    """
    sparsity = _check_sparsity(sparsity)
    num_weights = math.prod(weight_shape(layer))
    return int(round(num_weights * (1.0 - sparsity)))


def count_parameters(layer: Layer, sparsity: float = 0.0,
                     param_bits: int = 32) -> float:
    """Returns the parameter count: nonzeros + bias + bitmask (if sparse).

    Args:
      layer: The layer description.
      sparsity: Fraction of zero weights, in [0, 1).
      param_bits: Bits per stored parameter; the N-bit mask of a sparse
        layer counts as N / param_bits parameters.

    Raises:
      ValueError: On an invalid `sparsity` or `param_bits`.
    """
    num_nonzero = nonzero_weights(layer, sparsity)
    param_bits = _positive_int('param_bits', param_bits)
    num_weights, channels, _ = _geometry(layer)
    params = float(num_nonzero + (channels if layer.use_bias else 0))
    if sparsity > 0:
        params += num_weights / param_bits
    return params


def count_ops(layer: Layer, sparsity: float = 0.0) -> OpCount:
    """Returns the multiplies and adds of one example's forward pass.

    Multiplies by zero weights are skipped; see the module docstring for the
    exact rules and the activation table.

    Raises:
      ValueError: If `sparsity` is not a real number in [0, 1).
    """
    num_nonzero = nonzero_weights(layer, sparsity)
    _, channels, positions = _geometry(layer)
    multiplies = num_nonzero * positions
    adds = max(num_nonzero - channels, 0) * positions
    if layer.use_bias:
        adds += channels * positions
    act_multiplies, act_adds = ACTIVATION_OPS[layer.activation]
    multiplies += act_multiplies * channels * positions
    adds += act_adds * channels * positions
    return OpCount(multiplies=multiplies, adds=adds)


def count_network(layers: Sequence[Layer], sparsities: Sequence[float],
                  param_bits: int = 32) -> Tuple[float, OpCount]:
    """Returns (total parameters, total OpCount) of layers applied in turn.

    Args:
      layers: The layer descriptions.
      sparsities: One sparsity per layer, in the same order.
      param_bits: As in `count_parameters`.

    Raises:
      ValueError: If the lengths differ, or on any invalid sparsity.
    """
    layers = list(layers)
    sparsities = list(sparsities)
    if len(layers) != len(sparsities):
        raise ValueError(
            'layers and sparsities must have the same length (one sparsity '
            f'per layer); got {len(layers)} layers and {len(sparsities)} '
            'sparsities.')
    params = 0.0
    ops = OpCount(0, 0)
    for layer, sparsity in zip(layers, sparsities):
        params += count_parameters(layer, sparsity, param_bits)
        ops = ops + count_ops(layer, sparsity)
    return params, ops
