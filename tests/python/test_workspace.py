"""caffe2.python.workspace and its C surface (spec runtime.md section 3)."""

from __future__ import annotations

import os
import threading
import uuid

import numpy as np
import pytest

from caffe2.proto import caffe2_pb2
from caffe2.python import workspace
from caffe2.runtime import pybind_state as C
from caffe2.runtime.errors import OperatorFailed
from caffe2.runtime.registry import gradient, operator

# ---- test-only operators (unique names, registered once) -----------------------------------
FAIL = "_WorkspaceTestFail"
GRAD = "_WorkspaceTestGrad"


@operator(FAIL, inputs=(0, None), outputs=(0, None))
def _fail_op(op):
    """Returns false (Caffe2's plain failure) on every run."""

    def run():
        raise OperatorFailed()

    return run


@operator(GRAD, inputs=2, outputs=1)
def _grad_op(op):
    """A forward op with a gradient maker, for get_gradient_defs."""

    def run():
        pass

    return run


@gradient(GRAD)
def _grad_op_grad(opdef, g_output):
    g = caffe2_pb2.OperatorDef(type="Copy", input=[g_output[0]], output=[opdef.input[0] + "_g"])
    g.is_gradient_op = True
    g.engine = opdef.engine
    return [g], [opdef.input[0] + "_g", None]


# ---- helpers -------------------------------------------------------------------------------
def op(type_, inputs, outputs, **kw):
    o = caffe2_pb2.OperatorDef(type=type_, input=inputs, output=outputs)
    for k, v in kw.items():
        if k == "device_option":
            o.device_option.CopyFrom(v)
        else:
            setattr(o, k, v)
    return o


def net(name, *ops, external_input=(), type_=None):
    n = caffe2_pb2.NetDef(name=name)
    n.op.extend(ops)
    n.external_input.extend(external_input)
    if type_ is not None:
        n.type = type_
    return n


@pytest.fixture(autouse=True)
def fresh_workspace():
    """Each test runs in a new named workspace; the default one is restored after."""
    name = "test_ws_" + uuid.uuid4().hex[:8]
    workspace.SwitchWorkspace(name, True)
    yield name
    workspace.SwitchWorkspace("default")


def f32(*vals):
    return np.array(vals, dtype=np.float32)


# ---- named workspaces ----------------------------------------------------------------------
def test_default_workspace_exists_and_switching(fresh_workspace):
    assert "default" in workspace.Workspaces()
    assert workspace.CurrentWorkspace() == fresh_workspace
    assert workspace.Workspaces() == sorted(workspace.Workspaces())
    workspace.FeedBlob("x", f32(1))
    other = fresh_workspace + "_other"
    assert workspace.SwitchWorkspace(other, True) is None
    assert workspace.CurrentWorkspace() == other
    assert not workspace.HasBlob("x")
    workspace.SwitchWorkspace(fresh_workspace)
    assert workspace.HasBlob("x")


def test_switch_to_missing_workspace_raises():
    with pytest.raises(RuntimeError, match="enforce fail.*no_such_ws.*does not exist"):
        workspace.SwitchWorkspace("no_such_ws_" + uuid.uuid4().hex)
    with pytest.raises(RuntimeError, match="does not exist"):
        workspace.SwitchWorkspace("no_such_ws_" + uuid.uuid4().hex, False)
    with pytest.raises(TypeError):
        workspace.SwitchWorkspace(3)


def test_switch_to_workspace_object_changes_only_the_pointer(fresh_workspace):
    workspace.FeedBlob("named", f32(1))
    ws = C.Workspace()
    workspace.SwitchWorkspace(ws, None)
    assert workspace.CurrentWorkspace() == fresh_workspace
    assert workspace.Blobs() == []
    workspace.FeedBlob("obj", f32(2))
    assert ws.has_blob("obj")
    assert C.Workspace.current.has_blob("named")
    assert not C.Workspace.current.has_blob("obj")
    # ResetWorkspace resets the named workspace and points the pointer back at it.
    workspace.ResetWorkspace()
    assert workspace.Blobs() == []
    assert ws.has_blob("obj")
    workspace.FeedBlob("again", f32(3))
    assert C.Workspace.current.has_blob("again")


