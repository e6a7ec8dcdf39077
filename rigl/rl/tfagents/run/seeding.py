"""One run seed, many independent random streams.

Every random stream of a run (Python, numpy and TF globals, Keras
initializers, environments, replay sampling, masks, mask updaters, action
sampling) is seeded from the run's seed through `derive`, so the same seed
gives the same run and no two streams share numbers. Streams with state that
can be saved are saved with checkpoints (see `loops.session`).
"""

import os
import zlib
from typing import Optional

import numpy as np
import tensorflow as tf


def resolve(seed: Optional[int]) -> int:
    """The run's seed: `seed`, or a fresh random one when None."""
    if seed is not None:
        return int(seed)
    return int.from_bytes(os.urandom(4), 'little') & 0x7FFFFFFF


def derive(seed: int, *names) -> int:
    """A 31-bit seed for the stream named by `names` (stable across runs and
    Python processes, unlike `hash`)."""
    key = [zlib.crc32(str(name).encode()) for name in names]
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


def seed_globals(seed: int) -> None:
    """Seeds Python's `random`, numpy's global state and TF's global seed
    (Keras initializers without a seed draw from Python's `random`)."""
    tf.keras.utils.set_random_seed(derive(seed, 'globals'))
