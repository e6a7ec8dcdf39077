"""Tests of rigl.sparse_utils; run with `python -m rigl.sparse_utils_test`.

Expected values are worked out by hand in comments next to each assertion.
"""

import math
import unittest

import numpy as np

from rigl import sparse_utils

# A HalfCheetah actor trunk and a critic: kernel shapes (in, out).
MLP_17 = [(17, 256), (256, 256), (256, 6)]   # 4352 + 65536 + 1536 = 71424
MLP_23 = [(23, 256), (256, 256), (256, 1)]   # 5888 + 65536 + 256 = 71680


def active_count(shapes, sparsities):
    return sum(int(np.prod(s)) - math.floor(p * int(np.prod(s)))
               for s, p in zip(shapes, sparsities))


class UniformTest(unittest.TestCase):

    def test_every_sparse_layer_gets_target(self):
        self.assertEqual(
            sparse_utils.get_sparsities(MLP_17, 'uniform', 0.9), [0.9] * 3)

    def test_dense_and_custom_layers(self):
        result = sparse_utils.get_sparsities(
            MLP_17, 'uniform', 0.9, dense_layers=[-1],
            custom_sparsities={1: 0.5})
        self.assertEqual(result, [0.9, 0.5, 0.0])

    def test_input_layer_sparsity_overrides_layer_zero(self):
        result = sparse_utils.get_sparsities(MLP_17, 'uniform', 0.9,
                                             input_layer_sparsity=0.8)
        self.assertEqual(result, [0.8, 0.9, 0.9])


