"""Moved to `rigl.rl.tfagents.anf.connectivity`; these names stay for
the callers that still import them from here."""

from rigl.rl.tfagents.anf.connectivity import CSV_FILE  # noqa: F401
from rigl.rl.tfagents.anf.connectivity import FIELDS  # noqa: F401
from rigl.rl.tfagents.anf.connectivity import plot_input_layer  # noqa: F401
from rigl.rl.tfagents.anf.connectivity import plot_over_time  # noqa: F401
from rigl.rl.tfagents.anf.connectivity import write_csv  # noqa: F401
