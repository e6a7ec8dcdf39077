r"""Train and evaluate (sparse) DQN on a discrete-action Gymnasium task.

  python rigl/rl/tfagents/dqn_train_eval.py \
    --gin_file=rigl/rl/tfagents/configs/dqn_gym_sparse_config.gin \
    --root_dir=/tmp/sparserl/dqn

Rerunning the same command on the same root_dir resumes from the last
checkpoint. Settings: `rigl.rl.tfagents.algos.dqn.DqnSettings`; the loop:
`rigl.rl.tfagents.loops.off_policy`.
"""

from absl import app

from rigl.rl.tfagents.run import console

if __name__ == '__main__':
    console.define_flags()
    app.run(console.script_main('dqn'), flags_parser=console.parse_flags)
