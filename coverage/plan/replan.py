"""
Plans for scenarios, and incremental re-planning: a change that touches one area (a moved or
closed center, a new estate, a footbridge) re-plans only the communities it touches and their
neighbours, with every other community frozen (same id, members and center).

base plan + new inputs
  -> units and candidates of the new inputs (as `plan_communities` builds them)
  -> touched communities: residents changed, center gone or moved, a member's walk to its center
     changed, or a new center / link lies in them
  -> window = touched + bordering communities of the same district; the planner's core re-solves
     the window's units over the candidates no frozen community uses
  -> a Plan whose report names the touched and re-planned communities.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
from covplan._sparse import lookup
from covplan.config import PlanConfig
from covplan.errors import InputError
from covplan.plan.pipeline import (
    Plan,
    Prior,
    assemble_plan,
    community_tables,
    partition_group,
    plan_communities,
    prepare_planning,
    with_grids,
)
from covplan.reach.isochrones import compute_isochrones
from covplan.scenarios import Scenario, ScenarioInputs, apply_scenario, load_inputs
from covplan.solve.partition.core import band_key
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

if TYPE_CHECKING:
    from covplan.inputs.network import WalkNetwork
    from covplan.inputs.population import Population
    from covplan.scenarios import Change

__all__ = ["plan_inputs", "plan_scenario", "replan", "replan_scenario", "rule_issues"]

logger = logging.getLogger(__name__)

# PlanConfig fields that change every community's rules: a change to one re-plans everything.
_GLOBAL_FIELDS = ("target_pop", "tolerance", "max_minutes", "walk_speed_kmh",
                  "candidate_spacing_m", "max_unit_pop", "stability_minutes")
_MAX_RINGS = 2              # bordering communities taken into the window, at most
_MAX_GROWTH = 4             # times the window grows for residents only frozen centers reach
_CHANGE_RADIUS_M = 150.0    # isochrones within this of a closed/added road are redrawn
_WINDOW_RESTARTS = 1
_MIN_MATCHED = 0.5          # below this share of the base plan's cells, it is another base


def plan_scenario(scenario: Scenario, *, inputs: ScenarioInputs | None = None,
                  progress: bool = False) -> Plan:
    """A full plan of `scenario` (its base inputs, loaded unless given, with its changes)."""
    changed = apply_scenario(inputs or load_inputs(scenario, progress=progress), scenario)
    return plan_inputs(changed, progress=progress)


def plan_inputs(inputs: ScenarioInputs, *, progress: bool = False,
                lock_centers: Sequence[str] | str | None = None) -> Plan:
    """`plan_communities` on a `ScenarioInputs`; the report adds `rule_issues`."""
    plan = plan_communities(inputs.network, inputs.population, communities=inputs.communities,
                            centers=inputs.centers, districts=inputs.districts,
                            config=inputs.config, progress=progress, lock_centers=lock_centers)
    plan.report["rule_issues"] = rule_issues(plan)
    return plan


def rule_issues(plan: Plan) -> list[str]:
    """
    Where a plan cannot meet a rule, one line each: which rule, which community or residents,
    and where (lon/lat), so a scenario that makes the rules infeasible says so.
    """
    issues = []
    units = plan.units
    lost = units["community_id"].isna().to_numpy()
    if lost.any():
        where = units[lost].to_crs(4326)
        pop = where["pop"].to_numpy()
        lon = float(np.average(where.geometry.x, weights=pop))
        lat = float(np.average(where.geometry.y, weights=pop))
        cells = ", ".join(sorted(set(where["cell_id"].astype(str)))[:5])
        issues.append(f"walking rule: {int(pop.sum()):,} residents around lon {lon:.5f}, lat "
                      f"{lat:.5f} (cells {cells}{', ...' if where['cell_id'].nunique() > 5 else ''}) "
                      f"reach no center within {plan.config.max_minutes:g} min at "
                      f"{plan.config.walk_speed_kmh:g} km/h")
    issues += _count_issues(plan)
    table = plan.communities
    points = plan.centers.set_index("community_id").to_crs(4326).geometry
    for row in table[~table["within_tolerance"].astype(bool) | ~table["contiguous"].astype(bool)].itertuples():
        rule = "balance rule" if not row.within_tolerance else "contiguity rule"
        at = points.get(row.community_id)
        place = f" (center {row.center_id} at lon {at.x:.5f}, lat {at.y:.5f})" if at is not None else ""
        district = f" in district {row.district}" if isinstance(row.district, str) and row.district else ""
        issues.append(f"{rule}: community {row.community_id}{district}{place} has "
                      f"{int(row.population):,} residents: {row.note or 'outside the band'}")
    decisions = plan.center_decisions
    if decisions is not None and "locked" in decisions:
        unmet = decisions.loc[decisions["locked"].astype(bool) & (decisions["decision"] != "kept"),
                              "center_id"].astype(str).tolist()
        if unmet:
            issues.append(f"lock rule: {len(unmet)} locked center(s) serve no community: "
                          f"{', '.join(unmet[:10])}{' …' if len(unmet) > 10 else ''}; the planner "
                          "found no community around them that meets the rules (reasons in "
                          "center_decisions.csv)")
    return issues


def _count_issues(plan: Plan) -> list[str]:
    """The balance that the count of centers (report ``count_short_population``), packing
    (``packing_short_population``) or units that share no site (``separated_short_population``)
    rules out, the largest proof per district where there are districts."""
    config, report = plan.config, plan.report
    parts = {f" in district {name}": figures for name, figures in report.get("districts", {}).items()}
    tiny = f"{config.tiny_pop:,.0f}"
    out = []
    for where, figures in (parts or {"": report}).items():
        short = figures.get("count_short_population") or 0
        packed = figures.get("packing_short_population") or 0
        separated = figures.get("separated_short_population") or 0
        if separated > max(short, packed):
            out.append(f"balance rule: the surroundings of residents who share no reachable "
                       f"center{where} ({config.max_minutes:g} min at "
                       f"{config.walk_speed_kmh:g} km/h) gather too few residents for all their "
                       f"communities to reach {config.min_pop:,.0f} (a linear program proves it), "
                       f"so with none below {tiny} at least {separated:,} residents stay outside "
                       "the band in any plan")
        elif short and short >= packed:
            out.append(f"balance rule: covering every resident{where} within "
                       f"{config.max_minutes:g} min at {config.walk_speed_kmh:g} km/h takes more "
                       f"centers than its residents fill at {config.min_pop:,.0f} with none below "
                       f"{tiny}, so at least {short:,} residents stay outside the band in any plan")
        elif packed:
            out.append(f"balance rule: the circles of {config.max_minutes:g} min at "
                       f"{config.walk_speed_kmh:g} km/h that cover every resident{where} overlap "
                       f"too little to fill communities of {config.min_pop:,.0f}-"
                       f"{config.max_pop:,.0f} (a linear program over the sites proves it), so "
                       f"with none below {tiny} at least {packed:,} residents stay outside the "
                       f"band in any plan")
    return out


def replan_scenario(base_plan: Plan, scenario: Scenario, *, inputs: ScenarioInputs | None = None,
                    progress: bool = False) -> Plan:
    """
    Re-plan `base_plan` for `scenario` locally (see `replan`).

    `inputs` are the base inputs the plan was made from (loaded from the scenario's base unless
    given); the scenario's [plan] values apply on top of ``base_plan.config``.
    """
    base = inputs or load_inputs(scenario, config=base_plan.config, progress=progress)
    base = dataclasses.replace(base, config=base_plan.config)
    changed = apply_scenario(base, scenario)
    return replan(base_plan, changed.network, changed.population, communities=changed.communities,
                  centers=changed.centers, districts=changed.districts, config=changed.config,
                  changes=scenario.changes, progress=progress)


def replan(plan: Plan, network: WalkNetwork, population: Population, *,
           communities: gpd.GeoDataFrame | None = None, centers: gpd.GeoDataFrame | None = None,
           districts: gpd.GeoDataFrame | None = None, config: PlanConfig | None = None,
           changes: Sequence[Change] = (), progress: bool = False) -> Plan:
    """
    Re-plan only the communities of `plan` that changed inputs touch.

    Parameters
    ----------
    plan
        The base plan.
    network, population, communities, centers, districts
        The new inputs (the base ones with the changes applied), as for `plan_communities`.
    config
        The new parameters (default: ``plan.config``). A change to the target, tolerance, time
        limit, walking speed or another field that binds every community re-plans everything.
    changes
        The scenario's changes; they locate new centers and links. Residents added or removed,
        centers removed or moved and members whose walk to their center changed are found from
        the data.

    Returns
    -------
    Plan
        Frozen communities keep id, members and center. ``report`` adds `mode` ("incremental"
        or "full"), `touched_communities` (base ids the changes touch, with `touch_reasons`),
        `replanned_communities` (base ids re-solved: touched plus bordering ones) and
        `new_communities` (ids of the re-solved communities in the result).
    """
    config = config or plan.config
    started = time.perf_counter()
    known = plan.units["cell_id"].astype(str).isin(set(population.cells["cell_id"].astype(str)))
    if known.mean() < _MIN_MATCHED:
        msg = (f"the base plan does not fit these inputs: only {100 * known.mean():.0f} % of its "
               "units lie in cells of the new population (by cell id). Pass the plan made from "
               "the scenario's base inputs, or plan in full.")
        raise InputError(msg)
    reason = _global_reason(plan, config, districts)
    if reason:
        logger.info("Re-planning everything: %s", reason)
        full = plan_communities(network, population, communities=communities, centers=centers,
                                districts=districts, config=config, progress=progress)
        ids = sorted(plan.communities["community_id"])
        full.report.update(mode="full", full_reason=reason, touched_communities=ids,
                           touch_reasons={i: reason for i in ids}, replanned_communities=ids,
                           new_communities=sorted(full.communities["community_id"]),
                           rule_issues=rule_issues(full))
        return full

    ready = prepare_planning(network, population,
                             centers=_with_frozen_sites(centers, plan.centers.to_crs(network.crs)),
                             communities=communities, districts=districts, config=config,
                             progress=progress)
    network, reach, work, adjacency = ready.network, ready.reach, ready.work_crs, ready.adjacency
    units = reach.units
    district_of, candidate_district = ready.district_of, ready.candidate_district

    base = _BaseView(plan, units, reach, work)
    reasons = _touched(base, reach, adjacency, changes, network)
    window, frozen, center_of = _solve_window(base, reasons, reach, adjacency, district_of,
                                              candidate_district, config, ready.bound.forced_undersized)

    labels, table = community_tables(ready, center_of, districts=districts, config=config)
    new_ids = _name_communities(table, base, labels, reach.pop, window)
    out = assemble_plan(
        ready, center_of, labels, table,
        isochrones_of=lambda centers_out: _isochrones(plan, network, centers_out, changes, config,
                                                      progress),
        communities=communities, config=config, fixed=len(frozen), started=started,
        order=np.argsort(table["community_id"].to_numpy(), kind="stable"))
    report = out.report
    report.update(mode="incremental", touched_communities=sorted(reasons),
                  touch_reasons={k: reasons[k] for k in sorted(reasons)},
                  replanned_communities=sorted(window), new_communities=sorted(new_ids),
                  frozen_communities=len(frozen), kept_communities=0)
    logger.info("Re-planned %d of %d communities (%d touched) into %d (%.1f s)", len(window),
                len(base.ids), len(reasons), len(new_ids), report["runtime_s"])
    report["rule_issues"] = rule_issues(out)
    return with_grids(out, network, None if plan.grids is None else plan.grids.grids)


def _global_reason(plan: Plan, config: PlanConfig, districts) -> str:
    """Why the change binds every community ('' if it does not)."""
    old, new = plan.config.to_dict(), config.to_dict()
    changed = [k for k in _GLOBAL_FIELDS if old[k] != new[k]]
    if changed:
        return "changed " + ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in changed)
    had = bool((plan.communities["district"].fillna("").astype(str) != "").any())
    if had != (districts is not None):
        return "districts switched " + ("off" if had else "on")
    return ""


def _with_frozen_sites(centers: gpd.GeoDataFrame | None, base_centers: gpd.GeoDataFrame):
    """
    The center sites plus the base plan's newly sited centers, named as in the base plan, so
    frozen communities keep their centers even where the candidate grid moved (the candidate
    nodes follow the population).
    """
    sited = base_centers[base_centers["center_id"].str.startswith("new-")]
    extra = gpd.GeoDataFrame({"center_id": sited["center_id"].to_numpy()},
                             geometry=sited.geometry.values, crs=base_centers.crs)
    if centers is None or not len(centers):
        return extra if len(extra) else None
    keep = gpd.GeoDataFrame({"center_id": centers["center_id"].astype(str).to_numpy()},
                            geometry=centers.geometry.values, crs=centers.crs).to_crs(base_centers.crs)
    return pd.concat([keep, extra], ignore_index=True)


class _BaseView:
    """The base plan seen through the new units and candidates."""

    def __init__(self, plan: Plan, units: gpd.GeoDataFrame, reach, work) -> None:
        table = plan.communities
        self.ids = table["community_id"].astype(str).tolist()
        self.index = {cid: i for i, cid in enumerate(self.ids)}
        self.center_ids = table["center_id"].astype(str).tolist()
        self.district = table["district"].astype(str).tolist()
        self.population = table["population"].to_numpy()
        self.within = table["within_tolerance"].to_numpy(dtype=bool)
        self.sites = plan.centers.set_index("community_id").to_crs(work)
        old = plan.units.to_crs(work)
        self.old_key = _unit_keys(old)
        self.old_comm = old["community_id"].map(self.index).fillna(-1).astype(np.int64).to_numpy()
        self.old_minutes = old["minutes"].to_numpy()
        new_key = _unit_keys(units)
        lookup_ = pd.Series(np.arange(len(old)), index=self.old_key)
        lookup_ = lookup_[~lookup_.index.duplicated()]
        pos = lookup_.reindex(new_key).to_numpy()
        self.matched = ~np.isnan(pos)                         # new unit found in the base plan
        self.old_pos = np.where(self.matched, pos, -1).astype(np.int64)
        self.comm = np.where(self.matched, self.old_comm[np.maximum(self.old_pos, 0)], -1)
        found = np.zeros(len(old), dtype=bool)
        found[self.old_pos[self.matched]] = True
        self.lost = ~found                                    # base unit gone or changed
        cand_ids = reach.candidates["center_id"].astype(str)
        first = pd.Series(np.arange(len(cand_ids)), index=cand_ids.to_numpy())
        first = first[~first.index.duplicated()]
        self.candidate = first.reindex(self.center_ids).fillna(-1).astype(np.int64).to_numpy()
        self.xy = np.column_stack([units.geometry.x.to_numpy(), units.geometry.y.to_numpy()])


def _unit_keys(units: gpd.GeoDataFrame) -> pd.Index:
    """cell id, position to the cm and residents: the same unit in two plans has the same key."""
    x = np.round(units.geometry.x.to_numpy(), 2)
    y = np.round(units.geometry.y.to_numpy(), 2)
    return pd.Index([f"{c}|{a:.2f}|{b:.2f}|{p}" for c, a, b, p in
                     zip(units["cell_id"].astype(str), x, y, units["pop"].to_numpy())])


def _touched(base: _BaseView, reach, adjacency, changes: Sequence[Change],
             network) -> dict[str, str]:
    """Base communities the changes touch, each with the first reason found."""
    reasons: dict[str, str] = {}

    def touch(index: int, why: str) -> None:
        if index >= 0:
            reasons.setdefault(base.ids[index], why)

    for i in np.unique(base.old_comm[base.lost & (base.old_comm >= 0)]):
        touch(int(i), "its residents changed")
    for i, cand in enumerate(base.candidate):
        if cand < 0:
            touch(i, f"its center {base.center_ids[i]} was closed")
    # Members whose walk to their own center changed (a closed road, a moved center, a link).
    rows = np.flatnonzero(base.comm >= 0)
    cand = base.candidate[base.comm[rows]]
    ok = cand >= 0
    minutes, found = lookup(reach.minutes, rows[ok], cand[ok])
    before = base.old_minutes[base.old_pos[rows[ok]]]
    moved = ~found | (np.abs(minutes - before) > 1e-6)
    comm = base.comm[rows[ok]]
    for i in np.unique(comm[~found]):
        touch(int(i), f"members no longer reach its center within {reach.max_minutes:g} min")
    for i in np.unique(comm[moved]):
        touch(int(i), "walks to its center changed")
    # Pieces of territory can shift (point-cell sources share one Voronoi diagram).
    for i in range(len(base.ids)):
        members = np.flatnonzero(base.comm == i)
        if len(members) > 1 and connected_components(adjacency[members][:, members],
                                                     directed=False)[0] > 1:
            touch(i, "its territory is no longer in one piece")
    # New residents (or re-split cells) join the communities around them.
    known = np.flatnonzero(base.comm >= 0)
    tree = cKDTree(base.xy[known]) if len(known) else None
    fresh = np.flatnonzero(~base.matched)
    if len(fresh) and tree is not None:
        _, near = tree.query(base.xy[fresh])
        for i in np.unique(base.comm[known[near]]):
            touch(int(i), "new or changed residents in or next to it")
    for change in changes:
        points = change.touched_points()
        center = change.touched_center()           # (id, "closed" or "moved"), or None
        if center is not None and center[0] in base.center_ids:
            touch(base.center_ids.index(center[0]), f"its center {center[0]} {center[1]}")
        if points and tree is not None:
            xy = gpd.GeoSeries(gpd.points_from_xy(*zip(*points)), crs=4326).to_crs(network.crs)
            _, near = tree.query(np.column_stack([xy.x, xy.y]))
            for i in np.unique(base.comm[known[near]]):
                touch(int(i), f"changes[{change.index}] ({change.kind}) lies in it")
    logger.info("Changes touch %d of %d communities: %s", len(reasons), len(base.ids),
                ", ".join(sorted(reasons)))
    return reasons


def _neighbours(comms: set[int], comm: np.ndarray, adjacency, base: _BaseView) -> set[int]:
    """Communities bordering `comms` (by unit adjacency) in the same district."""
    members = np.flatnonzero(np.isin(comm, list(comms)))
    touching = np.unique(comm[adjacency[members].indices])
    districts = {base.district[i] for i in comms}
    return {int(i) for i in touching if i >= 0 and base.district[i] in districts} - comms


def _solve_window(base: _BaseView, reasons: dict[str, str], reach, adjacency, district_of,
                  candidate_district, config: PlanConfig, forced: np.ndarray):
    """
    Re-solve the window (touched communities and their neighbours, one ring, two if the first
    leaves more communities outside the band than before), the rest frozen. Residents of the
    window that reach only frozen centers pull those communities in.
    """
    touched = {base.index[c] for c in reasons}
    best = None
    for rings in range(1, _MAX_RINGS + 1):
        window = set(touched)
        for _ in range(rings):
            window |= _neighbours(window, base.comm, adjacency, base)
        for _ in range(_MAX_GROWTH):
            center_of, pulled = _partition_window(base, window, reach, adjacency, district_of,
                                                  candidate_district, config, forced)
            if not pulled:
                break
            window |= pulled
        key = _window_key(center_of, window, base, reach, config)
        logger.info("Window of %d communities (%d ring(s)): %d outside the band (%d before)",
                    len(window), rings, key[2], int((~base.within[list(window)]).sum()))
        if best is None or key < best[0]:
            best = (key, window, center_of)
        if key[2] <= int((~base.within[list(window)]).sum()):
            break
    _, window, center_of = best
    frozen = sorted(set(range(len(base.ids))) - window)
    return {base.ids[i] for i in window}, [base.ids[i] for i in frozen], center_of


def _partition_window(base: _BaseView, window: set[int], reach, adjacency, district_of,
                      candidate_district, config: PlanConfig, forced: np.ndarray):
    """Every unit's candidate: frozen communities keep theirs, the window is re-solved."""
    n_units = len(base.comm)
    center_of = np.full(n_units, -1, dtype=np.int64)
    frozen = np.array(sorted(set(range(len(base.ids))) - window), dtype=np.int64)
    in_frozen = np.isin(base.comm, frozen)
    center_of[in_frozen] = base.candidate[base.comm[in_frozen]]
    blocked = np.zeros(len(reach.candidates), dtype=bool)
    frozen_cands = base.candidate[frozen]
    blocked[frozen_cands] = True
    blocked |= np.isin(reach.candidates["node"].to_numpy(), reach.candidates["node"].to_numpy()[frozen_cands])
    free = ~in_frozen
    # The base plan's communities are the prior: residents stay where they were if they can.
    cand_prior = np.full(len(reach.candidates), -1, dtype=np.int64)
    own = base.candidate >= 0
    cand_prior[base.candidate[own]] = np.flatnonzero(own)
    prior = Prior(ids=base.ids, unit=base.comm, candidate=cand_prior, issues=[])
    # One run: a window is small, and the core polishes small instances thoroughly anyway.
    window_config = dataclasses.replace(config, restarts=_WINDOW_RESTARTS)
    pulled: set[int] = set()
    # As in a full plan, forced-undersized residents form exception communities of their own
    # first, so that the window's other residents are never pulled into an undersized one.
    for group in np.unique(district_of[free & forced]):
        rows = np.flatnonzero(free & forced & (district_of == group))
        cols = np.flatnonzero((candidate_district == group) & ~blocked)
        center_of[rows] = partition_group(reach, adjacency, None, rows, cols, window_config,
                                          exceptions_only=True)
        blocked[center_of[rows][center_of[rows] >= 0]] = True
        pulled |= _pulled(rows, center_of, reach, frozen, frozen_cands)
    free &= ~forced
    for group in np.unique(district_of[free]):
        rows = np.flatnonzero(free & (district_of == group) & reach.reachable)
        if not len(rows):
            continue
        cols = np.flatnonzero((candidate_district == group) & ~blocked)
        cols = cols[np.diff(reach.minutes[rows][:, cols].tocsc().indptr) > 0]
        center_of[rows] = partition_group(reach, adjacency, prior, rows, cols, window_config)
        pulled |= _pulled(rows, center_of, reach, frozen, frozen_cands)
    return center_of, pulled