def test_workspace_current_is_the_named_one_and_stable():
    a = C.Workspace.current
    assert a is C.Workspace.current
    assert a == C.Workspace.current and hash(a) == hash(C.Workspace.current)
    assert a.current is a


def test_reset_workspace_and_root_folder(tmp_path):
    workspace.FeedBlob("x", f32(1))
    workspace.CreateNet(net("n", op("Relu", ["x"], ["y"])))
    held = C.Workspace.current
    assert workspace.RootFolder() == "."
    root = str(tmp_path / "a" / "b")
    assert workspace.ResetWorkspace(root) is True
    assert os.path.isdir(root)
    assert workspace.RootFolder() == root
    assert workspace.Blobs() == [] and C.nets() == []
    assert held.blobs == {}  # the old workspace is gone
    workspace.ResetWorkspace()
    assert workspace.RootFolder() == root


def test_blobs_create_has():
    assert workspace.Blobs() == []
    assert workspace.CreateBlob("b") is True
    assert workspace.CreateBlob("a") is True
    assert workspace.Blobs() == ["a", "b"]
    assert workspace.HasBlob("a") and not workspace.HasBlob("c")
    assert workspace.FetchBlob("a") == b"a, a C++ native class of type nullptr (uninitialized)."


def test_registered_operators():
    ops = workspace.RegisteredOperators()
    assert ops == sorted(ops)
    assert {"Add", "Relu", "Sum", FAIL} <= set(ops)
    assert C.op_registry_key("Relu", "DEFAULT") == "Relu"
    assert C.op_registry_key("Relu", "CUDNN") == "Relu_ENGINE_CUDNN"
    assert "Relu" in C.nearby_opnames("Reluu")


def test_concurrent_workspace_creation():
    base = "thr_" + uuid.uuid4().hex[:6]
    errors = []

    def work(i):
        try:
            C.switch_workspace(f"{base}_{i}", True)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {f"{base}_{i}" for i in range(16)} <= set(workspace.Workspaces())


# ---- feed and fetch ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dt",
    [np.bool_, np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
     np.uint8, np.uint16],
)  # fmt: skip
def test_feed_fetch_dtypes(dt):
    arr = (np.arange(6) % 3).astype(dt).reshape(2, 3)
    assert workspace.FeedBlob("x", arr) is True
    out = workspace.FetchBlob("x")
    assert out.dtype == arr.dtype and out.shape == (2, 3)
    np.testing.assert_array_equal(out, arr)


def test_feed_and_fetch_copy():
    arr = f32(1, 2, 3)
    workspace.FeedBlob("x", arr)
    arr[0] = 100
    out = workspace.FetchBlob("x")
    assert out[0] == 1
    out[1] = 100
    assert workspace.FetchBlob("x")[1] == 2
    # non-contiguous input becomes a C-contiguous tensor
    workspace.FeedBlob("t", np.arange(6, dtype=np.int32).reshape(2, 3).T)
    t = workspace.FetchBlob("t")
    assert t.flags.c_contiguous and t.tolist() == [[0, 3], [1, 4], [2, 5]]


def test_zero_d_and_strings():
    workspace.FeedBlob("s", np.array(2.5, dtype=np.float64))
    out = workspace.FetchBlob("s")
    assert isinstance(out, np.ndarray) and out.shape == () and out == 2.5
    workspace.FeedBlob("str", np.array(["ab", "c"]))
    out = workspace.FetchBlob("str")
    assert out.dtype == object and out.tolist() == [b"ab", b"c"]
    workspace.FeedBlob("bs", np.array([b"x", b"yz"]))
    assert workspace.FetchBlob("bs").tolist() == [b"x", b"yz"]
    workspace.FeedBlob("obj", np.array(["u", b"v"], dtype=object))
    assert workspace.FetchBlob("obj").tolist() == [b"u", b"v"]
    workspace.FeedBlob("plain", "héllo")
    assert workspace.FetchBlob("plain") == "héllo".encode()
    workspace.FeedBlob("raw", b"\x00\x01")
    assert workspace.FetchBlob("raw") == b"\x00\x01"


