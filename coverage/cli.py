"""The `covplan` command: thin subcommands that read files, call the public API and write outputs."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from covplan import __version__
from covplan.config import EXCEPTION_MODES, FLAGS, PlanConfig
from covplan.defaults import (
    DEFAULT_BANDS,
    DEFAULT_CANDIDATE_SPACING_M,
    DEFAULT_MAX_MINUTES,
    DEFAULT_WALK_SPEED_KMH,
)
from covplan.errors import CoverageError, InputError

logger = logging.getLogger("covplan.cli")


# Log lines: "2026-12-04 17:30:01 INFO covplan.cli: ...".
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"


def _configure_logging(level: int) -> None:
    levels = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}
    logging.basicConfig(level=levels[max(-1, min(1, level))], format=LOG_FORMAT,
                        datefmt=LOG_DATEFMT, stream=sys.stderr)
    logging.captureWarnings(True)
    logging.getLogger("pyogrio").setLevel(logging.WARNING)


@contextlib.contextmanager
def _stage(args: argparse.Namespace, name: str):
    """Time one stage of a command: "stage NAME: N.N s", at INFO under -v, DEBUG otherwise."""
    from covplan.output.writers import fault_point

    fault_point(f"stage {name}")
    started = time.perf_counter()
    yield
    logger.log(logging.INFO if getattr(args, "verbose", 0) > 0 else logging.DEBUG,
               "stage %s: %.1f s", name, time.perf_counter() - started)


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
        p.add_argument("--walk-speed", type=float, default=DEFAULT_WALK_SPEED_KMH,
                       dest="walk_speed_kmh",
                       help=f"walking speed in km/h (default {DEFAULT_WALK_SPEED_KMH:g}; "
                            "e.g. 3.6 for elderly residents)")


def _add_population_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--population", required=True,
                   help="raster (GeoTIFF), vector grid/points (GeoPackage, GeoJSON, Shapefile, zip) or CSV")
    p.add_argument("--population-column", default=None, help="column holding counts (auto-detected)")
    _add_population_crs_option(p)
    p.add_argument("--disaggregate", choices=["none", "nodes", "grid"], default="none",
                   help="split coarse cells onto network nodes or a finer grid before computing")


def _add_population_crs_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--population-crs", default=None, metavar="CRS",
                   help="CRS of a CSV's x/y columns, e.g. EPSG:32633 (default: lon/lat degrees)")


def _population_options(args: argparse.Namespace) -> dict:
    """load_population keywords of the population flags (crs= only when given: other sources
    carry their own)."""
    options = {"population_column": args.population_column}
    if args.population_crs is not None:
        options["crs"] = args.population_crs
    return options


def _load_inputs(args: argparse.Namespace):
    from covplan.inputs.network import load_network
    from covplan.inputs.population import load_population

    network = load_network(args.network, walk_speed_kmh=args.walk_speed_kmh, progress=True)
    population = load_population(args.population, **_population_options(args))
    if args.disaggregate == "nodes":
        population = population.disaggregate(onto="nodes", network=network)
    elif args.disaggregate == "grid":
        population = population.disaggregate(onto="grid", cell_size_m=50.0)
    return network, population


def _cmd_coverage(args: argparse.Namespace) -> int:
    from covplan.assess import assess_coverage
    from covplan.inputs.areas import load_centers, load_communities
    from covplan.reach.isochrones import compute_isochrones

    with _stage(args, "inputs (network, population)"):
        network, population = _load_inputs(args)
    with _stage(args, "areas (centers, communities)"):
        centers = load_centers(args.centers)
        communities = load_communities(args.communities) if args.communities else None
    with _stage(args, "coverage (reach)"):
        result = assess_coverage(network, population, centers, communities=communities,
                                 max_minutes=args.minutes, progress=True)
    with _stage(args, "isochrones"):
        isochrones = compute_isochrones(network, centers, minutes=[args.minutes], progress=True)
    with _stage(args, "writing"):
        _write_coverage(args.stage.path, result, isochrones, base=_base_layer(network),
                        self_contained=not args.cdn_maps)
        args.stage.commit()
    _log_coverage(Path(args.out), result)
    return 0


def _add_out_option(p: argparse.ArgumentParser) -> None:
    """--out and --force of a command that writes a folder; `main` checks and locks --out
    before the command runs, which writes into ``args.stage`` (see `output_folder`)."""
    p.add_argument("--out", required=True,
                   help="output folder: written whole when complete, replacing an older output "
                        "there (the old one stays if the run fails or is interrupted)")
    p.add_argument("--force", action="store_true",
                   help="write into --out even if it holds files covplan did not write (they "
                        "are kept)")
    p.set_defaults(writes_folder=True)


def _add_map_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cdn-maps", action="store_true",
                   help="link Leaflet from CDNs instead of embedding it (smaller maps that need "
                        "internet to open)")


def _base_layer(network, railway=None):
    """The map's offline base layer from the network (and a railway layer when there is one)."""
    from covplan.output.basemap import base_layer

    return base_layer(network, features=None if railway is None
                      else railway.assign(kind="railway"))


