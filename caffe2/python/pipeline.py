"""``caffe2.python.pipeline``: tasks that move records reader -> processor -> writer (spec 6).

``pipe(input, output=None, processor=None, ...)`` builds one Task that reads ``input`` (a
Reader, or anything with ``.reader()`` such as a Queue) until it stops, optionally runs a
``processor`` on each batch, and writes the result into ``output`` (a Writer, anything with
``.writer()``, or by default a new ``Queue(capacity or 100)``, which it returns)::

    with TaskGroup() as tg:
        q = pipe(src_ds.reader(), processor=double)    # task 1: dataset -> double -> queue
        pipe(q, dst_ds.writer(), num_runtime_threads=4)  # task 2: queue -> dataset
    LocalSession(ws).run(tg)

A processor is called once when the pipe is built, with the input record, inside a fresh
NetBuilder (so it may use ``ops``); it returns the output record, a ``(record, stop_blob)``
pair, ``(nets, record, stop_blob)``, an :class:`Output`, or nothing (then nothing is written).
A ``core.Net`` with input and output records is a processor too (:class:`NetProcessor`).

Threads: ``num_runtime_threads=N`` (the default way) runs N instances of the task, each in
its own child workspace, sharing what the task init created (cursors, counters, queues).
``num_threads=N > 1`` (deprecated) unrolls N thread bodies in one task instead.

Failures (project decision; Caffe2 would hang): a pipe task whose body fails closes the
queues it reads or writes (those its reader and writer close in their exit nets), so tasks
blocked on them wake up, drain and stop, and the session raises the one error. This is a
report step of the pipe's body (``pipe:guard``) whose last run, once the body has ended, does
nothing when the body's status is true (a normal end) and closes the queues otherwise. A
processor that raises while the pipe is being built leaves no task behind in the TaskGroup.

NAMING (spec 6.1, 6.2): the task is named ``processor_name(processor)``, else
``'pipe_into:' + processor_name(output)``, else ``'pipe_from:' + processor_name(input)``. Its
nets are ``<task>/pipe:init``, ``<task>/pipe:exit``, ``<task>/pipe:instance:init``,
``<task>/pipe:instance:exit``, ``<task>/timer_start``, ``<task>/timer_end``, plus the reader's
and writer's; the body step is ``body``; a default output queue is
``<task>/queue/handler``. QUIRK kept: the timer's counter name embeds Python's builtin
``input`` (``<node>/pipe/<task>/builtin_function_or_method/<output name or NoOutput>``).
"""

from __future__ import annotations

import operator
import threading
from typing import Any

from caffe2.python import core, queue_util
from caffe2.python.dataio import Reader, Writer
from caffe2.python.net_builder import NetBuilder, ops
from caffe2.python.schema import Field, as_record
from caffe2.python.task import Node, Task, TaskGroup

__all__ = [
    "DEFAULT_QUEUE_CAPACITY",
    "Output",
    "make_processor",
    "normalize_processor_output",
    "pipe",
    "pipe_and_output",
    "processor_name",
    "ProcessingReader",
    "NetProcessor",
]

DEFAULT_QUEUE_CAPACITY = 100

# The guard's report interval: as long as the platform allows (about 31 years on Linux), so
# that it only runs once, when the body has ended.
_GUARD_INTERVAL_MS = int(min(threading.TIMEOUT_MAX / 2, 1e9) * 1000)


def _require(cond: object, msg: str) -> None:
    """Caffe2 checked these with ``assert``; raised explicitly so they survive ``python -O``."""
    if not cond:
        raise AssertionError(msg)


class Output:
    """What a processor produced: nets to run, the output record, and a stop blob.

    Must be built while a NetBuilder is active (a processor runs inside one): when ``nets`` is
    None, the builder's children (the ops the processor added with ``ops``) are the nets.
    """

    def __init__(self, nets: Any = None, record: Any = None, should_stop: Any = None) -> None:
        builder_children = NetBuilder.current().get()
        _require(
            nets is None or len(builder_children) == 0,
            "Cannot both use `ops` syntax and return a list of nets.",
        )
        if nets is None:
            nets = builder_children
        if isinstance(nets, core.Net):
            nets = [nets]
        self.nets = [] if nets is None else list(nets)
        self.record = None if record is None else as_record(record)
        self.should_stop = should_stop


