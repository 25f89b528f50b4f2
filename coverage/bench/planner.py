"""
`covplan bench plan`: our community planner side by side with spopt's Max-p regionalisation
and population-weighted k-means, every method's regions scored by one evaluator.

The evaluator (`evaluate_partition`) takes any labelling of population units — ours or a
peer's — sites the best center of each region with `covplan.solve.siting.choose_centers` and
computes the figures of our plan report. The peers (`covplan.bench.peers`) run in this process
on plain arrays of the instance (`peer_inputs`: coordinates, populations, adjacency edges).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import scipy.sparse as sp
from covplan._sparse import lookup
from covplan.bench import peers as bench_peers
from covplan.config import PlanConfig
from covplan.errors import InputError
from covplan.inputs.tessellation import dissolve_pieces, piece_adjacency
from covplan.metrics import coverage_figures, within_limit
from covplan.plan.pipeline import prepare_planning
from covplan.reach.matrix import ReachMatrix, compute_reach, node_times
from covplan.solve.siting import choose_centers, choose_community_centers
from scipy.sparse.csgraph import connected_components, dijkstra

if TYPE_CHECKING:
    from covplan.inputs.network import WalkNetwork
    from covplan.inputs.population import Population
    from covplan.plan.pipeline import Plan

logger = logging.getLogger(__name__)

# Reference figures from issue 4, measured elsewhere with an independent evaluator.
REFERENCE = {"spopt Max-p (floor 8,000)": {"coverage_share": 0.90, "within_tolerance_share": 0.89},
             "weighted k-means": {"coverage_share": 0.988, "within_tolerance_share": 0.35}}


# ---------------------------------------------------------------------------------------------
# The evaluator


@dataclass(frozen=True, slots=True)
class PartitionScore:
    """The figures of a plan report, for any labelling of units (see `evaluate_partition`)."""

    communities: int
    population_total: int
    population_assigned: int          # in a region that has a center
    coverage_share: float             # within the limit of own region's center / all residents
    coverage_share_of_reachable: float  # ... / residents who reach any candidate
    unreachable_population: int       # reach no candidate at all
    within_tolerance_share: float     # regions with target ± tolerance residents
    within_tolerance_pop_share: float  # residents in those regions / total population
    contiguous_share: float           # regions whose units are connected in the adjacency
    mean_minutes: float | None        # population-weighted, to own center (see `minutes_scope`)
    max_minutes: float | None
    population_min: int
    population_max: int
    shared_centers: int               # regions that found no distinct center
    crossing_districts: int           # regions spanning more than one district
    minutes_scope: str                # 'all assigned' (network given) or 'covered only'

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_partition(reach: ReachMatrix, labels: np.ndarray, *, adjacency: sp.spmatrix,
                       config: PlanConfig, district_of: np.ndarray | None = None,
                       network: WalkNetwork | None = None,
                       beyond_minutes: float = 60.0) -> PartitionScore:
    """
    Score any partition of the units of `reach` as our plan report does.

    Each region gets the candidate reaching most of its residents within the limit (ties: the
    shorter mean walk, with no preference for existing sites; each region its own center, see
    `covplan.solve.siting.choose_centers`), so a plan's own centers are re-sited too. Then
    coverage is `covplan.metrics.coverage_figures`' with each region's center as its residents'
    own: coverage_share = residents within the limit of their own region's center / all
    residents, coverage_share_of_reachable = the same / residents who reach any candidate;
    within_tolerance_share =
    regions with ``config.min_pop <= population <= config.max_pop`` (within_tolerance_pop_share:
    the residents of those regions / all residents, as the plan report counts them); contiguous_share = regions
    whose units form one connected piece of `adjacency`.

    Parameters
    ----------
    reach
        Units x candidates minutes; the candidates every method may site centers at.
    labels
        Region per unit (any integers; -1 = in no region).
    adjacency
        Units x units, symmetric (e.g. `piece_adjacency` of the unit pieces).
    config
        Target, tolerance and limit.
    district_of
        District per unit, to count regions that cross a district limit (None: not counted).
    network
        The walking network at ``reach.walk_speed_kmh``: minutes beyond the limit to one's own
        center are then measured (up to `beyond_minutes`; farther counts as inf) so mean and
        max cover every assigned resident. None: mean and max cover the covered residents only.

    Returns
    -------
    PartitionScore
    """
    pop = reach.pop.astype("int64")
    n = len(pop)
    labels = np.asarray(labels)
    if labels.shape != (n,):
        msg = f"`labels` must hold one region per unit ({n}), got shape {labels.shape}."
        raise InputError(msg)
    if adjacency.shape != (n, n):
        msg = f"`adjacency` must be {n} x {n}, got {adjacency.shape}."
        raise InputError(msg)
    _, dense = np.unique(np.where(labels >= 0, labels, -1), return_inverse=True)
    dense = dense.ravel() - (1 if (labels < 0).any() else 0)   # regions 0..K-1, -1 none
    existing = reach.candidates["existing"].to_numpy(dtype=bool)
    # No preference for existing sites here: the evaluator scores the best center, not a plan's.
    choice = choose_centers(reach.minutes, pop, dense, existing=existing, existing_bonus_minutes=0.0)
    k = len(choice.center)
    center_of = np.where(dense >= 0, choice.center[np.maximum(dense, 0)], -1)
    assigned = center_of >= 0
    served = np.flatnonzero(assigned)
    minutes = np.full(n, np.nan)
    minutes[served], within = lookup(reach.minutes, served, center_of[served])
    scope = "covered only"
    if network is not None:
        minutes[served] = _minutes_beyond(network, reach, served, center_of[served], minutes[served],
                                          within, beyond_minutes)
        scope = "all assigned"
    covered = within_limit(minutes, config.max_minutes)     # NaN (no region) is not covered
    coverage = coverage_figures(pop, minutes_own=minutes, reachable=reach.reachable,
                                max_minutes=config.max_minutes)
    total = coverage["population_total"]
    sizes = choice.population
    band = (sizes >= config.min_pop) & (sizes <= config.max_pop)
    counted = assigned if scope == "all assigned" else covered
    finite = counted & np.isfinite(minutes)
    mean = float(np.average(minutes[finite], weights=pop[finite])) if pop[finite].sum() else None
    worst = float(np.max(minutes[counted])) if counted.any() else None
    crossing = 0
    if district_of is not None:
        pairs = np.unique(np.column_stack([dense, np.asarray(district_of)])[dense >= 0], axis=0)
        crossing = int((np.bincount(pairs[:, 0], minlength=k) > 1).sum())
    return PartitionScore(
        communities=k, population_total=total, population_assigned=int(pop[assigned].sum()),
        coverage_share=coverage["coverage_share"],
        coverage_share_of_reachable=coverage["coverage_share_of_reachable"],
        unreachable_population=coverage["unreachable_population"],
        within_tolerance_share=float(((sizes >= config.min_pop) & (sizes <= config.max_pop)).mean()) if k else 0.0,
        within_tolerance_pop_share=float(sizes[band].sum() / total) if total else 0.0,
        contiguous_share=float(_contiguous(adjacency, dense, k).mean()) if k else 0.0,
        mean_minutes=mean, max_minutes=worst,
        population_min=int(sizes.min()) if k else 0, population_max=int(sizes.max()) if k else 0,
        shared_centers=int(choice.shared.sum()), crossing_districts=crossing, minutes_scope=scope)


def _contiguous(adjacency: sp.spmatrix, labels: np.ndarray, k: int) -> np.ndarray:
    """Per region, whether its units form one piece: keep only edges inside regions, then count
    the connected pieces each region's units fall into."""
    coo = sp.coo_matrix(adjacency)
    inside = (labels[coo.row] == labels[coo.col]) & (labels[coo.row] >= 0)
    graph = sp.coo_matrix((np.ones(int(inside.sum())), (coo.row[inside], coo.col[inside])),
                          shape=adjacency.shape)
    _, piece = connected_components(graph, directed=False)
    member = labels >= 0
    pairs = np.unique(np.column_stack([labels[member], piece[member]]), axis=0)
    return np.bincount(pairs[:, 0], minlength=k) == 1


