"""The ``C`` extension surface (Caffe2's ``caffe2_pybind11_state``), written on the runtime.

Process-global state (spec runtime.md 3.1): a map of named workspaces, the current
workspace *pointer* and the current workspace *name*. ``"default"`` is created and made
current at import. Switching to a ``Workspace`` object moves only the pointer;
``Workspace.current`` always returns the workspace registered under the current name.

Module functions carry Caffe2's C names (``feed_blob``, ``run_net`` ...); the classes are
``Workspace``, ``Blob``, ``TensorCPU`` and ``Net``. ``caffe2.python.workspace`` is the
Python layer on top and patches a few methods onto these classes, as Caffe2 did.

The classes (with the helpers they share with the functions here) are defined in
:mod:`caffe2.runtime._pybind_classes` and re-exported; the process-global state stays here.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import Any

from caffe2.proto import caffe2_pb2
from caffe2.runtime import db, flags, registry, serialization
from caffe2.runtime._pybind_classes import (  # noqa: F401  (re-exported: the C surface)
    _FEEDABLE_DEVICES,
    _WHERE,
    Blob,
    Net,
    Workspace,
    _as_bytes,
    _check_name,
    _enforce,
    _feed,
    _fetch,
    _net_text,
    _parse,
    _WorkspaceMeta,
    _wrappers,
    runtime_workspace_of,
)
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.flags import FLAGS, register_flag  # noqa: F401  (part of the C surface)
from caffe2.runtime.tensor import TensorCPU
from caffe2.runtime.workspace import Workspace as _RtWorkspace

__all__ = ["Workspace", "Blob", "TensorCPU", "Net"]

log = logging.getLogger("caffe2")

has_gpu_support = False
has_mkldnn = False
is_asan = False

# ---- process-global workspace state --------------------------------------------------------
_lock = threading.RLock()
_workspaces: dict[str, _RtWorkspace] = {"default": _RtWorkspace()}
_current_name = "default"
_current: _RtWorkspace = _workspaces["default"]


def _release_all() -> None:
    with _lock:
        _workspaces.clear()


atexit.register(_release_all)


def current_runtime_workspace() -> _RtWorkspace:
    """The runtime Workspace the current pointer designates."""
    return _current


# ---- workspace management ------------------------------------------------------------------
def blobs() -> list[str]:
    """Blob names of the current workspace: sorted local, forwarded, then the parent's."""
    return _current.blobs()


def create_blob(name: str) -> bool:
    """Ensure a blob exists in the current workspace (parent blobs are reused)."""
    _check_name(name)
    _enforce(_current.create_blob(name) is not None, f"Cannot create blob {name}")
    return True


def current_workspace() -> str:
    """The current workspace's name."""
    return _current_name


def workspaces() -> list[str]:
    """The names of the registered workspaces, sorted."""
    with _lock:
        return sorted(_workspaces)


def switch_workspace(name: Any, create_if_missing: Any = None) -> None:
    """Make a named workspace current (creating it if asked); or, given a ``Workspace``
    object, point the current pointer at it without changing the current name."""
    global _current, _current_name
    if isinstance(name, Workspace):
        with _lock:
            _current = name._ws
        return
    _check_name(name, "workspace name")
    with _lock:
        ws = _workspaces.get(name)
        if ws is None:
            _enforce(
                bool(create_if_missing),
                f"Workspace {name} does not exist; pass create_if_missing=True to create it",
            )
            ws = _workspaces[name] = _RtWorkspace()
        _current_name = name
        _current = ws


def reset_workspace(root_folder: str | None = None) -> bool:
    """Replace the workspace registered under the current name by a new empty one.

    The old one is cleared (Caffe2 destroyed it); the current pointer moves to the new one.
    """
    global _current
    if root_folder is not None:
        _check_name(root_folder, "root_folder")
    with _lock:
        old = _workspaces.get(_current_name)
        ws = _RtWorkspace(root_folder=root_folder)
        _workspaces[_current_name] = ws
        _current = ws
    if old is not None:
        old.reset()
    return True


def has_blob(name: str) -> bool:
    return _current.has_blob(_check_name(name))


