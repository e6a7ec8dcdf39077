"""The report's text: summary.csv (one row per group) and report.md (the
table, notes on references, the figures with captions, runs in progress
and planned groups without results).
"""

import csv
import math
import os
from typing import Dict, List, Optional, Sequence

from rigl.rl.report.figures import FIGURES
from rigl.rl.report.groups import final_train_flops
from rigl.rl.report.groups import Group
from rigl.rl.report.runs import RunData

SUMMARY_STATS = ('mean', 'iqm', 'iqm_ci_low', 'iqm_ci_high',
                 'optimality_gap', 'reference', 'iqm_normalized',
                 'iqm_normalized_ci_low', 'iqm_normalized_ci_high',
                 'train_flops')
CAPTIONS = {
    'learning_curves': 'Eval return against environment steps: the IQM over '
    'seeds at each evaluation, shaded 95% stratified bootstrap CI. One panel '
    'per task and sparsity; the dense reference (dashed) is in each.',
    'final_vs_sparsity': "The paper's main figure: final score (IQM over "
    'seeds) of each method at each sparsity, divided by the reference '
    "group's IQM (dashed line at its level, band: its CI); bars: 95% CIs.",
    'performance_profiles': 'Fraction of runs whose final score exceeds τ '
    '(normalised by the reference IQM where there is a positive one), with '
    '95% bootstrap bands: a curve above another is better over the whole '
    'distribution, not only on average.',
    'score_vs_flops': 'Final score (IQM, 95% CI) against the cumulative '
    'training FLOPs an ideal sparse implementation would spend (MicroNet '
    'counting; the median over seeds); labels are sparsities.',
    'anf_connectivity': 'Mean active input-layer weights per real feature '
    '(solid) and per noise feature (dotted) over training: ANF works when '
    'noise features lose their connections.',
}


# summary.csv --------------------------------------------------------------

def _summary_row(group: Group, dims: Sequence[str]) -> Dict:
    """One group's row of summary.csv (NaN where there is no value)."""
    s = group.stats
    return dict(group=group.label, **{d: group.dims[d] for d in dims},
                n_seeds=s['n'], n_in_progress=group.in_progress,
                n_not_started=group.not_started, status=group.status,
                mean=s['mean'], iqm=s['iqm'], iqm_ci_low=s['iqm_low'],
                iqm_ci_high=s['iqm_high'],
                optimality_gap=s['optimality_gap'],
                reference=group.reference.label if group.reference else '',
                iqm_normalized=s['iqm_norm'],
                iqm_normalized_ci_low=s['iqm_norm_low'],
                iqm_normalized_ci_high=s['iqm_norm_high'],
                train_flops=final_train_flops(group))


def write_summary(groups: Sequence[Group], path: str) -> List[Dict]:
    """Writes summary.csv: one row per group, NaNs as empty cells.

    Args:
        groups: the groups, with their statistics.
        path: the CSV file to write.

    Returns:
        The rows (with NaNs).
    """
    dims = list(groups[0].dims) if groups else []
    columns = (['group'] + dims + ['n_seeds', 'n_in_progress',
                                   'n_not_started', 'status']
               + list(SUMMARY_STATS))
    rows = [_summary_row(group, dims) for group in groups]
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ('' if isinstance(v, float) and math.isnan(v)
                                 else v) for k, v in row.items()})
    return rows


# report.md ----------------------------------------------------------------

def _num(value: Optional[float], digits: int = 1) -> str:
    """A number with thousands separators, or '–' for None and NaN."""
    if value is None or math.isnan(value):
        return '–'
    return f'{value:,.{digits}f}'


def _with_ci(point: float, low: float, high: float, digits: int) -> str:
    """'point [low, high]', or '–' without a point."""
    if math.isnan(point):
        return '–'
    return (f'{_num(point, digits)} [{_num(low, digits)}, '
            f'{_num(high, digits)}]')


def markdown_table(groups: Sequence[Group]) -> str:
    """The summary as a markdown table.

    Args:
        groups: the groups, with their statistics.

    Returns:
        The table's lines, joined.
    """
    lines = ['| group | seeds | mean | IQM [95% CI] | IQM / reference '
             '[95% CI] | optimality gap | status |',
             '|---|---:|---:|---|---|---:|---|']
    for g in groups:
        s = g.stats
        seeds = f'{s["n"]}' + (f' (+{g.in_progress} running)'
                               if g.in_progress else '') + (
            f' (+{g.not_started} not started)' if g.not_started else '')
        raw = _with_ci(s['iqm'], s['iqm_low'], s['iqm_high'], 1)
        normalised = _with_ci(s['iqm_norm'], s['iqm_norm_low'],
                              s['iqm_norm_high'], 2)
        lines.append(
            f'| {g.label} | {seeds} | {_num(s["mean"])} | {raw} | '
            f'{normalised} | {_num(s["optimality_gap"], 2)} | {g.status} |')
    return '\n'.join(lines)


