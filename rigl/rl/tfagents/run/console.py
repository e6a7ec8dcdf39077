"""Console output: progress lines, warnings, and the command-line front end
that turns configuration errors into one line and exit code 2."""

import logging as std_logging
import os
import sys
import time
import tokenize
import warnings
from typing import Callable, Sequence

from absl import flags
from absl import logging
import gin
import numpy as np

FLAGS = flags.FLAGS


def log(message: str) -> None:
    """A progress line on stdout (TF's own INFO logging is silenced)."""
    print(message, flush=True)


class Progress:
    """Readable console lines: step, steps/s, recent returns, time left."""

    def __init__(self, total_steps: int, start_step: int):
        self._total = total_steps
        self._last_time = time.time()
        self._last_step = start_step
        self.steps_per_second = 0.0

    def line(self, step: int, recent_returns: Sequence[float],
             extra: str = '') -> str:
        now = time.time()
        elapsed = max(now - self._last_time, 1e-9)
        self.steps_per_second = (step - self._last_step) / elapsed
        self._last_time, self._last_step = now, step
        remaining = (self._total - step) / max(self.steps_per_second, 1e-9)
        recent = (f'{np.mean(recent_returns):9.1f}' if len(recent_returns)
                  else '      n/a')
        return (f'step {step:>9,}/{self._total:,} | '
                f'{self.steps_per_second:7.1f} steps/s | '
                f'return(last {len(recent_returns)}) {recent} | '
                f'{extra}left {format_seconds(remaining)}')


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def define_flags() -> None:
    """The flags every train script takes."""
    flags.DEFINE_string('root_dir', None, 'Directory for all run outputs; '
                        'rerunning with the same one resumes the run.')
    flags.DEFINE_multi_string('gin_file', [], 'Gin config files.')
    flags.DEFINE_multi_string('gin_bindings', [],
                              "Gin bindings, e.g. 'train_eval.seed=3'.")
    flags.DEFINE_bool('allow_config_change', False,
                      'Resume even if the config differs from the one the '
                      'run in root_dir was started with.')
    flags.DEFINE_bool('verbose', False, 'Show the warnings of TensorFlow, '
                      'TF-Agents, gym and MuJoCo (hidden by default).')
    flags.DEFINE_bool('is_mujoco', True, 'Accepted for compatibility with the '
                      "original suite's commands; has no effect.")
    flags.mark_flag_as_required('root_dir')


class RunDirBusy(RuntimeError):
    """Another process holds the run directory."""


def _explain(error: BaseException) -> str:
    text = ' '.join(str(error).split())
    text = text.split(' In call to configurable ')[0]
    line = (getattr(error, 'text', None) or '').strip()
    if 'ast.Name object' in text and '=' in line:
        # gin parses values as Python literals: a bare word is a name.
        name, _, value = line.partition('=')
        return (f'cannot parse the gin binding {line!r}: quote strings, e.g. '
                f"{name.strip()}='{value.strip()}'.")
    if isinstance(error, tokenize.TokenError):
        return f'gin syntax error: {text}'
    return text


def run_cli(train: Callable[[str, bool], object], gin_files: Sequence[str],
            gin_bindings: Sequence[str], root_dir: str,
            allow_config_change: bool = False) -> int:
    """Parses gin, runs `train(root_dir, allow_config_change)`, and turns
    configuration errors into a one-line `error: ...` on stderr.

    Returns:
        The exit code: 0, or 2 for a configuration error.
    """
    try:
        gin.parse_config_files_and_bindings(gin_files, gin_bindings)
        train(root_dir, allow_config_change)
    except (ValueError, TypeError, SyntaxError, OSError, tokenize.TokenError,
            RunDirBusy) as error:
        print(f'error: {_explain(error)}', file=sys.stderr)
        # A failed restore leaves TF objects that log every unrestored value
        # when collected; the one line above says what matters.
        std_logging.getLogger('tensorflow').setLevel(std_logging.ERROR)
        return 2
    return 0


def quiet_libraries() -> None:
    """Hides other packages' warnings: TF and absl log lines (e.g. each
    unrestored value of a checkpoint we fall back from, 'Sanitizing' names
    at policy save), tfp's type-registration warning at policy save, and
    MuJoCo's deprecation warnings with the MUJOCO_LOG.TXT file they write,
    and Gymnasium's notice on ids with a newer version (CartPole-v0 is the
    original DQN configs' task on purpose). Errors still show."""
    logging.set_verbosity(logging.ERROR)
    std_logging.getLogger('tensorflow').setLevel(std_logging.ERROR)
    warnings.filterwarnings('ignore', message='Encoding a StructuredValue')
    warnings.filterwarnings('ignore', message='.*is out of date. You should '
                            'consider upgrading to version')
    try:
        import mujoco  # pylint: disable=import-outside-toplevel
        mujoco.set_mju_user_warning(lambda message: None)
    except ImportError:
        pass


def configure_devices() -> str:
    """Prepares every visible GPU, picks the CPU thread count, and says
    where training runs.

    TensorFlow places the networks on a GPU by itself when one is visible;
    memory growth is turned on so that several runs of a sweep can share
    one GPU instead of the first taking all its memory. On a CPU, each op
    runs on one thread unless TF_NUM_INTRAOP_THREADS says otherwise: this
    suite's networks are too small for an op to gain from more (a SAC,
    TD3 or DQN train step is 10-15% faster on one thread than on two, see
    benchmarks/), while independent ops still run side by side on TF's
    inter-op threads.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices('GPU')
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: keep TF's setting
            pass
    if gpus:
        names = ', '.join(gpu.name.replace('/physical_device:', '')
                          for gpu in gpus)
        return f'device: {names} (TensorFlow places the networks there)'
    if not os.environ.get('TF_NUM_INTRAOP_THREADS'):
        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already running: keep its count
            pass
    threads = (tf.config.threading.get_intra_op_parallelism_threads() or
               int(os.environ.get('TF_NUM_INTRAOP_THREADS') or 0) or
               os.cpu_count())
    return (f'device: CPU, {threads} intra-op thread{"s" * (threads != 1)} '
            '(no GPU visible)')


def parse_flags(argv: Sequence[str]) -> Sequence[str]:
    """absl's flag parsing (`app.run(..., flags_parser=parse_flags)`), with
    a bad flag value as one line `error: ...` and exit code 2, as every
    other bad input (absl prints two lines and exits 1)."""
    try:
        return flags.FLAGS(list(argv))
    except flags.Error as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)


def script_main(algorithm: str) -> Callable[[Sequence[str]], None]:
    """The absl main of `<algorithm>_train_eval.py`. The training code, and
    with it TensorFlow, is imported once the flags have parsed: --help and
    a bad flag answer at once, not after TensorFlow's start-up."""

    def main(argv: Sequence[str]) -> None:
        del argv
        # pylint: disable-next=import-outside-toplevel
        from rigl.rl.tfagents import train
        train.main(algorithm)

    return main


def run_main(train: Callable[[str, bool], object]) -> None:
    """`run_cli` with the command-line flags; exits with its code."""
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.verbose:
        quiet_libraries()
    log(configure_devices())
    code = run_cli(train, FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.root_dir,
                   FLAGS.allow_config_change)
    if code:
        sys.exit(code)
