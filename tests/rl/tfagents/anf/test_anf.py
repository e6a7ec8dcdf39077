"""ANF (`rigl.rl.tfagents.anf`): noise features on either side, their gin
vocabulary and its old names, the samplers, and the tutorial's configs."""

import os

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec

import rigl  # noqa: F401

import helpers
import tiny
from helpers import latest_checkpoint, results
from rigl.rl.tfagents import anf
from rigl.rl.tfagents import envs
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.run import settings as settings_lib

CONFIGS = helpers.CONFIGS
OBS = tensor_spec.BoundedTensorSpec((3,), tf.float32, -1, 1)
ACT = tensor_spec.BoundedTensorSpec((1,), tf.float32, -2, 2)


@pytest.fixture(params=['new', 'old'])
def noisy_sac(request):
    gin.clear_config()
    gin.parse_config(
        ['noise_features.fraction = 0.9', 'noise_features.permute = True']
        if request.param == 'new' else
        ['NetworkNoise.noise_fraction = 0.9', 'NetworkNoise.permute = True'])
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
    assert all(isinstance(layer, anf.NoiseFeatureLayer) and
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
        'sac', tmp_path, os.path.join(CONFIGS, 'sac_anf_config.gin'),
        tiny.SAC + [
            tiny.WITH_POLICY,
            'noise_features.adjust_period = 150',
            'noise_features.empty_buffer_on_change = True',
            'noise_features.refill_timesteps = 20'])
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
            # The table is printed at the start: a short evaluation.
            'create_environment.max_episode_steps = 20',
            'train_eval.eval_episodes = 1', 'train_eval.seed = 0',
            tiny.NO_POLICY])
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
    config = anf.NoiseConfig(fraction=0.5, distribution='histogram',
                             histogram_file=str(path))
    layout = anf.NoiseLayout(3, config, seed=1)
    noise = layout.apply(tf.zeros([2000, 3])).numpy()[:, 3:]
    with np.load(path) as histograms:
        edges = histograms['bin_edges']
    # Pendulum: cos and sin in [-1, 1], angular velocity in [-8, 8]; noise
    # feature i imitates real feature i mod 3.
    for index in range(layout.num_noise):
        low, high = edges[index % 3, 0], edges[index % 3, -1]
        assert low <= noise[:, index].min() and noise[:, index].max() <= high
        assert noise[:, index].std() > 0.05 * (high - low)


@pytest.mark.parametrize('bindings, fraction', [
    (['NetworkNoise.noise_fraction = 0.9'], 0.9),
    (['create_environment.noise_fraction = 0.75'], 0.75),
    (['NetworkNoise.permute = True'], 0.0),
    (['noise_features.fraction = 0.9'], 0.9),
    (["noise_features.where = 'env'", 'noise_features.fraction = 0.75'],
     0.75),
    # An old binding overrides the new vocabulary on its side (a study's
    # `NetworkNoise.noise_fraction` over sac_anf_config.gin).
    (['noise_features.fraction = 0.9', 'NetworkNoise.noise_fraction = 0.98'],
     0.98),
    (['noise_features.fraction = 0.9', 'NetworkNoise.noise_fraction = 0.0',
      'create_environment.noise_fraction = 0.5'], 0.5)])
def test_metadata_records_the_noise_fraction_of_either_side(bindings,
                                                            fraction):
    from rigl.rl.tfagents.run import run_dir
    gin.clear_config()
    try:
        gin.parse_config(bindings)
        # As a run does: the configurables in use enter the operative config.
        anf.make_layout(3, 0)
        envs.create_environment('Pendulum-v1', seed=0)
        settings = settings_lib.build(sac.SacSettings, {}, 'SAC')
        record = run_dir.config_record('sac', settings)
    finally:
        gin.clear_config()
    assert run_dir.metadata(record, seed=0)['noise_fraction'] == fraction


# --------------------------------------------------------------------------
# One vocabulary (`noise_features.*`), the old names as aliases


def _with_bindings(bindings, function):
    gin.clear_config()
    try:
        gin.parse_config(bindings)
        return function()
    finally:
        gin.clear_config()


def _env_observations(bindings):
    def observe():
        env = envs.create_environment('Pendulum-v1', seed=4)
        observations = [env.reset().observation] + [
            env.step(np.zeros(1, np.float32)).observation for _ in range(9)]
        return np.stack(observations), anf.noise_feature_mask(env)
    return _with_bindings(bindings, observe)


