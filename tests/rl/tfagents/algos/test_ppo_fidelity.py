"""PPO and the Atari Q-network against the original RigL suite's code.

The values checked here come from google-research/rigl `rigl/rl/tfagents/`
(`ppo_train_eval.py`, `sparse_ppo_actor_network.py`,
`sparse_value_network.py`, `configs/ppo_mujoco_*.gin`) and `rigl/rl/
dqn_agents.py` (Dopamine's `NatureDQNNetwork`). Every test builds small
networks in this process; none trains beyond one step.
"""

import math
import os

import gin
import numpy as np
import pytest

import rigl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf
from tf_agents.specs import tensor_spec

import helpers
from helpers import REPO
from rigl.rl.tfagents import networks
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.algos import ppo

CONFIGS = os.path.join('rigl', 'rl', 'tfagents', 'configs')
OBSERVATION_SPEC = tensor_spec.TensorSpec([3], tf.float32)
CONTINUOUS_ACTIONS = tensor_spec.BoundedTensorSpec([2], tf.float32, -2.0, 2.0)
DISCRETE_ACTIONS = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 1)


@pytest.fixture(autouse=True)
def _clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def build(action_spec=CONTINUOUS_ACTIONS, **overrides) -> ppo.Ppo:
    """A PPO algorithm with small networks and `overrides` settings."""
    values = dict(env_name='Pendulum-v1', seed=0, num_iterations=2,
                  actor_fc_layers=(16, 16), value_fc_layers=(16, 16),
                  collect_sequence_length=8, minibatch_size=8, num_epochs=1)
    values.update(overrides)
    settings = ppo.PpoSettings(**values)
    settings.check()
    return ppo.Ppo(settings, OBSERVATION_SPEC, action_spec, seed=0)


def dense_layers(network) -> list:
    return [getattr(layer, 'layer', layer)
            for layer in sparse_layers.kernel_layers(network)]


def assert_orthogonal(kernel: np.ndarray) -> None:
    """Rows or columns (the shorter side) orthonormal: Keras Orthogonal."""
    small = min(kernel.shape)
    gram = kernel.T @ kernel if kernel.shape[1] == small else kernel @ kernel.T
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-5)


def initial_std(algorithm: ppo.Ppo) -> np.ndarray:
    distribution, _ = algorithm.agent.actor_net(
        tf.zeros([4, 3]), step_type=None, network_state=())
    return distribution.stddev().numpy()


def test_value_network_is_the_originals():
    """ReLU hidden layers with Orthogonal kernels; a linear output with
    kernel U(-0.03, 0.03) and zero bias (sparse_value_network.py:52, 132;
    ppo_train_eval.py:962)."""
    layers = dense_layers(build(value_fc_layers=(64, 64)).networks['value'])
    assert [layer.activation.__name__ for layer in layers] == [
        'relu', 'relu', 'linear']
    for layer in layers[:-1]:
        assert_orthogonal(layer.kernel.numpy())
    output = layers[-1].kernel.numpy()
    assert output.shape == (64, 1)
    assert np.abs(output).max() <= 0.03
    assert np.abs(output).max() > 0.02  # the bound, not a narrower law
    assert not layers[-1].bias.numpy().any()


@pytest.mark.parametrize('action_spec', [CONTINUOUS_ACTIONS,
                                         DISCRETE_ACTIONS])
def test_actor_hidden_kernels_are_orthogonal(action_spec):
    """tanh hidden layers with Orthogonal kernels in both of the original's
    actors (sparse_ppo_actor_network.py:101, the discrete one :104); the
    output keeps VarianceScaling(0.1)."""
    layers = dense_layers(build(action_spec).networks['actor'])
    assert [layer.activation.__name__ for layer in layers[:-1]] == [
        'tanh', 'tanh']
    for layer in layers[:-1]:
        assert_orthogonal(layer.kernel.numpy())
    output = layers[-1].kernel_initializer.get_config()
    assert output['scale'] == 0.1 and output['mode'] == 'fan_in'


