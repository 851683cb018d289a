"""Dense math: MatMul, FC, Softmax, Scale and WeightedSum.

Every kernel validates its inputs only when the arrays in its blobs change identity, then
computes straight into the output blob's own buffer (``out=``). MatMul and FC are one
``np.matmul`` call into that buffer in steady state: no allocation, and the GIL is released
for the BLAS call, so nets running in different threads compute in parallel.

Cached 2-D views are views only for C-contiguous arrays (the blob contract); should an input
ever be non-contiguous, the kernel re-derives its views on every run instead of caching a copy.

Caffe2 registered these ops for float only; float64 is accepted too (all inputs the same type).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from caffe2.operators._util import FLOATS, check_dtype, output, tensor
from caffe2.runtime.registry import Arg, operator


def canonical_axis(op: Any, axis: int, ndim: int, what: str, blob: str | None = None) -> int:
    """Caffe2's canonical_axis_index: axis in [-ndim, ndim), negative counts from the end."""
    if not -ndim <= axis < ndim:
        raise op.error(
            f"{what} = {axis} is out of range for a tensor with {ndim} dimensions "
            f"(allowed: [{-ndim}, {ndim - 1}])",
            blob,
        )
    return axis + ndim if axis < 0 else axis


def _same_dtype(op: Any, i: int, arr: np.ndarray, ref: np.ndarray) -> None:
    if arr.dtype != ref.dtype:
        raise op.error(
            f"inputs must have the same type: input 0 is {ref.dtype}, input {i} "
            f"({op.input_names[i]}) is {arr.dtype}",
            op.input_names[i],
        )


def _split2d(op: Any, i: int, arr: np.ndarray, axis: int, what: str) -> tuple[int, int]:
    """(size_to_dim(axis), size_from_dim(axis)) of input i: its 2-D shape flattened at axis."""
    ax = canonical_axis(op, axis, arr.ndim, what, op.input_names[i])
    return math.prod(arr.shape[:ax]), math.prod(arr.shape[ax:])


def _contiguous(*arrays: np.ndarray) -> bool:
    return all(a.flags.c_contiguous for a in arrays)


# What a kernel's cached input identities start as (and return to when views may be copies):
# no blob value is ever this object, so the next run validates.
STALE: Any = object()


# ---- MatMul ---------------------------------------------------------------------------------


@operator(
    "MatMul",
    inputs=(2, 3),
    outputs=1,
    args=(
        Arg("axis_a", "int", 1),
        Arg("axis_b", "int", 1),
        Arg("trans_a", "int", 0),
        Arg("trans_b", "int", 0),
    ),
)
def matmul(op: Any) -> Callable[[], None]:
    """MatMul: [A, B, (shape_like)] -> Y. Y = op(A)·op(B) with A, B flattened to 2-D at
    axis_a / axis_b and op() the optional transpose; a third input gives Y its shape."""
    axis_a, axis_b = op.arg("axis_a"), op.arg("axis_b")
    trans_a, trans_b = bool(op.arg("trans_a")), bool(op.arg("trans_b"))
    A, B = op.inputs[0], op.inputs[1]
    S = op.inputs[2] if len(op.inputs) == 3 else None
    Y = op.outputs[0]
    va = vb = vs = vy = STALE
    lhs = rhs = out = None

    def validate() -> None:
        nonlocal va, vb, vs, vy, lhs, rhs, out
        a = tensor(op, 0)
        b = tensor(op, 1)
        check_dtype(op, 0, a, FLOATS)
        _same_dtype(op, 1, b, a)
        ma, ka = _split2d(op, 0, a, axis_a, "axis_a")
        mb, kb = _split2d(op, 1, b, axis_b, "axis_b")
        a2 = a.reshape(ma, ka)
        b2 = b.reshape(mb, kb)
        if trans_a:
            a2 = a2.T
        if trans_b:
            b2 = b2.T
        if a2.shape[1] != b2.shape[0]:
            raise op.error(
                f"Dimension mismatch: {'trans(A)' if trans_a else 'A'}: {a2.shape[0]} "
                f"{a2.shape[1]}, {'trans(B)' if trans_b else 'B'}: {b2.shape[0]} {b2.shape[1]} "
                f"(A {list(a.shape)} at axis_a={axis_a}, B {list(b.shape)} at axis_b={axis_b})",
                op.input_names[1],
            )
        m, n = a2.shape[0], b2.shape[1]
        shape: tuple[int, ...] = (m, n)
        s = None
        if S is not None:
            s = tensor(op, 2)
            if s.size != m * n:
                raise op.error(
                    f"the shape input {op.input_names[2]} {list(s.shape)} has {s.size} "
                    f"elements, but the product has {m}x{n}",
                    op.input_names[2],
                )
            shape = s.shape
        y = output(Y, shape, a.dtype)
        lhs, rhs, out = a2, b2, y.reshape(m, n)
        if _contiguous(a, b, y):
            va, vb, vs, vy = a, b, s, y
        else:  # a reshape may have copied: rebuild the views on the next run too
            va = vb = vs = vy = STALE

    def run() -> None:
        if A.value is not va or B.value is not vb or Y.value is not vy:
            validate()
        elif S is not None and S.value is not vs:
            validate()
        np.matmul(lhs, rhs, out=out)

    return run


