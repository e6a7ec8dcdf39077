"""Helpers for end-to-end tests: the repository's paths, running a train
script (in a subprocess or in this process), and reading a run's results,
checkpoints and TensorBoard summaries.

Importable from every test file (tests/conftest.py's directory is on
sys.path). TensorFlow is imported where a helper needs it, so that test
files without TensorFlow (studies, reports, docs) stay light.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, 'rigl', 'rl', 'tfagents', 'configs')
SCRIPTS = os.path.join(REPO, 'rigl', 'rl', 'tfagents')


def script(algorithm: str) -> str:
    """The path of `rigl/rl/tfagents/<algorithm>_train_eval.py`."""
    return os.path.join(SCRIPTS, f'{algorithm}_train_eval.py')


def config(name: str) -> str:
    """The path of a config file in rigl/rl/tfagents/configs/."""
    return os.path.join(CONFIGS, name)


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def assert_png(path):
    """`path` is a PNG image with something drawn in it (axes, curves,
    text: more than 10 kB)."""
    with open(path, 'rb') as f:
        head = f.read(8)
    assert head == PNG_SIGNATURE, path
    assert os.path.getsize(path) > 10_000, path


def _tf():
    """TensorFlow, imported after `rigl` (which picks the Keras)."""
    import rigl  # noqa: F401
    import tensorflow as tf
    return tf


@contextlib.contextmanager
def variables_created_in_graphs():
    """Within: yields the names of the variables created while a
    tf.function is traced. A compiled step whose first call creates
    variables is traced twice (once to create them, once without), which
    costs every run's start-up; none should be listed."""
    tf = _tf()
    names = []

    def record(next_creator, **kwargs):
        variable = next_creator(**kwargs)
        if tf.inside_function():
            names.append(variable.name)
        return variable

    with tf.variable_creator_scope(record):
        yield names


def results(root):
    """The rows of a run's results.jsonl."""
    with open(os.path.join(root, 'results.jsonl')) as f:
        return [json.loads(line) for line in f]


def checkpoint_masks(path):
    """Every sparse layer's 0/1 mask in a checkpoint, by variable name: a
    masked layer's `mask`, or a sparse-execution layer's, rebuilt from its
    `positions` (its shape from its row and column pointers)."""
    reader = _tf().train.load_checkpoint(os.path.join(path, 'tf'))
    names = reader.get_variable_to_shape_map()
    masks = {name: reader.get_tensor(name) for name in names
             if '/mask/' in name}
    for name in names:
        if '/positions/' not in name:
            continue
        pointers = [reader.get_variable_to_shape_map()[name.replace(
            '/positions/', f'/{axis}_ptr/')][0] - 1 for axis in ('row', 'col')]
        mask = np.zeros(pointers, np.float32)
        rows, cols = reader.get_tensor(name).T
        mask[rows, cols] = 1.0
        masks[name] = mask
    return masks


def latest_checkpoint(root):
    """The checkpoint directory a run's `latest` file names."""
    directory = os.path.join(root, 'checkpoints')
    with open(os.path.join(directory, 'latest')) as f:
        return os.path.join(directory, f.read().strip())


def wait_for(predicate, process, timeout: float, what: str) -> None:
    """Polls `predicate()` every 0.2 s until it holds. Fails naming `what`
    if `process` (None: no process) exits first (with its output, if
    piped) or `timeout` seconds pass."""
    deadline = time.time() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(
                f'{what}: the process exited ({process.returncode}) first\n'
                f'{out or ""}{err or ""}')
        if time.time() > deadline:
            raise AssertionError(f'{what}: not within {timeout} s')
        time.sleep(0.2)


