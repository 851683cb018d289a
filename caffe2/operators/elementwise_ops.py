"""Element-wise arithmetic and logic with Caffe2's legacy broadcast rules (spec 15.2).

Each kernel validates its inputs only when the arrays in its blobs change identity, so a
steady-state run is one NumPy call writing into the output buffer the op owns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from caffe2.operators._util import BOOL, F32, FLOATS, I32, I64, NUMERIC, check_dtype, tensor
from caffe2.runtime.registry import Arg, operator

# Identity no blob value can have: the first run always validates, even of None.
_UNSET = object()

BROADCAST_ARGS = (
    Arg("broadcast", "bool", False),
    Arg("axis", "int", -1),
    Arg("axis_str", "str", ""),
    Arg("order", "str", "NCHW"),
)


def _broadcast_axis(op: Any) -> int:
    """Parse and check broadcast/axis/axis_str once, at op creation."""
    axis, axis_str = op.arg("axis"), op.arg("axis_str")
    if not op.arg("broadcast"):
        if axis != -1 or axis_str:
            raise op.error("Do not specify axis or axis_str if broadcast is not enabled.")
        return -1
    if axis_str:
        if axis != -1:
            raise op.error("Args axis and axis_str cannot be used simultaneously.")
        if len(axis_str) != 1:
            raise op.error("Unsupported axis string, only single characters are supported")
        order = op.arg("order")
        pos = order.find(axis_str)
        if pos < 0:
            raise op.error(f"Unrecognizable axis string {axis_str} from order string {order}")
        return pos
    return axis


def _b_view(op: Any, a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    """B reshaped to broadcast against A as Caffe2 placed it (axis, size-1 dims stripped)."""
    if b.size == 1:
        return b.reshape(())
    if a.ndim < b.ndim:
        raise op.error(
            "If you are doing broadcasting, input1 should have a smaller or equal number of "
            "dimensions.",
            op.input_names[1],
        )
    if axis == -1:
        axis = a.ndim - b.ndim
    if not 0 <= axis <= a.ndim - b.ndim:
        raise op.error(
            f"Broadcast axis should be in the range of[0, A.ndim() - B.ndim()], but axis = {axis}",
            op.input_names[1],
        )
    dims = list(b.shape)
    lead = 0
    while dims and dims[0] == 1:
        dims.pop(0)
        lead += 1
    while dims and dims[-1] == 1:
        dims.pop()
    pos = axis + lead
    if tuple(a.shape[pos : pos + len(dims)]) != tuple(dims):
        raise op.error(
            f"Broadcast dimension mismatch: A {list(a.shape)}, B {list(b.shape)}, axis {axis}",
            op.input_names[1],
        )
    return b.reshape((1,) * pos + tuple(dims) + (1,) * (a.ndim - pos - len(dims)))


def binary_kernel(
    op: Any, ufunc: Callable, types: frozenset, out_dtype: np.dtype | None = None
) -> Callable[[], None]:
    """A kernel computing ``ufunc(A, B) -> C`` with the broadcast rules of the op's args."""
    axis = _broadcast_axis(op)
    broadcast = op.arg("broadcast")
    A, B = op.inputs
    C = op.outputs[0]
    c_is_b = C is B
    va = vb = vc = bv = _UNSET

    def validate(a: Any, b: Any) -> np.ndarray:
        nonlocal va, vb, vc, bv
        a = tensor(op, 0)
        b = tensor(op, 1)
        check_dtype(op, 0, a, types)
        if b.dtype != a.dtype:
            raise op.error(
                f"inputs must have the same type: {a.dtype} vs {b.dtype}", op.input_names[1]
            )
        if broadcast:
            view = _b_view(op, a, b, axis)
            if c_is_b:
                raise op.error("In-place is allowed only with the first tensor when broadcasting")
        else:
            if a.shape != b.shape:
                raise op.error(
                    "Dimension mismatch - did you forget to set broadcast=1? "
                    f"A {list(a.shape)} vs B {list(b.shape)}"
                )
            view = b
        dt = out_dtype or a.dtype
        c = C.value
        if not (isinstance(c, np.ndarray) and c.shape == a.shape and c.dtype == dt):
            c = C.value = np.empty(a.shape, dt)
            # A or B may have been the old output buffer of this very op (in place).
            a, b = A.value, B.value
            view = _b_view(op, a, b, axis) if broadcast else b
        va, vb, vc, bv = a, b, c, view
        return c

    def run() -> None:
        a = A.value
        b = B.value
        c = C.value
        if a is not va or b is not vb or c is not vc:
            c = validate(a, b)
            a = va
        ufunc(a, bv, c)  # positional out: cheaper than out= for ufuncs

    return run


