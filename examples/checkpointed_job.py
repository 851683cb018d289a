"""A checkpointed Job that is killed mid-run and resumes with nothing lost.

The job fits a line ``y = a x + b`` to two columns of a CSV by streaming; by default the daily
highs against the lows (``tmax_f`` vs ``tmin_f``) of ``examples/data/weather_2023.csv``.
Two nodes (``reader_0``, ``reader_1``) each read every other row from a Dataset, a few
batches per epoch, through a pipe whose processor adds the batch to the node's running sums
(count, Σx, Σy, Σxy, Σx², over int64 tenths: exact). The sums and the dataset cursors are the
init group's state, so a MultiNodeCheckpointManager saves them after every epoch, one minidb
per node and epoch: ``<workdir>/job/ckpt/reader_<k>.<epoch>``.

What ``python examples/checkpointed_job.py`` does:

1. reads the CSV (``--data``, ``--x``, ``--y``; synthetic readings if the weather file is
   missing);
2. runs the job in a child process that SIGKILLs itself in the middle of the epoch after
   ``--kill-after-epoch`` (default 2): no cleanup, whatever that epoch did is lost;
3. runs it again in a new process: the metadata handler finds the latest epoch whose
   checkpoint exists on every node, the runner loads it and carries on;
4. runs the job once more, uninterrupted, in a fresh directory, and checks that the resumed
   run ends with exactly the same sums, which are also those computed directly from the CSV
   (and its fit is numpy.polyfit's).

``--worker`` runs one job process (used by the steps above).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from caffe2.python import core, workspace
from caffe2.python.checkpoint import (
    Job,
    JobRunner,
    MultiNodeCheckpointManager,
    db_name,
)
from caffe2.python.dataio import ReaderWithLimit
from caffe2.python.dataset import Dataset
from caffe2.python.net_builder import ops
from caffe2.python.pipeline import pipe
from caffe2.python.schema import ConstRecord, Struct
from caffe2.python.session import LocalSession
from caffe2.python.task import Node, Task

NODES = ["reader_0", "reader_1"]
SCALE = 10  # values are read as int64 tenths
ROOT = Path(__file__).resolve().parents[1]
WEATHER = Path(__file__).resolve().parent / "data" / "weather_2023.csv"
STATS = ["count", "sum_x", "sum_y", "sum_xy", "sum_xx"]


# ---- data -----------------------------------------------------------------------------------


def write_readings(path: Path, rows: int = 1000, seed: int = 7) -> None:
    """Synthetic daily lows and highs (one decimal), used when the weather CSV is missing."""
    rng = np.random.default_rng(seed)
    tmin = rng.integers(-300, 800, size=rows) / 10
    tmax = tmin + 15 + rng.integers(0, 200, size=rows) / 10
    lines = ["tmin_f,tmax_f"] + [f"{a:.1f},{b:.1f}" for a, b in zip(tmin, tmax, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def read_readings(path: Path, x_col: str, y_col: str) -> np.ndarray:
    """Columns ``x_col`` and ``y_col`` of a CSV with a header, as int64 tenths
    (fixed point, so every sum the job computes is exact)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (x_col, y_col) if c not in (reader.fieldnames or [])]
        if missing:
            raise SystemExit(f"{path}: no column {missing}; the columns are {reader.fieldnames}")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append([round(float(row[x_col]) * SCALE), round(float(row[y_col]) * SCALE)])
            except (TypeError, ValueError):
                raise SystemExit(
                    f"{path}:{line}: {x_col}={row[x_col]!r}, {y_col}={row[y_col]!r} "
                    "are not both numbers"
                ) from None
    if not rows:
        raise SystemExit(f"{path}: no data rows")
    return np.array(rows, dtype=np.int64)


def exact_sums(data: np.ndarray) -> dict[str, int]:
    """The sums the job must end with, computed with Python integers."""
    x = [int(v) for v in data[:, 0]]
    y = [int(v) for v in data[:, 1]]
    return {
        "count": len(x),
        "sum_x": sum(x),
        "sum_y": sum(y),
        "sum_xy": sum(a * b for a, b in zip(x, y, strict=True)),
        "sum_xx": sum(a * a for a in x),
    }


def fit(s: dict[str, int]) -> tuple[float, float]:
    """Least squares slope and intercept (in the CSV's units) from the sums of tenths."""
    n = s["count"]
    slope = (n * s["sum_xy"] - s["sum_x"] * s["sum_y"]) / (n * s["sum_xx"] - s["sum_x"] ** 2)
    return slope, (s["sum_y"] - slope * s["sum_x"]) / n / SCALE


