"""Dataset ops (spec data.md 3): TreeCursor reading, appending, trimming and record packing.

A dataset is a list of column tensors named by flat field names (``_tree_cursor`` has the
domain logic). Cursor ops take the cursor blob first and the columns after it; every column
error names the record field and its blob. (The tensor-vector and window-collector ops of
Caffe2's dataset_ops.cc live in ``tensor_vector_ops``.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from caffe2.operators._dataset_util import append_rows, shuffle
from caffe2.operators._tree_cursor import (
    OFFSET_MAX,
    Columns,
    Mutex,
    TreeCursor,
    TreeIterator,
    cursor_of,
    field_tensor,
    mutex_of,
)
from caffe2.operators._util import I32, I64, tensor
from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import Blob, describe, dtype_name
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.registry import Arg, operator
from caffe2.runtime.serialization import (
    array_to_tensor,
    register_deserializer,
    register_serializer,
    tensor_to_array,
)

Kernel = Callable[[], None]

FIELDS = Arg("fields", "strings", [])
BATCH_SIZE = Arg("batch_size", "int", 1)
ENFORCE_BATCH_SIZE = Arg("enforce_batch_size", "bool", False)


def _one_less(n_in: int, n_out: int) -> bool:
    """one output per field (inputs - 1)"""
    return n_out == n_in - 1


def _three_less(n_in: int, n_out: int) -> bool:
    """one output per field (inputs - 3)"""
    return n_out == n_in - 3


def _same_count(n_in: int, n_out: int) -> bool:
    """one output per input"""
    return n_out == n_in


def _iterator(op: Any) -> TreeIterator:
    """The iterator of the op's `fields` argument, built at op creation."""
    return TreeIterator(op.arg("fields"))


def _check_field_count(op: Any, expected: int, got: int, first: int = 0) -> None:
    if expected != got:
        raise op.error(
            f"{op.type}: Invalid number of fields. Expected {expected}, got {got} "
            f"(inputs {op.input_names[first:]})"
        )


def _check_cursor_inputs(op: Any, cursor: TreeCursor, first: int) -> None:
    got = len(op.inputs) - first
    if got != len(cursor.it.fields):
        raise op.error(
            f"{op.type}: the cursor {op.input_names[0]} has {len(cursor.it.fields)} fields "
            f"{cursor.it.fields}, but the op has {got} field inputs {op.input_names[first:]}",
            op.input_names[0],
        )


def _batch_size(op: Any) -> int:
    b = op.arg("batch_size")
    if b < 0:
        raise op.error(f"{op.type}: batch_size must not be negative, got {b}")
    return b


# ---- cursor ---------------------------------------------------------------------------------
@operator("CreateTreeCursor", inputs=0, outputs=1, args=(FIELDS,))
def create_tree_cursor(op: Any) -> Kernel:
    """CreateTreeCursor: [] -> cursor. A cursor over `fields`, at the start (empty offsets)."""
    fields = op.arg("fields")
    Y = op.outputs[0]

    def run() -> None:
        Y.value = TreeCursor(TreeIterator(fields))

    return run


@operator("ResetCursor", inputs=1, outputs=0)
def reset_cursor(op: Any) -> Kernel:
    """ResetCursor: [cursor] -> []. Rewinds the cursor to the start, under its lock."""

    def run() -> None:
        c = cursor_of(op)
        with c.lock:
            c.offsets = []

    return run


