"""Min-cost-flow assignment with soft population bounds, re-siting, and stray pieces."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from covplan._sparse import lookup
from ortools.graph.python import min_cost_flow
from scipy.sparse.csgraph import connected_components

_COST_SCALE = 100           # min-cost flow needs integers: centi-minutes per person
_BALANCE_PENALTY = 1_000.0  # flow: minutes per person outside the band, so balance comes first
_SETTLE_ROUNDS = 3          # flow / re-site rounds


def assign_by_flow(pop: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray,
                   per_person: sp.csr_matrix, centers: np.ndarray,
                   first: int | None = None) -> np.ndarray:
    """
    Units -> index into `centers` by min-cost flow with soft population bounds [lo, hi] (one
    pair for all centers, or one per center); each unit goes wholly to the center that got most
    of it (people-less units: the cheapest). -1 for units no center reaches. With `first`, the
    center at that position is filled to its lower bound before the others (twice the reward).
    """
    n, k = per_person.shape[0], len(centers)
    col_of = np.full(per_person.shape[1], -1, dtype="int64")
    col_of[centers] = np.arange(k)
    rows = np.repeat(np.arange(n), np.diff(per_person.indptr))
    c = col_of[per_person.indices]
    keep = c >= 0
    u, c = rows[keep], c[keep]
    unit_cost = np.round(per_person.data[keep] * _COST_SCALE).astype("int64")
    pop = pop.astype("int64")
    active = pop[u] > 0
    supply = np.zeros(n, dtype="int64")
    supply[u[active]] = pop[u[active]]
    total = int(supply.sum())
    lo = np.ceil(np.broadcast_to(np.asarray(lo, dtype="float64"), (k,))).astype("int64")
    hi = np.floor(np.broadcast_to(np.asarray(hi, dtype="float64"), (k,))).astype("int64")
    big = int(_BALANCE_PENALTY * _COST_SCALE)
    sink, mid = n + k, np.arange(k) + n
    tails = [u[active], mid, mid, mid]
    heads = [c[active] + n, np.full(k, sink), np.full(k, sink), np.full(k, sink)]
    caps = [pop[u[active]], lo, np.maximum(hi - lo, 0), np.full(k, total)]
    reward = np.full(k, -big)
    if first is not None:
        reward[first] *= 2
    costs = [unit_cost[active], reward, np.zeros(k, "int64"), np.full(k, big)]
    flow = min_cost_flow.SimpleMinCostFlow()
    arcs = flow.add_arcs_with_capacity_and_unit_cost(*(np.concatenate(x).astype("int64")
                                                       for x in (tails, heads, caps, costs)))
    supplies = np.zeros(n + k + 1, dtype="int64")
    supplies[:n], supplies[sink] = supply, -total
    flow.set_nodes_supplies(np.arange(n + k + 1), supplies)
    status = flow.solve()
    if status != flow.OPTIMAL:
        msg = f"the assignment flow failed with status {status}; please report this instance."
        raise RuntimeError(msg)
    sent = np.zeros(len(u), dtype="int64")
    sent[active] = flow.flows(arcs[:int(active.sum())])
    order = np.lexsort((c, unit_cost, -sent, u))
    first = np.unique(u[order], return_index=True)[1]
    label = np.full(n, -1, dtype="int64")
    label[u[order][first]] = c[order][first]
    return label


def relocate(cnt: np.ndarray, cost: np.ndarray, size: np.ndarray, centers: np.ndarray,
              blocked: np.ndarray | None = None) -> np.ndarray:
    """
    Each community's cheapest free candidate reaching all its members, all distinct (ties to the
    first candidate); those with the fewest options choose first. One without a free option
    keeps its center (or, having none, takes its cheapest option).
    """
    feasible = cnt == size[:, None]
    # Each community's options sorted by cost, then candidate: its first free one is its choice,
    # found by skipping the few taken (scanning a dense row per community took 12 % of a run).
    rows, cols = np.nonzero(feasible)
    costs = cost[rows, cols]
    order = np.lexsort((cols, costs, rows))
    cols, finite = cols[order].tolist(), np.isfinite(costs[order]).tolist()
    start = np.searchsorted(rows[order], np.arange(len(size) + 1)).tolist()
    new = centers.copy()
    used = (np.zeros(cnt.shape[1], dtype=bool) if blocked is None else blocked).tolist()
    for k in np.lexsort((np.arange(len(size)), -size, feasible.sum(axis=1))).tolist():
        new[k] = _first_free(cols, finite, used, start[k], start[k + 1], int(new[k]))
        used[new[k]] = True
    return new


def _first_free(cols: list[int], finite: list[bool], used: list[bool], lo: int, hi: int,
                current: int) -> int:
    """The first free finite option in cols[lo:hi] (sorted by cost); else `current`, or the
    cheapest option where `current` is none."""
    for i in range(lo, hi):
        if not finite[i]:
            break
        if not used[cols[i]]:
            return cols[i]
    if current < 0 and hi > lo and finite[lo]:
        return cols[lo]
    return current


def tallies(label: np.ndarray, n_comm: int, structure: sp.csr_matrix,
             weighted: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per community and candidate: members the candidate reaches, and their summed cost."""
    # Bin counts over (community, candidate) keys: the same sums, in the same order, as a
    # one-hot matrix product, without building two sparse products per call.
    return (_community_sums(label, n_comm, structure).astype("int32"),
            _community_sums(label, n_comm, weighted))


