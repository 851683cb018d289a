"""The generated messages against bytes written independently from spec section 1's table.

The expected bytes are built by the tiny encoder below (varints, tags, fixed32/64), field by
field in field-number order, so a wrong number, type or packed flag in caffe2.proto fails.
"""

from __future__ import annotations

import struct

import pytest

from caffe2.proto import caffe2_pb2, metanet_pb2, predictor_consts_pb2


def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def f_varint(field: int, v: int) -> bytes:
    return key(field, 0) + varint(v)


def f_bytes(field: int, v: bytes) -> bytes:
    return key(field, 2) + varint(len(v)) + v


def f_float(field: int, v: float) -> bytes:
    return key(field, 5) + struct.pack("<f", v)


def f_double(field: int, v: float) -> bytes:
    return key(field, 1) + struct.pack("<d", v)


def packed(field: int, payload: bytes) -> bytes:
    return f_bytes(field, payload)


def test_tensor_proto_every_field():
    t = caffe2_pb2.TensorProto()
    t.dims.extend([2, 3])
    t.data_type = caffe2_pb2.TensorProto.INT64
    t.float_data.extend([1.5, -2.0])
    t.int32_data.extend([7, -1])
    t.byte_data = b"\x01\x02"
    t.string_data.extend([b"ab", b""])
    t.name = "x"
    t.device_detail.device_type = 1
    t.double_data.extend([0.25])
    t.int64_data.extend([300, -5])
    t.segment.begin = 0
    t.segment.end = 6
    want = (
        f_varint(1, 2)
        + f_varint(1, 3)  # dims: unpacked
        + f_varint(2, 10)
        + packed(3, struct.pack("<ff", 1.5, -2.0))
        + packed(4, varint(7) + varint(-1))
        + f_bytes(5, b"\x01\x02")
        + f_bytes(6, b"ab")
        + f_bytes(6, b"")
        + f_bytes(7, b"x")
        + f_bytes(8, f_varint(1, 1))
        + packed(9, struct.pack("<d", 0.25))
        + packed(10, varint(300) + varint(-5))
        + f_bytes(11, f_varint(1, 0) + f_varint(2, 6))
    )
    assert t.SerializeToString() == want
    back = caffe2_pb2.TensorProto.FromString(want)
    assert back == t


def test_data_type_values_and_default():
    dt = caffe2_pb2.TensorProto
    assert [dt.UNDEFINED, dt.FLOAT, dt.INT32, dt.BYTE, dt.STRING, dt.BOOL, dt.UINT8, dt.INT8,
            dt.UINT16, dt.INT16, dt.INT64, dt.FLOAT16, dt.DOUBLE] == [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13]  # fmt: skip
    assert caffe2_pb2.TensorProto().data_type == dt.FLOAT
    assert not caffe2_pb2.TensorProto().HasField("data_type")
    assert caffe2_pb2.TensorShape().data_type == dt.FLOAT


def test_qtensor_and_tensor_protos():
    q = caffe2_pb2.QTensorProto(dims=[4], precision=8, scale=0.5, bias=1.0, is_signed=True)
    q.data.extend([1, 2])
    q.name = "q"
    want = (
        f_varint(1, 4)
        + f_varint(2, 8)
        + f_double(3, 0.5)
        + f_double(4, 1.0)
        + f_varint(5, 1)
        + packed(6, varint(1) + varint(2))
        + f_bytes(7, b"q")
    )
    assert q.SerializeToString() == want
    ts = caffe2_pb2.TensorProtos()
    ts.protos.add(name="a")
    assert ts.SerializeToString() == f_bytes(1, f_bytes(7, b"a"))


def test_qtensor_required_fields():
    from google.protobuf.message import EncodeError

    with pytest.raises(EncodeError):
        caffe2_pb2.QTensorProto(dims=[1]).SerializeToString()


def test_tensor_shape():
    s = caffe2_pb2.TensorShape(dims=[1, 2], data_type=2, unknown_dims=[0], unknown_shape=True)
    s.name = "s"
    want = (
        f_varint(1, 1) + f_varint(1, 2) + f_varint(2, 2) + f_varint(3, 0) + f_varint(4, 1)
        + f_bytes(5, b"s")
    )  # fmt: skip
    assert s.SerializeToString() == want
    shapes = caffe2_pb2.TensorShapes()
    shapes.shapes.add().dims.append(3)
    assert shapes.SerializeToString() == f_bytes(1, f_varint(1, 3))


