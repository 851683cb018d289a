"""The ``leveldb`` / ``LevelDB`` DB type: a directory-backed stand-in with LevelDB's behaviour.

Sorted unique keys, seekable cursors, NEW fails on an existing database, a missing database
is created in NEW and WRITE modes. Its data file ``data.minidb`` is a minidb file sorted by
key; it is **not** LevelDB's on-disk format. Writes go to a log beside the data file and are
merged into a new sorted file, renamed into place, at ``close()`` (a database directory that
does not exist yet is built as a temporary directory beside the path and renamed).
"""

from __future__ import annotations

import bisect
import os
import tempfile
import threading
from typing import Any

from caffe2.runtime.db import (
    DB,
    Cursor,
    Mode,
    Transaction,
    _fsync_dir,
    _parent_dir,
    _reason,
    _remove,
    _temp_beside,
    as_bytes,
    log,
    register_db,
)
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.minidb import read_record, write_record

DIRDB_DATA_FILE = "data.minidb"


@register_db("leveldb", "LevelDB")
class DirDB(DB):
    """LevelDB's behaviour over a directory holding ``data.minidb`` (sorted, unique keys).

    Not LevelDB's file format: a directory written by real LevelDB is refused by name.
    Writes go to a log beside the data and are merged into a new sorted file at close.
    """

    db_type = "leveldb"

    def __init__(self, path: str, mode: Mode) -> None:
        super().__init__(path, mode)
        self.closed = True
        self._data = os.path.join(path, DIRDB_DATA_FILE)
        self._tmpdir: str | None = None
        self._log = None
        self._pending: dict[bytes, tuple[int, int]] = {}
        self._index: list[tuple[bytes, int, int]] = []
        self._lock = threading.Lock()
        exists = os.path.isfile(self._data)
        if os.path.exists(os.path.join(path, "CURRENT")) and not exists:
            raise self.error(
                f"Failed to open leveldb {path}. It is a database of the real LevelDB, which "
                "caffe2py's directory stand-in cannot read."
            )
        if mode == Mode.READ:
            if not exists:
                raise self.error(
                    f"Failed to open leveldb {path}. Invalid argument: {path}/{DIRDB_DATA_FILE}"
                    ": does not exist (create_if_missing is false)"
                )
            self._index = self._read_index(self._data)
            self._rf = open(self._data, "rb")
        else:
            if mode == Mode.NEW and exists:
                raise self.error(
                    f"Failed to open leveldb {path}. Invalid argument: {path}: exists "
                    "(error_if_exists is true)"
                )
            try:
                if os.path.exists(path) and not os.path.isdir(path):
                    raise NotADirectoryError(20, "Not a directory")
                if not os.path.isdir(path):
                    self._tmpdir = _temp_beside(path, directory=True)
                where = self._tmpdir or path
                fd, self._logname = tempfile.mkstemp(prefix=".log.", suffix=".tmp", dir=where)
                self._log = os.fdopen(fd, "w+b")
            except OSError as e:
                _remove(self._tmpdir)
                raise self.error(f"Failed to open leveldb {path}. IO error: {_reason(e)}") from e
        self.closed = False

    def _read_index(self, data: str) -> list[tuple[bytes, int, int]]:
        index: dict[bytes, tuple[int, int]] = {}
        try:
            with open(data, "rb") as f:
                while True:
                    rec = read_record(f, data, "leveldb")
                    if rec is None:
                        break
                    key, value, off = rec
                    index[key] = (off + 8 + len(key), len(value))
        except OSError as e:
            raise self.error(f"Failed to open leveldb {self.path}. IO error: {_reason(e)}") from e
        return sorted((k, o, n) for k, (o, n) in index.items())

    def new_cursor(self) -> DirDBCursor:
        self._check_mode(True, "A cursor")
        return DirDBCursor(self)

    def new_transaction(self) -> DirDBTransaction:
        self._check_mode(False, "A transaction")
        txn = DirDBTransaction(self)
        self._txns.add(txn)
        return txn

    def _append(self, batch: list[tuple[bytes, bytes]]) -> None:
        with self._lock:
            self._check_open()
            f = self._log
            for key, value in batch:
                off = f.seek(0, os.SEEK_END)
                write_record(f, key, value, self.path)
                self._pending[key] = (off + 8 + len(key), len(value))

    def _pread(self, f: Any, off: int, n: int) -> bytes:
        f.seek(off)
        data = f.read(n)
        if len(data) != n:
            raise self.error(f"leveldb {self.path}: data file truncated at byte {off}")
        return data

    def close(self) -> None:
        """Merge the writes into a new sorted data file and move it (or the new dir) in place."""
        if self.closed:
            return
        if self.mode == Mode.READ:
            self.closed = True
            self._rf.close()
            return
        try:
            self._commit_open_transactions()
        except BaseException:
            self.abort()
            raise
        self.closed = True
        where = self._tmpdir or self.path
        out = None
        try:
            old = self._read_index(self._data) if os.path.isfile(self._data) else []
            merged: dict[bytes, tuple[str, int, int]] = {k: ("old", o, n) for k, o, n in old}
            for k, (o, n) in self._pending.items():
                merged[k] = ("new", o, n)
            tmp = _temp_beside(os.path.join(where, DIRDB_DATA_FILE))
            out = tmp
            old_f = open(self._data, "rb") if old else None
            try:
                with open(tmp, "wb") as f:
                    self._log.flush()
                    for k in sorted(merged):
                        src, o, n = merged[k]
                        value = self._pread(self._log if src == "new" else old_f, o, n)
                        write_record(f, k, value, self.path)
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                if old_f is not None:
                    old_f.close()
            os.replace(tmp, os.path.join(where, DIRDB_DATA_FILE))
            out = None
            _fsync_dir(where)
            self._discard_log()
            if self._tmpdir is not None:
                if os.path.isdir(self.path) and not os.listdir(self.path):
                    os.rmdir(self.path)
                os.rename(self._tmpdir, self.path)
                self._tmpdir = None
                _fsync_dir(_parent_dir(self.path))
        except OSError as e:
            _remove(out)
            self._discard_log()
            _remove(self._tmpdir)
            raise self.error(f"Cannot write leveldb {self.path} ({_reason(e)})") from e

    def _discard_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
            _remove(self._logname)

    def abort(self) -> None:
        if self.closed:
            return
        if self.mode == Mode.READ:
            self.close()
            return
        self.closed = True
        for txn in list(self._txns):
            txn.discard()
        self._discard_log()
        _remove(self._tmpdir)
        self._tmpdir = None


