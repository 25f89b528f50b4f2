"""
The walk network: the OSM ways a pedestrian may use, as CSR arrays in a metric CRS.

Every source (OSM file, osmnx graph, GraphML, online download) goes through the same tag rules
(`_exclusion_reason`) and the same assembly (`_assemble`), so a city read from a file and the
same city downloaded with osmnx give comparable networks.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import pyproj
import shapely
from covplan._progress import progress_bar
from covplan._validate import describe, require_file, require_positive, require_projected
from covplan.defaults import DEFAULT_WALK_SPEED_KMH, MAX_WALK_SPEED_KMH
from covplan.errors import CRSError, DataSourceError, InputError
from covplan.inputs.crs import WGS84, local_metric_crs
from scipy import sparse
from scipy.sparse import csgraph

if TYPE_CHECKING:
    from shapely.geometry import Polygon

__all__ = ["DEFAULT_WALK_SPEED_KMH", "WalkNetwork", "as_walk_network", "load_network"]

logger = logging.getLogger(__name__)

MIN_ARC_LENGTH_M = 0.01  # zero-length arcs (duplicate coordinates) would vanish in scipy graphs
OSM_SUFFIXES = (".osm.pbf", ".pbf", ".osm", ".osm.xml", ".xml", ".osm.bz2", ".osm.gz")
GRAPHML_SUFFIXES = (".graphml",)

# Pedestrian tag rules, after osmnx's "walk" filter: a way needs a `highway` tag and none of the
# exclusions below; every other highway value (footway, steps, residential, track, ...) is kept.
EXCLUDED_HIGHWAY = frozenset({
    "abandoned", "bus_guideway", "construction", "cycleway", "escape", "motorway", "motorway_link",
    "no", "planned", "platform", "proposed", "raceway", "razed", "rest_area", "services",
})
_SEPARATE = frozenset({"separate"})
EXCLUDING_TAGS: Mapping[str, frozenset[str]] = {
    "area": frozenset({"yes"}),
    "foot": frozenset({"no", "private"}),
    "service": frozenset({"private"}),
    # A sidewalk mapped as its own footway: osmnx drops the carriageway so as not to walk it twice.
    "sidewalk": _SEPARATE, "sidewalk:both": _SEPARATE,
    "sidewalk:left": _SEPARATE, "sidewalk:right": _SEPARATE,
}
NO_ACCESS = frozenset({"private", "no"})  # closes a way unless a foot tag opens it again
FOOT_ALLOWED = frozenset({"yes", "designated", "permissive"})
_RULE_KEYS = ("highway", "access", *EXCLUDING_TAGS)


def _exclusion_reason(tags: Mapping[str, str]) -> str | None:
    """None if a pedestrian may use a way with these tags, else the rule excluding it."""
    highway = tags.get("highway")
    if highway is None:
        return "no highway tag"
    if highway in EXCLUDED_HIGHWAY:
        return f"highway={highway}"
    for key, values in EXCLUDING_TAGS.items():
        if tags.get(key) in values:
            return f"{key}={tags[key]}"
    if tags.get("access") in NO_ACCESS and tags.get("foot") not in FOOT_ALLOWED:
        return f"access={tags['access']}"
    return None


def _foot_directions(tags: Mapping[str, str]) -> tuple[bool, bool]:
    """(forward, backward) along the way; pedestrians ignore plain `oneway`, not foot-only tags."""
    oneway = tags.get("oneway:foot", "no")
    if oneway in ("yes", "true", "1") or tags.get("foot:backward") == "no":
        return True, False
    if oneway == "-1" or tags.get("foot:forward") == "no":
        return False, True
    return True, True


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: array fields don't compare to bool
class WalkNetwork:
    """
    A pedestrian network as CSR arcs (walkable directions) over nodes in a metric CRS.

    Each row of `edges` is a street segment between nodes `u` and `v`; it yields one arc per
    walkable direction, so an undirected network has two arcs per edge. `component` labels weakly
    connected components, 0 being the largest; smaller ones ("islands") are kept.
    """

    node_id: np.ndarray      # int64 (n,) OSM node ids; 0..n-1 when the source has none
    x: np.ndarray            # float64 (n,) metres in `crs`
    y: np.ndarray            # float64 (n,)
    indptr: np.ndarray       # int64 (n+1,) CSR offsets of the arcs leaving each node
    indices: np.ndarray      # int32 (m,) head node of each arc
    length_m: np.ndarray     # float64 (m,) arc length, >= MIN_ARC_LENGTH_M
    arc_edge: np.ndarray     # int64 (m,) row of `edges` each arc runs along
    edges: gpd.GeoDataFrame  # u, v (node indices), length_m, highway, name, geometry (u -> v)
    #                          in `crs`; `name` is the OSM street name ('' when none), Categorical
    crs: pyproj.CRS          # projected, metres: the working CRS
    component: np.ndarray    # int32 (n,) weak component, 0 = largest (ties: lowest node index)
    walk_speed_kmh: float = DEFAULT_WALK_SPEED_KMH
    directed: bool = False   # True only if some edge is walkable one way only
    source: str = ""         # path, place query or 'graph'

    def __post_init__(self) -> None:
        require_positive(self.walk_speed_kmh, name="walk_speed_kmh", upper=MAX_WALK_SPEED_KMH)
        require_projected(self.crs, name="WalkNetwork.crs")
        n, m = len(self.x), len(self.indices)
        if not (len(self.y) == len(self.node_id) == len(self.component) == n
                and len(self.indptr) == n + 1 and self.indptr[-1] == m
                and len(self.length_m) == len(self.arc_edge) == m):
            msg = (f"WalkNetwork arrays disagree in size: {n} nodes, indptr of {len(self.indptr)}, "
                   f"{m} arcs; build it with a `WalkNetwork.from_*` constructor.")
            raise InputError(msg)

    # ---- sizes and summaries -------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return len(self.x)

    @property
    def n_edges(self) -> int:
        """Number of edges (rows of `edges`), not arcs."""
        return len(self.edges)

    @property
    def speed_m_per_min(self) -> float:
        """Walking speed in metres per minute."""
        return self.walk_speed_kmh * 1000.0 / 60.0

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the nodes, in `crs`."""
        return (float(self.x.min()), float(self.y.min()), float(self.x.max()), float(self.y.max()))

    @property
    def component_sizes(self) -> np.ndarray:
        """Number of nodes per component label."""
        return np.bincount(self.component)

    @property
    def islands(self) -> pd.DataFrame:
        """One row per component but the largest: component, n_nodes, length_m, x, y (centroid)."""
        sizes = self.component_sizes
        k = len(sizes)
        edge_component = self.component[self.edges["u"].to_numpy()]
        length = np.bincount(edge_component, weights=self.edges["length_m"].to_numpy(), minlength=k)
        cx = np.bincount(self.component, weights=self.x, minlength=k) / sizes
        cy = np.bincount(self.component, weights=self.y, minlength=k) / sizes
        return pd.DataFrame({"component": np.arange(1, k), "n_nodes": sizes[1:],
                             "length_m": length[1:], "x": cx[1:], "y": cy[1:]})

    # ---- conversions ---------------------------------------------------------------------
    def csr_length(self) -> sparse.csr_matrix:
        """The n x n matrix of arc lengths in metres; of parallel arcs the shortest is kept."""
        tails = np.repeat(np.arange(self.n_nodes), np.diff(self.indptr))
        order = np.lexsort((self.length_m, self.indices, tails))
        t, h = tails[order], self.indices[order]
        first = np.r_[True, (t[1:] != t[:-1]) | (h[1:] != h[:-1])]
        keep = order[first]
        return sparse.csr_matrix((self.length_m[keep], (tails[keep], self.indices[keep])),
                                 shape=(self.n_nodes, self.n_nodes))

    def with_walk_speed(self, kmh: float) -> WalkNetwork:
        """A copy walking at `kmh` km/h (0 < kmh <= 30); the arrays are shared."""
        speed = require_positive(kmh, name="walk_speed_kmh", upper=MAX_WALK_SPEED_KMH)
        return dataclasses.replace(self, walk_speed_kmh=speed)

    def with_edges(self, *, drop: np.ndarray | None = None,
                   add: pd.DataFrame | None = None) -> WalkNetwork:
        """
        A new network without the edge rows `drop` and with the edges `add` (columns u, v,
        length_m, highway and optionally name and geometry, in this network's node indices and
        CRS; walkable both ways): a closed road, a new footbridge. Nodes left without an edge are
        dropped and components recomputed, as when the network was built.
        """
        tails = np.repeat(np.arange(self.n_nodes), np.diff(self.indptr))
        along = tails == self.edges["u"].to_numpy()[self.arc_edge]
        forward = np.zeros(self.n_edges, dtype=bool)
        backward = np.zeros(self.n_edges, dtype=bool)
        forward[self.arc_edge[along]] = True
        backward[self.arc_edge[~along]] = True
        keep = np.ones(self.n_edges, dtype=bool)
        if drop is not None:
            keep[np.asarray(drop, dtype=np.int64)] = False
        add = pd.DataFrame(columns=["u", "v", "length_m", "highway"]) if add is None else add
        new_geometry = (add["geometry"].to_numpy(dtype=object) if "geometry" in add
                        else np.full(len(add), None, dtype=object))
        new_name = np.array([_name_text(n) for n in add["name"]] if "name" in add
                            else [""] * len(add), dtype=object)
        both = np.ones(len(add), dtype=bool)
        return _assemble(
            node_id=self.node_id, x=self.x, y=self.y,
            u=np.concatenate([self.edges["u"].to_numpy()[keep], add["u"].to_numpy(dtype=np.int64)]),
            v=np.concatenate([self.edges["v"].to_numpy()[keep], add["v"].to_numpy(dtype=np.int64)]),
            length_m=np.concatenate([self.edges["length_m"].to_numpy()[keep],
                                     add["length_m"].to_numpy(dtype=np.float64)]),
            highway=np.concatenate([self.edges["highway"].to_numpy(dtype=object)[keep],
                                    add["highway"].to_numpy(dtype=object)]),
            name=np.concatenate([_edge_names(self.edges)[keep], new_name]),
            forward=np.concatenate([forward[keep], both]),
            backward=np.concatenate([backward[keep], both]),
            geometry=np.concatenate([self.edges.geometry.to_numpy()[keep], new_geometry]),
            crs=self.crs, walk_speed_kmh=self.walk_speed_kmh, source=self.source)

    def to_crs(self, crs: pyproj.CRS | str) -> WalkNetwork:
        """The network with nodes and edges in `crs` (projected, metres); lengths are kept."""
        target = _metric_crs(crs)
        if target == self.crs:
            return self
        transformer = pyproj.Transformer.from_crs(self.crs, target, always_xy=True)
        x, y = transformer.transform(self.x, self.y)
        return dataclasses.replace(self, x=np.asarray(x, dtype=np.float64),
                                   y=np.asarray(y, dtype=np.float64),
                                   edges=self.edges.to_crs(target), crs=target)

    def nodes_gdf(self) -> gpd.GeoDataFrame:
        """Nodes as points in `crs`, with columns node (index), node_id and component."""
        return gpd.GeoDataFrame(
            {"node": np.arange(self.n_nodes), "node_id": self.node_id, "component": self.component},
            geometry=gpd.points_from_xy(self.x, self.y), crs=self.crs)

    def to_networkx(self) -> nx.MultiDiGraph:
        """
        The network as an osmnx-style networkx graph, e.g. for osmnx or networkx algorithms.

        A MultiDiGraph, as osmnx builds: one directed edge per walkable direction (arc), so a
        two-way street is a pair of opposite edges, and parallel streets of different length
        are parallel edges.

        Returns
        -------
        networkx.MultiDiGraph
            Nodes keyed by `node_id` (OSM ids, or 0..n-1) with `x`, `y` in this network's CRS
            and `component`. Edges u -> v carry `length` (metres), `minutes` (walking time at
            `walk_speed_kmh`), `highway`, `name` (the street name, only when it has one, as
            osmnx does), `edge` (row of `edges`) and a LineString `geometry` running from u
            to v. Graph attributes: `crs` (this network's `crs`) and
            `walk_speed_kmh`. ``load_network(G, crs=net.crs)`` rebuilds an equal network
            (the same nodes, edges and lengths); a directed network comes back walkable both
            ways, as every graph does.
        """
        tails = np.repeat(np.arange(self.n_nodes), np.diff(self.indptr))
        heads = self.indices.astype(np.int64)
        u_of_edge = self.edges["u"].to_numpy()
        geoms = np.asarray(self.edges.geometry.values)[self.arc_edge]
        backward = tails != u_of_edge[self.arc_edge]   # arcs walking an edge from v to u
        geoms[backward] = shapely.reverse(geoms[backward])
        highway = self.edges["highway"].to_numpy(dtype=object)[self.arc_edge]
        names = _edge_names(self.edges)[self.arc_edge]
        minutes = self.length_m / self.speed_m_per_min
        ids = self.node_id.tolist()
        G = nx.MultiDiGraph(crs=self.crs, walk_speed_kmh=self.walk_speed_kmh)
        G.add_nodes_from((ids[i], {"x": float(self.x[i]), "y": float(self.y[i]),
                                   "component": int(self.component[i])})
                         for i in range(self.n_nodes))
        G.add_edges_from(
            (ids[t], ids[h], {"length": float(length), "minutes": float(mins), "highway": hw,
                              **({"name": name} if name else {}), "edge": int(e),
                              "geometry": geom})
            for t, h, length, mins, hw, name, e, geom in zip(
                tails, heads, self.length_m, minutes, highway, names, self.arc_edge, geoms,
                strict=True))
        return G

    # ---- constructors --------------------------------------------------------------------
    @classmethod
    def from_osm(cls, path: str | os.PathLike[str], *, crs: pyproj.CRS | str | None = None,
                 walk_speed_kmh: float = DEFAULT_WALK_SPEED_KMH,
                 progress: bool = False) -> WalkNetwork:
        """
        Read the walkable ways of an OSM file (.osm.pbf, .osm, .osm.xml, .osm.bz2, .osm.gz).

        Every node of a walkable way becomes a graph node and each pair of consecutive way nodes
        an edge (topology is not simplified). Segments touching nodes missing from the extract
        are dropped.

        Parameters
        ----------
        path
            The OSM file, read with pyosmium.
        crs
            Working CRS, projected in metres; None picks the local UTM zone.
        walk_speed_kmh
            Walking speed, 0 < speed <= 30.
        progress
            Show a progress bar over the ways.

        Raises
        ------
        DataSourceError
            If the file is missing, empty or cannot be parsed.
        InputError
            If it holds no walkable way, or the speed is out of range.
        CRSError
            If `crs` is not a projected CRS in metres.
        """
        require_positive(walk_speed_kmh, name="walk_speed_kmh", upper=MAX_WALK_SPEED_KMH)
        file = require_file(path, what="OSM")
        ways = _read_osm_ways(file, progress=progress)
        node_id, lon, lat, u, v, way = _osm_segments(ways)
        if len(u) == 0:
            raise _no_walkable(describe(path), ways["n_seen"], ways["excluded"], unit="way",
                               n_kept=len(ways["highway"]))
        work = _work_crs(crs, (lon.min(), lat.min(), lon.max(), lat.max()), WGS84)
        x, y = pyproj.Transformer.from_crs(WGS84, work, always_xy=True).transform(lon, lat)
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        return _assemble(node_id=node_id, x=x, y=y, u=u, v=v,
                         length_m=np.hypot(x[u] - x[v], y[u] - y[v]),
                         highway=ways["highway"][way], name=ways["name"][way],
                         forward=ways["forward"][way],
                         backward=ways["backward"][way], geometry=None, crs=work,
                         walk_speed_kmh=walk_speed_kmh, source=str(path))

    @classmethod
    def from_graphml(cls, path: str | os.PathLike[str], *, crs: pyproj.CRS | str | None = None,
                     walk_speed_kmh: float = DEFAULT_WALK_SPEED_KMH) -> WalkNetwork:
        """Read a GraphML file written by `osmnx.save_graphml`; see `from_graph` for the rules."""
        import osmnx as ox  # imported here: osmnx takes a second to import

        require_positive(walk_speed_kmh, name="walk_speed_kmh", upper=MAX_WALK_SPEED_KMH)
        file = require_file(path, what="GraphML")
        try:
            G = ox.load_graphml(file)
        except (SyntaxError, nx.NetworkXError, LookupError, ValueError, TypeError,
                AttributeError) as exc:  # SyntaxError covers ElementTree's ParseError
            msg = (f"cannot read GraphML file {describe(path)}: {exc}. Write it with "
                   "`osmnx.save_graphml(G, path)`, or pass an OSM .pbf/.osm file instead.")
            raise DataSourceError(msg) from exc
        return _network_from_graph(G, crs=crs, walk_speed_kmh=walk_speed_kmh, source=str(path))

    @classmethod
    def from_graph(cls, G: nx.Graph, *, crs: pyproj.CRS | str | None = None,
                   walk_speed_kmh: float = DEFAULT_WALK_SPEED_KMH) -> WalkNetwork:
        """
        Build the network from a networkx graph in osmnx convention.

        Nodes need `x`, `y` in `G.graph['crs']`. Edges may carry `length` (metres; else taken
        from the geometry), `geometry` (LineString, kept), `name` (the street name; a list,
        as osmnx gives for merged edges, is joined with " / ") and the tags `highway`, `foot`,
        `access`, ... filtered by the pedestrian rules; if no edge has `highway`, all are kept.
        `oneway` is ignored. Reverse duplicates collapse into one edge; unused nodes are dropped.

        Raises
        ------
        CRSError
            If `G.graph` has no 'crs', or `crs` is not projected in metres.
        InputError
            If nodes lack coordinates or no edge is walkable.
        """
        require_positive(walk_speed_kmh, name="walk_speed_kmh", upper=MAX_WALK_SPEED_KMH)
        return _network_from_graph(G, crs=crs, walk_speed_kmh=walk_speed_kmh, source="graph")

    @classmethod
    def from_place(cls, query: str | dict[str, str], *, crs: pyproj.CRS | str | None = None,
                   walk_speed_kmh: float = DEFAULT_WALK_SPEED_KMH) -> WalkNetwork:
        """Download the walk network of a geocodable place (osmnx); needs the internet."""
        return _download(lambda ox, **kw: ox.graph_from_place(query, **kw), f"place {query!r}",
                         crs=crs, walk_speed_kmh=walk_speed_kmh)

    @classmethod
    def from_bbox(cls, bbox: tuple[float, float, float, float], *,
                  crs: pyproj.CRS | str | None = None,
                  walk_speed_kmh: float = DEFAULT_WALK_SPEED_KMH) -> WalkNetwork:
        """Download the walk network in `bbox` = (west, south, east, north), degrees lon/lat."""
        return _download(lambda ox, **kw: ox.graph_from_bbox(tuple(bbox), **kw), f"bbox {bbox}",
                         crs=crs, walk_speed_kmh=walk_speed_kmh)

    @classmethod
    def from_polygon(cls, polygon: Polygon, *, crs: pyproj.CRS | str | None = None,
                     walk_speed_kmh: float = DEFAULT_WALK_SPEED_KMH) -> WalkNetwork:
        """Download the walk network inside `polygon` (lon/lat, EPSG:4326)."""
        return _download(lambda ox, **kw: ox.graph_from_polygon(polygon, **kw), "the polygon",
                         crs=crs, walk_speed_kmh=walk_speed_kmh)


