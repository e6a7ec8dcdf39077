"""What a study prints while it runs: the status table with its ETA, and the
messages naming a run that failed (the same for both backends)."""

import os
import re
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from rigl.rl.study.runs import Run, run_name, skip_finished


def _seconds_left(log_path: str) -> Optional[float]:
    """The `left H:MM:SS` of a run's newest progress line, if any."""
    try:
        with open(log_path, 'rb') as f:
            f.seek(max(0, os.path.getsize(log_path) - 4000))
            tail = f.read().decode(errors='replace')
    except OSError:
        return None
    found = re.findall(r'left (\d+):(\d\d):(\d\d)', tail)
    if not found:
        return None
    hours, minutes, seconds = map(int, found[-1])
    return hours * 3600 + minutes * 60 + seconds


def eta(runs: Sequence[Run], workers: int) -> Optional[float]:
    """Rough seconds until every run is over: running runs' own estimates
    plus the to-do runs at the typical run's length, spread over workers."""
    now = time.time()
    durations = [r.seconds for r in runs if r.status in ('done', 'failed')
                 and r.seconds > 0]
    running = [r for r in runs if r.status == 'running']
    left = [(r, _seconds_left(r.log_path)) for r in running]
    totals = [now - r.started + s for r, s in left if s is not None]
    typical = (sum(durations) / len(durations) if durations else
               sum(totals) / len(totals) if totals else None)
    todo = sum(r.status == 'to do' for r in runs)
    if typical is None and (todo or any(s is None for _, s in left)):
        return None
    work = sum(s if s is not None else max(0.0, typical - (now - r.started))
               for r, s in left) + todo * (typical or 0.0)
    return work / max(1, min(workers, todo + len(running)))


def format_seconds(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    seconds = int(seconds)
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def _node_lines(runs: Sequence[Run]) -> List[str]:
    """'running on NODE: run, run (attempt 2)' per node, for runs whose
    node is known (the Ray backend)."""
    nodes: Dict[str, List[str]] = {}
    for run in runs:
        if run.status == 'running' and run.node:
            name = run_name(run) + (f' (attempt {run.attempts})'
                                    if run.attempts > 1 else '')
            nodes.setdefault(run.node, []).append(name)
    return [f'running on {node}: {", ".join(names)}'
            for node, names in sorted(nodes.items())]


def status_table(runs: Sequence[Run], workers: int) -> str:
    """Counts per group and in total, the node of each running run (when
    known), and an ETA."""
    states = ('done', 'running', 'failed', 'to do')
    groups: Dict[str, Dict[str, int]] = {}
    for run in runs:
        groups.setdefault(run.group, dict.fromkeys(states, 0))[run.status] += 1
    width = max(len('group'), *(len(g) for g in groups))
    lines = [f'{"group":<{width}}  ' + '  '.join(f'{s:>7}' for s in states)]
    for group, counts in groups.items():
        lines.append(f'{group:<{width}}  ' +
                     '  '.join(f'{counts[s]:>7}' for s in states))
    totals = {s: sum(r.status == s for r in runs) for s in states}
    lines.append(f'{"total":<{width}}  ' +
                 '  '.join(f'{totals[s]:>7}' for s in states))
    lines += _node_lines(runs)
    left = eta(runs, workers)
    unfinished = totals['running'] + totals['to do']
    lines.append(f'[{time.strftime("%H:%M:%S")}] ' + (
        'all runs over' if not unfinished else
        f'ETA {format_seconds(left)}' if left is not None else
        'ETA unknown until a run reports progress'))
    return '\n'.join(lines)


def failure_message(run: Run, what: str, tail: str, where: str = '') -> str:
    """'FAILED (exit 2): group/seed_k; log PATH:' and the log's last lines."""
    return (f'FAILED ({what}): {run_name(run)}{where}; log {run.log_path}:'
            f'\n{tail}')


def list_failures(runs: Sequence[Run], say: Callable[[str], None]) -> int:
    """Names every failed run again, at the end; returns their number."""
    failed = [r for r in runs if r.status == 'failed']
    for run in failed:
        say(f'failed: {run_name(run)} ({run.note}); log {run.log_path}')
    return len(failed)


def skip_all(runs: Sequence[Run], how: str, out=None) -> int:
    """Every run finished before: says so, starting no backend."""
    out = out or sys.stdout
    skipped = skip_finished(runs)
    print(f'{len(runs)} runs: {skipped} finished before (skipped), '
          f'{len(runs) - skipped} to run, {how}.', file=out, flush=True)
    print(status_table(runs, 1), file=out, flush=True)
    return 0
