"""Queue ops (spec data.md 5.1, 5.2; runtime.md 15.8): BlobsQueue and its operators."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
from netdefs import create, feed, fetch, make_op, switch_interval

from caffe2.operators.queue_ops import BlobsQueue
from caffe2.runtime.blob import Blob, type_name
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.net import OperatorError
from caffe2.runtime.workspace import Workspace

pytestmark = pytest.mark.timeout(60)  # a safety net only: a hang fails instead of stalling

SAFETY = 10.0  # seconds; only ever reached if the code under test is broken


def new_queue(ws: Workspace, name: str = "q", capacity: int = 1, num_blobs: int = 1, **kw):
    assert ws.run_operator_once(
        make_op("CreateBlobsQueue", [], [name], capacity=capacity, num_blobs=num_blobs, **kw)
    )
    q = ws.get_blob(name).value
    assert isinstance(q, BlobsQueue)
    return q


def close(ws: Workspace, name: str = "q") -> None:
    assert ws.run_operator_once(make_op("CloseBlobsQueue", [name], []))


def local(w: Workspace, *names: str) -> None:
    """Give a (thread's child) workspace its own blobs, whatever the parent holds."""
    for n in names:
        w.create_local_blob(n)


def wait_until(pred, what: str) -> None:
    """Wait for a state another thread reaches (e.g. blocked on the queue)."""
    deadline = time.monotonic() + SAFETY
    while not pred():
        assert time.monotonic() < deadline, f"never reached: {what}"
        time.sleep(0.001)


def start(target, *args) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def join_all(threads) -> None:
    for t in threads:
        t.join(SAFETY)
        assert not t.is_alive(), "a thread stayed blocked"


@pytest.fixture
def fast_switching():
    """Switch threads very often, so races in the queue would show."""
    with switch_interval(1e-5):
        yield


# ---- CreateBlobsQueue --------------------------------------------------------------------


def test_create_makes_a_queue_with_named_slot_blobs(ws):
    feed(ws, q_1_0=[7])
    kept = ws.get_blob("q_1_0")
    q = new_queue(ws, capacity=3, num_blobs=2, field_names=["a", "b"])
    assert type_name(q) == "std::shared_ptr<caffe2::BlobsQueue>"
    assert (q.capacity, q.num_blobs, q.field_names, q.name) == (3, 2, ["a", "b"], "q")
    for i in range(3):
        for j in range(2):
            assert ws.has_blob(f"q_{i}_{j}")
    assert ws.get_blob("q_1_0") is kept and fetch(ws, "q_1_0").tolist() == [7]  # reused
    assert not ws.has_blob("q_3_0") and not ws.has_blob("q_0_2")


def test_slot_blobs_are_created_in_the_ops_workspace_and_reuse_parents():
    parent = Workspace()
    feed(parent, q_0_0=[1])
    child = parent.child()
    new_queue(child, capacity=2)
    assert child.get_blob("q_0_0") is parent.get_blob("q_0_0")
    assert "q_1_0" in child.local_blobs() and not parent.has_blob("q_1_0")


def test_each_run_makes_a_new_queue_and_closes_the_old_one(ws):
    net = create(ws, make_op("CreateBlobsQueue", [], ["q"], capacity=2), name="init")
    assert net.run()
    first = fetch(ws, "q")
    assert net.run()
    second = fetch(ws, "q")
    assert first is not second and first.closed and not second.closed


def test_recreating_the_queue_wakes_a_reader_blocked_on_the_old_one(ws):
    new_queue(ws)
    reader = create(ws, make_op("SafeDequeueBlobs", ["q"], ["x", "s"]), name="r")
    old = fetch(ws, "q")
    t = start(reader.run)
    wait_until(lambda: old.waiting()[0] == 1, "reader blocked")
    new_queue(ws)
    join_all([t])
    assert bool(fetch(ws, "s")) is True


def test_enforce_unique_name(ws):
    new_queue(ws, capacity=2, enforce_unique_name=True)
    with pytest.raises(EnforceError, match="Queue internal blob already exists: q_0_0") as e:
        ws.run_operator_once(make_op("CreateBlobsQueue", [], ["q"], enforce_unique_name=True))
    assert e.value.blob == "q_0_0"
    child = ws.child()  # names visible in the parent count too
    with pytest.raises(EnforceError, match="already exists: q_0_0"):
        child.run_operator_once(make_op("CreateBlobsQueue", [], ["q"], enforce_unique_name=True))
    new_queue(ws, "other", enforce_unique_name=True)


def test_create_checks_arguments_when_it_runs(ws):
    bad = make_op("CreateBlobsQueue", [], ["q"], num_blobs=2, field_names=["only_one"])
    net = create(ws, bad, name="init")  # args are read when the op runs, as in Caffe2
    with pytest.raises(EnforceError, match="Wrong number of fieldNames provided"):
        net.run()
    for kw in ({"capacity": 0}, {"capacity": -3}, {"num_blobs": -1}):
        with pytest.raises(EnforceError, match="CreateBlobsQueue"):
            ws.run_operator_once(make_op("CreateBlobsQueue", [], ["q2"], **kw))
    with pytest.raises(EnforceError, match="schema"):
        ws.run_operator_once(make_op("CreateBlobsQueue", [], ["a", "b"]))


# ---- enqueue / dequeue basics ------------------------------------------------------------


def test_enqueue_and_dequeue_swap_blob_contents(ws):
    new_queue(ws, capacity=1)
    ws.create_blob("x")
    enq = create(ws, make_op("EnqueueBlobs", ["q", "x"], ["x"]), name="e")
    deq = create(ws, make_op("DequeueBlobs", ["q"], ["y"]), name="d")
    a, y0, b = np.array([1.0]), np.array([-1.0]), np.array([2.0])
    ws.get_blob("x").value = a
    assert enq.run()
    assert fetch(ws, "x") is None  # the slot's (empty) contents came back
    assert fetch(ws, "q_0_0") is a  # moved, not copied
    ws.get_blob("y").value = y0
    assert deq.run()
    assert fetch(ws, "y") is a and fetch(ws, "q_0_0") is y0
    ws.get_blob("x").value = b
    assert enq.run()
    assert fetch(ws, "x") is y0  # stale slot contents go back to the writer
    assert deq.run() and fetch(ws, "y") is b


def test_fifo_across_wrap_around_with_multi_blob_records(ws):
    new_queue(ws, capacity=3, num_blobs=2)
    local(ws, "a", "b")
    enq = create(ws, make_op("SafeEnqueueBlobs", ["q", "a", "b"], ["a", "b", "s"]), name="e")
    deq = create(ws, make_op("SafeDequeueBlobs", ["q"], ["x", "y", "t"]), name="d")
    got = []
    for k in range(10):
        for i in range(k % 3 + 1):  # 1, 2 or 3 records in flight
            feed(ws, a=[k * 10 + i])
            feed(ws, b=f"s{k}{i}".encode())
            assert enq.run() and bool(fetch(ws, "s")) is False
        for _ in range(k % 3 + 1):
            assert deq.run()
            t = fetch(ws, "t")
            assert t.shape == () and t.dtype == np.bool_ and not t
            got.append((int(fetch(ws, "x")[0]), fetch(ws, "y").item()))
    want = [(k * 10 + i, f"s{k}{i}".encode()) for k in range(10) for i in range(k % 3 + 1)]
    assert got == want


def test_queue_object_api(ws):
    q = new_queue(ws, capacity=2)
    x = [Blob(np.array([1]))]
    assert q.try_write(x) and q.try_write([Blob(np.array([2]))])
    assert not q.try_write([Blob(np.array([3]))])  # full
    assert q.size() == 2 and q.waiting() == (0, 0)
    out = [Blob(), Blob(np.array(True))]  # longer lists: only num_blobs are swapped
    assert q.blocking_read(out) and out[0].value.tolist() == [1] and out[1].value
    with pytest.raises(EnforceError, match="0 blobs given for records of 1 blobs"):
        q.blocking_write([])
    q.close()
    q.close()  # idempotent
    assert q.blocking_write([Blob(np.array([4]))])  # room left: written although closed
    assert not q.blocking_write([Blob(np.array([5]))])  # closed and full
    assert [q.blocking_read(out) and out[0].value.item() for _ in range(2)] == [2, 4]
    assert not q.blocking_read(out)
    assert "closed" in repr(q)


# ---- close, drain, status ----------------------------------------------------------------


def test_close_then_drain(ws):
    new_queue(ws, capacity=4)
    local(ws, "x")
    enq = create(ws, make_op("EnqueueBlobs", ["q", "x"], ["x"]), name="e")
    for v in (1, 2):
        feed(ws, x=[v])
        assert enq.run()
    close(ws)
    safe = create(ws, make_op("SafeDequeueBlobs", ["q"], ["y", "st"]), name="s")
    plain = create(ws, make_op("DequeueBlobs", ["q"], ["y"]), name="p")
    assert plain.run() and fetch(ws, "y").tolist() == [1]
    assert safe.run() and fetch(ws, "y").tolist() == [2] and not fetch(ws, "st")
    last = fetch(ws, "y")
    assert safe.run() and bool(fetch(ws, "st")) is True
    assert fetch(ws, "y") is last  # untouched on failure
    assert plain.run() is False  # DequeueBlobs fails on a closed, empty queue
    assert fetch(ws, "y") is last


def test_write_to_closed_queue_succeeds_while_there_is_room(ws):
    new_queue(ws, capacity=2)
    local(ws, "x")
    safe = create(ws, make_op("SafeEnqueueBlobs", ["q", "x"], ["x", "st"]), name="s")
    plain = create(ws, make_op("EnqueueBlobs", ["q", "x"], ["x"]), name="p")
    close(ws)
    feed(ws, x=[1])
    assert safe.run()
    st = fetch(ws, "st")
    assert st.shape == () and st.dtype == np.bool_ and bool(st) is False  # written
    feed(ws, x=[2])
    assert plain.run()  # still room: succeeds
    feed(ws, x=[3])
    mine = fetch(ws, "x")
    assert safe.run() and bool(fetch(ws, "st")) is True  # closed and full
    assert fetch(ws, "x") is mine  # data untouched on failure
    assert plain.run() is False  # EnqueueBlobs fails: closed and full
    assert fetch(ws, "q").size() == 2


def test_dequeue_timeout(ws, caplog):
    new_queue(ws)
    net = create(ws, make_op("DequeueBlobs", ["q"], ["y"], timeout_secs=0.02), name="d")
    with caplog.at_level(logging.ERROR, logger="caffe2"):
        assert net.run() is False
    assert "DequeueBlobs timed out in 0.02 secs" in caplog.text
    feed(ws, x=[5])
    assert ws.run_operator_once(make_op("EnqueueBlobs", ["q", "x"], ["x"]))
    assert net.run() and fetch(ws, "y").tolist() == [5]  # a timeout does not break the queue
    close(ws)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="caffe2"):
        assert net.run() is False
    assert "timed out" not in caplog.text  # closed, not a timeout


