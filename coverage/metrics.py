"""Figures of a plan: the per-community table and the headline report."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import scipy.sparse as sp
from covplan import __version__
from covplan._sparse import lookup

if TYPE_CHECKING:
    from covplan.config import PlanConfig
    from covplan.reach.matrix import ReachMatrix
    from covplan.solve.bounds import FeasibilityBound
    from covplan.solve.neighbourhood import TinyCheck


def _previous_ids(members_prior: np.ndarray, pop: np.ndarray, ids: list[str]) -> str:
    """Old communities contributing residents, largest first: 'C03 (4,512); C07 (2,100)'."""
    known = members_prior >= 0
    if not known.any():
        return ""
    counts = np.bincount(members_prior[known], weights=pop[known], minlength=len(ids))
    order = np.lexsort((np.arange(len(ids)), -counts))
    return "; ".join(f"{ids[i]} ({int(counts[i]):,})" for i in order if counts[i] > 0)


def parse_previous_ids(text) -> dict[str, int]:
    """The readable `previous_ids` column back as {old id: residents}, in its order:
    'C03 (4,512); C07 (2,100)' -> {'C03': 4512, 'C07': 2100}; empty, None or NaN -> {}."""
    if not isinstance(text, str):
        return {}
    found = (re.fullmatch(r"(.*) \(([\d,]+)\)", part.strip()) for part in text.split(";"))
    return {m.group(1): int(m.group(2).replace(",", "")) for m in found if m}


def _exception(forced: np.ndarray, island: np.ndarray) -> str:
    """The proven reason a community is an exception ('' if it is not one): all its members
    are forced undersized (see `covplan.solve.bounds`)."""
    if not len(forced) or not forced.all():
        return ""
    return "island" if island.any() else "remote pocket"


def _note(population: float, contiguous: bool, exception: str, best_gather: float,
          remote: int, config: PlanConfig, *, in_district: bool = False,
          split_forced: bool = False, detached: tuple[int, int, bool] | None = None) -> str:
    """
    Why a community misses a rule. "Cannot" only where `covplan.solve.bounds` proves it (what the
    bound counted, the note names: contiguous residents, of the district when there are
    districts); otherwise what the planner did not find and by how much the community misses.
    """
    notes = []
    limit = f"{config.max_minutes:g} min"
    # A community in pieces (a split site's) can hold more than any one piece gathers.
    piece = " in one piece" if population > best_gather else ""
    gathered = (f"gathers {config.min_pop:,.0f} contiguous residents"
                f"{' of its district' if in_district else ''} within {limit} (at most "
                f"{best_gather:,.0f}{piece}), so it cannot be balanced")
    if exception == "island":
        notes.append(f"exception (island): its {population:,.0f} residents are cut off from the "
                     f"main walking network; no site they reach {gathered}")
    elif exception:
        notes.append(f"exception (remote pocket): its {population:,.0f} residents reach no site "
                     f"that {gathered}")
    elif population < config.min_pop:
        short = config.min_pop - population
        notes.append(f"smaller than target: the planner did not find a balanced split here; it misses "
                     f"the band by {short:,.0f} residents ({100 * short / config.min_pop:.0f} %)")
    elif population > config.max_pop:
        over = population - config.max_pop
        notes.append(f"larger than target: the planner did not find a balanced split here; it exceeds "
                     f"the band by {over:,.0f} residents ({100 * over / config.max_pop:.0f} %)")
    if remote:
        notes.append(f"{remote:,} residents of an exception area attached here are served remotely, "
                     f"beyond {limit}")
    if not contiguous and split_forced:
        notes.append("not contiguous, and it cannot be in a plan that covers everyone: some of its "
                     "residents reach no site but its center, in pieces that no chain of units "
                     f"within {limit} of it joins")
    elif not contiguous and (detached is None or not detached[1]):
        notes.append("not contiguous")      # its pieces were not looked at (no adjacency)
    elif not contiguous:
        residents, count, joinable = detached
        pieces = ("its detached piece" if count == 1 else
                  f"{'one' if joinable else 'any'} of its {count} detached pieces")
        reaches = f"center reaches all of {pieces} ({residents:,} residents)"
        if not joinable:
            notes.append(f"not contiguous: no bordering community's {reaches}")
        elif exception:
            notes.append(f"not contiguous: a bordering community's {reaches}, but an exception's "
                         "residents are planned apart from the others")
        else:
            notes.append(f"not contiguous: a bordering community's {reaches}; the planner did not "
                         "move it there")
    return "; ".join(notes)


def around_note(note: str, proven: int, missed: int) -> str:
    """A community's note with the proof around it (`covplan.solve.bounds.around_plan`): what no
    plan balances there, which is not a claim about this community alone."""
    where = ("in it and its neighbours" if missed == 1 else
             f"around it ({missed} communities outside the band and their neighbours)")
    around = (f"{where}, at least {proven:,} residents stay outside the band in any plan "
              "keeping the rules (a linear program over the sites)")
    return f"{note}; {around}" if note else around


def tiny_note(note: str, checks: Iterable[TinyCheck], *, tiny_pop: float) -> str:
    """A tiny community's note with its neighbourhood proofs (`covplan.solve.neighbourhood`,
    one ring and two): no split there without a community below the floor, or at least what
    such a split costs in residents outside the band; always with the rest of the plan as it
    is, which is not a claim about every plan."""
    said = []
    for check in sorted(checks, key=lambda c: c.rings):
        alone = check.communities == 1    # every neighbour is tiny or an exception: kept
        if alone:
            where = (f"it ({check.residents:,} residents; its neighbours, tiny communities or "
                     "exceptions, as they are)")
        else:
            where = ("it and its neighbours" if check.rings == 1 else
                     f"the communities within {check.rings} rings of it")
            where += f" ({check.communities} communities, {check.residents:,} residents)"
        if np.isinf(check.cost):
            said.append(f"{where} {'has' if alone else 'have'} no split without a community "
                        f"below {tiny_pop:,.0f}")
        elif check.cost > 0:
            said.append(f"any split of {where} without a community below {tiny_pop:,.0f} puts "
                        f"at least {check.cost:,.0f} more residents outside the band")
    if not said:
        return note
    proof = "; ".join(said) + " (linear programs over the sites, the rest of the plan unchanged)"
    return f"{note}; {proof}" if note else proof


def _split_forced(bound: FeasibilityBound, candidate: int, members: np.ndarray) -> bool:
    """Whether the bound proves this community cannot be contiguous: its center is a split
    site (`covplan.solve.bounds`) and it holds that site's sole-site units."""
    if bound.split_sites is None or candidate not in bound.split_sites:
        return False
    return bool(np.isin(np.flatnonzero(bound.sole_site == candidate), members).all())


