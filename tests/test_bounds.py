"""The feasibility bound, exception communities and the truth of the notes, on a hand-built town:
a main grid, a village at the end of a long road (a remote pocket) and a walking network of its own
across the water (an island). Every figure below can be checked by hand."""

from __future__ import annotations

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from covplan._parallel import run_tasks, shared
from covplan.config import PlanConfig
from covplan.errors import InfeasibleError
from covplan.inputs.network import WalkNetwork
from covplan.inputs.population import Population
from covplan.metrics import _note, proven_not_contiguous
from covplan.plan.pipeline import plan_communities, prepare_planning
from covplan.solve.bounds import (
    FeasibilityBound,
    around_plan,
    count_shortfall,
    feasibility_bound,
    min_cover_count,
    packing_shortfall,
)
from shapely.geometry import box

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"
N = 12                      # main grid: 12 x 12 streets 100 m apart
VILLAGE_X = 2_500.0         # the village's west edge, 1.4 km of empty road east of the grid
ISLAND_Y = 2_500.0          # the island's south edge, no way across
CONFIG = PlanConfig(target_pop=3_000, tolerance=0.25, max_minutes=8.0, candidate_spacing_m=150.0,
                    max_unit_pop=None, restarts=2)    # band 2,250..3,750; 8 min = 600 m


def _street_block(G, prefix: str, x: float, y: float, n: int) -> None:
    for r in range(n):
        for c in range(n):
            G.add_node(f"{prefix}{r}_{c}", x=X0 + x + 100 * c, y=Y0 + y + 100 * r)
    for r in range(n):
        for c in range(n):
            for dr, dc in ((0, 1), (1, 0)):
                if r + dr < n and c + dc < n:
                    a, b = f"{prefix}{r}_{c}", f"{prefix}{r + dr}_{c + dc}"
                    G.add_edge(a, b, length=100.0, highway="residential")
                    G.add_edge(b, a, length=100.0, highway="residential")


def _cells(prefix: str, x: float, y: float, n: int, pop: int) -> list[dict]:
    return [{"cell_id": f"{prefix}{r}_{c}", "pop": pop,
             "geometry": box(X0 + x + 100 * c, Y0 + y + 100 * r, X0 + x + 100 * (c + 1), Y0 + y + 100 * (r + 1))}
            for r in range(n - 1) for c in range(n - 1)]


def _town(*, hamlet: bool = False):
    G = nx.MultiDiGraph(crs=CRS)
    _street_block(G, "m", 0.0, 0.0, N)
    _street_block(G, "v", VILLAGE_X, 500.0, 3)
    _street_block(G, "i", 500.0, ISLAND_Y, 3)
    road = [f"m5_{N - 1}"] + [f"r{k}" for k in range(13)] + ["v0_0"]
    for k in range(13):
        G.add_node(f"r{k}", x=X0 + 1_100 + 100 * (k + 1), y=Y0 + 500.0)
    for a, b in zip(road, road[1:]):
        length = float(np.hypot(G.nodes[a]["x"] - G.nodes[b]["x"], G.nodes[a]["y"] - G.nodes[b]["y"]))
        G.add_edge(a, b, length=length, highway="residential")
        G.add_edge(b, a, length=length, highway="residential")
    rows = _cells("m", 0.0, 0.0, N, 100) + _cells("v", VILLAGE_X, 500.0, 3, 150) + _cells("i", 500.0, ISLAND_Y, 3, 200)
    if hamlet:      # 2 x 2 cells on the road 200 m east of the grid: no cell touches the grid's
        _street_block(G, "h", 1_300.0, 400.0, 3)
        G.add_edge("h1_0", "r1", length=0.0, highway="residential")
        G.add_edge("r1", "h1_0", length=0.0, highway="residential")
        rows += _cells("h", 1_300.0, 400.0, 3, 150)
    G = nx.convert_node_labels_to_integers(G, ordering="sorted")
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=CRS)
    return WalkNetwork.from_graph(G), Population.from_frame(frame, population_column="pop", id_column="cell_id")


@pytest.fixture(scope="module")
def town():
    return _town()


MAIN, VILLAGE, ISLAND = 121 * 100, 4 * 150, 4 * 200


def _forced_by_brute_force(ready, config, *, contiguous: bool) -> np.ndarray:
    """Per unit, by plain loops and networkx: does every site it reaches gather fewer than
    min_pop (counting only the unit's connected piece among the site's units if `contiguous`)?"""
    csr = ready.reach.minutes.tocsr()
    reached = np.zeros(csr.shape, dtype=bool)
    for u in range(csr.shape[0]):
        reached[u, csr.indices[csr.indptr[u]:csr.indptr[u + 1]]] = True
    pop = ready.reach.pop
    graph = nx.from_scipy_sparse_array(ready.adjacency)
    forced = np.zeros(len(pop), dtype=bool)
    for u in range(len(pop)):
        best = -1
        for c in np.flatnonzero(reached[u]):
            members = set(np.flatnonzero(reached[:, c]))
            if contiguous:
                members = nx.node_connected_component(graph.subgraph(members), u)
            best = max(best, pop[list(members)].sum())
        forced[u] = 0 <= best < config.min_pop
    return forced


def test_bound_finds_the_pocket_and_the_island_by_hand(town):
    net, population = town
    ready = prepare_planning(net, population, config=CONFIG)
    bound = ready.bound
    assert bound.population_total == MAIN + VILLAGE + ISLAND
    assert bound.forced_undersized_population == VILLAGE + ISLAND
    assert np.array_equal(bound.forced_undersized, _forced_by_brute_force(ready, CONFIG, contiguous=True))
    assert np.array_equal(bound.forced_undersized, _forced_by_brute_force(ready, CONFIG, contiguous=False))
    assert bound.within_tolerance_pop_share_ceiling == pytest.approx(MAIN / (MAIN + VILLAGE + ISLAND))
    assert bound.coverage_ceiling == 1.0
    assert bound.figures()["island_population"] == ISLAND
    # Each village site gathers the village alone, each island site the island alone.
    assert bound.best_gather[bound.forced_undersized].max() <= max(VILLAGE, ISLAND)