def test_timed_reader_still_gets_a_record_written_while_it_waits(ws):
    q = new_queue(ws)
    net = create(ws, make_op("DequeueBlobs", ["q"], ["y"], timeout_secs=SAFETY), name="d")
    result = []
    t = start(lambda: result.append(net.run()))
    wait_until(lambda: q.waiting()[0] == 1, "reader blocked")
    feed(ws, x=[9])
    assert ws.run_operator_once(make_op("EnqueueBlobs", ["q", "x"], ["x"]))
    join_all([t])
    assert result == [True] and fetch(ws, "y").tolist() == [9]


def test_close_wakes_blocked_producers(ws):
    q = new_queue(ws, capacity=1)
    feed(ws, x=[0])
    assert ws.run_operator_once(make_op("EnqueueBlobs", ["q", "x"], ["x"]))  # now full
    results: dict[str, object] = {}

    def producer(i: int, safe: bool) -> None:
        w = ws.child()  # own data blobs, shared queue
        local(w, "x", "st")
        w.get_blob("x").value = np.array([i + 1])
        if safe:
            net = create(w, make_op("SafeEnqueueBlobs", ["q", "x"], ["x", "st"]), name=f"p{i}")
            net.run()
            results[f"p{i}"] = (bool(fetch(w, "st")), fetch(w, "x").tolist())
        else:
            net = create(w, make_op("EnqueueBlobs", ["q", "x"], ["x"]), name=f"p{i}")
            results[f"p{i}"] = (net.run(), fetch(w, "x").tolist())

    threads = [start(producer, i, i % 2 == 0) for i in range(4)]
    wait_until(lambda: q.waiting()[1] == 4, "4 producers blocked")
    close(ws)
    join_all(threads)
    assert results == {
        "p0": (True, [1]),  # Safe: status true, data untouched
        "p1": (False, [2]),  # plain: the net run failed
        "p2": (True, [3]),
        "p3": (False, [4]),
    }
    assert q.size() == 1  # the record written before close is still there


