"""
What became of every existing service center, and why each new site was opened.

One row per existing center (a center site given as input: kept, closed or moved) and per new
site the plan opened, with a one-sentence reason built only from the plan's own figures.
`covplan.plan.pipeline.assemble_plan` attaches it to every plan (full or incremental) as
``Plan.center_decisions``; see `DECISION_RULES` for the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import pyproj
    from covplan.plan.pipeline import Prior
    from covplan.reach.matrix import ReachMatrix

__all__ = ["DECISIONS", "DECISION_RULES", "center_decisions", "decision_counts"]

DECISIONS = ("kept", "moved", "closed", "new")

DECISION_RULES = (
    "Existing centers are the input center sites (non-empty center_id, not a 'new-…' site of an "
    "earlier plan). kept: the plan uses it as a community's center. moved: it is not used, its "
    "old community's id is inherited (covplan.plan.ids: the bare id, or the '-a' part of a "
    "split) by a community whose center is a new site, and of the unused existing centers of that old community it is the one nearest that "
    "site. closed: every other unused existing center. new: a community's center that is not an "
    "existing center. Reasons name the communities, centers and residents concerned; 'reaches' "
    "means within the plan's walking limit.")

COLUMNS = ["center_id", "decision", "reason", "community_id", "old_community_id", "population",
           "mean_minutes", "max_minutes", "successor_center_ids"]


def _n(value: float) -> str:
    return f"{round(float(value)):,}"


def _names(items: list[str], limit: int = 3) -> str:
    """'a', 'a and b', 'a, b and c', 'a, b, c and 2 more'."""
    if len(items) > limit:
        return ", ".join(items[:limit]) + f" and {len(items) - limit} more"
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _is_existing(center_ids: pd.Series, existing: pd.Series) -> np.ndarray:
    ids = center_ids.fillna("").astype(str)
    return (existing.to_numpy(dtype=bool) & (ids != "").to_numpy()
            & ~ids.str.startswith("new-").to_numpy())


def center_decisions(reach: ReachMatrix, prior: Prior | None, table: gpd.GeoDataFrame,
                     labels: np.ndarray, *, crs: pyproj.CRS | str | None = None,
                     locked: np.ndarray | None = None) -> gpd.GeoDataFrame:
    """
    Every existing center and every new site of a plan, with what the plan decided and why.

    Parameters
    ----------
    reach
        The reach matrix the plan was solved on: its ``candidates`` hold the center sites
        (``existing`` True with a ``center_id``) and the network-node candidates.
    prior
        The existing communities on units and candidates (merge/split mode), or None (redraw:
        no old communities, so no center is ``moved``).
    table
        The plan's community table in the working CRS (``community_id``, ``center_id``,
        ``candidate_id``, ``population``, ``mean_minutes``, ``max_minutes``), final ids.
    labels
        Community index per unit (row of `table`; -1 for none).
    crs
        CRS of the result (default: the working CRS of `reach`).
    locked
        Bool per candidate: existing centers the user locked open (``--lock-centers``). A
        locked center the plan does not use says so first in its reason.

    Returns
    -------
    geopandas.GeoDataFrame
        One point per existing center (exactly once each, by candidate row) and per new site,
        ordered kept, moved, closed, new and then by id, with columns ``center_id``,
        ``decision`` ('kept', 'moved', 'closed' or 'new', see `DECISION_RULES`), ``reason``
        (one sentence), ``community_id`` (the community it serves; '' when moved or closed),
        ``old_community_id`` (the existing community it served; '' when unknown or new),
        ``population`` (residents it serves, 0 when moved or closed), ``mean_minutes`` and
        ``max_minutes`` (its members' walks; NaN when moved or closed) and
        ``successor_center_ids`` (moved or closed: the centers now serving its old community's
        residents, or the residents in its reach, ';'-separated, largest share first) and
        ``locked`` (the user locked it open).
    """
    cands = reach.candidates
    limit = f"{reach.max_minutes:g} min"
    pop = reach.units["pop"].to_numpy(dtype="float64")
    labels = np.asarray(labels, dtype="int64")
    minutes = reach.minutes.tocsr()
    if not minutes.has_sorted_indices:
        minutes = minutes.sorted_indices()

    comm_ids = table["community_id"].astype(str).to_numpy()
    comm_centers = table["center_id"].astype(str).to_numpy()
    comm_cand = table["candidate_id"].to_numpy(dtype="int64")
    comm_pop = table["population"].to_numpy(dtype="float64")
    existing = _is_existing(cands["center_id"], cands["existing"])
    site_ids = cands["center_id"].fillna("").astype(str).to_numpy()
    used = {int(c): r for r, c in enumerate(comm_cand)}
    new_rows = [r for r in range(len(table)) if not existing[comm_cand[r]]]
    old_ids = list(prior.ids) if prior is not None else []
    old_of = (prior.candidate if prior is not None
              else np.full(len(cands), -1, dtype="int64"))

    def members(r: int) -> np.ndarray:
        rows = np.flatnonzero(labels == r)
        housed = rows[pop[rows] > 0]
        return housed if len(housed) else rows

    def reached_by(candidate: int, rows: np.ndarray) -> np.ndarray:
        """Per row of `rows`, whether it reaches `candidate` (slices rows only: stays cheap)."""
        sub = minutes[rows]
        hit = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))[sub.indices == candidate]
        return np.isin(np.arange(len(rows)), hit)

    def reaches_all(candidate: int, rows: np.ndarray) -> bool:
        return bool(len(rows)) and bool(reached_by(candidate, rows).all())

    def served_by(rows: np.ndarray) -> list[tuple[int, float]]:
        """(community row, residents) of `rows`' residents, largest first."""
        rows = rows[(labels[rows] >= 0) & (pop[rows] > 0)]
        sums = np.bincount(labels[rows], weights=pop[rows], minlength=len(table))
        order = sorted(np.flatnonzero(sums > 0), key=lambda r: (-sums[r], comm_ids[r]))
        return [(int(r), float(sums[r])) for r in order]

    xy = np.column_stack([cands.geometry.x.to_numpy(), cands.geometry.y.to_numpy()])

    # moved: per new-site community that inherits an old id, the nearest unused old center.
    moved_to: dict[int, int] = {}                       # existing candidate -> community row
    if prior is not None:
        heirs = {cid: cid for cid in old_ids} | {f"{cid}-a": cid for cid in old_ids}
        for r in new_rows:
            if comm_ids[r] not in heirs:
                continue
            k = old_ids.index(heirs[comm_ids[r]])
            olds = [int(c) for c in np.flatnonzero(existing & (old_of == k)) if int(c) not in used]
            if olds:
                site = comm_cand[r]
                nearest = min(olds, key=lambda c: (np.hypot(*(xy[c] - xy[site])), site_ids[c]))
                moved_to[nearest] = r

    records, csc = [], None
    for c in np.flatnonzero(existing):
        c = int(c)
        k = int(old_of[c])
        old = old_ids[k] if k >= 0 else ""
        rec = {"candidate": c, "center_id": site_ids[c], "old_community_id": old,
               "community_id": "", "population": 0, "mean_minutes": np.nan,
               "max_minutes": np.nan, "successor_center_ids": ""}
        if c in used:
            r = used[c]
            rec.update(decision="kept", community_id=comm_ids[r], population=int(comm_pop[r]),
                       mean_minutes=float(table["mean_minutes"].iloc[r]),
                       max_minutes=float(table["max_minutes"].iloc[r]))
            reason = f"serves {comm_ids[r]} ({_n(comm_pop[r])} residents)"
            if old and old != comm_ids[r]:
                reason += f"; it served {old} before"
            rec["reason"] = reason
            records.append(rec)
            continue
        old_rows = np.flatnonzero(prior.unit == k) if k >= 0 else np.empty(0, dtype="int64")
        if c in moved_to:
            r = moved_to[c]
            site = comm_cand[r]
            dist = float(np.hypot(*(xy[c] - xy[site])))
            housed = members(r)
            reached = reached_by(c, housed)
            why = ""
            if len(housed) and not reached.all():
                why = (f": it does not reach {_n(pop[housed[~reached]].sum())} of "
                       f"{comm_ids[r]}'s residents within {limit}")
            elif len(housed):
                why = (f"; it would also reach all {comm_ids[r]}'s residents, but the planner "
                       "preferred the new site")
            rec.update(decision="moved", successor_center_ids=comm_centers[r],
                       reason=f"moved to {comm_centers[r]}, {dist:,.0f} m away, the center of "
                              f"{comm_ids[r]} ({_n(comm_pop[r])} residents){why}")
            records.append(rec)
            continue
        rec["decision"] = "closed"
        if k >= 0:
            groups = served_by(old_rows)
            if not groups:
                rec["reason"] = (f"no community needs it: its community {old} has no residents "
                                 "in the plan's communities")
            elif len(groups) == 1 or comm_ids[groups[0][0]] == old:
                # Its residents (or most of them, in the community keeping its id) stay together.
                r = groups[0][0]
                full = reaches_all(comm_cand[r], members(r))
                whose = (f", whose center {comm_centers[r]} reaches all members"
                         if full else f", served by center {comm_centers[r]}")
                olds_in = {old_ids[kk] for kk in np.unique(prior.unit[members(r)]) if kk >= 0}
                if comm_ids[r] == old and len(olds_in) <= 1:
                    reason = f"its community {old} continues{whose}"
                elif comm_ids[r] == old:
                    reason = (f"its community {old} merged with "
                              f"{_names(sorted(olds_in - {old}))} into {old}{whose}")
                else:
                    reason = f"its community {old} merged into {comm_ids[r]}{whose}"
                rest = [f"{comm_ids[o]} ({_n(v)}, center {comm_centers[o]})" for o, v in groups[1:]]
                if rest:
                    reason += f"; {_n(sum(v for _, v in groups[1:]))} of its residents went to {_names(rest)}"
                rec["reason"] = reason
            else:
                parts = [f"{comm_ids[r]} ({_n(v)}, center {comm_centers[r]})" for r, v in groups]
                rec["reason"] = (f"its community {old}'s {_n(sum(v for _, v in groups))} residents "
                                 f"are now served by {_names(parts)}")
            rec["successor_center_ids"] = ";".join(comm_centers[r] for r, _ in groups)
        else:
            csc = csc if csc is not None else minutes.tocsc()   # keeps explicit zeros
            near = csc.indices[csc.indptr[c]:csc.indptr[c + 1]]
            groups = served_by(near)
            if not groups:
                rec["reason"] = f"no community needs it: no resident lives within {limit} of it"
            else:
                names = [comm_ids[r] for r, _ in groups]
                sites = [comm_centers[r] for r, _ in groups]
                total = sum(v for _, v in groups)
                rec["reason"] = (f"not needed: the {_n(total)} residents within {limit} of it "
                                 f"are served by {_names(names)} (centers {_names(sites)})")
            rec["successor_center_ids"] = ";".join(comm_centers[r] for r, _ in groups)
        records.append(rec)

    replaced = {r: c for c, r in moved_to.items()}
    for r in new_rows:
        site = int(comm_cand[r])
        housed = members(r)
        alternatives = []
        if len(housed):
            counts = np.bincount(minutes[housed].indices, minlength=minutes.shape[1])
            alternatives = [int(c) for c in np.flatnonzero(existing & (counts == len(housed)))]
        if not alternatives:
            why = f"no existing center reaches all its members within {limit}"
        else:
            busy = [c for c in alternatives if c in used]
            idle = [c for c in alternatives if c not in used]
            parts = []
            if idle:
                parts.append(f"unused existing center(s) {_names([site_ids[c] for c in idle])} "
                             "would also reach all its members, but the planner preferred this "
                             "site")
            if busy:
                parts.append(f"{_names([site_ids[c] for c in busy])}, which also reach all its "
                             f"members, serve {_names([comm_ids[used[c]] for c in busy])}")
            why = "; ".join(parts)
        if r in replaced:
            c = replaced[r]
            dist = float(np.hypot(*(xy[c] - xy[site])))
            why = (f"replaces {site_ids[c]}, the center of {old_ids[old_of[c]]}, {dist:,.0f} m "
                   "away; " + why)
        records.append({
            "candidate": site, "center_id": comm_centers[r] or f"new-{site}", "decision": "new",
            "reason": f"serves {comm_ids[r]} ({_n(comm_pop[r])} residents): {why}",
            "community_id": comm_ids[r],
            "old_community_id": "",
            "population": int(comm_pop[r]),
            "mean_minutes": float(table["mean_minutes"].iloc[r]),
            "max_minutes": float(table["max_minutes"].iloc[r]),
            "successor_center_ids": ""})

    frame = pd.DataFrame(records, columns=["candidate", *COLUMNS])
    is_locked = (np.zeros(len(frame), bool) if locked is None
                 else np.asarray(locked, bool)[frame["candidate"].to_numpy(dtype="int64")])
    frame["locked"] = is_locked
    unmet = is_locked & frame["decision"].isin(["closed", "moved"]).to_numpy()
    frame.loc[unmet, "reason"] = (
        f"locked open, but the planner found no community that keeps every resident within "
        f"{limit} of it and the rules met; " + frame.loc[unmet, "reason"].astype(str))
    rank = {d: i for i, d in enumerate(DECISIONS)}
    frame = (frame.assign(_rank=frame["decision"].map(rank))
             .sort_values(["_rank", "center_id", "candidate"], kind="stable")
             .reset_index(drop=True))
    geometry = cands.geometry.iloc[frame["candidate"].to_numpy(dtype="int64")].values
    out = gpd.GeoDataFrame(frame[[*COLUMNS, "locked"]].astype({"population": "int64"}),
                           geometry=geometry, crs=reach.work_crs)
    for col in ("center_id", "decision", "reason", "community_id", "old_community_id",
                "successor_center_ids"):
        out[col] = out[col].astype(object)
    return out if crs is None else out.to_crs(crs)


def decision_counts(decisions: gpd.GeoDataFrame | None) -> dict[str, int]:
    """``centers_kept``, ``centers_closed``, ``centers_moved``, ``centers_new``,
    ``centers_locked`` and ``centers_locked_not_kept`` of a decisions frame (all 0 for None)."""
    counts = {} if decisions is None else decisions["decision"].value_counts().to_dict()
    out = {f"centers_{d}": int(counts.get(d, 0)) for d in ("kept", "closed", "moved", "new")}
    locked = (decisions[decisions["locked"].astype(bool)]
              if decisions is not None and "locked" in decisions else None)
    out["centers_locked"] = 0 if locked is None else len(locked)
    out["centers_locked_not_kept"] = 0 if locked is None else int((locked["decision"] != "kept").sum())
    return out
