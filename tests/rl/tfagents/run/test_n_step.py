"""Multi-step targets (`train_eval.n_step`) by hand: the Reverb writer's
accumulator, the numpy buffer's sample-time windows, the frame buffer's
look-ahead, resume, and short DQN and SAC runs."""

import json
import os

import numpy as np
import pytest

import rigl  # noqa: F401

import helpers
import tiny
from rigl.rl.tfagents.run import n_step
from rigl.rl.tfagents.run.replay import (FrameReplayBuffer,
                                         IncompatibleReplay, ReplayBuffer,
                                         make_replay_buffer)

CONFIGS = helpers.CONFIGS


def reference(rewards, discounts, start, n, gamma):
    """The n-step (reward, discount, steps) from `start` of one episode,
    by the definition: sum of gamma^k r over the steps inside the episode,
    gamma^(m-1) times the product of the discounts."""
    total, running, steps = 0.0, 1.0, 0
    for k in range(start, min(start + n, len(rewards))):
        total += gamma ** (k - start) * running * rewards[k]
        running *= discounts[k]
        steps += 1
    return total, gamma ** (steps - 1) * running, steps


def test_discounted_returns_by_hand():
    reward, discount = n_step.discounted_returns(
        rewards=[[1, 2, 4], [1, 2, 4], [1, 2, 4], [3, 9, 9]],
        discounts=[[1, 1, 1], [1, 0, 1], [1, 1, 0], [0.5, 9, 9]],
        lengths=np.array([3, 2, 3, 1]), gamma=0.5)
    # 1 + .5*2 + .25*4; terminal after two steps; terminal at the third;
    # one step only (the rest is another episode's).
    np.testing.assert_allclose(reward, [3.0, 2.0, 3.0, 3.0])
    np.testing.assert_allclose(discount, [0.25, 0.0, 0.0, 0.5])


@pytest.mark.parametrize('last_discount', [1.0, 0.0])  # truncated, terminal
def test_accumulator_cuts_at_the_episode_end(last_discount):
    emitted = []
    accumulator = n_step.NStepAccumulator(
        3, 0.5, lambda *transition: emitted.append(transition))
    rewards = [1.0, 2.0, 3.0, 4.0, 5.0]
    discounts = [1.0] * 4 + [last_discount]
    for t, (r, d) in enumerate(zip(rewards, discounts)):
        accumulator.add(np.float32(t), t, r, d, np.float32(t + 1))
        assert len(emitted) == max(0, t - 1)  # n - 1 steps late
    accumulator.end_episode()
    assert len(emitted) == 5 and not accumulator.pending
    for t, (observation, action, reward, discount, following) in enumerate(
            emitted):
        want_reward, want_discount, steps = reference(rewards, discounts, t,
                                                      3, 0.5)
        assert observation == t and action == t
        assert following == t + steps
        assert reward == pytest.approx(want_reward)
        assert discount == pytest.approx(want_discount)
    # By hand: t=3 is 4 + .5*5; a truncation still bootstraps, a terminal
    # step does not.
    assert emitted[3][2] == pytest.approx(6.5)
    assert emitted[3][3] == pytest.approx(0.5 * last_discount)


def _episodes(buffer, episodes, rng):
    """Feeds a numpy buffer episodes (length, last discount, ends?) whose
    observations hold their global time index; returns per index (episode
    rewards, discounts, position in the episode)."""
    info = {}
    index = 0
    for length, last_discount, ends in episodes:
        rewards = rng.normal(size=length).round(2)
        discounts = [1.0] * (length - 1) + [last_discount]
        for t in range(length):
            buffer.add([float(index)], 0.0, rewards[t], discounts[t],
                       [float(index + 1)])
            info[index] = (rewards, discounts, t)
            index += 1
        if ends:
            buffer.end_episode()
    return info