def _write_coverage(out: Path, result, isochrones, extra_layers=None, title="coverage",
                    map_name="map.html", *, base=None, self_contained: bool = True) -> None:
    from covplan.output.files import write_json, write_layers
    from covplan.output.maps import coverage_map, save_map

    # Residents are `population` in every written layer, as in a plan folder.
    layers = {"units": result.units.rename(columns={"pop": "population"}),
              "centers": result.centers, "isochrones": isochrones}
    if result.communities is not None:
        layers = {"communities": result.communities.rename(columns={"pop": "population"}),
                  **layers}
    layers.update(extra_layers or {})
    write_layers(out / f"{title}.gpkg", layers)
    write_json(out / f"{title}.json", result.summary())
    save_map(coverage_map(result, isochrones=isochrones, base=base), out / map_name,
             self_contained=self_contained)


def _log_coverage(out: Path, result) -> None:
    """The last line of `covplan coverage`: what its percentages count."""
    summary = result.summary()
    if result.communities is not None:
        logger.info("Wrote %s: %.1f %% of %s residents within %g min of their own community's "
                    "center; %.1f %% within %g min of the nearest center", out,
                    100 * summary["coverage_share"], f"{summary['population_total']:,}",
                    result.max_minutes, 100 * summary["nearest_center_share"], result.max_minutes)
    else:
        logger.info("Wrote %s: %.1f %% of %s residents within %g min of the nearest center", out,
                    100 * summary["coverage_share"], f"{summary['population_total']:,}",
                    result.max_minutes)


# The plan flags are config.FLAGS; this adds how each reads and what its help says, in --help
# order ("{default}" is PlanConfig's value). A field FLAGS gains without an entry here gets its
# reading from its type and its help from PlanConfig's docstring (`_derived_option`).
_PLAN_OPTIONS = {
    "target_pop": {"type": int, "help": "residents per community (default {default})"},
    "tolerance": {"type": float,
                  "help": "allowed relative deviation from the target, 0-1 (default {default})"},
    "max_minutes": {"type": float, "help": "service-circle limit in minutes (default {default:g})"},
    "walk_speed_kmh": {"type": float, "metavar": "WALK_SPEED_KMH",
                       "help": "walking speed in km/h, e.g. 3.0 for elderly residents (default "
                               "{default})"},
    "seed": {"type": int, "help": "default {default}"},
    "restarts": {"type": int, "help": "default {default}"},
    "tries": {"type": int, "help": "whole plans from seeds seed, seed+1, ...; the best wins "
                                   "(each try takes a plan's time; default {default})"},
    "candidate_spacing_m": {"type": float,
                            "help": "one candidate site for a new center per populated square of "
                                    "this side, m (default {default:g})"},
    "max_unit_pop": {"type": int, "help": "split cells with more residents onto network nodes, "
                                          "0: never (default {default})"},
    "exceptions": {"choices": EXCEPTION_MODES,
                   "help": "residents who provably cannot be in a balanced community (network "
                           "islands, remote pockets): communities of their own, or attached to "
                           "the bordering community as served remotely (default {default})"},
    "stability_minutes": {"type": float, "metavar": "STABILITY_MINUTES",
                          "help": "merge/split: per-resident cost, in walking minutes, of leaving "
                                  "one's old community; higher keeps more residents, lower "
                                  "balances more (default {default:g})"},
    "max_new_centers": {"type": int, "metavar": "N",
                        "help": "open at most N new sites; residents then beyond every open site "
                                "are reported as not covered (default: no limit)"},
    "new_center_cost": {"type": float, "metavar": "RESIDENTS",
                        "help": "what a new site costs, in residents in balanced communities: "
                                "plans with fewer new sites are also made and weighed (default 0: "
                                "not weighed)"},
    "grids": {"action": "store_const", "const": True,
              "help": "also split every community into grids (网格) with a grid station each"},
    "grid_target": {"type": int, "help": "residents per grid (default {default})"},
    "grid_tolerance": {"type": float,
                       "help": "allowed relative deviation of a grid, 0-1 (default {default})"},
    "grid_minutes": {"type": float,
                     "help": "walk from every resident to the grid station (default {default:g})"},
    "household_size": {"type": float, "help": "residents per household: gives each grid's "
                                              "households (default: none)"},
}
# argparse dest -> PlanConfig field of the plan flags: each flag's dest is its field (the test
# that flags and fields agree reads this).
_PLAN_FLAGS = {field: field for field, flag in FLAGS.items() if flag}
# Input flags of `covplan plan`; a scenario's [base] table names its inputs instead.
_INPUT_FLAGS = ("network", "population", "population_column", "communities", "centers", "districts")


