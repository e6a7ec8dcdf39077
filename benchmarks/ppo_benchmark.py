"""PPO throughput: the full loop and its train step alone, dense and RigL-90%.

  python benchmarks/ppo_benchmark.py [--iterations 2] [--train_steps 600]

Prints, from one process, for HalfCheetah-v5 with the paper's PPO settings
(64x64 tanh nets, 2048-step sequences, minibatch 64, 10 epochs):
  * full PPO loop (loops.on_policy) env steps/s, measured as the difference of two
    run lengths so tracing and final saving cancel;
  * minibatch train steps/s of `agent.train` alone on a fixed minibatch;
  * the share of loop time the train steps account for.
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
from rigl.rl.tfagents.algos import ppo
from rigl.rl.tfagents.run import settings as settings_lib

SPARSE_BINDINGS = [
    "init_masks.mask_init_method = 'erdos_renyi_kernel'",
    'init_masks.sparsity = 0.9',
    "mask_updater.update_alg = 'rigl'",
    'mask_updater.update_freq = 100',
]
SPARSE_AGENT = dict(train_mode_actor='sparse', train_mode_value='sparse',
                    sparse_output_layer=True)
TRAIN_STEPS_PER_ITERATION = 10 * (2048 // 64)  # epochs x minibatches


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


def loop_seconds(sparse: bool, iterations: int) -> float:
    """Seconds of `iterations` extra loop iterations (fixed costs cancel)."""
    durations = []
    for count in (1, 1 + iterations):
        gin.clear_config()
        gin.parse_config(SPARSE_BINDINGS if sparse else [])
        with tempfile.TemporaryDirectory() as root:
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                train.train_eval(
                    root, algorithm='ppo', env_name='HalfCheetah-v5',
                    num_iterations=count,
                    eval_interval=10 ** 9, eval_episodes=1,
                    checkpoint_interval=10 ** 9, seed=0,
                    **(SPARSE_AGENT if sparse else {}))
            durations.append(time.perf_counter() - start)
    return durations[1] - durations[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iterations', type=int, default=2)
    parser.add_argument('--train_steps', type=int, default=600)
    args = parser.parse_args()
    print(f'{"":32s}{"dense":>10s}{"rigl 90%":>10s}')
    rows = {'loop env steps/s': [], 'train steps/s (alone)': [],
            'train share of loop time': []}
    for sparse in (False, True):
        seconds = loop_seconds(sparse, args.iterations)
        rate = train_rate(sparse, args.train_steps)
        rows['loop env steps/s'].append(args.iterations * 2049 / seconds)
        rows['train steps/s (alone)'].append(rate)
        rows['train share of loop time'].append(
            args.iterations * TRAIN_STEPS_PER_ITERATION / rate / seconds)
    for name, (dense, sparse) in rows.items():
        print(f"{name:32s}{dense:10.2f}{sparse:10.2f}")


if __name__ == '__main__':
    main()
