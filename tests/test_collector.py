"""The collector (`loops.collector`): resets, boundary steps, sinks, and
evaluation, each checked against the hand-written loop it replaced (the
same environment steps, random draws and stored transitions)."""

import numpy as np
import pytest

import rigl  # noqa: F401

from tf_agents.environments import py_environment
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts

from rigl.rl.tfagents import envs
from rigl.rl.tfagents.loops import collector as collector_lib
from rigl.rl.tfagents.loops import evaluator
from rigl.rl.tfagents.run.n_step import NStepAccumulator
from rigl.rl.tfagents.run.replay import ReplayBuffer


class Countdown(py_environment.PyEnvironment):
    """Episodes of `length` steps; the reward is the action; the
    observation counts the steps of the episode. Counts its resets."""

    def __init__(self, length: int):
        # A step after a LAST one resets, as the training environments do.
        super().__init__(handle_auto_reset=True)
        self.length, self.resets, self._t = length, 0, 0

    def observation_spec(self):
        return array_spec.ArraySpec((1,), np.float32)

    def action_spec(self):
        return array_spec.ArraySpec((), np.float32)

    def _reset(self):
        self.resets += 1
        self._t = 0
        return ts.restart(np.zeros(1, np.float32))

    def _step(self, action):
        self._t += 1
        observation = np.full(1, self._t, np.float32)
        if self._t == self.length:
            return ts.termination(observation, np.float32(action))
        return ts.transition(observation, np.float32(action))


class Recorder:
    """A sink that keeps what it is given."""

    def __init__(self):
        self.steps = []

    def add(self, time_step, action, next_step, **extras):
        self.steps.append((time_step, action, next_step, extras))


def test_reset_on_last_never_shows_a_last_step():
    env, finished = Countdown(3), []
    recorder = Recorder()
    stats = collector_lib.EpisodeStats(
        1, on_end=lambda r, n: finished.append((r, n)))
    collector = collector_lib.Collector([env], [recorder, stats])
    collector.reset()
    for action in range(1, 8):
        collector.step(np.array([action], np.float32), tag=action)
        assert not collector.time_step.is_last()[0]
    # Episodes 1+2+3 and 4+5+6; the 7th step is the next episode's first.
    assert finished == [(6.0, 3), (15.0, 3)]
    assert stats.returns[0] == 7.0 and stats.lengths[0] == 1
    assert env.resets == 3 and collector.steps == 7
    assert [extras['tag'] for *_, extras in recorder.steps] == list(
        range(1, 8))
    # Each step's time step is the previous step's next one (or a reset).
    first_types = [int(step[0].step_type[0]) for step in recorder.steps]
    assert first_types == [0, 1, 1, 0, 1, 1, 0]


def test_reset_on_last_resets_only_the_environments_that_ended():
    short, long = Countdown(2), Countdown(3)
    finished = []
    collector = collector_lib.Collector([short, long], [
        collector_lib.EpisodeStats(2, on_end=lambda r, n: finished.append(
            (float(r), n)))])
    collector.reset()
    for _ in range(6):
        collector.step(np.ones(2, np.float32))
        assert not collector_lib.is_last(collector.time_step).any()
    assert (short.resets, long.resets) == (4, 3)
    assert finished == [(2.0, 2), (3.0, 3), (2.0, 2), (2.0, 2), (3.0, 3)]


def test_boundary_steps_reach_sinks_but_not_episode_statistics():
    """N environments that reset themselves on the step after LAST (PPO):
    as the on-policy loop's hand-written statistics were."""
    lengths = (2, 3)
    collected = collector_lib.Collector(
        [Countdown(n) for n in lengths], reset_on_last=False)
    finished = []
    stats = collector_lib.EpisodeStats(
        2, on_end=lambda r, n: finished.append((float(r), n)))
    recorder = Recorder()
    collected.sinks = [recorder, stats]
    collected.reset()
    for _ in range(7):
        collected.step(np.ones(2, np.float32))
    # Env 0: steps 1, 2 (LAST), boundary, 1, 2 (LAST), boundary, 1.
    # Env 1: steps 1, 2, 3 (LAST), boundary, 1, 2, 3 (LAST).
    assert sorted(finished) == [(2.0, 2), (2.0, 2), (3.0, 3), (3.0, 3)]
    assert list(stats.lengths) == [1, 0]
    assert len(recorder.steps) == 7
    assert recorder.steps[2][0].is_last()[0]  # a boundary step, recorded

    # The on-policy loop's former statistics, by hand.
    returns, counts = np.zeros(2), np.zeros(2, np.int64)
    expected = []
    for time_step, _, next_step, _ in recorder.steps:
        in_episode = ~time_step.is_last()
        returns += np.where(in_episode, next_step.reward, 0.0)
        counts += in_episode
        for index in np.flatnonzero(next_step.is_last()):
            expected.append((float(returns[index]), int(counts[index])))
            returns[index] = counts[index] = 0
    assert finished == expected


