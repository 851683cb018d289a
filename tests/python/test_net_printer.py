"""caffe2.python.net_printer: the text of nets, steps, plans, tasks and jobs, and the static
blob analysis (spec runtime.md 12)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pyhelpers import build_counting_loop, build_setup_exit_task

from caffe2.proto import caffe2_pb2
from caffe2.python import core, net_printer, workspace
from caffe2.python.net_builder import NetBuilder, ops
from caffe2.python.task import Node, Task, TaskGroup, WorkspaceType, final_output


def _lines(*lines):
    return "\n".join(lines)


# ---- ops and nets ---------------------------------------------------------------------------


def test_net_text():
    net = core.Net("npt_net")
    net.ConstantFill([], "x", shape=[2], value=1.5)
    net.Add(["x", "x"], "y", broadcast=1)
    net.Split(["y"], ["a", "b"], split=[1, 1])
    net.Copy(["y"], "z", device_option=core.DeviceOption(0, 0, node_name="n1"))
    net.Print(["z"], [])
    assert net_printer.to_string(net) == _lines(
        "# net: npt_net",
        "x = ConstantFill(shape=[2], value=1.5)",
        "y = Add(x, x, broadcast=1)",
        "a, b = Split(y, split=[1, 1])",
        "z = Copy(y, device_option=DeviceOption(0, 0, 'n1'))",
        "Print(z)",
    )
    assert net_printer.to_string(net.Proto()) == net_printer.to_string(net)
    assert net_printer.to_string(net.Proto().op[0]) == "x = ConstantFill(shape=[2], value=1.5)"


def test_argument_values():
    op = core.CreateOperator(
        "Foo",
        ["in"],
        ["out"],
        f=0.25,
        fs=[0.5, 2.0],
        s="text",
        b=b"raw",
        ss=["a", "b"],
        long="x" * 70,
        empty=[],
    )
    assert net_printer.to_string(op) == (
        "out = Foo(in, f=0.25, fs=[0.5, 2.0], s='text', b='raw', ss=['a', 'b'], "
        "long='" + "x" * 64 + "'...<+len=6>, empty=[])"
    )


def test_nested_net_arguments_are_printed_inside():
    inner = caffe2_pb2.NetDef()
    inner.name = "npt_inner"
    inner.op.extend([core.CreateOperator("Copy", ["a"], ["b"])])
    op = core.CreateOperator("If", ["c"], [], then_net=inner)
    assert net_printer.to_string(op) == _lines(
        "If(c, then_net=<net npt_inner>)",
        "with arg: then_net:",
        "    # net: npt_inner",
        "    b = Copy(a)",
    )


def test_factor_prefixes():
    net = core.Net("npt_factor")
    net.Add(["pre/a", "pre/b"], ["out/x"])
    net.Split(["in"], ["out/p", "out/q"])
    assert net_printer.to_string(net, factor_prefixes=True) == _lines(
        "# net: npt_factor",
        "out/x = Add(pre/[a, b])",
        "out/[p, q] = Split(in)",
    )


def test_unsupported_type():
    with pytest.raises(TypeError, match="unsupported object type"):
        net_printer.to_string(42)
    assert net_printer.to_string(None) == ""


# ---- steps and plans ------------------------------------------------------------------------


def test_builder_loop_text():
    with NetBuilder(_fullname="npt_loop") as nb:
        x = ops.Const(3, blob_out="npt_x")
        with ops.loop():
            ops.stop_if(ops.EQ([x, ops.Const(0, blob_out="npt_zero")]))
            ops.Sub([x, ops.Const(1, blob_out="npt_one")], [x])
    assert net_printer.to_string(core.to_execution_step(nb)) == _lines(
        "# net: npt_loop",
        "npt_x = GivenTensorInt64Fill(shape=[], values=[3])",
        "with loop():",
        "    # net: npt_loop_1",
        "    npt_zero = GivenTensorInt64Fill(shape=[], values=[0])",
        "    npt_loop_1/EQ = EQ(npt_x, npt_zero)",
        "    npt_loop_1/stop_blob = ConstantFill(dtype=5, value=0)",
        "    npt_loop_1/stop_blob = Or(npt_loop_1/stop_blob, npt_loop_1/EQ)",
        "    yield stop_if(npt_loop_1/stop_blob)",
        "    # net: npt_loop_2",
        "    npt_one = GivenTensorInt64Fill(shape=[], values=[1])",
        "    npt_x = Sub(npt_x, npt_one)",
        "    yield stop_if(npt_loop_1/stop_blob)",
    )


def _net(name):
    net = core.Net(name)
    net.ConstantFill([], name + "_out", shape=[], value=1.0)
    return net


def test_step_contexts():
    a, b, r = _net("npt_sa"), _net("npt_sb"), _net("npt_sr")
    private = core.execution_step("npt_private", a, create_workspace=True)
    shared = core.execution_step("npt_shared", b)
    reporter = core.execution_step("npt_rep", r, run_every_ms=100)
    par = core.execution_step("npt_par", [private, shared, reporter], concurrent_substeps=True)
    rep_line = "    with reporter('npt_rep', interval_ms=100):"
    assert net_printer.to_string(par) == _lines(
        "with parallel():",
        "    with workspace('npt_private'):",
        "        # net: npt_sa",
        "        npt_sa_out = ConstantFill(shape=[], value=1.0)",
        "    with step('npt_shared'):",
        "        # net: npt_sb",
        "        npt_sb_out = ConstantFill(shape=[], value=1.0)",
        rep_line,
        "        # net: npt_sr",
        "        npt_sr_out = ConstantFill(shape=[], value=1.0)",
    )
    assert net_printer.to_string(core.execution_step("npt_iter", a, num_iter=3)) == _lines(
        "with loop(3):",
        "    # net: npt_sa",
        "    npt_sa_out = ConstantFill(shape=[], value=1.0)",
    )
    inst = core.execution_step("npt_inst", [private, shared], num_concurrent_instances=4)
    assert net_printer.to_string(inst).splitlines()[:2] == [
        "with parallel(num_instances=4):",
        "    with workspace('npt_private'):",
    ]
    once = core.execution_step(
        "npt_once", a, should_stop_blob=core.BlobReference("npt_sa_out"), only_once=True
    )
    assert net_printer.to_string(once) == _lines(
        "with run_once():",
        "    # net: npt_sa",
        "    npt_sa_out = ConstantFill(shape=[], value=1.0)",
        "    yield stop_if(npt_sa_out)",
    )
    # a sequential step has no block of its own
    assert net_printer.to_string(core.execution_step("npt_seq", [a, b])) == _lines(
        "# net: npt_sa",
        "npt_sa_out = ConstantFill(shape=[], value=1.0)",
        "# net: npt_sb",
        "npt_sb_out = ConstantFill(shape=[], value=1.0)",
    )


def test_report_net_and_empty_block():
    a, r = _net("npt_ra"), _net("npt_rr")
    step = core.execution_step("npt_report", a, report_net=r, report_interval=2)
    assert net_printer.to_string(step) == _lines(
        "with run_once():",
        "    with report_net(2):",
        "        # net: npt_rr",
        "        npt_rr_out = ConstantFill(shape=[], value=1.0)",
        "    # net: npt_ra",
        "    npt_ra_out = ConstantFill(shape=[], value=1.0)",
    )
    empty = core.Net("npt_empty")
    par = core.execution_step(
        "npt_par_empty",
        [core.execution_step("e1", empty), core.execution_step("e2", a)],
        concurrent_substeps=True,
    )
    assert net_printer.to_string(par).splitlines()[:3] == [
        "with parallel():",
        "    with step('e1'):",
        "        # net: npt_empty",
    ]
    text = net_printer.Text()
    with text.context("block"):
        pass
    assert str(text) == _lines("with block:", "    pass")


def test_plan_text():
    a = _net("npt_pa")
    plan = core.Plan("npt_plan")
    plan.AddStep(core.execution_step("npt_s1", a))
    plan.AddStep(core.execution_step("npt_s2", a, num_iter=2))
    assert net_printer.to_string(plan) == _lines(
        "with Plan('npt_plan'):",
        "    with step('npt_s1'):",
        "        # net: npt_pa",
        "        npt_pa_out = ConstantFill(shape=[], value=1.0)",
        "    with step('npt_s2'):",
        "        with loop(2):",
        "            # net: npt_pa",
        "            npt_pa_out = ConstantFill(shape=[], value=1.0)",
    )


# ---- tasks, groups, jobs --------------------------------------------------------------------


def test_task_text():
    with Node("npt_node"):
        with Task() as task:
            with ops.task_init():
                ops.Const(1, blob_out="npt_one")
            final_output(ops.Add(["npt_one", "npt_one"], "npt_two"))
    assert net_printer.to_string(task) == _lines(
        "with Task(node=npt_node, name=npt_node/task, outputs=Output[npt_two]):",
        "    # net: npt_node/task_1",
        "    npt_one = GivenTensorInt64Fill(shape=[], values=[1])",
        "    # net: npt_node/task",
        "    npt_two = Add(npt_one, npt_one)",
    )


def test_task_group_text():
    with Node("npt_tg_node"):
        with TaskGroup(workspace_type=WorkspaceType.PRIVATE) as tg:
            with Task(name="a"):
                ops.Const(1, blob_out="npt_tg_a")
            with Task(name="b"):
                ops.Const(2, blob_out="npt_tg_b")
    text = net_printer.to_string(tg)
    assert text.splitlines()[:4] == [
        "with TaskGroup():",
        "    with Task(node=npt_tg_node, name=npt_tg_node/grouped_by_node, "
        "outputs=Output[npt_tg_node/a:output/ConstantFill:0], "
        "Output[npt_tg_node/b:output/ConstantFill:0]):",
        "        with parallel():",
        "            with workspace('npt_tg_node/a'):",
    ]
    assert "            with workspace('npt_tg_node/b'):" in text.splitlines()


def _job(init_group, epoch_group, stop_conditions=(), download_group=None, exit_group=None):
    """A Job-like object: net_printer only reads these attributes."""
    return SimpleNamespace(
        init_group=init_group,
        epoch_group=epoch_group,
        stop_conditions=list(stop_conditions),
        download_group=download_group,
        exit_group=exit_group,
    )


def test_job_text():
    with Node("npt_job_node"):
        with TaskGroup() as init_group:
            with Task(name="init"):
                ops.Const(1, blob_out="npt_job_x")
        with TaskGroup() as epoch_group:
            with Task(name="epoch"):
                stop = final_output(ops.Const(True, blob_out="npt_job_stop"))
    text = net_printer.to_string(_job(init_group, epoch_group, [stop], TaskGroup()))
    lines = text.splitlines()
    assert lines[0] == "with Job.current().init_group:"
    assert "with Job.current().epoch_group:" in lines
    i = lines.index("with Job.current().stop_conditions:")
    assert lines[i + 1] == "    Output[npt_job_stop]"
    assert lines[i + 2 :] == ["with Job.current().download_group:", "    pass"]


# ---- analyze --------------------------------------------------------------------------------


def _example_loop():
    with Task():
        build_counting_loop()


def _example_task():
    with Task():
        build_setup_exit_task()


def _example_job():
    with Node("npt_an_node"):
        with TaskGroup(WorkspaceType.GLOBAL) as init_group:
            _example_loop()
        with TaskGroup() as epoch_group:
            _example_task()
    return _job(init_group, epoch_group)


def test_print_example_job():
    assert len(net_printer.to_string(_example_job())) > 0


def test_analyze_valid_job():
    net_printer.analyze(_example_job())


def test_analyze_ignores_distributed_ctx_init_blobs():
    with TaskGroup() as tg:
        with Task():
            ops.Add(["distributed_ctx_init_a", "distributed_ctx_init_b"])
    net_printer.analyze(tg)


def test_analyze_undefined_blob():
    with TaskGroup() as tg:
        with Task():
            ops.Add(["npt_undef_a", "npt_undef_b"])
    with pytest.raises(AssertionError, match="Blob undefined: npt_undef_a"):
        net_printer.analyze(tg)


def test_analyze_multiple_definition():
    with TaskGroup() as tg:
        with Task(workspace_type=WorkspaceType.GLOBAL):
            ops.Add([ops.Const(0), ops.Const(1)], "npt_out1")
        with Task(workspace_type=WorkspaceType.GLOBAL):
            ops.Add([ops.Const(2), ops.Const(3)], "npt_out1")
    with pytest.raises(AssertionError, match="Blobs created by multiple parallel steps: npt_out1"):
        net_printer.analyze(tg)


def test_analyze_steps_and_workspaces():
    make = core.Net("npt_an_make")
    make.ConstantFill([], "npt_an_v", shape=[], value=1.0)
    use = core.Net("npt_an_use")
    use.Copy(["npt_an_v"], "npt_an_w")
    net_printer.analyze(core.execution_step("npt_an_ok", [make, use]))
    with pytest.raises(AssertionError, match="Blob undefined: npt_an_v"):
        net_printer.analyze(use)
    # blobs of a step with its own workspace are gone after it
    private = core.execution_step("npt_an_priv", make, create_workspace=True)
    with pytest.raises(AssertionError, match="Blob undefined: npt_an_v"):
        net_printer.analyze(core.execution_step("npt_an_bad", [private, use]))
    # concurrent siblings do not see each other's blobs
    par = core.execution_step(
        "npt_an_par",
        [core.execution_step("m", make), core.execution_step("u", use)],
        concurrent_substeps=True,
    )
    with pytest.raises(AssertionError, match="Blob undefined: npt_an_v"):
        net_printer.analyze(par)
    # the stop blob must be defined
    stop = core.execution_step(
        "npt_an_stop", make, should_stop_blob=core.BlobReference("npt_an_nostop")
    )
    with pytest.raises(AssertionError, match="Blob undefined: npt_an_nostop"):
        net_printer.analyze(stop)
    plan = core.Plan("npt_an_plan")
    plan.AddStep(core.execution_step("p1", make))
    plan.AddStep(core.execution_step("p2", use))
    net_printer.analyze(plan)


# ---- debug_net ------------------------------------------------------------------------------


def test_debug_net_logs_each_op():
    workspace.ResetWorkspace()
    net = core.Net("npt_debug")
    net.ConstantFill([], "npt_d", shape=[], value=2.0)
    net.Add(["npt_d", "npt_d"], "npt_e")
    dbg = net_printer.debug_net(net)
    assert dbg.Name().startswith("npt_debug")
    assert [op.type for op in dbg.Proto().op] == [
        "GivenTensorStringFill",
        "Print",
        "ConstantFill",
        "GivenTensorStringFill",
        "Print",
        "Add",
    ]
    values = dbg.Proto().op[3].arg
    assert {a.name: list(a.strings) for a in values}["values"] == [b"npt_e = Add(npt_d, npt_d)"]
    workspace.RunNetOnce(dbg)
    assert workspace.FetchBlob("npt_e") == 4.0
    workspace.ResetWorkspace()
