"""DistributedSession on a local single-node Ray instance (one per module): compilation,
Python ops, outputs, setup nets, and the bad inputs the session must name clearly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="DistributedSession needs the extra caffe2py[ray]")

from caffe2.distributed import (  # noqa: E402
    BlobTransferError,
    ClusterConnectionError,
    DistributedSession,
    NodeLostError,
    PlanTransferError,
    PythonOpTransferError,
)
from caffe2.distributed.compile import python_op_tokens  # noqa: E402
from caffe2.distributed.testing import start_local_ray, stop_local_ray  # noqa: E402
from caffe2.proto import caffe2_pb2  # noqa: E402
from caffe2.python import core, workspace  # noqa: E402
from caffe2.python.net_builder import ops  # noqa: E402
from caffe2.python.session import TaskError  # noqa: E402
from caffe2.python.task import Node, Task, TaskGroup, WorkspaceType, final_output  # noqa: E402


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_cluster_address_fails_fast_naming_it():
    connected = ray.is_initialized()  # not when this module runs first, as it does
    address = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(ClusterConnectionError, match=address) as e:
        DistributedSession(address=address, connect_timeout=3.0)
    assert time.monotonic() - t0 < 15
    if not connected:
        assert "Cannot reach" in str(e.value) and not ray.is_initialized()


def test_another_cluster_address_than_the_connected_one_is_refused(local_ray):
    address = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(ClusterConnectionError, match=address):
        DistributedSession(address=address)


def test_without_ray_the_import_error_names_the_extra():
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import caffe2.python.session as s\n"
        "assert s.LocalSession\n"
        "try:\n"
        "    s.DistributedSession\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "caffe2py[ray]" in out.stdout


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the tests of this module that need one."""
    start_local_ray()
    yield
    stop_local_ray()


@pytest.fixture
def session(local_ray):
    s = DistributedSession()
    yield s
    s.close()


def test_importable_from_caffe2_python_session(local_ray):
    from caffe2.python.session import DistributedSession as FromSession

    assert FromSession is DistributedSession


def test_each_node_is_an_actor_with_its_own_workspace(session):
    with TaskGroup(WorkspaceType.GLOBAL) as tg:
        for i in range(3):
            with Node(f"ds_node_{i}"):
                with Task():
                    final_output(ops.ConstantFill([], "ds_same_name", shape=[], value=float(i)))
    session.run(tg)
    nodes = session.nodes()
    assert {f"ds_node_{i}" for i in range(3)} <= set(nodes)
    assert len({nodes[f"ds_node_{i}"]["pid"] for i in range(3)}) == 3
    assert os.getpid() not in {n["pid"] for n in nodes.values()}
    for i in range(3):
        assert float(session.fetch_blob("ds_same_name", f"ds_node_{i}")) == i


def test_compiled_form_is_protobuf_bytes_per_node(session):
    with TaskGroup() as tg:
        with Node("ds_c1"):
            Task(step=core.Net("ds_c1_net"))
        with Node("ds_c2"):
            Task(step=core.Net("ds_c2_net"))
    compiled = DistributedSession.compile(tg)
    nodes = compiled.obj.nodes
    assert [n.node for n in nodes] == ["ds_c1", "ds_c2"]
    for n in nodes:
        plan = caffe2_pb2.PlanDef.FromString(n.plan_bytes)
        assert isinstance(n.plan_bytes, bytes) and len(plan.execution_step) == 1
        assert {net.name for net in plan.network} >= {f"{n.node}_net"}


def test_python_ops_travel_with_their_functions_and_run_on_the_node(session):
    def whoami(inputs, outputs):
        outputs[0].feed(np.array([os.getpid()], dtype=np.int64))

    net = core.Net("ds_pyop")
    net.Python(whoami)([], ["ds_pid"])  # registered on the driver, under a token
    with Node("ds_pyop_node"):
        t = Task(step=net, outputs=["ds_pid"])
    session.run(t)
    (pid,) = t.outputs()[0].fetch()
    assert pid == session.nodes()["ds_pyop_node"]["pid"] != os.getpid()


def test_python_op_tokens_found_in_nested_nets(local_ray):
    inner = core.Net("ds_inner")
    inner.Python(lambda i, o: None)([], [])
    outer = core.Net("ds_outer")
    outer.Do([], [], net=inner.Proto(), **{"inner_blobs": [], "outer_blobs_idx": []})
    plan = core.Plan("ds_nested")
    plan.AddStep(core.execution_step("ds_nested_step", outer))
    assert len(python_op_tokens(plan.Proto())) == 1


def test_an_unpicklable_python_op_runs_on_the_driver(session):
    lock = threading.Lock()
    seen = []

    def record(inputs, outputs, ws):
        with lock:  # the lock keeps the function from pickling: it runs here
            seen.append((os.getpid(), sorted(ws.blobs), ws.fetch_blob("ds_drv_in").tolist()))
        outputs[0].feed(inputs[0].data * 2)

    net = core.Net("ds_drv")
    x = net.ConstantFill([], "ds_drv_in", shape=[2], value=3.0)
    net.Python(record, pass_workspace=True)([x], ["ds_drv_out"])
    with Node("ds_drv_node"):
        t = Task(step=net, outputs=["ds_drv_out"])
    session.run(t)
    assert seen == [(os.getpid(), ["ds_drv_in", "ds_drv_out"], [3.0, 3.0])]
    np.testing.assert_array_equal(t.outputs()[0].fetch(), [6.0, 6.0])
    np.testing.assert_array_equal(session.fetch_blob("ds_drv_out", "ds_drv_node"), [6.0, 6.0])


