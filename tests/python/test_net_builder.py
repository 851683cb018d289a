"""caffe2.python.net_builder: builder naming, stop blobs, ops, the step-based and op-based
control-flow blocks, setup builders (spec runtime.md 8), and runs of what they build.

Net names are process-global, so every test that checks names uses its own builder names.
The run tests mirror Caffe2's net_builder_test (the parts that do not need a Session).
"""

from __future__ import annotations

import numpy as np
import pytest
from pyhelpers import (  # noqa: F401 (reset_workspace: autouse fixture)
    build_counting_loop,
    build_multi_instance_counters,
    build_setup_exit_task,
    reset_workspace,
    step_tree,
)

from caffe2.python import core, workspace
from caffe2.python.core import Net, Plan, to_execution_step
from caffe2.python.net_builder import NetBuilder, ops
from caffe2.python.task import Node, Task, TaskGroup, final_output

_TREE_FLAGS = ("stop", "only_once", "create_workspace", "concurrent", "instances", "every_ms")


def _tree(step_or_proto):
    """(name, flags, networks or substeps) of a step, recursively."""
    return step_tree(step_or_proto, _TREE_FLAGS)


def _op_types(net):
    return [op.type for op in net.Proto().op]


def _run(builder_or_step, ws=None):
    """Run the builder's step in a fresh C.Workspace (or ws); return the workspace."""
    plan = Plan("nb_test_plan")
    plan.AddStep(to_execution_step(builder_or_step))
    ws = ws or workspace.C.Workspace()
    ws.run(plan)
    return ws


def _fetch(ws, blob):
    return ws.blobs[str(blob)].fetch()


# ---- NetBuilder: names, children, freezing ----------------------------------------------------


def test_builder_names_join_parent_name():
    assert str(NetBuilder()) == "Un-named NetBuilder"
    with NetBuilder("nbn_outer") as outer:
        assert outer.name == "nbn_outer"
        assert NetBuilder.current() is outer
        with NetBuilder() as same:
            assert same.name == "nbn_outer"
        with NetBuilder("inner") as inner:
            assert inner.name == "nbn_outer/inner"
            assert NetBuilder.current() is inner
        with NetBuilder(_fullname="nbn_full") as full:
            assert full.name == "nbn_full"
    assert NetBuilder.current(required=False) is None
    with pytest.raises(AssertionError, match="Cannot set both _fullname and name"):
        NetBuilder("a", _fullname="b")
    with pytest.raises(AssertionError, match="Stop blobs are not used with control operators"):
        NetBuilder(_use_control_ops=True, _stop_blob_required=True)


def test_builder_has_no_default():
    with pytest.raises(AssertionError, match="is required but none is active"):
        NetBuilder.current()


def test_nets_are_named_after_the_builder():
    with NetBuilder(_fullname="nbn_nets") as nb:
        first = ops.net()
        assert first.Name() == "nbn_nets"
        assert ops.net() is first  # current net is reused
        c = ops.Const(1)
        assert str(c) == "nbn_nets/GivenTensorInt64Fill:0"
        second = ops.net(name="extra")
        assert second.Name() == "nbn_nets/extra"
        assert ops.net() is second
        third = core.Net(None)
        assert third.Name() == "nbn_nets_1"
    assert nb.get() == [first, second]
    # outside the builder the prefix is gone
    assert core.Net("nbn_nets_plain").Name() == "nbn_nets_plain"


def test_ops_without_builder():
    assert not hasattr(ops, "Add")
    with pytest.raises(AttributeError, match="No active NetBuilder"):
        _ = ops.Add
    with pytest.raises(AttributeError):
        _ = ops.__foo__
    with NetBuilder():
        assert hasattr(ops, "Add")


