"""examples/distributed_checkpointed_job.py: a Ray actor of a two-node checkpointed Job is
SIGKILLed mid-epoch; the job resumes from its last complete checkpoint with nothing lost,
and Ray leaves no process behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the example needs the extra caffe2py[ray]")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "distributed_checkpointed_job.py"


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def check_no_ray_left(out: str) -> list[int]:
    pids = [int(p) for p in re.search(r"ray: shut down; pids ([\d ]+);", out)[1].split()]
    assert "; 0 left" in out
    assert [p for p in pids if running(p)] == []
    return pids


def test_a_killed_node_resumes_from_the_last_complete_checkpoint(tmp_path):
    out = run("--workdir", str(tmp_path))
    lines = out.splitlines()
    assert "ray: local instance at 127.0.0.1:" in out
    actors = {m[1]: int(m[2]) for m in re.finditer(r"node (reader_\d): Ray actor pid (\d+)", out)}
    assert set(actors) == {"reader_0", "reader_1"} and len(set(actors.values())) == 2
    saved = [int(m[1]) for m in re.finditer(r"epoch (\d+) checkpointed on both nodes", out)]
    assert saved[:3] == [0, 1, 2]
    lost = next(i for i, line in enumerate(lines) if "raised NodeLostError" in line)
    assert f"for node 'reader_0' (pid {actors['reader_0']} was killed)" in lines[lost]
    assert "Node 'reader_0' was lost during the run" in lines[lost + 1]
    assert re.search(r"survivor reader_1 has summed \d+ rows, [1-9]\d* of them after", out)
    assert (
        "checkpoints on disk: reader_0.0, reader_1.0, reader_0.1, reader_1.1, reader_0.2, "
        "reader_1.2" in out
    )
    last = int(re.search(r"run 2 resumed from epoch 2, finished after epoch (\d+)", out)[1])
    assert saved[3:] == list(range(3, last + 1)) and last >= 4
    rows = int(re.search(r"data: (\d+) rows", out)[1])
    assert f"final sums: count={rows}," in out
    assert "nothing lost" in out
    assert re.search(r"fit: (.*)", out)[1] == re.search(r"polyfit on the CSV: (.*)", out)[1]
    ckpt = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert ckpt == sorted(f"reader_{k}.{e}" for k in (0, 1) for e in range(last + 1))
    pids = check_no_ray_left(out)
    assert set(actors.values()) <= set(pids)  # the actors were among the Ray processes


def test_killed_in_the_first_epoch_with_user_data(tmp_path):
    data = tmp_path / "mine.csv"
    data.write_text("x,y\n" + "".join(f"{x / 2},{x + 1.5}\n" for x in range(50)))
    args = ["--data", str(data), "--x", "x", "--y", "y", "--kill-after-epoch", "0"]
    out = run(*args, "--batch-size", "5", "--batches-per-epoch", "2")
    assert "run 1 raised NodeLostError for node 'reader_0'" in out
    assert "checkpoints on disk: reader_0.0, reader_1.0\n" in out
    assert "run 2 resumed from epoch 0, finished after epoch 3" in out
    assert "final sums: count=50," in out
    assert "fit: y = 2.0000 x + 1.5000" in out
    check_no_ray_left(out)
    assert not os.path.exists(tmp_path / "ckpt" / "reader_0.4")
