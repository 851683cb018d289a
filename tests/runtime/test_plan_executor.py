"""The plan executor (spec runtime.md 2.5): iteration, stop blobs, concurrency, reporters."""

from __future__ import annotations

import logging
import signal
import threading

import numpy as np
import pytest
from netdefs import add_net, caffe2_threads, make_plan, step

from caffe2.proto import caffe2_pb2
from caffe2.runtime import registry
from caffe2.runtime.errors import OperatorFailed
from caffe2.runtime.net import OperatorError
from caffe2.runtime.plan_executor import Continuation, PlanRun, StepWrapper, run_plan
from caffe2.runtime.registry import Arg, operator

BARRIER_TIMEOUT = 20.0


class _State:
    """What the test-only operators share with the tests (kept across module re-imports)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[dict] = []
        self.barriers: dict[str, threading.Barrier] = {}
        self.calls: dict[str, int] = {}


if not registry.has_operator("_PlanTestRecord"):
    _state = _State()

    @operator("_PlanTestRecord", inputs=(0, 1), outputs=(0, 1), args=(Arg("key", "str", ""),))
    def _record(op, state=_state):
        """Appends who ran it (thread, workspace, op instance, GLOBAL_WORKSPACE_ID) to records."""
        key = op.arg("key")

        def run():
            gid = op.ws.get_blob("GLOBAL_WORKSPACE_ID")
            with state.lock:
                state.records.append(
                    {
                        "key": key,
                        "thread": threading.current_thread().name,
                        "ws": op.ws,
                        "op": op,
                        "gid": None if gid is None else int(gid.value),
                    }
                )

        return run

    @operator("_PlanTestFail", inputs=(0, 1), outputs=(0, 1), args=(Arg("mode", "str", "raise"),))
    def _fail(op, state=_state):
        """Fails: "raise" raises ValueError, "false" reports a plain failure, "first_false"
        reports a failure on its first run only."""
        mode = op.arg("mode")

        def run():
            with state.lock:
                n = state.calls[op.net_name] = state.calls.get(op.net_name, 0) + 1
            if mode == "raise":
                raise ValueError("boom")
            if mode == "false" or (mode == "first_false" and n == 1):
                raise OperatorFailed()

        return run

    @operator(
        "_PlanTestBarrier",
        inputs=(0, 1),
        outputs=(0, 1),
        args=(Arg("key", "str", ""), Arg("at", "int", 0)),
    )
    def _barrier(op, state=_state):
        """Waits at the named barrier (on its at-th run only, if at is set): passes only if
        its partners run at the same time."""
        key, at = op.arg("key"), op.arg("at")
        calls = [0]

        def run():
            calls[0] += 1
            if not at or calls[0] == at:
                state.barriers[key].wait()

        return run

    @operator("_PlanTestInterrupt", inputs=0, outputs=0)
    def _interrupt(op, state=_state):
        """Sends SIGINT to the main thread on its first run (a Ctrl-C while the plan waits)."""

        def run():
            with state.lock:
                n = state.calls[op.net_name] = state.calls.get(op.net_name, 0) + 1
            if n == 1:
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

        return run

    _record.state = _state

STATE: _State = registry.get_schema("_PlanTestRecord").factory.state


def _records(key: str) -> list[dict]:
    with STATE.lock:
        return [r for r in STATE.records if r["key"] == key]


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    with STATE.lock:
        STATE.records.clear()
        STATE.calls.clear()
    yield
    assert caffe2_threads() == []


# ---- builders ------------------------------------------------------------------------------
def inc(plan, name, counter):
    return add_net(plan, name, ("Add", [counter, "one"], [counter], {}))


def record(plan, name, key, *inputs):
    return add_net(plan, name, ("_PlanTestRecord", list(inputs), [], {"key": key}))


def fail(plan, name, mode="raise"):
    return add_net(plan, name, ("_PlanTestFail", [], [], {"mode": mode}))


def barrier(plan, name, key):
    return add_net(plan, name, ("_PlanTestBarrier", [], [], {"key": key}))


@pytest.fixture
def ws(ws):
    ws.create_blob("one").value = np.array([1], np.int32)
    for name in ("c", "d", "e"):
        ws.create_blob(name).value = np.array([0], np.int32)
    return ws


def val(ws, name):
    return int(ws.get_blob(name).value[0])


def set_stop(ws, name, value, shape=(1,)):
    ws.create_blob(name).value = np.full(shape, value, np.bool_)


# ---- plan level ----------------------------------------------------------------------------
def test_empty_plan_returns_true(ws, caplog):
    with caplog.at_level(logging.WARNING, logger="caffe2"):
        assert ws.run_plan(caffe2_pb2.PlanDef(name="p"))
    assert "Nothing to run - did you define a correct plan?" in caplog.text


def test_duplicate_net_names_in_plan(ws):
    plan = make_plan(step("s", ["n"]))
    inc(plan, "n", "c")
    inc(plan, "n", "d")
    with pytest.raises(RuntimeError, match='contains networks of the same name "n"'):
        ws.run_plan(plan)


def test_should_continue_must_be_callable(ws):
    plan = make_plan(step("s", ["n"]))
    inc(plan, "n", "c")
    with pytest.raises(TypeError, match="should_continue"):
        run_plan(ws, plan, should_continue=3)


def test_top_level_steps_run_in_order_and_compile_lazily(ws, caplog):
    plan = make_plan(step("first", ["bad"]), step("second", ["n"]))
    fail(plan, "bad", "false")
    inc(plan, "n", "c")
    with caplog.at_level(logging.ERROR, logger="caffe2"):
        assert run_plan(ws, plan) is False
    assert "Failed initializing step first" in caplog.text
    assert ws.get_net("bad") is not None
    assert ws.get_net("n") is None  # the second top-level step was never compiled
    assert val(ws, "c") == 0


def test_run_every_ms_on_top_level_step_is_ignored(ws):
    plan = make_plan(step("s", ["n"], num_iter=3, run_every_ms=10**6))
    inc(plan, "n", "c")
    assert ws.run_plan(plan)
    assert val(ws, "c") == 3


# ---- iteration -----------------------------------------------------------------------------
@pytest.mark.parametrize("fields, expected", [({}, 1), ({"num_iter": 5}, 5), ({"num_iter": 0}, 0)])
def test_num_iter(ws, fields, expected):
    plan = make_plan(step("s", ["n1", "n2"], **fields))
    inc(plan, "n1", "c")
    inc(plan, "n2", "d")
    assert ws.run_plan(plan)
    assert (val(ws, "c"), val(ws, "d")) == (expected, expected)


def test_num_iter_on_substeps(ws):
    inner = step("inner", ["n"], num_iter=3)
    plan = make_plan(step("outer", substeps=[inner], num_iter=4))
    inc(plan, "n", "c")
    assert ws.run_plan(plan)
    assert val(ws, "c") == 12


def test_external_should_continue_is_and_ed_with_num_iter(ws):
    seen = []

    def cont(i):
        seen.append(i)
        return i < 2

    plan = make_plan(step("s", ["n"], num_iter=10), step("t", ["m"], num_iter=1))
    inc(plan, "n", "c")
    inc(plan, "m", "d")
    assert run_plan(ws, plan, cont)
    assert val(ws, "c") == 2
    assert seen[:3] == [0, 1, 2]
    assert val(ws, "d") == 1
    assert seen[3:] == [0, 1]  # external first, then the step's own limit


def test_nets_are_created_once_and_reused_across_iterations_and_steps(ws):
    plan = make_plan(step("s1", ["r"], num_iter=3), step("s2", ["r"]))
    record(plan, "r", "r")
    assert ws.run_plan(plan)
    ops = {id(r["op"]) for r in _records("r")}
    assert len(_records("r")) == 4 and len(ops) == 1
    net = ws.get_net("r")
    assert ws.run_plan(plan)  # it existed before this run: re-created once
    assert ws.get_net("r") is not net
    assert len({id(r["op"]) for r in _records("r")}) == 2


def test_substeps_are_compiled_before_anything_runs(ws):
    # n2 reads "made", which only exists once n1 is instantiated (outputs are created empty).
    plan = make_plan(step("outer", substeps=[step("a", ["n1"]), step("b", ["n2"])]))
    add_net(plan, "n1", ("Add", ["c", "one"], ["made"], {}))
    add_net(plan, "n2", ("Add", ["made", "one"], ["d"], {}))
    assert ws.run_plan(plan)
    assert val(ws, "d") == 2


# ---- stop blob -----------------------------------------------------------------------------
def stop_plan(*steps):
    plan = make_plan(*steps)
    inc(plan, "inc", "c")
    add_net(plan, "check", ("GE", ["c", "lim"], ["stop"], {}))
    inc(plan, "after", "d")
    return plan


@pytest.fixture
def stop_ws(ws):
    ws.create_blob("lim").value = np.array([3], np.int32)
    return ws


def test_stop_blob_checked_after_every_net(stop_ws):
    plan = stop_plan(step("s", ["inc", "check", "after"], should_stop_blob="stop"))
    assert stop_ws.run_plan(plan)
    assert (val(stop_ws, "c"), val(stop_ws, "d")) == (3, 2)


def test_stop_blob_checked_after_the_first_net_not_before(stop_ws):
    set_stop(stop_ws, "stop", True)
    plan = stop_plan(step("s", ["inc", "check", "after"], should_stop_blob="stop"))
    assert stop_ws.run_plan(plan)
    assert (val(stop_ws, "c"), val(stop_ws, "d")) == (1, 0)


def test_stop_blob_checked_after_every_substep(stop_ws):
    subs = [step("a", ["inc"]), step("b", ["check"]), step("c", ["after"])]
    plan = stop_plan(step("s", substeps=subs, should_stop_blob="stop"))
    assert stop_ws.run_plan(plan)
    assert (val(stop_ws, "c"), val(stop_ws, "d")) == (3, 2)


def test_stop_blob_stops_a_concurrent_step_once_per_iteration(stop_ws):
    subs = [step("a", ["inc"]), step("b", ["after"])]
    plan = stop_plan(
        step("s", substeps=[step("chk", ["check"])] + subs, should_stop_blob="stop"),
    )
    # Concurrent: c and d advance together; the check net runs in the same iteration.
    plan.execution_step[0].concurrent_substeps = True
    assert stop_ws.run_plan(plan)
    assert val(stop_ws, "c") == val(stop_ws, "d")
    assert 3 <= val(stop_ws, "c") <= 4


def test_only_once_with_stop_blob_runs_one_iteration(stop_ws):
    plan = stop_plan(step("s", ["inc"], should_stop_blob="stop", only_once=True))
    set_stop(stop_ws, "stop", False)
    assert stop_ws.run_plan(plan)
    assert val(stop_ws, "c") == 1


def test_stop_blob_may_be_produced_by_the_steps_own_nets(stop_ws):
    plan = stop_plan(step("s", ["inc", "check"], should_stop_blob="stop"))
    assert not stop_ws.has_blob("stop")
    assert stop_ws.run_plan(plan)
    assert val(stop_ws, "c") == 3


def test_stop_blob_any_one_element_shape(stop_ws):
    set_stop(stop_ws, "flag", True, shape=(1, 1))
    plan = stop_plan(step("s", ["inc"], should_stop_blob="flag"))
    assert stop_ws.run_plan(plan)
    assert val(stop_ws, "c") == 1


def test_uninitialized_stop_blob_reads_false(stop_ws):
    stop_ws.create_blob("never")
    plan = stop_plan(step("s", ["inc", "check"], should_stop_blob="never"))
    # "never" stays empty: the step would loop forever, so stop it from outside.
    assert run_plan(stop_ws, plan, lambda i: i < 5)
    assert val(stop_ws, "c") == 5


def test_missing_stop_blob_is_a_compile_error(ws):
    plan = make_plan(step("s", ["n"], should_stop_blob="nope"))
    inc(plan, "n", "c")
    with pytest.raises(RuntimeError, match="blob nope does not exist") as e:
        ws.run_plan(plan)
    assert "step 's'" in str(e.value)


def test_create_workspace_substep_cannot_provide_the_parents_stop_blob(stop_ws):
    sub = step("sub", ["check"], create_workspace=True)
    plan = stop_plan(step("s", substeps=[sub], should_stop_blob="stop"))
    with pytest.raises(RuntimeError, match="blob stop does not exist"):
        stop_ws.run_plan(plan)
    sub.create_workspace = False
    plan = stop_plan(step("s", substeps=[step("a", ["inc"]), sub], should_stop_blob="stop"))
    assert stop_ws.run_plan(plan)
    assert val(stop_ws, "c") == 3


@pytest.mark.parametrize(
    "value, match",
    [
        (np.array([1], np.int32), "expects a scalar boolean"),
        (np.array([True, False]), "expects a scalar boolean"),
        (np.zeros((0,), np.bool_), "expects a scalar boolean"),
        (b"yes", "wrong type for the Blob instance"),
    ],
)
def test_stop_blob_must_be_a_scalar_bool_tensor(ws, value, match):
    ws.create_blob("flag").value = value
    plan = make_plan(step("outer", substeps=[step("s", ["n"], should_stop_blob="flag")]))
    inc(plan, "n", "c")
    with pytest.raises(RuntimeError, match=match) as e:
        ws.run_plan(plan)
    assert "step 'outer/s'" in str(e.value)
    assert "Offending Blob name: flag" in str(e.value)


def test_num_iter_with_stop_blob_is_an_error(stop_ws):
    plan = stop_plan(step("s", ["inc", "check"], should_stop_blob="stop", num_iter=3))
    with pytest.raises(RuntimeError, match="Must not specify num_iter if should_stop_blob is set"):
        stop_ws.run_plan(plan)
    # the continuation test is built last: the nets were created before the error
    assert stop_ws.get_net("check") is not None


@pytest.mark.parametrize("only_once", [True, False])
def test_only_once_without_stop_blob_is_not_supported(ws, only_once):
    plan = make_plan(step("s", ["n"], only_once=only_once))
    inc(plan, "n", "c")
    with pytest.raises(RuntimeError, match="not supported"):
        ws.run_plan(plan)


def test_step_that_could_never_read_its_stop_blob_is_refused(ws):
    ws.create_blob("flag")
    plan = make_plan(step("s", should_stop_blob="flag"))
    with pytest.raises(RuntimeError, match="would never finish"):
        ws.run_plan(plan)
    # With an external test the loop has a way out, so it runs (Caffe2's behaviour).
    calls = []
    assert run_plan(ws, plan, lambda i: calls.append(i) or i < 3)
    assert calls == [0, 1, 2, 3]


# ---- compile errors ------------------------------------------------------------------------
def test_undefined_net(ws):
    plan = make_plan(step("outer", substeps=[step("inner", ["n", "ghost"])]))
    inc(plan, "n", "c")
    with pytest.raises(RuntimeError, match="ExecutionStep inner uses undefined net ghost") as e:
        ws.run_plan(plan)
    assert "enforce fail" in str(e.value) and "step 'outer/inner'" in str(e.value)


def test_both_substeps_and_nets(ws):
    plan = make_plan(step("s", ["n"], substeps=[step("t", ["n"])]))
    inc(plan, "n", "c")
    with pytest.raises(
        RuntimeError, match="An ExecutionStep should either have substep or networksbut not both."
    ):
        ws.run_plan(plan)


def test_report_net_needs_report_interval(ws):
    plan = make_plan(step("s", ["n"], report_net="n"))
    inc(plan, "n", "c")
    with pytest.raises(RuntimeError, match="A report_interval must be provided"):
        ws.run_plan(plan)


def test_unknown_net_type_is_network_not_found(ws, caplog):
    plan = make_plan(step("s", ["n"]))
    add_net(plan, "n", ("Add", ["c", "one"], ["c"], {}), type="no_such_type")
    with pytest.raises(RuntimeError, match="Network n not found."):
        ws.run_plan(plan)


def test_net_construction_errors_propagate_with_the_step(ws):
    plan = make_plan(step("s", ["n"]))
    add_net(plan, "n", ("Add", ["missing", "one"], ["x"], {}))
    with pytest.raises(RuntimeError, match="Encountered a non-existing input blob: missing") as e:
        ws.run_plan(plan)
    assert "(raised in plan step 's')" in e.value.__notes__


# ---- failures in sequential steps ----------------------------------------------------------
def test_operator_error_propagates_unchanged_and_names_the_step(ws):
    plan = make_plan(step("outer", substeps=[step("ok", ["n"]), step("inner", ["bad"])]))
    inc(plan, "n", "c")
    fail(plan, "bad")
    with pytest.raises(OperatorError, match="ValueError: boom") as e:
        ws.run_plan(plan)
    assert "net 'bad', op #0 (_PlanTestFail)" in str(e.value)
    assert e.value.__notes__ == ["(raised in plan step 'outer/inner')"]
    assert ws.last_failed_op_net_position == 0
    # the workspace is still usable
    assert ws.run_net("n") and val(ws, "c") == 2


def test_false_from_a_substep_stops_the_step(ws):
    plan = make_plan(step("outer", substeps=[step("a", ["bad"]), step("b", ["n"])], num_iter=3))
    fail(plan, "bad", "false")
    inc(plan, "n", "c")
    assert ws.run_plan(plan) is False
    assert val(ws, "c") == 0


# ---- concurrency ---------------------------------------------------------------------------
def test_concurrent_substeps_run_at_the_same_time(ws):
    STATE.barriers["pair"] = threading.Barrier(2, timeout=BARRIER_TIMEOUT)
    par = step("par", substeps=[step("a", ["b1"]), step("b", ["b2"])], concurrent_substeps=True)
    plan = make_plan(par)
    barrier(plan, "b1", "pair")
    barrier(plan, "b2", "pair")
    assert ws.run_plan(plan)


def test_concurrent_substeps_run_in_worker_threads_every_iteration(ws):
    subs = [step("a", ["ra"]), step("b", ["rb"])]
    plan = make_plan(step("par", substeps=subs, concurrent_substeps=True, num_iter=3))
    record(plan, "ra", "a")
    record(plan, "rb", "b")
    assert ws.run_plan(plan)
    recs = _records("a") + _records("b")
    assert len(_records("a")) == len(_records("b")) == 3
    assert all(r["thread"].startswith("caffe2 step par") for r in recs)


def test_concurrent_failure_raises_one_runtime_error_and_stops_siblings(ws):
    loop = step("loop", ["n"], num_iter=10**9)
    bad = step("inner", substeps=[step("deep", ["bad"])])
    plan = make_plan(step("outer", substeps=[loop, bad], concurrent_substeps=True))
    inc(plan, "n", "c")
    fail(plan, "bad")
    with pytest.raises(RuntimeError) as e:
        ws.run_plan(plan)
    msg = str(e.value)
    assert msg.count("One of the workers died with an unhandled exception") == 1
    assert "net 'bad', op #0 (_PlanTestFail)" in msg and "ValueError: boom" in msg
    assert "in step 'outer/inner/deep'" in msg
    assert "enforce fail" in msg
    assert isinstance(e.value.__cause__, OperatorError)
    assert val(ws, "c") < 10**9  # the sibling stopped looping
    # the workspace is still usable
    plan2 = make_plan(step("again", ["n"]))
    inc(plan2, "n", "d")
    assert ws.run_plan(plan2)


def test_concurrent_false_returns_false(ws, caplog):
    plan = make_plan(
        step("par", substeps=[step("a", ["bad"]), step("b", ["n"])], concurrent_substeps=True)
    )
    fail(plan, "bad", "false")
    inc(plan, "n", "c")
    with caplog.at_level(logging.ERROR, logger="caffe2"):
        assert ws.run_plan(plan) is False
    assert "One of the workers failed." in caplog.text
    assert "Failed initializing step par" in caplog.text


def test_nested_concurrent_failure_is_reported_once_per_level(ws):
    inner = step("inner", substeps=[step("x", ["bad"]), step("y", ["n"])], concurrent_substeps=True)
    plan = make_plan(step("outer", substeps=[inner, step("z", ["n"])], concurrent_substeps=True))
    fail(plan, "bad")
    inc(plan, "n", "c")
    with pytest.raises(RuntimeError) as e:
        ws.run_plan(plan)
    msg = str(e.value)
    assert msg.count("One of the workers died with an unhandled exception") == 2
    assert "in step 'outer/inner/x'" in msg


def test_interrupt_while_waiting_for_workers_stops_them_and_propagates(ws):
    # Instances started only by num_concurrent_instances get the plain external test, so only
    # the run-wide stop flag set on the interrupt ends their loops.
    loop = step("loop", ["n", "intr"], num_iter=10**9)
    plan = make_plan(step("multi", substeps=[loop], num_concurrent_instances=2))
    inc(plan, "n", "c")
    add_net(plan, "intr", ("_PlanTestInterrupt", [], [], {}))
    with pytest.raises(KeyboardInterrupt):
        ws.run_plan(plan)
    assert val(ws, "c") < 10**9
    assert ws.run_net("n")  # the workspace is still usable


def _compiled(ws, plan, index=0):
    run = PlanRun(ws, plan)
    s = plan.execution_step[index]
    return run, StepWrapper(run, s, ws, Continuation(None, ()), s.name)


def test_got_failure_is_sticky_on_a_compiled_step(ws):
    plan = make_plan(
        step("par", substeps=[step("a", ["flaky"]), step("b", ["n"])], concurrent_substeps=True)
    )
    fail(plan, "flaky", "first_false")
    inc(plan, "n", "c")
    run, wrapper = _compiled(ws, plan)
    assert run.execute(wrapper) is False
    c_after_failure = val(ws, "c")
    assert c_after_failure <= 1
    # "flaky" would succeed now, but the compiled step keeps its failure: workers skip.
    assert run.execute(wrapper) is False
    assert STATE.calls["flaky"] == 1
    assert val(ws, "c") == c_after_failure


def test_got_failure_is_fresh_per_execution_with_create_workspace(ws):
    plan = make_plan(
        step(
            "par",
            substeps=[step("a", ["flaky"]), step("b", ["n"])],
            concurrent_substeps=True,
            create_workspace=True,
        )
    )
    fail(plan, "flaky", "first_false")
    inc(plan, "n", "c")
    run, wrapper = _compiled(ws, plan)
    assert run.execute(wrapper) is False
    assert run.execute(wrapper) is True
    assert STATE.calls["flaky"] == 2


def test_children_of_a_concurrent_step_stop_after_a_sibling_returns_false(ws):
    # "loop" would run ~forever; it stops because its continuation includes !gotFailure.
    loop = step("loop", substeps=[step("l", ["n"])], num_iter=10**9)
    plan = make_plan(step("par", substeps=[loop, step("b", ["bad"])], concurrent_substeps=True))
    inc(plan, "n", "c")
    fail(plan, "bad", "false")
    assert ws.run_plan(plan) is False
    assert val(ws, "c") < 10**9


@pytest.mark.parametrize("concurrent", [False, True])
def test_num_concurrent_instances_share_the_compiled_substep(ws, concurrent):
    plan = make_plan(
        step(
            "multi",
            substeps=[step("w", ["r"])],
            num_concurrent_instances=3,
            concurrent_substeps=concurrent,
        )
    )
    record(plan, "r", "r")
    assert ws.run_plan(plan)
    recs = _records("r")
    assert len(recs) == 3
    assert len({r["thread"] for r in recs}) == 3
    assert len({id(r["op"]) for r in recs}) == 1  # one net instance shared by the threads


def test_num_concurrent_instances_with_create_workspace_compile_per_thread(ws):
    ws.create_blob("NODE_ID").value = np.array([2], np.int32)
    sub = step("w", ["r"], create_workspace=True)
    plan = make_plan(step("multi", substeps=[sub, step("v", ["r2"])], num_concurrent_instances=2))
    record(plan, "r", "r")
    record(plan, "r2", "r2")
    assert ws.run_plan(plan)
    recs = _records("r")
    assert len(recs) == 2 and len({id(r["ws"]) for r in recs}) == 2
    assert all(r["ws"].parent is ws for r in recs)
    assert sorted(r["gid"] for r in recs) == [(2 << 16) + 0, (2 << 16) + 1]
    assert len(_records("r2")) == 2 and len({id(r["op"]) for r in _records("r2")}) == 1
    assert ws.get_net("r") is None  # instantiated in the children only


def test_num_concurrent_instances_zero_runs_nothing(ws):
    plan = make_plan(
        step(
            "multi",
            substeps=[step("a", ["n"]), step("b", ["n"])],
            concurrent_substeps=True,
            num_concurrent_instances=0,
            num_iter=2,
        )
    )
    inc(plan, "n", "c")
    assert ws.run_plan(plan)
    assert val(ws, "c") == 0


def test_num_concurrent_instances_is_ignored_by_a_step_with_nets(ws):
    plan = make_plan(step("s", ["r"], num_concurrent_instances=4))
    record(plan, "r", "r")
    assert ws.run_plan(plan)
    assert [r["thread"] for r in _records("r")] == [threading.current_thread().name]


# ---- create_workspace and workspace ids ----------------------------------------------------
def test_create_workspace_child_shares_parent_blobs_and_drops_new_ones(ws):
    sub = step("sub", ["n", "r"], create_workspace=True)
    plan = make_plan(step("outer", substeps=[sub], num_iter=3))
    add_net(plan, "n", ("Add", ["c", "one"], ["c"], {}), ("Add", ["c", "one"], ["tmp"], {}))
    record(plan, "r", "r")
    assert ws.run_plan(plan)
    assert val(ws, "c") == 3  # writes went to the parent's blob
    assert not ws.has_blob("tmp")
    assert ws.get_net("n") is None and ws.get_net("r") is None
    recs = _records("r")
    assert len({id(r["ws"]) for r in recs}) == 3  # a fresh child per execution
    assert len({id(r["op"]) for r in recs}) == 3
    assert all(r["gid"] is None for r in recs)  # no NODE_ID: no GLOBAL_WORKSPACE_ID


def test_global_workspace_id(ws):
    ws.create_blob("NODE_ID").value = np.array([3, 9], np.int32)
    subs = [step("a", ["r"], create_workspace=True), step("b", ["r"], create_workspace=True)]
    plan = make_plan(step("outer", substeps=subs, num_iter=2))
    record(plan, "r", "r", "GLOBAL_WORKSPACE_ID")
    assert ws.run_plan(plan)
    assert [r["gid"] for r in _records("r")] == [(3 << 16) + i for i in range(4)]
    assert not ws.has_blob("GLOBAL_WORKSPACE_ID")
    # the sequence restarts with every run_plan
    with STATE.lock:
        STATE.records.clear()
    assert ws.run_plan(plan)
    assert _records("r")[0]["gid"] == 3 << 16


def test_node_id_must_be_an_int32_tensor(ws):
    ws.create_blob("NODE_ID").value = np.array([1.0], np.float32)
    plan = make_plan(step("outer", substeps=[step("a", ["n"], create_workspace=True)]))
    inc(plan, "n", "c")
    with pytest.raises(RuntimeError, match="NODE_ID must hold an int32 tensor") as e:
        ws.run_plan(plan)
    assert "step 'outer/a'" in str(e.value)


def test_global_workspace_id_overflow(ws):
    ws.create_blob("NODE_ID").value = np.array([0], np.int32)
    plan = make_plan(
        step("outer", substeps=[step("a", create_workspace=True)], num_iter=(1 << 16) + 1)
    )
    with pytest.raises(
        RuntimeError, match="Integer overflow while calculating GLOBAL_WORKSPACE_ID"
    ):
        ws.run_plan(plan)


# ---- needsOverride -------------------------------------------------------------------------
def _preexisting(ws, name="n", counter="d"):
    nd = caffe2_pb2.NetDef(name=name)
    nd.op.add(type="Add", input=[counter, "one"], output=[counter])
    return ws.create_net(nd)


def test_preexisting_net_is_recreated_once_per_plan_run(ws):
    old = _preexisting(ws)
    plan = make_plan(step("s1", ["n"]), step("s2", ["n"]))
    inc(plan, "n", "c")
    assert ws.run_plan(plan)
    assert (val(ws, "c"), val(ws, "d")) == (2, 0)
    assert ws.get_net("n") is not old


def test_needs_override_quirk_first_use_in_a_child_workspace(ws):
    old = _preexisting(ws)
    plan = make_plan(
        step("outer", substeps=[step("child", ["n"], create_workspace=True)]),
        step("parent", ["n"]),
    )
    inc(plan, "n", "c")
    assert ws.run_plan(plan)
    # the child used the plan's def; the parent then reused the stale pre-existing net
    assert (val(ws, "c"), val(ws, "d")) == (1, 1)
    assert ws.get_net("n") is old


# ---- reporters -----------------------------------------------------------------------------
def test_report_substep_first_runs_after_one_interval_and_once_more_at_the_end(ws):
    report = step("report", ["r"], run_every_ms=3_600_000)
    plan = make_plan(step("outer", substeps=[step("work", ["n"], num_iter=5), report]))
    inc(plan, "n", "c")
    record(plan, "r", "report")
    assert ws.run_plan(plan)
    assert val(ws, "c") == 5
    recs = _records("report")
    assert len(recs) == 1  # no run at start (interval is an hour), one final run
    assert recs[0]["thread"].startswith("caffe2 report step 'outer/report'")


def test_report_net_runs_once_more_when_the_step_finishes(ws):
    plan = make_plan(step("s", ["n"], num_iter=3, report_net="r", report_interval=3600))
    inc(plan, "n", "c")
    record(plan, "r", "report")
    assert ws.run_plan(plan)
    assert len(_records("report")) == 1


def test_report_interval_zero_runs_back_to_back(ws):
    STATE.barriers["third"] = threading.Barrier(2, timeout=BARRIER_TIMEOUT)
    # "work" can only finish once the reporter has run three times while it waits.
    report = step("report", ["r"], run_every_ms=0)
    plan = make_plan(step("outer", substeps=[step("work", ["wait"]), report]))
    barrier(plan, "wait", "third")
    add_net(
        plan,
        "r",
        ("_PlanTestRecord", [], [], {"key": "report"}),
        ("_PlanTestBarrier", [], [], {"key": "third", "at": 3}),
    )
    assert ws.run_plan(plan)
    # Three runs while "work" waited. The step may end while the third run is still going,
    # in which case the reporter exits without a final run (Caffe2's race).
    assert len(_records("report")) >= 3


def test_failing_report_step_is_logged_and_does_not_fail_the_step(ws, caplog):
    report = step("report", ["bad"], run_every_ms=3_600_000)
    plan = make_plan(step("outer", substeps=[step("work", ["n"]), report]))
    inc(plan, "n", "c")
    fail(plan, "bad", "false")
    with caplog.at_level(logging.WARNING, logger="caffe2"):
        assert ws.run_plan(plan)
    assert "Error running report step." in caplog.text


def test_failing_report_net_is_logged(ws, caplog):
    plan = make_plan(step("s", ["n"], report_net="bad", report_interval=3600))
    inc(plan, "n", "c")
    fail(plan, "bad", "false")
    with caplog.at_level(logging.WARNING, logger="caffe2"):
        assert ws.run_plan(plan)
    assert "Error running report_net." in caplog.text


def test_exception_in_a_reporter_is_logged_not_lost(ws, caplog):
    report = step("report", ["bad"], run_every_ms=3_600_000)
    plan = make_plan(step("outer", substeps=[step("work", ["n"]), report]))
    inc(plan, "n", "c")
    fail(plan, "bad", "raise")
    with caplog.at_level(logging.ERROR, logger="caffe2"):
        assert ws.run_plan(plan)
    assert "Unhandled exception in report step 'outer/report'" in caplog.text
    assert "ValueError: boom" in caplog.text


def test_reporters_are_joined_when_the_step_raises(ws):
    report = step("report", ["r"], run_every_ms=3_600_000)
    plan = make_plan(step("outer", substeps=[step("work", ["bad"]), report]))
    fail(plan, "bad")
    record(plan, "r", "report")
    with pytest.raises(OperatorError):
        ws.run_plan(plan)
    assert len(_records("report")) == 1  # the final run happened before the error surfaced


def test_report_substep_with_create_workspace_gets_a_fresh_child_each_run(ws):
    report = step("report", ["r"], run_every_ms=3_600_000, create_workspace=True)
    outer = step("outer", substeps=[step("work", ["n"]), report])
    plan = make_plan(step("top", substeps=[outer], num_iter=3))
    inc(plan, "n", "c")
    record(plan, "r", "report")
    assert ws.run_plan(plan)
    # each of the 3 executions of outer starts and stops the reporter: one final run each
    recs = _records("report")
    assert len(recs) == 3 and len({id(r["ws"]) for r in recs}) == 3
    assert ws.get_net("r") is None


def test_report_substeps_count_towards_concurrency(ws):
    report = step("report", ["r"], run_every_ms=3_600_000)
    plan = make_plan(
        step("outer", substeps=[step("work", ["w"]), report], concurrent_substeps=True)
    )
    record(plan, "w", "work")
    record(plan, "r", "report")
    assert ws.run_plan(plan)
    (rec,) = _records("work")
    assert rec["thread"].startswith("caffe2 step outer")  # one recurring substep, one thread


def test_concurrent_step_with_only_report_substeps_checks_its_stop_blob(stop_ws):
    report = step("report", ["inc", "check"], run_every_ms=0)
    plan = stop_plan(
        step(
            "outer",
            substeps=[report, step("r2", ["after"], run_every_ms=3_600_000)],
            concurrent_substeps=True,
            should_stop_blob="stop",
        )
    )
    assert stop_ws.run_plan(plan)
    assert val(stop_ws, "c") >= 3
