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

From Python (see docs/watching.md; the loaders live in `rigl.rl.loading`):

    policy = load_policy('pretrained/halfcheetah_td3')
    env = make_environment('pretrained/halfcheetah_td3', seed=0)
    time_step = env.reset()
    while not time_step.is_last():
        time_step = env.step(policy.action(time_step))
"""

import argparse
import os
import sys
from typing import Any, List, Optional, Sequence

# MuJoCo reads MUJOCO_GL when it is imported: choose headless EGL rendering
# before anything imports it, unless there is a display or a user choice.
if (not os.environ.get('MUJOCO_GL') and not os.environ.get('DISPLAY') and
        not os.environ.get('WAYLAND_DISPLAY')):
    os.environ['MUJOCO_GL'] = 'egl'

import rigl  # noqa: E402,F401  (before TensorFlow: picks the Keras)
# The loaders are the library's; they are named here too, so that
# `from rigl.rl.view import load_policy, make_environment` keeps working.
from rigl.rl.loading import CHECKPOINT_FILES  # noqa: E402,F401
from rigl.rl.loading import checkpoint_dirs  # noqa: E402,F401
from rigl.rl.loading import CheckpointPolicy  # noqa: E402,F401
from rigl.rl.loading import environment_kwargs  # noqa: E402,F401
from rigl.rl.loading import find_run_file  # noqa: E402,F401
from rigl.rl.loading import is_checkpoint_dir  # noqa: E402,F401
from rigl.rl.loading import load_policy  # noqa: E402
from rigl.rl.loading import LoadError  # noqa: E402
from rigl.rl.loading import make_environment  # noqa: E402
from rigl.rl.loading import newest_checkpoint  # noqa: E402,F401
from rigl.rl.loading import POLICY_FILE  # noqa: E402,F401
from rigl.rl.loading import read_run  # noqa: E402,F401
from rigl.rl.loading import resolve_policy_dir  # noqa: E402
from rigl.rl.loading import run_env_name  # noqa: E402,F401
from rigl.rl.loading import SavedPolicy  # noqa: E402,F401

VIDEO_SUFFIXES = ('.mp4', '.gif')

# A problem with the command line or its inputs, reported in one line: the
# loaders' errors and the command's own are one class.
ViewError = LoadError


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
        """Finishes the file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _check_video_path(path: str) -> None:
    """Raises ViewError unless `path` is a .mp4 or .gif file that can be
    written (its directory is made; an existing file is kept)."""
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
    """Whether an X or Wayland display is available."""
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
    """The command's options (argparse exits on unknown ones)."""
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


def _render(env: Any, render_mode: str) -> Any:
    """A frame of `env`; a rendering failure becomes a ViewError."""
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
