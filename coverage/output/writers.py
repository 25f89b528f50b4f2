"""
The plain writers of every output: GeoPackage layers (polygon layers as valid MultiPolygons) and
JSON files, and the fault points where the interruption tests stop a run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import GeometryCollection, MultiPolygon, Polygon

__all__ = ["as_multipolygons", "fault_point", "plain_value", "write_json", "write_layers"]

# The output modules log under the name users configured before they were split.
logger = logging.getLogger("covplan.output.files")

_KILL_AT = "COVPLAN_TEST_KILL_AT"


def fault_point(step: str) -> None:
    """Fault injection for the interruption tests: COVPLAN_TEST_KILL_AT=STEP[@SIGNAL] sends
    SIGNAL (default SIGKILL) to this process when it reaches STEP (a CLI stage as 'stage
    scenario changes', a file written, a layer as 'plan.gpkg/units', 'manifest.json', 'swap'
    between the two renames, 'swapped' after)."""
    wanted = os.environ.get(_KILL_AT)
    if wanted:
        name, _, sig = wanted.partition("@")
        if name == step:
            os.kill(os.getpid(), getattr(signal, sig or "SIGKILL"))


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


def write_layers(path: str | os.PathLike[str], layers: Mapping[str, gpd.GeoDataFrame], *,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write each frame as a layer of one GeoPackage, replacing the file; polygon layers are
    written as valid MultiPolygons (`as_multipolygons`). `metadata` (e.g. the plan id) is stored
    with every layer (GeoPackage metadata, `pyogrio.read_info(...)["layer_metadata"]`)."""
    target = Path(path)
    if target.exists():
        target.unlink()
    for name, frame in layers.items():
        clean = as_multipolygons(frame).copy()
        for col in clean.columns:
            if col != clean.geometry.name and clean[col].dtype == object:
                clean[col] = clean[col].astype("string")
        clean.to_file(target, layer=name, driver="GPKG", engine="pyogrio",
                      metadata=dict(metadata) if metadata else None)
        fault_point(f"{target.name}/{name}")
    logger.info("Wrote %s (layers: %s)", target, ", ".join(layers))
    return target


def plain_value(value):
    """`json.dumps` default: numpy scalars as plain numbers, inf/NaN as null."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_json(path: str | os.PathLike[str], data: Mapping) -> Path:
    """Write `data` as indented JSON (numpy scalars become plain numbers, inf/NaN null)."""
    target = Path(path)
    clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in data.items()}
    target.write_text(json.dumps(clean, indent=2, default=plain_value, ensure_ascii=False) + "\n")
    fault_point(target.name)
    logger.info("Wrote %s", target)
    return target
