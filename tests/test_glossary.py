"""report.json explains itself: every report key has a glossary entry, and problems list both
kinds of issue with a severity."""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
from conftest import grid_town
from covplan.config import PlanConfig
from covplan.output.files import write_plan
from covplan.output.glossary import GLOSSARY, glossary_for, problems
from covplan.plan.replan import plan_inputs, replan_scenario
from covplan.scenarios import AddResidents, BaseInputs, Scenario, ScenarioInputs
from pyproj import Transformer
from shapely.geometry import box

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"
N = 10          # 10 x 10 streets, 100 m apart: 81 cells


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """report.json of a merge/split plan in two districts, of an incremental re-plan (a new
    estate) and of a full re-plan (a slower walk) of a small grid town."""
    network, population = grid_town(N)
    half = 100 * (N - 1) / 2
    west, east = box(X0, Y0, X0 + half, Y0 + 2 * half), box(X0 + half, Y0, X0 + 2 * half, Y0 + 2 * half)
    districts = gpd.GeoDataFrame({"district_id": ["DW", "DE"]}, geometry=[west, east], crs=CRS)
    old = gpd.GeoDataFrame({"community_id": ["W", "E"]}, geometry=[west, east], crs=CRS)
    centers = gpd.GeoDataFrame({"center_id": ["w", "e"], "community_id": ["W", "E"]}, crs=CRS,
                               geometry=gpd.points_from_xy([X0 + 200, X0 + 700], [Y0 + 400] * 2))
    inputs = ScenarioInputs(network=network, population=population, centers=centers,
                            communities=old, districts=districts,
                            config=PlanConfig(target_pop=1_500, tolerance=0.3, max_minutes=8.0,
                                              candidate_spacing_m=150.0, max_unit_pop=None,
                                              restarts=1))
    base = plan_inputs(inputs)
    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    corner = tuple(to_lonlat.transform(X0 + x, Y0 + y)
                   for x, y in ((10, 10), (190, 10), (190, 190), (10, 190)))
    estate = Scenario(name="estate", base=BaseInputs(demo=True),
                      changes=(AddResidents(0, 300, polygon=corner),))
    slower = Scenario(name="slower", base=BaseInputs(demo=True), plan=(("walk_speed_kmh", 4.0),))
    plans = {"base": base, "incremental": replan_scenario(base, estate, inputs=inputs),
             "full": replan_scenario(base, slower, inputs=inputs)}
    root = tmp_path_factory.mktemp("glossary")
    return {name: json.loads((write_plan(plan, root / name) / "report.json").read_text())
            for name, plan in plans.items()}


def _keys(report: dict) -> set[str]:
    """The report's top-level keys and the names of its per-district figures."""
    keys = set(report)
    for figures in (report.get("districts") or {}).values():
        keys |= set(figures)
    return keys


def test_every_report_key_has_a_glossary_entry(reports):
    assert reports["incremental"]["mode"] == "incremental" and reports["full"]["mode"] == "full"
    assert reports["base"]["districts"], "the test town is planned in districts"
    for name, report in reports.items():
        missing = sorted(_keys(report) - set(GLOSSARY))
        assert not missing, f"{name} report keys without an entry in covplan/output/glossary.py: {missing}"
        assert set(report["glossary"]) == _keys(report), name
        assert all(report["glossary"][k] == GLOSSARY[k] for k in report["glossary"])


def test_the_glossary_has_no_stale_entries(reports):
    """Each entry names a key some report has (a renamed key leaves no orphan behind)."""
    seen = set().union(*(_keys(r) for r in reports.values()))
    assert sorted(set(GLOSSARY) - seen) == []


def test_every_entry_is_one_line_with_a_unit_or_kind():
    for key, meaning in GLOSSARY.items():
        assert meaning and "\n" not in meaning, key
        assert "(" in meaning and ")" in meaning, f"{key}: say the unit, e.g. (persons)"


def test_kept_and_frozen_communities_are_two_keys(reports):
    base, inc, full = reports["base"], reports["incremental"], reports["full"]
    assert base["frozen_communities"] == 0 and full["frozen_communities"] == 0
    assert inc["frozen_communities"] > 0 and inc["kept_communities"] == 0
    assert inc["frozen_communities"] + len(inc["replanned_communities"]) == base["communities"]
    assert 0 <= base["kept_communities"] <= 2


def test_problems_join_issues_and_rule_issues(reports):
    for report in reports.values():
        assert report["problems"] == problems(report)
        assert len(report["problems"]) == len(report["issues"]) + len(report["rule_issues"])
    report = {
        "issues": [("existing communities leave gaps: 1 unit(s) with 771 residents lie in none; "
                    "they are planned as new"), "something else was repaired"],
        "rule_issues": ["balance rule: community N19 in district D3 has 4,416 residents: smaller",
                        "walking rule: 12 residents around lon 15.0, lat 36.1 reach no center"],
    }
    assert problems(report) == [
        {"severity": "error", "kind": "balance_rule", "message": report["rule_issues"][0]},
        {"severity": "error", "kind": "walking_rule", "message": report["rule_issues"][1]},
        {"severity": "warning", "kind": "community_gaps", "message": report["issues"][0]},
        {"severity": "warning", "kind": "input_repair", "message": report["issues"][1]},
    ]
    assert problems({"issues": []}) == []


def test_glossary_for_names_undocumented_keys():
    out = glossary_for({"coverage_share": 1.0, "brand_new_key": 3})
    assert out["coverage_share"] == GLOSSARY["coverage_share"]
    assert out["brand_new_key"] == "undocumented"
    assert list(out)[-2:] == ["problems", "glossary"]
