"""Save, Load, DBExists and Checkpoint (spec data.md 8.3): blobs to and from DBs.

Paths: with ``absolute_path`` the ``db`` argument is the path, otherwise it is
``<workspace root folder>/<db>``. ``strip_prefix`` drops everything up to and including
the first occurrence of the prefix anywhere in a name. Records are the BlobProtos of
``caffe2.runtime.serialization`` (tensors chunked under ``<name>#%<k>``, the chunk size
being the ``caffe2_tensor_chunk_size`` flag), stored through ``caffe2.runtime.db``.

Deliberate deviations from Caffe2, each safer and observable only on failure:

- a Save is atomic: when it fails part-way (a blob with no serializer, a full disk, the
  process killed) the previous DB at the path is left whole; Caffe2 had already truncated
  it and left the earlier records in it;
- a blob name that is empty after ``strip_prefix`` (or an empty override) is refused when
  the op is created, since minidb cannot read an empty key back;
- Load checks that the chunks of one tensor agree on dims and data type, and its errors
  name the record, the blob and the DB they came from.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

from caffe2.operators._util import BOOL, I64, output, tensor
from caffe2.proto import caffe2_pb2
from caffe2.runtime import serialization
from caffe2.runtime.blob import Blob, describe
from caffe2.runtime.db import DB, Cursor, DBReader, Mode, create_db, db_exists, unknown_type_hint
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.flags import FLAGS
from caffe2.runtime.registry import Arg, operator

log = logging.getLogger("caffe2")

Kernel = Callable[[], None]

MAX_CHECKPOINT_NAME = 1023

SAVE_ARGS = (
    Arg("db", "str", ""),
    Arg("db_type", "str", ""),
    Arg("absolute_path", "int", 0),
    Arg("strip_prefix", "str", ""),
    Arg("blob_name_overrides", "strings", []),
)


# ---- shared rules --------------------------------------------------------------------------
def db_path(op: Any, name: str, absolute: object) -> str:
    """The path of a DB argument: itself when absolute, else under the workspace root folder."""
    return name if absolute else f"{op.ws.root_folder}/{name}"


def strip_prefix(name: str, prefix: str) -> str:
    """Drop everything up to and including the first occurrence of prefix (if any)."""
    if not prefix:
        return name
    i = name.find(prefix)
    return name if i < 0 else name[i + len(prefix) :]


def chunk_size() -> int:
    """The ``caffe2_tensor_chunk_size`` flag (GlobalInit sets it), default 1,000,000."""
    value = int(FLAGS.get("caffe2_tensor_chunk_size", serialization.DEFAULT_CHUNK_SIZE))
    if value <= 0:
        raise EnforceError(
            f"The caffe2_tensor_chunk_size flag must be positive, got {value}", "Save"
        )
    return value


def save_names(op: Any, db: str, db_type: str, overrides: list[str], prefix: str) -> list[str]:
    """The record names of Save's inputs, with Save's construction checks, in Caffe2's order."""
    if not db:
        raise op.error("Must specify a db name.")
    if not db_type:
        raise op.error("Must specify a db type.")
    n = len(op.input_names)
    if overrides and len(overrides) != n:
        raise op.error(
            f"Number of blobs and blob_name_overrides mismatch. ({n} inputs, "
            f"{len(overrides)} overrides)"
        )
    if overrides and prefix:
        raise op.error("strip_prefix and blob_name_overrides are mutually exclusive.")
    if overrides:
        names = list(overrides)  # used verbatim; duplicates are not checked (as in Caffe2)
    else:
        names, seen = [], set()
        for inp in op.input_names:
            name = strip_prefix(inp, prefix)
            if name in seen:
                raise op.error(f"Duplicated input: {name}", name)
            seen.add(name)
            names.append(name)
    for inp, name in zip(op.input_names, names, strict=True):
        if not name:
            raise op.error(
                f"Input {inp} would be saved under an empty name, which cannot be loaded back",
                inp,
            )
    return names


