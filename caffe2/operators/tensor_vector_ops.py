"""Tensor vectors and sample collectors (Caffe2's dataset_ops.cc tensor-vector ops and
last_n_window_collector.cc; spec data.md operator inventory, "Dataset / cursor").

- CreateTensorVector: [] -> vec, a new empty ``TensorVector`` on every run.
- TensorVectorSize: [vec] -> int32 scalar, the number of tensors.
- ConcatTensorVector: [vec] -> the tensors concatenated along dim 0 (non-empty vector, same
  dtype, same ndim >= 1 and the same dims after the first).
- CollectTensor: [vec_1..vec_k, t_1..t_k] -> [vec_1..vec_k] in place; `num_to_collect` > 0.
  Reservoir sampling of the k tensors jointly: the first `num_to_collect` runs append copies,
  then run v (0-based) draws p uniformly in [0, v] and replaces entry p if p < num_to_collect.
  The generator is the op's (``device_option.random_seed`` when set); its draws are NumPy's,
  not the C++ standard library's, so a seeded sample differs from Caffe2's.
- LastNWindowCollector: [buf, next, data(, mutex)(, num_visited)] -> [buf, next(,
  num_visited)] in place; `num_to_collect` > 0. ``buf`` is a ring buffer of the last
  `num_to_collect` rows of data; ``next`` (int32 scalar) is where the next row goes;
  ``num_visited`` (int64, one element) counts the rows seen. An empty ``buf`` means "not
  started": it takes data's dtype and ``next``/``num_visited`` restart at 0.

Tensor vectors have no serializer, as in Caffe2.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from caffe2.operators._util import I32, I64, output, tensor
from caffe2.operators.fill_ops import op_rng
from caffe2.operators.iter_ops import mutex_input
from caffe2.runtime.blob import describe, dtype_name
from caffe2.runtime.registry import Arg, operator

Kernel = Callable[[], None]


class TensorVector:
    """Caffe2's std::unique_ptr<std::vector<TensorCPU>>: a list of owned arrays."""

    caffe2_type_name = "std::unique_ptr<std::vector<TensorCPU>>"
    __slots__ = ("tensors", "lock")

    def __init__(self, tensors: list[np.ndarray] | None = None) -> None:
        self.tensors: list[np.ndarray] = [np.array(t, copy=True) for t in tensors or ()]
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.tensors)

    def __repr__(self) -> str:
        return f"<TensorVector of {len(self.tensors)}>"


def _vector(op: Any, i: int) -> TensorVector:
    v = op.inputs[i].value
    if not isinstance(v, TensorVector):
        name = op.input_names[i]
        raise op.error(
            f"{op.type}: input {i} ({name}) must hold a tensor vector (made by "
            f"CreateTensorVector), but it holds {describe(v)}",
            name,
        )
    return v


def _num_to_collect(op: Any) -> int:
    n = op.arg("num_to_collect")
    if n <= 0:
        raise op.error(f"{op.type}: num_to_collect must be > 0, got {n}")
    return n


NUM_TO_COLLECT = Arg("num_to_collect", "int", -1)


@operator("CreateTensorVector", inputs=0, outputs=1)
def create_tensor_vector(op: Any) -> Kernel:
    """CreateTensorVector: [] -> vec. A new empty tensor vector on every run."""
    Y = op.outputs[0]

    def run() -> None:
        Y.value = TensorVector()

    return run


@operator("TensorVectorSize", inputs=1, outputs=1)
def tensor_vector_size(op: Any) -> Kernel:
    """TensorVectorSize: [vec] -> int32 scalar, the vector's length."""
    Y = op.outputs[0]

    def run() -> None:
        vec = _vector(op, 0)
        with vec.lock:
            n = len(vec.tensors)
        output(Y, (), I32)[()] = n

    return run


