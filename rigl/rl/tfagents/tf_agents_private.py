"""Every access to a private attribute or function of TF-Agents, in one file.

TF-Agents (pinned at 0.19) keeps much of an agent's state in underscore
attributes that no public API exposes: the optimizers our `MaskedOptimizer`
wraps, the target networks we keep sparse, the loss settings our own losses
reuse, PPO's observation normaliser. Each access is one small function here
that says why we need it, and the registries below name them all, per
TF-Agents class, so that `tests/test_tf_agents_private.py` can check them
against the installed tf-agents: after an upgrade it fails, naming the
attribute that moved, instead of a run failing (or silently doing something
else) hours later.

The rule:

1. A read or write of a TF-Agents private attribute or module function goes
   through a function of this module, everywhere in `rigl/`, our agent
   subclasses included (`self._gamma` is `tf_agents_private.gamma(self)`).
2. Where TF-Agents has a public equivalent, use that instead (`agent.policy`,
   `agent.time_step_spec`, `PPOAgent.actor_net`); it is not listed here.
3. Overriding a protected hook in a subclass (`_train`,
   `_get_target_updater`, `_actions_and_log_probs`) and calling
   `super()._hook(...)` from the override is TF-Agents' subclassing API and
   stays in the subclass. The hooks we override are listed in
   `OVERRIDDEN_HOOKS` and tested too: a renamed hook would silently stop
   being called.

Private attributes of Keras optimizers (our Adam fork in
`algos/optimizers.py`, the moment resets in `sparsity/masked_optimizer.py`)
are Keras', not TF-Agents', and are outside this file; so are our own
underscore attributes.
"""

# Reading TF-Agents' protected members is this module's purpose.
# pylint: disable=protected-access

from typing import Any, Callable, Dict, List, Tuple

import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.agents.ppo import ppo_agent

# The tf-agents release every name below was checked against.
TESTED_VERSION = '0.19'

# Instance attributes (and methods) we read or write, per TF-Agents class.
PRIVATE_ATTRIBUTES: Dict[str, Tuple[str, ...]] = {
    'SacAgent': (
        '_actor_optimizer', '_critic_optimizer', '_alpha_optimizer',
        '_target_critic_network_1', '_target_critic_network_2',
        '_critic_loss_weight',
        '_actor_loss_weight', '_td_errors_loss_fn', '_gamma',
        '_reward_scale_factor', '_target_entropy', '_log_alpha',
        '_use_log_alpha_in_alpha_loss', '_train_policy',
        '_target_update_period', '_update_target', '_as_transition',
        '_alpha_loss_debug_summaries'),
    'Td3Agent': (
        '_actor_optimizer', '_critic_optimizer', '_target_actor_network',
        '_critic_network_1', '_critic_network_2', '_target_critic_network_1',
        '_target_critic_network_2', '_td_errors_loss_fn', '_gamma',
        '_reward_scale_factor', '_target_policy_noise',
        '_target_policy_noise_clip', '_target_update_period',
        '_update_target', '_as_transition'),
    'DqnAgent': ('_optimizer', '_target_q_network'),
    'PPOClipAgent': ('_optimizer', '_value_net', '_observation_normalizer',
                     '_action_distribution_spec', '_as_trajectory'),
    'TFPolicy': ('_clip',),
    'TensorNormalizer': ('_get_mean_var_estimates',),
    'NormalProjectionNetwork': ('_means_projection_layer', '_bias',
                                '_is_multivariate'),
    'CategoricalProjectionNetwork': ('_projection_layer',),
    'TanhNormalProjectionNetwork': ('_projection_layer',),
}

# Private module-level functions we call, per TF-Agents module.
PRIVATE_FUNCTIONS: Dict[str, Tuple[str, ...]] = {
    'tf_agents.agents.ppo.ppo_agent': ('_normalize_advantages',),
}

# Protected hooks our agent subclasses override (`sparse_agents`), per
# TF-Agents class.
OVERRIDDEN_HOOKS: Dict[str, Tuple[str, ...]] = {
    'SacAgent': ('_train', '_get_target_updater', '_actions_and_log_probs'),
    'Td3Agent': ('_train', '_get_target_updater'),
    'DqnAgent': ('_train', '_get_target_updater'),
}

