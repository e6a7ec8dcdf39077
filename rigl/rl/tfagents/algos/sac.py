"""SAC (Haarnoja et al. 2018) with sparse actor and critics.

Settings are `train_eval.<name>` gin bindings (see `SacSettings`); the
sparsity of each network comes from the run's sparse method
(`sparsity.spec.SparseMethod`, per-network overrides from
`actor_critic_sparsities_str`). RLx2-SAC (Tan et al. 2023,
`configs/sac_rlx2_config.gin`) adds a delayed n-step target and a
dynamic-capacity replay (`algos.rlx2`).
"""

import dataclasses
import functools
import math
from typing import Optional, Tuple

import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from rigl.rl.tfagents import networks
from rigl.rl.tfagents import sparse_agents
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents import tf_agents_private as tfa_private
from rigl.rl.tfagents.algos import actor_critic
from rigl.rl.tfagents.algos import checks
from rigl.rl.tfagents.algos import rlx2
from rigl.rl.tfagents.run.settings import setting

POSITIVE = dict(low=0, low_open=True)


@dataclasses.dataclass(frozen=True)
class SacSettings(rlx2.ReplaySettings):
    """SAC's settings; defaults are the original suite's MuJoCo config."""
    actor_fc_layers: Tuple[int, ...] = setting((256, 256), low=1)
    critic_joint_fc_layers: Tuple[int, ...] = setting((256, 256), low=1)
    actor_learning_rate: float = setting(3e-4, **POSITIVE)
    critic_learning_rate: float = setting(3e-4, **POSITIVE)
    alpha_learning_rate: float = setting(3e-4, **POSITIVE)
    gamma: float = setting(0.99, low=0, high=1)
    target_update_tau: float = setting(0.005, low=0, high=1, low_open=True)
    target_update_period: int = setting(1, low=1)
    reward_scale_factor: float = 0.1
    # A fixed entropy temperature (ANF: 0.2) instead of tuning it.
    fixed_alpha: Optional[float] = setting(None, low=0, low_open=True)
    target_sparsity: str = 'mask'  # or 'magnitude' (ANF's sparse targets)
    train_mode_actor: str = 'dense'
    train_mode_value: str = 'dense'
    sparse_output_layer: bool = False
    width: float = setting(1.0, **POSITIVE)
    weight_decay: float = setting(0.0, low=0)
    weight_decay_mode: str = 'original'  # checks.WEIGHT_DECAY_MODES
    actor_critic_sparsities_str: str = ''
    actor_critic_widths_str: str = ''
    # Every kernel Glorot-uniform, as the original (networks.INITIALIZERS).
    network_initializer: str = 'glorot_uniform'

    def check(self) -> None:
        super().check()
        networks.check_initializer(self.network_initializer,
                                   'train_eval.network_initializer')
        checks.check_weight_decay_mode(self.weight_decay_mode)
        checks.check_train_modes(('train_mode_actor', self.train_mode_actor),
                                 ('train_mode_value', self.train_mode_value))
        checks.check_target_sparsity(self.target_sparsity)
        checks.parse_float_list(self.actor_critic_sparsities_str,
                                'train_eval.actor_critic_sparsities_str', 2)
        checks.parse_float_list(self.actor_critic_widths_str,
                                'train_eval.actor_critic_widths_str', 2)


class Sac(rlx2.PolicyActionsMixin, actor_critic.ActorCriticAlgorithm):
    """SAC: actor, two critics (own masks each), two target critics."""

    name = 'sac'
    Settings = SacSettings
    actor_output_factor = 2
    # The original's weight decay: Keras L2(weight_decay) kernel regularizers.
    original_decay = ('kernels', 2.0)

    def __init__(self, settings: SacSettings, observation_spec, action_spec,
                 seed: int):
        super().__init__(settings, observation_spec, action_spec, seed)
        widths = checks.parse_float_list(
            settings.actor_critic_widths_str, 'actor_critic_widths_str', 2)
        named = self._build_actor_critics(
            functools.partial(networks.create_sac_actor_network,
                              initializer=settings.network_initializer),
            widths, settings.network_initializer)
        actor, critics = named['actor'], [named['critic_1'],
                                          named['critic_2']]
        self.agent = sparse_agents.SparseSacAgent(
            ts.time_step_spec(observation_spec), action_spec,
            critic_network=critics[0], critic_network_2=critics[1],
            actor_network=actor,
            actor_updater=self.sparse_method.make_updater(),
            critic_updater=self.sparse_method.make_updater(),
            actor_optimizer=self.optimizer(settings.actor_learning_rate,
                                           [actor]),
            critic_optimizer=self.optimizer(settings.critic_learning_rate,
                                            critics),
            # A fixed alpha: its optimizer takes steps of size 0.
            alpha_optimizer=tf.keras.optimizers.SGD(0.0)
            if settings.fixed_alpha else tf.keras.optimizers.Adam(
                settings.alpha_learning_rate),
            initial_log_alpha=math.log(settings.fixed_alpha or 1.0),
            target_update_tau=settings.target_update_tau,
            target_update_period=settings.target_update_period,
            gamma=settings.gamma,
            reward_scale_factor=settings.reward_scale_factor,
            train_step_counter=self.train_step, seed=seed,
            target_sparsity=settings.target_sparsity)
        self._init_policy_actions()
        self._finish_actor_critic(named)

    def explore(self, time_step):
        """A sampled action; with the dynamic replay, the policy's mean
        action (its greedy one) is recorded too, as RLx2-SAC stores
        `dist.mean` (`RLx2_SAC/SAC.py:67-71`)."""
        if self.records_policy_actions:
            self._record_policy_action(
                self.eval_policy.action(time_step).action)
        return super().explore(time_step)

    def training_flops(self) -> float:
        """RigL-paper convention: a trained network costs 3x its forward
        pass per example. Counted: both critics trained, both target critics
        forward on the next state, the actor forward for the next action,
        the actor trained through one critic (forward + input gradient)."""
        flops = {name: sparse_layers.network_stats(network).flops
                 for name, network in self.networks.items()}
        actor = flops['actor']
        critic = flops['critic_1'] + flops['critic_2']
        per_example = 3 * critic + critic + actor + 3 * actor + critic
        return float(self.settings.batch_size * per_example)

    def write_summaries(self) -> None:
        super().write_summaries()
        tf.summary.scalar('alpha', tf.exp(tfa_private.log_alpha(self.agent)))
