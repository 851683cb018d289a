"""DistributedSession on a Ray cluster of two Ray nodes that this module starts itself.

Both Ray nodes run on this machine, on loopback, as separate raylets (``ray.cluster_utils``);
every process they start is stopped, by PID, when the module ends. Caffe2 nodes are placed
on them by custom resources (Node kwargs) and by a label selector (the session's placement
mapping). One node's process is killed mid-run.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="DistributedSession needs the extra caffe2py[ray]")

from ray.cluster_utils import Cluster  # noqa: E402

from caffe2.distributed import (  # noqa: E402
    DistributedSession,
    NodeLostError,
    PlacementError,
)
from caffe2.python import core  # noqa: E402
from caffe2.python.net_builder import ops  # noqa: E402
from caffe2.python.session import TaskError  # noqa: E402
from caffe2.python.task import Node, Task, TaskGroup, WorkspaceType, final_output  # noqa: E402

_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",  # the test cluster only
    "RAY_USAGE_STATS_ENABLED": "0",
}
_STORE = 80 * 1024 * 1024


def _pids(node) -> list[int]:
    pids = []
    for infos in node.all_processes.values():
        for info in infos:
            if info.process is not None:
                pids.append(info.process.pid)
    return pids


@pytest.fixture(scope="module")
def cluster():
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(_ENV)
    if ray.is_initialized():  # a single-node instance left by another module
        ray.shutdown()
    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {"caffe2_a": 1},
            "labels": {"caffe2-role": "a"},
            "object_store_memory": _STORE,
            "include_dashboard": False,
        },
    )
    worker = c.add_node(
        num_cpus=1,
        resources={"caffe2_b": 1},
        labels={"caffe2-role": "b"},
        object_store_memory=_STORE,
    )
    started = _pids(c.head_node) + _pids(worker)
    try:
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        deadline = time.monotonic() + 10
        for pid in started:  # stop, by PID, whatever the cluster left behind
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def ray_nodes(cluster):
    """{'a': Ray node id, 'b': Ray node id} once the driver is connected."""
    DistributedSession(address=cluster.address).close()  # connects this process
    ids = {}
    for n in ray.nodes():
        if n["Alive"]:
            ids[n["Labels"].get("caffe2-role")] = n["NodeID"]
    assert set(ids) >= {"a", "b"}
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}
    return ids


@pytest.fixture
def session(cluster, ray_nodes):
    s = DistributedSession(
        address=cluster.address,
        placement={"mn_b": {"labels": {"caffe2-role": "b"}}},
        heartbeat_timeout=5.0,
        stop_timeout=10.0,
    )
    yield s
    s.close()


def _two_node_group(value_a, value_b):
    with TaskGroup(WorkspaceType.GLOBAL) as tg:
        with Node("mn_a", resources={"caffe2_a": 1}):
            with Task():
                a = final_output(ops.ConstantFill([], "mn_value", shape=[2], value=value_a))
        with Node("mn_b"):
            with Task():
                b = final_output(ops.ConstantFill([], "mn_value", shape=[2], value=value_b))
    return tg, a, b


def test_nodes_are_placed_on_different_ray_nodes_and_keep_their_own_blobs(session, ray_nodes):
    tg, a, b = _two_node_group(1.0, 2.0)
    session.run(tg)
    placed = session.nodes()
    assert placed["mn_a"]["ray_node"] == ray_nodes["a"]
    assert placed["mn_b"]["ray_node"] == ray_nodes["b"]
    assert placed["mn_a"]["actor"].endswith("/mn_a")
    np.testing.assert_array_equal(a.fetch(), [1.0, 1.0])
    np.testing.assert_array_equal(b.fetch(), [2.0, 2.0])
    # Same blob name, two workspaces.
    np.testing.assert_array_equal(session.fetch_blob("mn_value", "mn_a"), [1.0, 1.0])
    np.testing.assert_array_equal(session.fetch_blob("mn_value", "mn_b"), [2.0, 2.0])
    # The actors live as long as the session: a rerun uses the same processes.
    session.run(tg)
    assert session.nodes() == placed


def test_killing_a_node_mid_run_is_reported_quickly_and_the_node_comes_back_empty(
    session, tmp_path
):
    started = tmp_path / "b_started"
    tg, _, _ = _two_node_group(1.0, 2.0)
    session.run(tg)  # start both nodes
    session.feed_blob("mn_state", np.array([7.0], np.float32), "mn_b")
    victim = session.nodes()["mn_b"]["pid"]
    survivor = session.nodes()["mn_a"]["pid"]

    marker = str(started)

    def long_op(inputs, outputs):
        open(marker, "w").close()
        time.sleep(120)

    with TaskGroup(WorkspaceType.GLOBAL) as tg2:
        with Node("mn_a", resources={"caffe2_a": 1}):
            with Task():
                ops.ConstantFill([], "mn_ticks", shape=[], value=0.0)
                one = ops.ConstantFill([], "mn_one", shape=[], value=1.0)
                with ops.loop(1_000_000):
                    ops.Add(["mn_ticks", one], "mn_ticks")
                    ops.Python(lambda i, o: time.sleep(0.002))([], [])
        with Node("mn_b"):
            with Task() as b_task:
                ops.Python(long_op)([], [])

    errors = []

    def run():
        try:
            session.run(tg2)
        except BaseException as e:
            errors.append((time.monotonic(), e))

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline, "node mn_b never started its task"
        time.sleep(0.02)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    runner.join(60)
    assert not runner.is_alive(), "run() hung after a node died"
    ((ended_at, err),) = errors
    assert ended_at - killed_at < 15, f"took {ended_at - killed_at:.1f}s to report the loss"
    assert isinstance(err, NodeLostError) and isinstance(err, TaskError)
    assert err.node == "mn_b" and b_task.name in err.tasks
    assert "mn_b" in str(err) and "global workspace is gone" in str(err)

    # The other node was told to stop, and stopped; it is alive with its workspace.
    ticks = float(session.fetch_blob("mn_ticks", "mn_a"))
    assert 0 < ticks < 1_000_000
    assert session.nodes()["mn_a"]["pid"] == survivor
    assert "mn_b" not in session.nodes()

    # The next run starts mn_b again, on its Ray node, with an empty workspace.
    session.run(tg)
    assert session.nodes()["mn_b"]["pid"] != victim
    assert "mn_state" not in session.blob_names("mn_b")


def test_an_op_failure_on_one_node_stops_the_other_and_names_everything(session):
    bad = core.Net("mn_bad_net")
    bad.ConstantFill([], "mn_bad_x", shape=[], value=1.0)

    def explode(inputs, outputs):
        raise ZeroDivisionError("node b exploded")

    bad.Python(explode)([], [])
    bad_step = core.execution_step("mn_bad_step", bad)
    with TaskGroup(WorkspaceType.GLOBAL) as tg:
        with Node("mn_a", resources={"caffe2_a": 1}):
            with Task():
                ops.ConstantFill([], "mn_spin", shape=[], value=0.0)
                one = ops.ConstantFill([], "mn_spin_one", shape=[], value=1.0)
                with ops.loop(1_000_000):
                    ops.Add(["mn_spin", one], "mn_spin")
                    ops.Python(lambda i, o: time.sleep(0.002))([], [])
        with Node("mn_b"):
            bad_task = Task(step=bad_step)
    t0 = time.monotonic()
    with pytest.raises(TaskError) as e:
        session.run(tg)
    assert time.monotonic() - t0 < 20
    err = e.value
    assert err.node == "mn_b" and err.task == bad_task.name
    assert err.step == "mn_bad_step" and err.net == "mn_bad_net"
    text = str(err)
    assert "op #1 (Python)" in text and "node b exploded" in text
    assert "Remote traceback" in text and "ZeroDivisionError" in text
    assert float(session.fetch_blob("mn_spin", "mn_a")) < 1_000_000  # stopped early


def test_a_node_no_ray_node_can_host_is_refused_at_once(session):
    with TaskGroup() as tg:
        with Node("mn_nowhere", labels={"caffe2-role": "c"}):
            Task(step=core.Net("mn_nowhere_net"))
    t0 = time.monotonic()
    with pytest.raises(PlacementError, match="mn_nowhere") as e:
        session.run(tg)
    assert time.monotonic() - t0 < 5
    assert "caffe2-role" in str(e.value) and e.value.node == "mn_nowhere"


def test_a_node_whose_ray_node_is_full_times_out_with_a_clear_error(cluster, ray_nodes):
    s = DistributedSession(address=cluster.address, placement_timeout=2.0)
    try:
        with TaskGroup() as tg:
            for name in ("mn_full_1", "mn_full_2"):  # caffe2_b: 1 on the cluster
                with Node(name, resources={"caffe2_b": 1}):
                    Task(step=core.Net(f"{name}_net"))
        t0 = time.monotonic()
        with pytest.raises(PlacementError, match="did not start within 2 s") as e:
            s.run(tg)
        assert time.monotonic() - t0 < 10
        assert e.value.node in ("mn_full_1", "mn_full_2")
    finally:
        s.close()