def _init_output(
    output: Any, capacity: int | None, global_init_net: core.Net, global_exit_net: core.Net
) -> tuple[Any, Writer]:
    """(the queue to return or None, the writer), with the writer's setup_ex done."""
    if output is None:
        out_queue = queue_util.Queue(
            capacity=(capacity if capacity is not None else DEFAULT_QUEUE_CAPACITY)
        )
        writer = out_queue.writer()
    elif isinstance(output, Writer):
        _require(capacity is None, "capacity would not be used.")
        out_queue = None
        writer = output
    elif hasattr(output, "writer"):
        _require(capacity is None, "capacity would not be used.")
        out_queue = output
        writer = output.writer()
    else:
        raise ValueError(
            "output must be a reader, queue or stream. "
            f"(got {type(output).__name__}: a Writer or an object with .writer() is needed)"
        )
    writer.setup_ex(global_init_net, global_exit_net)
    return out_queue, writer


def make_processor(processor: Any) -> Any:
    """The callable a ProcessingReader uses: identity for None, NetProcessor for a Net."""
    if processor is None:
        return lambda rec: rec
    if isinstance(processor, core.Net):
        return NetProcessor(processor)
    if not callable(processor):
        raise TypeError(
            f"processor must be None, a core.Net or a callable, got {type(processor).__name__}"
        )
    return processor


def normalize_processor_output(output: Any) -> Output:
    """An Output from what a processor returned (see the module docstring)."""
    if isinstance(output, Output):
        return output
    if isinstance(output, Field):
        return Output(record=output)
    if isinstance(output, tuple):
        is_record_and_blob = (
            len(output) == 2
            and isinstance(output[0], Field)
            and isinstance(output[1], core.BlobReference)
        )
        if is_record_and_blob:
            return Output(None, *output)
        if len(output) > 3:
            raise ValueError(
                f"A processor returned a tuple of {len(output)} items; expected (record, "
                "stop_blob) or (nets, record, stop_blob)."
            )
        return Output(*output)
    return Output(output)


def pipe(
    input: Any,
    output: Any = None,
    num_threads: int = 1,
    processor: Any = None,
    name: str | None = None,
    capacity: int | None = None,
    group: TaskGroup | None = None,
    num_runtime_threads: int = 1,
) -> Any:
    """Build a Task piping ``input`` (through ``processor``) into ``output``.

    Args:
        input: a Reader, or anything with ``.reader()`` (a Queue); read until it stops.
        output: a Writer, anything with ``.writer()``, or None for a new Queue of
            ``capacity`` (default 100) records.
        num_threads: deprecated: N > 1 unrolls N thread bodies in the task. 0 creates no
            task and returns the (processing) reader of ``input``.
        processor: None, a callable ``processor(record)``, or a core.Net (NetProcessor).
        name: the task name (default: from processor, output or input; see module doc).
        capacity: capacity of the queue created when ``output`` is None.
        group: the TaskGroup of the task (default: the active one).
        num_runtime_threads: N instances of the task run concurrently. 0: as num_threads=0.

    Returns the new Queue (output None), ``output`` itself when it has ``.writer()``, None
    when output is a Writer or the processor returned no record, or a reader when no task
    is created.
    """
    result, _ = _pipe_step(
        input, output, num_threads, processor, name, capacity, group, num_runtime_threads
    )
    return result


def pipe_and_output(
    input: Any,
    output: Any = None,
    num_threads: int = 1,
    processor: Any = None,
    name: str | None = None,
    capacity: int | None = None,
    group: TaskGroup | None = None,
    num_runtime_threads: int = 1,
    final_outputs: Any = None,
) -> tuple[Any, Any]:
    """Like ``pipe``, with ``final_outputs`` (a blob, record or list) as task outputs.

    Returns ``(result of pipe, outputs)``: the TaskOutput list, a single TaskOutput when
    ``final_outputs`` is not a list or tuple, or None when it is None.
    """
    _require(num_threads > 0, f"pipe_and_output needs num_threads > 0, got {num_threads}")
    result, task = _pipe_step(
        input,
        output,
        num_threads,
        processor,
        name,
        capacity,
        group,
        num_runtime_threads,
        final_outputs,
    )
    outputs = None
    if final_outputs is not None:
        outputs = task.outputs()
        if type(final_outputs) not in (list, tuple):
            outputs = outputs[0]
    return result, outputs


