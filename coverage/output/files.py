"""
Plan folders: the files of a plan written (`write_plan`) and read back (`read_plan`).

The plain writers (GeoPackage layers, JSON) are in `covplan.output.writers`, the atomic-folder
machinery (lock, staging, swap, manifest) in `covplan.output.folders`; their public names are
re-exported here, where callers have always imported them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import pandas as pd
import pyogrio
from covplan.errors import DataSourceError
from covplan.metrics import parse_previous_ids
from covplan.output.folders import (
    MANIFEST,
    OUTPUT_FILES,
    OUTPUT_FOLDERS,
    PLAN_FOLDER_FILES,
    OutputStage,
    file_sha256,
    folders_aside,
    output_folder,
    prepare_folder,
)
from covplan.output.writers import (
    as_multipolygons,
    fault_point,
    plain_value,
    write_json,
    write_layers,
)

if TYPE_CHECKING:
    from covplan.plan.pipeline import Plan

# The names of writers and folders are re-exported: callers import them from here.
__all__ = ["MANIFEST", "OUTPUT_FILES", "OUTPUT_FOLDERS", "PLAN_FOLDER_FILES", "OutputStage",
           "as_multipolygons", "community_rows", "output_folder", "plan_id", "prepare_folder",
           "read_plan", "report_document", "write_community_tables", "write_json",
           "write_layers", "write_plan", "write_plan_files"]

logger = logging.getLogger(__name__)


# Residents are `population` in every layer and file of a plan folder. In memory the units keep
# `pop` (as every planner module reads it) and the changes `residents`: renamed when written,
# back when read.
_WRITTEN_NAMES = {"units": {"pop": "population"}, "changes": {"residents": "population"}}


def _units_layer(units: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The units as written: `population` for `pop`."""
    return units.rename(columns=_WRITTEN_NAMES["units"])


def _list_column(cell, counts: dict[str, int] | None) -> tuple[str, str]:
    """The previous communities of one community as ("C03;C07", "4512;2100"), largest first."""
    if counts is None:          # no changes table: read the readable column, 'C03 (4,512); …'
        counts = parse_previous_ids(cell)
    order = sorted(counts, key=lambda k: (-counts[k], k))
    return ";".join(order), ";".join(str(int(counts[k])) for k in order)


def community_rows(plan) -> pd.DataFrame:
    """
    The communities layer without geometry, machine-readable (communities.csv / .xlsx).

    Every column of the layer, numbers as numbers (never formatted), except ``previous_ids``:
    the ids of the old communities contributing residents, separated by ";" and largest first
    (no counts), with ``previous_population`` the matching resident counts, also separated by
    ";" (both empty without existing communities). The layer keeps the readable
    'C03 (4,512); C07 (2,100)'.
    """
    table = pd.DataFrame(plan.communities.drop(columns=plan.communities.geometry.name))
    if "previous_ids" not in table:
        return table
    flows = None
    if plan.changes is not None and {"old_community_id", "new_community_id"} <= set(plan.changes):
        ch = plan.changes.rename(columns=_WRITTEN_NAMES["changes"])
        ch = ch[(ch["old_community_id"] != "(none)") & (ch["population"] > 0)]
        flows = {str(new): dict(zip(part["old_community_id"].astype(str), part["population"]))
                 for new, part in ch.groupby("new_community_id")}
    pairs = [_list_column(cell, None if flows is None else flows.get(str(cid), {}))
             for cid, cell in zip(table["community_id"], table["previous_ids"])]
    at = list(table.columns).index("previous_ids")
    table["previous_ids"] = [ids for ids, _ in pairs]
    table.insert(at + 1, "previous_population", [counts for _, counts in pairs])
    return table


def write_community_tables(plan, folder: Path) -> list[Path]:
    """communities.csv, and communities.xlsx when openpyxl is installed (an optional
    dependency: without it the workbook is skipped with a log line)."""
    rows = community_rows(plan)
    written = [folder / "communities.csv"]
    rows.to_csv(written[0], index=False)
    if importlib.util.find_spec("openpyxl") is None:
        logger.info("Skipped communities.xlsx: openpyxl is not installed (pip install openpyxl); "
                    "communities.csv holds the same table")
    else:
        rows.to_excel(folder / "communities.xlsx", index=False, sheet_name="communities",
                      engine="openpyxl")
        written.append(folder / "communities.xlsx")
    logger.info("Wrote %s", ", ".join(str(p) for p in written))
    return written