class DirDBCursor(Cursor):
    """A snapshot of the sorted keys at creation; starts at the first record; seekable."""

    def __init__(self, db: DirDB) -> None:
        self._db = db
        self._index = db._index
        self._pos = 0

    def supports_seek(self) -> bool:
        return True

    def seek(self, key: bytes | str) -> None:
        k = as_bytes(key)
        self._pos = bisect.bisect_left(self._index, (k,))

    def seek_to_first(self) -> None:
        self._pos = 0

    def next(self) -> None:
        self._pos += 1

    def valid(self) -> bool:
        return self._pos < len(self._index)

    def key(self) -> bytes:
        if not self.valid():
            raise EnforceError("Cursor is at invalid location!", "leveldb")
        return self._index[self._pos][0]

    def value(self) -> bytes:
        if not self.valid():
            raise EnforceError("Cursor is at invalid location!", "leveldb")
        db = self._db
        _, off, n = self._index[self._pos]
        with db._lock:
            db._check_open()
            return db._pread(db._rf, off, n)


class DirDBTransaction(Transaction):
    """A write batch: ``put`` collects, ``commit`` writes the batch to the DB."""

    def __init__(self, db: DirDB) -> None:
        self._db = db
        self._batch: list[tuple[bytes, bytes]] = []

    def put(self, key: bytes | str, value: bytes) -> None:
        k, v = as_bytes(key), as_bytes(value, "value")
        if not k or not v:
            what = "key" if not k else f"value of key {k[:64]!r}"
            raise self._db.error(
                f"Cannot put an empty {what} into leveldb {self._db.path}: "
                "the directory stand-in stores records in minidb format"
            )
        self._batch.append((k, v))

    def discard(self) -> None:
        self._batch = []

    def commit(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._db._append(batch)

    def __del__(self) -> None:
        if getattr(self, "_batch", None):
            try:
                self.commit()
            except Exception as e:
                log.error("Error committing to leveldb %s: %s", self._db.path, e)
