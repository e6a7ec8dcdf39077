"""Grouping runs: runs that differ only in their seed form a group; each
group gets a readable label, a reference group to be normalised by, and
its statistics.
"""

import ast
import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rigl.rl.report import stats as stats_lib
from rigl.rl.report.runs import RunData
from rigl.rl.study.runs import method_of

# Metadata that identifies a group (every results row carries it); `seed` and
# `config_hash` identify a run within its group.
METADATA_DIMS = ('algorithm', 'env_name', 'method', 'sparsity',
                 'noise_fraction', 'sparsity_distribution', 'update_alg')
# The study's own name for a run's method (`anf_sac`, `drop_10pct`), where
# a sweep ran it; placed before `method`, which it then usually determines.
STUDY_METHOD_DIM = 'study_method'
RUN_ONLY = ('seed', 'config_hash')
IGNORED_SETTINGS = ('train_eval.seed',)
# The order of methods in tables and legends; others follow by name.
METHOD_ORDER = ('dense', 'static', 'set', 'rigl', 'prune')


def hashable(value: Any) -> Any:
    """`value`, or its JSON text if it is a list or a dict."""
    return json.dumps(value, sort_keys=True) if isinstance(
        value, (list, dict)) else value


def assign_dims(runs: Sequence[RunData]) -> List[str]:
    """Sets each run's group dimensions.

    The dimensions are the metadata fields, the study's method name where
    a sweep ran the runs (from the run directory: it names the lines as
    the study file does, e.g. 'anf_sac' for a run whose metadata says
    'set'), plus each config setting (from run.json) whose value differs
    between runs of equal metadata that record it (a setting some runs do
    not record, e.g. written by another version of the suite, does not
    split them).

    Args:
        runs: the runs; their `dims` are set.

    Returns:
        The dimension names in order.
    """
    study_methods = [method_of(run.path) for run in runs]
    names = list(METADATA_DIMS)
    if any(study_methods):
        names.insert(names.index('method'), STUDY_METHOD_DIM)
    for run, study_method in zip(runs, study_methods):
        run.dims = {d: study_method if d == STUDY_METHOD_DIM else
                    run.metadata.get(d) for d in names}
    by_metadata: Dict[Tuple, List[RunData]] = {}
    for run in runs:
        by_metadata.setdefault(tuple(hashable(v) for v in run.dims.values()),
                               []).append(run)
    keys = sorted({k for run in runs for k in run.settings} -
                  set(IGNORED_SETTINGS))
    extra = [key for key in keys if any(
        len({hashable(r.settings[key]) for r in members
             if key in r.settings}) > 1
        for members in by_metadata.values())]
    for run in runs:
        for key in extra:
            run.dims[key] = run.settings.get(key)
    return names + extra


@dataclasses.dataclass
class Group:
    """Runs that differ only in their seed.

    Attributes:
        dims: the group's value of every dimension.
        runs: its runs, finished or in progress.
        label: a readable name (set by `make_groups`).
        reference: the group it is normalised by, if any.
        stats: its statistics (`stats.aggregate`, set by `compute_stats`).
        not_started: planned seeds without any results yet.
    """
    dims: Dict[str, Any]
    runs: List[RunData]
    label: str = ''
    reference: Optional['Group'] = None
    stats: Dict[str, float] = dataclasses.field(default_factory=dict)
    not_started: int = 0

    @property
    def key(self) -> Tuple:
        """The dimensions' values, hashable."""
        return tuple(hashable(v) for v in self.dims.values())

    @property
    def finished_runs(self) -> List[RunData]:
        """The runs with a final metric."""
        return [r for r in self.runs if r.finished]

    @property
    def in_progress(self) -> int:
        """How many runs have no final metric yet."""
        return len(self.runs) - len(self.finished_runs)

    @property
    def status(self) -> str:
        """'complete', 'partial' (some seeds scored) or 'in progress'."""
        if not self.in_progress and not self.not_started:
            return 'complete'
        return ('partial' if self.finished_runs else 'in progress')

    def stats_ready(self) -> bool:
        """Whether any run has a score."""
        return bool(self.finished_runs)

    def scores(self) -> np.ndarray:
        """The finished runs' final returns."""
        return np.array([r.final['final_return'] for r in self.finished_runs],
                        dtype=float)

    @property
    def method(self) -> Any:
        """The sparse training method ('dense', 'rigl', ...)."""
        return self.dims.get('method')

    @property
    def is_dense(self) -> bool:
        """Whether the group trains dense networks."""
        return self.method == 'dense'


def final_train_flops(group: Group) -> float:
    """The median over finished seeds of the training FLOPs in their last
    row (NaN if none records them)."""
    values = [r.rows[-1].get('train_flops') for r in group.finished_runs
              if r.rows and r.rows[-1].get('train_flops') is not None]
    return float(np.median(values)) if values else float('nan')


def _sort_key(group: Group) -> Tuple:
    """Orders groups by algorithm, environment, method (`METHOD_ORDER`
    first), sparsity, then all their dimensions."""
    methods = list(METHOD_ORDER)
    method = group.method
    return (str(group.dims.get('algorithm')), str(group.dims.get('env_name')),
            methods.index(method) if method in methods else len(methods),
            str(method), float(group.dims.get('sparsity') or 0.0),
            json.dumps({k: hashable(v) for k, v in group.dims.items()},
                       sort_keys=True, default=str))


def make_groups(runs: Sequence[RunData]) -> List[Group]:
    """Groups runs by every dimension but the seed.

    Args:
        runs: the study's runs (`runs.read_runs`).

    Returns:
        The groups, sorted by algorithm, environment, method and sparsity,
        each with a label naming the dimensions that tell it apart.
    """
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


