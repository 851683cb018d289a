"""Timer ops (spec runtime.md 15.9): TimerBegin, TimerGet, TimerEnd and their stats."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from caffe2.operators.timer_ops import Timer
from caffe2.proto import caffe2_pb2
from caffe2.runtime import pybind_state, stats
from caffe2.runtime.blob import type_name
from caffe2.runtime.net import OperatorError
from caffe2.runtime.workspace import Workspace


def make_op(op_type: str, inputs: list[str], outputs: list[str], **args) -> caffe2_pb2.OperatorDef:
    op = caffe2_pb2.OperatorDef(type=op_type, input=inputs, output=outputs)
    for k, v in args.items():
        if isinstance(v, str):
            op.arg.add(name=k, s=v.encode())
        else:
            op.arg.add(name=k, i=v)
    return op


def create(ws: Workspace, *ops: caffe2_pb2.OperatorDef, name: str = "n"):
    nd = caffe2_pb2.NetDef(name=name)
    nd.op.extend(ops)
    return ws.create_net(nd, overwrite=True)


@pytest.fixture
def ws() -> Workspace:
    return Workspace()


def test_begin_get_end(ws):
    begin = create(ws, make_op("TimerBegin", [], ["t"], counter_name="test_timer/a"), name="b")
    get = create(ws, make_op("TimerGet", ["t"], ["ns"]), name="g")
    end = create(ws, make_op("TimerEnd", ["t"], []), name="e")
    assert stats.get_stat("test_timer/a/time_ns/sum") == 0  # registered at op creation
    assert stats.get_stat("test_timer/a/time_ns/count") == 0
    assert begin.run()
    timer = ws.get_blob("t").value
    assert isinstance(timer, Timer) and timer.running and timer.name == "test_timer/a"
    assert type_name(timer) == "TimerInstance*"
    assert get.run()
    ns1 = ws.get_blob("ns").value
    assert ns1.shape == () and ns1.dtype == np.int64 and ns1 >= 0
    assert get.run()
    ns2 = int(ws.get_blob("ns").value)
    assert ns2 >= ns1  # a monotonic clock
    assert end.run()
    assert not timer.running
    total = stats.get_stat("test_timer/a/time_ns/sum")
    assert stats.get_stat("test_timer/a/time_ns/count") == 1
    assert total >= ns2
    assert pybind_state.get_stats()["test_timer/a/time_ns/count"] == 1
    # The op owns its timer: a second run restarts the same one.
    assert begin.run()
    assert ws.get_blob("t").value is timer and timer.running
    assert end.run()
    assert stats.get_stat("test_timer/a/time_ns/count") == 2
    assert stats.get_stat("test_timer/a/time_ns/sum") >= total


def test_counter_name_defaults_to_the_output_name(ws):
    assert ws.run_operator_once(make_op("TimerBegin", [], ["test_timer/default_name"]))
    assert ws.get_blob("test_timer/default_name").value.name == "test_timer/default_name"
    assert "test_timer/default_name/time_ns/sum" in stats.publish()
    assert ws.run_operator_once(make_op("TimerEnd", ["test_timer/default_name"], []))
    assert stats.get_stat("test_timer/default_name/time_ns/count") == 1


def test_two_ops_have_two_timers(ws):
    net = create(
        ws,
        make_op("TimerBegin", [], ["t1"], counter_name="test_timer/two"),
        make_op("TimerBegin", [], ["t2"], counter_name="test_timer/two"),
        make_op("TimerEnd", ["t1"], []),
        make_op("TimerEnd", ["t2"], []),
    )
    assert net.run()
    assert ws.get_blob("t1").value is not ws.get_blob("t2").value
    assert stats.get_stat("test_timer/two/time_ns/count") == 2  # one stat, two events


def test_begin_on_a_running_timer_fails(ws):
    begin = create(ws, make_op("TimerBegin", [], ["t"], counter_name="test_timer/twice"))
    assert begin.run()
    with pytest.raises(OperatorError, match="Called TimerBegin on an already running timer") as e:
        begin.run()
    assert e.value.blob == "t"
    assert "(TimerBegin)" in str(e.value)


def test_get_and_end_need_a_running_timer(ws):
    create(ws, make_op("TimerBegin", [], ["t"], counter_name="test_timer/stopped")).run()
    end = create(ws, make_op("TimerEnd", ["t"], []), name="e")
    get = create(ws, make_op("TimerGet", ["t"], ["ns"]), name="g")
    assert end.run()
    with pytest.raises(OperatorError, match="Called TimerEnd on a stopped timer") as e:
        end.run()
    assert e.value.blob == "t"
    with pytest.raises(OperatorError, match="Called TimerGet on a stopped timer"):
        get.run()
    assert stats.get_stat("test_timer/stopped/time_ns/count") == 1  # the failure published nothing


@pytest.mark.parametrize("op_type", ["TimerGet", "TimerEnd"])
def test_timer_input_must_hold_a_timer(ws, op_type):
    ws.create_blob("x").value = np.zeros(2, np.float32)
    ws.create_blob("empty")
    outs = ["o"] if op_type == "TimerGet" else []
    for name, what in (("x", "Tensor float32 [2]"), ("empty", "nullptr")):
        net = create(ws, make_op(op_type, [name], outs))
        with pytest.raises(OperatorError, match="must hold a timer") as e:
            net.run()
        assert e.value.blob == name and what in str(e.value)


def test_schemas(ws):
    ws.create_blob("t")
    for op in (
        make_op("TimerBegin", ["t"], ["u"]),
        make_op("TimerBegin", [], []),
        make_op("TimerGet", ["t"], []),
        make_op("TimerEnd", ["t"], ["o"]),
    ):
        with pytest.raises(RuntimeError, match="did not pass schema checking"):
            create(ws, op)


def test_timer_end_is_atomic():
    timer = Timer("test_timer/atomic")
    results: list[bool] = []
    lock = threading.Lock()
    for _ in range(20):
        timer.begin()
        barrier = threading.Barrier(8)

        def end(barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                timer.end()
                ok = True
            except RuntimeError:
                ok = False
            with lock:
                results.append(ok)

        threads = [threading.Thread(target=end) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results.count(True) == 20  # exactly one success per start
    assert stats.get_stat("test_timer/atomic/time_ns/count") == 20
