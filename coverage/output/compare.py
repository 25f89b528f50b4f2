"""
Two plans of the same city and population side by side: which communities were added, removed
or changed, which residents change community, which centers are new, closed or moved, and how
coverage, balance and walking times move.

plan A + plan B (objects or folders written by `write_plan`)
  -> units matched by unit_id -> communities matched by shared residents -> centers matched by id
  -> grids (when both plans have them) matched by grid id, residents located by their unit
  -> PlanComparison (summary, per-community table, per-unit movement, center changes, grids)
  -> comparison.json, communities.csv, grids.csv and compare_map.html (`write_comparison`).
"""

from __future__ import annotations

import html
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
from covplan._validate import require_columns, require_crs
from covplan.errors import InputError
from covplan.inputs.areas import label_units
from covplan.metrics import coverage_figures, within_limit
from covplan.output.maps import MapPanel, base_map, finish_map, geojson_layer, save_map, titled_map
from covplan.plan.pipeline import Plan
from scipy.optimize import linear_sum_assignment

logger = logging.getLogger(__name__)

SAME_PLACE_M = 1.0      # two points closer than this are one place (CRS round trips move them µm)
METRICS = ("communities", "coverage_share", "within_tolerance_share", "mean_minutes",
           "max_minutes", "population_min", "population_max")
MATCHING_RULE = (
    "Communities are matched one to one by the residents they share (units matched by unit_id): "
    "a pair may match only if the shared residents are more than half of either community, and "
    "the matching keeps the most shared residents in total (ties go to pairs with the same "
    "community_id). A matched pair is unchanged when it has exactly the same residents and the "
    "same center site, else changed; an A community without a match is removed, a B community "
    "without a match is added. A resident changes community when their B community is not the "
    "match of their A community (having a community in only one plan counts as a change). "
    "Centers are matched by center_id: an A center whose id is absent from B is closed, a B "
    "center whose id is absent from A is new, the same id standing more than 1 m apart has "
    "moved, else it is kept. Sites the planner proposed (ids new-...) are named by candidate, "
    "not by place, so they are the same center only at the same place (within 1 m, whatever "
    "their ids); elsewhere the A one is closed and the B one new.")
GRID_RULE = (
    "Grids are matched by grid_id (a grid id carries its community's id). A grid is kept when "
    "B has the same id holding the same units, changed when the id holds other units, removed "
    "when only A has the id and added when only B has it. A unit's residents are in the grid "
    "holding the unit's point (a unit cut between grids counts whole in that one); a resident "
    "keeps their grid when both plans put them in grids of the same id.")
STYLE = {
    "status_fill": {"unchanged": "#f7f7f7", "changed": "#fdae61", "added": "#1a9641"},
    "a_line": "#555555",
    "b_line": "#222222",
    "palette": ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf"],
    "covered": "#1a9641",
    "uncovered": "#d7191c",
    "no_community": "#777777",
    "center_colors": {"new": "#1a9641", "closed": "#d7191c", "moved": "#e66101",
                      "kept": "#1f4e9c"},
}


@dataclass(frozen=True, slots=True, eq=False)
class PlanComparison:
    """Plan B against plan A; every table is in the CRS of plan A."""

    a: Plan
    b: Plan
    summary: dict                   # headline counts and metric deltas (comparison.json)
    communities: pd.DataFrame       # community_id_a/_b, status, renamed, residents_shared,
                                    # population/center_id/mean_minutes/max_minutes/within_tolerance
                                    # _a/_b, population_delta, center_moved_m, residents_to/_from
    units: gpd.GeoDataFrame         # unit_id, cell_id, pop, community_id/minutes/covered _a/_b,
                                    # moved, newly_covered, newly_uncovered
    centers: gpd.GeoDataFrame       # status (kept/moved/new/closed), center_id/community_id
                                    # _a/_b, distance_m; the B site (A's for closed ones)
    grids: pd.DataFrame | None = None   # when both plans have grids: grid_id, status (kept /
                                    # changed / added / removed), community_id, population,
                                    # within_tolerance and units _a/_b (see `GRID_RULE`)
    folders: tuple[Path | None, Path | None] = (None, None)    # plan folders read, resolved


