"""The ``caffe2py`` command (caffe2/cli.py): run-plan and show, run in subprocesses."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

from caffe2 import cli
from caffe2.proto import caffe2_pb2
from caffe2.python import core, workspace
from caffe2.runtime import db as dbmod

W = np.arange(6, dtype=np.float32).reshape(2, 3)


def run_cli(*args: str, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caffe2.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def op(op_type: str, inputs: list[str], outputs: list[str], **kwargs: object):
    return core.CreateOperator(op_type, inputs, outputs, **kwargs)


def net_def(name: str, *ops: caffe2_pb2.OperatorDef) -> caffe2_pb2.NetDef:
    net = caffe2_pb2.NetDef(name=name)
    net.op.extend(ops)
    return net


def plan_def(name: str, *steps: tuple[str, list[caffe2_pb2.NetDef]], num_iter: int = 0):
    """A PlanDef with one top-level step per (step name, nets)."""
    plan = caffe2_pb2.PlanDef(name=name)
    for step_name, nets in steps:
        step = plan.execution_step.add(name=step_name)
        if num_iter:
            step.num_iter = num_iter
        for net in nets:
            if net.name not in [n.name for n in plan.network]:
                plan.network.add().CopyFrom(net)
            step.network.append(net.name)
    return plan


def train_net() -> caffe2_pb2.NetDef:
    return net_def("train", op("Add", ["w", "w"], ["y"]), op("Scale", ["y"], ["z"], scale=0.25))


def write(path: pathlib.Path, msg: caffe2_pb2.PlanDef | caffe2_pb2.NetDef, text: bool) -> None:
    if text:
        path.write_text(text_format.MessageToString(msg))
    else:
        path.write_bytes(msg.SerializeToString())


def save_db(path: pathlib.Path, db_type: str = "minidb") -> None:
    """A DB holding w (a float tensor) and s (a string), written by a Save op."""
    ws = workspace.C.Workspace()
    ws.feed_blob("w", W)
    ws.feed_blob("s", b"hello")
    ws.run(op("Save", ["w", "s"], [], db=str(path), db_type=db_type, absolute_path=1))


def load_db(path: pathlib.Path, db_type: str = "minidb") -> dict[str, object]:
    """Every blob of a DB, loaded by a Load op into a private workspace."""
    ws = workspace.C.Workspace()
    ws.run(op("Load", [], [], db=str(path), db_type=db_type, absolute_path=1, load_all=1))
    return {name: ws.fetch_blob(name) for name in ws.blobs}


@pytest.fixture
def files(tmp_path: pathlib.Path) -> pathlib.Path:
    save_db(tmp_path / "in.minidb")
    plan = plan_def("p", ("s", [train_net()]))
    write(tmp_path / "plan.pb", plan, text=False)
    write(tmp_path / "plan.pbtxt", plan, text=True)
    write(tmp_path / "net.pb", train_net(), text=False)
    write(tmp_path / "net.pbtxt", train_net(), text=True)
    return tmp_path


# ---- run-plan --------------------------------------------------------------------------------
@pytest.mark.parametrize("plan_file", ["plan.pb", "plan.pbtxt"])
def test_run_plan_loads_prints_and_saves(files: pathlib.Path, plan_file: str):
    out_db = files / "out.minidb"
    res = run_cli(
        "run-plan",
        files / plan_file,
        "--load-db",
        files / "in.minidb",
        "--db-type",
        "minidb",
        "--print-blob",
        "y",
        "--print-blob",
        "s",
        "--save-db",
        out_db,
        "--save-blob",
        "z",
        "--save-blob",
        "y",
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert res.stdout == (
        "y: float32 tensor, shape (2, 3)\n"
        "[[ 0.,  2.,  4.],\n"
        " [ 6.,  8., 10.]]\n"
        "s: string (5 bytes)\n"
        "b'hello'\n"
    )
    saved = load_db(out_db)
    assert sorted(saved) == ["y", "z"]
    np.testing.assert_array_equal(saved["y"], 2 * W)
    np.testing.assert_array_equal(saved["z"], 0.5 * W)
    assert saved["z"].dtype == np.float32


def test_run_plan_loads_only_the_named_blobs(files: pathlib.Path):
    res = run_cli(
        "run-plan", files / "plan.pb", "--load-db", files / "in.minidb", "--load-blob", "w",
        "--print-blob", "z", "--print-blob", "s",
    )  # fmt: skip
    assert res.returncode == 1
    assert res.stdout.startswith("z: float32 tensor, shape (2, 3)\n")
    assert res.stderr.strip() == (
        "caffe2py run-plan: error: cannot print blob s: no such blob in the workspace"
    )


def test_run_plan_runs_iterations_and_prints_a_scalar(tmp_path: pathlib.Path):
    net = net_def(
        "count",
        op("ConstantFill", [], ["one"], shape=[], value=1.0),
        op("Add", ["acc", "one"], ["acc"]),
    )
    init = net_def("init", op("ConstantFill", [], ["acc"], shape=[], value=0.0))
    plan = plan_def("p", ("init", [init]))
    plan.execution_step.add(name="loop", network=["count"], num_iter=3)
    plan.network.add().CopyFrom(net)
    write(tmp_path / "p.pb", plan, text=False)
    res = run_cli("run-plan", tmp_path / "p.pb", "--print-blob", "acc")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "acc: float32 tensor, shape ()\n3.0\n"


def test_print_blob_kinds(tmp_path: pathlib.Path):
    net = net_def(
        "n",
        op("GivenTensorStringFill", [], ["st"], values=[b"a", b"bc"], shape=[2]),
        op("ConstantFill", [], ["e"], shape=[0, 3], value=1.0),
        op("GivenTensorInt64Fill", [], ["i"], values=[7, 8], shape=[2]),
        op("CreateCounter", [], ["c"]),
    )
    write(tmp_path / "p.pb", plan_def("p", ("s", [net])), text=False)
    res = run_cli(
        "run-plan", tmp_path / "p.pb",
        "--print-blob", "st", "--print-blob", "e", "--print-blob", "i", "--print-blob", "c",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "st: string tensor, shape (2,)",
        "[b'a', b'bc']",
        "e: float32 tensor, shape (0, 3)",
        "[]",
        "i: int64 tensor, shape (2,)",
        "[7, 8]",
        "c: std::unique_ptr<Counter<long>> (not a tensor or string: no values to print)",
    ]


def test_run_plan_root_folder_and_caffe2_flags(files: pathlib.Path):
    # The plan saves w with a relative path: it lands in the root folder; the chunk size flag
    # (GlobalInit) splits the 6 elements into 3 chunks.
    saver = net_def("saver", op("Save", ["w"], [], db="ckpt.minidb", db_type="minidb"))
    write(files / "save.pb", plan_def("p", ("s", [saver])), text=False)
    root = files / "root"
    res = run_cli(
        "run-plan", files / "save.pb", "--load-db", files / "in.minidb",
        "--root-folder", root, "--caffe2-flag", "caffe2_tensor_chunk_size=2",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    db = dbmod.open_db("minidb", str(root / "ckpt.minidb"), "read")
    try:
        cursor = db.new_cursor()
        keys = [k for k, _ in cursor]
        cursor.close()
    finally:
        db.close()
    assert keys == [b"w#%0", b"w#%1", b"w#%2"]
    np.testing.assert_array_equal(load_db(root / "ckpt.minidb")["w"], W)


@pytest.mark.parametrize("db_type", ["leveldb", "lmdb", "minidb"])
def test_run_plan_db_types(files: pathlib.Path, db_type: str):
    if db_type == "lmdb":
        pytest.importorskip("lmdb")
    save_db(files / f"in.{db_type}", db_type)
    res = run_cli(
        "run-plan", files / "plan.pbtxt", "--load-db", files / f"in.{db_type}",
        "--db-type", db_type, "--save-db", files / "out.minidb", "--save-db-type", "minidb",
        "--save-blob", "z",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(load_db(files / "out.minidb")["z"], 0.5 * W)


def test_failing_op_exits_1_naming_net_op_and_blob(tmp_path: pathlib.Path):
    init = net_def("init", op("ConstantFill", [], ["x"], shape=[2], value=1.0))
    bad = net_def("bad", op("Relu", ["x"], ["r"]), op("Add", ["r", "missing"], ["q"]))
    write(tmp_path / "bad.pbtxt", plan_def("badplan", ("s", [init, bad])), text=True)
    res = run_cli("run-plan", tmp_path / "bad.pbtxt", "--print-blob", "x")
    assert res.returncode == 1
    assert res.stdout == ""  # nothing is printed after a failed run
    assert res.stderr.startswith("caffe2py run-plan: error: plan 'badplan' failed: ")
    assert "net 'bad', op #1 (Add)" in res.stderr
    assert "missing" in res.stderr
    assert "Traceback" not in res.stderr


def test_failing_load_exits_1(files: pathlib.Path):
    res = run_cli(
        "run-plan", files / "plan.pb", "--load-db", files / "in.minidb", "--load-blob", "nope"
    )
    assert res.returncode == 1
    assert "loading blobs from minidb DB" in res.stderr and "nope" in res.stderr
    assert "Traceback" not in res.stderr


def test_failing_save_exits_1(files: pathlib.Path):
    res = run_cli(
        "run-plan", files / "plan.pb", "--load-db", files / "in.minidb",
        "--save-db", files / "out.minidb", "--save-blob", "nope",
    )  # fmt: skip
    assert res.returncode == 1
    assert "saving blobs to minidb DB" in res.stderr and "nope" in res.stderr
    assert not (files / "out.minidb").exists()


def _error_line(res: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of an exit-2 failure (nothing on stdout, no traceback)."""
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_missing_plan_file(tmp_path: pathlib.Path):
    line = _error_line(run_cli("run-plan", tmp_path / "nope.pb"))
    assert line == f"caffe2py run-plan: error: {tmp_path / 'nope.pb'}: no such file"


