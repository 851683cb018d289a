"""The dataset column layout (Caffe2's TreeIterator), the TreeCursor and the mutex blob types.

A dataset is a list of columns named by their flat field names (spec data.md 3.1). Every
field whose last name component is ``lengths`` opens a *domain*; each field belongs to the
domain of the lengths field whose prefix is its longest component-wise prefix (the root
domain 0 when none matches). Advancing by ``num`` top-level records takes ``num`` rows of the
root domain and, domain by domain, as many child rows as the parent's lengths add up to.

``TreeCursor`` (held in a blob made by CreateTreeCursor) is the iterator plus the current
offsets, guarded by a lock; ``Mutex`` is the blob CreateMutex makes. Both serialize as Caffe2
wrote them (data.md 8.1).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from caffe2.operators._util import I32, TP
from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import Blob, describe, dtype_name
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.serialization import (
    register_deserializer,
    register_serializer,
    tensor_to_array,
)

FIELD_SEPARATOR = ":"
LENGTHS = "lengths"
OFFSET_MAX = 2**63 - 1  # the limit of a domain with no fields

TREE_CURSOR_TYPE = "std::unique_ptr<TreeCursor>"
MUTEX_TYPE = "std::unique_ptr<std::mutex>"


class TreeIterator:
    """The domains of a flat field list: which lengths field each field hangs from.

    ``field_domain[i]`` is the domain of field i (0 = root, j+1 = the j-th lengths field);
    ``length_field_ids[j]`` is the field index of the j-th lengths field, and
    ``domain_parent[j + 1]`` the domain that lengths field lives in.
    """

    __slots__ = ("fields", "length_field_ids", "field_domain", "domain_parent", "num_domains")

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = [str(f) for f in fields]
        parts = [f.split(FIELD_SEPARATOR) for f in self.fields]
        self.length_field_ids = [i for i, p in enumerate(parts) if p[-1] == LENGTHS]
        self.num_domains = len(self.length_field_ids) + 1
        self.field_domain: list[int] = []
        for i, p in enumerate(parts):
            best_level, best = 1, -1  # a top-level "lengths" (1 component) is never a parent
            for j, lf_id in enumerate(self.length_field_ids):
                if lf_id == i:
                    continue
                prefix = parts[lf_id][:-1]
                if len(p) < len(prefix) or p[: len(prefix)] != prefix:
                    continue
                if len(parts[lf_id]) > best_level:
                    best_level, best = len(parts[lf_id]), j
            self.field_domain.append(best + 1)
        for i, d in enumerate(self.field_domain):
            if d > 0 and self.length_field_ids[d - 1] >= i:
                j = self.length_field_ids[d - 1]
                raise EnforceError(
                    f"Error: Field {i} ({self.fields[i]}) depends on a field defined "
                    f"afterwards: {j} ({self.fields[j]}).",
                    "TreeIterator",
                )
        self.domain_parent = [0] + [self.field_domain[j] for j in self.length_field_ids]

    def domain_name(self, d: int) -> str:
        """A readable name of domain d for messages: 'root' or the lengths field's prefix."""
        if d == 0:
            return "the root domain"
        name = self.fields[self.length_field_ids[d - 1]]
        return f"domain '{name[: -len(LENGTHS) - 1] or name}'"

    def __repr__(self) -> str:
        return f"TreeIterator({self.fields!r})"


class TreeCursor:
    """A read position in a dataset: per-domain offsets (empty = all zeros) under a lock."""

    caffe2_type_name = TREE_CURSOR_TYPE
    __slots__ = ("it", "offsets", "lock")

    def __init__(self, it: TreeIterator, offsets: Sequence[int] = ()) -> None:
        self.it = it
        self.offsets: list[int] = [int(o) for o in offsets]
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<TreeCursor fields={self.it.fields} offsets={self.offsets}>"


class Mutex:
    """The blob CreateMutex makes (Caffe2's std::unique_ptr<std::mutex>)."""

    caffe2_type_name = MUTEX_TYPE
    __slots__ = ("lock",)

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __enter__(self) -> Mutex:
        self.lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def __repr__(self) -> str:
        return "<Mutex>"


