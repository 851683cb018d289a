"""The README's main example runs and prints what it promises."""

from __future__ import annotations

import pathlib
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "plan_tour.py"


def test_plan_tour_runs():
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "loop stopped with done = True" in out
    assert "prod0[0, 0] = 0.0064" in out and "prod1[0, 0] = 0.0256" in out
    assert "a failing net reports: [enforce fail at net 'bad', op #0 (Add)]" in out
    assert "x is still there: True" in out
    # x <- relu(0.9 x + 0.5), six times from 1.0 (the counter stops after the sixth).
    x = 1.0
    for _ in range(6):
        x = 0.9 * x + 0.5
    assert f"{x:.4f}"[:5] in out