def _pulled(rows, center_of, reach, frozen, frozen_cands) -> set[int]:
    """Frozen communities whose centers alone reach residents of `rows` left without one."""
    stuck = rows[(center_of[rows] < 0) & reach.reachable[rows]]
    if not len(stuck):
        return set()
    reached = np.unique(reach.minutes[stuck].indices)
    return {int(i) for i in frozen[np.isin(frozen_cands, reached)]}


def _window_key(center_of, window, base, reach, config) -> tuple[float, int, int, float]:
    """`band_key` of the window's re-solved communities."""
    rows = np.flatnonzero(~np.isin(base.comm, sorted(set(range(len(base.ids))) - window))
                          & (center_of >= 0))
    _, inverse = np.unique(center_of[rows], return_inverse=True)
    return band_key(np.bincount(inverse, weights=reach.pop[rows]), min_pop=config.min_pop,
                    max_pop=config.max_pop, target_pop=config.target_pop,
                    tiny_share=config.min_pop_exception)


def _name_communities(table: gpd.GeoDataFrame, base: _BaseView, labels: np.ndarray,
                      pop: np.ndarray, window: set[str]) -> list[str]:
    """
    Frozen communities keep their ids; re-solved ones follow the window communities by the
    residents they share, by the rule of a full plan (`covplan.plan.ids.inherit_ids`: the
    continuation keeps the id, a split gives C012-a, C012-b, ...), the rest new ids after the
    highest. Centers sited by the re-plan are named new-r<candidate> so they never collide with
    the base plan's new-<candidate>. Edits `table` (ids and center ids) and returns the re-solved
    communities' ids.
    """
    from covplan.plan.ids import inherit_ids

    frozen_by_candidate = {int(base.candidate[base.index[c]]): c for c in base.ids if c not in window}
    ids = table["community_id"].to_numpy(dtype=object).copy()
    centers = table["center_id"].to_numpy(dtype=object).copy()
    resolved = []
    for label, candidate in enumerate(table["candidate_id"].to_numpy()):
        if int(candidate) in frozen_by_candidate:
            ids[label] = frozen_by_candidate[int(candidate)]
        else:
            resolved.append(label)
            if str(centers[label]).startswith("new-"):
                centers[label] = f"new-r{int(candidate)}"
    window_idx = np.array(sorted(base.index[c] for c in window), dtype=np.int64)
    row_of = np.full(len(table), -1, dtype=np.int64)
    row_of[resolved] = np.arange(len(resolved))
    new_of_unit = np.where(labels >= 0, row_of[np.maximum(labels, 0)], -1)
    in_window = np.isin(base.comm, window_idx)
    old_of_unit = np.where(in_window, np.searchsorted(window_idx, base.comm), -1)
    number = max((int(c[1:]) for c in base.ids if c[1:].isdigit()), default=0)
    named = inherit_ids(new_of_unit, old_of_unit, pop, [base.ids[k] for k in window_idx],
                        len(resolved), reserved=base.ids, first_new=number + 1)
    for r, label in enumerate(resolved):
        ids[label] = named[r]
    table["community_id"] = ids
    table["center_id"] = centers
    return named


