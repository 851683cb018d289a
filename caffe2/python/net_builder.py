"""NetBuilder and ``ops``: write nets, loops and conditionals as Python blocks (spec 8).

Inside ``with NetBuilder() as nb:`` every ``ops.<Op>(...)`` call appends an operator to the
builder's current net. Control flow is written with nested builders::

    with NetBuilder() as nb:
        x = ops.Const(5)
        with ops.loop():                       # a step looping until its stop blob is set
            ops.stop_if(ops.EQ([x, ops.Const(0)]))
            ops.Add([x, ops.Const(-1)], [x])
    step = core.to_execution_step(nb)

A builder's children are Nets, nested builders, ExecutionSteps or TaskGroups;
``core.to_execution_step(builder)`` turns it into a step whose networks (all children Nets) or
substeps (otherwise) run in order, looping until the builder's stop blob becomes true when it
has one. Two families of control flow exist:

- step based (``ops.loop``, ``ops.stop_if``, ``ops.stop_guard``, ``ops.If``/``Elif``/``Else``):
  compiled to execution steps with ``should_stop_blob`` (the plan executor checks the stop
  blob after every net or substep);
- op based (``ops.IfNet``/``ops.Else``, ``ops.WhileNet``/``ops.Condition``): each block is
  merged into one net holding ``If``/``While`` ops whose branches run through ``Do`` ops in
  inner workspaces (see control_ops_util). Blobs first created inside such a block are local
  to it; names visible before the block (its *lexical scope*) are read and written in place.

NAMING (spec 8.1): a builder is named ``'/'.join`` of its parent's name and its own name
(empty parts dropped), and every ``core.Net(name)`` created while a builder is active is
prefixed with the builder's name, so nets are named ``<builder>``, ``<builder>_1``...
"""

from __future__ import annotations

from caffe2.python import context, core
from caffe2.python.control_ops_util import add_if_op, add_while_op

__all__ = ["NetBuilder", "Operations", "ops"]


def _task_module():
    # task.py imports this module (Task uses a NetBuilder): import it on use, not at load.
    from caffe2.python import task

    return task


def _exit_after(builder, etype, args, base_exit, hook):
    """Run ``hook()`` on a normal exit, while ``builder`` is still the current builder, then
    ``base_exit`` (which pops the context). If the hook raises, ``base_exit`` still runs, as
    for an exception raised in the block, so a failed builder never stays current."""
    if etype is None:
        try:
            hook()
        except BaseException as e:
            base_exit(builder, type(e), e, e.__traceback__)
            raise
    return base_exit(builder, etype, *args)


def _enter_then(builder, base_enter, hook):
    """``base_enter`` (which pushes the context), then ``hook()``; if the hook raises, the
    builder is exited again before the error propagates."""
    r = base_enter(builder)
    try:
        hook()
    except BaseException as e:
        type(builder).__exit__(builder, type(e), e, e.__traceback__)
        raise
    return r


