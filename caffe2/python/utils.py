"""Helpers shared by the Python layer: argument encoding and TensorProto conversion.

``MakeArgument`` encodes a Python value as an ``Argument`` proto with Caffe2's rules, in
Caffe2's order of checks (spec runtime.md 5.5). The code uses no NumPy alias removed in
NumPy 2 (``np.float_`` is ``np.float64``, ``np.int_`` is the platform's long integer).
"""

from __future__ import annotations

import collections.abc
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message

from caffe2.proto import caffe2_pb2

_FLOAT_TYPES = (float, np.float64)
_INT_TYPES = (int, bool, np.int_)


def MakeArgument(key: str, value: Any) -> caffe2_pb2.Argument:
    """An Argument named ``key`` holding ``value`` (ValueError for unsupported values)."""
    argument = caffe2_pb2.Argument()
    argument.name = key
    iterable = isinstance(value, collections.abc.Iterable)

    # Fast path: a float32 array goes to `floats` without per-element checks.
    if isinstance(value, np.ndarray) and value.dtype.type is np.float32:
        argument.floats.extend(value.flatten().tolist())
        return argument

    if isinstance(value, np.ndarray):
        value = value.flatten().tolist()
    elif isinstance(value, np.generic):
        value = value.item()

    if type(value) is float:
        argument.f = value
    elif type(value) is int or type(value) is bool:
        argument.i = int(value)
    elif isinstance(value, bytes):
        argument.s = value
    elif isinstance(value, str):
        argument.s = value.encode("utf-8")
    elif isinstance(value, caffe2_pb2.NetDef):
        argument.n.CopyFrom(value)
    elif isinstance(value, Message):
        argument.s = value.SerializeToString()
    elif iterable and all(type(v) in _FLOAT_TYPES for v in value):
        argument.floats.extend(v.item() if type(v) is np.float64 else v for v in value)
    elif iterable and all(type(v) in _INT_TYPES for v in value):
        argument.ints.extend(int(v) for v in value)
    elif iterable and all(isinstance(v, (bytes, str)) for v in value):
        argument.strings.extend(v.encode("utf-8") if isinstance(v, str) else v for v in value)
    elif iterable and all(isinstance(v, caffe2_pb2.NetDef) for v in value):
        argument.nets.extend(value)
    elif iterable and all(isinstance(v, Message) for v in value):
        argument.strings.extend(v.SerializeToString() for v in value)
    elif iterable:
        raise ValueError(
            f"Unknown iterable argument type: key={key} value={value}, value "
            f"type={type(value)}[{set(type(v) for v in value)}]"
        )
    else:
        raise ValueError(
            f"Unknown argument type: key={key} value={value}, value type={type(value)}"
        )
    return argument


def ArgsToDict(args: Iterable[caffe2_pb2.Argument]) -> dict[str, Any]:
    """{name: value} of named arguments; the value is the first set field (None if none)."""
    ans: dict[str, Any] = {}
    for arg in args:
        if not arg.HasField("name"):
            continue
        ans[arg.name] = None
        for d in arg.DESCRIPTOR.fields:
            if d.name == "name":
                continue
            if d.is_repeated:
                values = getattr(arg, d.name)
                if len(values) > 0:
                    ans[arg.name] = values
                    break
            elif arg.HasField(d.name):
                ans[arg.name] = getattr(arg, d.name)
                break
    return ans


# TensorProto data type -> (field, numpy dtype). INT32 is read as NumPy's default integer, as
# Caffe2's helper did (it used ``np.int``, i.e. the platform's long).
_PROTO_TO_NUMPY = {
    caffe2_pb2.TensorProto.FLOAT: ("float_data", np.float32),
    caffe2_pb2.TensorProto.DOUBLE: ("double_data", np.float64),
    caffe2_pb2.TensorProto.INT32: ("int32_data", np.int_),
    caffe2_pb2.TensorProto.INT16: ("int32_data", np.int16),
    caffe2_pb2.TensorProto.UINT16: ("int32_data", np.uint16),
    caffe2_pb2.TensorProto.INT8: ("int32_data", np.int8),
    caffe2_pb2.TensorProto.UINT8: ("int32_data", np.uint8),
}


