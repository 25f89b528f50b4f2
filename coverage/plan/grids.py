"""
Grids (网格) inside the communities of a plan: each community split into contiguous grids of
about `target_pop` residents, each looked after from a grid station (a network node) that its
residents reach within `max_minutes` on foot.

plan + walking network
  -> the plan's units, their pieces of their community (`unit_pieces` with communities as
     cells) and adjacency -> units x (community, station node) minutes -> per community the
     partition core, or where walks are scarce balanced grids packed first
     (`covplan.plan.grid_balance.pack`), then repaired by moving units between neighbouring
     grids (`rebalance`)
  -> grids, stations with the smallest worst walk, ids by station position or inherited from
     `previous_grids`, figures, notes and a report (`covplan.plan.grid_report`), in the
     population's CRS.

Grids are built per community, so none crosses a community boundary; population is conserved
to the person (checked). With `previous_grids`, a community whose units did not change keeps its
grids (ids and units) as they were; a changed one keeps the old grids that still meet every rule
and inherits ids by shared residents (`covplan.plan.ids.inherit_ids`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import scipy.sparse as sp
import shapely
from covplan._validate import require_positive
from covplan.defaults import MAX_MINUTES_LIMIT, population_band
from covplan.errors import InfeasibleError, InputError
from covplan.inputs.areas import label_units
from covplan.inputs.population import Population
from covplan.inputs.tessellation import dissolve_pieces, piece_adjacency, unit_pieces
from covplan.plan.grid_balance import pack, rebalance
from covplan.plan.grid_report import (
    INSIDE_M,
    check_conserved,
    grid_report,
    grids_frame,
    outside_population,
    shortfall,
    stations_frame,
    units_frame,
)
from covplan.plan.ids import inherit_ids
from covplan.reach.matrix import ReachMatrix, compute_reach
from covplan.solve.bounds import FeasibilityBound, feasibility_bound
from covplan.solve.partition.core import PartitionProblem, band_key, partition_units
from covplan.solve.partition.flow import split_pieces
from scipy.sparse.csgraph import connected_components

if TYPE_CHECKING:
    from covplan.inputs.network import WalkNetwork
    from covplan.plan.pipeline import Plan

__all__ = ["GRID_FLAGS", "Grids", "plan_grids"]

logger = logging.getLogger(__name__)

# plan_grids keyword -> the `covplan plan` flag that sets it, for messages.
GRID_FLAGS = {"target_pop": "--grid-target", "tolerance": "--grid-tolerance",
              "max_minutes": "--grid-minutes", "household_size": "--household-size",
              "seed": "--seed"}
_STABILITY_MINUTES = 2.0    # per-person cost of leaving one's old grid (as for communities)
_NODE_SPACING_M = 1.0       # station candidates: every node some unit of the community joins
_SNAP_M = 1e-3              # community borders are snapped to this grid before cutting pieces
_FRESH_LABEL = 1 << 40      # labels of grid pieces split off, above every column and old grid


@dataclass(frozen=True, slots=True, eq=False)
class Grids:
    """The grids of a plan, in the CRS of the plan's population."""

    grids: gpd.GeoDataFrame     # one polygon per grid with its figures and note (see plan_grids)
    stations: gpd.GeoDataFrame  # one point per grid: grid_id, community_id, station_id, inside
    units: pd.DataFrame         # every unit in a community: unit_id, community_id, grid_id, pop,
    #                             minutes (to its grid's station; NaN beyond the limit)
    report: dict


@dataclass(frozen=True, slots=True, eq=False)
class _Space:
    """The plan's units in communities, their pieces, and minutes to station candidates; the
    candidates are per community (a node both sides of a border reach is two columns), so a
    bound or a partition over them never crosses a community boundary."""

    units: gpd.GeoDataFrame     # position-indexed, working CRS: unit_id, community_id, pop
    community: np.ndarray       # community index per unit
    ids: list[str]              # community ids, by index
    pieces: gpd.GeoSeries
    adjacency: sp.csr_matrix
    reach: ReachMatrix          # units x columns (community, candidate node)
    column_community: np.ndarray
    bound: FeasibilityBound

    @property
    def pop(self) -> np.ndarray:
        return self.units["pop"].to_numpy(dtype="int64")

    def columns(self, k: int) -> np.ndarray:
        return np.flatnonzero(self.column_community == k)


