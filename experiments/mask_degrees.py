r"""How evenly a run's masks spread each layer's connections over neurons.

For every masked online layer of a run's newest checkpoint: its density,
the neurons left with no input (in-degree 0) or no output, the largest
in-degree and the in-degree's coefficient of variation (std / mean; ~0.3
for random masks at these sizes). A gradient-grown topology that funnels a
layer's budget into a few neurons shows a large CV and max in-degree:

  python experiments/mask_degrees.py \
      studies/results/sac_100k/method=set,sparsity=0.9/seed_0 \
      studies/results/sac_100k/method=rigl,sparsity=0.9/seed_0
"""

import os
import sys
from typing import List

import numpy as np


def mask_rows(run_dir: str) -> List[str]:
    import tensorflow as tf
    directory = os.path.join(run_dir, 'checkpoints')
    with open(os.path.join(directory, 'latest')) as f:
        latest = f.read().strip()
    reader = tf.train.load_checkpoint(os.path.join(directory, latest, 'tf'))
    names = sorted(name for name in reader.get_variable_to_shape_map()
                   if '/mask/' in name and 'target' not in name.lower()
                   and '_network' in name)
    rows = [f'{run_dir} ({latest})']
    for name in names:
        mask = reader.get_tensor(name)
        if mask.ndim != 2:
            continue
        in_degree, out_degree = mask.sum(0), mask.sum(1)
        network = name.split('/')[1].strip('_')
        rows.append(
            f'  {network:16} {str(mask.shape):11} density {mask.mean():.3f}'
            f'  no input {int((in_degree == 0).sum()):3d}/{mask.shape[1]}'
            f'  no output {int((out_degree == 0).sum()):3d}/{mask.shape[0]}'
            f'  max in-degree {int(in_degree.max()):4d}'
            f'  in-degree CV '
            f'{in_degree.std() / max(in_degree.mean(), 1e-9):.2f}')
    return rows


def main(argv: List[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for run_dir in argv:
        print('\n'.join(mask_rows(run_dir)))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
