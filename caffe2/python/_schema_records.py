"""Record helpers of ``caffe2.python.schema`` (spec data.md 2.5); import them from ``schema``.

A *record* is a schema whose leaves hold BlobReferences (or data). These helpers create the
blobs of a record in a net, feed and fetch them, and rebuild schemas from flat column lists.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from caffe2.python import workspace
from caffe2.python.core import BlobReference, DataType
from caffe2.python.schema import (
    FIELD_SEPARATOR,
    Field,
    List,
    Map,
    Metadata,
    Scalar,
    Struct,
    Tuple,
    _normalize_field,
    _schema_assert,
)

logger = logging.getLogger("caffe2.python.schema")

_STRING_KINDS = frozenset("USO")

# Base dtype -> core.DataType (strings are matched by kind: 'U', 'S' and object arrays).
_DATA_TYPE_FOR_DTYPE: list[tuple[np.dtype, int]] = [
    (np.dtype(np.float16), DataType.FLOAT16),
    (np.dtype(np.float32), DataType.FLOAT),
    (np.dtype(np.float64), DataType.DOUBLE),
    (np.dtype(np.bool_), DataType.BOOL),
    (np.dtype(np.int8), DataType.INT8),
    (np.dtype(np.int16), DataType.INT16),
    (np.dtype(np.int32), DataType.INT32),
    (np.dtype(np.int64), DataType.INT64),
    (np.dtype(np.uint8), DataType.UINT8),
    (np.dtype(np.uint16), DataType.UINT16),
]


def data_type_for_dtype(dtype: Any) -> int:
    """The core.DataType of a (possibly shaped) dtype; TypeError if it has none."""
    base = np.dtype(dtype).base
    if base.kind in _STRING_KINDS:
        return DataType.STRING
    for np_type, dt in _DATA_TYPE_FOR_DTYPE:
        if base == np_type:
            return dt
    raise TypeError(f"Unknown dtype: {base}")


def dtype_for_core_type(core_type: int) -> np.dtype:
    """The numpy dtype of a core.DataType (STRING is str); TypeError if it has none."""
    if core_type == DataType.STRING:
        return np.dtype(str)
    for np_type, dt in _DATA_TYPE_FOR_DTYPE:
        if dt == core_type:
            return np_type
    raise TypeError(f"Unknown core type: {core_type}")


# ---- building schemas ----------------------------------------------------------------------
class _SchemaNode:
    """A node of the name tree from_column_list builds."""

    def __init__(self, name: str, type_str: str = "") -> None:
        self.name = name
        self.children: list[_SchemaNode] = []
        self.type_str = type_str
        self.field: Field | None = None
        self.col_blob: Any = None

    def add_child(self, name: str, type_str: Any = "") -> _SchemaNode:
        for child in self.children:
            if child.name == name and child.type_str == type_str:
                return child
        child = _SchemaNode(name, type_str)
        self.children.append(child)
        return child

    def get_field(self) -> Field:
        if not self.children or self.field is not None:
            _schema_assert(self.field is not None, f"column {self.name!r} has no field")
            return self.field  # type: ignore[return-value]
        by_name = {c.name: c for c in self.children}
        names = set(by_name)
        if len(by_name) == len(self.children) and names == {"lengths", "values"}:
            self.field = List(
                by_name["values"].get_field(), lengths_blob=by_name["lengths"].get_field()
            )
            self.type_str = "List"
        elif len(by_name) == len(self.children) and names == {"lengths", "keys", "values"}:
            self.field = Map(
                by_name["keys"].get_field(),
                by_name["values"].get_field(),
                lengths_blob=by_name["lengths"].get_field(),
            )
            self.type_str = "Map"
        else:
            self.field = Struct(*[(c.name, c.get_field()) for c in self.children])
            self.type_str = "Struct"
        return self.field


def from_column_list(
    col_names: Sequence[str],
    col_types: Sequence[Any] | None = None,
    col_blobs: Sequence[Any] | None = None,
    col_metadata: Sequence[Any] | None = None,
) -> Field:
    """Rebuild a schema from flat column names (any order): {lengths, values} children make
    a List, {lengths, keys, values} a Map, anything else a Struct."""
    n = len(col_names)
    col_types = [None] * n if col_types is None else list(col_types)
    col_metadata = [None] * n if col_metadata is None else list(col_metadata)
    col_blobs = [None] * n if col_blobs is None else list(col_blobs)
    for what, seq in (("col_types", col_types), ("col_blobs", col_blobs),
                      ("col_metadata", col_metadata)):  # fmt: skip
        _schema_assert(len(seq) == n, f"col_names and {what} must have the same length.")
    if n == 0:
        return Struct()
    root = _SchemaNode("root", "Struct")
    for col_name, col_type, col_blob, col_meta in zip(
        col_names, col_types, col_blobs, col_metadata, strict=True
    ):
        columns = str(col_name).split(FIELD_SEPARATOR)
        current = root
        for i, name in enumerate(columns):
            if i == len(columns) - 1:
                node = current.add_child(name, col_type)
                _schema_assert(node.field is None, f"Duplicate column name: {col_name}")
                node.field = Scalar(dtype=col_type, blob=col_blob, metadata=col_meta)
                node.col_blob = col_blob
            else:
                node = current.add_child(name, "")
            current = node
    return root.get_field()


def from_dtype(dtype: Any, _outer_shape: tuple[int, ...] = ()) -> Field:
    """A schema from a numpy dtype: structured dtypes become Structs, others Scalars."""
    if not isinstance(dtype, np.dtype):
        shape = tuple(_outer_shape)
        dtype = np.dtype((dtype, shape)) if shape else np.dtype(dtype)
    else:
        shape = tuple(_outer_shape) + dtype.shape
        if shape != dtype.shape:
            dtype = np.dtype((dtype.base, shape))
    if not dtype.base.fields:
        return Scalar(dtype)
    struct_fields = []
    for name in dtype.base.names:
        fdtype = dtype.base.fields[name][0]
        struct_fields.append((name, from_dtype(fdtype, shape)))
    return Struct(*struct_fields)


def as_record(value: Any) -> Field:
    """A Field from a Field, a dict or list of (name, value) pairs (Struct), a list or tuple
    of values (Tuple), or a type / data (Scalar)."""
    if isinstance(value, Field):
        return value
    if isinstance(value, list | tuple):
        # Caffe2 tested `f is tuple`, so pairs always became Tuples (and a str name then
        # failed in Scalar.set); a list of (name, value) pairs is a Struct here.
        is_field_list = all(
            isinstance(f, tuple) and len(f) == 2 and isinstance(f[0], str) for f in value
        )
        if value and is_field_list:
            return Struct(*[(k, as_record(v)) for k, v in value])
        return Tuple(*[as_record(f) for f in value])
    if isinstance(value, dict):
        return Struct(*[(k, as_record(v)) for k, v in value.items()])
    return _normalize_field(value)


def equal_schemas(
    schema: Field,
    original_schema: Field,
    check_field_names: bool = True,
    check_field_types: bool = True,
    check_field_metas: bool = False,
) -> bool:
    _schema_assert(isinstance(schema, Field), "schema must be a Field")
    _schema_assert(isinstance(original_schema, Field), "original_schema must be a Field")
    if check_field_names and schema.field_names() != original_schema.field_names():
        return False
    if check_field_types and schema.field_types() != original_schema.field_types():
        return False
    if check_field_metas and schema.field_metadata() != original_schema.field_metadata():
        return False
    return True


def schema_check(schema: Any, previous: Field | None = None) -> Field:
    record = as_record(schema)
    if previous is not None:
        _schema_assert(equal_schemas(schema, previous), "schema differs from the previous one")
    return record


def is_schema_subset(schema: Field, original_schema: Field) -> bool:
    return set(schema.field_names()).issubset(set(original_schema.field_names()))


def attach_metadata_to_scalars(field: Field, metadata: Metadata) -> None:
    for f in field.all_scalars():
        f.set_metadata(metadata)


# ---- records -------------------------------------------------------------------------------
def _field_label(name: str) -> str:
    return repr(name) if name else "(the scalar)"


def from_blob_list(schema: Field, values: Any, throw_on_type_mismatch: bool = False) -> Field:
    """A blob-less clone of schema whose i-th leaf holds values[i] (data is converted to the
    leaf's dtype; a single BlobReference counts as a one-element list)."""
    _schema_assert(isinstance(schema, Field), "Argument `schema` must be a Field.")
    if isinstance(values, BlobReference):
        values = [values]
    record = schema.clone_schema()
    scalars = record.all_scalars()
    values = list(values)
    _schema_assert(
        len(scalars) == len(values),
        f"Values must have {len(scalars)} elements, got {len(values)}. "
        f"The fields are {record.field_names()}.",
    )
    for name, scalar, value in zip(record.field_names(), scalars, values, strict=True):
        try:
            scalar.set_value(value, throw_on_type_mismatch, unsafe=True)
        except (ValueError, TypeError, OverflowError) as e:
            raise ValueError(
                f"record field {_field_label(name)}: cannot use {_describe(value)} as a value "
                f"of type {scalar.dtype}: {e}"
            ) from e
    return record


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype} {list(value.shape)}"
    if isinstance(value, BlobReference):
        return f"blob {value}"
    return f"a {type(value).__name__}"


