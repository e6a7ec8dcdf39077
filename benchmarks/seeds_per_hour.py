"""Study throughput: one run with every core against one run per core.

  python benchmarks/seeds_per_hour.py [--algo sac ppo] [--sac_steps 4000]
      [--ppo_iterations 12]

A study runs many seeds, so what counts is the env steps all its runs make
per second together. For each agent this runs, as fresh processes:
  1 worker  x N threads (N = the cores): one run alone;
  N workers x 1 thread: N runs (seeds 0..N-1) at once,
and prints each side's total env steps/s and their ratio. Rates are taken
between the first and the last evaluation row of each run's results.jsonl
(start-up and tracing excluded; one evaluation episode per row on both
sides), summed over the runs that ran at once.

SAC: HalfCheetah-v5, the dense MuJoCo config (256x256, batch 256), 1000
random steps. PPO: HalfCheetah-v5, the dense MuJoCo config (64x64, 2048 env
steps per iteration, 1 environment).
"""

import argparse
import os
import subprocess
import sys
import tempfile

from results_rows import rates_between_evaluations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TFAGENTS = os.path.join(REPO, 'rigl', 'rl', 'tfagents')


def command(algo: str, root: str, seed: int, amount: int) -> list:
    if algo == 'sac':
        bindings = [f'train_eval.num_iterations = {amount}',
                    'train_eval.initial_collect_steps = 1000',
                    f'train_eval.eval_interval = {amount // 4}',
                    f'train_eval.checkpoint_interval = {amount}',
                    f'train_eval.log_interval = {amount}']
        config = 'sac_mujoco_dense_config.gin'
    else:
        bindings = [f'train_eval.num_iterations = {amount}',
                    f'train_eval.eval_interval = {amount // 4}',
                    f'train_eval.checkpoint_interval = {amount}',
                    f'train_eval.log_interval = {amount}']
        config = 'ppo_mujoco_dense_config.gin'
    bindings += ["train_eval.env_name = 'HalfCheetah-v5'",
                 'train_eval.eval_episodes = 1', f'train_eval.seed = {seed}']
    return ([sys.executable, os.path.join(TFAGENTS, f'{algo}_train_eval.py'),
             f'--root_dir={root}',
             f'--gin_file={os.path.join(TFAGENTS, "configs", config)}'] +
            [f'--gin_bindings={binding}' for binding in bindings])


def together(algo: str, scratch: str, workers: int, threads: int,
             amount: int) -> float:
    """Total env steps/s of `workers` runs started at once."""
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads))
    roots = [os.path.join(scratch, f'{algo}_{workers}x{threads}_{seed}')
             for seed in range(workers)]
    processes = [subprocess.Popen(command(algo, root, seed, amount), env=env,
                                  stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
                 for seed, root in enumerate(roots)]
    for process in processes:
        _, error = process.communicate()
        if process.returncode:
            sys.exit(f'a {algo} run failed:\n{error[-2000:]}')
    return sum(rates_between_evaluations(root)['env_steps_per_second']
               for root in roots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--algo', nargs='+', default=['sac', 'ppo'],
                        choices=['sac', 'ppo'])
    parser.add_argument('--sac_steps', type=int, default=4000)
    parser.add_argument('--ppo_iterations', type=int, default=12)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    lines = []
    with tempfile.TemporaryDirectory() as scratch:
        for algo in args.algo:
            amount = args.sac_steps if algo == 'sac' else args.ppo_iterations
            one = together(algo, scratch, 1, cores, amount)
            many = together(algo, scratch, cores, 1, amount)
            lines.append(f'{algo.upper():5}{one:18.1f}{many:18.1f}'
                         f'{many / one:9.2f}')
            print(lines[-1], flush=True)
    print(f'\nTotal env steps/s on {cores} cores (HalfCheetah-v5, dense)')
    print(f'{"":5}{f"1 x {cores} threads":>18}{f"{cores} x 1 thread":>18}'
          f'{"ratio":>9}')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
