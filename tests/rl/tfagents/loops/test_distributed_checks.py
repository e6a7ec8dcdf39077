"""What a distributed run refuses before it starts: ANF noise-feature
redraws, whichever side draws the noise and in either gin vocabulary
(each actor would otherwise permute its features on its own)."""

import types

import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
import gin
import pytest

from rigl.rl.tfagents.loops import distributed


def _algorithm(adjust_period: int = 0):
    """The few attributes `check_supported` reads, for an off-policy run;
    a network-side noise layout redrawing every `adjust_period` steps."""
    layout = (types.SimpleNamespace(
        config=types.SimpleNamespace(adjust_period=adjust_period))
        if adjust_period else None)
    settings = types.SimpleNamespace(n_step_delay=0, replay_check_interval=0,
                                     env_name='Pendulum-v1')
    return types.SimpleNamespace(loop='off_policy', name='sac',
                                 noise_layout=layout, settings=settings)


@pytest.fixture(autouse=True)
def _clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.mark.parametrize('bindings', [
    ["noise_features.where = 'env'", 'noise_features.fraction = 0.5',
     'noise_features.adjust_period = 100'],
    ['create_environment.noise_fraction = 0.5',
     'create_environment.adjust_env_period = 100'],
])
def test_env_side_redraws_are_refused_in_both_vocabularies(bindings):
    gin.parse_config(bindings)
    with pytest.raises(ValueError, match='noise_features.adjust_period'):
        distributed.check_supported(_algorithm())


def test_network_side_redraws_are_refused():
    with pytest.raises(ValueError, match='noise_features.adjust_period'):
        distributed.check_supported(_algorithm(adjust_period=100))


def test_noise_features_without_redraws_are_accepted():
    gin.parse_config(["noise_features.where = 'env'",
                      'noise_features.fraction = 0.5'])
    distributed.check_supported(_algorithm())
