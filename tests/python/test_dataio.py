"""dataio additions (spec data.md 4.3, 4.4): Pipe, ReaderBuilder, PipedReaderBuilder and the
limiters, run through LocalSession and TaskGroups as Caffe2's dataio_test did."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest

from caffe2.python import core, dataio, workspace
from caffe2.python.dataio import (
    CounterReader,
    CountUntil,
    Pipe,
    PipedReaderBuilder,
    Reader,
    ReaderBuilder,
    ReaderWithLimit,
    ReaderWithLimitBase,
    ReaderWithTimeLimit,
    Writer,
)
from caffe2.python.dataset import Dataset
from caffe2.python.net_builder import ops
from caffe2.python.pipeline import pipe
from caffe2.python.schema import FeedRecord, InitEmptyRecord, NewRecord, Struct
from caffe2.python.session import LocalSession
from caffe2.python.task import TaskGroup, WorkspaceType, final_output

LABEL = Struct(("label", np.int64))


def init_dataset(ws, size=100, name="src"):
    """A dataset of labels 0..size-1, fed into ws."""
    src_init = core.Net(name + "_init")
    with core.NameScope(name):
        src_blobs = NewRecord(src_init, LABEL)
        src_ds = Dataset(src_blobs, name=name)
        FeedRecord(src_blobs, [np.arange(size, dtype=np.int64)], ws)
    ws.run(src_init)
    return src_ds


def empty_dataset(session, name="dst"):
    dst_init = core.Net(name + "_init")
    with core.NameScope(name):
        dst_ds = Dataset(InitEmptyRecord(dst_init, LABEL.clone_schema()), name=name)
    session.run(dst_init)
    return dst_ds


def labels(ws, ds):
    return ws.blobs[str(ds.content().label())].fetch()


class ReaderWithDelay(Reader):
    """Caffe2's test reader: sleeps (a Python op) before every read of the inner reader."""

    def __init__(self, reader, delay):
        Reader.__init__(self, schema=reader._schema)
        self.reader = reader
        self.delay = delay

    def setup_ex(self, global_init_net, global_finish_net):
        self.reader.setup_ex(global_init_net, global_finish_net)

    def read_ex(self, local_init_net, local_finish_net):
        read_net = core.Net("reader_body")

        def sleep_op(*args, **kwargs):
            time.sleep(self.delay)

        read_net.Python(sleep_op)([], [])
        return ([read_net],) + self.reader.read(read_net)


# ---- Pipe and reader builders ----------------------------------------------------------------
class _ListWriter(Writer):
    def write(self, writer_net, fields):
        pass


def test_pipe_counts_readers_and_writers_and_attaches_itself():
    p = Pipe(obj_key="some_key")
    assert p.schema() is None and p.num_readers() == 0 and p.num_writers() == 0
    init_w, init_r = core.Net("pipe_test_w"), core.Net("pipe_test_r")
    p._new_writer(LABEL, init_w)
    p._new_writer(Struct(("other", np.int32)), init_w)  # the first writer's schema stays
    p._new_reader(init_r)
    assert p.schema() is LABEL
    assert (p.num_writers(), p.num_readers()) == (2, 1)
    assert init_w.get_attributes("some_key") == [p, p]
    assert init_r.get_attributes("some_key") == [p]
    assert p.setup(core.Net("pipe_test_init")) is None

    no_key = Pipe(schema=LABEL)
    net = core.Net("pipe_test_nokey")
    no_key._new_reader(net)
    assert net.get_attributes("some_key") == [] and no_key.num_readers() == 1
    with pytest.raises(NotImplementedError):
        no_key.reader()
    with pytest.raises(NotImplementedError):
        no_key.writer()


class _Builder(ReaderBuilder):
    def __init__(self, ws):
        self.ws = ws
        self.kwargs = []

    def schema(self):
        return LABEL

    def setup(self, **kwargs):
        return "setup:" + ",".join(sorted(kwargs))

    def new_reader(self, **kwargs):
        self.kwargs.append(kwargs)
        return init_dataset(self.ws, size=5, name="builder_src").reader()


def test_reader_builder_is_abstract():
    b = ReaderBuilder()
    for call in (b.schema, b.setup, b.new_reader):
        with pytest.raises(NotImplementedError):
            call()


