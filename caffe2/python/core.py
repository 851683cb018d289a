"""``caffe2.python.core``: blob references, operator creation, nets, steps and plans.

Everything here builds protobuf messages (OperatorDef, NetDef, ExecutionStep, PlanDef) that
the runtime instantiates; nothing runs until ``workspace`` is asked to. Names the library
invents (net names, auto blob names) follow Caffe2 exactly, because users' saved protos and
checkpoints depend on them (spec runtime.md 5).

Parts live in private modules and are re-exported here: the registry, engine and device
helpers (``_core_registry``), BlobReference and CreateOperator (``_core_blob``), SSA helpers
and cloning (``_core_ssa``), gradients (``_core_gradients``), ExecutionStep and Plan
(``_core_steps``). ``Net`` itself is defined here.
"""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from caffe2.proto import caffe2_pb2
from caffe2.python import _core_ssa, scope, workspace
from caffe2.python._core_blob import (
    BlobReference,
    CreateOperator,
    CreatePythonOperator,
    ScopedBlobReference,
    ScopedName,
    _extract_stacktrace,
    _get_blob_ref,
    _is_immediate,
    _make_python_builder,
    _recover_record_by_prefix,
    _RectifyInputOutput,
    _RegisterPythonImpl,
    output_to_list,
)
from caffe2.python._core_gradients import (
    IR,
    GetIndexFromGradientList,
    GradGenMeta,
    GradientRegistry,
    GradientSlice,
    OpSSA,
    SparseGradGenMeta,
)
from caffe2.python._core_registry import (
    _REGISTERED_OPERATORS,
    DataType,
    DeviceOption,
    GetGlobalInitArgs,
    GlobalInit,
    InferBlobDevices,
    InferOpBlobDevices,
    InferOpDeviceAsBlobDevices,
    IsOperator,
    IsOperatorWithEngine,
    RefreshRegisteredOperators,
    SetEnginePref,
    SetGlobalEnginePref,
    SetOpEnginePref,
    SetPerOpEnginePref,
    _GetRegisteredOperators,
    _nearby_opnames,
    _not_registered_message,
    device_option_equal,
    op_registry_key,
)
from caffe2.python._core_ssa import (
    DEFAULT_REMAP_FUNCS,
    clone_and_bind_net,
    get_op_ids_in_path,
    get_output_producers,
    get_ssa,
    get_undefined_blobs,
    remap_input,
    remap_output,
)
from caffe2.python._core_steps import (
    ExecutionStep,
    Plan,
    _add_net_to_dict,
    add_nets_in_order,
    execution_step,
    scoped_execution_step,
    to_execution_step,
)

__all__ = [
    "DEFAULT_REMAP_FUNCS", "IR", "BlobReference", "CreateOperator", "CreatePythonOperator",
    "DataType", "DeviceOption", "DeviceScope", "ExecutionStep", "GetGlobalInitArgs",
    "GetIndexFromGradientList", "GlobalInit", "GradGenMeta", "GradientRegistry",
    "GradientSlice", "InferBlobDevices", "InferOpBlobDevices", "InferOpDeviceAsBlobDevices",
    "IsOperator", "IsOperatorWithEngine", "NameScope", "Net", "OpSSA", "Plan",
    "RefreshRegisteredOperators", "ScopedBlobReference", "ScopedName", "SetEnginePref",
    "SetGlobalEnginePref", "SetOpEnginePref", "SetPerOpEnginePref", "SparseGradGenMeta",
    "add_nets_in_order", "clone_and_bind_net", "device_option_equal", "execution_step",
    "get_net_name",
    "get_op_ids_in_path", "get_output_producers", "get_ssa", "get_undefined_blobs",
    "output_to_list", "remap_input", "remap_output", "scoped_execution_step",
    "to_execution_step", "op_registry_key", "_add_net_to_dict", "_RectifyInputOutput",
    "_REGISTERED_OPERATORS", "_GetRegisteredOperators", "_RegisterPythonImpl",
    "_get_blob_ref", "_nearby_opnames", "_not_registered_message", "_extract_stacktrace",
    "_is_immediate", "_make_python_builder", "_recover_record_by_prefix",
]  # fmt: skip

NameScope = scope.NameScope
DeviceScope = scope.DeviceScope


