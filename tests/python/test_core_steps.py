"""caffe2.python.core: ExecutionStep, execution_step, Plan (spec runtime.md 5.8-5.10)."""

import numpy as np
import pytest

from caffe2.proto import caffe2_pb2
from caffe2.python import core, workspace
from caffe2.python.core import BlobReference, ExecutionStep, Net, Plan, execution_step


@pytest.fixture(autouse=True)
def _fresh_workspace():
    workspace.ResetWorkspace()
    yield
    workspace.ResetWorkspace()


@pytest.fixture
def fresh_steps(monkeypatch):
    monkeypatch.setattr(ExecutionStep, "_step_names_used", set())


def _net(name, blob=None, value=1.0):
    net = Net(name)
    net.ConstantFill([], blob or name + "_out", shape=[1], value=value)
    return net


# ---- ExecutionStep ------------------------------------------------------------------------------


def test_auto_step_names(fresh_steps):
    assert [ExecutionStep(None).Name() for _ in range(3)] == ["step", "step_1", "step_2"]
    assert ExecutionStep("").Name() == "step_3"


def test_explicit_step_names_are_not_recorded(fresh_steps):
    assert ExecutionStep("step").Name() == "step"
    assert ExecutionStep("step").Name() == "step"  # not de-duplicated
    assert ExecutionStep(None).Name() == "step"  # the explicit one did not reserve it
    assert ExecutionStep(None).Name() == "step_1"


def test_constructor_with_nets():
    a, b = _net("ts_ctor_a"), _net("ts_ctor_b")
    s = ExecutionStep("s", a, num_iter=3)
    assert list(s.Proto().network) == [a.Name()] and s.Proto().num_iter == 3
    s = ExecutionStep("s", [a, b, a])
    assert list(s.Proto().network) == [a.Name(), b.Name()]  # newly added only
    assert s.Nets() == [a, b] and s.get_net(a.Name()) is a
    s = ExecutionStep("s", [a.Proto(), "by_name"])
    assert list(s.Proto().network) == [a.Name(), "by_name"]
    assert s.Nets() == [None, None]
    assert str(s) == "s" and s.Name() == "s"
    assert not ExecutionStep("empty").Proto().HasField("num_iter")


def test_mutators_and_used_check():
    s = ExecutionStep("ts_mut")
    s.SetIter(4)
    s.SetCreateWorkspace(True)
    s.SetNumConcurrentInstances(2)
    s.SetOnlyOnce(True)
    s.SetShouldStopBlob(BlobReference("stop"))
    s.RunEveryMillis(50)
    s.AddNet(_net("ts_mut_net"))
    p = s.Proto()
    assert (p.num_iter, p.create_workspace, p.num_concurrent_instances) == (4, True, 2)
    assert (p.only_once, p.should_stop_blob, p.run_every_ms) == (True, "stop", 50)
    with pytest.raises(AssertionError, match="expects BlobReference here"):
        s.SetShouldStopBlob("stop")
    Plan("ts_mut_plan").AddStep(s)
    msg = "Cannot mutate a step that has already been added to a plan/step."
    for call in (
        lambda: s.SetIter(1),
        lambda: s.SetCreateWorkspace(False),
        lambda: s.SetNumConcurrentInstances(1),
        lambda: s.SetOnlyOnce(False),
        lambda: s.SetShouldStopBlob(BlobReference("x")),
        lambda: s.SetReportNet(_net("ts_mut_r"), 1),
        lambda: s.AddNet(_net("ts_mut_n2")),
        lambda: s.AddSubstep(ExecutionStep("x")),
        lambda: s.SetConcurrentSubsteps(True),
    ):
        with pytest.raises(AssertionError, match=msg):
            call()
    s.RunEveryMillis(10)  # no used-check
    assert s.Proto().run_every_ms == 10


def test_substeps():
    a, b = _net("ts_sub_a"), _net("ts_sub_b")
    inner = ExecutionStep("inner", a)
    outer = ExecutionStep("outer")
    assert outer.AddSubstep(inner) is outer
    assert inner._is_used
    empty = ExecutionStep("empty")
    outer.AddSubstep(empty)  # silently dropped
    assert empty._is_used
    assert len(outer.Proto().substep) == 1 and outer.Substeps() == [inner]
    raw = caffe2_pb2.ExecutionStep(name="raw", network=["n"])
    outer.AddSubstep(raw)
    assert [x.name for x in outer.Proto().substep] == ["inner", "raw"]
    assert outer.Substeps() == [inner]
    assert outer.HasSubsteps() and not outer.HasNets()
    assert outer.Nets() == [a]
    # the substep proto is a copy
    inner.Proto().num_iter = 99
    assert outer.Proto().substep[0].num_iter != 99
    with pytest.raises(AssertionError, match="Cannot have both network and substeps"):
        outer.AddNet(b)
    withnet = ExecutionStep("withnet", b)
    with pytest.raises(AssertionError, match="Cannot have both network and substeps"):
        withnet.AddSubstep(ExecutionStep("x", a))
    with pytest.raises(AssertionError, match="Cannot have both network and substeps"):
        withnet.SetConcurrentSubsteps(True)


