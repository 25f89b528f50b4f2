"""
What the neighbourhood of a tiny community allows: a proof for each community the planner kept
below the tiny-community floor (`min_pop_exception` of the target) that is not a proven
exception.

Such a community breaks a rule, and no bound shows that every plan must have it: its residents
reach sites that gather enough people. What can be proven is local. Take the community and its
neighbours (one ring; two where a budget is given), keep the rest of the plan as it is (the
other tiny communities too), and ask the linear program of
`covplan.solve.packing.least_outside_band` for the fewest residents outside the band in any
split of those communities in which none is below the floor: on their units only, with the
sites that no community outside them uses, nobody from outside joining. No solution proves that the
community cannot be cleared without changing communities further out; a solution's optimum, set
against the residents outside the band there now, is at least what clearing it costs in balance.
Neither is a claim about every plan: one that also changes communities further out may do better.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from covplan.solve.bounds import communities_touching, piece_gather
from covplan.solve.packing import least_outside_band

logger = logging.getLogger(__name__)

CHECK_WORK = {1: 1_000_000, 2: 0}
                            # the programs of one plan, per ring, in their work
                            # (`least_outside_band`, HiGHS's interior point). One ring proves
                            # most, and in the plan only one ring is checked: islands'
                            # merge/split, 324,000 and 460,000, 2.6-2.8 s (the dual simplex took
                            # 272 s on the second and stopped); Chengdu's, 0.1 s. Two rings mostly
                            # give a cost, at more time than a plan near its 15 s can spare
                            # (Chengdu's merge/split, 31,000 and 72,000: 0.3 s more; the demo's
                            # at 3 km/h, 124,000: 1 s; islands', 1.5-1.7 M: 15-17 s); a budget
                            # here checks them too
CHECK_MAX_WORK = {1: 500_000, 2: 100_000}   # ... and of one program


@dataclass(frozen=True, slots=True)
class TinyCheck:
    """One neighbourhood of a tiny community, and what the program proved there."""

    label: int               # the tiny community
    rings: int               # rings of neighbours around it
    communities: int         # communities of the neighbourhood, itself included
    residents: int           # their residents
    outside_now: int         # of them, in communities outside the band in the plan
    outside_least: float     # at least this many outside the band in any split without a tiny
                             # community, the rest of the plan unchanged; inf: no such split

    @property
    def cost(self) -> float:
        """At least this many more residents outside the band if the neighbourhood is split
        without a tiny community (inf: it cannot be)."""
        return self.outside_least - self.outside_now


def check_tiny(labels: np.ndarray, center_of: np.ndarray, tiny: np.ndarray, regular: np.ndarray,
               structure: sp.spmatrix, pop: np.ndarray, adjacency: sp.spmatrix,
               forced: np.ndarray, *, min_pop: float, max_pop: float,
               tiny_pop: float) -> list[TinyCheck]:
    """
    The neighbourhood checks of the communities `tiny` (labels): every one ring, then every
    two rings, smallest first, while each ring's budget lasts (`CHECK_WORK`; a check over what
    is left, or over `CHECK_MAX_WORK`, is skipped, and so is that community's larger ring).

    `labels` gives each unit's community (-1: none), `center_of` each community's site, and
    `regular` whether a community may change (exceptions are planned apart: they stay, like
    the rest outside the neighbourhood; so do the other tiny communities). `structure` is
    units x sites (stored = reaches).
    """
    labels = np.asarray(labels)
    regular = np.asarray(regular, bool)
    pop = np.asarray(pop, dtype="float64")
    structure = sp.csr_matrix(structure)
    adjacency = sp.csr_matrix(adjacency)
    n_comms = len(center_of)
    served = np.flatnonzero(labels >= 0)
    touch = communities_touching(labels, adjacency, n_comms)
    residents = np.bincount(labels[served], weights=pop[served], minlength=n_comms)
    outside = (residents < min_pop) | (residents > max_pop)
    budget = {rings: float(work) for rings, work in CHECK_WORK.items()}
    checks: list[TinyCheck] = []
    order = sorted((int(k) for k in tiny), key=lambda k: (residents[k], k))
    grown = {t: np.arange(n_comms) == t for t in order}
    tried = dict.fromkeys(order, True)
    # The other tiny communities stay as they are, like the rest: each proof is about clearing
    # this one, not a group whose other members might be what cannot go.
    may_change = regular.copy()
    may_change[order] = False
    for rings in range(1, max(CHECK_WORK) + 1):     # every community's one ring before any two
        for t in order:
            before = grown[t]
            grown[t] = before | (((touch @ before.astype("float64")) > 0) & may_change)
            if not tried[t] or budget[rings] <= 0 or (rings > 1 and (grown[t] == before).all()):
                continue
            found, work = _least_outside(grown[t], labels, center_of, structure, pop, adjacency,
                                         forced, min_pop=min_pop, max_pop=max_pop,
                                         tiny_pop=tiny_pop,
                                         max_work=min(budget[rings], CHECK_MAX_WORK[rings]))
            if found is None:
                logger.debug("tiny community %d, %d rings: not tried (work %.0f, %.0f left)",
                             t, rings, work, budget[rings])
                tried[t] = False
                continue
            budget[rings] -= work
            inside = np.flatnonzero(grown[t])
            checks.append(TinyCheck(t, rings, len(inside), int(residents[inside].sum()),
                                    int(residents[inside][outside[inside]].sum()), found))
            logger.debug("tiny community %d, %d rings (%d communities): at least %s outside the "
                         "band, %d now", t, rings, len(inside), found, checks[-1].outside_now)
    return checks


def _least_outside(comms: np.ndarray, labels: np.ndarray, center_of: np.ndarray,
                   structure: sp.csr_matrix, pop: np.ndarray, adjacency: sp.csr_matrix,
                   forced: np.ndarray, **program) -> tuple[float | None, float]:
    """`least_outside_band` over the units of the communities `comms`, on the sites that no
    other community uses, with pieces counted inside them and nobody from outside."""
    rows = np.flatnonzero(comms[np.maximum(labels, 0)] & (labels >= 0))
    taken = np.zeros(structure.shape[1], dtype=bool)
    taken[np.asarray(center_of)[~comms]] = True
    sub = structure[rows].tocoo()
    keep = ~taken[sub.col]
    r, c = sub.row[keep].astype("int64"), sub.col[keep].astype("int64")
    order = np.lexsort((c, r))
    r, c = r[order], c[order]
    if not len(r):
        return None, 0.0
    gathered = piece_gather(r, c, pop[rows], adjacency[rows][:, rows], structure.shape[1])
    sites, col = np.unique(c, return_inverse=True)
    piece = sp.csr_matrix((gathered, (r, col)), shape=(len(rows), len(sites)))
    return least_outside_band(piece, pop[rows], np.asarray(forced, bool)[rows],
                              np.zeros(len(sites)), **program)
