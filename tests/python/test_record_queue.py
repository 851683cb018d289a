"""record_queue (spec data.md 7.1): RecordQueue built from plain steps."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pytest

from caffe2.python import core, workspace
from caffe2.python.dataset import Dataset
from caffe2.python.record_queue import RecordQueue
from caffe2.python.schema import (
    FeedRecord,
    InitEmptyRecord,
    NewRecord,
    Struct,
    from_blob_list,
)
from caffe2.python.session import LocalSession
from caffe2.runtime.pybind_state import runtime_workspace_of

REC = Struct(("a", np.int64), ("b", np.float32))


@pytest.fixture(autouse=True)
def fresh_workspace():
    name = "test_record_queue_" + uuid.uuid4().hex[:8]
    workspace.SwitchWorkspace(name, True)
    yield name
    workspace.SwitchWorkspace("default")


def source(n):
    init = core.Net("rq_src_init")
    with core.NameScope("rq_src"):
        blobs = NewRecord(init, REC)
        FeedRecord(blobs, [np.arange(n, dtype=np.int64), np.arange(n, dtype=np.float32)])
    workspace.RunNetOnce(init)
    return Dataset(blobs, name="rq_src")


def sink():
    init = core.Net("rq_dst_init")
    with core.NameScope("rq_dst"):
        ds = Dataset(InitEmptyRecord(init, REC.clone_schema()), name="rq_dst")
    workspace.RunNetOnce(init)
    return ds


def test_queue_is_created_at_once_and_named():
    rq = RecordQueue(REC, name="rq_named", capacity=3)
    assert re.fullmatch(r"rq_named/init_net(_\d+)?/CreateBlobsQueue:0", str(rq.blobs_queue))
    q = runtime_workspace_of(workspace.C.Workspace.current).get_blob(str(rq.blobs_queue)).value
    assert q.capacity == 3 and q.num_blobs == 2 and not q.closed
    assert re.fullmatch(r"rq_named/exit_net(_\d+)?_close_step", rq.exit_step.Name())
    assert rq.reader.name == "rq_named_reader"
    assert rq.writer.schema is rq.schema  # QUIRK: the attribute shadows Writer.schema()
    assert RecordQueue(["x", "y"]).schema.field_names() == ["x", "y"]


def test_bad_fields_and_threads():
    with pytest.raises(AssertionError, match="Struct or a list"):
        RecordQueue(("a", "b"))
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        RecordQueue(REC, num_threads=0)


def test_enforce_unique_name():
    name = "rq_unique_" + uuid.uuid4().hex[:6]
    # The slot blobs of a first queue are named after its blob; a queue over existing
    # slot blobs is refused with enforce_unique_name.
    first = RecordQueue(REC, name=name, capacity=1)
    slot = str(first.blobs_queue) + "_0_0"
    assert workspace.HasBlob(slot)
    init = core.Net("rq_reuse")
    init.CreateBlobsQueue(
        [], str(first.blobs_queue), capacity=1, num_blobs=2, enforce_unique_name=True
    )
    with pytest.raises(RuntimeError, match="Queue internal blob already exists"):
        workspace.RunNetOnce(init)


@pytest.mark.parametrize("num_threads", [1, 3])
def test_build_produces_every_record_once(num_threads):
    n = 60
    src = source(n)
    dst = sink()
    rq = RecordQueue(REC, name="rq_build", capacity=4, num_threads=num_threads)

    def process(net, rec):
        # Plain steps share the workspace: each thread's blobs need their own names.
        hundred = net.Const(np.array([100], dtype=np.int64))
        a = net.Add([rec.a(), hundred], net.NextName("a"), broadcast=1)
        b = net.Copy(rec.b(), net.NextName("b"))
        return from_blob_list(rec, [a, b])

    init = core.Net("rq_build_init")
    reader, producer_step, exit_step, schema = rq.build(src.reader(init), process)
    assert schema is rq.schema and reader is rq.reader
    assert producer_step.Name() == "producers" or producer_step.Name().startswith("producers")
    assert [s.Name() for s in producer_step.Substeps()] == [
        f"producer_{i}" for i in range(num_threads)
    ]

    # The write is a separate net: the stop blob is checked between the two, so the stale
    # batch left by the last (failed) dequeue is not written.
    consume = core.Net("rq_consume")
    should_stop, fields = reader.read_record(consume)
    write = core.Net("rq_write")
    dst.writer(init).write_record(write, fields)
    consume_step = core.execution_step("consume", [consume, write], should_stop_blob=should_stop)
    produce_then_close = core.execution_step("produce", [producer_step, exit_step])
    plan = core.Plan("rq_plan")
    plan.AddStep(core.execution_step("init", init))
    plan.AddStep(
        core.execution_step("run", [produce_then_close, consume_step], concurrent_substeps=True)
    )
    workspace.RunPlan(plan)
    got = workspace.FetchBlob(str(dst.content().a()))
    assert sorted(got.tolist()) == list(range(100, 100 + n))
    vals = workspace.FetchBlob(str(dst.content().b()))
    assert sorted(vals.tolist()) == list(range(n))


def test_writer_checks_field_count():
    rq = RecordQueue(REC, name="rq_count")
    with pytest.raises(ValueError, match=r"Cannot write 1 blobs into record queue"):
        rq.writer.write(core.Net("rq_w"), [core.BlobReference("x")])


def test_reader_works_in_a_session():
    ws = workspace.C.Workspace.current
    rq = RecordQueue(REC, name="rq_session", capacity=2)
    init = core.Net("rq_s_init")
    with core.NameScope("rq_s"):
        rec = NewRecord(init, REC)
    FeedRecord(rec, [np.array([7], dtype=np.int64), np.array([0.5], dtype=np.float32)])
    write = core.Net("rq_s_write")
    status = rq.writer.write(write, rec)
    read = core.Net("rq_s_read")
    stop, fields = rq.reader.read(read)
    session = LocalSession(ws)
    session.run(write)
    assert not ws.blobs[str(status)].fetch()
    session.run(read)
    assert not ws.blobs[str(stop)].fetch()
    assert ws.blobs[str(fields[0])].fetch().tolist() == [7]
    session.run(rq.exit_step)
    session.run(read)
    assert ws.blobs[str(stop)].fetch()