def test_close_wakes_blocked_consumers(ws):
    q = new_queue(ws, num_blobs=2)
    q2 = new_queue(ws, "q2", num_blobs=2)
    results: dict[str, object] = {}

    def consumer(kind: str) -> None:
        w = ws.child()
        local(w, "a", "b", "st")
        if kind == "plain":
            net = create(w, make_op("DequeueBlobs", ["q"], ["a", "b"]), name=kind)
            results[kind] = net.run()
            return
        if kind == "safe":
            net = create(w, make_op("SafeDequeueBlobs", ["q"], ["a", "b", "st"]), name=kind)
        elif kind == "batch":
            op = make_op("SafeDequeueBlobs", ["q"], ["a", "b", "st"], num_records=3)
            net = create(w, op, name=kind)
        else:
            op = make_op(
                "WeightedSampleDequeueBlobs", ["q", "q2"], ["a", "b", "st"], table_idx_blob=1
            )
            net = create(w, op, name=kind)
        assert net.run()
        results[kind] = (bool(fetch(w, "st")), fetch(w, "a"))

    threads = [start(consumer, k) for k in ("plain", "safe", "batch", "weighted")]
    wait_until(lambda: q.waiting()[0] + q2.waiting()[0] == 4, "4 consumers blocked")
    close(ws)
    close(ws, "q2")
    join_all(threads)
    assert results["plain"] is False
    for k in ("safe", "batch", "weighted"):
        assert results[k] == (True, None), k


