"""Blob serialization: tensors and other blob values to and from ``BlobProto`` bytes.

The format is Caffe2's (spec runtime.md section 1, data.md 8.1):

- a tensor becomes a BlobProto ``{name, type="Tensor", tensor}``; the TensorProto holds the
  full ``dims``, ``data_type``, the values of one element range in the typed field of its
  data type, ``name``, and ``segment {begin, end}`` (always set). CPU tensors do not set
  ``device_detail``. In a DB a tensor is cut into chunks keyed ``<name>#%<k>``;
- a byte string (std::string blob) becomes ``{name, type="std::string", content}``;
- any other value needs a serializer registered for its Python type
  (``register_serializer``), and loading any other ``type`` string needs a deserializer
  registered under it (``register_deserializer``). The data layer registers its own types.
- an object tensor whose elements are not strings but values with a registered serializer
  (e.g. PackRecords' packed records) is written as Caffe2 wrote tensors of such types: a
  TensorProto of data type UNDEFINED whose ``string_data`` holds one serialized BlobProto per
  element; loading deserializes each element with the deserializer of its BlobProto type.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import Blob, type_name
from caffe2.runtime.dtypes import ENUM_TO_DTYPE
from caffe2.runtime.errors import EnforceError

TP = caffe2_pb2.TensorProto

TENSOR_TYPE = "Tensor"
STRING_TYPE = "std::string"
CHUNK_ID_SEPARATOR = "#%"
DEFAULT_CHUNK_SIZE = 1000000

_WHERE = "blob_serialization"

# numpy dtype -> (TensorProto.DataType, typed field). STRING tensors are object arrays of bytes.
_DTYPE_INFO: dict[np.dtype, tuple[int, str]] = {
    np.dtype(np.float32): (TP.FLOAT, "float_data"),
    np.dtype(np.int32): (TP.INT32, "int32_data"),
    np.dtype(np.bool_): (TP.BOOL, "int32_data"),
    np.dtype(np.uint8): (TP.UINT8, "int32_data"),
    np.dtype(np.int8): (TP.INT8, "int32_data"),
    np.dtype(np.uint16): (TP.UINT16, "int32_data"),
    np.dtype(np.int16): (TP.INT16, "int32_data"),
    np.dtype(np.int64): (TP.INT64, "int64_data"),
    np.dtype(np.float16): (TP.FLOAT16, "int32_data"),
    np.dtype(np.float64): (TP.DOUBLE, "double_data"),
    np.dtype(object): (TP.STRING, "string_data"),
}

# TensorProto.DataType -> numpy dtype of the loaded tensor.
_ENUM_DTYPE = ENUM_TO_DTYPE

Serializer = Callable[[str, Any], caffe2_pb2.BlobProto]
Deserializer = Callable[[caffe2_pb2.BlobProto, Blob], None]

_registry_lock = threading.Lock()
_SERIALIZERS: dict[type, tuple[str, Serializer]] = {}
_DESERIALIZERS: dict[str, Deserializer] = {}


# ---- registry ------------------------------------------------------------------------------
def register_serializer(py_type: type, type_name: str, fn: Serializer) -> None:
    """Serialize values of py_type (and subclasses) with ``fn(name, value) -> BlobProto``.

    ``type_name`` is the BlobProto ``type`` the serializer writes; fn should set it (it is
    filled in when fn leaves it empty).
    """
    with _registry_lock:
        _SERIALIZERS[py_type] = (type_name, fn)


def register_deserializer(type_name: str, fn: Deserializer) -> None:
    """Load BlobProtos whose ``type`` is type_name with ``fn(proto, blob)``."""
    with _registry_lock:
        _DESERIALIZERS[type_name] = fn


def _find_serializer(value: object) -> tuple[str, Serializer] | None:
    for klass in type(value).__mro__:
        entry = _SERIALIZERS.get(klass)
        if entry is not None:
            return entry
    return None


# ---- tensors -------------------------------------------------------------------------------
def _is_blob_element(v: object) -> bool:
    """Whether an object-tensor element is stored as a serialized BlobProto (UNDEFINED)."""
    return not isinstance(v, (bytes, str)) and _find_serializer(v) is not None


def _fill(proto: caffe2_pb2.TensorProto, flat: np.ndarray, name: str) -> None:
    """Write the values of a flat array into proto's typed field (dtype already checked)."""
    dt = flat.dtype
    data_type, fld = _DTYPE_INFO[dt]
    proto.data_type = data_type
    if flat.size == 0:
        return
    if data_type == TP.STRING and _is_blob_element(flat[0]):
        proto.data_type = TP.UNDEFINED
        out = proto.string_data
        for i, v in enumerate(flat):
            if not _is_blob_element(v):
                raise EnforceError(
                    f"Cannot serialize tensor {name}: element {i} is a {type(v).__name__}, "
                    f"but element 0 is a {type(flat[0]).__name__} (an object tensor must hold "
                    "only strings or only values of one serializable type)",
                    _WHERE,
                    name,
                )
            out.append(blob_proto("", v).SerializeToString())
    elif data_type == TP.STRING:
        out = proto.string_data
        for i, v in enumerate(flat):
            if isinstance(v, bytes):
                out.append(v)
            elif isinstance(v, str):
                out.append(v.encode("utf-8"))
            else:
                why = (
                    "but element 0 is a string (an object tensor must hold only strings or "
                    "only values of one serializable type)"
                    if _is_blob_element(v)
                    else "not bytes (and no serializer is registered for it)"
                )
                raise EnforceError(
                    f"Cannot serialize string tensor {name}: element {i} is a "
                    f"{type(v).__name__}, {why}",
                    _WHERE,
                    name,
                )
    elif data_type == TP.FLOAT16:
        proto.int32_data.extend(flat.view(np.uint16).astype(np.int32).tolist())
    elif fld == "int32_data":
        proto.int32_data.extend(flat.astype(np.int32).tolist())
    else:
        getattr(proto, fld).extend(flat.tolist())


