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


def usable_cpus() -> int:
    """The CPUs this process may run on: a container or `taskset` may allow fewer than the
    machine has, and `os.cpu_count` counts the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


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
              data: dict[str, Any], sizes: Sequence[float] | None = None) -> list[Any]:
    """
    ``[function(t) for t in tasks]`` on up to `jobs` worker processes, in task order (so the
    result never depends on `jobs`); the largest `sizes` start first, so that the workers end
    together. `function` is a module-level function that reads `data`
    through `shared()`. On Linux the workers fork after `data` is set and read it in place
    (a pool starts in 0.05 s; one that starts fresh interpreters and is sent the data took 2.3 s
    at 3 M residents, of which pickling the 17 MB took 0.02 s); elsewhere it is pickled to each
    worker once. Inside a daemonic process (a Dask or multiprocessing worker, which may not
    have children) the tasks run here, one by one. A task run here may call `run_tasks` again
    (the inner data is shared for the inner call only).
    """
    global _SHARED
    outer = _SHARED
    workers = min(int(jobs), len(tasks))
    daemon = multiprocessing.current_process().daemon
    if daemon and workers > 1:
        logger.info("Planning %d parts one by one: a worker process cannot start workers", len(tasks))
    _SHARED = data
    try:
        if workers <= 1 or daemon:
            return [function(task) for task in tasks]
        if sys.platform.startswith("linux"):     # macOS may not fork safely (system libraries)
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        else:
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_receive, initargs=(data,))
        order = np.argsort(-np.asarray(sizes if sizes is not None else np.zeros(len(tasks))),
                           kind="stable")
        with pool:
            futures = {int(i): pool.submit(function, tasks[i]) for i in order}
            return [futures[i].result() for i in range(len(tasks))]
    finally:
        _SHARED = outer


def _send_result(connection, function: Callable[..., Any], args: tuple) -> None:
    """The body of `Beside`'s process: the function's result, or its exception, down the pipe."""
    try:
        outcome = (True, function(*args))
    except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
        outcome = (False, error)
    connection.send(outcome)
    connection.close()


class Beside:
    """
    ``function(*args)`` in one forked process while the caller goes on (`result` waits for it):
    work whose answer only comes in at the end, such as a proof that only the report reads.
    Where processes cannot fork cheaply (not Linux), inside a daemonic process, or when
    `fork` is False, it runs at `result` instead. A process rather than a thread: the
    caller forks planning workers meanwhile, and a fork beside a running thread may copy a
    lock that thread holds.
    """

    def __init__(self, function: Callable[..., Any], *args: Any, fork: bool = True) -> None:
        self._call = (function, args)
        self._process = None
        if fork and sys.platform.startswith("linux") and not multiprocessing.current_process().daemon:
            context = multiprocessing.get_context("fork")
            self._receive, sending = context.Pipe(duplex=False)
            self._process = context.Process(target=_send_result, args=(sending, function, args),
                                            daemon=True)
            self._process.start()
            sending.close()

    def result(self) -> Any:
        """The function's result (its exception raised here)."""
        if self._process is None:
            function, args = self._call
            return function(*args)
        try:
            ok, value = self._receive.recv()
        except EOFError:        # it died before answering (killed, out of memory)
            self._process.join()
            function = self._call[0]
            name = getattr(getattr(function, "func", function), "__name__", "its function")
            msg = (f"the process running {name} beside the plan ended with exit code "
                   f"{self._process.exitcode} before it answered")
            self.close()
            raise RuntimeError(msg) from None
        self._process.join()
        self.close()
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Stop the process if it still runs (the caller gave up on the result)."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.terminate()
            self._process.join()
            self._receive.close()
            self._process = None
