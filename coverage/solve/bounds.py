"""
What no plan can beat: ceilings on coverage and on balance, proven from the reach matrix alone.

A community's residents all reach its center within the limit, so a community is never larger
than ``gather[c]``, the residents within the limit of its center c (in its district). A unit
every reachable site of which gathers fewer than the band's floor can therefore only be in an
undersized community, whatever the plan: its residents are *forced undersized*. A unit that
reaches no site at all can be covered by no plan. Both figures are exact consequences of the
walking rule, so notes and reports may say "cannot" about them.

Communities are also contiguous, so with the unit adjacency the bound is tighter: a community
with center c holding unit u lies inside the connected piece of u among the units that reach c.
The pieces of all (unit, site) pairs come from one connected-components pass over a graph whose
nodes are the stored pairs and whose edges join (u, c) and (v, c) for adjacent u, v: its size
follows the stored pairs times the adjacency degree, nothing quadratic.

Contiguity itself can be out of reach: units whose only reachable site is the same c must all
be in c's community in any plan that covers them; when no chain of units reaching c joins
them, that community cannot be contiguous (``split_sites``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

if TYPE_CHECKING:
    from covplan.reach.matrix import ReachMatrix


@dataclass(frozen=True, slots=True, eq=False)
class FeasibilityBound:
    """Per-unit proofs and the ceilings they give. Arrays are aligned with the reach units."""

    gather: np.ndarray            # per candidate: residents (of its district) within the limit
    best_gather: np.ndarray       # per unit: the most a community holding it can gather (0: none)
    contiguous: bool              # whether best_gather counts only the unit's connected piece
    reachable: np.ndarray         # per unit: reaches at least one site of its district
    forced_undersized: np.ndarray  # per unit: reaches sites, but none gathers min_pop
    island: np.ndarray            # per unit: on a network component apart from the main one
    pop: np.ndarray               # per unit residents
    min_pop: float
    sole_site: np.ndarray = None  # per unit: its only reachable site (-1: none or several)
    split_sites: np.ndarray = None  # sites whose sole-site units no chain reaching them joins

    @property
    def population_total(self) -> int:
        return self.figures()["population_total"]

    @property
    def forced_undersized_population(self) -> int:
        return self.figures()["forced_undersized_population"]

    @property
    def unreachable_population(self) -> int:
        return self.figures()["unreachable_population"]

    @property
    def coverage_ceiling(self) -> float:
        """Share of residents some plan could cover: those reaching at least one site."""
        return self.figures()["coverage_ceiling"]

    @property
    def within_tolerance_pop_share_ceiling(self) -> float:
        """Share of residents some plan could put in a community within the band: everyone but
        the forced-undersized and those no site reaches (who are in no community at all)."""
        return self.figures()["within_tolerance_pop_share_ceiling"]

    def figures(self, mask: np.ndarray | None = None) -> dict:
        """The ceilings of the units in `mask` (all units without one), for a report."""
        m = np.ones(len(self.pop), dtype=bool) if mask is None else np.asarray(mask, bool)
        pop = self.pop[m]
        total = int(pop.sum())
        forced = int(pop[self.forced_undersized[m]].sum())
        unreachable = int(pop[~self.reachable[m]].sum())
        return {
            "population_total": total,
            "coverage_ceiling": 1.0 - unreachable / total if total else 1.0,
            "within_tolerance_pop_share_ceiling": (1.0 - (forced + unreachable) / total
                                                   if total else 1.0),
            "forced_undersized_population": forced,
            "unreachable_population": unreachable,
            "island_population": int(pop[self.island[m]].sum()),
        }


def feasibility_bound(reach: ReachMatrix, *, min_pop: float,
                      district_of: np.ndarray | None = None,
                      candidate_district: np.ndarray | None = None,
                      component: np.ndarray | None = None,
                      adjacency: sp.spmatrix | None = None) -> FeasibilityBound:
    """
    Ceilings on coverage and balance from the walking rule alone.

    Parameters
    ----------
    reach
        Units x candidates minutes (stored = within the limit).
    min_pop
        The band's floor: a community below it is undersized.
    district_of, candidate_district
        District index per unit and per candidate: a community keeps to one district, so only
        pairs inside one district count (None: one district).
    component
        Network component per node (0 = the main network), to flag units cut off from it.
    adjacency
        Units x units, symmetric: with it, a community is bounded by the connected piece of
        its units that reach its center (the contiguity rule); without it, by all of them.
    """
    minutes = reach.minutes.tocsr()
    pop = reach.pop.astype("float64")
    n_units, n_cand = minutes.shape
    rows = np.repeat(np.arange(n_units), np.diff(minutes.indptr))
    cols = minutes.indices
    same = np.ones(len(cols), dtype=bool)
    if district_of is not None and candidate_district is not None:
        same = np.asarray(district_of)[rows] == np.asarray(candidate_district)[cols]
    rows, cols = rows[same], cols[same]
    gather = np.bincount(cols, weights=pop[rows], minlength=n_cand)
    pair_gather = gather[cols] if adjacency is None else _piece_gather(rows, cols, pop, adjacency, n_cand)
    # Per unit the largest gather of a site it reaches: a max over each row's entries.
    best = sp.csr_matrix((pair_gather + 1.0, (rows, cols)), shape=(n_units, n_cand))
    best_gather = np.asarray(best.max(axis=1).todense()).ravel() - 1.0
    reachable = np.bincount(rows, minlength=n_units) > 0
    best_gather = np.where(reachable, best_gather, 0.0)
    forced = reachable & (best_gather < min_pop - 1e-9)
    island = np.zeros(n_units, dtype=bool)
    if component is not None:
        node = reach.units["node"].to_numpy()
        on = node >= 0
        island[on] = np.asarray(component)[node[on]] != 0
    sole = np.full(n_units, -1, dtype="int64")
    once = np.bincount(rows, minlength=n_units) == 1
    sole[rows[once[rows]]] = cols[once[rows]]
    split = (np.zeros(0, dtype="int64") if adjacency is None
             else _split_sites(sole, rows, cols, adjacency))
    return FeasibilityBound(gather=gather, best_gather=best_gather, contiguous=adjacency is not None,
                            reachable=reachable,
                            forced_undersized=forced, island=island,
                            pop=reach.pop.astype("int64"), min_pop=float(min_pop),
                            sole_site=sole, split_sites=split)


def _split_sites(sole: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                 adjacency: sp.spmatrix) -> np.ndarray:
    """Sites c whose sole-site units lie in different connected pieces of the units reaching c:
    a plan covering them all puts them in c's community, which then cannot be contiguous."""
    sites, counts = np.unique(sole[sole >= 0], return_counts=True)
    adjacency = sp.csr_matrix(adjacency)
    order = np.argsort(cols, kind="stable")          # the pairs by site, once
    start = np.searchsorted(cols[order], sites[counts > 1])
    stop = np.searchsorted(cols[order], sites[counts > 1], side="right")
    split = []
    for c, a, b in zip(sites[counts > 1], start, stop):
        reaching = np.unique(rows[order[a:b]])
        _, piece = connected_components(adjacency[reaching][:, reaching], directed=False)
        mine = np.isin(reaching, np.flatnonzero(sole == c))
        if len(np.unique(piece[mine])) > 1:
            split.append(int(c))
    return np.asarray(split, dtype="int64")


