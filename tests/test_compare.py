"""Plan comparison: hand-made plans whose comparison is known by hand; the demo city end to end."""

from __future__ import annotations

import json

import geopandas as gpd
import pandas as pd
import pyproj
import pytest
from covplan.config import PlanConfig
from covplan.errors import DataSourceError, InputError
from covplan.output.compare import PlanComparison, compare_plans, write_comparison
from covplan.plan.pipeline import Plan
from shapely.geometry import Point, box
from shapely.ops import unary_union

CRS = "EPSG:32633"
X0, Y0 = 500_000.0, 4_000_000.0
POPS = [100, 200, 300, 400]          # four 100 m cells in a row, unit i centred at x = 50 + 100 i
CONFIG = PlanConfig(target_pop=500, tolerance=0.5, max_minutes=15.0)     # band 250..750


def _plan(assign: list[str | None], *, centers: dict[str, tuple[str, float]],
          minutes: tuple[float, ...] = (5.0, 5.0, 5.0, 5.0), pops: list[int] = POPS,
          shift_m: float = 0.0, config: PlanConfig = CONFIG) -> Plan:
    """
    A plan on the four-cell row: `assign` gives each unit's community (None: unserved) and
    `centers` each community's (center_id, x offset in metres) on the row's middle line.
    """
    n = len(pops)
    x = [X0 + shift_m + 50 + 100 * i for i in range(n)]
    served = [m if c is not None else float("nan") for m, c in zip(minutes, assign, strict=True)]
    units = gpd.GeoDataFrame({"unit_id": range(n), "cell_id": [f"c{i}" for i in range(n)],
                              "pop": pops, "community_id": assign, "minutes": served},
                             geometry=[Point(xi, Y0 + 50) for xi in x], crs=CRS)
    ids = sorted(centers)
    members = {cid: [i for i in range(n) if assign[i] == cid] for cid in ids}
    communities = gpd.GeoDataFrame(
        {"community_id": ids, "center_id": [centers[c][0] for c in ids],
         "population": [sum(pops[i] for i in members[c]) for c in ids]},
        geometry=[unary_union([box(x[i] - 50, Y0, x[i] + 50, Y0 + 100) for i in members[c]])
                  for c in ids], crs=CRS)
    sites = gpd.GeoDataFrame({"center_id": [centers[c][0] for c in ids], "community_id": ids},
                             geometry=[Point(X0 + shift_m + centers[c][1], Y0 + 50) for c in ids],
                             crs=CRS)
    return Plan(communities=communities, centers=sites, units=units,
                isochrones=gpd.GeoDataFrame(geometry=[], crs=CRS), changes=None, previous=None,
                report={}, config=config, work_crs=pyproj.CRS(CRS), version="test")


BASE = _plan(["X", "X", "Y", "Y"], centers={"X": ("sx", 150.0), "Y": ("sy", 350.0)})


def _counts(summary: dict, kind: str, *statuses: str) -> tuple[int, ...]:
    return tuple(summary[f"{kind}_{status}"] for status in statuses)


def _row(comparison: PlanComparison, community_a: str | None = None,
         community_b: str | None = None):
    table = comparison.communities
    if community_a is not None:
        table = table[table["community_id_a"] == community_a]
    else:
        table = table[table["community_id_b"] == community_b]
    assert len(table) == 1
    return table.iloc[0]


def test_one_unit_of_100_residents_moving_is_counted_once():
    moved = _plan(["Y", "X", "Y", "Y"], centers={"X": ("sx", 150.0), "Y": ("sy", 350.0)})
    result = compare_plans(BASE, moved)
    s = result.summary
    assert s["residents_moved"] == 100 and s["units_moved"] == 1
    assert _counts(s, "communities", "changed", "unchanged", "added", "removed") == (2, 0, 0, 0)
    assert _counts(s, "centers", "kept", "moved", "new", "closed") == (2, 0, 0, 0)
    columns = ["community_id_b", "residents_shared", "population_a", "population_b"]
    assert _row(result, "X")[columns].tolist() == ["X", 200, 300, 200]
    assert _row(result, "Y")[columns].tolist() == ["Y", 700, 700, 800]
    x, y = _row(result, "X"), _row(result, "Y")
    assert x["residents_to"] == "X (200); Y (100)" and y["residents_from"] == "Y (700); X (100)"
    assert result.units.loc[result.units["moved"], "unit_id"].tolist() == [0]
    assert s["metrics"]["population_min"] == {"a": 300, "b": 200, "delta": -100}
    assert s["metrics"]["within_tolerance_share"] == {"a": 1.0, "b": 0.0, "delta": -1.0}


