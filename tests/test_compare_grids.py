"""covplan compare with grids: grids matched by id, residents keeping their grid, each side's
balance; and an output folder that would replace a compared plan is refused."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
from conftest import grid_town
from covplan.config import PlanConfig
from covplan.errors import InputError
from covplan.output.compare import check_out_folder, compare_plans, write_comparison
from covplan.output.files import write_plan
from covplan.plan.grids import plan_grids
from covplan.plan.pipeline import plan_communities

CONFIG = PlanConfig(target_pop=3_000, tolerance=0.3, max_minutes=8.0, max_unit_pop=None,
                    restarts=1, grids=True, grid_target=500, grid_minutes=4.0)


@pytest.fixture(scope="module")
def plans():
    """A grid town planned with grids of 500 (A), and the same communities with grids of 700 (B)."""
    net, population = grid_town(10)
    a = plan_communities(net, population, config=CONFIG)
    b = dataclasses.replace(a, grids=plan_grids(a, net, target_pop=700, max_minutes=4.0))
    return a, b


@pytest.fixture(scope="module")
def folders(plans, tmp_path_factory):
    a, b = plans
    root = tmp_path_factory.mktemp("compare_grids")
    return write_plan(a, root / "a"), write_plan(b, root / "b")


def test_a_plan_against_itself_keeps_every_grid(plans):
    a, _ = plans
    s = compare_plans(a, a).summary["grids"]
    n = len(a.grids.grids)
    assert (s["grids_a"], s["grids_b"], s["grids_kept"]) == (n, n, n)
    assert s["grids_changed"] == s["grids_added"] == s["grids_removed"] == 0
    assert s["residents_keeping_grid_share"] == 1.0
    assert s["residents_keeping_grid"] == a.grids.grids["population"].sum()
    assert s["within_tolerance_share"]["delta"] == 0.0


def test_other_grids_are_counted_by_id_units_and_residents(plans):
    a, b = plans
    c = compare_plans(a, b)
    s, table, units = c.summary["grids"], c.grids, c.units
    assert (s["grids_a"], s["grids_b"]) == (len(a.grids.grids), len(b.grids.grids))
    assert s["grids_b"] < s["grids_a"]                       # larger grids, fewer of them
    status = table["status"].value_counts()
    both = status.get("kept", 0) + status.get("changed", 0)
    assert both + status.get("removed", 0) == s["grids_a"]
    assert both + status.get("added", 0) == s["grids_b"]
    assert s["grids_removed"] == s["grids_a"] - s["grids_b"] + s["grids_added"]
    # Residents keeping their grid, counted by hand from each unit's grid in both plans.
    same = units["grid_id_a"].notna() & (units["grid_id_a"] == units["grid_id_b"])
    assert s["residents_keeping_grid"] == units.loc[same, "pop"].sum()
    assert 0 < s["residents_keeping_grid_share"] < 1
    # A kept grid holds the same units in both plans; each side's share is its grids' own.
    for row in table[table["status"] == "kept"].itertuples():
        mine = units.loc[units["grid_id_a"] == row.grid_id, "grid_id_b"]
        assert (mine == row.grid_id).all() and row.units_a == row.units_b == len(mine)
    for side, plan in (("a", a), ("b", b)):
        assert s["within_tolerance_share"][side] == pytest.approx(
            plan.grids.grids["within_tolerance"].mean())
    assert table["population_a"].sum() == table["population_b"].sum() == units["pop"].sum()


def test_grids_are_compared_from_folders_and_written(plans, folders, tmp_path):
    a, b = plans
    folder_a, folder_b = folders
    c = compare_plans(folder_a, folder_b)
    in_memory = compare_plans(a, b)
    assert c.summary["grids"]["residents_keeping_grid"] == \
        in_memory.summary["grids"]["residents_keeping_grid"]
    out = write_comparison(c, tmp_path / "cmp")
    table = pd.read_csv(out / "grids.csv")
    assert table["grid_id"].tolist() == c.grids["grid_id"].tolist()
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["grids"]["grids_a"] == len(a.grids.grids)
    without = compare_plans(a, dataclasses.replace(b, grids=None))
    assert without.summary["grids"] is None and without.grids is None
    assert not (write_comparison(without, tmp_path / "cmp2") / "grids.csv").exists()


@pytest.mark.parametrize(("where", "needle"), [("a", "is plan A's folder"),
                                                ("b", "is plan B's folder"),
                                                ("a/inner", "lies inside plan A's folder"),
                                                (".", "holds plan A's folder")])
def test_an_output_folder_replacing_a_compared_plan_is_refused(plans, folders, where, needle):
    a, b = plans
    folder_a, folder_b = folders
    tmp_path = folder_a.parent
    before = sorted(p.name for p in folder_a.iterdir())
    c = compare_plans(folder_a, folder_b)
    with pytest.raises(InputError, match=needle) as error:
        write_comparison(c, tmp_path / where)
    assert "--out" in str(error.value) and "write_comparison(out=...)" in str(error.value)
    assert sorted(p.name for p in folder_a.iterdir()) == before        # plan A untouched
    with pytest.raises(InputError, match=needle):
        check_out_folder(tmp_path / where, folder_a, folder_b)
    check_out_folder(tmp_path / "elsewhere", folder_a, folder_b)         # a folder of its own
    check_out_folder(tmp_path / "a", a, b)                               # plans in memory


def test_the_cli_refuses_to_compare_into_a_plan_folder(folders, capsys):
    from covplan.cli import main

    folder_a, folder_b = folders
    before = {p.name: p.read_bytes() for p in folder_a.iterdir() if p.is_file()}
    assert main(["compare", str(folder_a), str(folder_b), "--out", str(folder_a)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is plan A's folder" in err[0]
    assert {p.name: p.read_bytes() for p in folder_a.iterdir() if p.is_file()} == before
