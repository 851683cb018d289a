"""Test helpers of Caffe2's Python layer: ``rand_array`` and the ``TestCase`` base class.

``TestCase`` resets the current named workspace (normally "default") around every test; the
process-global registries (net and step names, compile caches) are not reset.
"""

from __future__ import annotations

import unittest

import numpy as np

from caffe2.python import core, workspace


def rand_array(*dims: int) -> np.ndarray:
    """A float32 array of uniform values in [-0.5, 0.5); an array even with no dims."""
    return np.array(np.random.rand(*dims) - 0.5).astype(np.float32)


class TestCase(unittest.TestCase):
    """unittest.TestCase with a clean workspace for every test."""

    @classmethod
    def setUpClass(cls) -> None:
        workspace.GlobalInit(["caffe2", "--caffe2_log_level=0"])
        # Clear the default engine preferences so they do not affect operator tests.
        core.SetEnginePref({}, {})

    def setUp(self) -> None:
        self.ws = workspace.C.Workspace()
        workspace.ResetWorkspace()

    def tearDown(self) -> None:
        workspace.ResetWorkspace()
