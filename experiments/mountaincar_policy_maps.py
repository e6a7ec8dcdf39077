"""Greedy-action maps of MountainCar DQN runs: what a failing policy does.

For every finished MountainCar-v0 run under the given study roots, this
loads the run's saved greedy policy and asks it for an action on a grid of
(position, velocity) states. It prints, per run, the final return, how many
distinct actions the policy uses on the grid, and the fraction of states
where it pushes along the velocity (left when moving left, right when moving
right: the energy-pumping rule that reaches the goal), next to the effective
rank of the Q-network's last hidden features at the run's last evaluation
(`plasticity.q_network.effective_rank` in results.jsonl) and how often its
training episodes reached the flag (from the run's TensorBoard
`train/episode_return`: below 200 steps), then draws every map into one
PNG.

    python experiments/mountaincar_policy_maps.py \
        studies/results/dqn_classic_100k \
        studies/results/dqn_mountaincar_probe \
        --out=docs/studies/dqn_classic_100k/policy_maps.png
"""

import argparse
import os
from typing import List, Tuple

import numpy as np

import rigl  # noqa: F401  (picks the Keras before TensorFlow starts)
from rigl.rl.report.runs import RunData
from rigl.rl.report.runs import read_runs
from rigl.rl.tfagents.run import console

POSITIONS = np.linspace(-1.2, 0.6, 61)
VELOCITIES = np.linspace(-0.07, 0.07, 61)
ACTION_NAMES = ('left', 'none', 'right')


def mountaincar_runs(roots: List[str]) -> List[Tuple[str, RunData]]:
    """(run directory, its data) of every finished MountainCar-v0 run
    under `roots`."""
    return [(os.path.join(root, run.path), run)
            for root in roots for run in read_runs(root)
            if run.finished and run.final.get('env_name') == 'MountainCar-v0']


def action_map(run_dir: str) -> np.ndarray:
    """The saved greedy policy's action at each grid state
    [velocity index, position index]."""
    import tensorflow as tf
    import tensorflow_probability  # noqa: F401  (registers the TypeSpecs)
    from tf_agents.trajectories import time_step as ts

    policy = tf.saved_model.load(os.path.join(run_dir, 'policy'))
    grid_v, grid_p = np.meshgrid(VELOCITIES, POSITIONS, indexing='ij')
    observations = np.stack([grid_p.ravel(), grid_v.ravel()],
                            axis=1).astype(np.float32)
    size = len(observations)
    step = ts.TimeStep(step_type=np.ones(size, np.int32),
                       reward=np.zeros(size, np.float32),
                       discount=np.ones(size, np.float32),
                       observation=observations)
    actions = policy.action(step).action.numpy()
    return actions.reshape(grid_v.shape)


def has_outputs(run_dir: str) -> bool:
    """Whether a run has what its map and flag count read: the saved
    policy and the TensorBoard training logs."""
    return (os.path.isfile(os.path.join(run_dir, 'policy', 'saved_model.pb'))
            and os.path.isdir(os.path.join(run_dir, 'train')))


def final_effective_rank(run: RunData):
    """The effective rank recorded at the run's last evaluation (None when
    the run recorded none)."""
    return run.rows[-1].get('plasticity', {}).get('q_network', {}).get(
        'effective_rank')


def training_goals(run_dir: str):
    """(training episodes that reached the flag, all training episodes,
    train step of the first that did or None)."""
    import tensorflow as tf

    directory = os.path.join(run_dir, 'train')
    returns = []
    for name in sorted(os.listdir(directory)):
        for event in tf.compat.v1.train.summary_iterator(
                os.path.join(directory, name)):
            for value in event.summary.value:
                if value.tag == 'train/episode_return':
                    returns.append((event.step,
                                    float(tf.make_ndarray(value.tensor))))
    reached = [step for step, value in returns if value > -200]
    return len(reached), len(returns), (reached[0] if reached else None)


