"""Resume restores every optimizer moment onto its own variable.

TF-Agents' SAC and TD3 list the critics' variables in memory-address order;
the optimizer's moments are saved and restored by position, so without a
fixed creation order a fresh process could restore critic 1's moments onto
critic 2. This restores one checkpoint in two fresh processes and compares
every moment, named by network and variable, with the saving process's.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = r'''
import json, sys
import numpy as np
import rigl  # noqa: F401
import gin
import tensorflow as tf
from tf_agents.specs import tensor_spec
from rigl.rl.tfagents import envs
from rigl.rl.tfagents.sparsity import masked_optimizer
from rigl.rl.tfagents.algos import sac, td3
from rigl.rl.tfagents.run.replay import make_replay_buffer

name, mode, path, out = sys.argv[1:5]
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
algorithm = algorithm_class(settings, observation_spec, action_spec, seed=0)
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
                slots = masked_optimizer.optimizer_slots(masked.optimizer,
                                                         variable)
            except KeyError:
                continue  # another optimizer's variable
            moments[f'{optimizer_name}:{network_name}/{index}:'
                    f'{variable.name}'] = [s.numpy().tolist() for s in slots]
with open(out, 'w') as f:
    json.dump(moments, f)
'''


def run(tmp_path, *args):
    subprocess.run([sys.executable, '-c', SCRIPT, *map(str, args)],
                   check=True, capture_output=True, timeout=300)


@pytest.mark.parametrize('name', ['sac', 'td3'])
def test_restored_moments_sit_on_their_own_variables(tmp_path, name):
    path = tmp_path / 'ckpt'
    run(tmp_path, name, 'save', path, tmp_path / 'saved.json')
    saved = json.loads((tmp_path / 'saved.json').read_text())
    critic_keys = [key for key in saved if key.startswith('critic:')]
    assert len(critic_keys) >= 8  # both critics' kernels and biases
    # The two critics' moments differ, so a swap would show.
    assert saved[critic_keys[0]] != saved[critic_keys[len(critic_keys) // 2]]
    for attempt in range(2):
        out = tmp_path / f'restored_{attempt}.json'
        run(tmp_path, name, 'restore', path, out)
        restored = json.loads(out.read_text())
        assert restored.keys() == saved.keys()
        for key in saved:
            for a, b in zip(saved[key], restored[key]):
                np.testing.assert_array_equal(np.array(a), np.array(b),
                                              err_msg=key)
