"""
A printable PDF atlas of a plan: one overview page, then one page per community.

The overview shows every community (coloured so that neighbours differ, ids labelled), the
service centers, the plan's headline figures, a scale bar and a north arrow. Each community page
shows its boundary, its center, its walking isochrone, the streets around it (when the plan
folder or the plan holds them; networks are never loaded here), its residents, the old
communities it replaces (merge/split mode) and a table of its figures.

Pages are A4 landscape, drawn with matplotlib in the plan's metric working CRS (so the scale bar
is true) and written with `PdfPages`; the file carries no creation date, so writing the same
plan twice gives identical bytes.
"""

from __future__ import annotations

import logging
import math
import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
from covplan._progress import progress_bar
from covplan.errors import DataSourceError, InputError
from covplan.metrics import parse_previous_ids

if TYPE_CHECKING:
    from covplan.plan.grids import Grids
    from covplan.plan.pipeline import Plan
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = ["read_streets", "write_atlas"]

PAGE_SIZE_IN = (11.69, 8.27)        # A4 landscape
OSM_CREDIT = "© OpenStreetMap contributors"
STREET_LAYERS = ("streets", "edges")   # line layers of a plan.gpkg drawn as streets
GRID_LAYERS = ("grids", "grid_stations")  # a plan.gpkg's grids (网格) and their stations
# Fills of the overview: soft, well-separated colours; neighbours never share one when avoidable.
FILL_COLORS = ("#a6cee3", "#b2df8a", "#fdbf6f", "#cab2d6", "#fb9a99", "#ffff99", "#8dd3c7",
               "#d9d9d9", "#bc80bd", "#ccebc5")
STYLE = {
    "boundary": "#222222",
    "other_fill": "#f0f0f0",
    "other_line": "#9a9a9a",
    "own_fill": "#fff3c4",
    "isochrone_fill": "#6baed6",
    "isochrone_line": "#2171b5",
    "previous_line": "#8c510a",
    "street": "#b8b8b8",
    "center_existing": "#1f4e9c",
    "center_new": "#1a9641",
    "out_of_band": "#d7191c",
    "other_units": "#bdbdbd",
    "minutes_colors": ("#1a9641", "#a6d96a", "#fdae61", "#d7191c"),
    "unreachable": "#777777",
    "credit": "#666666",
    "grid_line": "#333333",
    "grid_station": "#222222",
}
_POINT_SIZE = (3.0, 70.0)           # scatter marker areas (pt²) of the smallest/largest unit
_SIZE_CLASSES = 8                   # residents drawn in this many marker sizes (keeps PDFs small)
# Walk areas are buffered streets with a hole per block: holes under a hectare are filled and
# outlines simplified by a few metres, for display only.
_ISOCHRONE_MIN_HOLE_M2 = 10_000.0
_ISOCHRONE_SIMPLIFY_M = 5.0


def write_atlas(plan: Plan | str | os.PathLike[str], path: str | os.PathLike[str], *,
                title: str | None = None, streets: gpd.GeoDataFrame | None = None,
                progress: bool = False, grids: Grids | gpd.GeoDataFrame | None = None) -> Path:
    """
    Write a printable PDF atlas of `plan`: an overview page, then one page per community.

    Parameters
    ----------
    plan
        A `Plan`, or a plan folder written by `write_plan` (read with `read_plan`; a
        ``streets`` or ``edges`` line layer in its plan.gpkg is drawn as streets).
    path
        The PDF file to write (replaced if present; its folder is created).
    title
        Title of the overview page; None: "Community plan" (with old → new counts in
        merge/split mode).
    streets
        Street lines (any CRS) to draw under each community; None: the plan's ``streets``
        attribute or the folder's street layer if there is one, else no streets.
    progress
        Show a progress bar over the pages.
    grids
        Grids (网格) inside the communities (`covplan.plan.grids.plan_grids`, or its ``grids``
        frame): each community page is followed by a page of its grids, drawn and listed.
        None: the folder's ``grids`` layer when `plan` is a folder holding one, else no grids
        (the atlas is then as without grids).

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    DataSourceError
        If `plan` is a folder that is not a plan folder, or the PDF cannot be written.
    InputError
        If the plan's layers have no CRS.

    Notes
    -----
    Pages are A4 landscape, sorted by community id after the overview. The PDF has no creation
    date, so the same plan gives the same bytes. Every page credits OpenStreetMap contributors
    (the walking networks come from OSM).
    """
    from matplotlib.backends.backend_pdf import PdfPages

    if isinstance(plan, (str, os.PathLike)):
        from covplan.output.files import read_plan

        folder = Path(plan)
        plan = read_plan(folder)
        if streets is None:
            streets = read_streets(folder)
        if grids is None:
            grids = _read_grids(folder)
    if streets is None:
        streets = getattr(plan, "streets", None)
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create the folder of '{target}': {exc.strerror}; choose another --out."
        raise DataSourceError(msg) from exc

    atlas = _Atlas(plan, title=title, streets=streets, grids=grids)
    total = atlas.n_pages
    try:
        with PdfPages(target, metadata={"CreationDate": None}) as pdf:
            pages = progress_bar(atlas.pages(), desc="atlas pages", total=total, progress=progress)
            for fig in pages:
                pdf.savefig(fig)
                fig.clear()
    except OSError as exc:
        msg = f"cannot write '{target}': {exc.strerror or exc}; choose another --out."
        raise DataSourceError(msg) from exc
    logger.info("Wrote %s (%d pages: overview and %d communities%s)", target, total,
                len(atlas.order), f", {total - 1 - len(atlas.order)} with grids"
                if atlas.grids is not None else "")
    return target


