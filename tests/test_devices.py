"""Device placement: runs say where they train; without a GPU the work is
placed on the CPU (the path a GPU machine takes is TensorFlow's own)."""

import os
import subprocess
import sys

import rigl  # noqa: F401

import tensorflow as tf

from rigl.rl.tfagents.run import console

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))


def test_cpu_placement_is_reported_and_used():
    summary = console.configure_devices()
    if tf.config.list_physical_devices('GPU'):
        assert summary.startswith('device: GPU:0')
        return
    assert summary.startswith('device: CPU, ') and 'no GPU visible' in summary
    product = tf.matmul(tf.ones([2, 3]), tf.ones([3, 2]))
    assert product.device.endswith('CPU:0')


def test_thread_count_in_the_summary_follows_the_environment():
    code = ('import rigl; from rigl.rl.tfagents.run import console; '
            'print(console.configure_devices())')
    completed = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True,
        cwd=REPO, env=dict(os.environ, TF_NUM_INTRAOP_THREADS='1',
                           CUDA_VISIBLE_DEVICES=''))
    assert completed.returncode == 0, completed.stderr[-1000:]
    assert 'device: CPU, 1 intra-op thread (no GPU visible)' in completed.stdout
