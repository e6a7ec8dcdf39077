r"""Train and evaluate (sparse) SAC on any Gymnasium task.

  python rigl/rl/tfagents/sac_train_eval.py \
    --gin_file=rigl/rl/tfagents/configs/sac_mujoco_sparse_config.gin \
    --gin_bindings="mask_updater.update_alg='rigl'" --root_dir=/tmp/sparserl/sac

Rerunning the same command on the same root_dir resumes from the last
checkpoint. Outputs are described in train_utils.
"""

import collections
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
from tf_agents.policies import greedy_policy  # noqa: E402
from tf_agents.policies import policy_saver  # noqa: E402
from tf_agents.specs import tensor_spec  # noqa: E402
from tf_agents.trajectories import policy_step  # noqa: E402
from tf_agents.trajectories import time_step as ts  # noqa: E402
from tf_agents.trajectories import trajectory  # noqa: E402

from rigl.rl.tfagents import envs  # noqa: E402
from rigl.rl.tfagents import networks  # noqa: E402
from rigl.rl.tfagents import sparse_agents  # noqa: E402
from rigl.rl.tfagents import sparse_layers  # noqa: E402
from rigl.rl.tfagents import train_utils  # noqa: E402


def create_sac_agent(observation_spec, action_spec,
                     actor_fc_layers: Sequence[int] = (256, 256),
                     critic_joint_fc_layers: Sequence[int] = (256, 256),
                     actor_learning_rate: float = 3e-4,
                     critic_learning_rate: float = 3e-4,
                     alpha_learning_rate: float = 3e-4,
                     gamma: float = 0.99, target_update_tau: float = 0.005,
                     target_update_period: int = 1,
                     reward_scale_factor: float = 0.1,
                     train_mode_actor: str = 'dense',
                     train_mode_value: str = 'dense',
                     sparse_output_layer: bool = False, width: float = 1.0,
                     weight_decay: float = 0.0,
                     actor_critic_sparsities_str: str = '',
                     actor_critic_widths_str: str = '',
                     seed: Optional[int] = None,
                     train_step_counter: Optional[tf.Variable] = None
                     ) -> sparse_agents.SparseSacAgent:
    """Builds the actor, two critics, their masks, and the SAC agent.

    Sparsity of each network comes from `init_masks` (gin), overridden per
    network by `actor_critic_sparsities_str` ('0.9,0.8' = actor, critics);
    `actor_critic_widths_str` likewise overrides `width`.
    """
    networks.check_train_mode(train_mode_actor, 'train_mode_actor')
    networks.check_train_mode(train_mode_value, 'train_mode_value')
    sparsities = train_utils.parse_float_list(
        actor_critic_sparsities_str, 'actor_critic_sparsities_str', 2)
    widths = train_utils.parse_float_list(
        actor_critic_widths_str, 'actor_critic_widths_str', 2) or [width] * 2
    actor = networks.create_sac_actor_network(
        observation_spec, action_spec, actor_fc_layers, train_mode_actor,
        sparse_output_layer, widths[0])
    critics = [networks.create_sac_critic_network(
        observation_spec, action_spec, critic_joint_fc_layers,
        train_mode_value, sparse_output_layer, widths[1]) for _ in range(2)]
    actor.create_variables(observation_spec)
    base_seed = 0 if seed is None else seed
    mask_kwargs = lambda index: dict(  # noqa: E731
        seed=base_seed * 10 + index,
        **({'sparsity': sparsities[min(index, 1)]} if sparsities else {}))
    sparse_layers.init_masks(actor, **mask_kwargs(0))
    for index, critic in enumerate(critics, start=1):
        critic.create_variables((observation_spec, action_spec))
        sparse_layers.init_masks(critic, **mask_kwargs(index))
    agent = sparse_agents.SparseSacAgent(
        ts.time_step_spec(observation_spec), action_spec,
        critic_network=critics[0], critic_network_2=critics[1],
        actor_network=actor,
        actor_optimizer=train_utils.make_optimizer(actor_learning_rate, weight_decay),
        critic_optimizer=train_utils.make_optimizer(critic_learning_rate, weight_decay),
        alpha_optimizer=tf.keras.optimizers.Adam(alpha_learning_rate),
        target_update_tau=target_update_tau,
        target_update_period=target_update_period, gamma=gamma,
        reward_scale_factor=reward_scale_factor,
        train_step_counter=train_step_counter)
    agent.initialize()
    return agent


