"""The off-policy loop (SAC, TD3, DQN).

    initial collection with random actions
    repeat num_iterations times (one train step each):
        act only, for train_every - 1 env steps
        sample a batch of n-step transitions from replay
        one compiled call: act on the current observation and train
        step the environment and store the transition
        summaries, progress, evaluation, checkpoint when due

With RLx2's replay settings (`algos.rlx2`), n grows from 1 to
`train_eval.n_step` at `train_eval.n_step_delay`, and every
`train_eval.replay_check_interval` env steps the dynamic-capacity rule may
drop the replay's oldest transitions (`ReplayControl`).

All run plumbing (resume, results, checkpoints) lives in `Session`.
"""

import time
from typing import Dict, Optional, Tuple

from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories.time_step import StepType

from rigl.rl.tfagents.algos import rlx2
from rigl.rl.tfagents.loops.session import Session
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import dynamic_replay
from rigl.rl.tfagents.run import n_step as n_step_lib
from rigl.rl.tfagents.run import summaries
from rigl.rl.tfagents.run.replay import make_replay_buffer


class ReplayControl:
    """RLx2's replay mechanisms in the loop, both off unless configured:
    the steps per target of each train step (`n_step.n_step_at`) and the
    dynamic-capacity checks (`run.dynamic_replay`).

    Args:
        session: the run's session (its algorithm records policy actions
            when the dynamic capacity is on).
    """

    def __init__(self, session: Session):
        self._session = session
        settings = session.settings
        self.rule = dynamic_replay.from_settings(settings)
        self._n_step = settings.n_step
        self._delay = getattr(settings, 'n_step_delay', 0)
        self._current = None
        self._distance: Optional[float] = None
        self.replay = make_replay_buffer(
            settings.replay_size, session.algorithm.observation_spec,
            session.algorithm.action_spec, n_step=settings.n_step,
            gamma=settings.gamma, policy_actions=self.rule is not None)
        if (self.rule is not None and
                settings.replay_size <= self.rule.min_size):
            console.log(f'warning: the replay never holds more than '
                        f'{settings.replay_size:,} transitions, not above '
                        f'train_eval.replay_min_size {self.rule.min_size:,}: '
                        'the dynamic capacity will drop nothing.')

    def policy_action(self):
        """The noise-free action of the algorithm's last exploration step
        when the replay stores them (else None)."""
        return (None if self.rule is None else
                self._session.algorithm.latest_policy_action())

    def before_sample(self, step: int) -> None:
        """Sets the steps per target of train step `step + 1`."""
        if self._delay <= 1:
            return
        current = n_step_lib.n_step_at(step + 1, self._n_step, self._delay)
        if current != self._current:
            if self._current is not None or current > 1:
                console.log(f'{current}-step targets from train step '
                            f'{step + 1:,} (train_eval.n_step_delay '
                            f'{self._delay:,})')
            self._current = self.replay.n_step = current

    def after_add(self, env_steps: int) -> None:
        """Runs the dynamic-capacity check when due."""
        if self.rule is None or not self.rule.due(env_steps):
            return
        algorithm, replay = self._session.algorithm, self.replay
        self._distance, dropped = self.rule.check(
            replay, algorithm.greedy_actions,
            rlx2.half_range(algorithm.action_spec))
        dynamic_replay.write_summaries(self._session.train_writer,
                                       self._session.step, self._distance,
                                       replay.size)
        if dropped:
            console.log(f'replay: policy distance {self._distance:.3f} > '
                        f'{self.rule.threshold:g}: dropped the oldest '
                        f'{dropped:,} transitions, {replay.size:,} left')

    def state(self) -> Dict:
        """What a resume needs to go on as if never stopped."""
        return {'policy_distance': self._distance}

    def set_state(self, state: Dict) -> None:
        self._distance = state['policy_distance']

    def eval_fields(self) -> Dict:
        """Extra fields of a results row: the steps per target, the replay
        size and the last policy distance, where configured."""
        fields = {}
        if self._delay > 1:
            fields['n_step'] = self.replay.n_step
        if self.rule is not None:
            fields.update(replay_size=self.replay.size,
                          policy_distance=self._distance)
        return fields


