"""Walk times: checked by hand on a 5 x 5 grid and against networkx Dijkstra on a random graph."""

from __future__ import annotations

import warnings

import geopandas as gpd
import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import grid_graph
from covplan.errors import CoverageWarning, InputError
from covplan.inputs.network import WalkNetwork
from covplan.inputs.population import Population
from covplan.reach.engine import bounded_distances
from covplan.reach.matrix import compute_reach, node_times
from shapely.geometry import Point

X0, Y0 = 500_000.0, 4_000_000.0
SPEED = 75.0  # metres per minute at 4.5 km/h
CRS = "EPSG:32633"


def _population(points, pops):
    frame = gpd.GeoDataFrame({"cell_id": [f"p{i}" for i in range(len(pops))], "pop": pops},
                             geometry=[Point(x, y) for x, y in points], crs=CRS)
    return Population.from_frame(frame, population_column="pop", id_column="cell_id")


def _centers(points, ids=None):
    ids = ids or [f"S{i}" for i in range(len(points))]
    return gpd.GeoDataFrame({"center_id": ids}, geometry=[Point(x, y) for x, y in points], crs=CRS)


def test_times_by_hand_on_grid_include_both_access_legs(grid5):
    net = WalkNetwork.from_graph(grid5)
    # Unit 30 m north of node (0, 0); center 20 m east of node (2, 2), exactly on the street.
    pop = _population([(X0, Y0 + 30), (X0 + 400, Y0 + 400)], [100, 50])
    centers = _centers([(X0 + 220, Y0 + 200)])
    reach = compute_reach(net, pop, centers=centers, node_candidates=False, max_minutes=15)
    expected_0 = (30 * 1.3 + 400 + 20 * 1.3) / SPEED
    expected_1 = (0 + 400 + 20 * 1.3) / SPEED
    dense = reach.minutes.toarray()
    assert dense[0, 0] == pytest.approx(expected_0, rel=1e-9)
    assert dense[1, 0] == pytest.approx(expected_1, rel=1e-9)


def test_limit_cuts_pairs_and_keeps_explicit_zero(grid5):
    net = WalkNetwork.from_graph(grid5)
    pop = _population([(X0, Y0), (X0 + 400, Y0 + 400)], [10, 20])
    centers = _centers([(X0, Y0)])
    reach = compute_reach(net, pop, centers=centers, node_candidates=False, max_minutes=8)
    # Unit 0 stands on the center's node: 0 minutes, stored explicitly. Unit 1 is 800 m away.
    assert reach.minutes.nnz == 1
    assert reach.minutes[0, 0] == 0.0 and reach.minutes.indptr[1] == 1
    assert reach.unreachable_population == 20
    idx, minutes = reach.nearest()
    assert list(idx) == [0, -1] and minutes[1] == np.inf


def _random_graph(seed: int, n: int = 12):
    rng = np.random.default_rng(seed)
    G = grid_graph(n, 80.0)
    for u, v in list(G.edges(keys=False)):
        if u < v and rng.random() < 0.15 and G.degree(u) > 4 and G.degree(v) > 4:
            G.remove_edge(u, v)
            G.remove_edge(v, u)
    for u, v, data in G.edges(data=True):
        data["length"] = 80.0 * (1 + abs(u - v) % 7 / 10)  # symmetric, longer than straight
    return G


@pytest.mark.parametrize("seed", [0, 1])
def test_node_times_match_networkx_dijkstra(seed):
    G = _random_graph(seed)
    net = WalkNetwork.from_graph(G)
    limit_min = 9.0
    sources = np.arange(0, net.n_nodes, 7)
    reach = node_times(net, sources, max_minutes=limit_min, direction="from_center")
    simple = nx.Graph()
    for u, v, data in G.edges(data=True):
        simple.add_edge(u, v, weight=data["length"])
    index = {int(i): k for k, i in enumerate(net.node_id)}
    for row, s in enumerate(sources):
        expected = nx.single_source_dijkstra_path_length(
            simple, int(net.node_id[s]), cutoff=limit_min * SPEED, weight="weight")
        got_nodes = reach.node[reach.indptr[row]:reach.indptr[row + 1]]
        got = dict(zip(got_nodes.tolist(), reach.dist_m[reach.indptr[row]:reach.indptr[row + 1]]))
        assert set(got) == {index[k] for k in expected}
        for k, d in expected.items():
            assert got[index[k]] == pytest.approx(d, abs=1e-6)


