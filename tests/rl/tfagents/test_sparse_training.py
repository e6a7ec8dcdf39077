"""Invariants of sparse layers, mask updaters and gradual pruning.

Small networks, real optimizer steps, graph mode (tf.function) throughout.
"""

import math

import gin
import numpy as np
import pytest

import rigl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from rigl import sparse_utils
from rigl.rl.tfagents.sparsity import masked_optimizer
from rigl.rl.tfagents.sparsity import updaters
from rigl.rl.tfagents import networks
from rigl.rl.tfagents import sparse_agents
from rigl.rl.tfagents import sparse_layers

OBS_SPEC = tensor_spec.BoundedTensorSpec([6], tf.float32, -1, 1)
ACT_SPEC = tensor_spec.BoundedTensorSpec([2], tf.float32, -1, 1)


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def sparse_mlp(units=(16, 16, 3), input_size=6, sparsity=0.75, seed=0,
               mode='constant', **wrap_kwargs):
    """A Keras MLP of MaskedLayers, built, with random masks."""
    layers = [tf.keras.layers.Dense(u, activation='relu' if i < len(units) - 1
                                    else None)
              for i, u in enumerate(units)]
    layers = sparse_layers.wrap_all_layers(layers, input_size, mode=mode,
                                           **wrap_kwargs)
    model = tf.keras.Sequential(layers)
    model.build((None, input_size))
    if sparsity:
        sparse_layers.init_masks(model, sparsity=sparsity,
                                 mask_init_method='uniform', seed=seed)
    return model


def make_trainer(model, updater, optimizer=None, input_shape=(6,)):
    """A graph-mode regression train step through a MaskedOptimizer."""
    optimizer = optimizer or tf.keras.optimizers.Adam(1e-2)
    masked = masked_optimizer.MaskedOptimizer(optimizer, [model], updater)
    step = masked.steps
    inputs = tf.random.stateless_normal([32, *input_shape], [1, 2])
    targets = tf.random.stateless_normal([32, model.layers[-1].layer.units
                                          if hasattr(model.layers[-1], 'layer')
                                          else model.layers[-1].units], [3, 4])

    @tf.function(autograph=False)
    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(inputs) - targets) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        masked.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return train_step, step, masked


def run_update(updater, step, layers, grads, slots):
    """Runs one mask update in graph mode."""

    @tf.function(autograph=False)
    def update():
        updater.update(tf.constant(step, tf.int64), layers, grads, slots)

    update()


def masks_of(model):
    return [layer.mask.numpy().copy() for layer in
            sparse_layers.masked_layers(model)]


def assert_masked_zero(model):
    for layer in sparse_layers.masked_layers(model):
        kernel, mask = layer.kernel.numpy(), layer.mask.numpy()
        assert np.all(kernel[mask == 0] == 0.0)


@pytest.mark.parametrize('alg, optimizer', [
    ('static', 'adam'), ('set', 'adam'), ('rigl', 'adam'), ('rigl', 'adamw')])
def test_masked_weights_zero_and_counts_constant(alg, optimizer):
    model = sparse_mlp()
    updater = updaters.mask_updater(alg, update_freq=3,
                                    init_drop_fraction=0.5,
                                    schedule_alg='constant')
    train_step, step, _ = make_trainer(
        model, updater, tf.keras.optimizers.AdamW(1e-2, weight_decay=0.1)
        if optimizer == 'adamw' else None)
    counts = [int(m.sum()) for m in masks_of(model)]
    initial = masks_of(model)
    for _ in range(10):
        train_step()
        assert_masked_zero(model)
        assert [int(m.sum()) for m in masks_of(model)] == counts
    changed = sum(int((a != b).sum()) for a, b in zip(initial,
                                                       masks_of(model)))
    if alg == 'static':
        assert changed == 0
    else:
        assert changed > 0
    # Steps 0, 3, 6, 9 updated.
    assert step.numpy() == 10


def reference_mask_update(mask, weight, moments, grow_score,
                          drop_fraction, reinit_when_same=False):
    """The original's `generic_mask_update` rule in numpy, written from its
    semantics: keep the n_keep = a - int(a * d) largest |mask * w| (ties to
    the lower flat index), grow int(a * d) of the others by largest score
    (same ties), start at 0 (weight and moments) only connections that
    were inactive before (also the just-dropped ones with
    `reinit_when_same`). Returns (mask, effective weight, moments, grown),
    the weight and moments as the network sees them: 0 where masked."""
    flat_mask, flat_weight = mask.reshape(-1), weight.reshape(-1)
    active = int(flat_mask.sum())
    num_drop = int(np.float32(active) * np.float32(drop_fraction))
    by_drop_score = np.argsort(-np.abs(flat_mask * flat_weight),
                               kind='stable')
    kept = np.zeros_like(flat_mask)
    kept[by_drop_score[:active - num_drop]] = 1
    lifted = np.where(kept == 1, -np.inf, grow_score.reshape(-1))
    grown = np.zeros_like(flat_mask)
    grown[np.argsort(-lifted, kind='stable')[:num_drop]] = 1
    restarted = grown if reinit_when_same else grown * (flat_mask == 0)
    new_mask = kept + grown
    keep_state = (new_mask - restarted).reshape(mask.shape)
    return (new_mask.reshape(mask.shape), weight * keep_state,
            [moment * keep_state for moment in moments],
            grown.reshape(mask.shape) > 0)


