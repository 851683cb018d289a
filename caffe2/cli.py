"""The ``caffe2py`` command line.

- ``caffe2py run-plan PLAN`` runs a PlanDef (binary or text protobuf, detected), like Caffe2's
  ``run_plan`` binary. Blobs can be loaded from a DB before the run (``--load-db``) and
  printed (``--print-blob``) or saved to a DB (``--save-db``) after it.
- ``caffe2py show FILE`` prints a NetDef or PlanDef readably.

Exit codes: 0 on success; 1 when the plan (or a load, save or print of blobs) fails at run
time, with the runtime's message (naming the net, op and blob) on stderr; 2 for a usage
error or an input that cannot be used: a missing file, a file that is not a protobuf of the
expected kind, a NetDef given to ``run-plan``, an unknown DB type or flag.

``python -m caffe2.cli`` is the same command.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from caffe2.proto import caffe2_pb2
from caffe2.python import core, net_printer, workspace
from caffe2.runtime import db as dbmod
from caffe2.runtime.blob import type_name

__all__ = ["main", "build_parser", "read_proto", "show_text", "format_blob"]

PROG = "caffe2py"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

PLAN, NET = "PlanDef", "NetDef"
_KINDS: dict[str, type[Message]] = {PLAN: caffe2_pb2.PlanDef, NET: caffe2_pb2.NetDef}
_OP_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CliError(Exception):
    """A failure reported as one message on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# ---- reading protobuf files ------------------------------------------------------------------
@dataclass
class ProtoFile:
    """A NetDef or PlanDef read from a file, with how it was encoded."""

    path: str
    kind: str  # PLAN or NET
    encoding: str  # "binary" or "text"
    proto: Message


def _text_candidates(data: bytes) -> tuple[list[tuple[str, Message]], dict[str, str]]:
    """The kinds whose text format parses ``data`` (strictly: unknown fields fail), and the
    parse error of each other kind (none when data is not UTF-8 text)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], {}
    found, errors = [], {}
    for kind, cls in _KINDS.items():
        msg = cls()
        try:
            text_format.Parse(text, msg)
        except text_format.ParseError as e:
            errors[kind] = str(e).splitlines()[0] if str(e) else "parse error"
            continue
        found.append((kind, msg))
    return found, errors


def _clean(msg: Message) -> bool:
    """Whether msg and its sub-messages hold no unknown fields and only printable strings.

    Binary protobuf parsing is lenient, so a PlanDef also parses as a NetDef (its nets read
    as ops whose outputs are raw bytes); this tells the real reading from such accidents.
    """
    if len(UnknownFieldSet(msg)):
        return False
    for field, value in msg.ListFields():
        values = value if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if not all(_clean(v) for v in values):
                return False
        elif field.type == FieldDescriptor.TYPE_STRING:
            if not all(isinstance(v, str) and _printable(v) for v in values):
                return False
    return True


def _printable(s: str) -> bool:
    return s.isprintable() or all(c.isprintable() or c in "\n\r\t" for c in s)


def _plausible(kind: str, msg: Message) -> bool:
    """Whether a cleanly parsed message looks like a real one of its kind."""
    if not _clean(msg):
        return False
    if kind == NET:
        assert isinstance(msg, caffe2_pb2.NetDef)
        return all(_OP_TYPE.fullmatch(op.type) for op in msg.op)
    return True


def _binary_candidates(data: bytes) -> list[tuple[str, Message]]:
    """The kinds whose binary format parses ``data`` into a plausible message."""
    found = []
    for kind, cls in _KINDS.items():
        try:
            msg = cls.FromString(data)
        except (DecodeError, RuntimeError, ValueError):
            continue
        if _plausible(kind, msg):
            found.append((kind, msg))
    return found


def read_proto(path: str, expected: str | None = None) -> ProtoFile:
    """Read a PlanDef or NetDef from path, detecting text vs binary protobuf.

    When the content reads equally as both kinds (only a name), ``expected`` decides.
    Raises CliError (exit 2) for a missing or unreadable file or one that parses as neither.
    """
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CliError(f"{path}: is a directory, expected a protobuf file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CliError(f"{path}: cannot read: {e.strerror or e}") from None
    if not data.strip():
        raise CliError(f"{path}: the file is empty, expected a PlanDef or NetDef")
    text_found, text_errors = _text_candidates(data)
    for encoding, candidates in (("text", text_found), ("binary", _binary_candidates(data))):
        if not candidates:
            continue
        if len(candidates) > 1 and expected is not None:
            candidates = [c for c in candidates if c[0] == expected] or candidates
        kind, msg = candidates[0]
        return ProtoFile(path, kind, encoding, msg)
    detail = ""
    if text_errors:  # UTF-8 text: say why it is not the text format of the expected kind
        kind = expected or PLAN
        detail = f"; as a text {kind}: {text_errors[kind]}"
    raise CliError(
        f"{path}: not a PlanDef or NetDef (it parses as neither binary nor text protobuf)" + detail
    )


# ---- run-plan --------------------------------------------------------------------------------
def _global_init(flags: Sequence[str]) -> None:
    """Pass ``--caffe2-flag NAME=VALUE`` settings to GlobalInit (exit 2 on a bad flag)."""
    if not flags:
        return
    try:
        workspace.GlobalInit([PROG] + ["--" + f.lstrip("-") for f in flags])
    except RuntimeError as e:
        raise CliError(_message(e)) from None


def _check_db_type(db_type: str) -> None:
    if not dbmod.has_db_type(db_type):
        raise CliError(dbmod.unknown_type_hint(db_type))


def _message(e: BaseException) -> str:
    return str(e).strip() or type(e).__name__


def _run_op(op: caffe2_pb2.OperatorDef, what: str) -> None:
    """Run one op in the current workspace; a failure exits 1 with the runtime's message."""
    try:
        ok = workspace.RunOperatorOnce(op)
    except RuntimeError as e:
        raise CliError(f"{what} failed: {_message(e)}", EXIT_FAILED) from None
    if not ok:
        raise CliError(f"{what} failed", EXIT_FAILED)


