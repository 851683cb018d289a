"""What every Session kind must do: one suite, parametrized over the kinds of session.

Each kind is a factory in SESSION_KINDS that knows how to make a session and how to look at
the workspace a node's GLOBAL tasks run in. Everything specific to a kind of session lives in
its factory; the tests only use the Session API (run, compile, close, TaskOutput.fetch) and
the factory. A DistributedSession joins by adding its factory to SESSION_KINDS.

Blob visibility (Session docstring): tasks on different nodes must be assumed not to see
each other's blobs, so cross-task checks here use tasks on the same node.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from caffe2.python import core, workspace
from caffe2.python.net_builder import ops
from caffe2.python.session import (
    CompiledRunnable,
    LocalSession,
    Session,
    SessionBusyError,
    SessionClosedError,
    TaskError,
    TaskGroupConsumedError,
    UnsupportedRunnableError,
)
from caffe2.python.task import (
    Node,
    SetupNets,
    Task,
    TaskGroup,
    WorkspaceType,
    final_output,
)

_ids = itertools.count()


def _uid(prefix: str) -> str:
    """A process-unique name (net, task and node names are process-global)."""
    return f"{prefix}_{next(_ids)}"


# ---- session kinds ------------------------------------------------------------------------------


class LocalSessionKind:
    """LocalSession over a workspace of its own, or over the current workspace."""

    def __init__(self, own_workspace: bool):
        self.own_workspace = own_workspace
        self.id = "local-own-ws" if own_workspace else "local-current-ws"

    def make(self) -> Session:
        if self.own_workspace:
            return LocalSession(workspace.C.Workspace())
        workspace.ResetWorkspace()
        return LocalSession()

    def workspace(self, session, node="local"):
        """The workspace GLOBAL tasks of ``node`` run in (one for all nodes here)."""
        return session.workspace

    def blob_names(self, session, node="local") -> set[str]:
        return set(self.workspace(session, node).blobs)

    def fetch(self, session, name, node="local"):
        return self.workspace(session, node).blobs[name].fetch()

    def feed(self, session, name, value, node="local"):
        self.workspace(session, node).create_blob(name).feed(value)

    def cleanup(self, session):
        session.close()


SESSION_KINDS = [LocalSessionKind(own_workspace=True), LocalSessionKind(own_workspace=False)]

try:  # DistributedSession needs the optional extra caffe2py[ray]
    from caffe2.distributed.testing import DistributedSessionKind

    SESSION_KINDS.append(DistributedSessionKind())
except ImportError as _no_ray:
    SESSION_KINDS.append(
        pytest.param(None, id="distributed", marks=pytest.mark.skip(reason=str(_no_ray)))
    )


@pytest.fixture(params=SESSION_KINDS, ids=lambda k: k.id)
def kind(request):
    return request.param


@pytest.fixture(scope="module", autouse=True)
def _teardown_session_kinds():
    yield
    for k in SESSION_KINDS:
        getattr(k, "teardown", lambda: None)()


@pytest.fixture
def session(kind):
    s = kind.make()
    yield s
    kind.cleanup(s)


def _fill(net, name, value, dtype=None):
    kwargs = {"shape": [], "value": value}
    if dtype is not None:
        kwargs["dtype"] = dtype
    return net.ConstantFill([], name, **kwargs)


def _scalar(x):
    return np.asarray(x).item()


def _failing_op(net, message="deliberate failure"):
    def fail(inputs, outputs):
        raise ValueError(message)

    net.Python(fail)([], [])


# ---- every runnable type -----------------------------------------------------------------------


def test_runs_a_net(kind, session):
    net = core.Net(_uid("cf_net"))
    _fill(net, "cf_net_x", 3.0)
    session.run(net)
    assert _scalar(kind.fetch(session, "cf_net_x")) == 3.0


def test_runs_a_list_of_nets_in_order_without_caching(kind, session):
    a, b = core.Net(_uid("cf_list_a")), core.Net(_uid("cf_list_b"))
    _fill(a, "cf_list_x", 2.0)
    b.Add(["cf_list_x", "cf_list_x"], "cf_list_y")
    nets = [a, b]
    session.run(nets)
    assert _scalar(kind.fetch(session, "cf_list_y")) == 4.0
    session.run(tuple(nets))
    assert type(session).compile(nets) is not type(session).compile(nets)


def test_runs_an_execution_step_with_iterations(kind, session):
    init = core.Net(_uid("cf_step_init"))
    _fill(init, "cf_step_acc", 0.0)
    _fill(init, "cf_step_one", 1.0)
    session.run(init)
    body = core.Net(_uid("cf_step_body"))
    body.Add(["cf_step_acc", "cf_step_one"], "cf_step_acc")
    session.run(core.execution_step(_uid("cf_step"), body, num_iter=3))
    assert _scalar(kind.fetch(session, "cf_step_acc")) == 3.0


def test_runs_a_plan_with_one_and_with_several_steps_in_sequence(kind, session):
    first = core.Net(_uid("cf_plan_first"))
    _fill(first, "cf_plan_x", 5.0)
    second = core.Net(_uid("cf_plan_second"))
    second.Add(["cf_plan_x", "cf_plan_x"], "cf_plan_x")
    plan = core.Plan(_uid("cf_plan"))
    plan.AddStep(core.execution_step(_uid("cf_plan_s1"), first))
    plan.AddStep(core.execution_step(_uid("cf_plan_s2"), second))
    session.run(plan)
    assert _scalar(kind.fetch(session, "cf_plan_x")) == 10.0

    one = core.Net(_uid("cf_plan_one"))
    _fill(one, "cf_plan_single", 1.0)
    session.run(core.Plan(core.execution_step(_uid("cf_plan_single_step"), one)))
    assert _scalar(kind.fetch(session, "cf_plan_single")) == 1.0


def test_runs_a_task_and_a_task_group(kind, session):
    task_node = _uid("cf_node")
    with Node(task_node):
        with Task() as t:
            _fill(ops, "cf_task_x", 7.0)
    session.run(t)
    assert _scalar(kind.fetch(session, "cf_task_x", task_node)) == 7.0

    node = _uid("cf_tg_node")
    with TaskGroup(WorkspaceType.GLOBAL) as tg:
        with Node(node):
            with Task():
                _fill(ops, "cf_tg_a", 1.0)
            with Task():
                _fill(ops, "cf_tg_b", 2.0)
    session.run(tg)
    assert _scalar(kind.fetch(session, "cf_tg_a", node)) == 1.0
    assert _scalar(kind.fetch(session, "cf_tg_b", node)) == 2.0


def test_runs_a_compiled_runnable_and_reruns_the_same_plan(kind, session):
    init = core.Net(_uid("cf_comp_init"))
    _fill(init, "cf_comp_acc", 0.0)
    _fill(init, "cf_comp_one", 1.0)
    session.run(init)
    body = core.Net(_uid("cf_comp_body"))
    body.Add(["cf_comp_acc", "cf_comp_one"], "cf_comp_acc")
    step = core.execution_step(_uid("cf_comp_step"), body)
    compiled = type(session).compile(step)
    assert isinstance(compiled, CompiledRunnable)
    assert type(session).compile(step) is compiled
    session.run(compiled)
    session.run(step)
    session.run(compiled)
    assert _scalar(kind.fetch(session, "cf_comp_acc")) == 3.0


# ---- workspace types ---------------------------------------------------------------------------


def test_global_task_blobs_persist(kind, session):
    node = _uid("cf_global")
    with TaskGroup(WorkspaceType.GLOBAL) as tg:
        with Node(node):
            with Task():
                _fill(ops, "cf_global_kept", 1.0)
    session.run(tg)
    assert "cf_global_kept" in kind.blob_names(session, node)


def test_private_task_blobs_vanish_but_writes_to_global_blobs_and_outputs_stay(kind, session):
    node = _uid("cf_private")
    kind.feed(session, "cf_private_acc", np.array(10.0, np.float32), node)
    with TaskGroup(WorkspaceType.PRIVATE) as tg:
        with Node(node):
            with Task():
                one = _fill(ops, "cf_private_one", 1.0)
                ops.Add(["cf_private_acc", one], "cf_private_acc")
                out = final_output(ops.Add([one, one], "cf_private_out"))
    session.run(tg)
    names = kind.blob_names(session, node)
    assert "cf_private_one" not in names
    assert _scalar(kind.fetch(session, "cf_private_acc", node)) == 11.0
    assert "cf_private_out" in names  # pre-created output
    assert _scalar(out.fetch()) == 2.0
    session.run(tg)
    assert _scalar(kind.fetch(session, "cf_private_acc", node)) == 12.0


def test_private_tasks_on_one_node_see_global_blobs_not_each_others(kind, session):
    node = _uid("cf_vis")
    kind.feed(session, "cf_vis_shared", np.array(1.0, np.float32), node)
    seen = {}
    lock = threading.Lock()

    def recorder(label):
        def record(inputs, outputs, ws):
            with lock:
                seen[label] = set(ws.blobs)

        return record

    with TaskGroup(WorkspaceType.PRIVATE) as tg:
        with Node(node):
            for label in ("a", "b"):
                with Task():
                    _fill(ops, f"cf_vis_own_{label}", 1.0)
                    ops.Python(recorder(label), pass_workspace=True)([], [])
    session.run(tg)
    assert "cf_vis_shared" in seen["a"] and "cf_vis_shared" in seen["b"]
    assert "cf_vis_own_a" in seen["a"] and "cf_vis_own_b" not in seen["a"]
    assert "cf_vis_own_b" in seen["b"] and "cf_vis_own_a" not in seen["b"]
    assert not {"cf_vis_own_a", "cf_vis_own_b"} & kind.blob_names(session, node)


# ---- outputs -----------------------------------------------------------------------------------


def test_task_outputs_scalar_list_and_auto(kind, session):
    node = _uid("cf_out")
    with TaskGroup() as tg:
        with Node(node):
            with Task():
                a = _fill(ops, "cf_out_a", 1.0)
                b = _fill(ops, "cf_out_b", 2.0)
                single = final_output(a)
                pair = final_output([a, b])
            auto_task = Task(step=_fill_net("cf_out_auto", 3.0))
    session.run(tg)
    assert str(single.get()) == "cf_out_a"
    assert _scalar(single.fetch()) == 1.0
    assert [_scalar(v) for v in pair.fetch()] == [1.0, 2.0]
    (auto,) = auto_task.outputs()
    value = auto.fetch()
    assert value.dtype == np.int32 and _scalar(value) == 0


def _fill_net(prefix, value):
    net = core.Net(_uid(prefix))
    _fill(net, _uid(prefix + "_blob"), value)
    return net


def test_outputs_of_tasks_given_outputs_explicitly(kind, session):
    net = core.Net(_uid("cf_out_explicit"))
    a = _fill(net, _uid("cf_out_explicit_a"), 4.0)
    b = _fill(net, _uid("cf_out_explicit_b"), 5.0)
    with Node(_uid("cf_out_explicit_node")):
        t = Task(step=net, outputs=[a, [a, b]])  # each element is one output
    session.run(t)
    single, pair = t.outputs()
    assert _scalar(single.fetch()) == 4.0
    assert [_scalar(v) for v in pair.fetch()] == [4.0, 5.0]


# ---- setup and exit nets -----------------------------------------------------------------------


def test_task_init_and_exit_run_around_the_body(kind, session):
    with Node(_uid("cf_setup")):
        with Task(workspace_type=WorkspaceType.PRIVATE) as t:
            with ops.task_init():
                counter = ops.CreateCounter([], "cf_setup_counter", init_count=0)
            ops.CountUp([counter], "cf_setup_before")
            ops.CountUp([counter], "cf_setup_before")
            with ops.task_exit():
                count = final_output(ops.RetrieveCount([counter], "cf_setup_count"))
    # A PRIVATE task needs the matching workspace_type (the default is GLOBAL).
    session.run(t, workspace_type=WorkspaceType.PRIVATE)
    assert _scalar(count.fetch()) == 2
    assert "cf_setup_counter" not in kind.blob_names(session, t.node)
    session.run(t)  # the init net resets the counter on every run (compiled once)
    assert _scalar(count.fetch()) == 2


def test_local_init_and_exit_run_once_per_node(kind, session):
    node = _uid("cf_local")
    with TaskGroup(WorkspaceType.PRIVATE) as tg:
        with Node(node):
            for _ in range(3):
                with Task():
                    with ops.local_init():
                        ops.CreateCounter([], "cf_local_counter", init_count=0)
                    ops.CountUp(["cf_local_counter"], ops.NextScopedBlob("cf_local_tick"))
            with Task():
                with ops.local_exit():
                    ops.RetrieveCount(["cf_local_counter"], "cf_local_total")
    session.run(tg)
    assert _scalar(kind.fetch(session, "cf_local_total", node)) == 3


def test_setup_nets_attribute_at_task_and_node_level(kind, session):
    node = _uid("cf_setupnets")
    ti, te = _fill_net("cf_sn_ti", 1.0), core.Net(_uid("cf_sn_te"))
    li = _fill_net("cf_sn_li", 5.0)
    ti_blob, li_blob = ti.Proto().op[0].output[0], li.Proto().op[0].output[0]
    te.Add([ti_blob, li_blob], "cf_sn_sum")
    work = core.Net(_uid("cf_sn_work"))
    work.Add([ti_blob, li_blob], "cf_sn_work_out")
    work.add_attribute(Task.TASK_SETUP, SetupNets([ti], [te]))
    work.add_attribute(TaskGroup.LOCAL_SETUP, SetupNets([li]))
    with TaskGroup(WorkspaceType.GLOBAL) as tg:
        with Node(node):
            Task(step=work)
    session.run(tg)
    assert _scalar(kind.fetch(session, "cf_sn_sum", node)) == 6.0
    assert _scalar(kind.fetch(session, "cf_sn_work_out", node)) == 6.0


# ---- multi-instance tasks ----------------------------------------------------------------------


@pytest.mark.parametrize("workspace_type", [WorkspaceType.GLOBAL, WorkspaceType.PRIVATE])
def test_multi_instance_task(kind, session, workspace_type):
    node = _uid("cf_multi")
    with TaskGroup(workspace_type) as tg:
        with Node(node):
            with Task(num_instances=4) as t:
                with ops.task_init():
                    counter = ops.CreateCounter([], "cf_multi_counter", init_count=0)
                    exits = ops.CreateCounter([], "cf_multi_exits", init_count=0)
                with ops.task_instance_init():
                    _fill(ops, "cf_multi_instance_blob", 1.0)
                ops.CountUp([counter], "cf_multi_tick")
                with ops.task_instance_exit():
                    ops.CountUp([exits], "cf_multi_exit_tick")
                with ops.task_exit():
                    total = final_output(ops.RetrieveCount([counter], "cf_multi_total"))
                    exit_total = final_output(ops.RetrieveCount([exits], "cf_multi_exit_total"))
    session.run(tg)
    assert t.get_step().Proto().substep[1].name == "%s:parallel"
    assert _scalar(total.fetch()) == 4
    assert _scalar(exit_total.fetch()) == 4
    names = kind.blob_names(session, node)
    assert "cf_multi_instance_blob" not in names and "cf_multi_tick" not in names


# ---- reports -----------------------------------------------------------------------------------


def test_task_reporter_runs_at_least_once(kind, session):
    with Node(_uid("cf_report")):
        with Task() as t:
            with ops.task_init():
                counter = ops.CreateCounter([], "cf_report_counter", init_count=0)
            with ops.task_reporter(interval_ms=10):
                ops.CountUp([counter], "cf_report_tick")
            _fill(ops, "cf_report_work", 1.0)
            with ops.task_exit():
                reports = final_output(ops.RetrieveCount([counter], "cf_report_count"))
    session.run(t)
    assert _scalar(reports.fetch()) >= 1


def test_task_group_report_step_runs_at_least_once(kind, session):
    node = _uid("cf_tg_report")
    init = core.Net(_uid("cf_tg_report_init"))
    init.CreateCounter([], "cf_tg_report_counter", init_count=0)
    done = core.Net(_uid("cf_tg_report_exit"))
    done.RetrieveCount(["cf_tg_report_counter"], "cf_tg_report_total")
    reporter = core.Net(_uid("cf_tg_report_net"))
    reporter.CountUp(["cf_tg_report_counter"], "cf_tg_report_tick")
    reporter.add_attribute(TaskGroup.LOCAL_SETUP, SetupNets([init], [done]))
    with TaskGroup(WorkspaceType.GLOBAL) as tg:
        with Node(node):
            Task(step=_fill_net("cf_tg_report_work", 1.0))
            tg.report_step(reporter, interval_ms=10)
    session.run(tg)
    assert _scalar(kind.fetch(session, "cf_tg_report_total", node)) >= 1


# ---- errors and reuse --------------------------------------------------------------------------


def test_closed_session_refuses_to_run(kind):
    s = kind.make()
    with s:
        assert s.is_open()
    assert not s.is_open()
    with pytest.raises(SessionClosedError, match="closed") as e:
        s.run(core.Net(_uid("cf_closed")))
    assert isinstance(e.value, AssertionError)
    s.close()  # closing twice is fine
    with pytest.raises(AssertionError, match="already closed"):
        s.__enter__()


def test_session_left_by_an_exception_stays_open(kind):
    s = kind.make()
    with pytest.raises(KeyError):
        with s:
            raise KeyError("boom")
    assert s.is_open()
    s.close()


@pytest.mark.parametrize(
    "bad",
    [None, 42, "a_net_name", [core.Net("cf_bad_net_in_list"), 3], {"a": 1}],
    ids=["none", "int", "str", "list-with-non-net", "dict"],
)
def test_unsupported_runnables_are_refused(kind, session, bad):
    with pytest.raises(UnsupportedRunnableError) as e:
        session.run(bad)
    assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)
    assert session.is_open()


def test_netdef_is_refused(kind, session):
    with pytest.raises(UnsupportedRunnableError, match="NetDef"):
        session.run(core.Net(_uid("cf_netdef")).Proto())


def test_task_group_reused_after_it_was_consumed(kind, session):
    node = _uid("cf_consumed")
    with TaskGroup() as tg:
        with Node(node):
            Task(step=_fill_net("cf_consumed_a", 1.0))
    session.run(tg)
    with tg:
        with Node(node):
            late = Task(step=_fill_net("cf_consumed_b", 1.0))
    with pytest.raises(TaskGroupConsumedError, match=f"'{late.name}' on node '{node}'"):
        session.run(tg)
    with pytest.raises(AssertionError, match="already used TaskGroup"):
        tg.tasks()


@pytest.mark.parametrize("workspace_type", [WorkspaceType.GLOBAL, WorkspaceType.PRIVATE])
def test_failing_step_names_task_node_step_and_net(kind, session, workspace_type):
    node_ok, node_bad = _uid("cf_fail_ok"), _uid("cf_fail_bad")
    bad_net = core.Net(_uid("cf_fail_net"))
    _fill(bad_net, "cf_fail_before", 1.0)
    _failing_op(bad_net)
    bad_step = core.execution_step(_uid("cf_fail_step"), bad_net)
    with TaskGroup(workspace_type) as tg:
        with Node(node_ok):
            Task(step=_fill_net("cf_fail_fine", 1.0))
        with Node(node_bad):
            bad_task = Task(step=bad_step)
    with pytest.raises(TaskError) as e:
        session.run(tg)
    err = e.value
    assert isinstance(err, RuntimeError)
    assert err.task == bad_task.name and err.node == node_bad
    assert err.step == bad_step.Proto().name and err.net == str(bad_net)
    text = str(err)
    for part in (bad_task.name, node_bad, bad_step.Proto().name, str(bad_net)):
        assert part in text
    assert "deliberate failure" in text and err.__cause__ is not None


def test_net_creation_failure_names_the_task(kind, session):
    net = core.Net(_uid("cf_missing"))
    net.Add(["cf_missing_input", "cf_missing_input"], "cf_missing_out")
    with Node(_uid("cf_missing_node")) as node:
        t = Task(step=net)
    with pytest.raises(TaskError, match="cf_missing_input") as e:
        session.run(t)
    assert e.value.task == t.name and e.value.node == str(node)
    assert e.value.net == str(net)


def test_failed_run_keeps_global_blobs_and_session_is_reusable(kind, session):
    node = _uid("cf_keep")
    kind.feed(session, "cf_keep_a", np.arange(3, dtype=np.float32), node)
    kind.feed(session, "cf_keep_b", np.array(7, np.int64), node)
    init = _fill_net("cf_keep_init", 1.0)
    session.run(init)
    before = kind.blob_names(session, node)

    net = core.Net(_uid("cf_keep_fail"))
    net.Add(["cf_keep_input", "cf_keep_input"], "cf_keep_sum")
    step = Task(step=core.execution_step(_uid("cf_keep_step"), net), node=node)
    with pytest.raises(TaskError):
        session.run(step)
    assert before <= kind.blob_names(session, node)
    np.testing.assert_array_equal(kind.fetch(session, "cf_keep_a", node), np.arange(3))
    assert _scalar(kind.fetch(session, "cf_keep_b", node)) == 7
    assert session.is_open()

    # The same runnable runs once its cause is fixed; other runnables run too.
    kind.feed(session, "cf_keep_input", np.array(2.0, np.float32), node)
    session.run(step)
    assert _scalar(kind.fetch(session, "cf_keep_sum", node)) == 4.0
    session.run(_fill_net("cf_keep_after", 1.0))


def test_failed_private_run_leaves_session_usable(kind, session):
    node = _uid("cf_priv_fail")
    with TaskGroup(WorkspaceType.PRIVATE) as tg:
        with Node(node):
            with Task() as t:
                _fill(ops, "cf_priv_fail_local", 1.0)
                ops.Add(["cf_priv_fail_in", "cf_priv_fail_in"], "cf_priv_fail_out")
                out = final_output("cf_priv_fail_out")
    with pytest.raises(TaskError) as e:
        session.run(tg)
    assert e.value.task == t.name and e.value.node == node
    kind.feed(session, "cf_priv_fail_in", np.array(1.5, np.float32), node)
    session.run(tg)
    assert _scalar(out.fetch()) == 3.0


def test_concurrent_run_from_another_thread_is_refused(kind, session):
    started, release = threading.Event(), threading.Event()

    def block(inputs, outputs):
        started.set()
        assert release.wait(30)

    net = core.Net(_uid("cf_busy"))
    net.Python(block)([], [])
    _fill(net, "cf_busy_done", 1.0)
    busy_node = _uid("cf_busy_node")
    with Node(busy_node):
        t = Task(step=net)
    errors = []

    def run():
        try:
            session.run(t)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    runner = threading.Thread(target=run, name="cf-busy-runner")
    runner.start()
    try:
        assert started.wait(30)
        with pytest.raises(SessionBusyError) as e:
            session.run(_fill_net("cf_busy_other", 1.0))
        assert "cf-busy-runner" in str(e.value) and t.name in str(e.value)
    finally:
        release.set()
        runner.join(30)
    assert not errors
    assert _scalar(kind.fetch(session, "cf_busy_done", busy_node)) == 1.0
    session.run(_fill_net("cf_busy_after", 1.0))  # usable again


def test_nested_run_from_inside_a_plan_is_refused(kind, session):
    inner = _fill_net("cf_nested_inner", 1.0)
    caught = []

    def nested(inputs, outputs):
        try:
            session.run(inner)
        except SessionBusyError as e:
            caught.append(e)

    net = core.Net(_uid("cf_nested"))
    net.Python(nested)([], [])
    session.run(net)
    assert len(caught) == 1