def load_network(source: WalkNetwork | nx.Graph | str | os.PathLike[str], *,
                 crs: pyproj.CRS | str | None = None, walk_speed_kmh: float | None = None,
                 progress: bool = False) -> WalkNetwork:
    """
    Load a walk network from an OSM file, a GraphML file, a networkx graph or a WalkNetwork.

    Parameters
    ----------
    source
        A path (suffix .osm.pbf, .pbf, .osm, .osm.xml, .xml, .osm.bz2, .osm.gz or .graphml),
        an osmnx-style graph, or a WalkNetwork (returned, reprojected to `crs` if given).
    crs
        Working CRS, projected in metres; None picks the local UTM zone.
    walk_speed_kmh
        Walking speed; None means 4.5 km/h, or the speed a passed WalkNetwork already has.
    progress
        Show a progress bar while reading OSM files.

    Returns
    -------
    WalkNetwork
        The walkable network in the working CRS.

    Raises
    ------
    DataSourceError
        If the file is missing, unreadable or has an unknown suffix.
    TypeError
        If `source` is neither a path, a networkx graph nor a WalkNetwork.
    InputError
        If no edge or way is walkable, a node lacks coordinates, or the speed is out of range.
    CRSError
        If a graph has no CRS, or `crs` is not projected in metres.
    """
    if isinstance(source, WalkNetwork):
        net = source if crs is None else source.to_crs(crs)
        return net if walk_speed_kmh is None else net.with_walk_speed(walk_speed_kmh)
    speed = DEFAULT_WALK_SPEED_KMH if walk_speed_kmh is None else walk_speed_kmh
    if isinstance(source, nx.Graph):
        return WalkNetwork.from_graph(source, crs=crs, walk_speed_kmh=speed)
    if not isinstance(source, (str, os.PathLike)):
        msg = ("`source` must be a path, a networkx graph or a WalkNetwork, "
               f"got {type(source).__name__}.")
        raise TypeError(msg)
    name = Path(source).name.lower()
    if name.endswith(GRAPHML_SUFFIXES):
        return WalkNetwork.from_graphml(source, crs=crs, walk_speed_kmh=speed)
    if name.endswith(OSM_SUFFIXES):
        return WalkNetwork.from_osm(source, crs=crs, walk_speed_kmh=speed, progress=progress)
    msg = (f"cannot tell the format of network file {describe(source)} from its name; "
           f"accepted suffixes are {', '.join(OSM_SUFFIXES + GRAPHML_SUFFIXES)}. Rename the file "
           "or call WalkNetwork.from_osm / from_graphml directly.")
    raise DataSourceError(msg)


