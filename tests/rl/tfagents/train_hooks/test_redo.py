"""ReDo (recycling dormant neurons) against its definition: the dormant
score, a recycle by hand on tiny masked and sparse-execution networks, the
cosine schedule, the settings' record, and a short DQN run that recycles."""

import json
import math
import os

import rigl  # noqa: F401  (before TensorFlow's Keras is picked)
import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec

import helpers
import tiny
from rigl.rl.tfagents.sparsity import masked_optimizer
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import train_hooks
from rigl.rl.tfagents.algos import dqn
from rigl.rl.tfagents.algos import optimizers
from rigl.rl.tfagents.algos import ppo
from rigl.rl.tfagents.run import plasticity
from rigl.rl.tfagents.run import run_dir
from rigl.rl.tfagents.run import settings as settings_lib
from rigl.rl.tfagents.sparsity import csr
from rigl.rl.tfagents.train_hooks import redo

CONFIGS = helpers.CONFIGS


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_dormant_score_by_hand():
    # Mean |h| per neuron 0, 0.05, 1, 2; over their mean 0.7625:
    # 0, 0.066, 1.31, 2.62.
    features = tf.constant([[0.0, -0.1, 1.0, 2.0], [0.0, 0.0, -1.0, 2.0]])
    scores = plasticity.neuron_scores(features).numpy()
    np.testing.assert_allclose(scores, np.array([0, 0.05, 1, 2]) / 0.7625,
                               rtol=1e-6)
    np.testing.assert_array_equal(redo.recycle_mask(scores, 0.1),
                                  [1, 1, 0, 0])
    np.testing.assert_array_equal(redo.recycle_mask(scores, 0.0),
                                  [1, 0, 0, 0])
    # A silent layer: every neuron scores 0.
    np.testing.assert_array_equal(
        plasticity.neuron_scores(tf.zeros([3, 2])), [0, 0])
    # A conv layer's neurons are its feature maps (mean over positions).
    maps = tf.stack([tf.zeros([2, 4, 4]), tf.ones([2, 4, 4])], axis=-1)
    np.testing.assert_allclose(plasticity.neuron_scores(maps), [0, 2])
    # The plasticity metric counts the same neurons.
    assert plasticity.dormant_fraction([features, maps], 0.1) == 3 / 6


def test_cosine_schedule_and_lowest_fraction():
    # fraction * cos(pi/2 * t / T), the released code's schedule.
    for step, expected in ((0, 0.3), (500, 0.3 * math.cos(math.pi / 4)),
                           (999, 0.3 * math.cos(math.pi / 2 * 0.999))):
        assert float(redo.cosine_fraction(step, 0.3, 1000)) == (
            pytest.approx(expected, abs=1e-6))
    scores = tf.constant([0.5, 0.1, 2.0, 0.1, 3.0, 0.9, 1.0, 0.4, 0.7, 1.3])
    # round(0.3 * 10) = 3 lowest (ties at the third included): 0.1, 0.1,
    # 0.4.
    np.testing.assert_array_equal(
        redo.recycle_mask(scores, 0.1, tf.constant(0.3)),
        [0, 1, 0, 1, 0, 0, 0, 1, 0, 0])
    # At least one while the fraction is positive; none at 0.
    np.testing.assert_array_equal(
        redo.recycle_mask(scores, 0.1, tf.constant(0.01)),
        [0, 1, 0, 1, 0, 0, 0, 0, 0, 0])
    assert float(tf.reduce_sum(redo.recycle_mask(
        scores, 0.1, tf.constant(0.0)))) == 0
    # The hook's steps: after step s > 0 with s % every == 0, s < end.
    hook = redo.ReDo.__new__(redo.ReDo)
    hook.config = redo.ReDoConfig(every=100, schedule='cosine',
                                  end_step=300)
    due = [int(s) for s in range(0, 400, 50) if hook.is_due(tf.constant(
        s, tf.int64))]
    assert due == [100, 200]


def _masked_chain():
    """A 3-5-4-2 ReLU chain of masked layers (output included), half
    sparse."""
    layers = sparse_layers.wrap_all_layers(
        [tf.keras.layers.Dense(5, activation='relu'),
         tf.keras.layers.Dense(4, activation='relu'),
         tf.keras.layers.Dense(2)], 3)
    model = tf.keras.Sequential(layers)
    model.build([None, 3])
    sparse_layers.init_masks(model, sparsity=0.5, mask_init_method='uniform',
                             seed=0)
    return model


