"""caffe2.python.dataset (spec data.md 3.3) and the dataio Reader/Writer protocol (4.1, 4.2)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from caffe2.python import core, dataio, dataset, workspace
from caffe2.python.schema import (
    FeedRecord,
    FetchRecord,
    List,
    Map,
    NewRecord,
    Scalar,
    Struct,
    from_blob_list,
)


@pytest.fixture(autouse=True)
def fresh_workspace():
    name = "test_dataset_" + uuid.uuid4().hex[:8]
    workspace.SwitchWorkspace(name, True)
    yield name
    workspace.SwitchWorkspace("default")


SCHEMA = Struct(
    ("id", Scalar(np.int64)),
    ("dense", Scalar((np.float32, 2))),
    ("tags", List(Scalar(str))),
    ("feats", Map(Scalar(np.int32), List(Scalar(np.float32)))),
)


def make_records(lo: int, hi: int) -> list[tuple]:
    recs = []
    for i in range(lo, hi):
        feats = [(10 * i + k, [float(i)] * ((i + k) % 3)) for k in range(i % 3)]
        recs.append((i, [i, -i], [f"t{i}_{j}" for j in range(i % 2 + 1)], feats))
    return recs


def columns(recs: list[tuple]) -> list[np.ndarray]:
    """The 8 columns of SCHEMA for the records."""
    ids, dense, tl, tv, fl, fk, fvl, fvv = [], [], [], [], [], [], [], []
    for i, d, tags, feats in recs:
        ids.append(i)
        dense.append(d)
        tl.append(len(tags))
        tv.extend(tags)
        fl.append(len(feats))
        for k, vals in feats:
            fk.append(k)
            fvl.append(len(vals))
            fvv.extend(vals)
    return [
        np.array(ids, np.int64), np.array(dense, np.float32).reshape(-1, 2),
        np.array(tl, np.int32), np.array(tv, dtype=str), np.array(fl, np.int32),
        np.array(fk, np.int32), np.array(fvl, np.int32), np.array(fvv, np.float32),
    ]  # fmt: skip


def assert_content(record, recs: list[tuple]) -> None:
    got = FetchRecord(record).field_blobs()
    for name, g, w in zip(SCHEMA.field_names(), got, columns(recs), strict=True):
        assert g.shape == w.shape, name
        np.testing.assert_array_equal(g, w, err_msg=name)


def write_dataset(ds: dataset.Dataset, batches: list[list[tuple]]) -> None:
    """Append batches through the dataset writer, one RunNetOnce per batch."""
    init_net = core.Net("ds_init")
    ds.init_empty(init_net)
    batch = NewRecord(init_net, SCHEMA)
    write_net = core.Net("ds_write")
    ds.writer(init_net).write_record(write_net, batch)
    workspace.RunNetOnce(init_net)
    for recs in batches:
        FeedRecord(batch, columns(recs))
        workspace.RunNetOnce(write_net)


def read_all(reader, ds_out: dataset.Dataset) -> int:
    """Read everything with a plan: the stop blob ends the loop before the copy net runs."""
    init_net = core.Net("read_init")
    reader.setup_ex(init_net, None)
    with core.NameScope(ds_out.name):  # column names are only unique within a net
        ds_out.init_empty(init_net)
    writer = ds_out.writer(init_net)
    read_net = core.Net("read_net")
    should_stop, fields = reader.read_record(read_net)
    copy_net = core.Net("copy_net")
    writer.write_record(copy_net, fields)
    counter_init = core.Net("counter_init")
    counter = counter_init.CreateCounter([], init_count=0)
    copy_net.CountUp([counter])
    plan = core.Plan("read_all")
    plan.AddStep(core.execution_step("init", [init_net, counter_init]))
    plan.AddStep(core.execution_step("loop", [read_net, copy_net], should_stop_blob=should_stop))
    workspace.RunPlan(plan)
    workspace.RunNetOnce(_retrieve(counter))
    return int(workspace.FetchBlob("batches_read"))


def _retrieve(counter) -> core.Net:
    net = core.Net("retrieve")
    net.RetrieveCount([counter], ["batches_read"])
    return net


def test_dataset_basics() -> None:
    ds = dataset.Dataset(SCHEMA, name="ds")
    assert ds.fields == SCHEMA.field_names() and ds.field_names() == ds.fields
    assert ds.field_types == SCHEMA.field_types()  # an attribute, as in Caffe2
    assert ds.field_blobs is None and ds.name == "ds"
    with pytest.raises(AssertionError, match="not initialized"):
        ds.reader()
    flat = dataset.Dataset(["a", "b:lengths", "b:values"])
    assert isinstance(flat.schema.b, List) and flat.name == "dataset"
    with pytest.raises(AssertionError):
        dataset.Dataset(("a", "b"))
    init_net = core.Net("basics")
    with core.NameScope("scoped"):
        ds.init_empty(init_net)
    assert [str(b) for b in ds.get_blobs()][:2] == ["scoped/id", "scoped/dense"]
    assert ds.content().field_names() == SCHEMA.field_names()


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_write_then_read_back_in_batches(batch_size: int) -> None:
    recs = make_records(0, 11)
    ds = dataset.Dataset(SCHEMA)
    write_dataset(ds, [recs[:4], recs[4:5], [], recs[5:]])
    assert_content(ds.content(), recs)
    out = dataset.Dataset(SCHEMA, name="copy")
    n_batches = read_all(ds.reader(batch_size=batch_size), out)
    assert n_batches == -(-len(recs) // batch_size)
    assert_content(out.content(), recs)


def test_reader_names_and_batches() -> None:
    recs = make_records(0, 7)
    ds = dataset.Dataset(SCHEMA)
    write_dataset(ds, [recs])
    init_net = core.Net("reader_init")
    reader = ds.reader(init_net, batch_size=3, enforce_batch_size=True)
    assert str(reader.cursor) == "dataset_cursor"
    read_net = core.Net("reader_names")
    should_stop, batch = reader.read_record(read_net)
    prefix = read_net.Name() + "/dataset_cursor/"
    assert [str(b) for b in batch.field_blobs()] == [prefix + n for n in SCHEMA.field_names()]
    assert str(should_stop) == prefix + read_net.Name() + "/IsEmpty"
    workspace.RunNetOnce(init_net)
    workspace.CreateNet(read_net)
    seen = []
    while True:
        workspace.RunNet(read_net)
        if workspace.FetchBlob(str(should_stop)):
            break
        seen.append(FetchRecord(batch).id.get().tolist())
    assert seen == [[0, 1, 2], [3, 4, 5]]  # the short tail is dropped
    reset = core.Net("reset")
    reader.reset(reset)
    workspace.RunNetOnce(reset)
    workspace.RunNet(read_net)
    assert FetchRecord(batch).id.get().tolist() == [0, 1, 2]
    second = ds.reader(init_net)
    assert str(second.cursor) == "dataset_cursor_auto_0"
    with pytest.raises(AssertionError, match="setup not called"):
        ds.reader().read(core.Net("no_setup"))


def test_concurrent_readers_share_the_records() -> None:
    recs = make_records(0, 200)
    ds = dataset.Dataset(SCHEMA)
    write_dataset(ds, [recs])
    out = dataset.Dataset(SCHEMA, name="out")
    init_net = core.Net("conc_init")
    reader = ds.reader(init_net, batch_size=3)
    with core.NameScope("out"):
        out.init_empty(init_net)
    writer = out.writer(init_net)
    steps = []
    for t in range(4):
        read_net = core.Net(f"conc_read_{t}")
        should_stop, fields = reader.read_record(read_net)
        write_net = core.Net(f"conc_write_{t}")
        writer.write_record(write_net, fields)
        steps.append(core.execution_step(f"worker_{t}", [read_net, write_net],
                                         should_stop_blob=should_stop))  # fmt: skip
    plan = core.Plan("concurrent")
    plan.AddStep(core.execution_step("init", init_net))
    plan.AddStep(core.execution_step("workers", steps, concurrent_substeps=True))
    workspace.RunPlan(plan)
    got = FetchRecord(out.content())
    order = np.argsort(got.id.get())
    assert got.id.get()[order].tolist() == list(range(200))
    # every record arrived whole: rebuild the per-record lists and compare
    tags = np.split(got["tags:values"].get(), np.cumsum(got["tags:lengths"].get())[:-1])
    assert [list(tags[i]) for i in order] == [r[2] for r in recs]


def test_random_reader_reads_every_record_in_shuffled_order() -> None:
    recs = make_records(0, 9)
    ds = dataset.Dataset(SCHEMA)
    write_dataset(ds, [recs])
    init_net = core.Net("rand_init")
    reader = ds.random_reader(init_net, batch_size=2)
    reader.computeoffset(init_net)
    reader.sort_and_shuffle(init_net, "tags:lengths", shuffle_size=2, batch_size=2)
    workspace.RunNetOnce(init_net)
    out = dataset.Dataset(SCHEMA, name="rand_out")
    read_all(reader, out)
    order = workspace.FetchBlob(str(reader.indices)).tolist()
    assert sorted(order) == list(range(9)) and order != list(range(9))
    assert_content(out.content(), [recs[i] for i in order])
    with pytest.raises(AssertionError, match="Must be valid field"):
        reader.sort_and_shuffle(core.Net("bad"), "nope")


def test_random_reader_needs_offsets_and_handles_one_field() -> None:
    ds = dataset.Dataset(Struct(("x", Scalar(np.int32))))
    init_net = core.Net("one_init")
    ds.init_empty(init_net)
    workspace.RunNetOnce(init_net)
    workspace.FeedBlob(str(ds.get_blobs()[0]), np.arange(5, dtype=np.int32))
    reader_init = core.Net("one_reader_init")
    idx = dataset.Const(reader_init, [4, 0, 2], dtype=np.int64, name="idx")
    reader = ds.random_reader(reader_init, indices=idx, batch_size=2, loop_over=False)
    with pytest.raises(AssertionError, match="computeoffset"):
        reader.read(core.Net("too_early"))
    reader.computeoffset(reader_init)
    workspace.RunNetOnce(reader_init)
    read_net = core.Net("one_read")
    should_stop, fields = reader.read(read_net)
    workspace.CreateNet(read_net)
    got = []
    for _ in range(3):
        workspace.RunNet(read_net)
        got.append(workspace.FetchBlob(str(fields[0])).tolist())
    assert got == [[4, 0], [2], []]
    assert workspace.FetchBlob(str(should_stop))


def test_trim() -> None:
    recs = make_records(0, 10)
    ds = dataset.Dataset(SCHEMA)
    write_dataset(ds, [recs])
    net = core.Net("trim")
    ds.trim(net, multiple_of=4)
    workspace.RunNetOnce(net)
    assert_content(ds.content(), recs[:8])


def test_writer_rejects_bad_batches() -> None:
    ds = dataset.Dataset(SCHEMA)
    write_dataset(ds, [make_records(0, 3)])
    writer = ds.writer(core.Net("w_init"))
    wrong = NewRecord(core.Net("wrong"), Struct(("id", Scalar(np.int64))))
    with pytest.raises(ValueError, match=r"missing \['dense'"):
        writer.write_record(core.Net("w1"), wrong)
    with pytest.raises(AssertionError, match="Expected 8 fields"):
        writer.write(core.Net("w2"), wrong.field_blobs())
    # a ragged batch: tags:lengths promises more strings than there are
    with core.NameScope("batch"):
        batch = NewRecord(core.Net("ragged_init"), SCHEMA)
    cols = columns(make_records(3, 5))
    cols[3] = cols[3][:-1]
    FeedRecord(batch, cols)
    write_net = core.Net("ragged_write")
    ds.writer(write_net).write_record(write_net, batch)
    with pytest.raises(RuntimeError, match="CheckDatasetConsistency.*tags:lengths"):
        workspace.RunNetOnce(write_net)
    assert_content(ds.content(), make_records(0, 3))  # nothing was appended
    # a batch of the wrong type
    cols = columns(make_records(3, 5))
    cols[0] = cols[0].astype(np.int32)
    FeedRecord(batch, cols)
    append_net = core.Net("typed_write")
    ds.writer(append_net).write_record(append_net, batch)
    with pytest.raises(RuntimeError, match="AtomicAppend: cannot append .*id.*the types differ"):
        workspace.RunNetOnce(append_net)


def test_const_and_dataframe() -> None:
    net = core.Net("const")
    blob = dataset.Const(net, [1, 2], dtype=np.int32, name="c")
    assert str(blob) == "const/c" and net.is_external_input(blob)
    assert workspace.FetchBlob("const/c").tolist() == [1, 2]

    class ILoc:
        def __getitem__(self, key):
            return np.array([1.5, 2.5]) if key[1] == 0 else np.array([3, 4])

    class FakeFrame:  # the part of a pandas DataFrame init_from_dataframe uses
        columns = ["a", "b"]
        iloc = ILoc()

    ds = dataset.Dataset(["a", "b"])
    ds.init_from_dataframe(net, FakeFrame())
    assert [workspace.FetchBlob(str(b)).tolist() for b in ds.get_blobs()] == [[1.5, 2.5], [3, 4]]


def test_reader_execution_step_and_base_classes() -> None:
    recs = make_records(0, 5)
    ds = dataset.Dataset(SCHEMA)
    write_dataset(ds, [recs])
    init_net = core.Net("es_init")
    reader = ds.reader(init_net, batch_size=2)
    stop_net = core.Net("es_stop")
    external = stop_net.ConstantFill([], "external_stop", shape=[], value=False,
                                     dtype=core.DataType.BOOL)  # fmt: skip
    step, fields = reader.execution_step(external_should_stop=external)
    assert step.Name() == "None_step"
    counter_init = core.Net("es_counter")
    counter = counter_init.CreateCounter([], init_count=0)
    body = core.Net("es_body")
    body.CountUp([counter])
    step.AddNet(body)
    plan = core.Plan("es")
    plan.AddStep(core.execution_step("init", [init_net, stop_net, counter_init]))
    plan.AddStep(step)
    workspace.RunPlan(plan)
    workspace.RunNetOnce(_retrieve(counter))
    assert int(workspace.FetchBlob("batches_read")) == 3
    assert isinstance(fields, Struct) and fields.field_names() == SCHEMA.field_names()

    base = dataio.Reader()
    with pytest.raises(AssertionError, match="Schema not provided"):
        base.schema()
    with pytest.raises(NotImplementedError):
        base.read(core.Net("x"))
    with pytest.raises(NotImplementedError):
        base.reset(core.Net("x"))

    class Collect(dataio.Writer):
        def write(self, writer_net, fields):
            self.written = list(fields)

    w = Collect()
    assert w.schema() is None
    rec = from_blob_list(Struct(("a", Scalar(np.int32))), [core.BlobReference("a")])
    nets, stop = w.write_record_ex(rec, core.Net("li"), core.Net("lf"))
    assert w.schema() is rec and w.written == ["a"] and len(nets) == 1
    assert stop.endswith("/dequeue_status")
