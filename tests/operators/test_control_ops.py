"""CreateScope, HasScope, Do, If and While (spec runtime.md 2.6, 15.5)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from netdefs import feed, fetch, make_net, make_op

from caffe2.operators.control_ops import WorkspaceStack
from caffe2.proto import caffe2_pb2
from caffe2.runtime import registry
from caffe2.runtime.errors import EnforceError, OperatorFailed
from caffe2.runtime.operator import OpInit
from caffe2.runtime.workspace import Workspace

# A test-only op that reports a plain failure (Caffe2's `return false`).
if not registry.has_operator("ControlTestFail"):

    @registry.operator("ControlTestFail", inputs=0, outputs=0)
    def _fail_op(op: Any):
        def run() -> None:
            raise OperatorFailed("ControlTestFail")

        return run


def do_op(net: caffe2_pb2.NetDef, ins, outs, ws_blob="W", inner=None, idx=None, **kw):
    """Do with identity bindings by default (inner name == outer name)."""
    outer = list(ins) + list(outs)
    if inner is None:
        inner = list(dict.fromkeys(outer))
        idx = [outer.index(n) for n in inner]
    return make_op(
        "Do",
        list(ins) + [ws_blob],
        list(outs) + [ws_blob],
        net=net,
        inner_blobs=inner,
        outer_blobs_idx=idx,
        **kw,
    )


@pytest.fixture
def ws(ws):
    feed(ws, x=np.array([1.0, 2.0], np.float32))
    feed(ws, one=np.array([1.0, 1.0], np.float32))
    ws.create_blob("W")  # an empty blob: the first Do that runs on it makes a fresh stack
    return ws


# ---- CreateScope / HasScope ------------------------------------------------------------------


def test_create_scope_and_has_scope(ws):
    inner = make_net("inner", make_op("Add", ["x", "one"], ["y"]))
    net = ws.create_net(
        make_net(
            "outer",
            make_op("CreateScope", [], ["W"]),
            make_op("HasScope", ["W"], ["before"]),
            do_op(inner, ["x", "one"], ["y"]),
            make_op("HasScope", ["W"], ["after"]),
        )
    )
    assert net.run()
    before, after = fetch(ws, "before"), fetch(ws, "after")
    assert before.dtype == np.bool_ and before.shape == (1,) and not before[0]
    assert after.shape == (1,) and after[0]
    stack = fetch(ws, "W")
    assert isinstance(stack, WorkspaceStack) and stack.depth == 1
    # Running CreateScope again resets the same stack object.
    assert ws.run_operator_once(make_op("CreateScope", [], ["W"]))
    assert fetch(ws, "W") is stack and stack.empty() and stack.num_workspaces == 1


def test_create_scope_replaces_a_non_stack_value(ws):
    feed(ws, W=[1.0])
    assert ws.run_operator_once(make_op("CreateScope", [], ["W"]))
    assert isinstance(fetch(ws, "W"), WorkspaceStack)


def test_has_scope_needs_a_stack(ws):
    with pytest.raises(RuntimeError, match="HasScope: blob x must hold a workspace stack") as e:
        ws.run_operator_once(make_op("HasScope", ["x"], ["h"]))
    assert e.value.blob == "x"


# ---- Do: running ------------------------------------------------------------------------------


def test_do_runs_subnet_on_bound_blobs_and_hides_local_blobs(ws):
    inner = make_net(
        "inner",
        make_op("Add", ["a", "b"], ["tmp"]),
        make_op("Mul", ["tmp", "tmp"], ["c"]),
    )
    op = do_op(inner, ["x", "one"], ["y"], inner=["a", "b", "c"], idx=[0, 1, 2])
    net = ws.create_net(make_net("outer", make_op("CreateScope", [], ["W"]), op))
    assert net.run()
    np.testing.assert_array_equal(fetch(ws, "y"), [4.0, 9.0])
    assert "tmp" not in ws.blobs() and "a" not in ws.blobs() and "c" not in ws.blobs()
    inner_ws = fetch(ws, "W")._workspaces[0]
    assert inner_ws.local_blobs() == ["tmp"]
    assert inner_ws.get_blob("c") is ws.get_blob("y")  # writes go to the outer blob
    assert inner_ws.nets() == ["inner"] and ws.nets() == ["outer"]


def test_do_inner_workspace_sees_only_bound_blobs(ws):
    inner = make_net("inner_unbound", make_op("Add", ["x", "one"], ["y"]))
    op = do_op(inner, ["x"], ["y"])  # "one" exists outside but is not bound
    net = ws.create_net(make_net("outer", make_op("CreateScope", [], ["W"]), op))
    with pytest.raises(RuntimeError) as e:
        net.run()
    msg = str(e.value)
    assert "Encountered a non-existing input blob: one" in msg
    assert "net 'inner_unbound', op #0 (Add)" in msg  # the subnet's own position
    assert "net 'outer', op #1 (Do)" in msg


def test_do_subnet_error_keeps_its_net_name_and_op_index(ws):
    feed(ws, z=np.array([1.0, 2.0, 3.0], np.float32))
    inner = make_net(
        "inner_bad", make_op("Add", ["x", "x"], ["t"]), make_op("Add", ["x", "z"], ["y"])
    )
    net = ws.create_net(make_net("outer", do_op(inner, ["x", "z"], ["y"])))
    with pytest.raises(RuntimeError) as e:
        net.run()
    msg = str(e.value)
    assert "net 'inner_bad', op #1 (Add)" in msg and "Dimension mismatch" in msg
    assert "net 'outer', op #0 (Do)" in msg


def test_do_stack_grows_without_create_scope(ws):
    inner = make_net("inner", make_op("Add", ["x", "one"], ["x"]))
    op = do_op(inner, ["x", "one"], ["x"])  # x in place
    net = ws.create_net(make_net("outer", op))
    for _ in range(3):
        assert net.run()
    np.testing.assert_array_equal(fetch(ws, "x"), [4.0, 5.0])
    stack = fetch(ws, "W")  # an empty blob became a fresh stack
    assert stack.depth == 3 and stack.num_workspaces == 3


def test_do_reuses_workspace_after_create_scope(ws):
    # The subnet keeps a counter that is local to its inner workspace.
    inner = make_net(
        "inner", make_op("Add", ["acc", "one"], ["acc"]), make_op("Sum", ["acc"], ["y"])
    )
    net_def = make_net("outer", make_op("CreateScope", [], ["W"]), do_op(inner, ["one"], ["y"]))
    net = ws.create_net(net_def)
    # First run: "acc" does not exist in the inner workspace yet.
    with pytest.raises(RuntimeError, match="non-existing input blob: acc"):
        net.run()
    stack = fetch(ws, "W")
    inner_ws = stack._workspaces[0]
    inner_ws.create_blob("acc").value = np.zeros(2, np.float32)
    for k in range(1, 4):
        assert net.run()
        assert stack.depth == 1 and stack.num_workspaces == 1
        assert stack._workspaces[0] is inner_ws  # reused, with its local blob and net
        np.testing.assert_array_equal(fetch(ws, "y"), [k, k])
    assert "acc" not in ws.blobs()


def test_do_copy_external_blobs_snapshots_and_rebinds_on_reuse(ws):
    inner = make_net("inner", make_op("Add", ["x", "one"], ["y"]))
    op = do_op(inner, ["x", "one"], ["y"], copy_external_blobs=True)
    net = ws.create_net(make_net("outer", make_op("CreateScope", [], ["W"]), op))
    assert net.run()
    inner_ws = fetch(ws, "W")._workspaces[0]
    # Every bound name is now a local snapshot in the inner workspace.
    assert inner_ws.local_blobs() == ["one", "x", "y"] and inner_ws.forwarded_names() == []
    snap = inner_ws.get_blob("y").value
    np.testing.assert_array_equal(snap, [2.0, 3.0])
    assert snap is not fetch(ws, "y")
    # Change x outside; after the CreateScope reset the reused workspace is re-bound.
    feed(ws, x=np.array([10.0, 20.0], np.float32))
    assert net.run()
    assert fetch(ws, "W")._workspaces[0] is inner_ws
    np.testing.assert_array_equal(fetch(ws, "y"), [11.0, 21.0])


def test_do_copy_external_blobs_needs_tensors(ws):
    inner = make_net("inner", make_op("Add", ["x", "one"], ["y"]))
    op = do_op(inner, ["x", "one", "s"], ["y"], copy_external_blobs=True)
    ws.create_blob("s").value = b"a string"
    net = ws.create_net(make_net("outer", op))
    with pytest.raises(RuntimeError, match="Expected blob with tensor value") as e:
        net.run()
    # Caffe2's text glues the parent blob name ("s") to the message.
    assert "Expected blob with tensor values" in str(e.value)
    assert "net 'outer', op #0 (Do)" in str(e.value)


def test_do_reuse_workspace_keeps_one_workspace(ws):
    inner = make_net("inner", make_op("Add", ["x", "one"], ["x"]))
    op = do_op(inner, ["x", "one"], ["x"], reuse_workspace=True)
    net = ws.create_net(make_net("outer", op))
    for _ in range(3):
        assert net.run()
    stack = fetch(ws, "W")
    assert stack.depth == 1 and stack.num_workspaces == 1
    np.testing.assert_array_equal(fetch(ws, "x"), [4.0, 5.0])


def test_gradient_do_pops_the_forward_workspace(ws):
    fwd = make_net("fwd", make_op("Add", ["x", "one"], ["tmp"]), make_op("Sum", ["tmp"], ["y"]))
    # The gradient subnet reads the forward pass's local blob "tmp".
    bwd = make_net("bwd", make_op("Mul", ["tmp", "g"], ["gx"]))
    fwd_op = do_op(fwd, ["x", "one"], ["y"])
    bwd_op = do_op(bwd, ["g"], ["gx"])
    bwd_op.is_gradient_op = True
    feed(ws, g=np.array([2.0, 2.0], np.float32))
    net = ws.create_net(make_net("outer", make_op("CreateScope", [], ["W"]), fwd_op, bwd_op))
    assert net.run()
    np.testing.assert_array_equal(fetch(ws, "gx"), [4.0, 6.0])
    stack = fetch(ws, "W")
    assert stack.empty() and stack.num_workspaces == 1
    # Another gradient pass on the empty stack has no workspace to pop.
    with pytest.raises(RuntimeError, match="Failed to initialize Do op workspace"):
        ws.run_operator_once(bwd_op)


def test_do_stack_blob_must_hold_a_stack(ws):
    inner = make_net("inner", make_op("Add", ["x", "one"], ["y"]))
    feed(ws, W=[1.0])
    net = ws.create_net(make_net("outer", do_op(inner, ["x", "one"], ["y"])))
    with pytest.raises(RuntimeError, match="Do: blob W must hold a workspace stack"):
        net.run()


def test_do_subnet_failure_fails_the_op(ws):
    inner = make_net("inner", make_op("ControlTestFail", [], []))
    net = ws.create_net(make_net("outer", do_op(inner, [], [])))
    assert net.run() is False
    assert ws.last_failed_op_net_position == 0


# ---- Do: construction checks ------------------------------------------------------------------

INNER = make_net("inner", make_op("Add", ["x", "one"], ["y"]))


@pytest.mark.parametrize(
    "opdef, message",
    [
        (make_op("Do", ["x", "W"], ["y", "W"]), "net must be specified in Do operator"),
        (
            make_op("Do", ["x", "W"], ["y", "W"], net="not a net"),
            "net must be specified in Do operator",
        ),
        (
            do_op(INNER, ["x"], ["y"], copy_external_blobs=True, reuse_workspace=True),
            "Reuse workspace and copy external blobs simultaneously in Do op",
        ),
        (
            do_op(INNER, ["x"], ["y"], inner=["a", "b"], idx=[0]),
            "Invalid blob bindings: different inner/outer blobs lengths",
        ),
        (
            make_op(
                "Do",
                ["x", "W"],
                ["y", "V"],
                net=INNER,
                inner_blobs=["x", "y"],
                outer_blobs_idx=[0, 1],
            ),  # fmt: skip
            "Expected same input/output workspace blob",
        ),
        (
            do_op(INNER, ["x", "x"], ["y"], inner=["a", "y"], idx=[0, 2]),
            "Duplicate input blobs",
        ),
        (
            do_op(INNER, ["x"], ["y", "y"], inner=["x", "y"], idx=[0, 1]),
            "Duplicate output blobs",
        ),
        (
            do_op(INNER, ["x"], ["y"], inner=["x", "y"], idx=[0, 2]),
            r"Invalid blob bindings: outer blob index \(2, inner name: y\) is out of bounds "
            r"\[0, 1\]",
        ),
        (
            do_op(INNER, ["x"], ["y"], inner=["x", "y"], idx=[0, -1]),
            r"outer blob index \(-1, inner name: y\) is out of bounds",
        ),
        (
            do_op(INNER, ["x"], ["y"], inner=["a", "a"], idx=[0, 1]),
            "Invalid blob bindings: redefinition of inner blob a",
        ),
        (
            do_op(INNER, ["x"], ["x"], inner=["a", "b"], idx=[0, 1]),
            "Reusage of outer name: x",
        ),
        (
            do_op(INNER, ["x", "one"], ["y"], inner=["x", "y"], idx=[0, 2]),
            "Not all outer names are used in blob bindings",
        ),
    ],
)
def test_do_construction_errors(ws, opdef, message):
    with pytest.raises(RuntimeError, match=message) as e:
        ws.create_net(make_net("outer", opdef))
    assert "net 'outer', op #0 (Do)" in str(e.value)
    assert ws.get_net("outer") is None


def test_gradient_do_refuses_reuse_workspace(ws):
    op = do_op(INNER, ["x"], ["y"], reuse_workspace=True)
    op.is_gradient_op = True
    with pytest.raises(RuntimeError, match="Gradient Do op requires use of stacked workspaces"):
        ws.create_net(make_net("outer", op))


def test_do_needs_the_stack_blob_in_inputs_and_outputs(ws):
    # The schema (1+ inputs, 1+ outputs) refuses these first ...
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("outer", make_op("Do", [], ["W"], net=INNER)))
    # ... and the Do constructor's own checks name the missing blob lists.
    schema = registry.get_schema("Do")
    for ins, outs, message in (
        ([], ["W"], "Expected at least one input blob"),
        (["W"], [], "Expected at least one output blob"),
    ):
        opdef = make_op("Do", ins, outs, net=INNER)
        init = OpInit(opdef, schema, ws, "outer", 0)
        with pytest.raises(EnforceError, match=message):
            schema.factory(init)


def test_do_allows_in_place_outer_blobs(ws):
    inner = make_net("inner", make_op("Add", ["a", "a"], ["a"]))
    op = do_op(inner, ["x"], ["x"], inner=["a"], idx=[0])  # x is input 0 and output 0
    assert ws.create_net(make_net("outer", op)).run()
    np.testing.assert_array_equal(fetch(ws, "x"), [2.0, 4.0])


def test_do_with_unknown_subnet_type_fails_at_run(ws):
    inner = make_net("inner", make_op("Add", ["x", "one"], ["y"]), type="no_such_executor")
    net = ws.create_net(make_net("outer", do_op(inner, ["x", "one"], ["y"])))
    with pytest.raises(RuntimeError, match="Failed to initialize subnet"):
        net.run()


# ---- If ---------------------------------------------------------------------------------------


def if_net(cond: bool | None, with_else: bool = True) -> tuple[Workspace, Any]:
    w = Workspace()
    feed(w, x=np.array([1.0, 2.0], np.float32))
    feed(w, one=np.array([1.0, 1.0], np.float32))
    if cond is not None:
        feed(w, c=np.array([cond]))
    else:
        w.create_blob("c")
    then_net = make_net("then", make_op("Add", ["x", "one"], ["y"]))
    args: dict[str, Any] = {"then_net": then_net}
    if with_else:
        args["else_net"] = make_net("else", make_op("Sub", ["x", "one"], ["y"]))
    op = make_op("If", ["c", "x", "one"], ["y"], **args)
    return w, w.create_net(make_net("outer", op))


def test_if_runs_then_or_else():
    w, net = if_net(True)
    assert net.run()
    np.testing.assert_array_equal(fetch(w, "y"), [2.0, 3.0])
    assert w.nets() == ["outer"]  # the subnets are owned by the op, not registered
    w.get_blob("c").value[0] = False
    assert net.run()
    np.testing.assert_array_equal(fetch(w, "y"), [0.0, 1.0])


def test_if_without_else_does_nothing_on_false():
    w, net = if_net(False, with_else=False)
    assert net.run()
    assert fetch(w, "y") is None


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "Invalid condition in If operator: tensor expected"),
        (np.array([True, False]), "Invalid condition tensor in If operator: single value expected"),
        (np.array([], np.bool_), "single value expected"),
        (np.array([1.0], np.float32), "caller expects elements to be bool, while tensor contains"),
        (np.array([1], np.int32), "caller expects elements to be bool"),
    ],
)
def test_if_bad_condition(value, message):
    w, net = if_net(True)
    w.get_blob("c").value = value
    with pytest.raises(RuntimeError, match=message) as e:
        net.run()
    assert e.value.blob == "c"


def test_if_accepts_a_0d_or_nested_single_value():
    w, net = if_net(True)
    w.get_blob("c").value = np.array([[False]])
    assert net.run()
    np.testing.assert_array_equal(fetch(w, "y"), [0.0, 1.0])


def test_if_needs_then_net(ws):
    with pytest.raises(RuntimeError, match="then_net must be specified in If operator"):
        ws.create_net(make_net("outer", make_op("If", ["x"], [])))


def test_if_subnet_inputs_must_exist_at_construction(ws):
    feed(ws, c=[True])
    then_net = make_net("then", make_op("Add", ["x", "missing"], ["y"]))
    with pytest.raises(RuntimeError) as e:
        ws.create_net(make_net("outer", make_op("If", ["c"], [], then_net=then_net)))
    msg = str(e.value)
    assert "Encountered a non-existing input blob: missing" in msg
    assert "net 'then', op #0 (Add)" in msg and "net 'outer', op #0 (If)" in msg


def test_if_unknown_subnet_type(ws):
    feed(ws, c=[True])
    then_net = make_net("then", type="no_such_executor")
    with pytest.raises(RuntimeError, match="Failed to initialize then subnet"):
        ws.create_net(make_net("outer", make_op("If", ["c"], [], then_net=then_net)))


def test_if_subnet_failure_and_error():
    w = Workspace()
    feed(w, c=[True])
    feed(w, x=np.array([1.0], np.float32))
    fail = make_net("then", make_op("ControlTestFail", [], []))
    net = w.create_net(make_net("outer", make_op("If", ["c"], [], then_net=fail)))
    assert net.run() is False
    bad = make_net("else_bad", make_op("Add", ["x", "c"], ["y"]))
    net = w.create_net(make_net("outer2", make_op("If", ["c"], ["y"], then_net=bad, else_net=fail)))
    with pytest.raises(RuntimeError) as e:
        net.run()
    assert "net 'else_bad', op #0 (Add)" in str(e.value)
    assert "net 'outer2', op #0 (If)" in str(e.value)


def test_if_with_do_branch_keeps_branch_blobs_local():
    """The NetBuilder shape: If -> Do -> branch net, local blob invisible outside."""
    w = Workspace()
    feed(w, c=[True])
    feed(w, x=np.array([3.0], np.float32))
    branch = make_net(
        "branch", make_op("Add", ["x", "x"], ["local"]), make_op("Mul", ["local", "x"], ["y"])
    )
    do_then = make_net("do_then_net", do_op(branch, ["x"], ["y"], ws_blob="ws_then"))
    net = w.create_net(
        make_net(
            "if_net",
            make_op("CreateScope", [], ["ws_then"]),
            make_op("If", ["c", "x", "ws_then"], ["y", "ws_then"], then_net=do_then),
        )
    )
    for _ in range(2):
        assert net.run()
        np.testing.assert_array_equal(fetch(w, "y"), [18.0])
    assert "local" not in w.blobs()
    assert fetch(w, "ws_then").num_workspaces == 1


# ---- While ------------------------------------------------------------------------------------


def test_while_without_cond_net():
    w = Workspace()
    feed(w, i=np.array([0], np.int32))
    feed(w, step=np.array([1], np.int32))
    feed(w, limit=np.array([5], np.int32))
    feed(w, c=[True])
    loop = make_net(
        "loop", make_op("Add", ["i", "step"], ["i"]), make_op("LT", ["i", "limit"], ["c"])
    )
    net = w.create_net(
        make_net("outer", make_op("While", ["c", "i", "step", "limit"], ["i", "c"], loop_net=loop))
    )
    assert net.run()
    np.testing.assert_array_equal(fetch(w, "i"), [5])
    assert w.nets() == ["outer"]
    # The condition is now false: a second run does zero iterations.
    assert net.run()
    np.testing.assert_array_equal(fetch(w, "i"), [5])


def test_while_with_cond_net():
    """Spec 9's test_while_net: x += 1; c = x < 7 in the condition; y += x in the body."""
    w = Workspace()
    feed(w, x=np.array([0], np.int64))
    feed(w, y=np.array([0], np.int64))
    feed(w, one=np.array([1], np.int64))
    feed(w, seven=np.array([7], np.int64))
    feed(w, c=[False])  # must exist as a 1-element bool before While starts
    cond = make_net(
        "cond", make_op("Add", ["x", "one"], ["x"]), make_op("LT", ["x", "seven"], ["c"])
    )
    body = make_net("body", make_op("Add", ["y", "x"], ["y"]))
    op = make_op(
        "While", ["c", "x", "y", "one", "seven"], ["x", "y", "c"], loop_net=body, cond_net=cond
    )
    assert w.create_net(make_net("outer", op)).run()
    assert fetch(w, "x")[0] == 7 and fetch(w, "y")[0] == 21