def test_replay_samples_n_step_windows_within_episodes():
    """Sample-time n-step windows by hand: cut at a terminal step (no
    bootstrap) and at a truncation (bootstrap from its last observation),
    drawn uniformly over every start but the newest n - 1."""
    buffer = ReplayBuffer(64, (1,), (), n_step=3, gamma=0.9)
    rng = np.random.default_rng(0)
    info = _episodes(buffer, [(5, 0.0, True), (4, 1.0, True),
                              (6, 1.0, False)], rng)
    batch = buffer.sample(600, rng)
    starts = batch['observation'][:, 0].astype(int)
    for start, reward, discount, following in zip(
            starts, batch['reward'], batch['discount'],
            batch['next_observation'][:, 0]):
        rewards, discounts, t = info[start]
        want_reward, want_discount, steps = reference(rewards, discounts, t,
                                                      3, 0.9)
        assert reward == pytest.approx(want_reward, abs=1e-5)
        assert discount == pytest.approx(want_discount, abs=1e-6)
        assert following == start + steps
    # RLx2's draw: every start whose 3 steps are stored (15 - 2).
    assert set(starts) == set(range(13))
    # By hand: index 3 of the first episode is r3 + .9 r4, terminal.
    rewards = info[3][0]
    row = list(starts).index(3)
    assert batch['reward'][row] == pytest.approx(rewards[3] + 0.9 * rewards[4])
    assert batch['discount'][row] == 0.0


def test_replay_n_step_can_change_and_one_step_draws_as_before():
    """n is read at each sample (RLx2's delayed switch applies to every
    stored transition); at n = 1 a sample is the uniform draw of stored
    rows the buffer always made, a wrapped buffer included."""
    buffer = ReplayBuffer(8, (1,), ())
    _episodes(buffer, [(5, 1.0, True), (6, 0.0, False)],
              np.random.default_rng(1))  # wrapped: 11 into 8
    batch = buffer.sample(32, np.random.default_rng(2))
    rows = np.random.default_rng(2).integers(0, 8, 32)
    for name in ReplayBuffer.FIELDS:
        np.testing.assert_array_equal(batch[name], buffer._data[name][rows])
    buffer.n_step = 3
    batch = buffer.sample(200, np.random.default_rng(3))
    # The oldest stored is index 3; starts 3..8 of the 8 (3..10) stored.
    assert set(batch['observation'][:, 0].astype(int)) == set(range(3, 9))
    assert (batch['next_observation'] - batch['observation'] <= 3).all()


def test_replay_resume_cuts_the_episode_in_progress(tmp_path):
    replay = ReplayBuffer(10, (1,), (), n_step=3, gamma=0.5)
    replay.add([0.0], 0, 1.0, 1.0, [1.0])
    replay.add([1.0], 1, 2.0, 1.0, [2.0])
    path = str(tmp_path / 'replay.npz')
    replay.save(path)
    resumed = ReplayBuffer(10, (1,), (), n_step=3, gamma=0.5)
    resumed.load(path)
    # The resume starts a new episode: the saved one ends at its last
    # transition, as a truncation (bootstrapping from its observation).
    resumed.add([7.0], 2, 4.0, 1.0, [8.0])
    batch = resumed.sample(50, np.random.default_rng(0))
    assert set(batch['observation'][:, 0]) == {0.0}  # starts 0 only
    np.testing.assert_allclose(batch['reward'], 2.0)  # 1 + .5 * 2
    np.testing.assert_allclose(batch['discount'], 0.5)
    np.testing.assert_allclose(batch['next_observation'][:, 0], 2.0)
    # A one-step buffer saved before episode ends were stored loads too.
    np.savez(tmp_path / 'old.npz', size=1, next=1,
             **{name: np.ones((1, 1) if 'observation' in name else (1,),
                              np.float32) for name in ReplayBuffer.FIELDS})
    resumed.load(str(tmp_path / 'old.npz'))
    assert resumed.size == 1
    # A replay of n-step transitions formed when stored (an older
    # version's, with its pending file) cannot be resumed.
    np.savez(tmp_path / 'old_pending.npz')
    with pytest.raises(IncompatibleReplay, match='n-step transitions'):
        resumed.load(str(tmp_path / 'old.npz'))