def _detached(members: np.ndarray, labels: np.ndarray, planned: np.ndarray, reach: ReachMatrix,
              adjacency: sp.spmatrix, pop: np.ndarray) -> tuple[int, int, bool]:
    """A community's pieces but its most populous one (by shared edges): their residents, their
    count, and whether some bordering community's center reaches every unit of one of them
    (checked here, so the note states it rather than assumes it)."""
    from scipy.sparse.csgraph import connected_components

    adjacency = sp.csr_matrix(adjacency)
    _, piece = connected_components(adjacency[members][:, members], directed=False)
    weight = np.bincount(piece, weights=pop[members])
    main = int(np.lexsort((np.arange(len(weight)), -weight))[0])
    own = labels[members[0]]
    joinable = False
    for q in np.flatnonzero(np.arange(len(weight)) != main):
        units = members[piece == q]
        border = np.unique(labels[adjacency[units].indices])
        for other in border[(border >= 0) & (border != own)]:
            _, found = lookup(reach.minutes, units, np.full(len(units), planned[other]))
            joinable |= bool(found.all())
    return int(weight.sum() - weight[main]), len(weight) - 1, joinable


def proven_not_contiguous(units: gpd.GeoDataFrame, table: gpd.GeoDataFrame,
                          bound: FeasibilityBound) -> int:
    """How many communities that are not one piece the bound proves cannot be (the test their
    notes state, `_split_forced`, run again: not read back from the notes' text)."""
    ids = units["community_id"].to_numpy()
    broken = table[~table["contiguous"].astype(bool)]
    return sum(_split_forced(bound, int(row.candidate_id), np.flatnonzero(ids == row.community_id))
               for row in broken.itertuples())


