"""`covplan._parallel.Beside`: work run in a forked process while the caller goes on."""

import os
import time

import pytest
from covplan._parallel import Beside
from covplan.errors import InputError


def _pid_and_sum(*values: int) -> tuple[int, int]:
    return os.getpid(), sum(values)


def _fails() -> None:
    msg = "no such district"
    raise InputError(msg)


def test_beside_runs_in_another_process_and_returns_its_result():
    pid, total = Beside(_pid_and_sum, 1, 2, 3).result()
    assert total == 6 and pid != os.getpid()


def test_beside_runs_at_the_lowest_priority():
    """The work beside takes only what the planning's processes leave idle: its process is at
    the lowest priority (niceness 19), the caller's unchanged."""
    mine = os.nice(0)
    waiting = Beside(os.nice, 0)
    assert waiting._runs[0][1].poll(60)     # answered before it is asked: no race
    assert waiting.result() == 19
    assert os.nice(0) == mine


def test_beside_without_fork_runs_when_asked():
    pid, total = Beside(_pid_and_sum, 4, 5, fork=False).result()
    assert total == 9 and pid == os.getpid()


@pytest.mark.parametrize("fork", [True, False])
def test_beside_raises_the_functions_error_at_result(fork):
    waiting = Beside(_fails, fork=fork)
    with pytest.raises(InputError, match="no such district"):
        waiting.result()


def test_beside_closed_unasked_leaves_no_process():
    waiting = Beside(_pid_and_sum, 1)
    processes = [process for process, _ in waiting._runs]
    waiting.close()
    assert not any(process.is_alive() for process in processes)
    waiting.close()         # twice is harmless


def _starved_at_the_lowest_priority() -> int:
    """Stands for work that other processes starve at niceness 19: it never ends there."""
    niceness = os.nice(0)
    while niceness == 19:
        time.sleep(0.05)
    return niceness


def test_beside_unanswered_at_result_is_raced_at_the_callers_priority():
    """Other work on the machine may starve the process at the lowest priority: where it has
    not answered at `result`, a second process at the caller's priority gives the answer, and
    the first is stopped."""
    import multiprocessing

    if os.nice(0) >= 19:
        pytest.skip("the tests run at the lowest priority already: nothing to race")
    waiting = Beside(_starved_at_the_lowest_priority)
    assert waiting.result() == os.nice(0)
    assert not multiprocessing.active_children()


def _dies() -> None:
    os._exit(3)


def test_beside_says_so_when_its_process_dies_without_answering():
    with pytest.raises(RuntimeError, match="running _dies ended with exit code 3"):
        Beside(_dies).result()


def _square_in_order(k: int) -> tuple[int, int]:
    time.sleep(0.02 * (k % 3))      # tries of unequal length end out of order
    return k, k * k


def _until_under_borrowed_processes(_: int) -> tuple[list, int]:
    from covplan._parallel import run_until, spare_processes

    idle = spare_processes()
    pids = run_until(_pid_and_sum, range(4), data={}, stop=lambda r: False)
    assert {pid for pid, _ in pids} - {os.getpid()}       # forked workers ran them
    return run_until(_square_in_order, range(12), data={}, stop=lambda r: r[1] > 30), idle


def test_run_until_gives_the_results_in_order_up_to_the_first_that_stops():
    """The tries of one after another: the same results up to and including the first that
    stops the list, whether on this process alone or on processes borrowed from the enclosing
    `run_tasks`; the tries still running there are ended."""
    import multiprocessing

    from covplan._parallel import run_tasks, run_until

    alone = run_until(_square_in_order, range(12), data={}, stop=lambda r: r[1] > 30)
    assert alone == [(k, k * k) for k in range(7)]
    # One task on two jobs, lent: the task borrows the process no task runs on.
    [(beside, idle)] = run_tasks(_until_under_borrowed_processes, [0], jobs=2, data={}, lend=True)
    assert idle == 1 and beside == alone
    assert run_until(_square_in_order, range(3), data={}, stop=lambda r: False) == \
        [(0, 0), (1, 1), (2, 4)]
    assert not multiprocessing.active_children()


def _dies_at_two(k: int) -> int:
    if k == 2:
        os._exit(3)
    return k


def _until_a_try_dies(_: int) -> list:
    from covplan._parallel import run_until

    return run_until(_dies_at_two, range(5), data={}, stop=lambda r: False)


def test_run_until_says_so_when_a_tries_process_dies():
    """A try whose process dies (killed, out of memory) is an error, not a plan left waiting."""
    import multiprocessing

    from covplan._parallel import run_tasks

    with pytest.raises(RuntimeError, match="running _dies_at_two ended with exit code 3"):
        run_tasks(_until_a_try_dies, [0], jobs=2, data={}, lend=True)
    assert not multiprocessing.active_children()
