"""
Isochrone polygons: the streets reachable within N minutes of a center, cut at the exact
remaining distance along each edge and buffered into an area (not a hull of reached nodes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import shapely
from covplan._parallel import usable_cpus
from covplan._progress import progress_bar
from covplan._validate import require_positive
from covplan.defaults import DEFAULT_BANDS
from covplan.errors import InputError
from covplan.inputs.network import WalkNetwork, as_walk_network
from covplan.inputs.snap import DEFAULT_DETOUR_FACTOR, DEFAULT_MAX_ACCESS_M, snap_points
from covplan.reach.engine import gather_rows
from covplan.reach.matrix import MAX_MINUTES_LIMIT, Direction, node_times
from shapely.ops import substring

if TYPE_CHECKING:
    import networkx as nx

logger = logging.getLogger(__name__)

# Half-width of the walkable strip around a reached street: front doors lie within ~40 m of it.
DEFAULT_BUFFER_M = 40.0
_PENDING = 64   # areas queued for the threads at most (the street pieces they hold cost memory)


def _pieces(edges: gpd.GeoDataFrame, edge_ids: np.ndarray, dist: np.ndarray,
            budget_m: float) -> np.ndarray:
    """Line pieces of the edges `edge_ids` reachable within `budget_m`, given node distances."""
    u = edges["u"].to_numpy()[edge_ids]
    v = edges["v"].to_numpy()[edge_ids]
    length = edges["length_m"].to_numpy()[edge_ids]
    geoms = edges.geometry.values[edge_ids]
    du, dv = dist[u], dist[v]
    left_u = np.clip(budget_m - du, 0.0, None)    # metres still walkable after reaching u
    left_v = np.clip(budget_m - dv, 0.0, None)
    touched = (du <= budget_m) | (dv <= budget_m)
    whole = touched & (left_u + left_v >= length)
    pieces = list(np.asarray(geoms[whole]))
    for i in np.flatnonzero(touched & ~whole):
        line = geoms[i]
        scale = line.length / length[i] if length[i] > 0 else 1.0
        if left_u[i] > 0:
            pieces.append(substring(line, 0.0, left_u[i] * scale))
        if left_v[i] > 0:
            pieces.append(substring(line, line.length - left_v[i] * scale, line.length))
    return np.asarray(pieces, dtype=object)


def _center_pieces(network: WalkNetwork, reach, k: int | None, dist: np.ndarray,
                   budgets: list[float]) -> list[np.ndarray]:
    """For each walking budget (metres), the street pieces within it of the center in row `k`
    of `reach` (none when it is off the network). `dist` is all inf, and left so."""
    if k is None:
        return [np.zeros(0, dtype=object) for _ in budgets]
    nodes = reach.node[reach.indptr[k]:reach.indptr[k + 1]]
    dist[nodes] = reach.dist_m[reach.indptr[k]:reach.indptr[k + 1]]
    arcs, _ = gather_rows(network.indptr, nodes)
    edge_ids = np.unique(network.arc_edge[arcs])
    out = [_pieces(network.edges, edge_ids, dist, budget) if budget > 0
           else np.zeros(0, dtype=object) for budget in budgets]
    dist[nodes] = np.inf
    return out


def _area(pieces: np.ndarray, buffer_m: float):
    """The strip `buffer_m` wide around `pieces` (empty without any). Buffering pieces one by
    one and uniting them is ~4x faster in GEOS than buffering them as one multi-line."""
    if not len(pieces):
        return shapely.Polygon()
    return shapely.union_all(shapely.buffer(pieces, buffer_m, quad_segs=4))


def compute_isochrones(network: WalkNetwork | nx.Graph, centers: gpd.GeoDataFrame, *,
                       minutes: Sequence[float] = DEFAULT_BANDS,
                       buffer_m: float = DEFAULT_BUFFER_M,
                       direction: Direction = "to_center",
                       detour_factor: float = DEFAULT_DETOUR_FACTOR,
                       max_access_m: float = DEFAULT_MAX_ACCESS_M,
                       progress: bool = False) -> gpd.GeoDataFrame:
    """
    The area within each time limit of each center, one row per (center, limit).

    Parameters
    ----------
    network
        The walking network (working CRS, speed): a WalkNetwork, or an osmnx/networkx graph
        converted by `as_walk_network`.
    centers
        Points with a ``center_id`` column, any CRS; the result comes back in this CRS.
    minutes
        The limits, e.g. (5, 10, 15); each polygon holds everything within that limit, so bands
        nest.
    buffer_m
        Half-width of the strip around reached streets that counts as reached.
    direction
        ``"to_center"`` (walking to the center, default) or ``"from_center"``; they differ only
        on networks with one-way footpaths.
    detour_factor
        A center's access leg to its nearest node is the straight line times this.
    max_access_m
        Centers farther than this from the network are off-network and get empty polygons.
    progress
        Show a progress bar over the centers.

    Returns
    -------
    GeoDataFrame
        ``center_id``, ``minutes``, ``area_m2`` and a (Multi)Polygon geometry (empty when the
        center is off the network), sorted by center then limit.

    Raises
    ------
    InputError
        If `minutes` is empty or a limit or `buffer_m` is out of range.
    TypeError
        If `network` is neither a WalkNetwork nor a networkx graph.
    """
    network = as_walk_network(network)
    bands = sorted({require_positive(m, name="minutes", upper=MAX_MINUTES_LIMIT) for m in minutes})
    if not bands:
        msg = "`minutes` is empty; give at least one time limit, e.g. (5, 10, 15)."
        raise InputError(msg)
    require_positive(buffer_m, name="buffer_m")
    work = centers.to_crs(network.crs).reset_index(drop=True)
    snap = snap_points(network, work.geometry.x.to_numpy(), work.geometry.y.to_numpy(),
                       detour_factor=detour_factor, max_access_m=max_access_m)
    access = snap.access_min(network.walk_speed_kmh)
    on = np.flatnonzero(~snap.off_network)
    reach = node_times(network, snap.node[on], max_minutes=max(bands), direction=direction,
                       progress=False)
    speed = network.speed_m_per_min
    dist = np.full(network.n_nodes, np.inf)
    row_of = {int(c): k for k, c in enumerate(on)}
    rows, pending = [], []
    # GEOS releases the GIL: the areas are drawn on two threads (as the walk times are) while
    # this one cuts the next centers' street pieces.
    with ThreadPoolExecutor(max_workers=min(2, usable_cpus())) as pool:
        for i in progress_bar(range(len(work)), desc="isochrones", progress=progress):
            budgets = [(band - access[i]) * speed for band in bands]
            for band, pieces in zip(bands, _center_pieces(network, reach, row_of.get(i), dist,
                                                          budgets)):
                pending.append((work.at[i, "center_id"], band, pool.submit(_area, pieces, buffer_m)))
            if len(pending) >= _PENDING or i == len(work) - 1:
                rows += [(center, band, area.result()) for center, band, area in pending]
                pending = []
    out = gpd.GeoDataFrame({"center_id": [r[0] for r in rows], "minutes": [r[1] for r in rows]},
                           geometry=[r[2] for r in rows], crs=network.crs)
    out["area_m2"] = out.area
    logger.info("Isochrones: %d centers x %d limits", len(work), len(bands))
    return out[["center_id", "minutes", "area_m2", "geometry"]].to_crs(centers.crs)


def dissolve_isochrones(isochrones: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """
    The service area of all centers together, one row per time limit.

    Parameters
    ----------
    isochrones
        Isochrones as from `compute_isochrones`, with a ``minutes`` column.

    Returns
    -------
    GeoDataFrame
        ``minutes`` and the union of every center's polygon for that limit, in the CRS of
        `isochrones`.
    """
    merged = isochrones.dissolve(by="minutes", as_index=False)[["minutes", "geometry"]]
    return merged
