"""Center siting alone: the best center per community, and new centers for the uncovered."""

from __future__ import annotations

import itertools

import geopandas as gpd
import numpy as np
import pytest
import scipy.sparse as sp
from covplan._sparse import lookup
from covplan.errors import InputError
from covplan.solve.siting import (
    choose_centers,
    choose_community_centers,
    place_centers,
    site_new_centers,
)


def _matrix(entries: dict[tuple[int, int], float], shape: tuple[int, int]) -> sp.csr_matrix:
    """Sparse minutes from {(unit, candidate): minutes}; zeros stay stored (reachable)."""
    (rows, cols), data = zip(*entries.keys()), list(entries.values())
    matrix = sp.csr_matrix((data, (rows, cols)), shape=shape)
    matrix.sort_indices()
    return matrix


# Units 0-2 form community 0, units 3-4 community 1; three candidates.
MINUTES = _matrix({(0, 0): 5, (0, 1): 10, (1, 0): 6, (1, 1): 3, (2, 1): 12, (2, 2): 4,
                   (3, 2): 2, (4, 2): 7}, (5, 3))
POP = np.array([100, 200, 300, 50, 400])
LABELS = np.array([0, 0, 0, 1, 1])


def test_best_center_reaches_most_residents_by_hand():
    choice = choose_centers(MINUTES, POP, LABELS)
    # Community 0: c0 reaches 300, c1 reaches all 600, c2 reaches 300 -> c1.
    # Community 1: only c2 reaches anyone (both members).
    assert choice.center.tolist() == [1, 2]
    assert choice.population.tolist() == [600, 450]
    assert choice.covered.tolist() == [600, 450]
    assert choice.mean_minutes == pytest.approx([(100 * 10 + 200 * 3 + 300 * 12) / 600,
                                                 (50 * 2 + 400 * 7) / 450])
    assert choice.max_minutes.tolist() == [12, 7]
    assert not choice.shared.any()


def test_ties_go_to_the_shorter_walk_then_to_existing_centers():
    # One community of two units; both candidates reach both.
    minutes = _matrix({(0, 0): 5, (0, 1): 5.3, (1, 0): 5, (1, 1): 5.3}, (2, 2))
    pop, labels = np.array([10, 10]), np.array([0, 0])
    assert choose_centers(minutes, pop, labels).center.tolist() == [0]          # shorter walk
    existing = np.array([False, True])
    # An existing center within 0.5 min of the best mean is kept ...
    assert choose_centers(minutes, pop, labels, existing=existing).center.tolist() == [1]
    # ... but not when that bonus is switched off, nor when it walks more than 0.5 min longer.
    assert choose_centers(minutes, pop, labels, existing=existing,
                          existing_bonus_minutes=0.0).center.tolist() == [0]
    farther = _matrix({(0, 0): 5, (0, 1): 5.6, (1, 0): 5, (1, 1): 5.6}, (2, 2))
    assert choose_centers(farther, pop, labels, existing=existing).center.tolist() == [0]
    # Reaching more residents beats any walk: a closer center reaching one unit loses.
    partial = _matrix({(0, 0): 1, (0, 1): 14, (1, 1): 14}, (2, 2))
    assert choose_centers(partial, pop, labels).center.tolist() == [1]


def test_two_communities_get_distinct_centers_when_possible():
    # A (unit 0) is reached by c0 in 5 and c1 in 9; B (unit 1) only by c0.
    minutes = _matrix({(0, 0): 5, (0, 1): 9, (1, 0): 3}, (2, 2))
    pop, labels = np.array([100, 100]), np.array([0, 1])
    assert choose_centers(minutes, pop, labels, distinct=False).center.tolist() == [0, 0]
    choice = choose_centers(minutes, pop, labels)
    assert choice.center.tolist() == [1, 0]
    assert choice.covered.tolist() == [100, 100] and not choice.shared.any()


