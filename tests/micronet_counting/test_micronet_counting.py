"""Tests for micronet_counting: every expected number is worked out by hand.

The arithmetic is written in the comments next to each literal so that a
reader can check it against the rules in micronet_counting/counting.py. No
expected value is computed by the code under test.
"""

import math
import re

import pytest

from micronet_counting import ACTIVATION_OPS
from micronet_counting import Conv2D
from micronet_counting import count_network
from micronet_counting import count_ops
from micronet_counting import count_parameters
from micronet_counting import DepthwiseConv2D
from micronet_counting import FullyConnected
from micronet_counting import nonzero_weights
from micronet_counting import OpCount
from micronet_counting import output_shape
from micronet_counting import weight_shape


# ---------------------------------------------------------------------------
# OpCount
# ---------------------------------------------------------------------------


def test_opcount_total_add_sum_and_scale():
    a = OpCount(multiplies=3, adds=5)
    b = OpCount(multiplies=10, adds=20)
    assert a.total == 8  # 3 + 5
    assert a + b == OpCount(13, 25)  # 3 + 10, 5 + 20
    assert sum([a, b, a]) == OpCount(16, 30)  # 3+10+3, 5+20+5
    assert a.scale(3) == OpCount(9, 15)
    assert a.scale(0.5) == OpCount(1.5, 2.5)
    with pytest.raises(TypeError):
        a + 1  # pylint: disable=pointless-statement
    with pytest.raises(ValueError, match=re.escape('-1')):
        a.scale(-1)


# ---------------------------------------------------------------------------
# Activation table (documented in the module docstring).
# ---------------------------------------------------------------------------


def test_activation_table_is_the_documented_one():
    assert dict(ACTIVATION_OPS) == {
        None: (0, 0), 'linear': (0, 0), 'relu': (0, 1), 'sigmoid': (2, 1),
        'tanh': (3, 2), 'swish': (3, 1), 'elu': (1, 2), 'softplus': (2, 1)}


# ---------------------------------------------------------------------------
# FullyConnected
# ---------------------------------------------------------------------------


def test_fc_shapes():
    layer = FullyConnected(17, 256)
    assert weight_shape(layer) == (17, 256)
    assert output_shape(layer) == (256,)


def test_fc_dense_relu():
    layer = FullyConnected(17, 256, activation='relu')
    # N = 17*256 = 4352 weights, s = 0 -> k = 4352, no bitmask.
    # params = 4352 + 256 bias = 4608.
    assert count_parameters(layer) == 4608.0
    # mults = k = 4352 (relu adds no multiply).
    # adds  = (4352 - 256) accumulation = 4096
    #       + 256 bias + 256*1 relu comparisons = 4608.
    assert count_ops(layer) == OpCount(multiplies=4352, adds=4608)
    assert count_ops(layer).total == 8960  # 4352 + 4608


def test_fc_sparse_tanh():
    layer = FullyConnected(17, 256, activation='tanh')
    # N = 4352; s = 0.9 -> k = round(4352*0.1) = round(435.2) = 435.
    assert nonzero_weights(layer, 0.9) == 435
    # params = 435 + 256 bias + bitmask 4352/32 = 136 -> 827.
    assert count_parameters(layer, 0.9) == 827.0
    # 16-bit params: bitmask 4352/16 = 272 -> 435 + 256 + 272 = 963.
    assert count_parameters(layer, 0.9, param_bits=16) == 963.0
    # mults = 435 + tanh 3*256 = 768 -> 1203.
    # adds  = (435 - 256) = 179 + 256 bias + tanh 2*256 = 512 -> 947.
    assert count_ops(layer, 0.9) == OpCount(multiplies=1203, adds=947)


def test_fc_sparsity_from_a_mask_recovers_the_nonzero_count():
    layer = FullyConnected(17, 256)
    zeros = 3917
    # s = 3917/4352 -> k = 4352 - 3917 = 435 exactly.
    assert nonzero_weights(layer, zeros / 4352) == 435
    # A mask with a single nonzero: zeros = 4351 -> k = 4352 - 4351 = 1.
    assert nonzero_weights(layer, 4351 / 4352) == 1


def test_fc_rounding_ties_to_even():
    # N = 5*1 = 5, s = 0.5 -> 2.5 -> 2 (ties to even).
    assert nonzero_weights(FullyConnected(5, 1), 0.5) == 2
    # N = 7*1 = 7, s = 0.5 -> 3.5 -> 4 (ties to even).
    assert nonzero_weights(FullyConnected(7, 1), 0.5) == 4


