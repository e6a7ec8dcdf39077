"""The sweep's Ray backend (--backend=ray) on a local Ray cluster of 2 CPUs
that the tests start (`ray.init(num_cpus=2)` in a child process): a study
finishes with the same results and report as the local backend, and a
failing run is reported and not retried; Ctrl-C leaves every run
resumable, and a killed worker's run is retried and resumes."""

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

if importlib.util.find_spec('ray') is None:
    pytest.skip('Ray is not installed (an optional extra, for the Ray '
                'backend): pip install -r requirements-ray.txt',
                allow_module_level=True)
psutil = pytest.importorskip('psutil')

from rigl.rl import report  # noqa: E402
import helpers  # noqa: E402
import tiny  # noqa: E402
from helpers import REPO  # noqa: E402

GRID = "--grid=mask_updater.update_alg=['set','rigl']"
# Longer runs, to interrupt after their first checkpoint (250) and to kill
# once resumed from it, with evaluations at EVALS: 1750 train steps
# (seconds) after that checkpoint, for the Ctrl-C and the kill to land
# before the run ends. The
# sweep answers Ctrl-C with a stop request (a file the task polls every
# 0.5 s): Ray's own cancel of a running task sometimes never reached it
# under the suite's load, and the run trained on to its end.
EVALS = [1000, 2000]
LONG = [f'--gin_bindings=train_eval.num_iterations={EVALS[-1]}',
        f'--gin_bindings=train_eval.eval_interval={EVALS[0]}',
        '--gin_bindings=train_eval.checkpoint_interval=250']


# Starts a local Ray cluster, says its address and holds it until its
# standard input closes (Ray stays out of the test process).
CLUSTER = """
import sys
import ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
         logging_level='warning')
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


@pytest.fixture(scope='module')
def cluster():
    """The address of a local Ray cluster of 2 CPUs that the sweeps join."""
    holder = subprocess.Popen([sys.executable, '-c', CLUSTER],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        address = holder.stdout.readline().strip()
        assert address, 'the local Ray cluster did not start'
        yield address
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


def sweep_command(root, *extra, backend=('--backend=ray',)):
    return helpers.sweep_command(root, '--nocheck_configs', *backend, *extra)


def as_from_a_terminal():
    """In the child before exec: SIGINT handled and unblocked, as a command
    typed at a terminal has it. A test process may have inherited SIGINT
    ignored or blocked (from a library or a parent), and exec keeps both, so
    the sweep would never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def start(args):
    return subprocess.Popen(args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO,
                            preexec_fn=as_from_a_terminal)


def signal_state(pid):
    """The SigBlk/SigIgn/SigCgt lines of a process (Linux), for messages."""
    try:
        with open(f'/proc/{pid}/status') as f:
            return ' '.join(line.strip() for line in f
                            if line.startswith(('SigBlk', 'SigIgn',
                                                'SigCgt')))
    except OSError:
        return ''


def finish(process, timeout=600):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f'the sweep did not end in {timeout} s:\n{out}\n{err}')
    return process.returncode, out, err


def rows(run_dir):
    with open(os.path.join(run_dir, 'results.jsonl')) as f:
        return [json.loads(line) for line in f]


def training_processes(run_dir):
    """The training processes running in `run_dir`."""
    found = []
    for process in psutil.process_iter(['cmdline']):
        cmdline = process.info['cmdline'] or []
        if f'--root_dir={run_dir}' in cmdline and any(
                part.endswith('_train_eval.py') for part in cmdline):
            found.append(process)
    return found


def has_checkpoint(run_dir):
    return os.path.exists(os.path.join(run_dir, 'checkpoints', 'latest'))


