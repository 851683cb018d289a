"""Helpers of the dataset ops: libstdc++'s shuffle, and columns that grow in place."""

from __future__ import annotations

import weakref

import numpy as np

from caffe2.runtime.blob import Blob

GROWTH = 1.4  # Caffe2's kDatasetGrowthPct: appended-to columns grow by at least 40 %


# ---- libstdc++'s default_random_engine and classic std::shuffle --------------------------
_MINSTD_MOD = 2**31 - 1
_MINSTD_MIN, _MINSTD_MAX = 1, 2**31 - 2


class _MinstdRand0:
    """std::minstd_rand0 (libstdc++'s std::default_random_engine), seed 1."""

    __slots__ = ("x",)

    def __init__(self) -> None:
        self.x = 1

    def __call__(self) -> int:
        self.x = self.x * 16807 % _MINSTD_MOD
        return self.x

    def uniform(self, a: int, b: int) -> int:
        """std::uniform_int_distribution(a, b) as libstdc++ draws it (down-scaling)."""
        urange = b - a
        scaling = (_MINSTD_MAX - _MINSTD_MIN) // (urange + 1)
        past = (urange + 1) * scaling
        while True:
            r = self() - _MINSTD_MIN
            if r < past:
                return a + r // scaling


def shuffle(seq: np.ndarray) -> None:
    """std::shuffle with a fresh default engine, classic Fisher-Yates (project decision)."""
    g = _MinstdRand0()
    for i in range(1, len(seq)):
        j = g.uniform(0, i)
        seq[i], seq[j] = seq[j], seq[i]


# ---- growing columns ----------------------------------------------------------------------
# Appended-to columns are views of a larger buffer, so appends are amortized O(rows added).
# Only buffers made here are extended in place, and only past the end of the live view.
_BUFFERS: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()


def _spare_buffer(a: np.ndarray) -> np.ndarray | None:
    base = a.base
    if not isinstance(base, np.ndarray) or _BUFFERS.get(id(base)) is not base:
        return None
    same_start = a.__array_interface__["data"][0] == base.__array_interface__["data"][0]
    if not (same_start and a.flags.c_contiguous and a.shape[1:] == base.shape[1:]):
        return None
    return base if a.dtype == base.dtype else None


def append_rows(out: Blob, a: np.ndarray, b: np.ndarray) -> None:
    n, m = a.shape[0], b.shape[0]
    if m == 0:
        return
    buf = _spare_buffer(a)
    if buf is None or buf.shape[0] < n + m:
        cap = max(n + m, int(n * GROWTH))
        buf = np.empty((cap,) + a.shape[1:], dtype=a.dtype)
        buf[:n] = a
        _BUFFERS[id(buf)] = buf
    buf[n : n + m] = b
    out.value = buf[: n + m]