def kill_after_checkpoints(args, root, count: int = 2,
                           timeout: float = 240) -> str:
    """Starts a training command, SIGKILLs it once `count` checkpoints were
    written, and returns the newest complete checkpoint's path."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    directory = os.path.join(root, 'checkpoints')
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if os.path.isdir(directory) and len(
                    [n for n in os.listdir(directory)
                     if n.startswith('ckpt-')
                     and not n.endswith('.tmp')]) >= count:
                break
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # The newest complete checkpoint directory, which a resume restores: the
    # kill may land after a checkpoint's rename but before `latest` names it.
    steps = [int(name[len('ckpt-'):]) for name in os.listdir(directory)
             if name.startswith('ckpt-') and not name.endswith('.tmp')]
    return os.path.join(directory, f'ckpt-{max(steps)}')


def copy_as_killed_after(run_root, destination, step: int) -> None:
    """Copies a finished run to `destination` as a kill right after its
    checkpoint at train step `step` would leave it: later checkpoints and
    the final metric gone, `latest` naming `ckpt-<step>`."""
    shutil.copytree(run_root, destination)
    directory = os.path.join(destination, 'checkpoints')
    for name in os.listdir(directory):
        number = name[len('ckpt-'):]
        if (name.startswith('ckpt-') and number.isdigit()
                and int(number) > step):
            shutil.rmtree(os.path.join(directory, name))
    with open(os.path.join(directory, 'latest'), 'w') as f:
        f.write(f'ckpt-{step}')
    os.remove(os.path.join(destination, 'final_metric.json'))


def training_command(script: str, root, gin_file: str, bindings,
                     flags=()) -> list:
    """The command line of a train script with a config and gin bindings."""
    return ([sys.executable, script, f'--root_dir={root}',
             f'--gin_file={gin_file}'] +
            [f'--gin_bindings={binding}' for binding in bindings] +
            list(flags))


def sweep_command(root, *extra) -> list:
    """The command line of a sweep of tiny SAC runs (tiny.SAC_SWEEP on its
    sparse config) into `root`; `extra` adds or overrides flags."""
    import tiny
    return ([sys.executable, '-m', 'rigl.rl.sweep', '--script=sac',
             f'--gin_file={tiny.SAC_SWEEP_CONFIG}', f'--root_dir={root}',
             '--status_every=1000'] +
            [f'--gin_bindings={b}' for b in tiny.SAC_SWEEP] + list(extra))


def ppo_experience(algorithm, steps: int = 33):
    """One environment's trajectory [1, steps] of random 3-feature
    observations and rewards (seeded), with the actions and policy info of
    the PPO `algorithm`'s collect policy."""
    import numpy as np
    from tf_agents.trajectories import time_step as ts
    from tf_agents.trajectories import trajectory

    tf = _tf()
    rng, collect_rng = np.random.default_rng(0), np.random.default_rng(1)
    items = []
    for t in range(steps):
        observation = rng.normal(size=(1, 3)).astype(np.float32)
        action, info = algorithm.collect_policy(observation, collect_rng)
        items.append(trajectory.Trajectory(
            step_type=np.array([ts.StepType.FIRST if t == 0 else
                                ts.StepType.MID], np.int32),
            observation=observation, action=action, policy_info=info,
            next_step_type=np.array([ts.StepType.MID], np.int32),
            reward=np.array([rng.normal()], np.float32),
            discount=np.array([1.0], np.float32)))
    return tf.nest.map_structure(
        lambda *xs: tf.constant(np.stack(xs, axis=1)), *items)


def summary_tags(directory) -> set:
    """Every scalar tag in the TensorBoard event files under `directory`."""
    tf = _tf()
    tags = set()
    for name in os.listdir(directory):
        for event in tf.compat.v1.train.summary_iterator(
                os.path.join(directory, name)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def summary_values(directory, tag: str) -> list:
    """(step, value) of every event of scalar `tag` under `directory`."""
    tf = _tf()
    values = []
    for name in sorted(os.listdir(directory)):
        for event in tf.compat.v1.train.summary_iterator(
                os.path.join(directory, name)):
            for value in event.summary.value:
                if value.tag == tag:
                    values.append((event.step, float(
                        tf.make_ndarray(value.tensor) if value.HasField(
                            'tensor') else value.simple_value)))
    return values


def run_config(algorithm: str, root, gin_file: str, bindings) -> dict:
    """Trains `algorithm` to the end in this process (`run_in_process`),
    asserts that it succeeded, and returns its final metric."""
    code, _, err = run_in_process(algorithm, root, gin_file, bindings)
    assert code == 0, err[-3000:]
    with open(os.path.join(root, 'final_metric.json')) as f:
        return json.load(f)


def run_in_process(algorithm: str, root, gin_file, bindings,
                   allow_config_change: bool = False):
    """Runs a train script's body in this process (no TF start-up cost).

    Returns:
        (exit code, stdout, stderr) as the command line would give them.
    """
    import io

    import gin

    from rigl.rl.tfagents import train
    from rigl.rl.tfagents.run import console

    gin.clear_config()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = console.run_cli(
            lambda root_dir, allow: train.train_eval(
                root_dir, algorithm=algorithm, allow_config_change=allow),
            [gin_file] if gin_file else [], list(bindings), str(root),
            allow_config_change)
    gin.clear_config()
    return code, out.getvalue(), err.getvalue()


def snapshot(root) -> dict:
    """Every file under `root` with its size and modification time (but the
    lock file, which names the last process that held the directory)."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            if name == '.lock':
                continue
            path = os.path.join(directory, name)
            stat = os.stat(path)
            files[os.path.relpath(path, root)] = (stat.st_size,
                                                  stat.st_mtime_ns)
    return files
