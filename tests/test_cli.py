"""The `covplan` command: outputs written, bad input as one line and exit code 2."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys

import geopandas as gpd
import osmnx as ox
import pyogrio
import pytest
from covplan.cli import main
from shapely.geometry import Point

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"


@pytest.fixture
def grid_files(tmp_path, grid5):
    network = tmp_path / "grid.graphml"
    ox.save_graphml(grid5, network)
    pts = [(X0 + 100 * c, Y0 + 100 * r) for r in range(5) for c in range(5)]
    population = tmp_path / "pop.gpkg"
    gpd.GeoDataFrame({"population": [10] * 25}, geometry=[Point(p) for p in pts],
                     crs=CRS).to_file(population)
    centers = tmp_path / "centers.geojson"
    gpd.GeoDataFrame({"center_id": ["A"]}, geometry=[Point(X0 + 200, Y0 + 200)],
                     crs=CRS).to_crs(4326).to_file(centers)
    return network, population, centers


def test_demo_writes_map_and_geopackage(tmp_path):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out)]) == 0
    layers = {name for name, _ in pyogrio.list_layers(out / "asis.gpkg")}
    assert {"communities", "units", "centers", "isochrones", "districts"} <= layers
    communities = gpd.read_file(out / "asis.gpkg", layer="communities")
    assert len(communities) == 69
    summary = json.loads((out / "asis.json").read_text())
    assert summary["population_total"] == communities["population"].sum()
    assert 0 < summary["coverage_share"] < 1
    html = (out / "map.html").read_text()
    assert "communities" in html and "OpenStreetMap contributors" in html
    # The replay is written as a scenario that `covplan plan --scenario` can repeat.
    from covplan.scenarios import load_scenario

    scenario = load_scenario(out / "scenario.toml")
    assert scenario.base.demo and scenario.options["target_pop"] == 10_000
    assert json.loads((out / "resolved.json").read_text())


def test_coverage_and_isochrones_commands(tmp_path, grid_files):
    network, population, centers = grid_files
    assert main(["-q", "coverage", "--network", str(network), "--population", str(population),
                 "--centers", str(centers), "--minutes", "3", "--out", str(tmp_path / "cov")]) == 0
    summary = json.loads((tmp_path / "cov" / "coverage.json").read_text())
    # 3 minutes = 225 m from the middle node: |dr| + |dc| <= 2 on a 100 m grid -> 13 nodes.
    assert summary["population_total"] == 250
    assert summary["population_covered"] == 130
    assert main(["-q", "isochrones", "--network", str(network), "--centers", str(centers),
                 "--minutes", "2,4", "--out", str(tmp_path / "iso")]) == 0
    iso = gpd.read_file(tmp_path / "iso" / "isochrones.gpkg", layer="isochrones")
    assert sorted(iso["minutes"]) == [2.0, 4.0]


@pytest.mark.parametrize("args, needle", [
    (["--network", "missing.pbf"], "does not exist"),
    (["--minutes", "0"], "max_minutes"),
    (["--population-column", "nope"], "nope"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, grid_files, capsys, args, needle):
    network, population, centers = grid_files
    base = {"--network": str(network), "--population": str(population),
            "--centers": str(centers), "--out": str(tmp_path / "o")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["-q", "coverage"] + [x for kv in base.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


# ---- covplan plan --scenario, reproduction, compare ----------------------------------------
def _scenario_file(folder, grid_files, body: str = ""):
    """A scenario over the grid files: target 60 +-50 %, 3 minutes, a new center and an estate."""
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)

    def ll(x, y):
        return list(to_lonlat.transform(X0 + x, Y0 + y))

    network, population, centers = grid_files
    corners = [ll(250, 250), ll(450, 250), ll(450, 450), ll(250, 450)]
    path = folder / "what_if.toml"
    path.write_text(f"""
