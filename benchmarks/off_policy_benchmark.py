"""Off-policy throughput (SAC, TD3 or DQN): bare train step and full loop,
dense vs RigL-90% ERK.

  python benchmarks/off_policy_benchmark.py [--algo sac|td3|dqn]
      [--train_steps 2000] [--loop_steps 2000] [--repeats 3]

Prints, from one process:
  * bare train steps/s (the algorithm's default batch and networks;
    HalfCheetah-v5 shapes for SAC and TD3, CartPole-v1 for DQN's 512x512
    Q-network) dense and RigL at 90% ERK with mask
    updates every 1000 steps, timed in alternating blocks in one process,
    and the sparse/dense time ratio (target <= 1.10);
  * full loop (loops.off_policy, `time_loop=True`) env steps/s (collect one
    step, train one step) on HalfCheetah-v5 between two results rows of one
    run (tracing, evaluation and checkpoints excluded), and the loop/bare
    time ratio two ways: across runs (bare rate / loop rate) and within one
    run (loop time / time in the compiled act-and-train call, which also
    computes the action); target <= 1.10.
"""

import argparse
import contextlib
import io
import tempfile
import time

import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
import gin
import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec

from rigl.rl.tfagents import envs
from rigl.rl.tfagents import train
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.algos import dqn
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.algos import td3
from rigl.rl.tfagents.run import settings as settings_lib
from results_rows import first_and_last_rows
from rigl.rl.tfagents.run.replay import make_replay_buffer

SPARSE_BINDINGS = [
    "init_masks.mask_init_method = 'erdos_renyi_kernel'",
    'init_masks.sparsity = 0.9',
    "mask_updater.update_alg = 'rigl'",
    'mask_updater.update_freq = 1000',
    'mask_updater.init_drop_fraction = 0.5',
    'mask_updater.last_update_step = 800000',
]
ALGORITHMS = {'sac': sac.Sac, 'td3': td3.Td3, 'dqn': dqn.Dqn}
ENVIRONMENTS = {'sac': 'HalfCheetah-v5', 'td3': 'HalfCheetah-v5',
                'dqn': 'CartPole-v1'}


def sparse_settings(algo: str) -> dict:
    """The settings that make every network sparse, output layers too."""
    # Masked execution: what masks cost (benchmarks/sparse_speed.py times
    # sparse execution).
    if algo == 'dqn':
        return dict(train_mode='sparse', sparse_output_layer=True,
                    sparse_execution='masked')
    return dict(train_mode_actor='sparse', train_mode_value='sparse',
                sparse_output_layer=True, sparse_execution='masked')


def make_bare_train(algo: str, sparse: bool, weight_decay: float = 0.0):
    """A compiled train step on replay samples of random data of the
    benchmark environment's shapes, ready to time (traced, and past its
    first mask update when sparse)."""
    gin.clear_config()
    gin.parse_config(SPARSE_BINDINGS if sparse else [])
    env = envs.create_environment(ENVIRONMENTS[algo], seed=0)
    obs_spec = tensor_spec.from_spec(env.observation_spec())
    act_spec = tensor_spec.from_spec(env.action_spec())
    algorithm_class = ALGORITHMS[algo]
    settings = settings_lib.build(
        algorithm_class.Settings,
        dict(sparse_settings(algo) if sparse else {},
             weight_decay=weight_decay), algo)
    algorithm = algorithm_class(settings, obs_spec, act_spec, seed=0)
    return warmed_up_trainer(algorithm, obs_spec, settings.batch_size,
                             transitions=10000, warmup=5)


def warmed_up_trainer(algorithm, obs_spec, batch_size: int,
                      transitions: int, warmup: int):
    """`algorithm.train` and 20 batches sampled from a replay of
    `transitions` random transitions, after `warmup` compiled train steps
    (so timing starts past tracing)."""
    rng = np.random.default_rng(0)
    replay = make_replay_buffer(transitions, obs_spec, algorithm.action_spec)
    for _ in range(transitions):
        replay.add(rng.normal(size=obs_spec.shape),
                   algorithm.random_action(rng), rng.normal(), 1.0,
                   rng.normal(size=obs_spec.shape))
    batches = [tf.nest.map_structure(tf.constant,
                                     replay.sample(batch_size, rng))
               for _ in range(20)]
    for batch in batches[:warmup]:
        algorithm.train(batch)
    return algorithm.train, batches


