"""The run directory: one process at a time, one config per run, clean
outputs for a fresh start.

* `lock()` takes an exclusive `flock` on `root_dir/.lock`; a second process
  on the same directory gets `RunDirBusy` naming the holder's pid.
* `config_record()` is the run's full config: the algorithm, every
  `train_eval` setting (defaults included) and every other gin parameter in
  force. It is saved with each checkpoint; `check_resume` refuses a resume
  whose config differs unless the user allows it.
* `prepare_fresh_start()` removes the outputs of an earlier attempt that
  wrote no checkpoint, so a new run never appends to them, but only when
  that attempt was this suite's (its start marker is there) and never a
  finished run; anything else in the directory stays untouched.
"""

import fcntl
import hashlib
import json
import os
import shutil
from typing import Any, Dict, List, Optional

import gin
from gin import config_parser

from rigl.rl.layout import (FINAL_METRIC_FILE, LOCK_FILE, OUTPUTS,
                             STARTED_FILE, SUMMARY_DIRS)
from rigl.rl.tfagents import anf
from rigl.rl.tfagents import train_hooks
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import settings as settings_lib
from rigl.rl.tfagents.sparsity import spec as sparsity_spec


def check_root_dir(root_dir: str) -> str:
    if not root_dir:
        raise ValueError('--root_dir must name a directory, got an empty '
                         'string.')
    if os.path.exists(root_dir) and not os.path.isdir(root_dir):
        raise ValueError(f'root_dir {root_dir!r} is a file, not a directory; '
                         'give a directory for the run outputs.')
    return root_dir


class RunDir:
    """Lock, config guard and fresh-start cleanup of one run directory."""

    def __init__(self, root_dir: str):
        self.root_dir = check_root_dir(root_dir)
        self._lock_file = None

    def lock(self) -> None:
        os.makedirs(self.root_dir, exist_ok=True)
        path = os.path.join(self.root_dir, LOCK_FILE)
        handle = open(path, 'a+')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or 'unknown'
            handle.close()
            raise console.RunDirBusy(
                f'root_dir {self.root_dir} is in use by process {holder} '
                f'(lock {path}); wait for it or use another root_dir.'
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle  # held until unlock() or process exit

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    def check_resume(self, saved: Optional[Dict], current: Dict,
                     allow_change: bool) -> None:
        """Raises ValueError if `current` cannot resume a run saved with
        `saved` (None: nothing to compare)."""
        if saved is None:
            return
        if saved.get('algorithm') != current['algorithm']:
            raise ValueError(
                f'root_dir {self.root_dir} holds a {saved.get("algorithm")} '
                f'run; this is {current["algorithm"]}. Use another root_dir.')
        # Noise features named in another vocabulary are no change.
        changes = config_changes(*anf.config.without_same_noise(
            saved['settings'], current['settings']))
        fixed = [f'{key} {old!r} -> {new!r}' for key, old, new in (
            (key, metadata(saved, 0)[key], metadata(current, 0)[key])
            for key in FIXED_BY_CHECKPOINT) if old != new]
        fixed += [f'{key} {old!r} -> {new!r}' for key, old, new in (
            (key, saved['settings'].get(key, ADDED_SETTINGS.get(key)),
             current['settings'].get(key, ADDED_SETTINGS.get(key)))
            for key in SETTINGS_FIXED_BY_CHECKPOINT) if old != new]
        # A hook's state (e.g. ReDo's random stream) is not in a checkpoint
        # saved without it.
        fixed += [f'{name} off -> on' for name in train_hooks.records(
            current['settings']) if name not in train_hooks.records(
                saved['settings'])]
        if fixed:
            raise ValueError(
                f'root_dir {self.root_dir} holds a run with another config: '
                f'{"; ".join(changes)}. A resume keeps the checkpoint\'s '
                f'masks, weight layout and replay, so it cannot change '
                f'{", ".join(fixed)} (not even with --allow_config_change). '
                'Use another root_dir.')
        if changes and not allow_change:
            raise ValueError(
                f'root_dir {self.root_dir} holds a run with another config: '
                f'{"; ".join(changes)}. Use another root_dir, or pass '
                '--allow_config_change to resume with the new one.')
        if changes:
            console.log(f'Resuming with a changed config: '
                        f'{"; ".join(changes)}.')

    def prepare_fresh_start(self) -> List[str]:
        """Before a run starts from step 0: removes a killed attempt's
        outputs and marks the start; returns the names removed.

        Raises:
            ValueError: the directory holds outputs this suite cannot prove
                are a killed attempt's (a finished run, a copied agent, a
                user's own files), which it never deletes.
        """
        found = [name for name in OUTPUTS
                 if os.path.exists(os.path.join(self.root_dir, name))]
        marker = os.path.join(self.root_dir, STARTED_FILE)
        if FINAL_METRIC_FILE in found:
            raise ValueError(
                f'root_dir {self.root_dir} holds a finished run '
                f'({FINAL_METRIC_FILE}) with no checkpoint to resume; it is '
                'not trained again. Use another root_dir.')
        if found and not os.path.exists(marker):
            raise ValueError(
                f'root_dir {self.root_dir} holds {", ".join(found)} but no '
                'checkpoint of a run started here, so nothing is deleted. '
                'Use another root_dir.')
        for name in found:
            path = os.path.join(self.root_dir, name)
            if name in SUMMARY_DIRS:
                _remove_event_files(path)
            elif os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        os.makedirs(self.root_dir, exist_ok=True)
        with open(marker, 'w') as f:
            f.write('outputs here belong to a run with no checkpoint yet\n')
        return found

    def checkpoint_written(self) -> None:
        """A checkpoint exists: the start marker's job is done."""
        try:
            os.remove(os.path.join(self.root_dir, STARTED_FILE))
        except FileNotFoundError:
            pass


def _remove_event_files(directory: str) -> None:
    """Removes TensorBoard event files (what a run writes there), then the
    directory if nothing else is in it."""
    for name in os.listdir(directory):
        if name.startswith('events.out.tfevents.'):
            os.remove(os.path.join(directory, name))
    if not os.listdir(directory):
        os.rmdir(directory)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


def gin_parameters() -> Dict[str, Any]:
    """Every gin parameter in force except `train_eval`'s, as
    {'[scope/]configurable.param': value} (from the operative config)."""
    parameters = {}
    parser = config_parser.ConfigParser(
        gin.operative_config_str(),
        gin.config.ParserDelegate(skip_unknown=True))
    for statement in parser:
        if not isinstance(statement, config_parser.BindingStatement):
            continue
        if statement.selector.split('.')[-1] == settings_lib.PREFIX:
            continue
        scope = f'{statement.scope}/' if statement.scope else ''
        parameters[f'{scope}{statement.selector}.{statement.arg_name}'] = (
            _jsonable(statement.value))
    return parameters


def config_record(algorithm: str, settings) -> Dict:
    """The run's full config, JSON-ready, with a short hash of it."""
    # The sparse method's parameters as bound: its configurables may be
    # called with explicit arguments, which the operative config omits;
    # so are old ANF noise bindings next to new ones (`anf.config`).
    values = {**settings_lib.as_bindings(settings), **gin_parameters(),
              **sparsity_spec.bound_values(), **anf.bound_values()}
    values = {key: values[key] for key in sorted(values)}
    digest = hashlib.sha256(json.dumps(
        [algorithm, values], sort_keys=True).encode()).hexdigest()[:12]
    return {'algorithm': algorithm, 'settings': _jsonable(values),
            'config_hash': digest}


# Settings added after runs were recorded, with the value that does what
# the code did before them: a record without one has that value.
ADDED_SETTINGS = {
    'train_eval.match_dense_params': False,
    'train_eval.keep_active_count': False,
    'train_eval.sparse_execution': 'masked',
    # ReDo (`train_hooks.redo`), off.
    'redo.every': 0, 'redo.tau': 0.1, 'redo.schedule': 'constant',
    'redo.recycle_fraction': 0.3, 'redo.end_step': 0, 'redo.networks': [],
    'train_eval.n_step': 1,
    # RLx2 (`algos.rlx2`): no delayed n-step, no dynamic replay; TD3's
    # per-network sparsities.
    'train_eval.n_step_delay': 0, 'train_eval.replay_check_interval': 0,
    'train_eval.replay_min_size': 100000,
    'train_eval.replay_distance_threshold': 0.2,
    'train_eval.actor_critic_sparsities_str': '',
    'train_eval.save_final_policy': True,
}


def config_changes(saved: Dict, current: Dict) -> List[str]:
    """'name old -> new' for every binding that differs (a setting the
    saved record predates counts as its `ADDED_SETTINGS` value)."""
    missing = object()
    changes = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key, missing), current.get(key, missing)
        if old is missing and new is not missing and key in ADDED_SETTINGS:
            old = ADDED_SETTINGS[key]
        if old != new:
            show = lambda v: 'unset' if v is missing else repr(v)  # noqa: E731
            changes.append(f'{key} {show(old)} -> {show(new)}')
    return changes