@pytest.mark.parametrize('alg, reinit_when_same', [
    ('rigl', False), ('rigl', True), ('set', False)])
def test_mask_update_follows_the_original_rule(alg, reinit_when_same):
    model = sparse_mlp(sparsity=0.5, seed=2)
    updater = updaters.mask_updater(
        alg, update_freq=1000, init_drop_fraction=0.3,
        schedule_alg='constant', seed=5, reinit_when_same=reinit_when_same)
    train_step, _, masked = make_trainer(model, updater)
    train_step()  # creates the Adam moments (step 0 updates masks too)
    layer = sparse_layers.masked_layers(model)[1]  # 16x16, 128 active
    rng = np.random.default_rng(4)
    mask = layer.mask.numpy()
    weight = layer.kernel.numpy()
    # Ties in the drop score: three active weights exactly 0.
    weight[np.nonzero(mask)[0][:3], np.nonzero(mask)[1][:3]] = 0.0
    layer.kernel.assign(weight)
    slots = masked_optimizer.optimizer_slots(masked.optimizer, layer.kernel)
    moments = [rng.uniform(0.5, 1.0, weight.shape).astype(np.float32) * mask
               for _ in slots]
    for slot, moment in zip(slots, moments):
        slot.assign(moment)
    # The gradient favours the just-dropped positions (|w| small), as RigL's
    # often does, and has ties.
    grad = np.round(rng.normal(size=weight.shape), 1).astype(np.float32)
    grad[(mask > 0) & (np.abs(weight) < 0.1)] = 5.0
    if alg == 'set':
        grow_score = updater.grow_scores(tf.constant(1000, tf.int64), 0,
                                         layer.kernel, grad, slots).numpy()
    else:
        grow_score = np.abs(grad)
    expected_mask, expected_weight, expected_moments, grown = (
        reference_mask_update(mask, weight, moments, grow_score, 0.3,
                              reinit_when_same))

    @tf.function(autograph=False)
    def update():
        return updater.update(tf.constant(1000, tf.int64), [layer],
                              [tf.constant(grad)], [slots])

    stats = update().numpy()[0]
    np.testing.assert_array_equal(layer.mask.numpy(), expected_mask)
    np.testing.assert_array_equal(layer.kernel.numpy(), expected_weight)
    for slot, expected in zip(slots, expected_moments):
        np.testing.assert_array_equal(slot.numpy(), expected)
    assert int(expected_mask.sum()) == 128
    # The statistics: int(0.3 * 128) = 38 grown, some where just dropped.
    regrown_same = int((grown & (mask > 0)).sum())
    assert stats[0] == 38 == int(grown.sum())
    assert stats[1] == regrown_same
    if alg == 'rigl':
        assert regrown_same > 0  # the case where the original keeps state


@pytest.mark.parametrize('grow_init, bound', [
    ('unif', 1 / math.sqrt(16)), ('xavier', math.sqrt(12 / (16 + 16)))])
def test_grown_connections_share_one_value_within_anf_bounds(grow_init,
                                                             bound):
    values = {}
    for step in (0, 1000, 0):
        model = sparse_mlp(sparsity=0.5, seed=3)
        updater = updaters.mask_updater(
            'set', init_drop_fraction=0.3, schedule_alg='constant', seed=11,
            grow_init=grow_init)
        layers = sparse_layers.masked_layers(model)
        old_masks = [layer.mask.numpy() > 0 for layer in layers]
        old_kernels = [layer.kernel.numpy() for layer in layers]
        run_update(updater, step, layers,
                   [tf.zeros_like(layer.kernel) for layer in layers],
                   [[] for _ in layers])
        layer_values = []
        for layer, old_mask, old_kernel in zip(layers, old_masks,
                                               old_kernels):
            new_mask = layer.mask.numpy() > 0
            kernel = layer.kernel.numpy()
            grown = new_mask & ~old_mask
            assert grown.sum() > 0
            value = kernel[grown][0]
            assert np.all(kernel[grown] == value)  # one shared value
            assert value != 0.0
            # Active before and after: kept (old value) or dropped and
            # regrown at once (the shared value).
            stayed = new_mask & old_mask
            assert np.all((kernel[stayed] == old_kernel[stayed]) |
                          (kernel[stayed] == value))
            assert np.all(kernel[~new_mask] == 0.0)
            layer_values.append(float(value))
        # Layer 1 is 16x16: check its bound; every value inside its own.
        assert abs(layer_values[1]) <= bound
        values.setdefault(step, []).append(layer_values)
    assert values[0][0] == values[0][1]       # same (seed, step): same values
    assert values[0][0] != values[1000][0]    # another update step: new draw


