"""caffe2.python.control: the step structures each construct compiles to, the names it gives
them (spec runtime.md 10), and runs of them (after Caffe2's control_test).

The run tests count with a counter: ``cnt_net`` counts up once and exports the count,
``cnt_2_net`` counts up twice; the condition nets compare the count with N = 10.
"""

from __future__ import annotations

import pytest
from pyhelpers import reset_workspace, step_tree  # noqa: F401 (autouse fixture)

from caffe2.python import control, core, workspace

N = 10


def _tree(step_or_proto):
    """(name, flags, networks or substeps) of a step, recursively."""
    return step_tree(step_or_proto, ("stop", "only_once", "concurrent", "num_iter"))


def _net(name):
    net = core.Net(name)
    net.ConstantFill([], 1, shape=[], value=1.0)
    return net


def _cond_net(name, value=True):
    net = core.Net(name)
    out = net.ConstantFill([], 1, shape=[], value=value, dtype=core.DataType.BOOL)
    net.AddExternalOutput(out)
    return net, out


def _next_idx():
    return control._current_idx


# ---- names ------------------------------------------------------------------------------


def test_step_names_use_one_global_counter():
    assert control._get_next_step_name("Ctl", "cts_names") == "cts_names/Ctl"
    k = _next_idx()
    assert control._get_next_step_name("Ctl", "cts_names") == f"cts_names/Ctl_{k}"
    assert control._get_next_step_name("Ctl", "cts_names") == f"cts_names/Ctl_{k + 1}"
    # the counter is shared with every other name
    assert control._get_next_step_name("Other", "cts_names") == "cts_names/Other"
    assert control._get_next_step_name("Other", "cts_names") == f"cts_names/Other_{k + 2}"
    assert "cts_names/Ctl" in control._used_step_names
    assert control._GetNextStepName is control._get_next_step_name


def test_make_list():
    with pytest.raises(ValueError, match="input cannot be empty"):
        control._MakeList(())
    assert control._MakeList((1,)) == [1]
    assert control._MakeList(([1, 2],)) == [1, 2]
    assert control._MakeList((1, 2)) == [1, 2]


def test_do_names_and_structure():
    a, b = _net("cts_do_a"), _net("cts_do_b")
    step = control.Do("cts_do", a, b)
    assert _tree(step) == ("cts_do/Do", {}, [a.Name(), b.Name()])
    k = _next_idx()
    assert control.Do("cts_do", [a]).Name() == f"cts_do/Do_{k}"
    # a single step is returned as is
    assert control.Do("cts_do_same", step) is step
    with core.NameScope("cts_scope"):
        assert control.Do("cts_do_scoped", a).Name() == "cts_scope/cts_do_scoped/Do"
    # the registry keeps the unscoped name
    assert "cts_do_scoped/Do" in control._used_step_names


def test_do_parallel_structure():
    a, b = _net("cts_par_a"), _net("cts_par_b")
    sa, sb = control.Do("cts_par_sa", a), control.Do("cts_par_sb", b)
    step = control.DoParallel("cts_par", sa, sb)
    assert _tree(step) == (
        "cts_par/DoParallel",
        {"concurrent": True},
        [("cts_par_sa/Do", {}, [a.Name()]), ("cts_par_sb/Do", {}, [b.Name()])],
    )
    assert control.DoParallel("cts_par_one", sa) is sa


