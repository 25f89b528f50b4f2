"""
Recombination (the core's stage 7b): the best plan that can be put together from communities
the search has already made.

Every run and every improvement passes through many whole plans (each local search ends on
one) and tries many window splits, most of them dropped because the rest of their plan was
worse. Each of those communities is a valid one on its own (one center reaching every member,
connected). An exact cover of the units by such communities, with distinct centers, is a plan
that keeps every rule; the best one is a set-partitioning problem, solved here by CP-SAT
(hinted with the current plan, so it never returns one worse). This is the set-partitioning
step that heuristics for routing and districting run over the pool of their local optima: it
joins a good stretch of one run with a good stretch of another where their borders meet.

No library picks the best exact cover from a pool of columns under these rules, so the pool
and the model are written here; the search is CP-SAT's, on one worker with a deterministic
time limit, so the same inputs give the same plan.
"""

from __future__ import annotations

import logging
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from covplan.solve.partition.search import FINAL_WEIGHT, SearchPlan, local_search

logger = logging.getLogger(__name__)

SOLVE_SECONDS = 0.5     # CP-SAT's deterministic time for the set-partitioning model: the better
                        # covers found took 0.2-0.25 (islands at 3.6 km/h, the demo at 8,000 in
                        # 10 minutes); Chengdu's pool of 3,098 took 0.84 to prove its plan best
_ROUNDS = 4             # local-search rounds that tidy walks in the recombined plan


class SeenCommunities:
    """Communities (center, members) the search has made, each once, in the order first seen."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, bytes], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, center: int, units: np.ndarray) -> None:
        """One community: `units` (problem unit indices, ascending) served by `center`."""
        key = (int(center), units.tobytes())
        if key not in self._seen:
            self._seen[key] = units

    def add_labels(self, units: np.ndarray, label: np.ndarray, centers: np.ndarray) -> None:
        """The communities of a window's split: `label` (a position in `centers`, -1 none) of
        each of the window's `units`."""
        for members in _members(label):
            self.add(int(centers[label[members[0]]]), np.sort(units[members]))

    def record(self, plan: SearchPlan) -> None:
        """Every community of `plan` whose center reaches all its members."""
        for members in _members(plan.label):
            k = int(plan.label[members[0]])
            center = int(plan.center[k])
            if center >= 0 and plan.cnt[k, center] == plan.size[k]:
                self.add(center, members)

    def merge(self, other: SeenCommunities | None) -> None:
        if other is not None:
            for (center, _), units in other._seen.items():
                self.add(center, units)

    def columns(self) -> list[tuple[int, np.ndarray]]:
        return [(center, units) for (center, _), units in self._seen.items()]


def _members(label: np.ndarray) -> list[np.ndarray]:
    """The positions of each label's members (ascending), labels -1 left out."""
    served = np.flatnonzero(label >= 0)
    order = served[np.argsort(label[served], kind="stable")]
    return np.split(order, np.flatnonzero(np.diff(label[order])) + 1) if len(order) else []


def _connected(columns: list[tuple[int, np.ndarray]], adjacency: sp.csr_matrix | None) -> np.ndarray:
    """Whether each column's members form one piece: one graph of every column's members side
    by side (a member joined to its neighbours in the same column), one `connected_components`
    call, one label per column; thousands of small subgraphs sliced one by one took seconds."""
    sizes = np.array([len(units) for _, units in columns], dtype="int64")
    if adjacency is None or not len(columns):
        return np.ones(len(columns), dtype=bool)
    n = adjacency.shape[0]
    column = np.repeat(np.arange(len(columns)), sizes)
    member = np.concatenate([units for _, units in columns])
    keys = column * n + member                      # ascending: columns in order, units sorted
    degree = np.diff(adjacency.indptr)[member]
    source = np.repeat(np.arange(len(member)), degree)           # each member's ...
    within = np.arange(len(source)) - np.repeat(np.cumsum(degree) - degree, degree)
    neighbour = adjacency.indices[adjacency.indptr[member][source] + within]   # ... neighbours
    wanted = column[source] * n + neighbour
    target = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    inside = keys[target] == wanted
    graph = sp.csr_matrix((np.ones(int(inside.sum())), (source[inside], target[inside])),
                          shape=(len(member), len(member)))
    _, piece = connected_components(graph, directed=False)
    first = np.r_[0, np.cumsum(sizes)[:-1]]
    # One piece per column: every member's piece is the piece of the column's first member.
    return np.bincount(column, weights=piece != np.repeat(piece[first], sizes),
                       minlength=len(columns)) == 0