# ---- reading the columns -------------------------------------------------------------------
class Columns:
    """The dataset columns an op reads, checked against an iterator.

    ``arrays[i]`` is field i's tensor (input ``first + i`` of the op), ``lengths[j]`` the int32
    lengths of the j-th lengths field (an empty tensor reads as zeros) and ``limits[d]`` the
    minimum dim 0 over the fields of domain d.
    """

    __slots__ = ("it", "first", "arrays", "lengths", "limits")

    def __init__(
        self, op: Any, it: TreeIterator, first: int, check_lengths_type: bool = False
    ) -> None:
        n = len(it.fields)
        self.it = it
        self.first = first
        self.arrays: list[np.ndarray] = []
        limits = [OFFSET_MAX] * it.num_domains
        for i in range(n):
            a = field_tensor(op, it, first, i)
            d = it.field_domain[i]
            limits[d] = min(limits[d], a.shape[0])
            self.arrays.append(a)
        self.limits = limits
        self.lengths: list[np.ndarray] = []
        for fid in it.length_field_ids:
            a = self.arrays[fid]
            if a.size == 0 and not check_lengths_type:
                self.lengths.append(np.zeros(0, I32))
                continue
            name = op.input_names[first + fid]
            if a.dtype != I32 or a.ndim != 1:
                raise op.error(
                    f"{op.type}: lengths field '{it.fields[fid]}' (blob {name}) must be a "
                    f"1-D int32 tensor, but it holds {describe(a)}",
                    name,
                )
            if a.size and int(a.min()) < 0:
                raise op.error(
                    f"{op.type}: lengths field '{it.fields[fid]}' (blob {name}) holds a "
                    f"negative length {int(a.min())}",
                    name,
                )
            self.lengths.append(a)

    def advance(self, op: Any, offsets: list[int], num: int) -> tuple[list[int], list[int]]:
        """Caffe2's TreeIterator::advance: (sizes, new offsets) after num top-level records."""
        it, limits = self.it, self.limits
        if offsets[0] > limits[0]:
            raise op.error("Tried to advance past end of cursor.")
        sizes = [0] * it.num_domains
        new = list(offsets)
        sizes[0] = min(limits[0] - offsets[0], num)
        new[0] = offsets[0] + sizes[0]
        for j in range(1, it.num_domains):
            p = it.domain_parent[j]
            lengths = self.lengths[j - 1]
            start, count = offsets[p], sizes[p]
            if count and start + count > lengths.shape[0]:
                raise op.error(
                    f"{op.type}: lengths field '{it.fields[it.length_field_ids[j - 1]]}' has "
                    f"{lengths.shape[0]} rows; cannot read rows [{start}, {start + count})"
                )
            total = int(lengths[start : start + count].sum(dtype=np.int64)) if count else 0
            if offsets[j] + total > limits[j]:
                raise self._overrun(op, j, offsets[j] + total)
            sizes[j] = total
            new[j] = offsets[j] + total
        return sizes, new

    def _overrun(self, op: Any, j: int, wanted: int) -> EnforceError:
        fid = self.it.length_field_ids[j - 1]
        blob = op.input_names[self.first + fid]
        return op.error(
            "Inconsistent field length: tried to advance past the end of field "
            f"{j} (lengths field '{self.it.fields[fid]}', blob {blob}, asks for rows up to "
            f"{wanted}, but {self.it.domain_name(j)} has {self.limits[j]} rows)",
            blob,
        )

    def all_offsets(self, op: Any, start: Sequence[int]) -> np.ndarray:
        """The (N+1, D) int64 matrix of domain offsets after k = 0..N records from start.

        N is limit[0]; rows past the end of the data repeat the final offsets.
        """
        it, limits = self.it, self.limits
        n = limits[0]
        if start[0] > n:
            raise op.error("Tried to advance past end of cursor.")
        out = np.empty((n + 1, it.num_domains), dtype=np.int64)
        out[:, 0] = np.minimum(np.arange(n + 1, dtype=np.int64) + start[0], n)
        for j in range(1, it.num_domains):
            p = it.domain_parent[j]
            lengths = self.lengths[j - 1]
            cum = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
            np.cumsum(lengths, dtype=np.int64, out=cum[1:])
            parent = out[:, p]
            if parent.size and int(parent.max()) > lengths.shape[0]:
                raise op.error(
                    f"{op.type}: lengths field '{it.fields[it.length_field_ids[j - 1]]}' has "
                    f"{lengths.shape[0]} rows but {it.domain_name(p)} needs "
                    f"{int(parent.max())}"
                )
            col = cum[parent] - cum[start[p]] + start[j]
            if col.size and int(col.max()) > limits[j]:
                raise self._overrun(op, j, int(col.max()))
            out[:, j] = col
        return out


