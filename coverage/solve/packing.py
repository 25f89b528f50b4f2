"""
Proofs from linear programs that communities cannot all be within the band: over a tight district
(`all_in_band_impossible`), and the fewest residents outside it in a region (`least_outside_band`,
`fewest_outside_band`).

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
method answers a strip district of 65,826 residents (869 distinct reach sets, 221 sites) in
about 5 s where the simplex takes a minute, and in 2.4 s on its units with nearly the same
sites joined (a relaxation, tried first: `similar_rows_joined`);
`covplan.solve.bounds.packing_shortfall` runs it only where covering everyone takes as many
centers as the residents fill at the band's floor (the tight case; elsewhere it is skipped).

The second program asks how many: with a share z of each site as the center of a regular
community outside the band (at least the tiny floor) beside y, it minimises the residents sent
to z. It is run after planning on regions around the plan's misses
(`covplan.solve.bounds.around_plan`, which budgets them): a few hundred units and up to 20,000
pairs, 0.1-2 s of the interior-point method where units reach 20 sites, 9 s where they reach
40; there the dual simplex goes first and answers most in a third to a sixth of that. PDLP
(OR-Tools) took as long on them, and merging similar sites into one (a relaxation) lost the
bound before it saved time. The same program, on a tiny community's neighbourhood with
the rest of the plan fixed, shows whether that neighbourhood can lose it
(`covplan.solve.neighbourhood`); there it can also have no solution, which says so.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from covplan._sparse import key_groups, row_slice

logger = logging.getLogger(__name__)

MAX_PAIRS = 150_000      # (unit, site) pairs above which the program is not tried (time)
MAX_ITERATIONS = 200     # interior-point iterations (a count, so the answer is the same anywhere)
SIMPLEX_ITERATIONS = 0.35  # dual-simplex iterations a variable, and SIMPLEX_SPARE more, before
SIMPLEX_SPARE = 1_000      # the interior point takes over (`_dual_simplex_first`)
SIMILAR_UNITS = 0.9        # Jaccard index of two units' sites above which the relaxation of
                           # `all_in_band_impossible` joins them (at 0.8 linear's proof is lost)


def _interior_point(cost: np.ndarray, iterations: int = MAX_ITERATIONS, **program):
    """HiGHS's interior-point method (through scipy) without its crossover to a vertex: only the
    optimum's value or the proof of infeasibility is used, and the crossover took a third of
    the time on large programs (the regions around islands' and linear's misses 21.6 -> 14.2 s
    and 19.4 -> 12.6 s; Chengdu's 2.1 -> 2.0 s; the same optimum to 1e-8)."""
    import warnings

    from scipy.optimize import OptimizeWarning, linprog

    with warnings.catch_warnings():
        # scipy passes HiGHS options it does not know verbatim and says so (older versions
        # warn of unknown options and run the crossover anyway: the same answer, slower).
        warnings.filterwarnings("ignore", message="Un(recognized|known)", category=OptimizeWarning)
        return linprog(cost, method="highs-ipm", options={"maxiter": iterations,
                                                          "run_crossover": "off"}, **program)


def _dual_simplex_first(cost: np.ndarray, **program):
    """HiGHS's dual simplex, within `SIMPLEX_ITERATIONS` a variable, then the interior point
    (`_interior_point`) where it has not answered. For programs that likely have a solution: on
    those it took 0.17-0.26 iterations a variable (0.43 on small ones, hence the spare) and
    a third to a sixth of the interior point's time (Chengdu's region around its misses 2.8 ->
    0.95 s), but on programs with none 0.37-0.69 and up to four times the interior point's time
    (7.7 against 1.9 s on an islands' neighbourhood): the cap bounds that loss."""
    from scipy.optimize import linprog

    limit = int(SIMPLEX_ITERATIONS * len(cost)) + SIMPLEX_SPARE
    res = linprog(cost, method="highs-ds", options={"maxiter": limit}, **program)
    if res.status in (0, 2):        # solved, or no solution
        return res
    logger.debug("dual simplex unanswered after %d iterations: the interior point", res.nit)
    return _interior_point(cost, **program)


def merge_identical_rows(structure: sp.csr_matrix, pop: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Units that reach the same sites, summed: the program is the same (flows are shares)."""
    structure = sp.csr_matrix(structure, dtype="float64")
    structure.sort_indices()
    group, first = key_groups(structure.indices[row_slice(structure, u)].tobytes()
                           for u in range(structure.shape[0]))
    merged = structure[first]
    merged.data[:] = 1.0
    return merged.tocsr(), np.bincount(group, weights=pop, minlength=len(first))


def _at_most_share(flow: np.ndarray, share: np.ndarray, weight_of: np.ndarray) -> tuple:
    """Constraint rows flow[i] <= weight_of[i] * share[i] (variable indices), as a block of
    (row, column, value, right-hand side)."""
    n = len(flow)
    return (np.r_[np.arange(n), np.arange(n)], np.r_[flow, share], np.r_[np.ones(n), -weight_of],
            np.zeros(n))


def _stacked(blocks: list[tuple], n_vars: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Blocks of (row, column, value, right-hand side), one under the other: A_ub and b_ub."""
    matrix = sp.vstack([sp.csr_matrix((v, (r, c)), shape=(len(b), n_vars))
                        for r, c, v, b in blocks])
    return matrix.tocsr(), np.concatenate([b for *_, b in blocks])


def similar_rows_joined(matrix: sp.csr_matrix, weight: np.ndarray,
                        similar: float = SIMILAR_UNITS) -> tuple[sp.csr_matrix, np.ndarray]:
    """Units whose sites nearly repeat a leader's (Jaccard index at least `similar`) joined to
    it, each group reaching the union of its members' sites: a relaxation of the programs of
    this module (any plan maps onto it: a member's flow to a site goes to its group's), so a
    program without a solution here has none on the units. Leaders are taken in row order, so
    the groups are the same on any machine."""
    matrix = sp.csr_matrix(matrix, dtype="float64")
    size = np.diff(matrix.indptr).astype("float64")
    overlap = (matrix @ matrix.T).tocoo()
    jaccard = overlap.data / (size[overlap.row] + size[overlap.col] - overlap.data)
    close = jaccard >= similar
    near = sp.csr_matrix((np.ones(int(close.sum())), (overlap.row[close], overlap.col[close])),
                         shape=overlap.shape)
    group = np.full(matrix.shape[0], -1, dtype="int64")
    n_groups = 0
    for u in range(matrix.shape[0]):
        if group[u] >= 0:
            continue
        members = near.indices[near.indptr[u]:near.indptr[u + 1]]
        group[members[group[members] < 0]] = n_groups
        group[u] = n_groups
        n_groups += 1
    member = sp.csr_matrix((np.ones(len(group)), (group, np.arange(len(group)))),
                           shape=(n_groups, len(group)))
    joined = (member @ matrix).tocsr()
    joined.data[:] = 1.0
    return joined, np.bincount(group, weights=weight, minlength=n_groups)


def all_in_band_impossible(structure: sp.csr_matrix, pop: np.ndarray, *, min_pop: float,
                           max_pop: float) -> bool:
    """
    True when no assignment of these units (all of them able to be balanced) to communities
    within [min_pop, max_pop], each served by a site its members reach, exists even as the
    linear program of this module; False when one exists or the program is not tried or not
    answered (no proof either way).

    `structure` is units x sites (stored = reaches), already restricted to the district. The
    program is first only presolved (HiGHS's presolve proves harbour's centre district in
    0.2 s), then put on units with nearly the same sites joined (`similar_rows_joined`, a
    relaxation: linear's centre district, 869 reach sets -> 445 groups, 5.5 -> 2.4 s of the
    interior point, the same proof; harbour's needs 2 s there), and where the relaxation has a
    solution, solved on the units as they are.
    """
    structure = sp.csr_matrix(structure, dtype="float64")
    pop = np.asarray(pop, dtype="float64")
    gathers = np.asarray(structure.T @ pop).ravel()
    structure = structure[:, np.flatnonzero(gathers >= min_pop - 1e-9)].tocsr()
    if (np.diff(structure.indptr) == 0).any():
        return True         # a unit reaches no site gathering the floor: it cannot be in band
    matrix, weight = merge_identical_rows(structure, pop)
    keep = weight > 0
    matrix, weight = matrix[keep], weight[keep]
    if matrix.nnz == 0 or matrix.nnz > MAX_PAIRS:
        return False
    if _no_plan_in_band(matrix, weight, min_pop, max_pop, iterations=0):
        return True
    groups, group_weight = similar_rows_joined(matrix, weight)
    if groups.shape[0] < matrix.shape[0] and _no_plan_in_band(groups, group_weight, min_pop,
                                                              max_pop):
        return True
    return _no_plan_in_band(matrix, weight, min_pop, max_pop)


def _no_plan_in_band(matrix: sp.csr_matrix, weight: np.ndarray, min_pop: float,
                     max_pop: float, *, iterations: int = MAX_ITERATIONS) -> bool:
    """The program of `all_in_band_impossible` on reach sets `matrix` holding `weight`: True
    when it has no solution (within `iterations` of the interior point; 0: its presolve)."""
    pairs = matrix.tocoo()
    n_units, n_sites, n_pairs = matrix.shape[0], matrix.shape[1], pairs.nnz
    # Variables: f (one per pair), then y (one per site).
    f, y = np.arange(n_pairs), n_pairs + np.arange(n_sites)
    site_rows = np.r_[pairs.col, np.arange(n_sites)]
    a_ub, b_ub = _stacked([
        (site_rows, np.r_[f, y], np.r_[-np.ones(n_pairs), np.full(n_sites, min_pop)], np.zeros(n_sites)),
        (site_rows, np.r_[f, y], np.r_[np.ones(n_pairs), np.full(n_sites, -max_pop)], np.zeros(n_sites)),
        _at_most_share(f, y[pairs.col], weight[pairs.row]),
        (pairs.row, y[pairs.col], -np.ones(n_pairs), -np.ones(n_units)),
    ], n_pairs + n_sites)
    a_eq = sp.csr_matrix((np.ones(n_pairs), (pairs.row, f)), shape=(n_units, n_pairs + n_sites))
    res = _interior_point(np.zeros(n_pairs + n_sites), iterations, A_ub=a_ub, b_ub=b_ub,
                          A_eq=a_eq, b_eq=weight,
                          bounds=np.c_[np.zeros(n_pairs + n_sites),
                                       np.r_[np.full(n_pairs, np.inf), np.ones(n_sites)]])
    logger.debug("all-in-band program: %d reach sets, %d sites, %d pairs: %s", n_units, n_sites,
                 n_pairs, res.message)
    return res.status == 2


def fewest_outside_band(piece: sp.csr_matrix, pop: np.ndarray, forced: np.ndarray,
                        from_outside: np.ndarray, *, min_pop: float, max_pop: float,
                        tiny_pop: float, simplex_first: bool = False) -> int:
    """
    At least how many residents of these units (not the forced ones) are outside the band in
    any plan keeping the tiny-community rule (`least_outside_band`), 0 when the program is not
    tried, not answered or has no solution (no proof of a count).
    """
    least, _ = least_outside_band(piece, pop, forced, from_outside, min_pop=min_pop,
                                  max_pop=max_pop, tiny_pop=tiny_pop,
                                  simplex_first=simplex_first)
    return 0 if least is None or np.isinf(least) else int(least)


def least_outside_band(piece: sp.csr_matrix, pop: np.ndarray, forced: np.ndarray,
                       from_outside: np.ndarray, *, min_pop: float, max_pop: float,
                       tiny_pop: float, max_work: float = np.inf,
                       simplex_first: bool = False) -> tuple[float | None, float]:
    """
    At least how many residents of these units (not the forced ones) are outside the band in
    any plan keeping the tiny-community rule, and the program's work (merged pairs squared per
    merged unit, about 100,000-250,000 a second): the optimum of a linear program, ``inf`` when
    it has no solution (no plan keeping the rule exists there), None when it is not tried (more
    than `max_work` or `MAX_PAIRS`) or not answered.

    `piece` is units x sites, stored where the unit reaches the site, valued by the residents
    of the unit's connected piece among the units reaching that site (a community centered
    there holding the unit lies inside it). The units are a region of a city: `from_outside`
    gives per site the residents outside it that the site reaches, who may fill its community
    (its floors are lowered by as many; any plan cut to the region stays a solution). The
    program:

    - y[c], z[c] in [0, 1], y + z <= 1: site c is the center of a community in band (y) or of
      a regular one outside it (z); every unit that is not forced reaches a center, the sum of
      y and z over its sites at least 1;
    - f[u, c] <= pop[u] y[c] where u's piece at c holds min_pop (residents in band), g[u, c] <=
      pop[u] z[c] where it holds tiny_pop (outside the band);
    - (min_pop - from_outside[c]) y[c] <= sum of f[., c] <= max_pop y[c], sum of g[., c] >=
      (tiny_pop - from_outside[c]) z[c] (floors not below 0);
    - a unit's residents all in some community (forced units: in one of these or an exception);
    - minimise the residents of units that are not forced in g.

    Rows with identical reach, pieces and forcedness are summed (exact: flows are shares).
    `simplex_first`, for programs that likely have a solution, tries the dual simplex first
    (`_dual_simplex_first`): the same optimum within the solvers' tolerances, which the margin
    below absorbs.
    """
    piece = sp.csr_matrix(piece, dtype="float64", copy=True)   # edited in place below
    piece.data[piece.data < tiny_pop - 1e-9] = 0.0
    piece.eliminate_zeros()
    piece.sort_indices()
    pop = np.asarray(pop, dtype="float64")
    forced = np.asarray(forced, bool)
    group, first = key_groups((piece.indices[row_slice(piece, u)].tobytes(),
                            (piece.data[row_slice(piece, u)] >= min_pop).tobytes(), bool(forced[u]))
                           for u in range(piece.shape[0]))
    weight = np.bincount(group, weights=pop, minlength=len(first))
    pairs = piece[first].tocoo()
    forced, able = forced[first], ~forced[first]
    n_units, n_sites = len(first), piece.shape[1]
    work = pairs.nnz ** 2 / max(n_units, 1)
    if not (weight[able] > 0).any():
        return 0.0, work
    if pairs.nnz == 0:
        return np.inf, work     # residents who reach no site that could hold them
    if pairs.nnz > MAX_PAIRS or work > max_work:
        return None, work
    in_band = (pairs.data >= min_pop - 1e-9) & able[pairs.row]
    fu, fc = pairs.row[in_band], pairs.col[in_band]
    gu, gc = pairs.row, pairs.col
    nf, ng = len(fu), len(gu)
    # Variables: f (in-band pairs), g (all pairs), y (sites), z (sites).
    f, g = np.arange(nf), nf + np.arange(ng)
    y, z = nf + ng + np.arange(n_sites), nf + ng + n_sites + np.arange(n_sites)
    n_vars = nf + ng + 2 * n_sites
    sites = np.arange(n_sites)
    from_outside = np.asarray(from_outside, dtype="float64")
    floor = np.maximum(min_pop - from_outside, 0.0)
    tiny_floor = np.maximum(tiny_pop - from_outside, 0.0)
    rows = [  # (row, column, value, right-hand side) of each block of constraints
        (np.r_[fc, sites], np.r_[f, y], np.r_[-np.ones(nf), floor], np.zeros(n_sites)),
        (np.r_[fc, sites], np.r_[f, y], np.r_[np.ones(nf), np.full(n_sites, -max_pop)],
         np.zeros(n_sites)),
        (np.r_[gc, sites], np.r_[g, z], np.r_[-np.ones(ng), tiny_floor], np.zeros(n_sites)),
        _at_most_share(f, y[fc], weight[fu]),
        _at_most_share(g, z[gc], weight[gu]),
        (np.r_[sites, sites], np.r_[y, z], np.ones(2 * n_sites), np.ones(n_sites)),
    ]
    # Cover: every unit that is not forced reaches a center (its pieces there hold tiny_pop).
    cover = able[gu]
    rows.append((np.r_[gu[cover], fu], np.r_[z[gc[cover]], y[fc]], -np.ones(int(cover.sum()) + nf),
                 np.where(able, -1.0, 0.0)))
    everyone = sp.csr_matrix((np.ones(nf + ng), (np.r_[fu, gu], np.r_[f, g])),
                             shape=(n_units, n_vars))
    a_ub, b_ub = _stacked(rows, n_vars)
    cost = np.zeros(n_vars)
    cost[g] = able[gu]
    solve = _dual_simplex_first if simplex_first else _interior_point
    res = solve(cost, A_ub=sp.vstack([a_ub, everyone[forced]]).tocsr(),
                b_ub=np.r_[b_ub, weight[forced]], A_eq=everyone[able], b_eq=weight[able],
                bounds=np.c_[np.zeros(n_vars),
                             np.r_[np.full(nf + ng, np.inf), np.ones(2 * n_sites)]])
    logger.debug("outside-band program: %d reach sets, %d sites, %d pairs: %s, %s", n_units,
                 n_sites, ng, res.message, res.fun)
    if res.status == 2:
        return np.inf, work
    if res.status != 0:
        return None, work
    # The solver's optimum is within its tolerances: a resident's margin keeps the floor proven.
    return float(max(int(np.floor(res.fun * (1 - 1e-6) - 1.0)), 0)), work


SEPARATED_ORDERS = ("sites", "gather", "supply")   # the ways units that share no site are picked


def separated_outside_band(structure: sp.csr_matrix, pop: np.ndarray, forced: np.ndarray, *,
                           min_pop: float, tiny_pop: float,
                           adjacency: sp.spmatrix | None = None) -> int:
    """
    At least how many residents who are not forced undersized are outside the band in any plan
    that covers everyone and keeps the tiny-community rule, from units that share no site.

    Units no two of which reach a common site (`seeding.separated_units`) lie in as many different
    communities, each inside the units reaching one of its unit's sites — with `adjacency`,
    inside the unit's connected piece of them (communities are contiguous). Where those are few
    residents — a thin fringe, a target large against the circles — the communities cannot
    all reach the band's floor together, however the rest is drawn: with b[u] in [0, 1] for
    "u's community is in band", flows f[w, u] (residents of w in u's community, when in band:
    not forced, and in a piece gathering the floor) and g[w, u] (when outside it, at least the
    tiny floor), every unit giving at most its residents, the most communities in band is at
    most the floor of the program's largest sum of b. With that many at most, a second program
    gives the fewest residents who are not forced in the communities outside the band. A plan
    is a solution of both (b at 0 or 1, the flows its communities), so the figure holds for
    every plan.

    The linear programs stay small (one row per separated unit, one column per unit that may
    join its community), so they run on whole districts and cities (about a second on
    Chengdu's 3,000 units; a greedy share of the residents skips them, and the pieces, where
    every circle fills at once, as in most cities at the default walk), where the program of
    `least_outside_band` is left to regions around a plan's misses. The separated units are
    picked in three orders (fewest sites, smallest gather, smallest sum of their sites' gathers
    first), and the order leaving most communities outside the band gives the proof. Unlike
    the count of centers, it binds where a sparse part needs many more circles than a dense
    part, which then has room to spare.
    """
    from covplan.solve.partition.seeding import separated_units

    structure = sp.csr_matrix(structure, dtype="float64")
    structure.sort_indices()
    structure.data[:] = 1.0
    pop = np.asarray(pop, dtype="float64")
    forced = np.asarray(forced, bool)
    reached = np.diff(structure.indptr) > 0
    able = reached & ~forced & (pop > 0)
    if not able.any() or min_pop <= tiny_pop:
        return 0
    gather = np.asarray(structure.T @ pop).ravel()
    rows = np.repeat(np.arange(structure.shape[0]), np.diff(structure.indptr))
    best = np.zeros(structure.shape[0])
    np.maximum.at(best, rows, gather[structure.indices])
    keys = {"sites": np.diff(structure.indptr).astype("float64"), "gather": best,
            "supply": np.asarray(structure @ gather).ravel()}
    by_site = structure.tocsc()
    adjacency = None if adjacency is None else sp.csr_matrix(adjacency)
    site_holds = gather >= min_pop - 1e-9     # sites whose circle holds the floor
    best_case = None
    for order in SEPARATED_ORDERS:
        units = separated_units(structure, np.flatnonzero(able), keys[order])
        circles = _separated_program(structure, by_site, units, pop, able, None, site_holds,
                                     min_pop=min_pop, tiny_pop=tiny_pop)
        if circles is None:
            continue     # a greedy share fills every circle: pieces (slower) are not tried
        # Pieces first; where their program has no solution (no plan keeps the tiny rule with
        # these pieces, which proves nothing here), the circles'.
        for program in (_separated_program(structure, by_site, units, pop, able, adjacency,
                                           site_holds, min_pop=min_pop, tiny_pop=tiny_pop)
                        if adjacency is not None else None, circles):
            short = None if program is None else program.short_of_band()
            if short is not None:
                break
        logger.debug("separated units (%s first): %d units, at least %s outside the band", order,
                     len(units), short)
        if short and (best_case is None or short > best_case[0]):
            best_case = (short, program)
    # The fewest residents outside the band, for the order that leaves most communities outside.
    return 0 if best_case is None else best_case[1].fewest_outside(best_case[0])


def _separated_program(structure: sp.csr_matrix, by_site: sp.csc_matrix, units: np.ndarray,
                       pop: np.ndarray, able: np.ndarray, adjacency: sp.csr_matrix | None,
                       site_holds: np.ndarray, *, min_pop: float,
                       tiny_pop: float) -> _SeparatedProgram | None:
    """The programs over `units`, or None where a greedy share already fills every community
    to the floor (no proof)."""
    # Who may join each unit's community (g), and when in band (f: not forced, and in a piece
    # or circle gathering the floor).
    g, floor = _joiners(structure, by_site, units, pop, adjacency, site_holds, min_pop)
    # A unit able to be balanced has a piece holding the floor; this keeps the programs
    # solvable on inputs that do not say which units are forced.
    fills = np.asarray(g @ pop).ravel() >= tiny_pop - 1e-9
    g, floor = g[fills].tocoo(), _stored(floor[fills].multiply(able[None, :])).tocoo()
    if _all_filled(int(fills.sum()), floor.row, floor.col, pop, min_pop):
        return None
    return _SeparatedProgram(int(fills.sum()), floor.row, floor.col, g.row, g.col, pop, able,
                             min_pop=min_pop, tiny_pop=tiny_pop)


def _joiners(structure: sp.csr_matrix, by_site: sp.csc_matrix, units: np.ndarray,
             pop: np.ndarray, adjacency: sp.csr_matrix | None, site_holds: np.ndarray,
             min_pop: float) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Separated units x units: who may be in each one's community (reaching one of its sites,
    and with `adjacency` in its connected piece of the units reaching that site), and who may
    when that community is in band (the circle holds `min_pop`: `site_holds` per site; or the
    piece)."""
    n = structure.shape[0]
    if adjacency is None:
        sites = structure[units]
        return (sites @ by_site.T).tocsr(), _stored(sites.multiply(site_holds) @ by_site.T)
    from scipy.sparse.csgraph import connected_components

    rows, cols, full = [], [], []
    for i, u in enumerate(units):
        for c in structure.indices[structure.indptr[u]:structure.indptr[u + 1]]:
            members = by_site.indices[by_site.indptr[c]:by_site.indptr[c + 1]]   # sorted
            _, label = connected_components(adjacency[members][:, members], directed=False)
            piece = members[label == label[np.searchsorted(members, u)]]
            rows.append(np.full(len(piece), i))
            cols.append(piece)
            full.append(np.full(len(piece), pop[piece].sum() >= min_pop - 1e-9))
    rows, cols, full = np.concatenate(rows), np.concatenate(cols), np.concatenate(full)
    shape = (len(units), n)
    g = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
    floor = sp.csr_matrix((np.ones(int(full.sum())), (rows[full], cols[full])), shape=shape)
    g.data[:] = 1.0
    floor.data[:] = 1.0
    return g, floor


def _stored(matrix: sp.spmatrix) -> sp.csr_matrix:
    """`matrix` without the zeros that masking by multiplication leaves stored (they would count as
    pairs: a forced unit in a balanced community, a circle below the floor)."""
    matrix = sp.csr_matrix(matrix)
    matrix.eliminate_zeros()
    return matrix


def _all_filled(m: int, fu: np.ndarray, fw: np.ndarray, pop: np.ndarray, min_pop: float) -> bool:
    """Whether a greedy share of the residents fills every separated unit's community to the
    floor at once (the program then has every community in band: it is not run). Where circles
    are large against the target, as in most of a city, it does at once."""
    left = pop.astype("float64")
    order = np.argsort(np.bincount(fu, weights=pop[fw], minlength=m), kind="stable")
    starts = np.r_[0, np.cumsum(np.bincount(fu, minlength=m))]
    by_unit = fw[np.argsort(fu, kind="stable")]
    for u in order:
        ws = by_unit[starts[u]:starts[u + 1]]
        taken = np.minimum(left[ws], np.maximum(min_pop - np.r_[0.0, np.cumsum(left[ws])[:-1]], 0.0))
        if taken.sum() < min_pop - 1e-9:
            return False
        left[ws] -= taken
    return True


class _SeparatedProgram:
    """The programs of `separated_outside_band` on m separated units: variables f (in-band
    pairs), g (outside-band pairs), b (per unit: its community in band)."""

    def __init__(self, m: int, fu: np.ndarray, fw: np.ndarray, gu: np.ndarray, gw: np.ndarray,
                 pop: np.ndarray, able: np.ndarray, *, min_pop: float, tiny_pop: float):
        self.m, self.fu, self.gu = m, fu, gu
        nf, ng = len(fu), len(gu)
        f, g, self.b = np.arange(nf), nf + np.arange(ng), nf + ng + np.arange(m)
        self.n_vars = nf + ng + m
        ids = np.arange(m)
        self.a_ub, self.b_ub = _stacked([
            (np.r_[fu, ids], np.r_[f, self.b], np.r_[-np.ones(nf), np.full(m, min_pop)], np.zeros(m)),
            (np.r_[gu, ids], np.r_[g, self.b], np.r_[-np.ones(ng), np.full(m, -tiny_pop)],
             np.full(m, -tiny_pop)),
            (np.r_[fw, gw], np.r_[f, g], np.ones(nf + ng), pop),
        ], self.n_vars)
        self.bounds = np.c_[np.zeros(self.n_vars), np.r_[np.full(nf + ng, np.inf), np.ones(m)]]
        self.cost = np.zeros(self.n_vars)
        self.cost[g] = able[gw]           # residents who are not forced, outside the band

    def short_of_band(self) -> int | None:
        """At least how many of the m communities are outside the band (0: no proof); None where
        the program has no solution or no answer."""
        from scipy.optimize import linprog

        most = linprog(np.r_[np.zeros(self.n_vars - self.m), -np.ones(self.m)], A_ub=self.a_ub,
                       b_ub=self.b_ub, bounds=self.bounds, method="highs")
        return None if most.status != 0 else max(self.m - int(np.floor(-most.fun + 1e-6)), 0)

    def fewest_outside(self, short: int) -> int:
        """The fewest residents who are not forced in communities outside the band, with at
        least `short` of the m communities outside it (0 when not answered)."""
        from scipy.optimize import linprog

        limit = sp.csr_matrix((np.ones(self.m), (np.zeros(self.m, "int64"), self.b)),
                              shape=(1, self.n_vars))
        res = linprog(self.cost, A_ub=sp.vstack([self.a_ub, limit]).tocsr(),
                      b_ub=np.r_[self.b_ub, self.m - short], bounds=self.bounds, method="highs")
        if res.status != 0:
            return 0
        # The solver's optimum is within its tolerances: a resident's margin keeps it proven.
        return max(int(np.floor(res.fun * (1 - 1e-6) - 1.0)), 0)
