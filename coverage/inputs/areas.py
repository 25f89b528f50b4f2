"""Optional vector inputs: service-center sites, existing communities and district limits."""

from __future__ import annotations

import logging
import os

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from covplan._validate import (
    describe,
    require_columns,
    require_crs,
    require_file,
    require_not_empty,
)
from covplan.errors import CRSError, DataSourceError, InputError

logger = logging.getLogger(__name__)

_ID_GUESSES = ("id", "fid", "code", "name")


def read_vector(source: str | os.PathLike[str] | gpd.GeoDataFrame, *, what: str,
                layer: str | None = None) -> gpd.GeoDataFrame:
    """Read any vector format GeoPandas reads (or take a GeoDataFrame), with a CRS and rows."""
    if isinstance(source, gpd.GeoDataFrame):
        frame = source.copy()
    elif isinstance(source, pd.DataFrame):
        msg = f"{what}: got a DataFrame without geometry; pass a GeoDataFrame or a vector file."
        raise InputError(msg)
    else:
        require_file(source, what=what)
        try:
            frame = gpd.read_file(source, layer=layer)
        except Exception as exc:  # pyogrio raises several types for unreadable files
            msg = (f"{what} file {describe(source)} could not be read as a vector dataset "
                   f"({exc}); check that it is a GeoPackage, GeoJSON, Shapefile or similar.")
            raise DataSourceError(msg) from exc
    name = f"{what} {describe(source)}"
    require_not_empty(frame, name=name)
    require_crs(frame, name=name)
    empty = frame.geometry.isna() | frame.geometry.is_empty
    if empty.any():
        rows = list(frame.index[empty][:5])
        msg = f"{name} has {int(empty.sum())} row(s) without geometry (e.g. rows {rows}); remove or fix them."
        raise InputError(msg)
    return frame


def _ids(frame: gpd.GeoDataFrame, id_column: str | None, *, prefix: str, name: str) -> pd.Series:
    if id_column is not None:
        if id_column not in frame.columns:
            have = [c for c in frame.columns if c != "geometry"]
            msg = f"{name} lacks id column '{id_column}'; it has {have}."
            raise InputError(msg)
        ids = frame[id_column].astype(str)
    else:
        lower = {c.lower(): c for c in frame.columns}
        found = next((lower[g] for g in _ID_GUESSES if g in lower), None)
        ids = frame[found].astype(str) if found else pd.Series(
            [f"{prefix}{i + 1:02d}" for i in range(len(frame))], index=frame.index)
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        msg = f"{name} has duplicated ids {sorted(set(duplicated))[:5]}; ids must be unique."
        raise InputError(msg)
    return ids


def load_centers(source: str | os.PathLike[str] | gpd.GeoDataFrame, *,
                 id_column: str | None = None, layer: str | None = None) -> gpd.GeoDataFrame:
    """
    Service-center sites as points with a unique `center_id` (str); other columns are kept.

    `id_column` names the id column; when None, `center_id`, `id`, `fid`, `code` or `name` is used
    if present, else ids S01, S02, ... Polygons (a building footprint) become their
    representative point.
    """
    frame = read_vector(source, what="centers", layer=layer)
    name = f"centers {describe(source)}"
    column = id_column or ("center_id" if "center_id" in frame.columns else None)
    frame["center_id"] = _ids(frame, column, prefix="S", name=name)
    kinds = set(frame.geom_type)
    if kinds - {"Point"}:
        if kinds & {"LineString", "MultiLineString"}:
            msg = f"{name} holds lines; centers must be points (or building polygons)."
            raise InputError(msg)
        frame = frame.set_geometry(frame.geometry.representative_point())
    return frame.reset_index(drop=True)


def load_communities(source: str | os.PathLike[str] | gpd.GeoDataFrame, *,
                     id_column: str | None = None, layer: str | None = None) -> gpd.GeoDataFrame:
    """Existing communities as polygons with a unique `community_id` (str); other columns kept."""
    return _load_polygons(source, what="communities", id_name="community_id", prefix="C",
                          id_column=id_column, layer=layer)