class ErdosRenyiTest(unittest.TestCase):

    def test_erk_with_dense_layer_rebalance(self):
        # raw_l * N_l = n_in + n_out: 273, 512, 262 (sum 1047).
        # Target active, in whole weights: (4352 - floor(3916.8)) +
        # (65536 - floor(58982.4)) + (1536 - floor(1382.4)) = 436 + 6554 +
        # 154 = 7144; eps = 7144 / 1047 = 6.823305;
        # layer 2 density = 6.823305 * 262 / 1536 = 1.1639 > 1 -> dense.
        # Then eps = (7144 - 1536) / (273 + 512) = 5608 / 785 = 7.143949.
        eps = 5608 / 785
        result = sparse_utils.get_sparsities(MLP_17, 'erdos_renyi_kernel', 0.9)
        self.assertAlmostEqual(result[0], 1 - eps * 273 / 4352)  # 0.551862
        self.assertAlmostEqual(result[1], 1 - eps * 512 / 65536)  # 0.944188
        self.assertEqual(result[2], 0.0)

    def test_er_equals_erk_for_dense_kernels(self):
        for sparsity in (0.5, 0.9, 0.99):
            np.testing.assert_allclose(
                sparse_utils.get_sparsities(MLP_23, 'erdos_renyi', sparsity),
                sparse_utils.get_sparsities(MLP_23, 'erdos_renyi_kernel',
                                            sparsity))

    def test_erk_without_rebalance(self):
        # s = 0.99, target active in whole weights: (4352 - floor(4308.48))
        # + (65536 - floor(64880.64)) + (1536 - floor(1520.64)) = 44 + 656 +
        # 16 = 716; eps = 716 / 1047 = 0.683859; layer 2 density
        # 0.683859 * 262 / 1536 = 0.11665 < 1, so nothing is made dense.
        # Sparsities 0.957102, 0.994657, 0.883352.
        eps = 716 / 1047
        result = sparse_utils.get_sparsities(MLP_17, 'erdos_renyi_kernel',
                                             0.99)
        np.testing.assert_allclose(
            result, [1 - eps * 273 / 4352, 1 - eps * 512 / 65536,
                     1 - eps * 262 / 1536])

    def test_erk_power_scale_changes_conv_not_er(self):
        # Conv kernel (3, 3, 16, 32): ERK raw = (3+3+16+32)/4608 = 54/4608,
        # ER raw = (16+32)/(16*32) = 48/512. Two identical layers -> same eps
        # whatever the raw score, so use a conv + dense pair.
        shapes = [(3, 3, 16, 32), (32, 10)]  # 4608 + 320 = 4928 weights
        erk = sparse_utils.get_sparsities(shapes, 'erdos_renyi_kernel', 0.8)
        er = sparse_utils.get_sparsities(shapes, 'erdos_renyi', 0.8)
        # Budget in whole weights: (4608 - floor(3686.4)) +
        # (320 - floor(256.0)) = 922 + 64 = 986 (0.8 * 320 is 256.0 in
        # floating point too).
        # ERK: raw*N = 54 and 42 (32+10); eps = 986/96 = 10.2708;
        # dense layer density 10.2708*42/320 = 1.3480 > 1 -> dense;
        # eps = (986 - 320) / 54 = 12.3333; conv density 12.3333*54/4608 =
        # 666/4608, sparsity 0.855469.
        self.assertAlmostEqual(erk[0], 1 - (986 - 320) / 4608)
        self.assertEqual(erk[1], 0.0)
        # ER: raw*N = 48/512*4608 = 432 and 42; eps = 986/474 = 2.080169;
        # dense density 2.080169*42/320 = 0.2730 < 1. Sparsities 0.804984
        # and 0.726978.
        eps = 986 / 474
        np.testing.assert_allclose(er, [1 - eps * 432 / 4608,
                                        1 - eps * 42 / 320])
        # Power scale 0 makes every ERK raw score 1: the same density for
        # every layer, eps = 986 / 4928 = 0.200081, i.e. sparsity 0.799919
        # (the whole-weight budget, not exactly 0.8 as 'uniform' gives).
        np.testing.assert_allclose(
            sparse_utils.get_sparsities(shapes, 'erdos_renyi_kernel', 0.8,
                                        erk_power_scale=0.0),
            [1 - 986 / 4928] * 2)

    def test_dense_layers_are_outside_the_budget(self):
        # Output layer unwrapped (dense_layers=[2]): the 0.9 target covers
        # layers 0 and 1 only, in whole weights as the original suite counts
        # them: (4352 - floor(3916.8)) + (65536 - floor(58982.4)) = 436 +
        # 6554 = 6990 active. raw*N = 273 + 512 = 785; eps = 6990 / 785 =
        # 8.904459; sparsities 1 - eps * 273 / 4352 = 0.4414253 and
        # 1 - eps * 512 / 65536 = 0.9304339: the original's [0.441, 0.930].
        eps = 6990 / 785
        result = sparse_utils.get_sparsities(MLP_17, 'erdos_renyi_kernel', 0.9,
                                             dense_layers=[2])
        self.assertAlmostEqual(result[0], 1 - eps * 273 / 4352)
        self.assertAlmostEqual(result[1], 1 - eps * 512 / 65536)
        self.assertEqual(result[2], 0.0)
        np.testing.assert_allclose(result, [0.4414253, 0.9304339, 0.0],
                                   atol=1e-6)

    def test_custom_layer_is_outside_the_budget(self):
        # Layer 0 custom at 0.5 adds no constraint: the target covers layers
        # 1 and 2: (65536 - 58982) + (1536 - floor(1382.4)) = 6554 + 154 =
        # 6708 active. raw*N = 512 + 262 = 774; eps = 6708 / 774 = 8.666667;
        # layer 2 density 8.666667 * 262 / 1536 = 1.478 > 1 -> dense, and it
        # stays in the budget: 6708 - 1536 = 5172 left for layer 1,
        # sparsity 1 - 5172 / 65536 = 0.921082.
        expected = [0.5, 1 - 5172 / 65536, 0.0]
        np.testing.assert_allclose(
            sparse_utils.get_sparsities(MLP_17, 'erdos_renyi_kernel', 0.9,
                                        custom_sparsities={0: 0.5}),
            expected)
        # Any custom value gives the other layers the same sparsities.
        np.testing.assert_allclose(
            sparse_utils.get_sparsities(MLP_17, 'erdos_renyi', 0.9,
                                        custom_sparsities={0: 0.8}),
            [0.8] + expected[1:])

    def test_input_layer_sparsity_is_a_custom_layer(self):
        # For the suite's methods input_layer_sparsity acts like
        # custom_sparsities={0: value}: same numbers as the test above.
        result = sparse_utils.get_sparsities(
            MLP_17, 'erdos_renyi_kernel', 0.9, input_layer_sparsity=0.8)
        np.testing.assert_allclose(result, [0.8, 1 - 5172 / 65536, 0.0])

    def test_all_layers_fixed_leaves_nothing_to_spread(self):
        # Every layer dense or custom: the target covers no weights.
        self.assertEqual(
            sparse_utils.get_sparsities(MLP_17, 'erdos_renyi_kernel', 0.9,
                                        dense_layers=[0, 2],
                                        custom_sparsities={1: 0.3}),
            [0.0, 0.3, 0.0])


