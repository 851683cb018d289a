"""caffe2.python.task: naming, nodes, TaskGroup grouping, get_step structures, setup hooks and
outputs (spec runtime.md 6).

Net and task names are process-global, so every test uses its own node names.
"""

from __future__ import annotations

import pytest

from caffe2.python import core
from caffe2.python.net_builder import ops
from caffe2.python.task import (
    Cluster,
    Node,
    SetupNets,
    Task,
    TaskGroup,
    TaskOutput,
    TaskOutputList,
    WorkspaceType,
    add_setup_steps,
    final_output,
    get_setup_nets,
)


def _tree(step_or_proto):
    """(name, flags, nets or substeps) of a step, recursively, for structure checks."""
    p = step_or_proto.Proto() if hasattr(step_or_proto, "Proto") else step_or_proto
    flags = {}
    if p.create_workspace:
        flags["create_workspace"] = True
    if p.concurrent_substeps:
        flags["concurrent"] = True
    if p.HasField("num_concurrent_instances"):
        flags["instances"] = p.num_concurrent_instances
    if p.HasField("run_every_ms"):
        flags["every_ms"] = p.run_every_ms
    if p.substep:
        return (p.name, flags, [_tree(s) for s in p.substep])
    return (p.name, flags, list(p.network))


def _net(name, blob=None):
    net = core.Net(name)
    net.ConstantFill([], blob or name + "_out", shape=[], value=1.0)
    return net


# ---- Cluster and Node -------------------------------------------------------------------------


def test_node_defaults_to_local_and_registers_with_cluster():
    with Cluster() as c:
        assert str(Node.current()) == "local"
        with Node("tk_node_a", cpus=4):
            assert str(Node.current()) == "tk_node_a"
            Node("tk_node_b")  # constructing registers, without entering
        # the default 'local' node registered with whichever Cluster was current when it
        # was first made (once per thread), so only count the nodes made here
        assert [n for n in c.nodes() if n != "local"] == ["tk_node_a", "tk_node_b"]
        assert c.node_kwargs()["tk_node_a"] == {"cpus": 4}


def test_node_kwargs_first_value_wins_and_merge():
    with Cluster() as c:
        Node("tk_kw", cpus=1)
        Node("tk_kw", cpus=2, mem=3)
        assert c.nodes() == ["tk_kw"]
        assert c.node_kwargs()["tk_kw"] == {"cpus": 1, "mem": 3}
        assert Node("tk_kw").kwargs() == {}


def test_workspace_type_values():
    assert WorkspaceType.PRIVATE == "private"
    assert WorkspaceType.GLOBAL == "global"


# ---- naming -----------------------------------------------------------------------------------


def test_task_names_in_group_are_deduplicated_among_pending_tasks():
    with TaskGroup() as tg:
        with Node("tk_names"):
            a = Task()
            b = Task()
            c = Task(name="x")
            d = Task(name="x")
            e = Task(step=core.execution_step("my_step", []))
        f = Task(node="tk_names_other")
    assert [t.name for t in (a, b, c, d, e)] == [
        "tk_names/task",
        "tk_names/task:1",
        "tk_names/x",
        "tk_names/x:1",
        "tk_names/my_step",
    ]
    assert f.name == "tk_names_other/task" and f.node == "tk_names_other"
    assert tg.num_registered_tasks() == 6
    assert tg.used_nodes() == ["tk_names", "tk_names_other"]


def test_group_less_tasks_are_not_deduplicated():
    with Node("tk_free"):
        assert Task().name == Task().name == "tk_free/task"
        assert Task().group is None


def test_task_context_nets_are_named_after_the_task():
    with TaskGroup() as tg:
        with Node("tk_ctx"):
            with Task() as t1:
                ops.ConstantFill([], "a", shape=[], value=1.0)
            with Task() as t2:
                ops.ConstantFill([], "b", shape=[], value=1.0)
    assert t1.name == "tk_ctx/task" and t2.name == "tk_ctx/task:1"
    assert [t.name for t in tg.tasks()] == ["tk_ctx/task", "tk_ctx/task:1"]
    assert t1.get_step().Proto().substep[0].network[0] == "tk_ctx/task"


