"""``caffe2.python.dataio``: the Reader / Writer protocol (spec data.md 4.1, 4.2).

A Reader adds ops to a net that read one batch and returns ``(should_stop, fields)``; a
Writer adds ops that write a batch. Both may set up global state in init/exit nets.

Also here (spec data.md 4.3, 4.4): ``Pipe`` (the base of queues), ``ReaderBuilder`` and
``PipedReaderBuilder``, and the limiters: ``CounterReader``, ``ReaderWithLimitBase``,
``ReaderWithLimit``, ``CountUntil`` and ``ReaderWithTimeLimit``.

How a pipe (``pipeline.pipe``) drives a reader: ``setup_ex(init, exit)`` once per task, then
``read_ex(local_init, local_exit)`` once per reading thread or instance, whose nets run in a
loop until the returned stop blob is true. The executor checks the stop blob after *every*
net, so the nets after the one that set it (processing, writing) do not run on the empty
batch read at the end of the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caffe2.python import core
from caffe2.python.schema import Field, Struct, from_blob_list


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


# ---- Pipe, ReaderBuilder (spec data.md 4.3) --------------------------------------------------
class ReaderBuilder:
    """Makes readers on demand (e.g. one per trainer); subclasses implement all three."""

    def schema(self) -> Field:
        raise NotImplementedError()

    def setup(self, **kwargs: Any) -> Any:
        raise NotImplementedError()

    def new_reader(self, **kwargs: Any) -> Reader:
        raise NotImplementedError()


class PipedReaderBuilder(ReaderBuilder):
    """A ReaderBuilder whose readers go through ``piper(reader=..., **kwargs)``.

    The piper returns a Reader, or something with ``.reader()`` (a Queue, as ``pipe``
    returns), whose reader is then used.
    """

    def __init__(self, builder: ReaderBuilder, piper: Any) -> None:
        self._builder = builder
        self._piper = piper

    def schema(self) -> Field:
        return self._builder.schema()

    def setup(self, **kwargs: Any) -> Any:
        return self._builder.setup(**kwargs)

    def new_reader(self, **kwargs: Any) -> Reader:
        # Everything is passed down: a PipedReaderBuilder may wrap another one.
        output = self._piper(reader=self._builder.new_reader(**kwargs), **kwargs)
        if isinstance(output, Reader):
            return output
        if not hasattr(output, "reader"):
            raise TypeError(
                f"PipedReaderBuilder: the piper {self._piper!r} returned "
                f"{type(output).__name__}, which is neither a Reader nor has .reader()"
            )
        return output.reader()


class Pipe:
    """Something readers and writers are made from (a queue): counts them and, when
    ``obj_key`` is given, attaches itself under that key to their init nets, so that its
    ``setup`` runs there (``queue_util`` uses ``TaskGroup.LOCAL_SETUP``)."""

    def __init__(self, schema: Field | None = None, obj_key: str | None = None) -> None:
        self._num_writers = 0
        self._num_readers = 0
        self._schema = schema
        self._obj_key = obj_key

    def schema(self) -> Field | None:
        return self._schema

    def setup(self, global_init_net: Any) -> Any:
        """Add the pipe's creation to global_init_net (nothing by default)."""

    def reader(self) -> Reader:
        raise NotImplementedError()

    def writer(self) -> Writer:
        raise NotImplementedError()

    def num_readers(self) -> int:
        return self._num_readers

    def num_writers(self) -> int:
        return self._num_writers

    def _new_writer(self, writer_schema: Field | None, writer_init_net: Any) -> None:
        if writer_schema is not None and self._schema is None:
            self._schema = writer_schema
        self._num_writers += 1
        if self._obj_key is not None:
            writer_init_net.add_attribute(self._obj_key, self)

    def _new_reader(self, reader_init_net: Any) -> None:
        self._num_readers += 1
        if self._obj_key is not None:
            reader_init_net.add_attribute(self._obj_key, self)


# ---- limiters (spec data.md 4.4) -------------------------------------------------------------
class CounterReader(Reader):
    """Reads 0, 1, 2, ... (schema ``Struct(('iter', int64))``) and never stops by itself.

    The counter (``CreateCounter``) and the never-true stop flag are created by the first
    ``setup_ex`` only; every read is a ``CountUp`` into a 0-d int64.
    """

    def __init__(self) -> None:
        Reader.__init__(self, schema=Struct(("iter", np.int64)))
        self.counter: Any = None
        self.should_stop: Any = None

    def setup_ex(self, global_init_net: Any, global_finish_net: Any) -> None:
        if self.counter is None:
            self.counter = global_init_net.CreateCounter([], init_count=0)
            self.should_stop = global_init_net.ConstantFill(
                [], shape=[], dtype=core.DataType.BOOL, value=False
            )

    def read_ex(self, local_init_net: Any, local_finish_net: Any) -> tuple:
        if self.counter is None:
            raise RuntimeError("CounterReader: setup_ex must be called before read_ex.")
        count_net = core.Net("limited_reader_counter")
        value = count_net.CountUp([self.counter], 1)
        return [count_net], self.should_stop, [value]