def compare_plans(a: Plan | str | os.PathLike[str],
                  b: Plan | str | os.PathLike[str]) -> PlanComparison:
    """
    Compare plan `b` with plan `a` (e.g. a what-if against the base case).

    Both plans must come from the same population input (same units, by ``unit_id``), so each
    resident can be followed from A to B. Communities are matched by the residents they share:
    see `MATCHING_RULE`. Community ids alone are not trusted: two plans made independently
    (a redraw numbers communities N01, N02, ... by center) may give one id to different areas.
    Centers are matched by ``center_id`` (see `MATCHING_RULE`): closed when the id is only in
    A, new when only in B, moved when the same id stands more than 1 m away, else kept.

    Parameters
    ----------
    a, b
        Plans, or folders written by `write_plan` / ``covplan plan --out``.

    Returns
    -------
    PlanComparison
        ``summary`` (communities added / removed / changed / unchanged, residents_moved,
        newly covered / uncovered population, centers new / closed / moved / kept and, under
        ``metrics``, each plan's coverage_share, within_tolerance_share, mean_minutes,
        max_minutes, population_min/max and communities with the B - A delta),
        ``communities``, ``units`` and ``centers``. Coverage in each plan means within that
        plan's own ``max_minutes`` of the resident's own center. When both plans have grids:
        ``grids`` (one row per grid id, `GRID_RULE`), ``units`` gains grid_id_a/_b, and
        ``summary["grids"]`` gives each side's count and within-tolerance share, the grids kept,
        changed, added and removed, and the residents keeping their grid id (else None).

    Raises
    ------
    InputError
        If the plans cover different cities or come from different population inputs.
    DataSourceError
        If a folder is not a plan folder (the message names the missing file).
    """
    plan_a, label_a = _as_plan(a, "A")
    plan_b, label_b = _as_plan(b, "B")
    units = _align_units(plan_a, plan_b, label_a, label_b)
    pop_a = _community_population(plan_a, units["community_id_a"], units["pop"])
    pop_b = _community_population(plan_b, units["community_id_b"], units["pop"])
    flows = (units.dropna(subset=["community_id_a", "community_id_b"])
             .groupby(["community_id_a", "community_id_b"], sort=True)["pop"].sum())
    match = _match_communities(pop_a, pop_b, flows)
    heir = units["community_id_a"].map(match)
    units["moved"] = (units["community_id_a"].notna() | units["community_id_b"].notna()) & (
        heir.isna() | (heir != units["community_id_b"]))
    sites_a = _sites(plan_a)
    sites_b = _sites(plan_b).to_crs(sites_a.crs)
    communities = _community_table(plan_a, plan_b, units, pop_a, pop_b, flows, match,
                                   sites_a, sites_b)
    centers = _center_changes(sites_a, sites_b, plan_a)
    summary = _summary(plan_a, plan_b, label_a, label_b, units, communities, centers)
    grids, summary["grids"] = _grid_comparison(plan_a, plan_b, units)
    logger.info("Compared %s with %s: %d communities added, %d removed, %d changed, %d unchanged; "
                "%d residents change community", label_b, label_a, summary["communities_added"],
                summary["communities_removed"], summary["communities_changed"],
                summary["communities_unchanged"], summary["residents_moved"])
    folders = tuple(Path(s).resolve() if isinstance(s, (str, os.PathLike)) else None
                    for s in (a, b))
    return PlanComparison(a=plan_a, b=plan_b, summary=summary, communities=communities,
                          units=units, centers=centers, grids=grids, folders=folders)


def write_comparison(comparison: PlanComparison, out: str | os.PathLike[str], *,
                     self_contained: bool = True) -> Path:
    """
    Write comparison.json (the summary), communities.csv, grids.csv (when both plans have grids)
    and compare_map.html into `out`.

    The map is self-contained (Leaflet embedded, see `covplan.output.maps.save_map`): it opens without
    internet, where only the base tiles are missing; `self_contained=False` links the CDNs.
    Returns the folder. Raises InputError when `out` is, holds or lies in a plan folder the
    comparison was read from (`check_out_folder`).
    """
    from covplan.output.files import prepare_folder, write_json

    check_out_folder(out, *comparison.folders)
    folder = prepare_folder(out)
    write_json(folder / "comparison.json", comparison.summary)
    comparison.communities.to_csv(folder / "communities.csv", index=False)
    if comparison.grids is not None:
        comparison.grids.to_csv(folder / "grids.csv", index=False)
    save_map(compare_map(comparison), folder / "compare_map.html", self_contained=self_contained)
    return folder


def check_out_folder(out: str | os.PathLike[str],
                     *plans: Plan | str | os.PathLike[str] | None) -> None:
    """
    Refuse an output folder that is one of the plan folders compared, holds one or lies inside
    one: writing it would replace (or alter) a plan the comparison reads. Plans given as
    objects (or None) are not folders and pass.

    Raises
    ------
    InputError
        Naming the folder, the plan it would replace and a folder to use instead.
    """
    target = Path(out).resolve()
    for side, source in zip("AB", plans):
        if not isinstance(source, (str, os.PathLike)):
            continue
        folder = Path(source).resolve()
        if target == folder or folder in target.parents or target in folder.parents:
            where = ("is" if target == folder else
                     "lies inside" if folder in target.parents else "holds")
            suggestion = folder.parent / f"{folder.name}-vs-comparison"
            msg = (f"--out '{os.fspath(out)}' {where} plan {side}'s folder ({os.fspath(source)}): "
                   f"writing the comparison there would replace the plan it compares; name a "
                   f"folder of its own, e.g. --out {suggestion} (write_comparison(out=...)).")
            raise InputError(msg)


# --- inputs --------------------------------------------------------------------------------------

def _as_plan(source: Plan | str | os.PathLike[str], side: str) -> tuple[Plan, str]:
    if isinstance(source, Plan):
        plan, label = source, side
    elif isinstance(source, (str, os.PathLike)):
        from covplan.output.files import read_plan

        plan, label = read_plan(source), os.fspath(source)
    else:
        msg = f"plan {side} must be a Plan or a plan folder path, got {type(source).__name__}."
        raise TypeError(msg)
    name = f"plan {side} ({label})" if label != side else f"plan {side}"
    require_columns(plan.units, ["unit_id", "pop", "community_id", "minutes"], name=f"{name} units")
    require_columns(plan.communities, ["community_id", "center_id"], name=f"{name} communities")
    require_columns(plan.centers, ["center_id"], name=f"{name} centers")
    for frame, what in ((plan.units, "units"), (plan.communities, "communities"),
                        (plan.centers, "centers")):
        require_crs(frame, name=f"{name} {what}")
    if not plan.units["unit_id"].is_unique:
        msg = (f"{name} has repeated unit_id values; each unit must appear once "
               "(write the plan again).")
        raise InputError(msg)
    return plan, label


