"""DQN end to end on tiny networks: configs, sparsity, targets, pruning,
clear errors, SNR summaries and an Atari ROM (the frame replay buffer:
tests/rl/tfagents/run/test_frame_replay.py; kill and resume: the
bit-identical resume test in tests/rl/tfagents/run)."""

import os

import numpy as np
import pytest

import rigl  # noqa: F401

import helpers
import tiny
from helpers import checkpoint_masks, latest_checkpoint, results

CONFIGS = helpers.CONFIGS
TINY = tiny.DQN


def dqn(root, config, *extra, allow=False):
    code, out, err = helpers.run_in_process(
        'dqn', root, os.path.join(CONFIGS, config), TINY + list(extra), allow)
    assert code == 0, err[-2000:]
    return out


def test_dense_config_and_snr_summaries(tmp_path):
    with helpers.variables_created_in_graphs() as created:
        dqn(tmp_path, 'dqn_gym_dense_config.gin', 'log_snr.freq = 100',
            'train_eval.summary_interval = 100', tiny.WITH_POLICY)
    assert not created, created  # each step traces once
    rows = results(tmp_path)
    assert [row['step'] for row in rows] == [150, 300]
    assert rows[-1]['networks']['q_network']['sparsity'] == 0.0
    assert rows[-1]['algorithm'] == 'dqn' and rows[-1]['method'] == 'dense'
    assert os.path.isdir(tmp_path / 'policy')
    tags = helpers.summary_tags(tmp_path / 'train')
    assert {'SNR/mean', 'SNR/std', 'loss/total'} <= tags


@pytest.mark.parametrize('update_alg', ['set', 'rigl'])
def test_sparse_config_keeps_sparsity_and_target_masks(tmp_path, update_alg):
    dqn(tmp_path, 'dqn_gym_sparse_config.gin',
        f"mask_updater.update_alg = '{update_alg}'",
        'mask_updater.update_freq = 25')
    rows = results(tmp_path)
    assert len({row['networks']['q_network']['sparsity'] for row in rows}) == 1
    first = checkpoint_masks(os.path.join(tmp_path, 'checkpoints',
                                          'ckpt-150'))
    last = checkpoint_masks(latest_checkpoint(tmp_path))
    online = {k: v for k, v in last.items() if '/_q_network/' in k}
    assert online and any(not np.array_equal(first[k], v)
                          for k, v in online.items())
    for key, mask in online.items():
        assert int(first[key].sum()) == int(mask.sum())
        # The target Q-network carries the online masks.
        np.testing.assert_array_equal(
            last[key.replace('/_q_network/', '/_target_q_network/')], mask)


def test_pruning_reaches_final_sparsity_at_end_step(tmp_path):
    dqn(tmp_path, 'dqn_gym_pruning_config.gin',
        'wrap_all_layers.begin_step = 50', 'wrap_all_layers.end_step = 150',
        'wrap_all_layers.frequency = 25')
    rows = results(tmp_path)
    # ERK 0.9 over all layers (output included): the masks hold 90% zeros
    # from the pruning at step 150 (the eval after 150 steps, 0..149, is
    # just before it).
    masks = checkpoint_masks(latest_checkpoint(tmp_path))
    zeros = sum(int((m == 0).sum()) for m in masks.values()) / 2  # + target
    total = sum(m.size for m in masks.values()) / 2
    assert zeros / total == pytest.approx(0.9, abs=0.005)
    assert rows[-1]['networks']['q_network']['sparsity'] == pytest.approx(
        0.9, abs=0.005)
    assert rows[0]['networks']['q_network']['sparsity'] < 0.9


# A killed run's resume: tests/rl/tfagents/run/test_bit_identical_resume
# (killed at a random step, resumed: bit-identical to the uninterrupted run);
# a real SIGKILL of a train script: test_sac.


@pytest.mark.parametrize('env_name', ['Acrobot-v1', 'MountainCar-v0'])
def test_other_classic_control_tasks(tmp_path, env_name):
    dqn(tmp_path, 'dqn_gym_dense_config.gin',
        f"train_eval.env_name = '{env_name}'",
        'train_eval.num_iterations = 150', 'train_eval.eval_episodes = 1',
        'create_environment.max_episode_steps = 100')
    assert [row['step'] for row in results(tmp_path)] == [150]