def test_ops_reach_any_net_attribute():
    with NetBuilder(_fullname="nbn_attrs"):
        assert ops.NextName("x") == "nbn_attrs/x"
        blob = ops.NextScopedBlob("y")
        assert str(blob) == "y"
        out = ops.ConstantFill([], 1, shape=[], value=2.0)
        assert str(out) == "nbn_attrs/ConstantFill:0"
        with pytest.raises(AttributeError, match="not a registered operator"):
            _ = ops.NoSuchOperatorHere


def test_ops_net_adds_user_net_as_current():
    user = Net("nbn_user")
    with NetBuilder(_fullname="nbn_usr") as nb:
        ops.Const(1)
        assert ops.net(user) is user
        ops.Const(2)  # goes into the user's net
        assert ops.net() is user
        with pytest.raises(AssertionError, match="Cannot provide both"):
            ops.net(user, name="x")
    children = nb.get()
    assert [c.Name() for c in children] == ["nbn_usr", "nbn_user"]
    assert _op_types(user) == ["GivenTensorInt64Fill"]


def test_builder_is_frozen_after_exit():
    with NetBuilder(_fullname="nbn_frozen") as nb:
        ops.Const(1)
        with NetBuilder() as child:
            ops.Const(2)
    assert nb._frozen and child._frozen
    with pytest.raises(AssertionError, match=r"This NetBuilder \(nbn_frozen\) has been built"):
        nb.current_net()
    with pytest.raises(AssertionError, match="has been built already"):
        nb.add(Net("nbn_frozen_x"))


def test_builder_children_and_step_structure():
    with NetBuilder(_fullname="nbn_struct") as nb:
        ops.Const(1)
        with ops.net(NetBuilder("sub")):
            ops.Const(2)
        ops.Const(3)
    children = nb.get()
    assert children[0].Name() == "nbn_struct"
    assert isinstance(children[1], NetBuilder) and children[1].name == "nbn_struct/sub"
    assert children[2].Name() == "nbn_struct_1"
    tree = _tree(to_execution_step(nb))
    assert tree[0] == "nbn_struct"
    names = [t[0] for t in tree[2]]
    assert names[1] == "nbn_struct/sub"
    assert [t[2] for t in tree[2]] == [["nbn_struct"], ["nbn_struct/sub"], ["nbn_struct_1"]]


def test_builder_of_only_nets_is_one_step_with_networks():
    with NetBuilder(_fullname="nbn_flat") as nb:
        ops.Const(1)
        ops.net(name="b")
        ops.Const(2)
    assert _tree(to_execution_step(nb)) == ("nbn_flat", {}, ["nbn_flat", "nbn_flat/b"])


# ---- stop blobs -----------------------------------------------------------------------------


def test_stop_blob_in_first_net():
    with NetBuilder(_fullname="nbs_first") as nb:
        ops.stop_if(ops.Const(True))
        after = ops.Const(1)
    stop = nb._stop_blob
    assert str(stop) == "nbs_first/stop_blob"
    first, second = nb.get()
    assert _op_types(first) == ["ConstantFill", "ConstantFill", "Or"]
    assert first.Proto().op[1].output == ["nbs_first/stop_blob"]
    assert list(first.Proto().op[2].input) == ["nbs_first/stop_blob", "nbs_first/ConstantFill:0"]
    assert list(first.Proto().op[2].output) == ["nbs_first/stop_blob"]
    # stop_if ends the current net: what follows goes into a new one
    assert second.Name() == "nbs_first_1"
    assert str(after) == "nbs_first_1/GivenTensorInt64Fill:0"
    assert _tree(to_execution_step(nb)) == (
        "nbs_first",
        {"stop": "nbs_first/stop_blob"},
        ["nbs_first", "nbs_first_1"],
    )
    ws = _run(nb)
    # stopped before the second net ran (its output exists, uninitialized)
    assert not ws.blobs[str(after)].is_tensor()


