#!/usr/bin/env bash
# Reruns MountainCar-v0 runs of the DQN classic study (static, SET and RigL
# at 90%, the study's own command) up to their 20k checkpoint and stops
# them there, for experiments/mountaincar_early_behaviour.py to read their
# replay buffers. One intra-op thread, as the study's runs: the reruns then
# repeat them bit for bit (the behaviour script checks their eval returns).
#   bash experiments/mountaincar_early_runs.sh [OUT] [SEEDS]
#   python experiments/mountaincar_early_behaviour.py OUT --window=10000
set -euo pipefail
OUT=${1:-/tmp/sparserl_mountaincar_early}
SEEDS=${2:-"0 1"}
STOP_STEP=20000
cd "$(dirname "$0")/.."
export TF_NUM_INTRAOP_THREADS=1 OMP_NUM_THREADS=1
for seed in $SEEDS; do
  for method in static set rigl; do
    root="$OUT/${method}_s$seed"
    checkpoint="$root/checkpoints/ckpt-$STOP_STEP"
    [ -d "$checkpoint" ] && continue
    rule="'$method'"; [ "$method" = static ] && rule="''"
    mkdir -p "$OUT"
    python rigl/rl/tfagents/dqn_train_eval.py --root_dir="$root" \
      --gin_file=rigl/rl/tfagents/configs/dqn_gym_sparse_config.gin \
      "--gin_bindings=train_eval.env_name = 'MountainCar-v0'" \
      "--gin_bindings=init_masks.sparsity = 0.9" \
      "--gin_bindings=mask_updater.update_alg = $rule" \
      "--gin_bindings=train_eval.seed = $seed" > "$root.log" 2>&1 &
    pid=$!
    # Stop once the checkpoint exists (a checkpoint directory appears
    # complete, by a rename).
    while kill -0 "$pid" 2>/dev/null; do
      if [ -d "$checkpoint" ]; then
        kill "$pid"
        break
      fi
      sleep 3
    done
    wait "$pid" || true
    if [ ! -d "$checkpoint" ]; then
      tail -n 5 "$root.log" >&2
      echo "$method seed $seed stopped before step $STOP_STEP; log $root.log" >&2
      exit 1
    fi
    echo "$method seed $seed: $checkpoint"
  done
done