def test_communities_are_matched_by_residents_not_by_id():
    swapped = _plan(["Y", "Y", "X", "X"], centers={"Y": ("sx", 150.0), "X": ("sy", 350.0)})
    s = compare_plans(BASE, swapped).summary
    assert s["communities_unchanged"] == 2 and s["communities_renamed"] == 2
    assert s["residents_moved"] == 0 and s["centers_kept"] == 2
    same = compare_plans(BASE, BASE).summary
    assert same["communities_unchanged"] == 2 and same["communities_renamed"] == 0


def test_a_split_adds_a_community_and_a_center():
    whole = _plan(["Z"] * 4, centers={"Z": ("sz", 350.0)})
    split = _plan(["P", "P", "Q", "Q"], centers={"P": ("new-1", 50.0), "Q": ("sz", 350.0)})
    result = compare_plans(whole, split)
    s = result.summary
    # Q keeps 700 of Z's 1,000 residents (a majority of both): Z continues as Q; P is new.
    assert _row(result, "Z")["community_id_b"] == "Q"
    assert _row(result, community_b="P")["status"] == "added"
    assert _counts(s, "communities", "changed", "added", "removed") == (1, 1, 0)
    assert s["residents_moved"] == 300
    assert _counts(s, "centers", "kept", "new", "closed") == (1, 1, 0)
    assert s["metrics"]["communities"]["delta"] == 1
    added = result.centers[result.centers["status"] == "new"].iloc[0]
    assert added["center_id_b"] == "new-1" and added["community_id_b"] == "P"


def test_a_merge_removes_a_community_and_a_center():
    split = _plan(["P", "P", "Q", "Q"], centers={"P": ("sp", 50.0), "Q": ("sq", 350.0)})
    whole = _plan(["Z"] * 4, centers={"Z": ("sq", 350.0)})
    result = compare_plans(split, whole)
    s = result.summary
    assert _row(result, "P")["status"] == "removed" and _row(result, "Q")["community_id_b"] == "Z"
    assert (s["communities_removed"], s["communities_changed"], s["residents_moved"]) == (1, 1, 300)
    assert (s["centers_closed"], s["centers_kept"]) == (1, 1)


def test_newly_covered_and_newly_uncovered_residents():
    before = _plan(["X", "X", "Y", "Y"], centers={"X": ("sx", 150.0), "Y": ("sy", 350.0)},
                   minutes=(5.0, 5.0, 5.0, 20.0))
    after = _plan(["X", "X", "Y", "Y"], centers={"X": ("sx", 150.0), "Y": ("sy", 350.0)},
                  minutes=(16.0, 5.0, 5.0, 10.0))
    result = compare_plans(before, after)
    s, m = result.summary, result.summary["metrics"]
    assert s["newly_covered_population"] == 400 and s["newly_uncovered_population"] == 100
    assert m["coverage_share"] == pytest.approx({"a": 0.6, "b": 0.9, "delta": 0.3})
    # A: (100·5 + 200·5 + 300·5 + 400·20) / 1000 = 11.0; B: (100·16 + ... + 400·10) / 1000 = 8.1
    assert m["mean_minutes"] == pytest.approx({"a": 11.0, "b": 8.1, "delta": -2.9})
    assert m["max_minutes"] == {"a": 20.0, "b": 16.0, "delta": -4.0}
    assert s["residents_moved"] == 0 and s["communities_unchanged"] == 2   # same people and centers
    assert _row(result, "Y")["mean_minutes_a"] == pytest.approx((300 * 5 + 400 * 20) / 700)


def test_residents_without_a_community_in_a_count_as_moved_and_newly_covered():
    before = _plan(["X", "X", "Y", None], centers={"X": ("sx", 150.0), "Y": ("sy", 250.0)})
    after = _plan(["X", "X", "Y", "Y"], centers={"X": ("sx", 150.0), "Y": ("sy", 250.0)})
    result = compare_plans(before, after)
    s = result.summary
    assert (s["residents_moved"], s["newly_covered_population"]) == (400, 400)
    assert _row(result, "Y")["status"] == "changed" and s["communities_unchanged"] == 1
    assert s["metrics"]["coverage_share"]["a"] == pytest.approx(0.6)


