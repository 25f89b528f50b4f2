"""The synthetic cities of the planner suite: deterministic, exact totals, and each kind's trap."""

from __future__ import annotations

import functools

import geopandas as gpd
import networkx as nx
import numpy as np
import pytest
import shapely
from covplan.cities.synthetic import STRESS_KINDS, SYNTHETIC_KINDS, SyntheticCity, build_synthetic_city
from covplan.errors import InputError
from covplan.inputs.network import load_network
from covplan.inputs.population import load_population
from covplan.inputs.snap import snap_points
from geopandas.testing import assert_geodataframe_equal

TOTALS = {"core_fringe": 300_000, "river": 250_000, "linear": 240_000, "islands": 220_000}


@functools.cache
def _built(kind: str, seed: int = 0) -> SyntheticCity:
    return build_synthetic_city(kind, seed=seed)


@pytest.fixture(scope="module", params=SYNTHETIC_KINDS)
def city(request: pytest.FixtureRequest) -> SyntheticCity:
    return _built(request.param)


def _work(frame: gpd.GeoDataFrame, city: SyntheticCity) -> gpd.GeoDataFrame:
    return frame.to_crs(city.work_crs)


def _segments(city: SyntheticCity) -> tuple[list[tuple], np.ndarray]:
    """Undirected edges (u, v, data) and their lines in the work CRS."""
    nodes = gpd.GeoSeries(gpd.points_from_xy(*zip(*((d["x"], d["y"]) for _, d in
                                                    city.graph.nodes(data=True)))),
                          index=list(city.graph.nodes), crs="EPSG:4326").to_crs(city.work_crs)
    edges = [(u, v, d) for u, v, d in city.graph.edges(data=True) if u < v]
    xy = {n: (p.x, p.y) for n, p in nodes.items()}
    return edges, shapely.linestrings([[xy[u], xy[v]] for u, v, _ in edges])


def test_kinds_are_listed() -> None:
    assert set(SYNTHETIC_KINDS) == set(TOTALS)


def test_same_seed_same_city_other_seed_same_total(city: SyntheticCity) -> None:
    again = build_synthetic_city(city.name, seed=0)
    for field in ("population", "communities", "centers", "features"):
        assert_geodataframe_equal(getattr(again, field), getattr(city, field))
    if city.districts is not None:
        assert_geodataframe_equal(again.districts, city.districts)
    assert list(again.graph.nodes(data=True)) == list(city.graph.nodes(data=True))
    assert (list(again.graph.edges(keys=True, data=True))
            == list(city.graph.edges(keys=True, data=True)))
    other = _built(city.name, 1)
    assert int(other.population["population"].sum()) == TOTALS[city.name]
    assert not other.population["population"].equals(city.population["population"])


def test_totals_are_exact_integers(city: SyntheticCity) -> None:
    pop = city.population["population"]
    assert pop.dtype.kind == "i" and (pop > 0).all()
    assert int(pop.sum()) == TOTALS[city.name]
    assert 150_000 <= TOTALS[city.name] <= 500_000
    assert city.population["cell_id"].is_unique
    assert city.population.crs == "EPSG:4326" and city.graph.graph["crs"] == "EPSG:4326"


def test_loaders_take_it_in_the_right_utm_zone(city: SyntheticCity) -> None:
    network = load_network(city.graph)
    assert network.crs == city.work_crs
    population = load_population(city.population, population_column="population",
                                 id_column="cell_id")
    assert population.total == TOTALS[city.name]
    units = population.units.to_crs(network.crs)
    snap = snap_points(network, units.geometry.x.to_numpy(), units.geometry.y.to_numpy())
    assert not snap.off_network.any()                   # everyone lives near a street


def test_streets_both_ways_with_lengths(city: SyntheticCity) -> None:
    G = city.graph
    for u, v, data in list(G.edges(data=True))[:500]:
        assert G.has_edge(v, u) and data["length"] > 0 and data["highway"]
    lengths = np.array([d["length"] for _, _, d in G.edges(data=True)])
    assert 50 < np.median(lengths) < 80                 # a node every 62.5 m, streets 125 m apart


def test_existing_communities_are_contiguous_uneven_cover_every_cell(city: SyntheticCity) -> None:
    communities = _work(city.communities, city)
    assert (communities.geom_type == "Polygon").all() and communities.is_valid.all()
    cells = _work(city.population, city)
    points = gpd.GeoDataFrame(cells[["population"]], geometry=cells.centroid, crs=city.work_crs)
    joined = points.sjoin(communities[["community_id", "geometry"]], predicate="within")
    assert joined.index.is_unique and len(joined) == len(cells)     # one community per cell
    sizes = joined.groupby("community_id")["population"].sum()
    assert sizes.reindex(communities["community_id"]).tolist() == communities["population"].tolist()
    assert 1_000 <= sizes.min() < 3_000 and 15_000 < sizes.max() <= 25_000


def test_each_center_stands_on_a_street_node_in_its_community(city: SyntheticCity) -> None:
    nodes = {(round(d["x"], 9), round(d["y"], 9)) for _, d in city.graph.nodes(data=True)}
    assert all((round(p.x, 9), round(p.y, 9)) in nodes for p in city.centers.geometry)
    joined = _work(city.centers, city).sjoin(
        _work(city.communities, city)[["community_id", "geometry"]], predicate="within")
    assert (joined["community_id_left"] == joined["community_id_right"]).all()
    assert len(joined) == len(city.communities)