# ---- FC -------------------------------------------------------------------------------------


@operator("FC", inputs=3, outputs=1, args=(Arg("axis", "int", 1), Arg("axis_w", "int", 1)))
def fc(op: Any) -> Callable[[], None]:
    """FC: [X, W, b] -> Y = X·Wᵀ + b. X is flattened to (M, K) at axis, W to (N, K) at
    axis_w, b has N elements; Y has shape X.shape[:axis] + [N]."""
    axis, axis_w = op.arg("axis"), op.arg("axis_w")
    X, W, Bias = op.inputs
    Y = op.outputs[0]
    vx = vw = vb = vy = STALE
    x2 = wt = bias = y2 = None

    def validate() -> None:
        nonlocal vx, vw, vb, vy, x2, wt, bias, y2
        x = tensor(op, 0)
        w = tensor(op, 1)
        b = tensor(op, 2)
        check_dtype(op, 0, x, FLOATS)
        _same_dtype(op, 1, w, x)
        _same_dtype(op, 2, b, x)
        if b.ndim != 1:
            raise op.error(f"b must be 1-D, but it has shape {list(b.shape)}", op.input_names[2])
        ax = canonical_axis(op, axis, x.ndim, "axis", op.input_names[0])
        m, k = math.prod(x.shape[:ax]), math.prod(x.shape[ax:])
        n, kw = _split2d(op, 1, w, axis_w, "axis_w")
        if kw != k or b.shape[0] != n:
            raise op.error(
                f"Dimension mismatch: X: {list(x.shape)}, W: {list(w.shape)}, b: "
                f"{list(b.shape)}, axis: {axis}, M: {m}, N: {n}, K: {k} (W gives K = {kw})",
                op.input_names[1] if kw != k else op.input_names[2],
            )
        y = output(Y, x.shape[:ax] + (n,), x.dtype)
        x2, wt, bias, y2 = x.reshape(m, k), w.reshape(n, k).T, b, y.reshape(m, n)
        if _contiguous(x, w, b, y):
            vx, vw, vb, vy = x, w, b, y
        else:
            vx = vw = vb = vy = STALE

    def run() -> None:
        if X.value is not vx or W.value is not vw or Bias.value is not vb or Y.value is not vy:
            validate()
        np.matmul(x2, wt, out=y2)
        np.add(y2, bias, out=y2)

    return run


# ---- Softmax --------------------------------------------------------------------------------


@operator("Softmax", inputs=1, outputs=1, args=(Arg("axis", "int", 1),))
def softmax(op: Any) -> Callable[[], None]:
    """Softmax: [X] -> Y. X flattened to (N, D) at axis; each row of D values is softmaxed."""
    axis = op.arg("axis")
    X = op.inputs[0]
    Y = op.outputs[0]
    vx = vy = STALE
    x2 = y2 = rows = None
    empty = False

    def validate() -> None:
        nonlocal vx, vy, x2, y2, rows, empty
        x = tensor(op, 0)
        check_dtype(op, 0, x, FLOATS)
        n, d = _split2d(op, 0, x, axis, "axis")
        y = output(Y, x.shape, x.dtype)
        x2, y2 = x.reshape(n, d), y.reshape(n, d)
        empty = x.size == 0
        if rows is None or rows.shape[0] != n or rows.dtype != x.dtype:
            rows = np.empty((n, 1), x.dtype)  # per-row scratch, private to this op
        if _contiguous(x, y):
            vx, vy = x, y
        else:
            vx = vy = STALE

    def run() -> None:
        if X.value is not vx or Y.value is not vy:
            validate()
        if empty:
            return
        np.max(x2, axis=1, keepdims=True, out=rows)
        np.subtract(x2, rows, out=y2)
        np.exp(y2, out=y2)
        np.sum(y2, axis=1, keepdims=True, out=rows)
        np.divide(y2, rows, out=y2)

    return run