def test_stop_blob_init_net_when_not_in_first_net():
    with NetBuilder(_fullname="nbs_init") as nb:
        ops.Const(1)
        ops.net(name="second")
        stop = nb.stop_blob()
        assert nb.stop_blob() is stop
    assert str(stop) == "nbs_init/second/stop_blob"
    children = nb.get()
    assert [c.Name() for c in children] == [
        "nbs_init/stop_blob_init",
        "nbs_init",
        "nbs_init/second",
    ]
    assert _op_types(children[0]) == ["ConstantFill"]
    assert list(children[0].Proto().op[0].output) == [str(stop)]
    args = {a.name: a for a in children[0].Proto().op[0].arg}
    assert args["dtype"].i == core.DataType.BOOL and args["value"].i == 0


def test_stop_blob_names_get_suffixes_in_same_net():
    with NetBuilder(_fullname="nbs_suffix") as nb:
        ops.NextName("stop_blob")
        ops.Const(False, blob_out=core.BlobReference("nbs_suffix/stop_blob"))
        assert str(nb.stop_blob()) == "nbs_suffix/stop_blob_2"


def test_loop_requires_stop_condition():
    with pytest.raises(AssertionError, match="requires a stop condition"):
        with NetBuilder(_fullname="nbs_nostop"):
            with ops.loop():
                ops.Const(1)


def test_stop_in_run_once_builder_runs_once():
    with NetBuilder(_fullname="nbs_once") as nb:
        x = ops.Const(0)
        with ops.stop_guard():
            ops.Add([x, ops.Const(1)], [x])
    ws = _run(nb)
    assert _fetch(ws, x) == 1


# ---- loops ----------------------------------------------------------------------------------


def test_loop_with_count_structure():
    with NetBuilder(_fullname="nbl_count") as nb:
        with ops.loop(3) as loop:
            ops.Const(7)
    inc, it, num = nb.get()[0].Proto().op
    assert [list(o.output) for o in (inc, it, num)] == [
        ["nbl_count/GivenTensorInt64Fill:0"],
        ["nbl_count/GivenTensorInt64Fill_2:0"],
        ["nbl_count/GivenTensorInt64Fill_3:0"],
    ]
    assert [o.arg[1].ints[0] for o in (inc, it, num)] == [1, 0, 3]
    assert str(loop.iter()) == "nbl_count/GivenTensorInt64Fill_2:0"
    head, body = loop.get()
    assert head.Name() == "nbl_count_1" and body.Name() == "nbl_count_2"
    assert _op_types(head) == ["GE", "ConstantFill", "Or"]
    assert _op_types(body) == ["GivenTensorInt64Fill", "Add"]
    assert list(body.Proto().op[1].output) == [str(loop.iter())]
    name, flags, (init_step, loop_step) = _tree(to_execution_step(nb))
    assert (name, flags) == ("nbl_count", {})
    assert init_step[2] == ["nbl_count"]
    assert loop_step == (
        "nbl_count",
        {"stop": "nbl_count_1/stop_blob"},
        ["nbl_count_1", "nbl_count_2"],
    )


def test_loop_iter_needs_count():
    with NetBuilder():
        with ops.loop() as loop:
            ops.stop()
        with pytest.raises(AssertionError, match="does not have a number of iterations"):
            loop.iter()


def test_loop_counts_down():
    with NetBuilder() as nb:
        x = ops.Const(5)
        y = ops.Const(0)
        with ops.loop():
            ops.stop_if(ops.EQ([x, ops.Const(0)]))
            ops.Add([x, ops.Const(-1)], [x])
            ops.Add([y, ops.Const(1)], [y])
    ws = _run(nb)
    assert _fetch(ws, y) == 5
    assert _fetch(ws, x) == 0


def test_loop_with_blob_count_and_iter():
    with NetBuilder() as nb:
        total = ops.Const(0)
        n = ops.Add([ops.Const(2), ops.Const(2)])
        with ops.loop(n) as loop:
            ops.Add([total, loop.iter()], [total])
    ws = _run(nb)
    assert _fetch(ws, total) == 0 + 1 + 2 + 3


