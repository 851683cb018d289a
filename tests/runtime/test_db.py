"""The DB layer (spec data.md 8.2): minidb byte for byte, the leveldb stand-in, lmdb, DBReader."""

from __future__ import annotations

import os
import shutil
import struct
import sys
import threading
import time

import pytest
from netdefs import WORKED_BLOB, needs_lmdb, read_db, write_db

from caffe2.proto import caffe2_pb2
from caffe2.runtime import db as dbm
from caffe2.runtime import serialization as ser
from caffe2.runtime.blob import Blob
from caffe2.runtime.db import DBReader, Mode, create_db, db_exists, open_db
from caffe2.runtime.errors import EnforceError

# Two records written by hand from the layout [int32 klen][int32 vlen][key][value], LE.
GOLDEN = (
    b"\x01\x00\x00\x00" + b"\x03\x00\x00\x00" + b"a" + b"xyz"
    + b"\x02\x00\x00\x00" + b"\x01\x00\x00\x00" + b"bc" + b"\x00"
)  # fmt: skip


def temp_files(directory) -> list[str]:
    return [n for n in os.listdir(directory) if n.endswith(".tmp")]


# ---- minidb format -------------------------------------------------------------------------
def test_minidb_writes_golden_bytes(tmp_path):
    p = tmp_path / "g.minidb"
    write_db("minidb", p, [(b"a", b"xyz"), ("bc", b"\x00")])
    assert p.read_bytes() == GOLDEN


def test_minidb_reads_hand_written_file(tmp_path):
    p = tmp_path / "g.minidb"
    p.write_bytes(GOLDEN)
    assert read_db("MiniDB", p) == [(b"a", b"xyz"), (b"bc", b"\x00")]


def test_minidb_spec_worked_example_file(tmp_path):
    value = WORKED_BLOB
    p = tmp_path / "x.minidb"
    write_db("minidb", p, [("x#%0", value)])
    data = p.read_bytes()
    assert len(data) == 42
    assert data == bytes.fromhex("04 00 00 00 1e 00 00 00") + b"x#%0" + value


def test_minidb_records_in_write_order_duplicates_kept(tmp_path):
    p = tmp_path / "o.minidb"
    recs = [(b"z", b"1"), (b"a", b"2"), (b"z", b"3")]
    write_db("minidb", p, recs)
    assert read_db("minidb", p) == recs


def test_minidb_large_record_round_trip(tmp_path):
    p = tmp_path / "big.minidb"
    big = os.urandom(3 << 20)
    write_db("minidb", p, [(b"k" * 1000, big)])
    assert read_db("minidb", p) == [(b"k" * 1000, big)]


def test_minidb_new_truncates_write_appends(tmp_path):
    p = tmp_path / "m.minidb"
    write_db("minidb", p, [(b"a", b"1")])
    write_db("minidb", p, [(b"b", b"2")], Mode.WRITE)
    assert read_db("minidb", p) == [(b"a", b"1"), (b"b", b"2")]
    write_db("minidb", p, [(b"c", b"3")], Mode.NEW)
    assert read_db("minidb", p) == [(b"c", b"3")]
    write_db("minidb", tmp_path / "fresh", [(b"d", b"4")], Mode.WRITE)  # WRITE creates
    assert read_db("minidb", tmp_path / "fresh") == [(b"d", b"4")]


def test_minidb_mode_names_accepted(tmp_path):
    p = tmp_path / "m"
    db = create_db("minidb", str(p), "new")
    assert db.mode == Mode.NEW
    db.close()
    db = create_db("minidb", str(p), 0)
    assert db.mode == Mode.READ
    db.close()
    with pytest.raises(ValueError, match="unknown DB mode"):
        create_db("minidb", str(p), "append")


def test_minidb_open_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.minidb"
    with pytest.raises(EnforceError, match=f"Cannot open file: {missing}"):
        create_db("minidb", str(missing), Mode.READ)
    in_missing_dir = tmp_path / "no" / "such" / "f.minidb"
    for mode in (Mode.NEW, Mode.WRITE):
        with pytest.raises(EnforceError, match=f"Cannot open file: {in_missing_dir}"):
            create_db("minidb", str(in_missing_dir), mode)
    with pytest.raises(EnforceError, match=f"Cannot open file: {tmp_path}"):
        create_db("minidb", str(tmp_path), Mode.NEW)
    assert temp_files(tmp_path) == []