class AnfMethodsTest(unittest.TestCase):

    def test_anf_uniform_output_dense_matches_tutorial(self):
        # ANF tutorial: 90% global with the output layer dense gives the two
        # sparse layers 90.3%. Critic 23-256-256-1: target active 7168;
        # free budget 7168 - 256 = 6912 over 71424 weights -> density
        # 0.096775, sparsity 0.903225.
        result = sparse_utils.get_sparsities(MLP_23, 'anf_uniform', 0.9,
                                             dense_layers=[-1])
        np.testing.assert_allclose(result, [1 - 6912 / 71424] * 2 + [0.0])
        self.assertEqual(round(result[0] * 100, 1), 90.3)

    def test_anf_er_and_alias(self):
        # 'ER' is ANF's spelling of anf_er. At s = 0.5 with the output dense:
        # budget 35712 - 1536 = 34176 over raw*N 273 + 512 = 785; eps =
        # 43.536; layer 0 density 43.536*273/4352 = 2.731 > 1 -> dense;
        # layer 1 gets 34176 - 4352 = 29824 of 65536 weights.
        np.testing.assert_allclose(
            sparse_utils.get_sparsities(MLP_17, 'ER', 0.5, dense_layers=[2]),
            [0.0, 1 - 29824 / 65536, 0.0])
        # At 0.95: eps = 3571.2/1047 = 3.4109; layer 2: 0.5818 < 1.
        eps = 3571.2 / 1047
        np.testing.assert_allclose(
            sparse_utils.get_sparsities(MLP_17, 'anf_er', 0.95),
            [1 - eps * 273 / 4352, 1 - eps * 512 / 65536,
             1 - eps * 262 / 1536])

    def test_anf_new_closeness(self):
        # raw_l = 2 / N_l ** c, so raw_l * N_l = 2 * N_l ** (1 - c).
        # c = 0.2 at s = 0.9, no dense layers.
        sizes = np.array([4352, 65536, 1536], dtype=float)
        eps = 7142.4 / np.sum(2 * sizes ** 0.8)
        expected = 1 - eps * 2 / sizes ** 0.2
        np.testing.assert_allclose(
            sparse_utils.get_sparsities(MLP_17, 'new', 0.9), expected)
        # c = 0 is uniform (every raw score 2): all 0.9.
        np.testing.assert_allclose(
            sparse_utils.get_sparsities(MLP_17, 'anf_new', 0.9, closeness=0.0),
            [0.9] * 3)

    def test_input_layer_only_when_global_zero(self):
        # ANF's main setting: only the input layer sparse at 80%.
        self.assertEqual(
            sparse_utils.get_sparsities(MLP_17, 'anf_uniform', 0.0,
                                        input_layer_sparsity=0.8),
            [0.8, 0.0, 0.0])

    def test_input_layer_sparsity_with_global_target(self):
        # Fixed 0.8 on layer 0 (870.4 active), output dense (1536):
        # layer 1 gets 7142.4 - 870.4 - 1536 = 4736 -> sparsity 1 - 4736/65536.
        result = sparse_utils.get_sparsities(
            MLP_17, 'anf_uniform', 0.9, input_layer_sparsity=0.8,
            dense_layers=[2])
        np.testing.assert_allclose(result, [0.8, 1 - 4736 / 65536, 0.0])