def wait_for_training(run_dirs, count, sweep, checkpoints=1, timeout=300):
    """Waits until `count` of the runs train, `checkpoints` of them past
    their first checkpoint; returns {run_dir: [its training process]}."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert sweep.poll() is None, finish(sweep)
        found = {d: training_processes(d) for d in run_dirs}
        found = {d: processes for d, processes in found.items() if processes}
        if (len(found) >= count and
                sum(map(has_checkpoint, found)) >= checkpoints):
            return found
        time.sleep(0.2)
    pytest.fail(f'not {count} runs training in {run_dirs} after {timeout} s')


def test_a_ray_study_matches_the_local_backend(cluster, tiny_local_study,
                                               tmp_path):
    # The tiny study of tests/conftest.py on Ray: 'set' and 'rigl' finish,
    # 'bogus' fails in its script and is not retried.
    on_ray, local = tmp_path / 'ray', tmp_path / 'local'
    code, out, err = finish(start(sweep_command(
        on_ray, tiny.STUDY_GRID, '--seeds=1', '--max_retries=2',
        f'--address={cluster}')))
    assert code == 1, out + err
    assert ('3 runs: 0 finished before (skipped), 3 to run, each a Ray '
            'task of 1 CPU(s) with 1 intra-op thread(s)') in out
    # The status table names the node of each running run.
    assert re.search(r'\ntotal +[0-2] +[1-3] +[01] +\d\nrunning on \S.*: '
                     r'update_alg=\w+/seed_\d', out), out
    assert re.search(r'\ntotal +2 +0 +1 +0\n\[[\d:]+\] all runs over', out)
    assert len(re.findall(r'\ndone: update_alg=(set|rigl)/seed_0 in [\d:]+ '
                          r'on ', out)) == 2, out
    assert 'FAILED (exit 2): update_alg=bogus/seed_0 on ' in out
    assert "'bogus'; allowed:" in out  # the end of its log
    assert 'failed: update_alg=bogus/seed_0 (exit 2); log ' in out
    assert 'retry' not in out
    log = (on_ray / 'update_alg=bogus' / 'seed_0' / 'log.txt').read_text()
    assert log.count('\n=== ') + log.startswith('=== ') == 1, log
    # Same seeds, same thread count: bit-identical runs.
    shutil.copytree(tiny_local_study[0], local)
    dirs = sorted(str(p.parent.relative_to(on_ray))
                  for p in on_ray.glob('*/seed_*/final_metric.json'))
    assert dirs == [f'update_alg={a}/seed_0' for a in ('rigl', 'set')]
    for name in dirs:
        assert ([row['return_mean'] for row in rows(on_ray / name)] ==
                [row['return_mean'] for row in rows(local / name)]), name
        final = [json.loads((root / name / 'final_metric.json').read_text())
                 for root in (on_ray, local)]
        assert final[0]['final_return'] == final[1]['final_return']
        log = (on_ray / name / 'log.txt').read_text()
        assert re.match(r'=== [\d: -]+ \[ray task on .+, worker pid \d+\] ',
                        log), log[:300]
    # The report reads the Ray tree as it reads the local one.
    for root in (on_ray, local):
        report.build_report(str(root), reps=500, curve_reps=100,
                            log=lambda _: None)
    summary = [(root / 'report' / 'summary.csv').read_text()
               for root in (on_ray, local)]
    assert summary[0] == summary[1] and summary[0].count('\n') == 3
    markdown = [(root / 'report' / 'report.md').read_text().replace(
        str(root), 'ROOT') for root in (on_ray, local)]
    assert markdown[0] == markdown[1]
    # A rerun skips every finished run (and needs no Ray cluster).
    code, out, err = finish(start(sweep_command(on_ray, GRID, '--seeds=1',
                                                '--address=no-such-host:1')))
    assert code == 0, out + err
    assert '2 runs: 2 finished before (skipped), 0 to run' in out


def test_ctrl_c_and_a_killed_worker_leave_every_run_resumable(cluster,
                                                              tmp_path):
    root = tmp_path / 'study'
    # Runs of 2 CPUs on the cluster's 2: one trains, the other waits.
    args = sweep_command(root, *LONG, '--seeds=2', '--cpus_per_run=2',
                         '--max_retries=2', f'--address={cluster}')
    run_dirs = [root / 'default' / f'seed_{seed}' for seed in range(2)]
    sweep = start(args)
    try:
        running = wait_for_training(run_dirs, 1, sweep)
        unstarted = [d for d in run_dirs if not (d / 'log.txt').exists()]
        assert len(unstarted) == 1, unstarted
        signals = signal_state(sweep.pid)
        sweep.send_signal(signal.SIGINT)
        code, out, err = finish(sweep, timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert code == 130, f'{signals}\n{out}{err}'
    assert 'interrupted: cancelling the queued runs' in out
    # The training process is stopped before the end of its run, and the
    # queued run never starts.
    assert not psutil.wait_procs(
        [p for processes in running.values() for p in processes],
        timeout=30)[1]
    stopped, = running
    assert not (stopped / 'final_metric.json').exists(), out
    assert not (unstarted[0] / 'log.txt').exists(), out
    # The same command again: the stopped run resumes, the other starts.
    # Once the stopped run has resumed, the Ray worker running it is
    # killed: the task runs again and resumes once more.
    sweep = start(args)
    try:
        helpers.wait_for(
            lambda: 'Resumed from ' in (stopped / 'log.txt').read_text(),
            sweep, 300, 'the stopped run resumes')
        running = training_processes(stopped)
        assert len(running) == 1, running
        worker = running[0].parent()
        assert 'ray::' in ' '.join(worker.cmdline()), worker.cmdline()
        worker.kill()
        # The training process dies with its worker ...
        assert not psutil.wait_procs(running, timeout=30)[1]
        code, out, err = finish(sweep)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    # ... and the task runs again, resuming from the checkpoint.
    assert code == 0, out + err
    assert '2 runs: 0 finished before (skipped), 2 to run' in out
    assert f'retry 1 of 2: default/{stopped.name} on ' in out
    for run_dir in run_dirs:
        assert re.search(rf'\ndone: default/{run_dir.name} in [\d:]+ on ',
                         out), out
        # Every evaluation once: none lost, none repeated.
        assert [row['step'] for row in rows(run_dir)] == EVALS
        assert (run_dir / 'final_metric.json').exists()
    log = (stopped / 'log.txt').read_text()
    # Started, resumed after Ctrl-C, resumed after the kill.
    assert len(re.findall(r'^=== .*\[ray task on ', log, re.M)) == 3, log
    assert log.count('Resumed from ') == 2, log
    # Its threads follow its CPU request.
    assert 'device: CPU, 2 intra-op threads' in log
    log = (unstarted[0] / 'log.txt').read_text()
    assert log.startswith('=== ') and log.count('\n=== ') == 0, log
    assert 'Resumed from ' not in log


def test_dry_run_names_each_runs_ray_resources(tmp_path):
    root = tmp_path / 'study'
    done = subprocess.run(sweep_command(
        root, GRID, '--seeds=2', '--cpus_per_run=2', '--gpus_per_run=0.25',
        '--dry_run'), capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ('4 runs (2 groups x 2 seeds), each a Ray task of 2 CPU(s) and '
            '0.25 GPU(s) with 2 thread(s). First command:') in done.stdout
    assert not root.exists()


def test_an_unreachable_cluster_is_one_line(tmp_path):
    root = tmp_path / 'study'
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    done = subprocess.run(sweep_command(root, f'--address=127.0.0.1:{port}'),
                          capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == (
        f'error: cannot reach the Ray cluster at 127.0.0.1:{port}: '
        'Connection refused (is `ray start --head` running there? '
        'docs/cluster.md).')
    assert not root.exists()
