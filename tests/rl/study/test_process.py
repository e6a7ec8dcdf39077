"""A run's process ends with whatever started it: the parent guard (a
killed sweep, Ray worker or launcher leaves nothing training) and SIGTERM
stopping a local sweep's runs as Ctrl-C does."""

import os
import re
import signal
import subprocess
import sys

import pytest

import helpers
from rigl.rl.study import process

# Sleeps until killed, after printing 'pid=<its process id>' (a line that
# its command, which a run's log also shows, does not contain).
SLEEPER = [sys.executable, '-c', 'import os, time; '
           'print("pid=%d" % os.getpid(), flush=True); time.sleep(120)']

# Starts SLEEPER guarded (argv[1]: the signal), prints its pid, then waits:
# the test kills this parent and watches the child.
PARENT = r'''
import subprocess, sys, time
from rigl.rl.study import process
child = subprocess.Popen(process.guarded(%r, int(sys.argv[1])),
                         stdout=subprocess.PIPE, text=True)
assert child.stdout.readline() == f'pid={child.pid}\n'
print(child.pid, flush=True)
time.sleep(120)
''' % SLEEPER


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f'/proc/{pid}/stat') as f:  # a zombie has ended
        return f.read().split(') ')[1][0] != 'Z'


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='the guard uses Linux prctl')
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL])
def test_a_guarded_child_gets_its_signal_when_the_parent_is_killed(sig):
    parent = subprocess.Popen([sys.executable, '-c', PARENT, str(int(sig))],
                              stdout=subprocess.PIPE, text=True,
                              cwd=helpers.REPO)
    try:
        child = int(parent.stdout.readline())
        assert pid_exists(child)
        parent.kill()
        parent.wait()
        helpers.wait_for(lambda: not pid_exists(child), None, 30,
                         'the guarded child to end with its parent')
    finally:
        if parent.poll() is None:
            parent.kill()


def test_the_guard_keeps_the_process_id_and_passes_the_arguments(tmp_path):
    done = subprocess.run(
        process.guarded([sys.executable, '-c',
                         'import os, sys; print(os.getpid(), sys.argv[1:])',
                         'a b', '--flag=1']),
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(' ', 1)[1].strip() == "['a b', '--flag=1']"


# `python -m rigl.rl.sweep` with each run's command replaced by SLEEPER
# (argv: the sweep's flags).
SWEEP_DRIVER = r'''
import sys
from absl import app
from rigl.rl import sweep
from rigl.rl.study import local
local.command = lambda script, run: %r
sweep.define_flags()
app.run(sweep.main, argv=['sweep'] + sys.argv[1:])
''' % SLEEPER


def test_sigterm_stops_a_sweeps_runs_as_ctrl_c_does(tmp_path):
    root = tmp_path / 'study'
    driver = subprocess.Popen(
        [sys.executable, '-c', SWEEP_DRIVER, '--script=sac', '--seeds=3',
         '--workers=2', '--nocheck_configs', f'--root_dir={root}'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=helpers.REPO)
    logs = [root / 'default' / f'seed_{seed}' / 'log.txt'
            for seed in range(3)]

    def sleeper_pid(log):
        found = log.exists() and re.search(r'^pid=(\d+)$', log.read_text(),
                                           re.M)
        return int(found.group(1)) if found else None

    try:
        helpers.wait_for(lambda: all(map(sleeper_pid, logs[:2])), driver,
                         60, 'two runs start')
        sleepers = [sleeper_pid(log) for log in logs[:2]]
        driver.send_signal(signal.SIGTERM)
        out, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 143, out
    assert 'interrupted: stopping the running runs' in out
    assert not logs[2].exists(), out  # the queued run never started
    # The sweep stopped both running runs before it exited.
    assert not any(map(pid_exists, sleepers))