def NewRecord(net: Any, schema: Field) -> Field:
    """schema with one fresh blob per leaf, named net.NextScopedBlob(<field name>)."""
    if isinstance(schema, Scalar):
        result = schema.clone()
        result.set_value(blob=net.NextScopedBlob("unnamed_scalar"), unsafe=True)
        return result
    _schema_assert(isinstance(schema, Field), "Record must be a schema.Field instance.")
    blob_refs = [net.NextScopedBlob(prefix=name) for name in schema.field_names()]
    return from_blob_list(schema, blob_refs)


def ConstRecord(net: Any, array_record: Field) -> Field:
    """A new record whose blobs net.Const fills with array_record's data."""
    blob_record = NewRecord(net, array_record)
    for blob, array in zip(blob_record.field_blobs(), array_record.field_blobs(), strict=True):
        net.Const(array, blob)
    return blob_record


def InitEmptyRecord(net: Any, schema_or_record: Field, enforce_types: bool = False) -> Field:
    """Emit a ConstantFill of an empty column ([0] + inner shape) for every leaf.

    A new record is made when the input has no blobs. A leaf whose dtype has no DataType
    gets an empty float column (with a warning), or TypeError with enforce_types.
    """
    if not schema_or_record.has_blobs():
        record = NewRecord(net, schema_or_record)
    else:
        record = schema_or_record
    for name, blob_type, blob in zip(
        record.field_names(), record.field_types(), record.field_blobs(), strict=True
    ):
        try:
            data_type = data_type_for_dtype(blob_type)
        except TypeError:
            logger.warning(
                "Blob %s (field %s) has type error: %s has no DataType", blob, name, blob_type
            )
            if enforce_types:
                raise
            net.ConstantFill([], blob, shape=[0])
            continue
        net.ConstantFill([], blob, shape=[0] + list(blob_type.shape), dtype=data_type)
    return record


