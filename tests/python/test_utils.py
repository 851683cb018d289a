"""caffe2.python.utils: argument encoding and TensorProto conversion (spec runtime.md 5.5)."""

import numpy as np
import pytest

from caffe2.proto import caffe2_pb2
from caffe2.python import utils

MA = utils.MakeArgument


def fields(arg):
    return [f.name for f, _ in arg.ListFields() if f.name != "name"]


def test_scalars():
    assert MA("a", 1.5).f == 1.5 and fields(MA("a", 1.5)) == ["f"]
    assert MA("a", 7).i == 7 and fields(MA("a", 7)) == ["i"]
    assert MA("a", True).i == 1 and MA("a", False).HasField("i")
    assert MA("a", b"x").s == b"x"
    assert MA("a", "h\u00e9").s == "h\u00e9".encode()


def test_numpy_values():
    a = MA("a", np.array([[1, 2], [3, 4]], dtype=np.float32))
    assert list(a.floats) == [1, 2, 3, 4]
    # any other array is flattened to a list, even a 0-d one (a repeated field)
    assert list(MA("a", np.array(3, dtype=np.int64)).ints) == [3]
    assert list(MA("a", np.array([1.5, 2.5])).floats) == [1.5, 2.5]
    assert list(MA("a", np.array([True, False])).ints) == [1, 0]
    assert list(MA("a", np.array(["x", "y"])).strings) == [b"x", b"y"]
    # numpy scalars become Python scalars
    assert MA("a", np.float32(2.5)).f == 2.5
    assert MA("a", np.int32(4)).i == 4
    assert MA("a", np.bool_(True)).i == 1


def test_iterables():
    assert list(MA("a", [1.0, np.float64(2.0)]).floats) == [1.0, 2.0]
    assert list(MA("a", (1, True, np.int64(3))).ints) == [1, 1, 3]
    assert list(MA("a", ["a", b"b"]).strings) == [b"a", b"b"]
    net = caffe2_pb2.NetDef(name="n")
    assert MA("a", net).n.name == "n"
    assert [n.name for n in MA("a", [net, net]).nets] == ["n", "n"]
    dev = caffe2_pb2.DeviceOption(device_type=1)
    assert MA("a", dev).s == dev.SerializeToString()
    assert list(MA("a", [dev]).strings) == [dev.SerializeToString()]


def test_empty_iterable_has_only_a_name():
    a = MA("a", [])
    assert a.name == "a" and fields(a) == []


def test_mixed_int_and_float_lists():
    # exact type test per element: a mix of int and float matches neither list kind
    with pytest.raises(ValueError, match="Unknown iterable argument type"):
        MA("a", [1, 2.0])


def test_numpy_scalars_of_other_widths_in_lists_are_rejected():
    with pytest.raises(ValueError, match="Unknown iterable argument type"):
        MA("a", [np.int32(1)])
    with pytest.raises(ValueError, match="Unknown iterable argument type"):
        MA("a", [np.float32(1)])


def test_unknown_types():
    with pytest.raises(ValueError, match="Unknown argument type: key=a value=None"):
        MA("a", None)
    with pytest.raises(ValueError, match="Unknown argument type"):
        MA("a", object())


def test_args_to_dict():
    args = [MA("f", 1.5), MA("ints", [1, 2]), MA("s", "x"), MA("empty", [])]
    args.append(caffe2_pb2.Argument())  # no name: skipped
    d = utils.ArgsToDict(args)
    assert d["f"] == 1.5
    assert list(d["ints"]) == [1, 2]
    assert d["s"] == b"x"
    assert d["empty"] is None
    assert len(d) == 4


@pytest.mark.parametrize(
    "dtype,data_type",
    [
        (np.float32, caffe2_pb2.TensorProto.FLOAT),
        (np.float64, caffe2_pb2.TensorProto.DOUBLE),
        (np.int32, caffe2_pb2.TensorProto.INT32),
        (np.int16, caffe2_pb2.TensorProto.INT16),
        (np.uint16, caffe2_pb2.TensorProto.UINT16),
        (np.int8, caffe2_pb2.TensorProto.INT8),
        (np.uint8, caffe2_pb2.TensorProto.UINT8),
    ],
)
def test_tensor_round_trip(dtype, data_type):
    arr = np.arange(6).reshape(2, 3).astype(dtype)
    t = utils.NumpyArrayToCaffe2Tensor(arr, "t")
    assert t.name == "t" and t.data_type == data_type and list(t.dims) == [2, 3]
    back = utils.Caffe2TensorToNumpyArray(t)
    np.testing.assert_array_equal(back, arr)
    assert back.shape == (2, 3)


def test_tensor_conversion_errors():
    with pytest.raises(NotImplementedError):
        utils.NumpyArrayToCaffe2Tensor(np.array([1 + 2j]))
    with pytest.raises(RuntimeError, match="not supported"):
        utils.Caffe2TensorToNumpyArray(
            caffe2_pb2.TensorProto(data_type=caffe2_pb2.TensorProto.STRING)
        )


def test_get_content_from_proto_string():
    net = caffe2_pb2.NetDef(name="n1")
    out = utils.GetContentFromProtoString(
        net.SerializeToString(), {caffe2_pb2.NetDef: lambda x: x.name}
    )
    assert out == "n1"
    assert utils.GetContentFromProto(net, {caffe2_pb2.NetDef: lambda x: x.name}) == "n1"
    assert utils.GetContentFromProto(net, {caffe2_pb2.PlanDef: lambda x: x.name}) is None
