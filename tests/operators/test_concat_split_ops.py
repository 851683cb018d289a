"""Concat and Split kernels, and the gradient makers of Concat, Split and Sum."""

from __future__ import annotations

import numpy as np
import pytest
from netdefs import feed, fetch, grad_of, make_net, make_op, run

from caffe2.proto import caffe2_pb2
from caffe2.runtime.net import OperatorError


def arange(*shape: int, dtype=np.float32) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


# ---- Concat ---------------------------------------------------------------------------------


def test_concat_default_axis_is_channel_of_nchw(ws):
    a, b = arange(2, 3, 2), arange(2, 1, 2) + 100
    feed(ws, a=a, b=b)
    run(ws, make_op("Concat", ["a", "b"], ["y", "info"]))
    np.testing.assert_array_equal(fetch(ws, "y"), np.concatenate([a, b], axis=1))
    info = fetch(ws, "info")
    assert info.dtype == np.int32 and info.tolist() == [3, 1]


def test_concat_axis_order_and_negative_axis(ws):
    a, b = arange(1, 2, 2, 3), arange(1, 2, 2, 1)
    feed(ws, a=a, b=b)
    run(ws, make_op("Concat", ["a", "b"], ["y", "info"], order="NHWC"))
    np.testing.assert_array_equal(fetch(ws, "y"), np.concatenate([a, b], axis=3))
    assert fetch(ws, "info").tolist() == [3, 1]
    run(ws, make_op("Concat", ["a", "b"], ["y", "info"], axis=-1))
    np.testing.assert_array_equal(fetch(ws, "y"), np.concatenate([a, b], axis=3))
    run(ws, make_op("Concat", ["a", "a", "a"], ["y", "info"], axis=0))
    assert fetch(ws, "y").shape == (3, 2, 2, 3) and fetch(ws, "info").tolist() == [1, 1, 1]


def test_concat_add_axis_stacks(ws):
    a, b = arange(2, 3), arange(2, 3) * -1
    feed(ws, a=a, b=b)
    run(ws, make_op("Concat", ["a", "b"], ["y", "info"], axis=1, add_axis=1))
    np.testing.assert_array_equal(fetch(ws, "y"), np.stack([a, b], axis=1))
    assert fetch(ws, "info").tolist() == [1, 1]
    run(ws, make_op("Concat", ["a", "b"], ["y", "info"], axis=2, add_axis=1))
    np.testing.assert_array_equal(fetch(ws, "y"), np.stack([a, b], axis=2))
    # As in Caffe2, add_axis is read only together with an explicit axis.
    run(ws, make_op("Concat", ["a", "b"], ["y", "info"], order="NCHW", add_axis=1))
    assert fetch(ws, "y").shape == (2, 6)


def test_concat_strings_and_ints(ws):
    feed(ws, s=np.array([b"a", b"b"], dtype=object), t=np.array([b"c"], dtype=object))
    run(ws, make_op("Concat", ["s", "t"], ["y", "info"], axis=0))
    assert fetch(ws, "y").tolist() == [b"a", b"b", b"c"]
    feed(ws, i=np.array([[1], [2]], np.int64), j=np.array([[3, 4], [5, 6]], np.int64))
    run(ws, make_op("Concat", ["i", "j"], ["y", "info"]))
    assert fetch(ws, "y").tolist() == [[1, 3, 4], [2, 5, 6]] and fetch(ws, "y").dtype == np.int64


def test_concat_reruns_with_new_shapes_and_reuses_buffers(ws):
    feed(ws, a=arange(2, 2), b=arange(2, 3))
    net = run(ws, make_op("Concat", ["a", "b"], ["y", "info"]))
    y, info = fetch(ws, "y"), fetch(ws, "info")
    fetch(ws, "a")[...] = 7
    net.run()
    assert fetch(ws, "y") is y and fetch(ws, "info") is info
    assert (y[:, :2] == 7).all()
    feed(ws, b=arange(2, 1))
    net.run()
    assert fetch(ws, "y").shape == (2, 3) and fetch(ws, "info").tolist() == [2, 1]
    fetch(ws, "info")[...] = 0  # someone scribbles over split_info: the next run rewrites it
    net.run()
    assert fetch(ws, "info").tolist() == [2, 1]


