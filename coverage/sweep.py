"""
Scenario sweeps: many what-ifs over one base, planned one after the other or on any executor
(a Dask cluster through ``distributed.Client.get_executor()``, or a process pool).

A sweep file (SWEEP.toml) names one base scenario and the scenarios made from it, as a list,
a grid (every combination), or both; paths are relative to the file:

    name = "demo-what-ifs"
    base = "demo"                  # the embedded demo city, or: scenario = "base.toml"
    [plan]                         # optional: [plan] values of every scenario
    restarts = 2
    [grid]                         # any [plan] key, and closed_centers
    target_pop = { from = 8000, to = 12000, step = 2000 }
    walk_speed_kmh = [3.6, 4.5]
    closed_centers = [[], ["S05", "S12"]]
    [[scenarios]]                  # and/or single scenarios
    name = "elderly"
    walk_speed_kmh = 3.0
    closed_centers = ["S31"]       # `scenario = "other.toml"`: a scenario file on the same base

Every scenario is planned exactly as `covplan plan --scenario` plans it alone (the base inputs
with its changes, `plan_inputs`), so a sweep's plans equal the single runs. One scenario's
failure (a center id that does not exist, an infeasible target) is recorded with its message;
the others go on.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import difflib
import itertools
import logging
import math
import os
import re
import socket
import time
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from covplan._parallel import usable_cpus
from covplan.config import PlanConfig
from covplan.errors import CoverageError, DataSourceError, InputError

# pandas, geopandas and covplan.scenarios are imported where used: `covplan --help` builds
# this command's parser and must stay quick.
if TYPE_CHECKING:
    import argparse

    import geopandas as gpd
    import pandas as pd
    from covplan.plan.pipeline import Plan
    from covplan.scenarios import Scenario, ScenarioInputs

__all__ = ["ScenarioResult", "Sweep", "iter_scenarios", "load_sweep", "plan_scenarios",
           "summary_table", "write_sweep"]

logger = logging.getLogger(__name__)

CLOSED = "closed_centers"                    # the one axis that is no [plan] key
_PLAN_KEYS = (*(f.name for f in dataclasses.fields(PlanConfig)), "use_districts")
_ENTRY_KEYS = ("name", "description", "scenario", CLOSED, *_PLAN_KEYS)
# Short names of common axes in grid scenario names, e.g. "target=8000_speed=3.6_closed=S05".
_SHORT = {"target_pop": "target", "walk_speed_kmh": "speed", "max_minutes": "minutes",
          CLOSED: "closed"}
_REPORT_COLUMNS = ("communities", "coverage_share", "within_tolerance_pop_share",
                   "stability_share", "exception_communities", "population_total")
_CHART_SERIES = (("coverage_share", "coverage (within the walk limit)"),
                 ("within_tolerance_pop_share", "balance (residents in the band)"),
                 ("stability_share", "stability (residents keeping their community)"))


# ---- the sweep -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sweep:
    """A base scenario and the scenarios made from it; `parameters` says what each varies."""

    name: str
    base: Scenario
    scenarios: tuple[Scenario, ...]
    parameters: tuple[tuple[tuple[str, Any], ...], ...]    # per scenario: (key, value) pairs
    source: str = ""


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """
    Read a sweep file (see the module docstring) into a `Sweep`.

    Raises
    ------
    DataSourceError
        If the file or its base scenario file cannot be read.
    InputError
        If it is not valid TOML, a key is unknown, a value is bad (a [plan] value outside its
        range, a grid axis that is not a list), names repeat, or a listed scenario file has
        another base; the message names the key, e.g. ``grid.target_pop``.
    """
    file = Path(path)
    label = f"sweep '{os.fspath(path)}'"
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"{label} cannot be read: {exc.strerror or exc}; check the path."
        raise DataSourceError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{label} is not valid TOML: {exc}."
        raise InputError(msg) from None
    _known(doc, ("name", "description", "base", "scenario", "plan", "grid", "scenarios"),
           "top level", label)
    folder = file.resolve().parent
    base = _base_scenario(doc, folder, label)
    plan = doc.get("plan", {})
    if not isinstance(plan, dict):
        raise InputError(f"{label}: [plan] must be a table of plan values, e.g. restarts = 2.")
    base = _with(base, plan, [], name=base.name, where=f"{label}: [plan]")
    made: list[tuple[Scenario, tuple]] = []
    entries = doc.get("scenarios", [])
    if not isinstance(entries, list):
        raise InputError(f"{label}: `scenarios` must be an array of tables ([[scenarios]]).")
    for k, entry in enumerate(entries):
        made.append(_listed(entry, k, base, folder, label))
    if "grid" in doc:
        made += _grid(doc["grid"], base, label)
    if not made:
        raise InputError(f"{label}: no scenarios; add a [grid] table (e.g. target_pop = [8000, "
                         "10000]) or [[scenarios]] entries.")
    names = [s.name for s, _ in made]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"{label}: scenario names repeat ({', '.join(repeated)}); give each "
                         "[[scenarios]] entry its own `name`.")
    name = doc.get("name", file.stem)
    logger.info("Sweep %r from %s: %d scenarios", name, path, len(made))
    return Sweep(name=str(name), base=base, scenarios=tuple(s for s, _ in made),
                 parameters=tuple(p for _, p in made), source=os.fspath(path))


def _known(table: Any, allowed: Sequence[str], where: str, label: str) -> None:
    if not isinstance(table, dict):
        raise InputError(f"{label}: {where} must be a table, got {type(table).__name__}.")
    for key in table:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            raise InputError(f"{label}: {where}: unknown key '{key}'; "
                             + (f"did you mean '{hint[0]}'? " if hint else "")
                             + f"allowed keys: {', '.join(allowed)}.")


def _base_scenario(doc: dict, folder: Path, label: str) -> Scenario:
    from covplan.scenarios import BaseInputs, Scenario, load_scenario

    if ("base" in doc) == ("scenario" in doc):
        raise InputError(f"{label}: give exactly one of base = \"demo\" and scenario = "
                         "\"base.toml\" (a scenario file naming the base inputs).")
    name = str(doc.get("name", "sweep"))
    if "base" in doc:
        if doc["base"] != "demo":
            raise InputError(f"{label}: base = {doc['base']!r}: the only named base is "
                             "\"demo\"; for files write a scenario file and give scenario = "
                             "\"that.toml\".")
        return Scenario(name=name, base=BaseInputs(demo=True),
                        description=str(doc.get("description", "")))
    if not isinstance(doc["scenario"], str):
        raise InputError(f"{label}: scenario must be a path to a scenario TOML file.")
    return load_scenario(folder / doc["scenario"])


def _with(base: Scenario, plan: dict, closed: list[str], *, name: str, where: str) -> Scenario:
    """`base` with more [plan] values and centers closed, checked now (InputError at `where`)."""
    from covplan.scenarios import RemoveCenter

    try:
        scenario = base.with_plan(**plan)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    removals = tuple(RemoveCenter(len(base.changes) + k, c) for k, c in enumerate(closed))
    scenario = dataclasses.replace(scenario, name=name, changes=base.changes + removals,
                                   source="")
    if not isinstance(scenario.options.get("use_districts", True), bool):
        raise InputError(f"{where}: use_districts must be true or false.")
    try:
        scenario.config()
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    return scenario


def _closed(value: Any, where: str) -> list[str]:
    """closed_centers: one id, or a list of ids ([] or "" closes none)."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise InputError(f"{where}: must be a center id or a list of center ids, e.g. "
                     f"[\"S05\", \"S12\"]; got {value!r}.")


