"""Fixtures shared by the tests; being here also puts tests/ on sys.path (for netdefs)."""

from __future__ import annotations

import os

# Ray reads these when it is first imported (test modules import it at collection): every Ray
# instance the tests start stays on loopback and sends no usage stats.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402
from netdefs import switch_interval  # noqa: E402

from caffe2.runtime.workspace import Workspace  # noqa: E402


@pytest.fixture
def ws() -> Workspace:
    """A fresh, empty Workspace (a module may extend it: ``def ws(ws): ...``)."""
    return Workspace()


@pytest.fixture
def fast_switching():
    """Switch threads very often, so an unlocked read-modify-write would lose updates."""
    with switch_interval(1e-6):
        yield
