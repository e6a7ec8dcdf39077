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

* `tiny`: the tiny run settings of each agent (SAC, TD3, DQN, PPO);
* `helpers`: the repository's paths, running a train script (in a
  subprocess or in this process) and reading a run's outputs.

One fixture is defined here for tests in several files: `tiny_local_study`,
a tiny study run once by the local backend, which the study tests and the
Ray tests both read.

Speed. pyproject.toml runs the suite on one pytest-xdist worker per core
with `--dist=loadgroup`: each worker takes the next test when it is nearly
done, so the order of the collection is the order of the start. This file
starts the slowest tests first (`SLOWEST_FIRST`), keeps the tests that share
a module- or session-scoped fixture (a Ray cluster, a trained run) on one
worker, so that it is built once, and runs TensorFlow in the test
processes on one intra-op thread per op, as the train scripts do. A worker
leaves without Python's teardown once its results are sent.
"""

import atexit
import os
import subprocess
import sys

import pytest

# The slowest tests (or files), slowest first: each starts as soon as a
# worker is free, so that no long test starts last. Measure with
# `python -m pytest -q -n 0 --durations=40 <paths>`.
SLOWEST_FIRST = (
    'tests/rl/test_sweep_ray.py',
    'tests/rl/test_distributed.py::test_killed_processes',
    'tests/rl/study/test_study.py::test_tiny_study_end_to_end',
    'tests/rl/test_distributed.py::test_all_roles',
    'tests/rl/tfagents/run/test_bit_identical_resume.py::'
    'test_killed_and_resumed_run_is_bit_identical',
    'tests/rl/tfagents/algos/test_sac.py::test_killed_run',
    'tests/rl/tfagents/sparsity/test_sparse_ppo.py::test_tiny_run',
    'tests/rl/tfagents/sparsity/test_sparse_targets.py',
    'tests/rl/tfagents/algos/test_optimizer_state_restore.py',
    'tests/rl/tfagents/run/test_run_trust.py',
    'tests/rl/tfagents/algos/test_rlx2.py::test_td3_rlx2_config',
    'tests/rl/test_view.py',
    'tests/test_import_order.py',
)


def _rank(nodeid: str) -> int:
    """The place of a test in SLOWEST_FIRST (its length if not there)."""
    for index, prefix in enumerate(SLOWEST_FIRST):
        if nodeid.startswith(prefix):
            return index
    return len(SLOWEST_FIRST)


def _shared_fixtures(item) -> list:
    """The module- or session-scoped fixtures of this test suite (not
    pytest's own) that `item` uses, as (where defined, name)."""
    info = getattr(item, '_fixtureinfo', None)
    return [(d.baseid, name)
            for name, definitions in (info.name2fixturedefs.items()
                                      if info else ())
            for d in definitions if d.scope != 'function' and d.baseid]


def _fixture_groups(items) -> dict:
    """{test: group} for the tests that share a module- or session-scoped
    fixture, directly or through another test (the users of a file's
    fixture and of a conftest fixture that one of them also uses form one
    group). A group is named by its first fixture's home and name."""
    shared = {item: _shared_fixtures(item) for item in items}
    shared = {item: fixtures for item, fixtures in shared.items() if fixtures}
    parent = {}

    def root(key):
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for fixtures in shared.values():
        keys = [root(fixture) for fixture in fixtures]
        for key in keys[1:]:
            parent[key] = keys[0]
    return {item: '::'.join(root(fixtures[0]))
            for item, fixtures in shared.items()}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Orders the slowest tests first and groups the users of a shared
    fixture (pytest-xdist's `xdist_group`, read by `--dist=loadgroup`), so
    that each shared fixture is built once, on one worker."""
    for item, group in _fixture_groups(items).items():
        item.add_marker(pytest.mark.xdist_group(group))
    # A stable sort: the rest keeps pytest's order.
    items.sort(key=lambda item: _rank(item.nodeid))


def _exit_without_teardown():
    """The last exit step of an xdist worker: its results are sent, so it
    leaves without Python's teardown of TensorFlow's objects (up to ten
    seconds of freeing graphs at the end of the suite, for nothing)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if os.environ.get('PYTEST_XDIST_WORKER'):
    # Registered before TensorFlow is imported: runs after every other exit
    # handler (atexit runs them in reverse order).
    atexit.register(_exit_without_teardown)


def pytest_configure(config):
    """TensorFlow in the processes that run tests runs an op on one thread
    unless TF_NUM_INTRAOP_THREADS says otherwise, as the train scripts do
    (`console.configure_devices`): in-process runs then train as the
    scripts do, and two xdist workers do not compete for the cores within
    an op. Set before any test file is imported (some start TensorFlow);
    not in xdist's controller, which runs no test."""
    if config.getoption('numprocesses', None) and not hasattr(
            config, 'workerinput'):
        return
    if os.environ.get('TF_NUM_INTRAOP_THREADS'):
        return
    import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already running: keep its count
        pass


@pytest.fixture(scope='session')
def tiny_local_study(tmp_path_factory):
    """A tiny SAC study run once by the local backend on 2 workers: one
    seed of update_alg 'set', 'rigl' and 'bogus' (which its script
    refuses). Returns (its root, the finished sweep's CompletedProcess);
    a test that changes the root works on a copy."""
    import helpers
    import tiny
    root = tmp_path_factory.mktemp('tiny_local_study') / 'study'
    done = subprocess.run(
        helpers.sweep_command(root, '--nocheck_configs', tiny.STUDY_GRID,
                              '--seeds=1', '--workers=2'),
        capture_output=True, text=True, timeout=400, cwd=helpers.REPO)
    return root, done