def _listed(entry: Any, k: int, base: Scenario, folder: Path, label: str,
            ) -> tuple[Scenario, tuple]:
    from covplan.scenarios import load_scenario

    where = f"{label}: scenarios[{k}]"
    _known(entry, _ENTRY_KEYS, f"scenarios[{k}]", label)
    own = base
    if "scenario" in entry:
        own = load_scenario(folder / str(entry["scenario"]))
        if own.base != base.base:
            raise InputError(f"{where}.scenario: its base inputs differ from the sweep's; a "
                             "sweep plans every scenario on one base (one set of inputs).")
        own = own.with_plan(**base.options | own.options)
    plan = {key: v for key, v in entry.items()
            if key not in ("name", "description", "scenario", CLOSED)}
    closed = _closed(entry.get(CLOSED, []), f"{where}.{CLOSED}")
    name = str(entry.get("name", own.name if "scenario" in entry else f"scenario-{k + 1}"))
    scenario = _with(own, plan, closed, name=name, where=where)
    if "description" in entry:
        scenario = dataclasses.replace(scenario, description=str(entry["description"]))
    parameters = tuple(plan.items()) + (((CLOSED, " ".join(closed)),) if closed else ())
    if "scenario" in entry:
        parameters = (("scenario", str(entry["scenario"])),) + parameters
    return scenario, parameters


