"""The neighbourhood proofs of tiny communities (`covplan.solve.neighbourhood`) and their notes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from covplan.metrics import tiny_note
from covplan.solve import neighbourhood
from covplan.solve.neighbourhood import TinyCheck, check_tiny

BAND = {"min_pop": 800, "max_pop": 1_200, "tiny_pop": 500}


def _street() -> dict:
    """22 units of 100 residents on a street: A = units 0-1 (200, tiny), B = 2-11 (1,000), C =
    12-21 (1,000). Sites: 0 reaches units 0-3 (A's center, 400 residents), 1 reaches 2-11 (B's),
    2 reaches 0-21 (C's), 3 reaches 12-21 (free). A's residents reach site 2, which gathers
    2,200: no bound forces them undersized."""
    spans = [(0, 3), (2, 11), (0, 21), (12, 21)]
    rows = np.concatenate([np.arange(a, b + 1) for a, b in spans])
    cols = np.concatenate([np.full(b - a + 1, c) for c, (a, b) in enumerate(spans)])
    structure = sp.csr_matrix((np.full(len(rows), 5.0), (rows, cols)), shape=(22, 4))
    structure.sort_indices()
    return {
        "labels": np.repeat([0, 1, 2], [2, 10, 10]),
        "center_of": np.array([0, 1, 2]),
        "tiny": np.array([0]),
        "regular": np.ones(3, bool),
        "structure": structure,
        "pop": np.full(22, 100.0),
        "adjacency": sp.diags([np.ones(21), np.ones(21)], [-1, 1]).tocsr(),
        "forced": np.zeros(22, bool),
    }


def test_a_tiny_community_its_neighbours_cannot_take_is_proven_locked_with_the_rest_fixed(
        monkeypatch):
    """With C as it is, A and B have no split without a community below 500: A's units reach
    only A's site inside them (400 residents) and C's, which C keeps. Two rings (checked when
    given a budget) free C's site: it can take A and B (1,200) while site 3 takes C (1,000), so
    no cost is claimed there."""
    assert [c.rings for c in check_tiny(**_street(), **BAND)] == [1]
    monkeypatch.setitem(neighbourhood.CHECK_WORK, 2, 1_000)
    checks = check_tiny(**_street(), **BAND)
    assert [(c.label, c.rings, c.communities, c.residents) for c in checks] == [
        (0, 1, 2, 1_200), (0, 2, 3, 2_200)]
    one, two = checks
    assert one.outside_now == 200 and np.isinf(one.outside_least) and np.isinf(one.cost)
    assert two.outside_least == 0 and two.cost == -200


def test_checks_over_the_budget_are_not_tried(monkeypatch):
    monkeypatch.setattr(neighbourhood, "CHECK_WORK", {1: 0, 2: 0})
    assert check_tiny(**_street(), **BAND) == []


def test_exception_communities_stay_out_of_a_neighbourhood():
    """C planned apart as an exception is part of the fixed rest: the second ring adds no
    community, so it is not checked again."""
    street = _street()
    street["regular"] = np.array([True, True, False])
    checks = check_tiny(**street, **BAND)
    assert [(c.rings, c.communities) for c in checks] == [(1, 2)]
    assert np.isinf(checks[0].cost)


def test_another_tiny_community_stays_as_it_is():
    """With B tiny too, A's proof is about clearing A alone: B stays, so A's neighbourhood is A
    (its units reach only its own site inside it); B's is B and C."""
    street = _street()
    street["tiny"] = np.array([0, 1])
    checks = check_tiny(**street, **BAND)
    first = {c.label: c for c in checks if c.rings == 1}
    assert (first[0].communities, first[0].residents) == (1, 200) and np.isinf(first[0].cost)
    assert (first[1].communities, first[1].residents) == (2, 2_000)


def test_the_tiny_note_says_what_each_neighbourhood_proves_and_nothing_else():
    locked = TinyCheck(7, 1, 3, 13_410, 5_406, np.inf)
    costly = TinyCheck(7, 2, 8, 47_799, 15_739, 27_000.0)
    free = TinyCheck(7, 2, 8, 47_799, 15_739, 15_000.0)
    note = tiny_note("smaller than target", [costly, locked], tiny_pop=5_000)
    assert note == (
        "smaller than target; it and its neighbours (3 communities, 13,410 residents) have no "
        "split without a community below 5,000; any split of the communities within 2 rings of "
        "it (8 communities, 47,799 residents) without a community below 5,000 puts at least "
        "11,261 more residents outside the band (linear programs over the sites, the rest of "
        "the plan unchanged)")
    assert "cannot" not in note
    assert tiny_note("smaller than target", [free], tiny_pop=5_000) == "smaller than target"
    assert tiny_note("", [locked], tiny_pop=5_000).startswith("it and its neighbours")
    # Where every neighbour is tiny or an exception (kept as they are), the window is itself.
    alone = TinyCheck(7, 1, 1, 6_860, 6_860, np.inf)
    assert tiny_note("", [alone], tiny_pop=12_500) == (
        "it (6,860 residents; its neighbours, tiny communities or exceptions, as they are) has no "
        "split without a community below 12,500 (linear programs over the sites, the rest of the "
        "plan unchanged)")


def test_the_program_reports_no_solution_and_untried_apart():
    """`least_outside_band`: inf where no plan keeping the tiny rule exists (a unit whose only
    site gathers too few), None where the work is over the cap."""
    from covplan.solve.packing import least_outside_band

    piece = sp.csr_matrix(np.array([[400.0, 0.0], [400.0, 900.0], [0.0, 900.0]]))
    pop = np.array([100.0, 300.0, 600.0])
    none = np.zeros(3, bool)
    least, work = least_outside_band(piece, pop, none, np.zeros(2), **BAND)
    assert np.isinf(least) and work > 0
    assert least_outside_band(piece, pop, none, np.zeros(2), **BAND, max_work=work / 2) == (
        None, pytest.approx(work))
