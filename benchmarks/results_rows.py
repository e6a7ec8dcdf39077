"""Rates of a finished run from its results.jsonl, for the benchmarks."""

import json
import os


def first_and_last_rows(root: str) -> tuple:
    """The run's first and last evaluation rows of results.jsonl."""
    with open(os.path.join(root, 'results.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    return rows[0], rows[-1]


def rates_between_evaluations(root: str) -> dict:
    """Env steps/s and train steps/s between the run's first and last
    evaluation rows (start-up and tracing before the first excluded)."""
    first, last = first_and_last_rows(root)
    seconds = last['wall_time'] - first['wall_time']
    return {'env_steps_per_second': (last['env_steps'] - first['env_steps'])
            / seconds,
            'train_steps_per_second': (last['step'] - first['step']) / seconds}