@dataclass(frozen=True, slots=True, eq=False)
class _Params:
    target_pop: float
    tolerance: float
    max_minutes: float
    seed: int

    @property
    def band(self) -> tuple[float, float]:
        return population_band(self.target_pop, self.tolerance)


@dataclass(frozen=True, slots=True, eq=False)
class _Previous:
    """The earlier grids on the current units and columns."""

    ids: list[str]
    unit: np.ndarray            # old grid index per unit (-1 none)
    column: np.ndarray          # old grid index the candidate of each column lies in (-1 none)
    pop: np.ndarray | None      # old grid populations, when the layer has them


def plan_grids(plan: Plan, network: WalkNetwork, *, target_pop: float = 1_000,
               tolerance: float = 0.25, max_minutes: float = 5.0,
               household_size: float | None = None,
               previous_grids: gpd.GeoDataFrame | None = None, seed: int = 0) -> Grids:
    """
    Split every community of `plan` into contiguous grids balanced in residents, each with a
    grid station its residents reach within `max_minutes`.

    Parameters
    ----------
    plan
        A `Plan` (its units, communities and walking speed are used).
    network
        The walking network the plan was made on (a WalkNetwork or an osmnx/networkx graph).
    target_pop, tolerance
        Residents per grid and the allowed relative deviation (grids of 750-1,250 by default).
    max_minutes
        Walk from every resident to the grid station, access legs included.
    household_size
        Residents per household: gives each grid's ``households``; None leaves the column out.
    previous_grids
        Grids of an earlier plan (polygons with ``grid_id``, any CRS; e.g. the ``grids`` layer
        of its plan.gpkg): unchanged communities keep them, changed ones inherit ids.
    seed
        Seed of the partition; the same inputs and seed give the same grids.

    Returns
    -------
    Grids
        ``grids``: grid_id (community id + "-G01", ... numbered north to south, west to east
        by station), community_id, population, households (with `household_size`), station_id
        (the network's node id), mean_minutes and max_minutes (walk to the station of the
        residents within the limit), beyond_limit (residents beyond it), within_tolerance,
        contiguous, units, kept (taken over from `previous_grids`), note (why a grid misses a
        rule: "cannot" only where proven). ``stations``, ``units`` and ``report`` (see
        `Grids`).

    Raises
    ------
    InputError
        For unusable parameters, a plan without residents in communities, or previous grids
        without ``grid_id`` or CRS.
    InfeasibleError
        If no resident reaches any network node within `max_minutes`.
    """
    from covplan.inputs.network import as_walk_network

    started = time.perf_counter()
    params = _check(target_pop, tolerance, max_minutes, household_size, seed)
    network = as_walk_network(network).with_walk_speed(plan.config.walk_speed_kmh)
    space = _space(plan, network, params)
    prev = _previous(space, previous_grids)
    label, kept = _labels(space, prev, params)
    shapes = dissolve_pieces(space.pieces, label, crs=space.units.crs)
    station = _stations(space, label, shapes)
    grid_ids = _grid_ids(space, label, station, prev, kept)
    grids = grids_frame(space, label, shapes, station, grid_ids, kept, params, network,
                        household_size)
    check_conserved(space, grids)
    crs = plan.communities.crs
    units = units_frame(space, label, station, grid_ids)
    stations = stations_frame(space, label, station, grid_ids, network, crs)
    report = grid_report(space, grids, units, prev, params, household_size,
                         time.perf_counter() - started, outside=outside_population(plan))
    logger.info("Grids: %d in %d communities, %.1f %% within ±%g %% of %g (at most %.1f %% "
                "possible), %.1f %% of residents within %g min of their station (at most %.1f %% "
                "possible) (%.1f s)", len(grids), len(space.ids),
                100 * report["within_tolerance_share"], 100 * params.tolerance, params.target_pop,
                100 * report["within_tolerance_ceiling"], 100 * report["within_limit_share"],
                params.max_minutes, 100 * report["within_limit_ceiling"], report["runtime_s"])
    return Grids(grids=grids.to_crs(crs), stations=stations, units=units, report=report)


