"""Plasticity metrics against their definitions, and a meter that never
touches the training's random streams."""

import gin
import numpy as np
import pytest

import rigl  # noqa: F401  (before TensorFlow's Keras is picked)
import tensorflow as tf
from tf_agents.specs import tensor_spec

from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.run import plasticity
from rigl.rl.tfagents.run import settings as settings_lib
from rigl.rl.tfagents.run.replay import make_replay_buffer

OBS = tensor_spec.BoundedTensorSpec((3,), tf.float32, -1, 1)
ACT = tensor_spec.BoundedTensorSpec((1,), tf.float32, -2, 2)


def test_dormant_fraction_by_hand():
    # Mean |h| per neuron: 0, 0.05, 1, 2 -> over their mean 0.7625:
    # 0, 0.066, 1.31, 2.62: one dead, two <= 0.1.
    features = tf.constant([[0.0, 0.1, 1.0, 2.0], [0.0, 0.0, 1.0, 2.0]])
    assert plasticity.dormant_fraction([features], 0.0) == 0.25
    assert plasticity.dormant_fraction([features], 0.1) == 0.5
    # Over two layers the shares pool their neurons.
    alive = tf.ones([2, 4])
    assert plasticity.dormant_fraction([features, alive], 0.1) == 0.25


def test_effective_rank_by_hand():
    # Singular values 100, 1, 0: 100/101 = 0.990 >= 0.99 -> rank 1.
    features = tf.constant(np.diag([100.0, 1.0, 0.0]), tf.float32)
    assert plasticity.effective_rank(features) == 1
    # 10, 10, 10: two hold 2/3 < 0.99 -> rank 3.
    assert plasticity.effective_rank(tf.eye(3) * 10.0) == 3
    assert plasticity.effective_rank(tf.zeros([4, 3])) == 0


def test_hidden_features_are_the_hidden_layers_outputs():
    layers = [tf.keras.layers.Dense(5, activation='relu'),
              tf.keras.layers.Dense(4, activation='relu'),
              tf.keras.layers.Dense(2)]
    model = tf.keras.Sequential(layers)
    inputs = tf.random.stateless_normal([6, 3], [1, 2])
    model(inputs)
    features = plasticity.hidden_features(model, inputs)
    assert [f.shape.as_list() for f in features] == [[6, 5], [6, 4]]
    expected = layers[1](layers[0](inputs))
    np.testing.assert_allclose(features[1].numpy(), expected.numpy())


@pytest.fixture
def tiny_sac():
    gin.clear_config()
    gin.parse_config(["mask_updater.update_alg = 'set'",
                      'init_masks.sparsity = 0.5'])
    tf.keras.utils.set_random_seed(0)  # the initial weights, as a run's
    settings = settings_lib.build(sac.SacSettings, dict(
        actor_fc_layers=(16, 16), critic_joint_fc_layers=(16, 16),
        batch_size=16, train_mode_actor='sparse',
        train_mode_value='sparse'), 'SAC')
    algorithm = sac.Sac(settings, OBS, ACT, seed=0)
    replay = make_replay_buffer(64, OBS, ACT)
    rng = np.random.default_rng(0)
    for _ in range(64):
        replay.add(rng.uniform(-1, 1, 3).astype(np.float32),
                   algorithm.random_action(rng), rng.normal(), 1.0,
                   rng.uniform(-1, 1, 3).astype(np.float32))
    yield algorithm, replay
    gin.clear_config()


def test_meter_measures_every_network_without_touching_training_streams(
        tiny_sac):
    algorithm, replay = tiny_sac
    meter = plasticity.PlasticityMeter(algorithm, seed=3)
    rng = np.random.default_rng(1)
    state = algorithm.agent.sample_rng.state.numpy().copy()
    first = meter.measure(plasticity.sample_batch(replay, rng))
    np.testing.assert_array_equal(algorithm.agent.sample_rng.state.numpy(),
                                  state)
    assert set(first) == {'actor', 'critic_1', 'critic_2'}
    for values in first.values():
        assert set(values) == {'dormant_0', 'dormant_0.1', 'active_units',
                               'effective_rank', 'grad_norm',
                               'weight_change'}
        assert 0 <= values['dormant_0'] <= values['dormant_0.1'] <= 1
        assert 1 <= values['effective_rank'] <= 16
        assert values['grad_norm'] > 0 and values['weight_change'] == 0.0
    algorithm.train(replay.sample(16, rng))
    second = meter.measure(plasticity.sample_batch(replay, rng))
    assert all(values['weight_change'] > 0 for values in second.values())
    assert meter.measure(None) == {}
