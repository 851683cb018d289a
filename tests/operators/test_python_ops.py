"""The Python op bridge: token registry, Python / PythonGradient ops (spec 3.5, 15.6)."""

from __future__ import annotations

import importlib.util
import pickle
import threading

import numpy as np
import pytest
from netdefs import feed, make_net, make_op

from caffe2.operators import python_ops
from caffe2.operators.python_ops import (
    PythonFunc,
    clear_python_ops,
    find_python_op,
    get_python_op,
    register_python_gradient_op,
    register_python_op,
    register_python_op_as,
)
from caffe2.proto import caffe2_pb2
from caffe2.runtime import registry
from caffe2.runtime.tensor import TensorCPU


def renamed(func, name: str):
    func.__name__ = name
    return func


# Module-level builders: pickled by reference, as core.Net.Python pickles them.
BUILDER_CALLS: list[tuple] = []
OP_CALLS: list[int] = []


def scale_builder(factor: float, offset: float = 0.0):
    BUILDER_CALLS.append((factor, offset))

    def f(inputs, outputs):
        OP_CALLS.append(1)
        outputs[0].feed(inputs[0].data * factor + offset)

    return f


def failing_builder():
    raise ValueError("no builder today")


def not_callable_builder():
    return 42


def ws_builder():
    def f(inputs, outputs, workspace):
        outputs[0].feed(np.array([workspace.has_blob("x")]))

    return f


def builder_bytes(func, *args, **kwargs) -> bytes:
    return pickle.dumps((func, tuple(args), dict(kwargs)))


@pytest.fixture
def ws(ws):
    feed(ws, x=np.array([1.0, 2.0, 3.0], np.float32))
    feed(ws, y=np.array([10.0, 20.0, 30.0], np.float32))
    return ws


# ---- registry ---------------------------------------------------------------------------------


def test_token_numbering():
    def f(inputs, outputs):
        pass

    renamed(f, "tok_numbering_fn")
    assert register_python_op(f) == "tok_numbering_fn"
    assert register_python_op(f) == "tok_numbering_fn:1"
    assert register_python_op(f, False, "") == "tok_numbering_fn:2"
    assert get_python_op("tok_numbering_fn:1") == PythonFunc(f, False)


def test_name_prefixes_the_function_name():
    def f(inputs, outputs):
        pass

    assert register_python_op(f, True, "tok_named_op") == "tok_named_op:f"
    assert register_python_op(f, False, "tok_named_op") == "tok_named_op:f:1"
    assert get_python_op("tok_named_op:f") == PythonFunc(f, True)


def test_callable_object_without_name_uses_its_type_name():
    class TokAdder:
        def __call__(self, inputs, outputs):
            pass

    token = register_python_op(TokAdder())
    assert token.split(":")[0] == "TokAdder"


def test_register_rejects_non_callables():
    with pytest.raises(RuntimeError, match="needs a callable"):
        register_python_op(None)
    with pytest.raises(RuntimeError, match="needs a callable"):
        register_python_op(3)


def test_gradient_registration():
    def f(inputs, outputs):
        pass

    def g(inputs, outputs):
        pass

    token = register_python_op(renamed(f, "tok_with_grad"), True)
    register_python_gradient_op(token, g)
    assert get_python_op(token + "_gradient") == PythonFunc(g, False)
    with pytest.raises(RuntimeError, match="no Python operator has that token"):
        register_python_gradient_op("tok_never_registered", g)
    with pytest.raises(RuntimeError, match="needs a callable"):
        register_python_gradient_op(token, None)


def test_get_unknown_token():
    with pytest.raises(RuntimeError, match="Python operator for tok_nope is not available"):
        get_python_op("tok_nope")


def test_clear_python_ops():
    saved = dict(python_ops._registry)
    try:
        token = register_python_op(renamed(lambda i, o: None, "tok_to_clear"))
        clear_python_ops()
        with pytest.raises(RuntimeError, match="not available"):
            get_python_op(token)
        assert register_python_op(renamed(lambda i, o: None, "tok_to_clear")) == "tok_to_clear"
    finally:
        with python_ops._registry_lock:
            python_ops._registry.clear()
            python_ops._registry.update(saved)


def test_concurrent_registration_gives_unique_tokens():
    def f(inputs, outputs):
        pass

    renamed(f, "tok_concurrent")
    n_threads, per_thread = 8, 50
    tokens: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(n_threads)

    def worker() -> None:
        start.wait()
        mine = [register_python_op(f) for _ in range(per_thread)]
        with lock:
            tokens.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = {"tok_concurrent"} | {
        f"tok_concurrent:{i}" for i in range(1, n_threads * per_thread)
    }
    assert len(tokens) == n_threads * per_thread
    assert set(tokens) == expected