def test_close_while_consumer_batches_returns_the_partial_batch(ws):
    q = new_queue(ws, capacity=4)
    net = create(ws, make_op("SafeDequeueBlobs", ["q"], ["y", "st"], num_records=3), name="d")
    feed(ws, x=[1, 2])
    assert ws.run_operator_once(make_op("EnqueueBlobs", ["q", "x"], ["x"]))
    t = start(net.run)
    wait_until(lambda: q.waiting()[0] == 1, "batching consumer blocked on record 2")
    close(ws)
    join_all([t])
    assert fetch(ws, "y").tolist() == [1, 2] and bool(fetch(ws, "st")) is False


# ---- num_records batching ----------------------------------------------------------------


def test_num_records_concatenates_along_dim_0(ws):
    new_queue(ws, capacity=8, num_blobs=2)
    local(ws, "a", "b")
    enq = create(ws, make_op("EnqueueBlobs", ["q", "a", "b"], ["a", "b"]), name="e")
    for k in range(5):
        ws.create_blob("a").value = np.full((2, 3), k, np.float32)
        ws.create_blob("b").value = np.array([f"r{k}".encode()], dtype=object)
        assert enq.run()
    close(ws)
    deq = create(ws, make_op("SafeDequeueBlobs", ["q"], ["x", "y", "st"], num_records=2), name="d")
    shapes, firsts, strings = [], [], []
    for _ in range(3):
        assert deq.run() and not fetch(ws, "st")
        x, y = fetch(ws, "x"), fetch(ws, "y")
        assert x.dtype == np.float32 and y.dtype == object
        shapes.append(x.shape)
        firsts.append(x[:, 0].tolist())
        strings.append(y.tolist())
    assert shapes == [(4, 3), (4, 3), (2, 3)]  # the last batch is partial: the queue ran dry
    assert firsts == [[0, 0, 1, 1], [2, 2, 3, 3], [4, 4]]
    assert strings == [[b"r0", b"r1"], [b"r2", b"r3"], [b"r4"]]
    x = fetch(ws, "x")
    assert deq.run() and bool(fetch(ws, "st")) is True and fetch(ws, "x") is x  # untouched


def test_num_records_outputs_own_their_data(ws):
    new_queue(ws, capacity=4)
    local(ws, "a")
    enq = create(ws, make_op("EnqueueBlobs", ["q", "a"], ["a"]), name="e")
    for k in range(3):
        feed(ws, a=[k])
        assert enq.run()
    deq = create(ws, make_op("SafeDequeueBlobs", ["q"], ["x", "st"], num_records=3), name="d")
    assert deq.run()
    x = fetch(ws, "x")
    assert x.tolist() == [0, 1, 2]
    for i in range(4):
        for b in (ws.get_blob(f"q_{i}_0"), ws.get_blob("a")):
            assert not (isinstance(b.value, np.ndarray) and np.shares_memory(b.value, x))


