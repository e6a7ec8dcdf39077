"""Does skipping zero weights pay? A sparse SAC policy's action time.

  python benchmarks/sparse_inference_benchmark.py [--sparsities 0.9 0.95 0.99]
      [--checkpoint ROOT/checkpoints/ckpt-N] [--repeats 2000]

For a SAC actor (HalfCheetah-v5: 17 -> 256 -> 256 -> 12, ERK masks at each
sparsity, output layer sparse; or a trained run's checkpoint), times the
greedy action at batch 1 and batch 256 three ways, in this process:
  TF policy   the TF-Agents greedy policy in one compiled call (dense math
              on exactly-zero weights, as training runs it);
  numpy dense the exported kernels as dense numpy arrays;
  numpy CSR   the exported kernels in compressed sparse rows (scipy): only
              the non-zero weights are stored and multiplied.
Prints microseconds per call (median of 5 blocks) and the speed-up of CSR
over numpy dense (the honest sparse-vs-dense comparison: same runtime) and
over the TF policy.
"""

import argparse
import os
import statistics
import time

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


def sac_actor(sparsity: float):
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


def microseconds(call, argument, repeats: int) -> float:
    call(argument)
    blocks = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeats):
            call(argument)
        blocks.append((time.perf_counter() - started) / repeats * 1e6)
    return statistics.median(blocks)


def measure(name: str, algorithm, repeats: int) -> None:
    network = algorithm.networks['actor']
    stats = sparse_layers.network_stats(network)
    active = sum(layer.active_weights for layer in stats.layers)
    total = sum(int(np.prod(layer.shape)) for layer in stats.layers)
    policy = algorithm.eval_policy
    dense = NumpyActor.from_network(network, algorithm.action_spec, False)
    csr = NumpyActor.from_network(network, algorithm.action_spec, True)
    rng = np.random.default_rng(0)
    for batch in (1, 256):
        observations = rng.normal(size=(batch, 17)).astype(np.float32)
        np.testing.assert_allclose(csr(observations), dense(observations),
                                   atol=1e-4)
        count = repeats if batch == 1 else max(repeats // 20, 20)
        tf_action = tf.function(lambda o, size=batch: policy.action(
            ts.restart(o, batch_size=size)).action, autograph=False)
        times = {
            'TF policy': microseconds(lambda o: tf_action(o).numpy(),
                                      tf.constant(observations), count),
            'numpy dense': microseconds(dense, observations, count),
            'numpy CSR': microseconds(csr, observations, count)}
        print(f'{name:26}{active / total:9.3f}{batch:7d}'
              + ''.join(f'{value:13.1f}' for value in times.values())
              + f'{times["numpy dense"] / times["numpy CSR"]:11.2f}'
              + f'{times["TF policy"] / times["numpy CSR"]:10.2f}', flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sparsities', type=float, nargs='+',
                        default=[0.0, 0.9, 0.95, 0.99])
    parser.add_argument('--checkpoint', default='',
                        help='also a trained run: ROOT/checkpoints/ckpt-N')
    parser.add_argument('--repeats', type=int, default=2000)
    args = parser.parse_args()
    console.quiet_libraries()
    threads = os.environ.get('TF_NUM_INTRAOP_THREADS', 'default')
    print(f'SAC actor 17-256-256-12, {os.cpu_count()} cores, TF intra-op '
          f'threads: {threads}; microseconds per call')
    print(f'{"actor":26}{"density":>9}{"batch":>7}{"TF policy":>13}'
          f'{"numpy dense":>13}{"numpy CSR":>13}{"CSR/dense":>11}'
          f'{"CSR/TF":>10}')
    for sparsity in args.sparsities:
        measure(f'ERK {sparsity:g} (random)', sac_actor(sparsity),
                args.repeats)
    if args.checkpoint:
        algorithm, config = train.load_algorithm(args.checkpoint)
        measure('trained (--checkpoint)', algorithm, args.repeats)
    print('CSR/dense: numpy dense time / numpy CSR time (>1: sparse pays); '
          'CSR/TF: TF policy time / numpy CSR time.')


if __name__ == '__main__':
    main()
