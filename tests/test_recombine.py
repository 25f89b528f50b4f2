"""Recombination (the core's stage 7b): the best exact cover by communities the search made."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from covplan.solve.partition.core import PartitionProblem, partition_units
from covplan.solve.partition.recombine import SeenCommunities, recombine
from test_partition import check_rules, grid, plan_from_labels, plan_rules


def _strip(locked: int | None = None) -> PartitionProblem:
    """Eight units of 1,000 residents in a row, a site on each reaching its neighbours (a
    minute a step); target 2,000 ± 20 %: two units make a balanced community."""
    n = 8
    rows, cols = np.nonzero(np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= 1)
    minutes = sp.csr_matrix((np.abs(rows - cols).astype(float), (rows, cols)), shape=(n, n))
    path = sp.csr_matrix((np.ones(2 * (n - 1)), (np.r_[0:n - 1, 1:n], np.r_[1:n, 0:n - 1])),
                         shape=(n, n))
    lock = None if locked is None else np.isin(np.arange(n), [locked])
    return PartitionProblem(minutes, np.full(n, 1_000), path, target_pop=2_000, tolerance=0.2,
                            locked=lock)


# Two plans, each balanced on one half only: {0,1} {2,3} | {4,5,6} {7}, and {0} {1,2,3} | {4,5} {6,7}.
LEFT_GOOD = [0, 0, 1, 1, 2, 2, 2, 3]
RIGHT_GOOD = [0, 1, 1, 1, 2, 2, 3, 3]


def test_recombination_joins_the_balanced_halves_of_two_plans():
    problem = _strip()
    plan = plan_from_labels(problem, LEFT_GOOD)
    assert plan.key()[0] == 4_000                      # 3,000 + 1,000 outside the band
    seen = SeenCommunities()
    seen.record(plan_from_labels(problem, RIGHT_GOOD))
    better = recombine(plan, seen)
    assert better is not None
    center, sizes, rules_hold = plan_rules(better)
    assert rules_hold and (center >= 0).all()
    assert len(np.unique(center)) == len(sizes) == 4   # one center each, none shared
    assert sorted(sizes.tolist()) == [2_000] * 4 and better.key()[0] == 0
    assert better.popk[better.alive].sum() == plan.popk[plan.alive].sum()


def test_recombination_returns_nothing_when_the_pool_holds_no_better_plan():
    problem = _strip()
    plan = plan_from_labels(problem, [0, 0, 1, 1, 2, 2, 3, 3])   # balanced already
    seen = SeenCommunities()
    seen.record(plan_from_labels(problem, LEFT_GOOD))
    seen.record(plan_from_labels(problem, RIGHT_GOOD))
    assert recombine(plan, seen) is None
    assert recombine(plan_from_labels(problem, LEFT_GOOD), SeenCommunities()) is None


def test_recombination_keeps_a_locked_site_open():
    """With site 7 locked open (an existing center that must stay), the only community on it
    in the pool is {7} alone: the right half can't be rebalanced from the pool."""
    seen = SeenCommunities()
    seen.add(6, np.array([6, 7]))
    seen.add(4, np.array([4, 5]))
    free = recombine(plan_from_labels(_strip(), LEFT_GOOD), seen)
    assert free is not None and free.key()[0] == 0
    locked = recombine(plan_from_labels(_strip(locked=7), LEFT_GOOD), seen)
    assert locked is None


def test_recombination_skips_communities_that_break_a_rule():
    """Communities whose center doesn't reach every member, or in two pieces, would balance
    the right half ({4} {5,6,7} now); none is used, so nothing better is found."""
    problem = _strip()
    seen = SeenCommunities()
    seen.add(4, np.array([5, 6]))            # site 4 doesn't reach unit 6: {4} {5,6} {7}
    seen.add(7, np.array([7]))
    seen.add(5, np.array([4, 6]))            # two pieces each: {4,6} {5,7}
    seen.add(6, np.array([5, 7]))
    assert recombine(plan_from_labels(problem, [0, 0, 1, 1, 2, 3, 3, 3]), seen) is None


def test_the_planner_with_recombination_keeps_every_rule_and_is_deterministic():
    reach, pop, adjacency, xy = grid(16, 12, limit=6.0)
    problem = PartitionProblem(reach, pop, adjacency, target_pop=pop.sum() / 9, tolerance=0.2,
                               xy=xy)
    one = partition_units(problem, seed=0, restarts=3, jobs=1)
    check_rules(problem, one)
    two = partition_units(problem, seed=0, restarts=3, jobs=2)
    assert np.array_equal(one.center, two.center)
