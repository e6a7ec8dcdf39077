"""What an algorithm module provides to the loops.

An algorithm owns its settings (a dataclass of `train_eval` gin bindings),
builds its networks, masks and TF-Agents agent, and exposes only public names
to the loops: named networks, masked optimizers, the eval policy, compiled
act/train functions, a training-FLOP count and extra summaries.

`Algorithm` is that interface (with the network building every algorithm
shares: widths, masks, sparse-execution twins); `OffPolicyAlgorithm` adds the
compiled act-and-train call of the off-policy loop and `transition_batch`,
which turns a replay sample into what TF-Agents' agents train on. The rest of
the algorithm's machinery has its own module: `optimizers` (fused Adam and
weight decay), `checks` (settings checks) and `actor_critic` (SAC and TD3's
actor and two critics).
"""

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
from tf_agents.policies import greedy_policy
from tf_agents.trajectories import policy_step
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from rigl.rl.tfagents import anf
from rigl.rl.tfagents import sparse_agents
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import train_hooks
from rigl.rl.tfagents.algos import optimizers
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.sparsity import csr
from rigl.rl.tfagents.sparsity import masked_optimizer
from rigl.rl.tfagents.sparsity import spec as sparsity_spec
from rigl.rl.tfagents.sparsity import updaters
from rigl.rl.tfagents.sparsity import width as width_lib
from rigl.rl.tfagents.run.replay import ReplayBuffer
from rigl.rl.tfagents.run import summaries
from rigl.rl.tfagents.run.settings import RunSettings, setting

OFF_POLICY, ON_POLICY = 'off_policy', 'on_policy'