def test_initial_action_std_is_035():
    """softplus(log(e^0.35 - 1)) = 0.35 (sparse_ppo_actor_network.py:89),
    in the TF network and in the numpy collect policy."""
    algorithm = build()
    np.testing.assert_allclose(initial_std(algorithm), 0.35, rtol=1e-6)
    np.testing.assert_allclose(algorithm.collect_policy._std, 0.35,
                               rtol=1e-6)


def test_tf_agents_networks_stay_available():
    """`network_initializer='tf_agents'` and `value_activation='tanh'` give
    the previous networks: VarianceScaling(1/3) kernels, std softplus(0)."""
    algorithm = build(network_initializer='tf_agents',
                      value_activation='tanh')
    np.testing.assert_allclose(initial_std(algorithm), math.log(2.0),
                               rtol=1e-6)
    value = dense_layers(algorithm.networks['value'])
    assert [layer.activation.__name__ for layer in value] == [
        'tanh', 'tanh', 'linear']
    for layer in value + dense_layers(algorithm.networks['actor'])[:-1]:
        config = layer.kernel_initializer.get_config()
        assert config['scale'] == pytest.approx(1.0 / 3.0)
        assert config['distribution'] == 'uniform'


@pytest.mark.parametrize('binding, message', [
    (dict(network_initializer='glorot_uniform'),
     "train_eval.network_initializer is 'glorot_uniform'; allowed: "
     "orthogonal, tf_agents."),
    (dict(value_activation='elu'),
     "train_eval.value_activation is 'elu'; allowed: relu, tanh."),
])
def test_bad_network_settings_fail_clearly(binding, message):
    with pytest.raises(ValueError, match=message):
        ppo.PpoSettings(env_name='Pendulum-v1', **binding).check()


def test_adam_epsilon_is_the_originals():
    """tf.compat.v1 AdamOptimizer(epsilon=1e-5) (ppo_train_eval.py:977)."""
    assert build().agent._optimizer.optimizer.epsilon == pytest.approx(1e-5)
    assert build(adam_epsilon=1e-7).agent._optimizer.optimizer.epsilon == (
        pytest.approx(1e-7))


def test_weight_decay_is_tf_agents_kernel_l2():
    """policy, value and shared L2 = weight_decay (ppo_train_eval.py:986):
    wd * sum(w^2) over every kernel, so its gradient on a kernel is
    2 * wd * w, and none on biases or the std bias."""
    weight_decay = 1e-3
    algorithm = build(weight_decay=weight_decay)
    agent = algorithm.agent
    assert (agent._policy_l2_reg, agent._value_function_l2_reg,
            agent._shared_vars_l2_reg) == (weight_decay,) * 3
    # In the loss, not also in the optimizer.
    assert not agent._optimizer.optimizer._l2.coefficients
    variables = [v for name in ('actor', 'value')
                 for v in algorithm.networks[name].trainable_variables]
    kernels = [v for v in variables if v.name.endswith('kernel:0')]
    assert len(kernels) == 6
    with tf.GradientTape() as tape:
        loss = agent.l2_regularization_loss()
    np.testing.assert_allclose(
        loss.numpy(), weight_decay * sum(float(tf.reduce_sum(k ** 2))
                                         for k in kernels), rtol=1e-5)
    for variable, gradient in zip(variables,
                                  tape.gradient(loss, variables)):
        if variable.name.endswith('kernel:0'):
            np.testing.assert_allclose(gradient.numpy(),
                                       2 * weight_decay * variable.numpy(),
                                       rtol=1e-5, atol=1e-12)
        else:
            assert gradient is None


def test_sparse_kernels_are_decayed():
    """Masked (wrapped) kernels carry the L2 term too."""
    gin.parse_config(['init_masks.sparsity = 0.5'])
    algorithm = build(weight_decay=1e-3, train_mode_actor='sparse',
                      train_mode_value='sparse', sparse_output_layer=True)
    variables = [v for name in ('actor', 'value')
                 for v in algorithm.networks[name].trainable_variables]
    with tf.GradientTape() as tape:
        loss = algorithm.agent.l2_regularization_loss()
    gradients = tape.gradient(loss, variables)
    decayed = [v for v, g in zip(variables, gradients) if g is not None]
    assert len(decayed) == 6
    assert all('kernel' in v.name for v in decayed)


