"""Sparse Keras layers for TF-Agents networks: wrapping, masks and statistics.

A sparse layer is a Keras Dense (or Conv2D) layer wrapped in `MaskedLayer`, a
`tfmot` `PruneLowMagnitude` wrapper whose `mask` variable holds the 0/1 mask.
Unlike the stock wrapper, `MaskedLayer` does no work in its forward pass: the
kernel is kept exactly masked by whoever changes masks or weights
(`init_masks` at the start; `MaskedOptimizer`, which masks gradients and resets
optimizer moments wherever a mask changes), so the forward pass costs what a
dense layer costs and the gradient with respect to the kernel is the dense
gradient RigL needs.

Gin names follow the original suite: `wrap_all_layers`, `init_masks`,
`log_sparsities`.
"""

import contextlib
import math
from typing import Callable, List, Optional, Sequence, Tuple

import gin
import numpy as np
import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import (
    pruning_schedule as pruning_sched)
from tensorflow_model_optimization.python.core.sparsity.keras import (
    pruning_wrapper)

from rigl import sparse_utils
from rigl.rl.tfagents import tf_agents_private as tfa_private
from rigl.rl.tfagents.sparsity.compressed import CompressedDense

MODES = ('constant', 'prune')
# How a sparse layer runs (`train_eval.sparse_execution`): 'masked', a dense
# kernel with a mask (any device, any method); 'sparse', only the active
# weights (`CompressedDense`: CPU kernels, Dense layers, fixed active count).
EXECUTIONS = ('masked', 'sparse')


class MaskedLayer(pruning_wrapper.PruneLowMagnitude):
    """A `PruneLowMagnitude` wrapper whose call is the wrapped layer's call.

    The mask lives in `self.mask`; the kernel is multiplied by it whenever the
    kernel or the mask changes, never per forward pass.
    """

    def call(self, inputs, training=None, **kwargs):
        del training  # Masks change only through the optimizer wrapper.
        return self.layer.call(inputs, **kwargs)

    @property
    def kernel(self) -> tf.Variable:
        return self.pruning_vars[0][0]

    @property
    def mask(self) -> tf.Variable:
        return self.pruning_vars[0][1]

    def apply_mask(self) -> tf.Operation:
        """Zeroes the kernel where the mask is 0."""
        return self.kernel.assign(self.kernel * self.mask)

    # The sparse-layer interface (shared with `CompressedDense`).

    @property
    def weights_variable(self) -> tf.Variable:
        """The variable the optimizer updates (the dense kernel)."""
        return self.kernel

    @staticmethod
    def to_dense(vector: tf.Tensor) -> tf.Tensor:
        """A per-weight tensor (an optimizer slot, ...) as a dense matrix:
        already one here."""
        return vector

    def rewrite(self, mask: tf.Tensor, kernel: tf.Tensor,
                slots: Sequence[tf.Variable],
                slot_scale: tf.Tensor) -> tf.Operation:
        """Sets a new mask and kernel and multiplies the optimizer slots by
        `slot_scale`."""
        ops = [self.mask.assign(mask), self.kernel.assign(kernel)]
        ops += [slot.assign(slot * slot_scale) for slot in slots]
        return tf.group(ops)


KERNEL_LAYER_TYPES = (tf.keras.layers.Dense, tf.keras.layers.Conv2D)
# Layers with a mask: `mask`, `kernel`, `weights_variable`, `to_dense`,
# `rewrite`, `apply_mask`.
SPARSE_LAYER_TYPES = (MaskedLayer, CompressedDense)


def kernel_shapes(layers: Sequence[tf.keras.layers.Layer],
                  input_shape) -> List[Tuple[int, ...]]:
    """Kernel shapes of the Dense/Conv2D layers in a chain of unbuilt layers.

    Args:
        layers: the chain, input side first; layers without kernels (Flatten,
            pooling, ...) only change the shape flowing through.
        input_shape: one example's input shape, or an int for a flat input.

    Returns:
        (in, out) for Dense and (h, w, in, out) for Conv2D, in chain order.
    """
    shape = tf.TensorShape(
        [None] + ([input_shape] if isinstance(input_shape, int)
                  else list(input_shape)))
    shapes = []
    for layer in layers:
        if isinstance(layer, tf.keras.layers.Dense):
            shapes.append((int(shape[-1]), layer.units))
        elif isinstance(layer, tf.keras.layers.Conv2D):
            shapes.append((*layer.kernel_size, int(shape[-1]), layer.filters))
        shape = tf.TensorShape(layer.compute_output_shape(shape))
    return shapes


