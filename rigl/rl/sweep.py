r"""Run a study: a grid of gin bindings x seeds, several runs at once.

  python -m rigl.rl.sweep --script=sac \
    --gin_file=rigl/rl/tfagents/configs/sac_mujoco_sparse_config.gin \
    --grid="mask_updater.update_alg=['set','rigl']" --seeds=10 --workers=2 \
    --root_dir=/tmp/sparserl/study
  python -m rigl.rl.sweep --study=studies/sac_mini.toml --root_dir=ROOT

A study is a training script, base gin files and bindings, a grid and a
number of seeds. Grid axes are either gin bindings (a name with a dot:
`mask_updater.update_alg=['set','rigl']`, each value bound as is) or
variables (a name without a dot, e.g. `sparsity=[0.8,0.9]`) that bind nothing
themselves and are filled into the `{name}` placeholders of the study's
methods. A method is a named set of gin files and bindings (study files
only); the method axis is called `method`, and each method spans only the
variables its bindings use (dense has no sparsity). Every combination x seed
0..N-1 (`train_eval.seed`) is one run in
`ROOT/<axis=value,...>/seed_<k>` with its output in `log.txt` there.

Before any run starts, the gin syntax of every binding and each group's
whole configuration (settings, configurables' values, the agent built on
its environment) are checked in one process, as the training script would:
a bad one is one line `error: ...` and exit 2 (`--nocheck_configs` leaves
it to each run).

A rerun of the same command skips finished runs (`final_metric.json`
present, same command as last time) and starts the others again: the
training scripts resume from their newest checkpoint by themselves and
refuse (exit 2) a run directory that holds another config.

Backends: `--backend=local` (default) runs `--workers` runs at once on
this machine; `--backend=ray [--address=auto|HOST:PORT]` runs each run as a
Ray task on a Ray cluster (`rigl/rl/sweep_ray.py`, the only module that
imports Ray; docs/cluster.md).
"""

import ast
import contextlib
import dataclasses
import importlib.util
import io
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
import tokenize
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags

try:  # Python 3.11+
    import tomllib
except ImportError:  # Python 3.9-3.10: the same parser as a package
    import tomli as tomllib

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCRIPTS_DIR = os.path.join(PACKAGE_ROOT, 'rigl', 'rl', 'tfagents')
SCRIPTS = tuple(sorted(name[:-len('_train_eval.py')]
                       for name in os.listdir(SCRIPTS_DIR)
                       if name.endswith('_train_eval.py')))  # dqn ppo sac td3
METHOD_AXIS = 'method'
# Every run a study plans, so a report can tell seeds that never started.
from rigl.rl.layout import (  # noqa: E402
    FINAL_METRIC_FILE, RUN_LOG_FILE as LOG_FILE,
    STUDY_PLAN_FILE as PLAN_FILE, SWEEP_COMMAND_FILE as COMMAND_FILE)
THREAD_VARIABLES = ('TF_NUM_INTRAOP_THREADS', 'OMP_NUM_THREADS')
BACKENDS = ('local', 'ray')
LOCAL_FLAGS = ('workers', 'threads_per_worker')
RAY_FLAGS = ('address', 'cpus_per_run', 'gpus_per_run', 'max_retries')
DEFAULT_CPUS_PER_RUN = 1.0
DEFAULT_MAX_RETRIES = 3

FLAGS = flags.FLAGS


@dataclasses.dataclass
class Method:
    """A named set of gin files and bindings (one value of the method axis)."""
    gin_files: List[str] = dataclasses.field(default_factory=list)
    bindings: List[str] = dataclasses.field(default_factory=list)

    def variables(self) -> List[str]:
        """The `{name}` placeholders its bindings use."""
        names = []
        for binding in self.bindings:
            for name in re.findall(r'\{(\w+)\}', binding):
                if name not in names:
                    names.append(name)
        return names


@dataclasses.dataclass
class Study:
    """What to run: a script, base config, grid axes, methods and seeds."""
    script: str
    gin_files: List[str] = dataclasses.field(default_factory=list)
    bindings: List[str] = dataclasses.field(default_factory=list)
    grid: Dict[str, List[Any]] = dataclasses.field(default_factory=dict)
    methods: Dict[str, Method] = dataclasses.field(default_factory=dict)
    seeds: int = 1


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


# Reading a study ---------------------------------------------------------

