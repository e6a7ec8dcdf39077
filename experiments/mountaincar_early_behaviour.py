r"""How DQN behaves on MountainCar before it first reaches the flag.

Reads the replay buffer of a run's checkpoint (every transition so far,
oldest first, when the buffer has not wrapped) and prints, per window of
training steps, what the collecting policy did: how far right its episodes
got (the flag is at position 0.5), how often it pushed along the velocity
(the only way to pump energy into the car) and how often it repeated one
action. Runs are compared with the same-seed runs of a study: their eval
returns up to the checkpoint must match, so the numbers describe the study's
own runs.

  python experiments/mountaincar_early_behaviour.py RUN_DIR... \
      --study=studies/results/dqn_classic_100k --step=20000
"""

import argparse
import glob
import json
import os
from typing import Dict, List, Optional

import numpy as np

FLAG_POSITION = 0.5
PUSH_LEFT, NO_PUSH, PUSH_RIGHT = 0, 1, 2


def load_replay(run_dir: str, step: int) -> Dict[str, np.ndarray]:
    """The transitions of checkpoint `ckpt-<step>`, oldest first."""
    path = os.path.join(run_dir, 'checkpoints', f'ckpt-{step}', 'replay.npz')
    with np.load(path) as saved:
        size = int(saved['size'])
        return {name: saved[name][:size]
                for name in ('observation', 'action', 'ends')}


def results(run_dir: str) -> List[dict]:
    with open(os.path.join(run_dir, 'results.jsonl')) as f:
        return [json.loads(line) for line in f]


def same_run(run_dir: str, study_dir: str, step: int) -> Optional[bool]:
    """Whether a rerun's eval rows up to `step` equal the study run's (None
    if the study has no such run)."""
    study_file = os.path.join(study_dir, 'results.jsonl')
    if not os.path.exists(study_file):
        return None
    mine = [(r['step'], r['return_mean']) for r in results(run_dir)
            if r['step'] <= step]
    theirs = [(r['step'], r['return_mean']) for r in results(study_dir)
              if r['step'] <= step]
    return bool(mine) and mine == theirs


def episode_max_positions(replay: Dict[str, np.ndarray]) -> np.ndarray:
    """[transitions] the furthest right position of each transition's
    episode."""
    ends = np.flatnonzero(replay['ends'])
    starts = np.concatenate([[0], ends[:-1] + 1])
    positions = replay['observation'][:, 0]
    furthest = np.empty(len(positions), np.float32)
    for start, end in zip(starts, ends):
        furthest[start:end + 1] = positions[start:end + 1].max()
    if len(ends) and ends[-1] + 1 < len(positions):
        tail = slice(ends[-1] + 1, None)
        furthest[tail] = positions[tail].max()
    return furthest


def window_stats(replay: Dict[str, np.ndarray], begin: int,
                 end: int) -> Dict[str, float]:
    """What the collecting policy did in transitions [begin, end)."""
    actions = replay['action'][begin:end].reshape(-1)
    velocity = replay['observation'][begin:end, 1]
    moving = velocity != 0
    along = ((actions == PUSH_RIGHT) & (velocity > 0)) | (
        (actions == PUSH_LEFT) & (velocity < 0))
    furthest = episode_max_positions(replay)[begin:end]
    episode_ends = replay['ends'][begin:end]
    counts = np.bincount(actions, minlength=3) / max(len(actions), 1)
    return {
        'episodes': int(episode_ends.sum()),
        'furthest_mean': float(furthest[episode_ends].mean())
        if episode_ends.any() else float('nan'),
        'at_flag': int((furthest[episode_ends] >= FLAG_POSITION).sum()),
        'along_velocity': float(along[moving].mean()) if moving.any()
        else float('nan'),
        'top_action': float(counts.max()),
        'same_as_previous': float(np.mean(actions[1:] == actions[:-1])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('run_dirs', nargs='+')
    parser.add_argument('--study', default='studies/results/dqn_classic_100k')
    parser.add_argument('--step', type=int, default=20000)
    parser.add_argument('--window', type=int, default=5000)
    parser.add_argument('--initial', type=int, default=1000,
                        help='random initial transitions (skipped)')
    args = parser.parse_args()
    print(f'{"run":10s} {"same":>5s} {"steps":>13s} {"episodes":>8s} '
          f'{"furthest":>8s} {"flag":>4s} {"along v":>7s} '
          f'{"top action":>10s} {"repeat":>6s}')
    for run_dir in args.run_dirs:
        first = results(run_dir)[0]
        method = first['update_alg'] or 'static'
        study_dirs = glob.glob(os.path.join(
            args.study, f'env_name=MountainCar-v0,method={method},*',
            f'seed_{first["seed"]}'))
        identical = (same_run(run_dir, study_dirs[0], args.step)
                     if study_dirs else None)
        replay = load_replay(run_dir, args.step)
        name = f'{method} s{first["seed"]}'
        for begin in range(args.initial, args.initial + args.step,
                           args.window):
            stats = window_stats(replay, begin, begin + args.window)
            steps = (f'{begin - args.initial:,}-'
                     f'{begin - args.initial + args.window:,}')
            print(f'{name:10s} {str(identical):>5s} {steps:>13s} '
                  f'{stats["episodes"]:8d} {stats["furthest_mean"]:8.3f} '
                  f'{stats["at_flag"]:4d} {stats["along_velocity"]:7.2f} '
                  f'{stats["top_action"]:10.2f} '
                  f'{stats["same_as_previous"]:6.2f}')


if __name__ == '__main__':
    main()