def _plan_config(args: argparse.Namespace, base=None):
    """PlanConfig from the plan flags; flags left out (None) keep `base`'s values."""
    given = {field: getattr(args, field) for field, flag in FLAGS.items()
             if flag and getattr(args, field, None) is not None}
    if given.get("max_unit_pop") == 0:
        given["max_unit_pop"] = None
    return dataclasses.replace(base or PlanConfig(), **given)


def _plan_scenario(args: argparse.Namespace):
    """The scenario `covplan plan` runs: the --scenario file, or one made of the input flags."""
    from covplan.scenarios import Scenario, load_scenario

    if args.scenario:
        clash = [f"--{flag.replace('_', '-')}" for flag in _INPUT_FLAGS if getattr(args, flag)]
        if clash:
            msg = (f"{', '.join(clash)} cannot be combined with --scenario: the scenario's [base] "
                   "table names the inputs; edit it, or drop --scenario.")
            raise InputError(msg)
        return load_scenario(args.scenario)
    if not (args.network and args.population):
        msg = "covplan plan needs --network and --population, or --scenario FILE."
        raise InputError(msg)
    return Scenario.from_paths(network=args.network, population=args.population,
                               population_column=args.population_column, centers=args.centers,
                               communities=args.communities, districts=args.districts)


def _cmd_plan(args: argparse.Namespace) -> int:
    from covplan.output.files import write_json, write_plan_files
    from covplan.plan.replan import plan_inputs, replan_scenario
    from covplan.scenarios import apply_scenario, load_inputs, resolved_parameters, write_scenario

    started = time.perf_counter()
    scenario = _plan_scenario(args)
    base_plan = None
    if args.base_plan:
        from covplan.output.files import read_plan

        with _stage(args, "base plan"):
            base_plan = read_plan(args.base_plan)
    config = _plan_config(args, scenario.config(base_plan.config if base_plan else None))
    scenario = scenario.resolved(config)      # every parameter written out, for reproduction
    with _stage(args, "inputs (network, population, areas)"):
        inputs = load_inputs(scenario, config=config, progress=True)
    if base_plan is not None:
        if args.lock_centers:
            msg = ("--lock-centers applies to a full plan: drop --base-plan, or keep the centers "
                   "the base plan already uses (an incremental re-plan keeps what it can)")
            raise InputError(msg)
        with _stage(args, "re-plan (scenario changes, reach, partition, isochrones)"):
            plan = replan_scenario(base_plan, scenario, inputs=inputs, progress=True)
    else:
        with _stage(args, "scenario changes"):
            changed = apply_scenario(inputs, scenario)
        with _stage(args, "plan (reach, partition, isochrones)"):
            plan = plan_inputs(changed, progress=True, lock_centers=args.lock_centers)
    for issue in plan.report.get("rule_issues", []):
        logger.warning("%s", issue)
    with _stage(args, "writing"):
        stage = args.stage             # the folder goes to --out whole, when complete
        stage.plan_id = write_plan_files(
            plan, stage.path, base=_base_layer(inputs.network, inputs.layers.get("railway")),
            self_contained=not args.cdn_maps)
        write_scenario(scenario, stage.path / "scenario.toml")
        parameters = resolved_parameters(scenario, plan.config)
        if base_plan is not None:
            parameters["base_plan"] = str(args.base_plan)
        write_json(stage.path / "resolved.json", parameters)
        stage.commit()
    logger.info("Wrote %s: %s (%.1f s)", args.out, _plan_summary(plan),
                time.perf_counter() - started)
    return 0


def _rules_ceiling(report: dict) -> str:
    from covplan.metrics import rules_ceiling

    rules = rules_ceiling(report)
    return "" if rules is None else f", {100 * rules:.1f} % without tiny communities"


def _plan_summary(plan) -> str:
    """What a plan's headline percentages mean, for the last log line of plan and demo."""
    r, config = plan.report, plan.config
    covered = (f"{100 * r['coverage_share']:.1f} % of residents within {config.max_minutes:g} min "
               f"of their own community's center (ceiling {100 * r['coverage_ceiling']:.1f} %)")
    balanced = (f"{100 * r['within_tolerance_pop_share']:.1f} % of residents in communities within "
                f"{config.target_pop:,} ± {100 * config.tolerance:g} % "
                f"(ceiling {100 * r['within_tolerance_pop_share_ceiling']:.1f} %{_rules_ceiling(r)}; "
                f"{100 * r['within_tolerance_share']:.0f} % of communities)")
    parts = [f"{r['communities']} communities", covered, balanced]
    if r.get("exception_communities"):
        n = r["exception_communities"]
        parts.append(f"{n} exception communit{'y' if n == 1 else 'ies'}")
    if r.get("stability_share") is not None:
        parts.append(f"{100 * r['stability_share']:.1f} % of residents keep their community")
    return "; ".join(parts)


