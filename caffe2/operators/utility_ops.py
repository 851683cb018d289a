"""Data movement and small utility ops (spec 15.3, 15.10): Copy, Print, Cast, Reshape, ...

Every output tensor is owned by its blob: kernels copy into the output's buffer (reusing it
when shape and dtype fit), never store a view of an input. The one exception is an in-place
Reshape, where the blob's own array is re-viewed and the old array object is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from caffe2.operators._util import BOOL, ENUM_TO_DTYPE, I32, I64, TP, output, tensor
from caffe2.operators.fill_ops import data_type_arg
from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import type_name
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.registry import Arg, gradient, operator

log = logging.getLogger("caffe2")

OBJ = np.dtype(object)
Kernel = Callable[[], None]
GradResult = tuple[list[caffe2_pb2.OperatorDef], list[str | None]]


def grad_name(name: str) -> str:
    """Caffe2's default gradient blob name of a blob (GI / GO)."""
    return f"{name}_grad"


def grad_op(
    fwd: caffe2_pb2.OperatorDef,
    op_type: str,
    inputs: list[str],
    outputs: list[str],
    args: list[caffe2_pb2.Argument] | None = None,
) -> caffe2_pb2.OperatorDef:
    """A gradient OperatorDef carrying the forward op's device option and engine."""
    g = caffe2_pb2.OperatorDef(type=op_type, input=inputs, output=outputs, is_gradient_op=True)
    if args:
        g.arg.extend(args)
    if fwd.HasField("device_option"):
        g.device_option.CopyFrom(fwd.device_option)
    if fwd.HasField("engine"):
        g.engine = fwd.engine
    return g


def _copy_into(blob: Any, x: np.ndarray) -> None:
    np.copyto(output(blob, x.shape, x.dtype), x)


# ---- Copy, StopGradient, ZeroGradient ----------------------------------------------------


@operator("Copy", inputs=1, outputs=1)
def copy_op(op: Any) -> Kernel:
    """Copy: [X] -> Y. A deep copy of the tensor X."""
    Y = op.outputs[0]

    def run() -> None:
        _copy_into(Y, tensor(op, 0))

    return run


@gradient("Copy")
def copy_grad(opdef: caffe2_pb2.OperatorDef, g_output: list[str | None]) -> GradResult:
    if g_output[0] is None:
        return [], [None]
    gi = grad_name(opdef.input[0])
    return [grad_op(opdef, "Copy", [g_output[0]], [gi], list(opdef.arg))], [gi]


@operator("StopGradient", inputs=1, outputs=1, allow_inplace={(0, 0)})
def stop_gradient(op: Any) -> Kernel:
    """StopGradient: [X] -> Y. Identity (a copy unless in place) that blocks gradient flow."""
    X, Y = op.inputs[0], op.outputs[0]
    if X is Y:

        def check() -> None:
            tensor(op, 0)

        return check

    def run() -> None:
        _copy_into(Y, tensor(op, 0))

    return run


@gradient("StopGradient")
def stop_gradient_grad(opdef: caffe2_pb2.OperatorDef, g_output: list[str | None]) -> GradResult:
    return [], [None]


@operator("ZeroGradient", inputs=1, outputs=0)
def zero_gradient(op: Any) -> Kernel:
    """ZeroGradient: [X] -> []. No-op forward; makes X's gradient zeros shaped like X."""
    return lambda: None


@gradient("ZeroGradient")
def zero_gradient_grad(opdef: caffe2_pb2.OperatorDef, g_output: list[str | None]) -> GradResult:
    x = opdef.input[0]
    gi = grad_name(x)
    value = caffe2_pb2.Argument(name="value", f=0.0)
    return [grad_op(opdef, "ConstantFill", [x], [gi], [value])], [gi]


# ---- Print -------------------------------------------------------------------------------

