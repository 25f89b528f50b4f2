"""
A large city planned by parts: regions of about `REGION_RESIDENTS` cut along the unit graph,
planned side by side like districts (`covplan._parallel.run_tasks`, sized by
``PlanConfig.jobs``), then their seams repaired.

Regions are internal: no output names them, only the log does. A region holds whole kept
communities (they must not be cut) and is connected where the unit graph allows. After the
regions are planned, each seam (a pair of touching regions) is re-planned as a band: the
communities on both sides that touch it, with their centers and the free candidates their
residents reach, so communities may cross a seam. Bands re-planned side by side share no
community and no candidate; a band's new plan is kept only where the rules' order improves,
so a seam never leaves more residents out of the band than the regions did. Last, the window of
neighbouring communities around each community still outside the band is re-planned the same
way, across region limits. With ``jobs`` = 1 everything runs in this process, in the same order.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from covplan._parallel import run_tasks, shared
from covplan._sparse import lookup
from covplan.solve.partition.core import band_key
from covplan.solve.partition.search import tiny_first_order
from covplan.solve.partition.seeding import bisect_parts
from scipy.sparse.csgraph import connected_components

if TYPE_CHECKING:
    from covplan.config import PlanConfig
    from covplan.plan.pipeline import PlanningInputs, Prior
    from covplan.reach.matrix import ReachMatrix

logger = logging.getLogger(__name__)

# The partition's cost per resident is about flat up to ~3 M residents and grows beyond (the
# metropolis without districts, 2 cores: 15.6 s at 3 M, 141 s at 10 M). At 10 M with 2 jobs the
# plan's solve took 118 s with regions of 0.4 M (their seams' bands held half the city), 79 s
# with 0.7 M, 55 s with 1 M, 39 s with 2 M; 1 M keeps every region (up to ~1.4 M once made
# connected) well inside the flat range and gives two workers enough parts to share.
REGION_RESIDENTS = 1_000_000
LARGE_CITY = 2.0                # a city of more than this many regions' residents is cut
REGION_COMMUNITIES = 10         # at least this many targets per region (a large target)
_CONTIGUITY_PASSES = 20         # stray pieces moved to a neighbour; a few passes settle it

def plan_regions(ready: PlanningInputs, config: PlanConfig,
                 fixed: dict[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Region per unit and per candidate of a large city without districts, each kept community
    (`fixed`: old community -> its center) whole in one region; None for a city small enough to
    plan whole, or one with districts."""
    reach, prior = ready.reach, ready.prior
    size = region_size(config.target_pop)
    total = float(reach.pop.sum())
    if ready.district_ids is not None or total <= LARGE_CITY * size:
        return None
    atoms = np.where(np.isin(prior.unit, list(fixed)), prior.unit, -1) if fixed else None
    xy = np.column_stack([reach.units.geometry.x.to_numpy(), reach.units.geometry.y.to_numpy()])
    region_of = unit_regions(xy, reach.pop, ready.adjacency, size=size, atoms=atoms)
    candidate_region = candidate_regions(reach.minutes, region_of)
    if fixed:                                  # a kept center stays with its community
        first = dict(zip(*(a.tolist() for a in np.unique(atoms, return_index=True))))
        for old, candidate in fixed.items():
            candidate_region[candidate] = region_of[first[old]]
    sizes = np.bincount(region_of, weights=reach.pop)
    logger.info("Planning %s residents as %d regions of %s to %s residents; their seams are "
                "re-planned after", f"{total:,.0f}", len(sizes), f"{sizes.min():,.0f}",
                f"{sizes.max():,.0f}")
    return region_of, candidate_region


def region_size(target_pop: float) -> float:
    """Residents per region: `REGION_RESIDENTS`, more for a large target (read at call time, so
    tests can make small regions)."""
    return max(REGION_RESIDENTS, REGION_COMMUNITIES * target_pop)


