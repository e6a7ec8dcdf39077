"""The on-policy loop (PPO).

    repeat for the algorithm's iterations:
        collect collect_sequence_length + 1 steps in every environment
            (the collect policy in numpy, weights read once per iteration)
        compute advantages once (the last step only bootstraps)
        num_epochs passes of shuffled minibatch train steps
        gradient SNR summaries on the last minibatch when due
        update observation and reward normalizers
        triggers: progress, summaries, evaluation, policy saves,
            checkpoints, each when due

Environment steps go through a `Collector` over all the environments, whose
sinks record the trajectories and the episode statistics. The environments
reset themselves on the step after a LAST one (TF-Agents' boundary step,
which PPO's trajectories keep). Intervals count iterations. Everything
around the loop (resume, results, checkpoints, evaluation) is the
`Session`'s.
"""

import time
from typing import Dict, Optional

import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from rigl.rl.tfagents.loops.collector import Collector
from rigl.rl.tfagents.loops.collector import EpisodeStats
from rigl.rl.tfagents.loops.session import Session
from rigl.rl.tfagents.loops.triggers import IntervalTrigger
from rigl.rl.tfagents.loops.triggers import Triggers
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import plasticity
from rigl.rl.tfagents.run import summaries


class TrajectorySink:
    """Collector sink: an iteration's steps as TF-Agents trajectories."""

    def __init__(self):
        self._steps = []

    def add(self, time_step: ts.TimeStep, action: np.ndarray,
            next_step: ts.TimeStep, policy_info=None, **extras) -> None:
        del extras
        self._steps.append(trajectory.Trajectory(
            step_type=time_step.step_type, observation=time_step.observation,
            action=action, policy_info=policy_info,
            next_step_type=next_step.step_type, reward=next_step.reward,
            discount=next_step.discount))

    def experience(self) -> trajectory.Trajectory:
        """The steps so far as tensors [environment, time, ...]; starts
        anew."""
        steps, self._steps = self._steps, []
        return tf.nest.map_structure(
            lambda *xs: tf.constant(np.stack(xs, axis=1)), *steps)


