"""What a run writes besides its checkpoints.

`Outputs` is the part of a session that records the run, in `root_dir`:

  run.json               what the run is (algorithm, env, seed, method ...)
  operative_config.gin   the gin config in force
  results.jsonl          one row per evaluation (with the run's metadata)
  final_metric.json      mean eval return over the last fraction of evals
  train/, eval/          TensorBoard summaries: losses, episodes, sparsity,
                         gradient SNR, plasticity, evaluation
  policy/                the saved greedy policy (and any along the way)
  connectivity.csv/.png, input_layer.png   with ANF noise features

and on the console: the sparsity table and the sparse method at the start,
per-episode lines (`log_episodes`), evaluation lines, the final metric. It
also keeps the recent training returns that progress lines show.

A resumed run drops the results rows and summaries past its checkpoint
(`resume`), so the files read as if the run had never stopped.
"""

import collections
import json
import os
import time
from typing import Callable, Dict, List, Optional

import gin
import numpy as np
import tensorflow as tf
from tf_agents.policies import policy_saver

from rigl.rl import layout
from rigl.rl.tfagents.anf import connectivity
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.loops.run_directory import RunState
from rigl.rl.tfagents.run import checkpoints
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import summaries
from rigl.rl.tfagents.run.results import Results


class Outputs:
    """Results, summaries, console lines and saved policies of one run.

    Args:
        root_dir: the run directory.
        algorithm: the run's algorithm (its networks are summarized).
        settings: the run's settings.
        metadata: the run's metadata (every results row carries it).
        state: the run's counters (read, and `episodes` counted here).
        noise_mask: returns the network inputs that are ANF noise
            features (None without any).
    """

    def __init__(self, root_dir: str, algorithm, settings, metadata: Dict,
                 state: RunState,
                 noise_mask: Callable[[], Optional[np.ndarray]]):
        self.root_dir = root_dir
        self._algorithm = algorithm
        self._settings = settings
        self._metadata = metadata
        self._state = state
        self._noise_mask = noise_mask
        self.results = Results(root_dir, metadata)
        self.recent_returns = collections.deque(maxlen=10)
        self.train_writer = self.eval_writer = None
        self._run_start = self._episode_started = time.time()

    @property
    def _step(self) -> int:
        return int(self._algorithm.train_step.numpy())

    def elapsed(self) -> float:
        """Seconds the run has trained, over all its attempts."""
        return time.time() - self._run_start

    def resume(self, step: int) -> None:
        """Drops results rows and TensorBoard events past train `step`
        (a killed attempt wrote them after its last checkpoint)."""
        self.results.truncate_after(step)
        for name in layout.SUMMARY_DIRS:
            summaries.mark_restart(os.path.join(self.root_dir, name),
                                   step + 1)

    def open(self, record: Dict, warnings: List[str]) -> None:
        """Writes `run.json` and the operative config, prints the warnings,
        sparsity table and sparse method, and opens the summary writers."""
        self.recent_returns.extend(self._state.recent_returns)
        checkpoints.write_atomically(
            os.path.join(self.root_dir, layout.RUN_FILE),
            json.dumps(dict(self._metadata, config=record), indent=2))
        checkpoints.write_atomically(
            os.path.join(self.root_dir, layout.OPERATIVE_CONFIG_FILE),
            gin.operative_config_str())
        for line in warnings:
            console.log(f'warning: {line}')
        console.log(sparsity_table(self._algorithm.networks))
        console.log(self._algorithm.sparse_method.describe())
        self.train_writer = tf.summary.create_file_writer(
            os.path.join(self.root_dir, layout.TRAIN_SUMMARIES_DIR))
        self.eval_writer = tf.summary.create_file_writer(
            os.path.join(self.root_dir, layout.EVAL_SUMMARIES_DIR))
        with self.train_writer.as_default():
            summaries.write_sparsity_summaries(
                self._algorithm.networks, self._step, self._noise_mask())
        self._run_start = time.time() - self._state.wall_time
        self._episode_started = time.time()

    def episode_done(self, episode_return: float, length: int) -> None:
        """A training episode ended: counts it, summarizes it and, with
        `log_episodes`, prints ANF's per-episode line."""
        state = self._state
        self.recent_returns.append(float(episode_return))
        state.episodes += 1
        with self.train_writer.as_default():
            summaries.write_episode(self._step, episode_return, length)
        if self._settings.log_episodes:
            now = time.time()
            console.log(
                f'Total Steps: {state.env_steps}  Train Steps: '
                f'{self._step}  Episode Num: '
                f'{state.episodes - 1}  Epi. Steps: {length}  Reward: '
                f'{episode_return:.2f}  Epi. Time: '
                f'{console.format_seconds(now - self._episode_started)}  '
                f'Total Train Time: '
                f'{console.format_seconds(now - self._run_start)}')
            self._episode_started = now

    def write_train_summaries(self, loss_info,
                              steps_per_second: float) -> None:
        """Losses, the algorithm's own summaries, cumulative training
        FLOPs and the loop's speed."""
        with self.train_writer.as_default(step=self._step):
            summaries.write_losses(loss_info)
            self._algorithm.write_summaries()
            tf.summary.scalar('cumulative_train_flops',
                              self._state.train_flops)
            if steps_per_second:
                tf.summary.scalar('steps_per_second', steps_per_second)

    def write_snr(self, values: Dict) -> None:
        """Gradient signal-to-noise summaries."""
        with self.train_writer.as_default(step=self._step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def record_evaluation(self, metrics: Dict, measured: Dict,
                          **extra) -> None:
        """An evaluation's results row (with `extra` fields), eval
        summaries and console lines; with ANF noise features the
        connectivity CSV too."""
        if measured:
            extra['plasticity'] = measured
            with self.eval_writer.as_default(step=self._step):
                for network, values in measured.items():
                    for name, value in values.items():
                        tf.summary.scalar(f'plasticity/{network}/{name}',
                                          value)
        self._state.wall_time = self.elapsed()
        if self._settings.log_episodes:
            rule = '-' * 39
            console.log(f'{rule}\nEvaluation over '
                        f'{self._settings.eval_episodes} episode(s): '
                        f'{metrics["return_mean"]:.3f}\n{rule}')
        noise_mask = self._noise_mask()
        summaries.record_evaluation(
            self.eval_writer, self.results, self._step,
            self._state.env_steps, metrics, self._algorithm.networks,
            noise_mask, self._state.train_flops, self._state.wall_time,
            **extra)
        if noise_mask is not None:
            connectivity.write_csv(self.root_dir, self.results.rows())

    def save_policy(self, step: int = 0) -> None:
        """Saves the eval policy: the final one (step 0) or one along the
        way, where `layout.saved_policy_dir` says."""
        # Sparse-execution layers save as standard TF ops (dense products),
        # so the policy loads anywhere, without the compiled kernels.
        with sparse_layers.dense_forward(self._algorithm.networks.values()):
            policy_saver.PolicySaver(self._algorithm.eval_policy,
                                     batch_size=None).save(
                layout.saved_policy_dir(self.root_dir, step))

    def finish(self) -> Dict:
        """Saves the final policy (unless `save_final_policy` is off), and
        writes and prints the final metric (with ANF noise features, the
        connectivity plots too)."""
        if self._settings.save_final_policy:
            self.save_policy()
        if self._noise_mask() is not None:
            self._plot_connectivity()
        metric = self.results.final_metric(
            self._settings.average_last_fraction)
        if metric:
            console.log(f'final metric (mean eval return over the last '
                        f'{metric["num_evals_averaged"]} evals): '
                        f'{metric["final_return"]:.1f}')
        return metric

    def _plot_connectivity(self) -> None:
        rows = self.results.rows()
        noise_mask = self._noise_mask()
        connectivity.write_csv(self.root_dir, rows)
        connectivity.plot_over_time(self.root_dir, rows)
        networks = self._algorithm.networks
        layers = (sparse_layers.kernel_layers(networks['actor'])
                  if 'actor' in networks else [])
        if layers and isinstance(layers[0], sparse_layers.MaskedLayer):
            connectivity.plot_input_layer(self.root_dir,
                                          layers[0].mask.numpy(), noise_mask)


def sparsity_table(named_networks: Dict) -> str:
    """Per-layer sparsity of each network, as a small console table."""
    rows = {name: sparse_layers.network_stats(network).layers
            for name, network in named_networks.items()}
    width = max(len(layers) for layers in rows.values())
    header = ''.join(f'{f"layer {i + 1}":>9}' for i in range(width))
    lines = [f'{"sparsity":12}{header}{"total":>9}']
    for name, layers in rows.items():
        total = 1.0 - sum(layer.active_weights for layer in layers) / sum(
            int(np.prod(layer.shape)) for layer in layers)
        cells = [f'{layer.sparsity:9.1%}' for layer in layers]
        cells += [' ' * 9] * (width - len(layers))
        lines.append(f'{name:12}' + ''.join(cells) + f'{total:9.1%}')
    return '\n'.join(lines)
