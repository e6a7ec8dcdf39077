"""Reverb tables of a distributed run: transitions and policy variables.

The server holds two tables:
  replay     one item per transition (observation, action, reward, discount,
             next observation), sampled uniformly, oldest removed first, with
             a `SampleToInsertRatio` rate limiter: the learner samples
             `samples_per_insert` items per inserted transition (within
             `error_buffer`), whatever the number of actors;
  variables  the policy's variables and the learner's train step (one item,
             the newest), for TF-Agents' `ReverbVariableContainer`.
Reverb's own checkpointer saves both tables; a server started on the same
directory reloads the newest checkpoint.
"""

import dataclasses
import errno
import os
import socket
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from rigl.rl.tfagents.run.replay import ReplayBuffer

try:  # Reverb has wheels for Python 3.8-3.11 on Linux only.
    import reverb
except ImportError:  # pragma: no cover - depends on the platform
    reverb = None

REPLAY_TABLE = 'replay'
VARIABLES_TABLE = 'variables'
CHECKPOINT_DIR = 'reverb'
MAX_PORT = 65535


def require_reverb() -> None:
    if reverb is None:
        raise ValueError('distributed training needs dm-reverb (Linux, Python '
                         '3.8-3.11): pip install dm-reverb==0.14.0')


def check_port(port, what: str) -> int:
    """`port` as an int in 1..65535; ValueError naming `what` otherwise."""
    try:
        value = int(str(port).strip())
    except ValueError:
        raise ValueError(f'{what}: the port {str(port)!r} is not a number; '
                         f'allowed: 1-{MAX_PORT}.') from None
    if not 1 <= value <= MAX_PORT:
        raise ValueError(f'{what}: port {value} is out of range; allowed: '
                         f'1-{MAX_PORT}.')
    return value


def parse_address(address: str,
                  flag: str = '--replay_address') -> Tuple[str, int]:
    """'HOST:PORT' -> (HOST, PORT), with the port checked.

    Raises:
        ValueError: naming the flag and the address when there is no host,
            no port, or a port that is not 1..65535.
    """
    host, separator, port = (address or '').strip().rpartition(':')
    if not separator or not host or not port:
        raise ValueError(f'{flag}={address!r}: expected HOST:PORT, e.g. '
                         'localhost:8000.')
    return host, check_port(port, f'{flag}={address!r}')


def check_port_free(port: int) -> None:
    """Raises ValueError if another process listens on `port` here."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(('', port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise ValueError(f'port {port} is in use by another process; '
                             'choose another --port.') from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def connect(address: str, timeout: float):
    """A client of the run's Reverb server at `address`, once it answers.

    Retries until `timeout` seconds have passed (a server started at the
    same time may still be loading its checkpoint).

    Raises:
        ValueError: naming the address when no server answers in time, or
            when the server there lacks this suite's tables.
    """
    require_reverb()
    parse_address(address)
    client = reverb.Client(address)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            info = client.server_info(timeout=max(1, int(min(left, 5.0))))
            break
        except Exception as error:  # pylint: disable=broad-except
            if time.monotonic() + 0.5 >= deadline:
                detail = ('' if isinstance(
                    error, reverb.errors.DeadlineExceededError) else
                          f' ({_first_line(error)})')
                raise ValueError(
                    f'no Reverb server answered at {address} within '
                    f'{timeout:g} s{detail}; start one with --role=server, '
                    'or check --replay_address.') from None
            time.sleep(0.5)
    missing = [name for name in (REPLAY_TABLE, VARIABLES_TABLE)
               if name not in info]
    if missing:
        raise ValueError(f'the Reverb server at {address} has no '
                         f'{" or ".join(missing)} table: not a '
                         'rigl.rl.distributed server; check --replay_address.')
    return client


@dataclasses.dataclass(frozen=True)
class RateLimit:
    """How many items the learner samples per inserted transition.

    Attributes:
        samples_per_insert: sampled items per inserted transition; the single
            process loop's ratio is batch_size / train_every.
        min_size: transitions in the table before the first sample (the
            run's initial_collect_steps).
        error_buffer: how far (in sampled items) either side may run ahead
            of the ratio before Reverb blocks it.
    """
    samples_per_insert: float
    min_size: int
    error_buffer: float

    @classmethod
    def for_run(cls, settings, samples_per_insert: Optional[float] = None,
                tolerance: float = 0.1) -> 'RateLimit':
        """The run's ratio (default: the single-process loop's), with an
        error buffer of `tolerance` x the items sampled from the initial
        collection, and never less than two batches."""
        ratio = samples_per_insert or (settings.batch_size /
                                       settings.train_every)
        if not ratio > 0:
            raise ValueError(f'--samples_per_insert must be positive, got '
                             f'{samples_per_insert}.')
        min_size = settings.initial_collect_steps
        buffer = max(tolerance * min_size * ratio, 2.0 * ratio,
                     4.0 * settings.batch_size)
        return cls(float(ratio), int(min_size), float(buffer))

    def limiter(self):
        return reverb.rate_limiters.SampleToInsertRatio(
            samples_per_insert=self.samples_per_insert,
            min_size_to_sample=self.min_size, error_buffer=self.error_buffer)


def transition_signature(observation_spec, action_spec) -> Dict:
    """The replay table's item: one whole transition (as the numpy replay)."""
    observation = tf.TensorSpec(observation_spec.shape, tf.float32)
    return {'observation': observation,
            'action': tf.TensorSpec(action_spec.shape, action_spec.dtype),
            'reward': tf.TensorSpec([], tf.float32),
            'discount': tf.TensorSpec([], tf.float32),
            'next_observation': observation}


