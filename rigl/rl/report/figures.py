"""The report's figures (matplotlib, written as PNG files without a
display): learning curves, final score against sparsity, performance
profiles, score against training FLOPs and ANF input connectivity.
"""

import math
import os
import textwrap
from typing import Any, Callable, Dict, List, Sequence, Tuple

import matplotlib

matplotlib.use('Agg')  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rigl.rl.report.groups import describe  # noqa: E402
from rigl.rl.report.groups import final_train_flops  # noqa: E402
from rigl.rl.report.groups import Group  # noqa: E402
from rigl.rl.report.groups import label_dims  # noqa: E402
from rigl.rl.report.groups import group_sparsity_text  # noqa: E402
from rigl.rl.report.runs import RunData  # noqa: E402
from rigl.rl.report.stats import curve_interval  # noqa: E402
from rigl.rl.report.stats import curve_intervals  # noqa: E402
from rigl.rl.report.stats import performance_profiles  # noqa: E402

# The known methods' colours (in `groups.METHOD_ORDER`); other lines take
# OTHER_COLORS, then tab20.
METHOD_COLORS = {'dense': 'black', 'static': 'tab:blue', 'set': 'tab:orange',
                 'rigl': 'tab:green', 'prune': 'tab:red'}
OTHER_COLORS = ('tab:purple', 'tab:brown', 'tab:pink', 'tab:olive',
                'tab:cyan', 'tab:gray')
# Every figure the report can draw, by file name, with its title (in the
# order of report.md's sections).
FIGURES = {
    'learning_curves': 'Learning curves',
    'final_vs_sparsity': 'Final score against sparsity',
    'performance_profiles': 'Performance profiles',
    'score_vs_flops': 'Final score against training FLOPs',
    'anf_connectivity': 'ANF input connectivity',
}
# Characters per line of a panel's title (about a 4.6-inch panel at 10 pt).
PANEL_TITLE_WIDTH = 60
# Characters per line of a worded x tick ('input layer' / '80% sparse').
TICK_WIDTH = 12
Axes = Any  # a matplotlib Axes
Figure = Any  # a matplotlib Figure


class Style:
    """One name and colour per line across all figures.

    A line's name is its group's label without the panel's dimensions
    (algorithm, env, noise, sparsity), e.g. 'rigl'; the known methods keep
    their colours in every report.
    """

    PANEL_DIMS = ('algorithm', 'env_name', 'noise_fraction', 'sparsity')

    def __init__(self, groups: Sequence[Group]):
        """Names and colours the lines of `groups`. Dense groups are drawn
        in every sparsity's panel of their task, so names tell apart the
        groups of a task whatever their sparsity."""
        task_dims = [d for d in self.PANEL_DIMS if d != 'sparsity']
        dims = label_dims(groups, exclude=self.PANEL_DIMS, within=task_dims)
        self._names = {g.label: describe(g, dims) or str(g.method)
                       for g in groups}
        # A line named after a known method takes its colour; another line
        # takes its method's colour while no line has it (a study's
        # 'anf_sac', a SET run, is orange), else the next free one.
        methods = {self._names[g.label]: g.method for g in groups}
        self._colors: Dict[str, Any] = {
            name: METHOD_COLORS[name] for name in methods
            if name in METHOD_COLORS}
        extra = iter(OTHER_COLORS)
        for name, method in methods.items():
            if name in self._colors:
                continue
            color = METHOD_COLORS.get(method)
            if color is None or color in self._colors.values():
                color = next(extra, None) or plt.get_cmap('tab20')(
                    len(self._colors) % 20)
            self._colors[name] = color

    def name(self, group: Group) -> str:
        """The name of the group's line."""
        return self._names[group.label]

    def color(self, group: Group) -> Any:
        """The colour of the group's line."""
        return self._colors[self._names[group.label]]

    def legend(self, group: Group, sparsity: bool = False) -> str:
        """The line's name (with its sparsity if asked). The same in every
        panel, so the figure's one legend lists each line once; how many
        runs are done goes in the panel's title (`_progress_note`)."""
        text = self.name(group)
        sparsity_note = group_sparsity_text(group) if sparsity else ''
        return f'{text}, {sparsity_note}' if sparsity_note else text


def _progress_note(members: Sequence[Group]) -> str:
    """' (partial: 7/25 runs done)' for a panel with unfinished groups,
    else ''."""
    if all(g.status == 'complete' for g in members):
        return ''
    done = sum(len(g.finished_runs) for g in members)
    total = sum(len(g.runs) + g.not_started for g in members)
    return f' (partial: {done}/{total} runs done)'