def test_piped_reader_builder_passes_kwargs_and_takes_reader_of_queue():
    ws = workspace.C.Workspace()
    inner = _Builder(ws)
    seen = []

    def reader_piper(reader, **kwargs):
        seen.append(kwargs)
        return reader

    piped = PipedReaderBuilder(inner, reader_piper)
    assert piped.schema() is LABEL
    assert piped.setup(a=1, b=2) == "setup:a,b"
    r = piped.new_reader(trainer=3)
    assert isinstance(r, Reader)
    assert inner.kwargs == [{"trainer": 3}] and seen == [{"trainer": 3}]

    # A piper returning a queue (what pipe() returns): its reader is used.
    with TaskGroup():
        queue_piper = PipedReaderBuilder(inner, lambda reader, **kw: pipe(reader))
        qr = queue_piper.new_reader()
    assert type(qr).__name__ == "_QueueReader"

    bad = PipedReaderBuilder(inner, lambda reader, **kw: 42)
    with pytest.raises(TypeError, match="neither a Reader nor has .reader"):
        bad.new_reader()


# ---- CounterReader / CountUntil --------------------------------------------------------------
def _collect(values, lock):
    def collect(inputs, outputs):
        with lock:
            values.append(int(inputs[0].data))

    return collect


@pytest.mark.parametrize("threads", [1, 3])
def test_count_until_reads_each_count_once(threads):
    ws = workspace.C.Workspace()
    values, lock = [], threading.Lock()

    def proc(rec):
        ops.Python(_collect(values, lock))([rec.iter()], [])

    with TaskGroup() as tg:
        assert pipe(CountUntil(7), processor=proc, num_runtime_threads=threads) is None
    LocalSession(ws).run(tg)
    assert sorted(values) == list(range(7))


def test_counter_reader_schema_and_setup_once():
    r = CounterReader()
    assert r.schema().field_names() == ["iter"]
    assert r.schema().field_types()[0] == np.int64
    init, exit_ = core.Net("counter_init"), core.Net("counter_exit")
    with pytest.raises(RuntimeError, match="setup_ex must be called"):
        r.read_ex(init, exit_)
    r.setup_ex(init, exit_)
    r.setup_ex(init, exit_)
    assert [op.type for op in init.Proto().op] == ["CreateCounter", "ConstantFill"]
    nets, stop, fields = r.read_ex(init, exit_)
    assert re.fullmatch(r"limited_reader_counter(_\d+)?", nets[0].Name())
    assert [op.type for op in nets[0].Proto().op] == ["CountUp"]
    assert stop is r.should_stop and str(fields[0]).endswith("/CountUp:0")


# ---- ReaderWithLimit (Caffe2's ReaderWithLimitTest) ------------------------------------------
def test_runtime_threads():
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src_ds = init_dataset(ws)
    totals = [None] * 3

    def proc(rec):
        # executed once
        with ops.task_init():
            counter1 = ops.CreateCounter([], ["global_counter"])
            counter2 = ops.CreateCounter([], ["global_counter2"])
            counter3 = ops.CreateCounter([], ["global_counter3"])
        # executed once per thread
        with ops.task_instance_init():
            task_counter = ops.CreateCounter([], ["task_counter"])
        # executed on each iteration
        ops.CountUp(counter1)
        ops.CountUp(task_counter)
        # executed once per thread
        with ops.task_instance_exit():
            with ops.loop(ops.RetrieveCount(task_counter)):
                ops.CountUp(counter2)
            ops.CountUp(counter3)
        # executed once
        with ops.task_exit():
            totals[0] = final_output(ops.RetrieveCount(counter1))
            totals[1] = final_output(ops.RetrieveCount(counter2))
            totals[2] = final_output(ops.RetrieveCount(counter3))
        return rec

    # Read the full data set from the original reader.
    with TaskGroup() as tg:
        pipe(src_ds.reader(), num_runtime_threads=8, processor=proc)
    session.run(tg)
    assert totals[0].fetch() == 100
    assert totals[1].fetch() == 100
    assert totals[2].fetch() == 8

    # Read with a count-limited reader.
    with TaskGroup() as tg:
        q1 = pipe(src_ds.reader(), num_runtime_threads=2)
        q2 = pipe(ReaderWithLimit(q1.reader(), num_iter=25), num_runtime_threads=3)
        pipe(q2, processor=proc, num_runtime_threads=6)
    session.run(tg)
    assert totals[0].fetch() == 25
    assert totals[1].fetch() == 25
    assert totals[2].fetch() == 6