def test_a_community_with_no_free_candidate_shares_and_says_so():
    minutes = _matrix({(0, 0): 5, (1, 0): 3, (2, 1): 1}, (3, 2))
    pop, labels = np.array([100, 300, 50]), np.array([0, 1, 2])
    choice = choose_centers(minutes, pop, labels)
    # The larger community keeps c0 (more residents covered); the smaller shares it.
    assert choice.center.tolist() == [0, 0, 1]
    assert choice.shared.tolist() == [True, False, False]


def test_unassigned_units_and_candidates_restricted_to_their_community():
    labels = np.array([0, 0, 0, -1, 1])
    choice = choose_centers(MINUTES, POP, labels)
    assert choice.population.tolist() == [600, 400]
    # c1 may serve only community 1, which it does not reach: community 0 falls back to c0/c2.
    inside = np.array([-1, 1, -1])
    restricted = choose_centers(MINUTES, POP, LABELS, candidate_community=inside)
    assert restricted.center.tolist() == [0, 2]          # c0 and c2 both reach 300; c0 walks less
    assert restricted.covered.tolist() == [300, 450]


def test_community_nobody_reaches_has_no_center():
    minutes = _matrix({(0, 0): 1}, (2, 1))
    choice = choose_centers(minutes, np.array([5, 7]), np.array([0, 1]))
    assert choice.center.tolist() == [0, -1]
    assert choice.covered.tolist() == [5, 0] and np.isnan(choice.mean_minutes[1])


def test_bad_input_is_named():
    with pytest.raises(InputError, match="labels"):
        choose_centers(MINUTES, POP, np.array([0, 1]))
    with pytest.raises(InputError, match="pop"):
        choose_centers(MINUTES, np.array([1, 2]), LABELS)
    with pytest.raises(TypeError, match="sparse"):
        choose_centers(MINUTES.toarray(), POP, LABELS)
    with pytest.raises(InputError, match="budget"):
        place_centers(MINUTES, POP, budget=-1)
    with pytest.raises(InputError, match="method"):
        place_centers(MINUTES, POP, budget=1, method="annealing")


# Greedy's classic trap: G covers most at first, but B1 + B2 cover more together.
TRAP = _matrix({(0, 0): 1, (1, 0): 1, (2, 1): 1, (3, 1): 1, (1, 2): 1, (2, 2): 1, (4, 2): 1}, (5, 3))
TRAP_POP = np.array([5, 5, 5, 5, 1])


def test_greedy_placement_by_hand_and_its_bound():
    result = place_centers(TRAP, TRAP_POP, budget=2)
    assert result.added.tolist() == [2, 0]        # G (11), then B1 (+5; B2 ties, lower index)
    assert result.gain.tolist() == [11, 5]
    assert (result.covered_before, result.covered_after, result.reachable) == (0, 16, 21)
    assert result.upper_bound >= 20 and not result.optimal


def test_exact_placement_finds_the_optimum():
    result = place_centers(TRAP, TRAP_POP, budget=2, method="milp")
    assert sorted(result.added.tolist()) == [0, 1]
    assert result.covered_after == 20 and result.optimal and result.upper_bound == 20
    assert result.gain.sum() == result.covered_after - result.covered_before


def test_open_centers_are_counted_and_never_chosen_again():
    result = place_centers(TRAP, TRAP_POP, budget=1, open_centers=np.array([2]))
    assert result.covered_before == 11
    assert result.added.tolist() == [0] and result.covered_after == 16
    # Nothing left to cover: placement stops early.
    done = place_centers(TRAP, TRAP_POP, budget=3, open_centers=np.array([0, 1, 2]))
    assert len(done.added) == 0 and done.covered_after == 21 and done.optimal


