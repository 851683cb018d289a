"""CreateTextFileReader / TextFileReaderRead (spec data.md 7.2) on real files."""

from __future__ import annotations

import math
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from caffe2.operators.text_file_reader_ops import TextFileReaderInstance, parse_float
from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import type_name
from caffe2.runtime.net import OperatorError
from caffe2.runtime.workspace import Workspace

TP = caffe2_pb2.TensorProto
S, F = TP.STRING, TP.FLOAT


def create_op(path: object, types: list[int], out: str = "reader", passes: int | None = None):
    op = caffe2_pb2.OperatorDef(type="CreateTextFileReader", output=[out])
    if path is not None:
        op.arg.add(name="filename", s=str(path).encode())
    if passes is not None:
        op.arg.add(name="num_passes", i=passes)
    op.arg.add(name="field_types", ints=types)
    return op


def read_op(n: int, batch_size: int | None = None, reader: str = "reader", prefix: str = "f"):
    op = caffe2_pb2.OperatorDef(
        type="TextFileReaderRead", input=[reader], output=[f"{prefix}{i}" for i in range(n)]
    )
    if batch_size is not None:
        op.arg.add(name="batch_size", i=batch_size)
    return op


def net_of(ws: Workspace, op: caffe2_pb2.OperatorDef, name: str):
    nd = caffe2_pb2.NetDef(name=name)
    nd.op.append(op)
    return ws.create_net(nd, overwrite=True)


def open_reader(ws: Workspace, path: Path, types: list[int], passes: int | None = None) -> None:
    assert ws.run_operator_once(create_op(path, types, passes=passes))


def outputs(ws: Workspace, n: int, prefix: str = "f") -> list[np.ndarray]:
    return [ws.get_blob(f"{prefix}{i}").value for i in range(n)]


def read_all(ws: Workspace, n: int, batch_size: int, max_reads: int = 100) -> list[list]:
    """Run the read until it returns nothing; the rows, column by column."""
    net = net_of(ws, read_op(n, batch_size), "read")
    cols: list[list] = [[] for _ in range(n)]
    for _ in range(max_reads):
        assert net.run()
        outs = outputs(ws, n)
        assert len({len(o) for o in outs}) == 1 and len(outs[0]) <= batch_size
        if len(outs[0]) == 0:
            return cols
        for c, o in zip(cols, outs, strict=True):
            c.extend(o.tolist())
    raise AssertionError("the reader never ran dry")


@pytest.fixture
def ws() -> Workspace:
    return Workspace()


ROWS = [("l1f1", "l1f2", 0.456), ("l2f1", "l2f2", 0.789), ("l3f1", "l3f2", 0.10101),
        ("l4f1", "l4f2", -24342.64)]  # fmt: skip


@pytest.fixture
def tsv(tmp_path: Path) -> Path:
    p = tmp_path / "data.tsv"
    p.write_text("".join(f"{a}\t{b}\t{c}\n" for a, b, c in ROWS))
    return p


@pytest.mark.parametrize("passes", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 5])
def test_reads_every_row_in_batches(ws, tsv, passes, batch_size):
    open_reader(ws, tsv, [S, S, F], passes=passes)
    cols = read_all(ws, 3, batch_size)
    assert cols[0] == [r[0].encode() for r in ROWS] * passes
    assert cols[1] == [r[1].encode() for r in ROWS] * passes
    np.testing.assert_array_equal(
        np.array(cols[2], np.float32), np.array([r[2] for r in ROWS] * passes, np.float32)
    )