def test_feed_errors():
    with pytest.raises(RuntimeError, match="Unexpected type of argument - only numpy array or"):
        workspace.FeedBlob("x", [1, 2])
    with pytest.raises(RuntimeError, match="only numpy array or string"):
        workspace.FeedBlob("x", 3.0)
    with pytest.raises(RuntimeError, match="only numpy array or string"):
        workspace.FeedBlob("x", np.float32(3.0))
    with pytest.raises(RuntimeError, match="This numpy data type is not supported: 14."):
        workspace.FeedBlob("x", np.zeros(2, np.complex64))
    with pytest.raises(RuntimeError, match="Unsupported python object type passed into ndarray."):
        workspace.FeedBlob("x", np.array([b"a", 1], dtype=object))
    do = caffe2_pb2.DeviceOption(device_type=caffe2_pb2.OPENGL)
    with pytest.raises(RuntimeError, match="Unknown device type encountered in FeedBlob: 3"):
        workspace.FeedBlob("x", f32(1), do)


def test_feed_with_device_options():
    assert workspace.FeedBlob("x", f32(1), caffe2_pb2.DeviceOption())
    cuda = caffe2_pb2.DeviceOption(device_type=caffe2_pb2.CUDA)
    assert workspace.FeedBlob("y", f32(2), cuda)
    np.testing.assert_array_equal(workspace.FetchBlob("y"), f32(2))


def test_feed_tensor_proto():
    t = caffe2_pb2.TensorProto(dims=[2], data_type=caffe2_pb2.TensorProto.FLOAT)
    t.float_data.extend([1.5, 2.5])
    workspace.FeedBlob("tp", t)
    np.testing.assert_array_equal(workspace.FetchBlob("tp"), f32(1.5, 2.5))


def test_fetch_errors_and_native_types():
    with pytest.raises(RuntimeError, match="Can't find blob: nope"):
        workspace.FetchBlob("nope")

    class Counter:
        caffe2_type_name = "std::unique_ptr<Counter<int64_t>>"

    C.current_runtime_workspace().create_blob("c").value = Counter()
    assert (
        workspace.FetchBlob("c")
        == b"c, a C++ native class of type std::unique_ptr<Counter<int64_t>>."
    )
    assert workspace.FetchBlobs([]) == []
    workspace.FeedBlob("a", f32(1))
    workspace.FeedBlob("b", "s")
    a, b = workspace.FetchBlobs(["a", "b"])
    assert a.tolist() == [1.0] and b == b"s"


def test_blob_dict():
    workspace.blobs["x"] = f32(1, 2)
    assert "x" in workspace.blobs and "y" not in workspace.blobs
    assert workspace.blobs["x"].tolist() == [1, 2]
    workspace.blobs["y"] = "text"
    assert len(workspace.blobs) == 2
    assert list(workspace.blobs) == ["x", "y"]


def test_blob_reference_names_are_stringified():
    class BlobReference:
        def __init__(self, name):
            self.name = name

        def __str__(self):
            return self.name

    workspace.FeedBlob(BlobReference("r"), f32(4))
    assert workspace.FetchBlob(BlobReference("r")).tolist() == [4.0]

    class Other:
        pass

    with pytest.raises(AssertionError, match="Expected a string or BlobReference"):
        workspace.FeedBlob(Other(), f32(1))


def test_serialize_deserialize_blob():
    workspace.FeedBlob("x", np.arange(4, dtype=np.int64).reshape(2, 2))
    data = workspace.SerializeBlob("x")
    p = caffe2_pb2.BlobProto()
    p.ParseFromString(data)
    assert p.name == "x" and p.type == "Tensor"
    workspace.DeserializeBlob("y", data)
    np.testing.assert_array_equal(workspace.FetchBlob("y"), workspace.FetchBlob("x"))
    workspace.FeedBlob("s", b"str")
    workspace.DeserializeBlob("s2", workspace.SerializeBlob("s"))
    assert workspace.FetchBlob("s2") == b"str"
    with pytest.raises(RuntimeError, match="Can't find blob: missing"):
        workspace.SerializeBlob("missing")
    with pytest.raises(RuntimeError, match="Cannot parse content into a BlobProto."):
        workspace.DeserializeBlob("z", b"\xff\xff")
    workspace.CreateBlob("empty")
    with pytest.raises(RuntimeError, match=r"No known serializer for nullptr \(uninitialized\)"):
        workspace.SerializeBlob("empty")


