"""A run killed at a random step and resumed is the uninterrupted run.

For SAC and TD3 (Pendulum), DQN (CartPole) and PPO (CartPole), with RigL
mask updates where the agent has them: one run goes straight through; an
identical one is killed at an environment step drawn from a fixed seed (after
its first checkpoint), then resumed. The results rows (all but timings), every
variable of the final checkpoint (weights, masks, optimizer slots, random
generators) and the final replay are then exactly equal.

The kill is simulated in this process (no TensorFlow start-up per run): an
exception that no handler catches is raised from inside an environment
step, so the run stops at that point with whatever it had written, as a
SIGKILL would leave it (the lock is released by the session, which a
resume would otherwise take over from a dead process anyway).
"""

import json
import os

import numpy as np
import pytest

import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
import tensorflow as tf

import helpers
import tiny

CONFIGS = helpers.CONFIGS
# Fields of a results row that measure time, not the run.
TIMINGS = {'wall_time', 'loop_seconds', 'train_call_seconds',
           'collect_seconds', 'train_seconds', 'steps_per_second'}
KILL_SEED = 25

OFF_POLICY = [
    'train_eval.num_iterations = 120',
    'train_eval.initial_collect_steps = 40',
    'train_eval.batch_size = 16',
    'train_eval.eval_interval = 40',
    'train_eval.eval_episodes = 1',
    'train_eval.checkpoint_interval = 30',
    'train_eval.log_interval = 1000',
    'train_eval.seed = 3',
    'mask_updater.update_alg = "rigl"',
    'mask_updater.update_freq = 20',
    'mask_updater.last_update_step = 100',
    tiny.NO_POLICY,
]
PENDULUM = ["train_eval.env_name = 'Pendulum-v1'",
            'create_environment.max_episode_steps = 50']
CASES = {
    'sac': ('sac_mujoco_sparse_config.gin', OFF_POLICY + PENDULUM + [
        'train_eval.actor_fc_layers = (16, 16)',
        'train_eval.critic_joint_fc_layers = (16, 16)']),
    'td3': ('td3_mujoco_sparse_config.gin', OFF_POLICY + PENDULUM + [
        'train_eval.actor_fc_layers = (16, 16)',
        'train_eval.critic_joint_fc_layers = (16, 16)']),
    'dqn': ('dqn_gym_sparse_config.gin', OFF_POLICY + [
        "train_eval.env_name = 'CartPole-v1'",
        'train_eval.fc_layer_params = (64, 64)',  # masks that move
        'train_eval.target_update_period = 10']),
    'ppo': ('ppo_mujoco_sparse_config.gin', [
        "train_eval.env_name = 'CartPole-v1'",
        'mask_updater.update_alg = "rigl"',
        'mask_updater.update_freq = 5',
        'mask_updater.last_update_step = 30',
        'train_eval.num_iterations = 6',
        'train_eval.num_parallel_environments = 2',
        'train_eval.collect_sequence_length = 48',
        'train_eval.minibatch_size = 32',
        'train_eval.num_epochs = 2',
        'train_eval.actor_fc_layers = (16, 16)',
        'train_eval.value_fc_layers = (16, 16)',
        'train_eval.eval_interval = 2',
        'train_eval.eval_episodes = 1',
        'train_eval.checkpoint_interval = 2',
        'train_eval.seed = 3', tiny.NO_POLICY]),
}


class Killed(BaseException):
    """Stops a run from inside an environment step (no handler catches
    it)."""


@pytest.fixture
def step_counter(monkeypatch):
    """Counts environment steps (training and evaluation); raises `Killed`
    at step `kill_at` when set, and notes the count at every checkpoint."""
    from rigl.rl.tfagents import envs
    from rigl.rl.tfagents.run import checkpoints

    counter = {'steps': 0, 'kill_at': None, 'at_checkpoints': []}
    step, save = envs.GymnasiumEnvironment._step, checkpoints.Checkpointer.save

    def counted_step(self, action):
        counter['steps'] += 1
        if counter['steps'] == counter['kill_at']:
            raise Killed
        return step(self, action)

    def noted_save(self, *args, **kwargs):
        path = save(self, *args, **kwargs)
        counter['at_checkpoints'].append(counter['steps'])
        return path

    monkeypatch.setattr(envs.GymnasiumEnvironment, '_step', counted_step)
    monkeypatch.setattr(checkpoints.Checkpointer, 'save', noted_save)
    return counter