def test_setup_net_list_runs_on_the_driver_before_the_plan(session):
    workspace.ResetWorkspace()
    setup = core.Net("ds_setup")
    setup.ConstantFill([], "ds_setup_blob", shape=[], value=5.0)
    with Node("ds_setup_node"):
        t = Task(step=core.Net("ds_setup_work"))
    session.run(t, setup_net_list=[setup])
    assert float(workspace.FetchBlob("ds_setup_blob")) == 5.0
    assert not session.has_blob("ds_setup_blob", "ds_setup_node")


def test_outputs_are_fetched_back_with_the_run(session):
    with Node("ds_out_node"):
        with Task() as t:
            v = final_output(ops.ConstantFill([], "ds_out_v", shape=[3], value=1.5))
            s = final_output(ops.ConstantFill([], "ds_out_s", shape=[], value=2.0))
    session.run(t)
    session.remove_blob("ds_out_v", "ds_out_node")  # the fetched values stay on the driver
    got = v.fetch()
    np.testing.assert_array_equal(got, [1.5, 1.5, 1.5])
    got[:] = 0  # fetch returns a copy each time
    np.testing.assert_array_equal(v.fetch(), [1.5, 1.5, 1.5])
    assert float(s.fetch()) == 2.0


# ---- bad input --------------------------------------------------------------------------------


def test_a_plan_that_fails_to_deserialize_on_the_worker(session):
    with Node("ds_badplan"):
        t = Task(step=core.Net("ds_badplan_net"))
    compiled = DistributedSession.compile(t)
    compiled.obj.nodes[0].plan_bytes = b"\xff\xfe not a PlanDef"
    t0 = time.monotonic()
    with pytest.raises(PlanTransferError) as e:
        session.run(compiled)
    assert time.monotonic() - t0 < 10
    assert e.value.node == "ds_badplan"
    assert "ds_badplan" in str(e.value) and "task_group_plan" in str(e.value)
    assert "deserialize" in str(e.value)


def test_a_blob_that_does_not_pickle_cannot_be_fed(session):
    with pytest.raises(BlobTransferError) as e:
        session.feed_blob("ds_lock_blob", threading.Lock(), "ds_feed_node")
    assert e.value.node == "ds_feed_node" and e.value.blob == "ds_lock_blob"
    assert "ds_lock_blob" in str(e.value) and "ds_feed_node" in str(e.value)
    session.feed_blob("ds_fine", np.arange(3), "ds_feed_node")
    np.testing.assert_array_equal(session.fetch_blob("ds_fine", "ds_feed_node"), np.arange(3))


def test_an_output_that_is_not_a_tensor_names_node_and_blob_on_fetch(session):
    with Node("ds_counter_node"):
        with Task() as t:
            counter = final_output(ops.CreateCounter([], "ds_counter", init_count=0))
    session.run(t)
    with pytest.raises(BlobTransferError, match="ds_counter.*ds_counter_node") as e:
        counter.fetch()
    assert e.value.blob == "ds_counter" and e.value.node == "ds_counter_node"
    with pytest.raises(BlobTransferError, match="ds_counter"):
        session.fetch_blob("ds_counter", "ds_counter_node")


def test_a_python_op_function_that_cannot_load_on_the_node(session, tmp_path):
    mod = tmp_path / "ds_vanishing_module.py"
    mod.write_text("def f(inputs, outputs):\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import ds_vanishing_module
    finally:
        sys.path.remove(str(tmp_path))
    mod.unlink()  # the function pickles by reference to a module the node cannot import
    net = core.Net("ds_vanish")
    net.Python(ds_vanishing_module.f)([], [])
    with Node("ds_vanish_node"):
        t = Task(step=net)
    with pytest.raises(PythonOpTransferError, match="ds_vanish_node") as e:
        session.run(t)
    assert e.value.token and e.value.token in str(e.value)
    assert "ds_vanishing_module" in str(e.value)


def test_a_node_that_stops_answering_is_reported_by_the_heartbeat(local_ray, tmp_path):
    s = DistributedSession(heartbeat_interval=0.5, heartbeat_timeout=2.0)
    started = tmp_path / "started"
    marker = str(started)

    def wait(inputs, outputs):
        open(marker, "w").close()
        time.sleep(60)

    net = core.Net("ds_hang")
    net.Python(wait)([], [])
    with Node("ds_hang_node"):
        t = Task(step=net)
    s.feed_blob("ds_hang_x", np.ones(1), "ds_hang_node")
    pid = s.nodes()["ds_hang_node"]["pid"]
    errors = []
    runner = threading.Thread(target=lambda: errors.append(_catch(s.run, t)))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
        t0 = time.monotonic()
        runner.join(30)
        assert not runner.is_alive()
        assert time.monotonic() - t0 < 10
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    (err,) = errors
    assert isinstance(err, NodeLostError) and err.node == "ds_hang_node"
    assert "heartbeat" in str(err) and "global workspace is gone" in str(err)
    s.run(core.Net("ds_after_hang"))  # the session goes on
    s.close()


def _catch(fn, *args):
    try:
        fn(*args)
    except BaseException as e:
        return e
    return None


def test_failure_in_one_task_of_a_node_names_that_task(session):
    with TaskGroup(WorkspaceType.PRIVATE) as tg:
        with Node("ds_two_tasks"):
            Task(step=core.Net("ds_fine_task"))
            bad = core.Net("ds_bad_task_net")
            bad.Add(["ds_nothing", "ds_nothing"], "ds_sum")
            bad_task = Task(step=bad)
    with pytest.raises(TaskError) as e:
        session.run(tg)
    assert e.value.task == bad_task.name and e.value.node == "ds_two_tasks"
    assert e.value.net == "ds_bad_task_net" and "ds_nothing" in str(e.value)
