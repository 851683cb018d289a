"""Compiling a TaskGroup for a DistributedSession (no Ray here).

The group is split per node exactly as :meth:`TaskGroup.tasks_by_node` defines (one grouped
task per node: its tasks run concurrently, wrapped in the node's LOCAL_SETUP nets); each
node's task becomes a Plan serialized to PlanDef bytes, with the names of its output blobs
and the tokens of the Python ops its nets use. Nothing else is compiled: the plan runs on the
node with the same runtime plan executor LocalSession uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from caffe2.proto import caffe2_pb2
from caffe2.python import core
from caffe2.python.task import Cluster, TaskGroup, TaskOutputList

PYTHON_OP_TYPES = {"Python": "", "PythonGradient": "_gradient"}


@dataclass
class NodePlan:
    """What one Caffe2 node runs in one TaskGroup run."""

    node: str
    plan_name: str
    plan_bytes: bytes
    step: caffe2_pb2.ExecutionStep  # the node's top step (to name failures)
    output_list: TaskOutputList
    output_names: list[str]
    python_tokens: tuple[str, ...]  # registry keys (``token`` or ``token_gradient``)
    node_kwargs: dict[str, Any]
    tasks: tuple[str, ...]  # names of the original tasks this node runs


@dataclass
class DistributedPlan:
    """A TaskGroup compiled for DistributedSession: one NodePlan per node, in node order."""

    task_group: TaskGroup
    nodes: list[NodePlan] = field(default_factory=list)
    setup_nets: list[caffe2_pb2.NetDef] = field(default_factory=list)


def python_op_tokens(plan: caffe2_pb2.PlanDef) -> tuple[str, ...]:
    """The registry keys of the Python ops of every net of ``plan``, nested nets included
    (the ``net``/``nets`` arguments of control ops such as Do, If and While)."""
    keys: list[str] = []

    def visit(net: caffe2_pb2.NetDef) -> None:
        for op in net.op:
            suffix = PYTHON_OP_TYPES.get(op.type)
            for arg in op.arg:
                if suffix is not None and arg.name == "token" and arg.HasField("s"):
                    token = arg.s.decode("utf-8", "replace")
                    if token and token + suffix not in keys:
                        keys.append(token + suffix)
                if arg.HasField("n"):
                    visit(arg.n)
                for sub in arg.nets:
                    visit(sub)

    for net in plan.network:
        visit(net)
    return tuple(keys)


def _setup_netdefs(setup_net_list) -> list[caffe2_pb2.NetDef]:
    nets = []
    for i, net in enumerate(setup_net_list or []):
        if isinstance(net, core.Net):
            proto = net.Proto()
        elif isinstance(net, caffe2_pb2.NetDef):
            proto = net
        else:
            raise TypeError(
                f"setup_net_list must hold Nets or NetDefs; element #{i} is a {type(net).__name__}"
            )
        copy = caffe2_pb2.NetDef()
        copy.CopyFrom(proto)
        nets.append(copy)
    return nets


def compile_task_group(task_group: TaskGroup, setup_net_list=None) -> DistributedPlan:
    """Split ``task_group`` per node and serialize each node's plan."""
    node_kwargs = dict(Cluster.current().node_kwargs())
    originals = task_group.tasks()
    grouped = task_group.tasks_by_node()
    compiled = DistributedPlan(task_group=task_group, setup_nets=_setup_netdefs(setup_net_list))
    for task in grouped.tasks():
        plan = core.Plan("task_group_plan")
        step = task.get_step()
        plan.AddStep(step)
        proto = plan.Proto()
        output_list = task.output_list()
        compiled.nodes.append(
            NodePlan(
                node=task.node,
                plan_name=proto.name,
                plan_bytes=proto.SerializeToString(),
                step=step.Proto(),
                output_list=output_list,
                output_names=[str(n) for n in output_list.names()],
                python_tokens=python_op_tokens(proto),
                node_kwargs=dict(node_kwargs.get(task.node) or {}),
                tasks=tuple(t.name for t in originals if t.node == task.node),
            )
        )
    return compiled