def _run(algorithm: str, root, counter, kill_at=None):
    config, bindings = CASES[algorithm]
    counter.update(steps=0, kill_at=kill_at, at_checkpoints=[])
    # Each run as in a fresh process: Keras numbers layers per process, and
    # a variable's name orders it in sums such as PPO's global gradient norm.
    tf.keras.backend.clear_session()
    code, out, err = helpers.run_in_process(
        algorithm, root, os.path.join(CONFIGS, config), bindings)
    return code, out + err


def _newest_checkpoint(root) -> str:
    directory = os.path.join(root, 'checkpoints')
    return os.path.join(directory, max(
        (name for name in os.listdir(directory) if name.startswith('ckpt-')),
        key=lambda name: int(name[len('ckpt-'):])))


def _checkpoint_variables(path: str) -> dict:
    reader = tf.train.load_checkpoint(os.path.join(path, 'tf'))
    return {name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()
            if not name.startswith('_CHECKPOINTABLE_OBJECT_GRAPH')}


def _without_timings(rows: list) -> list:
    return [{key: value for key, value in row.items() if key not in TIMINGS}
            for row in rows]


@pytest.mark.parametrize('algorithm', ['dqn', 'ppo', 'sac', 'td3'])
def test_killed_and_resumed_run_is_bit_identical(tmp_path, step_counter,
                                                  algorithm):
    straight = tmp_path / 'straight'
    code, log = _run(algorithm, straight, step_counter)
    assert code == 0, log[-3000:]
    total, at_checkpoints = (step_counter['steps'],
                             list(step_counter['at_checkpoints']))
    assert len(at_checkpoints) >= 3
    kill_at = int(np.random.default_rng(KILL_SEED).integers(
        at_checkpoints[0] + 1, at_checkpoints[-2] + 1))

    resumed = tmp_path / 'resumed'
    with pytest.raises(Killed):
        _run(algorithm, resumed, step_counter, kill_at=kill_at)
    masks_at_kill = helpers.checkpoint_masks(_newest_checkpoint(resumed))
    code, log = _run(algorithm, resumed, step_counter)
    assert code == 0, log[-3000:]
    assert 'Resumed from' in log and 'episode in progress is cut' not in log

    assert (_without_timings(helpers.results(resumed)) ==
            _without_timings(helpers.results(straight)))
    final = helpers.latest_checkpoint(straight)
    resumed_final = helpers.latest_checkpoint(resumed)
    assert os.path.basename(final) == os.path.basename(resumed_final)
    expected = _checkpoint_variables(final)
    got = _checkpoint_variables(resumed_final)
    assert sorted(got) == sorted(expected)
    different = [name for name in expected
                 if not np.array_equal(got[name], expected[name])]
    assert not different, different
    # Masks are among them, and RigL changed them after the resume.
    masks = helpers.checkpoint_masks(final)
    assert sorted(masks) == sorted(masks_at_kill)
    assert any(not np.array_equal(masks[name], masks_at_kill[name])
               for name in masks)
    if os.path.exists(os.path.join(final, 'replay.npz')):
        with np.load(os.path.join(final, 'replay.npz')) as a, np.load(
                os.path.join(resumed_final, 'replay.npz')) as b:
            for name in a.files:
                np.testing.assert_array_equal(a[name], b[name])
    with open(os.path.join(final, 'state.json')) as a, open(
            os.path.join(resumed_final, 'state.json')) as b:
        expected_state, got_state = json.load(a), json.load(b)
    for key in ('env_steps', 'episodes', 'train_flops', 'recent_returns',
                'streams'):
        assert got_state[key] == expected_state[key], key


