"""pipeline (spec data.md 6): pipe with runtime and static threads, processors, outputs,
names, failures, and a stress test; run through LocalSession and TaskGroups as Caffe2's
pipeline_test did."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from caffe2.python import core, workspace
from caffe2.python.dataio import Reader, Writer
from caffe2.python.dataset import Dataset
from caffe2.python.net_builder import NetBuilder, ops
from caffe2.python.pipeline import (
    NetProcessor,
    Output,
    ProcessingReader,
    normalize_processor_output,
    pipe,
    pipe_and_output,
    processor_name,
)
from caffe2.python.queue_util import Queue
from caffe2.python.schema import (
    FeedRecord,
    FetchRecord,
    InitEmptyRecord,
    NewRecord,
    Struct,
    from_blob_list,
)
from caffe2.python.session import LocalSession
from caffe2.python.task import Task, TaskGroup, WorkspaceType
from caffe2.runtime.pybind_state import runtime_workspace_of

REC = Struct(("uid", np.int64), ("value", np.float64))


def source(ws, n, name="src"):
    init = core.Net(name + "_init")
    with core.NameScope(name):
        blobs = NewRecord(init, REC)
        FeedRecord(blobs, [np.arange(n, dtype=np.int64), np.arange(n, dtype=np.float64)], ws)
    ws.run(init)
    return Dataset(blobs, name=name)


def sink(session, name="dst", schema=REC):
    init = core.Net(name + "_init")
    with core.NameScope(name):
        ds = Dataset(InitEmptyRecord(init, schema.clone_schema()), name=name)
    session.run(init)
    return ds


def uids(ws, ds):
    return ws.blobs[str(ds.content().uid())].fetch()


def double_uid(rec):
    # Blob names unique per net: static threads share the task workspace.
    net = ops.net()
    uid = ops.Add([rec.uid(), rec.uid()], net.NextName("uid"))
    value = ops.Copy(rec.value(), net.NextName("value"))
    return from_blob_list(REC, [uid, value])


def run_in_thread(fn, timeout=120):
    """fn() in a thread; (finished, exception). A hang shows as finished=False."""
    box = {}

    def target():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive(), box.get("error")


# ---- Caffe2's pipeline_test ------------------------------------------------------------------
def test_dequeue_many():
    init_net = core.Net("init")
    N = 17
    NUM_DEQUEUE_RECORDS = 3
    src_values = Struct(
        ("uid", np.array(range(N), dtype=np.int64)), ("value", 0.1 * np.array(range(N)))
    )
    expected_dst = Struct(("uid", 2 * np.array(range(N))), ("value", np.array(N * [0.0])))

    with core.NameScope("init"):
        src_blobs = NewRecord(init_net, src_values)
        dst_blobs = InitEmptyRecord(init_net, REC)
        counter = init_net.Const(0)
        ONE = init_net.Const(1)

    def proc1(rec):
        with core.NameScope("proc1"):
            out = NewRecord(ops, rec)
        ops.Add([rec.uid(), rec.uid()], [out.uid()])
        out.value.set(blob=rec.value(), unsafe=True)
        return out

    def proc2(rec):
        with core.NameScope("proc2"):
            out = NewRecord(ops, rec)
        out.uid.set(blob=rec.uid(), unsafe=True)
        ops.Sub([rec.value(), rec.value()], [out.value()])
        ops.Add([counter, ONE], [counter])
        return out

    src_ds = Dataset(src_blobs)
    dst_ds = Dataset(dst_blobs)

    with TaskGroup() as tg:
        out1 = pipe(
            src_ds.reader(),
            output=Queue(capacity=11, num_dequeue_records=NUM_DEQUEUE_RECORDS),
            processor=proc1,
        )
        out2 = pipe(out1, processor=proc2)
        pipe(out2, dst_ds.writer())

    ws = workspace.C.Workspace()
    FeedRecord(src_blobs, src_values, ws)
    session = LocalSession(ws)
    session.run(init_net)
    session.run(tg)
    output = FetchRecord(dst_blobs, ws=ws)
    num_dequeues = ws.blobs[str(counter)].fetch()

    # The stop check after the dequeue net keeps proc2 from running on the final empty read.
    assert num_dequeues == int(math.ceil(float(N) / NUM_DEQUEUE_RECORDS))
    for a, b in zip(output.field_blobs(), expected_dst.field_blobs(), strict=True):
        np.testing.assert_array_equal(a, b)


# ---- threads and data integrity --------------------------------------------------------------
@pytest.mark.parametrize(
    "num_threads,num_runtime_threads", [(1, 1), (1, 4), (3, 1), (4, 1), (1, 7)]
)
def test_every_record_arrives_once(num_threads, num_runtime_threads):
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 300)
    dst = sink(session)
    with TaskGroup() as tg:
        q = pipe(
            src.reader(),
            processor=double_uid,
            num_threads=num_threads,
            num_runtime_threads=num_runtime_threads,
            capacity=7,
        )
        pipe(q, dst.writer(), num_threads=num_threads, num_runtime_threads=num_runtime_threads)
    session.run(tg)
    got = uids(ws, dst)
    assert sorted(got.tolist()) == [2 * i for i in range(300)]
    assert runtime_workspace_of(ws).get_blob(str(q.queue())).value.closed


def test_static_threads_structure_and_queue_name():
    src = Dataset(REC, name="static_src")
    src.field_blobs = [core.BlobReference("s_uid"), core.BlobReference("s_value")]
    with TaskGroup() as tg:
        q = pipe(src.reader(), num_threads=3, name="static")
    (task,) = tg.tasks()
    assert task.name == "local/static"
    # The queue is named after the task, not after a thread.
    assert str(q.queue()) == "local/static/queue/handler"
    text = str(task.get_step().Proto())
    assert "concurrent_substeps: true" in text
    assert "%s:parallel" not in text  # one instance; the threads are unrolled


def test_static_threads_share_the_task_workspace_with_distinct_blobs():
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 50)
    dst = sink(session)
    with TaskGroup() as tg:
        pipe(src.reader(), dst.writer(), num_threads=4, name="static_direct")
    (task,) = tg.tasks()
    names = [n.Name() for n in task.get_step().Nets()]
    for t in range(4):
        assert f"{task.name}/t:{t}/init" in names
    session.run(tg)
    assert sorted(uids(ws, dst).tolist()) == list(range(50))


def test_rerun_reads_again():
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 20)
    dst = sink(session)
    with TaskGroup() as tg:
        q = pipe(src.reader(), num_runtime_threads=2)
        pipe(q, dst.writer(), num_runtime_threads=3)
    session.run(tg)
    session.run(tg)  # a new queue, a new cursor (PRIVATE tasks), nets re-created
    assert sorted(uids(ws, dst).tolist()) == sorted(list(range(20)) * 2)


def test_global_group_with_timer_left_running_reruns():
    # The body ends mid-iteration, so timer_end runs once more after the loop (spec 6.2).
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 5)
    dst = sink(session)
    with TaskGroup(workspace_type=WorkspaceType.GLOBAL) as tg:
        pipe(src.reader(), dst.writer())
    session.run(tg)
    assert uids(ws, dst).tolist() == list(range(5))


def test_stress_100k_records_four_processor_threads():
    n = 100_000
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, n)
    dst = sink(session)
    with TaskGroup() as tg:
        q = pipe(src.reader(), processor=double_uid, num_runtime_threads=4)
        pipe(q, dst.writer())
    session.run(tg)
    got = uids(ws, dst)
    assert got.shape == (n,)
    counts = np.bincount(got // 2, minlength=n)
    assert (got % 2 == 0).all() and (counts == 1).all()
    values = ws.blobs[str(dst.content().value())].fetch()
    np.testing.assert_array_equal(values, got / 2)  # the fields of a record stay together


# ---- return values, names, argument errors ---------------------------------------------------
class _NullWriter(Writer):
    def write(self, writer_net, fields):
        writer_net.Copy(fields[0], writer_net.NextName("sink"))


def test_return_values():
    src = Dataset(REC, name="rv_src")
    src.field_blobs = [core.BlobReference("rv_uid"), core.BlobReference("rv_value")]
    with TaskGroup() as tg:
        q = pipe(src.reader())
        assert isinstance(q, Queue) and q.capacity == 100
        assert pipe(src.reader(), capacity=5).capacity == 5
        explicit = Queue(capacity=3)
        assert pipe(src.reader(), explicit) is explicit
        assert pipe(src.reader(), _NullWriter()) is None
        assert pipe(src.reader(), processor=lambda rec: None) is None
        assert pipe(q.reader(), processor=lambda rec: Struct()) is None  # QUIRK: empty Struct
        n_tasks = tg.num_registered_tasks()
        r = pipe(src.reader(), num_threads=0, processor=double_uid)
        assert isinstance(r, ProcessingReader)
        assert pipe(src.reader(), num_runtime_threads=0) is not None
        assert tg.num_registered_tasks() == n_tasks  # no task for 0 threads


def test_argument_errors():
    src = Dataset(REC, name="err_src")
    src.field_blobs = [core.BlobReference("e_uid"), core.BlobReference("e_value")]
    with TaskGroup():
        with pytest.raises(AssertionError, match="Only one of num_threads"):
            pipe(src.reader(), num_threads=2, num_runtime_threads=2)
        with pytest.raises(AssertionError, match="Only one of num_threads"):
            pipe(src.reader(), num_threads=3, num_runtime_threads=2, output=_NullWriter())
        with pytest.raises(ValueError, match="in must be a reader, queue or stream"):
            pipe(42)
        with pytest.raises(ValueError, match="output must be a reader, queue or stream"):
            pipe(src.reader(), output=42)
        with pytest.raises(AssertionError, match="capacity would not be used"):
            pipe(src.reader(), _NullWriter(), capacity=3)
        with pytest.raises(AssertionError, match="output must be None"):
            pipe(src.reader(), _NullWriter(), num_threads=0)
        with pytest.raises(ValueError, match="num_runtime_threads must be an int >= 0"):
            pipe(src.reader(), num_runtime_threads=-1)
        with pytest.raises(TypeError, match="processor must be None, a core.Net or a callable"):
            pipe(src.reader(), processor=3)
        with pytest.raises(AssertionError, match="num_threads > 0"):
            pipe_and_output(src.reader(), num_threads=0)


def named_processor(rec):
    return rec


class CallableProcessor:
    def __call__(self, rec):
        return rec


class WithName:
    name = "my_name"

    def __call__(self, rec):
        return rec


class Py2Function:
    """Something with Python 2's function attributes."""

    def __init__(self, func_name, module="mod", im_class=None):
        self.func_name = func_name
        self.__module__ = module
        if im_class is not None:
            self.im_class = im_class


