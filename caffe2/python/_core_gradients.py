"""Automatic differentiation of nets: ``Net.AddGradientOperators`` and ``GradientRegistry``.

The forward ops are played into an SSA-like record (``IR``) that tracks each blob's version.
The backward pass walks the ops in reverse and asks for each op's gradient ops: first the
runtime registry (``caffe2.runtime.registry``, the C++ gradient makers of Caffe2), then the
makers registered here with ``GradientRegistry.RegisterGradient``. When one version of a blob
feeds several ops that each produce a gradient for it, the gradients are renamed
``_<name>_autosplit_<k>`` (all but the first) and summed (dense) or concatenated (sparse).

Re-exported by ``caffe2.python.core``; ``core`` is imported lazily here.
"""

from __future__ import annotations

from collections import defaultdict, namedtuple
from collections.abc import Callable, Iterable
from typing import Any

from caffe2.proto import caffe2_pb2

GradientSlice = namedtuple("GradientSlice", ["indices", "values"])
OpSSA = namedtuple("OpSSA", ["op", "in_versions", "out_versions"])
GradGenMeta = namedtuple("GradGenMeta", ["grad_op", "idx", "gradient", "device_option"])
SparseGradGenMeta = namedtuple(
    "SparseGradGenMeta",
    ["grad_op_indices", "idx_indices", "grad_op_values", "idx_values", "gradient", "device_option"],
)


def _core() -> Any:
    from caffe2.python import core

    return core


def _device_of(op: caffe2_pb2.OperatorDef) -> caffe2_pb2.DeviceOption | None:
    return op.device_option if op.HasField("device_option") else None


def GetIndexFromGradientList(g_list: list[Any], name: Any) -> int | None:
    """Index of the gradient in g_list that is (or, if sparse, contains) name, else None."""
    for i, g in enumerate(g_list):
        if type(g) is GradientSlice:
            if g.indices == name or g.values == name:
                return i
        elif g is not None and g == name:
            return i
    return None


def _normalize_grad(g: Any) -> Any:
    if g is None:
        return None
    if isinstance(g, GradientSlice):
        return GradientSlice(str(g.indices), str(g.values))
    return str(g)


