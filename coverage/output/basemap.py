"""
A light vector base map built from the walk network itself, for maps that open offline.

Offline, a map's tiles fail and the city is a grey sheet. `base_layer` gives the map its own
reference drawing instead: the main streets of the network (merged and thinned to a few metres)
and, when given, railways, rivers and water areas, all small enough to embed in the HTML file.
`covplan.output.maps.plan_map(plan, base=...)` draws it under every other layer.

The walk network keeps each street's `highway` class and OSM `name` (see
`covplan.inputs.network.WalkNetwork.edges`), so streets are merged per class and name and the
map can label the main ones; features keep their names too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import shapely
from covplan.errors import InputError
from covplan.inputs.crs import WGS84

if TYPE_CHECKING:
    from covplan.inputs.network import WalkNetwork

__all__ = ["MAIN_STREETS", "base_layer"]

# Street classes drawn, most important first; `_link` ramps draw as their road.
MAIN_STREETS = ("trunk", "primary", "secondary", "tertiary")
RESIDENTIAL = "residential"
COORDINATE_STEP_DEG = 1e-5           # about one metre, as the maps round every layer


def base_layer(network: WalkNetwork, *, features: gpd.GeoDataFrame | None = None,
               simplify_m: float = 4.0, max_residential_km: float = 150.0) -> gpd.GeoDataFrame:
    """
    The main streets of `network`, and optional railways and water, as a light map layer.

    Streets are the edges whose `highway` is trunk, primary, secondary or tertiary (or their
    ``_link``), plus the residential streets when they are few (at most `max_residential_km`
    in all). The edges of each class and street name are joined into lines (shapely
    ``line_merge``) and thinned by `simplify_m` metres, so a city's streets take a few hundred
    kB at most.

    Parameters
    ----------
    network
        The walk network, e.g. from `covplan.inputs.network.load_network`.
    features
        Optional railways, rivers and water areas to draw too: a GeoDataFrame in any CRS with
        a ``kind`` column (e.g. 'railway', 'river', 'lake', 'water', 'park') and optionally a
        ``name``, shown as a label on the map. The demo city's ``railway`` frame qualifies with
        ``city.railway.assign(kind="railway")``; a synthetic city's ``features`` as they are.
    simplify_m
        Tolerance of the line thinning, in metres (0 keeps every vertex).
    max_residential_km
        Residential streets are drawn only when their total length is at most this; a large
        city's residential grid would bury the main streets and swell the file.

    Returns
    -------
    geopandas.GeoDataFrame
        In EPSG:4326, one row per street class and name, and per feature: ``kind`` (the
        street class, e.g. 'primary', or the feature's kind), ``name`` (the OSM name; '' for
        unnamed streets and for networks built without names), ``street`` (True for streets)
        and ``geometry``. Streets come after features, main classes last, so drawing in row
        order puts them on top.

    Raises
    ------
    InputError
        If `features` has no ``kind`` column or `simplify_m` is negative.

    Examples
    --------
    >>> from covplan.cities.demo import build_demo_city
    >>> from covplan.inputs.network import load_network
    >>> city = build_demo_city(seed=0)
    >>> base = base_layer(load_network(city.graph), features=city.railway.assign(kind="railway"))
    >>> sorted(set(base["kind"]))
    ['primary', 'railway']
    """
    if not simplify_m >= 0:
        msg = f"simplify_m must be 0 or more metres, got {simplify_m!r}."
        raise InputError(msg)
    rows: list[tuple[str, str, bool, object]] = []
    if features is not None and len(features):
        rows += _feature_rows(features, network.crs, simplify_m)
    rows += _street_rows(network, simplify_m, max_residential_km)
    frame = gpd.GeoDataFrame({"kind": [r[0] for r in rows], "name": [r[1] for r in rows],
                              "street": np.array([r[2] for r in rows], dtype=bool)},
                             geometry=[r[3] for r in rows], crs=network.crs).to_crs(WGS84)
    shapes = shapely.set_precision(frame.geometry.values, COORDINATE_STEP_DEG)
    frame = frame.set_geometry(shapes)
    return frame[~frame.geometry.is_empty].reset_index(drop=True)


def _street_class(highway: np.ndarray) -> np.ndarray:
    """The drawn class of each edge's `highway` ('' when not drawn); 'a;b' takes the highest."""
    ranked = (*MAIN_STREETS, RESIDENTIAL)
    out = np.full(len(highway), "", dtype=object)
    for value in np.unique(highway):
        tags = [t.strip().removesuffix("_link") for t in str(value).split(";")]
        best = min((ranked.index(t) for t in tags if t in ranked), default=None)
        if best is not None:
            out[highway == value] = ranked[best]
    return out


def _street_rows(network: WalkNetwork, simplify_m: float, max_residential_km: float) -> list:
    edges = network.edges
    classes = _street_class(edges["highway"].to_numpy(dtype=str))
    length = edges["length_m"].to_numpy(dtype=float)
    if length[classes == RESIDENTIAL].sum() > max_residential_km * 1000:
        classes[classes == RESIDENTIAL] = ""
    geoms = edges.geometry.to_numpy()
    names = (edges["name"].astype(object).fillna("").to_numpy(dtype=object).astype(str)
             if "name" in edges else np.full(len(edges), "", dtype=object))
    rows = []
    for kind in (RESIDENTIAL, *MAIN_STREETS[::-1]):     # residential first: drawn underneath
        drawn = classes == kind
        for name in np.unique(names[drawn]):            # one row per (class, name)
            mine = geoms[drawn & (names == name)]
            merged = shapely.line_merge(shapely.multilinestrings(list(mine)))
            rows.append((kind, str(name), True,
                         merged.simplify(simplify_m, preserve_topology=False)))
    return rows


def _feature_rows(features: gpd.GeoDataFrame, crs, simplify_m: float) -> list:
    if "kind" not in features.columns:
        msg = ("features need a 'kind' column (e.g. 'railway', 'river', 'lake') to be drawn; "
               "add one, e.g. city.railway.assign(kind='railway').")
        raise InputError(msg)
    frame = features[features.geometry.notna() & ~features.geometry.is_empty]
    frame = frame.to_crs(crs)
    names = (frame["name"].fillna("").astype(str) if "name" in frame.columns
             else np.full(len(frame), ""))
    shapes = frame.geometry.simplify(simplify_m, preserve_topology=True)
    return [(str(kind), str(name), False, shape)
            for kind, name, shape in zip(frame["kind"], names, shapes, strict=True)]
