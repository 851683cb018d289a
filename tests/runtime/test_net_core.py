"""Net construction checks, operator creation, argument parsing and error reports."""

from __future__ import annotations

import numpy as np
import pytest
from netdefs import make_net

from caffe2.proto import caffe2_pb2
from caffe2.runtime import registry
from caffe2.runtime.net import OperatorError


@pytest.fixture
def ws(ws):
    ws.create_blob("x").value = np.array([1.0, -2.0, 3.0], np.float32)
    ws.create_blob("y").value = np.array([1.0, 1.0, 1.0], np.float32)
    return ws


def test_simple_net_runs_and_creates_outputs(ws):
    nd = make_net("n", ("Add", ["x", "y"], ["s"], {}), ("Relu", ["s"], ["r"], {}))
    net = ws.create_net(nd)
    assert ws.has_blob("s") and ws.get_blob("s").value is None  # created empty
    assert net.run()
    np.testing.assert_array_equal(ws.get_blob("r").value, [2.0, 0.0, 4.0])
    assert ws.nets() == ["n"]


def test_missing_input_names_op_and_blob(ws):
    nd = make_net("n", ("Relu", ["nope"], ["r"], {}))
    with pytest.raises(RuntimeError, match="Encountered a non-existing input blob: nope") as e:
        ws.create_net(nd)
    assert "net 'n', op #0 (Relu)" in str(e.value)
    assert "enforce fail" in str(e.value)
    assert ws.get_net("n") is None


def test_unknown_op_lists_close_matches(ws):
    nd = make_net("n", ("Relu", ["x"], ["r"], {}), ("Reluu", ["x"], ["q"], {}))
    with pytest.raises(RuntimeError, match=r"Did you mean: \['Relu'") as e:
        ws.create_net(nd)
    assert "op #1 (Reluu)" in str(e.value)
    assert ws.last_failed_op_net_position == 1


def test_failure_of_op_zero_keeps_previous_position(ws):
    ws.last_failed_op_net_position = 5
    with pytest.raises(RuntimeError):
        ws.create_net(make_net("n", ("Nope", ["x"], ["r"], {})))
    assert ws.last_failed_op_net_position == 5


def test_schema_count_and_inplace_checks(ws):
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("a", ("Relu", ["x", "y"], ["r"], {})))
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        ws.create_net(make_net("b", ("EQ", ["x", "y"], ["x"], {})))
    ws.create_net(make_net("c", ("Add", ["x", "y"], ["y"], {})))  # Add allows (1, 0)


def test_external_input_source_check(ws):
    nd = make_net("n", ("Relu", ["x"], ["r"], {}), external_input=["y"])
    with pytest.raises(RuntimeError, match="Source for input x is unknown for net n"):
        ws.create_net(nd)
    # Without declared external inputs the check only logs.
    ws.create_net(make_net("m", ("Relu", ["x"], ["r"], {})))


def test_external_output_must_be_produced(ws):
    nd = make_net("n", ("Relu", ["x"], ["r"], {}), external_output=["zz", "aa", "r"])
    with pytest.raises(RuntimeError, match="never produced by the net n, the first one is aa"):
        ws.create_net(nd)


def test_node_name_must_be_unset(ws):
    nd = make_net("n", ("Relu", ["x"], ["r"], {}))
    nd.op[0].device_option.node_name = ""
    with pytest.raises(RuntimeError, match="node_name must be empty"):
        ws.create_net(nd)


def test_overwrite_rules(ws):
    nd = make_net("n", ("Relu", ["x"], ["r"], {}))
    ws.create_net(nd)
    with pytest.raises(RuntimeError, match="I respectfully refuse to overwrite"):
        ws.create_net(nd)
    ws.create_net(nd, overwrite=True)


def test_net_needs_a_name(ws):
    with pytest.raises(RuntimeError, match="Net definition should have a name"):
        ws.create_net(caffe2_pb2.NetDef())
    ws.create_net(caffe2_pb2.NetDef(name=""))  # presence check: empty name is accepted


def test_unknown_and_empty_net_type(ws):
    assert ws.create_net(make_net("n", type="no_such_type")) is None
    assert ws.create_net(make_net("m", type="")) is None
    assert ws.nets() == []