def _check_feed_value(name: str, dtype: np.dtype, value: Any) -> Any:
    """The value to feed into a leaf of type dtype, or a ValueError naming the field."""
    if isinstance(value, str | bytes):
        return value
    base = dtype.base
    if not isinstance(value, np.ndarray):
        if base == np.void:
            return value
        try:
            value = Scalar(dtype=dtype, blob=value).get()
        except (ValueError, TypeError, OverflowError) as e:
            raise ValueError(
                f"FeedRecord: field {_field_label(name)}: cannot convert {_describe(value)} to "
                f"{base}: {e}"
            ) from e
        return value if base.kind != "U" else value.astype(object)
    if base == np.void:
        return value
    kind_ok = (
        value.dtype.kind in _STRING_KINDS
        if base.kind in _STRING_KINDS
        else value.dtype.kind not in _STRING_KINDS
        and np.can_cast(value.dtype, base, casting="same_kind")
    )
    if not kind_ok:
        raise ValueError(
            f"FeedRecord: field {_field_label(name)} has type {base}, but the value is "
            f"{_describe(value)}"
        )
    if dtype.shape and value.shape[1:] != dtype.shape:
        raise ValueError(
            f"FeedRecord: field {_field_label(name)} has inner shape {list(dtype.shape)}, "
            f"but the value is {_describe(value)}"
        )
    return value


def FeedRecord(record: Field, arrays: Any, ws: Any = None) -> None:
    """Feed each array into the matching blob of record (the current workspace, or ws).

    ``arrays`` is a list (one value per field) or a record of data with the same fields.
    """
    _schema_assert(isinstance(record, Field), "Record must be a schema.Field instance.")
    blobs = record.field_blobs()
    names = record.field_names()
    if isinstance(arrays, Field):
        if arrays.field_names() != names:
            missing = [n for n in names if n not in arrays.field_names()]
            extra = [n for n in arrays.field_names() if n not in names]
            raise ValueError(
                f"FeedRecord: the values have fields {arrays.field_names()}, the record "
                f"{names} (missing {missing}, unexpected {extra})"
            )
        arrays = arrays.field_blobs()
    arrays = list(arrays)
    if len(arrays) != len(blobs):
        raise ValueError(
            f"FeedRecord: Values must match {len(blobs)} blobs (fields {names}), got "
            f"{len(arrays)} values"
        )
    values = [
        _check_feed_value(n, t, v)
        for n, t, v in zip(names, record.field_types(), arrays, strict=True)
    ]
    for blob, value in zip(blobs, values, strict=True):
        if ws is None:
            workspace.FeedBlob(str(blob), value)
        else:
            ws.create_blob(str(blob))
            ws.blobs[str(blob)].feed(value)


def FetchRecord(blob_record: Field, ws: Any = None, throw_on_type_mismatch: bool = False):
    """A record of the fetched values of blob_record's blobs (converted to the leaf types)."""
    _schema_assert(isinstance(blob_record, Field), "Record must be a schema.Field instance.")
    blobs = blob_record.field_blobs()
    for name, b in zip(blob_record.field_names(), blobs, strict=True):
        _schema_assert(
            isinstance(b, BlobReference),
            f"FetchRecord: field {_field_label(name)} holds {_describe(b)}, not a blob",
        )
    arrays = []
    for name, b in zip(blob_record.field_names(), blobs, strict=True):
        try:
            value = workspace.FetchBlob(str(b)) if ws is None else ws.blobs[str(b)].fetch()
        except (RuntimeError, KeyError) as e:
            raise RuntimeError(f"FetchRecord: field {_field_label(name)}: {e}") from e
        if not isinstance(value, np.ndarray):
            raise RuntimeError(
                f"FetchRecord: field {_field_label(name)}: blob {b} does not hold a tensor "
                f"({value!r})"
            )
        arrays.append(value)
    return from_blob_list(blob_record, arrays, throw_on_type_mismatch)
