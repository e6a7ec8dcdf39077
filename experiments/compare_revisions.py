"""Checks that the working tree trains bit-identically to a git revision.

A refactor must not change what a run computes. This script runs the same
tiny same-seed runs (SAC with RigL, TD3, DQN and PPO by default; also ANF
noise redraws and RLx2's replay rules on request) from the working tree and
from another revision, and compares everything a run leaves behind that
does not measure time: every `results.jsonl` row, `final_metric.json`, and
for each checkpoint kept, every TF tensor (weights, masks, optimizer slots,
random generators), the replay arrays, `state.json` (counters and random
streams) and `resume.json` (environment states, the episode in progress).

    python experiments/compare_revisions.py                 # against HEAD
    python experiments/compare_revisions.py --rev=72e1665 --runs=sac,ppo
    python experiments/compare_revisions.py --baseline_tree=/work/anfstudy

The revision is exported with `git archive` into a scratch directory (the
repository's index and work tree are not touched). Prints one line per run,
`identical` or the first difference, and exits 1 if any run differs.
"""

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
CONFIGS = os.path.join('rigl', 'rl', 'tfagents', 'configs')
SCRIPTS = os.path.join('rigl', 'rl', 'tfagents')
# Fields of results rows and state.json that measure time, not the run.
TIMINGS = frozenset({'wall_time', 'loop_seconds', 'train_call_seconds',
                     'collect_seconds', 'train_seconds', 'steps_per_second'})

_OFF_POLICY = [
    'train_eval.num_iterations = 120',
    'train_eval.initial_collect_steps = 40',
    'train_eval.batch_size = 16',
    'train_eval.eval_interval = 40',
    'train_eval.eval_episodes = 2',
    'train_eval.checkpoint_interval = 30',
    'train_eval.summary_interval = 25',
    'train_eval.log_interval = 1000',
    'train_eval.seed = 3',
    'log_snr.freq = 50',
]
_PENDULUM = ["train_eval.env_name = 'Pendulum-v1'",
             'create_environment.max_episode_steps = 50',
             'train_eval.actor_fc_layers = (16, 16)',
             'train_eval.critic_joint_fc_layers = (16, 16)']
_RIGL = ['mask_updater.update_alg = "rigl"', 'mask_updater.update_freq = 20',
         'mask_updater.last_update_step = 100']


@dataclasses.dataclass(frozen=True)
class Case:
    """One tiny run: its train script, gin file and bindings."""
    script: str
    gin_file: str
    bindings: Sequence[str]


CASES: Dict[str, Case] = {
    'sac': Case('sac_train_eval.py', 'sac_mujoco_sparse_config.gin',
                _OFF_POLICY + _PENDULUM + _RIGL),
    'td3': Case('td3_train_eval.py', 'td3_mujoco_sparse_config.gin',
                _OFF_POLICY + _PENDULUM + _RIGL),
    'dqn': Case('dqn_train_eval.py', 'dqn_gym_sparse_config.gin',
                _OFF_POLICY + _RIGL + [
                    "train_eval.env_name = 'CartPole-v1'",
                    'train_eval.fc_layer_params = (64, 64)',
                    'train_eval.target_update_period = 10']),
    'ppo': Case('ppo_train_eval.py', 'ppo_mujoco_sparse_config.gin', [
        "train_eval.env_name = 'CartPole-v1'",
        'mask_updater.update_alg = "rigl"',
        'mask_updater.update_freq = 5',
        'mask_updater.last_update_step = 30',
        'train_eval.num_iterations = 6',
        'train_eval.num_parallel_environments = 2',
        'train_eval.collect_sequence_length = 48',
        'train_eval.minibatch_size = 32',
        'train_eval.num_epochs = 2',
        'train_eval.actor_fc_layers = (16, 16)',
        'train_eval.value_fc_layers = (16, 16)',
        'train_eval.eval_interval = 2',
        'train_eval.eval_episodes = 2',
        'train_eval.checkpoint_interval = 2',
        'train_eval.summary_interval = 1',
        'train_eval.policy_save_interval = 3',
        'log_snr.freq = 2',
        'train_eval.seed = 3']),
    # ANF: network-side noise, permutations redrawn every 70 env steps with
    # the replay emptied and refilled by the policy (the `noise_features`
    # vocabulary: revisions from aab40da on).
    'anf': Case('sac_train_eval.py', 'sac_anf_config.gin',
                _OFF_POLICY + _PENDULUM + [
                    'noise_features.adjust_period = 70',
                    'noise_features.empty_buffer_on_change = True',
                    'noise_features.refill_timesteps = 20',
                    "noise_features.refill_mode = 'policy'",
                    'mask_updater.update_freq = 20']),
    # RLx2: delayed 3-step targets and the dynamic replay capacity.
    'rlx2': Case('td3_train_eval.py', 'td3_rlx2_config.gin',
                 _OFF_POLICY + _PENDULUM + [
                     'train_eval.n_step_delay = 60',
                     'train_eval.replay_check_interval = 25',
                     'train_eval.replay_min_size = 40',
                     'train_eval.replay_distance_threshold = 0.0',
                     'train_eval.policy_save_interval = 50',
                     'mask_updater.update_freq = 20',
                     'mask_updater.begin_step = 20',
                     'mask_updater.last_update_step = 100']),
}
DEFAULT_RUNS = ('sac', 'td3', 'dqn', 'ppo')


