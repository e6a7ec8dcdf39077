"""The learner and actor loops of a distributed (Reverb) off-policy run.

    learner: push the policy variables
             repeat num_iterations times:
                 sample a batch from the replay table (the rate limiter
                 holds the learner at samples_per_insert)
                 one train step
                 push the policy variables every push_period steps
                 summaries, progress, evaluation, checkpoint (the Reverb
                 server's, then the learner's) when due
             push once more: actors see the last train step and stop

    actor:   pull the policy variables (kernels, biases, masks, train step)
             repeat:
                 act (random until the learner trains, for the actor's share
                 of the initial collection), step, insert the transition
                 pull every pull_period env steps; stop when the learner is
                 done

Actors need no sparsity code: masks are policy variables and masked kernels
are exactly zero. The learner's periodic work is `IntervalTrigger`s, as in
the single-process loops; an actor steps its environment through a
`Collector` whose sinks are the n-step accumulator in front of its Reverb
writer and its episode statistics. Everything around the learner's loop
(resume, results, checkpoints, evaluation) is the single-process `Session`.
"""

import dataclasses
import glob
import json
import math
import os
import time
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
from tf_agents.experimental.distributed import reverb_variable_container

from rigl.rl import layout
from rigl.rl.tfagents import envs
from rigl.rl.tfagents.anf import config as anf_config
from rigl.rl.tfagents.loops.collector import Collector
from rigl.rl.tfagents.loops.collector import EpisodeStats
from rigl.rl.tfagents.loops.collector import ReplaySink
from rigl.rl.tfagents.loops.session import Session
from rigl.rl.tfagents.loops.triggers import IntervalTrigger
from rigl.rl.tfagents.loops.triggers import Triggers
from rigl.rl.tfagents.run import checkpoints
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import n_step
from rigl.rl.tfagents.run import reverb_replay
from rigl.rl.tfagents.run import seeding
from rigl.rl.tfagents.run import summaries


@dataclasses.dataclass(frozen=True)
class Options:
    """How the processes of a distributed run work together.

    Attributes:
        address: the Reverb server, HOST:PORT.
        num_actors: actors sharing the initial random collection.
        push_period: learner train steps between variable pushes.
        pull_period: actor env steps between variable pulls.
        connect_timeout: seconds to wait for the server to answer before
            giving up with an error.
    """
    address: str
    num_actors: int = 1
    push_period: int = 100
    pull_period: int = 100
    connect_timeout: float = 60.0


def check_supported(algorithm) -> None:
    """Refuses what a distributed run cannot do the way the single-process
    loop does it."""
    if algorithm.loop != 'off_policy':
        raise ValueError(f'distributed training is for the off-policy agents '
                         f'(sac, td3, dqn); {algorithm.name} is on-policy.')
    if algorithm.settings.env_name.startswith('ALE/'):
        raise ValueError('distributed runs store whole stacked observations '
                         'per transition; Atari (ALE/...) is not supported '
                         'yet: use dqn_train_eval.py, whose replay stores '
                         'each frame once.')
    for name in ('n_step_delay', 'replay_check_interval'):
        if getattr(algorithm.settings, name, 0):
            raise ValueError(
                f'train_eval.{name} needs the single-process replay (RLx2: '
                'n-step targets formed when sampling, a dynamic capacity); '
                'distributed runs store fixed n-step transitions in Reverb. '
                f'Set it to 0, or train with {algorithm.name}_train_eval.py.')
    layout = algorithm.noise_layout
    env_side = anf_config.env_config_in_force()
    if ((env_side is not None and env_side.adjust_period) or
            (layout is not None and layout.config.adjust_period)):
        raise ValueError('noise feature redraws (noise_features.adjust_period'
                         ' > 0) are not supported in distributed runs: each '
                         'actor would draw its own. Set it to 0.')