# ---- the job --------------------------------------------------------------------------------


def build_job(data: np.ndarray, batch_size: int, batches_per_epoch: int, kill_at) -> Job:
    """Each node reads rows k, k+2, ... of ``data``; ``kill_at(node, sums)`` may add a kill op
    to the node's per-batch net (``sums``: the node's running-sum blobs, name -> blob)."""
    with Job() as job:
        for k, node in enumerate(NODES):
            rows = data[k :: len(NODES)]
            with Node(node):
                with job.init_group, Task(), core.NameScope(node):
                    # Blobs reader_<k>/x, reader_<k>/y, reader_<k>/count, ...
                    record = ConstRecord(ops, Struct(("x", rows[:, 0]), ("y", rows[:, 1])))
                    ds = Dataset(record, name=f"{node}/readings")
                    reader = ds.reader(ops, batch_size=batch_size)
                    sums = {name: ops.Const(0, blob_out=name) for name in STATS}

                def accumulate(rec, sums=sums, node=node):
                    x, y = rec.x(), rec.y()
                    ops.Add([sums["count"], ops.Size([x], 1)], [sums["count"]])
                    ops.Add([sums["sum_x"], ops.ReduceFrontSum([x], 1)], [sums["sum_x"]])
                    ops.Add([sums["sum_y"], ops.ReduceFrontSum([y], 1)], [sums["sum_y"]])
                    xy = ops.ReduceFrontSum([ops.Mul([x, y], 1)], 1)
                    ops.Add([sums["sum_xy"], xy], [sums["sum_xy"]])
                    xx = ops.ReduceFrontSum([ops.Mul([x, x], 1)], 1)
                    ops.Add([sums["sum_xx"], xx], [sums["sum_xx"]])
                    kill_at(node, sums)

                epoch_reader = ReaderWithLimit(reader, num_iter=batches_per_epoch)
                pipe(epoch_reader, processor=accumulate)
                job.add_stop_signal(epoch_reader.data_finished())
    return job


def fetch_sums(ws) -> dict[str, int]:
    return {name: sum(int(ws.blobs[f"{node}/{name}"].fetch()) for node in NODES) for name in STATS}


class LatestCheckpoint:
    """Metadata handler: resume from the latest epoch whose checkpoint exists on every node
    (a minidb appears only once completely written), and report each saved epoch."""

    def __init__(self, on_saved) -> None:
        self.on_saved = on_saved
        self.db_prefix = None
        self.node_names: list[str] = []

    def set_params(self, db_prefix, db_type, node_names, path_prefix=None, path_type=None):
        self.db_prefix, self.node_names = db_prefix, node_names

    def last_epoch(self, user_epoch=None):
        if user_epoch is not None:
            return user_epoch
        epochs = None
        for node in self.node_names:
            found = set()
            for entry in os.listdir(self.db_prefix):
                stem, _, epoch = entry.rpartition(".")
                if stem == node and epoch.isdigit():
                    found.add(int(epoch))
            epochs = found if epochs is None else epochs & found
        return max(epochs) if epochs else None

    def write(self, epoch):
        self.on_saved(epoch)

    def cp_accessible(self, epoch=None):
        return True


def worker(args: argparse.Namespace) -> None:
    """One job process: run from scratch, or resume from the latest complete checkpoint."""
    label = f"run {args.label} (pid {os.getpid()})"
    data = read_readings(Path(args.data), args.x, args.y)
    ckpt_dir = Path(args.workdir) / "ckpt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    batches = {node: 0 for node in NODES}
    kill_after = args.kill_after_epoch

    def kill_at(node, sums):
        if kill_after is None or node != NODES[0]:
            return

        def count_batch(inputs, outputs):
            batches[node] += 1
            # Two batches into the epoch after `kill_after` (counted in this process).
            if batches[node] == kill_after * args.batches_per_epoch + 2:
                print(f"{label}: SIGKILL in epoch {kill_after + 1}, 2 batches into {node}")
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        ops.Python(count_batch)([], [])

    ws = workspace.C.Workspace()
    session = LocalSession(ws)

    def on_saved(epoch):
        s = fetch_sums(ws)
        files = ", ".join(Path(db_name(epoch, node, str(ckpt_dir))).name for node in NODES)
        print(f"{label}: epoch {epoch} checkpointed ({files}): {s['count']} rows summed")
        sys.stdout.flush()

    handler = LatestCheckpoint(on_saved)
    checkpoint = MultiNodeCheckpointManager(str(ckpt_dir), "minidb", metadata_handler=handler)
    job = build_job(data, args.batch_size, args.batches_per_epoch, kill_at)
    runner = JobRunner(job.compile(LocalSession), checkpoint)
    handler.set_params(str(ckpt_dir), "minidb", NODES)
    resume = handler.last_epoch()
    print(
        f"{label}: "
        + (f"resuming from epoch {resume}" if resume is not None else "starting from scratch")
    )
    last = runner(session)
    s = fetch_sums(ws)
    print(f"{label}: finished after epoch {last}: " + ", ".join(f"{k}={v}" for k, v in s.items()))
    (Path(args.workdir) / "result.txt").write_text(" ".join(f"{k}={v}" for k, v in s.items()))


