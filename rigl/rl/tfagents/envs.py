"""Gymnasium environments for TF-Agents, with ANF noise features.

TF-Agents 0.19 only ships adapters for the old `gym` API (and MuJoCo through
mujoco-py), so this module provides its own adapter for `gymnasium` 1.x and the
"noise features" of Automatic Noise Filtering (ANF): extra observation features
that carry no information, so that one can measure whether sparse training
learns to ignore them.

Typical use (also configurable from gin):

    env = create_environment('HalfCheetah-v5', seed=0, noise_fraction=0.9)
    mask = noise_feature_mask(env)  # True where an input feature is noise.
"""

import difflib
import math
import numbers
import os
from typing import Any, Optional, Tuple

import gin
import gymnasium
import numpy as np
from tf_agents.environments import py_environment
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.typing import types

# Spawn key that separates the noise random stream from the environment's own
# stream when both are seeded with the same integer (gymnasium seeds its
# generator exactly like `np.random.default_rng(seed)`).
_NOISE_STREAM_KEY = 0x4E4F495345  # "NOISE"

_LIST_ENV_IDS_COMMAND = (
    'python -c "import gymnasium; print(sorted(gymnasium.registry))"')


def _spec_from_space(space: gymnasium.Space, name: str,
                     force_float32: bool) -> array_spec.BoundedArraySpec:
    """Converts a Box or Discrete space into a TF-Agents bounded array spec.

    Float boxes become float32 (TF-Agents networks expect float32 inputs);
    integer boxes keep their dtype unless `force_float32`. Discrete spaces
    become scalar int64 specs over {start, ..., start + n - 1}, like
    TF-Agents' own gym adapter.
    """
    if isinstance(space, gymnasium.spaces.Discrete):
        dtype = np.float32 if force_float32 else np.int64
        first = int(space.start)
        return array_spec.BoundedArraySpec(
            shape=(), dtype=dtype, minimum=first,
            maximum=first + int(space.n) - 1, name=name)
    if isinstance(space, gymnasium.spaces.Box):
        is_float = np.issubdtype(space.dtype, np.floating)
        dtype = np.float32 if (force_float32 or is_float) else space.dtype
        minimum = np.asarray(space.low, dtype=dtype)
        maximum = np.asarray(space.high, dtype=dtype)
        # Uniform bounds become scalars (broadcast by the spec) so that specs
        # of wide noisy observations stay readable in logs.
        if minimum.size and np.all(minimum == minimum.flat[0]) and np.all(
                maximum == maximum.flat[0]):
            minimum, maximum = minimum.flat[0], maximum.flat[0]
        return array_spec.BoundedArraySpec(
            shape=space.shape, dtype=dtype, minimum=minimum, maximum=maximum,
            name=name)
    raise ValueError(
        f'Unsupported gymnasium {name} space {space!r}: only Box and '
        'Discrete spaces are supported.')


