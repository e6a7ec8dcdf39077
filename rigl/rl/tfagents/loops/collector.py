"""The collector: the one place that steps environments.

A `Collector` holds one or more environments and their current time steps,
stacked (one row per environment). `step(actions)` steps every environment
with its action and hands the step (time step, actions, next time step) to
each of its sinks in order. Sinks are small objects with one method,
`add(time_step, action, next_step, **extras)`:

  ReplaySink      stores transitions in a replay (the numpy buffers, or an
                  n-step accumulator in front of a Reverb writer) and marks
                  where episodes end
  EpisodeStats    adds up each environment's episode return and length and
                  reports every finished episode (e.g. `Session.episode_done`)
  StepCallback    calls a function after every step (counters, checks)

Every loop steps its environments through a collector:

  off-policy loop   one environment, reset as soon as an episode ends;
                    sinks: replay, env-step counter, episode statistics
  on-policy loop    N environments that reset themselves on the step after
                    a LAST one (TF-Agents' boundary steps, which PPO's
                    trajectories keep); sinks: trajectories, statistics
  Reverb actor      one environment; sinks: n-step accumulator -> Reverb,
                    episode statistics -> the actor's counters
  evaluation        one environment, whole episodes (`run_episodes`)

Why one object: resets, the boundary-step rule of episode statistics and
the order of random draws (actions first, then the environment's own
stream) are decided here once, so the loops cannot drift apart.
"""

from typing import Callable, Optional, Protocol, Sequence

import numpy as np
from tf_agents.trajectories import time_step as ts

# observations (one row per environment) -> actions (one row per environment)
ActFn = Callable[[np.ndarray], np.ndarray]


class Sink(Protocol):
    """What a collector feeds: every step of its environments."""

    def add(self, time_step: ts.TimeStep, action: np.ndarray,
            next_step: ts.TimeStep, **extras) -> None:
        """Takes one step of every environment (stacked time steps and
        actions); `extras` are what the loop passed to `Collector.step`
        (each sink picks the ones it knows)."""


def is_last(time_step: ts.TimeStep) -> np.ndarray:
    """True for each environment whose episode ended at `time_step`.

    (`TimeStep.is_last` does the same through type checks that cost
    about 30 us per call, half a MuJoCo step.)
    """
    return time_step.step_type == ts.StepType.LAST


def _batched(time_step: ts.TimeStep) -> ts.TimeStep:
    """One environment's time step as a batch of one (views, no copies)."""
    return ts.TimeStep(*(np.asarray(field)[None] for field in time_step))


def _stacked(time_steps: Sequence[ts.TimeStep]) -> ts.TimeStep:
    # TF-Agents' BatchedPyEnvironment does the same generically, at ~0.2 ms
    # per step more than MuJoCo's own step.
    if len(time_steps) == 1:
        return _batched(time_steps[0])
    return ts.TimeStep(*(np.stack(field) for field in zip(*time_steps)))


class Collector:
    """Steps environments with actions and feeds every step to sinks.

    Args:
        envs: the environments (TF-Agents `PyEnvironment`s).
        sinks: fed in this order after every step.
        reset_on_last: True: an environment whose episode ended is reset at
            once, so the current time step is never LAST. False: it stays
            at its LAST step; the next `step` is then TF-Agents' boundary
            step (the environment resets itself, ignoring the action), or
            the caller calls `reset`.
    """

    def __init__(self, envs: Sequence, sinks: Sequence[Sink] = (),
                 reset_on_last: bool = True):
        self.envs = list(envs)
        self.sinks = list(sinks)
        self._reset_on_last = reset_on_last
        self.time_step: Optional[ts.TimeStep] = None
        self.steps = 0  # env steps taken, over all environments

    @property
    def observation(self) -> np.ndarray:
        """The current observations, one row per environment."""
        return self.time_step.observation

    def reset(self) -> ts.TimeStep:
        """Starts a new episode in every environment."""
        self.time_step = _stacked([env.reset() for env in self.envs])
        return self.time_step

    def resume(self) -> ts.TimeStep:
        """Goes on from where the environments are (e.g. restored from a
        checkpoint with the episodes in progress)."""
        self.time_step = _stacked([env.current_time_step()
                                   for env in self.envs])
        return self.time_step

    def step(self, actions: np.ndarray, **extras) -> ts.TimeStep:
        """Steps environment i with `actions[i]` and feeds the step to the
        sinks (with `extras`); returns the new current time step."""
        if len(self.envs) == 1:
            next_step = _batched(self.envs[0].step(actions[0]))
        else:
            next_step = _stacked([env.step(action)
                                  for env, action in zip(self.envs, actions)])
        self.steps += len(self.envs)
        for sink in self.sinks:
            sink.add(self.time_step, actions, next_step, **extras)
        if self._reset_on_last and is_last(next_step).any():
            next_step = _stacked([
                env.reset() if last else env.current_time_step()
                for env, last in zip(self.envs, is_last(next_step))])
        self.time_step = next_step
        return next_step

    def collect(self, act: ActFn, num_steps: int) -> None:
        """`num_steps` steps, each with the actions `act` gives for the
        current observations."""
        for _ in range(num_steps):
            self.step(act(self.observation))

    def run_episodes(self, act: ActFn, num_episodes: int) -> None:
        """Plays `num_episodes` whole episodes of one environment, each
        from a reset, and stops at the last one's end (no reset after it:
        the environment's random stream is left where the episodes took
        it). Needs `reset_on_last=False`."""
        if self._reset_on_last or len(self.envs) != 1:
            raise ValueError('run_episodes needs one environment and '
                             'reset_on_last=False.')
        for _ in range(num_episodes):
            self.reset()
            while not is_last(self.time_step)[0]:
                self.step(act(self.observation))