def _read_grids(folder: Path) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame | None] | None:
    """The grids (and grid stations) layers of a plan folder's plan.gpkg, or None."""
    import pyogrio

    gpkg = folder / "plan.gpkg"
    try:
        layers = {str(name) for name, _ in pyogrio.list_layers(gpkg)} if gpkg.is_file() else set()
    except pyogrio.errors.DataSourceError:
        return None
    if GRID_LAYERS[0] not in layers:
        return None
    read = [gpd.read_file(gpkg, layer=name, engine="pyogrio") if name in layers else None
            for name in GRID_LAYERS]
    logger.info("Grids for the atlas: layer '%s' of %s (%d grids)", GRID_LAYERS[0], gpkg,
                len(read[0]))
    return read[0], read[1]


def read_streets(folder: str | os.PathLike[str]) -> gpd.GeoDataFrame | None:
    """
    The street lines a plan folder holds, or None.

    Looks for a line layer named ``streets`` or ``edges`` in the folder's plan.gpkg; networks
    (OSM files, GraphML) are not loaded.
    """
    import pyogrio

    gpkg = Path(folder) / "plan.gpkg"
    if not gpkg.is_file():
        return None
    try:
        layers = {str(name): str(kind) for name, kind in pyogrio.list_layers(gpkg)}
    except pyogrio.errors.DataSourceError:
        return None
    for name in STREET_LAYERS:
        if name in layers and "line" in layers[name].lower():
            frame = gpd.read_file(gpkg, layer=name, engine="pyogrio")
            logger.info("Streets for the atlas: layer '%s' of %s (%d lines)", name, gpkg,
                        len(frame))
            return frame
    return None


# --- the pages ----------------------------------------------------------------------------------

