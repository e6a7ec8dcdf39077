"""Multi-step targets, formed in replay (`train_eval.n_step`).

An n-step transition starting at time t holds, for the m <= n steps that
follow within its episode,

    reward   = sum_{k<m} gamma^k (d_t ... d_{t+k-1}) r_{t+k}
    discount = gamma^(m-1) d_t ... d_{t+m-1}
    next_observation = s_{t+m},

so the agents' usual target `reward + gamma * discount * V(next)` becomes
the n-step target sum_k gamma^k r_{t+k} + gamma^m d V(s_{t+m}) with no change
to their losses (the per-example loss used for SNR included). m is cut short
at the episode's end: after a terminal step (d = 0) nothing is bootstrapped,
after a time-limit truncation (d = 1) the target still bootstraps from the
last observation.

Streams of whole transitions (the numpy `ReplayBuffer`, the Reverb writer)
go through an `NStepAccumulator`, which holds the last n - 1 transitions of
the episode in progress. The Atari `FrameReplayBuffer` stores each frame
once, so it looks ahead from the sampled slot instead; both use
`discounted_returns`.
"""

import collections
from typing import Callable, Tuple

import numpy as np


def discounted_returns(rewards: np.ndarray, discounts: np.ndarray,
                       lengths: np.ndarray,
                       gamma: float) -> Tuple[np.ndarray, np.ndarray]:
    """The n-step reward and discount of each row.

    Args:
        rewards: [B, n] rewards r_t .. r_{t+n-1}.
        discounts: [B, n] the environment's discounts d_t .. d_{t+n-1}.
        lengths: [B] how many of the n steps belong to the episode (1..n).
        gamma: the agent's discount factor.

    Returns:
        ([B] rewards, [B] discounts), float32, as in the module docstring.
    """
    rewards = np.asarray(rewards, np.float64)
    steps = rewards.shape[1]
    inside = np.arange(steps)[None, :] < np.asarray(lengths)[:, None]
    discounts = np.where(inside, np.asarray(discounts, np.float64), 1.0)
    # prod_{j<k} d_j: the chance the episode is still running at step k.
    running = np.cumprod(np.concatenate(
        [np.ones_like(discounts[:, :1]), discounts[:, :-1]], axis=1), axis=1)
    powers = gamma ** np.arange(steps)
    reward = np.sum(np.where(inside, powers * running * rewards, 0.0), axis=1)
    discount = gamma ** (np.asarray(lengths) - 1) * np.prod(discounts, axis=1)
    return reward.astype(np.float32), discount.astype(np.float32)


Transition = Tuple  # (observation, action, reward, discount, next_observation)


class NStepAccumulator:
    """Turns a stream of one-step transitions into n-step ones.

    Each n-step transition is passed to `emit(observation, action, reward,
    discount, next_observation)` once its n steps are known, or when its
    episode ends (`end_episode`) with fewer.
    """

    def __init__(self, n_step: int, gamma: float,
                 emit: Callable[..., None]):
        if n_step < 1:
            raise ValueError(f'train_eval.n_step must be >= 1, got {n_step}.')
        self.n_step, self.gamma, self._emit = n_step, gamma, emit
        self._pending = collections.deque()

    @property
    def pending(self) -> list:
        """The transitions of the episode in progress not yet emitted."""
        return list(self._pending)

    def add(self, observation, action, reward, discount,
            next_observation) -> None:
        self._pending.append((np.array(observation), np.array(action),
                              float(reward), float(discount),
                              np.array(next_observation)))
        if len(self._pending) == self.n_step:
            self._emit_oldest()

    def end_episode(self) -> None:
        """Emits the episode's remaining transitions with shorter horizons."""
        while self._pending:
            self._emit_oldest()

    def clear(self) -> None:
        """Forgets the pending transitions."""
        self._pending.clear()

    def _emit_oldest(self) -> None:
        window = list(self._pending)
        rewards = np.array([[step[2] for step in window]])
        discounts = np.array([[step[3] for step in window]])
        reward, discount = discounted_returns(
            rewards, discounts, np.array([len(window)]), self.gamma)
        observation, action = window[0][:2]
        self._emit(observation, action, reward[0], discount[0], window[-1][4])
        self._pending.popleft()


class NStepReplay:
    """A numpy `ReplayBuffer` that stores n-step transitions.

    Transitions reach the buffer n - 1 steps late. The pending ones are
    saved with the buffer; on load they are stored as cut at the checkpoint,
    the way a resume cuts the episode in progress, so none is lost.
    """

    def __init__(self, buffer, n_step: int, gamma: float):
        self.buffer = buffer
        self._accumulator = NStepAccumulator(n_step, gamma, self._store)

    def _store(self, observation, action, reward, discount,
               next_observation) -> None:
        self.buffer.add(observation, action, reward, discount,
                        next_observation)

    def __getattr__(self, name):
        # capacity, size, nbytes, sample: the buffer's own.
        return getattr(self.buffer, name)

    def add(self, observation, action, reward, discount,
            next_observation, first: bool = False) -> None:
        del first  # whole observations are stored
        self._accumulator.add(observation, action, reward, discount,
                              next_observation)

    def end_episode(self) -> None:
        self._accumulator.end_episode()
        self.buffer.end_episode()

    def clear(self) -> None:
        self._accumulator.clear()
        self.buffer.clear()

    @staticmethod
    def pending_path(path: str) -> str:
        """Where the pending transitions of the buffer saved at `path` go."""
        return path[:-len('.npz')] + '_pending.npz'

    def save(self, path: str) -> None:
        self.buffer.save(path)
        pending = self._accumulator.pending
        fields = zip(*pending) if pending else [()] * 5
        np.savez(self.pending_path(path), **{
            name: np.array(values) for name, values in zip(
                self.buffer.FIELDS, fields)})

    def load(self, path: str) -> None:
        self.buffer.load(path)
        self._accumulator.clear()
        try:
            saved = np.load(self.pending_path(path))
        except FileNotFoundError:  # saved by a run without n-step returns
            return
        with saved:
            columns = [saved[name] for name in self.buffer.FIELDS]
        for transition in zip(*columns):
            self._accumulator.add(*transition)
        self._accumulator.end_episode()