def test_condition_helpers():
    cond_net, cond = _cond_net("cts_cond")
    blob = control.GetConditionBlobFromNet(cond_net)
    assert blob == cond and blob.Net() is None
    # QUIRK: building the assertion message fails
    with pytest.raises(AttributeError):
        control.GetConditionBlobFromNet(core.Net("cts_no_outputs"))

    bool_net = control.BoolNet((cond, True), ("cts_other", False))
    assert bool_net.Name().startswith("bool_net")
    ops = bool_net.Proto().op
    assert [op.type for op in ops] == ["ConstantFill", "ConstantFill"]
    assert [list(op.output) for op in ops] == [[str(cond)], ["cts_other"]]
    args = {a.name: a for a in ops[0].arg}
    assert list(args["shape"].ints) == [] and args["value"].i == 1
    assert args["dtype"].i == core.DataType.BOOL
    assert list(bool_net.Proto().external_output) == [str(cond), "cts_other"]
    assert control.BoolNet([(cond, False)]).Proto().op[0].arg[1].i == 0

    not_net, out = control.NotNet(cond_net)
    assert not_net.Name().startswith("not_net")
    assert str(out) == not_net.Name() + "/Not"
    assert list(not_net.Proto().op[0].input) == [str(cond)]
    assert list(not_net.Proto().external_output) == [str(out)]
    _, out2 = control.NotNet(cond)
    assert str(out2).endswith("/Not")

    copy_net, copied = control._CopyConditionBlobNet(cond)
    assert copy_net.Name().startswith("copy_condition_blob_net")
    assert [op.type for op in copy_net.Proto().op] == ["Copy"]
    assert list(copy_net.Proto().external_output) == [str(copied)]


def test_merge_and_combine_condition_structure():
    n1, c1 = _cond_net("cts_merge_1", True)
    n2, c2 = _cond_net("cts_merge_2", False)
    n1.add_attribute("k", "v1")
    n2.add_attribute("k", "v2")
    assert control.MergeConditionNets("cts_m", n1, "And") is n1
    assert control.MergeConditionNets("cts_m", [n1], "And") is n1
    assert control.MergeConditionNets("cts_m", [], "And") is None
    merged = control.MergeConditionNets("cts_merged", [n1, n2], "Or")
    assert merged.Name() == "cts_merged"
    assert [op.type for op in merged.Proto().op] == ["ConstantFill", "ConstantFill", "Or"]
    assert list(merged.Proto().op[2].input) == [str(c1), str(c2)]
    assert list(merged.Proto().external_output) == [merged.Proto().op[2].output[0]]
    assert merged.get_attributes("k") == ["v1", "v2"]

    assert control.CombineConditions("cts_c", [], "And") is None
    with pytest.raises(ValueError, match="must be a list"):
        control.CombineConditions("cts_c", n1, "And")
    single = control.CombineConditions("cts_c", [n1], "And")
    assert [op.type for op in single.Proto().op] == ["Copy"]
    combined = control.CombineConditions("cts_combined", [n1, n2], "And")
    assert [op.type for op in combined.Proto().op] == ["And"]
    assert list(combined.Proto().op[0].input) == [str(c1), str(c2)]


def test_for_structure():
    body = _net("cts_for_body")
    step = control.For("cts_for", body, 3)
    name, flags, (init_step, inner) = _tree(step)
    assert (name, flags) == ("cts_for/For/Do", {})
    assert init_step[0] == "cts_for/For-init-net/Do"
    (init_net_name,) = init_step[2]
    assert init_net_name.startswith("init-net")
    assert inner[0] == "cts_for/For-inner"
    iter_net_name = inner[2][0]
    assert iter_net_name.startswith("For-iter")
    assert inner[2] == [iter_net_name, body.Name()]
    assert inner[1] == {"stop": iter_net_name + "/CountDown"}
    init_op = step.get_net(init_net_name).Proto().op[0]
    assert init_op.type == "CreateCounter" and init_op.arg[0].i == 3


def test_for_with_step_body_prepends_a_do_step():
    body = control.Do("cts_for_step_body", _net("cts_for_sb"))
    step = control.For("cts_for_step", body, 2)
    inner = _tree(step)[2][1]
    assert inner[0] == "cts_for_step/For-inner"
    prepend, body_tree = inner[2]
    assert prepend[0].startswith("prepend/Do")
    assert prepend[2][0].startswith("For-iter")
    assert body_tree[0] == "cts_for_step_body/Do"


