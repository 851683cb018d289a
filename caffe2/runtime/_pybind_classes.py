"""The classes of the ``C`` surface (``Workspace``, ``Blob``, ``Net``) and the argument and
feed/fetch helpers they share with the module functions; split out of
:mod:`caffe2.runtime.pybind_state`, which re-exports them and is the import path.

The process-global workspace state (the map of named workspaces, the current name and
pointer, and the lock guarding them) lives only in ``pybind_state``; the code here reads it
from that module at call time. The ``Workspace`` wrapper cache (``_wrappers``, also guarded
by that lock) lives here.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError, Message
from google.protobuf.text_format import MessageToString

from caffe2.proto import caffe2_pb2
from caffe2.runtime import serialization
from caffe2.runtime.blob import Blob as _RtBlob
from caffe2.runtime.blob import type_name as _type_name
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.tensor import TensorCPU, copy_value, to_tensor
from caffe2.runtime.workspace import Workspace as _RtWorkspace

__all__ = ["Workspace", "Blob", "Net", "runtime_workspace_of"]

_WHERE = "pybind_state"


def _state() -> Any:
    """The ``pybind_state`` module, owner of the process-global workspace state (imported
    at call time: it imports this module)."""
    from caffe2.runtime import pybind_state

    return pybind_state


# ---- argument and feed/fetch helpers -------------------------------------------------------
def _enforce(cond: object, msg: str) -> None:
    if not cond:
        raise EnforceError(msg, _WHERE)


def _as_bytes(data: object, what: str) -> bytes:
    """The bytes of a serialized proto argument; a str is a TypeError (pybind's py::bytes)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(
        f"{what}: expected serialized protobuf bytes, got {type(data).__name__} "
        "(serialize the message with SerializeToString())"
    )


def _parse(cls: type[Message], data: object, what: str) -> Any:
    raw = _as_bytes(data, what)
    proto = cls()
    try:
        proto.ParseFromString(raw)
    except (DecodeError, ValueError) as e:
        raise EnforceError(f"Can't parse {what} proto: {e}", _WHERE) from e
    return proto


def _check_name(name: object, what: str = "name") -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    return name


def _fetch(blob: _RtBlob | None, name: str) -> Any:
    _enforce(blob is not None, f"Can't find blob: {name}")
    v = blob.value
    if isinstance(v, np.ndarray | bytes):
        return copy_value(v)
    return f"{name}, a C++ native class of type {_type_name(v)}.".encode()


_FEEDABLE_DEVICES = (caffe2_pb2.CPU, caffe2_pb2.CUDA)


def _feed(blob: _RtBlob, name: str, arg: Any, device_option: Any) -> bool:
    if device_option is not None:
        opt = _parse(caffe2_pb2.DeviceOption, device_option, "device_option")
        # CUDA ops run on the CPU kernels here, so a CUDA feed stores a CPU tensor.
        _enforce(
            opt.device_type in _FEEDABLE_DEVICES,
            f"Unknown device type encountered in FeedBlob: {opt.device_type} (blob {name})",
        )
    if isinstance(arg, np.ndarray):
        try:
            blob.value = to_tensor(arg)
        except EnforceError:
            raise
        except RuntimeError as e:
            raise EnforceError(f"{e} (feeding blob {name})", _WHERE) from None
        return True
    if isinstance(arg, bytes):
        blob.value = arg
        return True
    if isinstance(arg, str):
        blob.value = arg.encode("utf-8")
        return True
    raise EnforceError(
        "Unexpected type of argument - only numpy array or string are supported for feeding "
        f"(blob {name} was given a {type(arg).__name__})",
        _WHERE,
    )


def _net_text(netdef: caffe2_pb2.NetDef) -> str:
    return MessageToString(netdef, as_utf8=True).strip()


# ---- classes -------------------------------------------------------------------------------
class Blob:
    """A handle on a runtime blob (Caffe2's ``C.Blob``)."""

    __slots__ = ("_blob", "_name")

    def __init__(self, blob: _RtBlob, name: str | None = None) -> None:
        if not isinstance(blob, _RtBlob):
            raise TypeError("C.Blob wraps a workspace blob; use Workspace.create_blob(name)")
        self._blob = blob
        self._name = name

    def fetch(self) -> Any:
        """A copy of the tensor (ndarray) or string (bytes) the blob holds."""
        v = self._blob.value
        _enforce(
            isinstance(v, np.ndarray | bytes),
            f"Could not fetch for blob of type: {_type_name(v)}"
            + (f" (blob {self._name})" if self._name else ""),
        )
        return copy_value(v)

    def _feed(self, arg: Any, device_option: Any = None) -> bool:
        return _feed(self._blob, self._name or "<unnamed>", arg, device_option)

    def serialize(self, name: str) -> bytes:
        return serialization.serialize_blob(_check_name(name), self._blob.value)

    def deserialize(self, serialized: bytes) -> None:
        serialization.deserialize_blob(_as_bytes(serialized, "Blob.deserialize"), self._blob)

    def tensor(self) -> TensorCPU:
        """The blob's CPU tensor (the blob becomes an empty float tensor if it held none)."""
        return TensorCPU(self._blob)

    def is_tensor(self) -> bool:
        return self._blob.is_tensor()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Blob) and other._blob is self._blob

    def __hash__(self) -> int:
        return id(self._blob)

    def __repr__(self) -> str:
        return f"<C.Blob {self._blob!r}>"


