"""caffe2.python.checkpoint: Job, JobRunner, CheckpointManager, MultiNodeCheckpointManager.

Mirrors Caffe2's checkpoint_test (spec data.md 9, 10; runtime.md 14.3, 14.4). The jobs here
count: the init group creates ``total = 100`` and a position ``pos = 0`` (GLOBAL, so they are
checkpointed); each epoch adds the next three positions to ``total`` (PRIVATE epoch task)
and the job stops once position 10 is reached, so the totals after epochs 1..4 are
103, 115, 136, 145, the EXPECTED_TOTALS of Caffe2's test. The pipeline-based trace of the
spec itself (Dataset + ReaderWithLimit + pipe) is at the end of the file.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from caffe2.python import core, workspace
from caffe2.python.checkpoint import (
    CheckpointError,
    CheckpointLoadError,
    CheckpointManager,
    CheckpointNotFoundError,
    Job,
    JobRunner,
    MultiNodeCheckpointManager,
    UploadTaskGroupBuilder,
    db_name,
    epoch_limiter,
    get_ckpt_filename,
)
from caffe2.python.net_builder import ops
from caffe2.python.session import CompiledRunnable, LocalSession
from caffe2.python.task import Cluster, Node, Task, TaskGroup, TaskOutput, WorkspaceType

EXPECTED_TOTALS = [103, 115, 136, 145]
ROOT = Path(__file__).resolve().parents[2]


def build_counting_job(node_id: int, hook=None):
    """Init: total = 100, pos = 0 (GLOBAL). Each epoch: total += pos, pos += 1, three times
    or until pos reaches 10; then stop. ``hook(epoch_inputs)`` may add a Python op."""
    with Node(f"trainer_{node_id}"):
        with Job.current().init_group, Task():
            total = ops.Const([100])
            pos = ops.Const(0)
        with Task():
            ten = ops.Const(10)
            one = ops.Const(1)
            with ops.loop(3):
                ops.stop_if(ops.GE([pos, ten]))
                if hook is not None:
                    ops.Python(hook)([total], [])
                ops.Add([total, pos], [total], broadcast=1)
                ops.Add([pos, one], [pos])
            finished = ops.GE([pos, ten])
        Job.current().add_stop_signal(finished)
    return total


def fetch(ws, name) -> int:
    return int(ws.blobs[str(name)].fetch()[0])


def new_session():
    ws = workspace.C.Workspace()
    return ws, LocalSession(ws)


def single(tmpdir, node="trainer_0"):
    return CheckpointManager(str(tmpdir), node, "minidb")


def multi(tmpdir):
    return MultiNodeCheckpointManager(str(tmpdir), "minidb")


@pytest.fixture
def counting_job():
    with Cluster():
        with Job() as job:
            total = build_counting_job(0)
        yield job.compile(LocalSession), total


# ---- names ----------------------------------------------------------------------------------


def test_checkpoint_names():
    assert get_ckpt_filename("trainer_0", 5) == "trainer_0.5"
    assert get_ckpt_filename(Node("n"), 0) == "n.0"
    assert db_name(5, "trainer_0", "/tmp/ck") == "/tmp/ck/trainer_0.5"
    assert db_name(5, "trainer_0", "/tmp/ck/") == "/tmp/ck/trainer_0.5"
    # path_prefix is concatenated as is, and wins over db_prefix.
    assert db_name(3, "n", "/tmp/ck", path_prefix="hdfs://x/ck_") == "hdfs://x/ck_n.3"


# ---- Job ------------------------------------------------------------------------------------


def test_job_context_puts_tasks_in_epoch_group_and_init_group():
    with Cluster():
        with Job() as job:
            assert Job.current() is job
            assert TaskGroup.current() is job.epoch_group
            epoch_task = Task(step=core.Net("e"))
            with job.init_group:
                assert TaskGroup.current() is job.init_group
                init_task = Task(step=core.Net("i"))
        assert Job.current(required=False) is None
        assert TaskGroup.current(required=False) is None
    assert epoch_task.group is job.epoch_group
    assert init_task.group is job.init_group
    assert job.init_group.workspace_type() == WorkspaceType.GLOBAL
    assert job.epoch_group.workspace_type() is None  # PRIVATE once its first task is added
    assert job.epoch_group.tasks()[0].workspace_type() == WorkspaceType.PRIVATE
    assert job.nodes_to_checkpoint() == ["local"]


def test_job_context_is_popped_on_exception():
    with pytest.raises(KeyError):
        with Job():
            raise KeyError("boom")
    assert Job.current(required=False) is None
    assert TaskGroup.current(required=False) is None


def test_add_stop_signal():
    with Cluster():
        job = Job()
        blob = core.BlobReference("stop_now")
        job.add_stop_signal(blob)
        (signal,) = job.stop_signals
        assert isinstance(signal, TaskOutput) and signal.names == [blob]
        # A step-less task of the epoch group outputs it.
        (task,) = job.epoch_group.tasks()
        assert task.outputs() == [signal]
        out = TaskOutput(core.BlobReference("other"))
        job.add_stop_signal(out)
        assert job.stop_signals[1] is out
        with pytest.raises(TypeError, match="BlobReference or a TaskOutput"):
            job.add_stop_signal("stop_now")


def test_nodes_to_checkpoint_and_compile():
    with Cluster():
        with Job() as job:
            build_counting_job(0)
            build_counting_job(1)
        assert job.nodes_to_checkpoint() == ["trainer_0", "trainer_1"]
        explicit = Job(nodes_to_checkpoint=["a"])
        assert explicit.nodes_to_checkpoint() == ["a"]
        compiled = job.compile(LocalSession)
    for group in ("init_group", "epoch_group", "download_group", "exit_group"):
        assert isinstance(getattr(compiled, group), CompiledRunnable)
    assert compiled.stop_signals is job.stop_signals
    assert compiled.nodes_to_checkpoint() == ["trainer_0", "trainer_1"]
    # Compiling again gives the same compiled groups (the session cache).
    again = job.compile(LocalSession)
    assert again.epoch_group is compiled.epoch_group
    # A job without init tasks has no node to checkpoint, compiled or not.
    with Cluster():
        empty = Job()
        assert empty.compile(LocalSession).nodes_to_checkpoint() == []


# ---- running, saving, resuming --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_run_save_resume_and_load(tmp_path, counting_job, kind):
    """Caffe2's run_with: run, resume from every epoch, load every epoch."""
    compiled_job, total = counting_job
    builder = (lambda: single(tmp_path)) if kind == "single" else (lambda: multi(tmp_path))

    ws, session = new_session()
    num_epochs = JobRunner(compiled_job, builder())(session)
    assert num_epochs == len(EXPECTED_TOTALS)
    assert fetch(ws, total) == EXPECTED_TOTALS[-1]
    # One minidb per node and epoch, <prefix>/<node>.<epoch>, epoch 0 before the first one.
    assert sorted(os.listdir(tmp_path)) == [f"trainer_0.{e}" for e in range(5)]

    for initial_epoch in range(1, num_epochs + 1):
        ws, session = new_session()
        checkpoint = builder()
        last = JobRunner(compiled_job, checkpoint, resume_from_epoch=initial_epoch)(session)
        assert fetch(ws, total) == EXPECTED_TOTALS[-1]
        # Resuming after the last epoch runs one more (empty) epoch, as in Caffe2.
        assert last == max(num_epochs, initial_epoch + 1)

    for epoch in range(1, num_epochs + 1):
        session.run(checkpoint.load(epoch))
        assert fetch(ws, total) == EXPECTED_TOTALS[epoch - 1]
    session.run(checkpoint.load(0))
    assert fetch(ws, total) == 100


