"""Fill ops (spec 15.1): ConstantFill, GivenTensor*Fill and the random fills."""

from __future__ import annotations

import numpy as np
import pytest
from netdefs import TP, creation_error, fetch, make_net, make_op, run

from caffe2.proto import caffe2_pb2
from caffe2.runtime import registry
from caffe2.runtime.net import OperatorError

# ---- ConstantFill ------------------------------------------------------------------------


def test_constant_fill_defaults_to_float_scalar_zero(ws):
    run(ws, make_op("ConstantFill", [], ["y"]))
    y = fetch(ws, "y")
    assert y.shape == () and y.dtype == np.float32 and y == 0.0


def test_constant_fill_shape_and_value(ws):
    run(ws, make_op("ConstantFill", [], ["y"], shape=[2, 3], value=1.5))
    y = fetch(ws, "y")
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.full((2, 3), 1.5, np.float32))


def test_constant_fill_infers_dtype_from_value_field(ws):
    run(ws, make_op("ConstantFill", [], ["y"], shape=[2], value=7))
    y = fetch(ws, "y")
    assert y.dtype == np.int64 and y.tolist() == [7, 7]
    creation_error(
        ws, make_op("ConstantFill", [], ["y"], value="s"), "Argument 'value' is of unexpected type"
    )


@pytest.mark.parametrize(
    "dtype, value, expected",
    [
        (TP.FLOAT, 2.5, np.float32(2.5)),
        (TP.DOUBLE, 2.5, np.float64(2.5)),
        (TP.BOOL, 1, np.True_),
        (TP.INT8, -3, np.int8(-3)),
        (TP.INT16, 300, np.int16(300)),
        (TP.INT32, -7, np.int32(-7)),
        (TP.INT64, 2**40, np.int64(2**40)),
        (TP.UINT8, 200, np.uint8(200)),
        (TP.UINT16, 60000, np.uint16(60000)),
        (TP.STRING, "abc", b"abc"),
    ],
)
def test_constant_fill_every_supported_dtype(ws, dtype, value, expected):
    run(ws, make_op("ConstantFill", [], ["y"], shape=[3], dtype=dtype, value=value))
    y = fetch(ws, "y")
    assert y.shape == (3,)
    if dtype == TP.STRING:
        assert y.dtype == object and list(y) == [b"abc"] * 3
    else:
        assert y.dtype == np.asarray(expected).dtype
        assert (y == expected).all()


def test_constant_fill_dtype_errors(ws):
    creation_error(
        ws,
        make_op("ConstantFill", [], ["y"], dtype=TP.UNDEFINED),
        "ConstantFill op cannot have undefined 'dtype' argument",
    )
    for bad in (TP.BYTE, TP.FLOAT16, 99):
        creation_error(
            ws,
            make_op("ConstantFill", [], ["y"], dtype=bad),
            f"Unexpected 'dtype' argument value: {bad}",
        )


def test_constant_fill_value_field_is_checked_when_the_op_runs(ws):
    net = ws.create_net(
        make_net("n", make_op("ConstantFill", [], ["y"], value=1.0, dtype=TP.INT64))
    )
    with pytest.raises(OperatorError, match="does not have the right field: expected field i"):
        net.run()
    net = ws.create_net(make_net("m", make_op("ConstantFill", [], ["y"], value=300, dtype=TP.INT8)))
    with pytest.raises(OperatorError, match="cannot be represented correctly"):
        net.run()
    # bool reads `i` without a range check; a missing value is 0.
    run(ws, make_op("ConstantFill", [], ["b"], value=5, dtype=TP.BOOL))
    assert fetch(ws, "b").dtype == np.bool_ and bool(fetch(ws, "b"))
    run(ws, make_op("ConstantFill", [], ["z"], dtype=TP.INT32))
    assert fetch(ws, "z").dtype == np.int32 and fetch(ws, "z") == 0


def test_constant_fill_shape_rules(ws):
    # shape stored in `floats` (e.g. MakeArgument of []) is read as an empty `ints`: scalar.
    op = make_op("ConstantFill", [], ["y"], value=2.0)
    op.arg.add(name="shape", floats=[2.0, 3.0])
    run(ws, op)
    assert fetch(ws, "y").shape == ()
    run(ws, make_op("ConstantFill", [], ["e"], shape=[]))
    assert fetch(ws, "e").shape == ()
    run(ws, make_op("ConstantFill", [], ["z"], shape=[0, 4]))
    assert fetch(ws, "z").shape == (0, 4)