def processor_name(processor: Any) -> str:
    """A name for a processor, reader or writer (default task names, timer names).

    ``processor.name`` if it has one; else, for objects with a Python 2 ``func_name``,
    the module of a lambda, ``Class.method`` for a method, or the function name; else the
    class name. Project decision (spec 6.1, runtime.md 16): Python 3 functions have no
    ``func_name``, so a plain function or lambda gives ``'function'`` (and a bound method
    ``'method'``), as Caffe2 itself did under Python 3; task names, and the blob names
    derived from them (``<node>/function/queue/handler``), match Caffe2's.
    """
    if hasattr(processor, "name"):
        return processor.name
    if hasattr(processor, "func_name"):
        if processor.func_name == "<lambda>":
            return processor.__module__
        if hasattr(processor, "im_class"):
            return f"{processor.im_class.__name__}.{processor.func_name}"
        return processor.func_name
    return processor.__class__.__name__


def _queues_closed_by(nets: list[core.Net]) -> list[str]:
    """The queue blobs CloseBlobsQueue ops of these nets close, in order, once each."""
    names: list[str] = []
    for net in nets:
        for op in net.Proto().op:
            if op.type == "CloseBlobsQueue" and op.input and op.input[0] not in names:
                names.append(op.input[0])
    return names


def _failure_guard(queues: list[str], status: core.BlobReference) -> core.ExecutionStep | None:
    """A report step closing ``queues`` when the body ended without ``status`` set.

    It runs once, after its sibling steps ended (the interval is practically infinite):
    its first net is empty, the stop blob ``status`` is checked after it, and only a false
    status (the body failed) reaches the net closing the queues.
    """
    if not queues:
        return None
    check_net = core.Net("pipe:guard")
    close_net = core.Net("pipe:guard:close")
    for q in queues:
        close_net.CloseBlobsQueue([q], 0)
    return core.execution_step(
        "pipe:guard",
        [check_net, close_net],
        should_stop_blob=status,
        only_once=True,
        run_every_ms=_GUARD_INTERVAL_MS,
    )


def _as_blob(blob: Any) -> core.BlobReference:
    """A status given by name means the blob its ConstantFill creates (name scope included)."""
    return blob if isinstance(blob, core.BlobReference) else core.ScopedBlobReference(str(blob))


def _profiler_name(name: str, output: Any) -> str:
    # QUIRK (spec 6.2): Caffe2 passed the builtin `input` here, not the pipe's input.
    return "{}/{}/{}/{}/{}".format(
        str(Node.current()),
        "pipe",
        name,
        processor_name(input) if input else "NoInput",
        processor_name(output) if output else "NoOutput",
    )


def _body_nets(
    profiler_name: str, read_nets: list[Any], write_nets: list[Any], status: Any
) -> tuple[core.ExecutionStep, core.Net]:
    """The body step [timer_start, reads..., writes..., timer_end] and timer_end."""
    timer_start_net = core.Net("timer_start")
    timer = timer_start_net.TimerBegin([], counter_name=profiler_name)
    timer_end_net = core.Net("timer_end")
    timer_end_net.TimerEnd(timer, [])
    body = core.execution_step(
        "body",
        [timer_start_net] + list(read_nets) + list(write_nets) + [timer_end_net],
        should_stop_blob=_as_blob(status),
    )
    return body, timer_end_net


def _runtime_threads_task(
    name: str,
    group: TaskGroup | None,
    final_outputs: Any,
    reader: Reader,
    num_threads: int,
    output: Any,
    capacity: int | None,
) -> tuple[Any, Task]:
    profiler_name = _profiler_name(name, output)
    task = Task(name=name, group=group, outputs=final_outputs, num_instances=num_threads)
    with _building(task):
        global_exit_net = core.Net("pipe:exit")
        global_init_net = core.Net("pipe:init")
        reader.setup_ex(global_init_net, global_exit_net)

        init_net = core.Net("pipe:instance:init")
        exit_net = core.Net("pipe:instance:exit")
        read_nets, status, rec = reader.read_record_ex(init_net, exit_net)
        init_net.ConstantFill([], [status], shape=[], value=False, dtype=core.DataType.BOOL)

        if rec is not None:
            out_queue, writer = _init_output(output, capacity, global_init_net, global_exit_net)
            write_nets, _ = writer.write_record_ex(rec, init_net, exit_net, status)
        else:
            out_queue = None
            write_nets = []

        with ops.task_init():
            ops.net(global_init_net)
        with ops.task_instance_init():
            ops.net(init_net)

        body, timer_end_net = _body_nets(profiler_name, read_nets, write_nets, status)
        guard = _failure_guard(_queues_closed_by([global_exit_net, exit_net]), _as_blob(status))
        if guard is not None:
            ops.net(guard)
        ops.net(body)
        ops.net(timer_end_net)

        with ops.task_instance_exit():
            ops.net(exit_net)
        with ops.task_exit():
            ops.net(global_exit_net)

    return out_queue, task


