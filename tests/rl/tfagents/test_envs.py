"""Tests for rigl.rl.tfagents.envs: gymnasium adapter and ANF noise."""

import rigl  # noqa: F401  (must precede TensorFlow: selects legacy Keras)

import gymnasium
import numpy as np
import pytest
from tf_agents.environments import tf_py_environment
from tf_agents.environments import utils as env_utils
from tf_agents.trajectories import time_step as ts

from rigl.rl.tfagents import anf
from rigl.rl.tfagents import envs


class _ConstantEnv(gymnasium.Env):
    """Never-ending env whose observation is always `values` (known layout)."""

    def __init__(self, values, action_space=None):
        self._values = np.asarray(values, dtype=np.float64)
        self.observation_space = gymnasium.spaces.Box(
            -1000.0, 1000.0, shape=self._values.shape, dtype=np.float64)
        self.action_space = action_space or gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._values.copy(), {}

    def step(self, action):
        return self._values.copy(), 0.0, False, False, {}


def _real_values(num_features):
    return 100.0 * np.arange(1, num_features + 1)


def _write_histograms(path, bin_edges, probabilities):
    np.savez(path, bin_edges=np.asarray(bin_edges, dtype=np.float64),
             probabilities=np.asarray(probabilities, dtype=np.float64))
    return str(path)


# --------------------------------------------------------------------------
# GymnasiumEnvironment


def test_box_specs_are_float32_with_space_bounds():
    env = envs.create_environment('Pendulum-v1', seed=0)
    observation_spec = env.observation_spec()
    assert observation_spec.dtype == np.float32
    assert observation_spec.shape == (3,)
    np.testing.assert_array_equal(observation_spec.minimum, [-1, -1, -8])
    np.testing.assert_array_equal(observation_spec.maximum, [1, 1, 8])
    action_spec = env.action_spec()
    assert action_spec.dtype == np.float32
    assert action_spec.shape == (1,)
    assert float(np.min(action_spec.minimum)) == -2.0
    assert float(np.max(action_spec.maximum)) == 2.0
    time_step = env.reset()
    assert time_step.observation.dtype == np.float32
    assert time_step.step_type == ts.StepType.FIRST


def test_discrete_action_spec_is_int64_scalar():
    env = envs.create_environment('CartPole-v1', seed=0)
    action_spec = env.action_spec()
    assert action_spec.dtype == np.int64
    assert action_spec.shape == ()
    assert (action_spec.minimum, action_spec.maximum) == (0, 1)
    assert env.observation_spec().shape == (4,)
    assert env.observation_spec().dtype == np.float32


def test_mujoco_env_specs():
    env = envs.create_environment('InvertedPendulum-v5', seed=0)
    assert env.observation_spec().shape == (4,)
    assert env.action_spec().shape == (1,)
    assert float(np.max(env.action_spec().maximum)) == 3.0
    time_step = env.step(np.zeros(1, dtype=np.float32))
    assert time_step.observation.dtype == np.float32
    assert isinstance(env.gym_env, gymnasium.Env)
    env.close()


def test_unsupported_space_raises():
    gym_env = _ConstantEnv([1.0], action_space=gymnasium.spaces.MultiBinary(3))
    with pytest.raises(ValueError, match='MultiBinary.*Box and Discrete'):
        envs.GymnasiumEnvironment(gym_env)


def test_termination_has_discount_zero():
    env = envs.create_environment('CartPole-v1', seed=0)
    env.reset()
    for _ in range(200):
        time_step = env.step(np.array(1, dtype=np.int64))
        if time_step.is_last():
            break
    assert time_step.is_last()
    assert time_step.discount == 0.0
    assert time_step.reward.dtype == np.float32


def test_truncation_has_discount_one():
    env = envs.create_environment('Pendulum-v1', seed=0, max_episode_steps=5)
    env.reset()
    action = np.zeros(1, dtype=np.float32)
    step_types = [int(env.step(action).step_type) for _ in range(5)]
    assert step_types == [ts.StepType.MID] * 4 + [ts.StepType.LAST]
    assert env.current_time_step().discount == 1.0


def test_step_after_last_auto_resets():
    env = envs.create_environment('Pendulum-v1', seed=0, max_episode_steps=2)
    action = np.zeros(1, dtype=np.float32)
    first = env.step(action)  # A step before any reset also resets.
    assert first.is_first()
    env.step(action)
    assert env.step(action).is_last()
    restarted = env.step(action)
    assert restarted.is_first()
    assert restarted.reward == 0.0 and restarted.discount == 1.0
    assert env.step(action).is_mid()