def test_nested_task_created_inside_comes_first():
    with TaskGroup() as tg:
        with Node("tk_nested"):
            with Task(name="outer") as outer:
                inner = Task(name="inner", step=_net("tk_nested_inner_net"))
                ops.ConstantFill([], "o", shape=[], value=1.0)
    assert tg.tasks() == [inner, outer]


# ---- TaskGroup ---------------------------------------------------------------------------------


def test_group_workspace_type_rules():
    tg = TaskGroup()
    t = Task(node="tk_wt", step=_net("tk_wt_net"))
    tg.add(t)
    assert t.workspace_type() == WorkspaceType.PRIVATE
    assert tg.workspace_type() == WorkspaceType.PRIVATE

    tg2 = TaskGroup(WorkspaceType.GLOBAL)
    t2 = Task(node="tk_wt", step=_net("tk_wt_net2"))
    tg2.add(t2)
    assert t2.workspace_type() == WorkspaceType.GLOBAL

    tg3 = TaskGroup(WorkspaceType.GLOBAL)
    with pytest.raises(AssertionError, match="workspace type"):
        tg3.add(Task(node="tk_wt", workspace_type=WorkspaceType.PRIVATE))


def test_tasks_are_finalized_lazily_and_group_is_then_used():
    with TaskGroup() as tg:
        t = Task(node="tk_lazy", step=_net("tk_lazy_net"))
    assert tg._tasks == [] and tg._tasks_to_add == [t]
    assert tg.tasks() == [t]
    with pytest.raises(AssertionError, match=r"already used TaskGroup.*tk_lazy/task:?\d*'"):
        tg.add(Task(node="tk_lazy"))
    with pytest.raises(AssertionError, match="already been used"):
        t.add_output("x")


def test_tasks_by_node_groups_per_node_with_remap_and_cache():
    with TaskGroup(WorkspaceType.PRIVATE) as tg:
        with Node("tk_tbn_a"):
            a1 = Task(step=_net("tk_tbn_a1"), outputs="tk_tbn_a1_out")
            a2 = Task(step=_net("tk_tbn_a2"), outputs="tk_tbn_a2_out")
        with Node("tk_tbn_b"):
            b1 = Task(step=_net("tk_tbn_b1"), outputs="tk_tbn_b1_out")
    grouped = tg.tasks_by_node()
    tasks = grouped.tasks()
    assert [t.name for t in tasks] == ["tk_tbn_a/grouped_by_node", "tk_tbn_b/grouped_by_node"]
    assert [t.node for t in tasks] == ["tk_tbn_a", "tk_tbn_b"]
    # two tasks on node a: a concurrent body of their (private) steps
    assert _tree(tasks[0].get_step()) == (
        "tk_tbn_a:body",
        {"concurrent": True},
        [
            (a1.get_step().Proto().name, {"create_workspace": True}, ["tk_tbn_a1"]),
            (a2.get_step().Proto().name, {"create_workspace": True}, ["tk_tbn_a2"]),
        ],
    )
    # one task: its own step
    assert tasks[1].get_step() is b1.get_step()
    # the outputs are the same TaskOutput objects
    assert tasks[0].outputs() == a1.outputs() + a2.outputs()
    assert tasks[0].workspace_type() == WorkspaceType.PRIVATE
    # same mapping: same group; another mapping: refused
    assert tg.tasks_by_node() is grouped
    with pytest.raises(AssertionError, match="tasks_by_node multiple times"):
        tg.tasks_by_node(lambda n: "elsewhere")


