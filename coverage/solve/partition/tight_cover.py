"""
Tight instances planned from their minimum covers (the core's last step, after the CP-SAT
windows).

Where covering everyone takes as many centers as the residents fill at the band's floor (the
case `covplan.solve.bounds.packing_shortfall` checks), every plan that keeps the count at its
most has a minimum cover for centers, and the heuristic, which adds centers while settling,
tends to end one community above it with several short ones (linear's centre district: 9
communities, 3 short, where 8 are possible). Here minimum covers are found (HiGHS on the
cover problem made small: sites whose reach lies inside another's and units implied by
another's cover dropped; sites weighted by seeded noise so that each try may give another,
those gathering less than the floor weighted up). A cover passes when transport LPs (residents
divisible, units reaching the same cover sites summed) let it hold more residents in band than
the plan with at most two communities below the band; its units are then assigned by a small
MIP: every unit to a cover site it reaches, every community at least the tiny floor and either
in band or below it, more residents in balanced communities than the plan has, the fewest
person-minutes (which keeps communities compact). The first assignment whose communities are
all connected replaces the plan when the rules' order improves (`core._from_cover`).

No library partitions under these rules; HiGHS solves the models (through scipy, with node
limits, so the same inputs give the same plan on any machine).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from covplan._parallel import run_until, shared
from covplan.solve.partition.seeding import reduced_cover
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse.csgraph import connected_components

logger = logging.getLogger(__name__)

COVERS = 12             # minimum covers tried
MAX_OUTS = 2            # communities a cover's plan may leave below the band
COVER_NODES = 200       # branch-and-bound nodes for a cover (a count: deterministic)
ASSIGN_NODES = 2000     # ... and for an assignment
MAX_PAIRS = 20_000      # unit-site pairs of the cover above which the assignment is not tried
MAX_UNITS = 5_000       # units above which the step is not tried (the dominance tests are
                        # dense, units x units; a tight instance holds at most ~70,000 residents)


def _cover(structure: sp.csr_matrix, count: int, weight: np.ndarray) -> np.ndarray | None:
    """Sites of a cover with exactly `count` sites, the lightest by `weight`; None if none found."""
    n_sites = structure.shape[1]
    res = milp(weight, integrality=np.ones(n_sites), bounds=Bounds(0, 1),
               constraints=[LinearConstraint(structure, 1, np.inf),
                            LinearConstraint(np.ones((1, n_sites)), count, count)],
               options={"node_limit": COVER_NODES})
    return None if res.x is None else np.flatnonzero(res.x > 0.5)


def _splits(minutes: sp.csr_matrix, pop: np.ndarray, sites: np.ndarray, *, min_pop: float,
            max_pop: float, tiny_pop: float, more_than: float) -> bool:
    """Whether the cover's circles can hold more than `more_than` residents in band with at most
    `MAX_OUTS` communities below it, residents divisible (transport LPs, one per choice of the
    communities left below): a necessary condition, cheap because units that reach the same
    cover sites are summed (a few dozen groups)."""
    from itertools import combinations

    from scipy.optimize import linprog

    from covplan.solve.packing import merge_identical_rows

    merged, weight = merge_identical_rows(minutes[:, sites], pop)
    pairs = merged.tocoo()
    k, n_pairs = len(sites), pairs.nnz
    one_group = sp.csr_matrix((np.ones(n_pairs), (pairs.row, np.arange(n_pairs))), shape=(len(weight), n_pairs))
    load = sp.csr_matrix((np.ones(n_pairs), (pairs.col, np.arange(n_pairs))), shape=(k, n_pairs))
    for n_out in range(MAX_OUTS + 1):
        for outs in combinations(range(k), n_out):
            out = np.zeros(k, dtype=bool)
            out[list(outs)] = True
            # The fewest residents in the communities left below: the most in band.
            res = linprog(np.asarray(load[out].sum(axis=0)).ravel(), A_ub=sp.vstack([load, -load]),
                          b_ub=np.r_[np.where(out, min_pop - 1, max_pop), -np.where(out, tiny_pop, min_pop)],
                          A_eq=one_group, b_eq=weight, bounds=(0, None), method="highs")
            if res.status == 0 and float(weight.sum()) - res.fun > more_than + 0.5:
                return True
    return False


def _assign(minutes: sp.csr_matrix, pop: np.ndarray, sites: np.ndarray, *, min_pop: float,
            max_pop: float, tiny_pop: float, more_than: float) -> np.ndarray | None:
    """Per unit its site's index in `sites`: each community at least `tiny_pop` and either in
    [min_pop, max_pop] or below min_pop, more than `more_than` residents in band, the fewest
    person-minutes (compact communities); None when HiGHS finds none within its node limit."""
    pairs = minutes[:, sites].tocoo()
    n_units, k, n_pairs = minutes.shape[0], len(sites), pairs.nnz
    if n_pairs > MAX_PAIRS:
        return None
    one_site = sp.csr_matrix((np.ones(n_pairs), (pairs.row, np.arange(n_pairs))), shape=(n_units, n_pairs))
    load = sp.csr_matrix((pop[pairs.row], (pairs.col, np.arange(n_pairs))), shape=(k, n_pairs))
    eye, none = sp.identity(k, format="csr"), sp.csr_matrix((k, k))
    # Variables: x per pair (binary), b per site (binary: in band), v per site (its residents
    # in band: at most its load, at most max_pop b).
    constraints = [
        LinearConstraint(sp.hstack([one_site, sp.csr_matrix((n_units, 2 * k))]), 1, 1),
        LinearConstraint(sp.hstack([load, -(min_pop - tiny_pop) * eye, none]), tiny_pop, np.inf),
        LinearConstraint(sp.hstack([load, -(max_pop - min_pop + 1) * eye, none]), -np.inf, min_pop - 1),
        LinearConstraint(sp.hstack([-load, none, eye]), -np.inf, 0),
        LinearConstraint(sp.hstack([sp.csr_matrix((k, n_pairs)), -max_pop * eye, eye]), -np.inf, 0),
        LinearConstraint(np.r_[np.zeros(n_pairs + k), np.ones(k)][None, :], more_than + 1, np.inf),
    ]
    res = milp(np.r_[pop[pairs.row] * pairs.data, np.zeros(2 * k)],
               integrality=np.r_[np.ones(n_pairs + k), np.zeros(k)],
               bounds=Bounds(0, np.r_[np.ones(n_pairs + k), np.full(k, max_pop)]),
               constraints=constraints, options={"node_limit": ASSIGN_NODES})
    if res.x is None:
        return None
    chosen = res.x[:n_pairs] > 0.5
    site = np.full(n_units, -1, dtype="int64")
    site[pairs.row[chosen]] = pairs.col[chosen]
    return site


def cover_plan(minutes: sp.csr_matrix, pop: np.ndarray, adjacency: sp.csr_matrix, center: np.ndarray,
               *, min_pop: float, max_pop: float, tiny_pop: float, balanced: float,
               seed: int = 0) -> np.ndarray | None:
    """
    A plan of the instance from one of its minimum covers (module docstring): the center
    (column of `minutes`) of each unit, or None when the instance is not tight, or no cover
    gives connected communities with more than `balanced` residents in band. `center` is the
    current plan (-1 for units that reach no site: they keep -1).
    """
    from covplan.solve.bounds import tight_count

    rows = np.flatnonzero(center >= 0)
    if adjacency is None or len(rows) > MAX_UNITS:
        return None
    sub = sp.csr_matrix(minutes[rows], dtype="float64")
    structure = sub.copy()
    structure.data[:] = 1.0
    most = tight_count(structure, float(pop[rows].sum()), min_pop=min_pop, max_pop=max_pop)
    if most is None:
        return None
    links = sp.csr_matrix(adjacency)[rows][:, rows]
    # Covers of sites that gather the floor (the sites of communities in band) come first.
    gathers = np.asarray(structure.T @ pop[rows]).ravel()
    weak = 1.0 + (gathers < min_pop)
    small, kept = reduced_cover(structure)
    # One draw of noise per try, in order: the covers are those of trying one after another.
    noise = np.random.default_rng(seed).random((COVERS, len(kept)))
    tried: set[tuple[int, ...]] = set()    # covers read so far (tries forked later see them)
    data = {"small": small, "kept": kept, "weights": weak[kept] + 0.5 * noise, "sub": sub,
            "pop": pop[rows], "links": links, "most": most, "seen": tried,
            "band": {"min_pop": min_pop, "max_pop": max_pop, "tiny_pop": tiny_pop,
                     "more_than": balanced}}
    winner: list[np.ndarray] = []

    def settles(found: tuple[np.ndarray | None, np.ndarray | None]) -> bool:
        """Whether the tries stop at this one, read in order: no cover of the count found
        (none will be), or a cover not found before that splits. A cover found before is the
        same try again (the same answer), so it counts as failed."""
        sites, site = found
        if sites is None:
            return True
        if tuple(sites) in tried:
            return False
        tried.add(tuple(sites))
        if site is None:
            return False
        out = center.copy()
        out[rows] = sites[site]
        winner.append(out)
        return True

    # Tries on the processes the plan leaves idle (the last district, the last stage), each
    # started as one frees up, read in order: the first that passes wins, as one after another.
    run_until(_try, range(COVERS), data=data, stop=settles)
    return winner[0] if winner else None


def _try(attempt: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The `attempt`-th try's minimum cover (None when none of the count is found) and, when
    its communities split within the rules and are all connected, each unit's index into its
    sites (else None), run by `run_until` for `cover_plan`."""
    sites = _try_cover(attempt)
    if sites is None:
        return None, None
    if tuple(sites) in shared()["seen"]:     # a cover found before: not split again
        return sites, None
    return sites, _try_split((attempt, sites))


def _try_cover(attempt: int) -> np.ndarray | None:
    """The sites of the `attempt`-th try's minimum cover (None when no cover of the count is
    found)."""
    d = shared()
    picked = _cover(d["small"], d["most"], d["weights"][attempt])
    return None if picked is None else d["kept"][picked]


def _try_split(task: tuple[int, np.ndarray]) -> np.ndarray | None:
    """The site of each unit for a try's cover, when its communities split within the rules and
    are all connected (else None)."""
    attempt, sites = task
    d = shared()
    fits = _splits(d["sub"], d["pop"], sites, **d["band"])
    site = _assign(d["sub"], d["pop"], sites, **d["band"]) if fits else None
    if site is None or (site < 0).any():
        logger.debug("cover %d (%d sites): %s", attempt, len(sites),
                     "no assignment" if fits else "no split")
        return None
    links = d["links"]
    pieces = sum(connected_components(links[site == j][:, site == j], directed=False)[0]
                 for j in range(len(sites)))
    logger.debug("cover %d (%d sites): %d pieces", attempt, len(sites), pieces)
    return site if pieces == len(sites) else None