def root_folder() -> str:
    return _current.root_folder


def registered_operators() -> list[str]:
    """Sorted registry keys: op types (and ``Type_ENGINE_Engine`` for engine variants)."""
    return registry.registered_types()


def op_registry_key(op_type: str, engine: str) -> str:
    """The registry key of an op type with an engine ("" and "DEFAULT" are the default)."""
    if not engine or engine == "DEFAULT":
        return op_type
    return f"{op_type}_ENGINE_{engine}"


def nearby_opnames(name: str) -> list[str]:
    """Registered op types that look like name (for "did you mean" messages)."""
    return registry.close_matches(name)


def last_failed_op_net_position() -> int:
    """The position of the last failed op in the current workspace (-1: standalone)."""
    return _current.last_failed_op_net_position


def nets() -> list[str]:
    return _current.nets()


# ---- blobs ---------------------------------------------------------------------------------
def fetch_blob(name: str) -> Any:
    """A copy of a blob of the current workspace (spec 3.2)."""
    return _fetch(_current.get_blob(_check_name(name)), name)


def feed_blob(name: str, arg: Any, device_option: Any = None) -> bool:
    """Feed an ndarray (as a tensor copy) or a str/bytes (as a string blob) into a blob of
    the current workspace, created if missing (a visible parent blob is reused)."""
    _check_name(name)
    blob = _current.create_blob(name)
    _enforce(blob is not None, f"Cannot create blob {name}")
    return _feed(blob, name, arg, device_option)


def serialize_blob(name: str) -> bytes:
    """The serialized BlobProto of a blob of the current workspace."""
    blob = _current.get_blob(_check_name(name))
    _enforce(blob is not None, f"Can't find blob: {name}")
    return serialization.serialize_blob(name, blob.value)


def deserialize_blob(name: str, serialized: bytes) -> None:
    """Create the blob (if missing) and load serialized BlobProto bytes into it."""
    blob = _current.create_blob(_check_name(name))
    _enforce(blob is not None, f"Cannot create blob {name}")
    serialization.deserialize_blob(_as_bytes(serialized, "deserialize_blob"), blob)


# ---- nets, operators, plans ----------------------------------------------------------------
def create_net(net_def: bytes, overwrite: bool = False) -> bool:
    """Instantiate a serialized NetDef in the current workspace under its name."""
    proto = _parse(caffe2_pb2.NetDef, net_def, "net")
    net = _current.create_net(proto, bool(overwrite))
    _enforce(net is not None, f"Error creating net with proto: {_net_text(proto)}")
    return True


def run_net(name: str, num_iter: int = 1, allow_fail: bool = False) -> bool:
    """Run a net of the current workspace num_iter times.

    A False run result raises "Error running net <name>", or returns False if allow_fail.
    """
    net = _current.get_net(name)
    if net is None:
        raise EnforceError(f"Can't find net {name}", _WHERE)
    if num_iter == 1:
        ok = net.run()
    else:
        if not isinstance(num_iter, int):
            raise TypeError(f"num_iter must be an int, got {type(num_iter).__name__}")
        run = net.run
        ok = True
        for _ in range(num_iter):
            if not run():
                ok = False
                break
    if not ok:
        if allow_fail:
            return False
        raise EnforceError(f"Error running net {name}", _WHERE)
    return True


def run_net_once(net_def: bytes) -> bool:
    """Instantiate a serialized NetDef in the current workspace, run it once, drop it."""
    proto = _parse(caffe2_pb2.NetDef, net_def, "net")
    _enforce(_current.run_net_once(proto), f"Error running net {proto.name}")
    return True


def run_operator_once(op_def: bytes) -> bool:
    """Run a serialized OperatorDef once in the current workspace."""
    proto = _parse(caffe2_pb2.OperatorDef, op_def, "operator")
    _enforce(_current.run_operator_once(proto), f"Error running operator {proto.type}")
    return True


def run_plan(plan_def: bytes) -> bool:
    """Run a serialized PlanDef in the current workspace."""
    proto = _parse(caffe2_pb2.PlanDef, plan_def, "plan")
    _enforce(_current.run_plan(proto), f"Error running plan {proto.name}")
    return True


