"""caffe2.python.test_util (spec runtime.md 11)."""

import unittest

import numpy as np

from caffe2.python import test_util, workspace


def test_rand_array():
    a = test_util.rand_array(2, 3)
    assert a.shape == (2, 3) and a.dtype == np.float32
    assert np.all(a >= -0.5) and np.all(a < 0.5)
    s = test_util.rand_array()
    assert isinstance(s, np.ndarray) and s.shape == () and s.dtype == np.float32


def test_test_case_resets_the_workspace():
    seen = []

    class Sample(test_util.TestCase):
        def test_a(self):
            seen.append((type(self.ws).__name__, workspace.HasBlob("leftover")))
            workspace.FeedBlob("leftover", np.array([1.0], dtype=np.float32))

        def test_b(self):
            self.test_a()

    workspace.FeedBlob("leftover", np.array([1.0], dtype=np.float32))
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(Sample)
    result = unittest.TestResult()
    suite.run(result)
    assert result.wasSuccessful(), result.errors + result.failures
    assert seen == [("Workspace", False), ("Workspace", False)]
    assert not workspace.HasBlob("leftover")  # tearDown reset it too
