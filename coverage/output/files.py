"""Writing and reading results: GeoPackage layers, JSON summaries and whole plan folders."""

from __future__ import annotations

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
from covplan.errors import DataSourceError

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


def write_layers(path: str | os.PathLike[str], layers: Mapping[str, gpd.GeoDataFrame]) -> Path:
    """Write each frame as a layer of one GeoPackage, replacing the file."""
    target = Path(path)
    if target.exists():
        target.unlink()
    for name, frame in layers.items():
        clean = frame.copy()
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


def write_plan(plan, out: str | os.PathLike[str], *, self_contained: bool = True) -> Path:
    """
    Write plan.gpkg, report.json, changes.csv (merge/split mode) and map.html into `out`.

    The map embeds Leaflet (opens offline) unless `self_contained` is False (CDN links).
    """
    from covplan.output.maps import plan_map, save_map

    folder = prepare_folder(out)
    layers = {"communities": plan.communities, "centers": plan.centers, "units": plan.units,
              "isochrones": plan.isochrones}
    if plan.previous is not None:
        layers["previous_communities"] = plan.previous
    write_layers(folder / "plan.gpkg", layers)
    write_json(folder / "report.json", plan.report)
    if plan.changes is not None:
        plan.changes.to_csv(folder / "changes.csv", index=False)
    save_map(plan_map(plan), folder / "map.html", self_contained=self_contained)
    return folder


PLAN_FILES = ("plan.gpkg", "report.json")     # changes.csv only exists in merge/split mode
PLAN_LAYERS = ("communities", "centers", "units", "isochrones")


def read_plan(folder: str | os.PathLike[str]) -> Plan:
    """
    Load a plan folder written by `write_plan` back into a `Plan`.

    The layers come back in the CRS they were written in (the population input's); ``config``
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
    layers = {name: _read_layer(gpkg, name) for name in (*PLAN_LAYERS, "previous_communities")
              if name in present}
    report = _read_report(root / "report.json")
    changes = None
    if (root / "changes.csv").is_file():
        changes = pd.read_csv(root / "changes.csv", dtype={"old_community_id": str,
                                                           "new_community_id": str})
    known = {f.name for f in fields(PlanConfig)}
    config = PlanConfig(**{k: v for k, v in report.get("parameters", {}).items() if k in known})
    units = layers["units"]
    work_crs = local_metric_crs(tuple(units.total_bounds), units.crs)
    logger.info("Read plan %s: %d communities, %d units", root, len(layers["communities"]),
                len(units))
    return Plan(communities=layers["communities"], centers=layers["centers"], units=units,
                isochrones=layers["isochrones"], changes=changes,
                previous=layers.get("previous_communities"), report=report, config=config,
                work_crs=work_crs, version=str(report.get("version", "")))


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
