"""Watch a trained agent: run a saved policy on its environment.

    python -m rigl.rl.view --policy_dir=DIR [--episodes=N] [--video=PATH]
        [--render=human] [--random] [--seed=S] [--max_steps=K]
        [--env_name=ID] [--verbose]

DIR is a saved policy (`ROOT/policy`, `ROOT/policies/policy-<step>`), a
checkpoint (`ROOT/checkpoints/ckpt-<step>`), or a run root (then `ROOT/policy`
is used, or the newest checkpoint of a run that has not finished, falling
back to an older one when it cannot be restored, as a resume does). The
environment, with the run's noise feature settings (`create_environment.*`),
comes from the `run.json` found in DIR or a directory above it; `--env_name`
overrides the id. One line per episode is printed: `episode N: return R,
length L`. `--video` is checked for writing before any episode runs.

`--render=human` opens a window (needs a display); `--video=PATH` writes an
MP4 (or a GIF if PATH ends in `.gif`). Without a display MuJoCo renders
headless through EGL (`MUJOCO_GL=egl`, unless MUJOCO_GL is set).

From Python (see docs/watching.md):

    policy = load_policy('pretrained/halfcheetah_td3')
    env = make_environment('pretrained/halfcheetah_td3', seed=0)
    time_step = env.reset()
    while not time_step.is_last():
        time_step = env.step(policy.action(time_step))
"""

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

# MuJoCo reads MUJOCO_GL when it is imported: choose headless EGL rendering
# before anything imports it, unless there is a display or a user choice.
if (not os.environ.get('MUJOCO_GL') and not os.environ.get('DISPLAY') and
        not os.environ.get('WAYLAND_DISPLAY')):
    os.environ['MUJOCO_GL'] = 'egl'

import rigl  # noqa: E402,F401  (before TensorFlow: picks the Keras)
from rigl.rl import layout  # noqa: E402
from rigl.rl.layout import RUN_FILE  # noqa: E402

POLICY_FILE = 'saved_model.pb'
# What makes a complete checkpoint directory (see run/checkpoints.py).
CHECKPOINT_FILES = ('tf.index', layout.CHECKPOINT_CONFIG_FILE)
VIDEO_SUFFIXES = ('.mp4', '.gif')
# create_environment arguments that view sets itself rather than taking
# from the run's config.
_OWN_ENV_ARGS = ('env_name', 'seed', 'render_mode', 'feature_layout_from',
                 'evaluation')


class ViewError(Exception):
    """A problem with the command line or its inputs, reported in one line."""


def _is_policy_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, POLICY_FILE))


def is_checkpoint_dir(path: str) -> bool:
    """True for a complete `ROOT/checkpoints/ckpt-<step>` directory."""
    return all(os.path.isfile(os.path.join(path, name))
               for name in CHECKPOINT_FILES)


def checkpoint_dirs(root: str) -> List[str]:
    """The complete checkpoints of a run root, newest first."""
    directory = layout.checkpoints_dir(root)
    if not os.path.isdir(directory):
        return []
    steps = [int(name[len('ckpt-'):]) for name in os.listdir(directory)
             if name.startswith('ckpt-') and name[len('ckpt-'):].isdigit()
             and is_checkpoint_dir(os.path.join(directory, name))]
    return [os.path.join(directory, f'ckpt-{step}')
            for step in sorted(steps, reverse=True)]


def _step_of(checkpoint_dir: str) -> int:
    suffix = os.path.basename(checkpoint_dir)[len('ckpt-'):]
    return int(suffix) if suffix.isdigit() else -1


def newest_checkpoint(root: str) -> Optional[str]:
    """The newest complete checkpoint of a run root, or None."""
    found = checkpoint_dirs(root)
    return found[0] if found else None