def test_same_seed_gives_same_observations_and_actions():
    def rollout(seed):
        env = envs.create_environment('Pendulum-v1', seed=seed,
                                      max_episode_steps=3)
        action = np.zeros(1, dtype=np.float32)
        observations = [env.reset().observation]
        observations += [env.step(action).observation for _ in range(4)]
        # Second episode: unseeded reset continues the seeded random stream.
        return (np.stack(observations),
                env.gym_env.action_space.sample())

    observations_a, action_a = rollout(7)
    observations_b, action_b = rollout(7)
    observations_c, _ = rollout(8)
    np.testing.assert_array_equal(observations_a, observations_b)
    np.testing.assert_array_equal(action_a, action_b)
    assert not np.array_equal(observations_a[0], observations_c[0])
    # The second episode's start differs from the first (no re-seeding).
    assert not np.array_equal(observations_a[0], observations_a[4])


def test_render_uses_creation_render_mode():
    env = envs.create_environment('Pendulum-v1', seed=0,
                                  render_mode='rgb_array')
    env.reset()
    frame = env.render('rgb_array')
    assert frame.ndim == 3 and frame.shape[-1] == 3
    env.close()
    plain = envs.create_environment('Pendulum-v1', seed=0)
    with pytest.raises(ValueError, match='render_mode=None'):
        plain.render('rgb_array')


def test_validate_py_environment_with_noise_and_permutation():
    env = envs.create_environment('CartPole-v1', seed=0, noise_fraction=0.5,
                                  permute_features=True, adjust_env_period=7)
    env_utils.validate_py_environment(env, episodes=2)
    env = envs.create_environment('InvertedPendulum-v5', seed=0,
                                  noise_fraction=0.75)
    env_utils.validate_py_environment(env, episodes=2)


# --------------------------------------------------------------------------
# NoiseFeatures


@pytest.mark.parametrize('num_real, fraction, expected_noise', [
    (17, 0.9, 153), (3, 0.5, 3), (4, 0.0, 0), (10, 0.99, 990), (5, 0.8, 20),
    (3, 0.3, 2),
])
def test_num_noise_features(num_real, fraction, expected_noise):
    assert anf.num_noise_features(num_real, fraction) == expected_noise
    wrapper = anf.NoiseFeatures(_ConstantEnv(_real_values(num_real)),
                                noise_fraction=fraction, seed=0)
    assert wrapper.observation_space.shape == (num_real + expected_noise,)
    observation, _ = wrapper.reset()
    assert observation.shape == (num_real + expected_noise,)
    assert wrapper.noise_feature_mask.sum() == expected_noise


def test_halfcheetah_with_noise_fraction_0_9_has_170_features():
    env = envs.create_environment('HalfCheetah-v5', seed=0, noise_fraction=0.9)
    assert env.observation_spec().shape == (170,)
    assert env.reset().observation.shape == (170,)
    mask = anf.noise_feature_mask(env)
    assert mask.shape == (170,) and mask.sum() == 153
    assert not mask[:17].any()
    env.close()


def test_zero_noise_fraction_leaves_observation_unchanged():
    wrapper = anf.NoiseFeatures(_ConstantEnv([1.0, 2.0]), noise_fraction=0.0)
    observation, _ = wrapper.reset(seed=0)
    np.testing.assert_array_equal(observation, [1.0, 2.0])
    assert not wrapper.noise_feature_mask.any()
    env = envs.create_environment('Pendulum-v1', seed=0)
    assert anf.noise_feature_mask(env) is None
    assert env.observation_spec().shape == (3,)


def test_fresh_noise_each_step_and_real_features_untouched():
    raw = gymnasium.make('Pendulum-v1')
    env = envs.create_environment('Pendulum-v1', seed=3, noise_fraction=0.5)
    raw_observation, _ = raw.reset(seed=3)
    observations = [env.reset().observation]
    raw_observations = [raw_observation]
    for step in range(5):
        action = np.array([0.3 * step - 0.5], dtype=np.float32)
        observations.append(env.step(action).observation)
        raw_observations.append(raw.step(action)[0])
    observations = np.stack(observations)
    assert observations.shape == (6, 6)
    raw_observations = np.stack(raw_observations).astype(np.float32)
    np.testing.assert_array_equal(observations[:, :3], raw_observations)
    noise = observations[:, 3:]
    assert np.all(noise[1:] != noise[:-1])


def test_gaussian_noise_has_requested_std():
    std = 2.5
    wrapper = anf.NoiseFeatures(_ConstantEnv([0.0, 0.0]), noise_fraction=0.9,
                                noise_std=std, seed=1)
    wrapper.reset()
    noise = np.stack([wrapper.step(0)[0] for _ in range(500)])[:, 2:]
    assert noise.shape == (500, 18)
    assert abs(noise.std() - std) < 0.05 * std
    assert abs(noise.mean()) < 0.05 * std