def _expected_loop():
    total = total_large = total_small = total_tiny = 0
    for loop_iter in range(10):
        outer = loop_iter * 10
        for inner_iter in range(loop_iter):
            val = outer + inner_iter
            if val >= 80:
                total_large += val
            elif val >= 50:
                total_small += val
            else:
                total_tiny += val
            total += val
    return total, total_large, total_small, total_tiny


def test_nested_loops_with_if_elif_else():
    with NetBuilder() as nb:
        outs = build_counting_loop()
    ws = _run(nb)
    assert [int(_fetch(ws, o)) for o in outs] == list(_expected_loop())


def test_nested_loops_in_task_with_final_output():
    with Node("nbl_node"):
        with Task() as task:
            outs = [final_output(x) for x in build_counting_loop()]
    assert task.name == "nbl_node/task"
    workspace.RunPlan(Plan(task.get_step()))
    assert [int(workspace.FetchBlob(o.names[0])) for o in outs] == list(_expected_loop())


def test_net_multi_use():
    with NetBuilder() as nb:
        total = ops.Const(0)
        net = Net("nbl_my_net")
        net.Add([total, net.Const(1)], [total])
        ops.net(net)
        ops.net(net)
    assert list(to_execution_step(nb).Proto().network)[1:] == ["nbl_my_net", "nbl_my_net"]
    ws = _run(nb)
    assert _fetch(ws, total) == 2


# ---- stop guards and If ---------------------------------------------------------------------


def _test_inner_stop(x):
    ops.stop_if(ops.LT([x, ops.Const(5)]))


def _test_outer():
    x = ops.Const(10)
    # stop_if(False)
    with ops.stop_guard() as g1:
        _test_inner_stop(x)
    # stop_if(True)
    y = ops.Const(3)
    with ops.stop_guard() as g2:
        _test_inner_stop(y)
    # no stop
    with ops.stop_guard() as g4:
        ops.Const(0)
    # empty clause
    with ops.stop_guard() as g3:
        pass
    return g1.has_stopped(), g2.has_stopped(), g3.has_stopped(), g4.has_stopped()


def _test_if(x):
    y = ops.Const(1)
    with ops.If(ops.GT([x, ops.Const(50)])):
        ops.Const(2, blob_out=y)
    with ops.If(ops.LT([x, ops.Const(50)])):
        ops.Const(3, blob_out=y)
        ops.stop()
        ops.Const(4, blob_out=y)
    return y


def _test_loop():
    x = ops.Const(5)
    y = ops.Const(0)
    with ops.loop():
        ops.stop_if(ops.EQ([x, ops.Const(0)]))
        ops.Add([x, ops.Const(-1)], [x])
        ops.Add([y, ops.Const(1)], [y])
    return y


def test_ops_loop_stop_guard_and_if():
    with NetBuilder() as nb:
        y = _test_loop()
        z, w, a, b = _test_outer()
        p = _test_if(ops.Const(75))
        q = _test_if(ops.Const(25))
    ws = _run(nb)
    expected = [(y, 5), (z, False), (w, True), (a, False), (b, False), (p, 2), (q, 3)]
    for blob, value in expected:
        assert _fetch(ws, blob) == value, str(blob)


def test_stop_guard_has_stopped_blob_and_checks():
    with NetBuilder(_fullname="nbg_guard") as nb:
        guard = ops.stop_guard(has_stopped_blob="nbg_stopped")
        with pytest.raises(AssertionError, match="Context not used yet"):
            guard.has_stopped()
        with guard:
            ops.stop_if(ops.Const(True))
    assert str(guard.has_stopped()) == "nbg_stopped"
    ws = _run(nb)
    assert _fetch(ws, "nbg_stopped") == True  # noqa: E712