def resolve_policy_dir(path: str) -> str:
    """The saved policy or checkpoint directory that `path` names.

    Args:
        path: a saved policy directory, a checkpoint directory, or a run root
            (its `policy/`, else its newest checkpoint).

    Returns:
        The directory holding `saved_model.pb`, or a checkpoint directory.

    Raises:
        ViewError: If `path` is missing, a file, or holds neither.
    """
    if not os.path.exists(path):
        raise ViewError(f'--policy_dir {path}: no such directory.')
    if not os.path.isdir(path):
        raise ViewError(f'--policy_dir {path} is a file; give a saved policy '
                        'directory, a checkpoint or a run root.')
    if _is_policy_dir(path) or is_checkpoint_dir(path):
        return path
    if _is_policy_dir(layout.saved_policy_dir(path)):
        return layout.saved_policy_dir(path)
    checkpoint = newest_checkpoint(path)
    if checkpoint is not None:
        return checkpoint
    policies = os.path.join(path, layout.POLICIES_DIR)
    saved = []
    if os.path.isdir(policies):
        saved = sorted(
            (name for name in os.listdir(policies)
             if _is_policy_dir(os.path.join(policies, name))),
            key=lambda name: int(name.rsplit('-', 1)[-1])
            if name.rsplit('-', 1)[-1].isdigit() else -1)
    if saved:
        raise ViewError(
            f'--policy_dir {path} has no final policy (policy/) yet; pass one '
            f'of {policies}/{{{",".join(saved)}}}, e.g. '
            f'{os.path.join(policies, saved[-1])}.')
    raise ViewError(
        f'--policy_dir {path} holds no saved policy (no {POLICY_FILE} in it '
        'or in its policy/ directory) and no checkpoint.')


def find_run_file(path: str) -> Optional[str]:
    """The `run.json` in `path` or the nearest directory above it."""
    directory = os.path.abspath(path)
    while True:
        candidate = os.path.join(directory, RUN_FILE)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def read_run(path: str) -> Optional[Dict[str, Any]]:
    """The run record (`run.json`) that `path` belongs to, or None.

    The record gets a `_path` key with the file it was read from.

    Raises:
        ViewError: If the file exists but is not valid JSON.
    """
    run_file = find_run_file(path)
    if run_file is None:
        return None
    try:
        with open(run_file) as f:
            run = json.load(f)
    except (OSError, ValueError) as error:
        raise ViewError(f'cannot read {run_file}: {error}') from None
    if not isinstance(run, dict):
        raise ViewError(f'{run_file} is not a run record (a JSON object).')
    run['_path'] = run_file
    return run


def _run_settings(run: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    if not run:
        return {}
    return (run.get('config') or {}).get('settings') or {}


def run_env_name(run: Optional[Dict[str, Any]]) -> Optional[str]:
    """The environment id a run was trained on, or None."""
    if not run:
        return None
    return run.get('env_name') or _run_settings(run).get(
        'train_eval.env_name')


def _resolve_file(value: str, run: Optional[Dict[str, Any]]) -> str:
    """A relative file of the run's config: as given if it exists, else
    next to run.json or in the repository."""
    if os.path.isabs(value) or os.path.exists(value):
        return value
    bases = [os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))]
    if run and run.get('_path'):
        bases.insert(0, os.path.dirname(run['_path']))
    for base in bases:
        if os.path.exists(os.path.join(base, value)):
            return os.path.join(base, value)
    return value