@operator(
    "ReadNextBatch",
    inputs=(1, None),
    outputs=_one_less,
    args=(BATCH_SIZE, ENFORCE_BATCH_SIZE),
)
def read_next_batch(op: Any) -> Kernel:
    """ReadNextBatch: [cursor, field_0..] -> [batch_0..]. The next batch_size records.

    The advance is atomic, so concurrent readers get each record once. At the end of the
    data (or with enforce_batch_size, before a short batch) the outputs are empty tensors.
    """
    batch = _batch_size(op)
    enforce = op.arg("enforce_batch_size")
    outputs = op.outputs

    def run() -> None:
        cursor = cursor_of(op)
        _check_cursor_inputs(op, cursor, 1)
        it = cursor.it
        cols = Columns(op, it, 1)
        with cursor.lock:
            old = cursor.offsets or [0] * it.num_domains
            sizes, cursor.offsets = cols.advance(op, old, batch)
        if enforce and sizes[0] < batch:
            sizes = [0] * it.num_domains
        for a, d, Y in zip(cols.arrays, it.field_domain, outputs, strict=True):
            o = old[d]
            Y.value = a[o : o + sizes[d]].copy()

    return run


@operator("ComputeOffset", inputs=(1, None), outputs=1)
def compute_offset(op: Any) -> Kernel:
    """ComputeOffset: [cursor, fields..] -> int64 (N+1, D) offsets of every record; resets."""
    Y = op.outputs[0]

    def run() -> None:
        cursor = cursor_of(op)
        _check_cursor_inputs(op, cursor, 1)
        it = cursor.it
        cols = Columns(op, it, 1)
        with cursor.lock:
            start = cursor.offsets or [0] * it.num_domains
            Y.value = cols.all_offsets(op, start)
            cursor.offsets = [0] * it.num_domains

    return run


@operator(
    "SortAndShuffle",
    inputs=(1, None),
    outputs=1,
    args=(Arg("sort_by_field_idx", "int", 1), BATCH_SIZE, Arg("shuffle_size", "int", 1)),
)
def sort_and_shuffle(op: Any) -> Kernel:
    """SortAndShuffle: [cursor, fields..] -> int64 record order.

    Optionally sorts by a root int32 field, shuffles chunks of batch_size * shuffle_size,
    then permutes whole batches. Deterministic (a fresh minstd_rand0 per shuffle).
    """
    sort_idx = op.arg("sort_by_field_idx")
    batch, shuffle_arg = op.arg("batch_size"), op.arg("shuffle_size")
    if batch <= 0 or shuffle_arg <= 0:
        raise op.error(
            f"SortAndShuffle: batch_size ({batch}) and shuffle_size ({shuffle_arg}) must be "
            "positive"
        )
    Y = op.outputs[0]

    def run() -> None:
        cursor = cursor_of(op)
        _check_cursor_inputs(op, cursor, 1)
        it = cursor.it
        n_fields = len(it.fields)
        if not -1 <= sort_idx < n_fields:
            raise op.error(
                f"SortAndShuffle: sort_by_field_idx {sort_idx} is out of range: the cursor has "
                f"{n_fields} fields (-1 means no sort)"
            )
        if n_fields == 0:
            raise op.error("SortAndShuffle: the cursor has no fields")
        key_field = max(sort_idx, 0)
        key = field_tensor(op, it, 1, key_field)
        size = key.shape[0]
        # Caffe2 also stored the reduced shuffle_size in the op (so a later run on a tiny
        # dataset failed its shuffle_size > 0 check); it is recomputed on every run here.
        shuffle_size = shuffle_arg if batch * shuffle_arg <= size else size // batch
        idx = np.arange(size, dtype=np.int64)
        if sort_idx != -1:
            name = op.input_names[1 + sort_idx]
            if it.field_domain[sort_idx] != 0:
                raise op.error(
                    f"SortAndShuffle: sort field '{it.fields[sort_idx]}' (blob {name}) must be "
                    "at the root level",
                    name,
                )
            if key.dtype != I32:
                raise op.error(
                    f"SortAndShuffle: sort field '{it.fields[sort_idx]}' (blob {name}) must be "
                    f"int32, got {dtype_name(key.dtype)}",
                    name,
                )
            idx = np.argsort(key.reshape(-1)[:size], kind="stable").astype(np.int64)
        chunk = batch * shuffle_size
        if chunk > 1:
            offset = 0
            while offset + chunk < size:
                shuffle(idx[offset : offset + chunk])
                offset += chunk
        num_batch = size // batch
        order = np.arange(num_batch, dtype=np.int64)
        shuffle(order)
        out = np.empty(size, dtype=np.int64)
        for i, b in enumerate(order):
            out[i * batch : (i + 1) * batch] = idx[b * batch : (b + 1) * batch]
        out[num_batch * batch :] = idx[num_batch * batch :]
        Y.value = out

    return run