def test_minidb_cursor_semantics(tmp_path):
    p = tmp_path / "c.minidb"
    write_db("minidb", p, [(b"k1", b"v1"), (b"k2", b"v2")])
    db = create_db("minidb", str(p), Mode.READ)
    cur = db.new_cursor()
    assert cur.valid() and cur.key() == b"k1" and cur.value() == b"v1"
    assert not cur.supports_seek()
    with pytest.raises(EnforceError, match="does not support seeking"):
        cur.seek(b"k2")
    cur.next()
    assert cur.key() == b"k2"
    cur.next()
    assert not cur.valid()
    with pytest.raises(EnforceError, match="Cursor is at invalid location!"):
        cur.key()
    with pytest.raises(EnforceError, match="Cursor is at invalid location!"):
        cur.value()
    cur.seek_to_first()
    assert cur.key() == b"k1"
    cur.close()
    # A new cursor does not rewind: it continues from the file's current position.
    cur2 = db.new_cursor()
    assert cur2.valid() and cur2.key() == b"k2"
    cur2.close()
    db.close()


def test_minidb_cursor_needs_read_transaction_needs_write(tmp_path):
    p = tmp_path / "m.minidb"
    db = create_db("minidb", str(p), Mode.NEW)
    with pytest.raises(EnforceError, match="A cursor needs .* READ mode"):
        db.new_cursor()
    db.close()
    db = create_db("minidb", str(p), Mode.READ)
    with pytest.raises(EnforceError, match="A transaction needs .* NEW or WRITE"):
        db.new_transaction()
    db.close()
    with pytest.raises(EnforceError, match="is closed"):
        db.new_cursor()


def test_minidb_commit_detaches_transaction(tmp_path):
    db = create_db("minidb", str(tmp_path / "m"), Mode.NEW)
    txn = db.new_transaction()
    txn.put(b"a", b"1")
    txn.commit()
    with pytest.raises(EnforceError, match="transaction is committed"):
        txn.put(b"b", b"2")
    db.close()
    assert read_db("minidb", tmp_path / "m") == [(b"a", b"1")]


def test_minidb_dropping_a_transaction_commits_it(tmp_path):
    db = create_db("minidb", str(tmp_path / "m"), Mode.NEW)
    db.new_transaction().put(b"a", b"1")  # dropped at once: commits and releases the file
    txn = db.new_transaction()
    txn.put(b"b", b"2")
    del txn
    db.close()
    assert read_db("minidb", tmp_path / "m") == [(b"a", b"1"), (b"b", b"2")]


def test_minidb_second_open_handle_in_same_thread_raises_not_hangs(tmp_path):
    db = create_db("minidb", str(tmp_path / "m"), Mode.NEW)
    txn = db.new_transaction()
    with pytest.raises(EnforceError, match="still open in this thread"):
        db.new_transaction()
    txn.close()
    db.new_transaction().close()
    db.close()


def test_minidb_other_thread_waits_for_the_file_mutex(tmp_path):
    db = create_db("minidb", str(tmp_path / "m"), Mode.NEW)
    txn = db.new_transaction()
    order = []

    def other() -> None:
        t = db.new_transaction()
        order.append("other")
        t.put(b"b", b"2")
        t.close()

    th = threading.Thread(target=other)
    th.start()
    time.sleep(0.1)
    order.append("first")
    txn.put(b"a", b"1")
    txn.close()
    th.join(5)
    db.close()
    assert order == ["first", "other"]
    assert read_db("minidb", tmp_path / "m") == [(b"a", b"1"), (b"b", b"2")]


def test_minidb_refuses_unreadable_records(tmp_path):
    db = create_db("minidb", str(tmp_path / "m"), Mode.NEW)
    txn = db.new_transaction()
    with pytest.raises(EnforceError, match="empty key"):
        txn.put(b"", b"v")
    with pytest.raises(EnforceError, match="empty value"):
        txn.put(b"k", b"")
    with pytest.raises(TypeError, match="must be bytes or str"):
        txn.put(3, b"v")
    txn.close()
    db.close()