def test_fill_shape_errors(ws):
    ws.create_blob("x").value = np.zeros((2, 2), np.float32)
    creation_error(
        ws,
        make_op("ConstantFill", ["x"], ["y"], shape=[2]),
        "Cannot set the shape argument and pass in an input at the same time",
    )
    creation_error(
        ws,
        make_op("ConstantFill", [], ["y"], extra_shape=[2]),
        "Cannot set extra_shape when there is no input",
    )
    creation_error(
        ws,
        make_op("ConstantFill", [], ["y"], input_as_shape=1),
        "An input must be given if input_as_shape is true",
    )
    creation_error(
        ws,
        make_op("ConstantFill", [], ["y"], shape=3),
        "Fill 'shape' argument was a scalar, list expected",
    )
    creation_error(ws, make_op("ConstantFill", [], ["y"], shape=[2, -1]), "negative dimension")
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("n", make_op("ConstantFill", ["x", "x"], ["y"])))


def test_constant_fill_from_input_dims_and_extra_shape(ws):
    ws.create_blob("x").value = np.zeros((2, 3), np.int32)
    net = run(ws, make_op("ConstantFill", ["x"], ["y"], extra_shape=[4], value=1.0))
    y = fetch(ws, "y")
    assert y.shape == (2, 3, 4) and y.dtype == np.float32 and (y == 1).all()
    # Each run resizes to the input's current dims.
    ws.get_blob("x").value = np.zeros((5,), np.int32)
    assert net.run()
    assert fetch(ws, "y").shape == (5, 4)


def test_constant_fill_input_as_shape(ws):
    ws.create_blob("s").value = np.array([2, 1], np.int64)
    run(ws, make_op("ConstantFill", ["s"], ["y"], input_as_shape=1, extra_shape=[3], value=4))
    y = fetch(ws, "y")
    assert y.shape == (2, 1, 3) and y.dtype == np.int64 and (y == 4).all()
    for bad in (np.array([2, 1], np.int32), np.array([[2]], np.int64)):
        ws.get_blob("s").value = bad
        net = ws.create_net(
            make_net("n", make_op("ConstantFill", ["s"], ["y"], input_as_shape=1)), overwrite=True
        )
        with pytest.raises(OperatorError, match="must be a 1D tensor of data type TIndex") as e:
            net.run()
        assert e.value.blob == "s"
    ws.get_blob("s").value = np.array([2, -1], np.int64)
    with pytest.raises(OperatorError, match="negative value"):
        net.run()


def test_constant_fill_in_place_and_input_must_be_a_tensor(ws):
    ws.create_blob("x").value = np.arange(6, dtype=np.float32).reshape(2, 3)
    run(ws, make_op("ConstantFill", ["x"], ["x"], value=9.0))
    np.testing.assert_array_equal(fetch(ws, "x"), np.full((2, 3), 9.0, np.float32))
    ws.get_blob("x").value = b"str"
    net = ws.create_net(make_net("n", make_op("ConstantFill", ["x"], ["y"])), overwrite=True)
    with pytest.raises(OperatorError, match=r"input 0 \(x\) must be a tensor") as e:
        net.run()
    assert e.value.blob == "x"


# ---- GivenTensor*Fill --------------------------------------------------------------------


def test_given_tensor_fill_float_default(ws):
    run(ws, make_op("GivenTensorFill", [], ["y"], shape=[2, 2], values=[1.0, 2.0, 3.0, 4.0]))
    y = fetch(ws, "y")
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    "dtype, values, np_dtype",
    [
        ("int64", [1, 2], np.int64),
        ("INT32", [1, 2], np.int32),
        (TP.INT32, [1, 2], np.int32),
        ("Double", [1.5, 2.5], np.float64),
        (TP.FLOAT, [1.5, 2.5], np.float32),
        ("bool", [1, 0], np.bool_),
        ("string", ["a", "bc"], object),
    ],
)
def test_given_tensor_fill_dtype_arg(ws, dtype, values, np_dtype):
    run(ws, make_op("GivenTensorFill", [], ["y"], shape=[2], values=values, dtype=dtype))
    y = fetch(ws, "y")
    assert y.dtype == np.dtype(np_dtype)
    expected = [v.encode() for v in values] if np_dtype is object else values
    assert y.tolist() == [np_dtype(v) if np_dtype is not object else v for v in expected]


def test_given_tensor_fill_dtype_errors(ws):
    creation_error(
        ws,
        make_op("GivenTensorFill", [], ["y"], dtype=TP.UNDEFINED),
        "Cannot have undefined 'dtype' argument",
    )
    creation_error(
        ws,
        make_op("GivenTensorFill", [], ["y"], dtype="undefined"),
        "Cannot have undefined 'dtype' argument",
    )
    creation_error(
        ws,
        make_op("GivenTensorFill", [], ["y"], dtype=TP.INT16),
        f"Unexpected 'dtype' argument value: {TP.INT16}",
    )
    creation_error(
        ws, make_op("GivenTensorFill", [], ["y"], dtype="nosuch"), "Unknown 'dtype' argument"
    )
    creation_error(
        ws,
        make_op("GivenTensorFill", [], ["y"], dtype=1.0),
        "does not have the right field: expected field i",
    )


