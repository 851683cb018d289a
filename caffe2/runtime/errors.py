"""Exceptions of the runtime.

Caffe2 surfaced every C++ enforce failure as a Python RuntimeError whose message starts with
``[enforce fail at ...]``; users' code catches RuntimeError and greps for that text, so every
runtime failure here is an ``EnforceError`` (a RuntimeError) with the same prefix, followed by
where it happened: the net, the operator's index and type, and the blobs involved.
"""

from __future__ import annotations

from collections.abc import Iterator


class EnforceError(RuntimeError):
    """A failed check of the runtime (Caffe2's EnforceNotMet).

    ``where`` says which component raised it (an op type, ``workspace``, ``plan`` ...);
    ``blob`` names the blob the failure is about, when there is one.
    """

    def __init__(self, msg: str, where: str = "", blob: str | None = None) -> None:
        self.msg = msg
        self.where = where
        self.blob = blob
        text = f"[enforce fail at {where}] {msg}" if where else f"[enforce fail] {msg}"
        if blob is not None:
            text += f"\nOffending Blob name: {blob}."
        super().__init__(text)


class OperatorFailed(Exception):
    """Raised by a kernel to report a plain failure (Caffe2's ``return false``).

    The net turns it into a False run result, not an exception; the plan executor turns a
    False result into its own error message.
    """


def enforce(cond: object, msg: str, where: str = "", blob: str | None = None) -> None:
    """Raise EnforceError(msg) unless cond holds."""
    if not cond:
        raise EnforceError(msg, where, blob)


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """exc and every exception it was raised from or during (causes, contexts), once each."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