class Algorithm:
    """Base of every algorithm; subclasses set the class attributes and
    build `agent`, `networks` and `masked_optimizers` in `__init__`."""

    name: str = ''
    loop: str = ''
    Settings = RunSettings
    # The coupled L2 penalty of the algorithm's original code, as
    # (variables, gradient factor): see `optimizers.make_optimizer`.
    original_decay: Tuple[str, float] = optimizers.ANF_DECAY

    def __init__(self, settings, observation_spec, action_spec, seed: int):
        if settings.sparse_execution == 'auto' or (
                settings.sparse_execution not in SPARSE_EXECUTIONS):
            settings = dataclasses.replace(
                settings, sparse_execution=resolve_sparse_execution(
                    type(self), settings))
        self.settings = settings
        self.observation_spec = observation_spec
        self.action_spec = action_spec
        self.seed = seed
        self.train_step = tf.Variable(0, dtype=tf.int64, name='train_step')
        self.agent = None
        self.networks: Dict[str, tf.Module] = {}
        self.masked_optimizers: Dict[
            str, masked_optimizer.MaskedOptimizer] = {}
        self.noise_layout: Optional[anf.NoiseLayout] = None
        # The sparse method: read once from the config, then passed down.
        self.sparse_method = sparsity_spec.from_gin(settings)
        # Training-step hooks (e.g. ReDo): configured now, bound to the
        # networks once they exist (`OffPolicyAlgorithm._compile`).
        self._hook_configs = train_hooks.configure(type(self))
        self.train_hooks: Dict[str, train_hooks.TrainStepHook] = {}

    def train_mode(self, configured: str) -> str:
        """A network group's train mode: dense for a parameter-matched
        dense run, else as configured."""
        return ('dense' if self.sparse_method.method ==
                sparsity_spec.MATCHED_DENSE else configured)

    def widths(self, sizes: Dict[str, list],
               configured: Dict[str, float]) -> Dict[str, float]:
        """Each network group's width multiplier: as configured, or, for a
        parameter-matched dense run, the dense width whose parameter count
        matches the sparse group's active count (printed).

        With `keep_active_count`, the sparse groups' sparsities at their
        widths go into `sparse_method` here, before any network is built.

        Args:
            sizes: per group, [input, hidden..., output] at width 1.
            configured: per group, the configured width.
        """
        if self.sparse_method.keep_active_count:
            self._keep_active_counts(sizes, configured)
        target = self.sparse_method.matched_to
        if target is None:
            return dict(configured)
        widths = dict(configured)
        for group, group_sizes in sizes.items():
            if group not in target.sparse_networks:
                continue
            widths[group], dense, active = width_lib.matched_dense_width(
                group_sizes, target, group, configured[group])
            hidden = [sparse_layers.num_units(size, widths[group])
                      for size in group_sizes[1:-1]]
            console.log(f'parameter-matched dense {group}: width '
                        f'{widths[group]:.4f} (hidden {tuple(hidden)}), '
                        f'{dense:,.0f} parameters for {active:,.0f} active '
                        f'at sparsity {target.sparsity_of(group):g}')
        return widths

    def _keep_active_counts(self, sizes: Dict[str, list],
                            configured: Dict[str, float]) -> None:
        """Wide sparse networks at a fixed budget: each sparse group's
        sparsity at its width keeps its width-1 active count (printed)."""
        method = self.sparse_method
        overrides = dict(method.overrides)
        for group, group_sizes in sizes.items():
            if group not in method.sparse_networks:
                continue
            overrides[group], budget = width_lib.sparsity_keeping_active_count(
                group_sizes, method, group, configured[group])
            console.log(f'wide sparse {group}: width {configured[group]:g} '
                        f'at sparsity {overrides[group]:.4f} keeps the '
                        f'{budget:,.0f} active parameters of width 1 at '
                        f'sparsity {method.sparsity_of(group):g}')
        self.sparse_method = dataclasses.replace(
            method, overrides=tuple(sorted(overrides.items())))

    def optimizer(self, learning_rate, network_list, epsilon: float = 1e-7):
        """Adam for `network_list` with the settings' weight decay."""
        return optimizers.make_optimizer(
            learning_rate, self.settings.weight_decay, epsilon,
            self.settings.weight_decay_mode, network_list,
            self.original_decay)

    def build_network(self, build: Callable[[Dict], tf.Module], input_spec,
                      group: str, mask_seed: int) -> tf.Module:
        """A network of `group` ('actor', 'critic', 'q_network', ...) with
        its initial masks, in the run's sparse execution.

        Args:
            build: makes the (unbuilt) network given extra
                `wrap_all_layers` arguments.
            input_spec: its input spec.
            group: its sparse-method group (for its sparsity).
            mask_seed: the seed of its masks.
        """
        network = build({})
        network.create_variables(input_spec)
        sparse_layers.init_masks(network, seed=mask_seed,
                                 **self.sparse_method.mask_kwargs(group))
        if (self.settings.sparse_execution == 'sparse' and
                sparse_layers.masked_layers(network)):
            csr.check_available()
            masked = network
            network = sparse_layers.compress_network(
                network, lambda masks: build(dict(execution='sparse',
                                                  masks=masks)), input_spec)
            _keep_initializers(masked, network)
            layers = sparse_layers.masked_layers(network)
            counts = [f'{layer.active_count:,}' for layer in layers
                      if isinstance(layer, sparse_layers.CompressedDense)]
            masked = len(layers) - len(counts)
            console.log(
                f'sparse execution, {group}: {len(counts)} of {len(layers)} '
                f'sparse layers hold only their active weights '
                f'({", ".join(counts) or "none"})'
                + (f'; {masked} denser stay masked' if masked else ''))
        return network

    @property
    def noise_mask(self) -> Optional[np.ndarray]:
        """True on the network inputs that are ANF's network-side noise
        features (None without them)."""
        return None if self.noise_layout is None else (
            self.noise_layout.noise_mask)

    @property
    def eval_policy(self):
        """The greedy policy evaluated and saved."""
        return greedy_policy.GreedyPolicy(self.agent.policy)

    def checkpoint_objects(self) -> Dict[str, tf.Module]:
        objects = {'agent': self.agent, 'train_step': self.train_step}
        if self.noise_layout is not None:
            objects['noise_layout'] = self.noise_layout
        for name, hook in self.train_hooks.items():
            objects[f'train_hook_{name}'] = hook
        return objects

    def training_flops(self) -> float:
        """Theoretical FLOPs of one train step (off-policy) or iteration
        (on-policy) at the networks' current sparsity."""
        raise NotImplementedError

    def plasticity_inputs(self, batch) -> Dict[str, object]:
        """Each network's input on a batch, for the plasticity metrics
        (`run.plasticity`): the observations; critics also the actions."""
        return {name: (batch['observation'], batch['action'])
                if name.startswith('critic') else batch['observation']
                for name in self.networks}

    def network_losses(self, batch) -> list:
        """[(network names, loss function)]: the training losses whose
        gradient norms the plasticity metrics record ([] where none)."""
        del batch
        return []

    def per_example_loss(self, batch) -> Optional[tf.Tensor]:
        """The training loss of each example of a batch, for gradient SNR
        summaries (`log_snr.freq`); None where the algorithm has none."""
        return None

    def snr_summaries(self, batch) -> Dict[str, tf.Tensor]:
        """Gradient signal-to-noise of the trainable variables on `batch`
        ({} for an algorithm without `per_example_loss`)."""
        if type(self).per_example_loss is Algorithm.per_example_loss:
            return {}
        if not hasattr(self, '_snr'):
            variables = [v for network in self.networks.values()
                         for v in network.trainable_variables]
            self._snr = tf.function(lambda b: summaries.gradient_snr(
                self.per_example_loss, variables, b), autograph=False)
        return self._snr(batch)

    def write_summaries(self) -> None:
        """Extra training summaries (inside the writer's step scope)."""
        for hook in self.train_hooks.values():
            hook.write_summaries()
        for name, optimizer in self.masked_optimizers.items():
            tf.summary.scalar(f'drop_fraction/{name}',
                              optimizer.updater.last_drop_fraction)
            if not optimizer.updater.updates_masks:
                continue
            # The last mask update, per layer (see UPDATE_STATS).
            stats = optimizer.update_stats
            for index in range(stats.shape[0]):
                for column, stat in enumerate(updaters.UPDATE_STATS):
                    tf.summary.scalar(
                        f'mask_update/{name or "networks"}/layer_{index}/'
                        f'{stat}', stats[index, column])


