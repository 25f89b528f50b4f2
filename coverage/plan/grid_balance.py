"""
Balance of the grids inside one community (`covplan.plan.grids`): packing balanced grids where
walks are short of residents, and a repair that moves units between adjacent grids.

`pack` is for sparse communities, where a 5-minute walk from any node gathers barely more than
a grid's floor: the partition core, which spreads residents evenly, leaves most grids there just
short. Packing takes the scarcest station first (the one whose walk gathers the fewest residents,
still enough) and grows a grid from its nearest resident outwards, by walking minutes and
contiguously, only to the band's floor, so the walks around it keep enough residents for theirs.

`rebalance` takes moves that cut the grids outside the band, then the residents beyond its
edges: one boundary unit to a neighbouring grid, a whole grid into a neighbour, or two such
moves in a row (a unit passed on along a chain). A move keeps every grid contiguous and every
resident within the walk of some node (a station) of their grid, so it never trades coverage
for balance. Both are deterministic: candidates and moves are tried in index order.
"""

from __future__ import annotations

import heapq
import logging

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = ["pack", "rebalance"]

logger = logging.getLogger(__name__)

_ROUNDS = 200               # improving moves per community at most (each strictly improves)
# Moves looked at per community at most (counted, not timed, so a seed still gives one plan):
# the demo's busiest community looks at about 9,000; one of finer units stops early.
_WORK = 50_000


class _State:
    """Grids of one community as member sets, populations and per-candidate reach counts."""

    def __init__(self, label: np.ndarray, pop: np.ndarray, adjacency: sp.csr_matrix,
                 reach: sp.csr_matrix, band: tuple[float, float], frozen: set[int]) -> None:
        self.values = sorted(int(v) for v in np.unique(label[label >= 0]))
        index = {v: i for i, v in enumerate(self.values)}
        self.grid = np.array([index[int(v)] if v >= 0 else -1 for v in label], dtype="int64")
        self.frozen = np.array([v in frozen for v in self.values], dtype=bool)
        self.pop = pop.astype("float64")
        self.lo, self.hi = band
        self.neighbours = [adjacency.indices[adjacency.indptr[u]:adjacency.indptr[u + 1]]
                           for u in range(len(label))]
        self.cols = [reach.indices[reach.indptr[u]:reach.indptr[u + 1]] for u in range(len(label))]
        n, n_cols = len(self.values), reach.shape[1]
        self.members = [set(np.flatnonzero(self.grid == g).tolist()) for g in range(n)]
        self.gpop = np.array([self.pop[list(m)].sum() for m in self.members])
        # cover[g, c]: members of g reaching candidate c; need[g]: members reaching any
        self.cover = np.zeros((n, n_cols), dtype="int64")
        self.need = np.zeros(n, dtype="int64")
        self.work = 0       # moves looked at (`_WORK`)
        for u, g in enumerate(self.grid):
            if g >= 0 and len(self.cols[u]):
                self.cover[g, self.cols[u]] += 1
                self.need[g] += 1

    def dist(self, p: float) -> float:
        return 0.0 if p <= 0 else max(self.lo - p, p - self.hi, 0.0)

    def key(self) -> tuple[int, float]:
        d = [self.dist(p) for p in self.gpop]
        return sum(x > 0 for x in d), round(sum(d), 6)

    def walkable(self, g: int, units: list[int]) -> bool:
        """Some candidate reaches every member of g and every unit of `units` that reaches any."""
        reaching = [u for u in units if len(self.cols[u])]
        if not reaching:
            return True
        row = self.cover[g].copy()
        for u in reaching:
            row[self.cols[u]] += 1
        return bool((row == self.need[g] + len(reaching)).any())

    def connected_without(self, g: int, u: int) -> bool:
        rest = self.members[g] - {u}
        if not rest:
            return True
        start = next(iter(rest))
        seen, stack = {start}, [start]
        while stack:
            for v in self.neighbours[stack.pop()]:
                if v in rest and v not in seen:
                    seen.add(v)
                    stack.append(v)
        return len(seen) == len(rest)

    def move(self, units: list[int], target: int) -> None:
        for u in units:
            g = self.grid[u]
            self.members[g].discard(u)
            self.members[target].add(u)
            self.gpop[g] -= self.pop[u]
            self.gpop[target] += self.pop[u]
            if len(self.cols[u]):
                self.cover[g, self.cols[u]] -= 1
                self.need[g] -= 1
                self.cover[target, self.cols[u]] += 1
                self.need[target] += 1
            self.grid[u] = target

    def moves(self, grids: set[int] | None = None) -> list[tuple[list[int], int]]:
        """Candidate moves (units, target grid) touching `grids` (all without), not yet checked
        for contiguity and walk (`allowed`): each boundary unit to each bordering grid, and each
        grid whole into each bordering grid."""
        out = []
        for g in range(len(self.members)):
            if self.frozen[g] or not self.members[g]:
                continue
            whole = sorted(self.members[g])
            borders: set[int] = set()
            for u in whole:
                targets = {int(self.grid[v]) for v in self.neighbours[u]} - {g, -1}
                targets = {t for t in targets if not self.frozen[t]}
                borders |= targets
                if grids is not None and g not in grids:
                    targets &= grids
                if len(whole) > 1:
                    out += [([u], t) for t in sorted(targets)]
            if grids is not None and g not in grids:
                borders &= grids
            out += [(whole, t) for t in sorted(borders)]
        return out

    def allowed(self, units: list[int], target: int) -> bool:
        g = int(self.grid[units[0]])
        single = len(units) == 1 and len(self.members[g]) > 1
        return (not single or self.connected_without(g, units[0])) and self.walkable(target, units)

    def key_after(self, units: list[int], target: int, dist: np.ndarray) -> tuple[int, float]:
        """The key after moving `units` to `target`, from `dist` (each grid's current distance
        to the band): only the two grids change."""
        g = int(self.grid[units[0]])
        moved = float(self.pop[units].sum())
        before = dist[g] + dist[target]
        a, b = self.dist(self.gpop[g] - moved), self.dist(self.gpop[target] + moved)
        n_out = int((dist > 0).sum()) - (dist[g] > 0) - (dist[target] > 0) + (a > 0) + (b > 0)
        return int(n_out), round(float(dist.sum()) - before + a + b, 6)

    def dists(self) -> np.ndarray:
        return np.array([self.dist(p) for p in self.gpop])

    def labels(self) -> np.ndarray:
        values = np.asarray(self.values, dtype="int64")
        return np.where(self.grid >= 0, values[np.maximum(self.grid, 0)], -1)


