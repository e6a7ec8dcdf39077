"""The off-policy algorithms' compiled act-and-train call: a batch passed
packed into one array trains exactly as the same batch passed field by
field; and `GraphCall`, which calls a traced graph directly."""

import gin
import numpy as np
import pytest

import rigl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf
from tf_agents.specs import tensor_spec

from rigl.rl.tfagents import envs
from rigl.rl.tfagents.algos import base
from rigl.rl.tfagents.algos import dqn
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.run.replay import make_replay_buffer

CASES = {
    'sac': (sac.Sac, 'Pendulum-v1', dict(actor_fc_layers=(16,),
                                         critic_joint_fc_layers=(16,),
                                         batch_size=8)),
    'dqn': (dqn.Dqn, 'CartPole-v1', dict(fc_layer_params=(16,),
                                         batch_size=8)),
}


def build(name):
    algorithm_class, env_name, values = CASES[name]
    gin.clear_config()
    env = envs.create_environment(env_name, seed=0)
    observation_spec = tensor_spec.from_spec(env.observation_spec())
    action_spec = tensor_spec.from_spec(env.action_spec())
    env.close()
    settings = algorithm_class.Settings(seed=0, env_name=env_name, **values)
    return algorithm_class(settings, observation_spec, action_spec, seed=0)


@pytest.mark.parametrize('name', sorted(CASES))
def test_packed_batch_trains_as_its_fields(name):
    packed, fields = build(name), build(name)
    # The same starting point: weights, masks and sampling streams.
    for a, b in zip(packed.agent.variables, fields.agent.variables):
        b.assign(a)
    rng = np.random.default_rng(0)
    replay = make_replay_buffer(64, packed.observation_spec,
                                packed.action_spec)
    shape = packed.observation_spec.shape
    for _ in range(64):
        replay.add(rng.normal(size=shape).astype(np.float32),
                   packed.random_action(rng), rng.normal(), 1.0,
                   rng.normal(size=shape).astype(np.float32))
    observation = rng.normal(size=(1, *shape)).astype(np.float32)
    traced = packed._act_and_train_packed.function
    for step in range(3):
        if step == 1:
            traces = traced.experimental_get_tracing_count()
        batch = replay.sample(8, rng)
        action_a, loss_a = packed.act_and_train(observation, batch)
        action_b, loss_b = fields._act_and_train_fields(observation, batch)
        np.testing.assert_array_equal(action_a.numpy(), action_b.numpy())
        assert float(loss_a.loss) == float(loss_b.loss)
    for network in packed.networks:
        for a, b in zip(packed.networks[network].variables,
                        fields.networks[network].variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Traced once (plus the retrace after creating the optimizer's slots).
    assert traced.experimental_get_tracing_count() == traces


def test_graph_call_runs_the_traced_graph_and_retraces_for_new_shapes():
    class Dispatches:
        """A tf.function that counts the calls that go through it."""

        def __init__(self, function):
            self.function, self.calls = function, 0

        def __call__(self, *args):
            self.calls += 1
            return self.function(*args)

        def get_concrete_function(self, *args):
            return self.function.get_concrete_function(*args)

    function = tf.function(lambda x: 2 * x, autograph=False)
    dispatches = Dispatches(function)
    call = base.GraphCall(dispatches)
    one = np.arange(3, dtype=np.float32)
    for _ in range(3):
        np.testing.assert_array_equal(call(one).numpy(), 2 * one)
    # The first call goes through tf.function, the later ones to its graph.
    assert dispatches.calls == 1
    assert function.experimental_get_tracing_count() == 1
    # Another shape or dtype goes through tf.function again (a new trace).
    two = np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(call(two).numpy(), 2 * two)
    np.testing.assert_array_equal(call(one.astype(np.float64)).numpy(),
                                  2 * one)
    np.testing.assert_array_equal(call(one).numpy(), 2 * one)
    assert dispatches.calls == 4
    assert function.experimental_get_tracing_count() == 3