def test_contiguity_tightens_the_bound():
    """The hamlet's sites reach the grid's east edge (plenty of residents), but its cells touch
    none of the grid's: a community holding it is the hamlet alone."""
    net, population = _town(hamlet=True)
    ready = prepare_planning(net, population, config=CONFIG)
    plain = feasibility_bound(ready.reach, min_pop=CONFIG.min_pop)
    hamlet = ready.reach.units["cell_id"].str.startswith("h").to_numpy()
    assert not plain.forced_undersized[hamlet].any()
    assert ready.bound.forced_undersized[hamlet].all()
    assert np.array_equal(ready.bound.forced_undersized, _forced_by_brute_force(ready, CONFIG, contiguous=True))
    assert np.array_equal(plain.forced_undersized, _forced_by_brute_force(ready, CONFIG, contiguous=False))
    assert ready.bound.forced_undersized_population == VILLAGE + ISLAND + 600


def test_districts_tighten_the_bound_and_ignore_pairs_across_limits(town):
    net, population = town
    ready = prepare_planning(net, population, config=CONFIG)
    n_units = len(ready.reach.units)
    x = ready.reach.units.geometry.x.to_numpy() - X0
    # Cut the main grid in two districts at x = 200 m: its west strip (2 x 11 cells of 100)
    # can no longer gather 2,250 residents, though its sites reach the east.
    district_of = (x > 200).astype("int64")
    cx = ready.reach.candidates.geometry.x.to_numpy() - X0
    bound = feasibility_bound(ready.reach, min_pop=CONFIG.min_pop, district_of=district_of,
                              candidate_district=(cx > 200).astype("int64"))
    west = (district_of == 0) & (ready.reach.units.geometry.y.to_numpy() - Y0 < 1_200)
    assert len(west) == n_units
    assert bound.forced_undersized[west].all()
    assert bound.forced_undersized_population == VILLAGE + ISLAND + int(ready.reach.pop[west].sum())


def test_plan_makes_exceptions_and_says_cannot_only_where_proven(town):
    net, population = town
    plan = plan_communities(net, population, config=CONFIG)
    table = plan.communities.set_index("community_id")
    units = plan.units
    assert units["pop"].sum() == population.total
    exceptions = table[table["exception"] != ""]
    assert sorted(exceptions["exception"]) == ["island", "remote pocket"]
    assert sorted(exceptions["population"]) == [VILLAGE, ISLAND]
    # Nobody from the main grid is pulled into an exception community.
    for cid, row in exceptions.iterrows():
        members = units[units["community_id"] == cid]
        assert members["forced_undersized"].all()
        assert "cannot" in row["note"]
    island_note = exceptions.loc[exceptions["exception"] == "island", "note"].iloc[0]
    assert "cut off from the main walking network" in island_note
    pocket_note = exceptions.loc[exceptions["exception"] == "remote pocket", "note"].iloc[0]
    assert f"its {VILLAGE:,} residents reach no site that gathers 2,250 contiguous residents within 8 min" in pocket_note
    regular = table[table["exception"] == ""]
    assert not regular["note"].str.contains("cannot|impossible").any()
    r = plan.report
    assert r["exception_population"] == VILLAGE + ISLAND
    assert r["exception_communities"] == 2
    assert r["forced_undersized_population"] == VILLAGE + ISLAND
    assert r["within_tolerance_pop_share"] <= r["within_tolerance_pop_share_ceiling"] + 1e-12
    # Island residents are covered: an island center is planned for them.
    assert r["island_covered_population"] == ISLAND
    assert r["coverage_share"] == pytest.approx(1.0)
    assert r["smallest_regular_community"] >= CONFIG.min_pop_exception * CONFIG.target_pop


def test_attached_exceptions_are_served_remotely_and_not_covered(town):
    net, population = town
    config = PlanConfig(**{**CONFIG.to_dict(), "exceptions": "attach"})
    plan = plan_communities(net, population, config=config)
    r = plan.report
    assert plan.units["pop"].sum() == population.total
    assert r["exception_communities"] == 0
    assert r["served_remotely_population"] == VILLAGE + ISLAND
    assert r["island_covered_population"] == 0
    assert r["coverage_share"] == pytest.approx(MAIN / (MAIN + VILLAGE + ISLAND))
    hosts = plan.communities[plan.communities["remote_population"] > 0]
    assert hosts["remote_population"].sum() == VILLAGE + ISLAND
    assert hosts["note"].str.contains("served remotely").all()


def test_notes_say_what_the_planner_did_not_find_and_by_how_much():
    short = _note(1_500, True, "", 9_000.0, 0, CONFIG)
    assert "did not find" in short and "750 residents" in short and "cannot" not in short
    over = _note(4_000, True, "", 9_000.0, 0, CONFIG)
    assert "did not find" in over and "250 residents" in over and "cannot" not in over
    assert _note(3_000, True, "", 9_000.0, 0, CONFIG) == ""
    assert "not contiguous" in _note(3_000, False, "", 9_000.0, 0, CONFIG)
    # A proof that counted one district says so.
    pocket = _note(600, True, "remote pocket", 1_900.0, 0, CONFIG, in_district=True)
    assert "gathers 2,250 contiguous residents of its district within 8 min (at most 1,900)" in pocket


def test_a_band_no_site_can_gather_is_refused_with_the_numbers(town):
    net, population = town
    config = PlanConfig(**{**CONFIG.to_dict(), "target_pop": 100_000})
    with pytest.raises(InfeasibleError, match=r"no community can reach 75,000 residents.* of 13,500 residents"):
        plan_communities(net, population, config=config)


def test_the_plan_map_shows_the_forced_undersized_residents(town):
    from covplan.output.maps import plan_map

    net, population = town
    html = plan_map(plan_communities(net, population, config=CONFIG)).get_root().render()
    layer = f"residents no balanced community can reach (\\u003c 2,250 within 8 min): {VILLAGE + ISLAND:,}"
    assert layer in html
    assert "2 exception communities" in html


