"""Parallel and profiling net executors: ``dag``, ``async_dag``, ``async_scheduling``, ``prof_dag``.

``DagNet`` (all three parallel names) orders the operators by their data dependencies on the
Blob objects they are bound to: read-after-write, write-after-read and write-after-write, plus
``control_input`` names; an op whose schema has ``needs_workspace`` is a barrier (it waits for
every earlier op and every later op waits for it). Independent ops then run on threads, which
helps when their kernels release the GIL (large NumPy calls, BLAS). A net whose dependencies
form a single chain, or with one worker, runs exactly like ``simple``.

Threads: the calling thread runs ops itself and hands the surplus of ready ops to helper tasks
on a shared pool (one ``ThreadPoolExecutor`` per worker count, created on first use). The caller
never waits for a helper that has not started an op, so nested dag nets (an op running a dag
subnet from a pool thread) cannot deadlock on a full pool. Workers: the ``num_workers`` net
argument, else the NetDef ``num_workers`` field, else ``DEFAULT_NUM_WORKERS`` =
min(4, CPU count), at least 2: Python threads only pay off for GIL-releasing kernels, and those
gain nothing beyond the core count. The caller counts as one worker.

``ProfDagNet`` runs the ops in order, like ``simple``, and records the wall time of every op;
``stats()`` reports it per op and per op type.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from caffe2.proto import caffe2_pb2
from caffe2.runtime.errors import EnforceError, OperatorFailed
from caffe2.runtime.net import NetBase, SimpleNet, register_net_type
from caffe2.runtime.operator import Operator

log = logging.getLogger("caffe2")

DEFAULT_NUM_WORKERS = max(2, min(4, os.cpu_count() or 2))

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(n_threads: int) -> ThreadPoolExecutor:
    """The shared pool with n_threads threads (threads start lazily, on demand)."""
    pool = _pools.get(n_threads)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(n_threads)
            if pool is None:
                pool = ThreadPoolExecutor(n_threads, thread_name_prefix=f"caffe2-dag{n_threads}")
                _pools[n_threads] = pool
    return pool


def _forget_pools() -> None:
    # A forked child inherits the pool objects but not their threads.
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def num_workers(netdef: caffe2_pb2.NetDef) -> int:
    """The worker count a dag net uses (see the module docstring)."""
    where = f"net '{netdef.name}'"
    args = [a for a in netdef.arg if a.name == "num_workers"]
    if len(args) > 1:
        raise EnforceError("Duplicated argument name num_workers in the net's arguments", where)
    if args:
        if not args[0].HasField("i"):
            raise EnforceError(
                "Argument num_workers does not have the right field: expected field i", where
            )
        n = args[0].i
    else:
        n = netdef.num_workers
    if n < 0:
        raise EnforceError(f"num_workers must not be negative, got {n}", where)
    return n or DEFAULT_NUM_WORKERS


def dependencies(ops: list[Operator], ws: Any) -> list[list[int]]:
    """For each op, the sorted indices of the earlier ops it must wait for."""
    last_writer: dict[Any, int] = {}
    readers: dict[Any, list[int]] = {}
    barrier = -1
    since_barrier: list[int] = []
    parents: list[list[int]] = []
    for i, op in enumerate(ops):
        deps: set[int] = set()
        if barrier >= 0:
            deps.add(barrier)
        if op.schema.needs_workspace:
            deps.update(since_barrier)
            barrier, since_barrier = i, []
            last_writer.clear()
            readers.clear()
            parents.append(sorted(deps))
            continue
        reads = list(op.inputs)
        for name in op.opdef.control_input:
            b = ws.get_blob(name)
            if b is not None:
                reads.append(b)
        for b in reads:
            w = last_writer.get(b)
            if w is not None:
                deps.add(w)
        for b in op.outputs:
            w = last_writer.get(b)
            if w is not None:
                deps.add(w)
            deps.update(readers.get(b, ()))
        for b in reads:
            readers.setdefault(b, []).append(i)
        for b in op.outputs:
            last_writer[b] = i
            readers[b] = []
        since_barrier.append(i)
        deps.discard(i)
        parents.append(sorted(deps))
    return parents


def _is_chain(parents: list[list[int]]) -> bool:
    """True when every op (transitively) depends on the one before it: no parallelism."""
    ancestors: list[int] = []
    for i, ps in enumerate(parents):
        a = 0
        for p in ps:
            a |= ancestors[p] | (1 << p)
        if i and not (a >> (i - 1)) & 1:
            return False
        ancestors.append(a)
    return True


@register_net_type("dag", "async_dag", "async_scheduling")
class DagNet(SimpleNet):
    """Runs independent operators in parallel, in dependency order; same results as simple."""

    def __init__(self, netdef: caffe2_pb2.NetDef, ws: Any) -> None:
        super().__init__(netdef, ws)
        self.num_workers = num_workers(netdef)
        parents = dependencies(self.ops, ws)
        self.parents = parents
        children: list[list[int]] = [[] for _ in parents]
        for i, ps in enumerate(parents):
            for p in ps:
                children[p].append(i)
        self._children = tuple(tuple(c) for c in children)
        self._n_parents = tuple(len(ps) for ps in parents)
        self._roots = tuple(i for i, ps in enumerate(parents) if not ps)
        self._sequential = self.num_workers <= 1 or _is_chain(parents)

    def run(self) -> bool:
        if self._sequential:
            return super().run()
        state = _DagRun(self, _pool(self.num_workers - 1), self.num_workers - 1)
        try:
            state.run_in_caller()
        except BaseException:  # interrupted while waiting: let running ops finish first
            state.abort()
            raise
        if not state.failures:
            return True
        for _, cause in state.failures:
            if not isinstance(cause, Exception):  # KeyboardInterrupt, SystemExit: as they are
                raise cause
        i, cause = min(state.failures, key=lambda f: f[0])
        op = self.ops[i]
        if isinstance(cause, OperatorFailed):
            self.ws.last_failed_op_net_position = op.index
            log.error("Operator failed: %s", op.where)
            return False
        raise self._fail(op, cause) from cause

    def stats(self) -> dict | None:
        """Only prof_dag records statistics."""
        return None


class _DagRun:
    """The scheduling state of one DagNet.run: pending counts, the ready queue, failures."""

    def __init__(self, net: DagNet, pool: ThreadPoolExecutor, max_helpers: int) -> None:
        self.kernels = net._kernels
        self.children = net._children
        self.pending = list(net._n_parents)
        self.ready = deque(net._roots)
        self.left = len(self.kernels)
        self.cond = threading.Condition(threading.Lock())
        self.running = 0  # ops running in helpers (the caller's own op is not counted)
        self.helpers = 0  # helper tasks submitted and not yet finished
        self.max_helpers = max_helpers
        self.pool = pool
        self.stopped = False
        self.failures: list[tuple[int, BaseException]] = []

    def _spawn_helpers(self) -> None:
        """Submit helpers for the ready ops nobody has taken (lock held)."""
        want = min(len(self.ready), self.max_helpers - self.helpers)
        for _ in range(want):
            try:
                self.pool.submit(self._help)
            except RuntimeError:  # interpreter shutting down: the caller does the work
                return
            self.helpers += 1

    def _exec(self, i: int) -> BaseException | None:
        try:
            self.kernels[i]()
        except BaseException as e:
            return e
        return None

    def _finish(self, i: int, err: BaseException | None) -> None:
        """Record op i's outcome and release its children (lock held)."""
        if err is not None:
            self.failures.append((i, err))
            self.stopped = True
            self.ready.clear()
            return
        self.left -= 1
        pending = self.pending
        for c in self.children[i]:
            pending[c] -= 1
            if pending[c] == 0:
                self.ready.append(c)

    def _help(self) -> None:
        cond = self.cond
        while True:
            with cond:
                if self.stopped or not self.ready:
                    self.helpers -= 1
                    return
                i = self.ready.popleft()
                self.running += 1
                self._spawn_helpers()
            err = self._exec(i)
            with cond:
                self.running -= 1
                self._finish(i, err)
                cond.notify()

    def run_in_caller(self) -> None:
        """Run ops in the calling thread until every op ran or one failed, and helpers idle."""
        cond = self.cond
        while True:
            with cond:
                while True:
                    if self.stopped or self.left == 0:
                        while self.running:
                            cond.wait()
                        return
                    if self.ready:
                        i = self.ready.popleft()
                        self._spawn_helpers()
                        break
                    cond.wait()
            err = self._exec(i)
            with cond:
                self._finish(i, err)

    def abort(self) -> None:
        """Stop scheduling and wait for the ops helpers are running."""
        with self.cond:
            self.stopped = True
            self.ready.clear()
            while self.running:
                self.cond.wait()


