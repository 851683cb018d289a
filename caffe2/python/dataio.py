"""``caffe2.python.dataio``: the Reader / Writer protocol (spec data.md 4.1, 4.2).

A Reader adds ops to a net that read one batch and returns ``(should_stop, fields)``; a
Writer adds ops that write a batch. Both may set up global state in init/exit nets.
(Only the two base classes so far; pipes, builders and limiters come later.)
"""

from __future__ import annotations

from typing import Any

from caffe2.python import core
from caffe2.python.schema import Field, from_blob_list


class Reader:
    """Reads batches of a record. Subclasses implement ``read``."""

    def __init__(self, schema: Field | None = None) -> None:
        if schema is not None:
            assert isinstance(schema, Field), "Reader schema must be a schema.Field"
        self._schema = schema

    def schema(self) -> Field:
        assert self._schema is not None, "Schema not provided for this reader."
        return self._schema

    def _set_schema(self, schema: Field | None) -> None:
        self._schema = schema

    def setup_ex(self, init_net: Any, finish_net: Any) -> None:
        """Add global setup to init_net and cleanup to finish_net (once per task)."""

    def read_ex(self, local_init_net: Any, local_finish_net: Any) -> tuple:
        """(read nets, should_stop blob, field blobs) for one reading thread or instance."""
        read_net = core.Net("reader_body")
        return ([read_net],) + tuple(self.read(read_net))

    def read_record_ex(self, local_init_net: Any, local_finish_net: Any) -> tuple:
        """read_ex, with the fields as a record when the reader has a schema."""
        nets, should_stop, fields = self.read_ex(local_init_net, local_finish_net)
        if self._schema:
            fields = from_blob_list(self._schema, fields)
        return nets, should_stop, fields

    def read(self, read_net: Any) -> tuple[Any, Any]:
        """Add ops reading one batch to read_net: (should_stop blob, field blobs).

        Must be thread-safe and atomic: concurrent readers never share a record.
        """
        raise NotImplementedError("Readers must implement `read`.")

    def reset(self, net: Any) -> None:
        """Add ops to net that rewind the reader."""
        raise NotImplementedError("This reader cannot be resetted.")

    def read_record(self, read_net: Any) -> tuple[Any, Any]:
        """read, with the fields as a record when the reader has a schema."""
        should_stop, fields = self.read(read_net)
        if self._schema:
            fields = from_blob_list(self._schema, fields)
        return should_stop, fields

    def execution_step(
        self, reader_net_name: str | None = None, external_should_stop: Any = None
    ) -> tuple[core.ExecutionStep, Any]:
        """A step that reads until should_stop (or external_should_stop); (step, fields).

        Callers add the nets consuming the fields with ``step.AddNet``.
        """
        reader_net = core.Net(reader_net_name or "reader")
        should_stop, fields = self.read_record(reader_net)
        if external_should_stop is not None:
            should_stop = reader_net.Or([external_should_stop, should_stop])
        read_step = core.execution_step(
            f"{reader_net_name}_step", reader_net, should_stop_blob=should_stop
        )
        return read_step, fields


class Writer:
    """Writes batches of a record. Subclasses implement ``write``."""

    _schema: Field | None = None

    def schema(self) -> Field | None:
        return self._schema

    def write(self, writer_net: Any, fields: Any) -> None:
        """Add ops writing the field blobs (one batch) to writer_net."""
        raise NotImplementedError("Writers must implement write.")

    def write_record(self, writer_net: Any, fields: Any) -> None:
        """write, accepting a record (whose schema the writer remembers)."""
        if isinstance(fields, Field):
            self._schema = fields
            fields = fields.field_blobs()
        self.write(writer_net, fields)

    def setup_ex(self, init_net: Any, finish_net: Any) -> None:
        """Add global setup to init_net; by default commits in finish_net."""
        self.commit(finish_net)

    def write_ex(
        self, fields: Any, local_init_net: Any, local_finish_net: Any, stop_blob: Any
    ) -> list[Any]:
        """The nets writing one batch of fields (per thread or instance)."""
        write_net = core.Net("write_net")
        self.write(write_net, fields)
        return [write_net]

    def write_record_ex(
        self, fields: Any, local_init_net: Any, local_finish_net: Any, stop_blob: Any = None
    ) -> tuple[list[Any], Any]:
        """write_ex accepting a record: (write nets, stop blob)."""
        if isinstance(fields, Field):
            self._schema = fields
            fields = fields.field_blobs()
        if stop_blob is None:
            stop_blob = local_init_net.NextName("dequeue_status")
        write_nets = self.write_ex(fields, local_init_net, local_finish_net, stop_blob)
        return write_nets, stop_blob

    def commit(self, finish_net: Any) -> None:
        """Add ops finishing the writes to finish_net (nothing by default)."""
