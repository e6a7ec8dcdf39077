"""ReDo: recycling dormant neurons (Sokar et al., ICML 2023, "The Dormant
Neuron Phenomenon in Deep Reinforcement Learning"; code: google/dopamine,
`labs/redo`), as a training-step hook.

After train step s (counted from 0) with s > 0, s % `redo.every` == 0 and,
when `redo.end_step` > 0, s < end_step, for each online network (all by
default: SAC's and TD3's actor and both critics, DQN's Q-network; target
networks follow through their usual updates, as in the released code):

1. one forward pass on the train step's own batch (its observations, and
   its actions for critics: what the networks were just trained on) gives
   each hidden layer's `plasticity.neuron_scores`;
2. the neurons to recycle: those with score <= `redo.tau` (schedule
   'constant', the paper's rule); or (schedule 'cosine', the released
   code's `NeuronRecyclerScheduled`) in each hidden layer the
   k = max(1, round(f * units)) lowest-scoring ones (ties at the k-th score
   included), whatever their scores, with f = `redo.recycle_fraction` *
   cos(pi/2 * s / end_step);
3. a recycled neuron's incoming weights (its kernel column, or a conv
   filter) are drawn anew from its layer's initializer, its bias is set to
   0 and its outgoing weights (its rows of the next kernel layer; after a
   conv layer and a Flatten, the rows of its feature map) to 0; the
   optimizer's per-weight state (Adam's m and v) of the incoming and
   outgoing weights is set to 0.

As in the released code, the output layer's neurons are never recycled,
the biases' optimizer state is kept, and a weight that is both incoming to
a recycled neuron and outgoing from another ends at 0. In a sparse layer
(masked or 'sparse' execution) only the active positions are redrawn and
the mask never changes. New weights come from stateless draws seeded by a
`tf.random.Generator` derived from the run's seed and checkpointed with the
run, so a resumed run recycles exactly as the uninterrupted one.

The batch is the train step's (the simplest correct source: no extra replay
sample, and the activations of the data just trained on); the released DQN
code samples 256 other replay states, its SAC code uses the training batch.
PPO is not supported (its minibatch loop has no hook point).
"""

import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import gin
import tensorflow as tf

from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import train_hooks
from rigl.rl.tfagents.run import plasticity
from rigl.rl.tfagents.run import seeding
from rigl.rl.tfagents.run import settings
from rigl.rl.tfagents.sparsity import masked_optimizer

SCHEDULES = ('constant', 'cosine')
# Keras's VarianceScaling: the standard deviation of a N(0, 1) truncated at
# +-2 (scipy.stats.truncnorm.std(-2, 2)).
_TRUNCATED_STD = 0.87962566103423978


@dataclasses.dataclass(frozen=True)
class ReDoConfig:
    """ReDo's settings (the `redo` gin configurable's arguments)."""
    every: int
    tau: float = 0.1
    schedule: str = 'constant'
    recycle_fraction: float = 0.3
    end_step: int = 0
    networks: Tuple[str, ...] = ()

    def record(self) -> Dict[str, Any]:
        """JSON-ready, every field."""
        return dict(dataclasses.asdict(self), networks=list(self.networks))


@gin.configurable
def redo(every: int = 0, tau: float = 0.1, schedule: str = 'constant',
         recycle_fraction: float = 0.3, end_step: int = 0,
         networks: Sequence[str] = ()) -> Optional[ReDoConfig]:
    """ReDo's settings, or None (off) when `every` is 0.

    Args:
        every: train steps between recycles (0: off).
        tau: 'constant' schedule: a neuron is recycled when its score is
            <= tau.
        schedule: 'constant' (recycle the tau-dormant neurons) or 'cosine'
            (recycle a cosine-annealed fraction of the lowest-scoring
            neurons, as the released code's gin).
        recycle_fraction: 'cosine' schedule: the fraction at step 0.
        end_step: no recycle from this step on (0: no end); the 'cosine'
            schedule reaches 0 there and needs it.
        networks: the networks to recycle (their names in the algorithm,
            e.g. ('critic_1', 'critic_2')); () for all.
    """
    settings.check('redo.every', every, int, low=0)
    tau = float(settings.check('redo.tau', tau, float, low=0))
    recycle_fraction = float(settings.check(
        'redo.recycle_fraction', recycle_fraction, float, 0, 1,
        low_open=True))
    settings.check('redo.end_step', end_step, int, low=0)
    if schedule not in SCHEDULES:
        raise ValueError(f'redo.schedule is {schedule!r}; allowed: '
                         f'{", ".join(SCHEDULES)}.')
    if not isinstance(networks, (tuple, list)) or not all(
            isinstance(name, str) for name in networks):
        raise ValueError('redo.networks must be a tuple of network names, '
                         f'got {networks!r}.')
    if not every:
        return None
    if schedule == 'cosine' and not end_step:
        raise ValueError("redo.schedule 'cosine' anneals the recycled "
                         'fraction to 0 at redo.end_step, which must be '
                         'positive; got 0.')
    return ReDoConfig(every, tau, schedule, recycle_fraction, end_step,
                      tuple(networks))