def test_optimizer_side_decay_option():
    """`weight_decay_in_loss=False`: the optimizer adds 2 * wd * w to every
    kernel's (clipped) gradient and the loss has no L2 term; the previous
    behaviour (wd * w) is this with half the weight decay."""
    algorithm = build(weight_decay=1e-3, weight_decay_in_loss=False)
    agent = algorithm.agent
    assert agent._policy_l2_reg == agent._value_function_l2_reg == 0.0
    coefficients = agent._optimizer.optimizer._l2.coefficients
    variables = [v for name in ('actor', 'value')
                 for v in algorithm.networks[name].trainable_variables]
    assert {v.name: coefficients.get(v.ref()) for v in variables} == {
        v.name: (2e-3 if v.name.endswith('kernel:0') else None)
        for v in variables}


def _minibatch(algorithm: ppo.Ppo):
    """Eight prepared transitions of one synthetic sequence."""
    return algorithm.prepare(helpers.ppo_experience(algorithm, steps=9))


def test_train_step_clips_the_l2_gradient_with_the_loss():
    """The gradient the optimizer receives is clip_by_global_norm(loss
    gradient + 2 * wd * w, 0.5), as in the original (the L2 term is part of
    the loss its `_train` differentiates and clips)."""
    weight_decay = 0.05  # large, so the L2 part moves the clipping norm
    algorithm = build(weight_decay=weight_decay)
    transitions = _minibatch(algorithm)
    batch = algorithm.minibatch(transitions, tf.range(8))
    agent = algorithm.agent
    inner = agent._optimizer.optimizer
    trainable = sorted(
        {v.ref(): v for v in agent._actor_net.trainable_weights +
         agent._value_net.trainable_weights}.values(), key=lambda v: v.name)
    # The loss without L2 (the SNR per-example losses average to it, minus
    # the l2 / B each of them carries), differentiated here.
    with tf.GradientTape() as tape:
        per_example = algorithm.per_example_loss(batch)
        l2 = agent.l2_regularization_loss()
        data_loss = tf.reduce_mean(per_example) - l2 / 8.0
    data_gradients = tape.gradient(data_loss, trainable)
    expected = [
        (g if g is not None else tf.zeros_like(v)) +
        (2 * weight_decay * v if v.name.endswith('kernel:0') else 0.0)
        for g, v in zip(data_gradients, trainable)]
    expected, norm = tf.clip_by_global_norm(expected, 0.5)
    assert float(norm) > 0.5  # clipping is active
    recorded = {}
    original_apply = inner.apply_gradients

    def recording_apply(grads_and_vars, **kwargs):
        grads_and_vars = list(grads_and_vars)
        for grad, variable in grads_and_vars:
            recorded[variable.name] = grad.numpy()
        return original_apply(grads_and_vars, **kwargs)

    inner.apply_gradients = recording_apply
    tf.config.run_functions_eagerly(True)
    try:
        algorithm.train_minibatches(transitions, tf.range(8)[None])
    finally:
        tf.config.run_functions_eagerly(False)
        del inner.apply_gradients
    assert set(recorded) == {v.name for v in trainable}
    for variable, gradient in zip(trainable, expected):
        np.testing.assert_allclose(recorded[variable.name], gradient.numpy(),
                                   rtol=2e-4, atol=1e-7)


def _gin_values(config: str, names) -> dict:
    """`train_eval` and updater bindings a config file makes."""
    from rigl.rl.tfagents import train  # noqa: F401  (registers train_eval)

    cwd = os.getcwd()
    os.chdir(REPO)  # includes are relative to the repository
    try:
        gin.parse_config_files_and_bindings(
            [os.path.join(CONFIGS, config)], [])
    finally:
        os.chdir(cwd)
    return {name: gin.query_parameter(name) for name in names}


