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
   settled by flow and finished by a local search on a copy; last, a local search that cuts
   person-minutes without letting any community leave the band.

Restarts rotate the bisection (fewer on large instances); the best plan (count nearest K,
fewest communities outside the band, fewest people outside it, least person-minutes) wins.
Deterministic for a seed: np.random.default_rng(seed) only, ties broken by index.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from ortools.graph.python import min_cost_flow
from scipy.sparse.csgraph import connected_components

from coverage._errors import InputError
from coverage._sparse import lookup

logger = logging.getLogger(__name__)

_COST_SCALE = 100           # min-cost flow needs integers: centi-minutes per person
_BALANCE_PENALTY = 1_000.0  # flow: minutes per person outside the band, so balance comes first
_BALANCE_WEIGHT = 5.0       # local search: weight of the squared excess while balancing ...
_FINAL_WEIGHT = 0.05        # ... and while cutting minutes at the end
_SETTLE_ROUNDS = 3          # flow / re-site rounds
_GROW_ROUNDS = 10           # local-search rounds before reducing (lets stray pieces grow)
_AROUND_ROUNDS = 5          # local-search rounds around a dissolved community
_REPAIRS = 12               # neighbourhoods re-solved around communities outside the band
_POLISH_UNITS = 1_000       # polish instances up to this many units, with at most ...
_POLISH_BUDGET = 40         # ... this many settlements, including ...
_POLISH_SEEDS = 8           # ... this many whole-instance bisection seeds
_TRANSFERS = 8              # attempts to move a community to where people are plenty
_RESTART_UNITS = 25_000     # restarts x units stays below this (at least one run)


def population_band(target_pop: float, tolerance: float) -> tuple[float, float]:
    """The smallest and largest community population within `tolerance` of `target_pop`."""
    return target_pop * (1 - tolerance), target_pop * (1 + tolerance)


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
    xy: np.ndarray | None = None      # units x 2 coordinates in metres (seeding); None: greedy

    @property
    def min_pop(self) -> float:
        return population_band(self.target_pop, self.tolerance)[0]

    @property
    def max_pop(self) -> float:
        return population_band(self.target_pop, self.tolerance)[1]


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


def _packing_bound(structure: sp.csr_matrix) -> int:
    """A lower bound on the centers the 15-minute rule needs: units (most constrained first)
    no two of which share a candidate each need their own."""
    taken = np.zeros(structure.shape[1], dtype=bool)
    count = 0
    for u in np.argsort(np.diff(structure.indptr), kind="stable"):
        cols = structure.indices[structure.indptr[u]:structure.indptr[u + 1]]
        if len(cols) and not taken[cols].any():
            taken[cols] = True
            count += 1
    return count


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
    for name, length in (("existing", n_cand), ("candidate_prior", n_cand), ("unit_prior", n_units)):
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
    return cost


