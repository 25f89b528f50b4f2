"""Tests for covplan.inputs.population: one set of people through every source, splits, bad input."""

from __future__ import annotations

import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from covplan.errors import CRSError, DataSourceError, InputError
from covplan.inputs.population import Population, largest_remainder, load_population
from covplan.inputs.tessellation import piece_adjacency, unit_pieces
from shapely.geometry import Point, Polygon, box

UTM = "EPSG:32633"          # UTM 33N: central Europe, metres
ORIGIN = (500_000.0, 5_000_000.0)   # top-left corner of the synthetic raster
PIXEL_M = 100.0
NODATA = -1
# 4 x 5 pixels of people per 100 m pixel; -1 is nodata, 0 is an empty pixel.
PIXELS = np.array([[10, 250, -1, 0, 30],
                   [5, 1000, 400, -1, 7],
                   [0, 60, 3000, 80, 2],
                   [-1, -1, 12, 90, 501]], dtype="int32")
TOTAL = int(PIXELS[PIXELS > 0].sum())
POPULATED = int((PIXELS > 0).sum())


@dataclass(frozen=True)
class FakeNetwork:
    """Just what disaggregate(onto='nodes') reads from a WalkNetwork."""

    x: np.ndarray
    y: np.ndarray
    crs: pyproj.CRS


def _pixel_box(row: int, col: int):
    left, top = ORIGIN[0] + col * PIXEL_M, ORIGIN[1] - row * PIXEL_M
    return box(left, top - PIXEL_M, left + PIXEL_M, top)


def _write_raster(path: Path, data: np.ndarray, *, nodata=NODATA, crs=UTM) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0],
                       count=1, dtype=data.dtype, crs=crs, nodata=nodata,
                       transform=Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1])) as dst:
        dst.write(data, 1)
    return path


def _grid_frame() -> gpd.GeoDataFrame:
    rows, cols = np.indices(PIXELS.shape)
    return gpd.GeoDataFrame(
        {"cell_id": [f"r{r}c{c}" for r, c in zip(rows.ravel(), cols.ravel(), strict=True)],
         "pop": np.clip(PIXELS.ravel(), 0, None)},
        geometry=[_pixel_box(r, c) for r, c in zip(rows.ravel(), cols.ravel(), strict=True)],
        crs=UTM)


def _h3_table() -> pd.DataFrame:
    """The same people, each pixel's count moved to the resolution-9 H3 cell of its centre."""
    frame = _grid_frame()
    centres = frame.geometry.centroid.to_crs("EPSG:4326")
    ids = [h3.latlng_to_cell(p.y, p.x, 9) for p in centres]
    return frame.assign(h3=ids).groupby("h3", as_index=False)["pop"].sum()


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    """A GeoTIFF, a GeoPackage grid and an H3 CSV holding the same TOTAL people."""
    tif = _write_raster(tmp_path / "pop.tif", PIXELS)
    gpkg = tmp_path / "grid.gpkg"
    _grid_frame().to_file(gpkg, layer="grid")
    csv = tmp_path / "hex.csv"
    _h3_table().to_csv(csv, index=False)
    return {"tif": tif, "gpkg": gpkg, "csv": csv}


@pytest.fixture
def raster_pop(sources: dict[str, Path]) -> Population:
    return Population.from_raster(sources["tif"])


def _per_cell(population: Population) -> pd.Series:
    return population.units.groupby("cell_id")["pop"].sum()


def _assert_conserved(split: Population, original: Population) -> None:
    """Same total, each cell's units sum exactly to the cell, ids 0..k-1, no empty units."""
    assert split.total == original.total == int(split.units["pop"].sum())
    cells = original.cells.set_index("cell_id")["pop"]
    per_cell = _per_cell(split)
    pd.testing.assert_series_equal(per_cell, cells[cells > 0].loc[per_cell.index],
                                   check_names=False)
    assert set(per_cell.index) == set(cells[cells > 0].index)
    assert split.units["unit_id"].tolist() == list(range(len(split.units)))
    assert (split.units["pop"] > 0).all()
    assert split.units["pop"].dtype == np.int64
    assert split.crs == original.crs