def test_grow_init_rejects_unknown_names():
    with pytest.raises(ValueError, match="grow_init is 'normal'; allowed: "
                       "zero, unif, xavier"):
        updaters.mask_updater('set', grow_init='normal')


def test_rigl_grows_where_dense_gradient_is_largest():
    model = sparse_mlp(sparsity=0.5)
    updater = updaters.mask_updater('rigl', init_drop_fraction=0.25,
                                    schedule_alg='constant')
    layer = sparse_layers.masked_layers(model)[1]
    old_mask = layer.mask.numpy()
    inactive = np.flatnonzero(old_mask.reshape(-1) == 0)
    # 128 active -> drop floor(0.25*128) = 32; give 32 chosen inactive
    # positions the largest gradients (10..41) and the rest small ones.
    chosen = inactive[::3][:32]
    grad = np.random.default_rng(0).uniform(-1, 1, old_mask.size)
    grad[chosen] = np.arange(10, 42) * np.where(np.arange(32) % 2, 1, -1)
    grad = tf.constant(grad.reshape(old_mask.shape), tf.float32)
    run_update(updater, 0, [layer], [grad], [[]])
    new_mask = layer.mask.numpy().reshape(-1)
    assert np.all(new_mask[chosen] == 1.0)
    assert int(new_mask.sum()) == 128


def test_set_grows_only_outside_kept_and_is_seeded():
    results = []
    for _ in range(2):
        model = sparse_mlp(sparsity=0.5, seed=5)
        updater = updaters.mask_updater('set', init_drop_fraction=0.5,
                                        schedule_alg='constant', seed=7)
        layer = sparse_layers.masked_layers(model)[1]
        layer.kernel.assign(tf.reshape(tf.range(1.0, 257.0), [16, 16]) *
                            layer.mask)
        old = layer.mask.numpy() > 0
        kernel = layer.kernel.numpy()
        run_update(updater, 0, [layer], [tf.zeros_like(layer.kernel)], [[]])
        new = layer.mask.numpy() > 0
        # Kept: the 64 largest |w| among the 128 active.
        threshold = np.sort(kernel[old])[64]
        kept = old & (kernel >= threshold)
        assert int(kept.sum()) == 64
        assert np.all(new[kept])
        assert int(new.sum()) == 128
        results.append(new)
    np.testing.assert_array_equal(results[0], results[1])


def test_drop_fraction_schedules():
    cosine = updaters.mask_updater('set', init_drop_fraction=0.5,
                                   schedule_alg='cosine',
                                   last_update_step=1000)
    values = [float(cosine.drop_fraction(tf.constant(t, tf.int64)))
              for t in (0, 250, 500, 1000, 2000)]
    # 0.5 * 0.5 * (1 + cos(pi * t / 1000)): 0.5, 0.4268, 0.25, 0, 0.
    np.testing.assert_allclose(
        values, [0.5, 0.25 * (1 + math.cos(math.pi / 4)), 0.25, 0.0, 0.0],
        atol=1e-6)
    constant = updaters.mask_updater('rigl', init_drop_fraction=0.2,
                                     schedule_alg='constant')
    assert float(constant.drop_fraction(tf.constant(900, tf.int64))) == \
        pytest.approx(0.2)
    # The learning-rate schedule: lr decays 1e-3 -> 1e-4 linearly over 100.
    schedule = tf.keras.optimizers.schedules.PolynomialDecay(1e-3, 100, 1e-4)
    updater = updaters.mask_updater('set', init_drop_fraction=0.4,
                                    schedule_alg='learning_rate')
    model = sparse_mlp()
    masked_optimizer.MaskedOptimizer(tf.keras.optimizers.Adam(schedule),
                                     [model], updater)
    # At step 50 lr = 5.5e-4 -> d = 0.4 * 0.55 = 0.22.
    assert float(updater.drop_fraction(tf.constant(50, tf.int64))) == \
        pytest.approx(0.22, rel=1e-5)


