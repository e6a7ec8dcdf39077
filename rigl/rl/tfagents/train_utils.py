"""What every `*_train_eval.py` shares: flags and gin, replay, checkpoints,
results, evaluation, progress lines and sparsity summaries.

Run outputs in `root_dir`:
  operative_config.gin   the gin config in force (written after the first step)
  results.jsonl          one row per evaluation
  final_metric.json      mean eval return over the last fraction of evals
  train/, eval/          TensorBoard summaries
  checkpoints/           ckpt-<step>/ directories, each complete; `latest` names
                         the newest (written last, atomically)
  policy/                the saved greedy policy at the end
"""

import json
import os
import shutil
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from absl import flags
from absl import logging
import gin
import numpy as np
import tensorflow as tf
from tf_agents.policies import policy_saver
from tf_agents.trajectories import time_step as ts

from rigl.rl.tfagents import sparse_layers

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags every train script takes."""
    flags.DEFINE_string('root_dir', None, 'Directory for all run outputs; '
                        'rerunning with the same one resumes the run.')
    flags.DEFINE_multi_string('gin_file', [], 'Gin config files.')
    flags.DEFINE_multi_string('gin_bindings', [],
                              "Gin bindings, e.g. 'train_eval.seed=3'.")
    flags.DEFINE_bool('is_mujoco', True, 'Accepted for compatibility with the '
                      "original suite's commands; has no effect.")
    flags.mark_flag_as_required('root_dir')


def run_main(train_eval: Callable[..., Dict]) -> None:
    """Parses gin, runs `train_eval(root_dir)`, and turns configuration errors
    into a one-line message and exit code 2."""
    logging.set_verbosity(logging.WARNING)
    try:
        gin.parse_config_files_and_bindings(FLAGS.gin_file, FLAGS.gin_bindings)
        train_eval(FLAGS.root_dir)
    except (ValueError, SyntaxError, OSError) as error:  # gin: Value/Syntax
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)


def make_optimizer(learning_rate, weight_decay: float):
    """Adam, or AdamW (decoupled weight decay) when weight_decay > 0.

    `learning_rate` may be a float or a Keras learning-rate schedule.
    """
    if weight_decay < 0:
        raise ValueError(f'weight_decay must be >= 0, got {weight_decay}.')
    if weight_decay:
        return tf.keras.optimizers.AdamW(learning_rate=learning_rate,
                                         weight_decay=weight_decay)
    return tf.keras.optimizers.Adam(learning_rate=learning_rate)


class ReplayBuffer:
    """A uniform numpy ring buffer of transitions, saved with checkpoints."""

    FIELDS = ('observation', 'action', 'reward', 'discount', 'next_observation')

    def __init__(self, capacity: int, observation_shape: Sequence[int],
                 action_shape: Sequence[int], action_dtype=np.float32):
        if capacity <= 0:
            raise ValueError(f'replay_capacity must be positive, got {capacity}.')
        self.capacity = int(capacity)
        self._data = {
            'observation': np.zeros((capacity, *observation_shape), np.float32),
            'action': np.zeros((capacity, *action_shape), action_dtype),
            'reward': np.zeros((capacity,), np.float32),
            'discount': np.zeros((capacity,), np.float32),
            'next_observation': np.zeros((capacity, *observation_shape),
                                         np.float32),
        }
        self.size = 0
        self._next = 0

    def add(self, observation, action, reward, discount, next_observation):
        index = self._next
        data = self._data
        data['observation'][index] = observation
        data['action'][index] = action
        data['reward'][index] = reward
        data['discount'][index] = discount
        data['next_observation'][index] = next_observation
        self._next = (index + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Dict:
        indices = rng.integers(0, self.size, batch_size)
        return {name: array[indices] for name, array in self._data.items()}

    def save(self, path: str) -> None:
        np.savez(path, size=self.size, next=self._next,
                 **{name: array[:self.size] for name, array in
                    self._data.items()})

    def load(self, path: str) -> None:
        with np.load(path) as saved:
            self.size, self._next = int(saved['size']), int(saved['next'])
            for name in self.FIELDS:
                self._data[name][:self.size] = saved[name]


class Checkpointer:
    """Atomic, complete checkpoints: TF state, replay data and Python state.

    Each checkpoint is written to `ckpt-<step>.tmp/` and renamed into place;
    then `latest` is replaced atomically. A run killed at any moment resumes
    from the newest complete checkpoint.
    """

    def __init__(self, root_dir: str, keep: int = 2, **trackables):
        self.directory = os.path.join(root_dir, 'checkpoints')
        os.makedirs(self.directory, exist_ok=True)
        self._checkpoint = tf.train.Checkpoint(**trackables)
        self._keep = keep

    def latest(self) -> Optional[str]:
        pointer = os.path.join(self.directory, 'latest')
        if not os.path.exists(pointer):
            return None
        with open(pointer) as f:
            path = os.path.join(self.directory, f.read().strip())
        return path if os.path.isdir(path) else None

    def save(self, step: int, state: Dict,
             replay: Optional[ReplayBuffer] = None) -> str:
        name = f'ckpt-{step}'
        final = os.path.join(self.directory, name)
        staging = final + '.tmp'
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        self._checkpoint.write(os.path.join(staging, 'tf'))
        if replay is not None:
            replay.save(os.path.join(staging, 'replay.npz'))
        with open(os.path.join(staging, 'state.json'), 'w') as f:
            json.dump(state, f)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(staging, final)
        _write_atomically(os.path.join(self.directory, 'latest'), name)
        self._prune(keep_name=name)
        return final

    def restore(self, path: str, replay: Optional[ReplayBuffer] = None) -> Dict:
        self._checkpoint.read(os.path.join(path, 'tf')).assert_existing_objects_matched()
        if replay is not None:
            replay.load(os.path.join(path, 'replay.npz'))
        with open(os.path.join(path, 'state.json')) as f:
            return json.load(f)

    def _prune(self, keep_name: str) -> None:
        names = sorted((n for n in os.listdir(self.directory)
                        if n.startswith('ckpt-') and not n.endswith('.tmp')),
                       key=lambda n: int(n.split('-')[1]))
        for name in names[:-self._keep]:
            if name != keep_name:
                shutil.rmtree(os.path.join(self.directory, name),
                              ignore_errors=True)


def _write_atomically(path: str, text: str) -> None:
    staging = path + '.tmp'
    with open(staging, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staging, path)


class Results:
    """results.jsonl rows (one per eval) and the final metric."""

    def __init__(self, root_dir: str):
        self.path = os.path.join(root_dir, 'results.jsonl')
        self._root_dir = root_dir

    def rows(self) -> List[Dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drops rows newer than a checkpoint we resume from."""
        kept = [row for row in self.rows() if row['step'] <= step]
        _write_atomically(self.path, ''.join(json.dumps(r) + '\n' for r in kept))

    def append(self, row: Dict) -> None:
        with open(self.path, 'a') as f:
            f.write(json.dumps(row) + '\n')

    def final_metric(self, average_last_fraction: float) -> Dict:
        returns = [row['return_mean'] for row in self.rows()]
        if not returns:
            return {}
        count = max(1, int(round(len(returns) * average_last_fraction)))
        metric = {'final_return': float(np.mean(returns[-count:])),
                  'num_evals_averaged': count,
                  'average_last_fraction': average_last_fraction}
        _write_atomically(os.path.join(self._root_dir, 'final_metric.json'),
                          json.dumps(metric, indent=2))
        return metric