def test_fc_no_bias_no_activation():
    layer = FullyConnected(4, 3, use_bias=False)
    # N = 4*3 = 12; params = 12 (no bias, dense so no mask).
    assert count_parameters(layer) == 12.0
    # mults = 12; adds = 12 - 3 = 9 (each of 3 outputs sums 4 products).
    assert count_ops(layer) == OpCount(multiplies=12, adds=9)


def test_fc_no_bias_sparse_linear():
    layer = FullyConnected(4, 3, use_bias=False, activation='linear')
    # N = 12; s = 0.5 -> k = round(6.0) = 6.
    # params = 6 + 0 bias + 12/32 = 0.375 -> 6.375.
    assert count_parameters(layer, 0.5) == 6.375
    # mults = 6; adds = 6 - 3 = 3.
    assert count_ops(layer, 0.5) == OpCount(multiplies=6, adds=3)


def test_fc_accumulation_adds_clamped_at_zero():
    layer = FullyConnected(100, 50, activation='sigmoid')
    # N = 5000; s = 0.995 -> k = round(5000*0.005) = round(25.0) = 25.
    # mults = 25 + sigmoid 2*50 = 100 -> 125.
    # adds  = max(25 - 50, 0) = 0 + 50 bias + sigmoid 1*50 = 50 -> 100.
    assert count_ops(layer, 0.995) == OpCount(multiplies=125, adds=100)


@pytest.mark.parametrize('activation, multiplies, adds', [
    # FC 2 -> 3, dense: N = 6, k = 6; accumulation 6 - 3 = 3, bias 3.
    # Base: mults 6, adds 3 + 3 = 6; plus 3 outputs * table entry.
    (None, 6, 6),
    ('linear', 6, 6),
    ('relu', 6, 9),  # adds 6 + 3*1
    ('sigmoid', 12, 9),  # mults 6 + 3*2, adds 6 + 3*1
    ('tanh', 15, 12),  # mults 6 + 3*3, adds 6 + 3*2
    ('swish', 15, 9),  # mults 6 + 3*3, adds 6 + 3*1
    ('elu', 9, 12),  # mults 6 + 3*1, adds 6 + 3*2
    ('softplus', 12, 9),  # mults 6 + 3*2, adds 6 + 3*1
])
def test_fc_each_activation(activation, multiplies, adds):
    layer = FullyConnected(2, 3, activation=activation)
    assert count_ops(layer) == OpCount(multiplies=multiplies, adds=adds)


# ---------------------------------------------------------------------------
# Conv2D
# ---------------------------------------------------------------------------


def test_conv_same_stride1_dense_relu():
    layer = Conv2D(8, 8, 3, 16, kernel_size=(3, 3), activation='relu')
    assert weight_shape(layer) == (3, 3, 3, 16)
    assert output_shape(layer) == (8, 8, 16)  # same, stride 1: 8/1 = 8.
    # N = 3*3*3*16 = 432; params = 432 + 16 bias = 448.
    assert count_parameters(layer) == 448.0
    # P = 8*8 = 64 positions.
    # mults = 432*64 = 27648.
    # adds  = (432 - 16)*64 = 416*64 = 26624 + bias 16*64 = 1024
    #       + relu 1*8*8*16 = 1024 -> 28672.
    assert count_ops(layer) == OpCount(multiplies=27648, adds=28672)


def test_conv_same_stride2_dense():
    layer = Conv2D(7, 9, 4, 8, kernel_size=(3, 3), strides=(2, 2),
                   padding='same')
    # same: h = ceil(7/2) = 4, w = ceil(9/2) = 5.
    assert output_shape(layer) == (4, 5, 8)
    # N = 3*3*4*8 = 288; params = 288 + 8 = 296.
    assert count_parameters(layer) == 296.0
    # P = 4*5 = 20. mults = 288*20 = 5760.
    # adds = (288 - 8)*20 = 5600 + bias 8*20 = 160 -> 5760.
    assert count_ops(layer) == OpCount(multiplies=5760, adds=5760)


def test_conv_valid_stride2_sparse_swish():
    layer = Conv2D(7, 9, 4, 8, kernel_size=(3, 3), strides=(2, 2),
                   padding='valid', activation='swish')
    # valid: h = (7-3)//2 + 1 = 3, w = (9-3)//2 + 1 = 4.
    assert output_shape(layer) == (3, 4, 8)
    # N = 288; s = 0.75 -> k = round(288*0.25) = 72.
    # params = 72 + 8 bias + 288/32 = 9 -> 89.
    assert count_parameters(layer, 0.75) == 89.0
    # P = 3*4 = 12; output elements = 12*8 = 96.
    # mults = 72*12 = 864 + swish 3*96 = 288 -> 1152.
    # adds  = (72 - 8)*12 = 768 + bias 8*12 = 96 + swish 1*96 = 96 -> 960.
    assert count_ops(layer, 0.75) == OpCount(multiplies=1152, adds=960)