def _divide(op: Any) -> Callable[[np.ndarray, np.ndarray, np.ndarray], None]:
    """Division as C++ did it: true division for floats; for integers, truncation toward
    zero, and division by zero is an error naming the divisor blob."""

    def divide(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        if out.dtype in FLOATS:
            np.divide(a, b, out=out)
            return
        if not np.all(b):
            raise op.error("Div: integer division by zero", op.input_names[1])
        q = np.floor_divide(a, b)
        q += (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
        np.copyto(out, q)

    return divide


def _arith(name: str, ufunc: Callable | None, inplace: set) -> None:
    def factory(op: Any) -> Callable[[], None]:
        return binary_kernel(op, ufunc or _divide(op), NUMERIC)

    factory.__doc__ = f"{name}: [A, B] -> C, element-wise, with legacy broadcast."
    operator(name, inputs=2, outputs=1, allow_inplace=inplace, args=BROADCAST_ARGS)(factory)


_arith("Add", np.add, {(0, 0), (1, 0)})
_arith("Sub", np.subtract, {(0, 0), (1, 0)})
_arith("Mul", np.multiply, {(0, 0), (1, 0)})
_arith("Div", None, {(0, 0)})


def _compare(name: str, ufunc: Callable, types: frozenset) -> None:
    @operator(name, inputs=2, outputs=1, args=BROADCAST_ARGS)
    def factory(op: Any) -> Callable[[], None]:
        return binary_kernel(op, ufunc, types, BOOL)

    factory.__doc__ = f"{name}: [A, B] -> bool C."


for _n, _f in (("LT", np.less), ("LE", np.less_equal), ("GT", np.greater),
               ("GE", np.greater_equal)):  # fmt: skip
    _compare(_n, _f, NUMERIC)
_compare("EQ", np.equal, frozenset({I32, I64, BOOL}))


def _logic(name: str, ufunc: Callable) -> None:
    @operator(name, inputs=2, outputs=1, allow_inplace={(0, 0)}, args=BROADCAST_ARGS)
    def factory(op: Any) -> Callable[[], None]:
        return binary_kernel(op, ufunc, frozenset({BOOL}), BOOL)

    factory.__doc__ = f"{name}: [A, B] -> bool C, on bool tensors."


_logic("And", np.logical_and)
_logic("Or", np.logical_or)
_logic("Xor", np.logical_xor)


def unary_kernel(
    op: Any,
    ufunc: Callable,
    types: frozenset,
    out_dtype: np.dtype | None = None,
    operand: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Callable[[], None]:
    """A kernel computing ``ufunc(X) -> Y``, or ``ufunc(X, operand(X)) -> Y``, into Y's buffer.

    ``operand`` is evaluated only when X changes identity (e.g. a zeros array for Relu).
    """
    X = op.inputs[0]
    Y = op.outputs[0]
    vx = vy = vs = _UNSET

    def validate() -> np.ndarray:
        nonlocal vx, vy, vs
        x = tensor(op, 0)
        check_dtype(op, 0, x, types)
        dt = out_dtype or x.dtype
        y = Y.value
        if not (isinstance(y, np.ndarray) and y.shape == x.shape and y.dtype == dt):
            y = Y.value = np.empty(x.shape, dt)
            x = X.value
        vx, vy = x, y
        if operand is not None:
            vs = operand(x)
        return y

    def run() -> None:
        x = X.value
        y = Y.value
        if x is not vx or y is not vy:
            y = validate()
            x = vx
        ufunc(x, y)

    def run2() -> None:
        x = X.value
        y = Y.value
        if x is not vx or y is not vy:
            y = validate()
            x = vx
        ufunc(x, vs, out=y)  # np.maximum deprecates a positional out

    return run if operand is None else run2


_ZEROS: dict[tuple, np.ndarray] = {}


def zeros_like_shared(x: np.ndarray) -> np.ndarray:
    """A read-only zeros array of x's shape and dtype, shared by every op that needs one.

    NumPy's maximum against a full array is about 3x faster than against a 0-d zero on
    large tensors; sharing keeps that to one array per shape.
    """
    key = (x.shape, x.dtype)
    z = _ZEROS.get(key)
    if z is None:
        if len(_ZEROS) > 64:
            _ZEROS.clear()
        z = np.zeros(x.shape, x.dtype)
        z.flags.writeable = False
        _ZEROS[key] = z
    return z


@operator("Not", inputs=1, outputs=1)
def not_op(op: Any) -> Callable[[], None]:
    """Not: [X] -> bool !X, on a bool tensor."""
    return unary_kernel(op, np.logical_not, frozenset({BOOL}), BOOL)


@operator("Relu", inputs=1, outputs=1, allow_inplace={(0, 0)})
def relu(op: Any) -> Callable[[], None]:
    """Relu: [X] -> max(X, 0), float tensors."""
    return unary_kernel(op, np.maximum, FLOATS, operand=zeros_like_shared)


_SUM_TYPES = frozenset({F32, I32})


@operator("Sum", inputs=(1, None), outputs=1, allow_inplace={(0, 0)})
def sum_op(op: Any) -> Callable[[], None]:
    """Sum: [X1..Xn] -> Y, element-wise sum of same-shape float32 or int32 tensors."""
    ins = op.inputs
    Y = op.outputs[0]

    def run() -> None:
        xs = [tensor(op, i) for i in range(len(ins))]
        x0 = xs[0]
        if x0.dtype not in _SUM_TYPES:
            raise op.error(
                "Sum operator only supports 32-bit float and ints, but input was of type "
                f"{x0.dtype}",
                op.input_names[0],
            )
        for i, x in enumerate(xs[1:], 1):
            if x.shape != x0.shape or x.dtype != x0.dtype:
                raise op.error(
                    f"Check failed: output->dims() == Input({i}).dims(). input 0 is "
                    f"{x0.dtype}{list(x0.shape)}, input {i} is {x.dtype}{list(x.shape)}",
                    op.input_names[i],
                )
        y = Y.value
        if not (isinstance(y, np.ndarray) and y.shape == x0.shape and y.dtype == x0.dtype):
            y = np.empty(x0.shape, x0.dtype)
        if len(xs) == 1:
            np.copyto(y, x0)
        else:
            np.add(xs[0], xs[1], out=y)
            for x in xs[2:]:
                np.add(y, x, out=y)
        Y.value = y

    return run
