"""Optional vector inputs: service-center sites, existing communities and district limits."""

from __future__ import annotations

import logging
import os

import geopandas as gpd
import pandas as pd
from covplan._validate import describe, require_crs, require_file, require_not_empty
from covplan.errors import DataSourceError, InputError

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