def _draw_no_initial_values(layers: Sequence[tf.keras.layers.Layer]) -> None:
    """Zero initialisers for the kernel layers of a masked network's
    sparse-execution twin, which takes its weights from that network:
    drawing values would move the global random stream and so change every
    network built after it."""
    for layer in layers:
        if isinstance(layer, KERNEL_LAYER_TYPES):
            layer.kernel_initializer = tf.keras.initializers.Zeros()
            layer.bias_initializer = tf.keras.initializers.Zeros()


def _check_pruning_schedule(initial_sparsity: float, begin_step: int,
                            end_step: int, frequency: int) -> None:
    """Raises ValueError (one line) for a pruning schedule that never
    reaches its final sparsity."""
    sparse_utils.check_sparsity(initial_sparsity,
                                'wrap_all_layers.initial_sparsity')
    if begin_step < 0 or end_step <= begin_step:
        raise ValueError(
            f'Pruning needs 0 <= begin_step < end_step, got begin_step='
            f'{begin_step}, end_step={end_step}.')
    if frequency <= 0 or (end_step - begin_step) % frequency:
        raise ValueError(
            f'Pruning frequency {frequency} must be positive and divide '
            f'end_step - begin_step = {end_step - begin_step}, or the '
            'final sparsity is never reached.')


@gin.configurable
def wrap_all_layers(layers: Sequence[tf.keras.layers.Layer],
                    input_shape,
                    dense_layers: Sequence[int] = (),
                    mode: str = 'constant',
                    initial_sparsity: float = 0.0,
                    final_sparsity: float = 0.9,
                    mask_init_method: str = 'erdos_renyi_kernel',
                    erk_power_scale: float = 1.0,
                    begin_step: int = 200000,
                    end_step: int = 800000,
                    frequency: int = 1000,
                    execution: str = 'masked',
                    masks: Optional[Sequence[np.ndarray]] = None,
                    compress_min_sparsity: float = 0.8
                    ) -> List[tf.keras.layers.Layer]:
    """Wraps the Dense/Conv2D layers of a chain in `MaskedLayer`s.

    Args:
        layers: unbuilt layers, input side first, each fed the previous; only
            Dense and Conv2D layers (the kernel layers) are wrapped.
        input_shape: one example's input shape (an int for a flat input).
        dense_layers: indices among the kernel layers of those left unwrapped
            (e.g. -1, the output layer).
        mode: 'constant' (masks change only through the mask updaters) or
            'prune' (gradual magnitude pruning to per-layer final sparsities).
        initial_sparsity: 'prune' mode: sparsity at `begin_step`.
        final_sparsity: 'prune' mode: global sparsity at `end_step`, spread
            by `mask_init_method` (over the wrapped layers for the RigL-family
            methods, over the whole network for ANF's; see
            docs/sparsity_conventions.md).
        mask_init_method: a `sparse_utils.METHODS` name.
        erk_power_scale: ERK exponent.
        begin_step: 'prune' mode: first pruning step.
        end_step: 'prune' mode: last pruning step; (end_step - begin_step) must
            be a multiple of `frequency` so the final sparsity is reached.
        frequency: 'prune' mode: steps between pruning updates.
        execution: 'masked' (`MaskedLayer`) or 'sparse' (`CompressedDense`
            for Dense layers sparser than `compress_min_sparsity`, the
            others masked; 'constant' mode only; built from `masks`: one per
            wrapped layer, in chain order, as drawn on the masked network).
        masks: 'sparse' execution: the initial masks.
        compress_min_sparsity: 'sparse' execution: layers sparser than this
            hold only their active weights; denser ones (ERK leaves small
            input and output layers dense-ish) stay masked, where dense
            kernels are faster (benchmarks/sparse_speed.py).

    Returns:
        The layers, the sparse ones wrapped.
    """
    if mode not in MODES:
        raise ValueError(f'wrap_all_layers.mode is {mode!r}; allowed: '
                         f'{", ".join(MODES)}.')
    if execution not in EXECUTIONS:
        raise ValueError(f'sparse execution is {execution!r}; allowed: '
                         f'{", ".join(EXECUTIONS)}.')
    if execution == 'sparse' and mode != 'constant':
        raise ValueError("sparse_execution='sparse' needs a fixed active "
                         "count; gradual pruning ('prune') runs masked.")
    masks = list(masks or [])
    if execution == 'sparse':
        _draw_no_initial_values(layers)
    shapes = kernel_shapes(layers, input_shape)
    dense = {sparse_utils.check_layer_index(i, len(shapes), 'dense_layers')
             for i in dense_layers}
    if mode == 'prune':
        _check_pruning_schedule(initial_sparsity, begin_step, end_step,
                                frequency)
        finals = sparse_utils.get_sparsities(
            shapes, mask_init_method, final_sparsity,
            dense_layers=sorted(dense), erk_power_scale=erk_power_scale)
    wrapped = []
    index = -1  # position among the kernel layers
    for layer in layers:
        if not isinstance(layer, KERNEL_LAYER_TYPES):
            wrapped.append(layer)
            continue
        index += 1
        if index in dense:
            wrapped.append(layer)
            continue
        if execution == 'sparse':
            if not masks:
                raise ValueError("sparse_execution='sparse' needs one mask "
                                 'per sparse layer.')
            mask = masks.pop(0)
            if (isinstance(layer, tf.keras.layers.Dense) and
                    1.0 - np.mean(mask) >= compress_min_sparsity):
                wrapped.append(CompressedDense(layer, mask))
                continue
        if mode == 'prune':
            schedule = pruning_sched.PolynomialDecay(
                initial_sparsity=float(initial_sparsity),
                final_sparsity=float(max(finals[index], initial_sparsity)),
                begin_step=begin_step, end_step=end_step, power=3,
                frequency=frequency)
        else:
            # Not applied: constant-mode masks come from init_masks/updaters.
            schedule = pruning_sched.ConstantSparsity(0.0, begin_step=0)
        wrapped.append(MaskedLayer(layer, pruning_schedule=schedule))
    return wrapped


