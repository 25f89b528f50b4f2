"""
`Population.disaggregate`: populated polygon cells split into units on network nodes, buildings
or a fine grid, every cell's count conserved (largest remainder).

Targets are grouped by recursive weighted bisection, so the split is compact and deterministic.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from covplan._validate import require_crs, require_positive
from covplan.errors import CRSError, InputError
from covplan.inputs.areas import find_column
from covplan.inputs.crs import local_metric_crs
from covplan.inputs.population_cells import inner_points, largest_remainder, units_frame

__all__ = ["disaggregate"]

# The population modules log under one name, the one users configured before they were split.
logger = logging.getLogger("covplan.inputs.population")

_FLOOR_NAMES = ("floors", "levels", "building:levels")
_ONTO = ("nodes", "buildings", "grid")
_MAX_SUBCELLS = 5_000_000      # more grid pieces than this means a unit mix-up, not a plan


def disaggregate(population: Any, *, onto: str, network: Any, buildings: gpd.GeoDataFrame | None,
                 cell_size_m: float | None, max_unit_pop: float | None):
    """`Population.disaggregate` (see there): the same cells, new units."""
    _check_disaggregate_args(onto, network, buildings, cell_size_m, max_unit_pop)
    work_crs = local_metric_crs(tuple(population.cells.total_bounds), population.crs)
    cells_w = population.cells.to_crs(work_crs)
    pop = cells_w["pop"].to_numpy()
    geoms = np.asarray(cells_w.geometry.values)
    to_split = (pop > 0) & np.isin(shapely.get_type_id(geoms), (3, 6))  # polygons only
    if max_unit_pop is not None:
        to_split &= pop > max_unit_pop
    split_pos = np.flatnonzero(to_split)
    if onto == "nodes":
        owner, xy, weight = _node_targets(network, geoms, split_pos, work_crs)
    elif onto == "buildings":
        owner, xy, weight = _building_targets(buildings, geoms, split_pos, work_crs)
    else:
        owner, xy, weight = _grid_targets(geoms, split_pos, float(cell_size_m))
    units_w = _split_cells(cells_w, owner, xy, weight, max_unit_pop=max_unit_pop,
                           anchors=_lone_units(population, cells_w))
    bare = len(np.setdiff1d(split_pos, owner))
    logger.info("Disaggregated %d of %d populated cells onto %s: %d units; %d cell(s) had no "
                "target inside and kept one unit; total %s unchanged", len(split_pos),
                int((pop > 0).sum()), onto, len(units_w), bare, f"{population.total:,}")
    return dataclasses.replace(population, units=units_w.to_crs(population.crs))


def _lone_units(population: Any, cells_w: gpd.GeoDataFrame) -> np.ndarray:
    """Per row of `cells_w`, the point of the cell's unit when it is its only one and not
    where `inner_points` puts it anyway (a source point), else None; such units are placed
    again in the working CRS, exactly as before point sources kept their points."""
    units = population.units
    one = (units["cell_id"].map(units["cell_id"].value_counts()) == 1).to_numpy()
    cells = population.cells.set_index("cell_id").geometry
    points = np.asarray(units.geometry.values)[one]
    ids = units["cell_id"].to_numpy()[one]
    moved = ~shapely.equals(points, inner_points(np.asarray(cells.loc[ids].values)))
    kept = gpd.GeoSeries(points[moved], crs=population.crs).to_crs(cells_w.crs)
    by_cell = pd.Series(np.asarray(kept.values), index=ids[moved], dtype=object)
    return by_cell.reindex(cells_w["cell_id"].to_numpy()).to_numpy(dtype=object)


def _check_disaggregate_args(onto: str, network: Any, buildings: Any, cell_size_m: Any,
                             max_unit_pop: Any) -> None:
    """Raise unless `onto` is known and its input is given."""
    if onto not in _ONTO:
        msg = f"`onto` must be one of {list(_ONTO)}, got {onto!r}."
        raise InputError(msg)
    needed = {"nodes": ("network", network), "buildings": ("buildings", buildings),
              "grid": ("cell_size_m", cell_size_m)}[onto]
    if needed[1] is None:
        msg = f"disaggregate(onto={onto!r}) needs `{needed[0]}=`."
        raise InputError(msg)
    if onto == "grid":
        require_positive(cell_size_m, name="cell_size_m")
    if max_unit_pop is not None:
        require_positive(max_unit_pop, name="max_unit_pop")


def _assign_points(points: np.ndarray, geoms: np.ndarray,
                   split_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point index, cell position) for points in the cells to split; a boundary point goes to
    the lowest cell position so nobody is counted twice."""
    tree = shapely.STRtree(geoms[split_pos])
    point_idx, tree_idx = tree.query(points, predicate="intersects")
    order = np.lexsort((tree_idx, point_idx))
    point_idx, tree_idx = point_idx[order], tree_idx[order]
    first = np.unique(point_idx, return_index=True)[1]
    return point_idx[first], split_pos[tree_idx[first]]