def test_update_steps():
    updater = updaters.mask_updater('rigl', update_freq=100,
                                    begin_step=200, last_update_step=500)
    steps = [t for t in range(0, 800, 50)
             if bool(updater.is_update_step(tf.constant(t, tf.int64)))]
    assert steps == [200, 300, 400, 500]
    static = updaters.mask_updater('')
    assert not bool(static.is_update_step(tf.constant(0, tf.int64)))
    # As the original's is_update_iter: 0 never updates, < 0 has no end.
    never = updaters.mask_updater('set', schedule_alg='constant',
                                  last_update_step=0)
    endless = updaters.mask_updater('set', schedule_alg='constant',
                                    last_update_step=-1, update_freq=10)
    assert not any(bool(never.is_update_step(tf.constant(t, tf.int64)))
                   for t in (0, 1000))
    assert [t for t in (0, 5, 10, 10 ** 9)
            if bool(endless.is_update_step(tf.constant(t, tf.int64)))] == [
                0, 10, 10 ** 9]
    with pytest.raises(ValueError, match="'cosine' anneals to 0 at "
                       'last_update_step, which must be positive; got -1'):
        updaters.mask_updater('set', last_update_step=-1)


def test_before_step_timing_applies_the_step_under_the_new_masks():
    # DQN's and PPO's timing: the update uses the step's gradients, then the
    # step moves the grown connections off 0 at once.
    model = sparse_mlp(sparsity=0.5, seed=1)
    updater = updaters.mask_updater('rigl', update_freq=1000,
                                    init_drop_fraction=0.5,
                                    schedule_alg='constant')
    train_step, _, _ = make_trainer(model, updater)
    before = masks_of(model)
    train_step()  # step 0: update, then the step
    for layer, old in zip(sparse_layers.masked_layers(model), before):
        new = layer.mask.numpy() > 0
        grown = new & (old == 0)
        assert grown.sum() > 0
        assert np.all(layer.kernel.numpy()[grown] != 0.0)
        assert np.all(layer.kernel.numpy()[~new] == 0.0)


def test_after_step_timing_updates_with_recomputed_gradients():
    # SAC's timing: apply_gradients only notes that the update is due; the
    # update then uses gradients computed at the stepped weights.
    model = sparse_mlp(sparsity=0.5, seed=1)
    updater = updaters.mask_updater('rigl', update_freq=2,
                                    init_drop_fraction=0.25,
                                    schedule_alg='constant')
    masked = masked_optimizer.MaskedOptimizer(
        tf.keras.optimizers.Adam(1e-2), [model], updater,
        update_timing='after_step')
    layers = sparse_layers.masked_layers(model)
    seen = []

    def gradients(kernels):
        seen.append(True)
        # Favours the first positions that are inactive now (after the step).
        return [tf.where(layer.mask > 0, 0.0, 1.0) * tf.reshape(
            tf.range(tf.size(layer.mask), 0, -1, dtype=tf.float32),
            tf.shape(layer.mask)) for layer in layers]

    inputs = tf.random.stateless_normal([8, 6], [1, 2])

    @tf.function(autograph=False)
    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(inputs) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        applied = masked.apply_gradients(zip(grads,
                                             model.trainable_variables))
        with tf.control_dependencies([applied]):
            masks_after_step = [tf.identity(layer.mask) for layer in layers]
        with tf.control_dependencies(masks_after_step):
            updated = masked.update_masks_after_step(gradients)
        with tf.control_dependencies([updated]):
            return masks_after_step, [tf.identity(layer.mask)
                                      for layer in layers]

    for step in range(3):
        old = masks_of(model)
        after_step, after_update = train_step()
        for mask, mid in zip(old, after_step):
            np.testing.assert_array_equal(mid.numpy(), mask)
        changed = any(np.any(a.numpy() != m) for a, m in zip(after_update,
                                                             old))
        assert changed == (step % 2 == 0)
        if step == 0:
            for mask, new in zip(old, after_update):
                flat_old, flat_new = mask.reshape(-1), new.numpy().reshape(-1)
                grown = np.flatnonzero((flat_new > 0) & (flat_old == 0))
                inactive = np.flatnonzero(flat_old == 0)
                np.testing.assert_array_equal(grown, inactive[:len(grown)])
    assert seen  # traced into the update branch


def test_gradual_pruning_schedule():
    # begin 4, end 12, every 4 steps; global final 0.8 spread by 'uniform'
    # over the three layers (none dense), initial 0.
    model = sparse_mlp(sparsity=0.0, mode='prune', initial_sparsity=0.0,
                       final_sparsity=0.8, mask_init_method='uniform',
                       begin_step=4, end_step=12, frequency=4)
    train_step, step, _ = make_trainer(model, updaters.mask_updater(''))
    sizes = [6 * 16, 16 * 16, 16 * 3]
    for _ in range(4):  # steps 0..3: nothing pruned
        train_step()
        assert all(m.all() for m in masks_of(model))
    for _ in range(5):  # steps 4..8
        train_step()
    # At step 8: p = 4/8, s = 0.8 * (1 - (1 - 0.5)^3) = 0.7.
    zeros = [int((m == 0).sum()) for m in masks_of(model)]
    assert zeros == [math.floor(0.7 * n) for n in sizes]
    for _ in range(4):  # steps 9..12: 12 prunes to the final 0.8
        train_step()
    assert [int((m == 0).sum()) for m in masks_of(model)] == \
        [math.floor(0.8 * n) for n in sizes]   # 76, 204, 38
    assert_masked_zero(model)


