"""A large city planned by parts: regions cut along the unit graph, planned side by side on
worker processes, seams repaired; the same rules as the whole-city plan, the same plan for any
number of jobs."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import replace

import geopandas as gpd
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import grid_town
from covplan._parallel import run_tasks, shared, spare_processes
from covplan.config import PlanConfig
from covplan.errors import InputError
from covplan.plan import regions
from covplan.plan.pipeline import plan_communities, prepare_planning
from covplan.solve.partition.seeding import bisect_parts
from geopandas.testing import assert_geodataframe_equal
from scipy.sparse.csgraph import connected_components
from shapely.geometry import box

CONFIG = {"target_pop": 2_000, "tolerance": 0.2, "max_minutes": 8.0,
          "candidate_spacing_m": 150.0, "max_unit_pop": None, "restarts": 1}
TOWN = 22                      # 21 x 21 cells, 45,110 residents: four regions of ~11,000


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _plan(jobs: int, *, region_residents: float, **inputs) -> tuple:
    """A plan of the grid town and the planner's log lines, with regions of this size."""
    net, population = grid_town(TOWN)
    messages = _Messages()
    log = logging.getLogger("covplan.plan")
    log.addHandler(messages)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(regions, "REGION_RESIDENTS", region_residents)
            patch.setattr(regions, "REGION_COMMUNITIES", 5)
            plan = plan_communities(net, population, config=PlanConfig(jobs=jobs, **CONFIG),
                                    **inputs)
    finally:
        log.removeHandler(messages)
        log.setLevel(old_level)
    return plan, messages.lines


@pytest.fixture(scope="module")
def plans() -> dict:
    return {"whole": _plan(1, region_residents=1e12),
            "regions": _plan(1, region_residents=11_000),
            "regions, 2 jobs": _plan(2, region_residents=11_000)}


def test_the_town_is_planned_by_regions_only_when_large(plans) -> None:
    assert not any("regions" in line for line in plans["whole"][1])
    assert any("as 4 regions" in line for line in plans["regions"][1])
    assert any(line.startswith("Seams:") for line in plans["regions"][1])


def test_decomposed_plan_meets_the_whole_city_rules(plans) -> None:
    whole, _ = plans["whole"]
    plan, _ = plans["regions"]
    total = int(grid_town(TOWN)[1].units["pop"].sum())
    for p in (whole, plan):
        units = p.units
        # Population in == population out; every unit in exactly one listed community.
        assert int(units["pop"].sum()) == total == int(p.communities["population"].sum())
        assert units["unit_id"].is_unique and units["community_id"].notna().all()
        assert set(units["community_id"]) == set(p.communities["community_id"])
        sizes = units.groupby("community_id")["pop"].sum()
        assert (sizes.reindex(p.communities["community_id"]).to_numpy()
                == p.communities["population"].to_numpy()).all()
        assert p.communities["contiguous"].all()
    report, base = plan.report, whole.report
    assert report["coverage_share"] == base["coverage_share"] == 1.0
    assert report["within_tolerance_pop_share"] >= base["within_tolerance_pop_share"] - 0.02
    assert report["exception_communities"] == base["exception_communities"]
    # Regions are the planner's own: no output speaks of them.
    for frame in (plan.units, plan.communities, plan.centers):
        assert not [c for c in frame.columns if "region" in c.lower()]
    assert not [k for k in report if "region" in k.lower()]


def test_communities_cross_region_limits(plans) -> None:
    """The seams were re-planned: some community holds units of two regions."""
    plan, _ = plans["regions"]
    net, population = grid_town(TOWN)
    config = PlanConfig(**CONFIG)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(regions, "REGION_RESIDENTS", 11_000)
        patch.setattr(regions, "REGION_COMMUNITIES", 5)
        ready = prepare_planning(net, population, config=config)
        region, _ = regions.plan_regions(ready, config, {})
    assert ready.reach.units["unit_id"].tolist() == plan.units["unit_id"].tolist()
    spans = plan.units.assign(region=region).groupby("community_id")["region"].nunique()
    assert (spans > 1).any()