def _check(target_pop, tolerance, max_minutes, household_size, seed) -> _Params:
    def flag(name: str) -> str:
        return f"{GRID_FLAGS[name]} / plan_grids({name}=...)"

    require_positive(target_pop, name=f"target_pop ({flag('target_pop')})")
    if isinstance(tolerance, bool) or not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        msg = (f"tolerance must be a share strictly between 0 and 1, e.g. 0.25 for ±25 % "
               f"({flag('tolerance')}), got {tolerance!r}.")
        raise InputError(msg)
    require_positive(max_minutes, name=f"max_minutes ({flag('max_minutes')})",
                     upper=MAX_MINUTES_LIMIT)
    if household_size is not None:
        require_positive(household_size, name=f"household_size ({flag('household_size')})")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        msg = f"seed must be a whole number ≥ 0 ({flag('seed')}), got {seed!r}."
        raise InputError(msg)
    return _Params(float(target_pop), float(tolerance), float(max_minutes), int(seed))


# --- the space: units, pieces, station candidates ----------------------------------------------

def _space(plan: Plan, network: WalkNetwork, params: _Params) -> _Space:
    """Units of communities with their pieces of their community and minutes to the nodes."""
    work = network.crs
    served = plan.units[plan.units["community_id"].notna()]
    if served.empty or int(served["pop"].sum()) == 0:
        msg = ("the plan has no residents in communities, so there is nothing to split into "
               "grids; plan communities first (covplan plan, plan_communities).")
        raise InputError(msg)
    points = served.to_crs(work)
    community_ids = plan.communities["community_id"].astype(str)
    cid = points["community_id"].astype(str).to_numpy()
    missing = sorted(set(cid) - set(community_ids))
    if missing:
        msg = (f"units name communities the plan's communities layer lacks, e.g. {missing[:5]}; "
               "pass a plan whose units and communities agree.")
        raise InputError(msg)
    ids = [c for c in community_ids if c in set(cid)]
    index_of = {c: i for i, c in enumerate(ids)}
    units = gpd.GeoDataFrame({"unit_id": points["unit_id"].to_numpy(),
                              "community_id": cid,
                              "pop": points["pop"].to_numpy(dtype="int64")},
                             geometry=points.geometry.values, crs=work)
    # Communities play the cells: each unit's piece is its Voronoi region within its
    # community, so grids (unions of pieces) tile their community and never leave it.
    as_units = gpd.GeoDataFrame({"unit_id": np.arange(len(units)), "cell_id": cid,
                                 "pop": units["pop"].to_numpy()}, geometry=units.geometry.values,
                                crs=work)
    comm = plan.communities.assign(community_id=community_ids).drop_duplicates("community_id")
    comm = comm.set_index("community_id").loc[ids].to_crs(work)
    # Snapped to 1 mm: the round trip through the population's CRS leaves float noise along
    # borders, which would cut slivers and stray lines off the pieces.
    cells = gpd.GeoDataFrame({"cell_id": ids, "pop": [int(units["pop"][cid == c].sum()) for c in ids]},
                             geometry=shapely.set_precision(comm.geometry.values, _SNAP_M),
                             crs=work)
    community = np.array([index_of[c] for c in cid], dtype="int64")
    population = Population(units=as_units, cells=cells, source="the plan's units",
                            population_column="pop")
    reach = compute_reach(network, population, max_minutes=params.max_minutes,
                          candidate_spacing_m=_NODE_SPACING_M)
    if reach.minutes.nnz == 0:
        msg = (f"no resident reaches a network node within {params.max_minutes:g} min, so no "
               f"grid station can serve anyone; raise the grids' walk limit "
               f"({GRID_FLAGS['max_minutes']} / plan_grids(max_minutes=...)).")
        raise InfeasibleError(msg)
    pieces = unit_pieces(as_units, cells)
    pieces = gpd.GeoSeries(_tidy_pieces(np.asarray(pieces.values), community), crs=work)
    adjacency = piece_adjacency(pieces)
    coo = reach.minutes.tocoo()
    n_cand = reach.minutes.shape[1]
    pairs, column = np.unique(community[coo.row] * n_cand + coo.col, return_inverse=True)
    minutes = sp.csr_matrix((coo.data, (coo.row, column.ravel())), shape=(len(units), len(pairs)))
    minutes.sort_indices()
    candidates = reach.candidates.iloc[pairs % n_cand].reset_index(drop=True)
    reach = dataclasses.replace(reach, minutes=minutes, candidates=candidates)
    bound = feasibility_bound(reach, min_pop=params.band[0], component=network.component,
                              adjacency=adjacency)
    return _Space(units=units, community=community, ids=ids, pieces=pieces,
                  adjacency=adjacency, reach=reach, column_community=pairs // n_cand,
                  bound=bound)


