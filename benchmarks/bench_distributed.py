"""DistributedSession costs and speed-up (a benchmark, not a test).

    python benchmarks/bench_distributed.py [--reps N] [--iters N]

Needs the extra caffe2py[ray]; starts a local Ray instance (2 CPUs, capped object store,
loopback only) and stops it at the end. Prints one line per figure:

- ``run_fixed_cost_ms``: one ``run`` of a trivial two-node TaskGroup (one ConstantFill task
  per node, one output each), DistributedSession with its actors already started against
  LocalSession running the same TaskGroup shape, median of ``--reps`` runs;
- ``cpu_speedup``: a CPU-bound two-node TaskGroup (each node: ``--iters`` iterations of a
  3-op net on shape [16], which is interpreter-bound and holds the GIL) run by two Ray worker
  processes (one actor per node) against one (both nodes remapped to one actor, their plans
  running as threads of one process). Target: at least 1.7x on 2 cores.
BLAS is limited to one thread (workers inherit the setting).
"""

from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_k] = "1"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import ray  # noqa: E402

from caffe2.distributed import DistributedSession  # noqa: E402
from caffe2.python import core, workspace  # noqa: E402
from caffe2.python.session import LocalSession  # noqa: E402
from caffe2.python.task import Node, Task, TaskGroup, WorkspaceType  # noqa: E402


def timed(fn, reps):
    fn()  # warm-up: actors started, nets created
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def trivial_group(tag):
    with TaskGroup(WorkspaceType.GLOBAL) as tg:
        for i in range(2):
            with Node(f"bench_{tag}_{i}"):
                net = core.Net(f"bench_{tag}_fill_{i}")
                out = net.ConstantFill([], f"bench_{tag}_x{i}", shape=[4], value=1.0)
                Task(step=net, outputs=[out])
    return tg


def cpu_group(tag, iters):
    """Two nodes, each an init net then ``iters`` iterations of Add/Mul/Relu on shape [16]."""
    with TaskGroup(WorkspaceType.GLOBAL) as tg:
        for i in range(2):
            with Node(f"cpu_{tag}_{i}"):
                init = core.Net(f"cpu_{tag}_init_{i}")
                init.ConstantFill([], "x", shape=[16], value=0.5)
                init.ConstantFill([], "A", shape=[16], value=0.25)
                init.ConstantFill([], "M", shape=[16], value=0.5)
                loop = core.Net(f"cpu_{tag}_loop_{i}")
                loop.Add(["x", "A"], "t1")
                loop.Mul(["t1", "M"], "t2")
                loop.Relu(["t2"], "x")
                step = core.execution_step(
                    f"cpu_{tag}_{i}",
                    [
                        core.execution_step(f"cpu_{tag}_init_step_{i}", init),
                        core.execution_step(f"cpu_{tag}_loop_step_{i}", loop, num_iter=iters),
                    ],
                )
                Task(step=step, outputs=["x"])
    return tg


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--cpu-reps", type=int, default=3)
    p.add_argument("--iters", type=int, default=800_000)
    args = p.parse_args()

    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=128 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="warning",
    )
    try:
        # Fixed cost of one run.
        dist = DistributedSession()
        tg_d = trivial_group("d")
        t_dist = timed(lambda: dist.run(tg_d), args.reps)
        local = LocalSession(workspace.C.Workspace())
        tg_l = trivial_group("l")
        t_local = timed(lambda: local.run(tg_l), args.reps)
        print(
            f"run_fixed_cost_ms distributed={t_dist * 1e3:.2f} local={t_local * 1e3:.3f} "
            f"added={(t_dist - t_local) * 1e3:.2f} (trivial two-node TaskGroup, median of "
            f"{args.reps})"
        )
        dist.close()

        # CPU-bound speed-up: two worker processes against one.
        two = DistributedSession()
        tg_two = cpu_group("two", args.iters)
        t_two = timed(lambda: two.run(tg_two), args.cpu_reps)
        two.close()
        one = DistributedSession(node_remap=lambda node: "one_process")
        tg_one = cpu_group("one", args.iters)
        t_one = timed(lambda: one.run(tg_one), args.cpu_reps)
        one.close()
        print(
            f"cpu_speedup {t_one / t_two:.2f}x two_processes={t_two:.3f}s "
            f"one_process={t_one:.3f}s (2 nodes x {args.iters} iterations of a 3-op net on "
            f"[16], median of {args.cpu_reps}; target >= 1.7x)"
        )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
