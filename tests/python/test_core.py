"""caffe2.python.core: BlobReference, CreateOperator and Net (spec runtime.md 5.1-5.6).

Net names are process-global; tests that check exact name sequences run against an empty
registry (monkeypatched) so that they do not depend on other tests.
"""

import os
import pickle
import sys

import numpy as np
import pytest

from caffe2.proto import caffe2_pb2
from caffe2.python import core, scope, workspace
from caffe2.python.core import BlobReference, Net


@pytest.fixture(autouse=True)
def _fresh_workspace():
    workspace.ResetWorkspace()
    yield
    workspace.ResetWorkspace()


@pytest.fixture
def fresh_names(monkeypatch):
    monkeypatch.setattr(Net, "_net_names_used", set())


# ---- module-level items ---------------------------------------------------------------------


def test_data_type_values():
    assert core.DataType.FLOAT == 1 and core.DataType.INT32 == 2 and core.DataType.BOOL == 5
    assert core.DataType.STRING == 4 and core.DataType.INT64 == 10
    assert core.DataType.FLOAT16 == 12 and core.DataType.DOUBLE == 13
    assert core.DataType.UNDEFINED == 0


def test_is_operator():
    assert core.IsOperator("Relu")
    assert not core.IsOperator("NOEXIST")
    assert core.IsOperatorWithEngine("Relu", "DEFAULT")
    assert not core.IsOperatorWithEngine("Relu", "NOEXIST")
    assert core.op_registry_key("Relu", "CUDNN") == "Relu_ENGINE_CUDNN"
    assert core.op_registry_key("Relu", "") == "Relu"
    core.RefreshRegisteredOperators()
    assert core.IsOperator("Relu")
    assert set(workspace.RegisteredOperators()) <= core._REGISTERED_OPERATORS


def test_global_init_args_are_recorded():
    before = core.GetGlobalInitArgs()
    core.GlobalInit(["prog", "--caffe2_log_level=0"])
    after = core.GetGlobalInitArgs()
    assert after == before + ["--caffe2_log_level=0"]
    after.append("x")
    assert core.GetGlobalInitArgs() != after  # a copy


def test_device_option_and_equality():
    d = core.DeviceOption(caffe2_pb2.CUDA, 1, random_seed=5, node_name="n")
    assert (d.device_type, d.cuda_gpu_id, d.random_seed, d.node_name) == (1, 1, 5, "n")
    cpu = core.DeviceOption(caffe2_pb2.CPU)
    assert cpu.HasField("device_type") and cpu.HasField("cuda_gpu_id")
    assert not cpu.HasField("random_seed") and not cpu.HasField("node_name")
    eq = core.device_option_equal
    assert eq(None, None) and not eq(cpu, None)
    assert eq(cpu, core.DeviceOption(caffe2_pb2.CPU, 3))  # gpu id ignored on CPU
    assert not eq(cpu, core.DeviceOption(caffe2_pb2.CUDA, 0))
    assert eq(d, core.DeviceOption(caffe2_pb2.CUDA, 1))
    assert not eq(d, core.DeviceOption(caffe2_pb2.CUDA, 2))
    assert not eq(d, core.DeviceOption(caffe2_pb2.CUDA, 1), ignore_node_name=False)
    assert not eq(d, core.DeviceOption(caffe2_pb2.CUDA, 1, node_name="n"), ignore_random_seed=False)


def test_get_net_name_and_output_to_list():
    net = Net("tc_gnn")
    assert core.get_net_name(net) == net.Name()
    assert core.get_net_name(caffe2_pb2.NetDef(name="x")) == "x"
    assert core.get_net_name("plain") == "plain"
    b = BlobReference("b")
    assert core.output_to_list(b) == [b]
    assert core.output_to_list((b, b)) == [b, b]
    with pytest.raises(AssertionError):
        core.output_to_list("b")


# ---- BlobReference ----------------------------------------------------------------------------


def test_blob_reference_equality_and_text():
    b = BlobReference("x")
    assert b == "x" and b == b"x" and b == BlobReference("x")
    assert b != "y" and b != 3 and not (b != "x")
    assert hash(b) == hash("x")
    assert {b: 1}["x"] == 1
    assert str(b) == "x" and repr(b) == 'BlobReference("x")'
    assert str(BlobReference(b"bytes")) == "bytes"
    assert str(BlobReference(12)) == "12"
    assert b.Net() is None


