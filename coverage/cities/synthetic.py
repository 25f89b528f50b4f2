"""
Synthetic cities that stress the community planner in different ways, for the planner suite.

Each kind is built like the demo city (`covplan.cities.demo`, whose helpers it reuses): streets on
the jittered lattice of `covplan.cities.lattice` (local streets 125 m apart, arterials every 500
m), populated 100 m cells, uneven existing communities (power regions, as in the demo) with one
service center each, every layer in EPSG:4326 so that it flows through the ordinary loaders. What differs is the shape that
makes planning hard:

- ``core_fringe``: a very dense core (cells of 800+ residents) and villages of a few hundred to a
  few thousand residents far apart along a few country roads, too small to fill a community.
- ``river``: a meandering river crossed by three bridges only (the network crosses nowhere else),
  dense on both banks, so straight-line neighbours can be half an hour apart on foot.
- ``linear``: a 24 km x 1.2 km strip along one main road, in three districts.
- ``islands``: a lake with two inhabited islands whose paths join nothing else, a gated estate
  with its own footpaths behind a wall, and a high-rise block next to an almost empty airfield.

`STRESS_KINDS` are five more shapes the planner is tried on beyond the suite (README, "Beyond
the suite"), thinner than the suite's: where a 15-minute circle gathers barely the band's
floor, a community in the band must be nearly a whole circle.

- ``valleys``: three valleys 1.3 km wide meeting at a centre, a town along each.
- ``towns``: eight towns of 6,500-60,000 residents, 4-8 km apart, joined by country roads.
- ``motorway``: a city thinning to ~3,000 residents per km2 at its edge, cut by a motorway and a
  railway that the streets cross at four places only.
- ``sprawl``: a suburb of ~3,200 residents per km2 throughout: no circle gathers 10,000.
- ``harbour``: a port on a bay whose inlet only a harbour bridge crosses, two districts.

Cities are laid out in metres around their middle (city coordinates) and moved to lon/lat last.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

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
    locate,
    round_to_total,
    street_graph,
)
from covplan.cities.lattice import Layout, cell_grid, street_lattice
from covplan.errors import InputError
from pyproj import Transformer
from scipy.spatial import cKDTree
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

__all__ = ["STRESS_KINDS", "SYNTHETIC_KINDS", "SyntheticCity", "build_synthetic_city"]

logger = logging.getLogger(__name__)

_MEAN_COMMUNITY = 4_300      # existing communities average about the demo's size
_MAX_ACCESS_M = 300.0        # no one lives farther from a street node than this

SyntheticCity = City     # the name this module has always returned (one record for every city)


@dataclass(frozen=True, slots=True)
class _Kind:
    lon: float
    lat: float
    work_crs: str            # the UTM zone of (lon, lat): the zone the loaders will choose
    total: int               # residents, exact for every seed
    half: tuple[float, float]   # half width and half height of the extent, m
    layout: Callable[[np.random.Generator, np.ndarray], Layout]


def build_synthetic_city(kind: str, *, seed: int = 0) -> City:
    """
    Build a synthetic city of one of `SYNTHETIC_KINDS`.

    Parameters
    ----------
    kind
        One of `SYNTHETIC_KINDS` (the suite's: 'core_fringe', 'river', 'linear', 'islands') or
        `STRESS_KINDS` (see the module docstring).
    seed
        Seed of the one random generator (numpy ``default_rng``); the same seed gives an
        identical city. The frame (extent, river, lake, islands, roads) and the total are the
        same for every seed; the seed moves street jitter, missing streets, villages, towns,
        the park, cell counts, communities and centers.

    Raises
    ------
    InputError
        For an unknown kind or a negative seed (TypeError for a seed that is not an int).

    Examples
    --------
    >>> city = build_synthetic_city("river")
    >>> int(city.population["population"].sum())
    250000
    """
    if kind not in _KINDS:
        msg = (f"unknown synthetic city {kind!r}; choose one of "
               f"{', '.join(SYNTHETIC_KINDS + STRESS_KINDS)}.")
        raise InputError(msg)
    check_seed(seed)
    spec = _KINDS[kind]
    rng = np.random.default_rng(seed)
    origin = np.array(Transformer.from_crs("EPSG:4326", spec.work_crs, always_xy=True)
                      .transform(spec.lon, spec.lat))
    extent = box(-spec.half[0], -spec.half[1], spec.half[0], spec.half[1])
    squares, cell_xy = cell_grid(spec.half)
    layout = spec.layout(rng, cell_xy)
    node_xy, edges = street_lattice(rng, spec.half, layout)

    # Residents: noise like the demo's, nobody far from a street, integers summing to the total.
    weight = layout.weight * np.minimum(rng.lognormal(0.0, 0.3, size=len(cell_xy)), 1.5)
    weight[rng.random(len(cell_xy)) < 0.02] = 0.0                   # vacant lots
    weight[cKDTree(node_xy).query(cell_xy)[0] > _MAX_ACCESS_M] = 0.0
    pop = round_to_total(weight, spec.total)
    kept = pop > 0
    squares, cell_xy, pop = squares[kept], cell_xy[kept], pop[kept]

    districts = layout.districts or (("", "", shapely.segmentize(extent, 100.0)),)
    communities, cell_label, community_district = _existing_communities(
        rng, [d[2] for d in districts], cell_xy, pop, node_xy, spec.total)
    center_nodes = choose_center_nodes(rng, communities, cell_xy, pop, cell_label, node_xy)

    to_lonlat = Transformer.from_crs(spec.work_crs, "EPSG:4326", always_xy=True)
    node_lonlat = np.column_stack(to_lonlat.transform(*(node_xy + origin).T))
    graph = street_graph(node_lonlat, edges)
    graph.graph["created_with"] = "covplan.cities.synthetic"

    def frame(columns: dict, shapes: list) -> gpd.GeoDataFrame:
        placed = shapely.transform(np.asarray(shapes, dtype=object), lambda xy: xy + origin)
        return gpd.GeoDataFrame(columns, geometry=placed, crs=spec.work_crs).to_crs("EPSG:4326")

    row, col = ((cell_xy + np.array(spec.half)) // CELL_M).astype(int).T[::-1]
    ids = [f"C{k + 1:02d}" for k in range(len(communities))]
    columns = {"community_id": ids,
               "population": np.bincount(cell_label, weights=pop,
                                         minlength=len(ids)).astype(np.int64)}
    if layout.districts:
        columns["district_id"] = [districts[d][0] for d in community_district]
    city = City(
        graph=graph,
        population=frame({"cell_id": [f"R{r:03d}C{c:03d}" for r, c in zip(row, col)],
                          "population": pop}, list(squares)),
        communities=frame(columns, communities),
        centers=gpd.GeoDataFrame(
            {"center_id": [f"S{k + 1:02d}" for k in range(len(ids))], "community_id": ids},
            geometry=shapely.points(node_lonlat[center_nodes]), crs="EPSG:4326"),
        districts=None if not layout.districts else frame(
            {"district_id": [d[0] for d in districts], "name": [d[1] for d in districts]},
            [d[2] for d in districts]),
        features=frame({"kind": [f[0] for f in layout.features],
                        "name": [f[1] for f in layout.features]},
                       [shapely.intersection(f[2], extent) for f in layout.features]),
        name=kind, work_crs=spec.work_crs, seed=int(seed))
    logger.info("Built the synthetic %s city (seed %d): %d nodes, %d cells, %d residents, "
                "%d communities", kind, seed, graph.number_of_nodes(), len(city.population),
                spec.total, len(ids))
    return city


def _existing_communities(rng: np.random.Generator, districts: list[Polygon], cell_xy: np.ndarray,
                          pop: np.ndarray, node_xy: np.ndarray, total: int,
                          ) -> tuple[list[Polygon], np.ndarray, np.ndarray]:
    """
    Communities of about _MEAN_COMMUNITY residents on average, shared among districts by their
    residents and drawn as the demo draws its own (uneven power regions, 1,500-25,000 each).

    Returns the polygons, the community of each cell and the district of each community.
    """
    cell_district = locate(districts, cell_xy)
    district_pop = np.bincount(cell_district, weights=pop, minlength=len(districts))
    counts = round_to_total(district_pop, max(len(districts), round(total / _MEAN_COMMUNITY)))
    polygons, cell_label, community_district = [], np.empty(len(cell_xy), dtype=np.int64), []
    for d, count in enumerate(counts):
        cells = np.flatnonzero(cell_district == d)
        regions, label = district_communities(rng, districts[d], cell_xy[cells], pop[cells],
                                               int(count), node_xy)
        cell_label[cells] = label + len(polygons)
        polygons += regions
        community_district += [d] * int(count)
    return polygons, cell_label, np.array(community_district, dtype=np.int64)


def _gauss(xy: np.ndarray, center: tuple[float, float], scale: float) -> np.ndarray:
    return np.exp(-(np.hypot(*(xy - center).T) / scale) ** 2)


def _inside(geometry: BaseGeometry, xy: np.ndarray) -> np.ndarray:
    return shapely.contains_xy(geometry, *xy.T)


def _ellipse(cx: float, cy: float, ax: float, ay: float) -> Polygon:
    return shapely.affinity.scale(Point(cx, cy).buffer(1.0, quad_segs=32), ax, ay)


def _fill(weight: np.ndarray, where: np.ndarray, residents: float) -> None:
    """Spread `residents` evenly over the cells `where` (in place)."""
    weight[where] = residents / max(int(where.sum()), 1)


# ---------------------------------------------------------------------------------------------
# The kinds


def _core_fringe(rng: np.random.Generator, xy: np.ndarray) -> Layout:
    """A city of radius 2.3 km with a very dense core; villages of 200-3,000 residents along six
    country roads, 2-5 km beyond its edge."""
    core_r, total = 2_300.0, _KINDS["core_fringe"].total
    roads = [LineString([(0, 0), (0, 7_800)]), LineString([(0, 0), (0, -7_800)]),
             LineString([(0, 0), (7_800, 0)]), LineString([(0, 0), (-7_800, 0)]),
             LineString([(-4_000, 0), (-4_000, 7_000)]), LineString([(0, -4_000), (7_000, -4_000)])]
    stops = [(4_400, 6_000, 7_500)] * 4 + [(2_000, 4_500, 6_600)] * 2   # m along each road
    weight = np.zeros(len(xy))
    villages = []
    for road, along in zip(roads, stops):
        for s in along:
            where = road.interpolate(s + rng.uniform(-250.0, 250.0))
            residents = float(np.exp(rng.uniform(np.log(200.0), np.log(3_000.0))))
            radius = 110.0 + 0.07 * residents
            village = where.buffer(radius)
            cells = _inside(village, xy)
            if cells.any():
                _fill(weight, cells, residents)
                villages.append(("village", f"Village {len(villages) + 1}", village))
    r = np.hypot(*xy.T)
    # Suburbs stay dense enough (~100 per cell) that the city's edge is no remote pocket itself.
    core = np.where(r <= core_r, 1_000 * np.exp(-(r / 700) ** 2) + 150, 0.0)
    weight += core * (total - weight.sum()) / core.sum()
    built = shapely.union_all([Point(0, 0).buffer(core_r + 200),
                               *(road.buffer(15.0) for road in roads),
                               *(v.buffer(80.0) for _, _, v in villages)])
    return Layout(built=built, weight=weight, rural=_outside(Point(0, 0).buffer(core_r + 200)),
                   features=tuple(villages))


def _outside(area: BaseGeometry) -> BaseGeometry:
    return box(-1e6, -1e6, 1e6, 1e6).difference(area)


def _river(rng: np.random.Generator, xy: np.ndarray) -> Layout:
    """A 180 m river meandering west to east through the middle; three bridges."""
    x = np.linspace(-4_000.0, 4_000.0, 161)
    river = LineString(np.column_stack([x, 250 * np.sin(2 * np.pi * (x + 700) / 5_500) - 150]))
    water = river.buffer(90.0)
    weight = 380 * _gauss(xy, (0.0, 0.0), 1_800) + 90 * np.exp(-np.hypot(*xy.T) / 2_500) + 40
    # Homes stop at a rounded footprint: square corners would leave remote pockets of their own.
    footprint = _ellipse(0.0, 0.0, 3_400.0, 2_400.0)
    weight[~_inside(footprint, xy) | _inside(water.buffer(40.0), xy)] = 0.0
    park = _ellipse(rng.uniform(-2_500, -1_500), 1_600, 300, 220)
    weight[_inside(park, xy)] = 0.0
    bridges = {-32: ("primary", "West Bridge"), 8: ("footway", "Footbridge"),
               40: ("primary", "East Bridge")}
    return Layout(built=_outside(water), weight=weight, barrier=water, bridges=bridges,
                   features=(("river", "River", water), ("park", "Park", park)))


def _linear(rng: np.random.Generator, xy: np.ndarray) -> Layout:
    """A 1.2 km strip along Main Road (y = 0), towns along it, three districts."""
    towns = np.sort(rng.uniform(-11_000.0, 11_000.0, size=6))
    # Between the towns ~50 residents per cell: a 15-minute stretch still holds a community.
    along = 150 + sum(150 * np.exp(-((xy[:, 0] - c) / 1_400) ** 2) for c in towns)
    weight = along * np.exp(-(xy[:, 1] / 700) ** 2)
    cuts = (-12_000.0, -4_000.0, 4_000.0, 12_000.0)
    names = ("West", "Centre", "East")
    districts = tuple((f"D{k + 1}", names[k],
                       shapely.segmentize(box(cuts[k], -600.0, cuts[k + 1], 600.0), 100.0))
                      for k in range(3))
    return Layout(built=box(-12_001.0, -601.0, 12_001.0, 601.0), weight=weight,
                   districts=districts)


def _islands(rng: np.random.Generator, xy: np.ndarray) -> Layout:
    """
    A lake (north-east) holding two inhabited islands more than 500 m from every shore, a walled
    estate with its own footpaths, a high-rise block beside an almost empty airfield.
    """
    total = _KINDS["islands"].total
    lake = _ellipse(2_300, 1_400, 1_700, 1_400)
    big, small = _ellipse(2_500, 1_500, 330, 250), _ellipse(1_650, 1_150, 200, 150)
    estate = box(-2_900, -2_600, -2_100, -1_950)
    towers = box(-500, -2_600, 100, -2_200)
    airfield = box(100, -2_900, 1_900, -1_500)
    weight = np.zeros(len(xy))
    fixed = {big: rng.uniform(2_200, 3_000), small: rng.uniform(300, 600),
             estate: rng.uniform(1_800, 2_600), towers: 18_000.0, airfield: 3.0 * 250}
    for area, residents in fixed.items():
        _fill(weight, _inside(area, xy), residents)
    # A rounded footprint and ~80 residents per cell at its edge: the town's own edge and the
    # lake shore are no remote pockets, only the islands, the estate and the airfield are.
    town = (_inside(_ellipse(-300.0, -200.0, 3_300.0, 2_800.0), xy)
            & ~_inside(shapely.union_all([lake, *fixed]), xy))
    main = np.where(town, 200 * _gauss(xy, (-800.0, 200.0), 1_800) + 110, 0.0)
    weight += main * (total - weight.sum()) / main.sum()
    water = lake.difference(shapely.union_all([big, small]))
    return Layout(built=_outside(water), weight=weight,
                   barrier=shapely.union_all([water, estate.exterior]),
                   paths=shapely.union_all([estate, small]),   # too small for 125 m blocks
                   no_local=airfield, islands=True,
                   features=(("lake", "Lake", water), ("island", "Big Island", big),
                             ("island", "Small Island", small), ("estate", "Gated Estate", estate),
                             ("high-rise", "Tower Block", towers),
                             ("airfield", "Airfield", airfield)))


def _valleys(rng: np.random.Generator, xy: np.ndarray) -> Layout:
    """Three valleys 1.3 km wide, 7 km long, meeting at the centre; a town 3-6 km up each."""
    arms = [LineString([(0, 0), (7_000 * np.cos(a), 7_000 * np.sin(a))])
            for a in np.radians([90, 210, 330])]
    off = np.min([shapely.distance(a, shapely.points(xy)) for a in arms], axis=0)
    r = np.hypot(*xy.T)
    weight = np.where(off < 600, (140 + 500 * np.exp(-(r / 1_500) ** 2)) * np.exp(-(off / 450) ** 2), 0.0)
    for arm in arms:
        town = arm.interpolate(rng.uniform(3_000, 6_000))
        weight += np.where(off < 600, 300 * _gauss(xy, (town.x, town.y), 800), 0.0)
    return Layout(built=shapely.union_all([a.buffer(650) for a in arms]), weight=weight)


def _towns(rng: np.random.Generator, xy: np.ndarray) -> Layout:
    """Eight towns (6,500-60,000 residents) 4-8 km apart, joined to the largest by country roads."""
    towns = [(0, 0, 60_000), (-5_500, 3_000, 45_000), (5_000, 4_000, 35_000),
             (4_500, -4_500, 25_000), (-4_000, -5_000, 30_000), (-7_000, -1_000, 12_000),
             (1_000, 7_000, 6_500), (7_200, 0, 18_000)]
    weight, disks = np.zeros(len(xy)), []
    for x, y, residents in towns:
        x, y = x + rng.uniform(-300, 300), y + rng.uniform(-300, 300)
        radius = 300 + 5.5 * np.sqrt(residents)
        near = _gauss(xy, (x, y), radius) * (np.hypot(xy[:, 0] - x, xy[:, 1] - y) < radius)
        weight += residents * near / near.sum()
        disks.append(Point(x, y).buffer(radius + 150))
    roads = [LineString([disks[0].centroid, d.centroid]) for d in disks[1:]] + [
        LineString([disks[1].centroid, disks[5].centroid]),
        LineString([disks[2].centroid, disks[6].centroid])]
    return Layout(built=shapely.union_all(disks + [road.buffer(15) for road in roads]),
                  weight=weight, rural=_outside(shapely.union_all(disks)))


def _motorway(rng: np.random.Generator, xy: np.ndarray) -> Layout:
    """A motorway and a railway across the city, crossed by its streets at four places."""
    motorway, railway = box(-6_000, -1_560, 6_000, -1_440), box(-6_000, 1_190, 6_000, 1_260)
    cut = shapely.union_all([motorway, railway])
    weight = 250 * _gauss(xy, (800.0, 300.0), 2_200) + 60
    weight[~_inside(_ellipse(0.0, 0.0, 4_800.0, 3_300.0), xy) | _inside(cut.buffer(30.0), xy)] = 0.0
    return Layout(built=_outside(cut), weight=weight, barrier=cut,
                  bridges={c: ("primary", f"Crossing {c}") for c in (-40, -8, 24, 56)},
                  features=(("motorway", "Motorway", motorway), ("railway", "Railway", railway)))


def _sprawl(rng: np.random.Generator, xy: np.ndarray) -> Layout:
    """A suburb of gently waving density (~3,200 residents per km2) over a 10 x 9 km ellipse."""
    weight = 58 + 14 * np.sin(xy[:, 0] / 1_700) * np.cos(xy[:, 1] / 2_100)
    footprint = _ellipse(0.0, 0.0, 5_200.0, 4_600.0)
    weight[~_inside(footprint, xy)] = 0.0
    return Layout(built=footprint.buffer(150.0), weight=weight)


def _harbour(rng: np.random.Generator, xy: np.ndarray) -> Layout:
    """A port on a bay (north) whose inlet cuts the town in two; one harbour bridge; the port's
    dense quarter east of the inlet, a thin old town in the south-west; two districts."""
    water = shapely.union_all([box(-9_000, 2_600, 9_000, 9_000),
                               _ellipse(600.0, 2_600.0, 900.0, 2_100.0), box(200, -1_200, 1_000, 2_600)])
    weight = 320 * _gauss(xy, (600.0, 1_500.0), 1_500) + 50 * _gauss(xy, (-3_000.0, -2_000.0), 900) + 45
    weight[~_inside(_ellipse(0.0, -500.0, 5_000.0, 3_600.0), xy) | _inside(water.buffer(40.0), xy)] = 0.0
    cuts = (-6_000.0, 600.0, 6_000.0)
    districts = tuple((f"D{k + 1}", name,
                       shapely.segmentize(box(cuts[k], -4_500, cuts[k + 1], 2_600), 100.0))
                      for k, name in enumerate(("West", "East")))
    return Layout(built=_outside(water), weight=weight, barrier=water,
                  bridges={-4: ("primary", "Harbour Bridge")}, districts=districts,
                  features=(("bay", "Bay", water),))


_KINDS: dict[str, _Kind] = {
    # Dhaka-like density; UTM 46N.
    "core_fringe": _Kind(90.40, 23.78, "EPSG:32646", 300_000, (8_000.0, 8_000.0), _core_fringe),
    # A Danube-like river; UTM 34N.
    "river": _Kind(19.05, 47.50, "EPSG:32634", 250_000, (3_500.0, 2_500.0), _river),
    # A valley city like Lanzhou; UTM 48N.
    "linear": _Kind(103.83, 36.06, "EPSG:32648", 240_000, (12_000.0, 600.0), _linear),
    # A lake city like Srinagar; UTM 43N.
    "islands": _Kind(74.80, 34.08, "EPSG:32643", 220_000, (3_500.0, 3_000.0), _islands),
    # Beyond the suite (`STRESS_KINDS`). A mountain city like Lanzhou's side valleys; UTM 48N.
    "valleys": _Kind(103.83, 36.06, "EPSG:32648", 200_000, (7_200.0, 7_200.0), _valleys),
    # A Croatian county of towns; UTM 33N (the next three too).
    "towns": _Kind(15.0, 45.0, "EPSG:32633", 231_500, (8_500.0, 8_500.0), _towns),
    "motorway": _Kind(15.0, 45.0, "EPSG:32633", 260_000, (5_500.0, 3_800.0), _motorway),
    "harbour": _Kind(15.0, 45.0, "EPSG:32633", 230_000, (5_500.0, 4_500.0), _harbour),
    # A Mexico City suburb; UTM 14N.
    "sprawl": _Kind(-99.1, 19.4, "EPSG:32614", 240_000, (5_500.0, 5_000.0), _sprawl),
}
SYNTHETIC_KINDS: tuple[str, ...] = ("core_fringe", "river", "linear", "islands")
STRESS_KINDS: tuple[str, ...] = ("valleys", "towns", "motorway", "sprawl", "harbour")