class _Atlas:
    """The plan projected to a metric CRS, and the page figures drawn from it one by one."""

    def __init__(self, plan: Plan, *, title: str | None, streets: gpd.GeoDataFrame | None,
                 grids=None):
        self.plan = plan
        crs = _metric_crs(plan)
        self.communities = _project(plan.communities, crs).reset_index(drop=True)
        self.communities["community_id"] = self.communities["community_id"].astype(str)
        self.centers = _project(plan.centers, crs).reset_index(drop=True)
        self.units = _project(plan.units, crs).reset_index(drop=True)
        self.isochrones = _project(plan.isochrones, crs).reset_index(drop=True)
        self.isochrones["geometry"] = [
            _fill_small_holes(g, _ISOCHRONE_MIN_HOLE_M2).simplify(_ISOCHRONE_SIMPLIFY_M)
            for g in self.isochrones.geometry]
        self.previous = (None if plan.previous is None
                         else _project(plan.previous, crs).reset_index(drop=True))
        self.streets = None
        if streets is not None and len(streets):
            lines = _project(streets, crs)
            self.streets = lines[lines.geom_type.str.contains("Line")].reset_index(drop=True)
        self.order = sorted(range(len(self.communities)),
                            key=lambda i: _natural_key(self.communities.at[i, "community_id"]))
        self.colors = _neighbour_colors(self.communities)
        self.title = title or _default_title(plan)
        config = plan.config
        self.max_minutes = float(config.max_minutes)
        self.band = (config.target_pop * (1 - config.tolerance),
                     config.target_pop * (1 + config.tolerance))
        pop = self.units["pop"].to_numpy(dtype=float) if "pop" in self.units else np.ones(0)
        self.max_unit_pop = float(pop.max()) if len(pop) and pop.max() > 0 else 1.0
        self.point_units = bool(len(self.units)) and bool(
            self.units.geom_type.isin(["Point", "MultiPoint"]).all())
        self.grids, self.grid_stations = _grid_frames(grids, crs)
        with_grids = (set() if self.grids is None
                      else set(self.grids["community_id"].astype(str)))
        self.has_grids = [self.communities.at[i, "community_id"] in with_grids
                          for i in range(len(self.communities))]
        self.n_pages = 1 + len(self.order) + sum(self.has_grids)

    def pages(self) -> Iterator[Figure]:
        yield self.overview()
        number = 2
        for index in self.order:
            yield self.community_page(index, number)
            number += 1
            if self.has_grids[index]:
                yield self.grids_page(index, number)
                number += 1

    # --- overview ---

    def overview(self) -> Figure:
        fig = _page()
        n_pages = self.n_pages
        r = self.plan.report
        fig.text(0.03, 0.955, self.title, fontsize=17, fontweight="bold", va="baseline")
        fig.text(0.03, 0.918, _headline(self.plan), fontsize=10.5, va="baseline", color="#222222")
        ax = fig.add_axes((0.03, 0.06, 0.70, 0.83))
        _frame(ax, self.communities.total_bounds, pad=0.03)
        comms = self.communities
        if len(comms):
            comms.plot(ax=ax, color=[self.colors[i] for i in range(len(comms))],
                       edgecolor=STYLE["boundary"], linewidth=0.6)
            off = comms[~_within_band(comms)]
            if len(off):
                off.boundary.plot(ax=ax, color=STYLE["out_of_band"], linewidth=1.6)
        self._centers(ax, self.centers, size=22)
        size = float(np.clip(13 - 1.1 * math.log2(max(len(comms), 1)), 6.0, 11.0))
        for i in self.order:
            point = comms.geometry.iat[i].representative_point()
            _label(ax, point.x, point.y, comms.at[i, "community_id"], size=size, weight="bold")
        _scale_bar(ax)
        _north_arrow(ax)

        side = fig.add_axes((0.75, 0.06, 0.23, 0.83))
        side.set_axis_off()
        rows = _overview_rows(self.plan, self.band) + _grid_overview_rows(self.grids)
        _table(side, rows, top=1.0, width=1.0, key_width=0.6, wrap=22)
        handles = [*_center_handles()]
        if len(comms) and not _within_band(comms).all():
            handles.append(_line_handle(STYLE["out_of_band"], 1.6,
                                        f"outside {_int(self.band[0])}–{_int(self.band[1])}"))
        side.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 0.0), fontsize=8,
                    frameon=False, title="Legend", title_fontsize=9, alignment="left")
        if r.get("issues"):
            text = "\n".join(textwrap.wrap("Input issues: " + "; ".join(map(str, r["issues"])),
                                           48))
            side.text(0.0, 0.20, text, fontsize=7, va="bottom", color="#444444",
                      transform=side.transAxes)
        _footer(fig, 1, n_pages, self.plan)
        return fig

    # --- one community ---

    def community_page(self, index: int, number: int) -> Figure:
        comms = self.communities
        row = comms.loc[index]
        cid = str(row["community_id"])
        shape = row.geometry
        iso = self.isochrones[self.isochrones["community_id"].astype(str) == cid] \
            if "community_id" in self.isochrones else self.isochrones.iloc[0:0]
        if not len(iso) and "center_id" in row and "center_id" in self.isochrones:
            iso = self.isochrones[self.isochrones["center_id"].astype(str) == str(row["center_id"])]
        center = self.centers[self.centers["community_id"].astype(str) == cid] \
            if "community_id" in self.centers else self.centers.iloc[0:0]

        fig = _page()
        fig.text(0.03, 0.955, f"Community {cid}", fontsize=17, fontweight="bold", va="baseline")
        fig.text(0.03, 0.918, _page_subtitle(row, self.band), fontsize=10.5, va="baseline",
                 color="#222222")
        ax = fig.add_axes((0.03, 0.06, 0.62, 0.83))
        bounds = _union_bounds(shape.bounds, *(g.bounds for g in iso.geometry if g is not None))
        xmin, ymin, xmax, ymax = _frame(ax, bounds, pad=0.06)
        view = (xmin, ymin, xmax, ymax)

        others = comms.cx[xmin:xmax, ymin:ymax]
        others = others[others["community_id"] != cid]
        if len(others):
            others.plot(ax=ax, color=STYLE["other_fill"], edgecolor=STYLE["other_line"],
                        linewidth=0.7, zorder=1)
        gpd.GeoSeries([shape], crs=comms.crs).plot(ax=ax, color=STYLE["own_fill"], zorder=1.5)
        if self.streets is not None:
            near = self.streets.cx[xmin:xmax, ymin:ymax]
            if len(near):
                near.plot(ax=ax, color=STYLE["street"], linewidth=0.5, zorder=2)
        if len(iso):
            iso.plot(ax=ax, color=STYLE["isochrone_fill"], alpha=0.22, zorder=2.5)
            iso.boundary.plot(ax=ax, color=STYLE["isochrone_line"], linewidth=0.9, zorder=2.6)
        replaced = self._replaced(row)
        if len(replaced):
            replaced.boundary.plot(ax=ax, color=STYLE["previous_line"], linewidth=1.1,
                                   linestyle=(0, (4, 2.5)), zorder=3)
        self._units(ax, cid, view)
        gpd.GeoSeries([shape], crs=comms.crs).boundary.plot(ax=ax, color=STYLE["boundary"],
                                                            linewidth=2.0, zorder=4)
        others_centers = self.centers.cx[xmin:xmax, ymin:ymax]
        if "community_id" in others_centers:
            others_centers = others_centers[others_centers["community_id"].astype(str) != cid]
        if len(others_centers):
            others_centers.plot(ax=ax, color="#ffffff", edgecolor="#555555", markersize=18,
                                marker="s", linewidth=0.8, zorder=5)
        self._centers(ax, center, size=150, marker="*")
        for _, other in others.iterrows():
            point = other.geometry.intersection(_box(view)).representative_point()
            if not point.is_empty:
                _label(ax, point.x, point.y, other["community_id"], size=8, color="#666666")
        for _, old in replaced.iterrows():
            part = old.geometry.intersection(_box(view))
            if not part.is_empty:
                point = part.representative_point()
                _label(ax, point.x, point.y, f"old {old['community_id']}", size=7.5,
                       color=STYLE["previous_line"], style="italic")
        _scale_bar(ax)
        _north_arrow(ax)

        side = fig.add_axes((0.67, 0.06, 0.31, 0.83))
        side.set_axis_off()
        _table(side, _community_rows(row, center, self.band, self.max_minutes), top=1.0,
               width=1.0, wrap=34)
        handles = self._community_handles(bool(len(iso)), bool(len(replaced)),
                                          self.streets is not None)
        side.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 0.0),
                    fontsize=7.5, frameon=False, handletextpad=0.5, alignment="left",
                    borderaxespad=0.0, labelspacing=0.45)
        locator = fig.add_axes((0.835, 0.065, 0.145, 0.2))
        self._locator(locator, index)
        _footer(fig, number, self.n_pages, self.plan)
        return fig

    # --- the grids of one community ---

    def grids_page(self, index: int, number: int) -> Figure:
        """The community's grids: drawn (boundaries, numbers, stations) and listed."""
        row = self.communities.loc[index]
        cid = str(row["community_id"])
        grids = self.grids[self.grids["community_id"].astype(str) == cid]
        grids = grids.iloc[sorted(range(len(grids)),
                                  key=lambda i: _natural_key(grids["grid_id"].iat[i]))]
        fig = _page()
        fig.text(0.03, 0.955, f"Community {cid}: {len(grids)} grids", fontsize=17,
                 fontweight="bold", va="baseline")
        fig.text(0.03, 0.918, _grids_subtitle(grids), fontsize=10.5, va="baseline",
                 color="#222222")
        ax = fig.add_axes((0.03, 0.06, 0.55, 0.83))
        xmin, ymin, xmax, ymax = _frame(ax, row.geometry.bounds, pad=0.04)
        others = self.communities.cx[xmin:xmax, ymin:ymax]
        others = others[others["community_id"] != cid]
        if len(others):
            others.plot(ax=ax, color=STYLE["other_fill"], edgecolor=STYLE["other_line"],
                        linewidth=0.7, zorder=1)
        if self.streets is not None:
            near = self.streets.cx[xmin:xmax, ymin:ymax]
            if len(near):
                near.plot(ax=ax, color=STYLE["street"], linewidth=0.5, zorder=2)
        # The communities' colouring, keyed by grid id: touching grids differ.
        colors = _neighbour_colors(gpd.GeoDataFrame({"community_id": grids["grid_id"].to_numpy()},
                                                    geometry=grids.geometry.values,
                                                    crs=grids.crs))
        grids.plot(ax=ax, color=colors, alpha=0.75, edgecolor=STYLE["grid_line"],
                   linewidth=0.7, zorder=1.5)
        off = grids[~_within_band(grids)]
        if len(off):
            off.boundary.plot(ax=ax, color=STYLE["out_of_band"], linewidth=1.2, zorder=3)
        gpd.GeoSeries([row.geometry], crs=self.communities.crs).boundary.plot(
            ax=ax, color=STYLE["boundary"], linewidth=2.0, zorder=4)
        stations = (self.grid_stations[self.grid_stations["grid_id"].isin(grids["grid_id"])]
                    if self.grid_stations is not None else None)
        if stations is not None and len(stations):
            stations.plot(ax=ax, color=STYLE["grid_station"], marker="^", markersize=16,
                          edgecolor="#ffffff", linewidth=0.5, zorder=5)
        size = float(np.clip(11 - 0.9 * math.log2(max(len(grids), 1)), 6.0, 10.0))
        for grid_id, shape in zip(grids["grid_id"], grids.geometry):
            point = shape.representative_point()
            _label(ax, point.x, point.y, _short_grid_id(str(grid_id), cid), size=size)
        _scale_bar(ax)
        _north_arrow(ax)
        side = fig.add_axes((0.61, 0.06, 0.37, 0.83))
        side.set_axis_off()
        _grid_table(side, grids, cid)
        _footer(fig, number, self.n_pages, self.plan)
        return fig

    def _replaced(self, row: pd.Series) -> gpd.GeoDataFrame:
        if self.previous is None or "community_id" not in self.previous:
            return gpd.GeoDataFrame(geometry=[], crs=self.communities.crs)
        ids = _previous_ids(row.get("previous_ids", ""))
        old = self.previous[self.previous["community_id"].astype(str).isin(ids)]
        return old.reset_index(drop=True)

    def _units(self, ax: Axes, cid: str, view: tuple[float, float, float, float]) -> None:
        units = self.units
        if not len(units) or "pop" not in units:
            return
        near = units.cx[view[0]:view[2], view[1]:view[3]]
        near = near[near["pop"] > 0]
        own = near["community_id"].astype(str) == cid if "community_id" in near else \
            np.zeros(len(near), dtype=bool)
        mine, rest = near[own], near[~own]
        colors = self._minutes_colors(mine)
        if self.point_units:
            # One scatter per marker size: the PDF then stores one marker per size, not per unit.
            if len(rest):
                ax.scatter(rest.geometry.x, rest.geometry.y, s=_POINT_SIZE[0] * 2,
                           color=STYLE["other_units"], linewidths=0, zorder=3.5)
            if len(mine):
                sizes = self._sizes(mine)
                palette = np.array(colors, dtype=object)
                for size in np.unique(sizes):
                    pick = sizes == size
                    part = mine[pick]
                    ax.scatter(part.geometry.x, part.geometry.y, s=size, c=list(palette[pick]),
                               edgecolors="#ffffff", linewidths=0.3, alpha=0.9, zorder=3.6)
        elif len(mine):
            mine.plot(ax=ax, color=colors, alpha=0.55, edgecolor="none", zorder=3.5)

    def _sizes(self, units: gpd.GeoDataFrame) -> np.ndarray:
        low, high = _POINT_SIZE
        share = np.clip(units["pop"].to_numpy(dtype=float) / self.max_unit_pop, 0.0, 1.0)
        level = np.ceil(share * _SIZE_CLASSES) / _SIZE_CLASSES     # area steps of 1/8 the largest
        return low + (high - low) * level

    def _minutes_colors(self, units: gpd.GeoDataFrame) -> list[str]:
        if "minutes" not in units:
            return [STYLE["minutes_colors"][0]] * len(units)
        minutes = units["minutes"].to_numpy(dtype=float)
        edges = np.array([1, 2, 3]) * self.max_minutes / 3
        classes = np.searchsorted(edges, minutes, side="left")
        palette = STYLE["minutes_colors"]
        return [STYLE["unreachable"] if not np.isfinite(m) else palette[min(c, 3)]
                for m, c in zip(minutes, classes)]

    def _centers(self, ax: Axes, centers: gpd.GeoDataFrame, *, size: float,
                 marker: str = "o") -> None:
        if not len(centers):
            return
        existing = (centers["existing"].astype(bool).to_numpy() if "existing" in centers
                    else np.zeros(len(centers), dtype=bool))
        for flag, color in ((True, STYLE["center_existing"]), (False, STYLE["center_new"])):
            part = centers[existing == flag]
            if len(part):
                part.plot(ax=ax, color=color, edgecolor="#ffffff", linewidth=0.8,
                          markersize=size, marker=marker, zorder=6)

    def _community_handles(self, has_iso: bool, has_previous: bool, has_streets: bool) -> list:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        m = self.max_minutes
        handles = [_line_handle(STYLE["boundary"], 2.0, "community boundary"),
                   Line2D([], [], marker="*", color="none", markerfacecolor=STYLE["center_existing"],
                          markeredgecolor="#ffffff", markersize=13, label="existing center"),
                   Line2D([], [], marker="*", color="none", markerfacecolor=STYLE["center_new"],
                          markeredgecolor="#ffffff", markersize=13, label="new center"),
                   Line2D([], [], marker="s", color="none", markerfacecolor="#ffffff",
                          markeredgecolor="#555555", markersize=5, label="other centers")]
        if has_iso:
            handles.append(Patch(facecolor=STYLE["isochrone_fill"], alpha=0.4,
                                 edgecolor=STYLE["isochrone_line"],
                                 label=f"{m:g}-min walk from center"))
        if has_previous:
            handles.append(_line_handle(STYLE["previous_line"], 1.1, "old community replaced",
                                        linestyle=(0, (4, 2.5))))
        if has_streets:
            handles.append(_line_handle(STYLE["street"], 1.0, "streets"))
        labels = [f"walk ≤ {_num(m / 3)} min", f"≤ {_num(2 * m / 3)} min", f"≤ {_num(m)} min",
                  f"over {_num(m)} min"]
        marker = "o" if self.point_units else "s"
        for color, label in zip(STYLE["minutes_colors"], labels):
            handles.append(Line2D([], [], marker=marker, color="none", markerfacecolor=color,
                                  markeredgecolor="#ffffff", markersize=7,
                                  label=f"residents, {label}"))
        if self.point_units:
            handles.append(Line2D([], [], marker="o", color="none",
                                  markerfacecolor=STYLE["other_units"], markeredgecolor="none",
                                  markersize=3, label="residents of others"))
        if self.point_units:
            handles.append(Line2D([], [], marker="o", color="none", markerfacecolor="#ffffff",
                                  markeredgecolor="#444444",
                                  markersize=math.sqrt(_POINT_SIZE[1]),
                                  label=f"{_int(self.max_unit_pop)} residents"))
        return handles

    def _locator(self, ax: Axes, index: int) -> None:
        comms = self.communities
        ax.set_axis_off()
        _frame(ax, comms.total_bounds, pad=0.03)
        comms.plot(ax=ax, color="#eeeeee", edgecolor="#aaaaaa", linewidth=0.3)
        comms.iloc[[index]].plot(ax=ax, color=STYLE["out_of_band"], edgecolor=STYLE["boundary"],
                                 linewidth=0.5)
        ax.set_title("location in the plan", fontsize=7, color="#555555", pad=2)
        ax.set_xlabel("")
        ax.set_ylabel("")