class Learner:
    """The learner of a distributed run: trains from the Reverb server.

    Args:
        session: the run's session.
        options: how the run's processes work together.
    """

    def __init__(self, session: Session, options: Options):
        self.session = session
        self.options = options
        self.algorithm = session.algorithm
        self.settings = session.settings
        check_supported(self.algorithm)
        # Before the run directory is touched: an unreachable server is an
        # error, not a run that waits forever.
        self.client = reverb_replay.connect(options.address,
                                            options.connect_timeout)
        self.container = None
        self.variables = reverb_replay.policy_variables(self.algorithm)
        # The newest train step's batch and losses (for summaries).
        self.batch = self.loss_info = None
        self.flops_per_step = 0.0
        self.progress: Optional[console.Progress] = None
        self._last_inserts, self._last_time = 0, 0.0

    def run(self) -> Dict:
        """Trains num_iterations steps; returns the final metric."""
        session, settings, options = self.session, self.settings, self.options
        state = session.state
        session.start()
        self.container = reverb_variable_container.ReverbVariableContainer(
            options.address, table_names=[reverb_replay.VARIABLES_TABLE])
        self.container.push(self.variables)
        iterator = iter(reverb_replay.batched_dataset(options.address,
                                                      settings.batch_size))
        step = session.step
        stats = reverb_replay.table_stats(self.client)
        console.log(f'learner: replay at {options.address} holds '
                    f'{stats.size:,} transitions; training waits for '
                    f'{settings.initial_collect_steps:,}.')
        triggers = self._triggers(step)
        self.flops_per_step = self.algorithm.training_flops()
        self._last_inserts, self._last_time = stats.inserts, time.time()
        while step < settings.num_iterations:
            self.batch = next(iterator)
            self.loss_info = self.algorithm.train(self.batch)
            step += 1
            state.train_flops += self.flops_per_step
            triggers(step)
        self.container.push(self.variables)  # actors see the end and stop
        self._write_stats(step)
        return session.finish()

    def _triggers(self, step: int) -> Triggers:
        """The periodic work after each train step, in order."""
        settings = self.settings
        self.progress = console.Progress(settings.num_iterations, step)
        last = settings.num_iterations
        return Triggers(
            IntervalTrigger(self.options.push_period, self._push,
                            start=step),
            IntervalTrigger(settings.summary_interval, self._write_summaries,
                            start=step),
            IntervalTrigger(summaries.log_snr(), self._write_snr,
                            start=step),
            IntervalTrigger(settings.log_interval, self._log_progress,
                            start=step),
            IntervalTrigger(settings.eval_interval, self._evaluate,
                            last=last, start=step),
            IntervalTrigger(settings.checkpoint_interval, self._checkpoint,
                            last=last, start=step))

    # The periodic work.

    def _push(self, step: int) -> None:
        """The policy's variables to the actors."""
        del step
        self.container.push(self.variables)

    def _write_summaries(self, step: int) -> None:
        del step
        self.session.write_train_summaries(self.loss_info,
                                           self.progress.steps_per_second)

    def _write_snr(self, step: int) -> None:
        del step
        self.session.write_snr(self.batch)

    def _sync_env_steps(self) -> reverb_replay.TableStats:
        """The run's env steps are the transitions the actors inserted."""
        current = reverb_replay.table_stats(self.client)
        self.session.state.env_steps = current.inserts
        return current

    def _log_progress(self, step: int) -> None:
        current = self._sync_env_steps()
        now = time.time()
        env_rate = (current.inserts - self._last_inserts) / max(
            now - self._last_time, 1e-9)
        self._last_inserts, self._last_time = current.inserts, now
        console.log(self.progress.line(
            step, actor_returns(self.session.root_dir),
            extra=f'env steps {current.inserts:,} ({env_rate:.1f}/s) | '))

    def _evaluate(self, step: int) -> None:
        del step
        self._sync_env_steps()
        self.session.evaluate()
        self.flops_per_step = self.algorithm.training_flops()

    def _checkpoint(self, step: int) -> None:
        del step
        self._sync_env_steps()
        # Reverb's tables first: a learner checkpoint then always has
        # replay data at least as new (Reverb keeps its newest).
        self.client.checkpoint()
        self.session.checkpoint()

    def _write_stats(self, step: int) -> None:
        final = reverb_replay.table_stats(self.client)
        checkpoints.write_atomically(
            os.path.join(self.session.root_dir,
                         layout.DISTRIBUTED_STATS_FILE),
            json.dumps(dict(
                train_steps=step, batch_size=self.settings.batch_size,
                samples=final.samples, inserts=final.inserts,
                samples_per_insert=final.samples_per_insert,
                actors=actor_stats(self.session.root_dir)), indent=2))


def learn(session: Session, options: Options) -> Dict:
    """Trains from the Reverb server; returns the final metric."""
    return Learner(session, options).run()


def actor_stats(root_dir: str) -> Dict[str, Dict]:
    """Every actor's last written counters, by actor directory name."""
    found = {}
    for path in sorted(glob.glob(os.path.join(
            root_dir, layout.ACTORS_DIR, '*', layout.ACTOR_STATS_FILE))):
        try:
            with open(path) as f:
                found[os.path.basename(os.path.dirname(path))] = json.load(f)
        except (OSError, ValueError):
            continue
    return found


def actor_returns(root_dir: str) -> List[float]:
    """The actors' latest episode returns (what the learner's progress
    line shows: it steps no environment itself)."""
    returns = []
    for stats in actor_stats(root_dir).values():
        returns.extend(stats.get('recent_returns', []))
    return returns[-10:]