def parse_grid_flag(text: str) -> Tuple[str, List[Any]]:
    """'name=[v1, v2]' -> (name, [v1, v2]); values are Python literals."""
    name, sep, values = text.partition('=')
    name = name.strip()
    if not sep or not name:
        raise ValueError(f'--grid={text!r}: expected NAME=[VALUE, ...], e.g. '
                         "--grid=\"mask_updater.update_alg=['set','rigl']\".")
    try:
        parsed = ast.literal_eval(values.strip())
    except (ValueError, SyntaxError):
        raise ValueError(
            f'--grid={text!r}: {values.strip()!r} is not a Python list '
            "literal (quote strings: ['set','rigl']).") from None
    if not isinstance(parsed, (list, tuple)) or not parsed:
        raise ValueError(f'--grid={text!r}: give a non-empty list of values.')
    return name, list(parsed)


def _string_list(value: Any, where: str) -> List[str]:
    """`value` if it is a list of strings (a lone string is not split)."""
    if not isinstance(value, list) or not all(
            isinstance(item, str) for item in value):
        raise ValueError(f'{where} must be a list of strings, e.g. '
                         f'["a", "b"]; got {value!r}.')
    return list(value)


GRID_VALUE_TYPES = (str, int, float, bool, list)


def load_study(path: str) -> Study:
    """Reads a TOML study file (format: `docs/studies.md`).

    Raises:
        ValueError: naming the file and the key for an unknown key or a
            value of the wrong type.
    """
    with open(path, 'rb') as f:
        data = tomllib.load(f)
    known = {'script', 'gin_files', 'bindings', 'grid', 'methods', 'seeds',
             'description'}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f'{path}: unknown keys {unknown}; allowed: '
                         f'{sorted(known)}.')
    if 'script' not in data:
        raise ValueError(f'{path}: missing script = '
                         f'{" | ".join(repr(x) for x in SCRIPTS)}.')
    for key in ('script', 'description'):
        if key in data and not isinstance(data[key], str):
            raise ValueError(f'{path}: {key} must be a string; got '
                             f'{data[key]!r}.')
    seeds = data.get('seeds', 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int):
        raise ValueError(f'{path}: seeds must be a whole number >= 1; got '
                         f'{seeds!r}.')
    methods_table = data.get('methods', {})
    if not isinstance(methods_table, dict):
        raise ValueError(f'{path}: methods must be tables, e.g. '
                         '[methods.rigl] with gin_files and bindings; got '
                         f'{methods_table!r}.')
    methods = {}
    for name, spec in methods_table.items():
        if not isinstance(spec, dict):
            raise ValueError(f'{path}: method {name!r} must be a table '
                             f'([methods.{name}]) with gin_files and '
                             f'bindings; got {spec!r}.')
        extra = sorted(set(spec) - {'gin_files', 'bindings'})
        if extra:
            raise ValueError(f'{path}: method {name!r} has unknown keys '
                             f'{extra}; allowed: gin_files, bindings.')
        methods[name] = Method(
            _string_list(spec.get('gin_files', []),
                         f'{path}: methods.{name}.gin_files'),
            _string_list(spec.get('bindings', []),
                         f'{path}: methods.{name}.bindings'))
    grid_table = data.get('grid', {})
    if not isinstance(grid_table, dict):
        raise ValueError(f'{path}: grid must be a table ([grid] with NAME = '
                         f'[VALUE, ...] lines); got {grid_table!r}.')
    grid = {}
    for name, values in grid_table.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f'{path}: grid {name!r} must be a non-empty '
                             f'list; got {values!r}.')
        wrong = [v for v in values if not isinstance(v, GRID_VALUE_TYPES)]
        if wrong:
            raise ValueError(f'{path}: grid {name!r} has {wrong[0]!r}; '
                             'allowed values: strings, numbers, booleans '
                             'and lists.')
        grid[name] = values
    return Study(script=data['script'],
                 gin_files=_string_list(data.get('gin_files', []),
                                        f'{path}: gin_files'),
                 bindings=_string_list(data.get('bindings', []),
                                       f'{path}: bindings'),
                 grid=grid, methods=methods, seeds=seeds)


