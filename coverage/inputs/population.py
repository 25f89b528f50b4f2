"""
Population sources -> `Population`: the cells as read, and the point units the planner assigns.

Every loader conserves people to the person: counts become integers (fractional sources are
rounded by largest remainder so the total equals the rounded sum), and every transformation
logs its total at INFO so a lost resident shows up in the log, not in a plan.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import shapely
from covplan._validate import (
    clean_counts,
    describe,
    implausible_cells,
    require_columns,
    require_countable,
    require_crs,
    require_file,
    require_not_empty,
    require_positive,
    split_layer,
)
from covplan.errors import CoverageError, CoverageWarning, CRSError, DataSourceError, InputError
from covplan.inputs.areas import (
    CSV_SUFFIXES,
    LAT_NAMES,
    LON_NAMES,
    find_column,
    read_csv_table,
    read_layer,
    table_points,
)
from covplan.inputs.crs import local_metric_crs
from covplan.inputs.tessellation import unit_pieces

if TYPE_CHECKING:
    import pyproj

__all__ = ["Population", "as_population", "load_population"]

logger = logging.getLogger(__name__)

# Names that mark a population column (case-insensitive; 'asukkaita' is HSY's). Only these or
# popYYYY are taken unasked: any other numeric column may count jobs or households.
_POP_NAMES = ("pop", "population", "pop_total", "population_total", "total", "residents",
              "inhabitants", "people", "persons", "count", "value", "asukkaita", "habitantes",
              "einwohner")
_POP_PATTERN = re.compile(r"^(pop|population)[_-]?(19|20)\d{2}$", re.IGNORECASE)
_ID_NAMES = ("cell_id", "id", "h3", "h3_id", "hex_id", "grid_id", "index", "fid", "objectid")
# Text columns with these names must hold H3 ids (every row); other text columns count as H3
# when most of a sample of _H3_SAMPLE values spread over the column are valid ids.
_H3_NAMES = ("h3", "h3_id", "h3_index", "h3index", "h3_cell", "hex", "hex_id", "hexid",
             "hex_index", "hexagon", "hexagon_id")
_H3_SAMPLE = 1_000
_FLOOR_NAMES = ("floors", "levels", "building:levels")
_CELL_TYPES = ("Polygon", "MultiPolygon", "Point")
_ONTO = ("nodes", "buildings", "grid")
_MAX_SUBCELLS = 5_000_000      # more grid pieces than this means a unit mix-up, not a plan
_RASTER_STRIP_PIXELS = 1 << 24  # read rasters in strips of ~16 M pixels to bound memory
# Point cells become Voronoi areas clipped to their hull grown by half the median spacing of
# the points plus this margin, or a disc of the lone-point radius around a single point.
_POINT_MARGIN_M = 50.0
_LONE_POINT_RADIUS_M = 150.0


@dataclass(frozen=True, slots=True, eq=False)   # eq=False: pandas fields don't compare to bool
class Population:
    """
    Residents as source cells and as point units, the pieces the planner assigns to centers.

    Attributes
    ----------
    units
        One row per unit: `unit_id` (int64, 0..k-1), `cell_id` (str), `pop` (int64 > 0) and a
        Point `geometry`. Before `disaggregate` there is one unit per populated cell, at the
        source point for point sources, else at the cell's centroid (or a point inside it when
        the centroid falls outside).
    cells
        The source cells: `cell_id` (str), `pop` (int64 >= 0), Polygon/MultiPolygon
        `geometry` (loaders turn source points into Voronoi areas, see `from_frame`). Cells
        with no one keep their row here but get no unit.
    source
        Where the data came from (a path, 'GeoDataFrame', ...).
    population_column
        The source column (or raster band) the counts came from.
    warnings
        Implausible but usable input found while loading (very dense cells, overlapping
        cells, mixed H3 resolutions), one message each; also raised as CoverageWarning and
        logged, kept here for reports.

    Notes
    -----
    ``units.pop.sum() == cells.pop.sum()`` always holds; construction checks it.
    """

    units: gpd.GeoDataFrame
    cells: gpd.GeoDataFrame
    source: str
    population_column: str
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        in_units, in_cells = int(self.units["pop"].sum()), int(self.cells["pop"].sum())
        if in_units != in_cells:
            msg = (f"Population from {self.source}: units hold {in_units:,} people but cells hold "
                   f"{in_cells:,}; build units with Population.from_* or disaggregate().")
            raise InputError(msg)

    @property
    def total(self) -> int:
        """Total number of residents."""
        return int(self.cells["pop"].sum())

    @property
    def crs(self) -> pyproj.CRS:
        """CRS of `units` and `cells`."""
        return self.cells.crs

    def to_crs(self, crs: pyproj.CRS | str) -> Population:
        """Return a copy with `units` and `cells` projected to `crs`."""
        return Population(units=self.units.to_crs(crs), cells=self.cells.to_crs(crs),
                          source=self.source, population_column=self.population_column,
                          warnings=self.warnings)

    @classmethod
    def from_frame(cls, frame: gpd.GeoDataFrame, *, population_column: str | None = None,
                   id_column: str | None = None) -> Population:
        """
        Cells from a GeoDataFrame of polygons or points with a count column.

        Parameters
        ----------
        frame
            One row per cell, polygons or points; needs a CRS. Its CRS becomes the population's
            CRS. Points become areas: their Voronoi cells (each keeps its point's residents, id
            and unit location) clipped to the points' convex hull grown by half their median
            nearest-neighbour distance plus 50 m, so neighbouring points share borders and
            communities drawn from them are contiguous. The loader has no street network, hence
            the hull: it bounds the edge cells by the points' own spacing. Polygon cells are
            carved out of the point areas.
        population_column
            Column of counts; None takes the one column named pop, population, pop_total,
            total, residents, inhabitants, people, persons, count, value, asukkaita, ... or
            popYYYY (case-insensitive). Other numeric columns (jobs, households) are never
            taken unasked: with no such name, or several, it raises listing the candidates.
        id_column
            Column of unique cell ids; None uses the first unique column among cell_id, id, h3,
            index, fid, ..., else numbers the rows 0..n-1.

        Warns
        -----
        CoverageWarning
            For cells denser than 100,000 residents per km2 or overlapping cells (also kept in
            `Population.warnings`).

        Raises
        ------
        CRSError
            If `frame` has no CRS.
        InputError
            If it is empty, the column is missing or ambiguous, a count is negative, NaN, not
            a number or over 1e9, ids repeat, or a geometry is neither polygon nor point.
        """
        if not isinstance(frame, gpd.GeoDataFrame):
            msg = f"`frame` must be a GeoDataFrame, got {type(frame).__name__}."
            raise TypeError(msg)
        return _from_geoframe(frame, population_column=population_column, id_column=id_column,
                              source="GeoDataFrame", name="the population GeoDataFrame")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, layer: str | None = None,
                  population_column: str | None = None,
                  id_column: str | None = None) -> Population:
        """
        Cells from a vector file: GeoPackage, GeoJSON, Shapefile, FlatGeobuf, or any of them zipped.

        `path` may be a plain ``.zip`` or a GDAL ``/vsizip/...`` path. A file with several layers
        needs `layer`, or `path` as ``PATH:LAYER``. Other parameters as in `from_frame`.

        Raises
        ------
        DataSourceError
            If the file is missing, empty or cannot be parsed.
        CRSError
            If the data has no CRS (e.g. a shapefile without its .prj).
        InputError
            As in `from_frame`, or if `layer` is missing or not named when several exist.
        """
        path, layer = split_layer(path, layer)
        require_file(path, what="population")
        text, name = os.fspath(path), f"population file {describe(path)}"
        frame = read_layer(text, layer=layer, name=name, what="population")
        return _from_geoframe(frame, population_column=population_column, id_column=id_column,
                              source=text, name=name)

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str], *, lon_column: str | None = None,
                 lat_column: str | None = None, population_column: str | None = None,
                 id_column: str | None = None, crs: Any = "EPSG:4326") -> Population:
        """
        Cells from a CSV: points from coordinate columns, or H3 hexagons from an id column.

        With neither `lon_column` nor `lat_column` given, a column of H3 ids makes hexagon
        cells as in `from_h3`: a text column named h3, h3_index, hex_id, ... or one where most
        of a sample spread over the column are valid ids (`id_column` first). Every row of it
        must then be a valid id: one bad row raises, it never falls back to coordinates.
        Otherwise points are built from lon/lng/longitude/x and lat/latitude/y in `crs`, and
        become Voronoi areas as in `from_frame`.

        Raises
        ------
        DataSourceError
            If the file is missing, empty or not parseable as CSV.
        InputError
            If it has neither coordinates nor H3 ids, an H3-looking column holds an invalid id,
            several columns look like H3 ids, or as in `from_h3` and `from_frame`.
        """
        require_file(path, what="population CSV")
        name = f"population CSV {describe(path)}"
        table = read_csv_table(path, name=name)
        return _from_table(table, lon_column=lon_column, lat_column=lat_column, h3_column=None,
                           population_column=population_column, id_column=id_column, crs=crs,
                           source=os.fspath(path), name=name)

    @classmethod
    def from_h3(cls, table: pd.DataFrame, *, h3_column: str | None = None,
                population_column: str | None = None) -> Population:
        """
        Hexagon cells (EPSG:4326) from a table of H3 ids and counts.

        `h3_column` None detects a string column of H3 ids as `from_csv` does. Ids must be
        unique and valid in every row. Resolutions may mix only if no cell lies inside another
        (a CoverageWarning notes the mix).

        Raises
        ------
        InputError
            If no H3 column is found, an id is invalid (the count, rows and values are listed),
            a cell lies inside another listed cell (residents counted twice), or as in
            `from_frame`.
        """
        if not isinstance(table, pd.DataFrame):
            msg = f"`table` must be a DataFrame, got {type(table).__name__}."
            raise TypeError(msg)
        name = "the population H3 table"
        require_not_empty(table, name=name)
        column = h3_column if h3_column is not None else _find_h3_column(table, name=name)
        if column is None:
            msg = (f"{name} has no column of H3 ids; it has {list(table.columns)}. "
                   "Pass h3_column= naming the column of ids such as '89a8100c603ffff'.")
            raise InputError(msg)
        return _from_h3_table(table, column=column, population_column=population_column,
                              source="H3 table", name=name)

    @classmethod
    def from_raster(cls, path: str | os.PathLike[str], *, band: int = 1) -> Population:
        """
        One cell per populated pixel of a counts-per-pixel GeoTIFF (WorldPop, GHS-POP).

        Nodata, NaN and pixels <= 0 are skipped (the total is unchanged); the cell is the pixel's
        box, `cell_id` is ``"r{row}c{col}"``. Fractional counts are rounded by largest remainder
        so the total equals the rounded raster sum (logged at INFO). Clip large rasters to the
        study area first: every populated pixel becomes a polygon.

        Raises
        ------
        DataSourceError
            If the file is missing, empty or not a readable raster.
        CRSError
            If the raster has no CRS.
        InputError
            If `band` does not exist, a pixel is negative but not nodata, or no pixel is populated.
        """
        require_file(path, what="population raster")
        name = f"population raster {describe(path)}"
        rasterio = _rasterio(name)
        try:
            with rasterio.open(os.fspath(path)) as src:
                _check_raster(src, band=band, name=name)
                rows, cols, values = _read_populated(src, band=band, name=name)
                transform, crs = src.transform, src.crs
        except CoverageError:   # ours, from the checks above (InputError is a ValueError too)
            raise
        # A damaged header can also fail in GDAL's error classes or while decoding the CRS text.
        except (rasterio.errors.RasterioError, rasterio._err.CPLE_BaseError, UnicodeDecodeError,
                ValueError) as exc:
            msg = f"cannot read {name}: {exc}. Check that it is an intact GeoTIFF."
            raise DataSourceError(msg) from exc
        if len(values) == 0:
            msg = f"{name} has no pixel with population > 0 in band {band}; check band= and nodata."
            raise InputError(msg)
        ids = np.char.add(np.char.add("r", rows.astype(str)), np.char.add("c", cols.astype(str)))
        geometry = gpd.GeoSeries(_pixel_boxes(transform, rows, cols), crs=crs.to_wkt())
        return _assemble(geometry, values, pd.Series(ids), source=os.fspath(path), name=name,
                         column=f"band {band}", raster=True)

    def disaggregate(self, *, onto: str, network: Any = None,
                     buildings: gpd.GeoDataFrame | None = None, cell_size_m: float | None = None,
                     max_unit_pop: float | None = None) -> Population:
        """
        Split each populated polygon cell into several units, conserving every cell's count.

        Always starts from `cells`, so calling it twice does not split twice.

        Parameters
        ----------
        onto
            'nodes': the `network` nodes inside the cell, equal weights. 'buildings': the
            `buildings` (polygons weighted by footprint area, times a 'floors'/'levels' column
            when present; points weighted equally, times floors) whose representative point is
            inside. 'grid': squares of `cell_size_m` metres on a grid aligned to the working
            CRS, clipped to the cell and weighted by clipped area.
        network
            For 'nodes': an object with `x`, `y` (float arrays in `network.crs`) and `crs`,
            such as a WalkNetwork.
        buildings
            For 'buildings': footprints or points with a CRS.
        cell_size_m
            For 'grid': side of the squares, metres.
        max_unit_pop
            None gives every target with people its own unit. Given, only cells with
            pop > `max_unit_pop` are split, into at most ``ceil(2 * pop / max_unit_pop)``
            pieces (about half of `max_unit_pop` each, so pieces stay under it despite uneven
            targets): targets are grouped by recursive weighted bisection along the longer
            axis, and each piece sits at its member target nearest its weighted mean.

        Returns
        -------
        Population
            Same `cells`; new `units` in this population's CRS. A cell with no target inside
            (or a point cell) keeps one unit, where its only unit was (a source point stays
            put), else inside the cell. Counts are split by largest remainder (ties to
            the lowest index) so each cell's units sum exactly to its pop; zero-pop units
            are dropped and `unit_id` renumbered.

        Raises
        ------
        InputError
            If `onto` is unknown or its input is missing or unusable.
        CRSError
            If `network` or `buildings` has no CRS.
        """
        _check_disaggregate_args(onto, network, buildings, cell_size_m, max_unit_pop)
        work_crs = local_metric_crs(tuple(self.cells.total_bounds), self.crs)
        cells_w = self.cells.to_crs(work_crs)
        pop = cells_w["pop"].to_numpy()
        geoms = np.asarray(cells_w.geometry.values)
        to_split = (pop > 0) & np.isin(shapely.get_type_id(geoms), (3, 6))  # polygons only
        if max_unit_pop is not None:
            to_split &= pop > max_unit_pop
        split_pos = np.flatnonzero(to_split)
        if onto == "nodes":
            owner, xy, weight = _node_targets(network, geoms, split_pos, work_crs)
        elif onto == "buildings":
            owner, xy, weight = _building_targets(buildings, geoms, split_pos, work_crs)
        else:
            owner, xy, weight = _grid_targets(geoms, split_pos, float(cell_size_m))
        units_w = _split_cells(cells_w, owner, xy, weight, max_unit_pop=max_unit_pop,
                               anchors=self._lone_units(cells_w))
        bare = len(np.setdiff1d(split_pos, owner))
        logger.info("Disaggregated %d of %d populated cells onto %s: %d units; %d cell(s) had no "
                    "target inside and kept one unit; total %s unchanged", len(split_pos),
                    int((pop > 0).sum()), onto, len(units_w), bare, f"{self.total:,}")
        return Population(units=units_w.to_crs(self.crs), cells=self.cells, source=self.source,
                          population_column=self.population_column, warnings=self.warnings)

    def _lone_units(self, cells_w: gpd.GeoDataFrame) -> np.ndarray:
        """Per row of `cells_w`, the point of the cell's unit when it is its only one and not
        where `_inner_points` puts it anyway (a source point), else None; such units are placed
        again in the working CRS, exactly as before point sources kept their points."""
        units = self.units
        one = (units["cell_id"].map(units["cell_id"].value_counts()) == 1).to_numpy()
        cells = self.cells.set_index("cell_id").geometry
        points = np.asarray(units.geometry.values)[one]
        ids = units["cell_id"].to_numpy()[one]
        moved = ~shapely.equals(points, _inner_points(np.asarray(cells.loc[ids].values)))
        kept = gpd.GeoSeries(points[moved], crs=self.crs).to_crs(cells_w.crs)
        by_cell = pd.Series(np.asarray(kept.values), index=ids[moved], dtype=object)
        return by_cell.reindex(cells_w["cell_id"].to_numpy()).to_numpy(dtype=object)


def load_population(source: Any, *, population_column: str | None = None,
                    layer: str | None = None, id_column: str | None = None,
                    **kwargs: Any) -> Population:
    """
    Load population from whatever the user has, dispatching on type and file suffix.

    A `Population` is returned as is; a GeoDataFrame goes to `Population.from_frame`; a
    DataFrame to the H3 or lon/lat table loader (`h3_column`, `lon_column`, `lat_column`,
    `crs` in `kwargs`); a path ending .tif/.tiff to `from_raster` (`band` in `kwargs`),
    .csv/.csv.gz to `from_csv`, anything else to `from_file`.

    Parameters
    ----------
    source
        A Population, GeoDataFrame, DataFrame, or a path to a vector file, CSV or GeoTIFF.
    population_column
        Column of counts; None detects it as described in `Population.from_frame` (not for
        rasters).
    layer
        Layer of a multi-layer vector file; a path ``PATH:LAYER`` names it too.
    id_column
        Column of unique cell ids; None detects one or numbers the rows.
    **kwargs
        Passed to the loader chosen: `h3_column`, `lon_column`, `lat_column`, `crs` for
        tables and CSVs, `band` for rasters.

    Returns
    -------
    Population
        Cells and one unit per populated cell, in the source's CRS.

    Raises
    ------
    TypeError
        If `source` is none of these.
    InputError
        If the population column is missing or ambiguous (the choices are listed), a count is
        invalid, or options do not apply to the source.
    CRSError
        If the data has no CRS.
    DataSourceError
        If a file is missing or cannot be read.
    """
    if isinstance(source, Population):
        return source
    if isinstance(source, gpd.GeoDataFrame):
        return Population.from_frame(source, population_column=population_column,
                                     id_column=id_column, **kwargs)
    if isinstance(source, pd.DataFrame):
        options = {"lon_column": None, "lat_column": None, "h3_column": None,
                   "crs": "EPSG:4326"} | kwargs
        return _from_table(source, population_column=population_column, id_column=id_column,
                           source="DataFrame", name="the population DataFrame", **options)
    if not isinstance(source, (str, os.PathLike)):
        msg = (f"`source` must be a path, GeoDataFrame, DataFrame or Population, got "
               f"{type(source).__name__}.")
        raise TypeError(msg)
    source, layer = split_layer(source, layer)
    lower = os.fspath(source).lower()
    if lower.endswith((".tif", ".tiff")):
        if population_column is not None or id_column is not None or layer is not None:
            msg = ("population_column=, id_column= and layer= (or PATH:LAYER) do not apply to "
                   "rasters; use band=.")
            raise InputError(msg)
        return Population.from_raster(source, **kwargs)
    if lower.endswith(CSV_SUFFIXES):
        if layer is not None:
            msg = f"a CSV has no layers; got layer {layer!r} for '{os.fspath(source)}'."
            raise InputError(msg)
        return Population.from_csv(source, population_column=population_column,
                                   id_column=id_column, **kwargs)
    return Population.from_file(source, layer=layer, population_column=population_column,
                                id_column=id_column, **kwargs)


def as_population(obj: Population | gpd.GeoDataFrame, *,
                  population_column: str | None = None) -> Population:
    """
    The Population for what an entry point was given: a Population or a GeoDataFrame of cells.

    Parameters
    ----------
    obj
        A Population, returned unchanged (`population_column` is then not used), or a
        GeoDataFrame of polygon or point cells with a CRS, converted as `load_population`
        converts GeoDataFrames (`Population.from_frame`); its CRS stays the population's CRS.
    population_column
        Column of counts in the GeoDataFrame; None detects it by name, and raises rather than
        guess when several columns could hold it.

    Returns
    -------
    Population

    Raises
    ------
    TypeError
        If `obj` is neither; files and tables go through `load_population`.
    InputError
        If the population column is missing or ambiguous (the error lists the choices), or a
        count or geometry is invalid.
    CRSError
        If the GeoDataFrame has no CRS.
    """
    if isinstance(obj, Population):
        return obj
    if isinstance(obj, gpd.GeoDataFrame):
        return load_population(obj, population_column=population_column)
    msg = (f"`population` must be a Population or a GeoDataFrame, got {type(obj).__name__}; "
           "read files and tables with `load_population(...)` first.")
    raise TypeError(msg)


# --- building cells ------------------------------------------------------------------------

def _from_geoframe(frame: gpd.GeoDataFrame, *, population_column: str | None,
                   id_column: str | None, source: str, name: str,
                   notes: tuple[str, ...] = ()) -> Population:
    """Validate a frame of cells and build the Population (the shared core of every loader)."""
    require_not_empty(frame, name=name)
    require_crs(frame, name=name)
    ids, id_name = _cell_ids(frame, id_column, name=name)
    exclude = {id_name, frame.geometry.name}
    column = population_column
    if column is None:
        column = _pick_population_column(frame, exclude=exclude, name=name)
    elif column not in frame.columns:
        msg = (f"{name} lacks column(s) [{column!r}]; it has "
               f"{[c for c in frame.columns if c != frame.geometry.name]}. Name the counts "
               f"column with --population-column (CLI) or population_column= (Python)"
               f"{_numeric_hint(frame, exclude)}.")
        raise InputError(msg)
    counts = clean_counts(frame[column], name=name, column=str(column))
    geometry = _check_geometry(frame, counts, name=name)
    geometry, anchors = _point_areas(geometry, name=name)
    return _assemble(geometry, counts, ids, source=source, name=name, column=str(column),
                     anchors=anchors, notes=notes)


def _assemble(geometry: gpd.GeoSeries, counts: np.ndarray, ids: pd.Series, *, source: str,
              name: str, column: str, anchors: np.ndarray | None = None, raster: bool = False,
              notes: tuple[str, ...] = ()) -> Population:
    """Integer counts, the cells frame and one unit per populated cell (at its anchor point
    if it has one, else inside the cell); implausible cells warn. Pixels of a raster cannot
    overlap, so `raster` skips that (costly) check."""
    cell_ids = ids.astype(str).to_numpy()
    require_countable(counts, cell_ids, name=name, raster=raster,
                      column=column if raster else f"column {column!r}")
    pop = _to_integers(counts, name=name)
    cells = gpd.GeoDataFrame({"cell_id": cell_ids, "pop": pop},
                             geometry=geometry.values, crs=geometry.crs)
    populated = pop > 0
    points = _inner_points(np.asarray(geometry.values)[populated])
    if anchors is not None:
        given = anchors[populated]
        points[pd.notna(given)] = given[pd.notna(given)]
    units = _units_frame(cell_ids[populated], pop[populated], points, crs=cells.crs)
    logger.info("Loaded %d cells, %s people from %s (column %r)", len(cells),
                f"{int(pop.sum()):,}", source, column)
    if not populated.all():
        logger.info("%d cell(s) with pop 0 are kept in `cells` but get no unit",
                    int((~populated).sum()))
    found = (*notes, *implausible_cells(cells, name=name, overlaps=not raster))
    for message in found:
        logger.warning("%s", message)
        warnings.warn(message, CoverageWarning, stacklevel=4)
    return Population(units=units, cells=cells, source=source, population_column=column,
                      warnings=found)


def _point_areas(geometry: gpd.GeoSeries, *, name: str) -> tuple[gpd.GeoSeries, np.ndarray]:
    """
    Point cells as Voronoi areas, so that neighbouring points share borders; and per row the
    source point (None for polygon rows), where the cell's unit stays.

    The loader has no street network, so the diagram is clipped to the points' convex hull
    grown by half their median nearest-neighbour distance plus _POINT_MARGIN_M: edge cells
    reach about as far out as their neighbours' cells do. Coincident points share their
    region in equal-area slices (`unit_pieces`); polygon cells are carved out.
    """
    geoms = np.asarray(geometry.values)
    is_point = (shapely.get_type_id(geoms) == 0) & ~shapely.is_empty(geoms)
    anchors = np.full(len(geoms), None, dtype=object)
    if not is_point.any():
        return geometry, anchors
    anchors[is_point] = geoms[is_point]
    try:
        work = local_metric_crs(tuple(shapely.total_bounds(geoms[is_point])), geometry.crs)
    except CRSError as exc:
        raise CRSError(f"{name}: {exc}") from None
    points = gpd.GeoSeries(geoms[is_point], crs=geometry.crs).to_crs(work)
    xy = np.asarray(points.values)
    tree = shapely.STRtree(xy)
    # exclusive: a point's own (or a coincident) position is not its neighbour
    distance = tree.query_nearest(xy, exclusive=True, return_distance=True, all_matches=False)[1]
    reach = (_LONE_POINT_RADIUS_M if len(distance) == 0
             else 0.5 * float(np.median(distance)) + _POINT_MARGIN_M)
    hull = shapely.buffer(shapely.convex_hull(shapely.multipoints(xy)), reach)
    sites = gpd.GeoDataFrame({"cell_id": np.zeros(len(xy), dtype=str)}, geometry=xy, crs=work)
    regions = np.asarray(unit_pieces(sites, gpd.GeoDataFrame(
        {"cell_id": [""]}, geometry=[hull], crs=work)).values)
    areal = ~is_point & ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    if areal.any():
        regions = _carve(regions, xy, gpd.GeoSeries(geoms[areal], crs=geometry.crs).to_crs(work))
    out = geometry.copy()
    out[is_point] = gpd.GeoSeries(regions, crs=work).to_crs(geometry.crs).values
    logger.info("%s: %d point cell(s) became Voronoi areas, clipped %.0f m beyond their hull",
                name, int(is_point.sum()), reach)
    return out, anchors


def _carve(regions: np.ndarray, xy: np.ndarray, polygons: gpd.GeoSeries) -> np.ndarray:
    """Point regions minus the polygon cells; a point inside a polygon cell keeps its whole
    region (the overlap is then reported, not hidden)."""
    shapes = np.asarray(polygons.values)
    region_idx, poly_idx = shapely.STRtree(shapes).query(regions, predicate="intersects")
    out = regions.copy()
    for i in np.unique(region_idx):
        cut = shapely.difference(regions[i], shapely.union_all(shapes[poly_idx[region_idx == i]]))
        if shapely.covers(cut, xy[i]):
            out[i] = cut
    return out


def _units_frame(cell_ids: np.ndarray, pop: np.ndarray, points: np.ndarray, *,
                 crs: Any) -> gpd.GeoDataFrame:
    """The units frame with unit_id 0..k-1."""
    return gpd.GeoDataFrame({"unit_id": np.arange(len(pop), dtype=np.int64),
                             "cell_id": np.asarray(cell_ids, dtype=str),
                             "pop": np.asarray(pop, dtype=np.int64)}, geometry=points, crs=crs)


def _to_integers(counts: np.ndarray, *, name: str) -> np.ndarray:
    """Counts as int64; fractional ones rounded by largest remainder to the rounded total."""
    rounded = np.round(counts)
    if np.array_equal(rounded, counts):
        return rounded.astype(np.int64)
    exact = math.fsum(counts)
    total = math.floor(exact + 0.5)
    logger.info("%s: fractional counts (sum %.3f) rounded to integers by largest remainder; "
                "total %s (changed by %+.3f, under 1 per cell)", name, exact, f"{total:,}",
                total - exact)
    return largest_remainder(counts, total)


def largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integers summing to `total`, each floor(share) or one more; ties go to the lowest index."""
    base = np.floor(shares).astype(np.int64)
    short = int(total - base.sum())
    # Float error in the shares can only move the shortfall by a rounding hair; clip for safety.
    short = min(max(short, 0), len(shares))
    order = np.argsort(-(shares - base), kind="stable")
    base[order[:short]] += 1
    return base