def test_argument_numbering_and_unpacked_repeats():
    a = caffe2_pb2.Argument(name="a", f=0.5, i=-3, s=b"s")
    a.floats.extend([1.0, 2.0])
    a.ints.extend([4, 5])
    a.strings.extend([b"x"])
    a.n.name = "sub"
    a.nets.add(name="n2")
    want = (
        f_bytes(1, b"a")
        + f_float(2, 0.5)
        + f_varint(3, -3)
        + f_bytes(4, b"s")
        + f_float(5, 1.0)
        + f_float(5, 2.0)  # floats: unpacked
        + f_varint(6, 4)
        + f_varint(6, 5)  # ints: unpacked
        + f_bytes(7, b"x")
        + f_bytes(8, f_bytes(1, b"sub"))
        + f_bytes(9, f_bytes(1, b"n2"))
    )
    assert a.SerializeToString() == want


def test_device_type_and_option():
    assert (caffe2_pb2.CPU, caffe2_pb2.CUDA, caffe2_pb2.MKLDNN, caffe2_pb2.OPENGL) == (0, 1, 2, 3)
    assert caffe2_pb2.COMPILE_TIME_MAX_DEVICE_TYPES == 4
    assert caffe2_pb2.ONLY_FOR_TEST == 20901701
    d = caffe2_pb2.DeviceOption()
    assert d.device_type == 0 and d.numa_node_id == -1
    d = caffe2_pb2.DeviceOption(device_type=1, cuda_gpu_id=2, random_seed=2**32 - 1)
    d.node_name = "n"
    d.numa_node_id = 3
    want = (
        f_varint(1, 1) + f_varint(2, 2) + f_varint(3, 2**32 - 1) + f_bytes(4, b"n")
        + f_varint(5, 3)
    )  # fmt: skip
    assert d.SerializeToString() == want


def test_operator_def():
    op = caffe2_pb2.OperatorDef(input=["x", "y"], output=["z"], name="", type="Add")
    op.arg.add(name="broadcast", i=1)
    op.device_option.device_type = 0
    op.engine = "E"
    op.control_input.append("c")
    op.is_gradient_op = True
    op.debug_info = "d"
    want = (
        f_bytes(1, b"x")
        + f_bytes(1, b"y")
        + f_bytes(2, b"z")
        + f_bytes(3, b"")  # name is present even when empty
        + f_bytes(4, b"Add")
        + f_bytes(5, f_bytes(1, b"broadcast") + f_varint(3, 1))
        + f_bytes(6, f_varint(1, 0))
        + f_bytes(7, b"E")
        + f_bytes(8, b"c")
        + f_varint(9, 1)
        + f_bytes(10, b"d")
    )
    assert op.SerializeToString() == want
    assert caffe2_pb2.OperatorDef().is_gradient_op is False


def test_net_def():
    n = caffe2_pb2.NetDef(name="net", type="dag", num_workers=4)
    n.op.add(type="Relu", input=["a"], output=["b"])
    n.device_option.device_type = 1
    n.arg.add(name="k", i=2)
    n.external_input.append("a")
    n.external_output.append("b")
    want = (
        f_bytes(1, b"net")
        + f_bytes(2, f_bytes(1, b"a") + f_bytes(2, b"b") + f_bytes(4, b"Relu"))
        + f_bytes(3, b"dag")
        + f_varint(4, 4)
        + f_bytes(5, f_varint(1, 1))
        + f_bytes(6, f_bytes(1, b"k") + f_varint(3, 2))
        + f_bytes(7, b"a")
        + f_bytes(8, b"b")
    )
    assert n.SerializeToString() == want
    assert not caffe2_pb2.NetDef().HasField("type")


def test_execution_step_numbering():
    s = caffe2_pb2.ExecutionStep(name="s", num_iter=5, criteria_network="c")
    s.substep.add(name="sub")
    s.network.append("n")
    s.concurrent_substeps = True
    s.report_net = "r"
    s.report_interval = 3
    s.should_stop_blob = "stop"
    s.only_once = True
    s.run_every_ms = 100
    s.create_workspace = True
    s.num_concurrent_instances = 2
    want = (
        f_bytes(1, b"s")
        + f_bytes(2, f_bytes(1, b"sub"))
        + f_bytes(3, b"n")
        + f_varint(4, 5)
        + f_bytes(5, b"c")
        + f_varint(6, 1)
        + f_bytes(7, b"r")
        + f_varint(8, 3)
        + f_bytes(9, b"stop")
        + f_varint(10, 1)
        + f_varint(11, 100)
        + f_varint(12, 1)
        + f_varint(13, 2)
    )
    assert s.SerializeToString() == want


