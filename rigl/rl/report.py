r"""Aggregate a study: IQM and stratified bootstrap CIs, a table and figures.

  python -m rigl.rl.report --root_dir=ROOT

Reads the `results.jsonl` and `final_metric.json` of every run under ROOT
(any depth; `run.json` only to find grid dimensions the metadata does not
name) and writes ROOT/report/: `summary.csv`, `report.md` and its figures.
Runs are grouped by every dimension but the seed: the metadata in their rows
(algorithm, env_name, method, sparsity, ...) plus any config value that
differs between runs of otherwise equal metadata (e.g. `train_eval.width`).
A group's score is each finished seed's `final_return` (the mean eval return
over the last evals); runs without `final_metric.json` are in progress: they
appear in the learning curves and are marked, but not in final scores.
`ROOT/study_plan.json` (written by the sweep) names every planned run, so
seeds that never started make their group partial, and groups none of whose
seeds started are listed.
"""

import ast
import csv
import dataclasses
import json
import math
import os
import sys
import textwrap
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import matplotlib

matplotlib.use('Agg')  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rliable import library as rly  # noqa: E402
from rliable import metrics  # noqa: E402
import scipy.stats  # noqa: E402

from rigl.rl.layout import (  # noqa: E402
    FINAL_METRIC_FILE, REPORT_DIR, RESULTS_FILE, RUN_FILE,
    STUDY_PLAN_FILE as PLAN_FILE)
# Metadata that identifies a group (every results row carries it); `seed` and
# `config_hash` identify a run within its group.
METADATA_DIMS = ('algorithm', 'env_name', 'method', 'sparsity',
                 'noise_fraction', 'sparsity_distribution', 'update_alg')
RUN_ONLY = ('seed', 'config_hash')
IGNORED_SETTINGS = ('train_eval.seed',)
METHOD_COLORS = {'dense': 'black', 'static': 'tab:blue', 'set': 'tab:orange',
                 'rigl': 'tab:green', 'prune': 'tab:red'}
OTHER_COLORS = ('tab:purple', 'tab:brown', 'tab:pink', 'tab:olive',
                'tab:cyan', 'tab:gray')
FIGURES = {
    'learning_curves': 'Learning curves',
    'final_vs_sparsity': 'Final score against sparsity',
    'performance_profiles': 'Performance profiles',
    'score_vs_flops': 'Final score against training FLOPs',
    'anf_connectivity': 'ANF input connectivity',
}

FLAGS = flags.FLAGS


# Aggregation (pure functions) ---------------------------------------------

def iqm(scores: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from
    each end, as rliable's `aggregate_iqm`)."""
    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=float)))


