"""
The planner's array core: split population units into communities of about `target_pop`, each
served by one candidate center that every member reaches within the walking limit.

It sees only a sparse units x candidates matrix of minutes (stored = reachable), populations,
a unit adjacency and (optionally) unit coordinates. One run:

1. seed K centers (K = population / target, at least a packing lower bound of the 15-minute
   rule): recursive coordinate bisection into K equal-population parts, each served by the
   candidate reaching most of it, swapped where a part holds units no center reaches; greedy
   set cover adds centers for any unit still uncovered (coverage is a hard rule);
2. settle: min-cost-flow assignment with soft population bounds and re-siting each center at
   the cheapest candidate reaching all its members; stray pieces join a bordering community
   whose center reaches them, else become communities;
3. from then on communities have flexible centers (per community and candidate: members
   reached and their cost), so a community may take any unit some free candidate reaching all
   its members and the unit can serve. A local search moves boundary units (people outside the
   band first, then person-minutes plus a squared excess beyond a dead zone around the target,
   so surplus flows through communities in the band), keeping each donor connected;
4. reduce to K by dissolving communities into their neighbours, stray pieces first, then
   those whose neighbourhood is poorest in people (or re-solving the surroundings of a small
   one by flow with one center less); repair each community outside the band by
   re-solving its neighbourhood by flow from its current centers and rotated bisection seeds;
   transfer a community from where people are short to where they are plenty;
5. polish small instances with whole-instance center swaps, then rotated bisection seeds, each
   settled by flow and finished by a local search on a copy; then a local search that cuts
   person-minutes without letting any community leave the band; last, whole-plan flow
   reassignments from the final centers (stray pieces dissolved again), kept while they cut
   person-minutes without more communities outside the band.

Restarts rotate the bisection (more on small instances, fewer on large ones); the best plan
wins in the rules' order (`_search._band_key`): fewest residents in communities outside the
band (the product's promise is the share of residents in balanced communities), then fewest
tiny communities (under half the target), communities outside the band, people beyond its
edges, and last person-minutes. The count is not fixed: it floats with what the band allows.
Where covering everyone takes nearly K centers (the cover's LP floor at least 95 % of K: small
circles, slow walking) and the instance is not tight (stage 8's case), one more run starts from
a minimum cover (HiGHS) instead: bisection seeds plus the greedy cover open far more centers
than covering needs there, and reducing them leaves many communities short. Where a quarter of
the residents reach no site gathering 1.5 targets (thin instances), one more run starts from
nearly whole circles (`_circles_run`); it is improved with half a budget of its own and
finished apart, and wins only where its finished plan is better (`_finish`).

6. improve the winner (`improve`), and also the run with fewest tiny communities when that
   is another, and the minimum cover's run with half a budget of its own (tiny communities
   must be cleared at the end, at a cost in balance the band order alone doesn't foresee; the
   improved plan best in the rules' order wins, or the one
   with fewer tiny communities if it costs at most a target's residents more outside the band
   per tiny one): re-solve the window (one ring of neighbours, then two) around each community
   outside the band, with the window's count free among its current count and one more or
   less within [ceil(P / max_pop), floor(P / min_pop)] for its P residents: split a community
   in two, drop one, reseed, or seed one small community at an end of the window beside
   balanced ones; each center set is finished like a small run. A result is kept only when
   the rules' order strictly improves, without a new tiny community; coverage and contiguity
   hold by construction. A budget of settled window units (not a clock) bounds it, so a seed
   still gives one plan. Then each tiny community's window is re-solved for fewer tiny
   communities at a cost of at most a target's residents outside the band per tiny one
   cleared. Exception communities (forced-undersized residents, planned apart) take one run
   and no improvement: no seed or window brings them to the band.
7. put the winner's windows to CP-SAT (`solve_windows`; above `_EXACT_UNITS` units, redraws only):
   around each community outside the band, a constraint model asks for one more balanced
   community (or none tiny, keeping every balanced resident) with every community connected;
   then, around each tiny community left, one without it at a loss of at most a
   target's balanced residents; a second of the solver's deterministic time (1.2 s above
   `_EXACT_UNITS`), and half a second more for the tiny communities.
7a. aim at the band (`aim_at_band`): each window whose communities all fall short of the band
   is re-solved with one of them centered at a site gathering most of the window and filled
   first, kept only with fewer residents outside the band and no tiny community more.
7b. recombine (`recombine`): every community the runs, the improvement and the windows made
   (center and members, each once) is a column of a set-partitioning model, and CP-SAT picks
   the best exact cover of the units with distinct centers (half a second of deterministic
   time, hinted with the plan): the plan changes only where that lowers the residents outside the
   band plus a target's residents per tiny community. It joins a good stretch of one run with
   a good stretch of another where their borders meet.
7c. swap centers (`swap_centers`, redraws): each community's center is moved to a free site
   that would save most person-minutes and its window settled again by flow, kept when its
   walks get shorter and no rule there gets worse; communities near a kept swap are tried
   again, within a budget of settled window units.
8. where the instance is tight (covering everyone takes as many centers as the residents fill
   at the band's floor), plan it from a few minimum covers by a small MIP each (`tight_cover`),
   kept when connected and better in the rules' order.

Deterministic for a seed: np.random.default_rng(seed) only, ties broken by index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from covplan._parallel import run_tasks, shared
from covplan._sparse import lookup, row_slice
from covplan.defaults import population_band
from covplan.errors import InputError
from covplan.solve.partition.exact_window import SOLVE_SECONDS, solve_windows
from covplan.solve.partition.flow import assign_by_flow, attach_strays, settle, split_pieces
from covplan.solve.partition.improve import aim_at_band, improve
from covplan.solve.partition.recombine import SeenCommunities, recombine
from covplan.solve.partition.refine import (
    POLISH_BUDGET,
    POLISH_UNITS,
    TRANSFERS,
    polish,
    reassign,
    reduce_to,
    repair,
    swap_centers,
    transfer,
)
from covplan.solve.partition.search import (
    BALANCE_WEIGHT,
    FINAL_WEIGHT,
    SearchPlan,
    band_key,
    local_search,
    problem_band_key,
    shared_fields,
    tiny_first_order,
    worth_clearing,
)
from covplan.solve.partition.seeding import (
    circle_packing,
    greedy_seeds,
    min_cover,
    packing_bound,
    seed_centers,
    set_cover,
)
from covplan.solve.partition.tight_cover import cover_plan

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Partition", "PartitionProblem", "band_key", "choose_k", "partition_all",
           "partition_units", "population_band"]

logger = logging.getLogger(__name__)

_REASSIGNS = 4              # whole-plan flow reassignments at the end, while they improve
_GROW_ROUNDS = 10           # local-search rounds before reducing (lets stray pieces grow)
_RESTART_UNITS = 25_000     # restarts x units stays below this (at least one run)
_SMALL_UNITS = 2_400        # small instances get more runs, up to runs x units = this ...
_SMALL_RUNS = 8             # ... and this many: they cost little and settle small plans closer
                            # to the optimum (within 2 % of the MIP bound on 300-unit grids)
_IMPROVE_WORK = 40         # improvement phase: window units settled, per unit of the instance ...
_IMPROVE_CAP = 150_000      # ... and at most this many (about 5 s on the 2-core machine)
_SWAP_WORK = 30             # center swaps of a finished plan: window units settled per unit of
_SWAP_CAP = 100_000         # the instance, at most this many (São Paulo's swaps end at 28 per
                            # unit, Chengdu's at 11)
_EXACT_SECONDS = 1.0        # CP-SAT's deterministic time for the winner's last windows, half a
_EXACT_UNITS = 2_500        # second a model, in instances up to this many units; above, a city
_EXACT_LARGE = (1.2, 1.0)   # of a million planned whole (Chengdu, 2,700-3,200 units), a redraw
                            # gets 1.2 s at 1 s a model: its windows are larger, and the model
                            # that answers on Chengdu takes 0.85 s after 0.3 s of models proven
                            # infeasible (91.2 -> 93.0 %, +2.5 s). A merge/split of that size,
                            # which plans twice side by side, skips them: Chengdu's would take
                            # 15.4-16 s against 13.6 s
_THIN_GATHER = 1.5          # one more run, from nearly whole circles, where this share of the
_THIN_SHARE = 0.25          # residents reach no site gathering this many targets (`_thin`)
_COVER_BINDS = 0.95         # one more run, seeded by a minimum cover, where covering everyone
                            # takes at least this share of K centers (and the instance is not
                            # tight: stage 8 plans those from covers): slow walking, small circles


@dataclass(frozen=True, slots=True, eq=False)
class PartitionProblem:
    """One instance: units x candidates minutes, populations, adjacency and preferences."""

    minutes: sp.csr_matrix            # units x candidates; stored entries = reachable
    pop: np.ndarray                   # int64 per unit
    adjacency: sp.csr_matrix | None   # units x units, symmetric; None = no contiguity rule
    target_pop: float
    tolerance: float
    n_communities: int | None = None  # None: chosen from population / target
    existing: np.ndarray | None = None        # bool per candidate: an existing center
    unit_prior: np.ndarray | None = None      # old community index per unit (-1 none)
    candidate_prior: np.ndarray | None = None  # old community a candidate serves (-1 none)
    stability_minutes: float = 2.0    # per-person cost of leaving one's old community
    existing_bonus_minutes: float = 0.5  # per-person preference for an existing center site
    locked: np.ndarray | None = None  # bool per candidate: an existing center that must stay open
    locked_bonus_minutes: float = 15.0  # per-person pull of a locked site (a walk's worth)
    xy: np.ndarray | None = None      # units x 2 coordinates in metres (seeding); None: greedy
    tiny_share: float = 0.5           # a community below this share of the target is tiny
    exceptions_only: bool = False     # every unit is a proven exception: tiny is no fault
    # Told the improved plan's centers (as columns) before its last stages, which keep most of
    # them: the pipeline draws their isochrones meanwhile (`covplan.reach.ahead`).
    on_centers: Callable[[np.ndarray], None] | None = None

    @property
    def min_pop(self) -> float:
        return population_band(self.target_pop, self.tolerance)[0]

    @property
    def max_pop(self) -> float:
        return population_band(self.target_pop, self.tolerance)[1]

    @property
    def tiny_pop(self) -> float:
        """The tiny-community floor (`tiny_share` of the target)."""
        return self.tiny_share * self.target_pop


@dataclass(frozen=True, slots=True, eq=False)
class Partition:
    """Each unit's center (candidate index, -1 when it reaches none) and the plan's cost."""

    center: np.ndarray
    centers: np.ndarray
    objective: float          # sum of pop x minutes over served units
    violation: float          # people outside the population band, summed over communities
    cover_centers: int        # centers a greedy set cover needs for the 15-minute rule alone
    disconnected: int = 0     # communities left in more than one piece (nowhere else to go)


def choose_k(total: float, target: float, tolerance: float) -> int:
    """The community count whose mean size is nearest the target while inside the band if possible."""
    lo, hi = target * (1 - tolerance), target * (1 + tolerance)
    k_min = max(1, int(np.ceil(total / hi)))
    k_max = max(1, int(np.floor(total / lo)))
    if k_min <= k_max:
        ideal = total / target
        return int(min(range(k_min, k_max + 1), key=lambda k: (abs(k - ideal), k)))
    # No count puts the mean inside the band: take the one with the smaller relative miss.
    return k_min if abs(total / k_min - target) <= abs(total / max(k_max, 1) - target) else max(k_max, 1)


def _validate(problem: PartitionProblem) -> None:
    n_units, n_cand = problem.minutes.shape
    if len(problem.pop) != n_units:
        msg = f"`pop` has {len(problem.pop)} entries for {n_units} units."
        raise InputError(msg)
    if np.any(np.asarray(problem.pop) < 0):
        msg = "`pop` must not be negative."
        raise InputError(msg)
    if not 0 < problem.tolerance < 1:
        msg = f"`tolerance` must be between 0 and 1 (exclusive), got {problem.tolerance!r}."
        raise InputError(msg)
    if not problem.target_pop > 0:
        msg = f"`target_pop` must be positive, got {problem.target_pop!r}."
        raise InputError(msg)
    if problem.n_communities is not None and problem.n_communities < 1:
        msg = f"`n_communities` must be at least 1, got {problem.n_communities!r}."
        raise InputError(msg)
    if problem.adjacency is not None and problem.adjacency.shape != (n_units, n_units):
        msg = f"`adjacency` must be {n_units} x {n_units}, got {problem.adjacency.shape}."
        raise InputError(msg)
    if problem.xy is not None and np.shape(problem.xy) != (n_units, 2):
        msg = f"`xy` must be {n_units} x 2, got {np.shape(problem.xy)}."
        raise InputError(msg)
    for name, length in (("existing", n_cand), ("candidate_prior", n_cand), ("unit_prior", n_units),
                         ("locked", n_cand)):
        value = getattr(problem, name)
        if value is not None and len(value) != length:
            msg = f"`{name}` has {len(value)} entries, expected {length}."
            raise InputError(msg)


def _per_person(problem: PartitionProblem, minutes: sp.csr_matrix) -> np.ndarray:
    """Per stored entry: minutes + stability cost - existing-site bonus, per person."""
    units = np.repeat(np.arange(minutes.shape[0]), np.diff(minutes.indptr))
    cand = minutes.indices
    cost = minutes.data.astype("float64")
    if problem.unit_prior is not None and problem.candidate_prior is not None:
        old = np.asarray(problem.unit_prior)[units]
        cost = cost + problem.stability_minutes * ((old >= 0) & (old != np.asarray(problem.candidate_prior)[cand]))
    if problem.existing is not None:
        cost = cost - problem.existing_bonus_minutes * np.asarray(problem.existing, bool)[cand]
    if problem.locked is not None:
        # A pull as large as a whole walk: a community whose members all reach a locked site
        # takes it as its center (re-siting picks the cheapest site reaching all), and moves
        # that would cut a member off from it cost more than any walk saves.
        cost = cost - problem.locked_bonus_minutes * np.asarray(problem.locked, bool)[cand]
    return cost


def _matrices(problem: PartitionProblem, minutes: sp.csr_matrix) -> tuple[sp.csr_matrix, ...]:
    """Per stored pair: cost per person, cost x population, and 1 (reachable); sorted CSR."""
    shape = minutes.shape
    structure = sp.csr_matrix((np.ones(minutes.nnz), minutes.indices, minutes.indptr), shape=shape)
    per_person = sp.csr_matrix((_per_person(problem, minutes), minutes.indices, minutes.indptr), shape=shape)
    weighted = sp.csr_matrix((per_person.data * np.repeat(problem.pop.astype("float64"), np.diff(minutes.indptr)),
                              minutes.indices, minutes.indptr), shape=shape)
    return per_person, weighted, structure


def _trace(plan: SearchPlan, stage: str) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        residents, tiny, n_out, people, cost = plan.key()
        logger.debug("%s: %d communities, %d outside the band (%.0f residents, %.0f beyond its "
                     "edges), %d tiny, cost %.0f", stage, len(plan.alive), n_out, residents, people,
                     tiny, cost)


def _one_run(problem: PartitionProblem, per_person: sp.csr_matrix, weighted: sp.csr_matrix,
             structure: sp.csr_matrix, k: int, angle: float, *, start: str = "bisect") -> SearchPlan:
    if start == "circles":
        return _circles_run(problem, per_person, weighted, structure, k, angle)
    from_cover = start == "cover"
    pop = problem.pop.astype("float64")
    seeds = min_cover(structure) if from_cover else []
    if seeds:
        # Where covering binds the count, bisection seeds plus a greedy cover open far more
        # centers than covering needs (river at 3.6 km/h: 41-43 where 25 cover everyone), and
        # reducing them back leaves many communities short; a minimum cover starts lean.
        k = max(k, len(seeds))
    elif problem.xy is not None:
        seeds = seed_centers(problem.xy, pop, structure, k, angle)
    else:
        seeds = greedy_seeds(per_person, pop, k)
    if problem.locked is not None:      # locked sites seed communities of their own first
        locked = np.flatnonzero(problem.locked).tolist()
        seeds = locked + [c for c in seeds if c not in set(locked)]
    centers = np.array(set_cover(structure, pop, seeds), dtype="int64")
    centers, label = settle(pop, problem.min_pop, problem.max_pop, per_person, structure, weighted, centers)
    label = attach_strays(label, pop, weighted, problem.adjacency, centers, strict=False)
    plan = SearchPlan(problem, per_person, weighted, structure, split_pieces(label, problem.adjacency))
    plan.seen = SeenCommunities()       # for the recombination (stage 7b)
    _trace(plan, "settled")
    local_search(plan, BALANCE_WEIGHT, _GROW_ROUNDS)
    reduce_to(plan, k)
    _trace(plan, "reduced")
    local_search(plan, BALANCE_WEIGHT)
    angles = np.linspace(0, np.pi, 4, endpoint=False) + angle
    repair(plan, angles)
    _trace(plan, "repaired")
    plan = transfer(plan, angles, TRANSFERS)
    _trace(plan, "transferred")
    if len(pop) <= POLISH_UNITS:
        plan = polish(plan, POLISH_BUDGET)
    local_search(plan, FINAL_WEIGHT, count_first=True)
    for _ in range(_REASSIGNS):
        better = reassign(plan)
        if better is plan:
            break
        plan = better
    _trace(plan, "final")
    return plan


def _circles_run(problem: PartitionProblem, per_person: sp.csr_matrix, weighted: sp.csr_matrix,
                 structure: sp.csr_matrix, k: int, angle: float) -> SearchPlan:
    """
    A run from nearly whole circles (`circle_packing`, up to a quarter of the way from the
    band's floor to the target, slivers under the tiny floor given to the circles around), the
    residents left settled by flow among centers covering them. Where circles barely gather the
    band's floor, a community in the band must be nearly a whole circle, and the other runs'
    stages spread residents evenly (the flow's floor reward and the search's squared excess are
    convex) until many communities are short: on the synthetic `motorway` city (28 % of its
    planned residents reach no site gathering 15,000) the runs put 56.4 % of them in the band,
    this one, improved and finished, 59.8 % with as many tiny communities. So each later stage
    is kept only where the rules' order improves (`_kept_if_better`).
    """
    pop = problem.pop.astype("float64")
    cap = problem.min_pop + 0.25 * (problem.target_pop - problem.min_pop)
    label, centers = circle_packing(per_person, pop, problem.adjacency, floor=problem.min_pop,
                                    cap=cap, sliver=problem.tiny_pop, hi=problem.max_pop)
    rest = np.flatnonzero(label < 0)
    if len(rest):
        # Row subsets keep the explicit zeros (a unit on its site walks 0 minutes), which a
        # product with a 0/1 diagonal would drop.
        more = np.setdiff1d(set_cover(structure[rest], pop[rest]), centers)
        if len(more):
            own = assign_by_flow(pop[rest], problem.min_pop, problem.max_pop, per_person[rest], more)
            label[rest[own >= 0]] = own[own >= 0] + len(centers)
        # A unit whose only sites are circles' centers (the cover leaves those out) joins the
        # cheapest of those circles, in the band or not: coverage is a hard rule.
        circle_of = np.full(structure.shape[1], -1, dtype="int64")
        circle_of[centers] = np.arange(len(centers))
        for u in np.flatnonzero((label < 0) & (np.diff(structure.indptr) > 0)):
            entries = row_slice(per_person, u)
            sites, values = per_person.indices[entries], per_person.data[entries]
            mine = circle_of[sites] >= 0
            if mine.any():
                label[u] = circle_of[sites[mine][np.lexsort((sites[mine], values[mine]))[0]]]
        centers = np.concatenate([centers, more])
    label = attach_strays(label, pop, weighted, problem.adjacency, centers, strict=False)
    plan = SearchPlan(problem, per_person, weighted, structure, split_pieces(label, problem.adjacency))
    plan.seen = SeenCommunities()
    _trace(plan, "packed")
    angles = np.linspace(0, np.pi, 4, endpoint=False) + angle
    plan = _kept_if_better(plan, lambda p: local_search(p, BALANCE_WEIGHT, _GROW_ROUNDS))
    plan = _kept_if_better(plan, lambda p: reduce_to(p, k))
    plan = _kept_if_better(plan, lambda p: local_search(p, BALANCE_WEIGHT))
    plan = _kept_if_better(plan, lambda p: repair(p, angles))
    plan = _kept_if_better(plan, lambda p: transfer(p, angles, TRANSFERS))
    plan = _kept_if_better(plan, lambda p: local_search(p, FINAL_WEIGHT, count_first=True))
    _trace(plan, "final")
    return plan


def _kept_if_better(plan: SearchPlan, stage) -> SearchPlan:
    """`stage` run on a copy of `plan` (it changes the copy or returns a new plan), kept where
    the rules' order improves without more tiny communities, or where it clears tiny ones at
    the price `worth_clearing` allows."""
    trial = plan.copy()
    out = stage(trial)
    trial = out if isinstance(out, SearchPlan) else trial
    before, after = plan.key(), trial.key()
    if after[1] <= before[1] and after < before:
        return trial
    if after[1] < before[1] and worth_clearing(before, after, plan.problem.target_pop):
        return trial
    return plan


def _centers_of(plan: SearchPlan) -> np.ndarray:
    center = np.full(len(plan.label), -1, dtype="int64")
    served = plan.label >= 0
    center[served] = plan.center[plan.label[served]]
    return center


def _score(problem: PartitionProblem, center: np.ndarray) -> tuple[int, float, int, float, float]:
    """`problem_band_key` of the communities (residents outside the band, tiny communities,
    communities outside it, people beyond its edges), then person-minutes: the rules' order."""
    pop = problem.pop.astype("float64")
    served = np.flatnonzero(center >= 0)
    _, inverse = np.unique(center[served], return_inverse=True)
    minutes, _ = lookup(problem.minutes, served, center[served])
    return (*problem_band_key(np.bincount(inverse, weights=pop[served]), problem),
            float((minutes * pop[served]).sum()))


def _disconnected(problem: PartitionProblem, center: np.ndarray) -> int:
    if problem.adjacency is None:
        return 0
    return len(np.unique(split_pieces(center, problem.adjacency)[center >= 0])) - len(np.unique(center[center >= 0]))


@dataclass(frozen=True, slots=True, eq=False)
class _Prepared:
    """A problem ready for its runs: sorted minutes, the search matrices, K and the runs' angles."""

    problem: PartitionProblem
    minutes: sp.csr_matrix
    matrices: tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]   # per person, weighted, structure
    k: int
    angles: np.ndarray
    greedy_cover: int         # centers the greedy set cover opens (the partition reports it)
    cover_run: bool = False   # one more run, seeded by a minimum cover (`_covering_binds`)
    circles_run: bool = False  # one more run, last, from nearly whole circles (`_thin`)

    def tasks(self, i: int) -> list[tuple[int, float, str]]:
        """The runs of the i-th problem: (i, angle, start: 'bisect', 'cover' or 'circles')."""
        return ([(i, float(a), "bisect") for a in self.angles] + [(i, 0.0, "cover")] * self.cover_run
                + [(i, 0.0, "circles")] * self.circles_run)


