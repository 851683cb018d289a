"""Counter ops (spec 15.4): CreateCounter, CountUp, CountDown, RetrieveCount, ..."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from netdefs import create, fetch, make_op

from caffe2.operators.counter_ops import Counter
from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import Blob, type_name
from caffe2.runtime.net import OperatorError
from caffe2.runtime.serialization import deserialize_blob, serialize_blob


@pytest.fixture
def ws(ws):
    assert ws.run_operator_once(make_op("CreateCounter", [], ["c"], init_count=3))
    return ws


def test_create_counter_holds_a_counter(ws):
    c = fetch(ws, "c")
    assert isinstance(c, Counter) and c.retrieve() == 3
    assert type_name(c) == "std::unique_ptr<Counter<long>>"
    assert ws.run_operator_once(make_op("CreateCounter", [], ["d"]))
    assert fetch(ws, "d").retrieve() == 0


def test_count_up_returns_the_previous_value(ws):
    net = create(ws, make_op("CountUp", ["c"], ["v"]), make_op("RetrieveCount", ["c"], ["r"]))
    for expected in (3, 4, 5):
        assert net.run()
        v = fetch(ws, "v")
        assert v.shape == () and v.dtype == np.int64 and v == expected
        assert fetch(ws, "r").dtype == np.int64 and fetch(ws, "r") == expected + 1


def test_count_down_always_decrements(ws):
    net = create(ws, make_op("CountDown", ["c"], ["done"]), make_op("RetrieveCount", ["c"], ["r"]))
    seen = []
    for _ in range(6):
        assert net.run()
        d = fetch(ws, "done")
        assert d.shape == () and d.dtype == np.bool_
        seen.append((bool(d), int(fetch(ws, "r"))))
    assert seen == [(False, 2), (False, 1), (False, 0), (True, -1), (True, -2), (True, -3)]


def test_create_counter_run_stores_a_new_counter(ws):
    create_net = create(ws, make_op("CreateCounter", [], ["c"], init_count=2), name="init")
    create_net.run()
    first = fetch(ws, "c")
    ws.run_operator_once(make_op("CountUp", ["c"], ["v"]))
    assert first.retrieve() == 3
    create_net.run()
    assert fetch(ws, "c") is not first and fetch(ws, "c").retrieve() == 2
    assert first.retrieve() == 3  # the old counter was replaced, not reset


def test_reset_counter_and_check_counter_done(ws):
    net = create(
        ws,
        make_op("CheckCounterDone", ["c"], ["d0"]),
        make_op("ResetCounter", ["c"], ["prev"], init_count=0),
        make_op("CheckCounterDone", ["c"], ["d1"]),
    )
    assert net.run()
    assert not fetch(ws, "d0") and fetch(ws, "d1")
    assert fetch(ws, "prev").dtype == np.int64 and fetch(ws, "prev") == 3
    assert ws.run_operator_once(make_op("ResetCounter", ["c"], [], init_count=7))
    assert fetch(ws, "c").retrieve() == 7


def test_negative_init_count_is_a_construction_error(ws):
    for op in (
        make_op("CreateCounter", [], ["x"], init_count=-1),
        make_op("ResetCounter", ["c"], [], init_count=-1),
    ):
        with pytest.raises(RuntimeError, match="negative init_count is not permitted.") as e:
            create(ws, op)
        assert f"({op.type})" in str(e.value)


def test_counter_ops_need_a_counter_input(ws):
    ws.create_blob("t").value = np.zeros(1, np.int64)
    for t in ("CountUp", "CountDown", "RetrieveCount", "CheckCounterDone", "ResetCounter"):
        net = create(ws, make_op(t, ["t"], ["o"]))
        with pytest.raises(OperatorError, match="input t must hold a counter") as e:
            net.run()
        assert e.value.blob == "t" and "Tensor int64 [1]" in str(e.value)


def test_counter_schemas(ws):
    for op in (
        make_op("CountUp", ["c"], []),
        make_op("CountUp", ["c", "c"], ["o"]),
        make_op("CreateCounter", ["c"], ["o"]),
        make_op("ResetCounter", ["c"], ["a", "b"]),
        make_op("CountDown", ["c"], ["c"]),
    ):
        with pytest.raises(RuntimeError, match="did not pass schema checking"):
            create(ws, op)


def test_count_up_from_many_threads_is_atomic(ws, fast_switching):
    threads, per_thread = 8, 2000
    ws.run_operator_once(make_op("CreateCounter", [], ["c"], init_count=0))
    nets = [create(ws, make_op("CountUp", ["c"], [f"v{k}"]), name=f"n{k}") for k in range(threads)]
    results: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def work(k: int) -> None:
        start.wait()
        for _ in range(per_thread):
            nets[k].run()
            results[k].append(int(fetch(ws, f"v{k}")))

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert fetch(ws, "c").retrieve() == threads * per_thread
    # Every increment handed out a distinct previous value.
    assert sorted(v for r in results for v in r) == list(range(threads * per_thread))


def test_count_down_from_many_threads_gives_exactly_n_false(ws, fast_switching):
    n, threads, per_thread = 5000, 6, 2000
    ws.run_operator_once(make_op("CreateCounter", [], ["c"], init_count=n))
    falses = [0] * threads

    def work(k: int) -> None:
        net = create(ws, make_op("CountDown", ["c"], [f"d{k}"]), name=f"d{k}")
        for _ in range(per_thread):
            net.run()
            falses[k] += not fetch(ws, f"d{k}")

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sum(falses) == n
    assert fetch(ws, "c").retrieve() == n - threads * per_thread


def test_counter_wraps_like_int64():
    c = Counter(2**63 - 1)
    assert c.count_up() == 2**63 - 1 and c.retrieve() == -(2**63)


def test_counter_serialization_round_trip(ws):
    fetch(ws, "c").count_up()
    data = serialize_blob("c", fetch(ws, "c"))
    proto = caffe2_pb2.BlobProto.FromString(data)
    assert proto.type == "std::unique_ptr<Counter<int64_t>>"
    assert list(proto.tensor.dims) == [1] and list(proto.tensor.int64_data) == [4]
    b = Blob()
    deserialize_blob(data, b)
    assert isinstance(b.value, Counter) and b.value.retrieve() == 4
    proto.tensor.data_type = caffe2_pb2.TensorProto.INT32
    with pytest.raises(RuntimeError, match="Only int64_t counters supported"):
        deserialize_blob(proto.SerializeToString(), b)