def test_processor_name():
    # Project decision (spec 6.1): Python 3 functions give their class name, as in Caffe2.
    assert processor_name(named_processor) == "function"
    assert processor_name(lambda rec: rec) == "function"
    assert processor_name(CallableProcessor().__call__) == "method"
    assert processor_name(CallableProcessor()) == "CallableProcessor"
    assert processor_name(WithName()) == "my_name"
    assert processor_name(Queue(capacity=1)) == "Queue"
    assert processor_name(Py2Function("f")) == "f"
    assert processor_name(Py2Function("<lambda>", module="some.module")) == "some.module"
    assert processor_name(Py2Function("m", im_class=CallableProcessor)) == "CallableProcessor.m"


def test_default_task_names_and_timer_name():
    src = Dataset(REC, name="tn_src")
    src.field_blobs = [core.BlobReference("tn_uid"), core.BlobReference("tn_value")]
    with TaskGroup() as tg:
        q = pipe(src.reader(), processor=WithName())
        pipe(q, _NullWriter())
        pipe(q)
        pipe(src.reader(), name="explicit")
    names = [t.name for t in tg.tasks()]
    assert names == [
        "local/my_name",
        "local/pipe_into:_NullWriter",
        "local/pipe_from:Queue",
        "local/explicit",
    ]
    assert str(q.queue()) == "local/my_name/queue/handler"
    timers = [
        {a.name: a.s for a in op.arg}["counter_name"].decode()
        for net in tg.tasks()[0].get_step().Nets()
        for op in net.Proto().op
        if op.type == "TimerBegin"
    ]
    # QUIRK (spec 6.2): the builtin `input` is named instead of the pipe's input.
    assert timers == ["local/pipe/my_name/builtin_function_or_method/NoOutput"]
    into = [
        {a.name: a.s for a in op.arg}["counter_name"].decode()
        for net in tg.tasks()[1].get_step().Nets()
        for op in net.Proto().op
        if op.type == "TimerBegin"
    ]
    assert into == ["local/pipe/pipe_into:_NullWriter/builtin_function_or_method/_NullWriter"]


