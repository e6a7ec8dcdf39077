"""DQN (Mnih et al. 2015) with a sparse Q-network, on classic control or
Atari.

Defaults are the original suite's `dqn_gym_dense_config.gin`: CartPole,
fc (512, 512), batch 128, target network copied every 100 steps, epsilon
0.01, 100k steps, weight decay 1e-6, eval every 2000 steps over 20 episodes.
On Atari (ALE/... ids: uint8 84x84x4 frame stacks) the Q-network is the
Nature-DQN CNN; the Atari configs set the paper's Dopamine-style settings.
"""

import dataclasses
from typing import Tuple

import tensorflow as tf
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import common

from rigl.rl.tfagents import networks
from rigl.rl.tfagents import sparse_agents
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import tf_agents_private as tfa_private
from rigl.rl.tfagents.algos import base
from rigl.rl.tfagents.algos import checks
from rigl.rl.tfagents.run import seeding
from rigl.rl.tfagents.run.settings import setting


TD_LOSSES = {'squared': common.element_wise_squared_loss,
             'huber': common.element_wise_huber_loss}


@dataclasses.dataclass(frozen=True)
class DqnSettings(base.OffPolicySettings):
    """DQN's settings (the original suite's classic-control defaults)."""
    env_name: str = 'CartPole-v0'  # as the original (v1: by binding)
    num_iterations: int = setting(100000, low=1)
    initial_collect_steps: int = setting(1000, low=1)
    batch_size: int = setting(128, low=1)
    replay_capacity: int = setting(100000, low=1)
    eval_interval: int = setting(2000, low=1)
    eval_episodes: int = setting(20, low=1)
    checkpoint_interval: int = setting(10000, low=1)
    log_interval: int = setting(2000, low=1)
    fc_layer_params: Tuple[int, ...] = setting((512, 512), low=1)
    learning_rate: float = setting(1e-3, low=0, low_open=True)
    # Decay the learning rate linearly to 0 at num_iterations (the original
    # keeps it constant; on CartPole-v1 the decay stops the late collapses).
    linear_lr_decay: bool = False
    epsilon_greedy: float = setting(0.01, low=0, high=1)
    # Linear decay from 1 to epsilon_greedy over this many train steps (0:
    # constant epsilon_greedy).
    epsilon_decay_steps: int = setting(0, low=0)
    adam_epsilon: float = setting(1e-7, low=0, low_open=True)
    target_update_tau: float = setting(1.0, low=0, high=1, low_open=True)
    target_update_period: int = setting(100, low=1)
    gamma: float = setting(0.99, low=0, high=1)
    reward_scale_factor: float = 1.0
    gradient_clipping: float = setting(0.0, low=0)  # 0: off
    # TD error loss: 'squared' as the original's classic-control DQN,
    # 'huber' as Nature DQN and the Atari configs.
    td_errors_loss: str = 'squared'
    train_mode: str = 'dense'
    sparse_output_layer: bool = False
    width: float = setting(1.0, low=0, low_open=True)
    weight_decay: float = setting(1e-6, low=0)
    weight_decay_mode: str = 'original'  # checks.WEIGHT_DECAY_MODES
    # Atari conv padding: 'same' (the original's Dopamine network), 'valid'.
    atari_padding: str = 'same'

    def check(self) -> None:
        super().check()
        checks.check_weight_decay_mode(self.weight_decay_mode)
        checks.check_train_modes(('train_mode', self.train_mode))
        if self.atari_padding not in networks.ATARI_PADDINGS:
            raise ValueError(
                f'train_eval.atari_padding is {self.atari_padding!r}; '
                f'allowed: {", ".join(networks.ATARI_PADDINGS)}.')
        if self.td_errors_loss not in TD_LOSSES:
            raise ValueError(
                f'train_eval.td_errors_loss is {self.td_errors_loss!r}; '
                f'allowed: {", ".join(TD_LOSSES)}.')


