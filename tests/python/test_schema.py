"""caffe2.python.schema (spec data.md 2): fields, records and the record helpers."""

from __future__ import annotations

import logging
import pickle
import uuid

import numpy as np
import pytest

from caffe2.python import core, schema, workspace
from caffe2.python.schema import (
    ConstRecord,
    FeedRecord,
    FetchRecord,
    InitEmptyRecord,
    List,
    Map,
    Metadata,
    NamedTuple,
    NewRecord,
    RawTuple,
    Scalar,
    Struct,
    Tuple,
    as_record,
    data_type_for_dtype,
    from_blob_list,
    from_column_list,
)


@pytest.fixture(autouse=True)
def fresh_workspace():
    name = "test_schema_" + uuid.uuid4().hex[:8]
    workspace.SwitchWorkspace(name, True)
    yield name
    workspace.SwitchWorkspace("default")


def big_schema() -> Struct:
    return Struct(
        ("dense", Scalar((np.float32, 3))),
        ("floats", Map(Scalar(np.int32), Scalar(np.float32))),
        ("int_lists", Map(Scalar(np.int32), List(Scalar(np.int64)))),
        ("text", List(Scalar(str))),
        ("id_score_pairs", Map(
            Scalar(np.int32),
            Map(Scalar(np.int64), Scalar(np.float32), keys_name="ids", values_name="scores"),
        )),
        ("metadata", Struct(
            ("user_id", Scalar(np.int64)),
            ("user_embed", Scalar((np.float32, 2))),
            ("query", Scalar(str)),
        )),
    )  # fmt: skip


# ---- structure -----------------------------------------------------------------------------
def test_field_names_types_and_positions() -> None:
    s = big_schema()
    names = s.field_names()
    assert names[:4] == ["dense", "floats:lengths", "floats:values:keys", "floats:values:values"]
    assert "int_lists:values:values:lengths" in names
    assert names[-3:] == ["metadata:user_id", "metadata:user_embed", "metadata:query"]
    assert len(names) == 18
    types = s.field_types()
    assert types[0] == np.dtype((np.float32, (3,))) and types[0].shape == (3,)
    assert types[1] == np.int32 and types[-1] == np.dtype(str)
    assert Scalar(np.int32).field_names() == [""]
    assert List(Scalar(np.int32)).field_names() == ["lengths", "values"]
    assert s.int_lists.slice() == slice(4, 8)
    assert s.metadata.query.id() == 17
    assert s["int_lists:values:values:values"].id() == 7
    assert s.floats.keys.id() == 2  # Map items reached through the List


def test_struct_access() -> None:
    s = big_schema()
    assert s.metadata is s["metadata"] and s[5] is s.metadata and s[-1] is s.metadata
    assert s["floats:values:keys"] is s.floats.keys
    assert s["floats:lengths"] is s.floats.lengths
    assert "metadata:query" in s and "metadata:nope" not in s and "text:values" in s
    assert len(s) == 6 and [f for f in s] == [c for _, c in s.get_children()]
    sub = s[["metadata", 0, "floats:values"]]
    assert sub.field_names()[:4] == ["metadata:user_id", "metadata:user_embed",
                                     "metadata:query", "dense"]  # fmt: skip
    assert s.get("nope", 7) == 7 and s.get("dense", None) is s.dense
    for bad in ("nope", "", "floats:nope", "dense:x"):
        with pytest.raises(KeyError):
            s[bad]
    with pytest.raises(AttributeError):
        s.nope  # noqa: B018
    with pytest.raises(AttributeError, match="Field not found in list"):
        s.text.nope  # noqa: B018
    assert s.text.value is s.text.items is s["text:values"]
    with pytest.raises(TypeError, match="disabled after __init__"):
        s.dense = Scalar(np.int32)


def test_struct_construction_rules() -> None:
    s = Struct(("a:b:c", Scalar(np.int32)), ("a:b:d", np.float32), ("x", np.int64))
    assert s.field_names() == ["a:b:c", "a:b:d", "x"]
    assert isinstance(s.a.b, Struct)
    with pytest.raises(ValueError, match="Duplicate field name: x"):
        Struct(("x", np.int32), ("x", np.int32))
    with pytest.raises(AssertionError, match="lengths"):
        Struct(("lengths", np.int32))
    with pytest.raises(AssertionError, match="non-empty"):
        Struct(("", np.int32))
    label = Struct(("label", np.array([1, 2])))
    assert label.label.field_type() == np.void  # untyped data


