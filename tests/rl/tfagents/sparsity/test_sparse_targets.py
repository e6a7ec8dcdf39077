"""ANF's magnitude-pruned targets in 'sparse' execution: a compressed
target layer holds positions of its own, and each target update averages
over the union of its and its online layer's positions and keeps the
online layer's active count by magnitude. The same seed must give the same
target masks and (within float32 tolerance) weights as masked execution,
and a run must checkpoint and resume."""

import os
import types

import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
import gin
import numpy as np
import pytest
import tensorflow as tf

import helpers
import tiny
from helpers import results
from test_sparse_execution import ACTOR_CRITIC, layer_arrays, trained
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import train
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.algos import td3
from rigl.rl.tfagents.sparsity import targets
from rigl.rl.tfagents.sparsity.compressed import CompressedDense

CONFIGS = helpers.CONFIGS
N_IN, N_OUT, ACTIVE = 9, 7, 20


def _layer_pair(mask: np.ndarray):
    """A masked and a compressed Dense layer of the same initial mask."""
    masked = sparse_layers.MaskedLayer(tf.keras.layers.Dense(N_OUT))
    masked.build((None, N_IN))
    masked.mask.assign(mask)
    compressed = CompressedDense(tf.keras.layers.Dense(N_OUT), mask)
    compressed.build((None, N_IN))
    return masked, compressed


def _online_sequence(rng, steps: int):
    """Online (mask, kernel) pairs of a layer with ACTIVE weights: values
    on a 1/8 grid (exact Polyak averages at tau 1/2, so magnitudes tie),
    some exactly 0 (grown weights), the mask moving at most steps."""
    mask = np.zeros(N_IN * N_OUT, bool)
    mask[rng.choice(mask.size, ACTIVE, replace=False)] = True
    kernel = np.zeros(mask.size, np.float32)
    sequence = []
    for step in range(steps):
        if step % 3 == 1:  # drop 5, grow 5 elsewhere at 0
            active, inactive = np.flatnonzero(mask), np.flatnonzero(~mask)
            mask[rng.choice(active, 5, replace=False)] = False
            mask[rng.choice(inactive, 5, replace=False)] = True
            kernel[~mask] = 0.0
        else:
            kernel[mask] += rng.integers(-3, 4, ACTIVE) / 8.0
        sequence.append((mask.reshape(N_IN, N_OUT).astype(np.float32),
                         kernel.reshape(N_IN, N_OUT).copy()))
    return sequence


@pytest.mark.parametrize('tau', [0.5, 0.005, 1.0])
def test_layer_target_updates_equal_the_masked_prune(tau):
    """By hand on one layer: the compressed target's update gives exactly
    the masked soft update followed by the masked magnitude prune (same
    non-zeros, same bits, ties broken alike), and keeps its active
    count, row-major positions and a product equal to its dense kernel."""
    rng = np.random.default_rng(7)
    sequence = _online_sequence(rng, 24)
    online_m, online_c = _layer_pair(sequence[0][0])
    target_m, target_c = _layer_pair(sequence[0][0])
    target_c.mask_marks_nonzeros = True

    @tf.function(autograph=False)
    def update_compressed():
        values, positions = target_c.magnitude_average(online_c, tau)
        target_c.assign_positions(values, positions)

    @tf.function(autograph=False)
    def update_masked():
        target_m.kernel.assign((1 - tau) * target_m.kernel +
                               tau * online_m.kernel)
        target_m.mask.assign(online_m.mask)
        targets.prune_targets_by_magnitude(
            [online_m], [types.SimpleNamespace(layers=[target_m])])

    def set_weights(masked, compressed, mask, kernel):
        masked.mask.assign(mask)
        masked.kernel.assign(kernel)
        compressed.assign_positions(kernel[mask > 0], np.argwhere(mask))

    # The targets start as copies (TF-Agents' initial hard update).
    set_weights(target_m, target_c, *sequence[0])
    fewer_nonzeros = ties = 0
    for mask, kernel in sequence[1:]:
        set_weights(online_m, online_c, mask, kernel)
        nonzero = np.abs(target_m.kernel.numpy()[target_m.kernel.numpy() != 0])
        ties += len(nonzero) - len(np.unique(nonzero))
        update_masked()
        update_compressed()
        np.testing.assert_array_equal(target_c.kernel.numpy(),
                                      target_m.kernel.numpy())
        np.testing.assert_array_equal(target_c.mask.numpy(),
                                      target_m.mask.numpy())
        fewer_nonzeros += int(target_m.mask.numpy().sum() < ACTIVE)
        held = target_c.positions.numpy()
        assert len(held) == ACTIVE
        flat = held[:, 0] * N_OUT + held[:, 1]
        assert np.all(np.diff(flat) > 0)  # row-major, no repeats
        x = tf.constant(rng.normal(size=(4, N_IN)), tf.float32)
        np.testing.assert_allclose(target_c(x), tf.matmul(
            x, target_m.kernel) + target_c.bias, atol=1e-5)
    if tau == 0.5:
        assert ties > 0 and fewer_nonzeros > 0  # both paths exercised
    # The target kept positions its online layer no longer has.
    if tau != 1.0:
        assert np.any(target_c.mask.numpy() != sequence[-1][0])


