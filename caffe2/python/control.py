"""Control flow made of execution steps: loops and conditionals over nets or steps (spec 10).

Every construct returns an :class:`~caffe2.python.core.ExecutionStep` and takes the same
kinds of body: a Net, an ExecutionStep, or a list of either. A *condition* is either a scalar
bool blob or a Net whose last external output is that blob (the net is then run to compute
it). Loops and conditionals work through ``should_stop_blob``: the plan executor checks the
stop blob after every net or substep of the step (spec 2.5), and ``only_once`` makes a step
with a stop blob run at most one iteration.

NAMING: the steps are named ``<name>/<Construct>``; a name already used by this module gets a
``_<k>`` suffix, ``k`` coming from one global counter (``_current_idx``) shared by all names.
The current name scope is prepended (``core.scoped_execution_step``). Helper nets are named
``bool_net``, ``not_net``, ``copy_condition_blob_net``, ``init-net`` and ``For-iter`` (with the
usual global ``_k`` suffixes of net names).
"""

from __future__ import annotations

import threading

from caffe2.python import core

__all__ = [
    "GetConditionBlobFromNet",
    "BoolNet",
    "NotNet",
    "MergeConditionNets",
    "CombineConditions",
    "Do",
    "DoParallel",
    "For",
    "While",
    "Until",
    "DoWhile",
    "DoUntil",
    "Switch",
    "SwitchNot",
    "If",
    "IfNot",
]

# The index appended to a step name already used; one counter for every name.
_current_idx = 1
_used_step_names = set()
_names_lock = threading.Lock()


def _get_next_step_name(control_name, base_name):
    """``<base>/<control>``, or ``<base>/<control>_<k>`` with the next global index if taken."""
    global _current_idx
    concat_name = f"{base_name}/{control_name}"
    with _names_lock:
        next_name = concat_name
        while next_name in _used_step_names:
            next_name = f"{concat_name}_{_current_idx}"
            _current_idx += 1
        _used_step_names.add(next_name)
    return next_name


# Caffe2's spelling.
_GetNextStepName = _get_next_step_name


def _MakeList(input):
    """(a, b, c) -> [a, b, c]; (a,) -> [a]; ([a, b],) -> [a, b]; () -> ValueError."""
    if len(input) == 0:
        raise ValueError("input cannot be empty.")
    if len(input) == 1:
        output = input[0]
        if not isinstance(output, list):
            output = [output]
        return output
    return list(input)


def _IsNets(nets_or_steps):
    if isinstance(nets_or_steps, list):
        return all(isinstance(n, core.Net) for n in nets_or_steps)
    return isinstance(nets_or_steps, core.Net)


def _PrependNets(nets_or_steps, *nets):
    nets_or_steps = _MakeList((nets_or_steps,))
    nets = _MakeList(nets)
    if _IsNets(nets_or_steps):
        return nets + nets_or_steps
    return [Do("prepend", nets)] + nets_or_steps


def _AppendNets(nets_or_steps, *nets):
    nets_or_steps = _MakeList((nets_or_steps,))
    nets = _MakeList(nets)
    if _IsNets(nets_or_steps):
        return nets_or_steps + nets
    return nets_or_steps + [Do("append", nets)]


def GetConditionBlobFromNet(condition_net):
    """The condition of a condition net: its last external output, as a BlobReference
    without a net (so that no name scope is added when it is used as an op input).

    QUIRK: for a net without external outputs, formatting the assertion message fails
    (``Proto`` is a method), so AttributeError is raised instead of AssertionError.
    """
    assert len(condition_net.Proto().external_output) > 0, (
        f"Condition net {condition_net.Proto.name} must has at least one external output"
    )
    return core.BlobReference(condition_net.Proto().external_output[-1])


def BoolNet(*blobs_with_bool_value):
    """A net ``bool_net`` setting each blob to a scalar bool constant.

    ``BoolNet((blob1, True), (blob2, False))`` or ``BoolNet([(blob1, True), ...])``.
    """
    blobs_with_bool_value = _MakeList(blobs_with_bool_value)
    bool_net = core.Net("bool_net")
    for blob, bool_value in blobs_with_bool_value:
        out_blob = bool_net.ConstantFill(
            [], [blob], shape=[], value=bool_value, dtype=core.DataType.BOOL
        )
        bool_net.AddExternalOutput(out_blob)
    return bool_net