def test_resume_from_epoch_zero_reruns_everything(tmp_path, counting_job):
    compiled_job, total = counting_job
    JobRunner(compiled_job, single(tmp_path))(new_session()[1])
    ws, session = new_session()
    assert JobRunner(compiled_job, single(tmp_path), resume_from_epoch=0)(session) == 4
    assert fetch(ws, total) == 145


def test_checkpointed_blobs_are_the_session_workspace_blobs_after_init(tmp_path, counting_job):
    compiled_job, total = counting_job
    ws, session = new_session()
    cm = single(tmp_path)
    JobRunner(compiled_job, cm)(session)
    names = cm.blob_list()
    assert all(isinstance(n, str) for n in names) and names == sorted(names)
    # The session workspace's own blobs when the manager's init ran: the init group's
    # total and pos, the init task's auto output, and 'blob_names' itself.
    assert len(names) == 4 and "blob_names" in names and str(total) in names
    # (The net numbers depend on the nets this process created before.)
    init_net = str(total).split("/GivenTensorInt64Fill")[0]
    assert re.fullmatch(r"trainer_0/task(_\d+)?", init_net)
    assert f"{init_net}/GivenTensorInt64Fill_2:0" in names  # pos
    assert [n for n in names if re.fullmatch(r"trainer_0/task:output(_\d+)?/ConstantFill:0", n)]
    # As in runtime.md 14.3: those 4, plus one auto output per save (epochs 0-4), plus the
    # 2 outputs of the PRIVATE epoch group (its task's auto output and the stop signal).
    # Nothing else the epoch task creates reaches the session workspace.
    assert len(ws.blobs) == 4 + 5 + 2
    saves = [n for n in ws.blobs.keys() if n.startswith("local/task:output")]
    assert len(saves) == 5