def _minutes_beyond(network: WalkNetwork, reach: ReachMatrix, units: np.ndarray,
                    centers: np.ndarray, known: np.ndarray, within: np.ndarray,
                    cap_minutes: float) -> np.ndarray:
    """Minutes from each unit to its own center, measured on the network where the reach
    matrix stops at the limit (inf beyond `cap_minutes`)."""
    if abs(network.walk_speed_kmh - reach.walk_speed_kmh) > 1e-9:
        msg = (f"`network` walks at {network.walk_speed_kmh:g} km/h but the reach matrix at "
               f"{reach.walk_speed_kmh:g} km/h; pass network.with_walk_speed({reach.walk_speed_kmh:g}).")
        raise InputError(msg)
    out = known.copy()
    todo = np.flatnonzero(~within)
    if len(todo) == 0:
        return out
    cand = reach.candidates
    used = np.unique(centers[todo])
    cand_node = cand["node"].to_numpy()[used]
    ok = cand_node >= 0
    far = node_times(network, cand_node[ok], max_minutes=cap_minutes, direction=reach.direction)
    row_of = np.full(len(cand), -1, dtype="int64")
    row_of[used[ok]] = np.arange(int(ok.sum()))
    unit_node = reach.units["node"].to_numpy()[units[todo]]
    rows = row_of[centers[todo]]
    usable = (rows >= 0) & (unit_node >= 0)
    dist = np.full(len(todo), np.inf)
    matrix = far.to_csr(network.n_nodes)
    matrix.sort_indices()
    dist[usable] = lookup(matrix, rows[usable], unit_node[usable])[0]
    total = (reach.units["access_min"].to_numpy()[units[todo]] + dist / network.speed_m_per_min
             + cand["access_min"].to_numpy()[centers[todo]])
    out[todo] = np.where(total <= cap_minutes, total, np.inf)
    return out


