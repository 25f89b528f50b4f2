"""Moves beyond single units: dissolve communities down to the wanted count, re-solve the
neighbourhood of a community outside the band, transfer a community to where people are
plenty, polish small instances with center swaps and rotated seeds, and swap the centers of a
finished plan of any size community by community for shorter walks."""

from __future__ import annotations

import numpy as np
from covplan._sparse import lookup
from covplan.solve.partition.flow import attach_strays, settle, split_pieces
from covplan.solve.partition.search import (
    BALANCE_WEIGHT,
    FINAL_WEIGHT,
    SearchPlan,
    band_violation,
    empty_community,
    local_search,
    problem_band_key,
    tiny_first_order,
)
from covplan.solve.partition.seeding import seed_centers

_AROUND_ROUNDS = 5          # local-search rounds around a dissolved community
_REPAIRS = 12               # neighbourhoods re-solved around communities outside the band
POLISH_UNITS = 1_000       # polish instances up to this many units, with at most ...
POLISH_BUDGET = 40         # ... this many settlements, including ...
_POLISH_SEEDS = 8           # ... this many whole-instance bisection seeds
_REASSIGN_ROUNDS = 10       # local-search rounds letting the reassigned plan's pieces grow
TRANSFERS = 8              # attempts to move a community to where people are plenty
_SWAP_SITES = 2             # sites tried as a community's new center in `swap_centers`
_SWAP_ROUNDS = 4            # local-search rounds around a swapped window
REDUCE_TRIES = 4            # `reduce_to`'s `shrink`s around the smallest communities, at most


def shrink(plan: SearchPlan, s: int, tries: int = 4) -> bool:
    """Re-solve the two rings of communities around s by flow with one center less (dropping
    one of the smallest centers, or from rotated bisection seeds); True if it worked."""
    win = Window(plan, plan.around(s, rings=2))
    current = plan.center[win.comms]
    if len(current) < 2:      # a community with no neighbour (an island) has no one to merge into
        return False
    options = [np.delete(current, j) for j in np.lexsort((win.comms, plan.popk[win.comms]))[:tries]]
    options += [] if win.xy is None else [
        seed_centers(win.xy, win.pop, win.structure, len(current) - 1, angle, win.blocked)
        for angle in np.linspace(0, np.pi, tries, endpoint=False)]
    got = [g for g in (win.evaluate(np.asarray(c, dtype="int64")) for c in options)
           if g is not None and len(g[2]) == len(current) - 1]
    if got:
        best = min(got, key=lambda g: g[0])
        win.apply(plan, best[1], best[2])
        local_search(plan, BALANCE_WEIGHT, _AROUND_ROUNDS, comms=win.comms)
    return bool(got)


def _poorness(plan: SearchPlan, alive: np.ndarray) -> np.ndarray:
    """Order key for dissolving: 0 for small pieces (under a quarter of the band's bottom),
    else the mean population of the community and its neighbours (poorest first)."""
    _, a, b = plan.neighbour_pairs()
    n = len(plan.size)
    a, b = np.divmod(np.unique(a * n + b), n)
    mean = (np.bincount(a, weights=plan.popk[b], minlength=n) + plan.popk) / (np.bincount(a, minlength=n) + 1)
    return np.where(plan.popk[alive] < plan.problem.min_pop / 4, 0.0, mean[alive])