def test_runtime_threads_task_structure():
    src = Dataset(REC, name="st_src")
    src.field_blobs = [core.BlobReference("st_uid"), core.BlobReference("st_value")]
    with TaskGroup() as tg:
        pipe(src.reader(), name="structure", num_runtime_threads=3)
    (task,) = tg.tasks()
    nets = {n.Name() for n in task.get_step().Nets()}
    for basename in (
        "pipe:init",
        "pipe:exit",
        "pipe:instance:init",
        "pipe:instance:exit",
        "timer_start",
        "timer_end",
        "enqueue",
    ):
        assert f"{task.name}/{basename}" in nets, basename
    proto = task.get_step().Proto()
    text = str(proto)
    assert 'name: "body"' in text and "%s:parallel" in text
    assert "num_concurrent_instances: 3" in text


# ---- pipe_and_output -------------------------------------------------------------------------
def test_pipe_and_output():
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 12)
    total = core.BlobReference("pipe_and_output_total")

    def proc(rec):
        with ops.task_init():
            ops.Const(np.array(0, dtype=np.int64), total)
        ops.Add([total, ops.ReduceSum(rec.uid(), keepdims=0)], [total])
        return rec

    with TaskGroup() as tg:
        q, single = pipe_and_output(src.reader(), processor=proc, final_outputs=total)
        q2, many = pipe_and_output(q, final_outputs=[total, total], num_runtime_threads=2)
        _, none = pipe_and_output(q2, _NullWriter())
    assert isinstance(q, Queue) and isinstance(q2, Queue)
    assert none is None and isinstance(many, list) and len(many) == 2
    assert many[0].names == [total] and many[1].names == [total]
    session.run(tg)
    # The output blob is created in the session workspace: the PRIVATE task wrote into it.
    assert single.fetch() == sum(range(12))


