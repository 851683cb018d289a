"""Cluster, Node, TaskGroup, Task and the setup/exit hooks around them (spec 6).

A :class:`Task` is one execution step meant to run on one :class:`Node`, together with the
blobs it outputs. A :class:`TaskGroup` gathers tasks; a Session compiles a group into a Plan
(spec 7). Every task and every node of a group runs concurrently; the tasks of one node are
merged by :meth:`TaskGroup.tasks_by_node` into one "grouped" task per node.

Hooks: an object attached to a net with ``net.add_attribute(key, obj)`` that has
``setup(init_net)`` and/or ``exit(exit_net)`` contributes init and exit nets around

- every instance of a task (``Task.TASK_INSTANCE_SETUP``),
- a task, once around all its instances (``Task.TASK_SETUP``),
- all the tasks of a node in one TaskGroup run (``TaskGroup.LOCAL_SETUP``).

Names are part of the contract (spec 6, NAMING): task names are ``<node>/<name>``, made unique
only among the tasks pending in the same group (``:1``, ``:2``...); ``get_setup_nets`` creates
``<key>/init`` and ``<key>/exit`` nets on every call; a task without outputs gets an exit net
``<task name>:output``; a multi-instance task is wrapped in a step named literally
``'%s:parallel'``.

The hook helpers live in :mod:`caffe2.python._task_setup` and TaskOutput/TaskOutputList in
:mod:`caffe2.python._task_output`; both are re-exported here (this is the import path).
"""

from __future__ import annotations

from collections import defaultdict
from copy import copy

from caffe2.python import context, core
from caffe2.python._task_output import TaskOutput, TaskOutputList
from caffe2.python._task_setup import SetupNets, add_setup_steps, get_setup_nets

__all__ = [
    "Cluster",
    "Node",
    "WorkspaceType",
    "get_setup_nets",
    "add_setup_steps",
    "SetupNets",
    "TaskGroup",
    "TaskOutput",
    "TaskOutputList",
    "final_output",
    "Task",
]


def _merge_node_kwargs(new, existing):
    """Merge the kwargs of a Node registered again: the values registered first win."""
    if new is None:
        return existing
    if existing is None:
        return new
    merged = copy(new)
    merged.update(existing)
    return merged


@context.define_context(allow_default=True)
class Cluster:
    """The nodes a job uses, in the order they were first named, with their kwargs.

    A default Cluster is created and pushed (for good) per thread on first use. Every
    :class:`Node` registers itself with the current Cluster when it is constructed.
    """

    def __init__(self):
        self._nodes = []
        self._node_kwargs = {}

    def __repr__(self):
        return f"Cluster(nodes={self._nodes}, node_kwargs={self._node_kwargs})"

    def add_node(self, node):
        name = str(node)
        if name not in self._nodes:
            self._nodes.append(name)
        self._node_kwargs[name] = _merge_node_kwargs(node.kwargs(), self._node_kwargs.get(name))

    def nodes(self):
        """The node names, in the order they were first added."""
        return self._nodes

    def node_kwargs(self):
        """name -> kwargs of that node (the first value given for a key wins)."""
        return self._node_kwargs


@context.define_context(allow_default=True)
class Node:
    """A place where tasks run, e.g. ``with Node('trainer_0'):``.

    ``Node(name='local', **kwargs)`` stores ``str(name)`` and the kwargs (resource hints a
    distributed session may read) and registers itself with ``Cluster.current()`` right away.
    The default node, pushed for good per thread on first use, is ``'local'``.
    """

    def __init__(self, node="local", **kwargs):
        self._name = str(node)
        self._kwargs = kwargs
        Cluster.current().add_node(self)

    def __str__(self):
        return self._name

    def __repr__(self):
        return f"Node(node={self._name!r}, kwargs={self._kwargs})"

    def kwargs(self):
        return self._kwargs


class WorkspaceType:
    """Where a task's blobs live.

    PRIVATE: each run of the task gets a fresh child of the session workspace; blobs it
    creates vanish at the end of the run, writes to blobs the parent already has land in
    the parent. GLOBAL: the task runs directly in the session workspace.
    """

    PRIVATE = "private"
    GLOBAL = "global"


def _task_list_text(tasks, limit=8):
    parts = [f"'{t.name}' (node '{t.node}')" for t in tasks[:limit]]
    if len(tasks) > limit:
        parts.append(f"... {len(tasks) - limit} more")
    return ", ".join(parts) if parts else "no tasks"


