"""Thread-local context stacks for classes such as Cluster, Node, TaskGroup and NetBuilder.

``@define_context()`` turns a class into a context: ``with obj:`` pushes it on a per-thread
stack of its class, ``Cls.current()`` returns the innermost active one, and an instance can
decorate a function so that the function runs inside it. Subclasses of a context class share
their parent's stack. With ``allow_default=True``, ``current()`` on an empty stack builds a
default instance and pushes it for good (for that thread).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T", bound=type)


class ContextInfo:
    """The registry entry of one context class: its default policy and per-thread stack."""

    def __init__(self, cls: type, allow_default: bool, arg_name: str | None = None) -> None:
        self.cls = cls
        self.allow_default = allow_default
        self.arg_name = arg_name
        self._local = threading.local()

    @property
    def _stack(self) -> list[Any]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def enter(self, value: Any) -> None:
        self._stack.append(value)

    def exit(self, value: Any, unwinding: bool = False) -> None:
        """Pop value, which must be the innermost context.

        While an exception propagates (``unwinding``), contexts entered inside value whose
        own exit failed before popping are dropped too, so that the original exception is
        not replaced by this check.
        """
        stack = self._stack
        assert len(stack) > 0, f"Context {self.cls} is empty."
        if unwinding and stack[-1] is not value and any(v is value for v in stack):
            while stack.pop() is not value:
                pass
            return
        popped = stack.pop()
        assert popped is value, f"Context {self.cls}: exited {value!r} but {popped!r} was active."

    def get_active(self, required: bool = True) -> Any:
        stack = self._stack
        if not stack:
            if not required:
                return None
            assert self.allow_default, f"Context {self.cls} is required but none is active."
            self.enter(self.cls())
        return stack[-1]


class ContextRegistry:
    """Every class decorated with ``define_context``, keyed by class."""

    def __init__(self) -> None:
        self._ctxs: dict[type, ContextInfo] = {}
        self._lock = threading.Lock()

    def register(self, info: ContextInfo) -> None:
        with self._lock:
            assert info.cls not in self._ctxs, f"Context {info.cls} is already registered."
            self._ctxs[info.cls] = info

    def get(self, cls: type) -> ContextInfo:
        info = self._ctxs.get(cls)
        assert info is not None, f"{cls} is not a context class."
        return info


_CONTEXT_REGISTRY = ContextRegistry()


def _context_registry() -> ContextRegistry:
    return _CONTEXT_REGISTRY


def _ctx_enter(self: Any) -> Any:
    if self._prev_enter is not None:
        self._prev_enter()
    _CONTEXT_REGISTRY.get(self._ctx_class).enter(self)
    return self


def _ctx_exit(self: Any, *args: Any) -> None:
    unwinding = bool(args) and args[0] is not None
    _CONTEXT_REGISTRY.get(self._ctx_class).exit(self, unwinding)
    if self._prev_exit is not None:
        self._prev_exit(*args)


def _ctx_call(self: Any, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with self:
            return func(*args, **kwargs)

    return wrapper


def _ctx_current(cls: type, value: Any = None, required: bool = True) -> Any:
    return _get_active_context(cls, value, required)


def _get_active_context(cls: type, value: Any = None, required: bool = True) -> Any:
    """``value`` checked against cls if given, else the innermost active context of cls."""
    info = _CONTEXT_REGISTRY.get(cls._ctx_class)  # type: ignore[attr-defined]
    if value is not None:
        assert isinstance(value, cls), f"Wrong context type. Expected: {cls}, got {type(value)}."
        return value
    return info.get_active(required=required)


class define_context:
    """Class decorator making a class a context (see the module docstring)."""

    def __init__(self, arg_name: str | None = None, allow_default: bool = False) -> None:
        self.arg_name = arg_name
        self.allow_default = allow_default

    def __call__(self, cls: T) -> T:
        assert not hasattr(cls, "_ctx_class"), (
            f"{cls} parent class ({cls._ctx_class}) already defines context."  # type: ignore[attr-defined]
        )
        _CONTEXT_REGISTRY.register(ContextInfo(cls, self.allow_default, self.arg_name))
        cls._prev_enter = getattr(cls, "__enter__", None)  # type: ignore[attr-defined]
        cls._prev_exit = getattr(cls, "__exit__", None)  # type: ignore[attr-defined]
        cls._ctx_class = cls  # type: ignore[attr-defined]
        cls.__enter__ = _ctx_enter  # type: ignore[attr-defined]
        cls.__exit__ = _ctx_exit  # type: ignore[attr-defined]
        cls.__call__ = _ctx_call  # type: ignore[operator]
        cls.current = classmethod(_ctx_current)  # type: ignore[attr-defined]
        return cls