def benchmark_net(name: str, warmup_runs: int, main_runs: int, run_individual: bool) -> list[float]:
    """Time a net: [ms per run] and, with run_individual, ms per run of each op."""
    net = _current.get_net(_check_name(name))
    _enforce(net is not None, f"Can't find net {name}")
    _enforce(warmup_runs >= 0 and main_runs >= 0, "Number of runs should be non-negative.")
    for _ in range(warmup_runs):
        _enforce(net.run(), f"Warmup run has failed for net {name}")
    t0 = time.perf_counter()
    for _ in range(main_runs):
        _enforce(net.run(), f"Main run has failed for net {name}")
    total = time.perf_counter() - t0
    result = [1000.0 * total / main_runs if main_runs else 0.0]
    log.info("Main run finished. Milliseconds per iter: %s", result[0])
    if run_individual:
        ops = getattr(net, "ops", [])
        times = [0.0] * len(ops)
        for _ in range(main_runs):
            for i, op in enumerate(ops):
                t = time.perf_counter()
                op.kernel()
                times[i] += time.perf_counter() - t
        result += [1000.0 * t / main_runs if main_runs else 0.0 for t in times]
    return result


# ---- flags and stats -----------------------------------------------------------------------
def global_init(args: list[str]) -> None:
    """Parse Caffe2 flags (see ``caffe2.runtime.flags.parse``); args[0] is the program name."""
    if "caffe2_log_level" in flags.parse(args):
        # Caffe2 levels: <0 verbose, 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL.
        level = int(FLAGS["caffe2_log_level"])
        py_levels = [logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
        log.setLevel(logging.DEBUG if level < 0 else py_levels[min(level, 3)])


def get_stats() -> dict[str, int]:
    """Exported stat values by key (from ``caffe2.runtime.stats`` when it is present)."""
    try:
        import caffe2.runtime.stats as stats  # type: ignore[import-not-found]
    except ModuleNotFoundError as e:
        if e.name != "caffe2.runtime.stats":
            raise
        return {}
    publish = getattr(stats, "publish", None)
    return dict(publish()) if publish is not None else {}


# ---- engine preferences (recorded only: every op has one CPU implementation) --------------
_per_op_engine_pref: dict[int, dict[str, list[str]]] = {}
_global_engine_pref: dict[int, list[str]] = {}


def _check_device_type(device_type: Any) -> int:
    _enforce(
        device_type in (caffe2_pb2.CPU, caffe2_pb2.CUDA),
        f"Device type {device_type} not registered.",
    )
    return int(device_type)


def set_per_op_engine_pref(pref: dict[int, dict[str, list[str]]]) -> None:
    """{device_type: {op_type: [engines]}}; every op type must be registered."""
    new: dict[int, dict[str, list[str]]] = {}
    for dev, ops in pref.items():
        dev = _check_device_type(dev)
        for op_type, engines in ops.items():
            _enforce(
                registry.has_operator(op_type),
                f"Operator type {op_type} not registered in {dev} registry.",
            )
            new.setdefault(dev, {})[op_type] = [str(e) for e in engines]
    with _lock:
        _per_op_engine_pref.clear()
        _per_op_engine_pref.update(new)


def set_global_engine_pref(pref: dict[int, list[str]]) -> None:
    """{device_type: [engines]}."""
    new = {_check_device_type(dev): [str(e) for e in engines] for dev, engines in pref.items()}
    with _lock:
        _global_engine_pref.clear()
        _global_engine_pref.update(new)


def set_engine_pref(
    per_op_pref: dict[int, dict[str, list[str]]], global_pref: dict[int, list[str]]
) -> None:
    set_per_op_engine_pref(per_op_pref)
    set_global_engine_pref(global_pref)


def set_op_engine_pref(op_type: str, pref: dict[int, list[str]]) -> None:
    """{device_type: [engines]} for one op type."""
    _enforce(registry.has_operator(op_type), f"Operator type {op_type} not registered.")
    new = {_check_device_type(dev): [str(e) for e in engines] for dev, engines in pref.items()}
    with _lock:
        for dev, engines in new.items():
            _per_op_engine_pref.setdefault(dev, {})[op_type] = engines


def engine_prefs() -> tuple[dict[int, dict[str, list[str]]], dict[int, list[str]]]:
    """The recorded (per-op, global) engine preferences."""
    with _lock:
        per_op = {d: {o: list(e) for o, e in m.items()} for d, m in _per_op_engine_pref.items()}
        return per_op, {d: list(e) for d, e in _global_engine_pref.items()}


# ---- gradients -----------------------------------------------------------------------------
def _grad_entry(g: Any) -> Any:
    """None, a dense gradient name, or a sparse (indices, values) pair of names."""
    if g is None:
        return None
    if isinstance(g, str):
        return g
    if isinstance(g, bytes):
        return g.decode("utf-8")
    if isinstance(g, tuple) and len(g) == 2:
        return (str(g[0]), str(g[1]))
    if hasattr(g, "indices") and hasattr(g, "values"):
        return (str(g.indices), str(g.values))
    return str(g)


def get_gradient_defs(op_def: bytes, g_output: list[Any]) -> tuple[list[bytes], list[Any]]:
    """Gradient ops of a serialized OperatorDef from the registry's gradient maker.

    ``g_output`` has one entry per op output: None, a gradient blob name, or an
    (indices, values) pair. Returns the serialized gradient OperatorDefs, as complete as
    the maker made them, and one entry per input.
    """
    opdef = _parse(caffe2_pb2.OperatorDef, op_def, "operator")
    schema = registry.get_schema(opdef.type)
    _enforce(
        schema is not None and schema.gradient is not None,
        f"Gradient maker for operator {opdef.type} not implemented.",
    )
    g_out = [_grad_entry(g) for g in g_output]
    _enforce(
        len(g_out) == len(opdef.output),
        f"{opdef.type}: got {len(g_out)} output gradients for {len(opdef.output)} outputs",
    )
    grad_ops, g_input = schema.gradient(opdef, g_out)
    g_input = [_grad_entry(g) for g in g_input]
    _enforce(
        len(g_input) == len(opdef.input),
        f"Gradient maker of {opdef.type} returned {len(g_input)} input gradients for "
        f"{len(opdef.input)} inputs",
    )
    # The makers return complete ops (runtime_design.md): nothing is added to them here.
    out = [g.SerializeToString() for g in grad_ops]
    return out, g_input


# ---- python ops (the bridge lives in caffe2.operators.python_ops) --------------------------
def register_python_op(*args: Any, **kwargs: Any) -> str:
    """Register a Python callable for the ``Python`` op; returns its token."""
    from caffe2.operators import python_ops

    return python_ops.register_python_op(*args, **kwargs)


def register_python_gradient_op(*args: Any, **kwargs: Any) -> Any:
    """Register the gradient callable of a Python op token."""
    from caffe2.operators import python_ops

    return python_ops.register_python_gradient_op(*args, **kwargs)


# ---- GPU / NUMA (none here) ----------------------------------------------------------------
def num_cuda_devices() -> int:
    return 0


def is_numa_enabled() -> bool:
    return False


def get_num_numa_nodes() -> int:
    return -1


def get_blob_numa_node(name: str) -> int:
    blob = _current.get_blob(_check_name(name))
    _enforce(blob is not None, f"Can't find blob: {name}")
    _enforce(blob.is_tensor(), f"Blob {name} is not a tensor (holds {blob.type_name()})")
    return -1


# ---- DBs -----------------------------------------------------------------------------------
class Mode:
    """``C.Mode``: how ``create_db`` opens a DB."""

    read = db.Mode.READ
    write = db.Mode.WRITE
    new = db.Mode.NEW


def create_db(db_type: str, source: str, mode: int) -> db.DB:
    """``C.create_db``: open a DB of a registered type (cursor, transaction, put, commit)."""
    opened = db.create_db(db_type, source, mode)
    _enforce(opened is not None, f"Unknown db type {db_type!r}{db.unknown_type_hint(db_type)}")
    return opened
