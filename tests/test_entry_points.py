"""Ecosystem inputs and outputs: entry points take an osmnx/networkx graph and a GeoDataFrame
population as well as WalkNetwork/Population, and results convert to networkx, pandas and
libpysal."""

from __future__ import annotations

import sys

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import pytest
from conftest import grid_graph
from covplan.assess import assess_coverage
from covplan.config import PlanConfig
from covplan.errors import InputError
from covplan.inputs.network import WalkNetwork, as_walk_network, load_network
from covplan.inputs.population import Population, as_population
from covplan.inputs.tessellation import adjacency_graph, piece_adjacency, unit_pieces
from covplan.plan.pipeline import plan_communities
from covplan.reach.isochrones import compute_isochrones
from covplan.reach.matrix import compute_reach
from geopandas.testing import assert_geodataframe_equal
from shapely.geometry import Point, box

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"
N = 8   # nodes per side of the street grid: 7 x 7 cells of 100 m


@pytest.fixture(scope="module")
def graph() -> nx.MultiDiGraph:
    return grid_graph(N, 100.0, crs=CRS, x0=X0, y0=Y0)


@pytest.fixture(scope="module")
def cells() -> gpd.GeoDataFrame:
    """Block cells of 20-179 residents (seeded), with the columns `load_population` detects."""
    rng = np.random.default_rng(3)
    geoms = [box(X0 + 100 * c, Y0 + 100 * r, X0 + 100 * (c + 1), Y0 + 100 * (r + 1))
             for r in range(N - 1) for c in range(N - 1)]
    return gpd.GeoDataFrame({"cell_id": [f"c{i}" for i in range(len(geoms))],
                             "pop": rng.integers(20, 180, len(geoms))}, geometry=geoms, crs=CRS)


@pytest.fixture(scope="module")
def net(graph) -> WalkNetwork:
    return load_network(graph)


@pytest.fixture(scope="module")
def population(cells) -> Population:
    return Population.from_frame(cells, population_column="pop", id_column="cell_id")


@pytest.fixture(scope="module")
def centers() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"center_id": ["A", "B"]}, crs=CRS,
                            geometry=[Point(X0 + 150, Y0 + 200), Point(X0 + 520, Y0 + 500)])


# ---- the two helpers -----------------------------------------------------------------------
def test_helpers_pass_package_types_through_unchanged(net, population):
    assert as_walk_network(net) is net
    assert as_population(population) is population
    assert as_population(population, population_column="other") is population


def test_helpers_convert_like_the_loaders(graph, cells, net, population):
    converted = as_walk_network(graph)
    assert converted.crs == net.crs
    np.testing.assert_array_equal(converted.node_id, net.node_id)
    np.testing.assert_array_equal(converted.indices, net.indices)
    np.testing.assert_array_equal(converted.length_m, net.length_m)
    people = as_population(cells)
    assert people.crs == cells.crs and people.population_column == "pop"
    assert_geodataframe_equal(people.units, population.units)
    assert_geodataframe_equal(people.cells, population.cells)


def test_helpers_refuse_other_types(tmp_path):
    with pytest.raises(TypeError, match="load_network"):
        as_walk_network(str(tmp_path / "town.osm.pbf"))
    with pytest.raises(TypeError, match="load_population"):
        as_population(pd.DataFrame({"pop": [1]}))


def test_ambiguous_population_column_is_refused_not_guessed(graph, cells, centers):
    two = cells.rename(columns={"pop": "pop2020"}).assign(pop2021=cells["pop"] + 1)
    with pytest.raises(InputError, match="pop2020") as info:
        compute_reach(graph, two, centers=centers)
    assert "pop2021" in str(info.value)
    reach = compute_reach(graph, two, centers=centers, population_column="pop2021")
    assert reach.pop.sum() == (cells["pop"] + 1).sum()


# ---- the four entry points: graph + GeoDataFrame == WalkNetwork + Population ---------------
def test_compute_reach_accepts_graph_and_geodataframe(graph, cells, net, population, centers):
    ours = compute_reach(net, population, centers=centers, max_minutes=8.0)
    theirs = compute_reach(graph, cells, centers=centers, max_minutes=8.0)
    assert (ours.minutes != theirs.minutes).nnz == 0
    np.testing.assert_array_equal(ours.minutes.data, theirs.minutes.data)
    assert_geodataframe_equal(ours.units, theirs.units)
    assert_geodataframe_equal(ours.candidates, theirs.candidates)
    assert theirs.input_crs == cells.crs and theirs.work_crs == net.crs


def test_compute_isochrones_accepts_graph(graph, net, centers):
    ours = compute_isochrones(net, centers, minutes=[3, 6], buffer_m=20)
    theirs = compute_isochrones(graph, centers, minutes=[3, 6], buffer_m=20)
    assert theirs.crs == centers.crs
    assert_geodataframe_equal(ours, theirs)


def test_assess_coverage_accepts_graph_and_geodataframe(graph, cells, net, population, centers):
    ours = assess_coverage(net, population, centers, max_minutes=5.0)
    theirs = assess_coverage(graph, cells, centers, max_minutes=5.0)
    assert theirs.units.crs == cells.crs
    assert_geodataframe_equal(ours.units, theirs.units)
    assert_geodataframe_equal(ours.centers, theirs.centers)
    assert ours.summary() == theirs.summary()


