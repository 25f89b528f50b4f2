"""Center decisions: every existing center kept, moved or closed and every new site, with why."""

from __future__ import annotations

import dataclasses

import geopandas as gpd
import pandas as pd
import pytest
from covplan.output.files import read_plan, write_plan
from covplan.plan.pipeline import plan_communities
from shapely.geometry import box
from test_plan import CONFIG, CRS, X0, Y0, _strip_town

COLUMNS = ["center_id", "decision", "reason", "community_id", "old_community_id", "population",
           "mean_minutes", "max_minutes"]


def _strip(a: int, b: int):
    return box(X0 + 100 * a, Y0, X0 + 100 * b, Y0 + 400)


@pytest.fixture(scope="module")
def merge_split():
    # 24 x 4 blocks of 125 residents: C01 (3,000) meets every rule and keeps s1; C02 (6,000) is
    # split in two, neither half reached whole by s2; C03 (2,000) and C04 (1,000) merge.
    net, population = _strip_town()
    old, centers = _strip_centers()
    return plan_communities(net, population, communities=old, centers=centers, config=CONFIG)


def test_every_existing_center_and_new_site_once(merge_split):
    plan = merge_split
    dec = plan.center_decisions
    assert list(dec.columns[:len(COLUMNS)]) == COLUMNS and dec.crs == plan.centers.crs
    assert dec["center_id"].is_unique
    existing = dec[dec["decision"] != "new"]
    assert sorted(existing["center_id"]) == ["s1", "s2", "s3", "s4"]
    new = plan.centers.loc[~plan.centers["existing"], "center_id"]
    assert sorted(dec.loc[dec["decision"] == "new", "center_id"]) == sorted(new)
    # Every center of the plan is a kept or a new row, serving the same community.
    served = dec[dec["decision"].isin(["kept", "new"])].set_index("center_id")
    assert served["community_id"].to_dict() == dict(zip(plan.centers["center_id"],
                                                        plan.centers["community_id"]))
    counts = dec["decision"].value_counts()
    for decision in ("kept", "closed", "moved", "new"):
        assert plan.report[f"centers_{decision}"] == counts.get(decision, 0)
    assert plan.report["centers_new"] == plan.report["new_centers"]
    assert all(isinstance(r, str) and r and "\n" not in r for r in dec["reason"])


def test_kept_closed_moved_and_new_say_why(merge_split):
    plan = merge_split
    dec = plan.center_decisions.set_index("center_id")
    comm = plan.communities.set_index("community_id")
    # Kept: C01 unchanged with its center.
    assert dec.loc["s1", "decision"] == "kept"
    assert dec.loc["s1", "reason"] == "serves C01 (3,000 residents)"
    assert (dec.loc["s1", "community_id"], dec.loc["s1", "old_community_id"]) == ("C01", "C01")
    assert dec.loc["s1", "population"] == 3_000
    assert dec.loc["s1", "max_minutes"] == pytest.approx(comm.loc["C01", "max_minutes"])
    # Moved: C02's id goes on (C02-a) around a new site, s2 not reaching all of it.
    heir = comm.loc["C02-a", "center_id"]
    assert heir.startswith("new-")
    assert dec.loc["s2", "decision"] == "moved"
    assert dec.loc["s2", "reason"].startswith(f"moved to {heir}, ")
    assert " m away, the center of C02-a " in dec.loc["s2", "reason"]
    assert dec.loc["s2", "community_id"] == "" and dec.loc["s2", "population"] == 0
    assert pd.isna(dec.loc["s2", "max_minutes"])
    assert dec.loc[heir, "reason"].startswith("serves C02-a (")
    assert "replaces s2, the center of C02, " in dec.loc[heir, "reason"]
    # Closed: C03 and C04 merged around one of their two centers; the other is closed.
    merged = comm.loc["C03", "center_id"]
    closed = ({"s3", "s4"} - {merged}).pop()
    assert dec.loc[merged, "decision"] == "kept"
    assert dec.loc[closed, "decision"] == "closed"
    assert dec.loc[closed, "community_id"] == ""
    assert "merged with C0" in dec.loc[closed, "reason"]
    assert f"center {merged} reaches all members" in dec.loc[closed, "reason"]
    assert merged in dec.loc[closed, "successor_center_ids"].split(";")
    # New: every new site serves one community, and says whether an existing center could.
    for cid, row in dec[dec["decision"] == "new"].iterrows():
        assert row["reason"].startswith(f"serves {row['community_id']} (")
        assert row["population"] == comm.loc[row["community_id"], "population"]
        assert "no existing center reaches all its members within 8 min" in row["reason"]


def test_layer_and_csv_say_so(merge_split, tmp_path):
    plan = merge_split
    folder = write_plan(plan, tmp_path / "plan", self_contained=False)
    table = pd.read_csv(folder / "center_decisions.csv", keep_default_na=False)
    assert list(table.columns) == [*plan.center_decisions.columns.drop("geometry"), "lon", "lat"]
    assert table["center_id"].tolist() == plan.center_decisions["center_id"].tolist()
    assert table["decision"].tolist() == plan.center_decisions["decision"].tolist()
    assert table["reason"].tolist() == plan.center_decisions["reason"].tolist()
    assert table["lon"].between(14, 16).all() and table["lat"].between(35, 37).all()
    back = read_plan(folder)
    assert back.center_decisions is not None
    assert back.center_decisions["decision"].tolist() == plan.center_decisions["decision"].tolist()
    assert back.center_decisions.geom_equals_exact(plan.center_decisions.geometry, 1e-6).all()
    report = pd.read_json(folder / "report.json", typ="series")
    assert report["centers_closed"] == plan.report["centers_closed"]
    assert "centers_moved" in report["glossary"]


