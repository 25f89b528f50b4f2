"""
`covplan bench scale`: the plan pipeline on synthetic metropolises of growing size
(`covplan.cities.metropolis`), with per-stage times, peak memory and how the cost grows.

Each size runs in a fresh Python process, so its peak memory (the process's resident set, as
the operating system counts it) is its own and no cache of a smaller size helps it. A size that
runs past the time limit (or fails) is stopped and the larger ones are skipped.

Stages, as `covplan demo --residents N` runs them: city (building the metropolis, not part of a
user's run), network, population, areas, plan (`plan_communities`: reach, partition,
isochrones) and writing (the plan folder). With ``stages=True`` the reach step
(`prepare_planning`) and the isochrones are then timed again on their own, after the plan was
written and dropped, and the partition is the plan's time less those two. The growth exponent
between two sizes is log(time ratio) / log(size ratio): 1 is linear, 2 quadratic.

With ``jobs`` > 1 the planner's worker processes (districts or regions side by side) are the
size's process's children: their largest peak is reported apart ("workers GB"); they share the
main process's memory copy-on-write, so adding the two overstates what the machine needed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from covplan.config import PlanConfig
from covplan.errors import InputError

__all__ = ["DEFAULT_SIZES", "ScaleResult", "format_scale_table", "run_scale"]

logger = logging.getLogger(__name__)

DEFAULT_SIZES = (0.3e6, 1e6, 3e6, 10e6, 30e6)
DEFAULT_TIME_LIMIT_S = 1_200.0
# The stages a user's run goes through (the city is built for the benchmark only).
PIPELINE = ("network", "population", "areas", "plan", "writing")
STAGES = ("city", *PIPELINE, "reach", "isochrones", "partition")


@dataclass(frozen=True, slots=True)
class SizeResult:
    """One size: seconds per stage, peak RSS, plan figures; or why there are none."""

    residents: int
    status: str                                     # "ok", "timed out", "failed", "skipped"
    message: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = math.nan                   # whole process, after writing
    workers_peak_rss_mb: float = math.nan           # the largest planner worker (jobs > 1)
    rss_after_mb: dict[str, float] = field(default_factory=dict)   # high-water mark per stage
    figures: dict[str, Any] = field(default_factory=dict)          # city and plan figures

    @property
    def total_s(self) -> float:
        """The user's pipeline: network, population, areas, plan and writing."""
        return sum(self.seconds.get(s, math.nan) for s in PIPELINE)


@dataclass(frozen=True, slots=True)
class ScaleResult:
    sizes: tuple[SizeResult, ...]
    config: dict
    time_limit_s: float
    machine: dict

    def exponents(self) -> list[dict[str, float]]:
        """Growth exponent of each stage and the total between consecutive measured sizes."""
        done = [s for s in self.sizes if s.status == "ok"]
        out = []
        for a, b in itertools.pairwise(done):
            ratio = math.log(b.residents / a.residents)
            row = {"from": a.residents, "to": b.residents,
                   "total": math.log(b.total_s / a.total_s) / ratio}
            for stage in STAGES:
                ta, tb = a.seconds.get(stage), b.seconds.get(stage)
                if ta and tb and ta > 0 and tb > 0:
                    row[stage] = math.log(tb / ta) / ratio
            out.append(row)
        return out

    def to_dict(self) -> dict:
        return {"sizes": [asdict(s) | {"total_s": s.total_s} for s in self.sizes],
                "exponents": self.exponents(), "config": self.config,
                "time_limit_s": self.time_limit_s, "machine": self.machine}

    def to_markdown(self) -> str:
        return format_scale_table(self)