def test_jobs_give_exactly_the_same_plan(plans) -> None:
    one, _ = plans["regions"]
    two, _ = plans["regions, 2 jobs"]
    assert_geodataframe_equal(two.units, one.units)
    assert_geodataframe_equal(two.communities, one.communities)
    assert_geodataframe_equal(two.centers, one.centers)
    drop = {"runtime_s"}
    assert ({k: v for k, v in two.report.items() if k not in drop}
            == {k: v for k, v in one.report.items() if k not in drop})


def test_districts_planned_side_by_side_give_the_same_plan() -> None:
    x0, y0, half = 500_000.0, 4_000_000.0, 100 * (TOWN - 1) / 2
    districts = gpd.GeoDataFrame(
        {"district_id": ["W", "E"]}, crs="EPSG:32633",
        geometry=[box(x0, y0, x0 + half, y0 + 2 * half),
                  box(x0 + half, y0, x0 + 2 * half, y0 + 2 * half)])
    one, _ = _plan(1, region_residents=1e12, districts=districts)
    two, _ = _plan(2, region_residents=1e12, districts=districts)
    assert_geodataframe_equal(two.units, one.units)
    assert one.communities["district"].nunique() == 2


# ---- the parts, on arrays --------------------------------------------------------------------
def _lattice(n: int, cut_column: int | None = None, crossing: int = 0):
    """n x n units on a lattice, adjacent to their four neighbours; with `cut_column`, a river
    between that column and the next, crossed at row `crossing` only."""
    ids = np.arange(n * n).reshape(n, n)
    pairs = [(ids[r, c], ids[r, c + 1]) for r in range(n) for c in range(n - 1)
             if cut_column is None or c != cut_column or r == crossing]
    pairs += [(ids[r, c], ids[r + 1, c]) for r in range(n - 1) for c in range(n)]
    a, b = np.array(pairs).T
    adjacency = sp.csr_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(n * n,) * 2)
    xy = np.column_stack([(ids % n).ravel(), (ids // n).ravel()]).astype(float)
    return xy, adjacency


def _pieces(region: np.ndarray, adjacency: sp.csr_matrix) -> list[int]:
    coo = adjacency.tocoo()
    same = region[coo.row] == region[coo.col]
    inner = sp.csr_matrix((np.ones(same.sum()), (coo.row[same], coo.col[same])), shape=adjacency.shape)
    _, piece = connected_components(inner, directed=False)
    return [len(np.unique(piece[region == r])) for r in np.unique(region)]


def test_regions_are_balanced_connected_and_keep_atoms_whole() -> None:
    n = 20
    xy, adjacency = _lattice(n, cut_column=6, crossing=0)     # a river, one bridge
    pop = np.random.default_rng(1).integers(50, 150, n * n).astype(float)
    atoms = np.full(n * n, -1)
    atoms[[5 * n + 9, 5 * n + 10, 6 * n + 9, 6 * n + 10]] = 0    # a kept community astride
    region = regions.unit_regions(xy, pop, adjacency, size=pop.sum() / 4, atoms=atoms)
    assert len(np.unique(region)) == 4
    assert _pieces(region, adjacency) == [1, 1, 1, 1]         # no piece cut off by the river
    assert len(np.unique(region[atoms == 0])) == 1
    sizes = np.bincount(region, weights=pop)
    assert sizes.max() / sizes.min() < 2.5
    # The straight cut alone would leave a region in two pieces across the river.
    straight, _ = bisect_parts(xy.astype("float64"), pop + 1e-6, np.arange(len(xy)), 4)
    assert _pieces(straight, adjacency) != [1, 1, 1, 1]


def test_seam_bands_hold_the_communities_touching_each_seam() -> None:
    n = 6
    xy, adjacency = _lattice(n)
    region = (xy[:, 0] >= 3).astype("int64") + 2 * (xy[:, 1] >= 3)    # four quadrants
    center_of = (xy[:, 0] // 2).astype("int64") + 3 * (xy[:, 1] // 2).astype("int64")
    frozen = np.zeros(9, dtype=bool)
    frozen[8] = True
    bands = regions.seam_bands(center_of, region, adjacency, frozen)
    assert sorted(bands) == [(0, 1), (0, 2), (1, 3), (2, 3)]   # no seam at a corner point
    assert bands[(0, 1)].tolist() == [1, 4]       # columns 2 | 3, rows 0-2: blocks 1 and 4
    assert 8 not in np.concatenate(list(bands.values()))
    chosen = regions.next_round(bands, sorted(bands))
    taken = [set(bands[s].tolist()) for s in chosen]
    assert all(not a & b for i, a in enumerate(taken) for b in taken[i + 1:])


def _square(x: int) -> tuple[int, int]:
    return x * x, shared()["offset"]


def test_run_tasks_keeps_task_order_on_workers() -> None:
    tasks = list(range(7))
    serial = run_tasks(_square, tasks, jobs=1, data={"offset": 3})
    assert run_tasks(_square, tasks, jobs=2, data={"offset": 3}) == serial
    assert run_tasks(_square, tasks, jobs=2, data={"offset": 3}, at_once=True) == serial
    assert serial == [(x * x, 3) for x in tasks]


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _left_alone(task: str) -> list[int] | None:
    """The slow task waits until the fast one is done, then runs two tasks of its own on one
    job: its process and theirs."""
    if task == "fast":
        return None
    deadline = time.monotonic() + 60
    while spare_processes() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    return [os.getpid(), *run_tasks(_pid_after, [0.3, 0.3], jobs=1, data={})]


def test_a_task_left_alone_borrows_the_idle_process() -> None:
    """A task whose pool has an idle process (the other task done) runs its own two tasks on
    one job side by side: the idle process is lent. Outside any pool nothing is spare, and
    one job runs its tasks here, one by one."""
    fast, (caller, *inner) = run_tasks(_left_alone, ["fast", "slow"], jobs=2, data={})
    assert fast is None
    assert len(set(inner)) == 2 and caller not in inner
    assert spare_processes() == 0
    assert run_tasks(_pid_after, [0.0, 0.0], jobs=1, data={}) == [os.getpid()] * 2


def test_jobs_setting() -> None:
    from covplan._parallel import usable_cpus

    # "auto": the CPUs this process may run on, which a container or taskset can narrow.
    assert PlanConfig(jobs="auto").workers == usable_cpus()
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert usable_cpus() == len(os.sched_getaffinity(0))
    assert PlanConfig(jobs=3).workers == 3
    assert "jobs" not in PlanConfig(jobs=2).to_dict()     # no output depends on it
    for bad in (0, -1, 1.5, True, "two"):
        with pytest.raises(InputError, match="--jobs / PlanConfig.jobs"):
            PlanConfig(jobs=bad)


def test_a_city_planned_whole_gives_the_same_plan_on_two_processes(caplog) -> None:
    """One part uses both processes itself: its runs and the improvement of its best runs
    (redraw; one or two, the same task either way), the plans with and without its kept
    communities (merge/split), side by side."""
    from covplan.bench.planner import build_instance, generate_communities

    net, population = grid_town(TOWN)
    config = PlanConfig(**{**CONFIG, "restarts": 3})
    existing = generate_communities(build_instance(net, population, config=config),
                                    n_communities=22, seed=1)
    for given in ({}, {"communities": existing.communities, "centers": existing.centers}):
        plans = []
        for jobs in (1, 2):
            caplog.clear()
            with caplog.at_level(logging.DEBUG, logger="covplan"):
                plans.append(plan_communities(net, population, config=replace(config, jobs=jobs),
                                              **given))
        if given:
            assert "with and without its" in caplog.text
        else:
            assert re.search(r"Improving run\(s\) \[[\d, ]+\] on up to 2 process", caplog.text)
        one, two = plans
        assert_geodataframe_equal(two.units, one.units)
        assert_geodataframe_equal(two.communities, one.communities)
        assert ({k: v for k, v in two.report.items() if k != "runtime_s"}
                == {k: v for k, v in one.report.items() if k != "runtime_s"})
