"""The `covplan` command: outputs written, bad input as one line and exit code 2."""

from __future__ import annotations

import json

import geopandas as gpd
import osmnx as ox
import pyogrio
import pytest
from shapely.geometry import Point

from coverage.cli import main

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
    assert summary["population_total"] == communities["pop"].sum()
    assert 0 < summary["coverage_share_own"] < 1
    html = (out / "map.html").read_text()
    assert "communities" in html and "OpenStreetMap contributors" in html


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