def test_pruning_finals_follow_distribution_and_dense_output():
    layers = [tf.keras.layers.Dense(u) for u in (16, 16, 3)]
    wrapped = sparse_layers.wrap_all_layers(
        layers, 6, dense_layers=[-1], mode='prune', final_sparsity=0.8,
        mask_init_method='erdos_renyi_kernel', begin_step=0, end_step=10,
        frequency=5)
    assert isinstance(wrapped[2], tf.keras.layers.Dense)
    expected = sparse_utils.get_sparsities([(6, 16), (16, 16), (16, 3)],
                                           'erdos_renyi_kernel', 0.8,
                                           dense_layers=[2])
    finals = [w.pruning_schedule.final_sparsity for w in wrapped[:2]]
    np.testing.assert_allclose(finals, expected[:2])


def build_sac(update_alg, tau=0.05):
    gin.bind_parameter('mask_updater.update_alg', update_alg)
    gin.bind_parameter('mask_updater.update_freq', 2)
    gin.bind_parameter('mask_updater.init_drop_fraction', 0.5)
    gin.bind_parameter('mask_updater.schedule_alg', 'constant')
    actor = networks.create_sac_actor_network(OBS_SPEC, ACT_SPEC, (16, 16),
                                              'sparse', True)
    critics = [networks.create_sac_critic_network(OBS_SPEC, ACT_SPEC,
                                                  (16, 16), 'sparse', False)
               for _ in range(2)]
    actor.create_variables(OBS_SPEC)
    sparse_layers.init_masks(actor, sparsity=0.8, seed=1)
    for seed, critic in enumerate(critics):
        critic.create_variables((OBS_SPEC, ACT_SPEC))
        sparse_layers.init_masks(critic, sparsity=0.8, seed=10 + seed)
    agent = sparse_agents.SparseSacAgent(
        ts.time_step_spec(OBS_SPEC), ACT_SPEC, critic_network=critics[0],
        critic_network_2=critics[1], actor_network=actor,
        actor_optimizer=tf.keras.optimizers.Adam(1e-3),
        critic_optimizer=tf.keras.optimizers.Adam(1e-3),
        alpha_optimizer=tf.keras.optimizers.Adam(1e-3),
        target_update_tau=tau,
        train_step_counter=tf.Variable(0, dtype=tf.int64))
    agent.initialize()
    return agent, actor, critics


def random_experience(batch=8):
    return trajectory.Trajectory(
        step_type=tf.zeros([batch, 2], tf.int32),
        observation=tf.random.stateless_uniform([batch, 2, 6], [0, 1], -1, 1),
        action=tf.random.stateless_uniform([batch, 2, 2], [0, 2], -1, 1),
        policy_info=(), next_step_type=tf.ones([batch, 2], tf.int32),
        reward=tf.random.stateless_normal([batch, 2], [0, 3]),
        discount=tf.ones([batch, 2]))


def test_sac_targets_carry_masks():
    agent, actor, critics = build_sac('rigl')
    train = tf.function(agent.train, autograph=False)
    initial = [masks_of(c) for c in critics]
    counts = [[int(m.sum()) for m in masks] for masks in initial]
    for _ in range(5):
        train(random_experience())
        for net in [actor] + critics + agent.target_networks:
            assert_masked_zero(net)
        for online, target in zip(critics, agent.target_networks):
            for a, b in zip(masks_of(online), masks_of(target)):
                np.testing.assert_array_equal(a, b)
        assert [[int(m.sum()) for m in masks_of(c)] for c in critics] == counts
    assert any(not np.array_equal(a, b)
               for a, b in zip(initial[0], masks_of(critics[0])))
    # The two critics have different masks (each drawn with its own seed).
    assert not np.array_equal(masks_of(critics[0])[0], masks_of(critics[1])[0])


def test_sac_targets_follow_polyak_averaging():
    """After a train step each target kernel is (1 - tau) * its old value +
    tau * the online kernel (masks copied), as TF-Agents' soft update."""
    agent, _, critics = build_sac('', tau=0.05)
    targets = agent.target_networks
    before = [[v.numpy() for v in t.variables] for t in targets]
    tf.function(agent.train, autograph=False)(random_experience())
    for online, target, old in zip(critics, targets, before):
        for source, destination, previous in zip(online.variables,
                                                 target.variables, old):
            expected = (0.95 * previous + 0.05 * source.numpy()
                        if destination.trainable else source.numpy())
            np.testing.assert_allclose(destination.numpy(), expected,
                                       rtol=1e-5, atol=1e-7)
        assert any(not np.allclose(d.numpy(), p) for d, p in
                   zip(target.variables, old) if d.trainable)


