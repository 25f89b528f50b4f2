"""
Center siting alone (planner mode 3): the best center for each given community, and where a
budget of new centers covers the most residents no open center reaches.

Array cores (`choose_centers`, `place_centers`) see only the sparse units x candidates matrix of
minutes (stored = reachable within the limit) and populations, so they can be checked on a
hand-written 4 x 3 matrix; the geo wrappers (`choose_community_centers`, `site_new_centers`)
take a `ReachMatrix` and return frames in the population's CRS.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import geopandas as gpd
import numpy as np
import scipy.sparse as sp
from covplan.errors import InputError
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

if TYPE_CHECKING:
    from covplan.reach.matrix import ReachMatrix

__all__ = ["CenterChoice", "CenterPlacement", "CommunityCenters", "NewCenters", "choose_centers",
           "choose_community_centers", "place_centers", "site_new_centers"]

logger = logging.getLogger(__name__)

DEFAULT_EXISTING_BONUS_MINUTES = 0.5   # as the planner's PartitionProblem.existing_bonus_minutes
PlacementMethod = Literal["greedy", "milp"]


@dataclass(frozen=True, slots=True, eq=False)
class CenterChoice:
    """One center per community (index = community label) and what it achieves."""

    center: np.ndarray        # candidate index per community; -1 if no candidate reaches a member
    population: np.ndarray    # residents per community (int64)
    covered: np.ndarray       # residents within the limit of that center (int64)
    mean_minutes: np.ndarray  # population-weighted mean minutes of the covered residents (nan: none)
    max_minutes: np.ndarray   # worst minutes among the covered residents (nan: none)
    shared: np.ndarray        # bool: no distinct center was left, so it shares one with another


@dataclass(frozen=True, slots=True, eq=False)
class CenterPlacement:
    """New centers in the order they were placed, and the coverage they bring."""

    added: np.ndarray         # candidate indices, in placement order (may be fewer than budget)
    gain: np.ndarray          # newly covered residents per placement (greedy order; MIP: own reach)
    covered_before: int       # residents within the limit of an open center before
    covered_after: int        # ... and after placing `added`
    reachable: int            # residents who reach any candidate (the most coverage can be)
    upper_bound: int          # no `budget` new centers can cover more than this
    method: str               # 'greedy' or 'milp'
    optimal: bool             # proven optimal (MIP solved, or the bound is met)


def _check_shapes(minutes: sp.csr_matrix, pop: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    if not sp.issparse(minutes):
        msg = f"`minutes` must be a scipy sparse matrix (units x candidates), got {type(minutes).__name__}."
        raise TypeError(msg)
    pop = np.asarray(pop)
    if pop.shape != (minutes.shape[0],):
        msg = f"`pop` must hold one value per unit ({minutes.shape[0]}), got shape {pop.shape}."
        raise InputError(msg)
    if (pop < 0).any():
        msg = "`pop` must not be negative."
        raise InputError(msg)
    minutes = sp.csr_matrix(minutes)
    minutes.sort_indices()
    return minutes, pop.astype("int64")


def _per_candidate(values: np.ndarray | None, n: int, name: str, dtype: str) -> np.ndarray | None:
    if values is None:
        return None
    values = np.asarray(values, dtype=dtype)
    if values.shape != (n,):
        msg = f"`{name}` must hold one value per candidate ({n}), got shape {values.shape}."
        raise InputError(msg)
    return values


def choose_centers(minutes: sp.csr_matrix, pop: np.ndarray, labels: np.ndarray, *,
                   existing: np.ndarray | None = None,
                   candidate_community: np.ndarray | None = None,
                   existing_bonus_minutes: float = DEFAULT_EXISTING_BONUS_MINUTES,
                   distinct: bool = True) -> CenterChoice:
    """
    The best center for each community: most members within the limit, then shortest walk.

    A candidate's score for a community is (members it reaches, their population-weighted mean
    minutes). Most residents reached wins; among equals the shorter mean walk, where an existing
    center's mean counts `existing_bonus_minutes` less — so an existing center is kept when it
    reaches as many residents and its mean walk is at most that much longer; last, the lowest
    candidate index.

    Parameters
    ----------
    minutes
        Units x candidates minutes; a stored entry (zeros included) means reachable in the limit.
    pop
        Residents per unit.
    labels
        Community per unit, 0..K-1; -1 for units in no community. K = ``labels.max() + 1``.
    existing
        Bool per candidate: an existing center (None: none is).
    candidate_community
        Per candidate, the only community it may serve (e.g. the one it stands in); -1 = any.
    distinct
        Give every community its own center: when two communities would pick the same one,
        a sparse minimum-weight bipartite matching (LAPJVsp) maximises the residents covered in
        total, then minimises the summed mean walks. A community left with no free candidate
        reaching any member takes its own best anyway and is flagged ``shared``.

    Returns
    -------
    CenterChoice

    Raises
    ------
    InputError
        If the shapes disagree, populations are negative or a label is below -1.
    """
    minutes, pop = _check_shapes(minutes, pop)
    n_units, n_cand = minutes.shape
    labels = np.asarray(labels, dtype="int64")
    if labels.shape != (n_units,):
        msg = f"`labels` must hold one community per unit ({n_units}), got shape {labels.shape}."
        raise InputError(msg)
    if (labels < -1).any():
        msg = "`labels` must be community numbers 0..K-1, or -1 for units in no community."
        raise InputError(msg)
    existing = _per_candidate(existing, n_cand, "existing", "bool")
    candidate_community = _per_candidate(candidate_community, n_cand, "candidate_community", "int64")
    k = int(labels.max()) + 1 if n_units else 0
    population = np.bincount(labels[labels >= 0], weights=pop[labels >= 0], minlength=k).astype("int64")

    covered, mean, peak = _community_scores(minutes, pop, labels, k, candidate_community)
    bonus = np.zeros(n_cand) if existing is None else existing_bonus_minutes * existing
    adjusted = sp.csr_matrix((mean.data - bonus[mean.indices], mean.indices, mean.indptr), shape=mean.shape)
    best = _row_best(covered, adjusted)
    shared = np.zeros(k, dtype=bool)
    center = best
    picked = best[best >= 0]
    if distinct and len(np.unique(picked)) < len(picked):
        center, shared = _distinct(covered, adjusted, population, best, bonus_max=float(bonus.max(initial=0)))

    got_cov, got_mean, got_max = (np.zeros(k, dtype="int64"), np.full(k, np.nan), np.full(k, np.nan))
    has = np.flatnonzero(center >= 0)
    if len(has):
        got_cov[has] = _entries(covered, has, center[has]).astype("int64")
        got_mean[has] = _entries(mean, has, center[has])
        got_max[has] = _entries(peak, has, center[has])
    logger.info("Centers for %d communities: %d of %d residents within the limit of their center; "
                "%d without any reaching candidate, %d sharing a center", k, int(got_cov.sum()),
                int(population.sum()), int((center < 0).sum()), int(shared.sum()))
    return CenterChoice(center=center, population=population, covered=got_cov,
                        mean_minutes=got_mean, max_minutes=got_max, shared=shared)


def _community_scores(minutes: sp.csr_matrix, pop: np.ndarray, labels: np.ndarray, k: int,
                      candidate_community: np.ndarray | None):
    """Communities x candidates: residents reached, their mean minutes and the worst minutes.

    Every stored pair is summed into its (community, candidate) cell, so the work follows the
    pairs in the reach matrix, never communities x candidates.
    """
    rows = np.repeat(np.arange(minutes.shape[0]), np.diff(minutes.indptr))
    label = labels[rows]
    keep = label >= 0
    if candidate_community is not None:
        allowed = candidate_community[minutes.indices]
        keep &= (allowed < 0) | (allowed == label)
    label, cand = label[keep], minutes.indices[keep]
    people, mins = pop[rows[keep]].astype("float64"), minutes.data[keep].astype("float64")
    shape = (k, minutes.shape[1])
    covered = sp.csr_matrix((people, (label, cand)), shape=shape)
    weighted = sp.csr_matrix((people * mins, (label, cand)), shape=shape)
    # Worst minutes per cell: sort so the last entry of each (community, candidate) is largest.
    order = np.lexsort((mins, cand, label))
    key = label[order] * shape[1] + cand[order]
    last = np.r_[key[1:] != key[:-1], True]
    peak = sp.csr_matrix((mins[order][last], (label[order][last], cand[order][last])), shape=shape)
    for matrix in (covered, weighted, peak):
        matrix.sort_indices()
    # covered and weighted share one sparsity pattern (same pairs summed), so data aligns.
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_data = np.where(covered.data > 0, weighted.data / covered.data, 0.0)
    mean = sp.csr_matrix((mean_data, covered.indices.copy(), covered.indptr.copy()), shape=shape)
    return covered, mean, peak


def _entries(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.asarray(matrix[rows, cols]).ravel()


def _row_best(covered: sp.csr_matrix, adjusted: sp.csr_matrix) -> np.ndarray:
    """Per row: most covered, then least adjusted mean, then lowest column; -1 for empty rows."""
    n = covered.shape[0]
    counts = np.diff(covered.indptr)
    rows = np.repeat(np.arange(n), counts)
    order = np.lexsort((covered.indices, adjusted.data, -covered.data, rows))
    best = np.full(n, -1, dtype="int64")
    best[counts > 0] = covered.indices[order[covered.indptr[:-1][counts > 0]]]
    return best


def _distinct(covered: sp.csr_matrix, adjusted: sp.csr_matrix, population: np.ndarray,
              best: np.ndarray, *, bonus_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Distinct centers by a full bipartite matching with one private fallback column per row.

    Weight = uncovered residents x M + adjusted mean + offset, with M larger than any possible
    difference in summed means, so the matching covers the most residents in total first. The
    fallback column costs more than every real option, so it is used only where no free
    candidate is left; such a row keeps its own best (shared) center.
    """
    k, n_cand = covered.shape
    span = float(adjusted.data.max(initial=0)) + bonus_max + 1.0   # adjusted + bonus_max + 1 > 0
    big = k * span + 1.0
    counts = np.diff(covered.indptr)
    rows = np.repeat(np.arange(k), counts)
    weight = (population[rows] - covered.data) * big + adjusted.data + bonus_max + 1.0
    fallback = (population + 1.0) * big
    matrix = sp.csr_matrix((np.r_[weight, fallback],
                            (np.r_[rows, np.arange(k)], np.r_[covered.indices, n_cand + np.arange(k)])),
                           shape=(k, n_cand + k))
    row, col = min_weight_full_bipartite_matching(matrix)
    center = np.full(k, -1, dtype="int64")
    center[row] = np.where(col < n_cand, col, -1)
    shared = (center < 0) & (best >= 0)
    center[shared] = best[shared]
    return center, shared