def test_add_and_sub() -> None:
    a = Struct(("a", np.int32), ("s", Struct(("x", np.int32))))
    b = Struct(("b", np.float32), ("s", Struct(("y", np.int64))))
    c = a + b
    assert c.field_names() == ["a", "s:x", "s:y", "b"]
    with pytest.raises(TypeError):
        _ = a + a  # colliding leaves
    with pytest.raises(TypeError):
        _ = a + 1
    d = c - Struct(("s", Struct(("x", np.int32), ("y", np.int64))))
    assert d.field_names() == ["a", "b"]
    assert (c - b).field_names() == ["a", "s:x"]
    with pytest.raises(TypeError, match="same field name, a"):
        _ = c - Struct(("a", Struct(("z", np.int32))))
    with pytest.raises(TypeError):
        _ = c - 1


def test_equality_ignores_blobs_and_fields_are_unhashable() -> None:
    s = big_schema()
    r = NewRecord(core.Net("eq"), s)
    assert r == s and s.clone() == s
    assert s != Struct(("dense", Scalar((np.float32, 3))))
    assert s != "not a field"
    with pytest.raises(TypeError):
        hash(s)
    with_meta = s.clone()
    with_meta.metadata.user_id.set_metadata(Metadata(categorical_limit=10))
    assert with_meta != s


def test_pickle_round_trip_keeps_data_and_metadata() -> None:
    s = Struct(
        ("ids", Scalar(np.int64, np.array([1, 2]), Metadata(categorical_limit=5))),
        ("vals", List(Scalar(np.float32, np.array([1.5])), np.array([1, 0], np.int32))),
    )
    t = pickle.loads(pickle.dumps(s))
    assert t == s and t.field_names() == ["ids", "vals:lengths", "vals:values"]
    assert t.ids.metadata.categorical_limit == 5
    np.testing.assert_array_equal(t.vals.value.get(), [1.5])
    assert t["vals:values"].id() == 2


# ---- Scalar --------------------------------------------------------------------------------
def test_scalar_set_converts_data(caplog) -> None:
    s = Scalar(np.int32, [1, 2])
    assert s.get().dtype == np.int32 and s.get().tolist() == [1, 2]
    assert Scalar(np.float32, 3.0).get().shape == (1,)
    assert Scalar(np.float32, np.array(3.0)).get().shape == ()
    assert Scalar((np.float32, 2), []).get().shape == (0, 2)
    m = Scalar(np.float32, np.zeros((4, 5)))
    assert m.field_type() == np.dtype((np.float32, (5,)))
    assert m.clone_schema().field_type() == np.float32  # inferred inner shape is lost
    assert Scalar((np.float32, 5)).clone_schema().field_type().shape == (5,)
    strs = Scalar(str, np.array([b"ab", b"c"], dtype=object))
    assert strs.get().tolist() == ["ab", "c"]
    with pytest.raises(ValueError, match="ambiguous"):
        Scalar(np.int32, "blob")
    with pytest.raises(AssertionError, match="Invalid blob type"):
        Scalar(blob=[1, 2])
    with pytest.raises(AssertionError, match="structured dtype"):
        Scalar(np.dtype([("a", np.int32)]))
    with pytest.raises(AssertionError, match="categorical_limit"):
        Scalar(np.float32, metadata=Metadata(categorical_limit=3))
    with caplog.at_level(logging.WARNING):
        s.set(np.int64, np.array([1]))
    assert "immutable" in caplog.text
    s.set_value(np.array([7, 8]), throw_on_type_mismatch=False, unsafe=True)
    assert s.dtype == np.int64 and s().tolist() == [7, 8]
    with pytest.raises(AssertionError):
        s.set_value(np.array([1.0]), throw_on_type_mismatch=True, unsafe=True)


def test_tuples_and_maps() -> None:
    assert Tuple(np.int32, np.float32).field_names() == ["field_0", "field_1"]
    assert NamedTuple("x", np.int32).field_names() == ["x_0"]
    raw = RawTuple(2)
    assert raw.field_types() == [np.dtype(np.void)] * 2
    m = Map(Scalar(np.int32), Scalar(np.float32), keys_name="k", values_name="v")
    assert m.field_names() == ["lengths", "values:k", "values:v"]
    assert m.lengths.field_type() == np.int32