def policy_variables(algorithm) -> Dict:
    """What actors pull: the collect policy's variables (kernels, biases and
    masks) and the learner's train step."""
    return {'policy': algorithm.agent.collect_policy.variables(),
            'train_step': algorithm.train_step}


def make_tables(signature: Dict, variables: Dict, capacity: int,
                rate_limit: RateLimit) -> List:
    require_reverb()
    variable_signature = tf.nest.map_structure(
        lambda v: tf.TensorSpec(v.shape, v.dtype), variables)
    return [
        reverb.Table(REPLAY_TABLE, sampler=reverb.selectors.Uniform(),
                     remover=reverb.selectors.Fifo(), max_size=int(capacity),
                     rate_limiter=rate_limit.limiter(), signature=signature),
        reverb.Table(VARIABLES_TABLE, sampler=reverb.selectors.Uniform(),
                     remover=reverb.selectors.Fifo(), max_size=1,
                     rate_limiter=reverb.rate_limiters.MinSize(1),
                     signature=variable_signature),
    ]


def start_server(tables: List, port: Optional[int], checkpoint_dir: str):
    """A Reverb server on `port` (None: any free one) that reloads the
    newest checkpoint in `checkpoint_dir` (if any) and saves new ones there.

    Raises:
        ValueError: if the port is out of range or in use.
    """
    require_reverb()
    if port is not None:
        port = check_port(port, '--port')
        check_port_free(port)
    os.makedirs(checkpoint_dir, exist_ok=True)
    checkpointer = reverb.checkpointers.DefaultCheckpointer(
        path=checkpoint_dir)
    try:
        return reverb.Server(tables=tables, port=port,
                             checkpointer=checkpointer)
    except ValueError as error:  # 'Failed to BuildAndStart gRPC server'
        raise ValueError(f'cannot start the Reverb server on port {port}: '
                         f'{_first_line(error)}.') from None


@dataclasses.dataclass
class TableStats:
    """The replay table's size and the rate limiter's counters."""
    size: int
    inserts: int
    samples: int
    samples_per_insert: float


def table_stats(client) -> TableStats:
    info = client.server_info()[REPLAY_TABLE]
    limiter = info.rate_limiter_info
    return TableStats(int(info.current_size),
                      int(limiter.insert_stats.completed),
                      int(limiter.sample_stats.completed),
                      float(limiter.samples_per_insert))


class TransitionWriter:
    """Inserts one actor's transitions, blocking while the rate limiter
    holds inserts back (at most `max_pending` transitions in flight)."""

    def __init__(self, client, max_pending: int = 8):
        self._writer = client.trajectory_writer(num_keep_alive_refs=1)
        self._max_pending = max_pending
        self.inserted = 0

    def add(self, observation, action, reward, discount,
            next_observation) -> None:
        writer = self._writer
        writer.append({
            'observation': np.asarray(observation, np.float32),
            'action': np.asarray(action),
            'reward': np.float32(reward),
            'discount': np.float32(discount),
            'next_observation': np.asarray(next_observation, np.float32)})
        writer.create_item(REPLAY_TABLE, 1.0,
                           {name: writer.history[name][-1]
                            for name in ReplayBuffer.FIELDS})
        self.inserted += 1

    def wait(self, timeout_ms: int) -> bool:
        """Waits until few enough inserts are pending; False on timeout."""
        try:
            self._writer.flush(block_until_num_items=self._max_pending,
                               timeout_ms=timeout_ms)
        except reverb.errors.DeadlineExceededError:
            return False
        return True

    def flush(self, timeout_ms: int = 10000) -> None:
        """Waits until the server has every item written so far."""
        self._writer.flush(timeout_ms=timeout_ms)

    def close(self) -> None:
        self._writer.close()


def batched_dataset(address: str, batch_size: int) -> tf.data.Dataset:
    """Batches of transitions sampled from the replay table."""
    require_reverb()
    dataset = reverb.TrajectoryDataset.from_table_signature(
        server_address=address, table=REPLAY_TABLE,
        max_in_flight_samples_per_worker=2 * batch_size)
    return dataset.map(lambda sample: sample.data).batch(
        batch_size, drop_remainder=True).prefetch(1)