# ---- C.Workspace, C.Blob, TensorCPU, C.Net -------------------------------------------------
def test_standalone_workspace_is_unregistered():
    before = workspace.Workspaces()
    ws = C.Workspace()
    assert workspace.Workspaces() == before
    assert ws.blobs == {} and ws.nets == {}
    b = ws.create_blob("x")
    assert ws.has_blob("x") and not workspace.HasBlob("x")
    assert b.feed(f32(1, 2)) is True
    np.testing.assert_array_equal(ws.fetch_blob("x"), f32(1, 2))
    assert set(ws.blobs) == {"x"} and ws.blobs["x"] == b


def test_parent_child_blob_sharing():
    parent = C.Workspace()
    parent.create_blob("x").feed(f32(1, 2))
    child = C.Workspace(parent)
    assert child.has_blob("x")
    assert child.create_blob("x") == parent.create_blob("x")
    child.create_blob("x").feed(f32(5))
    np.testing.assert_array_equal(parent.fetch_blob("x"), f32(5))
    child.create_blob("local").feed(f32(7))
    assert not parent.has_blob("local")
    assert list(child.blobs) == ["local", "x"]
    # An op in the child writes an existing parent blob in place.
    parent.create_blob("y").feed(f32(0))
    child.run(op("Relu", ["x"], ["y"]))
    np.testing.assert_array_equal(parent.fetch_blob("y"), f32(5))
    with pytest.raises(TypeError):
        C.Workspace("not a workspace")


def test_workspace_nets_create_and_run():
    ws = C.Workspace()
    ws.create_blob("x").feed(f32(-1, 2))
    n = net("wn", op("Relu", ["x"], ["y"]))
    ws.run(n)
    assert ws.nets == {}
    np.testing.assert_array_equal(ws.fetch_blob("y"), f32(0, 2))
    cnet = ws.create_net(n)
    assert isinstance(cnet, C.Net) and cnet.name == "wn"
    assert set(ws.nets) == {"wn"}
    ws.create_blob("x").feed(f32(3, -3))
    cnet.run()
    np.testing.assert_array_equal(ws.fetch_blob("y"), f32(3, 0))
    with pytest.raises(TypeError):
        ws.create_net("a plain str")
    with pytest.raises(RuntimeError, match="respectfully refuse"):
        ws.create_net(n)
    ws.create_net(n.SerializeToString(), True)
    with pytest.raises(ValueError, match="Don't know how to do Workspace.run"):
        ws.run(3)
    failing = ws.create_net(net("f", op(FAIL, [], [])))
    with pytest.raises(RuntimeError, match="Error running net f"):
        failing.run()
    with pytest.raises(RuntimeError, match="Error running operator"):
        ws.run(op(FAIL, [], []))
    with pytest.raises(RuntimeError, match="statistics"):
        failing.stats()


def test_workspace_run_net_failure_records_position(capsys):
    ws = C.Workspace()
    ws.create_blob("a").feed(f32(1, 2))
    ws.create_blob("b").feed(f32(1, 2, 3))
    n = net("bad", op("Relu", ["a"], ["c"]), op("Add", ["a", "b"], ["d"]))
    with pytest.raises(RuntimeError, match="enforce fail"):
        ws.run(n)
    assert ws._last_failed_op_net_position() == 1
    assert "Original python traceback for operator 1 in network `bad`" in capsys.readouterr().out


def test_c_blob_fetch_tensor_and_serialize():
    ws = C.Workspace()
    b = ws.create_blob("e")
    with pytest.raises(
        RuntimeError,
        match=r"Could not fetch for blob of type: nullptr \(uninitialized\) \(blob e\)",
    ):
        b.fetch()
    with pytest.raises(RuntimeError, match=r"only numpy array or string.*blob e"):
        b.feed(1.0)
    assert not b.is_tensor()
    t = b.tensor()
    assert b.is_tensor() and isinstance(t, C.TensorCPU)
    assert t.data.dtype == np.float32
    b.feed(np.zeros((2, 2), np.float32))
    t.data[0, 1] = 7  # a live view
    assert b.fetch()[0, 1] == 7
    assert ws.fetch_blob("e")[0, 1] == 7
    fetched = b.fetch()
    fetched[0, 0] = 9
    assert t.data[0, 0] == 0
    with pytest.raises(RuntimeError, match="expected numpy array"):
        t.feed([1])
    with pytest.raises(RuntimeError, match="Cannot init tensor of this type"):
        t.init([2], caffe2_pb2.TensorProto.STRING)
    t.init([3], caffe2_pb2.TensorProto.INT32)
    assert b.fetch().shape == (3,) and b.fetch().dtype == np.int32
    s = ws.create_blob("s")
    s.feed("abc")
    assert s.fetch() == b"abc"
    data = s.serialize("s")
    other = ws.create_blob("s2")
    other.deserialize(data)
    assert other.fetch() == b"abc"


