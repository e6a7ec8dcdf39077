"""Loading a trained run: its saved policy or checkpoint, its run record
(`run.json`) and the environment it was trained on.

    policy = load_policy('pretrained/halfcheetah_td3')
    env = make_environment('pretrained/halfcheetah_td3', seed=0)
    time_step = env.reset()
    while not time_step.is_last():
        time_step = env.step(policy.action(time_step))

A policy directory is a saved policy (`ROOT/policy`,
`ROOT/policies/policy-<step>`), a checkpoint (`ROOT/checkpoints/ckpt-<step>`)
or a run root (then `ROOT/policy`, or the newest checkpoint of a run that has
not finished). Finding files needs nothing heavy; TensorFlow, TF-Agents and
the environments are imported only by the functions that load or build
them. `rigl.rl.view` is the command line on top of these.
"""

import json
import os
import sys
from typing import Any, Dict, List, Optional, Union

from rigl.rl import layout
from rigl.rl.layout import RUN_FILE

POLICY_FILE = 'saved_model.pb'
# What makes a complete checkpoint directory (see run/checkpoints.py).
CHECKPOINT_FILES = ('tf.index', layout.CHECKPOINT_CONFIG_FILE)
# create_environment arguments that `make_environment` sets itself rather
# than taking from the run's config.
_OWN_ENV_ARGS = ('env_name', 'seed', 'render_mode', 'feature_layout_from',
                 'evaluation')
# The repository: relative files of a run's config may be found here.
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class LoadError(Exception):
    """A run, policy or environment that cannot be loaded; the message is
    one line for the user."""


def _is_policy_dir(path: str) -> bool:
    """Whether `path` holds a saved policy."""
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
    """The step of a `ckpt-<step>` directory (-1 for another name)."""
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
        LoadError: If `path` is missing, a file, or holds neither.
    """
    if not os.path.exists(path):
        raise LoadError(f'--policy_dir {path}: no such directory.')
    if not os.path.isdir(path):
        raise LoadError(f'--policy_dir {path} is a file; give a saved policy '
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
        raise LoadError(
            f'--policy_dir {path} has no final policy (policy/) yet; pass one '
            f'of {policies}/{{{",".join(saved)}}}, e.g. '
            f'{os.path.join(policies, saved[-1])}.')
    raise LoadError(
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
        LoadError: If the file exists but is not valid JSON.
    """
    run_file = find_run_file(path)
    if run_file is None:
        return None
    try:
        with open(run_file) as f:
            run = json.load(f)
    except (OSError, ValueError) as error:
        raise LoadError(f'cannot read {run_file}: {error}') from None
    if not isinstance(run, dict):
        raise LoadError(f'{run_file} is not a run record (a JSON object).')
    run['_path'] = run_file
    return run


def _run_settings(run: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The config settings a run record holds ({} without)."""
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
    bases = [_REPO]
    if run and run.get('_path'):
        bases.insert(0, os.path.dirname(run['_path']))
    for base in bases:
        if os.path.exists(os.path.join(base, value)):
            return os.path.join(base, value)
    return value


def environment_kwargs(run: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The run's `create_environment.*` settings (its noise feature layout)
    that `create_environment` accepts, without the ones `make_environment`
    sets itself."""
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
                     render_mode: Optional[str] = None) -> Any:
    """The environment a saved policy was trained on, with the run's noise
    features and feature layout.

    Args:
        policy_dir: a saved policy or run root inside a run directory (its
            `run.json` gives the environment), or None with `env_name`.
        env_name: a gymnasium id; overrides the run's.
        seed: seed of the environment (and its noise features).
        render_mode: None, 'rgb_array' or 'human'.

    Returns:
        A TF-Agents `PyEnvironment` (unbatched, in evaluation mode).

    Raises:
        LoadError: If no environment id is known or the environment cannot
            be made.
    """
    from rigl.rl.tfagents import envs
    from rigl.rl.tfagents.run import seeding

    run = read_run(policy_dir) if policy_dir else None
    env_name = env_name or run_env_name(run)
    if not env_name:
        where = (f'no {RUN_FILE} in {policy_dir} or above it'
                 if policy_dir else 'no --policy_dir')
        raise LoadError(f'unknown environment ({where}); pass --env_name.')
    kwargs = environment_kwargs(run)
    try:
        layout_env = None
        if kwargs.get('permute_features') or kwargs.get('adjust_env_period'):
            # The training env drew its permutation from this seed (see
            # loops.session); an env seeded alike has the same layout.
            if kwargs.get('adjust_env_period'):
                period = kwargs['adjust_env_period']
                print('warning: the run redrew its feature permutation every '
                      f'{period} steps; showing its first layout, which may '
                      'not be the one this policy last saw.', file=sys.stderr)
            run_seed = int(run.get('seed', 0))
            layout_env = envs.create_environment(
                env_name=env_name, seed=seeding.derive(run_seed, 'env', 0),
                **kwargs)
        return envs.create_environment(
            env_name=env_name, seed=seed, evaluation=True,
            render_mode=render_mode, feature_layout_from=layout_env, **kwargs)
    except ValueError as error:
        raise LoadError(str(error).strip().splitlines()[0]) from None


