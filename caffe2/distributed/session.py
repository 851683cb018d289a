"""DistributedSession: a Session whose Caffe2 nodes are long-lived Ray actors.

One engine, many front doors: a TaskGroup is compiled per node exactly as
``TaskGroup.tasks_by_node`` defines (``caffe2.distributed.compile``), each node's plan travels
as PlanDef bytes to that node's actor, and the actor runs it with the runtime plan executor in
the node's global workspace (``caffe2.distributed.worker``), as LocalSession runs its plan
in-process.

The session's methods come from three bases, one per responsibility: ``_nodes`` (node
actors and their placement), ``_driver_ops`` (Python ops: shipping or serving them) and
``_run_loop`` (running the plans, watching the nodes, attributing failures).
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import ray

from caffe2.distributed import _ray
from caffe2.distributed._driver_ops import (  # noqa: F401 - re-exported
    _DriverWorkspaceView,
    _PythonOpShipping,
    _ViewBlob,
)
from caffe2.distributed._nodes import (  # noqa: F401 - re-exported
    _ACTOR_LOST,
    PLACEMENT_KEYS,
    _Actor,
    _NodeActor,
    _NodeActors,
)
from caffe2.distributed._run_loop import (  # noqa: F401 - re-exported
    _DistributedAttribution,
    _RunLoop,
    _Tasks,
)
from caffe2.distributed.compile import compile_task_group
from caffe2.distributed.errors import (
    BlobTransferError,
    DistributedSessionError,
    NodeLostError,
)
from caffe2.python.session import Session

__all__ = ["DistributedSession", "PLACEMENT_KEYS"]

log = logging.getLogger("caffe2.distributed")


class DistributedSession(_NodeActors, _PythonOpShipping, _RunLoop, Session):
    """A Session whose Caffe2 nodes run concurrently, each in its own Ray actor.

    ``DistributedSession(address=None, *, placement=None, node_remap=None, ...)`` connects to
    the Ray cluster at ``address`` ('host:port' of its GCS, 'auto', or 'ray://...'), or, with
    no address, uses the Ray instance this process is connected to, or starts a local one
    (no dashboard, a capped object store; it stays up for later sessions until
    ``ray.shutdown()``).

    Nodes: each Caffe2 node of a runnable becomes one long-lived named Ray actor
    (``caffe2py/<session id>/<node>`` in namespace ``namespace``) that owns the node's global
    workspace for the life of the session; ``close()`` ends them. Where an actor goes is
    decided by a placement rule: the node's kwargs (``Node('trainer', resources={'trainer':
    1})``) updated by the session's ``placement`` (a mapping node name -> rule, or a callable
    ``(node, node_kwargs) -> rule``). A rule may give ``resources`` (Ray custom resources the
    node needs), ``labels`` (a Ray label selector), ``num_cpus`` (default 0: the actor reserves
    no CPU), ``node_id`` (a Ray node id, hard affinity) and ``ray_options`` (any other actor
    options). No rule: anywhere. A rule no live Ray node satisfies raises PlacementError
    before anything runs; an actor not started within ``placement_timeout`` seconds too.
    ``node_remap`` (callable or mapping) lets several Caffe2 nodes share one actor and so
    one workspace, as LocalSession puts every node in one workspace.

    Running: ``setup_net_list`` (Nets or NetDefs) runs on the driver, in its current
    workspace, before every run of the plan. All nodes' plans start concurrently; ``run``
    returns when the last one finishes. Per node the LocalSession semantics hold: GLOBAL tasks
    run in the node's workspace, PRIVATE tasks in a child of it, tasks of one node share it,
    output blobs are created in it. Nodes never see each other's blobs. Task outputs come back
    to the driver with the run: ``TaskOutput.fetch()`` returns copies of the values they had
    when the run ended (a blob that is not a tensor or a string raises BlobTransferError when
    fetched, as LocalSession's fetch refuses it).

    Python ops travel with their functions: a function registered on the driver is pickled
    with cloudpickle (captured objects are copied into the node) and registered on the node
    under the same token. A function that cannot be pickled (it holds a lock, an event, the
    session...) runs on the driver instead, called back from the node with copies of its
    input and output tensors; with ``pass_workspace`` it gets a view of its remote workspace.

    Failures: an op that fails on a node makes ``run`` raise one TaskError naming node, task,
    step, net and op, with the remote traceback; the other nodes are told to start no new
    iteration of any step and are waited for (at most ``stop_timeout`` s; a node that does not
    stop by then is restarted and reported). A node whose process dies is reported within
    seconds (Ray's actor-death notice, or no answer to a heartbeat for ``heartbeat_timeout``
    s) as NodeLostError: its global workspace is gone and the next run starts it again,
    empty. A failed run leaves the session open.

    Inspecting a node's global workspace: ``fetch_blob``, ``feed_blob``, ``has_blob``,
    ``blob_names``, ``remove_blob`` (each takes the Caffe2 node name; default 'local').
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        placement: Mapping[str, Mapping[str, Any]] | Callable | None = None,
        node_remap: Mapping[str, str] | Callable[[str], str] | None = None,
        namespace: str = "caffe2py",
        ray_init_kwargs: dict | None = None,
        connect_timeout: float = 10.0,
        placement_timeout: float = 30.0,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        call_timeout: float = 120.0,
    ):
        Session.__init__(self)
        self._address = _ray.connect(address, ray_init_kwargs, connect_timeout)
        self._placement = placement
        self._node_remap = node_remap
        self._namespace = namespace
        self._placement_timeout = placement_timeout
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._stop_timeout = stop_timeout
        self._call_timeout = call_timeout
        self._id = uuid.uuid4().hex[:12]
        self._actors: dict[str, _Actor] = {}
        self._incarnations: dict[str, int] = {}
        self._actors_lock = threading.RLock()
        self._pickles: dict[str, tuple[Any, tuple[str, int, bytes | None]]] = {}
        self._versions = itertools.count(1)

    def __reduce__(self):
        raise TypeError(
            "A DistributedSession cannot be pickled or sent to a node: it lives on the driver. "
            "(A Python op that uses it runs on the driver.)"
        )

    def __repr__(self):
        return (
            f"DistributedSession(id={self._id!r}, address={self._address!r}, "
            f"nodes={sorted(self._actors)}, open={self._open})"
        )

    @property
    def address(self) -> str | None:
        """The GCS address of the Ray cluster this session runs on."""
        return self._address

    # ---- compilation ---------------------------------------------------------------------
    @classmethod
    def _compile_task_group(cls, task_group, setup_net_list=None):
        return compile_task_group(task_group, setup_net_list)

    @classmethod
    def _attribution_for(cls, task_group, compiled_obj):
        return _DistributedAttribution(compiled_obj)

    # ---- a node's global workspace -------------------------------------------------------
    def _result(self, ref, node: str, blob: str, what: str):
        try:
            kind, value = ray.get(ref, timeout=self._call_timeout)
        except ray.exceptions.GetTimeoutError as e:
            raise DistributedSessionError(
                f"Node '{node}' did not answer ({what} '{blob}') within {self._call_timeout:g} s",
                node,
            ) from e
        except _ACTOR_LOST as e:
            host = self._host_of(node)
            self._forget(host)
            raise NodeLostError(
                f"Node '{node}' was lost ({type(e).__name__}: {e}). Its global workspace is "
                "gone; it starts again with an empty workspace when next used.",
                node=node,
            ) from e
        if kind == "v":
            return value
        if kind == "missing":
            raise KeyError(f"Node '{node}': {value}")
        raise BlobTransferError(f"Cannot {what} '{blob}' on node '{node}': {value}", node, blob)

    def fetch_blob(self, name: str, node: str = "local") -> Any:
        """A copy of the tensor or string blob ``name`` of ``node``'s global workspace."""
        actor = self._actor_for(str(node))
        return self._result(actor.handle.blob_call.remote("fetch", str(name)), node, name, "fetch")

    def feed_blob(self, name: str, value: Any, node: str = "local") -> bool:
        """Feed ``value`` (a NumPy array, bytes or str) to blob ``name`` of ``node``."""
        actor = self._actor_for(str(node))
        try:
            ref = actor.handle.blob_call.remote("feed", str(name), value)
        except Exception as e:
            raise BlobTransferError(
                f"Cannot send blob '{name}' to node '{node}': its value "
                f"({type(value).__name__}) does not pickle: {type(e).__name__}: {e}",
                node,
                str(name),
            ) from e
        return self._result(ref, node, name, "feed")

    def has_blob(self, name: str, node: str = "local") -> bool:
        actor = self._actor_for(str(node))
        return self._result(actor.handle.blob_call.remote("has", str(name)), node, name, "find")

    def remove_blob(self, name: str, node: str = "local") -> bool:
        actor = self._actor_for(str(node))
        return self._result(
            actor.handle.blob_call.remote("remove", str(name)), node, name, "remove"
        )

    def blob_names(self, node: str = "local") -> list[str]:
        """The blob names of ``node``'s global workspace."""
        actor = self._actor_for(str(node))
        return self._result(actor.handle.blob_call.remote("names"), node, "*", "list")

    # ---- closing -------------------------------------------------------------------------
    def _do_close(self):
        with self._actors_lock:
            actors = list(self._actors.values())
            self._actors.clear()
        for actor in actors:
            self._kill(actor)