def test_noise_seed_is_reproducible():
    def noise_sample(seed):
        wrapper = anf.NoiseFeatures(_ConstantEnv([0.0]), noise_fraction=0.75,
                                    seed=seed)
        return wrapper.reset()[0]

    np.testing.assert_array_equal(noise_sample(4), noise_sample(4))
    assert not np.array_equal(noise_sample(4), noise_sample(5))


def test_histogram_noise_stays_in_bins_and_follows_probabilities(tmp_path):
    bin_edges = [[0.0, 1.0, 2.0, 3.0], [10.0, 20.0, 30.0, 40.0]]
    probabilities = [[0.5, 0.0, 0.5], [0.2, 0.3, 0.5]]
    path = _write_histograms(tmp_path / 'hist.npz', bin_edges, probabilities)
    # d = 2, f = 0.75 -> 6 noise features imitating features 0, 1, 0, 1, 0, 1.
    wrapper = anf.NoiseFeatures(_ConstantEnv([0.0, 0.0]), noise_fraction=0.75,
                                histogram_file=path, seed=2)
    wrapper.reset()
    noise = np.stack([wrapper.step(0)[0] for _ in range(2000)])[:, 2:]
    assert noise.shape == (2000, 6)
    for noise_index in range(6):
        imitated = noise_index % 2
        edges = np.asarray(bin_edges[imitated])
        values = noise[:, noise_index]
        assert values.min() >= edges[0] and values.max() <= edges[-1]
        counts, _ = np.histogram(values, bins=edges)
        frequencies = counts / len(values)
        np.testing.assert_allclose(frequencies, probabilities[imitated],
                                   atol=0.05)
    # The zero-probability bin (1, 2) of feature 0 is never drawn.
    feature0_noise = noise[:, 0::2]
    assert not np.any((feature0_noise > 1.0) & (feature0_noise < 2.0))
    # Noise bounds in the observation space come from the bins.
    np.testing.assert_array_equal(wrapper.observation_space.low[2:],
                                  [0, 10, 0, 10, 0, 10])


def test_make_and_save_feature_histograms(tmp_path):
    rng = np.random.default_rng(0)
    observations = np.stack([rng.normal(size=1000),
                             rng.uniform(5, 6, size=1000),
                             np.full(1000, 3.0)], axis=1)
    bin_edges, probabilities = anf.make_feature_histograms(observations, 8)
    assert bin_edges.shape == (3, 9) and probabilities.shape == (3, 8)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    path = anf.save_feature_histograms(str(tmp_path / 'hist'), bin_edges,
                                       probabilities)
    assert path.endswith('.npz')
    wrapper = anf.NoiseFeatures(_ConstantEnv([0.0, 0.0, 0.0]),
                                noise_fraction=0.5, histogram_file=path,
                                seed=0)
    noise = wrapper.reset()[0][3:]
    assert bin_edges[1, 0] <= noise[1] <= bin_edges[1, -1]
    assert abs(noise[2] - 3.0) <= 0.5  # Constant feature: one narrow range.


def test_permutation_is_fixed_and_mask_tracks_it():
    real = _real_values(3)
    wrapper = anf.NoiseFeatures(_ConstantEnv(real), noise_fraction=0.5,
                                permute=True, seed=0)
    permutation = wrapper.permutation
    mask = wrapper.noise_feature_mask.copy()
    assert sorted(permutation) == list(range(6))
    observations = [wrapper.reset()[0]] + [wrapper.step(0)[0]
                                           for _ in range(20)]
    np.testing.assert_array_equal(wrapper.permutation, permutation)
    np.testing.assert_array_equal(wrapper.noise_feature_mask, mask)
    for observation in observations:
        np.testing.assert_array_equal(observation[~mask],
                                      real[permutation[~mask]])
        assert not np.isin(observation[mask], real).any()
    # Observation space is permutation-invariant (widest bounds everywhere).
    assert np.all(wrapper.observation_space.low == -np.inf)


