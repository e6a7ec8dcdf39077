"""Importing TensorFlow before `rigl` (as a notebook might) must work."""

import subprocess
import sys

BUILD_SPARSE_ACTOR = '''
import tensorflow as tf
import rigl
from tf_agents.specs import tensor_spec
from rigl.rl.tfagents import networks, sparse_layers
spec = tensor_spec.BoundedTensorSpec((3,), tf.float32, -1, 1)
actor = networks.create_sac_actor_network(spec, spec, (8,), 'sparse', True)
actor.create_variables(spec)
sparse_layers.init_masks(actor, sparsity=0.5, mask_init_method='uniform')
print('masked layers', len(sparse_layers.masked_layers(actor)))
'''


def test_tensorflow_imported_before_rigl():
    completed = subprocess.run([sys.executable, '-c', BUILD_SPARSE_ACTOR],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert 'masked layers 2' in completed.stdout