def save_blobs(op: Any, path: str, db_type: str, names: list[str]) -> None:
    """Write op's input blobs under names into a NEW DB at path; atomic (abort on failure)."""
    try:
        db = create_db(db_type, path, Mode.NEW)
    except EnforceError as e:
        raise op.error(f"{e.msg}\nSave could not create {db_type} db {path}") from e
    except Exception as e:  # e.g. the lmdb package missing
        raise op.error(f"Cannot open db for writing: {path} ({type(e).__name__}: {e})") from e
    if db is None:
        raise op.error(f"Cannot open db for writing: {path}. {unknown_type_hint(db_type)}")
    size = chunk_size()
    try:
        for i, (name, blob) in enumerate(zip(names, op.inputs, strict=True)):
            inp = op.input_names[i]
            try:
                for key, data in serialization.blob_chunks(name, blob.value, size):
                    txn = db.new_transaction()
                    txn.put(key, data)
                    txn.close()
            except Exception as e:
                detail = e.msg if isinstance(e, EnforceError) else f"{type(e).__name__}: {e}"
                renamed = f" as {name}" if name != inp else ""
                raise op.error(
                    f"{detail}\nSaving input {i} ({inp}{renamed}) to {db_type} db {path} failed; "
                    "the db keeps its previous content.",
                    inp,
                ) from e
    except BaseException:
        db.abort()
        raise
    try:
        db.close()
    except EnforceError as e:
        raise op.error(f"{e.msg}\nSave could not write {db_type} db {path}") from e


# ---- Save ----------------------------------------------------------------------------------
@operator("Save", inputs=(1, None), outputs=0, args=SAVE_ARGS)
def save(op: Any) -> Kernel:
    """Save: [b_1..b_n] -> (). Serializes the blobs into a new (replaced) DB."""
    db, db_type = op.arg("db"), op.arg("db_type")
    names = save_names(op, db, db_type, op.arg("blob_name_overrides"), op.arg("strip_prefix"))
    path = db_path(op, db, op.arg("absolute_path"))

    def run() -> None:
        save_blobs(op, path, db_type, names)

    return run


# ---- Checkpoint ----------------------------------------------------------------------------
_CONVERSION = re.compile(
    r"%(?P<flags>[-+ #0]*)(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d*))?"
    r"(?P<len>hh|h|ll|l|j|z|t|L|q)?(?P<conv>.?)",
    re.DOTALL,
)


def format_pattern(pattern: str, value: int) -> str:
    """sprintf(pattern, value) for one int64 argument (``%d``, ``%05d``, ``%lld``, ``%x`` ...)."""
    out: list[str] = []
    pos = 0
    used = False
    for m in _CONVERSION.finditer(pattern):
        out.append(pattern[pos : m.start()])
        pos = m.end()
        conv = m.group("conv")
        if conv == "%" and m.group(0) == "%%":
            out.append("%")
            continue
        if used:
            raise ValueError(f"it has more than one conversion ({m.group(0)!r})")
        if conv not in ("d", "i", "u", "o", "x", "X"):
            raise ValueError(f"conversion {m.group(0)!r} cannot format an int64 iteration")
        if m.group("width") == "*" or m.group("prec") == "*":
            raise ValueError(f"conversion {m.group(0)!r} takes a width argument")
        used = True
        v = value
        if conv in "uoxX" and v < 0:
            v += 2**64
        spec = "%" + m.group("flags") + (m.group("width") or "")
        if m.group("prec") is not None:
            spec += "." + (m.group("prec") or "0")
        out.append((spec + (conv if conv in "oxX" else "d")) % v)
    out.append(pattern[pos:])
    return "".join(out)


