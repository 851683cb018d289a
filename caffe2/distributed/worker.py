"""What runs inside a node's Ray actor: one Caffe2 node's global workspace and its plan runs.

:class:`NodeWorker` is a plain class (the session wraps it with ``ray.remote``), so its logic
does not depend on Ray. It owns a named workspace, made current in its process, for the life
of the actor. ``run_plan`` deserializes a PlanDef sent as bytes and runs it with the runtime's
plan executor, exactly as ``LocalSession`` does in-process; failures come back as plain data
(never as exceptions), so the driver can always say which node, step, net and op failed.

Python ops: functions the driver could pickle arrive as cloudpickle bytes and are registered
in this process's Python op registry under the driver's token. A function that cannot be
pickled (it holds a lock, the session, ...) gets a stub here that calls back to the driver:
the stub queues a request that the driver collects with ``next_request`` and answers with
``reply``; while it waits, the driver may look at the op's workspace with ``ws_call``. The
actor is threaded, so these calls are served while the plan runs.
"""

from __future__ import annotations

import itertools
import os
import pickle
import sys
import threading
import time
import traceback
from typing import Any

import numpy as np

from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import type_name
from caffe2.runtime.errors import EnforceError, exception_chain

# Status values of run_plan's result.
OK = "ok"
FAILED = "failed"  # the plan raised (an op, a step, net creation ...)
BAD_PLAN = "bad_plan"  # the plan bytes did not deserialize
BAD_PYTHON_OP = "bad_python_op"  # a shipped Python op function did not load

# How a Python op token travels: its function pickled, or "call the driver".
SHIP = "ship"
DRIVER = "driver"


