"""A study's runs: what identifies each, and which are finished.

`expand` turns a study into its runs, groups (the grid's product) x seeds,
each in `ROOT/<axis=value,...>/seed_<k>`. A run's command record (its gin
files, the package's own relative to its root, and bindings) is kept in its
directory, so a rerun of the same study skips runs that finished with the
same command (`is_finished`) and starts the others again. `write_plan`
records every planned run for the report.
"""

import dataclasses
import itertools
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from rigl.rl.layout import (
    FINAL_METRIC_FILE, RUN_LOG_FILE as LOG_FILE,
    STUDY_PLAN_FILE as PLAN_FILE, SWEEP_COMMAND_FILE as COMMAND_FILE)
from rigl.rl.study.spec import (
    METHOD_AXIS, PACKAGE_ROOT, Study, check_study, resolve_gin_file)


@dataclasses.dataclass
class Run:
    """One training run: its directory, group name, seed and command."""
    group: str
    seed: int
    root_dir: str
    gin_files: List[str]
    bindings: List[str]
    status: str = 'to do'  # to do | running | done | failed
    started: float = 0.0
    seconds: float = 0.0
    note: str = ''
    node: str = ''  # where it runs (the Ray backend; '' locally)
    attempts: int = 0  # attempts started (the Ray backend)

    @property
    def log_path(self) -> str:
        return os.path.join(self.root_dir, LOG_FILE)

    def record(self) -> Dict:
        """What identifies the command: not the interpreter's path, and the
        package's own gin files relative to its root, so that a study rerun
        from another clone or checkout still finds its finished runs."""
        return {'gin_files': [portable_path(path) for path in self.gin_files],
                'bindings': self.bindings}


def portable_path(path: str) -> str:
    """`path` relative to the package root when it lies inside it."""
    relative = os.path.relpath(os.path.abspath(path), PACKAGE_ROOT)
    return path if relative.startswith(os.pardir) else relative


def format_value(value: Any) -> str:
    """A value as it reads in a directory name: 'rigl', 0.9, (16,16)."""
    if isinstance(value, str):
        text = value or 'empty'
    else:
        text = repr(value).replace(' ', '')
    return text.replace(os.sep, '_')


def short_names(names: Sequence[str]) -> Dict[str, str]:
    """The shortest unique dotted suffix of each axis name:
    mask_updater.update_alg -> update_alg (longer where two would clash)."""
    result = {}
    for name in names:
        parts = name.split('.')
        for size in range(1, len(parts) + 1):
            short = '.'.join(parts[-size:])
            clashes = [other for other in names if other != name and
                       '.'.join(other.split('.')[-size:]) == short]
            if not clashes:
                break
        result[name] = short
    return result


def gin_literal(value: Any) -> str:
    """A value as gin parses it (Python literal syntax)."""
    return repr(tuple(value)) if isinstance(value, list) and all(
        isinstance(v, int) for v in value) else repr(value)