def attach_plan(groups: Sequence[Group], plan: Sequence[Dict]) -> List[str]:
    """Counts each group's planned seeds that have no results yet.

    A planned run belongs to the group of its sibling seeds (the same
    parent directory).

    Args:
        groups: the groups; their `not_started` counts are set.
        plan: the sweep's planned runs (`runs.read_plan`).

    Returns:
        The planned group directories with no run at all, with their seed
        counts when more than one.
    """
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


# Labels -------------------------------------------------------------------

def sparsity_text(value: float) -> str:
    """0.9 -> '90% sparse'."""
    return f'{value * 100:.4g}% sparse'


def group_sparsity_text(group: 'Group') -> str:
    """How sparse a group's networks are, as labels say it: '90% sparse';
    '' for dense groups; 'input layer 80% sparse' for ANF's sparse input
    layers on otherwise dense networks (the `sparsity` setting is then 0).
    """
    value = group.dims.get('sparsity')
    if group.is_dense or not isinstance(value, (int, float)):
        return ''
    if not value:
        inputs = {(r.metadata.get('sparse_method') or {}).get(
            'input_layer_sparsity') for r in group.runs}
        if len(inputs) == 1:
            input_sparsity = inputs.pop()
            if isinstance(input_sparsity, (int, float)) and input_sparsity:
                return f'input layer {sparsity_text(input_sparsity)}'
    return sparsity_text(value)


def _format_dim(dim: str, value: Any) -> str:
    """One dimension's value in a label: 'rigl', 'SAC', '90% sparse',
    'width=2.0'."""
    if dim in ('method', STUDY_METHOD_DIM, 'env_name'):
        return str(value)
    if dim == 'algorithm':
        return str(value).upper()
    if dim == 'noise_fraction' and isinstance(value, (int, float)):
        return f'{value * 100:.4g}% noise'
    if dim == 'sparsity' and isinstance(value, (int, float)):
        return sparsity_text(value)
    return f'{dim.split(".")[-1]}={value}'


def describe(group: Group, dims: Sequence[str]) -> str:
    """The group's values of `dims` as text.

    Args:
        group: the group.
        dims: the dimensions to name.

    Returns:
        E.g. 'HalfCheetah-v5, rigl, 90% sparse' (dense groups show no
        sparsity).
    """
    return ', '.join(_format_dim(d, group.dims[d]) for d in dims
                     if not (d == 'sparsity' and group.is_dense))


def _determined(dim: str, by: Sequence[str], groups: Sequence[Group]) -> bool:
    """Whether the `by` dimensions determine `dim` among `groups`."""
    seen: Dict[Tuple, Any] = {}
    for group in groups:
        key = tuple(hashable(group.dims.get(d)) for d in by)
        value = hashable(group.dims.get(dim))
        if seen.setdefault(key, value) != value:
            return False
    return True


def label_dims(groups: Sequence[Group], exclude: Sequence[str] = (),
               within: Sequence[str] = ()) -> List[str]:
    """The dimensions that tell groups apart.

    Args:
        groups: the groups.
        exclude: dimensions never chosen.
        within: only groups with equal values of these are told apart.

    Returns:
        The dimensions, in order, that tell `groups` apart among those with
        equal `within` dimensions, skipping any that the ones before it
        determine (e.g. update_alg follows from method).
    """
    chosen: List[str] = []
    for dim in groups[0].dims if groups else ():
        if dim not in exclude and not _determined(
                dim, list(within) + chosen, groups):
            chosen.append(dim)
    return chosen


# References ---------------------------------------------------------------

def parse_reference(text: str) -> Dict[str, str]:
    """Parses --reference.

    Args:
        text: e.g. 'method=dense,width=1.0'.

    Returns:
        E.g. {'method': 'dense', 'width': '1.0'}.

    Raises:
        ValueError: for a part that is not DIM=VALUE.
    """
    result = {}
    for part in filter(None, (p.strip() for p in text.split(','))):
        name, sep, value = part.partition('=')
        if not sep:
            raise ValueError(f'--reference: {part!r} is not DIM=VALUE.')
        result[name.strip()] = value.strip()
    return result


def _matches(group: Group, dim: str, wanted: str) -> bool:
    """Whether the group's `dim` (a name or its last component) is
    `wanted`, as text or as a Python literal."""
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
    """The dimension names `match` gives.

    Args:
        groups: the groups (their dimensions are the allowed names).
        match: dimension names or their last components, as --reference
            takes them.

    Returns:
        The full dimension names.

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
    """Sets each group's reference group.

    The reference is the group that matches `reference`, has the same
    `match` dimensions, and agrees with the group on the most other ones.

    Args:
        groups: the groups; their `reference` is set where one exists.
        reference: the reference's dimension values (`parse_reference`).
        match: dimensions a reference shares with the group.

    Raises:
        ValueError: for an unknown dimension, or when several groups are
            equally good references.
    """
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
    """Fills each group's `stats` (one bootstrap for all groups).

    Args:
        groups: the groups, with their references assigned.
        reps: bootstrap replications.
        seed: seed of the bootstrap.
    """
    intervals = stats_lib.iqm_intervals([g.scores() for g in groups], reps,
                                        seed)
    iqms = {id(g): interval[0] for g, interval in zip(groups, intervals)}
    for group, interval in zip(groups, intervals):
        ref = group.reference
        reference_iqm = (iqms[id(ref)] if ref is not None and ref.stats_ready()
                         else None)
        group.stats = stats_lib.aggregate(group.scores(), reference_iqm,
                                          interval)
