"""Tensor vectors, CollectTensor and LastNWindowCollector (caffe2.operators.tensor_vector_ops)."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest

from caffe2.operators import tensor_vector_ops
from caffe2.proto import caffe2_pb2
from caffe2.runtime import registry
from caffe2.runtime.blob import type_name
from caffe2.runtime.net import OperatorError
from caffe2.runtime.workspace import Workspace


@pytest.fixture(scope="module")
def tvo():
    """The module under test (registered with the other families)."""
    assert (
        registry.get_schema("CreateTensorVector").factory.__module__ == tensor_vector_ops.__name__
    )
    return tensor_vector_ops


class TestMutex:
    """A stand-in for the blob CreateMutex makes (same Caffe2 type name)."""

    __test__ = False
    caffe2_type_name = "std::unique_ptr<std::mutex>"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entered = 0

    def __enter__(self) -> TestMutex:
        self.lock.acquire()
        self.entered += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def make_op(op_type: str, inputs: list[str], outputs: list[str], seed: int | None = None, **args):
    op = caffe2_pb2.OperatorDef(type=op_type, input=inputs, output=outputs)
    for k, v in args.items():
        op.arg.add(name=k, i=v)
    if seed is not None:
        op.device_option.random_seed = seed
    return op


def create(ws: Workspace, *ops: caffe2_pb2.OperatorDef, name: str = "n"):
    nd = caffe2_pb2.NetDef(name=name)
    nd.op.extend(ops)
    return ws.create_net(nd, overwrite=True)


def feed(ws: Workspace, name: str, value: object) -> None:
    ws.create_blob(name).value = value


def val(ws: Workspace, name: str):
    return ws.get_blob(name).value


@pytest.fixture
def ws() -> Workspace:
    return Workspace()


# ---- CreateTensorVector / TensorVectorSize / ConcatTensorVector ----------------------------
def test_create_and_size(ws, tvo):
    create_net = create(ws, make_op("CreateTensorVector", [], ["v"]), name="c")
    assert create_net.run()
    v = val(ws, "v")
    assert isinstance(v, tvo.TensorVector) and len(v) == 0
    assert type_name(v) == "std::unique_ptr<std::vector<TensorCPU>>"
    assert ws.run_operator_once(make_op("TensorVectorSize", ["v"], ["n"]))
    n = val(ws, "n")
    assert n.shape == () and n.dtype == np.int32 and n == 0
    v.tensors.append(np.zeros(1))
    assert create_net.run()
    assert val(ws, "v") is not v and len(val(ws, "v")) == 0  # every run makes a new vector


def test_concat(ws, tvo):
    feed(ws, "v", tvo.TensorVector([np.array([[1, 2]]), np.array([[3, 4], [5, 6]])]))
    assert ws.run_operator_once(make_op("ConcatTensorVector", ["v"], ["t"]))
    np.testing.assert_array_equal(val(ws, "t"), [[1, 2], [3, 4], [5, 6]])
    val(ws, "t")[0, 0] = 99  # the output owns its array
    assert val(ws, "v").tensors[0][0, 0] == 1
    feed(ws, "s", tvo.TensorVector([np.array([b"a"], object), np.array([b"b", b"c"], object)]))
    assert ws.run_operator_once(make_op("ConcatTensorVector", ["s"], ["st"]))
    assert val(ws, "st").dtype == object and val(ws, "st").tolist() == [b"a", b"b", b"c"]


@pytest.mark.parametrize(
    "tensors, msg",
    [
        ([], "the tensor vector v is empty"),
        ([np.array(1.0)], "tensor 0 of v is a scalar"),
        ([np.zeros((1, 2)), np.zeros((1, 3))], r"tensor 1 of v has shape \[1, 3\]"),
        ([np.zeros((1, 2)), np.zeros((1, 2, 1))], "incompatible with tensor 0"),
        ([np.zeros(2, np.float32), np.zeros(2, np.int32)], "tensor 1 of v has type int32"),
    ],
)
def test_concat_errors(ws, tvo, tensors, msg):
    feed(ws, "v", tvo.TensorVector(tensors))
    with pytest.raises(OperatorError, match=msg) as e:
        ws.run_operator_once(make_op("ConcatTensorVector", ["v"], ["t"]))
    assert e.value.blob == "v"


@pytest.mark.parametrize("op_type", ["TensorVectorSize", "ConcatTensorVector"])
def test_vector_input_must_be_a_vector(ws, op_type):
    feed(ws, "v", np.zeros(2))
    with pytest.raises(OperatorError, match=r"input 0 \(v\) must hold a tensor vector") as e:
        ws.run_operator_once(make_op(op_type, ["v"], ["o"]))
    assert e.value.blob == "v"


# ---- CollectTensor -----------------------------------------------------------------------------
def collect_net(ws: Workspace, n: int, seed: int | None = 7, k: int = 1, name: str = "collect"):
    vecs = [f"v{i}" for i in range(k)]
    data = [f"d{i}" for i in range(k)]
    for v in vecs:
        ws.run_operator_once(make_op("CreateTensorVector", [], [v]))
    for d in data:
        ws.create_blob(d)
    op = make_op("CollectTensor", vecs + data, vecs, seed=seed, num_to_collect=n)
    return create(ws, op, name=name)


def test_collect_appends_copies_until_full(ws):
    net = collect_net(ws, 3)
    for i in range(3):
        feed(ws, "d0", np.array([i, i], np.int64))
        assert net.run()
    v = val(ws, "v0")
    assert [t.tolist() for t in v.tensors] == [[0, 0], [1, 1], [2, 2]]
    val(ws, "d0")[0] = 100  # the vector holds copies
    assert v.tensors[2].tolist() == [2, 2]


def test_collect_keeps_num_to_collect_and_is_seeded(ws):
    def run(seed: int) -> list[int]:
        w = Workspace()
        net = collect_net(w, 4, seed=seed)
        for i in range(50):
            feed(w, "d0", np.array([i]))
            assert net.run()
            assert len(val(w, "v0")) == min(i + 1, 4)
        return [int(t[0]) for t in val(w, "v0").tensors]

    a, b = run(3), run(3)
    assert a == b and len(set(a)) == 4 and all(0 <= x < 50 for x in a)
    assert any(run(s) != a for s in range(4, 10))  # the seed matters


def test_collect_samples_uniformly():
    """Each of 10 items lands in a sample of 2 with probability 1/5 (seeded, so exact)."""
    hits: Counter[int] = Counter()
    trials = 400
    for seed in range(trials):
        w = Workspace()
        net = collect_net(w, 2, seed=seed)
        for i in range(10):
            feed(w, "d0", np.array([i]))
            net.run()
        hits.update(int(t[0]) for t in val(w, "v0").tensors)
    assert sum(hits.values()) == 2 * trials
    assert all(40 <= hits[i] <= 120 for i in range(10)), hits  # expected 80 each


def test_collect_samples_the_inputs_jointly(ws):
    net = collect_net(ws, 3, k=2)
    for i in range(40):
        feed(ws, "d0", np.array([i]))
        feed(ws, "d1", np.array([f"s{i}".encode()], object))
        assert net.run()
    a = [int(t[0]) for t in val(ws, "v0").tensors]
    b = [t[0] for t in val(ws, "v1").tensors]
    assert b == [f"s{i}".encode() for i in a]


def test_collect_without_seed_runs(ws):
    net = collect_net(ws, 2, seed=None)
    for i in range(10):
        feed(ws, "d0", np.array([i]))
        assert net.run()
    assert len(val(ws, "v0")) == 2


def test_collect_errors(ws, tvo):
    net = collect_net(ws, 2)
    feed(ws, "d0", np.array([1]))
    assert net.run() and net.run()
    val(ws, "v0").tensors.pop()
    with pytest.raises(
        OperatorError, match="TensorVector size = 1 is different from numToCollect = 2"
    ):
        net.run()
    feed(ws, "v0", np.zeros(1))
    with pytest.raises(OperatorError, match=r"input 0 \(v0\) must hold a tensor vector"):
        net.run()
    feed(ws, "v0", tvo.TensorVector())
    ws.get_blob("d0").value = None
    with pytest.raises(OperatorError, match="must be a tensor") as e:
        net.run()
    assert e.value.blob == "d0"
    with pytest.raises(RuntimeError, match="num_to_collect must be > 0"):
        create(ws, make_op("CollectTensor", ["v0", "d0"], ["v0"]))
    with pytest.raises(RuntimeError, match="must be input 0"):
        create(ws, make_op("CollectTensor", ["v0", "d0"], ["w"], num_to_collect=1))
    for ins, outs in ((["v0"], ["v0"]), (["v0", "d0"], ["v0", "d0"]), (["v0", "d0"], [])):
        with pytest.raises(RuntimeError, match="did not pass schema checking"):
            create(ws, make_op("CollectTensor", ins, outs, num_to_collect=1))


# ---- LastNWindowCollector --------------------------------------------------------------------
def window_net(ws: Workspace, n: int, mutex: bool = False, visited: bool = False):
    ins, outs = ["buf", "next", "data"], ["buf", "next"]
    for b in ins:
        ws.create_blob(b)
    if mutex or visited:  # num_visited is input 4, after the mutex
        feed(ws, "m", TestMutex())
        ins.append("m")
    if visited:
        feed(ws, "nv", np.zeros(1, np.int64))
        ins.append("nv")
        outs.append("nv")
    return create(ws, make_op("LastNWindowCollector", ins, outs, num_to_collect=n), name="w")


def push(ws: Workspace, net, rows: list) -> tuple[list, int]:
    feed(ws, "data", np.array(rows, np.float32).reshape(len(rows), -1) if rows else
         np.zeros((0, 1), np.float32))  # fmt: skip
    assert net.run()
    return val(ws, "buf")[:, 0].tolist(), int(val(ws, "next"))


def test_window_ring_buffer(ws):
    net = window_net(ws, 3)
    assert push(ws, net, [1, 2]) == ([1, 2], 2)
    assert val(ws, "next").dtype == np.int32 and val(ws, "next").shape == ()
    assert push(ws, net, [3, 4]) == ([4, 2, 3], 1)
    assert push(ws, net, [5]) == ([4, 5, 3], 2)
    assert push(ws, net, [6, 7, 8, 9]) == ([7, 8, 9], 0)  # more than N rows: the last N
    assert push(ws, net, []) == ([7, 8, 9], 0)
    assert push(ws, net, [10, 11, 12]) == ([10, 11, 12], 0)
    assert val(ws, "buf").dtype == np.float32 and val(ws, "buf").shape == (3, 1)


def test_window_matches_a_model(ws):
    rng = np.random.default_rng(0)
    n = 5
    net = window_net(ws, n, visited=True)
    seen: list[float] = []
    for _ in range(60):
        k = int(rng.integers(0, 8))
        rows = [float(len(seen) + j) for j in range(k)]
        seen.extend(rows)
        if not seen:
            continue
        buf, nxt = push(ws, net, rows)
        assert sorted(buf) == sorted(seen[-n:])
        if len(seen) >= n:  # oldest first when read from next
            assert buf[nxt:] + buf[:nxt] == seen[-n:]
        assert val(ws, "nv").tolist() == [len(seen)]


def test_window_starts_from_an_empty_buffer_of_any_type(ws):
    net = window_net(ws, 2, visited=True)
    feed(ws, "buf", np.zeros((0,), np.float32))
    feed(ws, "next", np.array(5, np.int64))
    feed(ws, "nv", np.array([9], np.int64))
    feed(ws, "data", np.array([[1, 2]], np.int32))
    assert net.run()
    assert val(ws, "buf").dtype == np.int32 and val(ws, "buf").tolist() == [[1, 2]]
    assert val(ws, "next").dtype == np.int32 and val(ws, "next") == 1
    assert val(ws, "nv").tolist() == [1]  # restarted with the buffer


def test_window_no_rows_into_an_empty_buffer_takes_the_data_shape(ws):
    net = window_net(ws, 2)
    feed(ws, "data", np.zeros((0, 4), np.float64))
    assert net.run()
    assert val(ws, "buf").shape == (0, 4) and val(ws, "buf").dtype == np.float64
    assert val(ws, "next") is None


def test_window_strings(ws):
    net = window_net(ws, 2)
    for rows in ([b"a"], [b"b", b"c"]):
        feed(ws, "data", np.array(rows, object))
        assert net.run()
    assert val(ws, "buf").tolist() == [b"c", b"b"]


def test_window_with_mutex(ws):
    net = window_net(ws, 2, mutex=True)
    feed(ws, "data", np.ones((1, 1), np.float32))
    assert net.run()
    m = val(ws, "m")
    assert m.entered == 1 and not m.lock.locked()
    feed(ws, "m", np.zeros(1))
    with pytest.raises(OperatorError, match=r"input 3 \(m\) must hold a mutex"):
        net.run()


def test_window_from_many_threads(ws):
    net = window_net(ws, 4, mutex=True, visited=True)
    nets = []
    for t in range(4):
        feed(ws, f"data{t}", np.full((3, 1), t, np.float32))
        op = make_op(
            "LastNWindowCollector",
            ["buf", "next", f"data{t}", "m", "nv"],
            ["buf", "next", "nv"],
            num_to_collect=4,
        )
        nets.append(create(ws, op, name=f"w{t}"))
    del net

    def work(k: int) -> None:
        for _ in range(200):
            nets[k].run()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert val(ws, "nv").tolist() == [4 * 200 * 3]
    assert val(ws, "buf").shape == (4, 1)


@pytest.mark.parametrize(
    "setup, msg, blob",
    [
        ({"data": np.array(1.0, np.float32)}, "at least one dimension", "data"),
        ({"data": np.ones((1, 2), np.float32)}, r"buffer buf \[2, 1\] does not fit", "buf"),
        ({"data": np.ones((1, 1), np.float64)}, "buffer buf has type float32", "buf"),
        ({"next": np.array(1, np.int64)}, "next next must be an int32 scalar", "next"),
        ({"next": np.array(7, np.int32)}, "next = 7 is out of range", "next"),
        ({"next": np.array(-1, np.int32)}, "next = -1 is out of range", "next"),
        ({"nv": np.zeros(2, np.int64)}, "num_visited nv must be an int64 tensor of one", "nv"),
        ({"nv": np.array([-3], np.int64)}, "num_visited nv is negative", "nv"),
    ],
)
def test_window_errors(ws, setup, msg, blob):
    net = window_net(ws, 3, visited=True)
    push(ws, net, [1, 2])
    before = val(ws, "buf").copy()
    feed(ws, "data", np.ones((1, 1), np.float32))
    for k, v in setup.items():
        feed(ws, k, v)
    with pytest.raises(OperatorError, match=msg) as e:
        net.run()
    assert e.value.blob == blob
    np.testing.assert_array_equal(val(ws, "buf"), before)  # nothing changed


def test_window_next_must_be_the_fill_point_while_filling(ws):
    net = window_net(ws, 5)
    push(ws, net, [1, 2])
    feed(ws, "next", np.array(3, np.int32))
    feed(ws, "data", np.ones((1, 1), np.float32))
    with pytest.raises(OperatorError, match="next = 3 is out of range for the buffer buf of 2"):
        net.run()


def test_window_args_and_schema(ws):
    for b in ("buf", "next", "data", "m", "nv"):
        ws.create_blob(b)
    with pytest.raises(RuntimeError, match="num_to_collect must be > 0"):
        create(ws, make_op("LastNWindowCollector", ["buf", "next", "data"], ["buf", "next"]))
    for ins, outs in (
        (["buf", "next", "data"], ["x", "next"]),
        (["buf", "next", "data"], ["buf", "y"]),
        (["buf", "next", "data", "m", "nv"], ["buf", "next"]),
        (["buf", "next", "data", "m"], ["buf", "next", "nv"]),
        (["buf", "next", "data", "m", "nv"], ["buf", "next", "z"]),
        (["buf", "next"], ["buf", "next"]),
    ):
        with pytest.raises(RuntimeError, match="did not pass schema checking"):
            create(ws, make_op("LastNWindowCollector", ins, outs, num_to_collect=2))