def export_revision(revision: str, destination: str) -> str:
    """Writes the files of `revision` to `destination` (git archive)."""
    os.makedirs(destination, exist_ok=True)
    archive = subprocess.run(['git', '-C', REPO, 'archive', revision],
                             check=True, capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', destination], input=archive,
                   check=True)
    return destination


def train(tree: str, case: Case, root: str, timeout: float) -> Optional[str]:
    """Runs `case` with the code of `tree` into `root`; returns an error
    description, or None when the run finished."""
    shutil.rmtree(root, ignore_errors=True)
    command = ([sys.executable, os.path.join(tree, SCRIPTS, case.script),
                f'--root_dir={root}',
                f'--gin_file={os.path.join(CONFIGS, case.gin_file)}'] +
               [f'--gin_bindings={binding}' for binding in case.bindings])
    env = dict(os.environ, PYTHONPATH=tree)
    # gin `include` lines are relative to the tree's root.
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f'exit code {done.returncode}: ' + ' / '.join(tail)
    return None


def _first_difference(expected: Any, got: Any, where: str) -> Optional[str]:
    """Where two JSON-like values first differ (None if they are equal;
    NaN equals NaN)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got), key=str):
            if key not in got or key not in expected:
                return f'{where}.{key}: only in one run'
            found = _first_difference(expected[key], got[key],
                                      f'{where}.{key}')
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return f'{where}: {len(expected)} != {len(got)} items'
        for index, (a, b) in enumerate(zip(expected, got)):
            found = _first_difference(a, b, f'{where}[{index}]')
            if found:
                return found
        return None
    if (isinstance(expected, float) and isinstance(got, float) and
            math.isnan(expected) and math.isnan(got)):
        return None
    if expected != got or type(expected) is not type(got):
        return f'{where}: {expected!r} != {got!r}'
    return None


def _read_json_lines(path: str) -> List[Dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_json(path: str) -> Any:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_timings(item) for key, item in value.items()
                if key not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(item) for item in value]
    return value


def _compare_arrays(expected: Dict, got: Dict, where: str) -> Optional[str]:
    import numpy as np  # pylint: disable=import-outside-toplevel

    if sorted(expected) != sorted(got):
        only = sorted(set(expected) ^ set(got))
        return f'{where}: names differ ({", ".join(only[:3])} ...)'
    for name in sorted(expected):
        a, b = np.asarray(expected[name]), np.asarray(got[name])
        if a.shape != b.shape or a.dtype != b.dtype:
            return (f'{where} {name}: shape/dtype {a.shape} {a.dtype} != '
                    f'{b.shape} {b.dtype}')
        if not np.array_equal(a, b, equal_nan=a.dtype.kind == 'f'):
            return f'{where} {name}: values differ'
    return None


def _tensors(path: str) -> Dict:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # no start-up noise
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    reader = tf.train.load_checkpoint(os.path.join(path, 'tf'))
    return {name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()
            if not name.startswith('_CHECKPOINTABLE_OBJECT_GRAPH')}


def _replay(path: str) -> Dict:
    import numpy as np  # pylint: disable=import-outside-toplevel

    file = os.path.join(path, 'replay.npz')
    if not os.path.exists(file):
        return {}
    with np.load(file) as data:
        return {name: data[name] for name in data.files}


def compare_checkpoint(expected: str, got: str) -> Optional[str]:
    """The first difference between two checkpoint directories."""
    name = os.path.basename(expected)
    for file in ('state.json', 'resume.json', 'config.json'):
        found = _first_difference(
            _without_timings(_read_json(os.path.join(expected, file))),
            _without_timings(_read_json(os.path.join(got, file))),
            f'{name}/{file}')
        if found:
            return found
    return (_compare_arrays(_tensors(expected), _tensors(got),
                            f'{name} tensor') or
            _compare_arrays(_replay(expected), _replay(got),
                            f'{name} replay'))


def compare_runs(expected: str, got: str) -> Optional[str]:
    """The first difference between two finished run directories: results
    rows, final metric, then every kept checkpoint (None: identical)."""
    found = _first_difference(
        _without_timings(_read_json_lines(os.path.join(expected,
                                                       'results.jsonl'))),
        _without_timings(_read_json_lines(os.path.join(got,
                                                       'results.jsonl'))),
        'results')
    found = found or _first_difference(
        _read_json(os.path.join(expected, 'final_metric.json')),
        _read_json(os.path.join(got, 'final_metric.json')), 'final_metric')
    if found:
        return found
    directory = os.path.join(expected, 'checkpoints')
    names = sorted(name for name in os.listdir(directory)
                   if name.startswith('ckpt-'))
    others = sorted(name for name in os.listdir(os.path.join(got,
                                                             'checkpoints'))
                    if name.startswith('ckpt-'))
    if names != others:
        return f'checkpoints: {names} != {others}'
    for name in names:
        found = compare_checkpoint(os.path.join(directory, name),
                                   os.path.join(got, 'checkpoints', name))
        if found:
            return found
    return None


def compare_case(name: str, baseline_tree: str, work_dir: str,
                 timeout: float) -> str:
    """Runs case `name` from both trees; returns its report line."""
    case = CASES[name]
    started = time.time()
    roots = {}
    for label, tree in (('baseline', baseline_tree), ('working', REPO)):
        roots[label] = os.path.join(work_dir, f'{name}_{label}')
        error = train(tree, case, roots[label], timeout)
        if error:
            return f'{name}: the {label} run failed ({error})'
    difference = compare_runs(roots['baseline'], roots['working'])
    seconds = time.time() - started
    if difference:
        return f'{name}: DIFFERS at {difference} ({seconds:.0f} s)'
    return f'{name}: identical ({seconds:.0f} s)'


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rev', default='HEAD',
                        help='the git revision to compare with (default HEAD)')
    parser.add_argument('--baseline_tree', default=None,
                        help='a directory holding the baseline code instead '
                             'of --rev (e.g. a pinned git worktree)')
    parser.add_argument('--runs', default=','.join(DEFAULT_RUNS),
                        help=f'comma-separated, of {", ".join(CASES)} '
                             f'(default {",".join(DEFAULT_RUNS)})')
    parser.add_argument('--work_dir', default=None,
                        help='where the runs go (default: a temporary '
                             'directory, removed afterwards)')
    parser.add_argument('--timeout', type=float, default=900,
                        help='seconds allowed per run')
    args = parser.parse_args(argv)
    runs = [run for run in args.runs.split(',') if run]
    unknown = [run for run in runs if run not in CASES]
    if unknown or not runs:
        parser.error(f'--runs: unknown {", ".join(unknown) or "(none)"}; '
                     f'allowed: {", ".join(CASES)}')
    args.runs = runs
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='compare_revisions_')
    try:
        baseline = args.baseline_tree or export_revision(
            args.rev, os.path.join(work_dir, 'baseline_tree'))
        print(f'baseline: {args.baseline_tree or args.rev}; working tree: '
              f'{REPO}', flush=True)
        lines = []
        for name in args.runs:
            lines.append(compare_case(name, baseline, work_dir,
                                      args.timeout))
            print(lines[-1], flush=True)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0 if all(line.split(': ', 1)[1].startswith('identical')
                    for line in lines) else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