class GymnasiumEnvironment(py_environment.PyEnvironment):
    """TF-Agents `PyEnvironment` around a `gymnasium.Env`.

    Maps gymnasium's five-tuple steps onto TF-Agents time steps: a terminated
    episode ends with discount 0, a truncated one (time limit) ends with
    discount 1 so that agents keep bootstrapping from the last observation.
    Observations are float32. Auto-reset is delegated to the TF-Agents base
    class (`handle_auto_reset=True`): a `step` after a LAST time step resets
    the environment and ignores the action.
    """

    def __init__(self, gym_env: gymnasium.Env, seed: Optional[int] = None):
        """Wraps `gym_env`.

        Args:
            gym_env: The gymnasium environment (usually from
                `gymnasium.make`, so it includes the time limit).
            seed: Seed for the first reset and for the action space. Later
                resets are unseeded, so gymnasium continues the seeded random
                stream instead of replaying the first episode.

        Raises:
            ValueError: If the observation or action space is neither Box nor
                Discrete.
        """
        super().__init__(handle_auto_reset=True)
        self._gym_env = gym_env
        space = gym_env.observation_space
        # Image observations (e.g. Atari's 84x84x4 frames) stay uint8: 4x
        # less memory in replay; the network scales them.
        self._observation_dtype = (
            np.uint8 if isinstance(space, gymnasium.spaces.Box) and
            space.dtype == np.uint8 and len(space.shape) == 3 else np.float32)
        self._observation_spec = _spec_from_space(
            space, 'observation',
            force_float32=self._observation_dtype == np.float32)
        self._action_spec = _spec_from_space(
            gym_env.action_space, 'action', force_float32=False)
        self._discrete_actions = isinstance(gym_env.action_space,
                                            gymnasium.spaces.Discrete)
        self._action_dtype = gym_env.action_space.dtype
        self._pending_seed = None
        self._last_info = {}
        self.seed(seed)

    @property
    def gym_env(self) -> gymnasium.Env:
        """The wrapped gymnasium environment (outermost wrapper)."""
        return self._gym_env

    def observation_spec(self) -> types.NestedArraySpec:
        return self._observation_spec

    def action_spec(self) -> types.NestedArraySpec:
        return self._action_spec

    def seed(self, seed: Optional[int]) -> None:
        """Seeds the next reset and the action space.

        Args:
            seed: Integer seed >= 0, or None to leave the randomness unseeded.

        Raises:
            ValueError: If `seed` is neither None nor an integer >= 0.
        """
        _check_seed(seed)
        seed = None if seed is None else int(seed)
        self._pending_seed = seed
        if seed is not None:
            self._gym_env.action_space.seed(seed)

    def should_reset(self, current_time_step: ts.TimeStep) -> bool:
        """Auto-reset rule of the base class: reset after a LAST step.

        Overridden only for speed: the base version calls
        `TimeStep.is_last()`, whose `tf.is_tensor` check costs about as much
        as a MuJoCo step, on every `step`.
        """
        return bool(current_time_step.step_type == ts.StepType.LAST)

    def get_info(self) -> types.NestedArray:
        """Returns the gymnasium `info` dict of the latest reset or step."""
        return self._last_info

    def render(self, mode: str = 'rgb_array') -> Optional[types.NestedArray]:
        """Renders with the render mode given to `gymnasium.make`.

        Gymnasium fixes the render mode when the environment is created, so
        `mode` is only checked against it.

        Raises:
            ValueError: If the environment was created without a render mode
                or with a different one.
        """
        render_mode = self._gym_env.render_mode
        if render_mode != mode:
            raise ValueError(
                f'Cannot render in mode {mode!r}: the gymnasium environment '
                f'was created with render_mode={render_mode!r}. Pass '
                f'render_mode={mode!r} when creating it.')
        return self._gym_env.render()

    def close(self) -> None:
        self._gym_env.close()

    def rng_state(self) -> dict:
        """The random state of resets and noise features, JSON-ready, so a
        checkpoint can continue the streams rather than reseed them (with
        the seed of the next reset when the environment was never reset)."""
        state = {'env': self._gym_env.unwrapped.np_random.bit_generator.state,
                 'pending_seed': self._pending_seed}
        noise = _find_noise_wrapper(self)
        if noise is not None:
            state['noise'] = noise.rng_state()
        return state

    def set_rng_state(self, state: dict) -> None:
        """Restores `rng_state()`; the next reset continues that stream
        instead of using the seed given at creation (unless the saved
        environment had not been reset yet)."""
        self._pending_seed = state.get('pending_seed')
        generator = np.random.Generator(np.random.PCG64())
        generator.bit_generator.state = state['env']
        self._gym_env.unwrapped.np_random = generator
        noise = _find_noise_wrapper(self)
        if noise is not None and 'noise' in state:
            noise.set_rng_state(state['noise'])

    def resume_state(self) -> dict:
        """What this adapter holds across steps: the current time step
        (TF-Agents' auto-reset reads it; None before the first reset), its
        fields as arrays, and the seed of the next reset."""
        time_step = self._current_time_step  # the base class's
        return {'time_step': None if time_step is None else {
                    name: np.asarray(value)
                    for name, value in time_step._asdict().items()},
                'pending_seed': self._pending_seed}

    def set_resume_state(self, state: dict) -> None:
        """Restores `resume_state()`: the next `step` continues from the
        saved time step (and auto-resets after a LAST one)."""
        fields = state['time_step']
        self._current_time_step = None if fields is None else ts.TimeStep(
            **fields)
        self._pending_seed = state['pending_seed']

    def _reset(self) -> ts.TimeStep:
        seed, self._pending_seed = self._pending_seed, None
        observation, self._last_info = self._gym_env.reset(seed=seed)
        return ts.TimeStep(ts.StepType.FIRST,
                           np.asarray(0.0, dtype=np.float32),
                           np.asarray(1.0, dtype=np.float32),
                           self._to_observation(observation))

    def _step(self, action: types.NestedArray) -> ts.TimeStep:
        if self._discrete_actions:
            gym_action = int(action)
        else:
            gym_action = np.asarray(action, dtype=self._action_dtype)
        observation, reward, terminated, truncated, self._last_info = (
            self._gym_env.step(gym_action))
        observation = self._to_observation(observation)
        reward = np.asarray(reward, dtype=np.float32)
        # TimeSteps are built directly: ts.transition & co. inspect nests and
        # cost about as much as a MuJoCo step for unbatched numpy data.
        if terminated:
            return ts.TimeStep(ts.StepType.LAST, reward,
                               np.asarray(0.0, dtype=np.float32), observation)
        step_type = ts.StepType.LAST if truncated else ts.StepType.MID
        return ts.TimeStep(step_type, reward,
                           np.asarray(1.0, dtype=np.float32), observation)

    def _to_observation(self, observation: Any) -> np.ndarray:
        # Copy so that stored observations never alias the env's buffers.
        return np.array(observation, dtype=self._observation_dtype, copy=True)


