"""RLx2 (Tan et al. 2023) by hand: the dynamic-capacity replay's
policy-distance rule, the delayed n-step switch, the settings' checks, and
a short TD3 run of configs/td3_rlx2_config.gin at tiny sizes."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import rigl  # noqa: F401

import helpers
import tiny
from rigl.rl.tfagents.algos import td3
from rigl.rl.tfagents.run import dynamic_replay
from rigl.rl.tfagents.run import n_step
from rigl.rl.tfagents.run import run_dir
from rigl.rl.tfagents.run import settings as settings_lib
from rigl.rl.tfagents.run.replay import ReplayBuffer

CONFIG = helpers.config('td3_rlx2_config.gin')
NEW_SETTINGS = ('train_eval.n_step_delay', 'train_eval.replay_check_interval',
                'train_eval.replay_min_size',
                'train_eval.replay_distance_threshold',
                'train_eval.actor_critic_sparsities_str')


def filled(count: int, capacity: int = 100) -> ReplayBuffer:
    """A buffer of `count` transitions: observation i, stored policy action
    0 (the action itself is i, to tell them apart)."""
    buffer = ReplayBuffer(capacity, (1,), (2,), policy_actions=True)
    for index in range(count):
        buffer.add([float(index)], [float(index)] * 2, 0.0, 1.0,
                   [index + 1.0], policy_action=[0.0, 0.0])
    return buffer


def test_policy_distance_by_hand():
    # 0.5 * mean(((current - stored) / half_range)^2) over rows and dims.
    current = np.array([[1.0, 0.0], [0.0, 2.0]])
    stored = np.zeros((2, 2))
    assert dynamic_replay.policy_distance(
        current, stored, np.array([1.0, 2.0])) == pytest.approx(
            0.5 * (1 + 0 + 0 + 1) / 4)


def test_drops_the_oldest_tenth_while_far_and_above_the_minimum():
    buffer = filled(50)
    rule = dynamic_replay.DynamicCapacity(interval=10, threshold=0.2,
                                          min_size=40, check_size=8)
    seen = []

    def actions_of(observations):
        seen.append(observations[:, 0].astype(int).tolist())
        return np.full((len(observations), 2), 0.8)  # distance 0.32

    sizes = []
    for _ in range(4):
        distance, dropped = rule.check(buffer, actions_of, np.ones(2))
        assert distance == pytest.approx(0.5 * 0.8 ** 2)
        sizes.append((buffer.size, dropped))
    # 50 -> 45 -> 41 -> 37, then 37 <= 40: no more.
    assert sizes == [(45, 5), (41, 4), (37, 4), (37, 0)]
    # Each check compared the oldest 8 then stored.
    assert seen[0] == list(range(8)) and seen[1] == list(range(5, 13))
    assert seen[3] == list(range(13, 21))
    # Dropped transitions are never sampled again; new ones fill the room.
    batch = buffer.sample(500, np.random.default_rng(0))
    assert batch['observation'].min() == 13
    for index in range(50, 60):
        buffer.add([float(index)], [0.0, 0.0], 0.0, 1.0, [0.0])
    assert buffer.size == 47
    assert buffer.sample(500, np.random.default_rng(1))[
        'observation'].min() == 13


def test_keeps_everything_when_close_or_small():
    rule = dynamic_replay.DynamicCapacity(interval=10, threshold=0.2,
                                          min_size=40, check_size=8)
    near = filled(50)
    distance, dropped = rule.check(
        near, lambda o: np.full((len(o), 2), 0.8), np.full(2, 2.0))
    assert distance == pytest.approx(0.5 * 0.4 ** 2) and dropped == 0
    small = filled(40)  # not above the minimum
    _, dropped = rule.check(small, lambda o: np.full((len(o), 2), 5.0),
                            np.ones(2))
    assert dropped == 0 and small.size == 40
    assert [rule.due(step) for step in (9, 10, 20, 25)] == [
        False, True, True, False]


def test_a_shrunk_buffer_survives_a_checkpoint(tmp_path):
    buffer = filled(30, capacity=20)  # wrapped: holds 10..29
    buffer.drop_oldest(0.25)  # 15..29 left
    buffer.end_episode()
    path = str(tmp_path / 'replay.npz')
    buffer.save(path)
    resumed = ReplayBuffer(20, (1,), (2,), policy_actions=True)
    resumed.load(path)
    assert (resumed.size, resumed.oldest) == (15, 0)
    observations, actions = resumed.oldest_transitions(3)
    np.testing.assert_array_equal(observations[:, 0], [15, 16, 17])
    np.testing.assert_array_equal(actions, np.zeros((3, 2)))
    for index in range(30, 35):  # into the free room first
        resumed.add([float(index)], [0.0, 0.0], 0.0, 1.0, [0.0])
    assert resumed.size == 20
    stored = resumed.sample(400, np.random.default_rng(0))['observation']
    assert set(stored[:, 0].astype(int)) == set(range(15, 35))


def test_delayed_n_step_switch_by_hand():
    # RLx2: `current_nstep = nstep if total_it >= delay_nstep else 1`.
    assert [n_step.n_step_at(t, 3, 300000) for t in (1, 299999, 300000,
                                                     300001)] == [1, 1, 3, 3]
    assert n_step.n_step_at(1, 3, 0) == 3
    # The switch applies to transitions stored before it.
    buffer = ReplayBuffer(16, (1,), (), n_step=1, gamma=0.5)
    for index in range(6):
        buffer.add([float(index)], 0.0, 1.0, 1.0, [index + 1.0])
    one = buffer.sample(20, np.random.default_rng(0))
    assert set(one['reward']) == {1.0}
    buffer.n_step = 3
    three = buffer.sample(20, np.random.default_rng(0))
    np.testing.assert_allclose(three['reward'], 1.75)  # 1 + .5 + .25
    np.testing.assert_allclose(three['discount'], 0.25)
    np.testing.assert_allclose(
        three['next_observation'] - three['observation'], 3.0)


@pytest.mark.parametrize('binding, message', [
    ('train_eval.n_step_delay = -1',
     'train_eval.n_step_delay must be an integer >= 0, got -1.'),
    ("train_eval.replay_distance_threshold = 'high'",
     'train_eval.replay_distance_threshold must be a finite number >= 0'),
    ('train_eval.replay_min_size = 2000000',
     'train_eval.replay_min_size 2000000 must be below '
     'train_eval.replay_capacity 1000000'),
    ("train_eval.actor_mask_steps = 'actor'",
     "train_eval.actor_mask_steps is 'actor'; allowed: train_steps, "
     'actor_steps, actor_steps_train_horizon.'),
    ('train_eval.actor_critic_sparsities_str = "0.9"',
     "train_eval.actor_critic_sparsities_str must be 2 comma-separated "
     "numbers, got '0.9'."),
])
def test_bad_settings_fail_in_one_line(tmp_path, binding, message):
    code, _, err = helpers.run_in_process('td3', tmp_path, CONFIG,
                                          tiny.TD3 + [binding])
    assert code == 2 and message in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_a_delay_without_n_steps_fails_clearly():
    with pytest.raises(ValueError, match='train_eval.n_step is 1'):
        settings_lib.build(td3.Td3Settings, {'n_step_delay': 10}, 'TD3')


def test_new_settings_off_are_no_config_change():
    current = settings_lib.as_bindings(settings_lib.build(
        td3.Td3Settings, {}, 'TD3'))
    saved = {key: value for key, value in current.items()
             if key not in NEW_SETTINGS}
    assert run_dir.config_changes(saved, current) == []


def expected_sizes(initial: int, steps: int, interval: int, minimum: int,
                   capacity: int) -> dict:
    """The replay's size after each env step under the rule, by hand (the
    policy always far: threshold 0)."""
    size, sizes = 0, {}
    for env_step in range(1, initial + steps + 1):
        size = min(size + 1, capacity)
        if env_step % interval == 0 and size > minimum:
            size -= int(0.1 * size)
        sizes[env_step] = size
    return sizes


def optimizer_state(path: str, name: str) -> dict:
    reader = tf.train.load_checkpoint(os.path.join(path, 'tf'))
    return {key.split('/')[-3]: reader.get_tensor(key)
            for key in reader.get_variable_to_shape_map()
            if f'{name}/' in key and 'OPTIMIZER_SLOT' not in key and
            key.split('/')[-3] in ('steps', 'last_mask_change')}


TINY_RLX2 = tiny.TD3 + [
    'train_eval.n_step_delay = 150', 'train_eval.replay_check_interval = 60',
    'train_eval.replay_min_size = 100',
    'train_eval.replay_distance_threshold = 0.0',
    'mask_updater.update_freq = 20', 'mask_updater.begin_step = 20',
    'mask_updater.last_update_step = 200']


def test_td3_rlx2_config_trains_and_records(tmp_path):
    code, out, err = helpers.run_in_process('td3', tmp_path, CONFIG,
                                            TINY_RLX2)
    assert code == 0, err[-2000:]
    with open(tmp_path / 'run.json') as f:
        record = json.load(f)
    settings = record['config']['settings']
    assert settings['train_eval.n_step'] == 3
    assert settings['train_eval.n_step_delay'] == 150
    assert settings['train_eval.replay_check_interval'] == 60
    assert settings['train_eval.actor_mask_steps'] == (
        'actor_steps_train_horizon')
    method = record['sparse_method']
    assert method['method'] == 'rigl' and method['distribution'] == (
        'erdos_renyi')
    assert method['overrides'] == {'actor': 0.95, 'critic': 0.91}
    rows = helpers.results(tmp_path)
    # One-step targets until train step 150, then 3-step.
    assert [row['n_step'] for row in rows] == [1, 3]
    sizes = expected_sizes(100, 200, 60, 100, 300)
    assert [row['replay_size'] for row in rows] == [sizes[200], sizes[300]]
    assert 'dropped the oldest 12 transitions, 108 left' in out
    saved = helpers.latest_checkpoint(tmp_path)
    with np.load(os.path.join(saved, 'replay.npz')) as replay:
        assert int(replay['size']) == sizes[300]
        assert replay['policy_action'].shape == (sizes[300], 1)
    # RigL every 20 of each optimizer's own steps from 20: the critics
    # (200 steps) last at 180; the actor (100 steps, horizon 200 / 2) at 80.
    critic = optimizer_state(saved, '_critic_optimizer')
    actor = optimizer_state(saved, '_actor_optimizer')
    assert (critic['steps'], critic['last_mask_change']) == (200, 180)
    assert (actor['steps'], actor['last_mask_change']) == (100, 80)
    # Resumed for 60 more steps: the shrunk replay goes on from its saved
    # size (one more check, at env step 360).
    code, _, err = helpers.run_in_process(
        'td3', tmp_path, CONFIG,
        TINY_RLX2 + ['train_eval.num_iterations = 260'], True)
    assert code == 0, err[-2000:]
    sizes = expected_sizes(100, 260, 60, 100, 360)
    assert helpers.results(tmp_path)[-1]['replay_size'] == sizes[360]