@operator(
    "ReadRandomBatch",
    inputs=(3, None),
    outputs=_three_less,
    args=(BATCH_SIZE, ENFORCE_BATCH_SIZE, Arg("loop_over", "bool", False)),
)
def read_random_batch(op: Any) -> Kernel:
    """ReadRandomBatch: [cursor, idx, offsets, fields..] -> [batch..].

    Gathers the records idx[pos:pos+batch_size], using the ComputeOffset matrix to find
    each record's rows; the cursor's single offset is the position in idx.
    """
    batch = _batch_size(op)
    enforce, loop_over = op.arg("enforce_batch_size"), op.arg("loop_over")
    outputs = op.outputs

    def run() -> None:
        cursor = cursor_of(op)
        _check_cursor_inputs(op, cursor, 3)
        it = cursor.it
        idx = _int64_input(op, 1, "idx")
        mat = _int64_input(op, 2, "offsets")
        if mat.ndim != 2 or mat.shape[1] != it.num_domains or mat.shape[0] < 1:
            raise op.error(
                f"ReadRandomBatch: offsets {op.input_names[2]} must be an (N+1, "
                f"{it.num_domains}) matrix from ComputeOffset, got {describe(mat)}",
                op.input_names[2],
            )
        idx = idx.reshape(-1)
        arrays = [field_tensor(op, it, 3, i) for i in range(len(it.fields))]
        with cursor.lock:
            offset = cursor.offsets[0] if cursor.offsets else 0
            pos = offset
            if enforce and pos + batch > idx.size:
                pos = idx.size  # an empty batch; the offset itself still moves on
            if loop_over and pos >= idx.size:
                offset = pos = 0
            cursor.offsets = [offset + batch]
        rows = idx[pos : pos + batch]
        n = mat.shape[0] - 1
        if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= n):
            bad = int(rows.min()) if int(rows.min()) < 0 else int(rows.max())
            raise op.error(
                "Out of bound when trying to get elem from offsetsmat: record "
                f"{bad} of idx {op.input_names[1]}, but offsets {op.input_names[2]} describes "
                f"{n} records",
                op.input_names[1],
            )
        for i, (a, Y) in enumerate(zip(arrays, outputs, strict=True)):
            d = it.field_domain[i]
            starts, ends = mat[rows, d], mat[rows + 1, d]
            if rows.size and (np.any(ends < starts) or int(starts.min()) < 0
                              or int(ends.max()) > a.shape[0]):  # fmt: skip
                raise op.error(
                    f"ReadRandomBatch: offsets {op.input_names[2]} do not fit field "
                    f"'{it.fields[i]}' (blob {op.input_names[3 + i]}, {a.shape[0]} rows)",
                    op.input_names[3 + i],
                )
            total = int((ends - starts).sum()) if rows.size else 0
            if total == 0:
                # Caffe2 only resized an empty output: it keeps the dtype it already had.
                # A new output (NumPy has no untyped tensor) takes the field's dtype.
                prev = Y.value
                dt = prev.dtype if isinstance(prev, np.ndarray) else a.dtype
                Y.value = np.empty((0,) + a.shape[1:], dtype=dt)
                continue
            take = np.concatenate(
                [np.arange(s, e, dtype=np.int64) for s, e in zip(starts, ends, strict=True)]
            )
            Y.value = a[take]

    return run


def _int64_input(op: Any, i: int, what: str) -> np.ndarray:
    a = tensor(op, i)
    if a.dtype != I64:
        raise op.error(
            f"{op.type}: {what} {op.input_names[i]} must be an int64 tensor, got {describe(a)}",
            op.input_names[i],
        )
    return a