def _compressed_chain():
    """The same chain with 'sparse'-execution hidden layers and a dense
    output layer."""
    if not csr.available():
        pytest.skip('the sparse kernels do not build here')
    rng = np.random.default_rng(1)
    masks = [rng.random((3, 5)) < 0.6, rng.random((5, 4)) < 0.6]
    for mask in masks:
        mask[0, :] = True  # every neuron has an input
    model = tf.keras.Sequential([
        sparse_layers.CompressedDense(
            tf.keras.layers.Dense(5, activation='relu'), masks[0]),
        sparse_layers.CompressedDense(
            tf.keras.layers.Dense(4, activation='relu'), masks[1]),
        tf.keras.layers.Dense(2)])
    model.build([None, 3])
    for layer in model.layers[:2]:
        layer.values.assign(rng.normal(size=layer.values.shape))
    return model


def _view(layer, optimizer):
    """(kernel, mask, slots, bias) of a kernel layer as dense numpy."""
    sparse = isinstance(layer, sparse_layers.SPARSE_LAYER_TYPES)
    variable = layer.weights_variable if sparse else layer.kernel
    slots = masked_optimizer.optimizer_slots(optimizer, variable)
    to_dense = layer.to_dense if sparse else tf.convert_to_tensor
    inner = layer.layer if isinstance(layer, sparse_layers.MaskedLayer) \
        else layer
    return (np.array(tf.convert_to_tensor(layer.kernel)),
            np.array(layer.mask) if sparse else np.ones(layer.kernel.shape),
            [np.array(to_dense(slot)) for slot in slots],
            inner.bias.numpy().copy())


@pytest.mark.parametrize('build', [_masked_chain, _compressed_chain])
def test_recycle_by_hand(build):
    model = build()
    layers = sparse_layers.kernel_layers(model)
    optimizer = optimizers.make_optimizer(1e-2)
    variables = model.trainable_variables
    optimizer.build(variables)
    grads = [tf.random.stateless_normal(v.shape, [i, 7])
             for i, v in enumerate(variables)]
    for layer in layers:  # masked weights stay 0, as the optimizer's
        if isinstance(layer, sparse_layers.MaskedLayer):
            index = [v is layer.kernel for v in variables].index(True)
            grads[index] *= layer.mask
    optimizer.apply_gradients(zip(grads, variables))
    before = [_view(layer, optimizer) for layer in layers]
    neurons = [tf.constant([1.0, 0, 0, 1, 0]), tf.constant([0.0, 1, 0, 0])]
    seeds = [tf.constant([3, 4], tf.int64), tf.constant([5, 6], tf.int64)]
    redo.recycle(layers, neurons, lambda v: masked_optimizer.optimizer_slots(
        optimizer, v), seeds)
    after = [_view(layer, optimizer) for layer in layers]
    for index, ((kernel, mask, slots, bias), (new_kernel, new_mask,
                                              new_slots, new_bias)) in \
            enumerate(zip(before, after)):
        np.testing.assert_array_equal(new_mask, mask)  # masks unchanged
        columns = np.zeros(kernel.shape, bool)
        rows = np.zeros(kernel.shape, bool)
        if index < 2:
            columns[:, neurons[index].numpy() > 0] = True
        if index > 0:
            rows[neurons[index - 1].numpy() > 0, :] = True
        expected = kernel.copy()
        if index < 2:
            inner = layers[index].layer if isinstance(
                layers[index], sparse_layers.MaskedLayer) else layers[index]
            fresh = redo.initial_values(inner.kernel_initializer,
                                        kernel.shape, seeds[index]).numpy()
            # Incoming: redrawn at the active positions only.
            expected[columns] = (fresh * mask)[columns]
            assert np.all(new_kernel[columns & (mask > 0) & ~rows] != 0)
            assert np.all(new_kernel[mask == 0] == 0)
            np.testing.assert_array_equal(new_bias[neurons[index] > 0], 0)
            np.testing.assert_array_equal(new_bias[neurons[index] == 0],
                                          bias[neurons[index] == 0])
        else:
            np.testing.assert_array_equal(new_bias, bias)  # output layer
        expected[rows] = 0.0  # outgoing: 0
        np.testing.assert_allclose(new_kernel, expected, rtol=1e-6)
        # Adam's m and v: 0 at every recycled weight, kept elsewhere.
        assert len(new_slots) == 2
        for slot, new_slot in zip(slots, new_slots):
            np.testing.assert_array_equal(new_slot[columns | rows], 0.0)
            np.testing.assert_array_equal(new_slot[~(columns | rows)],
                                          slot[~(columns | rows)])
    # The network still computes with its (rewritten) sparse structure.
    inputs = tf.random.stateless_normal([6, 3], [0, 1])
    dense = inputs
    for layer, (kernel, _, _, bias) in zip(layers, after):
        dense = tf.matmul(dense, kernel) + bias
        dense = tf.nn.relu(dense) if layer is not layers[-1] else dense
    np.testing.assert_allclose(model(inputs), dense, atol=1e-5)


