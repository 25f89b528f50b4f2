"""Figures of a plan: the per-community table and the headline report."""

from __future__ import annotations

from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd

from coverage import __version__
from coverage._sparse import lookup

if TYPE_CHECKING:
    from coverage.config import PlanConfig
    from coverage.reach import ReachMatrix


def _previous_ids(members_prior: np.ndarray, pop: np.ndarray, ids: list[str]) -> str:
    """Old communities contributing residents, largest first: 'C03 (4,512); C07 (2,100)'."""
    known = members_prior >= 0
    if not known.any():
        return ""
    counts = np.bincount(members_prior[known], weights=pop[known], minlength=len(ids))
    order = np.lexsort((np.arange(len(ids)), -counts))
    return "; ".join(f"{ids[i]} ({int(counts[i]):,})" for i in order if counts[i] > 0)


def _note(population: float, contiguous: bool, alone: bool, config: PlanConfig) -> str:
    notes = []
    if population < config.min_pop:
        notes.append("smaller than target: its residents reach no other planned center within "
                     f"{config.max_minutes:g} min (the walking rule)" if alone else
                     "smaller than target: neighbouring communities cannot give residents "
                     "without breaking the walking rule, contiguity or their own balance")
    elif population > config.max_pop:
        notes.append("larger than target: no neighbouring center within "
                     f"{config.max_minutes:g} min can take more of its residents")
    if not contiguous:
        notes.append("not contiguous: a detached piece reaches no neighbouring center")
    return "; ".join(notes)


def community_table(units: gpd.GeoDataFrame, labels: np.ndarray, center_of: np.ndarray,
                    reach: ReachMatrix, dissolved: gpd.GeoDataFrame, district_of: np.ndarray,
                    districts: gpd.GeoDataFrame | None, *, prior_ids: list[str] | None,
                    prior_unit: np.ndarray | None, config: PlanConfig) -> gpd.GeoDataFrame:
    """One row per community, in the working CRS, ordered by community id."""
    pop = units["pop"].to_numpy()
    served = np.flatnonzero(labels >= 0)
    minutes = np.full(len(units), np.nan)
    minutes[served] = lookup(reach.minutes, served, center_of[served])[0]
    planned = np.unique(center_of[served])
    reach_planned = reach.minutes[:, planned]
    n_planned = np.diff(reach_planned.tocsr().indptr)
    rows = []
    shapes = dissolved.set_index("label")
    district_ids = None if districts is None else districts["district_id"].astype(str).to_numpy()
    for label in range(len(planned)):
        members = np.flatnonzero(labels == label)
        candidate = int(planned[label])
        member_pop = pop[members]
        total = int(member_pop.sum())
        m = minutes[members]
        existing = bool(reach.candidates["existing"].iloc[candidate])
        contiguous = bool(shapes.loc[label, "contiguous"]) if label in shapes.index else False
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
            "max_minutes": float(np.nanmax(m)) if len(m) else np.nan,
            "mean_minutes": float(np.average(m, weights=member_pop)) if total > 0 else float(np.nanmean(m)),
            "within_tolerance": bool(config.min_pop <= total <= config.max_pop),
            "contiguous": contiguous,
            "district": district,
            "previous_ids": "" if prior_unit is None else _previous_ids(prior_unit[members], member_pop, prior_ids),
            "note": _note(total, contiguous, bool((n_planned[members] <= 1).all()), config),
        })
    table = pd.DataFrame(rows)
    geometry = [shapes.loc[i, "geometry"] if i in shapes.index else None for i in range(len(planned))]
    return gpd.GeoDataFrame(table, geometry=geometry, crs=reach.work_crs)


def plan_report(units: gpd.GeoDataFrame, table: gpd.GeoDataFrame, *, config: PlanConfig,
                reach: ReachMatrix, prior_unit: np.ndarray | None, changes: pd.DataFrame | None,
                fixed: int, issues: list[str], runtime_s: float) -> dict:
    """The headline figures of a plan, with every parameter that produced it."""
    pop = units["pop"].to_numpy()
    total = int(pop.sum())
    assigned = units["community_id"].notna().to_numpy()
    within = assigned & (units["minutes"].to_numpy() <= config.max_minutes + 1e-9)
    reachable = reach.reachable
    sizes = table["population"].to_numpy()
    minutes = units["minutes"].to_numpy()
    report = {
        "population_total": total,
        "population_assigned": int(pop[assigned].sum()),
        "communities": int(len(table)),
        "coverage_share": float(pop[within].sum() / total) if total else 0.0,
        "coverage_share_of_reachable": float(pop[within].sum() / max(pop[reachable].sum(), 1)),
        "unreachable_population": int(pop[~reachable].sum()),
        "mean_minutes": float(np.average(minutes[assigned], weights=pop[assigned])) if pop[assigned].sum() else None,
        "max_minutes": float(np.nanmax(minutes[assigned])) if assigned.any() else None,
        "within_tolerance_share": float(table["within_tolerance"].mean()) if len(table) else 0.0,
        "contiguous_share": float(table["contiguous"].mean()) if len(table) else 0.0,
        "population_min": int(sizes.min()) if len(sizes) else 0,
        "population_max": int(sizes.max()) if len(sizes) else 0,
        "stability_share": None,
        "kept_communities": fixed,
        "new_centers": int(table["center_id"].str.startswith("new-").sum()),
        "issues": issues,
        "runtime_s": round(float(runtime_s), 2),
        "parameters": config.to_dict(),
        "version": __version__,
    }
    if prior_unit is not None and changes is not None:
        report["stability_share"] = _stability(units, prior_unit, table)
    return report


def _stability(units: gpd.GeoDataFrame, prior_unit: np.ndarray, table: gpd.GeoDataFrame) -> float:
    """
    Share of residents who keep their community: each new community continues the old one that
    gives it most residents (each old community continues in at most one new community).
    """
    pop = units["pop"].to_numpy()
    new = units["community_id"].to_numpy()
    frame = pd.DataFrame({"old": prior_unit, "new": new, "pop": pop}).dropna(subset=["new"])
    frame = frame[frame.old >= 0]
    flows = frame.groupby(["new", "old"], as_index=False)["pop"].sum()
    flows = flows.sort_values(["pop", "new", "old"], ascending=[False, True, True])
    heir: dict[str, int] = {}
    taken: set[int] = set()
    for row in flows.itertuples():
        if row.new not in heir and row.old not in taken:
            heir[row.new] = row.old
            taken.add(row.old)
    kept = sum(int(r.pop) for r in flows.itertuples() if heir.get(r.new) == r.old)
    total = int(pop.sum())
    return kept / total if total else 0.0
