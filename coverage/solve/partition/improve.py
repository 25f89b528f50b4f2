"""
The improvement phase: re-solve the window around each community outside the band (one ring
of neighbours, then two) with the window's community count free inside what its residents
allow, and keep a result only when the rules' order (`problem_band_key`) strictly improves.

A window of P residents can hold from ceil(P / max_pop) to floor(P / min_pop) communities in
the band. Each count near the current one is tried from a few center sets: the current
centers (a flow re-solve), the current ones with the community split in two by bisection seeds
of its own units (one center more) or with one of the smallest dropped (one less), and rotated
equal-population bisection seeds of the whole window; where residents stay outside the band,
also sets with one community meant to stay small (`_uneven`), among them seeds with the small
one at either end of the window beside balanced ones (`_end_seeds`). Every set is settled by
the flow core (`Window.evaluate`: every unit served by a center it reaches, every community
connected, none empty), so a kept result never breaks coverage or contiguity; one with more
tiny communities than before (below half the target) is refused. Outside the window nothing changes.
A tiny community left at the end breaks a rule (`min_pop_exception`: only proven exceptions,
planned apart, may be tiny), so then its window is re-solved for fewer tiny communities even at
a cost in balance, at most a target's residents per tiny community cleared (`_clear_tiny`, the
price the CP-SAT windows' tiny pass pays too); there, one center fewer is also tried as an
exact set cover (HiGHS): sites that each reach at least the tiny threshold of the window's
residents and together reach all of it, keeping the most current centers. Then the balancing
runs once more, on half the budget: only windows near what clearing changed are worth a second
try. Windows whose communities all fall short of the band are re-solved with one of them aimed
at it (`aim_at_band`, `_peaks`), after the CP-SAT windows, on each run finished.
Deterministic: a budget of settled window units, no clock.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging

import numpy as np
import scipy.sparse as sp
from covplan.solve.partition.flow import attach_strays, settle, split_pieces
from covplan.solve.partition.refine import REDUCE_TRIES, Window, reduce_to
from covplan.solve.partition.search import (
    BALANCE_WEIGHT,
    FINAL_WEIGHT,
    SearchPlan,
    empty_community,
    local_search,
    problem_band_key,
    tiny_first_order,
    worth_clearing,
)
from covplan.solve.partition.seeding import seed_centers, set_cover

logger = logging.getLogger(__name__)

_IMPROVE_ROUNDS = 4         # final local-search rounds around an improved window
_SPLIT_SEEDS = 3            # bisection angles for splitting a community in two
_DROP_TRIES = 3             # centers tried for removal when a window loses a community
_WINDOW_SEEDS = 2           # rotated bisection seeds of a whole window per community count
_MAX_WINDOW_UNITS = 6_000   # a bigger window is skipped (the flow's cost grows with it)
_SUB_ROUNDS = 10            # local-search rounds inside a window's own plan
_SMALL_TRIES = 2            # undersized communities of a window tried as the one left small
_MAX_EXTRA = 4              # a set whose flow leaves more communities than this above the count
                            # wanted is not finished: dissolving them took a third of the
                            # improvement phase on Chengdu's network and changed no plan (the
                            # synthetic cities at seeds 0-2, the demo, six Chengdu variants)


class _SubPlan:
    """A window as a problem of its own: its units and the candidates no community outside it
    uses. A center set is finished like a whole run (cover, flow, stray pieces as communities of
    their own, local search, dissolve down to the wanted count), so that the flow's cut-off
    pieces and units the set leaves unreached are repaired instead of ruling the set out."""

    def __init__(self, plan: SearchPlan, win: Window, *, shrinks: int = REDUCE_TRIES):
        self.win = win
        self.shrinks = shrinks    # `reduce_to`'s re-solves one center short, at most
        self.cols = np.flatnonzero(~win.blocked)
        self.col_of = np.full(len(win.blocked), -1, dtype="int64")
        self.col_of[self.cols] = np.arange(len(self.cols))
        self.per_person = win.per_person[:, self.cols].tocsr()
        self.weighted = win.weighted[:, self.cols].tocsr()
        self.structure = win.structure[:, self.cols].tocsr()
        for matrix in (self.per_person, self.weighted, self.structure):
            matrix.sort_indices()
        self.problem = dataclasses.replace(
            plan.problem, minutes=self.per_person, pop=plan.problem.pop[win.units],
            adjacency=win.adjacency, xy=win.xy, n_communities=None, existing=None,
            unit_prior=None, candidate_prior=None)

    def evaluate(self, centers: np.ndarray, k: int, aim: tuple[int, bool] | None = None,
                 tiny_first: bool = False):
        """(key like `SearchPlan.key`, label, global centers) of the window finished from `centers`
        with at most k communities, or None when the flow's assignment doesn't beat the window
        in residents or in people outside the band, falls into more than `_MAX_EXTRA` pieces
        beyond k, or the finish breaks a rule. With `aim` = (position, False), the center at
        that position is meant to hold an undersized community (from the tiny threshold up to
        the band's floor) so that the others can reach the band; with (position, True), that
        one is aimed at the band and filled first, the others only kept above the tiny
        threshold (`_peaks`). The flow's soft bounds say so, and the finish makes no move that
        adds residents outside the band.
        With `tiny_first`, a set also passes when its flow has fewer tiny communities."""
        win = self.win
        start = self.col_of[centers]
        if aim is not None:
            at, big = aim
            if start[at] < 0:
                return None
            at = int((start[:at] >= 0).sum())
        start = set_cover(self.structure, win.pop, [int(c) for c in start[start >= 0]])
        lo, hi = win.lo, win.hi
        if aim is not None:
            lo, hi = np.full(len(start), win.lo), np.full(len(start), win.hi)
            if big:
                lo[:] = self.problem.tiny_pop
                lo[at] = win.lo
            else:
                lo[at] = self.problem.tiny_pop
                hi[at] = win.lo - 1
        cand, label = settle(win.pop, lo, hi, self.per_person, self.structure,
                              self.weighted, np.asarray(start, dtype="int64"),
                              first=at if aim is not None and big else None)
        # The flow ignores contiguity, so its balance is a fair guess of the best to hope for;
        # finishing (below) costs several times the flow, so hopeless sets stop here.
        guess = problem_band_key(np.bincount(label, weights=win.pop), self.problem)
        if (guess[0] >= win.before[0] and guess[3] >= win.before[3]
                and not (tiny_first and guess[1] < win.before[1])):
            return None
        label = split_pieces(attach_strays(label, win.pop, self.weighted, win.adjacency, cand,
                                           strict=False), win.adjacency)
        if np.unique(label[label >= 0]).size > k + _MAX_EXTRA:
            return None
        sub = SearchPlan(self.problem, self.per_person, self.weighted, self.structure, label)
        keep = aim is not None        # even out no more: that would undo the uneven split
        if len(sub.alive) > k:
            local_search(sub, BALANCE_WEIGHT, _SUB_ROUNDS, count_first=keep, keep_residents=keep)
            reduce_to(sub, k, tries=self.shrinks)
        local_search(sub, BALANCE_WEIGHT, _SUB_ROUNDS, count_first=keep, keep_residents=keep)
        local_search(sub, FINAL_WEIGHT, _SUB_ROUNDS, count_first=True, keep_residents=keep)
        alive = sub.alive
        centers = sub.center[alive]
        if ((sub.label < 0).any() or centers.min() < 0 or len(np.unique(centers)) < len(alive)
                or (sub.cnt[alive, centers] < sub.size[alive]).any()):
            return None           # a shared or out-of-reach center: not a plan the rules allow
        compact = np.searchsorted(alive, sub.label)
        if win.seen is not None:
            win.seen.add_labels(win.units, compact, self.cols[centers])
        return sub.key(), compact, self.cols[centers]


def _counts(win: Window, m: int, over: bool) -> list[int]:
    """Community counts to try for a window holding m: m and m +- 1 where the window's
    residents can fill them within the band (the wanted direction first); all three when no
    count balances it."""
    total = float(win.pop.sum())
    k_lo = int(np.ceil(total / win.hi - 1e-9))
    k_hi = int(np.floor(total / win.lo + 1e-9))
    order = [m + 1, m, m - 1] if over else [m - 1, m, m + 1]
    if k_lo <= k_hi:
        return [k for k in order if k_lo <= k <= k_hi and k >= 1]
    return [k for k in order if k >= 1]


def _options(plan: SearchPlan, win: Window, s: int, k: int, angles: np.ndarray) -> list[np.ndarray]:
    """Center sets of k centers for the window around community s."""
    current = plan.center[win.comms]
    m = len(current)
    j = int(np.searchsorted(win.comms, s))
    options: list[np.ndarray] = []
    if k == m:
        options.append(current.copy())
    elif k == m + 1 and win.xy is not None:
        own = np.flatnonzero(plan.label[win.units] == s)
        blocked = win.blocked.copy()
        blocked[np.delete(current, j)] = True
        for angle in angles[:_SPLIT_SEEDS]:
            pair = seed_centers(win.xy[own], win.pop[own], win.structure[own], 2, float(angle), blocked)
            if len(pair) == 2:
                options.append(np.r_[np.delete(current, j), pair])
    elif k == m - 1:
        smallest = [int(i) for i in np.lexsort((win.comms, plan.popk[win.comms])) if i != j]
        for i in ([j] + smallest)[:_DROP_TRIES]:
            options.append(np.delete(current, i))
    if win.xy is not None:
        options += [seed_centers(win.xy, win.pop, win.structure, k, float(a), win.blocked)
                    for a in angles[:_WINDOW_SEEDS]]
    return [o for o in options if len(o) == k and len(np.unique(o)) == k]


_COVER_NODES = 200          # branch-and-bound nodes for a window's set cover (deterministic)


def _gathers(win: Window) -> tuple[sp.csr_matrix, np.ndarray]:
    """The window's units x sites reach as ones, and per site the window's residents it reaches."""
    reach = sp.csr_matrix(win.structure, dtype="float64")
    reach.data[:] = 1.0
    return reach, np.asarray(reach.T @ win.pop).ravel()


def _cover_option(win: Window, k: int, current: np.ndarray, floor: float) -> np.ndarray | None:
    """k free sites that together reach every unit of the window, each reaching at least
    `floor` of its residents, keeping as many current centers as possible (None when no such k
    sites exist, or HiGHS can't tell). Why: with one center fewer, the others must move so
    that their walks still cover the tiny community's units; dropping one and covering
    greedily just brings back a center that gathers too few."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    reach, gathers = _gathers(win)
    cols = np.flatnonzero(~win.blocked & (gathers >= floor))
    a = reach[:, cols].tocsr()
    if (np.diff(a.indptr) == 0).any():
        return None
    moved = (~np.isin(cols, current)).astype("float64")     # 0 for a current center
    res = milp(moved, integrality=np.ones(len(cols)), bounds=Bounds(0, 1),
               constraints=[LinearConstraint(a, 1, np.inf),
                            LinearConstraint(np.ones((1, len(cols))), k, k)],
               options={"node_limit": _COVER_NODES, "presolve": True})
    if res.x is None:
        return None
    chosen = cols[np.flatnonzero(res.x > 0.5)]
    return chosen if len(chosen) == k else None


def _best_of(sub: _SubPlan, win: Window, trials, k: int, best, budget: list[int],
             tiny_first: bool = False):
    """The best of `best` and the (centers, aim) trials that beat the window's key without
    more tiny communities, while the budget lasts. With `tiny_first`, a trial must leave fewer
    tiny communities, and the fewest tiny, then the rules' order, wins."""
    def rank(key):
        return tiny_first_order(key) if tiny_first else key

    for centers, aim in trials:
        if budget[0] <= 0:
            break
        budget[0] -= len(win.units)
        got = sub.evaluate(centers, k, aim, tiny_first)
        if got is None:
            continue
        better = (got[0][1] < win.before[1] if tiny_first
                  else got[0][:4] < win.before[:4] and got[0][1] <= win.before[1])
        if better and (best is None or rank(got[0]) < rank(best[0])):
            best = got
    return best


def _uneven(plan: SearchPlan, win: Window, s: int, k: int, angles: np.ndarray):
    """(centers, (position, False)) trials with one community meant to stay undersized: the
    current centers (k = the window's count) or the split of s (one more). Where a stretch is
    too thin for all its communities to reach the band, fewer residents end up outside it when
    one is small and its neighbours balanced than when all fall short evenly, as the flow alone
    would have it."""
    m = len(win.comms)
    yield from _end_seeds(win, k, angles)
    if k == m:
        popk = plan.popk[win.comms]
        short = np.flatnonzero(popk < win.lo)
        for i in short[np.argsort(popk[short], kind="stable")][:_SMALL_TRIES]:
            yield plan.center[win.comms].copy(), (int(i), False)
    elif k == m + 1 and (options := _options(plan, win, s, k, angles)):
        rest = np.delete(plan.center[win.comms], int(np.searchsorted(win.comms, s)))
        if np.array_equal(options[0][:-2], rest):   # the first split of s: two new centers last
            for i in (k - 2, k - 1):
                yield options[0], (i, False)


_END_MARGIN = 1.05          # the small end holds this much above the tiny threshold


def _end_seeds(win: Window, k: int, angles: np.ndarray):
    """(centers, (0, False)) trials with the small community at one end of the window (both
    ends of its first two bisection directions) and the other k - 1 sharing the rest at the
    target or within the band. In a strip too thin to fill every community, the balanced ones
    must sit side by side; seeds of equal parts spread the shortfall over all of them
    instead."""
    if win.xy is None or k < 2:
        return
    total, problem = float(win.pop.sum()), win.problem
    floor = problem.tiny_pop * _END_MARGIN
    small = min(max(total - (k - 1) * problem.target_pop, floor), win.lo - 1)
    if small < floor or not win.lo <= (total - small) / (k - 1) <= win.hi:
        return
    for angle, turn in itertools.product(angles[:_WINDOW_SEEDS], (0.0, np.pi)):
        centers = seed_centers(win.xy, win.pop, win.structure, k, float(angle + turn),
                               win.blocked, first=small)
        if len(centers) == k:
            yield centers, (0, False)


_PEAK_TRIES = 3             # sites gathering most of a window tried as an aimed community's center


def _peaks(plan: SearchPlan, win: Window, k: int):
    """(centers, (position, True)) trials of k centers with one community aimed at the band,
    centered at one of the free sites that gather most of the window's residents: that site
    replaces the center of the community it reaches most (k = the window's count), joins the
    centers (one more), or replaces it while the smallest other community is dropped (one
    fewer). Where every 15-minute circle of a stretch gathers barely the band's floor, a
    balanced community must be nearly its center's whole circle; the flow, rewarding every
    resident below a floor alike, fills all communities evenly short of the band instead. Aimed,
    that one is filled first and the others only kept above the tiny threshold."""
    m = len(win.comms)
    reach, gather = _gathers(win)
    current = plan.center[win.comms]
    sites = np.flatnonzero(~win.blocked & (gather >= win.lo))
    own = np.searchsorted(win.comms, plan.label[win.units])
    for c in sites[np.lexsort((sites, -gather[sites]))][:_PEAK_TRIES]:
        if k == m + 1:
            if c not in current:
                yield np.r_[current, c], (m, True)
            continue
        held = np.flatnonzero(current == c)
        j = int(held[0]) if len(held) else int(np.argmax(np.bincount(
            own, weights=win.pop * reach[:, c].toarray().ravel(), minlength=m)))
        centers = current.copy()
        centers[j] = c
        if k == m:
            yield centers, (j, True)
        elif k == m - 1 and m > 1:
            others = np.delete(np.arange(m), j)
            drop = int(others[np.argmin(plan.popk[win.comms[others]])])
            yield np.delete(centers, drop), (j - int(drop < j), True)


def _dissolve(plan: SearchPlan, s: int, tiny_first: bool = False) -> bool:
    """Empty a tiny community into its neighbours (they may re-site to reach its units) and
    settle the surroundings; kept only when the plan's band key improves (with `tiny_first`:
    whenever it leaves fewer tiny communities)."""
    before = plan.key()[:4]
    trial = plan.copy()
    around = trial.around(s, 2)
    if not empty_community(trial, s, FINAL_WEIGHT):
        return False
    local_search(trial, FINAL_WEIGHT, _IMPROVE_ROUNDS, comms=around, count_first=True,
                  keep_residents=True)
    if (trial.key()[1] < before[1]) if tiny_first else (trial.key()[:4] < before):
        plan.__dict__.update(trial.__dict__)
        return True
    return False


def _improve_window(plan: SearchPlan, s: int, angles: np.ndarray, budget: list[int],
                    tiny_first: bool = False, rings_tried: tuple[int, ...] = (1, 2),
                    peaks: bool = False) -> bool:
    """Re-solve the windows around s (one ring, then two); True once one improved. With
    `tiny_first` (s is tiny), a window counts as improved when it has fewer tiny communities,
    even if more residents end up outside the band (the rule comes before the balance), and
    every count is tried for the one that loses least. With `peaks`, only windows whose
    communities are all below the band are tried, and only with one of them aimed at it
    (`_peaks`)."""
    over = plan.popk[s] > plan.problem.max_pop
    for rings in rings_tried:
        comms = plan.around(s, rings)
        if peaks and not (plan.popk[comms] < plan.problem.min_pop).all():
            continue        # aimed trials only where every community falls short
        win = Window(plan, comms)
        if len(win.units) > _MAX_WINDOW_UNITS:
            return False
        m = len(win.comms)
        if peaks:
            best = _peak_best(plan, win, budget)
        else:
            best = _window_best(plan, win, s, angles, budget, tiny_first, over)
        logger.debug("window around %d (%.0f residents), %d rings, %d communities, %d units: %s",
                     s, plan.popk[s], rings, m, len(win.units),
                     "no gain" if best is None else f"{win.before[:4]} -> {best[0][:4]}")
        if best is not None:
            win.apply(plan, best[1], best[2])
            # Only moves that keep the band key: the window's gain can't be undone.
            local_search(plan, FINAL_WEIGHT, _IMPROVE_ROUNDS, comms=plan.around(s, rings + 1),
                          count_first=True, keep_residents=True)
            return True
    return False


def _peak_best(plan: SearchPlan, win: Window, budget: list[int]):
    """The best `_peaks` trial of a window whose communities are all below the band (None when
    no trial beats the window)."""
    m, total, tiny_pop = len(win.comms), float(win.pop.sum()), plan.problem.tiny_pop
    # A trial's extra communities are only dissolved into their neighbours here, never merged
    # by re-solving two rings one center short (`refine.shrink`: 8 flows each, outside the
    # budget): those took 80 % of aiming at the band on sprawl (9.3 -> 2.0 s, the same plan).
    # In the improvement's own windows they pay: without them Chengdu's redraw lost 1.6 points.
    best, sub = None, _SubPlan(plan, win, shrinks=0)
    for k in (m, m - 1, m + 1):     # counts whose communities can hold the tiny threshold
        if k >= 1 and (k - 1) * tiny_pop + win.lo <= total:
            best = _best_of(sub, win, _peaks(plan, win, k), k, best, budget)
    return best


def _window_best(plan: SearchPlan, win: Window, s: int, angles: np.ndarray, budget: list[int],
                 tiny_first: bool, over: bool):
    """The best trial of the window around s: every count's center sets, then (residents left
    outside the band) the uneven ones; None when none beats the window."""
    best, sub = None, _SubPlan(plan, win)
    m = len(win.comms)
    counts = [m - 1, m] if tiny_first else _counts(win, m, over)
    for k in counts:
        options = _options(plan, win, s, k, angles)
        if tiny_first and k < m and (cover := _cover_option(
                win, k, plan.center[win.comms],
                plan.problem.tiny_pop)) is not None:
            options.insert(0, cover)
        best = _best_of(sub, win, ((c, None) for c in options), k, best, budget, tiny_first)
        if best is not None and not tiny_first:   # counts nearest first; one that works wins
            break
    if best is None or best[0][0] > 0:   # residents left outside the band: try uneven
        for k in (m, m + 1):
            best = _best_of(sub, win, _uneven(plan, win, s, k, angles), k, best, budget,
                            tiny_first)
    return best


def improve(plan: SearchPlan, angles: np.ndarray, budget: int) -> SearchPlan:
    """
    Repeatedly take the community outside the band with the most residents (tiny ones first,
    dissolved into their neighbours when that helps) and re-solve its window; a community that
    can't be improved is skipped until something near it changes. Stops when none improves or
    once the settled windows have held `budget` units in all (a deterministic stand-in for a
    time limit). Then tiny communities are cleared (`_clear_tiny`) and, if that changed the
    plan, balancing runs again on half the budget.
    """
    failed = _balance(plan, angles, budget, set())
    label, center = plan.label.copy(), plan.center.copy()
    if _clear_tiny(plan, angles, budget):
        # A window that found nothing before and that clearing left alone (no unit or center
        # changed within two rings) is not retried.
        touched = _touched(label, center, plan)
        near = {int(c) for t in touched if plan.size[t] > 0 for c in plan.around(int(t), 2)}
        _balance(plan, angles, budget // 2, failed - near - set(touched.tolist()))
    return plan


def aim_at_band(plan: SearchPlan, budget: int) -> SearchPlan:
    """Re-solve each window whose communities all fall short of the band with one of them aimed
    at it (`_peaks`), while the budget lasts; kept, as every window's result, only when fewer
    residents end up outside the band without a tiny community more. Run after the CP-SAT
    windows (`core._finished`), not inside `improve`: aimed first, a window they would have
    cleared of a tiny community can be left without a split (Chengdu's steeper population,
    seed 4). The aimed trials need no bisection angles."""
    _balance(plan, np.empty(0), budget, set(), peaks=True)
    return plan


def _touched(label: np.ndarray, center: np.ndarray, plan: SearchPlan) -> np.ndarray:
    """Communities of `plan` that lost or gained a unit, or changed center, since it had
    `label` and `center`."""
    moved = label != plan.label
    both = min(len(center), len(plan.center))   # a community added since has moved units
    changed = np.flatnonzero(center[:both] != plan.center[:both])
    touched = np.unique(np.r_[label[moved], plan.label[moved], changed])
    return touched[touched >= 0]


def _balance(plan: SearchPlan, angles: np.ndarray, budget: int, failed: set[int],
             peaks: bool = False) -> set[int]:
    """The main loop of `improve`; returns the communities whose windows found nothing."""
    left = [budget]
    tiny_pop = plan.problem.tiny_pop
    while left[0] > 0:
        todo = plan.outside_band(failed)
        if not todo:
            break
        s = todo[0]
        near = set(plan.around(s, 2).tolist())
        dissolved = not peaks and plan.popk[s] < tiny_pop and _dissolve(plan, s)
        if dissolved or _improve_window(plan, s, angles, left, peaks=peaks):
            failed -= near        # their surroundings changed: worth another try
        else:
            failed.add(s)
    return failed


def _clear_tiny(plan: SearchPlan, angles: np.ndarray, budget: int) -> bool:
    """The last step: a tiny community that balancing left (it is not a proven exception, those
    are planned apart) breaks the `min_pop_exception` rule, so its window is re-solved for fewer
    tiny communities even at a cost in residents outside the band (`worth_clearing`), smallest
    first."""
    left = [budget]
    tried: set[int] = set()
    cleared = False
    tiny_pop = plan.problem.tiny_pop
    while left[0] > 0:
        alive = plan.alive
        small = [int(alive[i]) for i in np.lexsort((alive, plan.popk[alive]))
                 if plan.popk[alive[i]] < tiny_pop and int(alive[i]) not in tried]
        if not small:
            break
        s = small[0]
        tried.add(s)
        trials = [plan.copy() for _ in range(3)]
        done = [_dissolve(trials[0], s, tiny_first=True),
                _improve_window(trials[1], s, angles, left, tiny_first=True, rings_tried=(1,)),
                _improve_window(trials[2], s, angles, left, tiny_first=True, rings_tried=(2,))]
        before, target = plan.key(), plan.problem.target_pop
        kept = [t for t, ok in zip(trials, done)
                if ok and worth_clearing(before, t.key(), target)]
        keys = [tiny_first_order(t.key()) for t in kept]
        if keys:
            best = kept[keys.index(min(keys))]
            logger.debug("tiny community %d cleared: %s -> %s", s, before[:4], best.key()[:4])
            plan.__dict__.update(best.__dict__)
            cleared = True
    return cleared