def report_document(report: Mapping) -> dict:
    """The report as written to report.json: its keys, then `problems`
    (`covplan.output.glossary.problems`) and last a `glossary` of every key."""
    from covplan.output.glossary import glossary_for, problems

    out = {k: v for k, v in report.items() if k not in _DERIVED_REPORT_KEYS}
    out["problems"] = problems(report)
    out["glossary"] = glossary_for(out)
    return out


_DERIVED_REPORT_KEYS = ("problems", "glossary")    # built at write time, dropped at read time
# Written to report.json but not part of the plan in memory (read_plan drops them too).
_WRITE_ONLY_REPORT_KEYS = ("plan_id", *_DERIVED_REPORT_KEYS)


# Run timings are seconds named `*_s` (runtime_s); any key so named, at any depth, is left out
# of the plan id, so no section that reports its own time can make the id differ between runs.
_TIMING_SUFFIXES = ("_s", "_ms", "_seconds")


def _without_timings(value):
    """`value` with every mapping key naming a timing (`_TIMING_SUFFIXES`) dropped, at any depth."""
    if isinstance(value, Mapping):
        return {k: _without_timings(v) for k, v in value.items()
                if not str(k).endswith(_TIMING_SUFFIXES)}
    if isinstance(value, (list, tuple)):
        return [_without_timings(v) for v in value]
    return value


def plan_id(plan) -> str:
    """
    The id every file of a written plan carries (report.json, each plan.gpkg layer's metadata,
    manifest.json): a hash of the plan's content (its report without run timings, its units,
    communities and changes). The same inputs, parameters, seed and version give the same id,
    so written plans stay comparable byte for byte; any other plan gets another id.
    """
    digest = hashlib.sha256()
    report = _without_timings({k: v for k, v in plan.report.items()
                               if k not in _WRITE_ONLY_REPORT_KEYS})
    digest.update(json.dumps(report, sort_keys=True, default=plain_value).encode())
    communities = plan.communities.drop(columns=plan.communities.geometry.name)
    for frame in (plan.units, communities, plan.changes):
        if frame is not None:
            digest.update(pd.DataFrame(frame).to_csv(index=False).encode())
    return digest.hexdigest()[:16]


def write_plan_files(plan, folder: Path, *, self_contained: bool = True,
                     base: gpd.GeoDataFrame | None = None) -> str:
    """The files of `write_plan` written into an existing folder (an `OutputStage`'s path, so
    they reach their place only complete); returns the plan id (`plan_id`)."""
    from covplan.output.maps import plan_map, save_map
    from covplan.output.styles import write_layer_styles

    pid = plan_id(plan)
    layers = {"communities": plan.communities, "centers": plan.centers,
              "units": _units_layer(plan.units), "isochrones": plan.isochrones}
    if plan.previous is not None:
        layers["previous_communities"] = plan.previous
    decisions = getattr(plan, "center_decisions", None)
    if decisions is not None:
        layers["center_decisions"] = decisions
    grids = getattr(plan, "grids", None)
    if grids is not None:
        layers["grids"], layers["grid_stations"] = grids.grids, grids.stations
    if base is not None:
        lines = base[base.geom_type.isin(["LineString", "MultiLineString"])]
        if len(lines):
            layers["streets"] = lines
    write_layers(folder / "plan.gpkg", layers, metadata={"plan_id": pid})
    write_layer_styles(folder / "plan.gpkg", layers=list(layers), config=plan.config)
    write_community_tables(plan, folder)
    if grids is not None:
        pd.DataFrame(grids.grids.drop(columns=grids.grids.geometry.name)).to_csv(
            folder / "grids.csv", index=False)
    if decisions is not None:
        lonlat = decisions.geometry.to_crs("EPSG:4326")
        pd.DataFrame(decisions.drop(columns=decisions.geometry.name)).assign(
            lon=lonlat.x.to_numpy(), lat=lonlat.y.to_numpy()).to_csv(
            folder / "center_decisions.csv", index=False)
    write_json(folder / "report.json", report_document({"plan_id": pid, **plan.report}))
    if plan.changes is not None:
        plan.changes.rename(columns=_WRITTEN_NAMES["changes"]).to_csv(folder / "changes.csv",
                                                                      index=False)
        fault_point("changes.csv")
    save_map(plan_map(plan, base=base, grids=grids), folder / "map.html",
             self_contained=self_contained)
    fault_point("map.html")
    return pid


