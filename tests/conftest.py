"""Fixtures shared by the tests; being here also puts tests/ on sys.path (for netdefs)."""

from __future__ import annotations

import pytest
from netdefs import switch_interval

from caffe2.runtime.workspace import Workspace


@pytest.fixture
def ws() -> Workspace:
    """A fresh, empty Workspace (a module may extend it: ``def ws(ws): ...``)."""
    return Workspace()


@pytest.fixture
def fast_switching():
    """Switch threads very often, so an unlocked read-modify-write would lose updates."""
    with switch_interval(1e-6):
        yield
