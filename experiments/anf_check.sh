#!/usr/bin/env bash
# ANF learning checks on HalfCheetah-v5 (outside CI).
#   bash experiments/anf_check.sh tutorial [STEPS] [OUT] [SEEDS]
#     the tutorial's first command (ANF-SAC, global sparsity 0.5, uniform)
#   bash experiments/anf_check.sh noise [STEPS] [OUT] [SEEDS]
#     ANF-SAC vs dense SAC (ANF's settings) with 90% noise features
# Prints every run's eval returns; noise runs also write connectivity.png.
set -euo pipefail
MODE=${1:-tutorial}
STEPS=${2:-20000}
OUT=${3:-/tmp/sparserl_anf_$MODE}
SEEDS=${4:-"0 1 2"}
cd "$(dirname "$0")/.."
run() {  # name config seed [bindings...]
  local name=$1 config=$2 seed=$3; shift 3
  python rigl/rl/tfagents/sac_train_eval.py --root_dir="$OUT/$name/seed_$seed" \
    --gin_file="rigl/rl/tfagents/configs/$config" \
    --gin_bindings="train_eval.num_iterations=$STEPS" \
    --gin_bindings="train_eval.seed=$seed" \
    --gin_bindings="train_eval.log_episodes=False" "$@" > /dev/null
}
for seed in $SEEDS; do
  if [ "$MODE" = tutorial ]; then
    run anf_sac_uniform05 sac_anf_uniform_config.gin "$seed"
  else
    run anf_sac sac_anf_config.gin "$seed"
    run sac sac_anf_settings.gin "$seed" --gin_bindings="NetworkNoise.noise_fraction=0.9"
  fi
done
for run_dir in "$OUT"/*/seed_*; do
  echo "== $run_dir"
  python experiments/print_results.py "$run_dir"
done