def test_num_records_single_0d_record_is_copied(ws):
    new_queue(ws, capacity=2)
    ws.create_blob("a").value = np.array(3.5)
    assert ws.run_operator_once(make_op("EnqueueBlobs", ["q", "a"], ["a"]))
    close(ws)
    assert ws.run_operator_once(make_op("SafeDequeueBlobs", ["q"], ["x", "st"], num_records=4))
    x = fetch(ws, "x")
    assert x.shape == () and x == 3.5 and not fetch(ws, "st")


@pytest.mark.parametrize(
    "second, message",
    [
        (np.array(1), "Empty tensor to dequeue at column 0 within 1 total columns"),
        (np.array([[1, 2]]), "cannot concatenate"),
        (np.array([1.0, 2.0]), "cannot concatenate"),
        (b"bytes", "record 1 is not a tensor"),
    ],
)
def test_num_records_mismatch_raises_and_keeps_the_bad_record(ws, second, message):
    q = new_queue(ws, capacity=4)
    local(ws, "a")
    enq = create(ws, make_op("EnqueueBlobs", ["q", "a"], ["a"]), name="e")
    for v in (np.array([1, 2], np.int64), second):
        ws.create_blob("a").value = v
        assert enq.run()
    deq = create(ws, make_op("SafeDequeueBlobs", ["q"], ["x", "st"], num_records=2), name="d")
    with pytest.raises(OperatorError, match=message) as e:
        deq.run()
    text = str(e.value)
    assert "SafeDequeueBlobs" in text and "queue q" in text and e.value.blob == "x"
    assert fetch(ws, "x").tolist() == [1, 2]  # the record read so far is delivered
    assert q.size() == 1  # the bad record was not taken
    assert ws.run_operator_once(make_op("SafeDequeueBlobs", ["q"], ["z", "st"]))
    assert fetch(ws, "z") is second


def test_a_refused_record_passes_the_wake_up_on_to_another_reader(ws):
    q = new_queue(ws, capacity=2)
    local(ws, "a")
    enq = create(ws, make_op("EnqueueBlobs", ["q", "a"], ["a"]), name="e")
    batcher = create(ws, make_op("SafeDequeueBlobs", ["q"], ["x", "st"], num_records=2), name="b")
    plain = create(ws, make_op("SafeDequeueBlobs", ["q"], ["y", "st2"]), name="p")
    errors: list[BaseException] = []

    def run_batcher() -> None:
        try:
            batcher.run()
        except OperatorError as e:
            errors.append(e)

    feed(ws, a=[1, 2])
    assert enq.run()
    tb = start(run_batcher)
    wait_until(lambda: q.waiting()[0] == 1, "batcher waits for its second record")
    tp = start(plain.run)
    wait_until(lambda: q.waiting()[0] == 2, "plain reader waits too")
    ws.get_blob("a").value = bad = np.array(3)  # 0-d: the batcher (woken first) refuses it
    assert enq.run()
    join_all([tb, tp])  # the plain reader must be woken although the batcher got the signal
    assert len(errors) == 1 and "Empty tensor to dequeue" in str(errors[0])
    assert fetch(ws, "x").tolist() == [1, 2]
    assert fetch(ws, "y") is bad and bool(fetch(ws, "st2")) is False


def test_num_records_first_record_must_be_a_tensor(ws):
    q = new_queue(ws, capacity=2)
    ws.create_blob("a").value = b"text"
    assert ws.run_operator_once(make_op("EnqueueBlobs", ["q", "a"], ["a"]))
    deq = create(ws, make_op("SafeDequeueBlobs", ["q"], ["x", "st"], num_records=2), name="d")
    with pytest.raises(OperatorError, match="record 0 is not a tensor: it holds std::string"):
        deq.run()
    assert q.size() == 1 and fetch(ws, "x") is None


def test_num_records_0d_first_record_cannot_be_extended(ws):
    new_queue(ws, capacity=2)
    local(ws, "a")
    enq = create(ws, make_op("EnqueueBlobs", ["q", "a"], ["a"]), name="e")
    for v in (np.array(1), np.array([2])):
        ws.create_blob("a").value = v
        assert enq.run()
    deq = create(ws, make_op("SafeDequeueBlobs", ["q"], ["x", "st"], num_records=2), name="d")
    with pytest.raises(OperatorError, match="first record is 0-d"):
        deq.run()


