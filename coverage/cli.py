"""The `covplan` command: thin subcommands that read files, call the public API and write outputs."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from coverage import __version__
from coverage._errors import CoverageError, InputError

logger = logging.getLogger("coverage.cli")


def _configure_logging(level: int) -> None:
    levels = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}
    logging.basicConfig(level=levels[max(-1, min(1, level))], format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.captureWarnings(True)
    logging.getLogger("pyogrio").setLevel(logging.WARNING)


def _minutes_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        msg = f"--minutes must be numbers separated by commas, e.g. 5,10,15; got {text!r}."
        raise InputError(msg) from None


def _add_network_options(p: argparse.ArgumentParser, *, speed: bool = True) -> None:
    p.add_argument("--network", required=True,
                   help="OSM PBF/XML file, or GraphML written by osmnx")
    if speed:
        p.add_argument("--walk-speed", type=float, default=4.5, dest="walk_speed_kmh",
                       help="walking speed in km/h (default 4.5; e.g. 3.6 for elderly residents)")


def _add_population_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--population", required=True,
                   help="raster (GeoTIFF), vector grid/points (GeoPackage, GeoJSON, Shapefile, zip) or CSV")
    p.add_argument("--population-column", default=None, help="column holding counts (auto-detected)")
    p.add_argument("--disaggregate", choices=["none", "nodes", "grid"], default="none",
                   help="split coarse cells onto network nodes or a finer grid before computing")


def _load_inputs(args: argparse.Namespace):
    from coverage.network import load_network
    from coverage.population import load_population

    network = load_network(args.network, walk_speed_kmh=args.walk_speed_kmh, progress=True)
    population = load_population(args.population, population_column=args.population_column)
    if args.disaggregate == "nodes":
        population = population.disaggregate(onto="nodes", network=network)
    elif args.disaggregate == "grid":
        population = population.disaggregate(onto="grid", cell_size_m=50.0)
    return network, population


def _cmd_coverage(args: argparse.Namespace) -> int:
    from coverage.assess import assess_coverage
    from coverage.inputs import load_centers, load_communities
    from coverage.isochrones import compute_isochrones

    network, population = _load_inputs(args)
    centers = load_centers(args.centers)
    communities = load_communities(args.communities) if args.communities else None
    result = assess_coverage(network, population, centers, communities=communities,
                             max_minutes=args.minutes, progress=True)
    isochrones = compute_isochrones(network, centers, minutes=[args.minutes], progress=True)
    _write_coverage(Path(args.out), result, isochrones)
    return 0


def _write_coverage(out: Path, result, isochrones, extra_layers=None, title="coverage",
                    map_name="map.html") -> None:
    from coverage.io import prepare_folder, write_json, write_layers
    from coverage.maps import coverage_map

    prepare_folder(out)
    layers = {"units": result.units, "centers": result.centers, "isochrones": isochrones}
    if result.communities is not None:
        layers = {"communities": result.communities, **layers}
    layers.update(extra_layers or {})
    write_layers(out / f"{title}.gpkg", layers)
    write_json(out / f"{title}.json", result.summary())
    coverage_map(result, isochrones=isochrones).save(out / map_name)
    summary = result.summary()
    share = summary.get("coverage_share_own", summary["coverage_share"])
    logger.info("Wrote %s: %.1f %% of %d residents within %g min", out, 100 * share,
                summary["population_total"], result.max_minutes)


def _plan_config(args: argparse.Namespace):
    from coverage.config import PlanConfig

    return PlanConfig(target_pop=args.target, tolerance=args.tolerance, max_minutes=args.minutes,
                      walk_speed_kmh=args.walk_speed_kmh, seed=args.seed, restarts=args.restarts,
                      candidate_spacing_m=args.candidate_spacing,
                      max_unit_pop=args.max_unit_pop or None)


def _cmd_plan(args: argparse.Namespace) -> int:
    from coverage.inputs import load_centers, load_communities, load_districts
    from coverage.io import write_plan
    from coverage.network import load_network
    from coverage.plan import plan_communities
    from coverage.population import load_population

    config = _plan_config(args)
    network = load_network(args.network, walk_speed_kmh=args.walk_speed_kmh, progress=True)
    population = load_population(args.population, population_column=args.population_column)
    plan = plan_communities(
        network, population,
        communities=load_communities(args.communities) if args.communities else None,
        centers=load_centers(args.centers) if args.centers else None,
        districts=load_districts(args.districts) if args.districts else None,
        config=config, progress=True)
    write_plan(plan, args.out)
    return 0


def _add_plan_options(p: argparse.ArgumentParser) -> None:
    from coverage.config import PlanConfig

    d = PlanConfig()
    p.add_argument("--target", type=int, default=d.target_pop, help="residents per community")
    p.add_argument("--tolerance", type=float, default=d.tolerance,
                   help="allowed relative deviation from the target (0-1)")
    p.add_argument("--minutes", type=float, default=d.max_minutes, help="service-circle limit")
    p.add_argument("--walk-speed", type=float, default=d.walk_speed_kmh, dest="walk_speed_kmh",
                   help="walking speed in km/h (e.g. 3.6 for elderly residents)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--restarts", type=int, default=d.restarts)
    p.add_argument("--candidate-spacing", type=float, default=d.candidate_spacing_m,
                   help="one candidate site for a new center per populated square of this side (m)")
    p.add_argument("--max-unit-pop", type=int, default=d.max_unit_pop,
                   help="split cells with more residents onto network nodes (0: never)")


def _cmd_isochrones(args: argparse.Namespace) -> int:
    from coverage.inputs import load_centers
    from coverage.io import prepare_folder, write_layers
    from coverage.isochrones import compute_isochrones, dissolve_isochrones
    from coverage.maps import isochrone_map
    from coverage.network import load_network

    network = load_network(args.network, walk_speed_kmh=args.walk_speed_kmh, progress=True)
    centers = load_centers(args.centers)
    isochrones = compute_isochrones(network, centers, minutes=_minutes_list(args.minutes),
                                    progress=True)
    out = prepare_folder(args.out)
    write_layers(out / "isochrones.gpkg", {"isochrones": isochrones,
                                           "service_areas": dissolve_isochrones(isochrones),
                                           "centers": centers})
    isochrone_map(isochrones, centers).save(out / "map.html")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from coverage.assess import assess_coverage
    from coverage.demo import build_demo_city
    from coverage.inputs import load_centers, load_communities, load_districts
    from coverage.isochrones import compute_isochrones
    from coverage.network import load_network
    from coverage.population import load_population

    started = time.perf_counter()
    city = build_demo_city(seed=args.seed)
    network = load_network(city.graph, walk_speed_kmh=args.walk_speed_kmh)
    population = load_population(city.population, population_column="population",
                                 id_column="cell_id")
    centers = load_centers(city.centers)
    communities = load_communities(city.communities)
    districts = load_districts(city.districts)
    result = assess_coverage(network, population, centers, communities=communities,
                             max_minutes=args.minutes, progress=True)
    isochrones = compute_isochrones(network, centers, minutes=[args.minutes], progress=True)
    out = Path(args.out)
    _write_coverage(out, result, isochrones, title="asis", map_name="asis_map.html",
                    extra_layers={"districts": districts, "railway": city.railway})
    from coverage.io import write_plan
    from coverage.plan import plan_communities

    plan = plan_communities(network, population, communities=communities, centers=centers,
                            districts=districts, config=_plan_config(args), progress=True)
    write_plan(plan, out)
    r = plan.report
    logger.info("Demo: %d old communities -> %d new; %.1f %% within %g min of their center, "
                "%.0f %% within ±%.0f %% of %d residents, stability %.0f %% (%.1f s)",
                len(communities), r["communities"], 100 * r["coverage_share"], args.minutes,
                100 * r["within_tolerance_share"], 100 * args.tolerance, args.target,
                100 * (r["stability_share"] or 0), time.perf_counter() - started)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from coverage.bench import format_table, run_reach_benchmark
    from coverage.io import write_json

    network, population = _load_inputs(args)
    peers = tuple(p for p in args.peers.split(",") if p)
    report = run_reach_benchmark(network, population, max_minutes=args.minutes, peers=peers,
                                 networkx_origins=args.networkx_origins)
    print(format_table(report))
    if args.json:
        write_json(args.json, report)
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="covplan", description="Plan 15-minute service circles for neighbourhood communities.")
    parser.add_argument("--version", action="version", version=f"covplan {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="replay the demo city: 69 uneven communities -> about 30")
    demo.add_argument("--out", required=True, help="output folder")
    _add_plan_options(demo)
    demo.set_defaults(func=_cmd_demo)

    plan = sub.add_parser("plan", help="merge, split or redraw communities of ~target residents")
    _add_network_options(plan, speed=False)
    plan.add_argument("--population", required=True,
                      help="raster, vector grid/points or CSV (lon/lat or H3 ids)")
    plan.add_argument("--population-column", default=None, help="column holding counts (auto-detected)")
    plan.add_argument("--communities", default=None, help="existing communities (merge/split mode)")
    plan.add_argument("--centers", default=None, help="existing or candidate center sites")
    plan.add_argument("--districts", default=None, help="district limits no community may cross")
    plan.add_argument("--out", required=True, help="output folder")
    _add_plan_options(plan)
    plan.set_defaults(func=_cmd_plan)

    cov = sub.add_parser("coverage", help="as-is coverage of service centers")
    _add_network_options(cov)
    _add_population_options(cov)
    cov.add_argument("--centers", required=True, help="service-center points (any vector format)")
    cov.add_argument("--communities", default=None, help="existing community polygons")
    cov.add_argument("--minutes", type=float, default=15.0, help="service-circle limit")
    cov.add_argument("--out", required=True, help="output folder")
    cov.set_defaults(func=_cmd_coverage)

    iso = sub.add_parser("isochrones", help="walking isochrones around centers")
    _add_network_options(iso)
    iso.add_argument("--centers", required=True, help="service-center points (any vector format)")
    iso.add_argument("--minutes", default="5,10,15", help="limits, comma separated")
    iso.add_argument("--out", required=True, help="output folder")
    iso.set_defaults(func=_cmd_isochrones)

    bench = sub.add_parser("bench", help="benchmarks against peer libraries (not tests)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    bench_reach = bench_sub.add_parser("reach", help="walk-time engine vs scipy, networkx, pandana")
    _add_network_options(bench_reach)
    _add_population_options(bench_reach)
    bench_reach.add_argument("--minutes", type=float, default=15.0)
    bench_reach.add_argument("--peers", default="scipy,networkx,pandana",
                             help="comma-separated peers to include")
    bench_reach.add_argument("--networkx-origins", type=int, default=None,
                             help="run networkx on the first N origins only (reported as such)")
    bench_reach.add_argument("--json", default=None, help="also write the figures to this JSON file")
    bench_reach.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `covplan`; returns the exit code (2 for errors in the input)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose - args.quiet)
    try:
        return args.func(args)
    except CoverageError as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split())
        print(f"covplan {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
