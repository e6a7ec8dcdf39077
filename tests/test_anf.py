"""ANF: network-side noise features and the tutorial's configs."""

import os

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec

import rigl  # noqa: F401

import helpers
from helpers import latest_checkpoint, results
from rigl.rl.tfagents import envs
from rigl.rl.tfagents import noise_features
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.run import settings as settings_lib

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
CONFIGS = os.path.join(REPO, 'rigl', 'rl', 'tfagents', 'configs')
OBS = tensor_spec.BoundedTensorSpec((3,), tf.float32, -1, 1)
ACT = tensor_spec.BoundedTensorSpec((1,), tf.float32, -2, 2)


@pytest.fixture
def noisy_sac():
    gin.clear_config()
    gin.parse_config(['NetworkNoise.noise_fraction = 0.9',
                      'NetworkNoise.permute = True'])
    settings = settings_lib.build(sac.SacSettings, dict(
        actor_fc_layers=(8,), critic_joint_fc_layers=(8,),
        train_mode_actor='sparse', train_mode_value='sparse'), 'SAC')
    algorithm = sac.Sac(settings, OBS, ACT, seed=0)
    yield algorithm
    gin.clear_config()


def first_layers(algorithm):
    agent = algorithm.agent
    networks = [agent._actor_network, agent._critic_network_1,
                agent._critic_network_2, agent._target_critic_network_1,
                agent._target_critic_network_2]
    return [network.layers[0] for network in networks]


def test_noise_is_fresh_every_pass_with_one_shared_layout(noisy_sac):
    layout = noisy_sac.noise_layout
    # 3 real features at 90% noise: ceil(3 / 0.1) = 30 inputs.
    assert (layout.num_real, layout.num_noise, layout.total) == (3, 27, 30)
    assert all(isinstance(layer, noise_features.NoiseFeatureLayer) and
               layer.layout is layout for layer in first_layers(noisy_sac))
    observation = tf.constant([[0.1, 0.2, 0.3]] * 4)
    first, second = layout.apply(observation), layout.apply(observation)
    mask = layout.noise_mask
    # Real features keep their values, in the permuted positions ...
    real_positions = np.flatnonzero(~mask)
    order = layout.permutation.numpy()[real_positions]
    np.testing.assert_allclose(first.numpy()[:, real_positions],
                               observation.numpy()[:, order])
    np.testing.assert_array_equal(first.numpy()[:, ~mask],
                                  second.numpy()[:, ~mask])
    # ... noise is new on every pass and for every example.
    assert not np.allclose(first.numpy()[:, mask], second.numpy()[:, mask])
    assert not np.allclose(first.numpy()[0, mask], first.numpy()[1, mask])
    assert abs(float(np.std(first.numpy()[:, mask])) - 1.0) < 0.3


def test_redraw_changes_every_network_input_order(noisy_sac):
    layout = noisy_sac.noise_layout
    before = layout.permutation.numpy().copy()
    layout.redraw(np.random.default_rng(5))
    after = layout.permutation.numpy()
    assert not np.array_equal(before, after)
    assert sorted(after) == list(range(30))
    observation = tf.constant([[7.0, 8.0, 9.0]])
    for layer in first_layers(noisy_sac):
        inputs = (observation, tf.zeros([1, 1])) if layer._with_action \
            else observation
        output = layer(inputs)
        output = output[0] if layer._with_action else output
        real = output.numpy()[0, ~layout.noise_mask]
        np.testing.assert_array_equal(
            real, observation.numpy()[0, after[~layout.noise_mask]])