class GlobalTargetTest(unittest.TestCase):
    """Every method hits the global target within one weight per layer."""

    def test_targets(self):
        # The suite's methods budget the layers that are neither dense nor
        # custom in whole weights, sum of N - floor(s * N) over them; ANF's
        # methods budget (1 - s) of every layer. ER/ERK densities d_l spend
        # the budget exactly (sum of d_l * N_l, forced-dense layers at their
        # full N), and a mask keeps N - floor((1 - d_l) * N) = ceil(d_l * N)
        # weights, less than one more than d_l * N: so within one weight per
        # layer of that budget. (Against (1 - s) * sum N instead it could be
        # off by up to two per layer: the floors add up to one per layer.)
        for shapes in (MLP_17, MLP_23):
            sizes = [int(np.prod(s)) for s in shapes]
            total = sum(sizes)
            for sparsity in (0.5, 0.9, 0.95, 0.99):
                for method, kwargs in (
                        ('uniform', {}),
                        ('erdos_renyi', {}),
                        ('erdos_renyi_kernel', {}),
                        ('erdos_renyi_kernel', {'dense_layers': [-1]}),
                        ('erdos_renyi', {'dense_layers': [-1]}),
                        ('erdos_renyi_kernel', {'erk_power_scale': 0.5}),
                        ('anf_uniform', {}),
                        ('anf_uniform', {'dense_layers': [-1]}),
                        ('anf_er', {}),
                        ('anf_new', {}),
                        ('anf_new', {'closeness': 0.5}),
                ):
                    with self.subTest(shapes=shapes, sparsity=sparsity,
                                      method=method, kwargs=kwargs):
                        dense = sizes[-1] if 'dense_layers' in kwargs else 0
                        if method.startswith('anf_'):
                            exact = (1 - sparsity) * total
                        else:
                            free = sizes[:-1] if dense else sizes
                            exact = sum(n - math.floor(sparsity * n)
                                        for n in free) + dense
                        if dense > exact:
                            # ANF, 17-256-256-6 at 0.99: the dense 1536-weight
                            # output alone exceeds the 714.24 allowed.
                            with self.assertRaisesRegex(ValueError,
                                                        'cannot be reached'):
                                sparse_utils.get_sparsities(
                                    shapes, method, sparsity, **kwargs)
                            continue
                        result = sparse_utils.get_sparsities(
                            shapes, method, sparsity, **kwargs)
                        self.assertLessEqual(
                            abs(active_count(shapes, result) - exact),
                            len(shapes))
                        masks = sparse_utils.create_masks(shapes, result,
                                                          seed=1)
                        self.assertLessEqual(
                            abs(sum(int(m.sum()) for m in masks) - exact),
                            len(shapes))

    def test_anf_output_dense_reachable_levels(self):
        for sparsity in (0.5, 0.9, 0.95):
            result = sparse_utils.get_sparsities(MLP_23, 'anf_uniform',
                                                 sparsity, dense_layers=[-1])
            self.assertLessEqual(
                abs(active_count(MLP_23, result) - (1 - sparsity) * 71680), 3)
        # 0.99 of 71680 leaves 716.8 active, but the dense output layer has
        # 256 and the two sparse layers would need density 460.8/71424: fine.
        # For the 17-input actor the dense output has 1536 > 714.24: error.
        with self.assertRaisesRegex(ValueError, 'hold 1536 active'):
            sparse_utils.get_sparsities(MLP_17, 'anf_uniform', 0.99,
                                        dense_layers=[-1])


