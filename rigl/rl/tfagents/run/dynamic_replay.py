"""RLx2's dynamic-capacity replay (Tan et al. 2023, tyq1024/RLx2).

Every `interval` env steps the current policy acts, without exploration
noise, on the oldest `CHECK_BATCHES` x batch_size stored transitions, and
its actions are compared with the noise-free actions the policy took when
they were collected (a random action during the initial collection):

    distance = 0.5 * mean over transitions and action dimensions of
               ((current - stored) / half_range)^2

(`RLx2_TD3/train.py:175-188`: `F.mse_loss(actor(s) / max_action,
action_mean / max_action) / 2`; `RLx2_SAC/train.py:170-183` with the mean
action of SAC's squashed Gaussian). If the distance is above `threshold`
and the buffer holds more than `min_size` transitions, its oldest
`DROP_FRACTION` is dropped (`DST/utils.py:103-105`): once per check, so
the buffer keeps dropping its oldest tenth at each check while the policy
has moved away from its oldest data and it is above its minimum size, and
refills with new transitions otherwise.

The rule keeps no state of its own: checks fall on env-step multiples of
`interval`, and the buffer's size and oldest slot are saved with it.
"""

import dataclasses
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

# The policy is compared on the oldest CHECK_BATCHES x batch_size
# transitions (`RLx2_TD3/train.py:177-179`).
CHECK_BATCHES = 8
# The share of the stored transitions dropped at a check (`DST/utils.py:104`).
DROP_FRACTION = 0.1


def policy_distance(current: np.ndarray, stored: np.ndarray,
                    half_range: np.ndarray) -> float:
    """Half the mean squared difference of two action batches, in units of
    each dimension's half-range (RLx2's max_action for symmetric bounds).

    Args:
        current: [B, ...] the policy's actions now.
        stored: [B, ...] the noise-free actions stored with the transitions.
        half_range: per action dimension, (max - min) / 2.
    """
    difference = (np.asarray(current, np.float64) -
                  np.asarray(stored, np.float64)) / half_range
    return float(0.5 * np.mean(np.square(difference)))


@dataclasses.dataclass(frozen=True)
class DynamicCapacity:
    """The policy-distance rule (module docstring).

    Attributes:
        interval: env steps between checks (> 0).
        threshold: the distance above which the oldest transitions go.
        min_size: no drop unless the buffer holds more than this.
        check_size: how many of the oldest transitions are compared.
    """
    interval: int
    threshold: float
    min_size: int
    check_size: int

    def due(self, env_steps: int) -> bool:
        """Whether the check runs after env step `env_steps` (from 1)."""
        return env_steps % self.interval == 0

    def check(self, replay, actions_of: Callable[[np.ndarray], np.ndarray],
              half_range: np.ndarray) -> Tuple[float, int]:
        """Measures the distance on `replay` and drops its oldest
        `DROP_FRACTION` if the rule says so.

        Args:
            replay: a `ReplayBuffer` that stores policy actions.
            actions_of: the current policy's noise-free actions of a batch
                of observations.
            half_range: per action dimension, (max - min) / 2.

        Returns:
            (the distance, how many transitions were dropped).
        """
        observations, stored = replay.oldest_transitions(self.check_size)
        distance = policy_distance(actions_of(observations), stored,
                                   half_range)
        dropped = 0
        if distance > self.threshold and replay.size > self.min_size:
            dropped = replay.drop_oldest(DROP_FRACTION)
        return distance, dropped


def from_settings(settings) -> Optional[DynamicCapacity]:
    """The rule of a run's settings (`train_eval.replay_check_interval`,
    `replay_distance_threshold`, `replay_min_size`), None when off."""
    interval = getattr(settings, 'replay_check_interval', 0)
    if not interval:
        return None
    return DynamicCapacity(
        interval=interval, threshold=settings.replay_distance_threshold,
        min_size=settings.replay_min_size,
        check_size=CHECK_BATCHES * settings.batch_size)


def write_summaries(writer, step: int, distance: float, size: int) -> None:
    """TensorBoard scalars of one check (RLx2's `buffer_distance` and
    `buffer_size`)."""
    with writer.as_default(step=step):
        tf.summary.scalar('replay/policy_distance', distance)
        tf.summary.scalar('replay/size', size)