def test_add_net_repeats_and_name_clash():
    a = _net("ts_rep")
    s = ExecutionStep("s")
    assert s.AddNet(a) is s
    s.AddNet(a)
    assert list(s.Proto().network) == [a.Name(), a.Name()]
    with pytest.raises(AssertionError):
        s.AddNet(a.Proto())
    other = Net("ts_rep_other")
    other._net.name = a.Name()
    with pytest.raises(AssertionError, match="Different nets with same name"):
        s.AddNet(other)


def test_report_net_and_attributes():
    a, r = _net("ts_rep_a"), _net("ts_rep_r")
    a.add_attribute("k", 1)
    r.add_attribute("k", 2)
    s = ExecutionStep("s", a)
    s.SetReportNet(r, 5)
    assert s.Proto().report_net == r.Name() and s.Proto().report_interval == 5
    assert list(s.Proto().network) == [a.Name()]
    assert s.get_all_attributes("k") == [1, 2]
    outer = ExecutionStep("outer").AddSubstep(s)
    assert outer.get_all_attributes("k") == [1, 2]


# ---- execution_step and friends -----------------------------------------------------------------


def test_execution_step_options():
    a = _net("ts_opt")
    s = execution_step("ts_opt_step", a)
    assert s.Proto().num_iter == 1 and list(s.Proto().network) == [a.Name()]
    s = execution_step(
        "x",
        [a],
        should_stop_blob=BlobReference("stop"),
        only_once=True,
        num_concurrent_instances=3,
        create_workspace=True,
        run_every_ms=7,
    )
    p = s.Proto()
    assert not p.HasField("num_iter") and p.should_stop_blob == "stop"
    assert p.only_once and p.num_concurrent_instances == 3 and p.create_workspace
    assert p.run_every_ms == 7
    s = execution_step("x", [], create_workspace=False, run_every_ms=0)
    assert not s.Proto().HasField("create_workspace") and not s.Proto().HasField("run_every_ms")
    assert not s.HasNets() and not s.HasSubsteps()
    with pytest.raises(AssertionError, match="Cannot set both should_stop_blob and num_iter"):
        execution_step("x", a, num_iter=2, should_stop_blob=BlobReference("s"))
    with pytest.raises(ValueError, match="steps_or_nets must be a step, a net"):
        execution_step("x", "not a step")
    with pytest.raises(AssertionError):
        execution_step("x", a, report_net=a)


def test_execution_step_with_lists(fresh_steps):
    a, b = _net("ts_list_a"), _net("ts_list_b")
    s = execution_step("nets", [a, b, a])
    assert list(s.Proto().network) == [a.Name(), b.Name(), a.Name()]
    inner = execution_step("inner", b)
    s = execution_step("mixed", [a, inner, [], execution_step("empty", [])])
    assert [x.name for x in s.Proto().substep] == ["step", "inner"]
    assert s.Proto().substep[0].network == [a.Name()]
    s = execution_step("conc", [inner], concurrent_substeps=True)
    assert s.Proto().concurrent_substeps


def test_scoped_and_to_execution_step(fresh_steps):
    a = _net("ts_to")
    with core.NameScope("sc"):
        assert core.scoped_execution_step("name", a).Name() == "sc/name"
        assert core.scoped_execution_step(None, a).Name() == "step"
    s = ExecutionStep("keep")
    assert core.to_execution_step(s) is s
    assert core.to_execution_step(a).Name() == "step_1"  # a Net has no .name
    assert core.to_execution_step(a, "given").Name() == "given"


def test_to_execution_step_of_net_builder(fresh_steps):
    from caffe2.python.net_builder import NetBuilder, ops

    with NetBuilder("ts_builder") as nb:
        ops.Const(1.0)
    step = core.to_execution_step(nb)
    assert step.Name() == "ts_builder"
    assert step.Proto().num_iter == 1 and len(step.Proto().network) == 1

    with NetBuilder("ts_builder_stop") as nb2:
        ops.stop()
    step = core.to_execution_step(nb2)
    assert step.Proto().should_stop_blob and not step.Proto().HasField("num_iter")


def test_add_nets_in_order():
    a, b, c, r = (_net(f"ts_order_{x}") for x in "abcr")
    s1 = execution_step("s1", [b, a])
    s2 = execution_step("s2", [c, a])
    top = execution_step("top", [s1, s2])
    top_r = ExecutionStep("top_r")
    top_r.SetReportNet(r, 1)
    top_r.AddSubstep(top)
    assert core.add_nets_in_order(top_r, []) == [b.Name(), a.Name(), c.Name(), r.Name()]
    lst = ["x"]
    assert core.add_nets_in_order(s1, lst) is lst and lst == ["x", b.Name(), a.Name()]


