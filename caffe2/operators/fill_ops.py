"""Fill ops (spec 15.1): constant, given-values and random fills, with Caffe2's shape rules.

Every fill shares FillerOp's shape rules: no input -> the ``shape`` argument (read from
``ints``; missing or empty -> a scalar); one input -> its dims plus ``extra_shape``, or its
values plus ``extra_shape`` when ``input_as_shape`` is set. Random fills draw from one
generator per op, seeded from ``device_option.random_seed`` when it is set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from caffe2.operators._util import BOOL, F32, F64, I32, I64, TP, output, tensor
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.registry import Arg, gradient, operator

OBJ = np.dtype(object)
Kernel = Callable[[], None]

FILL_ARGS = (
    Arg("shape", "ints", []),
    Arg("extra_shape", "ints", []),
    Arg("input_as_shape", "bool", False),
)

# Integer targets of ConstantFill's value, with the range Caffe2's lossless check enforced.
_INT_TYPES: dict[int, np.dtype] = {
    TP.INT8: np.dtype(np.int8),
    TP.INT16: np.dtype(np.int16),
    TP.INT32: I32,
    TP.INT64: I64,
    TP.UINT8: np.dtype(np.uint8),
    TP.UINT16: np.dtype(np.uint16),
}


def data_type_arg(op: Any, name: str, default: int) -> int:
    """A TensorProto.DataType argument given as an enum int or a type name (any case).

    Caffe2's ``cast::GetCastDataType``: a string value is upper-cased and parsed as a
    DataType name; otherwise the int field is read (missing -> default).
    """
    raw = op.raw_arg(name)
    if raw is not None and raw.HasField("s"):
        text = raw.s.decode("utf-8", errors="replace").upper()
        try:
            return TP.DataType.Value(text)
        except ValueError:
            raise op.error(f"Unknown '{name}' argument: {text}") from None
    return op.parse_arg(name, "int32", default)


def _zero_or_one(n: int) -> bool:
    """0 or 1"""
    return n in (0, 1)


def _zero_one_or_three(n: int) -> bool:
    """0, 1 or 3"""
    return n in (0, 1, 3)


def fill_shape(op: Any) -> Callable[[], tuple[int, ...]]:
    """Check FillerOp's shape arguments once; return a function giving the output shape."""
    shape, extra = op.arg("shape"), op.arg("extra_shape")
    as_shape = op.arg("input_as_shape")
    if op.inputs:
        if shape:
            raise op.error("Cannot set the shape argument and pass in an input at the same time")
    else:
        if extra:
            raise op.error("Cannot set extra_shape when there is no input")
        if as_shape:
            raise op.error("An input must be given if input_as_shape is true")
        raw = op.raw_arg("shape")
        if not shape and raw is not None and raw.HasField("i"):
            raise op.error("Fill 'shape' argument was a scalar, list expected")
    for name, dims in (("shape", shape), ("extra_shape", extra)):
        if any(d < 0 for d in dims):
            raise op.error(f"Fill '{name}' argument has a negative dimension: {dims}")
    if not op.inputs:
        fixed = tuple(shape)
        return lambda: fixed
    extra_t = tuple(extra)
    src = op.input_names[0]
    if not as_shape:
        return lambda: tensor(op, 0).shape + extra_t

    def from_values() -> tuple[int, ...]:
        x = tensor(op, 0)
        if x.ndim != 1 or x.dtype != I64:
            raise op.error(
                "When input_as_shape is true, the input must be a 1D tensor of data type TIndex "
                f"(int64); {src} is {x.dtype} with shape {list(x.shape)}",
                src,
            )
        dims = tuple(int(d) for d in x)
        if any(d < 0 for d in dims):
            raise op.error(f"Fill shape input {src} has a negative value: {list(dims)}", src)
        return dims + extra_t

    return from_values


