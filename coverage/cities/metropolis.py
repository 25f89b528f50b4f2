"""
A synthetic metropolis of any size, for the scale benchmark and `covplan demo --residents N`.

The city is built like the synthetic cities, on their frame (`covplan.cities.lattice`): streets
on a jittered lattice (local streets 125 m apart, arterials every 500 m), populated 100 m cells,
uneven existing communities with one service center each, every layer in EPSG:4326. What makes it a metropolis:

- Its size: N residents on an elliptic footprint of N / `DENSITY_PER_KM2` km², so the area, the
  streets and the cells grow in proportion to N. The density is São Paulo centre's: the 517,570
  residents of ``sao_paulo/spo_hexgrid.csv`` live on 34.28 km² of H3 cells (see
  ../shared/data/SOURCES.md), 15,098 per km². (Dividing by the whole OSM extract, 187 km²,
  would count the streets around the grid, where that file has no residents.)
- Districts of about 400,000 residents whose limits follow the arterials (so no populated cell
  is cut), each with a local centre; a dense core (up to ~80,000 per km²) and a sparser fringe
  (~5,000 per km²), like the quartiles of the São Paulo cells.
- A river meandering west to east, crossed by a bridge every 3 km only, and a railway from
  south-west to north-east crossed by an underpass every 2 km only.

Everything scales with numpy arrays; the only per-item Python loops are per street edge (the
networkx graph) and per community. Built in metres around the middle and moved to lon/lat last,
at São Paulo (UTM 23S).
"""

from __future__ import annotations

import logging

import geopandas as gpd
import numpy as np
import shapely
import shapely.affinity
from covplan.cities.city import City
from covplan.cities.demo import (
    CELL_M,
    check_seed,
    choose_center_nodes,
    district_communities,
    round_to_total,
    street_graph,
)
from covplan.cities.lattice import STEP_M, Layout, cell_grid, street_lattice
from covplan.errors import InputError
from pyproj import Transformer
from scipy.cluster.vq import kmeans2
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from shapely.geometry import LineString, Point, box

__all__ = ["DENSITY_PER_KM2", "MetropolisCity", "build_metropolis"]

logger = logging.getLogger(__name__)

DENSITY_PER_KM2 = 517_570 / 34.28       # São Paulo centre: residents / km² of populated cells
MIN_RESIDENTS = 20_000                  # below this there is no metropolis to speak of
WORK_CRS = "EPSG:32723"                 # UTM 23S, São Paulo's zone
_LONLAT = (-46.63, -23.55)              # the middle of the city
_ASPECT = 0.8                           # footprint ellipse: north-south / east-west axis
_MARGIN_M = 600.0                       # streets run this far beyond the last homes
_SUPERBLOCK_M = 500.0                   # arterial spacing: district limits follow arterials
_DISTRICT_RESIDENTS = 400_000           # about one district per this many residents
_MEAN_COMMUNITY = 4_300                 # existing communities average about the demo's size
_SUBDISTRICT_RESIDENTS = 80_000         # communities are drawn this many residents at a time
_RIVER_HALF_WIDTH_M = 75.0
_BRIDGE_EVERY = 48                      # lattice columns (62.5 m): a bridge every 3 km
_RAIL_CROSSING_EVERY_M = 2_000.0
_MAX_ACCESS_M = 300.0                   # no one lives farther from a street node than this
_MAX_CELL = 850                         # residents per 100 m cell: 85,000/km², above São Paulo's
# Residents per 100 m cell before normalising (the mean comes out near 151, São Paulo's):
# a fringe floor, the core, and a local centre in each district.
_FRINGE, _CORE, _CORE_SCALE = 55.0, 480.0, 0.35          # core scale: share of the footprint
_LOCAL, _LOCAL_SCALE_M = 240.0, 1_200.0

MetropolisCity = City     # the name this module has always returned (one record for every city)


