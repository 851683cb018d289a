"""Iter and AtomicIter: an in-place int64 [1] iteration count."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from caffe2.proto import caffe2_pb2
from caffe2.runtime import registry, stats
from caffe2.runtime.net import OperatorError
from caffe2.runtime.workspace import Workspace


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


def make_op(op_type: str, inputs: list[str], outputs: list[str]) -> caffe2_pb2.OperatorDef:
    return caffe2_pb2.OperatorDef(type=op_type, input=inputs, output=outputs)


def create(ws: Workspace, *ops: caffe2_pb2.OperatorDef, name: str = "n"):
    nd = caffe2_pb2.NetDef(name=name)
    nd.op.extend(ops)
    return ws.create_net(nd, overwrite=True)


@pytest.fixture
def ws() -> Workspace:
    return Workspace()


@pytest.fixture
def fast_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def test_iter_without_input_starts_at_one(ws):
    net = create(ws, make_op("Iter", [], ["it"]))
    for expected in (1, 2, 3):
        assert net.run()
        v = ws.get_blob("it").value
        assert v.dtype == np.int64 and v.shape == (1,) and v[0] == expected


def test_iter_in_place_increments_the_blob_array(ws):
    ws.create_blob("it").value = np.array([41], np.int64)
    arr = ws.get_blob("it").value
    net = create(ws, make_op("Iter", ["it"], ["it"]))
    assert net.run()
    assert ws.get_blob("it").value is arr and arr[0] == 42
    ws.get_blob("it").value = np.array(7, np.int64)  # any shape of one element
    assert net.run()
    assert ws.get_blob("it").value.shape == () and ws.get_blob("it").value == 8


def test_iter_without_input_keeps_an_existing_count(ws):
    ws.create_blob("it").value = np.array([10], np.int64)
    assert ws.run_operator_once(make_op("Iter", [], ["it"]))
    assert ws.get_blob("it").value[0] == 11


def test_iter_checks(ws):
    ws.create_blob("it")
    net = create(ws, make_op("Iter", ["it"], ["it"]))
    cases = [
        (None, "must hold an int64 tensor of size 1, but it holds nullptr"),
        (np.zeros(2, np.int64), "The size of Iter should be 1, but got 2"),
        (np.zeros(1, np.int32), "must be an int64 tensor"),
        (np.array([-1], np.int64), "Previous iteration number is negative"),
        (np.array([np.iinfo(np.int64).max], np.int64), "Overflow will happen!"),
    ]
    for value, msg in cases:
        ws.get_blob("it").value = value
        with pytest.raises(OperatorError, match=msg) as e:
            net.run()
        assert e.value.blob == "it" and "(Iter)" in str(e.value)


def test_iter_schema(ws):
    ws.create_blob("a").value = np.zeros(1, np.int64)
    for op in (
        make_op("Iter", ["a"], ["b"]),
        make_op("Iter", ["a", "a"], ["a"]),
        make_op("AtomicIter", ["m", "a"], ["b"]),
        make_op("AtomicIter", ["a"], ["a"]),
    ):
        ws.create_blob("m")
        with pytest.raises(RuntimeError, match="did not pass schema checking"):
            create(ws, op)


def test_atomic_iter_under_the_mutex_counts_a_stat(ws):
    mutex = TestMutex()
    ws.create_blob("mutex").value = mutex
    ws.create_blob("test_iter/it").value = np.zeros(1, np.int64)
    key = "atomic_iter/stats/test_iter/it/num_iter"
    net = create(ws, make_op("AtomicIter", ["mutex", "test_iter/it"], ["test_iter/it"]))
    assert stats.get_stat(key) == 0  # registered when the op is created
    for _ in range(3):
        assert net.run()
    assert ws.get_blob("test_iter/it").value[0] == 3
    assert mutex.entered == 3 and not mutex.lock.locked()
    assert stats.get_stat(key) == 3


def test_atomic_iter_needs_a_mutex(ws):
    ws.create_blob("m").value = np.zeros(1, np.int64)
    ws.create_blob("it").value = np.zeros(1, np.int64)
    net = create(ws, make_op("AtomicIter", ["m", "it"], ["it"]))
    with pytest.raises(OperatorError, match=r"input 0 \(m\) must hold a mutex") as e:
        net.run()
    assert e.value.blob == "m"


def test_atomic_iter_failure_releases_the_mutex(ws):
    mutex = TestMutex()
    ws.create_blob("m").value = mutex
    ws.create_blob("it").value = np.zeros(3, np.int64)
    net = create(ws, make_op("AtomicIter", ["m", "it"], ["it"]))
    with pytest.raises(OperatorError, match="The size of Iter should be 1"):
        net.run()
    assert not mutex.lock.locked()


def test_atomic_iter_from_many_threads(ws, fast_switching):
    ws.create_blob("m").value = TestMutex()
    ws.create_blob("it").value = np.zeros(1, np.int64)
    nets = [create(ws, make_op("AtomicIter", ["m", "it"], ["it"]), name=f"n{i}") for i in range(8)]

    def work(net) -> None:
        for _ in range(300):
            net.run()

    threads = [threading.Thread(target=work, args=(n,)) for n in nets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ws.get_blob("it").value[0] == 2400


@pytest.mark.skipif(
    not registry.has_operator("CreateMutex"), reason="CreateMutex is not registered"
)
def test_atomic_iter_with_create_mutex(ws):
    net = create(
        ws,
        make_op("CreateMutex", [], ["m"]),
        make_op("Iter", [], ["it"]),
        make_op("AtomicIter", ["m", "it"], ["it"]),
    )
    assert net.run()
    assert ws.get_blob("it").value[0] == 2
