"""
Windows solved as constraint models (OR-Tools CP-SAT): the core's last step, on the improved
winner (`partition_units`, stage 7).

The heuristic windows (`improve`) try a few dozen center sets and settle each by flow; where a
stretch of city is tight (communities that can only just reach the band, circles that overlap),
the balanced split can be a center set none of those seeds propose. Here the window around a
community outside the band is a feasibility question put to CP-SAT: as many communities, one
fewer or one more, with one more of them within the band than now, none tiny, more residents
in balanced communities; every unit served by a site it reaches, every community connected.
A second pass takes the tiny communities left: a split without them that gives up at most a
target's balanced residents, the most balanced residents found (the tiny rule before balance).

Connectivity is modelled by distance labels (shortest-path contiguity, as in districting
models): a community's root is the unit nearest its site, and a unit may join the community
only next to a member one step closer to the root (hops within the units that reach the site).
That admits fewer plans than "connected", never a disconnected one. To keep the model small,
sites whose reach over the window nearly repeats one already kept are dropped (Jaccard
similarity), and neighbouring units that reach the same kept sites are merged into one.

No library partitions a graph into connected parts under reach and population bounds, so the
model is written here; the search is CP-SAT's, on one worker with a deterministic time limit,
so the same inputs give the same plan.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, shortest_path

from covplan._sparse import key_groups, row_slice
from covplan.solve.partition.refine import Window
from covplan.solve.partition.search import (
    FINAL_WEIGHT,
    SearchPlan,
    local_search,
    problem_band_key,
    tiny_first_order,
)

logger = logging.getLogger(__name__)

SIMILAR_SITES = 0.7     # a site whose reach over the window overlaps a kept one's this much
                        # (Jaccard) is left out: the demo's district D3 goes from 152 sites and
                        # no answer in 30 s to 39 sites and an answer in 0.3 s
MAX_MODEL_UNITS = 500   # a window with more merged units is left to the heuristic
SOLVE_SECONDS = 0.5     # CP-SAT's deterministic time per model
TINY_SECONDS = 0.25     # ... and per model giving up balance for the tiny rule (on Chengdu those
TINY_BUDGET = 0.5       # answered within 0.03 s or not in 6 s), this much in all, after the rest:
                        # sharing the first pass's time took windows that gained balance (the
                        # demo at 3 km/h, linear at 3.6 km/h)
_ROUNDS = 4             # local-search rounds that tidy walks around a solved window


def _free_sites(win: Window, current: np.ndarray, similar: float = SIMILAR_SITES) -> np.ndarray:
    """Sites the window may use: its current centers, then free sites that reach some of its
    units by residents gathered, each unlike (Jaccard below `similar`) every site kept before."""
    reach = win.structure
    gathers = np.asarray(reach.T @ win.pop).ravel()
    others = np.flatnonzero(~win.blocked & (gathers > 0) & ~np.isin(np.arange(len(gathers)), current))
    order = np.r_[current, others[np.lexsort((others, -gathers[others]))]].astype("int64")
    cols = reach[:, order].tocsc()
    cols.data[:] = 1.0
    shared = (cols.T @ cols).toarray()
    size = np.diag(shared)
    kept: list[int] = []
    for i in range(len(order)):
        if i < len(current) or not kept:
            kept.append(i)
            continue
        union = size[i] + size[kept] - shared[i, kept]
        if (shared[i, kept] / np.maximum(union, 1)).max() < similar:
            kept.append(i)
    return order[kept]


def _merge_units(reach: sp.csr_matrix, adjacency: sp.csr_matrix) -> tuple[int, np.ndarray]:
    """Neighbouring units that reach the same sites, merged: (count, group of each unit)."""
    sig, _ = key_groups(reach.indices[row_slice(reach, u)].tobytes() for u in range(reach.shape[0]))
    a = adjacency.tocoo()
    same = sig[a.row] == sig[a.col]
    n = reach.shape[0]
    links = sp.csr_matrix((np.ones(int(same.sum())), (a.row[same], a.col[same])), shape=(n, n))
    return connected_components(links, directed=False)


class _Model:
    """The window's units (merged) and sites as a CP-SAT model; `solve` asks for a target."""

    def __init__(self, win: Window, minutes: sp.csr_matrix, sites: np.ndarray, n_current: int):
        problem = win.problem
        reach = win.structure[:, sites].tocsr()
        reach.sort_indices()
        self.n_groups, self.group = _merge_units(reach, win.adjacency)
        if self.n_groups > MAX_MODEL_UNITS:
            # Left to the heuristic (`_solve_window`): the rest would be built for nothing, and
            # building it took 7.3 of sprawl's 8.9 s of windows that no model was asked of.
            self.covered = False           # so that `solve` answers None, never a half model
            return
        members = sp.csr_matrix((np.ones(len(self.group)), (self.group, np.arange(len(self.group)))),
                                shape=(self.n_groups, len(self.group)))
        self.pop = np.rint(members @ win.pop).astype("int64")
        group_reach = (members @ reach).tocsc()
        group_reach.sort_indices()                # searchsorted below needs sorted groups
        links = (members @ win.adjacency @ members.T).tocsr()
        links.setdiag(0)
        links.eliminate_zeros()
        minutes = minutes[:, sites].tocsc()
        self.tiny = int(np.ceil(problem.tiny_pop - 1e-9))
        self.lo = int(np.ceil(problem.min_pop - 1e-9))
        self.hi = int(np.floor(problem.max_pop + 1e-9))
        self.members: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
        for j in range(len(sites)):
            groups = group_reach.indices[group_reach.indptr[j]:group_reach.indptr[j + 1]]
            if self.pop[groups].sum() < self.tiny:
                continue
            fine = minutes.indices[minutes.indptr[j]:minutes.indptr[j + 1]]
            root = int(self.group[fine[np.argmin(minutes.data[minutes.indptr[j]:minutes.indptr[j + 1]])]])
            hops = shortest_path(links[groups][:, groups], unweighted=True, directed=False,
                                 indices=int(np.searchsorted(groups, root)))
            linked = np.isfinite(hops)
            if self.pop[groups[linked]].sum() >= self.tiny:
                self.members[j] = (groups[linked], hops[linked], root)
        # Built once for every count asked: each member's neighbours one hop nearer the root.
        hop = {(g, j): h for j, (groups, hops, _) in self.members.items()
               for g, h in zip(groups.tolist(), hops.tolist())}
        self.nearer = {(g, j): [v for v in links.indices[links.indptr[g]:links.indptr[g + 1]]
                                if (v, j) in hop and hop[v, j] < h]
                       for (g, j), h in hop.items() if g != self.members[j][2]}
        self.covered = len({g for g, _ in hop}) == self.n_groups
        # Current centers come first in `sites`: a locked one in use stays open.
        current = np.arange(len(sites)) < n_current
        self.keep_open = (np.zeros(len(sites), dtype=bool) if problem.locked is None
                          else np.asarray(problem.locked, bool)[sites] & current)
        self._base = None                  # the model's fixed part, built at the first ask

    def _build(self):
        """The model without an ask's rows: (model, x by (group, site), opened, balanced, held)."""
        from ortools.sat.python import cp_model

        model = cp_model.CpModel()
        x: dict[tuple[int, int], object] = {}
        for j, (groups, _, _) in self.members.items():
            for g in groups.tolist():
                x[g, j] = model.NewBoolVar("")
        choices: dict[int, list[int]] = {}
        for g, j in x:
            choices.setdefault(g, []).append(j)
        for g, js in choices.items():
            model.AddExactlyOne(x[g, j] for j in js)
        opened, balanced, held = [], [], []
        for j, (groups, _, root) in self.members.items():
            is_open, in_band = model.NewBoolVar(""), model.NewBoolVar("")
            residents = sum(int(self.pop[g]) * x[g, j] for g in groups.tolist())
            model.Add(x[root, j] == is_open)
            if self.keep_open[j]:
                model.Add(is_open == 1)
            model.Add(residents >= self.tiny).OnlyEnforceIf(is_open)
            model.Add(residents >= self.lo).OnlyEnforceIf(in_band)
            model.Add(residents <= self.hi).OnlyEnforceIf(in_band)
            model.AddImplication(in_band, is_open)
            counted = model.NewIntVar(0, self.hi, "")
            model.Add(counted <= residents)
            model.Add(counted <= self.hi * in_band)
            opened.append(is_open)
            balanced.append(in_band)
            held.append(counted)
            for g in groups.tolist():
                model.AddImplication(x[g, j], is_open)
                if g != root:
                    model.AddBoolOr([x[v, j] for v in self.nearer[g, j]]).OnlyEnforceIf(x[g, j])
        return model, x, opened, balanced, held

    def solve(self, k: int | None, n_balanced: int, more_than: int, seconds: float, *,
              most: bool = False) -> tuple[np.ndarray | None, float]:
        """Site (index into `sites`) per window unit for k communities (any count if None), at
        least `n_balanced` in the band, none tiny, more than `more_than` residents balanced
        (with `most`, as many as CP-SAT finds within the time); None if CP-SAT finds none
        within `seconds` of deterministic time (no proof: the model admits only some connected
        shapes); and the deterministic time it took."""
        from ortools.sat.python import cp_model

        if not self.covered:
            return None, 0.0               # some merged unit reaches no usable site
        if self._base is None:
            self._base = self._build()
        base, x, opened, balanced, held = self._base
        # Each ask adds its own last rows to a copy of the same model (the same proto as
        # building it whole, so the same search; building it for each ask took more of the
        # windows' time than CP-SAT did).
        model = base.clone()
        opened = [model.get_bool_var_from_proto_index(v.Index()) for v in opened]
        balanced = [model.get_bool_var_from_proto_index(v.Index()) for v in balanced]
        held = [model.get_int_var_from_proto_index(v.Index()) for v in held]
        if k is not None:
            model.Add(sum(opened) == k)
        model.Add(sum(balanced) >= n_balanced)
        model.Add(sum(held) >= more_than + 1)
        if most:
            model.Maximize(sum(held))
        solver = cp_model.CpSolver()
        params = solver.parameters
        params.num_workers = 1
        params.random_seed = 0
        params.max_deterministic_time = seconds
        params.cp_model_probing_level = 0   # probing alone took the whole second on the demo
        params.symmetry_level = 0
        params.catch_sigint_signal = False   # Ctrl-C is the CLI's: one line and exit 130
        status = solver.Solve(model)
        logger.debug("model of %d merged units, %d sites: %s communities, %d balanced, more than %d: "
                     "%s in %.2f", self.n_groups, len(self.members), k, n_balanced, more_than,
                     solver.StatusName(status), solver.deterministic_time)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None, solver.deterministic_time
        site = np.full(self.n_groups, -1, dtype="int64")
        for (g, j), var in x.items():
            if solver.BooleanValue(var):
                site[g] = j
        return site[self.group], solver.deterministic_time


