"""This suite against Stable-Baselines3 (SB3), side by side in one run.

  python benchmarks/sb3_comparison.py [--algo sac|ppo|both] [--repeats 2]
      [--sac_steps 3000] [--ppo_iterations 5] [--threads 0]
      [--sb3_python .venv-sb3/bin/python]

SB3 lives in its own virtual environment (benchmarks/requirements-sb3.txt).
Every measurement is a fresh process, the sides alternating, so drift on a
shared machine hits both alike; warm-up is excluded:

* SAC (HalfCheetah-v5; 256x256, batch 256, lr 3e-4, tau 0.005, tuned
  entropy, one update per env step, 1000 random steps): train steps/s from
  train step 1000 to 1000 + sac_steps. Ours counts its loop time only
  (`time_loop`: evaluations excluded); SB3 runs no evaluation.
* PPO (HalfCheetah-v5; 64x64 tanh, 2048 steps per iteration, minibatch 64,
  10 epochs, lr 3e-4 decaying linearly, GAE 0.95, clip 0.2, observation and
  reward normalisation; 1 environment): env steps/s over iterations 2..K
  (the first, with tracing, excluded).

Ours runs dense and RigL at 90% sparsity (ERK, as the sparse configs set
it); SB3 dense. Prints every run's rate, the medians and the
ratios ours / SB3 and sparse / dense.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from results_rows import first_and_last_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, 'rigl', 'rl', 'tfagents', 'configs')
RANDOM_STEPS = 1000
WARMUP_TRAIN_STEPS = 1000
PPO_STEPS = 2048
OURS_CONFIG = {
    ('sac', 'dense'): ('sac_mujoco_dense_config.gin', []),
    ('sac', 'rigl'): ('sac_mujoco_sparse_config.gin',
                      ["mask_updater.update_alg = 'rigl'"]),
    ('ppo', 'dense'): ('ppo_mujoco_dense_config.gin', []),
    ('ppo', 'rigl'): ('ppo_mujoco_sparse_config.gin',
                      ["mask_updater.update_alg = 'rigl'"]),
}


def ours(algo: str, variant: str, amount: int) -> float:
    """Our rate (SAC train steps/s or PPO env steps/s), in this process."""
    import contextlib
    import io

    import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
    import gin
    from rigl.rl.tfagents import train
    from rigl.rl.tfagents.run import console

    console.configure_devices()  # the thread count a user's run gets
    console.quiet_libraries()  # as a train script: no tfp warnings

    config, bindings = OURS_CONFIG[(algo, variant)]
    gin.parse_config_files_and_bindings([os.path.join(CONFIGS, config)],
                                        bindings)
    common = dict(env_name='HalfCheetah-v5', seed=0, eval_episodes=1,
                  time_loop=True, checkpoint_interval=10 ** 9,
                  log_interval=10 ** 9)
    with tempfile.TemporaryDirectory() as root:
        with contextlib.redirect_stdout(io.StringIO()):
            if algo == 'sac':
                train.train_eval(
                    root, algorithm='sac', initial_collect_steps=RANDOM_STEPS,
                    num_iterations=WARMUP_TRAIN_STEPS + amount,
                    eval_interval=WARMUP_TRAIN_STEPS, **common)
            else:
                train.train_eval(root, algorithm='ppo', num_iterations=amount,
                                 eval_interval=1, **common)
        first, last = first_and_last_rows(root)
    seconds = last['loop_seconds'] - first['loop_seconds']
    done = (last['step'] - first['step'] if algo == 'sac'
            else last['env_steps'] - first['env_steps'])
    return done / seconds


def sb3(algo: str, amount: int) -> float:
    """SB3's rate with the same settings (needs SB3's environment)."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    class Clock(BaseCallback):
        """Starts the clock after the warm-up."""

        def __init__(self):
            super().__init__()
            self.started = None
            self.rollouts = 0

        def _on_rollout_start(self) -> None:
            self.rollouts += 1
            if algo == 'ppo' and self.rollouts == 2:
                self.started = time.perf_counter()

        def _on_step(self) -> bool:
            if (algo == 'sac' and self.num_timesteps ==
                    RANDOM_STEPS + WARMUP_TRAIN_STEPS):
                self.started = time.perf_counter()
            return True

    if os.environ.get('OMP_NUM_THREADS'):
        torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))
    clock = Clock()
    if algo == 'sac':
        model = SAC('MlpPolicy', gym.make('HalfCheetah-v5'),
                    learning_rate=3e-4, buffer_size=1_000_000,
                    learning_starts=RANDOM_STEPS, batch_size=256, tau=0.005,
                    gamma=0.99, train_freq=1, gradient_steps=1,
                    ent_coef='auto', policy_kwargs=dict(net_arch=[256, 256]),
                    seed=0)
        model.learn(RANDOM_STEPS + WARMUP_TRAIN_STEPS + amount,
                    callback=clock)
        return amount / (time.perf_counter() - clock.started)
    env = VecNormalize(DummyVecEnv([lambda: gym.make('HalfCheetah-v5')]),
                       gamma=0.99)
    model = PPO('MlpPolicy', env, learning_rate=lambda left: 3e-4 * left,
                n_steps=PPO_STEPS, batch_size=64, n_epochs=10, gamma=0.99,
                gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, vf_coef=0.5,
                max_grad_norm=0.5, policy_kwargs=dict(
                    net_arch=dict(pi=[64, 64], vf=[64, 64]),
                    activation_fn=torch.nn.Tanh), seed=0)
    model.learn(amount * PPO_STEPS, callback=clock)
    return (amount - 1) * PPO_STEPS / (time.perf_counter() - clock.started)