# ---- nets through the module functions -----------------------------------------------------
def test_create_and_run_net():
    workspace.FeedBlob("a", f32(1, 2))
    workspace.FeedBlob("b", f32(10, 20))
    n = net("sum", op("Add", ["a", "b"], ["c"]), op("Mul", ["c", "b"], ["d"]))
    assert workspace.CreateNet(n) is True
    assert C.nets() == ["sum"]
    assert workspace.RunNet("sum") is True
    np.testing.assert_array_equal(workspace.FetchBlob("d"), f32(110, 440))
    assert workspace.RunNet("sum", num_iter=3) is True
    assert workspace.RunNet(n.name, 0) is True
    with pytest.raises(
        RuntimeError, match='refuse to overwrite an existing net of the same name "sum"'
    ):
        workspace.CreateNet(n)
    assert workspace.CreateNet(n, overwrite=True)


def test_run_net_accepts_net_objects():
    class Net:
        def __init__(self, name):
            self._name = name

        def Name(self):
            return self._name

        def __str__(self):
            return self._name

        def Proto(self):
            return net(self._name, op("Relu", ["x"], ["y"]))

    workspace.FeedBlob("x", f32(-2))
    n = Net("objnet")
    assert workspace.CreateNet(n)
    assert workspace.RunNet(n)
    assert workspace.FetchBlob("y").tolist() == [0.0]
    assert workspace.RunNetOnce(n)


def test_create_net_input_blobs_and_errors():
    n = net("needs_in", op("Relu", ["in"], ["out"]))
    with pytest.raises(RuntimeError, match="Encountered a non-existing input blob: in"):
        workspace.CreateNet(n)
    assert workspace.CreateNet(n, input_blobs=["in"])
    with pytest.raises(RuntimeError, match="Error creating net with proto"):
        workspace.CreateNet(net("typed", type_="no_such_net_type"))
    with pytest.raises(RuntimeError, match="Net definition should have a name."):
        workspace.CreateNet(caffe2_pb2.NetDef())
    with pytest.raises(RuntimeError, match="Can't parse net proto"):
        C.create_net(b"\xff\xff\xff")


def test_run_net_errors_and_allow_fail():
    with pytest.raises(RuntimeError, match="Can't find net missing"):
        workspace.RunNet("missing")
    workspace.CreateNet(net("f", op(FAIL, [], [])))
    with pytest.raises(RuntimeError, match="Error running net f"):
        workspace.RunNet("f")
    assert workspace.RunNet("f", allow_fail=True) is False
    assert workspace.RunNet("f", 5, True) is False
    assert C.last_failed_op_net_position() == 0


def test_run_net_failure_leaves_blobs_intact(capsys):
    workspace.FeedBlob("a", f32(1, 2))
    workspace.FeedBlob("b", f32(1, 2, 3))
    workspace.CreateNet(
        net("bad", op("Relu", ["a"], ["c"]), op("Add", ["a", "b"], ["d"]), op("Relu", ["a"], ["e"]))
    )
    workspace.operator_tracebacks["bad"][1] = [
        ("inner.py", 3, "make_op"),
        ("outer.py", 10, "main"),
    ]
    with pytest.raises(RuntimeError, match=r"enforce fail.*op #1 \(Add\)") as info:
        workspace.RunNet("bad")
    assert "Error from operator" in str(info.value)
    out = capsys.readouterr().out
    assert (
        "Original python traceback for operator 1 in network `bad` in exception above "
        "(most recent call last):" in out
    )
    assert out.index("outer.py") < out.index("inner.py")
    assert C.last_failed_op_net_position() == 1
    np.testing.assert_array_equal(workspace.FetchBlob("a"), f32(1, 2))
    np.testing.assert_array_equal(workspace.FetchBlob("b"), f32(1, 2, 3))
    np.testing.assert_array_equal(workspace.FetchBlob("c"), f32(1, 2))
    assert workspace.FetchBlob("e").startswith(b"e, a C++ native class")
    del workspace.operator_tracebacks["bad"]