def bootstrap(matrix: np.ndarray, func: Callable[[np.ndarray], np.ndarray],
              reps: int, seed: int = 0, size: float = 0.95
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rliable's stratified bootstrap percentile CI of `func(matrix)`.

    `matrix` is (runs, columns, ...): runs are resampled with replacement
    independently in every column (rliable's strata), so independent groups
    with equally many runs can share one call, one group per column.
    rliable draws its indices from numpy's global generator: it is seeded
    here and restored after, so a report is reproducible.

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
    """IQM over runs (axis 0) of every column: rliable's `aggregate_iqm` of
    each column alone."""
    return scipy.stats.trim_mean(matrix.reshape(matrix.shape[0], -1), 0.25,
                                 axis=0)


def iqm_intervals(score_lists: Sequence[Sequence[float]], reps: int = 2000,
                  seed: int = 0) -> List[Tuple[float, float, float]]:
    """(IQM, 95% CI low, high) of each group's scores (one per seed)."""
    results: List[Tuple[float, float, float]] = [
        (math.nan, math.nan, math.nan)] * len(score_lists)
    by_size: Dict[int, List[int]] = {}
    for i, scores in enumerate(score_lists):
        if len(scores):
            by_size.setdefault(len(scores), []).append(i)
    for size, indices in sorted(by_size.items()):
        matrix = np.array([score_lists[i] for i in indices], dtype=float).T
        point, low, high = bootstrap(matrix, _column_iqm, reps, seed)
        for j, i in enumerate(indices):
            results[i] = (float(point[j]), float(low[j]), float(high[j]))
    return results


def aggregate(scores: Sequence[float], reference_iqm: Optional[float] = None,
              interval: Optional[Tuple[float, float, float]] = None,
              reps: int = 2000, seed: int = 0) -> Dict[str, float]:
    """Summary statistics of one group's final scores.

    Args:
        scores: one final score per seed.
        reference_iqm: the reference group's IQM; scores are normalised by
            it when it is > 0 (returns as on MuJoCo), else NaN.
        interval: the (IQM, low, high) if already computed (`iqm_intervals`).
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
    """IQM over runs at each x (e.g. env steps) with a stratified bootstrap
    95% CI, for several groups at once; at each x only the runs that reached
    it count.

    Args:
        curve_sets: per group, one {x: y} per run.

    Returns:
        Per group, (xs, iqm, low, high) arrays sorted by x.
    """
    columns, owners = [], []
    for index, curves in enumerate(curve_sets):
        for x in sorted({x for curve in curves for x in curve}):
            columns.append([curve[x] for curve in curves if x in curve])
            owners.append((index, x))
    # rliable resamples every column on its own, so one call does all.
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
    """`curve_intervals` of one group: (xs, iqm, low, high)."""
    return curve_intervals([curves], reps, seed)[0]


def performance_profiles(score_lists: Sequence[np.ndarray], taus: np.ndarray,
                         reps: int = 2000, seed: int = 0
                         ) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Score distributions (rliable's performance profiles): the fraction of
    runs with score > tau at each tau, with 95% bootstrap bands.

    Returns:
        (profile, low, high) per group, each shaped like `taus`.
    """
    results = [None] * len(score_lists)
    by_size: Dict[int, List[int]] = {}
    for i, scores in enumerate(score_lists):
        by_size.setdefault(len(scores), []).append(i)

    def profile(matrix):  # (runs, groups) -> (groups * taus,)
        return (matrix[:, :, None] > taus).mean(axis=0).ravel()

    for size, indices in by_size.items():
        matrix = np.array([score_lists[i] for i in indices], dtype=float).T
        point, low, high = (a.reshape(len(indices), len(taus)) for a in
                            bootstrap(matrix, profile, reps, seed))
        for j, i in enumerate(indices):
            results[i] = (point[j], low[j], high[j])
    return results


# Reading runs -------------------------------------------------------------

@dataclasses.dataclass
class RunData:
    """One run's rows, final metric and (optional) config."""
    path: str
    rows: List[Dict]
    final: Optional[Dict]
    settings: Dict[str, Any]
    dims: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.final is not None

    @property
    def metadata(self) -> Dict:
        return self.final if self.final is not None else self.rows[-1]

    @property
    def seed(self) -> Any:
        return self.metadata.get('seed')


def _read_rows(path: str) -> List[Dict]:
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a damaged line: the run's own reader drops it too
    return rows


def _read_final(path: str, log: Callable[[str], None]) -> Optional[Dict]:
    """A run's final metric, or None (with a warning line) when the file
    cannot be read or has no numeric `final_return`."""
    try:
        with open(path) as f:
            final = json.load(f)
    except (OSError, ValueError) as error:
        log(f'warning: {path} cannot be read ({error}); the run counts as '
            'in progress.')
        return None
    value = final.get('final_return') if isinstance(final, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        log(f'warning: {path} has no numeric final_return (got {value!r}); '
            'the run counts as in progress.')
        return None
    return final


def read_runs(root_dir: str,
              log: Callable[[str], None] = print) -> List[RunData]:
    """Every run directory under `root_dir` with results (report/ aside);
    `log` gets a warning line for each unreadable final metric."""
    runs = []
    for directory, subdirs, names in os.walk(root_dir):
        subdirs[:] = sorted(d for d in subdirs if not (
            directory == root_dir and d == REPORT_DIR))
        if RESULTS_FILE not in names and FINAL_METRIC_FILE not in names:
            continue
        rows = (_read_rows(os.path.join(directory, RESULTS_FILE))
                if RESULTS_FILE in names else [])
        final = None
        if FINAL_METRIC_FILE in names:
            final = _read_final(os.path.join(directory, FINAL_METRIC_FILE),
                                log)
        if not rows and final is None:
            continue
        settings = {}
        if RUN_FILE in names:
            try:
                with open(os.path.join(directory, RUN_FILE)) as f:
                    config = json.load(f).get('config', {})
                settings = config.get('settings', {})
            except (OSError, ValueError):
                settings = {}
        runs.append(RunData(os.path.relpath(directory, root_dir), rows, final,
                            settings))
    return runs


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(
        value, (list, dict)) else value


def assign_dims(runs: Sequence[RunData]) -> List[str]:
    """Sets each run's group dimensions; returns their names in order.

    The dimensions are the metadata fields plus each config setting (from
    run.json) whose value differs between runs of equal metadata that
    record it (a setting some runs do not record, e.g. written by another
    version of the suite, does not split them).
    """
    for run in runs:
        run.dims = {d: run.metadata.get(d) for d in METADATA_DIMS}
    by_metadata: Dict[Tuple, List[RunData]] = {}
    for run in runs:
        by_metadata.setdefault(tuple(_hashable(v) for v in run.dims.values()),
                               []).append(run)
    keys = sorted({k for run in runs for k in run.settings} -
                  set(IGNORED_SETTINGS))
    extra = [key for key in keys if any(
        len({_hashable(r.settings[key]) for r in members
             if key in r.settings}) > 1
        for members in by_metadata.values())]
    for run in runs:
        for key in extra:
            run.dims[key] = run.settings.get(key)
    return list(METADATA_DIMS) + extra


@dataclasses.dataclass
class Group:
    """Runs that differ only in their seed."""
    dims: Dict[str, Any]
    runs: List[RunData]
    label: str = ''
    reference: Optional['Group'] = None
    stats: Dict[str, float] = dataclasses.field(default_factory=dict)
    not_started: int = 0  # planned seeds without any results yet

    @property
    def key(self) -> Tuple:
        return tuple(_hashable(v) for v in self.dims.values())

    @property
    def finished_runs(self) -> List[RunData]:
        return [r for r in self.runs if r.finished]

    @property
    def in_progress(self) -> int:
        return len(self.runs) - len(self.finished_runs)

    @property
    def status(self) -> str:
        if not self.in_progress and not self.not_started:
            return 'complete'
        return ('partial' if self.finished_runs else 'in progress')

    def stats_ready(self) -> bool:
        return bool(self.finished_runs)

    def scores(self) -> np.ndarray:
        return np.array([r.final['final_return'] for r in self.finished_runs],
                        dtype=float)

    @property
    def method(self) -> Any:
        return self.dims.get('method')

    @property
    def is_dense(self) -> bool:
        return self.method == 'dense'


def make_groups(runs: Sequence[RunData]) -> List[Group]:
    """Groups runs by every dimension but the seed, with readable labels."""
    names = assign_dims(runs)
    groups: Dict[Tuple, Group] = {}
    for run in runs:
        group = Group({d: run.dims.get(d) for d in names}, [])
        groups.setdefault(group.key, group).runs.append(run)
    result = sorted(groups.values(), key=_sort_key)
    labels = label_dims(result)
    for group in result:
        group.label = describe(group, labels) or 'all runs'
    return result


def read_plan(root_dir: str) -> List[Dict]:
    """The planned runs of ROOT/study_plan.json ([] without one)."""
    try:
        with open(os.path.join(root_dir, PLAN_FILE)) as f:
            return [entry for entry in json.load(f)['runs']
                    if isinstance(entry, dict) and 'dir' in entry]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def attach_plan(groups: Sequence[Group], plan: Sequence[Dict]) -> List[str]:
    """Counts each group's planned seeds that have no results yet (a
    planned run belongs to the group of its sibling seeds: same parent
    directory); returns the planned group directories with no run at all."""
    started = {run.path for group in groups for run in group.runs}
    group_of = {os.path.dirname(run.path): group
                for group in groups for run in group.runs}
    unstarted_groups: Dict[str, int] = {}
    for entry in plan:
        path = os.path.normpath(entry['dir'])
        if path in started:
            continue
        parent = os.path.dirname(path)
        if parent in group_of:
            group_of[parent].not_started += 1
        else:
            unstarted_groups[parent] = unstarted_groups.get(parent, 0) + 1
    return [f'{name} ({count} seeds)' if count > 1 else name
            for name, count in sorted(unstarted_groups.items())]


def describe(group: 'Group', dims: Sequence[str]) -> str:
    """'HalfCheetah-v5, rigl, 90% sparse' (dense groups show no sparsity)."""
    return ', '.join(_format_dim(d, group.dims[d]) for d in dims
                     if not (d == 'sparsity' and group.is_dense))


def _sort_key(group: Group) -> Tuple:
    methods = list(METHOD_COLORS)
    method = group.method
    return (str(group.dims.get('algorithm')), str(group.dims.get('env_name')),
            methods.index(method) if method in methods else len(methods),
            str(method), float(group.dims.get('sparsity') or 0.0),
            json.dumps({k: _hashable(v) for k, v in group.dims.items()},
                       sort_keys=True, default=str))


def _determined(dim: str, by: Sequence[str], groups: Sequence[Group]) -> bool:
    seen: Dict[Tuple, Any] = {}
    for group in groups:
        key = tuple(_hashable(group.dims.get(d)) for d in by)
        value = _hashable(group.dims.get(dim))
        if seen.setdefault(key, value) != value:
            return False
    return True


def label_dims(groups: Sequence[Group], exclude: Sequence[str] = (),
               within: Sequence[str] = ()) -> List[str]:
    """The dimensions that tell `groups` apart among those with equal
    `within` dimensions, skipping any that the ones before it determine
    (e.g. update_alg follows from method)."""
    chosen: List[str] = []
    for dim in groups[0].dims if groups else ():
        if dim not in exclude and not _determined(
                dim, list(within) + chosen, groups):
            chosen.append(dim)
    return chosen


def sparsity_text(value: float) -> str:
    return f'{value * 100:.4g}% sparse'


def _format_dim(dim: str, value: Any) -> str:
    if dim in ('method', 'env_name'):
        return str(value)
    if dim == 'algorithm':
        return str(value).upper()
    if dim == 'noise_fraction' and isinstance(value, (int, float)):
        return f'{value * 100:.4g}% noise'
    if dim == 'sparsity' and isinstance(value, (int, float)):
        return sparsity_text(value)
    return f'{dim.split(".")[-1]}={value}'


def parse_reference(text: str) -> Dict[str, str]:
    """'method=dense,width=1.0' -> {'method': 'dense', 'width': '1.0'}."""
    result = {}
    for part in filter(None, (p.strip() for p in text.split(','))):
        name, sep, value = part.partition('=')
        if not sep:
            raise ValueError(f'--reference: {part!r} is not DIM=VALUE.')
        result[name.strip()] = value.strip()
    return result


def _matches(group: Group, dim: str, wanted: str) -> bool:
    keys = [k for k in group.dims if k == dim or k.split('.')[-1] == dim]
    if not keys:
        raise ValueError(f'--reference: no dimension {dim!r}; dimensions: '
                         f'{", ".join(group.dims)}.')
    value = group.dims[keys[0]]
    if str(value) == wanted:
        return True
    try:
        return value == ast.literal_eval(wanted)
    except (ValueError, SyntaxError):
        return False


def resolve_match(groups: Sequence[Group], match: Sequence[str]
                  ) -> List[str]:
    """The dimension names `match` gives (a name or its last component,
    as --reference takes them).

    Raises:
        ValueError: for a name that is no dimension, naming the allowed.
    """
    dims = list(groups[0].dims) if groups else []
    resolved = []
    for dim in match:
        keys = [k for k in dims if k == dim] or [
            k for k in dims if k.split('.')[-1] == dim]
        if not keys:
            raise ValueError(f'--match: no dimension {dim!r}; allowed: '
                             f'{", ".join(dims)}.')
        resolved.append(keys[0])
    return resolved


def assign_references(groups: Sequence[Group], reference: Dict[str, str],
                      match: Sequence[str]) -> None:
    """Each group's reference: the group that matches `reference`, has the
    same `match` dimensions, and agrees with it on the most other ones."""
    match = resolve_match(groups, match)
    candidates = [g for g in groups
                  if all(_matches(g, d, v) for d, v in reference.items())]
    for group in groups:
        same = [c for c in candidates
                if all(c.dims.get(d) == group.dims.get(d) for d in match)]
        if not same:
            continue
        agreement = [sum(c.dims.get(d) == group.dims.get(d)
                         for d in group.dims) for c in same]
        best = [c for c, a in zip(same, agreement) if a == max(agreement)]
        if len(best) > 1:
            raise ValueError(
                f'group {group.label!r} has {len(best)} reference groups ('
                f'{"; ".join(c.label for c in best)}); name one with '
                '--reference, e.g. --reference=method=dense,width=1.0.')
        group.reference = best[0]


def compute_stats(groups: Sequence[Group], reps: int, seed: int = 0) -> None:
    """Fills each group's `stats` (one bootstrap for all groups)."""
    intervals = iqm_intervals([g.scores() for g in groups], reps, seed)
    iqms = {id(g): interval[0] for g, interval in zip(groups, intervals)}
    for group, interval in zip(groups, intervals):
        ref = group.reference
        reference_iqm = (iqms[id(ref)] if ref is not None and ref.stats_ready()
                         else None)
        group.stats = aggregate(group.scores(), reference_iqm, interval)


# Tables -------------------------------------------------------------------

def _final_train_flops(group: Group) -> float:
    values = [r.rows[-1].get('train_flops') for r in group.finished_runs
              if r.rows and r.rows[-1].get('train_flops') is not None]
    return float(np.median(values)) if values else float('nan')


def write_summary(groups: Sequence[Group], path: str) -> List[Dict]:
    """summary.csv: one row per group."""
    dims = list(groups[0].dims) if groups else []
    columns = (['group'] + dims + ['n_seeds', 'n_in_progress',
               'n_not_started', 'status',
               'mean', 'iqm', 'iqm_ci_low', 'iqm_ci_high', 'optimality_gap',
               'reference', 'iqm_normalized', 'iqm_normalized_ci_low',
               'iqm_normalized_ci_high', 'train_flops'])
    rows = []
    for group in groups:
        s = group.stats
        row = dict(group=group.label, **{d: group.dims[d] for d in dims},
                   n_seeds=s['n'], n_in_progress=group.in_progress,
                   n_not_started=group.not_started, status=group.status, mean=s['mean'], iqm=s['iqm'],
                   iqm_ci_low=s['iqm_low'], iqm_ci_high=s['iqm_high'],
                   optimality_gap=s['optimality_gap'],
                   reference=group.reference.label if group.reference else '',
                   iqm_normalized=s['iqm_norm'],
                   iqm_normalized_ci_low=s['iqm_norm_low'],
                   iqm_normalized_ci_high=s['iqm_norm_high'],
                   train_flops=_final_train_flops(group))
        rows.append(row)
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ('' if isinstance(v, float) and math.isnan(v)
                                 else v) for k, v in row.items()})
    return rows


def _num(value: float, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return '–'
    return f'{value:,.{digits}f}'


def _with_ci(point: float, low: float, high: float, digits: int) -> str:
    if math.isnan(point):
        return '–'
    return (f'{_num(point, digits)} [{_num(low, digits)}, '
            f'{_num(high, digits)}]')


def markdown_table(groups: Sequence[Group]) -> str:
    """The summary as a markdown table."""
    lines = ['| group | seeds | mean | IQM [95% CI] | IQM / reference '
             '[95% CI] | optimality gap | status |',
             '|---|---:|---:|---|---|---:|---|']
    for g in groups:
        s = g.stats
        seeds = f'{s["n"]}' + (f' (+{g.in_progress} running)'
                               if g.in_progress else '') + (
            f' (+{g.not_started} not started)' if g.not_started else '')
        raw = _with_ci(s['iqm'], s['iqm_low'], s['iqm_high'], 1)
        normalised = _with_ci(s['iqm_norm'], s['iqm_norm_low'],
                              s['iqm_norm_high'], 2)
        lines.append(
            f'| {g.label} | {seeds} | {_num(s["mean"])} | {raw} | '
            f'{normalised} | {_num(s["optimality_gap"], 2)} | {g.status} |')
    return '\n'.join(lines)


# Figures ------------------------------------------------------------------

class Style:
    """One name and colour per line across all figures: the group's label
    without the panel's dimensions (algorithm, env, sparsity), e.g. 'rigl'."""

    PANEL_DIMS = ('algorithm', 'env_name', 'noise_fraction', 'sparsity')

    def __init__(self, groups: Sequence[Group]):
        dims = label_dims(groups, exclude=self.PANEL_DIMS,
                          within=self.PANEL_DIMS)
        self._names = {g.label: describe(g, dims) or str(g.method)
                       for g in groups}
        extra = iter(OTHER_COLORS)
        self._colors: Dict[str, Any] = {}
        for name in dict.fromkeys(self._names.values()):
            if name in METHOD_COLORS:
                self._colors[name] = METHOD_COLORS[name]
            else:
                self._colors[name] = next(extra, None) or plt.get_cmap(
                    'tab20')(len(self._colors) % 20)

    def name(self, group: Group) -> str:
        return self._names[group.label]

    def color(self, group: Group) -> Any:
        return self._colors[self._names[group.label]]

    def legend(self, group: Group, sparsity: bool = False) -> str:
        """The line's name (with its sparsity if asked), marked if partial."""
        text = self.name(group)
        if sparsity and not group.is_dense and isinstance(
                group.dims.get('sparsity'), (int, float)):
            text += f', {sparsity_text(group.dims["sparsity"])}'
        if group.status != 'complete':
            text += (f' ({group.status}: {len(group.finished_runs)}/'
                     f'{len(group.runs)} done)')
        return text


def _panel_key(group: Group) -> Tuple:
    """The task: algorithm, environment and ANF noise fraction."""
    return (group.dims.get('algorithm'), group.dims.get('env_name'),
            group.dims.get('noise_fraction'))


def _task_title(key: Tuple) -> str:
    algorithm, env, noise = key
    title = f'{str(algorithm).upper()} on {env}'
    if isinstance(noise, (int, float)) and noise:
        title += f' + {noise * 100:.4g}% noise'
    return title


def _panels(groups: Sequence[Group], by_sparsity: bool
            ) -> Dict[Tuple, List[Group]]:
    """Groups per (algorithm, env[, sparsity]) panel; dense groups are the
    reference in every sparsity panel of their task."""
    panels: Dict[Tuple, List[Group]] = {}
    tasks: Dict[Tuple, List[Group]] = {}
    for g in groups:
        tasks.setdefault(_panel_key(g), []).append(g)
    for task, members in tasks.items():
        sparse = [g for g in members if not g.is_dense]
        levels = sorted({g.dims.get('sparsity') for g in sparse},
                        key=lambda s: (s is None, s or 0)
                        ) if by_sparsity else []
        if not levels:
            panels[task + (None,)] = members
            continue
        for level in levels:
            panels[task + (level,)] = [g for g in members if g.is_dense] + [
                g for g in sparse if g.dims.get('sparsity') == level]
    return panels


def _grid(count: int, columns: int, width: float = 4.6, height: float = 3.4):
    rows = max(1, math.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(
        max(width * columns, 6.4), height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _steps_formatter(ax) -> None:
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
        lambda x, _: f'{x / 1e6:g}M' if x >= 1e6 else
        f'{x / 1e3:g}k' if x >= 1e3 else f'{x:g}'))


def _save(fig, path: str, title: str) -> str:
    """One legend for the figure (lines keep their names across panels),
    in a band added below the panels; then the title and the file."""
    entries: Dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    width, height = fig.get_size_inches()
    longest = max((len(label) for label in entries), default=0)
    columns = max(1, min(len(entries), int(width // (0.07 * longest + 0.7))))
    band = 0.25 * math.ceil(len(entries) / columns) + 0.2 if entries else 0.0
    title = textwrap.fill(title, int(width * 9))
    top = 0.22 * title.count('\n')  # tight_layout makes room for one line
    fig.set_size_inches(width, height + band + top)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc='lower center',
                   ncol=columns, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, band / (height + band + top), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_learning_curves(groups: Sequence[Group], path: str, reps: int,
                         style: Style) -> str:
    with_rows = [g for g in groups if any(r.rows for r in g.runs)]
    computed = dict(zip((g.label for g in with_rows), curve_intervals(
        [[{row['env_steps']: row['return_mean'] for row in r.rows}
          for r in g.runs if r.rows] for g in with_rows], reps)))
    panels = _panels(groups, by_sparsity=True)
    columns = min(len(panels), max(1, len({k[3] for k in panels})), 5)
    fig, axes = _grid(len(panels), columns)
    for ax, (key, members) in zip(axes, panels.items()):
        for g in members:
            if g.label not in computed:
                continue
            xs, mid, low, high = computed[g.label]
            color = style.color(g)
            ax.plot(xs, mid, color=color, lw=1.6,
                    ls='--' if g.is_dense and key[3] is not None else '-',
                    label=style.legend(g))
            ax.fill_between(xs, low, high, color=color, alpha=0.18, lw=0)
        title = _task_title(key[:3])
        if key[3] is not None:
            title += f', {sparsity_text(key[3])}'
        ax.set_title(title, fontsize=10)
        ax.set_xlabel('environment steps')
        ax.set_ylabel('eval return (IQM over seeds)')
        _steps_formatter(ax)
        ax.grid(alpha=0.3)
    return _save(fig, path, 'Learning curves: IQM of eval returns over seeds, '
                 'shaded 95% bootstrap CI')


def _lines(groups: Sequence[Group], style: Style) -> Dict[str, List[Group]]:
    """Groups per line (one line across sparsities), keyed by legend text."""
    by_name: Dict[str, List[Group]] = {}
    for g in groups:
        by_name.setdefault(style.name(g), []).append(g)
    lines = {}
    for name, line in by_name.items():
        partial = [sparsity_text(g.dims['sparsity']) for g in line
                   if g.status != 'complete' and not g.is_dense]
        if any(g.status != 'complete' for g in line):
            where = f' at {", ".join(partial)}' if partial else ''
            name += f' (partial{where})'
        lines[name] = line
    return lines


def _normalised_panel(members: Sequence[Group]) -> bool:
    return all(not math.isnan(g.stats['iqm_norm']) for g in members
               if g.stats['n'])


def plot_final_vs_sparsity(groups: Sequence[Group], path: str,
                           style: Style) -> str:
    tasks: Dict[Tuple, List[Group]] = {}
    for g in groups:
        if g.stats['n']:
            tasks.setdefault(_panel_key(g), []).append(g)
    fig, axes = _grid(max(1, len(tasks)), min(3, max(1, len(tasks))),
                      width=5.2, height=3.8)
    for ax, (task, members) in zip(axes, tasks.items()):
        normalised = _normalised_panel(members)
        low_key, mid_key, high_key = (('iqm_norm_low', 'iqm_norm',
                                       'iqm_norm_high') if normalised else
                                      ('iqm_low', 'iqm', 'iqm_high'))
        sparse = [g for g in members if not g.is_dense]
        levels = sorted({g.dims.get('sparsity') for g in sparse
                         if g.dims.get('sparsity') is not None})
        position = {s: i for i, s in enumerate(levels)}
        for dense in [g for g in members if g.is_dense]:
            s = dense.stats
            ax.axhline(s[mid_key], color='black', ls='--', lw=1.2,
                       label=style.legend(dense) + ' (reference)'
                       if dense in [g.reference for g in sparse] else
                       style.legend(dense))
            ax.axhspan(s[low_key], s[high_key], color='black', alpha=0.08,
                       lw=0)
        lines = _lines(sparse, style)
        count = max(1, len(lines))
        for index, (name, line) in enumerate(lines.items()):
            line = [g for g in line if g.dims.get('sparsity') in position]
            line.sort(key=lambda g: g.dims['sparsity'])
            offset = (index - (count - 1) / 2) * 0.08
            xs = np.array([position[g.dims['sparsity']] for g in line]) + offset
            mids = np.array([g.stats[mid_key] for g in line])
            errs = np.array(
                [[g.stats[mid_key] - g.stats[low_key] for g in line],
                 [g.stats[high_key] - g.stats[mid_key] for g in line]])
            ax.errorbar(xs, mids, yerr=errs, color=style.color(line[0]),
                        marker='o', ms=4, lw=1.4, capsize=3, label=name)
        ax.set_xticks(range(len(levels)))
        ax.set_xticklabels([f'{s:g}' for s in levels])
        ax.set_xlim(-0.5, max(0.5, len(levels) - 0.5))
        ax.set_xlabel('sparsity (fraction of weights removed)')
        ax.set_ylabel('final return IQM / reference IQM' if normalised else
                      'final return, IQM over seeds\n(no positive reference '
                      'to normalise by)')
        ax.set_title(_task_title(task), fontsize=10)
        ax.grid(alpha=0.3)
    return _save(fig, path, 'Final score against sparsity: IQM over seeds, '
                 'bars and band = 95% bootstrap CI')


def plot_performance_profiles(groups: Sequence[Group], path: str, reps: int,
                              style: Style) -> str:
    panels = {k: [g for g in v if g.stats['n']]
              for k, v in _panels(groups, by_sparsity=True).items()}
    panels = {k: v for k, v in panels.items() if v}
    columns = min(len(panels), max(1, len({k[3] for k in panels})), 5)
    fig, axes = _grid(max(1, len(panels)), max(1, columns))
    for ax, (key, members) in zip(axes, panels.items()):
        normalised = _normalised_panel(members)
        scores = {}
        for g in members:
            values = g.scores()
            if normalised:
                values = values / g.reference.stats['iqm']
            scores[g.label] = values.reshape(-1, 1)
        everything = np.concatenate(list(scores.values())).ravel()
        low, high = float(everything.min()), float(everything.max())
        if normalised:
            low, high = min(low, 0.0), max(high, 1.2)
        margin = 0.05 * (high - low or 1.0)
        taus = np.linspace(low - margin, high + margin, 81)
        profiles = dict(zip(scores, performance_profiles(
            [v.ravel() for v in scores.values()], taus, reps)))
        for g in members:
            color = style.color(g)
            profile, band_low, band_high = profiles[g.label]
            ax.plot(taus, profile, color=color, lw=1.6,
                    ls='--' if g.is_dense and key[3] is not None else '-',
                    label=style.legend(g))
            ax.fill_between(taus, band_low, band_high, color=color,
                            alpha=0.15, lw=0)
        title = _task_title(key[:3])
        if key[3] is not None:
            title += f', {sparsity_text(key[3])}'
        ax.set_title(title, fontsize=10)
        ax.set_xlabel('final return / reference IQM (τ)' if normalised else
                      'final return (τ)')
        ax.set_ylabel('fraction of runs with score > τ')
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    return _save(fig, path, 'Performance profiles (score distributions), '
                 'shaded 95% bootstrap CI')


def plot_score_vs_flops(groups: Sequence[Group], path: str,
                        style: Style) -> str:
    tasks: Dict[Tuple, List[Group]] = {}
    for g in groups:
        if g.stats['n'] and not math.isnan(_final_train_flops(g)):
            tasks.setdefault(_panel_key(g), []).append(g)
    fig, axes = _grid(max(1, len(tasks)), min(3, max(1, len(tasks))),
                      width=5.2, height=3.8)
    for ax, (task, members) in zip(axes, tasks.items()):
        normalised = _normalised_panel(members)
        keys = (('iqm_norm_low', 'iqm_norm', 'iqm_norm_high') if normalised
                else ('iqm_low', 'iqm', 'iqm_high'))
        lines = _lines(members, style)
        for name, line in lines.items():
            line.sort(key=lambda g: _final_train_flops(g))
            xs = [_final_train_flops(g) for g in line]
            mids = np.array([g.stats[keys[1]] for g in line])
            errs = np.array(
                [[g.stats[keys[1]] - g.stats[keys[0]] for g in line],
                 [g.stats[keys[2]] - g.stats[keys[1]] for g in line]])
            ax.errorbar(xs, mids, yerr=errs, color=style.color(line[0]),
                        marker='o', ms=4, lw=1.2, capsize=3, label=name)
            for g, x, y in zip(line, xs, mids):
                if not g.is_dense and g.dims.get('sparsity') is not None:
                    ax.annotate(f'{g.dims["sparsity"]:g}', (x, y), fontsize=6,
                                xytext=(3, 3), textcoords='offset points')
        ax.set_xscale('log')
        ax.set_xlabel('training FLOPs (cumulative, ideal sparse count)')
        ax.set_ylabel('final return IQM / reference IQM' if normalised else
                      'final return, IQM over seeds\n(no positive reference '
                      'to normalise by)')
        ax.set_title(_task_title(task), fontsize=10)
        ax.grid(alpha=0.3, which='both')
    return _save(fig, path, 'Final score against training FLOPs (labels: '
                 'sparsity; bars: 95% bootstrap CI)')


def _connectivity(run: RunData) -> Dict[str, Dict[str, Dict[float, float]]]:
    """{network: {'per_real_feature'|'per_noise_feature': {env_steps: v}}}."""
    result: Dict[str, Dict[str, Dict[float, float]]] = {}
    for row in run.rows:
        for name, values in (row.get('networks') or {}).items():
            for kind, value in (values.get('input_connectivity') or {}).items():
                result.setdefault(name, {}).setdefault(kind, {})[
                    row['env_steps']] = value
    return result


def has_connectivity(groups: Sequence[Group]) -> bool:
    return any(_connectivity(r) for g in groups for r in g.runs)


def plot_connectivity(groups: Sequence[Group], path: str, reps: int,
                      style: Style) -> str:
    members = [g for g in groups if any(_connectivity(r) for r in g.runs)]
    networks = sorted({n for g in members for r in g.runs
                       for n in _connectivity(r)})
    panels = [(task, net) for task in dict.fromkeys(_panel_key(g)
                                                     for g in members)
              for net in networks]
    fig, axes = _grid(len(panels), min(3, len(panels)))
    for ax, (task, network) in zip(axes, panels):
        here = [g for g in members if _panel_key(g) == task]
        for g in here:
            data = [_connectivity(r).get(network, {}) for r in g.runs]
            label = style.legend(g, sparsity=True)
            for kind, dash, word in (('per_real_feature', '-', 'real'),
                                     ('per_noise_feature', ':', 'noise')):
                curves = [d[kind] for d in data if d.get(kind)]
                if not curves:
                    continue
                xs, mid, low, high = curve_interval(curves, reps)
                ax.plot(xs, mid, ls=dash, color=style.color(g), lw=1.6,
                        label=f'{label}: {word} features')
                ax.fill_between(xs, low, high, color=style.color(g),
                                alpha=0.15, lw=0)
        ax.set_title(f'{_task_title(task)}: {network} input layer',
                     fontsize=10)
        ax.set_xlabel('environment steps')
        ax.set_ylabel('active input weights per feature')
        _steps_formatter(ax)
        ax.grid(alpha=0.3)
    return _save(fig, path, 'ANF: input-layer connectivity of real vs noise '
                 'features (IQM over seeds, 95% CI)')


# The report ---------------------------------------------------------------

def build_report(root_dir: str, reference: str = 'method=dense',
                 match: Sequence[str] = ('algorithm', 'env_name'),
                 reps: int = 10000, curve_reps: int = 2000,
                 log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Writes ROOT/report/ (summary.csv, report.md, figures).

    Returns:
        {'groups': [...], 'figures': {name: path}, 'summary': rows}.
    """
    for name, value in (('reps', reps), ('curve_reps', curve_reps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'--{name}={value}: must be a whole number >= 1 '
                             '(bootstrap replications).')
    runs = read_runs(root_dir, log)
    if not runs:
        raise ValueError(f'no runs under {root_dir} (no {RESULTS_FILE} or '
                         f'{FINAL_METRIC_FILE} found).')
    groups = make_groups(runs)
    unstarted = attach_plan(groups, read_plan(root_dir))
    assign_references(groups, parse_reference(reference), match)
    compute_stats(groups, reps)
    out = os.path.join(root_dir, REPORT_DIR)
    os.makedirs(out, exist_ok=True)
    summary = write_summary(groups, os.path.join(out, 'summary.csv'))
    style = Style(groups)
    figures: Dict[str, str] = {}
    notes: Dict[str, str] = {}
    scored = [g for g in groups if g.stats['n']]

    def figure(name: str, make: Callable[[str], str], available: bool,
               why: str) -> None:
        if not available:
            notes[name] = why
            return
        figures[name] = make(os.path.join(out, f'{name}.png'))

    figure('learning_curves', lambda p: plot_learning_curves(
        groups, p, curve_reps, style), True, '')
    figure('final_vs_sparsity', lambda p: plot_final_vs_sparsity(
        groups, p, style), bool(scored), 'no finished run yet.')
    figure('performance_profiles', lambda p: plot_performance_profiles(
        groups, p, curve_reps, style), bool(scored), 'no finished run yet.')
    figure('score_vs_flops', lambda p: plot_score_vs_flops(groups, p, style),
           any(not math.isnan(_final_train_flops(g)) for g in scored),
           'no finished run with train_flops in its rows.')
    figure('anf_connectivity', lambda p: plot_connectivity(
        groups, p, curve_reps, style), has_connectivity(groups),
        'no run has noise features (rows without '
        'networks.<name>.input_connectivity).')
    with open(os.path.join(out, 'report.md'), 'w') as f:
        f.write(report_markdown(root_dir, runs, groups, figures, notes,
                                reference, match, reps, unstarted))
    log(f'wrote {out}/: summary.csv, report.md, '
        f'{", ".join(os.path.basename(p) for p in figures.values())}')
    return {'groups': groups, 'figures': figures, 'summary': summary}


CAPTIONS = {
    'learning_curves': 'Eval return against environment steps: the IQM over '
    'seeds at each evaluation, shaded 95% stratified bootstrap CI. One panel '
    'per task and sparsity; the dense reference (dashed) is in each.',
    'final_vs_sparsity': "The paper's main figure: final score (IQM over "
    'seeds) of each method at each sparsity, divided by the reference '
    "group's IQM (dashed line at its level, band: its CI); bars: 95% CIs.",
    'performance_profiles': 'Fraction of runs whose final score exceeds τ '
    '(normalised by the reference IQM where there is a positive one), with '
    '95% bootstrap bands: a curve above another is better over the whole '
    'distribution, not only on average.',
    'score_vs_flops': 'Final score (IQM, 95% CI) against the cumulative '
    'training FLOPs an ideal sparse implementation would spend (MicroNet '
    'counting; the median over seeds); labels are sparsities.',
    'anf_connectivity': 'Mean active input-layer weights per real feature '
    '(solid) and per noise feature (dotted) over training: ANF works when '
    'noise features lose their connections.',
}


def report_markdown(root_dir: str, runs: Sequence[RunData],
                    groups: Sequence[Group], figures: Dict[str, str],
                    notes: Dict[str, str], reference: str,
                    match: Sequence[str], reps: int,
                    unstarted: Sequence[str] = ()) -> str:
    finished = sum(r.finished for r in runs)
    waiting = sum(g.not_started for g in groups)
    lines = [
        f'# Study report: {os.path.abspath(root_dir)}', '',
        f'{len(runs)} runs in {len(groups)} groups: {finished} finished, '
        f'{len(runs) - finished} in progress'
        + (f', {waiting} planned seed{"s" * (waiting != 1)} not started'
           if waiting else '')
        + '.', '',
        '**Scores.** A run\'s score is its `final_return` (mean eval return '
        'over the last evals, `final_metric.json`); runs in progress count '
        'only in the learning curves. IQM: interquartile mean over seeds '
        '(the mean of the middle 50%). CI: 95% stratified bootstrap, '
        f'percentile method, {reps:,} replications (rliable). Normalised: '
        f"divided by the reference group's IQM; reference `{reference}` at "
        f'the same {", ".join(match)}. Optimality gap: 1 − mean(min(score / '
        'reference IQM, 1)) (0: every seed at least as good as the '
        'reference).', '',
        '## Summary', '', markdown_table(groups), '']
    no_reference = [g.label for g in groups if g.reference is None]
    non_positive = sorted({g.reference.label for g in groups if g.reference
                           and g.reference.stats['n']
                           and not g.reference.stats['iqm'] > 0})
    if no_reference:
        lines += [f'No reference group for: {", ".join(no_reference)} '
                  '(not normalised).', '']
    if non_positive:
        lines += [f'Reference IQM ≤ 0 ({", ".join(non_positive)}): '
                  'normalised scores assume positive returns, so these '
                  'groups are shown raw.', '']
    for name, title in FIGURES.items():
        lines += [f'## {title}', '']
        if name in figures:
            lines += [f'![{title}]({os.path.basename(figures[name])})', '',
                      CAPTIONS[name], '']
        else:
            lines += [f'Not drawn: {notes[name]}', '']
    partial = [r for r in runs if not r.finished]
    if partial:
        lines += ['## Runs in progress (partial)', '',
                  '| run | evals | last env step | last return |',
                  '|---|---:|---:|---:|']
        for r in partial:
            last = r.rows[-1] if r.rows else {}
            lines.append(f'| {r.path} | {len(r.rows)} | '
                         f'{last.get("env_steps", 0):,} | '
                         f'{_num(last.get("return_mean", float("nan")))} |')
        lines.append('')
    if unstarted:
        lines += ['## Planned groups without results', '',
                  'In `study_plan.json` but without any results yet (not '
                  'started, or failed before the first evaluation): '
                  + ', '.join(unstarted) + '.', '']
    return '\n'.join(lines)


def define_flags() -> None:
    flags.DEFINE_string('root_dir', None, 'A study root: every run below it '
                        'is read; the report goes to ROOT/report/.')
    flags.DEFINE_string('reference', 'method=dense', 'DIM=VALUE[,...]: the '
                        'group each group is normalised by.')
    flags.DEFINE_list('match', ['algorithm', 'env_name'], 'Dimensions a '
                      'reference group must share with the group.')
    flags.DEFINE_integer('reps', 10000, 'Bootstrap replications for the '
                         'final-score CIs.')
    flags.DEFINE_integer('curve_reps', 2000, 'Bootstrap replications per '
                         'point of curves and profiles.')


def main(argv: Sequence[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # rliable logs each estimate
    try:
        if not FLAGS.root_dir:
            raise ValueError('--root_dir is required.')
        build_report(FLAGS.root_dir, FLAGS.reference, FLAGS.match, FLAGS.reps,
                     FLAGS.curve_reps)
    except (ValueError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    define_flags()
    app.run(main)