def as_walk_network(obj: WalkNetwork | nx.Graph) -> WalkNetwork:
    """
    The WalkNetwork for what an entry point was given: a WalkNetwork or an osmnx/networkx graph.

    Parameters
    ----------
    obj
        A WalkNetwork, returned unchanged, or a networkx graph in osmnx convention (node `x`,
        `y` in ``G.graph['crs']``), converted as `load_network` converts graphs: same tag
        rules, working CRS the local UTM zone, default walking speed.

    Returns
    -------
    WalkNetwork

    Raises
    ------
    TypeError
        If `obj` is neither; files and paths go through `load_network`.
    CRSError
        If the graph has no CRS.
    InputError
        If graph nodes lack coordinates or no edge is walkable.
    """
    if isinstance(obj, WalkNetwork):
        return obj
    if isinstance(obj, nx.Graph):
        return load_network(obj)
    msg = (f"`network` must be a WalkNetwork or a networkx/osmnx graph, got "
           f"{type(obj).__name__}; read files with `load_network(path)` first.")
    raise TypeError(msg)


# ---- OSM files -----------------------------------------------------------------------------
def _read_osm_ways(path: Path, *, progress: bool) -> dict[str, Any]:
    """Walkable ways as flat node sequences (ref, lon, lat, way index) and a tally of the rest."""
    import osmium

    refs: list[int] = []
    lons: list[float] = []
    lats: list[float] = []
    way_of: list[int] = []
    highway: list[str] = []
    names: list[str] = []
    directions: list[tuple[bool, bool]] = []
    excluded: Counter[str] = Counter()
    # Filters run after the location cache has seen every node, so only highway ways reach
    # Python and still carry their node coordinates.
    processor = (osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY)
                 .with_locations()
                 .with_filter(osmium.filter.EntityFilter(osmium.osm.WAY))
                 .with_filter(osmium.filter.KeyFilter("highway")))
    try:
        for way in progress_bar(processor, desc=f"Reading {path.name}", progress=progress):
            tags = dict(way.tags)
            reason = _exclusion_reason(tags)
            if reason is not None:
                excluded[reason] += 1
                continue
            for node in way.nodes:
                loc = node.location
                refs.append(node.ref)
                # A node outside the extract has no location: the way is split there.
                lons.append(loc.lon if loc.valid() else np.nan)
                lats.append(loc.lat if loc.valid() else np.nan)
            way_of.extend([len(highway)] * len(way.nodes))
            highway.append(tags["highway"])
            names.append(tags.get("name", ""))
            directions.append(_foot_directions(tags))
    except RuntimeError as exc:  # libosmium reports parse errors as RuntimeError
        msg = (f"cannot read OSM file {describe(path)}: {exc}. The file is damaged or not in OSM "
               "PBF/XML format; re-download or re-export it (`osmium fileinfo FILE` checks it).")
        raise DataSourceError(msg) from exc
    dirs = np.array(directions, dtype=bool).reshape(-1, 2)
    return {"ref": np.array(refs, dtype=np.int64), "lon": np.array(lons, dtype=np.float64),
            "lat": np.array(lats, dtype=np.float64), "way": np.array(way_of, dtype=np.int64),
            "highway": np.array(highway, dtype=object), "name": np.array(names, dtype=object),
            "forward": dirs[:, 0],
            "backward": dirs[:, 1], "excluded": excluded,
            "n_seen": len(highway) + sum(excluded.values())}


