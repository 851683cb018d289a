"""Iteration counters (Caffe2's iter_op.{h,cc}): Iter and AtomicIter.

The iteration count is an int64 tensor of one element, incremented in place. ``Iter`` with no
input starts it at 0 when the output holds no tensor yet, so the first value is 1. With its
(in-place) input the blob must already hold the count. ``AtomicIter`` increments under the
mutex of input 0 (made by CreateMutex) and counts its runs in the process-wide stat
``atomic_iter/stats/<iter blob>/num_iter``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from caffe2.operators._util import I64
from caffe2.runtime.blob import Blob, describe
from caffe2.runtime.registry import operator
from caffe2.runtime.stats import ExportedStat

Kernel = Callable[[], None]

MUTEX_TYPE = "std::unique_ptr<std::mutex>"
_I64_MAX = np.iinfo(np.int64).max


def mutex_input(op: Any, i: int) -> Any:
    """The mutex (a CreateMutex blob) in input i, or an error naming the blob.

    Any object whose type declares ``caffe2_type_name = "std::unique_ptr<std::mutex>"`` and
    is a context manager (acquire on enter, release on exit) is accepted.
    """
    m = op.inputs[i].value
    t = type(m)
    if getattr(t, "caffe2_type_name", None) != MUTEX_TYPE or not hasattr(t, "__enter__"):
        name = op.input_names[i]
        raise op.error(
            f"{op.type}: input {i} ({name}) must hold a mutex (made by CreateMutex), but it "
            f"holds {describe(m)}",
            name,
        )
    return m


def increment_iter(op: Any, blob: Blob, name: str) -> int:
    """Caffe2's IncrementIter: the one-element int64 count in blob, plus one; the new value."""
    v = blob.value
    if not isinstance(v, np.ndarray):
        raise op.error(
            f"{op.type}: the iteration blob {name} must hold an int64 tensor of size 1, but it "
            f"holds {describe(v)}",
            name,
        )
    if v.size != 1:
        raise op.error(f"The size of Iter should be 1, but got {v.size}", name)
    if v.dtype != I64:
        raise op.error(
            f"{op.type}: the iteration blob {name} must be an int64 tensor, but it is "
            f"{describe(v)}",
            name,
        )
    flat = v.reshape(-1)  # a view: the blob's own C-contiguous array
    cur = int(flat[0])
    if cur < 0:
        raise op.error(f"Previous iteration number is negative. ({cur})", name)
    if cur >= _I64_MAX:
        raise op.error("Overflow will happen!", name)
    flat[0] = cur + 1
    return cur + 1


@operator("Iter", inputs=(0, 1), outputs=1, enforce_inplace={(0, 0)})
def iter_op(op: Any) -> Kernel:
    """Iter: [(iter)] -> iter. Adds 1 to the int64 [1] count in place (no input and no
    tensor yet: it starts at 0, so the first value is 1)."""
    Y = op.outputs[0]
    name = op.output_names[0]
    has_input = bool(op.input_names)

    def run() -> None:
        if not has_input and not isinstance(Y.value, np.ndarray):
            Y.value = np.zeros(1, I64)
        increment_iter(op, Y, name)

    return run


@operator("AtomicIter", inputs=2, outputs=1, enforce_inplace={(1, 0)})
def atomic_iter(op: Any) -> Kernel:
    """AtomicIter: [mutex, iter] -> iter. Iter under the mutex; counts runs in a stat."""
    Y = op.outputs[0]
    name = op.output_names[0]
    stat = ExportedStat(f"atomic_iter/stats/{op.input_names[1]}", "num_iter")

    def run() -> None:
        with mutex_input(op, 0):
            increment_iter(op, Y, name)
        stat.increment()

    return run
