"""A SAC actor exported to numpy (dense) or to compiled CSR acts as the TF
policy, including on the structures sparse masks produce."""

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from rigl.rl.tfagents import envs
from rigl.rl.tfagents import numpy_inference
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.numpy_inference import NumpyActor


def sparse_sac(sparsity=0.9, execution='masked'):
    """A SAC agent with a sparse actor (masked: tests set its kernels)."""
    gin.clear_config()
    gin.parse_config([f'init_masks.sparsity = {sparsity}'])
    env = envs.create_environment('HalfCheetah-v5', seed=0)
    settings = sac.SacSettings(
        seed=0, actor_fc_layers=(64, 64), critic_joint_fc_layers=(8, 8),
        train_mode_actor='sparse', sparse_output_layer=True,
        sparse_execution=execution)
    algorithm = sac.Sac(settings,
                        tensor_spec.from_spec(env.observation_spec()),
                        tensor_spec.from_spec(env.action_spec()), seed=0)
    gin.clear_config()
    env.close()
    return algorithm


def greedy_actions(algorithm, observations):
    time_step = ts.restart(tf.constant(observations),
                           batch_size=len(observations))
    return algorithm.eval_policy.action(time_step).action.numpy()


@pytest.mark.parametrize('sparse,execution', [
    (True, 'masked'), (False, 'masked'), (True, 'sparse')])
def test_numpy_actor_acts_as_the_greedy_policy(tmp_path, sparse, execution):
    """Exported from a masked or a sparse-execution actor."""
    algorithm = sparse_sac(execution=execution)
    actor = NumpyActor.from_network(algorithm.networks['actor'],
                                    algorithm.action_spec, sparse=sparse)
    stats = sparse_layers.network_stats(algorithm.networks['actor'])
    active = sum(layer.active_weights for layer in stats.layers)
    total = sum(int(np.prod(layer.shape)) for layer in stats.layers)
    assert actor.stored_weights == (active if sparse else total)
    assert active < 0.2 * total
    rng = np.random.default_rng(0)
    observations = rng.normal(0, 2, (5, 17)).astype(np.float32)
    reference = greedy_actions(algorithm, observations)
    np.testing.assert_allclose(actor(observations), reference, atol=1e-5)
    np.testing.assert_allclose(actor(observations[0]), reference[0], atol=1e-5)
    path = str(tmp_path / 'actor.npz')
    actor.save(path)
    loaded = NumpyActor.load(path)
    assert loaded.sparse == sparse and (
        loaded.stored_weights == actor.stored_weights)
    np.testing.assert_allclose(loaded(observations), reference, atol=1e-5)


def set_kernel(layer, kernel, activation=None):
    """Sets a (masked) Dense layer's kernel, its mask to the kernel's
    non-zeros, and optionally its activation."""
    dense = getattr(layer, 'layer', layer)
    dense.kernel.assign(kernel)
    dense.bias.assign(np.linspace(-0.5, 0.5, kernel.shape[1]))
    if hasattr(layer, 'mask'):
        layer.mask.assign((kernel != 0).astype(np.float32))
    if activation is not None:
        dense.activation = tf.keras.activations.get(activation)


def test_compiled_csr_acts_as_the_policy_on_mask_structures():
    """Units with no inputs (all-zero rows of W [out, in]), inputs no unit
    reads (all-zero columns), a fully dense layer, relu and tanh."""
    algorithm = sparse_sac()
    network = algorithm.networks['actor']
    first, second, head = network.layers
    projection = head._projection_layer  # pylint: disable=protected-access
    rng = np.random.default_rng(1)
    kernel = rng.normal(0, 0.5, (17, 64)) * (rng.random((17, 64)) < 0.3)
    kernel[:3] = 0  # observations 0-2 unread
    kernel[:, 5:10] = 0  # units 5-9: bias only
    dense_kernel = rng.normal(0, 0.2, (64, 64))  # every weight non-zero
    out_kernel = rng.normal(0, 0.3, (64, 12)) * (rng.random((64, 12)) < 0.2)
    out_kernel[:, 0] = 0  # the first action mean: bias only
    observations = rng.normal(0, 2, (64, 17)).astype(np.float32)
    for activations in (('relu', 'tanh'), ('tanh', 'relu')):
        set_kernel(first, kernel, activations[0])
        set_kernel(second, dense_kernel, activations[1])
        set_kernel(projection, out_kernel)
        compiled = NumpyActor.from_network(network, algorithm.action_spec)
        dense = NumpyActor.from_network(network, algorithm.action_spec,
                                        sparse=False)
        assert compiled.stored_weights == (np.count_nonzero(kernel) + 64 * 64
                                           + np.count_nonzero(out_kernel))
        for batch in (1, 5, 64):
            reference = greedy_actions(algorithm, observations[:batch])
            for actor in (compiled, dense):
                np.testing.assert_allclose(actor(observations[:batch]),
                                           reference, atol=1e-5)
        np.testing.assert_allclose(compiled(observations[0]),
                                   dense(observations[0]), atol=1e-5)