@context.define_context()
class NetBuilder:
    """Records nets and nested builders as the children of one future execution step.

    Args:
        name: this builder's own name; the full name is ``<parent name>/<name>``.
        initial_scope: extra blob names to add to the lexical scope (op-based control flow).
        _stop_blob_required: exiting normally without a stop condition is an error (loops).
        _stop_blob: an existing stop blob to use.
        _fullname: the full name to use as is (instead of ``name``).
        _use_control_ops: the builder merges its children into one net on exit (IfNet...).
    """

    def __init__(
        self,
        name=None,
        initial_scope=None,
        _stop_blob_required=False,
        _stop_blob=None,
        _fullname=None,
        _use_control_ops=False,
    ):
        parent = NetBuilder.current(required=False)
        assert not _fullname or not name, "Cannot set both _fullname and name"
        assert not _use_control_ops or (not _stop_blob_required and not _stop_blob), (
            "Stop blobs are not used with control operators"
        )
        self.name = _fullname or "/".join(n for n in (parent.name if parent else None, name) if n)
        self._frozen = False
        self._current_net = None
        self._children = []
        if parent:
            # The parent's scope must include everything its children so far use.
            parent._update_lexical_scope()
        self._init_lexical_scope = set(parent._lexical_scope) if parent else set()
        if initial_scope:
            self._init_lexical_scope |= {str(b) for b in initial_scope}
        self._lexical_scope = set(self._init_lexical_scope)
        self._stop_blob = _stop_blob
        self._stop_blob_required = _stop_blob_required
        self._use_control_ops = _use_control_ops

    # ---- stop blob ----------------------------------------------------------------------

    def stop_blob(self):
        """The bool blob that ends this builder's step when true, created on first use.

        It is named ``<current net>/stop_blob[_k]`` and set to False in the current net; if
        that net is not the first child, a net ``stop_blob_init`` placed first also sets it,
        so the blob exists and is false when the step is compiled and starts.
        """
        assert not self._use_control_ops, "Stop blobs are not used with control operators"
        if self._stop_blob is None:
            net = self.current_net()
            self._stop_blob = core.BlobReference(net.NextName("stop_blob"), net=net)
            net.Const(False, blob_out=self._stop_blob)
            if self._current_net is not self._children[0]:
                self._children.insert(0, core.Net("stop_blob_init"))
                self._children[0].Const(False, blob_out=self._stop_blob)
        return self._stop_blob

    def stop_if(self, blob):
        """OR ``blob`` into the stop blob; the following ops go into a new net."""
        assert not self._use_control_ops, "Stop blobs are not used with control operators"
        stop_blob = self.stop_blob()
        ops.Or([stop_blob, blob], [stop_blob])
        self._current_net = None

    # ---- children -----------------------------------------------------------------------

    def _assert_mutable(self):
        assert not self._frozen, f"This NetBuilder ({self.name}) has been built already."

    def _update_lexical_scope(self):
        """Recompute the blob names visible at this point: the initial scope, every blob used
        by a child Net, and the scope of each control-ops child builder."""
        scope = set(self._init_lexical_scope)
        for child in self._children:
            if isinstance(child, core.Net):
                scope |= child.UsedBlobNames()
            elif isinstance(child, NetBuilder) and child._use_control_ops:
                scope |= child._lexical_scope
        self._lexical_scope = scope

    def _reset_children(self):
        self._current_net = None
        self._children = []
        self._lexical_scope = set(self._init_lexical_scope)

    def add(self, child):
        """Append a child (Net, NetBuilder, ExecutionStep, TaskGroup); a Net becomes current."""
        self._assert_mutable()
        if self._use_control_ops:
            assert isinstance(child, core.Net) or (
                isinstance(child, NetBuilder) and child._use_control_ops
            ), "Expected Net or NetBuilder with control ops"
        self._current_net = None
        self._children.append(child)
        if isinstance(child, core.Net):
            self._current_net = child
        self._update_lexical_scope()
        return child

    def current_net(self, name=None):
        """The net ops are appended to; a new one is added if there is none or name is given."""
        self._assert_mutable()
        if self._current_net is None or name is not None:
            self.add(core.Net(name))
        return self._current_net

    def freeze(self):
        for child in self._children:
            if hasattr(child, "freeze"):
                child.freeze()
        self._current_net = None
        self._frozen = True

    def get(self):
        """Freeze the builder and return its children."""
        self.freeze()
        return self._children

    def __exit__(self, etype, *args):
        # Runs after the context stack was popped (context.define_context).
        if etype is None and self._use_control_ops and len(self._children) > 0:
            children = self._children
            self._reset_children()
            merged_net = NetBuilder.merge_nets(children, self._lexical_scope)
            assert merged_net, "Expected a non-empty merge of children"
            self._children = [merged_net]
        self.freeze()
        if etype is not None:
            return
        assert (not self._stop_blob_required) or self._stop_blob is not None, (
            f"This NetBuilder ({self.name}) requires a stop condition to be set with "
            "`stop` or `stop_if`"
        )

    @staticmethod
    def merge_nets(nets_or_builders, outer_blob_names):
        """Append every net (or control-ops builder's single net) to the first one.

        The first net is modified in place and returned (None for an empty list). Its
        external outputs are then cut down to the names in ``outer_blob_names``: a blob an
        inner block exported may be local to this one.
        """
        net = None
        for n in nets_or_builders:
            if isinstance(n, NetBuilder):
                assert n._use_control_ops, "Merging of NetBuilder supported only for control ops"
                nets = n.get()
                assert len(nets) == 1 and isinstance(nets[0], core.Net), (
                    "Invalid control op net builder"
                )
                cur = nets[0]
            else:
                assert isinstance(n, core.Net), f"Cannot merge {type(n).__name__} into a net"
                cur = n
            if net is not None:
                net.AppendNet(cur)
            else:
                net = cur
        if net is not None:
            proto = net.Proto()
            kept = [o for o in proto.external_output if o in outer_blob_names]
            del proto.external_output[:]
            proto.external_output.extend(kept)
        return net

    def __str__(self):
        return self.name or "Un-named NetBuilder"

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"


