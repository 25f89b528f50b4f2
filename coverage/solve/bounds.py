"""
What no plan can beat: ceilings on coverage and on balance, proven from the reach matrix alone.

A community's residents all reach its center within the limit, so a community is never larger
than ``gather[c]``, the residents within the limit of its center c (in its district). A unit
every reachable site of which gathers fewer than the band's floor can therefore only be in an
undersized community, whatever the plan: its residents are *forced undersized*. A unit that
reaches no site at all can be covered by no plan. Both figures are exact consequences of the
walking rule, so notes and reports may say "cannot" about them.

Communities are also contiguous, so with the unit adjacency the bound is tighter: a community
with center c holding unit u lies inside the connected piece of u among the units that reach c.
The pieces of all (unit, site) pairs come from one connected-components pass over a graph whose
nodes are the stored pairs and whose edges join (u, c) and (v, c) for adjacent u, v: its size
follows the stored pairs times the adjacency degree, nothing quadratic.

Coverage has a price in count: every resident a plan covers sits in a community whose center
they reach, so a plan that covers everyone has at least as many communities as the fewest sites
reaching every resident (a set cover, `min_cover_count`). Where walks are short against the
density — slow walking, a thin strip — that count can exceed what the residents fill at the
band's floor; with every community that is not an exception at least the tiny-community floor,
some residents then stay outside the band whatever the plan (`count_shortfall`).

Packing can rule out a fully balanced district even where counts leave room: circles that
cover everyone may overlap too little for every community to reach the floor. Where covering
everyone takes as many centers as the residents fill at the band's floor, a linear program checks
it (`covplan.solve.packing`); when it has no solution, one regular community at least stays
outside the band (`packing_shortfall`). After planning, a second program counts it: around the
plan's communities outside the band, how many residents no plan can put in a balanced community
(`around_plan`).

Units that share no site lie in as many communities, each drawn from the residents around its
unit's sites. Where those surroundings are thin — a sparse fringe, a target large against the
circles — they cannot all reach the band's floor, even where the city as a whole has room: a
small program over those units alone counts how many must stay outside the band, on whole
districts (`separated_shortfall`).

Contiguity itself can be out of reach: units whose only reachable site is the same c must all
be in c's community in any plan that covers them; when no chain of units reaching c joins
them, that community cannot be contiguous (``split_sites``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

if TYPE_CHECKING:
    from covplan.reach.matrix import ReachMatrix

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, eq=False)
class FeasibilityBound:
    """Per-unit proofs and the ceilings they give. Arrays are aligned with the reach units."""

    gather: np.ndarray            # per candidate: residents (of its district) within the limit
    best_gather: np.ndarray       # per unit: the most a community holding it can gather (0: none)
    contiguous: bool              # whether best_gather counts only the unit's connected piece
    reachable: np.ndarray         # per unit: reaches at least one site of its district
    forced_undersized: np.ndarray  # per unit: reaches sites, but none gathers min_pop
    island: np.ndarray            # per unit: on a network component apart from the main one
    pop: np.ndarray               # per unit residents
    min_pop: float
    sole_site: np.ndarray = None  # per unit: its only reachable site (-1: none or several)
    split_sites: np.ndarray = None  # sites whose sole-site units no chain reaching them joins
    district_of: np.ndarray = None  # per unit: its district (the count shortfall is per district)
    count_short: dict = None      # district -> residents outside the band by the center count
    packing_short: dict = None    # district -> residents outside the band by packing
    separated_short: dict = None  # district -> ... by units that share no site (`separated_shortfall`)
    around_regions: tuple = ()    # per region around a plan's misses (`around_plan`): (district,
                                  # its community labels outside the band, residents proven)
    piece: sp.csr_matrix = None   # units x candidates: residents of the unit's piece reaching it

    @property
    def around_short(self) -> dict | None:
        """District -> residents outside the band proven around a plan's misses (regions do not
        overlap: their proofs add up)."""
        short: dict[int, int] = {}
        for district, _, proven in self.around_regions:
            short[district] = short.get(district, 0) + proven
        return short or None

    @property
    def population_total(self) -> int:
        return self.figures()["population_total"]

    @property
    def forced_undersized_population(self) -> int:
        return self.figures()["forced_undersized_population"]

    @property
    def unreachable_population(self) -> int:
        return self.figures()["unreachable_population"]

    @property
    def coverage_ceiling(self) -> float:
        """Share of residents some plan could cover: those reaching at least one site."""
        return self.figures()["coverage_ceiling"]

    @property
    def within_tolerance_pop_share_ceiling(self) -> float:
        """Share of residents some plan could put in a community within the band: everyone but
        the forced-undersized and those no site reaches (who are in no community at all)."""
        return self.figures()["within_tolerance_pop_share_ceiling"]

    def figures(self, mask: np.ndarray | None = None) -> dict:
        """The ceilings of the units in `mask` (all units without one), for a report."""
        m = np.ones(len(self.pop), dtype=bool) if mask is None else np.asarray(mask, bool)
        pop = self.pop[m]
        total = int(pop.sum())
        forced = int(pop[self.forced_undersized[m]].sum())
        unreachable = int(pop[~self.reachable[m]].sum())
        by_count = self._district_short(m, self.count_short)
        by_packing = self._district_short(m, _larger(self.packing_short, self.around_short))
        separated = self._district_short(m, self.separated_short)
        either = self._district_short(m, _larger(self.count_short, self.packing_short,
                                                 self.around_short, self.separated_short))
        return {
            "population_total": total,
            "coverage_ceiling": 1.0 - unreachable / total if total else 1.0,
            "within_tolerance_pop_share_ceiling": (1.0 - (forced + unreachable) / total
                                                   if total else 1.0),
            "within_tolerance_pop_share_ceiling_rules": (
                1.0 - (forced + unreachable + either) / total if total else 1.0),
            "forced_undersized_population": forced,
            "count_short_population": by_count,
            "packing_short_population": by_packing,
            "separated_short_population": separated,
            "unreachable_population": unreachable,
            "island_population": int(pop[self.island[m]].sum()),
        }

    def _district_short(self, mask: np.ndarray, short_of: dict | None) -> int:
        """A per-district shortfall summed over the districts lying wholly inside `mask`."""
        if not short_of:
            return 0
        inside = np.unique(self.district_of[mask])
        return int(sum(short for d, short in short_of.items()
                       if d in inside and mask[self.district_of == d].all()))


def _larger(*shortfalls: dict | None) -> dict:
    """Per district the largest of the shortfalls (all bound the same residents: not a sum)."""
    shortfalls = [s or {} for s in shortfalls]
    return {d: max(s.get(d, 0) for s in shortfalls) for d in set().union(*shortfalls)}


def feasibility_bound(reach: ReachMatrix, *, min_pop: float,
                      district_of: np.ndarray | None = None,
                      candidate_district: np.ndarray | None = None,
                      component: np.ndarray | None = None,
                      adjacency: sp.spmatrix | None = None,
                      max_pop: float | None = None,
                      tiny_pop: float | None = None) -> FeasibilityBound:
    """
    Ceilings on coverage and balance from the walking rule alone.

    Parameters
    ----------
    reach
        Units x candidates minutes (stored = within the limit).
    min_pop
        The band's floor: a community below it is undersized.
    district_of, candidate_district
        District index per unit and per candidate: a community keeps to one district, so only
        pairs inside one district count (None: one district).
    component
        Network component per node (0 = the main network), to flag units cut off from it.
    adjacency
        Units x units, symmetric: with it, a community is bounded by the connected piece of
        its units that reach its center (the contiguity rule); without it, by all of them.
    max_pop, tiny_pop
        The band's ceiling and the smallest community that need not be an exception: with
        both, the residents that the count of centers covering everyone keeps outside the band
        (`count_shortfall`, per district) come off the ceiling of plans keeping that rule too
        (``within_tolerance_pop_share_ceiling_rules``; a plan with a tiny regular community
        can pass it, as a plan breaking the walking rule can pass the other ceiling).
    """
    pop = reach.pop.astype("float64")
    n_units, n_cand = reach.minutes.shape
    rows, cols = _district_pairs(reach, district_of, candidate_district)
    gather = np.bincount(cols, weights=pop[rows], minlength=n_cand)
    pair_gather = gather[cols] if adjacency is None else piece_gather(rows, cols, pop, adjacency, n_cand)
    # Per unit the largest gather of a site it reaches: a max over each row's entries.
    best = sp.csr_matrix((pair_gather + 1.0, (rows, cols)), shape=(n_units, n_cand))
    best_gather = np.asarray(best.max(axis=1).todense()).ravel() - 1.0
    reachable = np.bincount(rows, minlength=n_units) > 0
    best_gather = np.where(reachable, best_gather, 0.0)
    forced = reachable & (best_gather < min_pop - 1e-9)
    island = np.zeros(n_units, dtype=bool)
    if component is not None:
        node = reach.units["node"].to_numpy()
        on = node >= 0
        island[on] = np.asarray(component)[node[on]] != 0
    sole = np.full(n_units, -1, dtype="int64")
    once = np.bincount(rows, minlength=n_units) == 1
    sole[rows[once[rows]]] = cols[once[rows]]
    split = (np.zeros(0, dtype="int64") if adjacency is None
             else _split_sites(sole, rows, cols, adjacency))
    districts = (np.zeros(n_units, dtype="int64") if district_of is None
                 else np.asarray(district_of, dtype="int64"))
    bound = FeasibilityBound(gather=gather, best_gather=best_gather, contiguous=adjacency is not None,
                             reachable=reachable, forced_undersized=forced, island=island,
                             pop=reach.pop.astype("int64"), min_pop=float(min_pop),
                             sole_site=sole, split_sites=split, district_of=districts,
                             piece=sp.csr_matrix((pair_gather, (rows, cols)),
                                                 shape=(n_units, n_cand)))
    if max_pop is None or tiny_pop is None:
        return bound
    return replace(bound, **rule_shortfalls(reach, bound, district_of=district_of,
                                            candidate_district=candidate_district,
                                            max_pop=max_pop, tiny_pop=tiny_pop,
                                            adjacency=adjacency))


def _district_pairs(reach: ReachMatrix, district_of: np.ndarray | None,
                    candidate_district: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(unit, site) pairs within the limit, both in one district (all pairs without districts)."""
    minutes = reach.minutes.tocsr()
    rows = np.repeat(np.arange(minutes.shape[0]), np.diff(minutes.indptr))
    cols = minutes.indices
    if district_of is None or candidate_district is None:
        return rows, cols
    same = np.asarray(district_of)[rows] == np.asarray(candidate_district)[cols]
    return rows[same], cols[same]