# ---------------------------------------------------------------------------------------------
# The instance


@dataclass(frozen=True, slots=True, eq=False)
class PlanInstance:
    """Units as our planner builds them, with what every method and the evaluator share."""

    name: str
    network: WalkNetwork              # at the config's walking speed
    population: Population            # the input cells, units as the planner splits them
    reach: ReachMatrix                # units x candidates (node candidates + given centers)
    pieces: gpd.GeoSeries             # one polygon per unit (working CRS)
    adjacency: sp.csr_matrix          # units sharing a boundary
    district_of: np.ndarray | None
    config: PlanConfig


def build_instance(network: WalkNetwork, population: Population, *, config: PlanConfig,
                   centers: gpd.GeoDataFrame | None = None,
                   districts: gpd.GeoDataFrame | None = None, name: str = "",
                   progress: bool = False) -> PlanInstance:
    """The units, reach matrix and adjacency `plan_communities` would build from these inputs."""
    ready = prepare_planning(network, population, centers=centers, districts=districts,
                             config=config, progress=progress)
    district_of = ready.district_of if districts is not None else None
    network, population, reach = ready.network, ready.population, ready.reach
    pieces, adjacency = ready.pieces, ready.adjacency
    return PlanInstance(name=name, network=network, population=population, reach=reach,
                        pieces=pieces, adjacency=adjacency, district_of=district_of, config=config)


def with_centers(instance: PlanInstance, centers: gpd.GeoDataFrame) -> PlanInstance:
    """The same units with `centers` added to the candidates."""
    c = instance.config
    reach = compute_reach(instance.network, instance.population, centers=centers,
                          max_minutes=c.max_minutes, candidate_spacing_m=c.candidate_spacing_m)
    return replace(instance, reach=reach)


def score(instance: PlanInstance, labels: np.ndarray) -> PartitionScore:
    """`evaluate_partition` on the instance, with minutes beyond the limit measured."""
    return evaluate_partition(instance.reach, labels, adjacency=instance.adjacency,
                              config=instance.config, district_of=instance.district_of,
                              network=instance.network)


def plan_labels(instance: PlanInstance, plan: Plan) -> np.ndarray:
    """Region per instance unit from a plan built on the same inputs (checked unit by unit)."""
    units = instance.reach.units
    same = (len(plan.units) == len(units)
            and np.array_equal(plan.units["unit_id"].to_numpy(), units["unit_id"].to_numpy())
            and np.array_equal(plan.units["pop"].to_numpy(), units["pop"].to_numpy()))
    if not same:
        msg = "the plan's units differ from the instance's; build both from the same inputs and config."
        raise InputError(msg)
    ids = plan.units["community_id"]
    codes = np.unique(ids.dropna().astype(str), return_inverse=True)[1]
    labels = np.full(len(units), -1, dtype="int64")
    labels[ids.notna().to_numpy()] = codes.ravel()
    return labels


# ---------------------------------------------------------------------------------------------
# Existing communities for merge/split mode


