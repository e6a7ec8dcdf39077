#!/usr/bin/env bash
# RLx2 learning check on HalfCheetah-v5, with RLx2's TD3 settings
# (configs/td3_rlx2_config.gin: lr 3e-4, batch 256, 25k random steps, eval
# every 5000 steps over 10 episodes), each method over the given seeds:
#   dense  dense TD3;
#   ds     DS-TD3: RigL at RLx2's sparsities (actor 95%, critics 91%, ER,
#          output layers sparse), one-step targets, a fixed-capacity FIFO;
#   rlx2   RLx2-TD3: ds plus the delayed 3-step target and the dynamic-
#          capacity replay.
#   bash experiments/rlx2_check.sh [STEPS] [OUT] [SEEDS] [METHODS]
# prints the eval returns of every run (experiments/print_results.py).
#
# The paper trains 3M env steps (2,975,000 train steps). At STEPS train
# steps its replay schedules are scaled by STEPS / 3M so that data lives
# as long, relative to training, as in the paper: the 3-step target from
# train step STEPS / 10 (paper: 300k), dynamic-capacity checks every
# STEPS / 300 env steps (10k; at least 100) with a minimum of STEPS / 30
# transitions (1e5), but at least the 25k random ones: as in the paper,
# where the minimum is above them, the initial collection is never dropped
# before training starts. Masks change every 1000 steps (paper: 10k), the
# suite's usual sparse-TD3 interval, so that short runs see enough
# topology updates; the drop fraction still anneals from 0.5 to 0 over the
# run. About 10 minutes per 100k-step run here (200-300 train steps/s).
set -euo pipefail
STEPS=${1:-100000}
OUT=${2:-/tmp/sparserl_rlx2_check}
SEEDS=${3:-"0 1"}
METHODS=${4:-"dense ds rlx2"}
PYTHON=${PYTHON:-python}
if (( STEPS < 1000 )); then
  echo "STEPS must be at least 1000 (the first mask update), got $STEPS" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
CONFIG=rigl/rl/tfagents/configs/td3_rlx2_config.gin
CHECK=$((STEPS / 300 > 100 ? STEPS / 300 : 100))
MIN_SIZE=$((STEPS / 30 > 25000 ? STEPS / 30 : 25000))
COMMON=(--gin_bindings="train_eval.num_iterations=$STEPS"
        --gin_bindings="train_eval.checkpoint_interval=10000"
        --gin_bindings="mask_updater.update_freq=1000"
        --gin_bindings="mask_updater.begin_step=1000"
        --gin_bindings="mask_updater.last_update_step=$STEPS")
ONE_STEP_FIFO=(--gin_bindings="train_eval.n_step=1"
               --gin_bindings="train_eval.n_step_delay=0"
               --gin_bindings="train_eval.replay_check_interval=0")
for seed in $SEEDS; do
  for method in $METHODS; do
    case $method in
      dense) extra=("${ONE_STEP_FIFO[@]}"
                    --gin_bindings="train_eval.train_mode_actor='dense'"
                    --gin_bindings="train_eval.train_mode_value='dense'") ;;
      ds) extra=("${ONE_STEP_FIFO[@]}") ;;
      rlx2) extra=(--gin_bindings="train_eval.n_step_delay=$((STEPS / 10))"
                   --gin_bindings="train_eval.replay_check_interval=$CHECK"
                   --gin_bindings="train_eval.replay_min_size=$MIN_SIZE") ;;
      *) echo "unknown method $method (dense, ds, rlx2)" >&2; exit 2 ;;
    esac
    "$PYTHON" rigl/rl/tfagents/td3_train_eval.py \
      --root_dir="$OUT/$method/seed_$seed" --gin_file="$CONFIG" \
      "${COMMON[@]}" "${extra[@]}" \
      --gin_bindings="train_eval.seed=$seed" > /dev/null
  done
done
for run in "$OUT"/*/seed_*; do
  echo "== $run"
  "$PYTHON" experiments/print_results.py "$run"
done
