"""Distributed (Reverb) SAC against the single-process loop, in one run.

  python benchmarks/distributed_benchmark.py [--actors 1 2 4] [--steps 3000]
      [--samples_per_insert 256 64] [--sparse]

Every setup trains SAC on HalfCheetah-v5 (256x256, batch 256, 1000 random
steps) for --steps train steps as a fresh process (the single-process
script, or `rigl.rl.distributed --role=all`), evaluating one episode at a
third, two thirds and the end of training. Rates are measured between the
first and the last evaluation row of results.jsonl (the same evaluation
cost on both sides; start-up and tracing excluded): env steps/s and train
steps/s, and each setup's env steps/s as a ratio to the single process.

With samples_per_insert = batch_size (256, the single-process ratio) the
learner sets the pace and more actors cannot add env steps; a lower ratio
(e.g. 64: four env steps per train step) shows what the actors can collect.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

from results_rows import rates_between_evaluations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, 'rigl', 'rl', 'tfagents', 'configs')


def bindings(steps: int, samples_per_insert: float) -> list:
    train_every = max(1, round(256 / samples_per_insert))
    return [
        "train_eval.env_name = 'HalfCheetah-v5'",
        f'train_eval.num_iterations = {steps}',
        'train_eval.initial_collect_steps = 1000',
        f'train_eval.eval_interval = {steps // 3}',
        'train_eval.eval_episodes = 1',
        f'train_eval.checkpoint_interval = {steps}',
        f'train_eval.log_interval = {steps // 6}',
        f'train_eval.train_every = {train_every}',
        'train_eval.seed = 0',
    ]


def run(command: list, root: str) -> dict:
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f'failed ({done.returncode}): {" ".join(command)}\n'
                 f'{done.stderr[-2000:]}')
    result = rates_between_evaluations(root)
    result['wall_seconds'] = time.time() - started
    return result


def report(row: tuple) -> None:
    name, ratio, result, versus = row
    print(f'{name} (samples/insert {ratio:g}): '
          f'{result["env_steps_per_second"]:.1f} env steps/s, '
          f'{result["train_steps_per_second"]:.1f} train steps/s, '
          f'{versus:.2f}x the single process', flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--actors', type=int, nargs='+', default=[1, 2, 4])
    parser.add_argument('--steps', type=int, default=3000)
    parser.add_argument('--samples_per_insert', type=float, nargs='+',
                        default=[256.0])
    parser.add_argument('--sparse', action='store_true',
                        help='RigL at 90%% instead of dense networks')
    args = parser.parse_args()
    config = os.path.join(CONFIGS, 'sac_mujoco_sparse_config.gin' if
                          args.sparse else 'sac_mujoco_dense_config.gin')
    extra = ["mask_updater.update_alg = 'rigl'"] if args.sparse else []
    table = []
    with tempfile.TemporaryDirectory() as scratch:
        for ratio in args.samples_per_insert:
            gin_flags = [f'--gin_file={config}'] + [
                f'--gin_bindings={b}' for b in bindings(args.steps, ratio)
                + extra]
            root = os.path.join(scratch, f'single_{ratio:g}')
            single = run([sys.executable, os.path.join(
                REPO, 'rigl', 'rl', 'tfagents', 'sac_train_eval.py'),
                f'--root_dir={root}'] + gin_flags, root)
            table.append((f'single process, 1 env step per '
                          f'{256 / ratio:g}', ratio, single, 1.0))
            report(table[-1])
            for actors in args.actors:
                root = os.path.join(scratch, f'reverb_{ratio:g}_{actors}')
                result = run([sys.executable, '-m', 'rigl.rl.distributed',
                              '--algo=sac', '--role=all',
                              f'--num_actors={actors}',
                              f'--samples_per_insert={ratio}',
                              f'--root_dir={root}'] + gin_flags, root)
                table.append((f'Reverb, {actors} actor(s)', ratio, result,
                              result['env_steps_per_second'] /
                              single['env_steps_per_second']))
                report(table[-1])
    print(f'\nSAC HalfCheetah-v5, {"RigL 90%" if args.sparse else "dense"}, '
          f'{args.steps} train steps per setup, {os.cpu_count()} cores')
    print(f'{"setup":36}{"samples/insert":>15}{"env steps/s":>13}'
          f'{"train steps/s":>15}{"env ratio":>11}')
    for name, ratio, result, versus in table:
        print(f'{name:36}{ratio:15g}{result["env_steps_per_second"]:13.1f}'
              f'{result["train_steps_per_second"]:15.1f}{versus:11.2f}')


if __name__ == '__main__':
    main()
