"""One definition of coverage (`covplan.metrics.coverage_figures`): by hand, and the as-is summary,
a plan's report and a comparison's figures against it on the same units."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyproj
import pytest
from conftest import grid_town
from covplan.assess import assess_coverage
from covplan.config import PlanConfig
from covplan.metrics import coverage_figures
from covplan.output.compare import compare_plans
from covplan.plan.pipeline import Plan, plan_communities
from shapely.geometry import box

X0, Y0, CRS, N = 500_000.0, 4_000_000.0, "EPSG:32633", 10
LIMIT = 8.0
CONFIG = PlanConfig(target_pop=2_000, tolerance=0.5, max_minutes=LIMIT, candidate_spacing_m=150.0,
                    max_unit_pop=None, restarts=1)


def test_coverage_figures_by_hand():
    # Unit 1 is covered by the nearest center but not its own; unit 2 has no community (NaN);
    # unit 4 reaches no site at all; unit 5 sits on the limit (within its float tolerance).
    pop = np.array([100, 200, 300, 400, 500, 50])
    own = np.array([5.0, 20.0, np.nan, 15.0, np.inf, 15.0 + 1e-12])
    nearest = np.array([5.0, 3.0, 8.0, 15.0, np.inf, 15.0])
    reachable = np.array([True, True, True, True, False, True])
    f = coverage_figures(pop, minutes_own=own, minutes_nearest=nearest, reachable=reachable,
                         max_minutes=15.0)
    assert f == {
        "population_total": 1_550,
        "population_covered": 550,                     # units 0, 3, 5
        "population_uncovered": 1_000,
        "coverage_share": pytest.approx(550 / 1_550),
        "nearest_center_share": pytest.approx(1_050 / 1_550),   # units 0, 1, 2, 3, 5
        "population_beyond_nearest": 500,
        "coverage_share_of_reachable": pytest.approx(550 / 1_050),
        "unreachable_population": 500,
    }
    # Optional figures only when their inputs are known; no residents give shares of 0.
    assert set(coverage_figures(pop, minutes_own=own, max_minutes=15.0)) == {
        "population_total", "population_covered", "population_uncovered", "coverage_share"}
    empty = coverage_figures(np.zeros(2, dtype=int), minutes_own=np.zeros(2),
                             minutes_nearest=np.zeros(2), reachable=np.zeros(2, dtype=bool),
                             max_minutes=15.0)
    assert empty["coverage_share"] == empty["nearest_center_share"] == 0.0
    assert empty["coverage_share_of_reachable"] == 0.0


@pytest.fixture(scope="module")
def town():
    """A 9 x 9 block town in two halves; the west center stands in its far corner, so some
    westerners reach the east center sooner than their own."""
    net, population = grid_town(N)
    edge = 100 * (N - 1)
    halves = gpd.GeoDataFrame({"community_id": ["west", "east"]},
                              geometry=[box(X0, Y0, X0 + 400, Y0 + edge),
                                        box(X0 + 400, Y0, X0 + edge, Y0 + edge)], crs=CRS)
    centers = gpd.GeoDataFrame({"center_id": ["W", "E"], "community_id": ["west", "east"]},
                               geometry=gpd.points_from_xy([X0, X0 + 600], [Y0, Y0 + 400]), crs=CRS)
    result = assess_coverage(net, population, centers, communities=halves, max_minutes=LIMIT)
    return net, population, halves, centers, result


def test_asis_summary_is_the_one_definition(town):
    net, population, _, centers, result = town
    u, s = result.units, result.summary()
    pop = u["pop"].to_numpy()
    expected = coverage_figures(pop, minutes_own=u["minutes_own"].to_numpy(),
                                minutes_nearest=u["minutes_nearest"].to_numpy(), max_minutes=LIMIT)
    assert {k: s[k] for k in expected} == expected
    # Own and nearest differ here, and each agrees with the units' own flags.
    assert s["population_uncovered"] > s["population_beyond_nearest"]
    assert s["population_covered"] == pop[u["covered_own"].to_numpy()].sum()
    assert s["population_total"] - s["population_beyond_nearest"] == pop[u["covered"].to_numpy()].sum()
    # Without communities a resident's own center is the nearest one.
    alone = assess_coverage(net, population, centers, max_minutes=LIMIT).summary()
    assert alone["coverage_share"] == alone["nearest_center_share"] == s["nearest_center_share"]
    assert alone["population_uncovered"] == alone["population_beyond_nearest"]


def _plan_of(result, community: np.ndarray, minutes: str) -> Plan:
    """The as-is units as a plan: each unit in `community` at `minutes` (a units column)."""
    u = result.units
    units = u[["unit_id", "cell_id", "pop", "geometry"]].copy()
    units["community_id"] = community
    units["minutes"] = u[minutes].to_numpy(dtype="float64")
    sites = result.centers[["center_id", "community_id", "geometry"]].copy()
    communities = gpd.GeoDataFrame(
        {"community_id": sites["community_id"].to_numpy(), "center_id": sites["center_id"].to_numpy()},
        geometry=list(sites.geometry.buffer(10.0)), crs=sites.crs)
    return Plan(communities=communities, centers=sites, units=units,
                isochrones=gpd.GeoDataFrame(geometry=[], crs=CRS), changes=None, previous=None,
                report={}, config=CONFIG, work_crs=pyproj.CRS(CRS), version="test")


def test_comparison_figures_are_the_one_definition(town):
    *_, result = town
    s = result.summary()
    # A: everyone in their own community; B: everyone with the community of their nearest center.
    by_center = dict(zip(result.centers["center_id"], result.centers["community_id"], strict=True))
    own = _plan_of(result, result.units["community_id"].to_numpy(), "minutes_own")
    nearest = _plan_of(result, result.units["nearest_center_id"].map(by_center).to_numpy(),
                       "minutes_nearest")
    metrics = compare_plans(own, nearest).summary["metrics"]
    assert metrics["coverage_share"]["a"] == s["coverage_share"]
    assert metrics["coverage_share"]["b"] == s["nearest_center_share"]
    assert metrics["coverage_share"]["a"] < metrics["coverage_share"]["b"]


def test_plan_report_is_the_one_definition(town):
    net, population, halves, centers, _ = town
    plan = plan_communities(net, population, communities=halves, centers=centers, config=CONFIG)
    u, r = plan.units, plan.report
    assigned = u["community_id"].notna().to_numpy()
    expected = coverage_figures(u["pop"].to_numpy(),
                                minutes_own=np.where(assigned, u["minutes"].to_numpy(), np.nan),
                                max_minutes=LIMIT)
    assert {k: r[k] for k in expected} == expected
    assert r["nearest_center_share"] >= r["coverage_share"]
    assert r["population_total"] - r["population_beyond_nearest"] >= r["population_covered"]
    assert compare_plans(plan, plan).summary["metrics"]["coverage_share"]["a"] == r["coverage_share"]
