"""Device placement: runs say where they train; without a GPU the work is
placed on the CPU (the path a GPU machine takes is TensorFlow's own)."""

import os
import subprocess
import sys

import pytest

import rigl  # noqa: F401

import tensorflow as tf

from helpers import REPO
from rigl.rl.tfagents.run import console



def test_cpu_placement_is_reported_and_used():
    summary = console.configure_devices()
    if tf.config.list_physical_devices('GPU'):
        assert summary.startswith('device: GPU:0')
        return
    assert summary.startswith('device: CPU, ') and 'no GPU visible' in summary
    product = tf.matmul(tf.ones([2, 3]), tf.ones([3, 2]))
    assert product.device.endswith('CPU:0')


@pytest.mark.parametrize('variable, threads, line', [
    (None, 1, 'device: CPU, 1 intra-op thread (no GPU visible)'),
    ('1', 1, 'device: CPU, 1 intra-op thread (no GPU visible)'),
    ('2', 2, 'device: CPU, 2 intra-op threads (no GPU visible)'),
])
def test_cpu_threads_default_to_one_and_follow_the_environment(
        variable, threads, line):
    """On a CPU each op runs on one thread unless TF_NUM_INTRAOP_THREADS
    sets the count; the summary says which, and TensorFlow runs with it.
    The process first imports what the train scripts and the distributed
    launcher import: a module that starts TensorFlow at import (a tensor
    made at module level) would fix the count before the script picks it."""
    code = ('import rigl; from rigl.rl.tfagents import train; '
            'from rigl.rl import distributed; '
            'from rigl.rl.tfagents.run import console; '
            'print(console.configure_devices()); import tensorflow as tf; '
            'tf.constant(1.0) + 1.0; '
            'print("threads", tf.config.threading.'
            'get_intra_op_parallelism_threads())')
    env = {k: v for k, v in os.environ.items()
           if k != 'TF_NUM_INTRAOP_THREADS'}
    env['CUDA_VISIBLE_DEVICES'] = ''
    if variable:
        env['TF_NUM_INTRAOP_THREADS'] = variable
    completed = subprocess.run([sys.executable, '-c', code],
                               capture_output=True, text=True, cwd=REPO,
                               env=env)
    assert completed.returncode == 0, completed.stderr[-1000:]
    assert line in completed.stdout
    if variable is None:  # set by configure_devices, read back from TF
        assert f'threads {threads}' in completed.stdout
