"""Caffe2's minidb DB type (``minidb`` / ``MiniDB``), byte for byte.

The file is a plain sequence of records ``[int32 key_len][int32 value_len][key][value]``
(little-endian, as C++ wrote it on every supported platform), in write order. A DB opened in
NEW or WRITE mode writes to a temporary file beside its path, and ``close()`` flushes, fsyncs
and renames it into place. ``write_record`` / ``read_record`` are also used by the leveldb
stand-in (``caffe2.runtime.leveldb_dir``), whose data file is a sorted minidb file.
"""

from __future__ import annotations

import os
import shutil
import struct
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

_HEADER = struct.Struct("<ii")
_INT32_MAX = 2**31 - 1


class _Gate:
    """The DB's file mutex: one cursor or transaction at a time.

    Another thread waits for it, as in Caffe2; a second one in the same thread would wait
    for ever, so it raises instead.
    """

    def __init__(self, what: str) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._what = what

    def acquire(self, kind: str) -> None:
        me = threading.get_ident()
        if self._owner == me:
            raise EnforceError(
                f"Cannot open a {kind} on {self._what}: a cursor or transaction of this DB is "
                "still open in this thread (close it first; Caffe2 would deadlock here)",
                "minidb",
            )
        self._lock.acquire()
        self._owner = me

    def release(self) -> None:
        self._owner = None
        self._lock.release()


def write_record(f: Any, key: bytes, value: bytes, path: str) -> None:
    """Append one minidb record to a binary file object."""
    if not key or not value:
        what = "key" if not key else f"value of key {key!r}"
        raise EnforceError(
            f"Cannot write a record with an empty {what} to {path}: minidb cannot read it back",
            "minidb",
        )
    if len(key) > _INT32_MAX or len(value) > _INT32_MAX:
        raise EnforceError(
            f"Record {key[:64]!r} is too large for minidb {path} "
            f"(key {len(key)} bytes, value {len(value)} bytes; the limit is 2 GiB - 1 each)",
            "minidb",
        )
    f.write(_HEADER.pack(len(key), len(value)))
    f.write(key)
    f.write(value)


def read_record(f: Any, path: str, db_type: str = "minidb") -> tuple[bytes, bytes, int] | None:
    """Read one minidb record at the file's position: (key, value, offset), None at the end.

    Fewer than 4 bytes left is the end (Caffe2 ignored 1 to 3 stray bytes); anything else
    short or malformed raises naming the file and the record's byte offset.
    """
    off = f.tell()
    head = f.read(4)
    if len(head) < 4:
        return None

    def corrupt(detail: str) -> EnforceError:
        return EnforceError(
            f"Corrupt or truncated {db_type} file {path}: record at byte offset {off}: {detail}",
            db_type,
        )

    rest = f.read(4)
    if len(rest) < 4:
        raise corrupt(f"the value length is cut off ({len(rest)} of 4 bytes)")
    klen, vlen = _HEADER.unpack(head + rest)
    if klen <= 0 or vlen <= 0:
        raise corrupt(f"invalid key length {klen} or value length {vlen} (both must be > 0)")
    remaining = os.fstat(f.fileno()).st_size - (off + 8)
    if klen + vlen > remaining:
        raise corrupt(
            f"the key ({klen} bytes) and value ({vlen} bytes) need {klen + vlen} bytes, "
            f"but only {max(remaining, 0)} remain"
        )
    key = f.read(klen)
    value = f.read(vlen)
    if len(key) != klen or len(value) != vlen:
        raise corrupt("the file ended while reading the key and value")
    return key, value, off


