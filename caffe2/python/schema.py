"""``caffe2.python.schema``: records, a tree of fields that maps onto a flat list of blobs.

A schema is a tree whose leaves are ``Scalar`` fields, each one tensor (a blob, or data).
``Struct`` names its children; ``List`` is a ``lengths`` Scalar (int32) plus items in a
child domain; ``Map``, ``Tuple``, ``NamedTuple`` and ``RawTuple`` build those. The flat
column order is a depth-first walk, named with ``FIELD_SEPARATOR`` (spec data.md 2):

    Struct(('a', Scalar(np.int32)), ('b', List(Scalar(np.float32))))
    -> field_names() == ['a', 'b:lengths', 'b:values']

The record helpers (NewRecord, FeedRecord, FetchRecord, ConstRecord, InitEmptyRecord,
from_blob_list, from_column_list, ...) live in ``_schema_records`` and are re-exported here.
"""

from __future__ import annotations

import io
import logging
from collections import OrderedDict, namedtuple
from collections.abc import Iterator
from typing import Any

import numpy as np

from caffe2.python.core import BlobReference

logger = logging.getLogger(__name__)

FIELD_SEPARATOR = ":"


def _join_field_name(prefix: str, suffix: str) -> str:
    if prefix and suffix:
        return prefix + FIELD_SEPARATOR + suffix
    return prefix or suffix or ""


def _normalize_field(field_or_type_or_blob: Any, keep_blobs: bool = True) -> Field:
    """A Field for a child value: Fields are cloned, types become Scalars, data a Scalar."""
    if isinstance(field_or_type_or_blob, Field):
        return field_or_type_or_blob.clone(keep_blobs=keep_blobs)
    if type(field_or_type_or_blob) in (type, np.dtype):
        return Scalar(dtype=field_or_type_or_blob)
    return Scalar(blob=field_or_type_or_blob)


def _schema_assert(cond: object, msg: str) -> None:
    """Caffe2 checked these with ``assert``; raised explicitly so they survive ``python -O``."""
    if not cond:
        raise AssertionError(msg)


FeatureSpec = namedtuple(
    "FeatureSpec",
    ["feature_type", "feature_names", "feature_ids", "feature_is_request_only",
     "desired_hash_size"],
)  # fmt: skip
FeatureSpec.__new__.__defaults__ = (None, None, None, None, None)


class Metadata(namedtuple("Metadata", ["categorical_limit", "expected_value", "feature_specs"])):
    """What is known about a Scalar's values (e.g. categorical_limit of an id field)."""

    __slots__ = ()


Metadata.__new__.__defaults__ = (None, None, None)


class Field:
    """The base of every schema node: field names, types, metadata and blobs, flattened."""

    def __init__(self, children: Any) -> None:
        self._parent: tuple[Field | None, int] = (None, 0)
        offset = 0
        self._field_offsets: list[int] = []
        for child in children:
            self._field_offsets.append(offset)
            offset += len(child.field_names())
        self._field_offsets.append(offset)

    def clone_schema(self) -> Field:
        """A copy of the tree without blobs."""
        return self.clone(keep_blobs=False)

    def field_names(self) -> list[str]:
        """The flat column names, depth first."""
        raise NotImplementedError

    def field_types(self) -> list[np.dtype]:
        """The np.dtype of each column (shaped dtypes for fixed inner shapes)."""
        raise NotImplementedError

    def field_metadata(self) -> list[Metadata | None]:
        raise NotImplementedError

    def field_blobs(self) -> list[Any]:
        """The blob (or data) of each column; every leaf must have one."""
        raise NotImplementedError

    def all_scalars(self) -> list[Scalar]:
        """The leaves, in column order."""
        raise NotImplementedError

    def has_blobs(self) -> bool:
        """True when every leaf has a blob."""
        raise NotImplementedError

    def clone(self, keep_blobs: bool = True) -> Field:
        raise NotImplementedError

    def _set_parent(self, parent: Field, relative_id: int) -> None:
        self._parent = (parent, relative_id)

    def slice(self) -> slice:
        """The range of flat column ids this field covers in its root schema."""
        base_id = self._child_base_id()
        return slice(base_id, base_id + len(self.field_names()))

    def _child_base_id(self, child_index: int | None = None) -> int:
        pos = 0 if child_index is None else self._field_offsets[child_index]
        parent, index = self._parent
        if parent is not None:
            pos += parent._child_base_id(index)
        return pos

    def __eq__(self, other: object) -> bool:
        """Equal names, types and metadata (blobs are not compared)."""
        if not isinstance(other, Field):
            return NotImplemented
        return (
            self.field_names() == other.field_names()
            and self.field_types() == other.field_types()
            and self.field_metadata() == other.field_metadata()
        )

    __hash__ = None  # type: ignore[assignment]  # Caffe2's Fields define __eq__ only

    def _pprint_impl(self, indent: int, str_buffer: io.StringIO) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        buf = io.StringIO()
        self._pprint_impl(0, buf)
        return buf.getvalue()