class SavedPolicy:
    """A TF-Agents policy saved by `PolicySaver`, acting on unbatched
    TF-Agents time steps (as a `PyEnvironment` returns them)."""

    def __init__(self, policy_dir: str):
        """Loads the policy in `policy_dir` (a policy or a run root).

        Raises:
            LoadError: If there is no saved policy or it cannot be loaded.
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
            raise LoadError(f'cannot load the saved policy in {self.path}: '
                            f'{type(error).__name__}: {first}') from None
        if not hasattr(self._policy, 'action'):
            raise LoadError(f'{self.path} is a SavedModel but not a saved '
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

    def action(self, time_step: Any) -> Any:
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
            LoadError: If the checkpoint cannot be restored.
        """
        from rigl.rl.tfagents import train
        from rigl.rl.tfagents.loops import evaluator

        self.path = checkpoint_dir
        try:
            algorithm, _ = train.load_algorithm(checkpoint_dir)
        except ValueError as error:
            raise LoadError(str(error).splitlines()[0]) from None
        except Exception as error:  # pylint: disable=broad-except
            # A truncated or damaged file: TF raises many types.
            first = (str(error).strip().splitlines() or [''])[0]
            raise LoadError(f'cannot restore {checkpoint_dir}: '
                            f'{type(error).__name__}: {first}') from None
        self._spec = algorithm.observation_spec
        self._action = evaluator.single_action_fn(algorithm.eval_policy)

    @property
    def observation_shape(self) -> Optional[tuple]:
        """Shape of one observation (without the batch)."""
        return tuple(self._spec.shape)

    def reset(self) -> None:
        """Nothing to reset (the agents here are not recurrent)."""

    def action(self, time_step: Any) -> Any:
        """The greedy action (numpy, unbatched) for an unbatched time step."""
        import numpy as np

        return self._action(np.asarray(
            time_step.observation, self._spec.dtype.as_numpy_dtype))

    __call__ = action


Policy = Union[SavedPolicy, CheckpointPolicy]


def load_policy(policy_dir: str) -> Policy:
    """Loads a saved policy or a checkpoint's greedy policy.

    A run root watched from its checkpoints falls back to older ones when
    the newest cannot be restored (e.g. truncated by a crash), as a
    resumed run does, with a warning line on stderr; a checkpoint named by
    itself is not replaced.

    Args:
        policy_dir: a policy directory, a checkpoint directory or a run
            root.

    Returns:
        The policy; its `action(time_step)` takes unbatched time steps.

    Raises:
        LoadError: if nothing can be loaded.
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
        except LoadError as error:
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
            raise LoadError(f'{errors[0]}; an older checkpoint: {older[0]}')
    if len(errors) == 1:
        raise errors[0]
    raise LoadError(f'none of the {len(errors)} checkpoints of {policy_dir} '
                    f'can be restored; newest: {errors[0]}')