def test_killed_run_resumes_with_nothing_lost(tmp_path):
    """An epoch fails half-way (the process 'dies'); resuming from the last saved epoch
    ends with the same state as an uninterrupted run: nothing lost, nothing counted twice."""
    calls = []

    def die_in_epoch_3(inputs, outputs):
        calls.append(1)
        if len(calls) == 8:  # the second add of epoch 3 (3 adds per epoch)
            raise RuntimeError("simulated crash")

    with Cluster():
        with Job() as job:
            total = build_counting_job(0, hook=die_in_epoch_3)
        compiled_job = job.compile(LocalSession)

    ws, session = new_session()
    with pytest.raises(RuntimeError, match="simulated crash"):
        JobRunner(compiled_job, multi(tmp_path))(session)
    assert sorted(os.listdir(tmp_path)) == ["trainer_0.0", "trainer_0.1", "trainer_0.2"]
    # The crashed epoch had already changed the total in the session workspace.
    assert fetch(ws, total) == EXPECTED_TOTALS[1] + 6

    ws, session = new_session()
    assert JobRunner(compiled_job, multi(tmp_path), resume_from_epoch=2)(session) == 4
    assert fetch(ws, total) == EXPECTED_TOTALS[-1]


def test_epoch_limiter_and_download_exit_groups(tmp_path):
    with Cluster():
        with Job() as job:
            with job.init_group, Task():
                epochs_run = ops.Const([0])
            with Task():
                ops.Add([epochs_run, ops.Const([1])], [epochs_run])
            with job.exit_group, Task(workspace_type=WorkspaceType.GLOBAL):
                ops.Copy(epochs_run, "at_exit")
            with job.download_group, Task(workspace_type=WorkspaceType.GLOBAL):
                ops.Copy(epochs_run, "at_download")
        epoch_limiter(job, 3)
        with pytest.raises(ValueError, match="at least one epoch"):
            epoch_limiter(job, 0)
        compiled_job = job.compile(LocalSession)
    ws, session = new_session()
    assert JobRunner(compiled_job, single(tmp_path, "local"))(session) == 3
    assert fetch(ws, epochs_run) == 3
    assert fetch(ws, "at_exit") == 3 and fetch(ws, "at_download") == 3
    # The counter lives in the init group: it is checkpointed, so a resume stops in time.
    ws, session = new_session()
    assert JobRunner(compiled_job, single(tmp_path, "local"), resume_from_epoch=1)(session) == 3
    assert fetch(ws, epochs_run) == 3