def test_given_tensor_fill_values_must_match_the_shape(ws):
    creation_error(
        ws,
        make_op("GivenTensorFill", [], ["y"], shape=[3], values=[1.0, 2.0]),
        "output size 3 .* does not match the number of values given: 2",
    )
    # No shape: a scalar needs exactly one value.
    creation_error(
        ws, make_op("GivenTensorFill", [], ["y"], values=[1.0, 2.0]), "does not match the number"
    )
    run(ws, make_op("GivenTensorFill", [], ["s"], shape=[], values=[3.0]))
    assert fetch(ws, "s").shape == () and fetch(ws, "s") == 3.0
    # Values stored in the wrong field read as empty: a mismatch, not a silent zero fill.
    creation_error(
        ws,
        make_op("GivenTensorInt64Fill", [], ["y"], shape=[2], values=[1.0, 2.0]),
        "does not match the number of values given: 0",
    )
    # With an input the shape is known only when the op runs.
    ws.create_blob("x").value = np.zeros((3,), np.float32)
    net = ws.create_net(
        make_net("n", make_op("GivenTensorFill", ["x"], ["y"], values=[1.0, 2.0, 3.0]))
    )
    assert net.run()
    np.testing.assert_array_equal(fetch(ws, "y"), [1, 2, 3])
    ws.get_blob("x").value = np.zeros((4,), np.float32)
    with pytest.raises(OperatorError, match="output size 4"):
        net.run()