def _grid(grid: Any, base: Scenario, label: str) -> list[tuple[Scenario, tuple]]:
    _known(grid, (*_PLAN_KEYS, CLOSED), "[grid]", label)
    if not grid:
        raise InputError(f"{label}: [grid] has no axes; add one, e.g. target_pop = "
                         "[8000, 10000].")
    axes = {key: _axis(values, f"grid.{key}", label) for key, values in grid.items()}
    made = []
    for combo in itertools.product(*axes.values()):
        chosen = dict(zip(axes, combo))
        closed = _closed(chosen.pop(CLOSED, []), f"{label}: grid.{CLOSED}")
        parameters = tuple(chosen.items()) + ((CLOSED, " ".join(closed)),) * (CLOSED in axes)
        name = "_".join(f"{_SHORT.get(k, k)}={_text(v) or 'none'}" for k, v in parameters)
        made.append((_with(base, chosen, closed, name=name, where=f"{label}: grid ({name})"),
                     parameters))
    return made


def _axis(values: Any, key: str, label: str) -> list:
    """A grid axis: a list of values, or {from, to, step} (both ends included)."""
    where = f"{label}: {key}"
    if isinstance(values, dict):
        _known(values, ("from", "to", "step"), key, label)
        try:
            start, stop, step = (values[k] for k in ("from", "to", "step"))
            count = math.floor((stop - start) / step + 1e-9) + 1
        except (KeyError, TypeError, ZeroDivisionError):
            raise InputError(f"{where}: a range needs numbers from, to and step > 0, e.g. "
                             "{ from = 8000, to = 12000, step = 2000 }.") from None
        if step <= 0 or count < 1:
            raise InputError(f"{where}: step must be > 0 and from <= to; got {values!r}.")
        whole = all(isinstance(v, int) for v in (start, step))
        return [start + i * step if whole else round(start + i * step, 10) for i in range(count)]
    if not isinstance(values, list) or not values:
        raise InputError(f"{where}: must be a non-empty list of values, or a range "
                         "{ from = ..., to = ..., step = ... }.")
    return values


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value).replace(" ", "+")


# ---- planning ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, eq=False)
class ScenarioResult:
    """One scenario of a sweep: its plan, or why it has none."""

    index: int                     # position in the sweep
    scenario: Scenario             # with every [plan] value written out once planned
    plan: Plan | None
    status: str                    # "ok", "failed" (its inputs or rules), "error" (a bug, a lost worker)
    error: str                     # the one-line message when not "ok"
    runtime_s: float
    worker: str                    # host:pid that planned it


