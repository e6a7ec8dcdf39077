"""Gymnasium environments for TF-Agents, with optional ANF noise features.

TF-Agents 0.19 only ships adapters for the old `gym` API (and MuJoCo through
mujoco-py), so this module provides its own adapter for `gymnasium` 1.x,
Atari preprocessing and `create_environment`, which adds the environment
side's noise features of Automatic Noise Filtering (ANF) when they are
asked for (`rigl.rl.tfagents.anf`: extra observation features that carry no
information, so that one can measure whether sparse training learns to
ignore them).

Typical use (also configurable from gin):

    env = create_environment('HalfCheetah-v5', seed=0, noise_fraction=0.9)
    mask = anf.noise_feature_mask(env)  # True where a feature is noise.
"""

import difflib
from typing import Any, Optional

import gin
import gymnasium
import numpy as np
from tf_agents.environments import py_environment
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.typing import types

from rigl.rl.tfagents.anf import config as anf_config
from rigl.rl.tfagents.anf import env as anf_env
# Argument checks shared with the noise-feature wrapper.
from rigl.rl.tfagents.anf.config import check_positive_int
from rigl.rl.tfagents.anf.config import check_seed

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
        check_seed(seed)
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
        noise = anf_env.find_noise_wrapper(self)
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
        noise = anf_env.find_noise_wrapper(self)
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

    The `NoiseFeatures` wrapper is only added when noise features or a
    permutation are asked for on the environment side, by gin
    (`noise_features.where = 'env'` and its settings) or by the noise
    arguments here (also the deprecated `create_environment.*` bindings),
    so the default observation is the environment's own.

    Args:
        env_name: Registered gymnasium id, e.g. 'HalfCheetah-v5'.
        seed: Seed (None or an integer >= 0) of the environment, action space
            and noise.
        noise_fraction: Fraction in [0, 1) of observation features that are
            noise.
        noise_std: Standard deviation (finite, > 0) of Gaussian noise
            features.
        noise_histogram_file: Optional `.npz` to sample noise from per-feature
            histograms instead (see `anf.make_feature_histograms`).
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
        The wrapped environment; `anf.noise_feature_mask(env)` gives the
        mask.

    Raises:
        ValueError: On an unknown id (with suggestions), an invalid argument,
            or an error of `gymnasium.make`.
    """
    _check_env_id(env_name)
    check_seed(seed)
    noise = _noise_config(noise_fraction, noise_std, noise_histogram_file,
                          permute_features, adjust_env_period)
    if render_mode is not None and not isinstance(render_mode, str):
        raise ValueError(
            f'render_mode={render_mode!r} is invalid: it must be None or a '
            "string such as 'rgb_array'.")
    make_kwargs = {'render_mode': render_mode}
    if max_episode_steps is not None:
        check_positive_int(max_episode_steps, 'max_episode_steps')
        make_kwargs['max_episode_steps'] = int(max_episode_steps)
    layout_source = (None if feature_layout_from is None else
                     anf_env.find_noise_wrapper(feature_layout_from))
    if (feature_layout_from is not None and
            (noise is not None) != (layout_source is not None)):
        source_has = 'has a' if layout_source is not None else 'has no'
        this_wants = 'asks' if noise is not None else 'does not ask'
        raise ValueError(
            f'feature_layout_from {source_has} NoiseFeatures wrapper, but '
            f'this environment {this_wants} for noise features or a '
            'permutation; both must match to share a feature layout.')
    if env_name.startswith('ALE/'):
        gym_env = _make_atari_env(env_name, make_kwargs, evaluation)
    else:
        gym_env = _make_gymnasium_env(env_name, make_kwargs)
    if noise is not None:
        try:
            gym_env = anf_env.wrap(gym_env, noise, seed, layout_source)
        except Exception:
            gym_env.close()
            raise
    return GymnasiumEnvironment(gym_env, seed=seed)


def _noise_config(noise_fraction: float, noise_std: float,
                  noise_histogram_file: Optional[str],
                  permute_features: bool, adjust_env_period: Optional[int]
                  ) -> Optional[anf_config.NoiseConfig]:
    """Checks `create_environment`'s noise arguments; returns the
    environment side's noise features with the gin config in force (None:
    no wrapper)."""
    anf_config.check_fraction(noise_fraction)
    anf_config.check_std(noise_std)
    if adjust_env_period is not None:
        check_positive_int(adjust_env_period, 'adjust_env_period')
    anf_config.check_path(noise_histogram_file, 'noise_histogram_file')
    return anf_config.env_config(
        noise_fraction=noise_fraction, noise_std=noise_std,
        noise_histogram_file=noise_histogram_file,
        permute_features=permute_features,
        adjust_env_period=adjust_env_period)


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