def test_a_closed_center_is_closed_and_a_moved_one_keeps_its_id():
    # X's center sx stands 100 m further west; Y's center sy closes and a new site serves Y.
    after = _plan(["X", "X", "Y", "Y"], centers={"X": ("sx", 50.0), "Y": ("new-7", 250.0)})
    result = compare_plans(BASE, after)
    s = result.summary
    assert _counts(s, "centers", "moved", "kept", "new", "closed") == (1, 0, 1, 1)
    assert _row(result, "Y")["status"] == "changed" and _row(result, "X")["status"] == "changed"
    assert _row(result, "Y")["center_moved_m"] == pytest.approx(100.0)  # Y's center stands elsewhere
    changes = {c["status"]: c for c in s["center_changes"]}
    assert [changes["moved"][k] for k in ("center_id_a", "center_id_b")] == ["sx", "sx"]
    assert changes["moved"]["distance_m"] == pytest.approx(100.0)
    assert (changes["closed"]["center_id_a"], changes["closed"]["center_id_b"]) == ("sy", None)
    assert (changes["new"]["center_id_a"], changes["new"]["center_id_b"]) == (None, "new-7")
    assert [c["status"] for c in s["center_changes"]] == ["moved", "new", "closed"]


def test_proposed_sites_are_matched_by_place_not_by_candidate_number():
    before = _plan(["X", "X", "Y", "Y"], centers={"X": ("new-1", 150.0), "Y": ("new-2", 350.0)})
    # new-2 now names another site; the site 350 m in is proposed again as new-9.
    after = _plan(["X", "X", "Y", "Y"], centers={"X": ("new-2", 50.0), "Y": ("new-9", 350.0)})
    s = compare_plans(before, after).summary
    assert _counts(s, "centers", "kept", "moved", "new", "closed") == (1, 0, 1, 1)
    closed = next(c for c in s["center_changes"] if c["status"] == "closed")
    assert closed["center_id_a"] == "new-1"


def test_plans_in_different_crs_compare_alike():
    moved = _plan(["Y", "X", "Y", "Y"], centers={"X": ("sx", 150.0), "Y": ("sy", 350.0)})
    lonlat = Plan(**{f: getattr(moved, f) for f in Plan.__slots__} | {
        "units": moved.units.to_crs(4326), "communities": moved.communities.to_crs(4326),
        "centers": moved.centers.to_crs(4326)})
    a, b = compare_plans(BASE, moved), compare_plans(BASE, lonlat)
    pd.testing.assert_frame_equal(a.communities, b.communities, check_exact=False, atol=1e-6)
    assert a.summary == b.summary


def test_same_inputs_give_identical_comparisons():
    moved = _plan(["Y", "X", "Y", "Y"], centers={"X": ("sx", 150.0), "Y": ("new-7", 250.0)})
    a, b = compare_plans(BASE, moved), compare_plans(BASE, moved)
    assert a.summary == b.summary
    pd.testing.assert_frame_equal(a.communities, b.communities)
    pd.testing.assert_frame_equal(a.units, b.units)
    assert a.units["pop"].sum() == sum(POPS)                 # every resident once


@pytest.mark.parametrize("other, needle", [
    (_plan(["X", "X", "Y", "Y"], centers={"X": ("sx", 150.0), "Y": ("sy", 350.0)},
           pops=[100, 200, 300, 401]), "differ, e.g. unit 3 has 400 residents in A and 401 in B"),
    (_plan(["X", "X", "Y", "Y", "Y"], centers={"X": ("sx", 150.0), "Y": ("sy", 350.0)},
           minutes=(5.0,) * 5, pops=[100, 200, 300, 400, 50]),
     "A has 1,000 residents in 4 units, B has 1,050"),
    (_plan(["X", "X", "Y", "Y"], centers={"X": ("sx", 150.0), "Y": ("sy", 350.0)},
           shift_m=900_000.0), "cover different cities"),
    (_plan(["X", "X", "Y", "Y"], centers={"X": ("sx", 150.0), "Y": ("sy", 350.0)},
           shift_m=50.0), "unit 0 lies 50 m apart"),
])
def test_plans_of_different_populations_are_refused(other, needle):
    with pytest.raises(InputError, match=needle):
        compare_plans(BASE, other)


def test_cells_split_differently_name_max_unit_pop():
    # The same four cells, but cell c3 (400 residents) split into two units of 200 in B.
    split = _plan(["X", "X", "Y", "Y", "Y"], centers={"X": ("sx", 150.0), "Y": ("sy", 350.0)},
                  minutes=(5.0,) * 5, pops=[100, 200, 300, 200, 200])
    split.units.loc[4, "cell_id"] = "c3"
    with pytest.raises(InputError, match="split into units differently.*max-unit-pop"):
        compare_plans(BASE, split)


def test_bad_arguments():
    with pytest.raises(TypeError, match="plan B must be a Plan"):
        compare_plans(BASE, 42)
    with pytest.raises(DataSourceError, match="does not exist"):
        compare_plans(BASE, "/nonexistent/plan")