def rule_shortfalls(reach: ReachMatrix, bound: FeasibilityBound, *,
                    district_of: np.ndarray | None, candidate_district: np.ndarray | None,
                    max_pop: float, tiny_pop: float,
                    adjacency: sp.spmatrix | None = None) -> dict[str, dict[int, int]]:
    """
    The bound's ``count_short`` (`count_shortfall`), ``packing_short`` (`packing_shortfall`)
    and ``separated_short`` (`separated_shortfall`) on the pairs of `reach` inside one district
    (as `feasibility_bound`): what the count of centers, packing and units that share no site
    rule out for plans keeping the tiny-community rule. Only reports read
    them, so a plan may prove them beside its planning
    (`covplan.plan.pipeline.plan_communities`).
    """
    rows, cols = _district_pairs(reach, district_of, candidate_district)
    structure = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=reach.minutes.shape)
    pop = reach.pop.astype("float64")
    band = {"min_pop": bound.min_pop, "max_pop": max_pop, "tiny_pop": tiny_pop}
    short = count_shortfall(structure, pop, bound.forced_undersized, bound.district_of, **band)
    packing = packing_shortfall(structure, pop, bound.forced_undersized, bound.district_of,
                                skip=set(short), **band)
    separated = separated_shortfall(structure, pop, bound.forced_undersized, bound.district_of,
                                    min_pop=bound.min_pop, tiny_pop=tiny_pop, adjacency=adjacency)
    return {"count_short": short, "packing_short": packing, "separated_short": separated}