def test_a_detached_exception_piece_gets_its_own_free_site():
    """Two pockets one site reaches: the lighter one moves to a free site reaching all of it."""
    from types import SimpleNamespace

    import scipy.sparse as sp
    from covplan.plan.pipeline import _split_detached

    # Units 0-1 and 2-3 touch; candidate 0 reaches all four, candidate 1 only units 2 and 3.
    minutes = sp.csr_matrix(np.array([[5.0, 0], [6.0, 0], [7.0, 3.0], [8.0, 4.0]]))
    reach = SimpleNamespace(pop=np.array([50, 40, 10, 5]), minutes=minutes)
    adjacency = sp.csr_matrix((np.ones(4), ([0, 1, 2, 3], [1, 0, 3, 2])), shape=(4, 4))
    rows, cols = np.arange(4), np.arange(2)
    out = _split_detached(reach, adjacency, rows, cols, np.zeros(4, dtype="int64"))
    assert out.tolist() == [0, 0, 1, 1]
    # Without a free site reaching the lighter piece, it stays (the note says non-contiguous).
    alone = _split_detached(reach, adjacency, rows, np.array([0]), np.zeros(4, dtype="int64"))
    assert alone.tolist() == [0, 0, 0, 0]


def test_a_community_that_cannot_be_contiguous_is_proven_so():
    """Units 0 and 3 reach site 0 only; units 1-2 between them reach only site 1: any plan
    covering 0 and 3 puts both in site 0's community, and no chain of units reaching site 0
    joins them. With unit 1 also reaching site 0, the chain exists and nothing is proven."""
    from types import SimpleNamespace

    import scipy.sparse as sp

    def bound(minutes):
        reach = SimpleNamespace(pop=np.array([10, 10, 10, 10]), minutes=sp.csr_matrix(minutes),
                                units=None)
        path = sp.csr_matrix((np.ones(6), ([0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2])), shape=(4, 4))
        return feasibility_bound(reach, min_pop=1, adjacency=path)

    apart = bound(np.array([[1.0, 0], [0, 1.0], [0, 2.0], [3.0, 0]]))
    assert apart.sole_site.tolist() == [0, 1, 1, 0]
    assert apart.split_sites.tolist() == [0]
    chained = bound(np.array([[1.0, 0], [2.0, 1.0], [2.0, 2.0], [3.0, 0]]))
    assert chained.split_sites.tolist() == []
    # The report counts the proof, not the notes' words: A (units 0 and 3) is in two pieces.
    units = pd.DataFrame({"community_id": ["A", "B", "B", "A"]})
    table = pd.DataFrame({"community_id": ["A", "B"], "candidate_id": [0, 1],
                          "contiguous": [False, True]})
    assert proven_not_contiguous(units, table, apart) == 1
    assert proven_not_contiguous(units, table, chained) == 0
    assert proven_not_contiguous(units, table.assign(contiguous=True), apart) == 0
    assert "cannot be" in _note(20, False, "", 20, 0, CONFIG, split_forced=True)
    # A remote pocket in two pieces holds more than either piece gathers: the note says so.
    pieces = _note(203, False, "remote pocket", 191, 0, CONFIG, split_forced=True)
    assert "(at most 191 in one piece)" in pieces
    assert "(at most 203)" in _note(203, True, "remote pocket", 203, 0, CONFIG)
    unproven = _note(2_500, False, "", 4_000, 0, CONFIG)
    assert unproven.endswith("not contiguous") and "cannot" not in unproven


def test_min_cover_count_is_the_exact_set_cover():
    """The fewest columns reaching every row, exact where greedy is not: column 3 reaches rows
    0-3 (the most, so greedy takes it and then needs two more for rows 4 and 5), while columns 1
    (rows 0, 2, 4) and 2 (rows 1, 3, 5) cover all six. Rows reaching nothing are ignored."""
    reaches = [[1, 3], [2, 3], [1, 3], [2, 3], [1, 4, 6], [2, 5]]
    matrix = np.zeros((6, 7))
    for row, columns in enumerate(reaches):
        matrix[row, columns] = 1
    assert min_cover_count(sp.csr_matrix(matrix)) == 2
    assert min_cover_count(sp.csr_matrix(np.vstack([matrix, np.zeros(7)]))) == 2
    assert min_cover_count(sp.csr_matrix(np.eye(5))) == 5
    assert min_cover_count(sp.csr_matrix((3, 4))) == 0


def test_min_cover_count_made_small_first_is_the_same_count():
    """The MIP solves the cover made small (dominated columns and implied rows dropped): on
    random vertex covers (a row per edge, reaching its two ends; the LP floor is often below
    the count), with each edge's row repeated, rows reaching a third column, and columns
    reaching part of another's rows, its count is the fewest columns found by trying every set
    of columns, smallest first."""
    from itertools import combinations

    from covplan.solve.bounds import _lp_cover_floor

    rng = np.random.default_rng(3)
    below_floor = 0
    for _ in range(20):
        edges = [e for e in combinations(range(8), 2) if rng.random() < 0.5]
        rows = []
        for a, b in edges:
            rows += [[a, b], [a, b], [a, b, int(rng.integers(8))]]
        matrix = np.zeros((len(rows), 12))
        for row, columns in enumerate(rows):
            matrix[row, columns] = 1
        for extra in range(8, 12):          # part of column `of`'s rows
            of = np.flatnonzero(matrix[:, int(rng.integers(8))])
            matrix[of[rng.random(len(of)) < 0.5], extra] = 1
        fewest = next(k for k in range(1, 13)
                      if any(matrix[:, list(cols)].any(axis=1).all()
                             for cols in combinations(range(12), k)))
        below_floor += _lp_cover_floor(sp.csr_matrix(matrix)) < fewest
        assert min_cover_count(sp.csr_matrix(matrix)) == fewest
    assert below_floor >= 5             # the MIP decided those


