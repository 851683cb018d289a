"""Helpers shared by the tests of the Python layer (tests/python): a workspace-reset
fixture, a step-tree view of execution steps, and NetBuilder bodies that several test
modules build (after Caffe2's net_builder_test).

``tests`` is on sys.path (see tests/conftest.py): ``from pyhelpers import ...``.
"""

from __future__ import annotations

import pytest

from caffe2.python import workspace
from caffe2.python.net_builder import ops
from caffe2.python.task import Task, final_output


@pytest.fixture(autouse=True)
def reset_workspace():
    """Autouse where imported: a fresh global workspace before and after each test."""
    workspace.ResetWorkspace()
    yield
    workspace.ResetWorkspace()


# The step flags step_tree can report, by the key they get in the flags dict.
_STEP_FLAGS = {
    "stop": lambda p: p.should_stop_blob or None,
    "only_once": lambda p: p.only_once if p.HasField("only_once") else None,
    "create_workspace": lambda p: True if p.create_workspace else None,
    "concurrent": lambda p: True if p.concurrent_substeps else None,
    "instances": lambda p: (
        p.num_concurrent_instances if p.HasField("num_concurrent_instances") else None
    ),
    "every_ms": lambda p: p.run_every_ms if p.HasField("run_every_ms") else None,
    "num_iter": lambda p: p.num_iter if p.HasField("num_iter") and p.num_iter != 1 else None,
}


def step_tree(step_or_proto, flags):
    """(name, flags, networks or substeps) of a step, recursively.

    ``flags`` names the flags to report (keys of _STEP_FLAGS); each is reported only
    where set: a stop blob, only_once when present, concurrent substeps, ...
    """
    p = step_or_proto.Proto() if hasattr(step_or_proto, "Proto") else step_or_proto
    found = {}
    for key in flags:
        value = _STEP_FLAGS[key](p)
        if value is not None:
            found[key] = value
    if p.substep:
        return (p.name, found, [step_tree(s, flags) for s in p.substep])
    return (p.name, found, list(p.network))


def build_counting_loop():
    """Nested loops with If/Elif/Else summing ``outer*10 + inner`` into four totals.

    Returns [total, total_large (>= 80), total_small (>= 50), total_tiny].
    """
    total = ops.Const(0)
    total_large = ops.Const(0)
    total_small = ops.Const(0)
    total_tiny = ops.Const(0)
    with ops.loop(10) as loop:
        outer = ops.Mul([loop.iter(), ops.Const(10)])
        with ops.loop(loop.iter()) as inner:
            val = ops.Add([outer, inner.iter()])
            with ops.If(ops.GE([val, ops.Const(80)])) as c:
                ops.Add([total_large, val], [total_large])
            with c.Elif(ops.GE([val, ops.Const(50)])) as c:
                ops.Add([total_small, val], [total_small])
            with c.Else():
                ops.Add([total_tiny, val], [total_tiny])
            ops.Add([total, val], [total])
    return [total, total_large, total_small, total_tiny]


def build_setup_exit_task():
    """In the current Task: init steps, a body and an exit step around one accumulator.

    Returns the final outputs (o6, o7_1, o7_2): 6 from the body, 7 from the exit step
    (it runs after the body incremented accum) and 7 from the body's last line.
    """
    with ops.task_init():
        one = ops.Const(1)
    two = ops.Add([one, one])
    with ops.task_init():
        three = ops.Const(3)
    accum = ops.Add([two, three])
    # here accum is 5
    with ops.task_exit():
        # here accum is 6: the exit runs after the lines below
        seven_1 = ops.Add([accum, one])
    six = ops.Add([accum, one])
    ops.Add([accum, one], [accum])
    seven_2 = ops.Add([accum, one])
    return final_output(six), final_output(seven_1), final_output(seven_2)


def build_multi_instance_counters(num_instances, num_iters):
    """A Task of ``num_instances`` instances, each counting ``num_iters`` iterations.

    Returns (task, total1, total2, total3): final outputs of a global counter
    (num_instances * num_iters) and two sums of squares of per-instance counts
    (num_instances * num_iters**2 each, only when no instance shares its counter).
    """
    with Task(num_instances=num_instances) as task:
        with ops.task_init():
            counter1 = ops.CreateCounter([], ["global_counter"])
            counter2 = ops.CreateCounter([], ["global_counter2"])
            counter3 = ops.CreateCounter([], ["global_counter3"])
        # task_counter and local_counter are per instance
        with ops.task_instance_init():
            task_counter = ops.CreateCounter([], ["task_counter"])
        local_counter = ops.CreateCounter([], ["local_counter"])
        with ops.loop(num_iters):
            ops.CountUp(counter1)
            ops.CountUp(task_counter)
            ops.CountUp(local_counter)
        # sums of squares of the per-instance counts: no sharing between instances
        with ops.task_instance_exit():
            count2 = ops.RetrieveCount(task_counter)
            with ops.loop(ops.Mul([count2, count2])):
                ops.CountUp(counter2)
        count3 = ops.RetrieveCount(local_counter)
        with ops.loop(ops.Mul([count3, count3])):
            ops.CountUp(counter3)
        # run once
        with ops.task_exit():
            total1 = final_output(ops.RetrieveCount(counter1))
            total2 = final_output(ops.RetrieveCount(counter2))
            total3 = final_output(ops.RetrieveCount(counter3))
    return task, total1, total2, total3
