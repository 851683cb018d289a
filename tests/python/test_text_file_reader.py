"""caffe2.python.text_file_reader.TextFileReader (spec data.md 7.2), after Caffe2's test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caffe2.python import core, workspace
from caffe2.python.dataio import Reader
from caffe2.python.schema import FetchRecord, List, Scalar, Struct
from caffe2.python.text_file_reader import TextFileReader

COLS = [
    ["l1f1", "l2f1", "l3f1", "l4f1"],
    ["l1f2", "l2f2", "l3f2", "l4f2"],
    [0.456, 0.789, 0.10101, -24342.64],
]


@pytest.fixture(autouse=True)
def _fresh_workspace():
    workspace.ResetWorkspace()
    yield
    workspace.ResetWorkspace()


@pytest.fixture
def schema() -> Struct:
    return Struct(
        ("field1", Scalar(dtype=str)),
        ("field2", Scalar(dtype=str)),
        ("field3", Scalar(dtype=np.float32)),
    )


@pytest.fixture
def txt(tmp_path: Path) -> Path:
    p = tmp_path / "data.txt"
    rows = zip(*COLS, strict=True)
    p.write_text("\n".join("\t".join(str(x) for x in r) for r in rows) + "\n")
    return p


def read_everything(reader: TextFileReader, n_fields: int) -> list[np.ndarray]:
    net = core.Net("read_net")
    should_stop, record = reader.read_record(net)
    results = [np.array([])] * n_fields
    for _ in range(100):
        workspace.RunNetOnce(net)
        arrays = FetchRecord(record).field_blobs()
        for i in range(n_fields):
            results[i] = np.append(results[i], arrays[i])
        if workspace.FetchBlob(should_stop):
            return results
    raise AssertionError("the reader never stopped")


@pytest.mark.parametrize("num_passes", [1, 2])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 5])
def test_text_file_reader(schema, txt, num_passes, batch_size):
    init_net = core.Net("init_net")
    reader = TextFileReader(
        init_net, filename=str(txt), schema=schema, batch_size=batch_size, num_passes=num_passes
    )
    assert isinstance(reader, Reader) and reader.schema() is schema
    workspace.RunNetOnce(init_net)
    results = read_everything(reader, 3)
    for i in range(3):
        if isinstance(COLS[i][0], str):
            assert list(results[i]) == COLS[i] * num_passes
        else:
            np.testing.assert_array_almost_equal(
                np.array(COLS[i] * num_passes, np.float32), results[i].astype(np.float32)
            )


def test_emitted_ops(schema, txt):
    init_net = core.Net("init_net")
    reader = TextFileReader(init_net, str(txt), schema, num_passes=3, batch_size=7)
    (create,) = init_net.Proto().op
    assert create.type == "CreateTextFileReader" and list(create.input) == []
    args = {a.name: a for a in create.arg}
    assert args["filename"].s == str(txt).encode()
    assert args["num_passes"].i == 3
    assert list(args["field_types"].ints) == [
        core.DataType.STRING,
        core.DataType.STRING,
        core.DataType.FLOAT,
    ]
    net = core.Net("read_net")
    should_stop, blobs = reader.read(net)
    read, empty = net.Proto().op
    assert read.type == "TextFileReaderRead" and list(read.input) == list(create.output)
    assert len(read.output) == 3 and [str(b) for b in blobs] == list(read.output)
    assert {a.name: a.i for a in read.arg} == {"batch_size": 7}
    assert empty.type == "IsEmpty" and list(empty.input) == [read.output[0]]
    assert str(should_stop) == empty.output[0] and "should_stop" in str(should_stop)


def test_single_field_and_unterminated_last_line(tmp_path):
    p = tmp_path / "one.txt"
    p.write_bytes(b"x\ny\nz")  # z has no newline: never read
    init_net = core.Net("init_net")
    reader = TextFileReader(init_net, str(p), Struct(("f", Scalar(dtype=str))), batch_size=10)
    workspace.RunNetOnce(init_net)
    net = core.Net("read_net")
    should_stop, blobs = reader.read(net)
    assert len(blobs) == 1
    workspace.RunNetOnce(net)
    assert list(workspace.FetchBlob(str(blobs[0]))) == [b"x", b"y"]
    assert not workspace.FetchBlob(should_stop)
    workspace.RunNetOnce(net)
    assert workspace.FetchBlob(should_stop)


def test_missing_file_fails_when_init_net_runs(tmp_path):
    init_net = core.Net("init_net")
    missing = tmp_path / "missing.txt"
    TextFileReader(init_net, str(missing), Struct(("f", Scalar(dtype=str))))
    with pytest.raises(RuntimeError, match="error opening file") as e:
        workspace.RunNetOnce(init_net)
    assert str(missing) in str(e.value)


def test_schema_checks(txt):
    net = core.Net("init_net")
    with pytest.raises(TypeError, match="schema must be a schema.Struct"):
        TextFileReader(net, str(txt), Scalar(dtype=str))
    with pytest.raises(TypeError, match="only scalar fields are supported; field 'l'"):
        TextFileReader(net, str(txt), Struct(("l", List(Scalar(dtype=np.float32)))))
    for dt in (np.int32, np.float64, (np.float32, 2)):
        with pytest.raises(TypeError, match="field 'f' has dtype .* only string and float32"):
            TextFileReader(net, str(txt), Struct(("f", Scalar(dtype=dt))))
    with pytest.raises(ValueError, match="batch_size must be positive"):
        TextFileReader(net, str(txt), Struct(("f", Scalar(dtype=str))), batch_size=0)
    assert len(net.Proto().op) == 0  # nothing was added by a failed construction