def test_make_replay_buffer_is_unchanged_at_one_step():
    import tensorflow as tf
    spec = tf.TensorSpec((3,), tf.float32)
    action = tf.TensorSpec((), tf.int64)
    assert type(make_replay_buffer(10, spec, action)) is ReplayBuffer
    assert make_replay_buffer(10, spec, action).n_step == 1
    assert make_replay_buffer(10, spec, action, n_step=3).n_step == 3


def _frame_episodes(buffer, episodes, rng):
    """Feeds episodes (length, last discount, open?) whose frames hold their
    global time index; returns per index (episode rewards, discounts,
    position in the episode, episode open?)."""
    info = {}
    frame_id = 0
    for length, last_discount, still_open in episodes:
        rewards = rng.normal(size=length).round(2)
        discounts = [1.0] * (length - 1) + [last_discount]
        stack = None
        for t in range(length + 1):
            frame = np.full((2, 2), frame_id, np.uint8)
            new = (np.repeat(frame[..., None], 4, -1) if t == 0 else
                   np.concatenate([stack[..., 1:], frame[..., None]], -1))
            if t:
                buffer.add(stack, 0, rewards[t - 1], discounts[t - 1], new,
                           first=t == 1)
                info[frame_id - 1] = (rewards, discounts, t - 1, still_open)
            stack = new
            frame_id += 1
        if not still_open:
            buffer.end_episode()
    return info


def test_frame_replay_looks_ahead_within_the_episode():
    buffer = FrameReplayBuffer(64, (2, 2, 4), (), n_step=3, gamma=0.9)
    rng = np.random.default_rng(0)
    info = _frame_episodes(buffer, [(5, 0.0, False), (4, 1.0, False),
                                    (6, 1.0, True)], rng)
    batch = buffer.sample(400, rng)
    starts = set()
    for observation, reward, discount, following in zip(
            batch['observation'], batch['reward'], batch['discount'],
            batch['next_observation']):
        start = int(observation[0, 0, -1])
        rewards, discounts, t, still_open = info[start]
        want_reward, want_discount, steps = reference(rewards, discounts, t,
                                                      3, 0.9)
        assert reward == pytest.approx(want_reward, abs=1e-5)
        assert discount == pytest.approx(want_discount, abs=1e-6)
        assert int(following[0, 0, -1]) == start + steps
        # The next stack is the environment's: consecutive frames of the
        # same episode, its first one repeated before it starts.
        assert set(np.diff(following[0, 0].astype(int))) <= {0, 1}
        assert not (still_open and t + 3 > len(rewards))  # incomplete
        starts.add(start)
    # Every complete transition is drawn: 5 + 4 + (6 - 2).
    assert len(starts) == 13


def test_frame_replay_one_step_draws_as_before():
    """n_step=1 keeps the sampling stream and values of the one-step
    buffer."""
    one = FrameReplayBuffer(64, (2, 2, 4), ())
    episodes = [(5, 0.0, False), (3, 1.0, True)]
    _frame_episodes(one, episodes, np.random.default_rng(3))
    batch = one.sample(50, np.random.default_rng(4))
    starts = batch['observation'][:, 0, 0, -1].astype(int)
    np.testing.assert_array_equal(
        batch['next_observation'][:, 0, 0, -1].astype(int), starts + 1)


def _run(algorithm, root, config, bindings):
    code, out, err = helpers.run_in_process(
        algorithm, root, os.path.join(CONFIGS, config), bindings)
    assert code == 0, err[-2000:]
    return out