def test_runtime_error_names_net_op_and_blobs(ws):
    ws.create_blob("z").value = np.ones(4, np.float32)
    nd = make_net("chk", ("Relu", ["x"], ["r"], {}), ("Add", ["x", "z"], ["s"], {}))
    net = ws.create_net(nd)
    with pytest.raises(OperatorError) as e:
        net.run()
    err = e.value
    assert isinstance(err, RuntimeError)
    assert (err.net_name, err.op_index, err.op_type) == ("chk", 1, "Add")
    text = str(err)
    assert "Dimension mismatch" in text and "input z: Tensor float32 [4]" in text
    assert ws.last_failed_op_net_position == 1
    # The workspace keeps every blob and the net runs again once the input is fixed.
    ws.get_blob("z").value = np.ones(3, np.float32)
    assert net.run()
    np.testing.assert_array_equal(ws.get_blob("s").value, [2.0, -1.0, 4.0])


def test_kernel_reruns_after_input_shape_changes(ws):
    net = ws.create_net(make_net("n", ("Add", ["x", "y"], ["s"], {})))
    net.run()
    first = ws.get_blob("s").value
    ws.get_blob("x").value = np.zeros((2, 2), np.float32)
    ws.get_blob("y").value = np.ones((2, 2), np.float32)
    net.run()
    np.testing.assert_array_equal(ws.get_blob("s").value, np.ones((2, 2)))
    assert first.shape == (3,)  # the old buffer was not resized under anyone


def test_argument_field_and_range_checks(ws):
    nd = make_net("n", ("Add", ["x", "y"], ["s"], {"broadcast": 1.0}))
    with pytest.raises(RuntimeError, match="does not have the right field: expected field i"):
        ws.create_net(nd)
    nd = make_net("n", ("Add", ["x", "y"], ["s"], {"axis": 0}))
    with pytest.raises(RuntimeError, match="Do not specify axis or axis_str"):
        ws.create_net(nd)


def test_duplicate_arguments(ws):
    nd = make_net("n", ("Add", ["x", "y"], ["s"], {}))
    nd.op[0].arg.add(name="broadcast", i=1)
    nd.op[0].arg.add(name="broadcast", i=1)
    ws.create_net(nd)  # identical duplicates only warn
    nd.op[0].arg.add(name="broadcast", i=0)
    with pytest.raises(RuntimeError, match="Found argument of the same name broadcast"):
        ws.create_net(nd, overwrite=True)


def test_net_device_option_copied_into_ops(ws):
    nd = make_net("n", ("Relu", ["x"], ["r"], {}))
    nd.device_option.random_seed = 7
    net = ws.create_net(nd)
    assert net.ops[0].opdef.device_option.random_seed == 7
    assert not nd.op[0].HasField("device_option")


def test_run_operator_once_and_run_net_once(ws):
    op = caffe2_pb2.OperatorDef(type="Relu", input=["x"], output=["r"])
    assert ws.run_operator_once(op)
    np.testing.assert_array_equal(ws.get_blob("r").value, [1.0, 0.0, 3.0])
    assert ws.run_net_once(make_net("tmp", ("Relu", ["x"], ["q"], {})))
    assert ws.nets() == []
    with pytest.raises(RuntimeError, match="Could not create net: t of type bad"):
        ws.run_net_once(make_net("t", type="bad"))
    ws.get_blob("y").value = b"not a tensor"
    with pytest.raises(RuntimeError, match=r"standalone op \(Relu\)") as e:
        ws.run_operator_once(caffe2_pb2.OperatorDef(type="Relu", input=["y"], output=["y2"]))
    assert "input 0 (y) must be a tensor, but the blob holds std::string" in str(e.value)


def test_run_net_missing_returns_false(ws):
    assert ws.run_net("absent") is False


def test_registry_rejects_duplicates_and_lists_types():
    types = registry.registered_types()
    assert "Add" in types and types == sorted(types)
    with pytest.raises(RuntimeError, match="registered twice"):
        registry.operator("Add")(lambda op: None)
    assert registry.has_operator("Relu") and not registry.has_operator("NOEXIST")


def test_duplicate_net_arguments_are_an_error(ws):
    nd = make_net("n", ("Relu", ["x"], ["r"], {}))
    nd.arg.add(name="num_workers", i=2)
    nd.arg.add(name="num_workers", i=2)
    with pytest.raises(RuntimeError, match=r"Duplicated argument name \[num_workers\]"):
        ws.create_net(nd)


def test_simple_net_records_no_stats(ws):
    net = ws.create_net(make_net("n", ("Relu", ["x"], ["r"], {})))
    assert net.stats() is None
