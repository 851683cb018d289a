"""The dag / async_dag / async_scheduling executors and prof_dag's per-operator timing."""

from __future__ import annotations

import signal
import threading

import netdefs
import numpy as np
import pytest
from netdefs import caffe2_threads

from caffe2.proto import caffe2_pb2
from caffe2.runtime import registry
from caffe2.runtime.dag_net import DEFAULT_NUM_WORKERS, DagNet, ProfDagNet, dependencies
from caffe2.runtime.errors import OperatorFailed
from caffe2.runtime.net import OperatorError, net_types
from caffe2.runtime.registry import Arg, operator
from caffe2.runtime.workspace import Workspace

BARRIER_TIMEOUT = 20.0


class _State:
    """Shared with the test-only operators (kept across module re-imports)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.order: list[str] = []
        self.barriers: dict[str, threading.Barrier] = {}


if not registry.has_operator("_DagTestLog"):
    _state = _State()

    @operator("_DagTestLog", inputs=(0, None), outputs=(0, None), args=(Arg("key", "str", ""),))
    def _log(op, state=_state):
        """Appends its key to the run order; writes a 0-d int32 into each output."""
        key = op.arg("key")
        outs = op.outputs

        def run():
            with state.lock:
                state.order.append(key)
            for b in outs:
                b.value = np.array(len(key), np.int32)

        return run

    @operator(
        "_DagTestBarrier",
        inputs=(0, None),
        outputs=(0, None),
        args=(Arg("key", "str", ""),),
    )
    def _barrier(op, state=_state):
        """Waits at the named barrier: passes only if its partners run at the same time."""
        key = op.arg("key")

        def run():
            state.barriers[key].wait()

        return run

    @operator("_DagTestFail", inputs=(0, None), outputs=(0, None), args=(Arg("mode", "str", ""),))
    def _fail(op):
        """Raises ValueError, or reports a plain failure with mode "false"."""
        mode = op.arg("mode")

        def run():
            if mode == "false":
                raise OperatorFailed()
            raise ValueError("dag boom")

        return run

    @operator("_DagTestWorkspace", inputs=(0, None), outputs=(0, None), needs_workspace=True)
    def _ws_op(op):
        """A barrier op for the dag executors (declares it touches the workspace)."""
        return lambda: None

    @operator("_DagTestRunNet", inputs=(0, None), outputs=(0, None), args=(Arg("net", "str", ""),))
    def _run_net(op):
        """Runs another net of the workspace (a nested net run from a dag worker)."""
        name = op.arg("net")

        def run():
            if not op.ws.run_net(name):
                raise op.error(f"net {name} failed")

        return run

    @operator("_DagTestInterrupt", inputs=(0, None), outputs=(0, None))
    def _interrupt(op):
        """Sends SIGINT to the main thread (a Ctrl-C while the net runs)."""
        return lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    _log.state = _state

STATE: _State = registry.get_schema("_DagTestLog").factory.state


@pytest.fixture(autouse=True)
def clean_state():
    with STATE.lock:
        STATE.order.clear()
    yield
    assert caffe2_threads() == []


def make_net(name: str, *ops, net_type: str = "dag", **fields) -> caffe2_pb2.NetDef:
    """netdefs.make_net, of type net_type (dag unless told otherwise)."""
    return netdefs.make_net(name, *ops, type=net_type, **fields)


def log(key, ins=(), outs=()):
    return ("_DagTestLog", list(ins), list(outs), {"key": key})


@pytest.fixture
def ws(ws):
    rng = np.random.RandomState(0)
    for name in ("x", "y", "z"):
        ws.create_blob(name).value = rng.standard_normal((4, 3)).astype(np.float32)
    return ws


DIAMOND = (
    ("Add", ["x", "y"], ["a"], {}),
    ("Mul", ["x", "z"], ["b"], {}),
    ("Relu", ["a"], ["ra"], {}),
    ("Sub", ["b", "y"], ["sb"], {}),
    ("Sum", ["ra", "sb", "x"], ["out"], {}),
    ("Relu", ["sb"], ["x"], {}),  # overwrites an input read by ops 0, 1, 4
)


def test_types_are_registered():
    assert {"dag", "async_dag", "async_scheduling", "prof_dag"} <= set(net_types())


@pytest.mark.parametrize("net_type", ["dag", "async_dag", "async_scheduling", "prof_dag"])
def test_same_results_as_simple(net_type):
    results = {}
    for t in ("simple", net_type):
        w = Workspace()
        rng = np.random.RandomState(1)
        for name in ("x", "y", "z"):
            w.create_blob(name).value = rng.standard_normal((64, 32)).astype(np.float32)
        net = w.create_net(make_net("d", *DIAMOND, net_type=t, num_workers=4))
        for _ in range(5):
            assert net.run()
        results[t] = {n: w.get_blob(n).value.copy() for n in ("a", "b", "ra", "sb", "out", "x")}
    for name, v in results["simple"].items():
        np.testing.assert_array_equal(results[net_type][name], v, err_msg=name)


def test_dependencies_raw_war_waw():
    w = Workspace()
    nd = make_net(
        "d",
        log("w_a", outs=["a"]),  # 0
        log("r_a", ins=["a"], outs=["b"]),  # 1: RAW on a
        log("w_c", outs=["c"]),  # 2: independent
        log("w_a2", outs=["a"]),  # 3: WAW with 0, WAR with 1
        log("r_bc", ins=["b", "c"]),  # 4: RAW on b and c
        log("w_c2", ins=["a"], outs=["c"]),  # 5: RAW on a (3), WAW with 2, WAR with 4
    )
    net = w.create_net(nd)
    assert dependencies(net.ops, w) == [[], [0], [], [0, 1], [1, 2], [2, 3, 4]]
    assert not net._sequential


def test_workspace_ops_are_barriers():
    w = Workspace()
    nd = make_net(
        "d",
        log("p", outs=["a"]),
        log("q", outs=["b"]),
        ("_DagTestWorkspace", [], [], {}),
        log("r", outs=["c"]),
        log("s", outs=["d"]),
    )
    net = w.create_net(nd)
    assert net.parents == [[], [], [0, 1], [2], [2]]
    assert net.run()
    assert STATE.order[2:] in (["r", "s"], ["s", "r"]) and set(STATE.order[:2]) == {"p", "q"}


def test_control_input_is_a_dependency():
    w = Workspace()
    nd = make_net("d", log("p", outs=["a"]), log("q", outs=["b"]))
    nd.op[1].control_input.append("a")
    net = w.create_net(nd)
    assert net.parents == [[], [0]]
    assert net._sequential


def test_a_chain_runs_sequentially_in_the_caller(ws):
    net = ws.create_net(make_net("d", *DIAMOND[:1], ("Relu", ["a"], ["r"], {})))
    assert net._sequential
    assert net.run()


def test_independent_ops_run_at_the_same_time(ws):
    STATE.barriers["pair"] = threading.Barrier(2, timeout=BARRIER_TIMEOUT)
    nd = make_net(
        "d",
        ("_DagTestBarrier", [], ["p"], {"key": "pair"}),
        ("_DagTestBarrier", [], ["q"], {"key": "pair"}),
        num_workers=2,
    )
    net = ws.create_net(nd)
    for _ in range(3):
        assert net.run()


def test_three_way_parallelism_with_enough_workers(ws):
    STATE.barriers["three"] = threading.Barrier(3, timeout=BARRIER_TIMEOUT)
    ops = [("_DagTestBarrier", [], [f"o{i}"], {"key": "three"}) for i in range(3)]
    net = ws.create_net(make_net("d", *ops, log("after", ins=["o0", "o1", "o2"]), num_workers=3))
    assert net.run()
    assert STATE.order == ["after"]


def test_failure_raises_the_simple_nets_error_and_skips_dependents(ws):
    ops = (
        log("p", outs=["a"]),
        ("_DagTestFail", ["a"], ["b"], {}),
        log("q", outs=["c"]),
        log("after_fail", ins=["b"], outs=["d"]),
    )
    errors = {}
    for t in ("simple", "dag"):
        w = Workspace()
        net = w.create_net(make_net("f", *ops, net_type=t, num_workers=2))
        with pytest.raises(OperatorError) as e:
            net.run()
        errors[t] = e.value
        assert w.last_failed_op_net_position == 1
    assert str(errors["dag"]) == str(errors["simple"])
    err = errors["dag"]
    assert (err.net_name, err.op_index, err.op_type) == ("f", 1, "_DagTestFail")
    assert "ValueError: dag boom" in str(err) and "enforce fail" in str(err)
    assert isinstance(err.__cause__, ValueError)
    assert "after_fail" not in STATE.order


def test_the_lowest_failing_op_is_reported(ws):
    ops = [("_DagTestFail", [], [f"o{i}"], {}) for i in range(4)]
    net = ws.create_net(make_net("f", *ops, num_workers=4))
    for _ in range(5):
        with pytest.raises(OperatorError) as e:
            net.run()
        assert e.value.op_index <= 1  # op 0 always starts; another may fail first


def test_plain_failure_returns_false_and_net_stays_usable(ws):
    ops = (log("p", outs=["a"]), ("_DagTestFail", [], ["b"], {"mode": "false"}))
    net = ws.create_net(make_net("f", *ops))
    assert net.run() is False
    assert ws.last_failed_op_net_position == 1
    ok = ws.create_net(make_net("ok", *DIAMOND, num_workers=3))
    assert ok.run() and ok.run()


def test_nested_dag_nets_do_not_deadlock_on_the_shared_pool(ws):
    inner = make_net("inner", log("i1", outs=["ia"]), log("i2", outs=["ib"]), num_workers=2)
    inner2 = make_net("inner2", log("j1", outs=["ja"]), log("j2", outs=["jb"]), num_workers=2)
    ws.create_net(inner)
    ws.create_net(inner2)
    outer = make_net(
        "outer",
        ("_DagTestRunNet", [], ["o1"], {"net": "inner"}),
        ("_DagTestRunNet", [], ["o2"], {"net": "inner2"}),
        num_workers=2,
    )
    net = ws.create_net(outer)
    for _ in range(20):
        assert net.run()
    assert sorted(STATE.order) == sorted(["i1", "i2", "j1", "j2"] * 20)


def test_interrupt_waits_for_running_ops_and_propagates(ws):
    ops = [("_DagTestInterrupt", [], ["i"], {})] + [log(f"k{i}", outs=[f"o{i}"]) for i in range(6)]
    net = ws.create_net(make_net("d", *ops, num_workers=3))
    assert not net._sequential
    for _ in range(5):
        with pytest.raises(KeyboardInterrupt):
            net.run()
    ok = ws.create_net(make_net("ok", *DIAMOND, num_workers=3))
    assert ok.run()


def test_threads_are_bounded_and_not_leaked(ws):
    net = ws.create_net(make_net("d", *DIAMOND, num_workers=3))
    net.run()
    before = threading.active_count()
    for _ in range(50):
        assert net.run()
    assert threading.active_count() <= before + 2  # the shared pool's helpers, at most
    extra = [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.name.startswith("caffe2-dag")
    ]
    assert all(not n.startswith("caffe2") for n in extra)


def test_num_workers_sources():
    w = Workspace()
    assert w.create_net(make_net("a")).num_workers == DEFAULT_NUM_WORKERS
    assert w.create_net(make_net("b", num_workers=3)).num_workers == 3
    nd = make_net("c", num_workers=3)
    nd.arg.add(name="num_workers", i=5)
    assert w.create_net(nd).num_workers == 5
    nd = make_net("d")
    nd.arg.add(name="num_workers", f=2.0)
    with pytest.raises(RuntimeError, match="num_workers does not have the right field"):
        w.create_net(nd)
    with pytest.raises(RuntimeError, match="num_workers must not be negative"):
        w.create_net(make_net("e", num_workers=-1))


def test_one_worker_runs_in_order(ws):
    ops = [log(f"k{i}", outs=[f"o{i}"]) for i in range(5)]
    net = ws.create_net(make_net("d", *ops, num_workers=1))
    assert isinstance(net, DagNet) and net._sequential
    assert net.run()
    assert STATE.order == [f"k{i}" for i in range(5)]
    assert net.stats() is None


# ---- prof_dag ------------------------------------------------------------------------------
def test_prof_dag_stats(ws):
    net = ws.create_net(make_net("p", *DIAMOND, net_type="prof_dag"))
    assert isinstance(net, ProfDagNet)
    for _ in range(3):
        assert net.run()
    st = net.stats()
    assert st["net"] == "p" and st["runs"] == 3
    assert [o["index"] for o in st["ops"]] == list(range(6))
    assert [o["type"] for o in st["ops"]] == ["Add", "Mul", "Relu", "Sub", "Sum", "Relu"]
    for o in st["ops"]:
        assert o["count"] == 3 and o["total_seconds"] > 0
        assert o["mean_seconds"] == pytest.approx(o["total_seconds"] / 3)
    assert st["types"]["Relu"]["count"] == 6
    assert st["types"]["Relu"]["total_seconds"] == pytest.approx(
        st["ops"][2]["total_seconds"] + st["ops"][5]["total_seconds"]
    )
    net.reset_stats()
    st = net.stats()
    assert st["runs"] == 0 and all(o["count"] == 0 and o["mean_seconds"] == 0 for o in st["ops"])


def test_prof_dag_failures(ws):
    ops = (log("p", outs=["a"]), ("_DagTestFail", [], ["b"], {}), log("q", outs=["c"]))
    net = ws.create_net(make_net("p", *ops, net_type="prof_dag"))
    with pytest.raises(OperatorError, match="dag boom") as e:
        net.run()
    assert e.value.op_index == 1 and ws.last_failed_op_net_position == 1
    st = net.stats()
    assert st["runs"] == 0 and [o["count"] for o in st["ops"]] == [1, 0, 0]
    nd = make_net("p2", ("_DagTestFail", [], ["b"], {"mode": "false"}), net_type="prof_dag")
    assert ws.create_net(nd).run() is False