# Caffe2's TypeMeta names, as Print showed them.
_CPP_TYPE = {
    np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.int32): "int",
    np.dtype(np.int64): "long", np.dtype(np.bool_): "bool", np.dtype(np.int8): "signed char",
    np.dtype(np.int16): "short", np.dtype(np.uint8): "unsigned char",
    np.dtype(np.uint16): "unsigned short", np.dtype(np.float16): "caffe2::float16",
    OBJ: "std::string",
}  # fmt: skip
PRINT_LIMIT_DEFAULT = 1000


def format_values(x: np.ndarray, limit: int) -> str:
    """Up to limit values of x, comma-separated, as a C++ ostream wrote them."""
    vals = x.reshape(-1)[:limit].tolist()
    kind = x.dtype.kind
    if kind == "f":
        return ",".join(f"{v:g}" for v in vals)
    if kind == "b":
        return ",".join("1" if v else "0" for v in vals)
    if kind == "O":
        return ",".join(
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in vals
        )
    return ",".join(str(v) for v in vals)


@operator(
    "Print",
    inputs=1,
    outputs=0,
    args=(Arg("to_file", "int", 0), Arg("limit", "int", 0), Arg("every_n", "int", 1)),
)
def print_op(op: Any) -> Kernel:
    """Print: [X] -> []. Logs X's type, dims and values (or appends them to <root>/<X>.log)."""
    every_n, limit = op.arg("every_n"), op.arg("limit")
    if every_n < 1:
        raise op.error(f"every_n must be >= 1, got {every_n}")
    if limit < 0:
        raise op.error(f"limit must be >= 0 (0 means {PRINT_LIMIT_DEFAULT}), got {limit}")
    limit = limit or PRINT_LIMIT_DEFAULT
    name = op.input_names[0]
    path = f"{op.ws.root_folder}/{name}.log" if op.arg("to_file") else None
    if path is not None:
        try:
            open(path, "w").close()  # truncated once, at construction, as Caffe2 did
        except OSError as e:
            raise op.error(f"Failed to open TensorPrinter file {path}: {e}", name) from None
    X = op.inputs[0]
    calls = 0

    def run() -> None:
        nonlocal calls
        calls += 1
        if calls > every_n:
            calls -= every_n
        if calls != 1:
            return
        x = X.value
        if not isinstance(x, np.ndarray):
            log.info("Blob of type: %s", type_name(x))
            return
        dims = "".join(f"{d}," for d in x.shape)
        ctype = _CPP_TYPE.get(x.dtype, str(x.dtype))
        line = f"Tensor {name} of type {ctype}. Dims: ({dims}): {format_values(x, limit)}"
        if path is None:
            log.info("%s", line)
            return
        try:
            with open(path, "a") as f:
                f.write(line + "\n")
        except OSError as e:
            raise op.error(f"Failed to write TensorPrinter file {path}: {e}", name) from None

    return run


# ---- IsEmpty, Shape, Size ----------------------------------------------------------------


@operator("IsEmpty", inputs=1, outputs=1)
def is_empty(op: Any) -> Kernel:
    """IsEmpty: [X] -> Y. bool scalar, true iff X has no elements."""
    Y = op.outputs[0]

    def run() -> None:
        empty = tensor(op, 0).size == 0
        output(Y, (), BOOL)[()] = empty

    return run


@operator("Shape", inputs=1, outputs=1)
def shape_op(op: Any) -> Kernel:
    """Shape: [X] -> Y. 1-D int64 tensor of X's dims."""
    Y = op.outputs[0]

    def run() -> None:
        shape = tensor(op, 0).shape
        output(Y, (len(shape),), I64)[:] = shape

    return run


@operator("Size", inputs=1, outputs=1)
def size_op(op: Any) -> Kernel:
    """Size: [X] -> Y. int64 scalar: X's element count."""
    Y = op.outputs[0]

    def run() -> None:
        n = tensor(op, 0).size
        output(Y, (), I64)[()] = n

    return run


