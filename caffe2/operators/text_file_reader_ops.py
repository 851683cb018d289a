"""TSV file reading (Caffe2's text_file_reader.cc and text_file_reader_utils; spec data.md 7.2).

``CreateTextFileReader`` opens the file and stores a ``TextFileReaderInstance``;
``TextFileReaderRead`` reads up to ``batch_size`` rows from it, one 1-D output per field.

Tokenizing is Caffe2's: rows end at ``\\n``, fields at ``\\t``, and the escape byte is NUL (a
NUL is dropped and the byte after it is taken literally; files rarely hold one). A token is
emitted only when its delimiter is seen, so **a final line without a trailing newline is
never read**: with one field it is silently dropped; with several, the fields of that line
that a tab ended are tokens, and the read fails with "Invalid number of fields at end of
file" (or, when another pass follows, with a column-count error). Each pass after the first
rewinds the file and forgets the unfinished line. At the end of the last pass every read
returns empty outputs.

Only STRING fields (object arrays of ``bytes``) and FLOAT fields (float32) are supported.
FLOAT parses as C's ``strtof``: leading whitespace, then the longest number prefix (decimal,
hexadecimal, inf, nan); trailing bytes are ignored, and no number at all is an error. (The
value is rounded through a double, which can differ from strtof in the last bit in rare
halfway cases.) Every row's field count is checked, and errors name the file and the line.
Reads of one reader are serialized by its lock. Readers have no serializer, as in Caffe2.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from caffe2.operators._util import F32, TP
from caffe2.runtime.blob import describe
from caffe2.runtime.registry import Arg, operator

Kernel = Callable[[], None]

SUPPORTED_TYPES = (TP.STRING, TP.FLOAT)
CHUNK_SIZE = 1 << 16  # Caffe2's FileReader buffer size

_SPECIAL = re.compile(rb"[\n\t\x00]")
_NEWLINE, _TAB = 0x0A, 0x09

# strtof's accepted prefix: leading C-locale whitespace, then a hex, decimal, inf or nan number.
_STRTOF = re.compile(
    rb"[ \t\n\v\f\r]*("
    rb"[+-]?0[xX](?:[0-9a-fA-F]+(?:\.[0-9a-fA-F]*)?|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?"
    rb"|[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    rb"|[+-]?[iI][nN][fF](?:[iI][nN][iI][tT][yY])?"
    rb"|[+-]?[nN][aA][nN](?:\([0-9A-Za-z_]*\))?"
    rb")"
)


def type_name(dt: int) -> str:
    """The TensorProto.DataType name of an enum value (or the number if it is not one)."""
    try:
        return TP.DataType.Name(dt)
    except ValueError:
        return str(dt)


def parse_float(text: bytes) -> float | None:
    """The value C's strtof reads at the start of text, or None if there is no number."""
    if b"_" not in text:
        try:
            return float(text)
        except ValueError:
            pass
    m = _STRTOF.match(text)
    if m is None:
        return None
    s = m.group(1).decode("ascii")
    body = s.lstrip("+-").lower()
    if body.startswith("0x"):
        try:
            return float.fromhex(s)
        except OverflowError:
            return float("-inf") if s.startswith("-") else float("inf")
    if body.startswith("nan"):
        return float("-nan") if s.startswith("-") else float("nan")
    return float(s)