class Operations:
    """The ``ops`` object: operator calls and control-flow blocks on the active NetBuilder."""

    def net(self, net=None, name=None):
        """Add ``net`` to the active builder (it becomes current) and return it; without it,
        return the current net, creating one (named ``name`` if given) as needed."""
        assert name is None or net is None, "Cannot provide both `net` and `name`."
        if net is not None:
            NetBuilder.current().add(net)
            return net
        return NetBuilder.current().current_net(name=name)

    def __getattr__(self, op_type):
        """``ops.X`` is ``getattr(current net, 'X')``: operators, Const, Python, NextName..."""
        if op_type.startswith("__"):
            raise AttributeError(op_type)
        # hasattr(ops, ...) must work without an active builder.
        if NetBuilder.current(required=False) is None:
            raise AttributeError("No active NetBuilder.")
        return getattr(self.net(), op_type)

    def task_group(self):
        """A local TaskGroup (on node 'local' of a new Cluster), added as the next child."""
        task = _task_module()
        builder = NetBuilder.current()
        with task.Cluster():
            with task.Node("local"):
                tg = task.TaskGroup()
                builder.add(tg)
                return tg

    def stop(self):
        """Stop the current builder's step here: nothing after this point runs."""
        return self.stop_if(ops.Const(True))

    def stop_if(self, blob):
        """Stop the current builder's step here if the scalar bool ``blob`` is true."""
        return NetBuilder.current().stop_if(blob)

    def loop(self, iters=None, name=None):
        """A block run repeatedly: ``iters`` times (int or blob) or until ``stop``/``stop_if``."""
        return NetBuilder.current().add(_Loop(iters, name=name))

    def stop_guard(self, has_stopped_blob=None, name=None):
        """A block run once; ``has_stopped()`` tells whether a stop ended it early."""
        return NetBuilder.current().add(_StopGuard(has_stopped_blob=has_stopped_blob, name=name))

    def If(self, cond, name=None):
        """A block run once if the scalar bool ``cond`` is true (steps with stop blobs)."""
        return NetBuilder.current().add(_RunIf(cond, name=name))

    def IfNet(self, cond, name=None):
        """Like If, compiled into an ``If`` operator."""
        return NetBuilder.current().add(_RunIfNet(cond, name=name))

    def Else(self, name=None):
        """The else branch of the IfNet block just before it."""
        return _RunElseNet(name=name)

    def WhileNet(self, name=None):
        """A loop compiled into a ``While`` operator; starts with an ``ops.Condition()`` block."""
        return NetBuilder.current().add(_RunWhileNet(name=name))

    def Condition(self, name=None):
        """The condition block of a WhileNet: its last op writes the scalar bool condition."""
        assert isinstance(NetBuilder.current(), _RunWhileNet), (
            "Use of Condition outside of WhileNet"
        )
        return _RunWhileCondition(name=name)

    def _setup(self, key_attr, kind, name=None):
        setup = _SetupBuilder(kind, name)
        self.net().add_attribute(key_attr, setup)
        return setup

    def task_init(self):
        """Ops run once when the task starts, before all its instances."""
        return self._setup(_task_module().Task.TASK_SETUP, _SetupBuilder.INIT)

    def task_exit(self):
        """Ops run once when the task ends, after all its instances."""
        return self._setup(_task_module().Task.TASK_SETUP, _SetupBuilder.EXIT)

    def task_instance_init(self):
        """Ops run when each instance of the task starts (in the instance's workspace)."""
        return self._setup(_task_module().Task.TASK_INSTANCE_SETUP, _SetupBuilder.INIT)

    def task_instance_exit(self):
        """Ops run when each instance of the task ends."""
        return self._setup(_task_module().Task.TASK_INSTANCE_SETUP, _SetupBuilder.EXIT)

    def local_init(self):
        """Ops run once per node before the tasks of the TaskGroup on that node."""
        return self._setup(_task_module().TaskGroup.LOCAL_SETUP, _SetupBuilder.INIT)

    def local_exit(self, name=None):
        """Ops run once per node after the tasks of the TaskGroup on that node."""
        return self._setup(_task_module().TaskGroup.LOCAL_SETUP, _SetupBuilder.EXIT, name)

    def task_reporter(self, interval_ms=1000, name=None):
        """A block run every ``interval_ms`` while the task runs (and once at its end)."""
        return _ReporterBuilder(interval_ms, net=self.net(), name=name)

    def local_reporter(self, interval_ms=1000, name=None):
        """A block run every ``interval_ms`` on the node while the current TaskGroup runs."""
        return _ReporterBuilder(interval_ms, name=name)


ops = Operations()


