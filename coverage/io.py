"""Writing results: GeoPackage layers and JSON summaries."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd
import numpy as np

from coverage._errors import DataSourceError

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


def write_plan(plan, out: str | os.PathLike[str]) -> Path:
    """Write plan.gpkg, report.json, changes.csv (merge/split mode) and map.html into `out`."""
    from coverage.maps import plan_map

    folder = prepare_folder(out)
    layers = {"communities": plan.communities, "centers": plan.centers, "units": plan.units,
              "isochrones": plan.isochrones}
    if plan.previous is not None:
        layers["previous_communities"] = plan.previous
    write_layers(folder / "plan.gpkg", layers)
    write_json(folder / "report.json", plan.report)
    if plan.changes is not None:
        plan.changes.to_csv(folder / "changes.csv", index=False)
    plan_map(plan).save(folder / "map.html")
    return folder
