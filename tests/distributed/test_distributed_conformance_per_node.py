"""The session conformance suite against DistributedSession with one actor per Caffe2 node.

tests/python/test_session_conformance.py runs DistributedSession with every node hosted by
one actor, as LocalSession hosts every node in one workspace. Here the same tests run with
the distributed layout the session uses by default: one actor, one workspace per node.
"""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

pytest.importorskip("ray", reason="DistributedSession needs the extra caffe2py[ray]")

from caffe2.distributed.testing import (  # noqa: E402
    DistributedSessionKind,
    start_local_ray,
    stop_local_ray,
)

_SUITE = pathlib.Path(__file__).resolve().parents[1] / "python" / "test_session_conformance.py"
_spec = importlib.util.spec_from_file_location("_session_conformance_suite", _SUITE)
suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)

_KIND = DistributedSessionKind(one_workspace=False)


@pytest.fixture(scope="module", autouse=True)
def _ray_instance():
    start_local_ray()
    yield
    stop_local_ray()


@pytest.fixture
def kind():
    return _KIND


@pytest.fixture
def session(kind):
    s = kind.make()
    yield s
    kind.cleanup(s)


for _name in dir(suite):
    if _name.startswith("test_"):
        globals()[_name] = getattr(suite, _name)
