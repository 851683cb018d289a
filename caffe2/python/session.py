"""Sessions: compile TaskGroups (and anything that converts to one) into Plans and run them.

See :class:`Session` for the model and :class:`LocalSession` for the one that runs in this
process (spec 7).
"""

from __future__ import annotations

import re
import threading

from caffe2.python import core, workspace
from caffe2.python.task import Cluster, Task, TaskGroup, WorkspaceType
from caffe2.runtime.errors import exception_chain

__all__ = [
    "CompiledRunnable",
    "Session",
    "LocalSession",
    "SessionError",
    "SessionClosedError",
    "SessionBusyError",
    "UnsupportedRunnableError",
    "TaskGroupConsumedError",
    "TaskError",
]


# ---- errors ---------------------------------------------------------------------------------


class SessionError(RuntimeError):
    """Base class of the errors a session raises about its own use."""


class SessionClosedError(SessionError, AssertionError):
    """``run`` on a closed session (an AssertionError in Caffe2, kept catchable as one)."""


class SessionBusyError(SessionError):
    """``run`` while the same session is running something else (another thread, or a run
    started from inside the running plan)."""


class UnsupportedRunnableError(TypeError, ValueError):
    """A runnable a session cannot run: None, or not a TaskGroup, Task, Plan, ExecutionStep,
    Net or list of Nets. (Caffe2 raised AssertionError for None, ValueError for other types;
    this is a TypeError that is also a ValueError.)"""


class TaskGroupConsumedError(SessionError, AssertionError):
    """A TaskGroup given tasks after a session compiled it: those tasks would never run."""


class TaskError(RuntimeError):
    """A run failed. Names the task, its node and the step (and net) that failed.

    Attributes ``task``, ``node``, ``step`` (the innermost step), ``step_path`` (outermost
    first), ``net`` (None when the failure is not in a net) and ``cause`` (the runtime's
    exception, also ``__cause__``). ``task``/``node`` are None when the failure cannot be
    traced to one task. The message ends with the runtime's own message, so its
    ``[enforce fail ...]`` text is still there.
    """

    def __init__(
        self, message, task=None, node=None, step=None, step_path=(), net=None, cause=None
    ):
        super().__init__(message)
        self.task = task
        self.node = node
        self.step = step
        self.step_path = tuple(step_path)
        self.net = net
        self.cause = cause


def describe_runnable(runnable) -> str:
    """A short human description of what a session was asked to run."""
    if isinstance(runnable, CompiledRunnable):
        return f"a runnable compiled for {runnable.session_class.__name__}"
    if isinstance(runnable, TaskGroup):
        tasks = runnable._tasks + runnable._tasks_to_add
        return "TaskGroup with " + (
            ", ".join(f"task '{t.name}' on node '{t.node}'" for t in tasks[:8])
            + (f" and {len(tasks) - 8} more" if len(tasks) > 8 else "")
            if tasks
            else "no tasks"
        )
    if isinstance(runnable, Task):
        return f"task '{runnable.name}' on node '{runnable.node}'"
    if isinstance(runnable, (core.ExecutionStep, core.Plan, core.Net)):
        return f"{type(runnable).__name__} '{runnable.Proto().name}'"
    if isinstance(runnable, (list, tuple)):
        names = [
            f"'{x.Proto().name}'" if isinstance(x, core.Net) else type(x).__name__ for x in runnable
        ]
        return f"{type(runnable).__name__} [{', '.join(names)}]"
    return f"object of type {type(runnable).__name__}"


# ---- failure attribution --------------------------------------------------------------------

_QUOTED = re.compile(r"'([^'\n]*)'|\"([^\"\n]*)\"")