def test_blob_reference_does_not_add_scope():
    with core.NameScope("s"):
        assert str(BlobReference("x")) == "x"
        assert str(core.ScopedBlobReference("x")) == "s/x"
        assert core.ScopedName(b"y") == "s/y"


def test_blob_reference_concatenation():
    net = Net("tc_concat")
    b = BlobReference("x", net)
    c = b + "_suffix"
    assert isinstance(c, BlobReference) and str(c) == "x_suffix" and c.Net() is net
    d = "pre_" + b
    assert isinstance(d, BlobReference) and str(d) == "pre_x" and d.Net() is net
    with pytest.raises(RuntimeError, match="Cannot add BlobReference to a non-string"):
        b + 1
    with pytest.raises(RuntimeError, match="Cannot add a non-string to BlobReference"):
        1 + b


def test_blob_reference_name_scope():
    assert BlobReference("a/b/c").GetNameScope() == "a/b/"
    assert BlobReference("c").GetNameScope() == ""
    assert BlobReference("a/b/c").GetUnscopedName() == "c"


def test_blob_reference_operator_sugar():
    net = Net("tc_sugar")
    x = net.AddExternalInput("x")
    conv = net.Relu(x, "conv")
    out = conv.Relu([], conv)
    assert out == "conv"
    assert list(net.Proto().op[1].input) == ["conv"]
    assert list(net.Proto().op[1].output) == ["conv"]
    # a list is mutated in place: the blob is inserted at position 0
    inputs = ["conv"]
    s = conv.Sum(inputs, "s")
    assert inputs == [conv, "conv"] and str(s) == "s"
    assert list(net.Proto().op[2].input) == ["conv", "conv"]


def test_blob_reference_sugar_errors():
    with pytest.raises(RuntimeError, match="does not have a net source"):
        BlobReference("x").Relu()
    net = Net("tc_sugar_err")
    b = net.ConstantFill([], "b", shape=[1], value=1.0)
    with pytest.raises(RuntimeError, match=r"Method Reluu is not a registered operator.*Relu"):
        b.Reluu()
    with pytest.raises(AttributeError):
        b.__something__  # noqa: B018


def test_blob_reference_pickles():
    b = pickle.loads(pickle.dumps(BlobReference("p")))
    assert b == "p" and b.Net() is None


# ---- _RectifyInputOutput and CreateOperator ---------------------------------------------------


def test_rectify_input_output():
    with core.NameScope("s"):
        r = core._RectifyInputOutput(["a", b"b", BlobReference("c")])
        assert [str(x) for x in r] == ["s/a", "s/b", "c"]
        assert [str(x) for x in core._RectifyInputOutput("a")] == ["s/a"]
        assert [str(x) for x in core._RectifyInputOutput(BlobReference("a"))] == ["a"]
    with pytest.raises(TypeError, match="I/O blob #1 of unsupported type"):
        core._RectifyInputOutput(["a", 3])
    with pytest.raises(TypeError, match="Unknown input/output type"):
        core._RectifyInputOutput(3)
    with pytest.raises(TypeError):
        core._RectifyInputOutput({"a"})


def test_create_operator_basic_fields():
    op = core.CreateOperator("Ludicrous", ["x"], ["y"], arg1=1, arg2="s", arg3=[1.0, 2.0])
    assert op.type == "Ludicrous"
    assert op.HasField("name") and op.name == ""
    assert list(op.input) == ["x"] and list(op.output) == ["y"]
    assert not op.HasField("device_option")
    assert not op.HasField("engine")
    assert [a.name for a in op.arg] == ["arg1", "arg2", "arg3"]
    assert op.arg[0].i == 1 and op.arg[1].s == b"s" and list(op.arg[2].floats) == [1.0, 2.0]
    # the name field is serialized even when empty
    assert b"\x1a\x00" in op.SerializeToString()


