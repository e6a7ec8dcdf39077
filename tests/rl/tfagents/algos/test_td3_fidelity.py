"""TD3 and Atari DQN defaults match their originals.

TD3 as ANF's code (github.com/bramgrooten/automatic-noise-filtering): squared
TD loss (`anf_td3.py:299`), noise sizes relative to the action bound
(`run_td3.py:46`, `utils.py:379-380`), the noisy target action clamped to
the bounds (`anf_td3.py:291`), actor mask updates every 1000 train steps
(`anf_td3.py:339`). DQN Atari as the original suite's Dopamine configs
(`sparsetrain_configs/dqn_atari_*.gin` with Dopamine's `dqn.gin`).
"""

import os
from typing import Dict, List

import gin
import numpy as np
import pytest
import tensorflow as tf

import rigl  # noqa: F401  (before TensorFlow's Keras is picked)
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import common

from helpers import CONFIGS, REPO
from rigl.rl.tfagents import train  # noqa: F401  (registers train_eval)
from rigl.rl.tfagents.algos import td3
from rigl.rl.tfagents.sparsity import spec as sparsity_spec

BOUND = 0.4  # Humanoid's action bound
OBSERVATION_SPEC = tf.TensorSpec([3], tf.float32)
ACTION_SPEC = tensor_spec.BoundedTensorSpec([2], tf.float32, -BOUND, BOUND)


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def make_td3(bindings: List[str] = (), **settings) -> td3.Td3:
    """A tiny TD3 on a 3-D observation and a +-0.4 2-D action."""
    gin.parse_config(list(bindings))
    values = dict(seed=0, env_name='Pendulum-v1', actor_fc_layers=(8,),
                  critic_joint_fc_layers=(8,), batch_size=4)
    values.update(settings)
    return td3.Td3(td3.Td3Settings(**values), OBSERVATION_SPEC, ACTION_SPEC,
                   seed=0)


def transitions(batch: int, seed: int = 0):
    """(time_steps, actions, next_time_steps) with large rewards, so TD
    errors exceed Huber's quadratic zone."""
    rng = np.random.default_rng(seed)
    observation = rng.normal(size=(batch, 3)).astype(np.float32)
    next_observation = rng.normal(size=(batch, 3)).astype(np.float32)
    actions = rng.uniform(-BOUND, BOUND, (batch, 2)).astype(np.float32)
    reward = (rng.normal(size=batch) * 10).astype(np.float32)
    discount = np.ones(batch, np.float32)
    time_steps = ts.transition(observation, np.zeros(batch, np.float32),
                               discount)
    next_time_steps = ts.transition(next_observation, reward, discount)
    return tf.nest.map_structure(tf.convert_to_tensor,
                                 (time_steps, actions, next_time_steps))


def manual_critic_loss(agent, time_steps, actions, next_time_steps,
                       target_actions) -> float:
    """mean_b[(Q1 - y)^2 + (Q2 - y)^2], y = r + gamma d min Q'(s', a')."""
    target_q = [network((next_time_steps.observation, target_actions))[0]
                for network in (agent._target_critic_network_1,
                                agent._target_critic_network_2)]
    y = (next_time_steps.reward + 0.99 * next_time_steps.discount *
         np.minimum(*[q.numpy() for q in target_q]))
    loss = sum((network((time_steps.observation, actions))[0].numpy() - y) ** 2
               for network in (agent._critic_network_1,
                               agent._critic_network_2))
    return float(np.mean(loss))


def test_critic_loss_is_squared_error_of_both_critics():
    algorithm = make_td3()
    agent = algorithm.agent
    assert agent._td_errors_loss_fn is common.element_wise_squared_loss
    time_steps, actions, next_time_steps = transitions(64)
    seen: Dict[str, tf.Tensor] = {}
    smoothed = agent.smoothed_target_actions

    def spy(target_actions):
        seen['actions'] = smoothed(target_actions)
        return seen['actions']

    agent.smoothed_target_actions = spy
    loss = float(agent.critic_loss(time_steps, actions, next_time_steps))
    expected = manual_critic_loss(agent, time_steps, actions,
                                  next_time_steps, seen['actions'])
    assert loss == pytest.approx(expected, rel=1e-5)
    assert np.abs(seen['actions'].numpy()).max() <= np.float32(BOUND)
    # Huber (the old default) would differ with errors this large.
    huber = make_td3(td_errors_loss='huber').agent
    assert huber._td_errors_loss_fn is common.element_wise_huber_loss


def target_noise(agent, target_action: float, count: int = 20000):
    actions = tf.fill([count, 2], target_action)
    return agent.smoothed_target_actions(actions).numpy() - target_action


def test_target_noise_is_relative_to_the_bound_and_clamped():
    agent = make_td3().agent
    noise = target_noise(agent, 0.0)
    # N(0, (0.2 * 0.4)^2) clipped at 0.5 * 0.4 (2.5 sigma: std ~0.99x).
    assert np.abs(noise).max() == pytest.approx(0.2, abs=1e-6)
    assert 0.077 < noise.std() < 0.081
    near_bound = agent.smoothed_target_actions(
        tf.fill([20000, 2], 0.39)).numpy()
    assert near_bound.max() == pytest.approx(BOUND)  # clamped at the bound
    assert near_bound.min() >= 0.39 - 0.2 - 1e-6


def test_old_target_noise_is_absolute_and_unclamped():
    agent = make_td3(noise_relative_to_bound=False,
                     clip_target_action=False).agent
    noise = target_noise(agent, 0.0)
    assert np.abs(noise).max() == pytest.approx(0.5, abs=1e-6)
    assert 0.19 < noise.std() < 0.21
    near_bound = agent.smoothed_target_actions(
        tf.fill([20000, 2], 0.39)).numpy()
    assert near_bound.max() > BOUND + 0.1