@pytest.mark.parametrize('binding, message', [
    ("train_eval.env_name = 'Pendulum-v1'", 'DQN needs one discrete action'),
    ('train_eval.epsilon_greedy = 1.5',
     'train_eval.epsilon_greedy must be a finite number in [0, 1], got 1.5'),
    ("train_eval.train_mode = 'dense '",
     "train_eval.train_mode is 'dense '; allowed: dense, sparse"),
    ('log_snr.freq = -1', 'log_snr.freq must be an integer >= 0, got -1'),
    ("train_eval.td_errors_loss = 'l1'",
     "train_eval.td_errors_loss is 'l1'; allowed: squared, huber"),
])
def test_bad_input_fails_clearly(tmp_path, binding, message):
    code, _, err = helpers.run_in_process(
        'dqn', tmp_path / 'run',
        os.path.join(CONFIGS, 'dqn_gym_dense_config.gin'), TINY + [binding])
    assert code == 2 and err.count('\n') == 1 and message in err, err


def test_q_network_starts_as_the_originals():
    """He-initialised hidden layers, output weights within +-0.03 and
    output biases at -0.2, as the original suite's classic-control DQN."""
    import tensorflow as tf
    from tf_agents.specs import tensor_spec
    from rigl.rl.tfagents import networks

    observation_spec = tensor_spec.TensorSpec([4], tf.float32)
    action_spec = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 1)
    network = networks.create_q_network(observation_spec, action_spec,
                                        (512, 512))
    network.create_variables(observation_spec)
    hidden, _, output = [layer for layer in network.layers
                         if isinstance(layer, tf.keras.layers.Dense)]
    np.testing.assert_allclose(np.std(hidden.kernel.numpy()),
                               np.sqrt(2.0 / 4), rtol=0.25)
    assert np.abs(output.kernel.numpy()).max() <= 0.03
    np.testing.assert_allclose(output.bias.numpy(), [-0.2, -0.2])


def test_linear_lr_decay_reaches_zero_at_the_last_step():
    """With train_eval.linear_lr_decay the step size falls linearly from
    learning_rate to 0 at num_iterations; off, it stays constant."""
    import tensorflow as tf
    from tf_agents.specs import tensor_spec
    from rigl.rl.tfagents.algos import dqn as dqn_algo

    observation_spec = tensor_spec.TensorSpec([4], tf.float32)
    action_spec = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 1)

    def learning_rate_after(steps, decay):
        settings = dqn_algo.DqnSettings(
            seed=0, num_iterations=100, fc_layer_params=(8,),
            learning_rate=1e-3, linear_lr_decay=decay)
        algorithm = dqn_algo.Dqn(settings, observation_spec, action_spec,
                                 seed=0)
        adam = algorithm.agent._optimizer.optimizer  # inside the masking
        adam.iterations.assign(steps)
        variables = algorithm.networks['q_network'].trainable_variables
        # The rate in use is set when a step is applied.
        adam.apply_gradients([(tf.zeros_like(v), v) for v in variables])
        return float(adam.learning_rate)

    assert learning_rate_after(0, True) == pytest.approx(1e-3)
    assert learning_rate_after(40, True) == pytest.approx(6e-4)
    assert learning_rate_after(100, True) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate_after(40, False) == pytest.approx(1e-3)


def test_atari_config_trains_on_a_real_rom(tmp_path):
    dqn(tmp_path, 'dqn_atari_sparse_config.gin',
        'train_eval.num_iterations = 60',
        'train_eval.initial_collect_steps = 100',
        'train_eval.replay_capacity = 1000', 'train_eval.eval_interval = 60',
        'train_eval.eval_episodes = 1', 'train_eval.checkpoint_interval = 60',
        'train_eval.log_interval = 60', 'mask_updater.update_freq = 20',
        'create_environment.max_episode_steps = 400')
    row = results(tmp_path)[-1]
    assert row['env_steps'] == 100 + 60 * 4  # train_every 4
    network = row['networks']['q_network']
    assert network['sparsity'] == pytest.approx(0.9, abs=0.01)
    # Dopamine's Nature CNN FLOPs at its real strides, 'same' padding:
    # conv1 8x8x4x32 on 84x84/4 -> 21x21 outputs, conv2 -> 11x11, conv3 ->
    # 11x11, then 7744 -> 512 -> 6.
    dense_macs = (21 * 21 * 8 * 8 * 4 * 32 + 11 * 11 * 4 * 4 * 32 * 64 +
                  11 * 11 * 3 * 3 * 64 * 64 + 7744 * 512 + 512 * 6)
    assert 0.05 * 2 * dense_macs < network['flops'] < 0.2 * 2 * dense_macs