# Run identity a checkpoint fixes (masks, input layout): never changed on
# resume, so that the records always say what was trained.
FIXED_BY_CHECKPOINT = ('method', 'sparsity', 'sparsity_distribution',
                       'update_alg', 'noise_fraction')
# Settings a checkpoint fixes: 'sparse' execution stores a sparse layer's
# weights as values at positions, 'masked' as a dense kernel and a mask; the
# replay holds transitions of n_step steps.
SETTINGS_FIXED_BY_CHECKPOINT = ('train_eval.sparse_execution',
                                'train_eval.n_step',
                                'train_eval.keep_active_count')


def noise_fraction(values: Dict) -> float:
    """The fraction of ANF noise features in the input, whichever side
    draws them (`noise_features.*`, or the old `NetworkNoise.*` and
    `create_environment.*` bindings)."""
    return anf.noise_fraction(values)


def metadata(record: Dict, seed: int,
             method: Optional[sparsity_spec.SparseMethod] = None) -> Dict:
    """What identifies a run in its results rows and final metric: the
    algorithm, environment, seed, sparse method (whole, and its main fields
    flat for grouping), noise fraction and the training-step hooks that
    are on (e.g. ReDo's settings).

    `method` is the built algorithm's (with the sparsities it derived,
    e.g. for `keep_active_count`); by default it is read from `record`.
    """
    values = record['settings']
    method = method or sparsity_spec.from_values(values)
    return {
        'algorithm': record['algorithm'],
        'env_name': values.get('train_eval.env_name'),
        'seed': seed,
        'method': method.method,
        'sparsity': method.sparsity,
        'sparsity_distribution': method.distribution,
        'update_alg': method.update_alg,
        'noise_fraction': noise_fraction(values),
        'sparse_method': method.as_record(),
        'train_hooks': train_hooks.records(values),
        'config_hash': record['config_hash'],
    }
