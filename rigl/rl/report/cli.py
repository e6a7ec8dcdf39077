r"""Aggregate a study: IQM and stratified bootstrap CIs, a table and figures.

  python -m rigl.rl.report --root_dir=ROOT

Reads the `results.jsonl` and `final_metric.json` of every run under ROOT
(any depth; `run.json` only to find grid dimensions the metadata does not
name) and writes ROOT/report/: `summary.csv`, `report.md` and its figures.
Runs are grouped by every dimension but the seed: the metadata in their rows
(algorithm, env_name, method, sparsity, ...) plus any config value that
differs between runs of otherwise equal metadata (e.g. `train_eval.width`).
A group's score is each finished seed's `final_return` (the mean eval return
over the last evals); runs without `final_metric.json` are in progress: they
appear in the learning curves and are marked, but not in final scores.
`ROOT/study_plan.json` (written by the sweep) names every planned run, so
seeds that never started make their group partial, and groups none of whose
seeds started are listed.
"""

import sys
from typing import Sequence

from absl import flags
from absl import logging

from rigl.rl.report.build import build_report

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command's flags (in absl's global FLAGS)."""
    flags.DEFINE_string('root_dir', None, 'A study root: every run below it '
                        'is read; the report goes to ROOT/report/.')
    flags.DEFINE_string('reference', 'method=dense', 'DIM=VALUE[,...]: the '
                        'group each group is normalised by.')
    flags.DEFINE_list('match', ['algorithm', 'env_name'], 'Dimensions a '
                      'reference group must share with the group.')
    flags.DEFINE_integer('reps', 10000, 'Bootstrap replications for the '
                         'final-score CIs.')
    flags.DEFINE_integer('curve_reps', 2000, 'Bootstrap replications per '
                         'point of curves and profiles.')


def main(argv: Sequence[str]) -> None:
    """Builds the report the flags name (`absl.app.run` calls this).

    A bad flag, a study without runs or an unreadable file ends the
    command with one line `error: ...` and exit code 2.

    Args:
        argv: the arguments left after the flags (none are used).
    """
    del argv
    logging.set_verbosity(logging.WARNING)  # rliable logs each estimate
    try:
        if not FLAGS.root_dir:
            raise ValueError('--root_dir is required.')
        build_report(FLAGS.root_dir, FLAGS.reference, FLAGS.match, FLAGS.reps,
                     FLAGS.curve_reps)
    except (ValueError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