def evaluate(env, action_fn: Callable, num_episodes: int) -> Dict:
    """Mean/std return and mean length of `num_episodes` greedy episodes."""
    returns, lengths = [], []
    for _ in range(num_episodes):
        time_step = env.reset()
        total, length = 0.0, 0
        while not time_step.is_last():
            time_step = env.step(action_fn(time_step.observation))
            total += float(time_step.reward)
            length += 1
        returns.append(total)
        lengths.append(length)
    return {'return_mean': float(np.mean(returns)),
            'return_std': float(np.std(returns)),
            'episode_length': float(np.mean(lengths))}


def check_positive_ints(**values) -> None:
    """Raises naming the first `train_eval` argument that is not an int > 0."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f'train_eval.{name} must be a positive integer, '
                             f'got {value!r}.')


def resume(checkpointer: 'Checkpointer', results: 'Results',
           rng: np.random.Generator, train_step: tf.Variable, state: Dict,
           replay: Optional['ReplayBuffer'] = None) -> Dict:
    """Restores the newest checkpoint, if any, into the TF objects, `replay`
    and `rng`; drops results rows past it; returns the run state to go on
    with (`state` itself when starting fresh)."""
    latest = checkpointer.latest()
    if not latest:
        return state
    state = checkpointer.restore(latest, replay)
    rng.bit_generator.state = state.pop('rng')
    step = int(train_step.numpy())
    results.truncate_after(step)
    where = (f'iteration {state["iteration"]} (train step {step})'
             if 'iteration' in state else f'train step {step}')
    log(f'Resumed from {latest} at {where}.')
    return state


def single_action_fn(policy) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled observation -> action function for evaluation."""
    action = tf.function(lambda observation: policy.action(
        ts.restart(observation, batch_size=1)).action[0], autograph=False)
    return lambda observation: action(observation[None]).numpy()


def write_losses(loss_info) -> None:
    """'loss/total' and every scalar of the agent's LossInfo.extra."""
    tf.summary.scalar('loss/total', loss_info.loss)
    extra = loss_info.extra
    for name in getattr(extra, '_fields', ()):
        value = getattr(extra, name)
        if isinstance(value, tf.Tensor) and value.shape.rank == 0:
            tf.summary.scalar(f'loss/{name}', value)


def write_episode(step: int, episode_return: float, length: int) -> None:
    """Training episode summaries (inside a writer's default scope)."""
    tf.summary.scalar('train/episode_return', episode_return, step=step)
    tf.summary.scalar('train/episode_length', length, step=step)


