"""The setup/exit hooks of tasks and task groups (split out of :mod:`caffe2.python.task`).

An object attached to a net with ``net.add_attribute(key, obj)`` that has ``setup(init_net)``
and/or ``exit(exit_net)`` contributes init and exit nets; :func:`get_setup_nets` collects
them and :func:`add_setup_steps` wraps a step with them. Everything here is re-exported by
:mod:`caffe2.python.task`, which is the public import path.
"""

from __future__ import annotations

from caffe2.python import core

__all__ = ["get_setup_nets", "add_setup_steps", "SetupNets"]


def _collect_setup(init_nets, obj, result, what):
    if isinstance(result, (list, tuple)):
        init_nets.extend(result)
    elif isinstance(result, (core.Net, core.ExecutionStep)):
        init_nets.append(result)
    elif result is not None:
        raise TypeError(f"Unsupported type for {what}: {type(result)} (returned by {obj!r})")


def get_setup_nets(key, steps_or_nets, target):
    """The init and exit nets (or steps) the hooks attached under ``key`` contribute.

    Looks at the attributes ``key`` of every net of ``steps_or_nets`` (ExecutionSteps and
    Plans through ``get_all_attributes``, Nets through ``get_attributes``). An object is set
    up at most once in its lifetime (``_setup_used``), and is skipped when its
    ``_setup_target`` is not ``target``. Returns ``(init_nets, exit_nets)``; hooks that add
    ops to the shared nets ``<key>/init`` / ``<key>/exit`` (created on every call, NAMING)
    get those nets placed first.
    """
    init_net = core.Net(key + "/init")
    exit_net = core.Net(key + "/exit")
    init_nets = []
    exit_nets = []
    objs = []
    for step_or_net in steps_or_nets:
        if hasattr(step_or_net, "get_all_attributes"):
            objs += step_or_net.get_all_attributes(key)
        elif hasattr(step_or_net, "get_attributes"):
            objs += step_or_net.get_attributes(key)
    for obj in objs:
        if getattr(obj, "_setup_used", False):
            continue
        if hasattr(obj, "_setup_target") and obj._setup_target != target:
            continue
        if hasattr(obj, "setup"):
            _collect_setup(init_nets, obj, obj.setup(init_net), "setup")
            obj._setup_used = True
        if hasattr(obj, "exit"):
            _collect_setup(exit_nets, obj, obj.exit(exit_net), "exit")
            obj._setup_used = True
    if len(init_net.Proto().op) > 0:
        init_nets.insert(0, init_net)
    if len(exit_net.Proto().op) > 0:
        exit_nets.insert(0, exit_net)
    return init_nets, exit_nets


def add_setup_steps(step, init_nets, exit_nets, name):
    """``step`` itself without init/exit nets, else ``name: [name:init, step, name:exit]``."""
    if not init_nets and not exit_nets:
        return step
    steps = []
    if init_nets:
        steps.append(core.execution_step(f"{name}:init", init_nets))
    steps.append(step)
    if exit_nets:
        steps.append(core.execution_step(f"{name}:exit", exit_nets))
    return core.execution_step(name, steps)


class SetupNets:
    """A hook with fixed init and exit nets.

    ``net.add_attribute(Task.TASK_SETUP, SetupNets([init], [exit]))`` runs ``init`` before
    and ``exit`` after the task (or the node's tasks with ``TaskGroup.LOCAL_SETUP``).
    """

    def __init__(self, init_nets=None, exit_nets=None):
        self.init_nets = init_nets
        self.exit_nets = exit_nets

    def __repr__(self):
        return f"SetupNets(init_nets={self.init_nets}, exit_nets={self.exit_nets})"

    def setup(self, init_net):
        return self.init_nets

    def exit(self, exit_net):
        return self.exit_nets