# --- the same people from every source ------------------------------------------------------

def test_all_sources_load_the_same_total(sources: dict[str, Path]) -> None:
    loaded = {kind: load_population(path) for kind, path in sources.items()}
    loaded["h3"] = Population.from_h3(_h3_table())
    for kind, population in loaded.items():
        assert population.total == TOTAL, kind
        assert int(population.units["pop"].sum()) == TOTAL, kind
    assert len(loaded["tif"].cells) == len(loaded["tif"].units) == POPULATED
    assert len(loaded["gpkg"].cells) == PIXELS.size       # pop-0 cells stay in `cells` ...
    assert len(loaded["gpkg"].units) == POPULATED         # ... but get no unit
    assert loaded["csv"].crs.to_epsg() == 4326
    assert loaded["csv"].cells.geom_type.eq("Polygon").all()


@pytest.mark.parametrize("driver", ["GeoJSON", "FlatGeobuf", "zipped shapefile"])
def test_vector_formats(tmp_path: Path, driver: str) -> None:
    frame = _grid_frame().to_crs("EPSG:4326")
    if driver == "zipped shapefile":
        frame.to_file(tmp_path / "grid.shp")
        path = tmp_path / "grid.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for part in tmp_path.glob("grid.*"):
                if part != path:
                    archive.write(part, part.name)
    else:
        path = tmp_path / ("grid.fgb" if driver == "FlatGeobuf" else "grid.geojson")
        frame.to_file(path, driver=driver)
    population = load_population(path)
    assert population.total == TOTAL
    # Sorted: FlatGeobuf stores features in spatial-index order.
    assert sorted(population.cells["cell_id"]) == sorted(frame["cell_id"])


def test_raster_cells_are_pixel_boxes(raster_pop: Population) -> None:
    cells = raster_pop.cells.set_index("cell_id")
    assert cells.loc["r1c1", "pop"] == 1000
    assert cells.loc["r1c1", "geometry"].equals(_pixel_box(1, 1))
    assert "r0c2" not in cells.index and "r0c3" not in cells.index   # nodata and 0 skipped
    assert raster_pop.crs.to_epsg() == 32633
    assert raster_pop.units.dtypes["unit_id"] == np.int64


def test_fractional_raster_rounds_to_the_rounded_sum(tmp_path: Path, caplog) -> None:
    data = np.array([[0.4, 0.4, 0.4], [1.5, -9999.0, 0.0]], dtype="float32")
    path = _write_raster(tmp_path / "frac.tif", data, nodata=-9999.0)
    with caplog.at_level(logging.INFO, logger="covplan.inputs.population"):
        population = Population.from_raster(path)
    assert population.total == 3       # round(2.7)
    # floors 0, 0, 0, 1; the two missing people go to the largest remainders: 1.5, then the
    # first of the tied 0.4s.
    assert population.cells["pop"].tolist() == [1, 0, 0, 2]
    assert "largest remainder" in caplog.text


def test_largest_remainder_is_exact_and_breaks_ties_by_index() -> None:
    assert largest_remainder(np.full(3, 10 / 3), 10).tolist() == [4, 3, 3]
    assert largest_remainder(np.array([0.5, 0.5, 2.0]), 3).tolist() == [1, 0, 2]


def test_csv_points_from_lon_lat(tmp_path: Path) -> None:
    table = pd.DataFrame({"Longitude": [13.4, 13.41], "LAT": [52.5, 52.51], "pop2020": [3, 4]})
    path = tmp_path / "points.csv"
    table.to_csv(path, index=False)
    population = Population.from_csv(path)
    assert population.total == 7 and population.population_column == "pop2020"
    assert population.units.geometry.iloc[0].equals(Point(13.4, 52.5))