def test_sparse_output_memory_follows_reached_pairs():
    G = grid_graph(30, 100.0)
    net = WalkNetwork.from_graph(G)
    sources = np.arange(net.n_nodes)
    reach = node_times(net, sources, max_minutes=4.0)  # 300 m on a 100 m grid
    # On a grid, nodes within 300 m of network distance form a diamond: |dr| + |dc| <= 3.
    rows, cols = np.divmod(np.arange(net.n_nodes), 30)
    expected = sum(int(((abs(rows - r) + abs(cols - c)) <= 3).sum()) for r, c in zip(rows, cols))
    assert reach.n_pairs == expected
    held = reach.node.nbytes + reach.dist_m.nbytes + reach.indptr.nbytes
    assert held <= 16 * reach.n_pairs + 8 * (net.n_nodes + 1)
    assert held < 0.1 * net.n_nodes ** 2 * 8  # far below a dense sources x nodes array


def test_directed_graph_respects_direction():
    # 0 -> 1 -> 2 one way, and 2 -> 0 back: a ring walked one way only.
    x = np.array([0.0, 100.0, 200.0])
    y = np.zeros(3)
    graph = sp.csr_matrix(([100.0, 100.0, 200.0], ([0, 1, 2], [1, 2, 0])), shape=(3, 3))
    out = bounded_distances(graph, x, y, np.array([0]), limit_m=1000)
    assert dict(zip(out.node, out.dist_m)) == {0: 0.0, 1: 100.0, 2: 200.0}
    back = bounded_distances(graph.T.tocsr(), x, y, np.array([0]), limit_m=1000)
    assert dict(zip(back.node, back.dist_m)) == {0: 0.0, 1: 300.0, 2: 200.0}
    dead_end = sp.csr_matrix(([100.0], ([0], [1])), shape=(3, 3))
    stuck = bounded_distances(dead_end, x, y, np.array([1]), limit_m=1000)
    assert list(stuck.node) == [1]


def test_repeated_sources_get_their_own_rows(grid5):
    net = WalkNetwork.from_graph(grid5)
    out = node_times(net, np.array([12, 0, 12]), max_minutes=2.0)
    assert len(out.sources) == 3
    first = out.node[out.indptr[0]:out.indptr[1]]
    third = out.node[out.indptr[2]:out.indptr[3]]
    assert list(first) == list(third) == [7, 11, 12, 13, 17]


@pytest.mark.parametrize("minutes", [0, -5, 24 * 60 + 1, float("nan")])
def test_bad_time_limit_is_refused(grid5, minutes):
    net = WalkNetwork.from_graph(grid5)
    pop = _population([(X0, Y0)], [1])
    with pytest.raises(InputError, match="max_minutes"):
        compute_reach(net, pop, centers=_centers([(X0, Y0)]), max_minutes=minutes)


def test_off_network_unit_is_reported_not_dropped(grid5):
    net = WalkNetwork.from_graph(grid5)
    pop = _population([(X0, Y0), (X0 - 5000, Y0)], [10, 7])
    reach = compute_reach(net, pop, centers=_centers([(X0, Y0)]), node_candidates=False)
    assert reach.units["pop"].sum() == 17
    assert list(reach.units["off_network"]) == [False, True]
    assert reach.unreachable_population == 7


def test_center_off_network_warns_and_reaches_nobody(grid5):
    net = WalkNetwork.from_graph(grid5)
    pop = _population([(X0, Y0)], [10])
    centers = _centers([(X0, Y0), (X0 + 9000, Y0)], ids=["near", "far"])
    with pytest.warns(CoverageWarning, match="far"):
        reach = compute_reach(net, pop, centers=centers, node_candidates=False)
    assert reach.population_within().tolist() == [10, 0]


def test_node_candidates_thin_to_spacing(grid5):
    net = WalkNetwork.from_graph(grid5)
    pts = [(X0 + 100 * c, Y0 + 100 * r) for r in range(5) for c in range(5)]
    pop = _population(pts, [10] * 25)
    dense = compute_reach(net, pop, candidate_spacing_m=50.0)
    sparse = compute_reach(net, pop, candidate_spacing_m=250.0)
    assert len(dense.candidates) == 25
    # Squares of 250 m from x = 500,000 split the grid's columns into {0, 100, 200} and {300, 400}.
    assert len(sparse.candidates) == 4
    assert not dense.candidates["existing"].any()


def test_population_that_misses_the_network_is_refused(grid5):
    net = WalkNetwork.from_graph(grid5)
    pop = _population([(X0 + 50_000, Y0), (X0 + 51_000, Y0)], [5, 5])
    with pytest.raises(InputError, match="does not overlap the network"):
        compute_reach(net, pop, centers=_centers([(X0, Y0)]))


def test_a_population_mostly_beyond_the_network_is_warned_with_its_share_and_the_fix(grid5):
    net = WalkNetwork.from_graph(grid5)
    near, far = (X0 + 100, Y0 + 100), (X0 + 50_000, Y0)
    with pytest.warns(CoverageWarning, match=r"30 of 100 residents \(30%\).*Load a network"):
        reach = compute_reach(net, _population([near, far], [70, 30]))
    assert reach.unreachable_population == 30          # kept and counted, not dropped
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)   # 4 % off the network: no warning
        compute_reach(net, _population([near, far], [96, 4]))