def _inner_points(geoms: np.ndarray) -> np.ndarray:
    """Centroids, or a point surely inside where the centroid falls outside (e.g. L shapes)."""
    if len(geoms) == 0:
        return np.empty(0, dtype=object)
    # shapely directly: planar centroids of small cells are fine in lon/lat and warn-free here.
    points = shapely.centroid(geoms)
    outside = ~shapely.contains(geoms, points)   # on the boundary (bow-tie centre) is outside
    points[outside] = shapely.point_on_surface(geoms[outside])
    return points


def _check_geometry(frame: gpd.GeoDataFrame, counts: np.ndarray, *, name: str) -> gpd.GeoSeries:
    """Raise on unusable geometries; repair invalid polygons (logged). Returns a 0..n-1 series."""
    geometry = frame.geometry.reset_index(drop=True)
    missing = (geometry.isna() | geometry.is_empty).to_numpy()
    if (missing & (counts > 0)).any():
        rows = list(frame.index[missing & (counts > 0)][:5])
        msg = f"{name}: rows {rows} have people but no geometry; fix or drop them."
        raise InputError(msg)
    types = geometry.geom_type.to_numpy()
    bad = ~missing & ~np.isin(types, _CELL_TYPES)
    if bad.any():
        msg = (f"{name}: geometry type(s) {sorted(set(types[bad]))} (rows "
               f"{list(frame.index[bad][:5])}) cannot be cells; use polygons or points "
               "(`.explode()` multi-points first).")
        raise InputError(msg)
    invalid = ~missing & ~geometry.is_valid.to_numpy()
    if invalid.any():
        geometry[invalid] = geometry[invalid].make_valid(method="structure", keep_collapsed=False)
        logger.info("%s: repaired %d invalid polygon(s)", name, int(invalid.sum()))
    return geometry