class _Tokenizer:
    """Caffe2's Tokenizer for delimiters ``\\n`` (row) and ``\\t`` (field), escape NUL.

    ``feed`` takes the next chunk and returns the tokens it completes, as
    ``(start_delim, text, line)``: start_delim is 0 for the first field of a row and 1 for
    the others; line is the 1-based row the token is in. The unfinished token is kept.
    """

    __slots__ = ("_parts", "_start_delim", "_skip", "_line")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._parts: list[bytes] = []
        self._start_delim = 0
        self._skip = False  # the last chunk ended with the escape: the next byte is literal
        self._line = 1

    def feed(self, buf: bytes) -> list[tuple[int, bytes, int]]:
        out: list[tuple[int, bytes, int]] = []
        n = len(buf)
        parts = self._parts
        i = cur = 0
        if self._skip:
            if n == 0:
                return out
            i, self._skip = 1, False
        search = _SPECIAL.search
        while True:
            m = search(buf, i)
            if m is None:
                break
            pos = m.start()
            c = buf[pos]
            parts.append(buf[cur:pos])
            cur = pos + 1
            if c == 0:  # escape: drop it, keep the next byte whatever it is
                i = pos + 2
                if i > n:
                    self._skip = True
                    break
                continue
            out.append((self._start_delim, b"".join(parts), self._line))
            parts.clear()
            if c == _NEWLINE:
                self._start_delim = 0
                self._line += 1
            else:
                self._start_delim = 1
            i = cur
        if cur < n:
            parts.append(buf[cur:])
        return out


class TextFileReaderInstance:
    """An open TSV file read in ``num_passes`` passes, with one lock for its reads."""

    caffe2_type_name = "std::unique_ptr<TextFileReaderInstance>"

    def __init__(
        self, filename: str, num_passes: int, field_types: list[int], chunk_size: int = CHUNK_SIZE
    ) -> None:
        self.filename = filename
        self.num_passes = num_passes
        self.field_types = list(field_types)
        self.chunk_size = chunk_size
        self.lock = threading.Lock()
        self.rows_read = 0
        self._pass = 0
        self._tokenizer = _Tokenizer()
        self._tokens: deque[tuple[int, bytes, int, int]] = deque()
        self._file = open(filename, "rb")  # held open for the reader's life
        if num_passes <= 0:
            self._file.close()

    def close(self) -> None:
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<TextFileReaderInstance {self.filename!r} pass {self._pass}/{self.num_passes}, "
            f"{self.rows_read} rows read>"
        )

    def _next_token(self) -> tuple[int, bytes, int, int] | None:
        """(start_delim, text, line, pass) of the next token, or None after the last pass."""
        tokens = self._tokens
        while not tokens:
            data = b""
            while not data and self._pass < self.num_passes:
                try:
                    data = self._file.read(self.chunk_size)
                except OSError as e:
                    raise OSError(f"error reading {self.filename!r}: {e}") from e
                if not data:
                    self._pass += 1
                    if self._pass < self.num_passes:
                        self._file.seek(0)
                        self._tokenizer.reset()
                    else:
                        self._file.close()
            if not data:
                return None
            p = self._pass
            tokens.extend((d, t, line, p) for d, t, line in self._tokenizer.feed(data))
        return tokens.popleft()

    def read(self, batch_size: int) -> list[np.ndarray]:
        """Up to batch_size rows, one 1-D array per field (caller holds ``lock``)."""
        n = len(self.field_types)
        cols: list[list[Any]] = [[] for _ in range(n)]
        rows = 0
        prev: tuple[int, bytes, int, int] | None = None
        while rows < batch_size:
            for field in range(n):
                tok = self._next_token()
                if tok is None:
                    if field != 0:
                        raise ValueError(
                            f"Invalid number of fields at end of file: line {prev[2]} of "
                            f"{self.filename!r} has {field} complete field(s), expected {n} "
                            "(a last line without a trailing newline is never read)"
                        )
                    return self._columns(cols, rows)
                delim, text, line, p = tok
                if field == 0 and delim != 0:
                    raise ValueError(
                        f"Invalid number of columns: line {line} of {self.filename!r} has more "
                        f"than {n} fields"
                    )
                if field > 0 and delim != 1:
                    where = f"line {prev[2]}"
                    hint = ""
                    if prev[3] != p:
                        hint = (
                            " (it is the last line and has no trailing newline, so its last "
                            "field is never read)"
                        )
                    raise ValueError(
                        f"Invalid number of columns: {where} of {self.filename!r} has {field} "
                        f"fields, expected {n}{hint}"
                    )
                if self.field_types[field] == TP.FLOAT:
                    v = parse_float(text)
                    if v is None:
                        raise ValueError(
                            f"Invalid float: {text.decode('utf-8', 'replace')!r} (field {field}, "
                            f"line {line} of {self.filename!r})"
                        )
                    cols[field].append(v)
                else:
                    cols[field].append(text)
                prev = tok
            rows += 1
        return self._columns(cols, rows)

    def _columns(self, cols: list[list[Any]], rows: int) -> list[np.ndarray]:
        self.rows_read += rows
        out = []
        for dt, col in zip(self.field_types, cols, strict=True):
            if dt == TP.FLOAT:
                with np.errstate(over="ignore"):
                    out.append(np.array(col, dtype=np.float64).astype(F32))
            else:
                a = np.empty(len(col), dtype=object)
                a[:] = col
                out.append(a)
        return out


