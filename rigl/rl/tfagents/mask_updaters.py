"""Where masks change: the mask-update rules and the optimizer that runs them.

The code lives in the sparsity package, one job per module:

* `sparsity/updaters.py`: the registry of drop-and-grow rules (static, SET,
  RigL, magnitude pruning), their schedule, and gin's `mask_updater`
  (`mask_updater.update_alg`, ...) that builds the rule a run names;
* `sparsity/masked_optimizer.py`: `MaskedOptimizer`, which masks gradients,
  advances gradual pruning and runs the rule inside the agent's train step.

This module keeps their public names at the path that agents, configs'
documentation and users' own rules (`@mask_updaters.register('name')`)
import; new code imports the sparsity modules directly.
"""

from rigl.rl.tfagents.sparsity.masked_optimizer import (
    UPDATE_TIMINGS, MaskedOptimizer, build_slots_in_order, optimizer_slots,
    rarely)
from rigl.rl.tfagents.sparsity.updaters import (
    GROW_INITS, SCHEDULES, UPDATE_STATS, UPDATERS, MagnitudePruning,
    MaskUpdater, RigLUpdater, SETUpdater, StaticUpdater, mask_updater,
    register)

__all__ = [
    'GROW_INITS', 'SCHEDULES', 'UPDATE_STATS', 'UPDATERS', 'UPDATE_TIMINGS',
    'MagnitudePruning', 'MaskUpdater', 'MaskedOptimizer', 'RigLUpdater',
    'SETUpdater', 'StaticUpdater', 'build_slots_in_order', 'mask_updater',
    'optimizer_slots', 'rarely', 'register',
]
