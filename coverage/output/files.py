"""Writing and reading results: GeoPackage layers, JSON summaries and whole plan folders."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from covplan.errors import DataSourceError
from covplan.metrics import parse_previous_ids
from shapely.geometry import GeometryCollection, MultiPolygon, Polygon

if TYPE_CHECKING:
    from covplan.plan.pipeline import Plan

logger = logging.getLogger(__name__)


def prepare_folder(path: str | os.PathLike[str]) -> Path:
    """Create the output folder (and parents); raise DataSourceError if that is impossible."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create output folder '{out}': {exc.strerror}; choose another --out."
        raise DataSourceError(msg) from exc
    return out


def _polygon_parts(geom) -> list[Polygon]:
    """The non-empty polygons in `geom` (lines and points dropped, collections opened)."""
    if isinstance(geom, Polygon):
        return [] if geom.is_empty else [geom]
    if isinstance(geom, (MultiPolygon, GeometryCollection)):
        return [p for part in geom.geoms for p in _polygon_parts(part)]
    return []


def _valid_multipolygon(geom):
    """`geom` as a valid MultiPolygon (None stays None): repaired with `shapely.make_valid`,
    keeping only its polygonal parts (an empty MultiPolygon when none is left)."""
    if geom is None:
        return None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    out = MultiPolygon(_polygon_parts(geom))
    if not out.is_valid:                        # parts that touch or overlap: merge them
        out = MultiPolygon(_polygon_parts(shapely.make_valid(shapely.union_all(out.geoms))))
    return out


def as_multipolygons(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """
    A polygon layer with every geometry a valid MultiPolygon, in the CRS it is written in.

    A layer is polygonal when its non-empty geometries are (Multi)Polygons or collections
    holding a polygon; other layers (points, lines) come back unchanged. Invalid shapes (a
    bow-tie, a ring that crosses itself after reprojection) are repaired with
    `shapely.make_valid` and only their polygonal parts are kept, so one layer has one
    geometry type in every plan, whether a shape has one part or several.
    """
    geoms = frame.geometry
    present = geoms[geoms.notna() & ~geoms.is_empty]
    types = set(present.geom_type)
    if not present.size or not types <= {"Polygon", "MultiPolygon", "GeometryCollection"}:
        return frame
    if "GeometryCollection" in types and not any(_polygon_parts(g) for g in present):
        return frame
    out = frame.copy()
    out[geoms.name] = gpd.GeoSeries([_valid_multipolygon(g) for g in geoms], index=frame.index,
                                    crs=frame.crs)
    return out


def write_layers(path: str | os.PathLike[str], layers: Mapping[str, gpd.GeoDataFrame]) -> Path:
    """Write each frame as a layer of one GeoPackage, replacing the file; polygon layers are
    written as valid MultiPolygons (`as_multipolygons`)."""
    target = Path(path)
    if target.exists():
        target.unlink()
    for name, frame in layers.items():
        clean = as_multipolygons(frame).copy()
        for col in clean.columns:
            if col != clean.geometry.name and clean[col].dtype == object:
                clean[col] = clean[col].astype("string")
        clean.to_file(target, layer=name, driver="GPKG", engine="pyogrio")
    logger.info("Wrote %s (layers: %s)", target, ", ".join(layers))
    return target


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_json(path: str | os.PathLike[str], data: Mapping) -> Path:
    """Write `data` as indented JSON (numpy scalars become plain numbers, inf/NaN null)."""
    target = Path(path)
    clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in data.items()}
    target.write_text(json.dumps(clean, indent=2, default=_plain, ensure_ascii=False) + "\n")
    logger.info("Wrote %s", target)
    return target


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


def write_plan(plan, out: str | os.PathLike[str], *, self_contained: bool = True,
               base: gpd.GeoDataFrame | None = None) -> Path:
    """
    Write a plan folder into `out`: plan.gpkg (layers communities, centers, units, isochrones,
    center_decisions and, in merge/split mode, previous_communities), center_decisions.csv
    (no geometry; lon/lat of each site), communities.csv (and communities.xlsx
    with openpyxl, see `write_community_tables`), report.json (the report, its `problems` and
    a `glossary` of its keys), changes.csv (merge/split mode) and map.html.

    Residents are `population` in every layer and file (see `_WRITTEN_NAMES`); polygon layers
    are valid MultiPolygons. The map embeds Leaflet (opens offline) unless `self_contained` is
    False (CDN links). `base` (`covplan.output.basemap.base_layer`) draws under the map and
    its lines (main streets, railways) are kept as the layer `streets`, which the atlas draws.
    """
    from covplan.output.maps import plan_map, save_map
    from covplan.output.styles import write_layer_styles

    folder = prepare_folder(out)
    layers = {"communities": plan.communities, "centers": plan.centers,
              "units": _units_layer(plan.units), "isochrones": plan.isochrones}
    if plan.previous is not None:
        layers["previous_communities"] = plan.previous
    decisions = getattr(plan, "center_decisions", None)
    if decisions is not None:
        layers["center_decisions"] = decisions
    if base is not None:
        lines = base[base.geom_type.isin(["LineString", "MultiLineString"])]
        if len(lines):
            layers["streets"] = lines
    write_layers(folder / "plan.gpkg", layers)
    write_layer_styles(folder / "plan.gpkg", layers=list(layers), config=plan.config)
    write_community_tables(plan, folder)
    if decisions is not None:
        lonlat = decisions.geometry.to_crs("EPSG:4326")
        pd.DataFrame(decisions.drop(columns=decisions.geometry.name)).assign(
            lon=lonlat.x.to_numpy(), lat=lonlat.y.to_numpy()).to_csv(
            folder / "center_decisions.csv", index=False)
    write_json(folder / "report.json", report_document(plan.report))
    if plan.changes is not None:
        plan.changes.rename(columns=_WRITTEN_NAMES["changes"]).to_csv(folder / "changes.csv",
                                                                      index=False)
    save_map(plan_map(plan, base=base), folder / "map.html", self_contained=self_contained)
    return folder


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

    Raises
    ------
    DataSourceError
        If `folder` is not a folder, lacks a file or layer of a plan, or a file cannot be read.
    """
    from covplan.config import PlanConfig
    from covplan.inputs.crs import local_metric_crs
    from covplan.plan.pipeline import Plan

    root = Path(folder)
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
    layers = {name: _read_layer(gpkg, name)
              for name in (*PLAN_LAYERS, "previous_communities", "center_decisions")
              if name in present}
    report = _read_report(root / "report.json")
    for key in _DERIVED_REPORT_KEYS:
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
    return Plan(communities=layers["communities"], centers=layers["centers"], units=units,
                isochrones=layers["isochrones"], changes=changes,
                previous=layers.get("previous_communities"), report=report, config=config,
                work_crs=work_crs, version=str(report.get("version", "")),
                center_decisions=layers.get("center_decisions"))


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