def _osm_segments(ways: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """Node ids, lon, lat, and the segments (u, v, way index) between consecutive way nodes."""
    ref, lon, lat, way = ways["ref"], ways["lon"], ways["lat"], ways["way"]
    located = np.isfinite(lon)
    seg = ((way[1:] == way[:-1]) & located[1:] & located[:-1] & (ref[1:] != ref[:-1])
           if len(ref) > 1 else np.zeros(0, dtype=bool))
    a, b = ref[:-1][seg], ref[1:][seg]
    node_id = np.unique(np.concatenate([a, b]))
    # Coordinates from any located occurrence of each id (all occurrences agree).
    ids, first = np.unique(ref[located], return_index=True)
    pos = np.searchsorted(ids, node_id)
    return (node_id, lon[located][first][pos], lat[located][first][pos],
            np.searchsorted(node_id, a), np.searchsorted(node_id, b), way[:-1][seg])


# ---- networkx graphs -----------------------------------------------------------------------
def _network_from_graph(G: nx.Graph, *, crs: pyproj.CRS | str | None, walk_speed_kmh: float,
                        source: str) -> WalkNetwork:
    """Validate an osmnx-style graph, filter its edges and assemble the network."""
    if not isinstance(G, nx.Graph):
        msg = f"expected a networkx graph, got {type(G).__name__}."
        raise TypeError(msg)
    where = "the graph passed in" if source == "graph" else f"'{source}'"
    src_crs = _graph_crs(G, where)
    integer_ids = all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in G)
    nodes = sorted(G.nodes) if integer_ids else list(G.nodes)
    index = {node: i for i, node in enumerate(nodes)}
    x_src, y_src = _graph_node_xy(G, nodes, where)

    edge_list = list(G.edges(data=True))
    check_tags = any("highway" in data for _, _, data in edge_list)
    kept: list[tuple[int, int, dict[str, Any]]] = []
    excluded: Counter[str] = Counter()
    for a, b, data in edge_list:
        reason = _graph_edge_exclusion(data) if check_tags else None
        if reason is not None:
            excluded[reason] += 1
        elif a != b:  # self-loops lead nowhere
            kept.append((index[a], index[b], data))
    if not kept:
        raise _no_walkable(where, len(edge_list), excluded, unit="edge")

    u = np.array([k[0] for k in kept], dtype=np.int64)
    v = np.array([k[1] for k in kept], dtype=np.int64)
    used = np.unique(np.concatenate([u, v]))
    bounds = (x_src[used].min(), y_src[used].min(), x_src[used].max(), y_src[used].max())
    work = _work_crs(crs, bounds, src_crs)
    x, y = pyproj.Transformer.from_crs(src_crs, work, always_xy=True).transform(x_src, y_src)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    geometry = _graph_geometries([k[2].get("geometry") for k in kept], src_crs, work,
                                 np.column_stack([x[u], y[u]]))
    length = np.array([_as_float(k[2].get("length")) for k in kept])
    fallback = np.where(pd.isna(geometry), np.hypot(x[u] - x[v], y[u] - y[v]),
                        shapely.length(geometry))
    length = np.where(np.isfinite(length) & (length >= 0), length, fallback)
    ones = np.ones(len(kept), dtype=bool)
    return _assemble(node_id=np.array(nodes, dtype=np.int64) if integer_ids else None,
                     x=x, y=y, u=u, v=v, length_m=length,
                     highway=np.array([_tag_text(k[2].get("highway")) for k in kept], dtype=object),
                     name=np.array([_name_text(k[2].get("name")) for k in kept], dtype=object),
                     forward=ones, backward=ones, geometry=geometry, crs=work,
                     walk_speed_kmh=walk_speed_kmh, source=source)


