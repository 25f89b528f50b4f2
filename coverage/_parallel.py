"""
Independent planning tasks side by side on worker processes (`run_tasks`): districts, regions
and their seams, a district's two merge/split plans, a partition's improvement of its two best
runs. Hand-written around `concurrent.futures` because the workers must read the reach matrix
in place (forked after it is set) instead of receiving a pickled copy per task.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

# What worker processes read: set before the pool forks, so they share the reach matrix and the
# rest copy-on-write and the pool needs no fresh interpreters (see `run_tasks`).
_SHARED: dict[str, Any] | None = None
# Set by `run_tasks` (and inherited by its workers' fork): the processes it may use and, shared
# by its workers, its tasks not yet finished and the processes lent to them. A task running
# while others are done or never were (the last district; the one task of a plan's last stage
# on two jobs) may borrow the idle processes for its own tasks (`_borrow`): the linear city's
# centre district was planned on one process while the other sat idle for 12 s.
_POOL: tuple[int, Any] | None = None


def usable_cpus() -> int:
    """The CPUs this process may run on: a container or `taskset` may allow fewer than the
    machine has, and `os.cpu_count` counts the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def can_fork() -> bool:
    """Whether this process may fork helpers: on Linux (macOS may not fork safely, system
    libraries), and not inside a daemonic process (a Dask or multiprocessing worker), which may
    not have children."""
    return sys.platform.startswith("linux") and not multiprocessing.current_process().daemon


def shared() -> dict[str, Any]:
    """The inputs `run_tasks` shares with its tasks."""
    if _SHARED is None:
        msg = "no shared planning inputs: call the task through run_tasks"
        raise RuntimeError(msg)
    return _SHARED


def _receive(data: dict[str, Any]) -> None:
    """Worker initializer where processes cannot fork: the shared inputs come pickled once."""
    global _SHARED
    _SHARED = data


def run_tasks(function: Callable[[Any], Any], tasks: Sequence[Any], *, jobs: int,
              data: dict[str, Any], sizes: Sequence[float] | None = None,
              lend: bool = False, at_once: bool = False) -> list[Any]:
    """
    ``[function(t) for t in tasks]`` on up to `jobs` worker processes, in task order (so the
    result never depends on `jobs`); the largest `sizes` start first, so that the workers end
    together. `function` is a module-level function that reads `data`
    through `shared()`. On Linux the workers fork after `data` is set and read it in place
    (a pool starts in 0.05 s; one that starts fresh interpreters and is sent the data took 2.3 s
    at 3 M residents, of which pickling the 17 MB took 0.02 s); elsewhere it is pickled to each
    worker once. Inside a daemonic process (a Dask or multiprocessing worker, which may not
    have children) the tasks run here, one by one. A task run here may call `run_tasks` again
    (the inner data is shared for the inner call only), and borrows for it the processes of
    this call that are idle: its workers that run no task, and with `lend` (tasks that are not
    handed a share of `jobs` of their own) the processes of `jobs` it started none on. With
    `at_once`, tasks of about equal length that do not divide among the processes all start at
    once, on up to twice as many processes as CPUs, and share them: three runs on two processes
    end in about one and a half runs' time instead of two.
    """
    global _SHARED, _POOL
    outer, outer_pool = _SHARED, _POOL
    daemon = multiprocessing.current_process().daemon
    borrowed = _borrow(len(tasks) - int(jobs)) if not daemon and len(tasks) > int(jobs) else 0
    cpus = min(int(jobs) + borrowed, len(tasks))
    workers = min(2 * cpus, len(tasks)) if at_once and cpus > 1 else cpus
    if daemon and workers > 1:
        logger.info("Planning %d parts one by one: a worker process cannot start workers", len(tasks))
    _SHARED = data
    linux = sys.platform.startswith("linux")     # macOS may not fork safely (system libraries)
    held = int(jobs) + borrowed if lend else cpus
    if linux and not daemon and held > 1:
        # What this call holds, lent to its tasks' own calls while it does not use it
        # (`_borrow`); holding one process, its tasks borrow from the enclosing call instead.
        _POOL = (held, multiprocessing.get_context("fork").Array("i", [len(tasks), 0]))
    try:
        if workers <= 1 or daemon:
            done = []
            for k, task in enumerate(tasks):
                if k and not daemon and len(tasks) - k > int(jobs) and spare_processes():
                    # A process fell idle meanwhile (another district done): the rest on it too.
                    rest = None if sizes is None else sizes[k:]
                    return done + run_tasks(function, tasks[k:], jobs=jobs, data=data, sizes=rest,
                                            lend=lend)
                done.append(_counted(function, task) if _POOL is not outer_pool else function(task))
            return done
        if linux:
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        else:
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_receive, initargs=(data,))
        order = np.argsort(-np.asarray(sizes if sizes is not None else np.zeros(len(tasks))),
                           kind="stable")
        with pool:
            futures = {int(i): pool.submit(_counted, function, tasks[i]) for i in order}
            return [futures[i].result() for i in range(len(tasks))]
    finally:
        _SHARED, _POOL = outer, outer_pool
        if borrowed:
            _give_back(borrowed)


