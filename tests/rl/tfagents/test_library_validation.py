"""Bad arguments to the library API raise a one-line ValueError.

Each row is (callable, kwargs, parameter name, value text): the call must
raise ValueError (never TypeError, ZeroDivisionError, a gymnasium error or a
NaN result) whose message is one line naming the parameter and the value.
"""

import rigl  # noqa: F401  (must precede TensorFlow: selects legacy Keras)

import re

import pytest

from rigl import sparse_utils
from rigl.rl.tfagents import envs

MLP = [(17, 256), (256, 256), (256, 6)]
NAN = float('nan')
INF = float('inf')


def _sparsities(**kwargs):
    arguments = {'shapes': MLP, 'method': 'erdos_renyi_kernel',
                 'sparsity': 0.9}
    arguments.update(kwargs)
    return sparse_utils.get_sparsities(**arguments)


def _masks(**kwargs):
    arguments = {'shapes': MLP, 'sparsities': [0.9, 0.9, 0.0], 'seed': 0}
    arguments.update(kwargs)
    return sparse_utils.create_masks(**arguments)


def _environment(**kwargs):
    arguments = {'env_name': 'Pendulum-v1', 'seed': 0}
    arguments.update(kwargs)
    env = envs.create_environment(**arguments)
    env.close()  # Only reached when nothing was refused.
    return env


CASES = [
    # get_sparsities: the global target.
    (_sparsities, {'sparsity': '0.5'}, 'sparsity', "'0.5'"),
    (_sparsities, {'sparsity': False}, 'sparsity', 'False'),
    (_sparsities, {'sparsity': None}, 'sparsity', 'None'),
    (_sparsities, {'sparsity': NAN}, 'sparsity', 'nan'),
    (_sparsities, {'sparsity': 1.0}, 'sparsity', '1.0'),
    (_sparsities, {'sparsity': -0.5}, 'sparsity', '-0.5'),
    # get_sparsities: exponents.
    (_sparsities, {'erk_power_scale': NAN}, 'erk_power_scale', 'nan'),
    (_sparsities, {'erk_power_scale': INF}, 'erk_power_scale', 'inf'),
    (_sparsities, {'erk_power_scale': 1e999}, 'erk_power_scale', 'inf'),
    (_sparsities, {'erk_power_scale': '1'}, 'erk_power_scale', "'1'"),
    (_sparsities, {'erk_power_scale': -1.0}, 'erk_power_scale', '-1.0'),
    (_sparsities, {'erk_power_scale': False}, 'erk_power_scale', 'False'),
    (_sparsities, {'method': 'anf_new', 'closeness': NAN}, 'closeness',
     'nan'),
    (_sparsities, {'method': 'anf_new', 'closeness': -INF}, 'closeness',
     '-inf'),
    (_sparsities, {'method': 'anf_new', 'closeness': '0.2'}, 'closeness',
     "'0.2'"),
    (_sparsities, {'method': 'anf_new', 'closeness': -0.2}, 'closeness',
     '-0.2'),
    # get_sparsities: fixed layers.
    (_sparsities, {'custom_sparsities': {0: '0.5'}}, 'custom_sparsities[0]',
     "'0.5'"),
    (_sparsities, {'custom_sparsities': {1: 1.0}}, 'custom_sparsities[1]',
     '1.0'),
    (_sparsities, {'custom_sparsities': {0: NAN}}, 'custom_sparsities[0]',
     'nan'),
    (_sparsities, {'custom_sparsities': {0: False}}, 'custom_sparsities[0]',
     'False'),
    (_sparsities, {'custom_sparsities': [0.5]}, 'custom_sparsities', '[0.5]'),
    (_sparsities, {'input_layer_sparsity': '0.8'}, 'input_layer_sparsity',
     "'0.8'"),
    (_sparsities, {'input_layer_sparsity': 1.5}, 'input_layer_sparsity',
     '1.5'),
    (_sparsities, {'input_layer_sparsity': NAN}, 'input_layer_sparsity',
     'nan'),
    (_sparsities, {'dense_layers': 2}, 'dense_layers', '2'),
    (_sparsities, {'method': 5}, 'method', '5'),
    (_sparsities, {'method': ['uniform']}, 'method', "['uniform']"),
    (_sparsities, {'shapes': 17}, 'shapes', '17'),
    # create_masks.
    (_masks, {'sparsities': ['0.9', 0.9, 0.0]}, 'sparsities[0]', "'0.9'"),
    (_masks, {'sparsities': [0.9, True, 0.0]}, 'sparsities[1]', 'True'),
    (_masks, {'sparsities': [0.9, 0.9, NAN]}, 'sparsities[2]', 'nan'),
    (_masks, {'sparsities': [0.9, 1.0, 0.0]}, 'sparsities[1]', '1.0'),
    (_masks, {'seed': -1}, 'seed', '-1'),
    (_masks, {'seed': 1.5}, 'seed', '1.5'),
    (_masks, {'seed': '0'}, 'seed', "'0'"),
    (_masks, {'seed': True}, 'seed', 'True'),
    # create_environment.
    (_environment, {'seed': -1}, 'seed', '-1'),
    (_environment, {'seed': 0.5}, 'seed', '0.5'),
    (_environment, {'seed': '0'}, 'seed', "'0'"),
    (_environment, {'seed': True}, 'seed', 'True'),
    (_environment, {'env_name': 5}, 'env_name', '5'),
    (_environment, {'env_name': None}, 'env_name', 'None'),
    (_environment, {'noise_std': NAN}, 'noise_std', 'nan'),
    (_environment, {'noise_std': INF}, 'noise_std', 'inf'),
    (_environment, {'max_episode_steps': 0}, 'max_episode_steps', '0'),
    (_environment, {'max_episode_steps': 2.5}, 'max_episode_steps', '2.5'),
    (_environment, {'max_episode_steps': True}, 'max_episode_steps', 'True'),
    (_environment, {'noise_fraction': 0.5, 'adjust_env_period': 0},
     'adjust_env_period', '0'),
    (_environment, {'noise_fraction': 0.5, 'adjust_env_period': 1.5},
     'adjust_env_period', '1.5'),
    (_environment, {'noise_fraction': True}, 'noise_fraction', 'True'),
    (_environment, {'noise_fraction': '0.5'}, 'noise_fraction', "'0.5'"),
    (_environment, {'noise_fraction': NAN}, 'noise_fraction', 'nan'),
    (_environment, {'noise_fraction': 1.0}, 'noise_fraction', '1.0'),
    (_environment, {'render_mode': 5}, 'render_mode', '5'),
    (_environment, {'render_mode': 'bogus'}, 'render_mode', "'bogus'"),
]


@pytest.mark.parametrize(
    'function, kwargs, parameter, value', CASES,
    ids=[f'{case[0].__name__[1:]}-{case[2]}={case[3]}' for case in CASES])
def test_refused_with_value_error(function, kwargs, parameter, value):
    with pytest.raises(ValueError) as error:
        function(**kwargs)
    # Gin appends '  In call to configurable ...' on a new line; the message
    # itself must be one line.
    message = re.sub(r'\n\s*In call to configurable .*', '', str(error.value),
                     flags=re.DOTALL)
    assert parameter in message
    assert value in message
    assert '\n' not in message