def _static_shape(op: Any, shape_fn: Callable[[], tuple[int, ...]]) -> tuple[int, ...] | None:
    return None if op.inputs else shape_fn()


def _no_gradient(opdef: Any, g_output: list) -> tuple[list, list]:
    return [], [None] * len(opdef.input)


# ---- ConstantFill ------------------------------------------------------------------------

_CONSTANT_TYPES = frozenset(
    {TP.FLOAT, TP.DOUBLE, TP.BOOL, TP.INT8, TP.INT16, TP.INT32, TP.INT64, TP.UINT8, TP.UINT16,
     TP.STRING}
)  # fmt: skip
_ENUM_DTYPE = {TP.FLOAT: F32, TP.DOUBLE: F64, TP.BOOL: BOOL, TP.STRING: OBJ, **_INT_TYPES}


def _constant_dtype(op: Any) -> int:
    if not op.has_arg("dtype") and op.has_arg("value"):
        raw = op.raw_arg("value")
        if raw.HasField("f"):
            return TP.FLOAT
        if raw.HasField("i"):
            return TP.INT64
        raise op.error("Argument 'value' is of unexpected type")
    dtype = op.parse_arg("dtype", "int32", TP.FLOAT)
    if dtype == TP.UNDEFINED:
        raise op.error("ConstantFill op cannot have undefined 'dtype' argument")
    if dtype not in _CONSTANT_TYPES:
        raise op.error(f"Unexpected 'dtype' argument value: {dtype}")
    return dtype


def _constant_value(op: Any, dtype: int) -> Any:
    """ConstantFill's value, read from the field matching dtype (as Caffe2 did at run time)."""
    if dtype in (TP.FLOAT, TP.DOUBLE):
        return op.parse_arg("value", "float", 0.0)
    if dtype == TP.STRING:
        return op.parse_arg("value", "bytes", b"")
    v = op.parse_arg("value", "int64", 0)
    if dtype == TP.BOOL:
        return bool(v)
    info = np.iinfo(_INT_TYPES[dtype])
    if not info.min <= v <= info.max:
        raise op.error(
            f"Value{v} of argument valuecannot be represented correctly in a target type "
            f"({_INT_TYPES[dtype]})"
        )
    return v


@operator("ConstantFill", inputs=_zero_or_one, outputs=1, allow_inplace={(0, 0)}, args=FILL_ARGS)
def constant_fill(op: Any) -> Kernel:
    """ConstantFill: [(X)] -> Y. Y filled with `value` of type `dtype`, shaped by the fill rules."""
    shape_fn = fill_shape(op)
    dtype = _constant_dtype(op)
    dt = _ENUM_DTYPE[dtype]
    try:
        value = _constant_value(op, dtype)
    except EnforceError as e:
        # Caffe2 read `value` when the op ran, so a wrong field fails the run, not creation.
        failure = e

        def fail() -> None:
            raise failure

        return fail
    Y = op.outputs[0]
    fixed = _static_shape(op, shape_fn)
    if fixed is not None:

        def run_fixed() -> None:
            output(Y, fixed, dt).fill(value)

        return run_fixed

    def run() -> None:
        output(Y, shape_fn(), dt).fill(value)

    return run


# ---- GivenTensor*Fill --------------------------------------------------------------------

# DataType -> (how `values` is read, output dtype).
_GIVEN_KINDS: dict[int, tuple[str, np.dtype]] = {
    TP.FLOAT: ("floats", F32),
    TP.DOUBLE: ("floats", F64),
    TP.BOOL: ("bools", BOOL),
    TP.INT32: ("int32s", I32),
    TP.INT64: ("ints", I64),
    TP.STRING: ("bytes_list", OBJ),
}


