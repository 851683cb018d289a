"""Reductions: ReduceSum, ReduceMean (with gradients), SumReduceLike, ReduceFrontSum and
ReduceBackSum.

Kernels check shapes only when an input array changes identity and reduce straight into the
output blob's own buffer (``out=``).

Deliberate differences from Caffe2: repeated ``axes`` are an error; ReduceMean over no
elements gives NaN; in ReduceFront/BackSum a length of 0 sums nothing (Caffe2 still read the
first element) and lengths out of range are an error rather than an out-of-bounds read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from caffe2.operators._util import FLOATS, I32, NUMERIC, check_dtype, output, tensor
from caffe2.operators.concat_split_ops import dense_grads, grad_name, grad_op
from caffe2.operators.elementwise_ops import _b_view
from caffe2.operators.math_ops import STALE
from caffe2.proto import caffe2_pb2
from caffe2.runtime.registry import Arg, gradient, operator

_REDUCE_ARGS = (Arg("axes", "ints", []), Arg("keepdims", "int", 1))


def _reduce_axes(op: Any, axes: list[int], ndim: int, blob: str) -> tuple[int, ...]:
    """The sorted, non-negative axes to reduce over (all of them when none are given)."""
    if not axes:
        return tuple(range(ndim))
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise op.error(
                f"Axes ids must be smaller than the dimensions of input: axis {a} for a "
                f"tensor with {ndim} dimensions",
                blob,
            )
        out.append(a + ndim if a < 0 else a)
    if len(set(out)) != len(out):
        raise op.error(f"axes must not repeat an axis: {axes} for {ndim} dimensions", blob)
    return tuple(sorted(out))


def _reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce(name: str, types: frozenset, mean: bool) -> None:
    @operator(name, inputs=1, outputs=1, args=_REDUCE_ARGS)
    def factory(op: Any) -> Callable[[], None]:
        axes_arg = op.arg("axes")
        keep = bool(op.arg("keepdims"))
        X = op.inputs[0]
        Y = op.outputs[0]
        vx = vy = STALE
        x = y = None
        axes: tuple[int, ...] = ()
        count = 0

        def validate() -> None:
            nonlocal vx, vy, x, y, axes, count
            x = tensor(op, 0)
            check_dtype(op, 0, x, types)
            axes = _reduce_axes(op, axes_arg, x.ndim, op.input_names[0])
            y = output(Y, _reduced_shape(x.shape, axes, keep), x.dtype)
            count = math.prod(x.shape[a] for a in axes)
            vx, vy = x, y

        def run_sum() -> None:
            if X.value is not vx or Y.value is not vy:
                validate()
            np.sum(x, axis=axes, dtype=x.dtype, keepdims=keep, out=y)

        def run_mean() -> None:
            if X.value is not vx or Y.value is not vy:
                validate()
            if count == 0:
                y.fill(np.nan)  # the mean of no values
                return
            np.sum(x, axis=axes, dtype=x.dtype, keepdims=keep, out=y)
            np.divide(y, count, out=y)

        return run_mean if mean else run_sum

    what = "mean" if mean else "sum"
    factory.__doc__ = (
        f"{name}: [X] -> Y, the {what} of X over axes (default: all), keeping the reduced "
        "axes as size 1 when keepdims=1 (the default)."
    )


_reduce("ReduceSum", NUMERIC, mean=False)
_reduce("ReduceMean", FLOATS, mean=True)


def _reduce_grad(name: str, types: frozenset, mean: bool) -> None:
    @operator(name, inputs=3, outputs=1, args=_REDUCE_ARGS)
    def factory(op: Any) -> Callable[[], None]:
        axes_arg = op.arg("axes")
        dY, X = op.inputs[0], op.inputs[1]
        dX = op.outputs[0]
        vg = vx = vdx = STALE
        src = dst = None
        count = 1

        def validate() -> None:
            nonlocal vg, vx, vdx, src, dst, count
            g = tensor(op, 0)
            check_dtype(op, 0, g, types)
            x = tensor(op, 1)
            axes = _reduce_axes(op, axes_arg, x.ndim, op.input_names[1])
            kept = _reduced_shape(x.shape, axes, True)
            if g.size != math.prod(kept):
                raise op.error(
                    f"the output gradient {op.input_names[0]} {list(g.shape)} does not match "
                    f"the reduction of {op.input_names[1]} {list(x.shape)} over axes "
                    f"{list(axes)}",
                    op.input_names[0],
                )
            dst = output(dX, x.shape, g.dtype)
            src = g.reshape(kept)
            count = math.prod(x.shape[a] for a in axes)
            if g.flags.c_contiguous:
                vg, vx, vdx = g, x, dst
            else:
                vg = vx = vdx = STALE

        def run() -> None:
            if dY.value is not vg or X.value is not vx or dX.value is not vdx:
                validate()
            if mean and count:
                np.divide(src, count, out=dst)
            else:
                np.copyto(dst, src)

        return run

    factory.__doc__ = f"{name}: [dY, X, Y] -> dX, dY broadcast back over the reduced axes of X" + (
        " and divided by their element count." if mean else "."
    )


_reduce_grad("ReduceSumGradient", NUMERIC, mean=False)
_reduce_grad("ReduceMeanGradient", FLOATS, mean=True)


def _reduce_gradient_maker(grad_type: str) -> Callable[..., Any]:
    def maker(
        opdef: caffe2_pb2.OperatorDef, g_output: list[Any]
    ) -> tuple[list[caffe2_pb2.OperatorDef], list[str | None]]:
        g_output = dense_grads(opdef, g_output)
        if g_output[0] is None:
            return [], [None]
        dx = grad_name(opdef.input[0])
        ins = [g_output[0], opdef.input[0], opdef.output[0]]
        return [grad_op(opdef, grad_type, ins, [dx])], [dx]

    maker.__doc__ = f"{grad_type}([dY, X, Y]) -> dX."
    return maker


gradient("ReduceSum")(_reduce_gradient_maker("ReduceSumGradient"))
gradient("ReduceMean")(_reduce_gradient_maker("ReduceMeanGradient"))


# ---- SumReduceLike --------------------------------------------------------------------------


def _sum_reduce_like_axis(op: Any) -> int:
    """axis from axis / axis_str + order, checked as SumReduceLikeOp's constructor did."""
    axis, axis_str = op.arg("axis"), op.arg("axis_str")
    if axis != -1:
        if axis_str:
            raise op.error("Args axis and axis_str cannot be used simultaneously.")
        return axis
    if axis_str:
        if len(axis_str) != 1:
            raise op.error(f"Unsupported axis string {axis_str}: only single characters")
        order = op.arg("order")
        pos = order.find(axis_str)
        if pos < 0:
            raise op.error(f"Unrecognizable axis string {axis_str} from order string {order}")
        return pos
    return -1