def test_sac_alpha_loss_reuses_the_actor_loss_sample():
    """The compiled SAC step samples the actor twice (next state for the
    critic loss, state for the actor loss); the alpha loss reuses the actor
    loss's log-probabilities. Called alone, the alpha loss samples."""
    agent, _, _ = build_sac('')
    # traced once: inspected, then run
    train = tf.function(agent.train, autograph=False)
    graph = train.get_concrete_function(random_experience()).graph
    names = [op.name for op in graph.get_operations()]

    def actor_ops(scope):
        return [n for n in names if n.startswith(scope + '/')
                and 'ActorNetwork' in n]

    assert actor_ops('critic_loss') and actor_ops('actor_loss')
    assert not actor_ops('alpha_loss')
    log_alpha = float(agent._log_alpha)
    train(random_experience())
    assert float(agent._log_alpha) != log_alpha
    time_steps = ts.restart(tf.zeros([4, 6]), batch_size=4)
    assert np.isfinite(float(agent.alpha_loss(time_steps)))


def test_squashed_normal_sample_scores_as_tfp():
    """SAC's sample and log-probability from the pre-tanh value match the
    TF-Agents distribution's own log_prob of the same action, within the
    action bounds."""
    from tf_agents.distributions import utils as distribution_utils
    import tensorflow_probability as tfp
    spec = tensor_spec.BoundedTensorSpec([3], tf.float32, [-1, -2, 0],
                                         [1, 2, 4])
    loc = tf.random.stateless_normal([500, 3], [1, 2])
    scale = tf.exp(tf.random.stateless_uniform([500, 3], [3, 4], -1, 0.5))
    distribution = distribution_utils.scale_distribution_to_spec(
        tfp.distributions.MultivariateNormalDiag(loc=loc, scale_diag=scale),
        spec)
    actions, log_pi = sparse_agents.squashed_normal_sample(
        distribution, tf.constant([5, 6]))
    assert np.all(actions.numpy() > spec.minimum)
    assert np.all(actions.numpy() < spec.maximum)
    inside = np.all(np.abs(actions.numpy() - [0, 0, 2]) <
                    0.999 * np.array([1, 2, 2]), axis=1)
    assert inside.sum() > 400
    np.testing.assert_allclose(
        log_pi.numpy()[inside],
        distribution.log_prob(actions).numpy()[inside], rtol=1e-3, atol=1e-3)
    again, _ = sparse_agents.squashed_normal_sample(distribution,
                                                    tf.constant([5, 6]))
    np.testing.assert_array_equal(again.numpy(), actions.numpy())  # seeded


@pytest.mark.parametrize('mode, decay, moved', [
    ('original', ('hidden_kernels', 2.0), ['kernel_0']),
    ('original', ('kernels', 1.0), ['kernel_0', 'kernel_1']),
    ('anf', ('kernels', 2.0), ['kernel_0', 'bias_0', 'kernel_1', 'bias_1']),
])
def test_coupled_weight_decay_acts_on_its_variables(mode, decay, moved):
    """A coupled L2 penalty adds factor * weight_decay * w to the gradients
    of exactly its variables: with zero loss gradients, Adam's first step
    moves those by lr towards 0 and leaves the others."""
    from rigl.rl.tfagents.algos import optimizers
    model = tf.keras.Sequential([tf.keras.layers.Dense(4),
                                 tf.keras.layers.Dense(2)])
    model.build((None, 3))
    for variable in model.trainable_variables:
        variable.assign(tf.random.stateless_uniform(variable.shape, [1, 2],
                                                    0.5, 1.0))
    names = {v.ref(): f'{v.name.rsplit("/", 1)[-1].split(":")[0]}_{i // 2}'
             for i, v in enumerate(model.trainable_variables)}
    before = {names[v.ref()]: v.numpy() for v in model.trainable_variables}
    optimizer = optimizers.make_optimizer(1e-2, 1e-3, mode=mode,
                                          network_list=[model], decay=decay)
    factor = optimizers.ANF_DECAY[1] if mode == 'anf' else decay[1]
    assert set(optimizer._l2.coefficients.values()) == {factor * 1e-3}
    optimizer.apply_gradients([(tf.zeros_like(v), v)
                               for v in model.trainable_variables])
    for variable in model.trainable_variables:
        name = names[variable.ref()]
        if name in moved:
            # lr * g / (|g| + epsilon): 1% below lr for these tiny g.
            np.testing.assert_allclose(variable.numpy(), before[name] - 1e-2,
                                       atol=1e-4)
        else:
            np.testing.assert_array_equal(variable.numpy(), before[name])


def test_decoupled_weight_decay_is_adamw_and_bad_modes_fail():
    from rigl.rl.tfagents.algos import optimizers
    assert isinstance(optimizers.make_optimizer(1e-3, 1e-4, mode='decoupled'),
                      optimizers.FusedAdamW)
    with pytest.raises(ValueError, match="weight_decay_mode is 'l1'; "
                       'allowed: original, anf, decoupled'):
        optimizers.make_optimizer(1e-3, 1e-4, mode='l1')


