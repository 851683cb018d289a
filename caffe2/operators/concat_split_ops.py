"""Concat and Split (spec 15.3), their gradients, and the gradient of Sum (spec 5.7).

The axis comes from ``axis`` or, when it is absent, from ``order`` as Caffe2's
GetDimFromOrderString gave it: NCHW -> 1, NHWC -> 3 (the channel axis of a 4-D image
tensor). As in Caffe2, ``add_axis`` is read only together with an explicit ``axis``.

Kernels check shapes only when an input array changes identity and copy into the outputs'
own buffers. Split re-reads its ``split`` input on every run, since a Concat rewrites its
split_info in place.

Deliberate differences from Caffe2: Split checks its ``split`` argument (count, sign) when the
op is created rather than when it runs; Split's gradient fills the pieces of outputs without a
gradient with zeros, where Caffe2 left them out and so produced a gradient of the wrong size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from caffe2.operators._util import I32, output, tensor
from caffe2.operators.math_ops import STALE, canonical_axis
from caffe2.proto import caffe2_pb2
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.registry import Arg, gradient, operator

_ORDER_AXIS = {"NCHW": 1, "nchw": 1, "NHWC": 3, "nhwc": 3}


def _axis_args(op: Any, what: str) -> tuple[int, bool]:
    """(axis, add_axis) from the axis/order/add_axis arguments, checked at op creation."""
    if op.has_arg("axis") and op.has_arg("order"):
        raise op.error(
            f"You shouldn't specify both the dim to {what}, and the order in the case of "
            "4-D images."
        )
    if op.has_arg("axis"):
        return op.arg("axis"), bool(op.arg("add_axis"))
    order = op.arg("order")
    if order not in _ORDER_AXIS:
        raise op.error(f"Unsupported storage order: {order} (expected NCHW or NHWC)")
    return _ORDER_AXIS[order], False


_AXIS_ARGS = (Arg("axis", "int", -1), Arg("order", "str", "NCHW"), Arg("add_axis", "int", 0))


# ---- Concat ---------------------------------------------------------------------------------


@operator("Concat", inputs=(1, None), outputs=2, args=_AXIS_ARGS)
def concat(op: Any) -> Callable[[], None]:
    """Concat: [X1..Xn] -> [Y, split_info]. Joins the inputs along axis (or stacks them on a
    new axis with add_axis=1); split_info is int32 [n]: each input's size along the axis."""
    axis, add_axis = _axis_args(op, "concat")
    ins = tuple(op.inputs)
    n = len(ins)
    Y, Info = op.outputs
    cached: tuple = (STALE,) * n
    vy = vinfo = STALE
    xs: list[np.ndarray] = []
    y = info = sizes = None
    ax = 0

    def validate() -> None:
        nonlocal cached, vy, vinfo, xs, y, info, sizes, ax
        arrs = [tensor(op, i) for i in range(n)]
        x0 = arrs[0]
        ax = canonical_axis(op, axis, x0.ndim + add_axis, "axis", op.input_names[0])
        for i, x in enumerate(arrs[1:], 1):
            name = op.input_names[i]
            if x.dtype != x0.dtype:
                raise op.error(
                    f"All inputs must have the same type, expected: {x0.dtype} but got: "
                    f"{x.dtype} for input: {i} ({name})",
                    name,
                )
            same = x.ndim == x0.ndim and all(
                x0.shape[j] == x.shape[j] for j in range(x0.ndim) if add_axis or j != ax
            )
            if not same:
                where = "" if add_axis else f" and along the axis = {ax}"
                raise op.error(
                    f"The input tensors can only have different dimensions when arg "
                    f"'add_axis' = 0{where}: input 0 is {list(x0.shape)}, input {i} ({name}) "
                    f"is {list(x.shape)}",
                    name,
                )
        if add_axis:
            shape = x0.shape[:ax] + (n,) + x0.shape[ax:]
            sizes = np.ones(n, I32)
        else:
            sizes = np.array([x.shape[ax] for x in arrs], I32)
            shape = x0.shape[:ax] + (int(sizes.sum()),) + x0.shape[ax + 1 :]
        y = output(Y, shape, x0.dtype)
        info = output(Info, (n,), I32)
        xs = [np.expand_dims(x, ax) for x in arrs] if add_axis else arrs
        cached, vy, vinfo = tuple(b.value for b in ins), y, info

    def run() -> None:
        if (
            Y.value is not vy
            or Info.value is not vinfo
            or any(b.value is not v for b, v in zip(ins, cached, strict=True))
        ):
            validate()
        np.concatenate(xs, axis=ax, out=y)
        np.copyto(info, sizes)

    return run


