"""Bad inputs and a full disk end in one line `error: ...` and exit 2, with
nothing lost: a checkpoint that cannot be written, a damaged histogram file.

The runs go through `console.run_cli` in this process (the command line's
body without the TF start-up cost).
"""

import errno
import os

import numpy as np
import pytest

import rigl  # noqa: F401

import helpers
import tiny
from helpers import results, run_in_process
from rigl.rl.tfagents import anf
from rigl.rl.tfagents.run import checkpoints
from rigl.rl.tfagents.run import replay as replay_lib

REPO = helpers.REPO
SAC_DENSE = helpers.config('sac_mujoco_dense_config.gin')


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err[-3000:]
    return lines[0]


# 1. A full disk while a checkpoint is written ------------------------------

def _tf_write_fails(original):
    import tensorflow as tf

    def write(self, path, *args, **kwargs):
        if 'ckpt-200' in path:
            raise tf.errors.ResourceExhaustedError(
                None, None, f'{path}.data-00000-of-00001.tempstate; No space '
                'left on device')
        return original(self, path, *args, **kwargs)
    return write


def _replay_save_fails(original):
    def save(self, path):
        if 'ckpt-200' in path:
            with open(path, 'wb') as f:  # a partial file, then the error
                f.write(b'PK\x03\x04')
            raise OSError(errno.ENOSPC, 'No space left on device', path)
        return original(self, path)
    return save


@pytest.mark.parametrize('target, make', [
    ('tf', _tf_write_fails), ('replay', _replay_save_fails)])
def test_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_one(
        tmp_path, monkeypatch, target, make):
    import tensorflow as tf

    owner, name = ((tf.train.Checkpoint, 'write') if target == 'tf' else
                   (replay_lib.ReplayBuffer, 'save'))
    monkeypatch.setattr(owner, name, make(getattr(owner, name)))
    root = tmp_path / 'run'
    code, _, err = run_in_process('sac', root, SAC_DENSE, tiny.SAC)
    assert code == 2
    line = one_error_line(err)
    previous = os.path.join(root, 'checkpoints', 'ckpt-100')
    assert line == (
        f'error: cannot write checkpoint {root}/checkpoints/ckpt-200 ('
        + (f'{root}/checkpoints/ckpt-200.tmp/tf.data-00000-of-00001.tempstate;'
           ' No space left on device' if target == 'tf' else
           '[Errno 28] No space left on device: '
           f"'{root}/checkpoints/ckpt-200.tmp/replay.npz'")
        + f'); the previous checkpoint {previous} is intact: free disk space '
        'and rerun the same command to resume.')
    # The staging directory is gone; the previous checkpoint is whole and
    # still the one `latest` names; no final metric was written.
    assert sorted(os.listdir(root / 'checkpoints')) == ['ckpt-100', 'latest']
    assert helpers.latest_checkpoint(root) == previous
    assert not (root / 'final_metric.json').exists()
    assert [row['step'] for row in results(root)] == [100, 200]
    # With room again, the same command resumes from it and finishes.
    monkeypatch.undo()
    code, out, err = run_in_process('sac', root, SAC_DENSE, tiny.SAC)
    assert code == 0, err[-2000:]
    assert f'Resumed from {previous}' in out
    assert [row['step'] for row in results(root)] == [100, 200]
    assert (root / 'final_metric.json').exists()


def test_unwritable_checkpoint_without_an_earlier_one(tmp_path, monkeypatch):
    """Not a full disk: the advice is only to rerun."""
    def write(self, path, *args, **kwargs):
        raise PermissionError(errno.EACCES, 'Permission denied', path)

    import tensorflow as tf
    monkeypatch.setattr(tf.train.Checkpoint, 'write', write)
    code, _, err = run_in_process('sac', tmp_path / 'run', SAC_DENSE,
                                  tiny.SAC)
    assert code == 2
    line = one_error_line(err)
    assert 'cannot write checkpoint' in line and 'ckpt-100' in line
    assert line.endswith('Permission denied: '
                         f"'{tmp_path}/run/checkpoints/ckpt-100.tmp/tf'); no "
                         'earlier checkpoint exists: rerun the same command '
                         'to resume.')
    assert os.listdir(tmp_path / 'run' / 'checkpoints') == []


def test_checkpoint_write_error_is_an_os_error():
    """`console.run_cli` reports OSError in one line (exit 2)."""
    assert issubclass(checkpoints.CheckpointWriteError, OSError)


# 2. A damaged histogram file -------------------------------------------------

def _histograms(path):
    edges = np.tile(np.linspace(-1.0, 1.0, 11), (3, 1))
    probabilities = np.full((3, 10), 0.1)
    anf.save_feature_histograms(str(path), edges, probabilities)
    with open(path, 'rb') as f:
        return f.read()


@pytest.mark.parametrize('damage, detail', [
    (lambda data: data[:len(data) // 2], 'File is not a zip file'),
    (lambda data: data[:-10], 'File is not a zip file'),
    (lambda data: b'', 'No data left in file'),
    (lambda data: data[:200] + bytes([data[200] ^ 0xff]) + data[201:],
     "Bad CRC-32 for file 'bin_edges.npy'"),
])
def test_damaged_histogram_file_is_named(tmp_path, damage, detail):
    path = tmp_path / 'h.npz'
    data = _histograms(path)
    with open(path, 'wb') as f:
        f.write(damage(data))
    with pytest.raises(ValueError) as caught:
        anf.load_feature_histograms(str(path), num_features=3)
    assert str(caught.value) == (
        f"histogram_file='{path}' is damaged ({detail}): write it again "
        '(python -m rigl.rl.make_histograms).')


def test_damaged_histogram_file_in_a_run_is_one_line(tmp_path):
    path = tmp_path / 'h.npz'
    data = _histograms(path)
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    root = tmp_path / 'run'
    code, _, err = run_in_process('sac', root, SAC_DENSE, tiny.SAC + [
        'create_environment.noise_fraction = 0.5',
        f"create_environment.noise_histogram_file = '{path}'"])
    assert code == 2
    assert one_error_line(err) == (
        f"error: histogram_file='{path}' is damaged (File is not a zip "
        'file): write it again (python -m rigl.rl.make_histograms).')
    assert not (root / 'checkpoints').exists()
    assert not (root / 'results.jsonl').exists()


@pytest.mark.parametrize('args, message', [
    (['-m', 'rigl.rl.distributed', '--num_actors=0'],
     'error: flag --num_actors=0: 0 is not a positive integer'),
    (['rigl/rl/tfagents/sac_train_eval.py', '--verbose=maybe'],
     'error: flag --verbose=maybe:'),
])
def test_bad_flag_value_is_one_line_and_exit_2(tmp_path, args, message):
    """absl's own parser prints two lines and exits 1; ours one line, 2."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, *args, f'--root_dir={tmp_path}'],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
