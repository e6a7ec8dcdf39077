"""Saving and restoring an environment's random streams (temporary home)."""

from typing import Dict

import numpy as np


def get_rng_state(env) -> Dict:
    """The random state of a `GymnasiumEnvironment` (simulator resets and
    ANF noise), JSON-ready, for checkpoints."""
    from rigl.rl.tfagents import envs
    state = {'env': env.gym_env.unwrapped.np_random.bit_generator.state}
    noise = envs._find_noise_wrapper(env)
    if noise is not None:
        state['noise'] = noise._rng.bit_generator.state
        state['noise_env_steps'] = noise._env_steps
        permutation = noise._layout_source._permutation
        state['permutation'] = (None if permutation is None
                                else permutation.tolist())
    return state


def set_rng_state(env, state: Dict) -> None:
    """Restores `get_rng_state`; the next reset continues the saved stream
    instead of reseeding from the run's seed."""
    from rigl.rl.tfagents import envs
    env._pending_seed = None
    unwrapped = env.gym_env.unwrapped
    generator = np.random.Generator(np.random.PCG64())
    generator.bit_generator.state = state['env']
    unwrapped.np_random = generator
    noise = envs._find_noise_wrapper(env)
    if noise is not None and 'noise' in state:
        noise._rng.bit_generator.state = state['noise']
        noise._env_steps = state['noise_env_steps']
        if state['permutation'] is not None and noise._layout_source is noise:
            noise._permutation = np.asarray(state['permutation'])
            noise._set_noise_mask()
