"""The example from ``Session``'s docstring, corrected to run, showing blob visibility.

An init TaskGroup runs on the session's global workspace and leaves a message blob there.
A private TaskGroup then runs one task on 'node1' and one on 'node2'. A LocalSession maps
both nodes onto the local one and runs the two tasks concurrently, each in its own private
child of the global workspace: each task sees the global blobs and its own, not the other
task's, and what it creates vanishes when the run ends. Only the task outputs, created in
the global workspace before the run, stay. Run it with ``python examples/session_tour.py``.
"""

from __future__ import annotations

import threading

import numpy as np

from caffe2.python import core, workspace
from caffe2.python.session import LocalSession
from caffe2.python.task import Node, Task, TaskGroup, WorkspaceType

_seen: dict[str, list[str]] = {}
_lock = threading.Lock()


def _record(label: str):
    """A Python op body that records the blob names its workspace can see."""

    def record(inputs, outputs, ws) -> None:
        with _lock:
            _seen[label] = sorted(ws.blobs)

    return record


def main() -> None:
    workspace.ResetWorkspace()

    # The init group runs on the global workspace: its blobs outlive the run.
    with TaskGroup(WorkspaceType.GLOBAL) as init_tg:
        with Node("node1"):
            n1setup = core.Net("n1setup")
            n1msg = n1setup.Const(np.array([b"Hello from node 1."]), "n1msg")
            Task(step=n1setup)

    # The private group: each task runs in a fresh child workspace of the global one.
    with TaskGroup() as private_tg:
        with Node("node1"):
            n1 = core.Net("n1")
            n1.Print(n1msg, [])
            n1.ConstantFill([], "node1_scratch", shape=[2], value=1.0)
            n1.Python(_record("task on node1 (private)"), pass_workspace=True)([], [])
            Task(step=n1)
        with Node("node2"):
            n2 = core.Net("n2")
            n2.Print(n1msg, [])
            n2.ConstantFill([], "node2_scratch", shape=[2], value=2.0)
            n2.Python(_record("task on node2 (private)"), pass_workspace=True)([], [])
            Task(step=n2)

    # Running the tasks in the TaskGroups.
    with LocalSession() as session:
        session.run(init_tg)
        session.run(private_tg)
        global_ws = session.workspace

    print("message:", workspace.FetchBlob("n1msg")[0].decode())
    for label in sorted(_seen):
        print(f"{label} could see:")
        for name in _seen[label]:
            print("   ", name)
    print("global workspace after the runs:")
    for name in sorted(global_ws.blobs):
        print("   ", name)
    scratch = [n for n in ("node1_scratch", "node2_scratch") if workspace.HasBlob(n)]
    print("private blobs left in the global workspace:", scratch or "none")


if __name__ == "__main__":
    main()
