r"""Distributed off-policy training with Reverb: actors, a learner, a server.

One machine, everything (the launcher supervises the processes, restarts
any that dies, and Ctrl-C stops them all):

  python -m rigl.rl.distributed --algo=sac --role=all --num_actors=2 \
    --gin_file=rigl/rl/tfagents/configs/sac_mujoco_sparse_config.gin \
    --root_dir=/tmp/sparserl/sac_reverb

One role per process, e.g. the server and learner on machine A and actors on
machine B (every role takes the same gin files and bindings):

  A$ python -m rigl.rl.distributed --role=server --port=8000 ... &
  A$ python -m rigl.rl.distributed --role=learner \
       --replay_address=localhost:8000 --num_actors=4 ...
  B$ python -m rigl.rl.distributed --role=actor --actor_index=0 \
       --num_actors=4 --replay_address=A:8000 ...

The learner and actors wait up to --connect_timeout seconds (60) for the
server to answer, then stop with one line naming the address; a malformed
address, a port outside 1-65535 and --actor_index >= --num_actors are
refused before anything starts.

The learner writes what `sac_train_eval.py` writes to root_dir (TensorBoard,
results.jsonl, checkpoints, final_metric.json) and resumes the same way; the
server checkpoints its tables to root_dir/reverb/ with each learner
checkpoint and reloads them when restarted; actors write episode summaries
to root_dir/actors/actor_<i>/.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

from absl import app
from absl import flags
import gin

from tf_agents.specs import tensor_spec

from rigl.rl.study import process as process_lib
from rigl.rl.tfagents import envs
from rigl.rl.tfagents import train
from rigl.rl.tfagents.loops import distributed as distributed_loop
from rigl.rl.tfagents.loops import session as session_lib
from rigl.rl.tfagents.run import checkpoints
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import reverb_replay
from rigl.rl.tfagents.run import run_dir as run_dir_lib
from rigl.rl.tfagents.run import seeding
from rigl.rl.tfagents.run import settings as settings_lib

ROLES = ('all', 'server', 'learner', 'actor')
DISTRIBUTED_ALGORITHMS = ('sac', 'td3', 'dqn')
LOGS_DIR = 'logs'
PROCESSES_FILE = 'processes.json'

FLAGS = flags.FLAGS


def define_flags() -> None:
    console.define_flags()
    flags.DEFINE_enum('algo', 'sac', DISTRIBUTED_ALGORITHMS, 'The agent.')
    flags.DEFINE_enum('role', 'all', ROLES,
                      'all: a server, num_actors actors and a learner on this '
                      'machine; or one of them alone.')
    flags.DEFINE_integer('num_actors', 2, 'Actors collecting at once (they '
                         'share the initial random collection).',
                         lower_bound=1)
    flags.DEFINE_integer('actor_index', 0, 'This actor (--role=actor).',
                         lower_bound=0)
    flags.DEFINE_integer('actor_attempt', 0, 'Restarts of this actor so far '
                         '(each attempt draws new random streams).',
                         lower_bound=0)
    flags.DEFINE_string('replay_address', None, 'HOST:PORT of the Reverb '
                        'server (learner, actor; --role=all picks a free '
                        'port on localhost when not given).')
    flags.DEFINE_integer('port', None, 'Port of the server (--role=server; '
                         'default: the port of --replay_address).')
    flags.DEFINE_float('samples_per_insert', None, 'Items the learner samples '
                       'per inserted transition (default: batch_size / '
                       'train_every, as the single-process loop).')
    flags.DEFINE_integer('push_period', 100, 'Learner train steps between '
                         'pushes of the policy variables.', lower_bound=1)
    flags.DEFINE_integer('pull_period', 100, 'Actor env steps between pulls '
                         'of the policy variables.', lower_bound=1)
    flags.DEFINE_integer('max_restarts', 3, 'Restarts of each process before '
                         'the launcher gives up (--role=all).', lower_bound=0)
    flags.DEFINE_float('connect_timeout', 60.0, 'Seconds the learner and '
                       'actors wait for the Reverb server to answer before '
                       'they give up with an error.')


def bound_settings(algorithm_class):
    """The algorithm's settings from the parsed gin `train_eval` bindings."""
    params = dict(gin.get_bindings(train.train_eval))
    for name in ('root_dir', 'algorithm', 'allow_config_change'):
        params.pop(name, None)
    return settings_lib.build(algorithm_class.Settings, params,
                              algorithm_class.name.upper())