# ---- ProcessingReader, Output, NetProcessor --------------------------------------------------
def test_processor_stop_signals():
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 30)
    dst_a, dst_b = sink(session, "dst_a"), sink(session, "dst_b")
    limit = core.Net("limit_init")
    five = limit.Const(np.array(5, dtype=np.int64))
    session.run(limit)

    def stop_returned(rec):  # (record, stop blob)
        return rec, ops.GE([ops.ReduceSum(rec.uid(), keepdims=0), five])

    def stop_with_ops(rec):  # ops.stop_if
        ops.stop_if(ops.GE([ops.ReduceSum(rec.uid(), keepdims=0), five]))
        return rec

    with TaskGroup() as tg:
        pipe(src.reader(), dst_a.writer(), processor=stop_returned)
        pipe(src.reader(), dst_b.writer(), processor=stop_with_ops)
    session.run(tg)
    # The stop is ORed into the status after the processor: uid 5 is read, not written.
    assert uids(ws, dst_a).tolist() == list(range(5))
    assert uids(ws, dst_b).tolist() == list(range(5))


def test_normalize_processor_output():
    rec = NewRecord(core.Net("norm_rec"), REC)
    with NetBuilder():
        out = normalize_processor_output(rec)
        assert isinstance(out, Output) and out.record is rec and out.nets == []
    with NetBuilder():
        net = core.Net("norm_net")
        out = normalize_processor_output(net)
        assert out.nets == [net] and out.record is None and out.should_stop is None
    with NetBuilder():
        stop = core.BlobReference("stop")
        out = normalize_processor_output((rec, stop))
        assert out.record is rec and out.should_stop is stop
    with NetBuilder():
        out = normalize_processor_output(([net], rec, stop))
        assert out.nets == [net] and out.should_stop is stop
    with NetBuilder():
        ops.Const(1)
        out = normalize_processor_output(None)
        assert len(out.nets) == 1 and isinstance(out.nets[0], core.Net)
    with NetBuilder():
        ops.Const(1)
        with pytest.raises(AssertionError, match="Cannot both use `ops` syntax"):
            Output(nets=[net])
    with NetBuilder():
        with pytest.raises(ValueError, match="tuple of 4 items"):
            normalize_processor_output((1, 2, 3, 4))
        o = Output(record=Struct(("x", np.array([1, 2]))))
        assert o.record.field_names() == ["x"] and o.nets == []