# ---- Split ----------------------------------------------------------------------------------


@operator(
    "Split",
    inputs=(1, 2),
    outputs=(1, None),
    args=(*_AXIS_ARGS, Arg("split", "int32s", [])),
)
def split(op: Any) -> Callable[[], None]:
    """Split: [X] or [X, split] -> [Y1..Yk]. Cuts X along axis into pieces of the sizes given by
    the split argument or the int32 split input, else into k equal pieces (an indivisible size
    fails when the op runs); with add_axis=1 it unstacks the axis instead."""
    axis, add_axis = _axis_args(op, "split")
    arg_split = [int(v) for v in op.arg("split")]
    k = len(op.outputs)
    from_input = len(op.inputs) == 2
    if from_input and arg_split:
        raise op.error(
            "If you set split with an input blob, do not pass in split in the argument.",
            op.input_names[1],
        )
    if arg_split and len(arg_split) != k:
        raise op.error(
            f"The number of splits specified should be equal to the number of outputs: "
            f"split has {len(arg_split)} values, the op has {k} outputs"
        )
    if any(v < 0 for v in arg_split):
        raise op.error(f"split sizes must be non-negative, got {arg_split}")
    X = op.inputs[0]
    outs = tuple(op.outputs)
    vx = STALE
    vouts: tuple = (STALE,) * k
    vsizes: tuple | None = None
    pieces: list[tuple[np.ndarray, np.ndarray]] = []

    def read_split() -> tuple:
        s = tensor(op, 1)
        if s.dtype != I32:
            raise op.error(
                f"the split input {op.input_names[1]} must be an int32 tensor, not {s.dtype}",
                op.input_names[1],
            )
        if s.size != k:
            raise op.error(
                f"the split input {op.input_names[1]} has {s.size} values, but the op has {k} "
                "outputs",
                op.input_names[1],
            )
        return tuple(s.ravel().tolist())

    def validate(given: tuple | None) -> None:
        nonlocal vx, vouts, vsizes, pieces
        sizes = given
        x = tensor(op, 0)
        ax = canonical_axis(op, axis, x.ndim, "axis", op.input_names[0])
        channels = x.shape[ax]
        if sizes is None:
            if arg_split:
                sizes = tuple(arg_split)
            elif add_axis:
                sizes = (1,) * k
            else:
                if channels % k:
                    raise op.error(
                        "If you did not specify split explicitly, the number of input channels "
                        f"should be divisible by the output size: {channels} along axis {ax} "
                        f"of {op.input_names[0]} {list(x.shape)} into {k} outputs",
                        op.input_names[0],
                    )
                sizes = (channels // k,) * k
        elif any(v < 0 for v in sizes):
            raise op.error(
                f"split sizes must be non-negative, got {list(sizes)}", op.input_names[1]
            )
        total = k if add_axis else sum(sizes)
        if total != channels:
            raise op.error(
                f"Sum of split dimensions do not match: should be {channels} (axis {ax} of "
                f"{op.input_names[0]} {list(x.shape)}), got {list(sizes)}"
                + (f" ({k} outputs with add_axis)" if add_axis else ""),
                op.input_names[0],
            )
        new = []
        lead = (slice(None),) * ax
        start = 0
        for blob, size in zip(outs, sizes, strict=True):
            if add_axis:
                src = x[lead + (start,)]
                start += 1
            else:
                src = x[lead + (slice(start, start + size),)]
                start += size
            new.append((src, output(blob, src.shape, x.dtype)))
        pieces = new
        vx, vouts, vsizes = x, tuple(b.value for b in outs), given

    def run() -> None:
        sizes = read_split() if from_input else None
        if (
            X.value is not vx
            or sizes != vsizes
            or any(b.value is not v for b, v in zip(outs, vouts, strict=True))
        ):
            validate(sizes)
        for src, dst in pieces:
            np.copyto(dst, src)

    return run


# ---- gradients ------------------------------------------------------------------------------


def grad_op(
    fwd: caffe2_pb2.OperatorDef, op_type: str, inputs: list[str], outputs: list[str]
) -> caffe2_pb2.OperatorDef:
    """A gradient OperatorDef with the forward op's arguments, device option and engine, as
    Caffe2's GradientMakerBase copied them."""
    g = caffe2_pb2.OperatorDef(type=op_type, input=inputs, output=outputs, is_gradient_op=True)
    g.arg.extend(fwd.arg)
    if fwd.HasField("device_option"):
        g.device_option.CopyFrom(fwd.device_option)
    if fwd.HasField("engine"):
        g.engine = fwd.engine
    return g


def grad_name(name: str) -> str:
    return f"{name}_grad"


def dense_grads(opdef: caffe2_pb2.OperatorDef, g_output: list[Any]) -> list[str | None]:
    """The output gradient names, or an error if one is sparse (an (indices, values) pair)."""
    for out, g in zip(opdef.output, g_output, strict=True):
        if g is not None and not isinstance(g, str):
            raise EnforceError(
                f"Gradient of output {out} is sparse (expected dense).",
                f"gradient of {opdef.type}",
                out,
            )
    return list(g_output)


@gradient("Concat")
def concat_grad(
    opdef: caffe2_pb2.OperatorDef, g_output: list[Any]
) -> tuple[list[caffe2_pb2.OperatorDef], list[str | None]]:
    """Concat's gradient: Split([dY, split_info]) -> [dX1..dXn], with Concat's axis args."""
    g_output = dense_grads(opdef, g_output)
    if g_output[0] is None:
        return [], [None] * len(opdef.input)
    g_in = [grad_name(x) for x in opdef.input]
    return [grad_op(opdef, "Split", [g_output[0], opdef.output[1]], g_in)], list(g_in)


@gradient("Split")
def split_grad(
    opdef: caffe2_pb2.OperatorDef, g_output: list[Any]
) -> tuple[list[caffe2_pb2.OperatorDef], list[str | None]]:
    """Split's gradient: Concat of the output gradients into dX (and _dX_dims).

    Caffe2 concatenated only the outputs that have a gradient, which gives dX the wrong size;
    here a missing one is a zero tensor shaped like its output (ConstantFill, float).
    """
    n_in = len(opdef.input)
    g_output = dense_grads(opdef, g_output)
    if all(g is None for g in g_output):
        return [], [None] * n_in
    ops = []
    pieces = []
    for out, g in zip(opdef.output, g_output, strict=True):
        if g is None:
            g = f"{out}_zero_grad"
            fill = caffe2_pb2.OperatorDef(
                type="ConstantFill", input=[out], output=[g], is_gradient_op=True
            )
            fill.arg.add(name="value", f=0.0)
            if opdef.HasField("device_option"):
                fill.device_option.CopyFrom(opdef.device_option)
            ops.append(fill)
        pieces.append(g)
    dx = grad_name(opdef.input[0])
    ops.append(grad_op(opdef, "Concat", pieces, [dx, f"_{dx}_dims"]))
    return ops, [dx] + [None] * (n_in - 1)


@gradient("Sum")
def sum_grad(
    opdef: caffe2_pb2.OperatorDef, g_output: list[Any]
) -> tuple[list[caffe2_pb2.OperatorDef], list[str | None]]:
    """Sum's gradient: no ops; every input's gradient is the output's gradient blob."""
    g_output = dense_grads(opdef, g_output)
    return [], [g_output[0]] * len(opdef.input)