def plan_scenarios(scenarios: Iterable[Scenario], inputs: ScenarioInputs, *,
                   executor: Any = None, progress: bool = False,
                   timeout_s: float | None = None) -> list[ScenarioResult]:
    """
    Plan every scenario on the shared base `inputs`; results in the scenarios' order.

    Parameters
    ----------
    scenarios
        Scenarios over one base (e.g. ``load_sweep(path).scenarios``).
    inputs
        Their base inputs, loaded once (``load_inputs(scenarios[0])``).
    executor
        None plans one after the other here. Any `concurrent.futures.Executor` plans them in
        parallel: a `distributed.Client` (or its ``get_executor()``) gets the inputs once per
        worker (``scatter(broadcast=True)``); other executors get them with every task.
    progress
        A progress bar over the scenarios (on a terminal only).
    timeout_s
        With an executor: scenarios not planned this many seconds after the start are given
        up (status "error"); None waits for every one.

    Returns
    -------
    list of ScenarioResult
        A failed scenario has ``plan=None`` and its message; the others are unaffected.
    """
    return sorted(iter_scenarios(scenarios, inputs, executor=executor, progress=progress,
                                 timeout_s=timeout_s), key=lambda r: r.index)


def iter_scenarios(scenarios: Iterable[Scenario], inputs: ScenarioInputs, *,
                   executor: Any = None, progress: bool = False,
                   timeout_s: float | None = None) -> Iterator[ScenarioResult]:
    """`plan_scenarios` yielding each result as it completes, so it can be written and
    dropped while the others run."""
    from covplan._progress import progress_bar

    scenarios = list(scenarios)
    bases = {s.base for s in scenarios}
    if len(bases) > 1:
        raise InputError(f"the scenarios name {len(bases)} different bases; a sweep plans every "
                         "scenario on one base (scenario files with the same [base]).")
    if executor is None:
        for i, scenario in progress_bar(enumerate(scenarios), desc="scenarios",
                                        total=len(scenarios), progress=progress):
            yield plan_one(i, scenario, inputs)
        return
    if hasattr(executor, "get_executor"):          # a distributed.Client itself
        executor = executor.get_executor()
    shared = _share(executor, inputs)
    futures = {executor.submit(plan_one, i, s, shared): i for i, s in enumerate(scenarios)}
    pending = set(futures.values())
    try:
        for future in progress_bar(cf.as_completed(futures, timeout=timeout_s), desc="scenarios",
                                   total=len(futures), progress=progress):
            i = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - the task never ended: a lost worker
                result = ScenarioResult(i, scenarios[i], None, "error", _one_line(exc),
                                        math.nan, "")
            pending.discard(i)
            yield result
    except cf.TimeoutError:
        for i in sorted(pending):
            yield ScenarioResult(i, scenarios[i], None, "error",
                                 f"not planned within {timeout_s:g} s (timeout_s=): the cluster "
                                 "is busy, or its workers cannot run this covplan", math.nan, "")
    finally:
        for future in futures:
            future.cancel()


def _share(executor: Any, inputs: ScenarioInputs) -> Any:
    """The inputs once on every Dask worker (a future tasks resolve there), else as they are."""
    client = getattr(executor, "_client", None)    # distributed's ClientExecutor keeps it here
    if client is None or not hasattr(client, "scatter"):
        return inputs
    # Workers with another covplan could not read the inputs, and Dask would retry for ever.
    mine = _wire_layout()
    other = sorted(w for w, layout in client.run(_wire_layout).items() if layout != mine)
    if other:
        from covplan import __version__

        raise InputError(f"Dask workers {', '.join(other)} run another covplan than this process "
                         f"({__version__}): its data classes differ, so they could not read the "
                         "inputs. Install the same covplan on every worker (--scheduler), or "
                         "restart the cluster after an upgrade.")
    return client.scatter(inputs, broadcast=True, hash=False)


def _wire_layout() -> str:
    """The version and the fields of every class a sweep sends to workers and back, as this
    process imported them."""
    from covplan import __version__
    from covplan.inputs.network import WalkNetwork
    from covplan.inputs.population import Population
    from covplan.plan.pipeline import Plan
    from covplan.scenarios import BaseInputs, Scenario, ScenarioInputs

    classes = (PlanConfig, ScenarioInputs, Scenario, BaseInputs, WalkNetwork, Population, Plan,
               ScenarioResult)
    return repr((__version__, [(c.__name__, [f.name for f in dataclasses.fields(c)])
                               for c in classes]))


