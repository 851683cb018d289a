"""Tensor values of blobs and the TensorCPU view that Python code (and Python ops) use.

``to_tensor`` applies Caffe2's feed rules to a NumPy array: supported dtypes only, a
C-contiguous copy the blob will own, and object/str/bytes arrays stored as object arrays of
bytes (Caffe2's STRING tensors).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caffe2.runtime.blob import Blob

FEEDABLE = frozenset(
    np.dtype(t)
    for t in (np.bool_, np.float16, np.float32, np.float64, np.int8, np.int16, np.int32,
              np.int64, np.uint8, np.uint16)
)  # fmt: skip

# TensorProto.DataType values accepted by TensorCPU.init (STRING is refused there).
_INIT_TYPES = {1: np.float32, 2: np.int32, 3: np.uint8, 5: np.bool_, 6: np.uint8, 7: np.int8,
               8: np.uint16, 9: np.int16, 10: np.int64, 12: np.float16, 13: np.float64}  # fmt: skip


def to_tensor(arr: np.ndarray) -> np.ndarray:
    """A fresh, owned, C-contiguous tensor holding arr, under Caffe2's dtype rules."""
    kind = arr.dtype.kind
    if kind in "SUO":
        out = np.empty(arr.shape, dtype=object)
        flat_in = arr.reshape(-1)
        flat_out = out.reshape(-1)
        for i, v in enumerate(flat_in):
            if isinstance(v, bytes):
                flat_out[i] = v
            elif isinstance(v, str):
                flat_out[i] = v.encode("utf-8")
            elif isinstance(v, np.bytes_):
                flat_out[i] = bytes(v)
            else:
                raise RuntimeError("Unsupported python object type passed into ndarray.")
        return out
    if arr.dtype not in FEEDABLE:
        raise RuntimeError(f"This numpy data type is not supported: {arr.dtype.num}.")
    return np.array(arr, dtype=arr.dtype, order="C", copy=True)


def copy_value(value: Any) -> Any:
    """What fetching a blob returns: a copy of a tensor, the bytes of a string blob."""
    if isinstance(value, np.ndarray):
        return value.copy()
    return value


class TensorCPU:
    """A live view of a blob's CPU tensor (Caffe2's ``C.TensorCPU``)."""

    __slots__ = ("_blob",)

    def __init__(self, blob: Blob) -> None:
        self._blob = blob
        if not isinstance(blob.value, np.ndarray):
            blob.value = np.empty((0,), np.float32)

    @property
    def data(self) -> np.ndarray:
        """The tensor's array itself (edits are visible); string tensors are copied."""
        v = self._blob.value
        return v.copy() if v.dtype.kind == "O" else v

    def feed(self, arr: Any) -> bool:
        if not isinstance(arr, np.ndarray):
            raise RuntimeError("Unexpected type of argument -- expected numpy array")
        self._blob.value = to_tensor(arr)
        return True

    def fetch(self) -> np.ndarray:
        return self._blob.value.copy()

    def init(self, dims: list[int], caffe_type: int) -> None:
        dt = _INIT_TYPES.get(int(caffe_type))
        if dt is None:
            raise RuntimeError("Cannot init tensor of this type. Use `feed` instead.")
        self._blob.value = np.empty(tuple(dims), dt)

    @property
    def _shape(self) -> list[int]:
        return list(self._blob.value.shape)

    def _reshape(self, dims: list[int]) -> None:
        v = self._blob.value
        dims = tuple(int(d) for d in dims)
        if int(np.prod(dims, dtype=np.int64)) == v.size:
            self._blob.value = np.ascontiguousarray(v.reshape(dims))
        else:
            self._blob.value = np.empty(dims, v.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._blob.value.shape)

    def reshape(self, shape: Any) -> None:
        self._reshape(list(shape))
