"""Shared set-up of the test suite.

The tests live in a tree that mirrors the package: the tests of
`rigl/rl/tfagents/algos/` are in `tests/rl/tfagents/algos/`, those of
`rigl/rl/study/` in `tests/rl/study/`, and so on; `tests/docs/` checks the
documentation and `tests/micronet_counting/` the counting package.

pytest imports test files in its default `prepend` mode, without
`__init__.py` files: each test file's directory goes on `sys.path` and the
file is imported by its base name, so base names are unique across the
tree. This file's directory goes on `sys.path` too, which makes the shared
modules next to it importable from every test file:

* `tiny`: the tiny run settings of each agent (SAC, TD3, DQN, PPO, ANF);
* `helpers`: the repository's paths, running a train script (in a
  subprocess or in this process) and reading a run's outputs.
"""