def test_while_reads_a_replaced_condition_array():
    """A loop body that stores a brand-new array in the condition blob still stops the loop."""
    from caffe2.operators.python_ops import register_python_op

    calls = []

    def stop_after_three(inputs, outputs):
        calls.append(1)
        outputs[0].feed(np.array([len(calls) < 3]))

    token = register_python_op(stop_after_three)
    w = Workspace()
    feed(w, c=[True])
    loop = make_net("loop", make_op("Python", [], ["c"], token=token))
    assert w.create_net(make_net("outer", make_op("While", ["c"], ["c"], loop_net=loop))).run()
    assert len(calls) == 3


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "Invalid condition in While operator: tensor expected"),
        (b"str", "Invalid condition in While operator: tensor expected"),
        (np.array([True, True]), "Invalid condition tensor in While operator: single value"),
        (np.array([1], np.int64), "caller expects elements to be bool"),
    ],
)
def test_while_bad_condition_at_start(value, message):
    w = Workspace()
    w.create_blob("c").value = value
    loop = make_net("loop", make_op("ControlTestFail", [], []))
    cond = make_net("cond", make_op("ControlTestFail", [], []))
    net = w.create_net(make_net("outer", make_op("While", ["c"], [], loop_net=loop, cond_net=cond)))
    # Checked before cond_net runs (which would make the op fail with False instead).
    with pytest.raises(RuntimeError, match=message):
        net.run()