def _isochrones(plan: Plan, network, centers_out, changes, config, progress):
    """
    Each center's isochrone depends only on its site and the network: the base plan's is reused
    for a center at the same site, unless a closed or added road lies within reach of it.
    """
    work = network.crs
    old = plan.isochrones.to_crs(work)
    old_sites = plan.centers.to_crs(work).set_index("center_id").geometry
    same_site = [c in old_sites.index and old_sites[c].distance(site) < 0.01
                 for c, site in zip(centers_out["center_id"], centers_out.geometry)]
    reusable = set(centers_out.loc[same_site, "center_id"]) & set(old["center_id"])
    shapes, radius = [], []  # where roads changed (lon/lat), and how far from it they may lie
    for change in changes:
        roads = change.changed_roads()
        if roads is None:
            shapes = None         # only the base network can locate these: redraw all
            break
        for shape, slack in roads:
            shapes.append(shape)
            radius.append(_CHANGE_RADIUS_M + slack)
    if shapes is None:
        reusable = set()
    elif shapes:
        near = gpd.GeoSeries(shapes, crs=4326).to_crs(work).buffer(radius).union_all()
        reusable -= set(old.loc[old.intersects(near), "center_id"])
    redraw = centers_out[~centers_out["center_id"].isin(reusable)]
    fresh = compute_isochrones(network, redraw, minutes=[config.max_minutes],
                               progress=progress) if len(redraw) else old.iloc[:0]
    reused = old[old["center_id"].isin(reusable)].drop(columns=["community_id"], errors="ignore")
    merged = pd.concat([reused, fresh.to_crs(work)], ignore_index=True)
    merged = merged.merge(centers_out[["center_id", "community_id"]], on="center_id")
    logger.info("Isochrones: %d redrawn, %d kept from the base plan", len(fresh), len(reused))
    return gpd.GeoDataFrame(merged.sort_values("center_id").reset_index(drop=True),
                            geometry="geometry", crs=work)