def test_if_elif_else_names_and_guards():
    with NetBuilder(_fullname="nbi_names") as nb:
        c = ops.Const(True)
        with ops.If(c) as x:
            ops.Const(1)
        with x.Elif(c) as x2:
            ops.Const(2)
        with x2.Elif(c) as x3:
            ops.Const(3)
        with x3.Else() as x4:
            ops.Const(4)
        with pytest.raises(AssertionError, match="Elif not allowed for an Else"):
            x4.Else()
        with pytest.raises(AssertionError, match="Else not allowed for an Else"):
            x4.Elif(c)
    assert x.name == "nbi_names"
    assert x2.name == "nbi_names/nbi_names"
    assert x3.name == "nbi_names/nbi_names/nbi_names"
    assert x4.name == "nbi_names/nbi_names/nbi_names/nbi_names"
    # the first If's Not and Const(False) sit in the parent's net
    assert _op_types(nb.get()[0]) == ["ConstantFill", "Not", "ConstantFill"]
    # each branch: stop_if(else blob), then already_ran = True, the body and a final stop
    # in a second net
    assert [n.Name() for n in x2.get()] == ["nbi_names/nbi_names", "nbi_names/nbi_names_1"]
    assert _op_types(x2.get()[0]) == ["ConstantFill", "Or"]
    assert _op_types(x2.get()[1]) == [
        "ConstantFill",
        "GivenTensorInt64Fill",
        "ConstantFill",
        "Or",
    ]
    assert x._already_ran is x2._already_ran is x4._already_ran


def test_if_elif_else_runs_one_branch():
    for value, expected in [(90, 1), (60, 2), (10, 3)]:
        with NetBuilder() as nb:
            v = ops.Const(value)
            out = ops.Const(0)
            with ops.If(ops.GE([v, ops.Const(80)])) as c:
                ops.Const(1, blob_out=out)
            with c.Elif(ops.GE([v, ops.Const(50)])) as c:
                ops.Const(2, blob_out=out)
            with c.Else():
                ops.Const(3, blob_out=out)
        ws = _run(nb)
        assert _fetch(ws, out) == expected


# ---- IfNet / Else / WhileNet ------------------------------------------------------------------


def test_if_net_structure_and_names():
    with NetBuilder(_fullname="nbo_if") as nb:
        x = ops.Const(1)
        cond = ops.Const(True)
        with ops.IfNet(cond) as b:
            assert b.name == "nbo_if"
            assert str(x) in b._init_lexical_scope
            ops.Add([x, ops.Const(1)], [x])
            ops.Const(5)  # local
    parent_net, if_builder = nb.get()
    (if_net,) = if_builder.get()
    assert if_net.Name() == "nbo_if/nbo_if/if_net"
    assert _op_types(if_net) == ["CreateScope", "If"]
    ws_blob = "nbo_if/nbo_if/if_net/workspace_if_then"
    assert list(if_net.Proto().op[0].output) == [ws_blob]
    if_op = if_net.Proto().op[1]
    assert list(if_op.input) == [str(cond), str(x), ws_blob]
    assert list(if_op.output) == [str(x), ws_blob]
    assert list(if_net.Proto().external_output) == [str(x)]
    args = {a.name: a for a in if_op.arg}
    assert set(args) == {"then_net"}
    do_net = args["then_net"].n
    assert do_net.name.startswith("nbo_if/do_then_net")
    (do_op,) = do_net.op
    assert do_op.type == "Do"
    assert list(do_op.input) == [str(x), ws_blob]
    assert list(do_op.output) == [str(x), ws_blob]
    do_args = {a.name: a for a in do_op.arg}
    assert list(do_args["inner_blobs"].strings) == [str(x).encode()]
    assert list(do_args["outer_blobs_idx"].ints) == [0]
    assert do_args["net"].n.name == "nbo_if_1"
    assert [op.type for op in do_args["net"].n.op] == [
        "GivenTensorInt64Fill",
        "Add",
        "GivenTensorInt64Fill",
    ]
    ws = _run(nb)
    assert _fetch(ws, x) == 2