@operator(
    "CreateTextFileReader",
    inputs=0,
    outputs=1,
    args=(
        Arg("filename", "str", None, required=True),
        Arg("num_passes", "int", 1),
        Arg("field_types", "ints", None, required=True),
    ),
)
def create_text_file_reader(op: Any) -> Kernel:
    """CreateTextFileReader: [] -> handle. Opens `filename` (TSV) for `num_passes` passes;
    `field_types` are TensorProto.DataType values, STRING or FLOAT."""
    filename = op.arg("filename")
    num_passes = op.arg("num_passes")
    field_types = op.arg("field_types")
    if not field_types:
        raise op.error("field_types arg must be non-empty")
    for i, dt in enumerate(field_types):
        if dt not in SUPPORTED_TYPES:
            raise op.error(
                f"CreateTextFileReader: unsupported type {type_name(dt)} of field {i} for "
                f"file {filename!r}; only STRING and FLOAT fields are supported"
            )
    if num_passes < 0:
        raise op.error(f"CreateTextFileReader: num_passes must be >= 0, got {num_passes}")
    Y = op.outputs[0]
    out_name = op.output_names[0]

    def run() -> None:
        try:
            Y.value = TextFileReaderInstance(filename, num_passes, field_types)
        except OSError as e:
            raise op.error(
                f"CreateTextFileReader: error opening file {filename!r} "
                f"({e.strerror or e}) for reader {out_name}",
                out_name,
            ) from None

    return run


def _instance(op: Any) -> TextFileReaderInstance:
    r = op.inputs[0].value
    if not isinstance(r, TextFileReaderInstance):
        name = op.input_names[0]
        raise op.error(
            f"{op.type}: input {name} must hold a text file reader (made by "
            f"CreateTextFileReader), but it holds {describe(r)}",
            name,
        )
    return r


@operator("TextFileReaderRead", inputs=1, outputs=(1, None), args=(Arg("batch_size", "int", 1),))
def text_file_reader_read(op: Any) -> Kernel:
    """TextFileReaderRead: [handle] -> [field_1..field_n]. Up to `batch_size` rows, one 1-D
    tensor per field; empty tensors once the last pass is over."""
    batch_size = op.arg("batch_size")
    if batch_size < 0:
        raise op.error(f"TextFileReaderRead: batch_size must be >= 0, got {batch_size}")
    outs = op.outputs
    n_out = len(outs)

    def run() -> None:
        reader = _instance(op)
        n = len(reader.field_types)
        if n != n_out:
            raise op.error(
                f"Invalid number of outputs. Expected {n} got {n_out} (the reader in "
                f"{op.input_names[0]} reads {n} fields of {reader.filename!r})",
                op.input_names[0],
            )
        with reader.lock:
            try:
                cols = reader.read(batch_size)
            except (ValueError, OSError) as e:
                raise op.error(f"TextFileReaderRead: {e}", op.input_names[0]) from None
        for blob, col in zip(outs, cols, strict=True):
            blob.value = col

    return run
