"""Element-wise arithmetic and logic: types, legacy broadcast (spec 15.2), errors, in-place."""

from __future__ import annotations

import numpy as np
import pytest
from netdefs import create, feed, fetch, make_op, run

from caffe2.runtime.net import OperatorError

NUMERIC = [np.int32, np.int64, np.float32, np.float64]
ARITH = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}


# ---- arithmetic -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("op_type", sorted(ARITH))
def test_arith_types(ws, op_type, dtype):
    a = np.array([[5, -3, 7], [0, 2, -9]], dtype)
    b = np.array([[2, 2, -4], [1, -5, 3]], dtype)
    feed(ws, a=a, b=b)
    run(ws, make_op(op_type, ["a", "b"], ["c"]))
    c = fetch(ws, "c")
    assert c.dtype == dtype
    np.testing.assert_array_equal(c, ARITH[op_type](a, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_div(ws, dtype):
    feed(ws, a=np.array([1, -3, 0.5], dtype), b=np.array([4, 2, 0.25], dtype))
    run(ws, make_op("Div", ["a", "b"], ["c"]))
    np.testing.assert_array_equal(fetch(ws, "c"), np.array([0.25, -1.5, 2.0], dtype))
    assert fetch(ws, "c").dtype == dtype


def test_float_div_by_zero_is_inf(ws):
    feed(ws, a=np.array([1.0, -1.0], np.float32), b=np.zeros(2, np.float32))
    with np.errstate(divide="ignore"):
        run(ws, make_op("Div", ["a", "b"], ["c"]))
    np.testing.assert_array_equal(fetch(ws, "c"), [np.inf, -np.inf])


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_int_div_truncates_toward_zero(ws, dtype):
    a = np.array([7, -7, 7, -7, 6, -6, 0, 1], dtype)
    b = np.array([2, 2, -2, -2, 3, 4, 5, -3], dtype)
    feed(ws, a=a, b=b)
    run(ws, make_op("Div", ["a", "b"], ["c"]))
    np.testing.assert_array_equal(fetch(ws, "c"), [3, -3, -3, 3, 2, -1, 0, 0])
    assert fetch(ws, "c").dtype == dtype


def test_int_div_broadcast_scalar_truncates(ws):
    feed(ws, a=np.array([[-7, 7], [-1, 9]], np.int32), b=np.array([-2], np.int32))
    run(ws, make_op("Div", ["a", "b"], ["c"], broadcast=1))
    np.testing.assert_array_equal(fetch(ws, "c"), [[3, -3], [0, -4]])


def test_int_div_in_place_truncates_toward_zero(ws):
    feed(ws, a=np.array([-7, 7, -7], np.int32), b=np.array([2, -2, -2], np.int32))
    run(ws, make_op("Div", ["a", "b"], ["a"]))
    np.testing.assert_array_equal(fetch(ws, "a"), [-3, -3, 3])


def test_int_div_by_zero_is_an_error(ws):
    feed(ws, a=np.array([1, 2], np.int32), b=np.array([1, 0], np.int32))
    net = create(ws, make_op("Div", ["a", "b"], ["c"]), name="c")
    with pytest.raises(OperatorError, match="integer division by zero") as e:
        net.run()
    assert e.value.op_type == "Div" and "enforce fail" in str(e.value)
    feed(ws, b=np.array([0], np.int64), a=np.array([4, 5], np.int64))
    with pytest.raises(OperatorError, match="integer division by zero"):
        run(ws, make_op("Div", ["a", "b"], ["c"], broadcast=1))


def test_int_div_by_zero_names_the_divisor(ws):
    feed(ws, a=np.array([1, 2], np.int32), b=np.array([1, 0], np.int32))
    with pytest.raises(OperatorError) as e:
        run(ws, make_op("Div", ["a", "b"], ["c"]))
    assert e.value.blob == "b"


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div", "LT", "GE"])
@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.float16, np.int16])
def test_arith_rejects_other_types(ws, op_type, dtype):
    feed(ws, a=np.ones(2, dtype), b=np.ones(2, dtype))
    with pytest.raises(OperatorError, match=r"input 0 \(a\) has type .*; supported types are"):
        run(ws, make_op(op_type, ["a", "b"], ["c"]))


def test_inputs_must_share_a_type(ws):
    feed(ws, a=np.ones(2, np.float32), b=np.ones(2, np.float64))
    with pytest.raises(OperatorError, match="inputs must have the same type: float32 vs float64"):
        run(ws, make_op("Add", ["a", "b"], ["c"]))