def reduce_to(plan: SearchPlan, k: int, tries: int = REDUCE_TRIES) -> None:
    """
    Remove communities until k remain: dissolve one into its neighbours (order: `_poorness`,
    then smallest), then a short local search around it (one that could not be dissolved is
    retried once something near it changed); failing that, `shrink` around one of the smallest.
    """
    failed = np.zeros(len(plan.size), dtype=bool)
    while len(plan.alive) > k:
        alive = plan.alive
        feasible = plan.cnt[alive] == plan.size[alive][:, None]
        # How many communities each candidate could serve: "another could" is a count above
        # the community's own, without copying the table per community tried.
        servable = feasible.sum(axis=0)
        done = False
        # Communities on locked sites go last: those sites must stay open.
        locked = (np.zeros(len(alive), bool) if plan.problem.locked is None
                  else np.asarray(plan.problem.locked, bool)[plan.center[alive]])
        for i in np.lexsort((alive, plan.popk[alive], _poorness(plan, alive), locked)):
            s = int(alive[i])
            # Quick necessary test: every member reaches a candidate that could serve another.
            others = servable - feasible[i] > 0
            if failed[s] or not (plan.structure[plan.label == s] @ others > 0).all():
                failed[s] = True
                continue
            around = plan.around(s, rings=2)
            if empty_community(plan, s, BALANCE_WEIGHT):
                local_search(plan, BALANCE_WEIGHT, _AROUND_ROUNDS, comms=around)
                failed[around] = False
                done = True
                break
            failed[s] = True
        if not done:
            done = any(shrink(plan, int(s)) for s in alive[np.lexsort((alive, plan.popk[alive]))][:tries])
            failed[:] = False
        if not done:
            return


class Window:
    """The units of some communities, as a sub-problem re-solved with everything else fixed."""

    def __init__(self, plan: SearchPlan, comms: np.ndarray):
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
        self.problem, self.lo, self.hi = problem, problem.min_pop, problem.max_pop
        self.seen = plan.seen
        self.before = (*problem_band_key(plan.popk[comms], problem), float(plan.cost[comms, plan.center[comms]].sum()))

    def evaluate(self, centers: np.ndarray):
        """Settle the window on these centers: (key like `SearchPlan.key`, label, centers), or None if
        some unit is left unserved, a piece can't be attached or a community ends up empty. Every
        community it returns is connected and every unit served by a center it reaches."""
        centers, label = settle(self.pop, self.lo, self.hi, self.per_person, self.structure,
                                 self.weighted, centers, self.blocked)
        if (label < 0).any():
            return None
        label = attach_strays(label, self.pop, self.weighted, self.adjacency, centers)
        if label is None or (np.bincount(label, minlength=len(centers)) == 0).any():
            return None
        if self.seen is not None:
            self.seen.add_labels(self.units, label, centers)
        sizes = np.bincount(label, weights=self.pop, minlength=len(centers))
        cost = float(lookup(self.weighted, np.arange(len(self.units)), centers[label])[0].sum())
        return (*problem_band_key(sizes, self.problem), cost), label, centers

    def alternatives(self, label: np.ndarray, centers: np.ndarray, j: int, n_alt: int,
                     rank: np.ndarray) -> np.ndarray:
        """Free candidates that reach the members of j no other center reaches; best `rank` first."""
        others = self.structure[:, np.delete(centers, j)].tocsr()
        critical = (label == j) & (np.diff(others.indptr) == 0)
        hits = np.asarray(self.structure[critical].sum(axis=0)).ravel()
        alt = np.flatnonzero((hits >= critical.sum()) & ~self.blocked)
        alt = alt[~np.isin(alt, centers)]
        return alt[np.lexsort((alt, -rank[alt]))][:n_alt]

    def moves(self, label: np.ndarray, centers: np.ndarray, j: int, n_alt: int,
              rank: np.ndarray):
        """`centers` with j's moved to each of its `alternatives`, one center set at a time."""
        for site in self.alternatives(label, centers, j, n_alt, rank):
            trial = centers.copy()
            trial[j] = site
            yield trial

    def savings(self, label: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """Per candidate: cost saved if every unit it reaches could switch to it."""
        now, _ = lookup(self.weighted, np.arange(len(label)), centers[label])
        rows = np.repeat(np.arange(len(label)), np.diff(self.weighted.indptr))
        gain = np.clip(now[rows] - self.weighted.data, 0, None)
        return np.bincount(self.weighted.indices, weights=gain, minlength=self.weighted.shape[1])

    def improve(self, plan: SearchPlan, angles: np.ndarray):
        """Best settlement from the current centers and rotated bisection seeds (or None)."""
        tries = [plan.center[self.comms].copy()]
        if self.xy is not None:
            tries += [seed_centers(self.xy, self.pop, self.structure, len(self.comms), a, self.blocked)
                      for a in angles]
        got = [g for g in (self.evaluate(c) for c in tries if len(c) == len(self.comms)) if g is not None]
        return min(got, key=lambda g: g[0]) if got else None

    def apply(self, plan: SearchPlan, label: np.ndarray, centers: np.ndarray) -> None:
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


def repair(plan: SearchPlan, angles: np.ndarray) -> None:
    """Re-solve the window (one ring of neighbours, then two) around each community outside the
    band, worst first, keeping it when fewer communities or people end up outside; at most
    `_REPAIRS` windows."""
    failed: set[int] = set()
    for _ in range(_REPAIRS):
        alive = plan.alive
        viol = band_violation(plan.popk[alive], plan.problem.min_pop, plan.problem.max_pop)
        bad = [int(c) for c in alive[np.lexsort((alive, -viol))][:int((viol > 0).sum())] if int(c) not in failed]
        if not bad:
            return
        s = bad[0]
        for rings in (1, 2):
            win = Window(plan, plan.around(s, rings))
            got = win.improve(plan, angles)
            if got is not None and got[0][:4] < win.before[:4] and got[0][1] <= win.before[1]:
                win.apply(plan, got[1], got[2])
                local_search(plan, BALANCE_WEIGHT, _AROUND_ROUNDS, comms=plan.around(s, rings + 1))
                failed.clear()
                break
        else:
            failed.add(s)


def transfer(plan: SearchPlan, angles: np.ndarray, tries: int) -> SearchPlan:
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
                     if empty_community(trial, int(r), BALANCE_WEIGHT)), None)
        if gone is None:
            failed.add(s)
            continue
        local_search(trial, BALANCE_WEIGHT, _AROUND_ROUNDS, comms=plan.around(gone, 2))
        _, a, b = trial.neighbour_pairs()
        n = len(trial.size)
        a, b = np.divmod(np.unique(a * n + b), n)     # bordering communities, once each
        surplus = (np.bincount(a, weights=trial.popk[b] - lo, minlength=n) + trial.popk - 2 * lo)
        alive = trial.alive
        t = int(alive[np.lexsort((alive, -surplus[alive]))[0]])
        win = Window(trial, trial.around(t, 1))
        got = [] if win.xy is None else [
            win.evaluate(seed_centers(win.xy, win.pop, win.structure, len(win.comms) + 1, angle, win.blocked))
            for angle in angles]
        got = [g for g in got if g is not None and len(g[2]) == len(win.comms) + 1]
        if got:
            best = min(got, key=lambda g: g[0])
            win.apply(trial, best[1], best[2])
            local_search(trial, BALANCE_WEIGHT, _AROUND_ROUNDS, comms=trial.around(t, 2))
            if trial.key()[:4] < plan.key()[:4]:
                plan = trial
                failed.clear()
                continue
        failed.add(s)
    return plan


