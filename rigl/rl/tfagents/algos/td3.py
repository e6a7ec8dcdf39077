"""TD3 (Fujimoto et al. 2018) with sparse actor, critics and targets: TD3,
Static-TD3, DS-TD3 (Sokar et al. 2022) and ANF-TD3 (Grooten et al. 2023).

Defaults are ANF's TD3 settings: (256, 256) networks, Adam lr 1e-3, batch
100, tau 0.005, actor and targets updated every 2 steps, 25k random steps,
weight decay 2e-4 (2e-4 * w added to every gradient, as ANF's MaskAdam),
1M steps, and as ANF's code (github.com/bramgrooten/automatic-noise-filtering):

- critic loss: squared TD error of each critic (`F.mse_loss`,
  `algorithms/td3_based/anf_td3.py:299`), not TF-Agents' Huber default;
- exploration noise N(0, (0.1 * max_action)^2) (`algorithms/run_td3.py:46`),
  target policy noise 0.2 * max_action clipped at 0.5 * max_action
  (`utils/utils.py:379-380`), and the noisy target action clamped to the
  action bounds (`anf_td3.py:291`);
- mask update schedules (`mask_updater.update_freq`, `begin_step`,
  `last_update_step`) in train steps for the delayed actor too
  (`anf_td3.py:339`: every 1000 train steps = 500 actor steps).

Each has a `train_eval` setting restoring the previous behaviour. RLx2-TD3
(Tan et al. 2023, `configs/td3_rlx2_config.gin`) adds separate actor and
critic sparsities (`actor_critic_sparsities_str`), the actor's own mask
schedule (`actor_mask_steps = 'actor_steps_train_horizon'`), a delayed
n-step target and a dynamic-capacity replay (`algos.rlx2`).
"""

import dataclasses
from typing import Tuple

import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import nest_utils

from rigl.rl.tfagents import networks
from rigl.rl.tfagents import sparse_agents
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import tf_agents_private as tfa_private
from rigl.rl.tfagents.algos import actor_critic
from rigl.rl.tfagents.algos import checks
from rigl.rl.tfagents.algos import rlx2
from rigl.rl.tfagents.algos.dqn import TD_LOSSES
from rigl.rl.tfagents.run.settings import setting

POSITIVE = dict(low=0, low_open=True)
# What the mask-update schedule of the delayed actor counts: 'train_steps'
# (ANF), the actor's own optimizer steps ('actor_steps', the old default),
# or the actor's own steps between updates (`update_freq`) with
# `begin_step` and `last_update_step` (the cosine's horizon) in train steps
# ('actor_steps_train_horizon', RLx2: its actor's DST_Scheduler counts
# actor steps and ends at T_end / policy_freq, `RLx2_TD3/TD3.py:45`).
ACTOR_MASK_STEPS = ('train_steps', 'actor_steps', 'actor_steps_train_horizon')