def write_plan(plan, out: str | os.PathLike[str], *, self_contained: bool = True,
               base: gpd.GeoDataFrame | None = None, force: bool = False) -> Path:
    """
    Write a plan folder into `out`: plan.gpkg (layers communities, centers, units, isochrones,
    center_decisions and, in merge/split mode, previous_communities), center_decisions.csv
    (no geometry; lon/lat of each site), communities.csv (and communities.xlsx
    with openpyxl, see `write_community_tables`), report.json (the report, its `problems` and
    a `glossary` of its keys), changes.csv (merge/split mode), map.html and manifest.json.

    Residents are `population` in every layer and file (see `_WRITTEN_NAMES`); polygon layers
    are valid MultiPolygons. The map embeds Leaflet (opens offline) unless `self_contained` is
    False (CDN links). `base` (`covplan.output.basemap.base_layer`) draws under the map and
    its lines (main streets, railways) are kept as the layer `streets`, which the atlas draws.

    The folder is written whole or not at all (`output_folder`): an older plan in `out` is
    replaced as a whole, and a folder holding files covplan did not write is refused unless
    `force` (they are then kept).

    Raises
    ------
    InputError
        If `out` is a file, or a folder holding other files and not `force`.
    OutputBusyError
        If another run is writing `out`.
    DataSourceError
        If `out` cannot be created or written.
    """
    with output_folder(out, force=force) as stage:
        stage.plan_id = write_plan_files(plan, stage.path, self_contained=self_contained,
                                         base=base)
    return Path(out)


PLAN_FILES = ("plan.gpkg", "report.json")     # changes.csv only exists in merge/split mode
PLAN_LAYERS = ("communities", "centers", "units", "isochrones")


def read_plan(folder: str | os.PathLike[str]) -> Plan:
    """
    Load a plan folder written by `write_plan` back into a `Plan`.

    The units' `population` comes back as `pop` and the changes' as `residents` (their names in
    memory); the report without its derived `problems` and `glossary`; communities.csv/.xlsx
    are not read. The layers come back in the CRS they were written in (the population input's); ``config``
    is rebuilt from the report's parameters, and ``work_crs`` is the local UTM zone of the units
    (the planner's working CRS is not stored in the folder).

    The folder's manifest.json must match it: every file it lists present and unchanged (for
    plan.gpkg, which QGIS rewrites when it opens it: every layer tagged with the plan id), and
    no plan file it does not list (e.g. the changes.csv of an older plan). A folder without a
    manifest (written by hand or by an older covplan) is read with a warning. When `folder`
    is missing because a run was killed while replacing it, the previous plan kept beside it
    is read (see `output_folder`).

    Raises
    ------
    DataSourceError
        If `folder` is not a folder, lacks a file or layer of a plan, holds files of different
        plans, or a file cannot be read.
    """
    from covplan.config import PlanConfig
    from covplan.inputs.crs import local_metric_crs
    from covplan.plan.pipeline import Plan

    root = Path(folder)
    backups = [] if root.is_dir() else folders_aside(root, "old")
    if backups:
        logger.warning("%s is missing: a covplan run was stopped while replacing it; reading the "
                       "previous plan kept at %s (the next run into %s puts it back)", root,
                       backups[-1], root)
        root = backups[-1]
    if not root.is_dir():
        msg = (f"plan folder '{root}' does not exist or is not a folder; pass the --out folder "
               "of `covplan plan` (it holds plan.gpkg and report.json).")
        raise DataSourceError(msg)
    for name in PLAN_FILES:
        if not (root / name).is_file():
            msg = (f"'{root}' is not a plan folder: it lacks {name}; pass the --out folder of "
                   "`covplan plan` (it holds plan.gpkg and report.json).")
            raise DataSourceError(msg)
    gpkg = root / "plan.gpkg"
    try:
        present = {str(row[0]) for row in pyogrio.list_layers(gpkg)}
    except pyogrio.errors.DataSourceError as exc:
        msg = f"cannot read '{gpkg}': {exc}; write the plan again with `covplan plan`."
        raise DataSourceError(msg) from exc
    missing = [name for name in PLAN_LAYERS if name not in present]
    if missing:
        msg = (f"'{gpkg}' lacks layer(s) {missing} of a plan (it has {sorted(present)}); "
               "write the plan again with `covplan plan`.")
        raise DataSourceError(msg)
    read = [name for name in (*PLAN_LAYERS, "previous_communities", "center_decisions",
                              "grids", "grid_stations") if name in present]
    _check_manifest(root, read)
    layers = {name: _read_layer(gpkg, name) for name in read}
    report = _read_report(root / "report.json")
    for key in _WRITE_ONLY_REPORT_KEYS:
        report.pop(key, None)
    layers["units"] = _in_memory_names(layers["units"], "units")
    changes = None
    if (root / "changes.csv").is_file():
        changes = pd.read_csv(root / "changes.csv", dtype={"old_community_id": str,
                                                           "new_community_id": str})
        changes = _in_memory_names(changes, "changes")
    known = {f.name for f in fields(PlanConfig)}
    config = PlanConfig(**{k: v for k, v in report.get("parameters", {}).items() if k in known})
    units = layers["units"]
    work_crs = local_metric_crs(tuple(units.total_bounds), units.crs)
    logger.info("Read plan %s: %d communities, %d units", root, len(layers["communities"]),
                len(units))
    grids = None
    if "grids" in layers and "grid_stations" in layers:
        from covplan.plan.grids import Grids

        # The units' grid ids are not stored: the grids' polygons carry the plan's grids.
        grids = Grids(grids=layers["grids"], stations=layers["grid_stations"],
                      units=pd.DataFrame(), report=report.get("grids") or {})
    return Plan(communities=layers["communities"], centers=layers["centers"], units=units,
                isochrones=layers["isochrones"], changes=changes,
                previous=layers.get("previous_communities"), report=report, config=config,
                work_crs=work_crs, version=str(report.get("version", "")),
                center_decisions=layers.get("center_decisions"), grids=grids)


