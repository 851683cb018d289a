"""Operator creation: schema check, argument parsing, blob binding, kernel construction.

``create_operator`` does, once per op instance and in Caffe2's order (spec runtime.md 2.3):
the schema check (input/output counts, in-place pairs, required arguments), the input blob
existence check, output blob creation, argument parsing (2.4), and the call of the kernel
factory, which returns the zero-argument callable a net runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from google.protobuf import text_format

from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import Blob, describe
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.registry import Arg, OpSchema, lookup

log = logging.getLogger("caffe2")

_INT_RANGES = {
    "int": (-(2**63), 2**63 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "ints": (-(2**63), 2**63 - 1),
    "int32s": (-(2**31), 2**31 - 1),
}


def op_text(opdef: caffe2_pb2.OperatorDef) -> str:
    """The op in protobuf text format, as Caffe2 printed it in errors."""
    return text_format.MessageToString(opdef, as_utf8=True)


def where_text(net_name: str | None, index: int, op_type: str) -> str:
    if net_name is None or index < 0:
        return f"standalone op ({op_type})"
    return f"net '{net_name}', op #{index} ({op_type})"


class Operator:
    """An instantiated operator: its def, position, bound blobs and kernel."""

    __slots__ = (
        "opdef", "type", "index", "net_name", "schema", "input_names", "output_names",
        "inputs", "outputs", "kernel", "ws",
    )  # fmt: skip

    def __init__(self, init: OpInit, kernel: Callable[[], Any]) -> None:
        self.opdef = init.opdef
        self.type = init.type
        self.index = init.index
        self.net_name = init.net_name
        self.schema = init.schema
        self.input_names = init.input_names
        self.output_names = init.output_names
        self.inputs = init.inputs
        self.outputs = init.outputs
        self.kernel = kernel
        self.ws = init.ws

    @property
    def where(self) -> str:
        return where_text(self.net_name, self.index, self.type)

    def describe_blobs(self) -> str:
        """Each input and output with what it holds now, for error messages."""
        lines = []
        for kind, names, blobs in (
            ("input", self.input_names, self.inputs),
            ("output", self.output_names, self.outputs),
        ):
            for n, b in zip(names, blobs, strict=True):
                lines.append(f"  {kind} {n}: {describe(b.value)}")
        return "\n".join(lines)


class OpInit:
    """What a kernel factory receives: the def, the bound blobs and the parsed arguments."""

    def __init__(
        self,
        opdef: caffe2_pb2.OperatorDef,
        schema: OpSchema,
        ws: Any,
        net_name: str | None,
        index: int,
    ) -> None:
        self.opdef = opdef
        self.type = opdef.type
        self.schema = schema
        self.ws = ws
        self.net_name = net_name
        self.index = index
        self.input_names = list(opdef.input)
        self.output_names = list(opdef.output)
        self.inputs: list[Blob] = []
        self.outputs: list[Blob] = []
        self._raw = _collect_args(self)
        self.args = {name: self._parse(a) for name, a in schema.args.items()}

    @property
    def where(self) -> str:
        return where_text(self.net_name, self.index, self.type)

    def error(self, msg: str, blob: str | None = None) -> EnforceError:
        """An EnforceError naming this op; ``raise op.error(...)`` in a factory or kernel."""
        return EnforceError(msg, self.where, blob)

    def arg(self, name: str) -> Any:
        """The parsed value of a declared argument (its default when absent)."""
        return self.args[name]

    def has_arg(self, name: str) -> bool:
        return name in self._raw

    def raw_arg(self, name: str) -> caffe2_pb2.Argument | None:
        return self._raw.get(name)

    def parse_arg(self, name: str, kind: str, default: Any = None) -> Any:
        """Parse an undeclared argument by kind (for ops whose args depend on others)."""
        return self._parse(Arg(name, kind, default))

    def _parse(self, spec: Arg) -> Any:
        a = self._raw.get(spec.name)
        if a is None:
            if spec.required:
                raise self.error(f"Argument '{spec.name}' is required for {self.type}")
            return spec.default
        return parse_argument(a, spec.kind, self)


def _collect_args(init: OpInit) -> dict[str, caffe2_pb2.Argument]:
    raw: dict[str, caffe2_pb2.Argument] = {}
    for a in init.opdef.arg:
        prev = raw.get(a.name)
        if prev is not None and prev != a:
            raise init.error(
                f"Found argument of the same name {a.name}but with different contents."
            )
        if prev is not None:
            log.warning("Duplicated argument name [%s] found in operator def", a.name)
        raw[a.name] = a
    return raw


_SINGLE_FIELD = {"float": "f", "int": "i", "int32": "i", "int64": "i", "bool": "i",
                 "str": "s", "bytes": "s", "net": "n"}  # fmt: skip
_REPEATED_FIELD = {"floats": "floats", "ints": "ints", "int32s": "ints", "bools": "ints",
                   "strings": "strings", "bytes_list": "strings", "nets": "nets"}  # fmt: skip


def parse_argument(a: caffe2_pb2.Argument, kind: str, init: OpInit) -> Any:
    """Read an Argument as Caffe2's ArgumentHelper did (spec runtime.md 2.4)."""
    if kind == "raw":
        return a
    fld = _SINGLE_FIELD.get(kind)
    if fld is not None:
        if not a.HasField(fld):
            raise init.error(
                f"Argument {a.name} does not have the right field: expected field {fld}"
            )
        v = getattr(a, fld)
        if kind == "bool":
            return bool(v)
        if kind in _INT_RANGES:
            _check_int(v, kind, a.name, init)
        if kind == "str":
            return v.decode("utf-8", errors="replace")
        return v
    fld = _REPEATED_FIELD[kind]
    vals = list(getattr(a, fld))
    if kind in _INT_RANGES:
        for v in vals:
            _check_int(v, kind, a.name, init)
    elif kind == "bools":
        vals = [bool(v) for v in vals]
    elif kind == "strings":
        vals = [v.decode("utf-8", errors="replace") for v in vals]
    return vals


