"""`Session`: one run's parts, built and wired for a training loop.

A session builds what a loop trains: the seed and seeded globals, the
training and evaluation environments, and the algorithm. Everything around
the loop is one object per job, which the session wires together:

  RunDirectory (run_directory.py)  start or resume: config guard, lock,
                                   restore or clean start, checkpoints
  Outputs (outputs.py)             results rows, TensorBoard summaries,
                                   console lines, saved policies, ANF plots
  Evaluator (evaluator.py)         greedy episodes and plasticity metrics

`train.train_eval` opens a session (a context manager: the run directory
stays locked until it closes) and hands it to the loop the algorithm
names. The loop calls `start()`, then collects and trains, and asks the
session to write summaries, evaluate, checkpoint and finish.
"""

import dataclasses
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec

from rigl.rl.tfagents import anf
from rigl.rl.tfagents import envs
from rigl.rl.tfagents.algos import base as algos_base
from rigl.rl.tfagents.loops import run_directory
from rigl.rl.tfagents.loops.evaluator import Evaluator
from rigl.rl.tfagents.loops.outputs import Outputs
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import env_state
from rigl.rl.tfagents.run import run_dir as run_dir_lib
from rigl.rl.tfagents.run import seeding
from rigl.rl.tfagents.run.replay import ReplayBuffer