def count_shortfall(structure: sp.csr_matrix, pop: np.ndarray, forced: np.ndarray,
                    district_of: np.ndarray, *, min_pop: float, max_pop: float,
                    tiny_pop: float) -> dict[int, int]:
    """
    Per district, residents that no plan covering everyone and keeping the tiny-community rule
    can put in a community within the band, from the count of centers alone (0 where the count
    does not bind; districts with none left out).

    Every covered resident is in a community whose center they reach, so the regular
    (non-exception) communities of a district number at least m, the fewest of its sites
    reaching all its residents who are not forced undersized (`min_cover_count`). Exceptions
    hold only forced residents, so those m or more communities hold at most T + F residents
    (T able, F forced), each at least `tiny_pop`, each balanced one at least `min_pop` and at most
    `max_pop`: with b of them balanced, min_pop b + tiny_pop (m - b) <= T + F, and the balanced
    residents are at most min(max_pop b, T + F - tiny_pop (m - b), T). A greedy cover (an upper
    bound on m) that leaves every community room to balance skips the exact count; otherwise
    the exact count (or HiGHS's proven floor on it, `_exact_cover`) decides, also where the LP
    floor leaves room: on linear seed 4 the LP floor of its district D1 is 8 and the exact count
    9, and 66,403 residents fill 8 communities at the floor but not 9 with two left at 5,000.
    """
    from covplan.solve.partition.seeding import set_cover

    structure = sp.csr_matrix(structure)
    out: dict[int, int] = {}
    for d, able, total, extra in _able_by_district(structure, pop, forced, district_of):
        matrix = _cover_matrix(structure[able])
        figures = (total, extra, min_pop, max_pop, tiny_pop)
        greedy = len(set_cover(matrix, pop[able]))
        if _balanced_most(greedy, *figures) >= total:
            continue      # even the greedy count leaves room: the exact one can only be lower
        best = _balanced_most(_exact_cover(matrix, _lp_cover_floor(matrix), greedy), *figures)
        if best < total:
            out[d] = int(np.ceil(total - best))
    return out