def run_scale(sizes: Sequence[float] = DEFAULT_SIZES, *, stages: bool = True,
              time_limit_s: float = DEFAULT_TIME_LIMIT_S, seed: int = 0,
              config: PlanConfig | None = None, districts: bool = True,
              jobs: int | str | None = None,
              json_path: str | os.PathLike[str] | None = None) -> ScaleResult:
    """
    Plan a metropolis of each size in its own process; see the module docstring.

    Parameters
    ----------
    sizes
        Residents per city, ascending (e.g. 0.3e6 for 300,000).
    stages
        Also time the reach and the isochrones on their own, to split the plan's time.
    time_limit_s
        A size still running after this long is stopped and larger sizes are skipped.
    seed, config
        The metropolis seed and the plan parameters (default PlanConfig()).
    districts
        Plan within the metropolis's districts (one per ~400,000 residents), as
        `covplan demo` does; False plans the whole city without them (a large one by regions).
    jobs
        Worker processes of the planner (``PlanConfig.jobs``; None: the config's).
    json_path
        Also write the result there as JSON (rewritten after every size).

    Raises
    ------
    InputError
        For sizes that are not ascending or below the metropolis minimum, or a time limit <= 0.
    """
    from covplan.cities.metropolis import MIN_RESIDENTS

    counts = [round(n) for n in sizes]
    if not counts or any(n < MIN_RESIDENTS for n in counts) or counts != sorted(set(counts)):
        raise InputError(f"sizes must be ascending and at least {MIN_RESIDENTS:,} residents, got "
                         f"{list(sizes)} (--sizes / sizes=).")
    if not time_limit_s > 0:
        raise InputError(f"the time limit must be > 0 s, got {time_limit_s} (--time-limit / "
                         "time_limit_s=).")
    config = config or PlanConfig()
    if jobs is not None:
        config = dataclasses.replace(config, jobs=jobs)
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": sys.platform}
    results: list[SizeResult] = []
    stop = ""
    for n in counts:
        if stop:
            results.append(SizeResult(n, "skipped", stop))
        else:
            results.append(_run_size(n, stages=stages, time_limit_s=time_limit_s, seed=seed,
                                     config=config, districts=districts))
            last = results[-1]
            logger.info("Scale %s residents: %s %s", f"{n:,}", last.status,
                        f"{last.total_s:.1f} s, peak {last.peak_rss_mb:,.0f} MB"
                        if last.status == "ok" else last.message)
            if last.status != "ok":
                stop = f"a smaller city {last.status}"
        result = ScaleResult(tuple(results),
                             config.to_dict() | {"districts": districts, "jobs": config.jobs},
                             time_limit_s, machine)
        if json_path is not None:
            from covplan.output.files import write_json

            write_json(json_path, result.to_dict())
    return result


def _run_size(n: int, *, stages: bool, time_limit_s: float, seed: int,
              config: PlanConfig, districts: bool) -> SizeResult:
    with tempfile.TemporaryDirectory(prefix="covplan-scale-") as tmp:
        out = Path(tmp) / "result.json"
        # -P: the checkout's coverage/ folder must not shadow coverage.py (see pyproject).
        command = [sys.executable, "-P", "-m", "covplan.bench.scale", "--child", str(n),
                   "--seed", str(seed), "--config", json.dumps(config.to_dict()),
                   "--json", str(out), "--folder", tmp, "--jobs", str(config.jobs),
                   *(["--stages"] if stages else []), *([] if districts else ["--no-districts"])]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=time_limit_s,
                                  check=False)
        except subprocess.TimeoutExpired:
            return SizeResult(n, "timed out", f"stopped after {time_limit_s:g} s")
        if done.returncode != 0 or not out.exists():
            tail = (done.stderr.strip().splitlines() or [""])[-1]
            reason = (f"killed by signal {-done.returncode} (out of memory?)"
                      if done.returncode < 0 else tail)
            return SizeResult(n, "failed", reason)
        data = json.loads(out.read_text())
    return SizeResult(n, "ok", seconds=data["seconds"], peak_rss_mb=data["peak_rss_mb"],
                      workers_peak_rss_mb=data.get("workers_peak_rss_mb", math.nan),
                      rss_after_mb=data["rss_after_mb"], figures=data["figures"])