def plan_one(index: int, scenario: Scenario, inputs: ScenarioInputs) -> ScenarioResult:
    """Plan one scenario as `covplan plan --scenario` does (the task a sweep runs)."""
    from covplan.plan.replan import plan_inputs
    from covplan.scenarios import apply_scenario

    started = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        changed = apply_scenario(inputs, scenario)
        plan = plan_inputs(changed)
    except CoverageError as exc:
        logger.warning("Scenario %r failed: %s", scenario.name, exc)
        return ScenarioResult(index, scenario, None, "failed", _one_line(exc),
                              time.perf_counter() - started, worker)
    except Exception as exc:     # a bug in one scenario must not cost the others their plans
        logger.exception("Scenario %r stopped with an unexpected error", scenario.name)
        return ScenarioResult(index, scenario, None, "error", _one_line(exc),
                              time.perf_counter() - started, worker)
    return ScenarioResult(index, scenario.resolved(plan.config), plan, "ok", "",
                          time.perf_counter() - started, worker)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, CoverageError) else f"{type(exc).__name__}: {text}"


# ---- outputs -------------------------------------------------------------------------------
def folder_name(index: int, scenario: Scenario) -> str:
    """The scenario's plan folder under plans/: its position and name, safe on every system."""
    slug = re.sub(r"[^A-Za-z0-9._=+-]+", "_", scenario.name).strip("._") or "scenario"
    return f"{index + 1:03d}_{slug[:80]}"


def summary_row(result: ScenarioResult, parameters: Sequence[tuple[str, Any]] = ()) -> dict:
    """One line of summary.csv: name, parameters, the plan's headline figures, time, status."""
    row: dict[str, Any] = {"scenario": result.scenario.name,
                           "folder": f"plans/{folder_name(result.index, result.scenario)}"
                           if result.plan is not None else "",
                           "status": result.status}
    row.update(parameters)
    report = result.plan.report if result.plan is not None else {}
    row.update({key: report.get(key) for key in _REPORT_COLUMNS})
    from covplan.output.files import plan_id

    row.update(runtime_s=round(result.runtime_s, 2),
               plan_id=plan_id(result.plan) if result.plan is not None else "",
               worker=result.worker, error=result.error)
    return row


def summary_table(results: Sequence[ScenarioResult],
                  parameters: Sequence[Sequence[tuple[str, Any]]] | None = None) -> pd.DataFrame:
    """summary.csv as a DataFrame, one row per scenario in sweep order."""
    import pandas as pd

    parameters = parameters or [()] * len(results)
    rows = [summary_row(r, parameters[r.index] if r.index < len(parameters) else ())
            for r in sorted(results, key=lambda r: r.index)]
    return pd.DataFrame(rows)


def write_result(result: ScenarioResult, folder: Path, *, base: gpd.GeoDataFrame | None = None,
                 self_contained: bool = True, geoparquet: bool = False) -> None:
    """
    A planned scenario's outputs in the sweep folder: plans/NNN_name/ (the plan folder of
    `covplan plan --scenario`, with scenario.toml and resolved.json) and, with `geoparquet`,
    communities/NNN_name.parquet (its communities and a `scenario` column).
    """
    from covplan.output.files import (
        as_multipolygons,
        output_folder,
        write_json,
        write_plan_files,
    )
    from covplan.scenarios import resolved_parameters, write_scenario

    if result.plan is None:
        return
    name = folder_name(result.index, result.scenario)
    with output_folder(folder / "plans" / name) as stage:
        stage.plan_id = write_plan_files(result.plan, stage.path, base=base,
                                         self_contained=self_contained)
        write_scenario(result.scenario, stage.path / "scenario.toml")
        write_json(stage.path / "resolved.json",
                   resolved_parameters(result.scenario, result.plan.config))
    if geoparquet:
        table = as_multipolygons(result.plan.communities)
        table.insert(0, "scenario", result.scenario.name)
        for column in table.columns.drop(table.geometry.name):
            if table[column].dtype == object:   # one schema in every file, for dask-geopandas
                table[column] = table[column].astype("string")
        (folder / "communities").mkdir(exist_ok=True)
        table.to_parquet(folder / "communities" / f"{name}.parquet", index=False)


