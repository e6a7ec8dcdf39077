"""Network-side noise features, as ANF (Grooten et al. 2023) draws them.

In ANF the noise features are not part of the environment: every forward
pass of every network (actor, critics, their targets) draws fresh noise,
appends it to the real observation and applies one permutation shared by all
networks. The replay buffer stores only the real observation, so a
transition sampled twice shows different noise and the noise can never
serve as its fingerprint.

`NoiseLayout` holds what the networks share: feature counts, the
permutation (a variable, checkpointed, redrawn every `adjust_period` env
steps if asked) and the noise random stream (a checkpointed
`tf.random.Generator`). `NoiseFeatureLayer` is the input layer that applies
it; copies of a network (targets) keep the same layout. Checkpoints name
them `noise_layout/permutation` and `noise_layout/rng`.
"""

from typing import Optional

import numpy as np
import tensorflow as tf

from rigl.rl.tfagents.anf import config as config_lib
from rigl.rl.tfagents.anf import layout as layout_lib
from rigl.rl.tfagents.anf import samplers


class NoiseLayout(tf.Module):
    """Feature counts, permutation and noise stream shared by all networks.

    Args:
        num_real: real observation features d.
        config: the network side's settings.
        seed: seed of the noise stream and of the first permutation.
    """

    def __init__(self, num_real: int, config: config_lib.NoiseConfig,
                 seed: int):
        super().__init__(name='noise_layout')
        self.config = config
        self.num_real = int(num_real)
        self.num_noise = layout_lib.num_noise_features(num_real,
                                                       config.fraction)
        self.total = self.num_real + self.num_noise
        initial = (np.random.default_rng(seed).permutation(self.total)
                   if config.permuted else np.arange(self.total))
        self.permutation = tf.Variable(initial, dtype=tf.int32,
                                       trainable=False, name='permutation')
        self.rng = tf.random.Generator.from_seed(seed)
        self._is_noise = layout_lib.concatenated_is_noise(self.num_real,
                                                          self.total)
        self._sampler = samplers.make_sampler(
            self.num_real, self.num_noise, config.std,
            config.histogram_file) if self.num_noise else None

    @property
    def noise_mask(self) -> np.ndarray:
        """Bool over network input features (after the permutation): True
        marks noise."""
        return layout_lib.noise_mask(self._is_noise, self.permutation.numpy())

    def redraw(self, rng: np.random.Generator) -> None:
        """A new permutation of all features, for every network at once."""
        self.permutation.assign(rng.permutation(self.total))

    def apply(self, observation: tf.Tensor) -> tf.Tensor:
        """[..., d] real features -> [..., total], fresh noise, permuted."""
        outer = tf.shape(observation)[:-1]
        flat = tf.reshape(observation, [-1, self.num_real])
        if self.num_noise:
            noise = self._sampler.sample_tf(self.rng, tf.shape(flat)[0])
            features = tf.concat([flat, noise], axis=-1)
        else:
            features = flat
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
    """The layout of the gin config in force (`noise_features.*` with
    where='network', or the old `NetworkNoise.*`), or None without
    network-side noise features."""
    config = config_lib.network_config()
    return NoiseLayout(num_real, config, seed) if config is not None else None