def test_given_tensor_fill_with_input_and_extra_shape(ws):
    ws.create_blob("x").value = np.zeros((2,), np.float32)
    run(ws, make_op("GivenTensorFill", ["x"], ["y"], extra_shape=[2], values=[1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(fetch(ws, "y"), [[1, 2], [3, 4]])


def test_given_tensor_typed_variants(ws):
    run(
        ws,
        make_op("GivenTensorDoubleFill", [], ["d"], shape=[2], values=[0.5, 1.5]),
        make_op("GivenTensorIntFill", [], ["i"], shape=[2], values=[-1, 2]),
        make_op("GivenTensorInt64Fill", [], ["l"], shape=[1, 2], values=[2**40, 3]),
        make_op("GivenTensorBoolFill", [], ["b"], shape=[3], values=[1, 0, 2]),
        make_op("GivenTensorStringFill", [], ["s"], shape=[2], values=["ab", "c"]),
        # `dtype` is ignored by every variant but GivenTensorFill, even an invalid one.
        make_op("GivenTensorIntFill", [], ["i2"], shape=[1], values=[5], dtype=TP.UNDEFINED),
    )
    d, i, l, b, s = (fetch(ws, n) for n in "dilbs")
    assert d.dtype == np.float64 and d.tolist() == [0.5, 1.5]
    assert i.dtype == np.int32 and i.tolist() == [-1, 2]
    assert l.dtype == np.int64 and l.tolist() == [[2**40, 3]]
    assert b.dtype == np.bool_ and b.tolist() == [True, False, True]
    assert s.dtype == object and s.tolist() == [b"ab", b"c"]
    assert fetch(ws, "i2").dtype == np.int32
    creation_error(
        ws,
        make_op("GivenTensorIntFill", [], ["i"], shape=[1], values=[2**31]),
        "cannot be represented correctly",
    )


def test_given_tensor_fill_output_does_not_alias_values(ws):
    net = run(ws, make_op("GivenTensorFill", [], ["y"], shape=[2], values=[1.0, 2.0]))
    y = fetch(ws, "y")
    y[:] = 0  # a kernel later writing into its own output buffer is allowed ...
    assert net.run()
    np.testing.assert_array_equal(fetch(ws, "y"), [1.0, 2.0])  # ... and refills it
    run(ws, make_op("GivenTensorFill", [], ["z"], shape=[2], values=[1.0, 2.0]))
    assert not np.shares_memory(fetch(ws, "y"), fetch(ws, "z"))


# ---- random fills ------------------------------------------------------------------------


def seeded(op: caffe2_pb2.OperatorDef, seed: int) -> caffe2_pb2.OperatorDef:
    op.device_option.random_seed = seed
    return op


def test_uniform_fill_range_and_seed(ws):
    run(
        ws,
        seeded(make_op("UniformFill", [], ["a"], shape=[1000], min=-2.0, max=3.0), 5),
        seeded(make_op("UniformFill", [], ["b"], shape=[1000], min=-2.0, max=3.0), 5),
        seeded(make_op("UniformFill", [], ["c"], shape=[1000], min=-2.0, max=3.0), 6),
    )
    a, b, c = fetch(ws, "a"), fetch(ws, "b"), fetch(ws, "c")
    assert a.dtype == np.float32 and a.shape == (1000,)
    assert a.min() >= -2.0 and a.max() <= 3.0 and a.std() > 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_fill_seed_from_net_device_option(ws):
    nd = make_net("n", make_op("GaussianFill", [], ["g"], shape=[8]))
    nd.device_option.random_seed = 11
    ws.run_net_once(nd)
    first = fetch(ws, "g").copy()
    ws.run_net_once(nd)
    np.testing.assert_array_equal(first, fetch(ws, "g"))
    # A created net keeps one generator: its second run continues the stream.
    net = ws.create_net(nd)
    net.run()
    np.testing.assert_array_equal(first, fetch(ws, "g"))
    net.run()
    assert not np.array_equal(first, fetch(ws, "g"))


def test_uniform_fill_errors(ws):
    creation_error(
        ws,
        make_op("UniformFill", [], ["y"], min=1.0, max=1.0),
        "Max value should be bigger than min value",
    )
    creation_error(
        ws,
        make_op("UniformFill", [], ["y"], min=0, max=1),
        "does not have the right field: expected field f",
    )
    creation_error(
        ws,
        make_op("UniformIntFill", [], ["y"], min=5, max=1),
        "Max value should be bigger than min value",
    )


def test_uniform_fill_bounds_from_inputs(ws):
    ws.create_blob("x").value = np.zeros((4, 2), np.float32)
    ws.create_blob("lo").value = np.array([1.0], np.float32)
    ws.create_blob("hi").value = np.array(2.0, np.float32)
    net = run(ws, make_op("UniformFill", ["x", "lo", "hi"], ["y"]))
    y = fetch(ws, "y")
    assert y.shape == (4, 2) and y.min() >= 1.0 and y.max() <= 2.0
    # min > max empties the first dimension.
    ws.get_blob("lo").value = np.array([3.0], np.float32)
    assert net.run()
    assert fetch(ws, "y").shape == (0, 2)
    ws.get_blob("lo").value = np.array([1.0, 2.0], np.float32)
    with pytest.raises(OperatorError, match="min blob must be scalar") as e:
        net.run()
    assert e.value.blob == "lo"
    ws.get_blob("lo").value = np.array(1.0, np.float64)
    with pytest.raises(OperatorError, match="min blob must be of type float32"):
        net.run()
    creation_error(
        ws,
        make_op("UniformFill", ["x", "lo", "hi"], ["y"], min=0.5),
        "Cannot set both min arg and min input blob",
    )
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("n", make_op("UniformFill", ["x", "lo"], ["y"])), overwrite=True)


def test_uniform_int_fill_is_inclusive_int32(ws):
    run(ws, make_op("UniformIntFill", [], ["y"], shape=[2000], min=-1, max=1))
    y = fetch(ws, "y")
    assert y.dtype == np.int32 and set(y.tolist()) == {-1, 0, 1}


def test_gaussian_fill_moments_and_errors(ws):
    run(ws, seeded(make_op("GaussianFill", [], ["y"], shape=[20000], mean=3.0, std=0.5), 1))
    y = fetch(ws, "y")
    assert y.dtype == np.float32
    assert abs(y.mean() - 3.0) < 0.05 and abs(y.std() - 0.5) < 0.05
    creation_error(
        ws, make_op("GaussianFill", [], ["y"], std=0.0), "Standard deviation should be nonnegative"
    )


def test_xavier_fill(ws):
    run(ws, make_op("XavierFill", [], ["w"], shape=[4, 3, 2]))
    w = fetch(ws, "w")
    scale = np.sqrt(3.0 / 6)
    assert w.shape == (4, 3, 2) and w.dtype == np.float32
    assert np.abs(w).max() <= scale
    run(ws, make_op("XavierFill", [], ["e"], shape=[0, 3]))
    assert fetch(ws, "e").shape == (0, 3)
    creation_error(ws, make_op("XavierFill", [], ["w"]), "at least one dimension")


def test_random_fill_in_place_and_from_input(ws):
    ws.create_blob("x").value = np.zeros((3, 5), np.float32)
    run(ws, make_op("UniformFill", ["x"], ["x"], min=1.0, max=2.0))
    x = fetch(ws, "x")
    assert x.shape == (3, 5) and x.min() >= 1.0


def test_fills_have_no_gradient():
    for t in ("ConstantFill", "GivenTensorFill", "UniformFill", "GaussianFill", "XavierFill"):
        grad = registry.get_schema(t).gradient
        ops, g_in = grad(make_op(t, ["x"], ["y"]), ["y_grad"])
        assert ops == [] and g_in == [None]
