r"""Per-layer traces of what SET and RigL drop and grow, against the losses.

Reads the TensorBoard summaries of finished or running runs (the
`mask_update/<optimizer>/layer_<i>/<stat>` scalars every sparse run writes,
and `loss/critic_loss`, `loss/actor_loss`), averages them over the seeds of
each method, prints a table and draws one figure:

  python experiments/mask_update_traces.py --out=traces.png \
      set=studies/results/sac_100k/method=set,sparsity=0.9 \
      rigl=studies/results/sac_100k/method=rigl,sparsity=0.9

Each NAME=DIR takes every `seed_*` run under DIR (or DIR itself if it is a
run). The statistics are those of the last mask update before each summary
step (see `sparsity.updaters.UPDATE_STATS`).
"""

import argparse
import collections
import glob
import os
import sys
from typing import Dict, List

import numpy as np

LOSSES = ('loss/critic_loss', 'loss/actor_loss')


def read_scalars(run_dir: str) -> Dict[str, Dict[int, float]]:
    """{tag: {step: value}} of a run's train summaries."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator
    accumulator = event_accumulator.EventAccumulator(
        os.path.join(run_dir, 'train'), size_guidance={'tensors': 0})
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags().get('tensors', []):
        scalars[tag] = {event.step: float(tf.make_ndarray(event.tensor_proto))
                        for event in accumulator.Tensors(tag)}
    return scalars


def runs_of(directory: str) -> List[str]:
    if os.path.isdir(os.path.join(directory, 'train')):
        return [directory]
    return sorted(path for path in glob.glob(os.path.join(directory,
                                                          'seed_*'))
                  if os.path.isdir(os.path.join(path, 'train')))


def seed_mean(runs: List[Dict], tag: str) -> Dict[int, float]:
    """Mean over seeds at the steps every seed has."""
    series = [run[tag] for run in runs if tag in run]
    if not series:
        return {}
    steps = sorted(set.intersection(*(set(s) for s in series)))
    return {step: float(np.mean([s[step] for s in series])) for step in steps}


def network_stats(runs: List[Dict], optimizer: str) -> Dict[str, Dict]:
    """Per layer: regrown-where-just-dropped share of the grown, and the
    gradient at grown over kept positions (RigL's selection strength)."""
    layers = sorted({tag.split('/')[2] for run in runs for tag in run
                     if tag.startswith(f'mask_update/{optimizer}/')})
    stats = {}
    for layer in layers:
        prefix = f'mask_update/{optimizer}/{layer}/'
        grown = seed_mean(runs, prefix + 'grown')
        same = seed_mean(runs, prefix + 'regrown_just_dropped')
        grad_grown = seed_mean(runs, prefix + 'grad_grown')
        grad_active = seed_mean(runs, prefix + 'grad_active')
        stats[layer] = {
            'regrown_share': {s: same[s] / grown[s] for s in grown
                              if grown[s] > 0 and s in same},
            'grad_ratio': {s: grad_grown[s] / grad_active[s]
                           for s in grad_grown
                           if grad_active.get(s, 0) > 0},
            'grad_active': grad_active,
            'grown': grown,
        }
    return stats


def summarize(series: Dict[int, float], until: int) -> float:
    values = [v for s, v in series.items() if s <= until]
    return float(np.mean(values)) if values else float('nan')


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('groups', nargs='+', help='NAME=DIR')
    parser.add_argument('--out', default='mask_update_traces.png')
    parser.add_argument('--until', type=int, default=10 ** 9,
                        help='average the table over steps <= this')
    args = parser.parse_args(argv)
    methods = collections.OrderedDict()
    for group in args.groups:
        name, _, directory = group.partition('=')
        runs = runs_of(directory)
        if not runs:
            parser.error(f'{directory} holds no run with train/ summaries')
        methods[name] = [read_scalars(run) for run in runs]
        print(f'{name}: {len(runs)} runs')
    print(f'\nmean over update steps <= {args.until}, seeds averaged')
    print(f'{"method":8} {"optimizer":9} {"layer":8} {"regrown/grown":>14} '
          f'{"|g| grown/kept":>15} {"|g| kept":>10}')
    for name, runs in methods.items():
        for optimizer in ('actor', 'critic', 'networks'):
            for layer, stats in network_stats(runs, optimizer).items():
                print(f'{name:8} {optimizer:9} {layer:8} '
                      f'{summarize(stats["regrown_share"], args.until):14.3f} '
                      f'{summarize(stats["grad_ratio"], args.until):15.2f} '
                      f'{summarize(stats["grad_active"], args.until):10.2e}')
    for tag in LOSSES:
        print(f'\n{tag} (mean over steps <= {args.until})')
        for name, runs in methods.items():
            print(f'  {name:8} '
                  f'{summarize(seed_mean(runs, tag), args.until):.4g}')
    draw(methods, args.out)
    print(f'\nfigure: {args.out}')
    return 0


def draw(methods: Dict[str, List[Dict]], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = [('critic', 'regrown_share',
               'critic: regrown where just dropped / grown'),
              ('critic', 'grad_ratio', 'critic: |grad| grown / kept'),
              ('actor', 'regrown_share',
               'actor: regrown where just dropped / grown'),
              ('actor', 'grad_ratio', 'actor: |grad| grown / kept')]
    figure, axes = plt.subplots(2, 3, figsize=(15, 8))
    for axis, (optimizer, key, title) in zip(
            [axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]], panels):
        for name, runs in methods.items():
            for layer, stats in network_stats(runs, optimizer).items():
                series = stats[key]
                if series:
                    steps = sorted(series)
                    axis.plot(steps, [series[s] for s in steps],
                              label=f'{name} {layer}')
        axis.set_title(title, fontsize=10)
        axis.set_xlabel('train step')
        axis.legend(fontsize=7)
    for axis, tag in zip([axes[0, 2], axes[1, 2]], LOSSES):
        for name, runs in methods.items():
            series = seed_mean(runs, tag)
            steps = sorted(series)
            axis.plot(steps, [series[s] for s in steps], label=name)
        axis.set_title(f'{tag} (seed mean)', fontsize=10)
        axis.set_xlabel('train step')
        axis.set_yscale('symlog')
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
