"""The process-wide stat registry (caffe2.runtime.stats) and its GetStats view."""

from __future__ import annotations

import sys
import threading

import pytest

from caffe2.runtime import pybind_state, stats
from caffe2.runtime.stats import AvgExportedStat, ExportedStat, StatRegistry


@pytest.fixture
def fast_switching():
    """Switch threads very often, so an unlocked read-modify-write would lose updates."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def test_add_stat_creates_and_accumulates():
    r = StatRegistry()
    assert r.publish() == {}
    v = r.add("g/x")
    assert r.publish() == {"g/x": 0}
    assert v.increment(5) == 5
    assert r.add("g/x") is v
    assert v.increment(-2) == 3
    assert r.publish() == {"g/x": 3}
    assert r.get("g/x") == 3 and r.get("nope") is None
    assert "g/x" in r and len(r) == 1


def test_publish_is_a_snapshot_and_can_reset():
    r = StatRegistry()
    r.add("a").increment(4)
    snap = r.publish()
    r.add("a").increment(1)
    assert snap == {"a": 4}
    assert r.publish(reset=True) == {"a": 5}
    assert r.publish() == {"a": 0}


def test_reset_zeroes_but_keeps_keys_and_handles():
    r = StatRegistry()
    h = r.add("k")
    h.increment(7)
    r.reset()
    assert r.publish() == {"k": 0}
    h.increment(2)  # a handle taken before reset still feeds the registry
    assert r.publish() == {"k": 2}


def test_update_adds():
    r = StatRegistry()
    r.add("a").increment(1)
    r.update({"a": 2, "b": 3})
    r.update([("b", 1)])
    assert r.publish() == {"a": 3, "b": 4}


def test_values_wrap_as_int64():
    r = StatRegistry()
    v = r.add("big")
    v.reset(2**63 - 1)
    assert v.increment(1) == -(2**63)


def test_stat_name_must_be_str():
    with pytest.raises(TypeError, match="stat name must be a str"):
        StatRegistry().add(3)  # type: ignore[arg-type]


def test_exported_and_average_stats_keys():
    r = StatRegistry()
    e = ExportedStat("grp", "num", r)
    avg = AvgExportedStat("timer", "time_ns", r)
    assert r.publish() == {"grp/num": 0, "timer/time_ns/sum": 0, "timer/time_ns/count": 0}
    e.increment()
    avg.increment(100)
    avg.increment(50)
    assert r.publish() == {"grp/num": 1, "timer/time_ns/sum": 150, "timer/time_ns/count": 2}


def test_concurrent_increments_are_not_lost(fast_switching):
    r = StatRegistry()

    def work() -> None:
        for _ in range(2000):
            r.add("shared").increment(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert r.publish() == {"shared": 16000}


def test_module_functions_use_the_global_registry():
    name = "test_stats/module_level"
    before = stats.get_stat(name) or 0
    assert stats.add_stat(name, 3) == before + 3
    assert stats.publish()[name] == before + 3
    assert stats.registry().get(name) == before + 3
    stats.update({name: 1})
    assert stats.get_stat(name) == before + 4
    assert stats.add(name).get() == before + 4


def test_get_stats_reads_publish():
    name = "test_stats/get_stats"
    stats.add_stat(name, 11)
    got = pybind_state.get_stats()
    assert got[name] == stats.get_stat(name)
    assert isinstance(got, dict)


def test_global_reset():
    name = "test_stats/global_reset"
    stats.add_stat(name, 5)
    stats.reset()
    assert stats.get_stat(name) == 0
    assert all(v == 0 for v in stats.publish().values())