def test_output_types_and_shrinking(ws, tsv):
    open_reader(ws, tsv, [S, S, F])
    net = net_of(ws, read_op(3, 3), "read")
    assert net.run()
    s0, s1, f = outputs(ws, 3)
    assert s0.dtype == object and s0.shape == (3,) and s0[0] == b"l1f1"
    assert all(isinstance(x, bytes) for x in s1)
    assert f.dtype == np.float32 and f.shape == (3,)
    assert net.run()  # one row left: the outputs shrink to it
    assert [o.shape for o in outputs(ws, 3)] == [(1,), (1,), (1,)]
    assert outputs(ws, 3)[0][0] == b"l4f1"
    for _ in range(3):  # at EOF: empty outputs, forever
        assert net.run()
        s0, s1, f = outputs(ws, 3)
        assert s0.shape == (0,) and s0.dtype == object and f.shape == (0,) and f.dtype == np.float32


def test_default_batch_size_is_one(ws, tsv):
    open_reader(ws, tsv, [S, S, F])
    assert ws.run_operator_once(read_op(3))
    assert outputs(ws, 3)[0].tolist() == [b"l1f1"]


def test_handle_type_and_rerun_rewinds(ws, tsv):
    create = net_of(ws, create_op(tsv, [S, S, F]), "create")
    assert create.run()
    first = ws.get_blob("reader").value
    assert isinstance(first, TextFileReaderInstance)
    assert type_name(first) == "std::unique_ptr<TextFileReaderInstance>"
    read = net_of(ws, read_op(3, 2), "read")
    assert read.run()
    assert create.run()  # a new reader, back at the start
    assert ws.get_blob("reader").value is not first
    assert read.run()
    assert outputs(ws, 3)[0].tolist() == [b"l1f1", b"l2f1"]
    assert first.rows_read == 2


# ---- the missing-final-newline quirk -------------------------------------------------------
def test_last_line_without_newline_is_never_read_single_field(ws, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"a\nb\nc")
    open_reader(ws, p, [S], passes=2)
    assert read_all(ws, 1, 2) == [[b"a", b"b", b"a", b"b"]]


def test_file_of_one_unterminated_line_reads_nothing(ws, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"1.5")
    open_reader(ws, p, [F])
    assert read_all(ws, 1, 4) == [[]]


def test_last_line_without_newline_with_several_fields_fails(ws, tmp_path):
    # Its tab-ended fields are tokens, its last field is not: the row is incomplete.
    p = tmp_path / "x.tsv"
    p.write_bytes(b"a\t1\nb\t2")
    open_reader(ws, p, [S, F])
    net = net_of(ws, read_op(2, 1), "read")
    assert net.run()
    assert outputs(ws, 2)[0].tolist() == [b"a"]
    with pytest.raises(OperatorError, match="Invalid number of fields at end of file") as e:
        net.run()
    msg = str(e.value)
    assert "line 2 of" in msg and str(p) in msg and "never read" in msg
    assert e.value.blob == "reader" and "(TextFileReaderRead)" in msg


def test_last_line_without_newline_breaks_the_next_pass(ws, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"a\t1\nb\t2")
    open_reader(ws, p, [S, F], passes=2)
    net = net_of(ws, read_op(2, 1), "read")
    assert net.run()
    with pytest.raises(OperatorError, match="Invalid number of columns: line 2") as e:
        net.run()
    assert "no trailing newline" in str(e.value)


# ---- field counts and values -----------------------------------------------------------------
def test_too_many_fields_names_the_line(ws, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"a\t1\nb\t2\tz\nc\t3\n")
    open_reader(ws, p, [S, F])
    with pytest.raises(OperatorError, match="line 2 of .* has more than 2 fields") as e:
        ws.run_operator_once(read_op(2, 10))
    assert str(p) in str(e.value)


def test_too_few_fields_names_the_line(ws, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"a\t1\nb\t2\nc\nd\t4\n")
    open_reader(ws, p, [S, F])
    with pytest.raises(OperatorError, match="line 3 of .* has 1 fields, expected 2"):
        ws.run_operator_once(read_op(2, 10))


def test_short_last_line_with_newline(ws, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"a\t1\nb\n")
    open_reader(ws, p, [S, F])
    with pytest.raises(OperatorError, match="line 2 of .* has 1 complete field"):
        ws.run_operator_once(read_op(2, 10))