def test_while_structure():
    cond_net, cond = _cond_net("cts_while_cond")
    body = _net("cts_while_body")
    step = control.While("cts_while", cond_net, body)
    name, _, (bool_step, inner) = _tree(step)
    assert name == "cts_while/While/Do"
    assert bool_step[2][0].startswith("bool_net")
    not_name = inner[2][1]
    assert not_name.startswith("not_net")
    assert inner == (
        "cts_while/While-inner",
        {"stop": not_name + "/Not"},
        [cond_net.Name(), not_name, body.Name()],
    )
    # blob condition, step body: no bool net, one step named <name>/While
    body_step = control.Do("cts_while_b", body)
    step = control.While("cts_while2", cond, body_step)
    name, flags, (prepend, body_tree) = _tree(step)
    assert name == "cts_while2/While" and set(flags) == {"stop"}
    assert prepend[2][0].startswith("not_net")
    assert body_tree[0] == "cts_while_b/Do"


def test_until_do_while_do_until_structure():
    cond_net, cond = _cond_net("cts_until_cond")
    body = _net("cts_until_body")
    assert _tree(control.Until("cts_until", cond_net, body)) == (
        "cts_until/Until",
        {"stop": str(cond)},
        [cond_net.Name(), body.Name()],
    )
    assert _tree(control.Until("cts_until_b", cond, body)) == (
        "cts_until_b/Until",
        {"stop": str(cond)},
        [body.Name()],
    )
    name, _, (bool_step, inner) = _tree(control.DoWhile("cts_dowhile", cond_net, body))
    assert name == "cts_dowhile/DoWhile/Do"
    assert inner[0] == "cts_dowhile/DoWhile-inner"
    assert inner[2][:2] == [body.Name(), cond_net.Name()]
    assert inner[2][2].startswith("not_net")
    assert inner[1] == {"stop": inner[2][2] + "/Not"}
    assert _tree(control.DoUntil("cts_dountil", cond, body)) == (
        "cts_dountil/DoUntil",
        {"stop": str(cond)},
        [body.Name()],
    )
    name, _, (bool_step, inner) = _tree(control.DoUntil("cts_dountil2", cond_net, body))
    assert name == "cts_dountil2/DoUntil/Do"
    assert inner == (
        "cts_dountil2/DoUntil-inner",
        {"stop": str(cond)},
        [body.Name(), cond_net.Name()],
    )


def test_if_and_switch_structure():
    cond_net, cond = _cond_net("cts_if_cond")
    t, f = _net("cts_if_t"), _net("cts_if_f")
    name, _, (bool_step, inner) = _tree(control.If("cts_if", cond_net, t))
    assert name == "cts_if/If/_RunOnceIf/Do"
    assert inner[0] == "cts_if/If/_RunOnceIf-inner"
    assert inner[1]["only_once"] is True
    assert inner[2][0] == cond_net.Name() and inner[2][2] == t.Name()

    name, _, (true_step, false_step) = _tree(control.If("cts_ifelse", cond, t, f))
    assert name == "cts_ifelse/If/Do"
    assert true_step[0] == "cts_ifelse/If-true/_RunOnceIf/Do"
    assert false_step[0] == "cts_ifelse/If-false/_RunOnceIfNot"
    assert false_step[1]["only_once"] is True
    copy_name = false_step[2][0]
    assert copy_name.startswith("copy_condition_blob_net")
    assert false_step[1]["stop"] == copy_name + "/Copy"

    assert _tree(control.IfNot("cts_ifnot", cond_net, t)) == (
        "cts_ifnot/IfNot/_RunOnceIfNot",
        {"stop": str(cond), "only_once": True},
        [cond_net.Name(), t.Name()],
    )
    name, _, (true_step, false_step) = _tree(control.IfNot("cts_ifnot2", cond, t, f))
    assert name == "cts_ifnot2/IfNot/Do"
    assert true_step[0] == "cts_ifnot2/IfNot-true/_RunOnceIfNot"
    assert false_step[0] == "cts_ifnot2/IfNot-false/_RunOnceIf/Do"

    name, _, cases = _tree(control.Switch("cts_switch", (cond_net, t), (cond, f)))
    assert name == "cts_switch/Switch"
    assert cases[0][0] == "cts_switch/Switch/_RunOnceIf/Do"
    k = int(cases[1][0].rsplit("_", 1)[1])
    assert cases[1][0] == f"cts_switch/Switch/_RunOnceIf/Do_{k}"
    name, _, cases = _tree(control.SwitchNot("cts_switchnot", [(cond_net, t), (cond, f)]))
    assert name == "cts_switchnot/SwitchNot"
    assert cases[0][0] == "cts_switchnot/SwitchNot/_RunOnceIfNot"