def test_register_as_uses_the_given_token_and_replaces(ws):
    def first(inputs, outputs):
        outputs[0].feed(inputs[0].data + 1)

    def second(inputs, outputs):
        outputs[0].feed(inputs[0].data * 2)

    token = "driver_chosen:tok_as"
    try:
        assert register_python_op_as(token, first) is None
        assert get_python_op(token) == PythonFunc(first, False)
        assert ws.run_operator_once(make_op("Python", ["x"], ["z"], token=token))
        np.testing.assert_array_equal(ws.get_blob("z").value, [2.0, 3.0, 4.0])
        # Same token again replaces the entry (no ":1" suffix is derived).
        register_python_op_as(token, second, pass_workspace=1)
        assert get_python_op(token) == PythonFunc(second, True)
        register_python_op_as(token, second)
        assert ws.run_operator_once(make_op("Python", ["x"], ["z"], token=token))
        np.testing.assert_array_equal(ws.get_blob("z").value, [2.0, 4.0, 6.0])
        # A later register_python_op of the same base name numbers around it.
        assert register_python_op(renamed(lambda i, o: None, token)) == token + ":1"
    finally:
        with python_ops._registry_lock:
            python_ops._registry.pop(token, None)
            python_ops._registry.pop(token + ":1", None)


def test_register_as_rejects_bad_arguments():
    with pytest.raises(RuntimeError, match="needs a callable"):
        register_python_op_as("tok_as_bad", 42)
    with pytest.raises(RuntimeError, match="non-empty token"):
        register_python_op_as("", lambda i, o: None)
    with pytest.raises(RuntimeError, match="non-empty token"):
        register_python_op_as(None, lambda i, o: None)
    with pytest.raises(RuntimeError, match="not available"):
        get_python_op("tok_as_bad")


def test_concurrent_register_as_keeps_one_entry():
    token = "tok_as_concurrent"
    funcs = [renamed(lambda i, o: None, f"f{k}") for k in range(8)]
    start = threading.Barrier(len(funcs))

    def worker(f) -> None:
        start.wait()
        for _ in range(50):
            register_python_op_as(token, f)

    threads = [threading.Thread(target=worker, args=(f,)) for f in funcs]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert get_python_op(token).func in funcs
        with python_ops._registry_lock:
            assert [k for k in python_ops._registry if k.startswith(token)] == [token]
    finally:
        with python_ops._registry_lock:
            python_ops._registry.pop(token, None)


# ---- running a token op -----------------------------------------------------------------------


def test_token_op_gets_tensor_views(ws):
    seen = {}

    def add(inputs, outputs):
        seen["types"] = {type(t) for t in inputs + outputs}
        seen["fresh_shape"] = outputs[1].shape
        outputs[0].feed(inputs[0].data + inputs[1].data)
        outputs[1].reshape((2,))
        outputs[1].data[...] = 7

    token = register_python_op(add)
    ws.create_blob("s")
    net = ws.create_net(make_net("n", make_op("Python", ["x", "y"], ["s", "fresh"], token=token)))
    assert net.run()
    assert seen["types"] == {TensorCPU}
    assert seen["fresh_shape"] == (0,)  # an empty output blob is a tensor when f runs
    np.testing.assert_array_equal(ws.get_blob("s").value, [11.0, 22.0, 33.0])
    np.testing.assert_array_equal(ws.get_blob("fresh").value, [7.0, 7.0])


def test_in_place_python_op(ws):
    def double_in_place(inputs, outputs):
        assert inputs[0].data is outputs[0].data
        outputs[0].data[...] *= 2

    token = register_python_op(double_in_place)
    op = make_op("Python", ["x"], ["x"], token=token)
    net = ws.create_net(make_net("n", op))
    assert net.run() and net.run()
    np.testing.assert_array_equal(ws.get_blob("x").value, [4.0, 8.0, 12.0])


def test_no_inputs_no_outputs(ws):
    calls = []
    token = register_python_op(renamed(lambda i, o: calls.append((len(i), len(o))), "tok_empty"))
    assert ws.run_operator_once(make_op("Python", [], [], token=token))
    assert calls == [(0, 0)]


def test_token_is_looked_up_when_the_op_runs(ws):
    op = make_op("Python", ["x"], ["z"], token="tok_registered_late:late")
    net = ws.create_net(make_net("late", op))  # construction does not need the function
    with pytest.raises(RuntimeError) as e:
        net.run()
    assert (
        "Python operator for tok_registered_late:late is not available. If you use distributed "
        "training it probably means that python implementation has to be registered in each "
        "of the workers" in str(e.value)
    )
    assert "net 'late', op #0 (Python)" in str(e.value)

    def late(inputs, outputs):
        outputs[0].feed(inputs[0].data * 3)

    assert register_python_op(late, False, "tok_registered_late") == "tok_registered_late:late"
    assert net.run()
    np.testing.assert_array_equal(ws.get_blob("z").value, [3.0, 6.0, 9.0])