def _able_by_district(structure: sp.csr_matrix, pop: np.ndarray, forced: np.ndarray,
                      district_of: np.ndarray):
    """Per district with residents able to be balanced: (district, mask of its able units, their
    residents, the district's reached forced residents)."""
    reached = np.diff(structure.indptr) > 0
    for d in np.unique(district_of):
        here = district_of == d
        able = here & reached & ~forced & (pop > 0)
        if able.any():
            yield int(d), able, float(pop[able].sum()), float(pop[here & reached & forced].sum())


_PACKING_COUNTS = 2         # counts the residents alone allow beyond the fewest, up to which the
                            # count of centers is asked (about 70,000 residents at the default
                            # band; a city planned whole skips the cover LP)


def tight_count(structure: sp.spmatrix, total: float, *, min_pop: float,
                max_pop: float, floor: int | None = None) -> int | None:
    """The most communities `total` residents fill at the band's floor when covering everyone
    (`structure`: units x sites) takes that many centers by the set cover's LP floor — a tight
    instance, where packing may rule out a fully balanced plan; None otherwise, or when the
    residents allow more than `_PACKING_COUNTS` counts beyond the fewest (not asked). `floor`:
    `cover_floor(structure)` where the caller has it already."""
    fewest, most = int(np.ceil(total / max_pop - 1e-9)), int(np.floor(total / min_pop + 1e-9))
    if not 0 <= most - fewest <= _PACKING_COUNTS:
        return None       # no count (the count shortfall's case), or many: not asked
    return most if (cover_floor(structure) if floor is None else floor) == most else None