Agent = tf_agent.TFAgent


# Optimizers: the `MaskedOptimizer`s our agents hand to TF-Agents, which the
# loops need back (mask summaries, optimizer-state checks, the ReDo and
# plasticity hooks) and the mask updates step.

def optimizer(agent: Agent) -> tf.Module:
    """The one optimizer of a DqnAgent or PPOAgent."""
    return agent._optimizer


def actor_optimizer(agent: Agent) -> tf.Module:
    """The actor's optimizer of a SacAgent or Td3Agent."""
    return agent._actor_optimizer


def critic_optimizer(agent: Agent) -> tf.Module:
    """The critics' optimizer of a SacAgent or Td3Agent."""
    return agent._critic_optimizer


def alpha_optimizer(agent: Agent) -> tf.Module:
    """A SacAgent's temperature optimizer (its variables are created before
    the first train step)."""
    return agent._alpha_optimizer


# Networks: the targets we keep sparse and read in our own losses.

def critic_networks(agent: Agent) -> Tuple[tf.Module, tf.Module]:
    """A Td3Agent's two online critics (ANF's TD3 critic loss)."""
    return agent._critic_network_1, agent._critic_network_2


def target_critic_networks(agent: Agent) -> Tuple[tf.Module, tf.Module]:
    """The two target critics of a SacAgent or Td3Agent (kept sparse; ANF's
    TD3 critic loss)."""
    return agent._target_critic_network_1, agent._target_critic_network_2


def target_actor_network(agent: Agent) -> tf.Module:
    """A Td3Agent's target actor (kept sparse; ANF's TD3 critic loss)."""
    return agent._target_actor_network


def target_q_network(agent: Agent) -> tf.Module:
    """A DqnAgent's target Q-network (kept sparse; the n-step and SNR
    targets of `algos.dqn`)."""
    return agent._target_q_network


def value_net(agent: Agent) -> tf.Module:
    """A PPOAgent's value network (the numpy collect policy reads its
    weights; PPOAgent exposes only `actor_net`)."""
    return agent._value_net


# Loss settings: our losses (RigL's grow gradients, the alpha loss reusing
# the actor's log-probabilities, ANF's TD3 critic loss) repeat TF-Agents'
# own with the settings the agent was built with.

def gamma(agent: Agent) -> float:
    """The discount of a SacAgent's or Td3Agent's TD targets."""
    return agent._gamma


def reward_scale_factor(agent: Agent) -> float:
    """The reward scale of a SacAgent's or Td3Agent's TD targets."""
    return agent._reward_scale_factor


def td_errors_loss_fn(agent: Agent) -> Callable:
    """The element-wise TD loss of a SacAgent or Td3Agent."""
    return agent._td_errors_loss_fn


def critic_loss_weight(agent: Agent) -> float:
    """A SacAgent's critic loss weight."""
    return agent._critic_loss_weight


def actor_loss_weight(agent: Agent) -> float:
    """A SacAgent's actor loss weight."""
    return agent._actor_loss_weight


def target_entropy(agent: Agent) -> float:
    """A SacAgent's target entropy (its alpha loss)."""
    return agent._target_entropy


def log_alpha(agent: Agent) -> tf.Variable:
    """A SacAgent's log temperature (its alpha loss; the `alpha` summary)."""
    return agent._log_alpha


def use_log_alpha_in_alpha_loss(agent: Agent) -> bool:
    """Whether a SacAgent's alpha loss uses log(alpha) rather than alpha."""
    return agent._use_log_alpha_in_alpha_loss


def target_policy_noise(agent: Agent) -> float:
    """A Td3Agent's target policy smoothing noise (ANF's critic loss)."""
    return agent._target_policy_noise


def target_policy_noise_clip(agent: Agent) -> float:
    """Where a Td3Agent clips its target policy noise (ANF's critic loss)."""
    return agent._target_policy_noise_clip


def train_policy(agent: Agent) -> Any:
    """A SacAgent's training-mode actor policy (our seeded action
    sampling; `agent.policy` is the one used outside training)."""
    return agent._train_policy


# Train-step internals.