def test_plan_communities_accepts_graph_and_geodataframe(graph, cells, net, population):
    config = PlanConfig(target_pop=1_500, tolerance=0.3, max_minutes=8.0,
                        candidate_spacing_m=150.0, max_unit_pop=None, restarts=1)
    ours = plan_communities(net, population, config=config)
    theirs = plan_communities(graph, cells, config=config)
    assert theirs.communities.crs == cells.crs
    for name in ("communities", "centers", "units", "isochrones"):
        assert_geodataframe_equal(getattr(ours, name), getattr(theirs, name))
    drop = {"runtime_s"}
    assert ({k: v for k, v in ours.report.items() if k not in drop}
            == {k: v for k, v in theirs.report.items() if k not in drop})


# ---- conversions out -----------------------------------------------------------------------
def test_to_networkx_round_trips_through_load_network(net):
    G = net.to_networkx()
    assert isinstance(G, nx.MultiDiGraph)
    assert G.graph["crs"] == net.crs
    assert G.number_of_nodes() == net.n_nodes
    assert G.number_of_edges() == len(net.indices)          # one edge per walkable direction
    node = int(net.node_id[3])
    assert (G.nodes[node]["x"], G.nodes[node]["y"]) == (net.x[3], net.y[3])
    _, _, data = next(iter(G.edges(data=True)))
    assert data["length"] == pytest.approx(100.0)
    assert data["minutes"] == pytest.approx(100.0 / net.speed_m_per_min)
    back = load_network(G, crs=net.crs)
    assert back.n_nodes == net.n_nodes and back.n_edges == net.n_edges
    assert back.length_m.sum() == pytest.approx(net.length_m.sum(), abs=1e-6)
    np.testing.assert_array_equal(back.node_id, net.node_id)
    np.testing.assert_allclose(back.x, net.x)
    again = load_network(G)                                 # the CRS is chosen again: the same
    assert again.crs == net.crs and again.n_edges == net.n_edges


def test_to_networkx_keeps_lengths_and_geometry_direction():
    G = grid_graph(3, 100.0, crs=CRS, x0=X0, y0=Y0)
    G[0][1][0]["length"] = 130.0   # a street longer than the straight line, both ways
    G[1][0][0]["length"] = 130.0
    net = load_network(G).with_edges(drop=np.array([1]))   # and one street closed
    out = net.to_networkx()
    assert out.number_of_edges() == 2 * net.n_edges
    assert nx.shortest_path_length(out, 0, 2, weight="length") == pytest.approx(230.0)
    for u, v, data in out.edges(data=True):
        first, last = data["geometry"].coords[0], data["geometry"].coords[-1]
        assert first == (out.nodes[u]["x"], out.nodes[u]["y"])
        assert last == (out.nodes[v]["x"], out.nodes[v]["y"])
    back = load_network(out, crs=net.crs)
    assert back.n_edges == net.n_edges
    assert back.length_m.sum() == pytest.approx(net.length_m.sum(), abs=1e-6)


def test_reach_to_frame_has_one_row_per_stored_pair(net, population, centers):
    on_center = gpd.GeoDataFrame({"center_id": ["Z"]}, crs=CRS,
                                 geometry=[Point(X0 + 100, Y0 + 100)])   # on a street node
    people = gpd.GeoDataFrame({"cell_id": ["a", "b"], "pop": [5, 7]}, crs=CRS,
                              geometry=[Point(X0 + 100, Y0 + 100), Point(X0 + 300, Y0 + 100)])
    reach = compute_reach(net, people, centers=pd.concat([centers, on_center]), max_minutes=6.0)
    frame = reach.to_frame()
    assert list(frame.columns) == ["unit_id", "candidate_id", "minutes"]
    assert len(frame) == reach.minutes.nnz
    assert (frame["minutes"] == 0).any()                    # explicit zeros are rows too
    dense = reach.minutes.toarray()
    rows = reach.units.set_index("unit_id").index.get_indexer(frame["unit_id"])
    cols = reach.candidates.set_index("candidate_id").index.get_indexer(frame["candidate_id"])
    np.testing.assert_array_equal(dense[rows, cols], frame["minutes"].to_numpy())
    assert frame["minutes"].max() <= reach.max_minutes
    assert not frame.duplicated(["unit_id", "candidate_id"]).any()


def test_adjacency_graph_neighbours_match_the_sparse_adjacency(net, population):
    pytest.importorskip("libpysal")
    reach = compute_reach(net, population, max_minutes=5.0)
    units = reach.units
    adjacency = piece_adjacency(unit_pieces(units, population.cells.to_crs(net.crs)))
    ids = units["unit_id"].to_numpy()
    g = adjacency_graph(adjacency, ids)
    assert g.n == len(units)
    for i, unit in enumerate(ids):
        expected = set(ids[adjacency[[i]].indices])
        assert set(g.neighbors[unit]) == expected
    assert set(adjacency_graph(adjacency).neighbors[0]) == set(adjacency[[0]].indices)


def test_adjacency_graph_checks_its_inputs():
    pytest.importorskip("libpysal")
    import scipy.sparse as sp

    with pytest.raises(InputError, match="square"):
        adjacency_graph(sp.csr_matrix((2, 3)))
    with pytest.raises(InputError, match="unique"):
        adjacency_graph(sp.eye(2, format="csr"), ["a", "a"])


def test_adjacency_graph_without_libpysal_names_the_extra(monkeypatch):
    import scipy.sparse as sp

    monkeypatch.setitem(sys.modules, "libpysal.graph", None)   # import raises ImportError
    with pytest.raises(InputError, match=r"coverage-planner\[peers\]"):
        adjacency_graph(sp.eye(2, format="csr"))
