"""ANF connectivity: where a sparse input layer puts its weights.

`input_connectivity` measures it on a network at each evaluation. From the
results rows (each eval records every network's mean active
input-layer weights per real and per noise feature) this writes
`connectivity.csv` and `connectivity.png` (real vs noise over env steps),
and at the end `input_layer.png`: the actor's active input weights per input
feature, real features marked. Plots render headless (Agg).
"""

import csv
import os
from typing import Dict, List, Optional

import numpy as np

from rigl.rl.tfagents import sparse_layers

CSV_FILE = 'connectivity.csv'
FIELDS = ('step', 'env_steps', 'network', 'per_real_feature',
          'per_noise_feature')


def input_connectivity(network, noise_mask: Optional[np.ndarray]
                       ) -> Optional[Dict]:
    """Mean active input-layer weights per real and per noise feature (ANF).

    The input layer's first rows are the observation (critics append the
    action after it).
    """
    if noise_mask is None:
        return None
    layers = sparse_layers.kernel_layers(network)
    if not layers or not isinstance(layers[0], sparse_layers.MaskedLayer):
        return None
    rows = layers[0].mask.numpy()[:noise_mask.size].sum(axis=1)
    return {'per_real_feature': float(rows[~noise_mask].mean()),
            'per_noise_feature': float(rows[noise_mask].mean())
            if noise_mask.any() else 0.0}


def write_csv(root_dir: str, rows: List[Dict]) -> Optional[str]:
    """connectivity.csv from results rows; None when no row has any."""
    records = [
        (row['step'], row['env_steps'], name,
         values['input_connectivity']['per_real_feature'],
         values['input_connectivity']['per_noise_feature'])
        for row in rows for name, values in row.get('networks', {}).items()
        if values.get('input_connectivity')]
    if not records:
        return None
    path = os.path.join(root_dir, CSV_FILE)
    with open(path + '.tmp', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        writer.writerows(records)
    os.replace(path + '.tmp', path)
    return path


def _pyplot():
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    return plt


def plot_over_time(root_dir: str, rows: List[Dict]) -> Optional[str]:
    """connectivity.png: active input weights per real and per noise
    feature against env steps, one colour per network."""
    series: Dict[str, List] = {}
    for row in rows:
        for name, values in row.get('networks', {}).items():
            if values.get('input_connectivity'):
                series.setdefault(name, []).append(
                    (row['env_steps'], values['input_connectivity']))
    if not series:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for index, (name, points) in enumerate(series.items()):
        color = f'C{index}'
        steps = [step for step, _ in points]
        axis.plot(steps, [p['per_real_feature'] for _, p in points],
                  color=color, label=f'{name}: real features')
        axis.plot(steps, [p['per_noise_feature'] for _, p in points],
                  color=color, linestyle='--',
                  label=f'{name}: noise features')
    axis.set_xlabel('environment steps')
    axis.set_ylabel('active input weights per feature')
    axis.set_title('Input-layer connectivity: real vs noise features')
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = os.path.join(root_dir, 'connectivity.png')
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_input_layer(root_dir: str, mask: np.ndarray, noise_mask: np.ndarray,
                     network: str = 'actor') -> str:
    """input_layer.png: active weights of each input feature (rows of the
    input layer's mask, in network input order), real features marked."""
    counts = mask[:noise_mask.size].sum(axis=1)
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 3.6))
    features = np.arange(noise_mask.size)
    axis.bar(features[noise_mask], counts[noise_mask], width=1.0,
             color='0.7', label='noise features')
    axis.bar(features[~noise_mask], counts[~noise_mask], width=1.0,
             color='C3', label='real features')
    axis.set_xlabel('input feature (network input order)')
    axis.set_ylabel('active weights')
    axis.set_title(f'{network} input layer at the end of training '
                   f'({mask.shape[1]} units)')
    axis.set_xlim(-0.5, noise_mask.size - 0.5)
    axis.set_ylim(0, max(1, counts.max()) * 1.3)  # room for the legend
    axis.legend(fontsize=8, ncol=2, loc='upper right')
    figure.tight_layout()
    path = os.path.join(root_dir, 'input_layer.png')
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