@pytest.mark.parametrize('algorithm_class,update_alg', [
    (sac.Sac, 'set'), (sac.Sac, 'rigl'), (td3.Td3, 'rigl')])
def test_same_targets_as_masked(algorithm_class, update_alg):
    """Same seed, fixed batches, several mask updates: the same target
    masks and target weights within float32 tolerance, and targets whose
    positions have left their online layers'."""
    masked, _ = trained(algorithm_class, update_alg, 'masked', steps=15,
                        target_sparsity='magnitude', **ACTOR_CRITIC)
    sparse, _ = trained(algorithm_class, update_alg, 'sparse', steps=15,
                        target_sparsity='magnitude', **ACTOR_CRITIC)
    online = [layer.mask.numpy() for optimizer, _ in
              sparse.agent.masked_targets() for layer in optimizer.layers]
    assert all(isinstance(layer, CompressedDense)
               for network in sparse.agent.target_networks
               for layer in sparse_layers.masked_layers(network))
    moved = 0
    for (mask_m, kernel_m), (mask_s, kernel_s), mask_online in zip(
            layer_arrays(masked.agent.target_networks),
            layer_arrays(sparse.agent.target_networks), online):
        np.testing.assert_array_equal(mask_m, mask_s)
        np.testing.assert_allclose(kernel_m * mask_m, kernel_s, atol=1e-5)
        assert mask_s.sum() <= mask_online.sum()
        moved += int((mask_s != mask_online).sum())
    assert moved > 0


# Tiny ANF runs: two checkpoints, mask updates every 20 train steps.
ANF_TINY = tiny.SAC + [
    'train_eval.num_iterations = 120',
    'train_eval.eval_interval = 60',
    'train_eval.checkpoint_interval = 60',
    'train_eval.log_interval = 60',
    'train_eval.log_episodes = False',
    'mask_updater.update_freq = 20',
    'mask_updater.init_drop_fraction = 0.3',
    'wrap_all_layers.compress_min_sparsity = 0.5',
]


def _anf_run(root, algorithm: str, execution: str, extra=(),
             allow_config_change: bool = False):
    gin.clear_config()
    tf.keras.backend.clear_session()
    gin.parse_config_files_and_bindings(
        [os.path.join(CONFIGS, f'{algorithm}_anf_config.gin')],
        ANF_TINY + list(extra) + [
            f"train_eval.sparse_execution = '{execution}'"])
    try:
        return train.train_eval(str(root), algorithm=algorithm,
                                allow_config_change=allow_config_change)
    finally:
        gin.clear_config()


