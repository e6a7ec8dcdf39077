"""SAC end to end on tiny networks: configs, sparsity, resume, clear errors.

The runs go through the script's body in this process (`console.run_cli`,
without a TensorFlow start-up each); the kill test runs the script itself,
as a user does."""

import json
import math
import os

import numpy as np
import pytest

import rigl  # noqa: F401
import tensorflow as tf

import helpers
import tiny
from helpers import checkpoint_masks, latest_checkpoint, results

SCRIPT = helpers.script('sac')
CONFIGS = helpers.CONFIGS
TINY = tiny.SAC_32


def run_config(root, config, extra=()):
    return helpers.run_config('sac', root, os.path.join(CONFIGS, config),
                              TINY + list(extra))


def test_dense_config(tmp_path):
    with helpers.variables_created_in_graphs() as created:
        metric = run_config(tmp_path, 'sac_mujoco_dense_config.gin',
                            ['train_eval.summary_interval = 50',
                             tiny.WITH_POLICY])
    # Every variable (the temperature's Adam moments included) exists
    # before the first train step: each compiled step traces once.
    assert not created, created
    rows = results(tmp_path)
    assert [row['step'] for row in rows] == [150, 300]
    assert rows[-1]['networks']['actor']['sparsity'] == 0.0
    # 10% of 2 evals rounds to 1: the final metric is the last eval.
    assert metric['final_return'] == pytest.approx(rows[-1]['return_mean'])
    for name in ('operative_config.gin', 'final_metric.json', 'policy',
                 'train', 'eval'):
        assert os.path.exists(tmp_path / name), name
    train_tags = helpers.summary_tags(tmp_path / 'train')
    assert {'loss/total', 'loss/critic_loss', 'loss/actor_loss',
            'loss/alpha_loss', 'alpha', 'drop_fraction/actor',
            'steps_per_second', 'cumulative_train_flops',
            'train/episode_return', 'train/episode_length',
            'sparsity/actor/layer_0', 'sparsity/critic_1/total',
            'sparsity/actor/active_parameters',
            'sparsity/actor/inference_flops'} <= train_tags
    assert {'eval/return_mean', 'eval/episode_length'} <= \
        helpers.summary_tags(tmp_path / 'eval')
    assert 'train_eval.batch_size = 32' in (
        tmp_path / 'operative_config.gin').read_text()


@pytest.mark.parametrize('update_alg', ['', 'rigl'])
def test_sparse_config_keeps_sparsity(tmp_path, update_alg):
    run_config(tmp_path, 'sac_mujoco_sparse_config.gin',
               [f"mask_updater.update_alg = '{update_alg}'",
                'mask_updater.update_freq = 50'])
    rows = results(tmp_path)
    for row in rows:
        for name in ('actor', 'critic_1', 'critic_2'):
            # ERK 0.9 over all layers: exact to within a weight per layer.
            assert row['networks'][name]['sparsity'] == pytest.approx(
                0.9, abs=0.005)
    assert rows[-1]['networks']['actor']['flops'] < 0.2 * _dense_flops()
    masks = checkpoint_masks(latest_checkpoint(tmp_path))
    for name, mask in masks.items():
        assert set(np.unique(mask)) <= {0.0, 1.0}, name


def _dense_flops():
    # Pendulum actor 3-32-32-2: 2 * (3*32 + 32*32 + 32*2) + 32 + 32 + 2 (bias
    # of the output... counted per MicroNet: 2k FLOPs + relu per hidden unit).
    return 2 * (3 * 32 + 32 * 32 + 32 * 2) + 32 + 32


def test_pruning_config_reaches_final_sparsity(tmp_path):
    run_config(tmp_path, 'sac_mujoco_pruning_config.gin',
               ['wrap_all_layers.begin_step = 50',
                'wrap_all_layers.end_step = 250',
                'wrap_all_layers.frequency = 50'])
    rows = results(tmp_path)
    # The eval after 150 train steps (numbered 0..149) follows the pruning at
    # step 100: p = 50/200 = 0.25, s = 0.9 * (1 - 0.75^3) = 0.5203 (global;
    # every layer's share scales by the same factor).
    assert rows[0]['networks']['actor']['sparsity'] == pytest.approx(
        0.9 * (1 - 0.75 ** 3), abs=0.01)
    assert rows[1]['networks']['actor']['sparsity'] == pytest.approx(
        0.9, abs=0.01)