def NotNet(condition_blob_or_net):
    """``(not_net, out)``: a net ``not_net`` computing ``out = Not(condition)``."""
    if isinstance(condition_blob_or_net, core.Net):
        condition_blob = GetConditionBlobFromNet(condition_blob_or_net)
    else:
        condition_blob = condition_blob_or_net
    not_net = core.Net("not_net")
    out_blob = not_net.Not(condition_blob)
    not_net.AddExternalOutput(out_blob)
    return not_net, out_blob


def _CopyConditionBlobNet(condition_blob):
    """``(net, out)``: a net ``copy_condition_blob_net`` computing ``out = Copy(cond)``."""
    condition_net = core.Net("copy_condition_blob_net")
    out_blob = condition_net.Copy(condition_blob)
    condition_net.AddExternalOutput(out_blob)
    return condition_net, out_blob


def MergeConditionNets(name, condition_nets, relation):
    """One condition net named ``name`` holding the ops of every net of ``condition_nets``,
    followed by ops combining their conditions with ``relation`` ('And' or 'Or').

    A non-list is returned as is; a list of one net returns that net (None if empty).
    """
    if not isinstance(condition_nets, list):
        return condition_nets
    if len(condition_nets) <= 1:
        return condition_nets[0] if condition_nets else None

    merged_net = core.Net(name)
    merged_proto = merged_net.Proto()
    last_cond = None
    for i, cond_net in enumerate(condition_nets):
        net_proto = cond_net.Proto()
        assert net_proto.device_option == merged_proto.device_option
        assert net_proto.type == merged_proto.type
        merged_proto.op.extend(net_proto.op)
        merged_proto.external_input.extend(net_proto.external_input)
        # Their external outputs are replaced by the combined condition.
        curr_cond = GetConditionBlobFromNet(cond_net)
        if i == 0:
            last_cond = curr_cond
        else:
            last_cond = getattr(merged_net, relation)([last_cond, curr_cond])
        for k, v in cond_net._attr_dict.items():
            merged_net._attr_dict[k] += v
    merged_net.AddExternalOutput(last_cond)
    return merged_net


def CombineConditions(name, condition_nets, relation):
    """A net named ``name`` combining the conditions of ``condition_nets`` with ``relation``
    ('And' or 'Or') without their bodies: it reads the condition blobs they computed.

    None for an empty list; ValueError for a non-list; for one net, a net copying its
    condition.
    """
    if not condition_nets:
        return None
    if not isinstance(condition_nets, list):
        raise ValueError("condition_nets must be a list of nets.")
    if len(condition_nets) == 1:
        condition_blob = GetConditionBlobFromNet(condition_nets[0])
        condition_net, _ = _CopyConditionBlobNet(condition_blob)
        return condition_net

    combined_net = core.Net(name)
    last_cond = None
    for i, cond_net in enumerate(condition_nets):
        curr_cond = GetConditionBlobFromNet(cond_net)
        if i == 0:
            last_cond = curr_cond
        else:
            last_cond = getattr(combined_net, relation)([last_cond, curr_cond])
    combined_net.AddExternalOutput(last_cond)
    return combined_net


def Do(name, *nets_or_steps):
    """Run the nets or steps once, in order, in a step ``<name>/Do``.

    A single ExecutionStep is returned as is. ``Do('d', n1, n2)``, ``Do('d', [n1, n2])``.
    """
    nets_or_steps = _MakeList(nets_or_steps)
    if len(nets_or_steps) == 1 and isinstance(nets_or_steps[0], core.ExecutionStep):
        return nets_or_steps[0]
    return core.scoped_execution_step(_get_next_step_name("Do", name), nets_or_steps)


