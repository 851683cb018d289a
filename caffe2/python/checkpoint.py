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
"""

from __future__ import annotations

import logging
import operator
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from caffe2.python import context, core
from caffe2.python.net_builder import ops
from caffe2.python.task import Node, Task, TaskGroup, TaskOutput, WorkspaceType
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


# ---- errors ---------------------------------------------------------------------------------


class CheckpointError(RuntimeError):
    """A checkpoint could not be used. ``epoch`` and ``dbs`` ([(node, path)]) say which."""

    def __init__(self, message: str, epoch: int | None = None, dbs: Sequence = ()) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.dbs = list(dbs)


class CheckpointNotFoundError(CheckpointError):
    """There is no checkpoint DB for that epoch (on at least one node)."""


class CheckpointLoadError(CheckpointError):
    """The checkpoint DB exists but could not be loaded (corrupt, or not a checkpoint)."""


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


# ---- names ----------------------------------------------------------------------------------


def get_ckpt_filename(node_name: Any, epoch: Any) -> str:
    """The checkpoint file name of a node and epoch: ``<node>.<epoch>``."""
    return str(node_name) + "." + str(epoch)


def db_name(epoch: Any, node_name: Any, db_prefix: str, path_prefix: str | None = None) -> str:
    """The checkpoint DB path: ``path_prefix + <node>.<epoch>`` when a path prefix is given
    (plain concatenation), else ``os.path.join(db_prefix, <node>.<epoch>)``."""
    if path_prefix:
        return path_prefix + get_ckpt_filename(node_name, epoch)
    return os.path.join(db_prefix, get_ckpt_filename(node_name, epoch))


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


# ---- single-node manager --------------------------------------------------------------------


class CheckpointManager:
    """Saves and loads the checkpoints of one node: DBs ``<db_prefix>/<node_name>.<epoch>``.

    Every method returns a Task to run in a session (in the current TaskGroup, if any):
    :meth:`init` records the names of the blobs to checkpoint (or loads them from an earlier
    checkpoint), :meth:`save` and :meth:`load` write and read all of them.

    ``metadata_handler`` (optional, duck-typed) is told about each saved epoch
    (``write(epoch=)``), may choose the epoch to resume from (``last_epoch(user_epoch=)``),
    receives the parameters (``set_params(...)``), decides whether checkpoints are
    accessible (``cp_accessible(epoch)``) and, if it has ``report(action, stats)``, gets
    ``{db path: seconds}`` after each save or load the JobRunner times.
    """

    BLOB_NAMES = "blob_names"

    def __init__(
        self, db_prefix: str, node_name: Any, db_type: str, metadata_handler: Any = None
    ) -> None:
        self._db_prefix = db_prefix
        self._node_name = node_name
        self._db_type = db_type
        self._metadata_handler = metadata_handler
        # The unscoped blob 'blob_names' (the same for every manager) holds the list.
        self._net = core.Net("!!checkpoint_mngr")
        self._blob_names = self._net.AddExternalInput(self.BLOB_NAMES)
        self._names_output = None
        self._path_prefix = None
        self._path_type = None
        self._current_db_name = None
        self._current_checkpoint_duration = None

    def __repr__(self) -> str:
        return (
            f"CheckpointManager(db_prefix={self._db_prefix!r}, node_name="
            f"{str(self._node_name)!r}, db_type={self._db_type!r})"
        )

    def _db(self, epoch: Any, path_prefix: str | None = None) -> str:
        return db_name(epoch, self._node_name, self._db_prefix, path_prefix)

    def _dbs(self, epoch: Any) -> list[tuple[str, str, str]]:
        """(node, path, db_type) of this manager's checkpoint of ``epoch``."""
        return [(str(self._node_name), self._db(epoch), self._db_type)]

    def init(
        self,
        nodes: Sequence[Any] | None = None,
        retrieve_from_epoch: int | None = None,
        path_prefix: str | None = None,
        path_type: str | None = None,
    ) -> Task:
        """A Task outputting ``blob_names``: the names of the blobs to checkpoint.

        Without an epoch, the names of the session workspace's own blobs when the task runs
        (``GetAllBlobNames``, not including the parent's). With ``retrieve_from_epoch``, the
        list saved in that epoch's checkpoint (``path_prefix``/``path_type`` override the
        location and DB type).
        """
        if nodes is not None and len(nodes) > 1:
            raise ValueError(
                f"CheckpointManager only supports single node (node '{self._node_name}'), "
                f"got nodes {[str(n) for n in nodes]}; use MultiNodeCheckpointManager."
            )
        with Task(outputs=[self._blob_names]) as task:
            if retrieve_from_epoch is None:
                ops.GetAllBlobNames([], self._blob_names, include_shared=False)
            else:
                full_db_name = self._db(retrieve_from_epoch, path_prefix)
                logger.info("Initializing checkpoints from = %s", full_db_name)
                ops.Load(
                    [],
                    self._blob_names,
                    db=full_db_name,
                    db_type=path_type or self._db_type,
                    absolute_path=True,
                )
        self._names_output = task.outputs()[0]
        return task

    def blob_list(self) -> list[str]:
        """The names of the checkpointed blobs (the init task must have run)."""
        output = self._names_output
        if output is None or output._fetch_func is None:
            raise CheckpointError(
                f"The checkpoint blob list of node '{self._node_name}' is not known yet: "
                "run the task returned by init() in a session first."
            )
        names = output.fetch()
        return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names.tolist()]

    def load(
        self, epoch: int, path_prefix: str | None = None, path_type: str | None = None
    ) -> Task:
        """A Task loading every checkpointed blob from the checkpoint of ``epoch``."""
        full_db_name = self._db(epoch, path_prefix)
        logger.info("Loading checkpoints from = %s", full_db_name)
        self._current_db_name = full_db_name
        with Task() as task:
            ops.Load(
                [],
                self.blob_list(),
                db=full_db_name,
                db_type=path_type or self._db_type,
                absolute_path=True,
            )
        return task

    def load_blobs_from_checkpoint(self, blob_names: Sequence[Any], epoch: int) -> Task:
        """A Task loading only ``blob_names`` (those present) from the checkpoint of ``epoch``."""
        full_db_name = self._db(epoch)
        logger.info("Load from %s", full_db_name)
        self._current_db_name = full_db_name
        with Task() as task:
            ops.Load(
                [],
                list(blob_names),
                db=full_db_name,
                db_type=self._db_type,
                absolute_path=True,
                allow_incomplete=True,
            )
        return task

    def check_db_exists(self, epoch: int) -> Task:
        """A Task whose output is True when the checkpoint DB of ``epoch`` exists."""
        full_db_name = self._db(epoch)
        logger.info("Check existence of %s", full_db_name)
        with Task() as task:
            existence = ops.Const(False)
            ops.DBExists(
                [],
                [existence],
                db_name=full_db_name,
                db_type=self._db_type,
                absolute_path=True,
            )
            task.add_output(existence)
        return task

    def save(self, epoch: int) -> Task:
        """A Task saving every checkpointed blob into ``<db_prefix>/<node>.<epoch>``."""
        full_db_name = self._db(epoch)
        logger.info("Saving to %s", full_db_name)
        self._current_db_name = full_db_name
        with Task() as task:
            ops.Save(
                self.blob_list(),
                [],
                db=full_db_name,
                db_type=self._db_type,
                absolute_path=True,
            )
        return task

    # ---- metadata handler and stats ------------------------------------------------------

    def write_checkpoint_metadata(self, epoch: int) -> None:
        """Tell the metadata handler (if any) that ``epoch`` was saved."""
        if self._metadata_handler is not None:
            self._metadata_handler.write(epoch=epoch)

    def get_resume_from_epoch_id(self, user_epoch: int | None = None) -> int | None:
        """The epoch to resume from: the handler's choice, else ``user_epoch``."""
        last_epoch = user_epoch
        if self._metadata_handler is not None:
            last_epoch = self._metadata_handler.last_epoch(user_epoch=user_epoch)
        return last_epoch

    def set_params(
        self, nodes: Any, path_prefix: str | None = None, path_type: str | None = None
    ) -> None:
        """Store the path overrides and pass the parameters on to the handler.

        ``nodes`` is not used: a single-node manager reports its own node.
        """
        if path_prefix:
            self._path_prefix = path_prefix
        if path_type:
            self._path_type = path_type
        if self._metadata_handler:
            self._metadata_handler.set_params(
                db_prefix=self._db_prefix,
                db_type=self._db_type,
                node_names=[str(self._node_name)],
                path_prefix=self._path_prefix,
                path_type=self._path_type,
            )

    def cp_accessible(self, epoch: int | None = None) -> bool:
        """Whether checkpoints can be accessed (the handler decides; True without one)."""
        if self._metadata_handler is not None:
            return self._metadata_handler.cp_accessible(epoch)
        return True

    def _record_duration(self, seconds: float) -> None:
        self._current_checkpoint_duration = seconds

    def collect_checkpoint_stats(self, stats: dict[str, float]) -> None:
        """Add ``{db path: seconds}`` of the last timed save or load to ``stats``."""
        if self._current_db_name and self._current_checkpoint_duration is not None:
            stats[self._current_db_name] = self._current_checkpoint_duration
        else:
            logger.info("Failed to collect checkpoint stats: %s", self._current_db_name)

    def report_checkpoint_stats(self, action_name: str) -> None:
        """Give the stats of the last timed checkpoint action to the handler's ``report``."""
        stats: dict[str, float] = {}
        self.collect_checkpoint_stats(stats)
        report = getattr(self._metadata_handler, "report", None)
        if report is not None:
            report(action_name, stats)


