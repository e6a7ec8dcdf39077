#!/usr/bin/env bash
# Learning check outside CI: PPO on CartPole-v1 (target: eval return 475) and
# dense vs RigL-90% PPO on HalfCheetah-v5.
#   bash experiments/ppo_learning_check.sh [MUJOCO_STEPS] [OUT_DIR] [PARTS]
# PARTS: any of cartpole, dense, rigl90 (default: all three).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-200000}
OUT=${2:-/tmp/sparserl_ppo_learning_check}
PARTS=${3:-cartpole dense rigl90}
CONFIGS=rigl/rl/tfagents/configs
MUJOCO=(--gin_bindings="train_eval.num_environment_steps=${STEPS}"
        --gin_bindings="train_eval.eval_episodes=5" --gin_bindings="train_eval.seed=0")
# Train steps (minibatch steps) of a MuJoCo run: iterations x 10 x 32.
TRAIN_STEPS=$(( (STEPS + 2048) / 2049 * 320 ))
for part in $PARTS; do
  case $part in
    cartpole) python rigl/rl/tfagents/ppo_train_eval.py --root_dir="$OUT/cartpole" \
        --gin_file=$CONFIGS/ppo_classic_control_config.gin --gin_bindings="train_eval.seed=0" ;;
    dense) python rigl/rl/tfagents/ppo_train_eval.py --root_dir="$OUT/dense" \
        --gin_file=$CONFIGS/ppo_mujoco_dense_config.gin "${MUJOCO[@]}" ;;
    rigl90) python rigl/rl/tfagents/ppo_train_eval.py --root_dir="$OUT/rigl90" \
        --gin_file=$CONFIGS/ppo_mujoco_sparse_config.gin "${MUJOCO[@]}" \
        --gin_bindings="mask_updater.update_alg='rigl'" \
        --gin_bindings="mask_updater.last_update_step=$((TRAIN_STEPS * 8 / 10))" ;;
    *) echo "unknown part $part (allowed: cartpole dense rigl90)" >&2; exit 2 ;;
  esac
  echo "== $part"
  python experiments/print_results.py "$OUT/$part"
done
