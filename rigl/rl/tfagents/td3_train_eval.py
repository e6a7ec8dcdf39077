r"""Train and evaluate (sparse) TD3 on any continuous-action Gymnasium task.

  python rigl/rl/tfagents/td3_train_eval.py \
    --gin_file=rigl/rl/tfagents/configs/td3_mujoco_sparse_config.gin \
    --root_dir=/tmp/sparserl/ds_td3

Rerunning the same command on the same root_dir resumes from the last
checkpoint. Settings: `rigl.rl.tfagents.algos.td3.Td3Settings`; the loop:
`rigl.rl.tfagents.loops.off_policy`.
"""

from absl import app

from rigl.rl.tfagents.run import console

if __name__ == '__main__':
    console.define_flags()
    app.run(console.script_main('td3'), flags_parser=console.parse_flags)