def test_population_column_detection() -> None:
    frame = _grid_frame().rename(columns={"pop": "ASUKKAITA"})
    assert Population.from_frame(frame).population_column == "ASUKKAITA"
    people = _grid_frame().rename(columns={"pop": "people"})
    assert Population.from_frame(people.assign(jobs=1)).population_column == "people"
    # The only numeric column is not taken by elimination: it may count jobs, not residents.
    jobs_only = _grid_frame().rename(columns={"pop": "jobs"})
    with pytest.raises(InputError, match=r"--population-column.*population_column=.*\['jobs'\]"):
        Population.from_frame(jobs_only)
    assert Population.from_frame(jobs_only, population_column="jobs").total == TOTAL
    with pytest.raises(InputError, match=r"several columns.*\['pop', 'residents'\]"):
        Population.from_frame(_grid_frame().assign(residents=1))


def test_load_population_dispatch(raster_pop: Population) -> None:
    assert load_population(raster_pop) is raster_pop
    assert load_population(_h3_table()).total == TOTAL
    assert load_population(_grid_frame()).total == TOTAL
    assert raster_pop.to_crs("EPSG:4326").total == TOTAL
    with pytest.raises(TypeError, match="must be a path"):
        load_population(42)


def test_points_become_voronoi_areas_that_touch_their_neighbours() -> None:
    # A 5 x 4 lattice of points 400 m apart: as 150 m discs they never touched.
    cols, rows = np.meshgrid(np.arange(5), np.arange(4))
    frame = gpd.GeoDataFrame(
        {"cell_id": [f"p{r}{c}" for r, c in zip(rows.ravel(), cols.ravel(), strict=True)],
         "pop": np.arange(20) * 7 + 3},
        geometry=gpd.points_from_xy(ORIGIN[0] + 400.0 * cols.ravel(),
                                    ORIGIN[1] + 400.0 * rows.ravel()), crs=UTM)
    population = Population.from_frame(frame)
    cells = population.cells.set_index("cell_id").geometry
    assert (population.cells.geom_type == "Polygon").all()
    assert population.total == int(frame["pop"].sum()) == int(population.cells["pop"].sum())
    for r in range(4):
        for c in range(5):
            here = cells[f"p{r}{c}"]
            assert here.contains(frame.geometry[r * 5 + c])       # each keeps its own point
            for dr, dc in ((0, 1), (1, 0)):
                if r + dr < 4 and c + dc < 5:
                    shared = here.intersection(cells[f"p{r + dr}{c + dc}"])
                    assert here.touches(cells[f"p{r + dr}{c + dc}"])
                    assert shared.length >= 400.0 - 1e-6   # a whole edge, not a corner
    assert cells["p11"].area == pytest.approx(400.0 ** 2)          # inner cells: the lattice
    # Units stay on the source points; areas do not overlap.
    assert population.units.geometry.equals(frame.geometry)
    assert shapely.union_all(population.cells.geometry.values).area == pytest.approx(
        population.cells.area.sum())
    # Communities see polygons now, so the tessellation pieces are these areas.
    pieces = unit_pieces(population.units, population.cells)
    assert piece_adjacency(pieces).nnz == 2 * (4 * 4 + 3 * 5)


def test_csv_points_become_areas_in_their_crs(tmp_path: Path) -> None:
    lon, lat = np.meshgrid(13.40 + 0.004 * np.arange(3), 52.50 + 0.003 * np.arange(3))
    path = tmp_path / "points.csv"
    pd.DataFrame({"lon": lon.ravel(), "lat": lat.ravel(), "pop": np.arange(9) + 1}).to_csv(
        path, index=False)
    population = Population.from_csv(path)
    assert population.crs.to_epsg() == 4326 and population.total == 45
    assert (population.cells.geom_type == "Polygon").all()
    assert population.cells.geometry[4].touches(population.cells.geometry[1])
    assert population.units.geometry[4].equals(Point(lon.ravel()[4], lat.ravel()[4]))


# --- disaggregation ---------------------------------------------------------------------------