def DoParallel(name, *nets_or_steps):
    """Run the nets or steps once, concurrently, in a step ``<name>/DoParallel``."""
    nets_or_steps = _MakeList(nets_or_steps)
    if len(nets_or_steps) == 1 and isinstance(nets_or_steps[0], core.ExecutionStep):
        return nets_or_steps[0]
    return core.scoped_execution_step(
        _get_next_step_name("DoParallel", name), nets_or_steps, concurrent_substeps=True
    )


def _LoopWhileTrue(name, control_name, condition_blob_or_net, nets_or_steps, **step_kwargs):
    """A step ``control_name`` running the body while the condition is true.

    The condition (net, then Not net) runs before the body; with nets only, the step is
    wrapped in ``<name>/<control_name>`` behind a net resetting the stop blob, and the
    inner step is named ``<control_name>-inner``. ``step_kwargs`` go to the loop step.
    """
    condition_not_net, stop_blob = NotNet(condition_blob_or_net)
    if isinstance(condition_blob_or_net, core.Net):
        nets_or_steps = _PrependNets(nets_or_steps, condition_blob_or_net, condition_not_net)
    else:
        nets_or_steps = _PrependNets(nets_or_steps, condition_not_net)

    def loop_step(step_name):
        return core.scoped_execution_step(
            _get_next_step_name(step_name, name),
            nets_or_steps,
            should_stop_blob=stop_blob,
            **step_kwargs,
        )

    if _IsNets(nets_or_steps):
        # The stop blob is checked after the first net (the condition net), before Not
        # recomputed it: a stale True left by an earlier run must not end the step.
        bool_net = BoolNet((stop_blob, False))
        return Do(name + "/" + control_name, bool_net, loop_step(control_name + "-inner"))
    return loop_step(control_name)


def _RunOnceIf(name, condition_blob_or_net, nets_or_steps):
    """Run the body once if the condition is true (a condition net runs first)."""
    return _LoopWhileTrue(name, "_RunOnceIf", condition_blob_or_net, nets_or_steps, only_once=True)


def _RunOnceIfNot(name, condition_blob_or_net, nets_or_steps):
    """Run the body once if the condition is false."""
    if isinstance(condition_blob_or_net, core.Net):
        condition_blob = GetConditionBlobFromNet(condition_blob_or_net)
        nets_or_steps = _PrependNets(nets_or_steps, condition_blob_or_net)
    else:
        copy_net, condition_blob = _CopyConditionBlobNet(condition_blob_or_net)
        nets_or_steps = _PrependNets(nets_or_steps, copy_net)

    return core.scoped_execution_step(
        _get_next_step_name("_RunOnceIfNot", name),
        nets_or_steps,
        should_stop_blob=condition_blob,
        only_once=True,
    )


def For(name, nets_or_steps, iter_num):
    """Run the body ``iter_num`` times (a counter counted down before each iteration)."""
    init_net = core.Net("init-net")
    iter_cnt = init_net.CreateCounter([], init_count=iter_num)
    iter_net = core.Net("For-iter")
    iter_done = iter_net.CountDown([iter_cnt])

    for_step = core.scoped_execution_step(
        _get_next_step_name("For-inner", name),
        _PrependNets(nets_or_steps, iter_net),
        should_stop_blob=iter_done,
    )
    return Do(name + "/For", Do(name + "/For-init-net", init_net), for_step)


def While(name, condition_blob_or_net, nets_or_steps):
    """Run the body while the condition is true (checked before each iteration)."""
    return _LoopWhileTrue(name, "While", condition_blob_or_net, nets_or_steps)


def Until(name, condition_blob_or_net, nets_or_steps):
    """Run the body until the condition is true (checked after every net or substep)."""
    if isinstance(condition_blob_or_net, core.Net):
        stop_blob = GetConditionBlobFromNet(condition_blob_or_net)
        nets_or_steps = _PrependNets(nets_or_steps, condition_blob_or_net)
    else:
        stop_blob = core.BlobReference(str(condition_blob_or_net))

    return core.scoped_execution_step(
        _get_next_step_name("Until", name), nets_or_steps, should_stop_blob=stop_blob
    )


