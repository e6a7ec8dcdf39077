"""Reading a study's runs from disk: each run directory's results,
final metric and settings, and the sweep's plan.

The file names come from `rigl.rl.layout`: `results.jsonl` (one row per
evaluation), `final_metric.json` (once a run has finished), `run.json` (its
config settings) and, at the study root, `study_plan.json`.
"""

import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Optional

from rigl.rl.layout import FINAL_METRIC_FILE
from rigl.rl.layout import REPORT_DIR
from rigl.rl.layout import RESULTS_FILE
from rigl.rl.layout import RUN_FILE
from rigl.rl.layout import STUDY_PLAN_FILE as PLAN_FILE

Log = Callable[[str], None]


@dataclasses.dataclass
class RunData:
    """One run's rows, final metric and (optional) config settings.

    Attributes:
        path: the run directory, relative to the study root.
        rows: the rows of its `results.jsonl` (one per evaluation).
        final: its `final_metric.json`, or None while it is in progress.
        settings: the config settings its `run.json` records ({} without).
        dims: its group dimensions (set by `groups.assign_dims`).
    """
    path: str
    rows: List[Dict]
    final: Optional[Dict]
    settings: Dict[str, Any]
    dims: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether the run has a readable final metric."""
        return self.final is not None

    @property
    def metadata(self) -> Dict:
        """The run's metadata: its final metric, else its last row."""
        return self.final if self.final is not None else self.rows[-1]

    @property
    def seed(self) -> Any:
        """The seed its metadata records."""
        return self.metadata.get('seed')


def _read_rows(path: str) -> List[Dict]:
    """The rows of a `results.jsonl`, skipping damaged lines (the run's own
    reader drops them too)."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def _read_final(path: str, log: Log) -> Optional[Dict]:
    """A run's final metric, or None (with a warning line to `log`) when
    the file cannot be read or has no numeric `final_return`."""
    try:
        with open(path) as f:
            final = json.load(f)
    except (OSError, ValueError) as error:
        log(f'warning: {path} cannot be read ({error}); the run counts as '
            'in progress.')
        return None
    value = final.get('final_return') if isinstance(final, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        log(f'warning: {path} has no numeric final_return (got {value!r}); '
            'the run counts as in progress.')
        return None
    return final


def _read_settings(path: str) -> Dict[str, Any]:
    """The config settings a `run.json` records ({} if unreadable)."""
    try:
        with open(path) as f:
            config = json.load(f).get('config', {})
        return config.get('settings', {})
    except (OSError, ValueError):
        return {}


def read_runs(root_dir: str, log: Log = print) -> List[RunData]:
    """Every run directory under `root_dir` with results.

    Args:
        root_dir: the study root; it is walked at any depth, in sorted
            order, except for its report directory.
        log: gets a warning line for each unreadable final metric.

    Returns:
        The runs with at least one row or a readable final metric.
    """
    runs = []
    for directory, subdirs, names in os.walk(root_dir):
        subdirs[:] = sorted(d for d in subdirs if not (
            directory == root_dir and d == REPORT_DIR))
        if RESULTS_FILE not in names and FINAL_METRIC_FILE not in names:
            continue
        rows = (_read_rows(os.path.join(directory, RESULTS_FILE))
                if RESULTS_FILE in names else [])
        final = None
        if FINAL_METRIC_FILE in names:
            final = _read_final(os.path.join(directory, FINAL_METRIC_FILE),
                                log)
        if not rows and final is None:
            continue
        settings = (_read_settings(os.path.join(directory, RUN_FILE))
                    if RUN_FILE in names else {})
        runs.append(RunData(os.path.relpath(directory, root_dir), rows, final,
                            settings))
    return runs


def read_plan(root_dir: str) -> List[Dict]:
    """The planned runs of the sweep's plan.

    Args:
        root_dir: the study root.

    Returns:
        The entries of ROOT/study_plan.json that name a run directory
        ([] without a readable plan).
    """
    try:
        with open(os.path.join(root_dir, PLAN_FILE)) as f:
            return [entry for entry in json.load(f)['runs']
                    if isinstance(entry, dict) and 'dir' in entry]
    except (OSError, ValueError, KeyError, TypeError):
        return []
