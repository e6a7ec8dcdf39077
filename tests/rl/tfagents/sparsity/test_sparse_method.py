"""The sparse method as one object: read from the bindings, validated,
printed and recorded, and a registry where a new rule is one class."""

import json

import gin
import numpy as np
import pytest

import rigl  # noqa: F401  (before TensorFlow's Keras is picked)
import tensorflow as tf
from tf_agents.specs import tensor_spec

from rigl.rl.tfagents.sparsity import updaters
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.algos import sac
from rigl.rl.tfagents.run import settings as settings_lib
from rigl.rl.tfagents.sparsity import spec as sparsity_spec
from rigl.rl.tfagents.sparsity import width as width_lib

import helpers
import tiny

OBS = tensor_spec.BoundedTensorSpec((3,), tf.float32, -1, 1)
ACT = tensor_spec.BoundedTensorSpec((1,), tf.float32, -2, 2)
SAC_SPARSE = 'rigl/rl/tfagents/configs/sac_mujoco_sparse_config.gin'
# tiny.SAC for 60 steps of one-layer networks.
TINY = tiny.SAC + [
    'train_eval.num_iterations = 60', 'train_eval.initial_collect_steps = 64',
    'train_eval.actor_fc_layers = (16,)',
    'train_eval.critic_joint_fc_layers = (16,)',
    'train_eval.eval_interval = 60']


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def method_of(bindings, **settings):
    gin.parse_config(bindings)
    return sparsity_spec.from_gin(sac.SacSettings(**settings))


def test_old_bindings_give_one_method_object():
    method = method_of(
        ["mask_updater.update_alg = 'rigl'", 'init_masks.sparsity = 0.8',
         "init_masks.mask_init_method = 'uniform'",
         'mask_updater.update_freq = 500', 'mask_updater.grow_init = "unif"'],
        train_mode_actor='sparse', train_mode_value='sparse',
        actor_critic_sparsities_str='0.95,0.91')
    assert method.method == 'rigl' and method.update_alg == 'rigl'
    assert (method.sparsity, method.distribution) == (0.8, 'uniform')
    assert method.sparse_networks == ('actor', 'critic')
    assert method.sparsity_of('actor') == 0.95
    assert method.sparsity_of('critic') == 0.91
    assert method.schedule.update_freq == 500 and method.grow_init == 'unif'
    line = method.describe()
    assert line.startswith('sparse method: rigl, sparsity 0.8 uniform, '
                           'actor 0.95, critic 0.91 on actor, critic')
    assert 'every 500 steps' in line
    record = method.as_record()
    assert json.loads(json.dumps(record)) == record
    assert record['overrides'] == {'actor': 0.95, 'critic': 0.91}


def test_dense_static_and_pruning_methods():
    assert method_of([]).method == 'dense'
    assert method_of([], train_mode_value='sparse').method == 'static'
    pruning = method_of(["wrap_all_layers.mode = 'prune'",
                         'wrap_all_layers.final_sparsity = 0.95',
                         'wrap_all_layers.begin_step = 10',
                         'wrap_all_layers.end_step = 50',
                         'wrap_all_layers.frequency = 10'],
                        train_mode_actor='sparse')
    assert (pruning.method, pruning.sparsity, pruning.update_alg) == (
        'prune', 0.95, None)
    assert pruning.schedule.end_step == 50
    assert isinstance(pruning.make_updater(),
                      updaters.MagnitudePruning)


def test_conflicting_and_bad_methods_fail_in_one_line():
    with pytest.raises(ValueError, match="wrap_all_layers.mode is 'prune' "
                       "and mask_updater.update_alg is 'set'"):
        method_of(["wrap_all_layers.mode = 'prune'",
                   "mask_updater.update_alg = 'set'"],
                  train_mode_actor='sparse')
    with pytest.raises(ValueError, match="sparse method 'sett'; allowed: "
                       'dense, dense_matched, static, set, rigl, prune'):
        sparsity_spec.SparseMethod(method='sett', sparsity=0.9,
                                   distribution='uniform')
    with pytest.raises(ValueError, match='sparsity distribution'):
        sparsity_spec.SparseMethod(method='set', sparsity=0.9,
                                   distribution='erk')


def test_counted_every_keeps_the_schedule_in_train_steps():
    method = method_of(["mask_updater.update_alg = 'set'",
                        'mask_updater.update_freq = 1000',
                        'mask_updater.last_update_step = 8000'],
                       train_mode_actor='sparse')
    actor = method.counted_every(2)
    assert (actor.schedule.update_freq, actor.schedule.last_update_step) == (
        500, 4000)
    assert method.counted_every(1) is method


class _GrowWhereMomentIsLargest(updaters.MaskUpdater):
    """A toy rule: regrow where Adam's first moment is largest (the grow
    hook sees the optimizer state)."""

    def grow_scores(self, step, layer_index, kernel, dense_grad, slots):
        return tf.abs(slots[0]) + tf.abs(dense_grad)


def test_a_new_rule_is_one_registered_class(tmp_path):
    name = 'grow_by_moment'
    updaters.register(name)(_GrowWhereMomentIsLargest)
    try:
        code, out, err = helpers.run_in_process(
            'sac', tmp_path / 'run', SAC_SPARSE, TINY + [
                f"mask_updater.update_alg = '{name}'",
                'mask_updater.update_freq = 20',
                'mask_updater.last_update_step = 40'])
        assert code == 0, err
        assert f'sparse method: {name}, sparsity 0.9' in out
        row = helpers.results(tmp_path / 'run')[-1]
        assert (row['method'], row['update_alg']) == (name, name)
        assert row['sparse_method']['schedule']['update_freq'] == 20
    finally:
        del updaters.UPDATERS[name]