def kernel_layers(network: tf.keras.layers.Layer
                  ) -> List[tf.keras.layers.Layer]:
    """The Dense/Conv/Masked layers of a network in forward order.

    Walks `layers` of nested networks and stops at a `MaskedLayer`, so each
    kernel appears once.
    """
    found = []

    def visit(layer):
        if isinstance(layer, SPARSE_LAYER_TYPES) or (
                hasattr(layer, 'kernel') and isinstance(layer,
                                                        KERNEL_LAYER_TYPES)):
            found.append(layer)
            return
        for child in getattr(layer, 'layers', ()):
            visit(child)
        # TF-Agents projection heads keep their Dense layer in an attribute.
        for projection in tfa_private.projection_layers(layer):
            if projection not in found:
                visit(projection)

    for child in getattr(network, 'layers', ()):
        visit(child)
    return found


def masked_layers(network: tf.keras.layers.Layer) -> List[MaskedLayer]:
    """The sparse layers (`SPARSE_LAYER_TYPES`) of a network in forward
    order."""
    return [layer for layer in kernel_layers(network)
            if isinstance(layer, SPARSE_LAYER_TYPES)]


@gin.configurable
def init_masks(network: tf.keras.layers.Layer,
               sparsity: float = 0.9,
               mask_init_method: str = 'erdos_renyi_kernel',
               erk_power_scale: float = 1.0,
               input_layer_sparsity: Optional[float] = None,
               closeness: float = 0.2,
               fixed_sparse_init: bool = False,
               seed: Optional[int] = None) -> List[float]:
    """Draws random masks for the sparse layers of a built network.

    Per-layer sparsities come from `sparse_utils.get_sparsities` over all the
    network's kernels; unwrapped kernels are its `dense_layers` (outside the
    budget for the RigL-family methods, inside it for ANF's). The kernels
    are multiplied by their masks (or, with `fixed_sparse_init`, redrawn with a
    scale from each connection's real fan-in and fan-out).

    Returns:
        The sparsity given to each kernel layer (0 for dense ones).
    """
    layers = kernel_layers(network)
    if not layers:
        raise ValueError(f'Network {network.name} has no built kernel layers; '
                         'call create_variables() first.')
    if any(isinstance(layer, CompressedDense) for layer in layers):
        raise ValueError(f'{network.name}: masks of a sparse-execution '
                         'network are drawn on its masked twin '
                         '(compress_network).')
    shapes = [tuple(layer.kernel.shape) for layer in layers]
    dense = [i for i, layer in enumerate(layers)
             if not isinstance(layer, MaskedLayer)]
    if len(dense) == len(layers):
        return [0.0] * len(layers)
    if input_layer_sparsity is not None and 0 in dense:
        input_layer_sparsity = None  # The input layer was chosen dense.
    sparsities = sparse_utils.get_sparsities(
        shapes, mask_init_method, sparsity, dense_layers=dense,
        input_layer_sparsity=input_layer_sparsity,
        erk_power_scale=erk_power_scale, closeness=closeness)
    masks = sparse_utils.create_masks(shapes, sparsities, seed=seed)
    rng = np.random.default_rng(None if seed is None else seed + 1)
    for layer, mask in zip(layers, masks):
        if not isinstance(layer, MaskedLayer):
            continue
        layer.mask.assign(mask)
        if fixed_sparse_init:
            layer.kernel.assign(sparse_utils.fixed_sparse_init(mask, rng))
        else:
            layer.apply_mask()
    return sparsities


