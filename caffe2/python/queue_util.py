"""``caffe2.python.queue_util``: blob queues as pipes between tasks (spec data.md 5.3).

A :class:`Queue` is a bounded, blocking queue of records (a ``BlobsQueue`` in a blob). Its
writer enqueues each batch with ``SafeEnqueueBlobs``; its reader dequeues with
``SafeDequeueBlobs`` and stops once the queue is closed and drained::

    with TaskGroup() as tg:
        q = pipe(dataset.reader(), processor=proc)     # a Queue the first pipe writes
        pipe(q, other_dataset.writer())                # ...and the second one reads

The queue is created by its ``setup`` in the node's local init (``TaskGroup.LOCAL_SETUP``),
once per Queue object, so it exists before any task of the group runs and is shared by the
tasks of the node. Each task reading or writing the queue closes it in its task exit, so a
consumer stops once the producer is done, and a producer stops once its consumer is gone.

NAMING: the queue blob is ``core.Net(name).NextName('handler')``: ``queue/handler``,
``queue_1/handler``..., prefixed by the current NetBuilder (inside a Task:
``<task name>/queue/handler``). Dequeued blobs are ``<net>/<field name>`` of a net named
``dequeue``; the status blobs ``<net>/status``.

Project decision: ``_QueueReader.read(net)`` works (Caffe2's returned the list of nets as
the stop blob); it registers the queue setup on ``net`` itself.
"""

from __future__ import annotations

import logging
import operator
from typing import Any

from caffe2.python import core, dataio
from caffe2.python.schema import Field
from caffe2.python.task import TaskGroup

__all__ = ["QueueWrapper", "Queue", "enqueue", "dequeue", "close_queue"]

logger = logging.getLogger(__name__)


def _require(cond: object, msg: str) -> None:
    """Caffe2 checked these with ``assert``; raised explicitly so they survive ``python -O``."""
    if not cond:
        raise AssertionError(msg)


def _positive_int(value: Any, what: str, where: str) -> int:
    """value as an int >= 1, or a ValueError naming what and where."""
    try:
        n = operator.index(value)
    except TypeError:
        n = None
    if n is None or isinstance(value, bool) or n < 1:
        raise ValueError(f"{where}: {what} must be an int >= 1, got {value!r}")
    return n


class _QueueReader(dataio.Reader):
    """Dequeues records of a queue (made by ``QueueWrapper.reader()``)."""

    def __init__(self, wrapper: QueueWrapper, num_dequeue_records: int = 1) -> None:
        _require(
            wrapper.schema() is not None,
            f"Queue needs a schema in order to be read from: queue {wrapper.queue()} has "
            "none yet. Its schema comes from the first writer, so build the pipe that writes "
            "into the queue before asking for its reader (or give the Queue a schema).",
        )
        dataio.Reader.__init__(self, wrapper.schema())
        self._wrapper = wrapper
        self._num_dequeue_records = _positive_int(
            num_dequeue_records, "num_dequeue_records", f"reader of queue {wrapper.queue()}"
        )

    def setup_ex(self, init_net: core.Net, exit_net: core.Net) -> None:
        """Close the queue in the task exit: producers blocked on it then wake up."""
        exit_net.CloseBlobsQueue([self._wrapper.queue()], 0)

    def _dequeue(self, net: core.Net) -> tuple[list[core.BlobReference], core.BlobReference]:
        names = self.schema().field_names()
        fields, status = dequeue(
            net,
            self._wrapper.queue(),
            len(names),
            field_names=names,
            num_records=self._num_dequeue_records,
        )
        return fields, status

    def read_ex(self, local_init_net: core.Net, local_finish_net: core.Net) -> tuple:
        """([Net('dequeue')], status, fields); the queue is set up in the node's init."""
        self._wrapper._new_reader(local_init_net)
        dequeue_net = core.Net("dequeue")
        fields, status = self._dequeue(dequeue_net)
        return [dequeue_net], status, fields

    def read(self, read_net: core.Net) -> tuple[core.BlobReference, list[core.BlobReference]]:
        """(status, fields): dequeue into read_net (status true once closed and drained)."""
        self._wrapper._new_reader(read_net)
        fields, status = self._dequeue(read_net)
        return status, fields


class _QueueWriter(dataio.Writer):
    """Enqueues records into a queue (made by ``QueueWrapper.writer()``)."""

    def __init__(self, wrapper: QueueWrapper) -> None:
        self._wrapper = wrapper

    def setup_ex(self, init_net: core.Net, exit_net: core.Net) -> None:
        """Close the queue in the task exit: consumers drain it and then stop."""
        exit_net.CloseBlobsQueue([self._wrapper.queue()], 0)

    def _check_fields(self, fields: Any) -> list[Any]:
        fields = list(fields)
        schema = self.schema() if self.schema() is not None else self._wrapper.schema()
        if schema is not None and len(fields) != len(schema.field_names()):
            raise ValueError(
                f"Cannot write {len(fields)} blobs into queue {self._wrapper.queue()}: its "
                f"records have {len(schema.field_names())} fields {schema.field_names()}"
            )
        return fields

    def write_ex(
        self,
        fields: Any,
        local_init_net: core.Net,
        local_finish_net: core.Net,
        status: Any,
    ) -> list[core.Net]:
        """[Net('enqueue')]; status is set when the queue is closed and full."""
        fields = self._check_fields(fields)
        self._wrapper._new_writer(self.schema(), local_init_net)
        enqueue_net = core.Net("enqueue")
        enqueue(enqueue_net, self._wrapper.queue(), fields, status)
        return [enqueue_net]

    def write(self, writer_net: core.Net, fields: Any) -> core.BlobReference:
        """Enqueue fields in writer_net; returns the status blob."""
        fields = self._check_fields(fields)
        self._wrapper._new_writer(self.schema(), writer_net)
        return enqueue(writer_net, self._wrapper.queue(), fields)


