"""sparserl: sparse training in deep reinforcement learning (TF-Agents + gin).

tensorflow-model-optimization >= 0.8 switches Keras to the legacy `tf_keras`
package when imported (TF_USE_LEGACY_KERAS=1). TF-Agents, tfmot and our layers
must all see the same Keras, so the choice is made here, before any module of
this package imports TensorFlow:

* imported first (the usual case): `tf_keras` for everything;
* imported after TensorFlow (e.g. a notebook that ran `import tensorflow`):
  `tf.keras` is resolved now, before tfmot can flip the switch, so every
  package keeps TensorFlow's own Keras 2.

Unless a command line asks for `--verbose`, the start-up noise of other
packages is hidden: TensorFlow's C++ log lines (CUDA plugin registration) and
the "unmaintained" notice the old `gym` package prints when TF-Agents
imports it.
"""

import contextlib
import io
import os
import sys

VERBOSE = '--verbose' in sys.argv
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2' if VERBOSE else '3')
if 'tensorflow' in sys.modules and 'TF_USE_LEGACY_KERAS' not in os.environ:
    # Resolves the lazy `tf.keras` now (see above).
    getattr(sys.modules['tensorflow'].keras.layers, 'Layer')
else:
    os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
if not VERBOSE and 'gym' not in sys.modules:
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            import gym  # noqa: F401  pylint: disable=unused-import
        except ImportError:
            pass