def write_summary(table: pd.DataFrame, folder: Path, *, title: str = "Sweep") -> None:
    """summary.csv and summary.png (coverage, balance and stability of each scenario)."""
    table.to_csv(folder / "summary.csv", index=False)
    summary_chart(table, title=title).savefig(folder / "summary.png", dpi=110,
                                              bbox_inches="tight")
    logger.info("Wrote %s and %s", folder / "summary.csv", folder / "summary.png")


def summary_chart(table: pd.DataFrame, *, title: str = "Sweep"):
    """A matplotlib Figure: per scenario, bars of coverage, balance and stability in %."""
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    n = len(table)
    fig = Figure(figsize=(9, 1.2 + 0.45 * n))
    ax = fig.subplots()
    y = np.arange(n)
    for k, (column, label) in enumerate(_CHART_SERIES):
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float) * 100
        ax.barh(y + (k - 1) * 0.27, np.nan_to_num(values), height=0.27, label=label)
    for row, status in enumerate(table["status"]):
        if status != "ok":
            ax.text(1, row, f"{status}: see summary.csv", va="center", fontsize=8, color="red")
    ax.set_yticks(y, table["scenario"].astype(str), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of residents")
    ax.set_title(title)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.02 + 0.4 / (1 + n)), ncol=3,
              fontsize=8, frameon=False)
    return fig


def write_sweep(results: Sequence[ScenarioResult], out: str | os.PathLike[str], *,
                sweep: Sweep | None = None, base: gpd.GeoDataFrame | None = None,
                self_contained: bool = True, geoparquet: bool = False,
                force: bool = False) -> Path:
    """
    Write a sweep folder: plans/ (one plan folder per planned scenario), summary.csv,
    summary.png and, with `geoparquet` (needs pyarrow), communities/*.parquet. The folder is
    written whole or not at all (`covplan.output.files.output_folder`).
    """
    from covplan.output.files import output_folder

    _check_geoparquet(geoparquet)
    with output_folder(out, force=force) as stage:
        for result in results:
            write_result(result, stage.path, base=base, self_contained=self_contained,
                         geoparquet=geoparquet)
        write_summary(summary_table(results, sweep.parameters if sweep else None), stage.path,
                      title=sweep.name if sweep else "Sweep")
    return Path(out)


def _check_geoparquet(wanted: bool) -> None:
    import importlib.util

    if wanted and importlib.util.find_spec("pyarrow") is None:
        raise InputError("GeoParquet outputs need pyarrow: pip install pyarrow, or drop "
                         "--geoparquet / geoparquet=True.")


# ---- the command ---------------------------------------------------------------------------
def add_sweep_parser(sub: Any) -> None:
    """`covplan sweep SWEEP.toml --out DIR [--scheduler ADDRESS | --workers N]`."""
    p = sub.add_parser(
        "sweep", help="plan many what-if scenarios (a list or a grid) on a Dask cluster",
        description="Plan every scenario of SWEEP.toml (see covplan.sweep) on its base inputs, "
                    "loaded once: on a local Dask cluster by default, on an existing one with "
                    "--scheduler, or here one after the other with --workers 0. DIR receives "
                    "plans/NNN_name/ (one plan folder per scenario, as covplan plan --scenario "
                    "writes it), summary.csv and summary.png. A failing scenario is listed "
                    "there with its error; the others are planned.")
    p.add_argument("sweep", metavar="SWEEP.toml", help="the sweep file")
    p.add_argument("--out", required=True, help="output folder, written whole when complete")
    p.add_argument("--force", action="store_true",
                   help="write into --out even if it holds files covplan did not write")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="plan on an existing dask.distributed cluster, e.g. "
                            "tcp://host:8786 (its workers need this covplan version)")
    where.add_argument("--workers", type=int, default=None, metavar="N",
                       help="worker processes of the local Dask cluster (default: one per "
                            "core, at most one per scenario); 0: plan here without Dask")
    p.add_argument("--geoparquet", action="store_true",
                   help="also write communities/NNN_name.parquet per scenario (needs pyarrow), "
                        "readable at once with dask_geopandas.read_parquet")
    p.add_argument("--cdn-maps", action="store_true",
                   help="link Leaflet from CDNs instead of embedding it in every map")
    p.set_defaults(func=run_sweep_command, writes_folder=True)


