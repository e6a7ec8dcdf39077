"""PPO (clipped objective, Schulman et al. 2017) with sparse actor and value
networks, trained by `loops.on_policy`.

One iteration collects `collect_sequence_length` steps in each of
`num_parallel_environments` environments, computes GAE advantages once, and
runs `num_epochs` passes of shuffled minibatch steps; each minibatch step is
one train step (and one step of the masked optimizer).
"""

import dataclasses
import math
from typing import Dict, Optional, Tuple

import numpy as np

import tensorflow as tf
from tf_agents.agents.ppo import ppo_utils
from tf_agents.networks import categorical_projection_network
from tf_agents.networks import network
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import common

from rigl.rl.tfagents import networks
from rigl.rl.tfagents import numpy_inference
from rigl.rl.tfagents import sparse_agents
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import tf_agents_private as tfa_private
from rigl.rl.tfagents.algos import base
from rigl.rl.tfagents.algos import checks
from rigl.rl.tfagents.algos import optimizers
from rigl.rl.tfagents.run import seeding
from rigl.rl.tfagents.run.settings import RunSettings, setting


# The original's Adam epsilon (tf.compat.v1 AdamOptimizer in
# ppo_train_eval.py; the same update as the fused Keras Adam here).
ADAM_EPSILON = 1e-5
VALUE_ACTIVATIONS = ('relu', 'tanh')


@dataclasses.dataclass(frozen=True)
class PpoSettings(RunSettings):
    """PPO's settings; intervals count iterations."""
    eval_interval: int = setting(5, low=1)
    eval_episodes: int = setting(10, low=1)
    checkpoint_interval: int = setting(10, low=1)
    summary_interval: int = setting(1, low=1)
    log_interval: int = setting(1, low=1)
    num_environment_steps: int = setting(1000000, low=1)
    num_iterations: Optional[int] = setting(None, low=1)
    num_parallel_environments: int = setting(1, low=1)
    actor_fc_layers: Tuple[int, ...] = setting((64, 64), low=1)
    value_fc_layers: Tuple[int, ...] = setting((64, 64), low=1)
    learning_rate: float = setting(3e-4, low=0, low_open=True)
    linear_lr_decay: bool = True
    collect_sequence_length: int = setting(2048, low=1)
    minibatch_size: int = setting(64, low=1)
    num_epochs: int = setting(10, low=1)
    importance_ratio_clipping: float = setting(0.2, low=0)
    entropy_regularization: float = setting(0.0, low=0)
    value_pred_loss_coef: float = setting(0.5, low=0)
    lambda_value: float = setting(0.95, low=0, high=1)
    discount_factor: float = setting(0.99, low=0, high=1)
    normalize_observations: bool = True
    normalize_rewards: bool = True
    gradient_clipping: float = setting(0.5, low=0)
    weight_decay: float = setting(0.0, low=0)
    weight_decay_mode: str = 'original'  # checks.WEIGHT_DECAY_MODES
    # 'original' mode only: True puts TF-Agents' L2 term wd * sum(w^2) over
    # the kernels in the loss, as the original (gradient 2 * wd * w, clipped
    # with the loss gradient); False has the optimizer add 2 * wd * w to
    # the clipped gradient. The previous default, wd * w added by the
    # optimizer, is False with half the weight decay.
    weight_decay_in_loss: bool = True
    adam_epsilon: float = setting(ADAM_EPSILON, low=0, low_open=True)
    # Orthogonal hidden kernels, value output U(+-0.03), initial std 0.35,
    # as the original ('tf_agents': the previous networks.PPO_INITIALIZERS).
    network_initializer: str = 'orthogonal'
    value_activation: str = 'relu'  # the original's; 'tanh' previously
    width: float = setting(1.0, low=0, low_open=True)
    sparse_output_layer: bool = False
    train_mode_actor: str = 'dense'
    train_mode_value: str = 'dense'
    actor_value_sparsities_str: str = ''

    @property
    def batch_steps(self) -> int:
        return self.collect_sequence_length * self.num_parallel_environments

    @property
    def minibatches(self) -> int:
        return self.batch_steps // self.minibatch_size

    @property
    def iterations(self) -> int:
        if self.num_iterations is not None:
            return self.num_iterations
        return max(1, math.ceil(self.num_environment_steps / self.batch_steps))

    def check(self) -> None:
        checks.check_weight_decay_mode(self.weight_decay_mode)
        networks.check_ppo_initializer(self.network_initializer,
                                       'train_eval.network_initializer')
        if self.value_activation not in VALUE_ACTIVATIONS:
            raise ValueError(
                f'train_eval.value_activation is {self.value_activation!r}; '
                f'allowed: {", ".join(VALUE_ACTIVATIONS)}.')
        checks.check_train_modes(('train_mode_actor', self.train_mode_actor),
                                 ('train_mode_value', self.train_mode_value))
        if self.minibatch_size > self.batch_steps:
            raise ValueError(
                f'train_eval.minibatch_size {self.minibatch_size} exceeds the '
                f'{self.batch_steps} steps collected per iteration.')
        checks.parse_float_list(self.actor_value_sparsities_str,
                                'train_eval.actor_value_sparsities_str', 2)