def test_plan_blob_dbreader():
    p = caffe2_pb2.PlanDef(name="p")
    p.network.add(name="n")
    p.execution_step.add(name="s")
    assert p.SerializeToString() == (
        f_bytes(1, b"p") + f_bytes(2, f_bytes(1, b"n")) + f_bytes(3, f_bytes(1, b"s"))
    )
    b = caffe2_pb2.BlobProto(name="b", type="std::string", content=b"hi")
    b.tensor.name = "t"
    b.qtensor.CopyFrom(caffe2_pb2.QTensorProto(precision=1, scale=1.0, bias=0.0, is_signed=False))
    b.content_num_chunks = 2
    b.content_chunk_id = 1
    qt = f_varint(2, 1) + f_double(3, 1.0) + f_double(4, 0.0) + f_varint(5, 0)
    assert b.SerializeToString() == (
        f_bytes(1, b"b") + f_bytes(2, b"std::string") + f_bytes(3, f_bytes(7, b"t"))
        + f_bytes(4, b"hi") + f_bytes(5, qt) + f_varint(6, 2) + f_varint(7, 1)
    )  # fmt: skip
    r = caffe2_pb2.DBReaderProto(name="r", source="/x", db_type="minidb", key="k")
    assert r.SerializeToString() == (
        f_bytes(1, b"r") + f_bytes(2, b"/x") + f_bytes(3, b"minidb") + f_bytes(4, b"k")
    )


def test_metanet_and_predictor_consts():
    m = metanet_pb2.MetaNetDef()
    m.blobs.add(key="k", value=["a", "b"])
    m.nets.add(key="n").value.name = "net"
    m.modelInfo.project = "p"
    m.plans.add(key="pl").value.name = "plan"
    m.applicationSpecificInfo.add(key="x", value="y")
    want = (
        f_bytes(1, f_bytes(1, b"k") + f_bytes(2, b"a") + f_bytes(2, b"b"))
        + f_bytes(2, f_bytes(1, b"n") + f_bytes(2, f_bytes(1, b"net")))
        + f_bytes(3, f_bytes(1, b"p"))
        + f_bytes(4, f_bytes(1, b"pl") + f_bytes(2, f_bytes(1, b"plan")))
        + f_bytes(5, f_bytes(1, b"x") + f_bytes(2, b"y"))
    )
    assert m.SerializeToString() == want
    assert metanet_pb2.ModelInfo().predictorType == "SINGLE_PREDICTOR"
    c = predictor_consts_pb2.PredictorConsts()
    assert c.META_NET_DEF == "!!META_NET_DEF"
    assert c.PREDICTOR_DBREADER == "!!PREDICTOR_DBREADER"
    assert c.TRAIN_PLAN_TYPE == "TRAIN_PLAN_TYPE"
    assert c.DESCRIPTOR.fields_by_name["MULTI_PREDICTOR"].number == 10


MESSAGES = [
    caffe2_pb2.TensorProto(dims=[1], float_data=[1.0], name="t"),
    caffe2_pb2.TensorShape(dims=[3]),
    caffe2_pb2.Argument(name="a", ints=[1, 2]),
    caffe2_pb2.DeviceOption(device_type=1),
    caffe2_pb2.OperatorDef(type="Relu", input=["a"], output=["b"]),
    caffe2_pb2.NetDef(name="n", external_input=["a"]),
    caffe2_pb2.ExecutionStep(name="s", network=["n"], num_iter=3),
    caffe2_pb2.PlanDef(name="p"),
    caffe2_pb2.BlobProto(name="b", type="Tensor"),
    caffe2_pb2.DBReaderProto(source="x"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    data = msg.SerializeToString()
    back = type(msg).FromString(data)
    assert back == msg
    assert back.SerializeToString() == data


def test_malformed_bytes_raise():
    from google.protobuf.message import DecodeError

    with pytest.raises(DecodeError):
        caffe2_pb2.NetDef.FromString(b"\x0a\xff\xff")


def test_descriptor_names_match_caffe2():
    assert caffe2_pb2.DESCRIPTOR.name == "caffe2/proto/caffe2.proto"
    assert caffe2_pb2.DESCRIPTOR.package == "caffe2"