def unit_regions(xy: np.ndarray, pop: np.ndarray, adjacency: sp.csr_matrix, *, size: float,
                 atoms: np.ndarray | None = None) -> np.ndarray:
    """
    Region per unit: about `size` residents each, by equal-population bisection of the units'
    coordinates, then made whole: every unit of an atom (a kept community, -1 none) in the
    atom's majority region, and every piece of a region cut off from its main piece moved to the
    touching region it shares most unit edges with (a piece touching none stays: an island).
    """
    pop = np.asarray(pop, dtype="float64")
    k = max(1, round(float(pop.sum()) / size))
    xy = np.asarray(xy, dtype="float64")
    region, _ = bisect_parts(xy, pop + 1e-6, np.arange(len(xy)), k)
    if atoms is not None and (atoms >= 0).any():
        inside = np.flatnonzero(atoms >= 0)
        weight = sp.csr_matrix((pop[inside] + 1e-6, (atoms[inside], region[inside])))
        majority = np.asarray(weight.argmax(axis=1)).ravel()
        region[inside] = majority[atoms[inside]]
    return _connect(region, pop, adjacency)


def _connect(region: np.ndarray, pop: np.ndarray, adjacency: sp.csr_matrix) -> np.ndarray:
    """Move each region's stray pieces (all but its most populous) to the touching region they
    share most unit edges with, until none moves. A piece is connected and adjacent to the region
    it joins, so whole atoms stay whole."""
    coo = sp.triu(adjacency, k=1).tocoo()
    u, v = coo.row.astype("int64"), coo.col.astype("int64")
    n = len(region)
    for _ in range(_CONTIGUITY_PASSES):
        inner = region[u] == region[v]
        graph = sp.csr_matrix((np.ones(int(inner.sum())), (u[inner], v[inner])), shape=(n, n))
        _, piece = connected_components(graph, directed=False)
        piece_pop = np.bincount(piece, weights=pop + 1e-6)
        piece_region = np.zeros(piece.max() + 1, dtype="int64")
        piece_region[piece] = region
        # The main piece of each region: most residents, ties to the lowest piece number.
        order = np.lexsort((np.arange(len(piece_pop)), -piece_pop, piece_region))
        main = np.zeros(len(piece_pop), dtype=bool)
        main[order[np.r_[True, piece_region[order][1:] != piece_region[order][:-1]]]] = True
        # Edges leaving a stray piece, counted per (piece, other region).
        cross = ~inner
        ends = np.r_[u[cross], v[cross]], np.r_[v[cross], u[cross]]
        stray = ~main[piece[ends[0]]]
        if not stray.any():
            break
        counts = sp.csr_matrix((np.ones(int(stray.sum())),
                                (piece[ends[0][stray]], region[ends[1][stray]])),
                               shape=(len(piece_pop), int(region.max()) + 1))
        counts.sum_duplicates()
        moving = np.flatnonzero(np.diff(counts.indptr) > 0)
        target = np.asarray(counts[moving].argmax(axis=1)).ravel()   # ties: lowest region
        new_region = piece_region.copy()
        new_region[moving] = target
        region = new_region[piece]
    _, region = np.unique(region, return_inverse=True)
    return region.astype("int64")


def candidate_regions(minutes: sp.csr_matrix, region: np.ndarray) -> np.ndarray:
    """Region per candidate: that of the unit reaching it in the fewest minutes (ties: the
    lowest unit); a candidate no unit reaches goes to region 0 (nobody can use it)."""
    csc = minutes.tocsc()
    csc.sort_indices()
    counts = np.diff(csc.indptr)
    used = np.flatnonzero(counts > 0)
    least = np.minimum.reduceat(csc.data, csc.indptr[used]) if len(used) else np.zeros(0)
    col = np.repeat(used, counts[used])
    at_least = np.flatnonzero(csc.data == np.repeat(least, counts[used]))
    first = at_least[np.unique(col[at_least], return_index=True)[1]]   # lowest unit per column
    out = np.zeros(csc.shape[1], dtype="int64")
    out[col[first]] = region[csc.indices[first]]
    return out


