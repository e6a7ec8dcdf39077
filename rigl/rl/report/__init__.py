"""Analysis of a study's runs, free of TensorFlow.

    python -m rigl.rl.report --root_dir=ROOT

Modules, in the order a report uses them:

    runs.py      read run directories (results.jsonl, final_metric.json,
                 run.json) and the sweep's study_plan.json
    groups.py    group runs by every dimension but the seed; labels,
                 reference groups, each group's statistics
    stats.py     IQM, stratified bootstrap CIs, optimality gap,
                 performance profiles (rliable)
    figures.py   the matplotlib figures
    markdown.py  summary.csv and report.md
    build.py     `build_report`: all of the above into ROOT/report/
    cli.py       the command line (`__main__.py` runs it)

The names below are the package's interface; import them from here.
"""

from absl import flags

from rigl.rl.report.build import build_report
from rigl.rl.report.cli import define_flags
from rigl.rl.report.cli import main
from rigl.rl.report.figures import draw_figures
from rigl.rl.report.figures import FIGURES
from rigl.rl.report.figures import has_connectivity
from rigl.rl.report.figures import METHOD_COLORS
from rigl.rl.report.figures import OTHER_COLORS
from rigl.rl.report.figures import plot_connectivity
from rigl.rl.report.figures import plot_final_vs_sparsity
from rigl.rl.report.figures import plot_learning_curves
from rigl.rl.report.figures import plot_performance_profiles
from rigl.rl.report.figures import plot_score_vs_flops
from rigl.rl.report.figures import Style
from rigl.rl.report.groups import assign_dims
from rigl.rl.report.groups import assign_references
from rigl.rl.report.groups import attach_plan
from rigl.rl.report.groups import compute_stats
from rigl.rl.report.groups import describe
from rigl.rl.report.groups import final_train_flops
from rigl.rl.report.groups import Group
from rigl.rl.report.groups import group_sparsity_text
from rigl.rl.report.groups import IGNORED_SETTINGS
from rigl.rl.report.groups import label_dims
from rigl.rl.report.groups import make_groups
from rigl.rl.report.groups import METADATA_DIMS
from rigl.rl.report.groups import parse_reference
from rigl.rl.report.groups import resolve_match
from rigl.rl.report.groups import RUN_ONLY
from rigl.rl.report.groups import sparsity_text
from rigl.rl.report.groups import STUDY_METHOD_DIM
from rigl.rl.report.markdown import CAPTIONS
from rigl.rl.report.markdown import markdown_table
from rigl.rl.report.markdown import report_markdown
from rigl.rl.report.markdown import write_summary
from rigl.rl.report.runs import PLAN_FILE
from rigl.rl.report.runs import read_plan
from rigl.rl.report.runs import read_runs
from rigl.rl.report.runs import RunData
from rigl.rl.report.stats import aggregate
from rigl.rl.report.stats import bootstrap
from rigl.rl.report.stats import curve_interval
from rigl.rl.report.stats import curve_intervals
from rigl.rl.report.stats import iqm
from rigl.rl.report.stats import iqm_intervals
from rigl.rl.report.stats import performance_profiles

# The command's flag values (absl's global FLAGS, as `cli` defines them).
FLAGS = flags.FLAGS
