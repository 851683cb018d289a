"""Caffe2's DB interface (spec data.md 8.2): DB, Cursor, Transaction, a registry of DB types.

Backends:

- ``minidb`` / ``MiniDB``: Caffe2's own single-file format, byte for byte. The file is a
  plain sequence of records ``[int32 key_len][int32 value_len][key][value]`` (little-endian,
  as C++ wrote it on every supported platform), in write order.
- ``leveldb`` / ``LevelDB``: a directory-backed stand-in with LevelDB's behaviour (sorted
  unique keys, seekable cursors, NEW fails on an existing database, a missing database is
  created in NEW and WRITE modes). Its data file ``data.minidb`` is a minidb file sorted by
  key; it is **not** LevelDB's on-disk format.
- ``lmdb`` / ``LMDB``: through the ``lmdb`` package (imported on first use), a directory.

Writes are atomic: a DB opened in NEW or WRITE mode writes to a temporary file (or, for a
database directory that does not exist yet, a temporary directory) beside its path, and
``close()`` flushes, fsyncs and renames it into place, so a process killed in the middle of
a save leaves the previous database whole. ``abort()`` discards what was written. An LMDB
opened in WRITE mode relies on LMDB's own transactions: every commit is atomic.

``create_db`` returns None for an unknown type, as Caffe2's CreateDB did; ``open_db`` raises
an error naming the close matches instead. Keys and values are ``bytes`` (a ``str`` key is
UTF-8 encoded).
"""

from __future__ import annotations

import bisect
import difflib
import enum
import logging
import os
import shutil
import struct
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import Blob
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.serialization import register_deserializer, register_serializer

log = logging.getLogger("caffe2")

_HEADER = struct.Struct("<ii")
_INT32_MAX = 2**31 - 1
LMDB_MAP_SIZE = 1 << 40  # 1 TiB of address space, as Caffe2's LMDB_MAP_SIZE
DIRDB_DATA_FILE = "data.minidb"


class Mode(enum.IntEnum):
    """How a DB is opened: READ, WRITE (append / update) or NEW (create or truncate)."""

    READ = 0
    WRITE = 1
    NEW = 2


def _mode(mode: Mode | int | str) -> Mode:
    if isinstance(mode, str):
        try:
            return Mode[mode.upper()]
        except KeyError:
            raise ValueError(f"unknown DB mode {mode!r}; use read, write or new") from None
    return Mode(int(mode))


def as_bytes(data: object, what: str = "key") -> bytes:
    """A key or value as bytes: str is UTF-8 encoded, bytes-like objects are copied."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"DB {what} must be bytes or str, not {type(data).__name__}")


# ---- interface -----------------------------------------------------------------------------
class Cursor:
    """Iterates over a DB's records: ``valid()``, ``key()``, ``value()``, ``next()``."""

    def seek(self, key: bytes | str) -> None:
        """Move to the first record whose key is >= key (only if ``supports_seek()``)."""
        raise EnforceError(f"{type(self).__name__} does not support seeking.", "db")

    def supports_seek(self) -> bool:
        return False

    def seek_to_first(self) -> None:
        raise NotImplementedError

    def next(self) -> None:
        raise NotImplementedError

    def key(self) -> bytes:
        raise NotImplementedError

    def value(self) -> bytes:
        raise NotImplementedError

    def valid(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        """Release the cursor (it also releases itself when garbage collected)."""

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        """The (key, value) pairs from the current position to the end."""
        while self.valid():
            yield self.key(), self.value()
            self.next()


class Transaction:
    """Writes records: ``put(key, value)``, then ``commit()``. Closing commits."""

    def put(self, key: bytes | str, value: bytes) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Commit and release the transaction (what destroying one did in Caffe2)."""
        self.commit()

    def discard(self) -> None:
        """Drop uncommitted puts (called when the DB is aborted)."""

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DB:
    """A database opened at ``path`` in a ``Mode``; ``close()`` publishes what was written."""

    db_type = "?"

    def __init__(self, path: str, mode: Mode) -> None:
        self.path = path
        self.mode = mode
        self.closed = False
        self._txns: weakref.WeakSet[Transaction] = weakref.WeakSet()

    def _commit_open_transactions(self) -> None:
        """Commit what live transactions still hold (Caffe2 committed them when destroyed)."""
        for txn in list(self._txns):
            txn.commit()

    def new_cursor(self) -> Cursor:
        raise NotImplementedError

    def new_transaction(self) -> Transaction:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Close without publishing: a write since opening leaves the old database as it was."""
        self.close()

    def error(self, msg: str) -> EnforceError:
        return EnforceError(msg, self.db_type)

    def _check_open(self) -> None:
        if self.closed:
            raise self.error(f"{self.db_type} {self.path} is closed")

    def _check_mode(self, want_read: bool, what: str) -> None:
        self._check_open()
        if (self.mode == Mode.READ) != want_read:
            need = "READ" if want_read else "NEW or WRITE"
            raise self.error(
                f"{what} needs the {self.db_type} {self.path} opened in {need} mode, "
                f"not {self.mode.name}"
            )

    def __enter__(self) -> DB:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # Destroying a DB closed it in Caffe2.
        if not getattr(self, "closed", True):
            try:
                self.close()
            except Exception as e:  # never raise from a finalizer
                log.error("Error closing %s %s: %s", self.db_type, self.path, e)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r} {self.mode.name}>"