class _Attribution:
    """Maps the nets and steps of a compiled TaskGroup back to the task and node they belong
    to, so a failed run can say which task, node and step failed.

    The runtime marks its errors with the net (``net_name``) and the '/'-joined path of step
    names from the plan's top step (``caffe2_step``); task steps are found in that path by
    their path relative to the task's own step.
    """

    def __init__(self, task_group, plan_steps=()):
        self.tasks = [(t.name, t.node) for t in task_group.tasks()]
        self.nets = {}  # net name -> [(task, node, step path)]
        self.steps = {}  # step name -> [(task, node, step path)]
        self.task_paths = []  # ('/'-joined path, (task, node, step path))
        self.plan_paths = {}  # '/'-joined path from the plan's top -> (None, node, path)
        for task in task_group.tasks():
            self._walk(task.get_step().Proto(), task.name, task.node, ())
        self.task_paths.sort(key=lambda x: -len(x[0]))
        for step_proto, node in plan_steps:
            self._walk(step_proto, None, node, (), plan=True)

    def _walk(self, proto, task, node, path, plan=False):
        path = path + (proto.name,)
        where = (task, node, path)
        if plan:
            self.plan_paths.setdefault("/".join(path), where)
        else:
            self.task_paths.append(("/".join(path), where))
        if not (plan and proto.name in self.steps):
            self.steps.setdefault(proto.name, []).append(where)
        for net in proto.network:
            if not (plan and net in self.nets):
                self.nets.setdefault(net, []).append(where)
        for sub in proto.substep:
            self._walk(sub, task, node, path, plan)

    def _match_path(self, full):
        for joined, where in self.task_paths:  # longest first
            if full == joined or full.endswith("/" + joined):
                return where
        return self.plan_paths.get(full)

    def _locate(self, exc):
        """(net, (task, node, path)) for the failure; either may be None."""
        chain = list(exception_chain(exc))
        net = None
        for e in chain:  # the runtime's operator errors say which net failed
            n = getattr(e, "net_name", None)
            if isinstance(n, str) and n in self.nets:
                net = n
                break
        quoted = []
        for e in chain:
            quoted += [a or b for a, b in _QUOTED.findall(str(e))]
        if net is None:
            net = next((q for q in quoted if q in self.nets), None)
        for e in chain:  # the plan executor says in which step
            for attr in ("caffe2_step", "step_name"):
                s = getattr(e, attr, None)
                where = self._match_path(s) if isinstance(s, str) else None
                if where is not None:
                    if net is not None and all(w[0] != where[0] for w in self.nets[net]):
                        continue  # the step path points elsewhere than the failing net
                    return net, where
        if net is not None:
            return net, self.nets[net][0]
        for q in quoted:
            if q in self.steps:
                return None, self.steps[q][0]
        return None, None

    def error(self, exc, what):
        net, where = self._locate(exc)
        if where is None and len(self.tasks) == 1:
            task, node = self.tasks[0]
            where = (task, node, ())
        original = str(exc) or type(exc).__name__
        if where is None:
            tasks = ", ".join(f"'{t}' (node '{n}')" for t, n in self.tasks) or "none"
            return TaskError(
                f"Running {what} failed; the failure could not be traced to one task "
                f"(tasks: {tasks}):\n{original}",
                cause=exc,
            )
        task, node, path = where
        step = path[-1] if path else None
        who = f"Task '{task}' on node '{node}'" if task else f"Setup of node '{node}'"
        text = who + " failed"
        if step is not None:
            text += f" in step '{step}'"
        if net is not None:
            text += f", net '{net}'"
        if len(path) > 1:
            text += f" (step path: {' > '.join(path)})"
        return TaskError(
            f"{text}:\n{original}",
            task=task,
            node=node,
            step=step,
            step_path=path,
            net=net,
            cause=exc,
        )


# ---- sessions -------------------------------------------------------------------------------


class CompiledRunnable:
    """What ``Session.compile`` returns: the session kind's compiled form (``obj``) and the
    session class it was compiled for."""

    def __init__(self, obj, session_class):
        self.obj = obj
        self.session_class = session_class
        self._attribution = None


def _same_compiler(a, b) -> bool:
    return a is b or (
        getattr(a._compile_task_group, "__func__", None)
        is getattr(b._compile_task_group, "__func__", None)
        and a._run_compiled is b._run_compiled
    )