def test_run_once_if_with_step_body_has_no_bool_net():
    cond_net, _ = _cond_net("cts_roi_cond")
    body = control.Do("cts_roi_body", _net("cts_roi_b"))
    name, flags, (prepend, body_tree) = _tree(control.If("cts_roi", cond_net, body))
    assert name == "cts_roi/If/_RunOnceIf"
    assert flags["only_once"] is True
    assert prepend[0].startswith("prepend/Do")
    assert body_tree[0] == "cts_roi_body/Do"


# ---- runs (after Caffe2's control_test) ---------------------------------------------------


class Counting:
    """The nets of control_test: a counter, nets counting with it, condition nets."""

    def __init__(self):
        self.init_net = core.Net("ctr_init-net")
        cnt = self.init_net.CreateCounter([], init_count=0)
        const_n = self.init_net.ConstantFill([], shape=[], value=N, dtype=core.DataType.INT64)
        const_0 = self.init_net.ConstantFill([], shape=[], value=0, dtype=core.DataType.INT64)

        self.cnt_net = core.Net("ctr_cnt-net")
        self.cnt_net.CountUp([cnt])
        curr_cnt = self.cnt_net.RetrieveCount([cnt])
        self.init_net.ConstantFill([], [curr_cnt], shape=[], value=0, dtype=core.DataType.INT64)
        self.cnt_net.AddExternalOutput(curr_cnt)

        self.cnt_2_net = core.Net("ctr_cnt-2-net")
        self.cnt_2_net.CountUp([cnt])
        self.cnt_2_net.CountUp([cnt])
        curr_cnt_2 = self.cnt_2_net.RetrieveCount([cnt])
        self.init_net.ConstantFill([], [curr_cnt_2], shape=[], value=0, dtype=core.DataType.INT64)
        self.cnt_2_net.AddExternalOutput(curr_cnt_2)

        self.cond_net = core.Net("ctr_cond-net")
        cond_blob = self.cond_net.LT([curr_cnt, const_n])
        self.cond_net.AddExternalOutput(cond_blob)

        self.not_cond_net = core.Net("ctr_not-cond-net")
        cond_blob = self.not_cond_net.GE([curr_cnt, const_n])
        self.not_cond_net.AddExternalOutput(cond_blob)

        self.true_cond_net = core.Net("ctr_true-cond-net")
        true_blob = self.true_cond_net.LT([const_0, const_n])
        self.true_cond_net.AddExternalOutput(true_blob)

        self.false_cond_net = core.Net("ctr_false-cond-net")
        false_blob = self.false_cond_net.GT([const_0, const_n])
        self.false_cond_net.AddExternalOutput(false_blob)

        self.idle_net = core.Net("ctr_idle")
        self.idle_net.ConstantFill([], shape=[], value=0, dtype=core.DataType.INT64)

    def run(self, step):
        plan = core.Plan("ctr_test")
        plan.AddStep(control.Do("init", self.init_net))
        plan.AddStep(step)
        assert workspace.RunPlan(plan) is True

    @staticmethod
    def output(net, i=-1):
        return workspace.FetchBlob(net.Proto().external_output[i])

    def check(self, *nets_and_expects):
        for net, expect in nets_and_expects:
            assert self.output(net) == expect, net.Name()