class List(Field):
    """A variable number of items per record: int32 ``lengths`` plus the items' columns."""

    def __init__(self, values: Any, lengths_blob: Any = None) -> None:
        if isinstance(lengths_blob, Field):
            _schema_assert(isinstance(lengths_blob, Scalar), "List lengths must be a Scalar")
            self.lengths = _normalize_field(lengths_blob)
        else:
            self.lengths = Scalar(np.int32, lengths_blob)
        self._items = _normalize_field(values)
        self.lengths._set_parent(self, 0)
        self._items._set_parent(self, 1)
        super().__init__([self.lengths, self._items])

    def field_names(self) -> list[str]:
        return ["lengths"] + [_join_field_name("values", v) for v in self._items.field_names()]

    def field_types(self) -> list[np.dtype]:
        return self.lengths.field_types() + self._items.field_types()

    def field_metadata(self) -> list[Metadata | None]:
        return self.lengths.field_metadata() + self._items.field_metadata()

    def field_blobs(self) -> list[Any]:
        return self.lengths.field_blobs() + self._items.field_blobs()

    def all_scalars(self) -> list[Scalar]:
        return self.lengths.all_scalars() + self._items.all_scalars()

    def has_blobs(self) -> bool:
        return self.lengths.has_blobs() and self._items.has_blobs()

    def clone(self, keep_blobs: bool = True) -> List:
        return type(self)(
            _normalize_field(self._items, keep_blobs=keep_blobs),
            _normalize_field(self.lengths, keep_blobs=keep_blobs),
        )

    def _pprint_impl(self, indent: int, str_buffer: io.StringIO) -> None:
        str_buffer.write("  " * indent + "List(\n")
        str_buffer.write("  " * (indent + 1) + "lengths=\n")
        self.lengths._pprint_impl(indent=indent + 2, str_buffer=str_buffer)
        str_buffer.write("  " * (indent + 1) + "_items=\n")
        self._items._pprint_impl(indent=indent + 2, str_buffer=str_buffer)
        str_buffer.write("  " * indent + ")\n")

    def __getattr__(self, item: str) -> Any:
        """Struct items are reachable directly (``map.keys``); else ``value``/``items``."""
        if item.startswith("__") or "_items" not in self.__dict__:
            raise AttributeError(item)
        items = self.__dict__["_items"]
        if isinstance(items, Struct):
            return getattr(items, item)
        if item in ("value", "items"):
            return items
        raise AttributeError(f"Field not found in list: {item}.")

    def __getitem__(self, item: str) -> Field:
        names = item.split(FIELD_SEPARATOR, 1) if isinstance(item, str) else [None]
        if len(names) == 1:
            if item == "lengths":
                return self.lengths
            if item == "values":
                return self._items
        elif names[0] == "values":
            return self._items[names[1]]
        raise KeyError(f"Field not found in list: {item}.")


