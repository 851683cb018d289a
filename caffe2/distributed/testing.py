"""Test helpers: a local Ray instance for tests, and the DistributedSession kind of the session
conformance suite (tests/python/test_session_conformance.py)."""

from __future__ import annotations

import os

import ray

from caffe2.distributed.session import DistributedSession

# A test instance: loopback only, no usage stats, no dashboard, a small object store, and
# no token authentication. Ray reads the auth mode once per process, so every test instance
# of a process (this one and the multi-node test cluster) must agree on it.
TEST_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
}
TEST_OBJECT_STORE_BYTES = 128 * 1024 * 1024

_started_here = False


def start_local_ray(num_cpus: int | None = None) -> bool:
    """Start a local single-node Ray instance for tests (reuse the connected one if any).

    Returns True when this call started it (then :func:`stop_local_ray` stops it).
    """
    global _started_here
    if ray.is_initialized():
        return False
    os.environ.update(TEST_ENV)
    ray.init(
        address="local",
        num_cpus=num_cpus or os.cpu_count() or 2,
        object_store_memory=TEST_OBJECT_STORE_BYTES,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="warning",
    )
    _started_here = True
    return True


def stop_local_ray() -> None:
    """Stop the instance :func:`start_local_ray` started (its processes end with it)."""
    global _started_here
    if _started_here and ray.is_initialized():
        ray.shutdown()
    _started_here = False


class DistributedSessionKind:
    """The conformance suite's factory for DistributedSession.

    ``one_workspace=True`` hosts every Caffe2 node of the suite in one actor (``node_remap``),
    as LocalSession runs every node in one workspace; ``one_workspace=False`` gives every node
    its own actor and workspace, the session's default layout.
    """

    def __init__(self, one_workspace: bool = True):
        self.one_workspace = one_workspace
        self.id = "distributed" if one_workspace else "distributed-per-node"

    def make(self) -> DistributedSession:
        start_local_ray()
        remap = (lambda node: "conformance") if self.one_workspace else None
        return DistributedSession(node_remap=remap, heartbeat_timeout=30.0)

    def workspace(self, session, node="local"):
        raise NotImplementedError("a DistributedSession's workspaces live in other processes")

    def blob_names(self, session, node="local") -> set[str]:
        return set(session.blob_names(node))

    def fetch(self, session, name, node="local"):
        return session.fetch_blob(name, node)

    def feed(self, session, name, value, node="local"):
        session.feed_blob(name, value, node)

    def cleanup(self, session):
        session.close()

    def teardown(self):
        stop_local_ray()