def apply_masks(networks: Sequence[tf.keras.layers.Layer]) -> tf.Operation:
    """Zeroes every masked kernel of `networks` (graph-friendly)."""
    return tf.group([layer.apply_mask() for network in networks
                     for layer in masked_layers(network)])


def _activation_name(layer) -> Optional[str]:
    inner = layer.layer if isinstance(layer, MaskedLayer) else layer
    name = getattr(getattr(inner, 'activation', None), '__name__', None)
    return None if name in (None, 'linear') else name


def _conv_geometry(network, layers) -> Optional[List]:
    """Each conv layer's input size, strides and padding, from the network's
    input spec (None when the network has no conv layer or no spec)."""
    inner = [layer.layer if isinstance(layer, MaskedLayer) else layer
             for layer in layers]
    if not any(isinstance(layer, tf.keras.layers.Conv2D) for layer in inner):
        return None
    spec = getattr(network, 'input_tensor_spec', None)
    if spec is None or len(spec.shape) != 3:
        return None
    height, width = int(spec.shape[0]), int(spec.shape[1])
    geometry = []
    for layer in inner:
        if not isinstance(layer, tf.keras.layers.Conv2D):
            geometry.append(None)
            continue
        strides, padding = tuple(layer.strides), layer.padding
        geometry.append(sparse_utils.ConvGeometry((height, width), strides,
                                                  padding))
        size = [height, width]
        for axis, (kernel, stride) in enumerate(zip(layer.kernel_size,
                                                    strides)):
            size[axis] = (math.ceil(size[axis] / stride) if padding == 'same'
                          else (size[axis] - kernel) // stride + 1)
        height, width = size
    return geometry


def network_stats(network: tf.keras.layers.Layer,
                  input_spatial: Optional[Tuple[int, int]] = None
                  ) -> sparse_utils.NetworkStats:
    """Measured per-layer sparsity, active parameters and inference FLOPs.

    Each layer's own activation is counted. Conv layers are counted at their
    real input size, strides and padding, worked out from the network's
    input spec (or, without one, at `input_spatial` with stride 1).
    """
    layers = kernel_layers(network)
    shapes = [tuple(layer.kernel.shape) for layer in layers]
    masks = [layer.mask.numpy() if isinstance(layer, SPARSE_LAYER_TYPES)
             else np.ones(shape, np.float32)
             for layer, shape in zip(layers, shapes)]
    activations = [_activation_name(layer) for layer in layers]
    return sparse_utils.network_stats(
        shapes, masks, activations=activations, input_spatial=input_spatial,
        conv_geometry=_conv_geometry(network, layers))


@gin.configurable
def log_sparsities(network: tf.keras.layers.Layer, name: str,
                   step: tf.Variable, log_images: bool = False) -> None:
    """Writes per-layer sparsity, active parameters and FLOPs summaries."""
    stats = network_stats(network)
    with tf.name_scope(f'sparsity/{name}'):
        for index, layer in enumerate(stats.layers):
            tf.summary.scalar(f'layer_{index}', layer.sparsity, step=step)
        tf.summary.scalar('total', stats.sparsity, step=step)
        tf.summary.scalar('active_parameters', stats.parameters, step=step)
        tf.summary.scalar('inference_flops', stats.flops, step=step)
    if log_images:
        for index, layer in enumerate(masked_layers(network)):
            image = tf.cast(layer.mask, tf.float32)[
                tf.newaxis, :, :, tf.newaxis]
            tf.summary.image(f'masks/{name}/layer_{index}', image, step=step)


def num_units(units: int, width: float) -> int:
    """Hidden layer size after the width multiplier (at least 1)."""
    if width <= 0:
        raise ValueError(f'width must be positive, got {width!r}.')
    return max(1, int(math.floor(units * width + 0.5)))


@contextlib.contextmanager
def dense_forward(networks: Sequence[tf.keras.layers.Layer]):
    """Within the block (while tracing), every `CompressedDense` of
    `networks` computes with its dense kernel (see
    `CompressedDense.dense_forward`)."""
    with contextlib.ExitStack() as stack:
        for network in networks:
            for layer in masked_layers(network):
                if isinstance(layer, CompressedDense):
                    stack.enter_context(layer.dense_forward())
        yield


def _reachable_variables(module: tf.Module) -> List[tf.Variable]:
    """Every variable a checkpoint of `module` would hold, those of random
    generators included (which `module.variables` leaves out)."""
    return [item for item in tf.train.TrackableView(module).descendants()
            if isinstance(item, tf.Variable)]


def compress_network(network: tf.keras.layers.Layer,
                     rebuild: Callable[[List[np.ndarray]],
                                       tf.keras.layers.Layer],
                     input_spec) -> tf.keras.layers.Layer:
    """The 'sparse'-execution twin of a built masked network.

    Args:
        network: built, with its masks drawn (`init_masks`).
        rebuild: builds the same network with `wrap_all_layers(...,
            execution='sparse', masks=masks)`, given the masks of its
            `MaskedLayer`s in forward order.
        input_spec: the network's input spec (for `create_variables`).

    Returns:
        The twin: each `MaskedLayer` a `CompressedDense` holding its active
        weights, every other variable copied.
    """
    old_layers = kernel_layers(network)
    before = {variable.ref(): variable.numpy()
              for variable in _reachable_variables(network)}
    twin = rebuild([layer.mask.numpy() for layer in old_layers
                    if isinstance(layer, MaskedLayer)])
    twin.create_variables(input_spec)
    # Building the twin ran it once: state it shares with the network (ANF's
    # noise stream) goes back to where it was, as if the twin were the
    # network built once.
    for variable in _reachable_variables(twin):
        if variable.ref() in before:
            variable.assign(before[variable.ref()])
    new_layers = kernel_layers(twin)
    if len(new_layers) != len(old_layers):
        raise ValueError(f'{network.name}: its sparse-execution twin has '
                         f'{len(new_layers)} kernel layers, not '
                         f'{len(old_layers)}.')
    for old, new in zip(old_layers, new_layers):
        if isinstance(new, CompressedDense):
            inner = old.layer
            new.set_weights_from(old.kernel.numpy(),
                                 inner.bias.numpy() if inner.use_bias
                                 else None)
        else:
            for source, target in zip(old.weights, new.weights):
                target.assign(source)

    def others(net, layers):
        inside = {variable.ref() for layer in layers
                  for variable in layer.weights}
        return [v for v in net.variables if v.ref() not in inside]

    for source, target in zip(others(network, old_layers),
                              others(twin, new_layers)):
        if source.shape != target.shape:
            raise ValueError(f'{network.name}: cannot copy {source.name} '
                             f'{source.shape} to {target.name} '
                             f'{target.shape}.')
        target.assign(source)
    return twin