# --- helpers ------------------------------------------------------------------------------------

def _grid_frames(grids, crs) -> tuple[gpd.GeoDataFrame | None, gpd.GeoDataFrame | None]:
    """Grids and their stations (a Grids, a (grids, stations) pair or a grids frame) projected."""
    if grids is None:
        return None, None
    stations = None
    if hasattr(grids, "stations"):
        grids, stations = grids.grids, grids.stations
    elif isinstance(grids, tuple):
        grids, stations = grids
    if "grid_id" not in grids.columns or "community_id" not in grids.columns:
        msg = ("grids need grid_id and community_id columns, as plan_grids writes them "
               "(write_atlas(grids=...)).")
        raise InputError(msg)
    frame = _project(grids, crs).reset_index(drop=True)
    frame["grid_id"] = frame["grid_id"].astype(str)
    if stations is not None and len(stations):
        stations = _project(stations, crs).reset_index(drop=True)
        stations["grid_id"] = stations["grid_id"].astype(str)
    return frame, stations


def _grid_overview_rows(grids: gpd.GeoDataFrame | None) -> list[tuple[str, str]]:
    if grids is None or not len(grids):
        return []
    within = _within_band(grids)
    rows = [("Grids", f"{len(grids)}"),
            ("Grids in band", f"{int(within.sum())} ({_share(float(within.mean()))})")]
    if "max_minutes" in grids:
        rows.append(("Worst grid walk", _minutes(grids["max_minutes"].max())))
    return rows