def _check_int(v: int, kind: str, name: str, init: OpInit) -> None:
    lo, hi = _INT_RANGES[kind]
    if not lo <= v <= hi:
        raise init.error(
            f"Value{v} of argument {name}cannot be represented correctly in a target type"
        )


def check_schema(opdef: caffe2_pb2.OperatorDef, schema: OpSchema) -> str | None:
    """None if the def passes the schema's count and in-place rules, else the reason."""
    n_in, n_out = len(opdef.input), len(opdef.output)
    why = schema.check_counts(n_in, n_out)
    if why:
        return why
    for i, name_in in enumerate(opdef.input):
        for o, name_out in enumerate(opdef.output):
            if name_in == name_out and not schema.inplace_allowed(i, o):
                return f"input {i} ({name_in}) and output {o} may not be in place"
    for i, o in schema.enforce_inplace:
        if i < n_in and o < n_out and opdef.input[i] != opdef.output[o]:
            return f"input {i} and output {o} must be in place"
    return None


def create_operator(
    opdef: caffe2_pb2.OperatorDef, ws: Any, net_name: str | None = None, index: int = -1
) -> Operator:
    """Instantiate one operator in ws: check it, bind its blobs, build its kernel."""
    device = "CPU"
    if opdef.HasField("device_option") and opdef.device_option.device_type == caffe2_pb2.CUDA:
        device = "CUDA"
    where = where_text(net_name, index, opdef.type)
    try:
        schema = lookup(opdef.type, device)
    except EnforceError as e:
        raise EnforceError(e.msg, where) from None
    why = check_schema(opdef, schema)
    if why is not None:
        raise EnforceError(
            f"Operator def did not pass schema checking: {why}\n{op_text(opdef).strip()}", where
        )
    init = OpInit(opdef, schema, ws, net_name, index)
    for name in init.input_names:
        b = ws.get_blob(name)
        if b is None:
            raise EnforceError(
                f"op {opdef.type}: Encountered a non-existing input blob: {name}", where, name
            )
        init.inputs.append(b)
    for name in init.output_names:
        b = ws.create_blob(name)
        if b is None:
            raise EnforceError(f"op {opdef.type}: Cannot create output blob: {name}", where, name)
        init.outputs.append(b)
    try:
        kernel = schema.factory(init)
    except Exception as e:  # EnforceError from the factory's checks, or a bad argument value
        if isinstance(e, EnforceError):
            detail = e.msg if e.where == where else e.args[0]  # a nested net keeps its place
        else:
            detail = f"{type(e).__name__}: {e}"
        blob = e.blob if isinstance(e, EnforceError) else None
        raise EnforceError(f"{detail}\nOperator: {op_text(opdef).strip()}", where, blob) from e
    return Operator(init, kernel)


def tensor_or_error(op: OpInit | Operator, value: object, name: str) -> np.ndarray:
    """value as a tensor, or Caffe2's type-mismatch error naming the blob."""
    if not isinstance(value, np.ndarray):
        raise EnforceError(
            f"{op.type}: expected a tensor in blob {name} but it holds {describe(value)}",
            op.where,
            name,
        )
    return value
