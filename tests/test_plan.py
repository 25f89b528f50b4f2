"""The planner end to end: invariants on a small synthetic town and the demo replay."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from conftest import grid_graph
from covplan.config import PlanConfig
from covplan.errors import InputError
from covplan.inputs.network import WalkNetwork
from covplan.inputs.population import Population
from covplan.plan.pipeline import plan_communities
from shapely.geometry import box

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"
N = 14          # 14 x 14 streets, 100 m apart: a 1.3 km square town


@pytest.fixture(scope="module")
def town():
    net = WalkNetwork.from_graph(grid_graph(N, 100.0))
    rng = np.random.default_rng(7)
    cells, pops = [], []
    for r in range(N - 1):
        for c in range(N - 1):
            cells.append(box(X0 + 100 * c, Y0 + 100 * r, X0 + 100 * (c + 1), Y0 + 100 * (r + 1)))
            pops.append(int(rng.integers(20, 180)))
    frame = gpd.GeoDataFrame({"cell_id": [f"c{i}" for i in range(len(cells))], "pop": pops},
                             geometry=cells, crs=CRS)
    return net, Population.from_frame(frame, population_column="pop", id_column="cell_id")


CONFIG = PlanConfig(target_pop=3_000, tolerance=0.25, max_minutes=8.0, candidate_spacing_m=150.0,
                    max_unit_pop=None, restarts=2)


def _check_invariants(plan, population, config):
    units = plan.units
    assert units["pop"].sum() == population.total            # conserved to the person
    assert units["unit_id"].is_unique                           # each unit once
    served = units["community_id"].notna()
    assert (units.loc[served, "minutes"] <= config.max_minutes + 1e-9).all()
    sizes = units[served].groupby("community_id")["pop"].sum()
    table = plan.communities.set_index("community_id")
    assert (sizes == table.loc[sizes.index, "population"]).all()
    assert plan.communities.crs == population.crs
    assert plan.report["population_total"] == population.total
    # The walking rule holds for every resident who can reach any candidate.
    assert plan.report["coverage_share_of_reachable"] == pytest.approx(1.0)


def test_redraw_meets_the_rules(town):
    net, population = town
    plan = plan_communities(net, population, config=CONFIG)
    _check_invariants(plan, population, CONFIG)
    assert plan.report["communities"] == round(population.total / CONFIG.target_pop)
    assert plan.report["contiguous_share"] == 1.0
    assert all(g.geom_type == "Polygon" for g in plan.communities.geometry)
    assert plan.report["within_tolerance_share"] >= 0.8
    assert plan.changes is None and plan.report["stability_share"] is None


def test_same_seed_same_plan(town):
    net, population = town
    a = plan_communities(net, population, config=CONFIG)
    b = plan_communities(net, population, config=CONFIG)
    pd.testing.assert_series_equal(a.units["community_id"], b.units["community_id"])
    assert a.communities.geometry.equals(b.communities.geometry)


def test_merge_split_keeps_good_communities_and_reports_changes(town):
    net, population = town
    # Old communities: 4 quarters of the town; each quarter's center at its middle street corner.
    half = 100 * (N - 1) / 2
    quarters = [box(X0 + i * half, Y0 + j * half, X0 + (i + 1) * half, Y0 + (j + 1) * half)
                for j in range(2) for i in range(2)]
    old = gpd.GeoDataFrame({"community_id": ["SW", "SE", "NW", "NE"]}, geometry=quarters, crs=CRS)
    centers = gpd.GeoDataFrame({"center_id": ["a", "b", "c", "d"], "community_id": ["SW", "SE", "NW", "NE"]},
                               geometry=gpd.points_from_xy(
                                   [X0 + 300, X0 + 1000, X0 + 300, X0 + 1000],
                                   [Y0 + 300, Y0 + 300, Y0 + 1000, Y0 + 1000]), crs=CRS)
    plan = plan_communities(net, population, communities=old, centers=centers, config=CONFIG)
    _check_invariants(plan, population, CONFIG)
    assert plan.changes is not None
    assert plan.changes["residents"].sum() == population.total
    assert set(plan.changes["old_community_id"]) <= {"SW", "SE", "NW", "NE", "(none)"}
    assert 0 < plan.report["stability_share"] <= 1
    assert plan.centers["existing"].any()


def _strip_town(cols: int = 24, rows: int = 4, per_cell: int = 125):
    """A street grid `cols` x `rows` blocks of 100 m, every block one cell of `per_cell` residents."""
    import networkx as nx

    G = nx.MultiDiGraph(crs=CRS)
    for r in range(rows + 1):
        for c in range(cols + 1):
            G.add_node(r * (cols + 1) + c, x=X0 + 100 * c, y=Y0 + 100 * r)
            for b in ([r * (cols + 1) + c - 1] if c else []) + ([(r - 1) * (cols + 1) + c] if r else []):
                G.add_edge(r * (cols + 1) + c, b, length=100.0, highway="residential")
                G.add_edge(b, r * (cols + 1) + c, length=100.0, highway="residential")
    cells = [box(X0 + 100 * c, Y0 + 100 * r, X0 + 100 * (c + 1), Y0 + 100 * (r + 1))
             for r in range(rows) for c in range(cols)]
    frame = gpd.GeoDataFrame({"cell_id": [f"c{i}" for i in range(len(cells))],
                              "pop": [per_cell] * len(cells)}, geometry=cells, crs=CRS)
    return (WalkNetwork.from_graph(G),
            Population.from_frame(frame, population_column="pop", id_column="cell_id"))


def test_merge_split_ids_follow_the_old_communities():
    # 24 x 4 blocks of 125 residents (500 a column): C01 (columns 0-5, 3,000) meets every rule,
    # C02 (6-17, 6,000) is twice the target, C03 (18-21, 2,000) and C04 (22-23, 1,000) too small.
    net, population = _strip_town()

    def strip(a: int, b: int):
        return box(X0 + 100 * a, Y0, X0 + 100 * b, Y0 + 400)

    ids = ["C01", "C02", "C03", "C04"]
    old = gpd.GeoDataFrame({"community_id": ids},
                           geometry=[strip(0, 6), strip(6, 18), strip(18, 22), strip(22, 24)], crs=CRS)
    centers = gpd.GeoDataFrame({"center_id": ["s1", "s2", "s3", "s4"], "community_id": ids},
                               geometry=gpd.points_from_xy([X0 + 300, X0 + 1200, X0 + 2000, X0 + 2300],
                                                           [Y0 + 200] * 4), crs=CRS)
    plan = plan_communities(net, population, communities=old, centers=centers, config=CONFIG)
    _check_invariants(plan, population, CONFIG)
    table = plan.communities.set_index("community_id")
    assert sorted(table.index) == ["C01", "C02-a", "C02-b", "C03"]
    # Kept unchanged: same id, residents and center.
    assert (table.loc["C01", "population"], table.loc["C01", "center_id"]) == (3_000, "s1")
    assert table.loc["C01", "previous_ids"] == "C01 (3,000)"
    # Split: both halves hold mostly C02's residents, the larger -a.
    flows = plan.changes.set_index(["old_community_id", "new_community_id"])["residents"]
    assert flows["C02", "C02-a"] >= flows["C02", "C02-b"] > 0
    for half in ("C02-a", "C02-b"):
        assert table.loc[half, "previous_ids"].startswith("C02 (")
    # Merge: C03 and C04 together, under the id of the larger (C03).
    assert flows["C04", "C03"] == 1_000 and flows["C03", "C03"] > 1_000
    again = plan_communities(net, population, communities=old, centers=centers, config=CONFIG)
    assert again.units["community_id"].tolist() == plan.units["community_id"].tolist()


def test_inherit_ids_rule_by_hand():
    from covplan.plan.ids import inherit_ids

    # old C01 kept; C02 split 8 / 3 (4 more of it join the merge); C03 (2) + C04 (12) merged
    # under C04; one community of residents outside every old one; one unit unserved.
    old = np.array([0, 0, 1, 1, 1, 1, 2, 3, 3, -1, 1])
    new = np.array([0, 0, 1, 1, 2, 3, 3, 3, 3, 4, -1])
    pop = np.array([5, 5, 4, 4, 3, 4, 2, 6, 6, 9, 7])
    old_ids = ["C01", "C02", "C03", "C04"]
    assert inherit_ids(new, old, pop, old_ids, 5) == ["C01", "C02-a", "C02-b", "C04", "N01"]
    # A suffixed or new id never repeats one in use or reserved.
    assert inherit_ids(new, old, pop, ["C01", "C02", "C02-a", "C04"], 5, reserved=["N01"]) == [
        "C01", "C02-b", "C02-c", "C04", "N02"]
    # Without old communities: N01, N02, ... in table order (redraw).
    assert inherit_ids(new, np.full(len(new), -1), pop, [], 5) == ["N01", "N02", "N03", "N04", "N05"]
    # Equal shares: the lower old id wins, each old id goes once.
    assert inherit_ids(np.array([0, 0]), np.array([0, 1]), np.array([3, 3]), ["B", "A"], 1) == ["A"]


def test_districts_are_never_crossed(town):
    net, population = town
    west = box(X0 - 1, Y0 - 1, X0 + 600, Y0 + 1400)
    east = box(X0 + 600, Y0 - 1, X0 + 1400, Y0 + 1400)
    districts = gpd.GeoDataFrame({"district_id": ["W", "E"]}, geometry=[west, east], crs=CRS)
    plan = plan_communities(net, population, districts=districts, config=CONFIG)
    _check_invariants(plan, population, CONFIG)
    assert not plan.communities["district"].str.contains(",").any()
    inside = plan.units.sjoin(districts, predicate="within")
    per_community = inside.groupby("community_id")["district_id"].nunique()
    assert (per_community == 1).all()


@pytest.mark.parametrize("kwargs, needle", [
    ({"tolerance": 1.5}, "tolerance"),
    ({"tolerance": 0.0}, "tolerance"),
    ({"target_pop": -5}, "target_pop"),
    ({"max_minutes": 0}, "max_minutes"),
])
def test_bad_parameters_are_refused(kwargs, needle):
    with pytest.raises(InputError, match=needle):
        PlanConfig(**kwargs)


def test_target_below_largest_unit_splits_it(town):
    net, population = town
    # Units of up to ~180 residents and a target of 150: cells are split onto nodes first.
    config = PlanConfig(target_pop=600, tolerance=0.3, max_minutes=8.0, max_unit_pop=100, restarts=1)
    plan = plan_communities(net, population, config=config)
    assert plan.units["pop"].max() <= 180
    assert len(plan.units) > len(population.units)
    _check_invariants(plan, population, config)


@pytest.fixture(scope="module")
def demo_replay():
    from covplan.cities.demo import build_demo_city
    from covplan.inputs.areas import load_centers, load_communities, load_districts
    from covplan.inputs.network import load_network
    from covplan.inputs.population import load_population

    city = build_demo_city()
    network = load_network(city.graph)
    population = load_population(city.population, population_column="population",
                                 id_column="cell_id")
    districts = load_districts(city.districts)
    plan = plan_communities(network, population, communities=load_communities(city.communities),
                            centers=load_centers(city.centers), districts=districts,
                            config=PlanConfig())
    return plan, population, districts


def test_locked_centers_stay_open_where_the_rules_allow(demo_replay):
    """Centers the plan closed, locked open: most then serve a community at no cost in
    balance; any that cannot is reported in the decisions, never dropped silently."""
    from covplan.cities.demo import build_demo_city
    from covplan.inputs.areas import load_centers, load_communities
    from covplan.inputs.network import load_network

    plan, population, districts = demo_replay
    decisions = plan.center_decisions
    closed = decisions.loc[decisions["decision"] == "closed", "center_id"].tolist()[:6]
    city = build_demo_city()
    locked = plan_communities(load_network(city.graph), population,
                              communities=load_communities(city.communities),
                              centers=load_centers(city.centers), districts=districts,
                              config=PlanConfig(), lock_centers=closed)
    d = locked.center_decisions.set_index("center_id").loc[closed]
    assert d["locked"].all()
    assert (d["decision"] == "kept").sum() >= 3
    assert d.loc[d["decision"] != "kept", "reason"].str.startswith("locked open").all()
    assert locked.report["centers_locked_not_kept"] == int((d["decision"] != "kept").sum())
    assert (locked.report["within_tolerance_pop_share"]
            >= plan.report["within_tolerance_pop_share"] - 0.01)


def test_demo_replay_meets_the_goals(demo_replay):
    """The motivating case: 69 uneven communities -> 30 ± 2 of ~10,000, all within 15 min."""
    plan, population, districts = demo_replay
    _check_invariants(plan, population, plan.config)
    report = plan.report
    assert 28 <= report["communities"] <= 32
    assert report["coverage_share"] == 1.0
    assert report["contiguous_share"] == 1.0
    # The suite's goal where the ceiling is 98 % or more (99.8 % here); 93.6 % before the
    # windows solved by CP-SAT found district D3's split into four balanced communities.
    assert report["within_tolerance_pop_share"] >= 0.95
    # No tiny community that is not a proven exception (the min_pop_exception rule).
    table = plan.communities
    regular = table[table["exception"].fillna("").astype(str) == ""]
    assert regular["population"].min() >= plan.config.min_pop_exception * plan.config.target_pop
    # Every community inside one district, every one a single polygon.
    assert not plan.communities["district"].str.contains(",").any()
    assert (plan.communities.geometry.geom_type == "Polygon").all()
    # Every community outside the band says why.
    outside = plan.communities[~plan.communities["within_tolerance"]]
    assert (outside["note"].str.len() > 0).all()
    # The old -> new table accounts for every resident.
    assert plan.changes["residents"].sum() == population.total


def test_demo_replay_is_deterministic(demo_replay):
    from covplan.cities.demo import build_demo_city
    from covplan.inputs.areas import load_centers, load_communities
    from covplan.inputs.network import load_network

    plan, population, districts = demo_replay
    city = build_demo_city()
    again = plan_communities(load_network(city.graph), population,
                             communities=load_communities(city.communities),
                             centers=load_centers(city.centers), districts=districts,
                             config=PlanConfig())
    assert again.units["community_id"].tolist() == plan.units["community_id"].tolist()
    assert again.centers["center_id"].tolist() == plan.centers["center_id"].tolist()


@pytest.mark.slow
def test_islands_city_plan_comes_within_three_points_of_its_ceiling():
    # The quality suite's goal on a city whose thin lake shore cannot hold all its communities
    # in the band: one is left small so its neighbours reach it (an even shortfall kept 90.8 %).
    from covplan.cities.synthetic import build_synthetic_city
    from covplan.inputs.network import load_network
    from covplan.inputs.population import load_population

    city = build_synthetic_city("islands", seed=0)
    plan = plan_communities(load_network(city.graph),
                            load_population(city.population, population_column="population"),
                            districts=city.districts, config=PlanConfig())
    r = plan.report
    assert r["coverage_share"] == pytest.approx(r["coverage_ceiling"])
    assert r["within_tolerance_pop_share"] >= r["within_tolerance_pop_share_ceiling"] - 0.03
    assert plan.communities["contiguous"].all()


def test_implausible_inputs_reach_the_report_as_warnings():
    """A cell of 2,500 residents on one hectare (250,000 per km2) is planned as given, and the
    report says it looks wrong, with the problems list carrying it as a warning."""
    from conftest import grid_town
    from covplan.errors import CoverageWarning
    from covplan.output.glossary import problems

    net, population = grid_town(8)
    cells = population.cells.copy()
    cells.loc[cells.index[0], "pop"] = 2_500
    with pytest.warns(CoverageWarning, match="denser than 100,000 residents per km2"):
        dense = Population.from_frame(cells, population_column="pop", id_column="cell_id")
    config = PlanConfig(target_pop=2_000, tolerance=0.3, max_minutes=8.0, max_unit_pop=None,
                        restarts=1)
    plan = plan_communities(net, dense, config=config)
    assert plan.units["pop"].sum() == cells["pop"].sum()
    assert any("denser than 100,000" in w for w in plan.report["warnings"])
    assert {"severity": "warning", "kind": "implausible_input",
            "message": plan.report["warnings"][0]} in problems(plan.report)