def num_noise_features(num_real_features: int, noise_fraction: float) -> int:
    """Number of noise features so that they make up `noise_fraction`.

    Returns `ceil(d / (1 - f)) - d`. The quotient is rounded to 1e-9 first
    because e.g. 17 / (1 - 0.9) evaluates to 170.00000000000003, which a plain
    ceil would turn into 171 total features.
    """
    _check_noise_fraction(noise_fraction)
    total = math.ceil(round(num_real_features / (1.0 - noise_fraction), 9))
    return max(total - num_real_features, 0)


def _check_noise_fraction(noise_fraction: float) -> None:
    if (isinstance(noise_fraction, bool) or
            not isinstance(noise_fraction, numbers.Real) or
            not 0.0 <= noise_fraction < 1.0):
        raise ValueError(
            f'noise_fraction={noise_fraction!r} is invalid: it must be a '
            'number in [0, 1) (the fraction of observation features that are '
            'noise).')


def _check_noise_std(noise_std: float) -> None:
    if (isinstance(noise_std, bool) or
            not isinstance(noise_std, numbers.Real) or
            not math.isfinite(noise_std) or noise_std <= 0):
        raise ValueError(
            f'noise_std={noise_std!r} is invalid: it must be a finite number '
            '> 0.')


def _check_positive_int(value: Any, name: str) -> None:
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or
            value <= 0):
        raise ValueError(
            f'{name}={value!r} is invalid: it must be a positive integer or '
            'None.')


def _check_seed(seed: Any) -> None:
    if seed is not None and (isinstance(seed, bool) or
                             not isinstance(seed, numbers.Integral) or
                             seed < 0):
        raise ValueError(
            f'seed={seed!r} is invalid: it must be None or an integer >= 0.')