# ---- Scale ----------------------------------------------------------------------------------


@operator("Scale", inputs=1, outputs=1, allow_inplace={(0, 0)}, args=(Arg("scale", "float", 1.0),))
def scale(op: Any) -> Callable[[], None]:
    """Scale: [X] -> Y = X * scale (float tensors; scale is a float argument)."""
    s = op.arg("scale")
    X = op.inputs[0]
    Y = op.outputs[0]
    vx = vy = STALE
    x = y = factor = None

    def validate() -> None:
        nonlocal vx, vy, x, y, factor
        x = tensor(op, 0)
        check_dtype(op, 0, x, FLOATS)
        y = output(Y, x.shape, x.dtype)  # X itself when in place
        factor = x.dtype.type(s)
        vx, vy = x, y

    def run() -> None:
        if X.value is not vx or Y.value is not vy:
            validate()
        np.multiply(x, factor, out=y)

    return run


# ---- WeightedSum ----------------------------------------------------------------------------


def _even_positive(n: int) -> bool:
    """an even number of inputs, at least 2 ([X0, w0, X1, w1, ...])"""
    return n > 0 and n % 2 == 0


@operator("WeightedSum", inputs=_even_positive, outputs=1, allow_inplace={(0, 0)})
def weighted_sum(op: Any) -> Callable[[], None]:
    """WeightedSum: [X0, w0, X1, w1, ...] -> Y = sum(w_i * X_i). Each w_i is a 1-element float
    tensor; every X_i has X0's type and element count; Y has X0's shape (in place with X0)."""
    ins = tuple(op.inputs)
    Y = op.outputs[0]
    n = len(ins)
    cached: tuple = (STALE,) * n
    vy = STALE
    x0 = w0 = y = tmp = None
    rest: list[tuple[np.ndarray, np.ndarray]] = []

    def validate() -> None:
        nonlocal cached, vy, x0, w0, y, tmp, rest
        x = tensor(op, 0)
        check_dtype(op, 0, x, FLOATS)
        xs = [x]
        ws = []
        for i in range(0, n, 2):
            xi = tensor(op, i)
            if i:
                _same_dtype(op, i, xi, x)
                if xi.size != x.size:
                    raise op.error(
                        f"input {i} ({op.input_names[i]}) has {xi.size} elements "
                        f"{list(xi.shape)}, but input 0 has {x.size} {list(x.shape)}",
                        op.input_names[i],
                    )
                xs.append(xi.reshape(x.shape))
            w = tensor(op, i + 1)
            check_dtype(op, i + 1, w, FLOATS)
            if w.size != 1:
                raise op.error(
                    f"weight input {i + 1} ({op.input_names[i + 1]}) must have exactly one "
                    f"element, but it has shape {list(w.shape)}",
                    op.input_names[i + 1],
                )
            ws.append(w.reshape(()))
        out = output(Y, x.shape, x.dtype)
        x0, w0, y = xs[0], ws[0], out
        rest = list(zip(xs[1:], ws[1:], strict=True))
        if rest and (tmp is None or tmp.shape != x.shape or tmp.dtype != x.dtype):
            tmp = np.empty(x.shape, x.dtype)  # scratch for w_i * X_i, private to this op
        vals = tuple(b.value for b in ins)
        if _contiguous(*vals, out):
            cached, vy = vals, out
        else:
            cached, vy = (STALE,) * n, STALE

    def run() -> None:
        if Y.value is not vy or any(b.value is not v for b, v in zip(ins, cached, strict=True)):
            validate()
        np.multiply(x0, w0, out=y)
        for xi, wi in rest:
            np.multiply(xi, wi, out=tmp)
            np.add(y, tmp, out=y)

    return run
