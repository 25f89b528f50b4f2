"""Optional vector inputs: service-center sites, existing communities and district limits."""

from __future__ import annotations

import logging
import os
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from covplan._validate import (
    describe,
    require_columns,
    require_crs,
    require_file,
    require_not_empty,
    split_layer,
)
from covplan.errors import CoverageError, CRSError, DataSourceError, InputError

logger = logging.getLogger(__name__)

_ID_GUESSES = ("id", "fid", "code", "name")
# Coordinate columns of point tables (population and center CSVs), by priority, case-insensitive.
LON_NAMES = ("lon", "lng", "long", "longitude", "x")
LAT_NAMES = ("lat", "latitude", "y")
CSV_SUFFIXES = (".csv", ".csv.gz")
_CLI_INPUTS = ("population", "centers", "communities", "districts")   # each has a --flag


def cli_flag(what: str) -> str:
    """'--centers ' for the CLI's input `what` (population, centers, ...), for messages; ''
    for inputs the CLI does not take by a flag (e.g. a scenario's polygon file)."""
    return f"--{what} " if what in _CLI_INPUTS else ""


def find_column(table: pd.DataFrame, names: tuple[str, ...]) -> Any:
    """The first column whose lower-cased name is in `names`, by priority of `names`."""
    by_name = {str(c).lower(): c for c in reversed(table.columns)}
    return next((by_name[n] for n in names if n in by_name), None)


def read_csv_table(path: str | os.PathLike[str], *, name: str) -> pd.DataFrame:
    """A CSV file as a DataFrame; parse and encoding errors become DataSourceError."""
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError,
            OSError) as exc:
        msg = (f"cannot parse {name} as CSV: {' '.join(str(exc).split())}. Check that it is "
               "comma-separated text in UTF-8 with one header row (re-export it).")
        raise DataSourceError(msg) from exc


def table_points(table: pd.DataFrame, *, lon_column: Any = None, lat_column: Any = None,
                 crs: Any = "EPSG:4326", name: str,
                 missing: str = "no lon/lat columns") -> gpd.GeoDataFrame:
    """
    Points from a table's coordinate columns (lon/lng/longitude/x and lat/latitude/y unless
    named), the coordinate columns dropped; the one reader of point tables.

    Raises
    ------
    InputError
        If a coordinate column is missing or holds text, NaN or infinity.
    CRSError
        If `crs` is geographic but the values are not degrees (a projected table without crs=).
    """
    lon = lon_column if lon_column is not None else find_column(table, LON_NAMES)
    lat = lat_column if lat_column is not None else find_column(table, LAT_NAMES)
    if lon is None or lat is None:
        msg = (f"{name} has {missing}; it has {list(table.columns)}. Name the coordinate columns "
               "lon and lat (or longitude/latitude, x/y), or pass lon_column= and lat_column= "
               "(and crs= if they are not WGS84 degrees).")
        raise InputError(msg)
    require_columns(table, [lon, lat], name=name)
    x, y = _coordinates(table, lon, name=name), _coordinates(table, lat, name=name)
    frame = gpd.GeoDataFrame(table.drop(columns=[lon, lat]), geometry=gpd.points_from_xy(x, y),
                             crs=crs)
    outside = (np.abs(x) > 180).any() or (np.abs(y) > 90).any()
    if frame.crs is not None and frame.crs.is_geographic and outside:
        msg = (f"{name}: columns {lon!r}/{lat!r} hold values outside lon/lat degrees (x in "
               f"[{x.min():g}, {x.max():g}], y in [{y.min():g}, {y.max():g}]); pass crs= naming "
               "their projected CRS, or check the columns are not swapped.")
        raise CRSError(msg)
    return frame


def _coordinates(table: pd.DataFrame, column: Any, *, name: str) -> np.ndarray:
    """A coordinate column as float64, raising on text, NaN or infinity."""
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype="float64")
    bad = ~np.isfinite(values)
    if bad.any():
        msg = (f"{name}: coordinate column {column!r} has {int(bad.sum())} missing or non-numeric "
               f"value(s), e.g. rows {list(table.index[bad][:5])}; fix or drop those rows.")
        raise InputError(msg)
    return values


def read_layer(path: str | os.PathLike[str], *, layer: str | None, name: str,
               what: str) -> gpd.GeoDataFrame:
    """
    One layer of a vector file; a file with several layers needs `layer` (no first-layer guess).

    Raises
    ------
    InputError
        If several layers exist and none is named (the message lists them), or `layer` is absent.
    DataSourceError
        If GDAL cannot read the file.
    """
    text = os.fspath(path)
    try:
        layers = [str(row[0]) for row in pyogrio.list_layers(text)]
        if layer is None and len(layers) > 1:
            msg = (f"{name} has {len(layers)} layers {layers}; pick one as PATH:LAYER, e.g. "
                   f"{cli_flag(what)}'{text}:{layers[0]}' (or layer={layers[0]!r} in Python).")
            raise InputError(msg)
        if layer is not None and layer not in layers:
            msg = (f"{name} has no layer {layer!r}; its layers are {layers}. Pick one as "
                   f"PATH:LAYER (or layer= in Python).")
            raise InputError(msg)
        return gpd.read_file(text, layer=layer)
    except CoverageError:
        raise
    except Exception as exc:  # pyogrio, GDAL and SQLite raise many types for damaged files
        msg = (f"cannot read {name}: {exc}. Check that it is an intact GeoPackage, GeoJSON, "
               "Shapefile or FlatGeobuf (re-export or re-download it).")
        raise DataSourceError(msg) from exc


