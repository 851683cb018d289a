"""The run loop of a DistributedSession and the attribution of its failures.

:class:`_RunLoop` (a base of :class:`caffe2.distributed.session.DistributedSession`) starts
every node's plan on its actor, waits for them while serving driver-side Python ops and
watching the nodes' health (heartbeats, actor deaths), stops the other nodes after a failure,
and turns what went wrong into one error; :class:`_DistributedAttribution` names the task,
step and net of a failure on a node.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

import numpy as np
import ray

from caffe2.distributed import worker as _worker
from caffe2.distributed._nodes import _ACTOR_LOST, _Actor
from caffe2.distributed.compile import DistributedPlan, NodePlan
from caffe2.distributed.errors import (
    BlobTransferError,
    DistributedSessionError,
    NodeLostError,
    PlanTransferError,
    PythonOpTransferError,
    RemoteFailure,
)
from caffe2.python import core, workspace
from caffe2.python.session import TaskError, _Attribution


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


class _RunLoop:
    """The running methods of DistributedSession (it provides ``_host_of``,
    ``_ensure_actors``, ``_forget``, ``_python_ops_for``, ``_serve``, ``_actors``,
    ``_pickles`` and the timeouts)."""

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