class Struct(Field):
    """Named children, all in the same domain; frozen once built."""

    def __init__(self, *fields: tuple[str, Any]) -> None:
        normalized = []
        for entry in fields:
            _schema_assert(
                isinstance(entry, tuple | list) and len(entry) == 2,
                f"Struct fields must be (name, field) pairs, got {entry!r}",
            )
            name, value = entry
            _schema_assert(
                isinstance(name, str) and name != "",
                f"Struct field names must be non-empty strings, got {name!r}",
            )
            _schema_assert(name != "lengths", "Struct cannot have a field named 'lengths'")
            normalized.append((name, _normalize_field(value)))
        self.fields: OrderedDict[str, Field] = OrderedDict()
        for name, field in normalized:
            if FIELD_SEPARATOR in name:
                name, field = self._struct_from_nested_name(name, field)
            if name not in self.fields:
                self.fields[name] = field
                continue
            if not isinstance(field, Struct) or not isinstance(self.fields[name], Struct):
                raise ValueError(f"Duplicate field name: {name}")
            self.fields[name] = self.fields[name] + field
        for index, field in enumerate(self.fields.values()):
            field._set_parent(self, index)
        super().__init__(self.fields.values())
        self._frozen = True

    @staticmethod
    def _struct_from_nested_name(nested_name: str, field: Field) -> tuple[str, Field]:
        """'b:c:d' -> ('b', Struct(('c', Struct(('d', field)))))."""
        head, rest = nested_name.split(FIELD_SEPARATOR, 1)
        _schema_assert(head and rest, f"Invalid nested field name: {nested_name!r}")
        inner: Field = field
        for part in reversed(rest.split(FIELD_SEPARATOR)):
            _schema_assert(part, f"Invalid nested field name: {nested_name!r}")
            inner = Struct((part, inner))
        return head, inner

    def get_children(self) -> list[tuple[str, Field]]:
        return list(self.fields.items())

    def field_names(self) -> list[str]:
        names = []
        for name, field in self.fields.items():
            names += [_join_field_name(name, f) for f in field.field_names()]
        return names

    def field_types(self) -> list[np.dtype]:
        return [t for field in self.fields.values() for t in field.field_types()]

    def field_metadata(self) -> list[Metadata | None]:
        return [m for field in self.fields.values() for m in field.field_metadata()]

    def field_blobs(self) -> list[Any]:
        return [b for field in self.fields.values() for b in field.field_blobs()]

    def all_scalars(self) -> list[Scalar]:
        return [s for field in self.fields.values() for s in field.all_scalars()]

    def has_blobs(self) -> bool:
        return all(field.has_blobs() for field in self.fields.values())

    def clone(self, keep_blobs: bool = True) -> Struct:
        return type(self)(
            *[(k, _normalize_field(v, keep_blobs=keep_blobs)) for k, v in self.fields.items()]
        )

    def _get_field_by_nested_name(self, nested_name: str) -> Field | None:
        names = nested_name.split(FIELD_SEPARATOR, 1)
        field = self.fields.get(names[0])
        if field is None:
            return None
        if len(names) == 1:
            return field
        try:
            return field[names[1]]  # type: ignore[index]
        except (KeyError, TypeError):
            return None

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and self._get_field_by_nested_name(item) is not None

    def __len__(self) -> int:
        return len(self.fields)

    def __iter__(self) -> Iterator[Field]:
        return iter(list(self.fields.values()))

    def __getitem__(self, item: Any) -> Field:
        """``s['a:b']`` (nested name), ``s[i]`` (i-th child) or ``s[[...]]`` (a sub-Struct)."""
        if isinstance(item, list | tuple):
            keys = list(self.fields)
            return Struct(*[(keys[k] if isinstance(k, int) else k, self[k]) for k in item])
        if isinstance(item, int):
            return list(self.fields.values())[item]
        if not isinstance(item, str) or not item:
            raise KeyError(f'field "{item}" not found')
        field = self._get_field_by_nested_name(item)
        if field is None:
            raise KeyError(f'field "{item}" not found')
        return field

    def get(self, item: str, default_value: Any) -> Any:
        """The child named item (by getattr), or default_value."""
        return getattr(self, item, default_value)

    def __getattr__(self, item: str) -> Any:
        if item.startswith("__"):
            raise AttributeError(item)
        try:
            return self.__dict__["fields"][item]
        except KeyError as e:
            raise AttributeError(item) from e

    def __setattr__(self, key: str, value: Any) -> None:
        # Fields cannot be replaced once built; private state (_parent ...) still can.
        if getattr(self, "_frozen", None) and not key.startswith("_"):
            raise TypeError("Struct.__setattr__() is disabled after __init__()")
        super().__setattr__(key, value)

    def __add__(self, other: Any) -> Struct:
        """Merge two Structs recursively; new children go after the existing ones."""
        if not isinstance(other, Struct):
            return NotImplemented
        children = OrderedDict(self.get_children())
        for name, right in other.get_children():
            if name not in children:
                children[name] = right
                continue
            children[name] = children[name] + right
        return Struct(*children.items())

    def __sub__(self, other: Any) -> Struct:
        """Remove other's children recursively; sub-Structs left empty are dropped."""
        if not isinstance(other, Struct):
            return NotImplemented
        children = OrderedDict(self.get_children())
        for name, right in other.get_children():
            if name not in children:
                continue
            left = children[name]
            if type(left) is not type(right):
                raise TypeError(
                    f"Type of left_field, {type(left)}, is not the same as that of right_field, "
                    f"{type(right)}, yet they have the same field name, {name}"
                )
            if isinstance(left, Struct):
                child = left - right
                if child.get_children():
                    children[name] = child
                    continue
            children.pop(name)
        return Struct(*children.items())

    def _pprint_impl(self, indent: int, str_buffer: io.StringIO) -> None:
        str_buffer.write("  " * indent + "Struct( \n")
        for name, field in self.fields.items():
            str_buffer.write("  " * (indent + 1) + f"{name}=\n")
            field._pprint_impl(indent=indent + 2, str_buffer=str_buffer)
        str_buffer.write("  " * indent + ") \n")


