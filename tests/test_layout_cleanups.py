"""The review clean-ups: split modules keep their names, one city record, timing-free plan ids,
maps saved to the same bytes, the atlas under the folder lock, plan flags from config.FLAGS,
--population-crs, and the example sweep."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import geopandas as gpd
import numpy as np
import osmnx as ox
import pandas as pd
import pytest
from conftest import merge_split_town_plan
from covplan.cli import _build_parser, _plan_config, main
from covplan.errors import CRSError, InputError
from covplan.inputs.population import Population, load_population
from covplan.output.files import plan_id, write_plan
from shapely.geometry import Point, box

ROOT = Path(__file__).resolve().parents[1]
X0, Y0, CRS = 500_000.0, 4_000_000.0, "EPSG:32633"


@pytest.fixture(scope="module")
def town_plan():
    return merge_split_town_plan()[0]


@pytest.fixture(scope="module")
def folder(town_plan, tmp_path_factory):
    return write_plan(town_plan, tmp_path_factory.mktemp("plans") / "town")


# ---- layout ------------------------------------------------------------------------------------

# The modules these clean-ups split or rewired.
_CLEANED = ("cities/*.py", "inputs/population*.py", "output/files.py", "output/folders.py",
            "output/writers.py", "output/maps.py", "metrics.py", "plan/ids.py", "cli.py")


def test_the_cleaned_modules_import_no_private_name_of_another():
    """Shared pieces are public where they live (e.g. the lattice of the built cities)."""
    found = []
    for path in sorted(p for pattern in _CLEANED for p in (ROOT / "coverage").glob(pattern)):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("covplan"):
                found += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and a.name != "__version__"]
    assert found == []


def test_the_population_loaders_build_the_class_they_are_called_on():
    """The readers live in their own modules and are handed the class: a subclass stays one."""
    class Cells(Population):
        __slots__ = ()

    frame = gpd.GeoDataFrame({"pop": [5, 7]}, crs=CRS,
                             geometry=[box(X0, Y0, X0 + 100, Y0 + 100),
                                       box(X0 + 100, Y0, X0 + 200, Y0 + 100)])
    cells = Cells.from_frame(frame)
    assert type(cells) is Cells and cells.total == 12
    split = cells.disaggregate(onto="grid", cell_size_m=50.0)
    assert type(split) is Cells and split.total == 12 and len(split.units) == 8


def test_one_record_for_every_built_city():
    from covplan.cities.city import City
    from covplan.cities.demo import DemoCity
    from covplan.cities.metropolis import MetropolisCity, build_metropolis
    from covplan.cities.synthetic import SyntheticCity

    assert DemoCity is SyntheticCity is MetropolisCity is City
    city = build_metropolis(20_000)
    assert type(city) is City and city.residents == 20_000 and city.name == "metropolis"
    assert city.railway is not None and city.features is not None


# ---- plan ids, stability, maps ----------------------------------------------------------------

def test_plans_that_differ_only_in_timings_have_one_id(town_plan):
    timed = dict(town_plan.report, runtime_s=99.0,
                 grids={"runtime_s": 12.5, "grids": 3},
                 stages={"reach_s": 1.0, "partition": {"search_s": 2.0, "rounds": 4},
                         "runs": [{"wall_seconds": 3.0, "seed": 1}]})
    again = dict(timed, runtime_s=0.5, grids={"runtime_s": 0.1, "grids": 3},
                 stages={"reach_s": 7.0, "partition": {"search_s": 0.0, "rounds": 4},
                         "runs": [{"wall_seconds": 0.2, "seed": 1}]})
    first = plan_id(dataclasses.replace(town_plan, report=timed))
    assert plan_id(dataclasses.replace(town_plan, report=again)) == first
    other = dict(again, stages={"reach_s": 7.0, "partition": {"search_s": 0.0, "rounds": 5},
                                "runs": [{"wall_seconds": 0.2, "seed": 1}]})
    assert plan_id(dataclasses.replace(town_plan, report=other)) != first


def test_ids_and_stability_share_one_linking_rule():
    from covplan.metrics import link_pairs, shared_residents

    new = np.array([0, 0, 1, 1, 2, -1])
    old = np.array([0, 1, 1, 1, -1, 0])
    shared = shared_residents(new, old, np.array([5, 1, 3, 3, 2, 9]), 2)
    assert shared == {(0, 0): (5, 1), (0, 1): (1, 1), (1, 1): (6, 2), (2, 2): (2, 1)}
    # Best first; a pair links only when neither end is linked yet.
    assert link_pairs([(1, 1), (0, 0), (0, 1), (2, 0)]) == {1: 1, 0: 0}


def test_a_map_saved_twice_gives_the_same_bytes(town_plan, tmp_path):
    from covplan.output.maps import plan_map, save_map

    fmap = plan_map(town_plan)
    first = save_map(fmap, tmp_path / "a.html").read_bytes()
    assert save_map(fmap, tmp_path / "b.html").read_bytes() == first       # the same map again
    assert save_map(plan_map(town_plan), tmp_path / "c.html").read_bytes() == first


# ---- covplan atlas under the folder lock --------------------------------------------------------

def test_atlas_is_refused_while_another_run_writes_the_folder(folder, capsys):
    from covplan.output.folders import folder_lock

    with folder_lock(folder, str(folder)):                       # another run holds DIR
        assert main(["-q", "atlas", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"another covplan run is writing {folder} (pid " in err
    assert "wait for it, then run covplan atlas again" in err
    assert not (folder / "atlas.pdf").exists()
    assert main(["-q", "atlas", str(folder)]) == 0
    assert (folder / "atlas.pdf").read_bytes().startswith(b"%PDF")
    leftovers = [p.name for p in (*folder.iterdir(), *folder.parent.iterdir())
                 if ".covplan-" in p.name]
    assert leftovers == []


def test_a_partial_atlas_left_by_a_killed_run_is_no_foreign_file(town_plan, tmp_path):
    out = write_plan(town_plan, tmp_path / "plan")
    (out / f".atlas.covplan-partial-{999_999}.pdf").write_bytes(b"%PDF-half")
    write_plan(town_plan, out)                                   # no --force needed
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


# ---- CLI: plan flags from config.FLAGS, --population-crs --------------------------------------

def _plan_parser():
    return _build_parser()._subparsers._group_actions[0].choices["plan"]


def test_a_flag_config_names_becomes_a_plan_option(monkeypatch):
    from covplan import config

    monkeypatch.setitem(config.FLAGS, "min_pop_exception", "--min-pop-exception")
    parser = _plan_parser()
    assert "--min-pop-exception" in parser.format_help()
    args = parser.parse_args(["--out", "x", "--min-pop-exception", "0.3", "--target", "900"])
    config_ = _plan_config(args)
    assert config_.min_pop_exception == 0.3 and config_.target_pop == 900
    assert _plan_config(parser.parse_args(["--out", "x"])) == config.PlanConfig()


@pytest.fixture
def projected_csv_inputs(tmp_path, grid5):
    network = tmp_path / "grid.graphml"
    ox.save_graphml(grid5, network)
    xy = [(X0 + 100 * c + 50, Y0 + 100 * r + 50) for r in range(4) for c in range(4)]
    population = tmp_path / "pop.csv"
    pd.DataFrame({"x": [x for x, _ in xy], "y": [y for _, y in xy], "pop": 10}).to_csv(
        population, index=False)
    centers = tmp_path / "centers.gpkg"
    gpd.GeoDataFrame({"center_id": ["A"]}, geometry=[Point(X0 + 200, Y0 + 200)],
                     crs=CRS).to_file(centers)
    return network, population, centers


def test_projected_csv_needs_population_crs(projected_csv_inputs, tmp_path, capsys):
    network, population, centers = projected_csv_inputs
    argv = ["-q", "coverage", "--network", str(network), "--population", str(population),
            "--centers", str(centers), "--minutes", "3"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--population-crs" in err and "crs=" in err
    with pytest.raises(CRSError, match="--population-crs"):
        load_population(population)
    assert main([*argv, "--population-crs", CRS, "--out", str(tmp_path / "b")]) == 0
    assert load_population(population, crs=CRS).total == 160


def test_population_crs_is_refused_where_the_source_has_its_own(projected_csv_inputs):
    _, _, centers = projected_csv_inputs
    with pytest.raises(InputError, match="--population-crs .*has its own"):
        load_population(centers, crs=CRS)


# ---- the example sweep -------------------------------------------------------------------------

def test_the_example_sweep_loads():
    from covplan.sweep import load_sweep

    sweep = load_sweep(ROOT / "data" / "sweeps" / "demo_sweep.toml")
    assert 2 <= len(sweep.scenarios) <= 6
    assert all(s.base.demo for s in sweep.scenarios)
    axes = {key for parameters in sweep.parameters for key, _ in parameters}
    assert axes == {"target_pop", "walk_speed_kmh"}
