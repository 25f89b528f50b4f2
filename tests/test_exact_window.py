"""The windows solved as constraint models (CP-SAT) at the end of the improvement phase."""

from __future__ import annotations

import numpy as np
import pytest
from covplan.solve.partition.core import PartitionProblem
from covplan.solve.partition.exact_window import solve_windows
from test_partition import grid, plan_from_labels, plan_rules, poor_start


def strip_plan():
    # A 16 x 4 strip of 100 residents a cell, target 1,600 (band 1,280-1,920): three
    # communities of 2,400, 1,600 and 2,400 columns-wise, where four of 1,600 fit.
    reach, _, adjacency, xy = grid(16, 4, limit=8.0, step=1)
    pop = np.full(64, 100, dtype=np.int64)
    problem = PartitionProblem(reach, pop, adjacency, target_pop=1_600, tolerance=0.2, xy=xy)
    col = np.arange(64) % 16
    return problem, plan_from_labels(problem, np.where(col < 6, 0, np.where(col < 10, 1, 2)))


def test_a_window_gains_a_balanced_community_and_keeps_every_rule():
    problem, plan = strip_plan()
    assert sorted(plan.popk[plan.alive]) == [1_600, 2_400, 2_400]
    before = plan.key()

    assert solve_windows(plan, seconds=2.0)
    center, sizes, ok = plan_rules(plan)
    assert ok and (center >= 0).all()             # connected, every member reaches its center
    assert sizes.sum() == 6_400
    assert len(sizes) == 4 and ((sizes >= problem.min_pop) & (sizes <= problem.max_pop)).all()
    assert plan.key()[:4] < before[:4]


def test_the_same_plan_every_time():
    _, one = strip_plan()
    _, two = strip_plan()
    solve_windows(one, seconds=2.0)
    solve_windows(two, seconds=2.0)
    assert np.array_equal(one.label, two.label)
    assert np.array_equal(one.center[one.alive], two.center[two.alive])


def test_no_budget_no_change():
    _, plan = strip_plan()
    label = plan.label.copy()
    assert not solve_windows(plan, seconds=0.0)
    assert np.array_equal(plan.label, label)


@pytest.mark.parametrize("seed", range(4))
def test_solved_windows_never_break_a_rule_that_held(seed):
    problem, plan = poor_start(seed)      # as the heuristic's improvement is tested
    center0, sizes0, ok0 = plan_rules(plan)
    key0 = plan.key()
    tiny0 = int((sizes0 < problem.tiny_share * problem.target_pop).sum())

    changed = solve_windows(plan, seconds=2.0)
    center, sizes, ok = plan_rules(plan)
    assert np.array_equal(center >= 0, center0 >= 0)
    assert ok or not ok0
    assert int((sizes < problem.tiny_share * problem.target_pop).sum()) <= tiny0
    assert plan.key()[:4] <= key0[:4] and (plan.key()[:4] < key0[:4]) == changed
    assert sizes.sum() == sizes0.sum()


def test_a_plan_without_adjacency_is_left_alone():
    reach, pop, _, xy = grid(8, 4)
    problem = PartitionProblem(reach, pop, None, target_pop=pop.sum() / 2, tolerance=0.2, xy=xy)
    plan = plan_from_labels(problem, np.zeros(len(pop), dtype=np.int64))
    assert not solve_windows(plan, seconds=2.0)
