"""Widths at a fixed parameter budget.

Graesser et al.'s parameter-matched dense baseline: the dense width whose
parameter count (kernels and biases) equals the active count of a sparse
configuration (its active kernel weights plus every bias), network by
network.
"""

from typing import Optional, Sequence, Tuple

from rigl import sparse_utils
from rigl.rl.tfagents import sparse_layers


def layer_shapes(sizes: Sequence[int], width: float) -> list:
    """Kernel shapes of an MLP [input, hidden..., output] with the hidden
    sizes scaled by `width` (as the network builders scale them)."""
    units = ([sizes[0]] + [sparse_layers.num_units(size, width)
                           for size in sizes[1:-1]] + [sizes[-1]])
    return list(zip(units[:-1], units[1:]))


def parameter_count(sizes: Sequence[int], width: float,
                    sparsities: Optional[Sequence[float]] = None) -> float:
    """Kernel weights (times their density) plus biases."""
    shapes = layer_shapes(sizes, width)
    sparsities = sparsities or [0.0] * len(shapes)
    return sum((1.0 - s) * n_in * n_out + n_out
               for (n_in, n_out), s in zip(shapes, sparsities))


def active_count(sizes: Sequence[int], width: float, method,
                 group: str) -> float:
    """The active parameters of `group`'s network under a sparse method."""
    shapes = layer_shapes(sizes, width)
    dense = [] if method.sparse_output_layer else [len(shapes) - 1]
    sparsities = sparse_utils.get_sparsities(
        shapes, method.distribution, method.sparsity_of(group),
        dense_layers=dense, input_layer_sparsity=method.input_layer_sparsity,
        erk_power_scale=method.erk_power_scale, closeness=method.closeness)
    return parameter_count(sizes, width, sparsities)


def matched_dense_width(sizes: Sequence[int], method, group: str,
                        width: float = 1.0) -> Tuple[float, float, float]:
    """The dense width whose parameter count is closest to the active count
    of `group`'s sparse network at `width`.

    Returns:
        (dense width, its parameter count, the sparse active count).
    """
    target = active_count(sizes, width, method, group)
    first = sizes[1]
    best = None
    for units in range(1, sparse_layers.num_units(first, width) + 1):
        candidate = units / first
        count = parameter_count(sizes, candidate)
        if best is None or abs(count - target) < abs(best[1] - target):
            best = (candidate, count)
    return best[0], best[1], target