# ---- consistency and trimming --------------------------------------------------------------
@operator("CheckDatasetConsistency", inputs=(1, None), outputs=0, args=(FIELDS,))
def check_dataset_consistency(op: Any) -> Kernel:
    """CheckDatasetConsistency: [fields..] -> []. Fails unless the columns form a dataset.

    Fields of a domain must have equal dim 0, and each lengths field must add up to the
    number of rows of its child domain.
    """
    it = _iterator(op)
    _check_field_count(op, len(it.fields), len(op.inputs))

    def run() -> None:
        sizes: list[int | None] = [None] * it.num_domains
        for i, d in enumerate(it.field_domain):
            n = field_tensor(op, it, 0, i).shape[0]
            prev = sizes[d]
            if prev is None:
                sizes[d] = n
            elif prev != n:
                raise op.error(
                    "Inconsistent sizes for fields belonging to same domain. Field: "
                    f"{i} ({it.fields[i]}, blob {op.input_names[i]}); Length field index: "
                    f"{d} ({it.domain_name(d)}); Previous size: {prev}; New size: {n}",
                    op.input_names[i],
                )
        cols = Columns(op, it, 0, check_lengths_type=True)
        limits = cols.limits
        _, offsets = cols.advance(op, [0] * it.num_domains, limits[0])
        for d in range(1, it.num_domains):
            if offsets[d] != limits[d]:
                fid = it.length_field_ids[d - 1]
                has = "no fields" if limits[d] == OFFSET_MAX else f"{limits[d]} rows"
                raise op.error(
                    f"CheckDatasetConsistency: lengths field '{it.fields[fid]}' (blob "
                    f"{op.input_names[fid]}) adds up to {offsets[d]} rows, but "
                    f"{it.domain_name(d)} has {has}",
                    op.input_names[fid],
                )

    return run


def _in_place(op: Any) -> None:
    for i, (a, b) in enumerate(zip(op.input_names, op.output_names, strict=False)):
        if a != b:
            raise op.error(f"{op.type}: output {i} ({b}) must be in place with input {i} ({a})")


@operator(
    "TrimDataset",
    inputs=(1, None),
    outputs=_same_count,
    allow_inplace=True,
    args=(FIELDS, Arg("multiple_of", "int", 1)),
)
def trim_dataset(op: Any) -> Kernel:
    """TrimDataset: [fields..] -> [fields..] in place. Keeps floor(N/m)*m records."""
    it = _iterator(op)
    _check_field_count(op, len(it.fields), len(op.inputs))
    _in_place(op)
    m = op.arg("multiple_of")
    if m < 1:
        raise op.error(f"TrimDataset: multiple_of must be at least 1, got {m}")

    def run() -> None:
        cols = Columns(op, it, 0)
        n = cols.limits[0]
        keep = n // m * m
        if keep == n:
            return
        ends = cols.all_offsets(op, [0] * it.num_domains)[keep]
        for a, d, Y in zip(cols.arrays, it.field_domain, op.outputs, strict=True):
            Y.value = a[: int(ends[d])].copy()

    return run


# ---- appending -----------------------------------------------------------------------------
def _check_appendable(op: Any, ia: int, ib: int, a: np.ndarray, b: np.ndarray) -> None:
    na, nb = op.input_names[ia], op.input_names[ib]
    why = None
    if a.ndim != b.ndim:
        why = "the numbers of dimensions differ"
    elif a.dtype != b.dtype:
        why = "the types differ"
    elif a.shape[1:] != b.shape[1:]:
        why = "the inner dimensions differ"
    if why:
        raise op.error(
            f"{op.type}: cannot append {nb} ({describe(b)}) to {na} ({describe(a)}): {why}", nb
        )


def _appended(op: Any, i: int) -> np.ndarray:
    b = tensor(op, i)
    if b.ndim < 1:
        raise op.error(
            f"{op.type}: the appended tensor {op.input_names[i]} must have at least one "
            f"dimension, got {describe(b)}",
            op.input_names[i],
        )
    return b


