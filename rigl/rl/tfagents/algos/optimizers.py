"""The optimizer every algorithm trains with: Adam with a fused update step,
and weight decay as the algorithm's original code applied it.

`make_optimizer` is the one entry point (`Algorithm.optimizer` calls it with
the run's settings); `FusedAdam` and `FusedAdamW` are Keras's Adam and AdamW
with each variable's update computed by one kernel, which makes a CPU train
step markedly faster and leaves the numbers, slots and checkpoints as Keras
has them.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.algos import checks

# (which variables, gradient factor) of a coupled L2 penalty. 'kernels':
# every layer's kernel; 'hidden_kernels': all but each network's last.
ANF_DECAY = ('all', 1.0)


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


def decayed_variables(network_list: Sequence[tf.Module],
                      scope: str) -> List[tf.Variable]:
    """The variables a coupled L2 penalty of `scope` acts on."""
    chosen = []
    for network in network_list:
        variables = network.trainable_variables
        if scope == 'all':
            chosen += variables
            continue
        # Each kernel layer's weights: a kernel, or a compressed layer's
        # active values ('sparse' execution), in forward order.
        kernels = [layer.weights_variable
                   if isinstance(layer, sparse_layers.SPARSE_LAYER_TYPES)
                   else layer.kernel
                   for layer in sparse_layers.kernel_layers(network)]
        chosen += kernels[:-1] if scope == 'hidden_kernels' else kernels
    return chosen


def make_optimizer(learning_rate, weight_decay: float = 0.0,
                   epsilon: float = 1e-7, mode: str = 'decoupled',
                   network_list: Sequence[tf.Module] = (),
                   decay: Tuple[str, float] = ANF_DECAY
                   ) -> tf.keras.optimizers.Optimizer:
    """Adam with the fused update step, and `weight_decay` applied by `mode`.

    Args:
        learning_rate: a float or a Keras learning-rate schedule.
        weight_decay: 0 for none.
        mode: 'decoupled' (AdamW), or coupled L2 ('original', 'anf') on
            `decayed_variables(network_list, scope)` with gradient
            factor * weight_decay * w, where (scope, factor) is `decay`
            ('original') or `ANF_DECAY` ('anf').
    """
    checks.check_weight_decay_mode(mode)
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


def create_variables(optimizer: tf.Module,
                     variables: Sequence[tf.Variable]) -> None:
    """Creates a legacy Keras optimizer's variables for `variables` now.

    TF-Agents turns a Keras optimizer it is given into its legacy form,
    which creates its step count, hyperparameters and moments on its first
    apply, inside the first compiled train step; tf.function then traces
    that step a second time (about 2 s of a SAC run's start). Created here,
    eagerly, they hold the same values and checkpoint entries.
    """
    # pylint: disable-next=protected-access
    optimizer._create_all_weights(variables)