def _decode_objects(arr: np.ndarray) -> np.ndarray:
    out = np.empty(arr.shape, dtype=object)
    for i, v in np.ndenumerate(arr):
        out[i] = v.decode("utf-8") if isinstance(v, bytes) else v
    return out


def _as_dtype(blob: Any, base: np.dtype) -> np.ndarray:
    """blob as an array of base; bytes decode as UTF-8 for str fields (fetched strings)."""
    if base.kind == "U":
        arr = blob if isinstance(blob, np.ndarray) else np.array(blob, dtype=object)
        if arr.dtype.kind == "S":
            arr = np.char.decode(arr, "utf-8")
        elif arr.dtype.kind == "O":
            arr = _decode_objects(arr)
        return np.array(arr, dtype=base)
    return np.array(blob, dtype=base)


class Scalar(Field):
    """A leaf: one tensor, given as a BlobReference or as data, with a dtype and metadata.

    A fixed inner shape is part of the dtype: ``Scalar((np.float32, 3))`` is an (N, 3) column.
    """

    def __init__(self, dtype: Any = None, blob: Any = None, metadata: Metadata | None = None):
        self._metadata: Metadata | None = None
        self.set(dtype, blob, metadata, unsafe=True)
        super().__init__([])

    def field_names(self) -> list[str]:
        return [""]

    def field_type(self) -> np.dtype:
        return self.dtype

    def field_types(self) -> list[np.dtype]:
        return [self.dtype]

    def field_metadata(self) -> list[Metadata | None]:
        return [self._metadata]

    def has_blobs(self) -> bool:
        return self._blob is not None

    def field_blobs(self) -> list[Any]:
        _schema_assert(self._blob is not None, "Value is not set for this field.")
        return [self._blob]

    def all_scalars(self) -> list[Scalar]:
        return [self]

    def clone(self, keep_blobs: bool = True) -> Scalar:
        return Scalar(
            dtype=self._original_dtype,
            blob=self._blob if keep_blobs else None,
            metadata=self._metadata,
        )

    def get(self) -> Any:
        """The blob (or data) of this field."""
        _schema_assert(self._blob is not None, "Value is not set for this field.")
        return self._blob

    def __call__(self) -> Any:
        return self.get()

    @property
    def metadata(self) -> Metadata | None:
        return self._metadata

    def set_metadata(self, value: Metadata) -> None:
        _schema_assert(isinstance(value, Metadata), f"metadata must be Metadata, got {type(value)}")
        self._metadata = value
        self._validate_metadata()

    def _validate_metadata(self) -> None:
        md = self._metadata
        if md is None or md.categorical_limit is None or self.dtype is None:
            return
        _schema_assert(
            np.issubdtype(self.dtype.base, np.integer),
            f"`categorical_limit` can be specified only in integral fields but got {self.dtype}",
        )

    def set_value(self, blob: Any, throw_on_type_mismatch: bool = False, unsafe: bool = False):
        """Set only the blob, keeping (and converting data to) the dtype."""
        if self.dtype.base != np.void and throw_on_type_mismatch:
            _schema_assert(isinstance(blob, np.ndarray), f"Got {blob!r}")
            _schema_assert(
                blob.dtype.base == self.dtype.base,
                f"Expected {self.dtype.base}, got {blob.dtype.base}",
            )
        self.set(dtype=self._original_dtype, blob=blob, unsafe=unsafe)

    def set(
        self,
        dtype: Any = None,
        blob: Any = None,
        metadata: Metadata | None = None,
        unsafe: bool = False,
    ) -> None:
        """Set the dtype, blob and metadata. Data (not a BlobReference) is converted."""
        if not unsafe:
            logger.warning(
                "Scalar should be considered immutable. Only call Scalar.set() on newly "
                "created Scalar with unsafe=True. This will become an error soon."
            )
        if blob is not None and isinstance(blob, str):
            raise ValueError(
                "Passing str blob to Scalar.set() is ambiguous. Do either "
                "set(blob=np.array(...)) or set(blob=BlobReference(...))"
            )
        self._original_dtype = dtype
        if dtype is not None:
            dtype = np.dtype(dtype)
        if blob is not None and not isinstance(blob, BlobReference):
            preserve_shape = isinstance(blob, np.ndarray)
            if dtype is not None and dtype != np.void:
                blob = _as_dtype(blob, dtype.base)
                if blob.size == 0 and not preserve_shape:
                    blob = blob.reshape((0,) + dtype.shape)
            else:
                _schema_assert(isinstance(blob, np.ndarray), f"Invalid blob type: {type(blob)}")
            if blob.ndim == 0 and not preserve_shape:
                blob = blob.reshape((1,))
            if blob.ndim > 1 and dtype is not None and dtype.base != np.void:
                dtype = np.dtype((dtype.base, blob.shape[1:]))
        if dtype is None:
            dtype = np.dtype(np.void)
        _schema_assert(
            not dtype.fields,
            "Cannot create Scalar with a structured dtype. Use from_dtype instead.",
        )
        self.dtype = dtype
        self._blob = blob
        if metadata is not None:
            self.set_metadata(metadata)
        self._validate_metadata()

    def set_type(self, dtype: Any) -> None:
        self._original_dtype = dtype
        self.dtype = np.dtype(dtype) if dtype is not None else np.dtype(np.void)
        self._validate_metadata()

    def id(self) -> int:
        """This leaf's index in the flat column list of its root schema."""
        return self._child_base_id()

    def _pprint_impl(self, indent: int, str_buffer: io.StringIO) -> None:
        str_buffer.write(
            "  " * indent + f"Scalar({self.dtype!r}, {self._blob!r}, {self._metadata!r})\n"
        )