@pytest.mark.parametrize("stray", [1, 2, 3])
def test_minidb_ignores_one_to_three_stray_bytes(tmp_path, stray):
    p = tmp_path / "s.minidb"
    p.write_bytes(GOLDEN + b"\x07" * stray)
    assert read_db("minidb", p) == [(b"a", b"xyz"), (b"bc", b"\x00")]


@pytest.mark.parametrize(
    "data, offset, what",
    [
        (b"\x00" * 20, 0, "invalid key length 0"),  # load_save_test's truncation case
        (GOLDEN + b"\x01\x00\x00\x00\x05", 23, "value length is cut off"),
        (GOLDEN[:10], 0, "need 4 bytes, but only 2 remain"),
        (GOLDEN + struct.pack("<ii", 1, 2**31 - 1) + b"k", 23, "only 1 remain"),
        (struct.pack("<ii", -5, 3) + b"abc", 0, "invalid key length -5"),
        (GOLDEN + struct.pack("<ii", 1, -1), 23, "value length -1"),
    ],
)
def test_minidb_corrupt_file_errors_name_file_and_offset(tmp_path, data, offset, what):
    p = tmp_path / "bad.minidb"
    p.write_bytes(data)
    db = create_db("minidb", str(p), Mode.READ)
    with pytest.raises(EnforceError) as ei:
        cur = db.new_cursor()
        while cur.valid():
            cur.next()
    msg = str(ei.value)
    assert str(p) in msg and f"byte offset {offset}" in msg and what in msg
    db.close()


def test_minidb_new_mode_is_atomic(tmp_path):
    p = tmp_path / "a.minidb"
    write_db("minidb", p, [(b"old", b"1")])
    before = p.read_bytes()
    db = create_db("minidb", str(p), Mode.NEW)
    txn = db.new_transaction()
    txn.put(b"new", b"2")
    txn.commit()
    assert p.read_bytes() == before  # nothing visible until close
    assert len(temp_files(tmp_path)) == 1
    txn.close()
    db.abort()
    assert p.read_bytes() == before and temp_files(tmp_path) == []
    with pytest.raises(RuntimeError, match="boom"):
        with create_db("minidb", str(p), Mode.WRITE) as db:
            db.new_transaction().put(b"x", b"y")
            raise RuntimeError("boom")
    assert p.read_bytes() == before and temp_files(tmp_path) == []
    with create_db("minidb", str(p), Mode.WRITE) as db:
        db.new_transaction().put(b"x", b"y")
    assert read_db("minidb", p) == [(b"old", b"1"), (b"x", b"y")]
    assert temp_files(tmp_path) == []


def test_minidb_new_file_gets_normal_permissions(tmp_path):
    p = tmp_path / "perm.minidb"
    write_db("minidb", p, [(b"a", b"1")])
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~dbm._umask()


def test_minidb_dropped_db_is_closed_and_published(tmp_path):
    p = tmp_path / "d.minidb"
    db = create_db("minidb", str(p), Mode.NEW)
    txn = db.new_transaction()
    txn.put(b"a", b"1")
    txn.close()
    del db, txn
    assert read_db("minidb", p) == [(b"a", b"1")]


# ---- registry ------------------------------------------------------------------------------
def test_registry_unknown_types(tmp_path):
    assert create_db("nosuchdb", str(tmp_path / "x"), Mode.READ) is None
    with pytest.raises(EnforceError, match="Unknown db type 'minidbb'; did you mean minidb"):
        open_db("minidbb", str(tmp_path / "x"), Mode.READ)
    with pytest.raises(EnforceError, match="Unknown db type 'MINIDB'; did you mean .*MiniDB"):
        open_db("MINIDB", str(tmp_path / "x"), Mode.READ)
    with pytest.raises(EnforceError, match="known types: .*minidb"):
        open_db("zzzzzzzz", str(tmp_path / "x"), Mode.READ)
    for name in ("minidb", "MiniDB", "leveldb", "LevelDB", "lmdb", "LMDB"):
        assert dbm.has_db_type(name)