def bare_train_rates(algo: str, steps: int, blocks: int,
                     weight_decay: float) -> dict:
    """Train steps/s of dense and RigL-90%, built first and then timed in
    alternating blocks so machine drift hits both alike (medians). Blocks
    run through step 1000, so the RigL time includes one mask update. With
    `weight_decay`, both also run with it (the algorithm's default
    `weight_decay_mode`), as the sparse configs do."""
    trainers = {'dense': make_bare_train(algo, False),
                'rigl90': make_bare_train(algo, True)}
    if weight_decay:
        trainers['dense_wd'] = make_bare_train(algo, False, weight_decay)
        trainers['rigl90_wd'] = make_bare_train(algo, True, weight_decay)
    rates = {name: [] for name in trainers}
    per_block = max(1, steps // blocks)
    for block in range(blocks):
        for name, (train, batches) in trainers.items():
            start = time.perf_counter()
            for i in range(per_block):
                train(batches[(block * per_block + i) % len(batches)])
            rates[name].append(per_block / (time.perf_counter() - start))
    return rates


def loop_rates(algo: str, sparse: bool, steps: int) -> tuple:
    """One run: (env steps/s of the loop, loop time / time in
    the compiled act-and-train call), between two results rows so tracing,
    evaluation and checkpoints are excluded."""
    gin.clear_config()
    gin.parse_config(SPARSE_BINDINGS if sparse else [])
    with tempfile.TemporaryDirectory() as root:
        train.train_eval(
            root, algorithm=algo, env_name=ENVIRONMENTS[algo],
            num_iterations=200 + steps, initial_collect_steps=1000,
            eval_interval=200, eval_episodes=1, checkpoint_interval=10 ** 9,
            log_interval=10 ** 9, seed=0, time_loop=True,
            **(sparse_settings(algo) if sparse else {}))
        first, last = first_and_last_rows(root)
    loop = last['loop_seconds'] - first['loop_seconds']
    call = last['train_call_seconds'] - first['train_call_seconds']
    return (last['step'] - first['step']) / loop, loop / call


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--algo', choices=sorted(ALGORITHMS), default='sac')
    parser.add_argument('--train_steps', type=int, default=2000)
    parser.add_argument('--loop_steps', type=int, default=2000)
    parser.add_argument('--repeats', type=int, default=3,
                        help='interleaved repeats; medians are reported')
    parser.add_argument('--weight_decay', type=float, default=0.0,
                        help='also time both with this weight decay (the '
                        "algorithm's default mode; the sparse configs use "
                        '1e-6)')
    args = parser.parse_args()
    print(console.configure_devices())  # the threads a user's run gets
    console.quiet_libraries()  # as a train script: no tfp warnings
    samples = bare_train_rates(args.algo, args.train_steps, blocks=10,
                               weight_decay=args.weight_decay)
    samples = {f'bare_{name}': values for name, values in samples.items()}
    for name in ('dense', 'rigl90'):
        samples[f'loop_{name}'], samples[f'overhead_{name}'] = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits all alike
        for name, sparse in (('dense', False), ('rigl90', True)):
            with contextlib.redirect_stdout(io.StringIO()):
                rate, overhead = loop_rates(args.algo, sparse, args.loop_steps)
            samples[f'loop_{name}'].append(rate)
            samples[f'overhead_{name}'].append(overhead)
    rates = {key: float(np.median(values)) for key, values in samples.items()}
    print(f'{args.algo}: medians of bare rates of 10 alternating blocks, '
          f'loops of {args.repeats} interleaved runs')
    print(f'{"":24s}{"dense":>10s}{"rigl 90%":>10s}')
    print(f'{"bare train steps/s":24s}{rates["bare_dense"]:10.1f}'
          f'{rates["bare_rigl90"]:10.1f}')
    print(f'{"full loop env steps/s":24s}{rates["loop_dense"]:10.1f}'
          f'{rates["loop_rigl90"]:10.1f}')
    print(f'sparse/dense train-step time ratio: '
          f'{rates["bare_dense"] / rates["bare_rigl90"]:.3f} (target <= 1.10)')
    if args.weight_decay:
        print(f'with weight decay {args.weight_decay:g} on both: '
              f'dense {rates["bare_dense_wd"]:.1f}, rigl 90% '
              f'{rates["bare_rigl90_wd"]:.1f} train steps/s; sparse/dense '
              f'{rates["bare_dense_wd"] / rates["bare_rigl90_wd"]:.3f}; '
              f'the sparse config against the dense one (with vs without '
              f'weight decay): '
              f'{rates["bare_dense"] / rates["bare_rigl90_wd"]:.3f}')
    for name in ('dense', 'rigl90'):
        print(f'loop/bare time ratio ({name}): '
              f'{rates[f"bare_{name}"] / rates[f"loop_{name}"]:.3f} across '
              f'runs; {rates[f"overhead_{name}"]:.3f} within a run (loop time '
              '/ time in the act-and-train call) (target <= 1.10)')
    print('per-repeat samples:', {k: [round(v, 3) for v in vs]
                                  for k, vs in samples.items()})


if __name__ == '__main__':
    main()