def test_directory_as_plan(tmp_path: pathlib.Path):
    assert "is a directory" in _error_line(run_cli("run-plan", tmp_path))


@pytest.mark.parametrize(("net_file", "encoding"), [("net.pb", "binary"), ("net.pbtxt", "text")])
def test_netdef_given_to_run_plan(files: pathlib.Path, net_file: str, encoding: str):
    line = _error_line(run_cli("run-plan", files / net_file))
    assert line.endswith(f"is a NetDef ({encoding} protobuf), but run-plan expects a PlanDef")


def test_garbage_bytes(tmp_path: pathlib.Path):
    (tmp_path / "garbage").write_bytes(bytes(range(256)) * 3)
    line = _error_line(run_cli("run-plan", tmp_path / "garbage"))
    assert "not a PlanDef or NetDef" in line


def test_empty_file(tmp_path: pathlib.Path):
    (tmp_path / "empty").write_bytes(b"")
    assert "is empty" in _error_line(run_cli("run-plan", tmp_path / "empty"))


def test_text_file_with_a_typo_names_the_field(tmp_path: pathlib.Path):
    (tmp_path / "typo.pbtxt").write_text('name: "p"\nexecution_stepp { name: "s" }\n')
    line = _error_line(run_cli("run-plan", tmp_path / "typo.pbtxt"))
    assert "not a PlanDef or NetDef" in line and "execution_stepp" in line


