"""Exceptions of the distributed session (importable without Ray).

Every error names the Caffe2 node it is about and the thing that failed. Failures of the
plan itself (an op that raised on a node) reach the caller as the session's ``TaskError``
(naming task, node, step, net and op, with the remote traceback); the classes here are for
what is specific to running on other processes: a lost node, a node no Ray node can host, a
cluster that cannot be reached, a plan or a value that cannot travel.
"""

from __future__ import annotations

from caffe2.python.session import SessionError, TaskError

__all__ = [
    "DistributedSessionError",
    "ClusterConnectionError",
    "PlacementError",
    "PlanTransferError",
    "BlobTransferError",
    "PythonOpTransferError",
    "NodeLostError",
    "RemoteFailure",
]


class DistributedSessionError(SessionError):
    """Base class of the distributed session's own errors. ``node`` names the Caffe2 node
    (None when the error is not about one)."""

    def __init__(self, message, node=None):
        super().__init__(message)
        self.node = node


class ClusterConnectionError(DistributedSessionError, ConnectionError):
    """The Ray cluster at the given address cannot be reached."""


class PlacementError(DistributedSessionError):
    """No Ray node can host a Caffe2 node (its placement rule matches no live Ray node, or
    its actor did not start within the placement timeout)."""


class PlanTransferError(DistributedSessionError):
    """A node's plan did not arrive intact: it failed to deserialize on the worker."""


class BlobTransferError(DistributedSessionError, TypeError):
    """A blob value cannot be sent to or from a node (it does not pickle, or it is not a
    tensor or a string where one is needed). ``blob`` names the blob."""

    def __init__(self, message, node=None, blob=None):
        super().__init__(message, node)
        self.blob = blob


class PythonOpTransferError(DistributedSessionError):
    """A Python op's function could not be loaded on the node it was shipped to.
    ``token`` is the op's registry token."""

    def __init__(self, message, node=None, token=None):
        super().__init__(message, node)
        self.token = token


class NodeLostError(TaskError):
    """A node's process died (or stopped answering) during a run.

    Its global workspace is gone; the next run on that node starts it again with an empty
    workspace. ``node`` names it, ``tasks`` lists the tasks it was running (``task`` is the
    first of them).
    """

    def __init__(self, message, node=None, tasks=(), cause=None):
        tasks = tuple(tasks)
        super().__init__(message, task=tasks[0] if tasks else None, node=node, cause=cause)
        self.tasks = tasks


class RemoteFailure(RuntimeError):
    """An exception raised on a node while it ran its plan, as seen on the driver.

    Carries what the session needs to name the failure: ``node``, ``net_name``,
    ``op_index``, ``op_type``, ``caffe2_step`` (the '/'-joined step path), the remote
    exception's type name (``remote_type``) and its traceback text (``remote_traceback``).
    The session turns it into a ``TaskError`` naming the task as well.
    """

    def __init__(
        self,
        message,
        node=None,
        net_name=None,
        op_index=None,
        op_type=None,
        caffe2_step=None,
        remote_type=None,
        remote_traceback="",
    ):
        super().__init__(message)
        self.node = node
        self.net_name = net_name
        self.op_index = op_index
        self.op_type = op_type
        self.caffe2_step = caffe2_step
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
