"""Everything that makes a run sparse, one job per module.

* `spec`: the run's sparse method as one typed object (`SparseMethod`:
  method, sparsity, distribution, per-network overrides, schedule), read
  once from gin;
* `updaters`: the registry of mask-update rules (static, SET, RigL,
  magnitude pruning), their drop-fraction schedule and gin's
  `mask_updater`; a new rule is a `MaskUpdater` subclass decorated with
  `@updaters.register('name')`;
* `masked_optimizer`: `MaskedOptimizer`, which masks gradients, advances
  gradual pruning and runs the rule inside the agent's train step: where
  masks change;
* `targets`: target networks kept as sparse as their online networks;
* `compressed` and `csr`: layers that hold only their active weights
  ('sparse' execution) and their sparse-dense product kernels;
* `clipping`: gradient clipping in 'sparse' execution, as masked execution
  clips;
* `width`: widths and sparsities at a fixed parameter budget
  (parameter-matched dense, wide sparse networks).
"""
