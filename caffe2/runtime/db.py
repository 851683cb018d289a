"""Caffe2's DB interface (spec data.md 8.2): DB, Cursor, Transaction, a registry of DB types.

The backends live in their own modules and register themselves with ``register_db``:

- ``minidb`` / ``MiniDB`` (``caffe2.runtime.minidb``): Caffe2's own single-file format, byte
  for byte. The file is a plain sequence of records ``[int32 key_len][int32 value_len][key]
  [value]`` (little-endian, as C++ wrote it on every supported platform), in write order.
- ``leveldb`` / ``LevelDB`` (``caffe2.runtime.leveldb_dir``): a directory-backed stand-in with
  LevelDB's behaviour (sorted unique keys, seekable cursors, NEW fails on an existing
  database, a missing database is created in NEW and WRITE modes). Its data file
  ``data.minidb`` is a minidb file sorted by key; it is **not** LevelDB's on-disk format.
- ``lmdb`` / ``LMDB`` (``caffe2.runtime.lmdb_db``): through the ``lmdb`` package (imported on
  first use), a directory.

The backend modules import this one, so it imports them lazily: the first use of the
registry (``create_db``, ``open_db``, ``register_db``, ...) loads them, and their public names
(``MiniDB``, ``DirDB``, ``LMDB``, ``write_record``, ``DIRDB_DATA_FILE``, ...) stay importable
from here through the module's ``__getattr__``.

Writes are atomic: a DB opened in NEW or WRITE mode writes to a temporary file (or, for a
database directory that does not exist yet, a temporary directory) beside its path, and
``close()`` flushes, fsyncs and renames it into place, so a process killed in the middle of
a save leaves the previous database whole. ``abort()`` discards what was written. An LMDB
opened in WRITE mode relies on LMDB's own transactions: every commit is atomic. The file
helpers for this (``_temp_beside``, ``_fsync_dir``, ``_remove``, ...) are defined here, once.

``create_db`` returns None for an unknown type, as Caffe2's CreateDB did; ``open_db`` raises
an error naming the close matches instead. Keys and values are ``bytes`` (a ``str`` key is
UTF-8 encoded).
"""

from __future__ import annotations

import difflib
import enum
import importlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator

from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import Blob
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.serialization import register_deserializer, register_serializer

log = logging.getLogger("caffe2")

# The built-in backends, in registration order, and the names each one is imported for.
_BACKENDS: dict[str, tuple[str, ...]] = {
    "caffe2.runtime.minidb": (
        "MiniDB",
        "MiniDBCursor",
        "MiniDBTransaction",
        "write_record",
        "read_record",
        "_HEADER",
        "_INT32_MAX",
        "_Gate",
    ),
    "caffe2.runtime.leveldb_dir": ("DirDB", "DirDBCursor", "DirDBTransaction", "DIRDB_DATA_FILE"),
    "caffe2.runtime.lmdb_db": (
        "LMDB",
        "LMDBCursor",
        "LMDBTransaction",
        "LMDB_MAP_SIZE",
        "_import_lmdb",
    ),
}
_BACKEND_OF = {name: module for module, names in _BACKENDS.items() for name in names}


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
_backends_lock = threading.RLock()
_backends_state = "unloaded"  # then "loading" (by the thread holding _backends_lock), "loaded"


def _load_backends() -> None:
    """Import the built-in backend modules (which register their types) once.

    Re-entered by the backends' own ``register_db`` calls while they load, which return at
    once; another thread waits until they are loaded.
    """
    global _backends_state
    if _backends_state == "loaded":
        return
    with _backends_lock:
        if _backends_state != "unloaded":
            return
        _backends_state = "loading"
        try:
            for module in _BACKENDS:
                importlib.import_module(module)
        except BaseException:
            _backends_state = "unloaded"
            raise
        _backends_state = "loaded"


def __getattr__(name: str) -> object:
    """The backends' public names (``MiniDB``, ``DirDB``, ``LMDB``, ...), imported lazily."""
    module = _BACKEND_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _load_backends()
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_BACKEND_OF))


def register_db(*names: str) -> Callable[[type], type]:
    """Register a DB class under one or more type names: ``@register_db("minidb", "MiniDB")``."""
    _load_backends()  # a name the built-in backends register is taken, as before

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
    _load_backends()
    return sorted(_DB_TYPES)


def has_db_type(db_type: str) -> bool:
    _load_backends()
    return db_type in _DB_TYPES


def create_db(db_type: str, path: str, mode: Mode | int | str) -> DB | None:
    """Caffe2's CreateDB: the opened DB, or None for an unknown type (open errors raise)."""
    _load_backends()
    cls = _DB_TYPES.get(db_type)
    if cls is None:
        return None
    return cls(path, _mode(mode))


def unknown_type_hint(db_type: str) -> str:
    """A sentence naming the close matches of an unknown db type, or all known types."""
    _load_backends()
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