class NumpyCollectPolicy:
    """PPO's collect policy in numpy, for one batch of steps at a time.

    A batch-1 call of the TF-Agents collect policy costs about 1 ms of
    dispatch on a CPU, against tens of microseconds of arithmetic for 64x64
    networks; collection dominated PPO's loop. The weights (masked kernels
    are exact zeros) and the observation normaliser's statistics change
    only in the update phase, so `refresh()` reads them once per iteration.
    It computes what the TF policy computes (tested against it): normalised
    observations, the action distribution's parameters, a sample (no
    clipping, as TF-Agents' PPO collect policy) and the value prediction.
    """

    def __init__(self, agent):
        self._agent = agent
        actor_layers = list(agent.actor_net.layers)
        self._head = actor_layers[-1]
        self._trunk_layers = actor_layers[:-1]
        self._value_layers = [
            layer for layer in tfa_private.value_net(agent).layers
            if not isinstance(layer, tf.keras.layers.Reshape)]
        self._discrete = isinstance(
            self._head,
            categorical_projection_network.CategoricalProjectionNetwork)
        spec = agent.action_spec
        self._action_dtype = spec.dtype.as_numpy_dtype
        self._low = np.broadcast_to(spec.minimum, spec.shape).astype(
            np.float32)
        self._high = np.broadcast_to(spec.maximum, spec.shape).astype(
            np.float32)
        self.refresh()

    def refresh(self) -> None:
        """Reads the current weights and normaliser statistics."""
        agent, head = self._agent, self._head
        self._trunk = [numpy_inference.dense_weights(layer)
                       for layer in self._trunk_layers]
        if self._discrete:
            self._out = [numpy_inference.dense_weights(
                tfa_private.projection_layer(head))]
        else:
            self._out = [numpy_inference.dense_weights(
                tfa_private.means_projection_layer(head))]
            bias = tfa_private.std_bias_layer(head).bias.numpy()
            self._std = np.log1p(np.exp(bias)).astype(np.float32)  # softplus
        self._value = [numpy_inference.dense_weights(layer)
                       for layer in self._value_layers]
        normalizer = tfa_private.observation_normalizer(agent)
        self._normalize = None
        if normalizer is not None:
            mean, variance = tfa_private.normalizer_mean_and_variance(
                normalizer)
            mean = tf.nest.flatten(mean)[0].numpy()
            scale = 1.0 / np.sqrt(tf.nest.flatten(variance)[0].numpy() + 1e-3)
            self._normalize = (mean.astype(np.float32),
                               scale.astype(np.float32))

    def __call__(self, observation: np.ndarray,
                 rng: np.random.Generator) -> Tuple[np.ndarray, Dict]:
        """Actions and policy info for a batch of observations."""
        x = np.asarray(observation, np.float32)
        if self._normalize is not None:
            mean, scale = self._normalize
            x = np.clip((x - mean) * scale, -5.0, 5.0)
        features = numpy_inference.mlp(self._trunk, x)
        out = numpy_inference.mlp(self._out, features)
        value = numpy_inference.mlp(self._value, x)[..., 0]
        if self._discrete:
            shifted = np.exp(out - out.max(axis=-1, keepdims=True))
            cumulative = np.cumsum(
                shifted / shifted.sum(-1, keepdims=True), -1)
            draws = rng.random((len(out), 1))
            action = (draws < cumulative).argmax(-1).astype(self._action_dtype)
            params = {'logits': out.astype(np.float32)}
        else:
            loc = self._low + (np.tanh(out) + 1.0) * 0.5 * (
                self._high - self._low)  # tanh_squash_to_spec
            loc = loc.astype(np.float32)
            scale = np.broadcast_to(self._std, loc.shape).astype(np.float32)
            noise = rng.standard_normal(loc.shape).astype(np.float32)
            action = (loc + scale * noise).astype(self._action_dtype)
            # TF-Agents builds MultivariateNormalDiag for vector actions.
            multivariate = tfa_private.is_multivariate(self._head)
            scale_key = 'scale_diag' if multivariate else 'scale'
            params = {'loc': loc, scale_key: scale}
        return action, {'dist_params': params,
                        'value_prediction': value.astype(np.float32)}