@dataclasses.dataclass(frozen=True)
class Td3Settings(rlx2.ReplaySettings):
    """TD3's settings (ANF's defaults; eval every 5000 steps, 5 episodes)."""
    initial_collect_steps: int = setting(25000, low=1)
    batch_size: int = setting(100, low=1)
    eval_interval: int = setting(5000, low=1)
    eval_episodes: int = setting(5, low=1)
    actor_fc_layers: Tuple[int, ...] = setting((256, 256), low=1)
    critic_joint_fc_layers: Tuple[int, ...] = setting((256, 256), low=1)
    actor_learning_rate: float = setting(1e-3, **POSITIVE)
    critic_learning_rate: float = setting(1e-3, **POSITIVE)
    gamma: float = setting(0.99, low=0, high=1)
    target_update_tau: float = setting(0.005, low=0, high=1, low_open=True)
    target_update_period: int = setting(2, low=1)
    actor_update_period: int = setting(2, low=1)
    # The three noise sizes are fractions of the action bound when
    # `noise_relative_to_bound` (ANF), absolute values otherwise.
    exploration_noise_std: float = setting(0.1, low=0)
    target_policy_noise: float = setting(0.2, low=0)
    target_policy_noise_clip: float = setting(0.5, low=0)
    # True: noise sizes times each action dimension's half-range
    # (max - min) / 2, ANF's max_action for its symmetric bounds. False:
    # absolute (the old default).
    noise_relative_to_bound: bool = True
    # Clamp the noisy target action to the action bounds, as ANF (False:
    # unclipped, TF-Agents' Td3Agent and the old default).
    clip_target_action: bool = True
    # Each critic's TD loss: 'squared' (ANF's MSE) or 'huber' (TF-Agents'
    # default and the old one).
    td_errors_loss: str = 'squared'
    # What the actor's mask-update schedule counts (`ACTOR_MASK_STEPS`).
    actor_mask_steps: str = 'train_steps'
    # 'actor,critic' sparsities replacing init_masks.sparsity per network
    # (RLx2: '0.95,0.91'); '' for one sparsity.
    actor_critic_sparsities_str: str = ''
    reward_scale_factor: float = 1.0
    train_mode_actor: str = 'dense'
    train_mode_value: str = 'dense'
    sparse_output_layer: bool = False
    target_sparsity: str = 'mask'
    width: float = setting(1.0, **POSITIVE)
    weight_decay: float = setting(2e-4, low=0)
    # checks.WEIGHT_DECAY_MODES; TD3's original is ANF's MaskAdam.
    weight_decay_mode: str = 'original'

    def check(self) -> None:
        super().check()
        checks.check_weight_decay_mode(self.weight_decay_mode)
        checks.check_train_modes(('train_mode_actor', self.train_mode_actor),
                                 ('train_mode_value', self.train_mode_value))
        checks.check_target_sparsity(self.target_sparsity)
        checks.parse_float_list(self.actor_critic_sparsities_str,
                                'train_eval.actor_critic_sparsities_str', 2)
        for name, allowed in (('td_errors_loss', tuple(TD_LOSSES)),
                              ('actor_mask_steps', ACTOR_MASK_STEPS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f'train_eval.{name} is {value!r}; allowed: '
                                 f'{", ".join(allowed)}.')


def action_bound(action_spec) -> np.ndarray:
    """Half-range (max - min) / 2 of each action dimension: ANF's
    `max_action` for symmetric bounds +-max_action."""
    return rlx2.half_range(action_spec)


def actor_sparse_method(method, settings: Td3Settings):
    """The sparse method of the delayed actor's optimizer, which steps
    every `actor_update_period` train steps (`ACTOR_MASK_STEPS`)."""
    period = settings.actor_update_period
    if settings.actor_mask_steps == 'train_steps':
        return method.counted_every(period)
    if settings.actor_mask_steps == 'actor_steps':
        return method
    # RLx2: updates every update_freq actor steps; begin and end (the
    # cosine's horizon) at the same train steps as the critics'.
    return method.counted_every(period, keep_update_freq=True)


class AnfTd3Agent(sparse_agents.SparseTd3Agent):
    """`SparseTd3Agent` with ANF's target policy smoothing.

    The target noise N(0, (target_policy_noise * scale)^2) is clipped at
    +-target_policy_noise_clip * scale and the noisy target action clamped
    to the action bounds (`anf_td3.py:290-291`) when `clip_target_action`.

    Args:
        noise_scale: per action dimension, the unit of both noise sizes
            (ANF: the action bound; ones: TF-Agents' absolute sizes).
        clip_target_action: clamp the noisy target action to the bounds.
        Other arguments are `SparseTd3Agent`'s.
    """

    def __init__(self, *args, noise_scale: np.ndarray,
                 clip_target_action: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._noise_scale = np.asarray(noise_scale, np.float32)
        self._clip_target_action = clip_target_action

    def smoothed_target_actions(self, target_actions: tf.Tensor) -> tf.Tensor:
        """Target actions plus clipped Gaussian noise, clamped to the bounds
        if configured. The noise is drawn with a seed from the agent's
        checkpointed `sample_rng` (TF-Agents draws it statefully), so a
        resumed run draws what an uninterrupted one would."""
        scale = tf.constant(self._noise_scale, target_actions.dtype)
        seed = tf.cast(self.sample_rng.make_seeds(1)[:, 0], tf.int32)
        noise = tf.random.stateless_normal(
            tf.shape(target_actions), seed, dtype=target_actions.dtype) * (
            tfa_private.target_policy_noise(self) * scale)
        clip = tfa_private.target_policy_noise_clip(self) * scale
        noisy = target_actions + tf.clip_by_value(noise, -clip, clip)
        if self._clip_target_action:
            spec = self.action_spec
            noisy = tf.clip_by_value(
                noisy, tf.constant(spec.minimum, noisy.dtype),
                tf.constant(spec.maximum, noisy.dtype))
        return noisy

    def critic_loss(self, time_steps, actions, next_time_steps,
                    weights=None, training: bool = False) -> tf.Tensor:
        """TF-Agents' TD3 critic loss (sum of both critics' TD losses,
        batch mean) with `smoothed_target_actions`."""
        with tf.name_scope('critic_loss'):
            target_actor = tfa_private.target_actor_network(self)
            target_actions, _ = target_actor(
                next_time_steps.observation, next_time_steps.step_type,
                training=training)
            target_actions = self.smoothed_target_actions(target_actions)
            target_q = [network((next_time_steps.observation,
                                 target_actions), next_time_steps.step_type,
                                training=False)[0]
                        for network in tfa_private.target_critic_networks(
                            self)]
            td_targets = tf.stop_gradient(
                tfa_private.reward_scale_factor(self) *
                next_time_steps.reward + tfa_private.gamma(self) *
                next_time_steps.discount * tf.minimum(*target_q))
            td_errors_loss_fn = tfa_private.td_errors_loss_fn(self)
            loss = 0.0
            for network in tfa_private.critic_networks(self):
                predicted, _ = network((time_steps.observation, actions),
                                       time_steps.step_type,
                                       training=training)
                loss += td_errors_loss_fn(td_targets, predicted)
            if nest_utils.is_batched_nested_tensors(
                    time_steps, self.time_step_spec, num_outer_dims=2):
                loss = tf.reduce_sum(loss, axis=range(1, loss.shape.rank))
            if weights is not None:
                loss *= weights
            return tf.reduce_mean(loss)


class Td3(rlx2.PolicyActionsMixin, actor_critic.ActorCriticAlgorithm):
    """TD3: deterministic actor, two critics, three target networks."""

    name = 'td3'
    Settings = Td3Settings

    def __init__(self, settings: Td3Settings, observation_spec, action_spec,
                 seed: int):
        super().__init__(settings, observation_spec, action_spec, seed)
        named = self._build_actor_critics(networks.create_td3_actor_network)
        actor, critics = named['actor'], [named['critic_1'],
                                          named['critic_2']]
        self.noise_scale = (action_bound(action_spec)
                            if settings.noise_relative_to_bound else
                            np.ones(action_spec.shape, np.float32))
        # ANF's actor changes masks every update_freq train steps, RLx2's
        # every update_freq of its own steps; its optimizer counts its own
        # (delayed) steps.
        actor_method = actor_sparse_method(self.sparse_method, settings)
        self.agent = AnfTd3Agent(
            ts.time_step_spec(observation_spec), action_spec,
            actor_network=actor, critic_network=critics[0],
            critic_network_2=critics[1],
            actor_optimizer=self.optimizer(settings.actor_learning_rate,
                                           [actor]),
            critic_optimizer=self.optimizer(settings.critic_learning_rate,
                                            critics),
            actor_updater=actor_method.make_updater(),
            critic_updater=self.sparse_method.make_updater(),
            exploration_noise_std=settings.exploration_noise_std,
            target_update_tau=settings.target_update_tau,
            target_update_period=settings.target_update_period,
            actor_update_period=settings.actor_update_period,
            td_errors_loss_fn=TD_LOSSES[settings.td_errors_loss],
            target_policy_noise=settings.target_policy_noise,
            target_policy_noise_clip=settings.target_policy_noise_clip,
            noise_scale=self.noise_scale,
            clip_target_action=settings.clip_target_action,
            gamma=settings.gamma,
            reward_scale_factor=settings.reward_scale_factor,
            train_step_counter=self.train_step, seed=seed,
            target_sparsity=settings.target_sparsity)
        self._init_policy_actions()
        self._finish_actor_critic(named)

    @property
    def eval_policy(self):
        return self.agent.policy  # the deterministic actor

    def explore(self, time_step):
        """The actor's action plus N(0, (exploration_noise_std * scale)^2)
        noise (scale: `noise_scale`) drawn with seeds from the checkpointed
        `sample_rng`, clipped to the bounds (`run_td3.py:45-47`)."""
        action = self.agent.policy.action(time_step).action
        self._record_policy_action(action)  # for the dynamic replay
        seed = tf.cast(self.agent.sample_rng.make_seeds(1)[:, 0], tf.int32)
        std = tf.constant(self.settings.exploration_noise_std *
                          self.noise_scale, action.dtype)
        noise = tf.random.stateless_normal(tf.shape(action), seed,
                                           dtype=action.dtype) * std
        spec = self.action_spec
        return tf.clip_by_value(action + noise, spec.minimum, spec.maximum)

    def training_flops(self) -> float:
        """RigL-paper convention (training a network: 3x its forward pass).
        Per example and train step: both critics trained, the target actor
        and both target critics forward on the next state; every
        `actor_update_period` steps the actor trained through one critic
        (critic forward + input gradient: 2x)."""
        flops = {name: sparse_layers.network_stats(network).flops
                 for name, network in self.networks.items()}
        critic = flops['critic_1'] + flops['critic_2']
        per_example = (3 * critic + flops['actor'] + critic + (
            3 * flops['actor'] + flops['critic_1'] * 2) /
            self.settings.actor_update_period)
        return float(self.settings.batch_size * per_example)
