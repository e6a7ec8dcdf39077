"""Multi-step targets (`train_eval.n_step`, `train_eval.n_step_delay`).

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

The replay buffers of the single-process loop store one-step transitions
and form n-step ones when sampling: the numpy `ReplayBuffer` reads n
consecutive transitions from a uniformly drawn start and cuts the window
at the first one that ends an episode (RLx2's `ReplayBuffer.sample` and
target loop, tyq1024/RLx2 `DST/utils.py:87-97`, `RLx2_TD3/TD3.py:73-95`);
the Atari `FrameReplayBuffer` looks ahead from the sampled slot. So n may
change during a run and applies to every stored transition at once
(`n_step_at`: RLx2's delayed multi-step target). The Reverb writer of
distributed runs stores n-step transitions through an `NStepAccumulator`,
which holds the last n - 1 transitions of the episode in progress. All use
`discounted_returns`.
"""

import collections
from typing import Callable, Tuple

import numpy as np


def n_step_at(train_step: int, n_step: int, delay: int) -> int:
    """Steps per target of the `train_step`-th train step (counted from 1):
    one until the `delay`-th train step, `n_step` from it on, as RLx2's
    `current_nstep = nstep if total_it >= delay_nstep else 1`
    (`RLx2_TD3/TD3.py:60-63`). A delay of 0 or 1 uses `n_step` throughout.
    """
    return n_step if train_step >= delay else 1


def window_lengths(ends: np.ndarray) -> np.ndarray:
    """How many steps of each window belong to its first transition's
    episode.

    Args:
        ends: [B, n] bool, True where a transition ends its episode
            (terminal or truncated).

    Returns:
        [B] int: 1 + the number of leading transitions before the first
        episode end among the first n - 1 (n when there is none).
    """
    ends = np.asarray(ends, bool)
    running = np.cumprod(~ends[:, :-1], axis=1)
    return 1 + running.sum(axis=1).astype(np.int64)


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
