"""The whole report of a study: read its runs, group them, compute their
statistics, and write ROOT/report/ (summary.csv, report.md, figures)."""

import os
from typing import Any, Dict, Sequence

from rigl.rl.layout import FINAL_METRIC_FILE
from rigl.rl.layout import REPORT_DIR
from rigl.rl.layout import RESULTS_FILE
from rigl.rl.report import figures as figures_lib
from rigl.rl.report import groups as groups_lib
from rigl.rl.report import markdown
from rigl.rl.report import runs as runs_lib


def _check_reps(**counts: Any) -> None:
    """Raises ValueError unless each count is a whole number >= 1."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'--{name}={value}: must be a whole number >= 1 '
                             '(bootstrap replications).')


def build_report(root_dir: str, reference: str = 'method=dense',
                 match: Sequence[str] = ('algorithm', 'env_name'),
                 reps: int = 10000, curve_reps: int = 2000,
                 log: runs_lib.Log = print) -> Dict[str, Any]:
    """Writes ROOT/report/: summary.csv, report.md and the figures.

    Args:
        root_dir: the study root; every run below it is read.
        reference: DIM=VALUE[,...]: the group each group is normalised by.
        match: dimensions a reference group shares with the group.
        reps: bootstrap replications for the final-score CIs.
        curve_reps: bootstrap replications per point of curves and
            profiles.
        log: gets the warnings and the closing line naming what was
            written.

    Returns:
        {'groups': [...], 'figures': {name: path}, 'summary': rows}.

    Raises:
        ValueError: for bad arguments, a study without runs, or an unknown
            or ambiguous reference.
    """
    _check_reps(reps=reps, curve_reps=curve_reps)
    runs = runs_lib.read_runs(root_dir, log)
    if not runs:
        raise ValueError(f'no runs under {root_dir} (no {RESULTS_FILE} or '
                         f'{FINAL_METRIC_FILE} found).')
    groups = groups_lib.make_groups(runs)
    unstarted = groups_lib.attach_plan(groups, runs_lib.read_plan(root_dir))
    groups_lib.assign_references(
        groups, groups_lib.parse_reference(reference), match)
    groups_lib.compute_stats(groups, reps)
    out = os.path.join(root_dir, REPORT_DIR)
    os.makedirs(out, exist_ok=True)
    summary = markdown.write_summary(groups, os.path.join(out, 'summary.csv'))
    figures, notes = figures_lib.draw_figures(groups, out, curve_reps)
    with open(os.path.join(out, 'report.md'), 'w') as f:
        f.write(markdown.report_markdown(root_dir, runs, groups, figures,
                                         notes, reference, match, reps,
                                         unstarted))
    log(f'wrote {out}/: summary.csv, report.md, '
        f'{", ".join(os.path.basename(p) for p in figures.values())}')
    return {'groups': groups, 'figures': figures, 'summary': summary}
