"""The operator registry: each op type's schema, kernel factory and gradient.

An operator family registers its ops with the ``operator`` decorator, as Caffe2 did with
OPERATOR_SCHEMA + REGISTER_CPU_OPERATOR::

    @operator("Relu", inputs=1, outputs=1, allow_inplace={(0, 0)})
    def relu(op):                      # called once per op instance, at net creation
        X, Y = op.inputs[0], op.outputs[0]
        def run():                     # called on every run: the bound kernel
            ...
        return run

and its gradient with ``gradient("Relu")``. The families under ``caffe2/operators`` are
imported the first time the registry is consulted.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from caffe2.runtime.errors import EnforceError

# The kinds an argument can be parsed as (spec runtime.md 2.4).
ARG_KINDS = frozenset(
    {"float", "int", "int32", "int64", "bool", "str", "bytes", "net",
     "floats", "ints", "int32s", "bools", "strings", "bytes_list", "nets", "raw"}
)  # fmt: skip


@dataclass(frozen=True)
class Arg:
    """A declared operator argument: its name, how it is parsed, and its default."""

    name: str
    kind: str
    default: Any = None
    required: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ARG_KINDS:
            raise ValueError(f"argument {self.name}: unknown kind {self.kind!r}")


Count = int | tuple[int, int | None] | Callable[[int], bool]


@dataclass
class OpSchema:
    """What Caffe2's OpSchema checked at op creation, plus the kernel factory."""

    type: str
    factory: Callable[..., Callable[[], Any]]
    inputs: Count = 1
    outputs: Count | Callable[[int, int], bool] = 1
    allow_inplace: frozenset[tuple[int, int]] | Callable[[int, int], bool] | bool = frozenset()
    enforce_inplace: frozenset[tuple[int, int]] = frozenset()
    args: dict[str, Arg] = field(default_factory=dict)
    needs_workspace: bool = False
    gradient: Callable[..., Any] | None = None

    @property
    def doc(self) -> str:
        """The factory's docstring, read when asked (families may set it after registering)."""
        return (self.factory.__doc__ or "").strip()

    def check_counts(self, n_in: int, n_out: int) -> str | None:
        """None if the counts fit the schema, else the reason."""
        if not _count_ok(self.inputs, n_in):
            return f"{n_in} inputs is not within the allowed range ({_count_text(self.inputs)})"
        outs = self.outputs
        ok = outs(n_in, n_out) if _is_pair_fn(outs) else _count_ok(outs, n_out)
        if not ok:
            return f"{n_out} outputs is not allowed for {n_in} inputs ({_count_text(outs)})"
        return None

    def inplace_allowed(self, i: int, o: int) -> bool:
        a = self.allow_inplace
        if a is True:
            return True
        if callable(a):
            return a(i, o) or (i, o) in self.enforce_inplace
        return (i, o) in a or (i, o) in self.enforce_inplace


def _is_pair_fn(c: object) -> bool:
    return callable(c) and getattr(c, "__code__", None) is not None and c.__code__.co_argcount == 2


def _count_ok(c: Count, n: int) -> bool:
    if isinstance(c, int):
        return n == c
    if isinstance(c, tuple):
        lo, hi = c
        return n >= lo and (hi is None or n <= hi)
    return bool(c(n))


def _count_text(c: object) -> str:
    if isinstance(c, int):
        return f"exactly {c}"
    if isinstance(c, tuple):
        lo, hi = c
        return f"{lo} to {'any' if hi is None else hi}"
    return getattr(c, "__doc__", None) or "custom rule"


_REGISTRY: dict[str, OpSchema] = {}
_PENDING_GRADIENTS: dict[str, Callable[..., Any]] = {}
_load_lock = threading.Lock()
_loaded = False


def _ensure_loaded() -> None:
    """Import every operator family once (the registry's one upward import)."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if not _loaded:
            import caffe2.operators  # noqa: F401

            _loaded = True


def operator(
    op_type: str,
    *,
    inputs: Count = 1,
    outputs: Any = 1,
    allow_inplace: Iterable[tuple[int, int]] | Callable[[int, int], bool] | bool = (),
    enforce_inplace: Iterable[tuple[int, int]] = (),
    args: Iterable[Arg] = (),
    needs_workspace: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a kernel factory with its schema; a second registration is an error."""
    if not (callable(allow_inplace) or isinstance(allow_inplace, bool)):
        allow_inplace = frozenset(allow_inplace)

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        if op_type in _REGISTRY:
            raise RuntimeError(f"operator {op_type} is registered twice")
        _REGISTRY[op_type] = OpSchema(
            type=op_type,
            factory=factory,
            inputs=inputs,
            outputs=outputs,
            allow_inplace=allow_inplace,
            enforce_inplace=frozenset(enforce_inplace),
            args={a.name: a for a in args},
            needs_workspace=needs_workspace,
            gradient=_PENDING_GRADIENTS.pop(op_type, None),
        )
        return factory

    return deco


def gradient(op_type: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the gradient maker of an op type: ``fn(opdef, g_output) -> (ops, g_input)``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        schema = _REGISTRY.get(op_type)
        if (schema is not None and schema.gradient is not None) or op_type in _PENDING_GRADIENTS:
            raise RuntimeError(f"gradient of {op_type} is registered twice")
        if schema is None:
            _PENDING_GRADIENTS[op_type] = fn
        else:
            schema.gradient = fn
        return fn

    return deco


def has_operator(op_type: str) -> bool:
    _ensure_loaded()
    return op_type in _REGISTRY


def get_schema(op_type: str) -> OpSchema | None:
    _ensure_loaded()
    return _REGISTRY.get(op_type)


def lookup(op_type: str, device: str = "CPU") -> OpSchema:
    """The schema of op_type, or an EnforceError that lists the closest registered names."""
    _ensure_loaded()
    schema = _REGISTRY.get(op_type)
    if schema is None:
        close = difflib.get_close_matches(op_type, list(_REGISTRY), n=5, cutoff=0.6)
        hint = f" Did you mean: {close}?" if close else ""
        raise EnforceError(
            f"Cannot create operator of type '{op_type}' on the device '{device}'. "
            f"Verify that implementation for the corresponding device exist.{hint}",
            "operator registry",
        )
    return schema


def close_matches(name: str, n: int = 5) -> list[str]:
    _ensure_loaded()
    return difflib.get_close_matches(name, list(_REGISTRY), n=n, cutoff=0.6)


def registered_types() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)
