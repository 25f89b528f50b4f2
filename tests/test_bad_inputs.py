"""Bad inputs at the loaders: each case asserts the error type (or warning) and that the message
names the problem and the fix. Extends the bad-input tests of test_population.py and
test_areas.py (issue 12: no silent wrong plan)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from covplan.errors import CoverageWarning, CRSError, DataSourceError, InputError
from covplan.inputs.areas import load_centers, load_communities, load_districts
from covplan.inputs.population import Population, load_population
from shapely.geometry import LineString, Point, box

UTM = "EPSG:32633"
X0, Y0 = 500_000.0, 4_000_000.0


def _grid(n: int = 3, pop=None) -> gpd.GeoDataFrame:
    """n x n cells of 100 m with 10, 20, ... residents (or `pop`)."""
    cells = [box(X0 + 100 * c, Y0 + 100 * r, X0 + 100 * (c + 1), Y0 + 100 * (r + 1))
             for r in range(n) for c in range(n)]
    counts = np.arange(1, n * n + 1) * 10 if pop is None else pop
    return gpd.GeoDataFrame({"cell_id": [f"c{i}" for i in range(n * n)], "pop": counts},
                            geometry=cells, crs=UTM)


def _csv(tmp_path: Path, file_name: str, **columns) -> Path:
    path = tmp_path / file_name
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def _hexes(n: int = 30) -> list[str]:
    """n distinct resolution-9 H3 ids around a point in Berlin."""
    return sorted(h3.grid_disk(h3.latlng_to_cell(52.52, 13.40, 9), 3))[:n]


def _two_layers(tmp_path: Path) -> Path:
    """A GeoPackage holding a polygon layer 'communities' and a point layer 'centers'."""
    path = tmp_path / "plan.gpkg"
    _grid().rename(columns={"cell_id": "community_id"}).to_file(path, layer="communities")
    gpd.GeoDataFrame({"center_id": ["a", "b"]}, crs=UTM,
                     geometry=[Point(X0 + 50, Y0 + 50), Point(X0 + 250, Y0 + 250)]
                     ).to_file(path, layer="centers")
    return path


# --- 1. the population column is named or given, never guessed ------------------------------

def test_numeric_jobs_column_is_not_taken_for_residents(tmp_path):
    path = _csv(tmp_path, "jobs.csv", lon=[13.40, 13.41], lat=[52.50, 52.51], jobs=[30, 40])
    with pytest.raises(InputError, match=r"no column is named like a population.*"
                                         r"--population-column.*population_column=.*\['jobs'\]"):
        load_population(path)
    assert load_population(path, population_column="jobs").total == 70   # explicit is fine


def test_h3_table_with_only_jobs_is_refused_too():
    table = pd.DataFrame({"h3": _hexes(3), "jobs": [1, 2, 3]})
    with pytest.raises(InputError, match=r"--population-column.*\['jobs'\]"):
        load_population(table)


def test_two_population_like_columns_are_ambiguous():
    with pytest.raises(InputError, match=r"several columns.*\['pop', 'pop2020'\].*"
                                         r"--population-column"):
        Population.from_frame(_grid().assign(pop2020=1))


def test_missing_named_population_column_lists_the_numeric_ones():
    with pytest.raises(InputError, match=r"lacks column\(s\) \['people'\].*--population-column"
                                         r".*numeric columns \['pop'\]"):
        Population.from_frame(_grid(), population_column="people")


# --- 2. H3 ids: every row checked, no silent fallback, no nesting ---------------------------

def test_one_bad_h3_id_after_row_20_is_an_error_not_a_lon_lat_fallback(tmp_path):
    ids = _hexes(30)
    ids[25] = "89zz"                                     # the first 20 rows are all valid
    path = _csv(tmp_path, "hex.csv", id=ids, lon=np.linspace(13.4, 13.5, 30),
                lat=np.full(30, 52.5), population=np.ones(30, int))
    with pytest.raises(InputError, match=r"1 invalid H3 id\(s\) of 30.*'89zz'.*rows \[25\].*"
                                         r"Fix those rows"):
        load_population(path)


def test_column_named_h3_must_hold_h3_ids(tmp_path):
    path = _csv(tmp_path, "named.csv", h3=["a", "b"], lon=[13.4, 13.41], lat=[52.5, 52.5],
                pop=[1, 2])
    with pytest.raises(InputError, match=r"column 'h3' of H3 ids has 2 invalid"):
        load_population(path)


def test_nested_h3_cells_would_count_twice():
    child = _hexes(1)[0]
    parent = h3.cell_to_parent(child, 8)
    table = pd.DataFrame({"h3": [child, parent], "pop": [5, 50]})
    with pytest.raises(InputError, match=r"resolutions \[8, 9\].*inside.*counted twice.*"
                                         r"one resolution"):
        Population.from_h3(table)


def test_mixed_but_disjoint_h3_resolutions_warn():
    fine = _hexes(1)[0]
    far = h3.latlng_to_cell(48.85, 2.35, 8)                     # Paris, not inside Berlin's
    with pytest.warns(CoverageWarning, match=r"mixes H3 resolutions.*\{8: 1, 9: 1\}"):
        population = Population.from_h3(pd.DataFrame({"h3": [fine, far], "pop": [5, 50]}))
    assert population.total == 55
    assert any("mixes H3 resolutions" in w for w in population.warnings)


def test_two_h3_columns_are_ambiguous():
    ids = _hexes(4)
    table = pd.DataFrame({"h3": ids, "parent": [h3.cell_to_parent(v, 7) for v in ids],
                          "pop": [1, 2, 3, 4]})
    with pytest.raises(InputError, match=r"several columns look like H3 ids.*h3_column="):
        load_population(table)


# --- 4. layers: PATH:LAYER, no first-layer guess, centers are points, CSVs -------------------

def test_two_layer_geopackage_as_centers_needs_a_layer(tmp_path):
    path = _two_layers(tmp_path)
    with pytest.raises(InputError, match=r"2 layers \['communities', 'centers'\].*PATH:LAYER.*"
                                         r"--centers '.*plan.gpkg:communities'"):
        load_centers(path)
    assert load_centers(f"{path}:centers")["center_id"].tolist() == ["a", "b"]
    assert len(load_communities(path, layer="communities")) == 9


def test_polygon_layer_as_centers_is_refused(tmp_path):
    path = _two_layers(tmp_path)
    with pytest.raises(InputError, match=r"centers must be points.*not communities.*"
                                         r"from_polygons=True"):
        load_centers(f"{path}:communities")
    points = load_centers(f"{path}:communities", from_polygons=True)
    assert (points.geom_type == "Point").all() and len(points) == 9


def test_missing_layer_lists_the_layers(tmp_path):
    path = _two_layers(tmp_path)
    with pytest.raises(InputError, match=r"no layer 'roads'.*\['communities', 'centers'\]"):
        load_districts(f"{path}:roads")


def test_population_layer_by_path_suffix(tmp_path):
    path = tmp_path / "pop.gpkg"
    _grid().to_file(path, layer="a")
    _grid(2).to_file(path, layer="b")
    with pytest.raises(InputError, match=r"population file .* 2 layers.*--population '.*:a'"):
        load_population(path)
    assert load_population(f"{path}:b").total == 100
    with pytest.raises(InputError, match=r"names layer 'b' but layer='a'.*once"):
        load_population(f"{path}:b", layer="a")


def test_centers_from_a_lon_lat_csv(tmp_path):
    path = _csv(tmp_path, "centers.csv", id=["s1", "s2"], longitude=[13.4, 13.41],
                latitude=[52.5, 52.51])
    centers = load_centers(path)
    assert centers["center_id"].tolist() == ["s1", "s2"]
    assert centers.crs.to_epsg() == 4326 and centers.geometry.iloc[1].equals(Point(13.41, 52.51))


def test_centers_csv_without_coordinates(tmp_path):
    path = _csv(tmp_path, "centers.csv", name=["a"], address=["Main St 1"])
    with pytest.raises(InputError, match=r"no lon/lat columns.*Name the coordinate columns lon "
                                         r"and lat"):
        load_centers(path)


def test_projected_centers_csv_needs_crs(tmp_path):
    path = _csv(tmp_path, "centers.csv", x=[X0], y=[Y0])
    with pytest.raises(CRSError, match=r"outside lon/lat degrees.*pass crs="):
        load_centers(path)
    assert load_centers(path, crs=UTM).crs.to_epsg() == 32633


def test_districts_as_csv_are_refused(tmp_path):
    path = _csv(tmp_path, "districts.csv", name=["d"], lon=[13.4], lat=[52.5])
    with pytest.raises(InputError, match=r"districts must be polygons in a vector format.*"
                                         r"ogr2ogr.*--districts"):
        load_districts(path)


def test_lines_as_communities(tmp_path):
    path = tmp_path / "streets.geojson"
    gpd.GeoDataFrame(geometry=[LineString([(X0, Y0), (X0 + 100, Y0)])], crs=UTM).to_file(path)
    with pytest.raises(InputError, match=r"must hold polygons.*LineString.*right file or layer"):
        load_communities(path)


# --- 5. implausible values --------------------------------------------------------------------

def test_implausible_density_warns_and_is_kept():
    # 2,000 people in a 100 m cell are 200,000 per km2.
    frame = _grid(pop=[10, 20, 2_000, 40, 50, 60, 70, 80, 90])
    with pytest.warns(CoverageWarning, match=r"1 cell\(s\) are denser than 100,000.*c2 "
                                             r"\(200,000/km2\).*per km2 or per hectare"):
        population = Population.from_frame(frame)
    assert population.total == int(frame["pop"].sum())       # a warning, nothing dropped
    assert len(population.warnings) == 1 and "denser" in population.warnings[0]
    assert population.to_crs(4326).warnings == population.warnings


def test_overlapping_cells_warn():
    frame = pd.concat([_grid(2), _grid(2).iloc[[0]].assign(cell_id="dup")], ignore_index=True)
    with pytest.warns(CoverageWarning, match=r"1 pair\(s\) of populated cells overlap.*c0 & dup "
                                             r"\(100% of the smaller\).*counted twice"):
        population = Population.from_frame(frame)
    assert population.total == 110


@pytest.mark.parametrize("value", [5e9, np.inf])
def test_counts_too_large_to_be_people(value):
    frame = _grid()
    frame["pop"] = frame["pop"].astype(float)
    frame.loc[4, "pop"] = value
    kind = InputError
    with pytest.raises(kind, match=r"(above 1e\+09.*c4.*--population-column)|(infinite.*fill)"):
        Population.from_frame(frame)


def test_raster_with_an_impossible_pixel(tmp_path):
    path = tmp_path / "pop.tif"
    data = np.array([[1.0, 2.0], [3.0, 4e12]], dtype="float64")
    with rasterio.open(path, "w", driver="GTiff", width=2, height=2, count=1, dtype="float64",
                       crs=UTM, transform=Affine(100, 0, X0, 0, -100, Y0)) as dst:
        dst.write(data, 1)
    with pytest.raises(InputError, match=r"above 1e\+09.*r1c1.*residents per pixel.*band="):
        load_population(path)


# --- files, CRS, values, geometry --------------------------------------------------------------

def test_centers_file_that_does_not_exist(tmp_path):
    with pytest.raises(DataSourceError, match=r"centers file '.*nowhere.gpkg' does not exist; "
                                              r"check the path"):
        load_centers(tmp_path / "nowhere.gpkg")


def test_empty_communities_file(tmp_path):
    (tmp_path / "communities.gpkg").write_bytes(b"")
    with pytest.raises(DataSourceError, match=r"empty \(0 bytes\); re-export"):
        load_communities(tmp_path / "communities.gpkg")


def test_binary_garbage_as_population_csv(tmp_path):
    path = tmp_path / "pop.csv"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataSourceError, match=r"cannot parse population CSV.*UTF-8"):
        load_population(path)


@pytest.mark.parametrize(("value", "match"), [(-9999, r"negative.*Replace no-data markers"),
                                              (None, r"missing.*fill them")])
def test_csv_with_bad_counts(tmp_path, value, match):
    path = _csv(tmp_path, "pop.csv", lon=[13.4, 13.41], lat=[52.5, 52.51], population=[3, value])
    with pytest.raises(InputError, match=match):
        load_population(path)


def test_centers_without_crs():
    frame = gpd.GeoDataFrame({"center_id": ["a"]}, geometry=[Point(X0, Y0)])
    with pytest.raises(CRSError, match=r"no CRS; set one with `.set_crs"):
        load_centers(frame)


def test_csv_with_a_layer(tmp_path):
    path = _csv(tmp_path, "pop.csv", lon=[13.4], lat=[52.5], population=[3])
    with pytest.raises(InputError, match="a CSV has no layers"):
        load_population(path, layer="x")


def test_people_on_rows_without_geometry():
    frame = _grid()
    frame.loc[2, "geometry"] = None
    with pytest.raises(InputError, match=r"rows \[2\] have people but no geometry; fix or drop"):
        Population.from_frame(frame)


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    import osmnx as ox
    from conftest import grid_graph
    from covplan.cli import main

    network = tmp_path / "grid.graphml"
    ox.save_graphml(grid_graph(3), network)
    lonlat = gpd.GeoSeries([Point(X0 + 50, Y0 + 50), Point(X0 + 150, Y0 + 50)], crs=UTM).to_crs(4326)
    population = _csv(tmp_path, "jobs.csv", lon=lonlat.x, lat=lonlat.y, jobs=[5, 6])
    centers = _csv(tmp_path, "centers.csv", lon=lonlat.x[:1], lat=lonlat.y[:1])
    code = main(["-q", "coverage", "--network", str(network), "--population", str(population),
                 "--centers", str(centers), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--population-column" in err
