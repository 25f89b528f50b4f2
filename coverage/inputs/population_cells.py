"""
Cells and units from a validated frame: the core every population loader ends in.

Counts become integers conserving the total (largest remainder), point cells become Voronoi
areas so neighbours share borders, and every populated cell gets one unit. The Population class
is passed in as `cls` (this module sits below `covplan.inputs.population`, which defines it).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from covplan._validate import (
    clean_counts,
    implausible_cells,
    require_countable,
    require_crs,
    require_not_empty,
)
from covplan.errors import CoverageWarning, CRSError, InputError
from covplan.inputs.crs import local_metric_crs
from covplan.inputs.population_columns import (
    find_cell_ids,
    numeric_hint,
    pick_population_column,
)
from covplan.inputs.tessellation import unit_pieces

__all__ = ["assemble", "from_geoframe", "inner_points", "largest_remainder", "units_frame"]

# The population modules log under one name, the one users configured before they were split.
logger = logging.getLogger("covplan.inputs.population")

_CELL_TYPES = ("Polygon", "MultiPolygon", "Point")
# Point cells become Voronoi areas clipped to their hull grown by half the median spacing of
# the points plus this margin, or a disc of the lone-point radius around a single point.
_POINT_MARGIN_M = 50.0
_LONE_POINT_RADIUS_M = 150.0


def from_geoframe(cls: type, frame: gpd.GeoDataFrame, *, population_column: str | None,
                  id_column: str | None, source: str, name: str, notes: tuple[str, ...] = ()):
    """Validate a frame of cells and build the Population (the shared core of every loader)."""
    require_not_empty(frame, name=name)
    require_crs(frame, name=name)
    ids, id_name = find_cell_ids(frame, id_column, name=name)
    exclude = {id_name, frame.geometry.name}
    column = population_column
    if column is None:
        column = pick_population_column(frame, exclude=exclude, name=name)
    elif column not in frame.columns:
        msg = (f"{name} lacks column(s) [{column!r}]; it has "
               f"{[c for c in frame.columns if c != frame.geometry.name]}. Name the counts "
               f"column with --population-column (CLI) or population_column= (Python)"
               f"{numeric_hint(frame, exclude)}.")
        raise InputError(msg)
    counts = clean_counts(frame[column], name=name, column=str(column))
    geometry = _check_geometry(frame, counts, name=name)
    geometry, anchors = _point_areas(geometry, name=name)
    return assemble(cls, geometry, counts, ids, source=source, name=name, column=str(column),
                    anchors=anchors, notes=notes)


def assemble(cls: type, geometry: gpd.GeoSeries, counts: np.ndarray, ids: pd.Series, *,
             source: str, name: str, column: str, anchors: np.ndarray | None = None,
             raster: bool = False, notes: tuple[str, ...] = ()):
    """Integer counts, the cells frame and one unit per populated cell (at its anchor point
    if it has one, else inside the cell); implausible cells warn. Pixels of a raster cannot
    overlap, so `raster` skips that (costly) check."""
    cell_ids = ids.astype(str).to_numpy()
    require_countable(counts, cell_ids, name=name, raster=raster,
                      column=column if raster else f"column {column!r}")
    pop = _to_integers(counts, name=name)
    cells = gpd.GeoDataFrame({"cell_id": cell_ids, "pop": pop},
                             geometry=geometry.values, crs=geometry.crs)
    populated = pop > 0
    points = inner_points(np.asarray(geometry.values)[populated])
    if anchors is not None:
        given = anchors[populated]
        points[pd.notna(given)] = given[pd.notna(given)]
    units = units_frame(cell_ids[populated], pop[populated], points, crs=cells.crs)
    logger.info("Loaded %d cells, %s people from %s (column %r)", len(cells),
                f"{int(pop.sum()):,}", source, column)
    if not populated.all():
        logger.info("%d cell(s) with pop 0 are kept in `cells` but get no unit",
                    int((~populated).sum()))
    found = (*notes, *implausible_cells(cells, name=name, overlaps=not raster))
    for message in found:
        logger.warning("%s", message)
        warnings.warn(message, CoverageWarning, stacklevel=4)
    return cls(units=units, cells=cells, source=source, population_column=column,
               warnings=found)


def _point_areas(geometry: gpd.GeoSeries, *, name: str) -> tuple[gpd.GeoSeries, np.ndarray]:
    """
    Point cells as Voronoi areas, so that neighbouring points share borders; and per row the
    source point (None for polygon rows), where the cell's unit stays.

    The loader has no street network, so the diagram is clipped to the points' convex hull
    grown by half their median nearest-neighbour distance plus _POINT_MARGIN_M: edge cells
    reach about as far out as their neighbours' cells do. Coincident points share their
    region in equal-area slices (`unit_pieces`); polygon cells are carved out.
    """
    geoms = np.asarray(geometry.values)
    is_point = (shapely.get_type_id(geoms) == 0) & ~shapely.is_empty(geoms)
    anchors = np.full(len(geoms), None, dtype=object)
    if not is_point.any():
        return geometry, anchors
    anchors[is_point] = geoms[is_point]
    try:
        work = local_metric_crs(tuple(shapely.total_bounds(geoms[is_point])), geometry.crs)
    except CRSError as exc:
        raise CRSError(f"{name}: {exc}") from None
    points = gpd.GeoSeries(geoms[is_point], crs=geometry.crs).to_crs(work)
    xy = np.asarray(points.values)
    tree = shapely.STRtree(xy)
    # exclusive: a point's own (or a coincident) position is not its neighbour
    distance = tree.query_nearest(xy, exclusive=True, return_distance=True, all_matches=False)[1]
    reach = (_LONE_POINT_RADIUS_M if len(distance) == 0
             else 0.5 * float(np.median(distance)) + _POINT_MARGIN_M)
    hull = shapely.buffer(shapely.convex_hull(shapely.multipoints(xy)), reach)
    sites = gpd.GeoDataFrame({"cell_id": np.zeros(len(xy), dtype=str)}, geometry=xy, crs=work)
    regions = np.asarray(unit_pieces(sites, gpd.GeoDataFrame(
        {"cell_id": [""]}, geometry=[hull], crs=work)).values)
    areal = ~is_point & ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    if areal.any():
        regions = _carve(regions, xy, gpd.GeoSeries(geoms[areal], crs=geometry.crs).to_crs(work))
    out = geometry.copy()
    out[is_point] = gpd.GeoSeries(regions, crs=work).to_crs(geometry.crs).values
    logger.info("%s: %d point cell(s) became Voronoi areas, clipped %.0f m beyond their hull",
                name, int(is_point.sum()), reach)
    return out, anchors


def _carve(regions: np.ndarray, xy: np.ndarray, polygons: gpd.GeoSeries) -> np.ndarray:
    """Point regions minus the polygon cells; a point inside a polygon cell keeps its whole
    region (the overlap is then reported, not hidden)."""
    shapes = np.asarray(polygons.values)
    region_idx, poly_idx = shapely.STRtree(shapes).query(regions, predicate="intersects")
    out = regions.copy()
    for i in np.unique(region_idx):
        cut = shapely.difference(regions[i], shapely.union_all(shapes[poly_idx[region_idx == i]]))
        if shapely.covers(cut, xy[i]):
            out[i] = cut
    return out


def units_frame(cell_ids: np.ndarray, pop: np.ndarray, points: np.ndarray, *,
                 crs: Any) -> gpd.GeoDataFrame:
    """The units frame with unit_id 0..k-1."""
    return gpd.GeoDataFrame({"unit_id": np.arange(len(pop), dtype=np.int64),
                             "cell_id": np.asarray(cell_ids, dtype=str),
                             "pop": np.asarray(pop, dtype=np.int64)}, geometry=points, crs=crs)


def _to_integers(counts: np.ndarray, *, name: str) -> np.ndarray:
    """Counts as int64; fractional ones rounded by largest remainder to the rounded total."""
    rounded = np.round(counts)
    if np.array_equal(rounded, counts):
        return rounded.astype(np.int64)
    exact = math.fsum(counts)
    total = math.floor(exact + 0.5)
    logger.info("%s: fractional counts (sum %.3f) rounded to integers by largest remainder; "
                "total %s (changed by %+.3f, under 1 per cell)", name, exact, f"{total:,}",
                total - exact)
    return largest_remainder(counts, total)


def largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integers summing to `total`, each floor(share) or one more; ties go to the lowest index."""
    base = np.floor(shares).astype(np.int64)
    short = int(total - base.sum())
    # Float error in the shares can only move the shortfall by a rounding hair; clip for safety.
    short = min(max(short, 0), len(shares))
    order = np.argsort(-(shares - base), kind="stable")
    base[order[:short]] += 1
    return base