def _run_limited(reader_class, size, num_threads, read_delay=0.0, **limiter_args):
    """Pipe a limited reader of labels 0..size-1 into a dataset: (labels read, finished)."""
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src_ds = init_dataset(ws, size=size)
    dst_ds = empty_dataset(session)
    # GLOBAL: data_finished is created by the task init in the session workspace.
    with TaskGroup(workspace_type=WorkspaceType.GLOBAL) as tg:
        inner = src_ds.reader()
        if read_delay > 0:
            inner = ReaderWithDelay(inner, read_delay)
        reader = reader_class(inner, **limiter_args)
        pipe(reader, dst_ds.writer(), num_runtime_threads=num_threads)
    session.run(tg)
    return sorted(labels(ws, dst_ds)), bool(ws.blobs[str(reader.data_finished())].fetch())


@pytest.mark.parametrize(
    "num_iter,expected_len,expected_finished",
    [(None, 100, True), (0, 0, False), (10, 10, False), (110, 100, True), (100, 100, False)],
)
@pytest.mark.parametrize("threads", [1, 8])
def test_count_limit_reader(num_iter, expected_len, expected_finished, threads):
    read, finished = _run_limited(ReaderWithLimit, 100, threads, num_iter=num_iter)
    # Exactly num_iter batches over all threads, each record once, in cursor order.
    assert read == list(range(expected_len))
    assert finished == expected_finished


def test_count_limit_reader_names_and_nets():
    src = Dataset(Struct(("label", np.int64)), name="names_src")
    src.field_blobs = [core.BlobReference("names_src_label")]
    r = ReaderWithLimit(src.reader(), num_iter=3)
    assert re.fullmatch(r"reader_with_limit(_\d+)?/data_finished", str(r.data_finished()))
    assert str(r.counter) == r.net.Name() + "/counter"
    init, exit_ = core.Net("lim_init"), core.Net("lim_exit")
    r.setup_ex(init, exit_)
    assert [op.type for op in init.Proto().op] == [
        "ConstantFill",
        "CreateTreeCursor",
        "CreateCounter",
    ]
    assert init.Proto().op[2].arg[0].i == 3
    nets, stop, fields = r.read_ex(core.Net("lim_local_init"), core.Net("lim_local_exit"))
    names = [re.sub(r"_\d+$", "", n.Name()) for n in nets]
    assert names == ["limited_reader_condition", "reader_body", "limited_reader_post"]
    assert nets[0].Proto().op[0].type == "CountDown"
    assert [op.type for op in nets[-1].Proto().op] == ["Copy", "Or"]
    assert str(stop) == nets[0].Proto().op[0].output[0]
    assert r.schema().field_names() == ["label"]

    no_limit = ReaderWithLimit(src.reader(), num_iter=None)
    assert no_limit.counter is None
    cond = no_limit.check_limiter_condition(core.Net("lim_cond"))
    assert str(cond) == "lim_cond/ConstantFill:0" or re.fullmatch(
        r"lim_cond_\d+/ConstantFill:0", str(cond)
    )


def test_count_limit_reader_negative_num_iter_fails_when_run():
    # QUIRK kept: negative is not "unlimited"; CreateCounter rejects it at run time.
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src_ds = init_dataset(ws, size=10)
    dst_ds = empty_dataset(session)
    with TaskGroup() as tg:
        pipe(ReaderWithLimit(src_ds.reader(), num_iter=-1), dst_ds.writer())
    with pytest.raises(RuntimeError, match="negative init_count is not permitted"):
        session.run(tg)


def test_count_limit_reader_shared_counter_limits_queue_pipeline():
    # The limit counts batches over all instances of the task, read from a queue.
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src_ds = init_dataset(ws, size=100)
    dst_ds = empty_dataset(session)
    with TaskGroup(workspace_type=WorkspaceType.GLOBAL) as tg:
        q = pipe(src_ds.reader(), num_runtime_threads=4)
        lim = ReaderWithLimit(q.reader(), num_iter=30)
        pipe(lim, dst_ds.writer(), num_runtime_threads=5)
    session.run(tg)
    got = labels(ws, dst_ds)
    assert len(got) == 30 and len(set(got.tolist())) == 30
    assert set(got.tolist()) <= set(range(100))
    assert not ws.blobs[str(lim.data_finished())].fetch()