def _one_more_first(plan: SearchPlan, s: int, win: Window, now: int) -> list[tuple[int, int, int]]:
    """Around a community above the band in a window whose mean community is above the target
    (a dense core, every community near the band's top), first ask for one more community with
    all of them balanced. The usual first ask, as many, can spend the whole budget finding
    nothing there: a Chengdu core of 8 communities of 11,836-12,002 found no split as 8 in 0.8 s
    of CP-SAT's time, and one as 9 in 0.1 s. Only a split with every community balanced goes
    before the usual asks: one more with a community left short (3 -> 4, one of 5,679) was
    taken where as many gave 3 balanced."""
    problem, m = plan.problem, len(win.comms)
    if plan.popk[s] <= problem.max_pop or float(win.pop.sum()) / m <= problem.target_pop:
        return []
    return [(m + 1, m + 1, now)]         # (count, balanced at least, more balanced than)


def _solve_window(plan: SearchPlan, s: int, rings: int, loss: int, budget: list[float],
                  per_model: float) -> bool:
    """Ask CP-SAT for a better split of the window around s (as many communities, one fewer,
    one more; in a full window one more first, `_one_more_first`) with one more balanced
    community at least, or, with tiny communities in it, none tiny and at most `loss` fewer
    residents in balanced communities; apply it when the rules' order improves (fewer tiny
    communities, or as many and fewer residents outside the band). Each model's deterministic
    time is taken from `budget`."""
    problem = plan.problem
    win = Window(plan, plan.around(s, rings))
    tiny = win.before[1] > 0
    # Giving up balance to clear a tiny community, the model takes every site (one left out
    # as similar may be the only one the tiny community's residents can join), any count, and
    # the most balanced residents CP-SAT finds in a short time.
    lossy = loss > 0
    current = plan.center[win.comms]
    sites = _free_sites(win, current, 1.0 if lossy else SIMILAR_SITES)
    model = _Model(win, problem.minutes[win.units], sites, len(current))
    if model.n_groups > MAX_MODEL_UNITS:
        return False
    sizes = plan.popk[win.comms]
    in_band = (sizes >= problem.min_pop) & (sizes <= problem.max_pop)
    now, m = int(np.rint(sizes[in_band].sum())), len(win.comms)
    # With tiny communities in the window, a split without one that keeps every balanced
    # resident; else one more balanced community at least: gains of a few residents are not
    # worth a model. One count at a time (as many, one fewer, one more): a model with the
    # count free took longer to answer than the three together on the demo and on Chengdu.
    if lossy:
        asks = [(None, 0, now - loss - 1)]
    elif tiny:
        asks = [(k, int(in_band.sum()), now - 1) for k in (m, m - 1, m + 1)]
    else:
        # One fewer holds as many balanced communities at most as it has (all of them, where
        # every other one is balanced now): more residents in band is the gain then.
        asks = [(k, min(int(in_band.sum()) + 1, k), now) for k in (m, m - 1, m + 1)]
        asks = _one_more_first(plan, s, win, now) + asks
    for k, at_least, floor in asks:
        if (k is not None and k < 1) or budget[0] <= 0:
            continue
        seconds = min(per_model, TINY_SECONDS if lossy else per_model, budget[0])
        site, spent = model.solve(k, at_least, floor, seconds, most=lossy)
        budget[0] -= spent
        if site is None:
            continue
        used, label = np.unique(site, return_inverse=True)
        got = problem_band_key(np.bincount(label, weights=win.pop), problem)
        logger.debug("exact window around %d (%d rings, %d communities, %d merged units): "
                     "%s -> %s", s, rings, m, model.n_groups, win.before[:4], got)
        if tiny_first_order(got) < tiny_first_order(win.before[:4]):
            win.apply(plan, label, sites[used])
            local_search(plan, FINAL_WEIGHT, _ROUNDS, comms=plan.around(s, rings + 1),
                         count_first=True, keep_residents=True)
            return True
    return False