def load_blobs(path: str, db_type: str, names: Sequence[str]) -> None:
    """Load the named blobs (all blobs when names is empty) from a DB into the workspace."""
    _check_db_type(db_type)
    if not os.path.exists(path):
        raise CliError(f"{path}: no such {db_type} DB to load")
    op = core.CreateOperator(
        "Load",
        [],
        list(names),
        db=path,
        db_type=db_type,
        absolute_path=1,
        load_all=0 if names else 1,
    )
    _run_op(op, f"loading blobs from {db_type} DB {path}")


def save_blobs(path: str, db_type: str, names: Sequence[str]) -> None:
    """Save the named blobs of the workspace to a DB (replacing any DB at path)."""
    _check_db_type(db_type)
    op = core.CreateOperator("Save", list(names), [], db=path, db_type=db_type, absolute_path=1)
    _run_op(op, f"saving blobs to {db_type} DB {path}")


def format_blob(name: str) -> str:
    """A readable rendering of a blob: kind, dtype and shape, then the values."""
    if not workspace.HasBlob(name):
        raise CliError(f"cannot print blob {name}: no such blob in the workspace", EXIT_FAILED)
    blob = workspace.C.current_runtime_workspace().get_blob(name)
    value = None if blob is None else blob.value
    if not isinstance(value, np.ndarray | bytes):
        return f"{name}: {type_name(value)} (not a tensor or string: no values to print)"
    if isinstance(value, bytes):
        return f"{name}: string ({len(value)} bytes)\n{value!r}"
    arr = np.asarray(value)
    dtype = "string" if arr.dtype.kind == "O" else str(arr.dtype)
    if arr.ndim == 0:
        body = str(arr[()])
    else:
        body = np.array2string(arr, separator=", ") if arr.size else "[]"
    return f"{name}: {dtype} tensor, shape {tuple(arr.shape)}\n{body}"


