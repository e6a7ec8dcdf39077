"""MicroNet-challenge-style parameter and operation counting for sparse layers.

The counting rules are documented in `micronet_counting.counting`. This
package is pure Python so it can be imported without loading TensorFlow.
"""

from micronet_counting.counting import ACTIVATION_OPS
from micronet_counting.counting import Conv2D
from micronet_counting.counting import count_network
from micronet_counting.counting import count_ops
from micronet_counting.counting import count_parameters
from micronet_counting.counting import DepthwiseConv2D
from micronet_counting.counting import FullyConnected
from micronet_counting.counting import Layer
from micronet_counting.counting import nonzero_weights
from micronet_counting.counting import OpCount
from micronet_counting.counting import output_shape
from micronet_counting.counting import weight_shape

__all__ = [
    'ACTIVATION_OPS',
    'Conv2D',
    'count_network',
    'count_ops',
    'count_parameters',
    'DepthwiseConv2D',
    'FullyConnected',
    'Layer',
    'nonzero_weights',
    'OpCount',
    'output_shape',
    'weight_shape',
]
