"""The run directory: the one place that names its files.

Training writes these, and sweep, report and view read them, so they all
import the names from here (this module imports nothing heavy: report and
sweep stay free of TensorFlow).

    <root_dir>/
      run.json                what ran: algorithm, settings, sparse method
      results.jsonl           one row per evaluation
      final_metric.json       written once the run has finished
      operative_config.gin    the gin config as it ran
      .lock                   held by the process training in the directory
      .started_without_checkpoint
                              a fresh start not yet checkpointed: proves the
                              outputs beside it are a killed attempt's
      checkpoints/            ckpt-<step>/{tf*, replay.npz, state.json,
                              config.json}, and `latest` naming the newest
      train/, eval/           TensorBoard event files
      policy/                 the final saved policy
      policies/policy-<step>/ policies saved along the way
      distributed.json        a distributed learner's counters
      actors/actor_<i>/stats.json
                              each distributed actor's counters
"""

import os

RUN_FILE = 'run.json'
RESULTS_FILE = 'results.jsonl'
FINAL_METRIC_FILE = 'final_metric.json'
OPERATIVE_CONFIG_FILE = 'operative_config.gin'
LOCK_FILE = '.lock'
STARTED_FILE = '.started_without_checkpoint'

CHECKPOINTS_DIR = 'checkpoints'
LATEST_CHECKPOINT_FILE = 'latest'
CHECKPOINT_STATE_FILE = 'state.json'
CHECKPOINT_CONFIG_FILE = 'config.json'
CHECKPOINT_REPLAY_FILE = 'replay.npz'

TRAIN_SUMMARIES_DIR = 'train'
EVAL_SUMMARIES_DIR = 'eval'
SUMMARY_DIRS = (TRAIN_SUMMARIES_DIR, EVAL_SUMMARIES_DIR)
POLICY_DIR = 'policy'
POLICIES_DIR = 'policies'
POLICY_DIRS = (POLICY_DIR, POLICIES_DIR)

DISTRIBUTED_STATS_FILE = 'distributed.json'
ACTORS_DIR = 'actors'
ACTOR_STATS_FILE = 'stats.json'

# A study's root directory (`rigl.rl.sweep`): each run in
# <group>/seed_<n>/ also holds the sweep's command and log for it.
STUDY_PLAN_FILE = 'study_plan.json'
SWEEP_COMMAND_FILE = 'sweep_command.json'
RUN_LOG_FILE = 'log.txt'
# Written by a Ray sweep on Ctrl-C: the run's task stops its training.
SWEEP_STOP_FILE = '.sweep_stop'
REPORT_DIR = 'report'

# What a run writes at its top level (its outputs, beside its checkpoints).
OUTPUT_FILES = (RESULTS_FILE, FINAL_METRIC_FILE, OPERATIVE_CONFIG_FILE,
                RUN_FILE)
OUTPUTS = OUTPUT_FILES + SUMMARY_DIRS + POLICY_DIRS


def checkpoints_dir(root_dir: str) -> str:
    """Where a run's checkpoints live."""
    return os.path.join(root_dir, CHECKPOINTS_DIR)


def saved_policy_dir(root_dir: str, step: int = 0) -> str:
    """The final policy (step 0), or the one saved at `step`."""
    if not step:
        return os.path.join(root_dir, POLICY_DIR)
    return os.path.join(root_dir, POLICIES_DIR, f'policy-{step}')


def actor_dir(root_dir: str, index: int) -> str:
    """A distributed actor's own directory."""
    return os.path.join(root_dir, ACTORS_DIR, f'actor_{index}')
