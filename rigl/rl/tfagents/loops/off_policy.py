"""The off-policy loop (SAC, TD3, DQN).

    initial collection with random actions
    repeat num_iterations times (one train step each):
        act only, for train_every - 1 env steps
        sample a batch from replay
        one compiled call: act on the current observation and train
        step the environment and store the transition
        summaries, progress, evaluation, checkpoint when due

All run plumbing (resume, results, checkpoints) lives in `Session`.
"""

import time
from typing import Dict

from tf_agents.trajectories.time_step import StepType

from rigl.rl.tfagents.loops.session import Session
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import summaries
from rigl.rl.tfagents.run.replay import make_replay_buffer


def train_eval(session: Session) -> Dict:
    """Trains the session's off-policy algorithm; returns the final metric."""
    algorithm, env, settings = session.algorithm, session.env, session.settings
    replay = make_replay_buffer(settings.replay_size,
                                algorithm.observation_spec,
                                algorithm.action_spec,
                                n_step=settings.n_step, gamma=settings.gamma)
    session.start(replay)
    console.log(f'replay: {replay.capacity:,} transitions, '
                f'{replay.nbytes / 2 ** 20:,.1f} MiB')
    state = session.state
    time_step = env.reset()
    episode_return, episode_length = 0.0, 0

    def env_step(action):
        nonlocal time_step, episode_return, episode_length
        next_step = env.step(action)
        replay.add(time_step.observation, action, next_step.reward,
                   next_step.discount, next_step.observation,
                   first=time_step.step_type == StepType.FIRST)
        episode_return += float(next_step.reward)
        episode_length += 1
        state.env_steps += 1
        if next_step.is_last():
            session.episode_done(episode_return, episode_length)
            replay.end_episode()
            episode_return, episode_length = 0.0, 0
            next_step = env.reset()
        time_step = next_step

    def redraw_noise_features():
        # ANF: a new permutation of real and noise features for every
        # network; optionally the replay is emptied and refilled.
        noise = algorithm.noise_layout.config
        algorithm.noise_layout.redraw(session.rng)
        console.log(f'noise features permuted anew at env step '
                    f'{state.env_steps:,}')
        if noise.empty_buffer_on_change:
            replay.clear()
            for _ in range(noise.refill_timesteps):
                env_step(algorithm.random_action(session.rng)
                         if noise.refill_mode == 'random' else
                         algorithm.act(time_step.observation[None]).numpy())

    while state.env_steps < settings.initial_collect_steps:
        env_step(algorithm.random_action(session.rng))
    redraw_period = (algorithm.noise_layout.config.adjust_period
                     if algorithm.noise_layout is not None else 0)
    redraws = state.env_steps // redraw_period if redraw_period else 0

    step = session.step
    progress = console.Progress(settings.num_iterations, step)
    flops_per_step = algorithm.training_flops()
    timed = settings.time_loop
    snr_freq = summaries.log_snr()
    while step < settings.num_iterations:
        if redraw_period and state.env_steps // redraw_period > redraws:
            redraws = state.env_steps // redraw_period
            redraw_noise_features()
        started = time.perf_counter() if timed else 0.0
        for _ in range(settings.train_every - 1):
            env_step(algorithm.act(time_step.observation[None]).numpy())
        batch = replay.sample(settings.batch_size, session.rng)
        call_started = time.perf_counter() if timed else 0.0
        action, loss_info = algorithm.act_and_train(
            time_step.observation[None], batch)
        if timed:
            state.train_call_seconds += time.perf_counter() - call_started
        env_step(action.numpy())
        step += 1
        state.train_flops += flops_per_step
        if step % settings.summary_interval == 0:
            session.write_train_summaries(loss_info, progress.steps_per_second)
        if snr_freq and step % snr_freq == 0:
            session.write_snr(batch)
        if timed:  # loop time per step, evaluation and checkpoints excluded
            state.loop_seconds += time.perf_counter() - started
        if step % settings.log_interval == 0:
            console.log(progress.line(step, list(session.recent_returns)))
        if step % settings.eval_interval == 0 or step == settings.num_iterations:
            session.evaluate(**({'loop_seconds': state.loop_seconds,
                                 'train_call_seconds': state.train_call_seconds}
                                if timed else {}))
            flops_per_step = algorithm.training_flops()
        if (settings.policy_save_interval and
                step % settings.policy_save_interval == 0):
            session.save_policy(step)
        if (step % settings.checkpoint_interval == 0 or
                step == settings.num_iterations):
            session.checkpoint()
    return session.finish()
