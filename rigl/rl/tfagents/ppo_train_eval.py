r"""Train and evaluate (sparse) PPO on any Gymnasium task.

  python rigl/rl/tfagents/ppo_train_eval.py \
    --gin_file=rigl/rl/tfagents/configs/ppo_mujoco_sparse_config.gin \
    --root_dir=/tmp/sparserl/ppo

One iteration: collect `collect_sequence_length` steps in each of
`num_parallel_environments` environments, compute GAE advantages once, then
`num_epochs` passes of shuffled minibatch gradient steps. Each minibatch step is
one train step (for the mask updater and pruning schedules). Rerunning the same
command on the same root_dir resumes from the last checkpoint (iteration
boundaries). Outputs are described in train_utils.
"""

import collections
import math
import os
import sys
import time
from typing import Dict, Optional, Sequence

if __package__ in (None, ''):  # run as a script: make `rigl` importable
    sys.path.insert(0, os.path.abspath(os.path.join(
        os.path.dirname(__file__), '..', '..', '..')))

import rigl  # noqa: F401,E402  (sets TF_USE_LEGACY_KERAS first)
from absl import app  # noqa: E402
import gin  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tf_agents.specs import tensor_spec  # noqa: E402
from tf_agents.trajectories import time_step as ts  # noqa: E402
from tf_agents.trajectories import trajectory  # noqa: E402

from rigl.rl.tfagents import envs  # noqa: E402
from rigl.rl.tfagents import networks  # noqa: E402
from rigl.rl.tfagents import sparse_agents  # noqa: E402
from rigl.rl.tfagents import sparse_layers  # noqa: E402
from rigl.rl.tfagents import train_utils  # noqa: E402


def create_ppo_agent(observation_spec, action_spec, total_train_steps: int,
                     actor_fc_layers: Sequence[int] = (64, 64),
                     value_fc_layers: Sequence[int] = (64, 64),
                     learning_rate: float = 3e-4,
                     linear_lr_decay: bool = True,
                     importance_ratio_clipping: float = 0.2,
                     entropy_regularization: float = 0.0,
                     value_pred_loss_coef: float = 0.5,
                     lambda_value: float = 0.95, discount_factor: float = 0.99,
                     normalize_observations: bool = True,
                     normalize_rewards: bool = True,
                     gradient_clipping: float = 0.5,
                     train_mode_actor: str = 'dense',
                     train_mode_value: str = 'dense',
                     sparse_output_layer: bool = False, width: float = 1.0,
                     weight_decay: float = 0.0,
                     actor_value_sparsities_str: str = '',
                     seed: Optional[int] = None,
                     train_step_counter: Optional[tf.Variable] = None
                     ) -> sparse_agents.SparsePPOAgent:
    """Builds the actor and value networks, their masks, and the PPO agent."""
    networks.check_train_mode(train_mode_actor, 'train_mode_actor')
    networks.check_train_mode(train_mode_value, 'train_mode_value')
    sparsities = train_utils.parse_float_list(
        actor_value_sparsities_str, 'actor_value_sparsities_str', 2)
    actor = networks.create_ppo_actor_network(
        observation_spec, action_spec, actor_fc_layers, train_mode_actor,
        sparse_output_layer, width)
    value = networks.create_value_network(
        observation_spec, value_fc_layers, train_mode_value,
        sparse_output_layer, width)
    base_seed = 0 if seed is None else seed
    for index, network in enumerate((actor, value)):
        network.create_variables(observation_spec)
        sparse_layers.init_masks(
            network, seed=base_seed * 10 + index,
            **({'sparsity': sparsities[index]} if sparsities else {}))
    if linear_lr_decay:
        learning_rate = tf.keras.optimizers.schedules.PolynomialDecay(
            learning_rate, total_train_steps, end_learning_rate=0.0, power=1.0)
    agent = sparse_agents.SparsePPOAgent(
        ts.time_step_spec(observation_spec), action_spec,
        optimizer=train_utils.make_optimizer(learning_rate, weight_decay),
        actor_net=actor, value_net=value, greedy_eval=True,
        importance_ratio_clipping=importance_ratio_clipping,
        lambda_value=lambda_value, discount_factor=discount_factor,
        entropy_regularization=entropy_regularization,
        value_pred_loss_coef=value_pred_loss_coef, num_epochs=1, use_gae=True,
        use_td_lambda_return=True, normalize_rewards=normalize_rewards,
        normalize_observations=normalize_observations,
        gradient_clipping=gradient_clipping,
        compute_value_and_advantage_in_train=False,
        update_normalizers_in_train=False,
        train_step_counter=train_step_counter)
    agent.initialize()
    return agent


