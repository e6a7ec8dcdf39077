"""How a run's training process starts: its command line, the thread
variables it gets, its log, and the guard that ends it with its parent
(shared by the local and the Ray backend and the distributed launcher)."""

import contextlib
import json
import os
import shlex
import signal
import sys
import time
from typing import Any, Dict, Iterator, List, Sequence

from rigl.rl.layout import SWEEP_COMMAND_FILE as COMMAND_FILE
from rigl.rl.study.runs import Run
from rigl.rl.study.spec import SCRIPTS_DIR

THREAD_VARIABLES = ('TF_NUM_INTRAOP_THREADS', 'OMP_NUM_THREADS')

# Runs in front of a child's command (`guarded`): the child gets a signal
# when its parent dies (Linux's PR_SET_PDEATHSIG = 1, kept across exec), so
# nothing trains on after the sweep, Ray worker or launcher that started
# it is killed. A trampoline rather than a `preexec_fn`, which is unsafe in
# a threaded parent such as a Ray worker. Arguments: PARENT_PID SIGNAL
# COMMAND...
_PARENT_GUARD = '''
import ctypes, os, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[2]))
except (AttributeError, OSError, TypeError):  # not Linux: no guard
    pass
if os.getppid() != int(sys.argv[1]):  # the parent died already
    sys.exit(128 + int(sys.argv[2]))
os.execv(sys.argv[3], sys.argv[3:])
'''


def command(script: str, run: Run) -> List[str]:
    """The training command line of a run."""
    path = os.path.join(SCRIPTS_DIR, f'{script}_train_eval.py')
    return ([sys.executable, path, f'--root_dir={run.root_dir}'] +
            [f'--gin_file={f}' for f in run.gin_files] +
            [f'--gin_bindings={b}' for b in run.bindings])


def guarded(args: Sequence[str],
            on_parent_death: int = signal.SIGTERM) -> List[str]:
    """`args` (an absolute executable first) as a command whose process
    gets `on_parent_death` when this process dies; same process id."""
    return [sys.executable, '-c', _PARENT_GUARD, str(os.getpid()),
            str(int(on_parent_death)), *args]


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGTERM: `kill`, a scheduler's cancel) raised where
    Ctrl-C raises KeyboardInterrupt, so that the same clean-up runs;
    `exit_code` is the shell's 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.exit_code = 128 + int(signum)


@contextlib.contextmanager
def stop_on(*signals: int) -> Iterator[None]:
    """Within: each of `signals` raises `Stopped`; the previous handlers
    come back after. Call it from the main thread, where Python runs
    signal handlers."""
    def stop(signum, frame):
        del frame
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
