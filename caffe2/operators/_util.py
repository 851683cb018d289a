"""Helpers shared by the operator families: tensor access, output buffers, dtype tables."""

from __future__ import annotations

from typing import Any

import numpy as np

from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import Blob, describe, dtype_name
from caffe2.runtime.dtypes import DTYPE_TO_ENUM, ENUM_TO_DTYPE  # noqa: F401  (re-exported)
from caffe2.runtime.errors import EnforceError

TP = caffe2_pb2.TensorProto

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
I32, I64 = np.dtype(np.int32), np.dtype(np.int64)
BOOL = np.dtype(np.bool_)
NUMERIC = frozenset({I32, I64, F32, F64})
FLOATS = frozenset({F32, F64})


def tensor(op: Any, i: int) -> np.ndarray:
    """Input i of op as a tensor, or an error naming the blob and what it holds."""
    v = op.inputs[i].value
    if not isinstance(v, np.ndarray):
        name = op.input_names[i]
        raise EnforceError(
            f"{op.type}: input {i} ({name}) must be a tensor, but the blob holds {describe(v)}",
            op.where,
            name,
        )
    return v


def check_dtype(op: Any, i: int, arr: np.ndarray, allowed: frozenset) -> None:
    if arr.dtype not in allowed:
        names = ", ".join(sorted(dtype_name(d) for d in allowed))
        raise EnforceError(
            f"{op.type}: input {i} ({op.input_names[i]}) has type {dtype_name(arr.dtype)}; "
            f"supported types are {names}",
            op.where,
            op.input_names[i],
        )


def output(blob: Blob, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """The blob's tensor if it already has this shape and dtype, else a fresh one in the blob.

    Reusing the buffer is what Caffe2's Tensor::Resize did; it is safe because every blob
    owns its array exclusively (fetch copies, feed copies).
    """
    v = blob.value
    if isinstance(v, np.ndarray) and v.shape == shape and v.dtype == dtype:
        return v
    v = blob.value = np.empty(shape, dtype)
    return v


def store(blob: Blob, arr: np.ndarray) -> None:
    """Put a freshly computed array in a blob (owned, C-contiguous)."""
    blob.value = np.ascontiguousarray(arr)


def dtype_of_enum(op: Any, value: int, arg: str = "dtype") -> np.dtype:
    dt = ENUM_TO_DTYPE.get(value)
    if dt is None:
        raise op.error(f"Unexpected '{arg}' argument value: {value}")
    return dt