def test_db_exists(tmp_path):
    p = tmp_path / "e.minidb"
    assert not db_exists("minidb", str(p))
    write_db("minidb", p, [(b"a", b"1")])
    assert db_exists("minidb", str(p))
    assert db_exists("minidb", str(tmp_path / "e.minidb"))
    assert db_exists("no_such_type", str(tmp_path / "nothing"))  # Caffe2's quirk
    assert db_exists("", str(tmp_path / "nothing"))
    assert not db_exists("leveldb", str(tmp_path / "nothing"))


def test_register_custom_db_type(tmp_path):
    @dbm.register_db("TestMemDB")
    class MemDB(dbm.DB):
        store: dict = {}

        def close(self) -> None:
            self.closed = True

    db = create_db("TestMemDB", str(tmp_path), Mode.READ)
    assert isinstance(db, MemDB) and db.db_type == "TestMemDB"
    with pytest.raises(RuntimeError, match="registered twice"):
        dbm.register_db("TestMemDB")(type("Other", (dbm.DB,), {}))


# ---- leveldb stand-in ----------------------------------------------------------------------
def test_leveldb_is_a_sorted_directory(tmp_path):
    p = tmp_path / "cache"
    write_db("leveldb", p, [(b"b", b"2"), (b"a", b"1"), (b"c", b"3"), (b"b", b"22")])
    assert p.is_dir() and (p / dbm.DIRDB_DATA_FILE).is_file()
    assert read_db("LevelDB", p) == [(b"a", b"1"), (b"b", b"22"), (b"c", b"3")]
    # the data file is itself a sorted minidb
    assert read_db("minidb", p / dbm.DIRDB_DATA_FILE) == read_db("leveldb", p)
    shutil.rmtree(p)
    assert not db_exists("leveldb", str(p))


def test_leveldb_modes(tmp_path):
    p = tmp_path / "ldb"
    with pytest.raises(EnforceError, match=f"Failed to open leveldb {p}.*does not exist"):
        create_db("leveldb", str(p), Mode.READ)
    write_db("leveldb", p, [(b"a", b"1")])
    with pytest.raises(EnforceError, match=f"Failed to open leveldb {p}.*exists"):
        create_db("leveldb", str(p), Mode.NEW)
    write_db("leveldb", p, [(b"0", b"0"), (b"a", b"9")], Mode.WRITE)
    assert read_db("leveldb", p) == [(b"0", b"0"), (b"a", b"9")]
    write_db("leveldb", tmp_path / "w", [(b"z", b"1")], Mode.WRITE)  # WRITE creates
    assert read_db("leveldb", tmp_path / "w") == [(b"z", b"1")]
    (tmp_path / "empty").mkdir()
    write_db("leveldb", tmp_path / "empty", [(b"e", b"1")])  # an empty directory is no DB
    assert read_db("leveldb", tmp_path / "empty") == [(b"e", b"1")]
    (tmp_path / "afile").write_bytes(b"x")
    with pytest.raises(EnforceError, match="Not a directory"):
        create_db("leveldb", str(tmp_path / "afile"), Mode.NEW)


def test_leveldb_cursor_seek_and_batches(tmp_path):
    p = tmp_path / "ldb"
    db = create_db("leveldb", str(p), Mode.NEW)
    txn = db.new_transaction()
    for k in (b"k3", b"k1", b"k5"):
        txn.put(k, k + b"v")
    txn.commit()
    txn2 = db.new_transaction()  # several transactions may coexist (a batch each)
    txn2.put(b"k4", b"k4v")
    txn2.close()
    db.close()
    db = create_db("leveldb", str(p), Mode.READ)
    cur = db.new_cursor()
    assert cur.supports_seek() and cur.key() == b"k1"
    cur.seek(b"k2")
    assert cur.key() == b"k3" and cur.value() == b"k3v"
    cur.seek("k4")
    assert cur.value() == b"k4v"
    cur.seek(b"k9")
    assert not cur.valid()
    with pytest.raises(EnforceError, match="Cursor is at invalid location!"):
        cur.value()
    cur.seek_to_first()
    assert [k for k, _ in cur] == [b"k1", b"k3", b"k4", b"k5"]
    db.close()


