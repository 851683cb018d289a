"""examples/session_tour.py runs and shows what each workspace can see."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "session_tour.py"


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("    "):
            sections[current].append(line.strip())
        else:
            current = line
            sections[current] = []
    return sections


def test_session_tour_runs_and_reports_visibility():
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "message: Hello from node 1." in out
    sections = _sections(out)

    node1 = sections["task on node1 (private) could see:"]
    node2 = sections["task on node2 (private) could see:"]
    # Both private tasks see the global blob and their own scratch blob, not each other's.
    assert "n1msg" in node1 and "n1msg" in node2
    assert "node1_scratch" in node1 and "node2_scratch" not in node1
    assert "node2_scratch" in node2 and "node1_scratch" not in node2

    global_blobs = sections["global workspace after the runs:"]
    assert "n1msg" in global_blobs
    assert not any(b.endswith("_scratch") for b in global_blobs)
    # The task outputs were created in the global workspace before the run, and stay.
    assert any(b.startswith("node1/task:output") for b in global_blobs)
    assert any(b.startswith("node2/task:output") for b in global_blobs)
    assert "private blobs left in the global workspace: none" in out