def test_create_operator_device_engine_seed_control():
    dev = core.DeviceOption(caffe2_pb2.CPU, 0)
    op = core.CreateOperator("Relu", "x", "y", device_option=dev, engine="")
    assert op.HasField("device_option") and op.HasField("engine") and op.engine == ""
    with core.DeviceScope(core.DeviceOption(caffe2_pb2.CUDA, 2)):
        op = core.CreateOperator("Relu", "x", "y")
        assert op.device_option.cuda_gpu_id == 2
        op = core.CreateOperator("Relu", "x", "y", device_option=dev)
        assert op.device_option.device_type == caffe2_pb2.CPU
    op = core.CreateOperator("Relu", "x", "y", random_seed=7, engine="CUDNN")
    assert op.device_option.random_seed == 7 and op.engine == "CUDNN"
    assert all(a.name != "random_seed" for a in op.arg)
    op = core.CreateOperator("Relu", "x", "y", control_input=["c"], name="nm")
    assert list(op.control_input) == ["c"] and op.name == "nm"
    extra = caffe2_pb2.Argument(name="raw", i=3)
    op = core.CreateOperator("Relu", "x", "y", arg=[extra], k=1)
    assert [a.name for a in op.arg] == ["raw", "k"]


def test_create_operator_scopes_raw_strings_only():
    with core.NameScope("ns"):
        op = core.CreateOperator("Relu", "x", BlobReference("y"), control_input="c")
    assert list(op.input) == ["ns/x"] and list(op.output) == ["y"]
    assert list(op.control_input) == ["ns/c"]


def test_create_with_none_kwarg():
    with pytest.raises(ValueError):
        core.CreateOperator("Ludicrous", "x", "y", arg1=None)


def test_create_operator_debug_info(monkeypatch):
    monkeypatch.setenv("CAFFE2_DEBUG", "1")
    op = core.CreateOperator("Relu", "x", "y")
    assert "test_create_operator_debug_info" in op.debug_info
    monkeypatch.delenv("CAFFE2_DEBUG")
    assert not core.CreateOperator("Relu", "x", "y").HasField("debug_info")


# ---- Net naming -------------------------------------------------------------------------------


def test_net_name_sequence(fresh_names):
    assert [Net("net").Name() for _ in range(3)] == ["net", "net_1", "net_2"]
    assert Net("").Name() == ""
    assert Net("").Name() == "_1"
    assert Net(None).Name() == "_2"
    # a NetDef is renamed too
    assert Net(caffe2_pb2.NetDef(name="net")).Name() == "net_3"
    assert Net(caffe2_pb2.NetDef(name="other")).Name() == "other"


def test_net_name_suffix_applies_to_the_joined_name(fresh_names):
    assert Net("a_1").Name() == "a_1"
    assert Net("a").Name() == "a"
    assert Net("a").Name() == "a_2"  # a_1 is taken


def test_net_builder_prefix(fresh_names):
    from caffe2.python.net_builder import NetBuilder

    assert Net.current_prefix() == ""
    with NetBuilder("local/task"):
        assert Net.current_prefix() == "local/task"
        assert Net(None).Name() == "local/task"
        assert Net(None).Name() == "local/task_1"
        assert Net("x").Name() == "local/task/x"
    assert Net("x").Name() == "x"