def read_vector(source: str | os.PathLike[str] | gpd.GeoDataFrame, *, what: str,
                layer: str | None = None, csv_points: dict[str, Any] | None = None
                ) -> gpd.GeoDataFrame:
    """
    Read any vector format GeoPandas reads (or take a GeoDataFrame), with a CRS and rows.

    `source` may be `PATH:LAYER`. A CSV is read as points when `csv_points` holds the
    `table_points` options (centers), else refused: polygon inputs need a vector format.
    """
    source, layer = split_layer(source, layer)
    if isinstance(source, gpd.GeoDataFrame):
        frame = source.copy()
    elif isinstance(source, pd.DataFrame):
        msg = f"{what}: got a DataFrame without geometry; pass a GeoDataFrame or a vector file."
        raise InputError(msg)
    elif os.fspath(source).lower().endswith(CSV_SUFFIXES):
        frame = _csv_points(source, what=what, layer=layer, options=csv_points)
    else:
        require_file(source, what=what)
        frame = read_layer(source, layer=layer, name=f"{what} file {describe(source)}", what=what)
    name = f"{what} {describe(source)}"
    require_not_empty(frame, name=name)
    require_crs(frame, name=name)
    empty = frame.geometry.isna() | frame.geometry.is_empty
    if empty.any():
        rows = list(frame.index[empty][:5])
        msg = f"{name} has {int(empty.sum())} row(s) without geometry (e.g. rows {rows}); remove or fix them."
        raise InputError(msg)
    return frame


def _csv_points(path: str | os.PathLike[str], *, what: str, layer: str | None,
                options: dict[str, Any] | None) -> gpd.GeoDataFrame:
    """A CSV input as points (for `read_vector`), or the error saying it must be a vector file."""
    name = f"{what} CSV {describe(path)}"
    require_file(path, what=what)
    if options is None:
        flag = cli_flag(what).strip()
        msg = (f"{name} is a table, but {what} must be polygons in a vector format. Convert it "
               "to a GeoPackage (e.g. `ogr2ogr out.gpkg in.csv -oo GEOM_POSSIBLE_NAMES=wkt "
               "-a_srs EPSG:4326`, or Export in QGIS) and pass that file"
               f"{f' to {flag}' if flag else ''}.")
        raise InputError(msg)
    if layer is not None:
        msg = f"{name}: a CSV has no layers, got layer {layer!r}; pass the path alone."
        raise InputError(msg)
    table = read_csv_table(path, name=name)
    require_not_empty(table, name=name)
    return table_points(table, name=name, **options)


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
                 id_column: str | None = None, layer: str | None = None,
                 from_polygons: bool = False, lon_column: str | None = None,
                 lat_column: str | None = None, crs: Any = "EPSG:4326") -> gpd.GeoDataFrame:
    """
    Service-center sites as points with a unique `center_id` (str); other columns are kept.

    `source` is a GeoDataFrame, a vector file (`PATH:LAYER` or `layer=` picks a layer of a
    multi-layer file) or a CSV with lon/lat columns (`lon_column`, `lat_column`, `crs` as in
    `Population.from_csv`). `id_column` names the id column; when None, `center_id`, `id`,
    `fid`, `code` or `name` is used if present, else ids S01, S02, ...

    Polygons are refused unless `from_polygons` is True (building footprints: each becomes its
    representative point, logged): a polygon layer given as centers is far more often the
    wrong layer (communities, districts) than a set of buildings.
    """
    options = {"lon_column": lon_column, "lat_column": lat_column, "crs": crs}
    frame = read_vector(source, what="centers", layer=layer, csv_points=options)
    name = f"centers {describe(source)}"
    column = id_column or ("center_id" if "center_id" in frame.columns else None)
    frame["center_id"] = _ids(frame, column, prefix="S", name=name)
    kinds = frame.geom_type
    if (kinds != "Point").any():
        areal = kinds.isin(["Polygon", "MultiPolygon"])
        if not (from_polygons and areal[kinds != "Point"].all()):
            found = sorted(set(kinds[kinds != "Point"]))
            msg = (f"{name} holds {found} geometries ({int((kinds != 'Point').sum())} of "
                   f"{len(frame)} rows); centers must be points. Check that this is the centers "
                   "layer (not communities or districts); for building footprints convert them "
                   "to points (QGIS: Point on Surface) or pass from_polygons=True in Python.")
            raise InputError(msg)
        logger.warning("%s: %d polygon center(s) replaced by their representative point", name,
                       int(areal.sum()))
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
               f"(e.g. rows {list(frame.index[wrong][:5])}). Check that this is the right "
               "file or layer (PATH:LAYER picks a layer of a multi-layer file).")
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