def run_sweep_command(args: argparse.Namespace) -> int:
    """The `covplan sweep` handler; returns 0 when every scenario was planned, 1 otherwise."""
    import pandas as pd
    from covplan.output.basemap import base_layer
    from covplan.output.files import output_folder
    from covplan.scenarios import load_inputs

    started = time.perf_counter()
    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be 0 (no Dask) or more, got {args.workers}.")
    _check_geoparquet(args.geoparquet)
    sweep = load_sweep(args.sweep)
    inputs = load_inputs(sweep.base, progress=True)
    railway = inputs.layers.get("railway")
    base = base_layer(inputs.network,
                      features=None if railway is None else railway.assign(kind="railway"))
    rows: dict[int, dict] = {}
    with contextlib.ExitStack() as stack:
        stage = getattr(args, "stage", None)     # covplan's main has staged --out already
        if stage is None:
            stage = stack.enter_context(output_folder(args.out, force=args.force))
        executor = stack.enter_context(_executor(args, len(sweep.scenarios)))
        for result in iter_scenarios(sweep.scenarios, inputs, executor=executor, progress=True):
            write_result(result, stage.path, base=base, self_contained=not args.cdn_maps,
                         geoparquet=args.geoparquet)
            rows[result.index] = summary_row(result, sweep.parameters[result.index])
            logger.info("Scenario %d/%d %r: %s (%.1f s)", len(rows), len(sweep.scenarios),
                        result.scenario.name, result.error if result.plan is None
                        else _headline(result.plan), result.runtime_s)
        table = pd.DataFrame([rows[i] for i in sorted(rows)])   # plans written and dropped
        write_summary(table, stage.path, title=sweep.name)
        stage.commit()
    failed = table[table["status"] != "ok"]
    for row in failed.itertuples():
        logger.warning("Scenario %r %s: %s", row.scenario, row.status, row.error)
    logger.info("Wrote %s: %d of %d scenarios planned (%.1f s)", args.out,
                len(table) - len(failed), len(table), time.perf_counter() - started)
    return 0 if failed.empty else 1


def _headline(plan: Plan) -> str:
    r = plan.report
    stability = r.get("stability_share")
    return (f"{r['communities']} communities, coverage {100 * r['coverage_share']:.1f} %, "
            f"in band {100 * r['within_tolerance_pop_share']:.1f} %"
            + (f", stability {100 * stability:.1f} %" if stability is not None else ""))


@contextlib.contextmanager
def _executor(args: argparse.Namespace, n_scenarios: int) -> Iterator[Any]:
    """None (--workers 0), a Client of --scheduler, or a LocalCluster's Client, closed after."""
    if args.workers == 0:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("covplan sweep runs on Dask: pip install \"dask[distributed]\", or pass "
                         "--workers 0 to plan the scenarios here one after the other.") from None
    if args.scheduler:
        try:
            client = Client(args.scheduler, timeout="20s")
        except OSError as exc:
            raise DataSourceError(f"cannot reach the Dask scheduler --scheduler "
                                  f"{args.scheduler}: {exc}; check the address and that it "
                                  "runs.") from exc
        with client:
            yield client.get_executor()
        return
    workers = args.workers or max(1, min(usable_cpus(), n_scenarios))
    # One thread per worker process: the planner is CPU-bound Python and numpy.
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        logger.info("Local Dask cluster: %d worker processes", workers)
        yield client.get_executor()