def community_table(units: gpd.GeoDataFrame, labels: np.ndarray, center_of: np.ndarray,
                    reach: ReachMatrix, dissolved: gpd.GeoDataFrame, district_of: np.ndarray,
                    districts: gpd.GeoDataFrame | None, *, bound: FeasibilityBound,
                    prior_ids: list[str] | None,
                    prior_unit: np.ndarray | None, config: PlanConfig,
                    adjacency: sp.spmatrix | None = None) -> gpd.GeoDataFrame:
    """One row per community, in the working CRS, ordered by community id."""
    pop = units["pop"].to_numpy()
    served = np.flatnonzero(labels >= 0)
    minutes = np.full(len(units), np.nan)
    minutes[served] = lookup(reach.minutes, served, center_of[served])[0]
    planned = np.unique(center_of[served])
    rows = []
    shapes = dissolved.set_index("label")
    district_ids = None if districts is None else districts["district_id"].astype(str).to_numpy()
    for label in range(len(planned)):
        members = np.flatnonzero(labels == label)
        candidate = int(planned[label])
        member_pop = pop[members]
        total = int(member_pop.sum())
        m = minutes[members]
        reached = np.isfinite(m)
        exception = _exception(bound.forced_undersized[members], bound.island[members])
        remote = 0 if exception else int(member_pop[~reached].sum())
        existing = bool(reach.candidates["existing"].iloc[candidate])
        contiguous = bool(shapes.loc[label, "contiguous"]) if label in shapes.index else False
        split_forced = _split_forced(bound, candidate, members)
        detached = (None if contiguous or split_forced or adjacency is None
                    else _detached(members, labels, planned, reach, adjacency, pop))
        district = ""
        if district_ids is not None:
            d = np.unique(district_of[members])
            district = ",".join(district_ids[i] if i >= 0 else "(outside)" for i in d)
        rows.append({
            "community_id": f"N{label + 1:02d}",
            "population": total,
            "center_id": str(reach.candidates["center_id"].iloc[candidate]) if existing
            else f"new-{candidate}",
            "candidate_id": candidate,
            "max_minutes": float(m[reached].max()) if reached.any() else np.nan,
            "mean_minutes": (float(np.average(m[reached], weights=member_pop[reached]))
                             if member_pop[reached].sum() > 0
                             else float(m[reached].mean()) if reached.any() else np.nan),
            "within_tolerance": bool(config.min_pop <= total <= config.max_pop),
            "exception": exception,
            "remote_population": remote,
            "contiguous": contiguous,
            "district": district,
            "previous_ids": "" if prior_unit is None else _previous_ids(prior_unit[members], member_pop, prior_ids),
            "note": _note(total, contiguous, exception,
                          float(bound.best_gather[members].max()) if len(members) else 0.0,
                          remote, config, in_district=districts is not None,
                          split_forced=split_forced, detached=detached),
        })
    table = pd.DataFrame(rows)
    geometry = [shapes.loc[i, "geometry"] if i in shapes.index else None for i in range(len(planned))]
    return gpd.GeoDataFrame(table, geometry=geometry, crs=reach.work_crs)


MINUTES_TOLERANCE = 1e-9   # a walk of max_minutes + this still counts as within the limit


def within_limit(minutes: np.ndarray, max_minutes: float) -> np.ndarray:
    """Per resident, whether `minutes` is within `max_minutes` (NaN and inf are not)."""
    m = np.asarray(minutes, dtype="float64")
    with np.errstate(invalid="ignore"):
        return np.isfinite(m) & (m <= max_minutes + MINUTES_TOLERANCE)


def coverage_figures(pop: np.ndarray, *, minutes_own: np.ndarray,
                     minutes_nearest: np.ndarray | None = None,
                     reachable: np.ndarray | None = None,
                     max_minutes: float) -> dict[str, float | int]:
    """
    Every coverage figure of a plan or a city, defined once.

    A resident is *covered* when they reach the center of their own community within the limit.
    When there are no communities (an as-is city assessed without community polygons), a
    resident's own center is the nearest one: pass the nearest-center minutes as `minutes_own`.

    Parameters
    ----------
    pop
        Residents per unit.
    minutes_own
        Walk minutes per unit to the center of its own community; NaN or inf for units without
        a community, whose community has no center, or beyond the measured range.
    minutes_nearest
        Walk minutes per unit to the nearest center (NaN or inf if none), or None when unknown.
    reachable
        Per unit, whether it reaches any candidate site within the limit, or None when unknown.
    max_minutes
        The walking limit; a walk of up to ``max_minutes + MINUTES_TOLERANCE`` is within it.

    Returns
    -------
    dict
        ``population_total``;
        ``population_covered``: residents within the limit of their own community's center;
        ``population_uncovered``: the other residents;
        ``coverage_share``: population_covered / population_total (0.0 for no residents);
        with `minutes_nearest`: ``nearest_center_share``, residents within the limit of the
        nearest center / population_total, and ``population_beyond_nearest``, the residents
        beyond the limit of every center;
        with `reachable`: ``coverage_share_of_reachable``, population_covered / residents who
        reach any candidate site, and ``unreachable_population``, the residents who reach none.
    """
    pop = np.asarray(pop)
    total = int(pop.sum())
    covered = int(pop[within_limit(minutes_own, max_minutes)].sum())
    out: dict[str, float | int] = {
        "population_total": total,
        "population_covered": covered,
        "population_uncovered": total - covered,
        "coverage_share": covered / total if total else 0.0,
    }
    if minutes_nearest is not None:
        near = int(pop[within_limit(minutes_nearest, max_minutes)].sum())
        out["nearest_center_share"] = near / total if total else 0.0
        out["population_beyond_nearest"] = total - near
    if reachable is not None:
        reached = int(pop[np.asarray(reachable, dtype=bool)].sum())
        out["coverage_share_of_reachable"] = covered / reached if reached else 0.0
        out["unreachable_population"] = total - reached
    return out


