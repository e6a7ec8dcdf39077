"""TD3 end to end on tiny networks: every config trains, the delayed actor
updates its masks on ANF's train-step schedule (or, as an option, on its own
steps), targets stay within their online masks, sparsity is kept, and
clear errors (kill and resume, same seed same run: the bit-identical resume
test in tests/rl/tfagents/run)."""

import os

import numpy as np
import pytest
import tensorflow as tf

import rigl  # noqa: F401

import helpers
import tiny
from helpers import checkpoint_masks, latest_checkpoint, results

CONFIGS = helpers.CONFIGS
TINY = tiny.TD3


def td3(root, config, *extra, allow=False):
    code, out, err = helpers.run_in_process(
        'td3', root, os.path.join(CONFIGS, config), TINY + list(extra), allow)
    assert code == 0, err[-2000:]
    return out


def variables(path, fragment):
    """Checkpointed tensors whose name contains `fragment`, by name."""
    reader = tf.train.load_checkpoint(os.path.join(path, 'tf'))
    return {name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()
            if fragment in name and 'OPTIMIZER_SLOT' not in name}


@pytest.mark.parametrize('config, sparsity', [
    ('td3_mujoco_dense_config.gin', 0.0),
    ('td3_mujoco_static_config.gin', 0.5),
    ('td3_mujoco_sparse_config.gin', 0.5),
])
def test_configs_train_and_keep_sparsity(tmp_path, config, sparsity):
    with helpers.variables_created_in_graphs() as created:
        # One config saves the final policy; the others show it skipped.
        td3(tmp_path, config, 'mask_updater.update_freq = 15',
            'train_eval.save_final_policy = '
            f'{config == "td3_mujoco_sparse_config.gin"}')
    assert not created, created  # each step traces once
    rows = results(tmp_path)
    assert [row['step'] for row in rows] == [100, 200]
    for name in ('actor', 'critic_1', 'critic_2'):
        values = {row['networks'][name]['sparsity'] for row in rows}
        assert len(values) == 1  # kept exactly
        # ANF's uniform 0.5 over the whole network, output layer dense.
        assert values.pop() == pytest.approx(sparsity, abs=0.01)
    assert rows[-1]['algorithm'] == 'td3'
    assert (os.path.isdir(tmp_path / 'policy') ==
            (config == 'td3_mujoco_sparse_config.gin'))


@pytest.mark.parametrize('actor_mask_steps, last_change', [
    # ANF: update_freq counts train steps; the actor, stepped every 2nd
    # train step, updates every 26 / 2 = 13 of its own steps, on the
    # critics' update steps (its step 91 = train step 182 = 7 x 26).
    (None, 91),
    # Old: the actor's own steps, every 26 of them (52 train steps).
    ('actor_steps', 78),
])
def test_delayed_actor_mask_schedule(tmp_path, actor_mask_steps, last_change):
    extra = ([f"train_eval.actor_mask_steps = '{actor_mask_steps}'"]
             if actor_mask_steps else [])
    td3(tmp_path, 'td3_mujoco_sparse_config.gin',
        'mask_updater.update_freq = 26', *extra)
    state = variables(latest_checkpoint(tmp_path), '_actor_optimizer/')
    steps = next(v for k, v in state.items() if k.endswith('steps/.ATTRIBUTES'
                                                           '/VARIABLE_VALUE'))
    change = next(v for k, v in state.items() if 'last_mask_change' in k)
    assert steps == 100  # 200 train steps, actor on every 2nd
    assert change == last_change
    initial = checkpoint_masks(
        os.path.join(tmp_path, 'checkpoints', 'ckpt-100'))
    final = checkpoint_masks(latest_checkpoint(tmp_path))
    actor_keys = [k for k in final if k.startswith('agent/_actor_network')]
    assert actor_keys
    assert any(not np.array_equal(initial[k], final[k]) for k in actor_keys)
    for key in actor_keys:
        assert int(initial[key].sum()) == int(final[key].sum())


def _targets_within_online_masks(path):
    masks = checkpoint_masks(path)
    kernels = variables(path, '/kernel/')
    pairs = {'_target_actor_network': '_actor_network',
             '_target_critic_network_1': '_critic_network_1',
             '_target_critic_network_2': '_critic_network_2'}
    checked = 0
    for target, online in pairs.items():
        for name, mask in masks.items():
            if not name.startswith(f'agent/{online}/'):
                continue
            target_kernel = kernels[name.replace(online, target).replace(
                '/mask/', '/layer/kernel/')]
            assert np.all(target_kernel[mask == 0] == 0), name
            checked += 1
    return checked


def test_every_target_stays_within_its_online_mask(tmp_path):
    td3(tmp_path, 'td3_mujoco_sparse_config.gin',
        'mask_updater.update_freq = 10')
    assert _targets_within_online_masks(latest_checkpoint(tmp_path)) == 6


def test_anf_config_prunes_targets_by_magnitude(tmp_path):
    td3(tmp_path, 'td3_anf_config.gin', 'mask_updater.update_freq = 10')
    path = latest_checkpoint(tmp_path)
    kernels = variables(path, '/kernel/')
    masks = checkpoint_masks(path)
    for online in ('_actor_network', '_critic_network_1'):
        mask = next(m for k, m in masks.items()
                    if k.startswith(f'agent/{online}/'))
        target = next(v for k, v in kernels.items()
                      if k.startswith(f'agent/_target{online}/') and
                      v.shape == mask.shape)
        # No more non-zeros than the online layer's active weights.
        assert 0 < np.count_nonzero(target) <= int(mask.sum())
    # Pendulum with 90% noise: 30 inputs; the 30x16 input layer at 80%.
    assert results(tmp_path)[-1]['networks']['actor'][
        'input_connectivity'] is not None


# A killed run's resume: tests/rl/tfagents/run/test_bit_identical_resume
# (killed at a random step, resumed: bit-identical to the uninterrupted run);
# a real SIGKILL of a train script: test_sac.


@pytest.mark.parametrize('binding, message', [
    ("train_eval.target_sparsity = 'all'",
     "train_eval.target_sparsity is 'all'; allowed: mask, magnitude"),
    ('train_eval.actor_update_period = 0',
     'train_eval.actor_update_period must be an integer >= 1, got 0'),
    ("train_eval.env_name = 'CartPole-v1'", 'TD3 needs continuous actions'),
    ("train_eval.td_errors_loss = 'l1'",
     "train_eval.td_errors_loss is 'l1'; allowed: squared, huber"),
])
def test_bad_input_fails_clearly(tmp_path, binding, message):
    code, _, err = helpers.run_in_process(
        'td3', tmp_path / 'run',
        os.path.join(CONFIGS, 'td3_mujoco_dense_config.gin'), TINY + [binding])
    assert code == 2 and err.count('\n') == 1 and message in err, err