def resolve_gin_file(path: str) -> str:
    """An absolute path: as given, from the working directory, or from the
    package root (where the configs' `include` paths start)."""
    for candidate in (path, os.path.join(PACKAGE_ROOT, path)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise ValueError(f'gin file {path!r} not found (looked in the working '
                     f'directory and in {PACKAGE_ROOT}).')


def _check(study: Study) -> None:
    if study.script not in SCRIPTS:
        raise ValueError(f'script {study.script!r}: allowed '
                         f'{", ".join(SCRIPTS)}.')
    if study.seeds < 1:
        raise ValueError(f'seeds must be >= 1, got {study.seeds}.')
    used = {name for method in study.methods.values()
            for name in method.variables()}
    for name in study.grid:
        if name == METHOD_AXIS:
            wrong = [v for v in study.grid[name] if not isinstance(v, str)]
            if wrong:
                raise ValueError(f'grid method={wrong}: methods are named '
                                 'by strings.')
            missing = [v for v in study.grid[name] if v not in study.methods]
            if missing:
                defined = ', '.join(study.methods) or 'none'
                raise ValueError(f'grid method={missing}: no such method; '
                                 f'defined: {defined}.')
        elif '.' not in name and name not in used:
            raise ValueError(
                f'grid axis {name!r} is neither a gin binding (a name with a '
                'dot, e.g. init_masks.sparsity) nor a {placeholder} of a '
                'method.')
    for method_name, method in study.methods.items():
        for name in method.variables():
            if name not in study.grid:
                raise ValueError(f'method {method_name!r} uses {{{name}}} but '
                                 f'the grid has no axis {name!r}.')


# Expanding a study into runs ----------------------------------------------

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
    _check(study)
    axes = list(study.grid)
    if study.methods and METHOD_AXIS not in axes:
        # After the gin-binding axes, before the variables: env,method,sparsity
        first_variable = next((i for i, a in enumerate(axes) if '.' not in a),
                              len(axes))
        axes.insert(first_variable, METHOD_AXIS)
    values = dict(study.grid)
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


def command(script: str, run: Run) -> List[str]:
    """The training command line of a run."""
    path = os.path.join(SCRIPTS_DIR, f'{script}_train_eval.py')
    return ([sys.executable, path, f'--root_dir={run.root_dir}'] +
            [f'--gin_file={f}' for f in run.gin_files] +
            [f'--gin_bindings={b}' for b in run.bindings])


# Checking the runs' configurations before any starts ------------------------

CHECK_MARKER = 'sweep-config-check: '


def config_errors(script: str, configs: Sequence[Dict[str, List[str]]]
                  ) -> List[str]:
    """What the training script would say of each configuration, checked in
    this process (TensorFlow is imported): gin syntax and names, every
    setting, and the agent built on its environment (the configurables'
    values), writing nothing.

    Args:
        script: a training script name (`SCRIPTS`).
        configs: {'gin_files': [...], 'bindings': [...]} each.

    Returns:
        Per configuration, '' or the script's one-line error.
    """
    # TensorFlow only in the checking process.
    # pylint: disable=import-outside-toplevel
    import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
    import gin
    from tf_agents.specs import tensor_spec

    from rigl.rl.tfagents import envs
    from rigl.rl.tfagents import train
    from rigl.rl.tfagents.run import console
    from rigl.rl.tfagents.run import settings as settings_lib

    console.quiet_libraries()
    algorithm_class = train.ALGORITHMS[script]

    def build(root_dir: str, allow_config_change: bool) -> None:
        del root_dir, allow_config_change
        params = dict(gin.get_bindings(train.train_eval))
        for name in ('root_dir', 'algorithm', 'allow_config_change'):
            params.pop(name, None)
        settings = settings_lib.build(algorithm_class.Settings, params,
                                      script.upper())
        env = envs.create_environment(env_name=settings.env_name, seed=0)
        try:
            algorithm_class(settings,
                            tensor_spec.from_spec(env.observation_spec()),
                            tensor_spec.from_spec(env.action_spec()),
                            settings.seed or 0)
        finally:
            env.close()

    errors = []
    for config in configs:
        gin.clear_config()
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said), \
                    contextlib.redirect_stdout(io.StringIO()):
                code = console.run_cli(build, config['gin_files'],
                                       config['bindings'], '')
        except Exception as error:  # pylint: disable=broad-except
            lines = str(error).strip().splitlines()
            errors.append(f'{type(error).__name__}: '
                          f'{lines[0] if lines else ""}')
            continue
        lines = [line for line in said.getvalue().splitlines()
                 if line.startswith('error: ')]
        errors.append(lines[-1][len('error: '):] if code and lines else
                      f'exit {code}' if code else '')
    gin.clear_config()
    return errors


