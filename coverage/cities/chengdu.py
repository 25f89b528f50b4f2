"""
Central Chengdu for the planner suite: the real OSM walking network of
``china/chengdu/chengdu_center_2018.osm.pbf`` (../shared/data; © OpenStreetMap contributors,
ODbL) with a synthetic population, since no population grid of it is shipped.

The population is an H3 resolution-9 grid (cells of about 0.1 km², a common grid of
population data) over the extract's ``<bounds>`` box, 1,000,000 residents by default: density
falling off with the distance from Tianfu Square (e-folding over `decay_km`) times seeded
log-normal noise per cell. The square lies 0.8 km inside the box's southern edge, so the north
of the box is the thin fringe (about a fifth of the south's density) and the mapping there is
sparse (SOURCES.md: 2,278 highway ways for 70 km², main roads mostly). What it stresses: a
real, irregular street network at a million residents, where many 15-minute circles gather
little more than the band's floor. A stress city, not a model of Chengdu's real residents.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
from covplan.cities.demo import round_to_total
from covplan.errors import InputError

__all__ = ["CHENGDU_BOUNDS", "CHENGDU_OSM", "chengdu_population"]

CHENGDU_OSM = "china/chengdu/chengdu_center_2018.osm.pbf"   # under ../shared/data
# The extract's <bounds> (lon/lat; SOURCES.md): ways reaching past it are kept whole, so the
# network extends beyond the box while residents are placed inside it only.
CHENGDU_BOUNDS = (104.0421, 30.6528, 104.1296, 30.7279)     # west, south, east, north
TIANFU_SQUARE = (104.0633, 30.6598)                          # lon, lat: the density peak
H3_RESOLUTION = 9


def chengdu_population(*, seed: int = 0, total: int = 1_000_000,
                       decay_km: float = 5.0, noise: float = 0.6) -> gpd.GeoDataFrame:
    """
    The synthetic population of the Chengdu suite city: H3 r9 cells (column ``h3``) whose
    centre lies inside `CHENGDU_BOUNDS`, with ``population`` (int, summing to `total` exactly)
    proportional to exp(-r / `decay_km`) x log-normal(0, `noise`) noise, r the distance from
    Tianfu Square. Same seed, same grid. EPSG:4326 polygons.

    Raises
    ------
    InputError
        If `total` is negative, or `decay_km` or `noise` is not a positive / non-negative number.
    """
    import h3
    from shapely.geometry import Polygon

    if total < 0 or not decay_km > 0 or not noise >= 0:
        msg = (f"chengdu_population: total must be >= 0, decay_km > 0 and noise >= 0 "
               f"(got {total}, {decay_km}, {noise}).")
        raise InputError(msg)
    west, south, east, north = CHENGDU_BOUNDS
    box = h3.LatLngPoly([(south, west), (south, east), (north, east), (north, west)])
    cells = sorted(h3.geo_to_cells(box, H3_RESOLUTION))
    lat, lon = np.array([h3.cell_to_latlng(c) for c in cells]).T
    lon0, lat0 = TIANFU_SQUARE
    east_km = (lon - lon0) * 111.32 * np.cos(np.radians(lat0))
    north_km = (lat - lat0) * 110.54
    rng = np.random.default_rng(seed)
    weight = np.exp(-np.hypot(east_km, north_km) / decay_km) * rng.lognormal(0.0, noise, len(cells))
    population = round_to_total(weight, total)
    shapes = [Polygon([(x, y) for y, x in h3.cell_to_boundary(c)]) for c in cells]
    return gpd.GeoDataFrame({"h3": cells, "population": population}, geometry=shapes,
                            crs="EPSG:4326")