def test_tasks_by_node_remap_merges_nodes_and_global_wins():
    tg = TaskGroup()
    with Node("tk_remap_a"):
        tg.add(Task(step=_net("tk_remap_a"), workspace_type=WorkspaceType.PRIVATE))
    tg2 = TaskGroup()
    with Node("tk_remap_b"):
        ga = Task(step=_net("tk_remap_ga"), workspace_type=WorkspaceType.GLOBAL)
        gb = Task(step=_net("tk_remap_gb"), workspace_type=WorkspaceType.GLOBAL)
    tg2.add(ga)
    tg2.add(gb)
    grouped = tg2.tasks_by_node(lambda n: "tk_remap_target")
    (task,) = grouped.tasks()
    assert task.name == "tk_remap_target/grouped_by_node"
    assert task.workspace_type() == WorkspaceType.GLOBAL
    body = task.get_step().Proto()
    assert body.name == "tk_remap_target:body" and body.concurrent_substeps
    assert [s.create_workspace for s in body.substep] == [False, False]


def test_to_task_and_empty_group():
    with TaskGroup() as tg:
        with Node("tk_to_task_a"):
            Task(step=_net("tk_to_task_a"))
        with Node("tk_to_task_b"):
            Task(step=_net("tk_to_task_b"))
    with Node("tk_to_task_target"):
        task = tg.to_task()
    assert task.name == "tk_to_task_target/grouped_by_node"
    assert task.get_step().Proto().name == "tk_to_task_target:body"

    empty = TaskGroup().to_task()
    assert isinstance(empty, Task) and empty.get_step().Proto().name == empty.name


def test_empty_node_step_and_report_steps():
    tg = TaskGroup()
    with Node("tk_report"):
        t = Task(step=_net("tk_report_work"))
        tg.add(t)
        tg.report_step(_net("tk_report_net"), interval_ms=50)
    (grouped,) = tg.tasks_by_node().tasks()
    tree = _tree(grouped.get_step())
    assert tree[0] == "tk_report:body" and tree[1] == {"concurrent": True}
    assert tree[2][0][1] == {"every_ms": 50}
    assert tree[2][1][0] == t.name


def test_deprecated_report_net_becomes_report_step():
    tg = TaskGroup()
    with Node("tk_rnet"):
        net = tg.report_net(report_interval=2)
        assert str(net).startswith("tk_rnet/reporter")
        assert tg.report_net() is net
        with pytest.raises(AssertionError, match="already has a report net"):
            tg.report_net(core.Net("tk_rnet_other"))
        net.ConstantFill([], "tk_rnet_blob", shape=[], value=1.0)
        tg.add(Task(step=_net("tk_rnet_work")))
    (grouped,) = tg.tasks_by_node().tasks()
    reporter = grouped.get_step().Proto().substep[0]
    assert reporter.run_every_ms == 2000 and list(reporter.network) == [str(net)]


# ---- get_step structures (spec 6.5) -------------------------------------------------------------


def test_get_step_without_step_is_empty_and_has_no_outputs():
    t = Task(node="tk_gs_empty")
    step = t.get_step()
    assert _tree(step) == ("tk_gs_empty/task", {}, [])
    assert t.outputs() == []
    assert t.get_step() is step


def test_get_step_adds_the_auto_output_net():
    net = _net("tk_gs_auto")
    t = Task(node="tk_gs_auto", step=net)
    step = t.get_step()
    inner = t._step.Proto().name
    assert _tree(step) == (
        "tk_gs_auto/task",
        {},
        [
            (inner, {}, ["tk_gs_auto"]),
            ("tk_gs_auto/task:exit", {}, ["tk_gs_auto/task:output"]),
        ],
    )
    (out,) = t.outputs()
    assert [str(n) for n in out.names] == ["tk_gs_auto/task:output/ConstantFill:0"]


def test_get_step_with_outputs_is_the_step_itself():
    step = core.execution_step("tk_gs_out_step", _net("tk_gs_out"))
    t = Task(node="tk_gs_out", step=step, outputs=["tk_gs_out_out"])
    assert t.get_step() is step


def test_get_step_multi_instance_uses_literal_parallel_name():
    step = core.execution_step("tk_gs_multi_step", _net("tk_gs_multi"))
    t = Task(node="tk_gs_multi", step=step, outputs="tk_gs_multi_out", num_instances=3)
    assert _tree(t.get_step()) == (
        "%s:parallel",
        {"instances": 3},
        [("tk_gs_multi_step", {"create_workspace": True}, ["tk_gs_multi"])],
    )