def measure(python: str, side: str, algo: str, variant: str, amount: int,
            threads: int) -> float:
    """One measurement in a fresh process (`threads` > 0: that many
    intra-op threads for TensorFlow and PyTorch alike)."""
    env = dict(os.environ)
    if threads:
        env.update({name: str(threads) for name in (
            'TF_NUM_INTRAOP_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS')})
    completed = subprocess.run(
        [python, os.path.abspath(__file__), f'--child={side}',
         f'--algo={algo}', f'--variant={variant}', f'--amount={amount}',
         f'--threads={threads}'],
        capture_output=True, text=True, cwd=REPO, env=env)
    if completed.returncode != 0:
        raise RuntimeError(
            f'{side} {algo} failed:\n{completed.stderr[-2000:]}')
    return json.loads(completed.stdout.strip().splitlines()[-1])['rate']


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--algo', choices=['sac', 'ppo', 'both'],
                        default='both')
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--sac_steps', type=int, default=3000,
                        help='timed SAC train steps (a multiple of 1000)')
    parser.add_argument('--ppo_iterations', type=int, default=5,
                        help='PPO iterations per run (the first untimed)')
    parser.add_argument('--sb3_python',
                        default=os.path.join(REPO, '.venv-sb3', 'bin',
                                             'python'))
    parser.add_argument('--threads', type=int, default=0,
                        help='intra-op threads of both sides (0: each '
                             "side's default: ours one per op on a CPU, "
                             'PyTorch one per core)')
    parser.add_argument('--child', choices=['ours', 'sb3'])
    parser.add_argument('--variant', default='dense')
    parser.add_argument('--amount', type=int)
    args = parser.parse_args()
    if args.child:
        rate = (ours(args.algo, args.variant, args.amount)
                if args.child == 'ours' else sb3(args.algo, args.amount))
        print(json.dumps({'rate': rate}))
        return
    if args.sac_steps % 1000:
        parser.error('--sac_steps must be a multiple of 1000')
    if not os.path.exists(args.sb3_python):
        parser.error(f'no SB3 interpreter at {args.sb3_python}; see '
                     'benchmarks/requirements-sb3.txt')
    print(f'cpu cores: {os.cpu_count()}; threads: {args.threads or "default"}'
          f'; {args.repeats} alternating repeats; every number a separate '
          'process')
    for algo in (['sac', 'ppo'] if args.algo == 'both' else [args.algo]):
        amount = args.sac_steps if algo == 'sac' else args.ppo_iterations
        unit = 'train steps/s' if algo == 'sac' else 'env steps/s'
        rates = {'ours dense': [], 'ours rigl 90%': [], 'sb3 dense': []}
        for _ in range(args.repeats):
            rates['sb3 dense'].append(measure(
                args.sb3_python, 'sb3', algo, 'dense', amount, args.threads))
            rates['ours dense'].append(measure(
                sys.executable, 'ours', algo, 'dense', amount, args.threads))
            rates['ours rigl 90%'].append(measure(
                sys.executable, 'ours', algo, 'rigl', amount, args.threads))
        print(f'\n{algo.upper()} on HalfCheetah-v5, {unit}')
        for name, values in rates.items():
            print(f'  {name:15s} median {statistics.median(values):8.1f}   '
                  f'runs {" ".join(f"{v:.1f}" for v in values)}')
        medians = {k: statistics.median(v) for k, v in rates.items()}
        print(f'  ours / SB3 (dense): '
              f'{medians["ours dense"] / medians["sb3 dense"]:.2f}x'
              f'   rigl-90% time / dense time: '
              f'{medians["ours dense"] / medians["ours rigl 90%"]:.3f}')


if __name__ == '__main__':
    main()