def test_invalid_float_names_value_field_and_line(ws, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"a\t1\nb\tzz\n")
    open_reader(ws, p, [S, F])
    with pytest.raises(OperatorError, match=r"Invalid float: 'zz' \(field 1, line 2 of"):
        ws.run_operator_once(read_op(2, 10))


def test_empty_lines_are_empty_strings(ws, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"a\n\nb\n")
    open_reader(ws, p, [S])
    assert read_all(ws, 1, 10) == [[b"a", b"", b"b"]]


def test_crlf_keeps_the_carriage_return_in_strings(ws, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"x\t1.25\r\ny\t2\r\n")
    open_reader(ws, p, [S, F])
    assert ws.run_operator_once(read_op(2, 10))
    a, b = outputs(ws, 2)
    assert a.tolist() == [b"x", b"y"] and b.tolist() == [1.25, 2.0]
    open_reader(ws, p, [F, S])
    with pytest.raises(OperatorError, match="Invalid float: 'x'"):
        ws.run_operator_once(read_op(2, 10))


def test_nul_escapes_the_next_byte(ws, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"a\x00\tb\tc\x00\nd\n")
    open_reader(ws, p, [S, S])
    assert read_all(ws, 2, 10) == [[b"a\tb"], [b"c\nd"]]


def test_utf8_and_binary_strings_are_kept_as_bytes(ws, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes("héllo\n".encode() + b"\xff\xfe\n")
    open_reader(ws, p, [S])
    assert read_all(ws, 1, 10) == [["héllo".encode(), b"\xff\xfe"]]


@pytest.mark.parametrize(
    "text, expected",
    [
        (b"1.5", 1.5), (b"  -2", -2.0), (b"+.5", 0.5), (b"3.", 3.0), (b"1e3", 1000.0),
        (b"1.5abc", 1.5), (b"1e", 1.0), (b"0x10", 16.0), (b"0x1.8p1", 3.0), (b"0x", 0.0),
        (b"inf", math.inf), (b"-Infinity", -math.inf), (b"1e999", math.inf),
        (b"1_000", 1.0), (b" 7 ", 7.0),
    ],
)  # fmt: skip
def test_float_parsing_is_strtof(text, expected):
    assert parse_float(text) == expected


@pytest.mark.parametrize("text", [b"", b" ", b"abc", b"-", b".", b"e5", b"x1"])
def test_float_parsing_rejects_non_numbers(text):
    assert parse_float(text) is None


def test_nan_parses():
    assert math.isnan(parse_float(b"nan")) and math.isnan(parse_float(b"NaN(123)x"))


def test_float_values_are_float32(ws, tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"0.1\n1e39\n-0x1p-2\n")
    open_reader(ws, p, [F])
    assert ws.run_operator_once(read_op(1, 10))
    v = outputs(ws, 1)[0]
    assert v.dtype == np.float32
    assert v[0] == np.float32(0.1) and np.isinf(v[1]) and v[2] == -0.25


# ---- chunking and passes ---------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64])
def test_chunk_boundaries_do_not_change_tokens(tmp_path, chunk):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"ab\tcd\x00\te\nfff\t\x00\x00g\n\t\nh\x00")
    r = TextFileReaderInstance(str(p), 2, [S, S], chunk_size=chunk)
    with r.lock:
        cols = r.read(100)
    r.close()
    assert [c.tolist() for c in cols] == [
        [b"ab", b"fff", b"", b"ab", b"fff", b""],
        [b"cd\te", b"\x00g", b"", b"cd\te", b"\x00g", b""],
    ]


def test_zero_passes_reads_nothing(ws, tsv):
    open_reader(ws, tsv, [S, S, F], passes=0)
    assert read_all(ws, 3, 2) == [[], [], []]


def test_empty_file(ws, tmp_path):
    p = tmp_path / "empty.tsv"
    p.write_bytes(b"")
    open_reader(ws, p, [S], passes=3)
    assert read_all(ws, 1, 2) == [[]]