def Caffe2TensorToNumpyArray(tensor: caffe2_pb2.TensorProto) -> np.ndarray:
    """The array a TensorProto holds (FLOAT, DOUBLE, INT32, INT16, UINT16, INT8, UINT8)."""
    entry = _PROTO_TO_NUMPY.get(tensor.data_type)
    if entry is None:
        raise RuntimeError(f"Tensor data type not supported yet: {tensor.data_type}")
    field, dtype = entry
    return np.asarray(getattr(tensor, field), dtype=dtype).reshape(tuple(tensor.dims))


_NUMPY_TO_PROTO = (
    (np.float32, caffe2_pb2.TensorProto.FLOAT, "float_data"),
    (np.float64, caffe2_pb2.TensorProto.DOUBLE, "double_data"),
    (np.int_, caffe2_pb2.TensorProto.INT32, "int32_data"),
    (np.int32, caffe2_pb2.TensorProto.INT32, "int32_data"),
    (np.int16, caffe2_pb2.TensorProto.INT16, "int32_data"),
    (np.uint16, caffe2_pb2.TensorProto.UINT16, "int32_data"),
    (np.int8, caffe2_pb2.TensorProto.INT8, "int32_data"),
    (np.uint8, caffe2_pb2.TensorProto.UINT8, "int32_data"),
)


def NumpyArrayToCaffe2Tensor(arr: np.ndarray, name: str | None = None) -> caffe2_pb2.TensorProto:
    """A TensorProto holding arr; integer arrays are stored as INT32, as Caffe2 did."""
    tensor = caffe2_pb2.TensorProto()
    tensor.dims.extend(arr.shape)
    if name:
        tensor.name = name
    for dtype, data_type, field in _NUMPY_TO_PROTO:
        if arr.dtype == dtype:
            tensor.data_type = data_type
            getattr(tensor, field).extend(arr.flatten().tolist())
            return tensor
    raise NotImplementedError(f"Don't know how to deal with type {arr.dtype}.")


def GetContentFromProto(obj: Message, function_map: dict[type, Callable[[Any], Any]]) -> Any:
    """``function_map[type(obj)](obj)`` for the exact type of obj (None if it has no entry)."""
    for cls, func in function_map.items():
        if type(obj) is cls:
            return func(obj)
    return None


def TryReadProtoWithClass(cls: type, s: bytes | str) -> Message:
    """Parse s as a text-format cls, else as a binary one (DecodeError if neither fits)."""
    obj = cls()
    try:
        text_format.Parse(s, obj)
        return obj
    except (text_format.ParseError, UnicodeDecodeError):
        if isinstance(s, str):
            s = s.encode("utf-8")
        obj.ParseFromString(s)
        return obj


def GetContentFromProtoString(
    s: bytes | str, function_map: dict[type, Callable[[Any], Any]]
) -> Any:
    """Parse s as the first class of function_map that accepts it, and apply that class's fn."""
    for cls, func in function_map.items():
        try:
            obj = TryReadProtoWithClass(cls, s)
        except DecodeError:
            continue
        return func(obj)
    raise DecodeError("Cannot find a fit protobuffer class.")


def ConvertProtoToBinary(proto_class: type, filename: str, out_filename: str) -> None:
    """Convert a text-format proto file into its binary serialization."""
    proto = proto_class()
    with open(filename) as f:
        text_format.Merge(f.read(), proto)
    with open(out_filename, "wb") as fid:
        fid.write(proto.SerializeToString())


def raiseIfNotEqual(a: Any, b: Any, msg: str) -> None:
    """Raise Exception when a != b."""
    if a != b:
        raise Exception(f"{msg}. {a} != {b}")
