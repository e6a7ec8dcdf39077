r"""The Ray backend of `rigl.rl.sweep`: each run of a study a Ray task.

  python -m rigl.rl.sweep --study=studies/sac_mini.toml \
    --root_dir=/shared/sparserl/mini --backend=ray --address=auto \
    --cpus_per_run=1

Each unfinished run is one Ray task (`_attempt`) asking for `cpus_per_run`
CPUs and `gpus_per_run` GPUs; Ray places it on a node of its cluster. The
task starts the run's training script as its child process, with
TF_NUM_INTRAOP_THREADS and OMP_NUM_THREADS following the CPU request and
its output appended to the run's `log.txt` under the root dir (a file
system every node mounts at the same path: docs/cluster.md), waits for it
and returns its exit code.

Faults:
* the task's worker process or node dies: the training process dies with
  it (Linux: PR_SET_PDEATHSIG), Ray runs the task again (up to
  `max_retries` times), possibly on another node, and the training script
  resumes from the run's newest checkpoint by itself;
* the training script exits non-zero (a bad config, a NaN loss): that is
  the task's result, not a fault, so Ray does not retry it; the run is
  reported failed with the end of its log, as by the local backend;
* Ctrl-C: the queued tasks are cancelled and the running ones stop their
  training processes; every run resumes on the next rerun.

This is the only module of the package that imports Ray (an optional
extra: requirements-ray.txt).
"""

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# Token authentication unless RAY_AUTH_MODE says otherwise, as `ray start`
# does by default (Ray 2.60): a driver without it cannot join such a
# cluster, and Ray reads the mode when it is imported. The token itself
# comes from RAY_AUTH_TOKEN or Ray's default token file.
os.environ.setdefault('RAY_AUTH_MODE', 'token')

import ray  # noqa: E402  pylint: disable=wrong-import-position

# pylint: disable=wrong-import-position
from rigl.rl.layout import SWEEP_STOP_FILE  # noqa: E402
from rigl.rl.study.process import (  # noqa: E402
    Stopped, command, guarded, log_tail, open_run_log, thread_environment,
    threads_for_cpus)
from rigl.rl.study.runs import (  # noqa: E402
    Run, is_finished, run_name, skip_finished)
from rigl.rl.study.spec import PACKAGE_ROOT  # noqa: E402
from rigl.rl.study.status import (  # noqa: E402
    failure_message, format_seconds, list_failures, status_table)
# pylint: enable=wrong-import-position

STOP_SECONDS = 30.0  # a stopped training process's time to exit


def node_name() -> str:
    """This node as the status table shows it: 'HOST (IP)'."""
    host = socket.gethostname()
    address = ray.util.get_node_ip_address()
    return host if host == address else f'{host} ({address})'


def _stop(process: subprocess.Popen) -> None:
    """Ends a training process: SIGTERM, then SIGKILL after STOP_SECONDS."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _Board:
    """A Ray actor that passes the tasks' start reports to the driver."""

    def __init__(self) -> None:
        self._events: List[Tuple[int, str]] = []

    def started(self, index: int, node: str) -> None:
        self._events.append((index, node))

    def take(self) -> List[Tuple[int, str]]:
        events, self._events = self._events, []
        return events


def _attempt(script: str, fields: Dict[str, Any], index: int, threads: int,
             hide_gpus: bool, board: Any) -> Dict[str, Any]:
    """One attempt at a run, inside a Ray worker.

    Args:
        script: the training script's name (`spec.SCRIPTS`).
        fields: the run's `Run` fields; gin files inside the package
            are found again under this node's checkout.
        index: the run's index, for the start report.
        threads: TF_NUM_INTRAOP_THREADS and OMP_NUM_THREADS of the run.
        hide_gpus: run without GPUs (none were asked for).
        board: the `_Board` actor.

    Returns:
        {'code': the exit code, 'node': this node, 'seconds': the
        attempt's length, 'tail': the log's last lines, 'note': '' or why
        nothing ran}.
    """
    run = Run(**fields)
    run.gin_files = [path if os.path.isabs(path) else
                     os.path.join(PACKAGE_ROOT, path)
                     for path in run.record()['gin_files']]
    node = node_name()
    board.started.remote(index, node)
    start = time.time()
    if is_finished(run):  # an earlier attempt finished it
        return {'code': 0, 'node': node, 'seconds': 0.0, 'tail': '',
                'note': 'finished by an earlier attempt'}
    stop_request = os.path.join(run.root_dir, SWEEP_STOP_FILE)
    if os.path.exists(stop_request):  # from an interrupted sweep
        os.remove(stop_request)
    args = command(script, run)
    env = dict(os.environ, **thread_environment(threads))
    if hide_gpus:
        env['CUDA_VISIBLE_DEVICES'] = ''
    with open_run_log(run, args, f'ray task on {node}, worker pid '
                      f'{os.getpid()}') as log:
        process = subprocess.Popen(
            # SIGKILL: a killed task never leaves a run training twice.
            guarded(args, signal.SIGKILL),
            stdout=log, stderr=subprocess.STDOUT, env=env,
            cwd=PACKAGE_ROOT)
        try:
            # Polled, not waited for: a cancelled task's KeyboardInterrupt
            # arrives between Python bytecodes. Ray sends it by a signal
            # that a worker under load does not always get (the run then
            # trained on to its end), so the driver's stop request, a file
            # in the run's directory, is polled too (not a Ray call: a task
            # blocked in one lends its CPUs to the queued runs).
            while process.poll() is None:
                time.sleep(0.5)
                if os.path.exists(stop_request):
                    _stop(process)
        except BaseException:
            _stop(process)
            raise
    return {'code': process.returncode, 'node': node,
            'seconds': time.time() - start,
            'tail': log_tail(run.log_path),
            'note': ''}