def _DoLoop(name, control_name, nets_or_steps, stop_blob):
    """``<name>/<control_name>``: reset ``stop_blob`` to False, then a step
    ``<control_name>-inner`` running the body until ``stop_blob`` is true."""
    bool_net = BoolNet((stop_blob, False))
    return Do(
        name + "/" + control_name,
        bool_net,
        core.scoped_execution_step(
            _get_next_step_name(control_name + "-inner", name),
            nets_or_steps,
            should_stop_blob=stop_blob,
        ),
    )


def DoWhile(name, condition_blob_or_net, nets_or_steps):
    """Run the body, then again while the condition is true (checked after the body)."""
    condition_not_net, stop_blob = NotNet(condition_blob_or_net)
    if isinstance(condition_blob_or_net, core.Net):
        nets_or_steps = _AppendNets(nets_or_steps, condition_blob_or_net, condition_not_net)
    else:
        nets_or_steps = _AppendNets(nets_or_steps, condition_not_net)
    return _DoLoop(name, "DoWhile", nets_or_steps, stop_blob)


def DoUntil(name, condition_blob_or_net, nets_or_steps):
    """Run the body, then again until the condition is true.

    With a blob condition that is already true, only the first net or substep runs.
    """
    if not isinstance(condition_blob_or_net, core.Net):
        stop_blob = core.BlobReference(condition_blob_or_net)
        return core.scoped_execution_step(
            _get_next_step_name("DoUntil", name), nets_or_steps, should_stop_blob=stop_blob
        )

    nets_or_steps = _AppendNets(nets_or_steps, condition_blob_or_net)
    stop_blob = GetConditionBlobFromNet(condition_blob_or_net)
    return _DoLoop(name, "DoUntil", nets_or_steps, stop_blob)


def Switch(name, *conditions):
    """Run, in order, every body whose condition is true.

    ``Switch('s', (cond1, body1), (cond2, body2))`` or ``Switch('s', [(c1, b1), ...])``.
    """
    conditions = _MakeList(conditions)
    return core.scoped_execution_step(
        _get_next_step_name("Switch", name),
        [_RunOnceIf(name + "/Switch", cond, step) for cond, step in conditions],
    )


def SwitchNot(name, *conditions):
    """Run, in order, every body whose condition is false."""
    conditions = _MakeList(conditions)
    return core.scoped_execution_step(
        _get_next_step_name("SwitchNot", name),
        [_RunOnceIfNot(name + "/SwitchNot", cond, step) for cond, step in conditions],
    )


def _IfElse(name, control_name, run_true, run_false, condition_blob_or_net, true_body, false_body):
    """``<name>/<control_name>``: ``run_true`` on the true body, then ``run_false`` on the
    false body re-reading the condition blob (just ``run_true`` without a false body)."""
    if not false_body:
        return run_true(name + "/" + control_name, condition_blob_or_net, true_body)

    if isinstance(condition_blob_or_net, core.Net):
        condition_blob = GetConditionBlobFromNet(condition_blob_or_net)
    else:
        condition_blob = condition_blob_or_net

    return Do(
        name + "/" + control_name,
        run_true(name + "/" + control_name + "-true", condition_blob_or_net, true_body),
        run_false(name + "/" + control_name + "-false", condition_blob, false_body),
    )


def If(name, condition_blob_or_net, true_nets_or_steps, false_nets_or_steps=None):
    """Run ``true_nets_or_steps`` if the condition is true, else ``false_nets_or_steps``.

    The false branch re-reads the condition blob after the true branch ran.
    """
    return _IfElse(
        name,
        "If",
        _RunOnceIf,
        _RunOnceIfNot,
        condition_blob_or_net,
        true_nets_or_steps,
        false_nets_or_steps,
    )


def IfNot(name, condition_blob_or_net, true_nets_or_steps, false_nets_or_steps=None):
    """Run ``true_nets_or_steps`` if the condition is false, else ``false_nets_or_steps``."""
    return _IfElse(
        name,
        "IfNot",
        _RunOnceIfNot,
        _RunOnceIf,
        condition_blob_or_net,
        true_nets_or_steps,
        false_nets_or_steps,
    )