def build_metropolis(residents: int, *, seed: int = 0) -> City:
    """
    Build a metropolis of exactly `residents` residents (see the module docstring).

    Parameters
    ----------
    residents
        Residents, at least `MIN_RESIDENTS`; the area grows in proportion.
    seed
        Seed of the one random generator: the same residents and seed give an identical city.

    Raises
    ------
    InputError
        If `residents` is below `MIN_RESIDENTS` or `seed` is negative (TypeError if either is
        not an int).

    Examples
    --------
    >>> city = build_metropolis(300_000)
    >>> int(city.population["population"].sum())
    300000
    """
    if isinstance(residents, bool) or not isinstance(residents, (int, np.integer)):
        msg = f"`residents` must be an int, got {type(residents).__name__} {residents!r}."
        raise TypeError(msg)
    if residents < MIN_RESIDENTS:
        msg = (f"a metropolis needs at least {MIN_RESIDENTS:,} residents, got {residents:,} "
               "(--residents / residents=); for a small city use the demo or a synthetic city.")
        raise InputError(msg)
    check_seed(seed)
    residents = int(residents)
    rng = np.random.default_rng(seed)
    area_m2 = residents / DENSITY_PER_KM2 * 1e6
    axes = np.sqrt(area_m2 / (np.pi * _ASPECT)) * np.array([1.0, _ASPECT])
    # Half extents on the 500 m grid, so that cells, arterials and district limits line up.
    half = tuple(float(np.ceil((a + _MARGIN_M) / _SUPERBLOCK_M) * _SUPERBLOCK_M) for a in axes)
    squares, cell_xy = cell_grid(half)
    footprint = (((cell_xy / axes) ** 2).sum(axis=1) <= 1.0)

    seeds = _district_seeds(rng, cell_xy[footprint], residents)
    district_polys = _district_polygons(seeds, half)
    water = _river(axes, half)
    rail = _railway(axes, half)
    parks = [shapely.affinity.scale(Point(*(s + rng.uniform(-600, 600, 2))).buffer(1.0, 16),
                                    rng.uniform(150, 300), rng.uniform(120, 250))
             for s in seeds]
    layout = Layout(built=box(-1e7, -1e7, 1e7, 1e7).difference(water), weight=np.zeros(0),
                    barrier=water, bridges=_bridges(half))
    node_xy, edges = _cut_at_railway(*street_lattice(rng, half, layout), rail)

    weight = _density(cell_xy, axes, seeds)
    weight *= np.minimum(rng.lognormal(0.0, 0.3, size=len(cell_xy)), 1.5)
    empty = (~footprint | (rng.random(len(cell_xy)) < 0.02)
             | shapely.intersects_xy(water.buffer(40.0), *cell_xy.T)
             | _hits(squares, rail.buffer(30.0))
             | shapely.intersects_xy(shapely.union_all(parks), *cell_xy.T)
             | (cKDTree(node_xy).query(cell_xy)[0] > _MAX_ACCESS_M))
    weight[empty] = 0.0
    for _ in range(5):       # the densest cells capped, the rest scaled up to keep the total
        weight = np.minimum(weight * residents / weight.sum(), _MAX_CELL)
    pop = round_to_total(weight, residents)
    kept = pop > 0
    squares, cell_xy, pop = squares[kept], cell_xy[kept], pop[kept]

    cell_district = _locate_blocks(cell_xy, seeds)
    polygons, cell_label, community_district, center_nodes = _communities(
        rng, district_polys, cell_xy, pop, cell_district, node_xy)

    origin = np.array(Transformer.from_crs("EPSG:4326", WORK_CRS, always_xy=True)
                      .transform(*_LONLAT))
    to_lonlat = Transformer.from_crs(WORK_CRS, "EPSG:4326", always_xy=True)
    node_lonlat = np.column_stack(to_lonlat.transform(*(node_xy + origin).T))
    graph = street_graph(node_lonlat, edges)
    graph.graph["created_with"] = "covplan.cities.metropolis"

    def frame(columns: dict, shapes) -> gpd.GeoDataFrame:
        placed = shapely.transform(np.asarray(shapes, dtype=object), lambda xy: xy + origin)
        return gpd.GeoDataFrame(columns, geometry=placed, crs=WORK_CRS).to_crs("EPSG:4326")

    row, col = ((cell_xy + np.array(half)) // CELL_M).astype(int).T[::-1]
    width = len(str(max(row.max(), col.max())))
    n, d = len(polygons), len(district_polys)
    ids = [f"C{k + 1:0{len(str(n))}d}" for k in range(n)]
    district_ids = [f"D{k + 1:0{len(str(d))}d}" for k in range(d)]
    extent = box(-half[0], -half[1], half[0], half[1])
    city = City(
        graph=graph,
        population=frame({"cell_id": [f"R{r:0{width}d}C{c:0{width}d}" for r, c in zip(row, col)],
                          "population": pop}, squares),
        communities=frame({"community_id": ids,
                           "population": np.bincount(cell_label, weights=pop,
                                                     minlength=n).astype(np.int64),
                           "district_id": [district_ids[k] for k in community_district]},
                          polygons),
        centers=gpd.GeoDataFrame(
            {"center_id": [f"S{k[1:]}" for k in ids], "community_id": ids},
            geometry=shapely.points(node_lonlat[center_nodes]), crs="EPSG:4326"),
        districts=frame({"district_id": district_ids,
                         "name": [f"District {k + 1}" for k in range(d)]}, district_polys),
        railway=frame({"name": ["Metropolitan Railway"]}, [rail]),
        features=frame({"kind": ["river", "railway"] + ["park"] * len(parks),
                        "name": ["River", "Metropolitan Railway"]
                                + [f"Park {k + 1}" for k in range(len(parks))]},
                       [water.intersection(extent), rail] + parks),
        name="metropolis", work_crs=WORK_CRS, seed=int(seed))
    logger.info("Built a metropolis of %s residents (seed %d): %.0f km², %d districts, %d nodes, "
                "%d cells, %d communities", f"{residents:,}", seed, area_m2 / 1e6, d,
                graph.number_of_nodes(), len(city.population), n)
    return city


def _district_seeds(rng: np.random.Generator, xy: np.ndarray, residents: int) -> np.ndarray:
    """District centres spread evenly over the footprint (k-means of its cells), west to east."""
    k = max(3, round(residents / _DISTRICT_RESIDENTS))
    seeds, _ = kmeans2(xy, k, minit="++", seed=rng, iter=20)
    return seeds[np.lexsort((seeds[:, 1], seeds[:, 0]))]


def _locate_blocks(xy: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """District of each point: the seed nearest the middle of its 500 m superblock."""
    middle = (np.floor(xy / _SUPERBLOCK_M) + 0.5) * _SUPERBLOCK_M
    return cKDTree(seeds).query(middle)[1]


def _district_polygons(seeds: np.ndarray, half: tuple[float, float]) -> list:
    """Each district as the union of its superblocks, so its limits run along arterials."""
    nx_, ny_ = (int(2 * h / _SUPERBLOCK_M) for h in half)
    i, j = (a.ravel() for a in np.meshgrid(np.arange(nx_), np.arange(ny_)))
    low = np.column_stack([i, j]) * _SUPERBLOCK_M - np.array(half)
    owner = _locate_blocks(low + _SUPERBLOCK_M / 2, seeds)
    blocks = shapely.box(*low.T, *(low + _SUPERBLOCK_M).T)
    # A vertex every 100 m keeps the borders of neighbours together once in lon/lat.
    return [shapely.segmentize(shapely.normalize(shapely.coverage_union_all(blocks[owner == k])),
                               100.0) for k in range(len(seeds))]


def _river(axes: np.ndarray, half: tuple[float, float]):
    """A river meandering west to east across the whole extent, south of the middle."""
    x = np.linspace(-half[0] - 200, half[0] + 200, max(200, int(half[0] / 50)))
    wave = max(4_000.0, 0.7 * axes[0])
    y = -0.2 * axes[1] + 0.08 * axes[1] * np.sin(2 * np.pi * x / wave) + 300 * np.sin(
        2 * np.pi * x / 2_300)
    water = LineString(np.column_stack([x, y])).buffer(_RIVER_HALF_WIDTH_M)
    shapely.prepare(water)
    return water


def _railway(axes: np.ndarray, half: tuple[float, float]) -> LineString:
    """A straight main line from south-west to north-east, a little west of the middle."""
    ends = np.array([[-half[0] - 300, -half[1] * 0.9], [half[0] + 300, half[1] * 0.7]])
    ends[:, 0] -= 0.1 * axes[0]
    rail = shapely.segmentize(LineString(ends), 50.0)   # short pieces reproject faithfully
    shapely.prepare(rail)
    return rail


def _bridges(half: tuple[float, float]) -> dict[int, tuple[str, str]]:
    """Lattice columns carrying a bridge: arterials every 3 km, offset from the middle."""
    ni = int(half[0] // STEP_M)
    columns = np.arange(-ni, ni + 1)
    columns = columns[columns % _BRIDGE_EVERY == _BRIDGE_EVERY // 2]
    return {int(c): ("primary", f"Bridge {k + 1}") for k, c in enumerate(columns)}


def _cut_at_railway(node_xy: np.ndarray, edges: dict[str, np.ndarray], rail: LineString,
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """
    Drop the streets across the railway but one arterial underpass every 2 km along it, then
    keep the main connected piece (rows renumbered).
    """
    u, v = edges["u"], edges["v"]
    segments = shapely.linestrings(np.stack([node_xy[u], node_xy[v]], axis=1))
    crossing = np.flatnonzero(_hits(segments, rail))
    arterial = crossing[edges["highway"][crossing] == "primary"]
    along = shapely.line_locate_point(rail, shapely.centroid(segments[arterial]))
    # Per 2 km stretch of the line, the arterial crossing nearest its middle stays open.
    stretch = np.floor(along / _RAIL_CROSSING_EVERY_M)
    off = np.abs(along - (stretch + 0.5) * _RAIL_CROSSING_EVERY_M)
    order = np.lexsort((off, stretch))
    first = np.r_[True, stretch[order][1:] != stretch[order][:-1]]
    # Both halves of an edge split by a node on the line would cross; such nodes carry no pass.
    underpass = arterial[order][first]
    keep = np.ones(len(u), dtype=bool)
    keep[crossing] = False
    keep[underpass] = True
    structure = edges["structure"].astype(object).copy()
    structure[underpass] = "tunnel"
    edges = dict(edges, structure=structure)

    n = len(node_xy)
    adjacency = coo_matrix((np.ones(keep.sum()), (u[keep], v[keep])), shape=(n, n))
    _, component = connected_components(adjacency, directed=False)
    used = np.zeros(n, dtype=bool)
    used[u[keep]] = used[v[keep]] = True
    sizes = np.bincount(component[used], minlength=component.max() + 1)
    in_main = used & (component == sizes.argmax())
    keep &= in_main[u]
    row_of = np.cumsum(in_main) - 1
    out = {key: values[keep] for key, values in edges.items()}
    out["u"], out["v"] = row_of[out["u"]], row_of[out["v"]]
    return node_xy[in_main], out


def _hits(shapes: np.ndarray, other) -> np.ndarray:
    """Which `shapes` intersect `other`, through a tree: a long thin line meets few of them."""
    hit = np.zeros(len(shapes), dtype=bool)
    hit[shapely.STRtree(shapes).query(other, predicate="intersects")] = True
    return hit


def _density(xy: np.ndarray, axes: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Expected residents per cell before noise: fringe floor + core + local centres."""
    rho2 = ((xy / axes) ** 2).sum(axis=1)
    # A local centre fades within ~3 scales: the nearest three seeds are enough.
    dist, _ = cKDTree(seeds).query(xy, k=min(3, len(seeds)))
    local = (_LOCAL * np.exp(-(dist / _LOCAL_SCALE_M) ** 2)).sum(axis=1)
    return _FRINGE + _CORE * np.exp(-rho2 / _CORE_SCALE ** 2) + local


def _communities(rng: np.random.Generator, districts: list, cell_xy: np.ndarray,
                 pop: np.ndarray, cell_district: np.ndarray, node_xy: np.ndarray,
                 ) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """
    Existing communities of about _MEAN_COMMUNITY residents and their centers, drawn as the
    demo draws its own, subdistrict by subdistrict (see `_subdistricts`): the demo's layout
    works for a few dozen communities at once, and each subdistrict sees only the street
    nodes inside its bounds, so the cost grows with the city, not with its square.

    Returns the polygons, the community of each cell, the district of each community and the
    node row of each center.
    """
    polygons, community_district, centers = [], [], []
    cell_label = np.empty(len(cell_xy), dtype=np.int64)
    for d, chunk, cells in _subdistricts(cell_xy, pop, cell_district, len(districts)):
        xmin, ymin, xmax, ymax = chunk.bounds
        near = np.flatnonzero((node_xy[:, 0] >= xmin) & (node_xy[:, 0] <= xmax)
                              & (node_xy[:, 1] >= ymin) & (node_xy[:, 1] <= ymax))
        count, regions, label = _layout(rng, chunk, cell_xy[cells], pop[cells], node_xy[near])
        chosen = choose_center_nodes(rng, regions, cell_xy[cells], pop[cells], label,
                                     node_xy[near])
        cell_label[cells] = label + len(polygons)
        polygons += regions
        community_district += [d] * count
        centers.append(near[chosen])
    return (polygons, cell_label, np.array(community_district, dtype=np.int64),
            np.concatenate(centers))


def _layout(rng: np.random.Generator, chunk, xy: np.ndarray, pop: np.ndarray,
            node_xy: np.ndarray) -> tuple[int, list, np.ndarray]:
    """The demo's layout of one subdistrict, about _MEAN_COMMUNITY residents a community; when
    no layout of that count keeps every size in range and has a street node in every
    community (seen in a sparse subdistrict of a 30 M city), fewer and then more are tried."""
    count = max(1, round(int(pop.sum()) / _MEAN_COMMUNITY))
    for k in dict.fromkeys(max(1, count + d) for d in (0, -1, -2, -3, 1, 2)):
        try:
            return k, *district_communities(rng, chunk, xy, pop, k, node_xy)
        except RuntimeError:
            continue
    return count, *district_communities(rng, chunk, xy, pop, count, node_xy)   # raises


def _subdistricts(cell_xy: np.ndarray, pop: np.ndarray, cell_district: np.ndarray,
                  n_districts: int):
    """
    Subdistricts (as the jiedao between districts and communities) of at most
    _SUBDISTRICT_RESIDENTS: each district's populated superblocks halved at the residents'
    median across their longer side until small enough. Yields (district, polygon, cell rows).
    """
    block = np.floor(cell_xy / _SUPERBLOCK_M).astype(np.int64)
    for d in range(n_districts):
        cells = np.flatnonzero(cell_district == d)
        keys, which = np.unique(block[cells], axis=0, return_inverse=True)
        which = which.ravel()
        weight = np.bincount(which, weights=pop[cells], minlength=len(keys))
        stack = [np.arange(len(keys))]
        while stack:
            part = stack.pop()
            if weight[part].sum() > _SUBDISTRICT_RESIDENTS and len(part) > 1:
                span = np.ptp(keys[part], axis=0)
                axis = int(span[1] > span[0])
                order = part[np.lexsort((keys[part, 1 - axis], keys[part, axis]))]
                cut = np.searchsorted(np.cumsum(weight[order]), weight[part].sum() / 2)
                cut = min(max(cut, 1), len(order) - 1)
                stack += [order[cut:], order[:cut]]
                continue
            low = keys[part] * _SUPERBLOCK_M
            polygon = shapely.coverage_union_all(shapely.box(*low.T, *(low + _SUPERBLOCK_M).T))
            yield d, shapely.segmentize(shapely.normalize(polygon), 100.0), cells[
                np.isin(which, part)]
