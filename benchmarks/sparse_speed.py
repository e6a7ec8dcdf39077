"""Does sparsity save time? Train steps/s of dense, masked and sparse
execution, in one process.

  python benchmarks/sparse_speed.py [--algos sac td3 dqn]
      [--sparsities 0.9 0.95 0.99] [--widths 1 4] [--steps 600] [--blocks 3]
      [--loop_steps 0]

For each algorithm and width multiplier it builds a dense agent and, per
sparsity, a RigL agent (ERK, every layer sparse, masks updated every 1000
steps) in 'masked' execution (dense kernels times masks) and in 'sparse'
execution (only the active weights, `train_eval.sparse_execution`), on
replay samples of random data of the benchmark environment's shapes
(HalfCheetah-v5 for SAC and TD3, CartPole-v1 for DQN). All are traced
first, then timed in alternating blocks (medians), so drift hits all
alike. Prints steps/s and the time ratio dense/x (above 1: faster than
dense). With --loop_steps, also the full loop (collect one step, train one
step) in env steps/s for dense and sparse execution at the first sparsity.
With --export, also the greedy action time of the numpy export
(`NumpyActor`, dense kernels vs the compiled CSR call) at batch 1 and 256
for a SAC actor at each sparsity (as sparse_inference_benchmark.py).
"""

import argparse
import contextlib
import io
import statistics
import tempfile
import time

import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
import gin
from tf_agents.specs import tensor_spec

from rigl.rl.tfagents import envs
from rigl.rl.tfagents import train
from rigl.rl.tfagents.algos import dqn
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.algos import td3
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import settings as settings_lib
from off_policy_benchmark import warmed_up_trainer
from results_rows import first_and_last_rows
import sparse_inference_benchmark

ALGORITHMS = {'sac': sac.Sac, 'td3': td3.Td3, 'dqn': dqn.Dqn}
ENVIRONMENTS = {'sac': 'HalfCheetah-v5', 'td3': 'HalfCheetah-v5',
                'dqn': 'CartPole-v1'}


def sparse_bindings(sparsity: float):
    return ["init_masks.mask_init_method = 'erdos_renyi_kernel'",
            f'init_masks.sparsity = {sparsity}',
            "mask_updater.update_alg = 'rigl'",
            'mask_updater.update_freq = 1000',
            'mask_updater.init_drop_fraction = 0.3',
            'mask_updater.last_update_step = 800000']


def sparse_settings(algo: str, execution: str) -> dict:
    networks = (dict(train_mode='sparse') if algo == 'dqn' else
                dict(train_mode_actor='sparse', train_mode_value='sparse'))
    return dict(networks, sparse_output_layer=True,
                sparse_execution=execution)


def make_bare_train(algo: str, width: float, sparsity: float,
                    execution: str):
    """A traced train step on random replay data (`execution` None: dense)."""
    gin.clear_config()
    gin.parse_config(sparse_bindings(sparsity) if execution else [])
    env = envs.create_environment(ENVIRONMENTS[algo], seed=0)
    obs_spec = tensor_spec.from_spec(env.observation_spec())
    act_spec = tensor_spec.from_spec(env.action_spec())
    env.close()
    algorithm_class = ALGORITHMS[algo]
    values = dict(sparse_settings(algo, execution) if execution else {},
                  width=float(width))
    settings = settings_lib.build(algorithm_class.Settings, values, algo)
    algorithm = algorithm_class(settings, obs_spec, act_spec, seed=0)
    return warmed_up_trainer(algorithm, obs_spec, settings.batch_size,
                             transitions=5000, warmup=3)


def time_blocks(trainers: dict, steps: int, blocks: int) -> dict:
    """Median steps/s of each trainer over alternating blocks."""
    rates = {name: [] for name in trainers}
    per_block = max(1, steps // blocks)
    for block in range(blocks):
        for name, (train_fn, batches) in trainers.items():
            start = time.perf_counter()
            for i in range(per_block):
                train_fn(batches[(block * per_block + i) % len(batches)])
            rates[name].append(per_block / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def loop_rate(algo: str, sparsity: float, execution: str,
              steps: int) -> float:
    """Env steps/s of the full loop between two results rows."""
    gin.clear_config()
    gin.parse_config(sparse_bindings(sparsity) if execution else [])
    with tempfile.TemporaryDirectory() as root, contextlib.redirect_stdout(
            io.StringIO()):
        train.train_eval(
            root, algorithm=algo, env_name=ENVIRONMENTS[algo],
            num_iterations=200 + steps, initial_collect_steps=1000,
            eval_interval=200, eval_episodes=1, checkpoint_interval=10 ** 9,
            log_interval=10 ** 9, seed=0, time_loop=True,
            **(sparse_settings(algo, execution) if execution else {}))
        first, last = first_and_last_rows(root)
    return (last['step'] - first['step']) / (last['loop_seconds'] -
                                             first['loop_seconds'])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--algos', nargs='+', choices=sorted(ALGORITHMS),
                        default=['sac', 'td3', 'dqn'])
    parser.add_argument('--sparsities', nargs='+', type=float,
                        default=[0.9, 0.95, 0.99])
    parser.add_argument('--widths', nargs='+', type=float, default=[1.0, 4.0])
    parser.add_argument('--steps', type=int, default=600,
                        help='timed train steps per agent (over all blocks)')
    parser.add_argument('--blocks', type=int, default=3)
    parser.add_argument('--loop_steps', type=int, default=0,
                        help='full-loop env steps per run (0: skip)')
    parser.add_argument('--export', action='store_true',
                        help='also time the numpy export at batch 1 and 256')
    args = parser.parse_args()
    print(console.configure_devices())  # the threads a user's run gets
    console.quiet_libraries()  # as a train script: no tfp warnings
    print(f'{"algo":5} {"width":>5} {"agent":>14} {"steps/s":>9} '
          f'{"dense/x":>8}')
    for algo in args.algos:
        for width in args.widths:
            trainers = {'dense': make_bare_train(algo, width, 0.0, None)}
            for sparsity in args.sparsities:
                for execution in ('masked', 'sparse'):
                    trainers[f'{execution} {sparsity:g}'] = make_bare_train(
                        algo, width, sparsity, execution)
            rates = time_blocks(trainers, args.steps, args.blocks)
            for name, rate in rates.items():
                print(f'{algo:5} {width:5g} {name:>14} {rate:9.1f} '
                      f'{rate / rates["dense"]:8.2f}', flush=True)
        if args.loop_steps:
            sparsity = args.sparsities[0]
            dense = loop_rate(algo, sparsity, None, args.loop_steps)
            sparse = loop_rate(algo, sparsity, 'sparse', args.loop_steps)
            print(f'{algo:5} full loop: dense {dense:.1f} env steps/s, '
                  f'sparse {sparsity:g} {sparse:.1f} ({sparse / dense:.2f}x)',
                  flush=True)
    if args.export:
        print('numpy export of a SAC actor, microseconds per greedy action:')
        print(f'{"actor":24}{"density":>8}{"stored":>8}{"batch":>6}'
              f'{"numpy dense":>13}{"CSR (numba)":>13}{"dense/CSR":>11}'
              f'{"paired":>9}')
        for sparsity in args.sparsities:
            sparse_inference_benchmark.measure(
                f'ERK {sparsity:g}',
                sparse_inference_benchmark.sac_actor(sparsity), blocks=5,
                repeats=500, tf_policy=False)


if __name__ == '__main__':
    main()