@dataclass(frozen=True, slots=True, eq=False)
class ExistingCommunities:
    """Generated 'as-is' communities: unit labels, polygons and one center each (input CRS)."""

    labels: np.ndarray
    communities: gpd.GeoDataFrame     # community_id, population, geometry
    centers: gpd.GeoDataFrame         # center_id, community_id, geometry


def generate_communities(instance: PlanInstance, *, n_communities: int = 65,
                         seed: int = 0) -> ExistingCommunities:
    """
    Uneven, contiguous 'existing' communities with a center each, reproducible from `seed`.

    Seeds: `n_communities` units drawn without replacement with probability proportional to
    their residents. Each unit joins the seed nearest along the unit adjacency graph (edges
    weighted by the straight distance between unit points; scipy's multi-source Dijkstra), so
    every community is connected; random seeds make sizes uneven, as grown boundaries are.
    A component of the adjacency without a seed gets one at its most populous unit. Each
    community's center is the candidate inside it reaching most of its residents within the
    limit (`choose_community_centers`), as a planner would have placed the hall.
    """
    reach = instance.reach
    pop = reach.pop
    if not 1 <= n_communities <= int((pop > 0).sum()):
        msg = f"`n_communities` must be between 1 and the populated units ({int((pop > 0).sum())}), got {n_communities!r}."
        raise InputError(msg)
    rng = np.random.default_rng(seed)
    xy = np.column_stack([reach.units.geometry.x.to_numpy(), reach.units.geometry.y.to_numpy()])
    coo = sp.triu(instance.adjacency, k=1).tocoo()
    length = np.hypot(*(xy[coo.row] - xy[coo.col]).T) + 1e-3   # + 1 mm: no zero-length edge
    graph = sp.coo_matrix((length, (coo.row, coo.col)), shape=instance.adjacency.shape).tocsr()
    seeds = list(rng.choice(len(pop), size=n_communities, replace=False, p=pop / pop.sum()))
    while True:
        _, _, source = dijkstra(graph, directed=False, indices=seeds, min_only=True,
                                return_predecessors=True)
        if (source >= 0).all():
            break
        orphans = np.flatnonzero(source < 0)
        seeds.append(int(orphans[np.argmax(pop[orphans])]))
    labels = np.searchsorted(np.sort(seeds), source)   # community = rank of its seed's unit index
    shapes = dissolve_pieces(instance.pieces, labels)
    sites = choose_community_centers(reach, labels, community_areas=shapes.geometry)
    sizes = np.bincount(labels, weights=pop).astype("int64")
    ids = [f"E{k + 1:02d}" for k in range(len(sizes))]
    communities = gpd.GeoDataFrame({"community_id": ids, "population": sizes},
                                   geometry=shapes.geometry.values, crs=shapes.crs)
    centers = sites.centers
    centers = gpd.GeoDataFrame({"center_id": [f"S{k + 1:02d}" for k in centers["community"]],
                                "community_id": [ids[k] for k in centers["community"]]},
                               geometry=centers.geometry.values, crs=centers.crs)
    logger.info("Generated %d existing communities (seed %d): %d to %d residents",
                len(ids), seed, int(sizes.min()), int(sizes.max()))
    return ExistingCommunities(labels=labels, communities=communities.to_crs(reach.input_crs),
                               centers=centers)


# ---------------------------------------------------------------------------------------------
# Peers


@dataclass(frozen=True, slots=True, eq=False)
class PeerLevel:
    """What a peer partitions: points (metres), residents, rook adjacency as (i, j) edges, i < j."""

    x: np.ndarray
    y: np.ndarray
    pop: np.ndarray
    edges: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class PeerInputs:
    """An instance as the peers see it: its units, its populated cells, and each unit's cell."""

    units: PeerLevel
    cells: PeerLevel
    unit_cell: np.ndarray


def peer_inputs(instance: PlanInstance) -> PeerInputs:
    """The units and the populated cells they come from, as plain arrays for the peers."""
    units = instance.reach.units
    cell_ids = units["cell_id"].astype(str).to_numpy()
    cells = instance.population.cells.to_crs(instance.network.crs)
    cells = cells[cells["cell_id"].astype(str).isin(set(cell_ids))].reset_index(drop=True)
    cell_index = {cid: i for i, cid in enumerate(cells["cell_id"].astype(str))}
    unit_cell = np.array([cell_index[c] for c in cell_ids], dtype="int64")
    unit_pop = units["pop"].to_numpy(dtype="int64")
    cell_pop = np.bincount(unit_cell, weights=unit_pop, minlength=len(cells)).astype("int64")
    centroid = cells.geometry.representative_point()
    return PeerInputs(
        units=PeerLevel(units.geometry.x.to_numpy(), units.geometry.y.to_numpy(), unit_pop,
                        _edges(instance.adjacency)),
        cells=PeerLevel(centroid.x.to_numpy(), centroid.y.to_numpy(), cell_pop,
                        _edges(piece_adjacency(cells.geometry))),
        unit_cell=unit_cell)