def cosine_fraction(step: tf.Tensor, fraction: float,
                    end_step: int) -> tf.Tensor:
    """The released code's recycled fraction at `step`:
    fraction * cos(pi/2 * step / end_step)."""
    progress = tf.cast(step, tf.float32) / float(end_step)
    return fraction * tf.cos(0.5 * math.pi * progress)


def recycle_mask(scores: tf.Tensor, tau: float,
                 fraction: Optional[tf.Tensor] = None) -> tf.Tensor:
    """1 on the neurons of a layer to recycle, else 0.

    Args:
        scores: the layer's `plasticity.neuron_scores`.
        tau: without `fraction`: the neurons with score <= tau.
        fraction: the max(1, round(fraction * units)) lowest scores, ties at
            the last included (none when fraction is 0).
    """
    if fraction is None:
        return tf.cast(scores <= tau, tf.float32)
    units = tf.cast(tf.size(scores), tf.float32)
    count = tf.maximum(tf.cast(tf.round(fraction * units), tf.int32), 1)
    threshold = tf.sort(scores)[count - 1]
    lowest = tf.cast(scores <= threshold, tf.float32)
    return tf.where(fraction > 0, lowest, tf.zeros_like(lowest))


def _fans(shape: Sequence[int]) -> Tuple[float, float]:
    """Keras's fan-in and fan-out of a kernel shape."""
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return float(shape[-2] * receptive), float(shape[-1] * receptive)


def initial_values(initializer, shape: Sequence[int],
                   seed: tf.Tensor) -> tf.Tensor:
    """A fresh draw from a Keras kernel initializer (variance scaling, as
    Glorot, He and TF-Agents' default; uniform; normal; truncated normal),
    from a stateless seed [2].

    Raises:
        ValueError: an initializer of another kind.
    """
    shape = [int(size) for size in shape]
    kind = type(initializer).__name__
    if all(hasattr(initializer, name) for name in
           ('scale', 'mode', 'distribution')):
        fan_in, fan_out = _fans(shape)
        fan = {'fan_in': fan_in, 'fan_out': fan_out,
               'fan_avg': (fan_in + fan_out) / 2.0}[initializer.mode]
        scale = initializer.scale / max(1.0, fan)
        if initializer.distribution in ('truncated_normal', 'normal'):
            return tf.random.stateless_truncated_normal(
                shape, seed, stddev=math.sqrt(scale) / _TRUNCATED_STD)
        if initializer.distribution == 'untruncated_normal':
            return tf.random.stateless_normal(shape, seed,
                                              stddev=math.sqrt(scale))
        limit = math.sqrt(3.0 * scale)
        return tf.random.stateless_uniform(shape, seed, -limit, limit)
    if hasattr(initializer, 'minval') and hasattr(initializer, 'maxval'):
        return tf.random.stateless_uniform(shape, seed, initializer.minval,
                                           initializer.maxval)
    if hasattr(initializer, 'mean') and hasattr(initializer, 'stddev'):
        draw = (tf.random.stateless_truncated_normal if 'Truncated' in kind
                else tf.random.stateless_normal)
        return draw(shape, seed, initializer.mean, initializer.stddev)
    raise ValueError(f'ReDo cannot draw new weights from a {kind} '
                     'initializer (variance scaling, uniform and normal '
                     'ones only).')


def _inner(layer: tf.keras.layers.Layer) -> tf.keras.layers.Layer:
    """The Keras layer whose initializer and bias a kernel layer uses."""
    return layer.layer if isinstance(layer, sparse_layers.MaskedLayer) \
        else layer