def test_older_plan_folders_without_decisions_still_read(merge_split, tmp_path):
    old = dataclasses.replace(merge_split, center_decisions=None)
    folder = write_plan(old, tmp_path / "old", self_contained=False)
    assert not (folder / "center_decisions.csv").exists()
    assert read_plan(folder).center_decisions is None


def test_redraw_lists_candidate_centers_kept_or_closed():
    # No existing communities: the given sites are still listed, and none is "moved".
    net, population = _strip_town()
    centers = gpd.GeoDataFrame({"center_id": ["a", "b", "b2"]}, crs=CRS,
                               geometry=gpd.points_from_xy([X0 + 300, X0 + 1200, X0 + 1210],
                                                           [Y0 + 200] * 3))
    plan = plan_communities(net, population, centers=centers, config=CONFIG)
    dec = plan.center_decisions
    existing = dec[dec["decision"] != "new"]
    assert sorted(existing["center_id"]) == ["a", "b", "b2"]
    assert set(existing["decision"]) <= {"kept", "closed"}
    assert (existing["old_community_id"] == "").all()
    for _, row in existing[existing["decision"] == "closed"].iterrows():
        assert row["reason"].startswith(("not needed: the ", "no community needs it"))
    assert plan.report["centers_moved"] == 0
    assert plan.report["centers_kept"] + plan.report["centers_closed"] == 3
    assert plan.report["centers_new"] == (dec["decision"] == "new").sum()


def _strip_centers():
    """The strip town's four old communities and their centers s1-s4."""
    ids = ["C01", "C02", "C03", "C04"]
    old = gpd.GeoDataFrame({"community_id": ids}, crs=CRS, geometry=[
        _strip(0, 6), _strip(6, 18), _strip(18, 22), _strip(22, 24)])
    centers = gpd.GeoDataFrame({"center_id": ["s1", "s2", "s3", "s4"], "community_id": ids},
                               geometry=gpd.points_from_xy([X0 + 300, X0 + 1200, X0 + 2000,
                                                            X0 + 2300], [Y0 + 200] * 4), crs=CRS)
    return old, centers


def test_a_locked_center_the_rules_cannot_keep_is_reported_not_silently_closed():
    from covplan.plan.replan import rule_issues

    # s2 stands where C02's two halves meet: a community on it leaves 1,500 residents on
    # either side that no neighbour can take within the band, so balance wins and the lock
    # is reported as not met.
    net, population = _strip_town()
    old, centers = _strip_centers()
    plan = plan_communities(net, population, communities=old, centers=centers, config=CONFIG,
                            lock_centers=["s2"])
    d = plan.center_decisions.set_index("center_id")
    assert d.loc["s2", "locked"] and not d.drop(index="s2")["locked"].any()
    assert d.loc["s2", "decision"] != "kept"
    assert d.loc["s2", "reason"].startswith("locked open, but the planner found no community")
    assert plan.report["centers_locked"] == 1 and plan.report["centers_locked_not_kept"] == 1
    assert any(i.startswith("lock rule: 1 locked center(s) serve no community: s2")
               for i in rule_issues(plan))


def test_lock_centers_names_unknown_ids_and_the_known_ones():
    from covplan.errors import InputError

    net, population = _strip_town()
    old, centers = _strip_centers()
    with pytest.raises(InputError, match=r"not among the existing centers: s9; the centers' "
                                         r"center_id values are s1, s2, s3, s4"):
        plan_communities(net, population, communities=old, centers=centers, config=CONFIG,
                         lock_centers="s1,s9")
    with pytest.raises(InputError, match="no existing centers were given"):
        plan_communities(net, population, config=CONFIG, lock_centers="all")


def test_max_new_centers_caps_the_new_sites_and_reports_what_it_costs():
    from covplan.plan.replan import rule_issues

    net, population = _strip_town()
    old, centers = _strip_centers()
    free = plan_communities(net, population, communities=old, centers=centers, config=CONFIG)
    assert free.report["centers_new"] == 2
    roomy = plan_communities(net, population, communities=old, centers=centers,
                             config=dataclasses.replace(CONFIG, max_new_centers=2))
    assert roomy.units["community_id"].tolist() == free.units["community_id"].tolist()
    for budget in (1, 0):
        capped = plan_communities(net, population, communities=old, centers=centers,
                                  config=dataclasses.replace(CONFIG, max_new_centers=budget))
        assert capped.report["centers_new"] <= budget
        assert capped.units["pop"].sum() == population.cells["pop"].sum()
        lost = int(capped.units.loc[capped.units["community_id"].isna(), "pop"].sum())
        assert capped.report["coverage_share"] == pytest.approx(1 - lost / capped.units["pop"].sum())
        assert (lost > 0) == any(i.startswith("walking rule") for i in rule_issues(capped))
        assert capped.report["parameters"]["max_new_centers"] == budget


@pytest.mark.parametrize(("cost", "new_sites"), [(1_000, 2), (2_000, 1), (5_000, 0)])
def test_new_center_cost_weighs_new_sites_against_balance(cost, new_sites):
    # 12,000 residents: two new sites balance everyone; one leaves 1,500 residents outside the
    # band, none 5,750 (and some beyond every open site). A site worth more than 1,500
    # residents is not built, one worth more than 4,250 ... none is.
    net, population = _strip_town()
    old, centers = _strip_centers()
    plan = plan_communities(net, population, communities=old, centers=centers,
                            config=dataclasses.replace(CONFIG, new_center_cost=cost))
    assert plan.report["centers_new"] == new_sites
    assert plan.units["pop"].sum() == population.cells["pop"].sum()