def solve_windows(plan: SearchPlan, *, seconds: float, per_model: float = SOLVE_SECONDS,
                  tiny_seconds: float = TINY_BUDGET) -> bool:
    """
    The improvement phase's last step: for each community outside the band (tiny ones first,
    then the largest), its window of one ring and then two rings is put to CP-SAT
    (`_solve_window`) until none improves or the models have used `seconds` of CP-SAT's
    deterministic time; then the window of each tiny community left is asked again allowing
    the loss of one community's worth of balanced residents (a target's; a larger loss to clear
    a few residents is not a trade a planner would take), within `tiny_seconds` more. No clock:
    the same plan on any machine. True when the plan changed. A plan without adjacency (no
    contiguity rule) is left as it is.
    """
    if plan.problem.adjacency is None:
        return False
    problem, changed = plan.problem, False
    tiny_pop = problem.tiny_pop
    for loss, budget in ((0, [seconds]), (int(problem.target_pop), [tiny_seconds])):
        failed: set[int] = set()
        while budget[0] > 0:
            todo = [s for s in plan.outside_band(failed) if not loss or plan.popk[s] < tiny_pop]
            if not todo:
                break
            s = todo[0]
            before = tiny_first_order(plan.key())
            improved = any(_solve_window(plan, s, rings, loss, budget, per_model)
                           for rings in (1, 2))
            if improved and tiny_first_order(plan.key()) < before:
                changed = True
                failed.clear()
            else:
                failed.add(s)
    return changed