def run_until(function: Callable[[Any], Any], tasks: Sequence[Any], *, data: dict[str, Any],
              stop: Callable[[Any], bool]) -> list[Any]:
    """
    ``[function(t) for t in tasks]`` up to and including the first result for which `stop` is
    true (`stop` is called on each result in task order), as one after another would give. On
    the processes the enclosing `run_tasks` leaves idle (`spare_processes`) beside this one,
    each task runs in a process of its own, forked when a process frees up (so it reads `data`
    as it is then), and those still running when a result stops the list are ended. `function`
    reads `data` through `shared()`, as for `run_tasks`. The linear city's minimum-cover tries:
    a batch of two waited for its longest try (an assignment, 1.8 s) while the other process
    sat idle. A task whose process dies (killed, out of memory) raises a RuntimeError here
    instead of leaving the plan waiting.
    """
    from multiprocessing.connection import wait

    global _SHARED
    borrowed = _borrow(len(tasks) - 1) if can_fork() else 0
    outer = _SHARED
    _SHARED = data
    done: list[Any] = []
    running: dict[int, tuple[Any, Any]] = {}      # task index -> (process, pipe)
    try:
        if not borrowed:
            for task in tasks:
                done.append(function(task))
                if stop(done[-1]):
                    break
            return done
        answers: dict[int, Any] = {}
        started = 0
        while len(done) < len(tasks):
            while started < len(tasks) and len(running) < 1 + borrowed:
                running[started] = _start(function, (tasks[started],), 0)
                started += 1
            if len(done) in answers:
                done.append(answers.pop(len(done)))
                if stop(done[-1]):
                    break
                continue
            ready = wait([pipe for _, pipe in running.values()])
            for k in [k for k, (_, pipe) in running.items() if pipe in ready]:
                answers[k] = _answer(*running.pop(k), function)
        return done
    finally:
        _stop(list(running.values()))
        _SHARED = outer
        if borrowed:
            _give_back(borrowed)


def _counted(function: Callable[[Any], Any], task: Any) -> Any:
    """A task of `run_tasks` that counts itself finished for `_borrow`."""
    try:
        return function(task)
    finally:
        if _POOL is not None:
            counts = _POOL[1]
            with counts.get_lock():
                counts[0] -= 1


def spare_processes() -> int:
    """The processes the enclosing `run_tasks` may use that run none of its tasks and are not
    lent: what a call of `run_tasks` from a task would borrow now."""
    if _POOL is None:
        return 0
    size, counts = _POOL
    return max(0, size - counts[0] - counts[1])


def _borrow(most: int) -> int:
    """Up to `most` spare processes (`spare_processes`), taken for a task's own tasks. Only the
    number of processes changes; the results never depend on it (`run_tasks`)."""
    if _POOL is None:
        return 0
    size, counts = _POOL
    with counts.get_lock():
        taken = max(0, min(most, size - counts[0] - counts[1]))
        counts[1] += taken
    if taken:
        logger.debug("Borrowed %d idle process(es) of %d", taken, size)
    return taken


def _give_back(taken: int) -> None:
    counts = _POOL[1]
    with counts.get_lock():
        counts[1] -= taken


def _send_result(connection, function: Callable[..., Any], args: tuple, nice: int) -> None:
    """The body of `Beside`'s processes: the function's result, or its exception, down the
    pipe, at niceness `nice`."""
    os.nice(nice)
    try:
        outcome = (True, function(*args))
    except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
        outcome = (False, error)
    connection.send(outcome)
    connection.close()


def _start(function: Callable[..., Any], args: tuple, nice: int) -> tuple[Any, Any]:
    """A forked process running `_send_result`, and the pipe it answers down."""
    context = multiprocessing.get_context("fork")
    receive, sending = context.Pipe(duplex=False)
    process = context.Process(target=_send_result, args=(sending, function, args, nice),
                              daemon=True)
    process.start()
    sending.close()
    return process, receive


class Beside:
    """
    ``function(*args)`` in one forked process while the caller goes on (`result` waits for it):
    work whose answer only comes in at the end, such as a proof that only the report reads.
    The process runs at the lowest priority, on what the caller's processes leave idle
    (linear's count and packing proofs, 6 s, shared the two processors with its planning: the
    plan 16.4 -> 14.5 s, medians of four alternating runs). Where it has not answered when
    `result` is asked, a second process at the caller's priority races it (the same answer;
    the first wins), so that other work on the machine cannot starve it: the arguments must
    not have changed meanwhile. Where processes cannot fork cheaply (not Linux), inside a
    daemonic process, or when `fork` is False, it runs at `result` instead. A process rather
    than a thread: the caller forks planning workers meanwhile, and a fork beside a running
    thread may copy a lock that thread holds.
    """

    def __init__(self, function: Callable[..., Any], *args: Any, fork: bool = True) -> None:
        self._call = (function, args)
        self._runs: list[tuple[Any, Any]] = []      # (process, pipe): the lowest priority first
        if fork and can_fork():
            self._runs.append(_start(function, args, 19))

    def result(self) -> Any:
        """The function's result (its exception raised here)."""
        from multiprocessing.connection import wait

        function, args = self._call
        if not self._runs:
            return function(*args)
        if not self._runs[0][1].poll():
            self._runs.append(_start(function, args, 0))
        answered = wait([pipe for _, pipe in self._runs])
        process, pipe = next(run for run in self._runs if run[1] in answered)
        try:
            return _answer(process, pipe, function)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the processes that still run (the caller gave up on the result)."""
        _stop(self._runs)
        self._runs = []


def _answer(process: Any, pipe: Any, function: Callable[..., Any]) -> Any:
    """What a process of `_start` sent: the function's result, its exception raised here, or a
    RuntimeError when the process died before answering (killed, out of memory)."""
    try:
        ok, value = pipe.recv()
    except EOFError:
        process.join()
        name = getattr(getattr(function, "func", function), "__name__", "its function")
        msg = (f"the process running {name} ended with exit code {process.exitcode} before "
               f"it answered")
        raise RuntimeError(msg) from None
    finally:
        pipe.close()
    process.join()
    if not ok:
        raise value
    return value


def _stop(runs: list[tuple[Any, Any]]) -> None:
    """End the processes of `_start` in `runs` that still run, and close their pipes."""
    for process, pipe in runs:
        if process.is_alive():
            process.terminate()
        process.join()
        pipe.close()
