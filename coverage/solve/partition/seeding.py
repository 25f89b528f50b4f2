"""Initial centers: a packing bound on their number, equal-population bisection seeds, a
greedy set cover that makes sure every unit that reaches a candidate has a center, a
minimum cover (HiGHS) for instances where covering everyone binds the count, and a packing of
nearly whole circles for thin ones (`circle_packing`)."""

from __future__ import annotations

import heapq

import numpy as np
import scipy.sparse as sp
from covplan._sparse import entries_of, lookup, row_slice
from scipy.sparse.csgraph import connected_components

_SLIVER_ROUNDS = 20         # rounds of `circle_packing` giving slivers to the circles around
_IPM_ENTRIES = 50_000       # cover LPs above this many entries go to the interior point


def packing_bound(structure: sp.csr_matrix) -> int:
    """A lower bound on the centers the 15-minute rule needs: units (most constrained first)
    no two of which share a candidate each need their own."""
    units = np.arange(structure.shape[0])
    return len(separated_units(structure, units, np.diff(structure.indptr)))


def separated_units(structure: sp.csr_matrix, candidates: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Units of `candidates`, smallest `key` first (ties by index), no two of which reach a
    common site: every plan covering them puts each in a community of its own."""
    taken = np.zeros(structure.shape[1], dtype=bool)
    picked = []
    for u in candidates[np.lexsort((candidates, key[candidates]))]:
        cols = structure.indices[structure.indptr[u]:structure.indptr[u + 1]]
        if len(cols) and not taken[cols].any():
            taken[cols] = True
            picked.append(int(u))
    return np.asarray(picked, dtype="int64")


def bisect_parts(xy: np.ndarray, pop: np.ndarray, units: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """k parts of about equal population, cutting across the longer side; part per unit (-1 off)."""
    part = np.full(len(xy), -1, dtype="int64")
    stack, n_parts = [(units, k)], 0
    while stack:
        group, k = stack.pop()
        if k == 1 or len(group) <= 1:
            part[group], n_parts = n_parts, n_parts + 1
            continue
        k1 = k // 2
        axis = int(np.argmax(np.ptp(xy[group], axis=0)))
        order = group[np.lexsort((group, xy[group, axis]))]
        cum = np.cumsum(pop[order] + 1e-9)
        cut = int(np.clip(np.searchsorted(cum, cum[-1] * k1 / k) + 1, 1, len(order) - 1))
        stack += [(order[cut:], k - k1), (order[:cut], k1)]
    return part, n_parts


def end_parts(xy: np.ndarray, pop: np.ndarray, units: np.ndarray, k: int,
              first: float) -> tuple[np.ndarray, int]:
    """Like `bisect_parts`, but part 0 holds the `first` residents at the low end of the longer
    side and the other k - 1 parts share the rest about equally."""
    axis = int(np.argmax(np.ptp(xy[units], axis=0)))
    order = units[np.lexsort((units, xy[units, axis]))]
    cut = int(np.clip(np.searchsorted(np.cumsum(pop[order] + 1e-9), first) + 1, 1, len(order) - 1))
    part, n_parts = bisect_parts(xy, pop, order[cut:], k - 1)
    part[part >= 0] += 1
    part[order[:cut]] = 0
    return part, n_parts + 1


def seed_centers(xy: np.ndarray, pop: np.ndarray, structure: sp.csr_matrix, k: int, angle: float,
                  blocked: np.ndarray | None = None, *, first: float | None = None) -> np.ndarray:
    """
    One center per bisection part: the free candidate reaching most of the part's people. Then
    a part holding units no center reaches swaps its center for the candidate reaching most of
    those and of the units only its old center reached (most of the part's people next). With
    `first`, the first part holds that many residents at one end (`end_parts`).
    """
    reachable = np.flatnonzero(np.diff(structure.indptr) > 0)
    if k < 1 or len(reachable) == 0 or (first is not None and (k < 2 or len(reachable) < k)):
        return np.zeros(0, dtype="int64")
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    turned = np.asarray(xy, dtype="float64") @ rot
    part, n_parts = (bisect_parts(turned, pop, reachable, min(k, len(reachable))) if first is None
                     else end_parts(turned, pop, reachable, k, first))
    members = sp.csr_matrix((pop[reachable] + 1e-3, (part[reachable], reachable)),
                            shape=(n_parts, structure.shape[0]))
    gather = (members @ structure).toarray()
    used = np.zeros(structure.shape[1], dtype=bool) if blocked is None else blocked.copy()
    centers = np.full(n_parts, -1, dtype="int64")
    for row in range(n_parts):
        best = int(np.argmax(np.where(used, -1.0, gather[row])))
        if gather[row, best] > 0 and not used[best]:
            centers[row], used[best] = best, True
    csc = structure.tocsc()
    n_units, n_cand = structure.shape
    # Sums of ones over a few columns or rows, without building a sparse slice for each.
    at = entries_of(csc.indptr, centers[centers >= 0])
    count = np.bincount(csc.indices[at], weights=csc.data[at], minlength=n_units)
    for _ in range(2):
        uncovered = (count == 0) & (np.diff(structure.indptr) > 0)
        holes = np.bincount(part[uncovered], weights=pop[uncovered] + 1e-3, minlength=n_parts)
        for row in np.lexsort((np.arange(n_parts), -holes)):
            old = int(centers[row])
            if holes[row] <= 0 or old < 0:
                continue
            alone = np.zeros(len(count), dtype=bool)
            alone[csc.indices[csc.indptr[old]:csc.indptr[old + 1]]] = True
            need = np.flatnonzero((part == row) & ((count == 0) | ((count == 1) & alone)))
            at = entries_of(structure.indptr, need)
            hits = np.bincount(structure.indices[at], weights=structure.data[at], minlength=n_cand)
            score = np.where(used & (np.arange(len(hits)) != old), -np.inf,
                             hits * (pop.sum() + 1.0) + gather[row])
            best = int(np.argmax(score))
            if best != old and hits[best] > hits[old]:
                used[old], used[best] = False, True
                count[csc.indices[csc.indptr[old]:csc.indptr[old + 1]]] -= 1
                count[csc.indices[csc.indptr[best]:csc.indptr[best + 1]]] += 1
                centers[row] = best
    if first is not None and centers[0] < 0:
        return np.zeros(0, dtype="int64")      # the small end's center comes first, or none
    return centers[centers >= 0]


def greedy_seeds(minutes: sp.csr_matrix, pop: np.ndarray, k: int) -> list[int]:
    """Without coordinates: greedy p-median, opening the candidate that saves most person-minutes."""
    rows = np.repeat(np.arange(minutes.shape[0]), np.diff(minutes.indptr))
    cols, data = minutes.indices, minutes.data
    current = np.full(minutes.shape[0], data.max(initial=0) + 1.0)
    chosen: list[int] = []
    while len(chosen) < k:
        gain = np.bincount(cols, weights=np.clip(current[rows] - data, 0, None) * (pop[rows] + 1e-3),
                           minlength=minutes.shape[1])
        gain[chosen] = -1
        best = int(np.argmax(gain))
        if gain[best] <= 0:
            break
        chosen.append(best)
        mask = cols == best
        np.minimum.at(current, rows[mask], data[mask])
    return chosen


def set_cover(structure: sp.csr_matrix, pop: np.ndarray, start: list[int] = ()) -> list[int]:
    """Extend `start` by lazy greedy set cover (most newly covered people first) until every
    reachable unit is covered."""
    csc = structure.tocsc()
    covered = np.diff(structure.indptr) == 0
    chosen = [int(c) for c in start]
    for c in chosen:
        covered[csc.indices[csc.indptr[c]:csc.indptr[c + 1]]] = True
    weight = pop.astype("float64") + 1e-3
    col_of_entry = np.repeat(np.arange(csc.shape[1]), np.diff(csc.indptr))
    gain = np.bincount(col_of_entry, weights=weight[csc.indices] * ~covered[csc.indices],
                       minlength=csc.shape[1])
    heap = [(-g, c) for c, g in enumerate(gain) if g > 0]
    heapq.heapify(heap)
    while heap and not covered.all():
        _, c = heapq.heappop(heap)
        rows = csc.indices[csc.indptr[c]:csc.indptr[c + 1]]
        g = float(weight[rows][~covered[rows]].sum())
        if heap and g < -heap[0][0] - 1e-9:     # stale: push back with its true gain
            if g > 0:
                heapq.heappush(heap, (-g, c))
            continue
        if g > 0:
            chosen.append(int(c))
            covered[rows] = True
    return chosen


def reduced_cover(structure: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """The cover problem of `structure` made small, and the sites it keeps: sites whose reach
    lies inside another's are dropped (the other can hold any community they could: no split is
    lost, only walks may differ), then units whose sites include another unit's sites (covering
    that one covers them)."""
    cols = structure.tocsc()
    shared = (cols.T @ cols).toarray()
    size = np.diag(shared).copy()
    inside = shared >= size[:, None] - 0.5             # [a, b]: a's reach lies inside b's
    np.fill_diagonal(inside, False)
    order = np.lexsort((np.arange(len(size)), -size))  # larger reaches first, ties by index
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    dropped = (inside & (rank[None, :] < rank[:, None])).any(axis=1)
    sites = np.flatnonzero(~dropped)
    rows = structure[:, sites].tocsr()
    shared = (rows @ rows.T).toarray()
    size = np.diag(shared).copy()
    contains = shared >= size[None, :] - 0.5           # [u, v]: u's sites include v's
    np.fill_diagonal(contains, False)
    same = contains & contains.T
    implied = (contains & ~same).any(axis=1) | (same & np.tri(len(size), k=-1, dtype=bool)).any(axis=1)
    return rows[~implied].tocsr(), sites


def cover_lp(matrix: sp.csr_matrix):
    """The set cover's LP relaxation of `matrix` (rows x columns, 0/1), as scipy's `linprog`
    result. HiGHS's interior point (with its crossover) on large covers, its default (simplex)
    on small ones: the same optimum, but on thin cities' covers of ~200,000 entries the
    interior point takes a third of the time (motorway's 1.73 -> 0.56 s), while on covers of a
    few thousand entries the simplex is faster."""
    from scipy.optimize import linprog

    n_rows, n = matrix.shape
    return linprog(np.ones(n), A_ub=-matrix, b_ub=-np.ones(n_rows), bounds=(0, 1),
                   method="highs-ipm" if matrix.nnz > _IPM_ENTRIES else "highs")


def min_cover(structure: sp.csr_matrix) -> list[int]:
    """
    A minimum set of candidates covering every unit that reaches one (HiGHS on the cover problem
    made small by `reduced_cover`, the root node only, a count, so the same cover anywhere). The
    MIP gets only the columns that its LP relaxation uses (RENS, a rounding HiGHS's own root
    heuristics run too, on the whole problem): on the thin cities 28 centers against 29 on
    motorway, the same 22 and 10 on sprawl and harbour, in 2.5-4 s against 6.6-7.4 s; on
    city-shaped covers the root node of the whole problem often found no cover at all. The
    greedy cover, which takes most newly covered people first, needs 36 centers where 25 do on
    the river city at 3.6 km/h. Failing on the LP's columns, the MIP gets all of them; empty
    when that finds no cover at the root either.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    rows = sp.csr_matrix(structure, dtype="float64")
    rows = rows[np.diff(rows.indptr) > 0]
    if rows.shape[0] == 0:
        return []
    rows.data[:] = 1.0
    small, kept = reduced_cover(rows)
    lp = cover_lp(small)
    every = np.arange(small.shape[1])
    used = np.flatnonzero(lp.x > 1e-6) if lp.status == 0 else every
    for columns in ([used, every] if len(used) < len(every) else [every]):
        res = milp(np.ones(len(columns)), integrality=np.ones(len(columns)), bounds=Bounds(0, 1),
                   constraints=[LinearConstraint(small[:, columns], 1, np.inf)],
                   options={"node_limit": 1})
        if res.x is not None:
            return np.sort(kept[columns[res.x > 0.5]]).tolist()
    return []


def circle_packing(minutes: sp.csr_matrix, pop: np.ndarray, adjacency: sp.csr_matrix | None, *,
                   floor: float, cap: float, sliver: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """
    Communities that are nearly whole circles, no two sharing a unit. Greedily the candidate
    whose free residents within the limit gather most (counted up to `cap`; ties to the lower
    index) takes them nearest first up to `cap`, while that holds at least `floor`. Then each
    unit of a piece of free units (connected in `adjacency`) holding fewer than `sliver`
    residents joins the cheapest bordering circle whose center reaches it while the circle stays
    within `hi`, for a few rounds: the gaps between circles are too thin to be communities.

    Written here because it is a heuristic of this planner's own (no library packs reach sets
    under population bounds); an exact packing is a set-packing program far larger than the
    windows CP-SAT answers in time.

    Returns the circle of each unit (-1: free) and the circles' centers (candidate indices).
    """
    pop = np.asarray(pop, dtype="float64")
    n_units, n_cand = minutes.shape
    csc = minutes.tocsc()
    csc.sort_indices()
    column = np.repeat(np.arange(n_cand), np.diff(csc.indptr))
    gather = np.bincount(column, weights=pop[csc.indices], minlength=n_cand)
    label = np.full(n_units, -1, dtype="int64")
    centers: list[int] = []
    while True:
        j = int(np.argmax(np.minimum(gather, cap)))
        if min(gather[j], cap) < floor:
            break
        rows, mins = csc.indices[row_slice(csc, j)], csc.data[row_slice(csc, j)]
        rows, mins = rows[label[rows] < 0], mins[label[rows] < 0]
        rows = rows[np.lexsort((rows, mins))]
        take = rows[np.cumsum(pop[rows]) <= cap]
        gather[j] = -np.inf                     # a center once, or never where a big unit overshoots
        if pop[take].sum() < floor:
            continue
        label[take] = len(centers)
        centers.append(j)
        at = entries_of(minutes.indptr, take)
        lost = np.repeat(pop[take], np.diff(minutes.indptr)[take])
        gather -= np.bincount(minutes.indices[at], weights=lost, minlength=n_cand)
    center = np.asarray(centers, dtype="int64")
    if adjacency is not None and len(center):
        _give_slivers(minutes, pop, adjacency, label, center, sliver=sliver, hi=hi)
    return label, center


def _give_slivers(minutes: sp.csr_matrix, pop: np.ndarray, adjacency: sp.csr_matrix,
                  label: np.ndarray, center: np.ndarray, *, sliver: float, hi: float) -> None:
    """`circle_packing`'s second step, in place on `label`."""
    popk = np.bincount(label[label >= 0], weights=pop[label >= 0], minlength=len(center))
    adjacency = sp.csr_matrix(adjacency)
    for _ in range(_SLIVER_ROUNDS):
        free = np.flatnonzero(label < 0)
        if not len(free):
            return
        _, piece = connected_components(adjacency[free][:, free], directed=False)
        small = free[np.bincount(piece, weights=pop[free])[piece] < sliver]
        edges = adjacency[small].tocoo()
        unit, circle = small[edges.row], label[edges.col]
        unit, circle = unit[circle >= 0], circle[circle >= 0]
        cost, found = lookup(minutes, unit, center[circle])
        moved = False
        for i in np.lexsort((circle, cost, unit)):
            u, k = int(unit[i]), int(circle[i])
            if found[i] and label[u] < 0 and popk[k] + pop[u] <= hi:
                label[u], popk[k], moved = k, popk[k] + pop[u], True
        if not moved:
            return