def _target_layers(reader) -> dict:
    """(non-zeros, kernel) of every sparse layer of the target networks in
    a checkpoint, by layer path: a masked layer's mask and kernel, or a
    compressed one's kernel scattered from its values and positions."""
    names = reader.get_variable_to_shape_map()
    layers = {}
    for name in names:
        if not name.startswith('agent/_target_'):
            continue
        path = name.split('/.ATTRIBUTES')[0].rsplit('/', 1)[0]
        if name.endswith('/mask/.ATTRIBUTES/VARIABLE_VALUE'):
            kernel = reader.get_tensor(
                f'{path}/layer/kernel/.ATTRIBUTES/VARIABLE_VALUE')
            np.testing.assert_array_equal(reader.get_tensor(name),
                                          kernel != 0)
        elif name.endswith('/positions/.ATTRIBUTES/VARIABLE_VALUE'):
            shape = [names[f'{path}/{axis}_ptr/.ATTRIBUTES/VARIABLE_VALUE'][0]
                     - 1 for axis in ('row', 'col')]
            kernel = np.zeros(shape, np.float32)
            rows, cols = reader.get_tensor(name).T
            kernel[rows, cols] = reader.get_tensor(
                f'{path}/values/.ATTRIBUTES/VARIABLE_VALUE')
        else:
            continue
        layers[path] = (kernel != 0, kernel)
    return layers


@pytest.fixture(scope='module')
def anf_runs(tmp_path_factory):
    """The tiny ANF run of an algorithm in an execution, trained once for
    the module: `anf_runs(algorithm, execution)` is its root directory."""
    roots = {}

    def run(algorithm: str, execution: str):
        if (algorithm, execution) not in roots:
            root = tmp_path_factory.mktemp(f'anf_{algorithm}_{execution}')
            _anf_run(root, algorithm, execution)
            roots[algorithm, execution] = root
        return roots[algorithm, execution]
    return run


@pytest.mark.parametrize('algorithm', ['sac', 'td3'])
def test_anf_run_sparse_matches_masked(anf_runs, algorithm):
    """A tiny ANF run (noise features, SET on the input layers, magnitude
    targets) in both executions: the same target masks and close target
    weights at its last checkpoint, and close eval returns."""
    roots = {execution: anf_runs(algorithm, execution)
             for execution in ('masked', 'sparse')}
    readers = {execution: tf.train.load_checkpoint(os.path.join(
        helpers.latest_checkpoint(root), 'tf'))
        for execution, root in roots.items()}
    masked, sparse = (_target_layers(readers[execution])
                      for execution in ('masked', 'sparse'))
    assert sorted(masked) == sorted(sparse)
    # The input layers (80% sparse) are compressed, the others masked.
    assert any(readers['sparse'].has_tensor(
        f'{path}/positions/.ATTRIBUTES/VARIABLE_VALUE') for path in sparse)
    for path, (nonzero_m, kernel_m) in masked.items():
        nonzero_s, kernel_s = sparse[path]
        np.testing.assert_array_equal(nonzero_m, nonzero_s, err_msg=path)
        np.testing.assert_allclose(kernel_m, kernel_s, atol=1e-4,
                                   err_msg=path)
    returns = {execution: [row['return_mean'] for row in results(root)]
               for execution, root in roots.items()}
    np.testing.assert_allclose(returns['sparse'], returns['masked'],
                               rtol=0.02, atol=2.0)


def test_anf_sparse_run_resumes_bit_identically(anf_runs, tmp_path):
    """A sparse ANF-SAC run stopped at its first checkpoint and resumed
    ends with the checkpoint of an uninterrupted one: target values and
    positions (which differ from the online layers') included. The stopped
    run is the uninterrupted one's directory as a kill right after its
    checkpoint at 60 leaves it."""
    straight, resumed = anf_runs('sac', 'sparse'), tmp_path / 'resumed'
    helpers.copy_as_killed_after(straight, resumed, 60)
    _anf_run(resumed, 'sac', 'sparse')
    assert [row['step'] for row in results(resumed)] == [60, 120]
    final = [tf.train.load_checkpoint(os.path.join(
        helpers.latest_checkpoint(root), 'tf')) for root in (straight,
                                                             resumed)]
    names = [name for name in final[0].get_variable_to_shape_map()
             if not name.startswith('_CHECKPOINTABLE_OBJECT_GRAPH')]
    assert any('_target_critic_network_1' in name and '/positions/' in name
               for name in names)
    different = [name for name in names if not np.array_equal(
        final[0].get_tensor(name), final[1].get_tensor(name))]
    assert not different, different
    # Its checkpoints resume in their own execution only.
    with pytest.raises(ValueError, match='cannot change train_eval.sparse_'):
        _anf_run(resumed, 'sac', 'masked',
                 ['train_eval.num_iterations = 180'],
                 allow_config_change=True)
