"""ReduceSum, ReduceMean (and their gradients), SumReduceLike, ReduceFrontSum, ReduceBackSum."""

from __future__ import annotations

import numpy as np
import pytest
from netdefs import feed, fetch, make_net, make_op, run

from caffe2.runtime import registry
from caffe2.runtime.net import OperatorError


def arange(*shape: int, dtype=np.float32) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


# ---- ReduceSum / ReduceMean -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
def test_reduce_sum_all_axes_keepdims(ws, dtype):
    x = arange(2, 3, 4, dtype=dtype)
    feed(ws, x=x)
    run(ws, make_op("ReduceSum", ["x"], ["y"]))
    y = fetch(ws, "y")
    assert y.shape == (1, 1, 1) and y.dtype == dtype and y.item() == x.sum()
    run(ws, make_op("ReduceSum", ["x"], ["y"], keepdims=0))
    assert fetch(ws, "y").shape == () and fetch(ws, "y").item() == x.sum()
    run(ws, make_op("ReduceSum", ["x"], ["y"], axes=[]))  # an empty list means all axes
    assert fetch(ws, "y").shape == (1, 1, 1)


def test_reduce_sum_axes(ws):
    x = arange(2, 3, 4)
    feed(ws, x=x)
    run(ws, make_op("ReduceSum", ["x"], ["y"], axes=[2, 0]))
    np.testing.assert_array_equal(fetch(ws, "y"), x.sum(axis=(0, 2), keepdims=True))
    run(ws, make_op("ReduceSum", ["x"], ["y"], axes=[-1], keepdims=0))
    np.testing.assert_array_equal(fetch(ws, "y"), x.sum(axis=2))


