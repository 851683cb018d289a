"""Convert a CSV weather table to metric units through a Dataset and a multi-threaded pipe.

``examples/data/weather_2023.csv`` holds one row per station and day of 2023 (1095 rows,
three stations; synthetic data generated with a fixed seed): ``date``, ``station`` (quoted
when it contains a comma), the daily minimum and maximum temperatures in °F and the
precipitation in inches. What ``python examples/csv_pipeline.py`` does:

1. reads the file with the ``csv`` module into one column per field and feeds the columns
   into an input ``Dataset`` whose schema is a ``schema.Struct`` of string and float32
   fields;
2. builds a TaskGroup with one ``pipeline.pipe(input_ds.reader(...), output_ds.writer(),
   num_threads=4, processor=ToMetric())``: four thread bodies read batches from the shared
   cursor, and the processor's ops convert each batch (°F to °C, inches to mm) and derive
   the daily mean and range and a frost flag; the writer appends the batches to an output
   ``Dataset`` under its mutex;
3. runs the group with a ``LocalSession``, fetches the output dataset, and checks that every
   input record came out exactly once (the threads append in any order, so both sides are
   sorted by (station, date) before comparing);
4. writes the result, sorted by station and date, to ``--out`` (default: a file in a new
   temporary directory) and prints a per-station summary and the rows each thread body
   processed.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from caffe2.python import core, dataset, pipeline, schema, workspace
from caffe2.python.net_builder import ops
from caffe2.python.session import LocalSession
from caffe2.python.task import TaskGroup

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "weather_2023.csv"

INPUT_SCHEMA = schema.Struct(
    ("date", str),
    ("station", str),
    ("tmin_f", np.float32),
    ("tmax_f", np.float32),
    ("precip_in", np.float32),
)
OUTPUT_SCHEMA = schema.Struct(
    ("date", str),
    ("station", str),
    ("tmin_c", np.float32),
    ("tmax_c", np.float32),
    ("mean_c", np.float32),
    ("range_c", np.float32),
    ("precip_mm", np.float32),
    ("frost", bool),
)
FLOAT_INPUTS = ["tmin_f", "tmax_f", "precip_in"]
MM_PER_INCH = 25.4


# ---- reading the CSV ------------------------------------------------------------------------


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """The CSV's columns, named and typed as INPUT_SCHEMA (the header must match it)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header != INPUT_SCHEMA.field_names():
            raise SystemExit(f"{path}: header {header}, expected {INPUT_SCHEMA.field_names()}")
        data = list(rows)
    columns: dict[str, list[str]] = {name: [] for name in header}
    for line, row in enumerate(data, start=2):
        if len(row) != len(header):
            raise SystemExit(f"{path}:{line}: {len(row)} fields, expected {len(header)}")
        for name, value in zip(header, row, strict=True):
            columns[name].append(value)
    typed: dict[str, np.ndarray] = {}
    for name, dtype in zip(header, INPUT_SCHEMA.field_types(), strict=True):
        try:
            typed[name] = np.array(columns[name], dtype=dtype if name in FLOAT_INPUTS else object)
        except ValueError as e:
            raise SystemExit(f"{path}: column {name}: {e}") from e
    return typed


# ---- the processor --------------------------------------------------------------------------


class ToMetric:
    """The pipe's processor: ops converting one batch of INPUT_SCHEMA to OUTPUT_SCHEMA.

    pipe() calls it once per thread body while building the task; the ops it adds with
    ``ops`` run on every batch that thread reads. It also counts the rows each thread body
    processes (a Python op), to show the work was shared.
    """

    name = "to_metric"  # the task's name (pipeline.processor_name)

    def __init__(self) -> None:
        self.rows_by_thread: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._bodies = 0

    def __call__(self, rec: schema.Struct) -> schema.Struct:
        body = self._bodies
        self._bodies += 1

        def count(inputs: list[Any], outputs: list[Any]) -> None:
            with self._lock:
                self.rows_by_thread[body] += len(inputs[0].data)

        ops.Python(count)([rec.date()], [])

        freezing_f = ops.ConstantFill([], 1, shape=[1], value=32.0)
        zero = ops.ConstantFill([], 1, shape=[1], value=0.0)
        # °C = (°F - 32) * 5/9
        tmin_c = ops.Scale(ops.Sub([rec.tmin_f(), freezing_f], 1, broadcast=1), 1, scale=5 / 9)
        tmax_c = ops.Scale(ops.Sub([rec.tmax_f(), freezing_f], 1, broadcast=1), 1, scale=5 / 9)
        mean_c = ops.Scale(ops.Add([tmin_c, tmax_c], 1), 1, scale=0.5)
        range_c = ops.Sub([tmax_c, tmin_c], 1)
        precip_mm = ops.Scale(rec.precip_in(), 1, scale=MM_PER_INCH)
        frost = ops.LT([tmin_c, zero], 1, broadcast=1)
        return schema.from_blob_list(
            OUTPUT_SCHEMA,
            [rec.date(), rec.station(), tmin_c, tmax_c, mean_c, range_c, precip_mm, frost],
        )