class _ReporterBuilder(NetBuilder):
    def __init__(self, interval_ms, net=None, name=None):
        NetBuilder.__init__(self, name)
        self._net = net
        self.interval_ms = interval_ms

    def __exit__(self, etype, *args):
        return _exit_after(self, etype, args, NetBuilder.__exit__, self._register_report_step)

    def _register_report_step(self):
        task = _task_module()
        step = core.to_execution_step(self)
        step.RunEveryMillis(self.interval_ms)
        if self._net:
            self._net.add_attribute(task.Task.REPORT_STEP, step)
        else:
            task.TaskGroup.current().report_step(step, interval_ms=self.interval_ms)


class _SetupBuilder(NetBuilder):
    """Nets run as a separate step by the task or node setup (task.get_setup_nets)."""

    INIT = "init"
    EXIT = "exit"

    def __init__(self, type, name=None):
        NetBuilder.__init__(self, name)
        self.type = type

    def setup(self, net):
        if self.type == _SetupBuilder.INIT:
            return core.to_execution_step(self)
        return None

    def exit(self, net):
        if self.type == _SetupBuilder.EXIT:
            return core.to_execution_step(self)
        return None


class _RunOnce(NetBuilder):
    """A block that runs once even if it uses stop_if: it ends with ``ops.stop()``."""

    def __init__(self, name=None):
        NetBuilder.__init__(self, name)

    def __exit__(self, etype, *args):
        return _exit_after(self, etype, args, NetBuilder.__exit__, self._stop_at_end)

    def _stop_at_end(self):
        if self._stop_blob is not None:
            ops.stop()


class _StopGuard(_RunOnce):
    def __init__(self, has_stopped_blob=None, name=None):
        _RunOnce.__init__(self, name)
        self._stopped = has_stopped_blob
        self._ran = False

    def __enter__(self):
        return _enter_then(self, _RunOnce.__enter__, self._set_stopped)

    def _set_stopped(self):
        self._stopped = ops.Const(True, blob_out=self._stopped)

    def __exit__(self, etype, *args):
        return _exit_after(self, etype, args, _RunOnce.__exit__, self._reached_end)

    def _reached_end(self):
        self._ran = True
        ops.Const(False, blob_out=self._stopped)

    def has_stopped(self):
        """Scalar bool blob, True after the run iff the block was stopped before its end."""
        assert self._ran, "Context not used yet."
        return self._stopped


class _Loop(NetBuilder):
    def __init__(self, iters=None, name=None):
        NetBuilder.__init__(self, name, _stop_blob_required=True)
        self._iter = None
        if iters is not None:
            # In the parent's current net: re-initialized each time the parent runs it.
            self._inc = ops.Const(1)
            self._iter = ops.Const(0)
            self._num_iters = iters if isinstance(iters, core.BlobReference) else ops.Const(iters)
        else:
            self._num_iters = None

    def iter(self):
        """The iteration counter blob (int64 scalar, 0 in the first iteration)."""
        assert self._num_iters is not None, "This loop does not have a number of iterations."
        assert self._iter is not None, "iter() must be called from inside the loop context"
        return self._iter

    def __enter__(self):
        return _enter_then(self, NetBuilder.__enter__, self._stop_after_last_iter)

    def _stop_after_last_iter(self):
        if self._num_iters is not None:
            ops.stop_if(ops.GE([self._iter, self._num_iters]))

    def __exit__(self, etype, *args):
        return _exit_after(self, etype, args, NetBuilder.__exit__, self._increment_iter)

    def _increment_iter(self):
        if self._num_iters is not None:
            self.current_net().Add([self._iter, self._inc], [self._iter])


class _RunIf(_RunOnce):
    def __init__(self, cond_blob=None, name=None, _already_ran=None):
        _RunOnce.__init__(self, name)
        assert cond_blob or _already_ran
        self._is_else = cond_blob is None
        if _already_ran is None:
            self._else_blob = ops.Not(cond_blob)
            self._already_ran = ops.Const(False)
        else:
            self._already_ran = _already_ran
            if cond_blob:
                not_cond_blob = ops.Not(cond_blob)
                self._else_blob = ops.Or([self._already_ran, not_cond_blob])
            else:
                self._else_blob = self._already_ran

    def __enter__(self):
        return _enter_then(self, _RunOnce.__enter__, self._skip_unless_chosen)

    def _skip_unless_chosen(self):
        ops.stop_if(self._else_blob)
        ops.Const(True, blob_out=self._already_ran)

    def Elif(self, cond, name=None):
        # The two messages are swapped as in Caffe2.
        assert not self._is_else, "Else not allowed for an Else."
        return NetBuilder.current().add(
            _RunIf(cond, name=name or self.name, _already_ran=self._already_ran)
        )

    def Else(self, name=None):
        assert not self._is_else, "Elif not allowed for an Else."
        return NetBuilder.current().add(
            _RunIf(name=name or self.name, _already_ran=self._already_ran)
        )


