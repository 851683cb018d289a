"""Thread-local name scope and device scope.

``NameScope('a')`` makes raw blob names given to operators become ``'a/<name>'``;
``DeviceScope(option)`` makes operators created without an explicit device option use
``option``. Both are per thread and are restored on exit even when the body raises.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from caffe2.proto import caffe2_pb2

_NAMESCOPE_SEPARATOR = "/"

_threadlocal_scope = threading.local()


def CurrentNameScope() -> str:
    """The current thread's name scope ('' when none is active)."""
    scope = getattr(_threadlocal_scope, "namescope", None)
    if scope is None:
        scope = _threadlocal_scope.namescope = ""
    return scope


def CurrentDeviceScope() -> caffe2_pb2.DeviceOption | None:
    """The current thread's device option, or None."""
    if not hasattr(_threadlocal_scope, "devicescope"):
        _threadlocal_scope.devicescope = None
    return _threadlocal_scope.devicescope


@contextlib.contextmanager
def NameScope(prefix: str | None, reset: bool = False) -> Iterator[None]:
    """Append ``prefix/`` to the name scope (or replace the scope with it if reset)."""
    assert isinstance(prefix, str) or prefix is None, "NameScope takes in a string as its argument."
    old_scope = CurrentNameScope()
    added = prefix + _NAMESCOPE_SEPARATOR if prefix else ""
    _threadlocal_scope.namescope = added if reset else old_scope + added
    try:
        yield
    finally:
        unchanged = _threadlocal_scope.namescope.endswith(added)
        _threadlocal_scope.namescope = old_scope
        assert unchanged, "The namescope variable is changed from outside NameScope() calls."


@contextlib.contextmanager
def DeviceScope(
    scope: caffe2_pb2.DeviceOption | None, node_name: str | None = None
) -> Iterator[None]:
    """Make a copy of ``scope`` (with node_name applied or inherited) the device scope."""
    new_scope = caffe2_pb2.DeviceOption()
    if scope:
        assert isinstance(scope, caffe2_pb2.DeviceOption), (
            "DeviceScope takes in a caffe2_pb2.DeviceOption as its argument."
        )
        new_scope.CopyFrom(scope)
    else:
        assert node_name, "At least one argument should be non-null in DeviceScope"
    if node_name:
        new_scope.node_name = node_name
    old_scope = CurrentDeviceScope()
    # A nested scope inherits the node name unless it sets one itself.
    if (
        old_scope is not None
        and old_scope.HasField("node_name")
        and not new_scope.HasField("node_name")
    ):
        new_scope.node_name = old_scope.node_name
    _threadlocal_scope.devicescope = new_scope
    try:
        yield
    finally:
        unchanged = _threadlocal_scope.devicescope == new_scope
        _threadlocal_scope.devicescope = old_scope
        assert unchanged, "The device scope is changed from outside DeviceScope() calls."


@contextlib.contextmanager
def EmptyDeviceScope() -> Iterator[None]:
    """Run the body with no device scope at all."""
    old_scope = CurrentDeviceScope()
    try:
        _threadlocal_scope.devicescope = None
        yield
    finally:
        _threadlocal_scope.devicescope = old_scope
