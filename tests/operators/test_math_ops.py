"""MatMul, FC, Softmax, Scale and WeightedSum kernels run in a Workspace."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest
from netdefs import feed, fetch, make_net, make_op, run

from caffe2.runtime.net import OperatorError

RNG = np.random.default_rng(0)


def rand(*shape: int, dtype=np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


# ---- MatMul ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_matmul_transposes(ws, dtype, trans_a, trans_b):
    a, b = rand(3, 4, dtype=dtype), rand(4, 5, dtype=dtype)
    feed(ws, a=a.T if trans_a else a, b=b.T if trans_b else b)
    run(ws, make_op("MatMul", ["a", "b"], ["y"], trans_a=trans_a, trans_b=trans_b))
    y = fetch(ws, "y")
    assert y.dtype == dtype and y.shape == (3, 5)
    np.testing.assert_allclose(y, a @ b, rtol=1e-5)


def test_matmul_flattens_at_axes(ws):
    a, b = rand(2, 3, 4), rand(2, 2, 5)
    feed(ws, a=a, b=b)
    # axis_a=2: A (2, 3, 4) is (6, 4); axis_b=2: B (2, 2, 5) is (4, 5).
    run(ws, make_op("MatMul", ["a", "b"], ["y"], axis_a=2, axis_b=2))
    assert fetch(ws, "y").shape == (6, 5)
    np.testing.assert_allclose(fetch(ws, "y"), a.reshape(6, 4) @ b.reshape(4, 5), rtol=1e-5)
    # The default axis_a=1 on a 3-D A gives (2, 12); a negative axis counts from the end.
    b2 = rand(12, 3)
    feed(ws, b=b2)
    run(ws, make_op("MatMul", ["a", "b"], ["y"]))
    np.testing.assert_allclose(fetch(ws, "y"), a.reshape(2, 12) @ b2, rtol=1e-5)
    run(ws, make_op("MatMul", ["a", "b"], ["y"], axis_a=-2))
    np.testing.assert_allclose(fetch(ws, "y"), a.reshape(2, 12) @ b2, rtol=1e-5)
    feed(ws, b=b2.T.copy())
    run(ws, make_op("MatMul", ["a", "b"], ["y"], axis_b=1, trans_b=1))
    np.testing.assert_allclose(fetch(ws, "y"), a.reshape(2, 12) @ b2, rtol=1e-5)


def test_matmul_third_input_gives_output_shape(ws):
    a, b = rand(2, 6), rand(6, 3)
    feed(ws, a=a, b=b, like=np.zeros((3, 2), np.float32))
    run(ws, make_op("MatMul", ["a", "b", "like"], ["y"]))
    np.testing.assert_allclose(fetch(ws, "y"), (a @ b).reshape(3, 2), rtol=1e-5)
    feed(ws, like=np.zeros(5, np.float32))
    with pytest.raises(OperatorError, match="the shape input like"):
        run(ws, make_op("MatMul", ["a", "b", "like"], ["y"]))


def test_matmul_dimension_mismatch_is_clear(ws):
    feed(ws, a=rand(3, 4), b=rand(5, 2))
    with pytest.raises(OperatorError, match=r"Dimension mismatch: A: 3 4, B: 5 2") as e:
        run(ws, make_op("MatMul", ["a", "b"], ["y"]))
    assert e.value.op_type == "MatMul" and e.value.blob == "b"
    with pytest.raises(OperatorError, match=r"Dimension mismatch: trans\(A\): 4 3, B: 5 2"):
        run(ws, make_op("MatMul", ["a", "b"], ["y"], trans_a=1))


def test_matmul_type_and_axis_errors(ws):
    feed(ws, a=np.ones((2, 2), np.int32), b=np.ones((2, 2), np.int32))
    with pytest.raises(OperatorError, match="input 0 \\(a\\) has type int32; supported types"):
        run(ws, make_op("MatMul", ["a", "b"], ["y"]))
    feed(ws, a=rand(2, 2), b=rand(2, 2, dtype=np.float64))
    with pytest.raises(OperatorError, match="inputs must have the same type"):
        run(ws, make_op("MatMul", ["a", "b"], ["y"]))
    feed(ws, a=rand(4), b=rand(4, 2))
    with pytest.raises(OperatorError, match="axis_a = 1 is out of range .* 1 dimensions"):
        run(ws, make_op("MatMul", ["a", "b"], ["y"]))
    ws.create_blob("empty")
    with pytest.raises(OperatorError, match="input 0 \\(empty\\) must be a tensor"):
        run(ws, make_op("MatMul", ["empty", "b"], ["y"]))


def test_matmul_schema(ws):
    feed(ws, a=rand(2, 2), b=rand(2, 2))
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("n", make_op("MatMul", ["a", "b"], ["a"])))
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("n", make_op("MatMul", ["a"], ["y"])))


def test_matmul_reuses_output_buffer_and_sees_input_updates(ws):
    a, b = rand(4, 4), rand(4, 4)
    feed(ws, a=a, b=b)
    net = run(ws, make_op("MatMul", ["a", "b"], ["y"]))
    y = fetch(ws, "y")
    fetch(ws, "a")[...] = 2 * a  # another kernel writing into a's buffer
    net.run()
    assert fetch(ws, "y") is y
    np.testing.assert_allclose(y, 2 * a @ b, rtol=1e-5)
    # New input shapes: the kernel re-validates and resizes its output.
    feed(ws, a=rand(2, 4))
    net.run()
    assert fetch(ws, "y").shape == (2, 4)
    np.testing.assert_allclose(fetch(ws, "y"), fetch(ws, "a") @ b, rtol=1e-5)
    feed(ws, a=rand(2, 3))
    with pytest.raises(OperatorError, match="Dimension mismatch"):
        net.run()


def test_matmul_non_contiguous_input_is_not_cached_as_a_copy(ws):
    base = rand(2, 3, 4)
    b = rand(12, 2)
    ws.create_blob("a").value = base.transpose(0, 2, 1)  # (2, 4, 3), not C-contiguous
    ws.create_blob("b").value = b
    net = run(ws, make_op("MatMul", ["a", "b"], ["y"]))
    base *= -1.0  # the blob's array changes in place
    net.run()
    expect = base.transpose(0, 2, 1).reshape(2, 12) @ b
    np.testing.assert_allclose(fetch(ws, "y"), expect, rtol=1e-5)


def test_matmul_steady_state_allocates_no_output_sized_memory(ws):
    n = 256
    feed(ws, a=rand(n, n), b=rand(n, n))
    net = run(ws, make_op("MatMul", ["a", "b"], ["y"]))
    tracemalloc.start()
    try:
        net.run()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(5):
            net.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < n * n * 4 // 8  # far less than one output buffer


def test_matmul_nets_in_two_threads(ws):
    nets = []
    for i in range(2):
        feed(ws, **{f"a{i}": rand(64, 64), f"b{i}": rand(64, 64)})
        nets.append(run(ws, make_op("MatMul", [f"a{i}", f"b{i}"], [f"y{i}"]), name=f"n{i}"))
    errors: list[BaseException] = []

    def loop(net) -> None:
        try:
            for _ in range(200):
                net.run()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(net,)) for net in nets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(2):
        expect = fetch(ws, f"a{i}") @ fetch(ws, f"b{i}")
        np.testing.assert_allclose(fetch(ws, f"y{i}"), expect, rtol=1e-5)


# ---- FC -------------------------------------------------------------------------------------


def test_fc(ws):
    x, w, b = rand(5, 3), rand(4, 3), rand(4)
    feed(ws, x=x, w=w, b=b)
    net = run(ws, make_op("FC", ["x", "w", "b"], ["y"]))
    np.testing.assert_allclose(fetch(ws, "y"), x @ w.T + b, rtol=1e-5, atol=1e-6)
    y = fetch(ws, "y")
    net.run()
    assert fetch(ws, "y") is y
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-5, atol=1e-6)


def test_fc_axis_and_axis_w(ws):
    x, w, b = rand(2, 3, 4, 5), rand(6, 4, 5), rand(6)
    feed(ws, x=x, w=w, b=b)
    run(ws, make_op("FC", ["x", "w", "b"], ["y"], axis=2))
    y = fetch(ws, "y")
    assert y.shape == (2, 3, 6)
    expect = x.reshape(6, 20) @ w.reshape(6, 20).T + b
    np.testing.assert_allclose(y.reshape(6, 6), expect, rtol=1e-4, atol=1e-5)
    feed(ws, w=rand(2, 3, 20))
    run(ws, make_op("FC", ["x", "w", "b"], ["y"], axis=2, axis_w=2))
    expect = x.reshape(6, 20) @ fetch(ws, "w").reshape(6, 20).T + b
    np.testing.assert_allclose(fetch(ws, "y").reshape(6, 6), expect, rtol=1e-4, atol=1e-5)


def test_fc_errors(ws):
    feed(ws, x=rand(5, 3), w=rand(4, 2), b=rand(4))
    with pytest.raises(OperatorError, match=r"Dimension mismatch: X: \[5, 3\], W: \[4, 2\]") as e:
        run(ws, make_op("FC", ["x", "w", "b"], ["y"]))
    assert e.value.blob == "w"
    feed(ws, w=rand(4, 3), b=rand(3))
    with pytest.raises(OperatorError, match="Dimension mismatch") as e:
        run(ws, make_op("FC", ["x", "w", "b"], ["y"]))
    assert e.value.blob == "b"
    feed(ws, b=rand(1, 4))
    with pytest.raises(OperatorError, match=r"b must be 1-D, but it has shape \[1, 4\]"):
        run(ws, make_op("FC", ["x", "w", "b"], ["y"]))
    feed(ws, b=rand(4, dtype=np.float64))
    with pytest.raises(OperatorError, match="inputs must have the same type"):
        run(ws, make_op("FC", ["x", "w", "b"], ["y"]))
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("m", make_op("FC", ["x", "w"], ["y"])))


# ---- Softmax --------------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_rows(ws, dtype):
    x = rand(4, 7, dtype=dtype) * 50  # large values: must not overflow
    feed(ws, x=x)
    net = run(ws, make_op("Softmax", ["x"], ["y"]))
    y = fetch(ws, "y")
    assert y.dtype == dtype
    np.testing.assert_allclose(y, _softmax(x.astype(np.float64)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    feed(ws, x=np.zeros((2, 4, 3), dtype))  # rerun with a new shape: axis 1 flattens (2, 12)
    net.run()
    np.testing.assert_allclose(fetch(ws, "y"), np.full((2, 4, 3), 1 / 12), rtol=1e-6)


def test_softmax_axis(ws):
    x = rand(2, 3, 4)
    feed(ws, x=x)
    run(ws, make_op("Softmax", ["x"], ["y"], axis=2))
    np.testing.assert_allclose(
        fetch(ws, "y"), _softmax(x.reshape(6, 4)).reshape(2, 3, 4), rtol=1e-5
    )
    run(ws, make_op("Softmax", ["x"], ["y"], axis=0))
    np.testing.assert_allclose(
        fetch(ws, "y"), _softmax(x.reshape(1, 24)).reshape(x.shape), rtol=1e-5
    )


def test_softmax_empty_and_errors(ws):
    feed(ws, x=np.zeros((0, 3), np.float32))
    run(ws, make_op("Softmax", ["x"], ["y"]))
    assert fetch(ws, "y").shape == (0, 3)
    feed(ws, x=np.zeros(3, np.int32))
    with pytest.raises(OperatorError, match="has type int32"):
        run(ws, make_op("Softmax", ["x"], ["y"]))
    feed(ws, x=np.zeros(3, np.float32))
    with pytest.raises(OperatorError, match="axis = 1 is out of range"):
        run(ws, make_op("Softmax", ["x"], ["y"]))
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("m", make_op("Softmax", ["x"], ["x"])))


# ---- Scale ----------------------------------------------------------------------------------


def test_scale(ws):
    x = rand(3, 2)
    feed(ws, x=x)
    run(ws, make_op("Scale", ["x"], ["y"], scale=2.5))
    y = fetch(ws, "y")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x * 2.5, rtol=1e-6)
    run(ws, make_op("Scale", ["x"], ["y"]))  # default scale 1
    np.testing.assert_array_equal(fetch(ws, "y"), x)


def test_scale_in_place_and_float64(ws):
    x = rand(5, dtype=np.float64)
    feed(ws, x=x)
    net = run(ws, make_op("Scale", ["x"], ["x"], scale=-2.0))
    np.testing.assert_allclose(fetch(ws, "x"), -2 * x)
    net.run()
    np.testing.assert_allclose(fetch(ws, "x"), 4 * x)
    assert fetch(ws, "x").dtype == np.float64


def test_scale_errors(ws):
    feed(ws, x=np.arange(3, dtype=np.int32))
    with pytest.raises(OperatorError, match="has type int32"):
        run(ws, make_op("Scale", ["x"], ["y"], scale=2.0))
    with pytest.raises(RuntimeError, match="does not have the right field: expected field f"):
        ws.create_net(make_net("m", make_op("Scale", ["x"], ["y"], scale=2)))
    ws.create_blob("u")
    with pytest.raises(OperatorError, match="must be a tensor, but the blob holds nullptr"):
        run(ws, make_op("Scale", ["u"], ["u"]))


# ---- WeightedSum ----------------------------------------------------------------------------


def test_weighted_sum(ws):
    x0, x1, x2 = rand(2, 3), rand(2, 3), rand(2, 3)
    feed(ws, x0=x0, x1=x1, x2=x2, w0=np.float32([2.0]), w1=np.float32([-1.0]),
         w2=np.float32(0.5))  # fmt: skip
    run(ws, make_op("WeightedSum", ["x0", "w0"], ["y"]))
    np.testing.assert_allclose(fetch(ws, "y"), 2 * x0, rtol=1e-6)
    net = run(ws, make_op("WeightedSum", ["x0", "w0", "x1", "w1", "x2", "w2"], ["y"]))
    np.testing.assert_allclose(fetch(ws, "y"), 2 * x0 - x1 + 0.5 * x2, rtol=1e-5, atol=1e-6)
    # Weights are read on every run, both when rewritten in place and when replaced.
    fetch(ws, "w1")[...] = 3.0
    feed(ws, w2=np.float32([0.0]))
    net.run()
    np.testing.assert_allclose(fetch(ws, "y"), 2 * x0 + 3 * x1, rtol=1e-5, atol=1e-6)


def test_weighted_sum_in_place_and_same_size_shapes(ws):
    x0, x1 = rand(2, 3, dtype=np.float64), rand(6, dtype=np.float64)
    feed(ws, x0=x0, x1=x1, w0=np.float64([0.5]), w1=np.float32([1.0]))
    net = run(ws, make_op("WeightedSum", ["x0", "w0", "x1", "w1"], ["x0"]))
    np.testing.assert_allclose(fetch(ws, "x0"), 0.5 * x0 + x1.reshape(2, 3))
    net.run()
    np.testing.assert_allclose(fetch(ws, "x0"), 0.25 * x0 + 1.5 * x1.reshape(2, 3))
    assert fetch(ws, "x0").shape == (2, 3)


def test_weighted_sum_errors(ws):
    feed(ws, x0=rand(2, 3), x1=rand(5), w=np.float32([1.0]), w2=np.float32([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="did not pass schema checking") as e:
        ws.create_net(make_net("m", make_op("WeightedSum", ["x0", "w", "x1"], ["y"])))
    assert "even number of inputs" in str(e.value)
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("m", make_op("WeightedSum", ["x0", "w", "x1", "w"], ["x1"])))
    with pytest.raises(OperatorError, match=r"input 2 \(x1\) has 5 elements") as e:
        run(ws, make_op("WeightedSum", ["x0", "w", "x1", "w"], ["y"]))
    assert e.value.blob == "x1"
    with pytest.raises(OperatorError, match=r"weight input 1 \(w2\) must have exactly one"):
        run(ws, make_op("WeightedSum", ["x0", "w2"], ["y"]))
    feed(ws, x1=rand(2, 3, dtype=np.float64))
    with pytest.raises(OperatorError, match="inputs must have the same type"):
        run(ws, make_op("WeightedSum", ["x0", "w", "x1", "w"], ["y"]))
    feed(ws, wi=np.int32([1]))
    with pytest.raises(OperatorError, match=r"input 1 \(wi\) has type int32"):
        run(ws, make_op("WeightedSum", ["x0", "wi"], ["y"]))