@register_db("minidb", "MiniDB")
class MiniDB(DB):
    """Caffe2's minidb: one file of length-prefixed records in write order."""

    db_type = "minidb"

    def __init__(self, path: str, mode: Mode) -> None:
        super().__init__(path, mode)
        self.closed = True
        self._tmp: str | None = None
        self._gate = _Gate(f"minidb {path}")
        try:
            if mode == Mode.READ:
                self._file = open(path, "rb")
            else:
                if os.path.isdir(path):
                    raise IsADirectoryError(21, "Is a directory")
                if os.path.exists(path) and not os.access(path, os.W_OK):
                    raise PermissionError(13, "Permission denied")
                self._target = os.path.realpath(path) if os.path.islink(path) else path
                self._tmp = _temp_beside(self._target)
                if mode == Mode.WRITE and os.path.exists(path):
                    shutil.copyfile(path, self._tmp)
                self._file = open(self._tmp, "ab")
        except OSError as e:
            _remove(self._tmp)
            self._tmp = None
            raise EnforceError(f"Cannot open file: {path} ({_reason(e)})", "minidb") from e
        self.closed = False

    def new_cursor(self) -> MiniDBCursor:
        self._check_mode(True, "A cursor")
        return MiniDBCursor(self)

    def new_transaction(self) -> MiniDBTransaction:
        self._check_mode(False, "A transaction")
        return MiniDBTransaction(self)

    def close(self) -> None:
        """Close the file; in NEW or WRITE mode, fsync it and move it over the path."""
        if self.closed:
            return
        self.closed = True
        f, tmp = self._file, self._tmp
        self._tmp = None
        if tmp is None:
            f.close()
            return
        try:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(tmp, self._target)
        except OSError as e:
            f.close()
            _remove(tmp)
            raise self.error(f"Cannot write file: {self.path} ({_reason(e)})") from e
        _fsync_dir(_parent_dir(self._target))

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._file.close()
        _remove(self._tmp)
        self._tmp = None


class MiniDBCursor(Cursor):
    """Reads records from the DB file's current position; always one record ahead."""

    def __init__(self, db: MiniDB) -> None:
        db._gate.acquire("cursor")
        self._db = db
        self._open = True
        self._key = self._value = b""
        self._valid = False
        try:
            self.next()
        except BaseException:
            self.close()
            raise

    def seek(self, key: bytes | str) -> None:
        raise EnforceError("MiniDB does not support seeking to a specific key.", "minidb")

    def seek_to_first(self) -> None:
        self._check()
        self._db._file.seek(0)
        self.next()

    def next(self) -> None:
        self._check()
        rec = read_record(self._db._file, self._db.path)
        if rec is None:
            self._valid = False
            self._key = self._value = b""
        else:
            self._key, self._value, _ = rec
            self._valid = True

    def key(self) -> bytes:
        if not self._valid:
            raise EnforceError("Cursor is at invalid location!", "minidb")
        return self._key

    def value(self) -> bytes:
        if not self._valid:
            raise EnforceError("Cursor is at invalid location!", "minidb")
        return self._value

    def valid(self) -> bool:
        return self._valid

    def _check(self) -> None:
        if not self._open:
            raise EnforceError("The cursor is closed", "minidb")
        self._db._check_open()

    def close(self) -> None:
        if self._open:
            self._open = False
            self._valid = False
            self._db._gate.release()

    def __del__(self) -> None:
        if getattr(self, "_open", False):
            self.close()


class MiniDBTransaction(Transaction):
    """Appends records to the DB file at once; ``commit()`` flushes and detaches it."""

    def __init__(self, db: MiniDB) -> None:
        db._gate.acquire("transaction")
        self._db = db
        self._open = True

    def put(self, key: bytes | str, value: bytes) -> None:
        if not self._open:
            raise EnforceError(
                f"Cannot put into minidb {self._db.path}: the transaction is committed",
                "minidb",
            )
        self._db._check_open()
        write_record(self._db._file, as_bytes(key), as_bytes(value, "value"), self._db.path)

    def commit(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            if not self._db.closed:
                self._db._file.flush()
        finally:
            self._db._gate.release()

    def __del__(self) -> None:
        if getattr(self, "_open", False):
            try:
                self.commit()
            except Exception as e:
                log.error("Error committing to minidb %s: %s", self._db.path, e)