def test_anf_config_noise_and_input_layer(tmp_path):
    run_config(tmp_path, 'sac_anf_config.gin')
    row = results(tmp_path)[-1]
    actor = row['networks']['actor']
    # Pendulum: 3 real features, 90% noise -> 30 inputs; input layer 30x32
    # at 80% keeps 960 - floor(768) = 192 weights; other layers dense.
    masks = checkpoint_masks(latest_checkpoint(tmp_path))
    input_masks = [m for m in masks.values() if m.shape == (30, 32)]
    assert input_masks and all(int(m.sum()) == 192 for m in input_masks)
    total = 30 * 32 + 32 * 32 + 32 * 2
    assert actor['sparsity'] == pytest.approx(768 / total)
    connectivity = actor['input_connectivity']
    assert set(connectivity) == {'per_real_feature', 'per_noise_feature'}
    # 192 active weights over 30 rows: the mean over all rows is 6.4.
    mean = (3 * connectivity['per_real_feature'] +
            27 * connectivity['per_noise_feature']) / 30
    assert mean == pytest.approx(6.4)


SPARSE_CONFIG = os.path.join(CONFIGS, 'sac_mujoco_sparse_config.gin')


def run_sparse(root, *bindings, allow_config_change=False):
    """The sparse config's tiny run in this process: (exit code, stdout,
    stderr) as the script would give them."""
    return helpers.run_in_process('sac', root, SPARSE_CONFIG,
                                  TINY + list(bindings), allow_config_change)


def test_killed_run_resumes_with_same_step_masks_and_replay(tmp_path):
    root = tmp_path / 'run'
    args = helpers.training_command(SCRIPT, root, SPARSE_CONFIG, TINY + [
        'train_eval.num_iterations = 100000',
        'train_eval.checkpoint_interval = 100',
        'train_eval.eval_interval = 100000'])
    killed_at = helpers.kill_after_checkpoints(args, root)
    step = int(killed_at.rsplit('-', 1)[1])
    assert step >= 200
    masks = checkpoint_masks(killed_at)
    with open(os.path.join(killed_at, 'state.json')) as f:
        env_steps = json.load(f)['env_steps']
    with np.load(os.path.join(killed_at, 'replay.npz')) as replay:
        saved_observations = replay['observation'][:50].copy()
    code, out, err = run_sparse(
        root, f'train_eval.num_iterations = {step + 100}',
        'train_eval.checkpoint_interval = 100',
        'train_eval.eval_interval = 100000', allow_config_change=True)
    assert code == 0, err[-2000:]
    assert f'Resumed from {killed_at} at train step {step}.' in out
    final = latest_checkpoint(root)
    assert final.endswith(f'ckpt-{step + 100}')
    # Static masks: the resumed run kept exactly the checkpointed masks.
    for name, mask in checkpoint_masks(final).items():
        np.testing.assert_array_equal(mask, masks[name])
    with open(os.path.join(final, 'state.json')) as f:
        assert json.load(f)['env_steps'] == env_steps + 100
    with np.load(os.path.join(final, 'replay.npz')) as replay:
        np.testing.assert_array_equal(replay['observation'][:50],
                                      saved_observations)


def test_bad_binding_fails_clearly(tmp_path):
    code, _, err = run_sparse(tmp_path, 'train_eval.no_such_parameter = 1')
    assert code == 2
    assert 'no_such_parameter' in err


def test_unknown_env_fails_clearly(tmp_path):
    code, _, err = run_sparse(tmp_path,
                              "train_eval.env_name = 'HalfCheeta-v5'")
    assert code == 2
    assert "'HalfCheeta-v5'" in err
    assert 'HalfCheetah-v5' in err   # the suggestion
    assert 'gymnasium' in err        # how to list valid ids


def test_bad_train_mode_fails_clearly(tmp_path):
    code, _, err = run_sparse(tmp_path,
                              "train_eval.train_mode_actor = 'sprase'")
    assert code == 2
    assert "train_mode_actor is 'sprase'; allowed: dense, sparse" in err


@pytest.mark.parametrize('initializer, critic_output_bound', [
    ('glorot_uniform', math.sqrt(6 / (8 + 1))), ('tf_agents', 0.003)])
def test_network_initializers(initializer, critic_output_bound):
    """The original SAC draws every kernel Glorot-uniform; 'tf_agents'
    keeps TF-Agents' small critic output layer."""
    from tf_agents.specs import tensor_spec
    from rigl.rl.tfagents.algos import sac
    from rigl.rl.tfagents.run import settings as settings_lib
    observation = tensor_spec.BoundedTensorSpec((3,), tf.float32, -1, 1)
    action = tensor_spec.BoundedTensorSpec((1,), tf.float32, -2, 2)
    settings = settings_lib.build(sac.SacSettings, dict(
        actor_fc_layers=(8,), critic_joint_fc_layers=(8,),
        network_initializer=initializer), 'SAC')
    algorithm = sac.Sac(settings, observation, action, seed=0)
    kernels = [v.numpy() for v in algorithm.networks['critic_1'].variables
               if 'kernel' in v.name]
    output = np.abs(kernels[-1])
    assert output.max() <= critic_output_bound
    assert output.max() > 0.5 * critic_output_bound
