"""Counter ops (spec 15.4): a thread-safe int64 counter held in a blob, and ops reading it.

CreateCounter stores a new ``Counter`` on every run; the other ops take the counter blob as
input 0 and write 0-d CPU tensors (int64 counts, bool flags). A counter serializes as Caffe2's
CounterSerializer wrote it: a BlobProto of type ``std::unique_ptr<Counter<int64_t>>`` whose
tensor is int64 ``[count]``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from caffe2.operators._util import BOOL, I64, TP, output
from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import Blob, describe
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.registry import Arg, operator
from caffe2.runtime.serialization import register_deserializer, register_serializer

Kernel = Callable[[], None]

_I64_MIN, _I64_SPAN = -(2**63), 2**64


def _wrap(v: int) -> int:
    """v as a C++ int64 would hold it (std::atomic<int64_t> wraps on overflow)."""
    return (v - _I64_MIN) % _I64_SPAN + _I64_MIN


class Counter:
    """Caffe2's Counter<int64_t>: every operation is atomic under one lock."""

    caffe2_type_name = "std::unique_ptr<Counter<long>>"
    __slots__ = ("_count", "_lock")

    def __init__(self, count: int = 0) -> None:
        self._count = count
        self._lock = threading.Lock()

    def count_up(self) -> int:
        """Increment; return the count before the increment."""
        with self._lock:
            prev = self._count
            self._count = _wrap(prev + 1)
        return prev

    def count_down(self) -> bool:
        """Decrement (always, even below 0); true iff the count was <= 0 before."""
        with self._lock:
            prev = self._count
            self._count = _wrap(prev - 1)
        return prev <= 0

    def retrieve(self) -> int:
        with self._lock:
            return self._count

    def check_if_done(self) -> bool:
        with self._lock:
            return self._count <= 0

    def reset(self, init_count: int) -> int:
        """Set the count to init_count; return the previous count."""
        with self._lock:
            prev = self._count
            self._count = init_count
        return prev

    def __repr__(self) -> str:
        return f"<Counter {self.retrieve()}>"


INIT_COUNT = Arg("init_count", "int64", 0)


def _init_count(op: Any) -> int:
    n = op.arg("init_count")
    if n < 0:
        raise op.error(f"negative init_count is not permitted. (init_count = {n})")
    return n


def _counter(op: Any) -> Counter:
    """The Counter in input 0, or an error naming the blob and what it holds."""
    c = op.inputs[0].value
    if not isinstance(c, Counter):
        name = op.input_names[0]
        raise op.error(
            f"{op.type}: input {name} must hold a counter (made by CreateCounter), but it "
            f"holds {describe(c)}",
            name,
        )
    return c


@operator("CreateCounter", inputs=0, outputs=1, args=(INIT_COUNT,))
def create_counter(op: Any) -> Kernel:
    """CreateCounter: [] -> counter. Stores a new counter set to `init_count` on every run."""
    init = _init_count(op)
    Y = op.outputs[0]

    def run() -> None:
        Y.value = Counter(init)

    return run


@operator("ResetCounter", inputs=1, outputs=(0, 1), args=(INIT_COUNT,))
def reset_counter(op: Any) -> Kernel:
    """ResetCounter: [counter] -> [(previous)]. Sets the count to `init_count`."""
    init = _init_count(op)
    out = op.outputs[0] if op.outputs else None

    def run() -> None:
        prev = _counter(op).reset(init)
        if out is not None:
            output(out, (), I64)[()] = prev

    return run


def _reader(name: str, method: Callable[[Counter], Any], dt: np.dtype, what: str) -> None:
    def factory(op: Any) -> Kernel:
        Y = op.outputs[0]

        def run() -> None:
            v = method(_counter(op))
            output(Y, (), dt)[()] = v

        return run

    factory.__doc__ = f"{name}: [counter] -> Y. {what}"
    operator(name, inputs=1, outputs=1)(factory)


_reader("CountUp", Counter.count_up, I64, "int64 scalar: the count before incrementing it.")
_reader(
    "CountDown",
    Counter.count_down,
    BOOL,
    "bool scalar: true iff the count was <= 0 before; always decrements.",
)
_reader("RetrieveCount", Counter.retrieve, I64, "int64 scalar: the current count.")
_reader("CheckCounterDone", Counter.check_if_done, BOOL, "bool scalar: count <= 0.")


# ---- serialization -----------------------------------------------------------------------

COUNTER_PROTO_TYPE = "std::unique_ptr<Counter<int64_t>>"


def serialize_counter(name: str, counter: Counter) -> caffe2_pb2.BlobProto:
    """Caffe2's CounterSerializer: the current count as a 1-element int64 tensor."""
    proto = caffe2_pb2.BlobProto(name=name, type=COUNTER_PROTO_TYPE)
    t = proto.tensor
    t.name = name
    t.data_type = TP.INT64
    t.dims.append(1)
    t.int64_data.append(counter.retrieve())
    return proto


def deserialize_counter(proto: caffe2_pb2.BlobProto, into: Blob) -> None:
    """Caffe2's CounterDeserializer: a new counter holding the stored count."""
    t = proto.tensor
    checks = (
        (list(t.dims) == [1], f"Unexpected dims {list(t.dims)} of a counter (expected [1])"),
        (t.data_type == TP.INT64, "Only int64_t counters supported"),
        (len(t.int64_data) == 1, f"Unexpected size of data: {len(t.int64_data)}"),
    )
    for ok, msg in checks:
        if not ok:
            raise EnforceError(msg, "counter deserializer", proto.name or None)
    into.value = Counter(t.int64_data[0])


register_serializer(Counter, COUNTER_PROTO_TYPE, serialize_counter)
register_deserializer(COUNTER_PROTO_TYPE, deserialize_counter)