@context.define_context(allow_default=False)
class TaskGroup:
    """A set of tasks run together: all tasks of all nodes run concurrently.

    Tasks register with the group active when they are created (``with TaskGroup() as tg:
    Task(...)``) and are finalized lazily, at the first :meth:`tasks` call (usually inside
    ``Session.compile``); after that the group is *used* and takes no more tasks.

    ``workspace_type`` is fixed by the first task added when not given: a task without a
    type gets the group's, or PRIVATE.
    """

    LOCAL_SETUP = "local_setup"

    def __init__(self, workspace_type=None):
        self._plan_cache = None
        self._tasks = []
        self._already_used = False
        self._prev_active = None
        self._tasks_to_add = []
        self._report_nets = {}
        self._report_steps = []
        self._workspace_type = workspace_type
        self._tasks_by_node = None

    def __repr__(self):  # no side effect: does not finalize the tasks
        tasks = self._tasks + self._tasks_to_add
        return f"TaskGroup(tasks={tasks}, workspace_type={self._workspace_type!r})"

    def add(self, task):
        """Finalize ``task`` (build its step) and add it to this group."""
        assert not self._already_used, (
            f"Cannot add Task to an already used TaskGroup: task '{task.name}' on node "
            f"'{task.node}' was added after the group's tasks were compiled "
            f"({_task_list_text(self._tasks)}). Create a new TaskGroup for it."
        )
        assert (
            self._workspace_type is None
            or task._workspace_type is None
            or self._workspace_type == task._workspace_type
        ), (
            f"Task '{task.name}' on node '{task.node}' has workspace type "
            f"'{task._workspace_type}' but its TaskGroup has '{self._workspace_type}'."
        )
        if task._workspace_type is None:
            task._workspace_type = self._workspace_type or WorkspaceType.PRIVATE
        if self._workspace_type is None:
            self._workspace_type = task._workspace_type
        task._notify_used()
        self._tasks.append(task)

    def tasks(self):
        """Finalize the registered tasks (in registration order) and return all tasks.

        Marks the group used: it accepts no further tasks.
        """
        for task in self._tasks_to_add:
            self.add(task)
        self._tasks_to_add = []
        self._already_used = True
        return self._tasks

    def num_registered_tasks(self):
        return len(self._tasks_to_add) + len(self._tasks)

    def used_nodes(self):
        """The distinct node names of the group's tasks, in task order."""
        used = []
        for task in self._tasks + self._tasks_to_add:
            if task.node not in used:
                used.append(task.node)
        return used

    def report_step(self, step=None, node=None, interval_ms=1000):
        """Run ``step`` every ``interval_ms`` on ``node`` (default: the current node) while
        the node's tasks run, and once more after they finished."""
        step = core.to_execution_step(step)
        step.RunEveryMillis(interval_ms)
        self._report_steps.append((str(node or Node.current()), step))

    def report_net(self, net=None, node=None, report_interval=5):
        """Deprecated: the report net of ``node``, run every ``report_interval`` seconds.

        One per node; created as ``<node>/reporter`` when not given.
        """
        node = str(node or Node.current())
        assert net is None or node not in self._report_nets, (
            f"Node '{node}' already has a report net."
        )
        if node not in self._report_nets:
            self._report_nets[node] = (
                net if net else core.Net(f"{node}/reporter"),
                report_interval,
            )
        return self._report_nets[node][0]

    def tasks_by_node(self, node_remap=None):
        """A new TaskGroup with one task named 'grouped_by_node' per (remapped) node.

        The tasks of a node (and its report steps) run concurrently in one step, wrapped in
        the node's LOCAL_SETUP init/exit nets. Each task step gets ``create_workspace`` when
        the task is PRIVATE. The grouped task is GLOBAL when any of its tasks is. Can be
        called again only with the same node mapping: it returns the same group.
        """
        node_map = {}
        for task in self.tasks():
            node_map[task.node] = node_remap(task.node) if node_remap else task.node
        if self._tasks_by_node is not None:
            grouped, prev_node_map = self._tasks_by_node
            assert prev_node_map == node_map, (
                "Cannot call tasks_by_node multiple times: this TaskGroup "
                f"({_task_list_text(self._tasks)}) was already grouped with node mapping "
                f"{prev_node_map}, now asked for {node_map}. A TaskGroup can be compiled by "
                "one kind of session only."
            )
            return grouped

        # Deprecated report nets become report steps.
        for node, (net, interval) in self._report_nets.items():
            self.report_step(net, node=node, interval_ms=interval * 1000)
        self._report_nets = {}

        tasks_by_node = defaultdict(list)
        for task in self.tasks():
            tasks_by_node[node_map[task.node]].append(task)

        report_steps_by_node = defaultdict(list)
        for original_node, step in self._report_steps:
            mapped = node_map.get(original_node)
            if mapped is None:  # a report step on a node without tasks
                mapped = node_remap(original_node) if node_remap else original_node
            report_steps_by_node[mapped].append(step)

        grouped_by_node = TaskGroup()
        for node, tasks in tasks_by_node.items():
            report_steps = report_steps_by_node[node]
            node_inits, node_exits = get_setup_nets(
                TaskGroup.LOCAL_SETUP, [t.get_step() for t in tasks] + report_steps, self
            )
            steps = report_steps
            outputs = []
            grouped_workspace_type = WorkspaceType.PRIVATE
            for task in tasks:
                step = task.get_step()
                step.SetCreateWorkspace(task.workspace_type() == WorkspaceType.PRIVATE)
                steps.append(step)
                outputs += task.outputs()
                if task.workspace_type() == WorkspaceType.GLOBAL:
                    grouped_workspace_type = WorkspaceType.GLOBAL
            if len(steps) == 0:
                steps.append(core.execution_step("empty", []))
            if len(steps) == 1:
                step = steps[0]
            else:
                step = core.execution_step(f"{node}:body", steps, concurrent_substeps=True)
            if node_inits or node_exits:
                wrapped = []
                if node_inits:
                    wrapped.append(core.execution_step(f"{node}:init", node_inits))
                wrapped.append(step)
                if node_exits:
                    wrapped.append(core.execution_step(f"{node}:exit", node_exits))
                step = core.execution_step(node, wrapped)
            Task(
                node=node,
                step=step,
                outputs=outputs,
                name="grouped_by_node",
                group=grouped_by_node,
                workspace_type=grouped_workspace_type,
            )
        self._tasks_by_node = (grouped_by_node, node_map)
        return grouped_by_node

    def to_task(self, node=None):
        """All the group's tasks merged into one task on ``node`` (default: current node)."""
        node = node if isinstance(node, str) else str(Node.current(node))
        tasks = self.tasks_by_node(lambda _: node).tasks()
        if len(tasks) == 0:
            return Task()
        return tasks[0]

    def workspace_type(self):
        return self._workspace_type


