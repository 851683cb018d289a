"""``caffe2.python.record_queue``: the older queue wrapper built from plain steps (spec 7.1).

Unlike ``queue_util.Queue`` (set up by the tasks that use it), a :class:`RecordQueue` creates
its ``BlobsQueue`` at once, in the current workspace, and hands out plain execution steps::

    rq = RecordQueue(['a', 'b'], capacity=4)
    reader, producer_step, exit_step, schema = rq.build(dataset.reader(init_net))
    # run producer_step concurrently with a step consuming `reader`, then exit_step

NAMING: ``<name>/init_net`` creates the queue blob ``<name>/init_net/CreateBlobsQueue:0``; the
exit step is ``<name>/exit_net_close_step``; the producer step ``producers`` holds, per thread
i, ``producer_i`` = [``reader_i``, ``queue_writer<i>``].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from caffe2.python import core, workspace
from caffe2.python.dataio import Reader, Writer
from caffe2.python.schema import Field, Struct, from_column_list

__all__ = ["RecordQueue"]


class _QueueReader(Reader):
    """Dequeues records of a RecordQueue (``RecordQueue.reader``)."""

    def __init__(self, blobs_queue: Any, schema: Field, name: str | None = None) -> None:
        super().__init__(schema)
        self.blobs_queue = blobs_queue
        self.name = name

    def read(self, read_net: core.Net) -> tuple[core.BlobReference, list[core.BlobReference]]:
        """(status, fields): SafeDequeueBlobs under NameScope(read_net.NextName(name))."""
        with core.NameScope(read_net.NextName(self.name)):
            status = read_net.NextName()
            fields = read_net.SafeDequeueBlobs(
                self.blobs_queue, self._schema.field_names() + [status]
            )
            return fields[-1], list(fields[:-1])


class _QueueWriter(Writer):
    """Enqueues records into a RecordQueue (``RecordQueue.writer``).

    QUIRK kept: the ``schema`` attribute (the queue's schema) shadows ``Writer.schema()``.
    """

    def __init__(self, blobs_queue: Any, schema: Field) -> None:
        self.blobs_queue = blobs_queue
        self.schema = schema

    def write(self, writer_net: core.Net, fields: Any) -> core.BlobReference:
        """CheckDatasetConsistency of the batch, then SafeEnqueueBlobs; the status blob."""
        if isinstance(fields, Field):
            fields = fields.field_blobs()
        fields = list(fields)
        names = self.schema.field_names()
        if len(fields) != len(names):
            raise ValueError(
                f"Cannot write {len(fields)} blobs into record queue {self.blobs_queue}: its "
                f"records have {len(names)} fields {names}"
            )
        writer_net.CheckDatasetConsistency(fields, [], fields=names)
        status = writer_net.NextName()
        writer_net.SafeEnqueueBlobs([self.blobs_queue] + fields, fields + [status])
        return status


class RecordQueue:
    """Feeds records from a reader into a queue with producer steps, and reads them back.

    ``fields`` is a Struct or a list of column names (``from_column_list``). The queue is
    created right away in the current workspace (``capacity`` records; with
    ``enforce_unique_name`` its slot blobs must not exist yet).
    """

    def __init__(
        self,
        fields: Struct | list[str],
        name: str | None = None,
        capacity: int = 1,
        enforce_unique_name: bool = False,
        num_threads: int = 1,
    ) -> None:
        if not isinstance(fields, list | Struct):
            raise AssertionError(
                "fields must be either a Struct or a list of raw field names, got "
                f"{type(fields).__name__}"
            )
        if isinstance(fields, list):
            fields = from_column_list(fields)
        self.schema = fields
        self.name = name or "queue"
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(
                f"RecordQueue {self.name}: num_threads must be >= 1, got {num_threads}"
            )
        self.num_threads = num_threads
        num_blobs = len(self.schema.field_names())
        init_net = core.Net(self.name + "/init_net")
        self.blobs_queue = init_net.CreateBlobsQueue(
            [],
            1,
            capacity=capacity,
            num_blobs=num_blobs,
            enforce_unique_name=enforce_unique_name,
        )
        workspace.RunNetOnce(init_net)

        self.writer = _QueueWriter(self.blobs_queue, self.schema)
        reader_name = self.name + "_reader"
        self.reader = _QueueReader(self.blobs_queue, self.schema, reader_name)

        exit_net = core.Net(self.name + "/exit_net")
        exit_net.CloseBlobsQueue(self.blobs_queue, 0)
        self.exit_step = core.execution_step(f"{exit_net}_close_step", exit_net)

    def build(
        self, reader: Reader, process: Callable[[core.Net, Field], Field] | None = None
    ) -> tuple[Reader, core.ExecutionStep, core.ExecutionStep, Field]:
        """(queue reader, producer step, exit step, schema).

        The producer step reads ``reader`` in ``num_threads`` concurrent threads, optionally
        transforms each record with ``process(net, record) -> record``, and enqueues it. Run
        it together with the steps consuming the queue reader, then the exit step, which
        closes the queue.
        """
        producer_steps = []
        for i in range(self.num_threads):
            name = "reader_" + str(i)
            net_reader = core.Net(name)
            should_stop, fields = reader.read_record(net_reader)
            step_read = core.execution_step(name, net_reader)

            name = "queue_writer" + str(i)
            net_prod = core.Net(name)
            field_blobs = fields.field_blobs()
            if process:
                field_blobs = process(net_prod, fields).field_blobs()

            self.writer.write(net_prod, field_blobs)
            step_prod = core.execution_step(name, net_prod)
            step = core.execution_step(
                "producer_" + str(i), [step_read, step_prod], should_stop_blob=should_stop
            )
            producer_steps.append(step)
        producer_step = core.execution_step("producers", producer_steps, concurrent_substeps=True)
        return self.reader, producer_step, self.exit_step, self.schema