def test_exception_in_function(ws):
    def explode(inputs, outputs):
        raise ValueError("boom at run")

    token = register_python_op(explode)
    net = ws.create_net(make_net("n", make_op("Python", ["x"], ["z"], token=token)))
    with pytest.raises(RuntimeError) as e:
        net.run()
    msg = str(e.value)
    assert "Exception encountered running PythonOp function: ValueError: boom at run" in msg
    assert "Traceback" in msg and "in explode" in msg  # the original traceback text
    assert "net 'n', op #0 (Python)" in msg
    assert isinstance(e.value.cause.__cause__, ValueError)
    assert ws.last_failed_op_net_position == 0


def test_input_must_be_a_tensor(ws):
    token = register_python_op(renamed(lambda i, o: None, "tok_noop"))
    ws.create_blob("empty")
    net = ws.create_net(make_net("n", make_op("Python", ["x", "empty"], ["z"], token=token)))
    with pytest.raises(RuntimeError, match=r"input 1 \(empty\) must be a tensor") as e:
        net.run()
    assert e.value.blob == "empty"
    assert ws.get_blob("empty").value is None  # not silently turned into a tensor


def test_needs_token_or_builder(ws):
    with pytest.raises(RuntimeError, match="PythonOp requires either pickled_builder or token arg"):
        ws.create_net(make_net("n", make_op("Python", ["x"], ["z"])))


def test_pass_workspace_token(ws):
    if importlib.util.find_spec("caffe2.runtime.pybind_state") is None:
        pytest.skip("caffe2.runtime.pybind_state (C.Workspace._wrap) is not written yet")
    from caffe2.runtime.pybind_state import Workspace as CWorkspace

    if not hasattr(CWorkspace, "_wrap"):
        pytest.skip("caffe2.runtime.pybind_state.Workspace._wrap is not written yet")
    seen = []

    def with_ws(inputs, outputs, workspace):
        seen.append(workspace)
        outputs[0].feed(np.array([workspace.has_blob("y")]))

    token = register_python_op(with_ws, True)
    assert ws.run_operator_once(make_op("Python", ["x"], ["z"], token=token))
    assert isinstance(seen[0], CWorkspace)
    assert ws.get_blob("z").value.tolist() == [True]
    # The builder case reads pass_workspace from the op's argument.
    op = make_op("Python", ["x"], ["z2"], pickled_builder=builder_bytes(ws_builder))
    op.arg.add(name="pass_workspace", i=1)
    assert ws.run_operator_once(op)
    assert ws.get_blob("z2").value.tolist() == [True]


# ---- builders ---------------------------------------------------------------------------------


def test_builder_is_called_once_per_op_instance(ws):
    BUILDER_CALLS.clear()
    OP_CALLS.clear()
    op = make_op(
        "Python", ["x"], ["z"], pickled_builder=builder_bytes(scale_builder, 2.0, offset=1)
    )
    nets = [ws.create_net(make_net(f"b{i}", op)) for i in range(3)]
    assert BUILDER_CALLS == [(2.0, 1)] * 3  # at instantiation, once per op instance
    for net in nets:
        assert net.run() and net.run()
    assert len(BUILDER_CALLS) == 3 and len(OP_CALLS) == 6
    np.testing.assert_array_equal(ws.get_blob("z").value, [3.0, 5.0, 7.0])


def test_builder_wins_over_token(ws):
    BUILDER_CALLS.clear()
    op = make_op(
        "Python",
        ["x"],
        ["z"],
        token="tok_not_registered_anywhere",
        pickled_builder=builder_bytes(scale_builder, 10.0),
    )
    assert ws.run_operator_once(op)
    np.testing.assert_array_equal(ws.get_blob("z").value, [10.0, 20.0, 30.0])


@pytest.mark.parametrize(
    "payload, detail",
    [
        (builder_bytes(failing_builder), "ValueError: no builder today"),
        (builder_bytes(not_callable_builder), "the builder returned int, not a callable"),
        (b"definitely not a pickle", "UnpicklingError"),
        (pickle.dumps((scale_builder, [2.0], {})), "must be a (callable, args tuple, kwargs"),
    ],
)
def test_builder_errors_at_construction(ws, payload, detail):
    op = make_op("Python", ["x"], ["z"], pickled_builder=payload)
    with pytest.raises(RuntimeError) as e:
        ws.create_net(make_net("bad_builder", op))
    msg = str(e.value)
    assert "Python exception encountered while creating PythonOp: " in msg
    assert detail in msg
    assert "net 'bad_builder', op #0 (Python)" in msg
    assert ws.get_net("bad_builder") is None