def test_adjust_env_period_redraws_permutation():
    real = _real_values(3)
    wrapper = anf.NoiseFeatures(_ConstantEnv(real), noise_fraction=0.5,
                                adjust_env_period=3, seed=0)
    wrapper.reset()
    permutations = [wrapper.permutation]
    masks = [wrapper.noise_feature_mask.copy()]
    for _ in range(6):
        observation = wrapper.step(0)[0]
        mask = wrapper.noise_feature_mask
        np.testing.assert_array_equal(observation[~mask],
                                      real[wrapper.permutation[~mask]])
        permutations.append(wrapper.permutation)
        masks.append(mask.copy())
    np.testing.assert_array_equal(permutations[0], permutations[2])
    assert not np.array_equal(permutations[2], permutations[3])
    np.testing.assert_array_equal(permutations[3], permutations[5])
    assert not np.array_equal(permutations[5], permutations[6])
    assert any(not np.array_equal(masks[0], m) for m in masks[3:])


def test_eval_env_follows_training_layout():
    train_env = envs.create_environment('Pendulum-v1', seed=0,
                                        noise_fraction=0.5,
                                        adjust_env_period=2)
    eval_env = envs.create_environment('Pendulum-v1', seed=1,
                                       noise_fraction=0.5,
                                       adjust_env_period=2,
                                       feature_layout_from=train_env)
    train_wrapper, eval_wrapper = train_env.gym_env, eval_env.gym_env
    action = np.zeros(1, dtype=np.float32)
    train_env.reset()
    eval_env.reset()
    for _ in range(5):
        train_env.step(action)
        np.testing.assert_array_equal(eval_wrapper.permutation,
                                      train_wrapper.permutation)
        np.testing.assert_array_equal(anf.noise_feature_mask(eval_env),
                                      anf.noise_feature_mask(train_env))
        # Eval steps never redraw: the layout only follows training.
        before = eval_wrapper.permutation
        eval_env.step(action)
        eval_env.step(action)
        np.testing.assert_array_equal(eval_wrapper.permutation, before)
    # The noise itself stays independent.
    assert not np.array_equal(
        train_env.current_time_step().observation[
            anf.noise_feature_mask(train_env)],
        eval_env.current_time_step().observation[
            anf.noise_feature_mask(eval_env)])
    with pytest.raises(ValueError, match='has a NoiseFeatures wrapper'):
        envs.create_environment('Pendulum-v1', feature_layout_from=train_env)
    with pytest.raises(ValueError, match=r'feature counts \(3, 3\)'):
        envs.create_environment('Pendulum-v1', noise_fraction=0.9,
                                feature_layout_from=train_env)


def test_noise_feature_mask_found_through_tf_environment():
    env = envs.create_environment('CartPole-v1', seed=0, noise_fraction=0.5,
                                  permute_features=True)
    expected = env.gym_env.noise_feature_mask
    tf_env = tf_py_environment.TFPyEnvironment(env)
    np.testing.assert_array_equal(anf.noise_feature_mask(tf_env), expected)
    np.testing.assert_array_equal(anf.noise_feature_mask(env.gym_env),
                                  expected)


# --------------------------------------------------------------------------
# Errors


def test_unknown_env_id_message():
    with pytest.raises(ValueError) as error:
        envs.create_environment('HalfCheeta-v5')
    message = str(error.value)
    assert "'HalfCheeta-v5'" in message
    assert 'HalfCheetah-v5' in message
    assert 'sorted(gymnasium.registry)' in message


@pytest.mark.parametrize('kwargs, fragment', [
    ({'noise_fraction': -0.1}, 'noise_fraction=-0.1'),
    ({'noise_fraction': 1.0}, 'noise_fraction=1.0'),
    ({'noise_fraction': 1.5}, r'\[0, 1\)'),
    ({'noise_fraction': 0.5, 'noise_std': 0.0}, 'noise_std=0.0'),
    ({'noise_fraction': 0.5, 'noise_std': -1.0}, '> 0'),
    ({'noise_fraction': 0.5, 'adjust_env_period': 0}, 'adjust_env_period=0'),
    ({'noise_fraction': 0.5, 'adjust_env_period': -3}, 'positive integer'),
    ({'noise_fraction': 0.5, 'histogram_file': '/nonexistent/h.npz'},
     'does not exist'),
])
def test_bad_noise_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        anf.NoiseFeatures(_ConstantEnv([0.0, 0.0]), **kwargs)


def test_bad_histogram_files(tmp_path):
    env = _ConstantEnv([0.0, 0.0])
    wrong_features = _write_histograms(tmp_path / 'a.npz',
                                       [[0.0, 1.0]] * 3, [[1.0]] * 3)
    with pytest.raises(ValueError, match='3 features.*has 2'):
        anf.NoiseFeatures(env, 0.5, histogram_file=wrong_features)
    wrong_shape = _write_histograms(tmp_path / 'b.npz',
                                    [[0.0, 1.0, 2.0]] * 2, [[1.0]] * 2)
    with pytest.raises(ValueError, match='probabilities has shape'):
        anf.NoiseFeatures(env, 0.5, histogram_file=wrong_shape)
    not_normalized = _write_histograms(tmp_path / 'c.npz',
                                       [[0.0, 1.0, 2.0]] * 2, [[0.5, 0.6]] * 2)
    with pytest.raises(ValueError, match='sum to 1'):
        anf.NoiseFeatures(env, 0.5, histogram_file=not_normalized)
    missing_key = tmp_path / 'd.npz'
    np.savez(missing_key, edges=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="'bin_edges'"):
        anf.NoiseFeatures(env, 0.5, histogram_file=str(missing_key))