name = "grid what-if"
[base]
network = "{network.name}"
population = "{population.name}"
centers = "{centers.name}"
[plan]
target_pop = 60
tolerance = 0.5
max_minutes = 3
[[changes]]
type = "add_center"
center_id = "B"
at = {ll(300, 300)}
[[changes]]
type = "add_residents"
count = 40
polygon = {corners}
{body}""")
    return path


def _units(folder):
    return gpd.read_file(folder / "plan.gpkg", layer="units").sort_values(["cell_id", "unit_id"])


def _figures(folder):
    report = json.loads((folder / "report.json").read_text())
    report.pop("runtime_s")
    return report


def test_plan_scenario_round_trip_gives_the_same_plan(tmp_path, grid_files):
    scenario = _scenario_file(tmp_path, grid_files)
    first, again = tmp_path / "first", tmp_path / "again"
    # --restarts overrides the scenario's [plan] (which leaves it at the default).
    assert main(["-q", "plan", "--scenario", str(scenario), "--restarts", "2", "--out", str(first)]) == 0
    resolved = json.loads((first / "resolved.json").read_text())
    assert resolved["config"]["restarts"] == 2 and resolved["config"]["target_pop"] == 60
    assert set(resolved["config"]) == {"target_pop", "tolerance", "max_minutes", "walk_speed_kmh",
                                       "candidate_spacing_m", "max_unit_pop", "restarts", "tries",
                                       "seed",
                                       "stability_minutes", "exceptions", "min_pop_exception",
                                       "max_new_centers", "new_center_cost", "grids",
                                       "grid_target", "grid_tolerance", "grid_minutes",
                                       "household_size"}
    assert resolved["inputs"]["network"]["sha256"] and resolved["version"]
    assert [c["type"] for c in resolved["changes"]] == ["add_center", "add_residents"]
    saved = (first / "scenario.toml").read_text()
    assert "restarts = 2" in saved and str(tmp_path) in saved      # absolute paths
    report = _figures(first)
    assert report["population_total"] == 250 + 40 and report["parameters"]["restarts"] == 2

    assert main(["-q", "plan", "--scenario", str(first / "scenario.toml"), "--out", str(again)]) == 0
    a, b = _units(first), _units(again)
    assert list(a["community_id"]) == list(b["community_id"]) and list(a["population"]) == list(b["population"])
    assert _figures(again) == report


def test_plain_plan_is_saved_as_a_scenario_too(tmp_path, grid_files):
    network, population, centers = grid_files
    out = tmp_path / "plain"
    assert main(["-q", "plan", "--network", str(network), "--population", str(population),
                 "--centers", str(centers), "--target", "60", "--tolerance", "0.5",
                 "--minutes", "3", "--out", str(out)]) == 0
    again = tmp_path / "again"
    assert main(["-q", "plan", "--scenario", str(out / "scenario.toml"), "--out", str(again)]) == 0
    assert list(_units(out)["community_id"]) == list(_units(again)["community_id"])
    assert _figures(again) == _figures(out)


@pytest.mark.parametrize("extra, args, needle", [
    ('[[changes]]\ntype = "remove_center"\ncenter = "A"\n', [],
     "changes[2]: unknown key 'center'; did you mean 'center_id'"),
    ('[[changes]]\ntype = "remove_center"\ncenter_id = "Z"\n', [], "changes[2].center_id: no center 'Z'"),
    ('[[changes]]\ntype = "scale_population"\nfactor = 2\npolygon = [[0, 0], [1, 0], [1, 1]]\n', [],
     "changes[2].polygon: the polygon"),
    ("", ["--network", "x.pbf"], "--network cannot be combined with --scenario"),
    ("", ["--tolerance", "2"], "tolerance"),
])
def test_bad_scenario_is_one_line_and_exit_2(tmp_path, grid_files, capsys, extra, args, needle):
    scenario = _scenario_file(tmp_path, grid_files, extra)
    assert main(["-q", "plan", "--scenario", str(scenario), *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


def test_plan_needs_inputs_or_a_scenario(tmp_path, capsys):
    assert main(["-q", "plan", "--out", str(tmp_path / "o")]) == 2
    assert "--network and --population, or --scenario" in capsys.readouterr().err


def test_compare_command(tmp_path, grid_files):
    from covplan.cli import _build_parser, _cmd_compare

    args = _build_parser().parse_args(["compare", "a", "b", "--out", "c"])
    assert (args.plan_a, args.plan_b, args.out, args.func) == ("a", "b", "c", _cmd_compare)
    pytest.importorskip("covplan.output.compare")
    network, population, centers = grid_files
    common = ["--network", str(network), "--population", str(population), "--centers", str(centers),
              "--tolerance", "0.5", "--minutes", "3"]
    assert main(["-q", "plan", *common, "--target", "60", "--out", str(tmp_path / "a")]) == 0
    assert main(["-q", "plan", *common, "--target", "120", "--out", str(tmp_path / "b")]) == 0
    assert main(["-q", "compare", str(tmp_path / "a"), str(tmp_path / "b"),
                 "--out", str(tmp_path / "c")]) == 0
    assert any((tmp_path / "c").iterdir())


def test_site_chooses_a_center_per_community_and_places_new_ones(tmp_path, grid_files):
    from shapely.geometry import box

    network, population, centers = grid_files
    halves = gpd.GeoDataFrame({"community_id": ["W", "E"]},
                              geometry=[box(X0 - 50, Y0 - 50, X0 + 250, Y0 + 450),
                                        box(X0 + 250, Y0 - 50, X0 + 450, Y0 + 450)], crs=CRS)
    communities = tmp_path / "halves.gpkg"
    halves.to_file(communities)
    out = tmp_path / "site"
    assert main(["-q", "site", "--network", str(network), "--population", str(population),
                 "--communities", str(communities), "--centers", str(centers), "--minutes", "3",
                 "--candidate-spacing", "100", "--budget", "1", "--out", str(out)]) == 0
    chosen = gpd.read_file(out / "site.gpkg", layer="centers").set_index("community_id")
    assert sorted(chosen.index) == ["E", "W"]
    for community_id, row in chosen.iterrows():      # each center stands in its community
        assert halves.set_index("community_id").geometry[community_id].contains(row.geometry)
    summary = json.loads((out / "site.json").read_text())
    assert summary["residents_in_communities"] == 250
    # The existing center reaches 130 of 250 residents within 3 minutes; one new site adds more.
    assert summary["covered_before"] == 130 and summary["covered_after"] > 130
    assert len(gpd.read_file(out / "site.gpkg", layer="new_sites")) == 1
    assert "<script src=" not in (out / "map.html").read_text()     # self-contained map


def test_site_needs_communities_or_a_budget(tmp_path, grid_files, capsys):
    network, population, _ = grid_files
    assert main(["site", "--network", str(network), "--population", str(population),
                 "--out", str(tmp_path / "x")]) == 2
    assert "--communities" in capsys.readouterr().err


# ---- console and logs ------------------------------------------------------------------------
_STAMPED = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} (DEBUG|INFO|WARNING|ERROR) [\w.]+: ")


def test_plan_log_file_has_timestamps_stage_timings_and_no_progress_bars(tmp_path, grid_files):
    """stderr to a file (not a TTY): timestamped lines only, no '\r'; -v adds stage timings."""
    network, population, centers = grid_files
    err = tmp_path / "stderr.log"
    with err.open("w") as stream:
        done = subprocess.run(
            [sys.executable, "-m", "covplan.cli", "-v", "plan", "--network", str(network),
             "--population", str(population), "--centers", str(centers), "--target", "60",
             "--tolerance", "0.5", "--minutes", "3", "--out", str(tmp_path / "plan")],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stream, check=False,
            env={**os.environ, "PYTHONSAFEPATH": "1"})
    text = err.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text
    lines = text.splitlines()
    assert lines and all(_STAMPED.match(line) for line in lines), text
    stages = [line for line in lines if " INFO covplan.cli: stage " in line]
    for name in ("inputs", "plan (reach, partition, isochrones)", "writing"):
        assert any(re.search(rf"stage {re.escape(name)}[^:]*: \d+\.\d s$", line) for line in stages), stages
    assert re.search(r"INFO covplan.cli: Wrote .*: \d+ communities; [\d.]+ % of residents within 3 min "
                     r"of their own community's center \(ceiling [\d.]+ %\); [\d.]+ % of residents in "
                     r"communities within 60 ± 50 % \(ceiling [\d.]+ %", lines[-1]), lines[-1]


def test_stage_timings_are_debug_without_verbose(tmp_path, grid_files, caplog):
    network, population, centers = grid_files
    caplog.set_level(logging.DEBUG)
    assert main(["coverage", "--network", str(network), "--population", str(population),
                 "--centers", str(centers), "--minutes", "3", "--out", str(tmp_path / "cov")]) == 0
    stages = [r for r in caplog.records if r.name == "covplan.cli" and r.getMessage().startswith("stage ")]
    assert {r.getMessage().split(":")[0] for r in stages} >= {"stage coverage (reach)", "stage isochrones",
                                                              "stage writing"}
    assert {r.levelno for r in stages} == {logging.DEBUG}
    final = [r.getMessage() for r in caplog.records if r.name == "covplan.cli"][-1]
    assert final.endswith("52.0 % of 250 residents within 3 min of the nearest center"), final


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty, progress, drawn", [(True, True, True), (False, True, False),
                                                  (True, False, False)])
def test_progress_bars_only_when_asked_and_on_a_terminal(monkeypatch, tty, progress, drawn):
    from covplan._progress import progress_bar

    stream = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    assert list(progress_bar(range(3), desc="steps", progress=progress)) == [0, 1, 2]
    assert ("\r" in stream.getvalue()) is drawn


# ---- parsing stays light -------------------------------------------------------------------
_HEAVY = ("geopandas", "ortools", "shapely", "pandas", "scipy", "folium", "osmnx")
_LIGHT_CHECK = f"""
import contextlib, io, json, sys
import covplan, covplan.cli

