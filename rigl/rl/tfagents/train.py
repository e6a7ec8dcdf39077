"""`train_eval`: the one gin entry point of every train script.

`train_eval.<name>` bindings are the algorithm's settings (each algorithm
declares them in its `Settings` dataclass, with types, ranges and defaults);
the loop the algorithm names then runs. One configurable for all agents, so
the original suite's `train_eval.*` names work for each script and never
collide when several agents are imported in one process.
"""

import os
from typing import Dict, Tuple

import gin
import tensorflow as tf
from tf_agents.specs import tensor_spec

from rigl.rl.tfagents.algos import dqn
from rigl.rl.tfagents.algos import ppo
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.algos import td3
from rigl.rl.tfagents.loops import off_policy
from rigl.rl.tfagents.loops import on_policy
from rigl.rl.tfagents import envs
from rigl.rl.tfagents.loops import session as session_lib
from rigl.rl.tfagents.run import checkpoints
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import run_dir
from rigl.rl.tfagents.run import settings as settings_lib

ALGORITHMS = {cls.name: cls for cls in (sac.Sac, td3.Td3, dqn.Dqn,
                                         ppo.Ppo)}
LOOPS = {'off_policy': off_policy.train_eval,
         'on_policy': on_policy.train_eval}


@gin.configurable
def train_eval(root_dir: str, algorithm: str = 'sac',
               allow_config_change: bool = False, **params) -> Dict:
    """Trains and evaluates `algorithm` with the bound settings.

    Args:
        root_dir: where every output goes; an existing run there resumes.
        algorithm: a key of `ALGORITHMS` (set by each script).
        allow_config_change: resume even if the config differs.
        **params: the algorithm's settings (`train_eval.<name>` bindings).

    Returns:
        The final metric.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f'Unknown algorithm {algorithm!r}; allowed: '
                         f'{", ".join(ALGORITHMS)}.')
    algorithm_class = ALGORITHMS[algorithm]
    run_dir.check_root_dir(root_dir)
    settings = settings_lib.build(algorithm_class.Settings, params,
                                  algorithm.upper())
    num_envs = getattr(settings, 'num_parallel_environments', 1)
    with session_lib.Session(root_dir, algorithm_class, settings,
                             allow_config_change, num_envs) as session:
        return LOOPS[algorithm_class.loop](session)


def _gin_literal(value) -> str:
    """A recorded (JSON) gin value as gin source text."""
    if isinstance(value, str) and value.startswith(('@', '%')):
        return value  # a configurable reference or macro, as recorded
    return repr(value)


def _is_own_parameter(key: str) -> bool:
    """True for a parameter of this package's configurables (masks,
    updaters, noise features, environments), which shape the networks.
    TF-Agents' own parameters are recorded too, but their defaults are
    passed by our code, and rebinding them from JSON would change types."""
    selector = key.rpartition('.')[0].rpartition('/')[-1]
    # gin has no public registry lookup; `_REGISTRY` is its own index.
    match = gin.config._REGISTRY.get_match(  # pylint: disable=protected-access
        selector)
    return match is not None and match.module.startswith('rigl.')


def load_algorithm(checkpoint_dir: str) -> Tuple[object, Dict]:
    """Rebuilds a run's algorithm and restores a checkpoint into it.

    The checkpoint's own config record (`config.json`: every setting and gin
    parameter in force) rebuilds the networks, masks and noise layout; its
    TF objects then overwrite their values. Used to watch or evaluate a run
    from a checkpoint rather than a saved policy.

    Args:
        checkpoint_dir: a `ROOT/checkpoints/ckpt-<step>` directory.

    Returns:
        (the algorithm, the checkpoint's config record).

    Raises:
        ValueError: if the directory is not a complete checkpoint or does
            not match the networks its config describes.
    """
    config = checkpoints.Checkpointer.read_config(checkpoint_dir)
    if not config or config.get('algorithm') not in ALGORITHMS:
        raise ValueError(f'{checkpoint_dir} is not a complete checkpoint (no '
                         f'readable {checkpoints.CONFIG_FILE}).')
    algorithm_class = ALGORITHMS[config['algorithm']]
    prefix = settings_lib.PREFIX + '.'
    params = {key[len(prefix):]: value
              for key, value in config['settings'].items()
              if key.startswith(prefix)}
    gin.clear_config()
    gin.parse_config([f'{key} = {_gin_literal(value)}'
                      for key, value in config['settings'].items()
                      if not key.startswith(prefix) and
                      _is_own_parameter(key)])
    # A record from before sparse execution existed ran masked.
    params.setdefault('sparse_execution', 'masked')
    settings = settings_lib.build(algorithm_class.Settings, params,
                                  config['algorithm'].upper())
    seed = int(config.get('seed', 0))
    env = envs.create_environment(env_name=settings.env_name, seed=seed)
    try:
        algorithm = algorithm_class(
            settings, tensor_spec.from_spec(env.observation_spec()),
            tensor_spec.from_spec(env.action_spec()), seed)
    finally:
        env.close()
    status = tf.train.Checkpoint(**algorithm.checkpoint_objects()).read(
        os.path.join(checkpoint_dir, 'tf'))
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        raise ValueError(f'{checkpoint_dir} does not match its own config: '
                         f'{str(error).splitlines()[0]}') from None
    status.expect_partial()
    return algorithm, config


def main(algorithm: str) -> None:
    """The command-line body of a `<algorithm>_train_eval.py` script."""
    console.run_main(lambda root_dir, allow: train_eval(
        root_dir, algorithm=algorithm, allow_config_change=allow))
