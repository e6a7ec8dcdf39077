"""Sparse-capable TF-Agents networks built from chains of Dense layers.

Each builder makes plain Keras Dense layers, passes them through
`sparse_layers.wrap_all_layers` when its train mode is 'sparse', and assembles
a TF-Agents `Sequential` network. Masks are drawn later, on the built network,
by `sparse_layers.init_masks`.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
from tf_agents.agents.sac import tanh_normal_projection_network
from tf_agents.networks import categorical_projection_network
from tf_agents.networks import nest_map
from tf_agents.networks import normal_projection_network
from tf_agents.networks import sequential

from rigl.rl.tfagents import anf
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import tf_agents_private as tfa_private

TRAIN_MODES = ('dense', 'sparse')


def check_train_mode(value: str, name: str) -> str:
    if value not in TRAIN_MODES:
        raise ValueError(f'{name} is {value!r}; allowed: '
                         f'{", ".join(TRAIN_MODES)}.')
    return value


# Kernel initialisers of the SAC/TD3 networks: 'glorot_uniform' (every
# layer, as the original SAC and ANF) or 'tf_agents' (VarianceScaling(1/3),
# critic output U(+-0.003), as TF-Agents' own networks).
INITIALIZERS = ('glorot_uniform', 'tf_agents')


# Kernel initialisers of the PPO networks: 'orthogonal' (the original's:
# Orthogonal hidden kernels, value output U(+-0.03), initial action std
# 0.35) or 'tf_agents' (VarianceScaling(1/3) kernels, initial std 0.693).
PPO_INITIALIZERS = ('orthogonal', 'tf_agents')
# The original's initial action std (sparse_ppo_actor_network.py) and value
# output kernel bound (sparse_value_network.py).
PPO_INITIAL_STD = 0.35
PPO_VALUE_OUTPUT_BOUND = 0.03
# Conv padding of the Atari Q-network: 'same' (the original's Dopamine
# NatureDQNNetwork) or 'valid' (the Nature paper's 7x7x64 features).
ATARI_PADDINGS = ('same', 'valid')


def _flat_size(spec) -> int:
    return sum(int(s.shape.num_elements()) for s in tf.nest.flatten(spec))


def check_initializer(value: str, name: str) -> None:
    if value not in INITIALIZERS:
        raise ValueError(f'{name} is {value!r}; allowed: '
                         f'{", ".join(INITIALIZERS)}.')


def check_ppo_initializer(value: str, name: str) -> None:
    if value not in PPO_INITIALIZERS:
        raise ValueError(f'{name} is {value!r}; allowed: '
                         f'{", ".join(PPO_INITIALIZERS)}.')


def dense_chain(hidden_units: Sequence[int], output_units: int,
                input_size: int, train_mode: str,
                sparse_output_layer: bool, width: float,
                output_kernel_initializer=None,
                activation: str = 'relu', hidden_kernel_initializer=None,
                output_bias_initializer=None,
                initializer_name: str = 'tf_agents',
                wrap_kwargs: Optional[Dict] = None
                ) -> List[tf.keras.layers.Layer]:
    """Hidden layers (scaled by `width`) and a linear output layer.

    In 'sparse' mode the layers are wrapped by `wrap_all_layers` with
    `wrap_kwargs` (the run's sparse method: `SparseMethod.wrap_kwargs`), the
    output layer only if `sparse_output_layer`. `initializer_name`
    'glorot_uniform' draws every kernel Glorot-uniform (the original SAC's
    and ANF's); with 'tf_agents' the kernels are TF-Agents'
    VarianceScaling(1/3) unless the caller's `*_kernel_initializer` say
    otherwise.
    """
    check_train_mode(train_mode, 'train_mode')
    check_initializer(initializer_name, 'initializer')
    hidden = [sparse_layers.num_units(units, width) for units in hidden_units]

    def initializer():
        return tf.keras.initializers.VarianceScaling(
            scale=1.0 / 3.0, mode='fan_in', distribution='uniform')

    if initializer_name == 'glorot_uniform':
        hidden_kernel_initializer = tf.keras.initializers.GlorotUniform
        output_kernel_initializer = tf.keras.initializers.GlorotUniform()

    layers = [tf.keras.layers.Dense(
        units, activation=activation,
        kernel_initializer=(hidden_kernel_initializer() if
                            hidden_kernel_initializer else initializer()))
              for units in hidden]
    layers.append(tf.keras.layers.Dense(
        output_units,
        kernel_initializer=output_kernel_initializer or initializer(),
        bias_initializer=output_bias_initializer or 'zeros'))
    if train_mode == 'dense':
        return layers
    dense = () if sparse_output_layer else (len(layers) - 1,)
    return sparse_layers.wrap_all_layers(layers, input_size,
                                         dense_layers=dense,
                                         **(wrap_kwargs or {}))


class _HeadOnTrunk:
    """Lets a TF-Agents projection head sit at the end of a `Sequential`.

    The head receives the trunk's features [outer dims..., units]; its
    `outer_rank` is therefore the input rank minus one (1 when acting, 2 for
    PPO's [batch, time] training batches).
    """

    def call(self, inputs, network_state=(), **kwargs):
        kwargs.pop('step_type', None)
        return super().call(inputs, outer_rank=inputs.shape.rank - 1,
                            **kwargs)


class _SparseTanhNormalProjection(
        _HeadOnTrunk,
        tanh_normal_projection_network.TanhNormalProjectionNetwork):
    """TF-Agents' tanh-normal head (SAC) over a given mean/std layer."""

    def __init__(self, sample_spec, projection_layer):
        super().__init__(sample_spec)
        tfa_private.set_projection_layer(self, projection_layer)


def _input_layers(noise_layout, with_action: bool = False) -> List:
    """ANF's network-side noise-feature layer, when there is a layout."""
    if noise_layout is None:
        return []
    return [anf.NoiseFeatureLayer(noise_layout, with_action)]


def _observation_size(observation_spec, noise_layout) -> int:
    return (noise_layout.total if noise_layout is not None
            else _flat_size(observation_spec))


def create_sac_actor_network(observation_spec, action_spec,
                             hidden_units: Sequence[int] = (256, 256),
                             train_mode: str = 'dense',
                             sparse_output_layer: bool = False,
                             width: float = 1.0,
                             noise_layout=None,
                             initializer: str = 'tf_agents',
                             wrap_kwargs: Optional[Dict] = None
                             ) -> sequential.Sequential:
    """SAC actor: MLP trunk and tanh-squashed normal head.

    The head's Dense layer (2 * action dims: means and stds) is the output
    layer that `sparse_output_layer` refers to. With a `noise_layout`, the
    first layer adds ANF's noise features to the observation.
    """
    action_size = _flat_size(action_spec)
    layers = dense_chain(hidden_units, 2 * action_size,
                         _observation_size(observation_spec, noise_layout),
                         train_mode, sparse_output_layer, width,
                         initializer_name=initializer,
                         wrap_kwargs=wrap_kwargs)
    head = _SparseTanhNormalProjection(action_spec, layers[-1])
    return sequential.Sequential(
        _input_layers(noise_layout) + layers[:-1] + [head],
        input_spec=observation_spec, name='ActorNetwork')


def create_sac_critic_network(observation_spec, action_spec,
                              hidden_units: Sequence[int] = (256, 256),
                              train_mode: str = 'dense',
                              sparse_output_layer: bool = False,
                              width: float = 1.0,
                              noise_layout=None,
                              initializer: str = 'tf_agents',
                              wrap_kwargs: Optional[Dict] = None
                              ) -> sequential.Sequential:
    """Q(s, a): concatenated observation and action into an MLP to a scalar
    (SAC and TD3). With a `noise_layout`, the observation first gets ANF's
    noise features (the action none)."""
    input_size = (_observation_size(observation_spec, noise_layout) +
                  _flat_size(action_spec))
    layers = dense_chain(
        hidden_units, 1, input_size, train_mode, sparse_output_layer, width,
        output_kernel_initializer=tf.keras.initializers.RandomUniform(
            minval=-0.003, maxval=0.003), initializer_name=initializer,
        wrap_kwargs=wrap_kwargs)
    return sequential.Sequential(
        _input_layers(noise_layout, with_action=True)
        + [nest_map.NestFlatten(), tf.keras.layers.Concatenate(axis=-1)]
        + layers + [tf.keras.layers.Reshape([])],
        input_spec=(observation_spec, action_spec), name='CriticNetwork')


class _SparseNormalProjection(
        _HeadOnTrunk, normal_projection_network.NormalProjectionNetwork):
    """TF-Agents' normal head (state-independent std) over a given mean
    layer; the std, softplus of a bias, starts at `initial_std` (TF-Agents'
    softplus(0) when None)."""

    def __init__(self, sample_spec, means_layer,
                 initial_std: Optional[float] = None):
        bias = 0.0 if initial_std is None else float(
            np.log(np.expm1(initial_std)))  # inverse softplus
        super().__init__(sample_spec, std_bias_initializer_value=bias)
        tfa_private.set_means_projection_layer(self, means_layer)


class _SparseCategoricalProjection(
        _HeadOnTrunk,
        categorical_projection_network.CategoricalProjectionNetwork):
    """TF-Agents' categorical head over a given logits layer."""

    def __init__(self, sample_spec, logits_layer):
        super().__init__(sample_spec)
        tfa_private.set_projection_layer(self, logits_layer)


def _ppo_hidden_initializer(initializer: str):
    """A factory of PPO's hidden-layer kernel initialisers."""
    check_ppo_initializer(initializer, 'initializer')
    if initializer == 'orthogonal':
        return tf.keras.initializers.Orthogonal
    return lambda: tf.keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode='fan_in', distribution='uniform')


def create_ppo_actor_network(observation_spec, action_spec,
                             hidden_units: Sequence[int] = (64, 64),
                             train_mode: str = 'dense',
                             sparse_output_layer: bool = False,
                             width: float = 1.0,
                             initializer: str = 'orthogonal',
                             wrap_kwargs: Optional[Dict] = None
                             ) -> sequential.Sequential:
    """PPO actor: tanh MLP and a normal (continuous) or categorical head.

    The output layer's kernel is VarianceScaling(0.1) either way. With
    `initializer` 'orthogonal' (the original's actor networks) the hidden
    kernels are Orthogonal and a normal head's std starts at 0.35; with
    'tf_agents' they are VarianceScaling(1/3, fan_in, uniform) and the std
    starts at TF-Agents' softplus(0) = 0.693.
    """
    discrete = action_spec.dtype.is_integer
    outputs = (int(action_spec.maximum - action_spec.minimum + 1) if discrete
               else _flat_size(action_spec))
    layers = dense_chain(
        hidden_units, outputs, _flat_size(observation_spec), train_mode,
        sparse_output_layer, width, activation='tanh',
        output_kernel_initializer=tf.keras.initializers.VarianceScaling(0.1),
        hidden_kernel_initializer=_ppo_hidden_initializer(initializer),
        wrap_kwargs=wrap_kwargs)
    if discrete:
        head = _SparseCategoricalProjection(action_spec, layers[-1])
    else:
        std = PPO_INITIAL_STD if initializer == 'orthogonal' else None
        head = _SparseNormalProjection(action_spec, layers[-1], std)
    return sequential.Sequential(layers[:-1] + [head],
                                 input_spec=observation_spec,
                                 name='ActorNetwork')


def create_value_network(observation_spec,
                         hidden_units: Sequence[int] = (64, 64),
                         train_mode: str = 'dense',
                         sparse_output_layer: bool = False,
                         width: float = 1.0,
                         activation: str = 'relu',
                         initializer: str = 'orthogonal',
                         wrap_kwargs: Optional[Dict] = None
                         ) -> sequential.Sequential:
    """V(s): an MLP (`activation` hidden layers) to a scalar.

    With `initializer` 'orthogonal' (the original's value network) the
    hidden kernels are Orthogonal and the output kernel U(-0.03, 0.03); with
    'tf_agents' every kernel is VarianceScaling(1/3, fan_in, uniform).
    """
    output_initializer = None
    if initializer == 'orthogonal':
        output_initializer = tf.keras.initializers.RandomUniform(
            minval=-PPO_VALUE_OUTPUT_BOUND, maxval=PPO_VALUE_OUTPUT_BOUND)
    layers = dense_chain(
        hidden_units, 1, _flat_size(observation_spec), train_mode,
        sparse_output_layer, width, activation=activation,
        output_kernel_initializer=output_initializer,
        hidden_kernel_initializer=_ppo_hidden_initializer(initializer),
        wrap_kwargs=wrap_kwargs)
    return sequential.Sequential(layers + [tf.keras.layers.Reshape([])],
                                 input_spec=observation_spec,
                                 name='ValueNetwork')


class _ScaleToSpec(tf.keras.layers.Layer):
    """tanh, then scaled into the action spec's bounds."""

    def __init__(self, action_spec, **kwargs):
        super().__init__(**kwargs)
        shape = action_spec.shape
        self._low = np.broadcast_to(action_spec.minimum, shape).astype(
            np.float32)
        self._high = np.broadcast_to(action_spec.maximum, shape).astype(
            np.float32)

    def call(self, inputs):
        return self._low + (tf.tanh(inputs) + 1.0) * 0.5 * (
            self._high - self._low)


def create_td3_actor_network(observation_spec, action_spec,
                             hidden_units: Sequence[int] = (256, 256),
                             train_mode: str = 'dense',
                             sparse_output_layer: bool = False,
                             width: float = 1.0,
                             noise_layout=None,
                             wrap_kwargs: Optional[Dict] = None
                             ) -> sequential.Sequential:
    """TD3 actor: a deterministic MLP with a tanh output scaled to the
    action bounds (ANF's noise features first, with a `noise_layout`)."""
    layers = dense_chain(hidden_units, _flat_size(action_spec),
                         _observation_size(observation_spec, noise_layout),
                         train_mode, sparse_output_layer, width,
                         wrap_kwargs=wrap_kwargs)
    return sequential.Sequential(
        _input_layers(noise_layout) + layers + [_ScaleToSpec(action_spec)],
        input_spec=observation_spec, name='ActorNetwork')


def create_q_network(observation_spec, action_spec,
                     hidden_units: Sequence[int] = (512, 512),
                     train_mode: str = 'dense',
                     sparse_output_layer: bool = False,
                     width: float = 1.0,
                     wrap_kwargs: Optional[Dict] = None
                     ) -> sequential.Sequential:
    """DQN's Q(s, .): a ReLU MLP to one value per action, initialised as
    the original suite's: He (truncated normal) hidden layers, output
    weights U(-0.03, 0.03) and output biases -0.2."""
    num_actions = int(action_spec.maximum - action_spec.minimum + 1)
    layers = dense_chain(
        hidden_units, num_actions, _flat_size(observation_spec), train_mode,
        sparse_output_layer, width,
        output_kernel_initializer=tf.keras.initializers.RandomUniform(
            -0.03, 0.03),
        hidden_kernel_initializer=(
            lambda: tf.keras.initializers.VarianceScaling(
                scale=2.0, mode='fan_in', distribution='truncated_normal')),
        output_bias_initializer=tf.keras.initializers.Constant(-0.2),
        wrap_kwargs=wrap_kwargs)
    return sequential.Sequential(layers, input_spec=observation_spec,
                                 name='QNetwork')


class _ScaleFrames(tf.keras.layers.Layer):
    """uint8 frames to floats in [0, 1]."""

    def call(self, inputs):
        return tf.cast(inputs, tf.float32) / 255.0

    def compute_output_shape(self, input_shape):
        return input_shape


def create_atari_q_network(observation_spec, action_spec,
                           train_mode: str = 'dense',
                           sparse_output_layer: bool = False,
                           width: float = 1.0,
                           padding: str = 'same',
                           wrap_kwargs: Optional[Dict] = None
                           ) -> sequential.Sequential:
    """The Nature-DQN Q-network on (84, 84, 4) uint8 frame stacks: conv
    32x8x8/4, 64x4x4/2, 64x3x3/1, dense 512 (all ReLU, channels and units
    scaled by `width`), and one linear output per action.

    `padding` 'same' (the original's, Dopamine's `NatureDQNNetwork`) gives
    21x21, 11x11 and 11x11 conv outputs (7744 features); 'valid' gives the
    Nature paper's 20x20, 9x9 and 7x7 (3136 features).
    """
    check_train_mode(train_mode, 'train_mode')
    if padding not in ATARI_PADDINGS:
        raise ValueError(f'padding is {padding!r}; allowed: '
                         f'{", ".join(ATARI_PADDINGS)}.')
    num_actions = int(action_spec.maximum - action_spec.minimum + 1)

    def units(count):
        return sparse_layers.num_units(count, width)

    def conv(filters, kernel, stride):
        return tf.keras.layers.Conv2D(units(filters), kernel, strides=stride,
                                      padding=padding, activation='relu')

    layers = [
        _ScaleFrames(),
        conv(32, 8, 4),
        conv(64, 4, 2),
        conv(64, 3, 1),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(units(512), activation='relu'),
        tf.keras.layers.Dense(num_actions),
    ]
    if train_mode == 'sparse':
        layers = sparse_layers.wrap_all_layers(
            layers, tuple(observation_spec.shape),
            dense_layers=() if sparse_output_layer else (-1,),
            **(wrap_kwargs or {}))
    return sequential.Sequential(layers, input_spec=observation_spec,
                                 name='QNetwork')
