"""Nets: a NetDef instantiated in a workspace, run as a loop over bound kernels.

Construction checks what Caffe2's NetBase checked (spec runtime.md 2.3) and instantiates every
operator once; ``SimpleNet.run`` is then a plain loop over the kernels. When a kernel raises,
the net works out which op it was and raises an OperatorError naming the net, the op's index
and type, and its blobs. Other executors (dag, async_scheduling, prof_dag) register here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from caffe2.proto import caffe2_pb2
from caffe2.runtime.errors import EnforceError, OperatorFailed
from caffe2.runtime.operator import Operator, create_operator, op_text

log = logging.getLogger("caffe2")

_NET_TYPES: dict[str, type[NetBase]] = {}


def register_net_type(*names: str) -> Callable[[type[NetBase]], type[NetBase]]:
    """Class decorator: make a net executor available under the given NetDef.type names."""

    def deco(cls: type[NetBase]) -> type[NetBase]:
        for n in names:
            if n in _NET_TYPES:
                raise RuntimeError(f"net type {n} is registered twice")
            _NET_TYPES[n] = cls
        return cls

    return deco


def net_types() -> list[str]:
    _load_executors()
    return sorted(_NET_TYPES)


def _load_executors() -> None:
    if "dag" not in _NET_TYPES:
        try:
            import caffe2.runtime.dag_net  # noqa: F401
        except ImportError:  # the dag executors are optional to the simple net
            pass


def create_net(netdef: caffe2_pb2.NetDef, ws: Any) -> NetBase | None:
    """Instantiate netdef in ws with the executor its type names; None for an unknown type."""
    if netdef.HasField("type"):
        _load_executors()
        cls = _NET_TYPES.get(netdef.type)
        if cls is None:
            return None
    else:
        cls = SimpleNet
    return cls(netdef, ws)


class OperatorError(EnforceError):
    """An operator failed while a net ran: names the net, the op's index, type and blobs."""

    def __init__(self, op: Operator, cause: BaseException) -> None:
        self.net_name = op.net_name
        self.op_index = op.index
        self.op_type = op.type
        self.cause = cause
        if isinstance(cause, EnforceError):
            # A check of this op keeps its text; a nested net's error keeps its own "where".
            detail = cause.msg if cause.where == op.where else cause.args[0]
            blob = cause.blob
        else:
            detail = f"{type(cause).__name__}: {cause}"
            blob = None
        msg = (
            f"{detail}\nError from operator: \n{op_text(op.opdef).strip()}\n"
            f"Blobs of the failing operator:\n{op.describe_blobs()}"
        )
        super().__init__(msg, op.where, blob)


class NetBase:
    """A NetDef instantiated in a workspace: validated, with every operator bound."""

    def __init__(self, netdef: caffe2_pb2.NetDef, ws: Any) -> None:
        self.netdef = netdef
        self.name = netdef.name
        self.ws = ws
        self._check_def()
        self.ops: list[Operator] = []
        dev = netdef.device_option if netdef.HasField("device_option") else None
        for i, opdef in enumerate(netdef.op):
            if dev is not None and not opdef.HasField("device_option"):
                opdef = _with_device(opdef, dev)
            try:
                self.ops.append(create_operator(opdef, ws, self.name, i))
            except Exception:
                if i != 0:  # QUIRK (spec 2.3): a failure of op 0 keeps the previous value
                    ws.last_failed_op_net_position = i
                raise

    def _check_def(self) -> None:
        nd = self.netdef
        where = f"net '{self.name}'"
        arg_names = [a.name for a in nd.arg]
        for a in arg_names:
            if arg_names.count(a) > 1:
                raise EnforceError(f"Duplicated argument name [{a}] found in net def", where)
        for op in nd.op:
            if op.HasField("device_option") and op.device_option.HasField("node_name"):
                raise EnforceError(
                    "node_name must be empty for all operators at execution time.", where
                )
        known = set(nd.external_input)
        strict = len(nd.external_input) > 0
        for op in nd.op:
            for name in op.input:
                if name not in known:
                    msg = (
                        f"op {op.type}: Source for input {name} is unknown for net {self.name}, "
                        f"operator {op_text(op).strip()}"
                    )
                    if strict:
                        raise EnforceError(msg, where, name)
                    log.debug(msg)
            known.update(op.output)
        missing = sorted(set(nd.external_output) - known)
        if missing:
            raise EnforceError(
                "Some of the blobs are declared as output but never produced by the net "
                f"{self.name}, the first one is {missing[0]}",
                where,
                missing[0],
            )

    def run(self) -> bool:
        raise NotImplementedError

    def stats(self) -> dict | None:
        """Per-operator timings, for executors that record them (prof_dag); else None."""
        return None

    def reset_stats(self) -> None:
        """Forget recorded timings (a no-op for executors that record none)."""

    def _fail(self, op: Operator, cause: BaseException) -> OperatorError:
        self.ws.last_failed_op_net_position = op.index
        return OperatorError(op, cause)

    def op_types(self) -> list[str]:
        return [op.type for op in self.ops]


def _with_device(opdef: caffe2_pb2.OperatorDef, dev: caffe2_pb2.DeviceOption):
    copy = caffe2_pb2.OperatorDef()
    copy.CopyFrom(opdef)
    copy.device_option.CopyFrom(dev)
    return copy


@register_net_type("simple")
class SimpleNet(NetBase):
    """Runs the operators in order: a loop over precompiled kernels."""

    def __init__(self, netdef: caffe2_pb2.NetDef, ws: Any) -> None:
        super().__init__(netdef, ws)
        self._kernels = tuple(op.kernel for op in self.ops)

    def run(self) -> bool:
        kernels = self._kernels
        it = iter(kernels)
        try:
            for k in it:
                k()
        except OperatorFailed:
            op = self.ops[len(kernels) - it.__length_hint__() - 1]
            self.ws.last_failed_op_net_position = op.index
            log.error("Operator failed: %s", op.where)
            return False
        except Exception as e:
            raise self._fail(self.ops[len(kernels) - it.__length_hint__() - 1], e) from e
        return True

    def run_n(self, n: int) -> bool:
        """Run n times; the loop of RunNet(name, num_iter)."""
        run = self.run
        for _ in range(n):
            if not run():
                return False
        return True


def run_operator_once(opdef: caffe2_pb2.OperatorDef, ws: Any) -> bool:
    """Construct a standalone op in ws (position -1) and run it once."""
    try:
        op = create_operator(opdef, ws, None, -1)
    except Exception:
        ws.last_failed_op_net_position = -1
        raise
    try:
        op.kernel()
    except OperatorFailed:
        log.error("Error when running operator %s", opdef.type)
        return False
    except Exception as e:
        raise OperatorError(op, e) from e
    return True