# ---- the demo -------------------------------------------------------------------------------


def run_worker(args: argparse.Namespace, workdir: Path, label: str, kill: int | None) -> int:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--label",
        label,
        "--workdir",
        str(workdir),
        "--data",
        str(args.data),
        "--x",
        args.x,
        "--y",
        args.y,
        "--batch-size",
        str(args.batch_size),
        "--batches-per-epoch",
        str(args.batches_per_epoch),
    ]
    if kill is not None:
        cmd += ["--kill-after-epoch", str(kill)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    sys.stdout.write(done.stdout)
    if done.returncode not in (0, -signal.SIGKILL):
        sys.stderr.write(done.stderr)
        raise SystemExit(f"run {label} failed with exit status {done.returncode}")
    return done.returncode


def read_result(workdir: Path) -> dict[str, int]:
    text = (workdir / "result.txt").read_text()
    return {k: int(v) for k, v in (item.split("=") for item in text.split())}


def demo(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ckpt_job_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.data is None:
            args.data = WEATHER
            if not WEATHER.exists():
                args.data = workdir / "readings.csv"
                write_readings(args.data)
        data = read_readings(Path(args.data), args.x, args.y)
        print(
            f"data: {len(data)} rows of ({args.x}, {args.y}) in {args.data}; "
            f"nodes {', '.join(NODES)}; "
            f"{args.batches_per_epoch} batches of {args.batch_size} rows per node and epoch"
        )
        job_dir = workdir / "job"
        kill = 2 if args.kill_after_epoch is None else args.kill_after_epoch
        status = run_worker(args, job_dir, "1", kill)
        if status == -signal.SIGKILL:
            print(f"run 1 was killed by SIGKILL (exit status {status})")
        else:
            print("run 1 was not killed (the job ended first)")
        saved = sorted(os.listdir(job_dir / "ckpt"), key=lambda f: (int(f.rsplit(".", 1)[1]), f))
        print(f"checkpoints on disk: {', '.join(saved)}")
        run_worker(args, job_dir, "2", None)

        reference_dir = workdir / "uninterrupted"
        run_worker(args, reference_dir, "3 (uninterrupted)", None)
        resumed, reference, expected = (
            read_result(job_dir),
            read_result(reference_dir),
            exact_sums(data),
        )
        slope, intercept = fit(resumed)
        print(f"fit: {args.y} = {slope:.4f} {args.x} + {intercept:.4f}")
        np_slope, np_intercept = np.polyfit(data[:, 0] / SCALE, data[:, 1] / SCALE, 1)
        print(f"numpy.polyfit on the CSV: {args.y} = {np_slope:.4f} {args.x} + {np_intercept:.4f}")
        if resumed == reference == expected:
            print("nothing lost: the killed-and-resumed run has exactly the sums of the")
            print("uninterrupted run and of the CSV itself (no row missed, none counted twice)")
        else:
            raise SystemExit(
                f"MISMATCH: resumed {resumed}, uninterrupted {reference}, expected {expected}"
            )
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def job_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the job itself (data, columns, work dir, batching), shared by the
    examples that run it."""
    parser.add_argument(
        "--data", type=Path, help=f"CSV with a header (default: {WEATHER.relative_to(ROOT)})"
    )
    parser.add_argument("--x", default="tmin_f", help="the x column (default tmin_f)")
    parser.add_argument("--y", default="tmax_f", help="the y column (default tmax_f)")
    parser.add_argument("--workdir", help="where the checkpoints go (default: a temp dir)")
    parser.add_argument("--batch-size", type=int, default=30)
    parser.add_argument("--batches-per-epoch", type=int, default=4)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    job_arguments(parser)
    parser.add_argument(
        "--kill-after-epoch", type=int, help="the epoch after which run 1 dies (default 2)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary work dir")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="1", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.data is None or args.workdir is None:
            parser.error("--worker needs --data and --workdir")
        worker(args)
    else:
        demo(args)


if __name__ == "__main__":
    main()