@operator("Checkpoint", inputs=(1, None), outputs=0, args=(Arg("every", "int", 1), *SAVE_ARGS))
def checkpoint(op: Any) -> Kernel:
    """Checkpoint: [iter, b_1..b_n] -> (). Saves every input to ``db % iter`` every N iters."""
    pattern, every = op.arg("db"), op.arg("every")
    if not pattern:
        raise op.error("Must specify a checkpoint file pattern.")
    if every <= 0:
        raise op.error(f"Checkpoint interval should be positive. (every = {every})")
    if every == 1:
        log.warning(
            "It is not a good idea to checkpoint every iteration (%s writes %s every run).",
            op.type,
            pattern,
        )
    db_type, absolute = op.arg("db_type"), op.arg("absolute_path")
    overrides, prefix = op.arg("blob_name_overrides"), op.arg("strip_prefix")
    iter_name = op.input_names[0]

    def run() -> None:
        it = tensor(op, 0)
        if it.dtype != I64 or it.size < 1:
            raise op.error(
                f"The iteration blob {iter_name} must be an int64 tensor with at least one "
                f"element, but it holds {describe(it)}",
                iter_name,
            )
        iteration = int(it.reshape(-1)[0])
        if iteration % every != 0:
            return
        try:
            name = format_pattern(pattern, iteration)
        except ValueError as e:
            raise op.error(f"Cannot format the checkpoint file pattern {pattern!r}: {e}") from e
        if len(name) > MAX_CHECKPOINT_NAME:
            raise op.error(
                f"The checkpoint db name for iteration {iteration} is {len(name)} characters "
                f"long; at most {MAX_CHECKPOINT_NAME} fit: {name[:80]}..."
            )
        names = save_names(op, name, db_type, overrides, prefix)
        save_blobs(op, db_path(op, name, absolute), db_type, names)

    return run


operator("Snapshot", inputs=(1, None), outputs=0, args=(Arg("every", "int", 1), *SAVE_ARGS))(
    checkpoint
)


# ---- DBExists ------------------------------------------------------------------------------
@operator(
    "DBExists",
    inputs=0,
    outputs=1,
    args=(Arg("db_name", "str", ""), Arg("db_type", "str", ""), Arg("absolute_path", "int", 0)),
)
def dbexists(op: Any) -> Kernel:
    """DBExists: () -> exists. A 0-d bool: the DB opens for reading (unknown types: True)."""
    db_type = op.arg("db_type")
    path = db_path(op, op.arg("db_name"), op.arg("absolute_path"))
    Y = op.outputs[0]

    def run() -> None:
        output(Y, (), BOOL)[()] = db_exists(db_type, path)

    return run


# ---- Load ----------------------------------------------------------------------------------
LOAD_ARGS = (
    Arg("absolute_path", "int", 0),
    Arg("add_prefix", "str", ""),
    Arg("strip_prefix", "str", ""),
    Arg("db", "str", ""),
    Arg("dbs", "strings", []),
    Arg("db_type", "str", ""),
    Arg("keep_device", "int", 0),
    Arg("load_all", "int", 0),
    Arg("allow_incomplete", "bool", False),
    Arg("source_blob_names", "strings", []),
)


class _BlobState:
    """How much of a blob the records read so far have filled."""

    __slots__ = ("total", "current", "is_tensor", "chunk_ids", "dims", "data_type")

    def __init__(self, total: int = 0, current: int = 0, is_tensor: bool = False) -> None:
        self.total = total
        self.current = current
        self.is_tensor = is_tensor
        self.chunk_ids: set[int] = set()
        self.dims: tuple[int, ...] = ()
        self.data_type = 0

    @property
    def complete(self) -> bool:
        return self.current == self.total


def _load_factory(op: Any) -> tuple[list[str], dict[str, int]]:
    """Load's construction checks, in Caffe2's order: the DB paths and the wanted names."""
    paths: list[str] = []
    if not op.input_names:
        db_type = op.arg("db_type")
        if not db_type:
            raise op.error("Must specify a db type.")
        dbs = op.arg("dbs")
        if not dbs:
            db = op.arg("db")
            if not db:
                raise op.error("Must specify a db name.")
            dbs = [db]
        else:
            seen: set[str] = set()
            for name in dbs:
                if not name:
                    raise op.error("Db name should not be empty.")
                if name in seen:
                    raise op.error(f"Duplicated db name: {name}")
                seen.add(name)
        absolute = op.arg("absolute_path")
        paths = [db_path(op, name, absolute) for name in dbs]
    sources = op.arg("source_blob_names")
    load_all = op.arg("load_all")
    if sources:
        if len(sources) != len(op.output_names):
            raise op.error(
                "Number of output blobs and source_blob_names mismatch. "
                f"({len(op.output_names)} outputs, {len(sources)} source_blob_names)"
            )
        if op.arg("strip_prefix"):
            raise op.error("strip_prefix and source_blob_names are mutually exclusive.")
        if load_all:
            raise op.error("cannot load_all_ while using source_blob_names.")
    wanted: dict[str, int] = {}
    if not load_all:
        for i, name in enumerate(sources or op.output_names):
            if name in wanted:
                raise op.error(f"Duplicated source blob name: {name}", name)
            wanted[name] = i
    return paths, wanted


