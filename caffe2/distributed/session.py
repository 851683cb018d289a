"""DistributedSession: a Session whose Caffe2 nodes are long-lived Ray actors.

One engine, many front doors: a TaskGroup is compiled per node exactly as
``TaskGroup.tasks_by_node`` defines (``caffe2.distributed.compile``), each node's plan travels
as PlanDef bytes to that node's actor, and the actor runs it with the runtime plan executor in
the node's global workspace (``caffe2.distributed.worker``), as LocalSession runs its plan
in-process.
"""

from __future__ import annotations

import copy
import itertools
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from caffe2.distributed import _ray
from caffe2.distributed import worker as _worker
from caffe2.distributed.compile import DistributedPlan, NodePlan, compile_task_group
from caffe2.distributed.errors import (
    BlobTransferError,
    DistributedSessionError,
    NodeLostError,
    PlacementError,
    PlanTransferError,
    PythonOpTransferError,
    RemoteFailure,
)
from caffe2.python import core, workspace
from caffe2.python.session import Session, TaskError, _Attribution

__all__ = ["DistributedSession", "PLACEMENT_KEYS"]

log = logging.getLogger("caffe2.distributed")

#: What a placement rule (Node kwargs, or the session's ``placement``) may say about a node.
PLACEMENT_KEYS = ("resources", "labels", "num_cpus", "node_id", "ray_options")

_NodeActor = ray.remote(_worker.NodeWorker)

_ACTOR_LOST = (ray.exceptions.RayActorError,)
if hasattr(ray.exceptions, "ActorUnavailableError"):
    _ACTOR_LOST += (ray.exceptions.ActorUnavailableError,)


@dataclass
class _Actor:
    """A live node actor of this session."""

    host: str
    name: str
    handle: Any
    info: dict = field(default_factory=dict)
    functions: dict = field(default_factory=dict)  # token -> (how, version) it has

    def where(self) -> str:
        ray_node = self.info.get("ray_node") or "?"
        return f"Ray actor '{self.name}', pid {self.info.get('pid', '?')} on Ray node {ray_node}"


class _Tasks:
    """A task-group look-alike holding some tasks (for per-node failure attribution)."""

    def __init__(self, tasks):
        self._t = list(tasks)

    def tasks(self):
        return self._t


class _DistributedAttribution:
    """Names the task, step and net of a failure on a node (the LocalSession rules, applied
    to that node's tasks only); the distributed session's own errors pass through."""

    def __init__(self, dplan: DistributedPlan):
        all_tasks = dplan.task_group.tasks()
        self._general = _Attribution(dplan.task_group, [(n.step, n.node) for n in dplan.nodes])
        self._per_node = {
            n.node: (
                _Attribution(_Tasks(t for t in all_tasks if t.node == n.node), [(n.step, n.node)]),
                n.tasks,
            )
            for n in dplan.nodes
        }

    def error(self, exc, what):
        if isinstance(exc, DistributedSessionError | NodeLostError):
            return copy.copy(exc)
        node = getattr(exc, "node", None)
        if node not in self._per_node:
            return self._general.error(exc, what)
        attribution, tasks = self._per_node[node]
        err = attribution.error(exc, what)
        if err.node is None:
            names = ", ".join(f"'{t}'" for t in tasks) or "none"
            err = TaskError(
                f"Node '{node}' failed running {what}; the failure could not be traced to one "
                f"of its tasks ({names}):\n{exc}",
                node=node,
                cause=exc,
            )
        return err


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