def place_centers(minutes: sp.csr_matrix, pop: np.ndarray, *, budget: int,
                  open_centers: np.ndarray | None = None, method: PlacementMethod = "greedy",
                  time_limit_s: float = 60.0) -> CenterPlacement:
    """
    Place up to `budget` new centers to cover the most residents no open center reaches.

    ``method="greedy"`` (default): lazy greedy maximum coverage — each step opens the candidate
    that covers the most still-uncovered residents (ties: lowest index), re-evaluating only the
    top of a heap. Near-linear in the stored pairs and guaranteed within 1 - 1/e of the optimum;
    it also returns a bound (covered + the `budget` largest remaining gains, valid because
    coverage is submodular), so the gap is known. ``method="milp"``: the exact maximum coverage
    MIP solved by HiGHS (`scipy.optimize.milp`) — for small instances and budgets, where its
    optimum is worth the exponential worst case; stopped at `time_limit_s` with its dual bound.

    Parameters
    ----------
    minutes
        Units x candidates minutes; stored entries are pairs within the limit.
    pop
        Residents per unit.
    budget
        How many new centers may open (>= 0).
    open_centers
        Candidate indices already open (None: none); never chosen again.

    Returns
    -------
    CenterPlacement
    """
    minutes, pop = _check_shapes(minutes, pop)
    if int(budget) != budget or budget < 0:
        msg = f"`budget` must be a whole number of centers >= 0, got {budget!r}."
        raise InputError(msg)
    if method not in ("greedy", "milp"):
        msg = f"`method` must be 'greedy' or 'milp', got {method!r}."
        raise InputError(msg)
    n_units, n_cand = minutes.shape
    is_open = np.zeros(n_cand, dtype=bool)
    if open_centers is not None:
        open_centers = np.asarray(open_centers, dtype="int64")
        if len(open_centers) and (open_centers.min() < 0 or open_centers.max() >= n_cand):
            msg = f"`open_centers` must be candidate indices in 0..{n_cand - 1}."
            raise InputError(msg)
        is_open[open_centers] = True
    reachable = np.diff(minutes.indptr) > 0
    csc = minutes.tocsc()
    csc.sort_indices()
    covered = np.zeros(n_units, dtype=bool)
    for c in np.flatnonzero(is_open):
        covered[csc.indices[csc.indptr[c]:csc.indptr[c + 1]]] = True
    before = int(pop[covered].sum())
    free = ~is_open
    if method == "greedy":
        added, gain, covered = _greedy(csc, pop, covered, free, int(budget))
        remaining = _gains(csc, pop, covered) * free
        remaining[added] = 0
        after = int(pop[covered].sum())
        bound = min(after + int(np.sort(remaining)[::-1][:int(budget)].sum()), int(pop[reachable].sum()))
        optimal = bound == after
    else:
        added, gain, after, bound, optimal = _milp(csc, pop, covered, free, int(budget), time_limit_s)
    logger.info("Placed %d new centers (%s): covered %d -> %d residents (bound %d, reachable %d)",
                len(added), method, before, after, bound, int(pop[reachable].sum()))
    return CenterPlacement(added=added, gain=gain, covered_before=before, covered_after=after,
                           reachable=int(pop[reachable].sum()), upper_bound=int(bound),
                           method=method, optimal=bool(optimal))