@pytest.mark.parametrize('weight_decay', [0.0, 0.01])
def test_fused_adam_steps_as_keras_adam(weight_decay):
    """`make_optimizer`'s fused update gives Keras Adam's (AdamW's) weights
    and moments."""
    from rigl.rl.tfagents.algos import optimizers
    keras = (tf.keras.optimizers.AdamW(1e-2, weight_decay=weight_decay)
             if weight_decay else tf.keras.optimizers.Adam(1e-2))
    fused = optimizers.make_optimizer(1e-2, weight_decay, mode='decoupled')
    assert isinstance(fused, optimizers.FusedAdamW if weight_decay
                      else optimizers.FusedAdam)
    start = [tf.random.stateless_normal(shape, [0, i])
             for i, shape in enumerate([(5, 3), (3,)])]
    weights = {name: [tf.Variable(w) for w in start]
               for name in ('keras', 'fused')}
    # as in a train step
    fused_step = tf.function(fused.apply_gradients, autograph=False)
    for step in range(6):
        grads = [tf.random.stateless_normal(w.shape, [step, 7 + i])
                 for i, w in enumerate(start)]
        keras.apply_gradients(list(zip(grads, weights['keras'])))
        fused_step(list(zip(grads, weights['fused'])))
    for a, b, initial in zip(weights['keras'], weights['fused'], start):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5,
                                   atol=1e-6)
        assert np.abs(b.numpy() - initial.numpy()).min() > 1e-3  # moved
    for slots in ('_momentums', '_velocities'):
        for a, b in zip(getattr(keras, slots), getattr(fused, slots)):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4,
                                       atol=1e-8)


def test_masks_restore_with_checkpoint(tmp_path):
    model = sparse_mlp(seed=3)
    saved = masks_of(model)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / 'ckpt'))
    other = sparse_mlp(seed=4)
    assert not np.array_equal(masks_of(other)[1], saved[1])
    tf.train.Checkpoint(model=other).restore(path).assert_consumed()
    for a, b in zip(masks_of(other), saved):
        np.testing.assert_array_equal(a, b)


def test_stats_of_network():
    model = sparse_mlp(units=(16, 16, 3), sparsity=0.75)
    stats = sparse_layers.network_stats(model)
    # uniform 0.75: zeros floor(.75*96)=72, floor(.75*256)=192,
    # floor(.75*48)=36
    assert [l.active_weights for l in stats.layers] == [24, 64, 12]
    expected = sparse_utils.network_stats([(6, 16), (16, 16), (16, 3)],
                                          masks_of(model))
    assert stats.flops == expected.flops


@pytest.mark.parametrize('kwargs, message', [
    (dict(update_alg='magic'), r"update_alg is 'magic'; allowed: '' "
                               r"\(static\), static, set, rigl"),
    (dict(update_alg='set', init_drop_fraction=1.5),
     r'mask_updater.init_drop_fraction must be a finite number in \[0, 1\], '
     r'got 1\.5'),
    (dict(update_alg='set', init_drop_fraction='0.3'),
     r"mask_updater.init_drop_fraction must be a finite number .*got '0\.3'"),
    (dict(update_alg='set', init_drop_fraction=float('nan')), r'got nan'),
    (dict(update_alg='set', init_drop_fraction=-0.1), r'got -0\.1'),
    (dict(update_alg='rigl', update_freq=0),
     r'mask_updater.update_freq must be an integer >= 1, got 0'),
    (dict(update_alg='set', seed=-1),
     r'mask_updater.seed must be an integer >= 0 or None, got -1'),
    (dict(update_alg='rigl', schedule_alg='linear'),
     r"schedule_alg is 'linear'; allowed: constant, cosine, learning_rate"),
])
def test_bad_updater_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        updaters.mask_updater(**kwargs)


def test_bad_sparsity_and_mode():
    model = sparse_mlp(sparsity=0.0)
    with pytest.raises(ValueError, match=r'sparsity must be in \[0, 1\), '
                                         r'got 1\.0'):
        sparse_layers.init_masks(model, sparsity=1.0)
    with pytest.raises(ValueError, match=r"mode is 'sparse'; allowed: "
                                         'constant, prune'):
        sparse_layers.wrap_all_layers([tf.keras.layers.Dense(2)], 3,
                                      mode='sparse')
    with pytest.raises(ValueError, match='must be positive and divide'):
        sparse_layers.wrap_all_layers([tf.keras.layers.Dense(2)], 3,
                                      mode='prune', begin_step=0, end_step=10,
                                      frequency=3)
    with pytest.raises(ValueError, match="learning_rate' needs an optimizer"):
        masked_optimizer.MaskedOptimizer(
            tf.keras.optimizers.Adam(1e-3), [model],
            updaters.mask_updater('set', schedule_alg='learning_rate'))


