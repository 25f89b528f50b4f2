"""Scenario sweeps: a grid or list of what-ifs over one base, planned serially or on a Dask
cluster, each plan equal to the scenario planned alone, and one failure costing no other plan."""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json

import osmnx as ox
import pandas as pd
import pytest
from covplan.cities.metropolis import build_metropolis
from covplan.errors import InputError
from covplan.output.files import plan_id, read_plan
from covplan.plan.pipeline import plan_communities
from covplan.scenarios import RemoveCenter, apply_scenario, load_inputs, load_scenario
from covplan.sweep import (
    add_sweep_parser,
    load_sweep,
    plan_scenarios,
    run_sweep_command,
    summary_table,
)
from pandas.testing import assert_frame_equal

SWEEP = """
name = "tiny-sweep"
scenario = "base.toml"
[grid]
target_pop = { from = 6000, to = 8000, step = 2000 }
closed_centers = [[], ["S999"]]
"""


@pytest.fixture(scope="module")
def city_files(tmp_path_factory):
    """A small metropolis written as files, a base scenario over them and a sweep file."""
    folder = tmp_path_factory.mktemp("tiny")
    city = build_metropolis(40_000, seed=2)
    ox.save_graphml(city.graph, folder / "streets.graphml")
    for name in ("population", "centers", "communities", "districts"):
        getattr(city, name).to_file(folder / f"{name}.gpkg")
    (folder / "base.toml").write_text(
        'name = "tiny"\n[base]\nnetwork = "streets.graphml"\npopulation = "population.gpkg"\n'
        'population_column = "population"\ncenters = "centers.gpkg"\n'
        'communities = "communities.gpkg"\ndistricts = "districts.gpkg"\n'
        "[plan]\nrestarts = 1\n")
    (folder / "sweep.toml").write_text(SWEEP)
    return folder


@pytest.fixture(scope="module")
def serial(city_files):
    sweep = load_sweep(city_files / "sweep.toml")
    inputs = load_inputs(sweep.base)
    return sweep, inputs, plan_scenarios(sweep.scenarios, inputs)


def test_grid_and_list_make_scenarios_from_the_base(tmp_path, city_files):
    (tmp_path / "sweep.toml").write_text(f"""
        scenario = "{city_files / 'base.toml'}"
        [plan]
        tolerance = 0.25
        [grid]
        walk_speed_kmh = [3.6, 4.5]
        closed_centers = ["", ["S01", "S02"]]
        [[scenarios]]
        name = "elderly"
        walk_speed_kmh = 3.0
        closed_centers = "S03"
        """)
    sweep = load_sweep(tmp_path / "sweep.toml")
    assert [s.name for s in sweep.scenarios] == [
        "elderly", "speed=3.6_closed=none", "speed=3.6_closed=S01+S02",
        "speed=4.5_closed=none", "speed=4.5_closed=S01+S02"]
    elderly, _, closing = sweep.scenarios[:3]
    assert elderly.config().walk_speed_kmh == 3.0 and elderly.config().restarts == 1
    assert elderly.config().tolerance == 0.25                 # the sweep's [plan], every scenario
    assert elderly.changes == (RemoveCenter(0, "S03"),)
    assert closing.changes == (RemoveCenter(0, "S01"), RemoveCenter(1, "S02"))
    assert closing.base == sweep.base.base
    assert dict(sweep.parameters[2]) == {"walk_speed_kmh": 3.6, "closed_centers": "S01 S02"}
    ranged = load_sweep(city_files / "sweep.toml")
    assert [s.config().target_pop for s in ranged.scenarios] == [6000, 6000, 8000, 8000]