class QueueWrapper(dataio.Pipe):
    """A Pipe over an existing queue blob ``handler``; set up in the node's local init."""

    def __init__(
        self, handler: Any, schema: Field | None = None, num_dequeue_records: int = 1
    ) -> None:
        dataio.Pipe.__init__(self, schema, TaskGroup.LOCAL_SETUP)
        self._queue = handler
        self._num_dequeue_records = _positive_int(
            num_dequeue_records, "num_dequeue_records", f"queue {handler}"
        )

    def reader(self) -> _QueueReader:
        """A reader of the queue (the queue must have a schema by now)."""
        return _QueueReader(self, num_dequeue_records=self._num_dequeue_records)

    def writer(self) -> _QueueWriter:
        """A writer into the queue (the first writer's record gives the queue its schema)."""
        return _QueueWriter(self)

    def queue(self) -> Any:
        """The queue blob."""
        return self._queue

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._queue}>"


class Queue(QueueWrapper):
    """A new queue of ``capacity`` records, created in the local init of its node."""

    def __init__(
        self,
        capacity: int,
        schema: Field | None = None,
        name: str = "queue",
        num_dequeue_records: int = 1,
    ) -> None:
        # A unique blob name: the throw-away net makes the name (and prefix) unique.
        net = core.Net(name)
        queue_blob = net.AddExternalInput(net.NextName("handler"))
        capacity = _positive_int(capacity, "capacity", f"queue {queue_blob}")
        QueueWrapper.__init__(self, queue_blob, schema, num_dequeue_records=num_dequeue_records)
        self.capacity = capacity
        self._setup_done = False

    def setup(self, global_init_net: core.Net) -> None:
        """Add CreateBlobsQueue to global_init_net (run once per node, LOCAL_SETUP)."""
        _require(
            self._schema,
            f"This queue does not have a schema: queue {self._queue} was never written to "
            "with a record, and was given no schema.",
        )
        self._setup_done = True
        names = self._schema.field_names()
        global_init_net.CreateBlobsQueue(
            [],
            [self._queue],
            capacity=self.capacity,
            num_blobs=len(names),
            field_names=names,
        )


def enqueue(net: core.Net, queue: Any, data_blobs: Any, status: Any = None) -> core.BlobReference:
    """Add ``SafeEnqueueBlobs`` of data_blobs to net; returns the status blob.

    Enqueueing *moves* (swaps) the blobs into the queue, so a blob given twice is first
    copied (``net.Copy``) for its extra occurrences.
    """
    if status is None:
        status = net.NextName("status")
    queue_blobs: list[Any] = []
    seen: set[str] = set()
    for blob in data_blobs:
        if str(blob) not in seen:
            seen.add(str(blob))
            queue_blobs.append(blob)
        else:
            logger.warning("Need to copy blob %s to enqueue", blob)
            queue_blobs.append(net.Copy(blob))
    results = net.SafeEnqueueBlobs([queue] + queue_blobs, queue_blobs + [status])
    return results[-1]


def dequeue(
    net: core.Net,
    queue: Any,
    num_blobs: int,
    status: Any = None,
    field_names: list[str] | None = None,
    num_records: int = 1,
) -> tuple[list[core.BlobReference], core.BlobReference]:
    """Add ``SafeDequeueBlobs`` to net: (data blobs, status blob).

    The data blobs are ``<net>/<field name>`` (or ``<net>/data:<i>``); status is true once
    the queue is closed and empty. With ``num_records > 1`` up to that many records are
    concatenated.
    """
    if field_names is not None:
        if len(field_names) != num_blobs:
            raise ValueError(
                f"dequeue from queue {queue}: {len(field_names)} field names {field_names} "
                f"for {num_blobs} blobs"
            )
        data_names = [net.NextName(name) for name in field_names]
    else:
        data_names = [net.NextName("data", i) for i in range(num_blobs)]
    if status is None:
        status = net.NextName("status")
    results = list(net.SafeDequeueBlobs(queue, data_names + [status], num_records=num_records))
    status_blob = results.pop(-1)
    return results, status_blob


def close_queue(step: Any, *queues: Any) -> core.ExecutionStep:
    """A step running ``step``, then closing every queue (names keep Caffe2's 'wraper')."""
    close_net = core.Net("close_queue_net")
    for queue in queues:
        close_net.CloseBlobsQueue([queue], 0)
    close_step = core.execution_step(f"{close_net}_step", close_net)
    return core.execution_step(f"{close_net}_wraper_step", [step, close_step])