# ---- record helpers ------------------------------------------------------------------------
def test_from_blob_list() -> None:
    s = big_schema()
    s.metadata.user_id.set_metadata(Metadata(categorical_limit=100))
    ref = core.BlobReference("x")
    one = from_blob_list(Scalar(np.int32), ref)
    assert one.get() is ref
    with pytest.raises(AssertionError, match="Values must have 18 elements, got 2"):
        from_blob_list(s, [1, 2])
    values = [[[1, 2, 3]], [1], [7], [0.5], [0], [], [], [], [1], ["hi"], [0], [], [], [], [],
              [42], [[0.1, 0.2]], ["q"]]  # fmt: skip
    r = from_blob_list(s, values)
    assert r.dense.get().shape == (1, 3) and r.dense.get().dtype == np.float32
    assert r["int_lists:values:values:values"].get().dtype == np.int64
    assert r.metadata.user_id.metadata.categorical_limit == 100
    assert s.dense.has_blobs() is False  # the schema itself is untouched
    values[15] = ["not a number"]
    with pytest.raises(ValueError, match="record field 'metadata:user_id'"):
        from_blob_list(s, values)


def test_from_column_list() -> None:
    s = big_schema()
    names = s.field_names()
    rebuilt = from_column_list(names, col_types=s.field_types())
    assert rebuilt == s
    assert isinstance(rebuilt.floats, List)
    shuffled = ["b:values", "a", "b:lengths", "c:keys", "c:values", "c:lengths"]
    r = from_column_list(shuffled, col_blobs=[core.BlobReference(n) for n in shuffled])
    assert r.field_names() == ["b:lengths", "b:values", "a", "c:lengths", "c:values:keys",
                               "c:values:values"]  # fmt: skip
    assert [str(b) for b in r.field_blobs()] == ["b:lengths", "b:values", "a", "c:lengths",
                                                 "c:keys", "c:values"]  # fmt: skip
    assert from_column_list([]) == Struct()
    assert from_column_list(["x"], col_metadata=[Metadata(expected_value=1.0)]).x.metadata


def test_as_record_and_helpers() -> None:
    r = as_record({"a": np.int32, "b": [np.float32, np.int64]})
    assert r.field_names() == ["a", "b:field_0", "b:field_1"]
    assert as_record([("x", np.int32), ("y", np.float32)]).field_names() == ["x", "y"]
    assert as_record([np.int32, np.float32]).field_names() == ["field_0", "field_1"]
    assert as_record(np.int32).field_type() == np.int32
    assert schema.equal_schemas(r, r.clone())
    assert not schema.equal_schemas(r, as_record({"a": np.int64, "b": [np.float32, np.int64]}))
    assert schema.is_schema_subset(Struct(("a", np.int32)), r)
    sd = schema.from_dtype(np.dtype([("a", np.int32), ("b", np.float32, (3,))]))
    assert sd.field_names() == ["a", "b"] and sd.b.field_type().shape == (3,)


def test_data_type_for_dtype() -> None:
    DT = core.DataType
    assert data_type_for_dtype(np.dtype(str)) == DT.STRING
    assert data_type_for_dtype(np.array(["abc"]).dtype) == DT.STRING  # sized '<U3'
    assert data_type_for_dtype(np.dtype(object)) == DT.STRING
    assert data_type_for_dtype(np.dtype((np.float32, 3))) == DT.FLOAT
    assert data_type_for_dtype(np.dtype(np.float64)) == DT.DOUBLE
    assert data_type_for_dtype(np.dtype(np.bool_)) == DT.BOOL
    assert data_type_for_dtype(np.dtype(np.uint16)) == DT.UINT16
    for bad in (np.void, np.uint32, np.complex64):
        with pytest.raises(TypeError, match="Unknown dtype"):
            data_type_for_dtype(np.dtype(bad))


def test_new_record_names_blobs_after_fields() -> None:
    net = core.Net("init")
    with core.NameScope("scope"):
        r = NewRecord(net, big_schema())
    assert [str(b) for b in r.field_blobs()][:2] == ["scope/dense", "scope/floats:lengths"]
    again = NewRecord(net, big_schema())
    assert str(again.field_blobs()[0]) == "dense"
    third = NewRecord(net, big_schema())
    assert str(third.field_blobs()[0]) == "dense_auto_0"
    assert str(NewRecord(net, Scalar(np.int32)).get()) == "unnamed_scalar"


