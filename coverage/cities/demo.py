"""
The embedded demo city: a synthetic Jiayuguan with streets, a railway, districts and communities.

It is shaped like the real case (see CONTEXT.md): a compact city of about 6 km x 5 km with exactly
300,000 residents, a railway crossed at only four places, three districts and 69 old communities of
very uneven size (about 1,500 to 21,000 residents), each with one service center. The layers are
ordinary GeoDataFrames and an osmnx-style graph in EPSG:4326, as if freshly downloaded, so they flow
through the same loaders as real data. The city is laid out in metres in UTM zone 47N and moved to
lon/lat as the last step.
"""

from __future__ import annotations

import logging

import geopandas as gpd
import networkx as nx
import numpy as np
import shapely
from covplan.cities.city import City
from covplan.errors import InputError
from covplan.inputs.areas import label_units
from pyproj import Geod, Transformer
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import ndtri
from shapely.geometry import LineString, Polygon, box

__all__ = ["DemoCity", "build_demo_city", "demo_summary"]

logger = logging.getLogger(__name__)

WORK_CRS = "EPSG:32647"                 # UTM zone 47N, where Jiayuguan lies
TOTAL_POPULATION = 300_000              # exact, for every seed
N_COMMUNITIES = 69                      # the communities before the merger into 30
COMMUNITY_POP_RANGE = (1_500, 25_000)   # every community's residents fall in this range

# Layout happens in city coordinates: metres east and north of the south-west corner, which sits
# at _ORIGIN in WORK_CRS so that the middle of the city falls on 98.29 E, 39.80 N.
_ORIGIN = np.array([436_200.0, 4_403_300.0])
_WIDTH_M, _HEIGHT_M, CELL_M = 6_000.0, 5_000.0, 100.0
# Street nodes sit on a 75 m x 62.5 m lattice. A street runs along every second lattice line
# (local streets 150 m / 125 m apart), an arterial along every eighth (600 m / 500 m apart), so
# every block side has one node between its intersections.
_STEP_X, _STEP_Y, _N_X, _N_Y = 75.0, 62.5, 80, 80
_JITTER_M = 8.0                         # local nodes only; arterials stay straight
_UNBUILT_SHARE = 0.06                   # share of local block sides never built
_RAIL_ENDS = ((-500.0, 1_881.25), (6_500.0, 1_181.25))   # past the city edges, for the map
# The only streets across the railway, by lattice column, as (highway, OSM structure tag): a level
# crossing, a footbridge and two underpasses. At these columns the tracks pass mid-block.
_CROSSINGS = {16: ("primary", ""), 30: ("footway", "bridge"), 40: ("primary", "tunnel"),
              64: ("primary", "tunnel")}
_INDUSTRY = box(4_200.0, 0.0, 6_000.0, 900.0)          # steel works: no residents, arterials only
_PARKS = (box(2_600.0, 3_300.0, 2_900.0, 3_600.0), box(600.0, 3_900.0, 1_100.0, 4_400.0))
_CORE, _OLD_TOWN = (3_000.0, 3_100.0), (2_000.0, 900.0)  # the old town lies south of the tracks
# Homes stop at this ellipse (centre, semi-axes in metres); desert with a few roads lies beyond.
_FOOTPRINT_CENTER, _FOOTPRINT_AXES = np.array([3_000.0, 2_500.0]), np.array([2_900.0, 2_500.0])
_SIZE_SPREAD = 1.0                      # log-normal sigma of community sizes
_SIZE_NOISE = 0.8                       # how loosely large communities follow sparse blocks
_CENTER_OFFSET_M = (120.0, 400.0)       # how far a hall stands from its community's centroid
_DISTRICTS = (("D1", "Xiongguan"), ("D2", "Jingtie"), ("D3", "Changcheng"))
_NS_ARTERIALS = ("Xihuan Road", "Qilian Road", "Wenhua Road", "Jianshe Road", "Xinhua Road",
                 "Xiongguan Road", "Yingbin Road", "Jingtie Road", "Gangcheng Road",
                 "Fuqiang Road", "Donghuan Road")