def test_get_step_full_structure_with_all_hooks():
    work = _net("tk_gs_full")
    task_init, task_exit = _net("tk_gs_full_ti"), _net("tk_gs_full_te")
    inst_init, inst_exit = _net("tk_gs_full_ii"), _net("tk_gs_full_ie")
    work.add_attribute(Task.TASK_SETUP, SetupNets([task_init], [task_exit]))
    work.add_attribute(Task.TASK_INSTANCE_SETUP, SetupNets([inst_init], [inst_exit]))
    report = core.execution_step("tk_gs_full_report", _net("tk_gs_full_rep"))
    work.add_attribute(Task.REPORT_STEP, report)
    step = core.execution_step("tk_gs_full_step", work)
    t = Task(node="tk_gs_full", step=step, num_instances=2)
    name = "tk_gs_full/tk_gs_full_step"  # a task is named after its ExecutionStep
    assert _tree(t.get_step()) == (
        name,
        {},
        [
            (f"{name}:init", {}, ["tk_gs_full_ti"]),
            (
                "%s:parallel",
                {"instances": 2},
                [
                    (
                        f"{name}:instance",
                        {"create_workspace": True},
                        [
                            (f"{name}:instance:init", {}, ["tk_gs_full_ii"]),
                            (
                                f"{name}:body",
                                {},
                                [
                                    ("tk_gs_full_report", {"every_ms": 1000}, ["tk_gs_full_rep"]),
                                    ("tk_gs_full_step", {}, ["tk_gs_full"]),
                                ],
                            ),
                            (f"{name}:instance:exit", {}, ["tk_gs_full_ie"]),
                        ],
                    )
                ],
            ),
            (f"{name}:exit", {}, ["tk_gs_full_te", f"{name}:output"]),
        ],
    )


def test_builder_setup_hooks_in_task_context():
    with TaskGroup() as tg:
        with Node("tk_bhooks"):
            with Task(num_instances=2) as t:
                with ops.task_init():
                    ops.ConstantFill([], "ti", shape=[], value=1.0)
                with ops.task_exit():
                    ops.ConstantFill([], "te", shape=[], value=1.0)
                with ops.task_instance_init():
                    ops.ConstantFill([], "ii", shape=[], value=1.0)
                with ops.local_init():
                    ops.ConstantFill([], "li", shape=[], value=1.0)
                ops.ConstantFill([], "work", shape=[], value=1.0)
    tree = _tree(t.get_step())
    assert [s[0] for s in tree[2]] == [
        "tk_bhooks/task:init",
        "%s:parallel",
        "tk_bhooks/task:exit",
    ]
    inst = tree[2][1][2][0]
    assert inst[0] == "tk_bhooks/task:instance" and inst[1] == {"create_workspace": True}
    assert [s[0] for s in inst[2]][0] == "tk_bhooks/task:instance:init"
    (grouped,) = tg.tasks_by_node().tasks()
    node_step = _tree(grouped.get_step())
    assert node_step[0] == "tk_bhooks"
    assert [s[0] for s in node_step[2]] == ["tk_bhooks:init", "tk_bhooks/task"]


# ---- setup hooks -------------------------------------------------------------------------------


class _Hook:
    def __init__(self, init=None, exit=None, target=None):
        self._init, self._exit = init, exit
        if target is not None:
            self._setup_target = target

    def setup(self, init_net):
        return self._init

    def exit(self, exit_net):
        return self._exit


class _OpsHook:
    """A hook that writes ops into the shared init/exit nets."""

    def setup(self, init_net):
        init_net.ConstantFill([], "tk_ops_hook_init", shape=[], value=1.0)

    def exit(self, exit_net):
        exit_net.ConstantFill([], "tk_ops_hook_exit", shape=[], value=1.0)


