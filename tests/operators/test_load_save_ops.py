"""Save, Load, DBExists and Checkpoint (spec data.md 8.3), every argument and error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import numpy as np
import pytest
from netdefs import HAVE_LMDB, TP, WORKED_BLOB, fetch, make_net, make_op, put, read_db, write_db

from caffe2.proto import caffe2_pb2
from caffe2.runtime import serialization as ser
from caffe2.runtime.blob import Blob
from caffe2.runtime.db import DBReader, Mode, create_db
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.workspace import Workspace

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(ws: Workspace, op_type: str, ins: list[str], outs: list[str], **args: Any) -> bool:
    """Run the op inside a one-op net, as a user's net would."""
    return ws.run_net_once(make_net(f"net_{op_type}", make_op(op_type, ins, outs, **args)))


def keys_of(db_type: str, path: str) -> list[str]:
    return [k.decode() for k, _ in read_db(db_type, path)]


def tensor_record(name: str, arr: np.ndarray, begin=0, end=None, segment=True) -> bytes:
    p = caffe2_pb2.BlobProto(name=name, type="Tensor")
    p.tensor.CopyFrom(ser.tensor_proto(arr, name, begin, end))
    if not segment:
        p.tensor.ClearField("segment")
    return p.SerializeToString()


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(root_folder=str(tmp_path))


# ---- Save ----------------------------------------------------------------------------------
def test_save_writes_the_spec_worked_example(ws, tmp_path):
    put(ws, "x", np.array([1, 2], np.int32))
    assert run(ws, "Save", ["x"], [], db="x.minidb", db_type="minidb")
    data = (tmp_path / "x.minidb").read_bytes()
    assert data == bytes.fromhex("04 00 00 00 1e 00 00 00") + b"x#%0" + WORKED_BLOB


VALUES = {
    "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
    "f64": np.array([1.5, -2.25]),
    "i32": np.array([[-1, 2**31 - 1]], np.int32),
    "i64": np.array([-(2**63), 2**63 - 1], np.int64),
    "i16": np.array([-7, 300], np.int16),
    "u16": np.array([65535], np.uint16),
    "i8": np.array([-128, 127], np.int8),
    "u8": np.array([0, 255], np.uint8),
    "b": np.array([True, False]),
    "f16": np.array([0.5, -1.0], np.float16),
    "s": np.array([b"ab", b"", b"\xff"], dtype=object),
    "scalar": np.array(3.0, np.float32),
    "empty": np.zeros((0, 4), np.float32),
    "str": b"a std::string blob",
}


def test_save_load_round_trip_every_type(ws, tmp_path):
    for k, v in VALUES.items():
        put(ws, k, v.copy() if isinstance(v, np.ndarray) else v)
    names = list(VALUES)
    assert run(ws, "Save", names, [], db="all.db", db_type="minidb")
    keys = keys_of("minidb", str(tmp_path / "all.db"))
    assert keys == [f"{n}#%0" for n in names[:-1]] + ["str"]
    ws2 = Workspace(root_folder=str(tmp_path))
    assert run(ws2, "Load", [], names, db="all.db", db_type="minidb")
    for k, v in VALUES.items():
        got = fetch(ws2, k)
        if isinstance(v, bytes):
            assert got == v
        else:
            assert got.dtype == v.dtype and got.shape == v.shape
            np.testing.assert_array_equal(got, v)