def check_binding_syntax(bindings: Sequence[str]) -> None:
    """Parses each gin binding alone (syntax only: names are checked with
    the configurations), so an unclosed bracket is named as itself rather
    than as the binding after it.

    Raises:
        ValueError: naming the binding.
    """
    import gin  # pylint: disable=import-outside-toplevel
    from gin import config_parser  # pylint: disable=import-outside-toplevel

    for binding in dict.fromkeys(bindings):
        try:
            list(config_parser.ConfigParser(
                binding, gin.config.ParserDelegate(skip_unknown=True)))
        except tokenize.TokenError:
            raise ValueError(f'cannot parse the gin binding {binding!r}: an '
                             'unclosed bracket or quote.') from None
        except SyntaxError as error:
            name, _, value = binding.partition('=')
            if 'ast.Name object' in str(error) and value.strip():
                raise ValueError(
                    f'cannot parse the gin binding {binding!r}: quote '
                    f"strings, e.g. {name.strip()}='{value.strip()}'."
                    ) from None
            first = (str(error).strip().splitlines() or [''])[0]
            raise ValueError(f'cannot parse the gin binding {binding!r}: '
                             f'{first}') from None


def _config_check_main() -> None:
    """The checking process: a JSON request on stdin, the answer on one
    stdout line after CHECK_MARKER."""
    request = json.load(sys.stdin)
    errors = config_errors(request['script'], request['configs'])
    print(CHECK_MARKER + json.dumps(errors), flush=True)