def _keep_initializers(source: tf.Module, twin: tf.Module) -> None:
    """Gives a sparse-execution twin's kernel layers the initializers of
    the masked network it was built from (it was built with zero ones to
    draw nothing; ReDo draws recycled weights from them)."""
    def inner(layer):
        return layer.layer if isinstance(layer, sparse_layers.MaskedLayer) \
            else layer

    for old, new in zip(sparse_layers.kernel_layers(source),
                        sparse_layers.kernel_layers(twin)):
        inner(new).kernel_initializer = inner(old).kernel_initializer
        inner(new).bias_initializer = inner(old).bias_initializer


SPARSE_EXECUTIONS = ('auto',) + sparse_layers.EXECUTIONS


def resolve_sparse_execution(algorithm_class, settings,
                             saved_settings: Optional[Dict] = None) -> str:
    """The run's sparse execution: `train_eval.sparse_execution` unless
    'auto'. 'auto' keeps a resumed run's own (a record without one ran
    masked); a new off-policy run runs 'sparse' on a CPU-only machine when
    the method keeps a fixed active count and the kernels build here
    (measured faster there: benchmarks/sparse_speed.py), whichever its
    target sparsity (ANF's magnitude-pruned targets included), else
    'masked' (on a GPU: unmeasured; PPO: runs sparse when asked, not
    measured faster).

    Raises:
        ValueError: an unknown value.
    """
    requested = settings.sparse_execution
    if requested not in SPARSE_EXECUTIONS:
        raise ValueError(f'train_eval.sparse_execution is {requested!r}; '
                         f'allowed: {", ".join(SPARSE_EXECUTIONS)}.')
    if requested != 'auto':
        return requested
    if saved_settings is not None:
        return saved_settings.get('train_eval.sparse_execution', 'masked')
    method = sparsity_spec.from_gin(settings)
    if (tf.config.list_physical_devices('GPU') or not method.is_sparse
            or method.method == sparsity_spec.PRUNE
            or algorithm_class.loop != OFF_POLICY):
        return 'masked'
    return 'sparse' if csr.available() else 'masked'


@dataclasses.dataclass(frozen=True)
class OffPolicySettings(RunSettings):
    """Settings of the off-policy loop (intervals count train steps)."""
    num_iterations: int = setting(1000000, low=1)
    initial_collect_steps: int = setting(10000, low=1)
    batch_size: int = setting(256, low=1)
    replay_capacity: int = setting(1000000, low=1)
    train_every: int = setting(1, low=1)  # env steps per train step
    # Steps per target (`run.n_step`): 1 is the one-step TD target.
    n_step: int = setting(1, low=1)

    @property
    def replay_size(self) -> int:
        """Transitions the replay must hold: its capacity, or every
        transition of the run when that is fewer."""
        return min(self.replay_capacity, self.initial_collect_steps +
                   self.num_iterations * self.train_every)

    def check(self) -> None:
        if self.n_step > self.initial_collect_steps:
            raise ValueError(
                f'train_eval.n_step {self.n_step} exceeds '
                f'train_eval.initial_collect_steps '
                f'{self.initial_collect_steps}'
                ': the first train step needs one whole n-step transition.')
        if self.batch_size > self.initial_collect_steps:
            raise ValueError(
                f'train_eval.batch_size {self.batch_size} exceeds the '
                f'{self.initial_collect_steps} transitions the replay holds '
                'at the first train step (train_eval.initial_collect_steps).')
        if self.batch_size > self.replay_capacity:
            raise ValueError(
                f'train_eval.batch_size {self.batch_size} exceeds '
                f'train_eval.replay_capacity {self.replay_capacity}.')


