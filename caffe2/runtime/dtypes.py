"""TensorProto.DataType <-> NumPy dtype: the one table every layer uses.

STRING tensors are object arrays of ``bytes``; BYTE loads as uint8.
"""

from __future__ import annotations

import numpy as np

from caffe2.proto import caffe2_pb2

TP = caffe2_pb2.TensorProto

ENUM_TO_DTYPE: dict[int, np.dtype] = {
    TP.FLOAT: np.dtype(np.float32),
    TP.INT32: np.dtype(np.int32),
    TP.BYTE: np.dtype(np.uint8),
    TP.STRING: np.dtype(object),
    TP.BOOL: np.dtype(np.bool_),
    TP.UINT8: np.dtype(np.uint8),
    TP.INT8: np.dtype(np.int8),
    TP.UINT16: np.dtype(np.uint16),
    TP.INT16: np.dtype(np.int16),
    TP.INT64: np.dtype(np.int64),
    TP.FLOAT16: np.dtype(np.float16),
    TP.DOUBLE: np.dtype(np.float64),
}

DTYPE_TO_ENUM: dict[np.dtype, int] = {
    dt: enum for enum, dt in ENUM_TO_DTYPE.items() if enum != TP.BYTE
}