@gradient("Size")
def size_grad(opdef: caffe2_pb2.OperatorDef, g_output: list[str | None]) -> GradResult:
    return [], [None]


# ---- Cast --------------------------------------------------------------------------------

_CAST_TARGETS = frozenset(
    {TP.FLOAT, TP.INT32, TP.BOOL, TP.UINT8, TP.INT8, TP.UINT16, TP.INT16, TP.INT64, TP.FLOAT16,
     TP.DOUBLE}
)  # fmt: skip


def _cast_target(op: Any) -> np.dtype:
    to = data_type_arg(op, "to", TP.FLOAT)
    if to == TP.UNDEFINED:
        raise op.error("Cast op must have 'to' argument of type DataType")
    if to == TP.BYTE:
        raise op.error("BYTE is deprecated")
    if to == TP.STRING:
        raise op.error("Casting to and from strings is not supported yet")
    if to not in _CAST_TARGETS:
        raise op.error(f"Unexpected 'to' argument value: {to}")
    return ENUM_TO_DTYPE[to]


def _int_bounds(dt: np.dtype) -> tuple[float, float] | None:
    """[lo, hi) that a truncated float must lie in to fit integer type dt (None: no check)."""
    if dt.kind not in "iu":
        return None
    info = np.iinfo(dt)
    return float(info.min), float(info.max + 1)


@operator("Cast", inputs=1, outputs=1, args=(Arg("from_type", "raw", None),))
def cast(op: Any) -> Kernel:
    """Cast: [X] -> Y. X converted to type `to` (enum or name); float->int truncates."""
    dt = _cast_target(op)
    from_dt = None
    if op.has_arg("from_type"):
        ft = data_type_arg(op, "from_type", TP.FLOAT)
        from_dt = ENUM_TO_DTYPE.get(ft)
        if from_dt is None:
            raise op.error(f"Unexpected 'from_type' argument value: {ft}")
    bounds = _int_bounds(dt)
    Y = op.outputs[0]
    name = op.input_names[0]

    def run() -> None:
        x = tensor(op, 0)
        if x.dtype == OBJ:
            raise op.error("Casting to and from strings is not supported yet", name)
        if from_dt is not None and x.dtype != from_dt:
            raise op.error(f"input {name} has type {x.dtype} but 'from_type' is {from_dt}", name)
        if bounds is not None and x.dtype.kind == "f" and x.size:
            t = np.trunc(x)
            if not (t.min() >= bounds[0] and t.max() < bounds[1]):
                raise op.error(
                    f"cannot cast {name} to {dt}: it holds NaN, infinity or a value out of range",
                    name,
                )
        out = output(Y, x.shape, dt)
        with np.errstate(all="ignore"):  # float narrowing overflows to inf, as in C++
            np.copyto(out, x, casting="unsafe")

    return run


@gradient("Cast")
def cast_grad(opdef: caffe2_pb2.OperatorDef, g_output: list[str | None]) -> GradResult:
    if g_output[0] is None:
        return [], [None]
    args = {a.name: a for a in opdef.arg}

    def enum_of(name: str, default: int) -> int:
        a = args.get(name)
        if a is None:
            return default
        if a.HasField("s"):
            return TP.DataType.Value(a.s.decode("utf-8", errors="replace").upper())
        return a.i

    from_arg = args.get("from_type")
    if from_arg is None or not (from_arg.HasField("s") or from_arg.HasField("i")):
        raise EnforceError(
            "Argument 'from_type' of type int or string is required to get the gradient of CastOp",
            "Cast gradient",
        )
    try:
        to, frm = enum_of("to", TP.FLOAT), enum_of("from_type", TP.FLOAT)
    except ValueError as e:
        raise EnforceError(f"Cast gradient: unknown type name: {e}", "Cast gradient") from None
    gi = grad_name(opdef.input[0])
    new_args = [caffe2_pb2.Argument(name="to", i=frm), caffe2_pb2.Argument(name="from_type", i=to)]
    return [grad_op(opdef, "Cast", [g_output[0]], [gi], new_args)], [gi]