def _nearest_planned_minutes(reach: ReachMatrix, planned: np.ndarray) -> np.ndarray:
    """Per unit, minutes to the nearest of the `planned` candidates (inf beyond the reach matrix)."""
    sub = reach.minutes[:, np.asarray(planned, dtype="int64")].tocsr()
    out = np.full(sub.shape[0], np.inf)
    counts = np.diff(sub.indptr)
    rows = counts > 0
    if rows.any():
        out[rows] = np.minimum.reduceat(sub.data, sub.indptr[:-1][rows])
    return out


def plan_report(units: gpd.GeoDataFrame, table: gpd.GeoDataFrame, *, config: PlanConfig,
                reach: ReachMatrix, bound: FeasibilityBound, district_of: np.ndarray,
                district_ids: list[str] | None, prior_unit: np.ndarray | None, changes: pd.DataFrame | None,
                fixed: int, issues: list[str], runtime_s: float) -> dict:
    """
    The headline figures of a plan, with every parameter that produced it.

    Coverage figures are `coverage_figures`' (own center = the center of the resident's planned
    community; nearest center = the nearest of the plan's centers).
    """
    pop = units["pop"].to_numpy()
    assigned = units["community_id"].notna().to_numpy()
    sizes = table["population"].to_numpy()
    minutes = units["minutes"].to_numpy()
    coverage = coverage_figures(
        pop, minutes_own=np.where(assigned, minutes, np.nan),
        minutes_nearest=_nearest_planned_minutes(
            reach, table["candidate_id"].to_numpy() if "candidate_id" in table else []),
        reachable=reach.reachable, max_minutes=config.max_minutes)
    report = {
        "population_total": coverage.pop("population_total"),
        "population_assigned": int(pop[assigned].sum()),
        "communities": int(len(table)),
        **coverage,
        "mean_minutes": float(np.average(minutes[assigned], weights=pop[assigned])) if pop[assigned].sum() else None,
        "max_minutes": float(np.nanmax(minutes[assigned])) if assigned.any() else None,
        "within_tolerance_share": float(table["within_tolerance"].mean()) if len(table) else 0.0,
        **balance_figures(units, table, bound, config=config),
        "contiguous_share": float(table["contiguous"].mean()) if len(table) else 0.0,
        "communities_proven_not_contiguous": proven_not_contiguous(units, table, bound),
        "population_min": int(sizes.min()) if len(sizes) else 0,
        "population_max": int(sizes.max()) if len(sizes) else 0,
        "stability_share": None,
        "kept_communities": fixed,
        "frozen_communities": 0,      # an incremental re-plan sets it (covplan.plan.replan)
        "new_centers": int(table["center_id"].str.startswith("new-").sum()),
        "issues": issues,
        "runtime_s": round(float(runtime_s), 2),
        "parameters": config.to_dict(),
        "version": __version__,
    }
    if prior_unit is not None and changes is not None:
        report["stability_share"] = _stability(units, prior_unit, table)
    if district_ids is not None:
        report["districts"] = _district_figures(units, table, bound, district_of, district_ids,
                                                config=config)
    return report