# ---- Plan ---------------------------------------------------------------------------------------


def test_plan_construction():
    a = _net("ts_plan_a")
    s = execution_step("ts_plan_step", a)
    p = Plan(s)
    assert str(p) == "ts_plan_step" and p.Proto().name == "ts_plan_step"
    assert p.Steps() == [s] and p.Nets() == [a]
    assert [n.name for n in p.Proto().network] == [a.Name()]
    assert s._is_used
    assert Plan("named").Proto().name == "named"
    with pytest.raises(ValueError, match="name_or_step must be a string or ExecutionStep"):
        Plan(3)
    with pytest.raises(AssertionError):
        Plan("x").AddStep(a)


def test_plan_ignores_empty_steps_and_snapshots_nets():
    a = _net("ts_snap")
    p = Plan("ts_snap_plan")
    empty = ExecutionStep("empty")
    p.AddStep(empty)
    assert empty._is_used and p.Steps() == [] and len(p.Proto().execution_step) == 0
    p.AddStep(execution_step("s1", a))
    a.ConstantFill([], "later", shape=[1])
    p.AddStep(execution_step("s2", a))
    assert len(p.Proto().network) == 1 and len(p.Proto().network[0].op) == 1
    assert [x.name for x in p.Proto().execution_step] == ["s1", "s2"]


def test_plan_requires_net_objects():
    s = ExecutionStep("by_name", ["only_a_name"])
    with pytest.raises(AssertionError):
        Plan("ts_byname").AddStep(s)


def test_plan_attributes():
    a, b = _net("ts_pattr_a"), _net("ts_pattr_b")
    a.add_attribute("k", "x")
    b.add_attribute("k", "y")
    p = Plan(execution_step("s", [a, b]))
    assert p.get_all_attributes("k") == ["x", "y"]


def test_create_plan_from_proto_correctly():
    a, b = _net("ts_fp_a"), _net("ts_fp_b")
    stop = BlobReference("ts_fp_stop")
    inner = execution_step("inner", [b], should_stop_blob=stop, only_once=True)
    top = execution_step("top", [execution_step("first", [a], num_iter=3), inner])
    plan = Plan("ts_fp_plan")
    plan.AddStep(top)
    rebuilt = Plan.create_from_proto(plan.Proto())
    assert rebuilt.Proto().name == "ts_fp_plan"
    # the copied proto keeps its step and gets the rebuilt one appended
    assert len(rebuilt.Proto().execution_step) == 2
    assert len(rebuilt.Steps()) == 1
    names = [n.Name() for n in rebuilt.Nets()]
    assert names[0].startswith(a.Name() + "_") and names[1].startswith(b.Name() + "_")
    step = rebuilt.Steps()[0]
    assert step.Name() == "top"
    first, second = step.Substeps()
    assert first.Proto().num_iter == 3 and list(first.Proto().network) == [names[0]]
    assert second.Proto().should_stop_blob == "ts_fp_stop" and second.Proto().only_once
    assert not second.Proto().HasField("num_iter")
    for orig, new in zip(plan.Nets(), rebuilt.Nets(), strict=True):
        assert orig.Proto().op == new.Proto().op


# ---- running plans ------------------------------------------------------------------------------


def test_plan_runs_end_to_end():
    init = Net("ts_run_init")
    init.ConstantFill([], "acc", shape=[1], value=0.0)
    init.ConstantFill([], "one", shape=[1], value=1.0)
    body = Net("ts_run_body")
    body.Add(["acc", "one"], "acc")
    plan = Plan("ts_run_plan")
    plan.AddStep(execution_step("init", init))
    plan.AddStep(execution_step("loop", [body, body], num_iter=3))
    workspace.RunPlan(plan)
    np.testing.assert_array_equal(workspace.FetchBlob("acc"), [6.0])


def test_run_plan_with_stop_blob():
    init = Net("ts_stop_init")
    init.ConstantFill([], "cnt", shape=[1], value=0.0)
    init.ConstantFill([], "one", shape=[1], value=1.0)
    init.ConstantFill([], "lim", shape=[1], value=4.0)
    init.Const(False, blob_out="stop")
    body = Net("ts_stop_body")
    body.Add(["cnt", "one"], "cnt")
    body.GE(["cnt", "lim"], "stop")
    step = execution_step(
        "top",
        [
            execution_step("init", init),
            execution_step("loop", body, should_stop_blob=BlobReference("stop")),
        ],
    )
    workspace.RunPlan(step)
    np.testing.assert_array_equal(workspace.FetchBlob("cnt"), [4.0])
