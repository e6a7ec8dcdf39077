"""Network-side noise features, as ANF (Grooten et al. 2023) draws them.

In ANF the noise features are not part of the environment: every forward
pass of every network (actor, critics, their targets) draws fresh noise,
appends it to the real observation and applies one permutation shared by all
networks. The replay buffer stores only the real observation, so a
transition sampled twice shows different noise and the noise can never
serve as its fingerprint. (`envs.NoiseFeatures` is the other regime: noise
added by the environment and stored in replay.)

`NoiseLayout` holds what the networks share: feature counts, the
permutation (a variable, checkpointed, redrawn every `adjust_period` env
steps if asked) and the noise random stream (a checkpointed
`tf.random.Generator`). `NoiseFeatureLayer` is the input layer that applies
it; copies of a network (targets) keep the same layout.
"""

import dataclasses
from typing import Optional

import gin
import numpy as np
import tensorflow as tf

from rigl.rl.tfagents import envs
from rigl.rl.tfagents.run import settings as settings_lib

REFILL_MODES = ('random', 'policy')


@gin.configurable
@dataclasses.dataclass(frozen=True)
class NetworkNoise:
    """Network-side noise features (gin: `NetworkNoise.<name>`).

    Attributes:
        noise_fraction: fraction in [0, 1) of the network input that is noise
            (0: none).
        noise_std: std of Gaussian noise (unused with `histogram_file`).
        histogram_file: `.npz` of per-feature histograms (see
            `envs.make_feature_histograms`); noise feature i imitates real
            feature i mod d.
        permute: shuffle real and noise features with a fixed permutation.
        adjust_period: redraw the permutation every this many env steps
            (0: never; implies `permute`).
        empty_buffer_on_change: empty the replay buffer at a redraw.
        refill_timesteps: env steps collected without training after emptying.
        refill_mode: 'random' or 'policy' actions for the refill.
    """
    noise_fraction: float = 0.0
    noise_std: float = 1.0
    histogram_file: Optional[str] = None
    permute: bool = False
    adjust_period: int = 0
    empty_buffer_on_change: bool = False
    refill_timesteps: int = 0
    refill_mode: str = 'random'

    def __post_init__(self):
        name = 'NetworkNoise.'
        settings_lib.check(name + 'noise_fraction', self.noise_fraction, float,
                           low=0, high=1, high_open=True)
        settings_lib.check(name + 'noise_std', self.noise_std, float, low=0,
                           low_open=True)
        settings_lib.check(name + 'histogram_file', self.histogram_file,
                           Optional[str])
        settings_lib.check(name + 'adjust_period', self.adjust_period, int,
                           low=0)
        settings_lib.check(name + 'refill_timesteps', self.refill_timesteps,
                           int, low=0)
        if self.refill_mode not in REFILL_MODES:
            raise ValueError(f'NetworkNoise.refill_mode is '
                             f'{self.refill_mode!r}; allowed: '
                             f'{", ".join(REFILL_MODES)}.')

    @property
    def enabled(self) -> bool:
        return bool(self.noise_fraction or self.histogram_file or
                    self.permute or self.adjust_period)


class NoiseLayout(tf.Module):
    """Feature counts, permutation and noise stream shared by all networks.

    Args:
        num_real: real observation features d.
        config: the `NetworkNoise` settings.
        seed: seed of the noise stream and of the first permutation.
    """

    def __init__(self, num_real: int, config: NetworkNoise, seed: int):
        super().__init__(name='noise_layout')
        self.config = config
        self.num_real = int(num_real)
        self.num_noise = envs.num_noise_features(num_real,
                                                 config.noise_fraction)
        self.total = self.num_real + self.num_noise
        permuted = config.permute or config.adjust_period > 0
        initial = (np.random.default_rng(seed).permutation(self.total)
                   if permuted else np.arange(self.total))
        self.permutation = tf.Variable(initial, dtype=tf.int32,
                                       trainable=False, name='permutation')
        self.rng = tf.random.Generator.from_seed(seed)
        self._histograms = None
        if config.histogram_file is not None and self.num_noise:
            edges, probabilities = envs.load_feature_histograms(
                config.histogram_file, num_features=self.num_real)
            imitated = np.arange(self.num_noise) % self.num_real
            cumulative = np.cumsum(probabilities[imitated], axis=1)
            cumulative /= cumulative[:, -1:]
            self._histograms = (
                tf.constant(cumulative, tf.float32),
                tf.constant(edges[imitated], tf.float32))

    @property
    def noise_mask(self) -> np.ndarray:
        """Bool over network input features (after the permutation): True
        marks noise."""
        is_noise = np.arange(self.total) >= self.num_real
        return is_noise[self.permutation.numpy()]

    def redraw(self, rng: np.random.Generator) -> None:
        """A new permutation of all features, for every network at once."""
        self.permutation.assign(rng.permutation(self.total))

    def _noise(self, batch_size) -> tf.Tensor:
        shape = tf.stack([batch_size, self.num_noise])
        if self._histograms is None:
            return self.rng.normal(shape) * self.config.noise_std
        cumulative, edges = self._histograms
        uniforms = self.rng.uniform(tf.stack([2, self.num_noise, batch_size]))
        bins = tf.searchsorted(cumulative, uniforms[0], side='right')
        bins = tf.minimum(bins, tf.shape(cumulative)[1] - 1)
        low = tf.gather(edges, bins, batch_dims=1)
        high = tf.gather(edges, bins + 1, batch_dims=1)
        return tf.transpose(low + (high - low) * uniforms[1])

    def apply(self, observation: tf.Tensor) -> tf.Tensor:
        """[..., d] real features -> [..., total] with fresh noise, permuted."""
        outer = tf.shape(observation)[:-1]
        flat = tf.reshape(observation, [-1, self.num_real])
        features = tf.concat(
            [flat, self._noise(tf.shape(flat)[0])], axis=-1) if (
                self.num_noise) else flat
        features = tf.gather(features, self.permutation, axis=-1)
        return tf.reshape(features, tf.concat([outer, [self.total]], 0))


class NoiseFeatureLayer(tf.keras.layers.Layer):
    """Input layer adding a `NoiseLayout`'s noise features to observations.

    With `with_action`, the input is (observation, action) (critics) and only
    the observation gets noise features. A deep copy (a target network)
    shares the layout.
    """

    def __init__(self, layout: NoiseLayout, with_action: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.layout = layout
        self._with_action = with_action

    def call(self, inputs):
        if self._with_action:
            observation, action = inputs
            return self.layout.apply(observation), action
        return self.layout.apply(inputs)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate(
            [self.layout.total])

    def __deepcopy__(self, memo):
        return NoiseFeatureLayer(self.layout, self._with_action,
                                 name=self.name)


def make_layout(num_real: int, seed: int) -> Optional[NoiseLayout]:
    """The configured layout (gin `NetworkNoise`), or None without noise."""
    config = NetworkNoise()
    return NoiseLayout(num_real, config, seed) if config.enabled else None