@pytest.mark.parametrize(("body", "needle"), [
    ('base = "demo"\n[grid]\ntarget = [8000]', "unknown key 'target'; did you mean 'target_pop'"),
    ('base = "demo"\n[grid]\ntolerance = [0.2, 1.5]', "tolerance must be a share"),
    ('base = "demo"\n[grid]\ntarget_pop = 8000', "grid.target_pop: must be a non-empty list"),
    ('base = "demo"\n[grid]\ntarget_pop = {from = 8, to = 4, step = 2}', "from <= to"),
    ('base = "demo"\n[grid]\nclosed_centers = [[1]]', "list of center ids"),
    ('base = "demo"\n[[scenarios]]\nname = "a"\n[[scenarios]]\nname = "a"', "names repeat (a)"),
    ('base = "demo"\nscenario = "x.toml"\n[grid]\ntarget_pop = [1]', "exactly one of base"),
    ('base = "demo"', "no scenarios"),
    ('base = "demo"\nwhat = 1', "unknown key 'what'"),
])
def test_bad_sweep_files_name_the_key(tmp_path, body, needle):
    (tmp_path / "s.toml").write_text(body)
    with pytest.raises(InputError, match="sweep '.*s.toml'") as err:
        load_sweep(tmp_path / "s.toml")
    assert needle in str(err.value)


def test_serial_sweep_equals_the_plan_made_alone_and_a_failure_costs_nothing(serial):
    sweep, inputs, results = serial
    assert [r.status for r in results] == ["ok", "failed", "ok", "failed"]
    failed = results[1]
    assert failed.plan is None and "changes[0].center_id: no center 'S999'" in failed.error
    assert failed.scenario.name in failed.error
    # The first scenario, planned directly with the planner on its changed inputs.
    changed = apply_scenario(inputs, sweep.scenarios[0])
    alone = plan_communities(changed.network, changed.population, communities=changed.communities,
                             centers=changed.centers, districts=changed.districts,
                             config=changed.config)
    got = results[0].plan
    assert got.config == alone.config and got.config.target_pop == 6000
    assert_frame_equal(pd.DataFrame(got.units), pd.DataFrame(alone.units))
    assert_frame_equal(pd.DataFrame(got.communities), pd.DataFrame(alone.communities))
    drop = ("runtime_s", "rule_issues")
    assert ({k: v for k, v in got.report.items() if k not in drop}
            == {k: v for k, v in alone.report.items() if k not in drop})
    assert results[2].plan.config.target_pop == 8000
    assert results[2].plan.report["communities"] < got.report["communities"]


def test_local_cluster_sweep_equals_serial(serial):
    distributed = pytest.importorskip("distributed")
    sweep, inputs, results = serial
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        parallel = plan_scenarios(sweep.scenarios, inputs, executor=client.get_executor(),
                                  timeout_s=180)                # a fault fails, never hangs
        assert len({r.worker for r in parallel}) == 2          # both workers planned
    assert [r.status for r in parallel] == [r.status for r in results]
    assert [r.error for r in parallel] == [r.error for r in results]
    assert ([plan_id(r.plan) for r in parallel if r.plan]
            == [plan_id(r.plan) for r in results if r.plan])
    assert ([r.scenario for r in parallel] == [r.scenario for r in results])


def test_any_executor_plans_the_same_and_a_timeout_gives_up_instead_of_hanging(serial):
    sweep, inputs, results = serial
    with cf.ThreadPoolExecutor(max_workers=1) as pool:
        got = plan_scenarios(sweep.scenarios[:2], inputs, executor=pool)
        late = plan_scenarios(sweep.scenarios[2:], inputs, executor=pool, timeout_s=0.01)
    assert [r.status for r in got] == ["ok", "failed"]
    assert plan_id(got[0].plan) == plan_id(results[0].plan)
    assert [r.status for r in late] == ["error", "error"] and [r.index for r in late] == [0, 1]
    assert all("not planned within 0.01 s (timeout_s=)" in r.error for r in late)