def test_dqn_trains_and_records_n_step(tmp_path):
    _run('dqn', tmp_path, 'dqn_gym_dense_config.gin', tiny.DQN + [
        'train_eval.n_step = 3', 'train_eval.num_iterations = 100',
        'train_eval.initial_collect_steps = 100',
        'train_eval.fc_layer_params = (16,)', 'train_eval.batch_size = 16',
        'train_eval.eval_interval = 100', 'train_eval.eval_episodes = 1',
        'train_eval.checkpoint_interval = 50', 'log_snr.freq = 50',
        'train_eval.summary_interval = 50'])
    with open(tmp_path / 'run.json') as f:
        record = json.load(f)
    assert record['config']['settings']['train_eval.n_step'] == 3
    assert np.isfinite(helpers.results(tmp_path)[-1]['return_mean'])
    # The checkpoint holds one-step transitions and their episode ends:
    # n-step ones are formed when sampling.
    saved = helpers.latest_checkpoint(tmp_path)
    with np.load(os.path.join(saved, 'replay.npz')) as replay:
        assert set(np.unique(replay['discount'])) <= {0.0, 1.0}
        assert replay['ends'].sum() >= (replay['discount'] == 0).sum() > 0


def test_n_step_is_fixed_by_the_checkpoint(tmp_path):
    bindings = tiny.SAC + ['train_eval.num_iterations = 100']
    _run('sac', tmp_path, 'sac_mujoco_dense_config.gin', bindings)
    code, _, err = helpers.run_in_process(
        'sac', tmp_path, os.path.join(CONFIGS, 'sac_mujoco_dense_config.gin'),
        bindings + ['train_eval.num_iterations = 150',
                    'train_eval.n_step = 2'], True)
    assert code != 0
    assert "train_eval.n_step 1 -> 2" in err and 'cannot change' in err


@pytest.mark.parametrize('binding, message', [
    ('train_eval.n_step = 0', 'train_eval.n_step'),
    ('train_eval.n_step = 500', 'exceeds train_eval.initial_collect_steps'),
])
def test_bad_n_step_fails_clearly(tmp_path, binding, message):
    code, _, err = helpers.run_in_process(
        'sac', tmp_path, os.path.join(CONFIGS, 'sac_mujoco_dense_config.gin'),
        tiny.SAC + [binding])
    assert code == 2 and message in err


def test_reverb_table_receives_n_step_transitions(tmp_path):
    """A distributed actor's path: one-step transitions go through the
    accumulator into the Reverb writer, and the learner samples n-step
    ones from the table."""
    import tensorflow as tf
    from rigl.rl.tfagents.run import reverb_replay
    reverb_replay.require_reverb()
    spec = tf.TensorSpec((1,), tf.float32)
    import reverb
    # A queue: each sample takes the oldest item, so all come back once.
    table = reverb.Table.queue(
        reverb_replay.REPLAY_TABLE, max_size=100,
        signature=reverb_replay.transition_signature(spec, spec))
    server = reverb.Server(tables=[table], port=None)
    try:
        client = reverb.Client(f'localhost:{server.port}')
        writer = reverb_replay.TransitionWriter(client)
        accumulator = n_step.NStepAccumulator(2, 0.5, writer.add)
        rewards = [1.0, 2.0, 4.0]
        for t, reward in enumerate(rewards):  # a 3-step episode, truncated
            accumulator.add([float(t)], np.zeros(1, np.float32), reward, 1.0,
                            [t + 1.0])
        accumulator.end_episode()
        writer.flush()
        writer.close()
        signature = reverb_replay.transition_signature(spec, spec)
        items = [tf.nest.pack_sequence_as(signature, sample.data)
                 for sample in client.sample(reverb_replay.REPLAY_TABLE,
                                             num_samples=3,
                                             emit_timesteps=False)]
    finally:
        server.stop()
    got = sorted((float(item['observation'][0]), float(item['reward']),
                  float(item['discount']), float(item['next_observation'][0]))
                 for item in items)
    # t=0: 1 + .5*2, bootstrap .5 from s2; t=1: 2 + .5*4 from s3; t=2: the
    # episode's last step, one step from s3.
    assert got == [(0.0, 2.0, 0.5, 2.0), (1.0, 4.0, 0.5, 3.0),
                   (2.0, 4.0, 1.0, 3.0)]