class _RunIfNet(NetBuilder):
    """A block compiled into one net: ``CreateScope`` + ``If`` running the block via ``Do``."""

    def __init__(self, cond_blob, name=None):
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        assert cond_blob, "Conditional blob is not specified for an If net"
        self._cond_blob = cond_blob
        self._then_net = None
        self._else_net = None

    def __exit__(self, etype, *args):
        return _exit_after(self, etype, args, NetBuilder.__exit__, self._build_if_net)

    def _build_if_net(self):
        then_nets = self._children
        self._reset_children()
        self._then_net = NetBuilder.merge_nets(then_nets, self._lexical_scope)
        if not self._then_net:
            self._then_net = core.Net("empty_then_net")
        if_net = core.Net(self.name + "/if_net")
        add_if_op(if_net, self._cond_blob, self._lexical_scope, self._then_net, self._else_net)
        self._current_net = if_net
        self._children = [if_net]


class _RunElseNet(NetBuilder):
    """Else branch of the IfNet block that is the parent's last child."""

    def __init__(self, name=None):
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        parent = NetBuilder.current(required=False)
        assert (
            parent and len(parent._children) > 0 and isinstance(parent._children[-1], _RunIfNet)
        ), "Invalid use of Else builder"
        self._if_builder = parent._children[-1]

    def __exit__(self, etype, *args):
        return _exit_after(self, etype, args, NetBuilder.__exit__, self._build_if_else_net)

    def _build_if_else_net(self):
        else_nets = self._children
        self._reset_children()
        if_builder = self._if_builder
        if_builder._else_net = NetBuilder.merge_nets(else_nets, self._lexical_scope)
        if if_builder._else_net:
            if_else_net = core.Net(self.name + "/if_else_net")
            add_if_op(
                if_else_net,
                if_builder._cond_blob,
                self._lexical_scope,
                if_builder._then_net,
                if_builder._else_net,
            )
            if_builder._current_net = if_else_net
            if_builder._children = [if_else_net]


class _RunWhileNet(NetBuilder):
    """A loop compiled into one net: ``CreateScope`` ops + ``While`` running body and
    condition via ``Do`` ops."""

    def __init__(self, name=None):
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        self._cond_builder = None

    def __exit__(self, etype, *args):
        return _exit_after(self, etype, args, NetBuilder.__exit__, self._build_while_net)

    def _build_while_net(self):
        assert self._cond_builder, "Condition builder must be specified in While op"
        cond_blob = self._cond_builder._cond_blob
        cond_net = self._cond_builder._cond_net
        loop_body = self._children
        self._reset_children()
        loop_body_net = NetBuilder.merge_nets(loop_body, self._lexical_scope)
        if not loop_body_net:
            loop_body_net = core.Net("empty_loop_body_net")
        while_net = core.Net(self.name + "/while_net")
        add_while_op(while_net, cond_blob, self._lexical_scope, loop_body_net, cond_net)
        self._current_net = while_net
        self._children = [while_net]


class _RunWhileCondition(NetBuilder):
    """The condition block of a WhileNet. Its last op must have one output: the condition."""

    def __init__(self, name=None):
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        parent = NetBuilder.current(required=False)
        assert parent and isinstance(parent, _RunWhileNet), "Invalid use of loop condition builder"
        assert not parent._cond_builder, "Multiple loop condition builders specified"
        assert len(parent._children) == 0, (
            "Condition definition must be specified before the loop's body"
        )
        parent._cond_builder = self
        self._cond_blob = None
        self._cond_net = None

    def __exit__(self, etype, *args):
        return _exit_after(self, etype, args, NetBuilder.__exit__, self._build_condition_net)

    def _build_condition_net(self):
        condition_body = self._children
        self._reset_children()
        self._cond_net = NetBuilder.merge_nets(condition_body, self._lexical_scope)
        assert self._cond_net, "Invalid loop condition specified"
        assert len(self._cond_net.Proto().op) > 0, "Invalid condition net"
        last_op = self._cond_net.Proto().op[-1]
        assert len(last_op.output) == 1, "Invalid condition net"
        self._cond_blob = core.BlobReference(name=last_op.output[0], net=None)
        self._current_net = self._cond_net
        self._children = [self._cond_net]