def test_checkpoint_without_environment_state_still_resumes(
        tmp_path, step_counter):
    """A checkpoint written before environment states were saved (no
    `resume.json`) resumes as before: the episode in progress is cut, with
    one line saying so."""
    root = tmp_path / 'run'
    with pytest.raises(Killed):
        _run('dqn', root, step_counter, kill_at=140)
    newest = _newest_checkpoint(root)
    os.remove(os.path.join(newest, 'resume.json'))
    code, log = _run('dqn', root, step_counter)
    assert code == 0, log[-3000:]
    assert f'Resumed from {newest}' in log
    assert ('Resume: the checkpoint holds no environment state; the episode '
            'in progress is cut') in log
    assert helpers.results(root)[-1]['step'] == 120


def _random_actions(env, count: int, seed: int) -> list:
    spec, rng = env.action_spec(), np.random.default_rng(seed)
    if spec.dtype.kind == 'i':
        return [np.asarray(rng.integers(spec.minimum, spec.maximum + 1),
                           spec.dtype) for _ in range(count)]
    return [rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(
        spec.dtype) for _ in range(count)]


@pytest.mark.parametrize('env_name, options', [
    ('CartPole-v1', {}),
    ('Pendulum-v1', {'noise_fraction': 0.5, 'adjust_env_period': 37,
                     'max_episode_steps': 40}),
    ('Ant-v5', {'max_episode_steps': 60}),
    ('ALE/Pong-v5', {}),
])
def test_environment_state_round_trip(env_name, options):
    """A fresh environment given a saved state (through JSON) steps exactly
    as the original: observations, rewards, episode ends and resets."""
    from rigl.rl.tfagents import envs
    from rigl.rl.tfagents.run import env_state

    original = envs.create_environment(env_name, seed=1, **options)
    original.reset()
    for action in _random_actions(original, 70, seed=2):
        original.step(action)
    record = json.loads(json.dumps(env_state.capture(original)))
    actions = _random_actions(original, 150, seed=3)
    expected = [original.step(action) for action in actions]
    copy = envs.create_environment(env_name, seed=9, **options)
    copy.reset()
    copy.step(actions[0])
    env_state.restore(copy, record)
    for action, want in zip(actions, expected):
        got = copy.step(action)
        for field in want._fields:
            np.testing.assert_array_equal(getattr(got, field),
                                          getattr(want, field))
    # Episode ends are crossed too (a Pong game outlasts 220 steps).
    assert any(step.is_last() for step in expected) or 'Pong' in env_name


def test_unsupported_environment_is_refused_clearly():
    """A layer holding an object of unknown state is refused with its name;
    a saved state restores only into an environment of the same make."""
    import gymnasium
    from rigl.rl.tfagents import envs
    from rigl.rl.tfagents.run import env_state

    class Opaque(gymnasium.Wrapper):
        def __init__(self, env):
            super().__init__(env)
            self.simulator = object()

    env = envs.GymnasiumEnvironment(Opaque(gymnasium.make('CartPole-v1')))
    with pytest.raises(env_state.UnsupportedEnvironment,
                       match='Opaque.simulator holds a object'):
        env_state.capture(env)
    cartpole = envs.create_environment('CartPole-v1', seed=0)
    cartpole.reset()
    record = env_state.capture(cartpole)
    pendulum = envs.create_environment('Pendulum-v1', seed=0)
    with pytest.raises(env_state.UnsupportedEnvironment, match='CartPole'):
        env_state.restore(pendulum, record)


def test_state_of_an_environment_built_otherwise_is_refused():
    """Another time limit (a config change) refuses the saved state rather
    than keeping the old limit."""
    from rigl.rl.tfagents import envs
    from rigl.rl.tfagents.run import env_state

    env = envs.create_environment('CartPole-v1', seed=0, max_episode_steps=50)
    env.reset()
    record = env_state.capture(env)
    longer = envs.create_environment('CartPole-v1', seed=0,
                                     max_episode_steps=80)
    with pytest.raises(env_state.UnsupportedEnvironment,
                       match='_max_episode_steps = 50, this one 80'):
        env_state.restore(longer, record)