# ---- gradient ---------------------------------------------------------------------------------


def test_gradient_maker_all_outputs_and_inputs():
    fwd = make_op("Python", ["a", "b"], ["c", "d"], token="tok_for_grad")
    fwd.device_option.device_type = caffe2_pb2.CPU
    maker = registry.get_schema("Python").gradient
    ops, g_in = maker(fwd, ["c_grad", "d_grad"])
    assert len(ops) == 1
    g = ops[0]
    assert g.type == "PythonGradient" and g.is_gradient_op
    assert list(g.input) == ["a", "b", "c", "d", "c_grad", "d_grad"]
    assert list(g.output) == ["a_grad", "b_grad"]
    assert g_in == ["a_grad", "b_grad"]
    assert list(g.arg) == list(fwd.arg)
    assert g.device_option == fwd.device_option


def test_gradient_maker_restricted_indices():
    fwd = make_op(
        "Python",
        ["a", "b", "e"],
        ["c", "d"],
        token="tok_for_grad",
        grad_output_indices=[1],
        grad_input_indices=[0, 2],
    )
    ops, g_in = registry.get_schema("Python").gradient(fwd, [None, "d_g"])
    assert list(ops[0].input) == ["a", "b", "e", "c", "d", "d_g"]
    assert list(ops[0].output) == ["a_grad", "e_grad"]
    assert g_in == ["a_grad", None, "e_grad"]


def test_gradient_maker_errors():
    maker = registry.get_schema("Python").gradient
    fwd = make_op("Python", ["a"], ["c"], token="t")
    with pytest.raises(RuntimeError, match="Gradient of output c is either sparse or not provided"):
        maker(fwd, [None])
    bad = make_op("Python", ["a"], ["c"], token="t", grad_input_indices=[3])
    with pytest.raises(RuntimeError, match=r"grad_input_indices: 3 is out of range \[0, 1\)"):
        maker(bad, ["c_grad"])
    bad = make_op("Python", ["a"], ["c"], token="t", grad_output_indices=[1])
    with pytest.raises(RuntimeError, match=r"grad_output_indices: 1 is out of range"):
        maker(bad, ["c_grad"])


def test_python_gradient_op_runs_the_gradient_function(ws):
    def square(inputs, outputs):
        outputs[0].feed(inputs[0].data ** 2)

    def square_grad(inputs, outputs):
        x, _y, gy = (t.data for t in inputs)
        outputs[0].feed(2 * x * gy)

    token = register_python_op(square)
    register_python_gradient_op(token, square_grad)
    fwd = make_op("Python", ["x"], ["sq"], token=token)
    (gop,), _ = registry.get_schema("Python").gradient(fwd, ["sq_grad"])
    feed(ws, sq_grad=np.ones(3, np.float32))
    assert ws.run_operator_once(fwd)
    assert ws.run_operator_once(gop)
    np.testing.assert_array_equal(ws.get_blob("x_grad").value, [2.0, 4.0, 6.0])


def test_python_gradient_op_unknown_gradient(ws):
    token = register_python_op(renamed(lambda i, o: None, "tok_no_grad"))
    gop = make_op("PythonGradient", ["x"], ["x_grad"], token=token)
    with pytest.raises(RuntimeError, match=f"Python operator for {token}_gradient is not"):
        ws.run_operator_once(gop)


def test_python_gradient_op_uses_the_grad_builder(ws):
    BUILDER_CALLS.clear()
    op = make_op(
        "PythonGradient",
        ["x"],
        ["x_grad"],
        pickled_builder=builder_bytes(failing_builder),  # not used by the gradient op
        pickled_grad_builder=builder_bytes(scale_builder, -1.0),
    )
    assert ws.run_operator_once(op)
    assert BUILDER_CALLS == [(-1.0, 0.0)]
    np.testing.assert_array_equal(ws.get_blob("x_grad").value, [-1.0, -2.0, -3.0])
    # Without a grad builder or token the gradient op has nothing to call.
    op = make_op(
        "PythonGradient", ["x"], ["x_grad"], pickled_builder=builder_bytes(scale_builder, 1)
    )
    with pytest.raises(RuntimeError, match="PythonOp requires either pickled_builder or token"):
        ws.run_operator_once(op)


def test_find_python_op_returns_none_when_missing():
    def found_me(inputs, outputs):
        pass

    token = register_python_op(found_me, False, "tok_find")
    assert find_python_op(token) == PythonFunc(found_me, False)
    assert find_python_op("tok_find:never_registered") is None