@gin.configurable
def train_eval(root_dir: str,
               env_name: str = 'HalfCheetah-v5',
               num_environment_steps: int = 1000000,
               num_iterations: Optional[int] = None,
               num_parallel_environments: int = 1,
               actor_fc_layers: Sequence[int] = (64, 64),
               value_fc_layers: Sequence[int] = (64, 64),
               learning_rate: float = 3e-4,
               linear_lr_decay: bool = True,
               collect_sequence_length: int = 2048,
               minibatch_size: int = 64,
               num_epochs: int = 10,
               importance_ratio_clipping: float = 0.2,
               entropy_regularization: float = 0.0,
               value_pred_loss_coef: float = 0.5,
               lambda_value: float = 0.95,
               discount_factor: float = 0.99,
               normalize_observations: bool = True,
               normalize_rewards: bool = True,
               gradient_clipping: float = 0.5,
               weight_decay: float = 0.0,
               width: float = 1.0,
               sparse_output_layer: bool = False,
               train_mode_actor: str = 'dense',
               train_mode_value: str = 'dense',
               actor_value_sparsities_str: str = '',
               eval_interval: int = 5,
               eval_episodes: int = 10,
               checkpoint_interval: int = 10,
               log_interval: int = 1,
               average_last_fraction: float = 0.1,
               seed: Optional[int] = None) -> Dict:
    """PPO collect/train loop; see the module docstring.

    Args:
        root_dir: where every output goes; an existing run there resumes.
        env_name: any Gymnasium id (continuous or discrete actions).
        num_environment_steps: total env steps; sets the iteration count
            unless `num_iterations` is given.
        num_iterations: collect/train iterations (overrides the above).
        num_parallel_environments: environments collected side by side.
        actor_fc_layers, value_fc_layers: hidden sizes (tanh).
        learning_rate: Adam learning rate, linearly decayed to 0 over all
            train steps when `linear_lr_decay`.
        collect_sequence_length: steps per environment per iteration.
        minibatch_size, num_epochs: minibatch SGD over each collected batch.
        importance_ratio_clipping, entropy_regularization,
        value_pred_loss_coef, lambda_value (GAE), discount_factor,
        normalize_observations, normalize_rewards, gradient_clipping: PPO.
        weight_decay: decoupled weight decay (AdamW) when > 0.
        width, sparse_output_layer, train_mode_actor, train_mode_value: as in
            SAC; sparsity from `init_masks`/`wrap_all_layers`/`mask_updater`.
        actor_value_sparsities_str: e.g. '0.9,0.8' overrides init_masks.sparsity.
        eval_interval, checkpoint_interval, log_interval: in iterations.
        eval_episodes: greedy episodes per evaluation.
        average_last_fraction: final metric over this last fraction of evals.
        seed: seeds TensorFlow, numpy, environments and masks.

    Returns:
        The final metric.
    """
    train_utils.check_positive_ints(
        num_parallel_environments=num_parallel_environments,
        collect_sequence_length=collect_sequence_length,
        minibatch_size=minibatch_size, num_epochs=num_epochs,
        eval_interval=eval_interval, eval_episodes=eval_episodes,
        checkpoint_interval=checkpoint_interval, log_interval=log_interval)
    batch_steps = collect_sequence_length * num_parallel_environments
    if minibatch_size > batch_steps:
        raise ValueError(
            f'train_eval.minibatch_size {minibatch_size} exceeds the '
            f'{batch_steps} steps collected per iteration.')
    if num_iterations is None:
        num_iterations = max(1, math.ceil(num_environment_steps / batch_steps))
    minibatches = batch_steps // minibatch_size
    os.makedirs(root_dir, exist_ok=True)
    if seed is not None:
        tf.random.set_seed(seed)
    rng = np.random.default_rng(seed)
    env_list = [envs.create_environment(
        env_name=env_name, seed=None if seed is None else seed + index)
        for index in range(num_parallel_environments)]
    eval_env = envs.create_environment(
        env_name=env_name, seed=None if seed is None else seed + 10_000,
        feature_layout_from=env_list[0])

    def stacked(time_steps):
        # TF-Agents' BatchedPyEnvironment does the same generically, at
        # ~0.2 ms per step more than MuJoCo's own step.
        return ts.TimeStep(*(np.stack(field) for field in zip(*time_steps)))
    observation_spec = tensor_spec.from_spec(env_list[0].observation_spec())
    action_spec = tensor_spec.from_spec(env_list[0].action_spec())

    train_step = tf.Variable(0, dtype=tf.int64, name='train_step')
    agent = create_ppo_agent(
        observation_spec, action_spec,
        total_train_steps=num_iterations * num_epochs * minibatches,
        actor_fc_layers=actor_fc_layers, value_fc_layers=value_fc_layers,
        learning_rate=learning_rate, linear_lr_decay=linear_lr_decay,
        importance_ratio_clipping=importance_ratio_clipping,
        entropy_regularization=entropy_regularization,
        value_pred_loss_coef=value_pred_loss_coef, lambda_value=lambda_value,
        discount_factor=discount_factor,
        normalize_observations=normalize_observations,
        normalize_rewards=normalize_rewards,
        gradient_clipping=gradient_clipping,
        train_mode_actor=train_mode_actor, train_mode_value=train_mode_value,
        sparse_output_layer=sparse_output_layer, width=width,
        weight_decay=weight_decay,
        actor_value_sparsities_str=actor_value_sparsities_str, seed=seed,
        train_step_counter=train_step)
    checkpointer = train_utils.Checkpointer(root_dir, agent=agent,
                                            train_step=train_step)
    results = train_utils.Results(root_dir)
    state = {'iteration': 0, 'env_steps': 0, 'episodes': 0, 'wall_time': 0.0,
             'train_flops': 0.0, 'recent_returns': []}
    state = train_utils.resume(checkpointer, results, rng, train_step, state)

    collect_policy = agent.collect_policy
    collect_action = tf.function(
        lambda time_step: collect_policy.action(time_step), autograph=False)
    greedy_action = train_utils.single_action_fn(agent.policy)

    @tf.function(autograph=False)
    def prepare(experience):
        """GAE advantages and returns over whole sequences, then flattened
        to transitions [N * T, 1, ...] (the last step only bootstraps)."""
        processed = agent.preprocess_sequence(experience)
        return tf.nest.map_structure(
            lambda t: tf.reshape(t[:, :-1], tf.concat(
                [[-1, 1], tf.shape(t)[2:]], 0)), processed)

    @tf.function(autograph=False)
    def train_minibatch(transitions, indices):
        batch = tf.nest.map_structure(lambda t: tf.gather(t, indices),
                                      transitions)
        return agent.train(batch)

    @tf.function(autograph=False)
    def update_normalizers(experience):
        agent.update_observation_normalizer(experience.observation)
        agent.update_reward_normalizer(experience.reward)

    noise_mask = envs.noise_feature_mask(env_list[0])
    named_networks = {'actor': agent._actor_net, 'value': agent._value_net}
    train_writer = tf.summary.create_file_writer(os.path.join(root_dir, 'train'))
    eval_writer = tf.summary.create_file_writer(os.path.join(root_dir, 'eval'))
    updater = agent._optimizer.updater
    network_flops = sum(sparse_layers.network_stats(n).flops
                        for n in named_networks.values())
    flops_per_iteration = (batch_steps * network_flops + num_epochs *
                           minibatches * minibatch_size * 3 * network_flops)
    recent_returns = collections.deque(state.pop('recent_returns'), maxlen=10)
    episode_returns = np.zeros(num_parallel_environments)
    episode_lengths = np.zeros(num_parallel_environments, np.int64)
    train_utils.write_operative_config(root_dir)
    progress = train_utils.Progress(
        num_iterations * (collect_sequence_length + 1) *
        num_parallel_environments, state['env_steps'])
    run_start = time.time() - state['wall_time']
    time_step = stacked([e.reset() for e in env_list])
    with train_writer.as_default():
        train_utils.write_sparsity_summaries(named_networks,
                                             int(train_step.numpy()),
                                             noise_mask)

    while state['iteration'] < num_iterations:
        steps = []
        for _ in range(collect_sequence_length + 1):
            # Tensors in: numpy arguments cost ~1 ms more per tf.function call.
            action_step = collect_action(
                tf.nest.map_structure(tf.convert_to_tensor, time_step))
            actions = action_step.action.numpy()
            next_step = stacked([e.step(a) for e, a in zip(env_list, actions)])
            steps.append(trajectory.Trajectory(
                step_type=time_step.step_type, observation=time_step.observation,
                action=actions,
                policy_info=tf.nest.map_structure(lambda t: t.numpy(),
                                                  action_step.info),
                next_step_type=next_step.step_type, reward=next_step.reward,
                discount=next_step.discount))
            # The step after LAST only resets: it adds no reward or length.
            in_episode = ~time_step.is_last()
            episode_returns += np.where(in_episode, next_step.reward, 0.0)
            episode_lengths += in_episode
            for index in np.flatnonzero(next_step.is_last()):
                recent_returns.append(float(episode_returns[index]))
                state['episodes'] += 1
                with train_writer.as_default():
                    train_utils.write_episode(int(train_step.numpy()),
                                              episode_returns[index],
                                              int(episode_lengths[index]))
                episode_returns[index] = episode_lengths[index] = 0
            time_step = next_step
        # Every step taken counts, the bootstrap-only last one included.
        state['env_steps'] += ((collect_sequence_length + 1) *
                               num_parallel_environments)
        experience = tf.nest.map_structure(
            lambda *xs: tf.constant(np.stack(xs, axis=1)), *steps)
        transitions = prepare(experience)
        for _ in range(num_epochs):
            order = rng.permutation(batch_steps)
            for start in range(0, minibatches * minibatch_size, minibatch_size):
                loss_info = train_minibatch(
                    transitions, order[start:start + minibatch_size])
        update_normalizers(experience)
        state['iteration'] += 1
        state['train_flops'] += flops_per_iteration
        iteration, step = state['iteration'], int(train_step.numpy())
        with train_writer.as_default(step=step):
            train_utils.write_losses(loss_info)
            tf.summary.scalar('drop_fraction', updater.last_drop_fraction)
            tf.summary.scalar('cumulative_train_flops', state['train_flops'])
        if iteration % log_interval == 0:
            line = progress.line(state['env_steps'], list(recent_returns),
                                 extra=f'iter {iteration}/{num_iterations} | ')
            with train_writer.as_default(step=step):
                tf.summary.scalar('steps_per_second',
                                  progress.steps_per_second)
            train_utils.log(line)
        if iteration % eval_interval == 0 or iteration == num_iterations:
            metrics = train_utils.evaluate(
                eval_env, greedy_action, eval_episodes)
            state['wall_time'] = time.time() - run_start
            train_utils.record_evaluation(
                eval_writer, results, step, state['env_steps'], metrics,
                named_networks, noise_mask, state['train_flops'],
                state['wall_time'])
        if iteration % checkpoint_interval == 0 or iteration == num_iterations:
            state['wall_time'] = time.time() - run_start
            checkpointer.save(step, dict(state, rng=rng.bit_generator.state,
                                         recent_returns=list(recent_returns)))
    return train_utils.finish(root_dir, agent.policy, results,
                              average_last_fraction)


def main(_):
    train_utils.run_main(train_eval)


if __name__ == '__main__':
    train_utils.define_flags()
    app.run(main)