def _add_plan_options(p: argparse.ArgumentParser, *, overrides: bool = False) -> None:
    """The flags of PlanConfig (config.FLAGS), in `_PLAN_OPTIONS` order, then any other field
    FLAGS names. With `overrides`, a flag left out keeps the scenario's value."""
    defaults = PlanConfig()
    fields = {f.name: f for f in dataclasses.fields(PlanConfig)}
    named = [name for name in FLAGS if FLAGS[name] and name in fields]
    for name in sorted(named, key=lambda n: list(_PLAN_OPTIONS).index(n) if n in _PLAN_OPTIONS
                       else len(_PLAN_OPTIONS)):
        flag, value = FLAGS[name], getattr(defaults, name)
        option = dict(_PLAN_OPTIONS.get(name) or _derived_option(fields[name], value))
        option["help"] = option["help"].format(default=value)
        if option.get("action") is None and option.get("choices") is None:
            option.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())
        p.add_argument(flag, dest=name, default=None if overrides else value, **option)


def _derived_option(field: dataclasses.Field, value) -> dict:
    """argparse settings of a PlanConfig field `_PLAN_OPTIONS` does not list: a switch for a
    bool, else a value read as its annotated types allow (PlanConfig checks it), with the first
    sentence of the field's entry in PlanConfig's docstring as help."""
    kinds = [k.strip() for k in str(field.type).split("|") if k.strip() in ("int", "float", "str")]
    doc = _docstring_entry(PlanConfig.__doc__ or "", field.name)
    text = (doc[:1].lower() + doc[1:] if doc else f"PlanConfig.{field.name}").replace("%", "%%")
    if isinstance(value, bool):
        return {"action": "store_const", "const": True, "help": text}

    def convert(text: str):
        for kind in kinds or ["str"]:
            with contextlib.suppress(ValueError):
                return {"int": int, "float": float, "str": str}[kind](text)
        raise ValueError(text)

    convert.__name__ = " or ".join(kinds) or "str"      # argparse names it in its errors
    return {"type": convert, "help": f"{text} (default {value})"}


def _docstring_entry(doc: str, name: str) -> str:
    """The first sentence of `name`'s own entry (a line holding only the name, the text
    indented under it) in a numpydoc-style docstring, or ''."""
    lines = doc.splitlines()
    for at, line in enumerate(lines):
        if line.strip() == name:
            indent = len(line) - len(line.lstrip())
            body = []
            for text in lines[at + 1:]:
                if not text.strip() or len(text) - len(text.lstrip()) <= indent:
                    break
                body.append(text.strip())
            return " ".join(body).split(". ")[0].rstrip(".")
    return ""



def _cmd_compare(args: argparse.Namespace) -> int:
    from covplan.output.compare import compare_plans, write_comparison

    comparison = compare_plans(args.plan_a, args.plan_b)
    write_comparison(comparison, args.stage.path, self_contained=not args.cdn_maps)
    return 0


def _compare_out(args: argparse.Namespace) -> None:
    """--out must not be (or hold, or lie in) a compared plan's folder: it would replace it."""
    from covplan.output.compare import check_out_folder

    check_out_folder(args.out, args.plan_a, args.plan_b)


def _cmd_isochrones(args: argparse.Namespace) -> int:
    from covplan.inputs.areas import load_centers
    from covplan.inputs.network import load_network
    from covplan.output.files import write_layers
    from covplan.output.maps import isochrone_map, save_map
    from covplan.reach.isochrones import compute_isochrones, dissolve_isochrones

    network = load_network(args.network, walk_speed_kmh=args.walk_speed_kmh, progress=True)
    centers = load_centers(args.centers)
    isochrones = compute_isochrones(network, centers, minutes=_minutes_list(args.minutes),
                                    progress=True)
    out = args.stage.path
    write_layers(out / "isochrones.gpkg", {"isochrones": isochrones,
                                           "service_areas": dissolve_isochrones(isochrones),
                                           "centers": centers})
    save_map(isochrone_map(isochrones, centers), out / "map.html",
             self_contained=not args.cdn_maps)
    return 0


def _write_demo_scenario(out: Path, seed: int, config) -> None:
    """scenario.toml and resolved.json of the demo replay: `covplan plan --scenario` repeats it."""
    from covplan.output.files import write_json
    from covplan.scenarios import BaseInputs, Scenario, resolved_parameters, write_scenario

    scenario = Scenario(name="demo", base=BaseInputs(demo=True, demo_seed=seed),
                        description="The demo city replay (covplan demo)").resolved(config)
    write_scenario(scenario, out / "scenario.toml")
    write_json(out / "resolved.json", resolved_parameters(scenario, config))