def exploration_noise(algorithm: td3.Td3, count: int = 20000) -> np.ndarray:
    observation = tf.zeros([count, 3])
    time_step = ts.restart(observation, batch_size=count)
    greedy = algorithm.agent.policy.action(time_step).action.numpy()
    return algorithm.explore(time_step).numpy() - greedy


def test_exploration_noise_is_relative_to_the_bound():
    noise = exploration_noise(make_td3())
    assert 0.038 < noise.std() < 0.042  # 0.1 * 0.4
    old = exploration_noise(make_td3(noise_relative_to_bound=False))
    assert 0.095 < old.std() < 0.105


def test_action_bound_is_the_half_range():
    spec = tensor_spec.BoundedTensorSpec([3], tf.float32, [-1, -0.4, 0],
                                         [1, 0.4, 2])
    np.testing.assert_allclose(td3.action_bound(spec), [1, 0.4, 1])


SET = ["mask_updater.update_alg = 'set'",
       "mask_updater.schedule_alg = 'constant'",
       'mask_updater.update_freq = 1000',
       'mask_updater.last_update_step = 1000000']


def update_train_steps(updater, steps: int, period: int) -> List[int]:
    """Train steps at which an optimizer stepping every `period` train
    steps (TF-Agents: at train steps 0, p, 2p, ...) updates its masks."""
    return [t for t in range(0, steps, period)
            if bool(updater.is_update_step(tf.constant(t // period)))]


def test_actor_masks_update_every_1000_train_steps():
    algorithm = make_td3(SET, train_mode_actor='sparse',
                         train_mode_value='sparse')
    actor = algorithm.agent._actor_optimizer.updater
    critic = algorithm.agent._critic_optimizer.updater
    assert (actor.update_freq, actor.last_update_step) == (500, 500000)
    assert (critic.update_freq, critic.last_update_step) == (1000, 1000000)
    actor_steps = update_train_steps(actor, 5001, 2)
    assert actor_steps == [0, 1000, 2000, 3000, 4000, 5000]
    assert actor_steps == update_train_steps(critic, 5001, 1)
    # The actor keeps the stream it would get without the conversion.
    old = make_td3(SET, train_mode_actor='sparse', train_mode_value='sparse',
                   actor_mask_steps='actor_steps')
    assert old.agent._actor_optimizer.updater._seed == actor._seed
    # Old: the actor's own 1000 steps = 2000 train steps.
    assert update_train_steps(old.agent._actor_optimizer.updater, 5001,
                              2) == [0, 2000, 4000]


@pytest.mark.parametrize('freq, period, begin, last, expected', [
    (1000, 2, 0, 1000000, (500, 0, 500000)),
    (1000, 3, 0, 1000000, (1000, 0, 333333)),  # every lcm = 3000 steps
    (15, 2, 5, -1, (15, 3, -1)),  # every 30; no last step
    (1000, 2, 0, 0, (500, 0, 0)),  # 0: never
])
def test_actor_schedule_conversion(freq, period, begin, last, expected):
    gin.parse_config(SET + [f'mask_updater.update_freq = {freq}',
                            f'mask_updater.begin_step = {begin}',
                            f'mask_updater.last_update_step = {last}'])
    method = sparsity_spec.from_gin(td3.Td3Settings(train_mode_actor='sparse'))
    updater = method.counted_every(period).make_updater()
    assert (updater.update_freq, updater.begin_step,
            updater.last_update_step) == expected


def test_actor_schedule_unchanged_without_delay_or_updates():
    gin.parse_config(SET)
    method = sparsity_spec.from_gin(td3.Td3Settings(train_mode_actor='sparse'))
    assert method.counted_every(1) is method
    gin.clear_config()
    static = sparsity_spec.from_gin(td3.Td3Settings(train_mode_actor='sparse'))
    assert static.method == 'static'
    assert static.counted_every(2) is static


def test_bad_td3_options_fail_clearly():
    with pytest.raises(ValueError, match="td_errors_loss is 'l1'"):
        td3.Td3Settings(td_errors_loss='l1').check()
    with pytest.raises(ValueError, match="actor_mask_steps is 'x'"):
        td3.Td3Settings(actor_mask_steps='x').check()


def atari_binding(config: str, name: str):
    gin.add_config_file_search_path(REPO)
    gin.parse_config_file(os.path.join(CONFIGS, config))
    return gin.query_parameter(name)


@pytest.mark.parametrize('config', [
    'dqn_atari_dense_config.gin', 'dqn_atari_static_config.gin',
    'dqn_atari_sparse_config.gin', 'dqn_atari_pruning_config.gin'])
def test_atari_dqn_as_dopamine(config):
    # dqn_atari_dense.gin: tf.train.AdamOptimizer lr 0.00025, default eps.
    assert atari_binding(config, 'train_eval.learning_rate') == 2.5e-4
    assert gin.query_parameter('train_eval.adam_epsilon') == 1e-8
    # Dopamine dqn.gin: target every 8000 agent steps, a train step every 4.
    assert gin.query_parameter('train_eval.target_update_period') * (
        gin.query_parameter('train_eval.train_every')) == 8000
    fixed = config == 'dqn_atari_sparse_config.gin'  # SET/RigL only
    try:
        value = gin.query_parameter('init_masks.fixed_sparse_init')
    except ValueError:
        value = False
    assert value is fixed