def _bisect(xy: np.ndarray, pop: np.ndarray, units: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """k parts of about equal population, cutting across the longer side; part per unit (-1 off)."""
    part = np.full(len(xy), -1, dtype="int64")
    stack, n_parts = [(units, k)], 0
    while stack:
        group, k = stack.pop()
        if k == 1 or len(group) <= 1:
            part[group], n_parts = n_parts, n_parts + 1
            continue
        k1 = k // 2
        axis = int(np.argmax(np.ptp(xy[group], axis=0)))
        order = group[np.lexsort((group, xy[group, axis]))]
        cum = np.cumsum(pop[order] + 1e-9)
        cut = int(np.clip(np.searchsorted(cum, cum[-1] * k1 / k) + 1, 1, len(order) - 1))
        stack += [(order[cut:], k - k1), (order[:cut], k1)]
    return part, n_parts


def _seed_centers(xy: np.ndarray, pop: np.ndarray, structure: sp.csr_matrix, k: int, angle: float,
                  blocked: np.ndarray | None = None) -> np.ndarray:
    """
    One center per bisection part: the free candidate reaching most of the part's people. Then
    a part holding units no center reaches swaps its center for the candidate reaching most of
    those and of the units only its old center reached (most of the part's people next).
    """
    reachable = np.flatnonzero(np.diff(structure.indptr) > 0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    part, n_parts = _bisect(np.asarray(xy, dtype="float64") @ rot, pop, reachable,
                            min(k, len(reachable)))
    members = sp.csr_matrix((pop[reachable] + 1e-3, (part[reachable], reachable)),
                            shape=(n_parts, structure.shape[0]))
    gather = (members @ structure).toarray()
    used = np.zeros(structure.shape[1], dtype=bool) if blocked is None else blocked.copy()
    centers = np.full(n_parts, -1, dtype="int64")
    for row in range(n_parts):
        best = int(np.argmax(np.where(used, -1.0, gather[row])))
        if gather[row, best] > 0 and not used[best]:
            centers[row], used[best] = best, True
    csc = structure.tocsc()
    count = np.asarray(structure[:, centers[centers >= 0]].sum(axis=1)).ravel()
    for _ in range(2):
        uncovered = (count == 0) & (np.diff(structure.indptr) > 0)
        holes = np.bincount(part[uncovered], weights=pop[uncovered] + 1e-3, minlength=n_parts)
        for row in np.lexsort((np.arange(n_parts), -holes)):
            old = int(centers[row])
            if holes[row] <= 0 or old < 0:
                continue
            alone = np.zeros(len(count), dtype=bool)
            alone[csc.indices[csc.indptr[old]:csc.indptr[old + 1]]] = True
            need = np.flatnonzero((part == row) & ((count == 0) | ((count == 1) & alone)))
            hits = np.asarray(structure[need].sum(axis=0)).ravel()
            score = np.where(used & (np.arange(len(hits)) != old), -np.inf,
                             hits * (pop.sum() + 1.0) + gather[row])
            best = int(np.argmax(score))
            if best != old and hits[best] > hits[old]:
                used[old], used[best] = False, True
                count[csc.indices[csc.indptr[old]:csc.indptr[old + 1]]] -= 1
                count[csc.indices[csc.indptr[best]:csc.indptr[best + 1]]] += 1
                centers[row] = best
    return centers[centers >= 0]


def _greedy_seeds(minutes: sp.csr_matrix, pop: np.ndarray, k: int) -> list[int]:
    """Without coordinates: greedy p-median, opening the candidate that saves most person-minutes."""
    rows = np.repeat(np.arange(minutes.shape[0]), np.diff(minutes.indptr))
    cols, data = minutes.indices, minutes.data
    current = np.full(minutes.shape[0], data.max(initial=0) + 1.0)
    chosen: list[int] = []
    while len(chosen) < k:
        gain = np.bincount(cols, weights=np.clip(current[rows] - data, 0, None) * (pop[rows] + 1e-3),
                           minlength=minutes.shape[1])
        gain[chosen] = -1
        best = int(np.argmax(gain))
        if gain[best] <= 0:
            break
        chosen.append(best)
        mask = cols == best
        np.minimum.at(current, rows[mask], data[mask])
    return chosen


def _set_cover(structure: sp.csr_matrix, pop: np.ndarray, start: list[int] = ()) -> list[int]:
    """Extend `start` by lazy greedy set cover (most newly covered people first) until every
    reachable unit is covered."""
    csc = structure.tocsc()
    covered = np.diff(structure.indptr) == 0
    chosen = [int(c) for c in start]
    for c in chosen:
        covered[csc.indices[csc.indptr[c]:csc.indptr[c + 1]]] = True
    weight = pop.astype("float64") + 1e-3
    col_of_entry = np.repeat(np.arange(csc.shape[1]), np.diff(csc.indptr))
    gain = np.bincount(col_of_entry, weights=weight[csc.indices] * ~covered[csc.indices],
                       minlength=csc.shape[1])
    heap = [(-g, c) for c, g in enumerate(gain) if g > 0]
    heapq.heapify(heap)
    while heap and not covered.all():
        _, c = heapq.heappop(heap)
        rows = csc.indices[csc.indptr[c]:csc.indptr[c + 1]]
        g = float(weight[rows][~covered[rows]].sum())
        if heap and g < -heap[0][0] - 1e-9:     # stale: push back with its true gain
            if g > 0:
                heapq.heappush(heap, (-g, c))
            continue
        if g > 0:
            chosen.append(int(c))
            covered[rows] = True
    return chosen


def _assign(pop: np.ndarray, lo: float, hi: float, per_person: sp.csr_matrix,
            centers: np.ndarray) -> np.ndarray:
    """
    Units -> index into `centers` by min-cost flow with soft population bounds [lo, hi]; each
    unit goes wholly to the center that got most of it (people-less units: the cheapest).
    -1 for units no center reaches.
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
    lo, hi = int(np.ceil(lo)), int(np.floor(hi))
    big = int(_BALANCE_PENALTY * _COST_SCALE)
    sink, mid = n + k, np.arange(k) + n
    tails = [u[active], mid, mid, mid]
    heads = [c[active] + n, np.full(k, sink), np.full(k, sink), np.full(k, sink)]
    caps = [pop[u[active]], np.full(k, lo), np.full(k, max(hi - lo, 0)), np.full(k, total)]
    costs = [unit_cost[active], np.full(k, -big), np.zeros(k, "int64"), np.full(k, big)]
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


def _relocate(cnt: np.ndarray, cost: np.ndarray, size: np.ndarray, centers: np.ndarray,
              blocked: np.ndarray | None = None) -> np.ndarray:
    """
    Each community's cheapest free candidate reaching all its members, all distinct; those with
    the fewest options choose first. One without a free option keeps its center (or, having
    none, takes its cheapest option).
    """
    feasible = cnt == size[:, None]
    eff = np.where(feasible, cost, np.inf)
    new = centers.copy()
    used = np.zeros(cnt.shape[1], dtype=bool) if blocked is None else blocked.copy()
    for k in np.lexsort((np.arange(len(size)), -size, feasible.sum(axis=1))):
        row = np.where(used, np.inf, eff[k])
        best = int(np.argmin(row))
        if np.isfinite(row[best]):
            new[k] = best
        elif new[k] < 0 and np.isfinite(eff[k]).any():
            new[k] = int(np.argmin(eff[k]))
        used[new[k]] = True
    return new


def _tallies(label: np.ndarray, n_comm: int, structure: sp.csr_matrix,
             weighted: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per community and candidate: members the candidate reaches, and their summed cost."""
    served = np.flatnonzero(label >= 0)
    onehot = sp.csr_matrix((np.ones(len(served)), (label[served], served)), shape=(n_comm, len(label)))
    return (onehot @ structure).toarray().astype("int32"), (onehot @ weighted).toarray()


def _settle(pop: np.ndarray, lo: float, hi: float, per_person: sp.csr_matrix,
            structure: sp.csr_matrix, weighted: sp.csr_matrix, centers: np.ndarray,
            blocked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Alternate flow assignment and re-siting; (centers, index into centers per unit)."""
    label = _assign(pop, lo, hi, per_person, centers)
    for _ in range(_SETTLE_ROUNDS):
        cnt, cost = _tallies(label, len(centers), structure, weighted)
        new = _relocate(cnt, cost, np.bincount(label[label >= 0], minlength=len(centers)),
                        centers, blocked)
        if np.array_equal(new, centers):
            break
        centers = new
        label = _assign(pop, lo, hi, per_person, centers)
    return centers, label


def _pieces(label: np.ndarray, adjacency: sp.csr_matrix | None) -> np.ndarray:
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


def _attach_strays(label: np.ndarray, pop: np.ndarray, weighted: sp.csr_matrix,
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
        piece = _pieces(label, adjacency)
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
    if strict and len(np.unique(_pieces(label, adjacency)[served])) != len(np.unique(label[served])):
        return None
    return label


class _Plan:
    """
    Communities with flexible centers. For community k and candidate c, `cnt[k, c]` members are
    reached by c at summed cost `cost[k, c]`; any free c with cnt == size may serve k.
    """

    def __init__(self, problem: PartitionProblem, per_person: sp.csr_matrix,
                 weighted: sp.csr_matrix, structure: sp.csr_matrix, label: np.ndarray):
        self.problem, self.per_person, self.weighted, self.structure = problem, per_person, weighted, structure
        self.indptr, self.indices, self.w = weighted.indptr, weighted.indices, weighted.data
        self.n_cand = weighted.shape[1]
        self.keys = (np.repeat(np.arange(weighted.shape[0], dtype="int64"), np.diff(weighted.indptr))
                     * self.n_cand + weighted.indices)
        self.pop = problem.pop.astype("float64")
        self.label = label.copy()
        n_comm = int(label.max()) + 1 if (label >= 0).any() else 0
        self.cnt, self.cost = _tallies(label, n_comm, structure, weighted)
        served = label >= 0
        self.size = np.bincount(label[served], minlength=n_comm)
        self.popk = np.bincount(label[served], weights=self.pop[served], minlength=n_comm)
        self.center = _relocate(self.cnt, self.cost, self.size, np.full(n_comm, -1, dtype="int64"))
        self.used = np.zeros(self.n_cand, dtype=bool)
        self.used[self.center[self.center >= 0]] = True
        self.lab = self.label.tolist()
        adjacency = problem.adjacency
        self.nbrs = None if adjacency is None else [
            adjacency.indices[adjacency.indptr[i]:adjacency.indptr[i + 1]].tolist()
            for i in range(adjacency.shape[0])]

    def copy(self) -> _Plan:
        twin = object.__new__(_Plan)
        twin.__dict__.update(self.__dict__)
        for name in ("label", "cnt", "cost", "size", "popk", "center", "used"):
            setattr(twin, name, getattr(self, name).copy())
        twin.lab = list(self.lab)
        return twin

    @property
    def alive(self) -> np.ndarray:
        return np.flatnonzero(self.size > 0)

    def key(self) -> tuple[int, float, float]:
        """(communities outside the band, people outside it, total cost)."""
        alive = self.alive
        viol = _violation(self.popk[alive], self.problem.min_pop, self.problem.max_pop)
        return int((viol > 0).sum()), float(viol.sum()), float(self.cost[alive, self.center[alive]].sum())

    def resite(self) -> None:
        alive = self.alive
        self.center[alive] = _relocate(self.cnt[alive], self.cost[alive], self.size[alive],
                                       self.center[alive])
        self.used[:] = False
        self.used[self.center[alive]] = True

    def lookup(self, u: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Costs of pairs (u[i], c[i]) and whether u[i] reaches c[i] (inf where not)."""
        wanted = u.astype("int64") * self.n_cand + c
        pos = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        found = self.keys[pos] == wanted
        return np.where(found, self.w[pos], np.inf), found

    def pair_cost(self, u: int, c: int) -> float:
        s, e = self.indptr[u], self.indptr[u + 1]
        j = s + int(np.searchsorted(self.indices[s:e], c))
        return float(self.w[j]) if j < e and self.indices[j] == c else np.inf

    def gain_in(self, u: int, b: int) -> tuple[float, int] | None:
        """Cost change of community b taking unit u, and b's center then; None if none can serve."""
        s, e = self.indptr[u], self.indptr[u + 1]
        cols = self.indices[s:e]
        cb = int(self.center[b])
        j = int(np.searchsorted(cols, cb))
        if j < len(cols) and cols[j] == cb:
            return float(self.w[s + j]), cb
        vals = np.where((self.cnt[b][cols] == self.size[b]) & ~self.used[cols],
                        self.cost[b][cols] + self.w[s:e], np.inf)
        j = int(np.argmin(vals))
        return None if not np.isfinite(vals[j]) else (float(vals[j] - self.cost[b, cb]), int(cols[j]))

    def batch_gains(self, u: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Vectorised `gain_in` (cost change only; inf where no candidate can serve)."""
        gain, ok = self.lookup(u, self.center[b])
        todo = np.flatnonzero(~ok)
        if len(todo):
            uu, bb = u[todo], b[todo]
            lens = self.indptr[uu + 1] - self.indptr[uu]
            starts = np.cumsum(lens) - lens
            entry = np.repeat(self.indptr[uu] - starts, lens) + np.arange(lens.sum())
            cols, brep = self.indices[entry], np.repeat(bb, lens)
            vals = np.where((self.cnt[brep, cols] == self.size[brep]) & ~self.used[cols],
                            self.cost[brep, cols] + self.w[entry], np.inf)
            gain[todo] = np.minimum.reduceat(vals, starts) - self.cost[bb, self.center[bb]]
        return gain

    def move(self, u: int, a: int, b: int, new_center: int) -> None:
        """Move unit u from community a to b, which is then served by new_center."""
        s, e = self.indptr[u], self.indptr[u + 1]
        cols, w = self.indices[s:e], self.w[s:e]
        self.cnt[a][cols] -= 1
        self.cost[a][cols] -= w
        self.cnt[b][cols] += 1
        self.cost[b][cols] += w
        self.size[a] -= 1
        self.size[b] += 1
        self.popk[a] -= self.pop[u]
        self.popk[b] += self.pop[u]
        self.label[u] = self.lab[u] = b
        if self.size[a] == 0:
            self.used[self.center[a]] = False
        if new_center != self.center[b]:
            self.used[self.center[b]] = False
            self.used[new_center] = True
            self.center[b] = new_center

    def add_community(self, center: int) -> int:
        """A new, empty community served by `center`; returns its index."""
        self.cnt = np.vstack([self.cnt, np.zeros((1, self.n_cand), dtype=self.cnt.dtype)])
        self.cost = np.vstack([self.cost, np.zeros((1, self.n_cand))])
        self.size, self.popk = np.r_[self.size, 0], np.r_[self.popk, 0.0]
        self.center = np.r_[self.center, center]
        self.used[center] = True
        return len(self.size) - 1

    def touches(self, u: int, b: int) -> bool:
        """Whether unit u borders community b (always, without an adjacency)."""
        return self.nbrs is None or any(self.lab[v] == b for v in self.nbrs[u])

    def connected_without(self, u: int, a: int) -> bool:
        """
        Whether community a stays in one piece without unit u. One search grows from each of u's
        neighbours in a (the least explored first) and merges with any it meets: yes once all
        have met, no once a group has nowhere left to go.
        """
        if self.nbrs is None:
            return True
        lab, nbrs = self.lab, self.nbrs
        inside = list(dict.fromkeys(v for v in nbrs[u] if lab[v] == a))
        owner = {u: -1, **{v: i for i, v in enumerate(inside)}}
        root = list(range(len(inside)))
        frontier = {i: [v] for i, v in enumerate(inside)}
        explored = dict.fromkeys(frontier, 0)
        while len(frontier) > 1:
            g = min(frontier, key=lambda r: (explored[r], r))
            if not frontier[g]:
                return False
            explored[g] += 1
            for v in nbrs[frontier[g].pop()]:
                if lab[v] != a:
                    continue
                h = owner.get(v)
                if h is None:
                    owner[v] = g
                    frontier[g].append(v)
                elif h >= 0:
                    while root[h] != h:
                        h = root[h]
                    if h != g:
                        root[h] = g
                        frontier[g] += frontier.pop(h)
                        explored[g] += explored.pop(h)
        return True

    def neighbour_pairs(self, units: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unit, its community, a bordering community), one row per distinct pair. Without an
        adjacency, any community whose center reaches the unit borders it."""
        label = self.label
        if self.nbrs is not None:
            adj = self.problem.adjacency if units is None else self.problem.adjacency[units]
            other = label[adj.indices]
        else:
            alive = self.alive
            adj = self.structure[:, self.center[alive]]
            adj = (adj if units is None else adj[units]).tocsr()
            other = alive[adj.indices]
        rows = np.repeat(np.arange(adj.shape[0]) if units is None else units, np.diff(adj.indptr))
        own = label[rows]
        keep = (own >= 0) & (other >= 0) & (own != other)
        rows, own, other = rows[keep], own[keep], other[keep]
        _, first = np.unique(rows.astype("int64") * (len(self.size) + 1) + other, return_index=True)
        return rows[first], own[first], other[first]

    def around(self, s: int, rings: int = 1) -> np.ndarray:
        """Community s and the communities within `rings` steps of it."""
        comms = np.array([s])
        for _ in range(rings):
            members = np.flatnonzero(np.isin(self.label, comms))
            comms = np.unique(np.r_[comms, self.neighbour_pairs(members)[2]])
        return comms


def _violation(pop_k, lo: float, hi: float):
    return np.clip(lo - pop_k, 0, None) + np.clip(pop_k - hi, 0, None)


def _band_deltas(pa, pb, p, cost, problem: PartitionProblem, lam: float):
    """
    Change in (communities outside the band, people outside it, cost + lam x sum(d^2) / target)
    when p people move from a community of pa to one of pb; d is how far a community is from
    the target beyond a dead zone of half the tolerance (so that surplus flows through
    communities in the band but near its edges). Scalars or arrays.
    """
    lo, hi, target = problem.min_pop, problem.max_pop, problem.target_pop
    zone = (hi - lo) / 4
    if np.ndim(pa) == 0 and np.ndim(p) == 0:
        def out(x):
            return max(lo - x, 0.0) + max(x - hi, 0.0)

        def sq(x):
            return max(abs(x - target) - zone, 0.0) ** 2
    else:
        def out(x):
            return _violation(x, lo, hi)

        def sq(x):
            return np.clip(np.abs(x - target) - zone, 0, None) ** 2
    before, after = (out(pa), out(pb)), (out(pa - p), out(pb + p))
    d_count = sum((x > 1e-9) * 1 for x in after) - sum((x > 1e-9) * 1 for x in before)
    d_viol = after[0] + after[1] - before[0] - before[1]
    return d_count, d_viol, cost + lam * (sq(pa - p) + sq(pb + p) - sq(pa) - sq(pb)) / target


def _better(d_count, d_viol, d_soft):
    """Whether a change improves (communities outside the band, people outside, soft cost)."""
    return (d_count < 0) | ((d_count == 0) & ((d_viol < -1e-9) | ((d_viol <= 1e-9) & (d_soft < -1e-9))))


def _local_search(plan: _Plan, lam: float, max_rounds: int = 100, comms: np.ndarray | None = None,
                  count_first: bool = False) -> None:
    """
    Boundary moves that lower the people outside the band, or keep it and lower cost + lam x
    squared excess; only units of `comms` if given. The receiving community may re-site its
    center to take the unit; the donor must stay in one piece. Centers re-sited every round.
    """
    for _ in range(max_rounds):
        u, a, b = plan.neighbour_pairs(None if comms is None else np.flatnonzero(np.isin(plan.label, comms)))
        p = plan.pop[u]
        cost = plan.batch_gains(u, b) - plan.lookup(u, plan.center[a])[0]
        d_count, d_viol, d_soft = _band_deltas(plan.popk[a], plan.popk[b], p, cost, plan.problem, lam)
        d_count = d_count * count_first
        good = np.isfinite(cost) & (plan.size[a] > 1) & _better(d_count, d_viol, d_soft)
        moved = 0
        for i in np.flatnonzero(good)[np.lexsort((u[good], d_soft[good], d_viol[good], d_count[good]))]:
            ui, ai, bi = int(u[i]), int(a[i]), int(b[i])
            if plan.label[ui] != ai or plan.size[ai] <= 1:
                continue
            got = plan.gain_in(ui, bi)
            if got is None:
                continue
            dc, dv, ds = _band_deltas(float(plan.popk[ai]), float(plan.popk[bi]), float(p[i]),
                                      got[0] - plan.pair_cost(ui, int(plan.center[ai])), plan.problem, lam)
            if not _better(dc * count_first, dv, ds):
                continue
            if plan.touches(ui, bi) and plan.connected_without(ui, ai):
                plan.move(ui, ai, bi, got[1])
                moved += 1
        plan.resite()
        if moved == 0:
            break


def _empty(plan: _Plan, s: int, lam: float) -> bool:
    """Move every member of community s, border inwards, to a neighbour that can serve it
    (least harm to the band first); undo everything and return False if some unit can't go."""
    log: list[tuple[int, int, int]] = []
    while plan.size[s] > 0:
        u, _, b = plan.neighbour_pairs(np.flatnonzero(plan.label == s))
        cost = plan.batch_gains(u, b)
        ok = np.isfinite(cost)
        u, b, cost = u[ok], b[ok], cost[ok]
        d_count, d_viol, d_soft = _band_deltas(np.full(len(u), plan.popk[s]), plan.popk[b], plan.pop[u],
                                               cost, plan.problem, lam)
        order = np.lexsort((b, d_soft, d_viol, u))
        first = order[np.unique(u[order], return_index=True)[1]]
        moved = 0
        for i in first[np.lexsort((u[first], d_soft[first], d_viol[first]))]:
            got = plan.gain_in(int(u[i]), int(b[i]))
            if got is not None:
                log.append((int(u[i]), int(b[i]), int(plan.center[b[i]])))
                plan.move(int(u[i]), s, int(b[i]), got[1])
                moved += 1
        if moved == 0:
            for ui, bi, old_center in reversed(log):
                plan.move(ui, bi, s, int(plan.center[s]))
                plan.used[plan.center[bi]] = False
                plan.center[bi] = old_center
                plan.used[old_center] = True
            plan.used[plan.center[s]] = True
            return False
    return True


def _shrink(plan: _Plan, s: int, tries: int = 4) -> bool:
    """Re-solve the two rings of communities around s by flow with one center less (dropping
    one of the smallest centers, or from rotated bisection seeds); True if it worked."""
    win = _Window(plan, plan.around(s, rings=2))
    current = plan.center[win.comms]
    options = [np.delete(current, j) for j in np.lexsort((win.comms, plan.popk[win.comms]))[:tries]]
    options += [] if win.xy is None else [
        _seed_centers(win.xy, win.pop, win.structure, len(current) - 1, angle, win.blocked)
        for angle in np.linspace(0, np.pi, tries, endpoint=False)]
    got = [g for g in (win.evaluate(np.asarray(c, dtype="int64")) for c in options)
           if g is not None and len(g[2]) == len(current) - 1]
    if got:
        best = min(got, key=lambda g: g[0])
        win.apply(plan, best[1], best[2])
        _local_search(plan, _BALANCE_WEIGHT, _AROUND_ROUNDS, comms=win.comms)
    return bool(got)


def _poorness(plan: _Plan, alive: np.ndarray) -> np.ndarray:
    """Order key for dissolving: 0 for small pieces (under a quarter of the band's bottom),
    else the mean population of the community and its neighbours (poorest first)."""
    _, a, b = plan.neighbour_pairs()
    n = len(plan.size)
    a, b = np.divmod(np.unique(a * n + b), n)
    mean = (np.bincount(a, weights=plan.popk[b], minlength=n) + plan.popk) / (np.bincount(a, minlength=n) + 1)
    return np.where(plan.popk[alive] < plan.problem.min_pop / 4, 0.0, mean[alive])


def _reduce(plan: _Plan, k: int, tries: int = 4) -> None:
    """
    Remove communities until k remain: dissolve one into its neighbours (order: `_poorness`,
    then smallest), then a short local search around it (one that could not be dissolved is
    retried once something near it changed); failing that, `_shrink` around one of the smallest.
    """
    failed = np.zeros(len(plan.size), dtype=bool)
    while len(plan.alive) > k:
        alive = plan.alive
        feasible = plan.cnt[alive] == plan.size[alive][:, None]
        done = False
        for i in np.lexsort((alive, plan.popk[alive], _poorness(plan, alive))):
            s = int(alive[i])
            # Quick necessary test: every member reaches a candidate that could serve another.
            others = np.any(np.delete(feasible, i, axis=0), axis=0)
            if failed[s] or not (plan.structure[plan.label == s] @ others > 0).all():
                failed[s] = True
                continue
            around = plan.around(s, rings=2)
            if _empty(plan, s, _BALANCE_WEIGHT):
                _local_search(plan, _BALANCE_WEIGHT, _AROUND_ROUNDS, comms=around)
                failed[around] = False
                done = True
                break
            failed[s] = True
        if not done:
            done = any(_shrink(plan, int(s)) for s in alive[np.lexsort((alive, plan.popk[alive]))][:tries])
            failed[:] = False
        if not done:
            return


class _Window:
    """The units of some communities, as a sub-problem re-solved with everything else fixed."""

    def __init__(self, plan: _Plan, comms: np.ndarray):
        problem = plan.problem
        self.comms = comms
        self.units = np.flatnonzero(np.isin(plan.label, comms))
        self.per_person = plan.per_person[self.units]
        self.weighted = plan.weighted[self.units]
        self.structure = plan.structure[self.units]
        self.adjacency = (None if problem.adjacency is None
                          else problem.adjacency[self.units][:, self.units].tocsr())
        self.pop = plan.pop[self.units]
        self.xy = None if problem.xy is None else np.asarray(problem.xy)[self.units]
        self.blocked = plan.used.copy()
        self.blocked[plan.center[comms]] = False
        self.lo, self.hi = problem.min_pop, problem.max_pop
        viol = _violation(plan.popk[comms], self.lo, self.hi)
        self.before = (int((viol > 0).sum()), float(viol.sum()), float(plan.cost[comms, plan.center[comms]].sum()))

    def evaluate(self, centers: np.ndarray):
        """Settle the window on these centers: (key like `_Plan.key`, label, centers), or None if
        some unit is left unserved, a piece can't be attached or a community ends up empty."""
        centers, label = _settle(self.pop, self.lo, self.hi, self.per_person, self.structure,
                                 self.weighted, centers, self.blocked)
        if (label < 0).any():
            return None
        label = _attach_strays(label, self.pop, self.weighted, self.adjacency, centers)
        if label is None or (np.bincount(label, minlength=len(centers)) == 0).any():
            return None
        viol = _violation(np.bincount(label, weights=self.pop, minlength=len(centers)), self.lo, self.hi)
        cost = float(lookup(self.weighted, np.arange(len(self.units)), centers[label])[0].sum())
        return (int((viol > 0).sum()), float(viol.sum()), cost), label, centers

    def alternatives(self, label: np.ndarray, centers: np.ndarray, j: int, n_alt: int,
                     rank: np.ndarray) -> np.ndarray:
        """Free candidates that reach the members of j no other center reaches; best `rank` first."""
        others = self.structure[:, np.delete(centers, j)].tocsr()
        critical = (label == j) & (np.diff(others.indptr) == 0)
        hits = np.asarray(self.structure[critical].sum(axis=0)).ravel()
        alt = np.flatnonzero((hits >= critical.sum()) & ~self.blocked)
        alt = alt[~np.isin(alt, centers)]
        return alt[np.lexsort((alt, -rank[alt]))][:n_alt]

    def savings(self, label: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """Per candidate: cost saved if every unit it reaches could switch to it."""
        now, _ = lookup(self.weighted, np.arange(len(label)), centers[label])
        rows = np.repeat(np.arange(len(label)), np.diff(self.weighted.indptr))
        gain = np.clip(now[rows] - self.weighted.data, 0, None)
        return np.bincount(self.weighted.indices, weights=gain, minlength=self.weighted.shape[1])

    def improve(self, plan: _Plan, angles: np.ndarray):
        """Best settlement from the current centers and rotated bisection seeds (or None)."""
        tries = [plan.center[self.comms].copy()]
        if self.xy is not None:
            tries += [_seed_centers(self.xy, self.pop, self.structure, len(self.comms), a, self.blocked)
                      for a in angles]
        got = [g for g in (self.evaluate(c) for c in tries if len(c) == len(self.comms)) if g is not None]
        return min(got, key=lambda g: g[0]) if got else None

    def apply(self, plan: _Plan, label: np.ndarray, centers: np.ndarray) -> None:
        """Write the window's communities into the plan (community ids kept by largest overlap)."""
        old = plan.label[self.units]
        overlap = np.zeros((len(centers), len(self.comms)))
        np.add.at(overlap, (label, np.searchsorted(self.comms, old)), self.pop + 1e-6)
        ids = np.full(len(centers), -1, dtype="int64")
        taken = np.zeros(len(self.comms), dtype=bool)
        for flat in np.argsort(-overlap, axis=None, kind="stable"):
            j, i = divmod(int(flat), len(self.comms))
            if ids[j] < 0 and not taken[i]:
                ids[j], taken[i] = self.comms[i], True
        plan.used[plan.center[self.comms]] = False
        for j in np.flatnonzero(ids < 0):             # more communities than before
            ids[j] = plan.add_community(int(centers[j]))
        new = ids[label]
        for i in np.flatnonzero(new != old):
            plan.move(int(self.units[i]), int(old[i]), int(new[i]), int(plan.center[new[i]]))
        plan.used[plan.center[self.comms]] = False
        plan.center[ids] = centers
        plan.used[centers] = True


def _repair(plan: _Plan, angles: np.ndarray) -> None:
    """Re-solve the window (one ring of neighbours, then two) around each community outside the
    band, worst first, keeping it when fewer communities or people end up outside; at most
    `_REPAIRS` windows."""
    failed: set[int] = set()
    for _ in range(_REPAIRS):
        alive = plan.alive
        viol = _violation(plan.popk[alive], plan.problem.min_pop, plan.problem.max_pop)
        bad = [int(c) for c in alive[np.lexsort((alive, -viol))][:int((viol > 0).sum())] if int(c) not in failed]
        if not bad:
            return
        s = bad[0]
        for rings in (1, 2):
            win = _Window(plan, plan.around(s, rings))
            got = win.improve(plan, angles)
            if got is not None and got[0][:2] < (win.before[0], win.before[1] - 1e-6):
                win.apply(plan, got[1], got[2])
                _local_search(plan, _BALANCE_WEIGHT, _AROUND_ROUNDS, comms=plan.around(s, rings + 1))
                failed.clear()
                break
        else:
            failed.add(s)


def _transfer(plan: _Plan, angles: np.ndarray, tries: int) -> _Plan:
    """
    Move a community from where people are short to where they are plenty: dissolve the most
    underfull community into its neighbours, and re-solve the ring around the community whose
    ring holds the most people beyond its communities' minimum with one community more. Kept
    when fewer communities (then people) end up outside the band.
    """
    lo = plan.problem.min_pop
    failed: set[int] = set()
    for _ in range(tries):
        alive = plan.alive
        short = [int(c) for c in alive[np.lexsort((alive, plan.popk[alive]))]
                 if plan.popk[c] < lo and int(c) not in failed]
        if not short:
            break
        s = short[0]
        trial = plan.copy()
        ring = plan.around(s, 1)
        gone = next((int(r) for r in ring[np.lexsort((ring, ring != s, plan.popk[ring]))]
                     if _empty(trial, int(r), _BALANCE_WEIGHT)), None)
        if gone is None:
            failed.add(s)
            continue
        _local_search(trial, _BALANCE_WEIGHT, _AROUND_ROUNDS, comms=plan.around(gone, 2))
        _, a, b = trial.neighbour_pairs()
        n = len(trial.size)
        a, b = np.divmod(np.unique(a * n + b), n)     # bordering communities, once each
        surplus = (np.bincount(a, weights=trial.popk[b] - lo, minlength=n) + trial.popk - 2 * lo)
        alive = trial.alive
        t = int(alive[np.lexsort((alive, -surplus[alive]))[0]])
        win = _Window(trial, trial.around(t, 1))
        got = [] if win.xy is None else [
            win.evaluate(_seed_centers(win.xy, win.pop, win.structure, len(win.comms) + 1, angle, win.blocked))
            for angle in angles]
        got = [g for g in got if g is not None and len(g[2]) == len(win.comms) + 1]
        if got:
            best = min(got, key=lambda g: g[0])
            win.apply(trial, best[1], best[2])
            _local_search(trial, _BALANCE_WEIGHT, _AROUND_ROUNDS, comms=trial.around(t, 2))
            if trial.key()[:2] < plan.key()[:2]:
                plan = trial
                failed.clear()
                continue
        failed.add(s)
    return plan


def _polish(plan: _Plan, budget: int, n_alt: int = 8) -> _Plan:
    """
    Cut person-minutes on a small instance by whole-instance center swaps (first improvement)
    and, once they stall, rotated bisection seeds. Each is settled by flow with its stray
    pieces attached; if that is cheaper, it is finished by a short local search on a copy of
    the plan, kept when better by `_Plan.key`. At most `budget` settlements.
    """
    plan.resite()
    _local_search(plan, _FINAL_WEIGHT, max_rounds=20, count_first=True)
    best_key, evals = plan.key(), 0
    seeds = list(np.linspace(0, np.pi, _POLISH_SEEDS, endpoint=False) + 0.1) if plan.problem.xy is not None else []

    def judge(win: _Window, got) -> bool:
        nonlocal plan, best_key
        if got is None or got[0][2] >= best_key[2]:
            return False
        twin = plan.copy()
        win.apply(twin, got[1], got[2])
        _local_search(twin, _FINAL_WEIGHT, max_rounds=20, count_first=True)
        if twin.key() < best_key:
            plan, best_key = twin, twin.key()
            return True
        return False

    def trials(win: _Window):
        label, centers = np.searchsorted(win.comms, plan.label[win.units]), plan.center[win.comms]
        saving = win.savings(label, centers)
        for j in range(len(centers)):
            for c in win.alternatives(label, centers, j, n_alt, saving):
                trial = centers.copy()
                trial[j] = c
                yield trial
        while seeds:
            yield _seed_centers(win.xy, win.pop, win.structure, len(win.comms), seeds.pop(0), win.blocked)

    improved = True
    while improved and evals < budget:
        improved = False
        win = _Window(plan, plan.alive)
        for trial in trials(win):
            evals += 1
            improved = judge(win, win.evaluate(trial))
            if improved or evals >= budget:
                break
    return plan


def _trace(plan: _Plan, stage: str) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        n_out, people, cost = plan.key()
        logger.debug("%s: %d communities, %d outside the band (%.0f people), cost %.0f",
                     stage, len(plan.alive), n_out, people, cost)


def _one_run(problem: PartitionProblem, per_person: sp.csr_matrix, weighted: sp.csr_matrix,
             structure: sp.csr_matrix, k: int, angle: float) -> np.ndarray:
    pop = problem.pop.astype("float64")
    if problem.xy is not None:
        seeds = _seed_centers(problem.xy, pop, structure, k, angle)
    else:
        seeds = _greedy_seeds(per_person, pop, k)
    centers = np.array(_set_cover(structure, pop, seeds), dtype="int64")
    centers, label = _settle(pop, problem.min_pop, problem.max_pop, per_person, structure, weighted, centers)
    label = _attach_strays(label, pop, weighted, problem.adjacency, centers, strict=False)
    plan = _Plan(problem, per_person, weighted, structure, _pieces(label, problem.adjacency))
    _trace(plan, "settled")
    _local_search(plan, _BALANCE_WEIGHT, _GROW_ROUNDS)
    _reduce(plan, k)
    _trace(plan, "reduced")
    _local_search(plan, _BALANCE_WEIGHT)
    angles = np.linspace(0, np.pi, 4, endpoint=False) + angle
    _repair(plan, angles)
    _trace(plan, "repaired")
    plan = _transfer(plan, angles, _TRANSFERS)
    _trace(plan, "transferred")
    if len(pop) <= _POLISH_UNITS:
        plan = _polish(plan, _POLISH_BUDGET)
    _local_search(plan, _FINAL_WEIGHT, count_first=True)
    _trace(plan, "final")
    center = np.full(len(pop), -1, dtype="int64")
    served = plan.label >= 0
    center[served] = plan.center[plan.label[served]]
    return center


def _score(problem: PartitionProblem, center: np.ndarray) -> tuple[int, int, float, float]:
    """(communities, of them outside the band, people outside it, person-minutes)."""
    pop = problem.pop.astype("float64")
    served = np.flatnonzero(center >= 0)
    used, inverse = np.unique(center[served], return_inverse=True)
    viol = _violation(np.bincount(inverse, weights=pop[served], minlength=len(used)),
                      problem.min_pop, problem.max_pop)
    minutes, _ = lookup(problem.minutes, served, center[served])
    return len(used), int((viol > 0).sum()), float(viol.sum()), float((minutes * pop[served]).sum())


def _disconnected(problem: PartitionProblem, center: np.ndarray) -> int:
    if problem.adjacency is None:
        return 0
    return len(np.unique(_pieces(center, problem.adjacency)[center >= 0])) - len(np.unique(center[center >= 0]))


def partition_units(problem: PartitionProblem, *, seed: int | np.random.Generator | None = 0,
                    restarts: int = 3) -> Partition:
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
        so that runs x units stays under 25,000. The best partition (count nearest the wanted
        one, then fewest communities and people outside the band, then least person-minutes)
        wins, ties to the earliest.

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
    _validate(problem)
    rng = np.random.default_rng(seed)
    minutes = sp.csr_matrix(problem.minutes, dtype="float64")
    minutes.sort_indices()
    n = minutes.shape[0]
    reachable = np.diff(minutes.indptr) > 0
    if not reachable.any():
        return Partition(np.full(n, -1, dtype="int64"), np.zeros(0, "int64"), 0.0, 0.0, 0)
    shape = minutes.shape
    structure = sp.csr_matrix((np.ones(minutes.nnz), minutes.indices, minutes.indptr), shape=shape)
    per_person = sp.csr_matrix((_per_person(problem, minutes), minutes.indices, minutes.indptr), shape=shape)
    weighted = sp.csr_matrix((per_person.data * np.repeat(problem.pop.astype("float64"), np.diff(minutes.indptr)),
                              minutes.indices, minutes.indptr), shape=shape)
    total = float(problem.pop[reachable].sum())
    k = problem.n_communities or max(choose_k(total, problem.target_pop, problem.tolerance),
                                     _packing_bound(structure))
    runs = 1 if problem.xy is None else max(1, min(restarts, _RESTART_UNITS // max(n, 1)))
    angles = np.r_[0.0, rng.uniform(0, np.pi, runs - 1)]
    best, best_key = None, None
    for run, angle in enumerate(angles):
        center = _one_run(problem, per_person, weighted, structure, k, float(angle))
        count, n_out, violation, objective = _score(problem, center)
        logger.debug("Run %d: %d communities, %d outside the band (%.0f people), %.0f person-minutes",
                     run, count, n_out, violation, objective)
        key = (abs(count - k), n_out, violation, objective)
        if best_key is None or key < best_key:
            best, best_key = center, key
    _, _, violation, objective = _score(problem, best)
    return Partition(best, np.unique(best[best >= 0]), objective, violation,
                     len(_set_cover(structure, problem.pop)), _disconnected(problem, best))