def transition_batch(batch: Dict[str, np.ndarray]) -> trajectory.Transition:
    """A replay sample as the Transition SAC trains on."""
    size = batch['reward'].shape[0]
    mid = tf.fill([size], ts.StepType.MID)
    return trajectory.Transition(
        time_step=ts.TimeStep(mid, tf.zeros([size]), tf.ones([size]),
                              batch['observation']),
        action_step=policy_step.PolicyStep(batch['action'], (), ()),
        next_time_step=ts.TimeStep(mid, batch['reward'], batch['discount'],
                                   batch['next_observation']))


def training_flops_per_step(agent, batch_size: int) -> int:
    """Theoretical FLOPs of one SAC train step (sparse implementation).

    RigL-paper convention: a trained network costs 3x its forward pass
    (forward, gradient w.r.t. inputs, gradient w.r.t. weights) per example.
    Counted: both critics trained, both target critics forward on the next
    state, the actor forward for the next action, the actor trained through
    one critic (forward + input gradient: 2x).
    """
    actor = sparse_layers.network_stats(agent._actor_network).flops
    critic = sum(sparse_layers.network_stats(net).flops for net in
                 (agent._critic_network_1, agent._critic_network_2))
    per_example = 3 * critic + critic + actor + 3 * actor + critic
    return int(batch_size * per_example)