class ReplaySink:
    """Stores the (first) environment's steps as one-step transitions.

    Args:
        replay: anything with `add(observation, action, reward, discount,
            next_observation, **kwargs)` and `end_episode()`: the numpy
            `ReplayBuffer` and `FrameReplayBuffer`, or an `NStepAccumulator`
            in front of a Reverb writer.
        marks_first: pass `first=` (True on an episode's first transition)
            to `add`: the numpy buffers take it (frame stacks start there).
    """

    def __init__(self, replay, marks_first: bool = True):
        self.replay = replay
        self._marks_first = marks_first

    def add(self, time_step: ts.TimeStep, action: np.ndarray,
            next_step: ts.TimeStep, policy_action=None, **extras) -> None:
        """Stores the transition; `policy_action` (the noise-free action,
        for replays that keep them) is passed on when given."""
        del extras
        kwargs = {}
        if self._marks_first:
            kwargs['first'] = bool(time_step.step_type[0] ==
                                   ts.StepType.FIRST)
        if policy_action is not None:
            kwargs['policy_action'] = policy_action
        self.replay.add(time_step.observation[0], action[0],
                        next_step.reward[0], next_step.discount[0],
                        next_step.observation[0], **kwargs)
        if is_last(next_step)[0]:
            self.replay.end_episode()


class EpisodeStats:
    """Return and length of each environment's episode in progress.

    Reports every finished episode to `on_end(episode_return, length)`.
    A step taken from a LAST time step is a boundary step (the environment
    only resets): it adds no reward and no length.

    Args:
        num_envs: environments of the collector.
        on_end: called with each finished episode's return and length.
    """

    def __init__(self, num_envs: int = 1,
                 on_end: Optional[Callable[[float, int], None]] = None):
        self.returns = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, np.int64)
        self._on_end = on_end

    def set_state(self, returns, lengths) -> None:
        """Continues episodes in progress (after a resume)."""
        self.returns[:] = returns
        self.lengths[:] = lengths

    def add(self, time_step: ts.TimeStep, action: np.ndarray,
            next_step: ts.TimeStep, **extras) -> None:
        del action, extras
        in_episode = ~is_last(time_step)
        if in_episode.all():  # no boundary step (the common case, faster)
            self.returns += next_step.reward
            self.lengths += 1
        else:
            self.returns += np.where(in_episode, next_step.reward, 0.0)
            self.lengths += in_episode
        ended = is_last(next_step)
        if ended.any():
            for index in np.flatnonzero(ended):
                if self._on_end is not None:
                    self._on_end(self.returns[index],
                                 int(self.lengths[index]))
                self.returns[index] = self.lengths[index] = 0


class StepCallback:
    """Calls `fn()` after every step (counters, periodic checks)."""

    def __init__(self, fn: Callable[[], None]):
        self._fn = fn

    def add(self, time_step: ts.TimeStep, action: np.ndarray,
            next_step: ts.TimeStep, **extras) -> None:
        del time_step, action, next_step, extras
        self._fn()