@operator(
    "SumReduceLike",
    inputs=2,
    outputs=1,
    args=(Arg("axis", "int", -1), Arg("axis_str", "str", ""), Arg("order", "str", "NCHW")),
)
def sum_reduce_like(op: Any) -> Callable[[], None]:
    """SumReduceLike: [A, B] -> C with B's shape: A summed over the dims that B, placed as the
    legacy broadcast of spec 15.2 places it (axis, size-1 dims stripped), does not cover."""
    axis = _sum_reduce_like_axis(op)
    A, B = op.inputs
    C = op.outputs[0]
    va = vb = vc = STALE
    a = out = None
    axes: tuple[int, ...] = ()

    def validate() -> None:
        nonlocal va, vb, vc, a, out, axes
        a = tensor(op, 0)
        check_dtype(op, 0, a, FLOATS)
        b = tensor(op, 1)
        view = _b_view(op, a, b, axis)
        kept = view.shape if view.ndim == a.ndim else (1,) * a.ndim
        axes = tuple(i for i, d in enumerate(kept) if d == 1)
        c = output(C, b.shape, a.dtype)
        out = c.reshape(kept)
        va, vb, vc = a, b, c

    def run() -> None:
        if A.value is not va or B.value is not vb or C.value is not vc:
            validate()
        np.sum(a, axis=axes, dtype=a.dtype, keepdims=True, out=out)

    return run


# ---- ReduceFrontSum / ReduceBackSum ---------------------------------------------------------


def _front_back_sum(name: str, front: bool) -> None:
    @operator(name, inputs=(1, 2), outputs=1, args=(Arg("num_reduce_dim", "int", 1),))
    def factory(op: Any) -> Callable[[], None]:
        nd = op.arg("num_reduce_dim")
        if nd < 0:
            raise op.error(f"num_reduce_dim must be non-negative, got {nd}")
        if len(op.inputs) == 2 and nd != 1:
            raise op.error(
                "Given lengths input, the number of reduce dimensions should be one "
                f"(num_reduce_dim={nd})."
            )
        X = op.inputs[0]
        L = op.inputs[1] if len(op.inputs) == 2 else None
        Y = op.outputs[0]
        vx = vy = STALE
        x2 = y1 = None
        rows = cols = 0

        def validate() -> None:
            nonlocal vx, vy, x2, y1, rows, cols
            x = tensor(op, 0)
            check_dtype(op, 0, x, NUMERIC)
            if nd > x.ndim:
                raise op.error(
                    "For N-dim input tensor, support num_reduce_dims in range [0, N]: "
                    f"num_reduce_dim={nd}, {op.input_names[0]} is {list(x.shape)}",
                    op.input_names[0],
                )
            cut = nd if front else x.ndim - nd
            rows, cols = math.prod(x.shape[:cut]), math.prod(x.shape[cut:])
            y = output(Y, x.shape[cut:] if front else x.shape[:cut], x.dtype)
            x2, y1 = x.reshape(rows, cols), y.reshape(-1)
            if x.flags.c_contiguous:
                vx, vy = x, y
            else:
                vx = vy = STALE

        def masked() -> np.ndarray:
            """x2 with the entries past each length zeroed (the lengths input)."""
            lengths = tensor(op, 1)
            if lengths.dtype != I32:
                raise op.error(
                    f"lengths must be an int32 tensor, not {lengths.dtype}", op.input_names[1]
                )
            n, limit = (cols, rows) if front else (rows, cols)
            if lengths.size != n:
                raise op.error(
                    f"lengths has {lengths.size} values, expected {n}", op.input_names[1]
                )
            flat = lengths.reshape(-1)
            if n and (flat.min() < 0 or flat.max() > limit):
                raise op.error(
                    f"lengths must lie in [0, {limit}], got {flat.tolist()}", op.input_names[1]
                )
            if front:
                keep = np.arange(rows)[:, None] < flat[None, :]
            else:
                keep = np.arange(cols)[None, :] < flat[:, None]
            return np.where(keep, x2, 0)

        def run() -> None:
            if X.value is not vx or Y.value is not vy:
                validate()
            src = x2 if L is None else masked()
            np.sum(src, axis=0 if front else 1, dtype=src.dtype, out=y1)

        return run

    side = "first" if front else "last"
    factory.__doc__ = (
        f"{name}: [X, (lengths)] -> Y, X summed over its {side} num_reduce_dim dims; the "
        "optional int32 lengths limit how many entries of each kept position are summed."
    )


_front_back_sum("ReduceFrontSum", front=True)
_front_back_sum("ReduceBackSum", front=False)