def test_save_chunks_by_flag_and_load_accepts_any_chunk_order(ws, tmp_path, monkeypatch):
    from caffe2.runtime import pybind_state

    monkeypatch.setitem(pybind_state.FLAGS, "caffe2_tensor_chunk_size", 4)
    x = np.arange(10, dtype=np.int64).reshape(5, 2)
    put(ws, "x", x)
    run(ws, "Save", ["x"], [], db="c.db", db_type="minidb")
    path = str(tmp_path / "c.db")
    assert keys_of("minidb", path) == ["x#%0", "x#%1", "x#%2"]
    db = create_db("minidb", path, Mode.READ)
    recs = list(db.new_cursor())
    db.close()
    for rec in recs:
        seg = ser.parse_blob_proto(rec[1]).tensor
        assert list(seg.dims) == [5, 2] and seg.HasField("segment")
    write_db("minidb", path, [(k.decode(), v) for k, v in reversed(recs)])
    put(ws, "x", None)
    run(ws, "Load", [], ["x"], db="c.db", db_type="minidb")
    np.testing.assert_array_equal(fetch(ws, "x"), x)
    monkeypatch.setitem(pybind_state.FLAGS, "caffe2_tensor_chunk_size", 0)
    with pytest.raises(EnforceError, match="caffe2_tensor_chunk_size flag must be positive"):
        run(ws, "Save", ["x"], [], db="c.db", db_type="minidb")


def test_save_path_rules(ws, tmp_path):
    put(ws, "w", np.ones(2, np.float32))
    abs_path = tmp_path / "sub" / "abs.db"
    abs_path.parent.mkdir()
    run(ws, "Save", ["w"], [], db=str(abs_path), db_type="minidb", absolute_path=1)
    assert abs_path.exists()
    run(ws, "Save", ["w"], [], db="sub/rel.db", db_type="minidb")
    assert (tmp_path / "sub" / "rel.db").exists()
    other = Workspace()  # root folder "." : the path is ./<db>
    assert other.root_folder == "."


def test_save_strip_prefix_first_occurrence_anywhere(ws, tmp_path):
    for n in ("model/w", "x/model/b", "c"):
        put(ws, n, np.zeros(1, np.float32))
    run(ws, "Save", ["model/w", "x/model/b", "c"], [], db="p.db", db_type="minidb",
        strip_prefix="model/")  # fmt: skip
    assert keys_of("minidb", str(tmp_path / "p.db")) == ["w#%0", "b#%0", "c#%0"]
    put(ws, "a/w", np.zeros(1, np.float32))
    with pytest.raises(EnforceError, match="Duplicated input: w"):
        run(ws, "Save", ["model/w", "a/w"], [], db="p.db", db_type="minidb", strip_prefix="/")


def test_save_blob_name_overrides(ws, tmp_path):
    put(ws, "a", np.array([1], np.int32))
    put(ws, "b", np.array([2], np.int32))
    run(ws, "Save", ["a", "b"], [], db="o.db", db_type="minidb", blob_name_overrides=["x", "y"])
    assert keys_of("minidb", str(tmp_path / "o.db")) == ["x#%0", "y#%0"]
    # duplicates among overrides are not checked (as in Caffe2)
    run(ws, "Save", ["a", "b"], [], db="d.db", db_type="minidb", blob_name_overrides=["z", "z"])
    assert keys_of("minidb", str(tmp_path / "d.db")) == ["z#%0", "z#%0"]
    with pytest.raises(EnforceError, match="Number of blobs and blob_name_overrides mismatch"):
        run(ws, "Save", ["a", "b"], [], db="o.db", db_type="minidb", blob_name_overrides=["x"])
    with pytest.raises(EnforceError, match="strip_prefix and blob_name_overrides are mutually"):
        run(ws, "Save", ["a"], [], db="o.db", db_type="minidb", blob_name_overrides=["x"],
            strip_prefix="a")  # fmt: skip
    with pytest.raises(EnforceError, match="empty name"):
        run(ws, "Save", ["a"], [], db="o.db", db_type="minidb", blob_name_overrides=[""])


