#!/usr/bin/env bash
# TD3 learning check on HalfCheetah-v5: dense TD3 and DS-TD3 (50% sparse,
# SET), each over the given seeds, with ANF's TD3 settings.
#   bash experiments/td3_learning_check.sh [STEPS] [OUT] [SEEDS]
# prints the eval returns of every run (experiments/print_results.py).
set -euo pipefail
STEPS=${1:-50000}
OUT=${2:-/tmp/sparserl_td3_check}
SEEDS=${3:-"0 1"}
cd "$(dirname "$0")/.."
for seed in $SEEDS; do
  for config in dense sparse; do
    python rigl/rl/tfagents/td3_train_eval.py \
      --root_dir="$OUT/$config/seed_$seed" \
      --gin_file="rigl/rl/tfagents/configs/td3_mujoco_${config}_config.gin" \
      --gin_bindings="train_eval.num_iterations=$STEPS" \
      --gin_bindings="train_eval.seed=$seed" \
      --gin_bindings="train_eval.checkpoint_interval=10000" > /dev/null
  done
done
for run in "$OUT"/*/seed_*; do
  echo "== $run"
  python experiments/print_results.py "$run"
done
