"""The planner benchmark's plumbing: the evaluator, generated communities, the peers."""

from __future__ import annotations

import sys

import geopandas as gpd
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import grid_town
from covplan.bench import peers as bench_peers
from covplan.bench import planner as bench_plan
from covplan.config import PlanConfig
from covplan.errors import InputError
from covplan.plan.pipeline import plan_communities
from covplan.reach.matrix import ReachMatrix

X0, Y0, CRS, N = 500_000.0, 4_000_000.0, "EPSG:32633", 14
CONFIG = PlanConfig(target_pop=3_000, tolerance=0.25, max_minutes=8.0, candidate_spacing_m=150.0,
                    max_unit_pop=None, restarts=2)


def _hand_reach(minutes: sp.csr_matrix, pop: np.ndarray) -> ReachMatrix:
    """A ReachMatrix around a hand-written matrix (frames hold only what the evaluator reads)."""
    n_units, n_cand = minutes.shape
    units = gpd.GeoDataFrame({"unit_id": np.arange(n_units), "pop": pop},
                             geometry=gpd.points_from_xy(np.arange(n_units), np.zeros(n_units)), crs=CRS)
    candidates = gpd.GeoDataFrame({"candidate_id": np.arange(n_cand), "existing": False, "center_id": ""},
                                  geometry=gpd.points_from_xy(np.arange(n_cand), np.ones(n_cand)), crs=CRS)
    minutes.sort_indices()
    return ReachMatrix(units=units, candidates=candidates, minutes=minutes, max_minutes=15.0,
                       walk_speed_kmh=4.5, direction="to_center", input_crs=units.crs, work_crs=units.crs)


def test_evaluator_figures_by_hand():
    # Six units in a row (0-1-2-3-4-5 adjacent); unit 5 reaches no candidate at all.
    minutes = sp.csr_matrix(([2.0, 4.0, 6.0, 3.0, 1.0, 9.0], ([0, 1, 2, 3, 4, 4], [0, 0, 1, 1, 1, 2])),
                            shape=(6, 3))
    pop = np.array([1_000, 1_500, 500, 2_000, 1_000, 400])
    adjacency = sp.diags([np.ones(5), np.ones(5)], [1, -1], shape=(6, 6), format="csr")
    config = PlanConfig(target_pop=3_000, tolerance=0.2)
    # Region 7 = {0, 1, 2}: c0 reaches 2,500 of 3,000; region 3 = {3, 4} (3,000) by c1;
    # region 9 = {5} reaches nothing; labels need not be 0..K-1.
    labels = np.array([7, 7, 7, 3, 3, 9])
    score = bench_plan.evaluate_partition(_hand_reach(minutes, pop), labels, adjacency=adjacency,
                                          config=config)
    assert score.communities == 3
    assert score.unreachable_population == 400
    assert score.coverage_share == pytest.approx(5_500 / 6_400)     # of all residents
    assert score.coverage_share_of_reachable == pytest.approx(5_500 / 6_000)
    assert score.population_assigned == 6_000                         # region 9 has no center
    assert score.within_tolerance_share == pytest.approx(2 / 3)       # 3,000, 3,000 in; 400 out
    assert (score.population_min, score.population_max) == (400, 3_000)
    assert score.contiguous_share == 1.0
    assert score.mean_minutes == pytest.approx((1_000 * 2 + 1_500 * 4 + 2_000 * 3 + 1_000 * 1) / 5_500)
    assert score.max_minutes == 4.0 and score.minutes_scope == "covered only"
    # Units 0 and 2 together without 1 are two pieces; {3, 4} crosses a district; -1: no region.
    split = bench_plan.evaluate_partition(_hand_reach(minutes, pop), np.array([0, 1, 0, 2, 2, -1]),
                                          adjacency=adjacency, config=config,
                                          district_of=np.array([0, 0, 0, 0, 1, 1]))
    assert split.contiguous_share == pytest.approx(2 / 3) and split.crossing_districts == 1
    with pytest.raises(InputError, match="labels"):
        bench_plan.evaluate_partition(_hand_reach(minutes, pop), labels[:3], adjacency=adjacency,
                                      config=config)


@pytest.fixture(scope="module")
def town():
    net, population = grid_town(N)
    return net, population, bench_plan.build_instance(net, population, config=CONFIG)


def test_generated_communities_are_contiguous_seeded_and_centered(town):
    _, population, instance = town
    existing = bench_plan.generate_communities(instance, n_communities=6, seed=4)
    again = bench_plan.generate_communities(instance, n_communities=6, seed=4)
    other = bench_plan.generate_communities(instance, n_communities=6, seed=5)
    assert np.array_equal(existing.labels, again.labels)
    assert not np.array_equal(existing.labels, other.labels)
    assert sorted(np.unique(existing.labels)) == list(range(6))
    assert existing.communities["population"].sum() == population.total
    assert all(g.geom_type == "Polygon" for g in existing.communities.geometry)
    score = bench_plan.score(instance, existing.labels)
    assert score.contiguous_share == 1.0 and score.communities == 6
    assert len(existing.centers) == 6 and existing.centers["center_id"].is_unique
    areas = existing.communities.set_index("community_id").to_crs(instance.network.crs)
    for row in existing.centers.to_crs(instance.network.crs).itertuples():
        assert areas.loc[row.community_id, "geometry"].distance(row.geometry) < 0.01


