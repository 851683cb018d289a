"""``caffe2.python.workspace``: the workspace API of Caffe2's Python layer (spec runtime.md 3).

Thin functions over the ``C`` surface (``caffe2.runtime.pybind_state``): named workspaces,
feeding and fetching blobs, creating and running nets, operators and plans, the operator
traceback interceptor, immediate mode, and the Python methods Caffe2 patched onto
``C.Workspace`` and ``C.Blob``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from google.protobuf.message import Message

from caffe2.proto import caffe2_pb2
from caffe2.runtime import pybind_state as C
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.serialization import tensor_to_array as _tensor_to_array

logger = logging.getLogger(__name__)

Blobs = C.blobs
CreateBlob = C.create_blob
CurrentWorkspace = C.current_workspace
DeserializeBlob = C.deserialize_blob
GlobalInit = C.global_init
HasBlob = C.has_blob
RegisteredOperators = C.registered_operators
SerializeBlob = C.serialize_blob
SwitchWorkspace = C.switch_workspace
RootFolder = C.root_folder
Workspaces = C.workspaces
BenchmarkNet = C.benchmark_net
GetStats = C.get_stats

# net name -> op index -> [(file, line, function)], innermost frame first (filled by core).
operator_tracebacks: defaultdict[str, dict[int, list[tuple[str, int, str]]]] = defaultdict(dict)

is_asan = C.is_asan
has_gpu_support = C.has_gpu_support


def NumCudaDevices() -> int:
    return C.num_cuda_devices()


def GetCuDNNVersion() -> int:
    return 0


def GetCudaPeerAccessPattern() -> np.ndarray:
    return np.array([])


def GetDeviceProperties(device_id: int) -> None:
    return None


IsNUMAEnabled = C.is_numa_enabled
GetNumNUMANodes = C.get_num_numa_nodes
GetBlobNUMANode = C.get_blob_numa_node


# ---- proto and name helpers ----------------------------------------------------------------
def StringifyProto(obj: Any) -> Any:
    """Serialized bytes of a proto (or of ``obj.Proto()``); strings pass through unchanged."""
    if isinstance(obj, str | bytes):
        return obj
    if isinstance(obj, Message):
        return obj.SerializeToString()
    if hasattr(obj, "Proto"):
        return obj.Proto().SerializeToString()
    raise ValueError("Unexpected argument to StringifyProto of type " + type(obj).__name__)


def _StringifyName(name: Any, expected_type: str) -> str:
    if isinstance(name, str | bytes):
        return name
    assert type(name).__name__ == expected_type, f"Expected a string or {expected_type}"
    return str(name)


def StringifyBlobName(name: Any) -> str:
    return _StringifyName(name, "BlobReference")


def StringifyNetName(name: Any) -> str:
    return _StringifyName(name, "Net")


def GetNetName(net: Any) -> str:
    """The name of a net given as a name, a core.Net or a NetDef."""
    if isinstance(net, str | bytes):
        return net
    if type(net).__name__ == "Net":
        return net.Name()
    if isinstance(net, caffe2_pb2.NetDef):
        return net.name
    raise Exception(f"Not a Net object: {net}")


# ---- tracebacks ----------------------------------------------------------------------------
def _print_op_traceback(op_id_fetcher: Callable[[], int], net_name: Any) -> None:
    op_id = op_id_fetcher()
    net_tracebacks = operator_tracebacks.get(net_name, None)
    print(
        f"Original python traceback for operator {op_id} in network `{net_name}` in "
        "exception above (most recent call last):"
    )
    if net_tracebacks and op_id in net_tracebacks:
        for frame in reversed(net_tracebacks[op_id]):
            print(f'  File "{frame[0]}", line {frame[1]}, in {frame[2]}')


def CallWithExceptionIntercept(
    func: Callable[..., Any],
    op_id_fetcher: Callable[[], int],
    net_name: Any,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Call func; on an exception print where the failed op was created, then re-raise."""
    try:
        return func(*args, **kwargs)
    except Exception:
        _print_op_traceback(op_id_fetcher, net_name)
        raise


# ---- workspace management ------------------------------------------------------------------
def ResetWorkspace(root_folder: str | None = None) -> bool:
    """Replace the current named workspace by an empty one (keeping or setting its root)."""
    if root_folder is None:
        return C.reset_workspace(C.root_folder())
    if not os.path.exists(root_folder):
        os.makedirs(root_folder)
    return C.reset_workspace(root_folder)


@contextlib.contextmanager
def WorkspaceGuard(workspace_name: Any) -> Iterator[None]:
    """Run the body in another workspace (a name, created if missing, or a C.Workspace).

    QUIRK kept from Caffe2: no try/finally, so an exception leaves the switch in place.
    """
    current = CurrentWorkspace()
    SwitchWorkspace(workspace_name, True)
    yield
    SwitchWorkspace(current)


