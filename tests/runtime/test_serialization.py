"""Blob serialization: TensorProto/BlobProto round trips, golden bytes, chunks, errors."""

from __future__ import annotations

import numpy as np
import pytest

from caffe2.proto import caffe2_pb2
from caffe2.runtime import serialization as ser
from caffe2.runtime.blob import Blob
from caffe2.runtime.errors import EnforceError

TP = caffe2_pb2.TensorProto

# dtype -> (DataType, the typed field its values go to)
CASES = [
    (np.float32, TP.FLOAT, "float_data"),
    (np.float64, TP.DOUBLE, "double_data"),
    (np.int32, TP.INT32, "int32_data"),
    (np.int64, TP.INT64, "int64_data"),
    (np.int16, TP.INT16, "int32_data"),
    (np.uint16, TP.UINT16, "int32_data"),
    (np.int8, TP.INT8, "int32_data"),
    (np.uint8, TP.UINT8, "int32_data"),
    (np.bool_, TP.BOOL, "int32_data"),
    (np.float16, TP.FLOAT16, "int32_data"),
]


def _sample(dt) -> np.ndarray:
    if dt is np.bool_:
        return np.array([[True, False, True], [False, False, True]])
    info = np.iinfo(dt) if np.issubdtype(dt, np.integer) else None
    if info is not None:
        return np.array([[info.min, 0, 1], [2, info.max - 1, info.max]], dtype=dt)
    return np.array([[-1.5, 0.0, 2.25], [1e-3, 3.0e4, -7.0]], dtype=dt)


def _roundtrip(arr: np.ndarray) -> np.ndarray:
    blob = Blob()
    ser.deserialize_blob(ser.serialize_blob("t", arr), blob)
    return blob.value


@pytest.mark.parametrize("dt,enum,field", CASES)
def test_tensor_round_trip_every_dtype(dt, enum, field):
    arr = _sample(dt)
    data = ser.serialize_blob("t", arr)
    proto = caffe2_pb2.BlobProto()
    proto.ParseFromString(data)
    assert proto.name == "t" and proto.type == "Tensor"
    t = proto.tensor
    assert list(t.dims) == [2, 3]
    assert t.data_type == enum
    assert t.name == "t"
    assert t.HasField("segment") and (t.segment.begin, t.segment.end) == (0, 6)
    assert not t.HasField("device_detail")
    assert len(getattr(t, field)) == 6
    for other in ("float_data", "int32_data", "int64_data", "double_data", "string_data"):
        if other != field:
            assert len(getattr(t, other)) == 0
    back = _roundtrip(arr)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_float16_is_stored_as_uint16_bit_patterns():
    arr = np.array([1.0, -2.0, 65504.0], dtype=np.float16)
    proto = ser.tensor_proto(arr, "h")
    assert list(proto.int32_data) == arr.view(np.uint16).astype(int).tolist()
    # The loader also accepts the "fp16 as bytes" form.
    alt = TP()
    alt.dims.append(3)
    alt.data_type = TP.FLOAT16
    alt.byte_data = arr.astype("<f2").tobytes()
    np.testing.assert_array_equal(ser.tensor_to_array(alt), arr)


def test_string_tensor_round_trip():
    arr = np.array([[b"a", b""], [b"\xff\x00", b"long" * 10]], dtype=object)
    proto = ser.tensor_proto(arr, "s")
    assert proto.data_type == TP.STRING
    assert list(proto.string_data) == [b"a", b"", b"\xff\x00", b"long" * 10]
    back = _roundtrip(arr)
    assert back.dtype == object and back.shape == (2, 2)
    assert back.tolist() == arr.tolist()
    assert all(type(v) is bytes for v in back.ravel())


def test_zero_d_and_empty_tensors():
    back = _roundtrip(np.array(3.5, dtype=np.float32))
    assert back.shape == () and back.dtype == np.float32 and back == 3.5
    empty = np.zeros((0, 4), dtype=np.int64)
    proto = ser.tensor_proto(empty, "e")
    assert list(proto.dims) == [0, 4] and (proto.segment.begin, proto.segment.end) == (0, 0)
    back = _roundtrip(empty)
    assert back.shape == (0, 4) and back.dtype == np.int64


def test_golden_bytes_of_int32_tensor():
    # BlobProto{name="x"(1), type="Tensor"(2), tensor(3)=TensorProto{dims 2 (1, unpacked),
    # data_type INT32=2 (2), int32_data [1, 2] (4, packed), name "x" (7),
    # segment (11) {begin 0, end 2}}}, written by hand from the field table.
    expected = bytes(
        [0x0A, 0x01, ord("x")]
        + [0x12, 0x06, *b"Tensor"]
        + [0x1A, 0x11]
        + [0x08, 0x02]
        + [0x10, 0x02]
        + [0x22, 0x02, 0x01, 0x02]
        + [0x3A, 0x01, ord("x")]
        + [0x5A, 0x04, 0x08, 0x00, 0x10, 0x02]
    )
    assert ser.serialize_blob("x", np.array([1, 2], dtype=np.int32)) == expected
    assert list(ser.blob_chunks("x", np.array([1, 2], dtype=np.int32))) == [("x#%0", expected)]


