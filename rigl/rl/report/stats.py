"""Statistics of a study: interquartile means, stratified bootstrap CIs,
optimality gaps and performance profiles (rliable's estimators).

Pure functions of arrays of scores: nothing here knows about runs or groups.
Every bootstrap is seeded, so a report is reproducible.
"""

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from rliable import library as rly
from rliable import metrics
import scipy.stats

Interval = Tuple[float, float, float]  # (point, 95% CI low, high)


def iqm(scores: Sequence[float]) -> float:
    """The interquartile mean of `scores`.

    Args:
        scores: any number of scores.

    Returns:
        The mean of the middle 50% (25% trimmed from each end), as rliable's
        `aggregate_iqm` computes it.
    """
    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=float)))


def bootstrap(matrix: np.ndarray, func: Callable[[np.ndarray], np.ndarray],
              reps: int, seed: int = 0, size: float = 0.95
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rliable's stratified bootstrap percentile CI of `func(matrix)`.

    Runs are resampled with replacement independently in every column
    (rliable's strata), so independent groups with equally many runs can
    share one call, one group per column. rliable draws its indices from
    numpy's global generator: it is seeded here and restored afterwards.

    Args:
        matrix: scores shaped (runs, columns, ...).
        func: the statistic, from such a matrix to an array.
        reps: bootstrap replications.
        seed: seed of numpy's global generator during the bootstrap.
        size: the confidence level of the interval.

    Returns:
        (point, low, high), each shaped like `func(matrix)`.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        points, intervals = rly.get_interval_estimates(
            {'g': matrix}, func, reps=reps, confidence_interval_size=size)
    finally:
        np.random.set_state(state)
    return points['g'], intervals['g'][0], intervals['g'][1]


def _column_iqm(matrix: np.ndarray) -> np.ndarray:
    """The IQM over runs (axis 0) of each column, as rliable's
    `aggregate_iqm` of that column alone."""
    return scipy.stats.trim_mean(matrix.reshape(matrix.shape[0], -1), 0.25,
                                 axis=0)


def _by_size(score_lists: Sequence[Sequence[float]], skip_empty: bool
             ) -> Dict[int, List[int]]:
    """The indices of `score_lists` per list length (a bootstrap needs a
    rectangular matrix), in the order the lists come."""
    by_size: Dict[int, List[int]] = {}
    for i, scores in enumerate(score_lists):
        if len(scores) or not skip_empty:
            by_size.setdefault(len(scores), []).append(i)
    return by_size


def iqm_intervals(score_lists: Sequence[Sequence[float]], reps: int = 2000,
                  seed: int = 0) -> List[Interval]:
    """The IQM of each group's scores with its 95% bootstrap CI.

    Groups with equally many scores share one bootstrap call (one column
    each), so the result does not depend on the other sizes present.

    Args:
        score_lists: per group, one score per seed (may be empty).
        reps: bootstrap replications.
        seed: seed of the bootstrap.

    Returns:
        (IQM, CI low, CI high) per group; NaNs for a group without scores.
    """
    results: List[Interval] = [
        (math.nan, math.nan, math.nan)] * len(score_lists)
    for _, indices in sorted(_by_size(score_lists, True).items()):
        matrix = np.array([score_lists[i] for i in indices], dtype=float).T
        point, low, high = bootstrap(matrix, _column_iqm, reps, seed)
        for j, i in enumerate(indices):
            results[i] = (float(point[j]), float(low[j]), float(high[j]))
    return results


def aggregate(scores: Sequence[float], reference_iqm: Optional[float] = None,
              interval: Optional[Interval] = None, reps: int = 2000,
              seed: int = 0) -> Dict[str, float]:
    """Summary statistics of one group's final scores.

    Args:
        scores: one final score per seed.
        reference_iqm: the reference group's IQM; scores are normalised by
            it when it is > 0 (returns as on MuJoCo), else not (NaN).
        interval: the (IQM, low, high) if already computed
            (`iqm_intervals`).
        reps: bootstrap replications (if `interval` is None).
        seed: seed of the bootstrap.

    Returns:
        n, mean, iqm, iqm_low, iqm_high (95% CI), and normalised: iqm_norm,
        iqm_norm_low, iqm_norm_high, optimality_gap (1 - mean of
        min(score / reference, 1)).
    """
    scores = np.asarray(scores, dtype=float)
    nan = math.nan
    result = dict(n=int(scores.size), mean=nan, iqm=nan, iqm_low=nan,
                  iqm_high=nan, iqm_norm=nan, iqm_norm_low=nan,
                  iqm_norm_high=nan, optimality_gap=nan)
    if not scores.size:
        return result
    point, low, high = interval or iqm_intervals([scores], reps, seed)[0]
    result.update(mean=float(scores.mean()), iqm=point, iqm_low=low,
                  iqm_high=high)
    if reference_iqm is not None and reference_iqm > 0:
        # The IQM and its percentile CI scale with a positive constant.
        result.update(
            iqm_norm=point / reference_iqm, iqm_norm_low=low / reference_iqm,
            iqm_norm_high=high / reference_iqm,
            optimality_gap=float(metrics.aggregate_optimality_gap(
                (scores / reference_iqm).reshape(-1, 1), gamma=1)))
    return result


def curve_intervals(curve_sets: Sequence[Sequence[Dict[float, float]]],
                    reps: int = 2000, seed: int = 0
                    ) -> List[Tuple[np.ndarray, ...]]:
    """IQM curves of several groups with 95% bootstrap bands.

    At each x (e.g. env steps) only the runs that reached it count.
    rliable resamples every column on its own, so one set of calls serves
    every x of every group.

    Args:
        curve_sets: per group, one {x: y} per run.
        reps: bootstrap replications per point.
        seed: seed of the bootstrap.

    Returns:
        Per group, (xs, iqm, low, high) arrays sorted by x.
    """
    columns, owners = [], []
    for index, curves in enumerate(curve_sets):
        for x in sorted({x for curve in curves for x in curve}):
            columns.append([curve[x] for curve in curves if x in curve])
            owners.append((index, x))
    intervals = iqm_intervals(columns, reps, seed)
    results = []
    for index in range(len(curve_sets)):
        mine = [(x, v) for (i, x), v in zip(owners, intervals) if i == index]
        xs = np.array([x for x, _ in mine], dtype=float)
        values = np.array([v for _, v in mine], dtype=float).reshape(-1, 3)
        results.append((xs, values[:, 0], values[:, 1], values[:, 2]))
    return results


def curve_interval(curves: Sequence[Dict[float, float]], reps: int = 2000,
                   seed: int = 0) -> Tuple[np.ndarray, ...]:
    """`curve_intervals` of one group.

    Args:
        curves: one {x: y} per run.
        reps: bootstrap replications per point.
        seed: seed of the bootstrap.

    Returns:
        (xs, iqm, low, high) arrays sorted by x.
    """
    return curve_intervals([curves], reps, seed)[0]


def performance_profiles(score_lists: Sequence[np.ndarray], taus: np.ndarray,
                         reps: int = 2000, seed: int = 0
                         ) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Score distributions (rliable's performance profiles).

    Args:
        score_lists: per group, one score per run.
        taus: the thresholds.
        reps: bootstrap replications.
        seed: seed of the bootstrap.

    Returns:
        Per group, (profile, low, high), each shaped like `taus`: the
        fraction of runs with a score > tau, with its 95% bootstrap band.
    """
    results = [None] * len(score_lists)

    def profile(matrix: np.ndarray) -> np.ndarray:
        """(runs, groups) -> (groups * taus,) fractions above each tau."""
        return (matrix[:, :, None] > taus).mean(axis=0).ravel()

    for _, indices in _by_size(score_lists, False).items():
        matrix = np.array([score_lists[i] for i in indices], dtype=float).T
        point, low, high = (a.reshape(len(indices), len(taus)) for a in
                            bootstrap(matrix, profile, reps, seed))
        for j, i in enumerate(indices):
            results[i] = (point[j], low[j], high[j])
    return results