def Map(
    keys: Any,
    values: Any,
    keys_name: str = "keys",
    values_name: str = "values",
    lengths_blob: Any = None,
) -> List:
    """A List of (keys, values) Structs: columns lengths, values:keys, values:values."""
    return List(Struct((keys_name, keys), (values_name, values)), lengths_blob=lengths_blob)


def NamedTuple(name_prefix: str, *fields: Any) -> Struct:
    """A Struct with children named <prefix>_0, <prefix>_1, ..."""
    return Struct(*[(f"{name_prefix}_{i}", field) for i, field in enumerate(fields)])


def Tuple(*fields: Any) -> Struct:
    """A Struct with children named field_0, field_1, ..."""
    return NamedTuple("field", *fields)


def RawTuple(num_fields: int, name_prefix: str = "field") -> Struct:
    """num_fields untyped (void) Scalars."""
    _schema_assert(isinstance(num_fields, int), "num_fields must be an int")
    return NamedTuple(name_prefix, *([np.void] * num_fields))


from caffe2.python._schema_records import (  # noqa: E402  (they build on the classes above)
    ConstRecord,
    FeedRecord,
    FetchRecord,
    InitEmptyRecord,
    NewRecord,
    as_record,
    attach_metadata_to_scalars,
    data_type_for_dtype,
    dtype_for_core_type,
    equal_schemas,
    from_blob_list,
    from_column_list,
    from_dtype,
    is_schema_subset,
    schema_check,
)

__all__ = [
    "FIELD_SEPARATOR", "ConstRecord", "FeatureSpec", "FeedRecord", "FetchRecord", "Field",
    "InitEmptyRecord", "List", "Map", "Metadata", "NamedTuple", "NewRecord", "RawTuple",
    "Scalar", "Struct", "Tuple", "as_record", "attach_metadata_to_scalars",
    "data_type_for_dtype", "dtype_for_core_type", "equal_schemas", "from_blob_list",
    "from_column_list", "from_dtype", "is_schema_subset", "schema_check",
]  # fmt: skip