def test_leveldb_new_is_atomic_at_directory_level(tmp_path):
    p = tmp_path / "ldb"
    db = create_db("leveldb", str(p), Mode.NEW)
    db.new_transaction().put(b"a", b"1")
    assert not p.exists()  # built in a temporary directory beside it
    db.abort()
    assert not p.exists() and os.listdir(tmp_path) == []
    write_db("leveldb", p, [(b"a", b"1")])
    db = create_db("leveldb", str(p), Mode.WRITE)
    db.new_transaction().put(b"b", b"2")
    db.abort()
    assert read_db("leveldb", p) == [(b"a", b"1")]
    assert os.listdir(p) == [dbm.DIRDB_DATA_FILE]


def test_leveldb_refuses_real_leveldb_and_corrupt_data(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "CURRENT").write_text("MANIFEST-000001\n")
    with pytest.raises(EnforceError, match="real LevelDB"):
        create_db("leveldb", str(real), Mode.READ)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / dbm.DIRDB_DATA_FILE).write_bytes(GOLDEN[:-1])
    with pytest.raises(EnforceError, match=f"{bad}.*byte offset 12"):
        create_db("leveldb", str(bad), Mode.READ)


# ---- lmdb ----------------------------------------------------------------------------------
@needs_lmdb
def test_lmdb_round_trip_seek_and_modes(tmp_path):
    p = tmp_path / "l.lmdb"
    write_db("lmdb", p, [(b"b", b"2"), (b"a", b"1")])
    assert p.is_dir()
    assert read_db("LMDB", p) == [(b"a", b"1"), (b"b", b"2")]
    with pytest.raises(EnforceError, match=f"mkdir {p} failed"):
        create_db("lmdb", str(p), Mode.NEW)
    write_db("lmdb", p, [(b"c", b"3")], Mode.WRITE)
    db = create_db("lmdb", str(p), Mode.READ)
    cur = db.new_cursor()
    assert cur.supports_seek()
    cur.seek(b"bb")
    assert cur.key() == b"c" and cur.value() == b"3"
    cur.next()
    assert not cur.valid()
    with pytest.raises(EnforceError, match="Cursor is at invalid location!"):
        cur.key()
    cur.seek_to_first()
    assert cur.key() == b"a"
    cur.close()
    db.close()
    with pytest.raises(EnforceError, match="Cannot open lmdb"):
        create_db("lmdb", str(tmp_path / "missing"), Mode.READ)
    with pytest.raises(EnforceError, match="Cannot open lmdb"):
        create_db("lmdb", str(tmp_path / "missing"), Mode.WRITE)
    assert not db_exists("lmdb", str(tmp_path / "missing"))
    assert db_exists("lmdb", str(p))


@needs_lmdb
def test_lmdb_new_is_atomic_and_bad_keys_are_clear(tmp_path):
    p = tmp_path / "l.lmdb"
    db = create_db("lmdb", str(p), Mode.NEW)
    txn = db.new_transaction()
    txn.put(b"a", b"1")
    with pytest.raises(EnforceError, match="keys must be 1 to"):
        txn.put(b"", b"1")
    with pytest.raises(EnforceError, match="keys must be 1 to"):
        txn.put(b"k" * 1000, b"1")
    txn.commit()
    assert not p.exists()
    db.abort()
    assert os.listdir(tmp_path) == []


def test_lmdb_missing_package_is_a_clear_import_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lmdb", None)
    with pytest.raises(ImportError, match="needs the 'lmdb' package"):
        create_db("lmdb", str(tmp_path / "x"), Mode.READ)