_EW_ARTERIALS = ("Nanhuan Road", "Gongye Road", "Lanxin Road", "Zhanqian Road", "Shengli Road",
                 "Wuyi Road", "Changcheng Road", "Tiyu Road", "Heping Road", "Jiuquan Road",
                 "Beihuan Road")


DemoCity = City     # the name this module has always returned (one record for every city)


def build_demo_city(*, seed: int = 0) -> City:
    """
    Build the demo city: streets, railway, districts, population cells, communities and centers.

    Parameters
    ----------
    seed
        Seed of the one random generator; the same seed gives an identical city. The street grid,
        railway, crossings, districts and the total population are the same for every seed;
        the seed moves the street jitter, the missing streets, the cell counts, the community
        borders and the center sites.

    Returns
    -------
    City
        Every layer in EPSG:4326 (see `covplan.cities.city.City`), with 300,000 residents in 69
        communities ('C01'..'C69' with ``name`` and ``district_id``), their centers ('S01'..
        'S69', ``name``), three districts ('D1'..'D3') and the railway; no ``features``.

    Raises
    ------
    TypeError
        If `seed` is not an integer.
    InputError
        If `seed` is negative.

    Examples
    --------
    >>> city = build_demo_city(seed=0)
    >>> int(city.population["population"].sum()), len(city.communities)
    (300000, 69)
    """
    check_seed(seed)
    rng = np.random.default_rng(seed)
    rail = shapely.segmentize(LineString(_RAIL_ENDS), 50.0)   # short pieces reproject faithfully
    node_xy, edges = _streets(rng, rail)
    districts = _district_polygons()
    squares, cell_xy, cell_pop = _population(rng, rail)
    communities, cell_label, community_district = _communities(
        rng, districts, cell_xy, cell_pop, locate(districts, cell_xy), node_xy)
    center_nodes = choose_center_nodes(rng, communities, cell_xy, cell_pop, cell_label, node_xy)

    to_lonlat = Transformer.from_crs(WORK_CRS, "EPSG:4326", always_xy=True)
    node_lonlat = np.column_stack(to_lonlat.transform(*(node_xy + _ORIGIN).T))
    row, col = (cell_xy // CELL_M).astype(int).T[::-1]
    community_ids = [f"C{k + 1:02d}" for k in range(len(communities))]
    names = _community_names(community_district)
    city = City(
        graph=street_graph(node_lonlat, edges),
        population=_frame({"cell_id": [f"R{r:02d}C{c:02d}" for r, c in zip(row, col)],
                           "population": cell_pop}, squares),
        communities=_frame({"community_id": community_ids, "name": names,
                            "district_id": [_DISTRICTS[d][0] for d in community_district]},
                           communities),
        centers=gpd.GeoDataFrame(
            {"center_id": [f"S{k + 1:02d}" for k in range(len(communities))],
             "community_id": community_ids, "name": [f"{n} Service Center" for n in names]},
            geometry=shapely.points(node_lonlat[center_nodes]), crs="EPSG:4326"),
        districts=_frame({"district_id": [d for d, _ in _DISTRICTS],
                          "name": [n for _, n in _DISTRICTS]}, districts),
        railway=_frame({"name": ["Lanxin Railway"]}, [rail]),
        name="demo",
        work_crs=WORK_CRS,
        seed=int(seed),
    )
    logger.info("Built the demo city (seed %d): %d nodes, %d edges, %d cells, %d communities",
                seed, city.graph.number_of_nodes(), city.graph.number_of_edges(),
                len(city.population), len(city.communities))
    return city


def demo_summary(city: City) -> dict[str, int]:
    """
    Totals of a demo city, for reports and READMEs.

    A cell counts toward the community that contains its centroid, as in every later stage.

    Returns
    -------
    dict
        ``population``, ``cells``, ``communities``, ``community_pop_min``,
        ``community_pop_median``, ``community_pop_max``, ``districts``, ``centers``, ``nodes``,
        ``edges`` (directed, as osmnx counts them) and ``railway_crossings`` (street segments
        across the railway).
    """
    cells = city.population.to_crs(city.work_crs)
    points = gpd.GeoDataFrame({"population": cells["population"].to_numpy()},
                              geometry=cells.centroid, crs=city.work_crs)
    points["community_id"] = label_units(points, city.communities, id_column="community_id")
    sizes = points.groupby("community_id")["population"].sum()
    G = city.graph
    lonlat = {node: (data["x"], data["y"]) for node, data in G.nodes(data=True)}
    segments = shapely.linestrings([[lonlat[u], lonlat[v]] for u, v in G.edges() if u < v])
    return {
        "population": int(city.population["population"].sum()),
        "cells": len(city.population),
        "communities": len(city.communities),
        "community_pop_min": int(sizes.min()),
        "community_pop_median": int(sizes.median()),
        "community_pop_max": int(sizes.max()),
        "districts": len(city.districts),
        "centers": len(city.centers),
        "nodes": G.number_of_nodes(),
        "edges": G.number_of_edges(),
        "railway_crossings": int(shapely.intersects(segments, city.railway.union_all()).sum()),
    }


def check_seed(seed: int) -> None:
    """Accept only a non-negative integer: the city must be rebuilt exactly from it."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        msg = f"`seed` must be an int, got {type(seed).__name__} {seed!r}."
        raise TypeError(msg)
    if seed < 0:
        msg = f"`seed` must be 0 or greater, got {seed!r}."
        raise InputError(msg)


def _frame(columns: dict[str, list | np.ndarray], shapes: list) -> gpd.GeoDataFrame:
    """A GeoDataFrame in EPSG:4326 from shapes in city coordinates."""
    placed = shapely.transform(np.asarray(shapes, dtype=object), lambda xy: xy + _ORIGIN)
    return gpd.GeoDataFrame(columns, geometry=placed, crs=WORK_CRS).to_crs("EPSG:4326")


def _streets(rng: np.random.Generator, rail: LineString,
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """
    Street nodes (city coordinates) and undirected street edges, the main connected piece only.

    Edges come as equal-length arrays: ``u`` and ``v`` (rows of the node array), ``highway``,
    ``name``, ``osmid`` and ``structure`` ('tunnel', 'bridge' or '').
    """
    i, j = (a.ravel() for a in np.meshgrid(np.arange(_N_X + 1), np.arange(_N_Y + 1)))
    on_arterial = (i % 8 == 0) | (j % 8 == 0)         # lattice node k = j * (_N_X + 1) + i
    jitter = rng.uniform(-_JITTER_M, _JITTER_M, size=(i.size, 2)) * ~on_arterial[:, None]
    xy = np.column_stack([i * _STEP_X, j * _STEP_Y]) + jitter

    # East-west edges along every even row, north-south edges along every even column.
    ew_i, ew_j = (a.ravel() for a in np.meshgrid(np.arange(_N_X), np.arange(0, _N_Y + 1, 2)))
    ns_i, ns_j = (a.ravel() for a in np.meshgrid(np.arange(0, _N_X + 1, 2), np.arange(_N_Y)))
    u = np.concatenate([ew_j * (_N_X + 1) + ew_i, ns_j * (_N_X + 1) + ns_i])
    v = u + np.repeat([1, _N_X + 1], [ew_i.size, ns_i.size])
    north_south = np.repeat([False, True], [ew_i.size, ns_i.size])
    line = np.concatenate([ew_j, ns_i])               # the row or column the street follows
    block = np.concatenate([ew_i, ns_j]) // 2         # which block side along that street
    arterial = line % 8 == 0

    segments = shapely.linestrings(np.stack([xy[u], xy[v]], axis=1))
    to_rail = shapely.distance(segments, rail)
    crossing = shapely.intersects(segments, rail) & north_south & np.isin(line, list(_CROSSINGS))
    # Block sides never built are local and away from the tracks, so crossings keep their
    # approaches; the steel works have arterials only; other streets end 10 m short of the tracks.
    _, side = np.unique((north_south * 1_000 + line) * 1_000 + block, return_inverse=True)
    unbuilt = (rng.random(side.max() + 1) < _UNBUILT_SHARE)[side] & (to_rail > 150.0)
    in_industry = shapely.intersects_xy(_INDUSTRY, *xy.T)
    industry = in_industry[u] & in_industry[v]
    keep = ((to_rail > 10.0) | crossing) & (arterial | ~(unbuilt | industry))

    # Keep the main connected piece: every node must be able to reach every center.
    adjacency = coo_matrix((np.ones(keep.sum()), (u[keep], v[keep])), shape=(i.size, i.size))
    _, component = connected_components(adjacency, directed=False)
    in_main = component == np.bincount(component).argmax()
    keep &= in_main[u]
    row_of = np.cumsum(in_main) - 1                   # lattice node -> row among kept nodes

    highway, structure = np.array([_CROSSINGS[c] if x else ("", "")
                                   for c, x in zip(line, crossing)]).T
    footway = highway == "footway"
    names = [_street_name(ns, ln) for ns, ln in zip(north_south, line)]
    edges = {
        "u": row_of[u], "v": row_of[v],
        "highway": np.where(footway, "footway", np.where(arterial, "primary", "residential")),
        "name": np.where(footway, "Station Footbridge", names),
        "osmid": np.where(footway, 9_000 + line, 1_000 + 1_000 * north_south + line),
        "structure": structure,
    }
    return xy[in_main], {key: values[keep] for key, values in edges.items()}


def _street_name(north_south: bool, line: int) -> str:
    """Arterials have names; local lanes are numbered across the city."""
    if line % 8 == 0:
        return (_NS_ARTERIALS if north_south else _EW_ARTERIALS)[line // 8]
    return f"{'North' if north_south else 'East'} Lane {line // 2}"


def street_graph(node_lonlat: np.ndarray, edges: dict[str, np.ndarray]) -> nx.MultiDiGraph:
    """An osmnx-style MultiDiGraph: nodes 1..n in lon/lat, each street in both directions."""
    G = nx.MultiDiGraph(crs="EPSG:4326", created_with="covplan.cities.demo")
    degree = np.bincount(np.concatenate([edges["u"], edges["v"]]), minlength=len(node_lonlat))
    G.add_nodes_from((k + 1, {"x": float(x), "y": float(y), "street_count": int(n)})
                     for k, ((x, y), n) in enumerate(zip(node_lonlat, degree)))
    (lon_u, lat_u), (lon_v, lat_v) = node_lonlat[edges["u"]].T, node_lonlat[edges["v"]].T
    length = Geod(ellps="WGS84").inv(lon_u, lat_u, lon_v, lat_v)[2]
    for k, (a, b) in enumerate(zip(edges["u"] + 1, edges["v"] + 1)):
        data = {"osmid": int(edges["osmid"][k]), "highway": str(edges["highway"][k]),
                "name": str(edges["name"][k]), "oneway": False, "length": float(length[k])}
        if edges["structure"][k]:
            data[str(edges["structure"][k])] = "yes"
        G.add_edge(int(a), int(b), key=0, reversed=False, **data)
        G.add_edge(int(b), int(a), key=0, reversed=True, **data)
    return G


def _district_polygons() -> list[Polygon]:
    """The railway splits the city north/south; Xiongguan Road splits the north west/east."""
    city = box(0.0, 0.0, _WIDTH_M, _HEIGHT_M)
    (x0, y0), (x1, y1) = _RAIL_ENDS
    north = city.intersection(Polygon([(x0, y0), (x1, y1), (x1, 2 * _HEIGHT_M),
                                       (x0, 2 * _HEIGHT_M)]))
    middle = _NS_ARTERIALS.index("Xiongguan Road") * 8 * _STEP_X
    parts = [north.intersection(box(0.0, 0.0, middle, _HEIGHT_M)),
             north.intersection(box(middle, 0.0, _WIDTH_M, _HEIGHT_M)), city.difference(north)]
    # A vertex every 100 m keeps the borders of neighbours together once in lon/lat.
    return [shapely.segmentize(shapely.normalize(part), 100.0) for part in parts]


def locate(polygons: list[Polygon], xy: np.ndarray) -> np.ndarray:
    """Index of the polygon containing each point, -1 for none."""
    where = np.full(len(xy), -1)
    for k, polygon in enumerate(polygons):
        where[shapely.contains_xy(polygon, *xy.T)] = k
    return where


def _population(rng: np.random.Generator, rail: LineString,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Populated 100 m cells: squares, centroids and residents summing to TOTAL_POPULATION.

    Density falls from about 80,000/km2 in the core to about 3,000/km2 at the edge of a compact
    urban footprint (an ellipse; beyond it lies open desert with roads but no homes), with an old
    town south of the tracks. Parks, the steel works, the railway corridor and vacant lots are
    empty. No populated cell touches the railway, so each lies inside a single district.
    """
    col, row = (a.ravel() for a in np.meshgrid(np.arange(int(_WIDTH_M / CELL_M)),
                                               np.arange(int(_HEIGHT_M / CELL_M))))
    xy = (np.column_stack([col, row]) + 0.5) * CELL_M
    squares = shapely.box(*(xy - CELL_M / 2).T, *(xy + CELL_M / 2).T)
    core, old_town = np.hypot(*(xy - _CORE).T), np.hypot(*(xy - _OLD_TOWN).T)
    weight = (900 * np.exp(-(core / 1_100) ** 2) + 160 * np.exp(-core / 1_500)
              + 350 * np.exp(-(old_town / 750) ** 2) + 25)
    # Blocks differ from their neighbours; the cap keeps the densest cells below ~900 people.
    weight *= np.minimum(rng.lognormal(0.0, 0.3, size=len(xy)), 1.5)
    empty = (shapely.intersects(squares, rail.buffer(30.0)) | shapely.intersects(squares, _INDUSTRY)
             | np.any([shapely.contains_xy(park, *xy.T) for park in _PARKS], axis=0)
             | (rng.random(len(xy)) < 0.02)
             | ((((xy - _FOOTPRINT_CENTER) / _FOOTPRINT_AXES) ** 2).sum(axis=1) > 1.0))
    weight[empty] = 0.0
    pop = round_to_total(weight, TOTAL_POPULATION)
    kept = pop > 0
    return squares[kept], xy[kept], pop[kept]


def round_to_total(weight: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to `weight` summing to exactly `total` (largest remainders)."""
    share = weight / weight.sum() * total
    counts = np.floor(share).astype(np.int64)
    order = np.argsort(counts - share, kind="stable")  # largest remainder first, ties by index
    counts[order[: total - counts.sum()]] += 1
    return counts


def _communities(rng: np.random.Generator, districts: list[Polygon], cell_xy: np.ndarray,
                 cell_pop: np.ndarray, cell_district: np.ndarray, node_xy: np.ndarray,
                 ) -> tuple[list[Polygon], np.ndarray, np.ndarray]:
    """
    The 69 communities, shared among districts in proportion to their residents.

    Returns community polygons (by district, then north to south), the community of each cell
    and the district of each community.
    """
    district_pop = np.bincount(cell_district, weights=cell_pop, minlength=len(districts))
    polygons, cell_label, community_district = [], np.empty(len(cell_xy), dtype=np.int64), []
    for d, count in enumerate(round_to_total(district_pop, N_COMMUNITIES)):
        cells = np.flatnonzero(cell_district == d)
        regions, label = district_communities(rng, districts[d], cell_xy[cells], cell_pop[cells],
                                               count, node_xy)
        cell_label[cells] = label + len(polygons)
        polygons += regions
        community_district += [d] * count
    return polygons, cell_label, np.array(community_district)


def district_communities(rng: np.random.Generator, district: Polygon, xy: np.ndarray,
                          pop: np.ndarray, count: int, node_xy: np.ndarray,
                          ) -> tuple[list[Polygon], np.ndarray]:
    """
    `count` communities tiling `district`: compact power regions (weighted Voronoi) of seeds.

    Sizes follow a skewed spread, a few near 20,000 and many near 2,500. As in many Chinese
    cities, the old core is cut into small communities while outer estates were lumped into a
    few large ones, so large sizes go mostly to seeds in sparse blocks: those communities are
    wide and many of their residents live beyond a 15-minute walk. Power weights are tuned to
    the sizes and seeds moved to the middle of their regions a few times, which keeps regions
    compact. Power regions are convex, so each community is one polygon without holes. A layout
    with a size out of COMMUNITY_POP_RANGE or a community without a street node is redrawn.

    Returns the polygons, north to south, and the community of each cell.
    """
    lowest, highest = COMMUNITY_POP_RANGE
    for _ in range(20):
        weight = pop ** 0.5                            # seeds denser in the core, not too dense
        picked = rng.choice(len(xy), size=count, replace=False, p=weight / weight.sum())
        seeds = xy[picked] + rng.uniform(-30.0, 30.0, size=(count, 2))   # off the centroids
        target = np.empty(count)
        sparseness = -np.log(pop[picked]) + rng.normal(0.0, _SIZE_NOISE, size=count)
        target[np.argsort(sparseness)] = _target_sizes(pop.sum(), count)
        power = np.zeros(count)
        for _ in range(3):
            power = _power_weights(xy, pop, seeds, target, power)
            label = _power_label(xy, seeds, power)
            seeds = np.array([xy[label == k].mean(axis=0) if np.any(label == k) else seeds[k]
                              for k in range(count)])
        power = _power_weights(xy, pop, seeds, target, power)
        order = np.lexsort((seeds[:, 0], -seeds[:, 1]))   # ids run north to south
        seeds, power = seeds[order], power[order]
        label = _power_label(xy, seeds, power)
        size = np.bincount(label, weights=pop, minlength=count)
        polygons = [_power_region(k, seeds, power, district) for k in range(count)]
        if (lowest <= size.min() and size.max() <= highest
                and all(_inner_nodes(polygon, node_xy).size for polygon in polygons)):
            return polygons, label
    msg = f"found no layout of {count} communities with {COMMUNITY_POP_RANGE} residents each"
    raise RuntimeError(msg)   # a flaw in the demo's design, not in anyone's input


def _target_sizes(total: float, count: int) -> np.ndarray:
    """`count` ascending sizes summing to `total`: log-normal quantiles inside the range."""
    lowest, highest = COMMUNITY_POP_RANGE
    size = np.exp(_SIZE_SPREAD * ndtri((np.arange(count) + 0.5) / count))
    for _ in range(50):   # rescale, clip with a margin, repeat until it settles
        size = np.clip(size * total / size.sum(), 1.3 * lowest, 0.88 * highest)
    return size


def _power_label(xy: np.ndarray, seeds: np.ndarray, power: np.ndarray) -> np.ndarray:
    """The power region of each point: argmin over seeds of squared distance minus weight."""
    return np.argmin(((xy[:, None, :] - seeds[None, :, :]) ** 2).sum(axis=2) - power, axis=1)


def _power_weights(xy: np.ndarray, pop: np.ndarray, seeds: np.ndarray, target: np.ndarray,
                   power: np.ndarray) -> np.ndarray:
    """
    Power weights (m2), starting from `power`, under which each region holds about its target.

    Each step raises a weight by the region's shortfall over its density (people/m2), since
    growing a region by an area dA takes a weight change of the order of dA.
    """
    lowest, highest = COMMUNITY_POP_RANGE
    mean_density = pop.sum() / (len(xy) * CELL_M ** 2)
    squared = ((xy[:, None, :] - seeds[None, :, :]) ** 2).sum(axis=2)
    for step in range(1_000):
        label = np.argmin(squared - power, axis=1)
        size = np.bincount(label, weights=pop, minlength=len(seeds))
        # Whole cells (up to ~900 people) change region at once, hence the absolute slack.
        close = np.all(np.abs(size - target) <= 0.1 * target + 400)
        if close and lowest <= size.min() and size.max() <= highest:
            break
        area = np.bincount(label, minlength=len(seeds)) * CELL_M ** 2
        density = np.where(size > 0, size / np.maximum(area, 1.0), mean_density)
        # Shrinking steps: fixed ones would oscillate as cells jump between regions.
        power = power + 0.5 / (1 + step / 20) * (target - size) / density
    return power


def _power_region(k: int, seeds: np.ndarray, power: np.ndarray, district: Polygon) -> Polygon:
    """Seed `k`'s power region within `district`: the district cut by one half-plane per rival."""
    rivals = np.flatnonzero(np.arange(len(seeds)) != k)
    # |x - s_k|^2 - w_k <= |x - s_j|^2 - w_j  <=>  n . x <= c  with n = s_j - s_k.
    normal = seeds[rivals] - seeds[k]
    c = ((seeds[rivals] ** 2).sum(axis=1) - (seeds[k] ** 2).sum() - power[rivals] + power[k]) / 2
    norm = np.hypot(*normal.T)[:, None]
    unit = normal / norm
    foot = unit * c[:, None] / norm                    # the border's point nearest the origin
    # Far enough to span the district wherever it lies (a big metropolis reaches beyond the demo).
    far = 4 * max(_WIDTH_M, 2 * float(np.abs(district.bounds).max()))
    along = unit[:, ::-1] * [-1.0, 1.0] * far          # far along the border, both ways
    back = unit * far                                  # far into the kept side
    corners = np.stack([foot + along, foot - along, foot - along - back, foot + along - back],
                       axis=1)
    return shapely.normalize(shapely.intersection_all([*shapely.polygons(corners), district]))


def _inner_nodes(polygon: Polygon, node_xy: np.ndarray) -> np.ndarray:
    """Rows of the street nodes at least 5 m inside `polygon`, so they stay inside in lon/lat."""
    return np.flatnonzero(shapely.contains_xy(polygon.buffer(-5.0), *node_xy.T))


def choose_center_nodes(rng: np.random.Generator, communities: list[Polygon], cell_xy: np.ndarray,
                  cell_pop: np.ndarray, cell_label: np.ndarray, node_xy: np.ndarray) -> np.ndarray:
    """
    The street node of each community's service center.

    Halls went where a building was free, not to the optimum: each center takes the street node
    inside its community nearest a point 120-400 m from the population-weighted centroid.
    """
    rows = np.empty(len(communities), dtype=np.int64)
    for k, polygon in enumerate(communities):
        mine = cell_label == k
        centroid = np.average(cell_xy[mine], axis=0, weights=cell_pop[mine])
        angle, dist_m = rng.uniform(0.0, 2 * np.pi), rng.uniform(*_CENTER_OFFSET_M)
        site = centroid + dist_m * np.array([np.cos(angle), np.sin(angle)])
        inside = _inner_nodes(polygon, node_xy)        # never empty: checked with the layout
        rows[k] = inside[np.argmin(np.hypot(*(node_xy[inside] - site).T))]
    return rows


def _community_names(community_district: np.ndarray) -> list[str]:
    """Names numbered within each district, e.g. 'Jingtie Community 4'."""
    return [f"{_DISTRICTS[d][1]} Community {np.count_nonzero(community_district[:k + 1] == d)}"
            for k, d in enumerate(community_district)]
