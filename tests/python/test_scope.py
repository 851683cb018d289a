"""caffe2.python.scope: name and device scopes (spec runtime.md 4.2)."""

import threading

import pytest

from caffe2.proto import caffe2_pb2
from caffe2.python import core, scope


def test_name_scope_nesting_and_reset():
    assert scope.CurrentNameScope() == ""
    with scope.NameScope("a"):
        assert scope.CurrentNameScope() == "a/"
        with scope.NameScope("b"):
            assert scope.CurrentNameScope() == "a/b/"
            with scope.NameScope("c", reset=True):
                assert scope.CurrentNameScope() == "c/"
            assert scope.CurrentNameScope() == "a/b/"
        with scope.NameScope(None):
            assert scope.CurrentNameScope() == "a/"
        with scope.NameScope(""):
            assert scope.CurrentNameScope() == "a/"
        with scope.NameScope("", reset=True):
            assert scope.CurrentNameScope() == ""
    assert scope.CurrentNameScope() == ""


def test_name_scope_restored_on_exception():
    with pytest.raises(ValueError), scope.NameScope("x"):
        raise ValueError("boom")
    assert scope.CurrentNameScope() == ""


def test_name_scope_rejects_non_strings():
    with pytest.raises(AssertionError, match="takes in a string"), scope.NameScope(3):
        pass


def test_name_scope_detects_outside_change():
    with pytest.raises(AssertionError, match="changed from outside"):
        with scope.NameScope("x"):
            scope._threadlocal_scope.namescope = "other"
    assert scope.CurrentNameScope() == ""


def test_name_scope_is_thread_local():
    seen = []
    with scope.NameScope("main"):
        t = threading.Thread(target=lambda: seen.append(scope.CurrentNameScope()))
        t.start()
        t.join()
    assert seen == [""]


def test_device_scope_copies_and_restores():
    assert scope.CurrentDeviceScope() is None
    opt = core.DeviceOption(caffe2_pb2.CPU, 0)
    with scope.DeviceScope(opt):
        cur = scope.CurrentDeviceScope()
        assert cur == opt and cur is not opt
    assert scope.CurrentDeviceScope() is None


def test_device_scope_node_name_rules():
    gpu = core.DeviceOption(caffe2_pb2.CUDA, 1)
    with scope.DeviceScope(None, node_name="n1"):
        assert scope.CurrentDeviceScope().node_name == "n1"
        assert scope.CurrentDeviceScope().device_type == caffe2_pb2.CPU
        with scope.DeviceScope(gpu):
            # inherited from the outer scope
            assert scope.CurrentDeviceScope().node_name == "n1"
            assert scope.CurrentDeviceScope().cuda_gpu_id == 1
        with scope.DeviceScope(gpu, node_name="n2"):
            assert scope.CurrentDeviceScope().node_name == "n2"
    assert not gpu.HasField("node_name")


def test_device_scope_requires_an_argument_and_a_device_option():
    with pytest.raises(AssertionError), scope.DeviceScope(None):
        pass
    with pytest.raises(AssertionError, match="DeviceOption"), scope.DeviceScope("cpu"):
        pass


def test_empty_device_scope():
    with scope.DeviceScope(core.DeviceOption(caffe2_pb2.CPU)):
        with scope.EmptyDeviceScope():
            assert scope.CurrentDeviceScope() is None
        assert scope.CurrentDeviceScope() is not None


def test_core_aliases():
    assert core.NameScope is scope.NameScope
    assert core.DeviceScope is scope.DeviceScope