def test_conv_non_square_kernel_and_stride_and_upper_case_padding():
    layer = Conv2D(10, 9, 2, 5, kernel_size=(1, 3), strides=(3, 2),
                   padding='VALID', use_bias=False)
    assert layer.padding == 'valid'
    assert weight_shape(layer) == (1, 3, 2, 5)
    # h = (10-1)//3 + 1 = 4, w = (9-3)//2 + 1 = 4.
    assert output_shape(layer) == (4, 4, 5)
    # N = 1*3*2*5 = 30; P = 16. mults = 30*16 = 480.
    # adds = (30 - 5)*16 = 400, no bias.
    assert count_ops(layer) == OpCount(multiplies=480, adds=400)
    # Int kernel_size / strides mean square: 3 -> (3, 3).
    assert Conv2D(5, 5, 1, 1, kernel_size=3, strides=2).kernel_size == (3, 3)


# ---------------------------------------------------------------------------
# DepthwiseConv2D
# ---------------------------------------------------------------------------


def test_depthwise_multiplier_sparse_sigmoid():
    layer = DepthwiseConv2D(6, 6, 4, kernel_size=(3, 3), depth_multiplier=2,
                            activation='sigmoid')
    assert weight_shape(layer) == (3, 3, 4, 2)
    assert output_shape(layer) == (6, 6, 8)  # C = 4*2 = 8.
    # N = 3*3*4*2 = 72; s = 0.5 -> k = round(36.0) = 36.
    # params = 36 + 8 bias + 72/32 = 2.25 -> 46.25.
    assert count_parameters(layer, 0.5) == 46.25
    # P = 36; output elements = 36*8 = 288.
    # mults = 36*36 = 1296 + sigmoid 2*288 = 576 -> 1872.
    # adds  = (36 - 8)*36 = 1008 + bias 8*36 = 288 + sigmoid 1*288 -> 1584.
    assert count_ops(layer, 0.5) == OpCount(multiplies=1872, adds=1584)


def test_depthwise_valid_stride2_dense():
    layer = DepthwiseConv2D(6, 6, 4, kernel_size=(3, 3), strides=(2, 2),
                            padding='valid', depth_multiplier=2)
    # h = w = (6-3)//2 + 1 = 2.
    assert output_shape(layer) == (2, 2, 8)
    # N = 72, params = 72 + 8 = 80.
    assert count_parameters(layer) == 80.0
    # P = 4. mults = 72*4 = 288.
    # adds = (72 - 8)*4 = 256 + bias 8*4 = 32 -> 288.
    assert count_ops(layer) == OpCount(multiplies=288, adds=288)


# ---------------------------------------------------------------------------
# count_network
# ---------------------------------------------------------------------------


MLP = (
    FullyConnected(17, 256, activation='relu'),
    FullyConnected(256, 256, activation='relu'),
    FullyConnected(256, 6),
)


def test_count_network_mlp_17_256_256_6():
    # Layer 1, 17x256 dense: N = 4352, k = 4352.
    #   params 4352 + 256 = 4608; mults 4352;
    #   adds (4352-256) + 256 bias + 256 relu = 4096 + 512 = 4608.
    # Layer 2, 256x256 at s = 0.9: N = 65536,
    #   k = round(65536*0.1) = round(6553.6) = 6554.
    #   params 6554 + 256 + 65536/32 = 2048 -> 8858; mults 6554;
    #   adds (6554-256) = 6298 + 256 + 256 = 6810.
    # Layer 3, 256x6 at s = 0.8: N = 1536,
    #   k = round(1536*0.2) = round(307.2) = 307.
    #   params 307 + 6 + 1536/32 = 48 -> 361; mults 307;
    #   adds (307-6) = 301 + 6 bias = 307.
    # Totals: params 4608 + 8858 + 361 = 13827;
    #   mults 4352 + 6554 + 307 = 11213; adds 4608 + 6810 + 307 = 11725.
    params, ops = count_network(MLP, [0.0, 0.9, 0.8])
    assert params == 13827.0
    assert ops == OpCount(multiplies=11213, adds=11725)
    assert ops.total == 22938  # 11213 + 11725


def test_count_network_param_bits_16():
    # Bitmasks become 65536/16 = 4096 and 1536/16 = 96:
    # 4608 + (6554 + 256 + 4096) + (307 + 6 + 96) = 4608 + 10906 + 409.
    params, _ = count_network(MLP, (0.0, 0.9, 0.8), param_bits=16)
    assert params == 15923.0


