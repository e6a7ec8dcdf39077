"""The frame replay buffer (Atari): each frame stored once, the
environment's frame stacks rebuilt when sampling, and a ring that never
mixes old and new frames."""

import numpy as np

import rigl  # noqa: F401

from rigl.rl.tfagents.run.replay import FrameReplayBuffer


def _frames_run(buffer, episodes, rng):
    """Feeds synthetic episodes whose frame value is its global index;
    returns every frame's (episode, index within episode)."""
    where = {}
    frame_id = 0
    for length in episodes:
        stack = previous = None
        for t in range(length + 1):
            frame = np.full((2, 2), frame_id % 256, np.uint8)
            where[frame_id % 256] = t
            stack = (np.repeat(frame[..., None], 4, -1) if t == 0 else
                     np.concatenate([stack[..., 1:], frame[..., None]], -1))
            if t:
                buffer.add(previous, rng.integers(3), 1.0, 1.0, stack,
                           first=t == 1)
            previous = stack
            frame_id += 1
        buffer.end_episode()
    return where


def test_frame_replay_rebuilds_the_environment_stacks():
    buffer = FrameReplayBuffer(64, (2, 2, 4), ())
    rng = np.random.default_rng(0)
    _frames_run(buffer, [5, 2, 9, 7], rng)
    # 23 transitions, 27 frames: each frame stored once (+ none twice).
    assert buffer.size == 23
    assert buffer._frames.nbytes == 64 * 2 * 2
    batch = buffer.sample(200, rng)
    for obs, next_obs in zip(batch['observation'], batch['next_observation']):
        ids = obs[0, 0]
        # Consecutive frames, the episode's first frame repeated before it.
        steps = np.diff(ids.astype(int))
        assert set(steps) <= {0, 1} and (steps == 0).sum() <= 3
        assert list(steps).count(0) == 0 or steps[0] == 0
        np.testing.assert_array_equal(next_obs[0, 0, :3], ids[1:])
        assert int(next_obs[0, 0, 3]) == int(ids[3]) + 1


def test_frame_replay_ring_never_mixes_old_and_new_frames():
    buffer = FrameReplayBuffer(16, (2, 2, 4), ())
    rng = np.random.default_rng(1)
    _frames_run(buffer, [6, 6, 6, 6, 6], rng)  # 35 frames into 16 slots
    batch = buffer.sample(500, rng)
    for obs, next_obs in zip(batch['observation'], batch['next_observation']):
        ids = obs[0, 0].astype(int)
        assert set(np.diff(ids)) <= {0, 1}, ids
        assert int(next_obs[0, 0, 3]) == ids[3] + 1


def test_frame_replay_stores_each_frame_once():
    """1M Atari transitions: one 84x84 uint8 frame each (~7 GB), against
    two float32 stacks of four (225 GB) in the plain buffer."""
    from rigl.rl.tfagents.run.replay import ReplayBuffer
    frames = FrameReplayBuffer(1_000_000, (84, 84, 4), ())
    assert 84 * 84 * 10 ** 6 <= frames.nbytes < 7.1e9
    plain = ReplayBuffer(1000, (84, 84, 4), ())
    # Two float32 stacks, action, reward, discount and the episode-end flag.
    assert plain.nbytes == 1000 * (2 * 84 * 84 * 4 * 4 + 4 + 4 + 4 + 1)
