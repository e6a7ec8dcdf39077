"""Tiny run settings: one home for the gin bindings of the tests' short runs.

Each constant is a list of `train_eval` bindings that trains an agent for
seconds. A test that needs another value appends its binding to the list
(gin keeps the last binding of a parameter), so that every departure from
these settings is written where it is needed:

    tiny.SAC + ['train_eval.num_iterations = 100']
"""

# Every tiny run skips the final SavedModel (`policy/`, about a second per
# run); the tests that check or load it append
# 'train_eval.save_final_policy = True'.
NO_POLICY = 'train_eval.save_final_policy = False'
WITH_POLICY = 'train_eval.save_final_policy = True'

# SAC on Pendulum, 16-unit networks: 200 train steps after 100 random ones,
# an evaluation, a checkpoint and a log line at steps 100 and 200.
SAC = [
    "train_eval.env_name = 'Pendulum-v1'",
    'train_eval.num_iterations = 200',
    'train_eval.initial_collect_steps = 100',
    'train_eval.actor_fc_layers = (16, 16)',
    'train_eval.critic_joint_fc_layers = (16, 16)',
    'train_eval.batch_size = 16',
    'train_eval.eval_interval = 100',
    'train_eval.eval_episodes = 1',
    'train_eval.checkpoint_interval = 100',
    'train_eval.log_interval = 100',
    'train_eval.seed = 0',
    NO_POLICY,
]

# TD3 takes SAC's setting names: the same run.
TD3 = list(SAC)

# SAC at 32 units for 300 steps, evaluated and checkpointed at 150 and 300:
# the SAC script's tests, whose FLOP and mask counts are worked out for
# 32-unit layers (and the distributed tests, which reuse them).
SAC_32 = SAC + [
    'train_eval.num_iterations = 300',
    'train_eval.actor_fc_layers = (32, 32)',
    'train_eval.critic_joint_fc_layers = (32, 32)',
    'train_eval.batch_size = 32',
    'train_eval.eval_interval = 150',
    'train_eval.checkpoint_interval = 150',
]

# SAC as a sweep's runs take it, on the sparse config (named relative to
# the repository, as a study file names it): no seed (the sweep appends each
# run's), mask updates every 25 steps.
SAC_SWEEP_CONFIG = 'rigl/rl/tfagents/configs/sac_mujoco_sparse_config.gin'
SAC_SWEEP = [binding for binding in SAC
             if not binding.startswith('train_eval.seed')] + [
    'mask_updater.update_freq = 25',
]

# The grid of the tiny study that tests/conftest.py runs once (the
# `tiny_local_study` fixture): SET, RigL and a rule that the script refuses.
STUDY_GRID = "--grid=mask_updater.update_alg=['set','rigl','bogus']"

# DQN on the config's classic-control task (CartPole-v0), 32-unit layers:
# 300 train steps after 200 random ones, evaluations (2 episodes),
# checkpoints and log lines at 150 and 300, targets copied every 20 steps.
DQN = [
    'train_eval.num_iterations = 300',
    'train_eval.initial_collect_steps = 200',
    'train_eval.fc_layer_params = (32, 32)',
    'train_eval.batch_size = 32',
    'train_eval.eval_interval = 150',
    'train_eval.eval_episodes = 2',
    'train_eval.checkpoint_interval = 150',
    'train_eval.log_interval = 150',
    'train_eval.target_update_period = 20',
    'train_eval.seed = 0',
    NO_POLICY,
]

# PPO, 16-unit networks: 3 iterations of 2 environments x 64 steps = 128
# transitions -> 4 minibatches of 32, 2 epochs: 8 train steps per
# iteration, 24 in all; an evaluation and a checkpoint after each.
PPO = [
    'train_eval.num_iterations = 3',
    'train_eval.num_parallel_environments = 2',
    'train_eval.collect_sequence_length = 64',
    'train_eval.minibatch_size = 32',
    'train_eval.num_epochs = 2',
    'train_eval.actor_fc_layers = (16, 16)',
    'train_eval.value_fc_layers = (16, 16)',
    'train_eval.eval_interval = 1',
    'train_eval.eval_episodes = 1',
    'train_eval.checkpoint_interval = 1',
    'train_eval.seed = 0',
    NO_POLICY,
]

# The continuous-action task of the PPO tests.
PENDULUM = ["train_eval.env_name = 'Pendulum-v1'"]
