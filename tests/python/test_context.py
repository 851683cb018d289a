"""caffe2.python.context: thread-local context stacks (spec runtime.md 4.1)."""

import threading

import pytest

from caffe2.python import context


@context.define_context()
class Ctx:
    def __init__(self, name="c"):
        self.name = name


@context.define_context(allow_default=True)
class DefaultCtx:
    created = 0

    def __init__(self):
        DefaultCtx.created += 1


class SubCtx(Ctx):
    pass


@context.define_context()
class WithHooks:
    def __init__(self):
        self.log = []

    def __enter__(self):
        self.log.append(("enter", WithHooks.current(required=False)))

    def __exit__(self, *args):
        self.log.append(("exit", WithHooks.current(required=False), args[0]))


def test_current_and_nesting():
    assert Ctx.current(required=False) is None
    a, b = Ctx("a"), Ctx("b")
    with a as entered:
        assert entered is a
        assert Ctx.current() is a
        with b:
            assert Ctx.current() is b
        assert Ctx.current() is a
    assert Ctx.current(required=False) is None


def test_required_without_default_asserts():
    with pytest.raises(AssertionError, match="is required but none is active"):
        Ctx.current()


def test_value_is_type_checked():
    c = Ctx()
    assert Ctx.current(c) is c
    with pytest.raises(AssertionError, match="Wrong context type"):
        Ctx.current(DefaultCtx())


def test_allow_default_pushes_permanently_per_thread():
    before = DefaultCtx.created
    d = DefaultCtx.current()
    assert DefaultCtx.current() is d
    assert DefaultCtx.created == before + 1
    with DefaultCtx() as inner:
        assert DefaultCtx.current() is inner
    assert DefaultCtx.current() is d

    seen = []
    t = threading.Thread(target=lambda: seen.append(DefaultCtx.current()))
    t.start()
    t.join()
    assert seen[0] is not d


def test_stacks_are_thread_local():
    seen = []
    with Ctx("main"):
        t = threading.Thread(target=lambda: seen.append(Ctx.current(required=False)))
        t.start()
        t.join()
    assert seen == [None]


def test_subclass_shares_parent_stack():
    s = SubCtx("s")
    with s:
        assert Ctx.current() is s
        assert SubCtx.current() is s
    with pytest.raises(AssertionError, match="already defines context"):
        context.define_context()(SubCtx)


def test_reregistering_asserts():
    class Fresh:
        pass

    context.define_context()(Fresh)
    with pytest.raises(AssertionError):
        context._context_registry().register(context.ContextInfo(Fresh, False))


def test_own_enter_exit_hooks_run_around_the_push():
    w = WithHooks()
    with w:
        assert WithHooks.current() is w
    # the class's __enter__ runs before the push, its __exit__ after the pop
    assert w.log == [("enter", None), ("exit", None, None)]


def test_exit_must_pop_self():
    a, b = Ctx("a"), Ctx("b")
    a.__enter__()
    with pytest.raises(AssertionError):
        b.__exit__(None, None, None)
    # a is gone from the stack after the failed exit (it was popped)
    assert Ctx.current(required=False) is None


def test_exception_unwinds_contexts_that_failed_to_pop():
    class Leaky(Ctx):
        def __exit__(self, *args):
            raise ValueError("inner exit failed")  # never reaches the generic exit

    outer = Ctx("outer")
    with pytest.raises(ValueError, match="inner exit failed"):
        with outer:
            with Leaky("leaky"):
                pass
    assert Ctx.current(required=False) is None


def test_mismatched_exit_without_exception_still_asserts():
    a, b = Ctx("a"), Ctx("b")
    a.__enter__()
    b.__enter__()
    with pytest.raises(AssertionError, match="exited"):
        a.__exit__(None, None, None)
    Ctx.current()  # a is still on the stack
    a.__exit__(None, None, None)
    assert Ctx.current(required=False) is None


def test_instance_as_decorator():
    c = Ctx("deco")

    @c
    def f(x):
        return Ctx.current(), x

    assert f(3) == (c, 3)
    assert Ctx.current(required=False) is None
