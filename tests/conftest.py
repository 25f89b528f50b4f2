"""Shared fixtures: where the real data lives, and small synthetic inputs checkable by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip with the reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real city data not found at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA


def grid_graph(n: int = 5, spacing_m: float = 100.0, *, crs: str = "EPSG:32633",
               x0: float = 500_000.0, y0: float = 4_000_000.0):
    """An n x n street grid in osmnx convention (both directions), node id = row * n + col."""
    import networkx as nx

    G = nx.MultiDiGraph(crs=crs)
    for r in range(n):
        for c in range(n):
            G.add_node(r * n + c, x=x0 + c * spacing_m, y=y0 + r * spacing_m)
    for r in range(n):
        for c in range(n):
            for dr, dc in ((0, 1), (1, 0)):
                if r + dr < n and c + dc < n:
                    a, b = r * n + c, (r + dr) * n + c + dc
                    for u, v in ((a, b), (b, a)):
                        G.add_edge(u, v, length=spacing_m, highway="residential")
    return G


@pytest.fixture
def grid5():
    """5 x 5 grid of 100 m blocks in UTM 33N; node (row, col) = row * 5 + col."""
    return grid_graph()


def grid_town(n: int = 14, *, seed: int = 7, crs: str = "EPSG:32633"):
    """A street grid of n x n nodes 100 m apart and its (n-1)^2 cells of 20-179 residents
    (seeded): the small town the planner and benchmark tests share."""
    import geopandas as gpd
    import numpy as np
    from covplan.inputs.network import WalkNetwork
    from covplan.inputs.population import Population
    from shapely.geometry import box

    x0, y0 = 500_000.0, 4_000_000.0
    net = WalkNetwork.from_graph(grid_graph(n, 100.0, crs=crs, x0=x0, y0=y0))
    rng = np.random.default_rng(seed)
    cells = [box(x0 + 100 * c, y0 + 100 * r, x0 + 100 * (c + 1), y0 + 100 * (r + 1))
             for r in range(n - 1) for c in range(n - 1)]
    frame = gpd.GeoDataFrame({"cell_id": [f"c{i}" for i in range(len(cells))],
                              "pop": rng.integers(20, 180, len(cells))}, geometry=cells, crs=crs)
    return net, Population.from_frame(frame, population_column="pop", id_column="cell_id")


def merge_split_town_plan(n: int = 10, *, seed: int = 3, target_pop: float = 1_500,
                          centers_xy=((200, 400), (700, 400))):
    """A merge/split plan of a small grid town (n x n streets 100 m apart, old communities W
    and E with centers w and e at `centers_xy` metres from the corner), so that every optional
    output exists: (plan, network, population). Shared by the plan-folder, atlas and style
    tests."""
    import geopandas as gpd
    import numpy as np
    from covplan.config import PlanConfig
    from covplan.inputs.network import WalkNetwork
    from covplan.inputs.population import Population
    from covplan.plan.pipeline import plan_communities
    from shapely.geometry import box

    x0, y0, crs = 500_000.0, 4_000_000.0, "EPSG:32633"
    net = WalkNetwork.from_graph(grid_graph(n, 100.0))
    rng = np.random.default_rng(seed)
    cells = [box(x0 + 100 * c, y0 + 100 * r, x0 + 100 * (c + 1), y0 + 100 * (r + 1))
             for r in range(n - 1) for c in range(n - 1)]
    frame = gpd.GeoDataFrame({"cell_id": [f"c{i}" for i in range(len(cells))],
                              "pop": rng.integers(20, 120, len(cells))}, geometry=cells, crs=crs)
    population = Population.from_frame(frame.to_crs(4326), population_column="pop",
                                       id_column="cell_id")
    half = 100 * (n - 1) / 2
    old = gpd.GeoDataFrame({"community_id": ["W", "E"]}, crs=crs, geometry=[
        box(x0, y0, x0 + half, y0 + 2 * half), box(x0 + half, y0, x0 + 2 * half, y0 + 2 * half)])
    centers = gpd.GeoDataFrame({"center_id": ["w", "e"], "community_id": ["W", "E"]}, crs=crs,
                               geometry=gpd.points_from_xy([x0 + x for x, _ in centers_xy],
                                                           [y0 + y for _, y in centers_xy]))
    config = PlanConfig(target_pop=target_pop, tolerance=0.3, max_minutes=8.0,
                        candidate_spacing_m=150.0, max_unit_pop=None, restarts=1)
    plan = plan_communities(net, population, communities=old, centers=centers, config=config)
    return plan, net, population