def _panel_key(group: Group) -> Tuple:
    """The task: algorithm, environment and ANF noise fraction."""
    return (group.dims.get('algorithm'), group.dims.get('env_name'),
            group.dims.get('noise_fraction'))


def _task_title(key: Tuple) -> str:
    """'SAC on HalfCheetah-v5 + 90% noise' for a `_panel_key`."""
    algorithm, env, noise = key
    title = f'{str(algorithm).upper()} on {env}'
    if isinstance(noise, (int, float)) and noise:
        title += f' + {noise * 100:.4g}% noise'
    return title


def _sparsity_texts(groups: Sequence[Group]) -> str:
    """The sparse groups' `group_sparsity_text`s, each once, e.g. '90%
    sparse' or 'input layer 80% sparse'."""
    return ', '.join(dict.fromkeys(
        group_sparsity_text(g) for g in groups if not g.is_dense))


def _panel_title(key: Tuple, members: Sequence[Group]) -> str:
    """'SAC on HalfCheetah-v5, 90% sparse (partial: 7/25 runs done)' for a
    `_panels` panel, wrapped to fit it."""
    title = _task_title(key[:3])
    sparsity = _sparsity_texts(members) if key[3] is not None else ''
    title += (f', {sparsity}' if sparsity else '') + _progress_note(members)
    return textwrap.fill(title, PANEL_TITLE_WIDTH)


def _panels(groups: Sequence[Group], by_sparsity: bool
            ) -> Dict[Tuple, List[Group]]:
    """Groups per (algorithm, env[, sparsity]) panel; dense groups are the
    reference in every sparsity panel of their task."""
    panels: Dict[Tuple, List[Group]] = {}
    tasks: Dict[Tuple, List[Group]] = {}
    for g in groups:
        tasks.setdefault(_panel_key(g), []).append(g)
    for task, members in tasks.items():
        sparse = [g for g in members if not g.is_dense]
        levels = sorted({g.dims.get('sparsity') for g in sparse},
                        key=lambda s: (s is None, s or 0)
                        ) if by_sparsity else []
        if not levels:
            panels[task + (None,)] = members
            continue
        for level in levels:
            panels[task + (level,)] = [g for g in members if g.is_dense] + [
                g for g in sparse if g.dims.get('sparsity') == level]
    return panels


def _grid(count: int, columns: int, width: float = 4.6,
          height: float = 3.4) -> Tuple[Figure, List[Axes]]:
    """A figure with `count` panels in rows of `columns` (the rest
    hidden)."""
    rows = max(1, math.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(
        max(width * columns, 6.4), height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _steps_formatter(ax: Axes) -> None:
    """Environment steps on the x axis as 500, 20k, 1.5M."""
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
        lambda x, _: f'{x / 1e6:g}M' if x >= 1e6 else
        f'{x / 1e3:g}k' if x >= 1e3 else f'{x:g}'))