@gin.configurable
def train_eval(root_dir: str,
               env_name: str = 'HalfCheetah-v5',
               num_iterations: int = 1000000,
               initial_collect_steps: int = 10000,
               actor_fc_layers: Sequence[int] = (256, 256),
               critic_joint_fc_layers: Sequence[int] = (256, 256),
               batch_size: int = 256,
               actor_learning_rate: float = 3e-4,
               critic_learning_rate: float = 3e-4,
               alpha_learning_rate: float = 3e-4,
               gamma: float = 0.99,
               target_update_tau: float = 0.005,
               target_update_period: int = 1,
               reward_scale_factor: float = 0.1,
               replay_capacity: int = 1000000,
               eval_interval: int = 10000,
               eval_episodes: int = 30,
               checkpoint_interval: int = 50000,
               policy_save_interval: int = 0,
               summary_interval: int = 1000,
               log_interval: int = 5000,
               train_mode_actor: str = 'dense',
               train_mode_value: str = 'dense',
               sparse_output_layer: bool = False,
               width: float = 1.0,
               weight_decay: float = 0.0,
               actor_critic_sparsities_str: str = '',
               actor_critic_widths_str: str = '',
               average_last_fraction: float = 0.1,
               seed: Optional[int] = None) -> Dict:
    """Collects one step and trains one step per iteration; see module doc.

    Args:
        root_dir: where every output goes; an existing run there resumes.
        env_name: any Gymnasium id.
        num_iterations: train steps (each after one collect step).
        initial_collect_steps: random-action steps before training.
        actor_fc_layers, critic_joint_fc_layers: hidden layer sizes.
        batch_size: replay sample size per train step.
        actor_learning_rate, critic_learning_rate, alpha_learning_rate: Adam.
        gamma, target_update_tau, target_update_period, reward_scale_factor:
            as in TF-Agents' SacAgent.
        replay_capacity: transitions kept.
        eval_interval: train steps between greedy evaluations.
        eval_episodes: episodes per evaluation.
        checkpoint_interval: train steps between checkpoints (and at the end).
        policy_save_interval: train steps between saved policies (0: end only).
        summary_interval: train steps between TensorBoard training summaries.
        log_interval: train steps between console progress lines.
        train_mode_actor, train_mode_value: 'dense' or 'sparse' (the latter
            wraps layers per `wrap_all_layers` and masks per `init_masks`).
        sparse_output_layer: whether output layers are sparse too.
        width: hidden-layer width multiplier.
        weight_decay: decoupled weight decay (AdamW) when > 0.
        actor_critic_sparsities_str: e.g. '0.9,0.8': actor and critic
            sparsities, overriding `init_masks.sparsity`.
        actor_critic_widths_str: e.g. '1,2': per-network width override.
        average_last_fraction: final metric = mean of this last fraction of
            eval returns.
        seed: seeds TensorFlow, numpy, the environments and the masks.

    Returns:
        The final metric.
    """
    train_utils.check_positive_ints(
        num_iterations=num_iterations, batch_size=batch_size,
        eval_interval=eval_interval, eval_episodes=eval_episodes,
        checkpoint_interval=checkpoint_interval,
        summary_interval=summary_interval, log_interval=log_interval)
    if initial_collect_steps < 0:
        raise ValueError('train_eval.initial_collect_steps must be >= 0, got '
                         f'{initial_collect_steps!r}.')
    if not 0 < average_last_fraction <= 1:
        raise ValueError('train_eval.average_last_fraction must be in (0, 1], '
                         f'got {average_last_fraction!r}.')
    os.makedirs(root_dir, exist_ok=True)
    if seed is not None:
        tf.random.set_seed(seed)
    rng = np.random.default_rng(seed)
    env = envs.create_environment(env_name=env_name, seed=seed)
    # Same feature order as training (noise values stay independent).
    eval_env = envs.create_environment(
        env_name=env_name, seed=None if seed is None else seed + 10_000,
        feature_layout_from=env)
    observation_spec = tensor_spec.from_spec(env.observation_spec())
    action_spec = tensor_spec.from_spec(env.action_spec())
    if not action_spec.dtype.is_floating:
        raise ValueError(f'SAC needs continuous actions; {env_name} has '
                         f'{action_spec}. Use dqn or ppo for discrete ones.')

    train_step = tf.Variable(0, dtype=tf.int64, name='train_step')
    agent = create_sac_agent(
        observation_spec, action_spec, actor_fc_layers=actor_fc_layers,
        critic_joint_fc_layers=critic_joint_fc_layers,
        actor_learning_rate=actor_learning_rate,
        critic_learning_rate=critic_learning_rate,
        alpha_learning_rate=alpha_learning_rate, gamma=gamma,
        target_update_tau=target_update_tau,
        target_update_period=target_update_period,
        reward_scale_factor=reward_scale_factor,
        train_mode_actor=train_mode_actor, train_mode_value=train_mode_value,
        sparse_output_layer=sparse_output_layer, width=width,
        weight_decay=weight_decay,
        actor_critic_sparsities_str=actor_critic_sparsities_str,
        actor_critic_widths_str=actor_critic_widths_str, seed=seed,
        train_step_counter=train_step)
    replay = train_utils.ReplayBuffer(
        min(replay_capacity, num_iterations + initial_collect_steps),
        observation_spec.shape, action_spec.shape)
    checkpointer = train_utils.Checkpointer(root_dir, agent=agent,
                                            train_step=train_step)
    results = train_utils.Results(root_dir)
    state = {'env_steps': 0, 'episodes': 0, 'wall_time': 0.0,
             'train_flops': 0.0, 'recent_returns': [], 'loop_seconds': 0.0,
             'train_call_seconds': 0.0}
    state = train_utils.resume(checkpointer, results, rng, train_step, state,
                               replay)

    # SAC's agent.policy samples; evaluation and the saved policy use the mode.
    eval_policy = greedy_policy.GreedyPolicy(agent.policy)
    greedy_action = train_utils.single_action_fn(eval_policy)


    def act_and_train(observation, batch):
        # One call per iteration: the action for the current observation
        # (from the parameters before this step) and one train step.
        action = agent.collect_policy.action(
            ts.restart(observation, batch_size=1)).action[0]
        return action, agent.train(transition_batch(batch))

    act_and_train = tf.function(act_and_train, autograph=False)
    noise_mask = envs.noise_feature_mask(env)
    named_networks = {'actor': agent._actor_network,
                      'critic_1': agent._critic_network_1,
                      'critic_2': agent._critic_network_2}
    train_writer = tf.summary.create_file_writer(os.path.join(root_dir, 'train'))
    eval_writer = tf.summary.create_file_writer(os.path.join(root_dir, 'eval'))
    updaters = {'actor': agent._actor_optimizer.updater,
                'critic': agent._critic_optimizer.updater}

    action_low = action_spec.minimum * np.ones(action_spec.shape, np.float32)
    action_high = action_spec.maximum * np.ones(action_spec.shape, np.float32)
    recent_returns = collections.deque(state.pop('recent_returns'), maxlen=10)
    time_step = env.reset()
    episode_return, episode_length = 0.0, 0

    def env_step(action):
        nonlocal time_step, episode_return, episode_length
        next_step = env.step(action)
        replay.add(time_step.observation, action, next_step.reward,
                   next_step.discount, next_step.observation)
        episode_return += float(next_step.reward)
        episode_length += 1
        state['env_steps'] += 1
        if next_step.is_last():
            recent_returns.append(episode_return)
            state['episodes'] += 1
            with train_writer.as_default():
                train_utils.write_episode(int(train_step.numpy()),
                                          episode_return, episode_length)
            episode_return, episode_length = 0.0, 0
            next_step = env.reset()
        time_step = next_step

    while state['env_steps'] < initial_collect_steps:
        env_step(rng.uniform(action_low, action_high).astype(np.float32))

    def checkpoint(step):
        saved = dict(state, rng=rng.bit_generator.state,
                     recent_returns=list(recent_returns))
        checkpointer.save(step, saved, replay)

    train_utils.write_operative_config(root_dir)
    step = int(train_step.numpy())
    progress = train_utils.Progress(num_iterations, step)
    flops_per_step = training_flops_per_step(agent, batch_size)
    run_start = time.time() - state['wall_time']
    with train_writer.as_default():
        train_utils.write_sparsity_summaries(named_networks, step, noise_mask)
    while step < num_iterations:
        started = time.perf_counter()
        batch = replay.sample(batch_size, rng)
        call_started = time.perf_counter()
        action, loss_info = act_and_train(time_step.observation[None], batch)
        state['train_call_seconds'] += time.perf_counter() - call_started
        env_step(action.numpy())
        step += 1
        state['train_flops'] += flops_per_step
        if step % summary_interval == 0:
            with train_writer.as_default(step=step):
                train_utils.write_losses(loss_info)
                for name, updater in updaters.items():
                    tf.summary.scalar(f'drop_fraction/{name}',
                                      updater.last_drop_fraction)
                tf.summary.scalar('alpha', tf.exp(agent._log_alpha))
                tf.summary.scalar('cumulative_train_flops',
                                  state['train_flops'])
                if progress.steps_per_second:
                    tf.summary.scalar('steps_per_second',
                                      progress.steps_per_second)
        # Per-step loop time (evaluation and checkpoints excluded): with
        # train_call_seconds it tells what the loop costs beyond training.
        state['loop_seconds'] += time.perf_counter() - started
        if step % log_interval == 0:
            train_utils.log(progress.line(step, list(recent_returns)))
        if step % eval_interval == 0 or step == num_iterations:
            metrics = train_utils.evaluate(
                eval_env, greedy_action, eval_episodes)
            state['wall_time'] = time.time() - run_start
            train_utils.record_evaluation(
                eval_writer, results, step, state['env_steps'], metrics,
                named_networks, noise_mask, state['train_flops'],
                state['wall_time'], loop_seconds=state['loop_seconds'],
                train_call_seconds=state['train_call_seconds'])
            flops_per_step = training_flops_per_step(agent, batch_size)
        if policy_save_interval and step % policy_save_interval == 0:
            policy_saver.PolicySaver(eval_policy, batch_size=None).save(
                os.path.join(root_dir, 'policies', f'policy-{step}'))
        if step % checkpoint_interval == 0 or step == num_iterations:
            state['wall_time'] = time.time() - run_start
            checkpoint(step)

    return train_utils.finish(root_dir, eval_policy, results,
                              average_last_fraction)


def main(_):
    train_utils.run_main(train_eval)


if __name__ == '__main__':
    train_utils.define_flags()
    app.run(main)
