"""The input layout shared by both sides: how many noise features, and
which input positions hold them after a permutation.

Features are first concatenated, real ones then noise ones; input
position j then holds concatenated feature `permutation[j]`.
"""

import math
from typing import Optional

import numpy as np

from rigl.rl.tfagents.anf import config as config_lib


def num_noise_features(num_real_features: int, noise_fraction: float) -> int:
    """Number of noise features so that they make up `noise_fraction`.

    Returns `ceil(d / (1 - f)) - d`. The quotient is rounded to 1e-9 first
    because e.g. 17 / (1 - 0.9) evaluates to 170.00000000000003, which a plain
    ceil would turn into 171 total features.
    """
    config_lib.check_fraction(noise_fraction)
    total = math.ceil(round(num_real_features / (1.0 - noise_fraction), 9))
    return max(total - num_real_features, 0)


def concatenated_is_noise(num_real: int, total: int) -> np.ndarray:
    """Bool over the concatenated features (real first): True marks noise."""
    return np.arange(total) >= num_real


def noise_mask(is_noise: np.ndarray,
               permutation: Optional[np.ndarray]) -> np.ndarray:
    """Bool over input positions (after `permutation`, None: identity):
    True marks noise. `is_noise` is `concatenated_is_noise`'s array."""
    return (is_noise if permutation is None else is_noise[permutation]).copy()