def _save(fig: Figure, path: str, title: str) -> str:
    """One legend for the figure (lines keep their names across panels),
    in a band added below the panels; then the title and the file."""
    entries: Dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    width, height = fig.get_size_inches()
    longest = max((len(label) for label in entries), default=0)
    columns = max(1, min(len(entries), int(width // (0.07 * longest + 0.7))))
    band = 0.25 * math.ceil(len(entries) / columns) + 0.2 if entries else 0.0
    title = textwrap.fill(title, int(width * 9))
    top = 0.22 * title.count('\n')  # tight_layout makes room for one line
    fig.set_size_inches(width, height + band + top)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc='lower center',
                   ncol=columns, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, band / (height + band + top), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_learning_curves(groups: Sequence[Group], path: str, reps: int,
                         style: Style) -> str:
    """Eval return against env steps: the IQM over seeds with its band.

    One panel per task and sparsity, the dense groups in every panel of
    their task.

    Args:
        groups: the groups (those without rows are left out).
        path: the PNG file to write.
        reps: bootstrap replications per point.
        style: line names and colours.

    Returns:
        `path`.
    """
    with_rows = [g for g in groups if any(r.rows for r in g.runs)]
    computed = dict(zip((g.label for g in with_rows), curve_intervals(
        [[{row['env_steps']: row['return_mean'] for row in r.rows}
          for r in g.runs if r.rows] for g in with_rows], reps)))
    panels = _panels(groups, by_sparsity=True)
    columns = min(len(panels), max(1, len({k[3] for k in panels})), 5)
    fig, axes = _grid(len(panels), columns)
    for ax, (key, members) in zip(axes, panels.items()):
        for g in members:
            if g.label not in computed:
                continue
            xs, mid, low, high = computed[g.label]
            color = style.color(g)
            ax.plot(xs, mid, color=color, lw=1.6,
                    ls='--' if g.is_dense and key[3] is not None else '-',
                    label=style.legend(g))
            ax.fill_between(xs, low, high, color=color, alpha=0.18, lw=0)
        ax.set_title(_panel_title(key, members), fontsize=10)
        ax.set_xlabel('environment steps')
        ax.set_ylabel('eval return (IQM over seeds)')
        _steps_formatter(ax)
        ax.grid(alpha=0.3)
    return _save(fig, path, 'Learning curves: IQM of eval returns over seeds, '
                 'shaded 95% bootstrap CI')


def _lines(groups: Sequence[Group], style: Style) -> Dict[str, List[Group]]:
    """Groups per line (one line across sparsities), keyed by legend text."""
    by_name: Dict[str, List[Group]] = {}
    for g in groups:
        by_name.setdefault(style.name(g), []).append(g)
    lines = {}
    for name, line in by_name.items():
        partial = [group_sparsity_text(g) for g in line
                   if g.status != 'complete' and not g.is_dense]
        if any(g.status != 'complete' for g in line):
            where = f' at {", ".join(partial)}' if partial else ''
            name += f' (partial{where})'
        lines[name] = line
    return lines


def _level_tick(level: float, groups: Sequence[Group]) -> str:
    """A sparsity level on the x axis: '0.9', or the groups' own words
    where the level alone misleads (ANF's sparse input layers at 0)."""
    if level:
        return f'{level:g}'
    texts = _sparsity_texts([g for g in groups
                             if g.dims.get('sparsity') == level])
    return textwrap.fill(texts, TICK_WIDTH) if texts else f'{level:g}'


def _normalised_panel(members: Sequence[Group]) -> bool:
    """Whether every scored group of a panel has a normalised score."""
    return all(not math.isnan(g.stats['iqm_norm']) for g in members
               if g.stats['n'])


def plot_final_vs_sparsity(groups: Sequence[Group], path: str,
                           style: Style) -> str:
    """Final score (IQM, CI bars) of each method at each sparsity, one
    panel per task, normalised where every group can be; dense groups are
    horizontal lines with their CI as a band.

    Args:
        groups: the groups (those without scores are left out).
        path: the PNG file to write.
        style: line names and colours.

    Returns:
        `path`.
    """
    tasks: Dict[Tuple, List[Group]] = {}
    for g in groups:
        if g.stats['n']:
            tasks.setdefault(_panel_key(g), []).append(g)
    fig, axes = _grid(max(1, len(tasks)), min(3, max(1, len(tasks))),
                      width=5.2, height=3.8)
    for ax, (task, members) in zip(axes, tasks.items()):
        normalised = _normalised_panel(members)
        low_key, mid_key, high_key = (('iqm_norm_low', 'iqm_norm',
                                       'iqm_norm_high') if normalised else
                                      ('iqm_low', 'iqm', 'iqm_high'))
        sparse = [g for g in members if not g.is_dense]
        levels = sorted({g.dims.get('sparsity') for g in sparse
                         if g.dims.get('sparsity') is not None})
        position = {s: i for i, s in enumerate(levels)}
        for dense in [g for g in members if g.is_dense]:
            s = dense.stats
            ax.axhline(s[mid_key], color='black', ls='--', lw=1.2,
                       label=style.legend(dense) + ' (reference)'
                       if dense in [g.reference for g in sparse] else
                       style.legend(dense))
            ax.axhspan(s[low_key], s[high_key], color='black', alpha=0.08,
                       lw=0)
        lines = _lines(sparse, style)
        count = max(1, len(lines))
        for index, (name, line) in enumerate(lines.items()):
            line = [g for g in line if g.dims.get('sparsity') in position]
            line.sort(key=lambda g: g.dims['sparsity'])
            offset = (index - (count - 1) / 2) * 0.08
            xs = (np.array([position[g.dims['sparsity']] for g in line])
                  + offset)
            mids = np.array([g.stats[mid_key] for g in line])
            errs = np.array(
                [[g.stats[mid_key] - g.stats[low_key] for g in line],
                 [g.stats[high_key] - g.stats[mid_key] for g in line]])
            ax.errorbar(xs, mids, yerr=errs, color=style.color(line[0]),
                        marker='o', ms=4, lw=1.4, capsize=3, label=name)
        ax.set_xticks(range(len(levels)))
        ax.set_xticklabels([_level_tick(s, sparse) for s in levels])
        ax.set_xlim(-0.5, max(0.5, len(levels) - 0.5))
        ax.set_xlabel('sparsity (fraction of weights removed)')
        ax.set_ylabel('final return IQM / reference IQM' if normalised else
                      'final return, IQM over seeds\n(no positive reference '
                      'to normalise by)')
        ax.set_title(_task_title(task), fontsize=10)
        ax.grid(alpha=0.3)
    return _save(fig, path, 'Final score against sparsity: IQM over seeds, '
                 'bars and band = 95% bootstrap CI')


def plot_performance_profiles(groups: Sequence[Group], path: str, reps: int,
                              style: Style) -> str:
    """The fraction of runs scoring above each threshold, with bands, one
    panel per task and sparsity.

    Args:
        groups: the groups (those without scores are left out).
        path: the PNG file to write.
        reps: bootstrap replications.
        style: line names and colours.

    Returns:
        `path`.
    """
    panels = {k: [g for g in v if g.stats['n']]
              for k, v in _panels(groups, by_sparsity=True).items()}
    panels = {k: v for k, v in panels.items() if v}
    columns = min(len(panels), max(1, len({k[3] for k in panels})), 5)
    fig, axes = _grid(max(1, len(panels)), max(1, columns))
    for ax, (key, members) in zip(axes, panels.items()):
        normalised = _normalised_panel(members)
        scores = {}
        for g in members:
            values = g.scores()
            if normalised:
                values = values / g.reference.stats['iqm']
            scores[g.label] = values.reshape(-1, 1)
        everything = np.concatenate(list(scores.values())).ravel()
        low, high = float(everything.min()), float(everything.max())
        if normalised:
            low, high = min(low, 0.0), max(high, 1.2)
        margin = 0.05 * (high - low or 1.0)
        taus = np.linspace(low - margin, high + margin, 81)
        profiles = dict(zip(scores, performance_profiles(
            [v.ravel() for v in scores.values()], taus, reps)))
        for g in members:
            color = style.color(g)
            profile, band_low, band_high = profiles[g.label]
            ax.plot(taus, profile, color=color, lw=1.6,
                    ls='--' if g.is_dense and key[3] is not None else '-',
                    label=style.legend(g))
            ax.fill_between(taus, band_low, band_high, color=color,
                            alpha=0.15, lw=0)
        ax.set_title(_panel_title(key, members), fontsize=10)
        ax.set_xlabel('final return / reference IQM (τ)' if normalised else
                      'final return (τ)')
        ax.set_ylabel('fraction of runs with score > τ')
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    return _save(fig, path, 'Performance profiles (score distributions), '
                 'shaded 95% bootstrap CI')


def plot_score_vs_flops(groups: Sequence[Group], path: str,
                        style: Style) -> str:
    """Final score (IQM, CI bars) against the training FLOPs, one panel
    per task.

    Args:
        groups: the groups (those without scores or FLOPs are left out).
        path: the PNG file to write.
        style: line names and colours.

    Returns:
        `path`.
    """
    tasks: Dict[Tuple, List[Group]] = {}
    for g in groups:
        if g.stats['n'] and not math.isnan(final_train_flops(g)):
            tasks.setdefault(_panel_key(g), []).append(g)
    fig, axes = _grid(max(1, len(tasks)), min(3, max(1, len(tasks))),
                      width=5.2, height=3.8)
    for ax, (task, members) in zip(axes, tasks.items()):
        normalised = _normalised_panel(members)
        keys = (('iqm_norm_low', 'iqm_norm', 'iqm_norm_high') if normalised
                else ('iqm_low', 'iqm', 'iqm_high'))
        lines = _lines(members, style)
        for name, line in lines.items():
            line.sort(key=lambda g: final_train_flops(g))
            xs = [final_train_flops(g) for g in line]
            mids = np.array([g.stats[keys[1]] for g in line])
            errs = np.array(
                [[g.stats[keys[1]] - g.stats[keys[0]] for g in line],
                 [g.stats[keys[2]] - g.stats[keys[1]] for g in line]])
            ax.errorbar(xs, mids, yerr=errs, color=style.color(line[0]),
                        marker='o', ms=4, lw=1.2, capsize=3, label=name)
            for g, x, y in zip(line, xs, mids):
                if not g.is_dense and g.dims.get('sparsity') is not None:
                    ax.annotate(_level_tick(g.dims['sparsity'], [g]), (x, y),
                                fontsize=6, xytext=(3, 3),
                                textcoords='offset points')
        ax.set_xscale('log')
        ax.set_xlabel('training FLOPs (cumulative, ideal sparse count)')
        ax.set_ylabel('final return IQM / reference IQM' if normalised else
                      'final return, IQM over seeds\n(no positive reference '
                      'to normalise by)')
        ax.set_title(_task_title(task), fontsize=10)
        ax.grid(alpha=0.3, which='both')
    return _save(fig, path, 'Final score against training FLOPs (labels: '
                 'sparsity; bars: 95% bootstrap CI)')


def _connectivity(run: RunData) -> Dict[str, Dict[str, Dict[float, float]]]:
    """{network: {'per_real_feature'|'per_noise_feature': {env_steps: v}}}."""
    result: Dict[str, Dict[str, Dict[float, float]]] = {}
    for row in run.rows:
        for name, values in (row.get('networks') or {}).items():
            connectivity = values.get('input_connectivity') or {}
            for kind, value in connectivity.items():
                result.setdefault(name, {}).setdefault(kind, {})[
                    row['env_steps']] = value
    return result


def has_connectivity(groups: Sequence[Group]) -> bool:
    """Whether any run's rows record ANF input connectivity."""
    return any(_connectivity(r) for g in groups for r in g.runs)


def plot_connectivity(groups: Sequence[Group], path: str, reps: int,
                      style: Style) -> str:
    """ANF: active input weights per real and per noise feature over
    training (IQM over seeds with bands), one panel per task and network.

    Args:
        groups: the groups (those without connectivity are left out).
        path: the PNG file to write.
        reps: bootstrap replications per point.
        style: line names and colours.

    Returns:
        `path`.
    """
    members = [g for g in groups if any(_connectivity(r) for r in g.runs)]
    networks = sorted({n for g in members for r in g.runs
                       for n in _connectivity(r)})
    panels = [(task, net) for task in dict.fromkeys(_panel_key(g)
                                                     for g in members)
              for net in networks]
    fig, axes = _grid(len(panels), min(3, len(panels)))
    for ax, (task, network) in zip(axes, panels):
        here = [g for g in members if _panel_key(g) == task]
        for g in here:
            data = [_connectivity(r).get(network, {}) for r in g.runs]
            label = style.legend(g, sparsity=True)
            for kind, dash, word in (('per_real_feature', '-', 'real'),
                                     ('per_noise_feature', ':', 'noise')):
                curves = [d[kind] for d in data if d.get(kind)]
                if not curves:
                    continue
                xs, mid, low, high = curve_interval(curves, reps)
                ax.plot(xs, mid, ls=dash, color=style.color(g), lw=1.6,
                        label=f'{label}: {word} features')
                ax.fill_between(xs, low, high, color=style.color(g),
                                alpha=0.15, lw=0)
        ax.set_title(f'{_task_title(task)}: {network} input layer',
                     fontsize=10)
        ax.set_xlabel('environment steps')
        ax.set_ylabel('active input weights per feature')
        _steps_formatter(ax)
        ax.grid(alpha=0.3)
    return _save(fig, path, 'ANF: input-layer connectivity of real vs noise '
                 'features (IQM over seeds, 95% CI)')




def draw_figures(groups: Sequence[Group], out: str, reps: int
                 ) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Draws every figure the groups have data for.

    Args:
        groups: the groups, with their statistics.
        out: the directory the PNG files go to (`<name>.png`).
        reps: bootstrap replications per point of curves and profiles.

    Returns:
        ({name: path} of the figures drawn, {name: why not} of the others),
        names from `FIGURES`.
    """
    style = Style(groups)
    scored = [g for g in groups if g.stats['n']]
    no_scores = 'no finished run yet.'
    makers: Sequence[Tuple[str, bool, str, Callable[[str], str]]] = (
        ('learning_curves', True, '',
         lambda p: plot_learning_curves(groups, p, reps, style)),
        ('final_vs_sparsity', bool(scored), no_scores,
         lambda p: plot_final_vs_sparsity(groups, p, style)),
        ('performance_profiles', bool(scored), no_scores,
         lambda p: plot_performance_profiles(groups, p, reps, style)),
        ('score_vs_flops',
         any(not math.isnan(final_train_flops(g)) for g in scored),
         'no finished run with train_flops in its rows.',
         lambda p: plot_score_vs_flops(groups, p, style)),
        ('anf_connectivity', has_connectivity(groups),
         'no run has noise features (rows without '
         'networks.<name>.input_connectivity).',
         lambda p: plot_connectivity(groups, p, reps, style)),
    )
    figures: Dict[str, str] = {}
    notes: Dict[str, str] = {}
    for name, available, why, make in makers:
        if available:
            figures[name] = make(os.path.join(out, f'{name}.png'))
        else:
            notes[name] = why
    return figures, notes