def expand(study: Study, root_dir: str,
           extra_bindings: Sequence[str] = ()) -> List[Run]:
    """Every run of the study, in order: groups (grid product) x seeds."""
    check_study(study)
    axes = list(study.grid)
    if study.methods and METHOD_AXIS not in axes:
        # After the gin-binding axes, before the variables: env,method,sparsity
        first_variable = next((i for i, a in enumerate(axes) if '.' not in a),
                              len(axes))
        axes.insert(first_variable, METHOD_AXIS)
    values = dict(study.grid)
    for binding in extra_bindings:
        name = binding.split('=', 1)[0].strip()
        if name in values:
            raise ValueError(
                f'--gin_bindings={binding!r} binds {name}, a grid axis '
                f'(values {values[name]!r}): applied after the grid, '
                'it would give every group its value; drop one of the two.')
    if study.methods:
        values.setdefault(METHOD_AXIS, list(study.methods))
    shorts = short_names(axes)
    groups: Dict[str, Tuple[List[str], List[str]]] = {}
    for combination in itertools.product(*(values[a] for a in axes)):
        chosen = dict(zip(axes, combination))
        method = study.methods.get(chosen.get(METHOD_AXIS))
        spanned = [a for a in axes if a == METHOD_AXIS or '.' in a or (
            method is not None and a in method.variables())]
        name = ','.join(f'{shorts[a]}={format_value(chosen[a])}'
                        for a in spanned) or 'default'
        gin_files = list(study.gin_files)
        bindings = list(study.bindings)
        bindings += [f'{a} = {gin_literal(chosen[a])}' for a in axes
                     if '.' in a]
        if method is not None:
            gin_files += method.gin_files
            fill = {a: gin_literal(chosen[a]) for a in method.variables()}
            bindings += [b.format(**fill) for b in method.bindings]
        bindings += list(extra_bindings)
        previous = groups.get(name)
        if previous is not None and previous != (gin_files, bindings):
            raise ValueError(f'two grid points share the directory name '
                             f'{name!r}; give their values distinct '
                             'spellings.')
        groups[name] = (gin_files, bindings)
    if not groups:
        raise ValueError('the study has no runs.')
    files = {name: [resolve_gin_file(f) for f in gin_files]
             for name, (gin_files, _) in groups.items()}
    # Seed-major: every group gets seed 0 first, so a partial study already
    # compares all groups.
    return [Run(group=name, seed=seed,
                root_dir=os.path.join(root_dir, name, f'seed_{seed}'),
                gin_files=files[name],
                bindings=bindings + [f'train_eval.seed = {seed}'])
            for seed in range(study.seeds)
            for name, (_, bindings) in groups.items()]


def method_of(run_dir: str) -> Optional[str]:
    """The study method a sweep ran in `run_dir`, read back from its group
    directory's name (`expand` names it `...,method=NAME,...`).

    Args:
        run_dir: a run directory, e.g. 'method=anf_sac,noise=0.9/seed_0'
            (relative to the study root, or absolute).

    Returns:
        NAME, or None when no component of the path names a method.
    """
    for component in reversed(os.path.normpath(run_dir).split(os.sep)):
        for part in component.split(','):
            axis, sep, value = part.partition('=')
            if sep and axis == METHOD_AXIS:
                return value
    return None


def run_name(run: Run) -> str:
    """How messages name a run: `group/seed_k`."""
    return f'{run.group}/seed_{run.seed}'


def is_finished(run: Run) -> bool:
    """final_metric.json is there and the run was started with this command
    (a changed command is started again: the script then refuses it)."""
    if not os.path.exists(os.path.join(run.root_dir, FINAL_METRIC_FILE)):
        return False
    try:
        with open(os.path.join(run.root_dir, COMMAND_FILE)) as f:
            return json.load(f) == run.record()
    except (OSError, ValueError):
        return True  # run by hand: final_metric.json is all we know


def skip_finished(runs: Sequence[Run]) -> int:
    """Marks finished runs done (a rerun skips them); returns their number."""
    for run in runs:
        if is_finished(run):
            run.status = 'done'
    return sum(r.status == 'done' for r in runs)


def write_plan(root_dir: str, runs: Sequence[Run]) -> str:
    """Records the study's runs in ROOT/study_plan.json (merged with the
    runs an earlier sweep into the same root planned), atomically."""
    path = os.path.join(root_dir, PLAN_FILE)
    planned: Dict[str, Dict] = {}
    try:
        with open(path) as f:
            planned = {entry['dir']: entry for entry in json.load(f)['runs']}
    except (OSError, ValueError, KeyError, TypeError):
        planned = {}
    for run in runs:
        relative = os.path.relpath(run.root_dir, root_dir)
        planned[relative] = {'dir': relative, 'group': run.group,
                             'seed': run.seed}
    os.makedirs(root_dir, exist_ok=True)
    staging = path + '.tmp'
    with open(staging, 'w') as f:
        json.dump({'runs': list(planned.values())}, f, indent=1)
    os.replace(staging, path)
    return path