def _check_dtype(arr: np.ndarray, name: str) -> None:
    if arr.dtype not in _DTYPE_INFO:
        raise EnforceError(
            f"Cannot serialize tensor {name}: data type {arr.dtype} has no TensorProto type",
            _WHERE,
            name,
        )


def tensor_proto(
    arr: np.ndarray, name: str, begin: int = 0, end: int | None = None
) -> caffe2_pb2.TensorProto:
    """The TensorProto of elements [begin, end) of arr, as Caffe2's tensor serializer wrote it.

    Full dims, data type, the chunk's values, name, and the segment (always set).
    """
    _check_dtype(arr, name)
    size = arr.size
    if end is None:
        end = size
    if not 0 <= begin <= end <= size:
        raise EnforceError(
            f"Invalid chunk {begin} {end} with total tensor size {size}", _WHERE, name
        )
    proto = TP()
    proto.dims.extend(int(d) for d in arr.shape)
    flat = np.ascontiguousarray(arr).reshape(-1)[begin:end]
    _fill(proto, flat, name)
    proto.name = name
    proto.segment.begin = begin
    proto.segment.end = end
    return proto


def array_to_tensor(arr: np.ndarray, name: str | None = None) -> caffe2_pb2.TensorProto:
    """A TensorProto holding the whole of arr (dims, data type, data; name when given).

    No segment is set: this is the form utils.NumpyArrayToCaffe2Tensor produced.
    """
    arr = np.asarray(arr)
    if arr.dtype.kind in "SU":
        arr = arr.astype(object)
    label = name or "<unnamed>"
    _check_dtype(arr, label)
    proto = TP()
    proto.dims.extend(int(d) for d in arr.shape)
    _fill(proto, np.ascontiguousarray(arr).reshape(-1), label)
    if name:
        proto.name = name
    return proto


