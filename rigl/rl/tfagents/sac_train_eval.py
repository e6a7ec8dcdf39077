r"""Train and evaluate (sparse) SAC on any Gymnasium task.

  python rigl/rl/tfagents/sac_train_eval.py \
    --gin_file=rigl/rl/tfagents/configs/sac_mujoco_sparse_config.gin \
    --gin_bindings="mask_updater.update_alg='rigl'" \
    --root_dir=/tmp/sparserl/sac

Rerunning the same command on the same root_dir resumes from the last
checkpoint. Settings: `rigl.rl.tfagents.algos.sac.SacSettings`; the loop:
`rigl.rl.tfagents.loops.off_policy`.
"""

from absl import app

from rigl.rl.tfagents.run import console

if __name__ == '__main__':
    console.define_flags()
    app.run(console.script_main('sac'), flags_parser=console.parse_flags)
