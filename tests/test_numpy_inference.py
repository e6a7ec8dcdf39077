"""A SAC actor exported to numpy (dense or CSR) acts as the TF policy."""

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from rigl.rl.tfagents import envs
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.numpy_inference import NumpyActor


def sparse_sac(sparsity=0.9):
    gin.clear_config()
    gin.parse_config([f'init_masks.sparsity = {sparsity}'])
    env = envs.create_environment('HalfCheetah-v5', seed=0)
    settings = sac.SacSettings(
        seed=0, actor_fc_layers=(64, 64), critic_joint_fc_layers=(8, 8),
        train_mode_actor='sparse', sparse_output_layer=True)
    algorithm = sac.Sac(settings, tensor_spec.from_spec(env.observation_spec()),
                        tensor_spec.from_spec(env.action_spec()), seed=0)
    gin.clear_config()
    env.close()
    return algorithm


@pytest.mark.parametrize('sparse', [True, False])
def test_numpy_actor_acts_as_the_greedy_policy(tmp_path, sparse):
    algorithm = sparse_sac()
    actor = NumpyActor.from_network(algorithm.networks['actor'],
                                    algorithm.action_spec, sparse=sparse)
    stats = sparse_layers.network_stats(algorithm.networks['actor'])
    active = sum(layer.active_weights for layer in stats.layers)
    total = sum(int(np.prod(layer.shape)) for layer in stats.layers)
    assert actor.stored_weights == (active if sparse else total)
    assert active < 0.2 * total
    rng = np.random.default_rng(0)
    observations = rng.normal(0, 2, (5, 17)).astype(np.float32)
    reference = algorithm.eval_policy.action(ts.restart(
        tf.constant(observations), batch_size=5)).action.numpy()
    np.testing.assert_allclose(actor(observations), reference, atol=1e-5)
    np.testing.assert_allclose(actor(observations[0]), reference[0], atol=1e-5)
    path = str(tmp_path / 'actor.npz')
    actor.save(path)
    loaded = NumpyActor.load(path)
    assert loaded.sparse == sparse and (
        loaded.stored_weights == actor.stored_weights)
    np.testing.assert_allclose(loaded(observations), reference, atol=1e-5)
