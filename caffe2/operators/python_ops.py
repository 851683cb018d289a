"""The Python op bridge: ``Python`` / ``PythonGradient`` ops and their function registry.

A Python function is reached either through a token of the process-global registry
(``register_python_op``; looked up each time the op runs) or through ``pickled_builder``, a
pickled ``(func, args, kwargs)`` called once per op instance when the op is created. The
function is called as ``f(inputs, outputs)`` or ``f(inputs, outputs, workspace)`` with lists
of ``TensorCPU`` views of the op's blobs (spec runtime.md 3.5, 15.6).
"""

from __future__ import annotations

import pickle
import threading
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import describe
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.registry import Arg, gradient, operator
from caffe2.runtime.tensor import TensorCPU

_WHERE = "python op registry"


class PythonFunc(NamedTuple):
    """A registered (or built) Python op function and whether it takes the workspace."""

    func: Callable[..., Any]
    pass_workspace: bool


_registry: dict[str, PythonFunc] = {}
_registry_lock = threading.Lock()


def _not_available(token: str) -> str:
    return (
        f"Python operator for {token} is not available. If you use distributed training it "
        "probably means that python implementation has to be registered in each of the workers"
    )


def register_python_op(
    func: Callable[..., Any], pass_workspace: bool = False, name: str = ""
) -> str:
    """Register func and return its token: the base name, then ``base:1``, ``base:2`` ...

    The base is ``func.__name__`` (the type's name for a callable object without one),
    prefixed with ``name + ":"`` when name is non-empty, as Caffe2's pybind state did.
    """
    if func is None or not callable(func):
        raise EnforceError(f"register_python_op needs a callable, got {func!r}", _WHERE)
    base = getattr(func, "__name__", None) or type(func).__name__
    if name:
        base = f"{name}:{base}"
    with _registry_lock:
        token = base
        i = 1
        while token in _registry:
            token = f"{base}:{i}"
            i += 1
        _registry[token] = PythonFunc(func, bool(pass_workspace))
    return token


def register_python_op_as(
    token: str, func: Callable[..., Any], pass_workspace: bool = False
) -> None:
    """Register func under exactly ``token``, replacing any entry already there.

    For a process that must use the token another process chose (e.g. a distributed worker
    installing a function shipped by the driver under the driver's token). Unlike
    ``register_python_op`` no new token is derived; thread-safe like the other registry calls.
    """
    if not isinstance(token, str) or not token:
        raise EnforceError(f"register_python_op_as needs a non-empty token, got {token!r}", _WHERE)
    if func is None or not callable(func):
        raise EnforceError(f"register_python_op_as needs a callable, got {func!r}", _WHERE)
    with _registry_lock:
        _registry[token] = PythonFunc(func, bool(pass_workspace))


def register_python_gradient_op(token: str, grad_func: Callable[..., Any]) -> None:
    """Register the gradient function of a registered token (under ``token + "_gradient"``)."""
    if grad_func is None or not callable(grad_func):
        raise EnforceError(
            f"register_python_gradient_op needs a callable, got {grad_func!r}", _WHERE
        )
    with _registry_lock:
        if token not in _registry:
            raise EnforceError(
                f"Cannot register a gradient for {token}: no Python operator has that token",
                _WHERE,
            )
        # Gradient functions never get the workspace, as in Caffe2.
        _registry[token + "_gradient"] = PythonFunc(grad_func, False)


def find_python_op(token: str) -> PythonFunc | None:
    """The function registered under token, or None."""
    with _registry_lock:
        return _registry.get(token)


def get_python_op(token: str) -> PythonFunc:
    """The function registered under token, or the 'is not available' error."""
    f = find_python_op(token)
    if f is None:
        raise EnforceError(_not_available(token), _WHERE)
    return f


def clear_python_ops() -> None:
    """Forget every registered function (for tests only: tokens are process-global)."""
    with _registry_lock:
        _registry.clear()


def _exception_text(e: BaseException) -> str:
    """'<type>: <message>' followed by the Python traceback."""
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()
    return f"{type(e).__name__}: {e}\n\nAt:\n{tb}"


def _build(op: Any, pickled: bytes) -> Callable[..., Any]:
    """Unpickle (func, args, kwargs) and call it; errors name the op."""
    try:
        try:
            call = pickle.loads(pickled)
        except Exception:
            call = pickle.loads(pickled, encoding="latin1")  # a Python 2 pickle
        if not (
            isinstance(call, tuple)
            and len(call) == 3
            and callable(call[0])
            and isinstance(call[1], tuple)
            and isinstance(call[2], dict)
        ):
            raise TypeError(
                "the pickled builder must be a (callable, args tuple, kwargs dict) tuple, "
                f"got {type(call).__name__}"
            )
        func, args, kwargs = call
        built = func(*args, **kwargs)
        if not callable(built):
            raise TypeError(f"the builder returned {type(built).__name__}, not a callable")
    except Exception as e:
        raise op.error(
            f"Python exception encountered while creating PythonOp: {_exception_text(e)}"
        ) from e
    return built