def _proto_values(proto: caffe2_pb2.TensorProto, count: int, label: str) -> np.ndarray:
    """The values stored in proto's typed field as a flat array of the tensor's dtype."""
    data_type = proto.data_type
    if data_type == TP.UNDEFINED:
        return _blob_elements(proto, count, label)
    dt = _ENUM_DTYPE.get(data_type)
    if dt is None:
        raise EnforceError(
            f"Cannot load tensor {label}: TensorProto data type {data_type} is not supported",
            _WHERE,
            label,
        )
    if data_type == TP.FLOAT16 and proto.HasField("byte_data"):
        raw = proto.byte_data
        if len(raw) != 2 * count:
            raise EnforceError("Incorrect proto field size.", _WHERE, label)
        return np.frombuffer(raw, dtype="<u2").view(np.float16).astype(np.float16)
    if data_type == TP.BYTE:
        raw = proto.byte_data
        if len(raw) != count:
            raise EnforceError("Incorrect proto field size.", _WHERE, label)
        return np.frombuffer(raw, dtype=np.uint8).copy()
    if data_type == TP.STRING:
        src = proto.string_data
        if len(src) != count:
            raise EnforceError("Incorrect proto field size.", _WHERE, label)
        out = np.empty(count, dtype=object)
        for i, v in enumerate(src):
            out[i] = bytes(v)
        return out
    fld = _DTYPE_INFO[dt][1]
    src = getattr(proto, fld)
    if len(src) != count:
        raise EnforceError("Incorrect proto field size.", _WHERE, label)
    if data_type == TP.FLOAT16:
        return np.array(src, dtype=np.int32).astype(np.uint16).view(np.float16)
    if fld == "int32_data" and dt != np.dtype(np.int32):
        return np.array(src, dtype=np.int32).astype(dt)
    return np.array(src, dtype=dt)


def _blob_elements(proto: caffe2_pb2.TensorProto, count: int, label: str) -> np.ndarray:
    """The elements of an UNDEFINED tensor: each string_data entry is a serialized BlobProto."""
    src = proto.string_data
    if len(src) != count:
        raise EnforceError("Incorrect proto field size.", _WHERE, label)
    out = np.empty(count, dtype=object)
    for i, data in enumerate(src):
        element = Blob()
        try:
            deserialize_blob(data, element)
        except EnforceError as e:
            raise EnforceError(
                f"Cannot load element {i} of tensor {label} (data type UNDEFINED): {e}",
                _WHERE,
                label,
            ) from e
        out[i] = element.value
    return out


def _dims(proto: caffe2_pb2.TensorProto, label: str) -> tuple[tuple[int, ...], int]:
    dims = tuple(int(d) for d in proto.dims)
    if any(d < 0 for d in dims):
        raise EnforceError(f"Cannot load tensor {label}: negative dims {list(dims)}", _WHERE, label)
    size = 1
    for d in dims:
        size *= d
    return dims, size


def _segment(proto: caffe2_pb2.TensorProto, size: int, label: str) -> tuple[int, int]:
    if proto.HasField("segment"):
        begin, end = proto.segment.begin, proto.segment.end
    else:
        begin, end = 0, size
    if not 0 <= begin <= end <= size:
        raise EnforceError(
            f"Invalid chunk {begin} {end} with total tensor size {size}", _WHERE, label
        )
    return begin, end


def tensor_to_array(proto: caffe2_pb2.TensorProto) -> np.ndarray:
    """The whole tensor a TensorProto holds, as a new array of its dims and data type.

    A segment, when present, must cover the whole tensor.
    """
    label = proto.name or "<unnamed>"
    dims, size = _dims(proto, label)
    begin, end = _segment(proto, size, label)
    if (begin, end) != (0, size):
        raise EnforceError(
            f"Tensor {label} holds only the chunk [{begin}, {end}) of {size} elements; "
            "load its chunks into a blob with deserialize_blob",
            _WHERE,
            label,
        )
    return _proto_values(proto, size, label).reshape(dims)


def _device_check(proto: caffe2_pb2.TensorProto, label: str) -> None:
    if proto.HasField("device_detail"):
        dev = proto.device_detail.device_type
        if dev not in (caffe2_pb2.CPU, caffe2_pb2.CUDA):  # CUDA tensors load as CPU ones
            raise EnforceError(
                f"No registered deserializer for type Tensor on device type {dev}", _WHERE, label
            )


def tensor_into(proto: caffe2_pb2.TensorProto, blob: Blob, label: str = "") -> None:
    """Load a (possibly partial) TensorProto into blob, as Caffe2's TensorDeserializer.

    The blob's tensor is resized to ``dims``; values go to the segment's element range
    (the whole tensor without a segment). A blob that already holds a tensor of those
    dims and data type keeps it, so the elements written by earlier chunks are kept.
    """
    label = label or proto.name or "<unnamed>"
    _device_check(proto, label)
    dims, size = _dims(proto, label)
    begin, end = _segment(proto, size, label)
    values = _proto_values(proto, end - begin, label)
    dt = values.dtype
    cur = blob.value
    if not (isinstance(cur, np.ndarray) and cur.shape == dims and cur.dtype == dt):
        try:
            cur = np.full(dims, b"", dtype=object) if dt.kind == "O" else np.zeros(dims, dt)
        except (MemoryError, ValueError) as e:
            raise EnforceError(
                f"Cannot allocate tensor {label} of dims {list(dims)}: {e}", _WHERE, label
            ) from e
        blob.value = cur
    if end > begin:
        cur.reshape(-1)[begin:end] = values


