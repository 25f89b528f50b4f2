"""
What-if scenarios as data: a TOML file names the base inputs and a list of changes; it is read
into a frozen `Scenario`, and `apply_scenario` returns new inputs without touching the base.

    name = "new-estate"
    description = "8,000 residents in a new estate on the north-east edge"
    base = "demo"                  # the embedded demo city, or a [base] table of paths
    [plan]                         # any PlanConfig field (max_unit_pop = 0: never split),
                                   # and use_districts = false
    target_pop = 8000
    [[changes]]
    type = "add_residents"
    count = 8000
    polygon = [[98.33, 39.81], [98.34, 39.81], [98.34, 39.82]]

Paths are relative to the TOML file; coordinates are lon/lat (EPSG:4326). Change types:
add_center, remove_center, move_center, add_residents, scale_population, close_road, add_link.
Errors name the table and entry (``changes[2].center_id``): tomllib gives no line numbers for keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import logging
import os
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from covplan import __version__
from covplan.config import PlanConfig
from covplan.errors import CoverageWarning, DataSourceError, InputError
from covplan.inputs.crs import WGS84
from covplan.inputs.network import WalkNetwork
from covplan.inputs.population import Population, largest_remainder
from covplan.inputs.snap import DEFAULT_MAX_ACCESS_M, snap_points

if TYPE_CHECKING:
    import pyproj

__all__ = [
    "AddCenter", "AddLink", "AddResidents", "BaseInputs", "CloseRoad", "MoveCenter",
    "RemoveCenter", "ScalePopulation", "Scenario", "ScenarioInputs", "apply_scenario",
    "load_inputs", "load_scenario", "resolved_parameters", "write_scenario",
]

logger = logging.getLogger(__name__)

LINK_SNAP_M = 100.0          # a new link must end this close to an existing network node
CLOSE_POINT_M = 50.0         # default search radius of close_road's `point`
OUTSIDE_WARNING_SHARE = 0.5  # a new estate more outside the network's extent than this is warned
_REQUIRED = object()
# `jobs` is how a run executes, not what it plans: a scenario file does not carry it.
_PLAN_KEYS = tuple(f.name for f in dataclasses.fields(PlanConfig) if f.name != "jobs") + ("use_districts",)
_BASE_KEYS = ("demo", "demo_seed", "network", "population", "population_column", "centers",
              "communities", "districts")
_BASE_FILES = ("network", "population", "centers", "communities", "districts")


# ---- the changes ---------------------------------------------------------------------------
class _Change:
    """
    What every change type does. A change type is a frozen dataclass (fields `index` and its
    TOML keys, ClassVar `kind`) deriving from this: `apply` edits the inputs being built, the
    rest tell an incremental re-plan (covplan.plan.replan) where the change lies.
    """

    __slots__ = ()
    kind: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]    # its TOML keys, `type` included

    @classmethod
    def from_entry(cls, i: int, entry: _Entry, folder: Path) -> Change:
        """The change of scenario entry `i` (its keys already checked); relative paths are
        read from `folder`."""
        raise NotImplementedError

    def apply(self, parts: _Parts, where: str) -> None:
        """Edit `parts` (centers, cells, closed/added roads); errors start with `where`."""
        raise NotImplementedError

    def touched_points(self) -> list[tuple[float, float]]:
        """Lon/lat points the change lies at: the communities around them are touched."""
        return []

    def touched_center(self) -> tuple[str, str] | None:
        """(center id, "closed" or "moved") if the change closes or moves a center."""
        return None

    def changed_roads(self) -> list[tuple[Any, float]] | None:
        """
        Where walkable roads change: lon/lat shapes, each with how far (m) from it the changed
        roads may lie; None if only the base network can locate them.
        """
        return []


@dataclass(frozen=True, slots=True)
class AddCenter(_Change):
    """Open a service center at lon/lat (optionally for an existing community)."""

    kind: ClassVar[str] = "add_center"
    keys: ClassVar[tuple[str, ...]] = ("type", "center_id", "at", "community_id")
    index: int
    center_id: str
    at: tuple[float, float]            # lon, lat
    community_id: str | None = None

    @classmethod
    def from_entry(cls, i: int, entry: _Entry, folder: Path) -> Change:
        return cls(i, entry.take("center_id", "str"), entry.take("at", "lonlat"),
                   entry.take("community_id", "str", None))

    def apply(self, parts: _Parts, where: str) -> None:
        _require_near_network(parts.network, *self.at, f"{where}.at")
        centers = parts.centers
        if centers is None:
            centers = gpd.GeoDataFrame({"center_id": pd.Series([], dtype=str)},
                                       geometry=gpd.GeoSeries([], crs=WGS84), crs=WGS84)
        if self.center_id in set(centers["center_id"].astype(str)):
            raise InputError(f"{where}.center_id: a center {self.center_id!r} already exists; "
                             "pick a new id, or use type = \"move_center\".")
        point = gpd.GeoSeries(gpd.points_from_xy(*zip(self.at)), crs=WGS84).to_crs(centers.crs)
        row = {"center_id": self.center_id}
        if "community_id" in centers.columns or self.community_id is not None:
            row["community_id"] = self.community_id
        added = gpd.GeoDataFrame([row], geometry=list(point.values), crs=centers.crs)
        parts.centers = pd.concat([centers, added], ignore_index=True)

    def touched_points(self) -> list[tuple[float, float]]:
        return [self.at]


@dataclass(frozen=True, slots=True)
class RemoveCenter(_Change):
    """Close a service center."""

    kind: ClassVar[str] = "remove_center"
    keys: ClassVar[tuple[str, ...]] = ("type", "center_id")
    index: int
    center_id: str

    @classmethod
    def from_entry(cls, i: int, entry: _Entry, folder: Path) -> Change:
        return cls(i, entry.take("center_id", "str"))

    def apply(self, parts: _Parts, where: str) -> None:
        ids = _center_ids(parts.centers, self, where)
        parts.centers = parts.centers[ids != self.center_id].reset_index(drop=True)

    def touched_center(self) -> tuple[str, str] | None:
        return self.center_id, "closed"


@dataclass(frozen=True, slots=True)
class MoveCenter(_Change):
    """Move a service center to lon/lat."""

    kind: ClassVar[str] = "move_center"
    keys: ClassVar[tuple[str, ...]] = ("type", "center_id", "to")
    index: int
    center_id: str
    to: tuple[float, float]            # lon, lat

    @classmethod
    def from_entry(cls, i: int, entry: _Entry, folder: Path) -> Change:
        return cls(i, entry.take("center_id", "str"), entry.take("to", "lonlat"))

    def apply(self, parts: _Parts, where: str) -> None:
        ids = _center_ids(parts.centers, self, where)
        _require_near_network(parts.network, *self.to, f"{where}.to")
        moved = parts.centers.copy()
        point = gpd.GeoSeries(gpd.points_from_xy(*zip(self.to)), crs=WGS84).to_crs(moved.crs)
        moved.loc[(ids == self.center_id).to_numpy(), moved.geometry.name] = point.iloc[0]
        parts.centers = moved

    def touched_points(self) -> list[tuple[float, float]]:
        return [self.to]

    def touched_center(self) -> tuple[str, str] | None:
        return self.center_id, "moved"


@dataclass(frozen=True, slots=True)
class AddResidents(_Change):
    """
    A new estate: `count` residents spread over a polygon by area. ``spread="area"`` gives the
    part over existing cells to those cells and covers the rest with new square cells of
    `cell_size_m`; ``spread="cells"`` uses the existing cells only.
    """

    kind: ClassVar[str] = "add_residents"
    keys: ClassVar[tuple[str, ...]] = ("type", "count", "polygon", "polygon_file", "spread", "cell_size_m")
    index: int
    count: int
    polygon: tuple[tuple[float, float], ...] | None = None   # lon/lat ring
    polygon_file: str | None = None                           # any vector file, absolute
    spread: str = "area"
    cell_size_m: float = 100.0

    @classmethod
    def from_entry(cls, i: int, entry: _Entry, folder: Path) -> Change:
        polygon, polygon_file = _polygon_source(entry, folder)
        spread = entry.take("spread", "str", "area")
        if spread not in ("area", "cells"):
            raise entry.fail("spread", f"must be \"area\" or \"cells\", got {spread!r}.")
        return cls(i, entry.take("count", "positive_int"), polygon, polygon_file, spread,
                   entry.take("cell_size_m", "positive", 100.0))

    def apply(self, parts: _Parts, where: str) -> None:
        """Spread `count` over the polygon by area: existing cells, then new squares."""
        cells, work = parts.cells, parts.network.crs
        polygon = _polygon(self, work, parts.hull, where)
        outside = 1.0 - polygon.intersection(parts.hull).area / polygon.area
        if outside > OUTSIDE_WARNING_SHARE:
            message = (f"{where}: {100 * outside:.0f} % of the new estate's polygon lies outside "
                       "the walking network's extent, so many of its residents may reach no "
                       "center; check the polygon (lon/lat, longitude first) or extend the "
                       "network")
            logger.warning("%s", message)
            warnings.warn(message, CoverageWarning, stacklevel=2)
            parts.warnings.append(message)
        geoms = np.asarray(cells.to_crs(work).geometry.values)
        areal = np.isin(shapely.get_type_id(geoms), (3, 6))
        hit = np.flatnonzero(areal & shapely.intersects(geoms, polygon))
        weights = shapely.area(shapely.intersection(geoms[hit], polygon))
        new_shapes = np.empty(0, dtype=object)
        if self.spread == "area":
            rest = polygon.difference(shapely.union_all(geoms[hit])) if len(hit) else polygon
            new_shapes = _grid_pieces(rest, self.cell_size_m)
        elif not len(hit) or weights.sum() <= 0:
            raise InputError(f"changes[{self.index}].polygon: spread = \"cells\" but the polygon "
                             "covers no existing population cell; use spread = \"area\".")
        all_weights = np.concatenate([weights, shapely.area(new_shapes)])
        counts = largest_remainder(self.count * all_weights / all_weights.sum(), self.count)
        out = cells.copy()
        out.loc[out.index[hit], "pop"] = out["pop"].to_numpy()[hit] + counts[:len(hit)]
        extra = counts[len(hit):]
        if len(new_shapes):
            new = gpd.GeoDataFrame(
                {"cell_id": [f"scenario{self.index}-{k:04d}" for k in range(len(new_shapes))],
                 "pop": extra}, geometry=list(new_shapes), crs=work).to_crs(cells.crs)
            out = pd.concat([out, new[new["pop"] > 0]], ignore_index=True)
        logger.info("changes[%d]: %s residents added (%d existing cells, %d new cells)", self.index,
                    f"{self.count:,}", int((counts[:len(hit)] > 0).sum()), int((extra > 0).sum()))
        parts.cells, parts.population_changed = out, True


@dataclass(frozen=True, slots=True)
class ScalePopulation(_Change):
    """Multiply the residents inside a polygon by `factor` (cells cut by it: their share inside)."""

    kind: ClassVar[str] = "scale_population"
    keys: ClassVar[tuple[str, ...]] = ("type", "factor", "polygon", "polygon_file")
    index: int
    factor: float
    polygon: tuple[tuple[float, float], ...] | None = None
    polygon_file: str | None = None

    @classmethod
    def from_entry(cls, i: int, entry: _Entry, folder: Path) -> Change:
        polygon, polygon_file = _polygon_source(entry, folder)
        return cls(i, entry.take("factor", "non_negative"), polygon, polygon_file)

    def apply(self, parts: _Parts, where: str) -> None:
        cells, work = parts.cells, parts.network.crs
        polygon = _polygon(self, work, parts.hull, where)
        geoms = np.asarray(cells.to_crs(work).geometry.values)
        areal = np.isin(shapely.get_type_id(geoms), (3, 6))
        share = np.where(areal, 0.0, shapely.within(geoms, polygon).astype(float))
        hit = np.flatnonzero(areal & shapely.intersects(geoms, polygon))
        share[hit] = shapely.area(shapely.intersection(geoms[hit], polygon)) / shapely.area(geoms[hit])
        touched = np.flatnonzero(share > 0)
        pop = cells["pop"].to_numpy().astype(float)
        wanted = pop[touched] * (1 + (self.factor - 1) * share[touched])
        out = cells.copy()
        out.loc[out.index[touched], "pop"] = largest_remainder(wanted, round(wanted.sum()))
        logger.info("Scaled %d cells by %g inside the polygon: %s -> %s residents", len(touched),
                    self.factor, f"{int(pop[touched].sum()):,}",
                    f"{int(out['pop'].to_numpy()[touched].sum()):,}")
        parts.cells, parts.population_changed = out, True


@dataclass(frozen=True, slots=True)
class CloseRoad(_Change):
    """
    Close road segments: between consecutive OSM node ids (`nodes`), every segment a line
    crosses (`line`), the segment nearest a point within `max_distance_m` (`point`), or rows of
    the loaded network's edge table (`edges`). Closures refer to the base network.
    """

    kind: ClassVar[str] = "close_road"
    keys: ClassVar[tuple[str, ...]] = ("type", "nodes", "line", "point", "max_distance_m", "edges")
    index: int
    nodes: tuple[int, ...] = ()
    line: tuple[tuple[float, float], ...] = ()
    point: tuple[float, float] | None = None
    max_distance_m: float = CLOSE_POINT_M
    edges: tuple[int, ...] = ()

    @classmethod
    def from_entry(cls, i: int, entry: _Entry, folder: Path) -> Change:
        change = cls(i, nodes=entry.take("nodes", "ids", ()), line=entry.take("line", "path", ()),
                     point=entry.take("point", "lonlat", None),
                     max_distance_m=entry.take("max_distance_m", "positive", CLOSE_POINT_M),
                     edges=entry.take("edges", "ids", ()))
        given = [k for k in ("nodes", "line", "point", "edges") if k in entry.data]
        if len(given) != 1:
            raise entry.fail("nodes", "give exactly one of `nodes` (OSM node ids along the road), "
                             f"`line`, `point` or `edges`; got {given or 'none'}.")
        if change.nodes and len(change.nodes) < 2:
            raise entry.fail("nodes", "needs at least two node ids (the ends of a segment).")
        return change

    def apply(self, parts: _Parts, where: str) -> None:
        parts.closed.append(self.closed_edges(parts.base_network, where))

    def closed_edges(self, network: WalkNetwork, where: str) -> np.ndarray:
        """Rows of ``network.edges`` the closure removes (at least one, else an error)."""
        edges = network.edges
        u, v = edges["u"].to_numpy(), edges["v"].to_numpy()
        if self.edges:
            bad = [e for e in self.edges if not 0 <= e < len(edges)]
            if bad:
                raise InputError(f"{where}.edges: {bad} are not rows of the network's edge table "
                                 f"(0..{len(edges) - 1}).")
            return np.asarray(self.edges, dtype=np.int64)
        if self.nodes:
            index = pd.Index(network.node_id)
            pos = index.get_indexer(list(self.nodes))
            if (pos < 0).any():
                missing = [n for n, p in zip(self.nodes, pos) if p < 0]
                raise InputError(f"{where}.nodes: node id(s) {missing} are not in the walking "
                                 "network (OSM node ids of the road's ends, as in the OSM file).")
            found = []
            for a, b in itertools.pairwise(pos):
                rows = np.flatnonzero(((u == a) & (v == b)) | ((u == b) & (v == a)))
                if not len(rows):
                    raise InputError(f"{where}.nodes: no road segment joins nodes "
                                     f"{network.node_id[a]} and {network.node_id[b]}; list the "
                                     "nodes in order along the road.")
                found.append(rows)
            return np.unique(np.concatenate(found))
        geoms = np.asarray(edges.geometry.values)
        tree = shapely.STRtree(geoms)
        if self.line:
            line = gpd.GeoSeries([shapely.LineString(self.line)], crs=WGS84).to_crs(network.crs).iloc[0]
            rows = tree.query(line, predicate="intersects")
            if not len(rows):
                raise InputError(f"{where}.line: the line crosses no walkable way; draw it across "
                                 "the road to close (lon/lat, longitude first).")
            return np.unique(rows)
        x, y = _lonlat_to(network, *self.point)
        rows = tree.query_nearest(shapely.Point(x, y), max_distance=self.max_distance_m)
        if not len(rows):
            raise InputError(f"{where}.point: no walkable way within {self.max_distance_m:g} m of "
                             f"{list(self.point)}; move the point onto the road or raise "
                             "max_distance_m.")
        return np.unique(rows)[:1]

    def touched_points(self) -> list[tuple[float, float]]:
        return list(self.line) + ([self.point] if self.point else [])

    def changed_roads(self) -> list[tuple[Any, float]] | None:
        if self.edges or self.nodes:
            return None
        if self.line:
            return [(shapely.LineString(self.line), 0.0)]
        return [(shapely.Point(self.point), self.max_distance_m)]


@dataclass(frozen=True, slots=True)
class AddLink(_Change):
    """A new walkable link (footbridge, crossing) between the nodes nearest two lon/lat points."""

    kind: ClassVar[str] = "add_link"
    keys: ClassVar[tuple[str, ...]] = ("type", "from", "to", "length_m", "highway", "name")
    index: int
    start: tuple[float, float]
    end: tuple[float, float]
    length_m: float | None = None      # None: the straight line between the two nodes
    highway: str = "footway"
    name: str = ""

    @classmethod
    def from_entry(cls, i: int, entry: _Entry, folder: Path) -> Change:
        return cls(i, entry.take("from", "lonlat"), entry.take("to", "lonlat"),
                   entry.take("length_m", "positive", None), entry.take("highway", "str", "footway"),
                   entry.take("name", "str", ""))

    def apply(self, parts: _Parts, where: str) -> None:
        parts.links.append((self, where))      # its edge is made after all changes (see _Parts)

    def edge(self, network: WalkNetwork, where: str) -> dict[str, Any]:
        """The new edge (node indices, length, geometry) the link adds."""
        ends = []
        for key, (lon, lat) in (("from", self.start), ("to", self.end)):
            x, y = _lonlat_to(network, lon, lat)
            snap = snap_points(network, np.array([x]), np.array([y]), max_access_m=LINK_SNAP_M)
            if snap.off_network[0]:
                raise InputError(f"{where}.{key}: [{lon}, {lat}] lies more than {LINK_SNAP_M:g} m "
                                 "from every network node; a link must join the existing network.")
            ends.append(int(snap.node[0]))
        a, b = ends
        if a == b:
            raise InputError(f"{where}: both ends snap to the same network node; the link would "
                             "join nothing. Move `from` and `to` apart.")
        straight = float(np.hypot(network.x[a] - network.x[b], network.y[a] - network.y[b]))
        return {"u": a, "v": b, "length_m": self.length_m or straight, "highway": self.highway,
                "geometry": shapely.LineString([(network.x[a], network.y[a]),
                                                (network.x[b], network.y[b])])}

    def touched_points(self) -> list[tuple[float, float]]:
        return [self.start, self.end]

    def changed_roads(self) -> list[tuple[Any, float]] | None:
        return [(shapely.LineString([self.start, self.end]), 0.0)]


Change = AddCenter | RemoveCenter | MoveCenter | AddResidents | ScalePopulation | CloseRoad | AddLink
_CHANGE_TYPES = {c.kind: c for c in (AddCenter, RemoveCenter, MoveCenter, AddResidents,
                                     ScalePopulation, CloseRoad, AddLink)}
_TOML_NAMES = {"start": "from", "end": "to"}     # `from` is a Python keyword


@dataclass(frozen=True, slots=True)
class BaseInputs:
    """The inputs a scenario changes: the demo city, or files (absolute paths)."""

    demo: bool = False
    demo_seed: int = 0
    network: str | None = None
    population: str | None = None
    population_column: str | None = None
    centers: str | None = None
    communities: str | None = None
    districts: str | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A what-if: base inputs, plan options (PlanConfig fields, `use_districts`) and changes."""

    name: str
    base: BaseInputs
    plan: tuple[tuple[str, Any], ...] = ()
    changes: tuple[Change, ...] = ()
    description: str = ""
    source: str = ""                     # the TOML file it was read from, if any

    @property
    def options(self) -> dict[str, Any]:
        """The [plan] table as a dict."""
        return dict(self.plan)

    @property
    def use_districts(self) -> bool:
        return bool(self.options.get("use_districts", True))

    def config(self, base: PlanConfig | None = None) -> PlanConfig:
        """`base` (default PlanConfig()) with this scenario's [plan] values."""
        fields = {k: v for k, v in self.options.items() if k != "use_districts"}
        if fields.get("max_unit_pop") == 0:       # TOML has no None: 0 means never split
            fields["max_unit_pop"] = None
        try:
            return dataclasses.replace(base or PlanConfig(), **fields)
        except InputError as exc:
            raise InputError(f"{self._label()}: [plan]: {exc}") from None

    def with_plan(self, **options: Any) -> Scenario:
        """A copy whose [plan] table has `options` set (None values are ignored)."""
        merged = self.options | {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(merged) - set(_PLAN_KEYS))
        if unknown:
            raise InputError(f"unknown plan option(s) {unknown}; known: {list(_PLAN_KEYS)}.")
        return dataclasses.replace(self, plan=_ordered_plan(merged))

    def resolved(self, config: PlanConfig) -> Scenario:
        """A copy with every PlanConfig field written out, for exact reproduction."""
        fields = config.to_dict()
        fields["max_unit_pop"] = fields["max_unit_pop"] or 0
        return self.with_plan(**fields, use_districts=self.use_districts)

    def to_dict(self) -> dict[str, Any]:
        """The TOML document (absolute paths, no None values)."""
        doc: dict[str, Any] = {"name": self.name}
        if self.description:
            doc["description"] = self.description
        if self.base.demo:
            doc["base"] = ("demo" if self.base.demo_seed == 0
                           else {"demo": True, "demo_seed": self.base.demo_seed})
        else:
            doc["base"] = {k: v for k, v in dataclasses.asdict(self.base).items()
                           if k not in ("demo", "demo_seed") and v is not None}
        if self.plan:
            doc["plan"] = self.options
        if self.changes:
            doc["changes"] = [_change_dict(c) for c in self.changes]
        return doc

    def _label(self) -> str:
        return f"scenario '{self.source}'" if self.source else f"scenario {self.name!r}"

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Scenario:
        """Read a scenario file; see the module docstring for its layout."""
        return load_scenario(path)

    @classmethod
    def from_paths(cls, *, network: str | os.PathLike[str], population: str | os.PathLike[str],
                   population_column: str | None = None, centers: str | os.PathLike[str] | None = None,
                   communities: str | os.PathLike[str] | None = None,
                   districts: str | os.PathLike[str] | None = None, name: str = "plan") -> Scenario:
        """A scenario without changes over input files (what `covplan plan` without --scenario runs)."""
        def absolute(p):
            return None if p is None else str(Path(p).resolve())
        base = BaseInputs(network=absolute(network), population=absolute(population),
                          population_column=population_column, centers=absolute(centers),
                          communities=absolute(communities), districts=absolute(districts))
        return cls(name=name, base=base)


