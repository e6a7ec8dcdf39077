"""Per-feature observation histograms, for histogram noise features.

`make_feature_histograms` bins a rollout's observations, one histogram per
feature; `save_feature_histograms` writes them as the `.npz` file that
`noise_features.histogram_file` names (`python -m rigl.rl.make_histograms`
does both) and `load_feature_histograms` reads and checks it.
"""

import os
from typing import Optional, Tuple

import numpy as np

from rigl.rl.tfagents.anf import config as config_lib


def _check_histograms(bin_edges: np.ndarray, probabilities: np.ndarray,
                      source: str) -> None:
    """Raises ValueError unless the arrays are valid per-feature histograms."""
    if bin_edges.ndim != 2 or bin_edges.shape[1] < 2:
        raise ValueError(
            f'{source}: bin_edges has shape {bin_edges.shape}; expected '
            '(num_features, num_bins + 1) with num_bins >= 1.')
    expected = (bin_edges.shape[0], bin_edges.shape[1] - 1)
    if probabilities.shape != expected:
        raise ValueError(
            f'{source}: probabilities has shape {probabilities.shape}; '
            f'expected {expected} to match bin_edges {bin_edges.shape}.')
    if not (np.all(np.isfinite(bin_edges)) and
            np.all(np.diff(bin_edges, axis=1) >= 0)):
        raise ValueError(
            f'{source}: bin_edges must be finite and non-decreasing along '
            'each row.')
    if not (np.all(np.isfinite(probabilities)) and np.all(probabilities >= 0)
            and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)):
        raise ValueError(
            f'{source}: probabilities must be non-negative and each row must '
            'sum to 1.')


def make_feature_histograms(observations: np.ndarray,
                            num_bins: int) -> Tuple[np.ndarray, np.ndarray]:
    """Builds per-feature histograms from a rollout, for histogram noise.

    Args:
        observations: Array of shape (num_samples, num_features).
        num_bins: Number of equal-width bins per feature.

    Returns:
        `(bin_edges, probabilities)` of shapes (num_features, num_bins + 1)
        and (num_features, num_bins); each probability row sums to 1.

    Raises:
        ValueError: On an empty, non-2-D or non-finite `observations`, or a
            non-positive `num_bins`.
    """
    config_lib.check_positive_int(num_bins, 'num_bins')
    observations = np.asarray(observations, dtype=np.float64)
    if observations.ndim != 2 or observations.shape[0] == 0:
        raise ValueError(
            f'observations has shape {observations.shape}; expected '
            '(num_samples, num_features) with num_samples >= 1.')
    if not np.all(np.isfinite(observations)):
        raise ValueError('observations must be finite.')
    num_samples, num_features = observations.shape
    bin_edges = np.empty((num_features, num_bins + 1))
    probabilities = np.empty((num_features, num_bins))
    for feature in range(num_features):
        counts, bin_edges[feature] = np.histogram(observations[:, feature],
                                                  bins=num_bins)
        probabilities[feature] = counts / num_samples
    return bin_edges, probabilities


def save_feature_histograms(path: str, bin_edges: np.ndarray,
                            probabilities: np.ndarray) -> str:
    """Saves histograms as the `.npz` file that histogram noise reads.

    Args:
        path: Destination; numpy appends `.npz` if it is missing.
        bin_edges: Array of shape (num_features, num_bins + 1).
        probabilities: Array of shape (num_features, num_bins).

    Returns:
        The path actually written.

    Raises:
        ValueError: If the arrays are not valid histograms.
    """
    bin_edges = np.asarray(bin_edges, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    _check_histograms(bin_edges, probabilities, 'save_feature_histograms')
    path = os.fspath(path)
    if not path.endswith('.npz'):
        path += '.npz'
    np.savez(path, bin_edges=bin_edges, probabilities=probabilities)
    return path


def load_feature_histograms(
        path: str, num_features: Optional[int] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Loads and validates a file written by `save_feature_histograms`.

    Args:
        path: The `.npz` file with `bin_edges` and `probabilities`.
        num_features: If given, the number of rows the histograms must have.

    Returns:
        `(bin_edges, probabilities)` as float64 arrays.

    Raises:
        ValueError: If the file is missing, unreadable or has wrong contents.
    """
    import zipfile  # pylint: disable=import-outside-toplevel
    import zlib  # pylint: disable=import-outside-toplevel

    if not os.path.isfile(path):
        raise ValueError(f'histogram_file={path!r} does not exist.')
    try:
        with np.load(path, allow_pickle=False) as contents:
            bin_edges = np.asarray(contents['bin_edges'], dtype=np.float64)
            probabilities = np.asarray(contents['probabilities'],
                                       dtype=np.float64)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        # A truncated or corrupted file (e.g. a copy that did not finish).
        raise ValueError(
            f'histogram_file={path!r} is damaged ({error or "truncated"}): '
            'write it again (python -m rigl.rl.make_histograms).') from None
    except (KeyError, OSError, ValueError) as error:
        raise ValueError(
            f'histogram_file={path!r} is not an .npz file with arrays '
            f"'bin_edges' and 'probabilities': {error}") from error
    _check_histograms(bin_edges, probabilities, f'histogram_file={path!r}')
    if num_features is not None and bin_edges.shape[0] != num_features:
        raise ValueError(
            f'histogram_file={path!r} has histograms for '
            f'{bin_edges.shape[0]} features, but the observation has '
            f'{num_features}.')
    return bin_edges, probabilities