def check_configs(script: str, runs: Sequence[Run]) -> int:
    """Checks each group's configuration, as its training script would, in
    one child process (so this one stays free of TensorFlow).

    Returns:
        The number of configurations checked.

    Raises:
        ValueError: naming the first refused group and the script's one-line
            error, or the checker's own failure.
    """
    configs: Dict[str, Dict[str, List[str]]] = {}
    for run in runs:
        configs.setdefault(run.group, {'gin_files': run.gin_files,
                                       'bindings': run.bindings})
    if not configs:
        return 0
    done = subprocess.run(
        [sys.executable, '-c',
         'from rigl.rl import sweep; sweep._config_check_main()'],
        input=json.dumps({'script': script,
                          'configs': list(configs.values())}),
        capture_output=True, text=True, cwd=PACKAGE_ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    answers = [line[len(CHECK_MARKER):] for line in done.stdout.splitlines()
               if line.startswith(CHECK_MARKER)]
    if not answers:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ValueError(f'checking the configurations failed (exit '
                         f'{done.returncode}): '
                         f'{lines[-1].strip() if lines else "no output"}')
    refused = [(group, error) for group, error in
               zip(configs, json.loads(answers[-1])) if error]
    if refused:
        group, error = refused[0]
        more = (f'; {len(refused) - 1} more group'
                f'{"s" * (len(refused) > 2)} refused too'
                if len(refused) > 1 else '')
        raise ValueError(f'{group}: {error.rstrip(".")} (no run was '
                         f'started{more}).')
    return len(configs)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers() -> int:
    """One run per core: with 1 thread each, the split that gives a study
    the most env steps/s (benchmarks/seeds_per_hour.py; docs/studies.md)."""
    return available_cores()


def default_threads(workers: int) -> int:
    """Intra-op threads per worker: the cores shared evenly, at least 1."""
    return max(1, available_cores() // max(1, workers))


# Running -------------------------------------------------------------------

def _seconds_left(log_path: str) -> Optional[float]:
    """The `left H:MM:SS` of a run's newest progress line, if any."""
    try:
        with open(log_path, 'rb') as f:
            f.seek(max(0, os.path.getsize(log_path) - 4000))
            tail = f.read().decode(errors='replace')
    except OSError:
        return None
    found = re.findall(r'left (\d+):(\d\d):(\d\d)', tail)
    if not found:
        return None
    hours, minutes, seconds = map(int, found[-1])
    return hours * 3600 + minutes * 60 + seconds


def eta(runs: Sequence[Run], workers: int) -> Optional[float]:
    """Rough seconds until every run is over: running runs' own estimates
    plus the to-do runs at the typical run's length, spread over workers."""
    now = time.time()
    durations = [r.seconds for r in runs if r.status in ('done', 'failed')
                 and r.seconds > 0]
    running = [r for r in runs if r.status == 'running']
    left = [(r, _seconds_left(r.log_path)) for r in running]
    totals = [now - r.started + s for r, s in left if s is not None]
    typical = (sum(durations) / len(durations) if durations else
               sum(totals) / len(totals) if totals else None)
    todo = sum(r.status == 'to do' for r in runs)
    if typical is None and (todo or any(s is None for _, s in left)):
        return None
    work = sum(s if s is not None else max(0.0, typical - (now - r.started))
               for r, s in left) + todo * (typical or 0.0)
    return work / max(1, min(workers, todo + len(running)))


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def run_name(run: Run) -> str:
    """How messages name a run: `group/seed_k`."""
    return f'{run.group}/seed_{run.seed}'


def _node_lines(runs: Sequence[Run]) -> List[str]:
    """'running on NODE: run, run (attempt 2)' per node, for runs whose
    node is known (the Ray backend)."""
    nodes: Dict[str, List[str]] = {}
    for run in runs:
        if run.status == 'running' and run.node:
            name = run_name(run) + (f' (attempt {run.attempts})'
                                    if run.attempts > 1 else '')
            nodes.setdefault(run.node, []).append(name)
    return [f'running on {node}: {", ".join(names)}'
            for node, names in sorted(nodes.items())]


def status_table(runs: Sequence[Run], workers: int) -> str:
    """Counts per group and in total, the node of each running run (when
    known), and an ETA."""
    states = ('done', 'running', 'failed', 'to do')
    groups: Dict[str, Dict[str, int]] = {}
    for run in runs:
        groups.setdefault(run.group, dict.fromkeys(states, 0))[run.status] += 1
    width = max(len('group'), *(len(g) for g in groups))
    lines = [f'{"group":<{width}}  ' + '  '.join(f'{s:>7}' for s in states)]
    for group, counts in groups.items():
        lines.append(f'{group:<{width}}  ' +
                     '  '.join(f'{counts[s]:>7}' for s in states))
    totals = {s: sum(r.status == s for r in runs) for s in states}
    lines.append(f'{"total":<{width}}  ' +
                 '  '.join(f'{totals[s]:>7}' for s in states))
    lines += _node_lines(runs)
    left = eta(runs, workers)
    unfinished = totals['running'] + totals['to do']
    lines.append(f'[{time.strftime("%H:%M:%S")}] ' + (
        'all runs over' if not unfinished else
        f'ETA {format_seconds(left)}' if left is not None else
        'ETA unknown until a run reports progress'))
    return '\n'.join(lines)


def log_tail(path: str, count: int = 5) -> str:
    """The last `count` non-empty lines of a log, indented."""
    try:
        with open(path, errors='replace') as f:
            lines = [line.rstrip() for line in f if line.strip()]
    except OSError:
        return ''
    return '\n'.join('    ' + line for line in lines[-count:])


def open_run_log(run: Run, args: Sequence[str], where: str = '') -> Any:
    """Creates the run directory, records the run's command there
    (COMMAND_FILE) and opens its log for appending, after a `=== DATE
    [where] COMMAND` line."""
    os.makedirs(run.root_dir, exist_ok=True)
    with open(os.path.join(run.root_dir, COMMAND_FILE), 'w') as f:
        json.dump(run.record(), f, indent=2)
    log = open(run.log_path, 'a')
    log.write(f'=== {time.strftime("%Y-%m-%d %H:%M:%S")} '
              f'{f"[{where}] " if where else ""}{shlex.join(args)}\n')
    log.flush()
    return log


def _launch(script: str, run: Run, env: Dict[str, str]
            ) -> Tuple[subprocess.Popen, Any]:
    """Starts a run's training process; its output goes to its log."""
    args = command(script, run)
    log = open_run_log(run, args)
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                               env=env, cwd=PACKAGE_ROOT)
    run.status, run.started = 'running', time.time()
    return process, log


def thread_environment(threads: int) -> Dict[str, str]:
    """The thread variables (THREAD_VARIABLES) a run's process gets."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def skip_finished(runs: Sequence[Run]) -> int:
    """Marks finished runs done (a rerun skips them); returns their number."""
    for run in runs:
        if is_finished(run):
            run.status = 'done'
    return sum(r.status == 'done' for r in runs)


def failure_message(run: Run, what: str, tail: str, where: str = '') -> str:
    """'FAILED (exit 2): group/seed_k; log PATH:' and the log's last lines."""
    return (f'FAILED ({what}): {run_name(run)}{where}; log {run.log_path}:'
            f'\n{tail}')


def list_failures(runs: Sequence[Run], say: Callable[[str], None]) -> int:
    """Names every failed run again, at the end; returns their number."""
    failed = [r for r in runs if r.status == 'failed']
    for run in failed:
        say(f'failed: {run_name(run)} ({run.note}); log {run.log_path}')
    return len(failed)


def run_study(script: str, runs: List[Run], workers: int, threads: int,
              poll_seconds: float = 1.0, status_every: float = 600.0,
              out=None) -> int:
    """Runs every unfinished run, `workers` at a time.

    Returns:
        The number of failed runs.
    """
    out = out or sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    skipped = skip_finished(runs)
    say(f'{len(runs)} runs: {skipped} finished before (skipped), '
        f'{len(runs) - skipped} to run, {workers} at a time with {threads} '
        f'intra-op thread(s) each.')
    env = dict(os.environ, **thread_environment(threads))
    pending = [r for r in runs if r.status == 'to do']
    active: List[Tuple[Run, subprocess.Popen, Any]] = []
    show_table, last_table = True, time.time()
    try:
        while pending or active:
            while pending and len(active) < workers:
                run = pending.pop(0)
                active.append((run, *_launch(script, run, env)))
            if show_table or time.time() - last_table > status_every:
                say(status_table(runs, workers))
                show_table, last_table = False, time.time()
            time.sleep(poll_seconds)
            for entry in list(active):
                run, process, log = entry
                code = process.poll()
                if code is None:
                    continue
                log.close()
                active.remove(entry)
                run.seconds = time.time() - run.started
                show_table = True
                if code == 0:
                    run.status = 'done'
                    say(f'done: {run_name(run)} in '
                        f'{format_seconds(run.seconds)}')
                else:
                    run.status, run.note = 'failed', f'exit {code}'
                    say(failure_message(run, run.note, log_tail(run.log_path)))
    except KeyboardInterrupt:
        say('interrupted: stopping the running runs (rerun the same command '
            'to resume them).')
        for run, process, log in active:
            process.terminate()
        for run, process, log in active:
            process.wait()
            log.close()
            run.status = 'to do'
        raise
    if show_table:
        say(status_table(runs, workers))
    return list_failures(runs, say)


# Command line --------------------------------------------------------------

def define_flags() -> None:
    flags.DEFINE_string('study', None, 'A TOML study file (see studies/); '
                        'the flags below add to or override it.')
    flags.DEFINE_enum('script', None, list(SCRIPTS), 'Training script: '
                      'rigl/rl/tfagents/<script>_train_eval.py.')
    flags.DEFINE_multi_string('gin_file', [], 'Base gin files (added to the '
                              "study's).")
    flags.DEFINE_multi_string('grid', [], "Grid axis NAME=[VALUES], e.g. "
                              "\"mask_updater.update_alg=['set','rigl']\"; "
                              'replaces a study axis of the same name.')
    flags.DEFINE_integer('seeds', None, 'Seeds 0..N-1 per grid point '
                         '(default: the study\'s, else 1).')
    flags.DEFINE_integer('workers', None, 'Runs at once (default: one per '
                         'core, each with 1 intra-op thread: the split with '
                         'the most env steps/s in total).')
    flags.DEFINE_integer('threads_per_worker', None, 'Intra-op threads per '
                         'run (TF_NUM_INTRAOP_THREADS, OMP_NUM_THREADS); '
                         'default: cores // workers, at least 1.')
    flags.DEFINE_string('root_dir', None, 'Where the runs go: '
                        'ROOT/<group>/seed_<k>.')
    flags.DEFINE_multi_string('gin_bindings', [], 'Bindings for every run, '
                              'applied after the grid and methods.')
    flags.DEFINE_bool('dry_run', False, 'List the runs and exit.')
    flags.DEFINE_float('status_every', 600, 'Also print the status table '
                       'every this many seconds.')
    flags.DEFINE_bool('check_configs', True, 'Before any run starts, check '
                      "every group's gin files and bindings as its training "
                      'script would (one process; about a second per '
                      'group); --nocheck_configs skips it.')
    flags.DEFINE_enum('backend', 'local', list(BACKENDS), 'Where the runs '
                      'go: "local" runs --workers of them at once on this '
                      'machine; "ray" runs each as a Ray task on a Ray '
                      'cluster (pip install -r requirements-ray.txt; '
                      'docs/cluster.md).')
    flags.DEFINE_string('address', None, '--backend=ray: the Ray cluster: '
                        '"auto" (the one `ray start` runs on this machine), '
                        'HOST:PORT of its head, or "local" (a new one on '
                        "this machine); default: Ray's choice (RAY_ADDRESS, "
                        'else a cluster running here, else a new local one).')
    flags.DEFINE_float('cpus_per_run', None, '--backend=ray: CPUs each run '
                       'asks Ray for (default 1; a fraction below 1, or a '
                       'whole number); TF_NUM_INTRAOP_THREADS and '
                       'OMP_NUM_THREADS follow it (at least 1).')
    flags.DEFINE_float('gpus_per_run', None, '--backend=ray: GPUs each run '
                       'asks for (default 0: GPUs hidden from the runs); a '
                       'fraction such as 0.25 lets 4 runs share a GPU.')
    flags.DEFINE_integer('max_retries', None, '--backend=ray: times a run '
                         'whose worker process or node died is started '
                         'again, resuming from its checkpoint (default 3); '
                         'a run that fails by itself is not retried.')


def study_from_flags() -> Study:
    """The study file (if any) with the command-line flags applied."""
    study = load_study(FLAGS.study) if FLAGS.study else None
    if study is None:
        if not FLAGS.script:
            raise ValueError(f'give --study=FILE or --script='
                             f'{"|".join(SCRIPTS)}.')
        study = Study(script=FLAGS.script)
    elif FLAGS.script:
        study.script = FLAGS.script
    study.gin_files += FLAGS.gin_file
    for text in FLAGS.grid:
        name, values = parse_grid_flag(text)
        study.grid[name] = values
    if FLAGS.seeds is not None:
        study.seeds = FLAGS.seeds
    return study


def check_root_dir(root_dir: str, create: bool) -> None:
    """Refuses a root_dir that is a file or cannot be created; creates it
    when `create` (a dry run writes nothing).

    Raises:
        ValueError: naming the directory and the reason.
    """
    if os.path.exists(root_dir) and not os.path.isdir(root_dir):
        raise ValueError(f'--root_dir {root_dir} is a file; give a '
                         'directory (it is created if missing).')
    if create:
        try:
            os.makedirs(root_dir, exist_ok=True)
        except OSError as error:
            raise ValueError(f'--root_dir {root_dir}: cannot create it '
                             f'({error.strerror}).') from None
        return
    parent = os.path.abspath(root_dir)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f'--root_dir {root_dir}: cannot create it ({parent} '
                         'is a file).')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f'--root_dir {root_dir}: cannot create it (no '
                         f'write permission in {parent}).')


