"""Workspace: named blobs and instantiated nets, optionally chained to a parent.

The lookup rules are Caffe2's (spec runtime.md section 2.2): a child sees and writes its
parent's blobs; new names are local and die with the child; forwarded names (used by the Do
op) see only the bound parent blobs, and nothing else of the parent. Nets are never inherited.

Every map here is guarded by a lock, because concurrent substeps create blobs and nets in
shared workspaces from several threads.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import Blob
from caffe2.runtime.errors import EnforceError, enforce

if TYPE_CHECKING:
    from caffe2.runtime.net import NetBase

log = logging.getLogger("caffe2")

_WHERE = "workspace"


class Workspace:
    """Blobs by name, nets by name, a root folder, and an optional parent."""

    def __init__(
        self,
        parent: Workspace | None = None,
        root_folder: str | None = None,
        forwarded: dict[str, str] | None = None,
    ) -> None:
        self._blobs: dict[str, Blob] = {}
        self._nets: dict[str, NetBase] = {}
        self._forwarded: dict[str, tuple[Workspace, str]] = {}
        self._lock = threading.RLock()
        self.last_failed_op_net_position = -1
        if forwarded is not None:
            # Workspace(parent, forwarded_blobs): only the bound names are visible.
            assert parent is not None
            self._parent = None
            self.root_folder = root_folder or parent.root_folder
            self.add_blob_mapping(parent, forwarded)
        else:
            self._parent = parent
            if root_folder is None:
                root_folder = parent.root_folder if parent is not None else "."
            self.root_folder = root_folder

    # ---- blobs ---------------------------------------------------------------------------
    @property
    def parent(self) -> Workspace | None:
        return self._parent

    def has_blob(self, name: str) -> bool:
        return self.get_blob(name) is not None

    def get_blob(self, name: str) -> Blob | None:
        """The Blob visible under name (local, forwarded, then the parent chain), or None."""
        ws = self
        while ws is not None:
            b = ws._blobs.get(name)
            if b is not None:
                return b
            fw = ws._forwarded.get(name)
            if fw is not None:
                return fw[0].get_blob(fw[1])
            ws = ws._parent
        return None

    def create_blob(self, name: str) -> Blob | None:
        """The visible blob of that name, or a new local empty one (Caffe2's CreateBlob).

        None only for a forwarded name whose parent target has since been removed.
        """
        with self._lock:
            b = self.get_blob(name)
            if b is not None:
                return b
            if name in self._forwarded:
                return None
            b = self._blobs[name] = Blob()
            return b

    def create_local_blob(self, name: str) -> Blob:
        """A local blob of that name, shadowing any parent blob."""
        with self._lock:
            b = self._blobs.get(name)
            if b is None:
                b = self._blobs[name] = Blob()
            return b

    def remove_blob(self, name: str) -> bool:
        with self._lock:
            return self._blobs.pop(name, None) is not None

    def rename_blob(self, old: str, new: str) -> None:
        with self._lock:
            enforce(old in self._blobs, f"Blob {old} is not in the local blob list", _WHERE)
            enforce(not self.has_blob(new), f"Blob {new}is already in the workspace", _WHERE)
            self._blobs[new] = self._blobs.pop(old)

    def local_blobs(self) -> list[str]:
        with self._lock:
            return sorted(self._blobs)

    def blobs(self) -> list[str]:
        """Local names (sorted), forwarded names with a live target, then the parent's."""
        with self._lock:
            names = sorted(self._blobs)
            names += [n for n, (ws, pn) in self._forwarded.items() if ws.has_blob(pn)]
        if self._parent is not None:
            names += self._parent.blobs()
        return names

    def add_blob_mapping(
        self, parent: Workspace, mapping: dict[str, str], skip_defined: bool = False
    ) -> None:
        """Forward local names to parent blobs (looked up lazily on every access)."""
        with self._lock:
            for local, pname in mapping.items():
                enforce(parent.has_blob(pname), f"Invalid parent workspace blob {pname}", _WHERE)
                fw = self._forwarded.get(local)
                if fw is not None:
                    enforce(
                        fw[0] is parent and fw[1] == pname, f"Redefinition of blob {local}", _WHERE
                    )
                    continue
                if self.has_blob(local):
                    if skip_defined:
                        continue
                    raise EnforceError(f"Redefinition of blob {local}", _WHERE)
                self._forwarded[local] = (parent, pname)

    def forwarded_names(self) -> list[str]:
        with self._lock:
            return list(self._forwarded)

    def copy_forwarded_tensors(self, names: list[str]) -> None:
        """Replace forwarded bindings by local copies of the parent tensors (Do op)."""
        with self._lock:
            for name in names:
                fw = self._forwarded.get(name)
                if fw is None:
                    continue
                src = fw[0].get_blob(fw[1])
                value = None if src is None else src.value
                enforce(
                    isinstance(value, np.ndarray), f"Expected blob with tensor value{fw[1]}", _WHERE
                )
                del self._forwarded[name]
                self._blobs[name] = Blob(value.copy())

    # ---- nets ----------------------------------------------------------------------------
    def create_net(self, netdef: caffe2_pb2.NetDef, overwrite: bool = False) -> NetBase | None:
        """Instantiate a net and register it under its name (None for an unknown net type)."""
        from caffe2.runtime.net import create_net

        enforce(netdef.HasField("name"), "Net definition should have a name.", _WHERE)
        name = netdef.name
        with self._lock:
            if name in self._nets:
                if not overwrite:
                    raise EnforceError(
                        "I respectfully refuse to overwrite an existing net of the same name "
                        f'"{name}", unless you explicitly specify overwrite=true.',
                        _WHERE,
                    )
                del self._nets[name]
        net = create_net(netdef, self)
        if net is None:
            log.error(
                "Error when creating the network.Maybe net type: [%s] does not exist", netdef.type
            )
            return None
        with self._lock:
            self._nets[name] = net
        return net

    def get_net(self, name: str) -> NetBase | None:
        return self._nets.get(name)

    def delete_net(self, name: str) -> None:
        with self._lock:
            self._nets.pop(name, None)

    def nets(self) -> list[str]:
        with self._lock:
            return list(self._nets)

    def run_net(self, name: str) -> bool:
        net = self._nets.get(name)
        if net is None:
            log.error("Network %s does not exist yet.", name)
            return False
        return net.run()

    def run_net_once(self, netdef: caffe2_pb2.NetDef) -> bool:
        """Instantiate a temporary net, run it once and discard it."""
        from caffe2.runtime.net import create_net

        net = create_net(netdef, self)
        if net is None:
            raise EnforceError(f"Could not create net: {netdef.name} of type {netdef.type}", _WHERE)
        return net.run()

    def run_operator_once(self, opdef: caffe2_pb2.OperatorDef) -> bool:
        """Construct a standalone operator (no net position) and run it once."""
        from caffe2.runtime.net import run_operator_once

        return run_operator_once(opdef, self)

    def run_plan(
        self,
        plan: caffe2_pb2.PlanDef,
        should_continue: Callable[[int], bool] | None = None,
    ) -> bool:
        from caffe2.runtime.plan_executor import run_plan

        return run_plan(self, plan, should_continue)

    # ---- misc ----------------------------------------------------------------------------
    def child(self) -> Workspace:
        """A fresh child workspace that sees and writes this one's blobs."""
        return Workspace(parent=self)

    def reset(self, root_folder: str | None = None) -> None:
        """Drop every local blob and net (used by ResetWorkspace on an unnamed workspace)."""
        with self._lock:
            self._blobs.clear()
            self._nets.clear()
            self._forwarded.clear()
            if root_folder is not None:
                os.makedirs(root_folder, exist_ok=True)
                self.root_folder = root_folder