def packing_shortfall(structure: sp.csr_matrix, pop: np.ndarray, forced: np.ndarray,
                      district_of: np.ndarray, *, min_pop: float, max_pop: float,
                      tiny_pop: float, skip: set[int] = frozenset()) -> dict[int, int]:
    """
    Per district, residents that no plan keeping the tiny-community rule can put in balanced
    communities because its communities cannot all be in band (`all_in_band_impossible`): the
    community left outside holds at least `tiny_pop` residents, of whom at most the district's
    forced residents were already off the ceiling. Tried only where the count of centers (the
    set cover's LP floor) equals the most communities the residents fill at the band's floor:
    every community must then hold about the floor, and circles that cover everyone are tight.
    Elsewhere the program rarely binds and would cost up to tens of seconds a district (a city
    of many small districts would pay it in each). Not in the districts in `skip` (those the
    count of centers already bounds).
    """
    from covplan.solve.packing import all_in_band_impossible

    structure = sp.csr_matrix(structure)
    out: dict[int, int] = {}
    for d, able, total, extra in _able_by_district(structure, pop, forced, district_of):
        if d in skip:
            continue
        if tight_count(structure[able], total, min_pop=min_pop, max_pop=max_pop) is None:
            continue
        if all_in_band_impossible(structure[able], pop[able], min_pop=min_pop, max_pop=max_pop):
            out[d] = int(max(np.ceil(tiny_pop - extra - 1e-9), 1))
    return out


def separated_shortfall(structure: sp.csr_matrix, pop: np.ndarray, forced: np.ndarray,
                        district_of: np.ndarray, *, min_pop: float, tiny_pop: float,
                        adjacency: sp.spmatrix | None = None) -> dict[int, int]:
    """
    Per district, residents that no plan keeping the tiny-community rule can put in balanced
    communities, from units that share no site (`covplan.solve.packing.separated_outside_band`):
    where those units' surroundings hold too few residents for all their communities to reach
    the band's floor. With `adjacency` (units x units), a community is held to its unit's
    connected piece of the units reaching its site. Districts without a proof left out.
    """
    from covplan.solve.packing import separated_outside_band

    structure = sp.csr_matrix(structure)
    adjacency = None if adjacency is None else sp.csr_matrix(adjacency)
    out: dict[int, int] = {}
    for d, *_ in _able_by_district(structure, pop, forced, district_of):
        here = np.flatnonzero(district_of == d)
        short = separated_outside_band(
            structure[here], pop[here], forced[here], min_pop=min_pop, tiny_pop=tiny_pop,
            adjacency=None if adjacency is None else adjacency[here][:, here])
        if short:
            out[d] = short
    return out


def communities_touching(labels: np.ndarray, adjacency: sp.spmatrix,
                         n_comms: int) -> sp.csr_matrix:
    """Communities x communities, stored (the count of unit edges) where two communities' units
    border each other, and on the diagonal; `labels` per unit (-1: in none)."""
    labels = np.asarray(labels)
    served = np.flatnonzero(labels >= 0)
    member = sp.csr_matrix((np.ones(len(served)), (served, labels[served])),
                           shape=(len(labels), n_comms))
    return (member.T @ sp.csr_matrix(adjacency, dtype="float64") @ member).tocsr()


AROUND_RINGS = 1            # rings of neighbouring communities around a plan's misses
AROUND_WORK = 300_000       # the programs of one plan, in (unit, site) pairs times pairs per unit
                            # (their interior-point time follows it, about 120,000 a second):
                            # regions where the plan misses most first. Chengdu's region of 690
                            # units and 13,913 pairs (280,000) takes 2 s; linear's of 467 units
                            # and 19,371 pairs (800,000) 9 s, islands' of 893 and 37,615 (1.6 M)
                            # 14 s: not tried


