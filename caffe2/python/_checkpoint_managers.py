"""The checkpoint managers of :mod:`caffe2.python.checkpoint`, with its errors and DB names.

:class:`CheckpointManager` saves and loads one node's checkpoints, and
:class:`MultiNodeCheckpointManager` one such manager per node; both talk to the optional
metadata handler through :class:`_MetadataHandlerMixin`. Import them from
:mod:`caffe2.python.checkpoint`, which re-exports every public name of this module.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from caffe2.python import core
from caffe2.python.net_builder import ops
from caffe2.python.task import Node, Task, TaskGroup, WorkspaceType

# The logger of caffe2.python.checkpoint, as before the managers moved here.
logger = logging.getLogger("caffe2.python.checkpoint")


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


# ---- metadata handler and stats (both managers) ---------------------------------------------


class _MetadataHandlerMixin:
    """The metadata-handler methods of both managers.

    The manager sets ``_metadata_handler``, ``_db_prefix``, ``_db_type``, ``_path_prefix``
    and ``_path_type``, and implements ``_handler_node_names(nodes)`` (the node names
    :meth:`set_params` reports) and ``collect_checkpoint_stats(stats)``.
    """

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

        The node names given to the handler are ``_handler_node_names(nodes)``: the nodes
        for a multi-node manager; a single-node manager ignores ``nodes`` and reports its
        own node.
        """
        node_names = self._handler_node_names(nodes)
        if path_prefix:
            self._path_prefix = path_prefix
        if path_type:
            self._path_type = path_type
        if self._metadata_handler:
            self._metadata_handler.set_params(
                db_prefix=self._db_prefix,
                db_type=self._db_type,
                node_names=node_names,
                path_prefix=self._path_prefix,
                path_type=self._path_type,
            )

    def cp_accessible(self, epoch: int | None = None) -> bool:
        """Whether checkpoints can be accessed (the handler decides; True without one)."""
        if self._metadata_handler is not None:
            return self._metadata_handler.cp_accessible(epoch)
        return True

    def report_checkpoint_stats(self, action_name: str) -> None:
        """Give the stats of the last timed checkpoint action to the handler's ``report``."""
        stats: dict[str, float] = {}
        self.collect_checkpoint_stats(stats)
        report = getattr(self._metadata_handler, "report", None)
        if report is not None:
            report(action_name, stats)


# ---- single-node manager --------------------------------------------------------------------


class CheckpointManager(_MetadataHandlerMixin):
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

    # ---- metadata handler and stats (the rest: _MetadataHandlerMixin) --------------------

    def _handler_node_names(self, nodes: Any) -> list[str]:
        """``nodes`` is not used: a single-node manager reports its own node."""
        return [str(self._node_name)]

    def _record_duration(self, seconds: float) -> None:
        self._current_checkpoint_duration = seconds

    def collect_checkpoint_stats(self, stats: dict[str, float]) -> None:
        """Add ``{db path: seconds}`` of the last timed save or load to ``stats``."""
        if self._current_db_name and self._current_checkpoint_duration is not None:
            stats[self._current_db_name] = self._current_checkpoint_duration
        else:
            logger.info("Failed to collect checkpoint stats: %s", self._current_db_name)


# ---- multi-node manager ---------------------------------------------------------------------


class MultiNodeCheckpointManager(_MetadataHandlerMixin):
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

    # ---- metadata handler and stats (the rest: _MetadataHandlerMixin) --------------------

    def _handler_node_names(self, nodes: Sequence[Any]) -> list[str]:
        """Record the node names given to :meth:`set_params`; they go to the handler."""
        self._node_names = [str(node) for node in nodes]
        return self._node_names

    def _record_duration(self, seconds: float) -> None:
        for _, manager in self._node_managers or []:
            manager._record_duration(seconds)

    def collect_checkpoint_stats(self, stats: dict[str, float]) -> None:
        """Add every node's ``{db path: seconds}`` of the last timed save or load."""
        for _, manager in self._node_managers or []:
            manager.collect_checkpoint_stats(stats)