def cmd_run_plan(args: argparse.Namespace) -> int:
    """``run-plan``: optional load, the plan run, then printing and saving of blobs."""
    if args.load_blob and not args.load_db:
        raise CliError("--load-blob needs --load-db")
    if args.save_blob and not args.save_db:
        raise CliError("--save-blob needs --save-db")
    if args.save_db and not args.save_blob:
        raise CliError("--save-db needs at least one --save-blob")
    save_type = args.save_db_type or args.db_type
    for db_type in dict.fromkeys([args.db_type, save_type]):
        _check_db_type(db_type)
    pf = read_proto(args.plan, expected=PLAN)
    if pf.kind != PLAN:
        raise CliError(
            f"{args.plan}: is a {pf.kind} ({pf.encoding} protobuf), but run-plan expects a PlanDef"
        )
    _global_init(args.caffe2_flag)
    if args.root_folder:
        try:
            workspace.ResetWorkspace(args.root_folder)
        except OSError as e:
            raise CliError(f"{args.root_folder}: cannot use as root folder: {e}") from None
    if args.load_db:
        load_blobs(args.load_db, args.db_type, args.load_blob)
    plan = pf.proto
    assert isinstance(plan, caffe2_pb2.PlanDef)
    try:
        workspace.RunPlan(plan)
    except RuntimeError as e:
        raise CliError(f"plan '{plan.name}' failed: {_message(e)}", EXIT_FAILED) from None
    for name in args.print_blob:
        print(format_blob(name))
    if args.save_db:
        save_blobs(args.save_db, save_type, args.save_blob)
    return EXIT_OK


# ---- show ------------------------------------------------------------------------------------
def _format_arg(arg: caffe2_pb2.Argument) -> str:
    def text(s: bytes) -> str:
        return repr(s.decode("utf-8", errors="replace"))

    if arg.HasField("f"):
        value = repr(arg.f)
    elif arg.HasField("i"):
        value = str(arg.i)
    elif arg.HasField("s"):
        value = text(arg.s)
    elif arg.HasField("n"):
        value = f"<net {arg.n.name}>"
    elif arg.floats:
        value = "[" + ", ".join(repr(f) for f in arg.floats) + "]"
    elif arg.ints:
        value = str(list(arg.ints))
    elif arg.strings:
        value = "[" + ", ".join(text(s) for s in arg.strings) + "]"
    elif arg.nets:
        value = "[" + ", ".join(f"<net {n.name}>" for n in arg.nets) + "]"
    else:
        value = "[]"
    return f"{arg.name}={value}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "(none)"


def describe_net(net: caffe2_pb2.NetDef, indent: str = "") -> list[str]:
    """A net's header, external inputs/outputs and numbered op list (inputs, outputs, args)."""
    kind = net.type or "simple"
    lines = [f"{indent}net '{net.name}' (type {kind}, {_count(len(net.op), 'op')})"]
    if net.external_input:
        lines.append(f"{indent}  external inputs:  {_names(net.external_input)}")
    if net.external_output:
        lines.append(f"{indent}  external outputs: {_names(net.external_output)}")
    if net.arg:
        lines.append(f"{indent}  args: {', '.join(_format_arg(a) for a in net.arg)}")
    for i, op in enumerate(net.op):
        title = f"#{i} {op.type}" + (f" '{op.name}'" if op.name else "")
        if op.engine:
            title += f" (engine {op.engine})"
        lines.append(f"{indent}  {title}")
        lines.append(f"{indent}      inputs:  {_names(op.input)}")
        lines.append(f"{indent}      outputs: {_names(op.output)}")
        if op.arg:
            lines.append(f"{indent}      args:    {', '.join(_format_arg(a) for a in op.arg)}")
        if op.control_input:
            lines.append(f"{indent}      control inputs: {_names(op.control_input)}")
    return lines