# ---- multi-node manager ---------------------------------------------------------------------


class MultiNodeCheckpointManager:
    """One :class:`CheckpointManager` per node (created by :meth:`init`), each saving and
    loading ``<db_prefix>/<node>.<epoch>``; methods return TaskGroups with one task per node.

    Only this manager talks to ``metadata_handler`` (see :class:`CheckpointManager`).
    """

    def __init__(self, db_prefix: str, db_type: str, metadata_handler: Any = None) -> None:
        self._node_managers = None
        self._db_prefix = db_prefix
        self._db_type = db_type
        self._metadata_handler = metadata_handler
        self._path_prefix = None
        self._path_type = None
        self._node_names = None

    def __repr__(self) -> str:
        nodes = None if self._node_managers is None else [str(n) for n, _ in self._node_managers]
        return (
            f"MultiNodeCheckpointManager(db_prefix={self._db_prefix!r}, "
            f"db_type={self._db_type!r}, nodes={nodes})"
        )

    def _dbs(self, epoch: Any) -> list[tuple[str, str, str]]:
        """(node, path, db_type) of every node's checkpoint of ``epoch``."""
        return [t for _, m in self._node_managers or [] for t in m._dbs(epoch)]

    def _task_group(self, func: Callable[..., Any], *args: Any, **kw: Any) -> TaskGroup:
        if self._node_managers is None:
            raise CheckpointError(
                f"{self!r}: init() must be called first (it creates the per-node managers)."
            )
        with TaskGroup(WorkspaceType.GLOBAL) as task_group:
            for node, manager in self._node_managers:
                with Node(node):
                    func(manager, *args, **kw)
            return task_group

    def _create_managers(self, nodes: Sequence[Any]) -> None:
        self._node_managers = []
        for node in nodes:
            with Node(node):
                manager = CheckpointManager(
                    db_prefix=self._db_prefix, node_name=str(node), db_type=self._db_type
                )
                self._node_managers.append((node, manager))

    def _check_same_nodes(self, nodes: Sequence[Any], what: str) -> None:
        known = [str(node) for node, _ in self._node_managers]
        if known != [str(n) for n in nodes]:
            raise ValueError(
                f"MultiNodeCheckpointManager.{what}: this manager was initialized for nodes "
                f"{known}, not {[str(n) for n in nodes]}."
            )

    def init(
        self,
        nodes: Sequence[Any],
        retrieve_from_epoch: int | None = None,
        path_prefix: str | None = None,
        path_type: str | None = None,
    ) -> TaskGroup:
        """A TaskGroup(GLOBAL) running :meth:`CheckpointManager.init` on every node.

        The first call creates the per-node managers; a later call (with the same nodes)
        returns an empty TaskGroup, so the blob lists found first are kept.
        """
        if self._node_managers is not None:
            self._check_same_nodes(nodes, "init")
            return TaskGroup(WorkspaceType.GLOBAL)
        self._create_managers(nodes)
        return self._task_group(
            lambda manager: manager.init(
                nodes=[manager._node_name],
                retrieve_from_epoch=retrieve_from_epoch,
                path_prefix=path_prefix,
                path_type=path_type,
            )
        )

    def load(
        self, epoch: int, path_prefix: str | None = None, path_type: str | None = None
    ) -> TaskGroup:
        """A TaskGroup loading every node's checkpoint of ``epoch``."""
        return self._task_group(
            CheckpointManager.load, epoch, path_prefix=path_prefix, path_type=path_type
        )

    def load_blobs_locally(
        self, nodes: Sequence[Any], blob_names: Sequence[Any], epoch: int, session: Any
    ) -> bool:
        """Load ``blob_names`` from every node's checkpoint of ``epoch`` into ``session``.

        Returns False (loading nothing more) at the first node whose checkpoint DB does not
        exist, True once all nodes were loaded. A DB that exists but cannot be read raises
        :class:`CheckpointLoadError`.
        """
        if self._node_managers is not None:
            self._check_same_nodes(nodes, "load_blobs_locally")
        else:
            self._create_managers(nodes)
        for _, manager in self._node_managers:
            existence_task = manager.check_db_exists(epoch)
            session.run(existence_task)
            existence = existence_task.outputs()[0].fetch()
            if not existence:
                logger.info("DB %s does not exist!", manager._db(epoch))
                return False
            load_task = manager.load_blobs_from_checkpoint(blob_names, epoch)
            start = time.monotonic()
            try:
                session.run(load_task)
            except Exception as e:
                raise CheckpointLoadError(
                    f"Loading blobs {[str(b) for b in blob_names]} from the checkpoint of epoch "
                    f"{epoch} of node '{manager._node_name}' ({manager._db(epoch)}, "
                    f"{manager._db_type}) failed: the DB exists but cannot be read "
                    f"(corrupt or not a checkpoint?).\n{e}",
                    epoch,
                    [(str(manager._node_name), manager._db(epoch))],
                ) from e
            manager._record_duration(time.monotonic() - start)
        logger.info("Successfully loaded from checkpoints.")
        return True

    def get_ckpt_db_name(self, node_name: str, epoch: int) -> str | None:
        """The checkpoint DB path of node ``node_name`` for ``epoch`` (None: unknown node)."""
        if self._node_managers is None:
            raise CheckpointError(f"{self!r}: init() must be called first.")
        for node, manager in self._node_managers:
            if str(node) == node_name:
                return db_name(epoch, manager._node_name, manager._db_prefix)
        return None

    def save(self, epoch: int) -> TaskGroup:
        """A TaskGroup saving every node's checkpoint of ``epoch``."""
        return self._task_group(CheckpointManager.save, epoch)

    # ---- metadata handler and stats ------------------------------------------------------

    def write_checkpoint_metadata(self, epoch: int) -> None:
        """Tell the metadata handler (if any) that ``epoch`` was saved."""
        if self._metadata_handler is not None:
            self._metadata_handler.write(epoch=epoch)

    def get_resume_from_epoch_id(self, user_epoch: int | None = None) -> int | None:
        """The epoch to resume from: the handler's choice, else ``user_epoch``."""
        last_epoch = user_epoch
        if self._metadata_handler is not None:
            last_epoch = self._metadata_handler.last_epoch(user_epoch=user_epoch)
        return last_epoch

    def set_params(
        self, nodes: Sequence[Any], path_prefix: str | None = None, path_type: str | None = None
    ) -> None:
        """Record the node names and path overrides and pass them on to the handler."""
        self._node_names = [str(node) for node in nodes]
        if path_prefix:
            self._path_prefix = path_prefix
        if path_type:
            self._path_type = path_type
        if self._metadata_handler:
            self._metadata_handler.set_params(
                db_prefix=self._db_prefix,
                db_type=self._db_type,
                node_names=self._node_names,
                path_prefix=self._path_prefix,
                path_type=self._path_type,
            )

    def cp_accessible(self, epoch: int | None = None) -> bool:
        """Whether checkpoints can be accessed (the handler decides; True without one)."""
        if self._metadata_handler is not None:
            return self._metadata_handler.cp_accessible(epoch)
        return True

    def _record_duration(self, seconds: float) -> None:
        for _, manager in self._node_managers or []:
            manager._record_duration(seconds)

    def collect_checkpoint_stats(self, stats: dict[str, float]) -> None:
        """Add every node's ``{db path: seconds}`` of the last timed save or load."""
        for _, manager in self._node_managers or []:
            manager.collect_checkpoint_stats(stats)

    def report_checkpoint_stats(self, action_name: str) -> None:
        """Give the stats of the last timed checkpoint action to the handler's ``report``."""
        stats: dict[str, float] = {}
        self.collect_checkpoint_stats(stats)
        report = getattr(self._metadata_handler, "report", None)
        if report is not None:
            report(action_name, stats)


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