# ---- blobs ---------------------------------------------------------------------------------
def blob_proto(name: str, value: object) -> caffe2_pb2.BlobProto:
    """The un-chunked BlobProto of a blob value (``Blob.serialize``)."""
    if isinstance(value, np.ndarray):
        proto = caffe2_pb2.BlobProto()
        proto.name = name
        proto.type = TENSOR_TYPE
        proto.tensor.CopyFrom(tensor_proto(value, name))
        return proto
    if isinstance(value, bytes):
        proto = caffe2_pb2.BlobProto()
        proto.name = name
        proto.type = STRING_TYPE
        proto.content = value
        return proto
    entry = _find_serializer(value)
    if entry is None:
        raise EnforceError(f"No known serializer for {type_name(value)}", _WHERE, name)
    tname, fn = entry
    proto = fn(name, value)
    if not proto.HasField("type"):
        proto.type = tname
    return proto


def serialize_blob(name: str, value: object) -> bytes:
    """One un-chunked BlobProto of the value, serialized (``workspace.SerializeBlob``)."""
    return blob_proto(name, value).SerializeToString()


def blob_chunks(
    name: str, value: object, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[tuple[str, bytes]]:
    """The DB records of a blob: ``(key, BlobProto bytes)``.

    A tensor gives one record per ``chunk_size`` elements (at least one, even when empty),
    keyed ``<name>#%<k>``; any other value gives one record keyed by the plain name.
    """
    if not isinstance(value, np.ndarray):
        yield name, serialize_blob(name, value)
        return
    if chunk_size <= 0:
        raise EnforceError(f"chunk size must be positive, got {chunk_size}", _WHERE, name)
    _check_dtype(value, name)
    size = value.size
    k = 0
    begin = 0
    while True:
        end = min(begin + chunk_size, size)
        proto = caffe2_pb2.BlobProto()
        proto.name = name
        proto.type = TENSOR_TYPE
        proto.tensor.CopyFrom(tensor_proto(value, name, begin, end))
        yield f"{name}{CHUNK_ID_SEPARATOR}{k}", proto.SerializeToString()
        k += 1
        begin = end
        if begin >= size:
            return


def blob_name_of_key(key: str) -> str:
    """The blob name of a DB key: everything before the first ``#%``."""
    i = key.find(CHUNK_ID_SEPARATOR)
    return key if i < 0 else key[:i]


def parse_blob_proto(data: bytes) -> caffe2_pb2.BlobProto:
    """Parse BlobProto bytes, or raise "Cannot parse content into a BlobProto."."""
    proto = caffe2_pb2.BlobProto()
    try:
        proto.ParseFromString(bytes(data))
    except (DecodeError, TypeError, ValueError) as e:
        raise EnforceError("Cannot parse content into a BlobProto.", _WHERE) from e
    return proto


def deserialize_blob_proto(proto: caffe2_pb2.BlobProto, into: Blob) -> None:
    """Load a parsed BlobProto into a blob, dispatching on its ``type``."""
    t = proto.type
    if t == TENSOR_TYPE:
        tensor_into(proto.tensor, into, proto.name)
        return
    fn = _DESERIALIZERS.get(t)
    if fn is None:
        raise EnforceError(f"No registered deserializer for type {t}", _WHERE, proto.name or None)
    fn(proto, into)


def deserialize_blob(data: bytes, into: Blob) -> None:
    """Load serialized BlobProto bytes into a blob (``Blob.deserialize``)."""
    deserialize_blob_proto(parse_blob_proto(data), into)


def _deserialize_string(proto: caffe2_pb2.BlobProto, into: Blob) -> None:
    into.value = bytes(proto.content)


register_deserializer(STRING_TYPE, _deserialize_string)