def test_job_runner_without_checkpoint_manager(counting_job):
    compiled_job, total = counting_job
    ws, session = new_session()
    runner = JobRunner(compiled_job)
    assert runner(session) == 4
    assert fetch(ws, total) == 145
    with pytest.raises(ValueError, match="Checkpoint manager is None"):
        runner.save_checkpoints(1, session)
    with pytest.raises(ValueError, match="Checkpoint manager is None"):
        runner.load_blobs_from_checkpoints([str(total)], 1, session)


# ---- errors ---------------------------------------------------------------------------------


def test_resume_from_missing_epoch_names_node_epoch_and_path(tmp_path, counting_job):
    compiled_job, total = counting_job
    JobRunner(compiled_job, multi(tmp_path))(new_session()[1])
    ws, session = new_session()
    with pytest.raises(CheckpointNotFoundError) as e:
        JobRunner(compiled_job, multi(tmp_path), resume_from_epoch=9)(session)
    path = str(tmp_path / "trainer_0.9")
    msg = str(e.value)
    assert "epoch 9" in msg and "trainer_0" in msg and path in msg
    assert e.value.epoch == 9 and e.value.dbs == [("trainer_0", path)]
    assert str(total) not in ws.blobs  # the init group did not run

    with pytest.raises(CheckpointNotFoundError, match="no checkpoint"):
        JobRunner(compiled_job, single(tmp_path / "nowhere"), resume_from_epoch=1)(session)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_resume_from_corrupt_checkpoint(tmp_path, counting_job, damage):
    compiled_job, _ = counting_job
    JobRunner(compiled_job, single(tmp_path))(new_session()[1])
    path = tmp_path / "trainer_0.2"
    data = path.read_bytes()
    path.write_bytes(
        {"garbage": b"\x07not a minidb at all" * 3, "truncated": data[: len(data) // 2]}.get(
            damage, b""
        )
    )
    with pytest.raises(CheckpointLoadError) as e:
        JobRunner(compiled_job, single(tmp_path), resume_from_epoch=2)(new_session()[1])
    msg = str(e.value)
    assert "epoch 2" in msg and "trainer_0" in msg and str(path) in msg
    assert "could not be loaded" in msg


def test_resume_from_a_db_that_is_not_a_checkpoint(tmp_path, counting_job):
    compiled_job, _ = counting_job
    ws = workspace.C.Workspace()
    ws.create_blob("x").feed(np.arange(3))
    ws.run(
        core.CreateOperator(
            "Save", ["x"], [], db=str(tmp_path / "trainer_0.1"), db_type="minidb", absolute_path=1
        )
    )
    with pytest.raises(CheckpointLoadError, match="blob_names|Expected to load"):
        JobRunner(compiled_job, single(tmp_path), resume_from_epoch=1)(new_session()[1])


def test_bad_resume_epoch():
    job = Job()
    with pytest.raises(ValueError, match="non-negative"):
        JobRunner(job, resume_from_epoch=-1)
    with pytest.raises(TypeError, match="integer epoch"):
        JobRunner(job, resume_from_epoch="3")
    assert JobRunner(job, resume_from_epoch=np.int64(2)).resume_from_epoch == 2


def test_failed_save_is_logged_and_the_job_goes_on(tmp_path, counting_job, caplog):
    compiled_job, total = counting_job
    # Epoch 2's DB path is taken by a directory: that save fails, the others succeed.
    (tmp_path / "trainer_0.2").mkdir()
    (tmp_path / "trainer_0.2" / "keep").write_text("untouched")
    ws, session = new_session()
    with caplog.at_level(logging.WARNING, logger="caffe2.python.checkpoint"):
        assert JobRunner(compiled_job, multi(tmp_path))(session) == 4
    assert fetch(ws, total) == 145
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "caffe2.python.checkpoint"
    ]
    assert len(warnings) == 1
    assert "Unable to write checkpoint for epoch 2" in warnings[0]
    assert str(tmp_path / "trainer_0.2") in warnings[0]
    assert (tmp_path / "trainer_0.2" / "keep").read_text() == "untouched"
    for epoch in (0, 1, 3, 4):
        assert (tmp_path / f"trainer_0.{epoch}").is_file()
    # A save into a missing directory fails the same way, for every epoch.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="caffe2.python.checkpoint"):
        assert JobRunner(compiled_job, multi(tmp_path / "missing"))(new_session()[1]) == 4
    assert sum("Unable to write checkpoint" in r.getMessage() for r in caplog.records) == 5