def _check_manifest(root: Path, layers: list[str]) -> str | None:
    """The plan id of `root` once its manifest.json matches its files (see `read_plan`); None,
    with a warning, for a folder without a manifest."""
    path = root / MANIFEST
    if not path.is_file():
        logger.warning("%s has no %s (written by hand or by an older covplan): its files are "
                       "not checked to belong to one plan; write the plan again to add one",
                       root, MANIFEST)
        return None
    again = f"write the plan again (`covplan plan --out {root}` / write_plan)"
    manifest = _read_report(path)
    listed, pid = manifest.get("files"), manifest.get("plan_id")
    if not isinstance(listed, dict) or not isinstance(pid, str):
        msg = f"'{path}' is not a plan manifest (it lacks plan_id or files); {again}."
        raise DataSourceError(msg)
    problems = []
    for name, entry in sorted(listed.items()):
        if not (root / name).is_file():
            problems.append(f"{name} is missing")
        elif name != "plan.gpkg" and file_sha256(root / name) != (entry or {}).get("sha256"):
            problems.append(f"{name} is not the one written with this plan")
    problems += [f"{p.name} is not part of this plan" for p in sorted(root.iterdir())
                 if p.name in PLAN_FOLDER_FILES and p.name not in listed and p.name != MANIFEST]
    if "plan.gpkg" in listed and (root / "plan.gpkg").is_file():
        for layer in layers:
            info = pyogrio.read_info(root / "plan.gpkg", layer=layer)
            got = (info.get("layer_metadata") or {}).get("plan_id")
            if got != pid:
                problems.append(f"plan.gpkg layer {layer} is of plan {got or '(none)'}")
    if problems:
        msg = f"files of different plans in {root} (manifest.json: plan {pid}): {'; '.join(problems)}; {again}."
        raise DataSourceError(msg)
    return pid


def _in_memory_names(frame, kind: str):
    """Undo `_WRITTEN_NAMES`: a column written under its new name gets its in-memory name
    back (and a legacy duplicate under the in-memory name wins)."""
    renames = {}
    for memory, written in _WRITTEN_NAMES[kind].items():
        if written in frame and memory in frame:
            frame = frame.drop(columns=written)
        elif written in frame:
            renames[written] = memory
    return frame.rename(columns=renames) if renames else frame


def _read_layer(path: Path, layer: str) -> gpd.GeoDataFrame:
    try:
        return gpd.read_file(path, layer=layer, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        msg = f"cannot read layer '{layer}' of '{path}': {exc}; write the plan again."
        raise DataSourceError(msg) from exc


def _read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        msg = f"cannot read '{path}' as JSON: {exc}; write the plan again with `covplan plan`."
        raise DataSourceError(msg) from exc
    if not isinstance(report, dict):
        msg = f"'{path}' holds {type(report).__name__}, not a plan report (a JSON object)."
        raise DataSourceError(msg)
    return report