def target_update_period(agent: Agent) -> int:
    """Train steps between a SacAgent's or Td3Agent's target updates (how
    long targets are re-masked after a mask change)."""
    return agent._target_update_period


def target_updater(agent: Agent) -> Callable[[], tf.Operation]:
    """The target update a SacAgent's or Td3Agent's `_train` calls after its
    optimizer steps."""
    return agent._update_target


def set_target_updater(agent: Agent,
                       update: Callable[[], tf.Operation]) -> None:
    """Replaces that target update (mask updates run just before it, after
    the optimizer steps, as in the original SAC)."""
    agent._update_target = update


def as_transition(agent: Agent, experience: Any) -> Any:
    """A SacAgent's or Td3Agent's experience as (time steps, policy steps,
    next time steps), as its `_train` sees them."""
    return agent._as_transition(experience)


def alpha_loss_debug_summaries(agent: Agent, alpha_loss: tf.Tensor,
                               entropy_diff: tf.Tensor) -> None:
    """A SacAgent's debug summaries of its alpha loss (our alpha loss
    writes what TF-Agents' would)."""
    agent._alpha_loss_debug_summaries(alpha_loss, entropy_diff)


# PPO: the per-example loss repeats what PPOAgent's `_train` derives from a
# minibatch; the numpy collect policy and the plasticity probes read the
# observation normaliser.

def as_trajectory(agent: Agent, experience: Any) -> Any:
    """A PPOAgent's experience as a Trajectory, as its `_train` sees it."""
    return agent._as_trajectory(experience)


def action_distribution_spec(agent: Agent) -> Any:
    """A PPOAgent's action distribution spec (to rebuild the old policy's
    distribution from its stored parameters)."""
    return agent._action_distribution_spec


def observation_normalizer(agent: Agent) -> Any:
    """A PPOAgent's observation normaliser, or None if it has none."""
    return agent._observation_normalizer


def normalizer_mean_and_variance(normalizer: Any) -> Tuple[Any, Any]:
    """A TensorNormalizer's current mean and variance estimates (nests)."""
    return normalizer._get_mean_var_estimates()


def normalize_advantages(advantages: tf.Tensor,
                         variance_epsilon: float = 1e-8) -> tf.Tensor:
    """PPOAgent's advantage normalisation over a minibatch."""
    return ppo_agent._normalize_advantages(
        advantages, variance_epsilon=variance_epsilon)


# Policies and projection heads.

def policy_clips_actions(policy: Any) -> bool:
    """Whether a TFPolicy clips its actions to the action spec (our seeded
    `sparse_agents.sample_action` then clips as its `action` would).
    False for an object without the attribute."""
    return getattr(policy, '_clip', False)


def projection_layer(head: tf.Module) -> tf.Module:
    """The Dense layer of a Categorical- or TanhNormalProjectionNetwork
    (logits; means and stds)."""
    return head._projection_layer


def projection_layers(layer: tf.Module) -> List[tf.Module]:
    """The Dense layers a TF-Agents projection head keeps in its private
    attributes (none for any other layer), for walks over a network's
    kernels."""
    found = []
    for attribute in ('_projection_layer', '_means_projection_layer'):
        projection = getattr(layer, attribute, None)
        if projection is not None:
            found.append(projection)
    return found


def set_projection_layer(head: tf.Module, layer: tf.Module) -> None:
    """Gives a Categorical- or TanhNormalProjectionNetwork our (maskable)
    Dense layer in place of its own."""
    head._projection_layer = layer


def means_projection_layer(head: tf.Module) -> tf.Module:
    """The means' Dense layer of a NormalProjectionNetwork."""
    return head._means_projection_layer


def set_means_projection_layer(head: tf.Module, layer: tf.Module) -> None:
    """Gives a NormalProjectionNetwork our (maskable) means layer."""
    head._means_projection_layer = layer


def std_bias_layer(head: tf.Module) -> tf.Module:
    """The BiasLayer holding a NormalProjectionNetwork's state-independent
    pre-softplus std."""
    return head._bias


def is_multivariate(head: tf.Module) -> bool:
    """Whether a NormalProjectionNetwork builds a MultivariateNormalDiag
    (vector actions) rather than a Normal."""
    return head._is_multivariate