# --- columns ---------------------------------------------------------------------------------

def _cell_ids(frame: pd.DataFrame, id_column: str | None, *, name: str) -> tuple[pd.Series, Any]:
    """Cell ids as strings and the column they came from (None: numbered 0..n-1)."""
    if id_column is not None:
        require_columns(frame, [id_column], name=name)
        ids = frame[id_column]
        bad = ids.isna() | ids.duplicated(keep=False)
        if bad.any():
            msg = (f"{name}: id column {id_column!r} has missing or repeated values, e.g. "
                   f"{list(ids[bad].head(5))}; cell ids must be unique. Aggregate the rows, pass "
                   "another id_column=, or none to number the cells 0..n-1.")
            raise InputError(msg)
        return _id_strings(ids), id_column
    by_name = {str(c).lower(): c for c in reversed(frame.columns)}
    for want in _ID_NAMES:
        column = by_name.get(want)
        if column is not None and frame[column].notna().all() and frame[column].is_unique:
            return _id_strings(frame[column]), column
    return pd.Series(np.arange(len(frame)).astype(str)), None


def _id_strings(ids: pd.Series) -> pd.Series:
    """Ids as str, writing whole floats (1.0, read from a float column) as '1'."""
    if pd.api.types.is_float_dtype(ids) and (ids == np.round(ids)).all():
        ids = ids.astype(np.int64)
    return ids.astype(str).reset_index(drop=True)