def test_concat_errors(ws):
    feed(ws, a=arange(2, 3), b=arange(3, 3), c=arange(2, 3, dtype=np.float64), d=arange(6))
    with pytest.raises(OperatorError, match="can only have different dimensions") as e:
        run(ws, make_op("Concat", ["a", "b"], ["y", "info"]))
    assert "input 1 (b) is [3, 3]" in str(e.value) and e.value.blob == "b"
    with pytest.raises(
        OperatorError, match="All inputs must have the same type, expected: float32"
    ):
        run(ws, make_op("Concat", ["a", "c"], ["y", "info"]))
    with pytest.raises(OperatorError, match=r"input 1 \(d\) is \[6\]"):
        run(ws, make_op("Concat", ["a", "d"], ["y", "info"]))
    with pytest.raises(OperatorError, match="can only have different dimensions"):
        run(ws, make_op("Concat", ["a", "b"], ["y", "info"], axis=0, add_axis=1))
    with pytest.raises(OperatorError, match="axis = 2 is out of range"):
        run(ws, make_op("Concat", ["a", "a"], ["y", "info"], axis=2))
    with pytest.raises(RuntimeError, match="You shouldn't specify both the dim to concat"):
        ws.create_net(make_net("m", make_op("Concat", ["a"], ["y", "i"], axis=0, order="NCHW")))
    with pytest.raises(RuntimeError, match="Unsupported storage order: CHW"):
        ws.create_net(make_net("m", make_op("Concat", ["a"], ["y", "i"], order="CHW")))
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("m", make_op("Concat", ["a", "b"], ["y"])))
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("m", make_op("Concat", ["a", "b"], ["a", "i"])))


# ---- Split ----------------------------------------------------------------------------------


def test_split_equal(ws):
    x = arange(2, 6, 2)
    feed(ws, x=x)
    run(ws, make_op("Split", ["x"], ["p", "q", "r"]))
    for name, part in zip("pqr", np.split(x, 3, axis=1), strict=True):
        np.testing.assert_array_equal(fetch(ws, name), part)
    run(ws, make_op("Split", ["x"], ["p", "q"], axis=0))
    np.testing.assert_array_equal(fetch(ws, "q"), x[1:])
    run(ws, make_op("Split", ["x"], ["p", "q"], axis=-1))
    np.testing.assert_array_equal(fetch(ws, "p"), x[..., :1])


def test_split_sizes_from_arg_and_input(ws):
    x = arange(3, 5)
    feed(ws, x=x, s=np.array([1, 4], np.int32))
    run(ws, make_op("Split", ["x"], ["a", "b", "c"], split=[2, 0, 3]))
    np.testing.assert_array_equal(fetch(ws, "a"), x[:, :2])
    assert fetch(ws, "b").shape == (3, 0)
    np.testing.assert_array_equal(fetch(ws, "c"), x[:, 2:])
    net = run(ws, make_op("Split", ["x", "s"], ["a", "b"]))
    np.testing.assert_array_equal(fetch(ws, "b"), x[:, 1:])
    # The split input is re-read on every run, even when rewritten in place.
    fetch(ws, "s")[...] = [3, 2]
    net.run()
    np.testing.assert_array_equal(fetch(ws, "a"), x[:, :3])
    np.testing.assert_array_equal(fetch(ws, "b"), x[:, 3:])


def test_split_add_axis_unstacks(ws):
    x = arange(2, 3, 4)
    feed(ws, x=x)
    run(ws, make_op("Split", ["x"], ["a", "b", "c"], axis=1, add_axis=1))
    for i, name in enumerate("abc"):
        np.testing.assert_array_equal(fetch(ws, name), x[:, i])


def test_split_order_nhwc(ws):
    x = arange(1, 2, 2, 4)
    feed(ws, x=x)
    run(ws, make_op("Split", ["x"], ["a", "b"], order="NHWC"))
    np.testing.assert_array_equal(fetch(ws, "b"), x[..., 2:])