def options() -> distributed_loop.Options:
    """The learner's or actor's options, with the flags checked.

    Raises:
        ValueError: on a missing or malformed --replay_address, an
            --actor_index outside 0..num_actors-1 or a non-positive
            --connect_timeout.
    """
    if not FLAGS.replay_address:
        raise ValueError(
            f'--role={FLAGS.role} needs --replay_address=HOST:PORT.')
    reverb_replay.parse_address(FLAGS.replay_address)
    if FLAGS.role == 'actor' and FLAGS.actor_index >= FLAGS.num_actors:
        raise ValueError(f'--actor_index={FLAGS.actor_index}: allowed 0..'
                         f'{FLAGS.num_actors - 1} (--num_actors='
                         f'{FLAGS.num_actors}).')
    if not FLAGS.connect_timeout > 0:
        raise ValueError(f'--connect_timeout={FLAGS.connect_timeout:g}: '
                         'must be > 0 seconds.')
    return distributed_loop.Options(
        address=FLAGS.replay_address, num_actors=FLAGS.num_actors,
        push_period=FLAGS.push_period, pull_period=FLAGS.pull_period,
        connect_timeout=FLAGS.connect_timeout)


def server_port() -> Optional[int]:
    """--port, else the port of --replay_address, else None (checked)."""
    if FLAGS.port is not None:
        return reverb_replay.check_port(FLAGS.port, '--port')
    if FLAGS.replay_address:
        return reverb_replay.parse_address(FLAGS.replay_address)[1]
    return None


def build_algorithm(algorithm_class, settings, seed: int):
    """The algorithm on the run's environment specs (no session)."""
    env = envs.create_environment(env_name=settings.env_name, seed=seed)
    try:
        return algorithm_class(
            settings, tensor_spec.from_spec(env.observation_spec()),
            tensor_spec.from_spec(env.action_spec()), seed)
    finally:
        env.close()


def run_server(root_dir: str, allow_config_change: bool) -> None:
    """Serves the replay and variables tables until killed."""
    del allow_config_change
    port = server_port()
    if port is None:
        raise ValueError('--role=server needs --port (or --replay_address).')
    reverb_replay.check_port_free(port)
    algorithm_class = train.ALGORITHMS[FLAGS.algo]
    settings = bound_settings(algorithm_class)
    algorithm = build_algorithm(algorithm_class, settings, settings.seed or 0)
    rate_limit = reverb_replay.RateLimit.for_run(settings,
                                                 FLAGS.samples_per_insert)
    tables = reverb_replay.make_tables(
        reverb_replay.transition_signature(algorithm.observation_spec,
                                           algorithm.action_spec),
        reverb_replay.policy_variables(algorithm), settings.replay_size,
        rate_limit)
    server = reverb_replay.start_server(
        tables, port, os.path.join(root_dir, reverb_replay.CHECKPOINT_DIR))
    console.log(f'server: Reverb on port {port}; '
                f'{rate_limit.samples_per_insert:g} samples per insert (error '
                f'buffer '
                f'{rate_limit.error_buffer:,.0f}), sampling from '
                f'{rate_limit.min_size:,} transitions.')
    server.wait()


def run_learner(root_dir: str, allow_config_change: bool) -> None:
    run_options = options()
    algorithm_class = train.ALGORITHMS[FLAGS.algo]
    run_dir_lib.check_root_dir(root_dir)
    settings = bound_settings(algorithm_class)
    with session_lib.Session(root_dir, algorithm_class, settings,
                             allow_config_change) as session:
        distributed_loop.learn(session, run_options)


def run_actor(root_dir: str, allow_config_change: bool) -> None:
    del allow_config_change
    run_options = options()
    algorithm_class = train.ALGORITHMS[FLAGS.algo]
    settings = bound_settings(algorithm_class)
    seed = seeding.resolve(settings.seed)
    algorithm = build_algorithm(algorithm_class, settings, seed)
    distributed_loop.act(algorithm, settings, seed, FLAGS.actor_index,
                         FLAGS.actor_attempt, run_options, root_dir)