class MaskTest(unittest.TestCase):

    def test_exact_zero_count_and_seeding(self):
        # floor(0.9 * 4352) = floor(3916.8) = 3916 zeros;
        # floor(0.9 * 65536) = floor(58982.4) = 58982; floor(0.5 * 1536) = 768.
        masks = sparse_utils.create_masks(MLP_17, [0.9, 0.9, 0.5], seed=3)
        self.assertEqual([int((m == 0).sum()) for m in masks],
                         [3916, 58982, 768])
        self.assertEqual([m.shape for m in masks], MLP_17)
        self.assertTrue(all(m.dtype == np.float32 for m in masks))
        self.assertTrue(all(set(np.unique(m)) <= {0.0, 1.0} for m in masks))
        again = sparse_utils.create_masks(MLP_17, [0.9, 0.9, 0.5], seed=3)
        other = sparse_utils.create_masks(MLP_17, [0.9, 0.9, 0.5], seed=4)
        np.testing.assert_array_equal(masks[1], again[1])
        self.assertFalse(np.array_equal(masks[1], other[1]))

    def test_dense_mask_and_conv(self):
        masks = sparse_utils.create_masks([(3, 3, 4, 8), (8, 2)], [0.25, 0.0])
        # 3*3*4*8 = 288 weights, floor(0.25 * 288) = 72 zeros.
        self.assertEqual(int((masks[0] == 0).sum()), 72)
        self.assertTrue(np.all(masks[1] == 1))

    def test_fixed_sparse_init_scale(self):
        # A 4x2 mask; output unit 0 has inputs {0, 1}, unit 1 has {0}.
        mask = np.array([[1, 1], [1, 0], [0, 0], [0, 0]], dtype=np.float32)
        weights = sparse_utils.fixed_sparse_init(mask,
                                                 np.random.default_rng(0))
        self.assertTrue(np.all(weights[mask == 0] == 0))
        self.assertTrue(np.all(weights[mask == 1] != 0))
        # Connection (0, 0): fan-in of unit 0 = 2, fan-out of input 0 = 2;
        # limit sqrt(6/4) = 1.2247. (1, 0): fan-in 2, fan-out 1: sqrt(6/3).
        self.assertLessEqual(abs(weights[0, 0]), math.sqrt(6 / 4))
        self.assertLessEqual(abs(weights[1, 0]), math.sqrt(6 / 3))
        # The scale follows the real fan-in: a 1%-dense 1000x1000 mask has
        # about 10 inputs and 10 outputs per unit, so weights have variance
        # near limit**2 / 3 = (6 / 20) / 3 = 0.1, far above dense Glorot's
        # (6 / 2000) / 3 = 0.001.
        big = sparse_utils.create_masks([(1000, 1000)], [0.99], seed=0)[0]
        values = sparse_utils.fixed_sparse_init(
            big, np.random.default_rng(1))[big == 1]
        self.assertAlmostEqual(float(values.var()), 0.1, delta=0.03)

    def test_fixed_sparse_init_dense_kernels_match_glorot(self):
        # Keras glorot_uniform: limit sqrt(6 / (fan_in + fan_out)) with
        # fan_in = h * w * c_in and fan_out = h * w * c_out for a conv kernel.
        # Dense 3x3x4x8: fan_in = 9 * 4 = 36, fan_out = 9 * 8 = 72,
        # limit sqrt(6 / 108) = 0.235702. Dense 2-D 5x3: sqrt(6 / 8).
        for shape, limit in (((3, 3, 4, 8), math.sqrt(6 / 108)),
                             ((5, 3), math.sqrt(6 / 8))):
            with self.subTest(shape=shape):
                mask = np.ones(shape, dtype=np.float32)
                weights = sparse_utils.fixed_sparse_init(
                    mask, np.random.default_rng(5))
                # The same generator's draws, scaled by the limit.
                draws = np.random.default_rng(5).uniform(-1.0, 1.0, size=shape)
                np.testing.assert_allclose(weights, draws * limit, rtol=1e-6)

    def test_fixed_sparse_init_conv_fans(self):
        # Mask (1, 2, 2, 2) with active (h, w, c_in, c_out) positions
        # (0, 0, 0, 0), (0, 1, 0, 0) and (0, 0, 1, 1).
        # Fan-in of output channel 0: 2 (both from input channel 0), of 1: 1.
        # Fan-out of input channel 0: 2 (to output 0 at two positions), of 1:
        # 1. Limits: sqrt(6 / (2 + 2)) for the two connections of channel 0,
        # sqrt(6 / (1 + 1)) for (0, 0, 1, 1).
        mask = np.zeros((1, 2, 2, 2), dtype=np.float32)
        for index in ((0, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 1)):
            mask[index] = 1.0
        limits = np.zeros(mask.shape)
        limits[0, 0, 0, 0] = limits[0, 1, 0, 0] = math.sqrt(6 / 4)
        limits[0, 0, 1, 1] = math.sqrt(6 / 2)
        weights = sparse_utils.fixed_sparse_init(mask,
                                                 np.random.default_rng(2))
        draws = np.random.default_rng(2).uniform(-1.0, 1.0, size=mask.shape)
        np.testing.assert_allclose(weights, draws * limits, rtol=1e-6)

    def test_fixed_sparse_init_refuses_other_ranks(self):
        with self.assertRaisesRegex(ValueError, r'mask has shape \(2, 2, 2\)'):
            sparse_utils.fixed_sparse_init(np.ones((2, 2, 2)))


