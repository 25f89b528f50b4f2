"""Choosing the local metric CRS in which every distance, buffer and area is computed."""

from __future__ import annotations

import logging

import geopandas as gpd
import pyproj
from covplan.errors import CRSError
from shapely.geometry import box

logger = logging.getLogger(__name__)

WGS84 = pyproj.CRS.from_epsg(4326)


def local_metric_crs(bounds: tuple[float, float, float, float], crs: pyproj.CRS | str) -> pyproj.CRS:
    """
    The UTM zone CRS (metres) around `bounds`, given in `crs`.

    Raises
    ------
    CRSError
        If `crs` is None or the bounds are not finite.
    """
    if crs is None:
        msg = "cannot choose a metric CRS for data without a CRS; set one with `.set_crs(...)`."
        raise CRSError(msg)
    frame = gpd.GeoSeries([box(*bounds)], crs=crs)
    try:
        utm = frame.estimate_utm_crs()
    except (RuntimeError, ValueError) as exc:
        msg = f"cannot choose a metric CRS for bounds {bounds} in {pyproj.CRS(crs).to_string()}: {exc}"
        raise CRSError(msg) from exc
    logger.info("Working CRS: %s", utm.name)
    return utm
