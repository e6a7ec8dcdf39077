"""Distributed training with Reverb: variable sync, all roles, resume."""

import json
import os
import signal
import socket
import subprocess
import sys

import gin
import numpy as np
import pytest

import helpers
import tiny
from helpers import CONFIGS

reverb = pytest.importorskip(
    'reverb', reason='dm-reverb has wheels for Linux, Python 3.8-3.11 only')

from rigl.rl import distributed  # noqa: E402
from rigl.rl import layout  # noqa: E402
from rigl.rl.tfagents import sparse_layers  # noqa: E402
from rigl.rl.tfagents import train  # noqa: E402
from rigl.rl.tfagents.loops import (  # noqa: E402
    distributed as distributed_loop)
from rigl.rl.tfagents.loops import evaluator  # noqa: E402
from rigl.rl.tfagents.run import reverb_replay  # noqa: E402
from rigl.rl.tfagents.run import settings as settings_lib  # noqa: E402
from tf_agents.experimental.distributed import (  # noqa: E402
    reverb_variable_container)

SPARSE_CONFIG = os.path.join(CONFIGS, 'sac_mujoco_sparse_config.gin')
# The SAC tests' tiny Pendulum run, with mask updates every 50 steps.
TINY = tiny.SAC_32 + ['mask_updater.update_freq = 50']


def launcher_command(root, *flags):
    return ([sys.executable, '-m', 'rigl.rl.distributed', '--algo=sac',
             '--role=all', f'--root_dir={root}', f'--gin_file={SPARSE_CONFIG}']
            + [f'--gin_bindings={binding}' for binding in TINY] + list(flags))


def actor_masks(algorithm):
    """The actor's masks, masked or sparse-execution layers alike."""
    return [layer.mask.numpy() for layer in
            sparse_layers.masked_layers(algorithm.networks['actor'])]


def test_actor_policy_gets_the_learners_masks_after_a_mask_update():
    gin.clear_config()
    gin.parse_config_files_and_bindings([SPARSE_CONFIG], TINY + [
        "mask_updater.update_alg = 'set'", 'mask_updater.update_freq = 2',
        'mask_updater.begin_step = 0'])
    algorithm_class = train.ALGORITHMS['sac']
    settings = settings_lib.build(algorithm_class.Settings, dict(
        gin.get_bindings(train.train_eval)), 'SAC')
    learner = distributed.build_algorithm(algorithm_class, settings, 0)
    actor = distributed.build_algorithm(algorithm_class, settings, 7)
    assert any((a != b).any() for a, b in zip(actor_masks(learner),
                                              actor_masks(actor)))
    variables = reverb_replay.policy_variables(learner)
    server = reverb_replay.start_server(
        reverb_replay.make_tables(
            reverb_replay.transition_signature(learner.observation_spec,
                                               learner.action_spec),
            variables, 1000, reverb_replay.RateLimit.for_run(settings)),
        None, os.path.join(os.environ.get('TMPDIR', '/tmp'),
                           f'reverb_masks_{os.getpid()}'))
    try:
        address = f'localhost:{server.port}'
        container = reverb_variable_container.ReverbVariableContainer(
            address, table_names=[reverb_replay.VARIABLES_TABLE])
        before = actor_masks(learner)
        rng = np.random.default_rng(0)
        batch = {
            'observation': rng.normal(size=(32, 3)).astype(np.float32),
            'action': rng.uniform(-2, 2, (32, 1)).astype(np.float32),
            'reward': rng.normal(size=32).astype(np.float32),
            'discount': np.ones(32, np.float32),
            'next_observation': rng.normal(size=(32, 3)).astype(np.float32)}
        for _ in range(4):
            learner.train(batch)
        after = actor_masks(learner)
        assert any((a != b).any() for a, b in zip(before, after)), (
            'SET changed no mask')
        container.push(variables)
        reverb_variable_container.ReverbVariableContainer(
            address, table_names=[reverb_replay.VARIABLES_TABLE]).update(
                reverb_replay.policy_variables(actor))
        for mine, theirs in zip(actor_masks(actor), after):
            np.testing.assert_array_equal(mine, theirs)
        assert int(actor.train_step.numpy()) == 4
        for layer in sparse_layers.kernel_layers(actor.networks['actor']):
            if isinstance(layer, sparse_layers.MaskedLayer):
                kernel = layer.kernel.numpy()
                assert (kernel[layer.mask.numpy() == 0] == 0).all()
        observation = np.zeros((1, 3), np.float32)
        np.testing.assert_allclose(
            evaluator.single_action_fn(learner.eval_policy)(observation[0]),
            evaluator.single_action_fn(actor.eval_policy)(observation[0]),
            rtol=1e-6)
    finally:
        server.stop()
        gin.clear_config()