def test_write_comparison_writes_summary_table_and_map(tmp_path):
    moved = _plan(["Y", "X", "Y", "Y"], centers={"X": ("sx", 150.0), "Y": ("new-7", 250.0)},
                  minutes=(5.0, 5.0, 16.0, 5.0))
    result = compare_plans(BASE, moved)
    folder = write_comparison(result, tmp_path / "cmp")
    assert sorted(p.name for p in folder.iterdir()) == ["communities.csv", "compare_map.html",
                                                       "comparison.json"]
    summary = json.loads((folder / "comparison.json").read_text())
    assert summary["residents_moved"] == 100 and summary["newly_uncovered_population"] == 300
    assert summary["metrics"]["coverage_share"]["b"] == pytest.approx(0.7)
    table = pd.read_csv(folder / "communities.csv")
    assert table["community_id_a"].tolist() == ["X", "Y"]
    assert table["status"].tolist() == ["changed", "changed"]
    page = (folder / "compare_map.html").read_text()
    for layer in ("plan B communities (by change)", "plan A communities (dashed)",
                  "residents changing community (100 residents)", "newly uncovered (300 residents)",
                  "newly covered (0 residents)", "centers moved", "comparison-summary",
                  "L.control.layers", "OpenStreetMap contributors", '"dashArray": "6 4"'):
        assert layer in page, layer


# --- the demo city, end to end through plan folders ----------------------------------------------

@pytest.fixture(scope="module")
def demo_folders(tmp_path_factory):
    from covplan.cities.demo import build_demo_city
    from covplan.inputs.areas import load_centers, load_communities, load_districts
    from covplan.inputs.network import load_network
    from covplan.inputs.population import load_population
    from covplan.output.files import write_plan
    from covplan.plan.pipeline import plan_communities

    city = build_demo_city(seed=0)
    network = load_network(city.graph)
    population = load_population(city.population, population_column="population",
                                 id_column="cell_id")
    inputs = {"communities": load_communities(city.communities),
              "centers": load_centers(city.centers), "districts": load_districts(city.districts)}
    root = tmp_path_factory.mktemp("demo_plans")
    plans = {}
    for target in (10_000, 8_000):
        plan = plan_communities(network, population, **inputs,
                                config=PlanConfig(target_pop=target, restarts=1))
        plans[target] = (plan, write_plan(plan, root / f"target{target}"))
    return plans


def test_demo_targets_compared_from_folders(demo_folders, tmp_path):
    (plan_a, dir_a), (plan_b, dir_b) = demo_folders[10_000], demo_folders[8_000]
    from_folders = compare_plans(dir_a, dir_b)
    from_objects = compare_plans(plan_a, plan_b)
    s = from_folders.summary
    assert {k: v for k, v in s.items() if not k.startswith("plan_")} == {
        k: v for k, v in from_objects.summary.items() if not k.startswith("plan_")}
    assert s["plan_a"] == str(dir_a)
    # The recomputed figures agree with each planner report.
    for side, plan in (("a", plan_a), ("b", plan_b)):
        for name, value in s["metrics"].items():
            assert value[side] == pytest.approx(plan.report[name]), (side, name)
    assert s["parameters_changed"] == {"target_pop": {"a": 10_000, "b": 8_000}}
    assert s["communities_b"] > s["communities_a"]
    # Every community is counted once on each side; every resident is shared or moved.
    kept = s["communities_unchanged"] + s["communities_changed"]
    assert kept + s["communities_removed"] == len(plan_a.communities)
    assert kept + s["communities_added"] == len(plan_b.communities)
    matched = from_folders.communities.dropna(subset=["community_id_a", "community_id_b"])
    shared = matched["residents_shared"].sum()
    assert s["residents_moved"] + shared == s["population_total"] == 300_000
    assert 0 < s["residents_moved"] < 300_000
    status = from_folders.centers["status"]
    assert (status != "new").sum() == len(plan_a.centers)
    assert (status != "closed").sum() == len(plan_b.centers)
    moved = from_folders.centers[status == "moved"]
    assert (moved["center_id_a"] == moved["center_id_b"]).all()
    out = write_comparison(from_folders, tmp_path / "cmp")
    written = json.loads((out / "comparison.json").read_text())
    assert written["residents_moved"] == s["residents_moved"]
    assert len(pd.read_csv(out / "communities.csv")) == len(from_folders.communities)
    assert (out / "compare_map.html").stat().st_size < 5_000_000


def test_demo_plan_against_itself_changes_nothing(demo_folders):
    plan, folder = demo_folders[10_000]
    s = compare_plans(plan, folder).summary
    assert s["communities_unchanged"] == len(plan.communities) and s["communities_renamed"] == 0
    assert s["residents_moved"] == 0 and s["centers_kept"] == len(plan.centers)
    assert all(v["delta"] == pytest.approx(0) for v in s["metrics"].values())
