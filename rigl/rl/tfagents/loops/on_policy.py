"""The on-policy loop (PPO).

    repeat for the algorithm's iterations:
        collect collect_sequence_length + 1 steps in every environment
            (the collect policy in numpy, weights read once per iteration)
        compute advantages once (the last step only bootstraps)
        num_epochs passes of shuffled minibatch train steps
        gradient SNR summaries on the last minibatch when due
        update observation and reward normalizers
        summaries, progress, evaluation, checkpoint when due

Intervals count iterations. All run plumbing lives in `Session`.
"""

import time
from typing import Dict

import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from rigl.rl.tfagents.loops.session import Session
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import plasticity
from rigl.rl.tfagents.run import summaries


def _stacked(time_steps) -> ts.TimeStep:
    # TF-Agents' BatchedPyEnvironment does the same generically, at ~0.2 ms
    # per step more than MuJoCo's own step.
    return ts.TimeStep(*(np.stack(field) for field in zip(*time_steps)))


def train_eval(session: Session) -> Dict:
    """Trains the session's on-policy algorithm; returns the final metric."""
    algorithm, env_list, settings = (session.algorithm, session.envs,
                                     session.settings)
    num_envs = len(env_list)
    session.start()
    state, iterations = session.state, settings.iterations
    steps_per_iteration = (settings.collect_sequence_length + 1) * num_envs
    progress = console.Progress(iterations * steps_per_iteration,
                                state.env_steps)
    resumed = session.resumed_loop_state
    if resumed is None:
        flops_per_iteration = algorithm.training_flops()
        episode_returns = np.zeros(num_envs)
        episode_lengths = np.zeros(num_envs, np.int64)
        time_step = _stacked([env.reset() for env in env_list])
    else:  # checkpoints fall between iterations: no partial rollout
        flops_per_iteration = resumed['flops_per_iteration']
        episode_returns = resumed['episode_returns']
        episode_lengths = resumed['episode_lengths']
        time_step = _stacked([env.current_time_step() for env in env_list])
    snr_freq = summaries.log_snr()
    timed = settings.time_loop
    while state.iteration < iterations:
        started = time.perf_counter() if timed else 0.0
        steps = []
        algorithm.collect_policy.refresh()  # this iteration's weights
        for _ in range(settings.collect_sequence_length + 1):
            actions, info = algorithm.collect_policy(time_step.observation,
                                                     session.rng)
            next_step = _stacked([env.step(action)
                                  for env, action in zip(env_list, actions)])
            steps.append(trajectory.Trajectory(
                step_type=time_step.step_type, observation=time_step.observation,
                action=actions, policy_info=info,
                next_step_type=next_step.step_type, reward=next_step.reward,
                discount=next_step.discount))
            # The step after LAST only resets: it adds no reward or length.
            in_episode = ~time_step.is_last()
            episode_returns += np.where(in_episode, next_step.reward, 0.0)
            episode_lengths += in_episode
            for index in np.flatnonzero(next_step.is_last()):
                session.episode_done(episode_returns[index],
                                     int(episode_lengths[index]))
                episode_returns[index] = episode_lengths[index] = 0
            time_step = next_step
        state.env_steps += steps_per_iteration  # bootstrap-only steps too
        experience = tf.nest.map_structure(
            lambda *xs: tf.constant(np.stack(xs, axis=1)), *steps)
        collected = time.perf_counter() if timed else 0.0
        transitions = algorithm.prepare(experience)
        # num_epochs shuffles, each cut into minibatches, trained in one call.
        batches = np.concatenate([
            session.rng.permutation(settings.batch_steps)[
                :settings.minibatches * settings.minibatch_size].reshape(
                    settings.minibatches, settings.minibatch_size)
            for _ in range(settings.num_epochs)])
        loss_info = algorithm.train_minibatches(transitions,
                                                tf.constant(batches))
        if snr_freq and (state.iteration + 1) % snr_freq == 0:
            # On the iteration's last minibatch, before the normalizers move.
            session.write_snr(algorithm.minibatch(transitions, batches[-1]))
        algorithm.update_normalizers(experience)
        if timed:  # evaluation and checkpoints excluded
            now = time.perf_counter()
            state.collect_seconds += collected - started
            state.train_call_seconds += now - collected
            state.loop_seconds += now - started
        state.iteration += 1
        state.train_flops += flops_per_iteration
        iteration = state.iteration
        if iteration % settings.log_interval == 0:
            console.log(progress.line(state.env_steps,
                                      list(session.recent_returns),
                                      extra=f'iter {iteration}/{iterations} | '))
        if iteration % settings.summary_interval == 0:
            session.write_train_summaries(loss_info, progress.steps_per_second)
        if iteration % settings.eval_interval == 0 or iteration == iterations:
            observations = experience.observation.numpy()
            session.evaluate(
                plasticity_batch={'observation': observations.reshape(
                    -1, *observations.shape[2:])[-plasticity.BATCH_SIZE:]},
                **({'loop_seconds': state.loop_seconds,
                    'collect_seconds': state.collect_seconds,
                    'train_seconds': state.train_call_seconds}
                   if timed else {}))
            flops_per_iteration = algorithm.training_flops()
        if (settings.policy_save_interval and
                iteration % settings.policy_save_interval == 0):
            session.save_policy(iteration)
        if (iteration % settings.checkpoint_interval == 0 or
                iteration == iterations):
            session.checkpoint({'episode_returns': episode_returns,
                                'episode_lengths': episode_lengths,
                                'flops_per_iteration': flops_per_iteration})
    return session.finish()
