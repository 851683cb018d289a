"""caffe2.python.control_ops_util: outer/local blobs of a branch, the If and While ops built
around Do (spec runtime.md 9), and runs of hand-built If/While nets."""

from __future__ import annotations

import pytest

from caffe2.python import core, workspace
from caffe2.python.control_ops_util import add_if_op, add_while_op, get_external_blob_names


@pytest.fixture(autouse=True)
def _reset_workspace():
    workspace.ResetWorkspace()
    yield
    workspace.ResetWorkspace()


def _args(op):
    return {a.name: a for a in op.arg}


def _feed_int(name, value):
    import numpy as np

    workspace.FeedBlob(name, np.array(value, dtype=np.int64))


def _feed_bool(name, value):
    import numpy as np

    workspace.FeedBlob(name, np.array(value, dtype=bool))


def test_get_external_blob_names():
    net = core.Net("cou_ext")
    net.Add(["a", "b"], "c")  # a, b read first
    net.Add(["c", "a"], "a")  # c is local; a written
    net.Copy(["a"], "tmp")
    ins, outs = get_external_blob_names(net, {"a", "b", "x"})
    assert ins == {"a", "b"}
    assert outs == {"a"}
    with pytest.raises(AssertionError, match="Input blob b is undefined"):
        get_external_blob_names(net, {"a"})


def test_add_if_op_then_only_structure():
    then_net = core.Net("cou_then")
    then_net.Add(["x", "one"], "x")
    then_net.ConstantFill([], "local", shape=[], value=1.0)
    if_net = core.Net("cou_if")
    add_if_op(if_net, core.BlobReference("cond"), {"x", "one", "cond"}, then_net)
    ops = if_net.Proto().op
    assert [op.type for op in ops] == ["CreateScope", "If"]
    ws = "cou_if/workspace_if_then"
    assert list(ops[0].output) == [ws]
    assert list(ops[1].input) == ["cond", "one", "x", ws]
    assert list(ops[1].output) == ["x", ws]
    assert list(if_net.Proto().external_output) == ["x", ws]
    do_net = _args(ops[1])["then_net"].n
    assert do_net.name.startswith("do_then_net")
    (do_op,) = do_net.op
    assert do_op.type == "Do"
    assert list(do_op.input) == ["one", "x", ws]
    assert list(do_op.output) == ["x", ws]
    do_args = _args(do_op)
    assert do_args["net"].n == then_net.Proto()
    assert [s.decode() for s in do_args["inner_blobs"].strings] == ["one", "x"]
    assert list(do_args["outer_blobs_idx"].ints) == [0, 1]
    assert list(do_net.external_output) == ["x", ws]


def test_add_if_op_with_else_and_name_scope():
    then_net = core.Net("cou_then2")
    then_net.Copy(["a"], "out")
    else_net = core.Net("cou_else2")
    else_net.Copy(["b"], "out")
    if_net = core.Net("cou_if2")
    with core.NameScope("sc"):
        add_if_op(if_net, core.BlobReference("c"), {"a", "b", "c", "out"}, then_net, else_net)
    ops = if_net.Proto().op
    assert [op.type for op in ops] == ["CreateScope", "CreateScope", "If"]
    then_ws = "sc/cou_if2/workspace_if_then"
    else_ws = "sc/cou_if2/workspace_if_else"
    assert list(ops[2].input) == ["c", "a", "b", then_ws, else_ws]
    assert list(ops[2].output) == ["out", then_ws, else_ws]
    args = _args(ops[2])
    else_do = args["else_net"].n.op[0]
    assert list(else_do.input) == ["b", else_ws]
    assert list(else_do.output) == ["out", else_ws]
    # another If in the same net gets fresh workspace blobs
    add_if_op(if_net, core.BlobReference("c"), {"a", "b", "c", "out"}, then_net)
    assert list(if_net.Proto().op[3].output) == ["cou_if2/workspace_if_then"]
    add_if_op(if_net, core.BlobReference("c"), {"a", "b", "c", "out"}, then_net)
    assert list(if_net.Proto().op[5].output) == ["cou_if2/workspace_if_then_auto_0"]