def _pick_population_column(frame: pd.DataFrame, *, exclude: set[Any], name: str) -> Any:
    """The one column named like a population count; never a numeric column by elimination
    (a `jobs` column is numeric too), so anything else raises with the candidates."""
    columns = [c for c in frame.columns if c not in exclude]
    named = [c for c in columns
             if str(c).lower() in _POP_NAMES or _POP_PATTERN.match(str(c))]
    if len(named) == 1:
        logger.info("%s: population column %r (by its name)", name, named[0])
        return named[0]
    if named:
        msg = (f"{name}: several columns could hold the population: {named}. Pick one with "
               f"--population-column (CLI) or population_column= (Python), e.g. "
               f"population_column={named[0]!r}.")
        raise InputError(msg)
    msg = (f"{name}: no column is named like a population count (pop, population, residents, "
           f"inhabitants, ... or popYYYY); it has {columns}. Other numeric columns are not "
           "taken unasked, as they may count jobs or households: name the counts column with "
           f"--population-column (CLI) or population_column= (Python){_numeric_hint(frame, exclude)}.")
    raise InputError(msg)


def _numeric_hint(frame: pd.DataFrame, exclude: set[Any]) -> str:
    """', e.g. one of the numeric columns [...]' for messages, or '' when there is none."""
    skip = {*_ID_NAMES, *LON_NAMES, *LAT_NAMES}
    numeric = [c for c in frame.columns if c not in exclude and str(c).lower() not in skip and
               not pd.api.types.is_bool_dtype(frame[c]) and
               pd.api.types.is_numeric_dtype(frame[c])]
    return f", e.g. one of the numeric columns {numeric}" if numeric else ""


