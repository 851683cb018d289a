"""Utility ops (spec 15.3, 15.10): Copy, Print, Cast, Reshape, Gather, ... and gradients."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from netdefs import TP, create, creation_error, fetch, grad_of, make_op, put, run, run_error

from caffe2.proto import caffe2_pb2
from caffe2.runtime import registry
from caffe2.runtime.workspace import Workspace


def schema_error(ws: Workspace, op: caffe2_pb2.OperatorDef) -> None:
    creation_error(ws, op, "did not pass schema checking")


@pytest.fixture
def ws(ws):
    put(ws, "x", np.arange(6, dtype=np.float32).reshape(2, 3))
    return ws


# ---- Copy, StopGradient, ZeroGradient ----------------------------------------------------


def test_copy_is_deep_and_reuses_its_own_buffer(ws):
    net = run(ws, make_op("Copy", ["x"], ["y"]))
    x, y = fetch(ws, "x"), fetch(ws, "y")
    np.testing.assert_array_equal(x, y)
    assert y.dtype == np.float32 and not np.shares_memory(x, y)
    x[0, 0] = 100.0
    assert fetch(ws, "y")[0, 0] == 0.0
    assert net.run() and fetch(ws, "y")[0, 0] == 100.0
    put(ws, "s", np.array([b"a", b"b"], dtype=object))
    run(ws, make_op("Copy", ["s"], ["t"]))
    assert fetch(ws, "t").tolist() == [b"a", b"b"] and fetch(ws, "t") is not fetch(ws, "s")


def test_copy_errors(ws):
    schema_error(ws, make_op("Copy", ["x"], ["x"]))
    put(ws, "c", b"bytes")
    e = run_error(ws, make_op("Copy", ["c"], ["y"]), r"input 0 \(c\) must be a tensor")
    assert e.blob == "c"


def test_copy_gradient_is_a_copy_of_the_output_gradient():
    op = make_op("Copy", ["x"], ["y"])
    op.device_option.random_seed = 3
    ops, g_in = grad_of(op, ["y_grad"])
    assert g_in == ["x_grad"] and len(ops) == 1
    g = ops[0]
    assert (g.type, list(g.input), list(g.output)) == ("Copy", ["y_grad"], ["x_grad"])
    assert g.is_gradient_op and g.device_option.random_seed == 3
    assert grad_of(op, [None]) == ([], [None])


def test_stop_gradient_identity_and_no_gradient(ws):
    run(ws, make_op("StopGradient", ["x"], ["y"]), make_op("StopGradient", ["x"], ["x"]))
    np.testing.assert_array_equal(fetch(ws, "y"), fetch(ws, "x"))
    assert not np.shares_memory(fetch(ws, "y"), fetch(ws, "x"))
    assert grad_of(make_op("StopGradient", ["x"], ["y"]), ["y_grad"]) == ([], [None])
    put(ws, "c", b"bytes")
    run_error(ws, make_op("StopGradient", ["c"], ["c"]), "must be a tensor")


def test_zero_gradient_is_a_forward_no_op_with_zero_gradient(ws):
    before = fetch(ws, "x").copy()
    run(ws, make_op("ZeroGradient", ["x"], []))
    np.testing.assert_array_equal(fetch(ws, "x"), before)
    schema_error(ws, make_op("ZeroGradient", ["x"], ["y"]))
    ops, g_in = grad_of(make_op("ZeroGradient", ["x"], []), [])
    assert g_in == ["x_grad"]
    (g,) = ops
    assert (g.type, list(g.input), list(g.output)) == ("ConstantFill", ["x"], ["x_grad"])
    run(ws, g)
    z = fetch(ws, "x_grad")
    assert z.shape == (2, 3) and z.dtype == np.float32 and not z.any()


# ---- Print -------------------------------------------------------------------------------


def test_print_logs_type_dims_and_values(ws, caplog):
    put(ws, "i", np.array([[1, 2], [3, 4]], np.int64))
    put(ws, "b", np.array([True, False]))
    put(ws, "s", np.array([b"hi", b"yo"], dtype=object))
    with caplog.at_level(logging.INFO, logger="caffe2"):
        run(
            ws,
            make_op("Print", ["x"], []),
            make_op("Print", ["i"], [], limit=3),
            make_op("Print", ["b"], []),
            make_op("Print", ["s"], []),
        )
    lines = [r.getMessage() for r in caplog.records]
    assert "Tensor x of type float. Dims: (2,3,): 0,1,2,3,4,5" in lines
    assert "Tensor i of type long. Dims: (2,2,): 1,2,3" in lines
    assert "Tensor b of type bool. Dims: (2,): 1,0" in lines
    assert "Tensor s of type std::string. Dims: (2,): hi,yo" in lines


def test_print_non_tensor_logs_its_type(ws, caplog):
    put(ws, "c", b"bytes")
    with caplog.at_level(logging.INFO, logger="caffe2"):
        run(ws, make_op("Print", ["c"], []))
    assert "Blob of type: std::string" in caplog.text


def test_print_to_file_every_n(tmp_path):
    ws = Workspace(root_folder=str(tmp_path))
    path = tmp_path / "v.log"
    path.write_text("stale\n")
    put(ws, "v", np.array([1.5, 2.0], np.float32))
    net = create(ws, make_op("Print", ["v"], [], to_file=1, every_n=2))
    assert path.read_text() == ""  # truncated when the op is created
    for k in range(5):
        ws.get_blob("v").value = np.array([k], np.float64)
        assert net.run()
    # Printed on runs 1, 3, 5.
    assert path.read_text().splitlines() == [
        f"Tensor v of type double. Dims: (1,): {k}" for k in (0, 2, 4)
    ]


def test_print_errors(tmp_path):
    ws = Workspace(root_folder=str(tmp_path / "missing_dir"))
    put(ws, "v", np.zeros(1, np.float32))
    creation_error(ws, make_op("Print", ["v"], [], to_file=1), "Failed to open TensorPrinter file")
    creation_error(ws, make_op("Print", ["v"], [], every_n=0), "every_n must be >= 1")
    creation_error(ws, make_op("Print", ["v"], [], limit=-1), "limit must be >= 0")


# ---- IsEmpty, Shape, Size ----------------------------------------------------------------


def test_is_empty_shape_size(ws):
    put(ws, "e", np.zeros((0, 3), np.int32))
    net = run(
        ws,
        make_op("IsEmpty", ["x"], ["xe"]),
        make_op("IsEmpty", ["e"], ["ee"]),
        make_op("Shape", ["x"], ["xs"]),
        make_op("Size", ["x"], ["xn"]),
        make_op("Shape", ["e"], ["es"]),
    )
    assert fetch(ws, "xe").shape == () and fetch(ws, "xe").dtype == np.bool_
    assert not fetch(ws, "xe") and fetch(ws, "ee")
    assert fetch(ws, "xs").dtype == np.int64 and fetch(ws, "xs").tolist() == [2, 3]
    assert fetch(ws, "es").tolist() == [0, 3]
    assert (
        fetch(ws, "xn").dtype == np.int64 and fetch(ws, "xn").shape == () and fetch(ws, "xn") == 6
    )
    ws.get_blob("x").value = np.array(1.0, np.float32)
    assert net.run()
    assert fetch(ws, "xs").shape == (0,) and fetch(ws, "xn") == 1
    put(ws, "c", b"bytes")
    for t in ("IsEmpty", "Shape", "Size"):
        assert run_error(ws, make_op(t, ["c"], ["o"]), "must be a tensor").blob == "c"


# ---- Cast --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "to, np_dtype",
    [
        (TP.INT32, np.int32),
        ("int64", np.int64),
        ("DOUBLE", np.float64),
        ("float16", np.float16),
        (TP.BOOL, np.bool_),
        (TP.UINT8, np.uint8),
        (TP.FLOAT, np.float32),
    ],
)
def test_cast_targets(ws, to, np_dtype):
    put(ws, "f", np.array([-1.7, 0.0, 2.9], np.float64 if np_dtype != np.uint8 else np.float32))
    if np_dtype == np.uint8:
        ws.get_blob("f").value = np.array([0.5, 1.9, 255.9], np.float32)
    run(ws, make_op("Cast", ["f"], ["y"], to=to))
    y, f = fetch(ws, "y"), fetch(ws, "f")
    assert y.dtype == np.dtype(np_dtype)
    np.testing.assert_array_equal(y, f.astype(np_dtype))
    assert not np.shares_memory(y, f)


def test_cast_truncates_toward_zero_and_defaults_to_float(ws):
    put(ws, "f", np.array([-1.7, -0.5, 2.9], np.float32))
    run(ws, make_op("Cast", ["f"], ["i"], to=TP.INT32), make_op("Cast", ["i"], ["g"]))
    assert fetch(ws, "i").tolist() == [-1, 0, 2]
    assert fetch(ws, "g").dtype == np.float32 and fetch(ws, "g").tolist() == [-1.0, 0.0, 2.0]


def test_cast_construction_errors(ws):
    creation_error(
        ws, make_op("Cast", ["x"], ["y"], to=TP.UNDEFINED), "must have 'to' argument of type"
    )
    creation_error(
        ws, make_op("Cast", ["x"], ["y"], to="string"), "Casting to and from strings is not"
    )
    creation_error(ws, make_op("Cast", ["x"], ["y"], to=TP.BYTE), "BYTE is deprecated")
    creation_error(ws, make_op("Cast", ["x"], ["y"], to=42), "Unexpected 'to' argument value: 42")
    creation_error(ws, make_op("Cast", ["x"], ["y"], to="nosuch"), "Unknown 'to' argument: NOSUCH")
    schema_error(ws, make_op("Cast", ["x"], ["x"], to=TP.INT32))


def test_cast_run_errors(ws):
    put(ws, "f", np.array([1.0, np.nan], np.float32))
    e = run_error(ws, make_op("Cast", ["f"], ["y"], to=TP.INT32), "NaN, infinity or a value out")
    assert e.blob == "f"
    ws.get_blob("f").value = np.array([3e9], np.float64)
    run_error(ws, make_op("Cast", ["f"], ["y"], to=TP.INT32), "out of range")
    ws.get_blob("f").value = np.array([-1.0], np.float64)
    run_error(ws, make_op("Cast", ["f"], ["y"], to=TP.UINT8), "out of range")
    put(ws, "s", np.array([b"1"], dtype=object))
    run_error(ws, make_op("Cast", ["s"], ["y"], to=TP.INT32), "Casting to and from strings")
    run_error(
        ws, make_op("Cast", ["x"], ["y"], to=TP.INT32, from_type=TP.INT64), "'from_type' is int64"
    )


def test_cast_gradient_casts_back(ws):
    op = make_op("Cast", ["x"], ["y"], to="int32", from_type=TP.FLOAT)
    run(ws, op)
    ops, g_in = grad_of(op, ["y_grad"])
    assert g_in == ["x_grad"]
    (g,) = ops
    assert g.is_gradient_op and (g.type, list(g.input)) == ("Cast", ["y_grad"])
    args = {a.name: a.i for a in g.arg}
    assert args == {"to": TP.FLOAT, "from_type": TP.INT32}
    put(ws, "y_grad", np.array([[1, 2, 3], [4, 5, 6]], np.int32))
    run(ws, g)
    assert fetch(ws, "x_grad").dtype == np.float32
    with pytest.raises(RuntimeError, match="'from_type' of type int or string is required"):
        grad_of(make_op("Cast", ["x"], ["y"], to=TP.INT32), ["y_grad"])


# ---- Reshape -----------------------------------------------------------------------------


def test_reshape_with_arg_zero_and_minus_one(ws):
    net = run(ws, make_op("Reshape", ["x"], ["y", "old"], shape=[0, -1, 1]))
    y, old, x = fetch(ws, "y"), fetch(ws, "old"), fetch(ws, "x")
    assert y.shape == (2, 3, 1) and old.dtype == np.int64 and old.tolist() == [2, 3]
    assert not np.shares_memory(y, x)
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))
    ws.get_blob("x").value = np.zeros((4, 2), np.float32)
    assert net.run()
    assert fetch(ws, "y").shape == (4, 2, 1) and fetch(ws, "old").tolist() == [4, 2]


def test_reshape_from_input_and_in_place(ws):
    put(ws, "s32", np.array([3, -1], np.int32))
    run(ws, make_op("Reshape", ["x", "s32"], ["x", "old"]))
    assert fetch(ws, "x").shape == (3, 2)
    assert fetch(ws, "old").dtype == np.int32 and fetch(ws, "old").tolist() == [2, 3]
    np.testing.assert_array_equal(fetch(ws, "x").reshape(-1), np.arange(6))


@pytest.mark.parametrize(
    "shape, match",
    [
        ([4, -1], r"does not agree with the input data. \(6 vs 4\)"),
        ([5], r"does not agree with the input data. \(6 != 5\)"),
        ([2, 0, 0], r"Can not reshape a non-zero size \(6\) tensor to zero size"),
    ],
)
def test_reshape_run_errors(ws, shape, match):
    run_error(ws, make_op("Reshape", ["x"], ["y", "old"], shape=shape), match)


def test_reshape_zero_size_and_inference_error(ws):
    put(ws, "e", np.zeros((0, 3), np.float32))
    run(ws, make_op("Reshape", ["e"], ["y", "old"], shape=[-1, 0]))
    assert fetch(ws, "y").shape == (0, 3)
    # A 0 past the input's dims stays 0.
    run(ws, make_op("Reshape", ["e"], ["y", "old"], shape=[3, 0, 0]))
    assert fetch(ws, "y").shape == (3, 3, 0)
    run_error(
        ws, make_op("Reshape", ["e"], ["y", "old"], shape=[0, -1]), "can not be inferred since"
    )


def test_reshape_construction_and_input_errors(ws):
    creation_error(
        ws, make_op("Reshape", ["x"], ["y", "o"], shape=[-1, -1]), "more than one missing dim"
    )
    creation_error(ws, make_op("Reshape", ["x"], ["y", "o"], shape=[-2, 3]), "invalid dimension")
    creation_error(ws, make_op("Reshape", ["x"], ["y", "o"]), "Argument `shape` is missing")
    put(ws, "s", np.array([6], np.int64))
    creation_error(
        ws, make_op("Reshape", ["x", "s"], ["y", "o"], shape=[6]), "do not pass in the argument"
    )
    schema_error(ws, make_op("Reshape", ["x"], ["y"], shape=[6]))
    put(ws, "sf", np.array([6.0], np.float32))
    assert run_error(ws, make_op("Reshape", ["x", "sf"], ["y", "o"]), "int32 or int64").blob == "sf"
    put(ws, "s2", np.array([[6]], np.int64))
    run_error(ws, make_op("Reshape", ["x", "s2"], ["y", "o"]), "Shape should be 1-D")


def test_reshape_gradient_uses_old_shape(ws):
    op = make_op("Reshape", ["x"], ["y", "old"], shape=[-1])
    run(ws, op)
    ops, g_in = grad_of(op, ["y_grad", None])
    assert g_in == ["x_grad"]
    (g,) = ops
    assert list(g.input) == ["y_grad", "old"] and list(g.output) == ["x_grad", "_x_grad_dims"]
    assert not g.arg and g.is_gradient_op
    put(ws, "y_grad", np.ones(6, np.float32))
    run(ws, g)
    assert fetch(ws, "x_grad").shape == (2, 3)


# ---- Transpose, Gather -------------------------------------------------------------------


def test_transpose_default_and_axes(ws):
    put(ws, "t", np.arange(24, dtype=np.int32).reshape(2, 3, 4))
    run(ws, make_op("Transpose", ["t"], ["r"]), make_op("Transpose", ["t"], ["p"], axes=[1, 2, 0]))
    t = fetch(ws, "t")
    np.testing.assert_array_equal(fetch(ws, "r"), t.transpose())
    np.testing.assert_array_equal(fetch(ws, "p"), t.transpose(1, 2, 0))
    assert fetch(ws, "p").flags.c_contiguous and not np.shares_memory(fetch(ws, "p"), t)


def test_transpose_errors(ws):
    creation_error(
        ws, make_op("Transpose", ["x"], ["y"], axes=[0, 2]), "Axes should be a permutation"
    )
    creation_error(
        ws, make_op("Transpose", ["x"], ["y"], axes=[0, 0]), "Axes should be a permutation"
    )
    e = run_error(ws, make_op("Transpose", ["x"], ["y"], axes=[2, 0, 1]), "do not match the 2")
    assert e.blob == "x"


def test_transpose_gradient_is_the_inverse_permutation(ws):
    put(ws, "t", np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    op = make_op("Transpose", ["t"], ["p"], axes=[1, 2, 0])
    run(ws, op)
    ops, g_in = grad_of(op, ["p"])
    assert g_in == ["t_grad"]
    (g,) = ops
    assert list(g.arg[0].ints) == [2, 0, 1]
    run(ws, g)
    np.testing.assert_array_equal(fetch(ws, "t_grad"), fetch(ws, "t"))


def test_gather(ws):
    put(ws, "i32", np.array([[1, 0], [1, 1]], np.int32))
    put(ws, "i64", np.array([0], np.int64))
    put(ws, "s", np.array([b"a", b"b"], dtype=object))
    run(
        ws,
        make_op("Gather", ["x", "i32"], ["g"]),
        make_op("Gather", ["x", "i64"], ["h"]),
        make_op("Gather", ["s", "i32"], ["gs"]),
    )
    x = fetch(ws, "x")
    np.testing.assert_array_equal(fetch(ws, "g"), x[[[1, 0], [1, 1]]])
    assert fetch(ws, "g").shape == (2, 2, 3)
    np.testing.assert_array_equal(fetch(ws, "h"), x[[0]])
    assert not np.shares_memory(fetch(ws, "h"), x)
    assert fetch(ws, "gs").tolist() == [[b"b", b"a"], [b"b", b"b"]]


def test_gather_errors(ws):
    put(ws, "bad", np.array([0, 2], np.int64))
    e = run_error(ws, make_op("Gather", ["x", "bad"], ["g"]), "out of DATA bounds, id=2 data_dim=2")
    assert e.blob == "bad"
    ws.get_blob("bad").value = np.array([-1], np.int32)
    run_error(ws, make_op("Gather", ["x", "bad"], ["g"]), "id=-1")
    ws.get_blob("bad").value = np.array([0.0], np.float32)
    run_error(ws, make_op("Gather", ["x", "bad"], ["g"]), "INDICES must be int32 or int64")
    put(ws, "sc", np.array(1.0, np.float32))
    put(ws, "ok", np.array([0], np.int32))
    run_error(ws, make_op("Gather", ["sc", "ok"], ["g"]), "DATA should be at least 1-D")


# ---- GetAllBlobNames ---------------------------------------------------------------------


def test_get_all_blob_names():
    parent = Workspace()
    put(parent, "p", np.zeros(1))
    child = parent.child()
    put(child, "c", np.zeros(1))
    run(child, make_op("GetAllBlobNames", [], ["all"]))
    run(child, make_op("GetAllBlobNames", [], ["local"], include_shared=0))
    assert fetch(child, "all").dtype == object
    assert fetch(child, "all").tolist() == [b"all", b"c", b"p"]
    # The output blob exists from construction, so it lists itself.
    assert fetch(child, "local").tolist() == [b"all", b"c", b"local"]
    assert registry.get_schema("GetAllBlobNames").needs_workspace
