"""Timer ops (Caffe2's stats_ops.cc; spec runtime.md 15.9, data.md inventory).

TimerBegin owns one ``Timer`` per op instance: every run puts that same timer in its output
blob and starts it (an error if it is already running). TimerGet reads the nanoseconds since
the start into an int64 scalar; TimerEnd stops the timer and adds the elapsed nanoseconds to
the process-wide stat ``<counter_name>/time_ns`` (published as ``.../time_ns/sum`` and
``.../time_ns/count``, see ``caffe2.runtime.stats``). Both need a running timer.
Timers have no serializer, as in Caffe2.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from caffe2.operators._util import I64, output
from caffe2.runtime.blob import describe
from caffe2.runtime.registry import Arg, operator
from caffe2.runtime.stats import AvgExportedStat

Kernel = Callable[[], None]


class Timer:
    """Caffe2's TimerInstance: a wall-clock (monotonic) timer with its time_ns stat."""

    caffe2_type_name = "TimerInstance*"
    __slots__ = ("name", "_running", "_start", "_lock", "_stat")

    def __init__(self, name: str) -> None:
        self.name = name
        self._running = False
        self._start = 0
        self._lock = threading.Lock()
        self._stat = AvgExportedStat(name, "time_ns")  # registered now, as Caffe2 did

    def begin(self) -> None:
        """Start; an error if already running."""
        with self._lock:
            if self._running:
                raise RuntimeError("Called TimerBegin on an already running timer.")
            self._running = True
            self._start = time.perf_counter_ns()

    def get_ns(self) -> int:
        """Nanoseconds since begin(); the timer must be running."""
        with self._lock:
            if not self._running:
                raise RuntimeError("Called TimerGet on a stopped timer.")
            return time.perf_counter_ns() - self._start

    def end(self) -> int:
        """Stop, publish the elapsed nanoseconds to the stat and return them."""
        with self._lock:
            if not self._running:
                raise RuntimeError("Called TimerEnd on a stopped timer.")
            ns = time.perf_counter_ns() - self._start
            self._running = False
        self._stat.increment(ns)
        return ns

    @property
    def running(self) -> bool:
        with self._lock:
            return self._running

    def __repr__(self) -> str:
        return f"<Timer {self.name!r} {'running' if self.running else 'stopped'}>"


def _timer(op: Any) -> Timer:
    """The Timer in input 0, or an error naming the blob and what it holds."""
    t = op.inputs[0].value
    if not isinstance(t, Timer):
        name = op.input_names[0]
        raise op.error(
            f"{op.type}: input {name} must hold a timer (made by TimerBegin), but it holds "
            f"{describe(t)}",
            name,
        )
    return t


def _call(op: Any, fn: Callable[[], Any]) -> Any:
    """fn() with a timer state error turned into an error naming the op and its timer blob."""
    try:
        return fn()
    except RuntimeError as e:
        name = op.input_names[0] if op.input_names else op.output_names[0]
        raise op.error(f"{op.type}: {e}", name) from None


@operator("TimerBegin", inputs=0, outputs=1, args=(Arg("counter_name", "str", ""),))
def timer_begin(op: Any) -> Kernel:
    """TimerBegin: [] -> timer. Starts the op's own timer, named `counter_name` (default:
    the output's name); an error if it is already running."""
    name = op.arg("counter_name") if op.has_arg("counter_name") else op.output_names[0]
    timer = Timer(name)
    Y = op.outputs[0]

    def run() -> None:
        Y.value = timer
        _call(op, timer.begin)

    return run


@operator("TimerGet", inputs=1, outputs=1)
def timer_get(op: Any) -> Kernel:
    """TimerGet: [timer] -> int64 scalar, the nanoseconds since TimerBegin (timer running)."""
    Y = op.outputs[0]

    def run() -> None:
        ns = _call(op, _timer(op).get_ns)
        output(Y, (), I64)[()] = ns

    return run


@operator("TimerEnd", inputs=1, outputs=0)
def timer_end(op: Any) -> Kernel:
    """TimerEnd: [timer] -> []. Stops the timer and publishes the elapsed ns to its stat."""

    def run() -> None:
        _call(op, _timer(op).end)

    return run