class GraphCall:
    """A `tf.function` of array arguments, called per step: after its first
    call for given shapes and dtypes, later calls of the same ones go
    straight to the traced graph, skipping tf.function's dispatch (about
    0.1 ms on a CPU: an eighth of a greedy evaluation step). Same graph,
    same results."""

    def __init__(self, function: Callable):
        self.function = function  # the tf.function
        self._signature, self._graph = None, None

    def __call__(self, *arrays):
        signature = tuple((array.shape, array.dtype) for array in arrays)
        if signature == self._signature:
            return self._graph(*arrays)
        result = self.function(*arrays)
        self._graph = self.function.get_concrete_function(*arrays)
        self._signature = signature
        return result


def transition_batch(batch: Dict[str, np.ndarray]) -> trajectory.Transition:
    """A replay sample as the Transition TF-Agents' off-policy agents
    train on."""
    size = batch['reward'].shape[0]
    mid = tf.fill([size], ts.StepType.MID)
    return trajectory.Transition(
        time_step=ts.TimeStep(mid, tf.zeros([size]), tf.ones([size]),
                              batch['observation']),
        action_step=policy_step.PolicyStep(batch['action'], (), ()),
        next_time_step=ts.TimeStep(mid, batch['reward'], batch['discount'],
                                   batch['next_observation']))


class OffPolicyAlgorithm(Algorithm):
    """An agent trained from replay by `loops.off_policy`.

    Subclasses build `agent` (with a `sample_rng`), then call
    `_compile()`; the loop uses `act`, `act_and_train` (one compiled call per
    step: an exploration action from the parameters before the step, then
    one train step), `train`, and `random_action`.
    """

    loop = OFF_POLICY
    Settings = OffPolicySettings
    def explore(self, time_step):
        """Exploration actions for a batch of time steps (in graph)."""
        return sparse_agents.sample_action(
            self.agent.collect_policy, time_step, self.agent.sample_rng).action

    def _compile(self) -> None:
        agent = self.agent
        self.train_hooks = train_hooks.build(self._hook_configs, self)

        def act(observation):
            return self.explore(ts.restart(observation, batch_size=1))[0]

        def train_step(batch):
            # One train step, then the training-step hooks on its batch.
            return train_hooks.after_train_step(
                self.train_hooks.values(), batch,
                agent.train(transition_batch(batch)))

        def act_and_train(observation, batch):
            action = act(observation)
            return action, train_step(batch)

        self.act = GraphCall(tf.function(act, autograph=False))
        # Flat observations and at most one action axis: batches go packed.
        self._packable = (self.observation_spec.shape.rank == 1 and
                          self.action_spec.shape.rank <= 1)
        self._act_and_train_fields = tf.function(act_and_train,
                                                 autograph=False)
        self._act_and_train_packed = GraphCall(tf.function(
            lambda observation, packed: act_and_train(
                observation, self._unpack_batch(packed)), autograph=False))
        self.train = tf.function(train_step, autograph=False)

    def act_and_train(self, observation: np.ndarray,
                      batch: Dict[str, np.ndarray]):
        """An exploration action for `observation` from the parameters before
        the step, then one train step on `batch`, in one compiled call.

        A batch of flat observations goes in as one float32 array: each
        argument of a compiled call costs TensorFlow about 0.1 ms on a CPU,
        a twentieth of a SAC step; and the call skips tf.function's
        dispatch (`GraphCall`).
        """
        if not self._packable:
            return self._act_and_train_fields(observation, batch)
        columns = [batch[name].reshape(len(batch[name]), -1).astype(
            np.float32, copy=False) for name in ReplayBuffer.FIELDS]
        packed = np.concatenate(columns, axis=1)
        observation = np.asarray(observation,
                                 self.observation_spec.dtype.as_numpy_dtype)
        return self._act_and_train_packed(observation, packed)

    def _unpack_batch(self, packed: tf.Tensor) -> Dict[str, tf.Tensor]:
        """The replay fields of a packed batch, with their shapes and dtypes
        (integer actions are exact in float32 below 2**24)."""
        observation = self.observation_spec.shape.num_elements()
        action = self.action_spec.shape.num_elements()
        parts = dict(zip(ReplayBuffer.FIELDS, tf.split(
            packed, [observation, action, 1, 1, observation], axis=1)))
        size = tf.shape(packed)[0]
        parts['action'] = tf.cast(tf.reshape(
            parts['action'], tf.concat([[size], self.action_spec.shape], 0)),
            self.action_spec.dtype)
        parts['reward'] = parts['reward'][:, 0]
        parts['discount'] = parts['discount'][:, 0]
        return parts

    def random_action(self, rng: np.random.Generator) -> np.ndarray:
        """A uniform random action (initial collection)."""
        spec = self.action_spec
        low = np.broadcast_to(spec.minimum, spec.shape)
        high = np.broadcast_to(spec.maximum, spec.shape)
        if spec.dtype.is_integer:
            return rng.integers(low, high + 1).astype(
                spec.dtype.as_numpy_dtype)
        return rng.uniform(low, high).astype(np.float32)
