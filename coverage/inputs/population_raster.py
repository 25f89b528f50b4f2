"""
Cells from a counts-per-pixel GeoTIFF (WorldPop, GHS-POP): one per populated pixel, read in strips.

rasterio is the `raster` extra: it is imported only when a raster is read.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from covplan._validate import describe, require_file
from covplan.errors import CoverageError, CRSError, DataSourceError, InputError
from covplan.inputs.population_cells import assemble

__all__ = ["read_raster"]

# The population modules log under one name, the one users configured before they were split.
logger = logging.getLogger("covplan.inputs.population")

_RASTER_STRIP_PIXELS = 1 << 24  # read rasters in strips of ~16 M pixels to bound memory


def read_raster(cls: type, path: str | os.PathLike[str], *, band: int):
    """`Population.from_raster`: the populated pixels of `band` as box cells ``r{row}c{col}``."""
    require_file(path, what="population raster")
    name = f"population raster {describe(path)}"
    rasterio = _rasterio(name)
    try:
        with rasterio.open(os.fspath(path)) as src:
            _check_raster(src, band=band, name=name)
            rows, cols, values = _read_populated(src, band=band, name=name)
            transform, crs = src.transform, src.crs
    except CoverageError:   # ours, from the checks above (InputError is a ValueError too)
        raise
    # A damaged header can also fail in GDAL's error classes or while decoding the CRS text.
    except (rasterio.errors.RasterioError, rasterio._err.CPLE_BaseError, UnicodeDecodeError,
            ValueError) as exc:
        msg = f"cannot read {name}: {exc}. Check that it is an intact GeoTIFF."
        raise DataSourceError(msg) from exc
    if len(values) == 0:
        msg = f"{name} has no pixel with population > 0 in band {band}; check band= and nodata."
        raise InputError(msg)
    ids = np.char.add(np.char.add("r", rows.astype(str)), np.char.add("c", cols.astype(str)))
    geometry = gpd.GeoSeries(_pixel_boxes(transform, rows, cols), crs=crs.to_wkt())
    return assemble(cls, geometry, values, pd.Series(ids), source=os.fspath(path), name=name,
                    column=f"band {band}", raster=True)


def _check_raster(src: Any, *, band: int, name: str) -> None:
    """Raise unless the raster has a CRS and the band exists."""
    if src.crs is None:
        msg = f"{name} has no CRS; fix its georeferencing (e.g. `gdal_edit.py -a_srs EPSG:4326`)."
        raise CRSError(msg)
    whole = isinstance(band, (int, np.integer)) and not isinstance(band, bool)
    if not whole or not 1 <= band <= src.count:
        msg = f"`band` must be an int from 1 to {src.count} for {name}, got {band!r}."
        raise InputError(msg)


def _read_populated(src: Any, *, band: int, name: str) -> tuple[np.ndarray, ...]:
    """Rows, cols and values of pixels > 0, read in strips; raise on negative non-nodata pixels."""
    strip = max(1, _RASTER_STRIP_PIXELS // max(src.width, 1))
    rows, cols, values = [], [], []
    skipped = 0
    for top in range(0, src.height, strip):
        window = _rasterio("").windows.Window(0, top, src.width, min(strip, src.height - top))
        data = src.read(band, window=window, masked=True)
        # NaN counts as nodata: float rasters often mark the sea with NaN but declare nothing.
        pixels = np.ma.filled(data.astype("float64"), np.nan)
        negative = pixels < 0
        if negative.any():
            r, c = (int(v[0]) for v in np.nonzero(negative))
            msg = (f"{name}: band {band} has {int(negative.sum())} negative pixel(s) that are "
                   f"not nodata ({src.nodatavals[band - 1]}), e.g. {pixels[r, c]:g} at row "
                   f"{r + top}, col {c}; set the raster's nodata value to it (e.g. `gdal_edit.py "
                   "-a_nodata`) or fix the pixels.")
            raise InputError(msg)
        keep = pixels > 0
        skipped += int(keep.size - keep.sum())
        r, c = np.nonzero(keep)
        rows.append(r + top)
        cols.append(c)
        values.append(pixels[r, c])
    logger.info("%s: %d populated pixels; %d nodata or empty pixels skipped", name,
                sum(len(v) for v in values), skipped)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(values)


def _pixel_boxes(transform: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Pixel footprints through the affine transform (also right for rotated rasters)."""
    corner_col = cols[:, None] + np.array([0, 1, 1, 0, 0])
    corner_row = rows[:, None] + np.array([0, 0, 1, 1, 0])
    x = transform.a * corner_col + transform.b * corner_row + transform.c
    y = transform.d * corner_col + transform.e * corner_row + transform.f
    return shapely.polygons(np.stack([x, y], axis=-1))


def _rasterio(name: str):
    """rasterio, which only raster populations need (the `raster` extra)."""
    try:
        import rasterio
        import rasterio._err
        import rasterio.windows
    except ImportError as exc:
        msg = (f"reading {name or 'a population raster'} needs rasterio: "
               "pip install 'coverage-planner[raster]' (or give the population as vector cells, "
               "CSV or H3 ids).")
        raise InputError(msg) from exc
    return rasterio