def test_failed_save_keeps_the_previous_checkpoint_whole(tmp_path):
    """A blob without serializer makes Save fail: the DB of that epoch keeps its content."""
    with Cluster():
        with Job() as job:
            with Node("n"):
                with job.init_group, Task():
                    value = ops.Const([7])
                    queue = ops.CreateBlobsQueue([], capacity=1, num_blobs=1)
                with Task():
                    ops.Add([value, ops.Const([1])], [value])
                epoch_limiter(job, 1)
        compiled_job = job.compile(LocalSession)
    old = tmp_path / "n.1"
    ws = workspace.C.Workspace()
    ws.create_blob("old").feed(np.array([42]))
    ws.run(core.CreateOperator("Save", ["old"], [], db=str(old), db_type="minidb", absolute_path=1))
    before = old.read_bytes()
    ws, session = new_session()
    assert JobRunner(compiled_job, single(tmp_path, "n"))(session) == 1
    assert str(queue) in ws.blobs and fetch(ws, value) == 8
    assert old.read_bytes() == before
    assert not (tmp_path / "n.0").exists()


def test_manager_misuse():
    cm = CheckpointManager("/tmp/x", "node_a", "minidb")
    with pytest.raises(CheckpointError, match="node_a.*init"):
        cm.blob_list()
    with pytest.raises(ValueError, match="single node"):
        cm.init(nodes=["a", "b"])
    mcm = MultiNodeCheckpointManager("/tmp/x", "minidb")
    with pytest.raises(CheckpointError, match="init"):
        mcm.save(1)
    with pytest.raises(CheckpointError, match="init"):
        mcm.get_ckpt_db_name("a", 1)
    with Cluster():
        first = mcm.init(["a", "b"])
        assert len(first.tasks()) == 2
        again = mcm.init(["a", "b"])
        assert isinstance(again, TaskGroup) and again.tasks() == []
        with pytest.raises(ValueError, match=r"\['a', 'b'\].*\['a'\]"):
            mcm.init(["a"])
    with pytest.raises(NotImplementedError):
        UploadTaskGroupBuilder().build(1, mcm)


def test_get_ckpt_db_name(tmp_path):
    checkpoint = multi(tmp_path)
    with Cluster():
        checkpoint.init(["trainer_0", "trainer_1", "trainer_2"])
    for node_id in range(3):
        node = f"trainer_{node_id}"
        assert checkpoint.get_ckpt_db_name(node, 5) == f"{tmp_path}/{node}.5"
    assert checkpoint.get_ckpt_db_name("trainer_9", 5) is None


# ---- partial loads --------------------------------------------------------------------------


def test_check_db_exists_and_load_blobs_from_checkpoint(tmp_path, counting_job):
    compiled_job, total = counting_job
    JobRunner(compiled_job, single(tmp_path))(new_session()[1])

    ws, session = new_session()
    cm = single(tmp_path)
    for epoch, expected in ((3, True), (4, True), (5, False)):
        task = cm.check_db_exists(epoch)
        session.run(task)
        assert bool(task.outputs()[0].fetch()) is expected
    # Only the blobs asked for, and missing names are fine (allow_incomplete).
    session.run(cm.load_blobs_from_checkpoint([str(total), "not_saved"], 2))
    assert fetch(ws, total) == EXPECTED_TOTALS[1]
    assert "blob_names" not in ws.blobs and "not_saved" in ws.blobs


