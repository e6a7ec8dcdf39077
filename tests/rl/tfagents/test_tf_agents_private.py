"""Every TF-Agents private name we rely on exists in the installed tf-agents.

`rigl/rl/tfagents/tf_agents_private.py` holds every access to a private
attribute or function of TF-Agents and names them per class. These tests
build a tiny agent of each kind and check each named attribute on it, each
private function in its module and each hook our subclasses override, so an
upgrade of tf-agents fails here, naming what moved. A scan also keeps new
private accesses from appearing elsewhere in `rigl/`.
"""

import importlib
import inspect
import os
import re
from typing import Dict, List

import gin
import pytest

import rigl  # noqa: F401  (before TensorFlow's Keras is picked)
import tensorflow as tf
import tf_agents
from tf_agents.agents.dqn import dqn_agent
from tf_agents.agents.ppo import ppo_clip_agent
from tf_agents.agents.sac import sac_agent
from tf_agents.agents.sac import tanh_normal_projection_network
from tf_agents.agents.td3 import td3_agent
from tf_agents.networks import categorical_projection_network
from tf_agents.networks import normal_projection_network
from tf_agents.policies import tf_policy
from tf_agents.specs import tensor_spec
from tf_agents.utils import tensor_normalizer

from helpers import REPO
from rigl.rl.tfagents import tf_agents_private as tfa_private
from rigl.rl.tfagents.algos import dqn
from rigl.rl.tfagents.algos import ppo
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.algos import td3
from rigl.rl.tfagents.run import settings as settings_lib

MODULE = os.path.join('rigl', 'rl', 'tfagents', 'tf_agents_private.py')
RECHECK = (f'{MODULE} was checked against tf-agents '
           f'{tfa_private.TESTED_VERSION}: re-check every name in its '
           'PRIVATE_ATTRIBUTES, PRIVATE_FUNCTIONS and OVERRIDDEN_HOOKS '
           'against the installed release\'s source, fix the accessors, '
           'then update TESTED_VERSION.')

# The TF-Agents class each registry key names.
CLASSES = {
    'SacAgent': sac_agent.SacAgent,
    'Td3Agent': td3_agent.Td3Agent,
    'DqnAgent': dqn_agent.DqnAgent,
    'PPOClipAgent': ppo_clip_agent.PPOClipAgent,
    'TFPolicy': tf_policy.TFPolicy,
    'TensorNormalizer': tensor_normalizer.TensorNormalizer,
    'NormalProjectionNetwork':
        normal_projection_network.NormalProjectionNetwork,
    'CategoricalProjectionNetwork':
        categorical_projection_network.CategoricalProjectionNetwork,
    'TanhNormalProjectionNetwork':
        tanh_normal_projection_network.TanhNormalProjectionNetwork,
}

# Files of rigl/ that still touch a registered name themselves, by name, with
# why. Their owners can switch to the accessors named here.
ALLOWED_ELSEWHERE: Dict[str, Dict[str, str]] = {
    'rigl/rl/tfagents/run/replay.py': {
        '_gamma': "the replay's own attribute, not TF-Agents'"},
}

OBSERVATION = tensor_spec.BoundedTensorSpec((3,), tf.float32, -1, 1)
CONTINUOUS = tensor_spec.BoundedTensorSpec((1,), tf.float32, -2, 2)
DISCRETE = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 1)
SPARSE_ACTOR_CRITIC = dict(actor_fc_layers=(8,), critic_joint_fc_layers=(8,),
                           train_mode_actor='sparse',
                           train_mode_value='sparse')


def test_tf_agents_version_is_the_tested_one():
    assert tf_agents.__version__.startswith(
        tfa_private.TESTED_VERSION + '.'), (
        f'tf-agents {tf_agents.__version__} is installed. {RECHECK}')


def _build(algorithm, action_spec, **params):
    settings = settings_lib.build(algorithm.Settings, params,
                                  algorithm.name.upper())
    return algorithm(settings, OBSERVATION, action_spec, seed=0)


