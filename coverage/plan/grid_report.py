"""
The frames, notes and report of `covplan.plan.grids`: per grid its figures and why it misses a
rule ("cannot" only where proven), per unit its grid and walk, the stations, and the ceilings
the notes and the report share (`ceiling`, `shortfall`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from covplan._sparse import lookup
from covplan.solve.bounds import min_cover_count

if TYPE_CHECKING:
    from covplan.inputs.network import WalkNetwork
    from covplan.plan.grids import _Params, _Previous, _Space
    from covplan.plan.pipeline import Plan

__all__ = ["INSIDE_M", "ceiling", "check_conserved", "grid_report", "grids_frame", "natural_order",
           "outside_population", "shortfall", "stations_frame", "units_frame"]

INSIDE_M = 1.0             # a node this close to a grid is inside it (streets on its border)


def _unit_minutes(space: _Space, label: np.ndarray, station: np.ndarray) -> np.ndarray:
    col = station[label]
    minutes = np.full(len(label), np.nan)
    ok = col >= 0
    value, found = lookup(space.reach.minutes, np.flatnonzero(ok), col[ok])
    minutes[np.flatnonzero(ok)[found]] = value[found]
    return minutes


def grids_frame(space: _Space, label: np.ndarray, shapes: gpd.GeoDataFrame,
                 station: np.ndarray, grid_ids: list[str], kept: dict[int, int],
                 params: _Params, network: WalkNetwork,
                 household_size: float | None) -> gpd.GeoDataFrame:
    pop = space.pop
    minutes = _unit_minutes(space, label, station)
    within = np.isfinite(minutes)
    n = len(shapes)
    population = np.bincount(label, weights=pop, minlength=n).astype("int64")
    near = np.bincount(label, weights=pop * within, minlength=n)
    total = np.bincount(label, weights=np.where(within, minutes * pop, 0.0), minlength=n)
    worst = np.full(n, -np.inf)
    np.maximum.at(worst, label[within], minutes[within])
    lo, hi = params.band
    frame = pd.DataFrame({
        "grid_id": grid_ids,
        "community_id": [space.ids[k] for k in _grid_community(space, label, n)],
        "population": population})
    if household_size is not None:
        frame["households"] = np.round(population / household_size).astype("int64")
    node = space.reach.candidates["node"].to_numpy()
    frame["station_id"] = pd.array([network.node_id[node[s]] if s >= 0 else None
                                    for s in station], dtype="Int64")
    frame["mean_minutes"] = np.where(near > 0, total / np.maximum(near, 1), np.nan)
    frame["max_minutes"] = np.where(np.isfinite(worst), worst, np.nan)
    frame["beyond_limit"] = (population - near).astype("int64")
    frame["within_tolerance"] = (population >= lo) & (population <= hi)
    frame["contiguous"] = shapes["contiguous"].to_numpy()
    frame["units"] = np.bincount(label, minlength=n)
    frame["kept"] = np.isin(np.arange(n), list(kept))
    inside = _station_inside(space, station, shapes)
    community = _grid_community(space, label, n)
    frame["note"] = [_note(space, label, g, frame.iloc[g], inside[g], params) for g in range(n)]
    # A community's residents able to be in a balanced grid fill at most `most` of them: when
    # it holds that many, the rest cannot be; when not, its other grids say how far it is.
    balanced = frame["within_tolerance"].to_numpy()
    for k in np.unique(community):
        mine = community == k
        held = int(balanced[mine].sum())
        most = ceiling(space, np.flatnonzero(space.community == k), params)
        able = int(space.pop[(space.community == k) & _able(space)].sum())
        why = (f"{able:,} of the community's residents can be in a balanced grid (the others' "
               f"walks gather fewer than {lo:,.0f}), enough for {most} grids of {lo:,.0f}")
        open_ = [g for g in np.flatnonzero(mine & ~balanced)
                 if not frame.at[g, "note"].startswith("cannot")]
        if held >= most:
            for g in open_:
                rest = [p for p in frame.at[g, "note"].split("; ")
                        if p and not p.startswith(("smaller than target", "larger than target"))]
                note = f"cannot be balanced as well: {why}, and {held} are"
                frame.at[g, "note"] = "; ".join([note, *rest])
        elif len(open_) > most - held:
            for g in open_:
                frame.at[g, "note"] += (f" ({why}, and {held} are: {len(open_) - most + held} of "
                                        f"its {len(open_)} grids outside the band cannot join "
                                        "them)")
    out = gpd.GeoDataFrame(frame, geometry=shapes.geometry.values, crs=shapes.crs)
    return out.sort_values("grid_id", key=natural_order).reset_index(drop=True)


def _able(space: _Space) -> np.ndarray:
    """Per unit: its residents can be in a balanced grid. Not so for the forced undersized: they
    reach nodes, none of whose walks gathers the band's floor of contiguous residents, and a
    resident who reaches a node is always within the walk of their grid's station. (Residents
    who reach no node join a bordering grid, which may be balanced: they count as able.)"""
    return ~space.bound.forced_undersized


def ceiling(space: _Space, rows: np.ndarray, params: _Params) -> int:
    """At most this many balanced grids among `rows`: each holds the band's floor of residents
    who can be in one (proven, as `covplan.solve.bounds`)."""
    able = int(space.pop[rows][_able(space)[rows]].sum())
    return int(np.floor(able / params.band[0] + 1e-9))


def share_bound(space: _Space, params: _Params) -> tuple[int, int]:
    """(most balanced grids, fewest grids holding forced-undersized residents) over every split
    of these communities into grids: per community, its able residents fill at most `ceiling`
    balanced grids, and its forced residents need at least as many (undersized) grids as the
    fewest stations reaching them all (`min_cover_count`, exact or HiGHS's proven floor). So no
    split puts a larger share of its grids in the band than most / (most + fewest)."""
    forced = space.bound.forced_undersized & (space.pop > 0)
    most = fewest = 0
    for k in range(len(space.ids)):
        rows = np.flatnonzero(space.community == k)
        most += ceiling(space, rows, params)
        stuck = rows[forced[rows]]
        if len(stuck):
            fewest += min_cover_count(space.reach.minutes[stuck][:, space.columns(k)])
    return most, fewest


def shortfall(space: _Space, rows: np.ndarray, label: np.ndarray,
              params: _Params) -> tuple[int, float, int]:
    """How far one community's labels fall short: balanced grids missing to the ceiling (capped
    by the grid count), residents outside the band, grids."""
    held = label >= 0
    sizes = np.bincount(np.unique(label[held], return_inverse=True)[1].ravel(),
                        weights=space.pop[rows][held])
    lo, hi = params.band
    balanced = int(((sizes >= lo) & (sizes <= hi)).sum())
    most = min(len(sizes), ceiling(space, rows, params))
    return max(most - balanced, 0), float(sizes[(sizes < lo) | (sizes > hi)].sum()), len(sizes)


def natural_order(ids: pd.Series) -> pd.Series:
    """Sort key: C2-G3 before C10-G1, numbers compared as numbers."""
    return ids.map(lambda s: tuple((0, int(t)) if t.isdigit() else (1, t)
                                   for t in re.split(r"(\d+)", str(s))))


def _grid_community(space: _Space, label: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype="int64")
    out[label] = space.community
    return out


def _station_inside(space: _Space, station: np.ndarray, shapes: gpd.GeoDataFrame) -> np.ndarray:
    points = np.asarray(space.reach.candidates.geometry.values)
    inside = np.zeros(len(station), dtype=bool)
    has = station >= 0
    inside[has] = shapely.dwithin(points[station[has]], np.asarray(shapes.geometry.values)[has],
                                  INSIDE_M)
    return inside


def _note(space: _Space, label: np.ndarray, g: int, row: pd.Series, inside: bool,
          params: _Params) -> str:
    """Why a grid misses a rule. "Cannot" only where proven: by the walking bound
    (`covplan.solve.bounds`), a unit larger than the band's ceiling, or the community's count."""
    lo, hi = params.band
    limit = f"{params.max_minutes:g} min"
    members = np.flatnonzero(label == g)
    pop, population = space.pop[members], int(row["population"])
    notes = []
    forced = space.bound.forced_undersized[members]
    community = int(space.pop[space.community == space.community[members[0]]].sum())
    if population < lo and forced.any():
        most = space.bound.best_gather[members[forced]].max()
        notes.append(f"cannot reach {lo:,.0f} residents: no station within {limit} of its "
                     f"residents gathers that many contiguous residents (at most {most:,.0f})")
    elif population > hi and pop.max() > hi:
        notes.append(f"cannot be balanced: one unit of {pop.max():,} residents alone exceeds "
                     f"{hi:,.0f} and is kept whole (a finer population, e.g. --max-unit-pop / "
                     "PlanConfig.max_unit_pop, splits it)")
    elif not lo <= population <= hi and np.ceil(community / hi) > np.floor(community / lo) \
            and (community < lo or population == community):
        # Proven for this grid only when it is the whole community, or the community is too
        # small for any: else some other split may balance one of its grids (the count
        # ceiling in grids_frame speaks for the community).
        notes.append(f"cannot be balanced: the community's {community:,} residents split into no "
                     f"number of grids of {lo:,.0f}-{hi:,.0f}")
    elif population < lo:
        notes.append(f"smaller than target: the planner found no balanced split here; "
                     f"{lo - population:,.0f} residents short of {lo:,.0f}")
    elif population > hi:
        notes.append(f"larger than target: the planner found no balanced split here; "
                     f"{population - hi:,.0f} residents over {hi:,.0f}")
    unreached = int(pop[~space.bound.reachable[members]].sum())
    if unreached:
        notes.append(f"{unreached:,} residents cannot reach any network node within {limit}")
    if int(row["beyond_limit"]) > unreached:
        notes.append(f"{int(row['beyond_limit']) - unreached:,} residents are beyond {limit} of "
                     "the station: no node reaches every resident within it")
    if not inside and pd.notna(row["station_id"]):
        notes.append(f"station outside the grid: no node inside it reaches as many residents "
                     f"within {limit}")
    if not bool(row["contiguous"]):
        notes.append("not contiguous: its pieces touch only at corners")
    return "; ".join(notes)


def units_frame(space: _Space, label: np.ndarray, station: np.ndarray,
                 grid_ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"unit_id": space.units["unit_id"].to_numpy(),
                         "community_id": space.units["community_id"].to_numpy(),
                         "grid_id": np.asarray(grid_ids, dtype=object)[label],
                         "pop": space.pop,
                         "minutes": _unit_minutes(space, label, station)})


def stations_frame(space: _Space, label: np.ndarray, station: np.ndarray, grid_ids: list[str],
                    network: WalkNetwork, crs) -> gpd.GeoDataFrame:
    # stations and grids come in the same row order (by grid id)
    order = np.argsort(natural_order(pd.Series(grid_ids)).to_numpy(), kind="stable")
    cands = space.reach.candidates
    node = cands["node"].to_numpy()
    rows = station[order]
    has = rows >= 0
    geometry = np.full(len(rows), None, dtype=object)
    geometry[has] = np.asarray(cands.geometry.values)[rows[has]]
    frame = gpd.GeoDataFrame({
        "grid_id": np.asarray(grid_ids, dtype=object)[order],
        "community_id": [space.ids[k] for k in _grid_community(space, label, len(station))[order]],
        "station_id": pd.array([network.node_id[node[s]] if s >= 0 else None for s in rows],
                               dtype="Int64")},
        geometry=gpd.GeoSeries(geometry, crs=space.units.crs))
    return frame.to_crs(crs)


def check_conserved(space: _Space, grids: gpd.GeoDataFrame) -> None:
    """Population in == population out, per community (an internal invariant, not input)."""
    held = grids.groupby("community_id")["population"].sum()
    given = pd.Series(space.pop).groupby(np.asarray(space.ids)[space.community]).sum()
    if not held.reindex(given.index).fillna(0).astype("int64").equals(given.astype("int64")):
        msg = "grids lost or gained residents of a community; please report this plan."
        raise RuntimeError(msg)


def outside_population(plan: Plan) -> int:
    return int(plan.units.loc[plan.units["community_id"].isna(), "pop"].sum())


def grid_report(space: _Space, grids: gpd.GeoDataFrame, units: pd.DataFrame,
                prev: _Previous | None, params: _Params, household_size: float | None,
                runtime_s: float, *, outside: int) -> dict:
    """report.json's ``grids``: counts, shares beside their ceilings, walks, stability, time."""
    pop = units["pop"].to_numpy(dtype="float64")
    total = float(pop.sum())
    within = np.isfinite(units["minutes"].to_numpy(dtype="float64"))
    minutes = units["minutes"].to_numpy(dtype="float64")
    figures = space.bound.figures()
    # Balanced grids possible in this plan's grids, per community: its grids less those proven
    # outside one by one, and at most as many as its residents who can be in one allow.
    cannot = grids["note"].str.startswith("cannot")
    possible = sum(min(int((~cannot[own.index]).sum()),
                       ceiling(space, np.flatnonzero(space.community == space.ids.index(cid)),
                                params))
                   for cid, own in grids.groupby("community_id"))
    balanced = int(grids["within_tolerance"].sum())
    most, fewest_forced = share_bound(space, params)
    stability = None
    if prev is not None:
        had = prev.unit >= 0
        old = np.asarray(prev.ids + [""], dtype=object)[prev.unit]
        same = had & (units["grid_id"].to_numpy(dtype=object) == old)
        stability = float(pop[same].sum() / pop[had].sum()) if had.any() else None
    return {
        "grids": len(grids),
        "communities": len(space.ids),
        "population_total": int(total),
        "population_outside_communities": outside,
        "target_pop": params.target_pop, "tolerance": params.tolerance,
        "max_minutes_limit": params.max_minutes, "household_size": household_size,
        "within_tolerance_share": float(grids["within_tolerance"].mean()) if len(grids) else 0.0,
        "within_tolerance_pop_share": (float(grids.loc[grids["within_tolerance"], "population"].sum()
                                             / total) if total else 0.0),
        "within_tolerance_pop_share_ceiling": figures["within_tolerance_pop_share_ceiling"],
        "grids_within_tolerance": balanced,
        "grids_within_tolerance_ceiling": possible,
        "within_tolerance_ceiling": possible / len(grids) if len(grids) else 1.0,
        "within_tolerance_of_ceiling": balanced / possible if possible else 1.0,
        "grids_proven_outside": len(grids) - possible,
        "grids_within_tolerance_max": most,
        "grids_holding_forced_min": fewest_forced,
        "within_tolerance_share_bound": (most / (most + fewest_forced)
                                         if most + fewest_forced else 1.0),
        "within_limit_share": float(pop[within].sum() / total) if total else 0.0,
        "within_limit_ceiling": figures["coverage_ceiling"],
        "mean_minutes": float(np.average(minutes[within], weights=pop[within]))
        if within.any() and pop[within].sum() else None,
        "max_minutes": float(minutes[within].max()) if within.any() else None,
        "contiguous_share": float(grids["contiguous"].mean()) if len(grids) else 1.0,
        "grids_kept": int(grids["kept"].sum()),
        "stability_share": stability,
        "runtime_s": runtime_s,
    }