def test_get_setup_nets_collects_once_and_respects_target():
    a, b, c = _net("tk_sn_a"), _net("tk_sn_b"), _net("tk_sn_c")
    net = _net("tk_sn_holder")
    hook = _Hook([a, b], c)
    other = _Hook(_net("tk_sn_other"), target="someone else")
    net.add_attribute("tk_key", hook)
    net.add_attribute("tk_key", other)
    step = core.execution_step("tk_sn_step", net)
    inits, exits = get_setup_nets("tk_key", [step], "me")
    assert inits == [a, b] and exits == [c]
    assert hook._setup_used and not getattr(other, "_setup_used", False)
    assert get_setup_nets("tk_key", [net], "me") == ([], [])  # used once in its lifetime


def test_get_setup_nets_shared_nets_come_first_and_are_named_after_the_key():
    net = _net("tk_sn2_holder")
    net.add_attribute("tk_key2", _OpsHook())
    step_net = _net("tk_sn2_step")
    net.add_attribute("tk_key2", SetupNets(step_net, None))
    inits, exits = get_setup_nets("tk_key2", [net], None)
    assert str(inits[0]).startswith("tk_key2/init") and inits[1] is step_net
    assert len(exits) == 1 and str(exits[0]).startswith("tk_key2/exit")


def test_get_setup_nets_rejects_unsupported_results():
    net = _net("tk_sn3_holder")
    net.add_attribute("tk_key3", _Hook(init=42))
    with pytest.raises(TypeError, match="Unsupported type for setup"):
        get_setup_nets("tk_key3", [net], None)


def test_add_setup_steps():
    body = core.execution_step("tk_ass_body", _net("tk_ass_body"))
    assert add_setup_steps(body, [], [], "x") is body
    init = _net("tk_ass_init")
    assert _tree(add_setup_steps(body, [init], [], "tk_ass")) == (
        "tk_ass",
        {},
        [("tk_ass:init", {}, ["tk_ass_init"]), ("tk_ass_body", {}, ["tk_ass_body"])],
    )


# ---- outputs -----------------------------------------------------------------------------------


def test_task_output_shapes_and_asserts():
    scalar = TaskOutput("a")
    listed = TaskOutput(["b", "c"])
    with pytest.raises(AssertionError, match="not set yet"):
        scalar.get()
    with pytest.raises(AssertionError, match="Cannot fetch"):
        scalar.fetch()
    out_list = TaskOutputList([scalar, listed])
    assert out_list.names() == ["a", "b", "c"]
    out_list.set_values([1, 2, 3], _fetch_func=lambda v: v * 10)
    assert scalar.get() == 1 and listed.get() == [2, 3]
    assert scalar.fetch() == 10 and listed.fetch() == [20, 30]
    with pytest.raises(AssertionError, match="Wrong number of output values"):
        out_list.set_values([1, 2, 3, 4])


def test_final_output_in_task_and_outside():
    with TaskGroup() as tg:
        with Node("tk_final"):
            with Task() as t:
                blob = ops.ConstantFill([], "tk_final_blob", shape=[], value=1.0)
                out = final_output(blob)
            standalone = final_output("tk_final_other")
    assert t.outputs() == [out]
    assert len(tg._tasks_to_add) == 2
    (lone,) = [x for x in tg._tasks_to_add if x is not t]
    assert lone.outputs() == [standalone] and lone.name == "tk_final/task:1"
    # a task with an explicit output gets no auto output net
    assert all(not n.endswith(":output") for n in t.get_step().Proto().network)


def test_reprs_have_no_side_effects():
    with Cluster() as c:
        assert repr(c) == "Cluster(nodes=[], node_kwargs={})"
        assert repr(Node("tk_repr")) == "Node(node='tk_repr', kwargs={})"
    tg = TaskGroup()
    assert repr(tg) == "TaskGroup(tasks=[], workspace_type=None)"
    with tg:
        t = Task(node="tk_repr")
    assert repr(tg) == (
        "TaskGroup(tasks=[Task(name='tk_repr/task', node='tk_repr', outputs=[])], "
        "workspace_type=None)"
    )
    assert not tg._already_used and tg._tasks_to_add == [t]
    assert repr(TaskOutput([])) == "TaskOutput(names=[], values=None)"
    assert repr(SetupNets()) == "SetupNets(init_nets=None, exit_nets=None)"
