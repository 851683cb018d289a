"""Control-flow ops used by NetBuilder: CreateScope, HasScope, Do, If, While (spec 2.6, 15.5).

``Do`` runs a subnet in an inner workspace that sees only the outer blobs bound to it; the
inner workspaces live on a ``WorkspaceStack`` held in a blob, created by ``CreateScope``.
``If`` and ``While`` instantiate their subnets in the op's own workspace when the op is
created; those nets belong to the op and are not registered in the workspace's net map.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from caffe2.operators._util import BOOL, output
from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import describe, dtype_name
from caffe2.runtime.errors import EnforceError, OperatorFailed
from caffe2.runtime.net import NetBase, create_net
from caffe2.runtime.registry import Arg, operator
from caffe2.runtime.workspace import Workspace


class WorkspaceStack:
    """Child workspaces of Do ops plus a ``top`` index (Caffe2's detail::WorkspaceStack).

    A reset (CreateScope) only sets ``top`` back to -1: the workspaces stay, and the next
    push at each depth reuses the one created there before, with its local blobs and nets.
    Every method holds the stack's lock.
    """

    caffe2_type_name = "caffe2::detail::WorkspaceStack"

    def __init__(self) -> None:
        self._workspaces: list[Workspace] = []
        self._top = -1
        self._lock = threading.Lock()

    def push_forward_workspace(self, parent: Workspace, bindings: dict[str, str]) -> Workspace:
        """The workspace one level above top, created or reused; top moves up to it."""
        with self._lock:
            if self._top == len(self._workspaces) - 1:
                self._workspaces.append(Workspace(parent=parent, forwarded=dict(bindings)))
            else:
                ws = self._workspaces[self._top + 1]
                # Bound names that became local copies (copy_external_blobs) are re-bound.
                local = set(ws.local_blobs())
                found_local_copy = False
                for inner in bindings:
                    if inner in local:
                        ws.remove_blob(inner)
                        found_local_copy = True
                if found_local_copy:
                    ws.add_blob_mapping(parent, bindings)
            self._top += 1
            return self._workspaces[self._top]

    def reuse_last_forward_workspace(
        self, parent: Workspace, bindings: dict[str, str]
    ) -> Workspace | None:
        """The workspace at top with the bindings re-added; None on an empty stack."""
        with self._lock:
            if self._top < 0:
                return None
            ws = self._workspaces[self._top]
            ws.add_blob_mapping(parent, bindings)
            return ws

    def pop_gradient_workspace(
        self, parent: Workspace, grad_bindings: dict[str, str]
    ) -> Workspace | None:
        """The workspace at top with the gradient bindings added; top moves down."""
        with self._lock:
            if self._top < 0:
                return None
            ws = self._workspaces[self._top]
            ws.add_blob_mapping(parent, grad_bindings, skip_defined=True)
            self._top -= 1
            return ws

    def clear(self) -> None:
        """Reset to empty, keeping the workspaces for reuse."""
        with self._lock:
            self._top = -1

    def empty(self) -> bool:
        """True when no workspace is on the stack (top == -1)."""
        return self._top < 0

    @property
    def depth(self) -> int:
        """Number of workspaces currently on the stack (top + 1)."""
        return self._top + 1

    @property
    def num_workspaces(self) -> int:
        """Number of workspaces ever created on this stack (kept across resets)."""
        return len(self._workspaces)

    def __repr__(self) -> str:
        return f"<WorkspaceStack depth={self.depth} created={len(self._workspaces)}>"


# ---- CreateScope / HasScope -------------------------------------------------------------


@operator("CreateScope", inputs=0, outputs=1, needs_workspace=True)
def create_scope(op: Any) -> Callable[[], None]:
    """CreateScope: [] -> ws_stack. Resets the stack (an empty blob gets a fresh one)."""
    S = op.outputs[0]

    def run() -> None:
        stack = S.value
        if isinstance(stack, WorkspaceStack):
            stack.clear()
        else:
            S.value = WorkspaceStack()

    return run


@operator("HasScope", inputs=1, outputs=1, needs_workspace=True)
def has_scope(op: Any) -> Callable[[], None]:
    """HasScope: [ws_stack] -> bool tensor of shape [1], true if the stack is not empty."""
    S, Y = op.inputs[0], op.outputs[0]

    def run() -> None:
        stack = _stack_of(op, S.value, op.input_names[0])
        output(Y, (1,), BOOL)[0] = not stack.empty()

    return run


def _stack_of(op: Any, value: object, name: str) -> WorkspaceStack:
    if not isinstance(value, WorkspaceStack):
        raise op.error(
            f"{op.type}: blob {name} must hold a workspace stack, but it holds {describe(value)}",
            name,
        )
    return value


# ---- Do ---------------------------------------------------------------------------------


def _net_arg(op: Any, name: str) -> caffe2_pb2.NetDef | None:
    """The NetDef of argument name, or None unless it is present with its ``n`` field set."""
    a = op.raw_arg(name)
    if a is None or not a.HasField("n"):
        return None
    return a.n


def _outer_names(op: Any) -> list[str]:
    """Input names then output names, both without the trailing workspace-stack blob."""
    ins = list(op.input_names)
    if not ins:
        raise op.error("Expected at least one input blob")
    ws_in = ins.pop()
    if len(set(ins)) != len(ins):
        raise op.error("Duplicate input blobs")
    outs = list(op.output_names)
    if not outs:
        raise op.error("Expected at least one output blob")
    ws_out = outs.pop()
    if ws_in != ws_out:
        raise op.error(f"Expected same input/output workspace blob ({ws_in} vs {ws_out})", ws_out)
    if len(set(outs)) != len(outs):
        raise op.error("Duplicate output blobs")
    return ins + outs


def _do_bindings(op: Any) -> dict[str, str]:
    """inner name -> outer name, checked as Caffe2's DoOp constructor did."""
    inner = op.arg("inner_blobs")
    idx = op.arg("outer_blobs_idx")
    if len(inner) != len(idx):
        raise op.error(
            "Invalid blob bindings: different inner/outer blobs lengths "
            f"({len(inner)} vs {len(idx)})"
        )
    outer = _outer_names(op)
    bindings: dict[str, str] = {}
    used: set[str] = set()
    for name, i in zip(inner, idx, strict=True):
        if name in bindings:
            raise op.error(f"Invalid blob bindings: redefinition of inner blob {name}")
        if not 0 <= i < len(outer):
            raise op.error(
                f"Invalid blob bindings: outer blob index ({i}, inner name: {name}) is out of "
                f"bounds [0, {len(outer) - 1}]"
            )
        outer_name = outer[i]
        if outer_name in used:
            raise op.error(f"Reusage of outer name: {outer_name}", outer_name)
        used.add(outer_name)
        bindings[name] = outer_name
    missing = [n for n in dict.fromkeys(outer) if n not in used]
    if missing:
        raise op.error(
            f"Not all outer names are used in blob bindings (unbound: {', '.join(missing)})",
            missing[0],
        )
    return bindings


@operator(
    "Do",
    inputs=(1, None),
    outputs=(1, None),
    allow_inplace=True,
    args=(
        Arg("net", "raw"),
        Arg("inner_blobs", "strings", []),
        Arg("outer_blobs_idx", "int32s", []),
        Arg("copy_external_blobs", "bool", False),
        Arg("reuse_workspace", "bool", False),
    ),
    needs_workspace=True,
)
def do_op(op: Any) -> Callable[[], None]:
    """Do: [outer inputs..., ws_stack] -> [outer outputs..., ws_stack]; runs `net` inside."""
    netdef = _net_arg(op, "net")
    if netdef is None:
        raise op.error("net must be specified in Do operator")
    is_gradient = bool(op.opdef.is_gradient_op)
    copy_external = op.arg("copy_external_blobs")
    reuse = op.arg("reuse_workspace")
    if is_gradient and reuse:
        raise op.error("Gradient Do op requires use of stacked workspaces")
    if copy_external and reuse:
        raise op.error("Reuse workspace and copy external blobs simultaneously in Do op")
    bindings = _do_bindings(op)
    forwarded_inner = list(bindings)
    parent = op.ws
    S = op.outputs[-1]
    stack_name = op.output_names[-1]
    net_name = netdef.name

    def run() -> None:
        stack = S.value
        if stack is None:
            stack = S.value = WorkspaceStack()
        else:
            stack = _stack_of(op, stack, stack_name)
        if is_gradient:
            inner_ws = stack.pop_gradient_workspace(parent, bindings)
        elif reuse and not stack.empty():
            inner_ws = stack.reuse_last_forward_workspace(parent, bindings)
        else:
            inner_ws = stack.push_forward_workspace(parent, bindings)
        if inner_ws is None:
            raise op.error("Failed to initialize Do op workspace", stack_name)
        net = inner_ws.get_net(net_name)
        if net is None:
            net = inner_ws.create_net(netdef, overwrite=True)
            if net is None:
                raise op.error(f"Failed to initialize subnet {net_name!r} (type {netdef.type!r})")
        ok = net.run()
        if not is_gradient and copy_external:
            inner_ws.copy_forwarded_tensors(forwarded_inner)
        if not ok:
            raise OperatorFailed(f"{op.where}: subnet {net_name!r} failed")

    return run


# ---- If / While -------------------------------------------------------------------------


def _subnet(op: Any, arg: str, what: str, required: bool) -> NetBase | None:
    """Instantiate the NetDef of argument arg in the op's workspace (owned by the op)."""
    netdef = _net_arg(op, arg)
    if netdef is None:
        if required:
            raise op.error(f"{arg} must be specified in {op.type} operator")
        return None
    try:
        net = create_net(netdef, op.ws)
    except Exception as e:  # keep the subnet's own net name and op index in the message
        blob = e.blob if isinstance(e, EnforceError) else None
        text = e.args[0] if isinstance(e, EnforceError) else f"{type(e).__name__}: {e}"
        raise op.error(f"{arg} could not be instantiated: {text}", blob) from e
    if net is None:
        raise op.error(f"Failed to initialize {what} subnet (net type {netdef.type!r})")
    return net


def _condition(op: Any) -> bool:
    """Input 0 as a one-element bool tensor, read now, or the If/While enforce error."""
    name = op.input_names[0]
    v = op.inputs[0].value
    if not isinstance(v, np.ndarray):
        raise op.error(
            f"Invalid condition in {op.type} operator: tensor expected (blob holds {describe(v)})",
            name,
        )
    if v.size != 1:
        raise op.error(
            f"Invalid condition tensor in {op.type} operator: single value expected (shape "
            f"{list(v.shape)})",
            name,
        )
    if v.dtype != BOOL:
        raise op.error(
            "Tensor type mismatch, caller expects elements to be bool, while tensor contains "
            f"{dtype_name(v.dtype)}.",
            name,
        )
    return bool(v.reshape(-1)[0])


def _run_subnet(op: Any, net: NetBase, what: str) -> None:
    if not net.run():
        raise OperatorFailed(f"{op.where}: {what} {net.name!r} failed")


@operator(
    "If",
    inputs=(1, None),
    outputs=(0, None),
    allow_inplace=True,
    args=(Arg("then_net", "raw"), Arg("else_net", "raw")),
    needs_workspace=True,
)
def if_op(op: Any) -> Callable[[], None]:
    """If: [cond, ...] -> [...]; runs then_net if cond[0], else else_net (if any)."""
    then_net = _subnet(op, "then_net", "then", required=True)
    else_net = _subnet(op, "else_net", "else", required=False)

    def run() -> None:
        if _condition(op):
            _run_subnet(op, then_net, "then_net")
        elif else_net is not None:
            _run_subnet(op, else_net, "else_net")

    return run


@operator(
    "While",
    inputs=(1, None),
    outputs=(0, None),
    allow_inplace=True,
    args=(Arg("loop_net", "raw"), Arg("cond_net", "raw")),
    needs_workspace=True,
)
def while_op(op: Any) -> Callable[[], None]:
    """While: [cond, ...] -> [...]; loop: run cond_net (if any), stop if !cond[0], run loop_net."""
    loop_net = _subnet(op, "loop_net", "loop", required=True)
    cond_net = _subnet(op, "cond_net", "condition", required=False)

    def run() -> None:
        _condition(op)  # checked once before cond_net first runs
        while True:
            if cond_net is not None:
                _run_subnet(op, cond_net, "cond_net")
            if not _condition(op):  # read afresh: cond_net or loop_net may replace it
                return
            _run_subnet(op, loop_net, "loop_net")

    return run