def _cmd_demo(args: argparse.Namespace) -> int:
    from covplan.assess import assess_coverage
    from covplan.cities.demo import build_demo_city
    from covplan.inputs.areas import load_centers, load_communities, load_districts
    from covplan.inputs.network import load_network
    from covplan.inputs.population import load_population
    from covplan.reach.isochrones import compute_isochrones

    started = time.perf_counter()
    config = _plan_config(args)        # checks --seed and the rest before the city is built
    with _stage(args, "demo city"):
        if args.residents:     # a synthetic metropolis of that size instead (covplan.cities.metropolis)
            from covplan.cities.metropolis import build_metropolis

            city = build_metropolis(args.residents, seed=config.seed)
        else:
            city = build_demo_city(seed=config.seed)
    with _stage(args, "network"):
        network = load_network(city.graph, walk_speed_kmh=config.walk_speed_kmh)
    with _stage(args, "population"):
        population = load_population(city.population, population_column="population",
                                     id_column="cell_id")
    with _stage(args, "areas (centers, communities, districts)"):
        centers = load_centers(city.centers)
        communities = load_communities(city.communities)
        districts = load_districts(city.districts)
    with _stage(args, "as-is coverage (reach)"):
        result = assess_coverage(network, population, centers, communities=communities,
                                 max_minutes=config.max_minutes, progress=True)
    with _stage(args, "as-is isochrones"):
        isochrones = compute_isochrones(network, centers, minutes=[config.max_minutes],
                                        progress=True)
    out = args.stage.path              # as-is and plan files go to --out together
    base = _base_layer(network, city.railway)
    with _stage(args, "writing as-is"):
        _write_coverage(out, result, isochrones, title="asis", map_name="asis_map.html",
                        extra_layers={"districts": districts, "railway": city.railway},
                        base=base, self_contained=not args.cdn_maps)
    from covplan.output.files import write_plan_files
    from covplan.plan.pipeline import plan_communities

    with _stage(args, "plan (reach, partition, isochrones)"):
        plan = plan_communities(network, population, communities=communities, centers=centers,
                                districts=districts, config=config, progress=True)
    with _stage(args, "writing plan"):
        args.stage.plan_id = write_plan_files(plan, out, base=base,
                                              self_contained=not args.cdn_maps)
        if not args.residents:    # a scenario names the embedded demo only
            _write_demo_scenario(out, config.seed, plan.config)
        args.stage.commit()
    _log_coverage(Path(args.out), result)
    logger.info("Demo: %d old communities -> %s (%.1f s)", len(communities), _plan_summary(plan),
                time.perf_counter() - started)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from covplan.bench.engines import format_table, run_reach_benchmark
    from covplan.output.files import write_json

    network, population = _load_inputs(args)
    peers = tuple(p for p in args.peers.split(",") if p)
    report = run_reach_benchmark(network, population, max_minutes=args.minutes, peers=peers,
                                 networkx_origins=args.networkx_origins or None,
                                 rounds=args.rounds, warmup=args.warmup, rss=args.rss)
    print(format_table(report))
    if args.json:
        write_json(args.json, report)
    return 0


def _cmd_site(args: argparse.Namespace) -> int:
    import geopandas as gpd
    import pandas as pd
    from covplan.inputs.areas import label_units, load_centers, load_communities
    from covplan.output.files import write_json, write_layers
    from covplan.output.maps import isochrone_map, save_map
    from covplan.reach.isochrones import compute_isochrones
    from covplan.reach.matrix import compute_reach
    from covplan.solve.siting import choose_community_centers, site_new_centers

    if not args.communities and not args.budget:
        msg = "covplan site needs --communities (best center for each) and/or --budget N (new centers)."
        raise InputError(msg)
    network, population = _load_inputs(args)
    centers = load_centers(args.centers) if args.centers else None
    reach = compute_reach(network, population, centers=centers, max_minutes=args.minutes,
                          candidate_spacing_m=args.candidate_spacing, progress=True)
    out = args.stage.path
    layers, summary, points = {}, {"max_minutes": args.minutes}, []
    if args.communities:
        communities = load_communities(args.communities).reset_index(drop=True)
        labels = label_units(reach.units, communities)
        chosen = choose_community_centers(reach, labels, community_areas=communities.geometry)
        frame = chosen.centers
        frame.insert(0, "community_id", communities["community_id"].astype(str).to_numpy()[frame["community"]])
        layers["centers"] = frame.drop(columns="community")
        summary.update(communities=len(communities),
                       residents_in_communities=int(chosen.choice.population.sum()),
                       residents_within_limit=int(chosen.choice.covered.sum()),
                       residents_outside_communities=int(reach.pop[labels < 0].sum()))
        points.append(layers["centers"][["center_id", "geometry"]])
    if args.budget:
        placed = site_new_centers(reach, budget=args.budget)
        sites = placed.sites.assign(center_id=[f"new-{c}" for c in placed.sites["candidate_id"]])
        layers["new_sites"] = sites
        p = placed.placement
        summary.update(budget=args.budget, new_sites=len(sites),
                       covered_before=p.covered_before, covered_after=p.covered_after,
                       reachable=p.reachable, upper_bound=p.upper_bound, method=p.method)
        points.append(sites[["center_id", "geometry"]])
    shown = gpd.GeoDataFrame(pd.concat([frame.to_crs(population.crs) for frame in points],
                                       ignore_index=True), crs=population.crs)
    isochrones = compute_isochrones(network, shown, minutes=[args.minutes], progress=True)
    layers["isochrones"] = isochrones
    write_layers(out / "site.gpkg", layers)
    write_json(out / "site.json", summary)
    save_map(isochrone_map(isochrones, shown), out / "map.html", self_contained=not args.cdn_maps)
    args.stage.commit()
    logger.info("Wrote %s: %s", args.out, ", ".join(f"{k} {v}" for k, v in summary.items()))
    return 0