def test_sweep_command_writes_every_plan_the_summary_and_the_chart(city_files, serial, tmp_path):
    (tmp_path / "list.toml").write_text(
        f'name = "listed"\nscenario = "{city_files / "base.toml"}"\n'
        '[[scenarios]]\nname = "target 8000"\ntarget_pop = 8000\n'
        '[[scenarios]]\nname = "closing"\nclosed_centers = ["S999"]\n')
    parser = argparse.ArgumentParser()
    add_sweep_parser(parser.add_subparsers())
    out = tmp_path / "sweep"
    args = parser.parse_args(["sweep", str(tmp_path / "list.toml"), "--out", str(out),
                              "--workers", "0", "--cdn-maps"])
    assert args.func is run_sweep_command
    assert args.func(args) == 1                                # one scenario failed
    table = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(table["scenario"]) == ["target 8000", "closing"]
    assert list(table["status"]) == ["ok", "failed"]
    assert list(table["closed_centers"]) == ["", "S999"]
    assert "no center 'S999'" in table["error"].iloc[1] and table["communities"].iloc[1] == ""
    # The same scenario as the grid's target=8000: the same plan, whichever way it ran.
    pid = table["plan_id"].iloc[0]
    assert pid == plan_id(serial[2][2].plan)
    assert table["folder"].iloc[0] == "plans/001_target_8000"
    folder = out / "plans" / "001_target_8000"
    assert sorted(p.name for p in (out / "plans").iterdir()) == [folder.name]
    assert json.loads((folder / "manifest.json").read_text())["plan_id"] == pid
    assert json.loads((folder / "report.json").read_text())["plan_id"] == pid
    # scenario.toml repeats the plan alone: every parameter is written out.
    assert load_scenario(folder / "scenario.toml").config() == read_plan(folder).config
    assert (out / "summary.png").stat().st_size > 10_000


def test_summary_table_lists_every_scenario_in_sweep_order(serial):
    sweep, _, results = serial
    table = summary_table(results[::-1], sweep.parameters)
    assert list(table["scenario"]) == [s.name for s in sweep.scenarios]
    assert list(table["target_pop"]) == [6000, 6000, 8000, 8000]
    assert list(table["closed_centers"]) == ["", "S999", "", "S999"]
    ok = table["status"] == "ok"
    assert (table.loc[ok, "coverage_share"] > 0.9).all()
    assert table.loc[~ok, "communities"].isna().all() and (table.loc[~ok, "error"] != "").all()


def test_geoparquet_needs_pyarrow_or_writes_one_file_per_scenario(serial, tmp_path):
    from covplan.sweep import write_sweep

    sweep, _, results = serial
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="pip install pyarrow"):
            write_sweep(results, tmp_path / "out", sweep=sweep, geoparquet=True)
        return
    write_sweep(results, tmp_path / "out", sweep=sweep, geoparquet=True)
    import geopandas as gpd

    frames = [gpd.read_parquet(p) for p in sorted((tmp_path / "out" / "communities").iterdir())]
    assert [f["scenario"].iloc[0] for f in frames] == [results[0].scenario.name,
                                                       results[2].scenario.name]
    assert len(frames[0]) == results[0].plan.report["communities"]


def test_scenarios_over_different_bases_are_refused(serial):
    sweep, inputs, _ = serial
    other = dataclasses.replace(sweep.scenarios[0],
                                base=dataclasses.replace(sweep.base.base, demo_seed=3))
    with pytest.raises(InputError, match="one base"):
        plan_scenarios([sweep.scenarios[0], other], inputs)


def test_a_sweep_folder_may_be_written_again(tmp_path):
    """A second sweep into the same --out replaces the first whole (no --force needed): its
    plans/ and summary files are covplan's own."""
    from covplan.output.folders import _foreign

    out = tmp_path / "sweep"
    (out / "plans" / "000_a").mkdir(parents=True)
    (out / "communities").mkdir()
    for name in ("summary.csv", "summary.png", "manifest.json"):
        (out / name).write_text("x")
    assert _foreign(out) == []
    (out / "notes").mkdir()
    assert _foreign(out) == ["notes/"]
