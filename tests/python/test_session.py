"""LocalSession specifics: the shared compile cache, pre-created outputs, the workspace_type
quirk, the current workspace during a run, and the worked examples of spec 14."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pyhelpers import build_multi_instance_counters, build_setup_exit_task

from caffe2.python import core, workspace
from caffe2.python.net_builder import ops
from caffe2.python.session import (
    CompiledRunnable,
    LocalSession,
    Session,
    TaskError,
)
from caffe2.python.task import Node, Task, TaskGroup, WorkspaceType, final_output

_ids = itertools.count()


def _uid(prefix):
    return f"{prefix}_{next(_ids)}"


def _fill_net(prefix, blob, value=1.0):
    net = core.Net(_uid(prefix))
    net.ConstantFill([], blob, shape=[], value=value)
    return net


@pytest.fixture
def ws():
    return workspace.C.Workspace()


# ---- compile cache -----------------------------------------------------------------------------


def test_compile_cache_is_one_dict_shared_by_all_sessions_and_classes(ws):
    assert "_compiled_cache" not in vars(LocalSession)
    step = core.execution_step(_uid("ls_cache"), _fill_net("ls_cache", "ls_cache_x"))
    compiled = LocalSession.compile(step)
    assert Session._compiled_cache[step] is compiled
    assert compiled.session_class is LocalSession
    # later arguments are ignored on a hit
    assert LocalSession.compile(step, workspace_type=WorkspaceType.PRIVATE) is compiled
    # two sessions on two workspaces run the same compiled plan
    other = workspace.C.Workspace()
    LocalSession(ws).run(step)
    LocalSession(other).run(step)
    assert ws.has_blob("ls_cache_x") and other.has_blob("ls_cache_x")


def test_compiled_runnable_of_another_session_class_is_refused():
    class OtherSession(Session):
        @classmethod
        def _compile_task_group(cls, task_group, setup_net_list=None):
            return ("other", task_group)

    step = core.execution_step(_uid("ls_other"), _fill_net("ls_other", "ls_other_x"))
    compiled = LocalSession.compile(step)
    with pytest.raises(AssertionError, match="Need: OtherSession, got: LocalSession"):
        OtherSession.compile(compiled)
    with pytest.raises(AssertionError, match="compiled for different session type"):
        OtherSession.compile(step)

    class MyLocal(LocalSession):
        pass

    assert MyLocal.compile(step) is compiled  # same compiler: the cache entry fits


def test_list_of_nets_is_compiled_on_every_run(ws):
    net = _fill_net("ls_list", "ls_list_x", 2.0)
    s = LocalSession(ws)
    before = set(ws.blobs)
    s.run([net])
    s.run([net])
    new = set(ws.blobs) - before
    outputs = sorted(n for n in new if ":output" in n)
    assert len(outputs) == 2 and all(n.startswith("local/runnable:output") for n in outputs)
    assert ws.blobs["ls_list_x"].fetch() == 2.0


# ---- outputs and workspaces --------------------------------------------------------------------


def test_outputs_are_pre_created_in_the_session_workspace_even_if_never_written(ws):
    with TaskGroup(WorkspaceType.PRIVATE) as tg:
        with Node(_uid("ls_pre")):
            with Task():
                ops.ConstantFill([], "ls_pre_written", shape=[], value=1.0)
                written = final_output("ls_pre_written")
                never = final_output("ls_pre_never_written")
    LocalSession(ws).run(tg)
    assert ws.has_blob("ls_pre_never_written")
    assert written.fetch() == 1.0
    with pytest.raises(RuntimeError):
        never.fetch()


def test_fetch_reads_the_blob_when_called(ws):
    with Node(_uid("ls_lazy")):
        with Task() as t:
            out = final_output(ops.ConstantFill([], "ls_lazy_x", shape=[], value=1.0))
    LocalSession(ws).run(t)
    ws.blobs["ls_lazy_x"].feed(np.array(5.0, np.float32))
    assert out.fetch() == 5.0
    assert str(out.get()) == "ls_lazy_x"


def test_private_group_plan_runs_in_the_session_workspace_quirk(ws):
    """QUIRK (spec 0, 7.3): node-level setup blobs of a PRIVATE group persist."""
    with TaskGroup(WorkspaceType.PRIVATE) as tg:
        with Node(_uid("ls_quirk")):
            with Task():
                with ops.local_init():
                    ops.ConstantFill([], "ls_quirk_local", shape=[], value=1.0)
                ops.ConstantFill([], "ls_quirk_task_blob", shape=[], value=1.0)
    compiled = LocalSession.compile(tg)
    plan, output_list, workspace_type = compiled.obj
    assert callable(workspace_type) and workspace_type() == WorkspaceType.PRIVATE
    LocalSession(ws).run(tg)
    assert ws.has_blob("ls_quirk_local")
    assert not ws.has_blob("ls_quirk_task_blob")


def test_default_workspace_is_the_current_one_at_construction():
    workspace.SwitchWorkspace("ls_default_a", True)
    try:
        s = LocalSession()
        workspace.SwitchWorkspace("ls_default_b", True)
        s.run(_fill_net("ls_default", "ls_default_x"))
        assert workspace.CurrentWorkspace() == "ls_default_b"
        assert not workspace.HasBlob("ls_default_x")
        workspace.SwitchWorkspace("ls_default_a")
        assert workspace.HasBlob("ls_default_x")
    finally:
        workspace.SwitchWorkspace("default")


def test_empty_given_workspace_is_used(ws):
    s = LocalSession(ws)
    assert s.workspace is ws
    s.run(_fill_net("ls_empty_ws", "ls_empty_ws_x"))
    assert ws.has_blob("ls_empty_ws_x")


def test_run_makes_the_session_workspace_current_and_restores_it(ws):
    seen = []

    def probe(inputs, outputs):
        seen.append(workspace.HasBlob("ls_probe_marker"))

    ws.create_blob("ls_probe_marker").feed(np.array(1.0, np.float32))
    net = core.Net(_uid("ls_probe"))
    net.Python(probe)([], [])
    name = workspace.CurrentWorkspace()
    LocalSession(ws).run(net)
    assert seen == [True]
    assert workspace.CurrentWorkspace() == name and not workspace.HasBlob("ls_probe_marker")

    bad = core.Net(_uid("ls_probe_bad"))
    bad.Add(["ls_probe_missing", "ls_probe_missing"], "ls_probe_out")
    with pytest.raises(TaskError):
        LocalSession(ws).run(bad)
    # project decision: the current workspace is restored after a failed run too
    assert not workspace.HasBlob("ls_probe_marker")


def test_node_setup_failure_is_reported_as_the_node_setup(ws):
    with TaskGroup(WorkspaceType.PRIVATE) as tg:
        with Node(_uid("ls_setup_fail")):
            with Task():
                with ops.local_init():
                    ops.Add(["ls_setup_missing", "ls_setup_missing"], "ls_setup_out")
                ops.ConstantFill([], "ls_setup_x", shape=[], value=1.0)
    with pytest.raises(TaskError, match=r"^Setup of node 'local' failed in step") as e:
        LocalSession(ws).run(tg)
    assert e.value.task is None and e.value.node == "local"
    assert e.value.step_path[:2] == ("local", "local:init")
    assert "(step path: local > local:init > " in str(e.value)


# ---- worked examples (spec 14) -----------------------------------------------------------------


def test_14_1_what_run_of_a_task_builds(ws):
    node = _uid("ls_141")
    with Node(node):
        with Task() as t:
            ops.ConstantFill([], "ls_141_x", shape=[], value=1.0)
    compiled = LocalSession.compile(t)
    plan, output_list, _ = compiled.obj
    assert plan.Proto().name == "task_group_plan"
    (top,) = plan.Proto().execution_step
    assert top.name == f"{node}/task"
    assert [s.name for s in top.substep] == [f"{node}/task", f"{node}/task:exit"]
    assert list(top.substep[0].network) == [f"{node}/task"]
    (output_net,) = top.substep[1].network
    assert output_net == f"{node}/task:output"
    assert output_list.names() == [f"{output_net}/ConstantFill:0"]
    assert not top.create_workspace  # GLOBAL
    LocalSession(ws).run(t)
    (out,) = t.outputs()
    assert out.fetch() == 0 and ws.has_blob("ls_141_x")


def test_14_1_grouped_task_is_named_local_grouped_by_node():
    tg = TaskGroup(WorkspaceType.GLOBAL)
    with Node(_uid("ls_141g")):
        tg.add(Task(step=_fill_net("ls_141g", "ls_141g_x")))
    LocalSession._compile_task_group(tg)
    grouped, node_map = tg._tasks_by_node
    assert [t.name for t in grouped.tasks()] == ["local/grouped_by_node"]
    assert set(node_map.values()) == {"local"}


def test_14_2_private_group_two_tasks_same_node(ws):
    ws.create_blob("ls_142_shared").feed(np.array(3.0, np.float32))
    with TaskGroup() as tg:
        with Node(_uid("ls_142")):
            with Task() as t1:
                ops.Add(["ls_142_shared", "ls_142_shared"], "ls_142_a")
                a = final_output("ls_142_a")
            with Task() as t2:
                ops.Add(["ls_142_shared", "ls_142_shared"], "ls_142_b")
                b = final_output("ls_142_b")
    plan = LocalSession.compile(tg).obj[0]
    (top,) = plan.Proto().execution_step
    assert top.name == "local:body" and top.concurrent_substeps
    assert [s.name for s in top.substep] == [t1.get_step().Proto().name, t2.name]
    assert [s.create_workspace for s in top.substep] == [True, True]
    before = set(ws.blobs)
    LocalSession(ws).run(tg)
    assert a.fetch() == 6.0 and b.fetch() == 6.0
    assert set(ws.blobs) - before == {"ls_142_a", "ls_142_b"}  # only the outputs stay


def test_14_4_net_names_of_successive_task_builders(ws):
    node = _uid("ls_trainer")
    for _ in range(2):
        with Node(node):
            with Task():
                ops.ConstantFill([], _uid("ls_144_tmp"), shape=[], value=1.0)
    with Node(node):
        with Task() as t:
            const = ops.Const(np.array([100]))
    assert t.name == f"{node}/task"  # group-less tasks are not de-duplicated
    assert str(const) == f"{node}/task_2/GivenTensorInt64Fill:0"
    LocalSession(ws).run(t)
    assert ws.blobs[str(const)].fetch().tolist() == [100]


def test_compiled_runnable_is_exposed():
    assert CompiledRunnable(None, LocalSession).session_class is LocalSession


# ---- acceptance checks from Caffe2's own use of LocalSession (net_builder_test) ---------------


def test_setup_and_exit_ordering_with_final_outputs():
    with Task() as task:
        o6, o7_1, o7_2 = build_setup_exit_task()
    with LocalSession(workspace.C.Workspace()) as session:
        session.run(task)
        assert o6.fetch() == 6
        assert o7_1.fetch() == 7
        assert o7_2.fetch() == 7


def test_multi_instance_counters_are_per_instance_where_they_should_be():
    num_instances, num_iters = 10, 15
    with TaskGroup() as tg:
        _, total1, total2, total3 = build_multi_instance_counters(num_instances, num_iters)
    with LocalSession(workspace.C.Workspace()) as session:
        session.run(tg)
        assert total1.fetch() == num_instances * num_iters
        assert total2.fetch() == num_instances * num_iters**2
        assert total3.fetch() == num_instances * num_iters**2


def test_base_session_runs_nothing():
    s = Session()
    with pytest.raises(NotImplementedError):
        s.run(_fill_net("ls_base", "ls_base_x"))
    with pytest.raises(NotImplementedError):
        s.fetch_output(None)
    assert s.is_open()
