r"""Train and evaluate (sparse) PPO on any Gymnasium task.

  python rigl/rl/tfagents/ppo_train_eval.py \
    --gin_file=rigl/rl/tfagents/configs/ppo_mujoco_sparse_config.gin \
    --root_dir=/tmp/sparserl/ppo

Rerunning the same command on the same root_dir resumes from the last
checkpoint (at iteration boundaries). Settings:
`rigl.rl.tfagents.algos.ppo.PpoSettings`; the loop:
`rigl.rl.tfagents.loops.on_policy`.
"""

from absl import app

from rigl.rl.tfagents.run import console

if __name__ == '__main__':
    console.define_flags()
    app.run(console.script_main('ppo'), flags_parser=console.parse_flags)
