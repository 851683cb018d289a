"""SSA view of nets and the cloning built on it (``Net.Clone`` / ``Net.ClonePartial``).

Re-exported by ``caffe2.python.core``; ``core`` is imported lazily here because it imports
this module.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from caffe2.proto import caffe2_pb2

if TYPE_CHECKING:
    from caffe2.python.core import BlobReference, Net

SSA = list[tuple[list[tuple[str, int]], list[tuple[str, int]]]]


def _core() -> Any:
    from caffe2.python import core

    return core


def get_ssa(net: Any, blob_versions: dict[str, int] | None = None) -> tuple[Any, dict[str, int]]:
    """Per op ([(input, version)], [(output, version)]) and the final blob versions.

    External inputs start at version 0 (and, when the net declares none, so does every
    input read before being written); each write increments the version.
    """
    if blob_versions is None:
        blob_versions = {}
    if isinstance(net, list):
        return [get_ssa(n, blob_versions)[0] for n in net], blob_versions
    proto = net.Proto() if isinstance(net, _core().Net) else net
    assert isinstance(proto, caffe2_pb2.NetDef)
    for i in proto.external_input:
        if i not in blob_versions:
            blob_versions[str(i)] = 0
    ssa: SSA = []
    for op in proto.op:
        if not proto.external_input:
            for i in op.input:
                if i not in blob_versions:
                    blob_versions[i] = 0
        inputs = [(str(i), blob_versions.get(str(i), 0)) for i in op.input]
        for o in op.output:
            blob_versions[str(o)] = blob_versions.get(str(o), 0) + 1
        outputs = [(str(o), blob_versions[str(o)]) for o in op.output]
        ssa.append((inputs, outputs))
    return ssa, blob_versions


def get_undefined_blobs(ssa: SSA) -> set[str]:
    """Names the ops read at version 0, i.e. before anything in the net wrote them."""
    undef: set[str] = set()
    for inputs, _outputs in ssa:
        undef |= {name for (name, ver) in inputs if ver == 0}
    return undef


def get_output_producers(ssa: SSA) -> dict[tuple[str, int], int]:
    """{(blob, version): index of the op that wrote it}."""
    producers = {}
    for i, (_inputs, outputs) in enumerate(ssa):
        for o in outputs:
            producers[o] = i
    return producers


def get_op_ids_in_path(
    ssa: SSA, blob_versions: dict[str, int], inputs: Iterable[Any], outputs: Iterable[Any]
) -> list[int]:
    """Sorted ids of the ops needed to compute outputs from inputs.

    Both are taken at their latest version (``blob_versions``): the walk back through the
    producers stops at the inputs.
    """
    inputs_set = {(str(i), blob_versions[str(i)]) for i in inputs}
    outputs_list = [(str(o), blob_versions[str(o)]) for o in outputs]
    assert inputs_set.isdisjoint(outputs_list)
    producers = get_output_producers(ssa)
    used: set[int] = set()
    while outputs_list:
        o = outputs_list.pop()
        if o not in inputs_set and o in producers:
            op_id = producers[o]
            if op_id not in used:
                used.add(op_id)
                outputs_list.extend(ssa[op_id][0])
    return sorted(used)


# ---- per-op remapping used by Clone ----------------------------------------------------------
def remap_input(op: caffe2_pb2.OperatorDef, blob_name_remapping: dict[str, str]) -> None:
    new_list = [blob_name_remapping.get(b, b) for b in op.input]
    del op.input[:]
    op.input.extend(new_list)


def remap_output(op: caffe2_pb2.OperatorDef, blob_name_remapping: dict[str, str]) -> None:
    new_list = [blob_name_remapping.get(b, b) for b in op.output]
    del op.output[:]
    op.output.extend(new_list)


def remap_proto(argument: caffe2_pb2.Argument, blob_remap: dict[str, str]) -> None:
    """Replace a net argument by a remapped clone named 'cloned_sub_net'."""
    subnet = _core().Net(argument.n)
    cloned = subnet.Clone("cloned_sub_net", blob_remap)
    argument.n.CopyFrom(cloned.Proto())


def _recurrent_network_op_remap(
    op: caffe2_pb2.OperatorDef, prefix: str, blob_remap: dict[str, str]
) -> None:
    def remapped(blob: bytes | str) -> bytes:
        if isinstance(blob, bytes):
            blob = blob.decode("utf-8")
        return blob_remap.get(blob, blob).encode("utf-8")

    for argument in op.arg:
        if len(argument.strings) > 0:
            for i in range(len(argument.strings)):
                argument.strings[i] = remapped(argument.strings[i])
        elif argument.name == "timestep":
            argument.s = remapped(argument.s)
        elif argument.name.endswith("step_net") and argument.HasField("n"):
            remap_proto(argument, blob_remap)


def _control_op_remap(op: caffe2_pb2.OperatorDef, prefix: str, blob_remap: dict[str, str]) -> None:
    net_arg_names = ["then_net", "else_net"] if op.type == "If" else ["loop_net", "cond_net"]
    core = _core()
    for argument in op.arg:
        if argument.name in net_arg_names:
            assert argument.n, f"Expected non empty net in {op.type}'s {argument.name} argument"
            # NAMING: registers the subnet's name, then '<that name>_remapped'.
            subnet = core.Net(argument.n)
            remapped = subnet.Clone(
                name=(subnet._net.name if subnet._net.name else "") + "_remapped",
                blob_remap=blob_remap,
            )
            argument.n.CopyFrom(remapped.Proto())


DEFAULT_REMAP_FUNCS: dict[str, Callable[..., None]] = {
    "RecurrentNetwork": _recurrent_network_op_remap,
    "RecurrentNetworkGradient": _recurrent_network_op_remap,
    "If": _control_op_remap,
    "While": _control_op_remap,
}


def clone_net(
    net: Net,
    name: str,
    blob_remap: dict[str, str] | None = None,
    op_id_mask: list[int] | None = None,
    remap_funcs: dict[str, Callable[..., None]] | None = None,
    keep_schema: bool = True,
) -> Net:
    """Implementation of ``Net.Clone``."""
    core = _core()
    funcs = dict(DEFAULT_REMAP_FUNCS)
    funcs.update(remap_funcs or {})
    proto = net._net
    new_proto = caffe2_pb2.NetDef()
    new_proto.CopyFrom(proto)
    new_proto.name = name
    if blob_remap is None:
        blob_remap = {}
    if op_id_mask is None:
        op_id_mask = list(range(len(proto.op)))

    def remapped(blob: Any) -> str:
        blob_str = str(blob)
        return str(blob_remap.get(blob_str, blob_str))

    def remap_list(proto_list: Any) -> None:
        new_list = [remapped(b) for b in proto_list]
        del proto_list[:]
        proto_list.extend(new_list)

    def remap_op(op: caffe2_pb2.OperatorDef) -> caffe2_pb2.OperatorDef:
        new_op = caffe2_pb2.OperatorDef()
        new_op.CopyFrom(op)
        remap_list(new_op.input)
        remap_list(new_op.output)
        if new_op.type in funcs:
            funcs[new_op.type](new_op, (name + "/") if name else "", blob_remap)
        return new_op

    del new_proto.op[:]
    new_proto.op.extend([remap_op(proto.op[op_id]) for op_id in op_id_mask])
    remap_list(new_proto.external_input)
    remap_list(new_proto.external_output)
    new_net = core.Net(new_proto)

    if keep_schema and (net._input_record or net._output_record):
        from caffe2.python import schema

        if net._input_record:
            new_net._input_record = schema.from_blob_list(
                net._input_record,
                [
                    core.BlobReference(remapped(b), net=new_net)
                    for b in net._input_record.field_blobs()
                ],
            )
        if net._output_record:
            new_net._output_record = schema.from_blob_list(
                net._output_record,
                [
                    core.BlobReference(remapped(b), net=new_net)
                    for b in net._output_record.field_blobs()
                ],
            )
    # Shallow on purpose (as Caffe2): the attribute lists are shared with the original.
    new_net._attr_dict.update(net._attr_dict)
    return new_net


def clone_partial(
    net: Net,
    name: str,
    inputs: Any,
    outputs: list[Any],
    remap_funcs: dict[str, Callable[..., None]] | None = None,
) -> tuple[Net, list[BlobReference]]:
    """Implementation of ``Net.ClonePartial``."""
    is_pair_list = isinstance(inputs, list) and all(
        isinstance(i, tuple) and len(i) == 2 for i in inputs
    )
    if not isinstance(inputs, dict):
        inputs = OrderedDict(inputs) if is_pair_list else OrderedDict((i, i) for i in inputs)
    for output in outputs:
        assert net.BlobIsDefined(output), f"{output} is not defined"
    input_names = {str(k): str(v) for k, v in inputs.items()}
    output_names = [str(o) for o in outputs]
    blob_versions = {str(i): 0 for i in inputs}
    ssa, blob_versions = get_ssa(net._net, blob_versions)
    used_op_ids = get_op_ids_in_path(ssa, blob_versions, inputs, outputs)
    disallowed_op_ids = get_op_ids_in_path(ssa, blob_versions, [], inputs)
    assert len(set(used_op_ids) & set(disallowed_op_ids)) == 0, (
        "Cannot partially clone net: some of the ops required would generate the given input."
    )
    sub_ssa = [op for i, op in enumerate(ssa) if i in used_op_ids]
    undef_blobs = get_undefined_blobs(sub_ssa) - set(input_names)
    prefix = (name + "/") if name else ""

    def remap(blob_name: str) -> str:
        if blob_name in input_names:
            return input_names[blob_name]
        if blob_name in undef_blobs:
            return blob_name
        return prefix + blob_name

    blob_mapping = {b: remap(b) for b in blob_versions}
    new_net = clone_net(net, name, blob_mapping, used_op_ids, remap_funcs)
    new_in = [blob_mapping[i] for i in input_names] + sorted(undef_blobs)
    new_out = [blob_mapping[o] for o in output_names]
    new_proto = new_net.Proto()
    del new_proto.external_input[:]
    new_proto.external_input.extend(new_in)
    new_net._external_input_map = set(new_in)
    del new_proto.external_output[:]
    new_proto.external_output.extend(new_out)
    return new_net, [new_net.GetBlobRef(o) for o in new_out]


def clone_and_bind_net(
    net: Any,
    name: str,
    prefix: str,
    blob_remap: dict[str, str] | None = None,
    inputs: Any = None,
    keep_schema: bool = True,
) -> tuple[Any, dict[str, str]]:
    """Caffe2's ``core.clone_and_bind_net``: a clone of net whose input record is bound to
    ``inputs``, other undefined blobs kept, and every blob it defines prefixed by prefix."""
    from caffe2.python.schema import Field

    if blob_remap is None:
        blob_remap = {}
    if inputs is not None:
        if not isinstance(inputs, Field):
            raise TypeError(f"inputs must be a schema.Field, got {type(inputs).__name__}")
        original = net.input_record()
        if original is None:
            raise ValueError(
                f"Net {net.Name()} has no input record: call net.set_input_record() before "
                "using it as a processor."
            )
        diff = set(original.field_names()) - set(inputs.field_names())
        if diff:
            raise ValueError(
                f"Schemas don't match, extra fields {sorted(diff)} found in the net "
                f"{net.Name()}. original: {original.field_names()}; inputs: "
                f"{inputs.field_names()}"
            )
        original_mapping = dict(zip(original.field_names(), original.field_blobs(), strict=True))
        for fn, fb in zip(inputs.field_names(), inputs.field_blobs(), strict=True):
            if fn in original_mapping:
                blob_remap[str(original_mapping[fn])] = str(fb)
    ssa, blob_versions = get_ssa(net.Proto())
    undef_blobs = get_undefined_blobs(ssa)
    for blob in blob_versions:
        if blob in blob_remap:
            continue
        if blob in undef_blobs:
            blob_remap[blob] = blob
        else:
            blob_remap[blob] = prefix + blob
    cloned_net = net.Clone(name, blob_remap, keep_schema=keep_schema)
    if not keep_schema and inputs:
        cloned_net.set_input_record(inputs)
    return cloned_net, blob_remap