def _tidy_pieces(pieces: np.ndarray, community: np.ndarray) -> np.ndarray:
    """Pieces as polygons only (a Voronoi edge along a border leaves stray lines), each part
    cut off from its unit's piece (a region reaching round a bend of its community) given to
    the piece of the same community sharing most of its boundary, so every piece is one part."""
    parts, owner = shapely.get_parts(pieces, return_index=True)
    polygonal = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 0)
    parts, owner = parts[polygonal], owner[polygonal]
    order = np.lexsort((-shapely.area(parts), owner))
    main = np.zeros(len(parts), dtype=bool)
    main[order[np.unique(owner[order], return_index=True)[1]]] = True
    target = owner.copy()
    mains, main_owner = parts[main], owner[main]
    tree = shapely.STRtree(mains)
    for i in np.flatnonzero(~main):
        near = tree.query(parts[i], predicate="intersects")
        near = near[(community[main_owner[near]] == community[owner[i]])
                    & (main_owner[near] != owner[i])]
        shared = shapely.length(shapely.intersection(shapely.boundary(parts[i]), mains[near]))
        if len(near) and shared.max() > 0:
            target[i] = main_owner[near[np.lexsort((main_owner[near], -shared))[0]]]
    out = np.array([shapely.Polygon()] * len(pieces), dtype=object)
    single = np.bincount(target, minlength=len(pieces)) == 1
    out[target[single[target]]] = parts[single[target]]
    for j in np.flatnonzero(~single & (np.bincount(target, minlength=len(pieces)) > 1)):
        out[j] = shapely.union_all(parts[target == j], grid_size=_SNAP_M)
    return out


def _previous(space: _Space, previous: gpd.GeoDataFrame | None) -> _Previous | None:
    if previous is None:
        return None
    if not isinstance(previous, gpd.GeoDataFrame) or "grid_id" not in previous.columns \
            or previous.crs is None:
        msg = ("previous_grids must be a GeoDataFrame of grid polygons with a grid_id column "
               "and a CRS, such as the grids layer of an earlier plan.gpkg "
               "(plan_grids(previous_grids=...)).")
        raise InputError(msg)
    ids = previous["grid_id"].astype(str)
    if not ids.is_unique:
        msg = (f"previous_grids repeats grid_id values, e.g. {ids[ids.duplicated()].tolist()[:5]}"
               "; pass one row per grid (plan_grids(previous_grids=...)).")
        raise InputError(msg)
    frame = previous.reset_index(drop=True)
    pop = (frame["population"].to_numpy(dtype="int64")
           if "population" in frame.columns and frame["population"].notna().all() else None)
    return _Previous(ids=ids.tolist(), unit=_locate(space, frame),
                     column=label_units(space.reach.candidates, frame), pop=pop)