def _node_targets(network: Any, geoms: np.ndarray, split_pos: np.ndarray,
                  work_crs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network nodes inside the cells, weight 1 each."""
    for attribute in ("x", "y", "crs"):
        if not hasattr(network, attribute):
            msg = f"`network` must have x, y and crs (a WalkNetwork); it lacks {attribute!r}."
            raise TypeError(msg)
    if network.crs is None:
        msg = "`network` has no CRS; its x/y cannot be placed against the population cells."
        raise CRSError(msg)
    x, y = np.asarray(network.x, dtype="float64"), np.asarray(network.y, dtype="float64")
    nodes = gpd.GeoSeries(gpd.points_from_xy(x, y), crs=network.crs).to_crs(work_crs)
    points = np.asarray(nodes.values)
    idx, owner = _assign_points(points, geoms, split_pos)
    return owner, shapely.get_coordinates(points[idx]), np.ones(len(idx))


def _building_targets(buildings: gpd.GeoDataFrame, geoms: np.ndarray, split_pos: np.ndarray,
                      work_crs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Buildings whose representative point is inside, weighted by area (polygons) x floors."""
    if not isinstance(buildings, gpd.GeoDataFrame):
        msg = f"`buildings` must be a GeoDataFrame, got {type(buildings).__name__}."
        raise TypeError(msg)
    require_crs(buildings, name="`buildings`")
    frame = buildings.to_crs(work_crs)
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    shapes = np.asarray(frame.geometry.values)
    polygonal = np.isin(shapely.get_type_id(shapes), (3, 6))
    # Area only means something if every building has one; a mix falls back to equal weights.
    weight = shapely.area(shapes) if polygonal.all() else np.ones(len(shapes))
    floor_column = find_column(frame, _FLOOR_NAMES)
    if floor_column is not None:
        floors = pd.to_numeric(frame[floor_column], errors="coerce").to_numpy(dtype="float64")
        unknown = ~(floors > 0)
        floors[unknown] = 1.0   # an unknown floor count should not erase a building's residents
        weight = weight * floors
        logger.info("Weighting buildings by %r (%d unknown taken as 1)", floor_column,
                    int(unknown.sum()))
    points = shapely.point_on_surface(shapes)
    idx, owner = _assign_points(points, geoms, split_pos)
    return owner, shapely.get_coordinates(points[idx]), weight[idx]


def _grid_targets(geoms: np.ndarray, split_pos: np.ndarray,
                  size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squares of `size` metres clipped to each cell, weighted by clipped area."""
    bounds = shapely.bounds(geoms[split_pos])
    lo = np.floor(bounds[:, :2] / size).astype(np.int64)
    hi = np.maximum(np.ceil(bounds[:, 2:] / size).astype(np.int64), lo + 1)
    shape = hi - lo
    count = int((shape[:, 0] * shape[:, 1]).sum())
    if count > _MAX_SUBCELLS:
        msg = (f"disaggregate(onto='grid', cell_size_m={size:g}) would make {count:,} squares; "
               "use a larger cell_size_m (metres, not degrees or km).")
        raise InputError(msg)
    owner = np.repeat(split_pos, shape[:, 0] * shape[:, 1])
    ix = np.concatenate([np.repeat(np.arange(a, b), n) for a, b, n in
                         zip(lo[:, 0], hi[:, 0], shape[:, 1], strict=True)] or [np.empty(0, int)])
    iy = np.concatenate([np.tile(np.arange(a, b), n) for a, b, n in
                         zip(lo[:, 1], hi[:, 1], shape[:, 0], strict=True)] or [np.empty(0, int)])
    squares = shapely.box(ix * size, iy * size, (ix + 1) * size, (iy + 1) * size)
    pieces = shapely.intersection(squares, geoms[owner])
    area = shapely.area(pieces)
    keep = area > 0
    points = inner_points(pieces[keep])
    return owner[keep], shapely.get_coordinates(points), area[keep]


def _split_cells(cells_w: gpd.GeoDataFrame, owner: np.ndarray, xy: np.ndarray,
                 weight: np.ndarray, *, max_unit_pop: float | None,
                 anchors: np.ndarray) -> gpd.GeoDataFrame:
    """Units of every populated cell: targets grouped into pieces, counts by largest remainder.
    A cell left whole keeps its unit at its anchor (None: an inner point)."""
    pop = cells_w["pop"].to_numpy()
    geoms = np.asarray(cells_w.geometry.values)
    order = np.argsort(owner, kind="stable")
    owner, xy, weight = owner[order], xy[order], weight[order]
    starts = np.searchsorted(owner, np.arange(len(pop) + 1))
    # Cells without targets (unsplit, points, or nothing inside) keep one unit: where it was
    # (a Voronoi cell's source point), else at an inner point.
    plain = np.flatnonzero((pop > 0) & (starts[1:] == starts[:-1]))
    unit_cell, unit_pop = [plain], [pop[plain]]
    kept = anchors[plain]
    kept = np.where(pd.isna(kept), inner_points(geoms[plain]), kept)
    unit_xy = [shapely.get_coordinates(kept).reshape(-1, 2)]
    for pos in np.unique(owner):
        lo, hi = starts[pos], starts[pos + 1]
        w = weight[lo:hi] if weight[lo:hi].sum() > 0 else np.ones(hi - lo)
        k = hi - lo
        if max_unit_pop is not None:
            k = min(k, math.ceil(2 * pop[pos] / max_unit_pop))
        labels = _bisect(xy[lo:hi], w, k)
        piece_w = np.bincount(labels, weights=w, minlength=k)
        unit_pop.append(largest_remainder(pop[pos] * piece_w / piece_w.sum(), int(pop[pos])))
        unit_cell.append(np.full(k, pos))
        unit_xy.append(_piece_points(xy[lo:hi], w, labels, k))
    cell_pos, counts = np.concatenate(unit_cell), np.concatenate(unit_pop).astype(np.int64)
    points = shapely.points(np.concatenate(unit_xy))
    # Largest remainder keeps each cell's sum, so zero units carry no one; list units by cell.
    keep = np.flatnonzero(counts > 0)
    keep = keep[np.argsort(cell_pos[keep], kind="stable")]
    return units_frame(cells_w["cell_id"].to_numpy()[cell_pos[keep]], counts[keep],
                       points[keep], crs=cells_w.crs)


def _bisect(xy: np.ndarray, weight: np.ndarray, k: int) -> np.ndarray:
    """Labels 0..k-1 from recursive weighted bisection along the longer axis; needs k <= len(xy).

    Compact, weight-balanced pieces without a random start, so results are deterministic.
    """
    labels = np.zeros(len(xy), dtype=np.int64)
    if k == len(xy):
        return np.arange(k)
    stack = [(np.arange(len(xy)), k, 0)]
    while stack:
        idx, parts, first = stack.pop()
        if parts == 1:
            labels[idx] = first
            continue
        left = parts // 2
        span = np.ptp(xy[idx], axis=0)
        coordinate = xy[idx, int(span[1] > span[0])]
        idx = idx[np.lexsort((idx, coordinate))]   # ties by index keep it deterministic
        cumulative = np.cumsum(weight[idx])
        goal = cumulative[-1] * left / parts
        cut = int(np.searchsorted(cumulative, goal)) + 1
        if cut > 1 and goal - cumulative[cut - 2] < cumulative[cut - 1] - goal:
            cut -= 1   # the cut one earlier is closer to the goal
        cut = min(max(cut, left), len(idx) - (parts - left))   # each side keeps enough targets
        stack += [(idx[:cut], left, first), (idx[cut:], parts - left, first + left)]
    return labels


def _piece_points(xy: np.ndarray, weight: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per piece, the member target nearest its weighted mean (units stay on real targets)."""
    if k == len(xy):
        out = np.empty_like(xy)
        out[labels] = xy
        return out
    total = np.bincount(labels, weights=weight, minlength=k)
    # A weightless piece gets no one and is dropped later; any member will do for its point.
    total[total == 0] = 1.0
    mean = np.stack([np.bincount(labels, weights=weight * xy[:, i], minlength=k) for i in (0, 1)],
                    axis=1) / total[:, None]
    distance = np.hypot(*(xy - mean[labels]).T)
    nearest = np.lexsort((distance, labels))
    first = np.unique(labels[nearest], return_index=True)[1]
    return xy[nearest[first]]