def test_core_is_very_dense_and_fringe_villages_are_small_and_apart() -> None:
    city = _built("core_fringe")
    assert city.population["population"].max() > 800
    assert (city.population["population"] >= 400).sum() > 50          # 40,000+/km2 cells
    villages = _work(city.features[city.features["kind"] == "village"], city)
    cells = _work(city.population, city)
    residents = [int(cells.loc[cells.centroid.within(v), "population"].sum())
                 for v in villages.geometry]
    assert len(villages) >= 12 and min(residents) < 1_000 and max(residents) <= 4_000
    gaps = villages.geometry.distance(villages.geometry.iloc[0]).iloc[1:]
    assert gaps.min() > 1_000                                          # far apart


def test_river_is_crossed_at_the_bridges_only() -> None:
    city = _built("river")
    river = _work(city.features[city.features["kind"] == "river"], city).union_all()
    edges, lines = _segments(city)
    crossing = shapely.intersects(lines, river)
    bridge = np.array([d.get("bridge") == "yes" for _, _, d in edges])
    assert (crossing == bridge).all()
    assert len({d["name"] for (_, _, d), b in zip(edges, bridge) if b}) == 3
    # Without the bridges the two banks fall apart, each with many residents.
    G = nx.Graph([(u, v) for (u, v, _), b in zip(edges, bridge) if not b])
    banks = sorted(nx.connected_components(G), key=len, reverse=True)
    assert len(banks) >= 2 and len(banks[1]) > 1_000


def test_linear_city_is_long_thin_in_three_districts() -> None:
    city = _built("linear")
    x0, y0, x1, y1 = _work(city.population, city).total_bounds
    assert x1 - x0 > 20_000 and y1 - y0 <= 1_300
    assert list(city.districts["district_id"]) == ["D1", "D2", "D3"]
    communities = _work(city.communities, city)
    inner = communities.set_geometry(communities.buffer(-1.0))     # borders shared with districts
    joined = inner.sjoin(_work(city.districts, city), predicate="within")
    assert (joined["district_id_left"] == joined["district_id_right"]).all()
    assert len(joined) == len(city.communities)


def test_islands_hold_residents_apart_from_the_main_network() -> None:
    city = _built("islands")
    network = load_network(city.graph)
    units = load_population(city.population, population_column="population",
                            id_column="cell_id").units.to_crs(network.crs)
    snap = snap_points(network, units.geometry.x.to_numpy(), units.geometry.y.to_numpy())
    component = network.component[snap.node]
    residents = np.bincount(component, weights=units["pop"].to_numpy())
    apart = residents[1:]
    assert (apart > 200).sum() >= 2 and apart.max() <= 3_500          # a few hundred to ~3,000
    assert snap.on_island.any()                                        # the lake islands
    # A steep step: tower-block cells beside near-empty airfield cells.
    cells = _work(city.population, city)
    feature = _work(city.features, city).set_index("kind").geometry
    towers = cells.loc[cells.centroid.within(feature["high-rise"]), "population"]
    airfield = cells.loc[cells.centroid.within(feature["airfield"]), "population"]
    assert towers.min() > 400 and airfield.max() < 20


def test_bad_kind_and_seed() -> None:
    with pytest.raises(InputError, match="unknown synthetic city"):
        build_synthetic_city("atlantis")
    with pytest.raises(InputError):
        build_synthetic_city("river", seed=-1)
    with pytest.raises(TypeError):
        build_synthetic_city("river", seed=True)


STRESS_TOTALS = {"valleys": 200_000, "towns": 231_500, "motorway": 260_000, "sprawl": 240_000,
                 "harbour": 230_000}


@pytest.mark.parametrize("kind", STRESS_KINDS)
def test_the_shapes_beyond_the_suite_are_exact_and_reproducible(kind: str) -> None:
    """Each kind beyond the suite flows through the loaders with its exact total, the same for
    the same seed, and its trap: the motorway and the harbour's inlet are crossed only where
    their bridges are, the sprawl's density never rises to a core."""
    city = _built(kind)
    assert set(STRESS_KINDS) == set(STRESS_TOTALS) and not set(STRESS_KINDS) & set(SYNTHETIC_KINDS)
    assert city.residents == STRESS_TOTALS[kind]
    again = build_synthetic_city(kind, seed=0)
    assert_geodataframe_equal(again.population, city.population)
    assert int(_built(kind, 1).population["population"].sum()) == STRESS_TOTALS[kind]
    network = load_network(city.graph)
    population = load_population(city.population, population_column="population", id_column="cell_id")
    assert int(population.cells["pop"].sum()) == city.residents and network.n_nodes > 1_000
    bridges = {d.get("name") for _, _, d in city.graph.edges(data=True) if d.get("bridge") == "yes"}
    expected = {"motorway": {f"Crossing {c}" for c in (-40, -8, 24, 56)},
                "harbour": {"Harbour Bridge"}}.get(kind, set())
    assert bridges == expected
    if kind == "sprawl":
        density = city.population.to_crs(city.work_crs).pipe(
            lambda cells: cells["population"] / (cells.area / 1e6))
        assert density.max() < 12_000 and density.median() > 2_000