# The driver ------------------------------------------------------------------

def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Refuses a HOST:PORT (or ray://HOST:PORT) nobody listens on, which
    Ray itself would keep trying for minutes; other addresses (auto,
    local) are left to Ray.

    Raises:
        ValueError: naming the address and the reason.
    """
    text = address[len('ray://'):] if address.startswith('ray://') else address
    host, sep, port = text.rpartition(':')
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip('[]'), int(port)),
                                 timeout=timeout).close()
    except OSError as error:
        raise ValueError(
            f'cannot reach the Ray cluster at {address}: '
            f'{error.strerror or error} (is `ray start --head` running '
            'there? docs/cluster.md).') from None


def connect(address: Optional[str]) -> None:
    """Joins the Ray cluster at `address` (None: Ray's own choice), with
    token authentication unless RAY_AUTH_MODE says otherwise.

    Raises:
        ValueError: naming the address and Ray's reason.
    """
    if ray.is_initialized():  # e.g. a test or a notebook connected already
        return
    if address:
        check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False,
                 logging_level='warning')
    except Exception as error:  # pylint: disable=broad-except
        lines = str(error).strip().splitlines()
        raise ValueError(
            f'cannot connect to the Ray cluster '
            f'{address or "(default)"}: {type(error).__name__}: '
            f'{lines[0].rstrip(".") if lines else ""} (RAY_AUTH_MODE='
            f'{os.environ["RAY_AUTH_MODE"]}: set it as on the cluster\'s '
            'nodes; docs/cluster.md).') from None


def capacity(cpus: float, gpus: float) -> Tuple[int, int]:
    """(runs the cluster's live nodes hold at once, live nodes), from
    Ray's view of its nodes' resources."""
    total, alive = 0, 0
    for node in ray.nodes():
        if not node.get('Alive'):
            continue
        alive += 1
        resources = node.get('Resources', {})
        fits = math.floor(resources.get('CPU', 0.0) / cpus + 1e-9)
        if gpus:
            fits = min(fits, math.floor(resources.get('GPU', 0.0) / gpus
                                        + 1e-9))
        total += fits
    return total, alive


def _failure(error: Exception, run: Run) -> Tuple[str, str]:
    """(the run's note, the message's detail) for a task that raised."""
    if isinstance(error, ray.exceptions.RayTaskError):  # our own code
        lines = str(error.cause if getattr(error, 'cause', None) else
                    error).strip().splitlines()
        return 'task error', '    ' + (lines[-1] if lines else repr(error))
    lines = str(error).strip().splitlines()
    return (f'{type(error).__name__} after {run.attempts} attempt'
            f'{"s" * (run.attempts != 1)}',
            '    ' + (lines[0] if lines else type(error).__name__))


@contextlib.contextmanager
def stops_noted():
    """Within: Ctrl-C (SIGINT) and SIGTERM append their signal number to
    the yielded list instead of raising.

    Under load, a Ray sweep twice ran to its end after a Ctrl-C (in the
    test suite); where that KeyboardInterrupt went, inside or between Ray's
    blocking calls, is not known. Noting the signal and acting on it
    between calls does not depend on where it lands. Outside the main
    thread nothing changes; an ignored SIGINT (a background job) stays
    ignored.
    """
    seen: List[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signals.append(signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda signum, _: seen.append(signum))
                for sig in signals}
    try:
        yield seen
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_study(script: str, runs: List[Run], cpus_per_run: float,
              gpus_per_run: float, max_retries: int,
              poll_seconds: float = 1.0, status_every: float = 600.0,
              out=None) -> int:
    """Runs every unfinished run as a Ray task (connect() first, or a
    Ray instance already started in this process).

    Returns:
        The number of failed runs.
    """
    out = out or sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    connect(None)
    threads = threads_for_cpus(cpus_per_run)
    skipped = skip_finished(runs)
    slots, nodes = capacity(cpus_per_run, gpus_per_run)
    gpu_text = f' and {gpus_per_run:g} GPU(s)' if gpus_per_run else ''
    say(f'{len(runs)} runs: {skipped} finished before (skipped), '
        f'{len(runs) - skipped} to run, each a Ray task of {cpus_per_run:g} '
        f'CPU(s){gpu_text} with {threads} intra-op thread(s); the cluster '
        f'({nodes} node{"s" * (nodes != 1)}) holds {slots} at a time; '
        f'up to {max_retries} retr{"ies" if max_retries != 1 else "y"} of a '
        'run whose worker or node dies.')
    if not slots:
        say(f'warning: no node of the cluster has {cpus_per_run:g} '
            f'CPU(s){gpu_text} for a run; the runs wait until such a node '
            'joins.')
    board = ray.remote(num_cpus=0)(_Board).remote()
    task = ray.remote(_attempt)
    pending: Dict[Any, int] = {}
    for index, run in enumerate(runs):
        if run.status == 'to do':
            fields = {name: getattr(run, name) for name in
                      ('group', 'seed', 'root_dir', 'gin_files', 'bindings')}
            ref = task.options(
                num_cpus=cpus_per_run, num_gpus=gpus_per_run,
                max_retries=max_retries, retry_exceptions=False,
                name=f'sweep {run_name(run)}').remote(
                    script, fields, index, threads, not gpus_per_run, board)
            pending[ref] = index

    def workers() -> int:
        running = sum(r.status == 'running' for r in runs)
        try:
            return max(1, capacity(cpus_per_run, gpus_per_run)[0], running)
        except Exception:  # pylint: disable=broad-except
            return max(1, slots, running)

    show_table, last_table = True, time.time()
    try:
        with stops_noted() as stops:
            while pending:
                if stops:
                    raise Stopped(stops[0])
                if show_table or time.time() - last_table > status_every:
                    say(status_table(runs, workers()))
                    show_table, last_table = False, time.time()
                ready, _ = ray.wait(list(pending), num_returns=len(pending),
                                    timeout=poll_seconds)
                show_table |= _take_starts(board, runs, max_retries, say)
                for ref in ready:
                    run = runs[pending.pop(ref)]
                    show_table = True
                    _finish(ref, run, say)
    except KeyboardInterrupt:
        say('interrupted: cancelling the queued runs and stopping the '
            'running ones (rerun the same command to resume them).')
        for index in pending.values():
            if runs[index].status == 'running':
                _request_stop(runs[index])
        # The queued first, so that none starts on a CPU freed meanwhile.
        _cancel(sorted(pending, key=lambda ref: runs[pending[ref]].status ==
                       'running'))
        for index in pending.values():
            runs[index].status, runs[index].node = 'to do', ''
        raise
    if show_table:
        say(status_table(runs, workers()))
    return list_failures(runs, say)


def _take_starts(board: Any, runs: Sequence[Run], max_retries: int,
                 say: Callable[[str], None]) -> bool:
    """Marks the runs whose task started (again) running on their node;
    True when there were any."""
    try:
        events = ray.get(board.take.remote(), timeout=30)
    except ray.exceptions.RayError:  # the board is gone: no node names
        return False
    for index, node in events:
        run = runs[index]
        if run.status in ('done', 'failed'):
            continue
        if run.attempts:
            say(f'retry {run.attempts} of {max_retries}: {run_name(run)}'
                f' on {node} (its worker or node died on {run.node}); it '
                'resumes from its newest checkpoint.')
        run.attempts += 1
        run.status, run.node, run.started = 'running', node, time.time()
    return bool(events)


def _finish(ref: Any, run: Run, say: Callable[[str], None]) -> None:
    """Records a finished task's outcome in `run` and says it."""
    try:
        result = ray.get(ref)
    except ray.exceptions.RayError as error:
        run.status = 'failed'
        run.seconds = time.time() - run.started if run.started else 0.0
        run.note, detail = _failure(error, run)
        say(failure_message(run, run.note, detail,
                            f' on {run.node}' if run.node else ''))
        return
    run.node = result['node']
    run.seconds = result['seconds']
    if result['code'] == 0:
        run.status = 'done'
        say(f'done: {run_name(run)} in '
            f'{format_seconds(run.seconds)} on {run.node}' +
            (f' ({result["note"]})' if result['note'] else ''))
    else:
        run.status, run.note = 'failed', f'exit {result["code"]}'
        say(failure_message(run, run.note, result['tail'],
                            f' on {run.node}'))


def _request_stop(run: Run) -> None:
    """Asks a running run's task to stop its training process."""
    try:
        with open(os.path.join(run.root_dir, SWEEP_STOP_FILE), 'w') as f:
            f.write('stop\n')
    except OSError:  # no directory yet: Ray's cancel alone
        pass


def _cancel(refs: List[Any]) -> None:
    """Cancels tasks: queued ones never start; running ones stop their
    training process (force-killed if they take too long)."""
    for ref in refs:
        ray.cancel(ref)
    try:
        _, left = ray.wait(refs, num_returns=len(refs),
                           timeout=STOP_SECONDS + 5)
    except ray.exceptions.RayError:
        left = refs
    for ref in left:
        ray.cancel(ref, force=True)