def _strip(n: int, reach: int) -> sp.csr_matrix:
    """Units 0..n-1 on a line, one site at each; unit i reaches site j when |i - j| <= reach."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return sp.csr_matrix((np.abs(i - j) <= reach).astype(float))


def test_count_shortfall_when_covering_everyone_takes_too_many_centers():
    """27 units on a strip, 50 residents each but 400 at units 8 and 18 (2,050 in all); a site
    reaches 4 units either way. Every unit reaches a site gathering 800 (the band's floor), so
    no one is forced undersized, yet covering all 27 takes 3 sites (9 units each), and 3
    communities of at least 500 (the tiny floor) leave at most 2,050 - 2 x 500 = 1,050 residents
    for one balanced community (two would need 800 + 800 + 500 > 2,050): 1,000 short. A second
    district with the same residents spread for 2 sites loses nothing."""
    pop = np.full(27, 50.0)
    pop[[8, 18]] = 400.0
    strip = _strip(27, 4)
    gathers = strip.T @ pop
    assert ((strip.multiply(gathers >= 800)).sum(axis=1) > 0).all()     # no one forced
    assert min_cover_count(strip) == 3
    band = {"min_pop": 800, "max_pop": 1_200, "tiny_pop": 500}
    one = count_shortfall(strip, pop, np.zeros(27, bool), np.zeros(27, "int64"), **band)
    assert one == {0: 1_000}
    both = sp.block_diag([strip, _strip(18, 4)]).tocsr()
    wide = np.r_[pop, np.full(18, 100.0)]                # 1,800: two communities of 900
    district = np.r_[np.zeros(27, "int64"), np.ones(18, "int64")]
    assert count_shortfall(both, wide, np.zeros(45, bool), district, **band) == {0: 1_000}
    # Forced residents may fill regular communities' floors: 1,000 of them close the gap.
    extra = sp.vstack([strip, sp.csr_matrix(np.ones((1, 27)))]).tocsr()
    more = np.r_[pop, 1_000.0]
    assert count_shortfall(extra, more, np.r_[np.zeros(27, bool), True],
                           np.zeros(28, "int64"), **band) == {}


def test_count_shortfall_asks_the_exact_count_where_the_lp_floor_leaves_room():
    """Five squares joined pairwise by ten lanes of 240 residents; a lane's residents reach the
    squares at its two ends. Covering everyone is a vertex cover of the five squares' complete
    graph: the LP floor is 3 (every square at one half: 2.5, rounded up), which 2,400 residents
    could fill at the floor of 800, but every cover takes 4 squares. 4 communities of at least
    500 leave room for one balanced community of at most 2,400 - 3 x 500 = 900: 1,500 residents
    short."""
    from itertools import combinations

    from covplan.solve.bounds import _lp_cover_floor

    lanes = list(combinations(range(5), 2))
    rows = np.repeat(np.arange(len(lanes)), 2)
    lanes_to_squares = sp.csr_matrix((np.ones(2 * len(lanes)), (rows, np.ravel(lanes))),
                                     shape=(len(lanes), 5))
    pop = np.full(len(lanes), 240.0)
    assert _lp_cover_floor(lanes_to_squares) == 3 and min_cover_count(lanes_to_squares) == 4
    assert count_shortfall(lanes_to_squares, pop, np.zeros(len(lanes), bool),
                           np.zeros(len(lanes), "int64"), min_pop=800, max_pop=1_200,
                           tiny_pop=500) == {0: 1_500}


def _street_plan(pops: list[int], jobs: int = 1):
    """The strip as a street: 27 cells of 100 m, a node in each, 5.4 minutes' walk (four cells
    either way), band 800-1,200, tiny floor 500."""
    G = nx.MultiDiGraph(crs=CRS)
    for k in range(27):
        G.add_node(k, x=X0 + 100.0 * k + 50.0, y=Y0 + 50.0)
        if k:
            G.add_edge(k - 1, k, length=100.0, highway="residential")
            G.add_edge(k, k - 1, length=100.0, highway="residential")
    frame = gpd.GeoDataFrame({"cell_id": [f"c{k}" for k in range(27)], "pop": pops},
                             geometry=[box(X0 + 100 * k, Y0, X0 + 100 * (k + 1), Y0 + 100)
                                       for k in range(27)], crs=CRS)
    config = PlanConfig(target_pop=1_000, tolerance=0.2, max_minutes=5.4,
                        candidate_spacing_m=100.0, max_unit_pop=None, restarts=1, jobs=jobs)
    return plan_communities(WalkNetwork.from_graph(G),
                            Population.from_frame(frame, population_column="pop",
                                                  id_column="cell_id"), config=config)


def test_a_strip_whose_cover_takes_too_many_centers_has_a_lower_ceiling_and_says_why():
    """The strip above as a street: 27 cells of 100 m, a node in each, 5.4 minutes' walk (four
    cells either way). The walking rule alone allows everyone in band, the count of centers
    does not with the tiny-community rule: at least 1,000 residents stay outside the band. The
    planner's plan here holds 1,600 in band by leaving a community of 450, below the tiny floor
    of 500 (a broken rule, reported); the program around that miss proves more (the only three
    circles covering the street leave that 450, and four communities of 500 or more leave none
    in band): the ceiling is the larger proof, and the rule issues give it."""
    from covplan.plan.replan import rule_issues

    plan = _street_plan([400 if k in (8, 18) else 50 for k in range(27)])
    r = plan.report
    assert r["forced_undersized_population"] == 0 and r["count_short_population"] == 1_000
    assert 1_000 < r["packing_short_population"] <= 2_050
    assert r["within_tolerance_pop_share_ceiling"] == 1.0
    assert r["within_tolerance_pop_share_ceiling_rules"] == pytest.approx(
        1 - r["packing_short_population"] / 2_050)
    # The bound's claim: a plan above it breaks the tiny-community rule.
    assert (r["within_tolerance_pop_share"] <= r["within_tolerance_pop_share_ceiling_rules"]
            or r["regular_communities_below_min_pop_exception"] > 0)
    assert any(f"at least {r['packing_short_population']:,} residents stay outside the band in "
               "any plan" in line for line in rule_issues(plan))
    # The notes of the communities the plan left outside the band carry the proof around them,
    # which claims nothing "cannot" of one community.
    missed = plan.communities[~plan.communities["within_tolerance"]]
    assert len(missed) and all(
        f"at least {r['packing_short_population']:,} residents stay outside the band in any plan "
        "keeping the rules" in note and "cannot" not in note for note in missed["note"])
    # The tiny one's neighbourhood is the whole street: the same program without a tiny
    # community, set against the 450 outside the band now, is what clearing it costs at least.
    tiny = plan.communities[plan.communities["population"] < 500]
    assert len(tiny) == r["regular_communities_below_min_pop_exception"] == 1
    assert r["tiny_communities_locked"] == 0
    assert (f"any split of it and its neighbours (3 communities, 2,050 residents) without a "
            f"community below 500 puts at least {r['packing_short_population'] - 450:,} more "
            "residents outside the band") in tiny["note"].iloc[0]


def test_packing_shortfall_when_circles_that_cover_everyone_cannot_all_reach_the_floor():
    """27 units on a strip (a site at each, reaching 4 units either way), 2,500 residents: the
    band 800-1,200 allows 3 communities only, and 3 sites cover the strip only at units 4, 13
    and 22, whose circles are the three blocks of 9 units exactly. The middle block holds 700,
    so no plan has all three in band — yet every unit reaches a site gathering 800 (no one is
    forced) and the count of centers leaves room. The linear program proves it; 108 more
    residents in the middle block (808) and it has a solution, and no claim is made."""
    from covplan.solve.packing import all_in_band_impossible

    strip = _strip(27, 4)
    side = [60] * 5 + [150] * 4
    pop = np.array(side + [80, 80, 80, 80, 60, 80, 80, 80, 80] + side[::-1], dtype=float)
    band = {"min_pop": 800, "max_pop": 1_200, "tiny_pop": 500}
    none_forced = np.zeros(27, bool)
    assert ((strip.multiply(strip.T @ pop >= 800)).sum(axis=1) > 0).all()
    assert count_shortfall(strip, pop, none_forced, np.zeros(27, "int64"), **band) == {}
    assert all_in_band_impossible(strip, pop, min_pop=800, max_pop=1_200)
    assert packing_shortfall(strip, pop, none_forced, np.zeros(27, "int64"), **band) == {0: 500}
    # Forced residents of the district may fill the community left outside: 200 of them.
    extra = sp.vstack([strip, sp.csr_matrix(np.eye(1, 27))]).tocsr()
    assert packing_shortfall(extra, np.r_[pop, 200.0], np.r_[none_forced, True],
                             np.zeros(28, "int64"), **band) == {0: 300}
    roomy = pop.copy()
    roomy[9:18] += 12
    assert not all_in_band_impossible(strip, roomy, min_pop=800, max_pop=1_200)
    assert packing_shortfall(strip, roomy, none_forced, np.zeros(27, "int64"), **band) == {}
    # A count the band leaves open (2,500 at a band of 600-1,200: 3 or 4 communities): not tried.
    assert packing_shortfall(strip, pop, none_forced, np.zeros(27, "int64"),
                             min_pop=600, max_pop=1_200, tiny_pop=500) == {}



def _packing_strip() -> tuple[sp.csr_matrix, np.ndarray, sp.csr_matrix]:
    """The packing strip (27 units, 2,500 residents, middle block 700): reach, residents, and
    each pair valued by the residents of its site's circle (on a line, the unit's piece)."""
    strip = _strip(27, 4)
    side = [60] * 5 + [150] * 4
    pop = np.array(side + [80, 80, 80, 80, 60, 80, 80, 80, 80] + side[::-1], dtype=float)
    return strip, pop, strip.multiply(strip.T @ pop).tocsr()


def test_the_fewest_residents_outside_the_band_on_the_packing_strip():
    """On the packing strip every plan keeping the tiny rule leaves 700 residents outside the
    band or more (the three blocks are the only 3-site cover; 4 communities of 500 or more
    hold at most one in band): the program's optimum proves a part of it and never more. With
    800 residents outside the strip that every site reaches (a region's open edge), or 108 more
    residents in the middle, it proves nothing; 200 forced residents who may fill a community
    outside the band weaken it."""
    from covplan.solve.packing import fewest_outside_band

    strip, pop, piece = _packing_strip()
    band = {"min_pop": 800, "max_pop": 1_200, "tiny_pop": 500}
    none_forced, closed = np.zeros(27, bool), np.zeros(27)
    proven = fewest_outside_band(piece, pop, none_forced, closed, **band)
    assert 250 <= proven <= 700
    assert fewest_outside_band(piece, pop, none_forced, closed, **band) == proven
    assert fewest_outside_band(piece, pop, none_forced, np.full(27, 800.0), **band) == 0
    assert 0 < fewest_outside_band(piece, pop, none_forced, np.full(27, 100.0), **band) <= proven
    roomy = pop.copy()
    roomy[9:18] += 12
    assert fewest_outside_band(strip.multiply(strip.T @ roomy).tocsr(), roomy, none_forced,
                               closed, **band) == 0
    extra = sp.vstack([piece, sp.csr_matrix(np.eye(1, 27, 13) * 900.0)]).tocsr()
    assert fewest_outside_band(extra, np.r_[pop, 200.0], np.r_[none_forced, True], closed,
                               **band) <= proven


def test_the_dual_simplex_first_proves_what_the_interior_point_proves(monkeypatch):
    """The programs around a plan's misses go to the dual simplex first: the same proof as the
    interior point's on the packing strip and its variants, the same "no solution" (a unit
    whose only site gathers too few), and the interior point's answer where the simplex runs
    out of iterations."""
    from covplan.solve import packing
    from covplan.solve.packing import least_outside_band

    strip, pop, piece = _packing_strip()
    band = {"min_pop": 800, "max_pop": 1_200, "tiny_pop": 500}
    none_forced = np.zeros(27, bool)
    roomy = pop.copy()
    roomy[9:18] += 12
    cases = [(piece, pop, none_forced, np.zeros(27)),
             (piece, pop, none_forced, np.full(27, 100.0)),
             (strip.multiply(strip.T @ roomy).tocsr(), roomy, none_forced, np.zeros(27)),
             (sp.vstack([piece, sp.csr_matrix(np.eye(1, 27, 13) * 900.0)]).tocsr(),
              np.r_[pop, 200.0], np.r_[none_forced, True], np.zeros(27))]
    answers = [least_outside_band(*case, **band)[0] for case in cases]
    assert answers[0] > 0 and answers[2] == 0
    assert [least_outside_band(*case, **band, simplex_first=True)[0] for case in cases] == answers
    lonely = sp.csr_matrix(np.array([[400.0, 0.0], [400.0, 900.0], [0.0, 900.0]]))
    assert np.isinf(least_outside_band(lonely, np.array([100.0, 300.0, 600.0]), np.zeros(3, bool),
                                       np.zeros(2), **band, simplex_first=True)[0])
    monkeypatch.setattr(packing, "SIMPLEX_ITERATIONS", 0.0)
    monkeypatch.setattr(packing, "SIMPLEX_SPARE", 1)
    calls, interior_point = [], packing._interior_point
    monkeypatch.setattr(packing, "_interior_point",
                        lambda *a, **k: calls.append(1) or interior_point(*a, **k))
    assert least_outside_band(*cases[0], **band, simplex_first=True)[0] == answers[0]
    assert calls == [1]


def test_around_plan_proves_what_no_plan_balances_around_a_miss():
    """A plan of the packing strip as its three blocks misses the band with the middle one: the
    program over it and its neighbours (the whole strip) proves residents outside the band in
    any plan, which come off the ceiling of plans keeping the rules; a plan without a miss adds
    no proof."""
    from covplan.solve.packing import fewest_outside_band

    strip, pop, piece = _packing_strip()
    units = np.arange(27)
    bound = FeasibilityBound(gather=np.asarray(strip.T @ pop).ravel(),
                             best_gather=np.asarray(piece.max(axis=1).todense()).ravel(),
                             contiguous=True, reachable=np.ones(27, bool),
                             forced_undersized=np.zeros(27, bool), island=np.zeros(27, bool),
                             pop=pop.astype("int64"), min_pop=800.0,
                             district_of=np.zeros(27, "int64"), piece=piece)
    line = sp.diags([np.ones(26), np.ones(26)], [-1, 1]).tocsr()
    blocks = units // 9
    band = {"min_pop": 800, "max_pop": 1_200, "tiny_pop": 500}
    proven = fewest_outside_band(piece, pop, np.zeros(27, bool), np.zeros(27), **band)
    got = around_plan(bound, blocks, np.array([False, True, False]), line, **band)
    assert got.around_short == {0: proven}
    figures = got.figures()
    assert figures["packing_short_population"] == proven
    assert figures["within_tolerance_pop_share_ceiling_rules"] == pytest.approx(1 - proven / 2_500)
    assert around_plan(bound, blocks, np.zeros(3, bool), line, **band) is bound

def test_shortfalls_proven_beside_the_planning_are_the_same():
    """With two jobs the count and packing programs run in a process beside the planning
    (`covplan._parallel.Beside`): the report and the notes are those of one job."""
    for pops in ([400 if k in (8, 18) else 50 for k in range(27)],            # count, around
                 [60] * 5 + [150] * 4 + [80] * 4 + [60] + [80] * 4 + [150] * 4 + [60] * 5):  # packing
        one, two = _street_plan(pops), _street_plan(pops, jobs=2)
        assert two.report["count_short_population"] == one.report["count_short_population"]
        assert two.report["packing_short_population"] == one.report["packing_short_population"] > 0
        assert ({k: v for k, v in two.report.items() if k != "runtime_s"}
                == {k: v for k, v in one.report.items() if k != "runtime_s"})
        assert two.communities["note"].tolist() == one.communities["note"].tolist()


def test_a_street_that_cannot_be_packed_has_a_lower_ceiling_and_says_why():
    """The packing case above as a street: no one forced, the count of centers leaves room, but
    no plan has its three communities in band; the report's ceiling for plans keeping the rules
    is 2,000 of 2,500 and the rule issues say why."""
    from covplan.plan.replan import rule_issues

    side = [60] * 5 + [150] * 4
    plan = _street_plan(side + [80, 80, 80, 80, 60, 80, 80, 80, 80] + side[::-1])
    r = plan.report
    assert r["forced_undersized_population"] == 0 and r["count_short_population"] == 0
    assert r["packing_short_population"] == 500
    assert r["within_tolerance_pop_share_ceiling"] == 1.0
    assert r["within_tolerance_pop_share_ceiling_rules"] == pytest.approx(2_000 / 2_500)
    assert (r["within_tolerance_pop_share"] <= r["within_tolerance_pop_share_ceiling_rules"]
            or r["regular_communities_below_min_pop_exception"] > 0)
    assert any("a linear program over the sites proves it" in line
               and "at least 500 residents stay outside the band in any plan" in line
               for line in rule_issues(plan))


def _cover_plan_task(_: int) -> np.ndarray | None:
    from covplan.solve.partition.tight_cover import cover_plan

    return cover_plan(*shared()["args"], **shared()["band"])


def test_a_tight_strip_is_planned_from_its_minimum_cover():
    """The packing strip above (3 communities the only count, 3 sites cover it only at units 4,
    13 and 22): from a plan with no community in band, the minimum cover's plan is the three
    blocks, two in band (900 each) and the middle one below it (700, above the tiny floor),
    each block one piece around a site all its units reach; the same twice; nothing when the
    plan already holds as many residents in band, and nothing on an instance that is not
    tight (the band leaves two counts)."""
    from covplan.solve.partition.tight_cover import cover_plan

    strip = _strip(27, 4)
    minutes = strip.multiply(np.abs(np.subtract.outer(np.arange(27), np.arange(27))) + 1.0).tocsr()
    side = [60] * 5 + [150] * 4
    pop = np.array(side + [80, 80, 80, 80, 60, 80, 80, 80, 80] + side[::-1], dtype=float)
    line = sp.diags([np.ones(26), np.ones(26)], [-1, 1]).tocsr()
    start = np.zeros(27, dtype="int64")
    band = {"min_pop": 800, "max_pop": 1_200, "tiny_pop": 500}
    got = cover_plan(minutes, pop, line, start, balanced=0, **band)
    assert got is not None
    assert got.tolist() == [4] * 9 + [13] * 9 + [22] * 9
    assert (cover_plan(minutes, pop, line, start, balanced=0, **band) == got).all()
    # As the one task of a plan's last stage on two jobs, its tries run side by side on the
    # spare process: the same plan.
    beside = run_tasks(_cover_plan_task, [0], jobs=2, lend=True,
                       data={"args": (minutes, pop, line, start), "band": {**band, "balanced": 0}})
    assert beside[0].tolist() == got.tolist()
    assert cover_plan(minutes, pop, line, start, balanced=1_800, **band) is None
    assert cover_plan(minutes, pop, line, start, balanced=0, min_pop=600, max_pop=1_200,
                      tiny_pop=500) is None


def _spokes() -> tuple[sp.csr_matrix, np.ndarray]:
    """Four spoke units of 100 residents (units 0-3), each reaching its own site only (sites
    0-3); four core units of 500 (units 4-7) reaching the four spoke sites and a core site (4);
    a dense quarter of five units of 1,000 (units 8-12) reaching two sites of its own (5, 6).
    Band 800-1,200, tiny floor 500: every unit reaches a site gathering 800 or more."""
    rows = [[0], [1], [2], [3]] + [[0, 1, 2, 3, 4]] * 4 + [[5, 6]] * 5
    structure = sp.csr_matrix((np.ones(sum(map(len, rows))),
                               (np.repeat(np.arange(13), [len(r) for r in rows]),
                                np.concatenate(rows))), shape=(13, 7))
    return structure, np.r_[np.full(4, 100.0), np.full(4, 500.0), np.full(5, 1_000.0)]


def test_units_that_share_no_site_prove_a_shortfall_the_count_does_not():
    """The four spokes share no site, so they lie in four communities, each filled from the
    2,000 core residents: in band a spoke's community takes 700 of them, outside it at least
    400 (the tiny floor), and 700 b + 400 (4 - b) <= 2,000 allows b = 1 at most, so three
    communities of 500 or more stay outside the band in any plan keeping the rules: 1,500
    residents (less a resident's margin for the solver's tolerance). The count of centers sees
    room (5 sites cover everyone; 7,400 residents fill 9 communities at the floor). Contiguity
    (the units' adjacency) can only hold communities to less. Residents
    forced undersized may fill the floors of communities outside the band: with one core unit
    forced, 1,000 of those who are not."""
    from covplan.solve.bounds import separated_shortfall
    from covplan.solve.packing import separated_outside_band

    structure, pop = _spokes()
    band = {"min_pop": 800, "tiny_pop": 500}
    none_forced = np.zeros(13, bool)
    gathers = np.asarray(structure.T @ pop).ravel()
    assert ((structure.multiply(gathers >= 800)).sum(axis=1) > 0).all()    # no one forced
    assert count_shortfall(structure, pop, none_forced, np.zeros(13, "int64"), max_pop=1_200,
                           **band) == {}
    assert 1_498 <= separated_outside_band(structure, pop, none_forced, **band) <= 1_500
    forced = none_forced.copy()
    forced[4] = True
    assert 998 <= separated_outside_band(structure, pop, forced, **band) <= 1_000
    # A richer core (2,800: 700 b + 400 (4 - b) <= 2,800 allows all four) proves nothing.
    richer = pop.copy()
    richer[4:8] = 700.0
    assert separated_outside_band(structure, richer, none_forced, **band) == 0
    # Communities are contiguous: where each spoke touches one core unit only and the core
    # units do not touch, a spoke's community holds at most 600 (its piece), none reaches the
    # floor and all four keep 500 or more outside the band.
    touching = sp.coo_matrix((np.ones(8), (np.r_[0:4, 4:8], np.r_[4:8, 0:4])), shape=(13, 13))
    assert 1_998 <= separated_outside_band(structure, pop, none_forced, adjacency=touching,
                                           **band) <= 2_000
    # Per district: the dense quarter as a district of its own proves nothing there.
    district = np.r_[np.zeros(8, "int64"), np.ones(5, "int64")]
    got = separated_shortfall(structure, pop, none_forced, district, **band)
    assert list(got) == [0] and 1_498 <= got[0] <= 1_500


def test_the_separated_proof_lowers_the_ceiling_of_plans_keeping_the_rules_and_says_why():
    """The spokes' proof comes off the ceiling of plans keeping the rules as the largest of the
    proofs, and the rule issues name it."""
    from types import SimpleNamespace

    from covplan.plan.replan import _count_issues
    from covplan.solve.bounds import separated_shortfall

    structure, pop = _spokes()
    short = separated_shortfall(structure, pop, np.zeros(13, bool), np.zeros(13, "int64"),
                                min_pop=800, tiny_pop=500)
    bound = FeasibilityBound(gather=np.asarray(structure.T @ pop).ravel(),
                             best_gather=np.full(13, 2_100.0), contiguous=False,
                             reachable=np.ones(13, bool), forced_undersized=np.zeros(13, bool),
                             island=np.zeros(13, bool), pop=pop.astype("int64"), min_pop=800.0,
                             district_of=np.zeros(13, "int64"), count_short={},
                             packing_short={0: 500}, separated_short=short)
    figures = bound.figures()
    assert figures["separated_short_population"] == short[0]
    assert figures["within_tolerance_pop_share_ceiling_rules"] == pytest.approx(1 - short[0] / 7_400)
    plan = SimpleNamespace(config=PlanConfig(target_pop=1_000, tolerance=0.2, max_minutes=5.0),
                           report=figures)
    issues = _count_issues(plan)
    assert len(issues) == 1 and "share no reachable center" in issues[0]
    assert f"at least {short[0]:,} residents stay outside the band in any plan" in issues[0]


def _fewest_outside_exactly(structure: sp.csr_matrix, pop: np.ndarray, forced: np.ndarray, *,
                            min_pop: float, max_pop: float, tiny_pop: float) -> float:
    """The fewest residents who are not forced outside the band over every assignment of the
    units to sites they reach (contiguity left out, so below any plan's), with the tiny rule:
    a community below `tiny_pop` holds forced residents only. HiGHS on the integer model."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    pairs = structure.tocoo()
    n_units, n_sites, n_pairs = structure.shape[0], structure.shape[1], pairs.nnz
    big = float(pop.sum())
    # Variables: x (pairs), y (open), b (in band), e (an exception), o (able residents outside).
    x, y, b, e, o = (np.arange(n_pairs), n_pairs + np.arange(n_sites),
                     n_pairs + n_sites + np.arange(n_sites), n_pairs + 2 * n_sites + np.arange(n_sites),
                     n_pairs + 3 * n_sites + np.arange(n_sites))
    n_vars = n_pairs + 4 * n_sites
    rows, lo, hi = [], [], []

    def row(entries, low, high):
        r = np.zeros(n_vars)
        for index, value in entries:
            r[index] += value
        rows.append(r)
        lo.append(low)
        hi.append(high)

    able = ~forced
    for u in range(n_units):
        row([(x[k], 1.0) for k in np.flatnonzero(pairs.row == u)], 1, 1)
    for k in range(n_pairs):
        row([(x[k], 1.0), (y[pairs.col[k]], -1.0)], -np.inf, 0)
        if able[pairs.row[k]]:
            row([(x[k], 1.0), (e[pairs.col[k]], 1.0)], -np.inf, 1)
    for c in range(n_sites):
        members = [(x[k], pop[pairs.row[k]]) for k in np.flatnonzero(pairs.col == c)]
        row(members + [(y[c], -tiny_pop), (e[c], tiny_pop)], 0, np.inf)
        row(members + [(b[c], -min_pop)], 0, np.inf)
        row(members + [(b[c], big - max_pop)], -np.inf, big)
        row([(x[k], -pop[pairs.row[k]]) for k in np.flatnonzero(pairs.col == c) if able[pairs.row[k]]]
            + [(o[c], 1.0), (b[c], big)], 0, np.inf)
        row([(b[c], 1.0), (y[c], -1.0)], -np.inf, 0)
    cost = np.zeros(n_vars)
    cost[o] = 1.0
    integral = np.r_[np.ones(n_pairs + 3 * n_sites), np.zeros(n_sites)]
    res = milp(cost, integrality=integral, bounds=Bounds(0, np.r_[np.ones(n_pairs + 3 * n_sites),
                                                                  np.full(n_sites, np.inf)]),
               constraints=[LinearConstraint(np.array(rows), lo, hi)])
    return np.inf if res.x is None else float(res.fun)


def test_the_separated_proof_never_claims_more_than_the_exact_optimum():
    """On 40 seeded strips with dense and thin stretches, the proof never exceeds the exact
    fewest residents outside the band (HiGHS on the integer model, without contiguity, so
    below every plan's), and it proves something on some of them."""
    from covplan.solve.packing import separated_outside_band

    band = {"min_pop": 800.0, "tiny_pop": 500.0}
    proofs = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n = 16
        strip = _strip(n, 2)
        pop = np.where(rng.random(n) < 0.4, rng.integers(250, 450, n), rng.integers(20, 120, n))
        pop = pop.astype(float)
        gathers = np.asarray(strip.T @ pop).ravel()
        forced = ~np.asarray((strip.multiply(gathers >= 800)).sum(axis=1) > 0).ravel()
        proof = separated_outside_band(strip, pop, forced, **band)
        exact = _fewest_outside_exactly(strip.tocsr(), pop, forced, max_pop=1_200.0, **band)
        assert proof <= exact + 1e-6, (seed, proof, exact)
        proofs += proof > 0
    assert proofs >= 3


def test_a_note_on_a_detached_piece_states_what_was_checked():
    """`_detached` looks at the bordering communities' centers; the note says what it found."""
    from types import SimpleNamespace

    from covplan.metrics import _detached

    # Units 0-1-2-3 in a row; community 0 holds units 0 and 2 (apart), community 1 units 1
    # and 3. Community 1's center (candidate 1) reaches unit 2 in `near`, not in `far`.
    adjacency = sp.csr_matrix((np.ones(6), ([0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2])),
                              shape=(4, 4))
    labels, planned, pop = np.array([0, 1, 0, 1]), np.array([0, 1]), np.array([900, 500, 40, 500])
    near = SimpleNamespace(minutes=sp.csr_matrix(np.array([[1.0, 0], [0, 2.0], [3.0, 4.0],
                                                           [0, 1.0]])))
    far = SimpleNamespace(minutes=sp.csr_matrix(np.array([[1.0, 0], [0, 2.0], [3.0, 0],
                                                          [0, 1.0]])))
    members = np.array([0, 2])
    assert _detached(members, labels, planned, near, adjacency, pop) == (40, 1, True)
    assert _detached(members, labels, planned, far, adjacency, pop) == (40, 1, False)
    alone = _note(940, False, "", 9_000.0, 0, CONFIG, detached=(40, 1, False))
    assert "no bordering community's center reaches all of its detached piece (40 " in alone
    regular = _note(940, False, "", 9_000.0, 0, CONFIG, detached=(40, 1, True))
    assert "reaches all of its detached piece (40 residents); the planner did not move" in regular
    pocket = _note(940, False, "remote pocket", 1_900.0, 0, CONFIG, detached=(40, 2, True))
    assert "reaches all of one of its 2 detached pieces (40 residents), but an exception" in pocket
    apart = _note(940, False, "", 9_000.0, 0, CONFIG, detached=(40, 2, False))
    assert "no bordering community's center reaches all of any of its 2 detached pieces" in apart


def test_all_in_band_program_relaxed_by_joining_similar_units_proves_only_what_is_true():
    """Units whose sites nearly repeat a leader's are joined, reaching their sites' union: a
    relaxation, so where it has no solution the program on the units has none. On random strips
    (sites reaching 3-6 units either way, residents drawn so that some strips can all be in
    band and some cannot) the answer with the relaxation first is always that of the program
    alone, and the relaxation alone gives the proof on some of them."""
    from covplan.solve.packing import _no_plan_in_band, all_in_band_impossible, similar_rows_joined

    rng = np.random.default_rng(7)
    proofs = by_relaxation = 0
    for _ in range(40):
        n, reach = int(rng.integers(20, 40)), int(rng.integers(3, 7))
        strip = _strip(n, reach)
        # Sites drop out at random, so that neighbouring units reach nearly, not exactly, the
        # same sites.
        strip = strip[:, rng.random(n) < 0.7].tocsr()
        if (np.diff(strip.indptr) == 0).any():
            continue
        pop = rng.integers(40, 160, size=n).astype(float)
        alone = _no_plan_in_band(strip, pop, 800, 1_200)
        assert all_in_band_impossible(strip, pop, min_pop=800, max_pop=1_200) == alone
        joined, weight = similar_rows_joined(strip, pop, similar=0.6)
        assert weight.sum() == pop.sum() and joined.shape[0] < n
        relaxed = _no_plan_in_band(joined, weight, 800, 1_200)
        assert alone or not relaxed
        proofs += alone
        by_relaxation += relaxed
    assert proofs >= 5 and by_relaxation >= 3
