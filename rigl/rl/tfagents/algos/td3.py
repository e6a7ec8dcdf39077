"""TD3 (Fujimoto et al. 2018) with sparse actor, critics and targets: TD3,
Static-TD3, DS-TD3 (Sokar et al. 2022) and ANF-TD3 (Grooten et al. 2023).

Defaults are ANF's TD3 settings: (256, 256) networks, Adam lr 1e-3, batch
100, tau 0.005, target policy noise 0.2 clipped at 0.5, actor and targets
updated every 2 steps, Gaussian exploration noise 0.1, 25k random steps,
weight decay 2e-4 (2e-4 * w added to every gradient, as ANF's MaskAdam),
1M steps. The actor's mask updater counts the actor's own update steps.
"""

import dataclasses
from typing import Tuple

import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from rigl.rl.tfagents import networks
from rigl.rl.tfagents import sparse_agents
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.algos import base
from rigl.rl.tfagents.run.settings import setting

POSITIVE = dict(low=0, low_open=True)


@dataclasses.dataclass(frozen=True)
class Td3Settings(base.OffPolicySettings):
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
    exploration_noise_std: float = setting(0.1, low=0)
    target_policy_noise: float = setting(0.2, low=0)
    target_policy_noise_clip: float = setting(0.5, low=0)
    reward_scale_factor: float = 1.0
    train_mode_actor: str = 'dense'
    train_mode_value: str = 'dense'
    sparse_output_layer: bool = False
    target_sparsity: str = 'mask'
    width: float = setting(1.0, **POSITIVE)
    weight_decay: float = setting(2e-4, low=0)
    # base.WEIGHT_DECAY_MODES; TD3's original is ANF's MaskAdam.
    weight_decay_mode: str = 'original'

    def check(self) -> None:
        super().check()
        base.check_weight_decay_mode(self.weight_decay_mode)
        base.check_train_modes(('train_mode_actor', self.train_mode_actor),
                               ('train_mode_value', self.train_mode_value))
        base.check_target_sparsity(self.target_sparsity)


class Td3(base.OffPolicyAlgorithm):
    """TD3: deterministic actor, two critics, three target networks."""

    name = 'td3'
    Settings = Td3Settings

    def __init__(self, settings: Td3Settings, observation_spec, action_spec,
                 seed: int):
        super().__init__(settings, observation_spec, action_spec, seed)
        named = self._build_actor_critics(networks.create_td3_actor_network)
        actor, critics = named['actor'], [named['critic_1'],
                                          named['critic_2']]
        self.agent = sparse_agents.SparseTd3Agent(
            ts.time_step_spec(observation_spec), action_spec,
            actor_network=actor, critic_network=critics[0],
            critic_network_2=critics[1],
            actor_optimizer=self.optimizer(settings.actor_learning_rate,
                                           [actor]),
            critic_optimizer=self.optimizer(settings.critic_learning_rate,
                                            critics),
            exploration_noise_std=settings.exploration_noise_std,
            target_update_tau=settings.target_update_tau,
            target_update_period=settings.target_update_period,
            actor_update_period=settings.actor_update_period,
            target_policy_noise=settings.target_policy_noise,
            target_policy_noise_clip=settings.target_policy_noise_clip,
            gamma=settings.gamma,
            reward_scale_factor=settings.reward_scale_factor,
            train_step_counter=self.train_step, seed=seed,
            target_sparsity=settings.target_sparsity)
        self._finish_actor_critic(named)

    @property
    def eval_policy(self):
        return self.agent.policy  # the deterministic actor

    def explore(self, time_step):
        """The actor's action plus N(0, exploration_noise_std^2) noise drawn
        with seeds from the checkpointed `sample_rng`, clipped to bounds."""
        action = self.agent.policy.action(time_step).action
        seed = tf.cast(self.agent.sample_rng.make_seeds(1)[:, 0], tf.int32)
        noise = tf.random.stateless_normal(tf.shape(action), seed) * (
            self.settings.exploration_noise_std)
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
