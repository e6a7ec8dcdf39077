"""Sparse-capable TF-Agents networks built from chains of Dense layers.

Each builder makes plain Keras Dense layers, passes them through
`sparse_layers.wrap_all_layers` when its train mode is 'sparse', and assembles
a TF-Agents `Sequential` network. Masks are drawn later, on the built network,
by `sparse_layers.init_masks`.
"""

from typing import List, Sequence

import tensorflow as tf
from tf_agents.agents.sac import tanh_normal_projection_network
from tf_agents.networks import nest_map
from tf_agents.networks import sequential

from rigl.rl.tfagents import sparse_layers

TRAIN_MODES = ('dense', 'sparse')


def check_train_mode(value: str, name: str) -> str:
    if value not in TRAIN_MODES:
        raise ValueError(f'{name} is {value!r}; allowed: '
                         f'{", ".join(TRAIN_MODES)}.')
    return value


def _flat_size(spec) -> int:
    return sum(int(s.shape.num_elements()) for s in tf.nest.flatten(spec))


def dense_chain(hidden_units: Sequence[int], output_units: int, input_size: int,
                train_mode: str, sparse_output_layer: bool, width: float,
                output_kernel_initializer=None) -> List[tf.keras.layers.Layer]:
    """ReLU hidden layers (scaled by `width`) and a linear output layer.

    In 'sparse' mode the layers are wrapped by `wrap_all_layers`, the output
    layer only if `sparse_output_layer`.
    """
    check_train_mode(train_mode, 'train_mode')
    hidden = [sparse_layers.num_units(units, width) for units in hidden_units]

    def initializer():
        return tf.keras.initializers.VarianceScaling(
            scale=1.0 / 3.0, mode='fan_in', distribution='uniform')

    layers = [tf.keras.layers.Dense(units, activation='relu',
                                    kernel_initializer=initializer())
              for units in hidden]
    layers.append(tf.keras.layers.Dense(
        output_units,
        kernel_initializer=output_kernel_initializer or initializer()))
    if train_mode == 'dense':
        return layers
    dense = () if sparse_output_layer else (len(layers) - 1,)
    return sparse_layers.wrap_all_layers(layers, input_size,
                                         dense_layers=dense)


class _SparseTanhNormalProjection(
        tanh_normal_projection_network.TanhNormalProjectionNetwork):
    """TF-Agents' tanh-normal head over a (possibly sparse) given layer."""

    def __init__(self, sample_spec, projection_layer):
        super().__init__(sample_spec)
        self._projection_layer = projection_layer

    def call(self, inputs, network_state=(), **kwargs):
        kwargs.pop('step_type', None)
        return super().call(inputs, outer_rank=1, **kwargs)


def create_sac_actor_network(observation_spec, action_spec,
                             hidden_units: Sequence[int] = (256, 256),
                             train_mode: str = 'dense',
                             sparse_output_layer: bool = False,
                             width: float = 1.0) -> sequential.Sequential:
    """SAC actor: MLP trunk and tanh-squashed normal head.

    The head's Dense layer (2 * action dims: means and stds) is the output
    layer that `sparse_output_layer` refers to.
    """
    action_size = _flat_size(action_spec)
    layers = dense_chain(hidden_units, 2 * action_size,
                         _flat_size(observation_spec), train_mode,
                         sparse_output_layer, width)
    head = _SparseTanhNormalProjection(action_spec, layers[-1])
    return sequential.Sequential(layers[:-1] + [head],
                                 input_spec=observation_spec,
                                 name='ActorNetwork')


def create_sac_critic_network(observation_spec, action_spec,
                              hidden_units: Sequence[int] = (256, 256),
                              train_mode: str = 'dense',
                              sparse_output_layer: bool = False,
                              width: float = 1.0) -> sequential.Sequential:
    """Q(s, a): concatenated observation and action into an MLP to a scalar."""
    input_size = _flat_size(observation_spec) + _flat_size(action_spec)
    layers = dense_chain(
        hidden_units, 1, input_size, train_mode, sparse_output_layer, width,
        output_kernel_initializer=tf.keras.initializers.RandomUniform(
            minval=-0.003, maxval=0.003))
    return sequential.Sequential(
        [nest_map.NestFlatten(), tf.keras.layers.Concatenate(axis=-1)]
        + layers + [tf.keras.layers.Reshape([])],
        input_spec=(observation_spec, action_spec), name='CriticNetwork')
