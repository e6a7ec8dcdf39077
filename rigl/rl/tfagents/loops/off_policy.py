"""The off-policy loop (SAC, TD3, DQN).

    collect initial_collect_steps env steps with random actions
    repeat num_iterations times (one train step each):
        ANF: redraw the noise-feature permutation when due
        collect train_every - 1 env steps with exploration actions
        sample a batch of n-step transitions from replay
        act and train: one compiled call acts on the current observation
            (parameters before the step) and runs the train step
        step the environment with that action (the transition goes to
            replay, finished episodes to the session)
        triggers: summaries, SNR, progress, evaluation, policy saves,
            checkpoints, each when due

Environment steps go through a `Collector` whose sinks are the replay, the
env-step counter and the episode statistics. Periodic work is a list of
`IntervalTrigger`s. With RLx2's replay settings (`algos.rlx2`), n grows
from 1 to `train_eval.n_step` at `train_eval.n_step_delay`, and every
`train_eval.replay_check_interval` env steps the dynamic-capacity rule may
drop the replay's oldest transitions (`ReplayControl`). Everything around
the loop (resume, results, checkpoints, evaluation) is the `Session`'s.
"""

import time
from typing import Dict, Optional

from tf_agents.trajectories.time_step import StepType

from rigl.rl.tfagents.algos import rlx2
from rigl.rl.tfagents.loops.collector import Collector
from rigl.rl.tfagents.loops.collector import EpisodeStats
from rigl.rl.tfagents.loops.collector import ReplaySink
from rigl.rl.tfagents.loops.collector import StepCallback
from rigl.rl.tfagents.loops.session import Session
from rigl.rl.tfagents.loops.triggers import IntervalTrigger
from rigl.rl.tfagents.loops.triggers import Triggers
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

    def extras(self) -> Dict:
        """What the replay stores beside an exploration step's transition:
        the algorithm's noise-free action when the replay keeps them."""
        if self.rule is None:
            return {}
        algorithm = self._session.algorithm
        return {'policy_action': algorithm.latest_policy_action()}

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


