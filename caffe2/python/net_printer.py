"""Readable text for nets, steps, plans, tasks and jobs, and a static blob check (spec 12).

``to_string(obj)`` renders an OperatorDef, NetDef, Net, ExecutionStep, Plan, Task, TaskGroup or
Job (any object with ``init_group`` and ``epoch_group``) as indented pseudo-Python::

    with Task(node=local, name=local/task, outputs=Output[local/task/Add:0]):
        # net: local/task
        local/task/GivenTensorInt64Fill:0 = GivenTensorInt64Fill(shape=[], values=[1])
        with loop():
            ...
            yield stop_if(local/task_1/stop_blob)

Steps become ``with`` blocks: ``loop()`` (a stop blob), ``loop(n)`` (``num_iter`` > 1),
``run_once()`` (a stop blob with ``only_once``), ``parallel()`` (concurrent substeps),
``parallel(num_instances=n)``; inside a parallel block each substep is a ``step('<name>')``
(or ``workspace('<name>')`` when it creates a workspace) block; reporters are
``reporter('<name>', interval_ms=n)`` blocks. ``yield stop_if(blob)`` follows every net or
substep of a step with a stop blob (where the executor checks it). Nested nets of control ops
are printed under ``with arg: <name>:``.

``analyze(obj)`` walks the same structure simulating which blobs exist, and raises
AssertionError for a blob read before anything defines it ("Blob undefined: <name>";
names starting with ``distributed_ctx_init`` are ignored) and for a blob created by more than
one concurrent sibling ("Error: Blobs created by multiple parallel steps: ...").
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager

from caffe2.proto.caffe2_pb2 import NetDef, OperatorDef
from caffe2.python.core import ExecutionStep, Net, Plan

__all__ = ["to_string", "analyze", "debug_net", "Printer", "Analyzer", "Text"]


def _task_module():
    # task.py imports net_builder, which core uses lazily; import task only when needed.
    from caffe2.python import task

    return task


def _is_job(obj):
    return hasattr(obj, "init_group") and hasattr(obj, "epoch_group")


def _is_instance_of_task_type(obj, name):
    task = _task_module()
    return isinstance(obj, getattr(task, name))


def _dispatch(visitor, obj, *args):
    """Call ``visitor.<kind>(obj, *args)`` for the kind of ``obj``."""
    if obj is None:
        return None
    for kind, cls in (
        ("op", OperatorDef),
        ("net_def", NetDef),
        ("net", Net),
        ("step", ExecutionStep),
        ("plan", Plan),
    ):
        if isinstance(obj, cls):
            return getattr(visitor, kind)(obj, *args)
    for kind, name in (("task", "Task"), ("task_group", "TaskGroup")):
        if _is_instance_of_task_type(obj, name):
            return getattr(visitor, kind)(obj, *args)
    if _is_job(obj):
        return visitor.job(obj, *args)
    raise TypeError(f"{type(visitor).__name__}: unsupported object type: {type(obj)}")


def _step_children(step):
    """Substeps then nets of a step (a step has only one of the two kinds)."""
    proto = step.Proto()
    return list(step.Substeps()) + [step.get_net(n) for n in proto.network]


# ---- analysis ---------------------------------------------------------------------------


class Analyzer:
    """Simulates the blob definitions of a run: one workspace (name -> definition count) per
    node, copied on entry into a private or concurrent scope."""

    PREFIXES_TO_IGNORE = {"distributed_ctx_init"}

    def __init__(self):
        self.workspaces = defaultdict(lambda: defaultdict(int))
        self.workspace_ctx = [self.workspaces["local"]]

    def __call__(self, obj, *args):
        return _dispatch(self, obj, *args)

    @property
    def workspace(self):
        return self.workspace_ctx[-1]

    @contextmanager
    def set_workspace(self, node=None, ws=None, do_copy=False):
        if ws is None:
            ws = self.workspaces[str(node)] if node is not None else self.workspace
        if do_copy:
            copied = defaultdict(int)
            copied.update(ws)
            ws = copied
        self.workspace_ctx.append(ws)
        try:
            yield ws
        finally:
            del self.workspace_ctx[-1]

    def define_blob(self, blob):
        self.workspace[str(blob)] += 1

    def need_blob(self, blob):
        blob = str(blob)
        if any(blob.startswith(p) for p in Analyzer.PREFIXES_TO_IGNORE):
            return
        assert blob in self.workspace, f"Blob undefined: {blob}"

    def op(self, op):
        for x in op.input:
            self.need_blob(x)
        for x in op.output:
            self.define_blob(x)

    def net_def(self, net_def):
        for op in net_def.op:
            self.op(op)

    def net(self, net):
        self.net_def(net.Proto())

    def step(self, step):
        proto = step.Proto()
        with self.set_workspace(do_copy=proto.create_workspace):
            if proto.report_net:
                with self.set_workspace(do_copy=True):
                    self(step.get_net(proto.report_net))
            all_new_blobs = set()
            for child in _step_children(step):
                with self.set_workspace(do_copy=proto.concurrent_substeps) as ws_in:
                    self(child)
                    if proto.should_stop_blob:
                        self.need_blob(proto.should_stop_blob)
                if proto.concurrent_substeps:
                    new_blobs = set(ws_in) - set(self.workspace)
                    both = all_new_blobs & new_blobs
                    assert not both, (
                        "Error: Blobs created by multiple parallel steps: "
                        + ", ".join(sorted(both))
                    )
                    all_new_blobs |= new_blobs
            for x in sorted(all_new_blobs):
                self.define_blob(x)

    def plan(self, plan):
        for step in plan.Steps():
            self(step)

    def task(self, task):
        step = task.get_step()
        # A plan holding the task must fit a protobuf message (64MB).
        size = len(step.Proto().SerializeToString()) + sum(
            len(n.Proto().SerializeToString()) for n in step.Nets() if n is not None
        )
        assert size < 2**26, (
            "Due to a protobuf limitation, serialized tasks must be smaller than 64Mb, "
            f"but this task has {size} bytes."
        )
        is_private = task.workspace_type() != _task_module().WorkspaceType.GLOBAL
        with self.set_workspace(do_copy=is_private):
            self(step)

    def task_group(self, tg):
        for task in tg.tasks_by_node().tasks():
            with self.set_workspace(node=task.node):
                self(task)

    def job(self, job):
        self(job.init_group)
        self(job.epoch_group)


def analyze(obj):
    """Check, without running anything, that ``obj`` (a Job, TaskGroup, Task, Plan, step or
    net) reads no blob before it is defined and that concurrent siblings do not create the
    same blob. Raises AssertionError otherwise."""
    Analyzer()(obj)


# ---- text -------------------------------------------------------------------------------


class Text:
    """Lines with an indentation level; ``context(title)`` opens a ``with title:`` block."""

    def __init__(self):
        self._indent = 0
        self._lines_in_context = [0]
        self.lines = []

    @contextmanager
    def context(self, text):
        if text is not None:
            self.add(f"with {text}:")
            self._indent += 4
            self._lines_in_context.append(0)
        try:
            yield
        finally:
            if text is not None:
                if self._lines_in_context[-1] == 0:
                    self.add("pass")
                self._indent -= 4
                del self._lines_in_context[-1]

    def add(self, text):
        self._lines_in_context[-1] += 1
        self.lines.append((" " * self._indent) + text)

    def __str__(self):
        return "\n".join(self.lines)


def _sanitize_str(s):
    if isinstance(s, bytes):
        s = s.decode("utf-8", errors="replace")
    elif not isinstance(s, str):
        s = str(s)
    if len(s) <= 64:
        return f"'{s}'"
    return f"'{s[:64]}'...<+len={len(s) - 64}>"


def _arg_val(arg):
    if arg.HasField("f"):
        return repr(arg.f)
    if arg.HasField("i"):
        return str(arg.i)
    if arg.HasField("s"):
        return _sanitize_str(arg.s)
    if arg.HasField("n"):
        return f"<net {arg.n.name}>"
    if arg.floats:
        return "[" + ", ".join(repr(f) for f in arg.floats) + "]"
    if arg.ints:
        return str(list(arg.ints))
    if arg.strings:
        return "[" + ", ".join(_sanitize_str(s) for s in arg.strings) + "]"
    if arg.nets:
        return "[" + ", ".join(f"<net {n.name}>" for n in arg.nets) + "]"
    return "[]"


def commonprefix(m):
    """The longest common prefix of a list of strings."""
    if not m:
        return ""
    s1 = min(m)
    s2 = max(m)
    for i, c in enumerate(s1):
        if c != s2[i]:
            return s1[:i]
    return s1


def _format_value(val):
    if isinstance(val, list):
        return "[" + ", ".join(f"'{v}'" for v in val) + "]"
    return str(val)


def factor_prefix(vals, do_it):
    """``a/x, a/y`` -> ``a/[x, y]`` when ``do_it`` and there are several values."""
    vals = [_format_value(v) for v in vals]
    prefix = commonprefix(vals) if len(vals) > 1 and do_it else ""
    joined = ", ".join(v[len(prefix) :] for v in vals)
    return f"{prefix}[{joined}]" if prefix else joined


def call(op, inputs=None, outputs=None, factor_prefixes=False):
    """``outputs = op(inputs)``; ``(key, value)`` tuples among the inputs are ``key=value``."""
    if not inputs:
        args = ""
    else:
        positional = [a for a in inputs if not isinstance(a, tuple)]
        keywords = [a for a in inputs if isinstance(a, tuple)]
        parts = [factor_prefix(positional, factor_prefixes)] if positional else []
        parts += [f"{k}={v}" for k, v in keywords]
        args = ", ".join(p for p in parts if p)
    text = f"{op}({args})"
    if not outputs:
        return text
    return f"{factor_prefix(list(outputs), factor_prefixes)} = {text}"


def format_device_option(dev_opt):
    if dev_opt is None or not (dev_opt.device_type or dev_opt.cuda_gpu_id or dev_opt.node_name):
        return None
    return call(
        "DeviceOption", [dev_opt.device_type, dev_opt.cuda_gpu_id, f"'{dev_opt.node_name}'"]
    )


def _print_task_output(x):
    return "Output[" + ", ".join(str(n) for n in x.names) + "]"


class Printer(Text):
    """Renders objects into lines (see the module docstring for the format)."""

    def __init__(self, factor_prefixes=False):
        super().__init__()
        self.factor_prefixes = factor_prefixes

    def __call__(self, obj, *args):
        return _dispatch(self, obj, *args)

    def op(self, op):
        args = [(a.name, _arg_val(a)) for a in op.arg]
        dev_opt_txt = format_device_option(
            op.device_option if op.HasField("device_option") else None
        )
        if dev_opt_txt:
            args.append(("device_option", dev_opt_txt))
        self.add(
            call(op.type, list(op.input) + args, op.output, factor_prefixes=self.factor_prefixes)
        )
        for arg in op.arg:
            if arg.HasField("n"):
                with self.context(f"arg: {arg.name}"):
                    self(arg.n)
            for k, n in enumerate(arg.nets):
                with self.context(f"arg: {arg.name}[{k}]"):
                    self(n)

    def net_def(self, net_def):
        self.add(f"# net: {net_def.name}")
        for op in net_def.op:
            self(op)

    def net(self, net):
        self(net.Proto())

    def _step_context(self, step):
        """(title of the step's block or None, whether children get their own blocks)."""
        proto = step.Proto()
        substeps = step.Substeps()
        if proto.should_stop_blob:
            return (call("run_once") if proto.only_once else call("loop")), False
        if proto.HasField("num_iter") and proto.num_iter != 1:
            return call("loop", [proto.num_iter]), False
        if proto.num_concurrent_instances > 1:
            title = call("parallel", [("num_instances", proto.num_concurrent_instances)])
            return title, len(substeps) > 1
        if proto.concurrent_substeps and len(substeps) > 1:
            return call("parallel"), True
        if proto.report_net:
            return call("run_once"), False
        return None, False

    def step(self, step):
        proto = step.Proto()
        step_ctx, do_substep = self._step_context(step)
        with self.context(step_ctx):
            if proto.report_net:
                with self.context(call("report_net", [proto.report_interval])):
                    self(step.get_net(proto.report_net))
            for child in _step_children(step):
                sub_proto = child.Proto() if isinstance(child, ExecutionStep) else None
                if sub_proto is not None and sub_proto.run_every_ms:
                    child_ctx = call(
                        "reporter", [f"'{child}'", ("interval_ms", sub_proto.run_every_ms)]
                    )
                elif do_substep:
                    title = (
                        "workspace"
                        if sub_proto is not None and sub_proto.create_workspace
                        else "step"
                    )
                    child_ctx = call(title, [f"'{child}'"])
                else:
                    child_ctx = None
                with self.context(child_ctx):
                    self(child)
                    if proto.should_stop_blob:
                        self.add(call("yield stop_if", [proto.should_stop_blob]))

    def plan(self, plan):
        with self.context(call("Plan", [f"'{plan}'"])):
            for step in plan.Steps():
                with self.context(call("step", [f"'{step}'"])):
                    self(step)

    def task(self, task):
        outs = ", ".join(_print_task_output(o) for o in task.outputs())
        title = call("Task", [("node", task.node), ("name", task.name), ("outputs", outs)])
        with self.context(title):
            self(task.get_step())

    def task_group(self, tg, header=None):
        with self.context(header or call("TaskGroup")):
            for task in tg.tasks_by_node().tasks():
                self(task)

    def job(self, job):
        self(job.init_group, "Job.current().init_group")
        self(job.epoch_group, "Job.current().epoch_group")
        with self.context("Job.current().stop_conditions"):
            for out in getattr(job, "stop_conditions", None) or []:
                self.add(_print_task_output(out))
        for attr in ("download_group", "exit_group"):
            group = getattr(job, attr, None)
            if group is not None:
                self(group, f"Job.current().{attr}")


def to_string(obj, **kwargs):
    """Text of a Net, NetDef, OperatorDef, ExecutionStep, Plan, Task, TaskGroup or Job.

    ``factor_prefixes=True`` writes blob lists sharing a prefix as ``prefix[a, b]``.
    """
    printer = Printer(**kwargs)
    printer(obj)
    return str(printer)


def debug_net(net):
    """A copy of ``net`` (same name, new Net) that logs each op's text before running it."""
    assert isinstance(net, Net)
    out = Net(str(net))
    for op in net.Proto().op:
        printer = Printer()
        printer.op(op)
        out.LogInfo(str(printer))
        out.Proto().op.extend([op])
    return out
