"""results.jsonl (one row per evaluation) and final_metric.json.

Every row and the final metric carry the run's metadata (algorithm,
environment, seed, method, sparsity, update algorithm, config hash), so an
analysis never has to parse directory names. Rows are written by replacing
the whole file atomically, so a crash never leaves a partial line; a partial
or garbage line left by older versions is dropped with a warning.
"""

import json
import os
from typing import Dict, List

import numpy as np

from rigl.rl.layout import FINAL_METRIC_FILE, RESULTS_FILE
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run.checkpoints import write_atomically


class Results:
    """Reads and writes a run's results rows and final metric."""

    def __init__(self, root_dir: str, metadata: Dict):
        self.path = os.path.join(root_dir, RESULTS_FILE)
        self._root_dir = root_dir
        self._metadata = metadata

    def rows(self) -> List[Dict]:
        if not os.path.exists(self.path):
            return []
        rows = []
        with open(self.path) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    console.log(f'warning: dropped unreadable line {number} '
                                f'of {self.path}.')
        return rows

    def _write(self, rows: List[Dict]) -> None:
        write_atomically(self.path,
                         ''.join(json.dumps(row) + '\n' for row in rows))

    def truncate_after(self, step: int) -> None:
        """Drops rows newer than the checkpoint a run resumes from."""
        self._write([row for row in self.rows() if row.get('step', 0) <= step])

    def append(self, row: Dict) -> None:
        self._write(self.rows() + [dict(self._metadata, **row)])

    def final_metric(self, average_last_fraction: float) -> Dict:
        returns = [row['return_mean'] for row in self.rows()]
        if not returns:
            return {}
        count = max(1, int(round(len(returns) * average_last_fraction)))
        metric = dict(self._metadata,
                      final_return=float(np.mean(returns[-count:])),
                      num_evals_averaged=count,
                      average_last_fraction=average_last_fraction)
        write_atomically(os.path.join(self._root_dir, FINAL_METRIC_FILE),
                         json.dumps(metric, indent=2))
        return metric