def _edges(adjacency: sp.spmatrix) -> np.ndarray:
    upper = sp.triu(adjacency, k=1).tocoo()
    return np.column_stack([upper.row, upper.col]).astype("int64")


@dataclass(frozen=True, slots=True)
class PeerRun:
    """A peer's labels per unit and its time."""

    labels: np.ndarray
    solve_s: float       # the method's own call (its libraries already imported)
    level: str           # 'units' or 'cells'
    n_inputs: int        # units or cells the method partitioned


def run_peer(inputs: PeerInputs, *, method: str, level: str = "units", floor: int = 8_000,
             k: int | None = None, seed: int = 0, construction: int = 99,
             annealing: int = 10) -> PeerRun:
    """
    Run a peer of `covplan.bench.peers` on the units or the cells of `inputs`.

    'maxp' takes `floor` (and spopt's `construction` and `annealing` iterations), 'kmeans'
    takes `k` (default: residents / 10,000). Labels on cells are handed down to their units.
    """
    bench_peers.require(method)
    if level not in ("units", "cells"):
        msg = f"`level` must be 'units' or 'cells', got {level!r}."
        raise InputError(msg)
    data = inputs.cells if level == "cells" else inputs.units
    pop = data.pop.astype("float64")
    started = time.perf_counter()
    if method == "maxp":
        labels = bench_peers.maxp(data.x, data.y, pop, data.edges, floor=floor, seed=seed,
                                  construction=construction, annealing=annealing)
    else:
        k = k or max(1, round(pop.sum() / 10_000))
        labels = bench_peers.kmeans(data.x, data.y, pop, k=k, seed=seed)
    solve_s = time.perf_counter() - started
    if level == "cells":
        labels = labels[inputs.unit_cell]
    return PeerRun(labels=labels, solve_s=solve_s, level=level, n_inputs=len(pop))


# ---------------------------------------------------------------------------------------------
# The benchmark


def _row(score_: PartitionScore, *, runtime_s: float, units: int, note: str = "") -> dict[str, Any]:
    row = score_.to_dict()
    row.update(runtime_s=round(float(runtime_s), 2), units=units, note=note)
    return row


def _plan_row(instance: PlanInstance, plan: Plan, note: str) -> dict[str, Any]:
    row = _row(score(instance, plan_labels(instance, plan)), runtime_s=plan.report["runtime_s"],
               units=len(plan.units), note=note)
    row["plan_report"] = {key: plan.report[key] for key in (
        "communities", "coverage_share", "coverage_share_of_reachable", "within_tolerance_share",
        "contiguous_share", "mean_minutes", "max_minutes", "population_min", "population_max",
        "stability_share")}
    return row