def _static_threads_task(
    name: str,
    group: TaskGroup | None,
    final_outputs: Any,
    reader: Reader,
    num_threads: int,
    output: Any,
    capacity: int | None,
) -> tuple[Any, Task]:
    profiler_name = _profiler_name(name, output)
    task = Task(name=name, group=group, outputs=final_outputs)
    with _building(task):
        global_exit_net = core.Net("exit")
        global_init_net = core.Net("init")
        reader.setup_ex(global_init_net, global_exit_net)

        out_queue = None
        writer = None

        steps = []
        for thread_id in range(num_threads):
            with NetBuilder(name=f"t:{thread_id}") as nb:
                init_net = core.Net("init")
                exit_net = core.Net("exit")
                read_nets, status, rec = reader.read_record_ex(init_net, exit_net)
                init_net.ConstantFill([], [status], shape=[], value=False, dtype=core.DataType.BOOL)

                if rec is not None:
                    if writer is None:
                        # The output queue is named after the task, not the thread.
                        with NetBuilder(_fullname=task.name):
                            out_queue, writer = _init_output(
                                output, capacity, global_init_net, global_exit_net
                            )
                    write_nets, _ = writer.write_record_ex(rec, init_net, exit_net, status)
                else:
                    write_nets = []

                body, timer_end_net = _body_nets(profiler_name, read_nets, write_nets, status)
                ops.net(init_net)
                ops.net(body)
                ops.net(timer_end_net)
                ops.net(exit_net)
                guard = _failure_guard(
                    _queues_closed_by([global_exit_net, exit_net]), _as_blob(status)
                )
                if guard is not None:
                    ops.net(guard)
            steps.append(core.to_execution_step(nb))
        ops.net(global_init_net)
        ops.net(core.execution_step("body", steps, concurrent_substeps=True))
        ops.net(global_exit_net)
    return out_queue, task


