"""Python ops of a DistributedSession: shipping their functions, or running them on the driver.

A function registered on the driver is pickled with cloudpickle and registered on the node
under the same token; one that does not pickle runs on the driver, called back from the node
(:meth:`_PythonOpShipping._serve`), with a :class:`_DriverWorkspaceView` of its remote
workspace when it wants one.
"""

from __future__ import annotations

import logging

import numpy as np
import ray

from caffe2.distributed import worker as _worker
from caffe2.distributed._nodes import _Actor

log = logging.getLogger("caffe2.distributed")


class _ViewBlob:
    """A blob of the remote workspace a driver-side Python op runs in."""

    def __init__(self, view, name):
        self._view = view
        self._name = name

    def fetch(self):
        return self._view.fetch_blob(self._name)

    def feed(self, value, device_option=None):
        return self._view.feed_blob(self._name, value)

    _feed = feed

    def __repr__(self):
        return f"<remote blob {self._name} of node '{self._view.node}'>"


class _DriverWorkspaceView:
    """What a driver-side Python op with ``pass_workspace=True`` gets: the workspace it runs in
    on its node, reached by calls to the node's actor (blobs, fetch_blob, feed_blob...)."""

    def __init__(self, session, actor, key, node):
        self._session = session
        self._actor = actor
        self._key = key
        self.node = node

    def _call(self, method, name=None, value=None):
        ref = self._actor.handle.ws_call.remote(self._key, method, name, value)
        return self._session._result(ref, self.node, name or "*", f"{method} blob")

    @property
    def blobs(self):
        return {n: _ViewBlob(self, n) for n in self._call("names")}

    def has_blob(self, name):
        return self._call("has", name)

    def fetch_blob(self, name):
        return self._call("fetch", name)

    def feed_blob(self, name, value, device_option=None):
        return self._call("feed", name, value)

    def create_blob(self, name):
        return _ViewBlob(self, name)

    def __repr__(self):
        return f"<workspace of a Python op on node '{self.node}' (remote)>"


class _PythonOpShipping:
    """The Python-op methods of DistributedSession (it sets ``_pickles`` and ``_versions``
    and provides ``_result``)."""

    def _payload(self, key: str, pf) -> tuple[str, int, bytes | None]:
        cached = self._pickles.get(key)
        if cached is not None and cached[0] is pf:
            return cached[1]
        try:
            how, data = _worker.SHIP, ray.cloudpickle.dumps(pf.func)
        except Exception as e:
            log.info("Python op %s runs on the driver: its function does not pickle (%s)", key, e)
            how, data = _worker.DRIVER, None
        payload = (how, next(self._versions), data)
        self._pickles[key] = (pf, payload)
        return payload

    def _python_ops_for(self, actor: _Actor, keys) -> dict[str, tuple]:
        from caffe2.operators import python_ops as registry

        out = {}
        for key in keys:
            pf = registry.find_python_op(key)
            if pf is None:  # the node reports it as not available, with Caffe2's message
                continue
            how, version, data = self._payload(key, pf)
            if actor.functions.get(key) != (how, version):
                out[key] = (how, version, data, pf.pass_workspace)
        return out

    def _serve(self, actor: _Actor, node: str, request: dict) -> None:
        """Run a driver-side Python op for a node and send the result back."""
        from caffe2.operators import python_ops as registry
        from caffe2.runtime.blob import Blob
        from caffe2.runtime.tensor import TensorCPU

        key = request["token"]
        pf = registry.find_python_op(key)
        try:
            if pf is None:
                raise RuntimeError(f"Python operator for {key} is no longer registered")
            ins = [TensorCPU(Blob(np.array(v, copy=True))) for v in request["inputs"]]
            out_blobs = [Blob(np.array(v, copy=True)) for v in request["outputs"]]
            outs = [TensorCPU(b) for b in out_blobs]
            if pf.pass_workspace:
                view = _DriverWorkspaceView(self, actor, request["view"], node)
                pf.func(ins, outs, view)
            else:
                pf.func(ins, outs)
            result = {"ok": True, "outputs": [b.value for b in out_blobs]}
        except Exception as e:
            result = {"ok": False, "error": _worker.exception_text(e)}
        actor.handle.reply.remote(request["id"], result)