def around_plan(bound: FeasibilityBound, labels: np.ndarray, outside: np.ndarray,
                adjacency: sp.spmatrix, *, min_pop: float, max_pop: float,
                tiny_pop: float) -> FeasibilityBound:
    """
    The bound with a proof where a plan missed: the plan's regular communities outside the band
    (`outside`, per community label of `labels`) and their neighbours (`AROUND_RINGS` rings) form
    regions, and per region and district a linear program (`fewest_outside_band`) proves how
    many of its residents no plan keeping the rules can put in a balanced community. Regions do
    not overlap, so their proofs add up per district (``around_short``); ``around_regions``
    keeps each region's district, communities outside the band and proof (also for their
    notes). Where the plan has no such community, the bound is returned as it is. The regions
    come from the plan, the proof does not: it holds for every plan.
    """
    from covplan.solve.packing import fewest_outside_band

    labels = np.asarray(labels)
    outside = np.asarray(outside, bool)
    if not outside.any() or bound.piece is None:
        return bound
    served = np.flatnonzero(labels >= 0)
    n_comms = len(outside)
    district = np.zeros(n_comms, dtype="int64")
    district[labels[served]] = bound.district_of[served]
    touch = communities_touching(labels, adjacency, n_comms).tocoo()
    keep = district[touch.row] == district[touch.col]
    touch = sp.csr_matrix((np.ones(int(keep.sum())), (touch.row[keep], touch.col[keep])),
                          shape=(n_comms, n_comms))
    region = outside.copy()
    for _ in range(AROUND_RINGS):
        region |= (touch @ region.astype("float64")) > 0
    _, component = connected_components(touch[region][:, region], directed=False)
    piece = bound.piece.tocsr()
    pairs_of = np.diff(piece.indptr)
    # Per site the residents it reaches, and below those inside a region: the rest may fill it.
    reached_by = np.bincount(piece.indices, minlength=piece.shape[1],
                             weights=bound.pop[np.repeat(np.arange(piece.shape[0]), pairs_of)])
    # Regions where the plan leaves most residents outside the band first, within the budget.
    residents = np.bincount(labels[served], weights=bound.pop[served], minlength=n_comms)
    missed = np.bincount(component, weights=(residents * outside)[region])
    proven: list[tuple[int, np.ndarray, int]] = []
    budget = AROUND_WORK
    for part in np.argsort(-missed, kind="stable"):
        comms = np.flatnonzero(region)[component == part]
        rows = np.flatnonzero(np.isin(labels, comms))
        rows = rows[pairs_of[rows] > 0]
        if not len(rows):
            continue
        sub = piece[rows]
        work = sub.nnz ** 2 / len(rows)
        if work > budget:
            logger.debug("region of %d units, %d pairs around the plan's misses: not tried",
                         len(rows), sub.nnz)
            continue
        budget -= work
        sites = np.unique(sub.indices)
        inside = np.bincount(sub.indices, minlength=piece.shape[1],
                             weights=bound.pop[np.repeat(rows, np.diff(sub.indptr))])
        found = fewest_outside_band(sub[:, sites], bound.pop[rows], bound.forced_undersized[rows],
                                    reached_by[sites] - inside[sites], min_pop=min_pop,
                                    max_pop=max_pop, tiny_pop=tiny_pop,
                                    # A region holds a plan (the rule broken at most by its
                                    # tiny communities) and the rest of the city may fill its
                                    # floors: every such program measured had a solution.
                                    simplex_first=True)
        if found:
            proven.append((int(district[comms[0]]), comms[outside[comms]], found))
    if proven:
        logger.info("Around the plan's %d communities outside the band: %s residents no plan "
                    "can balance (linear programs)", int(outside.sum()),
                    f"{sum(found for *_, found in proven):,}")
    return replace(bound, around_regions=tuple(proven))


