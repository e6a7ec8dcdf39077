"""'sparse' execution: layers that hold only their active weights must train
exactly as masked dense kernels do, and a run must save, resume and export
as a masked one does."""

import json
import os

import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

import tiny
from helpers import results
from rigl.rl.tfagents import envs
from rigl.rl.tfagents import numpy_inference
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import train
from rigl.rl.tfagents.algos import base
from rigl.rl.tfagents.algos import dqn
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.algos import td3
from rigl.rl.tfagents.run import seeding
from rigl.rl.tfagents.run import settings as settings_lib
from rigl.rl.tfagents.run import summaries
from rigl.rl.tfagents.run.replay import make_replay_buffer
from rigl.rl.tfagents.sparsity import csr


def sparse_matrix(rng, n_in, n_out, sparsity):
    mask = rng.random((n_in, n_out)) >= sparsity
    mask[0, :] = False  # an input with no connection
    mask[:, -1] = False  # an output with none
    kernel = rng.standard_normal((n_in, n_out)).astype(np.float32) * mask
    return mask, kernel


@pytest.mark.parametrize('n_in,n_out,batch,sparsity,relu', [
    (17, 256, 1, 0.5, True), (256, 256, 256, 0.95, True),
    (33, 5, 70, 0.3, False), (64, 9, 3, 0.0, True), (19, 13, 16, 0.99, False),
    (40, 24, 300, 0.8, True)])
def test_products_equal_dense_ones(n_in, n_out, batch, sparsity, relu):
    """Forward (with bias and optional ReLU), input gradient, weight
    gradient (at the active positions) and bias gradient of `csr.matmul`
    equal those of the dense layer."""
    rng = np.random.default_rng(n_in * n_out + batch)
    mask, kernel = sparse_matrix(rng, n_in, n_out, sparsity)
    positions = np.argwhere(mask)
    values = tf.Variable(kernel[mask])
    dense = tf.Variable(kernel)
    bias = tf.Variable(rng.standard_normal(n_out).astype(np.float32))
    x = tf.constant(rng.standard_normal((batch, n_in)), tf.float32)
    upstream = tf.constant(rng.standard_normal((batch, n_out)), tf.float32)
    layout = csr.structure(tf.constant(positions), (n_in, n_out))
    activation = tf.nn.relu if relu else tf.identity
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        sparse_y = csr.matmul(x, values, layout, (n_in, n_out), bias=bias,
                              relu=relu)
        dense_y = activation(tf.matmul(x, dense) + bias)
        sparse_loss = tf.reduce_sum(sparse_y * upstream)
        dense_loss = tf.reduce_sum(dense_y * upstream)
    np.testing.assert_allclose(sparse_y, dense_y, atol=1e-4)
    np.testing.assert_allclose(tape.gradient(sparse_loss, x),
                               tape.gradient(dense_loss, x), atol=1e-4)
    np.testing.assert_allclose(tape.gradient(sparse_loss, values),
                               tape.gradient(dense_loss, dense).numpy()[mask],
                               atol=1e-3)
    np.testing.assert_allclose(tape.gradient(sparse_loss, bias),
                               tape.gradient(dense_loss, bias), atol=1e-3)