def polish(plan: SearchPlan, budget: int, n_alt: int = 8) -> SearchPlan:
    """
    Cut person-minutes on a small instance by whole-instance center swaps (first improvement)
    and, once they stall, rotated bisection seeds. Each is settled by flow with its stray
    pieces attached; if that is cheaper, it is finished by a short local search on a copy of
    the plan, kept when better by `SearchPlan.key`. At most `budget` settlements.
    """
    plan.resite()
    local_search(plan, FINAL_WEIGHT, max_rounds=20, count_first=True)
    best_key, evals = plan.key(), 0
    seeds = list(np.linspace(0, np.pi, _POLISH_SEEDS, endpoint=False) + 0.1) if plan.problem.xy is not None else []

    def judge(win: Window, got) -> bool:
        nonlocal plan, best_key
        if got is None or got[0][-1] >= best_key[-1]:
            return False
        twin = plan.copy()
        win.apply(twin, got[1], got[2])
        local_search(twin, FINAL_WEIGHT, max_rounds=20, count_first=True)
        if twin.key() < best_key:
            plan, best_key = twin, twin.key()
            return True
        return False

    def trials(win: Window):
        label, centers = np.searchsorted(win.comms, plan.label[win.units]), plan.center[win.comms]
        saving = win.savings(label, centers)
        for j in range(len(centers)):
            yield from win.moves(label, centers, j, n_alt, saving)
        while seeds:
            yield seed_centers(win.xy, win.pop, win.structure, len(win.comms), seeds.pop(0), win.blocked)

    improved = True
    while improved and evals < budget:
        improved = False
        win = Window(plan, plan.alive)
        for trial in trials(win):
            evals += 1
            improved = judge(win, win.evaluate(trial))
            if improved or evals >= budget:
                break
    return plan