def _locate(space: _Space, frame: gpd.GeoDataFrame) -> np.ndarray:
    """The old grid of each unit: the one its point lies strictly inside, else (a point on a
    border, e.g. a unit at a street node between two communities) the one holding a point
    inside its piece, else the package's point-in-polygon rule (`label_units`)."""
    shapes = np.asarray(frame.to_crs(space.units.crs).geometry.values)
    tree = shapely.STRtree(shapes)
    out = np.full(len(space.units), -1, dtype="int64")

    def strictly(points: np.ndarray, rows: np.ndarray) -> None:
        unit, grid = tree.query(points, predicate="within")
        once = np.bincount(unit, minlength=len(points)) == 1
        pick = once[unit]
        out[rows[unit[pick]]] = grid[pick]

    strictly(np.asarray(space.units.geometry.values), np.arange(len(out)))
    rest = np.flatnonzero(out < 0)
    pieces = np.asarray(space.pieces.values)[rest]
    solid = ~shapely.is_empty(pieces)
    strictly(shapely.point_on_surface(pieces[solid]), rest[solid])
    rest = np.flatnonzero(out < 0)
    out[rest] = label_units(space.units.iloc[rest], frame)
    return out


# --- labels: one grid label per unit -----------------------------------------------------------

def _labels(space: _Space, prev: _Previous | None, params: _Params) -> tuple[np.ndarray, dict]:
    """Grid label per unit (0..G-1) and, for grids taken over whole, label -> old grid index."""
    n_cols = space.reach.minutes.shape[1]
    label = np.full(len(space.units), -1, dtype="int64")
    held: dict[int, int] = {}           # label (n_cols + old index) -> old index
    for k, cid in enumerate(space.ids):
        rows = np.flatnonzero(space.community == k)
        cols = space.columns(k)
        own = _own(prev, cid)
        if prev is not None and _unchanged(space, prev, rows, cols, own):
            label[rows] = n_cols + prev.unit[rows]
            held.update({n_cols + g: g for g in np.unique(prev.unit[rows])})
            continue
        valid = _valid_old(space, prev, rows, cols, own, params) if prev is not None else {}
        label[rows], kept = _split_community(space, rows, cols, prev, own, valid, params, n_cols)
        held.update({n_cols + g: g for g in kept})
    label = _attach_unreached(space, label)
    # Every connected piece is a grid of its own: grids are contiguous (a kept old grid is).
    whole = split_pieces(label, space.adjacency)
    kept_out = {}
    for old_label, g in held.items():
        parts = np.unique(whole[label == old_label])
        if len(parts) == 1:
            kept_out[int(parts[0])] = g
    return whole, kept_out


def _own(prev: _Previous | None, cid: str) -> np.ndarray:
    """Old grids of community `cid`: a grid id carries its community's id."""
    if prev is None:
        return np.zeros(0, dtype=bool)
    return np.array([g.startswith(f"{cid}-G") for g in prev.ids], dtype=bool)


def _unchanged(space: _Space, prev: _Previous, rows: np.ndarray, cols: np.ndarray,
               own: np.ndarray) -> bool:
    """The community holds exactly the units of its old grids (with their residents), and each
    old grid is still one piece whose residents one station reaches: keep the grids as they were."""
    old = prev.unit[rows]
    if (old < 0).any() or not own[old].all():
        return False
    touched = np.unique(old)
    elsewhere = np.isin(prev.unit, touched)
    elsewhere[rows] = False
    if elsewhere.any():
        return False
    pop = space.pop[rows]
    if prev.pop is not None and not np.array_equal(
            np.bincount(np.searchsorted(touched, old), weights=pop).astype("int64"),
            prev.pop[touched]):
        return False
    return all(_meets_walk_and_piece(space, rows[old == g], cols) is not None for g in touched)


