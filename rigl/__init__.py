"""sparserl: sparse training in deep reinforcement learning (TF-Agents + gin).

tensorflow-model-optimization >= 0.8 switches Keras to the legacy `tf_keras`
package when imported. If `tf.keras` was resolved before that, its layers are not
the Keras layers TF-Agents expects, so the switch is made here, before any
module of this package imports TensorFlow.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