def test_save_argument_errors(ws, tmp_path):
    put(ws, "a", np.ones(1, np.float32))
    with pytest.raises(EnforceError, match="Must specify a db name."):
        run(ws, "Save", ["a"], [], db_type="minidb")
    with pytest.raises(EnforceError, match="Must specify a db type."):
        run(ws, "Save", ["a"], [], db="a.db")
    with pytest.raises(EnforceError, match="did not pass schema checking"):
        run(ws, "Save", [], [], db="a.db", db_type="minidb")
    with pytest.raises(EnforceError, match=r"Cannot open db for writing: .*a\.db.*did you mean"):
        run(ws, "Save", ["a"], [], db="a.db", db_type="minidbb")
    with pytest.raises(EnforceError, match=r"Cannot open file: .*nodir/a\.db") as ei:
        run(ws, "Save", ["a"], [], db="nodir/a.db", db_type="minidb")
    assert "net 'net_Save', op #0 (Save)" in str(ei.value)


def test_save_failure_part_way_keeps_previous_db(ws, tmp_path):
    put(ws, "a", np.array([1.0], np.float32))
    run(ws, "Save", ["a"], [], db="k.db", db_type="minidb")
    before = (tmp_path / "k.db").read_bytes()
    put(ws, "a", np.array([2.0], np.float32))
    ws.create_blob("empty")
    with pytest.raises(EnforceError) as ei:
        run(ws, "Save", ["a", "empty"], [], db="k.db", db_type="minidb")
    msg = str(ei.value)
    assert "No known serializer for nullptr (uninitialized)" in msg
    assert "k.db" in msg and "Offending Blob name: empty" in msg
    assert (tmp_path / "k.db").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["k.db"]
    put(ws, "obj", object())
    with pytest.raises(EnforceError, match="No known serializer for object"):
        run(ws, "Save", ["obj"], [], db="k.db", db_type="minidb")
    put(ws, "c", np.array([1 + 2j]))
    with pytest.raises(EnforceError, match="data type complex128 has no TensorProto type"):
        run(ws, "Save", ["c"], [], db="k.db", db_type="minidb")
    assert (tmp_path / "k.db").read_bytes() == before