def test_split_indivisible_fails_at_run_time(ws):
    feed(ws, x=arange(2, 5))
    net = ws.create_net(make_net("n", make_op("Split", ["x"], ["a", "b"])))  # creation is fine
    with pytest.raises(OperatorError, match="should be divisible by the output size") as e:
        net.run()
    assert "5 along axis 1 of x [2, 5] into 2 outputs" in str(e.value)
    assert e.value.op_type == "Split" and "enforce fail" in str(e.value)


def test_split_errors(ws):
    feed(ws, x=arange(2, 5), s=np.array([1, 4], np.int32), s64=np.array([1, 4], np.int64))
    with pytest.raises(RuntimeError, match="do not pass in split in the argument"):
        ws.create_net(make_net("m", make_op("Split", ["x", "s"], ["a", "b"], split=[1, 4])))
    with pytest.raises(RuntimeError, match="number of splits specified should be equal"):
        ws.create_net(make_net("m", make_op("Split", ["x"], ["a", "b"], split=[5])))
    with pytest.raises(RuntimeError, match="split sizes must be non-negative"):
        ws.create_net(make_net("m", make_op("Split", ["x"], ["a", "b"], split=[6, -1])))
    with pytest.raises(RuntimeError, match="You shouldn't specify both the dim to split"):
        ws.create_net(make_net("m", make_op("Split", ["x"], ["a"], axis=1, order="NHWC")))
    with pytest.raises(OperatorError, match="Sum of split dimensions do not match: should be 5"):
        run(ws, make_op("Split", ["x"], ["a", "b"], split=[1, 2]))
    with pytest.raises(OperatorError, match="must be an int32 tensor, not int64"):
        run(ws, make_op("Split", ["x", "s64"], ["a", "b"]))
    with pytest.raises(OperatorError, match="has 2 values, but the op has 3 outputs"):
        run(ws, make_op("Split", ["x", "s"], ["a", "b", "c"]))
    feed(ws, s=np.array([6, -1], np.int32))
    with pytest.raises(OperatorError, match="split sizes must be non-negative"):
        run(ws, make_op("Split", ["x", "s"], ["a", "b"]))
    with pytest.raises(OperatorError, match="axis = 2 is out of range"):
        run(ws, make_op("Split", ["x"], ["a"], axis=2))
    with pytest.raises(OperatorError, match="Sum of split dimensions do not match"):
        run(ws, make_op("Split", ["x"], ["a", "b", "c"], axis=0, add_axis=1))
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("m", make_op("Split", ["x"], ["x"])))


def test_split_reruns_after_shape_change(ws):
    feed(ws, x=arange(2, 4))
    net = run(ws, make_op("Split", ["x"], ["a", "b"]))
    a = fetch(ws, "a")
    fetch(ws, "x")[...] = -1
    net.run()
    assert fetch(ws, "a") is a and (a == -1).all()
    feed(ws, x=arange(3, 6))
    net.run()
    np.testing.assert_array_equal(fetch(ws, "b"), arange(3, 6)[:, 3:])


def test_concat_then_split_round_trip(ws):
    a, b = arange(2, 1, 3), arange(2, 4, 3) + 10
    feed(ws, a=a, b=b)
    run(
        ws,
        make_op("Concat", ["a", "b"], ["y", "info"]),
        make_op("Split", ["y", "info"], ["a2", "b2"]),
    )
    np.testing.assert_array_equal(fetch(ws, "a2"), a)
    np.testing.assert_array_equal(fetch(ws, "b2"), b)


# ---- gradients ------------------------------------------------------------------------------


def test_concat_gradient_is_split_of_output_grad():
    fwd = make_op("Concat", ["a", "b"], ["y", "info"], axis=2, add_axis=1)
    fwd.device_option.random_seed = 3
    fwd.engine = "X"
    ops, g_in = grad_of(fwd, ["y_grad", None])
    assert g_in == ["a_grad", "b_grad"]
    assert len(ops) == 1
    g = ops[0]
    assert g.type == "Split" and g.is_gradient_op
    assert list(g.input) == ["y_grad", "info"] and list(g.output) == ["a_grad", "b_grad"]
    assert {a.name: a.i for a in g.arg} == {"axis": 2, "add_axis": 1}
    assert g.device_option.random_seed == 3 and g.engine == "X"
    assert grad_of(fwd, [None, None]) == ([], [None, None])