# ---- nets, operators, plans ----------------------------------------------------------------
def CreateNet(net: Any, overwrite: bool = False, input_blobs: Any = None) -> bool:
    """Instantiate a net (Net, NetDef or bytes) in the current workspace."""
    if input_blobs is None:
        input_blobs = []
    for input_blob in input_blobs:
        C.create_blob(input_blob)
    return CallWithExceptionIntercept(
        C.create_net,
        C.last_failed_op_net_position,
        GetNetName(net),
        StringifyProto(net),
        overwrite,
    )


def RunNet(name: Any, num_iter: int = 1, allow_fail: bool = False) -> bool:
    """Run an instantiated net num_iter times (a False run raises unless allow_fail)."""
    if type(name) is str:
        net_name = name
    else:
        net_name = StringifyNetName(name)
    try:
        return C.run_net(net_name, num_iter, allow_fail)
    except Exception:
        _print_op_traceback(C.last_failed_op_net_position, GetNetName(name))
        raise


def RunNetOnce(net: Any) -> bool:
    """Instantiate a net, run it once and discard it."""
    return CallWithExceptionIntercept(
        C.run_net_once,
        C.last_failed_op_net_position,
        GetNetName(net),
        StringifyProto(net),
    )


def RunOperatorOnce(operator: Any) -> bool:
    """Run an OperatorDef (or its bytes) once in the current workspace."""
    return C.run_operator_once(StringifyProto(operator))


def RunOperatorsOnce(operators: Any) -> bool:
    for op in operators:
        success = RunOperatorOnce(op)
        if not success:
            return False
    return True


def RunPlan(plan_or_step: Any) -> bool:
    """Run a Plan, PlanDef or ExecutionStep (wrapped in a Plan of the step's name)."""
    if not isinstance(plan_or_step, str | bytes | Message):
        from caffe2.python import core

        if isinstance(plan_or_step, core.ExecutionStep):
            plan_or_step = core.Plan(plan_or_step)
    return C.run_plan(StringifyProto(plan_or_step))


def GetNetProfile(name: Any) -> Any:
    """Per-op statistics of a net of the current workspace created with type ``prof_dag``."""
    net_name = StringifyNetName(name)
    net = C.current_runtime_workspace().get_net(net_name)
    if net is None:
        raise EnforceError(f"Can't find net {net_name}", "workspace")
    return C.Net(net).stats()


# ---- feeding and fetching ------------------------------------------------------------------
def _tensor_proto_to_array(tensor: caffe2_pb2.TensorProto) -> np.ndarray:
    try:
        import caffe2.python.utils as utils
    except ModuleNotFoundError as e:  # utils.py not there: the runtime's converter
        if e.name != "caffe2.python.utils":
            raise
        return _tensor_to_array(tensor)
    return utils.Caffe2TensorToNumpyArray(tensor)


def _prepare_feed(name: Any, arr: Any, device_option: Any) -> tuple[str, Any, Any]:
    if type(arr) is caffe2_pb2.TensorProto:
        arr = _tensor_proto_to_array(arr)
    if type(arr) is np.ndarray and arr.dtype.kind in "SU":
        # NumPy fixed-width strings become an object array (bytes or str elements).
        arr = arr.astype(object)
    if device_option is None:
        device_option = _current_device_scope()
    if device_option and device_option.device_type == caffe2_pb2.CUDA:
        if isinstance(arr, np.ndarray) and arr.dtype == np.dtype("float64"):
            logger.warning(
                "CUDA operators do not support 64-bit doubles, please use "
                "arr.astype(np.float32) or np.int32 for ints. Blob: %s type: %s",
                name,
                arr.dtype,
            )
    return StringifyBlobName(name), arr, device_option


def _current_device_scope() -> Any:
    try:
        import caffe2.python.scope as scope
    except ModuleNotFoundError as e:  # scope.py not there: no device scope can be active
        if e.name != "caffe2.python.scope":
            raise
        return None
    return scope.CurrentDeviceScope()


def FeedBlob(name: Any, arr: Any, device_option: Any = None) -> bool:
    """Feed an ndarray (copied into a tensor), a TensorProto, or str/bytes into a blob."""
    name, arr, device_option = _prepare_feed(name, arr, device_option)
    if device_option is not None:
        return C.feed_blob(name, arr, StringifyProto(device_option))
    return C.feed_blob(name, arr)


def FetchBlob(name: Any) -> Any:
    """A copy of a blob: ndarray for tensors, bytes for strings, a description otherwise."""
    return C.fetch_blob(StringifyBlobName(name))


def FetchBlobs(names: Any) -> list[Any]:
    return [FetchBlob(name) for name in names]


def GetNameScope() -> str:
    from caffe2.python import scope

    return scope.CurrentNameScope()


