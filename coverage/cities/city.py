"""The record every built city returns: the demo, the synthetic cities and the metropolis."""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import networkx as nx

__all__ = ["City"]


@dataclass(frozen=True, slots=True, eq=False)   # eq=False: pandas fields don't compare to bool
class City:
    """
    A built city, every layer in EPSG:4326, as if freshly downloaded: it flows through the
    ordinary loaders.

    Attributes
    ----------
    graph
        osmnx-style walk graph: ``graph['crs'] == 'EPSG:4326'``; nodes have ``x`` (lon), ``y``
        (lat) and ``street_count``; edges have ``length`` (m), ``highway``, ``name``,
        ``osmid``, ``oneway`` and ``reversed``, and ``bridge``/``tunnel`` = 'yes' where the
        city has them. Every street is present in both directions.
    population
        Populated 100 m cells: ``cell_id`` ('R<row>C<col>', rows counted from the south,
        columns from the west), ``population`` (int), polygons.
    communities
        Existing communities: ``community_id`` ('C01', ...), and ``district_id`` when the city
        has districts; the demo adds ``name``, the synthetic cities and the metropolis
        ``population`` (residents of the cells whose centroid lies inside).
    centers
        One service center per community on a street node: ``center_id``, ``community_id``
        (the demo adds ``name``).
    districts
        ``district_id``, ``name`` and polygons, or None (a synthetic city without districts).
    name
        'demo', the synthetic kind ('river', ...) or 'metropolis'.
    work_crs
        The metric (UTM) CRS the city was laid out in.
    seed
        The seed the city was built from.
    railway
        The railway line, for maps: ``name`` (None: the city has none).
    features
        What shapes the city, for maps and tests: ``kind`` ('river', 'lake', 'island',
        'railway', 'park', ...), ``name``, shapes (None for the demo, whose railway is all).
    """

    graph: nx.MultiDiGraph
    population: gpd.GeoDataFrame
    communities: gpd.GeoDataFrame
    centers: gpd.GeoDataFrame
    districts: gpd.GeoDataFrame | None
    name: str
    work_crs: str
    seed: int
    railway: gpd.GeoDataFrame | None = None
    features: gpd.GeoDataFrame | None = None

    @property
    def residents(self) -> int:
        """Residents of the city (every built city's total is exact)."""
        return int(self.population["population"].sum())