def rebalance(label: np.ndarray, pop: np.ndarray, adjacency: sp.csr_matrix,
              reach: sp.csr_matrix, *, band: tuple[float, float],
              frozen: set[int] | None = None) -> np.ndarray:
    """
    Grid labels of one community's units after moves that cut, in order, the grids outside
    `band` and the residents beyond its edges.

    Parameters
    ----------
    label
        Grid label per unit (any non-negative ints; -1: in no grid, left alone). Grids are
        assumed contiguous and within the walk (as the partition core gives them).
    pop, adjacency, reach
        Residents per unit, the units' adjacency and units x station candidates (stored =
        within the walk), all of this community.
    band
        The smallest and largest population of a balanced grid.
    frozen
        Labels of grids to keep as they are (kept from an earlier plan).

    Returns
    -------
    np.ndarray
        Labels from the input's values (a grid merged into another loses its label).
    """
    state = _State(np.asarray(label), np.asarray(pop), adjacency.tocsr(), reach.tocsr(), band,
                   set() if frozen is None else {int(f) for f in frozen})
    for _ in range(_ROUNDS):
        if state.key()[0] == 0 or state.work > _WORK or not _improve(state):
            break
    if state.work > _WORK:
        logger.debug("Grid repair stopped after %d moves looked at", state.work)
    return state.labels()


def _improve(state: _State) -> bool:
    """Take the best single improving move; else the first improving pair of moves whose first
    one touches a grid outside the band. Populations rank the moves; only a move that would
    improve is checked for contiguity and walk."""
    before = state.key()
    dist = state.dists()
    moves = state.moves()
    state.work += len(moves)
    ranked = sorted((state.key_after(units, target, dist), i, units, target)
                    for i, (units, target) in enumerate(moves))
    for key, _, units, target in ranked:
        if key >= before:
            break
        if state.allowed(units, target):
            state.move(units, target)
            return True
    out = {g for g, p in enumerate(state.gpop) if state.dist(p) > 0}
    for units, target in state.moves(out):
        if not state.allowed(units, target):
            continue
        source = int(state.grid[units[0]])
        state.move(units, target)
        dist = state.dists()
        follow = state.moves({source, target})
        state.work += len(follow)
        if state.work > _WORK:
            state.move(units, source)
            return False
        for units2, target2 in follow:
            if state.key_after(units2, target2, dist) < before and state.allowed(units2, target2):
                state.move(units2, target2)
                return True
        state.move(units, source)
    return False