def balance_figures(units: gpd.GeoDataFrame, table: gpd.GeoDataFrame, bound: FeasibilityBound, *,
                    config: PlanConfig, mask: np.ndarray | None = None) -> dict:
    """
    Residents in balanced communities against what the walking rule allows (`covplan.solve.bounds`),
    coverage against its ceiling, and the exceptions: the figures that show how far a plan is
    from the best possible one. `mask` restricts them to some units (a district).
    """
    m = np.ones(len(units), dtype=bool) if mask is None else np.asarray(mask, bool)
    pop = units["pop"].to_numpy()[m]
    total = int(pop.sum())
    ids = units["community_id"].to_numpy()[m]
    here = table[table["community_id"].isin(set(ids[pd.notna(ids)]))]
    balanced = here.loc[here["within_tolerance"], "community_id"].to_numpy()
    exceptions = here.loc[here["exception"] != "", "community_id"].to_numpy()
    regular = here[here["exception"] == ""]
    covered = within_limit(units["minutes"].to_numpy()[m], config.max_minutes)
    island = units["island"].to_numpy()[m]
    return {
        **bound.figures(m),
        "within_tolerance_pop_share": float(pop[np.isin(ids, balanced)].sum() / total) if total else 0.0,
        "exception_communities": int(len(exceptions)),
        "exception_population": int(pop[np.isin(ids, exceptions)].sum()),
        "served_remotely_population": int(pop[units["served_remotely"].to_numpy()[m]].sum()),
        "island_covered_population": int(pop[island & covered].sum()),
        "smallest_regular_community": int(regular["population"].min()) if len(regular) else None,
        "regular_communities_below_min_pop_exception": int(
            (regular["population"] < config.tiny_pop).sum()) if len(regular) else 0,
    }


def rules_ceiling(report: dict) -> float | None:
    """``within_tolerance_pop_share_ceiling_rules`` where the count of centers or packing makes it
    lower than the walking ceiling (plans without tiny regular communities can reach no more), else
    None."""
    rules = report.get("within_tolerance_pop_share_ceiling_rules")
    if rules is None or rules >= report["within_tolerance_pop_share_ceiling"] - 1e-12:
        return None
    return rules


def _district_figures(units: gpd.GeoDataFrame, table: gpd.GeoDataFrame, bound: FeasibilityBound,
                      district_of: np.ndarray, district_ids: list[str], *, config: PlanConfig) -> dict:
    """`balance_figures` per district ('(outside)' for units outside every district)."""
    out = {}
    for d in np.unique(district_of):
        name = district_ids[d] if d >= 0 else "(outside)"
        out[name] = balance_figures(units, table, bound, config=config, mask=district_of == d)
    return out


# --- old -> new communities: one rule for stability and for ids (covplan.plan.ids) ---------

def shared_residents(new_of_unit: np.ndarray, old_of_unit: np.ndarray, pop: np.ndarray,
                     n_old: int) -> dict[tuple[int, int], tuple[float, int]]:
    """
    (residents, units) that a new community shares with an old one, for every pair sharing a
    unit, keyed (new, old); old index n_old stands for outside every old community. Units in no
    new community (-1) are left out. Only the pairs that occur: a dense table of 3,000 new by
    3,000 old communities takes 72 MB.
    """
    new = np.asarray(new_of_unit, dtype=np.int64)
    old = np.asarray(old_of_unit, dtype=np.int64)
    inside = new >= 0
    col = np.where(old[inside] >= 0, old[inside], n_old)
    keys, where = np.unique(new[inside] * (n_old + 1) + col, return_inverse=True)
    residents = np.bincount(where, weights=np.asarray(pop, dtype="float64")[inside],
                            minlength=len(keys))
    units = np.bincount(where, minlength=len(keys))
    return {(int(k) // (n_old + 1), int(k) % (n_old + 1)): (float(r), int(u))
            for k, r, u in zip(keys, residents, units, strict=True)}


def link_pairs(pairs: Iterable[tuple[int, int]]) -> dict[int, int]:
    """
    Old -> new links from (new, old) pairs given best first: a pair links when neither its new
    nor its old community is linked yet, so each continues at most one other.
    """
    heir: dict[int, int] = {}
    linked: set[int] = set()
    for new, old in pairs:
        if new not in linked and old not in heir:
            heir[old] = new
            linked.add(new)
    return heir


def _stability(units: gpd.GeoDataFrame, prior_unit: np.ndarray, table: gpd.GeoDataFrame) -> float:
    """
    Share of residents who keep their community: each new community continues the old one that
    gives it most residents (each old community continues in at most one new community), linked
    as ids are inherited (`link_pairs`); ties go to the lower new id, then old index.
    """
    pop = units["pop"].to_numpy()
    new_ids = table["community_id"].astype(str).to_numpy()
    row = pd.Series(np.arange(len(new_ids)), index=new_ids)
    new = units["community_id"].map(row).fillna(-1).to_numpy(dtype=np.int64)
    old = np.asarray(prior_unit, dtype=np.int64)
    n_old = int(old.max()) + 1 if len(old) else 0
    shared = shared_residents(new, old, pop, n_old)
    order = sorted((rc for rc in shared if rc[1] < n_old),
                   key=lambda rc: (-shared[rc][0], new_ids[rc[0]], rc[1]))
    kept = sum(int(shared[r, k][0]) for k, r in link_pairs(order).items())
    total = int(pop.sum())
    return kept / total if total else 0.0