# ---- atomic save under SIGKILL -------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from caffe2.proto import caffe2_pb2
    from caffe2.runtime.workspace import Workspace

    path, db_type = sys.argv[1], sys.argv[2]
    ws = Workspace()
    names = []
    for i in range(60):
        ws.create_blob(f"big{i}").value = np.full(1_000_000, i, np.float32)
        names.append(f"big{i}")
    op = caffe2_pb2.OperatorDef(type="Save", input=names)
    op.arg.add(name="db", s=path.encode())
    op.arg.add(name="db_type", s=db_type.encode())
    op.arg.add(name="absolute_path", i=1)
    print("saving", flush=True)
    ws.run_operator_once(op)
    print("done", flush=True)
    """
)


@pytest.mark.parametrize(
    "db_type",
    [
        "minidb",
        "leveldb",
        pytest.param("lmdb", marks=pytest.mark.skipif(not HAVE_LMDB, reason="no lmdb")),
    ],
)
def test_save_killed_mid_way_leaves_previous_db(ws, tmp_path, db_type):
    path = tmp_path / "ckpt.db"
    old = np.array([7, 8, 9], np.int64)
    put(ws, "old", old)
    if db_type == "minidb":  # NEW replaces a minidb; leveldb and lmdb refuse an existing one
        run(ws, "Save", ["old"], [], db=str(path), db_type=db_type, absolute_path=1)
        before = path.read_bytes()
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), db_type], env=env, stdout=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        killed = False
        while time.monotonic() < deadline and proc.poll() is None:
            tmps = [n for n in os.listdir(tmp_path) if n.startswith(".ckpt.db.")]
            size = 0
            for n in tmps:
                p = tmp_path / n
                files = [p] if p.is_file() else list(p.iterdir())
                size += sum(f.stat().st_size for f in files if f.is_file())
            if size > 8_000_000:  # a few records are in the temporary file
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed and proc.returncode == -signal.SIGKILL, "the save ended before the kill"
    if db_type == "minidb":
        assert path.read_bytes() == before
        ws2 = Workspace()
        run(ws2, "Load", [], ["old"], db=str(path), db_type="minidb", absolute_path=1)
        np.testing.assert_array_equal(fetch(ws2, "old"), old)
    else:
        assert not path.exists()  # no half-written database appears at the path
        run(ws, "DBExists", [], ["e"], db_name=str(path), db_type=db_type, absolute_path=1)
        assert not fetch(ws, "e")


# ---- Load ----------------------------------------------------------------------------------
@pytest.fixture
def saved(ws, tmp_path) -> Workspace:
    put(ws, "a", np.array([1.0, 2.0], np.float32))
    put(ws, "b", np.array([[3, 4]], np.int32))
    put(ws, "s", b"text")
    run(ws, "Save", ["a", "b", "s"], [], db="m.db", db_type="minidb")
    return Workspace(root_folder=str(tmp_path))


def test_load_outputs_and_reset(saved, tmp_path):
    put(saved, "a", b"was a string")
    assert run(saved, "Load", [], ["a", "s"], db="m.db", db_type="minidb", keep_device=1)
    np.testing.assert_array_equal(fetch(saved, "a"), [1.0, 2.0])
    assert fetch(saved, "s") == b"text"
    assert not saved.has_blob("b")


def test_load_absolute_path_and_db_type_alias(saved, tmp_path):
    run(saved, "Load", [], ["b"], db=str(tmp_path / "m.db"), db_type="MiniDB", absolute_path=1)
    np.testing.assert_array_equal(fetch(saved, "b"), [[3, 4]])


def test_load_argument_errors(saved):
    cases = [
        ({"db": "m.db"}, "Must specify a db type."),
        ({"db_type": "minidb"}, "Must specify a db name."),
        ({"db_type": "minidb", "dbs": ["m.db", ""]}, "Db name should not be empty."),
        ({"db_type": "minidb", "dbs": ["m.db", "m.db"]}, "Duplicated db name: m.db"),
        ({"db": "m.db", "db_type": "minidb", "source_blob_names": ["a", "b"]},
         "Number of output blobs and source_blob_names mismatch."),
        ({"db": "m.db", "db_type": "minidb", "source_blob_names": ["a"], "strip_prefix": "x"},
         "strip_prefix and source_blob_names are mutually exclusive."),
        ({"db": "m.db", "db_type": "minidb", "source_blob_names": ["a"], "load_all": 1},
         "cannot load_all_ while using source_blob_names."),
    ]  # fmt: skip
    for args, msg in cases:
        with pytest.raises(EnforceError, match=msg):
            run(saved, "Load", [], ["a"], **args)
    with pytest.raises(EnforceError, match="Duplicated source blob name: a"):
        run(saved, "Load", [], ["x", "y"], db="m.db", db_type="minidb",
            source_blob_names=["a", "a"])  # fmt: skip


def test_load_dbs_ignores_db_and_rejects_duplicate_keys(saved, tmp_path):
    ws2 = Workspace(root_folder=str(tmp_path))
    put(ws2, "c", np.array([5], np.int64))
    run(ws2, "Save", ["c"], [], db="n.db", db_type="minidb")
    run(saved, "Load", [], ["a", "c"], db="ignored.db", dbs=["m.db", "n.db"], db_type="minidb")
    np.testing.assert_array_equal(fetch(saved, "c"), [5])
    put(ws2, "a", np.array([9.0], np.float32))
    run(ws2, "Save", ["a"], [], db="n2.db", db_type="minidb")
    with pytest.raises(EnforceError, match="Duplicate Key a is found!"):
        run(saved, "Load", [], ["b", "a"], dbs=["m.db", "n2.db"], db_type="minidb",
            load_all=0)  # fmt: skip
    with pytest.raises(EnforceError, match="Duplicate Key a is found!"):
        run(saved, "Load", [], [], dbs=["m.db", "n2.db"], db_type="minidb", load_all=1)


def test_load_prefixes_and_source_names(saved, tmp_path):
    run(saved, "Load", [], ["p/a"], db="m.db", db_type="minidb", add_prefix="p/")
    np.testing.assert_array_equal(fetch(saved, "p/a"), [1.0, 2.0])
    put(saved, "m/x/w", np.array([1], np.int32))
    run(saved, "Save", ["m/x/w"], [], db="px.db", db_type="minidb")
    run(saved, "Load", [], ["q_w"], db="px.db", db_type="minidb", strip_prefix="x/",
        add_prefix="q_")  # fmt: skip
    np.testing.assert_array_equal(fetch(saved, "q_w"), [1])
    run(saved, "Load", [], ["first", "second"], db="m.db", db_type="minidb",
        source_blob_names=["s", "a"])  # fmt: skip
    assert fetch(saved, "first") == b"text"
    np.testing.assert_array_equal(fetch(saved, "second"), [1.0, 2.0])


def test_load_all_creates_blobs(saved):
    child = saved.child()
    put(saved, "a", None)
    run(child, "Load", [], [], db="m.db", db_type="minidb", load_all=1)
    np.testing.assert_array_equal(fetch(saved, "a"), [1.0, 2.0])  # the visible parent blob
    assert child.local_blobs() == ["b", "s"]
    run(saved, "Load", [], ["unrelated"], db="m.db", db_type="minidb", load_all=1,
        add_prefix="L_")  # fmt: skip
    assert fetch(saved, "L_s") == b"text" and fetch(saved, "unrelated") is None


def test_load_missing_blobs(saved, tmp_path):
    put(saved, "zz", np.array([1]))
    with pytest.raises(EnforceError) as ei:
        run(saved, "Load", [], ["a", "zz", "yy"], db="m.db", db_type="minidb")
    msg = str(ei.value)
    assert "Expected to load 3 blobs, got 1 only.\n" in msg
    assert "Failed to load blob: zz" in msg and "Failed to load blob: yy" in msg
    assert "m.db" in msg and "Offending Blob name: zz" in msg
    run(saved, "Load", [], ["a", "zz"], db="m.db", db_type="minidb", allow_incomplete=True)
    np.testing.assert_array_equal(fetch(saved, "zz"), [1])  # left untouched


def test_load_open_errors(saved, tmp_path):
    with pytest.raises(EnforceError, match=r"Cannot open file: .*missing\.db") as ei:
        run(saved, "Load", [], ["a"], db="missing.db", db_type="minidb")
    assert "(Load)" in str(ei.value)
    with pytest.raises(EnforceError, match=r"Cannot open db: .*m\.db\. Unknown db type 'mini'"):
        run(saved, "Load", [], ["a"], db="m.db", db_type="mini")


@pytest.mark.parametrize(
    "data, what",
    [
        (b"\x00" * 20, "byte offset 0"),  # load_save_test's truncation case
        (None, "byte offset"),  # a truncated copy of a real file
    ],
)
def test_load_corrupt_or_truncated_file(saved, tmp_path, data, what):
    if data is None:
        data = (tmp_path / "m.db").read_bytes()[:-5]
    (tmp_path / "bad.db").write_bytes(data)
    with pytest.raises(EnforceError) as ei:
        run(saved, "Load", [], ["a", "b", "s"], db="bad.db", db_type="minidb")
    msg = str(ei.value)
    assert "bad.db" in msg and what in msg and "(Load)" in msg


def test_load_stops_reading_once_all_outputs_are_complete(saved, tmp_path):
    good = (tmp_path / "m.db").read_bytes()
    (tmp_path / "tail.db").write_bytes(good + b"\xff" * 12)  # garbage after the records
    run(saved, "Load", [], ["a"], db="tail.db", db_type="minidb")
    with pytest.raises(EnforceError, match="Corrupt or truncated minidb"):
        run(saved, "Load", [], [], db="tail.db", db_type="minidb", load_all=1)


def test_load_parse_failures(saved, tmp_path):
    write_db("minidb", str(tmp_path / "junk.db"), [("a#%0", b"\xff\xff\xff")])
    with pytest.raises(EnforceError, match="Cannot parse content into a BlobProto.*'a#%0'"):
        run(saved, "Load", [], ["a"], db="junk.db", db_type="minidb")
    with pytest.raises(EnforceError, match="Couldn't parse Proto"):
        run(saved, "Load", [], [], db="junk.db", db_type="minidb", load_all=1)
    # records of unwanted names are skipped without being parsed
    write_db("minidb", str(tmp_path / "skip.db"), [("junk", b"\xff\xff"), ("a#%0", tensor_record(
        "a", np.array([1.0], np.float32)))])  # fmt: skip
    run(saved, "Load", [], ["a"], db="skip.db", db_type="minidb")
    np.testing.assert_array_equal(fetch(saved, "a"), [1.0])


def test_load_chunk_bookkeeping_errors(saved, tmp_path):
    x = np.arange(6, dtype=np.float32)
    c0, c1, c2 = (tensor_record("x", x, b, b + 2) for b in (0, 2, 4))
    string = caffe2_pb2.BlobProto(name="x", type="std::string", content=b"s").SerializeToString()
    bad = ser.parse_blob_proto(c0)
    bad.tensor.segment.end = 9
    overlong = bad.SerializeToString()
    cases = [  # records, expected error (None: loads), load_all
        ([c0, c2], "Data size mismatch for blob x. Expected: 6 Read: 4", 0),
        ([c0, c1, c2, c1], None, 0),  # stops early: the fourth is never read
        ([c0, c1, c2, c1], "Found an extra part for an already filled tensor: x", 1),
        ([tensor_record("x", x), c1], None, 0),
        ([string, string], None, 0),
        ([string, string], "Blob duplicated: x", 1),
        ([c0, string], "Blob duplicated: x", 0),
        ([string, c0], "Must be tensor x", 1),
        ([c0, tensor_record("x", x, 2, 4, segment=False)], "Partial tensor must have a segm", 0),
        ([c0, c1, tensor_record("x", x, 2, 6)], "Tensor parts are bigger than target size", 0),
        ([c0, tensor_record("x", np.arange(8, dtype=np.float32), 2, 4)], "disagree", 0),
        ([overlong], "Invalid chunk 0 9 with total tensor size 6", 0),
    ]
    for i, (records, msg, load_all) in enumerate(cases):
        path = str(tmp_path / f"ck{i}.db")
        write_db("minidb", path, [(f"x#%{k}", r) for k, r in enumerate(records)])
        outs = [] if load_all else ["x"]
        if msg is None:
            run(saved, "Load", [], outs, db=f"ck{i}.db", db_type="minidb", load_all=load_all)
            continue
        with pytest.raises(EnforceError, match=msg) as ei:
            run(saved, "Load", [], outs, db=f"ck{i}.db", db_type="minidb", load_all=load_all)
        assert "Offending Blob name: x" in str(ei.value), i
        assert f"ck{i}.db" in str(ei.value), i


class Chunky:
    """A test blob type whose records are content chunks."""

    def __init__(self) -> None:
        self.parts: dict[int, bytes] = {}


def _chunky_in(proto: caffe2_pb2.BlobProto, blob: Blob) -> None:
    if not isinstance(blob.value, Chunky):
        blob.value = Chunky()
    blob.value.parts[proto.content_chunk_id] = proto.content


ser.register_deserializer("TestChunky", _chunky_in)


def test_load_content_chunks(saved, tmp_path):
    def chunk(i: int, n: int = 3, **kw: Any) -> bytes:
        p = caffe2_pb2.BlobProto(name="c", type="TestChunky", content=f"p{i}".encode(),
                                 content_num_chunks=n, content_chunk_id=i, **kw)  # fmt: skip
        return p.SerializeToString()

    def load(records: list[bytes]) -> Any:
        write_db("minidb", str(tmp_path / "cc.db"), [("c", r) for r in records])
        run(saved, "Load", [], ["c"], db="cc.db", db_type="minidb")
        return fetch(saved, "c")

    assert load([chunk(2), chunk(0), chunk(1)]).parts == {0: b"p0", 1: b"p1", 2: b"p2"}
    with pytest.raises(EnforceError, match="Chunk with the same id has occured twice for: c"):
        load([chunk(0), chunk(0)])
    with pytest.raises(EnforceError, match="Chunk id has to be not less than 0"):
        load([chunk(3)])
    with pytest.raises(EnforceError, match="Proto with content_chunks can not store tensor"):
        load([chunk(0, tensor=caffe2_pb2.TensorProto(dims=[1], int32_data=[1],
                                                      data_type=TP.INT32))])  # fmt: skip
    with pytest.raises(EnforceError, match="Data size mismatch for blob c. Expected: 3 Read: 2"):
        load([chunk(0), chunk(1)])


def test_load_unknown_blob_type(saved, tmp_path):
    rec = caffe2_pb2.BlobProto(name="u", type="MysteryType", content=b"").SerializeToString()
    write_db("minidb", str(tmp_path / "u.db"), [("u", rec)])
    with pytest.raises(EnforceError, match="No registered deserializer for type MysteryType"):
        run(saved, "Load", [], ["u"], db="u.db", db_type="minidb")


def test_load_from_dbreader_inputs(saved, tmp_path):
    r = DBReader("minidb", str(tmp_path / "m.db"))
    r.read()  # consume the record of a: Load reads from the current position
    put(saved, "reader", r)
    put(saved, "a", None)
    run(saved, "Load", ["reader"], ["b", "s"], db_type="ignored", db="ignored")
    assert fetch(saved, "s") == b"text" and fetch(saved, "a") is None
    r2 = DBReader("minidb", str(tmp_path / "m.db"))
    put(saved, "reader2", r2)
    with pytest.raises(EnforceError, match="Expected to load 1 blobs, got 0 only"):
        run(saved, "Load", ["reader"], ["a"])  # reader is at its end: no rewind
    run(saved, "Load", ["reader2"], ["a"])
    np.testing.assert_array_equal(fetch(saved, "a"), [1.0, 2.0])
    put(saved, "notreader", np.zeros(1))
    with pytest.raises(EnforceError, match=r"input 0 \(notreader\) must be a DBReader"):
        run(saved, "Load", ["notreader"], ["a"])


def test_load_leveldb_and_lmdb_round_trip(ws, tmp_path):
    types = ["leveldb"] + (["lmdb"] if HAVE_LMDB else [])
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    put(ws, "x", x)
    put(ws, "s", b"str")
    for t in types:
        run(ws, "Save", ["x", "s"], [], db=f"d.{t}", db_type=t)
        assert (tmp_path / f"d.{t}").is_dir()
        ws2 = Workspace(root_folder=str(tmp_path))
        run(ws2, "Load", [], ["s", "x"], db=f"d.{t}", db_type=t)
        np.testing.assert_array_equal(fetch(ws2, "x"), x)
        assert fetch(ws2, "s") == b"str"
        with pytest.raises(EnforceError, match="exists|failed"):  # NEW refuses an existing DB
            run(ws, "Save", ["x"], [], db=f"d.{t}", db_type=t)


# ---- DBExists ------------------------------------------------------------------------------
def test_dbexists(saved, tmp_path):
    def exists(**args: Any) -> Any:
        run(saved, "DBExists", [], ["e"], **args)
        v = fetch(saved, "e")
        assert v.shape == () and v.dtype == np.bool_
        return bool(v)

    assert exists(db_name="m.db", db_type="minidb")
    assert not exists(db_name="zz.db", db_type="minidb")
    assert exists(db_name=str(tmp_path / "m.db"), db_type="minidb", absolute_path=1)
    assert not exists(db_name="m.db", db_type="minidb", absolute_path=1)  # cwd has none
    assert exists(db_name="zz.db", db_type="no_such_type")  # Caffe2's quirk: True
    assert exists(db_name="zz.db")  # empty db_type: True too
    assert not exists(db_name="m.db", db_type="leveldb")


# ---- Checkpoint ----------------------------------------------------------------------------
def test_checkpoint_every_and_pattern(ws, tmp_path):
    put(ws, "w", np.array([1.5], np.float32))
    net = caffe2_pb2.NetDef(name="train")
    net.op.append(make_op("Checkpoint", ["iter", "w"], [], db="ck_%05d.db", db_type="minidb",
                          every=2))  # fmt: skip
    put(ws, "iter", np.array([0], np.int64))
    ws.create_net(net)
    for i in range(1, 6):
        fetch(ws, "iter")[0] = i
        assert ws.run_net("train")
    assert sorted(os.listdir(tmp_path)) == ["ck_00002.db", "ck_00004.db"]
    assert keys_of("minidb", str(tmp_path / "ck_00004.db")) == ["iter#%0", "w#%0"]
    ws2 = Workspace(root_folder=str(tmp_path))
    run(ws2, "Load", [], ["iter", "w"], db="ck_00004.db", db_type="minidb")
    np.testing.assert_array_equal(fetch(ws2, "iter"), [4])


def test_checkpoint_passes_save_arguments(ws, tmp_path):
    put(ws, "it", np.array([3], np.int64))
    put(ws, "m/w", np.array([1], np.int32))
    run(ws, "Snapshot", ["it", "m/w"], [], db=str(tmp_path / "s%d_%%.db"), db_type="minidb",
        absolute_path=1, strip_prefix="m/")  # fmt: skip
    assert keys_of("minidb", str(tmp_path / "s3_%.db")) == ["it#%0", "w#%0"]
    run(ws, "Checkpoint", ["it", "m/w"], [], db="o%lld.db", db_type="minidb",
        blob_name_overrides=["i", "v"])  # fmt: skip
    assert keys_of("minidb", str(tmp_path / "o3.db")) == ["i#%0", "v#%0"]
    put(ws, "it", np.array([-1], np.int64))
    run(ws, "Checkpoint", ["it"], [], db="h%x.db", db_type="minidb")
    assert (tmp_path / "hffffffffffffffff.db").exists()


def test_checkpoint_errors(ws, tmp_path):
    put(ws, "it", np.array([2], np.int64))
    with pytest.raises(EnforceError, match="Must specify a checkpoint file pattern."):
        run(ws, "Checkpoint", ["it"], [], db_type="minidb")
    with pytest.raises(EnforceError, match="Checkpoint interval should be positive."):
        run(ws, "Checkpoint", ["it"], [], db="c%d", db_type="minidb", every=0)
    # Save's checks happen when a checkpoint is due, not at construction
    run(ws, "Checkpoint", ["it"], [], db="c%d", every=3)
    with pytest.raises(EnforceError, match="Must specify a db type."):
        run(ws, "Checkpoint", ["it"], [], db="c%d", every=2)
    for pattern, msg in (("c%s", "cannot format"), ("c%d%d", "more than one"),
                         ("c%*d", "width argument"), ("c%", "cannot format")):  # fmt: skip
        with pytest.raises(EnforceError, match=msg):
            run(ws, "Checkpoint", ["it"], [], db=pattern, db_type="minidb")
    with pytest.raises(EnforceError, match="at most 1023 fit"):
        run(ws, "Checkpoint", ["it"], [], db="%01030d", db_type="minidb")
    put(ws, "it32", np.array([2], np.int32))
    with pytest.raises(EnforceError, match="must be an int64 tensor") as ei:
        run(ws, "Checkpoint", ["it32"], [], db="c%d", db_type="minidb")
    assert "Offending Blob name: it32" in str(ei.value)
    put(ws, "none", b"str")
    with pytest.raises(EnforceError, match=r"input 0 \(none\) must be a tensor"):
        run(ws, "Checkpoint", ["none"], [], db="c%d", db_type="minidb")