# ---- DBReader ------------------------------------------------------------------------------
def test_dbreader_read_shards_and_wraps(tmp_path):
    p = tmp_path / "r.minidb"
    recs = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(5)]
    write_db("minidb", p, recs)
    r = DBReader("minidb", str(p))
    assert [r.read()[0] for _ in range(7)] == [b"k0", b"k1", b"k2", b"k3", b"k4", b"k0", b"k1"]
    r.close()
    r = DBReader("minidb", str(p), num_shards=2, shard_id=1)
    assert [r.read()[0] for _ in range(4)] == [b"k1", b"k3", b"k1", b"k3"]
    r.close()
    with pytest.raises(EnforceError, match="invalid sharding"):
        DBReader("minidb", str(p), num_shards=2, shard_id=2)
    with pytest.raises(EnforceError, match=f"Cannot open db: {p} of type minidbx"):
        DBReader("minidbx", str(p))
    with pytest.raises(EnforceError, match="Reader not initialized."):
        DBReader().read()


def test_dbreader_threads_get_each_record_once(tmp_path):
    p = tmp_path / "r.minidb"
    n = 400
    write_db("minidb", p, [(f"k{i:04d}".encode(), b"v") for i in range(n)])
    r = DBReader("minidb", str(p))
    got: list[bytes] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(n // 4):
            k, _ = r.read()
            with lock:
                got.append(k)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(got) == [f"k{i:04d}".encode() for i in range(n)]


def test_dbreader_serialization(tmp_path):
    p = tmp_path / "r.minidb"
    write_db("minidb", p, [(b"a", b"1"), (b"b", b"2")])
    r = DBReader("minidb", str(p))
    r.read()
    proto = ser.blob_proto("reader", r)
    assert proto.type == "DBReader"
    inner = caffe2_pb2.DBReaderProto.FromString(proto.content)
    assert (inner.name, inner.source, inner.db_type) == ("reader", str(p), "minidb")
    assert not inner.HasField("key")  # minidb cannot seek
    blob = Blob()
    ser.deserialize_blob(proto.SerializeToString(), blob)
    assert isinstance(blob.value, DBReader) and blob.value.read() == (b"a", b"1")

    lp = tmp_path / "ldb"
    write_db("leveldb", lp, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    r = DBReader("leveldb", str(lp))
    r.read()
    data = ser.serialize_blob("r2", r)
    assert caffe2_pb2.DBReaderProto.FromString(ser.parse_blob_proto(data).content).key == "b"
    ser.deserialize_blob(data, blob)
    assert blob.value.read() == (b"b", b"2")

    bad = caffe2_pb2.BlobProto(name="r3", type="DBReader", content=b"\xff\xff")
    with pytest.raises(EnforceError, match="Cannot parse content into a DBReaderProto"):
        ser.deserialize_blob_proto(bad, blob)


# ---- closing with transactions still open ------------------------------------------------
@pytest.mark.parametrize(
    "db_type",
    ["minidb", "leveldb", pytest.param("lmdb", marks=needs_lmdb)],
)
def test_close_commits_open_transactions_abort_drops_them(tmp_path, db_type):
    p = tmp_path / "t.db"
    db = create_db(db_type, str(p), Mode.NEW)
    txn = db.new_transaction()
    txn.put(b"a", b"1")
    db.close()  # txn was never committed: closing the DB commits it, as destroying it did
    assert read_db(db_type, p) == [(b"a", b"1")]
    txn.commit()  # committing after the close does nothing harmful
    db = create_db(db_type, str(p), Mode.WRITE)
    txn = db.new_transaction()
    txn.put(b"b", b"2")
    db.abort()
    del txn
    assert read_db(db_type, p) == [(b"a", b"1")]
    assert [n for n in os.listdir(tmp_path) if n != "t.db"] == []


def test_leveldb_refuses_empty_keys(tmp_path):
    db = create_db("leveldb", str(tmp_path / "l"), Mode.NEW)
    txn = db.new_transaction()
    with pytest.raises(EnforceError, match="empty key"):
        txn.put(b"", b"1")
    with pytest.raises(EnforceError, match="empty value"):
        txn.put(b"k", b"")
    db.abort()


def test_minidb_save_through_a_symlink_keeps_the_link(tmp_path):
    target = tmp_path / "real.minidb"
    write_db("minidb", target, [(b"a", b"1")])
    link = tmp_path / "link.minidb"
    link.symlink_to(target)
    write_db("minidb", link, [(b"b", b"2")])
    assert link.is_symlink()
    assert read_db("minidb", target) == [(b"b", b"2")]
