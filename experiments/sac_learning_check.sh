#!/usr/bin/env bash
# Learning check outside CI: dense and RigL-90% SAC on HalfCheetah-v5.
#   bash experiments/sac_learning_check.sh [STEPS] [OUT_DIR]
# Prints each run's eval returns and final metric (results.jsonl rows).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-50000}
OUT=${2:-/tmp/sparserl_learning_check}
COMMON=(--gin_bindings="train_eval.num_iterations=${STEPS}"
        --gin_bindings="train_eval.eval_interval=5000"
        --gin_bindings="train_eval.eval_episodes=5"
        --gin_bindings="train_eval.seed=0")
python rigl/rl/tfagents/sac_train_eval.py --root_dir="$OUT/dense" \
  --gin_file=rigl/rl/tfagents/configs/sac_mujoco_dense_config.gin "${COMMON[@]}"
python rigl/rl/tfagents/sac_train_eval.py --root_dir="$OUT/rigl90" \
  --gin_file=rigl/rl/tfagents/configs/sac_mujoco_sparse_config.gin \
  --gin_bindings="mask_updater.update_alg='rigl'" \
  --gin_bindings="mask_updater.last_update_step=$((STEPS * 8 / 10))" "${COMMON[@]}"
for run in dense rigl90; do
  echo "== $run"
  python experiments/print_results.py "$OUT/$run"
done