def _step_lines(step: caffe2_pb2.ExecutionStep, indent: str) -> list[str]:
    """A plain outline of a step tree (used when net_printer cannot render the plan)."""
    opts = [
        f"{f.name}={v}"
        for f, v in step.ListFields()
        if f.name not in ("name", "substep", "network")
    ]
    head = f"{indent}step '{step.name}'" + (f" ({', '.join(opts)})" if opts else "")
    lines = [head]
    for net_name in step.network:
        lines.append(f"{indent}  run net '{net_name}'")
    for sub in step.substep:
        lines.extend(_step_lines(sub, indent + "  "))
    return lines


def show_text(pf: ProtoFile) -> str:
    """The readable rendering ``show`` prints for a NetDef or PlanDef."""
    out = [f"{pf.path}: {pf.kind} ({pf.encoding} protobuf)"]
    if pf.kind == NET:
        net = pf.proto
        assert isinstance(net, caffe2_pb2.NetDef)
        out += ["", "== net (as code) ==", net_printer.to_string(net).rstrip()]
        out += ["", "== ops ==", *describe_net(net)]
        return "\n".join(out)
    plan = pf.proto
    assert isinstance(plan, caffe2_pb2.PlanDef)
    out.append(
        f"plan '{plan.name}': {_count(len(plan.network), 'net')}, "
        f"{_count(len(plan.execution_step), 'top-level execution step')}"
    )
    out += ["", "== execution (as code) =="]
    try:
        out.append(net_printer.to_string(core.Plan.create_from_proto(plan)).rstrip())
    except Exception as e:  # a malformed step tree: fall back to a plain outline
        out.append(f"(cannot render as code: {type(e).__name__}: {e})".rstrip())
        for step in plan.execution_step:
            out.extend(_step_lines(step, ""))
    for net in plan.network:
        out += ["", *describe_net(net)]
    return "\n".join(out)


def cmd_show(args: argparse.Namespace) -> int:
    """``show``: print a NetDef or PlanDef file readably."""
    print(show_text(read_proto(args.file)))
    return EXIT_OK


# ---- entry point -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``caffe2py`` and its subcommands."""
    parser = argparse.ArgumentParser(prog=PROG, description="Caffe2 (caffe2py) tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run-plan",
        help="run a PlanDef (binary or text protobuf)",
        description="Run a PlanDef stored as binary or text protobuf (format detected).",
    )
    run.add_argument("plan", metavar="PLAN", help="the PlanDef file")
    run.add_argument("--load-db", metavar="PATH", help="load blobs from this DB before the run")
    run.add_argument(
        "--db-type",
        default="minidb",
        metavar="TYPE",
        help=f"type of the DBs (default minidb; one of {', '.join(_db_types())})",
    )
    run.add_argument(
        "--load-blob",
        action="append",
        default=[],
        metavar="NAME",
        help="a blob to load from --load-db (repeatable; default: all blobs of the DB)",
    )
    run.add_argument(
        "--print-blob",
        action="append",
        default=[],
        metavar="NAME",
        help="print this blob after the run (repeatable)",
    )
    run.add_argument("--save-db", metavar="PATH", help="save blobs to this DB after the run")
    run.add_argument(
        "--save-db-type", metavar="TYPE", help="type of --save-db (default: --db-type)"
    )
    run.add_argument(
        "--save-blob",
        action="append",
        default=[],
        metavar="NAME",
        help="a blob to save to --save-db (repeatable)",
    )
    run.add_argument(
        "--root-folder",
        metavar="DIR",
        help="workspace root folder (relative DB paths of the plan's ops resolve there)",
    )
    run.add_argument(
        "--caffe2-flag",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Caffe2 flag for GlobalInit, e.g. caffe2_tensor_chunk_size=100 (repeatable)",
    )
    run.set_defaults(func=cmd_run_plan)

    show = sub.add_parser(
        "show",
        help="print a NetDef or PlanDef readably",
        description="Print a NetDef or PlanDef (binary or text protobuf) readably.",
    )
    show.add_argument("file", metavar="FILE", help="the NetDef or PlanDef file")
    show.set_defaults(func=cmd_show)
    return parser


def _db_types() -> list[str]:
    return [t for t in dbmod.registered_db_types() if t.islower()]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``caffe2py`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CliError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
