"""The plan executor: runs a PlanDef's execution steps in a workspace (spec runtime.md 2.5).

It is an interpreter in two stages. ``PlanRun.compile`` turns one ExecutionStep into a
``CompiledStep``: nets instantiated and bound to their ``run`` methods, substeps wrapped (and
compiled now, unless they create a workspace), the stop blob resolved to its Blob object and
the continuation test reduced to an iteration limit plus the external test. ``PlanRun.execute``
then runs a compiled step with one method per kind (nets, sequential substeps, concurrent
substeps); the iteration rule is ``_iterations`` and the stop rule ``_should_stop``, each written
once.

Concurrency uses Python threads: a concurrent iteration starts one thread per recurring substep
and instance, and joins them all before it returns or raises. Reporter threads (report_net and
``run_every_ms`` substeps) are stopped and joined on every return path of the step that started
them. Every thread this module starts is joined before the call that started it returns.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from caffe2.proto import caffe2_pb2
from caffe2.runtime.blob import Blob, describe, type_name
from caffe2.runtime.errors import EnforceError

log = logging.getLogger("caffe2")

NODE_ID = "NODE_ID"
GLOBAL_WORKSPACE_ID = "GLOBAL_WORKSPACE_ID"
_MAX_WORKSPACE_SEQ = 1 << 16

ShouldContinue = Callable[[int], bool]


def run_plan(
    ws: Any, plan: caffe2_pb2.PlanDef, should_continue: ShouldContinue | None = None
) -> bool:
    """Run every top-level step of plan in ws, in order (Caffe2's RunPlanOnWorkspace).

    should_continue(iteration) -> bool is consulted before every iteration of every step (None:
    always continue). Returns False when a top-level step returns False; errors raise.
    """
    if should_continue is not None and not callable(should_continue):
        raise TypeError(f"should_continue must be a callable or None, not {type(should_continue)}")
    if len(plan.execution_step) == 0:
        log.warning("Nothing to run - did you define a correct plan?")
        return True
    run = PlanRun(ws, plan)
    top = Continuation(should_continue, ())
    t_plan = time.perf_counter()
    for step in plan.execution_step:
        t_step = time.perf_counter()
        wrapper = StepWrapper(run, step, ws, top, _step_name(step))
        if not run.execute(wrapper):
            log.error("Failed initializing step %s", step.name)
            return False
        log.debug("Step %s took %.6f seconds.", step.name, time.perf_counter() - t_step)
    log.debug("Total plan took %.6f seconds.", time.perf_counter() - t_plan)
    return True


class Continuation:
    """The external continuation test a step receives.

    It is the plan's should_continue, AND "no failure yet" for each owner: the concurrent
    ancestors (Caffe2 wraps the external test in ``!gotFailure && ...`` for the children of a
    concurrent step), and the PlanRun itself for steps run by worker or reporter threads, so
    that an interrupted caller can stop them. ``trivial`` means it always holds, which lets
    loops skip the call.
    """

    __slots__ = ("fn", "owners", "trivial")

    def __init__(self, fn: ShouldContinue | None, owners: tuple[Any, ...]) -> None:
        self.fn = fn
        self.owners = owners
        self.trivial = fn is None and not owners

    def __call__(self, iteration: int) -> bool:
        for owner in self.owners:
            if owner.got_failure:
                return False
        return self.fn is None or bool(self.fn(iteration))

    def guarded_by(self, owner: Any) -> Continuation:
        """This test AND not owner.got_failure."""
        if owner in self.owners:
            return self
        return Continuation(self.fn, self.owners + (owner,))


class CompiledStep:
    """One ExecutionStep compiled in one workspace: what the executor interprets."""

    __slots__ = (
        "step", "path", "ws", "cont", "limit", "runner", "runs", "recurring", "reporters",
        "instances", "stop_blob", "stop_name", "report_net", "report_interval", "got_failure",
    )  # fmt: skip

    def __init__(self, step: caffe2_pb2.ExecutionStep, path: str, ws: Any, cont: Continuation):
        self.step = step
        self.path = path
        self.ws = ws
        self.cont = cont
        self.limit: int | None = 1  # iterations allowed by the step itself; None: unbounded
        self.runner: Callable[[CompiledStep], bool] | None = None
        self.runs: tuple[Callable[[], bool], ...] = ()
        self.recurring: list[StepWrapper] = []
        self.reporters: list[StepWrapper] = []
        self.instances = 1
        self.stop_blob: Blob | None = None
        self.stop_name = ""
        self.report_net: Any = None
        self.report_interval = 0.0
        # Set by a failed concurrent worker; never reset (a step compiled once stays failed).
        self.got_failure = False


class StepWrapper:
    """A step and where it runs; compiled once now, or afresh per execution (create_workspace)."""

    __slots__ = ("run", "step", "ws", "cont", "path", "_compiled")

    def __init__(
        self, run: PlanRun, step: caffe2_pb2.ExecutionStep, ws: Any, cont: Continuation, path: str
    ) -> None:
        self.run = run
        self.step = step
        self.ws = ws
        self.cont = cont
        self.path = path
        self._compiled = None if step.create_workspace else run.compile(step, ws, cont, path)

    def compiled(self) -> CompiledStep:
        cs = self._compiled
        if cs is not None:
            return cs
        child = self.ws.child()
        self.run.inject_workspace_id(child, self.path)
        return self.run.compile(self.step, child, self.cont, self.path)


def _step_name(step: caffe2_pb2.ExecutionStep) -> str:
    return step.name or "(unnamed)"


def _error(msg: str, path: str, blob: str | None = None) -> EnforceError:
    err = EnforceError(msg, f"step '{path}'", blob)
    err.caffe2_step = path
    return err


def _mark(exc: BaseException, path: str) -> None:
    """Remember the innermost step an exception came out of, and show it in the traceback."""
    if getattr(exc, "caffe2_step", None) is None:
        try:
            exc.caffe2_step = path
            exc.add_note(f"(raised in plan step '{path}')")
        except (AttributeError, TypeError):
            pass


def _iterations(cs: CompiledStep) -> Iterable[Any]:
    """The iterations of a step: while external(i) and own(i), as Caffe2 evaluated them."""
    cont, limit = cs.cont, cs.limit
    if cont.trivial:
        return itertools.count() if limit is None else itertools.repeat(None, limit)
    return _guarded_iterations(cont, limit)


def _guarded_iterations(cont: Continuation, limit: int | None) -> Iterator[int]:
    i = 0
    while cont(i) and (limit is None or i < limit):
        yield i
        i += 1


_BOOL = np.dtype(np.bool_)
_START_GRACE = 5.0  # seconds a thread whose start() was interrupted gets to show it runs


def _should_stop(cs: CompiledStep) -> bool:
    """The stop blob's value: False while it is empty, else it must be a 1-element bool tensor."""
    v = cs.stop_blob.value
    if v is None:
        return False
    if not isinstance(v, np.ndarray):
        raise _error(
            f"wrong type for the Blob instance. Blob contains {type_name(v)} while caller "
            f"expects Tensor (should_stop_blob {cs.stop_name})",
            cs.path,
            cs.stop_name,
        )
    if v.dtype != _BOOL or v.size != 1:
        raise _error(
            f"expects a scalar boolean: should_stop_blob {cs.stop_name} holds {describe(v)}",
            cs.path,
            cs.stop_name,
        )
    return bool(v.item())


class PlanRun:
    """The state of one run_plan call: the plan's nets and the workspace-id sequence.

    ``got_failure`` is set when the caller is interrupted (KeyboardInterrupt) while it waits
    for threads: every step running in a worker or reporter thread then stops at its next
    iteration, so the wait ends.
    """

    def __init__(self, ws: Any, plan: caffe2_pb2.PlanDef) -> None:
        self.ws = ws
        self.plan_name = plan.name
        self.net_defs: dict[str, caffe2_pb2.NetDef] = {}
        self.needs_override: dict[str, bool] = {}
        for nd in plan.network:
            if nd.name in self.net_defs:
                raise EnforceError(
                    f'Your plan contains networks of the same name "{nd.name}", which should '
                    "not happen. Check your plan to see if you made a programming error in "
                    "creating the plan.",
                    f"plan '{plan.name}'",
                )
            self.net_defs[nd.name] = nd
            self.needs_override[nd.name] = ws.get_net(nd.name) is not None
        self._lock = threading.Lock()
        self._ws_seq = 0
        self.got_failure = False

    # ---- compilation ---------------------------------------------------------------------
    def inject_workspace_id(self, ws: Any, path: str) -> None:
        """Give a fresh child workspace GLOBAL_WORKSPACE_ID = seq + (NODE_ID << 16)."""
        node = ws.get_blob(NODE_ID)
        if node is None:
            return
        v = node.value
        if not (isinstance(v, np.ndarray) and v.dtype == np.int32 and v.size >= 1):
            raise _error(
                f"blob {NODE_ID} must hold an int32 tensor with at least one element, but it "
                f"holds {describe(v)}",
                path,
                NODE_ID,
            )
        node_id = int(v.reshape(-1)[0])
        with self._lock:
            if self._ws_seq >= _MAX_WORKSPACE_SEQ:
                raise _error(f"Integer overflow while calculating {GLOBAL_WORKSPACE_ID} blob", path)
            seq = self._ws_seq
            self._ws_seq += 1
        wid = (seq + (node_id << 16) + (1 << 31)) % (1 << 32) - (1 << 31)  # int32 wrap-around
        ws.create_local_blob(GLOBAL_WORKSPACE_ID).value = np.array(wid, dtype=np.int32)

    def create_and_get_net(
        self, ws: Any, name: str, step: caffe2_pb2.ExecutionStep, path: str
    ) -> Any:
        """The plan's net `name` instantiated in ws (created on first use per workspace)."""
        nd = self.net_defs.get(name)
        if nd is None:
            raise _error(f"ExecutionStep {step.name} uses undefined net {name}", path)
        with self._lock:
            # QUIRK (spec 2.5): needs_override is per plan, not per workspace, so a first use
            # in a child workspace clears it and the parent keeps its pre-existing net.
            if self.needs_override[name] or ws.get_net(name) is None:
                ws.create_net(nd, overwrite=True)
                self.needs_override[name] = False
            net = ws.get_net(name)
        if net is None:
            raise _error(f"Network {name} not found.", path)
        return net

    def compile(
        self, step: caffe2_pb2.ExecutionStep, ws: Any, cont: Continuation, path: str
    ) -> CompiledStep:
        """Compile step in ws, in Caffe2's order (so errors surface in the same order)."""
        try:
            return self._compile(step, ws, cont, path)
        except BaseException as e:
            _mark(e, path)
            raise

    def _compile(
        self, step: caffe2_pb2.ExecutionStep, ws: Any, cont: Continuation, path: str
    ) -> CompiledStep:
        if len(step.substep) and len(step.network):
            raise _error(
                "An ExecutionStep should either have substep or networksbut not both.", path
            )
        cs = CompiledStep(step, path, ws, cont)
        n_sub = len(step.substep)
        if n_sub:
            concurrent = step.concurrent_substeps and n_sub > 1
            has_instances = step.HasField("num_concurrent_instances")
            sequential = not concurrent and (
                not has_instances or step.num_concurrent_instances <= 1
            )
            child_cont = cont.guarded_by(cs) if concurrent else cont
            threaded_cont = child_cont.guarded_by(self)
            for sub in step.substep:
                sub_path = f"{path}/{_step_name(sub)}"
                if sub.HasField("run_every_ms"):
                    cs.reporters.append(StepWrapper(self, sub, ws, threaded_cont, sub_path))
                else:
                    sub_cont = child_cont if sequential else threaded_cont
                    cs.recurring.append(StepWrapper(self, sub, ws, sub_cont, sub_path))
            cs.instances = max(step.num_concurrent_instances, 0) if has_instances else 1
            cs.runner = self._run_sequential if sequential else self._run_concurrent
        else:
            nets = [self.create_and_get_net(ws, n, step, path) for n in step.network]
            cs.runs = tuple(net.run for net in nets)
            cs.runner = self._run_nets
        if step.HasField("should_stop_blob"):
            cs.stop_name = step.should_stop_blob
            cs.stop_blob = ws.get_blob(cs.stop_name)
            if cs.stop_blob is None:
                raise _error(f"blob {cs.stop_name} does not exist", path, cs.stop_name)
        if step.HasField("report_net"):
            if not step.HasField("report_interval"):
                raise _error("A report_interval must be provided if report_net is set.", path)
            cs.report_net = self.create_and_get_net(ws, step.report_net, step, path)
            cs.report_interval = max(step.report_interval, 0)
        if cs.stop_blob is not None:
            if step.HasField("num_iter"):
                raise _error("Must not specify num_iter if should_stop_blob is set", path)
            cs.limit = 1 if step.only_once else None
        else:
            if step.HasField("only_once"):
                raise _error("not supported: only_once needs a should_stop_blob", path)
            cs.limit = step.num_iter if step.HasField("num_iter") else 1
        reads_stop = cs.runs or cs.recurring or cs.runner == self._run_concurrent
        if cs.limit is None and cont.fn is None and not reads_stop:
            # Caffe2 spins here until a signal: the stop blob is only read after a net or a
            # recurring substep, and this step has none. Refuse rather than hang.
            raise _error(
                f"step would never finish: it has should_stop_blob {cs.stop_name} but no "
                "network or recurring substep after which to check it",
                path,
                cs.stop_name,
            )
        return cs

    # ---- execution -----------------------------------------------------------------------
    def execute(self, wrapper: StepWrapper) -> bool:
        """Run one step to completion (Caffe2's ExecuteStepRecursive)."""
        cs = wrapper._compiled
        if cs is None:
            cs = wrapper.compiled()
        if cs.report_net is None and not cs.reporters:
            try:
                return cs.runner(cs)
            except BaseException as e:
                _mark(e, cs.path)
                raise
        reporters = self._start_reporters(cs)
        try:
            return cs.runner(cs)
        except BaseException as e:
            _mark(e, cs.path)
            raise
        finally:
            reporters.stop()

    def _run_nets(self, cs: CompiledStep) -> bool:
        runs = cs.runs
        iterations = _iterations(cs)
        if cs.stop_blob is None:
            if len(runs) == 1:
                run = runs[0]
                for _ in iterations:
                    if not run():
                        return False
                return True
            for _ in iterations:
                for run in runs:
                    if not run():
                        return False
            return True
        for _ in iterations:
            for run in runs:
                if not run():
                    return False
                if _should_stop(cs):
                    return True
        return True

    def _run_sequential(self, cs: CompiledStep) -> bool:
        execute = self.execute
        subs = cs.recurring
        check_stop = cs.stop_blob is not None
        for _ in _iterations(cs):
            for w in subs:
                if not execute(w):
                    return False
                if check_stop and _should_stop(cs):
                    return True
        return True

    def _run_concurrent(self, cs: CompiledStep) -> bool:
        n_threads = len(cs.recurring) * cs.instances
        check_stop = cs.stop_blob is not None
        for _ in _iterations(cs):
            first_error = self._run_workers(cs, n_threads) if n_threads else None
            if cs.got_failure:
                log.error("One of the workers failed.")
                if first_error is not None:
                    raise _worker_error(cs, first_error) from first_error
                return False
            if check_stop and _should_stop(cs):
                return True
        return True

    def _run_workers(self, cs: CompiledStep, n_threads: int) -> BaseException | None:
        """One concurrent iteration: n_threads workers over the recurring substeps, joined."""
        subs = cs.recurring
        counter = itertools.count()
        lock = threading.Lock()
        errors: list[BaseException] = []

        def worker() -> None:
            with lock:
                k = next(counter)
            if cs.got_failure:
                return
            try:
                if not self.execute(subs[k % len(subs)]):
                    cs.got_failure = True
            except BaseException as e:
                log.error("Parallel worker exception: %s", e, exc_info=True)
                with lock:
                    errors.append(e)
                cs.got_failure = True

        threads = _ThreadGroup()
        try:
            for i in range(n_threads):
                threads.start(worker, f"caffe2 step {cs.path} #{i}")
        except BaseException:  # could not start them all (or interrupted): stop the others
            cs.got_failure = self.got_failure = True
            threads.join((cs, self))
            raise
        threads.join((cs, self))
        return errors[0] if errors else None

    # ---- reporters -----------------------------------------------------------------------
    def _start_reporters(self, cs: CompiledStep) -> _Reporters:
        reporters = _Reporters(self)
        try:
            if cs.report_net is not None:
                net = cs.report_net

                def report_net() -> None:
                    if not net.run():
                        log.warning("Error running report_net.")

                reporters.start(cs.report_interval, report_net, f"report_net of step '{cs.path}'")
            for w in cs.reporters:
                reporters.start(
                    max(w.step.run_every_ms, 0) / 1000.0,
                    _report_step(self, w),
                    f"report step '{w.path}'",
                )
        except BaseException:
            reporters.stop()
            raise
        return reporters


def _report_step(run: PlanRun, wrapper: StepWrapper) -> Callable[[], None]:
    def report() -> None:
        if not run.execute(wrapper):
            log.warning("Error running report step.")

    return report


def _worker_error(cs: CompiledStep, cause: BaseException) -> EnforceError:
    """The one error a concurrent step raises after a worker died, naming where it died."""
    text = str(cause) if isinstance(cause, RuntimeError) else f"{type(cause).__name__}: {cause}"
    origin = getattr(cause, "caffe2_step", None) or cs.path
    err = EnforceError(
        f"One of the workers died with an unhandled exception {text}\n(in step '{origin}')",
        f"step '{cs.path}'",
    )
    err.blob = getattr(cause, "blob", None)
    err.caffe2_step = origin
    return err


class _ThreadGroup:
    """Threads started together and joined together, even if the joining caller is interrupted.

    Waiting is on an Event each thread sets when it ends: unlike Thread.join in Python 3.11, an
    Event wait can be interrupted and resumed without losing track of the thread.
    """

    def __init__(self) -> None:
        self._threads: list[tuple[threading.Thread, threading.Event]] = []

    def start(self, target: Callable[[], None], name: str) -> None:
        began, ended = threading.Event(), threading.Event()

        def main() -> None:
            began.set()
            try:
                target()
            finally:
                ended.set()

        t = threading.Thread(target=main, name=name, daemon=True)
        try:
            t.start()
        except BaseException:
            # An interrupt inside start() may come after the thread was created: keep it
            # for join() if it turns up.
            if began.wait(_START_GRACE):
                self._threads.append((t, ended))
            raise
        self._threads.append((t, ended))

    def join(self, stoppers: tuple[Any, ...]) -> None:
        """Wait for every thread. An interrupt sets ``got_failure`` on the stoppers, which ends
        the threads' loops at their next iteration, and is re-raised once all have ended."""
        interrupt: BaseException | None = None
        for t, ended in self._threads:
            while True:
                try:
                    ended.wait()
                    t.join()
                    break
                except BaseException as e:  # KeyboardInterrupt while waiting
                    for s in stoppers:
                        s.got_failure = True
                    interrupt = interrupt or e
        if interrupt is not None:
            raise interrupt


class _Reporters:
    """Background threads that call a function every interval until stopped.

    Like Caffe2's Reporter: each waits one interval (or until stopped), runs, and repeats
    while not stopped, so the first run comes after one interval and stopping causes one last
    run (unless the reporter was mid-run). An exception inside a reporter is logged with its
    traceback and ends that reporter, rather than repeating every interval.
    """

    def __init__(self, run: PlanRun) -> None:
        self._run = run
        self._done = threading.Event()
        self._threads = _ThreadGroup()

    def start(self, interval: float, fn: Callable[[], None], label: str) -> None:
        self._threads.start(lambda: self._loop(interval, fn, label), f"caffe2 {label}")

    def _loop(self, interval: float, fn: Callable[[], None], label: str) -> None:
        done = self._done
        while True:
            done.wait(interval)
            try:
                fn()
            except BaseException:
                log.exception("Unhandled exception in %s; the reporter stops.", label)
                return
            if done.is_set():
                return

    def stop(self) -> None:
        self._done.set()
        self._threads.join((self._run,))
