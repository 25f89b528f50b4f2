"""Input checks shared by the public entry points. Each raises from the package's error tree."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import shapely
from covplan.errors import CRSError, DataSourceError, InputError
from covplan.inputs.crs import local_metric_crs

if TYPE_CHECKING:
    import geopandas as gpd
    import pyproj


def describe(source: object) -> str:
    """A short name for an input in messages: the path for files, the type otherwise."""
    if isinstance(source, (str, os.PathLike)):
        return f"'{os.fspath(source)}'"
    return f"the {type(source).__name__} passed in"


def require_file(path: str | os.PathLike[str], *, what: str) -> Path:
    """Return `path` as a Path if it names a readable, non-empty file (GDAL /vsi paths pass)."""
    text = os.fspath(path)
    if text.startswith("/vsi"):
        return Path(text)
    p = Path(text)
    if not p.exists():
        msg = f"{what} file '{text}' does not exist; check the path (relative paths start at {os.getcwd()})."
        raise DataSourceError(msg)
    if p.is_dir():
        msg = f"{what} '{text}' is a folder; pass the file inside it."
        raise DataSourceError(msg)
    if p.stat().st_size == 0:
        msg = f"{what} file '{text}' is empty (0 bytes); re-export or re-download it."
        raise DataSourceError(msg)
    return p


def split_layer(source: object, layer: str | None) -> tuple[object, str | None]:
    """
    (path, layer) from a `PATH:LAYER` string such as 'plan.gpkg:communities'; other sources pass.

    Splits on the last ':' only when the whole string names no file and the part before it
    does, so Windows drive letters ('C:\\data\\x.gpkg') and file names that really hold a ':'
    are left alone. A GDAL /vsi path is split when the part after the ':' holds no '/'.
    """
    if not isinstance(source, (str, os.PathLike)):
        return source, layer
    text = os.fspath(source)
    path, sep, named = text.rpartition(":")
    if not (sep and path and named) or Path(text).exists():
        return source, layer
    if text.startswith("/vsi") and ("/" in named or "\\" in named):
        return source, layer
    if not (text.startswith("/vsi") or Path(path).is_file()):
        return source, layer
    if layer is not None and layer != named:
        msg = (f"'{text}' names layer {named!r} but layer={layer!r} was also given; "
               "name the layer once, in PATH:LAYER or in layer=.")
        raise InputError(msg)
    return path, named


def require_crs(frame: gpd.GeoDataFrame, *, name: str) -> pyproj.CRS:
    """Return the CRS of `frame`, or raise if it has none."""
    if frame.crs is None:
        msg = (f"{name} has no CRS; set one with `.set_crs(...)` (e.g. 'EPSG:4326' for lon/lat) "
               "or fix the source file's .prj / metadata.")
        raise CRSError(msg)
    return frame.crs


def require_projected(crs: pyproj.CRS, *, name: str) -> None:
    """Raise unless `crs` is a projected CRS in metres."""
    unit = crs.axis_info[0].unit_name if crs.axis_info else ""
    if not crs.is_projected or unit not in ("metre", "meter"):
        msg = f"{name} must be in a projected CRS in metres, got {crs.to_string()!r}."
        raise CRSError(msg)


def require_columns(frame: pd.DataFrame, columns: Iterable[str], *, name: str) -> None:
    """Raise if `frame` lacks any of `columns`."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = [c for c in frame.columns if c != "geometry"]
        msg = f"{name} lacks column(s) {missing}; it has {have}."
        raise InputError(msg)


def require_not_empty(frame: pd.DataFrame, *, name: str) -> None:
    """Raise if `frame` has no rows."""
    if len(frame) == 0:
        msg = f"{name} has no rows; check the file, its layer name and any filter applied to it."
        raise InputError(msg)


def clean_counts(values: pd.Series, *, name: str, column: str) -> np.ndarray:
    """
    Return population counts as float64, raising on non-numeric, NaN, infinite or negative values.

    The message names up to five offending rows by their index so the user can find them.
    """
    numeric = pd.to_numeric(values, errors="coerce")
    bad_type = numeric.isna() & values.notna()
    if bad_type.any():
        rows = list(values.index[bad_type][:5])
        examples = list(values[bad_type][:5])
        msg = (f"{name}: column '{column}' holds non-numeric values {examples!r} (rows {rows}); "
               "population must be a number per row.")
        raise InputError(msg)
    arr = numeric.to_numpy(dtype="float64")
    nan = ~np.isfinite(arr)
    if nan.any():
        rows = list(values.index[nan][:5])
        msg = (f"{name}: column '{column}' has {int(nan.sum())} missing (NaN/empty) or infinite "
               f"value(s), e.g. rows {rows}; fill them (0 if nobody lives there) before loading.")
        raise InputError(msg)
    neg = arr < 0
    if neg.any():
        rows = list(values.index[neg][:5])
        msg = (f"{name}: column '{column}' has {int(neg.sum())} negative value(s), e.g. rows {rows} "
               f"(min {arr.min():g}); population counts cannot be negative. Replace no-data "
               "markers such as -9999 by 0 or fix the source.")
        raise InputError(msg)
    return arr


# No cell of any real grid holds a billion people: a larger count is a unit or column mix-up.
MAX_CELL_POP = 1e9
# Denser than 100,000 residents per km2 is above whole districts of the densest cities on record
# (Manila, Dhaka: ~70,000-130,000); likely a column or unit mix-up, but a block of towers can
# exceed it, hence a warning, not an error.
MAX_DENSITY_KM2 = 100_000
OVERLAP_SHARE = 0.01    # cells overlapping by more than 1% of the smaller one are reported


