"""Environment-side noise features: a gymnasium wrapper that appends them.

The other regime than ANF's own (`anf.network`): the environment adds the
noise, so the replay buffer stores it. `NoiseFeatures` draws it from its
own seeded numpy stream, kept apart from the environment's stream even for
equal seeds, and redraws its permutation every `adjust_env_period` env
steps when asked. `noise_feature_mask(env)` finds the wrapper below any
TF-Agents or gymnasium wrapper and says which inputs are noise.
"""

from typing import Any, Optional, Tuple

import gymnasium
import numpy as np

from rigl.rl.tfagents.anf import config as config_lib
from rigl.rl.tfagents.anf import layout as layout_lib
from rigl.rl.tfagents.anf import samplers

# Spawn key that separates the noise random stream from the environment's own
# stream when both are seeded with the same integer (gymnasium seeds its
# generator exactly like `np.random.default_rng(seed)`).
_NOISE_STREAM_KEY = 0x4E4F495345  # "NOISE"


class NoiseFeatures(gymnasium.ObservationWrapper):
    """Appends noise features to a flat Box observation (ANF).

    With d real features and noise fraction f, `ceil(d / (1 - f)) - d` noise
    features are appended, so noise makes up (at least) a fraction f of the
    input. Noise is redrawn for every observation, either from N(0, std^2) or
    from per-feature histograms (noise feature i then imitates the marginal
    distribution of real feature i mod d). Optionally all features are shuffled
    by a fixed random permutation, which can be redrawn every
    `adjust_env_period` environment steps to test adaptation to a changing
    input layout. `noise_feature_mask` always describes the latest layout.

    An evaluation environment must see the same layout as the training one;
    pass the training wrapper as `layout_source` and this wrapper follows its
    current permutation (including redraws) instead of drawing its own.

    Args:
        env: Environment with a 1-D Box observation space.
        noise_fraction: Fraction f in [0, 1) of output features that are
            noise.
        noise_std: Standard deviation of the Gaussian noise; unused with
            `histogram_file`.
        histogram_file: Optional `.npz` with `bin_edges` (d, B + 1) and
            `probabilities` (d, B); see `make_feature_histograms`.
        permute: Shuffle all output features with a fixed random
            permutation.
        adjust_env_period: If given, redraw the permutation every this
            many environment steps (implies `permute`).
        seed: Seed of the noise and permutation random stream. It is kept
            separate from the environment's stream even for equal seeds.
        layout_source: Another `NoiseFeatures` with the same feature
            counts whose permutation this wrapper follows; `permute` and
            `adjust_env_period` are then taken from it.

    Raises:
        ValueError: On an invalid argument or a non-flat observation space.
    """

    def __init__(self,
                 env: gymnasium.Env,
                 noise_fraction: float,
                 noise_std: float = 1.0,
                 histogram_file: Optional[str] = None,
                 permute: bool = False,
                 adjust_env_period: Optional[int] = None,
                 seed: Optional[int] = None,
                 layout_source: Optional['NoiseFeatures'] = None):
        super().__init__(env)
        config_lib.check_fraction(noise_fraction)
        config_lib.check_std(noise_std)
        config_lib.check_seed(seed)
        if adjust_env_period is not None:
            config_lib.check_positive_int(adjust_env_period,
                                          'adjust_env_period')
        space = env.observation_space
        if (not isinstance(space, gymnasium.spaces.Box) or
                len(space.shape) != 1):
            raise ValueError(
                f'NoiseFeatures needs a 1-D Box observation space, got '
                f'{space!r}.')

        self._num_real = int(space.shape[0])
        self._num_noise = layout_lib.num_noise_features(self._num_real,
                                                        noise_fraction)
        self._adjust_env_period = adjust_env_period
        self._env_steps = 0
        self._rng = np.random.default_rng(
            None if seed is None else
            np.random.SeedSequence(seed, spawn_key=(_NOISE_STREAM_KEY,)))
        self._dtype = (space.dtype if np.issubdtype(space.dtype, np.floating)
                       else np.dtype(np.float32))
        self._sampler = samplers.make_sampler(
            self._num_real, self._num_noise, noise_std, histogram_file)
        total = self._num_real + self._num_noise
        self._concat_is_noise = layout_lib.concatenated_is_noise(
            self._num_real, total)
        self._permutation = None
        self._layout_source = self
        if layout_source is not None:
            self._follow_layout(layout_source)
            self._adjust_env_period = None
            permuted = layout_source.permutation is not None
        else:
            permuted = permute or adjust_env_period is not None
            if permuted:
                self._draw_permutation()
            else:
                self._set_noise_mask()
        self.observation_space = self._space(space, permuted)

    def _space(self, space: gymnasium.spaces.Box,
               permuted: bool) -> gymnasium.spaces.Box:
        """The observation space: the real bounds, then the noise's."""
        noise_low, noise_high = self._sampler.bounds
        low = np.concatenate([space.low, noise_low])
        high = np.concatenate([space.high, noise_high])
        if permuted:
            # Every feature may land anywhere, and the space must not change
            # when the permutation is redrawn, so all bounds are the widest.
            low = np.full(low.size, low.min())
            high = np.full(high.size, high.max())
        return gymnasium.spaces.Box(
            low=low.astype(self._dtype), high=high.astype(self._dtype),
            dtype=self._dtype)

    def _follow_layout(self, layout_source: 'NoiseFeatures') -> None:
        if not isinstance(layout_source, NoiseFeatures):
            raise ValueError(
                f'layout_source={layout_source!r} is invalid: it must be a '
                'NoiseFeatures wrapper.')
        own_counts = (self._num_real, self._num_noise)
        source_counts = (layout_source.num_real_features,
                         layout_source.num_noise_features)
        if own_counts != source_counts:
            raise ValueError(
                f'layout_source has (real, noise) feature counts '
                f'{source_counts}, but this wrapper has {own_counts}; they '
                'must be equal to share a layout.')
        # Follow the source's own source, so chains cannot go stale.
        self._layout_source = layout_source._layout_source

    def _draw_permutation(self) -> None:
        total = self._num_real + self._num_noise
        self._permutation = self._rng.permutation(total)
        self._set_noise_mask()

    def _set_noise_mask(self) -> None:
        mask = layout_lib.noise_mask(self._concat_is_noise, self._permutation)
        mask.flags.writeable = False
        self._noise_mask = mask

    @property
    def noise_feature_mask(self) -> np.ndarray:
        """Read-only bool array over output features; True marks noise."""
        return self._layout_source._noise_mask

    @property
    def permutation(self) -> Optional[np.ndarray]:
        """Output feature j is concatenated feature `permutation[j]` (real
        features first, then noise), or None when features are not permuted.
        """
        permutation = self._layout_source._permutation
        return None if permutation is None else permutation.copy()

    @property
    def num_real_features(self) -> int:
        """Number of features of the wrapped environment's observation."""
        return self._num_real

    @property
    def num_noise_features(self) -> int:
        """Number of appended noise features."""
        return self._num_noise

    def rng_state(self) -> dict:
        """Noise stream, step count and own permutation, JSON-ready."""
        own = self._layout_source is self and self._permutation is not None
        return {'rng': self._rng.bit_generator.state,
                'env_steps': self._env_steps,
                'permutation': self._permutation.tolist() if own else None}

    def set_rng_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state['rng']
        self._env_steps = int(state['env_steps'])
        if state['permutation'] is not None and self._layout_source is self:
            self._permutation = np.asarray(state['permutation'])
            self._set_noise_mask()

    def step(self, action: Any) -> Tuple[Any, Any, bool, bool, dict]:
        self._env_steps += 1
        if (self._adjust_env_period is not None and
                self._env_steps % self._adjust_env_period == 0):
            self._draw_permutation()
        return super().step(action)

    def observation(self, observation: Any) -> np.ndarray:
        observation = np.asarray(observation, dtype=self._dtype)
        if self._num_noise:
            observation = np.concatenate(
                [observation, self._sampler.sample(self._rng)],
                dtype=self._dtype)
        permutation = self._layout_source._permutation
        if permutation is not None:
            observation = observation[permutation]
        return observation