def test_our_plan_scores_as_its_own_report(town):
    net, population, instance = town
    plan = plan_communities(net, population, config=CONFIG)
    score = bench_plan.score(instance, bench_plan.plan_labels(instance, plan))
    report = plan.report
    assert score.communities == report["communities"]
    assert score.within_tolerance_share == report["within_tolerance_share"]
    assert score.contiguous_share == report["contiguous_share"]
    # Re-siting can only keep or improve the plan's own centers.
    assert score.coverage_share_of_reachable >= report["coverage_share_of_reachable"] == 1.0
    assert score.coverage_share >= report["coverage_share"]
    assert score.mean_minutes <= report["mean_minutes"] + 1e-9
    assert score.max_minutes <= CONFIG.max_minutes + 1e-9 and score.minutes_scope == "all assigned"
    other = bench_plan.build_instance(net, population, config=PlanConfig(
        target_pop=3_000, tolerance=0.25, max_minutes=8.0, max_unit_pop=100))
    with pytest.raises(InputError, match="units differ"):
        bench_plan.plan_labels(other, plan)


def test_minutes_beyond_the_limit_are_measured_on_the_network(town):
    _, _, instance = town
    # One region of the whole town: its best center cannot reach the far corners in 8 minutes.
    labels = np.zeros(len(instance.reach.units), dtype="int64")
    score = bench_plan.score(instance, labels)
    assert score.coverage_share < 1.0
    assert CONFIG.max_minutes < score.max_minutes < 60
    # The farthest resident is no farther than the town's diagonal walk (26 blocks of 100 m).
    assert score.max_minutes <= 2 * 1_300 / instance.network.speed_m_per_min + 2


def test_peer_inputs_match_the_units(town):
    _, population, instance = town
    inputs = bench_plan.peer_inputs(instance)
    units, cells = inputs.units, inputs.cells
    assert units.pop.sum() == cells.pop.sum() == population.total
    assert len(units.x) == len(instance.reach.units)
    edges = units.edges
    assert len(edges) == instance.adjacency.nnz // 2 and (edges[:, 0] < edges[:, 1]).all()
    assert instance.adjacency[edges[:, 0], edges[:, 1]].all()
    # 13 x 13 square cells: rook neighbours only (2 * 13 * 12 shared edges).
    assert len(cells.edges) == 2 * 13 * 12
    assert np.array_equal(np.bincount(inputs.unit_cell, weights=units.pop), cells.pop)


def test_kmeans_peer(town):
    _, _, instance = town
    inputs = bench_plan.peer_inputs(instance)
    run = bench_plan.run_peer(inputs, method="kmeans", k=5, seed=0)
    assert run.labels.shape == (len(instance.reach.units),) and len(np.unique(run.labels)) == 5
    assert run.level == "units" and run.n_inputs == len(instance.reach.units) and run.solve_s > 0
    again = bench_plan.run_peer(inputs, method="kmeans", k=5, seed=0)
    assert np.array_equal(run.labels, again.labels)
    score = bench_plan.score(instance, run.labels)
    assert score.communities == 5 and score.population_assigned == instance.reach.pop.sum()


def test_maxp_peer_on_cells(town):
    _, _, instance = town
    inputs = bench_plan.peer_inputs(instance)
    before = np.random.get_state()[1].copy()
    run = bench_plan.run_peer(inputs, method="maxp", level="cells", floor=2_000, seed=0,
                              construction=2, annealing=1)
    assert run.level == "cells" and run.n_inputs == 169
    score = bench_plan.score(instance, run.labels)
    assert score.population_min >= 2_000 and score.contiguous_share == 1.0
    again = bench_plan.run_peer(inputs, method="maxp", level="cells", floor=2_000, seed=0,
                                construction=2, annealing=1)
    assert np.array_equal(run.labels, again.labels)
    # spopt is seeded through numpy's global generator; the caller's state comes back.
    assert np.array_equal(np.random.get_state()[1], before)


def test_a_missing_peer_library_names_the_extra(town, monkeypatch):
    _, _, instance = town
    monkeypatch.setitem(sys.modules, "spopt.region", None)     # import now raises ImportError
    with pytest.raises(InputError, match=r"coverage-planner\[peers\]"):
        bench_plan.run_peer(bench_plan.peer_inputs(instance), method="maxp", level="cells")
    with pytest.raises(InputError, match="unknown peer"):
        bench_peers.require("louvain")


def test_benchmark_report_and_table_on_a_small_town(town):
    net, population, _ = town
    report = bench_plan.run_plan_benchmark(net, population, config=CONFIG, peers=(),
                                           existing_communities=5, robustness_seeds=(1,),
                                           noise_draws=1, demo=False)
    methods = report["methods"]
    assert list(methods) == ["existing (generated, as-is)", "coverage redraw", "coverage merge/split"]
    for row in methods.values():
        assert row["population_total"] == population.total
    assert methods["coverage redraw"]["coverage_share"] == 1.0
    assert [r["run"] for r in report["robustness"]] == ["seed 0 (as above)", "seed 1",
                                                        "population ±1% draw 1"]
    assert report["robustness"][2]["population"] != population.total
    table = bench_plan.format_plan_table(report)
    assert "| coverage merge/split |" in table and "robustness run" in table
