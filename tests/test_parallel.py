"""`covplan._parallel.Beside`: work run in a forked process while the caller goes on."""

import os

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
    assert Beside(os.nice, 0).result() == 19
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
    process = waiting._process
    waiting.close()
    assert process is None or not process.is_alive()
    waiting.close()         # twice is harmless


def _dies() -> None:
    os._exit(3)


def test_beside_says_so_when_its_process_dies_without_answering():
    with pytest.raises(RuntimeError, match="running _dies beside the plan ended with exit code 3"):
        Beside(_dies).result()