def test_mujoco_configs_bind_the_originals_values():
    """ppo_mujoco_{dense,sparse,pruning}_config.gin of the original suite."""
    assert _gin_values('ppo_mujoco_dense_config.gin', [
        'train_eval.weight_decay', 'train_eval.eval_interval',
        'train_eval.eval_episodes', 'train_eval.num_epochs',
        'train_eval.minibatch_size']) == {
            'train_eval.weight_decay': 1e-6, 'train_eval.eval_interval': 7,
            'train_eval.eval_episodes': 20, 'train_eval.num_epochs': 10,
            'train_eval.minibatch_size': 64}
    gin.clear_config()
    assert _gin_values('ppo_mujoco_sparse_config.gin', [
        'train_eval.weight_decay', 'mask_updater.update_freq',
        'mask_updater.init_drop_fraction',
        'mask_updater.last_update_step']) == {
            'train_eval.weight_decay': 1e-4, 'mask_updater.update_freq': 250,
            'mask_updater.init_drop_fraction': 0.3,
            'mask_updater.last_update_step': 120000}
    gin.clear_config()
    assert _gin_values('ppo_mujoco_pruning_config.gin', [
        'train_eval.weight_decay', 'wrap_all_layers.begin_step',
        'wrap_all_layers.end_step', 'wrap_all_layers.frequency']) == {
            'train_eval.weight_decay': 1e-6,
            'wrap_all_layers.begin_step': 32000,
            'wrap_all_layers.end_step': 120000,
            'wrap_all_layers.frequency': 500}


def test_eval_cadence_reproduces_the_originals():
    """The original evaluates after the first iteration whose train step
    is >= 2000 past the last evaluation, and after the last iteration
    (ppo_train_eval.py:1155); ours every `eval_interval` iterations and
    after the last (loops.on_policy). Same iterations for the config."""
    settings = ppo.PpoSettings(env_name='HalfCheetah-v5',
                               num_environment_steps=1000000,
                               eval_interval=7)
    iterations = settings.iterations
    steps_per_iteration = settings.num_epochs * settings.minibatches
    assert (iterations, steps_per_iteration) == (489, 320)
    original, last_eval_step = [], 0
    for i in range(iterations):
        step = (i + 1) * steps_per_iteration
        if step >= 2000 + last_eval_step or i == iterations - 1:
            original.append(i + 1)
            last_eval_step = step
    ours = [i for i in range(1, iterations + 1)
            if i % settings.eval_interval == 0 or i == iterations]
    assert ours == original
    assert len(ours) == 70  # 71 with the original's evaluation at step 0


@pytest.mark.parametrize('padding, sizes, features', [
    ('same', (21, 11, 11), 7744),   # Dopamine's NatureDQNNetwork
    ('valid', (20, 9, 7), 3136),    # the Nature paper's
])
def test_atari_q_network_padding(padding, sizes, features):
    """The original's conv layers use padding 'same' (dqn_agents.py:237,
    its dense1 takes 7744 inputs); 'valid' stays an option. FLOPs count the
    real output sizes."""
    observation_spec = tensor_spec.BoundedTensorSpec([84, 84, 4], tf.uint8,
                                                     0, 255)
    action_spec = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 5)
    kwargs = {} if padding == 'same' else {'padding': padding}
    network = networks.create_atari_q_network(observation_spec, action_spec,
                                              **kwargs)
    network.create_variables(observation_spec)
    layers = dense_layers(network)
    assert [layer.padding for layer in layers[:3]] == [padding] * 3
    assert tuple(layers[3].kernel.shape) == (features, 512)
    channels = ((4, 32, 8), (32, 64, 4), (64, 64, 3))
    macs = sum(size * size * k * k * c_in * c_out
               for size, (c_in, c_out, k) in zip(sizes, channels))
    macs += features * 512 + 512 * 6
    flops = sparse_layers.network_stats(network).flops
    assert 2 * macs <= flops <= 2 * macs * 1.01  # plus biases, activations


def test_atari_q_network_rejects_unknown_padding():
    with pytest.raises(ValueError, match="padding is 'full'; allowed: "
                                         "same, valid."):
        networks.create_atari_q_network(
            tensor_spec.BoundedTensorSpec([84, 84, 4], tf.uint8, 0, 255),
            tensor_spec.BoundedTensorSpec([], tf.int64, 0, 5),
            padding='full')