@pytest.mark.parametrize(
    "args", [{}, {"axis": 0}, {"order": "NHWC"}, {"axis": 1, "add_axis": 1}], ids=str
)
def test_concat_gradient_runs_and_slices(ws, args):
    shapes = {"a": (2, 3, 2, 4), "b": (2, 3, 2, 4), "c": (2, 3, 2, 4)}
    if not args:
        shapes["b"] = (2, 1, 2, 4)
    for k, s in shapes.items():
        feed(ws, **{k: arange(*s) + 100 * ord(k)})
    fwd = make_op("Concat", ["a", "b", "c"], ["y", "info"], **args)
    run(ws, fwd)
    y = fetch(ws, "y")
    feed(ws, y_grad=-y)
    ops, g_in = grad_of(fwd, ["y_grad", None])
    run(ws, *ops)
    for name in "abc":
        np.testing.assert_array_equal(fetch(ws, f"{name}_grad"), -fetch(ws, name))


def test_split_gradient_is_concat():
    fwd = make_op("Split", ["x", "sizes"], ["p", "q"], axis=0)
    ops, g_in = grad_of(fwd, ["p_grad", "q_grad"])
    assert g_in == ["x_grad", None]
    (g,) = ops
    assert g.type == "Concat" and g.is_gradient_op
    assert list(g.input) == ["p_grad", "q_grad"]
    assert list(g.output) == ["x_grad", "_x_grad_dims"]
    assert [(a.name, a.i) for a in g.arg] == [("axis", 0)]
    assert grad_of(fwd, [None, None]) == ([], [None, None])


def test_split_gradient_runs_and_fills_missing_pieces_with_zeros(ws):
    x = arange(2, 6)
    feed(ws, x=x)
    fwd = make_op("Split", ["x"], ["p", "q", "r"], split=[1, 2, 3])
    run(ws, fwd)
    feed(ws, p_grad=np.ones((2, 1), np.float32), r_grad=np.full((2, 3), 2, np.float32))
    ops, g_in = grad_of(fwd, ["p_grad", None, "r_grad"])
    assert [o.type for o in ops] == ["ConstantFill", "Concat"]
    assert all(o.is_gradient_op for o in ops)
    run(ws, *ops)
    expect = np.array([[1, 0, 0, 2, 2, 2]] * 2, np.float32)
    np.testing.assert_array_equal(fetch(ws, g_in[0]), expect)


def test_sum_gradient_passes_output_grad_through():
    fwd = make_op("Sum", ["a", "b", "c"], ["s"])
    assert grad_of(fwd, ["s_grad"]) == ([], ["s_grad", "s_grad", "s_grad"])
    assert grad_of(fwd, [None]) == ([], [None, None, None])


def test_gradient_makers_reject_sparse_output_grads():
    for fwd, g_out in (
        (make_op("Concat", ["a", "b"], ["y", "info"]), [("i", "v"), None]),
        (make_op("Split", ["x"], ["p", "q"]), ["p_grad", ("i", "v")]),
        (make_op("Sum", ["a", "b"], ["s"]), [("i", "v")]),
    ):
        with pytest.raises(RuntimeError, match="is sparse \\(expected dense\\)"):
            grad_of(fwd, g_out)


def test_concat_gradient_through_the_c_surface():
    from caffe2.runtime import pybind_state

    fwd = make_op("Concat", ["a", "b"], ["y", "info"], axis=0)
    ops, g_in = pybind_state.get_gradient_defs(fwd.SerializeToString(), ["y_grad", None])
    assert g_in == ["a_grad", "b_grad"]
    (raw,) = ops
    g = caffe2_pb2.OperatorDef.FromString(raw)
    assert g.type == "Split" and list(g.input) == ["y_grad", "info"] and g.is_gradient_op
    assert pybind_state.get_gradient_defs(
        make_op("Sum", ["a", "b"], ["s"]).SerializeToString(), ["s_grad"]
    ) == ([], ["s_grad", "s_grad"])
