"""examples/checkpointed_job.py: a job killed by SIGKILL mid-run resumes with nothing lost."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "checkpointed_job.py"


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_killed_job_resumes_from_its_last_checkpoint(tmp_path):
    out = run("--workdir", str(tmp_path))
    lines = out.splitlines()
    run1 = [line for line in lines if line.startswith("run 1 (pid")]
    assert [re.search(r"epoch (\d+) checkpointed", line)[1] for line in run1[1:-1]] == [
        "0",
        "1",
        "2",
    ]
    assert "SIGKILL in epoch 3" in run1[-1]
    assert "run 1 was killed by SIGKILL (exit status -9)" in out
    assert (
        "checkpoints on disk: reader_0.0, reader_1.0, reader_0.1, reader_1.1, reader_0.2, "
        "reader_1.2" in out
    )
    run2 = [line for line in lines if line.startswith("run 2 (pid")]
    assert "resuming from epoch 2" in run2[0]
    resumed = [int(re.search(r"epoch (\d+) checkpointed", line)[1]) for line in run2[1:-1]]
    last = int(re.search(r"finished after epoch (\d+)", run2[-1])[1])
    assert resumed == list(range(3, last + 1)) and last >= 4
    rows = int(re.search(r"data: (\d+) rows", out)[1])
    assert f"count={rows}," in run2[-1]
    assert "nothing lost" in out
    # The resumed job wrote the remaining checkpoints next to the survivors.
    ckpt = sorted(p.name for p in (tmp_path / "job" / "ckpt").iterdir())
    assert ckpt == sorted(f"reader_{k}.{e}" for k in (0, 1) for e in range(last + 1))
    fit = re.search(r"fit: (.*)", out)
    numpy_fit = re.search(r"polyfit on the CSV: (.*)", out)
    assert fit.groups() == numpy_fit.groups()


def test_killed_in_the_first_epoch_with_user_data(tmp_path):
    data = tmp_path / "mine.csv"
    rows = [(x / 2, x + 1.5) for x in range(50)]
    data.write_text("x,y\n" + "".join(f"{x},{y}\n" for x, y in rows))
    out = run(
        "--data",
        str(data),
        "--x",
        "x",
        "--y",
        "y",
        "--kill-after-epoch",
        "0",
        "--batch-size",
        "5",
        "--batches-per-epoch",
        "2",
    )
    assert "SIGKILL in epoch 1" in out
    assert "resuming from epoch 0" in out
    assert "finished after epoch 3: count=50," in out
    assert "fit: y = 2.0000 x + 1.5000" in out
    assert "nothing lost" in out


def test_unknown_column_is_a_clear_error(tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("a,b\n1,2\n")
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "no column ['tmin_f', 'tmax_f']" in done.stderr and "['a', 'b']" in done.stderr