class _BlobDict:
    """``workspace.blobs``: the current workspace's blobs as a mapping."""

    def __getitem__(self, key: Any) -> Any:
        return FetchBlob(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        FeedBlob(key, value)

    def __len__(self) -> int:
        return len(C.blobs())

    def __iter__(self) -> Iterator[str]:
        return iter(C.blobs())

    def __contains__(self, item: Any) -> bool:
        return C.has_blob(item)


blobs = _BlobDict()


# ---- immediate mode ------------------------------------------------------------------------
_immediate_mode = False
_immediate_workspace_name = "_CAFFE2_IMMEDIATE"
_immediate_root_folder = ""


def IsImmediate() -> bool:
    return _immediate_mode


def StartImmediate(i_know: bool = False) -> None:
    """Run every op created by core.CreateOperator at once, in a workspace of its own."""
    global _immediate_mode, _immediate_root_folder
    if IsImmediate():
        # Already active: start again from a clean workspace.
        StopImmediate()
    _immediate_mode = True
    with WorkspaceGuard(_immediate_workspace_name):
        _immediate_root_folder = tempfile.mkdtemp()
        ResetWorkspace(_immediate_root_folder)
    if i_know:
        return
    print(
        """
    Immediate mode is on: this is an experimental debugging aid.

    Every operator created through core.CreateOperator (and therefore through Net methods)
    now also runs at once, in the separate workspace "_CAFFE2_IMMEDIATE". Use
    workspace.FetchImmediate / FeedImmediate / ImmediateBlobs to look at that workspace.

    Caveats: the operators run in creation order, not in the order a net would run them;
    ops that need blobs created elsewhere (other workspaces, plans, readers) fail; ops with
    side effects (counters, queues, files) perform them twice, once now and once when the
    net runs. Call workspace.StopImmediate() to leave the mode and drop the workspace.
    Pass i_know=True to StartImmediate to silence this message.
    """
    )


def StopImmediate() -> None:
    """Leave immediate mode: reset its workspace and remove its root folder."""
    global _immediate_mode, _immediate_root_folder
    if not IsImmediate():
        return
    with WorkspaceGuard(_immediate_workspace_name):
        ResetWorkspace()
    shutil.rmtree(_immediate_root_folder, ignore_errors=True)
    _immediate_root_folder = ""
    _immediate_mode = False


def ImmediateBlobs() -> list[str]:
    with WorkspaceGuard(_immediate_workspace_name):
        return Blobs()


def RunOperatorImmediate(op: Any) -> None:
    with WorkspaceGuard(_immediate_workspace_name):
        RunOperatorOnce(op)


def FetchImmediate(*args: Any, **kwargs: Any) -> Any:
    with WorkspaceGuard(_immediate_workspace_name):
        return FetchBlob(*args, **kwargs)


def FeedImmediate(*args: Any, **kwargs: Any) -> bool:
    with WorkspaceGuard(_immediate_workspace_name):
        return FeedBlob(*args, **kwargs)


# ---- methods Caffe2 patched onto the C classes ---------------------------------------------
def _Workspace_create_net_with_exception_intercept(
    ws: C.Workspace, net: Any, overwrite: bool = False
) -> Any:
    return CallWithExceptionIntercept(
        ws._create_net,
        ws._last_failed_op_net_position,
        GetNetName(net),
        StringifyProto(net),
        overwrite,
    )


def _Workspace_run(ws: C.Workspace, obj: Any) -> Any:
    """Run a PlanDef, a NetDef (once, unregistered) or an OperatorDef in ws."""
    if hasattr(obj, "Proto"):
        obj = obj.Proto()
    if isinstance(obj, caffe2_pb2.PlanDef):
        return ws._run_plan(obj.SerializeToString())
    if isinstance(obj, caffe2_pb2.NetDef):
        return CallWithExceptionIntercept(
            ws._run_net,
            ws._last_failed_op_net_position,
            GetNetName(obj),
            obj.SerializeToString(),
        )
    if isinstance(obj, caffe2_pb2.OperatorDef):
        return ws._run_operator(obj.SerializeToString())
    raise ValueError(f"Don't know how to do Workspace.run() on {type(obj)}")


def _Workspace_feed_blob(ws: C.Workspace, name: Any, arr: Any, device_option: Any = None) -> bool:
    name, arr, device_option = _prepare_feed(name, arr, device_option)
    return ws.create_blob(name).feed(arr, device_option)


def _Blob_feed(blob: C.Blob, arg: Any, device_option: Any = None) -> bool:
    if device_option is not None:
        device_option = StringifyProto(device_option)
    return blob._feed(arg, device_option)


C.Workspace.create_net = _Workspace_create_net_with_exception_intercept
C.Workspace.run = _Workspace_run
C.Workspace.feed_blob = _Workspace_feed_blob
C.Blob.feed = _Blob_feed