class StatsTest(unittest.TestCase):

    def test_stats_from_masks_and_sparsities(self):
        masks = sparse_utils.create_masks(MLP_17, [0.9, 0.9, 0.0], seed=0)
        stats = sparse_utils.network_stats(MLP_17, masks)
        # Active: 4352 - 3916 = 436; 65536 - 58982 = 6554; 1536.
        self.assertEqual([l.active_weights for l in stats.layers],
                         [436, 6554, 1536])
        self.assertEqual(stats.active_weights, 8526)
        self.assertEqual(stats.total_weights, 71424)
        self.assertAlmostEqual(stats.sparsity, 1 - 8526 / 71424)
        # Parameters: active weights + biases (256 + 256 + 6) + bitmasks of
        # the two sparse layers, one bit per weight in 32-bit units:
        # 4352/32 = 136 and 65536/32 = 2048.
        self.assertAlmostEqual(stats.parameters,
                               8526 + 518 + 136 + 2048)
        # FLOPs, MicroNet rules: a layer with k active weights and m outputs
        # does k multiplies, k - m accumulation adds and m bias adds, i.e.
        # 2k FLOPs, plus m ReLU ops on hidden layers:
        # 2*436 + 256 + 2*6554 + 256 + 2*1536 = 17564.
        self.assertEqual(stats.flops, 17564)
        same = sparse_utils.network_stats(
            MLP_17, [1 - 436 / 4352, 1 - 6554 / 65536, 0.0])
        self.assertEqual(same.flops, stats.flops)
        self.assertEqual(same.active_weights, stats.active_weights)

    def test_dense_network_has_no_bitmask(self):
        stats = sparse_utils.network_stats(MLP_23, [0.0] * 3)
        # 71680 weights + 256 + 256 + 1 biases.
        self.assertEqual(stats.parameters, 71680 + 513)


class ZeroSparsityTest(unittest.TestCase):
    """Sparsity 0 gives dense masks for every method and any shapes."""

    # The 278-256-256-1 critic of an ANF Ant run: 71168 + 65536 + 256.
    ANT_CRITIC = [(278, 256), (256, 256), (256, 1)]

    def test_all_methods_all_dense(self):
        for shapes in (self.ANT_CRITIC, MLP_17, MLP_23,
                       [(3, 3, 16, 32), (32, 10)]):
            for method in sparse_utils.METHODS:
                for kwargs in ({}, {'dense_layers': [-1]}):
                    with self.subTest(shapes=shapes, method=method,
                                      kwargs=kwargs):
                        self.assertEqual(
                            sparse_utils.get_sparsities(shapes, method, 0.0,
                                                        **kwargs),
                            [0.0] * len(shapes))

    def test_fixed_values_kept(self):
        for method in sparse_utils.METHODS:
            with self.subTest(method=method):
                self.assertEqual(
                    sparse_utils.get_sparsities(
                        self.ANT_CRITIC, method, 0.0,
                        input_layer_sparsity=0.8),
                    [0.8, 0.0, 0.0])
        for method in sparse_utils.SUITE_METHODS:
            with self.subTest(method=method):
                self.assertEqual(
                    sparse_utils.get_sparsities(
                        self.ANT_CRITIC, method, 0.0,
                        custom_sparsities={1: 0.5}),
                    [0.0, 0.5, 0.0])

    def test_tiny_sparsity_float_overshoot(self):
        # At s = 1e-17, floor(s * N) = 0 (suite) and 1 - s rounds to 1.0
        # (ANF): the budget equals the layers' full size and every ERK
        # density is 1 up to rounding (eps * raw_l may come out as
        # 1 + 2e-16). No layer may be refused or divided by zero; every
        # layer stays dense.
        for method in sparse_utils.METHODS:
            with self.subTest(method=method):
                result = sparse_utils.get_sparsities(self.ANT_CRITIC, method,
                                                     1e-17)
                self.assertTrue(all(0.0 <= x < 1e-12 for x in result))
                masks = sparse_utils.create_masks(self.ANT_CRITIC, result)
                self.assertTrue(all(np.all(m == 1) for m in masks))