class Session:
    """
    Allows to run Nets, ExecutionSteps, Plans, Tasks and TaskGroups.
    A session can potentially run in multiple nodes concurrently.

    Example (shipped, runnable, as ``examples/session_tour.py``)::

        from caffe2.python import core
        from caffe2.python.session import LocalSession
        from caffe2.python.task import Node, Task, TaskGroup, WorkspaceType

        with TaskGroup(WorkspaceType.GLOBAL) as init_tg:
            with Node('node1'):
                n1setup = core.Net('n1setup')
                n1msg = n1setup.Const(np.array(['Hello from node 1.']))
                Task(step=n1setup)

        with TaskGroup() as private_tg:
            with Node('node1'):
                n1 = core.Net('n1')
                n1.Print(n1msg, [])
                Task(step=n1)
            with Node('node2'):
                n2 = core.Net('n2')
                n2.Print(n1msg, [])
                Task(step=n2)

        # Running the tasks in the TaskGroups
        session = LocalSession()
        session.run(init_tg)
        session.run(private_tg)

    Global Workspace:
        At the beginning of the session, a global workspace is created and kept
        alive for the duration of the session (LocalSession: the workspace given to it,
        or the current one).

    Private Workspace:
        Tasks can be run either directly on the global workspace, or they can
        instantiate a private child workspace that is released after each run.

    Blob visibility:
        Tasks running in different nodes in parallel will always run under
        different workspaces, so it must be assumed that they won't be able to
        access each other's blobs. Tasks running on the same node will follow
        Workspace hierarchy rules: tasks running on separate private workspaces
        will only be able to share blobs defined on a common parent Workspace.

    Runnables: a TaskGroup; a Task; an ExecutionStep or a Net (each wrapped in a Task of a
    new GLOBAL TaskGroup); a Plan (one Task for its step, or for its steps run in
    sequence); a list of Nets (project decision, see below); or a CompiledRunnable.

    Compile cache: ``Session._compiled_cache`` is one dict shared by every session and
    session class of the process, keyed by the runnable object (identity). A runnable is
    compiled once; later ``workspace_type`` / ``setup_net_list`` arguments are ignored and
    every run reruns the same plan. A TaskGroup can therefore be compiled by one kind of
    session only.

    Lists of Nets (project decision): Caffe2 could not run a plain list (unhashable cache
    key). Here a list or tuple of Nets is compiled, on every run, to one step running the
    nets in order, wrapped in a new Task of a new GLOBAL TaskGroup. It is never cached,
    so each run consumes new auto names (``local/runnable:output_<k>``) and leaves one more
    auto-output blob in the workspace. Compile the list once
    (``s.compile(core.execution_step('name', nets))``) to run it repeatedly without that.

    Errors (project decisions): running a closed session raises SessionClosedError; None
    or an unsupported type raises UnsupportedRunnableError; a TaskGroup given tasks after it
    was compiled raises TaskGroupConsumedError; a failed run raises TaskError (a
    RuntimeError) naming the task, node, step and net, chained to the runtime's error. A
    failed run removes no blob of the session's workspace and leaves the session open and
    usable.

    Threads (project decision): a session runs one runnable at a time. ``run`` while the
    same session is running (from another thread, or from inside the running plan, e.g. a
    Python op) raises SessionBusyError at once instead of waiting, so it can never deadlock
    on a plan's own worker threads. Use one session per thread to run concurrently;
    ``compile`` and the shared cache are thread-safe.
    """

    _compiled_cache = {}
    _compile_lock = threading.RLock()

    def __init__(self):
        self._open = True
        self._run_lock = threading.Lock()
        self._running = None  # (thread name, description) of the run in progress

    def is_open(self):
        return self._open

    @classmethod
    def _check_runnable(cls, runnable):
        if runnable is None:
            raise UnsupportedRunnableError("Got a none runnable: there is nothing to run.")
        if isinstance(runnable, (CompiledRunnable, TaskGroup, Task, core.ExecutionStep)):
            return
        if isinstance(runnable, (core.Plan, core.Net)):
            return
        if isinstance(runnable, (list, tuple)):
            for i, x in enumerate(runnable):
                if not isinstance(x, core.Net):
                    raise UnsupportedRunnableError(
                        f"{cls.__name__} can run a list of Nets, but element #{i} of "
                        f"{describe_runnable(runnable)} is a {type(x).__name__}."
                    )
            return
        raise UnsupportedRunnableError(
            f"{cls.__name__} cannot run an object of type {type(runnable).__name__}: expected "
            "a TaskGroup, Task, Plan, ExecutionStep, Net, list of Nets or CompiledRunnable."
        )

    @classmethod
    def compile(cls, runnable, workspace_type=None, setup_net_list=None):
        """Compile ``runnable`` for this session class (cached; see the class docstring)."""
        if isinstance(runnable, CompiledRunnable):
            assert cls == runnable.session_class, (
                "Runnable was compiled for different session type. "
                f"Need: {cls.__name__}, got: {runnable.session_class.__name__}"
            )
            return runnable
        cls._check_runnable(runnable)
        if isinstance(runnable, (list, tuple)):  # not cached: see the class docstring
            tg = TaskGroup(workspace_type=workspace_type or WorkspaceType.GLOBAL)
            tg.add(Task(step=core.execution_step("runnable", list(runnable))))
            return cls._compile_new(tg, setup_net_list)

        with cls._compile_lock:
            cached = cls._compiled_cache.get(runnable)
            if cached is not None:
                if not _same_compiler(cls, cached.session_class):
                    raise AssertionError(
                        "Runnable was compiled for different session type. "
                        f"Need: {cls.__name__}, got: {cached.session_class.__name__} "
                        f"({describe_runnable(runnable)})"
                    )
                if isinstance(runnable, TaskGroup) and runnable._tasks_to_add:
                    raise TaskGroupConsumedError(
                        "This TaskGroup was already compiled (a session ran it), so the "
                        "tasks added to it since would never run: "
                        + ", ".join(
                            f"task '{t.name}' on node '{t.node}'" for t in runnable._tasks_to_add
                        )
                        + ". Put new tasks in a new TaskGroup."
                    )
                return cached

            if isinstance(runnable, TaskGroup):
                if workspace_type:
                    if runnable.workspace_type():
                        assert runnable.workspace_type() == workspace_type, (
                            f"Require {workspace_type} but already have {runnable.workspace_type()}"
                        )
                    else:
                        runnable._workspace_type = workspace_type
                tg = runnable
            else:
                if workspace_type is None:
                    workspace_type = WorkspaceType.GLOBAL
                tg = TaskGroup(workspace_type=workspace_type)
                if isinstance(runnable, Task):
                    tg.add(runnable)
                elif isinstance(runnable, core.ExecutionStep):
                    tg.add(Task(step=runnable))
                elif isinstance(runnable, core.Plan):
                    steps = runnable.Steps()
                    assert len(steps) > 0, f"Plan '{runnable.Proto().name}' has no steps to run."
                    # The steps of a Plan run in sequence (the tasks of a group would not).
                    tg.add(Task(step=steps[0] if len(steps) == 1 else steps))
                else:
                    tg.add(Task(step=core.execution_step("runnable", runnable)))
            compiled = cls._compile_new(tg, setup_net_list)
            cls._compiled_cache[runnable] = compiled
            return compiled

    @classmethod
    def _compile_new(cls, tg, setup_net_list):
        compiled = CompiledRunnable(cls._compile_task_group(tg, setup_net_list), session_class=cls)
        compiled._attribution = cls._attribution_for(tg, compiled.obj)
        return compiled

    @classmethod
    def _attribution_for(cls, task_group, compiled_obj):
        return _Attribution(task_group)

    def run(self, runnable, workspace_type=None, setup_net_list=None):
        """Compile (or take from the cache) and run ``runnable``; see the class docstring."""
        if not self.is_open():
            raise SessionClosedError(
                f"Session is closed: {type(self).__name__} cannot run "
                f"{describe_runnable(runnable)}."
            )
        self._check_runnable(runnable)
        lock = self.__dict__.get("_run_lock")
        if lock is None:  # a subclass that did not call Session.__init__
            with Session._compile_lock:
                lock = self.__dict__.setdefault("_run_lock", threading.Lock())
        if not lock.acquire(blocking=False):
            thread, what = self._running or ("?", "?")
            raise SessionBusyError(
                f"{type(self).__name__} is busy: it is running {what} (started by thread "
                f"'{thread}'), so it cannot also run {describe_runnable(runnable)} from thread "
                f"'{threading.current_thread().name}'. A session runs one runnable at a time; "
                "wait for the run to end or use one session per thread."
            )
        try:
            self._running = (threading.current_thread().name, describe_runnable(runnable))
            compiled = self.compile(runnable, workspace_type, setup_net_list)
            try:
                self._run_compiled(compiled.obj)
            except NotImplementedError:
                raise
            except Exception as e:
                if compiled._attribution is None:
                    raise
                raise compiled._attribution.error(e, describe_runnable(runnable)) from e
        finally:
            self._running = None
            lock.release()

    def close(self):
        if self.is_open():
            self._do_close()
            self._open = False

    def fetch_output(self, output):
        raise NotImplementedError()

    def _run_compiled(self, task_group):
        raise NotImplementedError()

    @classmethod
    def _compile_task_group(cls, task_group, setup_net_list=None):
        return task_group

    def _do_close(self):
        pass

    def __enter__(self):
        assert self._open, "Session already closed."
        return self

    def __exit__(self, ex_type, value, traceback):
        if ex_type is None:
            self.close()


