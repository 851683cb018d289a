"""Shared helpers for the tests that build raw caffe2_pb2 protos and run them in a Workspace.

The operator and runtime tests work below caffe2.python: they write OperatorDefs, NetDefs
and PlanDefs by hand and run them in caffe2.runtime.workspace.Workspace.  tests/conftest.py
puts this folder on sys.path, so a test module says ``from netdefs import make_op, run``.

- protos: make_arg, make_op, make_net, grad_of; add_net, step, make_plan for plans;
- a Workspace: feed, put, fetch, create, run, run_ops, run_error, creation_error;
- DB files: HAVE_LMDB, needs_lmdb, write_db, read_db, WORKED_BLOB;
- threads: switch_interval, caffe2_threads.
"""

from __future__ import annotations

import numbers
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from caffe2.proto import caffe2_pb2
from caffe2.runtime import registry
from caffe2.runtime.db import Mode, open_db
from caffe2.runtime.net import NetBase, OperatorError
from caffe2.runtime.workspace import Workspace

TP = caffe2_pb2.TensorProto

# An op for make_net / add_net: an OperatorDef, or (type, inputs, outputs, {arg: value}).
OpSpec = caffe2_pb2.OperatorDef | tuple[str, list[str], list[str], dict[str, Any]]


# ---- protos ----------------------------------------------------------------------------------
def make_arg(name: str, value: Any) -> caffe2_pb2.Argument:
    """An Argument encoded by the type of value, much as caffe2.python.utils.MakeArgument.

    A NetDef goes to n; a bool or an integer to i; another real number to f; str (as UTF-8)
    or bytes to s.  A list or tuple of integers goes to ints; of real numbers with a
    non-integer among them (e.g. [1, 0.5]) to floats; of str or bytes to strings; an empty
    one leaves the name only (whichever field a test meant).  Anything else: TypeError.
    """
    a = caffe2_pb2.Argument(name=name)
    if isinstance(value, caffe2_pb2.NetDef):
        a.n.CopyFrom(value)
    elif isinstance(value, numbers.Integral):
        a.i = int(value)
    elif isinstance(value, numbers.Real):
        a.f = float(value)
    elif isinstance(value, bytes):
        a.s = value
    elif isinstance(value, str):
        a.s = value.encode()
    elif not isinstance(value, list | tuple):
        raise TypeError(f"argument {name}: cannot encode {value!r}")
    elif all(isinstance(x, numbers.Integral) for x in value):  # an empty list: name only
        a.ints.extend(int(x) for x in value)
    elif all(isinstance(x, numbers.Real) for x in value):
        a.floats.extend(float(x) for x in value)
    elif all(isinstance(x, str | bytes) for x in value):
        a.strings.extend(x if isinstance(x, bytes) else x.encode() for x in value)
    else:
        raise TypeError(f"argument {name}: cannot encode {value!r}")
    return a


def make_op(
    op_type: str, inputs: list[str], outputs: list[str], /, **args: Any
) -> caffe2_pb2.OperatorDef:
    """An OperatorDef; each keyword becomes an Argument (see make_arg), in the given order."""
    op = caffe2_pb2.OperatorDef(type=op_type, input=inputs, output=outputs)
    op.arg.extend(make_arg(k, v) for k, v in args.items())
    return op


def _as_op(spec: OpSpec) -> caffe2_pb2.OperatorDef:
    if isinstance(spec, caffe2_pb2.OperatorDef):
        return spec
    op_type, inputs, outputs, args = spec
    return make_op(op_type, inputs, outputs, **args)


def make_net(name: str, /, *ops: OpSpec, **fields: Any) -> caffe2_pb2.NetDef:
    """A NetDef of the ops (OperatorDefs or 4-tuples, see OpSpec); fields are NetDef fields."""
    nd = caffe2_pb2.NetDef(name=name, **fields)
    nd.op.extend(_as_op(op) for op in ops)
    return nd


def grad_of(op: caffe2_pb2.OperatorDef, g_output: list) -> tuple[list, list]:
    """What the op type's gradient maker returns for op: (gradient ops, input gradients)."""
    return registry.get_schema(op.type).gradient(op, g_output)


def add_net(
    plan: caffe2_pb2.PlanDef, name: str, /, *ops: OpSpec, **fields: Any
) -> caffe2_pb2.NetDef:
    """Add make_net(name, *ops, **fields) to the plan's networks; returns the plan's copy."""
    nd = plan.network.add()
    nd.CopyFrom(make_net(name, *ops, **fields))
    return nd


