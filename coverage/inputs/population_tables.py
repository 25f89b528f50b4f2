"""
Cells from plain tables: H3 hexagons from a column of H3 ids, else points from coordinate columns.

A table with H3 ids never falls back to coordinates silently: one invalid id raises.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import shapely
from covplan._validate import require_columns, require_not_empty
from covplan.errors import CRSError, InputError
from covplan.inputs.areas import table_points
from covplan.inputs.population_cells import from_geoframe
from covplan.inputs.population_columns import find_h3_column

__all__ = ["from_h3_table", "from_table"]


def from_table(cls: type, table: pd.DataFrame, *, lon_column: str | None,
               lat_column: str | None, h3_column: str | None, population_column: str | None,
               id_column: str | None, crs: Any, source: str, name: str):
    """A plain table: H3 hexagons when it has H3 ids and no coordinate preference, else points."""
    require_not_empty(table, name=name)
    if h3_column is None and lon_column is None and lat_column is None:
        h3_column = find_h3_column(table, prefer=id_column, name=name)
    if h3_column is not None:
        return from_h3_table(cls, table, column=h3_column, population_column=population_column,
                             source=source, name=name)
    try:
        frame = table_points(table, lon_column=lon_column, lat_column=lat_column, crs=crs,
                             name=name, missing="neither lon/lat columns nor a column of H3 ids")
    except CRSError as exc:      # projected x/y read as degrees: say how to name their CRS
        msg = (f"{exc} Name it with --population-crs (CLI) or crs= (load_population, "
               "Population.from_csv), e.g. --population-crs EPSG:32633.")
        raise CRSError(msg) from None
    return from_geoframe(cls, frame, population_column=population_column, id_column=id_column,
                         source=source, name=name)


def from_h3_table(cls: type, table: pd.DataFrame, *, column: Any,
                  population_column: str | None, source: str, name: str):
    """Validate H3 ids and make their hexagons (EPSG:4326) the cells."""
    require_columns(table, [column], name=name)
    ids = table[column]
    valid = np.array([isinstance(v, str) and h3.is_valid_cell(v) for v in ids], dtype=bool)
    if not valid.all():
        msg = (f"{name}: column {column!r} of H3 ids has {int((~valid).sum())} invalid H3 "
               f"id(s) of {len(ids)}, e.g. {list(ids[~valid].head(5))} at rows "
               f"{list(table.index[~valid][:5])} (counting data rows from 0); H3 ids are "
               "hexadecimal strings such as '89a8100c603ffff'. Fix those rows; the loader does "
               "not fall back to lon/lat columns silently (pass lon_column= and lat_column= "
               "in Python to use them instead).")
        raise InputError(msg)
    notes = _h3_resolutions(ids, column=column, name=name)
    # cell_to_boundary gives (lat, lng); shapely wants (x=lng, y=lat).
    hexagons = [shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(v)]) for v in ids]
    frame = gpd.GeoDataFrame(table, geometry=hexagons, crs="EPSG:4326")
    return from_geoframe(cls, frame, population_column=population_column, id_column=column,
                         source=source, name=name, notes=notes)


def _h3_resolutions(ids: pd.Series, *, column: Any, name: str) -> tuple[str, ...]:
    """Raise if one listed cell lies inside another (its residents would count twice); a note
    if resolutions differ otherwise (uneven cell sizes, allowed)."""
    resolution = np.array([h3.get_resolution(v) for v in ids])
    levels = np.unique(resolution)
    if len(levels) == 1:
        return ()
    listed = set(ids)
    nested = [(v, h3.cell_to_parent(v, int(level)))
              for v, r in zip(ids, resolution, strict=True) for level in levels[levels < r]
              if h3.cell_to_parent(v, int(level)) in listed]
    if nested:
        child, parent = nested[0]
        msg = (f"{name}: column {column!r} mixes H3 resolutions {levels.tolist()} and "
               f"{len(nested)} cell(s) lie inside another listed cell, e.g. {child} (resolution "
               f"{h3.get_resolution(child)}) inside {parent} (resolution "
               f"{h3.get_resolution(parent)}), so their residents would be counted twice. Use "
               "one resolution: sum the finer cells into their parents (h3.cell_to_parent) or "
               "drop the coarser rows.")
        raise InputError(msg)
    counts = {int(level): int((resolution == level).sum()) for level in levels}
    note = (f"{name}: column {column!r} mixes H3 resolutions (cells per resolution: {counts}); "
            "no cell lies inside another, so nobody is counted twice, but cell sizes differ "
            "(each finer resolution is 7 times smaller). Check that this is intended.")
    return (note,)