def inner_points(geoms: np.ndarray) -> np.ndarray:
    """Centroids, or a point surely inside where the centroid falls outside (e.g. L shapes)."""
    if len(geoms) == 0:
        return np.empty(0, dtype=object)
    # shapely directly: planar centroids of small cells are fine in lon/lat and warn-free here.
    points = shapely.centroid(geoms)
    outside = ~shapely.contains(geoms, points)   # on the boundary (bow-tie centre) is outside
    points[outside] = shapely.point_on_surface(geoms[outside])
    return points


def _check_geometry(frame: gpd.GeoDataFrame, counts: np.ndarray, *, name: str) -> gpd.GeoSeries:
    """Raise on unusable geometries; repair invalid polygons (logged). Returns a 0..n-1 series."""
    geometry = frame.geometry.reset_index(drop=True)
    missing = (geometry.isna() | geometry.is_empty).to_numpy()
    if (missing & (counts > 0)).any():
        rows = list(frame.index[missing & (counts > 0)][:5])
        msg = f"{name}: rows {rows} have people but no geometry; fix or drop them."
        raise InputError(msg)
    types = geometry.geom_type.to_numpy()
    bad = ~missing & ~np.isin(types, _CELL_TYPES)
    if bad.any():
        msg = (f"{name}: geometry type(s) {sorted(set(types[bad]))} (rows "
               f"{list(frame.index[bad][:5])}) cannot be cells; use polygons or points "
               "(`.explode()` multi-points first).")
        raise InputError(msg)
    invalid = ~missing & ~geometry.is_valid.to_numpy()
    if invalid.any():
        geometry[invalid] = geometry[invalid].make_valid(method="structure", keep_collapsed=False)
        logger.info("%s: repaired %d invalid polygon(s)", name, int(invalid.sum()))
    return geometry