def test_run_episodes_does_not_reset_after_the_last_episode():
    env = Countdown(4)
    collector = collector_lib.Collector([env], reset_on_last=False)
    collector.run_episodes(lambda observation: np.ones(1, np.float32), 3)
    assert env.resets == 3 and collector.steps == 12
    assert collector.time_step.is_last()[0]
    with pytest.raises(ValueError, match='reset_on_last=False'):
        collector_lib.Collector([env]).run_episodes(None, 1)


def _former_evaluate(env, action_fn, num_episodes):
    """`run.summaries.evaluate` before the collector."""
    returns, lengths = [], []
    for _ in range(num_episodes):
        time_step = env.reset()
        total, length = 0.0, 0
        while not time_step.is_last():
            time_step = env.step(action_fn(time_step.observation))
            total += float(time_step.reward)
            length += 1
        returns.append(total)
        lengths.append(length)
    return {'return_mean': float(np.mean(returns)),
            'return_std': float(np.std(returns)),
            'episode_length': float(np.mean(lengths))}


def test_evaluate_plays_as_the_former_loop():
    """Same statistics, and the environment's random stream ends where it
    did (a resumed run's next evaluation depends on it)."""
    def action_fn(observation):
        return np.int64(observation[2] > 0)

    got_env = envs.create_environment('CartPole-v1', seed=5)
    want_env = envs.create_environment('CartPole-v1', seed=5)
    got = evaluator.evaluate(got_env, action_fn, 3)
    want = _former_evaluate(want_env, action_fn, 3)
    assert got == want
    assert got_env.rng_state() == want_env.rng_state()


def _off_policy_reference(env, rng, num_steps):
    """The off-policy loop's former `env_step` closure, with random
    actions: the replay's arrays and the finished episodes."""
    replay = ReplayBuffer(500, (4,), (), np.int64)
    finished = []
    time_step, total, length = env.reset(), 0.0, 0
    for _ in range(num_steps):
        action = np.int64(rng.integers(2))
        next_step = env.step(action)
        replay.add(time_step.observation, action, next_step.reward,
                   next_step.discount, next_step.observation,
                   first=time_step.step_type == ts.StepType.FIRST)
        total += float(next_step.reward)
        length += 1
        if next_step.is_last():
            finished.append((total, length))
            replay.end_episode()
            total, length = 0.0, 0
            next_step = env.reset()
        time_step = next_step
    return replay, finished


def test_replay_and_episodes_as_the_former_off_policy_loop(tmp_path):
    reference, want_finished = _off_policy_reference(
        envs.create_environment('CartPole-v1', seed=2),
        np.random.default_rng(0), 300)
    replay = ReplayBuffer(500, (4,), (), np.int64)
    finished = []
    rng = np.random.default_rng(0)
    collector = collector_lib.Collector(
        [envs.create_environment('CartPole-v1', seed=2)],
        [collector_lib.ReplaySink(replay),
         collector_lib.EpisodeStats(
             1, on_end=lambda r, n: finished.append((float(r), n)))])
    collector.reset()
    collector.collect(lambda observation: np.int64(rng.integers(2))[None],
                      300)
    assert finished == want_finished and len(finished) > 3
    reference.save(str(tmp_path / 'want.npz'))
    replay.save(str(tmp_path / 'got.npz'))
    with np.load(tmp_path / 'want.npz') as want, np.load(
            tmp_path / 'got.npz') as got:
        assert want.files == got.files
        for name in want.files:
            np.testing.assert_array_equal(got[name], want[name])


def test_replay_sink_options():
    """No `first=` for an n-step accumulator; the noise-free action is
    passed on only when given."""
    emitted = []
    accumulator = NStepAccumulator(2, 0.5, lambda *t: emitted.append(t))
    collector = collector_lib.Collector(
        [Countdown(3)], [collector_lib.ReplaySink(accumulator,
                                                  marks_first=False)])
    collector.reset()
    collector.collect(lambda observation: np.full(1, 2.0, np.float32), 3)
    # Two-step sums 2 + 0.5 * 2, then the episode's last step alone.
    assert [float(t[2]) for t in emitted] == [3.0, 3.0, 2.0]

    replay = ReplayBuffer(10, (1,), (), np.float32, policy_actions=True)
    collector = collector_lib.Collector([Countdown(3)],
                                        [collector_lib.ReplaySink(replay)])
    collector.reset()
    collector.step(np.full(1, 2.0, np.float32), policy_action=0.5)
    collector.step(np.full(1, 3.0, np.float32))
    _, stored = replay.oldest_transitions(2)
    np.testing.assert_array_equal(stored.ravel(), [0.5, 3.0])


def test_step_callback_and_resumed_statistics():
    calls = []
    stats = collector_lib.EpisodeStats(1, on_end=lambda r, n: calls.append(
        ('end', float(r), n)))
    stats.set_state(10.0, 2)  # an episode in progress at a resume
    collector = collector_lib.Collector(
        [Countdown(3)], [collector_lib.StepCallback(
            lambda: calls.append('step')), stats])
    collector.reset()
    collector.collect(lambda observation: np.ones(1, np.float32), 3)
    assert calls == ['step', 'step', 'step', ('end', 13.0, 5)]