def test_recycle_follows_a_flatten():
    """A conv layer's recycled feature map: its filter redrawn, and after
    a Flatten its rows (every position, maps varying fastest) zeroed."""
    model = tf.keras.Sequential([
        tf.keras.layers.Conv2D(3, 2, activation='relu'),
        tf.keras.layers.Flatten(), tf.keras.layers.Dense(2)])
    model.build([None, 3, 3, 1])
    layers = sparse_layers.kernel_layers(model)
    redo.check_chain('conv', layers)
    conv, head = [layer.kernel.numpy() for layer in layers]
    optimizer = tf.keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    redo.recycle(layers, [tf.constant([0.0, 1, 0])],
                 lambda v: masked_optimizer.optimizer_slots(optimizer, v),
                 [tf.constant([1, 2], tf.int64)])
    new_conv, new_head = [layer.kernel.numpy() for layer in layers]
    np.testing.assert_array_equal(new_conv[..., [0, 2]], conv[..., [0, 2]])
    assert np.all(new_conv[..., 1] != conv[..., 1])
    rows = np.arange(12) % 3 == 1  # a 2x2x3 output flattened
    np.testing.assert_array_equal(new_head[rows], 0.0)
    np.testing.assert_array_equal(new_head[~rows], head[~rows])


def test_settings_are_checked_and_recorded():
    assert redo.redo() is None  # off by default
    gin.parse_config(['redo.every = 10', "redo.schedule = 'cosine'"])
    with pytest.raises(ValueError, match='redo.end_step'):
        redo.redo()
    gin.parse_config(["redo.schedule = 'linear'"])
    with pytest.raises(ValueError, match="redo.schedule is 'linear'"):
        redo.redo()
    gin.parse_config(["redo.schedule = 'constant'", 'redo.tau = -1.0'])
    with pytest.raises(ValueError, match='redo.tau'):
        redo.redo()
    gin.parse_config(['redo.tau = 0.1'])
    with pytest.raises(ValueError, match='not in Ppo'):
        train_hooks.configure(ppo.Ppo)
    assert train_hooks.configure(dqn.Dqn)['redo'].every == 10


def _record(**redo_values):
    settings = {'train_eval.env_name': 'CartPole-v0',
                **{f'redo.{key}': value for key, value in redo_values.items()}}
    return {'algorithm': 'dqn', 'settings': settings, 'config_hash': 'x'}


def test_resume_of_an_older_run(tmp_path):
    directory = run_dir.RunDir(str(tmp_path))
    old = _record()  # recorded before ReDo existed
    off = _record(every=0, tau=0.1, schedule='constant', recycle_fraction=0.3,
                  end_step=0, networks=[])
    assert run_dir.config_changes(old['settings'], off['settings']) == []
    directory.check_resume(old, off, allow_change=False)
    assert run_dir.metadata(off, 0)['train_hooks'] == {}
    on = _record(every=100, tau=0.1, schedule='constant',
                 recycle_fraction=0.3, end_step=0, networks=[])
    assert run_dir.metadata(on, 0)['train_hooks']['redo']['every'] == 100
    with pytest.raises(ValueError, match='redo off -> on'):
        directory.check_resume(old, on, allow_change=True)