def test_load_blobs_from_checkpoints(tmp_path, counting_job):
    compiled_job, total = counting_job
    JobRunner(compiled_job, multi(tmp_path))(new_session()[1])

    ws, session = new_session()
    runner = JobRunner(compiled_job, multi(tmp_path))
    for epoch in range(1, 5):
        assert runner.load_blobs_from_checkpoints([str(total)], epoch, session) is True
        assert fetch(ws, total) == EXPECTED_TOTALS[epoch - 1]
    assert runner.load_blobs_from_checkpoints([str(total)], 5, session) is False
    assert fetch(ws, total) == EXPECTED_TOTALS[-1]

    (tmp_path / "trainer_0.3").write_bytes(b"\x05broken")
    with pytest.raises(CheckpointLoadError) as e:
        runner.load_blobs_from_checkpoints([str(total)], 3, session)
    assert "epoch 3" in str(e.value) and str(tmp_path / "trainer_0.3") in str(e.value)


# ---- metadata handler, stats, upload --------------------------------------------------------


class RecordingHandler:
    def __init__(self, resume=None, accessible=True):
        self.calls = []
        self.resume = resume
        self.accessible = accessible

    def set_params(self, **kw):
        self.calls.append(("set_params", kw))

    def last_epoch(self, user_epoch=None):
        self.calls.append(("last_epoch", user_epoch))
        return self.resume if user_epoch is None else user_epoch

    def write(self, epoch):
        self.calls.append(("write", epoch))

    def cp_accessible(self, epoch=None):
        return self.accessible

    def report(self, action, stats):
        self.calls.append(("report", action, stats))


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_metadata_handler(tmp_path, counting_job, kind):
    compiled_job, total = counting_job
    handler = RecordingHandler()
    make = (
        (lambda h: CheckpointManager(str(tmp_path), "trainer_0", "minidb", h))
        if kind == "single"
        else (lambda h: MultiNodeCheckpointManager(str(tmp_path), "minidb", h))
    )
    JobRunner(compiled_job, make(handler))(new_session()[1])
    assert handler.calls[0] == (
        "set_params",
        dict(
            db_prefix=str(tmp_path),
            db_type="minidb",
            node_names=["trainer_0"],
            path_prefix=None,
            path_type=None,
        ),
    )
    assert handler.calls[1] == ("last_epoch", None)
    assert [c[1] for c in handler.calls if c[0] == "write"] == [0, 1, 2, 3, 4]
    reports = [c for c in handler.calls if c[0] == "report"]
    assert [r[1] for r in reports] == ["checkpoint_save"] * 5
    path = str(tmp_path / "trainer_0.4")
    assert list(reports[-1][2]) == [path] and reports[-1][2][path] >= 0

    # The handler chooses the epoch to resume from.
    handler = RecordingHandler(resume=2)
    ws, session = new_session()
    assert JobRunner(compiled_job, make(handler))(session) == 4
    assert fetch(ws, total) == 145
    assert [c[1] for c in handler.calls if c[0] == "write"] == [3, 4]
    assert [c[1] for c in handler.calls if c[0] == "report"][0] == "checkpoint_load"

    # Inaccessible checkpoints: nothing saved, a warning per epoch.
    shutil.rmtree(tmp_path)
    handler = RecordingHandler(accessible=False)
    assert JobRunner(compiled_job, make(handler))(new_session()[1]) == 4
    assert not tmp_path.exists()
    assert not [c for c in handler.calls if c[0] == "write"]


def test_path_prefix_for_init_and_load(tmp_path, counting_job):
    compiled_job, total = counting_job
    JobRunner(compiled_job, single(tmp_path))(new_session()[1])
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(tmp_path / "trainer_0.2", other / "ck_trainer_0.2")
    ws, session = new_session()
    cm = CheckpointManager("/nonexistent", "trainer_0", "minidb")
    session.run(cm.init(retrieve_from_epoch=2, path_prefix=f"{other}/ck_"))
    session.run(cm.load(2, path_prefix=f"{other}/ck_", path_type="minidb"))
    assert fetch(ws, total) == EXPECTED_TOTALS[1]


def _copy_file(src, dest):
    def copy_op(inputs, outputs):
        shutil.copyfile(src, dest)

    return copy_op


