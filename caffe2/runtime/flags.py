"""Caffe2's command-line flags (``GlobalInit``): one process-wide table, thread-safe.

Kept in the runtime so operators (Save's chunk size, ...) read flags without importing the
``C`` surface.
"""

from __future__ import annotations

import threading
from typing import Any

from caffe2.runtime import serialization
from caffe2.runtime.errors import EnforceError

_lock = threading.Lock()
_WHERE = "GlobalInit"

FLAGS: dict[str, Any] = {
    "caffe2_log_level": 0,
    "caffe2_tensor_chunk_size": serialization.DEFAULT_CHUNK_SIZE,
    "caffe2_serialize_fp16_as_bytes": False,
    "caffe2_max_tensor_serializer_threads": 16,
    "caffe2_handle_executor_threads_exceptions": True,
    "caffe2_print_blob_sizes_at_exit": False,
}


def register_flag(name: str, default: Any) -> None:
    """Declare a command-line flag GlobalInit accepts (its type is the default's)."""
    with _lock:
        FLAGS.setdefault(name, default)


def _set_flag(name: str, text: str | None) -> None:
    if name not in FLAGS and name.startswith("no") and name[2:] in FLAGS and text is None:
        FLAGS[name[2:]] = False
        return
    _enforce(name in FLAGS, f"GlobalInit: unknown flag --{name}")
    cur = FLAGS[name]
    if isinstance(cur, bool):
        if text is None or text.lower() in ("1", "true", "yes"):
            FLAGS[name] = True
        elif text.lower() in ("0", "false", "no"):
            FLAGS[name] = False
        else:
            raise EnforceError(f"GlobalInit: flag --{name} wants a bool, got {text!r}", _WHERE)
        return
    _enforce(text is not None, f"GlobalInit: flag --{name} needs a value")
    try:
        FLAGS[name] = type(cur)(text)
    except ValueError:
        raise EnforceError(
            f"GlobalInit: flag --{name} wants a {type(cur).__name__}, got {text!r}", _WHERE
        ) from None


def parse(args: list[str]) -> list[str]:
    """Set flags from ``--name=value``, ``--name value``, ``--flag``/``--noflag``;
    args[0] is the program name. Returns the flag names that were set."""
    items = [str(a) for a in list(args)[1:]]
    names: list[str] = []
    with _lock:
        i = 0
        while i < len(items):
            a = items[i]
            _enforce(a.startswith("-"), f"GlobalInit: unexpected argument {a!r}")
            body = a.lstrip("-")
            if "=" in body:
                name, text = body.split("=", 1)
            else:
                name, text = body, None
                cur = FLAGS.get(name)
                if cur is not None and not isinstance(cur, bool) and i + 1 < len(items):
                    i += 1
                    text = items[i]
            _set_flag(name, text)
            names.append(name)
            i += 1
    return names


def _enforce(cond: object, msg: str) -> None:
    if not cond:
        raise EnforceError(msg, _WHERE)