def test_net_processor():
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 20)
    dst = sink(session)

    proc_net = core.Net("proc_net")
    in_rec = proc_net.set_input_record(REC.clone_schema())
    out = NewRecord(proc_net, REC)
    proc_net.Add([in_rec.uid(), in_rec.uid()], [out.uid()])
    proc_net.Copy(in_rec.value(), out.value())
    stop = proc_net.GE(
        [
            proc_net.ReduceSum(out.uid(), keepdims=0),
            proc_net.Const(np.array(30, dtype=np.int64)),
        ]
    )
    proc_net.set_output_record(out)

    processor = NetProcessor(proc_net, stop_signal=stop)
    assert processor.name == "proc_net" or processor.name.startswith("proc_net")
    with TaskGroup() as tg:
        pipe(src.reader(), dst.writer(), processor=processor, num_runtime_threads=1)
    session.run(tg)
    # Stops once 2 * uid >= 30: uid 15 is processed but not written.
    assert uids(ws, dst).tolist() == [2 * i for i in range(15)]
    (remap,) = processor.blob_maps()
    # The input record is bound to the record read; the net's own blobs get the prefix.
    assert remap[str(in_rec.uid())] != str(in_rec.uid())
    assert remap[str(out.uid())].startswith(tg.tasks()[0].name + "/")
    with NetBuilder(), pytest.raises(AssertionError, match="frozen"):
        processor(src.reader().schema())


def test_net_processor_thread_init_nets_run_in_node_init():
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 10)
    dst = sink(session)

    init = core.Net("np_thread_init")
    offset = init.Const(np.array([1000], dtype=np.int64), "np_offset")
    proc_net = core.Net("np_proc")
    in_rec = proc_net.set_input_record(REC.clone_schema())
    out = NewRecord(proc_net, REC)
    proc_net.Add([in_rec.uid(), offset], [out.uid()], broadcast=1)
    proc_net.Copy(in_rec.value(), out.value())
    proc_net.set_output_record(out)

    with TaskGroup() as tg:
        pipe(src.reader(), dst.writer(), processor=NetProcessor(proc_net, thread_init_nets=[init]))
    session.run(tg)
    assert uids(ws, dst).tolist() == [1000 + i for i in range(10)]


def test_net_processor_errors():
    with pytest.raises(TypeError, match="needs a core.Net"):
        NetProcessor("not a net")
    net = core.Net("np_err")
    with pytest.raises(TypeError, match="stop_signal must be a BlobReference"):
        NetProcessor(net, stop_signal="x")
    src = Dataset(REC, name="npe_src")
    src.field_blobs = [core.BlobReference("npe_uid"), core.BlobReference("npe_value")]
    with TaskGroup():
        with pytest.raises(ValueError, match="has no input record"):
            pipe(src.reader(), processor=net)


def test_processor_setup_runs_in_local_init():
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 4)
    dst = sink(session)
    calls = []

    class WithSetup:
        def __call__(self, rec):
            return rec

        def setup(self, init_net):
            calls.append(init_net)
            init_net.Const(np.array([7], dtype=np.int64), "with_setup_blob")

    with TaskGroup() as tg:
        pipe(src.reader(), dst.writer(), processor=WithSetup())
    session.run(tg)
    assert len(calls) == 1
    assert ws.blobs["with_setup_blob"].fetch().tolist() == [7]


# ---- failures --------------------------------------------------------------------------------
def _failing_pipeline(ws, session, n, fail_at, threads, static=False, capacity=4):
    src = source(ws, n)
    dst = sink(session)

    def boom(inputs, outputs):
        if fail_at in inputs[0].data.tolist():
            raise ValueError(f"bad record {fail_at}")

    def proc(rec):
        ops.Python(boom)([rec.uid()], [])
        return rec

    kw = {"num_threads": threads} if static else {"num_runtime_threads": threads}
    with TaskGroup() as tg:
        q1 = pipe(src.reader(), capacity=capacity, **kw)
        q2 = pipe(q1, processor=proc, capacity=capacity, **kw)
        pipe(q2, dst.writer(), **kw)
    return tg, q1, q2, dst


@pytest.mark.parametrize("threads,static", [(1, False), (4, False), (3, True)])
def test_processor_that_raises_stops_the_pipeline(threads, static):
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    tg, q1, q2, dst = _failing_pipeline(ws, session, 500, 250, threads, static)
    before = threading.active_count()
    finished, error = run_in_thread(lambda: session.run(tg))
    assert finished, "the pipeline hung after a processor failed"
    assert isinstance(error, RuntimeError)
    assert "bad record 250" in str(error)
    assert "Python" in str(error)  # names the failing op
    # Both queues around the failed task were closed; no thread is left behind.
    for q in (q1, q2):
        assert runtime_workspace_of(ws).get_blob(str(q.queue())).value.closed
    assert threading.active_count() <= before
    # Nothing was duplicated, and nothing after the failing record's batch went through.
    got = uids(ws, dst).tolist()
    assert len(got) == len(set(got)) and 250 not in got