def random_layers(rng, sizes, activations, densities):
    """(kernel [in, out], bias, activation) layers with masks of the given
    densities, an all-zero row and column in each sparse one."""
    layers = []
    for n_in, n_out, activation, density in zip(
            sizes[:-1], sizes[1:], activations, densities):
        kernel = rng.normal(0, 1 / np.sqrt(n_in * density + 1),
                            (n_in, n_out)).astype(np.float32)
        if density < 1:
            kernel *= rng.random((n_in, n_out)) < density
            kernel[n_in // 2] = 0
            kernel[:, n_out // 2] = 0
        bias = rng.normal(0, 0.3, n_out).astype(np.float32)
        layers.append((kernel, bias, activation))
    return layers


def float64_greedy(layers, low, high, observations):
    x = observations.astype(np.float64)
    for kernel, bias, activation in layers:
        x = x @ kernel.astype(np.float64) + bias
        x = {'relu': lambda v: np.maximum(v, 0), 'tanh': np.tanh,
             'linear': lambda v: v}[activation](x)
    means = x[:, :len(low)]
    return (high + low) / 2 + (high - low) / 2 * np.tanh(means)


@pytest.mark.parametrize('activations,densities', [
    (('relu', 'relu', 'linear'), (0.3, 0.05, 0.2)),
    (('tanh', 'tanh', 'linear'), (1.0, 0.1, 0.5)),
    (('relu', 'tanh', 'tanh'), (0.2, 1.0, 0.0)),  # an all-zero last layer
])
def test_compiled_csr_matches_dense_numpy(tmp_path, activations, densities):
    rng = np.random.default_rng(2)
    sizes = (11, 37, 70, 2 * 3)  # row lengths not multiples of 4
    layers = random_layers(rng, sizes, activations, densities)
    low = np.array([-1, -2, 0], np.float32)
    high = np.array([1, 2, 3], np.float32)
    compiled = NumpyActor(layers, low, high, sparse=True)
    dense = NumpyActor(layers, low, high, sparse=False)
    assert numpy_inference._sparse_greedy.signatures  # compiled when built
    assert compiled.stored_weights == sum(
        np.count_nonzero(kernel) for kernel, _, _ in layers)
    for batch in (1, 2, 7, 256):
        observations = rng.normal(0, 2, (batch, sizes[0])).astype(np.float32)
        actions = compiled(observations)
        assert actions.shape == (batch, 3) and actions.dtype == np.float32
        np.testing.assert_allclose(actions, dense(observations), atol=1e-5)
        np.testing.assert_allclose(
            actions, float64_greedy(layers, low, high, observations),
            atol=1e-5)
    one = observations[3]
    assert compiled(one).shape == (3,)
    np.testing.assert_allclose(compiled(one), dense(one), atol=1e-5)
    # Any layout and dtype of observations.
    np.testing.assert_allclose(compiled(observations.T.copy().T[:9]),
                               compiled(observations[:9].astype(np.float64)),
                               atol=0)
    path = str(tmp_path / 'actor.npz')
    compiled.save(path)
    loaded = NumpyActor.load(path)
    assert loaded.sparse and loaded.stored_weights == compiled.stored_weights
    np.testing.assert_array_equal(loaded(observations), actions)


def test_compiled_tanh_is_within_half_an_ulp():
    x = np.concatenate([np.linspace(-12, 12, 4001, dtype=np.float32),
                        np.float32(10) ** np.arange(-40, 2, 0.25,
                                                    dtype=np.float32)])
    x = np.concatenate([x, -x])
    # A float32 result, boxed as a Python float.
    got = np.array([numpy_inference._tanh(value) for value in x], np.float32)
    exact = np.tanh(x.astype(np.float64))
    assert np.all(np.abs(got - exact) <= 0.5001 * np.spacing(
        np.abs(exact).astype(np.float32)) + 1e-45)
    special = [numpy_inference._tanh(np.float32(value))
               for value in (np.inf, -np.inf, np.nan, 0.0)]
    assert special[:2] == [1, -1] and np.isnan(special[2]) and special[3] == 0


def test_bad_shapes_raise():
    rng = np.random.default_rng(3)
    layers = random_layers(rng, (4, 8, 6), ('relu', 'linear'), (0.5, 0.5))
    low, high = -np.ones(3, np.float32), np.ones(3, np.float32)
    actor = NumpyActor(layers, low, high, sparse=True)
    with pytest.raises(ValueError, match='observations'):
        actor(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match='observations'):
        actor(np.zeros((2, 2, 4), np.float32))
    with pytest.raises(ValueError, match='do not follow'):
        NumpyActor([layers[1], layers[0]], low, high, sparse=True)
    with pytest.raises(ValueError, match='action means'):
        NumpyActor(layers, -np.ones(7), np.ones(7), sparse=True)
