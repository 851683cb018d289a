"""Task outputs (split out of :mod:`caffe2.python.task`): :class:`TaskOutput`, the value(s)
a task produces, and :class:`TaskOutputList`, a task's outputs set together.

Re-exported by :mod:`caffe2.python.task`, which is the public import path (``final_output``,
which needs ``Task``, stays there).
"""

from __future__ import annotations

import importlib

__all__ = ["TaskOutput", "TaskOutputList"]


_NO_SCHEMA = object()
_schema = None


def _schema_module():
    """caffe2.python.schema, or None while the project has no schema module.

    TaskOutput only needs it to recognise records (``schema.Field``); without the module
    nothing is a record. Imported on first use: schema imports core, not this module's users.
    """
    global _schema
    if _schema is None:
        try:
            _schema = importlib.import_module("caffe2.python.schema")
        except ModuleNotFoundError as e:
            if e.name != "caffe2.python.schema":
                raise
            _schema = _NO_SCHEMA
    return None if _schema is _NO_SCHEMA else _schema


def _is_field(obj) -> bool:
    schema = _schema_module()
    return schema is not None and isinstance(obj, schema.Field)


class TaskOutput:
    """The value(s) a task produces: a blob, a list of blobs, or a schema record.

    After a session ran the task, :meth:`get` returns the blob references and :meth:`fetch`
    their values (same shape: one value, a list, or a record).
    """

    def __init__(self, names):
        self._schema = None
        self._is_scalar = False
        if _is_field(names):
            self._schema = names
            names = self._schema.field_blobs()
        self._is_scalar = type(names) not in (tuple, list)
        if self._is_scalar:
            names = [names]
        self.names = names
        self._values = None
        self._fetch_func = None

    def __repr__(self):
        return f"TaskOutput(names={self.names}, values={self._values})"

    def set(self, values, _fetch_func=None):
        assert len(values) == len(self.names), (
            f"TaskOutput {[str(n) for n in self.names]} got {len(values)} values."
        )
        self._values = values
        self._fetch_func = _fetch_func

    def _shape(self, values):
        if self._is_scalar:
            return values[0]
        if self._schema:
            return _schema_module().from_blob_list(self._schema, values)
        return values

    def get(self):
        assert self._values is not None, "Output value not set yet."
        return self._shape(self._values)

    def fetch(self):
        assert self._fetch_func is not None, "Cannot fetch value for this output."
        return self._shape([self._fetch_func(v) for v in self._values])


class TaskOutputList:
    """The outputs of a task, set and fetched together."""

    def __init__(self, outputs=None):
        self.outputs = outputs or []

    def names(self):
        names = []
        for o in self.outputs:
            names += o.names
        return names

    def set_values(self, values, _fetch_func=None):
        offset = 0
        for o in self.outputs:
            num = len(o.names)
            o.set(values[offset : offset + num], _fetch_func)
            offset += num
        assert offset == len(values), "Wrong number of output values."