class Net:
    """A handle on an instantiated net (Caffe2's ``C.Net``)."""

    __slots__ = ("_net",)

    def __init__(self, net: Any) -> None:
        self._net = net

    @property
    def name(self) -> str:
        return self._net.name

    def run(self) -> None:
        _enforce(self._net.run(), f"Error running net {self._net.name}")

    def stats(self) -> Any:
        """Per-op profiling statistics (prof_dag nets only)."""
        stats = self._net.stats()
        _enforce(
            stats is not None,
            f"Net {self._net.name} does not collect statistics (create it with type prof_dag)",
        )
        return stats

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Net) and other._net is self._net

    def __hash__(self) -> int:
        return id(self._net)

    def __repr__(self) -> str:
        return f"<C.Net {self._net.name}>"


class _WorkspaceMeta(type):
    @property
    def current(cls) -> Workspace:
        """The workspace registered under the current name."""
        state = _state()
        name = state._current_name
        ws = state._workspaces.get(name)
        _enforce(ws is not None, f"Workspace {name} is not registered")
        return cls._wrap(ws)


_wrappers: weakref.WeakValueDictionary[int, Workspace] = weakref.WeakValueDictionary()


class Workspace(metaclass=_WorkspaceMeta):
    """Caffe2's ``C.Workspace``: ``Workspace()`` is standalone and unregistered;
    ``Workspace(parent)`` sees and writes its parent's blobs."""

    def __init__(self, parent: Workspace | None = None) -> None:
        if parent is not None and not isinstance(parent, Workspace):
            raise TypeError(f"Workspace(parent): expected a C.Workspace, got {type(parent)}")
        self._ws = _RtWorkspace(parent._ws if parent is not None else None)
        with _state()._lock:
            _wrappers[id(self._ws)] = self

    @classmethod
    def _wrap(cls, ws: _RtWorkspace) -> Workspace:
        """The C.Workspace view of an existing runtime workspace (one per workspace)."""
        with _state()._lock:
            w = _wrappers.get(id(ws))
            if w is None or w._ws is not ws:
                w = cls.__new__(cls)
                w._ws = ws
                _wrappers[id(ws)] = w
            return w

    @property
    def current(self) -> Workspace:
        return type(self).current

    @property
    def blobs(self) -> dict[str, Blob]:
        ws = self._ws
        return {n: Blob(b, n) for n in ws.blobs() if (b := ws.get_blob(n)) is not None}

    @property
    def nets(self) -> dict[str, Net]:
        ws = self._ws
        return {n: Net(net) for n in ws.nets() if (net := ws.get_net(n)) is not None}

    def _create_net(self, net_def: bytes, overwrite: bool = False) -> Net:
        proto = _parse(caffe2_pb2.NetDef, net_def, "net")
        net = self._ws.create_net(proto, bool(overwrite))
        _enforce(net is not None, f"Error creating net with proto: {_net_text(proto)}")
        return Net(net)

    def create_blob(self, name: str) -> Blob:
        b = self._ws.create_blob(_check_name(name))
        _enforce(b is not None, f"Cannot create blob {name}")
        return Blob(b, name)

    def fetch_blob(self, name: str) -> Any:
        return _fetch(self._ws.get_blob(_check_name(name)), name)

    def has_blob(self, name: str) -> bool:
        return self._ws.has_blob(_check_name(name))

    def _run_net(self, net_def: bytes) -> bool:
        proto = _parse(caffe2_pb2.NetDef, net_def, "net")
        _enforce(self._ws.run_net_once(proto), f"Error running net {proto.name}")
        return True

    def _run_operator(self, op_def: bytes) -> bool:
        proto = _parse(caffe2_pb2.OperatorDef, op_def, "operator")
        _enforce(self._ws.run_operator_once(proto), f"Error running operator {proto.type}")
        return True

    def _run_plan(self, plan_def: bytes) -> bool:
        proto = _parse(caffe2_pb2.PlanDef, plan_def, "plan")
        _enforce(self._ws.run_plan(proto), f"Error running plan {proto.name}")
        return True

    def _last_failed_op_net_position(self) -> int:
        return self._ws.last_failed_op_net_position

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Workspace) and other._ws is self._ws

    def __hash__(self) -> int:
        return id(self._ws)

    def __repr__(self) -> str:
        return f"<C.Workspace at {id(self._ws):#x}>"


def runtime_workspace_of(ws: Workspace) -> _RtWorkspace:
    """The runtime Workspace behind a C.Workspace."""
    return ws._ws
