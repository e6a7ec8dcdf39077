"""PPO in 'sparse' execution: the same masks after every minibatch step and
weights within float32 tolerance of masked execution, its L2 term over
compressed layers, and a tiny run that evaluates, writes results rows,
checkpoints and resumes."""

import os

import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec

import helpers
import tiny
from helpers import results
from rigl.rl.tfagents import envs
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.algos import ppo
from rigl.rl.tfagents.run import seeding
from rigl.rl.tfagents.sparsity.compressed import CompressedDense

CONFIG = helpers.config('ppo_mujoco_sparse_config.gin')
METHOD = [
    "init_masks.mask_init_method = 'erdos_renyi_kernel'",
    'init_masks.sparsity = 0.9',
    "mask_updater.update_alg = 'rigl'",
    'mask_updater.update_freq = 2',
    'mask_updater.init_drop_fraction = 0.3',
    'mask_updater.last_update_step = 1000',
    'wrap_all_layers.compress_min_sparsity = 0.0',
]
# tiny.PPO on Pendulum: 3 iterations of 8 train steps.
TINY = tiny.PENDULUM + tiny.PPO + [
    # A constant learning rate: a run extended on resume trains as one
    # planned that long (the linear decay's horizon is the run's length).
    'train_eval.linear_lr_decay = False',
] + METHOD


def _ppo(execution: str, gradient_clipping: float = 0.5) -> ppo.Ppo:
    """A PPO agent on Pendulum shapes, seeded as a run is."""
    gin.clear_config()
    gin.parse_config(METHOD)
    tf.keras.backend.clear_session()  # the same variable names each time
    env = envs.create_environment('Pendulum-v1', seed=0)
    specs = (tensor_spec.from_spec(env.observation_spec()),
             tensor_spec.from_spec(env.action_spec()))
    env.close()
    seeding.seed_globals(0)
    settings = ppo.PpoSettings(
        env_name='Pendulum-v1', seed=0, num_iterations=1,
        collect_sequence_length=32, minibatch_size=16, num_epochs=1,
        actor_fc_layers=(16, 16), value_fc_layers=(16, 16),
        train_mode_actor='sparse', train_mode_value='sparse',
        sparse_output_layer=True, weight_decay=1e-4,
        gradient_clipping=gradient_clipping,
        sparse_execution=execution, linear_lr_decay=False)
    try:
        return ppo.Ppo(settings, *specs, seed=0)
    finally:
        gin.clear_config()


def _layers(algorithm: ppo.Ppo):
    return [(layer.mask.numpy(), layer.kernel.numpy())
            for network in algorithm.networks.values()
            for layer in sparse_layers.masked_layers(network)]


def test_same_training_as_masked():
    """The same experience, minibatch by minibatch (RigL every 2 steps,
    gradients clipped): the same masks after every step, weights within
    float32 tolerance; the masks move, the clip acts, and the L2 term
    counts compressed layers' values."""
    masked, sparse = _ppo('masked'), _ppo('sparse')
    assert all(isinstance(layer, CompressedDense)
               for network in sparse.networks.values()
               for layer in sparse_layers.masked_layers(network))
    np.testing.assert_allclose(
        sparse.agent.l2_regularization_loss(),
        masked.agent.l2_regularization_loss(), rtol=1e-6)
    assert float(masked.agent.l2_regularization_loss()) > 0
    unclipped = _ppo('masked', gradient_clipping=0.0)
    experience = helpers.ppo_experience(masked)
    initial = _layers(masked)
    order = np.random.default_rng(2).permutation(32).reshape(-1, 16)
    for step in range(8):
        indices = tf.constant(order[step % 2][None])
        for algorithm in (masked, sparse) + ((unclipped,) if step == 0
                                             else ()):
            algorithm.train_minibatches(algorithm.prepare(experience),
                                        indices)
        if step == 0:  # the clip acts, by more than the tolerance
            assert max(np.abs(kernel - other).max() for (_, kernel), (
                _, other) in zip(_layers(masked), _layers(unclipped))) > 1e-4
        for (mask_m, kernel_m), (mask_s, kernel_s) in zip(
                _layers(masked), _layers(sparse)):
            np.testing.assert_array_equal(mask_m, mask_s, f'step {step}')
            # Adam's epsilon (1e-5) turns float noise in near-zero
            # gradients into lr / epsilon = 30 times as much in weights.
            np.testing.assert_allclose(kernel_m, kernel_s,
                                       atol=1e-5 * (step + 1))
    assert any(not np.array_equal(now[0], before[0])
               for now, before in zip(_layers(sparse), initial))