def _graph_crs(G: nx.Graph, where: str) -> pyproj.CRS:
    """The CRS stored in `G.graph['crs']`, as osmnx does."""
    value = G.graph.get("crs")
    if value is None:
        msg = (f"{where} has no CRS: osmnx graphs keep it in G.graph['crs']. Set it, e.g. "
               "G.graph['crs'] = 'EPSG:4326' when node x/y are lon/lat.")
        raise CRSError(msg)
    try:
        return pyproj.CRS.from_user_input(value)
    except pyproj.exceptions.CRSError as exc:
        msg = f"{where}: G.graph['crs'] = {value!r} is not a CRS pyproj understands ({exc})."
        raise CRSError(msg) from exc


def _graph_node_xy(G: nx.Graph, nodes: list[Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Node coordinates, raising on any node without finite numeric x and y."""
    xy = np.full((len(nodes), 2), np.nan)
    for i, node in enumerate(nodes):
        data = G.nodes[node]
        xy[i] = (_as_float(data.get("x")), _as_float(data.get("y")))
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        examples = [nodes[i] for i in np.flatnonzero(bad)[:5]]
        msg = (f"{where}: {int(bad.sum())} node(s) lack numeric 'x'/'y' attributes, "
               f"e.g. {examples}; osmnx-style graphs store each node's coordinates as x, y "
               "in G.graph['crs'].")
        raise InputError(msg)
    return xy[:, 0], xy[:, 1]


def _graph_edge_exclusion(data: Mapping[str, Any]) -> str | None:
    """`_exclusion_reason` for edge attributes; of listed values (simplified edges) any may pass."""
    scalar = {k: str(data[k]) for k in _RULE_KEYS
              if data.get(k) is not None and not isinstance(data[k], (list, tuple, set))}
    listed = [k for k in _RULE_KEYS if isinstance(data.get(k), (list, tuple, set)) and data[k]]
    reasons = [_exclusion_reason({**scalar, **dict(zip(listed, map(str, combo), strict=True))})
               for combo in itertools.product(*(sorted(map(str, data[k])) for k in listed))]
    return None if None in reasons else reasons[0]


def _graph_geometries(geoms: list[Any], src_crs: pyproj.CRS, work: pyproj.CRS,
                      start_xy: np.ndarray) -> np.ndarray:
    """Edge geometries in `work` (None where missing), each oriented to start at its node u."""
    out = np.full(len(geoms), None, dtype=object)
    has = np.array([isinstance(g, shapely.LineString) for g in geoms], dtype=bool)
    if has.any():
        projected = gpd.GeoSeries([g for g, h in zip(geoms, has, strict=True) if h],
                                  crs=src_crs).to_crs(work).to_numpy()
        starts = shapely.get_coordinates(shapely.get_point(projected, 0))
        ends = shapely.get_coordinates(shapely.get_point(projected, -1))
        flip = (np.hypot(*(ends - start_xy[has]).T) < np.hypot(*(starts - start_xy[has]).T))
        out[has] = np.where(flip, shapely.reverse(projected), projected)
    return out


# ---- online --------------------------------------------------------------------------------
def _download(fetch: Callable[..., nx.MultiDiGraph], what: str, *,
              crs: pyproj.CRS | str | None, walk_speed_kmh: float) -> WalkNetwork:
    """Run an osmnx download with the walk filter, wrapping network and geocoding failures."""
    import osmnx as ox

    require_positive(walk_speed_kmh, name="walk_speed_kmh", upper=MAX_WALK_SPEED_KMH)
    try:
        G = fetch(ox, network_type="walk", simplify=False, retain_all=True)
    except (OSError, ValueError) as exc:  # requests errors are OSErrors; osmnx's are ValueErrors
        msg = (f"could not download the walk network for {what} from OpenStreetMap: {exc}. "
               "Check the internet connection and the query, or load a downloaded .osm.pbf "
               "extract with WalkNetwork.from_osm.")
        raise DataSourceError(msg) from exc
    return _network_from_graph(G, crs=crs, walk_speed_kmh=walk_speed_kmh,
                               source=f"OpenStreetMap {what}")


# ---- assembly ------------------------------------------------------------------------------
def _assemble(*, node_id: np.ndarray | None, x: np.ndarray, y: np.ndarray, u: np.ndarray,
              v: np.ndarray, length_m: np.ndarray, highway: np.ndarray, forward: np.ndarray,
              backward: np.ndarray, geometry: np.ndarray | None, crs: pyproj.CRS,
              walk_speed_kmh: float, source: str, name: np.ndarray | None = None) -> WalkNetwork:
    """Deduplicate edges, drop unused nodes, build arcs and components, and log a summary."""
    length_m = np.maximum(np.asarray(length_m, dtype=np.float64), MIN_ARC_LENGTH_M)
    keep, forward, backward = _dedupe(u, v, length_m, forward, backward)
    u, v, length_m, highway = u[keep], v[keep], length_m[keep], highway[keep]
    name = (np.full(len(u), "", dtype=object) if name is None
            else np.asarray(name, dtype=object)[keep])
    used = np.unique(np.concatenate([u, v]))
    u, v = np.searchsorted(used, u), np.searchsorted(used, v)
    x, y = x[used], y[used]
    node_id = np.arange(len(used), dtype=np.int64) if node_id is None else node_id[used]

    straight = shapely.linestrings(np.stack([np.column_stack([x[u], y[u]]),
                                             np.column_stack([x[v], y[v]])], axis=1))
    if geometry is not None:
        geometry = geometry[keep]
        straight = np.where(pd.isna(geometry), straight, geometry)
    edges = gpd.GeoDataFrame({"u": u.astype(np.int64), "v": v.astype(np.int64),
                              "length_m": length_m, "highway": highway.astype(str),
                              # Categorical: a city has far fewer names than segments.
                              "name": pd.Categorical(name.astype(str))},
                             geometry=straight, crs=crs)

    tails = np.concatenate([u[forward], v[backward]])
    heads = np.concatenate([v[forward], u[backward]])
    arc_edge = np.concatenate([np.flatnonzero(forward), np.flatnonzero(backward)])
    order = np.lexsort((heads, tails))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(tails, minlength=len(used)))])
    net = WalkNetwork(node_id=node_id.astype(np.int64), x=x, y=y, indptr=indptr.astype(np.int64),
                      indices=heads[order].astype(np.int32), length_m=length_m[arc_edge[order]],
                      arc_edge=arc_edge[order].astype(np.int64), edges=edges, crs=crs,
                      component=_components(len(used), tails, heads),
                      walk_speed_kmh=float(walk_speed_kmh),
                      directed=not bool((forward & backward).all()), source=source)
    islands = net.islands
    logger.info("Walk network from %s: %d nodes, %d edges, %.1f km; %d island(s) apart from the "
                "main component, holding %d nodes", source, net.n_nodes, net.n_edges,
                length_m.sum() / 1000, len(islands), int(islands["n_nodes"].sum()))
    return net


def _dedupe(u: np.ndarray, v: np.ndarray, length_m: np.ndarray, forward: np.ndarray,
            backward: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Rows to keep (first of each group, in input order) and their merged walk directions.

    Edges joining the same two nodes with the same length (to the cm) are one edge: overlapping
    OSM ways, or an osmnx edge and its reverse. Parallel edges of different length stay.
    """
    flip = u > v
    lo, hi = np.where(flip, v, u), np.where(flip, u, v)
    # Directions relative to lo -> hi, so that reversed copies merge correctly.
    fwd, bwd = np.where(flip, backward, forward), np.where(flip, forward, backward)
    cm = np.round(length_m * 100).astype(np.int64)
    order = np.lexsort((np.arange(len(u)), cm, hi, lo))
    key = np.column_stack([lo, hi, cm])[order]
    starts = np.flatnonzero(np.r_[True, (key[1:] != key[:-1]).any(axis=1)])
    group_fwd = np.logical_or.reduceat(fwd[order], starts)
    group_bwd = np.logical_or.reduceat(bwd[order], starts)
    first = order[starts]
    by_input = np.argsort(first)
    keep = first[by_input]
    gf, gb = group_fwd[by_input], group_bwd[by_input]
    return keep, np.where(flip[keep], gb, gf), np.where(flip[keep], gf, gb)


def _components(n: int, tails: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """Weak component labels: 0 for the largest, ties going to the lowest node index."""
    graph = sparse.csr_matrix((np.ones(len(tails)), (tails, heads)), shape=(n, n))
    _, labels = csgraph.connected_components(graph, directed=True, connection="weak")
    sizes = np.bincount(labels)
    first = np.full(len(sizes), n)
    np.minimum.at(first, labels, np.arange(n))
    rank = np.empty(len(sizes), dtype=np.int32)
    rank[np.lexsort((first, -sizes))] = np.arange(len(sizes))
    return rank[labels]


# ---- small helpers -------------------------------------------------------------------------
def _no_walkable(where: str, n_seen: int, excluded: Counter[str], *, unit: str,
                 n_kept: int = 0) -> InputError:
    """The error for a source without a single walkable segment, saying what was seen."""
    if n_kept:
        msg = (f"no walkable ways found in {where}: its {n_kept} walkable way(s) lack the "
               "coordinates of their nodes; re-export the extract with complete ways "
               "(e.g. `osmium extract --strategy complete_ways`).")
    elif n_seen == 0:
        msg = (f"no walkable ways found in {where}: it holds no {unit} with a `highway` tag; pass "
               "an OpenStreetMap extract that includes streets and footpaths.")
    else:
        shown = ", ".join(f"{rule} ({count})" for rule, count in excluded.most_common(6))
        msg = (f"no walkable ways found in {where}: {n_seen} {unit}(s) with a `highway` tag seen, "
               f"all excluded for pedestrians: {shown}. Pass an extract that includes streets "
               "or footpaths.")
    return InputError(msg)


def _work_crs(crs: pyproj.CRS | str | None, bounds: tuple[float, float, float, float],
              source_crs: pyproj.CRS) -> pyproj.CRS:
    """`crs` checked as metric, or the local UTM zone of `bounds` (given in `source_crs`)."""
    if crs is None:
        return local_metric_crs(tuple(float(b) for b in bounds), source_crs)
    return _metric_crs(crs)


def _metric_crs(crs: pyproj.CRS | str) -> pyproj.CRS:
    """Parse `crs` and require it to be projected in metres."""
    try:
        out = pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError as exc:
        msg = f"`crs` {crs!r} is not a CRS pyproj understands ({exc}); pass e.g. 'EPSG:32723'."
        raise CRSError(msg) from exc
    require_projected(out, name="`crs`")
    return out


def _as_float(value: Any) -> float:
    """`value` as a float, NaN when missing or not numeric."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def _tag_text(value: Any) -> str:
    """A tag value as text; lists from simplified osmnx edges are joined with ';' as in OSM."""
    if isinstance(value, (list, tuple, set)):
        return ";".join(dict.fromkeys(map(str, value)))
    return "" if value is None else str(value)


def _name_text(value: Any) -> str:
    """A street name as text, '' when missing; osmnx lists (merged edges) joined with ' / '."""
    if isinstance(value, (list, tuple, set)):
        return " / ".join(dict.fromkeys(t for t in map(_name_text, value) if t))
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def _edge_names(edges: pd.DataFrame) -> np.ndarray:
    """The `name` column of an edge table as an object array of str ('' for tables without)."""
    if "name" not in edges:
        return np.full(len(edges), "", dtype=object)
    return edges["name"].astype(object).fillna("").to_numpy(dtype=object)