def test_products_refuse_a_broken_structure():
    ops = csr.kernels()
    x = tf.ones([4, 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match='outside'):
        ops.sparserl_mat_mul(x, tf.constant([0, 1, 2]), tf.constant([0, 7]),
                             tf.zeros([0], tf.int32), tf.ones([2]),
                             tf.zeros([0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match='ptr'):
        ops.sparserl_mat_mul(x, tf.constant([0, 3, 2]), tf.constant([0, 1]),
                             tf.zeros([0], tf.int32), tf.ones([2]),
                             tf.zeros([0]))


TRAIN_BINDINGS = [
    "init_masks.mask_init_method = 'erdos_renyi_kernel'",
    'init_masks.sparsity = 0.9',
    'mask_updater.update_freq = 3',
    'mask_updater.init_drop_fraction = 0.3',
    'mask_updater.last_update_step = 1000',
]


def trained(algorithm_class, update_alg, execution, steps=10,
            compress_min_sparsity=0.0, **values):
    """An agent on HalfCheetah (Acrobot for DQN) shapes after `steps`
    train steps on fixed random batches, seeded as a run is."""
    gin.clear_config()
    gin.parse_config(TRAIN_BINDINGS + [
        f"mask_updater.update_alg = '{update_alg}'",
        f'wrap_all_layers.compress_min_sparsity = {compress_min_sparsity}'])
    env = envs.create_environment(
        'Acrobot-v1' if algorithm_class is dqn.Dqn else 'HalfCheetah-v5',
        seed=0)
    obs_spec = tensor_spec.from_spec(env.observation_spec())
    act_spec = tensor_spec.from_spec(env.action_spec())
    env.close()
    seeding.seed_globals(0)
    settings = settings_lib.build(
        algorithm_class.Settings,
        dict(values, sparse_output_layer=True, sparse_execution=execution,
             batch_size=32), algorithm_class.name)
    algorithm = algorithm_class(settings, obs_spec, act_spec, seed=0)
    rng = np.random.default_rng(0)
    replay = make_replay_buffer(500, obs_spec, act_spec)
    for _ in range(500):
        replay.add(rng.normal(size=obs_spec.shape).astype(np.float32),
                   algorithm.random_action(rng), rng.normal(), 1.0,
                   rng.normal(size=obs_spec.shape).astype(np.float32))
    initial = {name: [layer.mask.numpy() for layer in
                      sparse_layers.masked_layers(network)]
               for name, network in algorithm.networks.items()}
    for _ in range(steps):
        algorithm.train(tf.nest.map_structure(
            tf.constant, replay.sample(settings.batch_size, rng)))
    return algorithm, initial


def layer_arrays(networks):
    return [(layer.mask.numpy(), layer.kernel.numpy())
            for network in networks
            for layer in sparse_layers.masked_layers(network)]


ACTOR_CRITIC = dict(train_mode_actor='sparse', train_mode_value='sparse',
                    actor_fc_layers=(64, 64), critic_joint_fc_layers=(64, 64))


@pytest.mark.parametrize('algorithm_class,update_alg', [
    (sac.Sac, 'rigl'), (td3.Td3, 'rigl'), (sac.Sac, 'set'),
    (sac.Sac, 'static')])
def test_same_training_as_masked(algorithm_class, update_alg):
    """Same seed: the same masks after every update (several RigL/SET
    updates happen in 10 steps), weights and target weights within float32
    tolerance of the masked run's."""
    masked, initial = trained(algorithm_class, update_alg, 'masked',
                              **ACTOR_CRITIC)
    sparse, _ = trained(algorithm_class, update_alg, 'sparse', **ACTOR_CRITIC)
    assert all(isinstance(layer, sparse_layers.CompressedDense)
               for network in sparse.networks.values()
               for layer in sparse_layers.masked_layers(network))
    changed = 0
    for name in masked.networks:
        pairs = zip(layer_arrays([masked.networks[name]]),
                    layer_arrays([sparse.networks[name]]), initial[name])
        for (mask_m, kernel_m), (mask_s, kernel_s), mask_0 in pairs:
            np.testing.assert_array_equal(mask_m, mask_s)
            np.testing.assert_allclose(kernel_m, kernel_s, atol=1e-5)
            changed += int((mask_m != mask_0).sum())
    assert (changed > 0) == (update_alg != 'static')
    for (mask_m, kernel_m), (mask_s, kernel_s) in zip(
            layer_arrays(masked.agent.target_networks),
            layer_arrays(sparse.agent.target_networks)):
        np.testing.assert_allclose(kernel_m * mask_m, kernel_s, atol=1e-5)


def test_dense_looking_layers_stay_masked():
    """At the default threshold, only layers sparser than 0.8 are
    compressed; a mixed network trains as the masked one."""
    masked, _ = trained(sac.Sac, 'rigl', 'masked', compress_min_sparsity=0.8,
                        **ACTOR_CRITIC)
    sparse, _ = trained(sac.Sac, 'rigl', 'sparse', compress_min_sparsity=0.8,
                        **ACTOR_CRITIC)
    kinds = [type(layer).__name__ for layer in
             sparse_layers.masked_layers(sparse.networks['critic_1'])]
    assert 'CompressedDense' in kinds and 'MaskedLayer' in kinds
    for (mask_m, kernel_m), (mask_s, kernel_s) in zip(
            layer_arrays(masked.networks.values()),
            layer_arrays(sparse.networks.values())):
        np.testing.assert_array_equal(mask_m, mask_s)
        np.testing.assert_allclose(kernel_m, kernel_s, atol=1e-5)


@pytest.mark.parametrize('update_alg', ['set', 'rigl'])
def test_dqn_same_training_as_masked(update_alg):
    """DQN updates masks just before its step, from that step's gradients;
    a compressed layer captures its dense gradient on those steps, so RigL
    grows by it and grown weights take their first step from it, as
    masked ones do."""
    runs = [trained(dqn.Dqn, update_alg, execution, train_mode='sparse',
                    fc_layer_params=(64, 64))
            for execution in ('masked', 'sparse')]
    (masked, initial), (sparse, _) = runs
    changed = 0
    for (mask_m, kernel_m), (mask_s, kernel_s), mask_0 in zip(
            layer_arrays(masked.networks.values()),
            layer_arrays(sparse.networks.values()), initial['q_network']):
        np.testing.assert_array_equal(mask_m, mask_s)
        np.testing.assert_allclose(kernel_m, kernel_s, atol=1e-5)
        changed += int((mask_m != mask_0).sum())
    assert changed > 0


def test_dqn_gradient_clipping_as_masked():
    """DQN's per-kernel gradient clipping counts a compressed layer's dense
    gradient, as masked execution's dense kernels do: the same masks and
    weights, with a clip that acts."""
    runs = [layer_arrays(trained(
        dqn.Dqn, 'rigl', execution, train_mode='sparse',
        fc_layer_params=(64, 64), gradient_clipping=clip)[0].networks.values())
        for execution, clip in (('masked', 0.01), ('sparse', 0.01),
                                ('masked', 0.0))]
    for (mask_m, kernel_m), (mask_s, kernel_s), (_, unclipped) in zip(*runs):
        np.testing.assert_array_equal(mask_m, mask_s)
        np.testing.assert_allclose(kernel_m, kernel_s, atol=1e-5)
    assert max(np.abs(kernel - unclipped).max() for (_, kernel), (
        _, unclipped) in zip(runs[0], runs[2])) > 1e-3


def test_sparse_twin_leaves_the_noise_stream_alone():
    """Building a network's sparse-execution twin runs it once; the noise
    stream it shares with the masked network (ANF's network-side noise
    features) is where a masked run leaves it, so both runs draw the same
    noise."""
    gin.clear_config()
    gin.parse_config(['NetworkNoise.noise_fraction = 0.9',
                      'init_masks.sparsity = 0.8',
                      'wrap_all_layers.compress_min_sparsity = 0.5'])
    observation = tensor_spec.BoundedTensorSpec((3,), tf.float32, -1, 1)
    action = tensor_spec.BoundedTensorSpec((1,), tf.float32, -2, 2)
    states = []
    for execution in ('masked', 'sparse'):
        settings = settings_lib.build(sac.Sac.Settings, dict(
            actor_fc_layers=(8,), critic_joint_fc_layers=(8,),
            train_mode_actor='sparse', train_mode_value='sparse',
            sparse_execution=execution), 'sac')
        algorithm = sac.Sac(settings, observation, action, seed=0)
        states.append(algorithm.noise_layout.rng.state.numpy())
    gin.clear_config()
    assert any(isinstance(layer, sparse_layers.CompressedDense)
               for layer in sparse_layers.masked_layers(
                   algorithm.networks['actor']))
    np.testing.assert_array_equal(states[0], states[1])


SAC_SPARSE_RUN = tiny.SAC + [
    "train_eval.train_mode_actor = 'sparse'",
    "train_eval.train_mode_value = 'sparse'",
    "init_masks.mask_init_method = 'erdos_renyi_kernel'",
    'init_masks.sparsity = 0.9',
    "mask_updater.update_alg = 'rigl'",
    'mask_updater.update_freq = 50',
    'wrap_all_layers.compress_min_sparsity = 0.0',
]


def run(root, execution, extra=(), allow_config_change=False):
    gin.clear_config()
    gin.parse_config(SAC_SPARSE_RUN + list(extra) + [
        f"train_eval.sparse_execution = '{execution}'"])
    return train.train_eval(root, algorithm='sac',
                            allow_config_change=allow_config_change)


def test_a_sparse_run_evaluates_saves_and_resumes_as_a_masked_one(tmp_path):
    masked, sparse = str(tmp_path / 'masked'), str(tmp_path / 'sparse')
    run(masked, 'masked')
    run(sparse, 'sparse', [tiny.WITH_POLICY])
    returns = {root: [row['return_mean'] for row in results(root)]
               for root in (masked, sparse)}
    np.testing.assert_allclose(returns[sparse], returns[masked], rtol=0.02,
                               atol=2.0)
    # The saved policy is standard TF ops: it loads without the kernels.
    with open(os.path.join(sparse, 'policy', 'saved_model.pb'), 'rb') as f:
        assert b'Sparserl' not in f.read()
    policy = tf.saved_model.load(os.path.join(sparse, 'policy'))
    assert policy is not None
    # A checkpoint fixes the execution; it resumes in its own.
    with pytest.raises(ValueError, match='cannot change train_eval.sparse_'):
        run(sparse, 'masked', ['train_eval.num_iterations = 300'],
            allow_config_change=True)
    run(sparse, 'sparse', ['train_eval.num_iterations = 300'],
        allow_config_change=True)
    steps = [row['step'] for row in results(sparse)]
    assert steps == [100, 200, 300]
    with open(os.path.join(sparse, 'run.json')) as f:
        assert json.load(f)['config']['settings'][
            'train_eval.sparse_execution'] == 'sparse'


def test_numpy_export_reads_compressed_layers():
    """The numpy export reads a compressed layer's dense kernel."""
    sparse, _ = trained(sac.Sac, 'static', 'sparse', steps=1,
                        **ACTOR_CRITIC)
    layer = sparse_layers.masked_layers(sparse.networks['actor'])[0]
    kernel, bias, activation = numpy_inference.dense_weights(layer)
    np.testing.assert_array_equal(kernel, layer.kernel.numpy())
    assert activation == 'relu' and bias.shape == (64,)


def test_numpy_actor_exports_a_sparse_execution_actor():
    """`NumpyActor.from_network` reads a sparse-execution actor and acts as
    its TF greedy policy does."""
    sparse, _ = trained(sac.Sac, 'static', 'sparse', steps=1,
                        **ACTOR_CRITIC)
    actor = numpy_inference.NumpyActor.from_network(
        sparse.networks['actor'], sparse.action_spec, sparse=True)
    observations = np.random.default_rng(3).normal(
        size=(5,) + tuple(sparse.observation_spec.shape)).astype(np.float32)
    expected = sparse.eval_policy.action(
        ts.restart(tf.constant(observations), batch_size=5)).action.numpy()
    np.testing.assert_allclose(actor(observations), expected, atol=1e-4)


@pytest.mark.parametrize('bindings,values,algorithm_class,saved,expected', [
    # A new sparse off-policy run with a fixed active count: sparse.
    (["mask_updater.update_alg = 'rigl'"],
     dict(train_mode_actor='sparse'), sac.Sac, None, 'sparse'),
    # ANF's magnitude-pruned targets too.
    (["mask_updater.update_alg = 'set'"],
     dict(train_mode_actor='sparse', target_sparsity='magnitude'), sac.Sac,
     None, 'sparse'),
    # Dense networks, pruning: masked.
    ([], {}, sac.Sac, None, 'masked'),
    (["wrap_all_layers.mode = 'prune'"], dict(train_mode_actor='sparse'),
     sac.Sac, None, 'masked'),
    # A resumed run keeps what it ran; an old record ran masked.
    (["mask_updater.update_alg = 'rigl'"], dict(train_mode_actor='sparse'),
     sac.Sac, {'train_eval.sparse_execution': 'masked'}, 'masked'),
    (["mask_updater.update_alg = 'rigl'"], dict(train_mode_actor='sparse'),
     sac.Sac, {}, 'masked'),
    # An explicit choice stands.
    ([], dict(sparse_execution='sparse'), sac.Sac, None, 'sparse'),
])
def test_auto_execution_choice(bindings, values, algorithm_class, saved,
                               expected):
    """'auto' runs sparse only where supported (this machine has no GPU
    and a compiler), and a resumed run keeps its own execution."""
    if expected == 'sparse' and 'sparse_execution' not in values and (
            tf.config.list_physical_devices('GPU') or not csr.available()):
        pytest.skip("'auto' runs masked on a GPU or without a compiler")
    gin.clear_config()
    gin.parse_config(bindings)
    settings = settings_lib.build(algorithm_class.Settings, values,
                                  algorithm_class.name)
    assert base.resolve_sparse_execution(algorithm_class, settings,
                                         saved) == expected


def test_unknown_execution_is_one_line():
    gin.clear_config()
    settings = settings_lib.build(sac.Sac.Settings,
                                  dict(sparse_execution='fast'), 'sac')
    with pytest.raises(ValueError, match="'fast'; allowed: auto, masked"):
        base.resolve_sparse_execution(sac.Sac, settings)


def test_diagnostic_gradients_capture_nothing():
    """Gradients taken outside the train step (SNR's per-example jacobian,
    plasticity's gradient norm) on a step that updates masks neither fail
    nor add into the dense-gradient buffer the next update reads."""
    algorithm, _ = trained(dqn.Dqn, 'set', 'sparse', steps=3,
                           train_mode='sparse', fc_layer_params=(64, 64))
    optimizer = algorithm.masked_optimizers['q_network']
    assert bool(optimizer.updater.is_update_step(optimizer.steps))
    rng = np.random.default_rng(5)
    spec = algorithm.observation_spec
    batch = {'observation': rng.normal(size=(8,) + tuple(spec.shape)),
             'action': rng.integers(0, 3, 8), 'reward': rng.normal(size=8),
             'discount': np.ones(8),
             'next_observation': rng.normal(size=(8,) + tuple(spec.shape))}
    batch = {key: tf.constant(value, tf.int64 if key == 'action'
                              else tf.float32) for key, value in batch.items()}
    network = algorithm.networks['q_network']
    snr = tf.function(lambda: summaries.gradient_snr(
        algorithm.per_example_loss, network.trainable_variables, batch),
        autograph=False)()
    assert np.isfinite(float(snr['SNR/mean']))
    for layer in sparse_layers.masked_layers(network):
        assert float(tf.reduce_sum(tf.abs(layer.captured_gradient))) == 0.0