def test_run_net_once_and_operators():
    workspace.FeedBlob("x", f32(-1, 1))
    n = net("once", op("Relu", ["x"], ["y"]))
    assert workspace.RunNetOnce(n) is True
    assert C.nets() == []
    assert workspace.RunNetOnce(n.SerializeToString())
    np.testing.assert_array_equal(workspace.FetchBlob("y"), f32(0, 1))
    assert workspace.RunOperatorOnce(op("Relu", ["x"], ["z"])) is True
    assert workspace.RunOperatorOnce(op("Relu", ["x"], ["w"]).SerializeToString())
    with pytest.raises(RuntimeError, match="Error running operator"):
        workspace.RunOperatorOnce(op(FAIL, [], []))
    with pytest.raises(RuntimeError, match="Cannot create operator of type 'NoSuchOp'"):
        workspace.RunOperatorOnce(op("NoSuchOp", [], []))
    assert C.last_failed_op_net_position() == -1
    assert workspace.RunOperatorsOnce([op("Relu", ["x"], ["p"]), op("Relu", ["p"], ["q"])])
    assert workspace.RunOperatorsOnce([])
    with pytest.raises(RuntimeError, match="Error running net"):
        workspace.RunNetOnce(net("failonce", op(FAIL, [], [])))


def test_run_operators_once_stops_on_false(monkeypatch):
    calls = []

    def fake(o):
        calls.append(o)
        return len(calls) < 2

    monkeypatch.setattr(workspace, "RunOperatorOnce", fake)
    assert workspace.RunOperatorsOnce(["a", "b", "c"]) is False
    assert calls == ["a", "b"]


def test_run_plan():
    workspace.FeedBlob("x", f32(-3, 3))
    plan = caffe2_pb2.PlanDef(name="p")
    plan.network.add().CopyFrom(net("pn", op("Relu", ["x"], ["y"])))
    step = plan.execution_step.add()
    step.name = "s"
    step.network.append("pn")
    step.num_iter = 2
    assert workspace.RunPlan(plan) is True
    np.testing.assert_array_equal(workspace.FetchBlob("y"), f32(0, 3))
    assert workspace.RunPlan(plan.SerializeToString())


def test_run_plan_with_execution_step():
    core = pytest.importorskip("caffe2.python.core")
    workspace.FeedBlob("x", f32(-3, 3))
    n = core.Net("plan_step_net")
    n.Proto().op.extend([op("Relu", ["x"], ["y"])])
    workspace.CreateNet(n)
    assert workspace.RunPlan(core.ExecutionStep("only_step", n))
    np.testing.assert_array_equal(workspace.FetchBlob("y"), f32(0, 3))


def test_benchmark_net():
    workspace.FeedBlob("x", f32(1))
    workspace.CreateNet(net("bm", op("Relu", ["x"], ["y"]), op("Relu", ["y"], ["z"])))
    res = workspace.BenchmarkNet("bm", 1, 2, True)
    assert len(res) == 3 and all(v >= 0 for v in res)
    assert len(workspace.BenchmarkNet("bm", 0, 1, False)) == 1
    with pytest.raises(RuntimeError, match="Can't find net nobm"):
        workspace.BenchmarkNet("nobm", 0, 1, False)


def test_get_net_profile_errors():
    with pytest.raises(RuntimeError, match="Can't find net nonet"):
        workspace.GetNetProfile("nonet")
    workspace.FeedBlob("x", f32(1))
    workspace.CreateNet(net("simple", op("Relu", ["x"], ["y"])))
    with pytest.raises(RuntimeError, match="prof_dag"):
        workspace.GetNetProfile("simple")