def load_districts(source: str | os.PathLike[str] | gpd.GeoDataFrame, *,
                   id_column: str | None = None, layer: str | None = None) -> gpd.GeoDataFrame:
    """District limits (polygons a community may not cross) with a unique `district_id` (str)."""
    return _load_polygons(source, what="districts", id_name="district_id", prefix="D",
                          id_column=id_column, layer=layer)


def _load_polygons(source, *, what: str, id_name: str, prefix: str, id_column: str | None,
                   layer: str | None) -> gpd.GeoDataFrame:
    frame = read_vector(source, what=what, layer=layer)
    name = f"{what} {describe(source)}"
    column = id_column or (id_name if id_name in frame.columns else None)
    frame[id_name] = _ids(frame, column, prefix=prefix, name=name)
    _require_polygons(frame, name)
    return frame.reset_index(drop=True)


def _require_polygons(frame: gpd.GeoDataFrame, name: str) -> None:
    wrong = ~frame.geom_type.isin(["Polygon", "MultiPolygon"])
    if wrong.any():
        msg = (f"{name} must hold polygons; found {sorted(set(frame.geom_type[wrong]))} "
               f"(e.g. rows {list(frame.index[wrong][:5])}).")
        raise InputError(msg)



def label_units(points: gpd.GeoDataFrame | gpd.GeoSeries,
                polygons: gpd.GeoDataFrame | gpd.GeoSeries, *,
                id_column: str | None = None) -> np.ndarray:
    """
    The polygon each point lies in: the one point-in-polygon rule of the package.

    Every labelling of points by areas (units or centers by communities, units or candidate
    sites by districts) goes through here, so the as-is report and the planner agree on
    every unit, including one on a shared border.

    Parameters
    ----------
    points
        Point geometries (null or empty ones lie in no polygon).
    polygons
        Polygons, reprojected to the CRS of `points` when it differs.
    id_column
        A column of `polygons`; when given, return its values instead of positions.

    Returns
    -------
    numpy.ndarray
        Per point, in the order of `points`: the row position (int64) in `polygons` of the
        polygon containing it, boundary included, or -1 in none. A point on a border shared
        by several polygons, or in an overlap, gets the first of them in `polygons`' order.
        With `id_column`, the value of that column (object array), None in none.

    Raises
    ------
    CRSError
        If one input has a CRS and the other has none.
    InputError
        If `points` holds other geometries than points, or `id_column` is missing.
    """
    pts = points.geometry
    shapes = polygons.geometry
    if id_column is not None:
        if not isinstance(polygons, gpd.GeoDataFrame):
            msg = f"id_column '{id_column}' needs polygons as a GeoDataFrame, got a GeoSeries."
            raise InputError(msg)
        require_columns(polygons, [id_column], name="polygons")
    kinds = set(pts.dropna().geom_type) - {"Point"}
    if kinds:
        msg = f"label_units labels points; got {sorted(kinds)} (use a representative point)."
        raise InputError(msg)
    if (pts.crs is None) != (shapes.crs is None):
        msg = (f"points and polygons must both have a CRS or both have none; got "
               f"{pts.crs!r} and {shapes.crs!r}.")
        raise CRSError(msg)
    if shapes.crs is not None and shapes.crs != pts.crs:
        shapes = shapes.to_crs(pts.crs)
    point_idx, polygon_idx = shapely.STRtree(np.asarray(shapes.values)).query(
        np.asarray(pts.values), predicate="intersects")   # intersects: the boundary counts
    # Ties go to the first polygon in input order: unlike a sort by id it is defined for any
    # ids (absent, mixed types, "C10" sorting before "C2"), the caller controls it, and it is
    # what the position-based callers (planner, districts) need without a second lookup.
    label = np.full(len(pts), len(shapes), dtype=np.int64)
    np.minimum.at(label, point_idx, polygon_idx)
    label[label == len(shapes)] = -1
    if id_column is None:
        return label
    ids = np.full(len(label), None, dtype=object)
    inside = label >= 0
    ids[inside] = polygons[id_column].to_numpy(dtype=object)[label[inside]]
    return ids