def field_tensor(op: Any, it: TreeIterator, first: int, i: int) -> np.ndarray:
    """Input first+i (field i) as a tensor of at least one dimension, or an error naming it."""
    name = op.input_names[first + i]
    a = op.inputs[first + i].value
    if not isinstance(a, np.ndarray):
        raise op.error(
            f"{op.type}: field '{it.fields[i]}' (blob {name}) must be a tensor, but the blob "
            f"holds {describe(a)}",
            name,
        )
    if a.ndim < 1:
        raise op.error(
            f"{op.type}: field '{it.fields[i]}' (blob {name}) must have at least one dimension; "
            f"it is a scalar of type {dtype_name(a.dtype)}",
            name,
        )
    return a


def _held(op: Any, i: int, cls: type, what: str) -> Any:
    """The cls object in input i, or an error naming the blob, what it should hold and what
    it holds."""
    v = op.inputs[i].value
    if not isinstance(v, cls):
        name = op.input_names[i]
        raise op.error(
            f"{op.type}: input {name} must hold {what}, but it holds {describe(v)}", name
        )
    return v


def cursor_of(op: Any, i: int = 0) -> TreeCursor:
    """The TreeCursor in input i, or an error naming the blob and what it holds."""
    return _held(op, i, TreeCursor, "a TreeCursor (made by CreateTreeCursor)")


def mutex_of(op: Any, i: int = 0) -> Mutex:
    """The Mutex in input i, or an error naming the blob and what it holds."""
    return _held(op, i, Mutex, "a mutex (made by CreateMutex)")


# ---- serialization -------------------------------------------------------------------------
def serialize_cursor(name: str, cursor: TreeCursor) -> caffe2_pb2.BlobProto:
    """Caffe2's TreeCursorSerializer: int64 offsets (only when non-empty), then field names."""
    with cursor.lock:
        offsets = list(cursor.offsets)
    for f in cursor.it.fields:
        if not f or any(c.isspace() for c in f):
            raise EnforceError(
                f"Cannot serialize TreeCursor {name}: field name {f!r} is empty or holds "
                "whitespace",
                "TreeCursorSerializer",
                name,
            )
    proto = caffe2_pb2.BlobProto(name=name, type=TREE_CURSOR_TYPE)
    if offsets:
        t = proto.tensor
        t.dims.append(len(offsets))
        t.data_type = TP.INT64
        t.int64_data.extend(offsets)
        t.segment.begin = 0
        t.segment.end = len(offsets)
    proto.content = "".join(f + " " for f in cursor.it.fields).encode("utf-8")
    return proto


def deserialize_cursor(proto: caffe2_pb2.BlobProto, into: Blob) -> None:
    """Rebuild the iterator from the names and restore the offsets.

    Project decision: a cursor saved with empty offsets (never read, or reset) loads as a
    fresh cursor; Caffe2 failed with "Incorrect proto field size." there.
    """
    fields = proto.content.decode("utf-8").split()
    it = TreeIterator(fields)
    offsets: list[int] = []
    if proto.HasField("tensor"):
        arr = tensor_to_array(proto.tensor)
        if arr.dtype != np.int64 or arr.ndim != 1 or arr.shape[0] != it.num_domains:
            raise EnforceError(
                f"TreeCursor {proto.name}: offsets must be int64 [{it.num_domains}], got "
                f"{describe(arr)}",
                "TreeCursorDeserializer",
                proto.name or None,
            )
        offsets = [int(v) for v in arr]
    into.value = TreeCursor(it, offsets)


def serialize_mutex(name: str, mutex: Mutex) -> caffe2_pb2.BlobProto:
    """A mutex saves as its type with empty (present) content."""
    return caffe2_pb2.BlobProto(name=name, type=MUTEX_TYPE, content=b"")


def deserialize_mutex(proto: caffe2_pb2.BlobProto, into: Blob) -> None:
    into.value = Mutex()


register_serializer(TreeCursor, TREE_CURSOR_TYPE, serialize_cursor)
register_deserializer(TREE_CURSOR_TYPE, deserialize_cursor)
register_serializer(Mutex, MUTEX_TYPE, serialize_mutex)
register_deserializer(MUTEX_TYPE, deserialize_mutex)
