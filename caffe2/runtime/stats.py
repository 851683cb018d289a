"""The process-wide stat registry (Caffe2's ``caffe2/core/stats.h`` StatRegistry).

A stat is a named, atomically updated int64. Operators register their stats when they are
created (so a key is published with 0 before its first event) and add to them as events
happen: TimerEnd adds the elapsed nanoseconds to ``<counter_name>/time_ns/sum`` and 1 to
``<counter_name>/time_ns/count`` (an "average" stat is exported as that sum/count pair);
AtomicIter adds 1 to ``atomic_iter/stats/<iter blob>/num_iter``.

``publish()`` is the snapshot ``workspace.GetStats()`` returns. ``reset()`` zeroes every value
but keeps the keys, so the stats ops already hold stay the registered ones.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

__all__ = [
    "StatValue",
    "StatRegistry",
    "ExportedStat",
    "AvgExportedStat",
    "registry",
    "add",
    "add_stat",
    "get_stat",
    "publish",
    "update",
    "reset",
]

_I64_MIN, _I64_SPAN = -(2**63), 2**64


def _wrap(v: int) -> int:
    """v as a C++ int64 holds it (std::atomic<int64_t> arithmetic wraps)."""
    return (v - _I64_MIN) % _I64_SPAN + _I64_MIN


class StatValue:
    """One stat: an int64 whose updates are atomic."""

    __slots__ = ("_v", "_lock")

    def __init__(self) -> None:
        self._v = 0
        self._lock = threading.Lock()

    def increment(self, inc: int = 1) -> int:
        """Add inc; return the new value."""
        with self._lock:
            self._v = _wrap(self._v + int(inc))
            return self._v

    def reset(self, value: int = 0) -> int:
        """Set the value; return the previous one."""
        with self._lock:
            prev, self._v = self._v, _wrap(int(value))
            return prev

    def get(self) -> int:
        with self._lock:
            return self._v

    def __repr__(self) -> str:
        return f"<StatValue {self.get()}>"


class StatRegistry:
    """Named StatValues under one lock; a name, once added, keeps its StatValue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, StatValue] = {}

    def add(self, name: str) -> StatValue:
        """The StatValue registered under name, created (at 0) if missing."""
        if not isinstance(name, str):
            raise TypeError(f"stat name must be a str, got {type(name).__name__}")
        with self._lock:
            v = self._stats.get(name)
            if v is None:
                v = self._stats[name] = StatValue()
            return v

    def get(self, name: str) -> int | None:
        """The current value of a stat, or None if no such stat is registered."""
        with self._lock:
            v = self._stats.get(name)
        return None if v is None else v.get()

    def publish(self, reset: bool = False) -> dict[str, int]:
        """A snapshot {name: value}; with reset, every value is read and zeroed atomically."""
        with self._lock:
            if reset:
                return {k: v.reset() for k, v in self._stats.items()}
            return {k: v.get() for k, v in self._stats.items()}

    def update(self, data: Mapping[str, int] | Iterable[tuple[str, int]]) -> None:
        """Add each (name, value) to the registry's stats (Caffe2's StatRegistry::update)."""
        items = data.items() if isinstance(data, Mapping) else data
        for k, v in items:
            self.add(k).increment(v)

    def reset(self) -> None:
        """Zero every stat, keeping the names."""
        with self._lock:
            for v in self._stats.values():
                v.reset()

    def __len__(self) -> int:
        with self._lock:
            return len(self._stats)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._stats


_GLOBAL = StatRegistry()


def registry() -> StatRegistry:
    """The process-wide registry (Caffe2's StatRegistry::get())."""
    return _GLOBAL


def add(name: str) -> StatValue:
    """Register a stat in the process-wide registry (at 0 if new) and return it."""
    return _GLOBAL.add(name)


def add_stat(name: str, value: int = 1) -> int:
    """Add value to the named process-wide stat (created if missing); return the new value."""
    return _GLOBAL.add(name).increment(value)


def get_stat(name: str) -> int | None:
    """The current value of a process-wide stat, or None if it is not registered."""
    return _GLOBAL.get(name)


def publish(reset: bool = False) -> dict[str, int]:
    """A snapshot of the process-wide stats (what ``workspace.GetStats()`` returns)."""
    return _GLOBAL.publish(reset)


def update(data: Mapping[str, int] | Iterable[tuple[str, int]]) -> None:
    """Add each (name, value) to the process-wide stats."""
    _GLOBAL.update(data)


def reset() -> None:
    """Zero every process-wide stat, keeping the names."""
    _GLOBAL.reset()


class ExportedStat:
    """A stat exported under ``<group>/<name>`` (Caffe2's CAFFE_EXPORTED_STAT)."""

    __slots__ = ("group", "name", "key", "_value")

    def __init__(self, group: str, name: str, stats: StatRegistry | None = None) -> None:
        self.group = group
        self.name = name
        self.key = f"{group}/{name}"
        self._value = (_GLOBAL if stats is None else stats).add(self.key)

    def increment(self, value: int = 1) -> int:
        return self._value.increment(value)

    def get(self) -> int:
        return self._value.get()


class AvgExportedStat:
    """An averaged stat: exported as ``<group>/<name>/sum`` and ``<group>/<name>/count``
    (Caffe2's CAFFE_AVG_EXPORTED_STAT); each event adds its value to sum and 1 to count."""

    __slots__ = ("sum", "count")

    def __init__(self, group: str, name: str, stats: StatRegistry | None = None) -> None:
        self.sum = ExportedStat(group, f"{name}/sum", stats)
        self.count = ExportedStat(group, f"{name}/count", stats)

    def increment(self, value: int) -> int:
        self.count.increment()
        return self.sum.increment(value)