def require_countable(counts: np.ndarray, ids: np.ndarray, *, name: str, column: str,
                      raster: bool = False) -> None:
    """Raise if a count is too large (or infinite) to be a number of people in one cell."""
    huge = ~(counts <= MAX_CELL_POP)
    if huge.any():
        fix = ("that the raster holds residents per pixel, or pick another band with band="
               if raster else "that the column counts residents per cell (not a density, an "
               "area or a code), or pick another with --population-column (CLI) or "
               "population_column= (Python)")
        msg = (f"{name}: {column} has {int(huge.sum())} value(s) above {MAX_CELL_POP:g}, e.g. "
               f"{counts[huge][:5].tolist()} in cells {ids[huge][:5].tolist()}: no cell holds "
               f"that many people. Check {fix}.")
        raise InputError(msg)


def implausible_cells(cells: gpd.GeoDataFrame, *, name: str, overlaps: bool = True) -> list[str]:
    """
    Messages about populated cells that are usable but suspicious: denser than
    MAX_DENSITY_KM2, or (if `overlaps`) overlapping another populated cell by more than
    OVERLAP_SHARE of the smaller one (its residents may be counted twice).
    """
    populated = cells[cells["pop"].to_numpy() > 0]
    geoms = np.asarray(populated.geometry.values)
    if len(geoms) == 0:
        return []
    out = []
    crs = populated.crs
    if not crs.is_geographic and crs.axis_info:      # planar: areas in the CRS's own unit
        area_km2 = shapely.area(geoms) * crs.axis_info[0].unit_conversion_factor ** 2 / 1e6
    else:
        try:
            work = local_metric_crs(tuple(populated.total_bounds), crs)
        except CRSError as exc:
            raise CRSError(f"{name}: {exc}") from None
        area_km2 = populated.geometry.to_crs(work).area.to_numpy() / 1e6
    with np.errstate(divide="ignore", invalid="ignore"):
        density = populated["pop"].to_numpy() / area_km2
    dense = ~(density <= MAX_DENSITY_KM2)
    if dense.any():
        worst = np.argsort(-np.nan_to_num(density[dense], posinf=np.inf))[:5]
        examples = [f"{cid} ({d:,.0f}/km2)" for cid, d in
                    zip(populated["cell_id"].to_numpy()[dense][worst], density[dense][worst],
                        strict=True)]
        out.append(f"{name}: {int(dense.sum())} cell(s) are denser than {MAX_DENSITY_KM2:,} "
                   f"residents per km2, e.g. {', '.join(examples)}. Check that the column counts "
                   "residents per cell (not per km2 or per hectare) and that the CRS is right; "
                   "if the cells really are that dense, this warning can be ignored.")
    if overlaps:
        out += _overlaps(populated, geoms, name=name)
    return out


def _overlaps(cells: gpd.GeoDataFrame, geoms: np.ndarray, *, name: str) -> list[str]:
    """The overlap message of `implausible_cells` (empty when no cells overlap)."""
    polygonal = np.flatnonzero(np.isin(shapely.get_type_id(geoms), (3, 6)))
    shapes = geoms[polygonal]
    # Neighbours of a grid touch along edges, which is fine: shrink each cell by 0.1% about its
    # centroid so only cells whose interiors meet stay candidates (5x cheaper than relate or
    # a negative buffer on 10^5 cells); the overlap area decides below.
    xy, owner = shapely.get_coordinates(shapes, return_index=True)
    centre = shapely.get_coordinates(shapely.centroid(shapes))[owner]
    shrunk = shapely.set_coordinates(shapes.copy(), centre + (xy - centre) * (1 - 1e-3))
    a, b = shapely.STRtree(shapes).query(shrunk, predicate="intersects")
    pairs = np.unique(np.sort(np.column_stack([a, b])[a != b], axis=1), axis=0)
    if len(pairs) == 0:
        return []
    a, b = polygonal[pairs[:, 0]], polygonal[pairs[:, 1]]
    shared = shapely.area(shapely.intersection(geoms[a], geoms[b]))
    smaller = np.minimum(shapely.area(geoms[a]), shapely.area(geoms[b]))
    big = shared > OVERLAP_SHARE * smaller
    if not big.any():
        return []
    ids = cells["cell_id"].to_numpy()
    pairs = [f"{ids[i]} & {ids[j]} ({100 * s / m:.0f}% of the smaller)" for i, j, s, m in
             zip(a[big][:5], b[big][:5], shared[big][:5], smaller[big][:5], strict=True)]
    message = (f"{name}: {int(big.sum())} pair(s) of populated cells overlap, e.g. "
               f"{', '.join(pairs)}; residents in an overlap may be counted twice. Check for "
               "duplicated or stacked layers (e.g. two resolutions of one grid) and keep one "
               "set of non-overlapping cells.")
    return [message]


def require_positive(value: float, *, name: str, upper: float | None = None) -> float:
    """Raise unless `value` is a finite number > 0 (and <= `upper` when given)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        msg = f"`{name}` must be a number, got {value!r}."
        raise InputError(msg) from None
    if not np.isfinite(v) or v <= 0 or (upper is not None and v > upper):
        bound = f" and at most {upper:g}" if upper is not None else ""
        msg = f"`{name}` must be greater than 0{bound}, got {value!r}."
        raise InputError(msg)
    return v