class Session:
    """Environments, algorithm, run directory, outputs and evaluator of
    one run.

    Args:
        root_dir: where every output goes; an existing run there resumes.
        algorithm_class: an `algos` class.
        settings: its checked settings.
        allow_config_change: resume even if the config differs.
        num_envs: training environments (PPO's parallel environments).
    """

    def __init__(self, root_dir: str, algorithm_class, settings,
                 allow_config_change: bool = False, num_envs: int = 1):
        self.root_dir = root_dir
        self.directory = run_directory.RunDirectory(root_dir)
        self._allow_config_change = allow_config_change
        self.seed = self.directory.run_seed(settings.seed)
        seeding.seed_globals(self.seed)
        self.envs = [envs.create_environment(
            env_name=settings.env_name,
            seed=seeding.derive(self.seed, 'env', index))
            for index in range(num_envs)]
        self.env = self.envs[0]
        # Same feature layout as training (noise values stay independent).
        eval_env = envs.create_environment(
            env_name=settings.env_name,
            seed=seeding.derive(self.seed, 'eval_env'),
            feature_layout_from=self.env, evaluation=True)
        self.settings = dataclasses.replace(
            settings, sparse_execution=algos_base.resolve_sparse_execution(
                algorithm_class, settings, self.directory.saved_settings))
        self.algorithm = algorithm_class(
            self.settings, tensor_spec.from_spec(self.env.observation_spec()),
            tensor_spec.from_spec(self.env.action_spec()), self.seed)
        self.rng = np.random.default_rng(seeding.derive(self.seed, 'loop'))
        self.state = run_directory.RunState()
        self.record = run_dir_lib.config_record(algorithm_class.name,
                                                self.settings)
        self.metadata = run_dir_lib.metadata(self.record, self.seed,
                                             self.algorithm.sparse_method)
        self.outputs = Outputs(root_dir, self.algorithm, self.settings,
                               self.metadata, self.state,
                               lambda: self.noise_mask)
        self.directory.track(**self.algorithm.checkpoint_objects())
        self.evaluator = Evaluator(self.algorithm, eval_env, self.seed,
                                   self.settings.eval_episodes)
        self._replay: Optional[ReplayBuffer] = None
        # The loop's state from the checkpoint when the episodes in progress
        # continue after a resume (None: they start anew).
        self.resumed_loop_state: Optional[Dict] = None

    def __enter__(self) -> 'Session':
        return self

    def __exit__(self, *exc_info) -> None:
        self.directory.close()
        for env in self.envs + [self.eval_env]:
            env.close()

    @property
    def eval_env(self):
        return self.evaluator.env

    @property
    def step(self) -> int:
        """The algorithm's train step."""
        return int(self.algorithm.train_step.numpy())

    @property
    def noise_mask(self) -> Optional[np.ndarray]:
        """True on network inputs that are ANF noise features: drawn by the
        networks, or added by the environment (None without any)."""
        mask = self.algorithm.noise_mask
        return mask if mask is not None else anf.noise_feature_mask(self.env)

    @property
    def recent_returns(self):
        """The last training episodes' returns (for progress lines)."""
        return self.outputs.recent_returns

    @property
    def train_writer(self):
        return self.outputs.train_writer

    def start(self, replay: Optional[ReplayBuffer] = None) -> None:
        """Locks the run directory, then resumes or starts clean; writes
        the run's records and opens its summaries."""
        self._replay = replay
        opened = self.directory.open(
            self.record, self._allow_config_change, self.total_train_steps(),
            self.state, replay, self._restore_streams)
        if opened.path is None:
            note = (f' (removed outputs of an earlier attempt that saved no '
                    f'checkpoint: {", ".join(opened.removed)})'
                    if opened.removed else '')
            drawn = ('' if self.settings.seed is not None else
                     f' (drawn: train_eval.seed={self.seed} repeats it)')
            console.log(f'Starting a new {self.algorithm.name} run in '
                        f'{self.root_dir} with seed {self.seed}{drawn}{note}.')
        else:
            self._resume_episodes(opened.resume)
            self.outputs.resume(self.step)
            at = (f'iteration {self.state.iteration} (train step '
                  f'{self.step})' if self.algorithm.loop == 'on_policy'
                  else f'train step {self.step}')
            console.log(f'Resumed from {opened.path} at {at}.')
        self.outputs.open(self.record, self.algorithm_warnings())

    def _restore_streams(self, streams: Dict) -> None:
        """Random streams from a checkpoint's state.json."""
        self.rng.bit_generator.state = streams['loop']
        for env, state in zip(self.envs, streams['envs']):
            env.set_rng_state(state)
        self.evaluator.set_streams(streams)

    def _resume_episodes(self, record: Optional[Dict]) -> None:
        """Puts the checkpoint's environment states back, so the loop
        continues the episodes in progress (`resumed_loop_state`); without
        them the loop starts new episodes, as one line says."""
        if record is not None and record.get('plasticity') is not None:
            self.evaluator.set_state(env_state.decode(record['plasticity']))
        self.resumed_loop_state, reason = run_directory.restore_episodes(
            record, self.envs)
        if reason is not None:
            console.log(f'Resume: {reason}; the episode in progress is cut '
                        'and training continues with a new episode.')

    def algorithm_warnings(self) -> List[str]:
        """Sparsity schedules that cannot happen within this run."""
        total = self.total_train_steps()
        lines = []
        for name, optimizer in self.algorithm.masked_optimizers.items():
            updater = optimizer.updater
            if updater.updates_masks and updater.begin_step >= total:
                lines.append(
                    f'mask_updater.begin_step={updater.begin_step} is not '
                    f'before the last of the {total} train steps: '
                    f'{name or "the"} masks will never be updated.')
            for layer in optimizer.layers:
                schedule = getattr(layer, 'pruning_schedule', None)
                end = getattr(schedule, 'end_step', None)
                polynomial = getattr(schedule, 'power', None) is not None
                if polynomial and end > total:
                    reached = float(schedule(tf.constant(
                        max(total - 1, 0), tf.int64))[1])
                    lines.append(
                        f'wrap_all_layers.end_step={end} is past the run\'s '
                        f'{total} train steps: pruning stops at sparsity '
                        f'{reached:.3f} instead of '
                        f'{schedule.final_sparsity:.3f}.')
                    break
        return lines

    def total_train_steps(self) -> int:
        """Train steps of the whole run (PPO: minibatch steps)."""
        settings = self.settings
        if self.algorithm.loop == 'on_policy':
            return (settings.iterations * settings.num_epochs *
                    settings.minibatches)
        return settings.num_iterations

    def checkpoint(self, loop_state: Optional[Dict] = None) -> None:
        """Writes a checkpoint; `loop_state` is what the loop keeps across
        steps (episode returns and lengths, ...), handed back as
        `resumed_loop_state` after a resume that restores the
        environments."""
        self.state.wall_time = self.outputs.elapsed()
        self.state.recent_returns = list(self.outputs.recent_returns)
        streams = {'loop': self.rng.bit_generator.state,
                   'envs': [env.rng_state() for env in self.envs],
                   **self.evaluator.streams()}
        self.directory.save(
            self.step, self.state, streams, dict(self.record, seed=self.seed),
            self._replay, self.directory.resume_record(
                loop_state, self.envs, self.evaluator.state(),
                self.settings.env_name))

    def episode_done(self, episode_return: float, length: int) -> None:
        """A training episode ended (the collectors' `EpisodeStats` call
        this)."""
        self.outputs.episode_done(episode_return, length)

    def write_train_summaries(self, loss_info,
                              steps_per_second: float) -> None:
        self.outputs.write_train_summaries(loss_info, steps_per_second)

    def write_snr(self, batch) -> None:
        """Gradient signal-to-noise summaries on a training batch."""
        self.outputs.write_snr(self.algorithm.snr_summaries(batch))

    def evaluate(self, plasticity_batch: Optional[Dict] = None,
                 **extra) -> None:
        """Greedy evaluation, plasticity metrics (on `plasticity_batch`, or
        a replay sample), a results row (with `extra` fields) and eval
        summaries."""
        metrics = self.evaluator.play()
        measured = self.evaluator.measure_plasticity(plasticity_batch,
                                                     self._replay)
        self.outputs.record_evaluation(metrics, measured, **extra)

    def save_policy(self, step: int = 0) -> None:
        """Saves the greedy policy (`Outputs.save_policy`)."""
        self.outputs.save_policy(step)

    def finish(self) -> Dict:
        """Saves the final policy; writes and returns the final metric."""
        return self.outputs.finish()