class IR:
    """The forward ops with the version of every blob each op reads and writes.

    A blob is at version 0 until written; a write to a blob that was already read or
    written increments it. ``frontier`` is the version after the last forward op,
    ``gradient_frontier`` the version each known gradient belongs to.
    """

    def __init__(self, operators: Iterable[caffe2_pb2.OperatorDef]) -> None:
        operators = list(operators)
        self.ssa: list[OpSSA] = []
        self.input_usages: defaultdict[str, defaultdict[int, list[int]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.frontier: defaultdict[str, int] = defaultdict(int)
        self.gradient_frontier: dict[str, int] = {}
        self.gradient_generators: defaultdict[str, defaultdict[int, list[Any]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.out_version_history: defaultdict[str, list[Any]] = defaultdict(list)
        self.in_version_history: defaultdict[str, list[Any]] = defaultdict(list)
        for op in operators:
            self.Play(op)
        self.SanityCheck(operators)

    def SanityCheck(self, operators: Iterable[caffe2_pb2.OperatorDef]) -> None:
        """A StopGradient's output must be read by a later op."""
        for op in operators:
            if op.type == "StopGradient" and op.output[0] not in self.input_usages:
                raise ValueError(
                    f"StopGradient's output '{op.output[0]}' is orphan.\n"
                    "You typically want to specify same input and output for\n"
                    f"StopGradient. Op:\n\n{op}"
                )

    def Play(self, op: caffe2_pb2.OperatorDef) -> None:
        """Record op with the versions it reads and writes."""
        in_versions = {}
        for s in op.input:
            in_versions[s] = self.frontier[s]
            self.input_usages[s][self.frontier[s]].append(len(self.ssa))
            self.in_version_history[s].append((op, self.frontier[s]))
        out_versions = {}
        for s in op.output:
            if s in self.frontier:
                self.frontier[s] += 1
            out_versions[s] = self.frontier[s]
            self.out_version_history[s].append((op, self.frontier[s]))
        self.ssa.append(OpSSA(op, in_versions, out_versions))

    # ---- checks ----------------------------------------------------------------------------
    def _version_help_out(self, name: str) -> str:
        lines = ["DEBUG HELP:", "Maybe you use same output blob twice for different ops?"]
        lines.append(f"== Version history of blob [{name}]")
        for op, ver in self.out_version_history[name]:
            lines.append(f"Version (out) {ver} <-- {op}")
        return "\n".join(lines) + "\n"

    def _version_help_in(self, name: str) -> str:
        lines = ["DEBUG HELP:", "Maybe the blob was overwritten by another op?"]
        lines.append(f"== Version history of blob [{name}]")
        for op, ver in self.in_version_history[name]:
            lines.append(f"version (in) {ver} <-- {op}")
        return "\n".join(lines) + "\n"

    def CheckGradientOperatorInput(
        self,
        grad_op_input: str,
        g_output: list[Any],
        fwd_op_idx: int,
        locally_generated_blobs: list[str],
    ) -> None:
        """Raise RuntimeError if a gradient op reads a blob at a version no longer present."""
        forward_op, in_versions, out_versions = self.ssa[fwd_op_idx]
        original_index = GetIndexFromGradientList(g_output, grad_op_input)
        if original_index is not None:
            original_name = forward_op.output[original_index]
            if out_versions[original_name] != self.gradient_frontier[original_name]:
                raise RuntimeError(
                    f'Gradient name "{grad_op_input}" is expected to correspond to version '
                    f'{out_versions[original_name]} of "{original_name}", but currently we '
                    f"have version {self.gradient_frontier[original_name]}.\n\n"
                    + self._version_help_out(original_name)
                )
        elif grad_op_input in out_versions:
            if self.frontier[grad_op_input] != out_versions[grad_op_input]:
                raise RuntimeError(
                    f'Gradient operation uses output "{grad_op_input}" at version '
                    f"{out_versions[grad_op_input]}, but currently we have version "
                    f"{self.frontier[grad_op_input]}.\n\n" + self._version_help_out(grad_op_input)
                )
        elif grad_op_input in in_versions:
            if self.frontier[grad_op_input] != in_versions[grad_op_input]:
                raise RuntimeError(
                    f'Gradient operation uses input "{grad_op_input}" at version '
                    f"{in_versions[grad_op_input]}, but currently we have version "
                    f"{self.frontier[grad_op_input]}.\n\n" + self._version_help_in(grad_op_input)
                )
        elif grad_op_input not in locally_generated_blobs:
            raise RuntimeError(
                f'Blob name "{grad_op_input}" not in the scope of operator: {forward_op}\n'
                "and is not generated by any of the local gradient operators."
            )

    # ---- bookkeeping of who produces each gradient ------------------------------------------
    def BuildGradientGenerators(
        self,
        fwd_op_idx: int,
        gradient_ops: list[caffe2_pb2.OperatorDef],
        g_output: list[Any],
        g_input: list[Any],
    ) -> None:
        """Check the gradient ops and record which op output gives each input's gradient."""
        forward_op, in_versions, _out_versions = self.ssa[fwd_op_idx]
        locally_generated: list[str] = []
        sparse_generators: defaultdict[str, defaultdict[int, list[Any]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for grad_op in gradient_ops:
            for s in grad_op.input:
                self.CheckGradientOperatorInput(s, g_output, fwd_op_idx, locally_generated)
            locally_generated.extend(str(s) for s in grad_op.output)
            for i, output in enumerate(grad_op.output):
                input_index = GetIndexFromGradientList(g_input, output)
                if input_index is None:
                    continue
                input_name = forward_op.input[input_index]
                input_version = in_versions[input_name]
                g = g_input[input_index]
                if type(g) is GradientSlice:
                    if g.indices == output:
                        m = SparseGradGenMeta(grad_op, i, None, 0, g, _device_of(grad_op))
                    else:
                        assert g.values == output
                        m = SparseGradGenMeta(None, 0, grad_op, i, g, _device_of(grad_op))
                    sparse_generators[input_name][input_version].append(m)
                else:
                    self.gradient_generators[input_name][input_version].append(
                        GradGenMeta(grad_op, i, g, _device_of(grad_op))
                    )

        # Merge the indices and values generators of each sparse gradient.
        for input_name, versions in sparse_generators.items():
            for input_version, metas in versions.items():
                assert len(metas) <= 2
                merged = metas[0]
                if len(metas) == 2:
                    a, b = metas
                    if a.grad_op_indices is None:
                        a, b = b, a
                    merged = SparseGradGenMeta(
                        a.grad_op_indices,
                        a.idx_indices,
                        b.grad_op_values,
                        b.idx_values,
                        a.gradient,
                        a.device_option or b.device_option,
                    )
                self.gradient_generators[input_name][input_version].append(merged)

        # Gradients passed straight through from an output (Sum, Add...) have no generator
        # op; record them too so that accumulation knows where they come from.
        for input_index, g in enumerate(g_input):
            if not g:
                continue
            input_name = forward_op.input[input_index]
            input_version = in_versions[input_name]
            if type(g) is GradientSlice:
                if g.indices not in locally_generated and g.values not in locally_generated:
                    self.gradient_generators[input_name][input_version].append(
                        SparseGradGenMeta(None, 0, None, 0, g, _device_of(forward_op))
                    )
            elif g not in locally_generated:
                self.gradient_generators[input_name][input_version].append(
                    GradGenMeta(None, 0, g, _device_of(forward_op))
                )

        for i, g in enumerate(g_input):
            if g is not None:
                input_name = forward_op.input[i]
                self.gradient_frontier[input_name] = in_versions[input_name]

    # ---- accumulation -----------------------------------------------------------------------
    def _VerifyGradientGenerators(self, generators: list[Any]) -> bool:
        if len({type(g) for g in generators}) > 1:
            raise RuntimeError(
                "Automatic aggregation of a mix of sparse and dense gradients is not supported yet"
            )
        if len(generators) < 2:
            return False
        devices = [g.device_option for g in generators if g.device_option is not None]
        core = _core()
        if len(devices) >= 2 and not all(
            core.device_option_equal(d, devices[0]) for d in devices[1:]
        ):
            raise RuntimeError("Unexpected behavior: not all grad ops have the same device option.")
        return True

    @staticmethod
    def _GetSumOpOutputName(generators: list[Any], input_name: str) -> str:
        def remove_suffix(s: str, suffix: str) -> str:
            return s[: -len(suffix)] if s.endswith(suffix) else s

        for g in generators:
            if type(g) is GradGenMeta:
                if g.grad_op:
                    return g.grad_op.output[g.idx]
            else:
                if g.grad_op_indices:
                    return remove_suffix(g.grad_op_indices.output[g.idx_indices], "_indices")
                if g.grad_op_values:
                    return remove_suffix(g.grad_op_values.output[g.idx_values], "_values")
        return input_name + "_grad"

    @staticmethod
    def _DisambiguateGradOpOutput(grad_op: caffe2_pb2.OperatorDef, idx: int, cnt: int) -> str:
        grad_op.output[idx] = "_" + grad_op.output[idx] + f"_autosplit_{cnt}"
        return grad_op.output[idx]

    @staticmethod
    def _sum_device(generators: list[Any]) -> caffe2_pb2.DeviceOption | None:
        for g in generators:
            if g.device_option is not None:
                return g.device_option
        return None

    def _MakeDenseSumOps(
        self, generators: list[Any], out_base_name: str
    ) -> tuple[list[caffe2_pb2.OperatorDef], str]:
        core = _core()
        sum_op_input = []
        cnt = 0
        first_grad_op = True
        for grad_op, idx, g, _dev in generators:
            assert type(g) is not GradientSlice
            if grad_op:
                if first_grad_op:
                    first_grad_op = False
                    out = grad_op.output[idx]
                else:
                    out = self._DisambiguateGradOpOutput(grad_op, idx, cnt)
                    cnt += 1
                sum_op_input.append(out)
            else:
                sum_op_input.append(str(g))
        if out_base_name in sum_op_input:
            # Sum may run in place only on its first input.
            i = sum_op_input.index(out_base_name)
            sum_op_input[0], sum_op_input[i] = sum_op_input[i], sum_op_input[0]
        sum_op = core.CreateOperator(
            "Sum",
            [core.BlobReference(x) for x in sum_op_input],
            core.BlobReference(out_base_name),
            device_option=self._sum_device(generators),
        )
        return [sum_op], out_base_name

    def _MakeSparseSumOps(
        self, generators: list[Any], out_base_name: str
    ) -> tuple[list[caffe2_pb2.OperatorDef], GradientSlice]:
        core = _core()
        indices_in, values_in = [], []
        cnt_i = cnt_v = 0
        for op_i, idx_i, op_v, idx_v, g, _dev in generators:
            if op_i:
                indices_in.append(self._DisambiguateGradOpOutput(op_i, idx_i, cnt_i))
                cnt_i += 1
            else:
                indices_in.append(g.indices)
            if op_v:
                values_in.append(self._DisambiguateGradOpOutput(op_v, idx_v, cnt_v))
                cnt_v += 1
            else:
                values_in.append(g.values)
        device = self._sum_device(generators)
        indices_out = out_base_name + "_indices_concat"
        values_out = out_base_name + "_values_concat"
        sum_ops = [
            core.CreateOperator(
                "Concat",
                [core.BlobReference(x) for x in indices_in],
                [core.BlobReference(indices_out), core.BlobReference(indices_out + "_split")],
                axis=0,
                device_option=device,
            ),
            core.CreateOperator(
                "Concat",
                [core.BlobReference(x) for x in values_in],
                [core.BlobReference(values_out), core.BlobReference(values_out + "_split")],
                axis=0,
                device_option=device,
            ),
        ]
        return sum_ops, GradientSlice(indices=indices_out, values=values_out)

    def _MakeSumOps(self, input_name: str, input_version: int) -> tuple[list[Any], Any]:
        generators = self.gradient_generators[input_name][input_version]
        out_base_name = self._GetSumOpOutputName(generators, input_name)
        if type(generators[0]) is GradGenMeta:
            return self._MakeDenseSumOps(generators, out_base_name)
        return self._MakeSparseSumOps(generators, out_base_name)

    def DoGradientAccumulation(
        self, fwd_op_idx: int
    ) -> tuple[list[caffe2_pb2.OperatorDef], dict[str, Any]]:
        """Sum the gradients of each input version of this op used by several ops.

        Runs at the first op (in forward order) that read that version, i.e. once every
        user of it has contributed its gradient in the backward walk.
        """
        forward_op, in_versions, _ = self.ssa[fwd_op_idx]
        additional_sum_ops = []
        grad_map = {}
        for input_name in dict.fromkeys(forward_op.input):
            input_version = in_versions[input_name]
            input_usage = self.input_usages[input_name][input_version]
            if len(input_usage) <= 1 or fwd_op_idx != input_usage[0]:
                continue
            generators = self.gradient_generators[input_name][input_version]
            try:
                if not self._VerifyGradientGenerators(generators):
                    continue
            except RuntimeError as err:
                raise RuntimeError(
                    f"Gradients for param ''{input_name}'' failed to verify: {err}"
                ) from err
            sum_ops, g = self._MakeSumOps(input_name, input_version)
            additional_sum_ops.extend(sum_ops)
            grad_map[input_name] = g
        return additional_sum_ops, grad_map

    # ---- the backward pass -----------------------------------------------------------------
    def _GetInitGradients(self, ys: dict[Any, Any]) -> tuple[dict[str, Any], list[Any]]:
        core = _core()
        input_to_grad: dict[str, Any] = {}
        gradient_ops = []
        for y, g in ys.items():
            autograd_op = None
            if g is None:
                autograd_op = core.CreateOperator(
                    "ConstantFill", [y], [str(y) + "_autogen_grad"], value=1.0
                )
                gradient_ops.append(autograd_op)
                g = autograd_op.output[0]
            input_to_grad[str(y)] = _normalize_grad(g)
            if autograd_op is not None:
                self.gradient_generators[str(y)][self.frontier[str(y)]].append(
                    GradGenMeta(autograd_op, 0, g, _device_of(autograd_op))
                )
        return input_to_grad, gradient_ops

    def _GenerateGradientsForForwardOp(
        self, forward_op_idx: int, input_to_grad: dict[str, Any]
    ) -> tuple[dict[str, Any], list[caffe2_pb2.OperatorDef]]:
        new_input_to_grad: dict[str, Any] = {}
        gradient_ops: list[caffe2_pb2.OperatorDef] = []
        forward_op, _in_versions, _out_versions = self.ssa[forward_op_idx]
        g_output = [input_to_grad.get(name, None) for name in forward_op.output]
        if any(g is not None for g in g_output) or forward_op.type == "ZeroGradient":
            gradient_ops, g_input = GradientRegistry.GetGradientForOp(forward_op, g_output)
            self.BuildGradientGenerators(forward_op_idx, gradient_ops, g_output, g_input)
            for name, grad in zip(forward_op.input, g_input, strict=True):
                # Keep an existing gradient unless this op also writes the blob.
                if grad is not None or name not in input_to_grad or name in forward_op.output:
                    new_input_to_grad[name] = grad
        return new_input_to_grad, gradient_ops

    def GetBackwardPass(self, ys: Any) -> tuple[list[caffe2_pb2.OperatorDef], dict[Any, Any]]:
        """The gradient ops for ys (a list: all-ones gradients; a dict: given or None)."""
        core = _core()
        if isinstance(ys, list):
            ys = {y: None for y in ys}
        elif not isinstance(ys, dict):
            raise TypeError("ys should either be a list or a dict.")
        for y in ys:
            name = str(y)
            self.gradient_frontier[name] = self.frontier[name]
            self.input_usages[name][self.frontier[name]].append(len(self.ssa))

        all_input_to_grad, all_gradient_ops = self._GetInitGradients(ys)
        for forward_op_idx in reversed(range(len(self.ssa))):
            input_to_grad, gradient_ops = self._GenerateGradientsForForwardOp(
                forward_op_idx, all_input_to_grad
            )
            all_input_to_grad.update(input_to_grad)
            all_gradient_ops += gradient_ops
            sum_ops, grad_map = self.DoGradientAccumulation(forward_op_idx)
            all_input_to_grad.update(grad_map)
            all_gradient_ops += sum_ops

        result: dict[Any, Any] = {}
        for key, val in all_input_to_grad.items():
            if val is None:
                continue
            if isinstance(val, GradientSlice):
                grad = GradientSlice(core.BlobReference(val[0]), core.BlobReference(val[1]))
            else:
                grad = core.BlobReference(val)
            result[core.BlobReference(key)] = grad
        return all_gradient_ops, result


class GradientRegistry:
    """Python-side gradient makers, used for op types the runtime registry has none for."""

    gradient_registry_: dict[str, Callable[..., Any]] = {}

    @classmethod
    def RegisterGradient(cls, op_type: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``fn(op, g_output) -> (grad_ops, g_input)`` is op_type's gradient."""

        def wrapper(func: Callable[..., Any]) -> Callable[..., Any]:
            cls.gradient_registry_[op_type] = func
            return func

        return wrapper

    @classmethod
    def _GetGradientForOpRuntime(
        cls, op: caffe2_pb2.OperatorDef, g_output: list[Any]
    ) -> tuple[list[caffe2_pb2.OperatorDef], list[Any]] | None:
        """The runtime registry's gradient of op (None if the registry has no maker).

        Makers follow the contract of docs/runtime_design.md: they return complete gradient
        ops (arguments, device option and engine copied from the forward op as they see fit).
        """
        from caffe2.runtime import registry

        schema = registry.get_schema(op.type)
        if schema is None or schema.gradient is None:
            return None
        fwd = caffe2_pb2.OperatorDef()
        fwd.CopyFrom(op)
        grad_ops, g_input = schema.gradient(fwd, list(g_output))
        return _as_op_list(grad_ops), list(g_input)

    @classmethod
    def GetGradientForOp(
        cls, op: caffe2_pb2.OperatorDef, g_output: list[Any]
    ) -> tuple[list[caffe2_pb2.OperatorDef], list[Any]]:
        """(gradient ops, gradient name per input) of op given its output gradients."""
        found = cls._GetGradientForOpRuntime(op, g_output)
        if found is None:
            maker = cls.gradient_registry_.get(op.type)
            if maker is None:
                raise RuntimeError(
                    f"Exception when creating gradient for [{op.type}]: Gradient maker for "
                    f"operator {op.type} not implemented.\nOp: \n{op}"
                )
            grad_ops, g_input = maker(op, g_output)
            found = _as_op_list(grad_ops), list(g_input)
        grad_ops, g_input = found
        if len(g_input) != len(op.input):
            raise RuntimeError(
                f"Gradient maker for {op.type} returned {len(g_input)} input gradients for "
                f"{len(op.input)} inputs."
            )
        for grad_op in grad_ops:
            grad_op.is_gradient_op = True
        return grad_ops, [_normalize_grad(g) for g in g_input]

    @classmethod
    def GetBackwardPass(
        cls,
        operators: Iterable[caffe2_pb2.OperatorDef],
        ys: Any,
        ys_generate_gradient: bool = False,
    ) -> tuple[list[caffe2_pb2.OperatorDef], dict[Any, Any]]:
        """(gradient ops, {blob: gradient}) of the given forward ops for ys."""
        return IR(operators).GetBackwardPass(ys)


def _as_op_list(grad_ops: Any) -> list[caffe2_pb2.OperatorDef]:
    if grad_ops is None:
        return []
    if isinstance(grad_ops, caffe2_pb2.OperatorDef):
        return [grad_ops]
    return list(grad_ops)