@operator("ConcatTensorVector", inputs=1, outputs=1)
def concat_tensor_vector(op: Any) -> Kernel:
    """ConcatTensorVector: [vec] -> the vector's tensors concatenated along dim 0."""
    Y = op.outputs[0]
    name = op.input_names[0]

    def run() -> None:
        vec = _vector(op, 0)
        with vec.lock:
            ts = list(vec.tensors)
        if not ts:
            raise op.error(f"ConcatTensorVector: the tensor vector {name} is empty", name)
        first = ts[0]
        if first.ndim == 0:
            raise op.error(
                f"ConcatTensorVector: tensor 0 of {name} is a scalar; tensors need a first "
                "dimension",
                name,
            )
        for k, t in enumerate(ts[1:], 1):
            if t.dtype != first.dtype:
                raise op.error(
                    f"ConcatTensorVector: tensor {k} of {name} has type {dtype_name(t.dtype)}, "
                    f"tensor 0 has {dtype_name(first.dtype)}",
                    name,
                )
            if t.ndim != first.ndim or t.shape[1:] != first.shape[1:]:
                raise op.error(
                    f"ConcatTensorVector: tensor {k} of {name} has shape {list(t.shape)}, "
                    f"incompatible with tensor 0's {list(first.shape)} (only the first "
                    "dimension may differ)",
                    name,
                )
        Y.value = np.concatenate(ts, axis=0)

    return run


def _collect_outputs(n_in: int, n_out: int) -> bool:
    """inputs = 2 * outputs"""
    return n_out >= 1 and n_in == 2 * n_out


def _collect_inputs(n: int) -> bool:
    """a positive even number"""
    return n > 0 and n % 2 == 0


@operator(
    "CollectTensor",
    inputs=_collect_inputs,
    outputs=_collect_outputs,
    allow_inplace=lambda i, o: i == o,
    args=(NUM_TO_COLLECT,),
)
def collect_tensor(op: Any) -> Kernel:
    """CollectTensor: [vec_1..vec_k, t_1..t_k] -> [vec_1..vec_k]. Reservoir-samples
    `num_to_collect` of the (t_1..t_k) seen, jointly, into the vectors (in place)."""
    n = _num_to_collect(op)
    k = len(op.output_names)
    for i in range(k):
        if op.input_names[i] != op.output_names[i]:
            raise op.error(
                f"CollectTensor: output {i} ({op.output_names[i]}) must be input {i} "
                f"({op.input_names[i]}): the vectors are updated in place"
            )
    rng = op_rng(op)
    lock = threading.Lock()
    visited = 0

    def run() -> None:
        nonlocal visited
        with lock:
            vecs = [_vector(op, i) for i in range(k)]
            data = [tensor(op, k + i) for i in range(k)]
            if visited < n:
                pos = visited
            else:
                pos = int(rng.integers(0, visited, endpoint=True))
                if pos >= n:
                    pos = -1
            for i, vec in enumerate(vecs):
                size = len(vec)
                if visited >= n and size != n:
                    raise op.error(
                        f"TensorVector size = {size} is different from numToCollect = {n}",
                        op.input_names[i],
                    )
                if 0 <= pos and pos > size:
                    raise op.error(
                        f"CollectTensor: the vector {op.input_names[i]} holds {size} tensors, "
                        f"but this op has collected {visited}; was it changed elsewhere?",
                        op.input_names[i],
                    )
            if pos >= 0:
                for vec, t in zip(vecs, data, strict=True):
                    c = np.array(t, copy=True)
                    with vec.lock:
                        if pos == len(vec.tensors):
                            vec.tensors.append(c)
                        else:
                            vec.tensors[pos] = c
            visited += 1

    return run


def _last_n_outputs(n_in: int, n_out: int) -> bool:
    """2 outputs (3 with the num_visited input)"""
    return n_out == (3 if n_in == 5 else 2)


