r"""How DQN behaves on MountainCar before it first reaches the flag.

Reads the replay buffer of each rerun's checkpoint (every transition so
far, oldest first, when the buffer has not wrapped) and prints, per window
of training steps, what the collecting policy did: how far right its
episodes got (the flag is at position 0.5), how often it pushed along the
velocity (the only way to pump energy into the car) and how often it
repeated one action. Each rerun is compared with the study's run of the
same task, method and seed: their eval returns up to the checkpoint must
match ("same"), so the numbers describe the study's own runs.

  python experiments/mountaincar_early_behaviour.py RERUNS_DIR \
      --study=studies/results/dqn_classic_100k --step=20000
"""

import argparse
import os
from typing import Dict, Optional

import numpy as np

from rigl.rl import layout
from rigl.rl.report.runs import RunData
from rigl.rl.report.runs import read_runs

FLAG_POSITION = 0.5
PUSH_LEFT, PUSH_RIGHT = 0, 2  # 1: no push


def load_replay(run_dir: str, step: int) -> Dict[str, np.ndarray]:
    """The transitions of checkpoint `ckpt-<step>`, oldest first."""
    path = os.path.join(run_dir, layout.CHECKPOINTS_DIR, f'ckpt-{step}',
                        layout.CHECKPOINT_REPLAY_FILE)
    with np.load(path) as saved:
        size = int(saved['size'])
        return {name: saved[name][:size]
                for name in ('observation', 'action', 'ends')}


def run_key(run: RunData) -> tuple:
    """(task, method, seed) of a run, from its rows."""
    first = run.rows[0]
    return first['env_name'], first['method'], first['seed']


def same_run(rerun: RunData, original: Optional[RunData],
             step: int) -> Optional[bool]:
    """Whether a rerun's eval rows up to `step` equal the original run's
    (None without an original)."""
    if original is None:
        return None

    def evals(run):
        return [(r['step'], r['return_mean']) for r in run.rows
                if r['step'] <= step]

    return bool(evals(rerun)) and evals(rerun) == evals(original)


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


def window_stats(replay: Dict[str, np.ndarray], furthest: np.ndarray,
                 begin: int, end: int) -> Dict[str, float]:
    """What the collecting policy did in transitions [begin, end);
    `furthest` is `episode_max_positions(replay)`."""
    actions = replay['action'][begin:end].reshape(-1)
    velocity = replay['observation'][begin:end, 1]
    moving = velocity != 0
    along = ((actions == PUSH_RIGHT) & (velocity > 0)) | (
        (actions == PUSH_LEFT) & (velocity < 0))
    furthest = furthest[begin:end]
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
    parser.add_argument('reruns_dir',
                        help='the output of mountaincar_early_runs.sh')
    parser.add_argument('--study', default='studies/results/dqn_classic_100k')
    parser.add_argument('--step', type=int, default=20000)
    parser.add_argument('--window', type=int, default=5000)
    parser.add_argument('--initial', type=int, default=1000,
                        help='random initial transitions (skipped)')
    args = parser.parse_args()
    originals = {run_key(run): run for run in read_runs(args.study)
                 if run.rows}
    print(f'{"run":10s} {"same":>5s} {"steps":>13s} {"episodes":>8s} '
          f'{"furthest":>8s} {"flag":>4s} {"along v":>7s} '
          f'{"top action":>10s} {"repeat":>6s}')
    for rerun in read_runs(args.reruns_dir):
        _, method, seed = run_key(rerun)
        identical = same_run(rerun, originals.get(run_key(rerun)),
                             args.step)
        replay = load_replay(os.path.join(args.reruns_dir, rerun.path),
                             args.step)
        furthest = episode_max_positions(replay)
        name = f'{method} s{seed}'
        for begin in range(args.initial, args.initial + args.step,
                           args.window):
            stats = window_stats(replay, furthest, begin,
                                 begin + args.window)
            steps = (f'{begin - args.initial:,}-'
                     f'{begin - args.initial + args.window:,}')
            print(f'{name:10s} {str(identical):>5s} {steps:>13s} '
                  f'{stats["episodes"]:8d} {stats["furthest_mean"]:8.3f} '
                  f'{stats["at_flag"]:4d} {stats["along_velocity"]:7.2f} '
                  f'{stats["top_action"]:10.2f} '
                  f'{stats["same_as_previous"]:6.2f}')


if __name__ == '__main__':
    main()
