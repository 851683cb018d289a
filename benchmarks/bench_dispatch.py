"""Per-operator dispatch cost and net creation cost, as ratios to bare NumPy in the same run.

    python benchmarks/bench_dispatch.py [--reps N]

Prints one line per figure: ``name value unit ratio=<value / numpy floor>``. Uses the runtime
directly (no caffe2.python layer), so it isolates the kernel loop from the API's call cost.
"""

from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_k] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from caffe2.proto import caffe2_pb2  # noqa: E402
from caffe2.runtime.workspace import Workspace  # noqa: E402

CHAIN = 200


def chain_def(name: str) -> caffe2_pb2.NetDef:
    nd = caffe2_pb2.NetDef(name=name)
    prev = "X"
    for i in range(CHAIN):
        out = f"h{i + 1}"
        kind = i % 3
        if kind == 0:
            nd.op.add(type="Add", input=[prev, "A"], output=[out])
        elif kind == 1:
            nd.op.add(type="Mul", input=[prev, "M"], output=[out])
        else:
            nd.op.add(type="Relu", input=[prev], output=[out])
        prev = out
    return nd


def timed(fn, reps: int) -> float:
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--shape", type=int, default=16)
    args = ap.parse_args()
    shape = (args.shape,)
    x = np.random.RandomState(0).standard_normal(shape).astype(np.float32)
    a = np.full(shape, 0.01, np.float32)
    m = np.full(shape, 0.99, np.float32)
    ws = Workspace()
    for name, v in (("X", x), ("A", a), ("M", m)):
        ws.create_blob(name).value = v.copy()
    nd = chain_def("chain")
    runs = 1000

    net = ws.create_net(nd)

    def run_net():
        for _ in range(runs):
            net.run()

    z = np.zeros_like(x)
    chain = [(np.add, a), (np.multiply, m), (np.maximum, z)] * (CHAIN // 3 + 1)
    chain = chain[:CHAIN]
    bufs = [np.empty_like(x) for _ in range(CHAIN)]

    def numpy_distinct():
        for _ in range(runs):
            h = x
            for (f, c), out in zip(chain, bufs, strict=True):
                f(h, c, out=out)
                h = out

    per = 1e6 / (runs * CHAIN)
    t_net = timed(run_net, args.reps) * per
    t_np = timed(numpy_distinct, args.reps) * per
    print(f"dispatch_us_per_op {t_net:.3f} us ratio={t_net / t_np:.2f} (numpy {t_np:.3f} us)")

    def create():
        for _ in range(10):
            ws.create_net(nd, overwrite=True)

    t_create = timed(create, max(1, args.reps // 2)) * 1e6 / (10 * CHAIN)
    print(f"net_creation_us_per_op {t_create:.2f} us ratio_to_one_run={t_create / t_net:.1f}")


if __name__ == "__main__":
    main()
