"""Widths and sparsities at a fixed parameter budget.

* Graesser et al.'s parameter-matched dense baseline: the dense width whose
  parameter count (kernels and biases) equals the active count of a sparse
  configuration (its active kernel weights plus every bias), network by
  network.
* Wide sparse networks at a fixed budget (Obando-Ceron et al. 2024): the
  sparsity at which a wider network keeps the active count it has at
  width 1.
"""

import dataclasses
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


def sparsity_keeping_active_count(sizes: Sequence[int], method, group: str,
                                  width: float) -> Tuple[float, float]:
    """The sparsity of `group`'s network at `width` whose active count (kept
    kernel weights plus biases) equals the one it has at width 1 with the
    method's sparsity, found by bisection (the count falls as sparsity
    rises).

    Returns:
        (sparsity, the width-1 active count).

    Raises:
        ValueError: if no sparsity in [0, 1) keeps the count: a width below
            1, or one so wide that its biases alone exceed the budget.
    """
    budget = active_count(sizes, 1.0, method, group)

    def count(sparsity: float) -> float:
        at = dataclasses.replace(
            method, overrides=method.overrides + ((group, sparsity),))
        return active_count(sizes, width, at, group)

    low, high = 0.0, 1.0 - 1e-6
    if count(low) < budget or count(high) > budget:
        raise ValueError(
            f'train_eval.keep_active_count: no sparsity keeps {group}\'s '
            f'{budget:,.0f} active parameters at width {width:g} (it needs '
            'a width >= 1 whose biases alone fit the budget).')
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if count(middle) > budget else (low, middle)
    return high, budget