def test_count_network_dense_mlp():
    # Dense: weights 4352 + 65536 + 1536 = 71424; biases 256+256+6 = 518.
    # params = 71424 + 518 = 71942; mults = 71424.
    # adds = (71424 - 518) accumulation + 518 bias + 512 relu = 71936.
    params, ops = count_network(MLP, [0.0, 0.0, 0.0])
    assert params == 71942.0
    assert ops == OpCount(multiplies=71424, adds=71936)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('bad', [1.0, -0.1, 1.5, math.nan, '0.5', None, True])
def test_invalid_sparsity_raises(bad):
    layer = FullyConnected(4, 3)
    for func in (count_parameters, count_ops, nonzero_weights):
        with pytest.raises(ValueError) as info:
            func(layer, bad)
        message = str(info.value)
        assert repr(bad) in message
        assert '[0, 1)' in message


def test_invalid_sparsity_in_network_raises():
    with pytest.raises(ValueError, match=re.escape('1.2')):
        count_network(MLP, [0.0, 1.2, 0.0])


@pytest.mark.parametrize('kwargs, bad_name, bad_value', [
    (dict(input_size=0, output_size=3), 'input_size', '0'),
    (dict(input_size=4, output_size=-3), 'output_size', '-3'),
    (dict(input_size=2.5, output_size=3), 'input_size', '2.5'),
    (dict(input_size=4, output_size=3, use_bias='yes'), 'use_bias', "'yes'"),
])
def test_fc_invalid_fields_raise(kwargs, bad_name, bad_value):
    with pytest.raises(ValueError) as info:
        FullyConnected(**kwargs)
    assert bad_name in str(info.value)
    assert bad_value in str(info.value)


def test_unknown_activation_raises_and_lists_allowed():
    with pytest.raises(ValueError) as info:
        FullyConnected(4, 3, activation='gelu')
    message = str(info.value)
    assert "'gelu'" in message
    for allowed in ("'relu'", "'tanh'", "'sigmoid'", "'swish'", "'elu'",
                    "'softplus'", "'linear'", 'None'):
        assert allowed in message
    with pytest.raises(ValueError, match=re.escape("'RELU'")):
        Conv2D(4, 4, 1, 1, (1, 1), activation='RELU')


def test_unknown_padding_raises_and_lists_allowed():
    with pytest.raises(ValueError) as info:
        Conv2D(8, 8, 3, 4, (3, 3), padding='full')
    message = str(info.value)
    assert "'full'" in message
    assert "'same'" in message and "'valid'" in message
    with pytest.raises(ValueError, match=re.escape("'causal'")):
        DepthwiseConv2D(8, 8, 3, (3, 3), padding='causal')


@pytest.mark.parametrize('kwargs, bad', [
    (dict(input_height=0), '0'),
    (dict(input_width=-1), '-1'),
    (dict(in_channels=0), '0'),
    (dict(out_channels=0), '0'),
    (dict(kernel_size=(3,)), '(3,)'),
    (dict(kernel_size=(0, 3)), '0'),
    (dict(strides=(1, 0)), '0'),
    (dict(strides=(1, 1.5)), '1.5'),
])
def test_conv_invalid_fields_raise(kwargs, bad):
    fields = dict(input_height=8, input_width=8, in_channels=3,
                  out_channels=4, kernel_size=(3, 3))
    fields.update(kwargs)
    with pytest.raises(ValueError) as info:
        Conv2D(**fields)
    assert list(kwargs)[0] in str(info.value)
    assert bad in str(info.value)


def test_depthwise_invalid_multiplier_raises():
    with pytest.raises(ValueError) as info:
        DepthwiseConv2D(8, 8, 3, (3, 3), depth_multiplier=0)
    assert 'depth_multiplier' in str(info.value)
    assert '0' in str(info.value)


def test_valid_kernel_larger_than_input_raises():
    with pytest.raises(ValueError) as info:
        Conv2D(8, 2, 3, 4, (3, 3), padding='valid')
    message = str(info.value)
    assert 'width' in message and '3' in message and '2' in message
    # The same kernel is fine with 'same' padding: w = ceil(2/1) = 2.
    assert output_shape(Conv2D(8, 2, 3, 4, (3, 3))) == (8, 2, 4)


@pytest.mark.parametrize('bad', [0, -8, 4.5])
def test_invalid_param_bits_raises(bad):
    with pytest.raises(ValueError) as info:
        count_parameters(FullyConnected(4, 3), 0.5, param_bits=bad)
    assert 'param_bits' in str(info.value)
    assert repr(bad) in str(info.value)


def test_count_network_length_mismatch_raises():
    with pytest.raises(ValueError) as info:
        count_network(MLP, [0.0, 0.5])
    assert '3 layers' in str(info.value)
    assert '2 sparsities' in str(info.value)


def test_unknown_layer_type_raises_type_error():
    with pytest.raises(TypeError, match='dict'):
        count_ops({'input_size': 4}, 0.0)
