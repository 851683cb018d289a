"""Unique and UnsortedSegmentSum/Mean."""

from __future__ import annotations

import numpy as np
import pytest

from caffe2.proto import caffe2_pb2
from caffe2.runtime.workspace import Workspace


def run_op(ws, op_type, ins, outs):
    return ws.run_operator_once(caffe2_pb2.OperatorDef(type=op_type, input=ins, output=outs))


@pytest.fixture
def ws():
    return Workspace()


def test_unique_with_remapping(ws):
    x = np.array([5, 3, 5, 7, 3], np.int64)
    ws.create_blob("x").value = x
    run_op(ws, "Unique", ["x"], ["u", "r"])
    u, r = ws.get_blob("u").value, ws.get_blob("r").value
    np.testing.assert_array_equal(u, [3, 5, 7])
    assert r.dtype == np.int32
    np.testing.assert_array_equal(u[r], x)
    run_op(ws, "Unique", ["x"], ["u2"])
    np.testing.assert_array_equal(ws.get_blob("u2").value, [3, 5, 7])


def test_unique_rejects_floats_and_matrices(ws):
    ws.create_blob("f").value = np.array([1.0], np.float32)
    with pytest.raises(RuntimeError, match="input 0 \\(f\\) has type float32"):
        run_op(ws, "Unique", ["f"], ["u"])
    ws.create_blob("m").value = np.zeros((2, 2), np.int32)
    with pytest.raises(RuntimeError, match="1-D"):
        run_op(ws, "Unique", ["m"], ["u"])


def test_unsorted_segment_sum_and_mean(ws):
    ws.create_blob("d").value = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    ws.create_blob("ids").value = np.array([2, 0, 2], np.int32)
    run_op(ws, "UnsortedSegmentSum", ["d", "ids"], ["s"])
    np.testing.assert_array_equal(ws.get_blob("s").value, [[3, 4], [0, 0], [6, 8]])
    run_op(ws, "UnsortedSegmentMean", ["d", "ids"], ["m"])
    np.testing.assert_array_equal(ws.get_blob("m").value, [[3, 4], [0, 0], [3, 4]])


def test_segment_ids_must_match_rows(ws):
    ws.create_blob("d").value = np.ones((3, 2), np.float32)
    ws.create_blob("ids").value = np.array([0, 1], np.int32)
    with pytest.raises(RuntimeError, match="one id per row") as e:
        run_op(ws, "UnsortedSegmentSum", ["d", "ids"], ["s"])
    assert e.value.blob == "ids"
    ws.create_blob("neg").value = np.array([0, -1, 0], np.int32)
    with pytest.raises(RuntimeError, match="negative segment id -1"):
        run_op(ws, "UnsortedSegmentSum", ["d", "neg"], ["s"])
