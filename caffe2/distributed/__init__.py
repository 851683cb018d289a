"""caffe2.distributed: TaskGroups across machines, on Ray.

``DistributedSession`` runs each Caffe2 Node of a runnable in its own long-lived Ray actor
(see :mod:`caffe2.distributed.session`). Ray is an optional dependency: install it with
``pip install 'caffe2py[ray]'``. Every Ray import of the project lives in this package.
"""

from __future__ import annotations

try:
    import ray  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "caffe2.distributed needs Ray, an optional dependency of caffe2py: install it with "
        "pip install 'caffe2py[ray]'"
    ) from e

from caffe2.distributed.errors import (  # noqa: E402
    BlobTransferError,
    ClusterConnectionError,
    DistributedSessionError,
    NodeLostError,
    PlacementError,
    PlanTransferError,
    PythonOpTransferError,
    RemoteFailure,
)
from caffe2.distributed.session import PLACEMENT_KEYS, DistributedSession  # noqa: E402

__all__ = [
    "DistributedSession",
    "PLACEMENT_KEYS",
    "DistributedSessionError",
    "ClusterConnectionError",
    "PlacementError",
    "PlanTransferError",
    "BlobTransferError",
    "PythonOpTransferError",
    "NodeLostError",
    "RemoteFailure",
]