def test_usage_errors(files: pathlib.Path):
    plan = files / "plan.pb"
    assert "--save-blob" in _error_line(run_cli("run-plan", plan, "--save-db", files / "o"))
    assert "--load-db" in _error_line(run_cli("run-plan", plan, "--load-blob", "w"))
    assert "no such minidb DB" in _error_line(run_cli("run-plan", plan, "--load-db", files / "x"))
    line = _error_line(
        run_cli("run-plan", plan, "--load-db", files / "in.minidb", "--db-type", "minidbb")
    )
    assert "Unknown db type 'minidbb'" in line and "minidb" in line
    assert "unknown flag --bogus" in _error_line(
        run_cli("run-plan", plan, "--caffe2-flag", "bogus=1")
    )
    res = run_cli()
    assert res.returncode == 2 and "usage:" in res.stderr


# ---- show ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("plan_file", "encoding"), [("plan.pb", "binary"), ("plan.pbtxt", "text")])
def test_show_plan(files: pathlib.Path, plan_file: str, encoding: str):
    res = run_cli("show", files / plan_file)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith(f"{files / plan_file}: PlanDef ({encoding} protobuf)\n")
    assert "plan 'p': 1 net, 1 top-level execution step\n" in out
    assert "with Plan('p'):\n    with step('s'):\n" in out
    assert "y = Add(w, w)" in out and "z = Scale(y, scale=0.25)" in out
    assert "net 'train' (type simple, 2 ops)" in out
    assert "  #0 Add\n      inputs:  w, w\n      outputs: y\n" in out
    assert "  #1 Scale\n      inputs:  y\n      outputs: z\n      args:    scale=0.25\n" in out