def conv_chain():
    # Input 6x6x2 -> Conv2D 3x3, 4 filters ('same') -> Flatten (6*6*4 = 144)
    # -> Dense 8 -> Dense 2. Kernels: (3, 3, 2, 4) = 72, (144, 8) = 1152,
    # (8, 2) = 16 weights.
    return [tf.keras.layers.Conv2D(4, 3, padding='same', activation='relu'),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(8, activation='relu'),
            tf.keras.layers.Dense(2)]


def test_conv_chain_wrapping_masks_and_rigl():
    assert sparse_layers.kernel_shapes(conv_chain(), (6, 6, 2)) == [
        (3, 3, 2, 4), (144, 8), (8, 2)]
    layers = sparse_layers.wrap_all_layers(conv_chain(), (6, 6, 2),
                                           dense_layers=[-1])
    assert [type(l).__name__ for l in layers] == [
        'MaskedLayer', 'Flatten', 'MaskedLayer', 'Dense']
    model = tf.keras.Sequential(layers)
    model.build((None, 6, 6, 2))
    sparse_layers.init_masks(model, sparsity=0.75, mask_init_method='uniform',
                             seed=0)
    # uniform 0.75: floor(0.75 * 72) = 54 and floor(0.75 * 1152) = 864 zeros.
    assert [int((m == 0).sum()) for m in masks_of(model)] == [54, 864]
    train_step, _, _ = make_trainer(
        model, updaters.mask_updater('rigl', update_freq=2,
                                     init_drop_fraction=0.5,
                                     schedule_alg='constant'),
        input_shape=(6, 6, 2))

    initial = masks_of(model)
    for _ in range(5):
        train_step()
        assert_masked_zero(model)
        assert [int((m == 0).sum()) for m in masks_of(model)] == [54, 864]
    assert not np.array_equal(initial[0], masks_of(model)[0])
    stats = sparse_layers.network_stats(model, input_spatial=(6, 6))
    assert [l.active_weights for l in stats.layers] == [18, 288, 16]


def test_conv_chain_pruning_finals():
    wrapped = sparse_layers.wrap_all_layers(
        conv_chain(), (6, 6, 2), mode='prune', final_sparsity=0.8,
        mask_init_method='erdos_renyi_kernel', begin_step=0, end_step=10,
        frequency=5)
    expected = sparse_utils.get_sparsities([(3, 3, 2, 4), (144, 8), (8, 2)],
                                           'erdos_renyi_kernel', 0.8)
    finals = [w.pruning_schedule.final_sparsity for w in wrapped
              if isinstance(w, sparse_layers.MaskedLayer)]
    np.testing.assert_allclose(finals, expected)


def test_magnitude_targets_drop_exactly_their_excess_smallest():
    """ANF's target pruning: a target with more non-zeros than its online
    layer's active weights loses exactly its smallest |w| down to that
    count; one with no excess keeps every weight, its mask its non-zeros."""
    from rigl.rl.tfagents import sparse_agents

    online = sparse_mlp(sparsity=0.5, seed=1)
    target = sparse_mlp(sparsity=0.0, seed=2)
    online_layers = sparse_layers.masked_layers(online)
    target_layers = sparse_layers.masked_layers(target)
    rng = np.random.default_rng(0)
    before = []
    for index, (o, t) in enumerate(zip(online_layers, target_layers)):
        values = rng.uniform(0.1, 1.0, t.kernel.shape) * rng.choice(
            [-1, 1], t.kernel.shape)
        active = int(o.mask.numpy().sum())
        # Layer 0: 5 non-zeros more than the online layer; the others no
        # excess (layer 1: exactly k, layer 2: fewer than k).
        nonzeros = active + 5 if index == 0 else active - index + 1
        keep = np.zeros(values.size, bool)
        keep[rng.permutation(values.size)[:nonzeros]] = True
        values = np.where(keep.reshape(values.shape), values, 0.0)
        t.kernel.assign(values.astype(np.float32))
        before.append(values.astype(np.float32))
    sparse_agents._prune_targets_by_magnitude(online_layers, [target])
    for index, (o, t, old) in enumerate(zip(online_layers, target_layers,
                                            before)):
        kernel, mask = t.kernel.numpy(), t.mask.numpy()
        active = int(o.mask.numpy().sum())
        np.testing.assert_array_equal(mask, (kernel != 0).astype(np.float32))
        if index == 0:
            assert np.count_nonzero(kernel) == active
            dropped = (old != 0) & (kernel == 0)
            assert dropped.sum() == 5
            assert np.abs(old[dropped]).max() <= np.abs(
                kernel[kernel != 0]).min()
            np.testing.assert_array_equal(kernel[kernel != 0],
                                          old[kernel != 0])
        else:
            np.testing.assert_array_equal(kernel, old)
            assert np.count_nonzero(kernel) <= active