def run_plan_benchmark(network: WalkNetwork, population: Population, *,
                       config: PlanConfig | None = None,
                       peers: tuple[str, ...] = ("maxp", "kmeans"),
                       maxp_level: str = "cells", maxp_floor: int = 8_000,
                       existing_communities: int = 65, seed: int = 0,
                       robustness_seeds: tuple[int, ...] = (1, 2), noise_draws: int = 2,
                       noise: float = 0.01, demo: bool = True,
                       progress: bool = False) -> dict[str, Any]:
    """
    Our planner (redraw; merge/split from generated existing communities) against spopt Max-p
    and weighted k-means on the same units, all scored by `evaluate_partition`.

    Parameters
    ----------
    network, population
        The city (e.g. the São Paulo pair). Cells are split onto network nodes as the planner
        does (``config.max_unit_pop``).
    peers
        Any of 'maxp', 'kmeans' (``pip install "coverage-planner[peers]"``); () runs ours only.
    maxp_level
        'cells' (the populated source cells with their rook adjacency; Max-p builds a dense
        distance matrix and works in pure Python, so it does not scale to ~18k units) or
        'units' (the planner's units; very slow).
    existing_communities, seed
        How many 'as-is' communities to generate for merge/split mode, and the seed.
    robustness_seeds, noise_draws, noise
        Extra redraw runs: other planner seeds, and population draws with each cell scaled by
        a uniform factor in 1 ± `noise` (rounded) at the planner's default seed.
    demo
        Also replay the demo city (69 existing -> ~30) with the same evaluator.

    Returns
    -------
    dict
        ``instance`` (sizes), ``methods`` (per method: every `PartitionScore` figure,
        runtime_s, units, note), ``robustness``, ``demo`` and ``reference``.
    """
    from covplan.plan.pipeline import plan_communities

    config = config or PlanConfig()
    bench_peers.require(*peers)        # a missing peer fails now, not after the planning
    started = time.perf_counter()
    base = build_instance(network, population, config=config, name="city", progress=progress)
    existing = generate_communities(base, n_communities=existing_communities, seed=seed)
    instance = with_centers(base, existing.centers)
    units = len(instance.reach.units)
    logger.info("Benchmark instance: %d units, %d candidates (%.1f s)", units,
                len(instance.reach.candidates), time.perf_counter() - started)
    methods: dict[str, dict[str, Any]] = {}
    sizes = existing.communities["population"]
    methods["existing (generated, as-is)"] = _row(
        score(instance, existing.labels), runtime_s=0.0, units=units,
        note=f"{len(sizes)} communities of {int(sizes.min()):,} to {int(sizes.max()):,}, seed {seed}")

    redraw = plan_communities(network, population, config=config, progress=progress)
    methods["coverage redraw"] = _plan_row(instance, redraw, "plan_communities, no existing communities")
    merged = plan_communities(network, population, communities=existing.communities,
                              centers=existing.centers, config=config, progress=progress)
    methods["coverage merge/split"] = _plan_row(
        instance, merged, f"from the {len(sizes)} generated communities; "
        f"stability {merged.report['stability_share']:.0%}")

    if peers:
        inputs = peer_inputs(instance)
        k = max(1, round(int(instance.reach.pop.sum()) / config.target_pop))
        if "maxp" in peers:
            run = run_peer(inputs, method="maxp", level=maxp_level, floor=maxp_floor, seed=seed)
            methods[f"spopt Max-p (floor {maxp_floor:,})"] = _row(
                score(instance, run.labels), runtime_s=run.solve_s, units=run.n_inputs,
                note=f"on {run.n_inputs:,} {run.level}; x, y as attributes")
        if "kmeans" in peers:
            run = run_peer(inputs, method="kmeans", level="units", k=k, seed=seed)
            methods["weighted k-means"] = _row(
                score(instance, run.labels), runtime_s=run.solve_s, units=run.n_inputs,
                note=f"k = {k}, sample_weight = population, n_init = 10")

    robustness = _robustness(network, population, instance, config=config, seeds=robustness_seeds,
                             noise_draws=noise_draws, noise=noise, seed=seed, redraw=redraw,
                             progress=progress)
    report: dict[str, Any] = {
        "instance": {"units": units, "cells": int((population.cells["pop"] > 0).sum()),
                     "population": int(instance.reach.pop.sum()),
                     "candidates": len(instance.reach.candidates),
                     "unreachable_population": instance.reach.unreachable_population,
                     "existing_communities": len(sizes)},
        "parameters": config.to_dict(), "methods": methods, "robustness": robustness,
        "reference": REFERENCE, "demo": _demo(config=config, progress=progress) if demo else None,
        "runtime_s": round(time.perf_counter() - started, 1)}
    return report


def _robustness(network, population, instance, *, config, seeds, noise_draws, noise, seed, redraw,
                progress) -> list[dict[str, Any]]:
    """Redraw under other seeds and ±noise population draws: the planner's own report figures."""
    from covplan.inputs.population import Population
    from covplan.plan.pipeline import plan_communities

    runs = [("seed 0 (as above)", redraw)]
    for s in seeds:
        runs.append((f"seed {s}", plan_communities(network, population, config=replace(config, seed=s),
                                                   progress=progress)))
    rng = np.random.default_rng(seed + 1)
    for draw in range(noise_draws):
        cells = population.cells.copy()
        factor = 1 + rng.uniform(-noise, noise, len(cells))
        cells["pop"] = np.rint(cells["pop"].to_numpy() * factor).astype("int64")
        noisy = Population.from_frame(cells, population_column="pop", id_column="cell_id")
        runs.append((f"population ±{noise:.0%} draw {draw + 1}",
                     plan_communities(network, noisy, config=config, progress=progress)))
    rows = []
    for name, plan in runs:
        r = plan.report
        rows.append({"run": name, "population": r["population_total"], "communities": r["communities"],
                     "within_tolerance": round(r["within_tolerance_share"] * r["communities"]),
                     "within_tolerance_share": r["within_tolerance_share"],
                     "coverage_share": r["coverage_share"],
                     "coverage_share_of_reachable": r["coverage_share_of_reachable"],
                     "contiguous_share": r["contiguous_share"], "runtime_s": r["runtime_s"]})
    return rows


