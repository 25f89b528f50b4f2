"""The embedded demo city: deterministic, exact totals, and layers that fit together."""

from __future__ import annotations

import dataclasses
import functools

import geopandas as gpd
import networkx as nx
import numpy as np
import pytest
import shapely
from covplan.cities.demo import DemoCity, build_demo_city, demo_summary
from covplan.errors import InputError
from geopandas.testing import assert_geodataframe_equal
from pyproj import Transformer

WORK_CRS = "EPSG:32647"
TOTAL = 300_000
CROSSINGS = 4                       # a level crossing, a footbridge and two underpasses


@functools.cache
def _built(seed: int) -> DemoCity:
    return build_demo_city(seed=seed)


@pytest.fixture(scope="module", params=[0, 1], ids=lambda seed: f"seed{seed}")
def city(request: pytest.FixtureRequest) -> DemoCity:
    return _built(request.param)


@pytest.fixture(scope="module")
def city0() -> DemoCity:
    return _built(0)


def _in_work_crs(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return frame.to_crs(WORK_CRS)


def _cell_community(city: DemoCity) -> gpd.GeoDataFrame:
    """One row per (cell, community containing its centroid), centroids taken in metres."""
    cells = _in_work_crs(city.population)
    points = gpd.GeoDataFrame(cells[["cell_id", "population"]], geometry=cells.centroid,
                              crs=WORK_CRS)
    return points.sjoin(_in_work_crs(city.communities), predicate="within")


def _street_segments(G: nx.MultiDiGraph) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Undirected street segments (u < v) and their lines, in the work CRS."""
    to_work = Transformer.from_crs(G.graph["crs"], WORK_CRS, always_xy=True)
    xy = {n: to_work.transform(d["x"], d["y"]) for n, d in G.nodes(data=True)}
    pairs = sorted({(u, v) for u, v in G.edges() if u < v})
    return pairs, shapely.linestrings([[xy[u], xy[v]] for u, v in pairs])


# --- determinism ---------------------------------------------------------------------------------

def test_same_seed_gives_identical_city(city0: DemoCity) -> None:
    again = build_demo_city(seed=0)
    for field in ("population", "communities", "centers", "districts", "railway"):
        left, right = getattr(again, field), getattr(city0, field)
        assert_geodataframe_equal(left, right)
        assert left.geometry.to_wkb().equals(right.geometry.to_wkb())     # to the last bit
    assert list(again.graph.nodes(data=True)) == list(city0.graph.nodes(data=True))
    assert (list(again.graph.edges(keys=True, data=True))
            == list(city0.graph.edges(keys=True, data=True)))
    assert again.graph.graph == city0.graph.graph


def test_other_seed_moves_cells_and_borders_but_not_the_total(city0: DemoCity) -> None:
    other = _built(1)
    assert not city0.communities.geometry.geom_equals(other.communities.geometry).all()
    assert int(other.population["population"].sum()) == TOTAL
    assert len(other.communities) == len(city0.communities)


def test_seed_must_be_a_non_negative_int() -> None:
    with pytest.raises(TypeError, match="seed"):
        build_demo_city(seed=1.5)
    with pytest.raises(TypeError, match="seed"):
        build_demo_city(seed=True)
    with pytest.raises(InputError, match="seed"):
        build_demo_city(seed=-1)


def test_city_is_frozen(city0: DemoCity) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        city0.seed = 3


# --- CRS and placement ---------------------------------------------------------------------------

def test_crs_values_and_location(city: DemoCity) -> None:
    assert city.work_crs == WORK_CRS
    assert city.graph.graph["crs"] == "EPSG:4326"
    for frame in (city.population, city.communities, city.centers, city.districts, city.railway):
        assert frame.crs.to_epsg() == 4326
    lon, lat = city.districts.union_all().centroid.coords[0]
    assert abs(lon - 98.29) < 0.02 and abs(lat - 39.80) < 0.02
    area_km2 = _in_work_crs(city.districts).area.sum() / 1e6
    assert area_km2 == pytest.approx(30.0, rel=1e-3)          # 6 km x 5 km


# --- population ----------------------------------------------------------------------------------

def test_population_total_is_exact_and_cells_are_populated(city: DemoCity) -> None:
    cells = city.population
    assert list(cells.columns) == ["cell_id", "population", "geometry"]
    assert cells["population"].dtype.kind == "i"
    assert int(cells["population"].sum()) == TOTAL
    assert (cells["population"] > 0).all()
    assert cells["cell_id"].is_unique
    assert cells["cell_id"].map(type).eq(str).all()
    area_m2 = _in_work_crs(cells).area
    assert area_m2.between(9_990, 10_010).all()               # 100 m squares
    assert 600 <= cells["population"].max() <= 900             # 60-90k/km2 in the core
    assert cells["population"].min() < 30                      # tens per cell at the edge


# --- communities ---------------------------------------------------------------------------------

def test_69_communities_of_uneven_size_within_range(city: DemoCity) -> None:
    communities = city.communities
    assert list(communities.columns) == ["community_id", "name", "district_id", "geometry"]
    assert communities["community_id"].tolist() == [f"C{k:02d}" for k in range(1, 70)]
    sizes = _cell_community(city).groupby("community_id")["population"].sum()
    assert len(sizes) == 69
    assert sizes.min() >= 1_500 and sizes.max() <= 25_000
    assert sizes.max() > 15_000 and sizes.median() < 4_000      # very uneven, as before the merger
    assert int(sizes.sum()) == TOTAL


def test_every_cell_centroid_is_in_exactly_one_community(city: DemoCity) -> None:
    joined = _cell_community(city)
    assert joined["cell_id"].is_unique
    assert set(joined["cell_id"]) == set(city.population["cell_id"])


def test_communities_are_single_polygons_inside_their_district(city: DemoCity) -> None:
    communities = _in_work_crs(city.communities)
    districts = _in_work_crs(city.districts).set_index("district_id").geometry
    for row in communities.itertuples():
        assert row.geometry.geom_type == "Polygon" and row.geometry.is_valid
        assert len(row.geometry.interiors) == 0
        assert row.geometry.difference(districts[row.district_id]).area < 1.0   # m2


def test_communities_do_not_overlap_and_tile_the_districts(city: DemoCity) -> None:
    communities = _in_work_crs(city.communities)
    pairs = communities.sjoin(communities, predicate="intersects")
    pairs = pairs[pairs.index < pairs["index_right"]]
    overlap_m2 = [communities.geometry[a].intersection(communities.geometry[b]).area
                  for a, b in zip(pairs.index, pairs["index_right"])]
    assert max(overlap_m2) < 1.0
    district_area = _in_work_crs(city.districts).area.sum()
    assert communities.area.sum() == pytest.approx(district_area, rel=1e-6)


# --- centers -------------------------------------------------------------------------------------

def test_one_center_per_community_inside_it_on_a_street_node(city: DemoCity) -> None:
    centers = city.centers
    assert list(centers.columns) == ["center_id", "community_id", "name", "geometry"]
    assert centers["center_id"].tolist() == [f"S{k:02d}" for k in range(1, 70)]
    assert centers["community_id"].tolist() == city.communities["community_id"].tolist()
    polygons = city.communities.geometry.to_numpy()             # same order as the centers
    assert shapely.contains(polygons, centers.geometry.to_numpy()).all()
    assert shapely.contains(_in_work_crs(city.communities).geometry.to_numpy(),
                            _in_work_crs(centers).geometry.to_numpy()).all()
    nodes = {(d["x"], d["y"]) for _, d in city.graph.nodes(data=True)}
    assert all((p.x, p.y) in nodes for p in centers.geometry)


# --- districts and railway -----------------------------------------------------------------------

def test_three_districts_split_by_the_railway(city: DemoCity) -> None:
    districts = _in_work_crs(city.districts)
    assert districts["district_id"].tolist() == ["D1", "D2", "D3"]
    assert districts["name"].tolist() == ["Xiongguan", "Jingtie", "Changcheng"]
    rail = _in_work_crs(city.railway).union_all()
    south = districts.set_index("district_id").geometry["D3"]
    assert south.boundary.intersection(rail.buffer(1.0)).length > 5_000    # the tracks bound it


def test_railway_is_crossed_only_at_the_designed_crossings(city: DemoCity) -> None:
    pairs, segments = _street_segments(city.graph)
    rail = _in_work_crs(city.railway).union_all()
    across = [pair for pair, hit in zip(pairs, shapely.intersects(segments, rail)) if hit]
    assert len(across) == CROSSINGS
    data = [city.graph.edges[u, v, 0] for u, v in across]
    assert sorted(d["highway"] for d in data) == ["footway", "primary", "primary", "primary"]
    assert sum(d.get("tunnel") == "yes" for d in data) == 2
    assert sum(d.get("bridge") == "yes" for d in data) == 1


# --- graph ---------------------------------------------------------------------------------------

def test_graph_is_an_osmnx_style_connected_walk_network(city: DemoCity) -> None:
    G = city.graph
    assert isinstance(G, nx.MultiDiGraph)
    assert 3_000 <= G.number_of_nodes() <= 8_000
    assert nx.is_strongly_connected(G)
    assert all(G.has_edge(v, u) for u, v in G.edges())
    assert {d["highway"] for *_, d in G.edges(data=True)} == {"primary", "residential", "footway"}
    assert all(isinstance(d["name"], str) and d["name"] for *_, d in G.edges(data=True))
    pairs, segments = _street_segments(G)
    length_m = np.array([G.edges[u, v, 0]["length"] for u, v in pairs])
    assert np.allclose(length_m, shapely.length(segments), rtol=2e-3)
    assert 30 <= length_m.min() and length_m.max() <= 100     # a node every 50-100 m


def test_graph_loads_with_osmnx(city0: DemoCity) -> None:
    ox = pytest.importorskip("osmnx")
    nodes, edges = ox.graph_to_gdfs(city0.graph)
    assert len(nodes) == city0.graph.number_of_nodes()
    assert {"length", "highway", "name", "geometry"} <= set(edges.columns)
    projected = ox.project_graph(city0.graph, to_crs=city0.work_crs)
    assert projected.graph["crs"] is not None


# --- summary -------------------------------------------------------------------------------------

def test_summary_reports_the_totals(city0: DemoCity) -> None:
    summary = demo_summary(city0)
    assert summary["population"] == TOTAL
    assert summary["communities"] == summary["centers"] == 69
    assert summary["districts"] == 3
    assert summary["railway_crossings"] == CROSSINGS
    assert summary["cells"] == len(city0.population)
    assert summary["nodes"] == city0.graph.number_of_nodes()
    assert summary["edges"] == city0.graph.number_of_edges()
    assert (1_500 <= summary["community_pop_min"] <= summary["community_pop_median"]
            <= summary["community_pop_max"] <= 25_000)
