"""Resume restores every optimizer moment onto its own variable.

TF-Agents' SAC and TD3 list the critics' variables in memory-address order;
the optimizer's moments are saved and restored by position, so without a
fixed creation order a fresh process could restore critic 1's moments onto
critic 2. This restores one checkpoint in two fresh processes and compares
every moment, named by network and variable, with the saving process's.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

# One process per step (save, restore, restore again), each for every
# algorithm in turn: args ALGORITHMS (comma-separated) MODE DIRECTORY; the
# checkpoint of algorithm NAME is DIRECTORY/NAME and its moments go to
# DIRECTORY/NAME_MODE.json.
SCRIPT = r'''
import json, os, sys
import numpy as np
import rigl  # noqa: F401
import gin
import tensorflow as tf
from tf_agents.specs import tensor_spec
from rigl.rl.tfagents import envs
from rigl.rl.tfagents.sparsity import masked_optimizer
from rigl.rl.tfagents.algos import sac, td3
from rigl.rl.tfagents.run.replay import make_replay_buffer

names, mode, directory = sys.argv[1:4]
for name in names.split(','):
    path = os.path.join(directory, name)
    out = os.path.join(directory, f'{name}_{mode}.json')
    algorithm_class = {'sac': sac.Sac, 'td3': td3.Td3}[name]
    env = envs.create_environment('Pendulum-v1', seed=0)
    observation_spec = tensor_spec.from_spec(env.observation_spec())
    action_spec = tensor_spec.from_spec(env.action_spec())
    settings = algorithm_class.Settings(
        seed=0, env_name='Pendulum-v1', actor_fc_layers=(16,),
        critic_joint_fc_layers=(16,), batch_size=8)
    # Other objects in memory first, so addresses differ between processes.
    ballast = [tf.Variable(tf.zeros([i + 1])) for i in
               range(int(np.random.default_rng().integers(1, 50)))]
    algorithm = algorithm_class(settings, observation_spec, action_spec,
                                seed=0)
    checkpoint = tf.train.Checkpoint(**algorithm.checkpoint_objects())
    if mode == 'save':
        rng = np.random.default_rng(0)
        replay = make_replay_buffer(64, observation_spec, action_spec)
        for _ in range(64):
            replay.add(rng.normal(size=3).astype(np.float32),
                       algorithm.random_action(rng), rng.normal(), 1.0,
                       rng.normal(size=3).astype(np.float32))
        for _ in range(4):
            algorithm.train(replay.sample(8, rng))
        checkpoint.write(path)
    else:
        checkpoint.read(path).assert_existing_objects_matched()
    moments = {}
    for optimizer_name, masked in algorithm.masked_optimizers.items():
        for network_name, network in algorithm.networks.items():
            for index, variable in enumerate(network.trainable_variables):
                try:
                    slots = masked_optimizer.optimizer_slots(
                        masked.optimizer, variable)
                except KeyError:
                    continue  # another optimizer's variable
                moments[f'{optimizer_name}:{network_name}/{index}:'
                        f'{variable.name}'] = [s.numpy().tolist()
                                               for s in slots]
    with open(out, 'w') as f:
        json.dump(moments, f)
'''
ALGORITHMS = ('sac', 'td3')


def run(*args):
    subprocess.run([sys.executable, '-c', SCRIPT, *map(str, args)],
                   check=True, capture_output=True, timeout=300)


@pytest.fixture(scope='module')
def moments(tmp_path_factory):
    """The moments of each algorithm's checkpoint as the saving process
    held them, and as each of two fresh processes restored them (one
    process per step for both algorithms: half the TensorFlow start-ups)."""
    directory = tmp_path_factory.mktemp('moments')
    for mode in ('save', 'restore_0', 'restore_1'):
        run(','.join(ALGORITHMS), mode, directory)
    return {name: {mode: json.loads(
        (directory / f'{name}_{mode}.json').read_text())
        for mode in ('save', 'restore_0', 'restore_1')}
        for name in ALGORITHMS}


@pytest.mark.parametrize('name', ALGORITHMS)
def test_restored_moments_sit_on_their_own_variables(moments, name):
    saved = moments[name]['save']
    critic_keys = [key for key in saved if key.startswith('critic:')]
    assert len(critic_keys) >= 8  # both critics' kernels and biases
    # The two critics' moments differ, so a swap would show.
    assert saved[critic_keys[0]] != saved[critic_keys[len(critic_keys) // 2]]
    for attempt in range(2):
        restored = moments[name][f'restore_{attempt}']
        assert restored.keys() == saved.keys()
        for key in saved:
            for a, b in zip(saved[key], restored[key]):
                np.testing.assert_array_equal(np.array(a), np.array(b),
                                              err_msg=key)