def test_grid_split_conserves_every_cell(raster_pop: Population) -> None:
    split = raster_pop.disaggregate(onto="grid", cell_size_m=25)
    _assert_conserved(split, raster_pop)
    counts = split.units.groupby("cell_id").size()
    assert counts.max() == 16                         # 100 m pixel / 25 m squares
    assert counts["r2c4"] == 2                        # 2 people: only two non-empty squares
    inside = split.units.sjoin(raster_pop.cells, predicate="within")
    assert (inside["cell_id_left"] == inside["cell_id_right"]).all()


def test_grid_split_works_from_a_geographic_crs(sources: dict[str, Path]) -> None:
    hexes = load_population(sources["csv"])
    split = hexes.disaggregate(onto="grid", cell_size_m=50)
    _assert_conserved(split, hexes)
    assert split.crs.to_epsg() == 4326


def test_node_split_conserves_and_keeps_bare_cells_whole(raster_pop: Population) -> None:
    rng = np.random.default_rng(0)
    # 80 nodes over the first four columns only: pixels in column 4 have no node.
    x = ORIGIN[0] + rng.uniform(0, 4 * PIXEL_M, 80)
    y = ORIGIN[1] - rng.uniform(0, 4 * PIXEL_M, 80)
    network = FakeNetwork(x=x, y=y, crs=pyproj.CRS(UTM))
    split = raster_pop.disaggregate(onto="nodes", network=network)
    _assert_conserved(split, raster_pop)
    units = split.units.set_index("cell_id")
    for bare in ("r0c4", "r1c4", "r2c4", "r3c4"):
        assert np.ndim(units.loc[bare, "pop"]) == 0   # exactly one unit
    node_xy = set(zip(np.round(x, 6), np.round(y, 6), strict=True))
    on_nodes = split.units[~split.units["cell_id"].str.endswith("c4")]
    assert all((round(p.x, 6), round(p.y, 6)) in node_xy for p in on_nodes.geometry)


def test_max_unit_pop_bounds_unit_count_and_size(raster_pop: Population) -> None:
    split = raster_pop.disaggregate(onto="grid", cell_size_m=10, max_unit_pop=500)
    _assert_conserved(split, raster_pop)
    counts = split.units.groupby("cell_id").size()
    for cell_id, pop in raster_pop.cells.set_index("cell_id")["pop"].items():
        expected = 1 if pop <= 500 else math.ceil(2 * pop / 500)
        assert counts[cell_id] == expected, cell_id
    assert split.units["pop"].max() <= 500


def test_building_split_weights_area_times_floors() -> None:
    cell = gpd.GeoDataFrame({"pop": [500]}, geometry=[_pixel_box(0, 0)], crs=UTM)
    population = Population.from_frame(cell)
    left, top = ORIGIN[0], ORIGIN[1]
    buildings = gpd.GeoDataFrame(
        {"floors": [2, 1]},
        geometry=[box(left + 10, top - 30, left + 20, top - 10),      # 200 m2 x 2 floors
                  box(left + 50, top - 70, left + 70, top - 40)],     # 600 m2 x 1 floor
        crs=UTM).to_crs("EPSG:4326")                                   # other CRS on purpose
    split = population.disaggregate(onto="buildings", buildings=buildings)
    assert split.units["pop"].tolist() == [200, 300]
    _assert_conserved(split, population)


def test_invalid_polygons_are_repaired_and_points_become_areas() -> None:
    bow_tie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)])   # self-intersecting
    frame = gpd.GeoDataFrame({"pop": [5, 3]}, geometry=[bow_tie, Point(60, 5)], crs=UTM,
                             index=[10, 20])
    population = Population.from_frame(frame)
    assert population.cells.is_valid.all()
    assert population.cells.geometry[0].contains(population.units.geometry[0])
    # The lone point becomes a disc (150 m) minus the polygon cell; its unit stays on the point.
    area = population.cells.geometry[1]
    assert area.geom_type == "Polygon" and area.contains(Point(60, 5))
    assert area.intersection(population.cells.geometry[0]).area < 1e-6
    assert population.units.geometry[1].equals(Point(60, 5))
    split = population.disaggregate(onto="grid", cell_size_m=2)
    _assert_conserved(split, population)
    kept = population.disaggregate(onto="grid", cell_size_m=2, max_unit_pop=4)
    assert kept.units.set_index("cell_id").geometry["1"].distance(Point(60, 5)) < 1e-6


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("loader", [Population.from_file, Population.from_raster,
                                    Population.from_csv])