class UploadToLocalFile(UploadTaskGroupBuilder):
    def __init__(self, dest_dir):
        self.dest_dir = dest_dir

    def build(self, epoch, checkpoint_manager):
        with TaskGroup(WorkspaceType.GLOBAL) as upload_task_group:
            for node, manager in checkpoint_manager._node_managers:
                with Node(str(node)), Task():
                    src_path = db_name(epoch, manager._node_name, manager._db_prefix)
                    dest_path = os.path.join(self.dest_dir, str(node))
                    ops.Python((_copy_file, [src_path, dest_path], {}))([], [])
        return upload_task_group


def test_upload_checkpoint(tmp_path, counting_job):
    compiled_job, total = counting_job
    ckpt, upload = tmp_path / "ckpt", tmp_path / "upload"
    ckpt.mkdir()
    upload.mkdir()
    runner = JobRunner(
        compiled_job, multi(ckpt), upload_task_group_builder=UploadToLocalFile(upload)
    )
    assert runner(new_session()[1]) == 4
    assert (upload / "trainer_0").read_bytes() == (ckpt / "trainer_0.4").read_bytes()


# ---- the spec's pipeline trace (data.md 10; runtime.md 14.3, 14.4) --------------------------


def build_pipeline(node_id: int):
    """Caffe2's checkpoint_test build_pipeline: a dataset of 0..9 read 3 records per epoch
    through a pipe whose processor adds them to ``total``."""
    from caffe2.python.dataio import ReaderWithLimit
    from caffe2.python.dataset import Dataset
    from caffe2.python.pipeline import pipe
    from caffe2.python.schema import ConstRecord, Struct

    with Node(f"trainer_{node_id}"):
        with Job.current().init_group, Task():
            data_arr = Struct(("val", np.array(list(range(10)))))
            data = ConstRecord(ops, data_arr)
            ds = Dataset(data, name=f"dataset:{node_id}")
            full_reader = ds.reader(ops)
            total = ops.Const([100])

        def inc_total(rec):
            ops.Add([total, rec.val()], [total])

        epoch_reader = ReaderWithLimit(full_reader, num_iter=3)
        pipe(epoch_reader, processor=inc_total)
        Job.current().add_stop_signal(epoch_reader.data_finished())
    return [total]


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_pipeline_checkpoint_run_resume_load(tmp_path, kind):
    """Caffe2's test_single_checkpoint: run_with over a Dataset + pipe job."""
    with Cluster():
        with Job() as job:
            outputs = build_pipeline(node_id=0)
        output_fetcher = Task(step=core.Net("empty"), outputs=outputs)

        def fetch_total(session):
            session.run(output_fetcher)
            return output_fetcher.outputs()[0].fetch()

        def builder():
            ws = workspace.C.Workspace()
            session = LocalSession(ws)
            if kind == "single":
                return session, CheckpointManager(str(tmp_path), "temp_node", "minidb")
            return session, MultiNodeCheckpointManager(str(tmp_path), "minidb")

        session, checkpoint = builder()
        compiled_job = job.compile(LocalSession)
        num_epochs = JobRunner(compiled_job, checkpoint)(session)
        assert num_epochs == len(EXPECTED_TOTALS)
        assert fetch_total(session) == EXPECTED_TOTALS[-1]
        node = "temp_node" if kind == "single" else "trainer_0"
        assert sorted(os.listdir(tmp_path)) == [f"{node}.{e}" for e in range(5)]

        for initial_epoch in range(1, num_epochs + 1):
            session, checkpoint = builder()
            JobRunner(compiled_job, checkpoint, resume_from_epoch=initial_epoch)(session)
            assert fetch_total(session) == EXPECTED_TOTALS[-1]

        for epoch in range(1, num_epochs + 1):
            session.run(checkpoint.load(epoch))
            assert fetch_total(session) == EXPECTED_TOTALS[epoch - 1]