def test_if_net_else_replaces_if_net():
    with NetBuilder(_fullname="nbo_else") as nb:
        out = ops.Const(0)
        with ops.IfNet(ops.Const(False)) as if_b:
            ops.Const(1, blob_out=out)
        with ops.Else() as else_b:
            ops.Const(2, blob_out=out)
    assert else_b.name == "nbo_else"
    (net,) = if_b.get()
    assert net.Name() == "nbo_else/nbo_else/if_else_net"
    assert _op_types(net) == ["CreateScope", "CreateScope", "If"]
    if_op = net.Proto().op[2]
    assert [a.name for a in if_op.arg] == ["then_net", "else_net"]
    ws_then = "nbo_else/nbo_else/if_else_net/workspace_if_then"
    ws_else = "nbo_else/nbo_else/if_else_net/workspace_if_else"
    assert list(if_op.output) == [str(out), ws_then, ws_else]
    # the Else builder itself is not a child of the parent
    assert len(nb.get()) == 2
    ws = _run(nb)
    assert _fetch(ws, out) == 2


def test_else_needs_if_net_before():
    with NetBuilder():
        ops.Const(1)
        with pytest.raises(AssertionError, match="Invalid use of Else builder"):
            ops.Else()


def test_control_ops_builder_accepts_only_nets_and_control_builders():
    with NetBuilder():
        with ops.IfNet(ops.Const(True)) as b:
            with pytest.raises(AssertionError, match="Expected Net or NetBuilder with control"):
                b.add(core.execution_step("nbo_bad", []))
            with pytest.raises(AssertionError, match="Stop blobs are not used"):
                b.stop_blob()


def test_if_net():
    with NetBuilder() as nb:
        x0 = ops.Const(0)
        x1 = ops.Const(1)
        x2 = ops.Const(2)
        y0 = ops.Const(0)
        y1 = ops.Const(1)
        y2 = ops.Const(2)

        # basic logic
        first_res = ops.Const(0)
        with ops.IfNet(ops.Const(True)):
            ops.Const(1, blob_out=first_res)
        with ops.Else():
            ops.Const(2, blob_out=first_res)

        second_res = ops.Const(0)
        with ops.IfNet(ops.Const(False)):
            ops.Const(1, blob_out=second_res)
        with ops.Else():
            ops.Const(2, blob_out=second_res)

        # nested and sequential ifs, empty then/else, outer blobs read and written (also
        # an input blob), local blobs
        with ops.IfNet(ops.LT([x0, x1])):
            local_blob = ops.Const(900)
            ops.Add([ops.Const(100), local_blob], [y0])

            gt = ops.GT([x1, x2])
            with ops.IfNet(gt):
                pass  # empty then
            with ops.Else():
                ops.Add([y1, local_blob], [local_blob])
                ops.Add([ops.Const(100), y1], [y1])

            with ops.IfNet(ops.EQ([local_blob, ops.Const(901)])):
                ops.Const(7, blob_out=y2)
                ops.Add([y1, y2], [y2])
        with ops.Else():
            pass  # empty else

    ws = _run(nb)
    assert _fetch(ws, first_res) == 1
    assert _fetch(ws, second_res) == 2
    assert _fetch(ws, y0) == 1000
    assert _fetch(ws, y1) == 101
    assert _fetch(ws, y2) == 108
    assert str(local_blob) not in ws.blobs


def test_while_net():
    with NetBuilder() as nb:
        x = ops.Const(0)
        y = ops.Const(0)
        with ops.WhileNet():
            with ops.Condition():
                ops.Add([x, ops.Const(1)], [x])
                ops.LT([x, ops.Const(7)])
            ops.Add([x, y], [y])
    ws = _run(nb)
    assert _fetch(ws, x) == 7
    assert _fetch(ws, y) == 21


