"""`train_eval`: the one gin entry point of every train script.

`train_eval.<name>` bindings are the algorithm's settings (each algorithm
declares them in its `Settings` dataclass, with types, ranges and defaults);
the loop the algorithm names then runs. One configurable for all agents, so
the original suite's `train_eval.*` names work for each script and never
collide when several agents are imported in one process.
"""

from typing import Dict

import gin

from rigl.rl.tfagents.algos import dqn
from rigl.rl.tfagents.algos import ppo
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.algos import td3
from rigl.rl.tfagents.loops import off_policy
from rigl.rl.tfagents.loops import on_policy
from rigl.rl.tfagents.loops import session as session_lib
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import run_dir
from rigl.rl.tfagents.run import settings as settings_lib

ALGORITHMS = {cls.name: cls for cls in (sac.Sac, td3.Td3, dqn.Dqn,
                                         ppo.Ppo)}
LOOPS = {'off_policy': off_policy.train_eval, 'on_policy': on_policy.train_eval}


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


def main(algorithm: str) -> None:
    """The command-line body of a `<algorithm>_train_eval.py` script."""
    console.run_main(lambda root_dir, allow: train_eval(
        root_dir, algorithm=algorithm, allow_config_change=allow))
