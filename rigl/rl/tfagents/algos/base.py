"""What an algorithm module provides to the loops.

An algorithm owns its settings (a dataclass of `train_eval` gin bindings),
builds its networks, masks and TF-Agents agent, and exposes only public names
to the loops: named networks, masked optimizers, the eval policy, compiled
act/train functions, a training-FLOP count and extra summaries. These modules
are the only places that touch TF-Agents' private attributes.
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
from rigl.rl.tfagents import mask_updaters
from rigl.rl.tfagents import networks
from rigl.rl.tfagents import sparse_agents
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import tf_agents_private as tfa_private
from rigl.rl.tfagents import train_hooks
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import seeding
from rigl.rl.tfagents.sparsity import csr
from rigl.rl.tfagents.sparsity import spec as sparsity_spec
from rigl.rl.tfagents.sparsity import width as width_lib
from rigl.rl.tfagents.run.replay import ReplayBuffer
from rigl.rl.tfagents.run import summaries
from rigl.rl.tfagents.run.settings import RunSettings, setting

OFF_POLICY, ON_POLICY = 'off_policy', 'on_policy'

# How train_eval.weight_decay acts:
#   'original': as the algorithm's original code (`Algorithm.original_decay`);
#   'anf': ANF's MaskAdam: weight_decay * w added to every parameter's
#       gradient;
#   'decoupled': AdamW: w -= learning_rate * weight_decay * w each step.
WEIGHT_DECAY_MODES = ('original', 'anf', 'decoupled')
# (which variables, gradient factor) of a coupled L2 penalty. 'kernels':
# every layer's kernel; 'hidden_kernels': all but each network's last.
ANF_DECAY = ('all', 1.0)


class Algorithm:
    """Base of every algorithm; subclasses set the class attributes and
    build `agent`, `networks` and `masked_optimizers` in `__init__`."""

    name: str = ''
    loop: str = ''
    Settings = RunSettings
    # The coupled L2 penalty of the algorithm's original code, as
    # (variables, gradient factor): see `make_optimizer`.
    original_decay: Tuple[str, float] = ANF_DECAY

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
        self.masked_optimizers: Dict[str, mask_updaters.MaskedOptimizer] = {}
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
        return make_optimizer(
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
                for column, stat in enumerate(mask_updaters.UPDATE_STATS):
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


class _L2Penalty:
    """Per-variable coefficients c of a coupled L2 penalty: the optimizer
    adds c * w to w's gradient (kept out of Keras's object tracking)."""

    def __init__(self, coefficients: Dict):
        self.coefficients = coefficients


class _FusedAdamStep:
    """Keras Adam's update as one `ResourceApplyAdam` kernel per variable,
    optionally with a coupled L2 penalty.

    Keras computes Adam's step with about twenty small ops per variable;
    on a CPU their dispatch costs more than the arithmetic (SAC's step has
    19 variables). The fused kernel computes the same update (same moments,
    bias correction and epsilon placement), and the bias-correction scalars
    are computed once per apply instead of once per variable. The slot
    variables are Keras's own, so checkpoints and the mask updaters'
    moment resets are unchanged.

    Args:
        l2_coefficients: {variable.ref(): c}: c * w is added to the gradient
            of w (after the masking, so masked weights stay at 0), as an L2
            term in the loss would.
    """

    _fused_scalars = None

    def __init__(self, *args, l2_coefficients: Optional[Dict] = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._l2 = _L2Penalty(dict(l2_coefficients or {}))

    def _internal_apply_gradients(self, grads_and_vars):
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.cast(self.beta_1, tf.float32)
        beta_2 = tf.cast(self.beta_2, tf.float32)
        self._fused_scalars = dict(
            lr=tf.cast(self.learning_rate, tf.float32),
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, tf.float32))
        try:
            return super()._internal_apply_gradients(grads_and_vars)
        finally:
            self._fused_scalars = None

    def update_step(self, gradient, variable):
        coefficient = self._l2.coefficients.get(variable.ref())
        if coefficient and not isinstance(gradient, tf.IndexedSlices):
            gradient = gradient + tf.cast(coefficient, variable.dtype) * (
                variable)
        if (self._fused_scalars is None or self.amsgrad
                or isinstance(gradient, tf.IndexedSlices)
                or variable.dtype != tf.float32):
            return super().update_step(gradient, variable)
        index = self._index_dict[self._var_key(variable)]
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle,
            v=self._velocities[index].handle, grad=gradient,
            use_locking=False, **self._fused_scalars)


class FusedAdam(_FusedAdamStep, tf.keras.optimizers.Adam):
    """Keras Adam with the fused update step."""


class FusedAdamW(_FusedAdamStep, tf.keras.optimizers.AdamW):
    """Keras AdamW (decoupled weight decay) with the fused update step; the
    decay factor lr * weight_decay is computed once per apply."""

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return
        decay = (tf.cast(self.learning_rate, tf.float32) *
                 tf.cast(self.weight_decay, tf.float32))
        for variable in variables:
            if self._use_weight_decay(variable):
                variable.assign_sub(variable * tf.cast(decay, variable.dtype))


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


def check_weight_decay_mode(value: str) -> None:
    if value not in WEIGHT_DECAY_MODES:
        raise ValueError(
            f'train_eval.weight_decay_mode is {value!r}; allowed: '
            f'{", ".join(WEIGHT_DECAY_MODES)}.')


def decayed_variables(network_list, scope: str) -> list:
    """The variables a coupled L2 penalty of `scope` acts on."""
    chosen = []
    for network in network_list:
        variables = network.trainable_variables
        if scope == 'all':
            chosen += variables
            continue
        # Each kernel layer's weights: a kernel, or a compressed layer's
        # active values ('sparse' execution), in forward order.
        kernels = [layer.weights_variable if isinstance(
                       layer, sparse_layers.SPARSE_LAYER_TYPES) else layer.kernel
                   for layer in sparse_layers.kernel_layers(network)]
        chosen += kernels[:-1] if scope == 'hidden_kernels' else kernels
    return chosen


def make_optimizer(learning_rate, weight_decay: float = 0.0,
                   epsilon: float = 1e-7, mode: str = 'decoupled',
                   network_list=(), decay=ANF_DECAY):
    """Adam with the fused update step, and `weight_decay` applied by `mode`.

    Args:
        learning_rate: a float or a Keras learning-rate schedule.
        weight_decay: 0 for none.
        mode: 'decoupled' (AdamW), or coupled L2 ('original', 'anf') on
            `decayed_variables(network_list, scope)` with gradient
            factor * weight_decay * w, where (scope, factor) is `decay`
            ('original') or `ANF_DECAY` ('anf').
    """
    check_weight_decay_mode(mode)
    if not weight_decay:
        return FusedAdam(learning_rate=learning_rate, epsilon=epsilon)
    if mode == 'decoupled':
        return FusedAdamW(learning_rate=learning_rate,
                          weight_decay=weight_decay, epsilon=epsilon)
    scope, factor = decay if mode == 'original' else ANF_DECAY
    return FusedAdam(learning_rate=learning_rate, epsilon=epsilon,
                     l2_coefficients={
                         v.ref(): factor * weight_decay
                         for v in decayed_variables(network_list, scope)})


def parse_float_list(text: str, name: str, count: int) -> Optional[list]:
    """'0.9,0.8' -> [0.9, 0.8]; '' -> None."""
    if not text:
        return None
    try:
        values = [float(part) for part in text.split(',')]
    except ValueError:
        values = []
    if len(values) != count:
        raise ValueError(f'{name} must be {count} comma-separated numbers, got '
                         f'{text!r}.')
    return values


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
                f'train_eval.initial_collect_steps {self.initial_collect_steps}'
                ': the first train step needs one whole n-step transition.')
        if self.batch_size > self.initial_collect_steps:
            raise ValueError(
                f'train_eval.batch_size {self.batch_size} exceeds the '
                f'{self.initial_collect_steps} transitions the replay holds at '
                'the first train step (train_eval.initial_collect_steps).')
        if self.batch_size > self.replay_capacity:
            raise ValueError(
                f'train_eval.batch_size {self.batch_size} exceeds '
                f'train_eval.replay_capacity {self.replay_capacity}.')


def check_train_modes(*pairs: Tuple[str, str]) -> None:
    for name, value in pairs:
        networks.check_train_mode(value, f'train_eval.{name}')


def check_target_sparsity(value: str) -> None:
    if value not in sparse_agents.TARGET_SPARSITY_MODES:
        raise ValueError(
            f'train_eval.target_sparsity is {value!r}; allowed: '
            f'{", ".join(sparse_agents.TARGET_SPARSITY_MODES)}.')


def transition_batch(batch: Dict[str, np.ndarray]) -> trajectory.Transition:
    """A replay sample as the Transition TF-Agents' off-policy agents train on."""
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
    # Actor outputs per action dimension (SAC: a mean and a std).
    actor_output_factor = 1

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

        self.act = tf.function(act, autograph=False)
        # Flat observations and at most one action axis: batches go packed.
        self._packable = (self.observation_spec.shape.rank == 1 and
                          self.action_spec.shape.rank <= 1)
        self._packed_graph, self._packed_shapes = None, None
        self._act_and_train_fields = tf.function(act_and_train,
                                                 autograph=False)
        self._act_and_train_packed = tf.function(
            lambda observation, packed: act_and_train(
                observation, self._unpack_batch(packed)), autograph=False)
        self.train = tf.function(train_step, autograph=False)

    def act_and_train(self, observation: np.ndarray,
                      batch: Dict[str, np.ndarray]):
        """An exploration action for `observation` from the parameters before
        the step, then one train step on `batch`, in one compiled call.

        A batch of flat observations goes in as one float32 array: each
        argument of a compiled call costs TensorFlow about 0.1 ms on a CPU,
        a twentieth of a SAC step. After the first call, calls of the same
        shapes go straight to the traced graph, skipping tf.function's
        dispatch (another ~0.1 ms).
        """
        if not self._packable:
            return self._act_and_train_fields(observation, batch)
        columns = [batch[name].reshape(len(batch[name]), -1).astype(
            np.float32, copy=False) for name in ReplayBuffer.FIELDS]
        packed = np.concatenate(columns, axis=1)
        observation = np.asarray(observation,
                                 self.observation_spec.dtype.as_numpy_dtype)
        shapes = (observation.shape, packed.shape)
        if self._packed_shapes == shapes:
            return self._packed_graph(observation, packed)
        result = self._act_and_train_packed(observation, packed)
        self._packed_graph = self._act_and_train_packed.get_concrete_function(
            observation, packed)
        self._packed_shapes = shapes
        return result

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

    def network_losses(self, batch) -> list:
        """The actor-critic agents' losses, as their mask updates use them
        (critic loss for both critics, actor loss for the actor)."""
        losses_of = getattr(self.agent, '_mask_update_losses', None)
        if losses_of is None:
            return super().network_losses(batch)
        transition = transition_batch(
            {name: tf.convert_to_tensor(value) for name, value in batch.items()})
        pairs = losses_of(transition.time_step, transition.action_step.action,
                          transition.next_time_step, None)
        names = {id(optimizer): [n for n in self.networks if n.startswith(key)]
                 for key, optimizer in self.masked_optimizers.items()}
        return [(names[id(optimizer)], loss) for optimizer, loss in pairs]

    def _build_actor_critics(self, create_actor, widths=None,
                             initializer: str = 'tf_agents'
                             ) -> Dict[str, tf.Module]:
        """An actor and two critics (SAC, TD3) with their masks, and the
        network-side noise layout they share (if configured).

        Args:
            create_actor: the actor builder of `networks`.
            widths: (actor, critics) width multipliers (default: `width`).
            initializer: the critics' `networks.INITIALIZERS` name (the
                actor's is `create_actor`'s own).
        """
        settings, seed = self.settings, self.seed
        observation_spec, action_spec = self.observation_spec, self.action_spec
        if not action_spec.dtype.is_floating:
            raise ValueError(
                f'{self.name.upper()} needs continuous actions; '
                f'{settings.env_name} has {action_spec}. Use PPO (or DQN) for '
                'discrete ones.')
        self.noise_layout = anf.make_layout(
            observation_spec.shape.num_elements(),
            seeding.derive(seed, 'network_noise'))
        inputs = (self.noise_layout.total if self.noise_layout is not None
                  else observation_spec.shape.num_elements())
        actions = action_spec.shape.num_elements()
        widths = self.widths(
            {'actor': [inputs, *settings.actor_fc_layers,
                       self.actor_output_factor * actions],
             'critic': [inputs + actions, *settings.critic_joint_fc_layers,
                        1]},
            dict(zip(('actor', 'critic'), widths or [settings.width] * 2)))
        def actor(extra):
            return create_actor(
                observation_spec, action_spec, settings.actor_fc_layers,
                self.train_mode(settings.train_mode_actor),
                settings.sparse_output_layer, widths['actor'],
                self.noise_layout,
                wrap_kwargs={**self.sparse_method.wrap_kwargs('actor'),
                             **extra})

        def critic(extra):
            return networks.create_sac_critic_network(
                observation_spec, action_spec, settings.critic_joint_fc_layers,
                self.train_mode(settings.train_mode_value),
                settings.sparse_output_layer, widths['critic'],
                self.noise_layout, initializer,
                wrap_kwargs={**self.sparse_method.wrap_kwargs('critic'),
                             **extra})

        named = {}
        for name, build in (('actor', actor), ('critic_1', critic),
                            ('critic_2', critic)):
            group = 'actor' if name == 'actor' else 'critic'
            named[name] = self.build_network(
                build, observation_spec if name == 'actor' else
                (observation_spec, action_spec), group,
                seeding.derive(seed, 'masks', name))
        return named

    def _finish_actor_critic(self, named: Dict[str, tf.Module]) -> None:
        """Initializes the built actor-critic agent and exposes its networks
        and masked optimizers to the loop."""
        self.agent.initialize()
        self.networks = named
        self.masked_optimizers = {
            'actor': tfa_private.actor_optimizer(self.agent),
            'critic': tfa_private.critic_optimizer(self.agent)}
        self._compile()

    def random_action(self, rng: np.random.Generator) -> np.ndarray:
        """A uniform random action (initial collection)."""
        spec = self.action_spec
        low = np.broadcast_to(spec.minimum, spec.shape)
        high = np.broadcast_to(spec.maximum, spec.shape)
        if spec.dtype.is_integer:
            return rng.integers(low, high + 1).astype(spec.dtype.as_numpy_dtype)
        return rng.uniform(low, high).astype(np.float32)