def test_reduce_mean(ws):
    x = arange(2, 3, 4, dtype=np.float64)
    feed(ws, x=x)
    net = run(ws, make_op("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0))
    np.testing.assert_allclose(fetch(ws, "y"), x.mean(axis=1))
    y = fetch(ws, "y")
    fetch(ws, "x")[...] = 1.0
    net.run()
    assert fetch(ws, "y") is y and (y == 1.0).all()
    feed(ws, x=np.ones((3, 0), np.float32))
    run(ws, make_op("ReduceMean", ["x"], ["y"], axes=[1]))
    assert fetch(ws, "y").shape == (3, 1) and np.isnan(fetch(ws, "y")).all()


def test_reduce_reruns_after_shape_change(ws):
    feed(ws, x=arange(2, 3))
    net = run(ws, make_op("ReduceSum", ["x"], ["y"], axes=[0], keepdims=0))
    np.testing.assert_array_equal(fetch(ws, "y"), [3, 5, 7])
    feed(ws, x=arange(2, 2, 2))
    net.run()
    np.testing.assert_array_equal(fetch(ws, "y"), arange(2, 2, 2).sum(axis=0))


def test_reduce_errors(ws):
    feed(ws, x=arange(2, 3), i=np.ones(3, np.int32), b=np.ones(3, bool))
    with pytest.raises(OperatorError, match="Axes ids must be smaller than the dimensions"):
        run(ws, make_op("ReduceSum", ["x"], ["y"], axes=[2]))
    with pytest.raises(OperatorError, match="Axes ids must be smaller than the dimensions"):
        run(ws, make_op("ReduceSum", ["x"], ["y"], axes=[-3]))
    with pytest.raises(OperatorError, match="axes must not repeat an axis"):
        run(ws, make_op("ReduceSum", ["x"], ["y"], axes=[1, -1]))
    with pytest.raises(OperatorError, match="has type int32"):
        run(ws, make_op("ReduceMean", ["i"], ["y"]))
    with pytest.raises(OperatorError, match="has type bool"):
        run(ws, make_op("ReduceSum", ["b"], ["y"]))
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("m", make_op("ReduceSum", ["x"], ["x"])))


@pytest.mark.parametrize("op_type", ["ReduceSum", "ReduceMean"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_gradients(ws, op_type, keepdims):
    x = arange(2, 3, 4)
    feed(ws, x=x)
    fwd = make_op(op_type, ["x"], ["y"], axes=[0, 2], keepdims=keepdims)
    run(ws, fwd)
    ops, g_in = registry.get_schema(op_type).gradient(fwd, ["y_grad"])
    assert g_in == ["x_grad"]
    (g,) = ops
    assert g.type == op_type + "Gradient" and g.is_gradient_op
    assert list(g.input) == ["y_grad", "x", "y"]
    dy = np.array([1.0, 2.0, 3.0], np.float32).reshape(fetch(ws, "y").shape)
    feed(ws, y_grad=dy)
    run(ws, *ops)
    expect = np.broadcast_to(dy.reshape(1, 3, 1), x.shape)
    if op_type == "ReduceMean":
        expect = expect / 8
    np.testing.assert_allclose(fetch(ws, "x_grad"), expect)
    assert registry.get_schema(op_type).gradient(fwd, [None]) == ([], [None])


def test_reduce_gradient_shape_mismatch(ws):
    feed(ws, x=arange(2, 3), dy=np.ones(4, np.float32))
    with pytest.raises(OperatorError, match="does not match the reduction of x"):
        run(ws, make_op("ReduceSumGradient", ["dy", "x", "x"], ["dx"], axes=[0]))


# ---- SumReduceLike --------------------------------------------------------------------------


def test_sum_reduce_like_suffix_and_same_shape(ws):
    a = arange(2, 3, 4)
    feed(ws, a=a, b=np.zeros((3, 4), np.float32), same=np.zeros((2, 3, 4), np.float32))
    net = run(ws, make_op("SumReduceLike", ["a", "b"], ["c"]))
    np.testing.assert_array_equal(fetch(ws, "c"), a.sum(axis=0))
    c = fetch(ws, "c")
    fetch(ws, "a")[...] = 1
    net.run()
    assert fetch(ws, "c") is c and (c == 2).all()
    run(ws, make_op("SumReduceLike", ["a", "same"], ["c"]))
    np.testing.assert_array_equal(fetch(ws, "c"), fetch(ws, "a"))


def test_sum_reduce_like_axis_and_axis_str(ws):
    a = arange(2, 3, 4, 5, dtype=np.float64)
    feed(ws, a=a, b=np.zeros(3, np.float64), b2=np.zeros((3, 4), np.float64))
    run(ws, make_op("SumReduceLike", ["a", "b"], ["c"], axis=1))
    np.testing.assert_allclose(fetch(ws, "c"), a.sum(axis=(0, 2, 3)))
    run(ws, make_op("SumReduceLike", ["a", "b"], ["c"], axis_str="C"))
    np.testing.assert_allclose(fetch(ws, "c"), a.sum(axis=(0, 2, 3)))
    run(ws, make_op("SumReduceLike", ["a", "b2"], ["c"], axis_str="H", order="NHWC"))
    np.testing.assert_allclose(fetch(ws, "c"), a.sum(axis=(0, 3)))


def test_sum_reduce_like_strips_size_one_dims_and_scalars(ws):
    a = arange(2, 3, 4)
    feed(ws, a=a, b=np.zeros((1, 3, 1), np.float32), s=np.zeros((1, 1), np.float32))
    run(ws, make_op("SumReduceLike", ["a", "b"], ["c"], axis=0))
    c = fetch(ws, "c")
    assert c.shape == (1, 3, 1)
    np.testing.assert_array_equal(c.ravel(), a.sum(axis=(0, 2)))
    run(ws, make_op("SumReduceLike", ["a", "s"], ["c"]))
    assert fetch(ws, "c").shape == (1, 1) and fetch(ws, "c").item() == a.sum()
    feed(ws, s=np.zeros((), np.float32))
    run(ws, make_op("SumReduceLike", ["a", "s"], ["c"]))
    assert fetch(ws, "c").shape == () and fetch(ws, "c").item() == a.sum()


def test_sum_reduce_like_inverts_broadcast_add(ws):
    a = arange(2, 3, 4, 5)
    feed(ws, a=a, b=np.ones((3, 4), np.float32))
    run(
        ws,
        make_op("Add", ["a", "b"], ["s"], broadcast=1, axis=1),
        make_op("Sub", ["s", "a"], ["ones"]),
        make_op("SumReduceLike", ["ones", "b"], ["c"], axis=1),
    )
    np.testing.assert_array_equal(fetch(ws, "c"), np.full((3, 4), 10.0))


def test_sum_reduce_like_errors(ws):
    feed(ws, a=arange(2, 3), b=np.zeros(4, np.float32), big=np.zeros((2, 2, 3), np.float32))
    feed(ws, i=np.ones((2, 3), np.int32), b3=np.zeros(3, np.float32))
    with pytest.raises(OperatorError, match="Broadcast dimension mismatch") as e:
        run(ws, make_op("SumReduceLike", ["a", "b"], ["c"]))
    assert e.value.blob == "b"
    with pytest.raises(OperatorError, match="input1 should have a smaller or equal number"):
        run(ws, make_op("SumReduceLike", ["a", "big"], ["c"]))
    with pytest.raises(OperatorError, match="Broadcast axis should be in the range"):
        run(ws, make_op("SumReduceLike", ["a", "b3"], ["c"], axis=2))
    with pytest.raises(OperatorError, match="has type int32"):
        run(ws, make_op("SumReduceLike", ["i", "b3"], ["c"]))
    with pytest.raises(RuntimeError, match="Args axis and axis_str cannot be used"):
        ws.create_net(make_net("m", make_op("SumReduceLike", ["a", "b"], ["c"], axis=0,
                                            axis_str="N")))  # fmt: skip
    with pytest.raises(RuntimeError, match="Unsupported axis string NC"):
        ws.create_net(make_net("m", make_op("SumReduceLike", ["a", "b"], ["c"], axis_str="NC")))
    with pytest.raises(RuntimeError, match="Unrecognizable axis string X from order string NCHW"):
        ws.create_net(make_net("m", make_op("SumReduceLike", ["a", "b"], ["c"], axis_str="X")))
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("m", make_op("SumReduceLike", ["a", "b"], ["b"])))


# ---- ReduceFrontSum / ReduceBackSum ---------------------------------------------------------


def test_reduce_front_and_back_sum(ws):
    x = arange(2, 3, 4, dtype=np.int32)
    feed(ws, x=x)
    run(ws, make_op("ReduceFrontSum", ["x"], ["y"]))
    np.testing.assert_array_equal(fetch(ws, "y"), x.sum(axis=0))
    assert fetch(ws, "y").dtype == np.int32
    run(ws, make_op("ReduceFrontSum", ["x"], ["y"], num_reduce_dim=2))
    np.testing.assert_array_equal(fetch(ws, "y"), x.sum(axis=(0, 1)))
    run(ws, make_op("ReduceBackSum", ["x"], ["y"]))
    np.testing.assert_array_equal(fetch(ws, "y"), x.sum(axis=2))
    run(ws, make_op("ReduceBackSum", ["x"], ["y"], num_reduce_dim=3))
    assert fetch(ws, "y").shape == () and fetch(ws, "y").item() == x.sum()
    run(ws, make_op("ReduceBackSum", ["x"], ["y"], num_reduce_dim=0))
    np.testing.assert_array_equal(fetch(ws, "y"), x)


def test_reduce_front_back_sum_lengths(ws):
    x = arange(3, 4)
    feed(ws, x=x, lf=np.array([0, 1, 2, 3], np.int32), lb=np.array([4, 1, 0], np.int32))
    net = run(ws, make_op("ReduceFrontSum", ["x", "lf"], ["y"]))
    np.testing.assert_array_equal(fetch(ws, "y"), [0, 1, 2 + 6, 3 + 7 + 11])
    fetch(ws, "lf")[...] = 3  # lengths are re-read on every run
    net.run()
    np.testing.assert_array_equal(fetch(ws, "y"), x.sum(axis=0))
    run(ws, make_op("ReduceBackSum", ["x", "lb"], ["y"]))
    np.testing.assert_array_equal(fetch(ws, "y"), [0 + 1 + 2 + 3, 4, 0])


def test_reduce_front_back_sum_errors(ws):
    feed(ws, x=arange(2, 3), l=np.array([1, 1], np.int32), l3=np.array([1, 9, 1], np.int32))
    with pytest.raises(OperatorError, match=r"support num_reduce_dims in range \[0, N\]"):
        run(ws, make_op("ReduceFrontSum", ["x"], ["y"], num_reduce_dim=3))
    with pytest.raises(RuntimeError, match="num_reduce_dim must be non-negative"):
        ws.create_net(make_net("m", make_op("ReduceBackSum", ["x"], ["y"], num_reduce_dim=-1)))
    with pytest.raises(RuntimeError, match="Given lengths input, the number of reduce dim"):
        ws.create_net(make_net("m", make_op("ReduceBackSum", ["x", "l"], ["y"], num_reduce_dim=2)))
    with pytest.raises(OperatorError, match="lengths has 2 values, expected 3"):
        run(ws, make_op("ReduceFrontSum", ["x", "l"], ["y"]))
    with pytest.raises(OperatorError, match=r"lengths must lie in \[0, 2\]"):
        run(ws, make_op("ReduceFrontSum", ["x", "l3"], ["y"]))
    feed(ws, l=np.array([1, 1], np.int64))
    with pytest.raises(OperatorError, match="lengths must be an int32 tensor"):
        run(ws, make_op("ReduceBackSum", ["x", "l"], ["y"]))