# ---- WeightedSampleDequeueBlobs ----------------------------------------------------------


def _weighted_setup(ws: Workspace, per_queue: int, seed: int, weights):
    for i in range(3):
        new_queue(ws, f"q{i}", capacity=per_queue, num_blobs=2)
        local(ws, "a", "b")
        enq = create(ws, make_op("EnqueueBlobs", [f"q{i}", "a", "b"], ["a", "b"]), name=f"e{i}")
        for k in range(per_queue):
            feed(ws, a=[i * 100000 + k])
            feed(ws, b=[-1])
            assert enq.run()
    op = make_op(
        "WeightedSampleDequeueBlobs",
        ["q0", "q1", "q2"],
        ["x", "idx", "st"],
        weights=weights or [1.0, 2.0, 7.0],
        table_idx_blob=1,
    )
    op.device_option.random_seed = seed
    return create(ws, op, name="w")


def test_weighted_sample_distribution_with_fixed_seed():
    n = 2000
    picks = []
    ws = Workspace()
    net = _weighted_setup(ws, n, seed=1234, weights=None)
    next_of = [0, 0, 0]
    for _ in range(n):
        assert net.run() and not fetch(ws, "st")
        idx = fetch(ws, "idx")
        assert idx.dtype == np.int32 and idx.shape == (1,)
        i = int(idx[0])
        picks.append(i)
        assert int(fetch(ws, "x")[0]) == i * 100000 + next_of[i]  # FIFO from the chosen queue
        next_of[i] += 1
    counts = np.bincount(picks, minlength=3)
    expected = np.array([0.1, 0.2, 0.7]) * n
    sigma = np.sqrt(expected * (1 - np.array([0.1, 0.2, 0.7])))
    assert (np.abs(counts - expected) < 5 * sigma).all(), counts
    # The same seed gives the same choices.
    ws2 = Workspace()
    net2 = _weighted_setup(ws2, 50, seed=1234, weights=None)
    again = []
    for _ in range(50):
        assert net2.run()
        again.append(int(fetch(ws2, "idx")[0]))
    assert again == picks[:50]


def test_weighted_sample_zero_weight_queue_is_never_chosen():
    ws = Workspace()
    net = _weighted_setup(ws, 200, seed=7, weights=[0.0, 1.0, 1.0])
    picks = set()
    for _ in range(200):
        assert net.run()
        picks.add(int(fetch(ws, "idx")[0]))
    assert picks == {1, 2}


def test_weighted_sample_closed_empty_queue_sets_status_and_index(ws):
    new_queue(ws, "q0", num_blobs=2)
    close(ws, "q0")
    ws.create_blob("x").value = mine = np.array([42])
    op = make_op("WeightedSampleDequeueBlobs", ["q0"], ["x", "idx", "st"], table_idx_blob=1)
    assert ws.run_operator_once(op)
    assert bool(fetch(ws, "st")) is True and fetch(ws, "idx").tolist() == [0]
    assert fetch(ws, "x") is mine


@pytest.mark.parametrize(
    "inputs, outputs, args, message",
    [
        (["q0", "q1"], ["x", "st"], {"weights": [1.0]}, "1 weights given for 2 input queues"),
        (["q0"], ["x", "st"], {"weights": [0.0]}, "Sum of weights must be positive"),
        (["q0", "q1"], ["x", "st"], {"weights": [2.0, -1.0]}, "must be non-negative"),
        (["q0"], ["x", "st"], {"table_idx_blob": 1}, "table_idx_blob"),
    ],
)
def test_weighted_sample_argument_errors(ws, inputs, outputs, args, message):
    new_queue(ws, "q0")
    new_queue(ws, "q1")
    with pytest.raises(EnforceError, match=message):
        ws.run_operator_once(make_op("WeightedSampleDequeueBlobs", inputs, outputs, **args))


# ---- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op_type, outputs",
    [
        ("EnqueueBlobs", ["a", "b"]),
        ("SafeEnqueueBlobs", ["a", "b", "st"]),
    ],
)
def test_wrong_number_of_blobs_for_the_queue_enqueue(ws, op_type, outputs):
    new_queue(ws, "myq", num_blobs=1)
    inputs = ["myq", "a", "b"]
    for n in ("a", "b"):
        feed(ws, **{n: [1]})
    net = create(ws, make_op(op_type, inputs, outputs), name="n")
    with pytest.raises(OperatorError, match=f"{op_type}: queue myq holds records of 1 blobs"):
        net.run()
    assert fetch(ws, "myq").size() == 0