def _shown_path(root_dir: str) -> str:
    """The study root as the title shows it: relative to the working
    directory when inside it (a report committed with its study names no
    machine's paths), else absolute."""
    absolute = os.path.abspath(root_dir)
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith(os.pardir) else relative


def _header(root_dir: str, runs: Sequence[RunData], groups: Sequence[Group],
            reference: str, match: Sequence[str], reps: int) -> List[str]:
    """The title, the run counts and how the scores are computed."""
    finished = sum(r.finished for r in runs)
    waiting = sum(g.not_started for g in groups)
    return [
        f'# Study report: {_shown_path(root_dir)}', '',
        f'{len(runs)} runs in {len(groups)} groups: {finished} finished, '
        f'{len(runs) - finished} in progress'
        + (f', {waiting} planned seed{"s" * (waiting != 1)} not started'
           if waiting else '')
        + '.', '',
        '**Scores.** A run\'s score is its `final_return` (mean eval return '
        'over the last evals, `final_metric.json`); runs in progress count '
        'only in the learning curves. IQM: interquartile mean over seeds '
        '(the mean of the middle 50%). CI: 95% stratified bootstrap, '
        f'percentile method, {reps:,} replications (rliable). Normalised: '
        f"divided by the reference group's IQM; reference `{reference}` at "
        f'the same {", ".join(match)}. Optimality gap: 1 − mean(min(score / '
        'reference IQM, 1)) (0: every seed at least as good as the '
        'reference).', '']


def _reference_notes(groups: Sequence[Group]) -> List[str]:
    """Groups without a reference, and references without a positive
    IQM."""
    lines: List[str] = []
    no_reference = [g.label for g in groups if g.reference is None]
    non_positive = sorted({g.reference.label for g in groups if g.reference
                           and g.reference.stats['n']
                           and not g.reference.stats['iqm'] > 0})
    if no_reference:
        lines += [f'No reference group for: {", ".join(no_reference)} '
                  '(not normalised).', '']
    if non_positive:
        lines += [f'Reference IQM ≤ 0 ({", ".join(non_positive)}): '
                  'normalised scores assume positive returns, so these '
                  'groups are shown raw.', '']
    return lines


def _figure_sections(figures: Dict[str, str], notes: Dict[str, str]
                     ) -> List[str]:
    """A section per figure: the image and its caption, or why not."""
    lines: List[str] = []
    for name, title in FIGURES.items():
        lines += [f'## {title}', '']
        if name in figures:
            lines += [f'![{title}]({os.path.basename(figures[name])})', '',
                      CAPTIONS[name], '']
        else:
            lines += [f'Not drawn: {notes[name]}', '']
    return lines


def _unfinished_sections(runs: Sequence[RunData], unstarted: Sequence[str]
                         ) -> List[str]:
    """The runs in progress (a table) and the planned groups with no
    results."""
    lines: List[str] = []
    partial = [r for r in runs if not r.finished]
    if partial:
        lines += ['## Runs in progress (partial)', '',
                  '| run | evals | last env step | last return |',
                  '|---|---:|---:|---:|']
        for r in partial:
            last = r.rows[-1] if r.rows else {}
            lines.append(f'| {r.path} | {len(r.rows)} | '
                         f'{last.get("env_steps", 0):,} | '
                         f'{_num(last.get("return_mean", float("nan")))} |')
        lines.append('')
    if unstarted:
        lines += ['## Planned groups without results', '',
                  'In `study_plan.json` but without any results yet (not '
                  'started, or failed before the first evaluation): '
                  + ', '.join(unstarted) + '.', '']
    return lines


def report_markdown(root_dir: str, runs: Sequence[RunData],
                    groups: Sequence[Group], figures: Dict[str, str],
                    notes: Dict[str, str], reference: str,
                    match: Sequence[str], reps: int,
                    unstarted: Sequence[str] = ()) -> str:
    """The text of report.md.

    Args:
        root_dir: the study root (named in the title).
        runs: every run read.
        groups: the groups, with their statistics.
        figures: {name: path} of the figures drawn.
        notes: {name: why not} of the figures not drawn.
        reference: the --reference text.
        match: the --match dimensions.
        reps: bootstrap replications of the final-score CIs.
        unstarted: planned groups without any run (`groups.attach_plan`).

    Returns:
        The markdown.
    """
    lines = _header(root_dir, runs, groups, reference, match, reps)
    lines += ['## Summary', '', markdown_table(groups), '']
    lines += _reference_notes(groups)
    lines += _figure_sections(figures, notes)
    lines += _unfinished_sections(runs, unstarted)
    return '\n'.join(lines)
