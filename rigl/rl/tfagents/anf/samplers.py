"""Noise-feature samplers: one object per distribution, drawn from numpy
(the environment side, one observation at a time, from its seeded
`np.random.Generator`) or from TensorFlow (the network side, a batch in
every forward pass, from its checkpointed `tf.random.Generator`).

Both paths share the tables and the transform from uniform draws to
values, written twice only because one runs in numpy and one in a graph;
`from_uniforms` and `from_uniforms_tf` map the same uniforms to the same
values (up to float32 rounding: the TF path computes in float32), which
the tests check. Each path keeps the exact draws it has always made, so
same-seed runs stay bit-identical.
"""

from typing import Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from rigl.rl.tfagents.anf import histograms


class GaussianSampler:
    """N(0, std^2) for every noise feature."""

    def __init__(self, num_noise: int, std: float):
        self.num_noise = int(num_noise)
        self.std = float(std)

    @property
    def bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """Lowest and highest value of each noise feature."""
        return (np.full(self.num_noise, -np.inf),
                np.full(self.num_noise, np.inf))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """[num_noise] float64 values for one observation."""
        return self.std * rng.standard_normal(self.num_noise)

    def sample_tf(self, generator: tf.random.Generator,
                  batch_size: tf.Tensor) -> tf.Tensor:
        """[batch_size, num_noise] float32 values."""
        return generator.normal(tf.stack([batch_size, self.num_noise])) * (
            self.std)


class HistogramSampler:
    """Noise feature i imitates real feature i mod d: a bin drawn with the
    histogram's probabilities, then a value uniform inside the bin.

    Args:
        bin_edges: [d, bins + 1] per real feature.
        probabilities: [d, bins] per real feature, rows summing to 1.
        num_noise: number of noise features.
    """

    def __init__(self, bin_edges: np.ndarray, probabilities: np.ndarray,
                 num_noise: int):
        self.num_noise = int(num_noise)
        imitated = np.arange(self.num_noise) % bin_edges.shape[0]
        self.edges = bin_edges[imitated]
        cumulative = np.cumsum(probabilities[imitated], axis=1)
        cumulative /= cumulative[:, -1:]
        self.cumulative = cumulative
        num_bins = cumulative.shape[1]
        # Bin j of a feature is drawn when cum[j - 1] <= u < cum[j]. To do
        # this for all noise features with one searchsorted call, feature r
        # searches 2 * r + u in the sorted keys 2 * r + cum[r, :-1]; the gap
        # of 2 between rows keeps rounding from crossing into another row,
        # and dropping the final 1.0 keeps the index inside the row.
        row_offsets = 2.0 * np.arange(self.num_noise)
        self._search_keys = (cumulative[:, :-1] + row_offsets[:, None]).ravel()
        self._query_offsets = row_offsets
        self._keys_before_row = np.arange(self.num_noise) * (num_bins - 1)
        self._flat_edges = self.edges.ravel()
        self._edge_row_starts = np.arange(self.num_noise) * (num_bins + 1)

    @property
    def bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """Lowest and highest value of each noise feature."""
        return self.edges[:, 0], self.edges[:, -1]

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """[num_noise] float64 values for one observation."""
        return self.from_uniforms(rng.random((2, self.num_noise)))

    def from_uniforms(self, uniforms: np.ndarray) -> np.ndarray:
        """[2, num_noise] uniforms in [0, 1) (bin, position in the bin) ->
        [num_noise] values."""
        bins = np.searchsorted(self._search_keys,
                               uniforms[0] + self._query_offsets,
                               side='right') - self._keys_before_row
        lower_index = self._edge_row_starts + bins
        low = self._flat_edges.take(lower_index)
        high = self._flat_edges.take(lower_index + 1)
        # low + (high - low) * u >= low always holds; rounding can only push
        # a value past the bin's upper edge.
        return np.minimum(low + (high - low) * uniforms[1], high)

    def sample_tf(self, generator: tf.random.Generator,
                  batch_size: tf.Tensor) -> tf.Tensor:
        """[batch_size, num_noise] float32 values."""
        return self.from_uniforms_tf(generator.uniform(
            tf.stack([2, self.num_noise, batch_size])))

    def from_uniforms_tf(self, uniforms: tf.Tensor) -> tf.Tensor:
        """[2, num_noise, batch] uniforms -> [batch, num_noise] values."""
        cumulative = tf.constant(self.cumulative, tf.float32)
        edges = tf.constant(self.edges, tf.float32)
        bins = tf.searchsorted(cumulative, uniforms[0], side='right')
        bins = tf.minimum(bins, tf.shape(cumulative)[1] - 1)
        low = tf.gather(edges, bins, batch_dims=1)
        high = tf.gather(edges, bins + 1, batch_dims=1)
        return tf.transpose(low + (high - low) * uniforms[1])


Sampler = Union[GaussianSampler, HistogramSampler]


def make_sampler(num_real: int, num_noise: int, std: float,
                 histogram_file: Optional[str]) -> Sampler:
    """The sampler of a side's settings: histograms from `histogram_file`
    (checked against the `num_real` real features), else Gaussian."""
    if histogram_file is None:
        return GaussianSampler(num_noise, std)
    bin_edges, probabilities = histograms.load_feature_histograms(
        histogram_file, num_features=num_real)
    return HistogramSampler(bin_edges, probabilities, num_noise)