# ---- registry ------------------------------------------------------------------------------
_DB_TYPES: dict[str, Callable[[str, Mode], DB]] = {}
_registry_lock = threading.Lock()


def register_db(*names: str) -> Callable[[type], type]:
    """Register a DB class under one or more type names: ``@register_db("minidb", "MiniDB")``."""

    def deco(cls: type) -> type:
        with _registry_lock:
            for name in names:
                if name in _DB_TYPES and _DB_TYPES[name] is not cls:
                    raise RuntimeError(f"db type {name} is registered twice")
                _DB_TYPES[name] = cls
        if getattr(cls, "db_type", "?") == "?":
            cls.db_type = names[0]
        return cls

    return deco


def registered_db_types() -> list[str]:
    return sorted(_DB_TYPES)


def has_db_type(db_type: str) -> bool:
    return db_type in _DB_TYPES


def create_db(db_type: str, path: str, mode: Mode | int | str) -> DB | None:
    """Caffe2's CreateDB: the opened DB, or None for an unknown type (open errors raise)."""
    cls = _DB_TYPES.get(db_type)
    if cls is None:
        return None
    return cls(path, _mode(mode))


def unknown_type_hint(db_type: str) -> str:
    """A sentence naming the close matches of an unknown db type, or all known types."""
    close = difflib.get_close_matches(db_type, list(_DB_TYPES), n=3, cutoff=0.5)
    if not close:
        lower = db_type.lower()
        close = [t for t in _DB_TYPES if t.lower() == lower]
    if close:
        return f"Unknown db type '{db_type}'; did you mean {', '.join(close)}?"
    return f"Unknown db type '{db_type}'; known types: {', '.join(registered_db_types())}"


def open_db(db_type: str, path: str, mode: Mode | int | str) -> DB:
    """Open a DB, raising for an unknown type (naming the close matches) or an open failure."""
    db = create_db(db_type, path, mode)
    if db is None:
        raise EnforceError(unknown_type_hint(db_type), "db")
    return db


def db_exists(db_type: str, path: str) -> bool:
    """Caffe2's DBExists: whether opening in READ mode does not throw.

    An unknown type answers True, as in Caffe2 (CreateDB returns null without throwing).
    """
    try:
        db = create_db(db_type, path, Mode.READ)
    except Exception:
        return False
    if db is not None:
        db.close()
    return True


# ---- file helpers --------------------------------------------------------------------------
_umask_cache: list[int] = []


def _umask() -> int:
    if not _umask_cache:
        mask = None
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("Umask:"):
                        mask = int(line.split()[1], 8)
                        break
        except OSError:
            pass
        if mask is None:
            mask = os.umask(0o022)
            os.umask(mask)
        _umask_cache.append(mask)
    return _umask_cache[0]


def _parent_dir(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def _temp_beside(path: str, directory: bool = False) -> str:
    """A new temporary file (or directory) in the directory of path, named after it."""
    parent = _parent_dir(path)
    prefix = f".{os.path.basename(os.path.abspath(path))}."
    if directory:
        tmp = tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent)
        os.chmod(tmp, 0o777 & ~_umask())
        return tmp
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return tmp


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: str | None) -> None:
    if path is None:
        return
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


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


# ---- minidb --------------------------------------------------------------------------------
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