def _given_kernel(op: Any, dtype: int) -> Kernel:
    shape_fn = fill_shape(op)
    kind, dt = _GIVEN_KINDS[dtype]
    vals = op.parse_arg("values", kind, [])
    values = np.empty(len(vals), dt)
    values[:] = vals
    Y = op.outputs[0]
    fixed = _static_shape(op, shape_fn)

    def check(shape: tuple[int, ...]) -> None:
        n = int(np.prod(shape, dtype=np.int64))
        if n != values.size:
            raise op.error(
                f"{op.type}: output size {n} (shape {list(shape)}) does not match the number "
                f"of values given: {values.size}"
            )

    if fixed is not None:
        check(fixed)
        src = values.reshape(fixed)

        def run_fixed() -> None:
            np.copyto(output(Y, fixed, dt), src)

        return run_fixed

    def run() -> None:
        shape = shape_fn()
        check(shape)
        np.copyto(output(Y, shape, dt), values.reshape(shape))

    return run


def _given_tensor_fill_type(op: Any) -> int:
    if not op.has_arg("dtype"):
        return TP.FLOAT
    dtype = data_type_arg(op, "dtype", TP.FLOAT)
    if dtype == TP.UNDEFINED:
        raise op.error("Cannot have undefined 'dtype' argument")
    if dtype not in _GIVEN_KINDS:
        raise op.error(f"Unexpected 'dtype' argument value: {dtype}")
    return dtype


@operator("GivenTensorFill", inputs=_zero_or_one, outputs=1, allow_inplace={(0, 0)}, args=FILL_ARGS)
def given_tensor_fill(op: Any) -> Kernel:
    """GivenTensorFill: [(X)] -> Y. Y holds `values` (float32, or the type `dtype` names)."""
    return _given_kernel(op, _given_tensor_fill_type(op))


def _given_variant(name: str, dtype: int, what: str) -> None:
    def factory(op: Any) -> Kernel:
        return _given_kernel(op, dtype)

    factory.__doc__ = f"{name}: [(X)] -> Y. Y holds `values` as {what}; `dtype` is ignored."
    operator(name, inputs=_zero_or_one, outputs=1, allow_inplace={(0, 0)}, args=FILL_ARGS)(factory)


_given_variant("GivenTensorDoubleFill", TP.DOUBLE, "float64")
_given_variant("GivenTensorIntFill", TP.INT32, "int32")
_given_variant("GivenTensorInt64Fill", TP.INT64, "int64")
_given_variant("GivenTensorBoolFill", TP.BOOL, "bool")
_given_variant("GivenTensorStringFill", TP.STRING, "a string tensor (bytes)")


# ---- random fills ------------------------------------------------------------------------


def op_rng(op: Any) -> np.random.Generator:
    """The op's generator: seeded from device_option.random_seed if set, else from entropy."""
    d = op.opdef.device_option
    if op.opdef.HasField("device_option") and d.HasField("random_seed"):
        return np.random.default_rng(d.random_seed)
    return np.random.default_rng()


def _bound_input(op: Any, i: int, dt: np.dtype, what: str) -> Any:
    v = tensor(op, i)
    if v.size != 1:
        raise op.error(f"{what} blob must be scalar, got shape {list(v.shape)}", op.input_names[i])
    if v.dtype != dt:
        raise op.error(f"{what} blob must be of type {dt}, got {v.dtype}", op.input_names[i])
    return v.reshape(()).item()


def _uniform(op: Any, dt: np.dtype, kind: str, draw: Callable[..., None]) -> Kernel:
    shape_fn = fill_shape(op)
    lo, hi = op.parse_arg("min", kind, 0), op.parse_arg("max", kind, 1)
    bounds_from_inputs = len(op.inputs) == 3
    if bounds_from_inputs:
        field = "f" if kind == "float" else "i"
        for name in ("min", "max"):
            raw = op.raw_arg(name)
            if raw is not None and raw.HasField(field):
                raise op.error(f"Cannot set both {name} arg and {name} input blob")
    elif not lo < hi:
        raise op.error(f"Max value should be bigger than min value. (min {lo}, max {hi})")
    rng = op_rng(op)
    Y = op.outputs[0]

    def run() -> None:
        shape = shape_fn()
        a, b = lo, hi
        if bounds_from_inputs:
            a = _bound_input(op, 1, dt, "min")
            b = _bound_input(op, 2, dt, "max")
            if a > b:
                if not shape:
                    raise op.error("min > max with a scalar output: cannot empty the output")
                output(Y, (0,) + shape[1:], dt)
                return
        out = output(Y, shape, dt)
        if out.size:
            draw(rng, out, a, b)

    return run


