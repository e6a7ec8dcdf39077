#!/usr/bin/env bash
# DQN learning check on CartPole-v1 (ENV=CartPole-v0 for the configs' own
# default): dense and RigL-90% ERK (the original suite's gym configs), each
# over the given seeds. Extra gin bindings for both (e.g. the learning-rate
# decay) go in EXTRA:
#   bash experiments/dqn_learning_check.sh [STEPS] [OUT] [SEEDS]
#   EXTRA="train_eval.linear_lr_decay=True" bash experiments/dqn_learning_check.sh
set -euo pipefail
STEPS=${1:-100000}
OUT=${2:-/tmp/sparserl_dqn_check}
SEEDS=${3:-"0 1 2"}
EXTRA=${EXTRA:-}
ENV=${ENV:-CartPole-v1}
extra_flags=("--gin_bindings=train_eval.env_name='$ENV'")
for binding in $EXTRA; do
  extra_flags+=("--gin_bindings=$binding")
done
cd "$(dirname "$0")/.."
for seed in $SEEDS; do
  python rigl/rl/tfagents/dqn_train_eval.py --root_dir="$OUT/dense/seed_$seed" \
    --gin_file=rigl/rl/tfagents/configs/dqn_gym_dense_config.gin \
    --gin_bindings="train_eval.num_iterations=$STEPS" \
    --gin_bindings="train_eval.seed=$seed" "${extra_flags[@]}" > /dev/null
  python rigl/rl/tfagents/dqn_train_eval.py --root_dir="$OUT/rigl90/seed_$seed" \
    --gin_file=rigl/rl/tfagents/configs/dqn_gym_sparse_config.gin \
    --gin_bindings="mask_updater.update_alg='rigl'" \
    --gin_bindings="train_eval.num_iterations=$STEPS" \
    --gin_bindings="train_eval.seed=$seed" "${extra_flags[@]}" > /dev/null
done
for run in "$OUT"/*/seed_*; do
  echo "== $run"
  python -c "import json; m = json.load(open('$run/final_metric.json')); print('final metric', m['final_return'])"
done