class Launcher:
    """Runs and supervises a server, actors and a learner on this machine.

    The learner's output goes to this console; the server's and each actor's
    to root_dir/logs/. Every process runs TensorFlow ops on one intra-op
    thread unless TF_NUM_INTRAOP_THREADS is set (actors and the server also
    get OMP_NUM_THREADS=1; the learner follows the CPU default of
    `console.configure_devices`). A process that dies is restarted (the
    learner resumes from its checkpoint; an actor loses at most its episode
    in progress) up to --max_restarts times; the run ends when the learner
    finishes.
    """

    def __init__(self, root_dir: str, argv: List[str]):
        self.root_dir = root_dir
        self.logs = os.path.join(root_dir, LOGS_DIR)
        self.argv = argv
        self.children: Dict[str, subprocess.Popen] = {}
        self.restarts: Dict[str, int] = {}
        self.log_starts: Dict[str, int] = {}  # each log's size at spawn
        self.address = ''

    def _command(self, role: str, *extra: str) -> List[str]:
        return [sys.executable, '-m', 'rigl.rl.distributed', f'--role={role}',
                f'--replay_address={self.address}', *self.argv, *extra]

    def _spawn(self, name: str) -> None:
        role, _, index = name.partition('_')
        extra = ([f'--actor_index={index}',
                  f'--actor_attempt={self.restarts.get(name, 0)}']
                 if role == 'actor' else [])
        output = None
        if role != 'learner':
            output = open(os.path.join(self.logs, f'{name}.log'), 'a')
            self.log_starts[name] = output.tell()
        environment = dict(os.environ)
        if role != 'learner':  # batch-1 inference: one thread each
            environment.setdefault('TF_NUM_INTRAOP_THREADS', '1')
            environment.setdefault('OMP_NUM_THREADS', '1')
        # Children get SIGTERM when the launcher dies.
        self.children[name] = subprocess.Popen(
            process_lib.guarded(self._command(role, *extra)), stdout=output,
            stderr=subprocess.STDOUT if output else None, env=environment)
        if output:
            output.close()
        self._write_processes()

    def _write_processes(self) -> None:
        checkpoints.write_atomically(
            os.path.join(self.logs, PROCESSES_FILE),
            json.dumps({name: child.pid for name, child in
                        self.children.items()}, indent=2))

    def child_error(self, name: str) -> str:
        """The one-line error a child wrote to its log since it was last
        started (its `error: ...` line, else its last line)."""
        path = os.path.join(self.logs, f'{name}.log')
        try:
            with open(path, errors='replace') as f:
                f.seek(self.log_starts.get(name, 0))
                lines = [line.strip() for line in f if line.strip()]
        except OSError:
            lines = []
        errors = [line for line in lines if line.startswith('error: ')]
        if errors:
            return errors[-1][len('error: '):]
        return lines[-1] if lines else 'no output'

    def _wait_for_server(self, timeout: float = 120.0) -> None:
        """Waits until the server accepts connections.

        Raises:
            ValueError: with the server's own error line if it exits, or
                when it does not start in `timeout` seconds.
        """
        host, _, port = self.address.rpartition(':')
        deadline = time.time() + timeout
        log = os.path.join(self.logs, 'server.log')
        while time.time() < deadline:
            code = self.children['server'].poll()
            if code is not None:
                raise ValueError(f'the Reverb server exited with {code}: '
                                 f'{self.child_error("server")} (log: {log})')
            with socket.socket() as probe:
                if probe.connect_ex((host, int(port))) == 0:
                    return
            time.sleep(0.2)
        raise ValueError(f'the Reverb server did not start in {timeout:.0f} '
                         f's (log: {log})')

    def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.time() + 10
        for child in self.children.values():
            try:
                child.wait(max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                child.kill()

    def run(self, num_actors: int, port: Optional[int]) -> int:
        """Starts and supervises every process; returns the exit code."""
        os.makedirs(self.logs, exist_ok=True)
        if port is None:
            import portpicker  # pylint: disable=import-outside-toplevel
            port = portpicker.pick_unused_port()
        self.address = f'localhost:{port}'
        console.log(f'launcher: Reverb server at {self.address}, '
                    f'{num_actors} actor(s), one learner; logs in {self.logs}')
        self._spawn('server')
        self._wait_for_server()
        self._spawn('learner')
        for index in range(num_actors):
            self._spawn(f'actor_{index}')
        while True:
            time.sleep(0.5)
            for name, child in list(self.children.items()):
                code = child.poll()
                if code is None:
                    continue
                if name == 'learner' and code in (0, 2):
                    return code  # done, or a configuration error
                if self.restarts.get(name, 0) >= FLAGS.max_restarts:
                    console.log(f'launcher: {name} exited with {code} '
                                f'{FLAGS.max_restarts + 1} times; stopping.')
                    return 1
                if name.startswith('actor') and code == 0:
                    del self.children[name]  # it saw the learner finish
                    continue
                self.restarts[name] = self.restarts.get(name, 0) + 1
                console.log(
                    f'launcher: {name} exited with {code}; restarting it '
                    f'({self.restarts[name]}/{FLAGS.max_restarts}).')
                if name == 'server':
                    self._spawn(name)
                    self._wait_for_server()
                else:
                    self._spawn(name)


def child_arguments(argv: List[str], seed: int) -> List[str]:
    """The launcher's own flags that every role shares, and the run seed."""
    drop = ('--role', '--replay_address', '--port', '--actor_index',
            '--actor_attempt')
    kept = [arg for arg in argv[1:]
            if not arg.split('=')[0] in drop]
    return kept + [f'--gin_bindings=train_eval.seed={seed}']


def launch(root_dir: str, allow_config_change: bool) -> int:
    """--role=all: checks the config, fixes the seed, clears stale Reverb
    data of a run that has no checkpoint, and supervises the processes."""
    del allow_config_change
    reverb_replay.require_reverb()
    port = server_port()
    if port is not None:
        reverb_replay.check_port_free(port)
    if not FLAGS.connect_timeout > 0:
        raise ValueError(f'--connect_timeout={FLAGS.connect_timeout:g}: '
                         'must be > 0 seconds.')
    run_dir_lib.check_root_dir(root_dir)
    settings = bound_settings(train.ALGORITHMS[FLAGS.algo])
    reverb_replay.RateLimit.for_run(settings, FLAGS.samples_per_insert)
    directory = run_dir_lib.RunDir(root_dir)
    directory.lock()  # fails with a clear message if a run holds it
    directory.unlock()
    checkpointer = checkpoints.Checkpointer(root_dir)
    saved = next(filter(None, map(checkpointer.read_config,
                                  checkpointer.candidates())), None)
    seed = settings.seed
    if seed is None:
        seed = int(saved['seed']) if saved and 'seed' in saved else (
            seeding.resolve(None))
    if saved is None:
        shutil.rmtree(os.path.join(root_dir, reverb_replay.CHECKPOINT_DIR),
                      ignore_errors=True)
    launcher = Launcher(root_dir, child_arguments(sys.argv, seed))
    try:
        with process_lib.stop_on(signal.SIGINT, signal.SIGTERM):
            return launcher.run(FLAGS.num_actors, port)
    except KeyboardInterrupt:
        console.log('launcher: interrupted; stopping every process.')
        return 130
    finally:
        launcher.stop()


ROLE_MAINS = {'server': run_server, 'learner': run_learner,
              'actor': run_actor}


def main(argv) -> None:
    del argv
    if not FLAGS.verbose:
        console.quiet_libraries()
    if FLAGS.role == 'all':
        result = {}
        code = console.run_cli(
            lambda root_dir, allow: result.update(
                code=launch(root_dir, allow)),
            FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.root_dir,
            FLAGS.allow_config_change)
        sys.exit(code or result.get('code', 0))
    if FLAGS.role == 'learner':
        console.log(console.configure_devices())
    code = console.run_cli(ROLE_MAINS[FLAGS.role], FLAGS.gin_file,
                           FLAGS.gin_bindings, FLAGS.root_dir,
                           FLAGS.allow_config_change)
    if code:
        sys.exit(code)


if __name__ == '__main__':
    define_flags()
    app.run(main, flags_parser=console.parse_flags)
