"""Connecting this process to Ray: an existing cluster by address, or a local instance."""

from __future__ import annotations

import os
import socket
import threading

import ray

from caffe2.distributed.errors import ClusterConnectionError

_lock = threading.Lock()

# A local instance the session starts: a capped object store (Caffe2 blobs travel as task
# arguments and results, not as huge shared objects) and no dashboard.
DEFAULT_OBJECT_STORE_BYTES = 256 * 1024 * 1024


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a plain 'host:port' GCS address, else None (ray://, auto, ...)."""
    if "://" in address or address in ("auto", "local"):
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def _probe(address: str, timeout: float) -> None:
    hp = _host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout):
            pass
    except OSError as e:
        raise ClusterConnectionError(
            f"Cannot reach the Ray cluster at '{address}': {type(e).__name__}: {e}. Start it "
            "(`ray start --head`) or pass address=None to start a local Ray instance."
        ) from e


def current_address() -> str | None:
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:
        return None


def connect(address: str | None, init_kwargs: dict | None, timeout: float) -> str | None:
    """Make sure this process is connected to Ray; return the GCS address.

    Already connected: reuse the connection (an explicit, different address is an error).
    ``address`` None: start a local instance. Otherwise check within ``timeout`` seconds
    that the address answers, then connect.
    """
    with _lock:
        if ray.is_initialized():
            cur = current_address()
            hp, cur_hp = (
                (_host_port(address) if address else None),
                (_host_port(cur) if cur else None),
            )
            if hp is not None and cur_hp is not None and _same(hp, cur_hp) is False:
                raise ClusterConnectionError(
                    f"This process is already connected to the Ray cluster at '{cur}'; it "
                    f"cannot also connect to '{address}' (one Ray cluster per process)."
                )
            return cur
        if address is None:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kwargs = {
                "address": "local",
                "include_dashboard": False,
                "object_store_memory": DEFAULT_OBJECT_STORE_BYTES,
            }
        else:
            _probe(address, timeout)
            kwargs = {"address": address}
        kwargs.update(init_kwargs or {})
        try:
            ray.init(**kwargs)
        except Exception as e:
            where = f"the Ray cluster at '{address}'" if address else "a local Ray instance"
            raise ClusterConnectionError(
                f"Cannot connect to {where}: {type(e).__name__}: {e}"
            ) from e
        return current_address()


def _same(a: tuple[str, int], b: tuple[str, int]) -> bool | None:
    if a[1] != b[1]:
        return False
    try:
        return socket.gethostbyname(a[0]) == socket.gethostbyname(b[0])
    except OSError:
        return None