NEW_NETWORK = [
    'noise_features.fraction = 0.9', 'noise_features.std = 2.0',
    "noise_features.distribution = 'histogram'",
    "noise_features.histogram_file = 'h.npz'",
    'noise_features.adjust_period = 5',
    'noise_features.empty_buffer_on_change = True',
    'noise_features.refill_timesteps = 3',
    "noise_features.refill_mode = 'policy'"]
OLD_NETWORK = [
    'NetworkNoise.noise_fraction = 0.9', 'NetworkNoise.noise_std = 2.0',
    "NetworkNoise.histogram_file = 'h.npz'", 'NetworkNoise.adjust_period = 5',
    'NetworkNoise.empty_buffer_on_change = True',
    'NetworkNoise.refill_timesteps = 3', "NetworkNoise.refill_mode = 'policy'"]


def test_old_network_bindings_are_aliases_of_the_new_ones():
    new = _with_bindings(NEW_NETWORK, anf.network_config)
    assert new == _with_bindings(OLD_NETWORK, anf.network_config)
    assert (new.where, new.fraction, new.distribution, new.adjust_period) == (
        'network', 0.9, 'histogram', 5)
    # An old binding overrides its setting on the new config ...
    mixed = _with_bindings(NEW_NETWORK + ['NetworkNoise.noise_fraction = 0.5'],
                           anf.network_config)
    assert mixed.fraction == 0.5 and mixed.std == 2.0
    # ... even back to its default: no network-side noise at all.
    assert _with_bindings(['noise_features.fraction = 0.9',
                           'NetworkNoise.noise_fraction = 0.0'],
                          anf.network_config) is None
    assert _with_bindings([], anf.network_config) is None


def test_old_environment_bindings_are_aliases_of_the_new_ones():
    new_observations, new_mask = _env_observations([
        "noise_features.where = 'env'", 'noise_features.fraction = 0.5',
        'noise_features.permute = True', 'noise_features.adjust_period = 4'])
    old_observations, old_mask = _env_observations([
        'create_environment.noise_fraction = 0.5',
        'create_environment.permute_features = True',
        'create_environment.adjust_env_period = 4'])
    assert new_observations.shape == (10, 6)
    np.testing.assert_array_equal(new_observations, old_observations)
    np.testing.assert_array_equal(new_mask, old_mask)
    # The network side's new settings leave the environment alone.
    observations, mask = _env_observations(['noise_features.fraction = 0.5'])
    assert observations.shape == (10, 3) and mask is None


@pytest.mark.parametrize('bindings, message', [
    (['noise_features.fraction = 1.5'], 'noise_features.fraction=1.5'),
    (["noise_features.where = 'both'"], "noise_features.where='both'"),
    (["noise_features.histogram_file = 'h.npz'"],
     "noise_features.distribution='histogram'"),
    (["noise_features.distribution = 'histogram'"], 'needs a file'),
    (['noise_features.std = 0.0'], 'noise_features.std=0.0'),
    (["noise_features.where = 'env'",
      'noise_features.empty_buffer_on_change = True'],
     "need noise_features.where='network'"),
    (['noise_features.fraction = 0.5', 'NetworkNoise.noise_fraction = -1.0'],
     'NetworkNoise.noise_fraction=-1.0'),
    (['NetworkNoise.refill_mode = "later"'],
     "NetworkNoise.refill_mode='later'"),
])
def test_bad_noise_bindings_name_the_binding(bindings, message):
    with pytest.raises(ValueError, match=message):
        _with_bindings(bindings, anf.network_config)


def test_an_old_default_next_to_new_environment_noise_names_the_new_one():
    bindings = ["noise_features.where = 'env'",
                'noise_features.fraction = 0.5',
                'create_environment.noise_fraction = 0.0']
    with pytest.raises(ValueError, match='bind noise_features.fraction'):
        _with_bindings(bindings, anf.bound_values)
    # A default that agrees with the new setting says nothing new: fine.
    values = _with_bindings(bindings[:2] + [
        'create_environment.noise_std = 1.0'], anf.bound_values)
    # The record then names the environment's noise as it was made.
    assert values == {'create_environment.noise_fraction': 0.5,
                      'create_environment.noise_std': 1.0,
                      'create_environment.noise_histogram_file': None,
                      'create_environment.permute_features': False,
                      'create_environment.adjust_env_period': None}