def test_while_net_structure_and_names():
    with NetBuilder(_fullname="nbo_while") as nb:
        x = ops.Const(0)
        with ops.WhileNet() as w:
            with ops.Condition() as c:
                cond = ops.LT([x, ops.Const(3)])
            ops.Add([x, ops.Const(1)], [x])
    assert w.name == "nbo_while"
    assert str(c._cond_blob) == str(cond)
    (while_net,) = w.get()
    assert while_net.Name() == "nbo_while/nbo_while/while_net"
    # cond is not in the outer scope: a ConstantFill(False) creates it first
    assert _op_types(while_net) == ["ConstantFill", "CreateScope", "CreateScope", "While"]
    body_ws = "nbo_while/nbo_while/while_net/workspace_loop_body"
    cond_ws = "nbo_while/nbo_while/while_net/workspace_loop_cond"
    while_op = while_net.Proto().op[3]
    assert list(while_op.input) == [str(cond), str(x), body_ws, cond_ws]
    assert list(while_op.output) == [str(x), body_ws, str(cond), cond_ws]
    args = {a.name: a for a in while_op.arg}
    assert args["loop_net"].n.name.startswith("nbo_while/do_loop_body_net")
    assert args["cond_net"].n.name.startswith("nbo_while/do_loop_condition_net")
    body_do = args["loop_net"].n.op[0]
    assert {a.name: a.i for a in body_do.arg}["copy_external_blobs"] == 1
    ws = _run(nb)
    assert _fetch(ws, x) == 3
    assert _fetch(ws, cond) == False  # noqa: E712  (written through the condition's Do)


def test_while_net_checks():
    with NetBuilder():
        with pytest.raises(AssertionError, match="Use of Condition outside of WhileNet"):
            ops.Condition()
    with pytest.raises(AssertionError, match="Condition builder must be specified"):
        with NetBuilder():
            with ops.WhileNet():
                ops.Const(1)
    with pytest.raises(RuntimeError, match="leave"):
        with NetBuilder():
            with ops.WhileNet():
                ops.Const(1)
                with pytest.raises(AssertionError, match="before the loop's body"):
                    ops.Condition()
                raise RuntimeError("leave")
    with pytest.raises(RuntimeError, match="leave"):
        with NetBuilder():
            with ops.WhileNet():
                ops.Condition()  # registered even if never entered
                with pytest.raises(AssertionError, match="Multiple loop condition builders"):
                    ops.Condition()
                raise RuntimeError("leave")


@pytest.mark.parametrize(
    "body, message",
    [
        (lambda: None, "Invalid loop condition specified"),
        (lambda: ops.Copy([ops.Const(True)], 0), "Invalid condition net"),
        (lambda: ops.Split([ops.Const([1, 2])], 2), "Invalid condition net"),
    ],
    ids=["empty", "no_output", "two_outputs"],
)
def test_while_net_condition_must_end_with_single_output_op(body, message):
    with pytest.raises(RuntimeError, match="leave"):
        with NetBuilder():
            with ops.WhileNet():
                with pytest.raises(AssertionError, match=message):
                    with ops.Condition():
                        body()
                raise RuntimeError("leave")


def test_merge_nets_appends_and_filters_outputs():
    a = Net("nbo_merge_a")
    ya = a.ConstantFill([], "m_y", shape=[], value=1.0)
    a.AddExternalOutput(ya)
    b = Net("nbo_merge_b")
    zb = b.Add(["m_y", "m_y"], "m_z")
    b.AddExternalOutput(zb)
    merged = NetBuilder.merge_nets([a, b], {"m_z"})
    assert merged is a
    assert _op_types(a) == ["ConstantFill", "Add"]
    assert list(a.Proto().external_output) == ["m_z"]
    assert NetBuilder.merge_nets([], set()) is None


# ---- setup builders and reporters -------------------------------------------------------