# ---- helpers -------------------------------------------------------------------------------
def test_stringify_helpers():
    assert workspace.StringifyProto("abc") == "abc"
    assert workspace.StringifyProto(b"abc") == b"abc"
    o = op("Relu", ["x"], ["y"])
    assert workspace.StringifyProto(o) == o.SerializeToString()

    class HasProto:
        def Proto(self):
            return o

    assert workspace.StringifyProto(HasProto()) == o.SerializeToString()
    with pytest.raises(ValueError, match="Unexpected argument to StringifyProto of type int"):
        workspace.StringifyProto(3)
    assert workspace.GetNetName("n") == "n"
    assert workspace.GetNetName(net("m")) == "m"
    with pytest.raises(Exception, match="Not a Net object"):
        workspace.GetNetName(3)
    assert workspace.StringifyNetName("x") == "x"
    assert workspace.StringifyBlobName("x") == "x"
    with pytest.raises(AssertionError, match="Expected a string or Net"):
        workspace.StringifyNetName(3)


def test_call_with_exception_intercept(capsys):
    def boom(x):
        raise ValueError(x)

    workspace.operator_tracebacks["tnet"][2] = [("f.py", 1, "g")]
    with pytest.raises(ValueError, match="bad"):
        workspace.CallWithExceptionIntercept(boom, lambda: 2, "tnet", "bad")
    out = capsys.readouterr().out
    assert "operator 2 in network `tnet`" in out and 'File "f.py", line 1, in g' in out
    assert workspace.CallWithExceptionIntercept(lambda a, b=0: a + b, lambda: 0, "n", 1, b=2) == 3
    del workspace.operator_tracebacks["tnet"]


def test_workspace_guard(fresh_workspace):
    with workspace.WorkspaceGuard(fresh_workspace + "_g"):
        assert workspace.CurrentWorkspace() == fresh_workspace + "_g"
        workspace.FeedBlob("g", f32(1))
    assert workspace.CurrentWorkspace() == fresh_workspace
    assert not workspace.HasBlob("g")
    ws = C.Workspace()
    with workspace.WorkspaceGuard(ws):
        assert workspace.CurrentWorkspace() == fresh_workspace
        workspace.FeedBlob("in_obj", f32(1))
    assert ws.has_blob("in_obj") and not workspace.HasBlob("in_obj")
    # No try/finally: an exception leaves the switched workspace current.
    with pytest.raises(KeyError):
        with workspace.WorkspaceGuard(fresh_workspace + "_h"):
            raise KeyError("x")
    assert workspace.CurrentWorkspace() == fresh_workspace + "_h"


def test_immediate_mode(fresh_workspace):
    assert not workspace.IsImmediate()
    workspace.StopImmediate()  # no-op when inactive
    workspace.StartImmediate(i_know=True)
    try:
        assert workspace.IsImmediate()
        folder = workspace._immediate_root_folder
        assert os.path.isdir(folder)
        assert workspace.CurrentWorkspace() == fresh_workspace
        assert workspace.ImmediateBlobs() == []
        workspace.FeedImmediate("x", f32(-1, 1))
        workspace.RunOperatorImmediate(op("Relu", ["x"], ["y"]))
        np.testing.assert_array_equal(workspace.FetchImmediate("y"), f32(0, 1))
        assert workspace.ImmediateBlobs() == ["x", "y"]
        assert not workspace.HasBlob("x")
        workspace.StartImmediate(i_know=True)  # restarts from a clean workspace
        assert workspace.ImmediateBlobs() == []
        assert not os.path.exists(folder)
        folder = workspace._immediate_root_folder
    finally:
        workspace.StopImmediate()
    assert not workspace.IsImmediate()
    assert not os.path.exists(folder) and workspace._immediate_root_folder == ""
    assert "_CAFFE2_IMMEDIATE" in workspace.Workspaces()
    assert workspace.CurrentWorkspace() == fresh_workspace


def test_start_immediate_prints_warning(capsys):
    workspace.StartImmediate()
    workspace.StopImmediate()
    assert "i_know=True" in capsys.readouterr().out