def check_rate_limit(root, learner_restarted=False):
    with open(os.path.join(root, layout.DISTRIBUTED_STATS_FILE)) as f:
        stats = json.load(f)
    batch, ratio = stats['batch_size'], stats['samples_per_insert']
    assert ratio == 32.0  # batch_size / train_every, as the single process
    # Every train step sampled one batch; the dataset prefetches a few more,
    # and a killed learner's steps past its checkpoint were sampled twice.
    assert stats['train_steps'] * batch <= stats['samples']
    if not learner_restarted:
        assert stats['samples'] <= (stats['train_steps'] + 8) * batch
    # Reverb's limiter: samples track (inserts - min_size) x ratio within
    # the error buffer (ratio x batch_size x ... see RateLimit.for_run).
    error_buffer = max(0.1 * 100 * ratio, 2 * ratio, 4 * batch)
    drift = stats['inserts'] * ratio - 100 * ratio - stats['samples']
    assert -error_buffer - ratio <= drift <= error_buffer + ratio
    return stats


def test_all_roles_with_two_actors(tmp_path):
    """A DQN run: discrete actions (int64) through the same tables and
    loops as SAC's (whose runs are the kill and interrupt tests below)."""
    root = tmp_path / 'run'
    bindings = tiny.DQN + ['train_eval.initial_collect_steps = 100',
                           'train_eval.eval_episodes = 1']
    done = subprocess.run(
        [sys.executable, '-m', 'rigl.rl.distributed', '--algo=dqn',
         '--role=all', '--num_actors=2', f'--root_dir={root}',
         f'--gin_file={os.path.join(CONFIGS, "dqn_gym_sparse_config.gin")}']
        + [f'--gin_bindings={binding}' for binding in bindings],
        capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = helpers.results(root)
    assert [row['step'] for row in rows] == [150, 300]
    assert rows[-1]['networks']['q_network']['sparsity'] > 0.85
    assert os.path.exists(root / 'final_metric.json')
    assert os.path.isdir(root / 'checkpoints' / 'ckpt-300')
    assert os.listdir(root / 'reverb'), 'no Reverb checkpoint'
    check_rate_limit(root)  # batch 32, 100 initial steps, as SAC's
    for index in range(2):
        with open(root / 'actors' / f'actor_{index}' / 'stats.json') as f:
            inserted = json.load(f)['inserted']
        assert inserted > 0, f'actor {index} inserted nothing'
    assert rows[-1]['env_steps'] > 300


def test_killed_processes_restart_and_an_interrupted_launcher_resumes(
        tmp_path):
    """Killed learner and actor: the launcher restarts both and the learner
    resumes from its checkpoint. Then Ctrl-C: the launcher stops (130), and
    the same command resumes the run with the server's replay data."""
    root = tmp_path / 'run'
    command = launcher_command(
        root, '--num_actors=1', '--gin_bindings=train_eval.num_iterations=600',
        '--gin_bindings=train_eval.eval_interval=300',
        '--gin_bindings=train_eval.checkpoint_interval=150')
    log = open(tmp_path / 'launcher.log', 'w')
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    actor_stats = root / 'actors' / 'actor_0' / 'stats.json'

    def restarted_actor_reported():
        try:
            return json.loads(actor_stats.read_text())['restarts'] == 1
        except (OSError, ValueError):  # not yet written, or mid-write
            return False

    try:
        helpers.wait_for(
            lambda: os.path.isdir(root / 'checkpoints' / 'ckpt-150'),
            process, 300, 'the first checkpoint')
        with open(root / 'logs' / distributed.PROCESSES_FILE) as f:
            pids = json.load(f)
        os.kill(pids['learner'], signal.SIGKILL)
        os.kill(pids['actor_0'], signal.SIGKILL)
        # The restarted learner checkpoints again, the restarted actor
        # reports its attempt; then Ctrl-C.
        helpers.wait_for(
            lambda: os.path.isdir(root / 'checkpoints' / 'ckpt-300')
            and restarted_actor_reported(), process, 300,
            'a checkpoint and an actor report after the restarts')
        # The Reverb checkpoint is taken just before the learner's.
        assert [name for name in os.listdir(root / 'reverb')
                if not name.startswith('.')]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    output = (tmp_path / 'launcher.log').read_text()
    assert 'learner exited with -9; restarting it' in output, output[-3000:]
    assert 'actor_0 exited with -9; restarting it' in output, output[-3000:]
    assert 'Resumed from' in output and 'at train step' in output
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert 'Resumed from' in done.stdout
    server_log = (root / 'logs' / 'server.log').read_text()
    assert 'successfully loaded from checkpoint' in server_log
    # Every evaluation once: none lost, none repeated.
    assert [row['step'] for row in helpers.results(root)] == [300, 600]
    check_rate_limit(root, learner_restarted=True)


def busy_port():
    """A socket listening on a free port (close it when done)."""
    listener = socket.socket()
    listener.bind(('', 0))
    listener.listen()
    return listener


def free_port():
    with socket.socket() as probe:
        probe.bind(('', 0))
        return probe.getsockname()[1]


BAD_INPUTS = [
    (['--role=learner'], '--role=learner needs --replay_address'),
    (['--role=all', '--gin_bindings=train_eval.batch_sise = 3'],
     'batch_sise is not a SAC setting'),
    (['--role=all', '--samples_per_insert=-1'],
     '--samples_per_insert must be positive'),
    (['--role=learner', '--replay_address=localhost'],
     "--replay_address='localhost': expected HOST:PORT, e.g. localhost:8000."),
    (['--role=actor', '--replay_address=localhost:'],
     "--replay_address='localhost:': expected HOST:PORT"),
    (['--role=learner', '--replay_address=localhost:abc'],
     "--replay_address='localhost:abc': the port 'abc' is not a number; "
     'allowed: 1-65535.'),
    (['--role=actor', '--replay_address=localhost:70000'],
     "--replay_address='localhost:70000': port 70000 is out of range; "
     'allowed: 1-65535.'),
    (['--role=server', '--port=70000'],
     '--port: port 70000 is out of range; allowed: 1-65535.'),
    (['--role=all', '--port=65536'],
     '--port: port 65536 is out of range; allowed: 1-65535.'),
    (['--role=actor', '--replay_address=localhost:8000', '--num_actors=2',
      '--actor_index=2'], '--actor_index=2: allowed 0..1 (--num_actors=2).'),
    (['--role=learner', '--replay_address=localhost:8000',
      '--connect_timeout=0'], '--connect_timeout=0: must be > 0 seconds.'),
]

# Runs `python -m rigl.rl.distributed` on each of many flag lists in one
# process (one TensorFlow start-up for all of them): args JSON, a list of
# [root_dir, flags]; prints a JSON list of [exit code, stderr, seconds]. Each
# case's
# stderr is what its own process would print there: file descriptor 2
# (C++ logs included) goes to a file while it runs.
BAD_INPUT_DRIVER = r'''
import json, os, sys, tempfile, time
import gin
from absl import app, flags
from rigl.rl import distributed
from rigl.rl.tfagents.run import console

distributed.define_flags()
outcomes = []
for root_dir, case_flags in json.loads(sys.argv[1]):
    flags.FLAGS.unparse_flags()
    gin.clear_config()
    argv = ['distributed', '--algo=sac', f'--root_dir={root_dir}',
            "--gin_bindings=train_eval.env_name = 'Pendulum-v1'", *case_flags]
    sys.argv = argv  # the launcher passes its own flags on to its children
    started = time.time()
    with tempfile.TemporaryFile('w+') as captured:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        try:
            app.run(distributed.main, argv=argv,
                    flags_parser=console.parse_flags)
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        outcomes.append([code, captured.read(), time.time() - started])
sys.stdout.flush()
print('OUTCOMES ' + json.dumps(outcomes))
'''


@pytest.fixture(scope='module')
def bad_input_outcomes(tmp_path_factory):
    """{case: (exit code, stderr, root_dir, seconds)}, all in one process:
    each of BAD_INPUTS (case: its index), a learner and an actor that
    nobody answers ('learner', 'actor'; their port under 'port'), a
    launcher on a busy port ('busy'; the port under 'busy_port') and a
    launcher whose server fails ('server')."""
    directory = tmp_path_factory.mktemp('bad_inputs')
    cases = {index: flags for index, (flags, _) in enumerate(BAD_INPUTS)}
    port = free_port()
    for role in ('learner', 'actor'):
        cases[role] = [f'--role={role}', f'--replay_address=localhost:{port}',
                       '--connect_timeout=1']
    listener = busy_port()
    busy = listener.getsockname()[1]
    cases['busy'] = ['--role=all', f'--port={busy}']
    # A server that cannot start: its root_dir/reverb is a file.
    cases['server'] = (['--role=all', '--num_actors=1',
                        f'--gin_file={SPARSE_CONFIG}'] +
                       [f'--gin_bindings={binding}' for binding in TINY])
    roots = {case: str(directory / f'run_{case}') for case in cases}
    os.makedirs(roots['server'])
    with open(os.path.join(roots['server'], 'reverb'), 'w') as f:
        f.write('not a directory')
    try:
        done = subprocess.run(
            [sys.executable, '-c', BAD_INPUT_DRIVER,
             json.dumps([[roots[case], flags]
                         for case, flags in cases.items()])],
            capture_output=True, text=True, timeout=300, cwd=helpers.REPO)
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr[-3000:]
    line, = [line for line in done.stdout.splitlines()
             if line.startswith('OUTCOMES ')]
    outcomes = json.loads(line[len('OUTCOMES '):])
    found = {case: (code, output, roots[case], seconds)
             for case, (code, output, seconds) in zip(cases, outcomes)}
    return dict(found, port=port, busy_port=busy)


@pytest.mark.parametrize('index', range(len(BAD_INPUTS)),
                         ids=[message for _, message in BAD_INPUTS])
def test_bad_input_is_one_line(bad_input_outcomes, index):
    code, stderr, root, _ = bad_input_outcomes[index]
    message = BAD_INPUTS[index][1]
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert message in stderr and len(lines) == 1, stderr
    assert lines[0].startswith('error: ')
    assert not os.path.exists(root)


@pytest.mark.parametrize('role', ['learner', 'actor'])
def test_nothing_listening_is_one_line_after_the_timeout(bad_input_outcomes,
                                                         role):
    code, stderr, root, seconds = bad_input_outcomes[role]
    port = bad_input_outcomes['port']
    assert code == 2, stderr
    assert seconds < 30  # --connect_timeout=1, not the default 60
    assert stderr.strip() == (
        f'error: no Reverb server answered at localhost:{port} within 1 s; '
        'start one with --role=server, or check --replay_address.')
    assert not os.path.exists(root)  # nothing written, no lock


def test_connect_names_the_address_and_checks_the_tables(tmp_path):
    port = free_port()
    with pytest.raises(ValueError, match=(
            f'no Reverb server answered at localhost:{port} within 1 s')):
        reverb_replay.connect(f'localhost:{port}', timeout=1)
    with pytest.raises(ValueError, match='expected HOST:PORT'):
        reverb_replay.connect('localhost', timeout=1)
    other = reverb.Server(tables=[reverb.Table(
        'other', reverb.selectors.Uniform(), reverb.selectors.Fifo(), 10,
        reverb.rate_limiters.MinSize(1))])
    try:
        with pytest.raises(ValueError, match=(
                f'the Reverb server at localhost:{other.port} has no replay '
                'or variables table: not a rigl.rl.distributed server')):
            reverb_replay.connect(f'localhost:{other.port}', timeout=5)
    finally:
        other.stop()


def test_addresses_and_ports():
    assert reverb_replay.parse_address('example.org:8000') == (
        'example.org', 8000)
    assert reverb_replay.parse_address('[::1]:65535') == ('[::1]', 65535)
    for bad, message in (('8000', 'expected HOST:PORT'),
                         (':8000', 'expected HOST:PORT'),
                         ('host:0', 'port 0 is out of range'),
                         ('host:-1', 'port -1 is out of range'),
                         ('host:65536', 'port 65536 is out of range'),
                         ('host:8o', "the port '8o' is not a number")):
        with pytest.raises(ValueError, match=message):
            reverb_replay.parse_address(bad)
    listener = busy_port()
    try:
        port = listener.getsockname()[1]
        with pytest.raises(ValueError, match=(
                f'port {port} is in use by another process; choose another '
                '--port')):
            reverb_replay.start_server([], port, '/nonexistent/reverb')
    finally:
        listener.close()


def test_launcher_with_a_busy_port_is_one_line(bad_input_outcomes):
    code, stderr, root, _ = bad_input_outcomes['busy']
    assert code == 2, stderr
    assert stderr.strip() == (
        f'error: port {bad_input_outcomes["busy_port"]} is in use by another '
        'process; choose another --port.')
    assert not os.path.exists(root)


def test_launcher_shows_the_servers_own_error(bad_input_outcomes):
    """A server that fails to start (here: root_dir/reverb is a file) is
    reported by its own one-line error, not as 'the server exited'."""
    code, stderr, root, _ = bad_input_outcomes['server']
    assert code == 2, stderr[-3000:]
    assert stderr.strip() == (
        f"error: the Reverb server exited with 2: [Errno 17] File exists: "
        f"'{root}/reverb' (log: {root}/logs/server.log)")
    with open(os.path.join(root, 'reverb')) as f:
        assert f.read() == 'not a directory'


def test_launcher_reads_the_error_of_the_servers_last_attempt(tmp_path):
    """Only what the server wrote since it was last started counts; its
    last `error:` line, else its last line."""
    launcher = distributed.Launcher(str(tmp_path), [])
    os.makedirs(launcher.logs)
    log = os.path.join(launcher.logs, 'server.log')
    with open(log, 'w') as f:
        f.write('error: an old attempt\n')
    launcher.log_starts['server'] = os.path.getsize(log)
    with open(log, 'a') as f:
        f.write('Traceback (most recent call last):\n  ...\n'
                'RuntimeError: the real reason\n')
    assert launcher.child_error('server') == 'RuntimeError: the real reason'
    with open(log, 'a') as f:
        f.write('error: port 8000 is in use\nshutting down\n')
    assert launcher.child_error('server') == 'port 8000 is in use'
    launcher.address = f'localhost:{free_port()}'
    launcher.children['server'] = subprocess.Popen(
        [sys.executable, '-c', 'raise SystemExit(2)'])
    launcher.children['server'].wait()
    with pytest.raises(ValueError, match=(
            r'^the Reverb server exited with 2: port 8000 is in use \(log: ')):
        launcher._wait_for_server(timeout=10)