# ---- Reshape -----------------------------------------------------------------------------


def _check_shape_arg(op: Any, dims: list[int], what: str) -> None:
    if sum(d == -1 for d in dims) > 1:
        raise op.error(f"Argument `shape` has more than one missing dimension. ({what} {dims})")
    if any(d < -1 for d in dims):
        raise op.error(f"Argument `shape` has an invalid dimension (< -1): {what} {dims}")


def _new_shape(op: Any, dims: list[int], in_shape: tuple[int, ...], total: int) -> tuple:
    """Caffe2's Reshape rule: 0 copies the input dim, one -1 is inferred."""
    new = list(dims)
    for i in range(min(len(new), len(in_shape))):
        if new[i] == 0:
            new[i] = in_shape[i]
    size = 1
    unknown = -1
    for i, d in enumerate(new):
        if d == -1:
            unknown = i
        else:
            size *= d
    if size == 0 and total != 0:
        raise op.error(f"Can not reshape a non-zero size ({total}) tensor to zero size.")
    if unknown != -1:
        if size == 0:
            raise op.error(
                f"New shape at dimension {unknown} can not be inferred since new shape "
                "contains a 0."
            )
        if total % size:
            raise op.error(
                f"Argument `shape` does not agree with the input data. ({total} vs {size}); "
                f"input shape {list(in_shape)}, new shape {dims}"
            )
        new[unknown] = total // size
    elif total != size:
        raise op.error(
            f"Argument `shape` does not agree with the input data. ({total} != {size}); "
            f"input shape {list(in_shape)}, new shape {dims}"
        )
    return tuple(new)


@operator(
    "Reshape", inputs=(1, 2), outputs=2, allow_inplace={(0, 0)}, args=(Arg("shape", "ints", []),)
)
def reshape(op: Any) -> Kernel:
    """Reshape: [data, (new_shape)] -> [reshaped, old_shape]. `shape`: 0 = keep dim, -1 = infer."""
    from_input = len(op.inputs) == 2
    if from_input and op.has_arg("shape"):
        raise op.error(
            "New shape is specified by the input blob, do not pass in the argument `shape`."
        )
    if not from_input and not op.has_arg("shape"):
        raise op.error("Argument `shape` is missing.")
    arg_dims = op.arg("shape")
    _check_shape_arg(op, arg_dims, "shape")
    X, Y, OLD = op.inputs[0], op.outputs[0], op.outputs[1]
    in_place = X is Y
    sname = op.input_names[1] if from_input else None
    cache: dict[tuple, tuple] = {}

    def run() -> None:
        x = tensor(op, 0)
        if from_input:
            s = tensor(op, 1)
            if s.ndim != 1:
                raise op.error(f"Shape should be 1-D, {sname} has shape {list(s.shape)}", sname)
            if s.dtype != I32 and s.dtype != I64:
                raise op.error(f"Shape {sname} must be int32 or int64, got {s.dtype}", sname)
            dims = s.tolist()
            _check_shape_arg(op, dims, sname)
            new = _new_shape(op, dims, x.shape, x.size)
            old_dt = s.dtype
        else:
            new = cache.get(x.shape)
            if new is None:
                new = _new_shape(op, arg_dims, x.shape, x.size)
                if len(cache) > 16:
                    cache.clear()
                cache[x.shape] = new
            old_dt = I64
        output(OLD, (x.ndim,), old_dt)[:] = x.shape
        if in_place:
            Y.value = x.reshape(new)  # the blob's own buffer, re-viewed; the old array is dropped
        else:
            np.copyto(output(Y, new, x.dtype), x.reshape(new))

    return run