def wrap(gym_env: gymnasium.Env, config: config_lib.NoiseConfig,
         seed: Optional[int],
         layout_source: Optional[NoiseFeatures] = None) -> NoiseFeatures:
    """`gym_env` with the environment side's noise features `config`."""
    return NoiseFeatures(
        gym_env, noise_fraction=config.fraction, noise_std=config.std,
        histogram_file=config.histogram_file, permute=config.permute,
        adjust_env_period=config.adjust_period or None, seed=seed,
        layout_source=layout_source)


def _inner_environment(env: Any) -> Any:
    """Returns the environment wrapped by `env`, or None at the bottom."""
    if isinstance(env, gymnasium.Wrapper):
        return env.env
    if hasattr(env, 'gym_env'):  # our TF-Agents adapter (envs.py).
        return env.gym_env
    if hasattr(env, 'wrapped_env'):  # TF-Agents PyEnvironment wrappers.
        return env.wrapped_env()
    if hasattr(env, 'pyenv'):  # TFPyEnvironment.
        return env.pyenv
    batched_envs = getattr(env, 'envs', None)  # BatchedPyEnvironment.
    if batched_envs:
        return batched_envs[0]
    return None


def find_noise_wrapper(env: Any) -> Optional[NoiseFeatures]:
    """Returns the first `NoiseFeatures` in the wrapper chain of `env`."""
    visited = set()
    while env is not None and id(env) not in visited:
        if isinstance(env, NoiseFeatures):
            return env
        visited.add(id(env))
        env = _inner_environment(env)
    return None


def noise_feature_mask(env: Any) -> Optional[np.ndarray]:
    """Finds the `NoiseFeatures` wrapper below `env` and returns its mask.

    Follows gymnasium wrappers, `envs.GymnasiumEnvironment`, TF-Agents
    wrappers and `TFPyEnvironment` / `BatchedPyEnvironment` (first
    sub-environment).

    Returns:
        A bool array over observation features (True marks noise), or None
        if there is no `NoiseFeatures` wrapper.
    """
    wrapper = find_noise_wrapper(env)
    return None if wrapper is None else wrapper.noise_feature_mask.copy()