def _grids_subtitle(grids: gpd.GeoDataFrame) -> str:
    pop = grids["population"].astype(float) if "population" in grids else pd.Series([], dtype=float)
    sizes = f"{_int(pop.min())}–{_int(pop.max())}" if len(pop) else "–"
    parts = [f"{_int(pop.sum())} residents, {sizes} per grid",
             f"{int(_within_band(grids).sum())} of {len(grids)} grids within the band"]
    if "max_minutes" in grids:
        parts.append(f"worst walk to a grid station {_minutes(grids['max_minutes'].max())}")
    return "  ·  ".join(parts)


def _short_grid_id(grid_id: str, community_id: str) -> str:
    """'C07-G03' -> 'G03' on its community's page."""
    return grid_id.removeprefix(f"{community_id}-")


def _grid_table(ax: Axes, grids: gpd.GeoDataFrame, community_id: str) -> None:
    """One line per grid (number, residents, households, mean and worst walk), grids outside
    their band in red, then the notes of the grids that have one."""
    households = "households" in grids
    columns = [("grid", 0.0), ("residents", 0.16), *([("househ.", 0.36)] if households else []),
               ("mean walk", 0.55 if households else 0.40),
               ("worst walk", 0.78 if households else 0.68)]
    size = 8.0 if len(grids) <= 24 else 6.5
    step = 0.028 if len(grids) <= 24 else 0.021
    y = 1.0
    for name, x in columns:
        ax.text(x, y, name, fontsize=size, fontweight="bold", va="top", transform=ax.transAxes)
    y -= step * 1.3
    within = _within_band(grids)
    for (_, row), ok in zip(grids.iterrows(), within):
        color = "#111111" if ok else STYLE["out_of_band"]
        values = [_short_grid_id(str(row["grid_id"]), community_id),
                  _int(row.get("population", float("nan")))]
        if households:
            values.append(_int(row["households"]))
        values += [_minutes(row.get("mean_minutes")), _minutes(row.get("max_minutes"))]
        for (_, x), value in zip(columns, values):
            ax.text(x, y, value, fontsize=size, va="top", color=color, transform=ax.transAxes)
        y -= step
    ax.text(0.0, y - 0.01, f"{int(within.sum())} of {len(grids)} within the band (red: outside)",
            fontsize=7.5, va="top", color="#444444", transform=ax.transAxes)
    y -= 0.045
    notes = [(row["grid_id"], str(row["note"])) for _, row in grids.iterrows()
             if "note" in grids and isinstance(row["note"], str) and row["note"]]
    for grid_id, note in notes:
        if y < 0.02:
            ax.text(0.0, y, "… (more notes in the grids layer)", fontsize=7, va="top",
                    color="#444444", transform=ax.transAxes)
            break
        text = textwrap.wrap(f"{_short_grid_id(str(grid_id), community_id)}: {note}", 70)
        ax.text(0.0, y, "\n".join(text[:3]), fontsize=7, va="top", color="#333333",
                transform=ax.transAxes, linespacing=1.2)
        y -= 0.022 * min(len(text), 3) + 0.008


