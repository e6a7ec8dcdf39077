"""The local backend: a study's runs as child processes of this one,
`workers` at a time, each with its threads (`--backend=local`)."""

import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Tuple

from rigl.rl.study.process import (
    command, guarded, log_tail, open_run_log, thread_environment)
from rigl.rl.study.runs import Run, run_name, skip_finished
from rigl.rl.study.spec import PACKAGE_ROOT
from rigl.rl.study.status import (
    failure_message, format_seconds, list_failures, status_table)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
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


def _launch(script: str, run: Run, env: Dict[str, str]
            ) -> Tuple[subprocess.Popen, Any]:
    """Starts a run's training process; its output goes to its log. It
    gets SIGTERM if this process dies (killed, or its terminal closed)."""
    args = command(script, run)
    log = open_run_log(run, args)
    process = subprocess.Popen(guarded(args), stdout=log,
                               stderr=subprocess.STDOUT, env=env,
                               cwd=PACKAGE_ROOT)
    run.status, run.started = 'running', time.time()
    return process, log


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
