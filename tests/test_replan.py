"""Incremental re-planning on the demo city: the same rules, only touched communities change."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from conftest import grid_graph
from covplan.config import PlanConfig
from covplan.errors import InputError
from covplan.inputs.network import WalkNetwork
from covplan.inputs.population import Population
from covplan.plan.pipeline import Plan
from covplan.plan.replan import _global_reason, plan_inputs, plan_scenario, replan_scenario
from covplan.scenarios import (
    AddResidents,
    BaseInputs,
    CloseRoad,
    RemoveCenter,
    Scenario,
    ScenarioInputs,
    load_inputs,
    load_scenario,
)
from pyproj import Transformer

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "scenarios"
X0, Y0 = 500_000.0, 4_000_000.0
CONFIG = PlanConfig(restarts=1)     # one run keeps the module's base plan at a few seconds


@pytest.fixture(scope="module")
def demo_inputs():
    return load_inputs(Scenario(name="demo", base=BaseInputs(demo=True)), config=CONFIG)


@pytest.fixture(scope="module")
def base_plan(demo_inputs) -> Plan:
    return plan_inputs(demo_inputs)


@pytest.fixture(scope="module")
def estate(base_plan, demo_inputs) -> Plan:
    return replan_scenario(base_plan, load_scenario(EXAMPLES / "new_estate.toml"), inputs=demo_inputs)


def members(plan: Plan) -> dict[str, frozenset]:
    """Community id -> its units, each as (cell id, position to the cm, residents)."""
    units = plan.units.to_crs(plan.work_crs)
    keys = [(c, round(x, 2), round(y, 2), int(p)) for c, x, y, p in
            zip(units["cell_id"], units.geometry.x, units.geometry.y, units["pop"])]
    out: dict[str, set] = {}
    for key, community in zip(keys, units["community_id"]):
        if community is not None:
            out.setdefault(community, set()).add(key)
    return {k: frozenset(v) for k, v in out.items()}


def assert_rules(plan: Plan, total: int) -> None:
    """Coverage, contiguity, districts and conservation, as the full planner guarantees them."""
    units, table = plan.units, plan.communities
    assert int(units["pop"].sum()) == total == plan.report["population_total"]
    assigned = units["community_id"].notna()
    assert int(units.loc[assigned, "pop"].sum()) == total - plan.report["unreachable_population"]
    assert (units.loc[assigned, "minutes"] <= plan.config.max_minutes + 1e-9).all()
    assert int(table["population"].sum()) == int(units.loc[assigned, "pop"].sum())
    assert table["contiguous"].all()
    assert not table["district"].str.contains(",").any()     # never across a district limit
    assert table["community_id"].is_unique and table["center_id"].is_unique
    assert set(plan.centers["center_id"]) == set(table["center_id"])
    assert set(plan.isochrones["center_id"]) == set(table["center_id"])


def assert_frozen_identical(base: Plan, new: Plan) -> None:
    """Communities outside the re-planned window keep id, members and center."""
    replanned = set(new.report["replanned_communities"])
    before, after = members(base), members(new)
    base_table = base.communities.set_index("community_id")
    new_table = new.communities.set_index("community_id")
    base_sites = base.centers.set_index("center_id").geometry
    new_sites = new.centers.set_index("center_id").geometry
    frozen = sorted(set(base_table.index) - replanned)
    assert frozen and new.report["frozen_communities"] == len(frozen)
    for community in frozen:
        assert after[community] == before[community], community
        center = base_table.loc[community, "center_id"]
        assert new_table.loc[community, "center_id"] == center
        assert new_sites[center].distance(base_sites[center]) < 1e-6
        assert new_table.loc[community, "population"] == base_table.loc[community, "population"]


def test_base_plan_meets_the_rules(base_plan, demo_inputs):
    assert_rules(base_plan, demo_inputs.population.total)


def test_new_estate_replans_only_around_it(base_plan, estate):
    report = estate.report
    assert report["mode"] == "incremental"
    touched, replanned = set(report["touched_communities"]), set(report["replanned_communities"])
    assert touched and touched <= replanned
    assert len(replanned) < len(base_plan.communities) / 2
    assert all("residents" in report["touch_reasons"][c] for c in touched)
    assert_rules(estate, 300_000 + 8_000)
    assert_frozen_identical(base_plan, estate)
    # Every new resident joined one of the re-planned communities.
    fresh = estate.units[estate.units["cell_id"].str.startswith("scenario0-")]
    assert len(fresh) and fresh["community_id"].notna().all()
    assert set(fresh["community_id"]) <= set(report["new_communities"])


def test_replan_is_deterministic(base_plan, demo_inputs, estate):
    again = replan_scenario(base_plan, load_scenario(EXAMPLES / "new_estate.toml"), inputs=demo_inputs)
    assert members(again) == members(estate)
    assert list(again.communities["center_id"]) == list(estate.communities["center_id"])


def test_closed_center_moves_its_residents(base_plan, demo_inputs):
    used = base_plan.centers[base_plan.centers["existing"].astype(bool)]
    closed = str(used["center_id"].iloc[len(used) // 2])
    community = str(used["community_id"].iloc[len(used) // 2])
    scenario = Scenario(name="closed", base=BaseInputs(demo=True),
                        changes=(RemoveCenter(0, closed),))
    new = replan_scenario(base_plan, scenario, inputs=demo_inputs)
    assert closed not in set(new.centers["center_id"])
    assert community in new.report["touched_communities"]
    assert "closed" in new.report["touch_reasons"][community]
    assert_rules(new, 300_000)
    assert_frozen_identical(base_plan, new)


def test_footbridge_changes_the_network_locally(base_plan, demo_inputs):
    new = replan_scenario(base_plan, load_scenario(EXAMPLES / "footbridge.toml"), inputs=demo_inputs)
    assert new.report["mode"] == "incremental"
    assert any("add_link" in why for why in new.report["touch_reasons"].values())
    assert_rules(new, 300_000)
    assert_frozen_identical(base_plan, new)
    # Isochrones of frozen centers far from the bridge are the base plan's own.
    frozen = set(base_plan.communities["community_id"]) - set(new.report["replanned_communities"])
    kept = base_plan.communities.loc[base_plan.communities["community_id"].isin(frozen), "center_id"]
    old = base_plan.isochrones.set_index("center_id").geometry
    now = new.isochrones.set_index("center_id").geometry
    same = [now[c].equals_exact(old[c], tolerance=1e-9) for c in kept]   # CRS round trip: 1e-9 deg
    assert sum(same) >= len(kept) // 2


@pytest.mark.parametrize("field, value", [("target_pop", 8000), ("walk_speed_kmh", 3.0),
                                          ("max_minutes", 10.0), ("tolerance", 0.1)])
def test_changes_binding_every_community_replan_everything(base_plan, field, value):
    config = PlanConfig(restarts=1, **{field: value})
    assert field in _global_reason(base_plan, config, districts=object())
    assert _global_reason(base_plan, PlanConfig(restarts=1, seed=4), districts=object()) == ""
    assert "districts switched off" == _global_reason(base_plan, CONFIG, districts=None)


def grid_inputs() -> ScenarioInputs:
    """5 x 5 grid of 100 m blocks, 10 residents in a 100 m cell around each node."""
    cells = gpd.GeoDataFrame(
        {"cell_id": [f"c{k:02d}" for k in range(25)], "pop": [10] * 25},
        geometry=[shapely.box(X0 + 100 * c - 50, Y0 + 100 * r - 50, X0 + 100 * c + 50, Y0 + 100 * r + 50)
                  for r in range(5) for c in range(5)], crs="EPSG:32633")
    return ScenarioInputs(network=WalkNetwork.from_graph(grid_graph()),
                          population=Population.from_frame(cells),
                          config=PlanConfig(target_pop=60, tolerance=0.5, max_minutes=3,
                                            max_unit_pop=None, restarts=1))


def test_infeasible_scenario_says_which_rule_and_where():
    # An estate reaching 1.5 km east of the grid: its far cells are off the walking network.
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    corners = tuple(to_lonlat.transform(X0 + x, Y0 + y)
                    for x, y in ((350, 0), (1_900, 0), (1_900, 100), (350, 100)))
    scenario = Scenario(name="far estate", base=BaseInputs(demo=True),
                        changes=(AddResidents(0, 155, polygon=corners),))
    plan = plan_scenario(scenario, inputs=grid_inputs())
    walking = [i for i in plan.report["rule_issues"] if i.startswith("walking rule")]
    assert len(walking) == 1
    lost = plan.units[plan.units["community_id"].isna()]
    assert lost["cell_id"].str.startswith("scenario0-").all() and len(lost)
    assert f"{int(lost['pop'].sum()):,} residents around lon 15." in walking[0]
    assert "scenario0-" in walking[0] and "within 3 min" in walking[0]
    assert plan.report["unreachable_population"] == int(lost["pop"].sum())


def test_elderly_speed_replans_in_full():
    """A global change (walking speed) re-plans everything; a 5 x 5 grid keeps it quick."""
    inputs = grid_inputs()
    base = plan_inputs(inputs)
    slow = Scenario(name="elderly", base=BaseInputs(demo=True), plan=(("walk_speed_kmh", 3.0),))
    new = replan_scenario(base, slow, inputs=inputs)
    assert new.report["mode"] == "full" and "walk_speed_kmh 4.5 -> 3.0" in new.report["full_reason"]
    assert new.config.walk_speed_kmh == 3.0 and new.config.target_pop == 60
    assert new.report["touched_communities"] == sorted(base.communities["community_id"])
    served = new.units[new.units["community_id"].notna()]
    assert (served["minutes"] <= 3 + 1e-9).all() and int(new.units["pop"].sum()) == 250
    # 3 minutes is 225 m at 4.5 km/h but 150 m at 3 km/h: smaller circles need more centers.
    assert len(new.communities) > len(base.communities)


def test_a_plan_of_other_inputs_is_refused(base_plan):
    grid = grid_inputs()
    with pytest.raises(InputError, match="the base plan does not fit these inputs: only 0 %"):
        replan_scenario(base_plan, Scenario(name="x", base=BaseInputs(demo=True)), inputs=grid)


def test_closed_road_touches_the_communities_that_walked_it():
    inputs = grid_inputs()
    base = plan_inputs(inputs)
    site = base.centers.to_crs(4326).iloc[0]
    # Close the four blocks around the first center's corner: its members must walk round.
    lon, lat = site.geometry.x, site.geometry.y
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    x, y = to_utm.transform(lon, lat)
    points = [to_lonlat.transform(x + dx, y + dy) for dx, dy in ((40, 0), (-40, 0), (0, 40), (0, -40))
              if 0 <= x + dx - X0 <= 400 and 0 <= y + dy - Y0 <= 400]     # blocks inside the grid
    closures = tuple(CloseRoad(i, point=p, max_distance_m=5) for i, p in enumerate(points))
    scenario = Scenario(name="roadworks", base=BaseInputs(demo=True), changes=closures)
    new = replan_scenario(base, scenario, inputs=inputs)
    assert new.report["mode"] == "incremental"
    assert site.community_id in new.report["touched_communities"]
    assert "walk" in new.report["touch_reasons"][site.community_id] \
        or "reach" in new.report["touch_reasons"][site.community_id]
    assert_rules(new, 250)
    if len(new.report["replanned_communities"]) < len(base.communities):
        assert_frozen_identical(base, new)
