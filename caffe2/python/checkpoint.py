"""Checkpointed jobs: Job, JobRunner and the checkpoint managers (spec data.md 9).

A :class:`Job` is four TaskGroups run by a :class:`JobRunner`: the ``init_group`` once, the
``epoch_group`` once per epoch until one of the job's stop signals is true, then the
``download_group`` and the ``exit_group``. With a checkpoint manager the runner saves the
session workspace's state after the init group (epoch 0) and after every epoch, one DB per
node and epoch named ``<db_prefix>/<node>.<epoch>``, and can resume from any saved epoch::

    with Job() as job:                        # code under the job adds tasks to epoch_group
        with job.init_group, Task():
            total = ops.Const([100])          # init state: GLOBAL, checkpointed
        with Task():
            ops.Add([total, ops.Const([1])], [total])
    epoch_limiter(job, 3)
    os.makedirs('/tmp/ckpt', exist_ok=True)   # minidb does not create directories
    cm = CheckpointManager('/tmp/ckpt', 'local', 'minidb')
    JobRunner(job, cm)(LocalSession())        # -> 3; /tmp/ckpt/local.0 ... local.3
    JobRunner(job, cm, resume_from_epoch=2)(LocalSession())   # loads local.2, runs epoch 3

What is checkpointed is the list of the session workspace's own blobs when the manager's
init task runs (right after the init group): the init group's state, the output blobs of
earlier runs, and ``blob_names`` (the list itself). Blobs PRIVATE epoch tasks create live in
child workspaces and are recreated every epoch.

Failures: a failed save is logged (warning) and the job goes on; the Save op is atomic, so
the DB of that epoch keeps its previous content, if any. Resuming from an epoch that has no
checkpoint raises :class:`CheckpointNotFoundError`; a checkpoint that exists but cannot be
loaded (corrupt, not written by a checkpoint manager, missing blobs) raises
:class:`CheckpointLoadError`. Both name the node(s), the epoch and the DB path(s).

The managers, the errors and the DB names live in :mod:`caffe2.python._checkpoint_managers`;
this module re-exports them.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Sequence
from typing import Any

from caffe2.python import context, core
from caffe2.python._checkpoint_managers import (
    CheckpointError,
    CheckpointLoadError,
    CheckpointManager,
    CheckpointNotFoundError,
    MultiNodeCheckpointManager,
    db_name,
    get_ckpt_filename,
)
from caffe2.python.task import Task, TaskGroup, TaskOutput, WorkspaceType
from caffe2.runtime.db import db_exists

__all__ = [
    "Job",
    "JobRunner",
    "CheckpointManager",
    "MultiNodeCheckpointManager",
    "UploadTaskGroupBuilder",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointLoadError",
    "epoch_limiter",
    "get_ckpt_filename",
    "db_name",
]

logger = logging.getLogger(__name__)


# ---- Job ------------------------------------------------------------------------------------


@context.define_context()
class Job:
    """Four TaskGroups run by a :class:`JobRunner`, plus the stop signals ending the epochs.

    - ``init_group`` (default ``TaskGroup(GLOBAL)``): run once, before the first epoch; its
      state is what the checkpoints hold. Not run when resuming from a checkpoint.
    - ``epoch_group`` (default ``TaskGroup()``, PRIVATE once a task is added): run once per
      epoch. ``with Job() as job:`` enters it, so tasks created directly under the job go
      there; ``with job.init_group:`` switches group.
    - ``download_group`` and ``exit_group``: run once after the last epoch.
    - ``stop_signals``: TaskOutputs fetched after every epoch; the job stops after the first
      epoch where any of them is true.
    - ``nodes_to_checkpoint``: the nodes whose state is checkpointed (default: the nodes of
      the init group's tasks).
    """

    def __init__(
        self,
        init_group: Any = None,
        epoch_group: Any = None,
        download_group: Any = None,
        exit_group: Any = None,
        stop_signals: list[TaskOutput] | None = None,
        nodes_to_checkpoint: list[str] | None = None,
    ) -> None:
        self.init_group = init_group or TaskGroup(workspace_type=WorkspaceType.GLOBAL)
        self.epoch_group = epoch_group or TaskGroup()
        self.download_group = download_group or TaskGroup()
        self.exit_group = exit_group or TaskGroup()
        self.stop_signals = stop_signals if stop_signals is not None else []
        self._nodes_to_checkpoint = nodes_to_checkpoint

    def __repr__(self) -> str:
        return (
            f"Job(init_group={self.init_group!r}, epoch_group={self.epoch_group!r}, "
            f"stop_signals={len(self.stop_signals)})"
        )

    def nodes_to_checkpoint(self) -> list[str]:
        """The explicit node list, else the nodes used by the init group's tasks."""
        if self._nodes_to_checkpoint:
            return self._nodes_to_checkpoint
        if hasattr(self.init_group, "used_nodes"):
            return self.init_group.used_nodes()
        return []  # a compiled job whose init group had no tasks

    def compile(self, session_class: Any) -> Job:
        """A new Job whose groups are compiled for ``session_class`` (e.g. LocalSession).

        The stop signals are shared with this job; the node list is frozen.
        """
        return Job(
            init_group=session_class.compile(self.init_group),
            epoch_group=session_class.compile(self.epoch_group),
            download_group=session_class.compile(self.download_group),
            exit_group=session_class.compile(self.exit_group),
            stop_signals=self.stop_signals,
            nodes_to_checkpoint=self.nodes_to_checkpoint(),
        )

    def __enter__(self) -> Job:
        self.epoch_group.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self.epoch_group.__exit__(*args)

    def add_stop_signal(self, output: Any) -> None:
        """Stop the job after an epoch where ``output`` (a blob or a TaskOutput) is true.

        A BlobReference becomes the output of a new step-less task of the epoch group, so it
        is created in (and fetched from) the session workspace.
        """
        if isinstance(output, core.BlobReference):
            t = Task(outputs=[output], group=self.epoch_group)
            output = t.outputs()[0]
        if not isinstance(output, TaskOutput):
            raise TypeError(
                "Job.add_stop_signal expects a BlobReference or a TaskOutput, got "
                f"{type(output).__name__}: {output!r}"
            )
        self.stop_signals.append(output)


def epoch_limiter(job: Job, num_epochs: int) -> None:
    """Make ``job`` stop after ``num_epochs`` epochs (a counter created by the init group)."""
    num_epochs = operator.index(num_epochs)
    if num_epochs < 1:
        raise ValueError(f"epoch_limiter needs at least one epoch, got num_epochs={num_epochs}")
    with job.init_group:
        init_net = core.Net("epoch_counter_init")
        counter = init_net.CreateCounter([], init_count=num_epochs - 1)
        Task(step=init_net)

    with job.epoch_group:
        epoch_net = core.Net("epoch_countdown")
        finished = epoch_net.CountDown(counter)
        output = Task(step=epoch_net, outputs=finished).outputs()[0]
    job.add_stop_signal(output)


# ---- helpers --------------------------------------------------------------------------------


def _check_epoch(epoch: Any, what: str) -> int:
    try:
        epoch = operator.index(epoch)
    except TypeError:
        raise TypeError(f"{what} must be an integer epoch, got {epoch!r}") from None
    if epoch < 0:
        raise ValueError(f"{what} must be a non-negative epoch, got {epoch}")
    return epoch


def _describe_dbs(dbs: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"node '{node}': {path}" for node, path in dbs)


class UploadTaskGroupBuilder:
    """Builds the TaskGroup that uploads the checkpoints after the last epoch."""

    def build(self, epoch: int, checkpoint_manager: Any) -> TaskGroup:
        """A TaskGroup uploading the checkpoints of ``epoch`` (subclasses implement it)."""
        raise NotImplementedError()


# ---- JobRunner ------------------------------------------------------------------------------


def _timed_run(session: Any, runnable: Any) -> float:
    start = time.monotonic()
    session.run(runnable)
    return time.monotonic() - start


class JobRunner:
    """Runs a :class:`Job` in a session, checkpointing it with ``checkpoint_manager``.

    ``runner(session)`` runs the init group (unless resuming), saves checkpoint 0, then
    runs epochs 1, 2, ... (or ``resume_from_epoch + 1``, ... after loading that epoch's
    checkpoint) saving a checkpoint after each, until a stop signal is true; then the upload
    group (``upload_task_group_builder``), the download group and the exit group. Returns
    the number of the last epoch run.
    """

    def __init__(
        self,
        job: Job,
        checkpoint_manager: Any = None,
        resume_from_epoch: int | None = None,
        upload_task_group_builder: UploadTaskGroupBuilder | None = None,
    ) -> None:
        if resume_from_epoch is not None:
            resume_from_epoch = _check_epoch(resume_from_epoch, "resume_from_epoch")
        self.resume_from_epoch = resume_from_epoch
        self.checkpoint_manager = checkpoint_manager
        self.job = job
        self.upload_task_group_builder = upload_task_group_builder

    def __call__(self, session: Any) -> int:
        """Run the job in ``session``; return the last epoch number."""
        cm = self.checkpoint_manager
        if cm:
            cm.set_params(nodes=self.job.nodes_to_checkpoint())
            self.resume_from_epoch = cm.get_resume_from_epoch_id(self.resume_from_epoch)
            if self.resume_from_epoch is not None:
                self.resume_from_epoch = _check_epoch(
                    self.resume_from_epoch, "The epoch to resume from"
                )
                logger.info("Resuming from epoch %d", self.resume_from_epoch)
        elif self.resume_from_epoch is not None:
            logger.warning(
                "resume_from_epoch=%d without a checkpoint manager: the init group is "
                "skipped and nothing is loaded.",
                self.resume_from_epoch,
            )
        if not self.job.stop_signals:
            logger.warning("The job has no stop signal: its epochs run until it is stopped.")

        from_scratch = self.resume_from_epoch is None
        if from_scratch:
            session.run(self.job.init_group)

        if cm:
            logger.info("Preparing checkpoints ...")
            init = cm.init(
                self.job.nodes_to_checkpoint(), retrieve_from_epoch=self.resume_from_epoch
            )
            if from_scratch:
                session.run(init)
                self.save_checkpoints(0, session)
            else:
                self._load_checkpoint(session, init, self.resume_from_epoch)

        logger.info("Finished initializing")
        epoch = 1 if from_scratch else self.resume_from_epoch + 1
        while True:
            logger.info("Starting epoch %d", epoch)
            session.run(self.job.epoch_group)
            logger.info("Finished epoch %d", epoch)
            stop_signals = [o.fetch() for o in self.job.stop_signals]
            if cm:
                self.save_checkpoints(epoch, session)
            if any(stop_signals):
                logger.info("Stopping")
                break
            epoch += 1
        logger.info("Finished training")

        if self.upload_task_group_builder:
            upload_task_group = self.upload_task_group_builder.build(epoch, cm)
            session.run(upload_task_group)
            logger.info("Finished uploading the checkpoints")

        session.run(self.job.download_group)
        logger.info("Finished downloading the parameters")
        session.run(self.job.exit_group)
        logger.info("Finished running the exit group")
        return epoch

    def _load_checkpoint(self, session: Any, init: Any, epoch: int) -> None:
        """Run the manager's init (reading the blob list of ``epoch``) and its load task,
        turning a failure into CheckpointNotFoundError / CheckpointLoadError."""
        cm = self.checkpoint_manager
        try:
            session.run(init)
            logger.info("Loading checkpoints for epoch %d ...", epoch)
            seconds = _timed_run(session, cm.load(epoch))
        except Exception as e:
            raise self._resume_error(e, epoch) from e
        if hasattr(cm, "_record_duration"):
            cm._record_duration(seconds)
        if hasattr(cm, "report_checkpoint_stats"):
            cm.report_checkpoint_stats("checkpoint_load")
        logger.info("Checkpoint loaded")

    def _resume_error(self, e: Exception, epoch: int) -> Exception:
        dbs_of = getattr(self.checkpoint_manager, "_dbs", None)
        dbs = dbs_of(epoch) if dbs_of is not None else []
        if not dbs:
            return CheckpointLoadError(
                f"Resuming from epoch {epoch} failed: the checkpoint could not be loaded.\n{e}",
                epoch,
            )
        missing = [(node, path) for node, path, db_type in dbs if not db_exists(db_type, path)]
        if missing:
            return CheckpointNotFoundError(
                f"Cannot resume from epoch {epoch}: there is no checkpoint for "
                f"{_describe_dbs(missing)} (db type {dbs[0][2]}).",
                epoch,
                missing,
            )
        found = [(node, path) for node, path, _ in dbs]
        return CheckpointLoadError(
            f"Cannot resume from epoch {epoch}: the checkpoint of {_describe_dbs(found)} "
            f"(db type {dbs[0][2]}) exists but could not be loaded (corrupt, or not written "
            f"by a checkpoint manager).\n{e}",
            epoch,
            found,
        )

    def load_blobs_from_checkpoints(
        self, blob_names: Sequence[Any], epoch: int, session: Any
    ) -> bool:
        """Load ``blob_names`` from every node's checkpoint of ``epoch`` into ``session``.

        False when a checkpoint DB of that epoch does not exist.
        """
        if not self.checkpoint_manager:
            raise ValueError("Checkpoint manager is None")
        logger.info("Loading checkpoint for epoch %d ...", epoch)
        result = self.checkpoint_manager.load_blobs_locally(
            self.job.nodes_to_checkpoint(), blob_names, epoch, session
        )
        if result and hasattr(self.checkpoint_manager, "report_checkpoint_stats"):
            self.checkpoint_manager.report_checkpoint_stats("checkpoint_partial_load")
        return result

    def save_checkpoints(self, epoch: int, session: Any) -> None:
        """Save the checkpoints of ``epoch``; a failure is logged, not raised.

        The Save op is atomic: after a failure the DB of that epoch keeps its previous
        content (if any), and the earlier epochs' checkpoints are untouched.
        """
        cm = self.checkpoint_manager
        if not cm:
            raise ValueError("Checkpoint manager is None")
        try:
            if cm.cp_accessible(epoch=None):
                logger.info("Saving checkpoints for epoch %d", epoch)
                seconds = _timed_run(session, cm.save(epoch))
                cm.write_checkpoint_metadata(epoch)
                if hasattr(cm, "_record_duration"):
                    cm._record_duration(seconds)
                if hasattr(cm, "report_checkpoint_stats"):
                    cm.report_checkpoint_stats("checkpoint_save")
                logger.info("Checkpoints saved")
            else:
                logger.warning("Checkpoint files cannot be accessed!")
        except Exception as ex:
            dbs_of = getattr(cm, "_dbs", None)
            where = dbs_of(epoch) if dbs_of is not None else []
            # The first lines say what failed (task, op, path); the rest is at debug level.
            lines = str(ex).splitlines()
            logger.warning(
                "Unable to write checkpoint for epoch %s%s. Error=%s: %s",
                epoch,
                f" ({_describe_dbs([(n, p) for n, p, _ in where])})" if where else "",
                type(ex).__name__,
                "\n".join(lines[:3]) + ("\n..." if len(lines) > 3 else ""),
            )
            logger.debug("The checkpoint of epoch %s failed:", epoch, exc_info=True)