def pack(pop: np.ndarray, adjacency: sp.csr_matrix, reach: sp.csr_matrix, *,
         band: tuple[float, float]) -> np.ndarray:
    """
    Balanced grids packed one by one, scarcest station first: station column per unit, -1 for
    units left to the partition core. Each grid is grown from the resident nearest its station
    by walking minutes, staying contiguous and within the walk, up to the band's floor (never
    past its ceiling); a station hosts one grid.

    Parameters
    ----------
    pop, adjacency, reach
        Residents per unit, the units' adjacency and units x station candidates (minutes;
        stored = within the walk), all of one community.
    band
        The smallest and largest population of a balanced grid.
    """
    lo, hi = band
    pop = np.asarray(pop, dtype="float64")
    adjacency = sp.csr_matrix(adjacency)
    by_col = sp.csc_matrix(reach)
    by_unit = sp.csr_matrix(reach)
    label = np.full(len(pop), -1, dtype="int64")
    # Per candidate, its best piece: (residents, units, minutes); None once it cannot hold a
    # balanced grid. Only candidates reaching a unit just taken are looked at again.
    piece: dict[int, tuple | None] = {}
    stale = set(range(by_col.shape[1]))
    while True:
        for c in sorted(stale):
            piece[c] = _best_piece(c, by_col, label, pop, adjacency, lo)
        stale = set()
        best = None
        for c in sorted(k for k, v in piece.items() if v is not None):
            gather, units, minutes = piece[c]
            if best is not None and gather >= best[0]:
                continue
            grid = _grow(units, minutes, pop, adjacency, lo, hi)
            if grid is not None:
                best = (gather, c, grid)
            else:
                piece[c] = None
        if best is None:
            return label
        _, c, grid = best
        label[grid] = c
        piece[c] = None
        touched = by_unit[grid].indices
        stale = {int(k) for k in np.unique(touched) if piece.get(int(k)) is not None}


def _best_piece(c: int, by_col: sp.csc_matrix, label: np.ndarray, pop: np.ndarray,
                adjacency: sp.csr_matrix, lo: float) -> tuple | None:
    """The most populous connected piece of the open units reaching candidate c, if it holds
    the band's floor: (residents, units, minutes)."""
    units = by_col.indices[by_col.indptr[c]:by_col.indptr[c + 1]]
    minutes = by_col.data[by_col.indptr[c]:by_col.indptr[c + 1]]
    open_ = label[units] < 0
    units, minutes = units[open_], minutes[open_]
    if pop[units].sum() < lo:
        return None
    _, part = connected_components(adjacency[units][:, units], directed=False)
    gather = np.bincount(part, weights=pop[units])
    k = int(np.argmax(gather))
    if gather[k] < lo:
        return None
    inside = part == k
    return float(gather[k]), units[inside], minutes[inside]


def _grow(units: np.ndarray, minutes: np.ndarray, pop: np.ndarray, adjacency: sp.csr_matrix,
          lo: float, hi: float) -> list[int] | None:
    """Units from the nearest outwards by minutes, contiguous, until `lo` (None if not reached)."""
    near = dict(zip(units.tolist(), minutes.tolist()))
    start = int(units[np.lexsort((units, minutes))[0]])
    taken, total, heap = {start}, pop[start], []

    def push(u: int) -> None:
        for v in adjacency.indices[adjacency.indptr[u]:adjacency.indptr[u + 1]]:
            if int(v) in near and int(v) not in taken:
                heapq.heappush(heap, (near[int(v)], int(v)))

    push(start)
    while total < lo and heap:
        _, v = heapq.heappop(heap)
        if v in taken or total + pop[v] > hi:
            continue
        taken.add(v)
        total += pop[v]
        push(v)
    return sorted(taken) if lo <= total <= hi else None