def test_name_scope_and_gpu_helpers():
    pytest.importorskip("caffe2.python.scope")
    assert workspace.GetNameScope() == ""
    assert workspace.has_gpu_support is False and workspace.NumCudaDevices() == 0
    assert workspace.GetCudaPeerAccessPattern().size == 0
    assert workspace.IsNUMAEnabled() is False and workspace.GetNumNUMANodes() == -1
    workspace.FeedBlob("x", f32(1))
    assert workspace.GetBlobNUMANode("x") == -1
    assert C.has_mkldnn is False and workspace.is_asan is False
    assert workspace.C is C


# ---- C module odds and ends ----------------------------------------------------------------
def test_global_init_flags():
    old = dict(C.FLAGS)
    try:
        workspace.GlobalInit(["prog", "--caffe2_tensor_chunk_size=10", "--caffe2_log_level", "1"])
        assert C.FLAGS["caffe2_tensor_chunk_size"] == 10 and C.FLAGS["caffe2_log_level"] == 1
        workspace.GlobalInit(["prog", "--caffe2_serialize_fp16_as_bytes"])
        assert C.FLAGS["caffe2_serialize_fp16_as_bytes"] is True
        workspace.GlobalInit(["prog", "--nocaffe2_serialize_fp16_as_bytes"])
        assert C.FLAGS["caffe2_serialize_fp16_as_bytes"] is False
        with pytest.raises(RuntimeError, match="unknown flag --no_such_flag"):
            workspace.GlobalInit(["prog", "--no_such_flag=1"])
        with pytest.raises(RuntimeError, match="wants a int"):
            workspace.GlobalInit(["prog", "--caffe2_tensor_chunk_size=abc"])
    finally:
        C.FLAGS.clear()
        C.FLAGS.update(old)
        workspace.GlobalInit(["prog", "--caffe2_log_level=0"])


def test_get_stats_is_a_dict():
    assert isinstance(workspace.GetStats(), dict)


def test_get_gradient_defs():
    fwd = op(GRAD, ["a", "b"], ["c"], device_option=caffe2_pb2.DeviceOption(random_seed=3))
    fwd.engine = "E"  # the maker copies the engine; the device option is left as it made it
    defs, g_in = C.get_gradient_defs(fwd.SerializeToString(), ["c_grad"])
    assert g_in == ["a_g", None]
    assert len(defs) == 1
    g = caffe2_pb2.OperatorDef()
    g.ParseFromString(defs[0])
    assert g.type == "Copy" and list(g.input) == ["c_grad"] and g.is_gradient_op
    assert g.engine == "E" and not g.HasField("device_option")
    with pytest.raises(RuntimeError, match="got 2 output gradients for 1 outputs"):
        C.get_gradient_defs(fwd.SerializeToString(), ["c_grad", None])
    with pytest.raises(RuntimeError, match=f"Gradient maker for operator {FAIL} not implemented"):
        C.get_gradient_defs(op(FAIL, [], []).SerializeToString(), [])


def test_engine_prefs():
    C.set_global_engine_pref({caffe2_pb2.CPU: ["A", "B"]})
    C.set_op_engine_pref("Relu", {caffe2_pb2.CPU: ["X"]})
    per_op, glob = C.engine_prefs()
    assert glob == {0: ["A", "B"]} and per_op[0]["Relu"] == ["X"]
    with pytest.raises(RuntimeError, match="Operator type NoSuchOp not registered"):
        C.set_per_op_engine_pref({caffe2_pb2.CPU: {"NoSuchOp": ["E"]}})
    with pytest.raises(RuntimeError, match="Device type 7 not registered"):
        C.set_global_engine_pref({7: ["E"]})
    C.set_engine_pref({}, {})
    assert C.engine_prefs() == ({}, {})


def test_c_create_db_round_trip(tmp_path):
    path = str(tmp_path / "x.minidb")
    w = workspace.C.create_db("minidb", path, workspace.C.Mode.new)
    t = w.new_transaction()
    t.put("k", b"v")
    t.commit()
    w.close()
    r = workspace.C.create_db("minidb", path, workspace.C.Mode.read)
    c = r.new_cursor()
    assert (c.key(), c.value()) == (b"k", b"v")
    r.close()
    with pytest.raises(RuntimeError, match="Unknown db type 'nosuchdb'"):
        workspace.C.create_db("nosuchdb", path, workspace.C.Mode.read)