class OffPolicyLoop:
    """One off-policy run: replay, collector, triggers and the loop.

    Args:
        session: the run's session.
    """

    def __init__(self, session: Session):
        self.session = session
        self.algorithm = session.algorithm
        self.settings = session.settings
        self.state = session.state
        self.control = ReplayControl(session)
        self.replay = self.control.replay
        self.episodes = EpisodeStats(1, on_end=session.episode_done)
        self.collector = Collector([session.env], [
            ReplaySink(self.replay), StepCallback(self._count_env_step),
            self.episodes])
        self.timed = self.settings.time_loop
        # Set when the loop starts (they depend on a resume).
        self.redraw: Optional[IntervalTrigger] = None
        self.progress: Optional[console.Progress] = None
        self.flops_per_step = 0.0
        # The newest train step's batch and losses (for summaries).
        self.batch = self.loss_info = None

    def run(self) -> Dict:
        """Trains the algorithm; returns the final metric."""
        settings, state = self.settings, self.state
        step = self._start()
        triggers = self._triggers(step)
        while step < settings.num_iterations:
            self.redraw(state.env_steps)  # ANF's feature permutation
            started = time.perf_counter() if self.timed else 0.0
            for _ in range(settings.train_every - 1):  # collect
                self._explore_step()
            self.control.before_sample(step)
            self.batch = self.replay.sample(settings.batch_size,
                                            self.session.rng)  # sample
            action = self._act_and_train()  # act on the observation, train
            self.collector.step(action[None], **self.control.extras())
            step += 1
            state.train_flops += self.flops_per_step
            if self.timed:  # the periodic work is not counted
                state.loop_seconds += time.perf_counter() - started
            triggers(step)  # summaries, evaluation, checkpoints ... if due
        return self.session.finish()

    def _start(self) -> int:
        """Starts the session, continues the episode in progress when the
        session restored the environment (else starts one), collects the
        initial random steps still to do; returns the train step."""
        replay, settings, resumed = self.replay, self.settings, None
        self.session.start(replay)
        console.log(f'replay: {replay.capacity:,} transitions, '
                    f'{replay.nbytes / 2 ** 20:,.1f} MiB')
        if self.session.resumed_loop_state is None:
            self.collector.reset()
        else:
            resumed = self.session.resumed_loop_state
            time_step = self.collector.resume()
            if time_step.step_type[0] != StepType.FIRST:
                replay.continue_episode()  # loading the replay ended it
            self.control.set_state(resumed)
            self.episodes.set_state(resumed['episode_return'],
                                    resumed['episode_length'])
        self.collector.collect(
            self._random_actions,
            settings.initial_collect_steps - self.state.env_steps)
        self.redraw = self._redraw_trigger(resumed)
        self.flops_per_step = (self.algorithm.training_flops()
                               if resumed is None
                               else resumed['flops_per_step'])
        return self.session.step

    def _triggers(self, step: int) -> Triggers:
        """The periodic work after each train step, in order."""
        settings, session = self.settings, self.session
        self.progress = console.Progress(settings.num_iterations, step)
        last = settings.num_iterations
        return Triggers(
            IntervalTrigger(settings.summary_interval, self._write_summaries,
                            start=step),
            IntervalTrigger(summaries.log_snr(), self._write_snr,
                            start=step),
            IntervalTrigger(settings.log_interval, self._log_progress,
                            start=step),
            IntervalTrigger(settings.eval_interval, self._evaluate,
                            last=last, start=step),
            IntervalTrigger(settings.policy_save_interval,
                            session.save_policy, start=step),
            IntervalTrigger(settings.checkpoint_interval, self._checkpoint,
                            last=last, start=step))

    def _redraw_trigger(self, resumed: Optional[Dict]) -> IntervalTrigger:
        """ANF: a new permutation of real and noise features every
        `adjust_period` env steps (never without network-side noise)."""
        layout = self.algorithm.noise_layout
        period = layout.config.adjust_period if layout is not None else 0
        trigger = IntervalTrigger(period, self._redraw_noise_features,
                                  start=self.state.env_steps)
        if resumed is not None:
            trigger.multiples = resumed['redraws']
        return trigger

    # Collecting.

    def _count_env_step(self) -> None:
        """After each transition is stored: count it, and run RLx2's
        replay check when due."""
        self.state.env_steps += 1
        self.control.after_add(self.state.env_steps)

    def _random_actions(self, observations):
        del observations
        return self.algorithm.random_action(self.session.rng)[None]

    def _explore_step(self) -> None:
        """One env step with an exploration action of the policy."""
        action = self.algorithm.act(self.collector.observation).numpy()
        self.collector.step(action[None], **self.control.extras())

    def _act_and_train(self):
        """An exploration action for the current observation, then one
        train step on the sampled batch, in one compiled call."""
        started = time.perf_counter() if self.timed else 0.0
        action, self.loss_info = self.algorithm.act_and_train(
            self.collector.observation, self.batch)
        if self.timed:
            self.state.train_call_seconds += time.perf_counter() - started
        return action.numpy()

    # The periodic work.

    def _write_summaries(self, step: int) -> None:
        del step
        self.session.write_train_summaries(self.loss_info,
                                           self.progress.steps_per_second)

    def _write_snr(self, step: int) -> None:
        del step
        self.session.write_snr(self.batch)

    def _log_progress(self, step: int) -> None:
        console.log(self.progress.line(step,
                                       list(self.session.recent_returns)))

    def _evaluate(self, step: int) -> None:
        del step
        state = self.state
        timings = ({'loop_seconds': state.loop_seconds,
                    'train_call_seconds': state.train_call_seconds}
                   if self.timed else {})
        self.session.evaluate(**timings, **self.control.eval_fields())
        self.flops_per_step = self.algorithm.training_flops()

    def _checkpoint(self, step: int) -> None:
        del step
        self.session.checkpoint(dict(
            self.control.state(),
            episode_return=float(self.episodes.returns[0]),
            episode_length=int(self.episodes.lengths[0]),
            redraws=self.redraw.multiples,
            flops_per_step=self.flops_per_step))

    def _redraw_noise_features(self, env_steps: int) -> None:
        """ANF: redraws the permutation of real and noise features for every
        network; optionally empties the replay and refills it."""
        noise = self.algorithm.noise_layout.config
        self.algorithm.noise_layout.redraw(self.session.rng)
        console.log(f'noise features permuted anew at env step '
                    f'{env_steps:,}')
        if noise.empty_buffer_on_change:
            self.replay.clear()
            for _ in range(noise.refill_timesteps):
                if noise.refill_mode == 'random':
                    self.collector.step(self._random_actions(None))
                else:
                    self._explore_step()


def train_eval(session: Session) -> Dict:
    """Trains the session's off-policy algorithm; returns the final metric."""
    return OffPolicyLoop(session).run()