def _outgoing_rows(neurons: tf.Tensor, fan_in: int) -> tf.Tensor:
    """A layer's neuron mask over the next layer's input rows: the same
    when they match, else (a Flatten of [height, width, maps] between)
    repeated for each position, maps varying fastest."""
    units = int(neurons.shape[0])
    return neurons if fan_in == units else tf.tile(neurons,
                                                   [fan_in // units])


def _recycle_layer(layer, incoming: Optional[tf.Tensor],
                   outgoing: Optional[tf.Tensor], seed: Optional[tf.Tensor],
                   slots_of: Callable) -> tf.Operation:
    """One kernel layer's part of a recycle: redraws the columns of its
    recycled neurons (`incoming`) and zeroes the rows of the previous
    layer's (`outgoing`), with their optimizer slots; zeroes the biases of
    its recycled neurons."""
    sparse = isinstance(layer, sparse_layers.SPARSE_LAYER_TYPES)
    kernel = tf.convert_to_tensor(layer.kernel)
    shape = kernel.shape
    new_kernel, keep = kernel, tf.ones(shape)
    if incoming is not None:
        columns = tf.broadcast_to(incoming, shape)
        fresh = initial_values(_inner(layer).kernel_initializer, shape, seed)
        new_kernel = tf.where(columns > 0, fresh, new_kernel)
        keep *= 1.0 - columns
    if outgoing is not None:
        rows = tf.broadcast_to(tf.reshape(_outgoing_rows(
            outgoing, int(shape[-2])), [-1, 1]), shape)
        new_kernel = tf.where(rows > 0, tf.zeros_like(new_kernel), new_kernel)
        keep *= 1.0 - rows
    if sparse:
        mask = tf.convert_to_tensor(layer.mask)
        ops = [layer.rewrite(mask, new_kernel * mask,
                             slots_of(layer.weights_variable), keep)]
    else:
        ops = [layer.kernel.assign(new_kernel)]
        ops += [slot.assign(slot * keep) for slot in slots_of(layer.kernel)]
    bias = getattr(_inner(layer), 'bias', None)
    if incoming is not None and bias is not None:
        ops.append(bias.assign(bias * (1.0 - incoming)))
    return tf.group(ops)


def recycle(layers: Sequence[tf.keras.layers.Layer],
            neuron_masks: Sequence[tf.Tensor],
            slots_of: Callable[[tf.Variable], List[tf.Variable]],
            seeds: Sequence[tf.Tensor]) -> tf.Operation:
    """Recycles neurons of a chain of kernel layers (see the module doc).

    Args:
        layers: a network's kernel layers in forward order
            (`sparse_layers.kernel_layers`): Dense, Conv2D, `MaskedLayer`
            or `CompressedDense`.
        neuron_masks: per hidden layer (all but the last), 1 on its
            neurons to recycle, else 0.
        slots_of: the optimizer's per-weight state of a variable
            (`masked_optimizer.optimizer_slots`).
        seeds: per hidden layer, a stateless seed [2] of its new weights.
    """
    if len(neuron_masks) != len(layers) - 1 or len(seeds) != len(
            neuron_masks):
        raise ValueError(f'recycle needs one neuron mask and seed per hidden '
                         f'layer ({len(layers) - 1}), got '
                         f'{len(neuron_masks)} and {len(seeds)}.')
    ops = []
    for index, layer in enumerate(layers):
        hidden = index < len(neuron_masks)
        ops.append(_recycle_layer(
            layer, neuron_masks[index] if hidden else None,
            neuron_masks[index - 1] if index else None,
            seeds[index] if hidden else None, slots_of))
    return tf.group(ops)


def check_chain(name: str, layers: Sequence[tf.keras.layers.Layer]) -> None:
    """Raises ValueError (one line) unless each kernel layer feeds the next
    (directly, or a conv layer through a Flatten) and every hidden layer's
    initializer can be drawn from anew."""
    shapes = [tuple(tf.convert_to_tensor(layer.kernel).shape)
              for layer in layers]
    for index, (shape, following) in enumerate(zip(shapes, shapes[1:])):
        units, fan_in = shape[-1], following[-2]
        flattened = (len(shape) == 4 and len(following) == 2 and
                     fan_in % units == 0)
        if fan_in != units and not flattened:
            raise ValueError(
                f'ReDo needs {name} to be a chain of kernel layers: its layer '
                f'{index} has {units} outputs, its next {fan_in} inputs.')
        initial_values(_inner(layers[index]).kernel_initializer, shape,
                       tf.zeros([2], tf.int32))


class _Untracked:
    """Holds what a checkpoint of the hook should not carry (the
    algorithm, its networks and optimizers are saved on their own)."""

    def __init__(self, **values):
        self.__dict__.update(values)


@train_hooks.register('redo')
class ReDo(train_hooks.TrainStepHook):
    """Recycles the dormant neurons of an algorithm's networks.

    Args:
        config: the settings (`redo()`).
        algorithm: a built off-policy algorithm (`algos.base`).
    """

    @classmethod
    def configure(cls, algorithm_class) -> Optional[ReDoConfig]:
        config = redo()
        if config is not None and getattr(algorithm_class, 'loop',
                                          '') != 'off_policy':
            raise ValueError(
                f'redo.every is {config.every}, but ReDo runs after '
                'off-policy train steps (SAC, TD3, DQN), not in '
                f'{algorithm_class.__name__}; unbind redo.every.')
        return config

    @classmethod
    def record_of(cls, values: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        if not values.get('redo.every'):
            return None
        defaults = ReDoConfig(every=0).record()
        return {key: values.get(f'redo.{key}', default)
                for key, default in defaults.items()}

    def __init__(self, config: ReDoConfig, algorithm):
        super().__init__(name='redo')
        names = list(config.networks or algorithm.networks)
        unknown = [name for name in names if name not in algorithm.networks]
        if unknown:
            raise ValueError(
                f'redo.networks names {", ".join(unknown)}; this '
                f'{algorithm.name.upper()} has '
                f'{", ".join(algorithm.networks)}.')
        optimizers = []
        for name in names:
            check_chain(name, sparse_layers.kernel_layers(
                algorithm.networks[name]))
            owners = [optimizer for key, optimizer in
                      algorithm.masked_optimizers.items()
                      if name.startswith(key)]
            if len(owners) != 1:
                raise ValueError(f'ReDo finds no single optimizer of {name}.')
            optimizers.append(owners[0].optimizer)
        self.config = config
        self.names = names
        self._bound = _Untracked(algorithm=algorithm, optimizers=optimizers)
        self.generator = tf.random.Generator.from_seed(
            seeding.derive(algorithm.seed, 'redo'))
        self.recycled_last = tf.Variable(tf.zeros([len(names)]),
                                         trainable=False, name='recycled_last')
        self.recycled_total = tf.Variable(tf.zeros([len(names)]),
                                          trainable=False,
                                          name='recycled_total')
        self.recycles = tf.Variable(0, dtype=tf.int64, trainable=False,
                                    name='recycles')

    def is_due(self, step: tf.Tensor) -> tf.Tensor:
        """Whether ReDo recycles after train step `step` (from 0)."""
        due = tf.logical_and(step > 0, tf.equal(step % self.config.every, 0))
        if self.config.end_step:
            due = tf.logical_and(due, step < self.config.end_step)
        return due

    def fraction(self, step: tf.Tensor) -> Optional[tf.Tensor]:
        """The 'cosine' schedule's recycled fraction (None: by tau)."""
        if self.config.schedule != 'cosine':
            return None
        return cosine_fraction(step, self.config.recycle_fraction,
                               self.config.end_step)

    def after_train_step(self, batch: Dict[str, tf.Tensor]) -> tf.Operation:
        step = self._bound.algorithm.train_step.read_value() - 1
        return tf.cond(self.is_due(step), masked_optimizer.rarely(
            lambda: self._recycle(step, batch)), tf.no_op)

    def _recycle(self, step: tf.Tensor, batch: Dict[str, tf.Tensor]
                 ) -> tf.Operation:
        """One recycle of every chosen network on `batch`."""
        algorithm = self._bound.algorithm
        inputs = algorithm.plasticity_inputs(batch)
        fraction = self.fraction(step)
        ops, counts = [], []
        for name, optimizer in zip(self.names, self._bound.optimizers):
            network = algorithm.networks[name]
            masks = [recycle_mask(plasticity.neuron_scores(features),
                                  self.config.tau, fraction)
                     for features in plasticity.hidden_features(
                         network, inputs[name], flatten=False)]
            seeds = self.generator.make_seeds(len(masks))
            ops.append(recycle(
                sparse_layers.kernel_layers(network), masks,
                lambda variable, optimizer=optimizer:
                masked_optimizer.optimizer_slots(optimizer, variable),
                [seeds[:, index] for index in range(len(masks))]))
            counts.append(tf.add_n([tf.reduce_sum(mask) for mask in masks]))
        with tf.control_dependencies(ops):
            counts = tf.stack(counts)
            return tf.group(self.recycled_last.assign(counts),
                            self.recycled_total.assign_add(counts),
                            self.recycles.assign_add(1))

    def describe(self) -> str:
        config = self.config
        rule = (f'neurons with score <= {config.tau:g}'
                if config.schedule == 'constant' else
                f'the lowest-scoring {config.recycle_fraction:g} x '
                'cos(pi/2 t/end_step) of each hidden layer')
        end = (f' until step {config.end_step:,}' if config.end_step
               else '')
        return (f'ReDo: every {config.every:,} train steps{end}, recycle '
                f'{rule} in {", ".join(self.names)}')

    def write_summaries(self) -> None:
        for index, name in enumerate(self.names):
            tf.summary.scalar(f'redo/{name}/recycled_last',
                              self.recycled_last[index])
            tf.summary.scalar(f'redo/{name}/recycled_total',
                              self.recycled_total[index])
        tf.summary.scalar('redo/recycles', self.recycles)

    def network_metrics(self) -> Dict[str, Dict[str, float]]:
        totals = self.recycled_total.numpy()
        return {name: {'recycled_neurons': float(total)}
                for name, total in zip(self.names, totals)}
