"""A checkpointed replay restored into a larger buffer (a run extended with
`--allow_config_change` and more iterations) holds the same transitions,
oldest first, and new ones fill the free room before any is overwritten."""

import numpy as np

import rigl  # noqa: F401

from rigl.rl.tfagents.run.replay import FrameReplayBuffer, ReplayBuffer
from test_frame_replay import _frames_run


def add(buffer, rewards):
    for reward in rewards:
        observation = np.full(3, reward, np.float32)
        buffer.add(observation, np.zeros(1, np.float32), reward, 1.0,
                   observation + 1)


def stored_rewards(buffer):
    return sorted(buffer._data['reward'][:buffer.size].tolist())


def test_full_buffer_restores_oldest_first_into_a_larger_one(tmp_path):
    old = ReplayBuffer(5, (3,), (1,))
    add(old, range(8))  # wrapped: holds 3..7, oldest at slot 3
    old.save(tmp_path / 'replay.npz')
    new = ReplayBuffer(10, (3,), (1,))
    new.load(tmp_path / 'replay.npz')
    assert new.size == 5
    np.testing.assert_array_equal(new._data['reward'][:5], [3, 4, 5, 6, 7])
    add(new, range(8, 13))  # fills the free room
    assert new.size == 10 and stored_rewards(new) == list(range(3, 13))
    add(new, [13])  # now the oldest (3) goes first
    assert stored_rewards(new) == list(range(4, 14))
    # No sample is ever a never-written row.
    batch = new.sample(500, np.random.default_rng(0))
    np.testing.assert_array_equal(batch['observation'][:, 0],
                                  batch['reward'])
    assert batch['reward'].min() >= 4


def test_partly_filled_and_same_size_restores_are_unchanged(tmp_path):
    old = ReplayBuffer(8, (3,), (1,))
    add(old, range(5))
    old.save(tmp_path / 'partial.npz')
    new = ReplayBuffer(8, (3,), (1,))
    new.load(tmp_path / 'partial.npz')
    assert (new.size, new._next) == (5, 5)
    add(old, range(5, 11))
    add(new, range(5, 11))
    for name in ReplayBuffer.FIELDS:
        np.testing.assert_array_equal(
            np.sort(new._data[name], axis=0), np.sort(old._data[name], axis=0))


def transitions(buffer):
    """Every stored transition as (observation ids, next ids, action)."""
    slots = np.flatnonzero(buffer._valid)
    observation = buffer._stacks(slots)
    following = (slots + 1) % buffer.capacity
    return sorted(
        (tuple(o[0, 0]), int(buffer._frames[f][0, 0]), int(a))
        for o, f, a in zip(observation, following, buffer._action[slots]))


def test_frame_buffer_restores_into_a_larger_one(tmp_path):
    rng = np.random.default_rng(1)
    old = FrameReplayBuffer(16, (2, 2, 4), ())
    _frames_run(old, [6, 6, 6, 6, 6], rng)  # 35 frames into 16 slots
    old.save(tmp_path / 'frames.npz')
    new = FrameReplayBuffer(40, (2, 2, 4), ())
    new.load(tmp_path / 'frames.npz')
    assert new.size == old.size
    assert transitions(new) == transitions(old)
    # More frames: every old transition survives while there is room.
    before = transitions(new)
    _frames_run(new, [6, 6], rng)  # 14 frames into the 24 free slots
    assert set(before) <= set(transitions(new))
    assert new.size == old.size + 12