def _cmd_bench_plan(args: argparse.Namespace) -> int:
    from covplan.bench.planner import format_plan_table, run_plan_benchmark
    from covplan.inputs.network import load_network
    from covplan.inputs.population import load_population
    from covplan.output.files import write_json

    config = _plan_config(args)
    if args.suite:
        return _cmd_bench_suite(args, config)
    if not (args.network and args.population):
        msg = "covplan bench plan needs --network and --population, or --suite."
        raise InputError(msg)
    network = load_network(args.network, walk_speed_kmh=config.walk_speed_kmh, progress=True)
    population = load_population(args.population, **_population_options(args))
    peers = () if args.no_peers else tuple(p for p in args.peers.split(",") if p)
    report = run_plan_benchmark(
        network, population, config=config, peers=peers,
        maxp_level=args.maxp_level, maxp_floor=args.maxp_floor,
        existing_communities=args.existing, seed=config.seed,
        robustness_seeds=tuple(int(s) for s in args.robustness_seeds.split(",") if s),
        noise_draws=args.noise_draws, noise=args.noise, demo=not args.no_demo, progress=True)
    print(format_plan_table(report))
    if args.json:
        write_json(args.json, report)
    return 0


def _cmd_bench_suite(args: argparse.Namespace, config) -> int:
    from covplan.bench.suite import run_suite
    from covplan.output.files import write_json

    if args.network or args.population:
        msg = "--suite brings its own cities; drop --network and --population (see --cities)."
        raise InputError(msg)
    cities = [c.strip() for c in args.cities.split(",") if c.strip()] if args.cities else None
    grids = {"demo": None, "all": True, "none": False}[args.suite_grids]
    result = run_suite(cities, peers=not args.no_peers, config=config, progress=True, grids=grids)
    print(result.to_markdown())
    print(f"\nSuite wall time: {result.runtime_s:.0f} s")
    if args.json:
        write_json(args.json, result.to_dict())
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`.\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="covplan", description="Plan 15-minute service circles for neighbourhood communities.")
    parser.add_argument("--version", action="version", version=f"covplan {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output: debug messages and per-stage timings")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="replay the demo city: 69 uneven communities -> about 30")
    demo.add_argument("--residents", type=int, default=None, metavar="N",
                      help="plan a synthetic metropolis of N residents instead (districts, a "
                           "dense core, a river and a railway, existing communities)")
    _add_out_option(demo)
    _add_plan_options(demo)
    _add_map_option(demo)
    demo.set_defaults(func=_cmd_demo)

    _add_plan_parser(sub)
    _add_compare_parser(sub)
    _add_atlas_parser(sub)

    cov = sub.add_parser("coverage", help="as-is coverage of service centers")
    _add_network_options(cov)
    _add_population_options(cov)
    cov.add_argument("--centers", required=True, help="service-center points (any vector format)")
    cov.add_argument("--communities", default=None, help="existing community polygons")
    cov.add_argument("--minutes", type=float, default=DEFAULT_MAX_MINUTES,
                     help="service-circle limit")
    _add_out_option(cov)
    _add_map_option(cov)
    cov.set_defaults(func=_cmd_coverage)

    site = sub.add_parser("site", help="center siting alone: the best center of each community, "
                                       "and/or where N new centers cover the most residents")
    _add_network_options(site)
    _add_population_options(site)
    site.add_argument("--communities", default=None, help="communities to choose a center for")
    site.add_argument("--centers", default=None, help="existing centers (preferred when as good)")
    site.add_argument("--budget", type=int, default=0,
                      help="new centers to place where the most residents reach no open center")
    site.add_argument("--minutes", type=float, default=DEFAULT_MAX_MINUTES,
                      help="service-circle limit")
    site.add_argument("--candidate-spacing", type=float, default=DEFAULT_CANDIDATE_SPACING_M,
                      help="one candidate site per populated square of this side, m "
                           f"(default {DEFAULT_CANDIDATE_SPACING_M:g})")
    _add_out_option(site)
    _add_map_option(site)
    site.set_defaults(func=_cmd_site)

    iso = sub.add_parser("isochrones", help="walking isochrones around centers")
    _add_network_options(iso)
    iso.add_argument("--centers", required=True, help="service-center points (any vector format)")
    iso.add_argument("--minutes", default=",".join(f"{m:g}" for m in DEFAULT_BANDS),
                     help="limits, comma separated")
    _add_out_option(iso)
    _add_map_option(iso)
    iso.set_defaults(func=_cmd_isochrones)

    bench = sub.add_parser("bench", help="benchmarks against peer libraries (not tests)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    from covplan.bench.scale import add_scale_parser
    from covplan.sweep import add_sweep_parser

    add_sweep_parser(sub)
    add_scale_parser(bench_sub)
    bench_reach = bench_sub.add_parser("reach", help="walk-time engine vs scipy, networkx, pandana")
    _add_network_options(bench_reach)
    _add_population_options(bench_reach)
    bench_reach.add_argument("--minutes", type=float, default=DEFAULT_MAX_MINUTES)
    bench_reach.add_argument("--peers", default="scipy,networkx,pandana",
                             help="comma-separated peers to include")
    bench_reach.add_argument("--networkx-origins", type=int, default=500,
                             help="run networkx on N origins spread evenly through the sorted "
                                  "origins, timed per origin (0 = all; default 500)")
    bench_reach.add_argument("--rounds", type=int, default=5,
                             help="paired rounds (each peer right after a call of ours); ratios "
                                  "are their median (default 5)")
    bench_reach.add_argument("--no-warmup", dest="warmup", action="store_false",
                             help="no warm-up call before timing")
    bench_reach.add_argument("--no-rss", dest="rss", action="store_false",
                             help="skip the peak-RSS runs in fresh processes")
    bench_reach.add_argument("--json", default=None, help="also write the figures to this JSON file")
    bench_reach.set_defaults(func=_cmd_bench)

    bench_plan = bench_sub.add_parser(
        "plan", help="planner vs spopt Max-p and weighted k-means, one evaluator",
        description="Scores our redraw, merge/split from generated existing communities, spopt "
                    "Max-p and population-weighted k-means with one evaluator, plus robustness "
                    "runs and the demo replay. The peers run in this environment (pip install "
                    "\"coverage-planner[peers]\"). With --suite: the same for every suite city "
                    "(real data in ../shared/data, the demo, the synthetic cities) against each "
                    "city's coverage and balance ceilings, as one table.")
    bench_plan.add_argument("--network", default=None,
                            help="OSM PBF/XML file, or GraphML written by osmnx (not with --suite)")
    bench_plan.add_argument("--population", default=None,
                            help="population file (see plan; not with --suite)")
    bench_plan.add_argument("--population-column", default=None)
    _add_population_crs_option(bench_plan)
    _add_plan_options(bench_plan)
    bench_plan.add_argument("--peers", default="maxp,kmeans", help="comma-separated: maxp, kmeans")
    bench_plan.add_argument("--maxp-level", choices=["cells", "units"], default="cells",
                            help="Max-p on the source cells (default) or on the planner's units (slow)")
    bench_plan.add_argument("--maxp-floor", type=int, default=8_000)
    bench_plan.add_argument("--existing", type=int, default=65,
                            help="generated existing communities for merge/split mode")
    bench_plan.add_argument("--robustness-seeds", default="1,2",
                            help="other planner seeds for the robustness runs")
    bench_plan.add_argument("--noise-draws", type=int, default=2,
                            help="population draws with each cell scaled by 1 ± --noise")
    bench_plan.add_argument("--noise", type=float, default=0.01)
    bench_plan.add_argument("--no-demo", action="store_true", help="skip the demo replay")
    bench_plan.add_argument("--json", default=None, help="also write the figures to this JSON file")
    bench_plan.add_argument("--suite", action="store_true",
                            help="run the planner-quality suite over several cities instead")
    bench_plan.add_argument("--cities", default=None,
                            help="suite cities, comma-separated (default: sao_paulo, helsinki, "
                                 "chengdu, demo, core_fringe, river, linear, islands; beyond the "
                                 "suite also valleys, towns, motorway, sprawl, harbour)")
    bench_plan.add_argument("--no-peers", action="store_true", help="skip Max-p and k-means")
    bench_plan.add_argument("--suite-grids", choices=("demo", "all", "none"), default="demo",
                            help="with --suite: the grid-quality table for the demo (default), "
                                 "every city, or none")
    bench_plan.set_defaults(func=_cmd_bench_plan)
    return parser


def _add_plan_parser(sub) -> None:
    plan = sub.add_parser(
        "plan", help="merge, split or redraw communities of ~target residents",
        description="Plan communities from input files, or from a what-if scenario (--scenario). "
                    "With --scenario, plan flags given on the command line override the "
                    "scenario's [plan] values; the input flags (--network, ...) are not allowed "
                    "with it. DIR receives the plan plus scenario.toml and resolved.json: "
                    "`covplan plan --scenario DIR/scenario.toml` reproduces the plan.")
    plan.add_argument("--scenario", default=None,
                      help="scenario TOML: base inputs, [plan] values and [[changes]]")
    plan.add_argument("--base-plan", default=None, metavar="DIR",
                      help="re-plan incrementally from the plan in DIR (made from the same base "
                           "inputs): only communities the changes touch and their neighbours change")
    plan.add_argument("--network", default=None, help="OSM PBF/XML file, or GraphML written by osmnx")
    plan.add_argument("--population", default=None,
                      help="raster, vector grid/points or CSV (lon/lat or H3 ids)")
    plan.add_argument("--population-column", default=None, help="column holding counts (auto-detected)")
    plan.add_argument("--communities", default=None, help="existing communities (merge/split mode)")
    plan.add_argument("--centers", default=None, help="existing or candidate center sites")
    plan.add_argument("--districts", default=None, help="district limits no community may cross")
    plan.add_argument("--lock-centers", default=None, metavar="IDS",
                      help="existing centers that must stay open: center ids, comma-separated, "
                           "or 'all'; one the rules do not allow is reported, never closed silently")
    _add_out_option(plan)
    _add_plan_options(plan, overrides=True)
    _add_map_option(plan)
    plan.set_defaults(func=_cmd_plan)


def _cmd_atlas(args: argparse.Namespace) -> int:
    from covplan.output.atlas import write_atlas
    from covplan.output.folders import locked_folder, staged_file

    out = Path(args.out) if args.out else Path(args.plan) / "atlas.pdf"
    if out.suffix.lower() != ".pdf":
        msg = f"--out must name a .pdf file, got '{out}'; e.g. --out atlas.pdf."
        raise InputError(msg)
    started = time.perf_counter()
    # A plan folder: read_plan checks it (DataSourceError), and a `streets` line layer in its
    # plan.gpkg is drawn under each community; no network is loaded. Under the folder's lock,
    # as every command that writes an output folder, so a run replacing DIR waits its turn;
    # written beside and renamed, so an interrupted run never leaves half a PDF at --out.
    missing = (f"plan folder '{args.plan}' does not exist or is not a folder; pass the --out "
               "folder of `covplan plan` (it holds plan.gpkg and report.json).")
    with (locked_folder(args.plan, busy="wait for it, then run covplan atlas again",
                        missing=missing),
          staged_file(out) as partial):
        write_atlas(args.plan, partial, title=args.title, progress=True)
    logger.info("Atlas of %s written to %s (%.1f s)", args.plan, out, time.perf_counter() - started)
    return 0


def _add_atlas_parser(sub) -> None:
    atlas = sub.add_parser("atlas", help="printable PDF atlas of a plan: an overview page and one "
                                         "page per community (A4 landscape)")
    atlas.add_argument("plan", metavar="DIR", help="plan folder written by `covplan plan`")
    atlas.add_argument("--out", default=None, help="PDF file to write (default DIR/atlas.pdf)")
    atlas.add_argument("--title", default=None,
                       help="title of the overview page (default: Community plan: N communities)")
    atlas.set_defaults(func=_cmd_atlas)


def _add_compare_parser(sub) -> None:
    compare = sub.add_parser("compare", help="compare two plans: table and map of what changed")
    compare.add_argument("plan_a", metavar="DIR_A", help="plan folder written by `covplan plan`")
    compare.add_argument("plan_b", metavar="DIR_B", help="plan folder to compare with DIR_A")
    _add_out_option(compare)
    _add_map_option(compare)
    compare.set_defaults(func=_cmd_compare, check_out=_compare_out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `covplan`; returns the exit code: 2 for errors in the input (one line on
    stderr), 130 when interrupted (Ctrl-C). A command that writes a folder gets ``args.stage``:
    --out is checked and locked before any computation, and written whole or not at all."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # --help, --version (0) or a one-line usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    _configure_logging(args.verbose - args.quiet)
    writes = getattr(args, "writes_folder", False)
    try:
        if not writes:
            return args.func(args)
        from covplan.output.files import output_folder

        if (check_out := getattr(args, "check_out", None)) is not None:
            check_out(args)          # before the folder is locked or staged
        with output_folder(args.out, force=args.force) as args.stage:
            return args.func(args)
    except CoverageError as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split())
        print(f"covplan {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        stage = getattr(args, "stage", None)
        if not writes:
            where = ""
        elif stage is not None and stage.committed:      # Ctrl-C after the folder was moved in
            where = f"; {args.out} was already written"
        else:
            where = f"; {args.out} left unchanged"
        print(f"covplan {args.command}: interrupted{where}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