def step(name: str, nets=(), substeps=(), **fields: Any) -> caffe2_pb2.ExecutionStep:
    """An ExecutionStep running the named nets, or the substeps; fields are step fields."""
    s = caffe2_pb2.ExecutionStep(name=name, **fields)
    s.network.extend(nets)
    for sub in substeps:
        s.substep.add().CopyFrom(sub)
    return s


def make_plan(*steps: caffe2_pb2.ExecutionStep, name: str = "plan") -> caffe2_pb2.PlanDef:
    """A PlanDef of the steps (add its nets with add_net)."""
    plan = caffe2_pb2.PlanDef(name=name)
    for s in steps:
        plan.execution_step.add().CopyFrom(s)
    return plan


# ---- a Workspace -----------------------------------------------------------------------------
def feed(ws: Workspace, /, **blobs: Any) -> None:
    """Store each value as a fresh NumPy array: feed(ws, x=[1.0, 2.0], y=y)."""
    for name, value in blobs.items():
        ws.create_blob(name).value = np.array(value, copy=True)


def put(ws: Workspace, name: str, value: Any) -> None:
    """Store the value as it is (no copy, no conversion to an array)."""
    ws.create_blob(name).value = value


def fetch(ws: Workspace, name: str) -> Any:
    """The value of a blob (the blob must exist)."""
    return ws.get_blob(name).value


def create(ws: Workspace, *ops: OpSpec, name: str = "n") -> NetBase:
    """Create (overwriting) the net make_net(name, *ops) in the workspace."""
    net = ws.create_net(make_net(name, *ops), overwrite=True)
    assert net is not None
    return net


def run(ws: Workspace, *ops: OpSpec, name: str = "n") -> NetBase:
    """create() the net and run it once, which must succeed; returns the net."""
    net = create(ws, *ops, name=name)
    assert net.run()
    return net


def run_ops(ws: Workspace, *ops: caffe2_pb2.OperatorDef) -> None:
    """Run each op on its own (Workspace.run_operator_once, no net); each must succeed."""
    for op in ops:
        assert ws.run_operator_once(op)


def run_error(ws: Workspace, op: caffe2_pb2.OperatorDef, match: str) -> OperatorError:
    """Create a one-op net; running it must raise an OperatorError of the op matching match."""
    net = create(ws, op)
    with pytest.raises(OperatorError, match=match) as e:
        net.run()
    assert e.value.op_type == op.type
    return e.value


def creation_error(ws: Workspace, op: caffe2_pb2.OperatorDef, match: str) -> None:
    """Creating a one-op net must fail with a message matching match that names the op."""
    with pytest.raises(RuntimeError, match=match) as e:
        create(ws, op)
    assert f"({op.type})" in str(e.value)


# ---- DB files --------------------------------------------------------------------------------
try:
    import lmdb  # noqa: F401

    HAVE_LMDB = True
except ImportError:
    HAVE_LMDB = False

needs_lmdb = pytest.mark.skipif(not HAVE_LMDB, reason="the lmdb package is not installed")

# The serialized BlobProto of the spec's worked example: blob "x", int32 tensor [1, 2].
WORKED_BLOB = bytes.fromhex(
    "0a 01 78 12 06 54 65 6e 73 6f 72 1a 11 08 02 10 02 22 02 01 02 3a 01 78 5a 04 08 00 10 02"
)


def write_db(db_type: str, path, records, mode: Mode = Mode.NEW) -> None:
    """Write the (key, value) records, one committed and closed transaction each."""
    db = open_db(db_type, str(path), mode)
    for k, v in records:
        txn = db.new_transaction()
        txn.put(k, v)
        txn.commit()
        txn.close()
    db.close()


def read_db(db_type: str, path) -> list[tuple[bytes, bytes]]:
    """All (key, value) records of a DB, in cursor order."""
    db = open_db(db_type, str(path), Mode.READ)
    try:
        with db.new_cursor() as cur:
            return list(cur)
    finally:
        db.close()


# ---- threads ---------------------------------------------------------------------------------
@contextmanager
def switch_interval(seconds: float) -> Iterator[None]:
    """Make the interpreter switch threads every `seconds`, so races show up."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def caffe2_threads() -> list[str]:
    """The names of the live threads the runtime started (they are named "caffe2 ...")."""
    return [t.name for t in threading.enumerate() if t.name.startswith("caffe2 ")]