def pumping_fraction(actions: np.ndarray) -> float:
    """Fraction of moving states where the action pushes along the
    velocity."""
    velocity = np.broadcast_to(VELOCITIES[:, None], actions.shape)
    moving = velocity != 0
    along = np.where(velocity > 0, actions == 2, actions == 0)
    return float(along[moving].mean())


def label(run_dir: str) -> str:
    """'<study>: <group values> <seed>', e.g. 'dqn_classic_100k: set 0.9
    seed_0' (the env name and the setting names dropped)."""
    study, group, seed = run_dir.rstrip('/').split(os.sep)[-3:]
    values = [part.split('=', 1)[-1] for part in group.split(',')
              if not part.startswith('env_name=')]
    return f'{study}: {" ".join(values)} {seed}'


def draw(maps: List[Tuple[str, float, np.ndarray]], path: str) -> None:
    """One panel per run: action over (position, velocity)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    columns = 4
    rows = -(-len(maps) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns,
                                                        2.7 * rows),
                                squeeze=False)
    colors = ListedColormap(['#4c72b0', '#dddddd', '#dd8452'])
    extent = (POSITIONS[0], POSITIONS[-1], VELOCITIES[0], VELOCITIES[-1])
    for axis, (name, final_return, actions) in zip(axes.flat, maps):
        axis.imshow(actions, origin='lower', aspect='auto', extent=extent,
                    cmap=colors, vmin=0, vmax=2, interpolation='nearest')
        axis.set_title(f'{name}\nreturn {final_return:.0f}', fontsize=7)
        axis.tick_params(labelsize=6)
    for axis in axes.flat[len(maps):]:
        axis.axis('off')
    for axis in axes[:, 0]:
        axis.set_ylabel('velocity', fontsize=7)
    for axis in axes[-1]:
        axis.set_xlabel('position', fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors(i))
               for i in range(3)]
    figure.legend(handles, ACTION_NAMES, loc='upper center', ncol=3,
                  fontsize=8, title='greedy action', title_fontsize=8)
    # The legend keeps 0.6 inch at the top, however many rows there are.
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.6 / (2.7 * rows)))
    figure.savefig(path, dpi=100)
    plt.close(figure)


def goals_text(reached: int, episodes: int, first) -> str:
    """'684/803 from 8,988' or '0/545'."""
    return (f'{reached}/{episodes}' +
            (f' from {first:,}' if first is not None else ''))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('roots', nargs='+', help='study result roots')
    parser.add_argument('--out', default='policy_maps.png',
                        help='the PNG of every map')
    args = parser.parse_args()
    console.quiet_libraries()
    runs = mountaincar_runs(args.roots)
    if not runs:
        raise SystemExit('error: no finished MountainCar-v0 run under '
                         f'{args.roots}')
    # A committed study holds results, not policies or TensorBoard logs:
    # only runs trained on this machine can be mapped.
    missing = [run_dir for run_dir, _ in runs if not has_outputs(run_dir)]
    runs = [(run_dir, run) for run_dir, run in runs
            if run_dir not in missing]
    if missing:
        print(f'skipped {len(missing)} run(s) without a saved policy/ and '
              'train/ logs (not committed with a study; rerun a run to '
              'map it): ' + ', '.join(label(d) for d in missing))
    if not runs:
        raise SystemExit('error: no MountainCar-v0 run with its policy/ and '
                         'train/ logs to map.')
    maps = []
    print(f'{"run":<52} {"return":>7} {"actions":>16} {"pumping":>8} '
          f'{"rank":>5} '
          f'{"train episodes at the flag":>27}')
    for run_dir, run in runs:
        final_return = run.final['final_return']
        actions = action_map(run_dir)
        maps.append((label(run_dir), final_return, actions))
        used = ','.join(ACTION_NAMES[a] for a in np.unique(actions))
        print(f'{label(run_dir):<52} {final_return:7.1f} {used:>16} '
              f'{pumping_fraction(actions):8.2f} '
              f'{final_effective_rank(run)!s:>5} '
              f'{goals_text(*training_goals(run_dir)):>27}')
    draw(maps, args.out)
    print(f'maps: {args.out}')


if __name__ == '__main__':
    main()