def test_algorithm_builds_masks_and_updaters_from_the_method():
    gin.parse_config(["mask_updater.update_alg = 'set'",
                      'mask_updater.update_freq = 7',
                      "init_masks.mask_init_method = 'uniform'"])
    settings = settings_lib.build(sac.SacSettings, dict(
        actor_fc_layers=(8,), critic_joint_fc_layers=(8,),
        train_mode_actor='sparse', train_mode_value='sparse',
        actor_critic_sparsities_str='0.5,0.75'), 'SAC')
    algorithm = sac.Sac(settings, OBS, ACT, seed=0)
    assert algorithm.sparse_method.method == 'set'
    for name, expected in (('actor', 0.5), ('critic_1', 0.75)):
        masks = [layer.mask.numpy() for layer in
                 sparse_layers.masked_layers(algorithm.networks[name])]
        zeros = sum(int((m == 0).sum()) for m in masks)
        assert zeros / sum(m.size for m in masks) == pytest.approx(
            expected, abs=0.02)
    for optimizer in algorithm.masked_optimizers.values():
        assert isinstance(optimizer.updater, updaters.SETUpdater)
        assert optimizer.updater.update_freq == 7
        assert optimizer.updater._seed is not None  # the run's stream
    seeds = {o.updater._seed for o in algorithm.masked_optimizers.values()}
    assert len(seeds) == 2 and np.all([s >= 0 for s in seeds])


def test_parameter_matched_width_by_hand():
    # [4, 8, 8, 2] at uniform 0.5, output sparse too: active kernels
    # 0.5 * (32 + 64 + 16) = 56, plus 18 biases = 74. Dense with u hidden
    # units: u^2 + 8u + 2: u = 5 gives 67 (closest), u = 6 gives 86.
    method = sparsity_spec.SparseMethod(
        method='static', sparsity=0.5, distribution='uniform',
        sparse_networks=('q_network',), sparse_output_layer=True)
    assert width_lib.matched_dense_width([4, 8, 8, 2], method,
                                         'q_network') == (5 / 8, 67, 74)


def test_match_dense_params_trains_dense_at_the_matched_width():
    from rigl.rl.tfagents.algos import dqn
    observation = tensor_spec.BoundedTensorSpec((4,), tf.float32, -1, 1)
    action = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 1)
    gin.parse_config(["init_masks.mask_init_method = 'uniform'",
                      'init_masks.sparsity = 0.5'])
    settings = settings_lib.build(dqn.DqnSettings, dict(
        fc_layer_params=(8, 8), train_mode='sparse',
        sparse_output_layer=True, match_dense_params=True), 'DQN')
    algorithm = dqn.Dqn(settings, observation, action, seed=0)
    assert algorithm.sparse_method.method == 'dense_matched'
    assert algorithm.sparse_method.matched_to.method == 'static'
    layers = sparse_layers.kernel_layers(algorithm.networks['q_network'])
    assert [tuple(layer.kernel.shape) for layer in layers] == [
        (4, 5), (5, 5), (5, 2)]
    assert not sparse_layers.masked_layers(algorithm.networks['q_network'])


def test_match_dense_params_needs_a_sparse_config():
    with pytest.raises(ValueError, match='match_dense_params needs a sparse '
                       'config to match'):
        method_of([], match_dense_params=True)


def test_wide_sparsity_keeping_the_active_count_by_hand():
    # [4, 8, 8, 2] uniform 0.5 with a sparse output layer: 74 active at
    # width 1 (56 kernel weights + 18 biases). At width 2 ([4, 16, 16, 2])
    # biases are 34, kernels 64 + 256 + 32 = 352: density 40 / 352.
    method = sparsity_spec.SparseMethod(
        method='static', sparsity=0.5, distribution='uniform',
        sparse_networks=('q_network',), sparse_output_layer=True)
    sparsity, budget = width_lib.sparsity_keeping_active_count(
        [4, 8, 8, 2], method, 'q_network', 2.0)
    assert budget == 74
    assert sparsity == pytest.approx(1 - 40 / 352, abs=1e-6)
    with pytest.raises(ValueError, match='no sparsity keeps'):
        width_lib.sparsity_keeping_active_count([4, 8, 8, 2], method,
                                                'q_network', 0.5)


def test_keep_active_count_builds_wider_sparser_networks():
    from rigl.rl.tfagents.algos import dqn
    observation = tensor_spec.BoundedTensorSpec((4,), tf.float32, -1, 1)
    action = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 1)
    gin.parse_config(["init_masks.mask_init_method = 'uniform'",
                      'init_masks.sparsity = 0.5'])
    settings = settings_lib.build(dqn.DqnSettings, dict(
        fc_layer_params=(8, 8), train_mode='sparse', width=2.0,
        sparse_output_layer=True, keep_active_count=True,
        sparse_execution='masked'), 'DQN')
    algorithm = dqn.Dqn(settings, observation, action, seed=0)
    method = algorithm.sparse_method
    assert method.keep_active_count and method.sparsity == 0.5
    assert method.sparsity_of('q_network') == pytest.approx(1 - 40 / 352,
                                                            abs=1e-6)
    layers = sparse_layers.masked_layers(algorithm.networks['q_network'])
    assert [tuple(layer.mask.shape) for layer in layers] == [
        (4, 16), (16, 16), (16, 2)]
    active = sum(int(np.sum(layer.mask.numpy())) + layer.mask.shape[1]
                 for layer in layers)
    assert abs(active - 74) <= 3  # whole weights per layer
    # Honest records: the derived sparsity is in the run's sparse method.
    assert method.as_record()['overrides']['q_network'] > 0.88


def test_keep_active_count_needs_a_sparse_config():
    with pytest.raises(ValueError, match='keep_active_count needs a sparse'):
        method_of([], keep_active_count=True)