def _extent(units: gpd.GeoDataFrame) -> str:
    minx, miny, maxx, maxy = units.to_crs(4326).total_bounds
    return f"lon {minx:.3f}..{maxx:.3f}, lat {miny:.3f}..{maxy:.3f}"


def _align_units(a: Plan, b: Plan, label_a: str, label_b: str) -> gpd.GeoDataFrame:
    """Every unit once, with its community, minutes and coverage in both plans (A's CRS)."""
    ua = a.units.sort_values("unit_id").reset_index(drop=True)
    ub = b.units.to_crs(ua.crs).sort_values("unit_id").reset_index(drop=True)
    names = ("plans A and B" if (label_a, label_b) == ("A", "B")
             else f"plan A ({label_a}) and plan B ({label_b})")
    fix = ("compare plans made from the same population input (same file, disaggregation and "
           "max_unit_pop).")
    box_a, box_b = ua.to_crs(4326).total_bounds, ub.to_crs(4326).total_bounds
    if box_a[2] < box_b[0] or box_b[2] < box_a[0] or box_a[3] < box_b[1] or box_b[3] < box_a[1]:
        msg = (f"{names} cover different cities: A's units lie in {_extent(ua)}, B's in "
               f"{_extent(ub)}; compare two plans of the same city and population input.")
        raise InputError(msg)
    total_a, total_b = int(ua["pop"].sum()), int(ub["pop"].sum())
    inputs = (f"{names} come from different population inputs: A has {total_a:,} residents in "
              f"{len(ua):,} units, B has {total_b:,} in {len(ub):,} units")
    same_ids = len(ua) == len(ub) and (ua["unit_id"].to_numpy() == ub["unit_id"].to_numpy()).all()
    if not same_ids:
        if "cell_id" in ua.columns and "cell_id" in ub.columns and total_a == total_b:
            cells_a = ua.groupby("cell_id")["pop"].sum().sort_index()
            cells_b = ub.groupby("cell_id")["pop"].sum().sort_index()
            if cells_a.equals(cells_b):
                msg = (f"{inputs}, although their {len(cells_a):,} cells agree: the cells were "
                       f"split into units differently (max_unit_pop {a.config.max_unit_pop} in A, "
                       f"{b.config.max_unit_pop} in B, or another network inside populated cells); "
                       "plan both with the same --max-unit-pop and network to follow residents.")
                raise InputError(msg)
        raise InputError(f"{inputs}; {fix}")
    differ = ua["pop"].to_numpy() != ub["pop"].to_numpy()
    if "cell_id" in ua.columns and "cell_id" in ub.columns:
        differ |= ua["cell_id"].astype(str).to_numpy() != ub["cell_id"].astype(str).to_numpy()
    if differ.any():
        i = int(np.flatnonzero(differ)[0])
        msg = (f"{inputs}; {int(differ.sum()):,} unit(s) differ, e.g. unit {ua['unit_id'].iloc[i]} "
               f"has {ua['pop'].iloc[i]} residents in A and {ub['pop'].iloc[i]} in B; {fix}")
        raise InputError(msg)
    gap = ua.geometry.to_crs(a.work_crs).distance(ub.geometry.to_crs(a.work_crs), align=False)
    gap = gap.to_numpy()
    if (gap > SAME_PLACE_M).any():
        i = int(np.argmax(gap))
        msg = (f"{names} place their units differently: unit {ua['unit_id'].iloc[i]} lies "
               f"{gap[i]:,.0f} m apart ({int((gap > SAME_PLACE_M).sum())} units more than "
               f"{SAME_PLACE_M:g} m); {fix}")
        raise InputError(msg)
    units = gpd.GeoDataFrame({
        "unit_id": ua["unit_id"].to_numpy(),
        "cell_id": ua["cell_id"].to_numpy() if "cell_id" in ua.columns else None,
        "pop": ua["pop"].to_numpy(),
        "community_id_a": _ids(ua["community_id"]),
        "community_id_b": _ids(ub["community_id"]),
        "minutes_a": ua["minutes"].to_numpy(dtype="float64"),
        "minutes_b": ub["minutes"].to_numpy(dtype="float64"),
    }, geometry=ua.geometry.values, crs=ua.crs)
    units["covered_a"] = _covered(units["community_id_a"], units["minutes_a"], a.config.max_minutes)
    units["covered_b"] = _covered(units["community_id_b"], units["minutes_b"], b.config.max_minutes)
    units["newly_covered"] = ~units["covered_a"] & units["covered_b"]
    units["newly_uncovered"] = units["covered_a"] & ~units["covered_b"]
    return units


def _ids(values: pd.Series) -> pd.Series:
    """Community ids as plain strings, None for residents without a community."""
    return pd.Series([str(v) if pd.notna(v) else None for v in values], dtype=object)


def _covered(community: pd.Series, minutes: pd.Series, max_minutes: float) -> np.ndarray:
    return community.notna().to_numpy() & within_limit(minutes.to_numpy(), max_minutes)


# --- matching ------------------------------------------------------------------------------------