def test_missing_file(tmp_path: Path, loader) -> None:
    with pytest.raises(DataSourceError, match="nope.*does not exist"):
        loader(tmp_path / "nope.gpkg")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.gpkg").write_bytes(b"")
    with pytest.raises(DataSourceError, match=r"empty\.gpkg.*empty"):
        load_population(tmp_path / "empty.gpkg")


@pytest.mark.parametrize("name", ["corrupt.gpkg", "corrupt.tif", "corrupt.csv"])
def test_corrupt_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(DataSourceError, match=name.replace(".", r"\.")):
        load_population(path)


def test_shapefile_without_prj(tmp_path: Path) -> None:
    _grid_frame().to_file(tmp_path / "grid.shp")
    (tmp_path / "grid.prj").unlink()
    with pytest.raises(CRSError, match=r"grid\.shp.*no CRS"):
        Population.from_file(tmp_path / "grid.shp")


def test_frame_without_crs() -> None:
    with pytest.raises(CRSError, match="no CRS"):
        Population.from_frame(_grid_frame().set_crs(None, allow_override=True))


def test_raster_without_crs(tmp_path: Path) -> None:
    path = _write_raster(tmp_path / "nocrs.tif", PIXELS, crs=None)
    with pytest.raises(CRSError, match="no CRS"):
        Population.from_raster(path)


def test_missing_population_column() -> None:
    with pytest.raises(InputError, match=r"lacks column\(s\) \['people'\].*'pop'"):
        Population.from_frame(_grid_frame(), population_column="people")


@pytest.mark.parametrize(("value", "match"), [(-5, "negative"), (np.nan, "missing"),
                                              ("lots", "non-numeric")])
def test_bad_counts(value, match: str) -> None:
    frame = _grid_frame()
    frame["pop"] = frame["pop"].astype(object)
    frame.loc[3, "pop"] = value
    with pytest.raises(InputError, match=match):
        Population.from_frame(frame)


def test_negative_pixels_that_are_not_nodata(tmp_path: Path) -> None:
    path = _write_raster(tmp_path / "neg.tif", PIXELS, nodata=None)
    with pytest.raises(InputError, match=r"negative pixel.*row 0, col 2"):
        Population.from_raster(path)


def test_raster_without_people(tmp_path: Path) -> None:
    path = _write_raster(tmp_path / "none.tif", np.full((2, 2), NODATA, dtype="int32"))
    with pytest.raises(InputError, match="no pixel with population"):
        Population.from_raster(path)


def test_empty_layer(tmp_path: Path) -> None:
    _grid_frame().iloc[:0].to_file(tmp_path / "empty_layer.gpkg")
    with pytest.raises(InputError, match="no rows"):
        Population.from_file(tmp_path / "empty_layer.gpkg")


def test_several_layers_need_a_name(sources: dict[str, Path]) -> None:
    _grid_frame().to_file(sources["gpkg"], layer="other")
    with pytest.raises(InputError, match=r"2 layers.*layer="):
        Population.from_file(sources["gpkg"])
    assert Population.from_file(sources["gpkg"], layer="other").total == TOTAL
    with pytest.raises(InputError, match="no layer 'roads'"):
        Population.from_file(sources["gpkg"], layer="roads")


def test_invalid_h3_ids() -> None:
    table = _h3_table()
    table.loc[1, "h3"] = "not-a-cell"
    with pytest.raises(InputError, match=r"1 invalid H3 id.*not-a-cell"):
        Population.from_h3(table, h3_column="h3")


def test_repeated_h3_ids() -> None:
    table = _h3_table()
    with pytest.raises(InputError, match="repeated"):
        Population.from_h3(pd.concat([table, table.iloc[:1]]))


