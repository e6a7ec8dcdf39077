"""Everything a training loop needs around its collect/train steps.

`Session` owns the run directory (lock, config guard, clean fresh start),
seeding, environments, the algorithm, checkpoints (TF objects, replay, run
state and every random stream that can be saved), results, TensorBoard
writers, evaluation and progress lines. `train.train_eval` opens one (a
context manager: the run directory stays locked until it closes); the loop
calls `start()`, then only collects, trains and asks the session to
evaluate, checkpoint and finish.

Outputs in `root_dir`:
  run.json               what the run is (algorithm, env, seed, method ...)
  operative_config.gin   the gin config in force
  results.jsonl          one row per evaluation (with the run's metadata)
  final_metric.json      mean eval return over the last fraction of evals
  train/, eval/          TensorBoard summaries
  checkpoints/           ckpt-<step>/ directories, each complete (with
                         every training environment's state and the
                         episode in progress, so a resume continues it)
  policy/                the saved greedy policy at the end
  connectivity.csv/.png, input_layer.png   with ANF noise features
"""

import collections
import dataclasses
import json
import os
import time
from typing import Callable, Dict, List, Optional

import gin
import numpy as np
import tensorflow as tf
from tf_agents.policies import policy_saver
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from rigl.rl import layout
from rigl.rl.tfagents import envs
from rigl.rl.tfagents.algos import base as algos_base
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.run import checkpoints
from rigl.rl.tfagents.run import connectivity
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import env_state
from rigl.rl.tfagents.run import plasticity
from rigl.rl.tfagents.run import run_dir as run_dir_lib
from rigl.rl.tfagents.run import seeding
from rigl.rl.tfagents.run import summaries
from rigl.rl.tfagents.run.replay import ReplayBuffer
from rigl.rl.tfagents.run.results import Results


@dataclasses.dataclass
class RunState:
    """Counters a run carries across checkpoints."""
    iteration: int = 0
    env_steps: int = 0
    episodes: int = 0
    wall_time: float = 0.0
    train_flops: float = 0.0
    recent_returns: List[float] = dataclasses.field(default_factory=list)
    loop_seconds: float = 0.0
    train_call_seconds: float = 0.0
    collect_seconds: float = 0.0