_EDGE_CHUNK = 2_000_000     # pair look-ups per block, to bound the memory of the edge build


def _piece_gather(rows: np.ndarray, cols: np.ndarray, pop: np.ndarray, adjacency: sp.spmatrix,
                  n_cand: int) -> np.ndarray:
    """Per stored pair (u, c): residents of u's connected piece among the units reaching c."""
    n_pairs = len(rows)
    keys = rows.astype("int64") * n_cand + cols          # sorted: CSR order, rows then columns
    per_unit = np.bincount(rows, minlength=adjacency.shape[0])
    first = np.r_[0, np.cumsum(per_unit)[:-1]]
    sym = sp.csr_matrix(adjacency, dtype="float64")
    upper = sp.triu(sym + sym.T, k=1).tocoo()             # every edge once, whichever way given
    heads, tails = [], []
    edge_u, edge_v = upper.row.astype("int64"), upper.col.astype("int64")
    lengths = per_unit[edge_u]
    cum = np.cumsum(lengths)
    bounds = np.unique(np.r_[0, np.searchsorted(cum, np.arange(_EDGE_CHUNK, cum[-1] if len(cum) else 0,
                                                                _EDGE_CHUNK)), len(edge_u)])
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a >= b:
            continue
        u, v, n = edge_u[a:b], edge_v[a:b], lengths[a:b]
        offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        entry = np.repeat(first[u], n) + offset           # every pair (u, c) of the block's edges
        wanted = np.repeat(v, n) * n_cand + cols[entry]   # ... and its twin (v, c), if stored
        pos = np.minimum(np.searchsorted(keys, wanted), n_pairs - 1)
        found = keys[pos] == wanted
        heads.append(entry[found])
        tails.append(pos[found])
    head = np.concatenate(heads) if heads else np.zeros(0, "int64")
    tail = np.concatenate(tails) if tails else np.zeros(0, "int64")
    graph = sp.csr_matrix((np.ones(len(head), dtype="int8"), (head, tail)), shape=(n_pairs, n_pairs))
    _, piece = connected_components(graph, directed=False)
    return np.bincount(piece, weights=pop[rows])[piece]


_COVER_TIME_LIMIT_S = 10.0   # per set cover; past it HiGHS's dual bound still proves a floor


def min_cover_count(structure: sp.spmatrix) -> int:
    """
    The fewest columns that together reach every row of `structure` (rows x columns, stored =
    reaches): exact set cover by HiGHS, or, when its time limit stops it first, the rounded-up
    dual bound, so the figure is always a proven floor. Rows reaching no column are ignored.

    A grid holding a resident forced undersized is undersized whichever station it has, and
    its station is a node that resident reaches, one station per grid: the grids holding the
    forced residents of a community are at least this count of their reach (`plan_grids`'
    bound on the share of grids in band).
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    matrix = sp.csr_matrix(structure, dtype="float64")
    matrix = matrix[np.diff(matrix.indptr) > 0]
    if matrix.shape[0] == 0:
        return 0
    matrix.data[:] = 1.0
    matrix = matrix[:, np.flatnonzero(np.diff(matrix.tocsc().indptr) > 0)]
    n = matrix.shape[1]
    res = milp(np.ones(n), integrality=np.ones(n), bounds=Bounds(0, 1),
               constraints=[LinearConstraint(matrix, 1, np.inf)],
               options={"time_limit": _COVER_TIME_LIMIT_S})
    floor = getattr(res, "mip_dual_bound", None)
    if floor is None or not np.isfinite(floor):
        return 1     # every row reaches a column, so at least one (HiGHS proved nothing more)
    return max(1, int(np.ceil(floor - 1e-6)))