def _community_sums(label: np.ndarray, n_comm: int, matrix: sp.csr_matrix) -> np.ndarray:
    n_cand = matrix.shape[1]
    owner = np.repeat(label, np.diff(matrix.indptr))
    keep = owner >= 0
    key = owner[keep] * n_cand + matrix.indices[keep]
    return np.bincount(key, weights=matrix.data[keep], minlength=n_comm * n_cand).reshape(n_comm, n_cand)


def settle(pop: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray, per_person: sp.csr_matrix,
            structure: sp.csr_matrix, weighted: sp.csr_matrix, centers: np.ndarray,
            blocked: np.ndarray | None = None,
            first: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Alternate flow assignment and re-siting; (centers, index into centers per unit). `first`
    as in `assign_by_flow`."""
    label = assign_by_flow(pop, lo, hi, per_person, centers, first)
    for _ in range(_SETTLE_ROUNDS):
        cnt, cost = tallies(label, len(centers), structure, weighted)
        new = relocate(cnt, cost, np.bincount(label[label >= 0], minlength=len(centers)),
                        centers, blocked)
        if np.array_equal(new, centers):
            break
        centers = new
        label = assign_by_flow(pop, lo, hi, per_person, centers, first)
    return centers, label


def split_pieces(label: np.ndarray, adjacency: sp.csr_matrix | None) -> np.ndarray:
    """Relabel so that every connected piece of a community is a community of its own."""
    if adjacency is None:
        return label
    coo = adjacency.tocoo()
    same = (label[coo.row] == label[coo.col]) & (label[coo.row] >= 0)
    graph = sp.csr_matrix((np.ones(int(same.sum())), (coo.row[same], coo.col[same])),
                          shape=adjacency.shape)
    _, comp = connected_components(graph, directed=False)
    out = np.full(len(label), -1, dtype="int64")
    out[label >= 0] = np.unique(comp[label >= 0], return_inverse=True)[1]
    return out


def attach_strays(label: np.ndarray, pop: np.ndarray, weighted: sp.csr_matrix,
                   adjacency: sp.csr_matrix | None, centers: np.ndarray,
                   strict: bool = True) -> np.ndarray | None:
    """
    Give every stray piece (not its community's most populous one) to a bordering community
    whose center reaches all of it, cheapest first. With `strict`, None if one can't go
    anywhere; otherwise it stays where it is.
    """
    if adjacency is None:
        return label
    label = label.copy()
    served = label >= 0
    for _ in range(4):
        piece = split_pieces(label, adjacency)
        n_piece = int(piece.max()) + 1
        owner = np.zeros(n_piece, dtype="int64")
        owner[piece[served]] = label[served]
        weight = np.bincount(piece[served], weights=pop[served] + 1e-6, minlength=n_piece)
        order = np.lexsort((np.arange(n_piece), -weight))[::-1]
        main = np.zeros(int(label.max()) + 1, dtype="int64")
        main[owner[order]] = order                    # the heaviest piece is written last
        moved, stuck = False, False
        for q in np.flatnonzero(main[owner] != np.arange(n_piece)):
            units = np.flatnonzero(piece == q)
            touch = np.unique(label[adjacency[units].indices])
            best, best_cost = -1, np.inf
            for t in touch[(touch >= 0) & (touch != owner[q])]:
                cost, found = lookup(weighted, units, np.full(len(units), centers[t]))
                if found.all() and cost.sum() < best_cost:
                    best, best_cost = int(t), float(cost.sum())
            if best >= 0:
                label[units], moved = best, True
            stuck |= best < 0
        if stuck and strict:
            return None
        if not moved:
            break
    if strict and len(np.unique(split_pieces(label, adjacency)[served])) != len(np.unique(label[served])):
        return None
    return label
