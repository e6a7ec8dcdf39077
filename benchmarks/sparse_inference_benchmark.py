"""Does skipping zero weights pay? A sparse SAC policy's action time.

  python benchmarks/sparse_inference_benchmark.py [--sparsities 0.9 0.95 0.99]
      [--checkpoint ROOT/checkpoints/ckpt-N] [--blocks 11] [--repeats 1000]
      [--tf-policy]

For a SAC actor (HalfCheetah-v5: 17 -> 256 -> 256 -> 12, ERK masks at each
sparsity, output layer sparse; or a trained run's checkpoint), times the
greedy action at batch 1 and batch 256, in this process:
  numpy dense  the exported kernels as dense numpy arrays, one matrix
               product per layer (the baseline);
  CSR (numba)  the exported kernels in compressed sparse rows, the whole
               network in one numba-compiled call: only the non-zero
               weights are stored and multiplied;
  TF policy    (with --tf-policy) the TF-Agents greedy policy in one
               compiled call (dense math on exactly-zero weights, as
               training runs it).
The methods are timed in alternating blocks of calls (the order flips every
block), so that a background load shifts them alike. Prints microseconds per
call, the median over blocks, and the speed-up of CSR over numpy dense
(the honest sparse-vs-dense comparison: same process, same arithmetic):
the ratio of the medians and, more robust on a shared machine, the median
of the per-block ratios.
"""

import argparse
import os
import statistics
import time
from typing import Callable, Dict

import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
import gin
import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from rigl.rl.tfagents import envs
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import train
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.numpy_inference import NumpyActor

BATCHES = (1, 256)


def sac_actor(sparsity: float):
    """A SAC algorithm whose actor has ERK masks of `sparsity`."""
    gin.clear_config()
    gin.parse_config(["init_masks.mask_init_method = 'erdos_renyi_kernel'",
                      f'init_masks.sparsity = {sparsity}'])
    env = envs.create_environment('HalfCheetah-v5', seed=0)
    settings = sac.SacSettings(seed=0, train_mode_actor='sparse',
                               sparse_output_layer=True,
                               critic_joint_fc_layers=(8, 8))
    algorithm = sac.Sac(
        settings, tensor_spec.from_spec(env.observation_spec()),
        tensor_spec.from_spec(env.action_spec()), seed=0)
    env.close()
    return algorithm


def alternating_blocks(calls: Dict[str, Callable[[], object]], blocks: int,
                       repeats: int) -> Dict[str, list]:
    """Microseconds per call of each method, one entry per block.

    Each block times `repeats` calls of every method in turn, the order
    reversed every other block, so that a slow phase of a background job
    falls on all methods alike.
    """
    for call in calls.values():  # warm-up: caches, lazy compilation
        call()
    times = {name: [] for name in calls}
    names = list(calls)
    for block in range(blocks):
        for name in (names if block % 2 == 0 else names[::-1]):
            call = calls[name]
            started = time.perf_counter()
            for _ in range(repeats):
                call()
            times[name].append(
                (time.perf_counter() - started) / repeats * 1e6)
    return times


def measure(name: str, algorithm, blocks: int, repeats: int,
            tf_policy: bool) -> None:
    """Prints one line per batch size for the actor of `algorithm`."""
    network = algorithm.networks['actor']
    stats = sparse_layers.network_stats(network)
    active = sum(layer.active_weights for layer in stats.layers)
    total = sum(int(np.prod(layer.shape)) for layer in stats.layers)
    dense = NumpyActor.from_network(network, algorithm.action_spec, False)
    csr = NumpyActor.from_network(network, algorithm.action_spec, True)
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        observations = rng.normal(size=(batch, 17)).astype(np.float32)
        np.testing.assert_allclose(csr(observations), dense(observations),
                                   atol=1e-5)
        calls = {'numpy dense': lambda o=observations: dense(o),
                 'CSR (numba)': lambda o=observations: csr(o)}
        if tf_policy:
            tf_action = tf.function(lambda o, size=batch: algorithm.eval_policy
                                    .action(ts.restart(o, batch_size=size))
                                    .action, autograph=False)
            tf_observations = tf.constant(observations)
            calls['TF policy'] = lambda: tf_action(tf_observations).numpy()
        count = repeats if batch == 1 else max(repeats // 20, 10)
        times = alternating_blocks(calls, blocks, count)
        medians = {key: statistics.median(value)
                   for key, value in times.items()}
        paired = statistics.median(
            d / c for d, c in zip(times['numpy dense'], times['CSR (numba)']))
        line = (f'{name:24}{active / total:8.3f}{csr.stored_weights:8d}'
                f'{batch:6d}{medians["numpy dense"]:13.1f}'
                f'{medians["CSR (numba)"]:13.1f}'
                f'{medians["numpy dense"] / medians["CSR (numba)"]:11.2f}'
                f'{paired:9.2f}')
        if tf_policy:
            line += f'{medians["TF policy"]:12.1f}'
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sparsities', type=float, nargs='+',
                        default=[0.0, 0.9, 0.95, 0.99])
    parser.add_argument('--checkpoint', default='',
                        help='also a trained run: ROOT/checkpoints/ckpt-N')
    parser.add_argument('--blocks', type=int, default=11,
                        help='alternating timing blocks (median over them)')
    parser.add_argument('--repeats', type=int, default=1000,
                        help='calls per block at batch 1 (batch 256: /20)')
    parser.add_argument('--tf-policy', action='store_true',
                        help='also time the TF-Agents greedy policy')
    args = parser.parse_args()
    console.quiet_libraries()
    threads = os.environ.get('TF_NUM_INTRAOP_THREADS', 'default')
    load = ', '.join(f'{value:.1f}' for value in os.getloadavg())
    print(f'SAC actor 17-256-256-12, {os.cpu_count()} cores (load average '
          f'{load}), TF intra-op threads: {threads}; microseconds per call, '
          f'median of {args.blocks} alternating blocks')
    print(f'{"actor":24}{"density":>8}{"stored":>8}{"batch":>6}'
          f'{"numpy dense":>13}{"CSR (numba)":>13}{"dense/CSR":>11}'
          f'{"paired":>9}' + (f'{"TF policy":>12}' if args.tf_policy else ''))
    for sparsity in args.sparsities:
        measure(f'ERK {sparsity:g} (random)', sac_actor(sparsity),
                args.blocks, args.repeats, args.tf_policy)
    if args.checkpoint:
        algorithm, _ = train.load_algorithm(args.checkpoint)
        measure('trained (--checkpoint)', algorithm, args.blocks,
                args.repeats, args.tf_policy)
    print('dense/CSR: numpy dense median / CSR median (>1: sparse pays); '
          'paired: median over blocks of the same ratio.')


if __name__ == '__main__':
    main()