def _meets_walk_and_piece(space: _Space, members: np.ndarray, cols: np.ndarray) -> int | None:
    """A column reaching every member that reaches any, if the members are one piece; else None."""
    n_parts, _ = connected_components(space.adjacency[members][:, members], directed=False)
    if n_parts != 1:
        return None
    reached = members[space.bound.reachable[members]]
    if not len(reached):
        return int(cols[0]) if len(cols) else None
    sub = space.reach.minutes[reached][:, cols].tocsc()
    full = np.flatnonzero(np.diff(sub.indptr) == len(reached))
    if not len(full):
        return None
    cost = np.asarray(sub[:, full].multiply(space.pop[reached][:, None]).sum(axis=0)).ravel()
    return int(cols[full[np.lexsort((full, cost))[0]]])


def _valid_old(space: _Space, prev: _Previous, rows: np.ndarray, cols: np.ndarray,
               own: np.ndarray, params: _Params) -> dict[int, int]:
    """Old grids of a changed community that still meet every rule here: old index -> column."""
    lo, hi = params.band
    kept: dict[int, int] = {}
    old = prev.unit[rows]
    for g in np.unique(old[old >= 0]):
        members = rows[old == g]
        if not own[g] or not lo <= space.pop[members].sum() <= hi:
            continue
        column = _meets_walk_and_piece(space, members, cols)
        if column is not None and column not in kept.values() \
                and space.bound.reachable[members].all():
            kept[int(g)] = column
    return kept


def _split_community(space: _Space, rows: np.ndarray, cols: np.ndarray, prev: _Previous | None,
                     own: np.ndarray, kept: dict[int, int], params: _Params,
                     n_cols: int) -> tuple[np.ndarray, list[int]]:
    """Labels of one community's units and the old grids kept: its old grids still valid kept
    (when that does not leave the rest worse balanced than a free split), the rest partitioned."""
    free = _partition_all(space, rows, cols, prev, own, params)
    if not kept:
        return free, []
    with_kept = np.full(len(rows), -1, dtype="int64")
    old = prev.unit[rows]
    held = np.isin(old, list(kept))
    with_kept[held] = n_cols + old[held]
    rest = ~held
    if rest.any():
        with_kept[rest] = _partition_all(space, rows[rest], cols[~np.isin(cols, list(kept.values()))],
                                         prev, own, params)
        with_kept = _rebalance(space, rows, cols, with_kept, params,
                               frozen=set((n_cols + np.asarray(list(kept))).tolist()))
    if _band(space, rows, with_kept, params) <= _band(space, rows, free, params):
        return with_kept, list(kept)
    logger.info("Community %s: keeping its %d valid old grids would leave the rest worse "
                "balanced; split it afresh", space.ids[space.community[rows[0]]], len(kept))
    return free, []


def _band(space: _Space, rows: np.ndarray, label: np.ndarray, params: _Params) -> tuple:
    held = label >= 0
    sizes = np.bincount(np.unique(label[held], return_inverse=True)[1].ravel(),
                        weights=space.pop[rows][held])
    lo, hi = params.band
    return band_key(sizes, min_pop=lo, max_pop=hi, target_pop=params.target_pop)


def _partition_all(space: _Space, rows: np.ndarray, cols: np.ndarray, prev: _Previous | None,
                   own: np.ndarray, params: _Params) -> np.ndarray:
    """Column per unit (-1: reaches none), grids repaired by `grid_balance.rebalance`. Where
    some residents' walks gather fewer than the band's floor, walks are scarce: balanced grids
    are packed first (`grid_balance.pack`) and the partition core splits the rest. Elsewhere the
    core splits all, and if grids stay outside the band, packing is tried too and the one
    closer to the ceiling kept (`shortfall`). Earlier grids of the community: the core only,
    which weighs keeping residents in them."""
    reach = space.bound.reachable[rows]
    if not reach.any():
        return np.full(len(rows), -1, dtype="int64")
    prior = prev is not None and own.any()
    scarce = bool(space.bound.forced_undersized[rows].any())
    if prior or not scarce:
        out = np.full(len(rows), -1, dtype="int64")
        out[reach] = _partition(space, rows[reach], cols, prev, own, params)
        out = _rebalance(space, rows, cols, out, params)
        if prior or shortfall(space, rows, out, params)[0] == 0:
            return out
    minutes = space.reach.minutes[rows][:, cols]
    packed = pack(space.pop[rows], space.adjacency[rows][:, rows], minutes, band=params.band)
    packed = np.where(packed >= 0, cols[np.maximum(packed, 0)], -1)
    rest = reach & (packed < 0)
    if rest.any():
        packed[rest] = _partition(space, rows[rest], cols[~np.isin(cols, packed)], None, own,
                                  params)
    packed = _rebalance(space, rows, cols, packed, params)
    if scarce or shortfall(space, rows, packed, params) < shortfall(space, rows, out, params):
        return packed
    return out