def test_anf_run_eval_and_saved_policy_use_the_training_layout(tmp_path):
    code, out, err = helpers.run_in_process(
        'sac', tmp_path, os.path.join(CONFIGS, 'sac_anf_config.gin'), [
            "train_eval.env_name = 'Pendulum-v1'",
            'train_eval.num_iterations = 200',
            'train_eval.initial_collect_steps = 100',
            'train_eval.actor_fc_layers = (16, 16)',
            'train_eval.critic_joint_fc_layers = (16, 16)',
            'train_eval.batch_size = 16', 'train_eval.eval_interval = 100',
            'train_eval.eval_episodes = 1', 'train_eval.seed = 0',
            'NetworkNoise.adjust_period = 150',
            'NetworkNoise.empty_buffer_on_change = True',
            'NetworkNoise.refill_timesteps = 20'])
    assert code == 0, err[-2000:]
    assert 'noise features permuted anew at env step 150' in out
    # The tutorial's per-episode lines and evaluation blocks.
    # The first episode ends at env step 200: 100 random steps, 20 refill
    # steps at the redraw (env step 150), and 80 train steps.
    assert ('Total Steps: 200  Train Steps: 80  Episode Num: 0  '
            'Epi. Steps: 200  Reward:') in out
    assert 'Evaluation over 1 episode(s):' in out
    # Redraws at env steps 150 and 300 (100 random steps, then one per train
    # step, + 20 refill steps after the first): after the second, 20 refill
    # steps and the last 20 train steps' transitions. Replay holds real
    # observations only (3 features).
    assert 'noise features permuted anew at env step 300' in out
    with np.load(os.path.join(latest_checkpoint(tmp_path),
                              'replay.npz')) as replay:
        assert replay['observation'].shape[1:] == (3,)
        assert int(replay['size']) == 20 + 20
    reader = tf.train.load_checkpoint(
        os.path.join(latest_checkpoint(tmp_path), 'tf'))
    permutation = reader.get_tensor(
        'noise_layout/permutation/.ATTRIBUTES/VARIABLE_VALUE')
    # The saved policy carries the same layout variable.
    policy = tf.saved_model.load(str(tmp_path / 'policy'))
    saved = [v.numpy() for v in policy.model_variables
             if 'permutation' in v.name]
    assert saved and np.array_equal(saved[0], permutation)
    for name in ('connectivity.png', 'input_layer.png'):
        with open(tmp_path / name, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n', name
    lines = (tmp_path / 'connectivity.csv').read_text().splitlines()
    assert lines[0] == 'step,env_steps,network,per_real_feature,' \
        'per_noise_feature'
    assert len(lines) == 1 + 2 * 3  # 2 evals x actor and 2 critics
    row = results(tmp_path)[-1]
    connectivity = row['networks']['actor']['input_connectivity']
    # 30 inputs x 16 units at 80%: 96 active over 30 rows.
    assert (3 * connectivity['per_real_feature'] +
            27 * connectivity['per_noise_feature']) / 30 == pytest.approx(
                96 / 30)


@pytest.mark.parametrize('config, extra, expected', [
    # The tutorial's table: a 23-256-256-1 critic at ANF uniform 0.9 with a
    # dense output layer. ANF budgets the whole network: 0.1 * (5888 +
    # 65536 + 256) = 7168 weights, minus the dense 256 -> 6912 over 71424
    # -> density 0.09677 -> 90.3% on both hidden layers.
    ('sac_anf_uniform_config.gin', ['init_masks.sparsity = 0.9'],
     'critic_1        90.3%    90.3%     0.0%'),
    # Input layer 80% of (17 real / 0.1 = 170 inputs) x 256, others dense.
    ('sac_anf_config.gin', [], 'actor           80.0%     0.0%     0.0%'),
])
def test_tutorial_configs_print_their_sparsity_tables(tmp_path, config, extra,
                                                      expected):
    code, out, err = helpers.run_in_process(
        'sac', tmp_path, os.path.join(CONFIGS, config), extra + [
            'train_eval.num_iterations = 1',
            'train_eval.initial_collect_steps = 100',
            'train_eval.eval_episodes = 1', 'train_eval.seed = 0'])
    assert code == 0, err[-2000:]
    assert expected in out, out


def test_histogram_noise_stays_in_the_imitated_feature_range(tmp_path):
    import subprocess
    import sys
    path = tmp_path / 'pendulum.npz'
    completed = subprocess.run(
        [sys.executable, '-m', 'rigl.rl.make_histograms',
         '--env_name=Pendulum-v1', '--steps=500', '--bins=10',
         f'--output={path}'], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert '3 features x 10 bins from 500 steps' in completed.stdout
    config = noise_features.NetworkNoise(noise_fraction=0.5,
                                         histogram_file=str(path))
    layout = noise_features.NoiseLayout(3, config, seed=1)
    noise = layout.apply(tf.zeros([2000, 3])).numpy()[:, 3:]
    with np.load(path) as histograms:
        edges = histograms['bin_edges']
    # Pendulum: cos and sin in [-1, 1], angular velocity in [-8, 8]; noise
    # feature i imitates real feature i mod 3.
    for index in range(layout.num_noise):
        low, high = edges[index % 3, 0], edges[index % 3, -1]
        assert low <= noise[:, index].min() and noise[:, index].max() <= high
        assert noise[:, index].std() > 0.05 * (high - low)


@pytest.mark.parametrize('binding, fraction', [
    ('NetworkNoise.noise_fraction = 0.9', 0.9),
    ('create_environment.noise_fraction = 0.75', 0.75),
    ('NetworkNoise.permute = True', 0.0)])
def test_metadata_records_the_noise_fraction_of_either_side(binding,
                                                            fraction):
    from rigl.rl.tfagents.run import run_dir
    gin.clear_config()
    try:
        gin.parse_config([binding])
        # As a run does: the configurables in use enter the operative config.
        noise_features.NetworkNoise()
        envs.create_environment('Pendulum-v1', seed=0)
        settings = settings_lib.build(sac.SacSettings, {}, 'SAC')
        record = run_dir.config_record('sac', settings)
    finally:
        gin.clear_config()
    assert run_dir.metadata(record, seed=0)['noise_fraction'] == fraction