def _record(bindings):
    from rigl.rl.tfagents.run import run_dir

    def record():
        anf.make_layout(3, 0)
        envs.create_environment('Pendulum-v1', seed=0)
        return run_dir.config_record('sac', settings_lib.build(
            sac.SacSettings, {}, 'SAC'))
    return _with_bindings(bindings, record)


def test_records_of_either_vocabulary():
    # The old names alone record exactly as before `noise_features`.
    old = _record(['NetworkNoise.noise_fraction = 0.9'])['settings']
    assert not any(key.startswith('noise_features.') for key in old)
    assert old['NetworkNoise.noise_fraction'] == 0.9
    assert old['NetworkNoise.noise_std'] == 1.0
    # The new ones record themselves and any old one bound beside them.
    new = _record(['noise_features.fraction = 0.9',
                   'NetworkNoise.permute = True'])['settings']
    assert new['noise_features.fraction'] == 0.9
    assert new['noise_features.where'] == 'network'
    assert new['NetworkNoise.permute'] is True
    assert 'NetworkNoise.noise_std' not in new
    network, env = anf.resolve(new)
    assert (network.fraction, network.permute, env) == (0.9, True, None)


def test_the_viewer_rebuilds_environment_noise_of_the_new_vocabulary():
    from rigl.rl import loading
    record = _record(["noise_features.where = 'env'",
                      'noise_features.fraction = 0.5',
                      'noise_features.permute = True'])
    assert anf.noise_fraction(record['settings']) == 0.5
    kwargs = loading.environment_kwargs({'config': record})
    assert (kwargs['noise_fraction'], kwargs['permute_features']) == (0.5,
                                                                      True)
    env = envs.create_environment('Pendulum-v1', seed=0, **kwargs)
    assert env.observation_spec().shape == (6,)


def test_a_run_resumes_with_its_noise_named_in_the_other_vocabulary(tmp_path):
    from rigl.rl.tfagents.run import run_dir
    saved = _record(['NetworkNoise.noise_fraction = 0.9'])
    same = _record(['noise_features.fraction = 0.9'])
    directory = run_dir.RunDir(str(tmp_path))
    directory.check_resume(saved, same, allow_change=False)
    other = _record(['noise_features.fraction = 0.8'])
    with pytest.raises(ValueError, match='noise_fraction 0.9 -> 0.8'):
        directory.check_resume(saved, other, allow_change=True)


# --------------------------------------------------------------------------
# Samplers: one object per distribution, numpy and TF paths


def _histogram_sampler():
    edges = np.array([[0.0, 1.0, 2.0, 3.0], [10.0, 20.0, 30.0, 40.0]])
    probabilities = np.array([[0.5, 0.0, 0.5], [0.2, 0.3, 0.5]])
    return anf.HistogramSampler(edges, probabilities, num_noise=4), (
        edges, probabilities)


def test_histogram_sampler_paths_map_uniforms_alike():
    sampler, _ = _histogram_sampler()
    uniforms = np.random.default_rng(0).random((2, 4, 500))
    from_tf = sampler.from_uniforms_tf(
        tf.constant(uniforms, tf.float32)).numpy()
    from_numpy = np.stack([sampler.from_uniforms(uniforms[:, :, column])
                           for column in range(500)])
    assert from_tf.shape == from_numpy.shape == (500, 4)
    np.testing.assert_allclose(from_tf, from_numpy, rtol=1e-5, atol=1e-5)


def test_both_sampler_paths_draw_the_same_distribution():
    sampler, (edges, probabilities) = _histogram_sampler()
    rng = np.random.default_rng(1)
    from_numpy = np.stack([sampler.sample(rng) for _ in range(4000)])
    from_tf = sampler.sample_tf(tf.random.Generator.from_seed(1),
                                tf.constant(4000)).numpy()
    for draws in (from_numpy, from_tf):
        for index in range(4):
            counts, _ = np.histogram(draws[:, index], bins=edges[index % 2])
            np.testing.assert_allclose(counts / len(draws),
                                       probabilities[index % 2], atol=0.03)
    gaussian = anf.GaussianSampler(num_noise=50, std=2.0)
    numpy_draws = np.stack([gaussian.sample(rng) for _ in range(200)])
    tf_draws = gaussian.sample_tf(tf.random.Generator.from_seed(1),
                                  tf.constant(200)).numpy()
    for draws in (numpy_draws, tf_draws):
        assert draws.shape == (200, 50)
        assert abs(draws.std() - 2.0) < 0.06 and abs(draws.mean()) < 0.06