def repair_seams(ready: PlanningInputs, config: PlanConfig, center_of: np.ndarray,
                 region_of: np.ndarray, *, frozen: np.ndarray, open_to_all: np.ndarray,
                 locked: np.ndarray | None) -> np.ndarray:
    """
    Re-plan the band of communities along each seam between regions once (bands that share no
    community side by side), then the window of one ring of neighbouring communities, then two,
    around each community still outside the population band, wherever it lies: what the
    regions' own improvement could not do across their limits. A band's new plan is kept only
    where it is better (`_band_task`); the `frozen` centers' communities stay.
    """
    adjacency = ready.adjacency
    data = {"reach": ready.reach, "adjacency": adjacency, "prior": ready.prior,
            "config": config, "locked": locked}
    center_of = center_of.copy()
    started = time.perf_counter()
    counts = np.zeros(3)                   # bands re-planned, improved, residents in them
    bands = seam_bands(center_of, region_of, adjacency, frozen)
    todo, rounds = sorted(bands), 0
    while chosen := next_round(bands, todo):
        center_of = _replan_bands(ready, config, center_of, _members(center_of, bands, chosen),
                                  open_to_all, data, counts)
        todo = [seam for seam in todo if seam not in set(chosen)]
        bands = seam_bands(center_of, region_of, adjacency, frozen)
        rounds += 1
    logger.info("Seams: %d bands (%s residents) re-planned in %d rounds, %d of them improved "
                "(%.1f s)", counts[0], f"{counts[2]:,.0f}", rounds, counts[1],
                time.perf_counter() - started)
    counts[:], started = 0, time.perf_counter()
    for rings in (1, 2):
        tried: set[int] = set()
        while True:
            out = [c for c in outside_band(center_of, ready.reach.pop, config.min_pop,
                                           config.max_pop, frozen) if c not in tried]
            graph = community_graph(center_of, adjacency)
            windows = {c: window(graph, c, rings, frozen) for c in out}
            chosen = next_round(windows, out)
            if not chosen:
                break
            rows = _members(center_of, windows, chosen)
            center_of = _replan_bands(ready, config, center_of, rows, open_to_all, data, counts)
            for c, r in zip(chosen, rows):     # the window's communities, old and new: done
                tried |= set(windows[c].tolist()) | set(center_of[r].tolist())
    logger.info("Windows around communities outside the band: %d re-planned, %d improved "
                "(%.1f s)", counts[0], counts[1], time.perf_counter() - started)
    return center_of


def _members(center_of: np.ndarray, bands: dict, keys: list) -> list[np.ndarray]:
    """The units of each band's communities (a band: a set of centers)."""
    return [np.flatnonzero(np.isin(center_of, bands[key])) for key in keys]


def _replan_bands(ready: PlanningInputs, config: PlanConfig, center_of: np.ndarray,
                  rows: list[np.ndarray], open_to_all: np.ndarray, data: dict,
                  counts: np.ndarray) -> np.ndarray:
    """Re-plan bands (the units of communities no two bands share) side by side: each on its
    centers and the free candidates its residents reach (none shared), kept where better."""
    bands = [np.unique(center_of[r]) for r in rows]
    free = open_to_all.copy()
    free[center_of[center_of >= 0]] = False
    cols = band_candidates(ready.reach.minutes, rows, bands, free)
    tasks = [(r, c, center_of[r]) for r, c in zip(rows, cols)]
    center_of = center_of.copy()
    done = run_tasks(_band_task, tasks, jobs=config.workers, data=data,
                     sizes=[len(r) for r in rows])
    for r, new in zip(rows, done):
        counts += (1, new is not None, float(ready.reach.pop[r].sum()))
        if new is not None:
            center_of[r] = new
    return center_of