def test_while_condition_going_bad_mid_loop_is_an_error():
    from caffe2.operators.python_ops import register_python_op

    def widen(inputs, outputs):
        outputs[0].feed(np.array([True, True]))

    token = register_python_op(widen)
    w = Workspace()
    feed(w, c=[True])
    loop = make_net("loop", make_op("Python", [], ["c"], token=token))
    net = w.create_net(make_net("outer", make_op("While", ["c"], ["c"], loop_net=loop)))
    with pytest.raises(RuntimeError, match="single value expected"):
        net.run()


def test_while_subnet_failures_return_false():
    w = Workspace()
    feed(w, c=[True])
    fail = make_net("fail", make_op("ControlTestFail", [], []))
    ok = make_net("ok")
    net = w.create_net(make_net("a", make_op("While", ["c"], [], loop_net=fail)))
    assert net.run() is False
    net = w.create_net(make_net("b", make_op("While", ["c"], [], loop_net=ok, cond_net=fail)))
    assert net.run() is False


def test_while_needs_loop_net(ws):
    feed(ws, c=[True])
    with pytest.raises(RuntimeError, match="loop_net must be specified in While operator"):
        ws.create_net(make_net("outer", make_op("While", ["c"], [], cond_net=make_net("n"))))
    with pytest.raises(RuntimeError, match="Failed to initialize condition subnet"):
        ws.create_net(
            make_net(
                "outer",
                make_op(
                    "While", ["c"], [], loop_net=make_net("l"), cond_net=make_net("n", type="nope")
                ),
            )
        )


def test_control_schemas_need_the_workspace():
    for t in ("CreateScope", "HasScope", "Do", "If", "While"):
        assert registry.get_schema(t).needs_workspace