def _check_histograms(bin_edges: np.ndarray, probabilities: np.ndarray,
                      source: str) -> None:
    """Raises ValueError unless the arrays are valid per-feature histograms."""
    if bin_edges.ndim != 2 or bin_edges.shape[1] < 2:
        raise ValueError(
            f'{source}: bin_edges has shape {bin_edges.shape}; expected '
            '(num_features, num_bins + 1) with num_bins >= 1.')
    expected = (bin_edges.shape[0], bin_edges.shape[1] - 1)
    if probabilities.shape != expected:
        raise ValueError(
            f'{source}: probabilities has shape {probabilities.shape}; '
            f'expected {expected} to match bin_edges {bin_edges.shape}.')
    if not (np.all(np.isfinite(bin_edges)) and
            np.all(np.diff(bin_edges, axis=1) >= 0)):
        raise ValueError(
            f'{source}: bin_edges must be finite and non-decreasing along '
            'each row.')
    if not (np.all(np.isfinite(probabilities)) and np.all(probabilities >= 0)
            and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)):
        raise ValueError(
            f'{source}: probabilities must be non-negative and each row must '
            'sum to 1.')


def make_feature_histograms(observations: np.ndarray,
                            num_bins: int) -> Tuple[np.ndarray, np.ndarray]:
    """Builds per-feature histograms from a rollout, for histogram noise.

    Args:
        observations: Array of shape (num_samples, num_features).
        num_bins: Number of equal-width bins per feature.

    Returns:
        `(bin_edges, probabilities)` of shapes (num_features, num_bins + 1)
        and (num_features, num_bins); each probability row sums to 1.

    Raises:
        ValueError: On an empty, non-2-D or non-finite `observations`, or a
            non-positive `num_bins`.
    """
    _check_positive_int(num_bins, 'num_bins')
    observations = np.asarray(observations, dtype=np.float64)
    if observations.ndim != 2 or observations.shape[0] == 0:
        raise ValueError(
            f'observations has shape {observations.shape}; expected '
            '(num_samples, num_features) with num_samples >= 1.')
    if not np.all(np.isfinite(observations)):
        raise ValueError('observations must be finite.')
    num_samples, num_features = observations.shape
    bin_edges = np.empty((num_features, num_bins + 1))
    probabilities = np.empty((num_features, num_bins))
    for feature in range(num_features):
        counts, bin_edges[feature] = np.histogram(observations[:, feature],
                                                  bins=num_bins)
        probabilities[feature] = counts / num_samples
    return bin_edges, probabilities