def test_train_step_recycles_sparse_execution_layers():
    """In the compiled train step, on a DQN whose hidden layers run
    'sparse' and masked: recycles on schedule, keeps every mask, and draws
    from the layers' real initializers."""
    if not csr.available():
        pytest.skip('the sparse kernels do not build here')
    gin.parse_config(['init_masks.sparsity = 0.9', 'redo.every = 2',
                      'redo.tau = 1.0',
                      'wrap_all_layers.compress_min_sparsity = 0.5'])
    obs = tensor_spec.BoundedTensorSpec((4,), tf.float32, -1, 1)
    act = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 1)
    settings = settings_lib.build(dqn.DqnSettings, dict(
        fc_layer_params=(16, 16), batch_size=8, train_mode='sparse',
        sparse_execution='sparse'), 'DQN')
    algorithm = dqn.Dqn(settings, obs, act, seed=0)
    layers = sparse_layers.kernel_layers(algorithm.networks['q_network'])
    assert any(isinstance(layer, sparse_layers.CompressedDense)
               for layer in layers)
    for layer in layers:
        inner = layer.layer if isinstance(
            layer, sparse_layers.MaskedLayer) else layer
        assert not isinstance(inner.kernel_initializer,
                              tf.keras.initializers.Zeros)
    masks = [np.array(layer.mask) for layer in layers[:-1]]
    rng = np.random.default_rng(0)
    batch = {'observation': rng.uniform(-1, 1, (8, 4)).astype(np.float32),
             'action': rng.integers(0, 2, 8), 'reward': np.ones(8, np.float32),
             'discount': np.ones(8, np.float32),
             'next_observation': rng.uniform(-1, 1, (8, 4)).astype(
                 np.float32)}
    hook = algorithm.train_hooks['redo']
    for _ in range(5):  # steps 0..4: recycles after 2 and 4
        algorithm.train(batch)
    assert int(hook.recycles) == 2
    assert float(hook.recycled_total[0]) > 0
    for layer, mask in zip(layers, masks):
        np.testing.assert_array_equal(np.array(layer.mask), mask)
    assert 'train_hook_redo' in algorithm.checkpoint_objects()


# tiny.DQN with the config's target period, a replay of 300 and summaries
# every 100 steps; ReDo every 100 steps on a cosine schedule.
DQN_TINY = tiny.DQN + [
    'train_eval.target_update_period = 100',
    'train_eval.replay_capacity = 300',
    'train_eval.summary_interval = 100',
    'redo.every = 100', "redo.schedule = 'cosine'", 'redo.end_step = 300']


def test_short_dqn_run_recycles_records_and_resumes(tmp_path):
    gin_file = os.path.join(CONFIGS, 'dqn_gym_dense_config.gin')
    for steps in (150, 300):  # the second resumes the first's checkpoint
        code, out, err = helpers.run_in_process(
            'dqn', tmp_path, gin_file,
            DQN_TINY + [f'train_eval.num_iterations = {steps}'],
            allow_config_change=True)
        assert code == 0, err[-2000:]
    assert 'ReDo: every 100 train steps' in out
    with open(tmp_path / 'run.json') as f:
        record = json.load(f)
    assert record['config']['settings']['redo.every'] == 100
    assert record['train_hooks']['redo']['schedule'] == 'cosine'
    rows = helpers.results(tmp_path)
    assert [row['step'] for row in rows] == [150, 300]
    assert rows[-1]['train_hooks'] == record['train_hooks']
    # After steps 100 and 200: at least one neuron per hidden layer each.
    counts = [row['plasticity']['q_network']['recycled_neurons']
              for row in rows]
    assert counts[0] >= 2 and counts[1] >= counts[0] + 2
    reader = tf.train.load_checkpoint(os.path.join(
        helpers.latest_checkpoint(tmp_path), 'tf'))
    names = reader.get_variable_to_shape_map()
    recycles = [name for name in names
                if name.startswith('train_hook_redo/recycles/')]
    assert len(recycles) == 1 and reader.get_tensor(recycles[0]) == 2
    assert any(name.startswith('train_hook_redo/generator/')
               for name in names)
    assert 'redo/q_network/recycled_total' in helpers.summary_tags(
        tmp_path / 'train')
