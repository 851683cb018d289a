"""Unique and the unsorted segment reductions (used by core.DeduplicateGradientSlices)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from caffe2.operators._util import FLOATS, I32, I64, NUMERIC, check_dtype, tensor
from caffe2.runtime.registry import operator

_INDEX_TYPES = frozenset({I32, I64})


@operator("Unique", inputs=1, outputs=(1, 2))
def unique(op: Any) -> Callable[[], None]:
    """Unique: [X] -> [unique, (remapping)]. The distinct values of a 1-D int32/int64 tensor
    (sorted), and optionally int32 indices with unique[remapping] == X."""
    U = op.outputs[0]
    R = op.outputs[1] if len(op.outputs) > 1 else None

    def run() -> None:
        x = tensor(op, 0)
        check_dtype(op, 0, x, _INDEX_TYPES)
        if x.ndim != 1:
            raise op.error(f"Unique expects a 1-D tensor, got shape {list(x.shape)}")
        values, inverse = np.unique(x, return_inverse=True)
        U.value = np.ascontiguousarray(values)
        if R is not None:
            R.value = inverse.astype(np.int32).reshape(x.shape)

    return run


def _segment_kernel(op: Any, mean: bool) -> Callable[[], None]:
    Y = op.outputs[0]

    def run() -> None:
        data = tensor(op, 0)
        ids = tensor(op, 1)
        check_dtype(op, 0, data, NUMERIC)
        check_dtype(op, 1, ids, _INDEX_TYPES)
        if ids.ndim != 1 or data.ndim < 1 or ids.shape[0] != data.shape[0]:
            raise op.error(
                f"SEGMENT_IDS must be 1-D with one id per row of DATA: DATA {list(data.shape)}, "
                f"SEGMENT_IDS {list(ids.shape)}",
                op.input_names[1],
            )
        if ids.size and ids.min() < 0:
            raise op.error(f"negative segment id {int(ids.min())}", op.input_names[1])
        n = int(ids.max()) + 1 if ids.size else 0
        out = np.zeros((n,) + data.shape[1:], data.dtype)
        np.add.at(out, ids, data)
        if mean:
            counts = np.bincount(ids, minlength=n).reshape((n,) + (1,) * (data.ndim - 1))
            if data.dtype in FLOATS:
                np.divide(out, np.maximum(counts, 1), out=out)
            else:
                out //= np.maximum(counts, 1).astype(data.dtype)
        Y.value = out

    return run


@operator("UnsortedSegmentSum", inputs=2, outputs=1)
def unsorted_segment_sum(op: Any) -> Callable[[], None]:
    """UnsortedSegmentSum: [DATA, SEGMENT_IDS] -> Y, Y[k] = sum of the rows with id k."""
    return _segment_kernel(op, mean=False)


@operator("UnsortedSegmentMean", inputs=2, outputs=1)
def unsorted_segment_mean(op: Any) -> Callable[[], None]:
    """UnsortedSegmentMean: [DATA, SEGMENT_IDS] -> Y, Y[k] = mean of the rows with id k
    (0 for an id no row has)."""
    return _segment_kernel(op, mean=True)
