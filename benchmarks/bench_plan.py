"""Plan executor costs, as ratios to bare NumPy measured in the same run.

    python benchmarks/bench_plan.py [--reps N] [--w4-reps N] [--skip-w4]

Prints one line per figure:
- ``w3_us_per_iter``: one iteration of a 100000-iteration step running a 3-op net on shape
  [16] (workloads.md W3), against a Python loop of the same 3 ufunc calls, and what the
  executor adds to a bare Python loop of ``net.run()``;
- ``w4_speedup``: two concurrent substeps of 50 1024x1024 MatMuls against the same substeps
  run sequentially (W4), with the speed-up of two bare NumPy threads for reference;
- ``plan_startup_us``: compile and run of a 1-iteration plan (net creation included),
  against one iteration of the bare NumPy loop.
Uses the runtime directly (no caffe2.python layer). BLAS is limited to one thread.
"""

from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_k] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from caffe2.proto import caffe2_pb2  # noqa: E402
from caffe2.runtime import registry  # noqa: E402
from caffe2.runtime.workspace import Workspace  # noqa: E402

W3_ITERS = 100_000
W4_ITERS = 50
W4_N = 1024


def timed(fn: Callable[[], object], reps: int, warmup: bool = True) -> float:
    """Median wall time of reps calls of fn (after one untimed call)."""
    if warmup:
        fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def w3_plan(num_iter: int) -> caffe2_pb2.PlanDef:
    plan = caffe2_pb2.PlanDef(name="w3")
    nd = plan.network.add(name="loop_net")
    nd.op.add(type="Add", input=["x", "A"], output=["t1"])
    nd.op.add(type="Mul", input=["t1", "M"], output=["t2"])
    nd.op.add(type="Relu", input=["t2"], output=["x"])
    plan.execution_step.add(name="loop", network=["loop_net"], num_iter=num_iter)
    return plan


def w3_workspace() -> Workspace:
    ws = Workspace()
    ws.create_blob("x").value = np.ones(16, np.float32)
    ws.create_blob("A").value = np.full(16, 0.01, np.float32)
    ws.create_blob("M").value = np.full(16, 0.99, np.float32)
    return ws


def numpy_loop(n: int) -> Callable[[], None]:
    x = np.ones(16, np.float32)
    a = np.full(16, 0.01, np.float32)
    m = np.full(16, 0.99, np.float32)
    t1, t2, z = np.empty_like(x), np.empty_like(x), np.zeros_like(x)

    def run() -> None:
        for _ in range(n):
            np.add(x, a, out=t1)
            np.multiply(t1, m, out=t2)
            np.maximum(t2, z, out=x)

    return run


def bench_w3(reps: int) -> float:
    ws = w3_workspace()
    plan = w3_plan(W3_ITERS)
    assert ws.run_plan(w3_plan(100))  # the correctness run is the warm-up
    t_plan = timed(lambda: ws.run_plan(plan), reps, warmup=False) / W3_ITERS
    t_np = timed(numpy_loop(W3_ITERS), reps) / W3_ITERS
    run = ws.get_net("loop_net").run

    def net_loop() -> None:
        for _ in range(W3_ITERS):
            run()

    t_net = timed(net_loop, reps) / W3_ITERS
    print(
        f"w3_us_per_iter {t_plan * 1e6:.3f} us ratio={t_plan / t_np:.2f} "
        f"(numpy {t_np * 1e6:.3f} us; a bare loop of net.run {t_net * 1e6:.3f} us, "
        f"executor minus that loop {(t_plan - t_net) * 1e9:+.0f} ns per iteration)"
    )
    return t_np


def bench_startup(reps: int, t_np_iter: float) -> None:
    ws = w3_workspace()
    plan = w3_plan(1)
    t = timed(lambda: ws.run_plan(plan), reps)
    print(f"plan_startup_us {t * 1e6:.1f} us ratio={t / t_np_iter:.1f} (numpy 1 iteration)")


def w4_plan(concurrent: bool) -> caffe2_pb2.PlanDef:
    plan = caffe2_pb2.PlanDef(name="w4")
    subs = []
    for k in range(2):
        nd = plan.network.add(name=f"mm{k}")
        nd.op.add(type="MatMul", input=[f"A_{k}", f"B_{k}"], output=[f"Y_{k}"])
        subs.append(caffe2_pb2.ExecutionStep(name=f"s{k}", network=[nd.name], num_iter=W4_ITERS))
    top = plan.execution_step.add(name="par" if concurrent else "seq")
    top.substep.extend(subs)
    top.concurrent_substeps = concurrent
    return plan


def bench_w4(reps: int) -> None:
    if not registry.has_operator("MatMul"):
        print("w4_speedup skipped: the MatMul operator is not registered yet")
        return
    rng = np.random.RandomState(0)
    ws = Workspace()
    mats = {}
    for k in range(2):
        for name in (f"A_{k}", f"B_{k}"):
            mats[name] = rng.standard_normal((W4_N, W4_N)).astype(np.float32)
            ws.create_blob(name).value = mats[name].copy()
    seq, par = w4_plan(False), w4_plan(True)
    assert ws.run_plan(seq) and ws.run_plan(par)  # warm-up
    t_seq, t_par = [], []
    for _ in range(reps):
        for plan, out in ((seq, t_seq), (par, t_par)):
            t0 = time.perf_counter()
            assert ws.run_plan(plan)
            out.append(time.perf_counter() - t0)
    s_seq, s_par = statistics.median(t_seq), statistics.median(t_par)

    ys = [np.empty((W4_N, W4_N), np.float32) for _ in range(2)]

    def np_chain(k: int) -> None:
        for _ in range(W4_ITERS):
            np.dot(mats[f"A_{k}"], mats[f"B_{k}"], out=ys[k])

    def np_threads() -> None:
        ts = [threading.Thread(target=np_chain, args=(k,)) for k in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    np_seq = timed(lambda: (np_chain(0), np_chain(1)), reps, warmup=False)
    np_par = timed(np_threads, reps, warmup=False)
    speedup, np_speedup = s_seq / s_par, np_seq / np_par
    print(
        f"w4_speedup {speedup:.2f} x ratio={speedup / np_speedup:.2f} "
        f"(par {s_par:.3f} s, seq {s_seq:.3f} s; numpy threads {np_speedup:.2f} x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions of W3")
    ap.add_argument("--w4-reps", type=int, default=3, help="timed repetitions of W4")
    ap.add_argument("--startup-reps", type=int, default=500)
    ap.add_argument("--skip-w4", action="store_true")
    args = ap.parse_args()
    t_np_iter = bench_w3(args.reps)
    if not args.skip_w4:
        bench_w4(args.w4_reps)
    bench_startup(args.startup_reps, t_np_iter)


if __name__ == "__main__":
    main()
