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
# This module is the command line only (its docstring is its --help); the
# studies themselves live in rigl/rl/study/: the study file, runs, the
# configuration check, the status table and the local backend.

import importlib.util
import os
import shlex
import signal
import sys
from typing import Sequence

from absl import app
from absl import flags

try:  # Python 3.11+
    import tomllib
except ImportError:  # Python 3.9-3.10: the same parser as a package
    import tomli as tomllib

from rigl.rl.study import local
from rigl.rl.study.config_check import check_binding_syntax, check_configs
from rigl.rl.study.process import (
    Stopped, command, stop_on, threads_for_cpus)
from rigl.rl.study.runs import expand, is_finished, write_plan
from rigl.rl.study.spec import SCRIPTS, Study, load_study, parse_grid_flag
from rigl.rl.study.status import skip_all

BACKENDS = ('local', 'ray')
LOCAL_FLAGS = ('workers', 'threads_per_worker')
RAY_FLAGS = ('address', 'cpus_per_run', 'gpus_per_run', 'max_retries')
DEFAULT_CPUS_PER_RUN = 1.0
DEFAULT_MAX_RETRIES = 3

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the sweep's command-line flags (both backends')."""
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
        workers = FLAGS.workers or local.default_workers()
        threads = FLAGS.threads_per_worker or local.default_threads(workers)
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
        # SIGTERM (`kill`, a scheduler's cancel) stops the runs as Ctrl-C
        # does, so none trains on without the sweep.
        with stop_on(signal.SIGTERM):
            if FLAGS.backend == 'local':
                failed = local.run_study(study.script, runs, workers,
                                         threads,
                                         status_every=FLAGS.status_every)
            elif ray_backend is None:  # nothing to run: Ray is not started
                failed = skip_all(runs, how)
            else:
                failed = ray_backend.run_study(
                    study.script, runs, cpus, gpus, retries,
                    status_every=FLAGS.status_every)
    except Stopped as stop:
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    define_flags()
    app.run(main)