def _demo(*, config: PlanConfig, progress: bool) -> dict[str, Any]:
    """The demo replay (69 uneven communities in 3 districts -> about 30), same evaluator."""
    from covplan.cities.demo import build_demo_city
    from covplan.inputs.areas import label_units, load_centers, load_communities, load_districts
    from covplan.inputs.network import load_network
    from covplan.inputs.population import load_population
    from covplan.plan.pipeline import plan_communities

    city = build_demo_city(seed=0)
    network = load_network(city.graph, walk_speed_kmh=config.walk_speed_kmh)
    population = load_population(city.population, population_column="population", id_column="cell_id")
    centers, communities = load_centers(city.centers), load_communities(city.communities)
    districts = load_districts(city.districts)
    instance = build_instance(network, population, config=config, centers=centers,
                              districts=districts, name="demo", progress=progress)
    units = instance.reach.units
    asis = label_units(units, communities)
    plan = plan_communities(network, population, communities=communities, centers=centers,
                            districts=districts, config=config, progress=progress)
    return {"units": len(units), "population": int(instance.reach.pop.sum()),
            "methods": {"existing (as-is)": _row(score(instance, asis),
                                                 runtime_s=0.0, units=len(units),
                                                 note="the demo's 69 communities, own centers re-sited"),
                        "coverage merge/split": _plan_row(
                            instance, plan, f"stability {plan.report['stability_share']:.0%}")}}


def format_plan_table(report: dict[str, Any]) -> str:
    """The benchmark as Markdown tables: methods side by side, robustness, demo."""
    header = ("| method | units | communities | covered (own center ≤ limit) / all residents | "
              "covered / residents who reach a site | within ±tol | contiguous | "
              "smallest / largest | mean / max walk (min) | shared centers | runtime s |")
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"

    def rows(methods: dict[str, dict[str, Any]]) -> list[str]:
        out = []
        for name, r in methods.items():
            mean = "–" if r["mean_minutes"] is None else f"{r['mean_minutes']:.1f}"
            worst = "–" if r["max_minutes"] is None else (
                "> 60" if not np.isfinite(r["max_minutes"]) else f"{r['max_minutes']:.1f}")
            out.append(f"| {name} | {r['units']:,} | {r['communities']} | {r['coverage_share']:.1%} | "
                       f"{r['coverage_share_of_reachable']:.1%} | {r['within_tolerance_share']:.0%} | {r['contiguous_share']:.0%} | "
                       f"{r['population_min']:,} / {r['population_max']:,} | {mean} / {worst} | "
                       f"{r['shared_centers']} | {r['runtime_s']:.1f} |")
        return out

    inst = report["instance"]
    lines = [(f"{inst['population']:,} residents in {inst['units']:,} units ({inst['cells']} populated "
              f"cells), {inst['candidates']:,} candidate sites, {inst['unreachable_population']:,} reach none"),
             "", header, rule, *rows(report["methods"]), ""]
    lines += [("| robustness run | residents | communities | within ±tol | "
               "covered (own center ≤ limit) / all residents | covered / residents who reach a "
               "site | runtime s |"),
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["robustness"]:
        lines.append(f"| {r['run']} | {r['population']:,} | {r['communities']} | "
                     f"{r['within_tolerance']} of {r['communities']} | "
                     f"{r['coverage_share']:.1%} | "
                     f"{r['coverage_share_of_reachable']:.1%} | {r['runtime_s']:.1f} |")
    if report.get("demo"):
        demo = report["demo"]
        lines += ["", f"Demo city: {demo['population']:,} residents in {demo['units']:,} units", "",
                  header, rule, *rows(demo["methods"])]
    return "\n".join(lines)