@pytest.fixture
def c():
    return Counting()


def test_for_loop_with_nets(c):
    c.run(control.For("myFor", c.cnt_net, N))
    c.check((c.cnt_net, N))
    c.run(control.For("myFor", [c.cnt_net, c.idle_net], N))
    c.check((c.cnt_net, N))


def test_for_loop_with_steps(c):
    step = control.Do("count", c.cnt_net)
    c.run(control.For("myFor", step, N))
    c.check((c.cnt_net, N))
    c.run(control.For("myFor", [step, c.idle_net], N))
    c.check((c.cnt_net, N))


def test_nested_for(c):
    inner = control.For("inner", c.cnt_net, 3)
    c.run(control.For("outer", inner, 4))
    c.check((c.cnt_net, 12))


@pytest.mark.parametrize("as_step", [False, True])
def test_while_loop(c, as_step):
    body = control.Do("count", c.cnt_net) if as_step else c.cnt_net
    c.run(control.While("myWhile", c.cond_net, body))
    c.check((c.cnt_net, N))
    # a second run: the stop blob left True by the first one is reset
    c.run(control.While("myWhile", c.cond_net, body))
    c.check((c.cnt_net, N))


def test_while_loop_with_blob_condition(c):
    cond = c.cond_net.Proto().external_output[-1]
    c.init_net.ConstantFill([], [cond], shape=[], value=True, dtype=core.DataType.BOOL)
    c.run(control.While("myWhileBlob", core.BlobReference(cond), [c.cnt_net, c.cond_net]))
    c.check((c.cnt_net, N))


@pytest.mark.parametrize("as_step", [False, True])
def test_until_loop(c, as_step):
    body = control.Do("count", c.cnt_net) if as_step else c.cnt_net
    c.run(control.Until("myUntil", c.not_cond_net, body))
    c.check((c.cnt_net, N))


@pytest.mark.parametrize("as_step", [False, True])
def test_do_while_loop(c, as_step):
    body = control.Do("count", c.cnt_net) if as_step else c.cnt_net
    c.run(control.DoWhile("myDoWhile", c.cond_net, body))
    c.check((c.cnt_net, N))
    c.run(control.DoWhile("myDoWhile", c.cond_net, body))
    c.check((c.cnt_net, N))


@pytest.mark.parametrize("as_step", [False, True])
def test_do_until_loop(c, as_step):
    body = control.Do("count", c.cnt_net) if as_step else c.cnt_net
    c.run(control.DoUntil("myDoUntil", c.not_cond_net, body))
    c.check((c.cnt_net, N))
    c.run(control.DoUntil("myDoUntil", c.not_cond_net, body))
    c.check((c.cnt_net, N))


def test_do_until_with_true_blob_runs_first_net_only(c):
    stop = c.true_cond_net.Proto().external_output[-1]
    c.run(
        control.Do(
            "pre",
            c.true_cond_net,
            control.DoUntil("myDoUntilBlob", core.BlobReference(stop), [c.cnt_net, c.cnt_2_net]),
        )
    )
    assert c.output(c.cnt_net) == 1
    assert c.output(c.cnt_2_net) == 0  # never ran


def test_if_condition_nets(c):
    c.run(control.If("myIfTrue", c.true_cond_net, c.cnt_net))
    c.check((c.cnt_net, 1))
    c.run(control.If("myIfFalse", c.false_cond_net, c.cnt_net))
    c.check((c.cnt_net, 0))  # the init step reset it; the body did not run
    c.run(control.If("myIfElseTrue", c.true_cond_net, c.cnt_net, c.cnt_2_net))
    c.check((c.cnt_net, 1), (c.cnt_2_net, 0))
    c.run(control.If("myIfElseFalse", c.false_cond_net, c.cnt_net, c.cnt_2_net))
    c.check((c.cnt_net, 0), (c.cnt_2_net, 2))