@pytest.mark.parametrize(
    "op_type, outputs",
    [
        ("DequeueBlobs", ["a", "b"]),
        ("SafeDequeueBlobs", ["a", "b", "st"]),
        ("WeightedSampleDequeueBlobs", ["a", "b", "st"]),
    ],
)
def test_wrong_number_of_blobs_for_the_queue_dequeue(ws, op_type, outputs):
    new_queue(ws, "myq", num_blobs=1)
    feed(ws, x=[1])
    assert ws.run_operator_once(make_op("EnqueueBlobs", ["myq", "x"], ["x"]))
    net = create(ws, make_op(op_type, ["myq"], outputs), name="n")
    with pytest.raises(OperatorError, match=f"{op_type}: queue myq holds records of 1 blobs") as e:
        net.run()
    assert e.value.blob == "myq"
    assert fetch(ws, "myq").size() == 1  # nothing was taken


@pytest.mark.parametrize(
    "op",
    [
        make_op("EnqueueBlobs", ["notq", "x"], ["x"]),
        make_op("SafeEnqueueBlobs", ["notq", "x"], ["x", "st"]),
        make_op("DequeueBlobs", ["notq"], ["x"]),
        make_op("SafeDequeueBlobs", ["notq"], ["x", "st"]),
        make_op("SafeDequeueBlobs", ["notq"], ["x", "st"], num_records=2),
        make_op("WeightedSampleDequeueBlobs", ["notq"], ["x", "st"]),
        make_op("CloseBlobsQueue", ["notq"], []),
    ],
    ids=lambda o: f"{o.type}-{len(o.arg)}",
)
def test_input_that_is_not_a_queue(ws, op):
    feed(ws, notq=[1.0, 2.0])
    feed(ws, x=[1])
    with pytest.raises(OperatorError) as e:
        ws.run_operator_once(op)
    text = str(e.value)
    assert f"{op.type}: input 0 (notq) must hold a BlobsQueue" in text
    assert "it holds Tensor float64 [2]" in text and e.value.blob == "notq"


def test_enqueue_must_be_in_place(ws):
    new_queue(ws)
    local(ws, "x")
    for op in (
        make_op("EnqueueBlobs", ["q", "x"], ["y"]),
        make_op("SafeEnqueueBlobs", ["q", "x"], ["y", "st"]),
    ):
        with pytest.raises(EnforceError, match=r"data output 0 \(y\) must be the same blob") as e:
            create(ws, op, name="n")
        assert e.value.blob == "y"


@pytest.mark.parametrize(
    "op",
    [
        make_op("EnqueueBlobs", ["q"], []),
        make_op("EnqueueBlobs", ["q", "x"], ["x", "y"]),
        make_op("SafeEnqueueBlobs", ["q", "x"], ["x"]),
        make_op("DequeueBlobs", ["q"], []),
        make_op("DequeueBlobs", ["q", "x"], ["y"]),
        make_op("SafeDequeueBlobs", ["q"], ["x"]),
        make_op("CloseBlobsQueue", ["q"], ["x"]),
        make_op("CloseBlobsQueue", [], []),
        make_op("WeightedSampleDequeueBlobs", ["q"], ["x"]),
        make_op("WeightedSampleDequeueBlobs", [], ["x", "st"]),
    ],
    ids=lambda o: f"{o.type}-{len(o.input)}-{len(o.output)}",
)
def test_schema_counts(ws, op):
    new_queue(ws)
    feed(ws, x=[1])
    with pytest.raises(EnforceError, match="schema"):
        create(ws, op, name="n")


def test_num_records_must_be_positive(ws):
    new_queue(ws)
    with pytest.raises(EnforceError, match="num_records must be > 0"):
        create(ws, make_op("SafeDequeueBlobs", ["q"], ["x", "st"], num_records=0), name="n")


# ---- threads through nets ----------------------------------------------------------------


