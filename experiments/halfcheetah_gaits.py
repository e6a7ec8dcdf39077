"""How each HalfCheetah run moves: upright running or flipped on its back.

HalfCheetah has a well-known local optimum: the cheetah flips onto its back
and pushes itself forward upside down, which earns about 1000-2500 where an
upright run earns 4000-6000. For every finished HalfCheetah run under the
given study roots, this plays one greedy episode of the run's saved policy
and prints its return, the fraction of steps with the torso upside down
(cos of the torso angle below 0; the angle is observation[1] and the forward
velocity observation[8] when the run has no noise features) and the mean
forward velocity.

    python experiments/halfcheetah_gaits.py studies/results/sac_100k
"""

import argparse
import os
from typing import Dict, List, Tuple

import numpy as np

import rigl  # noqa: F401  (picks the Keras before TensorFlow starts)
from rigl.rl import loading
from rigl.rl.report.runs import read_runs

TORSO_ANGLE, FORWARD_VELOCITY = 1, 8


def halfcheetah_runs(roots: List[str]) -> List[Tuple[str, Dict]]:
    """(run directory, final metric) of every finished HalfCheetah run
    without noise features under `roots`."""
    return [(os.path.join(root, run.path), run.final)
            for root in roots for run in read_runs(root)
            if run.finished and
            run.final.get('env_name', '').startswith('HalfCheetah') and
            not run.final.get('noise_fraction')]


def play(run_dir: str, seed: int = 0) -> Tuple[float, float, float]:
    """(return, fraction of steps upside down, mean forward velocity) of
    one greedy episode of the run's saved policy."""
    policy = loading.load_policy(os.path.join(run_dir, 'policy'))
    env = loading.make_environment(run_dir, seed=seed)
    time_step = env.reset()
    total, observations = 0.0, []
    while not time_step.is_last():
        time_step = env.step(policy.action(time_step))
        total += float(time_step.reward)
        observations.append(np.asarray(time_step.observation))
    observations = np.stack(observations)
    flipped = float(np.mean(np.cos(observations[:, TORSO_ANGLE]) < 0))
    return total, flipped, float(observations[:, FORWARD_VELOCITY].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('roots', nargs='+', help='study result roots')
    args = parser.parse_args()
    runs = halfcheetah_runs(args.roots)
    if not runs:
        raise SystemExit(f'error: no finished HalfCheetah run under '
                         f'{args.roots}')
    print(f'{"run":<44} {"final":>7} {"episode":>8} {"upside down":>11} '
          f'{"velocity":>8}')
    for run_dir, final in runs:
        final_return = final['final_return']
        episode_return, flipped, velocity = play(run_dir)
        name = '/'.join(run_dir.rstrip('/').split(os.sep)[-2:])
        print(f'{name:<44} {final_return:7.0f} {episode_return:8.0f} '
              f'{flipped:11.2f} {velocity:8.2f}', flush=True)


if __name__ == '__main__':
    main()
