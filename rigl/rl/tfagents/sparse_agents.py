"""TF-Agents agents whose train step keeps their networks sparse.

Each subclass only (1) wraps its optimizers in `MaskedOptimizer`, which masks
gradients, re-zeroes masked weights and runs the mask updater inside the
train step, and (2) re-zeroes the masked weights of target networks after a
mask change (TF-Agents' soft update copies non-trainable variables, the masks,
with tau = 1, but blends kernels, so newly masked target weights would only
decay towards 0).
"""

import logging
from typing import Optional

from absl import logging as absl_logging
import tensorflow as tf
from tf_agents.agents.ppo import ppo_clip_agent
from tf_agents.agents.sac import sac_agent

from rigl.rl.tfagents import mask_updaters
from rigl.rl.tfagents import sparse_layers


class SparseSacAgent(sac_agent.SacAgent):
    """SAC with a sparse actor and twin critics, each with a mask updater.

    Build `critic_network_2` yourself (with its own masks): TF-Agents would
    otherwise copy the first critic, weights and masks included.

    Args:
        actor_updater: mask updater of the actor (gin `mask_updater()` if None).
        critic_updater: mask updater of both critics (likewise).
        Other arguments are `SacAgent`'s.
    """

    def __init__(self, time_step_spec, action_spec, critic_network,
                 actor_network, actor_optimizer, critic_optimizer,
                 alpha_optimizer, critic_network_2=None,
                 actor_updater: Optional[mask_updaters.MaskUpdater] = None,
                 critic_updater: Optional[mask_updaters.MaskUpdater] = None,
                 train_step_counter: Optional[tf.Variable] = None, **kwargs):
        if train_step_counter is None:
            train_step_counter = tf.compat.v1.train.get_or_create_global_step()
        critics = [critic_network] + (
            [critic_network_2] if critic_network_2 is not None else [])
        super().__init__(
            time_step_spec, action_spec, critic_network=critic_network,
            actor_network=actor_network,
            actor_optimizer=mask_updaters.MaskedOptimizer(
                actor_optimizer, [actor_network], train_step_counter,
                actor_updater),
            critic_optimizer=mask_updaters.MaskedOptimizer(
                critic_optimizer, critics, train_step_counter, critic_updater),
            alpha_optimizer=alpha_optimizer, critic_network_2=critic_network_2,
            train_step_counter=train_step_counter, **kwargs)

    @property
    def target_networks(self):
        return [self._target_critic_network_1, self._target_critic_network_2]

    def _train(self, experience, weights):
        loss_info = super()._train(experience, weights)
        # Masked target weights stay 0 under the soft update unless a critic
        # mask changed since the last target update(s): re-mask only then.
        since_change = (self.train_step_counter -
                        self._critic_optimizer.last_mask_change)
        with tf.control_dependencies(tf.nest.flatten(loss_info)):
            tf.cond(since_change <= self._target_update_period,
                    lambda: sparse_layers.apply_masks(self.target_networks),
                    tf.no_op)
        return loss_info


class _WrappedOptimizerWarningFilter(logging.Filter):
    """Drops PPOAgent's warning about a non-Keras optimizer: MaskedOptimizer
    wraps a Keras optimizer and exposes the learning rate PPO summarises."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(
            'Only tf.keras.optimizers.Optimiers are well supported')


absl_logging.get_absl_logger().addFilter(_WrappedOptimizerWarningFilter())


class SparsePPOAgent(ppo_clip_agent.PPOClipAgent):
    """PPO (clipped objective) with sparse actor and value networks.

    PPO trains both networks with one optimizer, so one `MaskedOptimizer` and
    one mask updater serve both; every minibatch gradient step is a train step
    for the updater and for gradual pruning.

    Args:
        updater: mask updater (gin `mask_updater()` if None).
        Other arguments are `PPOClipAgent`'s.
    """

    def __init__(self, time_step_spec, action_spec, optimizer, actor_net,
                 value_net,
                 updater: Optional[mask_updaters.MaskUpdater] = None,
                 train_step_counter: Optional[tf.Variable] = None, **kwargs):
        if train_step_counter is None:
            train_step_counter = tf.compat.v1.train.get_or_create_global_step()
        super().__init__(
            time_step_spec, action_spec,
            optimizer=mask_updaters.MaskedOptimizer(
                optimizer, [actor_net, value_net], train_step_counter, updater),
            actor_net=actor_net, value_net=value_net,
            train_step_counter=train_step_counter, **kwargs)
