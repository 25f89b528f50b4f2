"""Input checks shared by the public entry points. Each raises from the package's error tree."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from covplan.errors import CRSError, DataSourceError, InputError

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