def _page() -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=PAGE_SIZE_IN)


def _metric_crs(plan: Plan) -> pyproj.CRS | None:
    crs = plan.communities.crs or plan.units.crs
    if crs is None:
        msg = "the plan's layers have no CRS; write the plan with `covplan plan` and read it back."
        raise InputError(msg)
    work = getattr(plan, "work_crs", None)
    if work is not None:
        return pyproj.CRS.from_user_input(work)
    if pyproj.CRS.from_user_input(crs).is_geographic:
        return plan.units.estimate_utm_crs()
    return pyproj.CRS.from_user_input(crs)


def _project(frame: gpd.GeoDataFrame, crs: pyproj.CRS) -> gpd.GeoDataFrame:
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    return frame.to_crs(crs) if frame.crs is not None else frame.set_crs(crs)


def _natural_key(text: str) -> list:
    """'C2' before 'C10': digits compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", str(text)) if part]


def _neighbour_colors(communities: gpd.GeoDataFrame) -> list[str]:
    """Greedy colouring (largest first, ties by id) so that touching communities differ."""
    n = len(communities)
    if not n:
        return []
    geoms = communities.geometry.buffer(1.0)
    left, right = geoms.sindex.query(geoms, predicate="intersects")
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for a, b in zip(left.tolist(), right.tolist()):
        if a != b:
            neighbours[a].add(b)
            neighbours[b].add(a)
    ids = communities["community_id"].astype(str).tolist()
    order = sorted(range(n), key=lambda i: (-len(neighbours[i]), _natural_key(ids[i])))
    chosen: dict[int, int] = {}
    for i in order:
        taken = {chosen[j] for j in neighbours[i] if j in chosen}
        chosen[i] = next(k for k in range(len(FILL_COLORS) + n) if k not in taken)
    return [FILL_COLORS[chosen[i] % len(FILL_COLORS)] for i in range(n)]


def _within_band(communities: gpd.GeoDataFrame) -> np.ndarray:
    if "within_tolerance" not in communities:
        return np.ones(len(communities), dtype=bool)
    return communities["within_tolerance"].map(_truthy).to_numpy(dtype=bool)


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value) if value is not None and not pd.isna(value) else False


def _previous_ids(text) -> list[str]:
    """'C03 (4,512); C07 (2,100)' -> ['C03', 'C07'] (as metrics writes previous_ids)."""
    return list(parse_previous_ids(text))


def _num(value: float) -> str:
    """Minutes for labels: 5, 2.7 (one decimal at most)."""
    return f"{round(value, 1):g}"


def _int(value: float) -> str:
    return f"{value:,.0f}"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _minutes(value) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{value:.1f} min" if np.isfinite(value) else "–"


def _default_title(plan: Plan) -> str:
    count = len(plan.communities)
    if plan.previous is not None:
        return f"Community plan: {len(plan.previous)} old → {count} communities"
    return f"Community plan: {count} communities"


def _headline(plan: Plan) -> str:
    r, config = plan.report, plan.config
    communities = r.get("communities", len(plan.communities))
    return (f"{communities} communities  ·  {_share(r.get('coverage_share'))} of residents within "
            f"{config.max_minutes:g} min of their center  ·  "
            f"{_share(r.get('within_tolerance_pop_share'))} of residents in balanced communities "
            f"({_int(config.target_pop)} ± {config.tolerance:.0%})")


def _overview_rows(plan: Plan, band: tuple[float, float]) -> list[tuple[str, str]]:
    r, config = plan.report, plan.config
    communities = r.get("communities", len(plan.communities))
    within = round((r.get("within_tolerance_share") or 0.0) * communities)
    rows = [("Communities", f"{communities}"),
            ("Residents", _int(r.get("population_total", plan.units["pop"].sum()
                                     if "pop" in plan.units else 0))),
            ("Target", f"{_int(config.target_pop)} ± {config.tolerance:.0%}"),
            ("Band", f"{_int(band[0])} – {_int(band[1])}"),
            ("Communities in band", f"{within} ({_share(r.get('within_tolerance_share'))})"),
            ("Residents in band", _share(r.get("within_tolerance_pop_share"))),
            (f"Within {config.max_minutes:g} min", _share(r.get("coverage_share")))]
    if r.get("mean_minutes") is not None:
        rows.append(("Mean / worst walk",
                     f"{r['mean_minutes']:.1f} / {r.get('max_minutes', float('nan')):.1f} min"))
    if r.get("new_centers") is not None:
        rows.append(("Centers kept / new",
                     f"{len(plan.centers) - r['new_centers']} / {r['new_centers']}"))
    if plan.previous is not None:
        rows.append(("Old communities", f"{len(plan.previous)}"))
    if r.get("stability_share") is not None:
        rows.append(("Staying in theirs", _share(r["stability_share"])))
    if r.get("exception_communities"):
        count = f"{r['exception_communities']} ({_int(r.get('exception_population', 0))} residents)"
        rows.append(("Exceptions", count))
    return rows


def _page_subtitle(row: pd.Series, band: tuple[float, float]) -> str:
    pop = row.get("population", float("nan"))
    within = _truthy(row.get("within_tolerance", True))
    state = "within the band" if within else "outside the band"
    parts = [f"{_int(pop)} residents ({state} {_int(band[0])}–{_int(band[1])})"]
    if row.get("mean_minutes") is not None:
        parts.append(f"mean walk {_minutes(row.get('mean_minutes'))}, "
                     f"worst {_minutes(row.get('max_minutes'))}")
    if row.get("district") not in (None, "") and not pd.isna(row.get("district")):
        parts.append(f"district {row['district']}")
    return "  ·  ".join(parts)


def _community_rows(row: pd.Series, center: gpd.GeoDataFrame, band: tuple[float, float],
                    max_minutes: float) -> list[tuple[str, str]]:
    pop = row.get("population", float("nan"))
    within = _truthy(row.get("within_tolerance", True))
    rows = [("Residents", _int(pop)),
            ("Within band", f"{'yes' if within else 'NO'} ({_int(band[0])}–{_int(band[1])})"),
            ("Mean walk", _minutes(row.get("mean_minutes"))),
            ("Worst walk", f"{_minutes(row.get('max_minutes'))} (limit {max_minutes:g})")]
    if len(center):
        first = center.iloc[0]
        kind = "existing" if _truthy(first.get("existing", False)) else "new site"
        rows.append(("Center", f"{first.get('center_id', row.get('center_id', '–'))} ({kind})"))
    if "contiguous" in row:
        rows.append(("Contiguous", "yes" if _truthy(row["contiguous"]) else "NO"))
    for key, label in (("district", "District"), ("exception", "Exception")):
        value = row.get(key)
        if value is not None and not pd.isna(value) and str(value):
            rows.append((label, str(value)))
    remote = row.get("remote_population")
    if remote is not None and not pd.isna(remote) and float(remote) > 0:
        rows.append(("Served remotely", _int(remote)))
    previous = row.get("previous_ids")
    if previous is not None and not pd.isna(previous) and str(previous):
        # no line break inside "C08 (2,584)": a no-break space, which textwrap does not split
        rows.append(("Replaces", str(previous).replace(" (", "\u00a0(")))
    note = row.get("note")
    rows.append(("Note", str(note) if note is not None and not pd.isna(note) and str(note)
                 else "–"))
    return rows


def _table(ax: Axes, rows: list[tuple[str, str]], *, top: float, width: float,
           key_width: float = 0.36, wrap: int = 40) -> float:
    """Two-column figures table drawn as text; long values wrap. Returns the y below it."""
    line = 0.032
    y = top
    for key, value in rows:
        lines = textwrap.wrap(value, wrap, break_long_words=True) or ["–"]
        if len(lines) > 6:
            lines = [*lines[:5], lines[5][: wrap - 2] + " …"]
        ax.text(0.0, y, key, fontsize=8.5, fontweight="bold", va="top", color="#333333",
                transform=ax.transAxes)
        ax.text(key_width * width, y, "\n".join(lines), fontsize=8.5, va="top", color="#111111",
                transform=ax.transAxes, linespacing=1.25)
        y -= line * len(lines) + 0.012
        ax.plot([0.0, width], [y + 0.006, y + 0.006], color="#dddddd", linewidth=0.5,
                transform=ax.transAxes, clip_on=False)
    return y


def _label(ax: Axes, x: float, y: float, text: str, *, size: float, color: str = "#111111",
           weight: str = "normal", style: str = "normal") -> None:
    import matplotlib.patheffects as pe

    ax.text(x, y, str(text), fontsize=size, color=color, fontweight=weight, fontstyle=style,
            ha="center", va="center", zorder=7, clip_on=True,
            path_effects=[pe.withStroke(linewidth=2.2, foreground="#ffffff")])


def _line_handle(color: str, width: float, label: str, linestyle="-"):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, linewidth=width, linestyle=linestyle, label=label)


def _center_handles() -> list:
    from matplotlib.lines import Line2D

    return [Line2D([], [], marker="o", color="none", markerfacecolor=color,
                   markeredgecolor="#ffffff", markersize=7, label=label)
            for color, label in ((STYLE["center_existing"], "existing center"),
                                 (STYLE["center_new"], "new center"))]


def _union_bounds(*bounds) -> tuple[float, float, float, float]:
    b = np.array([x for x in bounds if x is not None and np.all(np.isfinite(x))], dtype=float)
    if not len(b):
        return (0.0, 0.0, 1.0, 1.0)
    return (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())


def _frame(ax: Axes, bounds, *, pad: float) -> tuple[float, float, float, float]:
    """Fit `bounds` (padded) to the axes' shape at equal scale; no ticks. Returns the view."""
    xmin, ymin, xmax, ymax = (float(v) for v in bounds)
    if not all(np.isfinite([xmin, ymin, xmax, ymax])):
        xmin, ymin, xmax, ymax = 0.0, 0.0, 1.0, 1.0
    w, h = max(xmax - xmin, 1.0), max(ymax - ymin, 1.0)
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    w, h = w * (1 + 2 * pad), h * (1 + 2 * pad)
    fig_w, fig_h = ax.figure.get_size_inches()
    pos = ax.get_position()
    box_ratio = (pos.height * fig_h) / (pos.width * fig_w)
    if h / w > box_ratio:
        w = h / box_ratio
    else:
        h = w * box_ratio
    view = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    ax.set_xlim(view[0], view[2])
    ax.set_ylim(view[1], view[3])
    ax.set_aspect("equal", adjustable="box")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("#888888")
        spine.set_linewidth(0.6)
    ax.set_autoscale_on(False)
    return view