class Session:
    """Run directory, environments, algorithm and outputs of one run.

    Args:
        root_dir: where every output goes; an existing run there resumes.
        algorithm_class: an `algos` class.
        settings: its checked settings.
        allow_config_change: resume even if the config differs.
        num_envs: training environments (PPO's parallel environments).
    """

    def __init__(self, root_dir: str, algorithm_class, settings,
                 allow_config_change: bool = False, num_envs: int = 1):
        self.run_dir = run_dir_lib.RunDir(root_dir)
        self.root_dir = root_dir
        self.settings = settings
        self._allow_config_change = allow_config_change
        probe = checkpoints.Checkpointer(root_dir)
        self._saved_config = next(filter(None, map(
            probe.read_config, probe.candidates())), None)
        self.seed = self._run_seed(settings.seed)
        seeding.seed_globals(self.seed)
        self.envs = [envs.create_environment(
            env_name=settings.env_name,
            seed=seeding.derive(self.seed, 'env', index))
            for index in range(num_envs)]
        self.env = self.envs[0]
        # Same feature layout as training (noise values stay independent).
        self.eval_env = envs.create_environment(
            env_name=settings.env_name,
            seed=seeding.derive(self.seed, 'eval_env'),
            feature_layout_from=self.env, evaluation=True)
        settings = dataclasses.replace(
            settings, sparse_execution=algos_base.resolve_sparse_execution(
                algorithm_class, settings, (self._saved_config or {}).get(
                    'settings')))
        self.settings = settings
        self.algorithm = algorithm_class(
            settings, tensor_spec.from_spec(self.env.observation_spec()),
            tensor_spec.from_spec(self.env.action_spec()), self.seed)
        self.rng = np.random.default_rng(seeding.derive(self.seed, 'loop'))
        self._plasticity = plasticity.PlasticityMeter(
            self.algorithm, seeding.derive(self.seed, 'plasticity'))
        self._plasticity_rng = np.random.default_rng(
            seeding.derive(self.seed, 'plasticity_batch'))
        self.state = RunState()
        self.recent_returns = collections.deque(maxlen=10)
        self.record = run_dir_lib.config_record(algorithm_class.name, settings)
        self.metadata = run_dir_lib.metadata(self.record, self.seed,
                                             self.algorithm.sparse_method)
        self.results = Results(root_dir, self.metadata)
        self._checkpointer = checkpoints.Checkpointer(
            root_dir, **self.algorithm.checkpoint_objects())
        self._greedy_action = single_action_fn(self.algorithm.eval_policy)
        self._replay: Optional[ReplayBuffer] = None
        # The loop's state from the checkpoint when the episodes in progress
        # continue after a resume (None: they start anew).
        self.resumed_loop_state: Optional[Dict] = None
        self._resume_record: Optional[Dict] = None
        self._env_state_warned = False
        self.train_writer = self.eval_writer = None
        self._run_start = time.time()

    def _run_seed(self, seed: Optional[int]) -> int:
        if seed is None and self._saved_config is not None:
            return int(self._saved_config.get('seed', seeding.resolve(None)))
        return seeding.resolve(seed)

    @property
    def noise_mask(self) -> Optional[np.ndarray]:
        """True on network inputs that are ANF noise features: drawn by the
        networks, or added by the environment (None without any)."""
        mask = self.algorithm.noise_mask
        return mask if mask is not None else envs.noise_feature_mask(self.env)

    def __enter__(self) -> 'Session':
        return self

    def __exit__(self, *exc_info) -> None:
        self.run_dir.unlock()
        for env in self.envs + [self.eval_env]:
            env.close()

    @property
    def step(self) -> int:
        return int(self.algorithm.train_step.numpy())

    def start(self, replay: Optional[ReplayBuffer] = None) -> None:
        """Locks the run directory, then resumes or starts clean."""
        self._replay = replay
        self.run_dir.check_resume(self._saved_config, self.record,
                                  self._allow_config_change)
        self.run_dir.lock()
        newest = self._checkpointer.candidates()[:1]
        if newest and self._checkpointer.step_of(newest[0]) > (
                self.total_train_steps()):
            raise ValueError(
                f'{newest[0]} is past the end of this run (train_eval.'
                'num_iterations is lower than when it was saved); keep '
                'num_iterations or use another root_dir.')
        restored = self._checkpointer.restore(replay, self._restore_streams)
        if restored is None:
            removed = self.run_dir.prepare_fresh_start()
            note = (f' (removed outputs of an earlier attempt that saved no '
                    f'checkpoint: {", ".join(removed)})' if removed else '')
            drawn = ('' if self.settings.seed is not None else
                     f' (drawn: train_eval.seed={self.seed} repeats it)')
            console.log(f'Starting a new {self.algorithm.name} run in '
                        f'{self.root_dir} with seed {self.seed}{drawn}{note}.')
        else:
            path, _ = restored
            self._resume_episodes()
            self.results.truncate_after(self.step)
            for name in layout.SUMMARY_DIRS:  # summaries past the checkpoint
                summaries.mark_restart(os.path.join(self.root_dir, name),
                                       self.step + 1)
            console.log(f'Resumed from {path} at '
                        + (f'iteration {self.state.iteration} (train step '
                           f'{self.step})' if self.algorithm.loop == 'on_policy'
                           else f'train step {self.step}') + '.')
        self.recent_returns.extend(self.state.recent_returns)
        checkpoints.write_atomically(
            os.path.join(self.root_dir, layout.RUN_FILE),
            json.dumps(dict(self.metadata, config=self.record), indent=2))
        checkpoints.write_atomically(
            os.path.join(self.root_dir, layout.OPERATIVE_CONFIG_FILE),
            gin.operative_config_str())
        for line in self.algorithm_warnings():
            console.log(f'warning: {line}')
        console.log(sparsity_table(self.algorithm.networks))
        console.log(self.algorithm.sparse_method.describe())
        self.train_writer = tf.summary.create_file_writer(
            os.path.join(self.root_dir, layout.TRAIN_SUMMARIES_DIR))
        self.eval_writer = tf.summary.create_file_writer(
            os.path.join(self.root_dir, layout.EVAL_SUMMARIES_DIR))
        with self.train_writer.as_default():
            summaries.write_sparsity_summaries(
                self.algorithm.networks, self.step, self.noise_mask)
        self._run_start = time.time() - self.state.wall_time
        self._episode_started = time.time()

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
                if getattr(schedule, 'power', None) is not None and end > total:
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
        settings = self.settings
        if self.algorithm.loop == 'on_policy':
            return (settings.iterations * settings.num_epochs *
                    settings.minibatches)
        return settings.num_iterations

    def _restore_streams(self, saved: Dict) -> None:
        """Run state and random streams from a checkpoint's state.json."""
        streams = saved.pop('streams')
        self._resume_record = saved.pop('resume', None)
        self.state = RunState(**saved)
        self.rng.bit_generator.state = streams['loop']
        for env, state in zip(self.envs, streams['envs']):
            env.set_rng_state(state)
        self.eval_env.set_rng_state(streams['eval_env'])
        if 'plasticity' in streams:
            self._plasticity_rng.bit_generator.state = streams['plasticity']

    def _resume_episodes(self) -> None:
        """Puts the checkpoint's environment states back, so the loop
        continues the episodes in progress (`resumed_loop_state`); without
        them (an older checkpoint, an environment whose state cannot be
        saved) the loop starts new episodes, as one line says."""
        record, self._resume_record = self._resume_record, None
        if record is not None and record.get('plasticity') is not None:
            self._plasticity.set_state(env_state.decode(record['plasticity']))
        reason = None
        if record is None:
            reason = 'the checkpoint holds no environment state'
        elif record.get('envs') is None:
            reason = record.get('why_no_envs', 'no environment state saved')
        elif len(record['envs']) != len(self.envs):
            reason = (f'it saved {len(record["envs"])} environments, this '
                      f'run has {len(self.envs)}')
        else:
            try:
                for env, saved in zip(self.envs, record['envs']):
                    env_state.restore(env, saved)
                self.resumed_loop_state = env_state.decode(record['loop'])
            except (env_state.UnsupportedEnvironment, KeyError, TypeError,
                    ValueError) as error:
                reason = f'cannot restore the environment state ({error})'
        if reason is not None:
            console.log(f'Resume: {reason}; the episode in progress is cut '
                        'and training continues with a new episode.')

    def _resume_record_now(self, loop_state: Optional[Dict]) -> Dict:
        """The checkpoint's `resume.json`: environment states, the loop's
        episode in progress and the plasticity meter's memory."""
        record = {'loop': env_state.encode(loop_state),
                  'plasticity': env_state.encode(self._plasticity.state())}
        if loop_state is None:
            record.update(envs=None, why_no_envs='this loop does not save '
                          'its episode in progress')
            return record
        try:
            record['envs'] = [env_state.capture(env) for env in self.envs]
        except env_state.UnsupportedEnvironment as error:
            record.update(envs=None, why_no_envs=(
                f'the environment state could not be saved ({error})'))
            if not self._env_state_warned:
                console.log(f'warning: cannot save the state of '
                            f'{self.settings.env_name} ({error}): a resume '
                            'will cut the episode in progress.')
                self._env_state_warned = True
        return record

    def checkpoint(self, loop_state: Optional[Dict] = None) -> None:
        """Writes a checkpoint; `loop_state` is what the loop keeps across
        steps (episode returns and lengths, ...), handed back as
        `resumed_loop_state` after a resume that restores the
        environments."""
        self.state.wall_time = time.time() - self._run_start
        self.state.recent_returns = list(self.recent_returns)
        streams = {'loop': self.rng.bit_generator.state,
                   'envs': [env.rng_state() for env in self.envs],
                   'plasticity': self._plasticity_rng.bit_generator.state,
                   'eval_env': self.eval_env.rng_state()}
        config = dict(self.record, seed=self.seed)
        self._checkpointer.save(
            self.step, dict(dataclasses.asdict(self.state), streams=streams),
            config, self._replay, self._resume_record_now(loop_state))
        self.run_dir.checkpoint_written()

    def episode_done(self, episode_return: float, length: int) -> None:
        self.recent_returns.append(float(episode_return))
        self.state.episodes += 1
        with self.train_writer.as_default():
            summaries.write_episode(self.step, episode_return, length)
        if self.settings.log_episodes:
            now = time.time()
            console.log(
                f'Total Steps: {self.state.env_steps}  Train Steps: '
                f'{self.step}  Episode Num: '
                f'{self.state.episodes - 1}  Epi. Steps: {length}  Reward: '
                f'{episode_return:.2f}  Epi. Time: '
                f'{console.format_seconds(now - self._episode_started)}  '
                f'Total Train Time: '
                f'{console.format_seconds(now - self._run_start)}')
            self._episode_started = now

    def write_train_summaries(self, loss_info, steps_per_second: float) -> None:
        with self.train_writer.as_default(step=self.step):
            summaries.write_losses(loss_info)
            self.algorithm.write_summaries()
            tf.summary.scalar('cumulative_train_flops', self.state.train_flops)
            if steps_per_second:
                tf.summary.scalar('steps_per_second', steps_per_second)

    def write_snr(self, batch) -> None:
        """Gradient signal-to-noise summaries on a training batch."""
        values = self.algorithm.snr_summaries(batch)
        with self.train_writer.as_default(step=self.step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def evaluate(self, plasticity_batch: Optional[Dict] = None,
                 **extra) -> None:
        """Greedy evaluation, plasticity metrics (on `plasticity_batch`, or
        a replay sample), a results row and eval summaries."""
        metrics = summaries.evaluate(self.eval_env, self._greedy_action,
                                     self.settings.eval_episodes)
        if plasticity_batch is None:
            plasticity_batch = plasticity.sample_batch(self._replay,
                                                       self._plasticity_rng)
        measured = self._plasticity.measure(plasticity_batch)
        if measured:
            extra['plasticity'] = measured
            with self.eval_writer.as_default(step=self.step):
                for network, values in measured.items():
                    for name, value in values.items():
                        tf.summary.scalar(f'plasticity/{network}/{name}',
                                          value)
        self.state.wall_time = time.time() - self._run_start
        if self.settings.log_episodes:
            rule = '-' * 39
            console.log(f'{rule}\nEvaluation over {self.settings.eval_episodes}'
                        f' episode(s): {metrics["return_mean"]:.3f}\n{rule}')
        summaries.record_evaluation(
            self.eval_writer, self.results, self.step, self.state.env_steps,
            metrics, self.algorithm.networks, self.noise_mask,
            self.state.train_flops, self.state.wall_time, **extra)
        if self.noise_mask is not None:
            connectivity.write_csv(self.root_dir, self.results.rows())

    def save_policy(self, step: int = 0) -> None:
        """Saves the eval policy: the final one (step 0) or one along the
        way, where `layout.saved_policy_dir` says."""
        # Sparse-execution layers save as standard TF ops (dense products),
        # so the policy loads anywhere, without the compiled kernels.
        with sparse_layers.dense_forward(self.algorithm.networks.values()):
            policy_saver.PolicySaver(self.algorithm.eval_policy,
                                     batch_size=None).save(
                layout.saved_policy_dir(self.root_dir, step))

    def finish(self) -> Dict:
        """Saves the final policy and writes and prints the final metric
        (and, with noise features, the connectivity plots)."""
        self.save_policy()
        if self.noise_mask is not None:
            self._plot_connectivity()
        metric = self.results.final_metric(self.settings.average_last_fraction)
        if metric:
            console.log(f'final metric (mean eval return over the last '
                        f'{metric["num_evals_averaged"]} evals): '
                        f'{metric["final_return"]:.1f}')
        return metric


    def _plot_connectivity(self) -> None:
        rows = self.results.rows()
        connectivity.write_csv(self.root_dir, rows)
        connectivity.plot_over_time(self.root_dir, rows)
        layers = sparse_layers.kernel_layers(self.algorithm.networks['actor']) \
            if 'actor' in self.algorithm.networks else []
        if layers and isinstance(layers[0], sparse_layers.MaskedLayer):
            connectivity.plot_input_layer(self.root_dir,
                                          layers[0].mask.numpy(),
                                          self.noise_mask)


def sparsity_table(named_networks: Dict) -> str:
    """Per-layer sparsity of each network, as a small console table."""
    rows = {name: sparse_layers.network_stats(network).layers
            for name, network in named_networks.items()}
    width = max(len(layers) for layers in rows.values())
    header = ''.join(f'{f"layer {i + 1}":>9}' for i in range(width))
    lines = [f'{"sparsity":12}{header}{"total":>9}']
    for name, layers in rows.items():
        total = 1.0 - sum(layer.active_weights for layer in layers) / sum(
            int(np.prod(layer.shape)) for layer in layers)
        cells = [f'{layer.sparsity:9.1%}' for layer in layers]
        cells += [' ' * 9] * (width - len(layers))
        lines.append(f'{name:12}' + ''.join(cells) + f'{total:9.1%}')
    return '\n'.join(lines)


def single_action_fn(policy) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled observation -> action function for evaluation."""
    action = tf.function(lambda observation: policy.action(
        ts.restart(observation, batch_size=1)).action[0], autograph=False)
    return lambda observation: action(observation[None]).numpy()