def test_init_empty_record_then_feed_and_fetch(caplog) -> None:
    net = core.Net("init_empty")
    s = big_schema() + Struct(("untyped", Scalar()))
    with caplog.at_level(logging.WARNING):
        r = InitEmptyRecord(net, s)
    assert "untyped" in caplog.text
    fills = {op.output[0]: op for op in net.Proto().op}
    assert all(op.type == "ConstantFill" for op in fills.values())
    assert [a.ints for a in fills["dense"].arg if a.name == "shape"][0] == [0, 3]
    assert not [a for a in fills["untyped"].arg if a.name == "dtype"]
    workspace.RunNetOnce(net)
    empty = FetchRecord(r)
    assert empty.dense.get().shape == (0, 3) and empty.text.value.get().shape == (0,)
    assert empty.metadata.query.get().dtype.kind == "U"
    with pytest.raises(TypeError):
        InitEmptyRecord(core.Net("strict"), Struct(("u", Scalar())), enforce_types=True)

    values = from_blob_list(s, [
        [[1, 2, 3]], [2], [7, 8], [0.5, 1.5], [1], [3], [2], [10, 11], [2], ["a", "bc"],
        [0], [], [], [], [], [42], [[0.1, 0.2]], ["q"], np.zeros(1),
    ])  # fmt: skip
    FeedRecord(r, values)
    back = FetchRecord(r)
    for name, got, want in zip(s.field_names(), back.field_blobs(), values.field_blobs(),
                               strict=True):  # fmt: skip
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert back.text.value.get().tolist() == ["a", "bc"]  # strings come back as str


def test_feed_record_rejects_wrong_fields_and_types() -> None:
    net = core.Net("feed")
    s = Struct(("a", Scalar(np.int32)), ("b", Scalar((np.float32, 2))), ("c", Scalar(str)))
    r = NewRecord(net, s)
    ok = [np.array([1], np.int32), np.zeros((1, 2), np.float32), np.array(["x"])]
    FeedRecord(r, ok)
    with pytest.raises(ValueError, match=r"Values must match 3 blobs \(fields \['a', 'b', 'c'\]"):
        FeedRecord(r, ok[:2])
    with pytest.raises(ValueError, match=r"missing \['c'\], unexpected \['d'\]"):
        FeedRecord(r, Struct(("a", np.array([1])), ("b", np.zeros((1, 2))),
                             ("d", np.array([1]))))  # fmt: skip
    with pytest.raises(ValueError, match="field 'a' has type int32, but the value is an array "
                       "of float64"):  # fmt: skip
        FeedRecord(r, [np.array([1.5]), ok[1], ok[2]])
    with pytest.raises(ValueError, match="field 'b' has inner shape \\[2\\]"):
        FeedRecord(r, [ok[0], np.zeros((1, 3), np.float32), ok[2]])
    with pytest.raises(ValueError, match="field 'c' has type <U"):
        FeedRecord(r, [ok[0], ok[1], np.array([1.0])])
    FeedRecord(r, [[1, 2], [[1, 2]], ["y"]])  # lists take the field types
    assert workspace.FetchBlob("a").dtype == np.int32


def test_feed_and_fetch_in_a_given_workspace() -> None:
    ws = workspace.C.Workspace()
    r = NewRecord(core.Net("ws"), Struct(("x", Scalar(np.int64))))
    FeedRecord(r, [np.array([5, 6])], ws=ws)
    assert not workspace.HasBlob("x")
    assert FetchRecord(r, ws=ws).x.get().tolist() == [5, 6]
    ws.create_blob("y")
    empty = from_blob_list(Struct(("y", Scalar(np.int64))), [core.BlobReference("y")])
    with pytest.raises(RuntimeError, match="FetchRecord: field 'y': .*uninitialized"):
        FetchRecord(empty, ws=ws)
    workspace.CreateBlob("y")
    with pytest.raises(RuntimeError, match="field 'y': blob y does not hold a tensor"):
        FetchRecord(empty)
    with pytest.raises(RuntimeError, match="field 'y'"):
        FetchRecord(from_blob_list(empty, [core.BlobReference("missing")]), ws=ws)


def test_const_record_picks_fill_ops() -> None:
    net = core.Net("const")
    values = from_blob_list(
        Struct(("i", Scalar(np.int32)), ("l", Scalar(np.int64)), ("f", Scalar(np.float32)),
               ("s", Scalar(str)), ("b", Scalar(np.bool_))),
        [[1], [2], [3.0], ["x"], [True]],
    )  # fmt: skip
    r = ConstRecord(net, values)
    assert [op.type for op in net.Proto().op] == [
        "GivenTensorIntFill", "GivenTensorInt64Fill", "GivenTensorFill",
        "GivenTensorStringFill", "GivenTensorBoolFill",
    ]  # fmt: skip
    workspace.RunNetOnce(net)
    got = FetchRecord(r)
    assert got.s.get().tolist() == ["x"] and got.b.get().dtype == np.bool_
