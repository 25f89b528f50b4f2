"""
A proof that a district cannot have every community within the band, from a linear program.

The walking ceiling counts residents one at a time; the count of centers (`count_shortfall`)
counts sites. Neither sees packing: in a thin strip every 15-minute circle gathers enough
residents, and few enough circles cover everyone, yet circles that cover everyone overlap so
little that some community must fall short. A plan with every regular community in band is a
solution of the linear program below (every variable at its plan value), so when the program
has no solution, no such plan exists:

- y[c] in [0, 1]: site c is the center of a community in band (sites gathering less than the
  band's floor are left out: their communities cannot be in band);
- f[u, c] >= 0: residents of unit u in c's community, f[u, c] <= pop[u] y[c], and every
  resident of u in one: sum over c of f[u, c] = pop[u];
- min_pop y[c] <= sum over u of f[u, c] <= max_pop y[c];
- every unit reaches a center: sum over the sites c it reaches of y[c] >= 1.

Forced-undersized residents are left out: no community in band can hold them.

Then at least one regular community of the district is outside the band; under the rule that
regular communities hold at least the tiny floor, that community keeps at least that many
residents (less the forced ones, who may be among them) out of the band.

No library states this bound; HiGHS (through scipy) solves the program. The interior-point
method answers a strip district of 65,826 residents (889 distinct reach sets, 261 sites) in
about 5 s where the simplex takes a minute; `covplan.solve.bounds.packing_shortfall` runs it
only where covering everyone takes as many centers as the residents fill at the band's floor
(the tight case; elsewhere it is skipped).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

MAX_PAIRS = 150_000      # (unit, site) pairs above which the program is not tried (time)
MAX_ITERATIONS = 200     # interior-point iterations (a count, so the answer is the same anywhere)


def merge_identical_rows(structure: sp.csr_matrix, pop: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Units that reach the same sites, summed: the program is the same (flows are shares)."""
    structure = sp.csr_matrix(structure, dtype="float64")
    structure.sort_indices()
    keys: dict[bytes, int] = {}
    group = np.array([keys.setdefault(structure.indices[structure.indptr[u]:structure.indptr[u + 1]].tobytes(),
                                      len(keys)) for u in range(structure.shape[0])], dtype="int64")
    first = np.unique(group, return_index=True)[1]
    merged = structure[first]
    merged.data[:] = 1.0
    return merged.tocsr(), np.bincount(group, weights=pop, minlength=len(first))


def all_in_band_impossible(structure: sp.csr_matrix, pop: np.ndarray, *, min_pop: float,
                           max_pop: float) -> bool:
    """
    True when no assignment of these units (all of them able to be balanced) to communities
    within [min_pop, max_pop], each served by a site its members reach, exists even as the
    linear program of this module; False when one exists or the program is not tried or not
    answered (no proof either way).

    `structure` is units x sites (stored = reaches), already restricted to the district.
    """
    from scipy.optimize import linprog

    structure = sp.csr_matrix(structure, dtype="float64")
    pop = np.asarray(pop, dtype="float64")
    gathers = np.asarray(structure.T @ pop).ravel()
    structure = structure[:, np.flatnonzero(gathers >= min_pop - 1e-9)].tocsr()
    if (np.diff(structure.indptr) == 0).any():
        return True         # a unit reaches no site gathering the floor: it cannot be in band
    matrix, weight = merge_identical_rows(structure, pop)
    keep = weight > 0
    matrix, weight = matrix[keep], weight[keep]
    pairs = matrix.tocoo()
    n_units, n_sites, n_pairs = matrix.shape[0], matrix.shape[1], pairs.nnz
    if n_pairs == 0 or n_pairs > MAX_PAIRS:
        return False
    # Variables: f (one per pair), then y (one per site).
    f, y = np.arange(n_pairs), n_pairs + np.arange(n_sites)
    site_rows = np.r_[pairs.col, np.arange(n_sites)]
    rows = [
        (site_rows, np.r_[f, y], np.r_[-np.ones(n_pairs), np.full(n_sites, min_pop)], np.zeros(n_sites)),
        (site_rows, np.r_[f, y], np.r_[np.ones(n_pairs), np.full(n_sites, -max_pop)], np.zeros(n_sites)),
        (np.r_[f, f], np.r_[f, y[pairs.col]], np.r_[np.ones(n_pairs), -weight[pairs.row]],
         np.zeros(n_pairs)),
        (pairs.row, y[pairs.col], -np.ones(n_pairs), -np.ones(n_units)),
    ]
    blocks, bounds = [], []
    for r, c, v, b in rows:
        blocks.append(sp.csr_matrix((v, (r, c)), shape=(len(b), n_pairs + n_sites)))
        bounds.append(b)
    a_eq = sp.csr_matrix((np.ones(n_pairs), (pairs.row, f)), shape=(n_units, n_pairs + n_sites))
    res = linprog(np.zeros(n_pairs + n_sites), A_ub=sp.vstack(blocks).tocsr(), b_ub=np.concatenate(bounds),
                  A_eq=a_eq, b_eq=weight,
                  bounds=np.c_[np.zeros(n_pairs + n_sites), np.r_[np.full(n_pairs, np.inf), np.ones(n_sites)]],
                  method="highs-ipm", options={"maxiter": MAX_ITERATIONS})
    logger.debug("all-in-band program: %d reach sets, %d sites, %d pairs: %s", n_units, n_sites,
                 n_pairs, res.message)
    return res.status == 2