class Dqn(base.OffPolicyAlgorithm):
    """DQN: a Q-network and its target copy, both masked."""

    name = 'dqn'
    Settings = DqnSettings
    # The original's weight decay: Keras L2(weight_decay) on the hidden
    # kernels (none on the output layer).
    original_decay = ('hidden_kernels', 2.0)

    def __init__(self, settings: DqnSettings, observation_spec, action_spec,
                 seed: int):
        super().__init__(settings, observation_spec, action_spec, seed)
        if not action_spec.dtype.is_integer or action_spec.shape.rank:
            raise ValueError(
                f'DQN needs one discrete action; {settings.env_name} has '
                f'{action_spec}. Use SAC, TD3 or PPO for continuous ones.')
        if observation_spec.shape.rank == 3:  # image stacks
            if settings.keep_active_count:
                raise ValueError(
                    'train_eval.keep_active_count is for MLPs; the Atari Q '
                    'network has conv layers: set the sparsity per width.')
            wrap_kwargs = self.sparse_method.wrap_kwargs('q_network')

            def build(extra):
                return networks.create_atari_q_network(
                    observation_spec, action_spec, settings.train_mode,
                    settings.sparse_output_layer, settings.width,
                    padding=settings.atari_padding,
                    wrap_kwargs={**wrap_kwargs, **extra})
        else:
            num_actions = int(action_spec.maximum - action_spec.minimum + 1)
            width = self.widths(
                {'q_network': [observation_spec.shape.num_elements(),
                               *settings.fc_layer_params, num_actions]},
                {'q_network': settings.width})['q_network']
            wrap_kwargs = self.sparse_method.wrap_kwargs('q_network')

            def build(extra):
                return networks.create_q_network(
                    observation_spec, action_spec, settings.fc_layer_params,
                    self.train_mode(settings.train_mode),
                    settings.sparse_output_layer, width,
                    wrap_kwargs={**wrap_kwargs, **extra})
        q_network = self.build_network(build, observation_spec, 'q_network',
                                       seeding.derive(seed, 'masks', 'q'))
        learning_rate = settings.learning_rate
        if settings.linear_lr_decay:
            learning_rate = tf.keras.optimizers.schedules.PolynomialDecay(
                learning_rate, settings.num_iterations, end_learning_rate=0.0,
                power=1.0)
        self.agent = sparse_agents.SparseDqnAgent(
            ts.time_step_spec(observation_spec), action_spec,
            q_network=q_network, updater=self.sparse_method.make_updater(),
            optimizer=self.optimizer(learning_rate, [q_network],
                                     settings.adam_epsilon),
            epsilon_greedy=settings.epsilon_greedy,
            target_update_tau=settings.target_update_tau,
            target_update_period=settings.target_update_period,
            td_errors_loss_fn=TD_LOSSES[settings.td_errors_loss],
            gamma=settings.gamma,
            reward_scale_factor=settings.reward_scale_factor,
            gradient_clipping=settings.gradient_clipping or None,
            train_step_counter=self.train_step, seed=seed)
        self.agent.initialize()
        self.networks = {'q_network': q_network}
        self.masked_optimizers = {
            'q_network': tfa_private.optimizer(self.agent)}
        self._compile()

    @property
    def eval_policy(self):
        return self.agent.policy  # greedy

    def explore(self, time_step):
        """Epsilon-greedy on the greedy action, with seeds drawn from the
        checkpointed `sample_rng`."""
        greedy = self.agent.policy.action(time_step).action
        seeds = tf.cast(self.agent.sample_rng.make_seeds(2), tf.int32)
        spec = self.action_spec
        shape = tf.shape(greedy)
        random = tf.random.stateless_uniform(
            shape, seeds[:, 0], minval=spec.minimum, maxval=spec.maximum + 1,
            dtype=greedy.dtype)
        explore = tf.random.stateless_uniform(shape, seeds[:, 1]) < (
            self.epsilon())
        return tf.where(explore, random, greedy)

    def epsilon(self) -> tf.Tensor:
        """The exploration rate at the current train step."""
        final = self.settings.epsilon_greedy
        decay = self.settings.epsilon_decay_steps
        if not decay:
            return tf.constant(final)
        progress = tf.minimum(tf.cast(self.train_step, tf.float32) / decay,
                              1.0)
        return 1.0 - (1.0 - final) * progress

    def network_losses(self, batch) -> list:
        return [(['q_network'],
                 lambda: tf.reduce_mean(self.per_example_loss(batch)))]

    def per_example_loss(self, batch) -> tf.Tensor:
        """TD loss of each transition (as the train step computes)."""
        transition = base.transition_batch(batch)
        observation = transition.time_step.observation
        next_observation = transition.next_time_step.observation
        q_values, _ = self.networks['q_network'](observation)
        action = tf.cast(transition.action_step.action, tf.int32)
        q = tf.gather(q_values, action, batch_dims=1)
        next_q, _ = tfa_private.target_q_network(self.agent)(next_observation)
        target = tf.stop_gradient(
            self.settings.reward_scale_factor *
            transition.next_time_step.reward
            + self.settings.gamma * transition.next_time_step.discount *
            tf.reduce_max(next_q, axis=-1))
        return TD_LOSSES[self.settings.td_errors_loss](target, q)

    def training_flops(self) -> float:
        """Per example: the Q-network trained (3x forward) and the target
        network forward on the next observation."""
        q = sparse_layers.network_stats(self.networks['q_network']).flops
        return float(self.settings.batch_size * 4 * q)