def act(algorithm, settings, seed: int, index: int, attempt: int,
        options: Options, root_dir: str) -> int:
    """Collects for the learner until it has trained num_iterations steps;
    returns the env steps this actor took."""
    check_supported(algorithm)
    if not 0 <= index < options.num_actors:
        raise ValueError(f'--actor_index={index}: allowed 0..'
                         f'{options.num_actors - 1} (--num_actors='
                         f'{options.num_actors}).')
    client = reverb_replay.connect(options.address, options.connect_timeout)
    return Actor(algorithm, settings, seed, index, attempt, options,
                 root_dir, client).run()


class Actor:
    """One actor of a distributed run (see `act`)."""

    def __init__(self, algorithm, settings, seed: int, index: int,
                 attempt: int, options: Options, root_dir: str, client):
        self.algorithm, self.settings = algorithm, settings
        self.index, self.options = index, options
        stream = ('actor', index, attempt)
        # The training env's feature layout (ANF noise and permutation),
        # with this actor's own environment stream.
        reference = envs.create_environment(
            env_name=settings.env_name, seed=seeding.derive(seed, 'env', 0))
        self.env = envs.create_environment(
            env_name=settings.env_name,
            seed=seeding.derive(seed, 'env', *stream),
            feature_layout_from=reference)
        reference.close()
        algorithm.agent.sample_rng.reset_from_seed(
            seeding.derive(seed, 'action', *stream))
        self.rng = np.random.default_rng(seeding.derive(seed, 'loop',
                                                        *stream))
        self.container = reverb_variable_container.ReverbVariableContainer(
            options.address, table_names=[reverb_replay.VARIABLES_TABLE])
        self.variables = reverb_replay.policy_variables(algorithm)
        self.writer = reverb_replay.TransitionWriter(client)
        # n-step transitions are formed here, before they reach the table.
        transitions = n_step.NStepAccumulator(settings.n_step, settings.gamma,
                                              self.writer.add)
        self.collector = Collector([self.env], [
            ReplaySink(transitions, marks_first=False),
            EpisodeStats(1, on_end=self._episode_done)])
        self.directory = layout.actor_dir(root_dir, index)
        os.makedirs(self.directory, exist_ok=True)
        self.summary_writer = tf.summary.create_file_writer(self.directory)
        self.random_steps = math.ceil(settings.initial_collect_steps /
                                      options.num_actors)
        self.counters = {'env_steps': 0, 'episodes': 0, 'recent_returns': [],
                         'restarts': attempt, 'policy_train_step': 0}

    def run(self) -> int:
        """Collects until the learner is done; returns the env steps."""
        collector, counters = self.collector, self.counters
        done = self._pull()
        console.log(f'actor {self.index}: collecting for '
                    f'{self.options.address} (learner at train step '
                    f'{counters["policy_train_step"]}).')
        collector.reset()
        while not done:
            collector.step(self._action()[None])
            counters['env_steps'] = collector.steps
            while not self.writer.wait(timeout_ms=2000) and not done:
                done = self._pull()  # held back by the rate limiter: over?
            if collector.steps % self.options.pull_period == 0 and not done:
                done = self._pull()
                self._write_stats()
        self._write_stats()
        self.writer.close()
        self.env.close()
        console.log(f'actor {self.index}: the learner is done; '
                    f'{collector.steps:,} env steps.')
        return collector.steps

    def _action(self) -> np.ndarray:
        """Random until the learner trains (for this actor's share of the
        initial collection), then the policy's exploration action."""
        if (self.counters['policy_train_step'] == 0 and
                self.collector.steps < self.random_steps):
            return self.algorithm.random_action(self.rng)
        return self.algorithm.act(self.collector.observation).numpy()

    def _pull(self) -> bool:
        """Pulls the newest variables; True once the learner is done."""
        self.container.update(self.variables)
        self.counters['policy_train_step'] = int(
            self.algorithm.train_step.numpy())
        return (self.counters['policy_train_step'] >=
                self.settings.num_iterations)

    def _write_stats(self) -> None:
        self.counters['inserted'] = self.writer.inserted
        checkpoints.write_atomically(
            os.path.join(self.directory, layout.ACTOR_STATS_FILE),
            json.dumps(self.counters))

    def _episode_done(self, episode_return: float, length: int) -> None:
        counters = self.counters
        counters['episodes'] += 1
        counters['recent_returns'] = (counters['recent_returns'] +
                                      [float(episode_return)])[-10:]
        with self.summary_writer.as_default():
            summaries.write_episode(counters['policy_train_step'],
                                    episode_return, length)
        if self.settings.log_episodes:
            console.log(f'actor {self.index}: episode '
                        f'{counters["episodes"]} return '
                        f'{episode_return:.1f} length {length} (env steps '
                        f'{self.collector.steps:,})')
