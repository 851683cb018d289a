"""Operator registry queries, engine preferences, global init and device options.

Part of ``caffe2.python.core`` (re-exported there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from caffe2.proto import caffe2_pb2
from caffe2.python import workspace

if TYPE_CHECKING:
    from caffe2.python.core import Net


class DataType:
    """The TensorProto.DataType values by name."""

    UNDEFINED = caffe2_pb2.TensorProto.UNDEFINED
    FLOAT = caffe2_pb2.TensorProto.FLOAT
    INT32 = caffe2_pb2.TensorProto.INT32
    BYTE = caffe2_pb2.TensorProto.BYTE
    STRING = caffe2_pb2.TensorProto.STRING
    BOOL = caffe2_pb2.TensorProto.BOOL
    UINT8 = caffe2_pb2.TensorProto.UINT8
    INT8 = caffe2_pb2.TensorProto.INT8
    UINT16 = caffe2_pb2.TensorProto.UINT16
    INT16 = caffe2_pb2.TensorProto.INT16
    INT64 = caffe2_pb2.TensorProto.INT64
    FLOAT16 = caffe2_pb2.TensorProto.FLOAT16
    DOUBLE = caffe2_pb2.TensorProto.DOUBLE


# ---- operator registry ---------------------------------------------------------------------
def _GetRegisteredOperators() -> set[str]:
    return set(workspace.RegisteredOperators())


_REGISTERED_OPERATORS: set[str] = _GetRegisteredOperators()


def RefreshRegisteredOperators() -> None:
    """Re-read the registry keys that IsOperator checks against."""
    # Updated in place (new keys first) so that every module holding the set sees it and a
    # concurrent reader never misses a key that stays registered.
    fresh = _GetRegisteredOperators()
    _REGISTERED_OPERATORS.update(fresh)
    _REGISTERED_OPERATORS.difference_update(_REGISTERED_OPERATORS - fresh)


def op_registry_key(op_type: str, engine: str) -> str:
    """The registry key of an op type with an engine ('DEFAULT' or '' means none)."""
    if not engine or engine == "DEFAULT":
        return op_type
    return op_type + "_ENGINE_" + engine


def IsOperator(op_type: str) -> bool:
    """Whether op_type is a registered operator (default engine)."""
    return IsOperatorWithEngine(op_type, engine="DEFAULT")


def IsOperatorWithEngine(op_type: str, engine: str) -> bool:
    """Whether op_type is registered for the given engine."""
    return op_registry_key(op_type, engine) in _REGISTERED_OPERATORS


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance of a and b, or limit + 1 once it is known to exceed limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        if min(cur) > limit:
            return limit + 1
        prev = cur
    return prev[-1]


def _nearby_opnames(name: str, tolerance: int = 3) -> list[str]:
    """Registered op names within edit distance ``tolerance`` of name."""
    return [
        k for k in sorted(_REGISTERED_OPERATORS) if _edit_distance(k, name, tolerance) <= tolerance
    ]


def _not_registered_message(op_type: str) -> str:
    return (
        f"Method {op_type} is not a registered operator. "
        f"Did you mean: [{','.join(_nearby_opnames(op_type))}]"
    )


# ---- global init and engine preferences ----------------------------------------------------
_GLOBAL_INIT_ARGS: list[str] = []


def GlobalInit(args: list[str]) -> None:
    """Record the flags (args[1:]) and pass the command line to the runtime."""
    _GLOBAL_INIT_ARGS.extend(args[1:])
    workspace.C.global_init(args)


def GetGlobalInitArgs() -> list[str]:
    """A copy of every flag passed to GlobalInit so far."""
    return _GLOBAL_INIT_ARGS[:]


def SetPerOpEnginePref(pref: dict[str, Any]) -> None:
    """{op_type: {device_type: [engines]}} preferences of the runtime."""
    workspace.C.set_per_op_engine_pref(pref)


def SetGlobalEnginePref(pref: dict[str, Any]) -> None:
    """{device_type: [engines]} preferences of the runtime."""
    workspace.C.set_global_engine_pref(pref)


def SetEnginePref(per_op_pref: dict[str, Any], global_pref: dict[str, Any]) -> None:
    """Set both the per-op and the global engine preferences."""
    workspace.C.set_engine_pref(per_op_pref, global_pref)


def SetOpEnginePref(op_type: str, op_pref: dict[str, Any]) -> None:
    """{device_type: [engines]} preferences for one op type."""
    workspace.C.set_op_engine_pref(op_type, op_pref)


# ---- device options ------------------------------------------------------------------------
def DeviceOption(
    device_type: int,
    cuda_gpu_id: int = 0,
    random_seed: int | None = None,
    node_name: str | None = None,
) -> caffe2_pb2.DeviceOption:
    """A DeviceOption proto (device_type and cuda_gpu_id are always set)."""
    option = caffe2_pb2.DeviceOption()
    option.device_type = device_type
    option.cuda_gpu_id = cuda_gpu_id
    if node_name is not None:
        option.node_name = node_name
    if random_seed is not None:
        option.random_seed = random_seed
    return option


def device_option_equal(
    opt1: caffe2_pb2.DeviceOption | None,
    opt2: caffe2_pb2.DeviceOption | None,
    ignore_node_name: bool = True,
    ignore_random_seed: bool = True,
) -> bool:
    """Whether two device options name the same device (CPU options are all equal)."""
    if opt1 is None or opt2 is None:
        return opt1 == opt2
    if not ignore_node_name and opt1.node_name != opt2.node_name:
        return False
    if not ignore_random_seed and opt1.random_seed != opt2.random_seed:
        return False
    if not opt1.device_type or not opt2.device_type:
        return not opt1.device_type and not opt2.device_type
    return opt1.cuda_gpu_id == opt2.cuda_gpu_id


def InferOpBlobDevices(
    op: caffe2_pb2.OperatorDef,
) -> tuple[list[caffe2_pb2.DeviceOption], list[caffe2_pb2.DeviceOption]]:
    """(input devices, output devices) of op: every blob lives on the op's device."""
    dev = op.device_option
    return [dev] * len(op.input), [dev] * len(op.output)


InferOpDeviceAsBlobDevices = InferOpBlobDevices


def InferBlobDevices(net: Net) -> dict[str, caffe2_pb2.DeviceOption]:
    """{blob: device option of the last op that outputs it} over the net's ops."""
    mapping: dict[str, caffe2_pb2.DeviceOption] = {}
    for op in net.Proto().op:
        _, output_devices = InferOpBlobDevices(op)
        for name, dev in zip(op.output, output_devices, strict=True):
            mapping[name] = dev
    return mapping