@operator("Load", inputs=(0, None), outputs=(0, None), args=LOAD_ARGS, needs_workspace=True)
def load(op: Any) -> Kernel:
    """Load: [DBReader...] -> (b_1..b_k). Deserializes blobs from DB records by name."""
    paths, wanted = _load_factory(op)
    db_type = op.arg("db_type")
    add_prefix, prefix = op.arg("add_prefix"), op.arg("strip_prefix")
    load_all = bool(op.arg("load_all"))
    allow_incomplete = op.arg("allow_incomplete")
    n_out = len(op.output_names)

    def sources() -> Iterator[tuple[str, Cursor]]:
        """(label, cursor) of each DB in order; DBs opened here are closed after their turn."""
        if op.input_names:
            for i, name in enumerate(op.input_names):
                reader = op.inputs[i].value
                if not isinstance(reader, DBReader):
                    raise op.error(
                        f"Load: input {i} ({name}) must be a DBReader, but the blob holds "
                        f"{describe(reader)}",
                        name,
                    )
                if reader.cursor is None:
                    raise op.error(f"Load: DBReader {name} is not initialized.", name)
                yield f"DBReader {name} ({reader.db_type} {reader.source})", reader.cursor
            return
        for path in paths:
            db = _open_for_read(op, db_type, path)
            try:
                cursor = db.new_cursor()
                try:
                    yield f"{db_type} db {path}", cursor
                finally:
                    cursor.close()
            finally:
                db.close()

    def run() -> None:
        states: dict[str, _BlobState] = {}
        key_db: dict[str, int] = {}
        loaded = 0
        dbs = sources()
        for db_id, (label, cursor) in enumerate(dbs):
            try:
                while cursor.valid():
                    key = cursor.key().decode("utf-8", errors="surrogateescape")
                    name = add_prefix + strip_prefix(serialization.blob_name_of_key(key), prefix)
                    if not load_all and name not in wanted:
                        cursor.next()
                        continue
                    if key_db.setdefault(name, db_id) != db_id:
                        raise op.error(f"Duplicate Key {name} is found! (again in {label})", name)
                    proto = _parse(op, cursor.value(), key, name, label, load_all)
                    blob = op.outputs[wanted[name]] if not load_all else _target(op, name)
                    if _process(op, blob, proto, name, key, label, states):
                        loaded += 1
                    if not load_all and loaded == n_out:
                        break
                    cursor.next()
            except EnforceError as e:
                dbs.close()  # close the DB now, not when the generator is collected
                if e.where == op.where:
                    raise
                raise op.error(f"{e.msg}\nWhile loading from {label}", e.blob) from e
        for name, st in states.items():
            if not st.complete:
                raise op.error(
                    f"Data size mismatch for blob {name}. Expected: {st.total} Read: {st.current}",
                    name,
                )
        if load_all or loaded == n_out or allow_incomplete:
            return
        missing = [n for n in wanted if n not in states]
        for name in missing:
            log.error("Failed to load blob: %s", name)
        where = ", ".join(paths) if paths else ", ".join(op.input_names)
        lines = "".join(f"Failed to load blob: {n}\n" for n in missing)
        raise op.error(
            f"Expected to load {n_out} blobs, got {loaded} only.\n{lines}(from {where})",
            missing[0] if missing else None,
        )

    return run


def _open_for_read(op: Any, db_type: str, path: str) -> DB:
    try:
        db = create_db(db_type, path, Mode.READ)
    except EnforceError as e:
        raise op.error(f"{e.msg}\nLoad could not open {db_type} db {path}") from e
    except Exception as e:  # e.g. the lmdb package missing
        raise op.error(f"Cannot open db: {path} ({type(e).__name__}: {e})") from e
    if db is None:
        raise op.error(f"Cannot open db: {path}. {unknown_type_hint(db_type)}")
    return db


