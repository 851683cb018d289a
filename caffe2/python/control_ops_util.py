"""Building ``If`` and ``While`` operators whose branches run through ``Do`` (spec 9).

A branch net runs inside a ``Do`` op, in an inner workspace that sees only the *outer* blobs
bound to it. Which blobs are outer is decided by the lexical scope, the set of blob names
visible where the control-flow block starts:

- a blob the branch reads before writing it (an undefined input) must be in the scope;
- a blob the branch writes is outer if its name is in the scope, else it is local to the
  branch and vanishes with the inner workspace.

Every ``Do`` gets a workspace-stack blob, created by a ``CreateScope`` op placed in the host
net before the ``If``/``While`` op: ``<host net>/workspace_if_then``, ``.../workspace_if_else``,
``.../workspace_loop_body``, ``.../workspace_loop_cond`` (with the name scope prepended and
``_auto_k`` appended when taken; NAMING, spec 9).

Outer names are processed in sorted order, so the protos built are the same in every run.
"""

from __future__ import annotations

from caffe2.python import core

__all__ = ["get_external_blob_names", "add_if_op", "add_while_op"]


def get_external_blob_names(net, lexical_scope):
    """``(input_names, output_names)`` of ``net`` relative to ``lexical_scope``.

    ``input_names``: the blobs the net reads before any of its ops writes them; each must be
    in the scope ("Input blob X is undefined"). ``output_names``: the blobs the net's ops
    write whose names are in the scope. Both are sets of str.
    """
    net_proto = net.Proto()
    net_ssa, _ = core.get_ssa(net_proto)
    input_names = {str(b) for b in core.get_undefined_blobs(net_ssa)}
    for input_name in sorted(input_names):
        assert input_name in lexical_scope, "Input blob " + input_name + " is undefined"
    output_names = set()
    for op in net_proto.op:
        for output in op.output:
            if output in lexical_scope:
                output_names.add(output)
    return input_names, output_names


def _refs(names):
    return [core.BlobReference(name=b, net=None) for b in names]


def _bindings(input_names, output_names):
    """Inner names and their indices into (inputs + outputs) for a Do op (identity binding:
    each outer blob is seen under its own name inside)."""
    ordered = list(input_names) + list(output_names)
    outer = sorted(set(input_names) | set(output_names))
    return outer, [ordered.index(b) for b in outer]


def _add_do_net(do_net_name, body_net, input_names, output_names, ws_blob, **kwargs):
    """A net named ``do_net_name`` holding one Do op that runs ``body_net``."""
    inner, idx = _bindings(input_names, output_names)
    inputs = _refs(input_names) + [ws_blob]
    outputs = _refs(output_names) + [ws_blob]
    do_net = core.Net(do_net_name)
    do_net.Do(
        inputs,
        outputs,
        net=body_net.Proto(),
        inner_blobs=inner,
        outer_blobs_idx=idx,
        **kwargs,
    )
    do_net.AddExternalOutput(*outputs)
    return do_net


def add_if_op(if_net, cond_blob, lexical_scope, then_net, else_net=None):
    """Append to ``if_net``: CreateScope op(s) and an If op running ``then_net`` (and
    ``else_net``) when the scalar bool ``cond_blob`` is true (false).

    The If op's extra inputs are the union of the branches' outer inputs, its outputs the
    union of their outer outputs; the workspace blobs are appended to both. The outputs
    become external outputs of ``if_net``.
    """
    then_inputs, then_outputs = get_external_blob_names(then_net, lexical_scope)
    else_inputs, else_outputs = set(), set()
    if else_net:
        else_inputs, else_outputs = get_external_blob_names(else_net, lexical_scope)

    if_inputs = [cond_blob] + _refs(sorted(then_inputs | else_inputs))
    if_outputs = _refs(sorted(then_outputs | else_outputs))

    # The net's name keeps the workspace blob unique across nets.
    then_ws = if_net.NextScopedBlob(if_net.Name() + "/workspace_if_then")
    if_inputs.append(then_ws)
    if_outputs.append(then_ws)
    do_then_net = _add_do_net(
        "do_then_net", then_net, sorted(then_inputs), sorted(then_outputs), then_ws
    )
    if_args = {"then_net": do_then_net.Proto()}

    else_ws = None
    if else_net:
        else_ws = if_net.NextScopedBlob(if_net.Name() + "/workspace_if_else")
        if_inputs.append(else_ws)
        if_outputs.append(else_ws)
        do_else_net = _add_do_net(
            "do_else_net", else_net, sorted(else_inputs), sorted(else_outputs), else_ws
        )
        if_args["else_net"] = do_else_net.Proto()

    if_net.CreateScope([], [then_ws])
    if else_ws:
        if_net.CreateScope([], [else_ws])
    if_net.If(if_inputs, if_outputs, **if_args)
    if_net.AddExternalOutput(*if_outputs)


def add_while_op(while_net, cond_blob, lexical_scope, loop_body_net, condition_body_net=None):
    """Append to ``while_net``: CreateScope op(s) and a While op looping ``loop_body_net``
    while the scalar bool ``cond_blob`` is true.

    The body's outer outputs are also inputs (the body may run zero times). The body's Do
    uses ``copy_external_blobs``. With ``condition_body_net``, the condition is recomputed
    by it (through its own Do) before every iteration; it must write ``cond_blob``. If
    ``cond_blob`` is not in the lexical scope, a ``ConstantFill`` (False) creating it is
    placed before the While op, so that it exists when the op is instantiated.
    """
    input_names, output_names = get_external_blob_names(loop_body_net, lexical_scope)
    # The loop may run zero times: what it writes must exist before.
    input_names |= output_names
    body_ins, body_outs = sorted(input_names), sorted(output_names)

    while_inputs = [cond_blob] + _refs(body_ins)
    while_outputs = _refs(body_outs)

    body_ws = while_net.NextScopedBlob(while_net.Name() + "/workspace_loop_body")
    while_inputs.append(body_ws)
    while_outputs.append(body_ws)
    do_loop_body_net = _add_do_net(
        "do_loop_body_net",
        loop_body_net,
        body_ins,
        body_outs,
        body_ws,
        copy_external_blobs=True,
    )
    while_args = {"loop_net": do_loop_body_net.Proto()}

    cond_ws = None
    if condition_body_net:
        cond_input_names, cond_output_names = get_external_blob_names(
            condition_body_net, lexical_scope
        )
        writes_cond = any(str(cond_blob) in op.output for op in condition_body_net.Proto().op)
        assert writes_cond, "Condition net does not write into condition blob"
        cond_output_names.add(str(cond_blob))
        cond_ins, cond_outs = sorted(cond_input_names), sorted(cond_output_names)

        cond_ws = while_net.NextScopedBlob(while_net.Name() + "/workspace_loop_cond")
        condition_net = _add_do_net(
            "do_loop_condition_net", condition_body_net, cond_ins, cond_outs, cond_ws
        )
        while_args["cond_net"] = condition_net.Proto()

        while_inputs += [b for b in _refs(cond_ins) + [cond_ws] if str(b) not in input_names]
        while_outputs += [b for b in _refs(cond_outs) + [cond_ws] if str(b) not in output_names]

        if str(cond_blob) not in lexical_scope:
            while_net.ConstantFill([], cond_blob, dtype=core.DataType.BOOL, value=False)

    while_net.CreateScope([], [body_ws])
    if cond_ws:
        while_net.CreateScope([], [cond_ws])
    while_net.While(while_inputs, while_outputs, **while_args)
    while_net.AddExternalOutput(*while_outputs)
