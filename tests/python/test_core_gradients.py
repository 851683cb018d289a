"""caffe2.python.core: AddGradientOperators, GradientRegistry, ClonePartial (spec 5.6, 5.7)."""

import numpy as np
import pytest

from caffe2.proto import caffe2_pb2
from caffe2.python import core, workspace
from caffe2.python.core import BlobReference, GradientRegistry, GradientSlice, Net


@pytest.fixture(autouse=True)
def _fresh_workspace():
    workspace.ResetWorkspace()
    yield
    workspace.ResetWorkspace()


@pytest.fixture
def py_grads(monkeypatch):
    """Register Python-side gradient makers for the duration of a test."""
    registry = dict(GradientRegistry.gradient_registry_)
    monkeypatch.setattr(GradientRegistry, "gradient_registry_", registry)
    return GradientRegistry.RegisterGradient


def _op(op_type, inputs, outputs):
    return core.CreateOperator(
        op_type, [BlobReference(i) for i in inputs], [BlobReference(o) for o in outputs]
    )


def test_single_op_gradient_and_autogen():
    net = Net("tg_single")
    net.AddExternalInput("x")
    y = net.Copy("x", "y")
    grads = net.AddGradientOperators([y])
    ops = net.Proto().op
    assert [o.type for o in ops] == ["Copy", "ConstantFill", "Copy"]
    fill = ops[1]
    assert list(fill.input) == ["y"] and list(fill.output) == ["y_autogen_grad"]
    assert {a.name: a for a in fill.arg}["value"].f == 1.0
    assert not fill.is_gradient_op
    assert ops[2].is_gradient_op
    assert list(ops[2].input) == ["y_autogen_grad"] and list(ops[2].output) == ["x_grad"]
    assert grads == {"x": "x_grad", "y": "y_autogen_grad"}
    assert all(isinstance(k, BlobReference) for k in grads)
    workspace.FeedBlob("x", np.array([1.0, 2.0], dtype=np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("x_grad"), [1.0, 1.0])


def test_given_gradient_in_a_dict():
    net = Net("tg_dict")
    net.AddExternalInput("x", "dy")
    y = net.Copy("x", "y")
    grads = net.AddGradientOperators({y: "dy"})
    assert [o.type for o in net.Proto().op] == ["Copy", "Copy"]
    assert grads["x"] == "x_grad" and grads["y"] == "dy"
    with pytest.raises(TypeError, match="ys should either be a list or a dict"):
        net.AddGradientOperators(y)


def test_skip_ignores_earlier_ops():
    net = Net("tg_skip")
    net.AddExternalInput("x")
    net.Copy("x", "a")
    b = net.Copy("a", "b")
    grads = net.AddGradientOperators([b], skip=1)
    assert "a" in grads and "x" not in grads


def test_multiple_uses_are_summed_with_autosplit_names():
    net = Net("tg_split")
    net.AddExternalInput("x")
    y1 = net.Copy("x", "y1")
    y2 = net.Copy("x", "y2")
    z = net.Sum([y1, y2], "z")
    grads = net.AddGradientOperators([z])
    ops = net.Proto().op[3:]
    assert [o.type for o in ops] == ["ConstantFill", "Copy", "Copy", "Sum"]
    # the gradient op met first in the backward walk (y2's) keeps its name
    assert list(ops[1].output) == ["x_grad"]
    assert list(ops[2].output) == ["_x_grad_autosplit_0"]
    assert list(ops[3].input) == ["x_grad", "_x_grad_autosplit_0"]
    assert list(ops[3].output) == ["x_grad"]
    assert grads["x"] == "x_grad"
    assert grads["y1"] == "z_autogen_grad" and grads["y2"] == "z_autogen_grad"
    workspace.FeedBlob("x", np.array([1.0, 5.0], dtype=np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("x_grad"), [2.0, 2.0])


def test_pass_through_gradients_are_summed():
    net = Net("tg_pass")
    net.AddExternalInput("x")
    a = net.Sum(["x"], "a")
    b = net.Sum(["x"], "b")
    net.AddGradientOperators({a: "da", b: "db"})
    sum_op = net.Proto().op[-1]
    assert sum_op.type == "Sum"
    assert sorted(sum_op.input) == ["da", "db"] and list(sum_op.output) == ["x_grad"]


def test_in_place_ops():
    net = Net("tg_inplace")
    net.AddExternalInput("x")
    net.Copy("x", "y")
    net.Sum(["y"], "y")
    grads = net.AddGradientOperators([BlobReference("y")])
    assert grads["x"] == "x_grad"
    assert grads["y"] == "y_autogen_grad"
    workspace.FeedBlob("x", np.array([3.0], dtype=np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("x_grad"), [1.0])


def test_missing_gradient_maker():
    net = Net("tg_missing")
    net.AddExternalInput("x")
    y = net.Relu("x", "y") if core.GradientRegistry.gradient_registry_.get("Relu") is None else None
    if y is None:
        pytest.skip("Relu has a Python gradient registered")
    from caffe2.runtime import registry

    if registry.get_schema("Relu").gradient is not None:
        pytest.skip("Relu has a gradient in the registry")
    with pytest.raises(RuntimeError, match="Gradient maker for operator Relu not implemented"):
        net.AddGradientOperators([y])


def test_python_registry_is_used_when_the_runtime_has_none(py_grads):
    @py_grads("TgFake")
    def fake_grad(op, g_output):
        return [_op("TgFakeGradient", [g_output[0]], [op.input[0] + "_g"])], [op.input[0] + "_g"]

    ops = [_op("TgFake", ["x"], ["y"])]
    grad_ops, grads = GradientRegistry.GetBackwardPass(ops, ["y"])
    assert [o.type for o in grad_ops] == ["ConstantFill", "TgFakeGradient"]
    assert grad_ops[1].is_gradient_op
    assert grads["x"] == "x_g"


def test_runtime_registry_takes_precedence(py_grads):
    called = []

    @py_grads("Copy")
    def copy_grad(op, g_output):
        called.append(op)
        return [], [None]

    op = _op("Copy", ["x"], ["y"])
    grad_ops, g_input = GradientRegistry.GetGradientForOp(op, ["dy"])
    assert not called
    assert [o.type for o in grad_ops] == ["Copy"] and g_input == ["x_grad"]


def test_version_conflict_raises_with_debug_help(py_grads):
    @py_grads("TgSquare")
    def square_grad(op, g_output):
        gi = op.input[0] + "_grad"
        return [_op("TgSquareGradient", [op.input[0], g_output[0]], [gi])], [gi]

    @py_grads("TgWrite")
    def write_grad(op, g_output):
        return [], [None]

    ops = [_op("TgSquare", ["x"], ["y"]), _op("TgWrite", ["z"], ["x"])]
    with pytest.raises(RuntimeError, match=r'uses input "x" at version 0(.|\n)*DEBUG HELP'):
        GradientRegistry.GetBackwardPass(ops, ["y"])
    # without the overwrite it is fine
    grad_ops, grads = GradientRegistry.GetBackwardPass(ops[:1], ["y"])
    assert grads["x"] == "x_grad"


def test_stop_gradient_must_be_consumed():
    net = Net("tg_stop")
    net.AddExternalInput("x")
    net.StopGradient("x", "orphan")
    with pytest.raises(ValueError, match="StopGradient's output 'orphan' is orphan"):
        net.AddGradientOperators([BlobReference("orphan")])


def test_stop_gradient_blocks_the_flow():
    net = Net("tg_stop_ok")
    net.AddExternalInput("x")
    net.StopGradient("x", "x")
    y = net.Copy("x", "y")
    grads = net.AddGradientOperators([y])
    # Copy's gradient op is made, but StopGradient (in place) turns x's gradient into None
    assert [o.type for o in net.Proto().op[2:]] == ["ConstantFill", "Copy"]
    assert "x" not in grads and grads["y"] == "y_autogen_grad"


def test_sparse_gradients_are_concatenated(py_grads):
    @py_grads("TgGather")
    def gather_grad(op, g_output):
        return [], [GradientSlice(op.input[1], g_output[0]), None]

    @py_grads("TgAdd")
    def add_grad(op, g_output):
        return [], [g_output[0]] * len(op.input)

    ops = [
        _op("TgGather", ["w", "i1"], ["o1"]),
        _op("TgGather", ["w", "i2"], ["o2"]),
        _op("TgAdd", ["o1", "o2"], ["z"]),
    ]
    grad_ops, grads = GradientRegistry.GetBackwardPass(ops, {"z": "dz"})
    assert [o.type for o in grad_ops] == ["Concat", "Concat"]
    assert list(grad_ops[0].input) == ["i2", "i1"]
    assert list(grad_ops[0].output) == ["w_grad_indices_concat", "w_grad_indices_concat_split"]
    assert list(grad_ops[1].output) == ["w_grad_values_concat", "w_grad_values_concat_split"]
    g = grads["w"]
    assert isinstance(g, GradientSlice)
    assert (g.indices, g.values) == ("w_grad_indices_concat", "w_grad_values_concat")
    assert isinstance(g.indices, BlobReference)


def test_mixed_sparse_and_dense_is_an_error(py_grads):
    @py_grads("TgGather2")
    def gather_grad(op, g_output):
        return [], [GradientSlice(op.input[1], g_output[0]), None]

    @py_grads("TgDense")
    def dense_grad(op, g_output):
        return [], [g_output[0]]

    ops = [_op("TgGather2", ["w", "i"], ["o1"]), _op("TgDense", ["w"], ["o2"])]
    with pytest.raises(RuntimeError, match="mix of sparse and dense"):
        GradientRegistry.GetBackwardPass(ops, {"o1": "d1", "o2": "d2"})


def test_immediate_mode_runs_gradient_ops():
    workspace.StartImmediate(i_know=True)
    try:
        workspace.FeedImmediate("x", np.array([2.0], dtype=np.float32))
        net = Net("tg_imm")
        net.AddExternalInput("x")
        y = net.Copy("x", "y")
        net.AddGradientOperators([y])
        np.testing.assert_array_equal(workspace.FetchImmediate("x_grad"), [1.0])
    finally:
        workspace.StopImmediate()


# ---- ClonePartial (the expectations of core_test.testPartialClone) ---------------------------


def _net_assert(net, num_ops, inputs, outputs, internals):
    proto = net.Proto()
    assert len(proto.op) == num_ops
    assert set(proto.external_input) == inputs
    assert set(proto.external_output) == outputs
    all_blobs = set(proto.external_input) | set(proto.external_output)
    for op in proto.op:
        all_blobs |= set(op.input) | set(op.output)
    assert all_blobs == inputs | outputs | internals
    for name in inputs:
        workspace.FeedBlob(name, np.array([]))
    workspace.CreateNet(net)


def test_partial_clone():
    params = Net("params")
    p1 = params.ConstantFill([], ["p1"])
    workspace.CreateNet(params)
    workspace.RunNetOnce(params)

    n = Net("original")
    a1 = n.AddExternalInput("a1")
    a2 = n.AddExternalInput("a2")
    b1, b2 = n.Concat([a1, a2], ["b1", "b2"], axis=0)
    c1 = n.Sum([b1, p1], ["c1"])
    c2 = n.Sum([b2], "c2")
    d = n.Sum([c1, c2], ["d"])

    # gradient ops are ignored when partial-cloning
    n.AddGradientOperators([d])

    # some in-place ops
    k = n.Sum([p1], ["k"])
    e = n.Sum([d], ["e"])
    e = n.Sum([e, k], [e])
    e = n.Sum([e], [e])
    f = n.Sum(e, ["f"])

    n2, (d22,) = n.ClonePartial("f1", {a1: "a11", a2: "a22"}, [d])
    _net_assert(n2, 4, {"p1", "a11", "a22"}, {"f1/d"}, {"f1/b1", "f1/b2", "f1/c1", "f1/c2", "p1"})
    assert isinstance(d22, BlobReference) and d22.Net() is n2 and str(d22) == "f1/d"

    n3, (d33,) = n.ClonePartial("f2", [b1, b2], [d])
    _net_assert(n3, 3, {"b1", "b2", "p1"}, {"f2/d"}, {"f2/c1", "f2/c2", "p1"})
    assert str(d33) == "f2/d"

    n4, (c22,) = n.ClonePartial("f3", [b1], [c1])
    _net_assert(n4, 1, {"b1", "p1"}, {"f3/c1"}, {"p1"})
    assert str(c22) == "f3/c1"

    n5, (c11, c22) = n.ClonePartial("f4", [b1, b2], [c1, c2])
    _net_assert(n5, 2, {"b1", "b2", "p1"}, {"f4/c1", "f4/c2"}, {"p1"})
    assert (str(c11), str(c22)) == ("f4/c1", "f4/c2")

    with pytest.raises(AssertionError):
        n.ClonePartial("f4", [a1, a2, c2], [d])

    n6, (e22,) = n.ClonePartial("f5", [d], [e])
    _net_assert(n6, 4, {"d", "p1"}, {"f5/e"}, {"f5/e", "f5/k", "p1"})
    assert str(e22) == "f5/e"

    n8, (e22, f22) = n.ClonePartial("f7", [d], [e, f])
    _net_assert(n8, 5, {"d", "p1"}, {"f7/e", "f7/f"}, {"p1", "f7/e", "f7/f", "f7/k"})
    assert (str(e22), str(f22)) == ("f7/e", "f7/f")

    params._CheckLookupTables()
    n._CheckLookupTables()


def test_partial_clone_input_forms():
    n = Net("tg_pc_forms")
    n.AddExternalInput("x")
    n.Copy("x", "y")
    n.Copy("y", "z")
    for inputs in ({"y": "yy"}, [("y", "yy")]):
        clone, (out,) = n.ClonePartial("pc", inputs, ["z"])
        assert list(clone.Proto().external_input) == ["yy"]
        assert list(clone.Proto().op[0].input) == ["yy"] and str(out) == "pc/z"
    with pytest.raises(AssertionError):
        n.ClonePartial("pc", ["x"], ["undefined"])


def test_ssa_helpers():
    net = caffe2_pb2.NetDef(external_input=["a"])
    net.op.extend([_op("Relu", ["a"], ["b"]), _op("Relu", ["b", "c"], ["b"])])
    ssa, versions = core.get_ssa(net)
    assert ssa == [([("a", 0)], [("b", 1)]), ([("b", 1), ("c", 0)], [("b", 2)])]
    assert versions == {"a": 0, "b": 2}
    assert core.get_undefined_blobs(ssa) == {"a", "c"}
    assert core.get_output_producers(ssa) == {("b", 1): 0, ("b", 2): 1}
    assert core.get_op_ids_in_path(ssa, versions, ["a"], ["b"]) == [0, 1]
    # without external inputs, unseen inputs start at version 0 too
    del net.external_input[:]
    _, versions = core.get_ssa(net)
    assert versions == {"a": 0, "b": 2, "c": 0}


def test_deduplicate_gradient_slices_runs():
    net = core.Net("dedup_slices")
    g = core.GradientSlice(
        indices=core.BlobReference("dd_idx"), values=core.BlobReference("dd_vals")
    )
    workspace.FeedBlob("dd_idx", np.array([1, 0, 1], np.int64))
    workspace.FeedBlob("dd_vals", np.array([[1, 1], [2, 2], [3, 3]], np.float32))
    out = net.DeduplicateGradientSlices(g)
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob(str(out.indices)), [0, 1])
    np.testing.assert_array_equal(workspace.FetchBlob(str(out.values)), [[2, 2], [4, 4]])