def test_session_usable_after_failure():
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    tg, *_ = _failing_pipeline(ws, session, 50, 10, 2)
    finished, error = run_in_thread(lambda: session.run(tg))
    assert finished and error is not None
    src = source(ws, 5, name="after")
    dst = sink(session, name="after_dst")
    with TaskGroup() as tg2:
        pipe(pipe(src.reader()), dst.writer())
    session.run(tg2)
    assert uids(ws, dst).tolist() == list(range(5))


class _FailingWriter(Writer):
    """Fails when it is asked to write uid == fail_at."""

    def __init__(self, fail_at):
        self.fail_at = fail_at

    def write(self, writer_net, fields):
        def check(inputs, outputs):
            if self.fail_at in inputs[0].data.tolist():
                raise OSError(f"disk full at {self.fail_at}")

        writer_net.Python(check)([fields[0]], [])


def test_writer_failure_wakes_the_producer():
    # The consumer's write fails; the producer, blocked on the full queue, is woken by the
    # close, and the session raises the write error.
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 200)
    with TaskGroup() as tg:
        q = pipe(src.reader(), capacity=2)
        pipe(q, _FailingWriter(20))
    finished, error = run_in_thread(lambda: session.run(tg))
    assert finished, "the producer stayed blocked on the full queue"
    assert isinstance(error, RuntimeError) and "disk full at 20" in str(error)


def test_processor_raising_while_built_leaves_no_task():
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src = source(ws, 6)
    dst = sink(session)

    def broken(rec):
        raise KeyError("no such field")

    with TaskGroup() as tg:
        q = pipe(src.reader())
        with pytest.raises(KeyError, match="no such field") as info:
            pipe(q, processor=broken)
        assert any("while building pipe task 'local/function'" in n for n in info.value.__notes__)
        pipe(q, dst.writer())
    # A dataset reader is named after its cursor.
    assert [t.name for t in tg.tasks()] == [
        "local/pipe_from:src_cursor",
        "local/pipe_into:_DatasetWriter",
    ]
    session.run(tg)
    assert uids(ws, dst).tolist() == list(range(6))


def test_guard_is_a_report_step_of_queue_pipes_only():
    src = Dataset(REC, name="g_src")
    src.field_blobs = [core.BlobReference("g_uid"), core.BlobReference("g_value")]
    with TaskGroup() as tg:
        pipe(src.reader(), _NullWriter(), name="no_queue")
        pipe(src.reader(), name="with_queue")
    no_queue, with_queue = tg.tasks()
    assert "pipe:guard" not in str(no_queue.get_step().Proto())
    text = str(with_queue.get_step().Proto())
    assert "pipe:guard" in text and "run_every_ms" in text and "only_once: true" in text


def test_reader_subclass_through_pipe():
    # A user Reader implementing only read(): pipe uses the default read_ex.
    class CountDown(Reader):
        def __init__(self):
            Reader.__init__(self, Struct(("uid", np.int64), ("value", np.float64)))
            self.counter = None

        def setup_ex(self, init_net, exit_net):
            self.counter = init_net.CreateCounter([], init_count=4)

        def read(self, read_net):
            done = read_net.CountDown([self.counter])
            uid = read_net.Const(np.array([1], dtype=np.int64))
            value = read_net.Const(np.array([0.5]))
            return done, [uid, value]

    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    dst = sink(session)
    with TaskGroup() as tg:
        pipe(CountDown(), dst.writer(), num_runtime_threads=2)
    session.run(tg)
    assert uids(ws, dst).tolist() == [1, 1, 1, 1]


def test_pipe_inside_task_context_names_queue_after_pipe_task():
    src = Dataset(REC, name="pt_src")
    src.field_blobs = [core.BlobReference("pt_uid"), core.BlobReference("pt_value")]
    with TaskGroup() as tg:
        with Task(name="outer"):
            ops.Const(1)
        q = pipe(src.reader(), name="inner")
    assert [t.name for t in tg.tasks()] == ["local/outer", "local/inner"]
    assert str(q.queue()) == "local/inner/queue/handler"