def _is_empty_column(a: np.ndarray) -> bool:
    return a.size == 0 and a.ndim >= 1 and a.shape[0] == 0


@operator("Append", inputs=2, outputs=1, enforce_inplace={(0, 0)})
def append(op: Any) -> Kernel:
    """Append: [A, B] -> A in place. Appends B's rows; an empty A becomes a copy of B."""
    C = op.outputs[0]

    def run() -> None:
        a, b = tensor(op, 0), _appended(op, 1)
        if _is_empty_column(a):
            C.value = b.copy()
            return
        _check_appendable(op, 0, 1, a, b)
        append_rows(C, a, b)

    return run


def _atomic_append_inputs(n: int) -> bool:
    """a mutex, then k appended-to and k appended tensors"""
    return n >= 3 and n % 2 == 1


def _atomic_append_outputs(n_in: int, n_out: int) -> bool:
    """one output per appended-to tensor"""
    return n_out == (n_in - 1) // 2


@operator(
    "AtomicAppend",
    inputs=_atomic_append_inputs,
    outputs=_atomic_append_outputs,
    allow_inplace=lambda i, o: i == o + 1,
)
def atomic_append(op: Any) -> Kernel:
    """AtomicAppend: [mutex, A_1..A_k, B_1..B_k] -> A_1..A_k. Appends every column under
    the mutex; all pairs are checked before any is changed."""
    k = len(op.outputs)
    for i in range(k):
        if op.input_names[1 + i] != op.output_names[i]:
            raise op.error(
                f"AtomicAppend: Appended-to arguments must be in-place: output {i} "
                f"({op.output_names[i]}) is not input {1 + i} ({op.input_names[1 + i]})"
            )

    def run() -> None:
        with mutex_of(op):
            pairs = []
            for i in range(k):
                a, b = tensor(op, 1 + i), _appended(op, 1 + k + i)
                if not _is_empty_column(a):
                    _check_appendable(op, 1 + i, 1 + k + i, a, b)
                pairs.append((a, b))
            for (a, b), C in zip(pairs, op.outputs, strict=True):
                if _is_empty_column(a):
                    C.value = b.copy()
                else:
                    append_rows(C, a, b)

    return run


@operator("CreateMutex", inputs=0, outputs=1)
def create_mutex(op: Any) -> Kernel:
    """CreateMutex: [] -> mutex. A new mutex on every run (used by AtomicAppend)."""
    Y = op.outputs[0]

    def run() -> None:
        Y.value = Mutex()

    return run


# ---- packing records -----------------------------------------------------------------------
class PackedRecord(list):
    """One record of PackRecords: the record's slice of every field (Caffe2's
    std::shared_ptr<std::vector<TensorCPU>>)."""

    caffe2_type_name = "std::shared_ptr<std::vector<TensorCPU>>"


def serialize_packed_record(name: str, record: PackedRecord) -> caffe2_pb2.BlobProto:
    """A packed record as a BlobProto of Caffe2's type name; ``content`` is a serialized
    TensorProtos of the record's tensors, one per field.

    Saving PackRecords' output stores one such BlobProto per element of an UNDEFINED tensor
    (see runtime.serialization). Caffe2's serializer left ``content`` empty; its deserializer
    ignores it, so Caffe2 can still load what is written here (as empty records).
    """
    protos = caffe2_pb2.TensorProtos()
    for j, t in enumerate(record):
        if not isinstance(t, np.ndarray):
            raise EnforceError(
                f"Cannot serialize packed record {name or '<element>'}: field {j} is "
                f"{describe(t)}, not a tensor",
                "blob_serialization",
                name or None,
            )
        protos.protos.append(array_to_tensor(t))
    proto = caffe2_pb2.BlobProto()
    proto.name = name
    proto.type = PackedRecord.caffe2_type_name
    proto.content = protos.SerializeToString()
    return proto