def exception_text(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()


def describe_failure(exc: BaseException) -> dict[str, Any]:
    """The picklable facts about a failed plan run: message, where, and traceback."""
    facts: dict[str, Any] = {
        "message": str(exc) or type(exc).__name__,
        "type": type(exc).__name__,
        "traceback": exception_text(exc),
        "net_name": None,
        "op_index": None,
        "op_type": None,
        "caffe2_step": None,
    }
    for e in exception_chain(exc):
        for key, attr in (
            ("net_name", "net_name"),
            ("op_index", "op_index"),
            ("op_type", "op_type"),
            ("caffe2_step", "caffe2_step"),
        ):
            v = getattr(e, attr, None)
            if facts[key] is None and isinstance(v, str | int) and not isinstance(v, bool):
                facts[key] = v
    return facts


def fetchable(value: Any) -> tuple[str, Any]:
    """("v", a copy) for a tensor or string blob, else ("e", why it cannot be fetched)."""
    if isinstance(value, np.ndarray):
        return ("v", value.copy())
    if isinstance(value, bytes):
        return ("v", value)
    if value is None:
        return ("e", "the blob was never written (it holds nothing)")
    return ("e", f"Could not fetch for blob of type: {type_name(value)}")


class _DriverCall:
    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: Any = None


class NodeWorker:
    """One Caffe2 node: its global workspace and the plans run in it."""

    def __init__(self, node: str, sys_path: list[str] | tuple[str, ...] = ()) -> None:
        # Let functions pickled by reference find the driver's modules (a local cluster
        # shares the file system; paths that do not exist here are skipped).
        for p in sys_path:
            if isinstance(p, str) and p and p not in sys.path and os.path.isdir(p):
                sys.path.append(p)
        from caffe2.python import workspace
        from caffe2.runtime import pybind_state as C

        self._C = C
        self._workspace_module = workspace
        self.node = node
        workspace.SwitchWorkspace(f"caffe2py-node:{node}", True)
        self._cws = workspace.C.Workspace.current
        self._ws = C.runtime_workspace_of(self._cws)
        self._lock = threading.Lock()
        self._stops: dict[str, threading.Event] = {}
        self._functions: dict[str, tuple[str, Any]] = {}  # token -> (how, version)
        # Calls of driver-side ops, tagged with the run that made them: a driver's poll
        # left over from an earlier run never takes a request of a later one.
        self._run_id: str | None = None
        self._requests: list[dict[str, Any]] = []
        self._requests_cv = threading.Condition(threading.Lock())
        self._calls: dict[int, _DriverCall] = {}
        self._call_ids = itertools.count(1)
        self._views: dict[str, Any] = {}  # workspace views lent to driver-side ops

    # ---- identity ------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        info = {"pid": os.getpid(), "node": self.node, "ray_node": None}
        try:
            import ray

            info["ray_node"] = ray.get_runtime_context().get_node_id()
        except Exception:  # pragma: no cover - outside Ray
            pass
        return info

    # ---- plans ---------------------------------------------------------------------------
    def run_plan(
        self,
        run_id: str,
        plan_bytes: bytes,
        output_names: list[str],
        python_ops: dict[str, tuple[str, Any, bytes | None, bool]],
    ) -> dict[str, Any]:
        """Run one node's plan in the node's global workspace; never raises."""
        try:
            if not isinstance(plan_bytes, bytes | bytearray):
                raise TypeError(f"expected the plan as bytes, got {type(plan_bytes).__name__}")
            plan = caffe2_pb2.PlanDef.FromString(bytes(plan_bytes))
        except Exception as e:
            return {"status": BAD_PLAN, **describe_failure(e)}
        failed = self._install_python_ops(python_ops)
        if failed is not None:
            return failed
        with self._lock:
            stop = self._stops.setdefault(run_id, threading.Event())
            self._run_id = run_id
        try:
            for name in output_names:  # outputs belong to the global workspace (as locally)
                self._ws.create_blob(name)
            if stop.is_set():
                return {"status": OK, "outputs": {}, "stopped": True}
            if not self._ws.run_plan(plan, lambda _i: not stop.is_set()):
                raise EnforceError(f"Error running plan {plan.name}")
            outputs = {}
            for name in output_names:
                blob = self._ws.get_blob(name)
                outputs[name] = fetchable(blob.value if blob is not None else None)
            return {"status": OK, "outputs": outputs, "stopped": stop.is_set()}
        except BaseException as e:
            return {"status": FAILED, **describe_failure(e)}
        finally:
            with self._lock:
                self._stops.pop(run_id, None)

    def stop(self, run_id: str) -> None:
        """Tell the plans of run ``run_id`` to start no new iteration, and release any op
        waiting for the driver."""
        with self._lock:
            self._stops.setdefault(run_id, threading.Event()).set()
            calls = list(self._calls.items())
        for _, call in calls:
            call.result = {"ok": False, "error": "the run was stopped by the driver"}
            call.event.set()

    # ---- Python ops ----------------------------------------------------------------------
    def _install_python_ops(self, python_ops) -> dict[str, Any] | None:
        from caffe2.operators import python_ops as registry

        for token, (how, version, payload, pass_workspace) in python_ops.items():
            if self._functions.get(token) == (how, version):
                continue
            if how == SHIP:
                try:
                    func = pickle.loads(payload)
                    if not callable(func):
                        raise TypeError(f"the shipped object is a {type(func).__name__}")
                except Exception as e:
                    return {
                        "status": BAD_PYTHON_OP,
                        "token": token,
                        **describe_failure(e),
                    }
            else:
                func = self._driver_stub(token)
            registry.register_python_op_as(token, func, bool(pass_workspace))
            self._functions[token] = (how, version)
        return None

    def _driver_stub(self, token: str):
        worker = self

        def call_driver(inputs, outputs, ws=None):
            return worker._call_driver(token, inputs, outputs, ws)

        call_driver.__name__ = f"driver_call[{token}]"
        return call_driver

    def _call_driver(self, token, inputs, outputs, ws) -> None:
        call_id = next(self._call_ids)
        view = None
        if ws is not None:
            view = f"{self.node}:{call_id}"
            self._views[view] = self._C.runtime_workspace_of(ws)
        call = _DriverCall()
        with self._lock:
            self._calls[call_id] = call
        try:
            request = {
                "id": call_id,
                "run": self._run_id,
                "token": token,
                "inputs": [t.fetch() for t in inputs],
                "outputs": [t.fetch() for t in outputs],
                "view": view,
            }
            with self._requests_cv:
                self._requests.append(request)
                self._requests_cv.notify_all()
            call.event.wait()
        finally:
            with self._lock:
                self._calls.pop(call_id, None)
            if view is not None:
                self._views.pop(view, None)
        result = call.result
        if not result.get("ok"):
            raise RuntimeError(f"(run on the driver) {result.get('error')}")
        values = result["outputs"]
        if len(values) != len(outputs):
            raise RuntimeError(
                f"the driver returned {len(values)} outputs for {len(outputs)} output blobs"
            )
        for t, v in zip(outputs, values, strict=True):
            t.feed(np.asarray(v))

    def next_request(self, run_id: str, timeout: float) -> dict[str, Any] | None:
        """The next call a driver-side Python op of run ``run_id`` waits for, or None after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._requests_cv:
            while True:
                for i, request in enumerate(self._requests):
                    if request["run"] == run_id:
                        return self._requests.pop(i)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._requests_cv.wait(remaining)

    def reply(self, call_id: int, result: dict[str, Any]) -> None:
        with self._lock:
            call = self._calls.get(call_id)
        if call is not None:
            call.result = result
            call.event.set()

    def ws_call(self, view: str, method: str, name: str | None = None, value: Any = None):
        """A driver-side op looks at the workspace it runs in (blob names, fetch, feed)."""
        ws = self._views.get(view)
        if ws is None:
            raise RuntimeError(f"workspace view {view} is gone (the op has returned)")
        return self._blob_call(ws, method, name, value)

    # ---- the node's global workspace -----------------------------------------------------
    def blob_call(self, method: str, name: str | None = None, value: Any = None):
        return self._blob_call(self._ws, method, name, value)

    def _blob_call(self, ws, method, name, value):
        if method == "names":
            return ("v", list(ws.blobs()))
        if method == "has":
            return ("v", ws.has_blob(name))
        if method == "fetch":
            blob = ws.get_blob(name)
            if blob is None:
                return ("missing", f"blob '{name}' does not exist")
            return fetchable(blob.value)
        if method == "feed":
            blob = ws.create_blob(name)
            try:
                wrapped = self._C.Blob(blob, name)
                feed = getattr(wrapped, "feed", None) or wrapped._feed
                feed(value)
            except Exception as e:
                return ("e", f"{type(e).__name__}: {e}")
            return ("v", True)
        if method == "remove":
            return ("v", ws.remove_blob(name))
        raise ValueError(f"unknown workspace call {method!r}")
