"""Automatic Noise Filtering (ANF, Grooten et al. 2023): noise input
features, whichever side draws them, and what sparse training does with
them.

  config.py        the gin vocabulary (`noise_features.*`, with the old
                   `NetworkNoise.*` / `create_environment.*` names as
                   aliases) and its resolution into each side's settings
  layout.py        how many noise features, and where they sit after a
                   permutation
  samplers.py      Gaussian and histogram samplers, each with a numpy path
                   (environment side) and a TF path (network side)
  histograms.py    per-feature histograms: make, save, load
  network.py       network side (ANF's own): `NoiseLayout`, shared by every
                   network, and its input layer
  env.py           environment side: the `NoiseFeatures` gymnasium wrapper
  connectivity.py  where a sparse input layer puts its weights: csv, plots

See docs/anf.md.
"""

from rigl.rl.tfagents.anf.config import NetworkNoise
from rigl.rl.tfagents.anf.config import NoiseConfig
from rigl.rl.tfagents.anf.config import bound_values
from rigl.rl.tfagents.anf.config import env_config
from rigl.rl.tfagents.anf.config import network_config
from rigl.rl.tfagents.anf.config import noise_fraction
from rigl.rl.tfagents.anf.config import resolve
from rigl.rl.tfagents.anf.env import NoiseFeatures
from rigl.rl.tfagents.anf.env import find_noise_wrapper
from rigl.rl.tfagents.anf.env import noise_feature_mask
from rigl.rl.tfagents.anf.histograms import load_feature_histograms
from rigl.rl.tfagents.anf.histograms import make_feature_histograms
from rigl.rl.tfagents.anf.histograms import save_feature_histograms
from rigl.rl.tfagents.anf.layout import num_noise_features
from rigl.rl.tfagents.anf.network import NoiseFeatureLayer
from rigl.rl.tfagents.anf.network import NoiseLayout
from rigl.rl.tfagents.anf.network import make_layout
from rigl.rl.tfagents.anf.samplers import GaussianSampler
from rigl.rl.tfagents.anf.samplers import HistogramSampler

__all__ = [
    'GaussianSampler', 'HistogramSampler', 'NetworkNoise', 'NoiseConfig',
    'NoiseFeatureLayer', 'NoiseFeatures', 'NoiseLayout', 'bound_values',
    'env_config', 'find_noise_wrapper', 'load_feature_histograms',
    'make_feature_histograms', 'make_layout', 'network_config',
    'noise_feature_mask', 'noise_fraction', 'num_noise_features', 'resolve',
    'save_feature_histograms',
]