def _fill_small_holes(geom, min_area: float):
    """`geom` with the holes smaller than `min_area` filled (polygons; other kinds unchanged)."""
    from shapely.geometry import MultiPolygon, Polygon

    if geom is None or geom.is_empty:
        return geom
    if isinstance(geom, Polygon):
        holes = [ring for ring in geom.interiors if Polygon(ring).area >= min_area]
        return Polygon(geom.exterior, holes)
    if isinstance(geom, MultiPolygon):
        return MultiPolygon([_fill_small_holes(part, min_area) for part in geom.geoms])
    return geom


def _box(view):
    from shapely.geometry import box

    return box(*view)


def _nice_length(target_m: float) -> float:
    if target_m <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(target_m))
    for step in (10, 5, 2.5, 2, 1):
        if step * power <= 1.2 * target_m:
            return step * power
    return power


def _scale_bar(ax: Axes) -> None:
    """A two-segment black/white bar in the lower left, about a fifth of the map's width."""
    from matplotlib.patches import Rectangle

    ax.set_xlabel("")       # geopandas names the CRS axes; the scale bar says it all
    ax.set_ylabel("")

    xmin, xmax = ax.get_xlim()
    ymin, ymax = ax.get_ylim()
    width = xmax - xmin
    length = _nice_length(width / 5)
    x0, y0 = xmin + 0.03 * width, ymin + 0.035 * (ymax - ymin)
    height = 0.012 * (ymax - ymin)
    ax.add_patch(Rectangle((x0 - 0.012 * width, y0 - 1.4 * height), length + 0.024 * width,
                           4.6 * height, facecolor="#ffffff", edgecolor="none", alpha=0.8,
                           zorder=8))
    for k in range(2):
        ax.add_patch(Rectangle((x0 + k * length / 2, y0), length / 2, height,
                               facecolor="#222222" if k == 0 else "#ffffff",
                               edgecolor="#222222", linewidth=0.8, zorder=9))
    unit, div = ("km", 1000.0) if length >= 1000 else ("m", 1.0)
    for pos, value in ((0, 0), (length / 2, length / 2), (length, length)):
        text = f"{value / div:g}" + (f" {unit}" if pos == length else "")
        ax.text(x0 + pos, y0 + 1.5 * height, text, fontsize=7.5, ha="center", va="bottom",
                zorder=9)


def _north_arrow(ax: Axes) -> None:
    ax.annotate("N", xy=(0.955, 0.965), xytext=(0.955, 0.875), xycoords="axes fraction",
                textcoords="axes fraction", ha="center", va="top", fontsize=11,
                fontweight="bold", zorder=9,
                arrowprops={"arrowstyle": "-|>", "color": "#222222", "linewidth": 1.5,
                            "mutation_scale": 16},
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "#ffffff", "edgecolor": "none",
                      "alpha": 0.8})


def _footer(fig: Figure, number: int, total: int, plan: Plan) -> None:
    version = getattr(plan, "version", "") or ""
    fig.text(0.03, 0.018, f"covplan {version}".strip() + f"  ·  page {number} of {total}",
             fontsize=7, color=STYLE["credit"])
    fig.text(0.98, 0.018, f"Streets and paths {OSM_CREDIT}", fontsize=7, ha="right",
             color=STYLE["credit"])