def test_concurrent_reads_take_each_row_once(ws, tmp_path):
    p = tmp_path / "big.tsv"
    n_rows = 3000
    p.write_text("".join(f"r{i}\t{i}\n" for i in range(n_rows)))
    open_reader(ws, p, [S, F], passes=2)
    got: list[list] = []
    lock = threading.Lock()
    nets = [
        net_of(ws, read_op(2, 7, prefix=f"t{k}_"), f"read{k}") for k in range(6)
    ]  # each thread has its own outputs

    def work(k: int) -> None:
        mine = []
        while True:
            nets[k].run()
            s, f = outputs(ws, 2, prefix=f"t{k}_")
            if len(s) == 0:
                break
            assert all(x == f"r{int(v)}".encode() for x, v in zip(s, f, strict=True))
            mine.extend(s.tolist())
        with lock:
            got.extend(mine)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert sorted(got) == sorted([f"r{i}".encode() for i in range(n_rows)] * 2)


# ---- bad arguments and inputs -------------------------------------------------------------
def test_missing_file_names_op_blob_and_file(ws, tmp_path):
    missing = tmp_path / "nope.tsv"
    net = net_of(ws, create_op(missing, [S], out="my_reader"), "create")
    with pytest.raises(OperatorError, match="error opening file") as e:
        net.run()
    msg = str(e.value)
    assert str(missing) in msg and "my_reader" in msg and "(CreateTextFileReader)" in msg
    assert e.value.blob == "my_reader"


def test_directory_is_not_a_file(ws, tmp_path):
    with pytest.raises(OperatorError, match="error opening file"):
        net_of(ws, create_op(tmp_path, [S]), "create").run()


@pytest.mark.parametrize("bad", [TP.INT32, TP.DOUBLE, TP.INT64, 99])
def test_unsupported_field_type_fails_at_creation(ws, tsv, bad):
    with pytest.raises(RuntimeError, match="only STRING and FLOAT fields are supported") as e:
        net_of(ws, create_op(tsv, [S, bad]), "create")
    msg = str(e.value)
    assert "of field 1" in msg and str(tsv) in msg and "(CreateTextFileReader)" in msg
    if bad == TP.INT32:
        assert "unsupported type INT32" in msg


def test_argument_checks(ws, tsv):
    with pytest.raises(RuntimeError, match="field_types arg must be non-empty"):
        net_of(ws, create_op(tsv, []), "c")
    with pytest.raises(RuntimeError, match="Argument 'filename' is required"):
        net_of(ws, create_op(None, [S]), "c")
    with pytest.raises(RuntimeError, match="num_passes must be >= 0"):
        net_of(ws, create_op(tsv, [S], passes=-1), "c")
    ws.create_blob("reader")
    with pytest.raises(RuntimeError, match="batch_size must be >= 0"):
        net_of(ws, read_op(1, -1), "r")


def test_output_count_must_match_the_fields(ws, tsv):
    open_reader(ws, tsv, [S, S, F])
    with pytest.raises(OperatorError, match="Invalid number of outputs. Expected 3 got 2") as e:
        ws.run_operator_once(read_op(2))
    assert e.value.blob == "reader"


def test_read_needs_a_reader(ws):
    ws.create_blob("reader").value = np.zeros(3, np.float32)
    with pytest.raises(OperatorError, match="must hold a text file reader") as e:
        ws.run_operator_once(read_op(1))
    assert e.value.blob == "reader"


def test_schemas(ws, tsv):
    ws.create_blob("x")
    for op in (
        caffe2_pb2.OperatorDef(type="TextFileReaderRead", input=["x"], output=[]),
        caffe2_pb2.OperatorDef(type="TextFileReaderRead", input=[], output=["y"]),
    ):
        with pytest.raises(RuntimeError, match="did not pass schema checking"):
            net_of(ws, op, "s")
    bad = create_op(tsv, [S])
    bad.input.append("x")
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        net_of(ws, bad, "s")
