"""sparserl: sparse training in deep reinforcement learning (TF-Agents + gin).

tensorflow-model-optimization >= 0.8 switches Keras to the legacy `tf_keras`
package when imported (TF_USE_LEGACY_KERAS=1). TF-Agents, tfmot and our layers
must all see the same Keras, so the choice is made here, before any module of
this package imports TensorFlow:

* imported first (the usual case): `tf_keras` for everything;
* imported after TensorFlow (e.g. a notebook that ran `import tensorflow`):
  `tf.keras` is resolved now, before tfmot can flip the switch, so every
  package keeps TensorFlow's own Keras 2.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
if 'tensorflow' in sys.modules and 'TF_USE_LEGACY_KERAS' not in os.environ:
    sys.modules['tensorflow'].keras.layers.Layer  # pylint: disable=pointless-statement
else:
    os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