def test_current_prefix_without_net_builder(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "caffe2.python.net_builder":
            raise ModuleNotFoundError("no", name="caffe2.python.net_builder")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    assert Net.current_prefix() == ""


def test_net_from_proto_next_name_index():
    proto = caffe2_pb2.NetDef(name="tc_idx")
    proto.op.add(type="Relu", input=["tc_idx_blob_3"], output=["tc_idx_blob_12"])
    net = Net(proto)
    # QUIRK: only one character after the prefix is parsed, so '12' counts as 1
    assert net.NextName() == net.Name() + "_blob_4"
    assert net.NextName() == net.Name() + "_blob_5"
    assert net.BlobIsDefined("tc_idx_blob_12")
    assert proto.name == "tc_idx"  # the given proto is copied, not renamed


def test_net_from_proto_copies_tables():
    proto = caffe2_pb2.NetDef(name="tc_tables", external_input=["a"])
    proto.op.add(type="Relu", input=["a"], output=["b"])
    net = Net(proto)
    assert net.BlobIsDefined("a") and net.BlobIsDefined("b") and not net.BlobIsDefined("c")
    net._CheckLookupTables()
    proto.op.add(type="Relu", input=["b"], output=["c"])
    assert not net.BlobIsDefined("c")


# ---- NextName / NextBlob ---------------------------------------------------------------------


def test_next_name_sequences():
    net = Net("tc_nn")
    n = net.Name()
    assert net.NextName() == n + "_blob_0"
    assert net.NextName() == n + "_blob_1"
    assert net.NextName("Sum") == n + "/Sum"
    assert net.NextName("Sum") == n + "/Sum"  # not reserved until defined
    net.Sum(["a"], n + "/Sum")
    assert net.NextName("Sum") == n + "/Sum_2"
    net.Sum(["a"], n + "/Sum_2")
    assert net.NextName("Sum") == n + "/Sum_3"
    assert net.NextName("Sum", output_id=0) == n + "/Sum:0"


def test_auto_outputs_of_ops():
    net = Net("tc_auto")
    n = net.Name()
    a = net.ConstantFill([], shape=[1], value=1.0)
    b = net.ConstantFill([], shape=[1], value=1.0)
    assert (str(a), str(b)) == (n + "/ConstantFill", n + "/ConstantFill_2")
    s0, s1 = net.Split([a], 2, axis=0)
    assert (str(s0), str(s1)) == (n + "/Split:0", n + "/Split:1")
    s0, s1 = net.Split([a], 2, axis=0)
    assert (str(s0), str(s1)) == (n + "/Split_2:0", n + "/Split_2:1")
    assert s0.Net() is net
    assert net.Print([a], 0) is None
    c = net.ConstantFill([], 1, shape=[1])
    assert str(c) == n + "/ConstantFill:0"


def test_auto_outputs_under_name_scope():
    net = Net("tc_auto_ns")
    n = net.Name()
    with core.NameScope("s"):
        a = net.ConstantFill([], shape=[1], value=1.0)
        b = net.ConstantFill([], shape=[1], value=1.0)
    assert str(a) == "s/" + n + "/ConstantFill"
    assert str(b) == "s/" + n + "/ConstantFill_2"
    # outside the scope the unscoped name is free
    assert net.NextName("ConstantFill") == n + "/ConstantFill"


def test_next_blob():
    net = Net("tc_nb")
    assert net.NextBlob() == "unnamed"
    assert net.NextBlob() == "unnamed_auto_0"
    assert net.NextBlob("x") == "x"
    assert net.NextBlob("x") == "x_auto_0"
    assert net.NextBlob("x") == "x_auto_1"
    net.ConstantFill([], "y", shape=[1])
    y = net.NextBlob("y")
    assert y == "y_auto_0" and isinstance(y, BlobReference) and y.Net() is None
    with core.NameScope("s"):
        assert net.NextScopedBlob("z") == "s/z"
        assert net.NextScopedBlob("z") == "s/z_auto_0"


# ---- op creation through the net ------------------------------------------------------------


def test_unknown_op_is_attribute_error_with_suggestions():
    net = Net("tc_unknown")
    with pytest.raises(AttributeError, match=r"Method Reluu is not a registered operator.*Relu"):
        _ = net.Reluu
    with pytest.raises(AttributeError):
        net.__foo__  # noqa: B018
    assert not hasattr(net, "name")
    assert "Relu" in dir(net)


def test_undefined_inputs_become_external_inputs():
    net = Net("tc_ext")
    net.Add(["a", "b"], "c")
    net.Add(["c", "a"], "d")
    assert list(net.Proto().external_input) == ["a", "b"]
    with core.NameScope("s"):
        net.Relu("e", "f")
    assert list(net.Proto().external_input) == ["a", "b", "s/e"]
    assert net.is_external_input("a") and not net.is_external_input("c")


def test_input_from_own_net_must_be_defined():
    net = Net("tc_own")
    with pytest.raises(AssertionError):
        net.Relu([BlobReference("undefined", net)], "y")


def test_external_inputs_and_outputs():
    net = Net("tc_extio")
    x = net.AddExternalInput("x")
    assert isinstance(x, BlobReference) and x.Net() is None
    y, z = net.AddExternalInputs("y", "z")
    assert (y, z) == ("y", "z")
    with pytest.raises(AssertionError, match="Net already contains an input named x"):
        net.AddExternalInput("x")
    with pytest.raises(AssertionError):
        net.AddExternalInput()
    out = net.Add([x, y], "out")
    net.AddExternalOutput(out)
    net.AddExternalOutput(out)  # duplicates are kept
    assert net.AddExternalOutputs(out) is None
    assert list(net.Proto().external_output) == ["out"] * 3
    with pytest.raises(AssertionError):
        net.AddExternalOutput("out")  # not a BlobReference
    with pytest.raises(AssertionError, match="is not defined"):
        net.AddExternalOutput(BlobReference("nope"))
    ins = net.external_inputs
    assert ins == ["x", "y", "z"] and all(b.Net() is None for b in ins)
    assert net.external_outputs[0].Net() is None
    with core.NameScope("s"):
        refs = net.AddScopedExternalInputs("w")
        assert refs == ["s/w"]
        net.Relu("w", "v")
        net.AddScopedExternalOutputs("v")
    assert net.Proto().external_output[-1] == "s/v"


def test_blob_queries():
    net = Net("tc_query")
    net.AddExternalInput("a")
    net.Relu("a", "b")
    net.Proto().external_output.append("b")
    assert net.UsesBlob("a") and not net.UsesBlob("b")
    assert net.UsedBlobNames() == {"a", "b"}
    assert net.GetBlobRef("b").Net() is net
    with pytest.raises(KeyError, match="Net does not define blob nope"):
        net.GetBlobRef("nope")
    # editing the live proto is seen by the next lookup
    net.Proto().op.add(type="Relu", input=["b"], output=["c"])
    assert net.BlobIsDefined("c")
    net._CheckLookupTables()
    net.extend_ops([core.CreateOperator("Relu", "c", "d")])
    assert net.BlobIsDefined("d")
    net._CheckLookupTables()


def test_const_dtype_mapping():
    net = Net("tc_const")
    cases = [
        (np.array([1, 2], dtype=np.int32), "GivenTensorIntFill", np.int32),
        (5, "GivenTensorInt64Fill", np.int64),
        ([1, 2], "GivenTensorInt64Fill", np.int64),
        (np.array(["ab", "c"]), "GivenTensorStringFill", object),
        ([b"x", b"y"], "GivenTensorStringFill", object),
        (np.array([True, False]), "GivenTensorBoolFill", np.bool_),
        (1.5, "GivenTensorFill", np.float32),
        (np.array([[1.0, 2.0]]), "GivenTensorFill", np.float32),
        (np.array([1, 2], dtype=np.int16), "GivenTensorFill", np.float32),
    ]
    blobs = []
    for value, op_type, dtype in cases:
        b = net.Const(value)
        op = net.Proto().op[-1]
        assert op.type == op_type
        assert str(b).startswith(net.Name() + "/" + op_type)
        blobs.append((b, value, dtype))
    t = net.Const(True)
    op = net.Proto().op[-1]
    assert op.type == "ConstantFill"
    assert {a.name: a for a in op.arg}["dtype"].i == core.DataType.BOOL
    named = net.Const([3, 4], blob_out="named", dtype=np.int32)
    assert named == "named" and net.Proto().op[-1].type == "GivenTensorIntFill"

    workspace.RunNetOnce(net)
    for b, value, dtype in blobs:
        got = workspace.FetchBlob(str(b))
        expected = np.array(value)
        assert got.dtype == np.dtype(dtype)
        assert got.shape == expected.shape
        if dtype is object:
            assert [v if isinstance(v, bytes) else v.encode() for v in expected.flat] == list(
                got.flat
            )
        else:
            np.testing.assert_array_equal(got, expected.astype(dtype))
    assert workspace.FetchBlob(str(t)).shape == () and bool(workspace.FetchBlob(str(t)))


def test_const_auto_names():
    net = Net("tc_const_names")
    n = net.Name()
    assert net.Const(1.0) == n + "/GivenTensorFill:0"
    assert net.Const(2.0) == n + "/GivenTensorFill_2:0"
    assert net.Const(np.array(3.0)) == n + "/GivenTensorFill_3:0"
    args = {a.name: a for a in net.Proto().op[0].arg}
    assert list(args["shape"].ints) == [] and list(args["values"].floats) == [1.0]


def test_log_info():
    net = Net("tc_log")
    b = net.ConstantFill([], "b", shape=[1], value=1.0)
    net.LogInfo("hello", b)
    types = [op.type for op in net.Proto().op]
    assert types == ["ConstantFill", "GivenTensorStringFill", "Print", "Print"]
    fill = net.Proto().op[1]
    assert fill.output[0] == net.Name() + "/log"
    assert list(net.Proto().op[2].input) == [fill.output[0]]
    assert list(net.Proto().op[3].input) == ["b"] and list(net.Proto().op[3].output) == []
    workspace.RunNetOnce(net)


def test_attributes():
    net = Net("tc_attr")
    assert net.get_attributes("x") == []
    assert "x" not in net._attr_dict
    net.add_attribute("x", 1)
    net.add_attribute("x", 2)
    assert net.get_attributes("x") == [1, 2]


def test_clone():
    net = Net("tc_clone_src")
    net.AddExternalInput("a")
    net.Relu("a", "b")
    net.Relu("b", "c")
    net.Relu("c", "d")
    net.AddExternalOutput(net.GetBlobRef("d"))
    net.add_attribute("k", "v")
    clone = net.Clone("tc_clone_dst", blob_remap={"a": "A", "d": "D"}, op_id_mask=[2, 0])
    p = clone.Proto()
    assert clone.Name() == "tc_clone_dst"
    assert [(list(o.input), list(o.output)) for o in p.op] == [(["c"], ["D"]), (["A"], ["b"])]
    assert list(p.external_input) == ["A"] and list(p.external_output) == ["D"]
    assert len(net.Proto().op) == 3  # the original is untouched
    # attribute lists are shared (shallow copy)
    clone.add_attribute("k", "w")
    assert net.get_attributes("k") == ["v", "w"]
    # a taken name gets a suffix
    assert net.Clone("tc_clone_dst").Name() == "tc_clone_dst_1"
    full = net.Clone("tc_clone_full")
    assert full.Proto().op == net.Proto().op
    assert full.BlobIsDefined("d")


def test_clone_if_subnets_are_renamed(fresh_names):
    then_net = Net("then")
    then_net.ConstantFill([], "t", shape=[1])
    else_net = Net("else")
    else_net.ConstantFill([], "e", shape=[1])
    net = Net("outer")
    net.Proto().op.add().CopyFrom(
        core.CreateOperator(
            "If", ["cond"], [], then_net=then_net.Proto(), else_net=else_net.Proto()
        )
    )
    clone = net.Clone("outer_clone", blob_remap={"t": "T"})
    args = {a.name: a for a in clone.Proto().op[0].arg}
    # Net(subnet) registers 'then_1', then the clone is named 'then_1_remapped'
    assert args["then_net"].n.name == "then_1_remapped"
    assert args["else_net"].n.name == "else_1_remapped"
    assert list(args["then_net"].n.op[0].output) == ["T"]
    assert {"then_1", "else_1", "then_1_remapped", "else_1_remapped"} <= Net._net_names_used


def test_append_net():
    a = Net("tc_append_a")
    a.AddExternalInput("x")
    a.Relu("x", "y")
    a.AddExternalOutput(a.GetBlobRef("y"))
    b = Net("tc_append_b")
    b.AddExternalInput("y", "z")
    b.Add(["y", "z"], "w")
    b.AddExternalOutput(b.GetBlobRef("w"))
    b.AddExternalOutput(b.GetBlobRef("y"))
    b.add_attribute("k", 1)
    assert a.AppendNet(b) is a
    p = a.Proto()
    assert list(p.external_input) == ["x", "z"]
    assert list(p.external_output) == ["y", "w"]
    assert [o.type for o in p.op] == ["Relu", "Add"]
    assert a.BlobIsDefined("w") and a.get_attributes("k") == []
    a._CheckLookupTables()


def test_run_all_on_devices_and_rand_seed():
    net = Net("tc_dev")
    net.Relu("x", "y")
    net.Relu("y", "z")
    net.RunAllOnGPU(gpu_id=3, use_cudnn=True)
    assert net.Proto().device_option.device_type == caffe2_pb2.CUDA
    assert net.Proto().device_option.cuda_gpu_id == 3
    assert all(op.engine == "CUDNN" for op in net.Proto().op)
    net.RunAllOnMKL()
    assert net.Proto().device_option.device_type == caffe2_pb2.MKLDNN
    net.set_rand_seed(10)
    assert [op.device_option.random_seed for op in net.Proto().op] == [10, 11]
    net.set_rand_seed(10, sequence_seed=False)
    assert [op.device_option.random_seed for op in net.Proto().op] == [10, 10]
    net.set_rand_seed(10, sequence_seed=False, seed_on_op_def=True)
    s1 = [op.device_option.random_seed for op in net.Proto().op]
    assert s1[0] != s1[1]
    with pytest.raises(AssertionError):
        net.set_rand_seed(seed_on_op_def=True)


# ---- tracebacks -------------------------------------------------------------------------------


def test_operator_tracebacks_and_file_names():
    net = Net("tc_tb")
    line = sys._getframe().f_lineno + 1
    net.ConstantFill([], "x", shape=[1])
    tb = workspace.operator_tracebacks[net.Name()][0]
    assert tb[0] == (__file__, line, "test_operator_tracebacks_and_file_names")
    net.PopulateProtoWithFileName()
    assert net.Proto().op[0].name == f"{__file__}:{line}:test_operator_tracebacks_and_file_names"


# ---- Python ops -------------------------------------------------------------------------------


def _double(inputs, outputs):
    outputs[0].feed(inputs[0].data * 2)


def _make_adder(k):
    def f(inputs, outputs):
        outputs[0].feed(inputs[0].data + k)

    return f


def test_python_op_with_token():
    net = Net("tc_py")
    net.AddExternalInput("x")
    net.Python(_double)(["x"], ["y"])
    op = net.Proto().op[0]
    args = {a.name: a for a in op.arg}
    assert op.type == "Python"
    assert args["token"].s.decode().startswith("_double")
    assert list(args["grad_output_indices"].ints) == []
    assert list(args["grad_input_indices"].ints) == []
    workspace.FeedBlob("x", np.array([1.0, 2.0], dtype=np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("y"), [2.0, 4.0])


def test_python_op_with_builder():
    net = Net("tc_py_builder")
    net.Python((_make_adder, [10], {}), grad_output_indices=[0])(["x"], ["y"])
    args = {a.name: a for a in net.Proto().op[0].arg}
    assert pickle.loads(args["pickled_builder"].s) == (_make_adder, (10,), {})
    assert args["pickled_grad_builder"].s == b""
    assert args["pass_workspace"].i == 0
    assert list(args["grad_output_indices"].ints) == [0]
    workspace.FeedBlob("x", np.array([1.0], dtype=np.float32))
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("y"), [11.0])
    with pytest.raises(AssertionError, match="A tuple has to be passed"):
        net.Python((_make_adder, [1], {}), grad_f=_double)


def test_create_python_operator():
    op = core.CreatePythonOperator(_double, ["x"], ["y"])
    assert op.type == "Python" and any(a.name == "token" for a in op.arg)
    workspace.FeedBlob("x", np.array([3.0], dtype=np.float32))
    workspace.RunOperatorOnce(op)
    np.testing.assert_array_equal(workspace.FetchBlob("y"), [6.0])


# ---- running through workspace -----------------------------------------------------------------


def test_chain_net_end_to_end():
    net = Net("tc_chain")
    workspace.FeedBlob("A", np.array([1.0, 2.0], dtype=np.float32))
    prev = "A"
    for i in range(4):
        out = f"chain_{i}"
        net.Add([prev, "A"], out)
        prev = out
    assert list(net.Proto().external_input) == ["A"]
    workspace.CreateNet(net)
    workspace.RunNet(net.Proto().name)
    np.testing.assert_array_equal(workspace.FetchBlob(prev), [5.0, 10.0])
    workspace.RunNet(net)
    np.testing.assert_array_equal(workspace.FetchBlob(prev), [5.0, 10.0])


def test_immediate_mode_runs_ops_as_they_are_created():
    workspace.StartImmediate(i_know=True)
    try:
        net = Net("tc_immediate")
        net.ConstantFill([], "imm", shape=[2], value=3.0)
        np.testing.assert_array_equal(workspace.FetchImmediate("imm"), [3.0, 3.0])
        core.CreateOperator("Relu", "imm", "imm2")
        assert "imm2" in workspace.ImmediateBlobs()
    finally:
        workspace.StopImmediate()
    assert not workspace.HasBlob("imm")


def test_debug_env_does_not_leak():
    assert os.environ.get("CAFFE2_DEBUG") is None


def test_scope_module_is_the_same():
    assert core.scope is scope


def test_clone_and_bind_net_prefixes_what_the_net_defines():
    net = core.Net("cab_src")
    net.Add(["cab_a", "cab_b"], "cab_sum")
    clone, remap = core.clone_and_bind_net(net, "cab_clone", "p/")
    assert remap["cab_sum"] == "p/cab_sum"
    assert remap["cab_a"] == "cab_a" and remap["cab_b"] == "cab_b"
    assert list(clone.Proto().op[0].input) == ["cab_a", "cab_b"]
    assert list(clone.Proto().op[0].output) == ["p/cab_sum"]
