"""Blob: an untyped, mutable holder of one value.

A blob holds nothing (``None``: uninitialized), a tensor (a C-contiguous ``numpy.ndarray`` the
blob owns exclusively: string tensors are object arrays of ``bytes``), a byte string (Caffe2's
``std::string`` blob), or any other Python object (counters, queues, workspace stacks ...).

Kernels read and write ``blob.value`` directly; operators bind Blob objects when a net is
created, so a write through a child workspace lands in the parent's Blob.
"""

from __future__ import annotations

import numpy as np


class Blob:
    """One named slot of a workspace (the name lives in the workspace, not here)."""

    __slots__ = ("value", "__weakref__")

    def __init__(self, value: object = None) -> None:
        self.value = value

    def is_tensor(self) -> bool:
        return isinstance(self.value, np.ndarray)

    def type_name(self) -> str:
        """The Caffe2 type name of what the blob holds, as error messages and fetch show it."""
        return type_name(self.value)

    def reset(self) -> None:
        self.value = None

    def __repr__(self) -> str:
        v = self.value
        if isinstance(v, np.ndarray):
            return f"<Blob Tensor {v.dtype} {list(v.shape)}>"
        return f"<Blob {type_name(v)}>"


def type_name(value: object) -> str:
    """Caffe2's name for the type of a blob's content."""
    if value is None:
        return "nullptr (uninitialized)"
    if isinstance(value, np.ndarray):
        return "Tensor"
    if isinstance(value, bytes):
        return "std::string"
    return getattr(type(value), "caffe2_type_name", type(value).__name__)


def describe(value: object) -> str:
    """A short description of a blob's content for error messages: type, dtype and shape."""
    if isinstance(value, np.ndarray):
        return f"Tensor {dtype_name(value.dtype)} {list(value.shape)}"
    return type_name(value)


def dtype_name(dtype: np.dtype) -> str:
    return "string" if dtype.kind == "O" else str(dtype)