def final_output(blob_or_record):
    """Declare ``blob_or_record`` an output of the current task (or of a new ``Task()``).

    Returns the TaskOutput; fetch it after the session ran.
    """
    cur_task = Task.current(required=False) or Task()
    return cur_task.add_output(blob_or_record)


@context.define_context()
class Task:
    """A step to run on a node, with its outputs.

    Either ``Task(step=..., outputs=...)`` or, as a context, ``with Task() as t: ops.X(...)``:
    the body is recorded by a NetBuilder named after the task (nets ``<task name>``,
    ``<task name>_1``...). ``workspace_type`` (PRIVATE/GLOBAL) defaults to the group's;
    ``num_instances=N`` runs N concurrent instances, each in its own workspace.
    """

    TASK_SETUP = "task_setup"
    TASK_INSTANCE_SETUP = "task_instance_setup"
    REPORT_STEP = "report_step"
    _global_names_used = set()  # never written: group-less tasks are not de-duplicated

    @staticmethod
    def _get_next_name(node, group, name):
        basename = str(node) + "/" + str(name)
        names_used = (
            Task._global_names_used if group is None else {t.name for t in group._tasks_to_add}
        )
        cur_name = basename
        i = 0
        while cur_name in names_used:
            i += 1
            cur_name = f"{basename}:{i}"
        return cur_name

    def __init__(
        self,
        step=None,
        outputs=None,
        workspace_type=None,
        group=None,
        node=None,
        name=None,
        num_instances=None,
    ):
        if not name and isinstance(step, core.ExecutionStep):
            name = step.Proto().name
        if not name:
            name = "task"
        self.node = str(Node.current(None if node is None else Node(node)))
        self.group = TaskGroup.current(group, required=False)
        self.name = Task._get_next_name(self.node, self.group, name)
        if self.group is not None:
            self.group._tasks_to_add.append(self)

        self._already_used = False
        self._step = None
        self._step_with_setup = None
        self._outputs = []
        self._net_builder = None
        if step is not None:
            self.set_step(step)
        if outputs is not None:
            self.add_outputs(outputs)

        self._pipeline = None
        self._is_pipeline_context = False
        self._workspace_type = workspace_type
        self._report_net = None
        self._num_instances = num_instances

    def __repr__(self):
        return f"Task(name={self.name!r}, node={self.node!r}, outputs={self._outputs})"

    def __enter__(self):
        # Leave the group while the body runs, so that tasks created inside come first.
        if self.group is not None and self in self.group._tasks_to_add:
            self.group._tasks_to_add.remove(self)
        self._assert_not_used()
        assert self._step is None, (
            f"This Task already has an execution step (task '{self.name}' on node '{self.node}')."
        )
        from caffe2.python import net_builder

        self._net_builder = net_builder.NetBuilder(_fullname=self.name)
        self._net_builder.__enter__()
        return self

    def __exit__(self, type, value, traceback):
        self._net_builder.__exit__(type, value, traceback)
        if type is None:
            self.set_step(self._net_builder)
        if self.group is not None:
            self.group._tasks_to_add.append(self)
        self._net_builder = None

    def workspace_type(self):
        return self._workspace_type

    def _assert_not_used(self):
        assert not self._already_used, (
            f"Cannot modify task since it is already been used (task '{self.name}' on node "
            f"'{self.node}')."
        )

    def add_output(self, output):
        self._assert_not_used()
        output = output if isinstance(output, TaskOutput) else TaskOutput(output)
        self._outputs.append(output)
        return output

    def add_outputs(self, outputs):
        self._assert_not_used()
        if type(outputs) not in (list, tuple):
            return self.add_output(outputs)
        return [self.add_output(output) for output in outputs]

    def set_step(self, step):
        self._assert_not_used()
        self._step = core.to_execution_step(step)

    def get_step(self):
        """The task's full step (built once, then cached), outer to inner (spec 6.5)::

            <name>                  only with task init/exit nets
              <name>:init
              %s:parallel           only with num_instances > 1 (literal name)
                <name>:instance     only with instance init/exit nets
                  <name>:instance:init
                  <name>:body       only with report steps: [reports..., step]
                  <name>:instance:exit
              <name>:exit           task exit nets, then the auto output net

        A task without outputs gets the exit net ``<name>:output`` filling an int32 0 that
        becomes its output. A task without a step gets an empty step and no output.
        """
        if self._step_with_setup is not None:
            return self._step_with_setup

        if self._step is None:
            self._step_with_setup = core.execution_step(self.name, [])
            return self._step_with_setup

        report_steps = [
            s
            for s in self._step.get_all_attributes(Task.REPORT_STEP)
            if not hasattr(s, "_report_step_used")
        ]
        for step in report_steps:
            step._report_step_used = True
            if not step.Proto().run_every_ms:
                step.RunEveryMillis(1000)
        task_init_nets, task_exit_nets = get_setup_nets(
            Task.TASK_SETUP, [self._step] + report_steps, self
        )
        instance_init_nets, instance_exit_nets = get_setup_nets(
            Task.TASK_INSTANCE_SETUP, [self._step] + report_steps, self
        )
        if len(self._outputs) == 0:
            output_net = core.Net(f"{self.name}:output")
            self.add_output(output_net.ConstantFill([], 1, dtype=core.DataType.INT32, value=0))
            task_exit_nets.append(output_net)

        body = (
            self._step
            if not report_steps
            else core.execution_step(f"{self.name}:body", report_steps + [self._step])
        )
        step_with_instance_setup = add_setup_steps(
            body, instance_init_nets, instance_exit_nets, self.name + ":instance"
        )
        if self._num_instances and self._num_instances > 1:
            step_with_instance_setup.SetCreateWorkspace(True)
            # QUIRK (spec 6.5): the name is the unformatted literal '%s:parallel'.
            step_with_instance_setup = core.execution_step(
                "%s:parallel",
                [step_with_instance_setup],
                num_concurrent_instances=self._num_instances,
            )
        self._step_with_setup = add_setup_steps(
            step_with_instance_setup, task_init_nets, task_exit_nets, self.name
        )
        return self._step_with_setup

    def output_list(self):
        return TaskOutputList(self._outputs)

    def outputs(self):
        return self._outputs

    def _notify_used(self):
        self.get_step()
        self._already_used = True
