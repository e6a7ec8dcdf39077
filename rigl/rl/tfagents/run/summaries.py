"""TensorBoard summaries and evaluation records shared by every loop."""

import os
import time
from typing import Callable, Dict, Optional, Sequence

import gin
import numpy as np
import tensorflow as tf

from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.anf import connectivity as anf_connectivity
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.sparsity import compressed
from rigl.rl.tfagents.run import settings as settings_lib
from rigl.rl.tfagents.run.results import Results


def write_losses(loss_info) -> None:
    """'loss/total' and every scalar of the agent's LossInfo.extra."""
    tf.summary.scalar('loss/total', loss_info.loss)
    extra = loss_info.extra
    for name in getattr(extra, '_fields', ()):
        value = getattr(extra, name)
        if isinstance(value, tf.Tensor) and value.shape.rank == 0:
            tf.summary.scalar(f'loss/{name}', value)


EVENTS_PREFIX = 'events.out.tfevents.'


def mark_restart(log_dir: str, step: int) -> Optional[str]:
    """Tells TensorBoard to drop this directory's events from `step` on.

    A run killed after its last checkpoint wrote summaries past it; resumed,
    it writes those steps again. TensorBoard purges a directory's events at
    and after the step of a restart (a SessionLog START after the first), so
    START events go into a small events file named to sort after the
    existing ones (the resumed writer's file, created later, sorts after
    it). Returns its path (None without earlier events).
    """
    if not os.path.isdir(log_dir):
        return None
    stamps = [int(name.split('.')[3]) for name in os.listdir(log_dir)
              if name.startswith(EVENTS_PREFIX) and
              name.split('.')[3].isdigit()]
    if not stamps:
        return None
    # '~' sorts after a host name's characters: after every file of that
    # second, before any later one.
    path = os.path.join(log_dir,
                        f'{EVENTS_PREFIX}{max(stamps)}.~restart-at-{step}')
    now = time.time()
    start = tf.compat.v1.Event(
        wall_time=now, step=step, session_log=tf.compat.v1.SessionLog(
            status=tf.compat.v1.SessionLog.START)).SerializeToString()
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(tf.compat.v1.Event(
            wall_time=now, file_version='brain.Event:2').SerializeToString())
        # TensorBoard takes a directory's first START as the initial one and
        # purges on later ones (TF2 writers write none): two make sure.
        writer.write(start)
        writer.write(start)
    return path


def write_episode(step: int, episode_return: float, length: int) -> None:
    """Training episode summaries (inside a writer's default scope)."""
    tf.summary.scalar('train/episode_return', episode_return, step=step)
    tf.summary.scalar('train/episode_length', length, step=step)


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
        connectivity = anf_connectivity.input_connectivity(network,
                                                           noise_mask)
        if connectivity:
            for key, value in connectivity.items():
                tf.summary.scalar(f'input_connectivity/{name}/{key}', value,
                                  step=step)
            totals[name]['input_connectivity'] = connectivity
    return totals


def record_evaluation(writer, results: Results, step: int, env_steps: int,
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
    console.log(f'eval at step {step:,}: return '
                f'{metrics["return_mean"]:.1f} ± '
                f'{metrics["return_std"]:.1f} | sparsity {sparsities}')
    return totals


@gin.configurable
def log_snr(freq: int = 0) -> int:
    """Train steps between gradient signal-to-noise summaries (0: never)."""
    return settings_lib.check('log_snr.freq', freq, int, low=0)


def gradient_snr(per_example_loss: Callable, variables: Sequence[tf.Variable],
                 batch) -> Dict[str, tf.Tensor]:
    """Signal-to-noise of per-example gradients over a batch (in graph).

    For each parameter, |mean| / (std + 1e-10) of its gradient over the
    batch's examples; returns the mean and std of that ratio over all
    parameters (the original suite's `SNR/mean` and `SNR/std`).
    """
    # Not a train step's gradient: sparse-execution layers capture nothing.
    with compressed.no_capture(), tf.GradientTape() as tape:
        losses = per_example_loss(batch)
    jacobians = tape.jacobian(losses, variables, experimental_use_pfor=True)
    size = tf.shape(losses)[0]
    flat = tf.concat([tf.reshape(j, [size, -1]) for j in jacobians], axis=1)
    ratio = tf.abs(tf.reduce_mean(flat, 0)) / (
        tf.math.reduce_std(flat, 0) + 1e-10)
    return {'SNR/mean': tf.reduce_mean(ratio),
            'SNR/std': tf.math.reduce_std(ratio)}