def _c_workspace(op: Any) -> Any:
    """The op's workspace as a ``C.Workspace`` object (imported lazily: an upper layer)."""
    try:
        from caffe2.runtime.pybind_state import Workspace as CWorkspace

        wrap = CWorkspace._wrap
    except (ImportError, AttributeError) as e:
        raise op.error(
            "pass_workspace needs caffe2.runtime.pybind_state.Workspace._wrap, which is not "
            f"available: {e}"
        ) from e
    return wrap(op.ws)


def _python_kernel(op: Any, builder_arg: str, suffix: str) -> Callable[[], None]:
    token = op.arg("token")
    pickled = op.arg(builder_arg)
    if not pickled and not token:
        raise op.error("PythonOp requires either pickled_builder or token arg.")
    built = PythonFunc(_build(op, pickled), op.arg("pass_workspace")) if pickled else None
    key = token + suffix
    ins, outs = op.inputs, op.outputs
    in_names = op.input_names

    def run() -> None:
        fn = built
        if fn is None:
            with _registry_lock:
                fn = _registry.get(key)
            if fn is None:
                raise op.error(_not_available(key))
        in_views = []
        for i, b in enumerate(ins):
            if not isinstance(b.value, np.ndarray):
                raise op.error(
                    f"{op.type}: input {i} ({in_names[i]}) must be a tensor, but the blob holds "
                    f"{describe(b.value)}",
                    in_names[i],
                )
            in_views.append(TensorCPU(b))
        out_views = [TensorCPU(b) for b in outs]  # empty or non-tensor outputs become tensors
        args = (
            (in_views, out_views, _c_workspace(op)) if fn.pass_workspace else (in_views, out_views)
        )
        try:
            fn.func(*args)
        except Exception as e:
            raise RuntimeError(
                f"Exception encountered running PythonOp function: {_exception_text(e)}"
            ) from e

    return run


_PYTHON_ARGS = (
    Arg("token", "str", ""),
    Arg("pickled_builder", "bytes", b""),
    Arg("pickled_grad_builder", "bytes", b""),
    Arg("pass_workspace", "bool", False),
    Arg("grad_output_indices", "int32s", []),
    Arg("grad_input_indices", "int32s", []),
    Arg("forced_cpu_outputs", "int32s", []),
)


@operator(
    "Python",
    inputs=(0, None),
    outputs=(0, None),
    allow_inplace=True,
    args=_PYTHON_ARGS,
    needs_workspace=True,
)
def python_op(op: Any) -> Callable[[], None]:
    """Python: [inputs...] -> [outputs...]; calls the token's function or the built one."""
    return _python_kernel(op, "pickled_builder", "")


@operator(
    "PythonGradient",
    inputs=(0, None),
    outputs=(0, None),
    allow_inplace=True,
    args=_PYTHON_ARGS,
    needs_workspace=True,
)
def python_gradient_op(op: Any) -> Callable[[], None]:
    """PythonGradient: [ins, outs, out grads] -> [in grads]; token_gradient or grad builder."""
    return _python_kernel(op, "pickled_grad_builder", "_gradient")


def _int_list(opdef: caffe2_pb2.OperatorDef, name: str) -> list[int]:
    vals: list[int] = []
    for a in opdef.arg:
        if a.name == name:
            vals = list(a.ints)
    return vals


@gradient("Python")
def python_grad(
    opdef: caffe2_pb2.OperatorDef, g_output: list[str | None]
) -> tuple[list[caffe2_pb2.OperatorDef], list[str | None]]:
    """One PythonGradient op: [ins, outs, selected out grads] -> [selected in grads]."""
    where = f"gradient of operator {opdef.type}"
    n_in, n_out = len(opdef.input), len(opdef.output)
    go_idx = _int_list(opdef, "grad_output_indices") or list(range(n_out))
    gi_idx = _int_list(opdef, "grad_input_indices") or list(range(n_in))
    grad_inputs = list(opdef.input) + list(opdef.output)
    for i in go_idx:
        if not 0 <= i < n_out:
            raise EnforceError(f"grad_output_indices: {i} is out of range [0, {n_out})", where)
        g = g_output[i] if i < len(g_output) else None
        if not isinstance(g, str):
            raise EnforceError(
                f"Gradient of output {opdef.output[i]} is either sparse or not provided.", where
            )
        grad_inputs.append(g)
    g_input: list[str | None] = [None] * n_in
    grad_outputs = []
    for i in gi_idx:
        if not 0 <= i < n_in:
            raise EnforceError(f"grad_input_indices: {i} is out of range [0, {n_in})", where)
        g_input[i] = opdef.input[i] + "_grad"
        grad_outputs.append(g_input[i])
    g = caffe2_pb2.OperatorDef(
        type="PythonGradient", input=grad_inputs, output=grad_outputs, is_gradient_op=True
    )
    g.arg.extend(opdef.arg)  # same token / builder / indices
    if opdef.HasField("device_option"):
        g.device_option.CopyFrom(opdef.device_option)
    if opdef.HasField("engine"):
        g.engine = opdef.engine
    return [g], g_input