def _gains(csc: sp.csc_matrix, pop: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Per candidate, the residents it reaches who are not covered yet."""
    running = np.r_[0, np.cumsum(np.where(covered, 0, pop)[csc.indices])]
    return (running[csc.indptr[1:]] - running[csc.indptr[:-1]]).astype("int64")


def _greedy(csc: sp.csc_matrix, pop: np.ndarray, covered: np.ndarray, free: np.ndarray,
            budget: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lazy greedy: stale heap keys are upper bounds (gains only shrink), so the popped
    candidate whose fresh gain still tops the heap is the true best; equal gains pop the lowest
    index first, which keeps the choice deterministic."""
    covered = covered.copy()
    gains = _gains(csc, pop, covered)
    heap = [(-int(g), int(c)) for c, g in enumerate(gains) if free[c] and g > 0]
    heapq.heapify(heap)
    added, gain = [], []
    while heap and len(added) < budget:
        _, c = heapq.heappop(heap)
        rows = csc.indices[csc.indptr[c]:csc.indptr[c + 1]]
        fresh = int(pop[rows][~covered[rows]].sum())
        if fresh <= 0:
            continue
        if heap and (-fresh, c) > heap[0]:
            heapq.heappush(heap, (-fresh, c))
            continue
        covered[rows] = True
        added.append(c)
        gain.append(fresh)
    return np.array(added, dtype="int64"), np.array(gain, dtype="int64"), covered


def _milp(csc: sp.csc_matrix, pop: np.ndarray, covered: np.ndarray, free: np.ndarray, budget: int,
          time_limit_s: float) -> tuple[np.ndarray, np.ndarray, int, int, bool]:
    """max sum pop_i y_i  s.t.  y_i <= sum_j a_ij x_j,  sum_j x_j <= budget,  x binary, y in [0, 1]."""
    cols = np.flatnonzero(free)
    sub = csc[:, cols].tocsr()
    units = np.flatnonzero(~covered & (np.diff(sub.indptr) > 0) & (pop > 0))
    before = int(pop[covered].sum())
    if len(units) == 0 or budget == 0:
        return np.zeros(0, dtype="int64"), np.zeros(0, dtype="int64"), before, before, True
    a = sub[units]
    n_x, n_y = len(cols), len(units)
    link = sp.hstack([-a.astype("float64"), sp.identity(n_y, format="csr")]).tocsr()
    total = sp.csr_matrix(np.r_[np.ones(n_x), np.zeros(n_y)][None, :])
    result = milp(c=np.r_[np.zeros(n_x), -pop[units].astype("float64")],
                  constraints=[LinearConstraint(link, -np.inf, 0), LinearConstraint(total, 0, budget)],
                  integrality=np.r_[np.ones(n_x), np.zeros(n_y)], bounds=Bounds(0, 1),
                  options={"time_limit": time_limit_s})
    if result.x is None:
        msg = f"HiGHS found no placement within {time_limit_s:g} s ({result.message}); use method='greedy'."
        raise InputError(msg)
    chosen = np.zeros(len(free), dtype=bool)
    chosen[cols[result.x[:n_x] > 0.5]] = True
    # Order the chosen sites greedily among themselves, so gains are marginal and add up.
    added, gain, reached = _greedy(csc, pop, covered, chosen, int(chosen.sum()))
    after = int(pop[reached].sum())
    bound = before + int(np.floor(-result.mip_dual_bound + 1e-6))
    return added, gain, after, max(bound, after), result.status == 0


@dataclass(frozen=True, slots=True, eq=False)
class CommunityCenters:
    """The chosen center of each community, as points in the population's CRS."""

    centers: gpd.GeoDataFrame   # community, candidate_id, center_id, existing, population,
                                # covered, mean_minutes, max_minutes, shared, geometry
    choice: CenterChoice


@dataclass(frozen=True, slots=True, eq=False)
class NewCenters:
    """New center sites in placement order, as points in the population's CRS."""

    sites: gpd.GeoDataFrame     # order, candidate_id, newly_covered, geometry
    placement: CenterPlacement


def choose_community_centers(reach: ReachMatrix, labels: np.ndarray, *,
                             community_areas: gpd.GeoSeries | None = None,
                             existing_bonus_minutes: float = DEFAULT_EXISTING_BONUS_MINUTES,
                             distinct: bool = True) -> CommunityCenters:
    """
    The best center for each community of units (see `choose_centers` for the rule).

    Parameters
    ----------
    reach
        Units x candidates minutes; existing centers are its candidates with ``existing``.
    labels
        Community per unit of ``reach.units`` (0..K-1, -1 none).
    community_areas
        Optional polygons, row k for community k (any CRS): a center must stand inside its
        community's area. A community with no candidate inside takes the best one anywhere.

    Returns
    -------
    CommunityCenters
    """
    candidates = reach.candidates
    existing = candidates["existing"].to_numpy(dtype=bool)
    inside = None
    if community_areas is not None:
        inside = _candidate_areas(candidates, community_areas)
    choice = choose_centers(reach.minutes, reach.pop, labels, existing=existing,
                            candidate_community=inside, existing_bonus_minutes=existing_bonus_minutes,
                            distinct=distinct)
    if inside is not None and (choice.center < 0).any() and (choice.population[choice.center < 0] > 0).any():
        anywhere = choose_centers(reach.minutes, reach.pop, labels, existing=existing,
                                  existing_bonus_minutes=existing_bonus_minutes, distinct=distinct)
        miss = (choice.center < 0) & (anywhere.center >= 0)
        choice = CenterChoice(**{f: np.where(miss, getattr(anywhere, f), getattr(choice, f))
                                 for f in CenterChoice.__slots__})
    has = choice.center >= 0
    rows = candidates.iloc[choice.center[has]]
    frame = gpd.GeoDataFrame({
        "community": np.flatnonzero(has), "candidate_id": rows["candidate_id"].to_numpy(),
        "center_id": np.where(rows["existing"], rows["center_id"],
                              [f"new-{c}" for c in rows["candidate_id"]]),
        "existing": rows["existing"].to_numpy(dtype=bool),
        "population": choice.population[has], "covered": choice.covered[has],
        "mean_minutes": choice.mean_minutes[has], "max_minutes": choice.max_minutes[has],
        "shared": choice.shared[has]}, geometry=rows.geometry.values, crs=reach.work_crs)
    return CommunityCenters(centers=frame.to_crs(reach.input_crs), choice=choice)


def _candidate_areas(candidates: gpd.GeoDataFrame, areas: gpd.GeoSeries) -> np.ndarray:
    """Row of `areas` holding each candidate (the first row on shared borders; -1 outside)."""
    from covplan.inputs.areas import label_units

    return label_units(candidates, gpd.GeoSeries(areas))


def site_new_centers(reach: ReachMatrix, *, budget: int, open_centers: np.ndarray | None = None,
                     method: PlacementMethod = "greedy", time_limit_s: float = 60.0) -> NewCenters:
    """
    Where `budget` new centers cover the most residents that no open center reaches.

    Parameters
    ----------
    reach
        Units x candidates minutes.
    budget
        Number of new centers.
    open_centers
        Candidate indices already open; None takes every existing center of `reach`.
    method
        'greedy' (default, any size) or 'milp' (exact, small instances); see `place_centers`.

    Returns
    -------
    NewCenters
    """
    if open_centers is None:
        open_centers = np.flatnonzero(reach.candidates["existing"].to_numpy(dtype=bool))
    placement = place_centers(reach.minutes, reach.pop, budget=budget, open_centers=open_centers,
                              method=method, time_limit_s=time_limit_s)
    rows = reach.candidates.iloc[placement.added]
    sites = gpd.GeoDataFrame({"order": np.arange(1, len(rows) + 1),
                              "candidate_id": rows["candidate_id"].to_numpy(),
                              "newly_covered": placement.gain},
                             geometry=rows.geometry.values, crs=reach.work_crs)
    return NewCenters(sites=sites.to_crs(reach.input_crs), placement=placement)