def test_if_op_runs_chosen_branch_in_inner_workspace():
    then_net = core.Net("cou_run_then")
    then_net.Add(["x", "one"], "x")
    then_net.Add(["x", "one"], "then_local")
    else_net = core.Net("cou_run_else")
    else_net.Sub(["x", "one"], "x")
    if_net = core.Net("cou_run_if")
    add_if_op(if_net, core.BlobReference("cond"), {"x", "one", "cond"}, then_net, else_net)
    _feed_int("x", 5)
    _feed_int("one", 1)
    for cond, expected in [(True, 6), (False, 5), (False, 4)]:
        _feed_bool("cond", cond)
        workspace.RunNetOnce(if_net)
        assert workspace.FetchBlob("x") == expected
    assert not workspace.HasBlob("then_local")


def test_add_while_op_structure():
    body = core.Net("cou_wbody")
    body.Add(["i", "one"], "i")
    body.Add(["total", "i"], "total")
    cond_net = core.Net("cou_wcond")
    cond_net.LT(["i", "n"], "go")
    while_net = core.Net("cou_while")
    scope = {"i", "one", "total", "n"}
    add_while_op(while_net, core.BlobReference("go"), scope, body, cond_net)
    ops = while_net.Proto().op
    # go is not in the scope: created (False) before the While op
    assert [op.type for op in ops] == ["ConstantFill", "CreateScope", "CreateScope", "While"]
    assert list(ops[0].output) == ["go"]
    assert _args(ops[0])["value"].i == 0
    body_ws = "cou_while/workspace_loop_body"
    cond_ws = "cou_while/workspace_loop_cond"
    assert list(ops[1].output) == [body_ws]
    assert list(ops[2].output) == [cond_ws]
    w = ops[3]
    assert list(w.input) == ["go", "i", "one", "total", body_ws, "n", cond_ws]
    assert list(w.output) == ["i", "total", body_ws, "go", cond_ws]
    args = _args(w)
    body_do = args["loop_net"].n.op[0]
    assert list(body_do.input) == ["i", "one", "total", body_ws]
    assert list(body_do.output) == ["i", "total", body_ws]
    assert _args(body_do)["copy_external_blobs"].i == 1
    cond_do = args["cond_net"].n.op[0]
    assert list(cond_do.input) == ["i", "n", cond_ws]
    assert list(cond_do.output) == ["go", cond_ws]
    assert "copy_external_blobs" not in _args(cond_do)
    assert list(while_net.Proto().external_output) == list(w.output)


def test_add_while_op_condition_must_write_cond_blob():
    body = core.Net("cou_wbody2")
    body.Add(["i", "one"], "i")
    cond_net = core.Net("cou_wcond2")
    cond_net.LT(["i", "one"], "other")
    with pytest.raises(AssertionError, match="Condition net does not write into condition"):
        add_while_op(core.Net("cou_while2"), core.BlobReference("go"), {"i", "one"}, body, cond_net)


def test_while_op_runs():
    body = core.Net("cou_run_wbody")
    body.Add(["i", "one"], "i")
    body.Add(["total", "i"], "total")
    cond_net = core.Net("cou_run_wcond")
    cond_net.LT(["i", "n"], "go")
    while_net = core.Net("cou_run_while")
    add_while_op(while_net, core.BlobReference("go"), {"i", "one", "total", "n"}, body, cond_net)
    _feed_int("i", 0)
    _feed_int("one", 1)
    _feed_int("total", 0)
    _feed_int("n", 4)
    workspace.RunNetOnce(while_net)
    assert workspace.FetchBlob("i") == 4
    assert workspace.FetchBlob("total") == 1 + 2 + 3 + 4


def test_while_op_without_condition_net_uses_cond_blob():
    body = core.Net("cou_run_wbody3")
    body.Add(["i", "one"], "i")
    body.LT(["i", "n"], "go")
    while_net = core.Net("cou_run_while3")
    add_while_op(while_net, core.BlobReference("go"), {"i", "one", "n", "go"}, body)
    assert [op.type for op in while_net.Proto().op] == ["CreateScope", "While"]
    _feed_int("i", 0)
    _feed_int("one", 1)
    _feed_int("n", 3)
    _feed_bool("go", True)
    workspace.RunNetOnce(while_net)
    assert workspace.FetchBlob("i") == 3