def _run(root, execution: str, extra=(), allow_config_change=False):
    tf.keras.backend.clear_session()
    code, out, err = helpers.run_in_process(
        'ppo', root, CONFIG, TINY + list(extra) + [
            f"train_eval.sparse_execution = '{execution}'"],
        allow_config_change)
    assert code == 0, (out + err)[-3000:]
    return out


def _checkpoint_layers(path: str) -> dict:
    """(mask, kernel) of every sparse layer in a checkpoint, by layer
    path, whichever the execution."""
    reader = tf.train.load_checkpoint(os.path.join(path, 'tf'))
    layers = {}
    for name, mask in helpers.checkpoint_masks(path).items():
        variable = name.split('/.ATTRIBUTES')[0]
        layer, kind = variable.rsplit('/', 1)
        if kind == 'mask':
            kernel = reader.get_tensor(
                f'{layer}/layer/kernel/.ATTRIBUTES/VARIABLE_VALUE')
        else:
            kernel = np.zeros(mask.shape, np.float32)
            kernel[mask > 0] = reader.get_tensor(
                f'{layer}/values/.ATTRIBUTES/VARIABLE_VALUE')
        layers[layer] = (mask, kernel)
    return layers


def test_tiny_run_matches_masked_and_resumes(tmp_path):
    """A tiny sparse PPO run (RigL): the masked run's masks and close
    weights at its checkpoints, the same results rows but for float
    noise, and a resume that ends with the uninterrupted run's
    checkpoint."""
    masked, sparse = tmp_path / 'masked', tmp_path / 'sparse'
    _run(masked, 'masked')
    out = _run(sparse, 'sparse')
    assert 'sparse execution, actor: 3 of 3 sparse layers' in out
    for step in (16, 24):  # the checkpoints kept
        expected, got = (_checkpoint_layers(os.path.join(
            root, 'checkpoints', f'ckpt-{step}')) for root in (masked,
                                                               sparse))
        assert sorted(expected) == sorted(got) and got
        for path, (mask, kernel) in expected.items():
            np.testing.assert_array_equal(got[path][0], mask, path)
            np.testing.assert_allclose(got[path][1], kernel, atol=1e-4)
    rows = {root: results(root) for root in (masked, sparse)}
    for row_m, row_s in zip(rows[masked], rows[sparse]):
        for key in ('step', 'env_steps'):
            assert row_m[key] == row_s[key]
        assert row_m['networks'] == row_s['networks']
        assert row_s['return_mean'] == pytest.approx(row_m['return_mean'],
                                                     rel=0.02, abs=2.0)
    # The sparse run as a kill right after its checkpoint at 16 leaves it
    # (its last checkpoint and final metric gone) resumes to the same end.
    resumed = tmp_path / 'resumed'
    helpers.copy_as_killed_after(sparse, resumed, 16)
    out = _run(resumed, 'sparse')
    assert 'Resumed from' in out and '(train step 16)' in out, out
    assert [row['step'] for row in results(resumed)] == [8, 16, 24]
    final = [tf.train.load_checkpoint(os.path.join(
        helpers.latest_checkpoint(root), 'tf')) for root in (sparse, resumed)]
    names = [name for name in final[0].get_variable_to_shape_map()
             if not name.startswith('_CHECKPOINTABLE_OBJECT_GRAPH')]
    different = [name for name in names if not np.array_equal(
        final[0].get_tensor(name), final[1].get_tensor(name))]
    assert not different, different
