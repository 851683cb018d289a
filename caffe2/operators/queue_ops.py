"""Blob queues (spec data.md 5.1, 5.2; runtime.md 15.8): BlobsQueue and the ops using it.

A ``BlobsQueue`` is a bounded ring of ``capacity`` records, each ``num_blobs`` workspace blobs
named ``<queue blob>_<slot>_<j>``. Writes and reads *swap* blob contents with the slot (a
move, not a copy), so a writer gets back the slot's stale contents. One lock guards a queue;
readers wait on one condition of it, writers on another, and ``close`` wakes them all. A
closed queue still accepts writes while it has room and is still drained by reads.

Ops: CreateBlobsQueue, EnqueueBlobs, DequeueBlobs, SafeEnqueueBlobs, SafeDequeueBlobs,
WeightedSampleDequeueBlobs, CloseBlobsQueue. A failed write or read (queue closed and full,
closed and empty, or a timeout) makes the plain ops fail (``OperatorFailed``, the net run
returns False) and sets the status output of the Safe ops. The queue is not serializable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from caffe2.operators._util import BOOL, I32, output
from caffe2.operators.fill_ops import op_rng
from caffe2.runtime.blob import Blob, describe, dtype_name
from caffe2.runtime.errors import EnforceError, OperatorFailed
from caffe2.runtime.registry import Arg, operator

log = logging.getLogger("caffe2")

Kernel = Callable[[], None]
Accept = Callable[[Sequence[Blob]], None]


class BlobsQueue:
    """Caffe2's BlobsQueue: a bounded, blocking, closable ring of blob records.

    Reader and writer positions only grow; the slot used is the position modulo capacity.
    Every method is thread-safe.
    """

    caffe2_type_name = "std::shared_ptr<caffe2::BlobsQueue>"

    def __init__(
        self,
        ws: Any,
        name: str,
        capacity: int,
        num_blobs: int,
        enforce_unique_name: bool = False,
        field_names: Sequence[str] = (),
    ) -> None:
        """Create (or reuse) the slot blobs ``<name>_<i>_<j>`` in ws."""
        where = f"BlobsQueue {name}"
        if capacity < 1:
            raise EnforceError(f"Queue capacity must be positive, got {capacity}", where, name)
        if num_blobs < 0:
            raise EnforceError(f"num_blobs must be non-negative, got {num_blobs}", where, name)
        field_names = list(field_names)
        if field_names and len(field_names) != num_blobs:
            raise EnforceError(
                f"Wrong number of fieldNames provided. ({len(field_names)} names for "
                f"{num_blobs} blobs)",
                where,
                name,
            )
        names = [[f"{name}_{i}_{j}" for j in range(num_blobs)] for i in range(capacity)]
        if enforce_unique_name:
            for row in names:
                for n in row:
                    if ws.has_blob(n):
                        raise EnforceError(f"Queue internal blob already exists: {n}", where, n)
        slots = []
        for row in names:
            blobs = []
            for n in row:
                b = ws.create_blob(n)
                if b is None:
                    raise EnforceError(f"Cannot create queue internal blob {n}", where, n)
                blobs.append(b)
            slots.append(tuple(blobs))
        self.name = name
        self.field_names = field_names
        self._slots: list[tuple[Blob, ...]] = slots
        self._capacity = capacity
        self._num_blobs = num_blobs
        self._lock = threading.Lock()
        self._can_read = threading.Condition(self._lock)
        self._can_write = threading.Condition(self._lock)
        self._reader = 0
        self._writer = 0
        self._closing = False
        self._readers_waiting = 0
        self._writers_waiting = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def num_blobs(self) -> int:
        return self._num_blobs

    @property
    def closed(self) -> bool:
        return self._closing

    def size(self) -> int:
        """The number of records waiting to be read."""
        with self._lock:
            return self._writer - self._reader

    def waiting(self) -> tuple[int, int]:
        """How many (readers, writers) are blocked on the queue right now."""
        with self._lock:
            return self._readers_waiting, self._writers_waiting

    def _check_count(self, blobs: Sequence[Blob]) -> None:
        if len(blobs) < self._num_blobs:
            raise EnforceError(
                f"{len(blobs)} blobs given for records of {self._num_blobs} blobs",
                f"BlobsQueue {self.name}",
                self.name,
            )

    def _write(self, blobs: Sequence[Blob]) -> None:
        """Swap the first num_blobs blobs into the write slot (lock held, room checked)."""
        slot = self._slots[self._writer % self._capacity]
        for mine, theirs in zip(slot, blobs, strict=False):
            mine.value, theirs.value = theirs.value, mine.value
        self._writer += 1
        self._can_read.notify()

    def blocking_write(self, blobs: Sequence[Blob]) -> bool:
        """Wait for room or close; write if there is room (even when closed).

        False only when the queue is closed and full; the blobs are then untouched.
        """
        self._check_count(blobs)
        with self._lock:
            if not self._closing and self._writer - self._reader >= self._capacity:
                self._writers_waiting += 1
                try:
                    while not self._closing and self._writer - self._reader >= self._capacity:
                        self._can_write.wait()
                finally:
                    self._writers_waiting -= 1
            if self._writer - self._reader >= self._capacity:
                return False
            self._write(blobs)
            return True

    def try_write(self, blobs: Sequence[Blob]) -> bool:
        """Write without waiting; False when the queue is full (closed or not)."""
        self._check_count(blobs)
        with self._lock:
            if self._writer - self._reader >= self._capacity:
                return False
            self._write(blobs)
            return True

    def blocking_read(
        self, blobs: Sequence[Blob], timeout_secs: float = 0.0, accept: Accept | None = None
    ) -> bool:
        """Wait for a record or close; swap the next record into blobs.

        ``timeout_secs`` > 0 bounds the wait (truncated to whole milliseconds); 0 or less
        waits until a record arrives or the queue closes. False when the queue is closed and
        empty, or on timeout. ``accept``, if given, sees the record's slot blobs before the
        swap and may raise to refuse it: the record then stays in the queue.
        """
        self._check_count(blobs)
        with self._lock:
            if not self._closing and self._writer == self._reader:
                self._readers_waiting += 1
                try:
                    if timeout_secs > 0:
                        ms = int(timeout_secs * 1000)
                        self._can_read.wait_for(
                            lambda: self._closing or self._writer != self._reader, ms / 1000.0
                        )
                    else:
                        while not self._closing and self._writer == self._reader:
                            self._can_read.wait()
                finally:
                    self._readers_waiting -= 1
            if self._writer == self._reader:
                if timeout_secs > 0 and not self._closing:
                    log.error("DequeueBlobs timed out in %g secs", timeout_secs)
                return False
            slot = self._slots[self._reader % self._capacity]
            if accept is not None:
                try:
                    accept(slot)
                except BaseException:
                    self._can_read.notify()  # pass the wake-up on: the record is still here
                    raise
            for mine, theirs in zip(slot, blobs, strict=False):
                mine.value, theirs.value = theirs.value, mine.value
            self._reader += 1
            self._can_write.notify()
            return True

    def close(self) -> None:
        """Mark the queue closed and wake every waiter (idempotent)."""
        with self._lock:
            self._closing = True
            self._can_read.notify_all()
            self._can_write.notify_all()

    def __repr__(self) -> str:
        state = " closed" if self._closing else ""
        return (
            f"<BlobsQueue {self.name} {self._writer - self._reader}/{self._capacity} records "
            f"of {self._num_blobs} blobs{state}>"
        )


# ---- helpers -----------------------------------------------------------------------------


def _queue(op: Any, i: int = 0) -> BlobsQueue:
    """The BlobsQueue in input i, or an error naming the op and the blob."""
    q = op.inputs[i].value
    if not isinstance(q, BlobsQueue):
        name = op.input_names[i]
        raise op.error(
            f"{op.type}: input {i} ({name}) must hold a BlobsQueue (made by CreateBlobsQueue), "
            f"but it holds {describe(q)}",
            name,
        )
    return q


def _count_error(op: Any, q: BlobsQueue, i: int, expected: int, what: str) -> EnforceError:
    qname = op.input_names[i]
    return op.error(
        f"{op.type}: queue {qname} holds records of {q.num_blobs} blobs, so the op needs "
        f"{expected} {what}, but it has {len(op.outputs)} outputs",
        qname,
    )


def _in_place_check(op: Any) -> None:
    """Data output k must be the same blob as input k + 1 (checked at op creation)."""
    for k in range(len(op.input_names) - 1):
        if k < len(op.output_names) and op.output_names[k] != op.input_names[k + 1]:
            raise op.error(
                f"{op.type}: data output {k} ({op.output_names[k]}) must be the same blob as "
                f"input {k + 1} ({op.input_names[k + 1]}): the op swaps them into the queue "
                "in place",
                op.output_names[k],
            )


def _set_status(blob: Blob, failed: bool) -> None:
    output(blob, (), BOOL)[()] = failed


# ---- CreateBlobsQueue, CloseBlobsQueue ---------------------------------------------------


@operator(
    "CreateBlobsQueue",
    inputs=0,
    outputs=1,
    needs_workspace=True,
    args=(
        Arg("capacity", "int", 1),
        Arg("num_blobs", "int", 1),
        Arg("enforce_unique_name", "bool", False),
        Arg("field_names", "strings", []),
    ),
)
def create_blobs_queue(op: Any) -> Kernel:
    """CreateBlobsQueue: [] -> queue. A new BlobsQueue on every run, slots in the op's ws.

    A queue the blob held before is closed, so nothing stays blocked on it.
    """
    capacity, num_blobs = op.arg("capacity"), op.arg("num_blobs")
    unique, fields = op.arg("enforce_unique_name"), op.arg("field_names")
    ws, Y, name = op.ws, op.outputs[0], op.output_names[0]

    def run() -> None:
        try:
            q = BlobsQueue(ws, name, capacity, num_blobs, unique, fields)
        except EnforceError as e:
            raise op.error(f"CreateBlobsQueue: {e.msg}", e.blob) from None
        old, Y.value = Y.value, q
        if isinstance(old, BlobsQueue):
            old.close()

    return run


@operator("CloseBlobsQueue", inputs=1, outputs=0)
def close_blobs_queue(op: Any) -> Kernel:
    """CloseBlobsQueue: [queue] -> []. Closes the queue; waiters wake, data can be drained."""

    def run() -> None:
        _queue(op).close()

    return run


# ---- enqueue -----------------------------------------------------------------------------


def _enqueue_counts(n_in: int, n_out: int) -> bool:
    """inputs >= 2 and inputs == outputs + 1"""
    return n_in >= 2 and n_out >= 1 and n_in == n_out + 1


def _safe_enqueue_counts(n_in: int, n_out: int) -> bool:
    """inputs >= 2 and outputs == inputs (the data blobs and the status)"""
    return n_in >= 2 and n_out >= 2 and n_in == n_out


def _shifted(i: int, o: int) -> bool:
    return i == o + 1


@operator("EnqueueBlobs", inputs=(2, None), outputs=_enqueue_counts, allow_inplace=_shifted)
def enqueue_blobs(op: Any) -> Kernel:
    """EnqueueBlobs: [queue, b_1..b_n] -> [b_1..b_n] in place. Blocking swap-in of a record.

    Fails (the net run returns False) when the queue is closed and full.
    """
    _in_place_check(op)
    outs = op.outputs

    def run() -> None:
        q = _queue(op)
        if len(outs) != q.num_blobs:
            raise _count_error(op, q, 0, q.num_blobs, "data blobs")
        if not q.blocking_write(outs):
            raise OperatorFailed(f"EnqueueBlobs: queue {op.input_names[0]} is closed and full")

    return run


@operator(
    "SafeEnqueueBlobs", inputs=(2, None), outputs=_safe_enqueue_counts, allow_inplace=_shifted
)
def safe_enqueue_blobs(op: Any) -> Kernel:
    """SafeEnqueueBlobs: [queue, b_1..b_n] -> [b_1..b_n, status]. Never fails the net.

    status (0-d bool) is true iff the write failed (queue closed and full); the data blobs
    are then untouched.
    """
    _in_place_check(op)
    outs = op.outputs
    status = outs[-1]

    def run() -> None:
        q = _queue(op)
        if len(outs) != q.num_blobs + 1:
            raise _count_error(op, q, 0, q.num_blobs + 1, "outputs (the data blobs and status)")
        ok = q.blocking_write(outs)
        _set_status(status, not ok)

    return run


# ---- dequeue -----------------------------------------------------------------------------


@operator("DequeueBlobs", inputs=1, outputs=(1, None), args=(Arg("timeout_secs", "float", 0.0),))
def dequeue_blobs(op: Any) -> Kernel:
    """DequeueBlobs: [queue] -> [b_1..b_n]. Blocking swap-out of one record.

    ``timeout_secs`` > 0 bounds the wait. Fails (the net run returns False) when the queue
    is closed and empty, or on timeout.
    """
    timeout = op.arg("timeout_secs")
    outs = op.outputs

    def run() -> None:
        q = _queue(op)
        if len(outs) != q.num_blobs:
            raise _count_error(op, q, 0, q.num_blobs, "data outputs")
        if not q.blocking_read(outs, timeout):
            why = "is closed and empty" if q.closed else f"timed out after {timeout:g} secs"
            raise OperatorFailed(f"DequeueBlobs: queue {op.input_names[0]} {why}")

    return run


class _Batcher:
    """SafeDequeueBlobs with num_records > 1: reads up to n records into scratch blobs owned
    by the op (one row per record, kept across runs) and concatenates each column into the
    outputs along dim 0.

    Each record is checked before it is taken from the queue: a record that cannot be
    concatenated (not a tensor, 0-d, other dtype or inner dims) stays in the queue, the
    records read so far are written to the outputs, and the op raises.
    """

    def __init__(self, op: Any, num_records: int) -> None:
        self.op = op
        self.n = num_records
        self.rows: list[list[Blob]] = []

    def _fail(self, msg: str, col: int) -> EnforceError:
        op = self.op
        return op.error(
            f"SafeDequeueBlobs: queue {op.input_names[0]}, column {col} "
            f"(output {op.output_names[col]}): {msg}",
            op.output_names[col],
        )

    def _acceptor(self, i: int, size: int) -> Accept:
        first = self.rows[0]

        def accept(slot: Sequence[Blob]) -> None:
            for col in range(size):
                v = slot[col].value
                if not isinstance(v, np.ndarray):
                    raise self._fail(f"record {i} is not a tensor: it holds {describe(v)}", col)
                if i == 0:
                    continue
                f = first[col].value
                if v.ndim == 0:
                    raise self._fail(
                        f"Empty tensor to dequeue at column {col} within {size} total columns",
                        col,
                    )
                if f.ndim == 0:
                    raise self._fail(
                        "the first record is 0-d, so later records cannot be appended to it", col
                    )
                if v.dtype != f.dtype or v.shape[1:] != f.shape[1:]:
                    raise self._fail(
                        f"record {i} is a {dtype_name(v.dtype)} tensor {list(v.shape)} but the "
                        f"first record is {dtype_name(f.dtype)} {list(f.shape)}: cannot "
                        "concatenate them along dim 0",
                        col,
                    )

        return accept

    def __call__(self, q: BlobsQueue) -> bool:
        size = q.num_blobs
        while len(self.rows) < self.n:
            self.rows.append([])
        for row in self.rows:
            if len(row) != size:
                row[:] = [Blob() for _ in range(size)]
        got = 0
        try:
            for i in range(self.n):
                if not q.blocking_read(self.rows[i], 0.0, self._acceptor(i, size)):
                    break
                got += 1
        finally:
            if got:
                self._emit(got, size)
        return got > 0

    def _emit(self, got: int, size: int) -> None:
        outs = self.op.outputs
        for col in range(size):
            arrays = [self.rows[k][col].value for k in range(got)]
            a0 = arrays[0]
            if got == 1:
                np.copyto(output(outs[col], a0.shape, a0.dtype), a0)
                continue
            shape = (sum(a.shape[0] for a in arrays),) + a0.shape[1:]
            np.concatenate(arrays, axis=0, out=output(outs[col], shape, a0.dtype))


@operator("SafeDequeueBlobs", inputs=1, outputs=(2, None), args=(Arg("num_records", "int", 1),))
def safe_dequeue_blobs(op: Any) -> Kernel:
    """SafeDequeueBlobs: [queue] -> [b_1..b_n, status]. Waits without timeout; never fails.

    status (0-d bool) is true iff nothing could be read (queue closed and empty); the data
    outputs are then untouched. With ``num_records`` > 1, up to that many records are
    concatenated along dim 0 (fewer if the queue closes and runs dry).
    """
    n = op.arg("num_records")
    if n <= 0:
        raise op.error(f"num_records must be > 0, got {n}")
    outs = op.outputs
    status = outs[-1]
    batch = _Batcher(op, n) if n > 1 else None

    def run() -> None:
        q = _queue(op)
        if len(outs) != q.num_blobs + 1:
            raise _count_error(op, q, 0, q.num_blobs + 1, "outputs (the data blobs and status)")
        ok = batch(q) if batch is not None else q.blocking_read(outs)
        _set_status(status, not ok)

    return run


@operator(
    "WeightedSampleDequeueBlobs",
    inputs=(1, None),
    outputs=(2, None),
    args=(Arg("weights", "floats", []), Arg("table_idx_blob", "int", -1)),
)
def weighted_sample_dequeue_blobs(op: Any) -> Kernel:
    """WeightedSampleDequeueBlobs: [q_1..q_m] -> [b_1..b_n, status].

    Picks queue i with probability weights[i] / sum(weights) and does one blocking read
    from it. Output ``table_idx_blob`` (if >= 0) then receives i as int32 [1], even when the
    read failed; status (0-d bool) is true iff the read failed (queue closed and empty).
    """
    n_in, n_out = len(op.inputs), len(op.outputs)
    table_idx = op.arg("table_idx_blob")
    if table_idx >= n_out - 1:
        raise op.error(
            f"table_idx_blob ({table_idx}) must be < the number of data outputs ({n_out - 1})"
        )
    weights = op.arg("weights") or [1.0] * n_in
    if len(weights) != n_in:
        raise op.error(f"{len(weights)} weights given for {n_in} input queues (need one each)")
    w = np.asarray(weights, np.float32)
    total = np.float32(w.sum(dtype=np.float32))
    if not total > 0:
        raise op.error(f"Sum of weights must be positive (weights {list(weights)})")
    probs = w / total
    if (probs < 0).any():
        raise op.error(f"Each probability must be non-negative (weights {list(weights)})")
    cum = np.cumsum(probs, dtype=np.float32)
    cum[-1] = np.float32(1.0001)  # as Caffe2: the last bound absorbs rounding
    rng = op_rng(op)
    outs = op.outputs
    status = outs[-1]
    idx_blob = outs[table_idx] if table_idx >= 0 else None

    def run() -> None:
        queues = [_queue(op, i) for i in range(n_in)]
        r = rng.random(dtype=np.float32)
        idx = int(np.searchsorted(cum, r, side="left"))
        q = queues[idx]
        if n_out != q.num_blobs + 1:
            raise _count_error(op, q, idx, q.num_blobs + 1, "outputs (the data blobs and status)")
        ok = q.blocking_read(outs)
        if idx_blob is not None:
            output(idx_blob, (1,), I32)[0] = idx
        _set_status(status, not ok)

    return run