def _band_task(task: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray | None:
    """A band of communities re-planned from scratch on its candidates (`partition_group`): its new
    centers when better in the rules' order (tiny communities first, like a district's plan),
    then in person-minutes with the stability cost; else None (the band stays)."""
    from covplan.plan.pipeline import partition_group  # here: pipeline imports this module

    rows, cols, old = task
    s = shared()
    reach, prior, config = s["reach"], s["prior"], s["config"]
    new = partition_group(reach, s["adjacency"], prior, rows, cols, config, locked=s["locked"])
    if (new[old >= 0] < 0).any():
        return None
    return new if _band_cost(reach, prior, rows, new, config) < _band_cost(
        reach, prior, rows, old, config) else None


def _band_cost(reach: ReachMatrix, prior: Prior | None, rows: np.ndarray, centers: np.ndarray,
               config: PlanConfig) -> tuple[float, ...]:
    """The rules' order of a band's plan: `band_key` (tiny communities first), then walking
    person-minutes plus the stability cost of residents leaving their old community."""
    pop = reach.pop[rows].astype("float64")
    key = assignment_band_key(centers, pop, config)
    minutes = lookup(reach.minutes, rows, centers)[0]
    cost = np.where(np.isfinite(minutes), minutes, 0.0)
    if prior is not None:
        old = prior.unit[rows]
        cost = cost + config.stability_minutes * ((old >= 0) & (old != prior.candidate[centers]))
    return (*tiny_first_order(key), float((cost * pop).sum()))


def assignment_band_key(center_of: np.ndarray, pop: np.ndarray,
                        config: PlanConfig) -> tuple[float, int, int, float]:
    """`band_key` of an assignment of units to centers (-1: unserved)."""
    served = center_of >= 0
    _, inverse = np.unique(center_of[served], return_inverse=True)
    return band_key(np.bincount(inverse, weights=pop[served]), min_pop=config.min_pop,
                    max_pop=config.max_pop, target_pop=config.target_pop,
                    tiny_share=config.min_pop_exception)


def seam_bands(center_of: np.ndarray, region: np.ndarray, adjacency: sp.csr_matrix,
               frozen: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Per seam (a, b), a < b: the centers of the communities touching it — those with a unit
    on one side next to a unit on the other — leaving out the `frozen` centers (kept and
    exception communities, which no band re-plans)."""
    coo = sp.triu(adjacency, k=1).tocoo()
    u, v = coo.row.astype("int64"), coo.col.astype("int64")
    ok = (region[u] != region[v]) & (center_of[u] >= 0) & (center_of[v] >= 0)
    u, v = u[ok], v[ok]
    a, b = np.minimum(region[u], region[v]), np.maximum(region[u], region[v])
    pair = np.r_[a, a] * (int(region.max()) + 1) + np.r_[b, b]
    center = np.r_[center_of[u], center_of[v]]
    keep = ~frozen[center]
    table = np.unique(np.column_stack([pair[keep], center[keep]]), axis=0)
    bands: dict[tuple[int, int], np.ndarray] = {}
    if not len(table):
        return bands
    starts = np.flatnonzero(np.r_[True, table[1:, 0] != table[:-1, 0]])
    for start, stop in zip(starts, np.r_[starts[1:], len(table)]):
        key = divmod(int(table[start, 0]), int(region.max()) + 1)
        bands[key] = table[start:stop, 1]
    return bands


def next_round(bands: dict[tuple[int, int], np.ndarray],
               todo: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Seams of `todo` (in order) whose bands share no community: re-planned side by side."""
    taken: set[int] = set()
    chosen = []
    for seam in todo:
        centers = set(bands.get(seam, np.zeros(0, "int64")).tolist())
        if centers and not centers & taken:
            chosen.append(seam)
            taken |= centers
    return chosen


def band_candidates(minutes: sp.csr_matrix, rows_per_band: list[np.ndarray],
                    centers_per_band: list[np.ndarray], free: np.ndarray) -> list[np.ndarray]:
    """Each band's candidates: its own centers and the `free` candidates its residents reach
    that no earlier band of the round took (bands side by side must not open the same site)."""
    claimed = np.zeros(len(free), dtype=bool)
    out = []
    for rows, centers in zip(rows_per_band, centers_per_band):
        reached = np.unique(minutes[rows].indices)
        extra = reached[free[reached] & ~claimed[reached]]
        claimed[extra] = True
        out.append(np.union1d(centers, extra))
    return out


def outside_band(center_of: np.ndarray, pop: np.ndarray, min_pop: float, max_pop: float,
                 frozen: np.ndarray) -> list[int]:
    """Centers of the communities outside the band (not `frozen`), most residents first."""
    served = center_of >= 0
    centers, inverse = np.unique(center_of[served], return_inverse=True)
    sizes = np.bincount(inverse, weights=pop[served].astype("float64"))
    out = ((sizes < min_pop) | (sizes > max_pop)) & ~frozen[centers]
    order = np.lexsort((centers[out], -sizes[out]))
    return centers[out][order].tolist()


def community_graph(center_of: np.ndarray, adjacency: sp.csr_matrix) -> sp.csr_matrix:
    """Centers x centers: communities sharing a unit edge."""
    coo = adjacency.tocoo()
    a, b = center_of[coo.row], center_of[coo.col]
    keep = (a >= 0) & (b >= 0) & (a != b)
    n = int(center_of.max()) + 1 if len(center_of) else 0
    graph = sp.csr_matrix((np.ones(int(keep.sum())), (a[keep], b[keep])), shape=(n, n))
    graph.sum_duplicates()
    return graph


def window(graph: sp.csr_matrix, center: int, rings: int, frozen: np.ndarray) -> np.ndarray:
    """The centers of a community and of its neighbours `rings` communities deep in the
    `community_graph`, leaving out the `frozen` ones."""
    found = np.array([center], dtype="int64")
    for _ in range(rings):
        found = np.union1d(found, graph[found].indices)
    return found[~frozen[found]]