def check_resource(name: str, value: float, allow_zero: bool) -> None:
    """A Ray resource request: > 0 (or >= 0), whole above 1 (Ray's rule).

    Raises:
        ValueError: naming the flag.
    """
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f'--{name}={value:g}: must be '
                         f'{">= 0" if allow_zero else "> 0"}.')
    if value > 1 and value != int(value):
        raise ValueError(f'--{name}={value:g}: above 1 it must be a whole '
                         'number (Ray splits only single units), e.g. 0.5, '
                         '1 or 2.')


def check_flags() -> None:
    """The numeric flags' ranges and the flags of the other backend
    (ValueError naming the flag)."""
    if not FLAGS.root_dir:
        raise ValueError('--root_dir is required.')
    for name in ('workers', 'threads_per_worker'):
        value = getattr(FLAGS, name)
        if value is not None and value < 1:
            raise ValueError(f'--{name}={value}: must be >= 1.')
    if not FLAGS.status_every > 0:
        raise ValueError(f'--status_every={FLAGS.status_every:g}: must be > 0 '
                         'seconds.')
    other = RAY_FLAGS if FLAGS.backend == 'local' else LOCAL_FLAGS
    given = [name for name in other if getattr(FLAGS, name) is not None]
    if given and FLAGS.backend == 'local':
        raise ValueError(f'--{given[0]} is for --backend=ray; the local '
                         'backend takes --workers and --threads_per_worker.')
    if given:
        raise ValueError(f'--{given[0]} is for --backend=local; on Ray, Ray '
                         'places the runs: give --cpus_per_run (and '
                         '--gpus_per_run) instead.')
    if FLAGS.cpus_per_run is not None:
        check_resource('cpus_per_run', FLAGS.cpus_per_run, allow_zero=False)
    if FLAGS.gpus_per_run is not None:
        check_resource('gpus_per_run', FLAGS.gpus_per_run, allow_zero=True)
    if FLAGS.max_retries is not None and FLAGS.max_retries < 0:
        raise ValueError(f'--max_retries={FLAGS.max_retries}: must be >= 0.')
    if FLAGS.address is not None and not FLAGS.address.strip():
        raise ValueError('--address is empty; give auto, HOST:PORT or local.')


