"""RLx2's replay-side settings, shared by TD3 and SAC (Tan et al., ICLR
2023, "RLx2: Training a Sparse Deep Reinforcement Learning Model from
Scratch"; code: github.com/tyq1024/RLx2).

RLx2 is RigL-style topology evolution (the sparse method: `mask_updater`
bindings, per-network sparsities in `train_eval.actor_critic_sparsities_str`)
plus two replay mechanisms, configured here:

- a delayed multi-step target: one-step targets until the
  `n_step_delay`-th train step, `n_step`-step ones from it on, formed when
  sampling so that the switch applies to every stored transition
  (`run.n_step`);
- a dynamic-capacity buffer: every `replay_check_interval` env steps the
  oldest tenth of the replay is dropped if the current policy's actions on
  its oldest transitions are too far from the stored ones
  (`run.dynamic_replay`). The algorithm records the noise-free action of
  each exploration step for it (`PolicyActionsMixin`).

Both are off by default. `configs/td3_rlx2_config.gin` and
`configs/sac_rlx2_config.gin` hold the paper's settings.
"""

import dataclasses

import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from rigl.rl.tfagents.algos import base
from rigl.rl.tfagents.run.settings import setting


@dataclasses.dataclass(frozen=True)
class ReplaySettings(base.OffPolicySettings):
    """Off-policy settings with RLx2's delayed n-step target and dynamic
    replay capacity (both off by default)."""
    # The t-th train step (from 1) uses one-step targets while
    # t < n_step_delay, n_step-step ones from it on (RLx2's --delay_nstep,
    # 300000 in the paper); 0: n_step throughout.
    n_step_delay: int = setting(0, low=0)
    # Env steps between dynamic-capacity checks (RLx2's
    # --buffer_adjustment_interval, 10000); 0: off, a fixed-capacity FIFO.
    replay_check_interval: int = setting(0, low=0)
    # No transitions are dropped unless the replay holds more than this
    # (RLx2's --buffer_min_size: 1e5 for TD3, 2e5 for SAC).
    replay_min_size: int = setting(100000, low=1)
    # The policy distance above which the oldest transitions are dropped
    # (RLx2's --buffer_threshold).
    replay_distance_threshold: float = setting(0.2, low=0)

    def check(self) -> None:
        super().check()
        if self.n_step_delay > 1 and self.n_step == 1:
            raise ValueError(
                f'train_eval.n_step_delay {self.n_step_delay} delays n-step '
                'targets, but train_eval.n_step is 1; set n_step > 1 or '
                'n_step_delay = 0.')
        if (self.replay_check_interval and
                self.replay_min_size >= self.replay_capacity):
            raise ValueError(
                f'train_eval.replay_min_size {self.replay_min_size} must be '
                f'below train_eval.replay_capacity {self.replay_capacity} '
                'for the dynamic replay (train_eval.replay_check_interval '
                f'{self.replay_check_interval}) to drop anything.')


def half_range(action_spec) -> np.ndarray:
    """Half-range (max - min) / 2 of each action dimension: RLx2's and
    ANF's `max_action` for symmetric bounds +-max_action."""
    low = np.broadcast_to(action_spec.minimum, action_spec.shape)
    high = np.broadcast_to(action_spec.maximum, action_spec.shape)
    return ((high - low) / 2).astype(np.float32)


class PolicyActionsMixin:
    """What the dynamic replay needs from an actor-critic algorithm: the
    noise-free action of each exploration step (`latest_policy_action`,
    recorded by `explore` through `_record_policy_action`) and the
    policy's noise-free actions on a batch (`greedy_actions`).

    Call `_init_policy_actions()` in `__init__` before `_compile()`.
    """

    _policy_action = None

    def _init_policy_actions(self) -> None:
        if not getattr(self.settings, 'replay_check_interval', 0):
            return
        spec = self.action_spec
        self._policy_action = tf.Variable(
            tf.zeros(spec.shape, spec.dtype), trainable=False,
            name='policy_action')
        # Traced once per batch size (the check's, or fewer stored).
        self._greedy = tf.function(
            lambda observations: self.eval_policy.action(ts.restart(
                observations, batch_size=observations.shape[0])).action,
            autograph=False)

    @property
    def records_policy_actions(self) -> bool:
        return self._policy_action is not None

    def _record_policy_action(self, actions: tf.Tensor) -> None:
        """In `explore` (in graph): keeps the first noise-free action of
        the batch (the loop explores one observation at a time)."""
        if self._policy_action is not None:
            self._policy_action.assign(actions[0])

    def latest_policy_action(self) -> np.ndarray:
        """The noise-free action of the last exploration step."""
        return self._policy_action.numpy()

    def greedy_actions(self, observations: np.ndarray) -> np.ndarray:
        """The policy's noise-free actions of a batch of observations."""
        return self._greedy(np.asarray(
            observations, self.observation_spec.dtype.as_numpy_dtype)).numpy()