class OnPolicyLoop:
    """One on-policy run: collector, triggers and the loop.

    Args:
        session: the run's session.
    """

    def __init__(self, session: Session):
        self.session = session
        self.algorithm = session.algorithm
        self.settings = session.settings
        self.state = session.state
        self.trajectories = TrajectorySink()
        self.episodes = EpisodeStats(len(session.envs),
                                     on_end=session.episode_done)
        self.collector = Collector(session.envs, [self.trajectories,
                                                  self.episodes],
                                   reset_on_last=False)
        self.timed = self.settings.time_loop
        # The newest iteration's data (for summaries and evaluation).
        self.experience = self.loss_info = self.last_minibatch = None
        self.flops_per_iteration = 0.0
        self.progress: Optional[console.Progress] = None

    def run(self) -> Dict:
        """Trains the algorithm; returns the final metric."""
        settings, algorithm, state = self.settings, self.algorithm, self.state
        session = self.session
        resumed = self._start()
        self.flops_per_iteration = (
            algorithm.training_flops() if resumed is None
            else resumed['flops_per_iteration'])
        snr = IntervalTrigger(summaries.log_snr(), self._write_snr,
                              start=state.iteration)
        triggers = self._triggers()
        while state.iteration < settings.iterations:
            started = time.perf_counter() if self.timed else 0.0
            self.experience = self._collect()
            collected = time.perf_counter() if self.timed else 0.0
            transitions = algorithm.prepare(self.experience)  # advantages
            batches = self._shuffled_minibatches()
            self.loss_info = algorithm.train_minibatches(
                transitions, tf.constant(batches))
            self.last_minibatch = (transitions, batches[-1])
            snr(state.iteration + 1)  # before the normalizers move
            algorithm.update_normalizers(self.experience)
            if self.timed:  # evaluation and checkpoints excluded
                now = time.perf_counter()
                state.collect_seconds += collected - started
                state.train_call_seconds += now - collected
                state.loop_seconds += now - started
            state.iteration += 1
            state.train_flops += self.flops_per_iteration
            triggers(state.iteration)
        return session.finish()

    def _collect(self) -> trajectory.Trajectory:
        """collect_sequence_length + 1 steps in every environment with the
        collect policy (the last step only bootstraps)."""
        settings, session = self.settings, self.session
        policy = self.algorithm.collect_policy
        policy.refresh()  # this iteration's weights
        for _ in range(settings.collect_sequence_length + 1):
            actions, info = policy(self.collector.observation, session.rng)
            self.collector.step(actions, policy_info=info)
        # Every env step counts, bootstrap-only and boundary steps too.
        self.state.env_steps += ((settings.collect_sequence_length + 1) *
                                 len(session.envs))
        return self.trajectories.experience()

    def _start(self) -> Optional[Dict]:
        """Starts the session and the collector; returns the loop's resumed
        state (None: a fresh start, or a resume that cuts the episodes)."""
        self.session.start()
        resumed = self.session.resumed_loop_state
        if resumed is None:
            self.collector.reset()
        else:  # checkpoints fall between iterations: no partial rollout
            self.collector.resume()
            self.episodes.set_state(resumed['episode_returns'],
                                    resumed['episode_lengths'])
        return resumed

    def _shuffled_minibatches(self) -> np.ndarray:
        """num_epochs shuffles of the iteration's steps, each cut into
        minibatches (rows of indices), all trained in one call."""
        settings, rng = self.settings, self.session.rng
        return np.concatenate([
            rng.permutation(settings.batch_steps)[
                :settings.minibatches * settings.minibatch_size].reshape(
                    settings.minibatches, settings.minibatch_size)
            for _ in range(settings.num_epochs)])

    def _triggers(self) -> Triggers:
        """The periodic work after each iteration, in order."""
        settings, session, state = self.settings, self.session, self.state
        self.progress = console.Progress(
            settings.iterations * (settings.collect_sequence_length + 1) *
            len(session.envs), state.env_steps)
        start, last = state.iteration, settings.iterations
        return Triggers(
            IntervalTrigger(settings.log_interval, self._log_progress,
                            start=start),
            IntervalTrigger(settings.summary_interval, self._write_summaries,
                            start=start),
            IntervalTrigger(settings.eval_interval, self._evaluate,
                            last=last, start=start),
            IntervalTrigger(settings.policy_save_interval,
                            session.save_policy, start=start),
            IntervalTrigger(settings.checkpoint_interval, self._checkpoint,
                            last=last, start=start))

    # The periodic work.

    def _log_progress(self, iteration: int) -> None:
        console.log(self.progress.line(
            self.state.env_steps, list(self.session.recent_returns),
            extra=f'iter {iteration}/{self.settings.iterations} | '))

    def _write_summaries(self, iteration: int) -> None:
        del iteration
        self.session.write_train_summaries(self.loss_info,
                                           self.progress.steps_per_second)

    def _write_snr(self, iteration: int) -> None:
        """Gradient SNR on the iteration's last minibatch."""
        del iteration
        self.session.write_snr(self.algorithm.minibatch(*self.last_minibatch))

    def _evaluate(self, iteration: int) -> None:
        del iteration
        state = self.state
        observations = self.experience.observation.numpy()
        self.session.evaluate(
            plasticity_batch={'observation': observations.reshape(
                -1, *observations.shape[2:])[-plasticity.BATCH_SIZE:]},
            **({'loop_seconds': state.loop_seconds,
                'collect_seconds': state.collect_seconds,
                'train_seconds': state.train_call_seconds}
               if self.timed else {}))
        self.flops_per_iteration = self.algorithm.training_flops()

    def _checkpoint(self, iteration: int) -> None:
        del iteration
        self.session.checkpoint({
            'episode_returns': self.episodes.returns,
            'episode_lengths': self.episodes.lengths,
            'flops_per_iteration': self.flops_per_iteration})


def train_eval(session: Session) -> Dict:
    """Trains the session's on-policy algorithm; returns the final metric."""
    return OnPolicyLoop(session).run()
