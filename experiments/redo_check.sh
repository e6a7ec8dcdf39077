#!/usr/bin/env bash
# ReDo learning check: DQN on CartPole-v1 (the original suite's dense gym
# config) without and with ReDo (recycle the tau-dormant neurons, tau 0.1,
# every 1000 train steps), over the given seeds; then the final metrics and
# a report of the two groups (they differ in redo.every). Extra bindings for
# the ReDo runs go in REDO (e.g. the released code's cosine schedule:
# REDO="redo.schedule='cosine' redo.end_step=100000"), for both in EXTRA.
# Not run by the tests.
#   bash experiments/redo_check.sh [STEPS] [OUT] [SEEDS]
set -euo pipefail
STEPS=${1:-100000}
OUT=${2:-/tmp/sparserl_redo_check}
SEEDS=${3:-"0 1 2"}
ENV=${ENV:-CartPole-v1}
EVERY=${EVERY:-1000}
REDO=${REDO:-}
EXTRA=${EXTRA:-}
common=("--gin_file=rigl/rl/tfagents/configs/dqn_gym_dense_config.gin"
        "--gin_bindings=train_eval.env_name='$ENV'"
        "--gin_bindings=train_eval.num_iterations=$STEPS")
for binding in $EXTRA; do
  common+=("--gin_bindings=$binding")
done
redo=("--gin_bindings=redo.every=$EVERY" "--gin_bindings=redo.tau=0.1")
for binding in $REDO; do
  redo+=("--gin_bindings=$binding")
done
cd "$(dirname "$0")/.."
for seed in $SEEDS; do
  python rigl/rl/tfagents/dqn_train_eval.py --root_dir="$OUT/dense/seed_$seed" \
    "${common[@]}" --gin_bindings="train_eval.seed=$seed" > /dev/null
  python rigl/rl/tfagents/dqn_train_eval.py --root_dir="$OUT/redo/seed_$seed" \
    "${common[@]}" "${redo[@]}" --gin_bindings="train_eval.seed=$seed" \
    > /dev/null
done
for run in "$OUT"/*/seed_*; do
  python -c "
import json
metric = json.load(open('$run/final_metric.json'))
rows = [json.loads(line) for line in open('$run/results.jsonl')]
last = rows[-1].get('plasticity', {}).get('q_network', {})
print('$run', 'final metric', metric['final_return'],
      '| dormant_0.1', last.get('dormant_0.1'),
      '| recycled', last.get('recycled_neurons', 0))"
done
# The report (in $OUT/report/) normalises both to the runs without ReDo.
python -m rigl.rl.report --root_dir="$OUT" --reference=method=dense,redo.every=0
