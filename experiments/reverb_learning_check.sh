#!/usr/bin/env bash
# Learning check outside CI: distributed (Reverb) SAC against the
# single-process loop, dense, HalfCheetah-v5, the mini study's settings
# (40k train steps after 5k random, eval every 5k over 5 episodes), the same
# samples per insert (256: one env step per train step, as the single loop).
#   bash experiments/reverb_learning_check.sh [STEPS] [OUT_DIR] [SEEDS] [ACTORS]
# Prints each run's eval returns; the single-process runs with the same
# seeds are the mini study's method=dense/seed_<k> (studies/sac_mini.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-40000}
OUT=${2:-/tmp/sparserl_reverb_check}
SEEDS=${3:-"0 1"}
ACTORS=${4:-2}
for seed in $SEEDS; do
  python -m rigl.rl.distributed --algo=sac --role=all --num_actors="$ACTORS" \
    --root_dir="$OUT/reverb_dense/seed_$seed" \
    --gin_file=rigl/rl/tfagents/configs/sac_mujoco_dense_config.gin \
    --gin_bindings="train_eval.env_name='HalfCheetah-v5'" \
    --gin_bindings="train_eval.num_iterations=${STEPS}" \
    --gin_bindings="train_eval.initial_collect_steps=5000" \
    --gin_bindings="train_eval.eval_interval=5000" \
    --gin_bindings="train_eval.eval_episodes=5" \
    --gin_bindings="train_eval.checkpoint_interval=10000" \
    --gin_bindings="train_eval.log_interval=2000" \
    --gin_bindings="train_eval.seed=$seed"
done
for seed in $SEEDS; do
  echo "== reverb dense seed $seed"
  python experiments/print_results.py "$OUT/reverb_dense/seed_$seed"
done
