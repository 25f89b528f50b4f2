"""Communities with flexible centers (`SearchPlan`) and the boundary local search over them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from covplan._sparse import entries_of
from covplan.solve.partition.flow import relocate, tallies

if TYPE_CHECKING:
    from covplan.solve.partition.core import PartitionProblem

BALANCE_WEIGHT = 5.0       # local search: weight of the squared excess while balancing ...
FINAL_WEIGHT = 0.05        # ... and while cutting minutes at the end


def shared_fields(problem: PartitionProblem, per_person: sp.csr_matrix, weighted: sp.csr_matrix,
                  structure: sp.csr_matrix) -> dict:
    """What every `SearchPlan` of one problem holds alike: the problem, its matrices and what
    the search derives from them (pair keys, populations, each unit's neighbours)."""
    n_cand = weighted.shape[1]
    adjacency = problem.adjacency
    return {
        "problem": problem, "per_person": per_person, "weighted": weighted, "structure": structure,
        "indptr": weighted.indptr, "indices": weighted.indices, "w": weighted.data,
        "n_cand": n_cand,
        "keys": (np.repeat(np.arange(weighted.shape[0], dtype="int64"), np.diff(weighted.indptr))
                 * n_cand + weighted.indices),
        "pop": problem.pop.astype("float64"),
        "nbrs": None if adjacency is None else [
            adjacency.indices[adjacency.indptr[i]:adjacency.indptr[i + 1]].tolist()
            for i in range(adjacency.shape[0])],
    }


class SearchPlan:
    """
    Communities with flexible centers. For community k and candidate c, `cnt[k, c]` members are
    reached by c at summed cost `cost[k, c]`; any free c with cnt == size may serve k.
    """

    def __init__(self, problem: PartitionProblem, per_person: sp.csr_matrix,
                 weighted: sp.csr_matrix, structure: sp.csr_matrix, label: np.ndarray):
        shared = shared_fields(problem, per_person, weighted, structure)
        self.__dict__.update(shared)
        self.shared_names = tuple(shared)  # what `detached` leaves out
        self.label = label.copy()
        n_comm = int(label.max()) + 1 if (label >= 0).any() else 0
        self.cnt, self.cost = tallies(label, n_comm, structure, weighted)
        served = label >= 0
        self.size = np.bincount(label[served], minlength=n_comm)
        self.popk = np.bincount(label[served], weights=self.pop[served], minlength=n_comm)
        self.center = relocate(self.cnt, self.cost, self.size, np.full(n_comm, -1, dtype="int64"))
        self.used = np.zeros(self.n_cand, dtype=bool)
        self.used[self.center[self.center >= 0]] = True
        self.lab = self.label.tolist()
        self.seen = None                # `recombine.SeenCommunities` collecting its communities

    def detached(self) -> SearchPlan:
        """The plan without what every plan of its problem shares (`shared_fields`), light to
        send between processes: a million residents' plan 9.5 -> 1.9 MB. `attach` puts it back."""
        light = object.__new__(SearchPlan)
        light.__dict__.update({k: v for k, v in self.__dict__.items() if k not in self.shared_names})
        return light

    def attach(self, shared: dict) -> SearchPlan:
        """A `detached` plan whole again, with `shared_fields` of its problem; returns it."""
        self.__dict__.update(shared)
        return self

    def copy(self) -> SearchPlan:
        twin = object.__new__(SearchPlan)
        twin.__dict__.update(self.__dict__)
        for name in ("label", "cnt", "cost", "size", "popk", "center", "used"):
            setattr(twin, name, getattr(self, name).copy())
        twin.lab = list(self.lab)
        return twin

    @property
    def alive(self) -> np.ndarray:
        return np.flatnonzero(self.size > 0)

    def key(self) -> tuple[int, float, int, float, float]:
        """`problem_band_key` of the communities, then their total cost: smaller is better."""
        alive = self.alive
        return (*problem_band_key(self.popk[alive], self.problem), float(self.cost[alive, self.center[alive]].sum()))

    def resite(self) -> None:
        alive = self.alive
        self.center[alive] = relocate(self.cnt[alive], self.cost[alive], self.size[alive],
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
            # The units' stored neighbours read in place: slicing the adjacency built a new
            # matrix on every call (a tenth of the improvement phase on Chengdu).
            adj = self.problem.adjacency
            sources = np.arange(adj.shape[0]) if units is None else np.asarray(units)
            other = label[adj.indices[entries_of(adj.indptr, sources)]]
            rows = np.repeat(sources, np.diff(adj.indptr)[sources])
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

    def outside_band(self, skip: set[int]) -> list[int]:
        """Communities outside the band not in `skip`, in the order windows take them: tiny
        ones first, then the largest, ties by index."""
        problem, alive = self.problem, self.alive
        popk = self.popk[alive]
        out = (popk < problem.min_pop) | (popk > problem.max_pop)
        tiny = popk < problem.tiny_pop
        order = np.lexsort((alive, -popk, ~tiny))
        return [int(alive[i]) for i in order if out[i] and int(alive[i]) not in skip]

    def around(self, s: int, rings: int = 1) -> np.ndarray:
        """Community s and the communities within `rings` steps of it."""
        comms = np.array([s])
        for _ in range(rings):
            members = np.flatnonzero(np.isin(self.label, comms))
            comms = np.unique(np.r_[comms, self.neighbour_pairs(members)[2]])
        return comms


def band_violation(pop_k, lo: float, hi: float):
    return np.clip(lo - pop_k, 0, None) + np.clip(pop_k - hi, 0, None)


def band_key(sizes, *, min_pop: float, max_pop: float, target_pop: float,
             tiny_share: float = 0.5) -> tuple[float, int, int, float]:
    """
    The rules' order for community populations, smaller first — the one scoring of the band
    used by the planner's core, a district's plan and an incremental re-plan: residents of
    communities outside the band (the product's promise is the share of residents in balanced
    communities), tiny communities (below `tiny_share` of the target), communities outside the
    band, people beyond the band's edges.
    """
    sizes = np.asarray(sizes, dtype="float64")
    viol = band_violation(sizes, min_pop, max_pop)
    out = viol > 0
    return (float(sizes[out].sum()), int((sizes < tiny_share * target_pop).sum()),
            int(out.sum()), float(viol.sum()))


def tiny_first_order(key: tuple) -> tuple:
    """A `band_key` (or one with more after it) ordered by its tiny communities first: the
    `min_pop_exception` rule before balance."""
    return (key[1], *key)


def worth_clearing(before: tuple, after: tuple, target_pop: float) -> bool:
    """Whether a plan (`band_key` `after`) with fewer tiny communities than `before` is worth
    its cost in balance: at most a target's residents more outside the band per tiny community
    cleared, the price the heuristic's tiny clearing, the choice between improved restarts and
    the CP-SAT windows' tiny pass all pay. The rule comes before balance, but a planner would
    not give up a whole balanced community's residents to merge a few hundred into another."""
    return after[0] - before[0] <= target_pop * (before[1] - after[1])


def problem_band_key(pop_k: np.ndarray, problem: PartitionProblem) -> tuple[float, int, int, float]:
    """`band_key` of a problem's community populations."""
    return band_key(pop_k, min_pop=problem.min_pop, max_pop=problem.max_pop,
                    target_pop=problem.target_pop, tiny_share=problem.tiny_share)


def _band_deltas(pa, pb, p, cost, problem: PartitionProblem, lam: float,
                 keep_residents: bool = False):
    """
    Change in (rank, people outside the band, cost + lam x sum(d^2) / target) when p people move
    from a community of pa to one of pb. rank is the change in communities outside the band, or
    a prohibitive 1e12 when the move makes the donor tiny or (with `keep_residents`) raises the
    residents of communities outside the band; d is how far a community is from the target
    beyond a dead zone of half the tolerance (so that surplus flows through communities in the
    band but near its edges). Scalars or arrays.
    """
    lo, hi, target = problem.min_pop, problem.max_pop, problem.target_pop
    zone, tiny = (hi - lo) / 4, problem.tiny_share * target
    if np.ndim(pa) == 0 and np.ndim(pb) == 0 and np.ndim(p) == 0:   # the hot path: plain floats
        def out(x):
            return max(lo - x, 0.0) + max(x - hi, 0.0)

        def sq(x):
            return max(abs(x - target) - zone, 0.0) ** 2
    else:
        def out(x):
            return band_violation(x, lo, hi)

        def sq(x):
            return np.clip(np.abs(x - target) - zone, 0, None) ** 2

    before, after = (out(pa), out(pb)), (out(pa - p), out(pb + p))
    was = [(x > 1e-9) * 1 for x in before]
    now = [(x > 1e-9) * 1 for x in after]
    d_count = now[0] + now[1] - was[0] - was[1]
    d_residents = now[0] * (pa - p) + now[1] * (pb + p) - was[0] * pa - was[1] * pb
    harm = ((d_residents > 1e-9) & keep_residents) | ((pa - p < tiny) & (pa >= tiny))
    d_viol = after[0] + after[1] - before[0] - before[1]
    return d_count + harm * 1e12, d_viol, cost + lam * (sq(pa - p) + sq(pb + p) - sq(pa) - sq(pb)) / target


def _better(d_rank, d_viol, d_soft):
    """Whether a change improves (rank, people outside the band, soft cost) lexicographically."""
    return (d_rank < -1e-9) | ((d_rank <= 1e-9) & ((d_viol < -1e-9) | ((d_viol <= 1e-9) & (d_soft < -1e-9))))


def local_search(plan: SearchPlan, lam: float, max_rounds: int = 100, comms: np.ndarray | None = None,
                  count_first: bool = False, keep_residents: bool = False) -> None:
    """
    Boundary moves that lower the people outside the band, or keep it and lower cost + lam x
    squared excess; with `count_first`, moves must not make a tiny community and lower the
    communities outside the band first (a deficit may still wander to where people are plenty);
    with `keep_residents` too, no move raises the residents of communities outside the band.
    Only units of `comms` if given. The receiving community may re-site its center to take the
    unit; the donor must stay in one piece. Centers re-sited every round.
    """
    for _ in range(max_rounds):
        u, a, b = plan.neighbour_pairs(None if comms is None else np.flatnonzero(np.isin(plan.label, comms)))
        p = plan.pop[u]
        cost = plan.batch_gains(u, b) - plan.lookup(u, plan.center[a])[0]
        d_rank, d_viol, d_soft = _band_deltas(plan.popk[a], plan.popk[b], p, cost, plan.problem, lam,
                                              keep_residents)
        d_rank = d_rank * count_first
        good = np.isfinite(cost) & (plan.size[a] > 1) & _better(d_rank, d_viol, d_soft)
        moved = 0
        for i in np.flatnonzero(good)[np.lexsort((u[good], d_soft[good], d_viol[good], d_rank[good]))]:
            ui, ai, bi = int(u[i]), int(a[i]), int(b[i])
            if plan.label[ui] != ai or plan.size[ai] <= 1:
                continue
            got = plan.gain_in(ui, bi)
            if got is None:
                continue
            dc, dv, ds = _band_deltas(float(plan.popk[ai]), float(plan.popk[bi]), float(p[i]),
                                      got[0] - plan.pair_cost(ui, int(plan.center[ai])), plan.problem, lam,
                                      keep_residents)
            if not _better(dc * count_first, dv, ds):
                continue
            if plan.touches(ui, bi) and plan.connected_without(ui, ai):
                plan.move(ui, ai, bi, got[1])
                moved += 1
        plan.resite()
        if moved == 0:
            break
    if plan.seen is not None:
        plan.seen.record(plan)


def empty_community(plan: SearchPlan, s: int, lam: float) -> bool:
    """Move every member of community s, border inwards, to a neighbour that can serve it
    (least harm to the band first); undo everything and return False if some unit can't go."""
    log: list[tuple[int, int, int]] = []
    while plan.size[s] > 0:
        u, _, b = plan.neighbour_pairs(np.flatnonzero(plan.label == s))
        cost = plan.batch_gains(u, b)
        ok = np.isfinite(cost)
        u, b, cost = u[ok], b[ok], cost[ok]
        _, d_viol, d_soft = _band_deltas(np.full(len(u), plan.popk[s]), plan.popk[b], plan.pop[u],
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
