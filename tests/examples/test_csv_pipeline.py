"""examples/csv_pipeline.py converts the weather CSV correctly, on several threads.

The expected rows are computed here from the input CSV with the csv module and plain Python
floats, independently of the example's Dataset/pipe/ops code.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "csv_pipeline.py"
DATA = EXAMPLES / "data" / "weather_2023.csv"
OUT_HEADER = ["date", "station", "tmin_c", "tmax_c", "mean_c", "range_c", "precip_mm", "frost"]
FLOATS = ["tmin_c", "tmax_c", "mean_c", "range_c", "precip_mm"]


def run_example(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=120
    )


def expected_rows(path: Path) -> dict[tuple[str, str], dict[str, float | int]]:
    """(station, date) -> the converted values, computed with Python floats."""
    expected: dict[tuple[str, str], dict[str, float | int]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            tmin_c = (float(row["tmin_f"]) - 32.0) * 5.0 / 9.0
            tmax_c = (float(row["tmax_f"]) - 32.0) * 5.0 / 9.0
            key = (row["station"], row["date"])
            assert key not in expected, f"duplicate key {key} in {path}"
            expected[key] = {
                "tmin_c": tmin_c,
                "tmax_c": tmax_c,
                "mean_c": (tmin_c + tmax_c) / 2.0,
                "range_c": tmax_c - tmin_c,
                "precip_mm": float(row["precip_in"]) * 25.4,
                "frost": int(float(row["tmin_f"]) < 32.0),
            }
    return expected


def read_output(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        assert next(reader) == OUT_HEADER
        return [dict(zip(OUT_HEADER, row, strict=True)) for row in reader]


def check_output(out_path: Path, data_path: Path) -> int:
    """Assert the output file holds exactly the expected rows, sorted; return the count."""
    expected = expected_rows(data_path)
    rows = read_output(out_path)
    keys = [(r["station"], r["date"]) for r in rows]
    assert len(rows) == len(expected)
    assert set(keys) == set(expected)
    assert keys == sorted(keys), "the output is sorted by station, then date"
    for row, key in zip(rows, keys, strict=True):
        want = expected[key]
        for name in FLOATS:
            # Written with 3 decimals from float32 results.
            assert math.isclose(float(row[name]), want[name], abs_tol=1e-3), (key, name, row)
        assert int(row["frost"]) == want["frost"], (key, row)
    return len(rows)


def test_csv_pipeline_converts_every_row(tmp_path):
    out = tmp_path / "metric.csv"
    done = run_example("--out", str(out))
    assert done.returncode == 0, done.stderr
    n = check_output(out, DATA)
    assert n == 1095
    assert f"records in: {n}, records out: {n} (all present once)" in done.stdout
    assert "pipe: 4 threads" in done.stdout
    assert f"wrote {out}" in done.stdout
    # The summary: each station's 365 days and frost-day count, from the expected rows.
    expected = expected_rows(DATA)
    for station in ("Fairbanks, AK", "Phoenix, AZ", "Portland, OR"):
        frost = sum(v["frost"] for (s, _), v in expected.items() if s == station)
        line = next(li for li in done.stdout.splitlines() if li.startswith(station))
        assert line.split()[2] == "365"
        assert line.split()[6] == str(frost)


def test_csv_pipeline_small_file_uneven_batches(tmp_path):
    """A file of 11 rows, batches of 2 on 3 threads: quoting, the 32 °F frost boundary."""
    data = tmp_path / "small.csv"
    rows = [
        [f"2024-02-{i + 1:02d}", station, tmin, tmax, precip]
        for i, (station, tmin, tmax, precip) in enumerate(
            [
                ('Quote "Q", QC', "32.0", "40.0", "0.00"),
                ('Quote "Q", QC', "31.9", "33.5", "1.25"),
                ("Zürich", "-40.0", "-40.0", "0.10"),
                ("Zürich", "212.0", "212.0", "0.01"),
                ("Zürich", "50.0", "68.0", "2.00"),
                ("a", "0.0", "100.0", "0.33"),
                ("b", "-0.1", "0.1", "0.00"),
                ("c", "45.5", "61.3", "0.07"),
                ("d", "10.0", "20.0", "3.94"),
                ("e", "32.1", "32.1", "0.00"),
                ("f", "-12.3", "4.5", "0.50"),
            ]
        )
    ]
    with open(data, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["date", "station", "tmin_f", "tmax_f", "precip_in"])
        writer.writerows(rows)
    out = tmp_path / "out" / "small_metric.csv"
    done = run_example(
        "--data", str(data), "--out", str(out), "--threads", "3", "--batch-size", "2"
    )
    assert done.returncode == 0, done.stderr
    assert check_output(out, data) == 11
    assert "records in: 11, records out: 11" in done.stdout
    frost = {(r["station"], r["tmin_c"]): r["frost"] for r in read_output(out)}
    assert frost[('Quote "Q", QC', "0.000")] == "0"  # exactly 32 °F is not frost
    assert frost[('Quote "Q", QC', "-0.056")] == "1"


def test_csv_pipeline_rejects_a_wrong_header(tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("date,station,tmin,tmax,precip\n2024-01-01,x,1,2,3\n", encoding="utf-8")
    done = run_example("--data", str(data), "--out", str(tmp_path / "out.csv"))
    assert done.returncode != 0
    assert "expected ['date', 'station', 'tmin_f', 'tmax_f', 'precip_in']" in done.stderr
    assert not (tmp_path / "out.csv").exists()