@gradient("Reshape")
def reshape_grad(opdef: caffe2_pb2.OperatorDef, g_output: list[str | None]) -> GradResult:
    n_in = len(opdef.input)
    if g_output[0] is None:
        return [], [None] * n_in
    gi = grad_name(opdef.input[0])
    g = grad_op(opdef, "Reshape", [g_output[0], opdef.output[1]], [gi, f"_{gi}_dims"])
    return [g], [gi] + [None] * (n_in - 1)


# ---- Transpose, Gather -------------------------------------------------------------------


@operator("Transpose", inputs=1, outputs=1, args=(Arg("axes", "int32s", []),))
def transpose(op: Any) -> Kernel:
    """Transpose: [X] -> Y. Dims permuted by `axes` (default: reversed)."""
    axes = op.arg("axes")
    if sorted(axes) != list(range(len(axes))):
        raise op.error(f"Axes should be a permutation of 0 to ndim. Got {axes}")
    axes_t = tuple(axes) if axes else None
    Y = op.outputs[0]
    name = op.input_names[0]

    def run() -> None:
        x = tensor(op, 0)
        if axes_t is not None and x.ndim != len(axes_t):
            raise op.error(
                f"Transpose: axes {list(axes_t)} do not match the {x.ndim} dims of {name} "
                f"{list(x.shape)}",
                name,
            )
        xt = x.transpose(axes_t)
        np.copyto(output(Y, xt.shape, x.dtype), xt)

    return run


@gradient("Transpose")
def transpose_grad(opdef: caffe2_pb2.OperatorDef, g_output: list[str | None]) -> GradResult:
    if g_output[0] is None:
        return [], [None]
    args = []
    for a in opdef.arg:
        b = caffe2_pb2.Argument()
        b.CopyFrom(a)
        if a.name == "axes":
            inverse = [0] * len(a.ints)
            for i, ax in enumerate(a.ints):
                inverse[ax] = i
            del b.ints[:]
            b.ints.extend(inverse)
        args.append(b)
    gi = grad_name(opdef.input[0])
    return [grad_op(opdef, "Transpose", [g_output[0]], [gi], args)], [gi]


@operator("Gather", inputs=2, outputs=1)
def gather(op: Any) -> Kernel:
    """Gather: [DATA, INDICES] -> Y = DATA[INDICES] along axis 0 (int32/int64 indices)."""
    Y = op.outputs[0]
    dname, iname = op.input_names

    def run() -> None:
        data = tensor(op, 0)
        idx = tensor(op, 1)
        if data.ndim < 1:
            raise op.error(f"DATA should be at least 1-D; {dname} is a scalar", dname)
        if idx.dtype != I32 and idx.dtype != I64:
            raise op.error(f"INDICES must be int32 or int64; {iname} is {idx.dtype}", iname)
        n = data.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = idx.reshape(-1)[(idx.reshape(-1) < 0) | (idx.reshape(-1) >= n)][0]
            raise op.error(
                f"INDICES element is out of DATA bounds, id={bad} data_dim={n} "
                f"(indices {iname}, data {dname})",
                iname,
            )
        out = output(Y, idx.shape + data.shape[1:], data.dtype)
        np.take(data, idx, axis=0, out=out, mode="clip")

    return run


# ---- GetAllBlobNames ---------------------------------------------------------------------


@operator(
    "GetAllBlobNames",
    inputs=0,
    outputs=1,
    args=(Arg("include_shared", "bool", True),),
    needs_workspace=True,
)
def get_all_blob_names(op: Any) -> Kernel:
    """GetAllBlobNames: [] -> Y. 1-D string tensor of the workspace's blob names."""
    ws = op.ws
    include_shared = op.arg("include_shared")
    Y = op.outputs[0]

    def run() -> None:
        names = ws.blobs() if include_shared else ws.local_blobs()
        out = np.empty(len(names), OBJ)
        out[:] = [n.encode("utf-8") for n in names]
        Y.value = out

    return run
