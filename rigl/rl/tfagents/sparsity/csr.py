"""Sparse-dense products for layers that hold only their active weights.

The products come from two small TensorFlow CPU ops in `csr_kernels.cc`,
compiled on first use with the machine's C++ compiler against the installed
TensorFlow, and cached (`$SPARSERL_CACHE`, else `~/.cache/sparserl`).
TensorFlow's own sparse ops lose to dense kernels at the sizes RL networks
have: their gradient with respect to the weights gathers a [nnz, batch]
product, about 10x the dense layer's time at 90% sparsity.

A layer's weights W [n_in, n_out] are `values` [nnz] at `positions`
[nnz, 2] (row, col), sorted row-major (the order of `tf.where(mask)`).
`Structure` holds the index arrays both products need; it is derived from
the positions once per mask change, not per step.
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
from typing import Callable, NamedTuple, Optional

import tensorflow as tf

_SOURCE = os.path.join(os.path.dirname(__file__), 'csr_kernels.cc')
_lock = threading.Lock()
_module = None
_error: Optional[str] = None


def _cache_dir() -> str:
    return os.environ.get('SPARSERL_CACHE') or os.path.join(
        os.path.expanduser('~'), '.cache', 'sparserl')


def _cpu_id() -> str:
    """What the compiled code depends on besides its source: the CPU's
    instruction sets (it is built with -march=native)."""
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                if line.startswith('flags'):
                    return line
    except OSError:
        pass
    return os.uname().machine


def _build(target: str) -> None:
    """Compiles the kernels into `target` (written atomically)."""
    compiler = os.environ.get('CXX', 'g++')
    os.makedirs(os.path.dirname(target), exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix='.so',
                                       dir=os.path.dirname(target))
    os.close(handle)
    command = ([compiler, '-shared', '-fPIC', '-O3', '-march=native',
                '-fopenmp-simd', _SOURCE, '-o', partial]
               + tf.sysconfig.get_compile_flags()
               + tf.sysconfig.get_link_flags())
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f'compiling {_SOURCE} failed ({" ".join(command[:1])} exit '
                f'{result.returncode}): {result.stderr.strip()[-2000:]}')
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def kernels():
    """The compiled ops module (built and cached on first call).

    Raises:
        RuntimeError: the kernels cannot be built here (no C++ compiler,
            or it failed), with the compiler's message.
    """
    global _module, _error
    with _lock:
        if _module is not None:
            return _module
        if _error is not None:
            raise RuntimeError(_error)
        with open(_SOURCE, 'rb') as source:
            key = hashlib.sha256(
                source.read() + tf.__version__.encode() + sys.version.encode()
                + _cpu_id().encode()).hexdigest()[:16]
        target = os.path.join(_cache_dir(), f'csr_kernels_{key}.so')
        try:
            if not os.path.exists(target):
                _build(target)
            _module = tf.load_op_library(target)
        except (OSError, RuntimeError, tf.errors.NotFoundError) as error:
            _error = (f"train_eval.sparse_execution='sparse' needs the sparse "
                      f'kernels, which could not be built: {error}')
            raise RuntimeError(_error) from None
        return _module


def check_available() -> None:
    """Raises ValueError (one line, with the compiler's message) if the
    kernels cannot be built here."""
    try:
        kernels()
    except RuntimeError as error:
        raise ValueError(str(error).replace('\n', ' ')) from None


def available() -> bool:
    """Whether the compiled kernels load on this machine."""
    try:
        kernels()
        return True
    except RuntimeError:
        return False


def _nothing(dtype: tf.DType) -> tf.Tensor:
    """An empty vector: `which` for values already in the product's order
    (int32), or no bias (float32). Made at each call, not at import: a
    tensor made at import would start TensorFlow before the train script
    picks its thread count (`console.configure_devices`)."""
    return tf.zeros([0], dtype)


class Structure(NamedTuple):
    """Index arrays of one sparse weight matrix (all int32).

    row_ptr, col: the positions by row (row-major, the values' order);
    col_ptr, row_by_col, which_by_col: the same positions by column, with
    the index of each one's value.
    """
    row_ptr: tf.Tensor
    col: tf.Tensor
    col_ptr: tf.Tensor
    row_by_col: tf.Tensor
    which_by_col: tf.Tensor


def structure(positions: tf.Tensor, shape) -> Structure:
    """The `Structure` of positions [nnz, 2] (row-major) in a matrix of
    `shape` (n_in, n_out)."""
    n_in, n_out = int(shape[0]), int(shape[1])
    positions = tf.cast(positions, tf.int32)
    rows, cols = positions[:, 0], positions[:, 1]

    def pointers(ids, size):
        counts = tf.math.bincount(ids, minlength=size, maxlength=size,
                                  dtype=tf.int32)
        return tf.concat([[0], tf.cumsum(counts)], axis=0)

    by_col = tf.argsort(cols * n_in + rows, stable=True)
    return Structure(
        row_ptr=pointers(rows, n_in), col=cols,
        col_ptr=pointers(cols, n_out),
        row_by_col=tf.gather(rows, by_col), which_by_col=by_col)


def matmul(x: tf.Tensor, values: tf.Tensor, layout: Structure,
           shape, gradient_hook: Optional[Callable] = None,
           bias: Optional[tf.Tensor] = None, relu: bool = False) -> tf.Tensor:
    """x [batch, n_in] @ W [n_in, n_out], W being `values` on `layout`,
    plus `bias` and then max(., 0) if `relu`: a Dense layer's forward pass
    in one op.

    Differentiable in `x`, `values` and `bias`; the gradient with respect
    to the values is computed at the active positions only.
    `gradient_hook(x, dy)`, if given, returns an op the backward pass runs
    too (a layer capturing its dense gradient on mask-update steps; dy is
    the gradient before the bias and activation).
    """
    ops = kernels()
    del shape  # implied by the layout
    no_bias = bias is None
    if no_bias:
        bias = _nothing(tf.float32)

    @tf.custom_gradient
    def product(x, values, bias):
        y = ops.sparserl_mat_mul(x, layout.col_ptr, layout.row_by_col,
                                 layout.which_by_col, values, bias, relu=relu)

        def gradient(dy):
            if relu:  # TF's own ReLU gradient: one op
                dy = tf.raw_ops.ReluGrad(gradients=dy, features=y)
            dx = ops.sparserl_mat_mul(dy, layout.row_ptr, layout.col,
                                      _nothing(tf.int32), values,
                                      _nothing(tf.float32))
            dvalues = ops.sparserl_sampled_dot(x, dy, layout.row_ptr,
                                               layout.col)
            if gradient_hook is not None:
                with tf.control_dependencies([gradient_hook(x, dy)]):
                    dvalues = tf.identity(dvalues)
            dbias = (tf.zeros_like(bias) if no_bias
                     else tf.raw_ops.BiasAddGrad(out_backprop=dy))
            return dx, dvalues, dbias

        return y, gradient

    return product(x, values, bias)