def _find_h3_column(table: pd.DataFrame, prefer: Any = None, *, name: str) -> Any:
    """
    The column of H3 ids, or None: a text column named like H3 (h3, hex_id, ...), or one where
    most of a sample spread over the whole column are valid ids. Its every row is checked
    later; several such columns raise rather than pick one.
    """
    found = []
    for column in table.columns:
        values = table[column]
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            continue
        present = values.dropna()
        if str(column).lower() in _H3_NAMES:
            found.append(column)
        elif len(present):
            # evenly spread, so a bad value near the top (or a good one) cannot decide alone
            sample = present.iloc[np.linspace(0, len(present) - 1, min(len(present), _H3_SAMPLE),
                                              dtype=np.int64)]
            share = np.mean([isinstance(v, str) and h3.is_valid_cell(v) for v in sample])
            if share > 0.5:
                found.append(column)
    if prefer is not None and prefer in found:
        return prefer
    if len(found) > 1:
        msg = (f"{name}: several columns look like H3 ids: {found}; keep one in the file, or "
               f"pass h3_column= (Python), e.g. h3_column={found[0]!r}.")
        raise InputError(msg)
    return found[0] if found else None


# --- tables and H3 ---------------------------------------------------------------------------

def _from_table(table: pd.DataFrame, *, lon_column: str | None, lat_column: str | None,
                h3_column: str | None, population_column: str | None, id_column: str | None,
                crs: Any, source: str, name: str) -> Population:
    """A plain table: H3 hexagons when it has H3 ids and no coordinate preference, else points."""
    require_not_empty(table, name=name)
    if h3_column is None and lon_column is None and lat_column is None:
        h3_column = _find_h3_column(table, prefer=id_column, name=name)
    if h3_column is not None:
        return _from_h3_table(table, column=h3_column, population_column=population_column,
                              source=source, name=name)
    frame = table_points(table, lon_column=lon_column, lat_column=lat_column, crs=crs, name=name,
                         missing="neither lon/lat columns nor a column of H3 ids")
    return _from_geoframe(frame, population_column=population_column, id_column=id_column,
                          source=source, name=name)


