"""BlobReference, name scoping of op inputs/outputs, and ``CreateOperator``.

Part of ``caffe2.python.core`` (re-exported there).
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from caffe2.proto import caffe2_pb2
from caffe2.python import scope, utils, workspace
from caffe2.python._core_registry import _REGISTERED_OPERATORS, IsOperator, _not_registered_message

if TYPE_CHECKING:
    from caffe2.python.core import Net


# ---- BlobReference -------------------------------------------------------------------------
class BlobReference:
    """A blob name, optionally tied to the Net that produces it (for ``blob.Op(...)`` sugar)."""

    def __init__(self, name: Any, net: Net | None = None) -> None:
        if isinstance(name, str):
            self._name = name
        elif isinstance(name, bytes):
            self._name = name.decode("utf-8")
        else:
            self._name = str(name)
        self._from_net = net
        self.meta: dict[str, Any] = {}

    def __hash__(self) -> int:
        return hash(self._name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self._name == other
        if isinstance(other, bytes):
            return self._name == other.decode("utf-8")
        if isinstance(other, BlobReference):
            return self._name == other._name
        return False

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f'BlobReference("{self._name}")'

    def __add__(self, other: Any) -> BlobReference:
        if not isinstance(other, str):
            raise RuntimeError("Cannot add BlobReference to a non-string.")
        return BlobReference(self._name + other, self._from_net)

    def __radd__(self, other: Any) -> BlobReference:
        if not isinstance(other, str):
            raise RuntimeError("Cannot add a non-string to BlobReference.")
        return BlobReference(other + self._name, self._from_net)

    def Net(self) -> Net | None:
        """The net this reference came from (None for a plain name)."""
        return self._from_net

    def GetNameScope(self) -> str:
        """The name up to and including its last '/' ('' if none)."""
        return self._name[: self._name.rfind(scope._NAMESCOPE_SEPARATOR) + 1]

    def GetUnscopedName(self) -> str:
        """The name after its last '/'."""
        return self._name[self._name.rfind(scope._NAMESCOPE_SEPARATOR) + 1 :]

    def _CreateAndAddToNet(
        self, op_type: str, inputs: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        inputs = [] if inputs is None else inputs
        if isinstance(inputs, BlobReference | str):
            inputs = [inputs]
        inputs.insert(0, self)
        return self._from_net.__getattr__(op_type)(inputs, *args, **kwargs)

    def __getattr__(self, op_type: str) -> Callable[..., Any]:
        if op_type.startswith("__"):
            raise AttributeError(f"Attribute {op_type} not found.")
        if self.__dict__.get("_from_net") is None:
            raise RuntimeError(
                "You cannot use a blob reference that does not have a net source to create "
                "operators. Create the operator from an explicit net object."
            )
        if not IsOperator(op_type):
            raise RuntimeError(_not_registered_message(op_type))
        return lambda *args, **kwargs: self._CreateAndAddToNet(op_type, *args, **kwargs)

    def __dir__(self) -> list[str]:
        ops = [op for op in _REGISTERED_OPERATORS if "_ENGINE_" not in op]
        return sorted(set(dir(type(self))) | set(self.__dict__) | set(ops))


def ScopedName(name: str | bytes) -> str:
    """name with the current name scope prefixed."""
    if isinstance(name, bytes):
        name = name.decode("ascii")
    return scope.CurrentNameScope() + name


def ScopedBlobReference(name: str | bytes, *args: Any, **kwargs: Any) -> BlobReference:
    """A BlobReference to the scoped name."""
    return BlobReference(ScopedName(name), *args, **kwargs)


def _RectifyInputOutput(blobs: Any, net: Net | None = None) -> list[BlobReference]:
    """Op inputs/outputs as BlobReferences; raw strings get the current name scope."""
    if isinstance(blobs, str | bytes):
        return [ScopedBlobReference(blobs, net=net)]
    if type(blobs) is BlobReference:
        return [blobs]
    if type(blobs) in (list, tuple):
        rectified = []
        for blob in blobs:
            if isinstance(blob, str | bytes):
                rectified.append(ScopedBlobReference(blob, net=net))
            elif type(blob) is BlobReference:
                rectified.append(blob)
            else:
                raise TypeError(
                    f"I/O blob #{len(rectified)} of unsupported type: {blob} of type {type(blob)}"
                )
        return rectified
    raise TypeError(f"Unknown input/output type: {blobs} of type {type(blobs)}.")


def _is_immediate() -> bool:
    fn = getattr(workspace, "IsImmediate", None)
    return bool(fn is not None and fn())


def CreateOperator(
    operator_type: str,
    inputs: Any,
    outputs: Any,
    name: str = "",
    control_input: Any = None,
    device_option: caffe2_pb2.DeviceOption | None = None,
    arg: Iterable[caffe2_pb2.Argument] | None = None,
    engine: str | None = None,
    **kwargs: Any,
) -> caffe2_pb2.OperatorDef:
    """An OperatorDef; other keyword arguments become Arguments (see utils.MakeArgument)."""
    operator = caffe2_pb2.OperatorDef()
    if os.environ.get("CAFFE2_DEBUG"):
        operator.debug_info = "".join(traceback.format_stack()[:-1])
    operator.type = operator_type
    operator.name = name
    operator.input.extend([str(i) for i in _RectifyInputOutput(inputs)])
    operator.output.extend([str(o) for o in _RectifyInputOutput(outputs)])
    if control_input:
        operator.control_input.extend([str(i) for i in _RectifyInputOutput(control_input)])
    if device_option is not None:
        operator.device_option.CopyFrom(device_option)
    elif scope.CurrentDeviceScope() is not None:
        operator.device_option.CopyFrom(scope.CurrentDeviceScope())
    if engine is not None:
        operator.engine = engine
    if "random_seed" in kwargs:
        operator.device_option.random_seed = kwargs.pop("random_seed")
    if arg is not None:
        operator.arg.extend(arg)
    for key, value in kwargs.items():
        operator.arg.add().CopyFrom(utils.MakeArgument(key, value))
    if _is_immediate():
        workspace.RunOperatorImmediate(operator)
    return operator


# ---- Python operators ----------------------------------------------------------------------
def _RegisterPythonImpl(
    f: Any, grad_f: Any = None, python_func_type: Any = None, pass_workspace: bool = False
) -> str:
    if python_func_type:
        func = python_func_type(f)
        f = func.forward
        grad_f = func.backward
    else:
        if isinstance(f, tuple):
            f = f[0](*f[1], **f[2])
        if isinstance(grad_f, tuple):
            grad_f = grad_f[0](*grad_f[1], **grad_f[2])
    token = workspace.C.register_python_op(f, pass_workspace, "")
    if grad_f:
        workspace.C.register_python_gradient_op(token, grad_f)
    return token


def CreatePythonOperator(
    f: Any,
    inputs: Any,
    outputs: Any,
    grad_f: Any = None,
    pass_workspace: bool = False,
    python_func_type: Any = None,
    *args: Any,
    **kwargs: Any,
) -> caffe2_pb2.OperatorDef:
    """A standalone ``Python`` op running f(inputs, outputs[, workspace])."""
    kwargs["token"] = _RegisterPythonImpl(f, grad_f, python_func_type, pass_workspace)
    return CreateOperator("Python", inputs, outputs, *args, **kwargs)


def _make_python_builder(t: Any) -> bytes | str:
    if not isinstance(t, tuple):
        return ""
    assert len(t) == 3, "Expected builder tuple (func, args, kwargs)"
    func, args, kwargs = t
    return pickle.dumps((func, tuple(args), dict(kwargs)))


def _extract_stacktrace() -> list[tuple[str, int, str]]:
    """The caller's frames as (file, line, function), innermost first.

    Skips this function, _CreateAndAddToSelf and the closure that called it, so the first
    frame is the code that asked for the op.
    """
    result = []
    frame = sys._getframe(3)
    while frame:
        result.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    return result


def _get_blob_ref(blob_name_or_ref: Any) -> BlobReference:
    # QUIRK kept from Caffe2: the test looked at the builtin `input`, so the result is always
    # a fresh BlobReference without a net.
    return BlobReference(blob_name_or_ref)


def _recover_record_by_prefix(names: Iterable[str], prefix: str = "") -> Any:
    from caffe2.python import schema

    column_names = [name[len(prefix) :] for name in names if name.startswith(prefix)]
    if not column_names:
        return None
    return schema.from_column_list(
        column_names, col_blobs=[_get_blob_ref(prefix + name) for name in column_names]
    )


def output_to_list(op_output: Any) -> list[BlobReference]:
    """An op's output(s) as a list of BlobReferences."""
    assert type(op_output) in (list, tuple, BlobReference)
    return [op_output] if isinstance(op_output, BlobReference) else list(op_output)
