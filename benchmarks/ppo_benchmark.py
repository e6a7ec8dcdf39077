"""PPO throughput: the full loop and its train step alone, dense and RigL-90%.

  python benchmarks/ppo_benchmark.py [--iterations 2] [--train_steps 600]

Prints, from one process, for HalfCheetah-v5 with the paper's PPO settings
(64x64 tanh nets, 2048-step sequences, minibatch 64, 10 epochs):
  * full PPO loop (loops.on_policy) env steps/s over iterations 2..N+1
    (`time_loop`: the first iteration's tracing and evaluations excluded),
    and the shares of collection and training (all minibatches of an
    iteration run in one compiled call) in it;
  * minibatch train steps/s of `agent.train` called once per minibatch on a
    fixed minibatch (what the loop did before it batched the calls).
"""

import argparse
import contextlib
import io
import tempfile
import time

import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
import gin
import tensorflow as tf
from tf_agents.specs import tensor_spec

from rigl.rl.tfagents import envs
from rigl.rl.tfagents import train
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.algos import ppo
from rigl.rl.tfagents.run import settings as settings_lib
from results_rows import first_and_last_rows

SPARSE_BINDINGS = [
    "init_masks.mask_init_method = 'erdos_renyi_kernel'",
    'init_masks.sparsity = 0.9',
    "mask_updater.update_alg = 'rigl'",
    'mask_updater.update_freq = 100',
]
SPARSE_AGENT = dict(train_mode_actor='sparse', train_mode_value='sparse',
                    sparse_output_layer=True)


def train_rate(sparse: bool, steps: int) -> float:
    """agent.train minibatch steps/s on a fixed random [64, 1] minibatch."""
    gin.clear_config()
    gin.parse_config(SPARSE_BINDINGS if sparse else [])
    env = envs.create_environment('HalfCheetah-v5', seed=0)
    settings = settings_lib.build(
        ppo.PpoSettings, SPARSE_AGENT if sparse else {}, 'PPO')
    agent = ppo.Ppo(settings, tensor_spec.from_spec(env.observation_spec()),
                    tensor_spec.from_spec(env.action_spec()), seed=0).agent
    batch = tensor_spec.sample_spec_nest(agent.training_data_spec,
                                         outer_dims=(64, 1),
                                         seed=0)
    batch = batch._replace(step_type=tf.ones_like(batch.step_type),
                           next_step_type=tf.ones_like(batch.next_step_type))
    train = tf.function(lambda b: agent.train(b).loss, autograph=False)
    for _ in range(5):
        train(batch)
    start = time.perf_counter()
    for _ in range(steps):
        train(batch)
    return steps / (time.perf_counter() - start)


def loop_rates(sparse: bool, iterations: int) -> dict:
    """Loop env steps/s over iterations 2..N+1 (`time_loop`: evaluation and
    the first iteration's tracing excluded) and the collect/train split."""
    gin.clear_config()
    gin.parse_config(SPARSE_BINDINGS if sparse else [])
    with tempfile.TemporaryDirectory() as root:
        with contextlib.redirect_stdout(io.StringIO()):
            train.train_eval(
                root, algorithm='ppo', env_name='HalfCheetah-v5',
                num_iterations=iterations + 1, eval_interval=1,
                eval_episodes=1, checkpoint_interval=10 ** 9, seed=0,
                time_loop=True, **(SPARSE_AGENT if sparse else {}))
        first, last = first_and_last_rows(root)
    seconds = last['loop_seconds'] - first['loop_seconds']
    return {'loop env steps/s': (last['env_steps'] - first['env_steps'])
            / seconds,
            'collect share of loop time': (last['collect_seconds'] -
                                           first['collect_seconds']) / seconds,
            'train share of loop time': (last['train_seconds'] -
                                         first['train_seconds']) / seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iterations', type=int, default=2)
    parser.add_argument('--train_steps', type=int, default=600)
    args = parser.parse_args()
    print(console.configure_devices())  # the threads a user's run gets
    console.quiet_libraries()  # as a train script: no tfp warnings
    print(f'{"":32s}{"dense":>10s}{"rigl 90%":>10s}')
    rows = {}
    for sparse in (False, True):
        for name, value in loop_rates(sparse, args.iterations).items():
            rows.setdefault(name, []).append(value)
        rows.setdefault('train steps/s (one call each)', []).append(
            train_rate(sparse, args.train_steps))
    for name, (dense, sparse) in rows.items():
        print(f"{name:32s}{dense:10.2f}{sparse:10.2f}")


if __name__ == '__main__':
    main()
