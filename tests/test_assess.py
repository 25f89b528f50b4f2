"""Coverage analysis: by hand on a grid, and against an independent networkx computation on the demo city."""

from __future__ import annotations

import geopandas as gpd
import networkx as nx
import numpy as np
import pytest
from covplan.assess import assess_coverage
from covplan.cities.demo import build_demo_city
from covplan.inputs.areas import load_centers, load_communities
from covplan.inputs.network import WalkNetwork, load_network
from covplan.inputs.population import Population, load_population
from shapely.geometry import Point, box

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"


def _grid_case(grid5):
    net = WalkNetwork.from_graph(grid5)
    pts = [(X0 + 100 * c, Y0 + 100 * r) for r in range(5) for c in range(5)]
    frame = gpd.GeoDataFrame({"cell_id": [f"n{i}" for i in range(25)], "pop": [10] * 25},
                             geometry=[Point(p) for p in pts], crs=CRS)
    population = Population.from_frame(frame, population_column="pop", id_column="cell_id")
    communities = gpd.GeoDataFrame(
        {"community_id": ["west", "east"]},
        geometry=[box(X0 - 50, Y0 - 50, X0 + 150, Y0 + 450), box(X0 + 150, Y0 - 50, X0 + 450, Y0 + 450)],
        crs=CRS)
    # West's center sits in its far corner; east's center in the middle of its area.
    centers = gpd.GeoDataFrame({"center_id": ["W", "E"], "community_id": ["west", "east"]},
                               geometry=[Point(X0, Y0), Point(X0 + 300, Y0 + 200)], crs=CRS)
    return net, population, communities, centers


def test_coverage_by_hand_on_grid(grid5):
    net, population, communities, centers = _grid_case(grid5)
    result = assess_coverage(net, population, centers, communities=communities, max_minutes=4.0)
    # 4 minutes = 300 m. West: nodes in columns 0-1 within 300 m of (0, 0): |r| + |c| <= 3 -> 7 of 10.
    rows, cols = np.divmod(np.arange(25), 5)
    west = cols <= 1
    west_ok = west & (rows + cols <= 3)
    east_ok = ~west & (abs(rows - 2) + abs(cols - 3) <= 3)
    table = result.communities.set_index("community_id")
    assert table.loc["west", "pop"] == 100 and table.loc["east", "pop"] == 150
    assert table.loc["west", "pop_within_own"] == 10 * west_ok.sum()
    assert table.loc["east", "pop_within_own"] == 10 * east_ok.sum()
    nearest_ok = (rows + cols <= 3) | (abs(rows - 2) + abs(cols - 3) <= 3)
    summary = result.summary()
    assert summary["population_total"] == 250
    # Covered: within the limit of their own community's center; the nearest center apart.
    assert summary["population_covered"] == 10 * (west_ok | east_ok).sum()
    assert summary["coverage_share"] == pytest.approx(10 * (west_ok | east_ok).sum() / 250)
    assert summary["population_beyond_nearest"] == 250 - 10 * nearest_ok.sum()
    assert summary["nearest_center_share"] == pytest.approx(10 * nearest_ok.sum() / 250)
    pop_within = result.centers.set_index("center_id")["pop_within"]
    assert pop_within["W"] == 10 * (rows + cols <= 3).sum()
    assert pop_within["E"] == 10 * (abs(rows - 2) + abs(cols - 3) <= 3).sum()


def test_units_keep_everyone_and_come_back_in_input_crs(grid5):
    net, population, communities, centers = _grid_case(grid5)
    result = assess_coverage(net, population.to_crs(4326), centers, communities=communities)
    assert result.units.crs.to_epsg() == 4326
    assert result.units["pop"].sum() == 250
    assert result.summary()["coverage_share"] == pytest.approx(1.0)


def test_demo_city_coverage_matches_independent_networkx():
    city = build_demo_city(seed=0)
    net = load_network(city.graph)
    population = load_population(city.population, population_column="population", id_column="cell_id")
    centers = load_centers(city.centers)
    communities = load_communities(city.communities)
    result = assess_coverage(net, population, centers, communities=communities, max_minutes=15)

    # Independent: project with geopandas, brute-force nearest nodes, networkx multi-source Dijkstra.
    G = nx.Graph()
    for u, v, data in city.graph.edges(data=True):
        G.add_edge(u, v, weight=data["length"])
    nodes = gpd.GeoSeries.from_xy([city.graph.nodes[n]["x"] for n in city.graph.nodes],
                                  [city.graph.nodes[n]["y"] for n in city.graph.nodes],
                                  crs=4326).to_crs(net.crs)
    node_ids = np.array(list(city.graph.nodes))
    nxy = np.column_stack([nodes.x, nodes.y])

    def nearest(points):
        pts = points.to_crs(net.crs)
        xy = np.column_stack([pts.x, pts.y])
        d2 = ((xy[:, None, :] - nxy[None, :, :]) ** 2).sum(axis=2)
        k = d2.argmin(axis=1)
        return node_ids[k], np.sqrt(d2[np.arange(len(k)), k])

    center_node, center_d = nearest(city.centers.geometry)
    cells = city.population.to_crs(net.crs).geometry.centroid
    unit_node, unit_d = nearest(cells)
    speed = 4.5 * 1000 / 60
    best = np.full(len(unit_node), np.inf)
    for cn, cd in zip(center_node, center_d):
        dist = nx.single_source_dijkstra_path_length(G, cn, cutoff=15 * speed, weight="weight")
        t = np.array([dist.get(u, np.inf) for u in unit_node])
        best = np.minimum(best, (t + 1.3 * (cd + unit_d)) / speed)
    covered_pop = int(city.population["population"].to_numpy()[best <= 15].sum())
    summary = result.summary()
    assert summary["population_total"] - summary["population_beyond_nearest"] == covered_pop
    assert result.summary()["population_total"] == int(city.population["population"].sum())