def _start(session: Session, control: ReplayControl
           ) -> Tuple[ts.TimeStep, float, int]:
    """Starts the session; returns the time step the loop starts from,
    with its episode's return and length so far: the episode in progress
    when the session restored the environment (the replay's episode goes on
    too), else a new one."""
    replay = control.replay
    session.start(replay)
    console.log(f'replay: {replay.capacity:,} transitions, '
                f'{replay.nbytes / 2 ** 20:,.1f} MiB')
    resumed = session.resumed_loop_state
    if resumed is None:
        return session.env.reset(), 0.0, 0
    time_step = session.env.current_time_step()
    control.set_state(resumed)
    if time_step.step_type != StepType.FIRST:
        replay.continue_episode()  # loading the replay ended it
    return time_step, resumed['episode_return'], resumed['episode_length']


def train_eval(session: Session) -> Dict:
    """Trains the session's off-policy algorithm; returns the final metric."""
    algorithm, env, settings = session.algorithm, session.env, session.settings
    control = ReplayControl(session)
    replay = control.replay
    time_step, episode_return, episode_length = _start(session, control)
    state, resumed = session.state, session.resumed_loop_state

    def env_step(action, policy_action=None):
        # policy_action: the noise-free one, if the replay stores them.
        nonlocal time_step, episode_return, episode_length
        next_step = env.step(action)
        replay.add(time_step.observation, action, next_step.reward,
                   next_step.discount, next_step.observation,
                   first=time_step.step_type == StepType.FIRST,
                   **({} if control.rule is None else
                      {'policy_action': policy_action}))
        episode_return += float(next_step.reward)
        episode_length += 1
        state.env_steps += 1
        control.after_add(state.env_steps)
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
                if noise.refill_mode == 'random':
                    env_step(algorithm.random_action(session.rng))
                else:
                    env_step(algorithm.act(time_step.observation[None]
                                           ).numpy(), control.policy_action())

    while state.env_steps < settings.initial_collect_steps:
        env_step(algorithm.random_action(session.rng))
    redraw_period = (algorithm.noise_layout.config.adjust_period
                     if algorithm.noise_layout is not None else 0)
    redraws = (resumed['redraws'] if resumed is not None else
               state.env_steps // redraw_period if redraw_period else 0)

    step = session.step
    progress = console.Progress(settings.num_iterations, step)
    flops_per_step = (algorithm.training_flops() if resumed is None else
                      resumed['flops_per_step'])
    timed = settings.time_loop
    snr_freq = summaries.log_snr()
    while step < settings.num_iterations:
        if redraw_period and state.env_steps // redraw_period > redraws:
            redraws = state.env_steps // redraw_period
            redraw_noise_features()
        started = time.perf_counter() if timed else 0.0
        for _ in range(settings.train_every - 1):
            env_step(algorithm.act(time_step.observation[None]).numpy(),
                     control.policy_action())
        control.before_sample(step)
        batch = replay.sample(settings.batch_size, session.rng)
        call_started = time.perf_counter() if timed else 0.0
        action, loss_info = algorithm.act_and_train(
            time_step.observation[None], batch)
        if timed:
            state.train_call_seconds += time.perf_counter() - call_started
        env_step(action.numpy(), control.policy_action())
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
                                if timed else {}), **control.eval_fields())
            flops_per_step = algorithm.training_flops()
        if (settings.policy_save_interval and
                step % settings.policy_save_interval == 0):
            session.save_policy(step)
        if (step % settings.checkpoint_interval == 0 or
                step == settings.num_iterations):
            session.checkpoint(dict(
                control.state(), episode_return=episode_return,
                episode_length=episode_length, redraws=redraws,
                flops_per_step=flops_per_step))
    return session.finish()
