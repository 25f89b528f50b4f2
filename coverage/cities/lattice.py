"""
The frame the synthetic cities and the metropolis are laid out on: every 100 m cell of the
extent, and a jittered street lattice (local streets 125 m apart, arterials every 500 m) that a
`Layout` trims to where the city is built. City coordinates: metres around the middle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from covplan.cities.demo import CELL_M
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

__all__ = ["STEP_M", "Layout", "cell_grid", "street_lattice"]

STEP_M = 62.5                # lattice step; streets on every second line -> 125 m blocks
_ARTERIAL_EVERY = 8          # lattice lines: arterials 500 m apart, never jittered
_JITTER_M = 8.0
_UNBUILT_SHARE = 0.05        # local block sides never built


@dataclass(frozen=True, slots=True)
class Layout:
    """What a city decides: where streets run, what they cannot cross, and who lives where."""

    built: BaseGeometry                   # streets run where both ends lie inside
    weight: np.ndarray                    # expected residents per cell, before noise and rounding
    barrier: BaseGeometry | None = None   # no street crosses it, bridges aside
    bridges: dict[int, tuple[str, str]] | None = None   # lattice column -> (highway, name)
    paths: BaseGeometry | None = None     # every lattice line is a footpath here, not every second
    no_local: BaseGeometry | None = None  # arterials only (airfield)
    rural: BaseGeometry | None = None     # arterials here are country roads
    islands: bool = False                 # keep detached pieces of >= 10 nodes, not just the main
    districts: tuple[tuple[str, str, Polygon], ...] | None = None
    features: tuple[tuple[str, str, BaseGeometry], ...] = ()


def cell_grid(half: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Every 100 m cell of the extent: squares and centroids (city coordinates)."""
    cols, rows = (np.arange(int(2 * h / CELL_M)) for h in half)
    col, row = (a.ravel() for a in np.meshgrid(cols, rows))
    xy = (np.column_stack([col, row]) + 0.5) * CELL_M - np.array(half)
    return shapely.box(*(xy - CELL_M / 2).T, *(xy + CELL_M / 2).T), xy


def street_lattice(rng: np.random.Generator, half: tuple[float, float], layout: Layout,
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """
    Street nodes (city coordinates) and undirected edges in the arrays
    `covplan.cities.demo.street_graph` takes (u, v, highway, name, osmid, structure).

    The lattice has a node every STEP_M m; streets follow every second line (every line inside
    `layout.paths`), arterials every eighth. Edges are kept where both ends lie in
    `layout.built` and the edge does not cross `layout.barrier`, except the bridges.
    """
    ni, nj = (int(h // STEP_M) for h in half)
    i, j = (a.ravel() for a in np.meshgrid(np.arange(-ni, ni + 1), np.arange(-nj, nj + 1)))
    on_arterial = (i % _ARTERIAL_EVERY == 0) | (j % _ARTERIAL_EVERY == 0)
    jitter = rng.uniform(-_JITTER_M, _JITTER_M, size=(i.size, 2)) * ~on_arterial[:, None]
    xy = np.column_stack([i * STEP_M, j * STEP_M]) + jitter
    width = 2 * ni + 1

    # Every lattice neighbour pair; `line` is the row (east-west) or column (north-south).
    east = np.flatnonzero(i < ni)
    north = np.flatnonzero(j < nj)
    u = np.concatenate([east, north])
    v = np.concatenate([east + 1, north + width])
    north_south = np.repeat([False, True], [east.size, north.size])
    line = np.where(north_south, i[u], j[u])
    along = np.where(north_south, j[u], i[u]) // 2          # which block side along the line
    arterial = line % _ARTERIAL_EVERY == 0

    segments = shapely.linestrings(np.stack([xy[u], xy[v]], axis=1))
    inside = shapely.contains_xy(layout.built, *xy.T)
    street = line % 2 == 0
    if layout.paths is not None:
        in_paths = shapely.contains_xy(layout.paths, *xy.T)
        street |= in_paths[u] & in_paths[v]
    crossing = (shapely.intersects(segments, layout.barrier) if layout.barrier is not None
                else np.zeros(u.size, dtype=bool))
    bridges = layout.bridges or {}
    bridge = crossing & north_south & np.isin(line, list(bridges))
    _, side = np.unique((north_south * 10_000 + line + 5_000) * 10_000 + along + 5_000,
                        return_inverse=True)
    unbuilt = (rng.random(side.max() + 1) < _UNBUILT_SHARE)[side] & ~arterial
    if layout.no_local is not None:
        empty = shapely.contains_xy(layout.no_local, *xy.T)
        unbuilt |= empty[u] & empty[v] & ~arterial
    keep = street & ((inside[u] & inside[v] & ~crossing) | bridge) & ~unbuilt

    # The main piece only; with islands also detached pieces of 10+ nodes (stray bits dropped).
    adjacency = coo_matrix((np.ones(keep.sum()), (u[keep], v[keep])), shape=(i.size, i.size))
    _, component = connected_components(adjacency, directed=False)
    used = np.zeros(i.size, dtype=bool)
    used[u[keep]] = used[v[keep]] = True
    sizes = np.bincount(component[used], minlength=component.max() + 1)
    wanted = sizes >= 10 if layout.islands else np.arange(sizes.size) == sizes.argmax()
    in_city = used & wanted[component]
    keep &= in_city[u]
    row_of = np.cumsum(in_city) - 1

    rural = (shapely.contains_xy(layout.rural, *((xy[u] + xy[v]) / 2).T)
             if layout.rural is not None else np.zeros(u.size, dtype=bool))
    path = street & (line % 2 == 1)
    highway = np.where(path, "footway", np.where(arterial, np.where(rural, "tertiary", "primary"),
                                                 "residential"))
    name = np.array([f"{'North' if ns else 'East'} {'Avenue' if a else 'Lane'} {ln}"
                     for ns, ln, a in zip(north_south, line, arterial)], dtype=object)
    name[path] = "Estate Path"
    structure = np.where(bridge, "bridge", "")
    for column, (kind, title) in bridges.items():
        on = bridge & (line == column)
        highway[on], name[on] = kind, title
    edges = {"u": row_of[u], "v": row_of[v], "highway": highway, "name": name,
             "osmid": np.where(bridge, 9_000 + line, 10_000 + 1_000 * north_south + line),
             "structure": structure}
    return xy[in_city], {key: values[keep] for key, values in edges.items()}