def test_create_environment_bad_arguments():
    with pytest.raises(ValueError, match='max_episode_steps=0'):
        envs.create_environment('Pendulum-v1', max_episode_steps=0)
    with pytest.raises(ValueError, match='noise_std=-2'):
        envs.create_environment('Pendulum-v1', noise_std=-2)
    with pytest.raises(ValueError, match='num_bins=0'):
        anf.make_feature_histograms(np.zeros((4, 2)), 0)


class _FailingEnv(_ConstantEnv):
    """Env whose constructor fails like gymnasium's own checks do."""

    def __init__(self, **kwargs):
        raise gymnasium.error.Error('Broken env\nsecond line')


def test_gymnasium_make_errors_become_value_errors():
    env_id = 'SparserlFailingTestEnv-v0'
    gymnasium.register(env_id, entry_point=_FailingEnv)
    try:
        with pytest.raises(ValueError) as error:
            envs.create_environment(env_id, seed=0)
    finally:
        del gymnasium.registry[env_id]
    message = str(error.value).splitlines()[0]
    assert f"gymnasium.make('{env_id}', render_mode=None) failed" in message
    assert 'Error: Broken env' in message


def test_gymnasium_environment_seed_is_checked():
    env = envs.GymnasiumEnvironment(_ConstantEnv([0.0]))
    with pytest.raises(ValueError, match=r'seed=-1 is invalid'):
        env.seed(-1)
    with pytest.raises(ValueError, match=r'seed=-2 is invalid'):
        envs.GymnasiumEnvironment(_ConstantEnv([0.0]), seed=-2)
    with pytest.raises(ValueError, match=r"seed='3' is invalid"):
        anf.NoiseFeatures(_ConstantEnv([0.0]), noise_fraction=0.5, seed='3')
    env.seed(np.int64(4))  # numpy integers are integers.
    assert env.reset().observation.shape == (1,)


@pytest.mark.parametrize('env_name', ['Pong-v4', 'PongNoFrameskip-v4'])
def test_old_style_atari_ids_are_refused_with_the_ale_id(env_name):
    # They would train on raw RGB frames without the Atari preprocessing.
    with pytest.raises(ValueError, match=f"'{env_name}' is an old-style "
                       "Atari id.*use 'ALE/Pong-v5'"):
        envs.create_environment(env_name, seed=0)


def test_an_atari_name_without_ale_suggests_the_ale_id_first():
    with pytest.raises(ValueError, match='Did you mean: ALE/Pong-v5, '):
        envs.create_environment('Pong-v5', seed=0)


def test_gin_noise_features_on_the_environment_side():
    import gin
    gin.clear_config()
    try:
        gin.parse_config(["noise_features.where = 'env'",
                          'noise_features.fraction = 0.5',
                          'noise_features.permute = True'])
        from_gin = envs.create_environment('Pendulum-v1', seed=2)
    finally:
        gin.clear_config()
    explicit = envs.create_environment('Pendulum-v1', seed=2,
                                       noise_fraction=0.5,
                                       permute_features=True)
    np.testing.assert_array_equal(from_gin.reset().observation,
                                  explicit.reset().observation)
    np.testing.assert_array_equal(anf.noise_feature_mask(from_gin),
                                  anf.noise_feature_mask(explicit))


def test_environment_state_names_the_noise_wrapper_as_checkpoints_do():
    from rigl.rl.tfagents.run import env_state
    env = envs.create_environment('Pendulum-v1', seed=0, noise_fraction=0.5)
    env.reset()
    record = env_state.capture(env)
    # The name it had before it moved to `anf.env`: older checkpoints
    # restore, and newer ones in older code.
    assert record['layers'][0]['type'] == 'rigl.rl.tfagents.envs.NoiseFeatures'
    copy = envs.create_environment('Pendulum-v1', seed=5, noise_fraction=0.5)
    copy.reset()
    env_state.restore(copy, record)
    action = np.zeros(1, np.float32)
    np.testing.assert_array_equal(copy.step(action).observation,
                                  env.step(action).observation)
