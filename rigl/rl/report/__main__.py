"""`python -m rigl.rl.report --root_dir=ROOT`: see `rigl.rl.report.cli`."""

from absl import app
from absl import flags

from rigl.rl.report import cli

# absl's --help shows the main module's docstring and the flags it owns.
__doc__ = cli.__doc__  # pylint: disable=redefined-builtin

if __name__ == '__main__':
    cli.define_flags()
    flags.adopt_module_key_flags(cli)
    app.run(cli.main)