class ReaderWithLimitBase(Reader):
    """A reader that may stop before the underlying reader is exhausted.

    Subclasses implement ``setup_limiter`` (task init/exit ops) and
    ``check_limiter_condition`` (a net computing the stop condition before each read).
    ``data_finished()`` is a bool blob ``reader_with_limit[_k]/data_finished``: true once
    the underlying reader ran dry (not when the limit fired).
    """

    def __init__(self, reader: Reader) -> None:
        Reader.__init__(self, schema=reader._schema)
        self.reader = reader
        self.net = core.Net("reader_with_limit")
        self._data_finished = self.net.AddExternalInput(self.net.NextName("data_finished"))
        self.should_stop: Any = None

    def setup_ex(self, global_init_net: Any, global_finish_net: Any) -> None:
        """data_finished = False, the inner reader's setup, then the limiter's."""
        global_init_net.ConstantFill(
            [], [self._data_finished], shape=[], value=False, dtype=core.DataType.BOOL
        )
        self.reader.setup_ex(global_init_net, global_finish_net)
        self.setup_limiter(global_init_net, global_finish_net)

    def read_ex(self, local_init_net: Any, local_finish_net: Any) -> tuple:
        """[limited_reader_condition] + inner read nets + [limited_reader_post].

        The condition net writes the stop blob, so once the limit fires nothing is read.
        The post net copies the inner stop into it (the stop is checked after each net, so
        this cannot hide the condition) and ORs it into data_finished.
        """
        stop_condition_net = core.Net("limited_reader_condition")
        should_stop = self.check_limiter_condition(stop_condition_net)

        nets, local_data_finished, fields = self.reader.read_ex(local_init_net, local_finish_net)
        self._set_schema(self.reader._schema)

        check_done_net = core.Net("limited_reader_post")
        check_done_net.Copy(local_data_finished, should_stop)
        check_done_net.Or([self._data_finished, local_data_finished], [self._data_finished])
        return [stop_condition_net] + list(nets) + [check_done_net], should_stop, fields

    def setup_limiter(self, global_init_net: Any, global_finish_net: Any) -> None:
        """Add the task-level init/exit ops the limit needs."""
        raise NotImplementedError("Subclass must implement `setup_limiter`")

    def check_limiter_condition(self, stop_condition_net: Any) -> Any:
        """Add ops computing the stop condition (a bool scalar) to the net; return the blob."""
        raise NotImplementedError("Subclass must implement `check_limiter_condition`")

    def data_finished(self) -> Any:
        """Bool blob: true iff the underlying reader was exhausted (not stopped by the limit)."""
        return self._data_finished


def CountUntil(num_iter: int | None) -> ReaderWithLimit:
    """Reads 0, 1, ..., num_iter - 1 (a limited CounterReader)."""
    return ReaderWithLimit(CounterReader(), num_iter)


class ReaderWithLimit(ReaderWithLimitBase):
    """Stops after ``num_iter`` batches in total, over all threads (a shared counter).

    ``num_iter=None``: no limit, only ``data_finished``. ``num_iter=0`` reads nothing.
    QUIRK kept: a negative num_iter is not "unlimited": CreateCounter rejects it when the
    task runs ("negative init_count is not permitted.").
    """

    def __init__(self, reader: Reader, num_iter: int | None = 1) -> None:
        super().__init__(reader)
        self.counter: Any = None
        self.num_iter = num_iter
        if self.num_iter is not None:
            self.counter = self.net.AddExternalInput(self.net.NextName("counter"))

    def setup_limiter(self, global_init_net: Any, global_finish_net: Any) -> None:
        if self.counter:
            global_init_net.CreateCounter([], [self.counter], init_count=int(self.num_iter))

    def check_limiter_condition(self, stop_condition_net: Any) -> Any:
        if self.counter:
            return stop_condition_net.CountDown([self.counter], 1)
        return stop_condition_net.ConstantFill(
            [], 1, shape=[], value=False, dtype=core.DataType.BOOL
        )


class ReaderWithTimeLimit(ReaderWithLimitBase):
    """Stops reading once ``duration`` seconds have passed since the task started.

    The time is checked before each read. ``duration`` 0 or None: no limit.
    QUIRK kept (NAMING): the stop blob of the time check is literally named ``'None'``.
    A negative duration raises ValueError when the pipe is built (Caffe2 broke there too).
    """

    def __init__(self, reader: Reader, duration: float | None = 0) -> None:
        super().__init__(reader)
        self.timer: Any = None
        self.duration = duration
        self.duration_ns_blob: Any = None

    def setup_limiter(self, global_init_net: Any, global_finish_net: Any) -> None:
        if self.duration is not None and self.duration > 0:
            duration_ns = int(self.duration * (10**9))
            self.timer = global_init_net.TimerBegin([], counter_name="epoch_timer")
            start_time = global_init_net.TimerGet(self.timer)
            self.duration_ns_blob = global_init_net.ConstantFill([start_time], value=duration_ns)
            global_finish_net.TimerEnd([self.timer], [])

    def check_limiter_condition(self, stop_condition_net: Any) -> Any:
        if self.duration:
            if self.duration < 0:
                raise ValueError(
                    f"ReaderWithTimeLimit: duration must be > 0 seconds, or 0 / None for no "
                    f"limit; got {self.duration}"
                )
            if self.timer is None:
                raise RuntimeError("ReaderWithTimeLimit: setup_ex must be called before read_ex.")
            time_elapsed = stop_condition_net.TimerGet(self.timer)
            # QUIRK: str(self.should_stop) while it is still None names the blob 'None'.
            return stop_condition_net.GE(
                [time_elapsed, self.duration_ns_blob], str(self.should_stop)
            )
        return stop_condition_net.ConstantFill(
            [], 1, shape=[], value=False, dtype=core.DataType.BOOL
        )
