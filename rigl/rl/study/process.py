"""How a run's training process starts: its command line, the thread
variables it gets, and its log (shared by the local and the Ray backend)."""

import json
import os
import shlex
import sys
import time
from typing import Any, Dict, List, Sequence

from rigl.rl.layout import SWEEP_COMMAND_FILE as COMMAND_FILE
from rigl.rl.study.runs import Run
from rigl.rl.study.spec import SCRIPTS_DIR

THREAD_VARIABLES = ('TF_NUM_INTRAOP_THREADS', 'OMP_NUM_THREADS')


def command(script: str, run: Run) -> List[str]:
    """The training command line of a run."""
    path = os.path.join(SCRIPTS_DIR, f'{script}_train_eval.py')
    return ([sys.executable, path, f'--root_dir={run.root_dir}'] +
            [f'--gin_file={f}' for f in run.gin_files] +
            [f'--gin_bindings={b}' for b in run.bindings])


def thread_environment(threads: int) -> Dict[str, str]:
    """The thread variables (THREAD_VARIABLES) a run's process gets."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def threads_for_cpus(cpus: float) -> int:
    """Intra-op threads of a run that asked Ray for `cpus` CPUs."""
    return max(1, int(cpus))


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


def log_tail(path: str, count: int = 5) -> str:
    """The last `count` non-empty lines of a log, indented."""
    try:
        with open(path, errors='replace') as f:
            lines = [line.rstrip() for line in f if line.strip()]
    except OSError:
        return ''
    return '\n'.join('    ' + line for line in lines[-count:])