def recombine(plan: SearchPlan, seen: SeenCommunities, *,
              seconds: float = SOLVE_SECONDS) -> SearchPlan | None:
    """
    The best exact cover of `plan`'s served units by seen communities (and `plan`'s own), in
    the price order the core uses between plans: fewest residents outside the band plus a
    target's residents per tiny community, then fewest communities outside the band. Every
    locked site stays open. Returns the new plan when that order improves, else None.
    """
    from ortools.sat.python import cp_model

    problem = plan.problem
    seen.record(plan)
    served = plan.label >= 0
    columns = [(c, u) for c, u in seen.columns()
               if served[u].all() and plan.lookup(u, np.full(len(u), c))[1].all()]
    columns = [col for col, ok in zip(columns, _connected(columns, problem.adjacency)) if ok]
    pop = plan.pop
    lo, hi, tiny = problem.min_pop, problem.max_pop, problem.tiny_pop
    price = int(round(problem.target_pop))
    weight = len(plan.label) + 1     # communities outside the band break ties only

    def cost(units: np.ndarray) -> int:
        residents = float(pop[units].sum())
        balanced = lo <= residents <= hi
        outside = 0 if balanced else int(round(residents))
        return (outside + price * int(residents < tiny)) * weight + int(not balanced)

    model = cp_model.CpModel()
    pick = [model.NewBoolVar("") for _ in columns]
    by_unit: list[list] = [[] for _ in range(len(pop))]
    by_site: dict[int, list] = {}
    own = [(int(plan.center[plan.label[m[0]]]), m) for m in _members(plan.label)]
    mine = {(center, units.tobytes()) for center, units in own}
    for var, (center, units) in zip(pick, columns):
        for u in units.tolist():
            by_unit[u].append(var)
        by_site.setdefault(center, []).append(var)
        model.AddHint(var, (center, units.tobytes()) in mine)
    for u in np.flatnonzero(served).tolist():
        model.AddExactlyOne(by_unit[u])
    locked = (np.zeros(plan.n_cand, bool) if problem.locked is None
              else np.asarray(problem.locked, bool))
    for center, vars_ in by_site.items():
        if locked[center] and plan.used[center]:
            model.AddExactlyOne(vars_)
        elif len(vars_) > 1:
            model.AddAtMostOne(vars_)
    costs = [cost(units) for _, units in columns]
    model.Minimize(sum(c * v for c, v in zip(costs, pick)))
    solver = cp_model.CpSolver()
    params = solver.parameters
    params.num_workers = 1
    params.random_seed = 0
    params.max_deterministic_time = seconds
    params.cp_model_probing_level = 0   # as in the CP-SAT windows: with them, the hinted plan
    params.symmetry_level = 0           # came back within the time on every pool tried
    params.catch_sigint_signal = False  # CP-SAT's own handler left Ctrl-C killing the process
    status = solver.Solve(model)
    now = sum(cost(units) for _, units in own)
    logger.debug("recombination of %d seen communities (%d valid): %s, %.0f -> %.0f in %.2f",
                 len(seen), len(columns), solver.StatusName(status), now,
                 solver.ObjectiveValue() if status in (cp_model.OPTIMAL, cp_model.FEASIBLE) else now,
                 solver.deterministic_time)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE) or solver.ObjectiveValue() >= now:
        return None
    label = np.full(len(plan.label), -1, dtype="int64")
    centers = []
    for var, (center, units) in zip(pick, columns):
        if solver.BooleanValue(var):
            label[units] = len(centers)
            centers.append(center)
    other = SearchPlan(problem, plan.per_person, plan.weighted, plan.structure, label)
    # The communities' own centers: the cheapest site reaching all (the constructor's choice)
    # may be one another community holds.
    other.center[:] = centers
    other.used[:] = False
    other.used[centers] = True
    other.seen = plan.seen
    # Walks tidied without a move that raises the residents outside the band or makes a
    # community tiny.
    local_search(other, FINAL_WEIGHT, _ROUNDS, count_first=True, keep_residents=True)
    return other