def _draw_float(rng: np.random.Generator, out: np.ndarray, a: float, b: float) -> None:
    rng.random(dtype=out.dtype, out=out)
    out *= b - a
    out += a


def _draw_int(rng: np.random.Generator, out: np.ndarray, a: int, b: int) -> None:
    out[...] = rng.integers(a, b, size=out.shape, dtype=out.dtype, endpoint=True)


@operator(
    "UniformFill", inputs=_zero_one_or_three, outputs=1, allow_inplace={(0, 0)}, args=FILL_ARGS
)
def uniform_fill(op: Any) -> Kernel:
    """UniformFill: [(X), (min, max)] -> Y. float32 uniform in [min, max) (args default 0, 1)."""
    return _uniform(op, F32, "float", _draw_float)


@operator(
    "UniformIntFill", inputs=_zero_one_or_three, outputs=1, allow_inplace={(0, 0)}, args=FILL_ARGS
)
def uniform_int_fill(op: Any) -> Kernel:
    """UniformIntFill: [(X), (min, max)] -> Y. int32 uniform in [min, max], both inclusive."""
    return _uniform(op, I32, "int32", _draw_int)


@operator(
    "GaussianFill",
    inputs=_zero_or_one,
    outputs=1,
    allow_inplace={(0, 0)},
    args=FILL_ARGS + (Arg("mean", "float", 0.0), Arg("std", "float", 1.0)),
)
def gaussian_fill(op: Any) -> Kernel:
    """GaussianFill: [(X)] -> Y. float32 normal samples with `mean` and `std`."""
    shape_fn = fill_shape(op)
    mean, std = op.arg("mean"), op.arg("std")
    if not std > 0:
        raise op.error(f"Standard deviation should be nonnegative (std must be > 0, got {std})")
    rng = op_rng(op)
    Y = op.outputs[0]

    def run() -> None:
        out = output(Y, shape_fn(), F32)
        if out.size:
            rng.standard_normal(dtype=F32, out=out)
            out *= std
            out += mean

    return run


@operator("XavierFill", inputs=_zero_or_one, outputs=1, allow_inplace={(0, 0)}, args=FILL_ARGS)
def xavier_fill(op: Any) -> Kernel:
    """XavierFill: [(X)] -> Y. float32 uniform in +-sqrt(3 / fan_in), fan_in = size / shape[0]."""
    shape_fn = fill_shape(op)
    fixed = _static_shape(op, shape_fn)
    if fixed is not None and not fixed:
        raise op.error("XavierFill needs an output of at least one dimension (shape is empty)")
    rng = op_rng(op)
    Y = op.outputs[0]

    def run() -> None:
        shape = shape_fn()
        if not shape:
            raise op.error("XavierFill needs an output of at least one dimension (shape is [])")
        out = output(Y, shape, F32)
        if out.size:
            scale = np.sqrt(3.0 / (out.size // shape[0]))
            _draw_float(rng, out, -scale, scale)

    return run


for _name in ("ConstantFill", "GivenTensorFill", "GivenTensorDoubleFill", "GivenTensorIntFill",
              "GivenTensorInt64Fill", "GivenTensorBoolFill", "GivenTensorStringFill",
              "UniformFill", "UniformIntFill", "GaussianFill", "XavierFill"):  # fmt: skip
    gradient(_name)(_no_gradient)  # Caffe2's NO_GRADIENT: fills produce no input gradients