def format_scale_table(result: ScaleResult) -> str:
    """A markdown table: one row per size, seconds per stage, peak RSS and growth exponent."""
    exponent = {row["to"]: row["total"] for row in result.exponents()}
    columns = ["residents", "city s", "network s", "population s", "areas s", "plan s",
               "(reach s", "partition s", "isochrones s)", "writing s", "total s",
               "peak RSS GB", "workers GB", "growth exp.", "communities", "in band %"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
    for s in result.sizes:
        if s.status != "ok":
            lines.append(f"| {s.residents:,} | {s.status}: {s.message} |" + " |" * (len(columns) - 2))
            continue
        t = s.seconds
        cells = [f"{s.residents:,}"] + [_sec(t.get(k)) for k in
                                        ("city", "network", "population", "areas", "plan",
                                         "reach", "partition", "isochrones", "writing")]
        workers = s.workers_peak_rss_mb
        cells += [_sec(s.total_s), f"{s.peak_rss_mb / 1024:.2f}",
                  f"{workers / 1024:.2f}" if math.isfinite(workers) else "–",
                  f"{exponent[s.residents]:.2f}" if s.residents in exponent else "–",
                  f"{s.figures.get('communities', 0):,}",
                  f"{100 * s.figures.get('within_tolerance_pop_share', math.nan):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sec(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.1f}"


# ---- one size, in its own process ----------------------------------------------------------
def _child(residents: int, *, seed: int, config: PlanConfig, stages: bool, districts: bool,
           folder: Path) -> dict[str, Any]:
    import gc

    from covplan.cities.metropolis import build_metropolis
    from covplan.inputs.areas import load_centers, load_communities, load_districts
    from covplan.inputs.network import load_network
    from covplan.inputs.population import load_population
    from covplan.output.basemap import base_layer
    from covplan.output.files import write_plan
    from covplan.plan.pipeline import plan_communities, prepare_planning
    from covplan.reach.isochrones import compute_isochrones

    seconds: dict[str, float] = {}
    rss: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(stage: str):
        started = time.perf_counter()
        yield
        seconds[stage] = time.perf_counter() - started
        rss[stage] = _peak_rss_mb()

    with timed("city"):
        city = build_metropolis(residents, seed=seed)
    figures = {"nodes": city.graph.number_of_nodes(), "cells": len(city.population),
               "existing_communities": len(city.communities), "districts": len(city.districts)}
    with timed("network"):
        network = load_network(city.graph)
    with timed("population"):
        population = load_population(city.population, population_column="population",
                                     id_column="cell_id")
    with timed("areas"):
        centers, communities = load_centers(city.centers), load_communities(city.communities)
        limits = load_districts(city.districts) if districts else None
    railway = city.railway
    del city                      # the generator's graph is no part of a user's run
    gc.collect()
    with timed("plan"):
        plan = plan_communities(network, population, communities=communities, centers=centers,
                                districts=limits, config=config)
    with timed("writing"):
        write_plan(plan, folder / "plan",
                   base=base_layer(network, features=railway.assign(kind="railway")))
    peak, workers = _peak_rss_mb(), _peak_rss_mb(resource.RUSAGE_CHILDREN)
    report = plan.report
    figures.update({key: report[key] for key in (
        "communities", "coverage_share", "within_tolerance_pop_share",
        "within_tolerance_pop_share_ceiling", "stability_share", "exception_communities")})
    plan_centers = plan.centers
    del plan
    gc.collect()
    if stages:
        with timed("reach"):
            prepare_planning(network, population, centers=centers, communities=communities,
                             districts=limits, config=config)
        gc.collect()
        with timed("isochrones"):
            compute_isochrones(network.with_walk_speed(config.walk_speed_kmh), plan_centers,
                               minutes=[config.max_minutes])
        seconds["partition"] = seconds["plan"] - seconds["reach"] - seconds["isochrones"]
    return {"seconds": seconds, "peak_rss_mb": peak, "rss_after_mb": rss, "figures": figures,
            "workers_peak_rss_mb": workers if workers > 0 else math.nan}   # 0: no pool ran


def _peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """The process's (or its largest ended child's) peak resident set so far (Linux reports
    KiB, macOS bytes)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _child_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="covplan.bench.scale")
    parser.add_argument("--child", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="{}")
    parser.add_argument("--stages", action="store_true")
    parser.add_argument("--no-districts", action="store_true")
    parser.add_argument("--jobs", default="1")
    parser.add_argument("--json", required=True)
    parser.add_argument("--folder", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    jobs = args.jobs if args.jobs == "auto" else int(args.jobs)
    data = _child(args.child, seed=args.seed,
                  config=PlanConfig(**json.loads(args.config), jobs=jobs),
                  stages=args.stages, districts=not args.no_districts, folder=Path(args.folder))
    Path(args.json).write_text(json.dumps(data))
    return 0


# ---- the command ---------------------------------------------------------------------------
def add_scale_parser(bench_sub: Any) -> None:
    """`covplan bench scale [--sizes 0.3M,1M,3M] [--time-limit S] [--no-stages] [--json F]`."""
    p = bench_sub.add_parser(
        "scale", help="plan synthetic metropolises of growing size: time per stage, peak "
                      "memory, growth exponent",
        description="Plans a synthetic metropolis (covplan demo --residents N) of each size in "
                    "its own process and prints a markdown table: seconds per stage, peak "
                    "memory (process RSS) and the growth exponent of the total between sizes "
                    "(1 = linear). Larger sizes are skipped once one runs past --time-limit.")
    p.add_argument("--sizes", default="0.3M,1M,3M,10M,30M",
                   help="residents per city, ascending: 300000, 300k, 0.3M or 3e5 "
                        "(default 0.3M,1M,3M,10M,30M)")
    p.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT_S, dest="time_limit_s",
                   help=f"seconds per size (default {DEFAULT_TIME_LIMIT_S:g})")
    p.add_argument("--no-stages", action="store_true",
                   help="time the plan as a whole only (skips re-running reach and isochrones)")
    p.add_argument("--no-districts", action="store_true",
                   help="plan each city as one piece, not within its districts")
    p.add_argument("--jobs", type=parse_jobs, default=1,
                   help="worker processes planning districts or regions side by side (a city "
                        "in one part: its restarts and merge/split plans), or 'auto': one per "
                        "CPU (default 1)")
    p.add_argument("--seed", type=int, default=0, help="metropolis seed (default 0)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=run_scale_command)


def parse_jobs(text: str) -> int | str:
    """'--jobs' values: a whole number >= 1 or 'auto' (PlanConfig checks the number)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        msg = f"--jobs takes a whole number of worker processes or 'auto', got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def parse_sizes(text: str) -> list[float]:
    """'0.3M,1M,300k,3e6' -> [300000.0, 1000000.0, 300000.0, 3000000.0]."""
    scale = {"": 1.0, "k": 1e3, "m": 1e6}
    sizes = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        match = re.fullmatch(r"([0-9.]+(?:e[0-9]+)?)\s*([kKmM]?)", part)
        if not match:
            raise InputError(f"--sizes takes residents separated by commas, e.g. 0.3M,1M,3M; "
                             f"cannot read {part!r}.")
        sizes.append(float(match.group(1)) * scale[match.group(2).lower()])
    return sizes


def run_scale_command(args: argparse.Namespace) -> int:
    """The `covplan bench scale` handler: prints the table, writes --json."""
    result = run_scale(parse_sizes(args.sizes), stages=not args.no_stages,
                       time_limit_s=args.time_limit_s, seed=args.seed,
                       districts=not args.no_districts, jobs=args.jobs, json_path=args.json)
    print(result.to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
