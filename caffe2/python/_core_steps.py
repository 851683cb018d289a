"""ExecutionStep, Plan and the step-building helpers of ``caffe2.python.core``.

A step is a tree of substeps or a list of net names; a plan holds top-level steps and a copy
of every net they name. Re-exported by ``core``; ``core`` is imported lazily here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from caffe2.proto import caffe2_pb2


def _core() -> Any:
    from caffe2.python import core

    return core


def _add_net_to_dict(net_dict: dict[str, Any], net: Any) -> bool:
    """Store net under its name; False if the name was already there (same net or by name)."""
    core = _core()
    name = core.get_net_name(net)
    if name in net_dict:
        assert net_dict[name] is None or net == net_dict[name], (
            "Different nets with same name: " + name
        )
        return False
    net_dict[name] = net if isinstance(net, core.Net) else None
    return True


class ExecutionStep:
    """Builder of an ExecutionStep proto (see spec runtime.md 5.8)."""

    _step_names_used: set[str] = set()
    _step_names_lock = threading.Lock()

    @staticmethod
    def _get_next_step_name(basename: str) -> str:
        with ExecutionStep._step_names_lock:
            name = basename
            next_idx = 1
            while name in ExecutionStep._step_names_used:
                name = basename + "_" + str(next_idx)
                next_idx += 1
            ExecutionStep._step_names_used.add(name)
        return name

    def __init__(self, name: str | None, nets: Any = None, num_iter: int | None = None) -> None:
        core = _core()
        self._step = caffe2_pb2.ExecutionStep()
        self._step.name = name or ExecutionStep._get_next_step_name("step")
        self._net_dict: OrderedDict[str, Any] = OrderedDict()
        self._is_used = False
        self._substeps: list[ExecutionStep] = []
        if nets is not None:
            if type(nets) is core.Net:
                nets = [nets]
            for net in nets:
                if _add_net_to_dict(self._net_dict, net):
                    self._step.network.append(core.get_net_name(net))
        if num_iter is not None:
            self._step.num_iter = num_iter

    def get_net(self, name: str) -> Any:
        return self._net_dict[name]

    def Name(self) -> str:
        return self._step.name

    def __str__(self) -> str:
        return self._step.name

    def _assert_can_mutate(self) -> None:
        assert not self._is_used, "Cannot mutate a step that has already been added to a plan/step."

    def _notify_is_used(self) -> None:
        self._is_used = True

    def Proto(self) -> caffe2_pb2.ExecutionStep:
        return self._step

    def HasNets(self) -> bool:
        return len(self._step.network) > 0

    def HasSubsteps(self) -> bool:
        return len(self._step.substep) > 0

    def Nets(self) -> list[Any]:
        return list(self._net_dict.values())

    def Substeps(self) -> list[ExecutionStep]:
        return self._substeps

    def SetIter(self, num_iter: int) -> None:
        self._assert_can_mutate()
        self._step.num_iter = num_iter

    def SetCreateWorkspace(self, create_workspace: bool) -> None:
        self._assert_can_mutate()
        self._step.create_workspace = create_workspace

    def SetNumConcurrentInstances(self, num_concurrent_instances: int) -> None:
        self._assert_can_mutate()
        self._step.num_concurrent_instances = num_concurrent_instances

    def SetOnlyOnce(self, only_once: bool) -> None:
        self._assert_can_mutate()
        self._step.only_once = only_once

    def SetShouldStopBlob(self, should_stop_blob: Any) -> None:
        assert isinstance(should_stop_blob, _core().BlobReference), (
            f"expects BlobReference here, got {type(should_stop_blob)}"
        )
        self._assert_can_mutate()
        self._step.should_stop_blob = str(should_stop_blob)

    def RunEveryMillis(self, interval: int) -> None:
        """Run this step every interval ms while its siblings run (ignored at top level)."""
        self._step.run_every_ms = interval

    def SetReportNet(self, report_net: Any, report_interval: int) -> None:
        """Deprecated: use RunEveryMillis."""
        self._assert_can_mutate()
        _add_net_to_dict(self._net_dict, report_net)
        self._step.report_net = _core().get_net_name(report_net)
        self._step.report_interval = report_interval

    def AddSubstep(self, substep: Any) -> ExecutionStep:
        """Append a copy of substep (a step without nets or substeps is dropped)."""
        self._assert_can_mutate()
        assert not self.HasNets(), "Cannot have both network and substeps."
        if isinstance(substep, ExecutionStep):
            substep._notify_is_used()
            if not substep.HasNets() and not substep.HasSubsteps():
                return self
            for net in substep.Nets():
                _add_net_to_dict(self._net_dict, net)
            self._substeps.append(substep)
            proto = substep.Proto()
        else:
            proto = substep
        self._step.substep.add().CopyFrom(proto)
        return self

    def SetConcurrentSubsteps(self, concurrent_substeps: bool) -> None:
        self._assert_can_mutate()
        assert not self.HasNets(), "Cannot have both network and substeps."
        self._step.concurrent_substeps = concurrent_substeps

    def AddNet(self, net: Any) -> ExecutionStep:
        """Run net in this step (a net added twice runs twice per iteration)."""
        self._assert_can_mutate()
        assert not self.HasSubsteps(), "Cannot have both network and substeps."
        core = _core()
        assert isinstance(net, core.Net)
        _add_net_to_dict(self._net_dict, net)
        self._step.network.append(core.get_net_name(net))
        return self

    def get_all_attributes(self, name: str) -> list[Any]:
        """The attributes under name of every net of this step and its substeps."""
        return [attr for net in self._net_dict.values() for attr in net.get_attributes(name)]

    @classmethod
    def create_from_proto(
        cls,
        step_proto: caffe2_pb2.ExecutionStep,
        net_obj_dict: dict[str, Any],
        net_proto_dict: dict[str, caffe2_pb2.NetDef],
    ) -> ExecutionStep:
        """Rebuild a step (and new Nets for its net protos) from an ExecutionStep proto."""
        core = _core()
        assert isinstance(step_proto, caffe2_pb2.ExecutionStep)
        assert (len(step_proto.network) > 0) != (len(step_proto.substep) > 0)
        steps_or_nets: list[Any] = []
        if len(step_proto.substep) > 0:
            for substep_proto in step_proto.substep:
                steps_or_nets.append(
                    ExecutionStep.create_from_proto(substep_proto, net_obj_dict, net_proto_dict)
                )
        else:
            for net_name in step_proto.network:
                if net_name not in net_obj_dict:
                    assert net_name in net_proto_dict
                    net_obj_dict[net_name] = core.Net(net_proto_dict[net_name])
                net = net_obj_dict[net_name]
                assert isinstance(net, core.Net)
                steps_or_nets.append(net)

        def opt(field: str) -> Any:
            return getattr(step_proto, field) if step_proto.HasField(field) else None

        should_stop = opt("should_stop_blob")
        return execution_step(
            step_proto.name,
            steps_or_nets,
            num_iter=opt("num_iter"),
            report_net=None,
            report_interval=None,
            concurrent_substeps=opt("concurrent_substeps"),
            should_stop_blob=core.BlobReference(should_stop) if should_stop is not None else None,
            only_once=opt("only_once"),
            num_concurrent_instances=opt("num_concurrent_instances"),
            create_workspace=opt("create_workspace"),
            run_every_ms=opt("run_every_ms"),
        )


def add_nets_in_order(step: ExecutionStep, net_list: list[str] | None = None) -> list[str]:
    """Append the net names of step to net_list, depth first (substeps, nets, report net)."""
    if net_list is None:
        net_list = []
    proto = step.Proto()
    for substep in step.Substeps():
        add_nets_in_order(substep, net_list)
    for net in proto.network:
        if net not in net_list:
            net_list.append(net)
    # As in Caffe2, the report net comes last although it may run first.
    if proto.report_net and proto.report_net not in net_list:
        net_list.append(proto.report_net)
    return net_list


def execution_step(
    default_name: str | None,
    steps_or_nets: Any,
    num_iter: int | None = None,
    report_net: Any = None,
    report_interval: int | None = None,
    concurrent_substeps: bool | None = None,
    should_stop_blob: Any = None,
    only_once: bool | None = None,
    num_concurrent_instances: int | None = None,
    create_workspace: bool | None = False,
    run_every_ms: int | None = None,
) -> ExecutionStep:
    """An ExecutionStep of a step, a net, or a list of nets or steps (once by default)."""
    core = _core()
    assert should_stop_blob is None or num_iter is None, (
        "Cannot set both should_stop_blob and num_iter."
    )
    if should_stop_blob is None and num_iter is None:
        num_iter = 1
    step = ExecutionStep(default_name)
    if should_stop_blob is not None:
        step.SetShouldStopBlob(should_stop_blob)
    if num_iter is not None:
        step.SetIter(num_iter)
    if only_once is not None:
        step.SetOnlyOnce(only_once)
    if concurrent_substeps is not None:
        step.SetConcurrentSubsteps(concurrent_substeps)
    if report_net is not None:
        assert report_interval is not None
        step.SetReportNet(report_net, report_interval)
    if num_concurrent_instances is not None:
        step.SetNumConcurrentInstances(num_concurrent_instances)
    if create_workspace:
        step.SetCreateWorkspace(True)
    if run_every_ms:
        step.RunEveryMillis(run_every_ms)

    if isinstance(steps_or_nets, ExecutionStep):
        step.AddSubstep(steps_or_nets)
    elif isinstance(steps_or_nets, core.Net):
        step.AddNet(steps_or_nets)
    elif isinstance(steps_or_nets, list):
        if all(isinstance(x, core.Net) for x in steps_or_nets):
            for x in steps_or_nets:
                step.AddNet(x)
        else:
            for x in steps_or_nets:
                step.AddSubstep(to_execution_step(x))
    elif steps_or_nets:
        raise ValueError("steps_or_nets must be a step, a net, or a list of nets or steps.")
    return step


def scoped_execution_step(name: str | None, *args: Any, **kwargs: Any) -> ExecutionStep:
    """execution_step with the name prefixed by the current name scope."""
    default_name = _core().ScopedName(name) if name else name
    return execution_step(default_name, *args, **kwargs)


def _net_builder_class() -> type | None:
    try:
        from caffe2.python.net_builder import NetBuilder
    except ModuleNotFoundError as e:  # no net_builder module: nothing can be a builder
        if e.name != "caffe2.python.net_builder":
            raise
        return None
    return NetBuilder


def to_execution_step(step_or_nets: Any, default_name: str | None = None) -> ExecutionStep:
    """A step as is; a NetBuilder as a step (looping on its stop blob); else execution_step."""
    if isinstance(step_or_nets, ExecutionStep):
        return step_or_nets
    stop_blob = None
    if not default_name and hasattr(step_or_nets, "name"):
        default_name = step_or_nets.name
    builder_cls = _net_builder_class()
    if builder_cls is not None and isinstance(step_or_nets, builder_cls):
        stop_blob = step_or_nets._stop_blob
        step_or_nets = step_or_nets.get()
    return execution_step(default_name, step_or_nets, should_stop_blob=stop_blob)


class Plan:
    """Builder of a PlanDef: top-level steps plus a snapshot of every net they run."""

    def __init__(self, name_or_step: str | ExecutionStep) -> None:
        self._plan = caffe2_pb2.PlanDef()
        self._net_dict: OrderedDict[str, Any] = OrderedDict()
        self._steps: list[ExecutionStep] = []
        if isinstance(name_or_step, ExecutionStep):
            self._plan.name = name_or_step.Name()
            self.AddStep(name_or_step)
        elif isinstance(name_or_step, str):
            self._plan.name = name_or_step
        else:
            raise ValueError("name_or_step must be a string or ExecutionStep")

    def __str__(self) -> str:
        return self._plan.name

    def Proto(self) -> caffe2_pb2.PlanDef:
        return self._plan

    def AddNets(self, nets: list[Any]) -> None:
        """Add a copy of the current proto of each net not yet in the plan."""
        core = _core()
        for net in nets:
            if _add_net_to_dict(self._net_dict, net):
                assert isinstance(net, core.Net)
                self._plan.network.add().CopyFrom(net.Proto())

    def Nets(self) -> list[Any]:
        return list(self._net_dict.values())

    def AddStep(self, step: ExecutionStep) -> None:
        """Add a copy of step (ignored if empty) and the nets it runs, in order of use."""
        assert isinstance(step, ExecutionStep)
        step._notify_is_used()
        if not step.HasNets() and not step.HasSubsteps():
            return
        self._plan.execution_step.add().CopyFrom(step.Proto())
        self._steps.append(step)
        net_list = add_nets_in_order(step, [])
        self.AddNets([step.get_net(n) for n in net_list])

    def Steps(self) -> list[ExecutionStep]:
        return self._steps

    def get_all_attributes(self, name: str) -> list[Any]:
        """The attributes under name of all the plan's nets."""
        return [attr for net in self._net_dict.values() for attr in net.get_attributes(name)]

    @classmethod
    def create_from_proto(cls, plan_proto: caffe2_pb2.PlanDef) -> Plan:
        """Rebuild a Plan (with new, renamed Nets) from a PlanDef."""
        assert isinstance(plan_proto, caffe2_pb2.PlanDef)
        plan = Plan(plan_proto.name)
        plan._plan.CopyFrom(plan_proto)
        net_obj_dict: dict[str, Any] = {}
        net_proto_dict: dict[str, caffe2_pb2.NetDef] = {}
        for net_proto in plan_proto.network:
            assert net_proto.name not in net_proto_dict
            net_proto_dict[net_proto.name] = net_proto
        for step_proto in plan_proto.execution_step:
            step = ExecutionStep.create_from_proto(step_proto, net_obj_dict, net_proto_dict)
            plan.AddStep(step)
        return plan