def test_string_blob():
    data = ser.serialize_blob("s", b"hello\x00")
    proto = caffe2_pb2.BlobProto()
    proto.ParseFromString(data)
    assert (proto.name, proto.type, proto.content) == ("s", "std::string", b"hello\x00")
    assert not proto.HasField("tensor")
    blob = Blob()
    ser.deserialize_blob(data, blob)
    assert blob.value == b"hello\x00"
    assert list(ser.blob_chunks("s", b"abc")) == [("s", ser.serialize_blob("s", b"abc"))]


def test_chunking_and_reassembly_in_any_order():
    arr = np.arange(10, dtype=np.float64).reshape(2, 5)
    chunks = list(ser.blob_chunks("w", arr, chunk_size=4))
    assert [k for k, _ in chunks] == ["w#%0", "w#%1", "w#%2"]
    segments = []
    for _, data in chunks:
        p = caffe2_pb2.BlobProto()
        p.ParseFromString(data)
        assert list(p.tensor.dims) == [2, 5]
        segments.append((p.tensor.segment.begin, p.tensor.segment.end))
        assert len(p.tensor.double_data) == segments[-1][1] - segments[-1][0]
    assert segments == [(0, 4), (4, 8), (8, 10)]
    blob = Blob()
    for _, data in reversed(chunks):
        ser.deserialize_blob(data, blob)
    np.testing.assert_array_equal(blob.value, arr)
    assert ser.blob_name_of_key("w#%2") == "w" and ser.blob_name_of_key("w") == "w"


def test_empty_tensor_gives_one_chunk():
    chunks = list(ser.blob_chunks("e", np.zeros((0,), np.float32), chunk_size=3))
    assert len(chunks) == 1 and chunks[0][0] == "e#%0"


def test_chunk_replaces_blob_of_other_shape_or_type():
    blob = Blob(np.ones((3,), dtype=np.int32))
    ser.deserialize_blob(ser.serialize_blob("x", np.array([[1.5]], np.float32)), blob)
    assert blob.value.dtype == np.float32 and blob.value.shape == (1, 1)


def test_array_to_tensor_and_back():
    arr = np.array([[1, 2, 3]], dtype=np.int16)
    proto = ser.array_to_tensor(arr, "a")
    assert proto.name == "a" and not proto.HasField("segment")
    back = ser.tensor_to_array(proto)
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, arr)
    assert not ser.array_to_tensor(arr).HasField("name")
    strs = ser.tensor_to_array(ser.array_to_tensor(np.array(["ab", "c"])))
    assert strs.tolist() == [b"ab", b"c"]


def test_byte_data_type_loads_as_uint8():
    t = TP()
    t.dims.append(3)
    t.data_type = TP.BYTE
    t.byte_data = b"\x01\x02\xff"
    out = ser.tensor_to_array(t)
    assert out.dtype == np.uint8 and out.tolist() == [1, 2, 255]


def test_errors():
    with pytest.raises(EnforceError, match="Cannot parse content into a BlobProto."):
        ser.deserialize_blob(b"\xff\xff\xff", Blob())
    p = caffe2_pb2.BlobProto(name="q", type="SomeQueue")
    with pytest.raises(EnforceError, match="No registered deserializer for type SomeQueue"):
        ser.deserialize_blob(p.SerializeToString(), Blob())
    with pytest.raises(EnforceError, match=r"No known serializer for nullptr \(uninitialized\)"):
        ser.serialize_blob("u", None)
    with pytest.raises(EnforceError, match="No known serializer for list"):
        ser.serialize_blob("l", [1])
    with pytest.raises(EnforceError, match="complex64"):
        ser.serialize_blob("c", np.zeros(2, np.complex64))
    bad = TP()
    bad.dims.append(3)
    bad.float_data.extend([1.0, 2.0])
    with pytest.raises(EnforceError, match="Incorrect proto field size."):
        ser.tensor_to_array(bad)
    seg = TP()
    seg.dims.append(2)
    seg.segment.begin, seg.segment.end = 1, 5
    with pytest.raises(EnforceError, match="Invalid chunk 1 5 with total tensor size 2"):
        ser.tensor_into(seg, Blob())
    und = TP()  # a scalar UNDEFINED tensor needs one serialized blob in string_data
    und.data_type = TP.UNDEFINED
    with pytest.raises(EnforceError, match="Incorrect proto field size."):
        ser.tensor_to_array(und)
    und.string_data.append(b"\xff\xff")
    with pytest.raises(EnforceError, match="element 0 of tensor <unnamed>.*UNDEFINED"):
        ser.tensor_to_array(und)
    objs = np.array([b"a", 3], dtype=object)
    with pytest.raises(EnforceError, match="element 1 is a int"):
        ser.serialize_blob("o", objs)


class _Thing:
    caffe2_type_name = "Thing"

    def __init__(self, n: int) -> None:
        self.n = n


def test_serializer_registry_for_other_types():
    def save(name, value):
        p = caffe2_pb2.BlobProto(name=name)
        p.content = str(value.n).encode()
        return p

    def load(proto, blob):
        blob.value = _Thing(int(proto.content))

    ser.register_serializer(_Thing, "TestThing", save)
    ser.register_deserializer("TestThing", load)
    data = ser.serialize_blob("t", _Thing(41))
    p = caffe2_pb2.BlobProto()
    p.ParseFromString(data)
    assert p.type == "TestThing"
    blob = Blob()
    ser.deserialize_blob(data, blob)
    assert isinstance(blob.value, _Thing) and blob.value.n == 41
    assert list(ser.blob_chunks("t", _Thing(1)))[0][0] == "t"
