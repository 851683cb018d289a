"""A tour of nets, steps and plans through the caffe2.python API.

Builds an init net, a loop that runs until a counter says stop, two branches that run
concurrently, and a net whose failure shows where an error points. Run it with
``python examples/plan_tour.py``.
"""

from __future__ import annotations

import numpy as np

from caffe2.python import core, workspace


def main() -> None:
    workspace.ResetWorkspace()

    # 1. An init net: constants and a counter that will stop the loop after 5 iterations.
    init = core.Net("init")
    init.ConstantFill([], "x", shape=[4], value=1.0)
    init.ConstantFill([], "step_size", shape=[4], value=0.5)
    init.CreateCounter([], "counter", init_count=5)

    # 2. A loop body: x <- relu(x * 0.9 + step_size); stop when the counter runs out.
    body = core.Net("body")
    body.Mul(["x", body.Const(np.full(4, 0.9, np.float32), "decay")], "scaled")
    body.Add(["scaled", "step_size"], "shifted")
    body.Relu("shifted", "x")
    body.CountDown("counter", "done")

    # 3. Two independent branches, run concurrently on two threads.
    branches = []
    for k in range(2):
        net = core.Net(f"branch_{k}")
        a = net.GivenTensorFill([], f"a{k}", shape=[64, 64], values=[0.01 * (k + 1)] * 4096)
        net.MatMul([a, a], f"prod{k}")
        branches.append(core.execution_step(f"branch_{k}", net, num_iter=10))

    plan = core.Plan("tour")
    plan.AddStep(core.execution_step("init", init))
    plan.AddStep(core.execution_step("loop", body, should_stop_blob=core.BlobReference("done")))
    plan.AddStep(core.execution_step("parallel", branches, concurrent_substeps=True))
    workspace.RunPlan(plan)

    print("x after the loop:", workspace.FetchBlob("x"))
    print("loop stopped with done =", bool(workspace.FetchBlob("done")))
    print("prod0[0, 0] =", workspace.FetchBlob("prod0")[0, 0])
    print("prod1[0, 0] =", workspace.FetchBlob("prod1")[0, 0])
    print("blobs in the workspace:", len(workspace.Blobs()))

    # 4. Errors say where: the net, the operator's index and type, and its blobs.
    bad = core.Net("bad")
    bad.Add(["x", "prod0"], "oops")
    try:
        workspace.RunNetOnce(bad)
    except RuntimeError as e:
        print("a failing net reports:", str(e).splitlines()[0])
    print("x is still there:", workspace.HasBlob("x"))


if __name__ == "__main__":
    main()