def environment_kwargs(run: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The run's `create_environment.*` settings (its noise feature layout)
    that `create_environment` accepts, without the ones view sets."""
    import inspect

    from rigl.rl.tfagents import envs

    accepted = inspect.signature(envs.create_environment).parameters
    kwargs = {}
    for key, value in _run_settings(run).items():
        configurable, _, name = key.rpartition('.')
        if configurable != 'create_environment' or name in _OWN_ENV_ARGS:
            continue
        if name in accepted:
            kwargs[name] = value
    if kwargs.get('noise_histogram_file'):
        kwargs['noise_histogram_file'] = _resolve_file(
            kwargs['noise_histogram_file'], run)
    return kwargs


def make_environment(policy_dir: Optional[str] = None,
                     env_name: Optional[str] = None,
                     seed: Optional[int] = 0,
                     render_mode: Optional[str] = None):
    """The environment a saved policy was trained on, as a TF-Agents
    `PyEnvironment`, with the run's noise features and feature layout.

    Args:
        policy_dir: a saved policy or run root inside a run directory (its
            `run.json` gives the environment), or None with `env_name`.
        env_name: a gymnasium id; overrides the run's.
        seed: seed of the environment (and its noise features).
        render_mode: None, 'rgb_array' or 'human'.

    Raises:
        ViewError: If no environment id is known or the environment cannot
            be made.
    """
    from rigl.rl.tfagents import envs
    from rigl.rl.tfagents.run import seeding

    run = read_run(policy_dir) if policy_dir else None
    env_name = env_name or run_env_name(run)
    if not env_name:
        where = (f'no {RUN_FILE} in {policy_dir} or above it'
                 if policy_dir else 'no --policy_dir')
        raise ViewError(f'unknown environment ({where}); pass --env_name.')
    kwargs = environment_kwargs(run)
    try:
        layout = None
        if kwargs.get('permute_features') or kwargs.get('adjust_env_period'):
            # The training env drew its permutation from this seed (see
            # loops.session); an env seeded alike has the same layout.
            if kwargs.get('adjust_env_period'):
                period = kwargs['adjust_env_period']
                print('warning: the run redrew its feature permutation every '
                      f'{period} steps; showing its first layout, which may '
                      'not be the one this policy last saw.', file=sys.stderr)
            run_seed = int(run.get('seed', 0))
            layout = envs.create_environment(
                env_name=env_name, seed=seeding.derive(run_seed, 'env', 0),
                **kwargs)
        return envs.create_environment(
            env_name=env_name, seed=seed, evaluation=True,
            render_mode=render_mode, feature_layout_from=layout, **kwargs)
    except ValueError as error:
        raise ViewError(str(error).strip().splitlines()[0]) from None


class SavedPolicy:
    """A TF-Agents policy saved by `PolicySaver`, acting on unbatched
    TF-Agents time steps (as a `PyEnvironment` returns them)."""

    def __init__(self, policy_dir: str):
        """Loads the policy in `policy_dir` (a policy or a run root).

        Raises:
            ViewError: If there is no saved policy or it cannot be loaded.
        """
        import tensorflow as tf
        # Saved TF-Agents policies hold tfp distribution TypeSpecs, which
        # must be registered (by importing tfp) before loading.
        import tensorflow_probability  # noqa: F401

        self.path = resolve_policy_dir(policy_dir)
        try:
            self._policy = tf.saved_model.load(self.path)
        except Exception as error:  # TF raises many types; report one line.
            first = (str(error).strip().splitlines() or [''])[0]
            raise ViewError(f'cannot load the saved policy in {self.path}: '
                            f'{type(error).__name__}: {first}') from None
        if not hasattr(self._policy, 'action'):
            raise ViewError(f'{self.path} is a SavedModel but not a saved '
                            'TF-Agents policy (it has no action function).')
        action_function = self._policy.signatures['action']
        _, inputs = action_function.structured_input_signature
        self._observation_spec = next(
            (spec for name, spec in inputs.items()
             if name.endswith('observation')), None)
        self._state = None
        self.reset()

    @property
    def observation_shape(self) -> Optional[tuple]:
        """Shape of one observation (without the batch), if known."""
        if self._observation_spec is None:
            return None
        return tuple(self._observation_spec.shape[1:])

    def reset(self) -> None:
        """Starts a new episode (resets a recurrent policy's state)."""
        self._state = self._policy.get_initial_state(1)

    def action(self, time_step) -> Any:
        """The action (numpy, unbatched) for an unbatched time step."""
        import numpy as np
        from tf_agents.trajectories import time_step as ts

        observation = np.asarray(time_step.observation)
        if self._observation_spec is not None:
            observation = observation.astype(
                self._observation_spec.dtype.as_numpy_dtype, copy=False)
        batched = ts.TimeStep(
            step_type=np.asarray([time_step.step_type], dtype=np.int32),
            reward=np.asarray([time_step.reward], dtype=np.float32),
            discount=np.asarray([time_step.discount], dtype=np.float32),
            observation=observation[None])
        if self._state:
            step = self._policy.action(batched, self._state)
            self._state = step.state
        else:
            step = self._policy.action(batched)
        return step.action.numpy()[0]

    __call__ = action


class CheckpointPolicy:
    """The greedy policy of a run restored from one of its checkpoints
    (the networks rebuilt from the checkpoint's config, masks and ANF noise
    layout included), acting on unbatched TF-Agents time steps."""

    def __init__(self, checkpoint_dir: str):
        """Restores `checkpoint_dir` (`ROOT/checkpoints/ckpt-<step>`).

        Raises:
            ViewError: If the checkpoint cannot be restored.
        """
        from rigl.rl.tfagents import train
        from rigl.rl.tfagents.loops import session

        self.path = checkpoint_dir
        try:
            algorithm, _ = train.load_algorithm(checkpoint_dir)
        except ValueError as error:
            raise ViewError(str(error).splitlines()[0]) from None
        except Exception as error:  # pylint: disable=broad-except
            # A truncated or damaged file: TF raises many types.
            first = (str(error).strip().splitlines() or [''])[0]
            raise ViewError(f'cannot restore {checkpoint_dir}: '
                            f'{type(error).__name__}: {first}') from None
        self._spec = algorithm.observation_spec
        self._action = session.single_action_fn(algorithm.eval_policy)

    @property
    def observation_shape(self) -> Optional[tuple]:
        """Shape of one observation (without the batch)."""
        return tuple(self._spec.shape)

    def reset(self) -> None:
        """Nothing to reset (the agents here are not recurrent)."""

    def action(self, time_step) -> Any:
        """The greedy action (numpy, unbatched) for an unbatched time step."""
        import numpy as np

        return self._action(np.asarray(
            time_step.observation, self._spec.dtype.as_numpy_dtype))

    __call__ = action


def load_policy(policy_dir: str):
    """Loads a saved policy or a checkpoint's greedy policy (from a policy
    directory, a checkpoint directory or a run root).

    A run root watched from its checkpoints falls back to older ones when
    the newest cannot be restored (e.g. truncated by a crash), as a
    resumed run does; a checkpoint named by itself is not replaced.

    Raises:
        ViewError: if nothing can be loaded.
    """
    path = resolve_policy_dir(policy_dir)
    if not is_checkpoint_dir(path):
        return SavedPolicy(path)
    named = os.path.abspath(path) == os.path.abspath(policy_dir)
    candidates = [path] if named else checkpoint_dirs(policy_dir)
    errors = []
    for candidate in candidates:
        try:
            policy = CheckpointPolicy(candidate)
        except ViewError as error:
            errors.append(error)
            if candidate != candidates[-1]:
                print(f'warning: {error}; trying an older checkpoint.',
                      file=sys.stderr)
            continue
        print(f'policy: greedy policy restored from {candidate}',
              file=sys.stderr)
        return policy
    if named:
        older = [c for c in checkpoint_dirs(os.path.dirname(
            os.path.dirname(os.path.abspath(path))))
                 if _step_of(c) < _step_of(path)]
        if older:
            raise ViewError(f'{errors[0]}; an older checkpoint: {older[0]}')
    if len(errors) == 1:
        raise errors[0]
    raise ViewError(f'none of the {len(errors)} checkpoints of {policy_dir} '
                    f'can be restored; newest: {errors[0]}')


class RandomPolicy:
    """Uniform random actions within an environment's action spec."""

    def __init__(self, action_spec, seed: Optional[int]):
        import numpy as np
        from tf_agents.specs import array_spec

        self._spec = action_spec
        self._rng = np.random.RandomState(seed)
        self._sample = array_spec.sample_spec_nest

    def reset(self) -> None:
        """Nothing to reset."""

    def action(self, time_step) -> Any:
        """A random action; `time_step` is ignored."""
        del time_step
        return self._sample(self._spec, self._rng)


class VideoWriter:
    """Frames to an MP4 (imageio with ffmpeg) or a GIF, written as they
    come, so long videos need no memory."""

    def __init__(self, path: str, fps: float):
        self.path = path
        self.fps = fps
        self.frames = 0
        self.shape = None
        self._writer = None

    def append(self, frame) -> None:
        """Adds one RGB frame (H, W, 3 uint8)."""
        import imageio

        if self._writer is None:
            if self.path.lower().endswith('.gif'):
                self._writer = imageio.v2.get_writer(
                    self.path, mode='I', duration=1000.0 / self.fps, loop=0)
            else:
                # macro_block_size=2: keep any even size instead of scaling
                # to a multiple of 16.
                self._writer = imageio.v2.get_writer(
                    self.path, fps=self.fps, macro_block_size=2)
            self.shape = tuple(frame.shape)
        self._writer.append_data(frame)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _check_video_path(path: str) -> None:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ViewError(f'--video {path}: unsupported file type {suffix!r}; '
                        'use a .mp4 or .gif path.')
    if os.path.isdir(path):
        raise ViewError(f'--video {path} is a directory; give a file path.')
    if suffix == '.mp4':
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ViewError('--video: writing MP4 needs imageio-ffmpeg (pip '
                            'install -r requirements.txt); or write a .gif.'
                            ) from None
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise ViewError(f'--video {path}: cannot create {directory}: '
                        f'{error.strerror}.') from None
    # Before any episode runs: open the file as the writer will (an
    # existing video is kept until the writer replaces it).
    existed = os.path.exists(path)
    try:
        with open(path, 'ab'):
            pass
    except OSError as error:
        raise ViewError(f'--video {path}: cannot write it: '
                        f'{error.strerror}.') from None
    if not existed:
        os.remove(path)


def _has_display() -> bool:
    return bool(os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


def _quiet_libraries() -> None:
    """Hides TF's and absl's log lines, and MuJoCo's model warnings with
    the MUJOCO_LOG.TXT they write (errors still show)."""
    import logging
    import warnings

    logging.getLogger('tensorflow').setLevel(logging.ERROR)
    logging.getLogger('absl').setLevel(logging.ERROR)
    warnings.filterwarnings('ignore', category=UserWarning)
    warnings.filterwarnings('ignore', category=DeprecationWarning)
    try:
        import mujoco
        mujoco.set_mju_user_warning(lambda message: None)
    except ImportError:
        pass


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m rigl.rl.view',
        description='Run a saved policy (or random actions) on its '
                    'environment; show it in a window or write a video.')
    parser.add_argument('--policy_dir', help='a saved policy directory '
                        '(ROOT/policy, ROOT/policies/policy-STEP), a '
                        'checkpoint (ROOT/checkpoints/ckpt-STEP) or a run '
                        'root ROOT')
    parser.add_argument('--episodes', type=int, default=1,
                        help='episodes to run (default 1)')
    parser.add_argument('--video', metavar='PATH',
                        help='write the episodes to an MP4, or a GIF if PATH '
                             'ends in .gif')
    parser.add_argument('--render', choices=['human'],
                        help="'human': show a window (needs a display)")
    parser.add_argument('--random', action='store_true',
                        help='uniform random actions instead of the policy')
    parser.add_argument('--seed', type=int, default=0,
                        help='environment seed (default 0)')
    parser.add_argument('--max_steps', type=int, default=None,
                        help='stop each episode after this many steps')
    parser.add_argument('--env_name', help="gymnasium id, overriding the "
                        "run's (needed without a run.json)")
    parser.add_argument('--verbose', action='store_true',
                        help='show the warnings of TensorFlow and MuJoCo')
    return parser.parse_args(argv)


def _check_args(args: argparse.Namespace) -> None:
    """Checks everything that needs no TensorFlow, so mistakes fail fast."""
    if args.episodes < 1:
        raise ViewError(f'--episodes={args.episodes}: must be >= 1.')
    if args.max_steps is not None and args.max_steps < 1:
        raise ViewError(f'--max_steps={args.max_steps}: must be >= 1.')
    if args.seed < 0:
        raise ViewError(f'--seed={args.seed}: must be >= 0.')
    if args.render and args.video:
        raise ViewError('--render=human and --video are exclusive (the '
                        'environment renders in one mode); choose one.')
    if args.render == 'human' and not _has_display():
        raise ViewError('--render=human needs a display (DISPLAY is not '
                        'set); write a video with --video=PATH instead.')
    if args.video:
        _check_video_path(args.video)
    if args.policy_dir is None:
        if not args.random:
            raise ViewError('--policy_dir is required (or --random with '
                            '--env_name).')
        if not args.env_name:
            raise ViewError('--random without --policy_dir needs --env_name.')
    elif args.random:
        if not os.path.isdir(args.policy_dir):
            raise ViewError(f'--policy_dir {args.policy_dir}: no such '
                            'directory.')
    else:
        resolve_policy_dir(args.policy_dir)


def _render(env, render_mode: str):
    try:
        return env.render(render_mode)
    except Exception as error:  # pylint: disable=broad-except
        first = (str(error).strip().splitlines() or [''])[0]
        hint = ('' if os.environ.get('MUJOCO_GL') == 'osmesa' else
                ' (for MuJoCo without EGL, try MUJOCO_GL=osmesa)')
        raise ViewError(f'cannot render: {type(error).__name__}: '
                        f'{first}{hint}') from None


def run_episodes(env, policy, episodes: int, max_steps: Optional[int],
                 writer: Optional[VideoWriter]) -> List[float]:
    """Runs `episodes` episodes, printing one line each; returns returns."""
    returns = []
    for episode in range(1, episodes + 1):
        time_step = env.reset()
        policy.reset()
        if writer is not None:
            writer.append(_render(env, 'rgb_array'))
        total, length = 0.0, 0
        while not time_step.is_last():
            time_step = env.step(policy.action(time_step))
            total += float(time_step.reward)
            length += 1
            if writer is not None:
                writer.append(_render(env, 'rgb_array'))
            if max_steps is not None and length >= max_steps:
                break
        print(f'episode {episode}: return {total:.1f}, length {length}',
              flush=True)
        returns.append(total)
    return returns


def view(args: argparse.Namespace) -> int:
    """Runs the command; raises ViewError on a user-facing problem."""
    _check_args(args)
    if not args.verbose:
        _quiet_libraries()
    policy = None
    if not args.random:
        policy = load_policy(args.policy_dir)
    render_mode = ('rgb_array' if args.video else
                   'human' if args.render == 'human' else None)
    env = make_environment(args.policy_dir, args.env_name, args.seed,
                           render_mode)
    if args.random:
        policy = RandomPolicy(env.action_spec(), args.seed)
    else:
        expected = policy.observation_shape
        given = tuple(env.observation_spec().shape)
        if expected is not None and expected != given:
            raise ViewError(
                f'the policy in {policy.path} takes observations of shape '
                f'{expected}, but the environment gives {given}: another '
                'environment or noise setting than the training run\'s.')
    writer = None
    if args.video:
        fps = float(env.gym_env.metadata.get('render_fps') or 30)
        writer = VideoWriter(args.video, fps)
    try:
        returns = run_episodes(env, policy, args.episodes, args.max_steps,
                               writer)
    except KeyboardInterrupt:
        returns = None
    finally:
        if writer is not None:
            writer.close()
        env.close()
    if returns and len(returns) > 1:
        mean = sum(returns) / len(returns)
        print(f'mean return {mean:.1f} over {len(returns)} episodes')
    if writer is not None and writer.frames:
        height, width = writer.shape[:2]
        print(f'video: {args.video} ({writer.frames} frames, {width}x'
              f'{height}, {writer.fps:g} fps)')
    return 0 if returns is not None else 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = parse_args(argv)
    try:
        return view(args)
    except ViewError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
