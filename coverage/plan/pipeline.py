"""
Communities of about `target_pop` residents, each with a service center every member reaches
within `max_minutes` on foot: the geo wrapper around the array core in `covplan.solve.partition`.

network + population (+ existing communities, centers, districts)
  -> finer units -> reach matrix -> unit pieces and adjacency -> per-district partition
  -> communities, centers, units, isochrones, changes and a report, in the population's CRS.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import scipy.sparse as sp
from covplan import __version__
from covplan._parallel import Beside, run_tasks, shared
from covplan._sparse import lookup
from covplan.config import PlanConfig
from covplan.errors import InfeasibleError, InputError
from covplan.inputs.areas import label_units
from covplan.inputs.tessellation import (
    dissolve_pieces,
    piece_adjacency,
    unit_districts,
    unit_pieces,
)
from covplan.metrics import around_note, community_table, plan_report, tiny_note
from covplan.plan import regions
from covplan.reach.ahead import IsochronesAhead, columns_told, drawing_ahead, isochrones_with
from covplan.reach.matrix import ReachMatrix, compute_reach
from covplan.solve.bounds import FeasibilityBound, around_plan, feasibility_bound, rule_shortfalls
from covplan.solve.neighbourhood import TinyCheck, check_tiny
from covplan.solve.partition.core import PartitionProblem, partition_all
from covplan.solve.partition.search import tiny_first_order
from scipy.sparse.csgraph import connected_components

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pyproj
    from covplan.inputs.network import WalkNetwork
    from covplan.inputs.population import Population
    from covplan.plan.grids import Grids

logger = logging.getLogger(__name__)

AHEAD_MAX_RESIDENTS = 2_000_000     # isochrones drawn ahead up to this size (`plan_communities`)


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """A complete plan, in the CRS of the population input (``work_crs`` was used inside)."""

    communities: gpd.GeoDataFrame   # one polygon per community with its figures and note
    centers: gpd.GeoDataFrame       # one point per community: center_id, community_id, existing
    units: gpd.GeoDataFrame         # every unit: pop, community_id, center_id, minutes
    isochrones: gpd.GeoDataFrame    # each center's max_minutes area
    changes: pd.DataFrame | None    # old -> new community, residents (merge/split mode)
    previous: gpd.GeoDataFrame | None  # the existing communities, for maps
    report: dict
    config: PlanConfig
    work_crs: pyproj.CRS
    version: str
    # Every existing center and new site: kept/closed/moved/new and why (`covplan.plan.decisions`).
    center_decisions: gpd.GeoDataFrame | None = None
    grids: Grids | None = None      # with PlanConfig.grids (`covplan.plan.grids.plan_grids`)


@dataclass(frozen=True, slots=True, eq=False)
class Prior:
    """Existing communities projected onto units and candidates."""

    ids: list[str]                  # old community ids, by index
    unit: np.ndarray                # old community index per unit (-1 none)
    candidate: np.ndarray           # old community an existing center serves (-1 none)
    issues: list[str]               # reported repairs (overlaps, gaps, centers outside)


def plan_communities(network: WalkNetwork, population: Population | gpd.GeoDataFrame, *,
                     communities: gpd.GeoDataFrame | None = None,
                     centers: gpd.GeoDataFrame | None = None,
                     districts: gpd.GeoDataFrame | None = None,
                     config: PlanConfig | None = None,
                     progress: bool = False,
                     population_column: str | None = None,
                     lock_centers: Sequence[str] | str | None = None) -> Plan:
    """
    Merge, split or redraw communities to about ``config.target_pop`` residents each.

    Parameters
    ----------
    network
        The walking network (its speed is replaced by ``config.walk_speed_kmh``): a
        WalkNetwork, or an osmnx/networkx graph converted by `as_walk_network`.
    population
        Population cells/units in any CRS; the plan comes back in this CRS. A Population, or a
        GeoDataFrame of cells converted by `as_population`.
    communities
        Existing communities (polygons with ``community_id``): merge/split mode — communities
        that already meet every rule are kept, the rest are merged or split, existing centers
        are preferred and residents stay with their old community where the rules allow.
        None: redraw from scratch.
    centers
        Existing or candidate service-center sites (points with ``center_id``). With
        `communities`, a ``community_id`` column says which community each serves.
    districts
        Hard limits (polygons): no community crosses one.
    config
        Targets and parameters; see `PlanConfig`.
    progress
        Show progress bars over the network searches.
    population_column
        Column of counts when `population` is a GeoDataFrame; None detects it.
    lock_centers
        Existing centers that must stay open (``center_id`` values of `centers`, or "all"):
        the planner seeds a community on each and pulls residents who reach it there. One it
        cannot keep (no community around it meets the rules) is reported in the center
        decisions and the report's ``centers_locked_not_kept``, never silently closed.

    Returns
    -------
    Plan
        Communities, centers, units, isochrones, changes and a report, in the population's CRS.

    Raises
    ------
    InputError
        For unusable parameters, a population that misses the network, no candidate center,
        or an ambiguous population column.
    TypeError
        If `network` or `population` is of an unsupported type.
    """
    from covplan.inputs.network import as_walk_network
    from covplan.inputs.population import as_population

    network = as_walk_network(network)
    population = as_population(population, population_column=population_column)
    config = config or PlanConfig()
    started = time.perf_counter()
    ready = prepare_planning(network, population, centers=centers, communities=communities,
                             districts=districts, config=config, progress=progress,
                             shortfalls=False)
    network, reach, prior = ready.network, ready.reach, ready.prior
    # The count and packing proofs go only into the report: with a second process they are
    # proven beside the planning (the linear city's packing program, 3.6 s, took as long
    # before its plan could start).
    shortfalls = Beside(partial(rule_shortfalls, reach, ready.bound, district_of=ready.district_of,
                                candidate_district=ready.candidate_district,
                                adjacency=ready.adjacency,
                                max_pop=config.max_pop,
                                tiny_pop=config.tiny_pop),
                        fork=config.workers > 1)
    # The isochrones of the centers the planner will most likely keep are drawn beside its
    # last stages (`covplan.reach.ahead`): Chengdu's 132 took 1.0-1.6 s after the plan. Not
    # above AHEAD_MAX_RESIDENTS: there the drawing process, which keeps the pages of the
    # planning as they were when it forked, could hold gigabytes to save a second.
    small = float(reach.pop.sum()) <= AHEAD_MAX_RESIDENTS
    with drawing_ahead(network, reach.candidates, config.max_minutes,
                       workers=config.workers if small else 1) as ahead:
        try:
            locked = locked_candidates(reach.candidates, lock_centers)
            center_of, exception_centers, fixed = _solve(ready, config, locked=locked,
                                                         ahead=ahead)
            allowed = _new_site_budget(reach, center_of, config.max_new_centers)
            if allowed is not None:
                center_of, exception_centers, fixed = _solve(ready, config, locked=locked,
                                                             allowed=allowed, ahead=ahead)
            if config.new_center_cost > 0:
                center_of, exception_centers, fixed = _weigh_new_sites(
                    ready, config, locked, (center_of, exception_centers, fixed))
            ready = replace(ready, bound=replace(ready.bound, **shortfalls.result()))
        finally:
            shortfalls.close()
        center_of = _attach_exceptions(ready, center_of, exception_centers, config)

        labels, table = community_tables(ready, center_of, districts=districts, config=config)
        table = _keep_ids(table, labels, prior, reach.units["pop"].to_numpy())

        def isochrones_of(centers_out: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
            drawn = ahead.drawn() if ahead is not None else {}
            iso = isochrones_with(drawn, network, centers_out, table["candidate_id"].to_numpy(),
                                  minutes=config.max_minutes, progress=progress)
            return iso.merge(centers_out[["center_id", "community_id"]], on="center_id")

        plan = assemble_plan(ready, center_of, labels, table, isochrones_of=isochrones_of,
                             communities=communities, config=config, fixed=fixed,
                             started=started, locked=locked)
    report = plan.report
    logger.info("Plan: %d communities, %.1f %% of residents within %g min of their center "
                "(at most %.1f %% possible), %.1f %% in communities within ±%g %% (at most %.1f %% "
                "possible), %d exception communities (%.1f s)", len(table),
                100 * report["coverage_share"], config.max_minutes, 100 * report["coverage_ceiling"],
                100 * report["within_tolerance_pop_share"], 100 * config.tolerance,
                100 * report["within_tolerance_pop_share_ceiling"], report["exception_communities"],
                report["runtime_s"])
    return with_grids(plan, network)


def with_grids(plan: Plan, network: WalkNetwork,
               previous: gpd.GeoDataFrame | None = None) -> Plan:
    """The plan with its grids when ``config.grids`` asks for them (`previous`: an earlier
    plan's grids, whose ids carry over), else as it is."""
    config = plan.config
    if not config.grids:
        return plan
    from covplan.plan.grids import plan_grids

    grids = plan_grids(plan, network, target_pop=config.grid_target,
                       tolerance=config.grid_tolerance, max_minutes=config.grid_minutes,
                       household_size=config.household_size, previous_grids=previous,
                       seed=config.seed)
    plan.report["grids"] = grids.report
    return replace(plan, grids=grids)


def assemble_plan(ready: PlanningInputs, center_of: np.ndarray, labels: np.ndarray,
                  table: gpd.GeoDataFrame, *,
                  isochrones_of: Callable[[gpd.GeoDataFrame], gpd.GeoDataFrame],
                  communities: gpd.GeoDataFrame | None, config: PlanConfig, fixed: int,
                  started: float, order: np.ndarray | None = None,
                  locked: np.ndarray | None = None) -> Plan:
    """
    The last step of every plan, full or incremental: units, centers, isochrones, changes and
    the report from a solved assignment, returned in the population's CRS.

    Parameters
    ----------
    ready
        The planning inputs the assignment was solved on.
    center_of, labels, table
        Candidate per unit, community per unit and the community table (`community_tables`).
    isochrones_of
        Each center's isochrone from the centers frame (a full plan computes them, a re-plan
        reuses the base plan's where nothing changed).
    communities
        The existing communities (the plan's ``previous``), or None.
    config, fixed, started
        The parameters, how many communities were kept whole, and the plan's start time
        (``time.perf_counter``) for its runtime.
    order
        Row order of the community and center tables (default: as solved).
    locked
        Bool per candidate: centers locked open (`locked_candidates`), or None.

    Returns
    -------
    Plan
    """
    reach, prior = ready.reach, ready.prior
    # The proofs' linear programs run in a thread beside the frames and isochrones when the
    # plan may use two processes (HiGHS lets go of the GIL; no process forks meanwhile): on
    # Chengdu's merge/split this step took 2.8 s, 2.0 s of them the programs after 0.7 s of
    # isochrones, and now 2.5 s. The thread reads arrays taken from the table here.
    regular = (table["exception"] == "").to_numpy()
    proof_args = (ready, labels, regular & ~table["within_tolerance"].to_numpy(bool), regular,
                  table["population"].to_numpy(), table["candidate_id"].to_numpy(),
                  reach.units["pop"].to_numpy(), config)
    with ThreadPoolExecutor(1) as beside:
        proving = beside.submit(_proofs, *proof_args) if config.workers > 1 else None
        units_out = _units_frame(reach.units, labels, center_of, reach, table, ready.bound)
        centers_out = _centers_frame(reach, table)
        # A site an earlier plan opened ('new-…', fed back as a center site) is no existing center.
        centers_out["existing"] = centers_out["existing"] & ~centers_out["center_id"].str.startswith("new-")
        isochrones = isochrones_of(centers_out)
        changes = _changes_frame(units_out, prior) if prior else None
        bound, checks = proving.result() if proving else _proofs(*proof_args)
    note = table.columns.get_loc("note")
    for _, comms, proven in bound.around_regions:
        for k in comms:
            table.iat[k, note] = around_note(table.iat[k, note], proven, len(comms))
    for k in sorted({c.label for c in checks}):
        table.iat[k, note] = tiny_note(table.iat[k, note], [c for c in checks if c.label == k],
                                       tiny_pop=config.tiny_pop)
    report = plan_report(units_out, table, config=config, reach=reach, bound=bound,
                         district_of=ready.district_of, district_ids=ready.district_ids,
                         prior_unit=prior.unit if prior else None, changes=changes,
                         fixed=fixed, issues=ready.issues, runtime_s=time.perf_counter() - started)
    report["tiny_communities_locked"] = len({c.label for c in checks if np.isinf(c.cost)})
    report["warnings"] = input_warnings(ready, config)
    report["grids"] = None                      # the grids' figures, when planned (`with_grids`)
    crs = ready.population.crs
    from covplan.plan.decisions import center_decisions, decision_counts

    decisions = center_decisions(reach, prior, table, labels, crs=crs, locked=locked)
    report.update(decision_counts(decisions))
    order = np.arange(len(table)) if order is None else order
    return Plan(communities=table.iloc[order].reset_index(drop=True).to_crs(crs),
                centers=centers_out.iloc[order].reset_index(drop=True).to_crs(crs),
                units=units_out.to_crs(crs), isochrones=isochrones.to_crs(crs), changes=changes,
                previous=None if communities is None else communities.to_crs(crs),
                report=report, config=config, work_crs=ready.work_crs, version=__version__,
                center_decisions=decisions)


def _proofs(ready: PlanningInputs, labels: np.ndarray, missed: np.ndarray, regular: np.ndarray,
            population: np.ndarray, candidate_id: np.ndarray, unit_pop: np.ndarray,
            config: PlanConfig) -> tuple[FeasibilityBound, list[TinyCheck]]:
    """What no plan could have done where this one missed the band (`around_plan`), and the
    neighbourhood proofs of its regular communities below the tiny floor
    (`covplan.solve.neighbourhood`): the rule they break, and what clearing them would take."""
    band = {"min_pop": config.min_pop, "max_pop": config.max_pop, "tiny_pop": config.tiny_pop}
    bound = around_plan(ready.bound, labels, missed, ready.adjacency, **band)
    tiny = np.flatnonzero(regular & (population < config.tiny_pop))
    if not len(tiny) or ready.adjacency is None:
        return bound, []
    return bound, check_tiny(labels, candidate_id, tiny, regular, ready.reach.minutes, unit_pop,
                             ready.adjacency, ready.bound.forced_undersized, **band)


@dataclass(frozen=True, slots=True, eq=False)
class PlanningInputs:
    """What the planner works on, built once from the inputs (see `prepare_planning`)."""

    network: WalkNetwork            # at the configured walking speed
    population: Population          # cells split onto nodes where above max_unit_pop
    reach: ReachMatrix              # units x candidates minutes
    pieces: gpd.GeoSeries           # each unit's piece of its cell, for dissolving
    adjacency: sp.csr_matrix        # units sharing a piece edge
    district_of: np.ndarray         # district index per unit (0 without districts)
    district_report: dict           # cells cut by district limits, units outside every district
    candidate_district: np.ndarray  # district index per candidate
    prior: Prior | None            # existing communities on units and candidates
    bound: FeasibilityBound         # what no plan can beat (forced-undersized units, ceilings)
    district_ids: list[str] | None  # district id per district index (None without districts)
    work_crs: pyproj.CRS

    @property
    def issues(self) -> list[str]:
        """Reported repairs: overlapping or gapped existing communities, cells cut by districts."""
        return (self.prior.issues if self.prior else []) + _district_issues(self.district_report)


def prepare_planning(network: WalkNetwork, population: Population, *,
                     centers: gpd.GeoDataFrame | None = None,
                     communities: gpd.GeoDataFrame | None = None,
                     districts: gpd.GeoDataFrame | None = None, config: PlanConfig,
                     progress: bool = False, shortfalls: bool = True) -> PlanningInputs:
    """Finer units, the reach matrix, unit pieces and adjacency, districts and the prior: the
    shared first step of a full plan, an incremental re-plan and the planner benchmark. The
    bound's count and packing shortfalls are left out unless `shortfalls`
    (`covplan.solve.bounds.rule_shortfalls` adds them)."""
    network = network.with_walk_speed(config.walk_speed_kmh)
    if config.max_unit_pop is not None and int(population.cells["pop"].max()) > config.max_unit_pop:
        population = population.disaggregate(onto="nodes", network=network,
                                             max_unit_pop=config.max_unit_pop)
    reach = compute_reach(network, population, centers=centers, max_minutes=config.max_minutes,
                          candidate_spacing_m=config.candidate_spacing_m, progress=progress)
    work = network.crs
    units = reach.units
    pieces = unit_pieces(units, population.cells.to_crs(work))
    adjacency = piece_adjacency(pieces)
    district_of, district_report = _districts(units, population, districts, work)
    candidate_district = _candidate_districts(reach.candidates, districts, work)
    bound = feasibility_bound(reach, min_pop=config.min_pop, district_of=district_of,
                              candidate_district=candidate_district, component=network.component,
                              adjacency=adjacency,
                              max_pop=config.max_pop if shortfalls else None,
                              tiny_pop=config.tiny_pop)
    _check_band_reachable(bound, config)
    return PlanningInputs(
        network=network, population=population, reach=reach, pieces=pieces,
        adjacency=adjacency, district_of=district_of,
        district_report=district_report, candidate_district=candidate_district,
        prior=_prior(units, reach.candidates, centers, communities, work), bound=bound,
        district_ids=None if districts is None else districts["district_id"].astype(str).tolist(),
        work_crs=work)


def _check_band_reachable(bound: FeasibilityBound, config: PlanConfig) -> None:
    """Stop when not one community can reach the band's floor anywhere: nothing to plan."""
    if not bound.reachable.any() or bound.best_gather.max() >= config.min_pop:
        return
    msg = (f"no community can reach {config.min_pop:,.0f} residents (target "
           f"{config.target_pop:,.0f} - {100 * config.tolerance:g} %): the most any site gathers "
           f"within {config.max_minutes:g} min is {int(bound.best_gather.max()):,} of "
           f"{bound.population_total:,} residents; lower the target (--target) or widen the "
           "tolerance (--tolerance)")
    raise InfeasibleError(msg)


def _solve(ready: PlanningInputs, config: PlanConfig, *, locked: np.ndarray | None,
           allowed: np.ndarray | None = None,
           ahead: IsochronesAhead | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Exception communities, then each district (in a large city without districts, each
    region, its seams repaired after) around its kept communities, side by side on
    ``config.jobs`` processes, on the candidates `allowed` (None: all). Returns (center_of,
    exception centers, kept count); the same for any number of jobs. `ahead` is told the
    exception centers and each district's likely centers."""
    reach, prior = ready.reach, ready.prior
    fixed = _keep_valid(reach, ready.adjacency, prior, ready.district_of, config)
    center_of, exception_centers = _plan_exceptions(ready, config, allowed=allowed)
    if ahead is not None:
        ahead.draw(exception_centers)
    open_to_all = ~np.isin(np.arange(len(reach.candidates)), exception_centers)
    if allowed is not None:
        open_to_all &= allowed
    parts = regions.plan_regions(ready, config, fixed)
    district_of, candidate_district = parts or (ready.district_of, ready.candidate_district)
    # Each kept community lies in one part (its first unit's): found once, not per part.
    first_unit = {}
    if fixed:
        first_unit = dict(zip(*(a.tolist() for a in np.unique(prior.unit, return_index=True))))
    groups = np.unique(district_of)
    tasks = [(district_of == group, (candidate_district == group) & open_to_all,
              {old: c for old, c in fixed.items() if district_of[first_unit[old]] == group})
             for group in groups]
    # A part alone on the machine may use the idle processes itself (`_plan_district`).
    data = {"reach": reach, "adjacency": ready.adjacency, "prior": prior, "config": config,
            "locked": locked, "center_of": center_of, "ahead": ahead,
            "jobs": max(1, config.workers // len(groups))}
    started = time.perf_counter()
    done = run_tasks(_district_task, tasks, jobs=config.workers, data=data,
                     sizes=[float(reach.pop[part].sum()) for part, _, _ in tasks])
    for group, (values, freed) in zip(groups, done):
        center_of[district_of == group] = values
        for old in freed:
            del fixed[old]
    logger.info("Planned %d %s in %.1f s on up to %d process(es)", len(groups),
                "districts" if parts is None else "regions", time.perf_counter() - started,
                config.workers)
    if parts is not None:
        frozen = np.zeros(len(reach.candidates), dtype=bool)
        frozen[np.r_[exception_centers, list(fixed.values())].astype("int64")] = True
        center_of = regions.repair_seams(ready, config, center_of, district_of, frozen=frozen,
                                         open_to_all=open_to_all, locked=locked)
    return center_of, exception_centers, len(fixed)


def _district_task(task: tuple[np.ndarray, np.ndarray, dict[int, int]]) -> tuple[np.ndarray, list[int]]:
    """One part's plan (`_plan_district` on its regular units), run by `run_tasks`: the
    new centers of the part's units (its kept communities lie inside it) and the kept
    communities it gave up."""
    part, candidate_in, kept = task
    s = shared()
    before = s["center_of"]
    out, freed = _plan_district(s["reach"], s["adjacency"], s["prior"], part & (before < 0),
                                candidate_in, kept, before, s["config"], locked=s["locked"],
                                jobs=s["jobs"], ahead=s["ahead"])
    return out[part], freed


_COST_PASSES = 3     # budgets tried against new_center_cost: half the sites, a quarter, none


def _weigh_new_sites(ready: PlanningInputs, config: PlanConfig, locked: np.ndarray | None,
                     solved: tuple[np.ndarray, np.ndarray, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """
    With ``new_center_cost`` (residents a new site must be worth), the plan among budgets of
    all, half, a quarter and none of its new sites that leaves the fewest residents outside
    balanced communities plus the cost of its new sites; ties keep more sites.
    """
    reach = ready.reach
    existing = reach.candidates["existing"].to_numpy(dtype=bool)

    def price(center_of: np.ndarray) -> tuple[float, int]:
        new = _new_sites(center_of, existing)
        return (_unbalanced(center_of, reach.units["pop"].to_numpy(), config)
                + config.new_center_cost * len(new), -len(new))

    best, best_price = solved, price(solved[0])
    wanted = len(_new_sites(solved[0], existing))
    budgets = sorted({wanted // 2 ** k for k in range(1, _COST_PASSES)} | {0}, reverse=True)
    for budget in budgets:
        if budget >= wanted:
            continue
        allowed = _new_site_budget(reach, solved[0], budget)
        trial = _solve(ready, config, locked=locked, allowed=allowed)
        got = price(trial[0])
        logger.info("%d new sites at most: %.0f residents outside balanced communities + "
                    "%g x %d new sites", budget, got[0] - config.new_center_cost * -got[1],
                    config.new_center_cost, -got[1])
        if got < best_price:
            best, best_price = trial, got
    return best


def _new_sites(center_of: np.ndarray, existing: np.ndarray) -> np.ndarray:
    served = center_of >= 0
    return np.unique(center_of[served][~existing[center_of[served]]])


def _unbalanced(center_of: np.ndarray, pop: np.ndarray, config: PlanConfig) -> float:
    """Residents outside communities within the band, the unserved included."""
    served = center_of >= 0
    _, inverse = np.unique(center_of[served], return_inverse=True)
    sizes = np.bincount(inverse, weights=pop[served].astype("float64"))
    balanced = sizes[(sizes >= config.min_pop) & (sizes <= config.max_pop)].sum()
    return float(pop.sum() - balanced)


def _new_site_budget(reach: ReachMatrix, center_of: np.ndarray,
                     budget: int | None) -> np.ndarray | None:
    """
    With a budget of new sites (``max_new_centers``) that a plan exceeds, the candidates a
    second pass may use: every existing center and the new sites the first pass found most
    needed — those serving the most residents that no existing center reaches, then the most
    residents. None when the plan keeps within the budget (or there is none).
    """
    if budget is None:
        return None
    existing = reach.candidates["existing"].to_numpy(dtype=bool)
    served = center_of >= 0
    new_sites = _new_sites(center_of, existing)
    if len(new_sites) <= budget:
        return None
    pop = reach.units["pop"].to_numpy(dtype="float64")
    minutes = reach.minutes.tocsr()
    by_existing = np.asarray(minutes[:, np.flatnonzero(existing)].getnnz(axis=1)) > 0
    only_new = np.bincount(center_of[served], weights=pop[served] * ~by_existing[served],
                           minlength=len(existing))
    residents = np.bincount(center_of[served], weights=pop[served], minlength=len(existing))
    order = np.lexsort((new_sites, -residents[new_sites], -only_new[new_sites]))
    keep = new_sites[order[:budget]]
    logger.info("The plan opened %d new sites, more than a budget of %d: planning again with "
                "the existing centers and the %d most needed new sites", len(new_sites),
                budget, len(keep))
    allowed = existing.copy()
    allowed[keep] = True
    return allowed


def _plan_exceptions(ready: PlanningInputs, config: PlanConfig, *,
                     allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """
    Plan the forced-undersized residents apart, district by district: whatever community they
    join is undersized (see `covplan.solve.bounds`), so they form as few communities of their own as
    their walks allow and no one else is pulled into them. Returns `center_of` with only those
    units set, and the candidates they use.
    """
    reach, bound = ready.reach, ready.bound
    center_of = np.full(len(reach.units), -1, dtype="int64")
    forced = bound.forced_undersized
    for group in np.unique(ready.district_of[forced]):
        rows = np.flatnonzero(forced & (ready.district_of == group))
        cols = np.flatnonzero((ready.candidate_district == group)
                              & (True if allowed is None else allowed))
        center_of[rows] = partition_group(reach, ready.adjacency, None, rows, cols, config,
                                          exceptions_only=True)
        center_of = _split_detached(reach, ready.adjacency, rows, cols, center_of)
    used = np.unique(center_of[center_of >= 0])
    if len(used):
        logger.info("%d exception communities for %d forced-undersized residents",
                    len(used), bound.forced_undersized_population)
    return center_of, used


def _split_detached(reach: ReachMatrix, adjacency: sp.csr_matrix, rows: np.ndarray,
                    cols: np.ndarray, center_of: np.ndarray) -> np.ndarray:
    """
    Exception communities must be contiguous too, but pockets far apart may share the one
    site that reaches both: every detached piece (all but the most populous) gets a free site
    of `cols` that reaches all of it, the shortest person-minutes first. A piece no free site
    reaches stays where it is (its community's note then says it is not contiguous).
    """
    center_of = center_of.copy()
    pop = reach.pop.astype("float64")
    label = center_of[rows]
    coo = adjacency[rows][:, rows].tocoo()
    same = label[coo.row] == label[coo.col]            # pieces of each community on its own
    _, piece = connected_components(sp.csr_matrix((np.ones(int(same.sum())), (coo.row[same], coo.col[same])),
                                                  shape=(len(rows), len(rows))), directed=False)
    used = set(center_of[rows][center_of[rows] >= 0].tolist())
    minutes = reach.minutes[rows][:, cols].tocsc()
    for c in sorted(used):
        mine = center_of[rows] == c
        pieces = np.unique(piece[mine])
        if len(pieces) < 2:
            continue
        weight = [pop[rows[mine & (piece == q)]].sum() for q in pieces]
        for q in pieces[np.lexsort((pieces, -np.asarray(weight)))][1:]:
            members = np.flatnonzero(mine & (piece == q))
            sub = minutes[members]
            reaches_all = np.diff(sub.tocsc().indptr) == len(members)
            cost = np.asarray(sub.multiply(pop[rows[members]][:, None]).sum(axis=0)).ravel()
            free = reaches_all & ~np.isin(cols, list(used))
            if free.any():
                best = int(np.flatnonzero(free)[np.argmin(cost[free])])
                center_of[rows[members]] = cols[best]
                used.add(int(cols[best]))
    return center_of


def _attach_exceptions(ready: PlanningInputs, center_of: np.ndarray, exception_centers: np.ndarray,
                       config: PlanConfig) -> np.ndarray:
    """With ``exceptions="attach"``, each exception community joins the regular community of its
    district that borders it along most unit edges (else the nearest center): its residents are
    served remotely, beyond the walking limit unless that center happens to reach them."""
    if config.exceptions != "attach" or not len(exception_centers):
        return center_of
    center_of = center_of.copy()
    exception = np.isin(center_of, exception_centers)
    regular = (center_of >= 0) & ~exception
    coo = ready.adjacency.tocoo()
    xy = np.column_stack([ready.reach.units.geometry.x, ready.reach.units.geometry.y])
    cand = ready.reach.candidates.geometry
    for c in exception_centers:
        members = np.flatnonzero(center_of == c)
        same = regular & (ready.district_of == ready.district_of[members[0]])
        if not same.any():
            continue
        edge = np.isin(coo.row, members) & same[coo.col]
        if edge.any():
            hosts, counts = np.unique(center_of[coo.col[edge]], return_counts=True)
            host = int(hosts[np.lexsort((hosts, -counts))[0]])
        else:
            hosts = np.unique(center_of[same])
            centre = np.average(xy[members], axis=0, weights=ready.reach.pop[members] + 1e-9)
            d = np.hypot(cand.x.to_numpy()[hosts] - centre[0], cand.y.to_numpy()[hosts] - centre[1])
            host = int(hosts[np.lexsort((hosts, d))[0]])
        center_of[members] = host
    return center_of


def community_tables(ready: PlanningInputs, center_of: np.ndarray, *,
                     districts: gpd.GeoDataFrame | None,
                     config: PlanConfig) -> tuple[np.ndarray, gpd.GeoDataFrame]:
    """Each unit's community label and the community table (dissolved polygons and figures,
    working CRS) of an assignment of units to centers: a full plan's and a re-plan's last step."""
    reach, prior = ready.reach, ready.prior
    labels, _ = _labels(center_of, reach.candidates)
    dissolved = dissolve_pieces(ready.pieces, labels, crs=ready.work_crs)
    table = community_table(reach.units, labels, center_of, reach, dissolved, ready.district_of,
                            districts, bound=ready.bound, prior_ids=prior.ids if prior else None,
                            prior_unit=prior.unit if prior else None, config=config,
                            adjacency=ready.adjacency)
    return labels, table


def _districts(units, population, districts, work) -> tuple[np.ndarray, dict]:
    if districts is None:
        return np.zeros(len(units), dtype="int64"), {}
    district_of, report = unit_districts(units, districts.to_crs(work), population.cells.to_crs(work))
    return district_of, report


def _district_issues(report: dict) -> list[str]:
    issues = []
    if report.get("cells_cut"):
        issues.append(f"{report['cells_cut']} populated cell(s) are cut by a district limit; "
                      "their units were sent to the district their point lies in")
    if report.get("units_outside"):
        issues.append(f"{report['units_outside']} unit(s) with {report['population_outside']} "
                      "residents lie outside every district and were planned on their own")
    return issues


def _candidate_districts(candidates, districts, work) -> np.ndarray:
    if districts is None:
        return np.zeros(len(candidates), dtype="int64")
    return label_units(candidates, districts.to_crs(work))


def _prior(units, candidates, centers, communities, work) -> Prior | None:
    if communities is None:
        return None
    comm = communities.to_crs(work).reset_index(drop=True)
    ids = comm["community_id"].astype(str).tolist()
    issues: list[str] = []
    # Overlaps are reported from interiors only: a unit on a shared border is not an overlap.
    in_unit = comm.sindex.query(units.geometry.values, predicate="within")[0]
    overlapping = int((np.bincount(in_unit, minlength=len(units)) > 1).sum())
    if overlapping:
        issues.append(f"existing communities overlap: {overlapping} unit(s) lie in more than one; "
                      "each was given to the lowest-listed community")
    unit_prior = label_units(units, comm)
    gaps = unit_prior < 0
    if gaps.any():
        issues.append(f"existing communities leave gaps: {int(gaps.sum())} unit(s) with "
                      f"{int(units.loc[gaps, 'pop'].sum())} residents lie in none; they are planned as new")
    cand_prior = np.full(len(candidates), -1, dtype="int64")
    existing = candidates["existing"].to_numpy()
    if existing.any():
        index_of = {cid: i for i, cid in enumerate(ids)}
        served = None
        if centers is not None and "community_id" in centers.columns:
            lookup_ = dict(zip(centers["center_id"].astype(str), centers["community_id"].astype(str)))
            served = candidates["center_id"].map(lookup_)
        inside = label_units(candidates, comm)
        for i in np.flatnonzero(existing):
            named = served.iloc[i] if served is not None else None
            if named is not None and pd.notna(named) and named in index_of:
                cand_prior[i] = index_of[named]
                # On its own community's border is not outside it, whichever side the tie takes.
                own = comm.geometry.iloc[cand_prior[i]].covers(candidates.geometry.iloc[i])
                if inside[i] >= 0 and not own:
                    issues.append(f"center {candidates['center_id'].iloc[i]} stands outside its "
                                  f"community {named}")
            elif inside[i] >= 0:
                cand_prior[i] = int(inside[i])
    return Prior(ids=ids, unit=unit_prior, candidate=cand_prior, issues=issues)


def input_warnings(ready: PlanningInputs, config: PlanConfig) -> list[str]:
    """Implausible but usable inputs, one line each: the population loader's (densities,
    overlapping cells) and the plan's own (a target above the whole population)."""
    found = list(ready.population.warnings)
    total = int(ready.reach.pop.sum())
    if config.target_pop > total:
        found.append(f"the target of {config.target_pop:,.0f} residents per community is above "
                     f"the whole population ({total:,}): at most one community, undersized; "
                     "lower --target / PlanConfig.target_pop")
    for message in found[len(ready.population.warnings):]:
        logger.warning("%s", message)
    return found


def locked_candidates(candidates: gpd.GeoDataFrame,
                      lock_centers: Sequence[str] | str | None) -> np.ndarray | None:
    """Bool per candidate: the existing centers named in `lock_centers` ("all": every one)."""
    if lock_centers is None or (not isinstance(lock_centers, str) and not len(lock_centers)):
        return None
    existing = candidates["existing"].to_numpy(dtype=bool)
    ids = candidates["center_id"].fillna("").astype(str).to_numpy()
    if not existing.any():
        msg = ("--lock-centers / lock_centers names centers to keep open, but no existing centers "
               "were given; pass them with --centers / centers=.")
        raise InputError(msg)
    if isinstance(lock_centers, str) and lock_centers.strip().lower() == "all":
        return existing.copy()
    wanted = ([part.strip() for part in lock_centers.split(",") if part.strip()]
              if isinstance(lock_centers, str) else [str(c) for c in lock_centers])
    unknown = sorted(set(wanted) - set(ids[existing]))
    if unknown:
        known = sorted(set(ids[existing]))
        msg = (f"--lock-centers / lock_centers names {len(unknown)} center id(s) not among the "
               f"existing centers: {', '.join(unknown[:10])}; the centers' center_id values are "
               f"{', '.join(known[:10])}{' …' if len(known) > 10 else ''} (or pass 'all').")
        raise InputError(msg)
    return existing & np.isin(ids, wanted)


def _keep_valid(reach: ReachMatrix, adjacency: sp.csr_matrix, prior: Prior | None,
                district_of: np.ndarray, config: PlanConfig) -> dict[int, int]:
    """Existing communities that already meet every rule, and the existing center serving each."""
    if prior is None:
        return {}
    kept: dict[int, int] = {}
    pop = reach.units["pop"].to_numpy()
    for old in range(len(prior.ids)):
        members = np.flatnonzero(prior.unit == old)
        total = pop[members].sum()
        if len(members) == 0 or not config.min_pop <= total <= config.max_pop:
            continue
        if len(np.unique(district_of[members])) > 1:
            continue
        for candidate in np.flatnonzero(prior.candidate == old):
            if lookup(reach.minutes, members, np.full(len(members), candidate))[1].all():
                n_parts, _ = connected_components(adjacency[members][:, members], directed=False)
                if n_parts == 1 and candidate not in kept.values():
                    kept[old] = int(candidate)
                break
    logger.info("Keeping %d existing communities that already meet every rule", len(kept))
    return kept


def _plan_district(reach: ReachMatrix, adjacency: sp.csr_matrix, prior: Prior | None,
                   in_district: np.ndarray, candidate_in: np.ndarray, kept: dict[int, int],
                   center_of: np.ndarray, config: PlanConfig, *,
                   locked: np.ndarray | None = None, jobs: int = 1,
                   ahead: IsochronesAhead | None = None) -> tuple[np.ndarray, list[int]]:
    """
    Plan one district around its kept communities; returns the new `center_of` and the kept
    communities given up. Keeping a community that meets every rule can leave its neighbours
    no way to balance (the rest may have no split into communities within the band), so the
    district is also planned with them free, still preferring residents' old communities
    through the stability cost, and the plan with fewer communities outside the band wins. The
    two are alternatives (`partition_groups`, on up to `jobs` processes): the free plan's runs
    are skipped where one of the kept plan's leaves nobody outside the band, and where one
    plan's runs clearly trail the other's, only the other is improved and kept.
    """
    pop = reach.units["pop"].to_numpy()
    with_kept = center_of.copy()
    for old, candidate in kept.items():
        with_kept[prior.unit == old] = candidate
    rows = np.flatnonzero(in_district & (with_kept < 0))
    cols = np.flatnonzero(candidate_in & ~np.isin(np.arange(len(candidate_in)), list(kept.values())))
    if not len(rows):           # every unit in a kept community (or an exception)
        return with_kept, []
    if not kept:
        with_kept[rows] = partition_group(reach, adjacency, prior, rows, cols, config,
                                          locked=locked, jobs=jobs, ahead=ahead)
        return with_kept, []
    logger.debug("Planning the district with and without its %d kept communities", len(kept))
    free_rows = np.flatnonzero(in_district)
    made = partition_groups(reach, adjacency, prior,
                            [(rows, cols), (free_rows, np.flatnonzero(candidate_in))], config,
                            locked=locked, jobs=jobs, alternatives=(0, 1), ahead=ahead)
    free = None
    if made[1] is not None:
        free = center_of.copy()
        free[free_rows] = made[1]
    if made[0] is not None:
        with_kept[rows] = made[0]
        if free is None:
            return with_kept, []
        # Tiny communities first (the min_pop_exception rule), then the band's order.
        band_key = regions.assignment_band_key(with_kept[in_district], pop[in_district], config)
        free_key = regions.assignment_band_key(free[in_district], pop[in_district], config)
        if band_key[0] == 0 or tiny_first_order(free_key) >= tiny_first_order(band_key):
            return with_kept, []
    logger.info("Giving up %d kept communities so that their neighbours can balance", len(kept))
    return free, list(kept)


def partition_group(reach: ReachMatrix, adjacency: sp.csr_matrix, prior: Prior | None,
                     rows: np.ndarray, cols: np.ndarray, config: PlanConfig, *,
                     exceptions_only: bool = False, locked: np.ndarray | None = None,
                     jobs: int = 1, ahead: IsochronesAhead | None = None) -> np.ndarray:
    """The units `rows` partitioned on the candidates `cols` (`partition_units`): each row's
    candidate, -1 where it reaches none. `ahead` is told its likely centers."""
    return partition_groups(reach, adjacency, prior, [(rows, cols)], config,
                            exceptions_only=exceptions_only, locked=locked, jobs=jobs,
                            ahead=ahead)[0]


def partition_groups(reach: ReachMatrix, adjacency: sp.csr_matrix, prior: Prior | None,
                     groups: list[tuple[np.ndarray, np.ndarray]], config: PlanConfig, *,
                     exceptions_only: bool = False, locked: np.ndarray | None = None,
                     jobs: int = 1, alternatives: tuple[int, int] | None = None,
                     ahead: IsochronesAhead | None = None) -> list[np.ndarray | None]:
    """`partition_group` of each (rows, cols), side by side on one pool (`partition_all`; None
    for an alternative it dropped)."""
    problems = [replace(_problem_of(reach, adjacency, prior, rows, cols, config,
                                    exceptions_only=exceptions_only, locked=locked),
                        on_centers=columns_told(ahead, cols)) for rows, cols in groups]
    results = partition_all(problems, seed=config.seed, restarts=config.restarts,
                            tries=config.tries, jobs=jobs, alternatives=alternatives)
    return [None if result is None
            else np.where(result.center >= 0, cols[np.maximum(result.center, 0)], -1)
            for (_, cols), result in zip(groups, results)]


def _problem_of(reach: ReachMatrix, adjacency: sp.csr_matrix, prior: Prior | None,
                rows: np.ndarray, cols: np.ndarray, config: PlanConfig, *, exceptions_only: bool,
                locked: np.ndarray | None) -> PartitionProblem:
    minutes = reach.minutes[rows][:, cols].tocsr()
    minutes.sort_indices()
    pop = reach.units["pop"].to_numpy()[rows]
    xy = np.column_stack([reach.units.geometry.x.to_numpy()[rows], reach.units.geometry.y.to_numpy()[rows]])
    return PartitionProblem(
        minutes=minutes, pop=pop, adjacency=adjacency[rows][:, rows].tocsr(),
        target_pop=config.target_pop, tolerance=config.tolerance,
        existing=reach.candidates["existing"].to_numpy()[cols],
        unit_prior=None if prior is None else prior.unit[rows],
        candidate_prior=None if prior is None else prior.candidate[cols],
        stability_minutes=config.stability_minutes, xy=xy, tiny_share=config.min_pop_exception,
        exceptions_only=exceptions_only,
        locked=None if locked is None or not locked[cols].any() else locked[cols])


def _labels(center_of: np.ndarray, candidates) -> tuple[np.ndarray, list[str]]:
    """Community index per unit (-1 unserved), numbered by their centers' candidate order."""
    used = np.unique(center_of[center_of >= 0])
    labels = np.full(len(center_of), -1, dtype="int64")
    labels[center_of >= 0] = np.searchsorted(used, center_of[center_of >= 0])
    return labels, [str(candidates["center_id"].iloc[c]) for c in used]


def _keep_ids(table: gpd.GeoDataFrame, labels: np.ndarray, prior: Prior | None,
              pop: np.ndarray) -> gpd.GeoDataFrame:
    """
    Ids that follow the existing communities by the residents they share
    (`covplan.plan.ids.inherit_ids`): kept unchanged keeps its id, a merge takes the id of the
    old community giving it most residents, a split gives C012-a, C012-b, ..., the rest N01, ...
    Without existing communities (redraw) the ids stay N01, N02, ... by center.
    """
    if prior is None:
        return table
    from covplan.plan.ids import inherit_ids

    table = table.copy()
    table["community_id"] = inherit_ids(labels, prior.unit, pop, prior.ids, len(table))
    return table


def _units_frame(units, labels, center_of, reach, table, bound: FeasibilityBound) -> gpd.GeoDataFrame:
    out = units[["unit_id", "cell_id", "pop", "geometry"]].copy()
    ids = table["community_id"].to_numpy()
    out["community_id"] = np.where(labels >= 0, ids[np.maximum(labels, 0)], None)
    center_ids = table["center_id"].to_numpy()
    out["center_id"] = np.where(labels >= 0, center_ids[np.maximum(labels, 0)], None)
    served = np.flatnonzero(center_of >= 0)
    minutes = np.full(len(units), np.nan)
    minutes[served] = lookup(reach.minutes, served, center_of[served])[0]
    out["minutes"] = minutes
    out["off_network"] = units["off_network"].to_numpy()
    out["island"] = bound.island
    # Proven: every site this unit reaches gathers fewer than the band's floor (see bounds.py).
    out["forced_undersized"] = bound.forced_undersized
    out["served_remotely"] = (center_of >= 0) & ~np.isfinite(minutes)
    return out


def _centers_frame(reach, table) -> gpd.GeoDataFrame:
    cands = reach.candidates.set_index("candidate_id")
    rows = cands.loc[table["candidate_id"].to_numpy()]
    return gpd.GeoDataFrame({"center_id": table["center_id"].to_numpy(),
                             "community_id": table["community_id"].to_numpy(),
                             "existing": rows["existing"].to_numpy(),
                             "population": table["population"].to_numpy()},
                            geometry=rows.geometry.values, crs=reach.work_crs)


def _changes_frame(units_out, prior: Prior) -> pd.DataFrame:
    old = np.where(prior.unit >= 0, np.array(prior.ids + [""], dtype=object)[prior.unit], None)
    frame = pd.DataFrame({"old_community_id": old, "new_community_id": units_out["community_id"].to_numpy(),
                          "residents": units_out["pop"].to_numpy()})
    frame = frame.fillna("(none)")
    return (frame.groupby(["old_community_id", "new_community_id"], as_index=False)["residents"].sum()
            .sort_values(["old_community_id", "residents"], ascending=[True, False]).reset_index(drop=True))
