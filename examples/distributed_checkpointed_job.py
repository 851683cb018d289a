"""The checkpointed Job of ``checkpointed_job.py`` on two Caffe2 nodes in two Ray actors: one
node's process is killed mid-epoch, and the job resumes with nothing lost.

The job (built by ``checkpointed_job.build_job``) fits ``y = a x + b`` to two CSV columns;
node ``reader_0`` reads the even rows, ``reader_1`` the odd ones, each summing them in its own
global workspace, which here lives in its own Ray actor (``DistributedSession``). A
MultiNodeCheckpointManager saves both nodes' state after every epoch (minidb files
``<workdir>/ckpt/reader_<k>.<epoch>``).

What ``python examples/distributed_checkpointed_job.py`` does:

1. starts a local Ray instance on loopback (no dashboard, no usage stats);
2. runs the job; after its second batch of epoch ``--kill-after-epoch`` + 1 (default 3), an
   op on ``reader_0`` SIGKILLs the actor's own process (once: a marker file);
3. the run raises NodeLostError naming ``reader_0``; ``reader_1`` survives, holding rows
   summed after its last checkpoint; the lost node comes back, empty, on the next run;
4. a new JobRunner, in the same session, resumes from the latest epoch whose checkpoint
   exists on every node, loading both nodes' state (the survivor's half epoch is dropped);
5. checks that the final sums are exactly those of the CSV (no row lost, none counted
   twice), prints the fit, shuts Ray down and checks none of its processes is left.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Ray reads these when it is imported: every address stays on loopback, no usage stats.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from checkpointed_job import (  # noqa: E402
    NODES,
    SCALE,
    STATS,
    WEATHER,
    LatestCheckpoint,
    build_job,
    exact_sums,
    fit,
    job_arguments,
    read_readings,
    write_readings,
)

from caffe2.python.checkpoint import JobRunner, MultiNodeCheckpointManager  # noqa: E402
from caffe2.python.net_builder import ops  # noqa: E402


def descendants(pid: int) -> set[int]:
    """PIDs of every process below ``pid`` (from /proc): the Ray processes this one started."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """The PIDs of ``pids`` that still run (zombies count as gone)."""
    left = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    left.add(pid)
        except OSError:
            pass
    return left


def kill_once(marker: str, threshold: int):
    """A Python op function (shipped to the node's actor): SIGKILL this process the first
    time the node's row count passes ``threshold``; the marker file makes it happen once."""

    def kill(inputs, outputs):
        if int(inputs[0].fetch()) > threshold and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), 9)

    return kill


def fetch_sums(session) -> dict[str, int]:
    """The job's sums over both nodes, fetched from the nodes' actors."""
    return {
        name: sum(int(session.fetch_blob(f"{node}/{name}", node)) for node in NODES)
        for name in STATS
    }


def run(args: argparse.Namespace, workdir: Path) -> None:
    from caffe2.distributed import DistributedSession, NodeLostError
    from caffe2.distributed.testing import start_local_ray, stop_local_ray

    data = read_readings(Path(args.data), args.x, args.y)
    print(
        f"data: {len(data)} rows of ({args.x}, {args.y}) in {args.data}; "
        f"nodes {', '.join(NODES)}; "
        f"{args.batches_per_epoch} batches of {args.batch_size} rows per node and epoch"
    )
    ckpt = workdir / "ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    marker = str(workdir / "killed.pid")
    rows_per_epoch = args.batches_per_epoch * args.batch_size
    # reader_0 dies after its second batch of epoch kill_after_epoch + 1.
    threshold = args.kill_after_epoch * rows_per_epoch + args.batch_size

    def kill_at(node, sums):
        if node == NODES[0]:
            ops.Python(kill_once(marker, threshold))([sums["count"]], [])

    start_local_ray(num_cpus=2)
    import ray

    print(f"ray: local instance at {ray.get_runtime_context().gcs_address}")
    session = DistributedSession(heartbeat_timeout=10.0)
    ray_pids: set[int] = set()
    try:

        def on_saved(epoch: int) -> None:
            ray_pids.update(descendants(os.getpid()))
            s = fetch_sums(session)
            print(f"epoch {epoch} checkpointed on both nodes: {s['count']} rows summed")
            if epoch == 0 or args.verbose:
                for node, info in sorted(session.nodes().items()):
                    print(f"  node {node}: Ray actor pid {info['pid']}")

        def runner() -> JobRunner:
            handler = LatestCheckpoint(on_saved)
            manager = MultiNodeCheckpointManager(str(ckpt), "minidb", metadata_handler=handler)
            job = build_job(data, args.batch_size, args.batches_per_epoch, kill_at)
            return JobRunner(job.compile(DistributedSession), manager)

        print("run 1: starting from scratch")
        try:
            last = runner()(session)
            print(f"run 1 finished after epoch {last}: no node was lost (the job ended first)")
        except NodeLostError as e:
            killed = Path(marker).read_text() if os.path.exists(marker) else "?"
            print(f"run 1 raised NodeLostError for node '{e.node}' (pid {killed} was killed):")
            print(f"  {str(e).splitlines()[0][:300]}")
            survivor = NODES[1]
            count = int(session.fetch_blob(f"{survivor}/count", survivor))
            print(
                f"  the survivor {survivor} has summed {count} rows, "
                f"{count - args.kill_after_epoch * rows_per_epoch} of them after its last "
                "checkpoint: the resume drops those"
            )
            saved = sorted(os.listdir(ckpt), key=lambda f: (int(f.rsplit(".", 1)[1]), f))
            print(f"checkpoints on disk: {', '.join(saved)}")
            r = runner()
            print("run 2: resuming from the latest epoch checkpointed on every node")
            last = r(session)
            print(f"run 2 resumed from epoch {r.resume_from_epoch}, finished after epoch {last}")
        ray_pids.update(descendants(os.getpid()))
        s = fetch_sums(session)
    finally:
        session.close()
        stop_local_ray()

    print("final sums: " + ", ".join(f"{k}={v}" for k, v in s.items()))
    slope, intercept = fit(s)
    print(f"fit: {args.y} = {slope:.4f} {args.x} + {intercept:.4f}")
    np_slope, np_intercept = np.polyfit(data[:, 0] / SCALE, data[:, 1] / SCALE, 1)
    print(f"numpy.polyfit on the CSV: {args.y} = {np_slope:.4f} {args.x} + {np_intercept:.4f}")
    expected = exact_sums(data)
    if s != expected:
        raise SystemExit(f"MISMATCH: the job ended with {s}, the CSV gives {expected}")
    print("nothing lost: the resumed job has exactly the sums of the CSV itself")
    print("(no row missed, none counted twice)")

    deadline = time.monotonic() + 15
    while alive(ray_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = alive(ray_pids)
    print(f"ray: shut down; pids {' '.join(map(str, sorted(ray_pids)))}; {len(left)} left")
    if left:
        raise SystemExit(f"Ray processes still running: {sorted(left)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    job_arguments(parser)
    parser.add_argument(
        "--kill-after-epoch", type=int, default=2, help="reader_0 dies in the next epoch"
    )
    parser.add_argument("--verbose", action="store_true", help="list the actors every epoch")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dist_ckpt_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.data is None:
            args.data = WEATHER
            if not WEATHER.exists():
                args.data = workdir / "readings.csv"
                write_readings(args.data)
        run(args, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