def _from_h3_table(table: pd.DataFrame, *, column: Any, population_column: str | None,
                   source: str, name: str) -> Population:
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
    return _from_geoframe(frame, population_column=population_column, id_column=column,
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


# --- rasters ---------------------------------------------------------------------------------

def _check_raster(src: Any, *, band: int, name: str) -> None:
    """Raise unless the raster has a CRS and the band exists."""
    if src.crs is None:
        msg = f"{name} has no CRS; fix its georeferencing (e.g. `gdal_edit.py -a_srs EPSG:4326`)."
        raise CRSError(msg)
    whole = isinstance(band, (int, np.integer)) and not isinstance(band, bool)
    if not whole or not 1 <= band <= src.count:
        msg = f"`band` must be an int from 1 to {src.count} for {name}, got {band!r}."
        raise InputError(msg)


def _read_populated(src: Any, *, band: int, name: str) -> tuple[np.ndarray, ...]:
    """Rows, cols and values of pixels > 0, read in strips; raise on negative non-nodata pixels."""
    strip = max(1, _RASTER_STRIP_PIXELS // max(src.width, 1))
    rows, cols, values = [], [], []
    skipped = 0
    for top in range(0, src.height, strip):
        window = _rasterio("").windows.Window(0, top, src.width, min(strip, src.height - top))
        data = src.read(band, window=window, masked=True)
        # NaN counts as nodata: float rasters often mark the sea with NaN but declare nothing.
        pixels = np.ma.filled(data.astype("float64"), np.nan)
        negative = pixels < 0
        if negative.any():
            r, c = (int(v[0]) for v in np.nonzero(negative))
            msg = (f"{name}: band {band} has {int(negative.sum())} negative pixel(s) that are "
                   f"not nodata ({src.nodatavals[band - 1]}), e.g. {pixels[r, c]:g} at row "
                   f"{r + top}, col {c}; set the raster's nodata value to it (e.g. `gdal_edit.py "
                   "-a_nodata`) or fix the pixels.")
            raise InputError(msg)
        keep = pixels > 0
        skipped += int(keep.size - keep.sum())
        r, c = np.nonzero(keep)
        rows.append(r + top)
        cols.append(c)
        values.append(pixels[r, c])
    logger.info("%s: %d populated pixels; %d nodata or empty pixels skipped", name,
                sum(len(v) for v in values), skipped)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(values)


def _pixel_boxes(transform: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Pixel footprints through the affine transform (also right for rotated rasters)."""
    corner_col = cols[:, None] + np.array([0, 1, 1, 0, 0])
    corner_row = rows[:, None] + np.array([0, 0, 1, 1, 0])
    x = transform.a * corner_col + transform.b * corner_row + transform.c
    y = transform.d * corner_col + transform.e * corner_row + transform.f
    return shapely.polygons(np.stack([x, y], axis=-1))


# --- disaggregation --------------------------------------------------------------------------

def _check_disaggregate_args(onto: str, network: Any, buildings: Any, cell_size_m: Any,
                             max_unit_pop: Any) -> None:
    """Raise unless `onto` is known and its input is given."""
    if onto not in _ONTO:
        msg = f"`onto` must be one of {list(_ONTO)}, got {onto!r}."
        raise InputError(msg)
    needed = {"nodes": ("network", network), "buildings": ("buildings", buildings),
              "grid": ("cell_size_m", cell_size_m)}[onto]
    if needed[1] is None:
        msg = f"disaggregate(onto={onto!r}) needs `{needed[0]}=`."
        raise InputError(msg)
    if onto == "grid":
        require_positive(cell_size_m, name="cell_size_m")
    if max_unit_pop is not None:
        require_positive(max_unit_pop, name="max_unit_pop")


def _assign_points(points: np.ndarray, geoms: np.ndarray,
                   split_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point index, cell position) for points in the cells to split; a boundary point goes to
    the lowest cell position so nobody is counted twice."""
    tree = shapely.STRtree(geoms[split_pos])
    point_idx, tree_idx = tree.query(points, predicate="intersects")
    order = np.lexsort((tree_idx, point_idx))
    point_idx, tree_idx = point_idx[order], tree_idx[order]
    first = np.unique(point_idx, return_index=True)[1]
    return point_idx[first], split_pos[tree_idx[first]]


def _node_targets(network: Any, geoms: np.ndarray, split_pos: np.ndarray,
                  work_crs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network nodes inside the cells, weight 1 each."""
    for attribute in ("x", "y", "crs"):
        if not hasattr(network, attribute):
            msg = f"`network` must have x, y and crs (a WalkNetwork); it lacks {attribute!r}."
            raise TypeError(msg)
    if network.crs is None:
        msg = "`network` has no CRS; its x/y cannot be placed against the population cells."
        raise CRSError(msg)
    x, y = np.asarray(network.x, dtype="float64"), np.asarray(network.y, dtype="float64")
    nodes = gpd.GeoSeries(gpd.points_from_xy(x, y), crs=network.crs).to_crs(work_crs)
    points = np.asarray(nodes.values)
    idx, owner = _assign_points(points, geoms, split_pos)
    return owner, shapely.get_coordinates(points[idx]), np.ones(len(idx))


def _building_targets(buildings: gpd.GeoDataFrame, geoms: np.ndarray, split_pos: np.ndarray,
                      work_crs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Buildings whose representative point is inside, weighted by area (polygons) x floors."""
    if not isinstance(buildings, gpd.GeoDataFrame):
        msg = f"`buildings` must be a GeoDataFrame, got {type(buildings).__name__}."
        raise TypeError(msg)
    require_crs(buildings, name="`buildings`")
    frame = buildings.to_crs(work_crs)
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    shapes = np.asarray(frame.geometry.values)
    polygonal = np.isin(shapely.get_type_id(shapes), (3, 6))
    # Area only means something if every building has one; a mix falls back to equal weights.
    weight = shapely.area(shapes) if polygonal.all() else np.ones(len(shapes))
    floor_column = find_column(frame, _FLOOR_NAMES)
    if floor_column is not None:
        floors = pd.to_numeric(frame[floor_column], errors="coerce").to_numpy(dtype="float64")
        unknown = ~(floors > 0)
        floors[unknown] = 1.0   # an unknown floor count should not erase a building's residents
        weight = weight * floors
        logger.info("Weighting buildings by %r (%d unknown taken as 1)", floor_column,
                    int(unknown.sum()))
    points = shapely.point_on_surface(shapes)
    idx, owner = _assign_points(points, geoms, split_pos)
    return owner, shapely.get_coordinates(points[idx]), weight[idx]


def _grid_targets(geoms: np.ndarray, split_pos: np.ndarray,
                  size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squares of `size` metres clipped to each cell, weighted by clipped area."""
    bounds = shapely.bounds(geoms[split_pos])
    lo = np.floor(bounds[:, :2] / size).astype(np.int64)
    hi = np.maximum(np.ceil(bounds[:, 2:] / size).astype(np.int64), lo + 1)
    shape = hi - lo
    count = int((shape[:, 0] * shape[:, 1]).sum())
    if count > _MAX_SUBCELLS:
        msg = (f"disaggregate(onto='grid', cell_size_m={size:g}) would make {count:,} squares; "
               "use a larger cell_size_m (metres, not degrees or km).")
        raise InputError(msg)
    owner = np.repeat(split_pos, shape[:, 0] * shape[:, 1])
    ix = np.concatenate([np.repeat(np.arange(a, b), n) for a, b, n in
                         zip(lo[:, 0], hi[:, 0], shape[:, 1], strict=True)] or [np.empty(0, int)])
    iy = np.concatenate([np.tile(np.arange(a, b), n) for a, b, n in
                         zip(lo[:, 1], hi[:, 1], shape[:, 0], strict=True)] or [np.empty(0, int)])
    squares = shapely.box(ix * size, iy * size, (ix + 1) * size, (iy + 1) * size)
    pieces = shapely.intersection(squares, geoms[owner])
    area = shapely.area(pieces)
    keep = area > 0
    points = _inner_points(pieces[keep])
    return owner[keep], shapely.get_coordinates(points), area[keep]


def _split_cells(cells_w: gpd.GeoDataFrame, owner: np.ndarray, xy: np.ndarray,
                 weight: np.ndarray, *, max_unit_pop: float | None,
                 anchors: np.ndarray) -> gpd.GeoDataFrame:
    """Units of every populated cell: targets grouped into pieces, counts by largest remainder.
    A cell left whole keeps its unit at its anchor (None: an inner point)."""
    pop = cells_w["pop"].to_numpy()
    geoms = np.asarray(cells_w.geometry.values)
    order = np.argsort(owner, kind="stable")
    owner, xy, weight = owner[order], xy[order], weight[order]
    starts = np.searchsorted(owner, np.arange(len(pop) + 1))
    # Cells without targets (unsplit, points, or nothing inside) keep one unit: where it was
    # (a Voronoi cell's source point), else at an inner point.
    plain = np.flatnonzero((pop > 0) & (starts[1:] == starts[:-1]))
    unit_cell, unit_pop = [plain], [pop[plain]]
    kept = anchors[plain]
    kept = np.where(pd.isna(kept), _inner_points(geoms[plain]), kept)
    unit_xy = [shapely.get_coordinates(kept).reshape(-1, 2)]
    for pos in np.unique(owner):
        lo, hi = starts[pos], starts[pos + 1]
        w = weight[lo:hi] if weight[lo:hi].sum() > 0 else np.ones(hi - lo)
        k = hi - lo
        if max_unit_pop is not None:
            k = min(k, math.ceil(2 * pop[pos] / max_unit_pop))
        labels = _bisect(xy[lo:hi], w, k)
        piece_w = np.bincount(labels, weights=w, minlength=k)
        unit_pop.append(largest_remainder(pop[pos] * piece_w / piece_w.sum(), int(pop[pos])))
        unit_cell.append(np.full(k, pos))
        unit_xy.append(_piece_points(xy[lo:hi], w, labels, k))
    cell_pos, counts = np.concatenate(unit_cell), np.concatenate(unit_pop).astype(np.int64)
    points = shapely.points(np.concatenate(unit_xy))
    # Largest remainder keeps each cell's sum, so zero units carry no one; list units by cell.
    keep = np.flatnonzero(counts > 0)
    keep = keep[np.argsort(cell_pos[keep], kind="stable")]
    return _units_frame(cells_w["cell_id"].to_numpy()[cell_pos[keep]], counts[keep],
                        points[keep], crs=cells_w.crs)


def _bisect(xy: np.ndarray, weight: np.ndarray, k: int) -> np.ndarray:
    """Labels 0..k-1 from recursive weighted bisection along the longer axis; needs k <= len(xy).

    Compact, weight-balanced pieces without a random start, so results are deterministic.
    """
    labels = np.zeros(len(xy), dtype=np.int64)
    if k == len(xy):
        return np.arange(k)
    stack = [(np.arange(len(xy)), k, 0)]
    while stack:
        idx, parts, first = stack.pop()
        if parts == 1:
            labels[idx] = first
            continue
        left = parts // 2
        span = np.ptp(xy[idx], axis=0)
        coordinate = xy[idx, int(span[1] > span[0])]
        idx = idx[np.lexsort((idx, coordinate))]   # ties by index keep it deterministic
        cumulative = np.cumsum(weight[idx])
        goal = cumulative[-1] * left / parts
        cut = int(np.searchsorted(cumulative, goal)) + 1
        if cut > 1 and goal - cumulative[cut - 2] < cumulative[cut - 1] - goal:
            cut -= 1   # the cut one earlier is closer to the goal
        cut = min(max(cut, left), len(idx) - (parts - left))   # each side keeps enough targets
        stack += [(idx[:cut], left, first), (idx[cut:], parts - left, first + left)]
    return labels


def _piece_points(xy: np.ndarray, weight: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per piece, the member target nearest its weighted mean (units stay on real targets)."""
    if k == len(xy):
        out = np.empty_like(xy)
        out[labels] = xy
        return out
    total = np.bincount(labels, weights=weight, minlength=k)
    # A weightless piece gets no one and is dropped later; any member will do for its point.
    total[total == 0] = 1.0
    mean = np.stack([np.bincount(labels, weights=weight * xy[:, i], minlength=k) for i in (0, 1)],
                    axis=1) / total[:, None]
    distance = np.hypot(*(xy - mean[labels]).T)
    nearest = np.lexsort((distance, labels))
    first = np.unique(labels[nearest], return_index=True)[1]
    return xy[nearest[first]]


def _rasterio(name: str):
    """rasterio, which only raster populations need (the `raster` extra)."""
    try:
        import rasterio
        import rasterio._err
        import rasterio.windows
    except ImportError as exc:
        msg = (f"reading {name or 'a population raster'} needs rasterio: "
               "pip install 'coverage-planner[raster]' (or give the population as vector cells, "
               "CSV or H3 ids).")
        raise InputError(msg) from exc
    return rasterio
