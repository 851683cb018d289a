"""Dataset ops (spec data.md 3): TreeCursor reads of nested columns, appends, checks, packing."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
from netdefs import create, feed, fetch, make_op, run_ops

from caffe2.operators._tree_cursor import Mutex, TreeCursor, TreeIterator
from caffe2.operators.dataset_ops import PackedRecord
from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import Blob
from caffe2.runtime.errors import EnforceError
from caffe2.runtime.serialization import deserialize_blob, serialize_blob
from caffe2.runtime.workspace import Workspace


def feed_columns(ws: Workspace, names: list[str], arrays: list[np.ndarray]) -> None:
    """feed() each array to the blob of the same position in names."""
    for n, a in zip(names, arrays, strict=True):
        feed(ws, **{n: a})


# ---- a nested dataset and an independent flattener -----------------------------------------
FIELDS = [
    "dense",
    "floats:lengths", "floats:values:keys", "floats:values:values",
    "int_lists:lengths", "int_lists:values:keys",
    "int_lists:values:values:lengths", "int_lists:values:values:values",
    "text:lengths", "text:values",
    "id_score_pairs:lengths", "id_score_pairs:values:keys",
    "id_score_pairs:values:values:lengths", "id_score_pairs:values:values:values:ids",
    "id_score_pairs:values:values:values:scores",
    "metadata:user_id", "metadata:user_embed", "metadata:query",
]  # fmt: skip


def random_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    recs = []
    for r in range(n):
        recs.append({
            "dense": [rng.random() for _ in range(3)],
            "floats": [(rng.randrange(100), rng.random()) for _ in range(rng.randrange(4))],
            "int_lists": [
                (rng.randrange(100), [rng.randrange(10**12) for _ in range(rng.randrange(3))])
                for _ in range(rng.randrange(3))
            ],
            "text": [f"w{r}_{i}" for i in range(rng.randrange(3))],
            "id_score_pairs": [
                (rng.randrange(9), [(rng.randrange(99), rng.random())
                                    for _ in range(rng.randrange(3))])
                for _ in range(rng.randrange(3))
            ],
            "metadata": (r, [rng.random(), rng.random()], f"q{r}"),
        })  # fmt: skip
    return recs


def flatten(recs: list[dict]) -> list[np.ndarray]:
    """The columns of FIELDS for the records, built directly from the nested Python data."""
    c: dict[str, list] = {f: [] for f in FIELDS}
    for r in recs:
        c["dense"].append(r["dense"])
        c["floats:lengths"].append(len(r["floats"]))
        for k, v in r["floats"]:
            c["floats:values:keys"].append(k)
            c["floats:values:values"].append(v)
        c["int_lists:lengths"].append(len(r["int_lists"]))
        for k, lst in r["int_lists"]:
            c["int_lists:values:keys"].append(k)
            c["int_lists:values:values:lengths"].append(len(lst))
            c["int_lists:values:values:values"].extend(lst)
        c["text:lengths"].append(len(r["text"]))
        c["text:values"].extend(s.encode() for s in r["text"])
        c["id_score_pairs:lengths"].append(len(r["id_score_pairs"]))
        for k, pairs in r["id_score_pairs"]:
            c["id_score_pairs:values:keys"].append(k)
            c["id_score_pairs:values:values:lengths"].append(len(pairs))
            for i, s in pairs:
                c["id_score_pairs:values:values:values:ids"].append(i)
                c["id_score_pairs:values:values:values:scores"].append(s)
        uid, emb, q = r["metadata"]
        c["metadata:user_id"].append(uid)
        c["metadata:user_embed"].append(emb)
        c["metadata:query"].append(q.encode())
    types = {
        "dense": np.float32, "floats:values:keys": np.int32, "floats:values:values": np.float32,
        "int_lists:values:keys": np.int32, "int_lists:values:values:values": np.int64,
        "text:values": object, "id_score_pairs:values:keys": np.int32,
        "id_score_pairs:values:values:values:ids": np.int64,
        "id_score_pairs:values:values:values:scores": np.float32,
        "metadata:user_id": np.int64, "metadata:user_embed": np.float32,
        "metadata:query": object,
    }  # fmt: skip
    out = []
    for f in FIELDS:
        dt = types.get(f, np.int32)
        a = np.array(c[f], dtype=dt)
        if f == "dense":
            a = a.reshape(-1, 3)
        elif f == "metadata:user_embed":
            a = a.reshape(-1, 2)
        out.append(a)
    return out


def assert_columns_equal(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    for f, g, w in zip(FIELDS, got, want, strict=True):
        assert g.dtype == w.dtype, f
        assert g.shape == w.shape, f
        np.testing.assert_array_equal(g, w, err_msg=f)


@pytest.fixture
def nested() -> tuple[Workspace, list[dict]]:
    ws = Workspace()
    recs = random_records(23)
    feed_columns(ws, FIELDS, flatten(recs))
    run_ops(ws, make_op("CreateTreeCursor", [], ["cursor"], fields=FIELDS))
    return ws, recs


OUTS = [f"out/{f}" for f in FIELDS]


# ---- the iterator --------------------------------------------------------------------------
def test_domains_follow_the_longest_component_prefix() -> None:
    it = TreeIterator(FIELDS)
    assert it.num_domains == 7
    dom = dict(zip(FIELDS, it.field_domain, strict=True))
    assert dom["dense"] == 0 and dom["floats:lengths"] == 0 and dom["metadata:query"] == 0
    assert dom["floats:values:keys"] == 1
    assert dom["int_lists:values:values:lengths"] == 2  # lives in its parent's domain
    assert dom["int_lists:values:values:values"] == 3
    assert dom["id_score_pairs:values:values:values:ids"] == 6
    # component-wise: 'ab:x' is not under 'a:lengths'; 'a' itself and 'a:x' are
    it = TreeIterator(["a:lengths", "a", "a:x", "ab:x", "lengths", "y"])
    assert it.field_domain == [0, 1, 1, 0, 0, 0]
    assert it.domain_parent == [0, 0, 0]


def test_a_lengths_field_must_come_before_its_values() -> None:
    with pytest.raises(EnforceError, match=r"Field 0 \(a:values\) depends on a field defined"):
        TreeIterator(["a:values", "a:lengths"])


# ---- ReadNextBatch -------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 2, 5, 23, 40])
def test_read_next_batch_reads_nested_records(nested, batch) -> None:
    ws, recs = nested
    net = create(ws, make_op("ReadNextBatch", ["cursor"] + FIELDS, OUTS, batch_size=batch))
    for start in range(0, len(recs), batch):
        assert net.run()
        assert_columns_equal([fetch(ws, o) for o in OUTS], flatten(recs[start : start + batch]))
    for _ in range(3):  # after the end: empty tensors with the inner shape and dtype, forever
        assert net.run()
        got = [fetch(ws, o) for o in OUTS]
        assert all(g.shape[0] == 0 for g in got)
        assert_columns_equal(got, flatten([]))


def test_reset_cursor_rewinds(nested) -> None:
    ws, recs = nested
    net = create(ws, make_op("ReadNextBatch", ["cursor"] + FIELDS, OUTS, batch_size=4))
    net.run()
    net.run()
    run_ops(ws, make_op("ResetCursor", ["cursor"], []))
    net.run()
    assert_columns_equal([fetch(ws, o) for o in OUTS], flatten(recs[:4]))


def test_enforce_batch_size_gives_empty_outputs_and_still_advances() -> None:
    ws = Workspace()
    feed_columns(ws, ["a", "b:lengths", "b:values"],
         [np.arange(5, dtype=np.float32), np.array([1, 2, 0, 1, 3], np.int32),
          np.arange(7, dtype=np.int64)])  # fmt: skip
    run_ops(ws, make_op("CreateTreeCursor", [], ["c"], fields=["a", "b:lengths", "b:values"]))
    net = create(ws, make_op("ReadNextBatch", ["c", "a", "b:lengths", "b:values"],
                             ["oa", "ol", "ov"], batch_size=2, enforce_batch_size=1))  # fmt: skip
    net.run()
    net.run()
    np.testing.assert_array_equal(fetch(ws, "ov"), [3])
    net.run()  # one record left: empty
    assert [fetch(ws, o).shape for o in ("oa", "ol", "ov")] == [(0,), (0,), (0,)]
    assert fetch(ws, "ov").dtype == np.int64
    assert fetch(ws, "c").offsets == [5, 7]  # the cursor moved past the short batch


def test_read_next_batch_names_the_bad_field() -> None:
    ws = Workspace()
    fields = ["a", "b:lengths", "b:values"]
    feed_columns(ws, fields, [np.zeros(2), np.array([1, 1], np.int64), np.zeros(2)])
    run_ops(ws, make_op("CreateTreeCursor", [], ["c"], fields=fields))
    with pytest.raises(RuntimeError, match=r"lengths field 'b:lengths' \(blob b:lengths\).*int32"):
        run_ops(ws, make_op("ReadNextBatch", ["c"] + fields, ["x", "y", "z"]))
    ws.get_blob("b:lengths").value = np.array([2, 2], np.int32)  # sums past b:values
    with pytest.raises(RuntimeError, match="Inconsistent field length"):
        run_ops(ws, make_op("ReadNextBatch", ["c"] + fields, ["x", "y", "z"], batch_size=2))
    with pytest.raises(RuntimeError, match="did not pass schema checking"):
        run_ops(ws, make_op("ReadNextBatch", ["c"] + fields, ["x", "y"]))
    with pytest.raises(RuntimeError, match="the cursor c has 3 fields"):
        run_ops(ws, make_op("ReadNextBatch", ["c", "a", "b:lengths"], ["x", "y"]))
    ws.create_blob("nocursor").value = np.zeros(1)
    with pytest.raises(RuntimeError, match="must hold a TreeCursor"):
        run_ops(ws, make_op("ReadNextBatch", ["nocursor"] + fields, ["x", "y", "z"]))
    ws.get_blob("a").value = np.array(1.0)
    with pytest.raises(RuntimeError, match="field 'a' \\(blob a\\) must have at least one"):
        run_ops(ws, make_op("ReadNextBatch", ["c"] + fields, ["x", "y", "z"]))


def test_concurrent_readers_get_every_record_exactly_once(fast_switching) -> None:
    ws = Workspace()
    n = 3000
    lengths = np.arange(n, dtype=np.int32) % 3
    feed_columns(ws, ["id", "v:lengths", "v:values"],
         [np.arange(n, dtype=np.int64), lengths,
          np.repeat(np.arange(n, dtype=np.int64), lengths)])  # fmt: skip
    run_ops(ws, make_op("CreateTreeCursor", [], ["c"], fields=["id", "v:lengths", "v:values"]))
    nets = [
        create(ws, make_op("ReadNextBatch", ["c", "id", "v:lengths", "v:values"],
                           [f"t{t}/id", f"t{t}/l", f"t{t}/v"], batch_size=7), name=f"r{t}")
        for t in range(8)
    ]  # fmt: skip
    seen: list[list[int]] = [[] for _ in nets]
    errors: list[BaseException] = []

    start = threading.Barrier(len(nets))

    def reader(t: int) -> None:
        try:
            start.wait(timeout=30)
            while True:
                time.sleep(0)  # let the other readers in
                nets[t].run()
                ids = fetch(ws, f"t{t}/id")
                if ids.size == 0:
                    return
                # each batch is internally consistent: values repeat their record's id
                np.testing.assert_array_equal(fetch(ws, f"t{t}/v"), np.repeat(ids, ids % 3))
                seen[t].extend(ids.tolist())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(len(nets))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors
    all_ids = sorted(i for s in seen for i in s)
    assert all_ids == list(range(n))
    assert sum(1 for s in seen if s) > 1


# ---- ComputeOffset, SortAndShuffle, ReadRandomBatch ----------------------------------------
def test_compute_offset_gives_every_records_offsets_and_resets(nested) -> None:
    ws, recs = nested
    run_ops(ws, make_op("ComputeOffset", ["cursor"] + FIELDS, ["offsets"]))
    m = fetch(ws, "offsets")
    assert m.dtype == np.int64 and m.shape == (len(recs) + 1, 7)
    for k in range(len(recs) + 1):
        sizes = [len(col) for col in flatten(recs[:k])]
        assert m[k, 0] == k
        assert m[k, 1] == sizes[FIELDS.index("floats:values:keys")]
        assert m[k, 3] == sizes[FIELDS.index("int_lists:values:values:values")]
        assert m[k, 6] == sizes[FIELDS.index("id_score_pairs:values:values:values:ids")]
    assert fetch(ws, "cursor").offsets == [0] * 7


def _shuffle_order(size: int, batch: int, shuffle: int) -> list[int]:
    ws = Workspace()
    feed_columns(ws, ["x"], [np.zeros(size, np.float32)])
    run_ops(ws, make_op("CreateTreeCursor", [], ["c"], fields=["x"]),
        make_op("SortAndShuffle", ["c", "x"], ["idx"], sort_by_field_idx=-1,
                batch_size=batch, shuffle_size=shuffle))  # fmt: skip
    out = fetch(ws, "idx")
    assert out.dtype == np.int64
    return out.tolist()


def test_sort_and_shuffle_matches_classic_libstdcxx_shuffles() -> None:
    assert _shuffle_order(10, 1, 1) == [7, 6, 4, 5, 1, 3, 9, 2, 0, 8]
    assert _shuffle_order(12, 2, 3) == [1, 3, 2, 0, 8, 9, 10, 11, 4, 5, 6, 7]
    assert _shuffle_order(2, 1, 2) == [1, 0]
    assert sorted(_shuffle_order(7, 3, 5)) == list(range(7))


def test_sort_and_shuffle_sorts_by_a_root_int32_field() -> None:
    ws = Workspace()
    fields = ["int_lists:lengths", "int_lists:values"]
    feed_columns(ws, fields, [np.array([2, 0, 1], np.int32), np.arange(3, dtype=np.int64)])
    run_ops(ws, make_op("CreateTreeCursor", [], ["c"], fields=fields),
        make_op("SortAndShuffle", ["c"] + fields, ["idx"], sort_by_field_idx=0,
                batch_size=2, shuffle_size=1))  # fmt: skip
    assert fetch(ws, "idx").tolist() == [2, 1, 0]
    with pytest.raises(RuntimeError, match="must be at the root level"):
        run_ops(ws, make_op("SortAndShuffle", ["c"] + fields, ["idx"], sort_by_field_idx=1))
    with pytest.raises(RuntimeError, match="sort_by_field_idx 2 is out of range"):
        run_ops(ws, make_op("SortAndShuffle", ["c"] + fields, ["idx"], sort_by_field_idx=2))


def test_read_random_batch_gathers_records_in_index_order(nested) -> None:
    ws, recs = nested
    order = [5, 0, 22, 7, 7, 13, 1]
    ws.create_blob("idx").value = np.array(order, dtype=np.int64)
    run_ops(ws, make_op("ComputeOffset", ["cursor"] + FIELDS, ["offsets"]))
    net = create(ws, make_op("ReadRandomBatch", ["cursor", "idx", "offsets"] + FIELDS, OUTS,
                             batch_size=3))  # fmt: skip
    for start in range(0, len(order), 3):
        assert net.run()
        want = flatten([recs[i] for i in order[start : start + 3]])
        assert_columns_equal([fetch(ws, o) for o in OUTS], want)
    net.run()
    assert all(fetch(ws, o).shape[0] == 0 for o in OUTS)


def test_read_random_batch_loop_over_and_enforce() -> None:
    ws = Workspace()
    feed_columns(ws, ["x"], [np.arange(5, dtype=np.int32) * 10])
    ws.create_blob("idx").value = np.arange(5, dtype=np.int64)
    run_ops(ws, make_op("CreateTreeCursor", [], ["c"], fields=["x"]),
        make_op("ComputeOffset", ["c", "x"], ["off"]))  # fmt: skip
    net = create(ws, make_op("ReadRandomBatch", ["c", "idx", "off", "x"], ["y"], batch_size=2,
                             loop_over=1, enforce_batch_size=1))  # fmt: skip
    got = []
    for _ in range(5):
        net.run()
        got.append(fetch(ws, "y").tolist())
    assert got == [[0, 10], [20, 30], [0, 10], [20, 30], [0, 10]]
    run_ops(ws, make_op("ResetCursor", ["c"], []))
    net = create(ws, make_op("ReadRandomBatch", ["c", "idx", "off", "x"], ["y"], batch_size=2,
                             enforce_batch_size=1))  # fmt: skip
    got = []
    for _ in range(3):
        net.run()
        got.append(fetch(ws, "y").tolist())
    assert got == [[0, 10], [20, 30], []]  # the short tail is skipped...
    assert fetch(ws, "c").offsets == [6]  # ...but the offset moves on by batch_size
    assert fetch(ws, "y").dtype == np.int32
    ws.get_blob("idx").value = np.array([9], np.int64)
    with pytest.raises(RuntimeError, match="Out of bound when trying to get elem from offsetsmat"):
        run_ops(ws, make_op("ResetCursor", ["c"], []),
            make_op("ReadRandomBatch", ["c", "idx", "off", "x"], ["y"]))  # fmt: skip
    ws.get_blob("idx").value = np.array([1], np.int32)
    with pytest.raises(RuntimeError, match="idx idx must be an int64 tensor"):
        run_ops(ws, make_op("ReadRandomBatch", ["c", "idx", "off", "x"], ["y"]))


# ---- CheckDatasetConsistency, TrimDataset --------------------------------------------------
def test_check_dataset_consistency(nested) -> None:
    ws, recs = nested
    run_ops(ws, make_op("CheckDatasetConsistency", FIELDS, [], fields=FIELDS))
    ws.get_blob("floats:values:values").value = np.zeros(1, np.float32)  # ragged Map values
    with pytest.raises(RuntimeError, match=r"Inconsistent sizes for fields belonging to same "
                       r"domain.*floats:values:values"):  # fmt: skip
        run_ops(ws, make_op("CheckDatasetConsistency", FIELDS, [], fields=FIELDS))


def test_check_dataset_consistency_lengths_must_add_up() -> None:
    ws = Workspace()
    fields = ["a:lengths", "a:values"]
    feed_columns(ws, fields, [np.array([1, 1], np.int32), np.arange(3.0)])
    with pytest.raises(RuntimeError, match="'a:lengths'.*adds up to 2 rows, but domain 'a' has 3"):
        run_ops(ws, make_op("CheckDatasetConsistency", fields, [], fields=fields))
    ws.get_blob("a:lengths").value = np.array([2, 2], np.int32)
    with pytest.raises(RuntimeError, match="Inconsistent field length"):
        run_ops(ws, make_op("CheckDatasetConsistency", fields, [], fields=fields))
    ws.get_blob("a:lengths").value = np.array([], np.float32)
    with pytest.raises(RuntimeError, match="must be a 1-D int32 tensor"):
        run_ops(ws, make_op("CheckDatasetConsistency", fields, [], fields=fields))
    with pytest.raises(RuntimeError, match="Invalid number of fields. Expected 2, got 1"):
        run_ops(ws, make_op("CheckDatasetConsistency", ["a:values"], [], fields=fields))


def test_trim_dataset_keeps_a_multiple_of_records(nested) -> None:
    ws, recs = nested
    run_ops(ws, make_op("TrimDataset", FIELDS, FIELDS, fields=FIELDS, multiple_of=5))
    assert_columns_equal([fetch(ws, f) for f in FIELDS], flatten(recs[:20]))
    before = [fetch(ws, f) for f in FIELDS]
    run_ops(ws, make_op("TrimDataset", FIELDS, FIELDS, fields=FIELDS, multiple_of=4))
    assert all(fetch(ws, f) is b for f, b in zip(FIELDS, before, strict=True))
    with pytest.raises(RuntimeError, match="must be in place"):
        run_ops(ws, make_op("TrimDataset", ["dense"], ["x"], fields=["dense"]))


# ---- Append, AtomicAppend ------------------------------------------------------------------
def test_append_replaces_an_empty_column_then_grows_in_place() -> None:
    ws = Workspace()
    ws.create_blob("a").value = np.zeros((0,), np.float32)  # InitEmptyRecord's float column
    ws.create_blob("b").value = np.array([[1, 2]], np.int64)
    net = create(ws, make_op("Append", ["a", "b"], ["a"]))
    net.run()
    first = fetch(ws, "a")
    assert first.dtype == np.int64 and first.tolist() == [[1, 2]]
    snapshots = []
    for i in range(30):
        ws.get_blob("b").value = np.array([[i, -i]] * (i % 3 + 1), np.int64)
        snapshots.append(fetch(ws, "a"))
        net.run()
    want = [[1, 2]] + [[i, -i] for i in range(30) for _ in range(i % 3 + 1)]
    assert fetch(ws, "a").tolist() == want
    # earlier values are untouched by later appends
    assert first.tolist() == [[1, 2]]
    assert snapshots[10].tolist() == want[: len(snapshots[10])]
    ws.get_blob("b").value = np.array([[1.5, 2.5]])
    with pytest.raises(RuntimeError, match=r"cannot append b .* to a .*: the types differ"):
        net.run()
    ws.get_blob("b").value = np.array([1, 2], np.int64)
    with pytest.raises(RuntimeError, match="the numbers of dimensions differ"):
        net.run()


def test_atomic_append_checks_every_pair_before_changing_any() -> None:
    ws = Workspace()
    feed_columns(
        ws,
        ["a", "b", "x", "y"],
        [np.array([1, 2], np.int32), np.array([1.0]), np.array([3], np.int32), np.array([7])],
    )
    run_ops(ws, make_op("CreateMutex", [], ["m"]))
    assert isinstance(fetch(ws, "m"), Mutex)
    with pytest.raises(RuntimeError, match="cannot append y .* to b .*the types differ"):
        run_ops(ws, make_op("AtomicAppend", ["m", "a", "b", "x", "y"], ["a", "b"]))
    assert fetch(ws, "a").tolist() == [1, 2]  # nothing appended
    ws.get_blob("y").value = np.array([7.0])
    run_ops(ws, make_op("AtomicAppend", ["m", "a", "b", "x", "y"], ["a", "b"]))
    assert fetch(ws, "a").tolist() == [1, 2, 3] and fetch(ws, "b").tolist() == [1.0, 7.0]
    with pytest.raises(RuntimeError, match="Appended-to arguments must be in-place"):
        run_ops(ws, make_op("AtomicAppend", ["m", "a", "x"], ["z"]))
    with pytest.raises(RuntimeError, match="must hold a mutex"):
        run_ops(ws, make_op("AtomicAppend", ["b", "a", "x"], ["a"]))


def test_concurrent_atomic_appends_keep_columns_consistent(fast_switching) -> None:
    ws = Workspace()
    fields = ["id", "v:lengths", "v:values"]
    feed_columns(ws, fields, [np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)])
    run_ops(ws, make_op("CreateMutex", [], ["m"]))
    nets = []
    for t in range(6):
        names = [f"w{t}/{f}" for f in fields]
        feed_columns(
            ws, names, [np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)]
        )
        nets.append((t, names, create(
            ws,
            make_op("CheckDatasetConsistency", names, [], fields=fields),
            make_op("AtomicAppend", ["m"] + fields + names, fields),
            name=f"w{t}",
        )))  # fmt: skip

    def writer(t: int, names: list[str], net) -> None:
        for i in range(50):
            rid = t * 1000 + i
            ws.get_blob(names[0]).value = np.array([rid], np.int64)
            ws.get_blob(names[1]).value = np.array([rid % 4], np.int32)
            ws.get_blob(names[2]).value = np.full(rid % 4, rid, np.int64)
            net.run()

    threads = [threading.Thread(target=writer, args=w) for w in nets]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    ids = fetch(ws, "id")
    assert sorted(ids.tolist()) == sorted(t * 1000 + i for t in range(6) for i in range(50))
    np.testing.assert_array_equal(fetch(ws, "v:lengths"), ids % 4)
    np.testing.assert_array_equal(fetch(ws, "v:values"), np.repeat(ids, ids % 4))
    run_ops(ws, make_op("CheckDatasetConsistency", fields, [], fields=fields))


# ---- PackRecords, UnPackRecords ------------------------------------------------------------
def test_pack_and_unpack_round_trip(nested) -> None:
    ws, recs = nested
    run_ops(ws, make_op("PackRecords", FIELDS, ["packed"], fields=FIELDS))
    packed = fetch(ws, "packed")
    assert packed.shape == (len(recs),) and isinstance(packed[0], PackedRecord)
    for r in (0, 7):
        assert_columns_equal(list(packed[r]), flatten([recs[r]]))
    run_ops(ws, make_op("UnPackRecords", ["packed"], OUTS, fields=FIELDS))
    assert_columns_equal([fetch(ws, o) for o in OUTS], flatten(recs))


def test_unpack_empty_needs_prototypes() -> None:
    ws = Workspace()
    ws.create_blob("packed").value = np.empty(0, dtype=object)
    feed_columns(ws, ["p1", "p2"], [np.zeros((4, 3), np.float32), np.array([b"s"], dtype=object)])
    with pytest.raises(RuntimeError, match="Unpacking empty record without shape"):
        run_ops(ws, make_op("UnPackRecords", ["packed"], ["a", "b"], fields=["a", "b"]))
    run_ops(ws, make_op("UnPackRecords", ["packed", "p1", "p2"], ["a", "b"], fields=["a", "b"]))
    assert fetch(ws, "a").shape == (0, 3) and fetch(ws, "a").dtype == np.float32
    assert fetch(ws, "b").dtype == object


def test_packed_records_save_and_load_round_trip(nested, tmp_path) -> None:
    ws, recs = nested
    run_ops(ws, make_op("PackRecords", FIELDS, ["packed"], fields=FIELDS))
    db = str(tmp_path / "packed.minidb")
    # chunk_size 5 cuts the 23 records into 5 chunks of UNDEFINED tensors.
    run_ops(
        ws, make_op("Save", ["packed"], [], db=db, db_type="minidb", chunk_size=5, absolute_path=1)
    )
    ws2 = Workspace()
    run_ops(ws2, make_op("Load", [], ["packed"], db=db, db_type="minidb", absolute_path=1))
    loaded = fetch(ws2, "packed")
    assert loaded.shape == (len(recs),) and all(isinstance(r, PackedRecord) for r in loaded)
    for r in (0, 7, 22):
        assert_columns_equal(list(loaded[r]), flatten([recs[r]]))
    run_ops(ws2, make_op("UnPackRecords", ["packed"], OUTS, fields=FIELDS))
    assert_columns_equal([fetch(ws2, o) for o in OUTS], flatten(recs))


def test_packed_records_serialize_as_undefined_tensors_of_blobs(nested) -> None:
    ws, recs = nested
    run_ops(ws, make_op("PackRecords", FIELDS, ["packed"], fields=FIELDS))
    proto = caffe2_pb2.BlobProto()
    proto.ParseFromString(serialize_blob("packed", fetch(ws, "packed")))
    t = proto.tensor
    assert proto.type == "Tensor" and t.data_type == caffe2_pb2.TensorProto.UNDEFINED
    assert list(t.dims) == [len(recs)] and len(t.string_data) == len(recs)
    element = caffe2_pb2.BlobProto()
    element.ParseFromString(t.string_data[3])
    assert element.type == "std::shared_ptr<std::vector<TensorCPU>>"
    protos = caffe2_pb2.TensorProtos()
    protos.ParseFromString(element.content)
    assert len(protos.protos) == len(FIELDS)
    # What Caffe2 wrote (empty content) loads as empty pointers, which UnPackRecords rejects.
    for i in range(len(t.string_data)):
        element.content = b""
        t.string_data[i] = element.SerializeToString()
    blob = Blob()
    deserialize_blob(proto.SerializeToString(), blob)
    assert blob.value.shape == (len(recs),) and all(v is None for v in blob.value)
    ws.create_blob("caffe2_packed").value = blob.value
    with pytest.raises(RuntimeError, match="element 0 of caffe2_packed is not a packed record"):
        run_ops(ws, make_op("UnPackRecords", ["caffe2_packed"], OUTS, fields=FIELDS))


def test_object_tensor_mixing_records_and_strings_is_rejected() -> None:
    mixed = np.empty(2, dtype=object)
    mixed[0] = PackedRecord([np.zeros(1, np.float32)])
    mixed[1] = b"s"
    with pytest.raises(EnforceError, match="element 1 is a bytes, but element 0 is a Packed"):
        serialize_blob("mixed", mixed)
    with pytest.raises(
        EnforceError, match="element 1 is a PackedRecord, but element 0 is a string"
    ):
        serialize_blob("mixed", mixed[::-1].copy())
    bad = np.empty(1, dtype=object)
    bad[0] = PackedRecord([3])
    with pytest.raises(EnforceError, match="field 0 is"):
        serialize_blob("bad", bad)


# ---- serialization -------------------------------------------------------------------------
def test_cursor_and_mutex_serialize_as_caffe2_did(nested) -> None:
    ws, _ = nested
    net = create(ws, make_op("ReadNextBatch", ["cursor"] + FIELDS, OUTS, batch_size=3))
    net.run()
    cursor = fetch(ws, "cursor")
    proto = caffe2_pb2.BlobProto()
    proto.ParseFromString(serialize_blob("cursor", cursor))
    assert proto.type == "std::unique_ptr<TreeCursor>"
    assert proto.content == ("".join(f + " " for f in FIELDS)).encode()
    assert list(proto.tensor.dims) == [7] and list(proto.tensor.int64_data) == cursor.offsets
    assert not proto.tensor.HasField("name")
    blob = Blob()
    deserialize_blob(serialize_blob("cursor", cursor), blob)
    assert isinstance(blob.value, TreeCursor) and blob.value.offsets == cursor.offsets
    assert blob.value.it.fields == FIELDS
    fresh = TreeCursor(TreeIterator(["a"]))
    deserialize_blob(serialize_blob("c", fresh), blob)  # Caffe2 could not load this one
    assert blob.value.offsets == []
    m = caffe2_pb2.BlobProto()
    m.ParseFromString(serialize_blob("m", Mutex()))
    assert m.type == "std::unique_ptr<std::mutex>" and m.HasField("content")
    deserialize_blob(m.SerializeToString(), blob)
    assert isinstance(blob.value, Mutex)