def _rebalance(space: _Space, rows: np.ndarray, cols: np.ndarray, label: np.ndarray,
               params: _Params, frozen: set[int] | None = None) -> np.ndarray:
    """`grid_balance.rebalance` on one community's labels, each grid one connected piece first:
    a label's most populous piece keeps it, another piece takes a label of its own (one above
    every column and old grid, by its first unit, so labels stay distinct across communities)."""
    adjacency = space.adjacency[rows][:, rows].tocsr()
    piece = split_pieces(label, adjacency)
    held = label >= 0
    size = np.bincount(piece[held], weights=space.pop[rows][held] + 1e-6)
    order = np.lexsort((piece[held], -size[piece[held]], label[held]))
    first_of_label = np.r_[True, np.diff(label[held][order]) != 0]
    main = np.zeros(len(size), dtype=bool)
    main[piece[held][order][first_of_label]] = True
    first_unit = np.full(len(size), len(rows))
    np.minimum.at(first_unit, piece[held], np.flatnonzero(held))
    fresh = _FRESH_LABEL + rows[np.minimum(first_unit, len(rows) - 1)]
    label = np.where(held, np.where(main[piece], label, fresh[piece]), -1)
    return rebalance(label, space.pop[rows], adjacency, space.reach.minutes[rows][:, cols],
                     band=params.band, frozen=frozen)
def _partition(space: _Space, rows: np.ndarray, cols: np.ndarray, prev: _Previous | None,
               own: np.ndarray, params: _Params) -> np.ndarray:
    minutes = space.reach.minutes[rows][:, cols].tocsr()
    minutes.sort_indices()
    prior_unit = prior_column = None
    if prev is not None and own.any():
        # Only the community's own old grids count: a grid id carries its community's id.
        prior_unit = np.where((prev.unit[rows] >= 0) & own[np.maximum(prev.unit[rows], 0)],
                              prev.unit[rows], -1)
        prior_column = np.where((prev.column[cols] >= 0) & own[np.maximum(prev.column[cols], 0)],
                                prev.column[cols], -1)
    # Forced-undersized residents are partitioned with the rest: apart, they left fragments of
    # the others that no balanced grid could use.
    problem = PartitionProblem(
        minutes=minutes, pop=space.pop[rows], adjacency=space.adjacency[rows][:, rows].tocsr(),
        target_pop=params.target_pop, tolerance=params.tolerance, unit_prior=prior_unit,
        candidate_prior=prior_column, stability_minutes=_STABILITY_MINUTES)
    # No xy: greedy seeds and a single run. Bisection restarts cost ten times more on
    # grid-sized instances for about 2 % more grids in the band.
    result = partition_units(problem, seed=params.seed, restarts=1)
    return np.where(result.center >= 0, cols[np.maximum(result.center, 0)], -1)


def _attach_unreached(space: _Space, label: np.ndarray) -> np.ndarray:
    """Residents who reach no station candidate join the bordering grid of their community along
    most piece edges, spreading outwards; a group bordering none becomes a grid of its own."""
    label = label.copy()
    coo = space.adjacency.tocoo()
    same = space.community[coo.row] == space.community[coo.col]
    a, b = coo.row[same], coo.col[same]
    while True:
        edge = (label[a] < 0) & (label[b] >= 0)
        if not edge.any():
            break
        pairs = pd.DataFrame({"unit": a[edge], "grid": label[b[edge]]}).value_counts()
        best = (pairs.reset_index().sort_values(["unit", "count", "grid"],
                                                ascending=[True, False, True])
                .drop_duplicates("unit"))
        label[best["unit"].to_numpy()] = best["grid"].to_numpy()
    loose = np.flatnonzero(label < 0)
    if len(loose):
        graph = space.adjacency[loose][:, loose]
        _, part = connected_components(graph, directed=False)
        label[loose] = label.max() + 1 + part
    return label