def test_placement_against_brute_force_on_random_instances():
    rng = np.random.default_rng(3)
    for _ in range(15):
        n_units, n_cand, budget = 12, 7, 3
        dense = rng.random((n_units, n_cand)) < 0.25
        minutes = sp.csr_matrix(np.where(dense, 1.0, 0.0))
        pop = rng.integers(1, 50, n_units)
        best = max(int(pop[dense[:, list(c)].any(axis=1)].sum())
                   for c in itertools.combinations(range(n_cand), budget))
        greedy = place_centers(minutes, pop, budget=budget)
        exact = place_centers(minutes, pop, budget=budget, method="milp")
        assert exact.covered_after == best
        assert greedy.covered_after <= best <= greedy.upper_bound
        assert greedy.covered_after >= (1 - 1 / np.e) * best
        assert np.all(np.diff(greedy.gain) <= 0)     # greedy gains never grow


@pytest.fixture(scope="module")
def demo_reach():
    from covplan.cities.demo import build_demo_city
    from covplan.inputs.areas import load_centers, load_communities
    from covplan.inputs.network import load_network
    from covplan.inputs.population import load_population
    from covplan.reach.matrix import compute_reach

    city = build_demo_city(seed=0)
    network = load_network(city.graph)
    population = load_population(city.population, population_column="population", id_column="cell_id")
    centers, communities = load_centers(city.centers), load_communities(city.communities)
    reach = compute_reach(network, population, centers=centers, max_minutes=15)
    units = reach.units
    joined = gpd.sjoin(units[["geometry"]], communities.to_crs(units.crs)[["geometry"]],
                       how="left", predicate="within")
    labels = joined.groupby(level=0)["index_right"].min().reindex(units.index).fillna(-1)
    return reach, labels.to_numpy(dtype="int64"), communities, centers


def test_demo_city_best_centers_cover_at_least_the_existing_ones(demo_reach):
    reach, labels, communities, centers = demo_reach
    sited = choose_community_centers(reach, labels, community_areas=communities.geometry)
    assert len(sited.centers) == len(communities) == 69
    assert sited.centers.crs == reach.input_crs
    assert sited.centers["candidate_id"].is_unique
    # Each community's own center, as the demo placed it (candidate rows of existing centers).
    own = reach.candidates.set_index("center_id").loc[centers["center_id"], "candidate_id"].to_numpy()
    community_of_center = communities.reset_index().set_index("community_id").loc[
        centers["community_id"], "index"].to_numpy()
    pop = reach.pop
    for k, candidate in zip(community_of_center, own):
        members = np.flatnonzero(labels == k)
        reached = lookup(reach.minutes, members, np.full(len(members), candidate))[1]
        assert sited.choice.covered[k] >= pop[members][reached].sum()
    # Chosen centers stand inside their community (checked in metres: many sit on its border).
    points = reach.candidates.geometry.iloc[sited.centers["candidate_id"].to_numpy()].to_numpy()
    areas = communities.to_crs(reach.work_crs).geometry.iloc[sited.centers["community"].to_numpy()]
    assert all(area.distance(point) < 0.01 for area, point in zip(areas.to_numpy(), points))


def test_demo_city_new_centers_cover_the_uncovered(demo_reach):
    reach = demo_reach[0]
    new = site_new_centers(reach, budget=3)
    placement = new.placement
    existing = reach.candidates["existing"].to_numpy()
    assert not existing[placement.added].any()
    assert placement.covered_after == placement.covered_before + placement.gain.sum()
    assert placement.covered_after <= placement.upper_bound <= placement.reachable
    assert np.all(np.diff(placement.gain) <= 0) and len(new.sites) == len(placement.added)
    # Recount the coverage with the new centers from the matrix itself.
    open_ = np.r_[np.flatnonzero(existing), placement.added]
    sub = reach.minutes[:, open_].tocsr()
    covered = np.diff(sub.indptr) > 0             # a stored entry (zeros too) = within the limit
    assert int(reach.pop[covered].sum()) == placement.covered_after
    assert new.sites.crs == reach.input_crs