def record_evaluation(writer, results: 'Results', step: int, env_steps: int,
                      metrics: Dict, named_networks: Dict, noise_mask,
                      train_flops: float, wall_time: float, **extra) -> Dict:
    """Eval summaries, a results.jsonl row (plus any `extra` fields) and a
    console line; returns the per-network totals."""
    with writer.as_default(step=step):
        for key, value in metrics.items():
            tf.summary.scalar(f'eval/{key}', value)
        totals = write_sparsity_summaries(named_networks, step, noise_mask)
    first = next(iter(totals))
    results.append(dict(step=step, env_steps=env_steps, **metrics,
                        networks=totals,
                        inference_flops=totals[first]['flops'],
                        train_flops=train_flops, wall_time=wall_time,
                        **extra))
    sparsities = ' '.join(f'{name} {values["sparsity"]:.3f}'
                          for name, values in totals.items())
    log(f'eval at step {step:,}: return {metrics["return_mean"]:.1f} ± '
        f'{metrics["return_std"]:.1f} | sparsity {sparsities}')
    return totals


def finish(root_dir: str, eval_policy, results: 'Results',
           average_last_fraction: float) -> Dict:
    """Saves the final policy and writes and prints the final metric."""
    policy_saver.PolicySaver(eval_policy, batch_size=None).save(
        os.path.join(root_dir, 'policy'))
    metric = results.final_metric(average_last_fraction)
    if metric:
        log(f'final metric (mean eval return over the last '
            f'{metric["num_evals_averaged"]} evals): '
            f'{metric["final_return"]:.1f}')
    return metric


def input_connectivity(network, noise_mask: Optional[np.ndarray]) -> Optional[Dict]:
    """Mean active input-layer weights per real and per noise feature (ANF).

    The input layer's first rows are the observation (critics append the
    action after it).
    """
    if noise_mask is None:
        return None
    layers = sparse_layers.kernel_layers(network)
    if not layers or not isinstance(layers[0], sparse_layers.MaskedLayer):
        return None
    rows = layers[0].mask.numpy()[:noise_mask.size].sum(axis=1)
    return {'per_real_feature': float(rows[~noise_mask].mean()),
            'per_noise_feature': float(rows[noise_mask].mean())
            if noise_mask.any() else 0.0}


def write_sparsity_summaries(named_networks: Dict[str, tf.Module],
                             step: int, noise_mask=None) -> Dict:
    """Per-layer sparsity, parameters and FLOPs of each network, plus ANF
    input connectivity; returns the totals for the results file."""
    totals = {}
    for name, network in named_networks.items():
        sparse_layers.log_sparsities(network, name, step)
        stats = sparse_layers.network_stats(network)
        totals[name] = {'sparsity': stats.sparsity,
                        'parameters': stats.parameters, 'flops': stats.flops}
        connectivity = input_connectivity(network, noise_mask)
        if connectivity:
            for key, value in connectivity.items():
                tf.summary.scalar(f'input_connectivity/{name}/{key}', value,
                                  step=step)
            totals[name]['input_connectivity'] = connectivity
    return totals


class Progress:
    """Readable console lines: step, steps/s, recent returns, time left."""

    def __init__(self, total_steps: int, start_step: int):
        self._total = total_steps
        self._last_time = time.time()
        self._last_step = start_step
        self.steps_per_second = 0.0

    def line(self, step: int, recent_returns: Sequence[float],
             extra: str = '') -> str:
        now = time.time()
        elapsed = max(now - self._last_time, 1e-9)
        self.steps_per_second = (step - self._last_step) / elapsed
        self._last_time, self._last_step = now, step
        remaining = (self._total - step) / max(self.steps_per_second, 1e-9)
        recent = (f'{np.mean(recent_returns):9.1f}' if len(recent_returns)
                  else '      n/a')
        return (f'step {step:>9,}/{self._total:,} | '
                f'{self.steps_per_second:7.1f} steps/s | '
                f'return(last {len(recent_returns)}) {recent} | '
                f'{extra}left {_format_seconds(remaining)}')


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def write_operative_config(root_dir: str) -> None:
    _write_atomically(os.path.join(root_dir, 'operative_config.gin'),
                      gin.operative_config_str())


def parse_float_list(text: str, name: str, count: int) -> Optional[List[float]]:
    """'0.9,0.8' -> [0.9, 0.8]; '' -> None."""
    if not text:
        return None
    try:
        values = [float(part) for part in text.split(',')]
    except ValueError:
        raise ValueError(f'{name} must be {count} comma-separated numbers, got '
                         f'{text!r}.') from None
    if len(values) != count:
        raise ValueError(f'{name} must be {count} comma-separated numbers, got '
                         f'{text!r}.')
    return values


def log(message: str) -> None:
    """A progress line on stdout (TF's own INFO logging is silenced)."""
    print(message, flush=True)