class BuildableLayersTest(unittest.TestCase):
    """Only layers that cannot keep one weight are refused."""

    def test_small_layer_keeps_one_weight(self):
        # A 2x2 layer at 0.9: (1 - 0.9) * 4 = 0.4 < 1, but the mask keeps
        # 4 - floor(0.9 * 4) = 4 - 3 = 1 weight, so it can be built.
        for method in ('uniform', 'anf_uniform'):
            with self.subTest(method=method):
                result = sparse_utils.get_sparsities([(2, 2)], method, 0.9)
                np.testing.assert_allclose(result, [0.9])
        mask = sparse_utils.create_masks([(2, 2)], [0.9], seed=0)[0]
        self.assertEqual(int(mask.sum()), 1)

    def test_starved_layer_is_refused(self):
        # ERK at 0.99 with erk_power_scale 1000 (MLP_17): the raw scores are
        # (n_in+n_out)/(n_in*n_out) ** 1000 = 0.0627**1000, 0.0078**1000 and
        # 0.1706**1000; relative to layer 2 the others are e**-1001 and
        # e**-3084, i.e. 0.0 in floating point. Layer 2 takes the whole budget
        # (4352 - floor(4308.48)) + (65536 - floor(64880.64)) +
        # (1536 - floor(1520.64)) = 44 + 656 + 16 = 716 weights (density
        # 716 / 1536 = 0.466) and layers 0 and 1 get
        # density 0, sparsity 1: no weight left, which is refused.
        with self.assertRaisesRegex(ValueError,
                                    r'Layer 0 .* sparsity 1\.0.*'
                                    r'erk_power_scale'):
            sparse_utils.get_sparsities(MLP_17, 'erdos_renyi_kernel', 0.99,
                                        erk_power_scale=1000.0)

    def test_large_power_scale_stays_finite(self):
        # Same scale at 0.9, budget in whole weights (4352 - floor(3916.8)) +
        # (65536 - floor(58982.4)) + (1536 - floor(1382.4)) = 436 + 6554 +
        # 154 = 7144: layer 2 (top score) takes 7144 > 1536 -> dense;
        # of 7144 - 1536 = 5608 layer 0 (next score) takes all it can,
        # 4352 -> dense; layer 1 keeps 5608 - 4352 = 1256 of 65536, sparsity
        # 1 - 1256 / 65536 = 0.980835.
        result = sparse_utils.get_sparsities(MLP_17, 'erdos_renyi_kernel',
                                             0.9, erk_power_scale=1000.0)
        np.testing.assert_allclose(result, [0.0, 1 - 1256 / 65536, 0.0])


class ErrorTest(unittest.TestCase):

    def assert_error(self, pattern, function, *args, **kwargs):
        with self.assertRaisesRegex(ValueError, pattern):
            function(*args, **kwargs)

    def test_errors(self):
        get = sparse_utils.get_sparsities
        self.assert_error(r'sparsity must be in \[0, 1\), got 1\.0', get,
                          MLP_17, 'uniform', 1.0)
        self.assert_error(r'got -0\.1', get, MLP_17, 'uniform', -0.1)
        self.assert_error(r"got 'a lot'", get, MLP_17, 'uniform', 'a lot')
        self.assert_error(r"Unknown sparsity distribution 'erk'; known: "
                          r'uniform, erdos_renyi, erdos_renyi_kernel', get,
                          MLP_17, 'erk', 0.9)
        self.assert_error(r'input_layer_sparsity must be in \[0, 1\), got 1',
                          get, MLP_17, 'uniform', 0.5, input_layer_sparsity=1)
        self.assert_error(r'kernel shape \(17,\)', get, [(17,)], 'uniform',
                          0.5)
        self.assert_error(r'kernel shape \(0, 4\)', get, [(0, 4)], 'uniform',
                          0.5)
        self.assert_error(r'dense_layers has layer index 3; allowed are '
                          r'-3\.\.2', get, MLP_17, 'uniform', 0.5,
                          dense_layers=[3])
        self.assert_error(r'Got 2 sparsities for 3 layers',
                          sparse_utils.create_masks, MLP_17, [0.5, 0.5])
        self.assert_error(r'Mask 0 has shape \(3, 3\)',
                          sparse_utils.network_stats, [(2, 2)],
                          [np.ones((3, 3))])
        # ANF budgets the whole network: 71424 dense weights > 0.5 * 71424.
        self.assert_error(r'hold 71424 active weights, more than the 35712',
                          get, MLP_17, 'anf_er', 0.5, dense_layers=[0, 1, 2])
        # Input layer fixed at 0.8 (870.4 active) but a 1% target needs
        # 0.99 * 71424 - 870.4 = 69839.4 active in layers 1 and 2, which hold
        # only 67072 weights.
        self.assert_error(r'needs 69839 active weights in the free layers '
                          r'\[1, 2\], which hold only 67072', get, MLP_17,
                          'anf_new', 0.01, input_layer_sparsity=0.8)


if __name__ == '__main__':
    unittest.main()