def deserialize_packed_record(proto: caffe2_pb2.BlobProto, into: Blob) -> None:
    """Load a packed record. Empty content (what Caffe2 wrote) loads as None, Caffe2's empty
    pointer, which UnPackRecords rejects."""
    if not proto.content:
        into.value = None
        return
    protos = caffe2_pb2.TensorProtos()
    try:
        protos.ParseFromString(bytes(proto.content))
    except Exception as e:
        raise EnforceError(
            "Cannot parse the content of a packed record into a TensorProtos",
            "blob_serialization",
            proto.name or None,
        ) from e
    into.value = PackedRecord(tensor_to_array(p) for p in protos.protos)


register_serializer(PackedRecord, PackedRecord.caffe2_type_name, serialize_packed_record)
register_deserializer(PackedRecord.caffe2_type_name, deserialize_packed_record)


@operator("PackRecords", inputs=(1, None), outputs=1, args=(FIELDS,))
def pack_records(op: Any) -> Kernel:
    """PackRecords: [fields..] -> packed. A 1-D object tensor: one PackedRecord per record."""
    it = _iterator(op)
    _check_field_count(op, len(it.fields), len(op.inputs))
    Y = op.outputs[0]

    def run() -> None:
        cols = Columns(op, it, 0)
        n = cols.limits[0]
        offs = cols.all_offsets(op, [0] * it.num_domains)
        out = np.empty(n, dtype=object)
        for r in range(n):
            out[r] = PackedRecord(
                a[offs[r, d] : offs[r + 1, d]].copy()
                for a, d in zip(cols.arrays, it.field_domain, strict=True)
            )
        Y.value = out

    return run


@operator("UnPackRecords", inputs=(1, None), outputs=(1, None), args=(FIELDS,))
def unpack_records(op: Any) -> Kernel:
    """UnPackRecords: [packed, (prototypes..)] -> [fields..]. Concatenates the records back
    into columns; prototypes give the shapes and types when there may be no record."""
    n_fields = len(op.arg("fields"))
    k = len(op.outputs)
    if len(op.inputs) > 1:
        _check_field_count(op, n_fields, len(op.inputs) - 1, 1)
    if n_fields != k:
        raise op.error(f"UnPackRecords: {k} outputs for {n_fields} fields")
    packed_name = op.input_names[0]

    def run() -> None:
        packed = tensor(op, 0).reshape(-1)
        records = []
        for r, rec in enumerate(packed):
            if not isinstance(rec, PackedRecord):
                raise op.error(
                    f"UnPackRecords: element {r} of {packed_name} is not a packed record "
                    f"(it is {describe(rec)}; packed records saved by Caffe2 load as empty)",
                    packed_name,
                )
            if len(rec) != k:
                raise op.error(
                    f"UnPackRecords: record {r} of {packed_name} has {len(rec)} fields, "
                    f"expected {k}",
                    packed_name,
                )
            records.append(rec)
        if len(op.inputs) > 1:
            protos = [_appended(op, 1 + j) for j in range(k)]
        elif records:
            protos = list(records[0])
        else:
            raise op.error(
                "Unpacking empty record without shape will leave output blobs in undefined state.",
                packed_name,
            )
        for r, rec in enumerate(records):
            for j, t in enumerate(rec):
                p = protos[j]
                if (t.ndim != p.ndim or t.ndim < 1 or t.dtype != p.dtype
                        or t.shape[1:] != p.shape[1:]):  # fmt: skip
                    raise op.error(
                        f"UnPackRecords: field {j} of record {r} ({describe(t)}) does not match "
                        f"the expected {dtype_name(p.dtype)} [N, {list(p.shape[1:])}]",
                        packed_name,
                    )
        for j, Y in enumerate(op.outputs):
            parts = [rec[j] for rec in records]
            p = protos[j]
            if parts:
                Y.value = np.concatenate(parts, axis=0)
            else:
                Y.value = np.empty((0,) + p.shape[1:], dtype=p.dtype)

    return run