class LocalSession(Session):
    """
    Session that runs in a single node.
    Tasks are all remapped to run in parallel in the 'local' node.

    Currently, LocalSession runs all parallel tasks in the same workspace,
    but this behavior may change in the future. Only tasks pointing to the
    same logical node are guaranteed to always run in the same workspace.

    ``LocalSession(ws=None)`` runs in ``ws``, or in the workspace that is current (by name)
    when the session is created. Each run:

    1. creates every task output blob in that workspace (so outputs written from private
       child workspaces survive the run) and binds the TaskOutputs to it: ``fetch()``
       reads the blob's value at the time it is called;
    2. runs the plan directly in that workspace, with it as the current workspace.
       QUIRK (spec 7.3, kept): the plan never gets a private top-level workspace, even for
       a PRIVATE TaskGroup; privacy comes only from each PRIVATE task's own step running
       in a fresh child workspace. So node-level setup nets (``ops.local_init()``) run in
       the session workspace and their blobs persist across runs.

    Project decision: when a run fails, the current workspace is switched back to the one
    that was current before the run (Caffe2 left the session workspace current).
    """

    def __init__(self, ws=None):
        Session.__init__(self)
        # Not `ws or ...`: an empty workspace may be falsy.
        self._ws = ws if ws is not None else workspace.C.Workspace.current

    @property
    def workspace(self):
        """The session (global) workspace."""
        return self._ws

    @classmethod
    def _compile_task_group(cls, task_group, setup_net_list=None):
        with Cluster():
            task = task_group.to_task()
        plan = core.Plan("task_group_plan")
        plan.AddStep(task.get_step())
        # QUIRK (spec 7.3): the bound method, not its result; see _run_compiled.
        return (plan, task.output_list(), task.workspace_type)

    @classmethod
    def _attribution_for(cls, task_group, compiled_obj):
        plan = compiled_obj[0]
        return _Attribution(task_group, [(s, "local") for s in plan.Proto().execution_step])

    def _run_compiled(self, compiled):
        plan, output_list, workspace_type = compiled

        # Make sure the output blobs belong to the session workspace.
        outputs = []
        for name in output_list.names():
            self._ws.create_blob(str(name))
            outputs.append(core.BlobReference(str(name)))
        output_list.set_values(outputs, _fetch_func=self._fetch_output)
        # QUIRK (spec 0, 7.3): workspace_type is a method, never equal to 'private'.
        task_ws = (
            workspace.C.Workspace(self._ws) if workspace_type == WorkspaceType.PRIVATE else self._ws
        )
        previous = workspace.CurrentWorkspace()
        try:
            with workspace.WorkspaceGuard(task_ws):
                task_ws.run(plan)
        except BaseException:
            workspace.SwitchWorkspace(previous, True)
            raise

    def _fetch_output(self, output):
        return self._ws.blobs[str(output)].fetch()


def __getattr__(name):
    # DistributedSession lives in caffe2.distributed, which needs the optional extra
    # caffe2py[ray]: without Ray, importing it raises an ImportError that says so.
    if name == "DistributedSession":
        from caffe2.distributed import DistributedSession

        return DistributedSession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