def test_if_not_condition_nets(c):
    c.run(control.IfNot("myIfNotTrue", c.true_cond_net, c.cnt_net))
    c.check((c.cnt_net, 0))
    c.run(control.IfNot("myIfNotFalse", c.false_cond_net, c.cnt_net))
    c.check((c.cnt_net, 1))
    c.run(control.IfNot("myIfNotElseTrue", c.true_cond_net, c.cnt_net, c.cnt_2_net))
    c.check((c.cnt_net, 0), (c.cnt_2_net, 2))
    c.run(control.IfNot("myIfNotElseFalse", c.false_cond_net, c.cnt_net, c.cnt_2_net))
    c.check((c.cnt_net, 1), (c.cnt_2_net, 0))


def test_if_with_blob_condition_and_steps(c):
    true_blob = core.BlobReference(c.true_cond_net.Proto().external_output[-1])
    body = control.Do("count", c.cnt_net)
    c.run(control.Do("pre", c.true_cond_net, control.If("myIfBlob", true_blob, body)))
    c.check((c.cnt_net, 1))


def test_switch(c):
    c.run(control.Switch("mySwitch", (c.false_cond_net, c.cnt_net), (c.true_cond_net, c.cnt_2_net)))
    c.check((c.cnt_net, 0), (c.cnt_2_net, 2))


def test_switch_runs_every_true_case(c):
    c.run(control.Switch("mySwitch", [(c.true_cond_net, c.cnt_net), (c.true_cond_net, c.cnt_net)]))
    c.check((c.cnt_net, 2))


def test_switch_not(c):
    c.run(
        control.SwitchNot(
            "mySwitchNot", (c.false_cond_net, c.cnt_net), (c.true_cond_net, c.cnt_2_net)
        )
    )
    c.check((c.cnt_net, 1), (c.cnt_2_net, 0))


def test_do_runs_once_in_order(c):
    c.run(control.Do("myDo", c.cnt_net, c.cnt_2_net, c.cnt_net))
    c.check((c.cnt_net, 4), (c.cnt_2_net, 3))


def test_do_parallel(c):
    init = core.Net("ctr_par_init")
    ca = init.CreateCounter([], init_count=0)
    cb = init.CreateCounter([], init_count=0)
    na, nb = core.Net("ctr_par_a"), core.Net("ctr_par_b")
    na.CountUp([ca])
    nb.CountUp([cb])
    ra = na.RetrieveCount([ca])
    rb = nb.RetrieveCount([cb])
    step = control.Do(
        "par",
        control.Do("par_init", init),
        control.DoParallel("myDoParallel", control.For("a", na, 5), control.For("b", nb, 7)),
    )
    assert step.Proto().substep[1].concurrent_substeps
    assert workspace.RunPlan(core.Plan(step)) is True
    assert workspace.FetchBlob(ra) == 5
    assert workspace.FetchBlob(rb) == 7


def test_combine_conditions(c):
    for relation, expect in [("Or", True), ("And", False)]:
        combined = control.CombineConditions("test", [c.true_cond_net, c.false_cond_net], relation)
        c.run(control.Do("combine", c.true_cond_net, c.false_cond_net, combined))
        c.check((combined, expect))
    single = control.CombineConditions("test", [c.false_cond_net], "And")
    c.run(control.Do("combine", c.false_cond_net, single))
    c.check((single, False))


def test_merge_condition_nets(c):
    for relation, expect in [("Or", True), ("And", False)]:
        merged = control.MergeConditionNets("test", [c.true_cond_net, c.false_cond_net], relation)
        c.run(control.Do("merge", merged))
        c.check((merged, expect))