CKPT_NAME_SCRIPT = textwrap.dedent(
    """
    import os, re, sys, tempfile, shutil
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from test_checkpoint import build_pipeline, EXPECTED_TOTALS
    from caffe2.python import workspace
    from caffe2.python.checkpoint import Job, JobRunner, MultiNodeCheckpointManager
    from caffe2.python.session import LocalSession
    from caffe2.python.task import Cluster

    num_nodes = 3
    tmpdir = tempfile.mkdtemp()
    # First, the checkpoint name generation.
    checkpoint = MultiNodeCheckpointManager(tmpdir, 'minidb')
    with Cluster():
        with Job() as job:
            for node_id in range(num_nodes):
                build_pipeline(node_id)
        compiled_job = job.compile(LocalSession)
        checkpoint.init(compiled_job.nodes_to_checkpoint())
        for node_id in range(num_nodes):
            node_name = 'trainer_%d' % node_id
            assert checkpoint.get_ckpt_db_name(node_name, 5) == tmpdir + '/' + node_name + '.5'
    shutil.rmtree(tmpdir)

    # Next, one job per node, each in its own workspace.
    tmpdir = tempfile.mkdtemp()
    workspace.ResetWorkspace()
    for node_id in range(num_nodes):
        ws = workspace.C.Workspace()
        session = LocalSession(ws)
        checkpoint = MultiNodeCheckpointManager(tmpdir, 'minidb')
        with Cluster():
            with Job() as job:
                build_pipeline(node_id)
            compiled_job = job.compile(LocalSession)
            num_epochs = JobRunner(compiled_job, checkpoint)(session)
        assert num_epochs == len(EXPECTED_TOTALS)
        # There are 12 global blobs after the job runner (runtime.md 14.3).
        names = sorted(ws.blobs.keys())
        assert len(ws.blobs) == 12, names
        k = node_id
        for name in ['val', 'dataset:%d_cursor' % k, 'trainer_%d/task_2/GivenTensorInt64Fill:0' % k,
                     'blob_names']:
            assert name in names, (name, names)
        auto_name = r'trainer_%d/task:output_\\d+/ConstantFill:0' % k
        auto = [n for n in names if re.fullmatch(auto_name, n)]
        assert len(auto) == 6, names  # the init task's output and the 5 saves (epochs 0-4)
        assert len([n for n in names if n.endswith('/data_finished')]) == 1, names
        # 'blob_names' lists what was checkpointed: the 4 init blobs and itself.
        saved = [n.decode() for n in ws.blobs['blob_names'].fetch()]
        assert len(saved) == 5 and 'trainer_%d/task_2/GivenTensorInt64Fill:0' % k in saved, saved
    print('NAMES OK')

    # Then load the model blobs from each epoch's checkpoints (runtime.md 14.4).
    ws = workspace.C.Workspace()
    session = LocalSession(ws)
    assert len(ws.blobs) == 0
    model_blob_names = ['trainer_1/task_2/GivenTensorInt64Fill:0',
                        'trainer_2/task_2/GivenTensorInt64Fill:0']
    checkpoint = MultiNodeCheckpointManager(tmpdir, 'minidb')
    with Cluster():
        with Job() as job:
            for node_id in range(num_nodes):
                build_pipeline(node_id)
        compiled_job = job.compile(LocalSession)
        job_runner = JobRunner(compiled_job, checkpoint)
        job_runner.load_blobs_from_checkpoints(
            blob_names=model_blob_names, epoch=1, session=session)
        for epoch in range(1, 5):
            assert job_runner.load_blobs_from_checkpoints(
                blob_names=model_blob_names, epoch=epoch, session=session)
            for blob_name in model_blob_names:
                assert ws.has_blob(blob_name)
                assert ws.fetch_blob(blob_name) == np.array([EXPECTED_TOTALS[epoch - 1]])
        assert not job_runner.load_blobs_from_checkpoints(
            blob_names=model_blob_names, epoch=5, session=session)
    shutil.rmtree(tmpdir)
    print('LOAD OK')
    """
)


def test_ckpt_name_and_load_model_from_ckpts():
    """Caffe2's test_ckpt_name_and_load_model_from_ckpts, in a fresh interpreter: the names
    it loads ('trainer_1/task_2/...') depend on the process-global net names (runtime.md
    14.4), which other tests of this process would have consumed."""
    done = subprocess.run(
        [sys.executable, "-c", CKPT_NAME_SCRIPT, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "NAMES OK" in done.stdout and "LOAD OK" in done.stdout