# --- stations and ids ---------------------------------------------------------------------------

def _stations(space: _Space, label: np.ndarray, shapes: gpd.GeoDataFrame) -> np.ndarray:
    """Per grid the column of its station: reaching the most residents within the limit, inside
    the grid if any such node is, then the smallest worst walk, mean walk, column (-1: none)."""
    minutes, pop = space.reach.minutes, space.pop.astype("float64")
    points = np.asarray(space.reach.candidates.geometry.values)
    station = np.full(len(shapes), -1, dtype="int64")
    for g, shape in enumerate(shapes.geometry.values):
        members = np.flatnonzero(label == g)
        cols = space.columns(space.community[members[0]])
        if not len(cols):
            continue
        reached = members[space.bound.reachable[members]]
        if not len(reached):       # nothing within the limit: the nearest node to the grid
            d = shapely.distance(points[cols], shapely.point_on_surface(shape))
            station[g] = cols[np.lexsort((cols, d))[0]]
            continue
        sub = minutes[reached][:, cols].tocsc()
        weight = pop[reached]
        hit = sp.csc_matrix((np.ones(sub.nnz), sub.indices, sub.indptr), shape=sub.shape)
        served = weight @ hit
        worst = np.asarray(sub.max(axis=0).todense()).ravel()
        total = weight @ sub
        inside = shapely.dwithin(points[cols], shape, INSIDE_M)
        best = np.lexsort((cols, total, worst, ~inside, -served))[0]
        station[g] = cols[best]
    return station


def _grid_ids(space: _Space, label: np.ndarray, station: np.ndarray, prev: _Previous | None,
              kept: dict[int, int]) -> list[str]:
    """community id + "-G01", ...: kept grids their old id; with previous grids, ids inherited
    by shared residents (`inherit_ids`); new numbers by station, north to south, west to east."""
    n = int(label.max()) + 1
    ids: list[str | None] = [None] * n
    grid_community = np.zeros(n, dtype="int64")
    grid_community[label] = space.community
    xy = np.tile([np.inf, -np.inf], (n, 1))     # grids without a station are numbered last
    has = station >= 0
    pts = space.reach.candidates.geometry.values[station[has]]
    xy[has] = np.column_stack([shapely.get_x(pts), shapely.get_y(pts)])
    used = set(prev.ids) if prev is not None else set()
    for g, old in kept.items():
        ids[g] = prev.ids[old]
    for k, cid in enumerate(space.ids):
        grids = np.flatnonzero(grid_community == k)
        if prev is not None:
            own = _own(prev, cid)
            rows = np.flatnonzero(space.community == k)
            old = np.where((prev.unit[rows] >= 0) & own[np.maximum(prev.unit[rows], 0)],
                           prev.unit[rows], -1)
            local = np.searchsorted(grids, label[rows])
            inherited = inherit_ids(local, old, space.pop[rows], prev.ids, len(grids),
                                    reserved=used)
            for g, gid in zip(grids, inherited):
                base = gid.rsplit("-", 1)[0]
                if ids[g] is None and (gid in prev.ids or base in prev.ids):
                    ids[g] = gid
        taken = set(used) | {i for i in ids if i is not None}
        order = grids[np.lexsort((grids, np.round(xy[grids, 0]), -np.round(xy[grids, 1])))]
        number = 1
        for g in order:
            if ids[g] is not None:
                continue
            while f"{cid}-G{number:02d}" in taken:
                number += 1
            ids[g] = f"{cid}-G{number:02d}"
            taken.add(ids[g])
        used |= taken
    return [str(i) for i in ids]
