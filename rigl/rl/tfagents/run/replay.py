"""Uniform replay buffers of the off-policy loop, saved with checkpoints."""

import os
from typing import Dict, Sequence, Tuple

import numpy as np

from rigl.rl.tfagents.run import n_step as n_step_lib


class IncompatibleReplay(ValueError):
    """Saved replay data that this run's buffer cannot hold."""


class ReplayBuffer:
    """A numpy ring buffer of one-step transitions, oldest dropped first.

    Samples are `n_step`-step transitions formed from consecutive stored
    ones (`n_step.discounted_returns`); `n_step` may change between samples
    (RLx2's delayed multi-step target). With n = 1 a sample is a uniform
    draw of stored transitions; with n > 1 a uniform draw of the starts
    whose n steps are all stored (all but the newest n - 1, as RLx2's
    `ReplayBuffer.sample`, `DST/utils.py:87-88`), each window cut at the
    first transition that ends an episode (`end_episode`).

    The buffer holds its `size` newest transitions. `drop_oldest` shrinks it
    (RLx2's dynamic capacity, `run.dynamic_replay`); new transitions then
    fill the free room before any is overwritten. With `policy_actions` it
    also stores the policy's noise-free action of each transition.

    Args:
        capacity: most transitions held.
        observation_shape, action_shape, action_dtype: of one transition.
        n_step: steps per sampled transition (see above).
        gamma: the discount of the n-step rewards.
        policy_actions: also store a noise-free policy action per
            transition (`add(..., policy_action=...)`).
    """

    FIELDS = ('observation', 'action', 'reward', 'discount',
              'next_observation')

    def __init__(self, capacity: int, observation_shape: Sequence[int],
                 action_shape: Sequence[int], action_dtype=np.float32,
                 n_step: int = 1, gamma: float = 0.99,
                 policy_actions: bool = False):
        if capacity <= 0:
            raise ValueError(
                f'replay_capacity must be positive, got {capacity}.')
        if not 1 <= n_step <= capacity:
            raise ValueError(f'train_eval.n_step must be in 1..{capacity} for '
                             f'this replay, got {n_step}.')
        self.capacity = int(capacity)
        self.n_step, self._gamma = int(n_step), float(gamma)
        self._data = {
            'observation': np.zeros((capacity, *observation_shape),
                                    np.float32),
            'action': np.zeros((capacity, *action_shape), action_dtype),
            'reward': np.zeros((capacity,), np.float32),
            'discount': np.zeros((capacity,), np.float32),
            'next_observation': np.zeros((capacity, *observation_shape),
                                         np.float32),
        }
        self._ends = np.zeros((capacity,), bool)  # transition ends its episode
        self._policy_action = (np.zeros((capacity, *action_shape), np.float32)
                               if policy_actions else None)
        self.size = 0
        self._next = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the buffer's arrays (allocated at full capacity)."""
        arrays = list(self._data.values()) + [self._ends]
        if self._policy_action is not None:
            arrays.append(self._policy_action)
        return sum(array.nbytes for array in arrays)

    @property
    def oldest(self) -> int:
        """The slot of the oldest stored transition."""
        return (self._next - self.size) % self.capacity

    def add(self, observation, action, reward, discount,
            next_observation, first: bool = False,
            policy_action=None) -> None:
        """Stores a transition (`policy_action`: its noise-free policy
        action, stored when the buffer keeps them; default `action`)."""
        del first  # whole observations are stored
        index = self._next
        data = self._data
        data['observation'][index] = observation
        data['action'][index] = action
        data['reward'][index] = reward
        data['discount'][index] = discount
        data['next_observation'][index] = next_observation
        self._ends[index] = False
        if self._policy_action is not None:
            self._policy_action[index] = (action if policy_action is None
                                          else policy_action)
        self._next = (index + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def end_episode(self) -> None:
        """The newest transition ends its episode: n-step windows stop
        there."""
        if self.size:
            self._ends[(self._next - 1) % self.capacity] = True

    def continue_episode(self) -> None:
        """Undoes the `end_episode` of `load`: the newest transition's
        episode goes on (a resume that continues the episode in
        progress)."""
        if self.size:
            self._ends[(self._next - 1) % self.capacity] = False

    def clear(self) -> None:
        """Forgets every transition."""
        self.size = self._next = 0

    def sample(self, batch_size: int, rng: np.random.Generator) -> Dict:
        """`batch_size` uniformly drawn `n_step`-step transitions."""
        if self.n_step > 1:
            return self._sample_windows(batch_size, rng)
        indices = rng.integers(0, self.size, batch_size)
        if self.size < self.capacity and self._next != self.size:
            indices = (indices + self.oldest) % self.capacity  # after a drop
        return {name: array[indices] for name, array in self._data.items()}

    def _sample_windows(self, batch_size: int,
                        rng: np.random.Generator) -> Dict:
        starts = self.size - self.n_step + 1
        if starts <= 0:
            raise ValueError(f'cannot sample {self.n_step}-step transitions: '
                             f'the replay holds {self.size}.')
        first = (self.oldest + rng.integers(0, starts, batch_size)
                 ) % self.capacity
        window = (first[:, None] + np.arange(self.n_step)) % self.capacity
        lengths = n_step_lib.window_lengths(self._ends[window])
        data = self._data
        reward, discount = n_step_lib.discounted_returns(
            data['reward'][window], data['discount'][window], lengths,
            self._gamma)
        last = window[np.arange(batch_size), lengths - 1]
        return {'observation': data['observation'][first],
                'action': data['action'][first], 'reward': reward,
                'discount': discount,
                'next_observation': data['next_observation'][last]}

    def oldest_transitions(self, count: int) -> Tuple[np.ndarray, np.ndarray]:
        """(observations, stored policy actions) of the oldest `count`
        transitions (all if fewer are stored)."""
        if self._policy_action is None:
            raise ValueError('this replay stores no policy actions.')
        indices = (self.oldest + np.arange(min(count, self.size))
                   ) % self.capacity
        return (self._data['observation'][indices],
                self._policy_action[indices])

    def drop_oldest(self, fraction: float) -> int:
        """Forgets the oldest int(fraction * size) transitions (RLx2's
        `ReplayBuffer.shrink`, `DST/utils.py:103-105`); returns how many."""
        dropped = int(fraction * self.size)
        self.size -= dropped
        return dropped

    def _ordered(self) -> np.ndarray:
        """The slots of the stored transitions, oldest first."""
        return (self.oldest + np.arange(self.size)) % self.capacity

    def save(self, path: str) -> None:
        """Saves the stored transitions oldest first, with their episode
        ends (and policy actions)."""
        order = self._ordered()
        extra = ({} if self._policy_action is None else
                 {'policy_action': self._policy_action[order]})
        np.savez(path, size=self.size, next=self.size, ends=self._ends[order],
                 **extra, **{name: array[order] for name, array in
                             self._data.items()})

    def load(self, path: str) -> None:
        """Loads a saved buffer, into a larger one too (a run extended
        with more iterations): the transitions go in oldest first, so new
        ones fill the free room before overwriting the oldest. The newest
        saved transition ends its episode: a resume starts a new one.
        Raises `IncompatibleReplay` if they cannot fit."""
        if os.path.exists(str(path)[:-len('.npz')] + '_pending.npz'):
            raise IncompatibleReplay(
                'the checkpoint\'s replay holds n-step transitions formed '
                'when stored (before n-step targets were formed when '
                'sampling); resume it with the version that wrote it, or '
                'start a new run.')
        with np.load(path) as saved:
            size, next_index = int(saved['size']), int(saved['next'])
            if size > self.capacity:
                raise IncompatibleReplay(
                    f'the checkpoint holds {size} transitions but the replay '
                    f'buffer now has room for {self.capacity}; keep '
                    'train_eval.replay_capacity and num_iterations as they '
                    'were.')
            arrays = {name: saved[name] for name in self.FIELDS}
            extra = {name: saved[name] for name in ('ends', 'policy_action')
                     if name in saved.files}
        for name, array in arrays.items():
            if array.shape[1:] != self._data[name].shape[1:]:
                raise IncompatibleReplay(
                    f'saved replay field {name!r} has shape '
                    f'{array.shape[1:]}, '
                    f'this run needs {self._data[name].shape[1:]}.')
        # Oldest first: a buffer saved full by an older version has its
        # oldest transition at `next`; one that never filled, or saved
        # oldest first, has next == size (a roll by its length).
        for name, array in arrays.items():
            self._data[name][:size] = np.roll(array, -next_index, axis=0)
        self._ends[:size] = np.roll(extra.get('ends', np.zeros(size, bool)),
                                    -next_index)
        if self._policy_action is not None:
            # Saved without them: the stored actions stand in.
            self._policy_action[:size] = np.roll(extra.get(
                'policy_action', arrays['action']), -next_index, axis=0)
        self.size, self._next = size, size % self.capacity
        self.end_episode()


class FrameReplayBuffer:
    """A replay buffer for stacked image observations that stores every
    frame once (Atari: 84x84 uint8, ~7 GB for 1M transitions instead of
    ~56 GB for stacked observation pairs).

    Slot i holds the newest frame of a transition's observation, its action,
    reward and discount; the next observation's newest frame is in slot
    i + 1 (an episode's final frame takes one extra slot). Stacks are rebuilt
    when sampling by walking back from a slot, repeating an episode's first
    frame before its start, as the environment's frame stack does.

    With `n_step` > 1 a sample walks forward up to n - 1 slots within its
    episode and returns the n-step reward, discount and next observation
    (`n_step.discounted_returns`); slots whose n steps are not all collected
    yet (the episode in progress) are not sampled.
    """

    def __init__(self, capacity: int, observation_shape: Sequence[int],
                 action_shape: Sequence[int], action_dtype=np.int64,
                 n_step: int = 1, gamma: float = 0.99):
        if capacity <= 4:
            raise ValueError(f'replay_capacity must be > 4, got {capacity}.')
        if not 1 <= n_step < capacity:
            raise ValueError(f'train_eval.n_step must be in 1..{capacity - 1} '
                             f'for this replay, got {n_step}.')
        self._n_step, self._gamma = int(n_step), float(gamma)
        *frame_shape, self._stack = observation_shape
        self.capacity = int(capacity)
        self._frames = np.zeros((capacity, *frame_shape), np.uint8)
        self._action = np.zeros((capacity, *action_shape), action_dtype)
        self._reward = np.zeros((capacity,), np.float32)
        self._discount = np.zeros((capacity,), np.float32)
        self._first = np.zeros((capacity,), bool)  # frame starts an episode
        self._valid = np.zeros((capacity,), bool)  # slot starts a transition
        self._next = 0  # slot of the current observation's newest frame
        self._episode_open = False
        self.size = 0  # transitions stored

    @property
    def nbytes(self) -> int:
        """Bytes of the buffer's arrays (allocated at full capacity)."""
        return sum(array.nbytes for array in (
            self._frames, self._action, self._reward, self._discount,
            self._first, self._valid))

    def _write_frame(self, slot: int, frame, first: bool) -> None:
        self._frames[slot] = frame
        self._first[slot] = first
        self._valid[slot] = False
        # Slots just after this one lose their real history.
        self._valid[(slot + np.arange(1, self._stack)) % self.capacity] = False

    def add(self, observation, action, reward, discount, next_observation,
            first: bool = False) -> None:
        slot = self._next
        if first or not self._episode_open:
            if self._episode_open or self._valid.any():
                slot = (slot + 1) % self.capacity  # keep the last final frame
            self._write_frame(slot, observation[..., -1], True)
        self._action[slot] = action
        self._reward[slot] = reward
        self._discount[slot] = discount
        following = (slot + 1) % self.capacity
        self._write_frame(following, next_observation[..., -1], False)
        self._valid[slot] = True
        self._next = following
        self._episode_open = True
        self.size = int(self._valid.sum())

    def end_episode(self) -> None:
        """The next `add` starts a new episode (after its final frame)."""
        self._episode_open = False

    def continue_episode(self) -> None:
        """Nothing to undo: `load` restores whether an episode is open."""

    def clear(self) -> None:
        """Forgets every transition; the next `add` starts afresh."""
        self._valid[:] = False
        self._first[:] = False
        self._next, self._episode_open, self.size = 0, False, 0

    def _stacks(self, slots: np.ndarray) -> np.ndarray:
        """[B, H, W, stack] observations ending at `slots`."""
        columns = [slots]
        current = slots
        for _ in range(self._stack - 1):
            current = np.where(self._first[current], current,
                               (current - 1) % self.capacity)
            columns.append(current)
        return np.stack([self._frames[c] for c in reversed(columns)], axis=-1)

    def _lookahead(self, slots: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """For transitions starting at `slots`: how many of the next n steps
        are in their episode, and whether those steps are all collected (an
        open episode's last n - 1 transitions are not)."""
        lengths = np.ones_like(slots)
        going = np.ones(slots.shape, bool)
        complete = np.ones(slots.shape, bool)
        for ahead in range(1, self._n_step):
            following = (slots + ahead) % self.capacity
            continues = (going & self._valid[following]
                         & ~self._first[following])
            if self._episode_open:
                complete &= ~(going & ~continues & (following == self._next))
            going = continues
            lengths += going
        return lengths, complete

    def _sample_slots(self, batch_size: int,
                      rng: np.random.Generator) -> np.ndarray:
        chosen = np.empty(0, np.int64)
        for _ in range(10000):
            if chosen.size >= batch_size:
                return chosen[:batch_size]
            candidates = rng.integers(0, self.capacity, 2 * batch_size)
            candidates = candidates[self._valid[candidates]]
            if self._n_step > 1:
                candidates = candidates[self._lookahead(candidates)[1]]
            chosen = np.concatenate([chosen, candidates])
        raise ValueError(f'cannot sample {batch_size} transitions: the replay '
                         f'holds {self.size}, too few with all '
                         f'{self._n_step} steps collected.')

    def sample(self, batch_size: int, rng: np.random.Generator) -> Dict:
        slots = self._sample_slots(batch_size, rng)
        observation = self._stacks(slots)
        if self._n_step == 1:
            following = (slots + 1) % self.capacity
            next_observation = np.concatenate(
                [observation[..., 1:], self._frames[following][..., None]],
                axis=-1)
            return {'observation': observation,
                    'action': self._action[slots],
                    'reward': self._reward[slots],
                    'discount': self._discount[slots],
                    'next_observation': next_observation}
        lengths, _ = self._lookahead(slots)
        window = (slots[:, None] + np.arange(self._n_step)) % self.capacity
        reward, discount = n_step_lib.discounted_returns(
            self._reward[window], self._discount[window], lengths,
            self._gamma)
        return {'observation': observation, 'action': self._action[slots],
                'reward': reward, 'discount': discount,
                'next_observation': self._stacks(
                    (slots + lengths) % self.capacity)}

    def save(self, path: str) -> None:
        np.savez(path, frames=self._frames, action=self._action,
                 reward=self._reward, discount=self._discount,
                 first=self._first, valid=self._valid,
                 state=np.array([self._next, int(self._episode_open)]))

    def load(self, path: str) -> None:
        """Loads a saved buffer, into a larger one too: its slots go in
        oldest first, so new frames fill the free room before overwriting
        the oldest."""
        with np.load(path) as saved:
            saved_capacity = saved['frames'].shape[0]
            if (saved['frames'].shape[1:] != self._frames.shape[1:]
                    or saved_capacity > self.capacity):
                raise IncompatibleReplay(
                    f'saved frames have shape {saved["frames"].shape}, this '
                    f'run needs at most {self._frames.shape}; keep '
                    'train_eval.replay_capacity as it was.')
            next_slot, episode_open = (int(v) for v in saved['state'])
            arrays = {name: saved[name] for name in (
                'frames', 'action', 'reward', 'discount', 'first', 'valid')}
        # A buffer that wrapped has its oldest slot just after `next`.
        wrapped = saved_capacity < self.capacity and (
            arrays['valid'][next_slot + 1:].any() or
            arrays['first'][next_slot + 1:].any())
        shift = -(next_slot + 1) if wrapped else 0
        self.clear()
        for name, target in (('frames', self._frames),
                             ('action', self._action),
                             ('reward', self._reward),
                             ('discount', self._discount),
                             ('first', self._first), ('valid', self._valid)):
            target[:saved_capacity] = np.roll(arrays[name], shift, axis=0)
        self._next = (next_slot + shift) % saved_capacity
        self._episode_open = bool(episode_open)
        self.size = int(self._valid.sum())


def make_replay_buffer(capacity: int, observation_spec, action_spec,
                       n_step: int = 1, gamma: float = 0.99,
                       policy_actions: bool = False):
    """A `FrameReplayBuffer` for uint8 image stacks (H, W, stack), else a
    `ReplayBuffer`; both return `n_step`-step transitions.

    Args:
        policy_actions: store each transition's noise-free policy action
            (RLx2's dynamic capacity); the numpy `ReplayBuffer` only.
    """
    if observation_spec.dtype == np.uint8 and observation_spec.shape.rank == 3:
        if policy_actions:
            raise ValueError('the frame replay of image observations stores '
                             'no policy actions (train_eval.'
                             'replay_check_interval must be 0).')
        return FrameReplayBuffer(capacity, observation_spec.shape,
                                 action_spec.shape,
                                 action_spec.dtype.as_numpy_dtype,
                                 n_step=n_step, gamma=gamma)
    return ReplayBuffer(capacity, observation_spec.shape, action_spec.shape,
                        action_spec.dtype.as_numpy_dtype, n_step=n_step,
                        gamma=gamma, policy_actions=policy_actions)