def save_feature_histograms(path: str, bin_edges: np.ndarray,
                            probabilities: np.ndarray) -> str:
    """Saves histograms as the `.npz` file that `NoiseFeatures` reads.

    Args:
        path: Destination; numpy appends `.npz` if it is missing.
        bin_edges: Array of shape (num_features, num_bins + 1).
        probabilities: Array of shape (num_features, num_bins).

    Returns:
        The path actually written.

    Raises:
        ValueError: If the arrays are not valid histograms.
    """
    bin_edges = np.asarray(bin_edges, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    _check_histograms(bin_edges, probabilities, 'save_feature_histograms')
    path = os.fspath(path)
    if not path.endswith('.npz'):
        path += '.npz'
    np.savez(path, bin_edges=bin_edges, probabilities=probabilities)
    return path


def load_feature_histograms(
        path: str, num_features: Optional[int] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Loads and validates a file written by `save_feature_histograms`.

    Args:
        path: The `.npz` file with `bin_edges` and `probabilities`.
        num_features: If given, the number of rows the histograms must have.

    Returns:
        `(bin_edges, probabilities)` as float64 arrays.

    Raises:
        ValueError: If the file is missing, unreadable or has wrong contents.
    """
    import zipfile  # pylint: disable=import-outside-toplevel
    import zlib  # pylint: disable=import-outside-toplevel

    if not os.path.isfile(path):
        raise ValueError(f'histogram_file={path!r} does not exist.')
    try:
        with np.load(path, allow_pickle=False) as contents:
            bin_edges = np.asarray(contents['bin_edges'], dtype=np.float64)
            probabilities = np.asarray(contents['probabilities'],
                                       dtype=np.float64)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        # A truncated or corrupted file (e.g. a copy that did not finish).
        raise ValueError(
            f'histogram_file={path!r} is damaged ({error or "truncated"}): '
            'write it again (python -m rigl.rl.make_histograms).') from None
    except (KeyError, OSError, ValueError) as error:
        raise ValueError(
            f'histogram_file={path!r} is not an .npz file with arrays '
            f"'bin_edges' and 'probabilities': {error}") from error
    _check_histograms(bin_edges, probabilities, f'histogram_file={path!r}')
    if num_features is not None and bin_edges.shape[0] != num_features:
        raise ValueError(
            f'histogram_file={path!r} has histograms for '
            f'{bin_edges.shape[0]} features, but the observation has '
            f'{num_features}.')
    return bin_edges, probabilities


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
        """Wraps `env`.

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
        super().__init__(env)
        _check_noise_fraction(noise_fraction)
        _check_noise_std(noise_std)
        _check_seed(seed)
        if adjust_env_period is not None:
            _check_positive_int(adjust_env_period, 'adjust_env_period')
        space = env.observation_space
        if (not isinstance(space, gymnasium.spaces.Box) or
                len(space.shape) != 1):
            raise ValueError(
                f'NoiseFeatures needs a 1-D Box observation space, got '
                f'{space!r}.')

        self._num_real = int(space.shape[0])
        self._num_noise = num_noise_features(self._num_real, noise_fraction)
        self._noise_std = float(noise_std)
        self._adjust_env_period = adjust_env_period
        self._env_steps = 0
        self._rng = np.random.default_rng(
            None if seed is None else
            np.random.SeedSequence(seed, spawn_key=(_NOISE_STREAM_KEY,)))
        self._dtype = (space.dtype if np.issubdtype(space.dtype, np.floating)
                       else np.dtype(np.float32))

        if histogram_file is None:
            self._histograms = False
            noise_low = np.full(self._num_noise, -np.inf)
            noise_high = np.full(self._num_noise, np.inf)
        else:
            self._histograms = True
            bin_edges, probabilities = load_feature_histograms(
                histogram_file, num_features=self._num_real)
            noise_low, noise_high = self._prepare_histogram_sampling(
                bin_edges, probabilities)

        total = self._num_real + self._num_noise
        low = np.concatenate([space.low, noise_low])
        high = np.concatenate([space.high, noise_high])
        self._concat_is_noise = np.arange(total) >= self._num_real
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
        if permuted:
            # Every feature may land anywhere, and the space must not change
            # when the permutation is redrawn, so all bounds are the widest.
            low = np.full(total, low.min())
            high = np.full(total, high.max())
        self.observation_space = gymnasium.spaces.Box(
            low=low.astype(self._dtype), high=high.astype(self._dtype),
            dtype=self._dtype)

    def _prepare_histogram_sampling(
            self, bin_edges: np.ndarray,
            probabilities: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Precomputes per-noise-feature tables; returns the noise bounds."""
        imitated = np.arange(self._num_noise) % self._num_real
        edges = bin_edges[imitated]
        probs = probabilities[imitated]
        cumulative = np.cumsum(probs, axis=1)
        cumulative /= cumulative[:, -1:]
        num_bins = probs.shape[1]
        # Bin j of a feature is drawn when cum[j - 1] <= u < cum[j]. To do
        # this for all noise features with one searchsorted call, feature r
        # searches 2 * r + u in the sorted keys 2 * r + cum[r, :-1]; the gap
        # of 2 between rows keeps rounding from crossing into another row,
        # and dropping the final 1.0 keeps the index inside the row.
        row_offsets = 2.0 * np.arange(self._num_noise)
        self._search_keys = (cumulative[:, :-1] + row_offsets[:, None]).ravel()
        self._query_offsets = row_offsets
        self._keys_before_row = np.arange(self._num_noise) * (num_bins - 1)
        self._flat_edges = edges.ravel()
        self._edge_row_starts = np.arange(self._num_noise) * (num_bins + 1)
        return edges[:, 0], edges[:, -1]

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
        mask = (self._concat_is_noise if self._permutation is None else
                self._concat_is_noise[self._permutation]).copy()
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
                [observation, self._sample_noise()], dtype=self._dtype)
        permutation = self._layout_source._permutation
        if permutation is not None:
            observation = observation[permutation]
        return observation

    def _sample_noise(self) -> np.ndarray:
        if not self._histograms:
            return self._noise_std * self._rng.standard_normal(self._num_noise)
        uniforms = self._rng.random((2, self._num_noise))
        bins = np.searchsorted(self._search_keys,
                               uniforms[0] + self._query_offsets,
                               side='right') - self._keys_before_row
        lower_index = self._edge_row_starts + bins
        low = self._flat_edges.take(lower_index)
        high = self._flat_edges.take(lower_index + 1)
        # low + (high - low) * u >= low always holds; rounding can only push
        # a value past the bin's upper edge.
        return np.minimum(low + (high - low) * uniforms[1], high)


def _register_atari() -> None:
    """Registers the ALE/... ids (ale-py ships the ROMs)."""
    try:
        import ale_py  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ValueError('Atari ids (ALE/...) need ale-py: pip install -r '
                         'requirements.txt') from None
    gymnasium.register_envs(ale_py)


class EpisodicLife(gymnasium.Wrapper):
    """Ends a training episode at every lost life (as the DQN papers do) but
    resets the game only when it is over; a reset after a lost life takes a
    no-op step instead."""

    def __init__(self, env: gymnasium.Env):
        super().__init__(env)
        self._lives = 0
        self._game_over = True

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(
            action)
        self._game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        return observation, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self._game_over:
            observation, info = self.env.reset(**kwargs)
        else:
            observation, _, _, _, info = self.env.step(0)
        self._lives = self.env.unwrapped.ale.lives()
        self._game_over = False
        return observation, info


class _ChannelsLast(gymnasium.ObservationWrapper):
    """(stack, H, W) frame stacks as (H, W, stack), the layout of Conv2D."""

    def __init__(self, env: gymnasium.Env):
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gymnasium.spaces.Box(
            low=0, high=255, shape=space.shape[1:] + space.shape[:1],
            dtype=np.uint8)

    def observation(self, observation):
        return np.moveaxis(np.asarray(observation), 0, -1)


def _make_atari_env(env_name: str, make_kwargs: dict,
                    evaluation: bool) -> gymnasium.Env:
    """Nature-DQN preprocessing: 4-frame skip (max of the last two), 84x84
    grayscale, up to 30 no-op starts, 4 stacked frames; for training also
    episodic life and rewards clipped to their sign."""
    env = _make_gymnasium_env(env_name, dict(make_kwargs, frameskip=1))
    env = gymnasium.wrappers.AtariPreprocessing(
        env, noop_max=30, frame_skip=4, screen_size=84,
        terminal_on_life_loss=False, grayscale_obs=True)
    if not evaluation:
        env = EpisodicLife(env)
        env = gymnasium.wrappers.TransformReward(env, np.sign)
    env = gymnasium.wrappers.FrameStackObservation(env, 4,
                                                   padding_type='reset')
    return _ChannelsLast(env)


def _check_env_id(env_name: str) -> None:
    """Raises a helpful ValueError if `env_name` is not a registered id."""
    if not isinstance(env_name, str):
        raise ValueError(
            f'env_name={env_name!r} is invalid: it must be a registered '
            f'gymnasium id (a string), e.g. \'HalfCheetah-v5\'. List all '
            f'valid ids with: {_LIST_ENV_IDS_COMMAND}')
    if env_name.startswith('ALE/'):
        _register_atari()
    else:
        try:  # so that old-style Atari ids are known, and suggested right
            _register_atari()
        except ValueError:
            pass
    spec = gymnasium.registry.get(env_name)
    if spec is not None:
        if not env_name.startswith('ALE/') and 'ale_py' in str(
                spec.entry_point):
            game = env_name.split('-')[0].replace('NoFrameskip', '')
            raise ValueError(
                f'{env_name!r} is an old-style Atari id: this suite trains '
                "Atari with the DQN papers' preprocessing on ALE/ ids; use "
                f"'ALE/{game}-v5'.")
        return
    ids_by_lowercase = {
        env_id.lower(): env_id for env_id in gymnasium.registry}
    close = [ids_by_lowercase[c] for c in difflib.get_close_matches(
        env_name.lower(), list(ids_by_lowercase), n=5, cutoff=0.6)]
    if f'ALE/{env_name}' in gymnasium.registry:
        close = [f'ALE/{env_name}'] + [c for c in close
                                       if c != f'ALE/{env_name}'][:4]
    suggestion = 'Did you mean: ' + ', '.join(close) + '? ' if close else ''
    raise ValueError(
        f'Unknown gymnasium environment id {env_name!r}. {suggestion}'
        f'List all valid ids with: {_LIST_ENV_IDS_COMMAND}')


@gin.configurable
def create_environment(env_name: str = 'HalfCheetah-v5',
                       seed: Optional[int] = None,
                       noise_fraction: float = 0.0,
                       noise_std: float = 1.0,
                       noise_histogram_file: Optional[str] = None,
                       permute_features: bool = False,
                       adjust_env_period: Optional[int] = None,
                       max_episode_steps: Optional[int] = None,
                       render_mode: Optional[str] = None,
                       feature_layout_from: Optional[Any] = None,
                       evaluation: bool = False
                       ) -> GymnasiumEnvironment:
    """Creates a gymnasium environment as a TF-Agents `PyEnvironment`.

    The `NoiseFeatures` wrapper is only added when a noise option asks for it
    (noise_fraction > 0, a histogram file, or a permutation), so the default
    observation is the environment's own.

    Args:
        env_name: Registered gymnasium id, e.g. 'HalfCheetah-v5'.
        seed: Seed (None or an integer >= 0) of the environment, action space
            and noise.
        noise_fraction: Fraction in [0, 1) of observation features that are
            noise.
        noise_std: Standard deviation (finite, > 0) of Gaussian noise
            features.
        noise_histogram_file: Optional `.npz` to sample noise from per-feature
            histograms instead (see `make_feature_histograms`).
        permute_features: Shuffle all features with a fixed permutation.
        adjust_env_period: Redraw the permutation every this many env steps
            (a positive integer; implies `permute_features`).
        max_episode_steps: Positive integer overriding the registered time
            limit.
        render_mode: One of the environment's render modes, e.g.
            'rgb_array'.
        feature_layout_from: Environment (e.g. the training one) whose
            feature permutation this one follows, so that an evaluation env
            sees the same input layout. Ignored when it has no noise wrapper
            and none is requested here.
        evaluation: an evaluation environment: for Atari (ALE/... ids) no
            episodic life and raw rewards.

    Returns:
        The wrapped environment; `noise_feature_mask(env)` gives the mask.

    Raises:
        ValueError: On an unknown id (with suggestions), an invalid argument,
            or an error of `gymnasium.make`.
    """
    _check_env_id(env_name)
    _check_seed(seed)
    _check_noise_fraction(noise_fraction)
    _check_noise_std(noise_std)
    if adjust_env_period is not None:
        _check_positive_int(adjust_env_period, 'adjust_env_period')
    if noise_histogram_file is not None and not isinstance(
            noise_histogram_file, (str, os.PathLike)):
        raise ValueError(
            f'noise_histogram_file={noise_histogram_file!r} is invalid: it '
            'must be None or a path.')
    if render_mode is not None and not isinstance(render_mode, str):
        raise ValueError(
            f'render_mode={render_mode!r} is invalid: it must be None or a '
            "string such as 'rgb_array'.")
    make_kwargs = {'render_mode': render_mode}
    if max_episode_steps is not None:
        _check_positive_int(max_episode_steps, 'max_episode_steps')
        make_kwargs['max_episode_steps'] = int(max_episode_steps)
    layout_source = (None if feature_layout_from is None else
                     _find_noise_wrapper(feature_layout_from))
    wants_noise_wrapper = (noise_fraction > 0 or
                           noise_histogram_file is not None or
                           permute_features or adjust_env_period is not None)
    if (feature_layout_from is not None and
            wants_noise_wrapper != (layout_source is not None)):
        source_has = 'has a' if layout_source is not None else 'has no'
        this_wants = 'asks' if wants_noise_wrapper else 'does not ask'
        raise ValueError(
            f'feature_layout_from {source_has} NoiseFeatures wrapper, but '
            f'this environment {this_wants} for noise features or a '
            'permutation; both must match to share a feature layout.')
    if env_name.startswith('ALE/'):
        gym_env = _make_atari_env(env_name, make_kwargs, evaluation)
    else:
        gym_env = _make_gymnasium_env(env_name, make_kwargs)
    if wants_noise_wrapper:
        try:
            gym_env = NoiseFeatures(gym_env,
                                    noise_fraction=noise_fraction,
                                    noise_std=noise_std,
                                    histogram_file=noise_histogram_file,
                                    permute=permute_features,
                                    adjust_env_period=adjust_env_period,
                                    seed=seed,
                                    layout_source=layout_source)
        except Exception:
            gym_env.close()
            raise
    return GymnasiumEnvironment(gym_env, seed=seed)


def _make_gymnasium_env(env_name: str, make_kwargs: dict) -> gymnasium.Env:
    """`gymnasium.make`, raising ValueError for its errors or a bad mode."""
    try:
        gym_env = gymnasium.make(env_name, **make_kwargs)
    except Exception as error:  # gymnasium raises many types; report one.
        first_line = (str(error).strip().splitlines() or [''])[0]
        arguments = ', '.join(f'{key}={value!r}'
                              for key, value in make_kwargs.items())
        raise ValueError(
            f'gymnasium.make({env_name!r}, {arguments}) failed: '
            f'{type(error).__name__}: {first_line}') from error
    render_mode = make_kwargs.get('render_mode')
    allowed = gym_env.metadata.get('render_modes') or []
    if render_mode is not None and render_mode not in allowed:
        gym_env.close()
        raise ValueError(
            f'render_mode={render_mode!r} is invalid for {env_name}: allowed '
            f'are None or one of {list(allowed)}.')
    return gym_env


def _inner_environment(env: Any) -> Any:
    """Returns the environment wrapped by `env`, or None at the bottom."""
    if isinstance(env, GymnasiumEnvironment):
        return env.gym_env
    if isinstance(env, gymnasium.Wrapper):
        return env.env
    if hasattr(env, 'wrapped_env'):  # TF-Agents PyEnvironment wrappers.
        return env.wrapped_env()
    if hasattr(env, 'pyenv'):  # TFPyEnvironment.
        return env.pyenv
    batched_envs = getattr(env, 'envs', None)  # BatchedPyEnvironment.
    if batched_envs:
        return batched_envs[0]
    return None


def _find_noise_wrapper(env: Any) -> Optional[NoiseFeatures]:
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

    Follows gymnasium wrappers, `GymnasiumEnvironment`, TF-Agents wrappers and
    `TFPyEnvironment` / `BatchedPyEnvironment` (first sub-environment).

    Returns:
        A bool array over observation features (True marks noise), or None
        if there is no `NoiseFeatures` wrapper.
    """
    wrapper = _find_noise_wrapper(env)
    return None if wrapper is None else wrapper.noise_feature_mask.copy()