def _producer_net(w: Workspace, name: str, start_at: int, vector: bool = False):
    """A net enqueuing start_at, start_at + 1, ... (as int64 [1] if vector) on each run."""
    local(w, "c", "v", "st")
    assert w.run_operator_once(make_op("CreateCounter", [], ["c"], init_count=start_at))
    ops = [make_op("CountUp", ["c"], ["v"])]
    if vector:
        ops.append(make_op("Reshape", ["v"], ["v", "old_shape"], shape=[1]))
    ops.append(make_op("SafeEnqueueBlobs", ["q", "v"], ["v", "st"]))
    return create(w, *ops, name=name)


def test_producers_and_batching_consumers_through_nets(ws, fast_switching):
    n_prod, per, batch = 3, 400, 7
    new_queue(ws, capacity=5)
    barrier = threading.Barrier(n_prod + 2)
    got: list[list[int]] = [[] for _ in range(2)]
    statuses: list[bool] = []

    def produce(p: int) -> None:
        w = ws.child()
        net = _producer_net(w, f"p{p}", p * per, vector=True)
        st = w.get_blob("st")
        barrier.wait()
        for _ in range(per):
            assert net.run()
            statuses.append(bool(st.value))

    def consume(k: int) -> None:
        w = ws.child()
        local(w, "v", "st")
        op = make_op("SafeDequeueBlobs", ["q"], ["v", "st"], num_records=batch)
        net = create(w, op, name=f"c{k}")
        v, st = w.get_blob("v"), w.get_blob("st")
        barrier.wait()
        while True:
            assert net.run()
            if st.value:
                return
            assert v.value.ndim == 1 and 1 <= v.value.size <= batch
            got[k].extend(v.value.tolist())

    prods = [start(produce, p) for p in range(n_prod)]
    cons = [start(consume, k) for k in range(2)]
    join_all(prods)
    close(ws)
    join_all(cons)
    assert statuses == [False] * (n_prod * per)
    assert sorted(got[0] + got[1]) == list(range(n_prod * per))
    for k in range(2):  # each producer's records arrive in order at any one consumer
        for p in range(n_prod):
            mine = [x for x in got[k] if p * per <= x < (p + 1) * per]
            assert mine == sorted(mine)


def test_consumers_stop_producers_by_closing(ws):
    """The pipeline pattern: a consumer closes the queue; blocked producers wake and stop."""
    q = new_queue(ws, capacity=2)
    stopped = []

    def produce(p: int) -> None:
        w = ws.child()
        net = _producer_net(w, f"p{p}", 0)
        st = w.get_blob("st")
        while True:
            assert net.run()
            if st.value:
                stopped.append(p)
                return

    prods = [start(produce, p) for p in range(3)]
    deq = create(ws, make_op("DequeueBlobs", ["q"], ["v"]), name="d")
    for _ in range(10):
        assert deq.run()
    wait_until(lambda: q.waiting()[1] == 3 and q.size() == 2, "producers blocked on full queue")
    close(ws)
    join_all(prods)
    assert sorted(stopped) == [0, 1, 2]
    assert deq.run() and deq.run() and not deq.run()  # drained, then it fails


def test_stress_100k_records_exactly_once(ws, fast_switching):
    n, n_prod, n_cons = 100_000, 4, 4
    per = n // n_prod
    q = new_queue(ws, capacity=64)
    barrier = threading.Barrier(n_prod + n_cons)
    got: list[list[int]] = [[] for _ in range(n_cons)]
    failures: list[int] = []

    def produce(p: int) -> None:
        w = ws.child()
        net = _producer_net(w, f"p{p}", p * per)
        st = w.get_blob("st")
        barrier.wait()
        for _ in range(per):
            net.run()
            if st.value:
                failures.append(p)

    def consume(k: int) -> None:
        w = ws.child()
        local(w, "v", "st")
        net = create(w, make_op("SafeDequeueBlobs", ["q"], ["v", "st"]), name=f"c{k}")
        v, st, out = w.get_blob("v"), w.get_blob("st"), got[k]
        barrier.wait()
        while True:
            net.run()
            if st.value:
                return
            out.append(int(v.value))

    cons = [start(consume, k) for k in range(n_cons)]
    prods = [start(produce, p) for p in range(n_prod)]
    join_all(prods)
    close(ws)
    join_all(cons)
    assert failures == []
    everything = np.sort(np.concatenate([np.asarray(g, np.int64) for g in got]))
    assert everything.size == n
    assert np.array_equal(everything, np.arange(n))  # each record exactly once
    assert q.size() == 0 and q.waiting() == (0, 0)