def test_setup_builders_attach_to_current_net():
    keys = {
        "task_init": (Task.TASK_SETUP, "init"),
        "task_exit": (Task.TASK_SETUP, "exit"),
        "task_instance_init": (Task.TASK_INSTANCE_SETUP, "init"),
        "task_instance_exit": (Task.TASK_INSTANCE_SETUP, "exit"),
        "local_init": (TaskGroup.LOCAL_SETUP, "init"),
        "local_exit": (TaskGroup.LOCAL_SETUP, "exit"),
    }
    for method, (key, kind) in keys.items():
        with NetBuilder(_fullname="nbsetup_" + method):
            net = ops.net()
            with getattr(ops, method)() as setup:
                ops.Const(1)
            assert net.get_attributes(key) == [setup]
            assert setup.type == kind
            assert setup.name == "nbsetup_" + method
        step = setup.setup(None) if kind == "init" else setup.exit(None)
        assert isinstance(step, core.ExecutionStep)
        assert step.Proto().network[0] == "nbsetup_" + method + "_1"
        assert (setup.exit(None) if kind == "init" else setup.setup(None)) is None


def test_task_setup_runs_around_body():
    with Node("nbsetup_node"):
        with Task() as task:
            o6, o7_1, o7_2 = build_setup_exit_task()
    step = task.get_step()
    assert _tree(step)[0] == "nbsetup_node/task"
    assert [s[0] for s in _tree(step)[2]] == [
        "nbsetup_node/task:init",
        "nbsetup_node/task",
        "nbsetup_node/task:exit",
    ]
    workspace.RunPlan(Plan(step))
    assert workspace.FetchBlob(o6.names[0]) == 6
    assert workspace.FetchBlob(o7_1.names[0]) == 7
    assert workspace.FetchBlob(o7_2.names[0]) == 7


def test_multi_instance_task_counters():
    num_instances, num_iters = 10, 15
    with Node("nbmulti_node"):
        with TaskGroup():
            task, total1, total2, total3 = build_multi_instance_counters(num_instances, num_iters)
    workspace.RunPlan(Plan(task.get_step()))
    assert workspace.FetchBlob(total1.names[0]) == num_instances * num_iters
    assert workspace.FetchBlob(total2.names[0]) == num_instances * num_iters**2
    assert workspace.FetchBlob(total3.names[0]) == num_instances * num_iters**2
    assert not workspace.HasBlob("local_counter")
    assert not workspace.HasBlob("task_counter")


def test_task_reporter_attaches_report_step():
    with NetBuilder(_fullname="nbrep_task"):
        net = ops.net()
        with ops.task_reporter(interval_ms=250, name="rep") as rep:
            ops.Const(1)
    (step,) = net.get_attributes(Task.REPORT_STEP)
    assert rep.name == "nbrep_task/rep"
    assert step.Name() == "nbrep_task/rep"
    assert step.Proto().run_every_ms == 250


def test_local_reporter_goes_to_task_group():
    with Node("nbrep_node"):
        with TaskGroup() as tg:
            with NetBuilder(_fullname="nbrep_local"):
                with ops.local_reporter(interval_ms=300):
                    ops.Const(1)
    ((node, step),) = tg._report_steps
    assert node == "nbrep_node"
    assert step.Proto().run_every_ms == 300


def test_task_group_child():
    with NetBuilder(_fullname="nbtg") as nb:
        tg = ops.task_group()
    assert isinstance(tg, TaskGroup)
    assert nb.get() == [tg]
    with pytest.raises(ValueError):
        to_execution_step(nb)


def test_python_op_through_ops():
    seen = []

    def f(inputs, outputs):
        seen.append(inputs[0].data.copy())
        outputs[0].feed(inputs[0].data * 2)

    with NetBuilder() as nb:
        x = ops.Const(np.array([1.0, 2.0], dtype=np.float32))
        y = ops.Python(f)([x], 1)
    ws = _run(nb)
    np.testing.assert_array_equal(_fetch(ws, y), [2.0, 4.0])
    assert len(seen) == 1