def _prepare(problem: PartitionProblem, seed: int | np.random.Generator | None,
             restarts: int) -> _Prepared | Partition:
    """The problem's matrices, K and run angles; its partition at once when no unit reaches a candidate."""
    _validate(problem)
    rng = np.random.default_rng(seed)
    minutes = sp.csr_matrix(problem.minutes, dtype="float64")
    minutes.sort_indices()
    n = minutes.shape[0]
    reachable = np.diff(minutes.indptr) > 0
    if not reachable.any():
        return Partition(np.full(n, -1, dtype="int64"), np.zeros(0, "int64"), 0.0, 0.0, 0)
    matrices = _matrices(problem, minutes)
    total = float(problem.pop[reachable].sum())
    k = problem.n_communities or max(choose_k(total, problem.target_pop, problem.tolerance),
                                     packing_bound(matrices[2]))
    # Exceptions take one run: no seed brings forced-undersized residents to the band.
    wanted = 1 if problem.exceptions_only else max(restarts, min(_SMALL_RUNS, _SMALL_UNITS // max(n, 1)))
    runs = 1 if problem.xy is None else max(1, min(wanted, _RESTART_UNITS // max(n, 1)))
    greedy_cover = len(set_cover(matrices[2], problem.pop))
    cover_run = (runs > 1 and not problem.exceptions_only
                 and _covering_binds(problem, matrices[2], total, k, greedy_cover))
    if cover_run:
        logger.debug("Covering everyone binds the count (%d units, K = %d): one more run, from a "
                     "minimum cover", n, k)
    circles_run = runs > 1 and not problem.exceptions_only and _thin(problem, matrices[2])
    if circles_run:
        logger.debug("A thin instance (%d units): one more run, from nearly whole circles", n)
    return _Prepared(problem, minutes, matrices, k, np.r_[0.0, rng.uniform(0, np.pi, runs - 1)],
                     greedy_cover, cover_run, circles_run)


def _thin(problem: PartitionProblem, structure: sp.csr_matrix) -> bool:
    """Whether at least `_THIN_SHARE` of the residents reach no site gathering `_THIN_GATHER`
    targets: there a community in the band takes most of its center's circle."""
    pop = problem.pop.astype("float64")
    gather = structure.T @ pop
    best = structure.multiply(gather[None, :]).tocsr().max(axis=1).toarray().ravel()
    return bool(pop[best < _THIN_GATHER * problem.target_pop].sum() >= _THIN_SHARE * pop.sum())


def _covering_binds(problem: PartitionProblem, structure: sp.csr_matrix, total: float, k: int,
                    greedy_cover: int) -> bool:
    """Whether covering everyone takes at least `_COVER_BINDS` of the K centers (the cover's LP
    floor) in an instance that is not tight (stage 8's case)."""
    from covplan.solve.bounds import cover_floor, tight_count

    if greedy_cover < _COVER_BINDS * k:     # an upper bound on the floor: no LP (0.25 s on
        return False                        # Chengdu's units) where it already falls short
    floor = cover_floor(structure)
    if floor < _COVER_BINDS * k:
        return False
    return tight_count(structure, total, min_pop=problem.min_pop, max_pop=problem.max_pop,
                       floor=floor) is None


def _picks(ready: _Prepared, made: list[SearchPlan],
           jobs: int) -> tuple[list[SearchPlan], int, bool, list[tuple]]:
    """
    The runs to improve: the best in the rules' order, and the best with fewest tiny
    communities (the tiny ones must be cleared, at a cost in balance that the band order alone
    doesn't foresee), in run order; then the run from a minimum cover, where there is one and
    it is neither. Also how many of them share the improvement budget: the cover's run has half
    a budget of its own, since its settled plan need not be the best run's (river at 3.6 km/h:
    107,345 residents outside the band against 53,224) while improved it often wins (the plan
    84.7 % of residents in band against 74.4 %), and sharing would take budget from the others.
    Last the circles' run, with half a budget of its own too, but only where it is better
    (`_better`) than the others picked: improving it costs a thin city of 260,000 residents
    5-10 s, and on the thin cities tried, where it started worse it never finished better. The
    third value says whether it is picked; the fourth gives the picked runs' `_score` keys.
    """
    best: dict[str, tuple] = {}
    keys = []
    circles = len(made) - 1 if ready.circles_run else None
    cover = len(made) - 1 - ready.circles_run if ready.cover_run else None
    for run, plan in enumerate(made):
        key = _score(ready.problem, _centers_of(plan))   # the rules' order: band, then walking
        logger.debug("Run %d: %.0f residents outside the band, %d tiny communities, %d outside "
                     "the band, %.0f people beyond its edges, %.0f person-minutes", run, *key)
        keys.append(key)
        if run == circles:
            continue
        for name, rank in (("band", key), ("tidy", tiny_first_order(key))):
            if name not in best or rank < best[name][0]:
                best[name] = (rank, run, plan)
    picks = {run: plan for _, run, plan in best.values()}
    sharing = len(picks)
    if cover is not None:
        picks.setdefault(cover, made[cover])
    target = ready.problem.target_pop
    with_circles = circles is not None and _better(
        [keys[run] for run in sorted(picks)] + [keys[circles]], lambda k: k, target) is keys[circles]
    if with_circles:
        picks[circles] = made[circles]
    logger.debug("Improving run(s) %s on up to %d process(es)", sorted(picks), jobs)
    return ([plan for _, plan in sorted(picks.items())], sharing, with_circles,
            [keys[run] for run in sorted(picks)])


def _better(options: list, key, target_pop: float):
    """The better of `options` in the rules' order, or the one with fewer tiny communities where
    that costs at most a target's residents per tiny one (`worth_clearing`, the price tiny
    clearing pays); `key` gives an option's `band_key`-first key."""
    winner = min(options, key=key)
    tidy = min(options, key=lambda o: tiny_first_order(key(o)))
    if key(tidy)[1] < key(winner)[1] and worth_clearing(key(winner), key(tidy), target_pop):
        return tidy
    return winner


def _finish(ready: _Prepared, finals: list[SearchPlan], sharing: int,
            seen: SeenCommunities, apart: SeenCommunities, with_circles: bool) -> Partition:
    """
    Stages 7, 7b and 8 on the better improved run (`_better`). Where the minimum cover's run was
    improved beside the best runs (after the `sharing` others) and is the better one, they
    finish the better of the others too, and the better finished plan wins: the extra run never
    leaves a plan worse than the runs without it would have.

    The circles' run (the last of `finals` `with_circles`) is finished only where it is
    better than that, with every community `seen` and those it made itself (`apart`), and wins
    where its finished plan is better. Its communities are kept out of the others' pool: a
    larger pool can lead the recombination's time-limited search elsewhere, and a grid of
    small circles finished 9,366 residents outside the band without them, 9,457 with them.

    The plans finished are independent, each from its own copy of the pool, so they run side
    by side on the processes the plan leaves idle (`_finish_option`): on the thin cities two or
    three of them took 7-8 s each, one after another, while a processor sat idle.
    """
    problem = ready.problem
    ordinary = finals[:len(finals) - with_circles]
    winner = _better(ordinary, lambda p: p.key(), problem.target_pop)
    options = [winner]
    if any(winner is extra for extra in ordinary[sharing:]):
        options.append(_better(ordinary[:sharing], lambda p: p.key(), problem.target_pop))
    # Decided before finishing, which changes the runs it finishes.
    circles_better = with_circles and _better([winner, finals[-1]], lambda p: p.key(),
                                              problem.target_pop) is finals[-1]
    pools = [seen] * len(options)
    if circles_better:
        options.append(finals[-1])
        pool = SeenCommunities()
        pool.merge(seen)
        pool.merge(apart)
        pools.append(pool)
    finished = run_tasks(_finish_option, range(len(options)), jobs=1,
                         data={"ready": ready, "options": options, "pools": pools})
    center = _better(finished[:len(finished) - circles_better], lambda c: _score(problem, c),
                     problem.target_pop)
    if circles_better:
        center = _better([center, finished[-1]], lambda c: _score(problem, c), problem.target_pop)
    *_, violation, objective = _score(problem, center)
    return Partition(center, np.unique(center[center >= 0]), objective, violation,
                     ready.greedy_cover, _disconnected(problem, center))


def _finish_option(j: int) -> np.ndarray:
    """`_finished` of `_finish`'s j-th plan, from a copy of its pool (so that a plan finished
    here or in another process ends the same), run by `run_tasks`."""
    s = shared()
    pool = SeenCommunities()
    pool.merge(s["pools"][j])
    return _finished(s["ready"], s["options"][j], pool)


def _finished(ready: _Prepared, plan: SearchPlan, seen: SeenCommunities) -> np.ndarray:
    """Each unit's center after stages 7 (CP-SAT windows), windows that all fall short aimed at
    the band (`aim_at_band`; both change `plan`), 7b (recombination with every community `seen`),
    7c (center swaps) and 8 (tight covers)."""
    problem, n = ready.problem, ready.minutes.shape[0]
    _trace(plan, "improved")
    if problem.on_centers is not None:
        problem.on_centers(plan.center[plan.alive])
    plan.seen = seen        # the windows' splits go straight into the problem's pool
    seconds, per_model = (_EXACT_SECONDS, SOLVE_SECONDS) if n <= _EXACT_UNITS else _EXACT_LARGE
    if (not problem.exceptions_only and (n <= _EXACT_UNITS or problem.unit_prior is None)
            and solve_windows(plan, seconds=seconds, per_model=per_model)):
        _trace(plan, "solved exactly")
    if not problem.exceptions_only:
        # After the CP-SAT windows: aimed first, a window they would have cleared of a tiny
        # community can be left without a split (Chengdu's steeper population, seed 4).
        aim_at_band(plan, min(_IMPROVE_WORK * n, _IMPROVE_CAP) // 2)
        _trace(plan, "aimed at the band")
        recombined = recombine(plan, seen)
        if recombined is not None:
            plan = recombined
            _trace(plan, "recombined")
        if problem.unit_prior is None:
            # Redraws only: a merge/split's costs hold its residents' old communities, so there
            # the swaps mostly trade walks for stability (São Paulo's mean walk 5.41 -> 5.42
            # minutes), and its grids lost balance (the demo's 95.5 % -> 94.9 % of their ceiling).
            swap_centers(plan, min(_SWAP_WORK * n, _SWAP_CAP))
            _trace(plan, "centers swapped")
    center = _centers_of(plan)
    if not problem.exceptions_only and problem.locked is None:
        center = _from_cover(problem, ready.minutes, center)
    return center


def _run_task(task: tuple[int, float, str]) -> SearchPlan:
    """One run (`_one_run`) of the i-th problem from bisections rotated by `angle`, from a
    minimum cover or from nearly whole circles, run by `run_tasks`."""
    i, angle, start = task
    ready = shared()["ready"][i]
    return _one_run(ready.problem, *ready.matrices, ready.k, angle, start=start).detached()


def _improve_task(task: tuple[int, int]) -> SearchPlan:
    """`improve` of the i-th problem's j-th chosen run, run by `run_tasks`."""
    i, j = task
    s = shared()
    chosen, sharing, *_ = s["chosen"][i]
    ready = s["ready"][i]
    # The best runs share one budget; the minimum cover's run, when another, and the circles'
    # run have half of one each.
    budget = min(_IMPROVE_WORK * ready.minutes.shape[0], _IMPROVE_CAP) // (sharing if j < sharing else 2)
    return improve(chosen[j], np.linspace(0, np.pi, 4, endpoint=False) + ready.angles[-1],
                   budget).detached()


def _finish_task(i: int) -> Partition:
    """`_finish` of the i-th problem, run by `run_tasks`."""
    s = shared()
    return _finish(s["ready"][i], s["finals"][i], s["sharing"][i], s["seen"][i], s["apart"][i],
                   s["circles"][i])


def _from_cover(problem: PartitionProblem, minutes: sp.csr_matrix, center: np.ndarray) -> np.ndarray:
    """Stage 8: `center`, or a plan from a minimum cover (`cover_plan`, tight instances only)
    when that one is better in the rules' order."""
    key = _score(problem, center)
    served = float(problem.pop[center >= 0].sum())
    other = cover_plan(minutes, problem.pop.astype("float64"), problem.adjacency, center,
                       min_pop=problem.min_pop, max_pop=problem.max_pop,
                       tiny_pop=problem.tiny_pop, balanced=served - key[0])
    if other is None or tiny_first_order(_score(problem, other)) >= tiny_first_order(key):
        return center
    logger.debug("A minimum cover's plan replaces the winner: %s -> %s", key, _score(problem, other))
    return other


def partition_units(problem: PartitionProblem, *, seed: int | np.random.Generator | None = 0,
                    restarts: int = 3, tries: int = 1, jobs: int = 1) -> Partition:
    """
    Partition the units of `problem` into communities, each served by one candidate center.

    Parameters
    ----------
    problem
        The instance (see `PartitionProblem`).
    seed
        Seed of the restarts' random rotations; the same seed gives the same partition.
    restarts
        Runs from differently rotated bisections (the first unrotated; only with `xy`), capped
        so that runs x units stays under 25,000; instances of fewer than 1,200 units get more
        (up to 8, while runs x units stays under 2,400). The best partition in the rules' order
        (fewest residents in communities outside the band, then tiny communities, communities
        outside the band, people beyond its edges, person-minutes) wins, ties to the earliest,
        and is then improved window by window (stage 6), beside the best run with fewest tiny
        communities; then the winner's windows go to CP-SAT (stage 7), the best exact cover
        by every community the search made replaces it where better (stage 7b), and last a
        tight instance is planned from its minimum covers where that is better (stage 8).
    tries
        Whole partitions from the seeds `seed`, `seed` + 1, ...; the best in the rules' order
        wins (`partition_all`).
    jobs
        Processes for the runs and for improving the two chosen runs; the partition is the
        same for any number.

    Returns
    -------
    Partition
        Every unit that reaches some candidate is served by a center it reaches (hard rule);
        units that reach none get -1.

    Raises
    ------
    InputError
        If shapes disagree, a population is negative, or target / tolerance / count are unusable.
    """
    return partition_all([problem], seed=seed, restarts=restarts, tries=tries, jobs=jobs)[0]


def partition_all(problems: list[PartitionProblem], *, seed: int | np.random.Generator | None = 0,
                  restarts: int = 3, tries: int = 1, jobs: int = 1,
                  alternatives: tuple[int, int] | None = None) -> list[Partition | None]:
    """
    `partition_units` of each problem (`_partition_once`), from `tries` seeds: `seed`, `seed` +
    1, ... (drawn from `seed` where it is a generator or None). Of each problem's partitions the
    best in the rules' order wins (`_better`: fewer tiny communities where that costs at most a
    target's residents each), ties to the earliest seed; no further seed is tried once every
    problem has all its residents in balanced communities, none tiny. A search's early choices
    (where the first runs put the communities that fall short) decide what its windows can
    repair: on São Paulo at a target of 15,000 seeds 0 and 1 end at 92.8 % and 96.8 % of
    residents in balanced communities, on Chengdu within ±10 % at 87.1 % and 91.5 %. The tries'
    pools are not joined (recombining two seeds' pools gained 0.1 points over the better seed
    on Chengdu).

    `alternatives` names two problems of which the caller keeps one, the first where both leave
    nobody outside the band (a district planned with and without its kept communities). The
    second's runs come after the first's and are skipped where one of those leaves nobody
    outside the band; where one's runs trail the other's clearly (`_dropped_alternative`), it
    is neither improved nor finished. A problem skipped or dropped has the partition None
    (over several tries: the best of the tries that planned it, None if none did).
    Chengdu's merge/split improved three runs on two processes, two of them for the plan it
    then dropped: the whole process took 19.8 s, now 15.8 s (medians of five), the same plan.
    """
    if tries < 1:
        raise InputError(f"tries must be at least 1, got {tries}")
    if tries == 1:
        return _partition_once(problems, seed=seed, restarts=restarts, jobs=jobs,
                               alternatives=alternatives)
    seeds = ([int(seed) + t for t in range(tries)] if isinstance(seed, (int, np.integer))
             else np.random.default_rng(seed).integers(2**31, size=tries).tolist())
    made, keys = [], []
    for s in seeds:
        made.append(_partition_once(problems, seed=s, restarts=restarts, jobs=jobs,
                                    alternatives=alternatives))
        keys.append([None if part is None else _score(problem, part.center)
                     for problem, part in zip(problems, made[-1])])
        # Every resident in a balanced community, none tiny: another seed could only walk less.
        if all(key[0] == 0 and key[1] == 0 for problem, key in zip(problems, keys[-1])
               if not problem.exceptions_only and key is not None):
            break
    best = []
    for i, problem in enumerate(problems):
        options = [partitions[i] for partitions in made]
        keys_i = [tried[i] for tried in keys]
        planned = [t for t, key in enumerate(keys_i) if key is not None]
        if not planned:             # an alternative dropped in every try
            best.append(None)
            continue
        winner = _better(planned, keys_i.__getitem__, problem.target_pop)
        if not problem.exceptions_only:
            logger.info("Tries of seeds %s: %s residents outside the band (%s tiny "
                        "communities); seed %s kept", ", ".join(map(str, seeds[:len(made)])),
                        " / ".join("–" if k is None else f"{k[0]:,.0f}" for k in keys_i),
                        " / ".join("–" if k is None else str(k[1]) for k in keys_i),
                        seeds[winner])
        best.append(options[winner])
    return best


ALTERNATIVE_MARGIN = 1.0    # targets' residents outside the band by which an alternative's
                            # runs must trail the other's for it to be dropped (`partition_all`)


def _dropped_alternative(ready: list, chosen: dict,
                         alternatives: tuple[int, int] | None) -> int | None:
    """Of two alternative problems (`partition_all`), the one not worth improving: its best
    chosen run has as many tiny communities or more than the other's best and at least
    `ALTERNATIVE_MARGIN` targets' residents more outside the band. None when the runs are
    closer than that (both are improved) or either problem has no runs."""
    if alternatives is None or not all(i in chosen for i in alternatives):
        return None
    best = [min(tiny_first_order(key) for key in chosen[i][3]) for i in alternatives]
    ahead = 0 if best[0] <= best[1] else 1
    lead, trail = best[ahead], best[1 - ahead]
    margin = ALTERNATIVE_MARGIN * ready[alternatives[ahead]].problem.target_pop
    clear = lead[0] <= trail[0] and lead[1] + margin <= trail[1]
    logger.debug("Alternatives %s: best runs %s; %s", alternatives, [b[:2] for b in best],
                 f"{alternatives[1 - ahead]} dropped" if clear else "both improved")
    return alternatives[1 - ahead] if clear else None


def _runs(ready: list, todo: list[int], alike: dict, jobs: int) -> tuple[list, list, dict]:
    """The runs of the problems `todo`, all at once (their tasks, the runs, and each problem's
    runs to improve, `_picks`)."""
    tasks = [task for i in todo for task in ready[i].tasks(i)]
    # The minimum covers' runs start first: HiGHS takes 0.4-3 s before such a run can start.
    made = run_tasks(_run_task, tasks, jobs=jobs, data={"ready": ready},
                     sizes=[float(start == "cover") for _, _, start in tasks], at_once=True)
    chosen = {i: _picks(ready[i], [plan.attach(alike[i]) for (p, *_), plan in zip(tasks, made)
                                   if p == i], jobs)
              for i in todo}
    return tasks, made, chosen


def _all_in_band(chosen: dict, i: int) -> bool:
    """Whether one of the i-th problem's runs to improve leaves nobody outside the band."""
    return any(key[0] == 0 for key in chosen[i][3])


def _partition_once(problems: list[PartitionProblem], *,
                    seed: int | np.random.Generator | None = 0, restarts: int = 3,
                    jobs: int = 1,
                    alternatives: tuple[int, int] | None = None) -> list[Partition | None]:
    """
    `partition_units` of each problem, with every problem's runs side by side on one pool of
    up to `jobs` processes, then every chosen run's improvement, then each winner's last
    stages: a process that one problem leaves idle (one run to improve where another has two)
    takes up another's work. The partitions are those of `partition_units` one by one, for any
    number of jobs, but for an alternative skipped or dropped (None; `partition_all`). Chengdu's
    merge/split plans its district with and without its kept communities: one process each,
    the second sat idle for 4 of the 11.4 s while the first improved two runs; on one pool the
    district takes 10.4-11.0 s. The main process then holds every run at once, each without the
    problem's matrices (`SearchPlan.detached`).
    """
    ready = [_prepare(problem, seed, restarts) for problem in problems]
    todo = [i for i, r in enumerate(ready) if isinstance(r, _Prepared)]
    # Plans come back from the processes without what all plans of a problem share.
    alike = {i: shared_fields(ready[i].problem, *ready[i].matrices) for i in todo}
    # The second alternative's runs wait for the others': where the first's leave nobody
    # outside the band, the first is kept whatever the second would give, so they are skipped.
    second = alternatives[1] if alternatives is not None and alternatives[1] in todo else None
    tasks, made, chosen = _runs(ready, [i for i in todo if i != second], alike, jobs)
    if second is not None and alternatives[0] in chosen and _all_in_band(chosen, alternatives[0]):
        logger.debug("Alternatives %s: the first's runs are balanced; %d skipped", alternatives,
                     second)
        todo.remove(second)
        ready[second] = None
    elif second is not None:
        more = _runs(ready, [second], alike, jobs)
        tasks, made = tasks + more[0], made + more[1]
        chosen.update(more[2])
    dropped = _dropped_alternative(ready, chosen, alternatives)
    if dropped is not None:
        todo.remove(dropped)
        ready[dropped] = None
        del chosen[dropped]
    # Every community the runs made, for the recombination; each chosen run collects anew.
    seen = {i: SeenCommunities() for i in todo}
    apart = {i: SeenCommunities() for i in todo}        # the circles' run's (`_finish`)
    for (i, _, start), plan in zip(tasks, made):
        if i in seen:                                   # not of a dropped alternative
            (apart if start == "circles" else seen)[i].merge(plan.seen)
    for i in todo:
        for plan in chosen[i][0]:
            plan.seen = SeenCommunities()
    del made        # the runs not chosen
    improving = [(i, j) for i in todo if not ready[i].problem.exceptions_only   # (can't reach
                 for j in range(len(chosen[i][0]))]                              # the band)
    improved = run_tasks(_improve_task, improving, jobs=jobs, data={"ready": ready, "chosen": chosen},
                         at_once=True)
    finals = {i: list(chosen[i][0]) for i in todo}
    for (i, j), plan in zip(improving, improved):
        finals[i][j] = plan.attach(alike[i])
        circles = chosen[i][2] and j == len(chosen[i][0]) - 1
        (apart if circles else seen)[i].merge(plan.seen)
    sharing = {i: chosen[i][1] for i in todo}
    done = run_tasks(_finish_task, todo, jobs=jobs, data={"ready": ready, "finals": finals,
                                                          "sharing": sharing, "seen": seen,
                                                          "apart": apart,
                                                          "circles": {i: chosen[i][2] for i in todo}},
                     lend=True)   # the last stage's spare process: the minimum covers' tries
    for i, partition in zip(todo, done):
        ready[i] = partition
    return ready