def swap_centers(plan: SearchPlan, budget: int) -> SearchPlan:
    """
    Shorter walks for a finished plan: for each community, its window (it and its neighbours)
    is settled by flow with its center moved to one of the free sites that would save most
    person-minutes (`Window.moves`, `_SWAP_SITES` of them), and the first that lowers
    the window's cost is kept, provided no rule is worse there: no more residents outside the
    band, no more tiny communities, not worse in the rules' order. Communities near a kept
    swap are queued again. Stops when the queue is empty or the settled windows have held
    `budget` units (no clock).

    Why: the phases before it move centers only where that helps the balance, or re-site a
    community to the cheapest site that reaches all its members as they are; a center moved
    to where its residents live, with the borders settled again around it, is the classic
    interchange step of p-median heuristics (Teitz and Bart), which no library runs under
    reach, band and contiguity rules. On São Paulo's balanced plan it cuts the mean walk from
    5.25 to 5.12 minutes in 225 settlements (0.7 s); four sites a community instead of two
    gave 5.12 too, in twice the time.
    """
    queue = [int(s) for s in plan.alive]
    queued = set(queue)
    while queue and budget > 0:
        s = queue.pop(0)
        queued.discard(s)
        if plan.size[s] == 0:
            continue
        win = Window(plan, plan.around(s, 1))
        label, centers = np.searchsorted(win.comms, plan.label[win.units]), plan.center[win.comms]
        j = int(np.searchsorted(win.comms, s))
        for trial in win.moves(label, centers, j, _SWAP_SITES, win.savings(label, centers)):
            budget -= len(win.units)
            got = win.evaluate(trial)
            if got is None or not _no_rule_worse(got[0], win.before) or got[0][4] >= win.before[4]:
                continue
            win.apply(plan, got[1], got[2])
            around = plan.around(s, 2)
            local_search(plan, FINAL_WEIGHT, _SWAP_ROUNDS, comms=around, count_first=True,
                         keep_residents=True)
            for k in around.tolist():
                if k not in queued and plan.size[k] > 0:
                    queue.append(k)
                    queued.add(k)
            break
    return plan


def _no_rule_worse(key, before) -> bool:
    """Neither more residents outside the band nor more tiny communities, nor worse in the
    rules' order (`band_key`-first keys)."""
    return (key[0] <= before[0] and key[1] <= before[1]
            and tiny_first_order(key[:4]) <= tiny_first_order(before[:4]))


def reassign(plan: SearchPlan) -> SearchPlan:
    """
    Re-solve the whole assignment by flow from the final centers (soft band), give stray pieces
    to a bordering community and finish with the final local search; the better plan wins.
    Local moves shift one boundary unit at a time; the flow shifts whole chains of residents
    between communities at once, which is where the last person-minutes hide.
    """
    problem = plan.problem
    centers, label = settle(plan.pop, problem.min_pop, problem.max_pop, plan.per_person,
                             plan.structure, plan.weighted, plan.center[plan.alive])
    # Pieces the flow cut off become communities of their own, dissolved again by `reduce_to`.
    label = attach_strays(label, plan.pop, plan.weighted, problem.adjacency, centers, strict=False)
    twin = SearchPlan(problem, plan.per_person, plan.weighted, plan.structure,
                 split_pieces(label, problem.adjacency))
    twin.seen = plan.seen
    local_search(twin, BALANCE_WEIGHT, _REASSIGN_ROUNDS)
    reduce_to(twin, len(plan.alive))
    local_search(twin, FINAL_WEIGHT, count_first=True)
    # The rules' order: tiny communities, residents outside the band, ..., then walking time.
    if len(twin.alive) == len(plan.alive) and twin.key() < plan.key():
        return twin
    return plan