def _parse(
    op: Any, data: bytes, key: str, name: str, label: str, load_all: bool
) -> caffe2_pb2.BlobProto:
    try:
        return serialization.parse_blob_proto(data)
    except EnforceError as e:
        head = "Couldn't parse Proto" if load_all else "Cannot parse content into a BlobProto."
        raise op.error(f"{head}: record {key!r} for blob {name} in {label}", name) from e


def _target(op: Any, name: str) -> Blob:
    blob = op.ws.create_blob(name)
    if blob is None:
        raise op.error(f"Cannot create blob {name} to load into", name)
    return blob


def _process(
    op: Any,
    blob: Blob,
    proto: caffe2_pb2.BlobProto,
    name: str,
    key: str,
    label: str,
    states: dict[str, _BlobState],
) -> bool:
    """Check one record against the blob's state, deserialize it; True if it completes the blob.

    The checks and messages are Caffe2's LoadOp bookkeeping (spec data.md 8.3).
    """
    st = states.get(name)
    first = st is None

    def fail(msg: str) -> EnforceError:
        return op.error(f"{msg} (record {key!r} of {label})", name)

    if proto.HasField("content_num_chunks"):
        num, cid = proto.content_num_chunks, proto.content_chunk_id
        new = _BlobState(total=num) if first else st
        if cid in new.chunk_ids:
            raise fail(f"Chunk with the same id has occured twice for: {name}")
        if not 0 <= cid < new.total:
            raise fail(
                f"Chunk id has to be not less than 0 and less than content_num_chunks for key: "
                f"{name} (chunk {cid} of {new.total})"
            )
        if new.is_tensor or proto.HasField("tensor"):
            raise fail(f"Proto with content_chunks can not store tensor: {name}")
        if new.current + 1 > new.total:
            raise fail(f"Found an extra part for an already filled blob: {name}")
        _deserialize(op, blob, proto, name, key, label, first)
        new.chunk_ids.add(cid)
        new.current += 1
        states[name] = new
        return new.complete
    if not proto.HasField("tensor"):
        if not first:
            raise fail(f"Blob duplicated: {name}")
        _deserialize(op, blob, proto, name, key, label, first)
        states[name] = _BlobState()
        return True
    t = proto.tensor
    dims = tuple(int(d) for d in t.dims)
    if first:
        total = 1
        for d in dims:
            total *= d
        current = total
        if t.HasField("segment"):
            current = t.segment.end - t.segment.begin
        new = _BlobState(total, current, True)
        new.dims, new.data_type = dims, t.data_type
    else:
        new = st
        if not st.is_tensor:
            raise fail(f"Must be tensor {name}")
        if st.current >= st.total:
            raise fail(f"Found an extra part for an already filled tensor: {name}")
        if not t.HasField("segment"):
            raise fail(f"Partial tensor must have a segment: {name}")
        if dims != st.dims or t.data_type != st.data_type:
            raise fail(
                f"Chunks of tensor {name} disagree: dims {list(dims)} type {t.data_type}, "
                f"but the first chunk had dims {list(st.dims)} type {st.data_type}"
            )
        length = t.segment.end - t.segment.begin
        if st.current + length > st.total:
            raise fail(f"Tensor parts are bigger than target size for tensor: {name}")
    _deserialize(op, blob, proto, name, key, label, first)
    if not first:
        new.current += length
    states[name] = new
    return new.complete


def _deserialize(
    op: Any,
    blob: Blob,
    proto: caffe2_pb2.BlobProto,
    name: str,
    key: str,
    label: str,
    first: bool,
) -> None:
    if first:
        blob.value = None  # the first record of a name resets the blob
    try:
        serialization.deserialize_blob_proto(proto, blob)
    except Exception as e:
        detail = e.msg if isinstance(e, EnforceError) else f"{type(e).__name__}: {e}"
        raise op.error(
            f"{detail}\nCannot load blob {name} from record {key!r} of {label}", name
        ) from e
