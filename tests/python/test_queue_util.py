"""queue_util (spec data.md 5.3): Queue, its reader and writer, enqueue/dequeue, close_queue;
run through LocalSession and TaskGroups."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from caffe2.python import core, workspace
from caffe2.python.dataset import Dataset
from caffe2.python.net_builder import ops
from caffe2.python.pipeline import pipe
from caffe2.python.queue_util import Queue, QueueWrapper, close_queue, dequeue, enqueue
from caffe2.python.schema import FeedRecord, InitEmptyRecord, NewRecord, Struct
from caffe2.python.session import LocalSession
from caffe2.python.task import Task, TaskGroup, WorkspaceType
from caffe2.runtime.pybind_state import runtime_workspace_of

REC = Struct(("uid", np.int64), ("val", np.float32))


def source(ws, n, name="src"):
    init = core.Net(name + "_init")
    with core.NameScope(name):
        blobs = NewRecord(init, REC)
        FeedRecord(blobs, [np.arange(n, dtype=np.int64), np.arange(n, dtype=np.float32) / 2], ws)
    ws.run(init)
    return Dataset(blobs, name=name)


def sink(session, name="dst"):
    init = core.Net(name + "_init")
    with core.NameScope(name):
        ds = Dataset(InitEmptyRecord(init, REC.clone_schema()), name=name)
    session.run(init)
    return ds


def column(ws, ds, field):
    return ws.blobs[str(ds.content()[field]())].fetch()


def queue_object(ws, queue):
    return runtime_workspace_of(ws).get_blob(str(queue.queue())).value


# ---- naming and construction ---------------------------------------------------------------
def test_handler_name_is_unique_and_builder_prefixed():
    q1, q2 = Queue(capacity=1), Queue(capacity=1)
    assert re.fullmatch(r"queue(_\d+)?/handler", str(q1.queue()))
    assert str(q1.queue()) != str(q2.queue())
    named = Queue(capacity=1, name="my_q")
    assert re.fullmatch(r"my_q(_\d+)?/handler", str(named.queue()))
    with TaskGroup():
        with Task(name="qtask") as t:
            inside = Queue(capacity=2)
    assert str(inside.queue()) == t.name + "/queue/handler"
    assert not hasattr(q1, "name")  # processor_name(queue) is 'Queue', as in Caffe2
    assert q1.capacity == 1


@pytest.mark.parametrize("bad", [0, -3, 1.5, "2", True])
def test_bad_capacity_names_the_queue(bad):
    with pytest.raises(ValueError, match=r"queue .*handler: capacity must be an int >= 1"):
        Queue(capacity=bad)


def test_capacity_accepts_numpy_ints():
    assert Queue(capacity=np.int64(3)).capacity == 3


@pytest.mark.parametrize("bad", [0, -1, 2.0])
def test_bad_num_dequeue_records(bad):
    with pytest.raises(ValueError, match="num_dequeue_records must be an int >= 1"):
        Queue(capacity=2, num_dequeue_records=bad)


def test_reader_needs_a_schema_first():
    q = Queue(capacity=3)
    with pytest.raises(AssertionError, match=r"needs a schema.*" + re.escape(str(q.queue()))):
        q.reader()
    with pytest.raises(AssertionError, match="does not have a schema"):
        q.setup(core.Net("q_setup"))
    # A schema given up front is enough.
    assert Queue(capacity=3, schema=REC).reader().schema() is REC


def test_setup_creates_the_queue_with_capacity_and_fields():
    q = Queue(capacity=7, schema=REC)
    init = core.Net("q_init")
    q.setup(init)
    (op,) = init.Proto().op
    assert op.type == "CreateBlobsQueue" and list(op.output) == [str(q.queue())]
    args = {a.name: a for a in op.arg}
    assert args["capacity"].i == 7
    assert args["num_blobs"].i == 2
    assert list(args["field_names"].strings) == [b"uid", b"val"]


def test_reader_and_writer_nets():
    q = Queue(capacity=4, schema=REC, num_dequeue_records=3)
    init, exit_ = core.Net("rw_init"), core.Net("rw_exit")
    reader = q.reader()
    reader.setup_ex(init, exit_)
    nets, status, fields = reader.read_ex(init, exit_)
    assert re.fullmatch(r"dequeue(_\d+)?", nets[0].Name())
    (op,) = nets[0].Proto().op
    assert op.type == "SafeDequeueBlobs"
    assert {a.name: a.i for a in op.arg}["num_records"] == 3
    net = nets[0].Name()
    assert [str(f) for f in fields] == [net + "/uid", net + "/val"]
    assert str(status) == net + "/status"
    assert init.get_attributes(TaskGroup.LOCAL_SETUP) == [q]
    assert [o.type for o in exit_.Proto().op] == ["CloseBlobsQueue"]

    writer = q.writer()
    w_init, w_exit = core.Net("w_init"), core.Net("w_exit")
    writer.setup_ex(w_init, w_exit)
    write_nets, st = writer.write_record_ex(NewRecord(core.Net("w_rec"), REC), w_init, w_exit)
    (enq,) = write_nets[0].Proto().op
    assert enq.type == "SafeEnqueueBlobs" and enq.input[0] == str(q.queue())
    assert enq.output[-1] == str(st)
    assert w_init.get_attributes(TaskGroup.LOCAL_SETUP) == [q]
    assert (q.num_readers(), q.num_writers()) == (1, 1)


def test_writer_field_count_mismatch_names_the_queue():
    q = Queue(capacity=2, schema=REC)
    with pytest.raises(ValueError, match=r"Cannot write 1 blobs into queue .*handler.*2 fields"):
        q.writer().write_ex([core.BlobReference("x")], core.Net("a"), core.Net("b"), "st")


# ---- enqueue / dequeue -----------------------------------------------------------------------
def test_dequeue_names():
    net = core.Net("deq_names")
    blobs, status = dequeue(net, "some_queue", 2)
    assert [str(b) for b in blobs] == [f"{net}/data:0", f"{net}/data:1"]
    assert str(status) == f"{net}/status"
    with core.NameScope("scope"):
        scoped, _ = dequeue(net, "some_queue", 1, status="st", field_names=["f"])
    assert str(scoped[0]) == f"scope/{net}/f"
    with pytest.raises(ValueError, match="2 field names"):
        dequeue(net, "some_queue", 3, field_names=["a", "b"])


def test_enqueue_copies_repeated_blobs(caplog):
    ws = workspace.C.Workspace()
    init = core.Net("enq_init")
    q = init.CreateBlobsQueue([], "enq_queue", capacity=2, num_blobs=3)
    a = init.Const(np.array([1, 2, 3], dtype=np.int64))
    b = init.Const(np.array([9], dtype=np.int64))
    net = core.Net("enq")
    with caplog.at_level(logging.WARNING):
        status = enqueue(net, q, [a, b, a])
    assert "Need to copy blob" in caplog.text
    assert [op.type for op in net.Proto().op] == ["Copy", "SafeEnqueueBlobs"]
    assert str(status) == f"{net}/status"
    deq = core.Net("deq")
    out, st = dequeue(deq, q, 3)
    ws.run(init)
    ws.run(net)
    ws.run(deq)
    assert not ws.blobs[str(st)].fetch()
    np.testing.assert_array_equal(ws.blobs[str(out[0])].fetch(), [1, 2, 3])
    np.testing.assert_array_equal(ws.blobs[str(out[1])].fetch(), [9])
    np.testing.assert_array_equal(ws.blobs[str(out[2])].fetch(), [1, 2, 3])


def test_close_queue_wraps_step():
    ws = workspace.C.Workspace()
    init = core.Net("cq_init")
    q = init.CreateBlobsQueue([], "cq_queue", capacity=2, num_blobs=1)
    x = init.Const(np.array([5], dtype=np.int64))
    ws.run(init)
    produce = core.Net("cq_produce")
    enqueue(produce, q, [x])
    step = close_queue(core.execution_step("cq_step", produce), q)
    assert re.fullmatch(r"close_queue_net(_\d+)?_wraper_step", step.Name())
    sub_names = [s.Name() for s in step.Substeps()]
    assert sub_names[0] == "cq_step" and sub_names[1].endswith("_step")
    ws.run(core.Plan(step))
    consume = core.Net("cq_consume")
    out, st = dequeue(consume, q, 1)
    ws.run(consume)  # the record written before the close is still there
    assert not ws.blobs[str(st)].fetch()
    np.testing.assert_array_equal(ws.blobs[str(out[0])].fetch(), [5])
    ws.run(consume)  # closed and drained: status set, does not block
    assert ws.blobs[str(st)].fetch()


# ---- through sessions ------------------------------------------------------------------------
@pytest.mark.parametrize("capacity", [1, 3, 100])
def test_queue_between_tasks_keeps_order_and_closes(capacity):
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 50)
    dst = sink(session)
    with TaskGroup() as tg:
        q = Queue(capacity=capacity)
        assert pipe(src.reader(), q) is q
        assert pipe(q, dst.writer()) is None
    session.run(tg)
    np.testing.assert_array_equal(column(ws, dst, "uid"), np.arange(50))
    np.testing.assert_array_equal(column(ws, dst, "val"), np.arange(50, dtype=np.float32) / 2)
    # The queue lives in the session (node) workspace, closed by the tasks' exits.
    qobj = queue_object(ws, q)
    assert qobj.closed and qobj.size() == 0
    assert qobj.capacity == capacity


def test_queue_is_created_once_per_node_for_many_readers_and_writers():
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 40)
    dst = sink(session)
    with TaskGroup() as tg:
        q = pipe(src.reader(), num_runtime_threads=3, capacity=4)
        pipe(q, dst.writer(), num_runtime_threads=2)
        pipe(q, dst.writer())
    session.run(tg)
    assert sorted(column(ws, dst, "uid").tolist()) == list(range(40))
    plan = LocalSession.compile(tg).obj[0]
    creates = [
        op
        for net in plan.Proto().network
        for op in net.op
        if op.type == "CreateBlobsQueue" and op.output[0] == str(q.queue())
    ]
    assert len(creates) == 1
    assert q.num_writers() == 1 and q.num_readers() == 2


def test_num_dequeue_records_batches():
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 17)
    dst = sink(session)
    sizes = []

    def count(inputs, outputs):
        sizes.append(inputs[0].data.shape[0])

    def proc(rec):
        ops.Python(count)([rec.uid()], [])
        return rec

    with TaskGroup() as tg:
        q = pipe(src.reader(), Queue(capacity=20, num_dequeue_records=5))
        pipe(q, dst.writer(), processor=proc)
    session.run(tg)
    assert column(ws, dst, "uid").tolist() == list(range(17))
    assert sum(sizes) == 17 and max(sizes) <= 5 and all(s > 0 for s in sizes)


def test_reader_read_works_in_a_plain_task():
    # Project decision: _QueueReader.read(net) works (Caffe2's was broken).
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 6)
    dst = sink(session)
    with TaskGroup(workspace_type=WorkspaceType.GLOBAL) as tg:
        q = pipe(src.reader(), capacity=2)
        with Task(name="manual_reader"):
            reader = q.reader()
            with ops.task_init():
                writer = dst.writer(ops.net())
            with ops.loop():
                status, fields = reader.read_record(ops.net())
                ops.stop_if(status)
                writer.write_record(ops.net(), fields)
            with ops.task_exit():
                ops.CloseBlobsQueue([q.queue()], [])
    session.run(tg)
    assert column(ws, dst, "uid").tolist() == list(range(6))


def test_queue_wrapper_over_existing_blob():
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    init = core.Net("wrap_init")
    handler = init.CreateBlobsQueue([], "wrapped_queue", capacity=3, num_blobs=2)
    session.run(init)
    src = source(ws, 5)
    dst = sink(session)
    wrapped = QueueWrapper(handler, schema=REC)
    assert wrapped.queue() is handler and repr(wrapped).endswith("wrapped_queue>")
    with TaskGroup() as tg:
        pipe(src.reader(), wrapped)
        pipe(wrapped, dst.writer())
    session.run(tg)
    assert column(ws, dst, "uid").tolist() == list(range(5))