# ---- the run --------------------------------------------------------------------------------


def convert(
    columns: dict[str, np.ndarray], num_threads: int, batch_size: int
) -> tuple[dict[str, np.ndarray], Counter[int]]:
    """Run the pipe over the columns; the output columns (unordered) and rows per thread."""
    ws = workspace.C.Workspace()
    # Column blobs are named after the fields: a NameScope per dataset keeps the input's
    # weather/date apart from the output's weather_metric/date.
    with core.NameScope("weather"):
        input_record = schema.NewRecord(core.Net("feed"), INPUT_SCHEMA)
    schema.FeedRecord(input_record, [columns[n] for n in INPUT_SCHEMA.field_names()], ws=ws)
    input_ds = dataset.Dataset(input_record, name="weather")

    output_ds = dataset.Dataset(OUTPUT_SCHEMA, name="weather_metric")
    init_net = core.Net("init_output")
    with core.NameScope("weather_metric"):
        output_ds.init_empty(init_net)

    processor = ToMetric()
    with TaskGroup() as tg:
        pipeline.pipe(
            input_ds.reader(batch_size=batch_size),
            output_ds.writer(),
            num_threads=num_threads,
            processor=processor,
        )

    with LocalSession(ws) as session:
        session.run(init_net)  # the empty output columns, in the session's workspace
        session.run(tg)  # a private workspace per task; the columns are its parent's
    out = schema.FetchRecord(output_ds.content(), ws=ws)
    result = dict(zip(out.field_names(), out.field_blobs(), strict=True))
    return result, processor.rows_by_thread


def sorted_rows(columns: dict[str, np.ndarray], names: list[str]) -> list[tuple]:
    """The rows of the given columns, as tuples in that order, sorted by (station, date)."""
    rows = list(zip(*(columns[n].tolist() for n in names), strict=True))
    i_station, i_date = names.index("station"), names.index("date")
    return sorted(rows, key=lambda r: (r[i_station], r[i_date]))


def check_records(inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
    """Every input record came out once: same (station, date) keys, same row count."""
    n_in, n_out = len(inputs["date"]), len(outputs["date"])
    if n_in != n_out:
        raise SystemExit(f"record count changed: {n_in} rows in, {n_out} rows out")
    keys = ["station", "date"]
    if sorted_rows(inputs, keys) != sorted_rows(outputs, keys):
        raise SystemExit("the output records are not the input records (station, date)")


def write_csv(path: Path, rows: list[tuple]) -> None:
    """The output rows as CSV: floats with 3 decimals, frost as 0/1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(OUTPUT_SCHEMA.field_names())
        for row in rows:
            out.writerow(
                [
                    int(v) if isinstance(v, bool) else f"{v:.3f}" if isinstance(v, float) else v
                    for v in row
                ]
            )


def print_summary(rows: list[tuple]) -> None:
    """One line per station: days, mean temperature, extremes, frost days, precipitation."""
    names = OUTPUT_SCHEMA.field_names()
    by_station: dict[str, list[dict]] = {}
    for row in rows:
        rec = dict(zip(names, row, strict=True))
        by_station.setdefault(rec["station"], []).append(rec)
    print(
        f"{'station':<16}{'days':>6}{'mean °C':>9}{'min °C':>8}{'max °C':>8}"
        f"{'frost':>7}{'precip mm':>11}"
    )
    for station, recs in sorted(by_station.items()):
        print(
            f"{station:<16}{len(recs):>6}"
            f"{sum(r['mean_c'] for r in recs) / len(recs):>9.1f}"
            f"{min(r['tmin_c'] for r in recs):>8.1f}"
            f"{max(r['tmax_c'] for r in recs):>8.1f}"
            f"{sum(r['frost'] for r in recs):>7}"
            f"{sum(r['precip_mm'] for r in recs):>11.1f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="input CSV")
    parser.add_argument("--out", type=Path, default=None, help="output CSV (default: temp dir)")
    parser.add_argument("--threads", type=int, default=4, help="pipe threads (default 4)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per batch")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.batch_size < 1:
        parser.error("--threads and --batch-size must be at least 1")
    out_path = args.out or Path(tempfile.mkdtemp(prefix="csv_pipeline_")) / "weather_metric.csv"

    columns = read_columns(args.data)
    n = len(columns["date"])
    print(f"read {n} rows from {args.data}")
    result, rows_by_thread = convert(columns, args.threads, args.batch_size)
    check_records(columns, result)
    rows = sorted_rows(result, OUTPUT_SCHEMA.field_names())
    write_csv(out_path, rows)

    shares = ", ".join(f"{rows_by_thread[t]}" for t in range(args.threads))
    print(f"pipe: {args.threads} threads, batches of {args.batch_size}; rows per thread: {shares}")
    print(f"records in: {n}, records out: {len(rows)} (all present once)")
    print_summary(rows)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