# ---- small helpers ------------------------------------------------------------------------
def get_net_name(netlike: Any) -> Any:
    """The name of a Net or NetDef; anything else is returned as is."""
    if isinstance(netlike, Net):
        return netlike._net.name
    if isinstance(netlike, caffe2_pb2.NetDef):
        return netlike.name
    return netlike


# ---- Net -----------------------------------------------------------------------------------
class Net:
    """A NetDef under construction; ``net.OpType(inputs, outputs, **args)`` appends an op."""

    _net_names_used: set[str] = set()
    _net_names_lock = threading.Lock()
    operator_registry_: dict[str, Any] = {}

    @staticmethod
    def current_prefix() -> str:
        """The name of the innermost active NetBuilder, or ''."""
        try:
            from caffe2.python.net_builder import NetBuilder
        except ModuleNotFoundError as e:  # no net_builder module: no builder can be active
            if e.name != "caffe2.python.net_builder":
                raise
            return ""
        builder = NetBuilder.current(required=False)
        return builder.name if builder else ""

    @staticmethod
    def _get_next_net_name(basename: str | None) -> str:
        basename = "/".join(x for x in [Net.current_prefix(), basename] if x)
        name = basename
        with Net._net_names_lock:
            next_idx = 1
            while name in Net._net_names_used:
                name = basename + "_" + str(next_idx)
                next_idx += 1
            Net._net_names_used.add(name)
        return name

    def __init__(self, name_or_proto: str | caffe2_pb2.NetDef | None) -> None:
        self._input_record = None
        self._output_record = None
        self._registered_blob_names: set[str] = set()
        self._recreate_lookup_tables = False
        self._op_outputs: set[str] = set()
        self._external_input_map: set[str] = set()
        self._attr_dict: defaultdict[str, list[Any]] = defaultdict(list)
        if type(name_or_proto) is caffe2_pb2.NetDef:
            self._net = caffe2_pb2.NetDef()
            self._net.CopyFrom(name_or_proto)
            self._external_input_map.update(self._net.external_input)
            existing = set()
            for op in self._net.op:
                self._op_outputs.update(op.output)
                existing.update(op.input)
                existing.update(op.output)
            prefix = self._net.name + "_blob_"
            indices = []
            for s in existing:
                if s.startswith(prefix):
                    # QUIRK kept from Caffe2: only one character after the prefix is parsed.
                    try:
                        indices.append(int(s[len(prefix)]))
                    except (ValueError, IndexError):
                        pass
            self._next_name_index = max(indices) + 1 if indices else 0
            name = self._net.name
        else:
            name = name_or_proto
            self._net = caffe2_pb2.NetDef()
            self._next_name_index = 0
        self._net.name = Net._get_next_net_name(name)

    # ---- identity ----------------------------------------------------------------------
    def Name(self) -> str:
        return self._net.name

    def __str__(self) -> str:
        return self._net.name

    def Proto(self) -> caffe2_pb2.NetDef:
        """The live NetDef (edits are allowed: lookup tables are rebuilt on next use)."""
        self._InvalidateLookupTables()
        return self._net

    # ---- attributes ----------------------------------------------------------------------
    def add_attribute(self, name: str, obj: Any) -> None:
        """Attach obj to this net under name (a list per name)."""
        self._attr_dict[name].append(obj)

    def get_attributes(self, name: str) -> list[Any]:
        """The objects attached under name ([] if none)."""
        return self._attr_dict.get(name, [])

    # ---- lookup tables -------------------------------------------------------------------
    def _InvalidateLookupTables(self) -> None:
        self._recreate_lookup_tables = True

    def _RecreateLookupTables(self) -> None:
        self._op_outputs = {o for op in self._net.op for o in op.output}
        self._external_input_map = set(self._net.external_input)
        self._recreate_lookup_tables = False

    def _CheckLookupTables(self) -> None:
        """Assert the lookup tables cover the proto's op outputs and external inputs."""
        test_op_outputs = {o for op in self._net.op for o in op.output}
        test_external_inp = set(self._net.external_input)
        assert test_op_outputs.difference(self._op_outputs) == set()
        assert test_external_inp.difference(self._external_input_map) == set()

    def _ExtendOps(self, new_ops: Iterable[caffe2_pb2.OperatorDef]) -> None:
        new_ops = list(new_ops)
        self._net.op.extend(new_ops)
        for op in new_ops:
            self._op_outputs.update(str(o) for o in op.output)

    def extend_ops(self, new_ops: Iterable[caffe2_pb2.OperatorDef]) -> None:
        """Append op protos and register their outputs as defined."""
        self._ExtendOps(new_ops)

    # ---- blob queries --------------------------------------------------------------------
    def BlobIsDefined(self, blob: Any) -> bool:
        """Whether blob is an op output or an external input of this net."""
        if self._recreate_lookup_tables:
            self._RecreateLookupTables()
        name = str(blob)
        return name in self._op_outputs or name in self._external_input_map

    def UsesBlob(self, blob: Any) -> bool:
        """Whether some op reads blob, or it is an external input."""
        blob = str(blob)
        for op in self._net.op:
            if blob in op.input:
                return True
        return blob in self._external_input_map

    def UsedBlobNames(self) -> set[str]:
        """Every op input and output plus the external inputs and outputs."""
        names: set[str] = set()
        for op in self._net.op:
            names.update(op.input)
            names.update(op.output)
        names.update(self._net.external_input)
        names.update(self._net.external_output)
        return names

    def GetBlobRef(self, blob_name: Any) -> BlobReference:
        """A reference to a blob this net defines (KeyError otherwise)."""
        blob_name = str(blob_name)
        if not self.BlobIsDefined(blob_name):
            raise KeyError(f"Net does not define blob {blob_name}")
        return BlobReference(blob_name, self)

    def is_external_input(self, blob: Any) -> bool:
        return str(blob) in self._external_input_map

    # ---- naming --------------------------------------------------------------------------
    def NextName(self, prefix: str | None = None, output_id: int | None = None) -> str:
        """An unused blob name: ``<net>/<prefix>[_k][:id]`` or ``<net>_blob_<k>``."""
        if prefix:
            base = self._net.name + "/" + prefix
            name = base
            if output_id is not None:
                name += ":" + str(output_id)
            index = 2
            while self.BlobIsDefined(str(ScopedBlobReference(name))):
                name = base + "_" + str(index)
                if output_id is not None:
                    name += ":" + str(output_id)
                index += 1
        else:
            name = self._net.name + "_blob_" + str(self._next_name_index)
            self._next_name_index += 1
        return str(name)

    def NextBlob(self, prefix: str = "unnamed") -> BlobReference:
        """A blob name neither handed out before by NextBlob nor defined: prefix[_auto_i]."""
        base = BlobReference(prefix)
        blob = base
        index = 0
        while str(blob) in self._registered_blob_names or self.BlobIsDefined(blob):
            blob = base + "_auto_" + str(index)
            index += 1
        self._registered_blob_names.add(str(blob))
        return blob

    def NextScopedBlob(self, prefix: str = "unnamed") -> BlobReference:
        """NextBlob of the scoped prefix."""
        return self.NextBlob(ScopedName(prefix))

    # ---- external inputs and outputs -----------------------------------------------------
    def AddExternalInput(self, *inputs: Any) -> BlobReference | list[BlobReference]:
        """Declare external inputs; returns one reference or a list (without a net)."""
        assert len(inputs) > 0
        if self._recreate_lookup_tables:
            self._RecreateLookupTables()
        for inp in inputs:
            name = str(inp)
            assert name not in self._external_input_map, (
                f"Net already contains an input named {name}"
            )
        refs = []
        for inp in inputs:
            name = str(inp)
            self._net.external_input.append(name)
            self._external_input_map.add(name)
            refs.append(_get_blob_ref(name))
        return refs[0] if len(refs) == 1 else refs

    def AddExternalOutput(self, *outputs: BlobReference) -> None:
        """Declare defined blobs as external outputs (duplicates are kept)."""
        for output in outputs:
            assert isinstance(output, BlobReference)
            assert self.BlobIsDefined(output), f"{output} is not defined"
        for output in outputs:
            self.Proto().external_output.append(str(output))

    def AddExternalInputs(self, *inputs: Any) -> BlobReference | list[BlobReference]:
        return self.AddExternalInput(*inputs)

    def AddExternalOutputs(self, *outputs: BlobReference) -> None:
        self.AddExternalOutput(*outputs)

    def AddScopedExternalInputs(self, *inputs: Any) -> list[BlobReference]:
        res = self.AddExternalInput(*[ScopedBlobReference(b) for b in inputs])
        return res if isinstance(res, list) else [res]

    def AddScopedExternalOutputs(self, *outputs: Any) -> None:
        return self.AddExternalOutput(*[ScopedBlobReference(b) for b in outputs])

    @property
    def external_inputs(self) -> list[BlobReference]:
        return [_get_blob_ref(x) for x in self._net.external_input]

    @property
    def external_outputs(self) -> list[BlobReference]:
        return [_get_blob_ref(x) for x in self._net.external_output]

    # ---- records ---------------------------------------------------------------------------
    def set_input_record(self, input_record: Any) -> Any:
        """Set the input schema; creates its blobs if it has none."""
        from caffe2.python import schema

        assert self._input_record is None or (
            input_record.has_blobs()
            and set(input_record.field_blobs()) == set(self._input_record.field_blobs())
        ), "Input schema cannot be reset"
        if not input_record.has_blobs():
            with NameScope(self.Name()):
                self._input_record = schema.NewRecord(self, input_record)
        else:
            self._input_record = input_record
            for blob in input_record.field_blobs():
                if blob not in self.external_inputs:
                    self.AddExternalInput(blob)
        return self._input_record

    def recover_input_record_by_prefix(self, prefix: str) -> None:
        record = _recover_record_by_prefix(self._net.external_input, prefix)
        if record:
            self.set_input_record(record)

    def set_output_record(self, record: Any) -> None:
        """Set the output schema; its blobs must be defined and become external outputs."""
        assert self._output_record is None or (
            record.has_blobs()
            and set(record.field_blobs()) == set(self._output_record.field_blobs())
        ), "Output schema cannot be reset"
        for blob in record.field_blobs():
            assert self.BlobIsDefined(blob), f"{blob} is not defined"
        for blob in record.field_blobs():
            self.AddExternalOutput(blob)
        self._output_record = record

    def recover_output_record_by_prefix(self, prefix: str) -> None:
        record = _recover_record_by_prefix(self._net.external_output, prefix)
        if record:
            self.set_output_record(record)

    def AppendOutputRecordField(self, field_name: str, record: Any) -> None:
        from caffe2.python import schema

        assert self._output_record is not None, "Tried to append to missing output record"
        for blob in record.field_blobs():
            assert self.BlobIsDefined(blob)
        for blob in record.field_blobs():
            self.AddExternalOutput(blob)
        self._output_record = self._output_record + schema.Struct((field_name, record))

    def input_record(self) -> Any:
        return self._input_record

    def output_record(self) -> Any:
        return self._output_record

    # ---- composition -----------------------------------------------------------------------
    def AppendNet(self, net: Net, device_option: caffe2_pb2.DeviceOption | None = None) -> Net:
        """Append another net's ops and its not-yet-known external inputs and outputs."""
        assert isinstance(net, Net)
        if self._recreate_lookup_tables:
            self._RecreateLookupTables()
        for i in net.Proto().external_input:
            if i not in self._net.external_input and i not in self._op_outputs:
                self._net.external_input.append(i)
                self._external_input_map.add(i)
        self._net.external_output.extend(
            [o for o in net.Proto().external_output if o not in self._net.external_output]
        )
        ops = list(net.Proto().op)
        if device_option is not None:
            copied = []
            for op in ops:
                new_op = caffe2_pb2.OperatorDef()
                new_op.CopyFrom(op)
                new_op.device_option.CopyFrom(device_option)
                copied.append(new_op)
            ops = copied
        self._ExtendOps(ops)
        return self

    def Clone(
        self,
        name: str,
        blob_remap: dict[str, str] | None = None,
        op_id_mask: list[int] | None = None,
        remap_funcs: dict[str, Callable[..., Any]] | None = None,
        keep_schema: bool = True,
    ) -> Net:
        """A copy named name (suffixed if taken) with ops and blobs selected and renamed."""
        return _core_ssa.clone_net(self, name, blob_remap, op_id_mask, remap_funcs, keep_schema)

    def ClonePartial(
        self,
        name: str,
        inputs: Any,
        outputs: list[Any],
        remap_funcs: dict[str, Callable[..., Any]] | None = None,
    ) -> tuple[Net, list[BlobReference]]:
        """A net with only the ops computing outputs from inputs; internals under name/."""
        return _core_ssa.clone_partial(self, name, inputs, outputs, remap_funcs)

    # ---- convenience ops -------------------------------------------------------------------
    def Const(self, array: Any, blob_out: Any = None, dtype: Any = None) -> BlobReference:
        """A fill op producing array (a bool gives a BOOL scalar ConstantFill)."""
        if isinstance(array, bool):
            return self.ConstantFill([], blob_out or 1, dtype=DataType.BOOL, value=array)
        array = np.array(array) if dtype is None else np.array(array, dtype=dtype)

        def do_set(operator: Callable[..., Any]) -> BlobReference:
            return operator([], blob_out or 1, shape=array.shape, values=array.flatten().tolist())

        if array.dtype == np.int32:
            return do_set(self.GivenTensorIntFill)
        if array.dtype == np.int64:
            return do_set(self.GivenTensorInt64Fill)
        if _is_string_array(array):
            return do_set(self.GivenTensorStringFill)
        if array.dtype == np.bool_:
            return do_set(self.GivenTensorBoolFill)
        if array.dtype.kind in "iuf":
            # Other numeric types become float32 (Caffe2 passed int16/uint8... values as ints,
            # which GivenTensorFill cannot read).
            array = array.astype(np.float64)
        return do_set(self.GivenTensorFill)

    def LogInfo(self, *msg_or_blobs: Any) -> None:
        """Print each message (as a string tensor) or blob when the net runs."""
        for msg_or_blob in msg_or_blobs:
            if not isinstance(msg_or_blob, BlobReference):
                blob = self.GivenTensorStringFill(
                    [], self.NextName("log"), shape=[], values=[msg_or_blob]
                )
            else:
                blob = msg_or_blob
            self.Print(blob, [])

    def DeduplicateGradientSlices(self, g: GradientSlice, aggregator: str = "sum") -> GradientSlice:
        """Merge the rows of a sparse gradient that share an index (sum or mean)."""
        assert isinstance(g, GradientSlice)
        unique, remapping = self.Unique([g.indices], 2, engine="SparseHash")
        if aggregator.lower() == "sum":
            new_g = self.UnsortedSegmentSum([g.values, remapping], 1)
        elif aggregator.lower() == "mean":
            new_g = self.UnsortedSegmentMean([g.values, remapping], 1)
        else:
            raise ValueError(f"{aggregator} is not supported")
        return GradientSlice(indices=unique, values=new_g)

    # ---- devices and seeds -----------------------------------------------------------------
    def RunAllOnGPU(self, gpu_id: int = 0, use_cudnn: bool = False) -> None:
        """Set the net's device option to CUDA gpu_id (and the CUDNN engine on every op)."""
        self._net.device_option.CopyFrom(DeviceOption(caffe2_pb2.CUDA, gpu_id))
        if use_cudnn:
            for op in self._net.op:
                op.engine = "CUDNN"

    def RunAllOnMKL(self) -> None:
        """Set the net's device option to MKLDNN."""
        option = caffe2_pb2.DeviceOption()
        option.device_type = caffe2_pb2.MKLDNN
        self._net.device_option.CopyFrom(option)

    def set_rand_seed(
        self, seed: int = 100, sequence_seed: bool = True, seed_on_op_def: bool = False
    ) -> None:
        """Give every op a random seed: seed + i, a hash of the op, or seed."""
        assert not (sequence_seed and seed_on_op_def), (
            "sequence_seed and seed_on_op_def cannot be both set to True."
        )
        for i, op in enumerate(self.Proto().op):
            if sequence_seed:
                curr_seed = seed + i
            elif seed_on_op_def:
                # A stable digest (Python's str hash changes from process to process).
                digest = hashlib.sha1((str(op) + str(seed)).encode("utf-8")).digest()
                curr_seed = int.from_bytes(digest[:8], "little") % np.iinfo(np.uint32).max
            else:
                curr_seed = seed
            op.device_option.random_seed = curr_seed

    # ---- gradients ------------------------------------------------------------------------
    def AddGradientOperators(self, ys: Any, skip: int = 0) -> dict[BlobReference, Any]:
        """Append the backward pass of ops[skip:] for ys; returns {blob: gradient}."""
        grad_ops, input_to_grad = GradientRegistry.GetBackwardPass(self._net.op[skip:], ys)
        if _is_immediate():
            for op in grad_ops:
                workspace.RunOperatorImmediate(op)
        self._ExtendOps(grad_ops)
        return input_to_grad

    # ---- tracebacks -----------------------------------------------------------------------
    def PopulateProtoWithFileName(self) -> None:
        """Name each op ``file:line:function`` of the code that created it."""
        net_tb = workspace.operator_tracebacks.get(self.Name(), None)
        if net_tb is not None:
            for idx, op in enumerate(self.Proto().op):
                if idx in net_tb:
                    op.name = ":".join(map(str, net_tb[idx][0]))

    # ---- Python ops ------------------------------------------------------------------------
    def Python(
        self,
        f: Any,
        grad_f: Any = None,
        python_func_type: Any = None,
        pass_workspace: bool = False,
        grad_output_indices: list[int] | None = None,
        grad_input_indices: list[int] | None = None,
    ) -> Callable[..., Any]:
        """A callable ``(inputs, outputs, **kw)`` adding a ``Python`` op that runs f.

        f is a function (registered now, under a token) or a builder tuple
        ``(func, args, kwargs)`` that is pickled into the op and called at net creation.
        """
        assert IsOperator("Python")
        f_builder = _make_python_builder(f)
        grad_f_builder = _make_python_builder(grad_f)
        assert (not grad_f) or ((not f_builder) == (not grad_f_builder)), (
            "A tuple has to be passed to both f and grad_f or neither."
        )
        core_kwargs: dict[str, Any] = {}
        if f_builder:
            core_kwargs["pickled_builder"] = f_builder
            core_kwargs["pickled_grad_builder"] = grad_f_builder
            core_kwargs["pass_workspace"] = pass_workspace
        else:
            core_kwargs["token"] = _RegisterPythonImpl(
                f, grad_f, python_func_type, pass_workspace=pass_workspace
            )
        grad_output_indices = grad_output_indices or []
        grad_input_indices = grad_input_indices or []
        return lambda *args, **kwargs: self._CreateAndAddToSelf(
            "Python",
            *args,
            grad_output_indices=grad_output_indices,
            grad_input_indices=grad_input_indices,
            **dict(kwargs, **core_kwargs),
        )

    # ---- op creation ------------------------------------------------------------------------
    def _CreateAndAddToSelf(
        self, op_type: str, inputs: Any, outputs: Any = None, **kwargs: Any
    ) -> Any:
        inputs = _RectifyInputOutput(inputs)
        for inp in inputs:
            if not self.BlobIsDefined(inp):
                assert inp.Net() is not self
                self.AddExternalInput(inp)
        if outputs is None:
            outputs = self.NextName(prefix=op_type)
        elif type(outputs) is int:
            outputs = [self.NextName(prefix=op_type, output_id=i) for i in range(outputs)]
        outputs = _RectifyInputOutput(outputs, net=self)
        op = CreateOperator(op_type, inputs, outputs, **kwargs)
        self._ExtendOps([op])
        workspace.operator_tracebacks[self.Name()][len(self._net.op) - 1] = _extract_stacktrace()
        if len(op.output) == 0:
            return None
        if len(op.output) == 1:
            return BlobReference(op.output[0], self)
        return tuple(BlobReference(o, self) for o in op.output)

    def __getattr__(self, op_type: str) -> Callable[..., Any]:
        if op_type.startswith("__"):
            raise AttributeError(op_type)
        if not IsOperator(op_type) and not IsOperatorWithEngine(op_type, "CUDNN"):
            raise AttributeError(_not_registered_message(op_type))
        return lambda *args, **kwargs: self._CreateAndAddToSelf(op_type, *args, **kwargs)

    def __dir__(self) -> list[str]:
        ops = [op for op in _REGISTERED_OPERATORS if "_ENGINE_" not in op]
        return sorted(set(dir(type(self))) | set(self.__dict__) | set(ops))


def _is_string_array(array: np.ndarray) -> bool:
    if array.dtype.kind in "US":
        return True
    if array.dtype.kind == "O" and array.size > 0:
        return all(isinstance(v, str | bytes) for v in array.flat)
    return False