@operator(
    "LastNWindowCollector",
    inputs=(3, 5),
    outputs=_last_n_outputs,
    enforce_inplace={(0, 0), (1, 1), (4, 2)},
    args=(NUM_TO_COLLECT,),
)
def last_n_window_collector(op: Any) -> Kernel:
    """LastNWindowCollector: [buf, next, data, (mutex), (num_visited)] -> [buf, next,
    (num_visited)]. Keeps the last `num_to_collect` rows of data in the ring buffer buf."""
    n = _num_to_collect(op)
    n_in = len(op.input_names)
    has_mutex, has_visited = n_in > 3, n_in > 4
    buf_blob, next_blob = op.outputs[0], op.outputs[1]
    visited_blob = op.outputs[2] if has_visited else None
    buf_name, next_name, data_name = op.input_names[:3]

    def collect() -> None:
        data = tensor(op, 2)
        if data.ndim < 1:
            raise op.error(
                f"LastNWindowCollector: data {data_name} must have at least one dimension, "
                f"got a scalar",
                data_name,
            )
        buf = buf_blob.value
        started = isinstance(buf, np.ndarray) and buf.size > 0
        if started:
            if buf.ndim != data.ndim or buf.shape[1:] != data.shape[1:]:
                raise op.error(
                    f"LastNWindowCollector: buffer {buf_name} {list(buf.shape)} does not fit "
                    f"data {data_name} {list(data.shape)} (dims after the first must match)",
                    buf_name,
                )
            if buf.dtype != data.dtype:
                raise op.error(
                    f"LastNWindowCollector: buffer {buf_name} has type {dtype_name(buf.dtype)},"
                    f" data {data_name} has {dtype_name(data.dtype)}",
                    buf_name,
                )
        visited = None
        prev = 0
        if visited_blob is not None:
            vname = op.input_names[4]
            vv = visited_blob.value
            if not (isinstance(vv, np.ndarray) and vv.size == 1 and vv.dtype == I64):
                raise op.error(
                    f"LastNWindowCollector: num_visited {vname} must be an int64 tensor of "
                    f"one element, but it holds {describe(vv)}",
                    vname,
                )
            visited = vv.reshape(-1)  # a view of the blob's own array
            prev = int(visited[0]) if started else 0
            if prev < 0:
                raise op.error(f"LastNWindowCollector: num_visited {vname} is negative", vname)
        entries = data.shape[0]
        if entries == 0:
            if visited is not None:
                visited[0] = prev
            if not started:
                buf_blob.value = np.array(data, copy=True)
            return
        to_copy = min(entries, n)
        rows = buf.shape[0] if started else 0
        size = min(n, rows + to_copy) if rows < n else rows
        nx = next_blob.value
        if started:
            if not (isinstance(nx, np.ndarray) and nx.ndim == 0 and nx.dtype == I32):
                raise op.error(
                    f"LastNWindowCollector: next {next_name} must be an int32 scalar, but it "
                    f"holds {describe(nx)}",
                    next_name,
                )
            start = int(nx)
        else:
            if isinstance(nx, np.ndarray) and nx.ndim != 0:
                raise op.error(
                    f"LastNWindowCollector: next {next_name} must be a scalar, got {describe(nx)}",
                    next_name,
                )
            start = 0
        if not 0 <= start < size or (entries <= n and rows < n and start > rows):
            raise op.error(
                f"LastNWindowCollector: next = {start} is out of range for the buffer "
                f"{buf_name} of {rows} rows (num_to_collect {n})",
                next_name,
            )
        # Every check passed: update.
        if started and rows >= n:
            out = buf
        else:
            out = np.empty((size, *data.shape[1:]), data.dtype)
            if started:
                out[:rows] = buf
        if entries > n:
            out[:n] = data[entries - n :]
            new_next = 0
        else:
            first = min(to_copy + start, n) - start
            out[start : start + first] = data[:first]
            out[: to_copy - first] = data[first:to_copy]
            new_next = (start + to_copy) % n
        buf_blob.value = out
        output(next_blob, (), I32)[()] = new_next
        if visited is not None:
            visited[0] = prev + entries

    def run() -> None:
        if has_mutex:
            with mutex_input(op, 3):
                collect()
        else:
            collect()

    return run