def test_limit_base_is_abstract():
    base = ReaderWithLimitBase(CounterReader())
    with pytest.raises(NotImplementedError):
        base.setup_limiter(core.Net("a"), core.Net("b"))
    with pytest.raises(NotImplementedError):
        base.check_limiter_condition(core.Net("c"))


# ---- ReaderWithTimeLimit ---------------------------------------------------------------------
@pytest.mark.parametrize("duration", [0, None])
def test_time_limit_reader_without_limit(duration):
    read, finished = _run_limited(ReaderWithTimeLimit, 100, 8, duration=duration)
    assert read == list(range(100))
    assert finished


def test_time_limit_reader_with_long_limit():
    read, finished = _run_limited(ReaderWithTimeLimit, 50, 4, read_delay=0.001, duration=600)
    assert read == list(range(50))
    assert finished


def test_time_limit_reader_with_short_limit_stops_early():
    # 400 reads of 20 ms over 4 threads need 2 s; the limit is 0.2 s. Whatever the speed of
    # the machine, the limit fires long before the data runs out: a prefix is read.
    read, finished = _run_limited(ReaderWithTimeLimit, 400, 4, read_delay=0.02, duration=0.2)
    assert 0 < len(read) < 400
    assert read == list(range(len(read)))
    assert not finished


def test_time_limit_reader_stop_blob_is_named_None():
    src = Dataset(Struct(("label", np.int64)), name="tl_src")
    src.field_blobs = [core.BlobReference("tl_src_label")]
    r = ReaderWithTimeLimit(src.reader(), duration=2.5)
    init, exit_ = core.Net("tl_init"), core.Net("tl_exit")
    r.setup_ex(init, exit_)
    assert [op.type for op in init.Proto().op] == [
        "ConstantFill",
        "CreateTreeCursor",
        "TimerBegin",
        "TimerGet",
        "ConstantFill",
    ]
    timer_begin = init.Proto().op[2]
    assert [(a.name, a.s) for a in timer_begin.arg] == [("counter_name", b"epoch_timer")]
    duration_fill = init.Proto().op[4]
    assert {a.name: a.i for a in duration_fill.arg}["value"] == 2_500_000_000
    assert [op.type for op in exit_.Proto().op] == ["TimerEnd"]
    nets, stop, _ = r.read_ex(core.Net("tl_local_init"), core.Net("tl_local_exit"))
    assert str(stop) == "None"  # QUIRK (NAMING)
    assert [op.type for op in nets[0].Proto().op] == ["TimerGet", "GE"]
    assert list(nets[0].Proto().op[1].output) == ["None"]


def test_time_limit_reader_negative_duration_raises_when_built():
    ws = workspace.C.Workspace()
    src_ds = init_dataset(ws, size=3)
    with TaskGroup():
        with pytest.raises(ValueError, match="duration must be > 0"):
            pipe(ReaderWithTimeLimit(src_ds.reader(), duration=-1))


def test_time_limit_reader_stops_a_queue_pipeline_and_unblocks_producer():
    # The limited consumer stops early; its task exit closes the queue, so the producer,
    # blocked on the full queue, stops too and the run ends.
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    src_ds = init_dataset(ws, size=1000)
    dst_ds = empty_dataset(session)
    with TaskGroup(workspace_type=WorkspaceType.GLOBAL) as tg:
        q = pipe(src_ds.reader(), capacity=2)
        lim = ReaderWithTimeLimit(ReaderWithDelay(q.reader(), 0.01), duration=0.1)
        pipe(lim, dst_ds.writer())
    session.run(tg)
    got = labels(ws, dst_ds)
    assert 0 < len(got) < 1000
    assert got.tolist() == list(range(len(got)))


def test_module_exports():
    for name in (
        "Pipe",
        "ReaderBuilder",
        "PipedReaderBuilder",
        "CounterReader",
        "ReaderWithLimitBase",
        "ReaderWithLimit",
        "CountUntil",
        "ReaderWithTimeLimit",
    ):
        assert hasattr(dataio, name)
