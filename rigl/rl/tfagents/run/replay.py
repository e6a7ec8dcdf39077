"""The uniform replay buffer of the off-policy loop, saved with checkpoints."""

from typing import Dict, Sequence

import numpy as np


class IncompatibleReplay(ValueError):
    """Saved replay data that this run's buffer cannot hold."""


class ReplayBuffer:
    """A numpy ring buffer of transitions."""

    FIELDS = ('observation', 'action', 'reward', 'discount', 'next_observation')

    def __init__(self, capacity: int, observation_shape: Sequence[int],
                 action_shape: Sequence[int], action_dtype=np.float32):
        if capacity <= 0:
            raise ValueError(f'replay_capacity must be positive, got {capacity}.')
        self.capacity = int(capacity)
        self._data = {
            'observation': np.zeros((capacity, *observation_shape), np.float32),
            'action': np.zeros((capacity, *action_shape), action_dtype),
            'reward': np.zeros((capacity,), np.float32),
            'discount': np.zeros((capacity,), np.float32),
            'next_observation': np.zeros((capacity, *observation_shape),
                                         np.float32),
        }
        self.size = 0
        self._next = 0

    def add(self, observation, action, reward, discount,
            next_observation) -> None:
        index = self._next
        data = self._data
        data['observation'][index] = observation
        data['action'][index] = action
        data['reward'][index] = reward
        data['discount'][index] = discount
        data['next_observation'][index] = next_observation
        self._next = (index + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Dict:
        indices = rng.integers(0, self.size, batch_size)
        return {name: array[indices] for name, array in self._data.items()}

    def save(self, path: str) -> None:
        np.savez(path, size=self.size, next=self._next,
                 **{name: array[:self.size] for name, array in
                    self._data.items()})

    def load(self, path: str) -> None:
        """Loads a saved buffer; raises ValueError if it cannot fit."""
        with np.load(path) as saved:
            size, next_index = int(saved['size']), int(saved['next'])
            if size > self.capacity:
                raise IncompatibleReplay(
                    f'the checkpoint holds {size} transitions but the replay '
                    f'buffer now has room for {self.capacity}; keep '
                    'train_eval.replay_capacity and num_iterations as they '
                    'were.')
            arrays = {name: saved[name] for name in self.FIELDS}
        for name, array in arrays.items():
            if array.shape[1:] != self._data[name].shape[1:]:
                raise IncompatibleReplay(
                    f'saved replay field {name!r} has shape {array.shape[1:]}, '
                    f'this run needs {self._data[name].shape[1:]}.')
        for name, array in arrays.items():
            self._data[name][:size] = array
        self.size, self._next = size, next_index % self.capacity