@register_net_type("prof_dag")
class ProfDagNet(NetBase):
    """Runs the operators in order, like simple, timing each one (``stats()``)."""

    def __init__(self, netdef: caffe2_pb2.NetDef, ws: Any) -> None:
        super().__init__(netdef, ws)
        self._kernels = tuple(op.kernel for op in self.ops)
        self._lock = threading.Lock()
        self.reset_stats()

    def reset_stats(self) -> None:
        """Forget every recorded time."""
        with self._lock:
            self._runs = 0
            self._count = [0] * len(self.ops)
            self._total = [0.0] * len(self.ops)

    def run(self) -> bool:
        clock = time.perf_counter
        times: list[float] = []
        ok = False
        try:
            for i, k in enumerate(self._kernels):
                t0 = clock()
                try:
                    k()
                except OperatorFailed:
                    op = self.ops[i]
                    self.ws.last_failed_op_net_position = op.index
                    log.error("Operator failed: %s", op.where)
                    return False
                except Exception as e:
                    raise self._fail(self.ops[i], e) from e
                times.append(clock() - t0)
            ok = True
            return True
        finally:
            self._record(times, ok)

    def _record(self, times: list[float], ok: bool) -> None:
        with self._lock:
            count, total = self._count, self._total
            for i, dt in enumerate(times):
                count[i] += 1
                total[i] += dt
            self._runs += ok

    def stats(self) -> dict:
        """Wall time of the completed op runs, per op and per op type, in seconds.

        ``{"net", "runs", "ops": [{"index", "type", "name", "count", "total_seconds",
        "mean_seconds"}], "types": {type: {"count", "total_seconds", "mean_seconds"}}}``;
        ``runs`` counts the runs that completed.
        """
        with self._lock:
            counts, totals, runs = list(self._count), list(self._total), self._runs
        ops = []
        types: dict[str, dict[str, Any]] = {}
        for op, c, t in zip(self.ops, counts, totals, strict=True):
            ops.append(
                {
                    "index": op.index,
                    "type": op.type,
                    "name": op.opdef.name,
                    "count": c,
                    "total_seconds": t,
                    "mean_seconds": t / c if c else 0.0,
                }
            )
            agg = types.setdefault(op.type, {"count": 0, "total_seconds": 0.0})
            agg["count"] += c
            agg["total_seconds"] += t
        for agg in types.values():
            agg["mean_seconds"] = agg["total_seconds"] / agg["count"] if agg["count"] else 0.0
        return {"net": self.name, "runs": runs, "ops": ops, "types": types}