heavy = {_HEAVY!r}
loaded = {{"import": [m for m in heavy if m in sys.modules]}}
covplan.cli._build_parser()
loaded["parser"] = [m for m in heavy if m in sys.modules]
for argv in (["--help"], ["demo", "--help"], ["plan", "--help"], ["coverage", "--help"],
             ["site", "--help"], ["isochrones", "--help"], ["compare", "--help"],
             ["bench", "plan", "--help"], ["bench", "reach", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            covplan.cli.main(argv)
        except SystemExit as exc:
            assert exc.code == 0, (argv, exc.code)
    loaded[" ".join(argv)] = [m for m in heavy if m in sys.modules]
print(json.dumps(loaded))
"""


def test_help_loads_no_geodata_or_solver_library(tmp_path):
    """`import covplan`, building the parser and every --help load none of the heavy libraries."""
    done = subprocess.run([sys.executable, "-c", _LIGHT_CHECK], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONSAFEPATH": "1"}, check=False)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "--help" in loaded and "bench reach --help" in loaded
    assert loaded == {step: [] for step in loaded}


def test_atlas_refuses_a_non_pdf_and_a_missing_plan_folder(tmp_path, capsys):
    assert main(["atlas", str(tmp_path), "--out", str(tmp_path / "atlas.png")]) == 2
    assert "--out must name a .pdf file" in capsys.readouterr().err
    assert main(["atlas", str(tmp_path / "nowhere"), "--out", str(tmp_path / "a.pdf")]) == 2
    assert capsys.readouterr().err.count("\n") == 1                  # one line, no traceback