def test_non_tensor_input(ws):
    ws.create_blob("a").value = b"text"
    feed(ws, b=np.ones(2, np.float32))
    with pytest.raises(OperatorError, match=r"input 0 \(a\) must be a tensor, but the blob holds"):
        run(ws, make_op("Add", ["a", "b"], ["c"]))
    with pytest.raises(OperatorError, match=r"input 1 \(a\) must be a tensor"):
        run(ws, make_op("Mul", ["b", "a"], ["c"]))


@pytest.mark.parametrize(
    "op", [("Add", ["u", "v"], ["w"]), ("Relu", ["u"], ["u"]), ("Not", ["u"], ["w"])], ids=str
)
def test_uninitialized_inputs_give_a_clear_error(ws, op):
    for name in ("u", "v", "w"):
        ws.create_blob(name)
    with pytest.raises(OperatorError, match="must be a tensor, but the blob holds nullptr"):
        run(ws, make_op(*op))


# ---- comparison and logic -------------------------------------------------------------------


CMP = {"LT": np.less, "LE": np.less_equal, "GT": np.greater, "GE": np.greater_equal}


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("op_type", sorted(CMP))
def test_comparisons(ws, op_type, dtype):
    a = np.array([1, 2, 3, -1], dtype)
    b = np.array([2, 2, 2, -1], dtype)
    feed(ws, a=a, b=b)
    run(ws, make_op(op_type, ["a", "b"], ["c"]))
    c = fetch(ws, "c")
    assert c.dtype == np.bool_
    np.testing.assert_array_equal(c, CMP[op_type](a, b))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_eq_types(ws, dtype):
    a = np.array([1, 0, 1], dtype)
    b = np.array([1, 1, 0 if dtype is not np.bool_ else 1], dtype)
    feed(ws, a=a, b=b)
    run(ws, make_op("EQ", ["a", "b"], ["c"]))
    np.testing.assert_array_equal(fetch(ws, "c"), a == b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eq_rejects_floats(ws, dtype):
    feed(ws, a=np.ones(2, dtype), b=np.ones(2, dtype))
    with pytest.raises(OperatorError, match="supported types are bool, int32, int64"):
        run(ws, make_op("EQ", ["a", "b"], ["c"]))


LOGIC = {"And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}


@pytest.mark.parametrize("op_type", sorted(LOGIC))
def test_logic(ws, op_type):
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    feed(ws, a=a, b=b)
    run(ws, make_op(op_type, ["a", "b"], ["c"]))
    np.testing.assert_array_equal(fetch(ws, "c"), LOGIC[op_type](a, b))
    feed(ws, s=np.array([True]))
    run(ws, make_op(op_type, ["a", "s"], ["c"], broadcast=1))
    np.testing.assert_array_equal(fetch(ws, "c"), LOGIC[op_type](a, True))


@pytest.mark.parametrize("op_type", [*sorted(LOGIC), "Not"])
def test_logic_rejects_non_bool(ws, op_type):
    feed(ws, a=np.ones(2, np.int32), b=np.ones(2, np.int32))
    ins = ["a"] if op_type == "Not" else ["a", "b"]
    with pytest.raises(OperatorError, match="has type int32; supported types are bool"):
        run(ws, make_op(op_type, ins, ["c"]))


def test_not(ws):
    feed(ws, a=np.array([[True, False]]))
    run(ws, make_op("Not", ["a"], ["c"]))
    np.testing.assert_array_equal(fetch(ws, "c"), [[False, True]])


# ---- Relu -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu(ws, dtype):
    x = np.array([[-1.5, 0.0, 2.0], [3.0, -0.0, -7.0]], dtype)
    feed(ws, x=x)
    run(ws, make_op("Relu", ["x"], ["y"]))
    np.testing.assert_array_equal(fetch(ws, "y"), np.maximum(x, 0))
    assert fetch(ws, "y").dtype == dtype
    net = run(ws, make_op("Relu", ["x"], ["x"]))
    np.testing.assert_array_equal(fetch(ws, "x"), np.maximum(x, 0))
    feed(ws, x=np.array([-1.0, 4.0], dtype))  # a new shape for the in-place kernel
    net.run()
    np.testing.assert_array_equal(fetch(ws, "x"), [0.0, 4.0])


def test_relu_rejects_ints(ws):
    feed(ws, x=np.array([-1, 2], np.int32))
    with pytest.raises(OperatorError, match="has type int32"):
        run(ws, make_op("Relu", ["x"], ["y"]))


# ---- Sum ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_sum(ws, dtype):
    xs = {f"x{i}": np.arange(6, dtype=dtype).reshape(2, 3) * (i + 1) for i in range(3)}
    feed(ws, **xs)
    run(ws, make_op("Sum", ["x0"], ["y"]))
    np.testing.assert_array_equal(fetch(ws, "y"), xs["x0"])
    assert fetch(ws, "y") is not fetch(ws, "x0")
    run(ws, make_op("Sum", ["x0", "x1", "x2"], ["y"]))
    np.testing.assert_array_equal(fetch(ws, "y"), xs["x0"] * 6)
    assert fetch(ws, "y").dtype == dtype
    net = run(ws, make_op("Sum", ["x0", "x1"], ["x0"]))  # in place with input 0
    np.testing.assert_array_equal(fetch(ws, "x0"), xs["x0"] * 3)
    net.run()
    np.testing.assert_array_equal(fetch(ws, "x0"), xs["x0"] * 5)


@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_sum_rejects_wide_types(ws, dtype):
    feed(ws, a=np.ones(2, dtype), b=np.ones(2, dtype))
    with pytest.raises(
        OperatorError,
        match="Sum operator only supports 32-bit float and ints, but input was of type",
    ):
        run(ws, make_op("Sum", ["a", "b"], ["c"]))


def test_sum_shape_and_type_mismatch(ws):
    feed(ws, a=np.ones(2, np.float32), b=np.ones(3, np.float32), i=np.ones(2, np.int32))
    with pytest.raises(OperatorError, match=r"Check failed: output->dims\(\) == Input\(1\)"):
        run(ws, make_op("Sum", ["a", "b"], ["c"]))
    with pytest.raises(OperatorError, match=r"input 0 is float32\[2\], input 2 is int32\[2\]"):
        run(ws, make_op("Sum", ["a", "a", "i"], ["c"]))


def test_sum_reruns_after_shape_change(ws):
    feed(ws, a=np.ones(2, np.float32), b=np.ones(2, np.float32))
    net = run(ws, make_op("Sum", ["a", "b"], ["c"]))
    feed(ws, a=np.ones((2, 2), np.float32), b=np.full((2, 2), 2, np.float32))
    net.run()
    np.testing.assert_array_equal(fetch(ws, "c"), np.full((2, 2), 3))


# ---- legacy broadcast -----------------------------------------------------------------------


def test_broadcast_suffix(ws):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    b = np.arange(4, dtype=np.float32)
    feed(ws, a=a, b=b)
    run(ws, make_op("Add", ["a", "b"], ["c"], broadcast=1))
    np.testing.assert_array_equal(fetch(ws, "c"), a + b)
    feed(ws, b=np.arange(12, dtype=np.float32).reshape(3, 4))
    run(ws, make_op("Sub", ["a", "b"], ["c"], broadcast=1))
    np.testing.assert_array_equal(fetch(ws, "c"), a - fetch(ws, "b"))
    run(ws, make_op("Mul", ["a", "a"], ["c"], broadcast=1))  # equal shapes
    np.testing.assert_array_equal(fetch(ws, "c"), a * a)


def test_broadcast_axis(ws):
    a = np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5)
    b = np.arange(3, dtype=np.float32) + 1
    feed(ws, a=a, b=b, b34=np.ones((3, 4), np.float32) * 2)
    run(ws, make_op("Mul", ["a", "b"], ["c"], broadcast=1, axis=1))
    np.testing.assert_array_equal(fetch(ws, "c"), a * b.reshape(1, 3, 1, 1))
    run(ws, make_op("Add", ["a", "b34"], ["c"], broadcast=1, axis=1))
    np.testing.assert_array_equal(fetch(ws, "c"), a + 2)
    feed(ws, b0=np.array([10.0, 20.0], np.float32))
    run(ws, make_op("Add", ["a", "b0"], ["c"], broadcast=1, axis=0))
    np.testing.assert_array_equal(fetch(ws, "c"), a + np.array([10, 20]).reshape(2, 1, 1, 1))
    feed(ws, b5=np.ones(5, np.float32))
    run(ws, make_op("Add", ["a", "b5"], ["c"], broadcast=1, axis=-1))  # explicit -1: suffix
    np.testing.assert_array_equal(fetch(ws, "c"), a + 1)


def test_broadcast_axis_str(ws):
    a = np.arange(120, dtype=np.int32).reshape(2, 3, 4, 5)
    feed(ws, a=a, c3=np.array([1, 2, 3], np.int32), c5=np.arange(5, dtype=np.int32))
    run(ws, make_op("Add", ["a", "c3"], ["c"], broadcast=1, axis_str="C"))
    np.testing.assert_array_equal(fetch(ws, "c"), a + np.array([1, 2, 3]).reshape(1, 3, 1, 1))
    run(ws, make_op("Add", ["a", "c5"], ["c"], broadcast=1, axis_str="C", order="NHWC"))
    np.testing.assert_array_equal(fetch(ws, "c"), a + np.arange(5))
    feed(ws, h4=np.arange(4, dtype=np.int32))
    run(ws, make_op("GT", ["a", "h4"], ["c"], broadcast=1, axis_str="H"))
    np.testing.assert_array_equal(fetch(ws, "c"), a > np.arange(4).reshape(1, 1, 4, 1))


def test_broadcast_strips_leading_and_trailing_size_one_dims(ws):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    b = np.array([1.0, 2.0, 3.0], np.float32)
    feed(ws, a=a, b=b.reshape(1, 3, 1))
    # (1, 3, 1) with A (2, 3, 4): axis -1 means 0, stripped B (3) sits at 0 + 1 leading dim.
    run(ws, make_op("Add", ["a", "b"], ["c"], broadcast=1))
    np.testing.assert_array_equal(fetch(ws, "c"), a + b.reshape(1, 3, 1))
    feed(ws, b=b.reshape(3, 1))  # axis -1 -> 1; trailing 1 stripped: B (3) at axis 1
    run(ws, make_op("Add", ["a", "b"], ["c"], broadcast=1))
    np.testing.assert_array_equal(fetch(ws, "c"), a + b.reshape(1, 3, 1))
    feed(ws, b=b.reshape(1, 3))  # axis -1 -> 1; leading 1 stripped: B (3) at 2 -> mismatch 4
    with pytest.raises(OperatorError, match="Broadcast dimension mismatch"):
        run(ws, make_op("Add", ["a", "b"], ["c"], broadcast=1))
    feed(ws, b=b.reshape(1, 3))
    run(ws, make_op("Add", ["a", "b"], ["c"], broadcast=1, axis=0))
    np.testing.assert_array_equal(fetch(ws, "c"), a + b.reshape(1, 3, 1))


@pytest.mark.parametrize("shape", [(), (1,), (1, 1, 1, 1), (1, 1)])
def test_broadcast_single_element_b_is_a_scalar(ws, shape):
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    feed(ws, a=a, b=np.full(shape, 5, np.int64))
    run(ws, make_op("Sub", ["a", "b"], ["c"], broadcast=1))
    np.testing.assert_array_equal(fetch(ws, "c"), a - 5)
    assert fetch(ws, "c").shape == (2, 3)
    run(ws, make_op("Sub", ["a", "b"], ["a"], broadcast=1))  # in place with A
    np.testing.assert_array_equal(fetch(ws, "a"), a - 5)


def test_broadcast_scalar_a(ws):
    feed(ws, a=np.array(3.0, np.float32), b=np.array([2.0], np.float32))
    run(ws, make_op("Mul", ["a", "b"], ["c"], broadcast=1))
    assert fetch(ws, "c").shape == () and fetch(ws, "c").item() == 6.0


def test_broadcast_run_time_errors(ws):
    a = np.zeros((2, 3), np.float32)
    feed(ws, a=a, big=np.zeros((2, 3, 4), np.float32), b3=np.zeros(3, np.float32))
    feed(ws, b4=np.zeros(4, np.float32), b2=np.zeros((2, 3), np.float64))
    with pytest.raises(OperatorError, match="input1 should have a smaller or equal number of dim"):
        run(ws, make_op("Add", ["a", "big"], ["c"], broadcast=1))
    with pytest.raises(OperatorError, match=r"Broadcast axis should be in the range of\[0, A.nd"):
        run(ws, make_op("Add", ["a", "b3"], ["c"], broadcast=1, axis=2))
    with pytest.raises(OperatorError, match="but axis = -2"):
        run(ws, make_op("Add", ["a", "b3"], ["c"], broadcast=1, axis=-2))
    with pytest.raises(OperatorError, match=r"Broadcast dimension mismatch: A \[2, 3\], B \[4\]"):
        run(ws, make_op("Add", ["a", "b4"], ["c"], broadcast=1))
    with pytest.raises(OperatorError, match="Broadcast dimension mismatch") as e:
        run(ws, make_op("Add", ["a", "b3"], ["c"], broadcast=1, axis=0))
    assert e.value.blob == "b3"
    with pytest.raises(OperatorError, match="inputs must have the same type"):
        run(ws, make_op("Add", ["a", "b2"], ["c"], broadcast=1))
    with pytest.raises(OperatorError, match="Dimension mismatch - did you forget to set broadca"):
        run(ws, make_op("Add", ["a", "b3"], ["c"]))


def test_broadcast_in_place_with_b_is_an_error(ws):
    feed(ws, a=np.zeros((2, 3), np.float32), b=np.zeros(3, np.float32))
    with pytest.raises(OperatorError, match="In-place is allowed only with the first tensor"):
        run(ws, make_op("Add", ["a", "b"], ["b"], broadcast=1))
    feed(ws, s=np.ones(1, np.float32))
    with pytest.raises(OperatorError, match="In-place is allowed only with the first tensor"):
        run(ws, make_op("Mul", ["a", "s"], ["s"], broadcast=1))


def test_broadcast_in_place_with_b_of_equal_shape_is_an_error(ws):
    feed(ws, a=np.zeros((2, 3), np.float32), b=np.zeros((2, 3), np.float32))
    with pytest.raises(OperatorError, match="In-place is allowed only with the first tensor"):
        run(ws, make_op("Add", ["a", "b"], ["b"], broadcast=1))


def test_broadcast_argument_errors_at_creation(ws):
    feed(ws, a=np.zeros(3, np.float32), b=np.zeros(3, np.float32))
    cases = [
        ({"axis": 0}, "Do not specify axis or axis_str if broadcast is not enabled."),
        ({"axis_str": "C"}, "Do not specify axis or axis_str if broadcast is not enabled."),
        ({"broadcast": 1, "axis": 1, "axis_str": "C"}, "Args axis and axis_str cannot be used"),
        ({"broadcast": 1, "axis_str": "CH"}, "Unsupported axis string, only single characters"),
        ({"broadcast": 1, "axis_str": "X"}, "Unrecognizable axis string X from order string NCHW"),
        ({"broadcast": 1, "axis_str": "C", "order": "NHW"}, "Unrecognizable axis string C from"),
        ({"broadcast": 1.0}, "does not have the right field: expected field i"),
    ]
    for args, msg in cases:
        with pytest.raises(RuntimeError, match=msg) as e:
            create(ws, make_op("Add", ["a", "b"], ["c"], **args), name="c")
        assert "op #0 (Add)" in str(e.value)
    create(ws, make_op("Add", ["a", "b"], ["c"], axis=-1), name="c")  # an explicit -1 is accepted


# ---- in-place permissions (schema, checked at net creation) ---------------------------------


INPLACE = {
    "Add": {(0, 0), (1, 0)},
    "Sub": {(0, 0), (1, 0)},
    "Mul": {(0, 0), (1, 0)},
    "Div": {(0, 0)},
    "And": {(0, 0)},
    "Or": {(0, 0)},
    "Xor": {(0, 0)},
    "LT": set(),
    "LE": set(),
    "GT": set(),
    "GE": set(),
    "EQ": set(),
}


@pytest.mark.parametrize("op_type", sorted(INPLACE))
@pytest.mark.parametrize("pair", [(0, 0), (1, 0)])
def test_inplace_permissions(ws, op_type, pair):
    feed(ws, a=np.ones(2, np.float32), b=np.ones(2, np.float32))
    ins = ["a", "b"]
    op = make_op(op_type, ins, [ins[pair[0]]])
    if pair in INPLACE[op_type]:
        assert create(ws, op, name="c") is not None
    else:
        with pytest.raises(RuntimeError, match="did not pass schema checking") as e:
            create(ws, op, name="c")
        assert f"input {pair[0]} ({ins[pair[0]]}) and output 0 may not be in place" in str(e.value)


@pytest.mark.parametrize("op_type", ["Not", "Relu", "Sum"])
def test_unary_inplace_permissions(ws, op_type):
    feed(ws, a=np.ones(2, np.float32), b=np.ones(2, np.float32))
    if op_type == "Not":
        with pytest.raises(RuntimeError, match="did not pass schema checking"):
            create(ws, make_op("Not", ["a"], ["a"]), name="c")
    elif op_type == "Relu":
        assert create(ws, make_op("Relu", ["a"], ["a"]), name="c") is not None
    else:
        assert create(ws, make_op("Sum", ["a", "b"], ["a"]), name="c") is not None
        with pytest.raises(RuntimeError, match="did not pass schema checking"):
            create(ws, make_op("Sum", ["a", "b"], ["b"]), name="c")


def test_schema_counts(ws):
    feed(ws, a=np.ones(2, np.float32))
    for op in (make_op("Add", ["a"], ["c"]), make_op("Not", ["a", "a"], ["c"]),
               make_op("Sum", [], ["c"]), make_op("Add", ["a", "a"], ["c", "d"])):  # fmt: skip
        with pytest.raises(RuntimeError, match="did not pass schema checking"):
            create(ws, op, name="c")


# ---- reruns after shapes change -------------------------------------------------------------


def test_rerun_after_input_shapes_change(ws):
    feed(ws, a=np.ones((2, 3), np.float32), b=np.full(3, 2, np.float32))
    net = run(ws, make_op("Add", ["a", "b"], ["c"], broadcast=1))
    c = fetch(ws, "c")
    np.testing.assert_array_equal(c, np.full((2, 3), 3))
    fetch(ws, "b")[...] = 5  # in-place content change: same buffers, new values
    net.run()
    assert fetch(ws, "c") is c
    np.testing.assert_array_equal(c, np.full((2, 3), 6))
    feed(ws, a=np.ones((4, 2), np.float32), b=np.array([1.0, 2.0], np.float32))
    net.run()
    np.testing.assert_array_equal(fetch(ws, "c"), np.tile([2.0, 3.0], (4, 1)))
    assert c.shape == (2, 3)  # the old output buffer was replaced, not resized
    feed(ws, b=np.array([7.0], np.float32))  # B becomes a scalar
    net.run()
    np.testing.assert_array_equal(fetch(ws, "c"), np.full((4, 2), 8))
    feed(ws, b=np.zeros(3, np.float32))
    with pytest.raises(OperatorError, match="Broadcast dimension mismatch"):
        net.run()
    feed(ws, b=np.zeros(2, np.float32))  # fixed: the next run works again
    net.run()
    np.testing.assert_array_equal(fetch(ws, "c"), np.ones((4, 2)))


def test_rerun_in_place_after_shape_change(ws):
    feed(ws, a=np.ones(3, np.int32), b=np.full(3, 2, np.int32))
    net = run(ws, make_op("Mul", ["a", "b"], ["a"]))
    net.run()
    np.testing.assert_array_equal(fetch(ws, "a"), [4, 4, 4])
    feed(ws, a=np.ones((2, 2), np.int32), b=np.full((2, 2), 3, np.int32))
    net.run()
    np.testing.assert_array_equal(fetch(ws, "a"), np.full((2, 2), 3))
    net = run(ws, make_op("Sub", ["a", "b"], ["b"]))  # in place with B, no broadcast
    np.testing.assert_array_equal(fetch(ws, "b"), np.zeros((2, 2)))


def test_rerun_comparison_after_shape_and_type_change(ws):
    feed(ws, a=np.array([1, 5], np.int32), b=np.array([3, 3], np.int32))
    net = run(ws, make_op("LT", ["a", "b"], ["c"]))
    np.testing.assert_array_equal(fetch(ws, "c"), [True, False])
    feed(ws, a=np.array([[1.0], [9.0]]), b=np.array([[2.0], [2.0]]))
    net.run()
    c = fetch(ws, "c")
    assert c.dtype == np.bool_ and c.shape == (2, 1)
    np.testing.assert_array_equal(c, [[True], [False]])


def test_output_blob_replaced_between_runs(ws):
    feed(ws, a=np.ones(3, np.float32), b=np.ones(3, np.float32))
    net = run(ws, make_op("Add", ["a", "b"], ["c"]))
    ws.get_blob("c").value = np.zeros(5, np.int32)  # someone stores something else in C
    net.run()
    c = fetch(ws, "c")
    assert c.dtype == np.float32 and c.tolist() == [2.0, 2.0, 2.0]