class Ppo(base.Algorithm):
    """PPO: actor and value networks under one masked optimizer."""

    name = 'ppo'
    loop = base.ON_POLICY
    Settings = PpoSettings
    # The original's weight decay: TF-Agents PPO's policy and value L2
    # regularisation wd * sum(w^2) of every kernel, gradient 2 * wd * w. By
    # default it is that term of the agent's loss (`weight_decay_in_loss`);
    # this is the optimizer-side equivalent.
    original_decay = ('kernels', 2.0)

    def __init__(self, settings: PpoSettings, observation_spec, action_spec,
                 seed: int):
        super().__init__(settings, observation_spec, action_spec, seed)
        inputs = observation_spec.shape.num_elements()
        outputs = (int(action_spec.maximum - action_spec.minimum + 1)
                   if action_spec.dtype.is_integer
                   else action_spec.shape.num_elements())
        widths = self.widths(
            {'actor': [inputs, *settings.actor_fc_layers, outputs],
             'value': [inputs, *settings.value_fc_layers, 1]},
            {'actor': settings.width, 'value': settings.width})
        def build_actor(extra):
            return networks.create_ppo_actor_network(
                observation_spec, action_spec, settings.actor_fc_layers,
                self.train_mode(settings.train_mode_actor),
                settings.sparse_output_layer, widths['actor'],
                initializer=settings.network_initializer,
                wrap_kwargs={**self.sparse_method.wrap_kwargs('actor'),
                             **extra})

        def build_value(extra):
            return networks.create_value_network(
                observation_spec, settings.value_fc_layers,
                self.train_mode(settings.train_mode_value),
                settings.sparse_output_layer, widths['value'],
                activation=settings.value_activation,
                initializer=settings.network_initializer,
                wrap_kwargs={**self.sparse_method.wrap_kwargs('value'),
                             **extra})

        self.networks = {
            name: self.build_network(build, observation_spec, name,
                                     seeding.derive(seed, 'masks', name))
            for name, build in (('actor', build_actor),
                                ('value', build_value))}
        actor, value = self.networks['actor'], self.networks['value']
        learning_rate = settings.learning_rate
        if settings.linear_lr_decay:
            learning_rate = tf.keras.optimizers.schedules.PolynomialDecay(
                learning_rate, settings.iterations * settings.num_epochs *
                settings.minibatches, end_learning_rate=0.0, power=1.0)
        # The original's L2 term in the loss, or a decay in the optimizer.
        l2 = (settings.weight_decay if settings.weight_decay_in_loss and
              settings.weight_decay_mode == 'original' else 0.0)
        optimizer = optimizers.make_optimizer(
            learning_rate, 0.0 if l2 else settings.weight_decay,
            settings.adam_epsilon, settings.weight_decay_mode,
            [actor, value], self.original_decay)
        self.agent = sparse_agents.SparsePPOAgent(
            ts.time_step_spec(observation_spec), action_spec,
            optimizer=optimizer, actor_net=actor, value_net=value,
            updater=self.sparse_method.make_updater(), greedy_eval=True,
            policy_l2_reg=l2, value_function_l2_reg=l2,
            shared_vars_l2_reg=l2,
            importance_ratio_clipping=settings.importance_ratio_clipping,
            lambda_value=settings.lambda_value,
            discount_factor=settings.discount_factor,
            entropy_regularization=settings.entropy_regularization,
            value_pred_loss_coef=settings.value_pred_loss_coef, num_epochs=1,
            use_gae=True, use_td_lambda_return=True,
            normalize_rewards=settings.normalize_rewards,
            normalize_observations=settings.normalize_observations,
            gradient_clipping=settings.gradient_clipping,
            compute_value_and_advantage_in_train=False,
            update_normalizers_in_train=False,
            train_step_counter=self.train_step, seed=seed)
        self.agent.initialize()
        self.masked_optimizers = {'': tfa_private.optimizer(self.agent)}
        self._compile()

    @property
    def eval_policy(self):
        return self.agent.policy  # greedy_eval=True: already the mode

    def _compile(self) -> None:
        agent = self.agent
        self.collect_policy = NumpyCollectPolicy(agent)

        @tf.function(autograph=False)
        def prepare(experience):
            """GAE advantages and returns over whole sequences, flattened to
            transitions [N * T, 1, ...] (the last step only bootstraps)."""
            processed = agent.preprocess_sequence(experience)
            return tf.nest.map_structure(
                lambda t: tf.reshape(t[:, :-1], tf.concat(
                    [[-1, 1], tf.shape(t)[2:]], 0)), processed)

        @tf.function(autograph=False)
        def train_minibatches(transitions, batches):
            """One train step per row of `batches` (minibatch indices), in
            order, in one call: Python dispatch per minibatch cost as much
            as the step itself for PPO's small networks. Returns the last
            step's loss info."""
            def body(i):
                with tf.control_dependencies([agent.train(self.minibatch(
                        transitions, batches[i])).loss]):
                    return [i + 1]

            count = tf.shape(batches)[0]
            done = tf.while_loop(lambda i: i < count - 1, body, [0],
                                 parallel_iterations=1)
            with tf.control_dependencies(done):
                return agent.train(self.minibatch(transitions,
                                                  batches[count - 1]))

        @tf.function(autograph=False)
        def update_normalizers(experience):
            agent.update_observation_normalizer(experience.observation)
            agent.update_reward_normalizer(experience.reward)

        self.prepare = prepare
        self.train_minibatches = train_minibatches
        self.update_normalizers = update_normalizers

    def minibatch(self, transitions, indices):
        """The minibatch of prepared transitions a train step sees."""
        return tf.nest.map_structure(lambda t: tf.gather(t, indices),
                                     transitions)

    def per_example_loss(self, batch) -> tf.Tensor:
        """PPO's loss of each transition of a prepared minibatch.

        TF-Agents' `get_loss` averages per-example terms weighted by
        `weights` (clipped objective, value error, entropy: all linear in
        the weights), so the loss of example i is B * dL/dw_i at w = 1. This
        keeps TF-Agents' own loss, with the inputs its `_train` derives from
        the minibatch (old log-probabilities, advantages normalised over it).
        The weight-independent L2 term is added as l2 / B per example.
        """
        agent = self.agent
        experience = tfa_private.as_trajectory(agent, batch)
        weights = tf.ones(tf.shape(experience.reward))
        old_parameters = experience.policy_info['dist_params']
        old_distribution = ppo_utils.distribution_from_spec(
            tfa_private.action_distribution_spec(agent), old_parameters,
            legacy_distribution_network=isinstance(
                agent.actor_net, network.DistributionNetwork))
        old_log_probs = common.log_probability(
            old_distribution, experience.action, agent.action_spec)
        time_steps = ts.TimeStep(experience.step_type, experience.reward,
                                 experience.discount, experience.observation)
        advantages = tfa_private.normalize_advantages(
            experience.policy_info['advantage'], variance_epsilon=1e-8)
        with tf.GradientTape() as tape:
            tape.watch(weights)
            loss_info = agent.get_loss(
                time_steps, experience.action, old_log_probs,
                experience.policy_info['return'], advantages, old_parameters,
                weights * ppo_utils.make_trajectory_mask(experience),
                agent.train_step_counter, debug_summaries=False,
                old_value_predictions=experience.policy_info[
                    'value_prediction'], training=True)
        per_example = tape.gradient(loss_info.loss, weights)
        size = tf.cast(tf.size(weights), tf.float32)
        # The L2 term (in the loss by default) counts l2 / B per example, as
        # the original's `total_loss_per_sample`.
        return (tf.reshape(per_example, [-1]) * size +
                loss_info.extra.l2_regularization_loss / size)

    def plasticity_inputs(self, batch) -> Dict[str, object]:
        """Observations as the networks see them (normalized, if the
        agent normalizes them)."""
        observation = tf.constant(batch['observation'], tf.float32)
        normalizer = tfa_private.observation_normalizer(self.agent)
        if normalizer is not None:
            observation = normalizer.normalize(observation)
        return {name: observation for name in self.networks}

    def training_flops(self) -> float:
        """Per iteration: every collected step runs both networks forward;
        every minibatch example trains both (3x forward)."""
        settings = self.settings
        network_flops = sum(sparse_layers.network_stats(n).flops
                            for n in self.networks.values())
        return float(settings.batch_steps * network_flops +
                     settings.num_epochs * settings.minibatches *
                     settings.minibatch_size * 3 * network_flops)

    def write_summaries(self) -> None:
        tf.summary.scalar(
            'drop_fraction',
            tfa_private.optimizer(self.agent).updater.last_drop_fraction)
