"""A checkpointed Job on two Caffe2 nodes (two Ray actors) that loses a node mid-epoch and
resumes from the last epoch checkpointed on every node, with nothing lost or counted twice."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="DistributedSession needs the extra caffe2py[ray]")

from caffe2.distributed import DistributedSession, NodeLostError  # noqa: E402
from caffe2.distributed.testing import start_local_ray, stop_local_ray  # noqa: E402
from caffe2.python import core  # noqa: E402
from caffe2.python.checkpoint import Job, JobRunner, MultiNodeCheckpointManager  # noqa: E402
from caffe2.python.dataio import ReaderWithLimit  # noqa: E402
from caffe2.python.dataset import Dataset  # noqa: E402
from caffe2.python.net_builder import ops  # noqa: E402
from caffe2.python.pipeline import pipe  # noqa: E402
from caffe2.python.schema import ConstRecord, Struct  # noqa: E402
from caffe2.python.task import Node, Task  # noqa: E402

NODES = ["ckpt_a", "ckpt_b"]
ROWS = 40  # per node
BATCH = 3
BATCHES_PER_EPOCH = 2  # 6 rows per epoch; epoch 8 finds the rows ended and stops
KILL_AFTER_EPOCH = 2  # ckpt_a dies one batch into epoch 3


def node_rows(k: int) -> np.ndarray:
    return np.arange(ROWS, dtype=np.int64) * (k + 1) + 1000 * k


def kill_once(marker: str, threshold: int):
    """A Python op function: SIGKILL this process the first time ``count`` passes
    ``threshold`` (the marker file makes it happen once, whatever the process)."""

    def kill(inputs, outputs):
        if int(inputs[0].fetch()) > threshold and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), 9)

    return kill


def build_job(marker: str | None) -> Job:
    """Each node sums (count, total) of its rows, BATCHES_PER_EPOCH batches per epoch;
    with ``marker``, node ckpt_a dies one batch into epoch KILL_AFTER_EPOCH + 1."""
    with Job() as job:
        for k, node in enumerate(NODES):
            with Node(node):
                with job.init_group, Task(), core.NameScope(node):
                    record = ConstRecord(ops, Struct(("x", node_rows(k))))
                    reader = Dataset(record, name=f"{node}/rows").reader(ops, batch_size=BATCH)
                    count = ops.Const(0, blob_out="count")
                    total = ops.Const(0, blob_out="total")

                def accumulate(rec, count=count, total=total, node=node):
                    ops.Add([count, ops.Size([rec.x()], 1)], [count])
                    ops.Add([total, ops.ReduceFrontSum([rec.x()], 1)], [total])
                    if marker is not None and node == NODES[0]:
                        threshold = KILL_AFTER_EPOCH * BATCHES_PER_EPOCH * BATCH
                        ops.Python(kill_once(marker, threshold))([count], [])

                limited = ReaderWithLimit(reader, num_iter=BATCHES_PER_EPOCH)
                pipe(limited, processor=accumulate)
                job.add_stop_signal(limited.data_finished())
    return job


def state(session: DistributedSession) -> dict[str, tuple[int, int]]:
    return {
        node: tuple(int(session.fetch_blob(f"{node}/{b}", node)) for b in ("count", "total"))
        for node in NODES
    }


def complete_epochs(ckpt: Path) -> list[int]:
    """Epochs whose checkpoint exists on every node."""
    per_node = [
        {int(p.name.rsplit(".", 1)[1]) for p in ckpt.iterdir() if p.name.startswith(f"{n}.")}
        for n in NODES
    ]
    return sorted(set.intersection(*per_node))


@pytest.fixture(scope="module")
def local_ray():
    start_local_ray()
    yield
    stop_local_ray()


def run_job(session, ckpt: Path, marker: str | None, resume: int | None = None) -> int:
    ckpt.mkdir(exist_ok=True)
    job = build_job(marker).compile(DistributedSession)
    manager = MultiNodeCheckpointManager(str(ckpt), "minidb")
    return JobRunner(job, manager, resume_from_epoch=resume)(session)


@pytest.mark.parametrize("same_session", [True, False], ids=["same-session", "new-session"])
def test_a_lost_node_resumes_from_the_last_complete_checkpoint(local_ray, tmp_path, same_session):
    expected = {n: (ROWS, int(node_rows(k).sum())) for k, n in enumerate(NODES)}
    reference = DistributedSession(heartbeat_timeout=10.0)
    try:
        epochs = run_job(reference, tmp_path / "reference", None)
        assert state(reference) == expected
    finally:
        reference.close()
    assert epochs > KILL_AFTER_EPOCH + 1

    ckpt = tmp_path / "ckpt"
    marker = str(tmp_path / "killed")
    session = DistributedSession(heartbeat_timeout=10.0)
    try:
        with pytest.raises(NodeLostError) as lost:
            run_job(session, ckpt, marker)
        assert lost.value.node == NODES[0] and f"'{NODES[0]}'" in str(lost.value)
        killed_pid = int(Path(marker).read_text())
        assert NODES[0] not in session.nodes()
        survivor_pid = session.nodes()[NODES[1]]["pid"]
        # Epochs 0..k were saved on both nodes, nothing of epoch k + 1 on either.
        assert complete_epochs(ckpt) == list(range(KILL_AFTER_EPOCH + 1))
        assert sorted(p.name for p in ckpt.iterdir()) == sorted(
            f"{n}.{e}" for n in NODES for e in range(KILL_AFTER_EPOCH + 1)
        )
        # The survivor holds rows summed after its last checkpoint; the lost node comes
        # back empty.
        done = KILL_AFTER_EPOCH * BATCHES_PER_EPOCH * BATCH
        assert int(session.fetch_blob(f"{NODES[1]}/count", NODES[1])) > done
        assert session.blob_names(NODES[0]) == []
        if not same_session:
            session.close()
            session = DistributedSession(heartbeat_timeout=10.0)

        resume = complete_epochs(ckpt)[-1]
        last = run_job(session, ckpt, marker, resume=resume)
        assert last == epochs
        assert state(session) == expected  # nothing lost, nothing counted twice
        assert session.nodes()[NODES[0]]["pid"] != killed_pid
        assert (session.nodes()[NODES[1]]["pid"] == survivor_pid) == same_session
        assert complete_epochs(ckpt) == list(range(epochs + 1))
    finally:
        session.close()