def _community_population(plan: Plan, community: pd.Series, pop: pd.Series) -> pd.Series:
    """Residents per community, counted on the units; communities without units hold 0."""
    counted = pop.groupby(community.to_numpy()).sum()
    listed = pd.Index(_ids(plan.communities["community_id"]).dropna())
    return counted.reindex(listed.union(counted.index), fill_value=0).astype("int64").sort_index()


def _match_communities(pop_a: pd.Series, pop_b: pd.Series, flows: pd.Series) -> dict[str, str]:
    """A community id -> B community id, by `MATCHING_RULE` (a maximum-weight assignment)."""
    if flows.empty:
        return {}
    index_a = {cid: i for i, cid in enumerate(pop_a.index)}
    index_b = {cid: j for j, cid in enumerate(pop_b.index)}
    weight = np.zeros((len(pop_a), len(pop_b)))
    # Below one resident in total, so the id only breaks ties between equal overlaps.
    same_id_bonus = 0.5 / (min(len(pop_a), len(pop_b)) + 1)
    for (ca, cb), shared in flows.items():
        if 2 * shared > pop_a[ca] or 2 * shared > pop_b[cb]:
            weight[index_a[ca], index_b[cb]] = shared + (same_id_bonus if ca == cb else 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    keep = weight[rows, cols] > 0
    return {pop_a.index[i]: pop_b.index[j] for i, j in zip(rows[keep], cols[keep], strict=True)}


def _sites(plan: Plan) -> gpd.GeoDataFrame:
    """Center sites with the community each serves (by the communities table)."""
    served = dict(zip(_ids(plan.communities["center_id"]), _ids(plan.communities["community_id"]),
                      strict=True))
    sites = plan.centers[["center_id", plan.centers.geometry.name]].copy()
    sites["center_id"] = _ids(sites["center_id"]).to_numpy()
    sites["community_id"] = sites["center_id"].map(served)
    return sites.to_crs(plan.work_crs).reset_index(drop=True)


def _same_sites(sites_a: gpd.GeoDataFrame, sites_b: gpd.GeoDataFrame,
                work_crs) -> list[tuple[int, int]]:
    """Pairs (row in A, row in B) of sites standing at the same place, nearest first, one to one."""
    b = sites_b.to_crs(work_crs)
    near = gpd.sjoin_nearest(sites_a[["geometry"]].to_crs(work_crs), b[["geometry"]],
                             max_distance=SAME_PLACE_M, distance_col="distance_m")
    near = near.reset_index(names="row_a").sort_values(["distance_m", "row_a", "index_right"])
    pairs, used_a, used_b = [], set(), set()
    for row in near.itertuples():
        if row.row_a not in used_a and row.index_right not in used_b:
            pairs.append((int(row.row_a), int(row.index_right)))
            used_a.add(row.row_a)
            used_b.add(row.index_right)
    return sorted(pairs)


# --- tables --------------------------------------------------------------------------------------

def _overlaps(flows: pd.Series, community: str, *, side: str) -> str:
    """The other plan's communities sharing residents with `community`: 'N03 (6,000); N04 (30)'."""
    level = "community_id_a" if side == "a" else "community_id_b"
    other = "community_id_b" if side == "a" else "community_id_a"
    part = flows[flows.index.get_level_values(level) == community]
    if part.empty:
        return ""
    part = part.reset_index().sort_values(["pop", other], ascending=[False, True])
    return "; ".join(f"{row[other]} ({int(row['pop']):,})" for _, row in part.iterrows())


def _community_stats(units: gpd.GeoDataFrame, side: str) -> pd.DataFrame:
    served = units[units[f"community_id_{side}"].notna()]
    groups = served.groupby(f"community_id_{side}")
    mean = groups.apply(lambda g: float(np.average(g[f"minutes_{side}"], weights=g["pop"]))
                        if g["pop"].sum() > 0 else float(g[f"minutes_{side}"].mean()),
                        include_groups=False)
    return pd.DataFrame({"mean_minutes": mean, "max_minutes": groups[f"minutes_{side}"].max()})


def _community_table(a: Plan, b: Plan, units, pop_a, pop_b, flows, match, sites_a,
                     sites_b) -> pd.DataFrame:
    """One row per matched pair (in A's order), then each added B community; minutes from units."""
    stats_a, stats_b = _community_stats(units, "a"), _community_stats(units, "b")
    center_a, center_b = (sites.dropna(subset=["community_id"]).drop_duplicates("community_id")
                          .set_index("community_id") for sites in (sites_a, sites_b))
    matched_b = set(match.values())
    pairs = [(ca, match.get(ca)) for ca in pop_a.index] + [(None, cb) for cb in pop_b.index
                                                          if cb not in matched_b]
    rows = []
    for ca, cb in pairs:
        shared = int(flows.get((ca, cb), 0)) if ca is not None and cb is not None else 0
        row = {"community_id_a": ca, "community_id_b": cb, "status": "", "renamed": False,
               "residents_shared": shared,
               "population_a": int(pop_a[ca]) if ca is not None else None,
               "population_b": int(pop_b[cb]) if cb is not None else None}
        row["population_delta"] = (row["population_b"] or 0) - (row["population_a"] or 0)
        for side, cid, stats, centers, plan in (("a", ca, stats_a, center_a, a),
                                                 ("b", cb, stats_b, center_b, b)):
            has_center, has_stats = cid in centers.index, cid in stats.index
            row[f"center_id_{side}"] = centers.loc[cid, "center_id"] if has_center else None
            row[f"mean_minutes_{side}"] = stats.loc[cid, "mean_minutes"] if has_stats else np.nan
            row[f"max_minutes_{side}"] = stats.loc[cid, "max_minutes"] if has_stats else np.nan
            pop = row[f"population_{side}"]
            band = plan.config.min_pop <= (pop or 0) <= plan.config.max_pop
            row[f"within_tolerance_{side}"] = None if pop is None else bool(band)
        row["center_moved_m"] = np.nan
        if ca is not None and cb is not None:
            if ca in center_a.index and cb in center_b.index:
                site_a, site_b = center_a.loc[ca, "geometry"], center_b.loc[cb, "geometry"]
                row["center_moved_m"] = float(site_a.distance(site_b))
            same_center = row["center_moved_m"] <= SAME_PLACE_M
            identical = shared == row["population_a"] == row["population_b"]
            row["status"] = "unchanged" if identical and same_center else "changed"
            row["renamed"] = ca != cb
        else:
            row["status"] = "removed" if cb is None else "added"
        row["residents_to"] = _overlaps(flows, ca, side="a") if ca is not None else ""
        row["residents_from"] = _overlaps(flows, cb, side="b") if cb is not None else ""
        rows.append(row)
    columns = ["community_id_a", "community_id_b", "status", "renamed", "residents_shared",
               "population_a", "population_b", "population_delta", "center_id_a", "center_id_b",
               "center_moved_m", "mean_minutes_a", "mean_minutes_b", "max_minutes_a",
               "max_minutes_b", "within_tolerance_a", "within_tolerance_b", "residents_to",
               "residents_from"]
    table = pd.DataFrame(rows, columns=columns)
    for col in ("population_a", "population_b"):
        table[col] = table[col].astype("Int64")
    return table


def _proposed(center_id) -> bool:
    """A site the planner proposed: named by its candidate number, not a standing center."""
    return center_id is None or str(center_id).startswith("new-")


def _center_pairs(sites_a: gpd.GeoDataFrame, sites_b: gpd.GeoDataFrame,
                  work_crs) -> list[tuple[str, int | None, int | None]]:
    """(status, row in A, row in B) for every center site, by `MATCHING_RULE`."""
    rows: list[tuple[str, int | None, int | None]] = []
    free_b: dict[str, list[int]] = {}
    for j, cid in enumerate(sites_b["center_id"]):
        if cid is not None:
            free_b.setdefault(cid, []).append(j)
    paired_a, paired_b = set(), set()
    for i, cid in enumerate(sites_a["center_id"]):
        if not free_b.get(cid):
            continue
        j = free_b[cid][0]
        distance = float(sites_a.geometry.iloc[i].distance(sites_b.geometry.iloc[j]))
        if distance <= SAME_PLACE_M or not _proposed(cid):
            rows.append(("kept" if distance <= SAME_PLACE_M else "moved", i, j))
            free_b[cid].pop(0)
            paired_a.add(i)
            paired_b.add(j)
    # Proposed sites left over: the same site under another candidate number is kept.
    rest_a = [i for i in range(len(sites_a))
              if i not in paired_a and _proposed(sites_a["center_id"].iloc[i])]
    rest_b = [j for j in range(len(sites_b))
              if j not in paired_b and _proposed(sites_b["center_id"].iloc[j])]
    if rest_a and rest_b:
        for i, j in _same_sites(sites_a.iloc[rest_a].reset_index(drop=True),
                                sites_b.iloc[rest_b].reset_index(drop=True), work_crs):
            rows.append(("kept", rest_a[i], rest_b[j]))
            paired_a.add(rest_a[i])
            paired_b.add(rest_b[j])
    rows += [("closed", i, None) for i in range(len(sites_a)) if i not in paired_a]
    rows += [("new", None, j) for j in range(len(sites_b)) if j not in paired_b]
    return rows


def _center_changes(sites_a, sites_b, a: Plan) -> gpd.GeoDataFrame:
    """One row per center: kept, moved (same id elsewhere), new or closed (`MATCHING_RULE`)."""
    sites_b = sites_b.to_crs(sites_a.crs)
    rows = _center_pairs(sites_a, sites_b, a.work_crs)
    records, shapes = [], []
    for status, i, j in rows:
        site_a = sites_a.iloc[i] if i is not None else None
        site_b = sites_b.iloc[j] if j is not None else None
        records.append({
            "status": status,
            "center_id_a": site_a["center_id"] if site_a is not None else None,
            "center_id_b": site_b["center_id"] if site_b is not None else None,
            "community_id_a": site_a["community_id"] if site_a is not None else None,
            "community_id_b": site_b["community_id"] if site_b is not None else None,
            "distance_m": (float(site_a.geometry.distance(site_b.geometry))
                           if site_a is not None and site_b is not None else np.nan),
        })
        shapes.append((site_b if site_b is not None else site_a).geometry)
    order = {"moved": 0, "new": 1, "closed": 2, "kept": 3}
    frame = gpd.GeoDataFrame(records, geometry=shapes, crs=a.work_crs,
                             columns=["status", "center_id_a", "center_id_b", "community_id_a",
                                      "community_id_b", "distance_m"])
    frame["_order"] = frame["status"].map(order)
    frame = frame.sort_values(["_order", "center_id_b", "center_id_a"], na_position="last",
                              kind="stable").drop(columns="_order").reset_index(drop=True)
    return frame.to_crs(a.units.crs)


# --- summary -------------------------------------------------------------------------------------

def _metrics(plan: Plan, units: gpd.GeoDataFrame, side: str) -> dict:
    """The report's headline figures, recomputed on the units so both plans use one definition
    (coverage: `covplan.metrics.coverage_figures`, by each resident's own center in that plan)."""
    pop = units["pop"].to_numpy()
    assigned = units[f"community_id_{side}"].notna().to_numpy()
    minutes = units[f"minutes_{side}"].to_numpy()
    coverage = coverage_figures(pop, minutes_own=np.where(assigned, minutes, np.nan),
                                max_minutes=plan.config.max_minutes)
    sizes = units[assigned].groupby(f"community_id_{side}")["pop"].sum()
    listed = _ids(plan.communities["community_id"]).dropna()
    sizes = sizes.reindex(sizes.index.union(pd.Index(listed)), fill_value=0)
    band = (sizes >= plan.config.min_pop) & (sizes <= plan.config.max_pop)
    return {
        "communities": int(len(sizes)),
        "coverage_share": coverage["coverage_share"],
        "within_tolerance_share": float(band.mean()) if len(sizes) else 0.0,
        "mean_minutes": (float(np.average(minutes[assigned], weights=pop[assigned]))
                         if pop[assigned].sum() > 0 else None),
        "max_minutes": float(np.nanmax(minutes[assigned])) if assigned.any() else None,
        "population_min": int(sizes.min()) if len(sizes) else 0,
        "population_max": int(sizes.max()) if len(sizes) else 0,
    }


def _summary(a: Plan, b: Plan, label_a: str, label_b: str, units, communities, centers) -> dict:
    metrics_a, metrics_b = _metrics(a, units, "a"), _metrics(b, units, "b")
    metrics = {}
    for name in METRICS:
        va, vb = metrics_a[name], metrics_b[name]
        delta = None if va is None or vb is None else vb - va
        metrics[name] = {"a": va, "b": vb, "delta": delta}
    params_a, params_b = a.config.to_dict(), b.config.to_dict()
    status = communities["status"].value_counts()
    center_status = centers["status"].value_counts()
    total = int(units["pop"].sum())
    moved = int(units.loc[units["moved"], "pop"].sum())
    changes = centers[centers["status"] != "kept"]
    return {
        "plan_a": label_a,
        "plan_b": label_b,
        "population_total": total,
        "communities_a": metrics_a["communities"],
        "communities_b": metrics_b["communities"],
        "communities_added": int(status.get("added", 0)),
        "communities_removed": int(status.get("removed", 0)),
        "communities_changed": int(status.get("changed", 0)),
        "communities_unchanged": int(status.get("unchanged", 0)),
        "communities_renamed": int(communities["renamed"].sum()),
        "residents_moved": moved,
        "residents_moved_share": moved / total if total else 0.0,
        "units_moved": int(units["moved"].sum()),
        "newly_covered_population": int(units.loc[units["newly_covered"], "pop"].sum()),
        "newly_uncovered_population": int(units.loc[units["newly_uncovered"], "pop"].sum()),
        "centers_new": int(center_status.get("new", 0)),
        "centers_closed": int(center_status.get("closed", 0)),
        "centers_moved": int(center_status.get("moved", 0)),
        "centers_kept": int(center_status.get("kept", 0)),
        "metrics": metrics,
        "parameters_changed": {k: {"a": params_a.get(k), "b": params_b.get(k)}
                               for k in sorted(set(params_a) | set(params_b))
                               if params_a.get(k) != params_b.get(k)},
        "center_changes": [
            {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
            for row in changes.drop(columns="geometry").to_dict("records")],
        "matching": MATCHING_RULE,
    }


# --- grids ---------------------------------------------------------------------------------------

def _grid_comparison(a: Plan, b: Plan, units: gpd.GeoDataFrame) -> tuple[pd.DataFrame | None,
                                                                        dict | None]:
    """Grids matched by id (`GRID_RULE`): the table and the summary's figures; (None, None)
    unless both plans have grids. Adds grid_id_a/_b to `units`."""
    grids_a, grids_b = getattr(a, "grids", None), getattr(b, "grids", None)
    if grids_a is None or grids_b is None:
        return None, None
    frames = {"a": grids_a.grids, "b": grids_b.grids}
    members = {}
    for side, frame in frames.items():
        require_columns(frame, ["grid_id", "community_id", "population", "within_tolerance"],
                        name=f"plan {side.upper()} grids")
        located = label_units(units, frame, id_column="grid_id")
        units[f"grid_id_{side}"] = pd.Series(located, index=units.index, dtype=object)
        members[side] = units.dropna(subset=[f"grid_id_{side}"]).groupby(
            f"grid_id_{side}")["unit_id"].agg(frozenset)
    rows_a = frames["a"].set_index(frames["a"]["grid_id"].astype(str))
    rows_b = frames["b"].set_index(frames["b"]["grid_id"].astype(str))
    ids = list(rows_a.index) + [g for g in rows_b.index if g not in rows_a.index]
    rows = []
    for gid in ids:
        row = {"grid_id": gid}
        for side, table in (("a", rows_a), ("b", rows_b)):
            there = gid in table.index
            row[f"community_id_{side}"] = str(table.at[gid, "community_id"]) if there else None
            row[f"population_{side}"] = int(table.at[gid, "population"]) if there else None
            row[f"within_tolerance_{side}"] = bool(table.at[gid, "within_tolerance"]) if there \
                else None
            row[f"units_{side}"] = len(members[side].get(gid, ())) if there else None
        if gid not in rows_b.index:
            row["status"] = "removed"
        elif gid not in rows_a.index:
            row["status"] = "added"
        else:
            same = members["a"].get(gid, frozenset()) == members["b"].get(gid, frozenset())
            row["status"] = "kept" if same else "changed"
        rows.append(row)
    columns = ["grid_id", "status", "community_id_a", "community_id_b", "population_a",
               "population_b", "within_tolerance_a", "within_tolerance_b", "units_a", "units_b"]
    table = pd.DataFrame(rows, columns=columns)
    for col in ("population_a", "population_b", "units_a", "units_b"):
        table[col] = table[col].astype("Int64")
    in_a = units["grid_id_a"].notna()
    keep = in_a & (units["grid_id_a"] == units["grid_id_b"])
    residents = int(units.loc[in_a, "pop"].sum())
    status = table["status"].value_counts()
    share = {side: float(frames[side]["within_tolerance"].astype(bool).mean())
             if len(frames[side]) else None for side in "ab"}
    summary = {
        "grids_a": len(frames["a"]), "grids_b": len(frames["b"]),
        **{f"grids_{k}": int(status.get(k, 0)) for k in ("kept", "changed", "added", "removed")},
        "residents_keeping_grid": int(units.loc[keep, "pop"].sum()),
        "residents_keeping_grid_share": (int(units.loc[keep, "pop"].sum()) / residents
                                         if residents else None),
        "within_tolerance_share": {
            "a": share["a"], "b": share["b"],
            "delta": None if None in share.values() else share["b"] - share["a"]},
        "matching": GRID_RULE,
    }
    return table, summary


# --- map -----------------------------------------------------------------------------------------

def _boundaries(plan: Plan, communities: pd.DataFrame, side: str) -> gpd.GeoDataFrame:
    other = "b" if side == "a" else "a"
    frame = plan.communities[["community_id", plan.communities.geometry.name]].copy()
    frame["community_id"] = _ids(frame["community_id"]).to_numpy()
    info = communities.dropna(subset=[f"community_id_{side}"]).set_index(f"community_id_{side}")
    frame["status"] = frame["community_id"].map(info["status"])
    frame[f"match_in_{other.upper()}"] = frame["community_id"].map(info[f"community_id_{other}"])
    frame["population"] = frame["community_id"].map(info[f"population_{side}"]).astype("float64")
    flows = info["residents_to" if side == "a" else "residents_from"]
    frame["residents"] = frame["community_id"].map(flows)
    return frame[~frame.geometry.is_empty & frame.geometry.notna()]


def _center_text(row, status: str) -> str:
    return {"new": f"new center {row.center_id_b} (community {row.community_id_b} in B)",
            "closed": f"center {row.center_id_a} closed (community {row.community_id_a} in A)",
            "moved": f"center {row.center_id_b} moved {row.distance_m:,.0f} m "
                     f"(community {row.community_id_a} in A, {row.community_id_b} in B)",
            "kept": f"center {row.center_id_b} kept "
                    f"({row.community_id_a} → {row.community_id_b})",
            }[status]


def _add_centers(fmap: folium.Map, comparison: PlanComparison) -> None:
    """Center sites as circle markers (no icon fonts, so the map can be saved self-contained)."""
    centers = comparison.centers.to_crs(4326)
    start = dict(zip(_ids(comparison.a.centers["center_id"]),
                     comparison.a.centers.to_crs(4326).geometry, strict=True))
    for status, title, show in (("new", "new centers", True),
                                ("closed", "centers closed", True),
                                ("moved", "centers moved (same id; line from the A site)", True),
                                ("kept", "centers kept", False)):
        rows = centers[centers["status"] == status]
        group = folium.FeatureGroup(name=f"{title} ({len(rows)})", show=show)
        color = STYLE["center_colors"][status]
        for row in rows.itertuples():
            text = html.escape(_center_text(row, status))
            if status == "moved" and row.center_id_a in start:
                origin = start[row.center_id_a]
                folium.PolyLine([[origin.y, origin.x], [row.geometry.y, row.geometry.x]],
                                color=color, weight=3, dash_array="4 4", tooltip=text).add_to(group)
            folium.CircleMarker([row.geometry.y, row.geometry.x], radius=8, color="#222222",
                                weight=2, fill=True, fill_color=color,
                                fill_opacity=0.2 if status == "closed" else 0.95,
                                tooltip=text).add_to(group)
        group.add_to(fmap)


def _add_residents(fmap: folium.Map, units: gpd.GeoDataFrame, *, column: str, name: str,
                   color: str | None) -> None:
    """Units flagged in `column`, one dot each; `color` None colours them by their B community."""
    chosen = units[units[column] & (units["pop"] > 0)]
    fields = ["unit_id", "pop", "community_id_a", "community_id_b", "minutes_a", "minutes_b"]
    frame = chosen[fields + ["geometry"]].copy()
    palette = STYLE["palette"]
    codes = {cid: palette[k % len(palette)] for k, cid in
             enumerate(sorted(units["community_id_b"].dropna().unique()))}
    frame["color"] = [color or codes.get(cid, STYLE["no_community"])
                      for cid in frame["community_id_b"]]
    layer = folium.FeatureGroup(name=f"{name} ({int(chosen['pop'].sum()):,} residents)")
    if len(frame):
        folium.GeoJson(
            geojson_layer(frame), marker=folium.CircleMarker(radius=4),
            style_function=lambda f: {"color": f["properties"]["color"], "weight": 1, "fill": True,
                                      "fillColor": f["properties"]["color"], "fillOpacity": 0.85},
            tooltip=folium.GeoJsonTooltip(fields=fields, aliases=[
                "unit", "residents", "community in A", "community in B", "minutes in A",
                "minutes in B"])).add_to(layer)
    layer.add_to(fmap)


def _summary_panel(summary: dict) -> str:
    m = summary["metrics"]

    def pair(name: str, fmt: str) -> str:
        va, vb = m[name]["a"], m[name]["b"]
        return " → ".join("–" if v is None else format(v, fmt) for v in (va, vb))

    lines = [
        f"communities {pair('communities', 'd')}: {summary['communities_added']} added, "
        f"{summary['communities_removed']} removed, {summary['communities_changed']} changed, "
        f"{summary['communities_unchanged']} unchanged",
        f"residents changing community: {summary['residents_moved']:,} "
        f"({summary['residents_moved_share']:.0%})",
        f"coverage {pair('coverage_share', '.1%')}; "
        f"within tolerance {pair('within_tolerance_share', '.0%')}",
        f"mean walk {pair('mean_minutes', '.1f')} min; worst {pair('max_minutes', '.1f')} min",
        f"newly covered {summary['newly_covered_population']:,}; newly uncovered "
        f"{summary['newly_uncovered_population']:,}",
        f"centers: {summary['centers_new']} new, {summary['centers_closed']} closed, "
        f"{summary['centers_moved']} moved, {summary['centers_kept']} kept",
    ]
    grids = summary.get("grids")
    if grids:
        share = grids["within_tolerance_share"]
        lines.append(
            f"grids {grids['grids_a']} → {grids['grids_b']}: {grids['grids_kept']} kept, "
            f"{grids['grids_changed']} changed, {grids['grids_added']} added, "
            f"{grids['grids_removed']} removed; residents keeping their grid "
            f"{grids['residents_keeping_grid_share']:.0%}; grids within tolerance "
            f"{share['a']:.0%} → {share['b']:.0%}")
    swatches = "".join(
        f"<tr><td><span class='cov-swatch' style='background:{color}'></span></td>"
        f"<td>{status} in B</td></tr>" for status, color in STYLE["status_fill"].items())
    return (f"<div id='comparison-summary'>{'<br>'.join(html.escape(x) for x in lines)}"
            f"<table>{swatches}<tr><td><span class='cov-swatch' style='border:2px dashed "
            f"{STYLE['a_line']}'></span></td><td>boundary in A</td></tr></table></div>")


def _short(label: str) -> str:
    """A plan's folder name for titles (labels of in-memory plans are 'A' and 'B')."""
    return Path(label).name or label


def compare_map(comparison: PlanComparison, *, m: folium.Map | None = None) -> folium.Map:
    """
    What changed from plan A to plan B: B's communities by status (changed / added / unchanged),
    A's boundaries dashed, residents who change community (coloured by their B community),
    newly covered and newly uncovered residents, centers new / closed / moved / kept, a
    title and a summary panel.
    """
    fmap = base_map(comparison.units, m=m)
    s = comparison.summary
    titled_map(fmap, f"What changes: {_short(s['plan_b'])} against {_short(s['plan_a'])}",
            fresh=m is None)
    b_frame = _boundaries(comparison.b, comparison.communities, "b")
    fill = STYLE["status_fill"]
    folium.GeoJson(
        geojson_layer(b_frame, simplify_m=5.0), name="plan B communities (by change)",
        style_function=lambda f: {"color": STYLE["b_line"], "weight": 2, "fillOpacity": 0.35,
                                  "fillColor": fill.get(f["properties"]["status"], "#cccccc")},
        tooltip=folium.GeoJsonTooltip(
            fields=["community_id", "status", "match_in_A", "population", "residents"],
            aliases=["community (B)", "status", "continues A's", "residents", "residents from A"]),
    ).add_to(fmap)
    a_frame = _boundaries(comparison.a, comparison.communities, "a")
    folium.GeoJson(
        geojson_layer(a_frame, simplify_m=5.0), name="plan A communities (dashed)",
        style_function=lambda _f: {"color": STYLE["a_line"], "weight": 1.5, "dashArray": "6 4",
                                   "fillOpacity": 0},
        tooltip=folium.GeoJsonTooltip(
            fields=["community_id", "status", "match_in_B", "population", "residents"],
            aliases=["community (A)", "status", "continues as", "residents", "residents to B"]),
    ).add_to(fmap)
    units = comparison.units
    _add_residents(fmap, units, column="moved", name="residents changing community", color=None)
    _add_residents(fmap, units, column="newly_covered", name="newly covered",
                   color=STYLE["covered"])
    _add_residents(fmap, units, column="newly_uncovered", name="newly uncovered",
                   color=STYLE["uncovered"])
    _add_centers(fmap, comparison)
    MapPanel(_summary_panel(s), position="bottomright").add_to(fmap)
    return finish_map(fmap)   # one layer control, last, listing every layer