@pytest.mark.parametrize("net_file", ["net.pb", "net.pbtxt"])
def test_show_net(files: pathlib.Path, net_file: str):
    res = run_cli("show", files / net_file)
    assert res.returncode == 0, res.stderr
    assert ": NetDef (" in res.stdout.splitlines()[0]
    assert "# net: train\ny = Add(w, w)\nz = Scale(y, scale=0.25)\n" in res.stdout
    assert (
        "  #1 Scale\n      inputs:  y\n      outputs: z\n      args:    scale=0.25\n" in res.stdout
    )


def test_show_plan_with_a_broken_step_tree_falls_back_to_an_outline(tmp_path: pathlib.Path):
    plan = caffe2_pb2.PlanDef(name="p")
    plan.execution_step.add(name="outer").substep.add(name="inner", network=["gone"], num_iter=2)
    write(tmp_path / "p.pbtxt", plan, text=True)
    res = run_cli("show", tmp_path / "p.pbtxt")
    assert res.returncode == 0, res.stderr
    assert "(cannot render as code" in res.stdout
    assert "step 'outer'\n  step 'inner' (num_iter=2)\n    run net 'gone'\n" in res.stdout


def test_show_errors(tmp_path: pathlib.Path):
    line = _error_line(run_cli("show", tmp_path / "nope"))
    assert line.startswith("caffe2py show: error: ") and line.endswith("no such file")
    (tmp_path / "garbage").write_bytes(b"\xff\x00\x13" * 50)
    assert "not a PlanDef or NetDef" in _error_line(run_cli("show", tmp_path / "garbage"))


def test_console_script(files: pathlib.Path):
    script = pathlib.Path(sys.executable).parent / "caffe2py"
    if not script.exists():
        pytest.skip("caffe2py console script not installed next to the interpreter")
    res = subprocess.run(
        [str(script), "show", str(files / "net.pb")], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and "NetDef (binary protobuf)" in res.stdout


# ---- format detection (in process) -----------------------------------------------------------
def test_binary_plan_is_not_mistaken_for_a_netdef(tmp_path: pathlib.Path):
    # A binary PlanDef also parses as a NetDef without error (its nets read as ops); the
    # detection must still call it a PlanDef, for unnamed nets and step-only plans too.
    unnamed = net_def("", op("Add", ["a", "a"], ["b"]))
    steps_only = caffe2_pb2.PlanDef(name="p")
    steps_only.execution_step.add(name="s", network=["elsewhere"])
    for i, plan in enumerate([plan_def("p", ("s", [train_net()])), steps_only]):
        path = tmp_path / f"p{i}.pb"
        write(path, plan, text=False)
        assert caffe2_pb2.NetDef.FromString(path.read_bytes()) is not None
        pf = cli.read_proto(str(path))
        assert (pf.kind, pf.encoding) == ("PlanDef", "binary")
        assert pf.proto == plan
    plan = caffe2_pb2.PlanDef(name="p", network=[unnamed])
    write(tmp_path / "u.pb", plan, text=False)
    assert cli.read_proto(str(tmp_path / "u.pb")).kind == "PlanDef"
    write(tmp_path / "n.pb", train_net(), text=False)
    pf = cli.read_proto(str(tmp_path / "n.pb"))
    assert (pf.kind, pf.proto) == ("NetDef", train_net())