def _ordered_plan(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple((k, options[k]) for k in _PLAN_KEYS if k in options)


def _change_dict(change: Change) -> dict[str, Any]:
    out: dict[str, Any] = {"type": change.kind}
    for f in dataclasses.fields(change):
        value = getattr(change, f.name)
        if f.name == "index" or value is None or value == () or value == "":
            continue
        if f.name == "max_distance_m" and value == CLOSE_POINT_M:
            continue
        out[_TOML_NAMES.get(f.name, f.name)] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


# ---- reading -------------------------------------------------------------------------------
class _Entry:
    """One TOML table being read: rejects unknown keys by name, takes keys with type checks."""

    def __init__(self, data: Mapping[str, Any], where: str, label: str) -> None:
        if not isinstance(data, Mapping):
            raise InputError(f"{label}: {where} must be a table, got {type(data).__name__}.")
        self.data, self.where, self.label = data, where, label

    def fail(self, key: str, problem: str) -> InputError:
        return InputError(f"{self.label}: {self.where}.{key}: {problem}")

    def take(self, key: str, kind: str, default: Any = _REQUIRED) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise self.fail(key, "missing; this entry needs it.")
            return default
        return _check_value(self.data[key], kind, lambda problem: self.fail(key, problem))

    def done(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                tip = f"did you mean '{hint[0]}'? " if hint else ""
                raise InputError(f"{self.label}: {self.where}: unknown key '{key}'; {tip}"
                                 f"allowed keys: {', '.join(allowed)}.")


def _check_value(value: Any, kind: str, fail) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str":
        if not isinstance(value, str):
            raise fail(f"must be a string, got {value!r}.")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise fail(f"must be true or false, got {value!r}.")
        return value
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail(f"must be a whole number, got {value!r}.")
        return value
    if kind == "count":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise fail(f"must be a whole number, 0 or more, got {value!r}.")
        return value
    if kind == "positive_int":
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise fail(f"must be a positive whole number, got {value!r}.")
        return value
    if kind in ("number", "positive", "non_negative"):
        if not number or not np.isfinite(value):
            raise fail(f"must be a number, got {value!r}.")
        if kind == "positive" and value <= 0:
            raise fail(f"must be greater than 0, got {value!r}.")
        if kind == "non_negative" and value < 0:
            raise fail(f"must not be negative, got {value!r}.")
        return float(value)
    if kind == "lonlat":
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise fail(f"must be [lon, lat] in degrees, got {value!r}.")
        lon, lat = float(value[0]), float(value[1])
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise fail(f"[{lon}, {lat}] is not a lon/lat pair (lon -180..180, lat -90..90); "
                       "coordinates are EPSG:4326 degrees, longitude first.")
        return (lon, lat)
    if kind in ("ring", "path"):
        least = 3 if kind == "ring" else 2
        if not isinstance(value, list) or len(value) < least:
            raise fail(f"must be a list of at least {least} [lon, lat] points, got {value!r}.")
        return tuple(_check_value(v, "lonlat", lambda p, i=i: fail(f"point {i}: {p}"))
                     for i, v in enumerate(value))
    if kind == "ids":
        if not isinstance(value, list) or not value or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise fail(f"must be a non-empty list of whole numbers, got {value!r}.")
        return tuple(value)
    raise AssertionError(kind)


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """
    Read a scenario TOML file into a `Scenario` (paths resolved against the file's folder).

    Raises
    ------
    DataSourceError
        If the file is missing or unreadable.
    InputError
        If it is not valid TOML, or a key is unknown, missing or has a bad value; the message
        names the table and entry, e.g. ``changes[2].center_id``.
    """
    file = Path(path)
    label = f"scenario '{os.fspath(path)}'"
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"{label} cannot be read: {exc.strerror or exc}; check the path."
        raise DataSourceError(msg) from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{label} is not valid TOML: {exc}."
        raise InputError(msg) from None
    folder = file.resolve().parent
    top = _Entry(doc, "top level", label)
    name = top.take("name", "str", file.stem)
    description = top.take("description", "str", "")
    top.done(("name", "description", "base", "plan", "changes"))
    base = _read_base(doc.get("base", _REQUIRED), folder, label)
    plan = _read_plan(doc.get("plan", {}), label)
    raw_changes = doc.get("changes", [])
    if not isinstance(raw_changes, list):
        raise InputError(f"{label}: `changes` must be an array of tables ([[changes]]).")
    changes = tuple(_read_change(item, i, folder, label) for i, item in enumerate(raw_changes))
    scenario = Scenario(name=name, base=base, plan=plan, changes=changes,
                        description=description, source=os.fspath(path))
    scenario.config()          # bad [plan] values fail here, at reading time
    logger.info("Scenario %r from %s: %d change(s)", name, path, len(changes))
    return scenario


def _read_base(value: Any, folder: Path, label: str) -> BaseInputs:
    if value is _REQUIRED:
        raise InputError(f"{label}: missing `base`: write base = \"demo\" or a [base] table with "
                         "network = ... and population = ... paths.")
    if isinstance(value, str):
        if value != "demo":
            raise InputError(f"{label}: base = {value!r}: the only named base is \"demo\"; "
                             "for files write a [base] table (network = ..., population = ...).")
        return BaseInputs(demo=True)
    entry = _Entry(value, "base", label)
    demo = entry.take("demo", "bool", False)
    seed = entry.take("demo_seed", "int", 0)
    paths = {}
    for key in _BASE_FILES:
        raw = entry.take(key, "str", None)
        paths[key] = None if raw is None else str((folder / raw).resolve())
    column = entry.take("population_column", "str", None)
    entry.done(_BASE_KEYS)
    if demo and any(paths.values()):
        raise InputError(f"{label}: base: demo = true cannot be combined with file paths "
                         f"({', '.join(k for k, v in paths.items() if v)}).")
    if not demo and (paths["network"] is None or paths["population"] is None):
        missing = [k for k in ("network", "population") if paths[k] is None]
        raise InputError(f"{label}: base: missing {' and '.join(missing)}; "
                         "give both paths, or base = \"demo\".")
    return BaseInputs(demo=demo, demo_seed=seed, population_column=column, **paths)


_PLAN_KINDS = {"target_pop": "positive_int", "tolerance": "number", "max_minutes": "number",
               "walk_speed_kmh": "number", "candidate_spacing_m": "positive",
               "max_unit_pop": "count", "restarts": "positive_int", "tries": "positive_int",
               "seed": "int",
               "stability_minutes": "non_negative", "exceptions": "str",
               "min_pop_exception": "non_negative", "use_districts": "bool",
               "max_new_centers": "int", "new_center_cost": "non_negative", "grids": "bool",
               "grid_target": "positive_int", "grid_tolerance": "number",
               "grid_minutes": "number", "household_size": "positive"}


def _read_plan(value: Any, label: str) -> tuple[tuple[str, Any], ...]:
    entry = _Entry(value, "plan", label)
    options = {}
    for key in _PLAN_KEYS:
        got = entry.take(key, _PLAN_KINDS[key], None)
        if got is not None:
            options[key] = got
    entry.done(_PLAN_KEYS)
    return _ordered_plan(options)


def _read_change(item: Any, i: int, folder: Path, label: str) -> Change:
    where = f"changes[{i}]"
    entry = _Entry(item, where, label)
    kind = entry.take("type", "str")
    cls = _CHANGE_TYPES.get(kind)
    if cls is None:
        hint = difflib.get_close_matches(kind, list(_CHANGE_TYPES), n=1)
        raise entry.fail("type", f"unknown change type {kind!r}; "
                         + (f"did you mean '{hint[0]}'? " if hint else "")
                         + f"known: {', '.join(_CHANGE_TYPES)}.")
    entry.done(cls.keys)
    return cls.from_entry(i, entry, folder)


def _polygon_source(entry: _Entry, folder: Path) -> tuple[Any, str | None]:
    """Exactly one of `polygon` (a lon/lat ring) and `polygon_file` (resolved from `folder`)."""
    polygon = entry.take("polygon", "ring", None)
    polygon_file = entry.take("polygon_file", "str", None)
    if (polygon is None) == (polygon_file is None):
        raise entry.fail("polygon", "give exactly one of `polygon` (a [lon, lat] ring) "
                         "and `polygon_file` (a vector file).")
    return polygon, None if polygon_file is None else str((folder / polygon_file).resolve())


def write_scenario(scenario: Scenario, path: str | os.PathLike[str]) -> Path:
    """Write `scenario` as TOML (absolute paths), readable again by `load_scenario`."""
    import tomli_w

    target = Path(path)
    header = (f"# Scenario written by coverage {__version__}; "
              "`covplan plan --scenario THIS_FILE --out DIR` reproduces the plan.\n")
    target.write_text(header + tomli_w.dumps(scenario.to_dict()), encoding="utf-8")
    logger.info("Wrote %s", target)
    return target


# ---- inputs --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, eq=False)   # eq=False: pandas fields don't compare to bool
class ScenarioInputs:
    """Everything a plan reads: network, population, optional layers and the PlanConfig."""

    network: WalkNetwork
    population: Population
    centers: gpd.GeoDataFrame | None = None
    communities: gpd.GeoDataFrame | None = None
    districts: gpd.GeoDataFrame | None = None
    config: PlanConfig = field(default_factory=PlanConfig)
    layers: dict[str, gpd.GeoDataFrame] = field(default_factory=dict)   # extra map layers


def load_inputs(scenario: Scenario, *, config: PlanConfig | None = None,
                progress: bool = False) -> ScenarioInputs:
    """The base inputs a scenario names, unchanged (`config` defaults to PlanConfig())."""
    from covplan.inputs.areas import load_centers, load_communities, load_districts
    from covplan.inputs.network import load_network
    from covplan.inputs.population import load_population

    base = scenario.base
    if base.demo:
        from covplan.cities.demo import build_demo_city

        city = build_demo_city(seed=base.demo_seed)
        return ScenarioInputs(
            network=load_network(city.graph),
            population=load_population(city.population, population_column="population",
                                       id_column="cell_id"),
            centers=load_centers(city.centers), communities=load_communities(city.communities),
            districts=load_districts(city.districts), config=config or PlanConfig(),
            layers={"districts": city.districts, "railway": city.railway})
    return ScenarioInputs(
        network=load_network(base.network, progress=progress),
        population=load_population(base.population, population_column=base.population_column),
        centers=load_centers(base.centers) if base.centers else None,
        communities=load_communities(base.communities) if base.communities else None,
        districts=load_districts(base.districts) if base.districts else None,
        config=config or PlanConfig())


def apply_scenario(inputs: ScenarioInputs, scenario: Scenario) -> ScenarioInputs:
    """
    New inputs with the scenario applied; `inputs` is never modified.

    [plan] values replace fields of ``inputs.config`` (walking speed also goes to the network);
    ``use_districts = false`` drops the districts; center changes, then population changes, run
    in file order; road closures refer to the base network and new links are added after them.

    Raises
    ------
    InputError
        If a change refers to a missing center, lies outside the city, matches no road, or
        leaves no residents; the message names the entry, e.g. ``changes[1].center_id``.
    """
    label = scenario._label()
    config = scenario.config(inputs.config)
    network = inputs.network.with_walk_speed(config.walk_speed_kmh)
    parts = _Parts(
        base_network=inputs.network, network=network,
        hull=shapely.convex_hull(shapely.multipoints(np.column_stack([network.x, network.y]))),
        centers=None if inputs.centers is None else inputs.centers.copy(),
        cells=inputs.population.cells)
    for change in scenario.changes:
        change.apply(parts, f"{label}: changes[{change.index}]")
    if parts.closed or parts.links:
        network = _rebuild_network(
            network, np.concatenate(parts.closed) if parts.closed else np.zeros(0, int),
            [link.edge(network, where) for link, where in parts.links])
    population = inputs.population
    if parts.population_changed:
        cells = parts.cells
        if int(cells["pop"].sum()) == 0:
            raise InputError(f"{label}: the changes leave no residents at all; nothing to plan.")
        population = Population.from_frame(cells, population_column="pop", id_column="cell_id")
        logger.info("Scenario population: %s residents (base %s)", f"{population.total:,}",
                    f"{inputs.population.total:,}")
    if parts.warnings:     # carried to the plan's report.json `warnings`
        population = dataclasses.replace(population,
                                          warnings=(*population.warnings, *parts.warnings))
    districts = inputs.districts if scenario.use_districts else None
    return ScenarioInputs(network=network, population=population, centers=parts.centers,
                          communities=inputs.communities, districts=districts, config=config,
                          layers=dict(inputs.layers))


@dataclass(slots=True, eq=False)
class _Parts:
    """
    The inputs `apply_scenario` builds, which each change's `apply` edits in file order. Road
    changes are only collected: the network is rebuilt once after all changes, without the
    closed rows of `base_network` and with the links' edges (found then, on `network`).
    """

    base_network: WalkNetwork          # as loaded: closures refer to its edge rows
    network: WalkNetwork               # at the scenario's walking speed
    hull: Any                          # convex hull of the network nodes: "inside the city"
    centers: gpd.GeoDataFrame | None
    cells: gpd.GeoDataFrame
    population_changed: bool = False
    warnings: list[str] = field(default_factory=list)  # implausible but usable changes
    closed: list[np.ndarray] = field(default_factory=list)                # edge rows to drop
    links: list[tuple[AddLink, str]] = field(default_factory=list)       # links to add, `where`


# ---- centers -------------------------------------------------------------------------------
def _center_ids(centers: gpd.GeoDataFrame | None, change: RemoveCenter | MoveCenter,
                where: str) -> pd.Series:
    """The base centers' ids, checked to hold the center `change` closes or moves."""
    if centers is None or len(centers) == 0:
        raise InputError(f"{where}.center_id: the base has no centers to {change.kind.split('_')[0]}.")
    ids = centers["center_id"].astype(str)
    if change.center_id not in set(ids):
        hint = difflib.get_close_matches(change.center_id, list(ids), n=3)
        raise InputError(f"{where}.center_id: no center {change.center_id!r} among the "
                         f"{len(ids)} base centers" + (f" (close: {', '.join(hint)})" if hint else "")
                         + "; check the id against the centers file.")
    return ids


def _lonlat_to(network: WalkNetwork, lon: float, lat: float) -> tuple[float, float]:
    point = gpd.GeoSeries(gpd.points_from_xy([lon], [lat]), crs=WGS84).to_crs(network.crs)
    return float(point.x.iloc[0]), float(point.y.iloc[0])


def _require_near_network(network: WalkNetwork, lon: float, lat: float, where: str) -> None:
    x, y = _lonlat_to(network, lon, lat)
    snap = snap_points(network, np.array([x]), np.array([y]))
    if snap.off_network[0]:
        gap = float(np.min(np.hypot(network.x - x, network.y - y)))
        raise InputError(f"{where}: [{lon}, {lat}] lies {gap:,.0f} m from the nearest walkable "
                         f"way, farther than {DEFAULT_MAX_ACCESS_M:g} m: outside the city? "
                         "Coordinates are lon/lat, longitude first.")


# ---- population ----------------------------------------------------------------------------
def _polygon(change: AddResidents | ScalePopulation, crs: pyproj.CRS, hull, where: str):
    """The change's polygon in the working CRS, checked to lie (at least partly) in the city."""
    key = "polygon" if change.polygon is not None else "polygon_file"
    if change.polygon is not None:
        shape = shapely.Polygon(change.polygon)
        series = gpd.GeoSeries([shape], crs=WGS84)
    else:
        from covplan.inputs.areas import read_vector

        frame = read_vector(change.polygon_file, what=f"{where}.polygon_file")
        series = gpd.GeoSeries([shapely.union_all(frame.geometry.values)], crs=frame.crs)
    shape = series.to_crs(crs).iloc[0]
    if not shape.is_valid:
        shape = shapely.make_valid(shape)
    shape = _polygonal(shape)
    if shape.is_empty or shape.area <= 0:
        raise InputError(f"{where}.{key}: the polygon has no area; give at least three distinct "
                         "[lon, lat] corners.")
    if not shape.intersects(hull):
        bounds = series.to_crs(WGS84).total_bounds
        raise InputError(f"{where}.{key}: the polygon (lon {bounds[0]:.4f}..{bounds[2]:.4f}, lat "
                         f"{bounds[1]:.4f}..{bounds[3]:.4f}) lies outside the city: it touches no "
                         "part of the walking network. Coordinates are lon/lat, longitude first.")
    return shape


def _grid_pieces(area, size_m: float) -> np.ndarray:
    """Squares of a grid aligned to multiples of `size_m`, clipped to `area` (crumbs dropped)."""
    if area.is_empty:
        return np.empty(0, dtype=object)
    x0, y0, x1, y1 = area.bounds
    xs = np.arange(np.floor(x0 / size_m), np.ceil(x1 / size_m)) * size_m
    ys = np.arange(np.floor(y0 / size_m), np.ceil(y1 / size_m)) * size_m
    gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
    pieces = shapely.intersection(shapely.box(gx, gy, gx + size_m, gy + size_m), area)
    pieces = pieces[shapely.area(pieces) > 0.01 * size_m ** 2]
    return np.asarray([_polygonal(p) for p in pieces], dtype=object)


def _polygonal(shape):
    """The polygon parts of a clipped shape (clipping can add slivers of lines or points)."""
    parts = shapely.get_parts(shape)
    return shapely.union_all(parts[np.isin(shapely.get_type_id(parts), (3, 6))])


# ---- network -------------------------------------------------------------------------------
def _rebuild_network(network: WalkNetwork, closed: np.ndarray, added: list[dict[str, Any]]) -> WalkNetwork:
    """The network without the `closed` edge rows and with `added` edges (both directions)."""
    out = network.with_edges(drop=closed, add=pd.DataFrame(
        added, columns=["u", "v", "length_m", "highway", "geometry"]))
    logger.info("Scenario network: %d edge(s) closed, %d added; %d nodes, %d edges, %d component(s)",
                len(np.unique(closed)), len(added), out.n_nodes, out.n_edges,
                int(out.component.max()) + 1)
    return out


# ---- provenance ----------------------------------------------------------------------------
def _sha256(path: str) -> str | None:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def resolved_parameters(scenario: Scenario, config: PlanConfig) -> dict[str, Any]:
    """Every parameter and input a plan was made from, with checksums of the input files."""
    base = scenario.base
    inputs: dict[str, Any] = {"demo": base.demo}
    if base.demo:
        inputs["demo_seed"] = base.demo_seed
    for key in _BASE_FILES:
        path = getattr(base, key)
        if path is not None:
            inputs[key] = {"path": path, "sha256": _sha256(path)}
    if base.population_column:
        inputs["population_column"] = base.population_column
    return {"scenario": scenario.name, "description": scenario.description,
            "scenario_file": scenario.source or None, "version": __version__, "seed": config.seed,
            "config": config.to_dict(), "use_districts": scenario.use_districts, "inputs": inputs,
            "changes": [_change_dict(c) for c in scenario.changes]}