def _balanced_most(count: int, total: float, extra: float, min_pop: float, max_pop: float,
                   tiny_pop: float) -> float:
    """The most residents in band with at least `count` regular communities holding `total`
    able and up to `extra` forced residents (see `count_shortfall`). Counts beyond the most
    that the residents fill at the band's floor only add communities outside it."""
    best = 0.0
    for m in range(max(count, 1), max(count, int((total + extra) // min_pop)) + 2):
        for b in range(m + 1):
            if min_pop * b + tiny_pop * (m - b) > total + extra:
                break
            best = max(best, min(max_pop * b, total + extra - tiny_pop * (m - b), total))
    return best


def _split_sites(sole: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                 adjacency: sp.spmatrix) -> np.ndarray:
    """Sites c whose sole-site units lie in different connected pieces of the units reaching c:
    a plan covering them all puts them in c's community, which then cannot be contiguous."""
    sites, counts = np.unique(sole[sole >= 0], return_counts=True)
    adjacency = sp.csr_matrix(adjacency)
    order = np.argsort(cols, kind="stable")          # the pairs by site, once
    start = np.searchsorted(cols[order], sites[counts > 1])
    stop = np.searchsorted(cols[order], sites[counts > 1], side="right")
    split = []
    for c, a, b in zip(sites[counts > 1], start, stop):
        reaching = np.unique(rows[order[a:b]])
        _, piece = connected_components(adjacency[reaching][:, reaching], directed=False)
        mine = np.isin(reaching, np.flatnonzero(sole == c))
        if len(np.unique(piece[mine])) > 1:
            split.append(int(c))
    return np.asarray(split, dtype="int64")


_EDGE_CHUNK = 2_000_000     # pair look-ups per block, to bound the memory of the edge build


def piece_gather(rows: np.ndarray, cols: np.ndarray, pop: np.ndarray, adjacency: sp.spmatrix,
                 n_cand: int) -> np.ndarray:
    """Per stored pair (u, c): residents of u's connected piece among the units reaching c."""
    n_pairs = len(rows)
    keys = rows.astype("int64") * n_cand + cols          # sorted: CSR order, rows then columns
    per_unit = np.bincount(rows, minlength=adjacency.shape[0])
    first = np.r_[0, np.cumsum(per_unit)[:-1]]
    sym = sp.csr_matrix(adjacency, dtype="float64")
    upper = sp.triu(sym + sym.T, k=1).tocoo()             # every edge once, whichever way given
    heads, tails = [], []
    edge_u, edge_v = upper.row.astype("int64"), upper.col.astype("int64")
    lengths = per_unit[edge_u]
    cum = np.cumsum(lengths)
    bounds = np.unique(np.r_[0, np.searchsorted(cum, np.arange(_EDGE_CHUNK, cum[-1] if len(cum) else 0,
                                                                _EDGE_CHUNK)), len(edge_u)])
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a >= b:
            continue
        u, v, n = edge_u[a:b], edge_v[a:b], lengths[a:b]
        offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        entry = np.repeat(first[u], n) + offset           # every pair (u, c) of the block's edges
        wanted = np.repeat(v, n) * n_cand + cols[entry]   # ... and its twin (v, c), if stored
        pos = np.minimum(np.searchsorted(keys, wanted), n_pairs - 1)
        found = keys[pos] == wanted
        heads.append(entry[found])
        tails.append(pos[found])
    head = np.concatenate(heads) if heads else np.zeros(0, "int64")
    tail = np.concatenate(tails) if tails else np.zeros(0, "int64")
    graph = sp.csr_matrix((np.ones(len(head), dtype="int8"), (head, tail)), shape=(n_pairs, n_pairs))
    _, piece = connected_components(graph, directed=False)
    return np.bincount(piece, weights=pop[rows])[piece]


_COVER_NODES = 2_000        # branch-and-bound nodes per set cover (a count, so deterministic);
                            # stopped early, HiGHS's dual bound still proves a floor
_EXACT_COVER_CELLS = 300_000  # rows x columns up to which the set cover runs as a MIP (seconds);
                            # above, the LP relaxation's floor (a fraction of a second)
_REDUCE_SIZE = 3_000        # rows and columns up to which the MIP gets the cover made small
                            # first (its dominance tests are dense, rows x rows and columns x
                            # columns: 72 MB each at this count)


def min_cover_count(structure: sp.spmatrix) -> int:
    """
    A proven floor on the fewest columns that together reach every row of `structure` (rows x
    columns, stored = reaches); rows reaching no column are ignored. The LP relaxation's
    optimum rounded up, exact when a greedy cover meets it; otherwise, up to
    `_EXACT_COVER_CELLS`, the exact set cover by HiGHS (or its dual bound, rounded up, when the
    node limit stops it first).

    A grid holding a resident forced undersized is undersized whichever station it has, and
    its station is a node that resident reaches, one station per grid: the grids holding the
    forced residents of a community are at least this count of their reach (`plan_grids`'
    bound on the share of grids in band). Communities likewise: see `count_shortfall`.
    """
    from covplan.solve.partition.seeding import set_cover

    matrix = _cover_matrix(structure)
    if matrix.shape[0] == 0:
        return 0
    return _exact_cover(matrix, _lp_cover_floor(matrix),
                        len(set_cover(matrix, np.ones(matrix.shape[0]))))


def cover_floor(structure: sp.spmatrix) -> int:
    """The fewest centers that cover every unit of `structure` (units x sites), by the set
    cover's LP floor: a lower bound."""
    return _lp_cover_floor(_cover_matrix(structure))


def _cover_matrix(structure: sp.spmatrix) -> sp.csr_matrix:
    """`structure` as 0/1 floats without rows or columns that reach nothing."""
    matrix = sp.csr_matrix(structure, dtype="float64")
    matrix = matrix[np.diff(matrix.indptr) > 0]
    matrix.data[:] = 1.0
    return matrix[:, np.flatnonzero(np.diff(matrix.tocsc().indptr) > 0)].tocsr()


def _lp_cover_floor(matrix: sp.csr_matrix) -> int:
    """The set cover's LP relaxation optimum, rounded up: a floor on the fewest columns."""
    from covplan.solve.partition.seeding import cover_lp

    lp = cover_lp(matrix)
    return max(1, int(np.ceil(lp.fun - 1e-6))) if lp.status == 0 else 1


def _exact_cover(matrix: sp.csr_matrix, floor: int, greedy: int) -> int:
    """The fewest columns (HiGHS), or its proven floor: `floor` when a cover of `greedy` columns
    meets it or the matrix is above `_EXACT_COVER_CELLS`, else the MIP's dual bound. The MIP
    solves the cover made small (`reduced_cover`: dominated columns and implied rows dropped,
    the same fewest count), which HiGHS's presolve does not do: linear's districts 2.2 and 2.4 s
    -> 0.1 and 0.4 s, the same counts."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    from covplan.solve.partition.seeding import reduced_cover

    n_rows, n = matrix.shape
    if floor >= greedy or n_rows * n > _EXACT_COVER_CELLS:
        return floor
    if max(n_rows, n) <= _REDUCE_SIZE:
        matrix, _ = reduced_cover(matrix)
        n = matrix.shape[1]
    res = milp(np.ones(n), integrality=np.ones(n), bounds=Bounds(0, 1),
               constraints=[LinearConstraint(matrix, 1, np.inf)],
               options={"node_limit": _COVER_NODES})
    dual = getattr(res, "mip_dual_bound", None)
    if dual is None or not np.isfinite(dual):
        return floor
    return max(floor, int(np.ceil(dual - 1e-6)))