@pytest.fixture(scope='module')
def instances() -> Dict[str, List[object]]:
    """Tiny sparse agents of each kind and the TF-Agents objects inside
    them, by registry key."""
    gin.clear_config()
    gin.parse_config(["mask_updater.update_alg = 'rigl'",
                      "init_masks.mask_init_method = 'uniform'"])
    try:
        sac_run = _build(sac.Sac, CONTINUOUS, **SPARSE_ACTOR_CRITIC)
        td3_run = _build(td3.Td3, CONTINUOUS, **SPARSE_ACTOR_CRITIC)
        dqn_run = _build(dqn.Dqn, DISCRETE, fc_layer_params=(8,),
                         train_mode='sparse')
        ppo_runs = [_build(ppo.Ppo, spec, actor_fc_layers=(8,),
                           value_fc_layers=(8,), train_mode_actor='sparse',
                           train_mode_value='sparse',
                           normalize_observations=True)
                    for spec in (CONTINUOUS, DISCRETE)]
    finally:
        gin.clear_config()
    heads = [run.agent.actor_net.layers[-1] for run in ppo_runs]
    return {
        'SacAgent': [sac_run.agent],
        'Td3Agent': [td3_run.agent],
        'DqnAgent': [dqn_run.agent],
        'PPOClipAgent': [run.agent for run in ppo_runs],
        'TFPolicy': [sac_run.agent.collect_policy, sac_run.agent.policy],
        'TensorNormalizer': [tfa_private.observation_normalizer(run.agent)
                             for run in ppo_runs],
        'NormalProjectionNetwork': heads[:1],
        'CategoricalProjectionNetwork': heads[1:],
        'TanhNormalProjectionNetwork': [
            sac_run.networks['actor'].layers[-1]],
    }


def test_every_registered_class_has_instances(instances):
    assert set(tfa_private.PRIVATE_ATTRIBUTES) == set(CLASSES)
    for key, objects in instances.items():
        assert objects, key
        for instance in objects:
            assert isinstance(instance, CLASSES[key]), (key, type(instance))


@pytest.mark.parametrize('key,name', [
    (key, name) for key, names in tfa_private.PRIVATE_ATTRIBUTES.items()
    for name in names], ids=lambda value: value)
def test_private_attribute_exists(instances, key, name):
    for instance in instances[key]:
        assert hasattr(instance, name), (
            f'{key}.{name} is missing on a {type(instance).__name__} built '
            f'with tf-agents {tf_agents.__version__}; {MODULE} reads it. '
            f'{RECHECK}')


@pytest.mark.parametrize('module_name,name', [
    (module_name, name)
    for module_name, names in tfa_private.PRIVATE_FUNCTIONS.items()
    for name in names], ids=lambda value: value)
def test_private_function_exists(module_name, name):
    module = importlib.import_module(module_name)
    assert callable(getattr(module, name, None)), (
        f'{module_name}.{name} is missing in tf-agents '
        f'{tf_agents.__version__}; {MODULE} calls it. {RECHECK}')


def _tf_agents_sources(cls) -> str:
    return '\n'.join(inspect.getsource(base) for base in cls.__mro__
                     if base.__module__.startswith('tf_agents.'))


@pytest.mark.parametrize('key,hook', [
    (key, hook) for key, hooks in tfa_private.OVERRIDDEN_HOOKS.items()
    for hook in hooks], ids=lambda value: value)
def test_overridden_hook_exists_and_is_called(key, hook):
    cls = CLASSES[key]
    assert callable(getattr(cls, hook, None)), (
        f'{key}.{hook} is missing in tf-agents {tf_agents.__version__}: our '
        f'override in sparse_agents.py would never run. {RECHECK}')
    assert re.search(rf'self\.{hook}\b', _tf_agents_sources(cls)), (
        f'{key} no longer uses self.{hook} in tf-agents '
        f'{tf_agents.__version__}: our override would never run. {RECHECK}')


def _module_source() -> str:
    with open(os.path.join(REPO, MODULE)) as f:
        return f.read()


def _registered_names() -> set:
    names = {name for registry in (tfa_private.PRIVATE_ATTRIBUTES,
                                   tfa_private.PRIVATE_FUNCTIONS)
             for values in registry.values() for name in values}
    return names


def test_registry_matches_the_accessors():
    """Each private name the module touches is registered, and each
    registered name is touched by an accessor."""
    code = _module_source().split('\nAgent = ', 1)[1]  # after the registries
    used = set(re.findall(r"\.(_[a-z]\w*)\b", code)) | set(
        re.findall(r"'(_[a-z]\w*)'", code))
    assert used - _registered_names() == set(), 'accessed, not registered'
    assert _registered_names() - used == set(), 'registered, not accessed'


def _private_accesses(path: str, names: set) -> set:
    with open(path) as f:
        source = f.read()
    return {match for match in re.findall(r"[.'](_[a-z]\w*)\b", source)
            if match in names}


def test_no_private_access_outside_the_module():
    names = _registered_names()
    found = {}
    for directory, _, files in os.walk(os.path.join(REPO, 'rigl')):
        for file_name in files:
            path = os.path.join(directory, file_name)
            relative = os.path.relpath(path, REPO)
            if not file_name.endswith('.py') or relative == MODULE:
                continue
            accesses = _private_accesses(path, names) - set(
                ALLOWED_ELSEWHERE.get(relative, {}))
            if accesses:
                found[relative] = sorted(accesses)
    assert not found, (
        f'TF-Agents private names used outside {MODULE}: {found}. Add an '
        'accessor there (or, for an attribute of our own class that shares '
        'the name, an ALLOWED_ELSEWHERE entry here).')
