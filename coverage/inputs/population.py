"""
Population sources -> `Population`: the cells as read, and the point units the planner assigns.

Every loader conserves people to the person: counts become integers (fractional sources are
rounded by largest remainder so the total equals the rounded sum), and every transformation
logs its total at INFO so a lost resident shows up in the log, not in a plan.

This module is the entry point: the `Population` type, `load_population` and `as_population`.
The readers live beside it, each passed the class to build: population_cells (the core every
loader ends in), population_columns (which column is which), population_tables (CSV, H3,
points), population_raster (GeoTIFF) and population_split (`Population.disaggregate`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import pandas as pd
from covplan._validate import describe, require_file, require_not_empty, split_layer
from covplan.errors import InputError
from covplan.inputs.areas import CSV_SUFFIXES, read_csv_table, read_layer
from covplan.inputs.population_cells import from_geoframe, largest_remainder
from covplan.inputs.population_columns import find_h3_column
from covplan.inputs.population_raster import read_raster
from covplan.inputs.population_split import disaggregate
from covplan.inputs.population_tables import from_h3_table, from_table

if TYPE_CHECKING:
    import pyproj

# largest_remainder is re-exported: callers import it from here.
__all__ = ["Population", "as_population", "largest_remainder", "load_population"]


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
        return from_geoframe(cls, frame, population_column=population_column,
                             id_column=id_column, source="GeoDataFrame",
                             name="the population GeoDataFrame")

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
        return from_geoframe(cls, frame, population_column=population_column,
                             id_column=id_column, source=text, name=name)

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
        return from_table(cls, table, lon_column=lon_column, lat_column=lat_column,
                          h3_column=None, population_column=population_column,
                          id_column=id_column, crs=crs, source=os.fspath(path), name=name)

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
        column = h3_column if h3_column is not None else find_h3_column(table, name=name)
        if column is None:
            msg = (f"{name} has no column of H3 ids; it has {list(table.columns)}. "
                   "Pass h3_column= naming the column of ids such as '89a8100c603ffff'.")
            raise InputError(msg)
        return from_h3_table(cls, table, column=column, population_column=population_column,
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
        return read_raster(cls, path, band=band)

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
        return disaggregate(self, onto=onto, network=network, buildings=buildings,
                            cell_size_m=cell_size_m, max_unit_pop=max_unit_pop)


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
        tables and CSVs (the CRS of their x/y columns, default EPSG:4326; any other source
        raises, as it carries its own), `band` for rasters.

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
    _check_crs_applies(source, kwargs.get("crs"))
    if isinstance(source, gpd.GeoDataFrame):
        return Population.from_frame(source, population_column=population_column,
                                     id_column=id_column, **kwargs)
    if isinstance(source, pd.DataFrame):
        options = {"lon_column": None, "lat_column": None, "h3_column": None,
                   "crs": "EPSG:4326"} | kwargs
        return from_table(Population, source, population_column=population_column,
                          id_column=id_column, source="DataFrame",
                          name="the population DataFrame", **options)
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


def _check_crs_applies(source: Any, crs: Any) -> None:
    """Raise when `crs` is given for a source that carries its own CRS (only tables and CSVs
    hold bare x/y columns)."""
    path = isinstance(source, (str, os.PathLike))
    if (crs is None or not (path or isinstance(source, gpd.GeoDataFrame))
            or path and os.fspath(source).lower().endswith(CSV_SUFFIXES)):
        return
    shown = "the GeoDataFrame" if isinstance(source, gpd.GeoDataFrame) else f"'{os.fspath(source)}'"
    msg = (f"--population-crs (crs=) applies to CSV and table populations, whose x/y columns "
           f"carry no CRS; {shown} has its own. Drop --population-crs (crs=), or reproject the "
           "file if its CRS is wrong.")
    raise InputError(msg)


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
