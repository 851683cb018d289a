"""Node actors of a DistributedSession: where each goes (placement) and their lifecycle.

Every Caffe2 node of a runnable (after ``node_remap``: every host) gets one long-lived named
Ray actor running :class:`caffe2.distributed.worker.NodeWorker`. :class:`_NodeActors` (a base
of :class:`caffe2.distributed.session.DistributedSession`) turns each node's placement rule
into Ray actor options, checks that a live Ray node can host it, starts the actors
concurrently and kills them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from caffe2.distributed import worker as _worker
from caffe2.distributed.errors import DistributedSessionError, PlacementError

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


class _NodeActors:
    """The node-actor methods of DistributedSession. The session sets ``_placement``,
    ``_node_remap``, ``_namespace``, ``_placement_timeout``, ``_id``, ``_actors`` (host ->
    _Actor), ``_incarnations`` and ``_actors_lock``."""

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
