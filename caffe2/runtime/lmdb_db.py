"""The ``lmdb`` / ``LMDB`` DB type: an LMDB environment directory through the ``lmdb`` package.

The package is imported on first use (a clear ImportError names it when missing). A database
opened in NEW mode is built in a temporary directory beside its path and renamed into place at
``close()``; in WRITE mode it relies on LMDB's own transactions: every commit is atomic.
"""

from __future__ import annotations

import os
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

LMDB_MAP_SIZE = 1 << 40  # 1 TiB of address space, as Caffe2's LMDB_MAP_SIZE


def _import_lmdb() -> Any:
    try:
        import lmdb
    except ImportError as e:
        raise ImportError(
            "The lmdb db type needs the 'lmdb' package: pip install lmdb",
            name="lmdb",
        ) from e
    return lmdb


@register_db("lmdb", "LMDB")
class LMDB(DB):
    """An LMDB environment directory, through the ``lmdb`` package."""

    db_type = "lmdb"

    def __init__(self, path: str, mode: Mode) -> None:
        super().__init__(path, mode)
        self.closed = True
        lmdb = self._lmdb = _import_lmdb()
        self._tmpdir: str | None = None
        self._txn = None
        try:
            if mode == Mode.NEW:
                if os.path.exists(path):
                    raise FileExistsError(17, "File exists")
                self._tmpdir = _temp_beside(path, directory=True)
                self._env = lmdb.open(self._tmpdir, map_size=LMDB_MAP_SIZE, subdir=True)
            elif mode == Mode.WRITE:
                self._env = lmdb.open(path, map_size=LMDB_MAP_SIZE, subdir=True, create=False)
            else:
                self._env = lmdb.open(
                    path, map_size=LMDB_MAP_SIZE, subdir=True, readonly=True, create=False
                )
        except (OSError, lmdb.Error) as e:
            _remove(self._tmpdir)
            what = f"mkdir {path} failed" if mode == Mode.NEW else f"Cannot open lmdb {path}"
            raise self.error(f"{what} ({_reason(e) if isinstance(e, OSError) else e})") from e
        self.closed = False

    def wrap(self, e: Exception, what: str) -> EnforceError:
        return self.error(f"lmdb {self.path}: {what} failed: {e}")

    def new_cursor(self) -> LMDBCursor:
        self._check_open()
        return LMDBCursor(self)

    def new_transaction(self) -> LMDBTransaction:
        self._check_mode(False, "A transaction")
        txn = LMDBTransaction(self)
        self._txns.add(txn)
        return txn

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._commit_open_transactions()
        except BaseException:
            self.abort()
            raise
        self.closed = True
        try:
            if self.mode != Mode.READ:
                self._env.sync(True)
            self._env.close()
            if self._tmpdir is not None:
                os.rename(self._tmpdir, self.path)
                self._tmpdir = None
                _fsync_dir(_parent_dir(self.path))
        except (OSError, self._lmdb.Error) as e:
            _remove(self._tmpdir)
            raise self.wrap(e, "close") from e

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        for txn in list(self._txns):
            txn.discard()
        self._env.close()
        _remove(self._tmpdir)
        self._tmpdir = None


class LMDBCursor(Cursor):
    """A read transaction's cursor, positioned at the first record."""

    def __init__(self, db: LMDB) -> None:
        self._db = db
        try:
            self._txn = db._env.begin(buffers=False)
            self._cur = self._txn.cursor()
            self._valid = self._cur.first()
        except db._lmdb.Error as e:
            raise db.wrap(e, "new cursor") from e

    def supports_seek(self) -> bool:
        return True

    def seek(self, key: bytes | str) -> None:
        self._valid = self._cur.set_range(as_bytes(key))

    def seek_to_first(self) -> None:
        self._valid = self._cur.first()

    def next(self) -> None:
        if not self._valid:
            raise EnforceError("Cursor is at invalid location!", "lmdb")
        self._valid = self._cur.next()

    def valid(self) -> bool:
        return self._valid

    def key(self) -> bytes:
        if not self._valid:
            raise EnforceError("Cursor is at invalid location!", "lmdb")
        return self._cur.key()

    def value(self) -> bytes:
        if not self._valid:
            raise EnforceError("Cursor is at invalid location!", "lmdb")
        return self._cur.value()

    def close(self) -> None:
        if self._txn is not None:
            self._cur.close()
            self._txn.abort()
            self._txn = None
            self._valid = False


class LMDBTransaction(Transaction):
    """A write transaction: ``commit()`` makes the puts durable and starts afresh."""

    def __init__(self, db: LMDB) -> None:
        self._db = db
        self._txn = None

    def put(self, key: bytes | str, value: bytes) -> None:
        db = self._db
        db._check_open()
        k, v = as_bytes(key), as_bytes(value, "value")
        try:
            if self._txn is None:
                self._txn = db._env.begin(write=True)
            self._txn.put(k, v)
        except db._lmdb.BadValsizeError as e:
            raise db.error(
                f"lmdb {db.path}: cannot put key {k[:64]!r} ({len(k)} bytes): keys must be "
                f"1 to {db._env.max_key_size()} bytes"
            ) from e
        except db._lmdb.Error as e:
            raise db.wrap(e, "put") from e

    def commit(self) -> None:
        txn, self._txn = self._txn, None
        if txn is not None:
            try:
                txn.commit()
            except self._db._lmdb.Error as e:
                raise self._db.wrap(e, "commit") from e

    def discard(self) -> None:
        """Drop the uncommitted puts (the DB is being aborted)."""
        txn, self._txn = self._txn, None
        if txn is not None:
            txn.abort()

    def __del__(self) -> None:
        if getattr(self, "_txn", None) is not None:
            try:
                self.commit()
            except Exception as e:
                log.error("Error committing to lmdb %s: %s", self._db.path, e)