# ---- leveldb stand-in: a directory holding one sorted minidb file --------------------------
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


# ---- lmdb ----------------------------------------------------------------------------------
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


# ---- DBReader ------------------------------------------------------------------------------
class DBReader:
    """A DB opened for reading with a shared cursor; ``read()`` is thread-safe and sharded."""

    caffe2_type_name = "DBReader"

    def __init__(
        self,
        db_type: str = "",
        source: str = "",
        num_shards: int = 1,
        shard_id: int = 0,
        db: DB | None = None,
    ) -> None:
        self.db_type = db_type
        self.source = source
        self.db: DB | None = None
        self.cursor: Cursor | None = None
        self._lock = threading.Lock()
        self.num_shards, self.shard_id = 1, 0
        if db is not None:
            self.db = db
            self._init_cursor(num_shards, shard_id)
        elif source:
            self.open(db_type, source, num_shards, shard_id)

    def open(self, db_type: str, source: str, num_shards: int = 1, shard_id: int = 0) -> None:
        """Open source for reading (``Cannot open db: <source> of type <type>`` if unknown)."""
        if not (num_shards >= 1 and 0 <= shard_id < num_shards):
            raise EnforceError(
                f"DBReader: invalid sharding num_shards={num_shards} shard_id={shard_id}",
                "DBReader",
            )
        self.close()
        self.db_type, self.source = db_type, source
        db = create_db(db_type, source, Mode.READ)
        if db is None:
            raise EnforceError(
                f"Cannot open db: {source} of type {db_type}. {unknown_type_hint(db_type)}",
                "DBReader",
            )
        self.db = db
        self._init_cursor(num_shards, shard_id)

    def _init_cursor(self, num_shards: int, shard_id: int) -> None:
        self.num_shards, self.shard_id = num_shards, shard_id
        self.cursor = self.db.new_cursor()
        for _ in range(shard_id):
            self.cursor.next()

    def _rewind(self) -> None:
        cur = self.cursor
        cur.seek_to_first()
        for s in range(self.shard_id):
            cur.next()
            if not cur.valid():
                raise EnforceError(
                    f"Db has less rows than shard id: {s} {self.shard_id}", "DBReader"
                )

    def read(self) -> tuple[bytes, bytes]:
        """The current record; then advance num_shards records, rewinding at the end."""
        if self.cursor is None:
            raise EnforceError("Reader not initialized.", "DBReader")
        with self._lock:
            cur = self.cursor
            key, value = cur.key(), cur.value()
            for _ in range(self.num_shards):
                cur.next()
                if not cur.valid():
                    self._rewind()
                    break
            return key, value

    def close(self) -> None:
        if self.cursor is not None:
            self.cursor.close()
            self.cursor = None
        if self.db is not None:
            self.db.close()
            self.db = None

    def __repr__(self) -> str:
        return f"<DBReader {self.db_type} {self.source!r}>"


DBREADER_TYPE = "DBReader"


def _serialize_reader(name: str, reader: DBReader) -> caffe2_pb2.BlobProto:
    p = caffe2_pb2.DBReaderProto(name=name, source=reader.source, db_type=reader.db_type)
    cur = reader.cursor
    if cur is not None and cur.supports_seek() and cur.valid():
        p.key = cur.key().decode("utf-8", errors="surrogateescape")
    proto = caffe2_pb2.BlobProto(name=name, type=DBREADER_TYPE)
    proto.content = p.SerializeToString()
    return proto


def _deserialize_reader(proto: caffe2_pb2.BlobProto, into: Blob) -> None:
    p = caffe2_pb2.DBReaderProto()
    try:
        p.ParseFromString(proto.content)
    except Exception as e:
        raise EnforceError(
            "Cannot parse content into a DBReaderProto.", DBREADER_TYPE, proto.name or None
        ) from e
    reader = DBReader(p.db_type, p.source)
    if p.HasField("key"):
        if not reader.cursor.supports_seek():
            raise EnforceError(
                "Encountering a proto that needs seeking but the db type does not support it.",
                DBREADER_TYPE,
                proto.name or None,
            )
        reader.cursor.seek(p.key.encode("utf-8", errors="surrogateescape"))
    into.value = reader


register_serializer(DBReader, DBREADER_TYPE, _serialize_reader)
register_deserializer(DBREADER_TYPE, _deserialize_reader)
