"""Blob lookup rules of runtime Workspace (spec runtime.md 2.2)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from caffe2.runtime.workspace import Workspace


def test_child_sees_and_writes_parent_blobs():
    parent = Workspace()
    pb = parent.create_blob("x")
    child = Workspace(parent=parent)
    assert child.has_blob("x")
    assert child.get_blob("x") is pb
    assert child.create_blob("x") is pb  # no local blob is created
    assert child.local_blobs() == []
    child.create_blob("y")
    assert child.local_blobs() == ["y"]
    assert not parent.has_blob("y")


def test_create_local_blob_shadows_and_blobs_lists_duplicates():
    parent = Workspace()
    parent.create_blob("x")
    child = Workspace(parent=parent)
    local = child.create_local_blob("x")
    assert local is not parent.get_blob("x")
    assert child.blobs() == ["x", "x"]


def test_remove_is_local_only():
    parent = Workspace()
    parent.create_blob("x")
    child = parent.child()
    assert child.remove_blob("x") is False
    assert parent.has_blob("x")


def test_rename_blob_rules():
    ws = Workspace()
    ws.create_blob("a").value = np.ones(2)
    ws.rename_blob("a", "b")
    assert ws.local_blobs() == ["b"]
    with pytest.raises(RuntimeError, match="Blob zz is not in the local blob list"):
        ws.rename_blob("zz", "c")
    ws.create_blob("c")
    with pytest.raises(RuntimeError, match="Blob cis already in the workspace"):
        ws.rename_blob("b", "c")


def test_forwarded_blobs_see_only_bindings():
    parent = Workspace()
    parent.create_blob("outer").value = np.array(1)
    parent.create_blob("other")
    inner = Workspace(parent=parent, forwarded={"in": "outer"})
    assert inner.has_blob("in")
    assert inner.get_blob("in") is parent.get_blob("outer")
    assert not inner.has_blob("other")
    assert not inner.has_blob("outer")
    assert inner.blobs() == ["in"]


def test_add_blob_mapping_errors():
    parent = Workspace()
    parent.create_blob("p")
    parent.create_blob("q")
    ws = Workspace()
    with pytest.raises(RuntimeError, match="Invalid parent workspace blob missing"):
        ws.add_blob_mapping(parent, {"a": "missing"})
    ws.add_blob_mapping(parent, {"a": "p"})
    ws.add_blob_mapping(parent, {"a": "p"})  # identical re-binding is a no-op
    with pytest.raises(RuntimeError, match="Redefinition of blob a"):
        ws.add_blob_mapping(parent, {"a": "q"})
    ws.create_blob("local")
    with pytest.raises(RuntimeError, match="Redefinition of blob local"):
        ws.add_blob_mapping(parent, {"local": "q"})
    ws.add_blob_mapping(parent, {"local": "q"}, skip_defined=True)
    assert ws.get_blob("local") is not parent.get_blob("q")


def test_forwarded_to_removed_target_is_not_created():
    parent = Workspace()
    parent.create_blob("p")
    ws = Workspace(parent=parent, forwarded={"a": "p"})
    parent.remove_blob("p")
    assert ws.create_blob("a") is None


def test_copy_forwarded_tensors():
    parent = Workspace()
    parent.create_blob("p").value = np.arange(3)
    parent.create_blob("s").value = b"str"
    ws = Workspace(parent=parent, forwarded={"a": "p", "b": "s"})
    ws.copy_forwarded_tensors(["a", "not_forwarded"])
    assert ws.local_blobs() == ["a"]
    ws.get_blob("a").value[0] = 7
    assert parent.get_blob("p").value[0] == 0
    with pytest.raises(RuntimeError, match="Expected blob with tensor values"):
        ws.copy_forwarded_tensors(["b"])


def test_concurrent_create_blob_yields_one_blob():
    ws = Workspace()
    got = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        got.append(ws.create_blob("shared"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(b) for b in got}) == 1


def test_root_folder_inherited():
    parent = Workspace(root_folder="/tmp")
    assert parent.child().root_folder == "/tmp"
    assert Workspace().root_folder == "."