class _building:
    """``with task:`` for a pipe task; on an error the half-built task leaves its group."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def __enter__(self) -> Task:
        return self.task.__enter__()

    def __exit__(self, etype: Any, value: Any, tb: Any) -> None:
        self.task.__exit__(etype, value, tb)
        if etype is None:
            return
        group = self.task.group
        if group is not None and self.task in group._tasks_to_add:
            group._tasks_to_add.remove(self.task)
        if isinstance(value, BaseException):
            value.add_note(f"(while building pipe task '{self.task.name}')")


def _thread_count(value: Any, what: str) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        n = -1
    if n < 0 or isinstance(value, bool):
        raise ValueError(f"pipe: {what} must be an int >= 0, got {value!r}")
    return n


def _pipe_step(
    input: Any,
    output: Any = None,
    num_threads: int = 1,
    processor: Any = None,
    name: str | None = None,
    capacity: int | None = None,
    group: TaskGroup | None = None,
    num_runtime_threads: int = 1,
    final_outputs: Any = None,
) -> tuple[Any, Task | None]:
    """(result, task) of pipe (see ``pipe``); task is None when no task is created."""
    num_threads = _thread_count(num_threads, "num_threads")
    num_runtime_threads = _thread_count(num_runtime_threads, "num_runtime_threads")
    _require(
        num_threads <= 1 or num_runtime_threads <= 1,
        "Only one of num_threads or num_runtime_threads must be set.",
    )

    if isinstance(input, Reader):
        reader = input
    elif hasattr(input, "reader"):
        reader = input.reader()
    else:
        raise ValueError(
            "in must be a reader, queue or stream. "
            f"(got {type(input).__name__}: a Reader or an object with .reader() is needed)"
        )

    if processor is not None:
        reader = ProcessingReader(reader, processor)

    if num_threads == 0 or num_runtime_threads == 0:
        _require(output is None, "pipe without threads returns a reader: output must be None.")
        return reader, None

    if name is None and processor is not None:
        name = processor_name(processor)
    if name is None and output is not None:
        name = "pipe_into:" + processor_name(output)
    if name is None:
        name = "pipe_from:" + processor_name(input)

    if num_threads > 1:
        return _static_threads_task(
            name, group, final_outputs, reader, num_threads, output, capacity
        )
    return _runtime_threads_task(
        name, group, final_outputs, reader, num_runtime_threads, output, capacity
    )


class ProcessingReader(Reader):
    """Reads from ``reader`` and runs ``processor`` on each record (see the module doc).

    Its schema is the processor's output record's. The processor's stop blob (returned,
    or set with ``ops.stop_if``) is ORed into the read status by a net ``stop_net``.
    """

    def __init__(self, reader: Reader, processor: Any) -> None:
        Reader.__init__(self)
        self.reader = reader
        self.processor = make_processor(processor)

    def setup_ex(self, init_net: core.Net, finish_net: core.Net) -> None:
        self.reader.setup_ex(init_net, finish_net)

    def read_ex(self, init_net: core.Net, exit_net: core.Net) -> tuple:
        read_nets, status, rec = self.reader.read_record_ex(init_net, exit_net)
        read_nets = list(read_nets)
        # The builder's stop blob is not the read status (a limiter copies into its own).
        with NetBuilder() as nb:
            # The processor may use `ops`; normalize_processor_output takes the children.
            result = normalize_processor_output(self.processor(rec))
        read_nets += result.nets
        if result.should_stop or nb._stop_blob:
            stop_net = core.Net("stop_net")
            if result.should_stop:
                stop_net.Or([status, result.should_stop], [status])
            if nb._stop_blob:
                stop_net.Or([status, nb._stop_blob], [status])
            read_nets.append(stop_net)
        if hasattr(self.processor, "setup"):
            init_net.add_attribute(TaskGroup.LOCAL_SETUP, self.processor)
        self._set_schema(result.record)
        # QUIRK kept: an empty Struct is falsy, so it gives no fields (and no writer).
        fields = result.record.field_blobs() if result.record else None
        return read_nets, status, fields


class NetProcessor:
    """A processor that runs a clone of ``net`` per call (per thread).

    ``net`` needs an input record (``net.set_input_record``) and usually an output record.
    Each call clones it as ``str(net) + prefix`` with ``prefix = <current builder>/``: the
    input record's blobs are bound to the record read, every other blob the net defines is
    prefixed. ``thread_init_nets`` are cloned likewise (sharing the remapping) and run in
    the node's init (``setup``). ``stop_signal`` (a blob of net) stops the pipe when true.
    """

    def __init__(
        self,
        net: core.Net,
        stop_signal: core.BlobReference | None = None,
        thread_init_nets: list[core.Net] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(net, core.Net):
            raise TypeError(f"NetProcessor needs a core.Net, got {type(net).__name__}")
        if stop_signal is not None and not isinstance(stop_signal, core.BlobReference):
            raise TypeError(
                f"NetProcessor stop_signal must be a BlobReference, got {type(stop_signal)}"
            )
        self.name = name or str(net)
        self.thread_init_nets = thread_init_nets or []
        self.net = net
        self._stop_signal = stop_signal
        self._blob_maps: list[dict[str, str]] = []
        self._frozen = False
        self._cloned_init_nets: list[core.Net] = []

    def setup(self, init_net: core.Net) -> list[core.Net]:
        """The cloned thread init nets (the processor cannot be called any more)."""
        self._frozen = True
        cloned_init_nets = self._cloned_init_nets
        self._cloned_init_nets = []
        return cloned_init_nets

    def __call__(self, rec: Field) -> Output:
        _require(
            not self._frozen,
            f"NetProcessor {self.name} was already set up (frozen): it cannot be used in "
            "another pipe.",
        )
        prefix = NetBuilder.current().name + "/"
        blob_remap: dict[str, str] = {}
        for net in self.thread_init_nets:
            new_net, _ = core.clone_and_bind_net(net, str(net) + prefix, prefix, blob_remap)
            self._cloned_init_nets.append(new_net)

        new_net, remappings = core.clone_and_bind_net(
            self.net, str(self.net) + prefix, prefix, blob_remap, rec
        )

        if self._stop_signal is None:
            stop_signal = None
        elif str(self._stop_signal) in remappings:
            stop_signal = core.BlobReference(remappings[str(self._stop_signal)], net=new_net)
        else:
            stop_signal = self._stop_signal

        self._blob_maps.append(remappings)
        return Output([new_net], new_net.output_record(), stop_signal)

    def blob_maps(self) -> list[dict[str, str]]:
        """The blob remapping of each call (the processor cannot be called any more)."""
        self._frozen = True
        return self._blob_maps