def test_csv_without_coordinates_or_h3(tmp_path: Path) -> None:
    path = tmp_path / "names.csv"
    pd.DataFrame({"name": ["a", "b"], "pop": [1, 2]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="neither lon/lat columns nor a column of H3 ids"):
        Population.from_csv(path)


def test_projected_coordinates_need_crs(tmp_path: Path) -> None:
    path = tmp_path / "utm.csv"
    pd.DataFrame({"x": [500_000.0], "y": [5_000_000.0], "pop": [3]}).to_csv(path, index=False)
    with pytest.raises(CRSError, match="outside lon/lat degrees"):
        Population.from_csv(path)
    assert Population.from_csv(path, crs=UTM).total == 3


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"onto": "roads"}, "must be one of"),
    ({"onto": "nodes"}, "needs `network=`"),
    ({"onto": "grid", "cell_size_m": -5}, "cell_size_m"),
    ({"onto": "grid", "cell_size_m": 1e-3}, "larger cell_size_m"),
])
def test_bad_disaggregate_arguments(raster_pop: Population, kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        raster_pop.disaggregate(**kwargs)


# --- real data (../shared/data) -------------------------------------------------------------

SPO_TOTAL, SPO_CELLS = 517_570, 323


@pytest.mark.slow
def test_sao_paulo_sources_agree(shared_data: Path) -> None:
    folder = shared_data / "sao_paulo"
    via_h3 = Population.from_csv(folder / "spo_hexgrid.csv")
    via_lonlat = Population.from_csv(folder / "spo_hexgrid.csv", lon_column="lon",
                                     lat_column="lat")
    zipped = f"/vsizip/{folder}/spo_hexgrid_EPSG32723.gpkg.zip/spo_hexgrid_EPSG32723.gpkg"
    via_gpkg = load_population(zipped)
    via_zip = load_population(folder / "spo_hexgrid_EPSG32723.gpkg.zip")
    for population in (via_h3, via_lonlat, via_gpkg, via_zip):
        assert population.total == SPO_TOTAL
        assert len(population.cells) == SPO_CELLS
        assert len(population.units) == 319          # 4 hexagons hold nobody
    pd.testing.assert_series_equal(_per_cell(via_h3), _per_cell(via_lonlat))
    pd.testing.assert_series_equal(_per_cell(via_h3), _per_cell(via_gpkg))
    # The CSV's lon/lat are the hexagon centres: within metres of our units.
    work = "EPSG:32723"
    gap = via_h3.units.to_crs(work).distance(via_lonlat.units.to_crs(work))
    assert gap.max() < 5
    split = via_gpkg.disaggregate(onto="grid", cell_size_m=50, max_unit_pop=2_000)
    _assert_conserved(split, via_gpkg)


@pytest.mark.slow
def test_helsinki_grid_2020(shared_data: Path) -> None:
    population = load_population(shared_data / "helsinki" / "helsinki_population_grid_2020.gpkg")
    assert population.total == 71_724
    assert len(population.cells) == 92
    assert population.population_column == "population"


@pytest.mark.slow
def test_hsy_2015_shapefile(shared_data: Path) -> None:
    path = shared_data / "helsinki" / "hsy_population_grid_2015" / "Vaestotietoruudukko_2015.shp"
    population = load_population(path)
    # Data trap: the last row (INDEX 27699) is a fake sea cell holding 30,244 residents of
    # unknown location. Loading must not drop anything silently, so the total includes it;
    # dropping it is the caller's documented choice.
    assert population.total == 1_117_552
    assert population.population_column == "ASUKKAITA"
    assert population.cells.set_index("cell_id").loc["27699", "pop"] == 30_244


def test_raster_without_rasterio_names_the_extra(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "people.tif"
    path.write_bytes(b"II*\x00")
    monkeypatch.setitem(sys.modules, "rasterio", None)      # as if the extra were not installed
    with pytest.raises(InputError, match=r"coverage-planner\[raster\]"):
        Population.from_raster(path)