def check_ray_installed() -> None:
    """Raises ValueError when Ray cannot be imported (an optional extra)."""
    if importlib.util.find_spec('ray') is None:
        raise ValueError('--backend=ray needs Ray, an optional extra: pip '
                         'install -r requirements-ray.txt (docs/cluster.md).')


def threads_for_cpus(cpus: float) -> int:
    """Intra-op threads of a run that asked Ray for `cpus` CPUs."""
    return max(1, int(cpus))


def main(argv: Sequence[str]) -> None:
    del argv
    ray_backend = None
    try:
        check_flags()
        if FLAGS.backend == 'ray':
            check_ray_installed()
        study = study_from_flags()
        root_dir = os.path.abspath(FLAGS.root_dir)
        runs = expand(study, root_dir, FLAGS.gin_bindings)
        check_root_dir(root_dir, create=False)
        todo = [run for run in runs if not is_finished(run)]
        check_binding_syntax([b for run in todo for b in run.bindings])
        if FLAGS.check_configs and todo:
            print(f'checking the configurations of '
                  f'{len({run.group for run in todo})} group(s) before any '
                  'run starts...', flush=True)
            check_configs(study.script, todo)
        if FLAGS.backend == 'ray' and todo and not FLAGS.dry_run:
            # Ray only in the Ray backend's module, and only to run runs.
            # pylint: disable-next=import-outside-toplevel
            from rigl.rl import sweep_ray
            ray_backend = sweep_ray
            ray_backend.connect(FLAGS.address)
        if not FLAGS.dry_run:
            check_root_dir(root_dir, create=True)
    except (ValueError, OSError, tomllib.TOMLDecodeError) as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
    cpus = (DEFAULT_CPUS_PER_RUN if FLAGS.cpus_per_run is None
            else FLAGS.cpus_per_run)
    gpus = FLAGS.gpus_per_run or 0.0
    retries = (DEFAULT_MAX_RETRIES if FLAGS.max_retries is None
               else FLAGS.max_retries)
    if FLAGS.backend == 'ray':
        threads = threads_for_cpus(cpus)
        how = (f'each a Ray task of {cpus:g} CPU(s)' +
               (f' and {gpus:g} GPU(s)' if gpus else '') +
               f' with {threads} thread(s)')
    else:
        workers = FLAGS.workers or default_workers()
        threads = FLAGS.threads_per_worker or default_threads(workers)
        how = f'{workers} at a time with {threads} thread(s) each'
    if FLAGS.dry_run:
        for run in runs:
            state = 'done ' if is_finished(run) else 'to do'
            print(f'{state}  {os.path.relpath(run.root_dir, FLAGS.root_dir)}'
                  f'  {" ".join(repr(b) for b in run.bindings)}')
        groups = len({r.group for r in runs})
        print(f'{len(runs)} runs ({groups} groups x {study.seeds} seeds), '
              f'{how}. First command:\n'
              f'  {shlex.join(command(study.script, runs[0]))}')
        return
    write_plan(root_dir, runs)
    try:
        if FLAGS.backend == 'local':
            failed = run_study(study.script, runs, workers, threads,
                               status_every=FLAGS.status_every)
        elif ray_backend is None:  # nothing to run: Ray is not started
            failed = skip_all(runs, how)
        else:
            failed = ray_backend.run_study(study.script, runs, cpus, gpus,
                                           retries,
                                           status_every=FLAGS.status_every)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(1 if failed else 0)


def skip_all(runs: Sequence[Run], how: str, out=None) -> int:
    """Every run finished before: says so, starting no backend."""
    out = out or sys.stdout
    skipped = skip_finished(runs)
    print(f'{len(runs)} runs: {skipped} finished before (skipped), '
          f'{len(runs) - skipped} to run, {how}.', file=out, flush=True)
    print(status_table(runs, 1), file=out, flush=True)
    return 0


if __name__ == '__main__':
    define_flags()
    app.run(main)