class DistributedSession(Session):
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

    # ---- nodes ---------------------------------------------------------------------------
    def _host_of(self, node: str) -> str:
        remap = self._node_remap
        if remap is None:
            return node
        if callable(remap):
            return str(remap(node))
        return str(remap.get(node, node))

    def _rule(self, host: str, node: str, node_kwargs: Mapping[str, Any]) -> dict[str, Any]:
        rule = {k: node_kwargs[k] for k in PLACEMENT_KEYS if k in node_kwargs}
        given = self._placement
        if callable(given):
            extra = given(node, dict(node_kwargs)) or {}
        elif given is not None:
            extra = given.get(node) or given.get(host) or {}
        else:
            extra = {}
        unknown = sorted(set(extra) - set(PLACEMENT_KEYS))
        if unknown:
            raise PlacementError(
                f"The placement rule of node '{node}' has unknown keys {unknown}; a rule may "
                f"give {list(PLACEMENT_KEYS)}.",
                node,
            )
        rule.update(extra)
        return rule

    def _check_feasible(self, node: str, rule: dict[str, Any]) -> None:
        needs = dict(rule.get("resources") or {})
        if rule.get("num_cpus"):
            needs["CPU"] = rule["num_cpus"]
        labels = dict(rule.get("labels") or {})
        node_id = rule.get("node_id")
        if not (needs or labels or node_id):
            return
        alive = [n for n in ray.nodes() if n.get("Alive")]

        def fits(n):
            res = n.get("Resources") or {}
            if any(res.get(k, 0) < v for k, v in needs.items()):
                return False
            have = n.get("Labels") or {}
            for k, v in labels.items():  # exact values only; selector syntax is Ray's
                if isinstance(v, str) and v[:1] not in ("!",) and not v.startswith(("in(",)):
                    if have.get(k) != v:
                        return False
            return not node_id or n.get("NodeID") == node_id

        if not any(fits(n) for n in alive):
            summary = "; ".join(
                f"{n.get('NodeID', '?')[:12]}: resources "
                f"{ {k: v for k, v in (n.get('Resources') or {}).items() if ':' not in k} } "
                f"labels {n.get('Labels') or {}}"
                for n in alive
            )
            raise PlacementError(
                f"No Ray node can host Caffe2 node '{node}': it needs "
                f"{self._rule_text(rule)}, and none of the {len(alive)} live Ray node(s) has "
                f"that ({summary}).",
                node,
            )

    @staticmethod
    def _rule_text(rule) -> str:
        parts = [f"{k}={rule[k]!r}" for k in PLACEMENT_KEYS if rule.get(k)]
        return ", ".join(parts) or "nothing in particular"

    def _actor_options(self, host: str, rule: dict[str, Any]) -> dict[str, Any]:
        k = self._incarnations.get(host, 0) + 1
        self._incarnations[host] = k
        name = f"caffe2py/{self._id}/{host}" + (f"#{k}" if k > 1 else "")
        opts: dict[str, Any] = {
            "name": name,
            "namespace": self._namespace,
            "max_concurrency": 64,
            "max_restarts": 0,
            "max_task_retries": 0,
            "num_cpus": rule.get("num_cpus", 0),
        }
        if rule.get("resources"):
            opts["resources"] = dict(rule["resources"])
        if rule.get("labels"):
            opts["label_selector"] = dict(rule["labels"])
        if rule.get("node_id"):
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                rule["node_id"], soft=False
            )
        opts.update(rule.get("ray_options") or {})
        return opts

    def _ensure_actors(self, wanted: dict[str, tuple[str, Mapping[str, Any]]]) -> None:
        """Start the actor of every host in ``wanted`` (host -> (node, node kwargs)) that has
        none, concurrently, and wait until each answers (``placement_timeout``)."""
        starting = {}
        with self._actors_lock:
            for host, (node, kwargs) in wanted.items():
                if host in self._actors:
                    continue
                rule = self._rule(host, node, kwargs)
                self._check_feasible(node, rule)
                opts = self._actor_options(host, rule)
                try:
                    handle = _NodeActor.options(**opts).remote(host, list(sys.path))
                except Exception as e:
                    raise PlacementError(
                        f"Cannot create the Ray actor of node '{node}' "
                        f"({self._rule_text(rule)}): {type(e).__name__}: {e}",
                        node,
                    ) from e
                starting[host] = (_Actor(host, opts["name"], handle), node, rule)
        if not starting:
            return
        pings = {a.handle.ping.remote(): host for host, (a, _, _) in starting.items()}
        ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=self._placement_timeout)
        first_error = None
        for ref, host in pings.items():
            actor, node, rule = starting[host]
            if ref not in ready:
                self._kill(actor)
                first_error = first_error or PlacementError(
                    f"Node '{node}' did not start within {self._placement_timeout:g} s: no Ray "
                    f"node had room for its actor ({self._rule_text(rule)}).",
                    node,
                )
                continue
            try:
                actor.info = ray.get(ref)
            except Exception as e:
                self._kill(actor)
                first_error = first_error or DistributedSessionError(
                    f"The Ray actor of node '{node}' failed to start: {type(e).__name__}: {e}",
                    node,
                )
                continue
            with self._actors_lock:
                self._actors[host] = actor
        if first_error is not None:
            raise first_error

    def _actor_for(self, node: str) -> _Actor:
        host = self._host_of(node)
        with self._actors_lock:
            actor = self._actors.get(host)
        if actor is None:
            from caffe2.python.task import Cluster

            kwargs = Cluster.current().node_kwargs().get(node) or {}
            self._ensure_actors({host: (node, kwargs)})
            actor = self._actors[host]
        return actor

    def _kill(self, actor: _Actor) -> None:
        try:
            ray.kill(actor.handle, no_restart=True)
        except Exception:  # already gone
            pass

    def _forget(self, host: str) -> _Actor | None:
        with self._actors_lock:
            actor = self._actors.pop(host, None)
        if actor is not None:
            self._kill(actor)
        return actor

    def nodes(self) -> dict[str, dict[str, Any]]:
        """host -> {pid, ray_node, actor} of the node actors alive in this session."""
        with self._actors_lock:
            return {h: dict(a.info, actor=a.name) for h, a in self._actors.items()}

    # ---- Python ops ----------------------------------------------------------------------
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
            with registry._registry_lock:
                pf = registry._registry.get(key)
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
        with registry._registry_lock:
            pf = registry._registry.get(key)
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

    # ---- running -------------------------------------------------------------------------
    def _run_compiled(self, dplan: DistributedPlan):
        for netdef in dplan.setup_nets:
            try:
                workspace.RunNetOnce(netdef)
            except Exception as e:
                raise DistributedSessionError(
                    f"Setup net '{netdef.name}' failed on the driver: {e}"
                ) from e
        if not dplan.nodes:
            return
        hosts = {}
        wanted = {}
        for n in dplan.nodes:
            host = self._host_of(n.node)
            hosts[n.node] = host
            wanted.setdefault(host, (n.node, n.node_kwargs))
        self._ensure_actors(wanted)

        run_id = uuid.uuid4().hex
        runs: dict[Any, NodePlan] = {}
        actors = {host: self._actors[host] for host in wanted}
        payloads = {}
        for n in dplan.nodes:
            actor = actors[hosts[n.node]]
            if actor.host not in payloads:
                keys = [
                    k for m in dplan.nodes if hosts[m.node] == actor.host for k in m.python_tokens
                ]
                payloads[actor.host] = self._python_ops_for(actor, keys)
            ops = payloads[actor.host]
            ref = actor.handle.run_plan.remote(run_id, n.plan_bytes, n.output_names, ops)
            runs[ref] = n
        for host, ops in payloads.items():
            for key, (how, version, _, _) in ops.items():
                actors[host].functions[key] = (how, version)
        driver_ops = any(  # every registered token of the plans has its entry by now
            key in self._pickles and self._pickles[key][1][0] == _worker.DRIVER
            for n in dplan.nodes
            for key in n.python_tokens
        )
        results = self._wait(run_id, runs, actors, hosts, driver_ops)

        for n in dplan.nodes:
            store = results[n.node]["outputs"]
            refs = [core.BlobReference(name) for name in n.output_names]
            n.output_list.set_values(
                refs, _fetch_func=lambda ref, _n=n.node, _s=store: self._fetch_output(_n, _s, ref)
            )

    def _wait(self, run_id, runs, actors, hosts, driver_ops):
        """Wait for every node's plan; serve driver-side ops; watch the nodes' health."""
        pending = dict(runs)  # ref -> NodePlan
        results: dict[str, dict] = {}
        failures: list[BaseException] = []
        lost: dict[str, str] = {}  # host -> why
        polls: dict[Any, str] = {}
        pings: dict[str, tuple[Any, float]] = {}
        last_ping = dict.fromkeys(actors, time.monotonic())
        stop_deadline = None

        def pending_hosts():
            return {hosts[n.node] for n in pending.values()}

        def poll(host):
            polls[actors[host].handle.next_request.remote(run_id, 0.5)] = host

        if driver_ops:
            for host in actors:
                poll(host)

        while pending:
            wait_on = list(pending) + list(polls) + [p for p, _ in pings.values()]
            ready, _ = ray.wait(wait_on, num_returns=1, timeout=self._heartbeat_interval / 2)
            now = time.monotonic()
            for ref in ready:
                if ref in pending:
                    n = pending.pop(ref)
                    host = hosts[n.node]
                    try:
                        res = ray.get(ref)
                    except _ACTOR_LOST as e:
                        lost.setdefault(host, f"{type(e).__name__}: {e}")
                        continue
                    except Exception as e:  # a bug of the worker itself
                        failures.append(
                            RemoteFailure(
                                f"{type(e).__name__}: {e}", node=n.node, remote_traceback=str(e)
                            )
                        )
                        continue
                    results[n.node] = res
                    err = self._result_error(n, actors[host], res)
                    if err is not None:
                        failures.append(err)
                elif ref in polls:
                    host = polls.pop(ref)
                    if host in lost:
                        continue
                    try:
                        request = ray.get(ref)
                    except _ACTOR_LOST as e:
                        lost.setdefault(host, f"{type(e).__name__}: {e}")
                        continue
                    if request is not None:
                        node = next((n.node for n in runs.values() if hosts[n.node] == host), host)
                        self._serve(actors[host], node, request)
                    if host in pending_hosts():
                        poll(host)
                else:
                    host = next(h for h, (p, _) in pings.items() if p == ref)
                    del pings[host]
                    try:
                        ray.get(ref)
                    except _ACTOR_LOST as e:
                        lost.setdefault(host, f"{type(e).__name__}: {e}")
            # Heartbeats: every node still running answers a ping within heartbeat_timeout.
            for host in pending_hosts() - set(lost):
                if host in pings:
                    if now - pings[host][1] > self._heartbeat_timeout:
                        lost[host] = (
                            f"it did not answer a heartbeat for {self._heartbeat_timeout:g} s"
                        )
                        del pings[host]
                elif now - last_ping[host] >= self._heartbeat_interval:
                    pings[host] = (actors[host].handle.ping.remote(), now)
                    last_ping[host] = now
            # A lost node's runs end now; its actor is gone for good.
            for ref, n in list(pending.items()):
                if hosts[n.node] in lost:
                    del pending[ref]
            if (failures or lost) and stop_deadline is None:
                stop_deadline = now + self._stop_timeout
                for host in pending_hosts() - set(lost):
                    actors[host].handle.stop.remote(run_id)
            if stop_deadline is not None and now > stop_deadline and pending:
                for host in pending_hosts():
                    lost.setdefault(
                        host,
                        f"it did not stop within {self._stop_timeout:g} s after another node "
                        "failed, so it was stopped by force",
                    )
                pending.clear()

        lost_errors = []
        for host, why in lost.items():
            actor = self._forget(host) or actors[host]
            nodes = [n for n in runs.values() if hosts[n.node] == host]
            names = ", ".join(f"'{n.node}'" for n in nodes)
            tasks = [t for n in nodes for t in n.tasks]
            lost_errors.append(
                NodeLostError(
                    f"Node {names} was lost during the run ({actor.where()}): {why}. Its global "
                    "workspace is gone; the next run starts the node again with an empty "
                    "workspace. Tasks it was running: "
                    + (", ".join(f"'{t}'" for t in tasks) or "none")
                    + ".",
                    node=nodes[0].node if nodes else host,
                    tasks=tasks,
                )
            )
        errors = failures + lost_errors
        if errors:
            first = errors[0]
            for other in errors[1:]:
                first.add_note(f"Also: {str(other).splitlines()[0]}")
            raise first
        return results

    def _result_error(self, n: NodePlan, actor: _Actor, res: dict) -> BaseException | None:
        status = res.get("status")
        if status == _worker.OK:
            return None
        where = f"{actor.where()}"
        if status == _worker.BAD_PLAN:
            return PlanTransferError(
                f"The plan '{n.plan_name}' of node '{n.node}' failed to deserialize on the "
                f"worker ({where}): {res['message']}",
                n.node,
            )
        if status == _worker.BAD_PYTHON_OP:
            actor.functions.clear()
            return PythonOpTransferError(
                f"The function of Python op '{res['token']}' could not be loaded on node "
                f"'{n.node}' ({where}): {res['message']}\nRemote traceback:\n{res['traceback']}",
                n.node,
                res["token"],
            )
        op = ""
        if res.get("op_type") is not None:
            op = f", op #{res.get('op_index')} ({res['op_type']}) of net '{res.get('net_name')}'"
        return RemoteFailure(
            f"{res['message']}\n(on node '{n.node}'{op}; {where})\n"
            f"Remote traceback:\n{res['traceback']}",
            node=n.node,
            net_name=res.get("net_name"),
            op_index=res.get("op_index"),
            op_type=res.get("op_type"),
            caffe2_step=res.get("caffe2_step"),
            remote_type=res.get("type"),
            remote_traceback=res.get("traceback", ""),
        )

    def _fetch_output(self, node: str, store: dict, ref) -> Any:
        name = str(ref)
        kind, value = store.get(name, ("e", "it is not an output of this run"))
        if kind != "v":
            raise BlobTransferError(
                f"Cannot fetch output blob '{name}' of node '{node}': {value}", node, name
            )
        return value.copy() if isinstance(value, np.ndarray) else value

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
