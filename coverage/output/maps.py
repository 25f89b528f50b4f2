"""
Folium maps of coverage results and plans, for planners to hand out.

Each `*_map` function returns a `folium.Map`; `m=` adds its layers to an existing map, so
``plan_map(plan, m=coverage_map(result))`` composes. Every layer sits in the layer control and has
tooltips; a title, a summary panel and one legend per coloured layer are Leaflet controls.
`save_map` writes a map as one self-contained HTML file (no CDN, see `covplan.output.offline`).

Maps draw only Leaflet vectors (circle markers, polygons, lines), text labels as Leaflet
DivIcons and plain HTML panels, so a self-contained file needs Leaflet alone: no marker-icon
fonts, Bootstrap, jQuery or D3. Offline, where tiles fail, `base=` (from
`covplan.output.basemap.base_layer`) gives the map its own streets, railways and water.
"""

from __future__ import annotations

import contextlib
import html
import itertools
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from branca.element import Element, MacroElement
from covplan.errors import DataSourceError
from covplan.metrics import rules_ceiling
from covplan.output.offline import map_html, walk_elements
from jinja2 import Template

if TYPE_CHECKING:
    from collections.abc import Iterator

    from covplan.assess import CoverageResult
    from covplan.plan.grids import Grids
    from covplan.plan.pipeline import Plan

logger = logging.getLogger(__name__)

OSM_ATTRIBUTION = "© OpenStreetMap contributors"
STYLE = {
    "line": "#333333",
    "previous_line": "#444444",
    "center_existing": "#1f4e9c",
    "center_new": "#1a9641",
    "uncovered": "#d7191c",
    "unreachable": "#777777",
    "forced_undersized": "#7b3294",
    # Residents per community by deviation from the target: blue under, pale within, red over.
    "deviation_colors": ["#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62",
                         "#b2182b"],
    "minutes_colors": ["#1a9641", "#a6d96a", "#fee08b", "#fdae61", "#d7191c"],
    "share_colors": ["#d7191c", "#fdae61", "#fee08b", "#a6d96a", "#1a9641"],
    "band_colors": {5.0: "#08519c", 10.0: "#3182bd", 15.0: "#6baed6"},
    "band_default": "#9ecae1",
    "density_colors": ["#ffffd4", "#fee391", "#fec44f", "#fe9929", "#ec7014", "#cc4c02",
                       "#8c2d04"],
    "density_breaks_km2": [1_000, 2_500, 5_000, 10_000, 20_000, 40_000],
    "density_h3_resolution": 9,     # hexagons of about 0.1 km²
    "unit_radius": 3,
    "center_radius": 7,
    "simplify_m": 5.0,              # display only: a few metres in the metric CRS
    # Walk areas are buffered streets: each block between them is a hole. Holes under a hectare
    # are filled for display (the area's outline and large barriers stay) to keep files small.
    "isochrone_simplify_m": 10.0,
    "isochrone_min_hole_m2": 10_000.0,
    "coordinate_step_deg": 1e-5,    # about one metre
    "points_pane": "coverage-points",
    # The offline base layer (see covplan.output.basemap): under the fills, above any tiles.
    "base_pane": "coverage-base",
    "streets_pane": "coverage-streets",
    "labels_pane": "coverage-labels",   # community labels: above the fills, under the points
    "base_street": {"trunk": ("#666666", 2.6), "primary": ("#6e6e6e", 2.0),
                    "secondary": ("#7a7a7a", 1.5), "tertiary": ("#8a8a8a", 1.1),
                    "residential": ("#a0a0a0", 0.7)},
    "base_water": "#a8cfee",
    "base_water_line": "#5b9bd5",
    "base_green": "#cfe8c0",
    "base_rail": "#555555",
    # Street names: trunk and primary streets, and secondary ones while at most this many
    # names; a label at the middle of each piece of at least `min_m`, the longest first, each
    # `gap_m` from the same name's labels and not overlapping another street label, whose box
    # at zoom 13.5 is taken as `char_m` a character wide and `line_m` high.
    "street_label_kinds": ("trunk", "primary"),
    "street_label_few_secondary": 25,
    "street_label_min_m": 300.0,
    "street_label_gap_m": 1_000.0,
    "street_label_char_m": 60.0,
    "street_label_line_m": 160.0,
    "center_outline_weight": 2,
    "label_center_gap_m": 120.0,   # community labels keep this far from service centers
    # Grids (网格) inside communities: thin lines over the fills, labels from this zoom on.
    "grid_line": "#3b3b3b",
    "grid_weight": 0.8,
    "grid_label_zoom": 15.0,
    "grid_station": "#3b3b3b",
}
WATER_KINDS = frozenset({"water", "river", "lake", "canal", "stream", "reservoir", "sea",
                         "riverbank", "pond", "basin", "wetland", "coastline"})
GREEN_KINDS = frozenset({"park", "forest", "wood", "grass", "garden", "cemetery", "meadow",
                         "recreation_ground", "nature_reserve"})
RAIL_KINDS = frozenset({"railway", "rail", "tram", "subway", "light_rail", "narrow_gauge"})
_PANEL_CSS = """<style>
.cov-panel {background: rgba(255,255,255,0.92); padding: 6px 9px; border-radius: 4px;
  box-shadow: 0 1px 5px rgba(0,0,0,0.35); font: 12px/1.45 "Helvetica Neue", Arial, sans-serif;
  color: #222; max-width: 320px;}
.cov-title {font-size: 15px; font-weight: bold;}
.cov-panel table {border-collapse: collapse;}
.cov-panel td {padding: 1px 4px; vertical-align: middle;}
.cov-swatch {display: inline-block; width: 16px; height: 11px; border: 1px solid #999;}
.cov-panel summary {cursor: pointer;}
.cov-panel details:not([open]) > summary {opacity: 0.85;}
.cov-north {padding: 3px 6px 2px; text-align: center; font-weight: bold; line-height: 1;}
</style>"""


class MapPanel(MacroElement):
    """
    A box of HTML in a corner of the map (title, summary or legend), as a Leaflet control.

    With `layer`, the panel shows only while that layer is switched on (a legend follows its
    layer). Hand-written because folium has no HTML control and branca's legend needs D3.
    """

    _template = Template("""
{% macro script(this, kwargs) %}
var {{ this.get_name() }} = L.control({position: {{ this.position|tojson }}});
{{ this.get_name() }}.onAdd = function () {
    var div = L.DomUtil.create("div", {{ this.css_class|tojson }});
    div.innerHTML = {{ this.content|tojson }};
    L.DomEvent.disableClickPropagation(div);
    L.DomEvent.disableScrollPropagation(div);
    return div;
};
{{ this.get_name() }}.addTo({{ this._parent.get_name() }});
{%- if this.layer %}
(function (map, layer, panel) {
    function follow() {
        panel.getContainer().style.display = map.hasLayer(layer) ? "" : "none";
    }
    map.on("overlayadd overlayremove", follow);
    follow();
})({{ this._parent.get_name() }}, {{ this.layer.get_name() }}, {{ this.get_name() }});
{%- endif %}
{% endmacro %}
""")

    def __init__(self, content: str, *, position: str = "bottomright", css_class: str = "",
                 layer: folium.map.Layer | None = None) -> None:
        super().__init__()
        self._name = "MapPanel"
        self.content = content
        self.position = position
        self.css_class = f"cov-panel {css_class}".strip()
        self.layer = layer

    def render(self, **kwargs: Any) -> None:
        super().render(**kwargs)
        self.get_root().header.add_child(Element(_PANEL_CSS), name="coverage_panel_css")


_LABEL_CSS = """<style>
.cov-label, .cov-base-label {background: none; border: none;}
.cov-label > div, .cov-base-label > div {position: absolute; transform: translate(-50%, -50%);
  white-space: nowrap; text-align: center; pointer-events: none;
  font: var(--cov-label-px, 11px)/1.15 "Helvetica Neue", Arial, sans-serif;
  text-shadow: 0 0 2px #fff, 0 0 2px #fff, 0 0 3px #fff, 0 0 4px #fff;}
.cov-label > div {color: #111;}
.cov-label b {font-size: 1.1em;}
.cov-base-label > div {color: #2b5d8a; font-style: italic; font-size: calc(0.9 *
  var(--cov-label-px, 11px));}
.cov-base-label.cov-rail > div {color: #444;}
.cov-base-label.cov-street > div {color: #4a4a4a; font-style: normal; font-size: calc(0.8 *
  var(--cov-label-px, 11px));}
.cov-map-hide-labels .cov-label, .cov-map-hide-labels .cov-base-label {display: none;}
</style>"""
_GRID_LABEL_CSS = """<style>
.cov-grid-label > div {color: #333; font-size: calc(0.8 * var(--cov-label-px, 11px));}
</style>"""


class LabelLayer(MacroElement):
    """
    Permanent text labels (Leaflet DivIcon markers, not interactive) added to the parent layer.

    `labels` are (lat, lon, html) rows, written as one compact array. The font follows the
    zoom: 11 px at zoom 13.5, 30 % larger or smaller per zoom level, hidden below 6 px.
    """

    _template = Template("""
{% macro script(this, kwargs) %}
(function (group, rows, css) {
    rows.forEach(function (r) {
        L.marker([r[0], r[1]], {pane: {{ this.pane|tojson }}, interactive: false,
            keyboard: false, icon: L.divIcon({className: css, html: "<div>" + r[2] + "</div>",
            iconSize: [0, 0]})}).addTo(group);
    });
})({{ this._parent.get_name() }}, {{ this.rows|tojson }}, {{ this.css_class|tojson }});
(function (map) {
    if (map._covLabelScale) { return; }
    map._covLabelScale = function () {
        var px = 11 * Math.pow(1.3, map.getZoom() - 13.5);
        var box = map.getContainer();
        box.style.setProperty("--cov-label-px", Math.min(px, 22).toFixed(1) + "px");
        box.classList.toggle("cov-map-hide-labels", px < 6);
    };
    map.on("zoomend", map._covLabelScale);
    map.whenReady(map._covLabelScale);
})({{ this._parent._parent.get_name() }});
{% if this.min_zoom is not none %}
(function (map, zoom, below) {
    var toggle = function () { map.getContainer().classList.toggle(below, map.getZoom() < zoom); };
    map.on("zoomend", toggle);
    map.whenReady(toggle);
})({{ this._parent._parent.get_name() }}, {{ this.min_zoom|tojson }}, {{ this.below|tojson }});
{% endif %}
{% endmacro %}
""")

    def __init__(self, labels: list[tuple[float, float, str]], *, css_class: str,
                 min_zoom: float | None = None) -> None:
        super().__init__()
        self._name = "LabelLayer"
        self.rows = [[round(lat, 5), round(lon, 5), text] for lat, lon, text in labels]
        self.css_class = css_class
        self.pane = STYLE["labels_pane"]
        # Labels shown from `min_zoom` on only: the map carries a class while zoomed out.
        self.min_zoom = None if min_zoom is None else float(min_zoom)
        key = "" if min_zoom is None else f"{round(100 * float(min_zoom))}"
        self.below, self.shown = f"cov-below-zoom-{key}", f"cov-from-zoom-{key}"
        if min_zoom is not None:
            self.css_class = f"{css_class} {self.shown}"

    def render(self, **kwargs: Any) -> None:
        super().render(**kwargs)
        self.get_root().header.add_child(Element(_LABEL_CSS), name="coverage_label_css")
        if self.min_zoom is not None:
            rule = f"<style>.{self.below} .{self.shown} {{display: none;}}</style>"
            self.get_root().header.add_child(Element(rule), name=f"coverage_{self.below}_css")


# --- saving and the base map --------------------------------------------------------------------

def save_map(fmap: folium.Map, path: str | os.PathLike[str], *,
             self_contained: bool = True) -> Path:
    """
    Write `fmap` as one HTML file.

    Parameters
    ----------
    fmap
        A folium map, e.g. from `plan_map`.
    path
        The HTML file to write (replaced if present).
    self_contained
        True: Leaflet and every script and style the map uses are embedded, taken from the
        packages installed with coverage-planner, so the file opens on a network without
        internet (only the base tiles are then missing). False: link them from CDNs (smaller).

    Returns
    -------
    Path
        The written file: the same bytes for the same map, however often it is saved.

    Raises
    ------
    InputError
        If `self_contained` and the map uses a folium plugin or icon that is not bundled.
    DataSourceError
        If the file cannot be written.
    """
    target = Path(path)
    with _render_leaves_no_trace(fmap):
        page = map_html(fmap, self_contained=self_contained)
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        msg = f"cannot write map '{target}': {exc.strerror}; choose another output folder."
        raise DataSourceError(msg) from exc
    logger.info("Wrote %s (%.0f kB, %s)", target, len(page.encode("utf-8")) / 1024,
                "self-contained" if self_contained else "CDN links")
    return target


@contextlib.contextmanager
def _render_leaves_no_trace(fmap: folium.Map) -> Iterator[None]:
    """Give every element of the map its children back once rendered: a render adds links,
    styles and scripts to the page and an add-to-map script to each layer, and the next render
    would add them again (folium issue #2237), so a map saved twice would differ."""
    kept = [(element, element._children.copy()) for element in walk_elements(fmap.get_root())]
    try:
        yield
    finally:
        for element, children in kept:
            element._children = children


def base_map(frame: gpd.GeoDataFrame, *, m: folium.Map | None = None) -> folium.Map:
    """A map fitted to `frame` (any CRS), with OSM tiles and their attribution, or `m` itself."""
    if m is not None:
        return m
    minx, miny, maxx, maxy = frame.to_crs(4326).total_bounds
    # Quarter zoom steps let the city fill the window instead of snapping a level out.
    fmap = folium.Map(location=[(miny + maxy) / 2, (minx + maxx) / 2], zoom_start=13,
                      tiles=None, control_scale=True, zoom_control="bottomleft",
                      zoom_snap=0.25, zoom_delta=0.5)
    folium.TileLayer("OpenStreetMap", name="OpenStreetMap", attr=OSM_ATTRIBUTION).add_to(fmap)
    fmap.fit_bounds([[miny, minx], [maxy, maxx]])
    return fmap


def titled_map(fmap: folium.Map, title: str, *, fresh: bool) -> None:
    """A title panel and page title on a map this module created; composed maps keep theirs."""
    if fresh:
        fmap.get_root().title = title
        MapPanel(html.escape(title), position="topleft", css_class="cov-title").add_to(fmap)
        MapPanel(_NORTH_ARROW, position="topright", css_class="cov-north").add_to(fmap)


# A north arrow (web maps are north-up); a fixed corner control, so it never scrolls away.
_NORTH_ARROW = ('<div class="cov-north-arrow" title="north">'
                '<svg width="18" height="22" viewBox="0 0 18 22" aria-hidden="true">'
                '<path d="M9 1 L16 21 L9 16 L2 21 Z" fill="#222" stroke="#222" '
                'stroke-linejoin="round"/><path d="M9 1 L9 16 L2 21 Z" fill="#fff"/></svg>'
                '<div style="font-size:11px">N</div></div>')


def finish_map(fmap: folium.Map) -> folium.Map:
    # The layer control lists the layers present when it renders and must come after them, so a
    # composed map gets one control, at the end.
    for key, child in list(fmap._children.items()):
        if isinstance(child, folium.LayerControl):
            del fmap._children[key]
    folium.LayerControl(collapsed=True).add_to(fmap)
    return fmap


# --- display data ---------------------------------------------------------------------------------

def geojson_layer(frame: gpd.GeoDataFrame, *, simplify_m: float = 0.0, min_hole_m2: float = 0.0) -> dict:
    """
    GeoJSON in lon/lat for display: holes under `min_hole_m2` filled, outlines thinned by
    `simplify_m` metres, coordinates rounded to about a metre, floats to two decimals, empty
    geometries dropped.
    """
    out = frame[~frame.geometry.is_empty & frame.geometry.notna()]
    if (simplify_m > 0 or min_hole_m2 > 0) and len(out):
        metric = out.to_crs(out.estimate_utm_crs())
        shapes = metric.geometry
        if min_hole_m2 > 0:
            shapes = shapes.apply(_fill_holes, min_hole_m2=min_hole_m2)
        out = metric.set_geometry(shapes.simplify(simplify_m, preserve_topology=True))
    out = out.to_crs(4326)
    shapes = out.geometry.values
    invalid = ~shapely.is_valid(shapes)
    if invalid.any():       # rounding coordinates needs valid input; repair for display only
        shapes = shapes.copy()
        shapes[invalid] = shapely.make_valid(shapes[invalid])
    out = out.set_geometry(shapely.set_precision(shapes, STYLE["coordinate_step_deg"]))
    out = out[~out.geometry.is_empty]
    for col in out.columns:
        if col != out.geometry.name and out[col].dtype.kind == "f":
            out[col] = out[col].replace([np.inf, -np.inf], np.nan).round(2)
    return out.to_geo_dict(na="null", show_bbox=False, drop_id=False)


def _fill_holes(shape, *, min_hole_m2: float):
    """`shape` without the holes smaller than `min_hole_m2` (metric CRS)."""
    if shape.geom_type == "MultiPolygon":
        return shapely.MultiPolygon([_fill_holes(p, min_hole_m2=min_hole_m2) for p in shape.geoms])
    if shape.geom_type != "Polygon":
        return shape
    return shapely.Polygon(shape.exterior, [ring for ring in shape.interiors
                                            if shapely.Polygon(ring).area >= min_hole_m2])


def _add_layer(fmap: folium.Map, frame: gpd.GeoDataFrame, *, name: str, style,
               fields: dict[str, str], style_columns: tuple[str, ...] = (), show: bool = True,
               simplify_m: float = 0.0, min_hole_m2: float = 0.0, popup: bool = False,
               marker: folium.CircleMarker | None = None) -> folium.map.Layer:
    """
    One GeoJSON layer with a tooltip of `fields` (column -> label) and optionally the same as a
    popup; an empty, labelled group when there is nothing to draw.
    """
    columns = list(dict.fromkeys([*fields, *style_columns]))
    data = geojson_layer(frame[columns + [frame.geometry.name]], simplify_m=simplify_m,
                    min_hole_m2=min_hole_m2)
    if not data["features"]:
        return folium.FeatureGroup(name=name, show=show).add_to(fmap)
    if marker is not None:
        _points_pane(fmap)
    names, labels = list(fields), list(fields.values())
    return folium.GeoJson(
        data, name=name, show=show, style_function=style, marker=marker,
        tooltip=folium.GeoJsonTooltip(fields=names, aliases=labels, localize=True, sticky=True),
        popup=folium.GeoJsonPopup(fields=names, aliases=labels, localize=True) if popup else None,
    ).add_to(fmap)


def _points_pane(fmap: folium.Map) -> None:
    # Points live in a pane above the polygons, so switching a polygon layer back on never
    # buries them; the pane must exist before the first layer that uses it.
    for child in fmap._children.values():
        if isinstance(child, folium.map.CustomPane) and child.name == STYLE["points_pane"]:
            return
    folium.map.CustomPane(STYLE["points_pane"], z_index=450, pointer_events=True).add_to(fmap)


def _pane(fmap: folium.Map, name: str, z_index: int) -> None:
    """A custom pane without pointer events, created once, before the layers using it."""
    for child in fmap._children.values():
        if isinstance(child, folium.map.CustomPane) and child.name == name:
            return
    folium.map.CustomPane(name, z_index=z_index, pointer_events=False).add_to(fmap)


def _base_style(feature: dict) -> dict:
    props = feature["properties"]
    kind = props["kind"]
    common = {"className": "cov-base"}
    if props["street"]:
        color, weight = STYLE["base_street"].get(kind, STYLE["base_street"]["residential"])
        return common | {"color": color, "weight": weight, "opacity": 0.6, "fill": False,
                         "lineCap": "round", "lineJoin": "round",
                         "className": "cov-base cov-base-street"}
    if kind in WATER_KINDS:
        return common | {"color": STYLE["base_water_line"], "weight": 1.5, "opacity": 0.8,
                         "fillColor": STYLE["base_water"], "fillOpacity": 0.75,
                         "className": "cov-base cov-base-water"}
    if kind in RAIL_KINDS:   # a dark line; white dashes go on top (`_rail_dashes`)
        return common | {"color": STYLE["base_rail"], "weight": 4, "opacity": 0.9,
                         "fill": False, "className": "cov-base cov-base-rail"}
    if kind in GREEN_KINDS:
        return common | {"color": "#9cc58a", "weight": 0.8, "fillColor": STYLE["base_green"],
                         "fillOpacity": 0.8}
    return common | {"color": "#999999", "weight": 0.8, "dashArray": "2 3",
                     "fillColor": "#eeeeee", "fillOpacity": 0.5}


def _rail_dashes(_feature: dict) -> dict:
    """White dashes along a railway's dark line: the railway look, unlike dashed borders."""
    return {"color": "#ffffff", "weight": 2, "opacity": 1, "dashArray": "8 8", "fill": False,
            "className": "cov-base cov-base-rail-dashes"}


def add_base(fmap: folium.Map, base: gpd.GeoDataFrame) -> folium.map.Layer:
    """
    The offline base layer from `covplan.output.basemap.base_layer`: parks pale green under
    every other layer; water light blue, streets as thin grey lines and railways dashed just
    above the community fills (under them they would fade out), below labels and points;
    the features' names and the main streets' names (see `_street_labels`) as small
    permanent labels. Not interactive: hovering reaches the communities beneath.
    """
    _pane(fmap, STYLE["base_pane"], 350)
    _pane(fmap, STYLE["streets_pane"], 410)
    _pane(fmap, STYLE["labels_pane"], 440)
    frame = base[~base.geometry.is_empty & base.geometry.notna()].to_crs(4326)
    group = folium.FeatureGroup(name="streets and water (base)", show=True).add_to(fmap)
    linear = frame.geometry.geom_type.isin(["LineString", "MultiLineString"]).to_numpy()
    # Water and lines go over the fills (nobody lives on a river); parks and the like under.
    upper = linear | frame["kind"].isin(WATER_KINDS).to_numpy()
    parts = ((frame[~upper], STYLE["base_pane"]), (frame[upper], STYLE["streets_pane"]))
    for part, pane in parts:
        if len(part):
            part = _one_line_per_street_class(part)
            data = part[["kind", "street", part.geometry.name]].to_geo_dict(
                na="null", show_bbox=False, drop_id=True)
            folium.GeoJson(data, style_function=_base_style, pane=pane, interactive=False,
                           control=False).add_to(group)
    rails = frame[linear & frame["kind"].isin(RAIL_KINDS).to_numpy()]
    if len(rails):
        data = rails[[rails.geometry.name]].to_geo_dict(na="null", show_bbox=False, drop_id=True)
        folium.GeoJson(data, style_function=_rail_dashes, pane=STYLE["streets_pane"],
                       interactive=False, control=False).add_to(group)
    named = frame[(frame["name"].fillna("").astype(str) != "") & ~frame["street"].astype(bool)]
    if len(named):
        lines = named.geometry.geom_type.isin(["LineString", "MultiLineString"])
        metric = named.to_crs(named.estimate_utm_crs())
        spots = metric.geometry.representative_point()
        along = metric.geometry[lines.to_numpy()]
        if len(along):   # lines: labelled a third of the way along, off the middle of the city
            spots[lines.to_numpy()] = along.interpolate(0.3, normalized=True)
        spots = gpd.GeoSeries(spots, crs=metric.crs).to_crs(4326)
        LabelLayer([(p.y, p.x, html.escape(str(n))) for p, n in zip(spots, named["name"])],
                   css_class="cov-base-label").add_to(group)
    streets = _street_labels(frame)
    if streets:
        LabelLayer(streets, css_class="cov-base-label cov-street").add_to(group)
    return group


def _one_line_per_street_class(part: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """`part` with its street rows (one per class and name) joined into one row per class."""
    streets = part["street"].astype(bool).to_numpy()
    if streets.sum() <= 1:
        return part
    joined = [part.iloc[[rows[0]]].set_geometry([shapely.multilinestrings(
                  shapely.get_parts(part.geometry.to_numpy()[rows]))], crs=part.crs)
              for rows in part[streets].groupby("kind", sort=False).indices.values()
              for rows in [np.flatnonzero(streets)[rows]]]
    return pd.concat([part[~streets], *joined], ignore_index=True)


def _street_labels(frame: gpd.GeoDataFrame) -> list[tuple[float, float, str]]:
    """
    (lat, lon, name) labels of the named main streets of a base layer (EPSG:4326): trunk and
    primary, plus secondary when few; at most one label per name per `street_label_gap_m`.
    """
    streets = frame[frame["street"].astype(bool).to_numpy()
                    & (frame["name"].fillna("").astype(str) != "").to_numpy()]
    kinds = list(STYLE["street_label_kinds"])
    if streets.loc[streets["kind"] == "secondary", "name"].nunique() <= STYLE[
            "street_label_few_secondary"]:
        kinds.append("secondary")
    streets = streets[streets["kind"].isin(kinds)]
    if not len(streets):
        return []
    metric = streets.to_crs(streets.estimate_utm_crs())
    rank = {kind: i for i, kind in enumerate(kinds)}
    pieces = [(rank[kind], -piece.length, str(name), piece)
              for kind, name, shape in zip(metric["kind"], metric["name"], metric.geometry)
              for piece in shapely.get_parts(shape)
              if piece.length >= STYLE["street_label_min_m"]]
    char_m, line_m = STYLE["street_label_char_m"], STYLE["street_label_line_m"]
    placed: list[tuple[str, shapely.Point]] = []
    for _, _, name, piece in sorted(pieces, key=lambda p: p[:3]):   # main, long pieces first
        mid = piece.interpolate(0.5, normalized=True)
        if all(mid.distance(p) >= STYLE["street_label_gap_m"] if n == name
               else (abs(mid.x - p.x) >= char_m * (len(n) + len(name)) / 2
                     or abs(mid.y - p.y) >= line_m) for n, p in placed):
            placed.append((name, mid))
    if not placed:
        return []
    spots = gpd.GeoSeries([p for _, p in placed], crs=metric.crs).to_crs(4326)
    return [(p.y, p.x, html.escape(n)) for (n, _), p in zip(placed, spots)]


def add_community_labels(fmap: folium.Map, communities: gpd.GeoDataFrame, *, pop_column: str,
                         centers: gpd.GeoDataFrame | None = None) -> folium.map.Layer:
    """
    One permanent label per community: its id and residents (e.g. "N07" over "9,812"), sized
    with the zoom, in the layer "community labels". A label sits at the point of the community
    farthest inside it, away from the `centers` so their markers do not cover it.
    """
    _pane(fmap, STYLE["labels_pane"], 440)
    frame = communities[~communities.geometry.is_empty & communities.geometry.notna()]
    if len(frame):
        metric = frame.to_crs(frame.estimate_utm_crs())
        avoid = (centers.to_crs(metric.crs).geometry.buffer(STYLE["label_center_gap_m"])
                 .union_all() if centers is not None and len(centers) else None)
        points = [_label_point(shape, avoid) for shape in metric.geometry]
        spots = gpd.GeoSeries(points, crs=metric.crs).to_crs(4326)
    else:
        spots = frame.geometry
    ids = (frame["community_id"].astype(str) if "community_id" in frame
           else frame.index.astype(str))
    pops = frame[pop_column] if pop_column in frame else pd.Series([np.nan] * len(frame))
    labels = []
    for point, cid, pop in zip(spots, ids, pops):
        count = f"<br>{_int(pop)}" if pd.notna(pop) else ""
        labels.append((point.y, point.x, f"<b>{html.escape(cid)}</b>{count}"))
    group = folium.FeatureGroup(name="community labels", show=True).add_to(fmap)
    LabelLayer(labels, css_class="cov-label").add_to(group)
    return group


def _label_point(shape, avoid):
    """The centre of the largest circle inside `shape` (less `avoid`), to about 10 m."""
    if avoid is not None:
        free = shape.difference(avoid)
        shape = free if free.area > 0.2 * shape.area else shape
    if shape.geom_type == "MultiPolygon":
        shape = max(shape.geoms, key=lambda g: g.area)
    if shape.geom_type != "Polygon":
        return shape.representative_point()
    from shapely.ops import polylabel

    return polylabel(shape, tolerance=10.0)


def _present(frame: pd.DataFrame, wanted: dict[str, str]) -> dict[str, str]:
    return {column: label for column, label in wanted.items() if column in frame.columns}


def _legend(title: str, rows: list[tuple[str, str]]) -> str:
    """A legend: a title and one swatch and label per class; a click on the title folds it."""
    body = "".join(f'<tr><td><span class="cov-swatch" style="background:{color}"></span></td>'
                   f"<td>{html.escape(label)}</td></tr>" for color, label in rows)
    return _folding(f"<b>{html.escape(title)}</b>", f"<table>{body}</table>")


def _folding(head: str, body: str) -> str:
    """A panel's content that folds to its first line on a click (open at first)."""
    return f"<details open><summary>{head}</summary>{body}</details>"


def _step_labels(edges: list[float], fmt) -> list[str]:
    """'under a', 'a – b', ..., 'z or more' for classes split at `edges`."""
    return ([f"under {fmt(edges[0])}"]
            + [f"{fmt(a)} – {fmt(b)}" for a, b in itertools.pairwise(edges)]
            + [f"{fmt(edges[-1])} or more"])


def _classes(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Class index per value for (-inf, e0), [e0, e1), ..., [e_last, inf); NaN and inf -> -1."""
    values = np.asarray(values, dtype=float)
    index = np.searchsorted(np.asarray(edges, dtype=float), values, side="right")
    return np.where(np.isfinite(values), index, -1)


def _point_style(color: str, *, radius: float, class_name: str, stroke: str = "#ffffff",
                 fill_opacity: float = 0.9, weight: float = 1) -> dict:
    return {"color": stroke, "weight": weight, "fill": True, "fillColor": color,
            "fillOpacity": fill_opacity, "radius": radius, "className": class_name,
            "pane": STYLE["points_pane"]}


def _round_minutes(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    """Minutes to one decimal for display, in the columns `frame` has."""
    for column in columns:
        if column in frame.columns:
            frame[column] = frame[column].astype(float).round(1)


def _int(value: float) -> str:
    return f"{value:,.0f}"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


# --- plan layers ----------------------------------------------------------------------------------

def population_legend(target_pop: float, tolerance: float) -> tuple[list[float], list[str]]:
    """The classes of a community's residents: their bounds as deviations from the target
    (± tolerance / 2, ± tolerance, ± 2 tolerance) and their legend labels, "(within)" on the
    three inside the band. Shared by the web map and the QGIS styles."""
    t = tolerance
    deviations = [-2 * t, -t, -t / 2, t / 2, t, 2 * t]
    labels = _step_labels([target_pop * (1 + d) for d in deviations], _int)
    return deviations, [f"{label} (within)" if 2 <= i <= 4 else label
                        for i, label in enumerate(labels)]


def add_plan_communities(fmap: folium.Map, communities: gpd.GeoDataFrame, *, target_pop: float,
                         tolerance: float) -> folium.map.Layer:
    """Communities filled by residents relative to the target (pale = within), with a legend."""
    deviations, labels = population_legend(target_pop, tolerance)
    colors = STYLE["deviation_colors"]
    frame = communities.copy()
    deviation = np.round(frame["population"].to_numpy(dtype=float) / target_pop - 1, 9)
    # Classes close towards the target, so exactly target ± tolerance falls in a "within" class.
    frame["deviation_class"] = np.where(
        deviation <= 0, np.searchsorted(deviations, deviation, side="right"),
        np.searchsorted(deviations, deviation, side="left"))
    frame["deviation"] = [f"{d:+.0%}" for d in deviation]
    _round_minutes(frame, ("mean_minutes", "max_minutes"))
    fields = _present(frame, {
        "community_id": "community", "population": "residents", "deviation": "from target",
        "center_id": "center", "mean_minutes": "mean walk (min)",
        "max_minutes": "longest walk (min)", "district": "district",
        "previous_ids": "from old communities (residents)", "note": "note"})

    def style(feature):
        return {"color": STYLE["line"], "weight": 1.5, "fillOpacity": 0.55,
                "fillColor": colors[int(feature["properties"]["deviation_class"])],
                "className": "cov-community"}

    layer = _add_layer(fmap, frame, name="communities", style=style, fields=fields,
                       style_columns=("deviation_class",), simplify_m=STYLE["simplify_m"])
    title = f"Residents per community (target {_int(target_pop)} ± {tolerance:.0%})"
    MapPanel(_legend(title, list(zip(colors, labels))), layer=layer).add_to(fmap)
    return layer


def add_plan_centers(fmap: folium.Map, centers: gpd.GeoDataFrame,
                     communities: gpd.GeoDataFrame) -> folium.map.Layer:
    """Planned centers (kept sites blue, new sites green); popups give their community's figures."""
    figures = [c for c in ("community_id", "population", "mean_minutes", "max_minutes",
                           "previous_ids") if c in communities.columns]
    frame = centers.drop(columns=[c for c in figures if c != "community_id"], errors="ignore")
    frame = frame.merge(pd.DataFrame(communities[figures]), on="community_id", how="left")
    frame = gpd.GeoDataFrame(frame, geometry=centers.geometry.name, crs=centers.crs)
    frame["site"] = np.where(frame["existing"].astype(bool), "existing center", "new site")
    _round_minutes(frame, ("mean_minutes", "max_minutes"))
    fields = _present(frame, {
        "center_id": "center", "site": "site", "community_id": "community",
        "population": "residents", "mean_minutes": "mean walk (min)",
        "max_minutes": "longest walk (min)", "previous_ids": "replaces old communities"})
    radius = STYLE["center_radius"]

    def style(feature):
        existing = feature["properties"]["site"] == "existing center"
        color = STYLE["center_existing"] if existing else STYLE["center_new"]
        return _point_style(color, radius=radius, class_name="cov-center", stroke="#ffffff",
                            fill_opacity=1, weight=STYLE["center_outline_weight"])

    layer = _add_layer(fmap, frame, name="service centers", style=style, fields=fields,
                       popup=True, marker=folium.CircleMarker(radius=radius))
    MapPanel(_legend("Service centers", [(STYLE["center_existing"], "existing center kept"),
                                         (STYLE["center_new"], "new site")]),
             layer=layer).add_to(fmap)
    return layer


def add_previous(fmap: folium.Map, previous: gpd.GeoDataFrame) -> folium.map.Layer:
    """Old community boundaries, dashed, without fill."""
    fields = _present(previous, {"community_id": "old community", "name": "name",
                                 "population": "residents"})

    def style(_feature):
        return {"color": STYLE["previous_line"], "weight": 1.5, "dashArray": "6 4",
                "fill": False, "className": "cov-previous"}

    return _add_layer(fmap, previous, name="old communities (dashed)", style=style,
                      fields=fields or {"community_id": "old community"},
                      simplify_m=STYLE["simplify_m"])


def add_isochrones(fmap: folium.Map, isochrones: gpd.GeoDataFrame, *,
                   show: bool = True) -> list[folium.map.Layer]:
    """One layer per time band, the largest drawn first so smaller bands stay visible."""
    layers = []
    frame = isochrones.copy()
    if "area_m2" in frame.columns:
        frame["area_km2"] = (frame["area_m2"].astype(float) / 1e6).round(2)
    fields = _present(frame, {"center_id": "center", "community_id": "community",
                              "minutes": "minutes", "area_km2": "area (km²)"})
    for band in sorted(frame["minutes"].unique(), reverse=True):
        color = STYLE["band_colors"].get(float(band), STYLE["band_default"])

        def style(_feature, color=color):
            return {"color": color, "weight": 1, "fillColor": color, "fillOpacity": 0.12,
                    "className": "cov-isochrone"}

        layers.append(_add_layer(fmap, frame[frame["minutes"] == band], style=style,
                                 name=f"{band:g}-minute walk", fields=fields, show=show,
                                 simplify_m=STYLE["isochrone_simplify_m"],
                                 min_hole_m2=STYLE["isochrone_min_hole_m2"]))
    return layers


def add_uncovered(fmap: folium.Map, units: gpd.GeoDataFrame, *, minutes_column: str,
                  max_minutes: float) -> folium.map.Layer:
    """
    Residents beyond `max_minutes` of their center (or reaching none), as red circles sized by
    population, in their own layer.
    """
    minutes = units[minutes_column].astype(float)
    out = units[(~(minutes <= max_minutes)) & (units["pop"] > 0)].copy()
    out["minutes"] = out[minutes_column].astype(float).round(1)
    total = int(out["pop"].sum())
    count = f"{total:,}" if total else "none"
    return _resident_circles(fmap, out, color=STYLE["uncovered"], class_name="cov-uncovered",
                             name=f"uncovered residents (> {max_minutes:g} min): {count}",
                             fields={"unit_id": "unit", "pop": "residents",
                                     "minutes": "walk (min)", "community_id": "community"})


def _resident_circles(fmap: folium.Map, out: gpd.GeoDataFrame, *, color: str, class_name: str,
                      name: str, fields: dict[str, str], show: bool = True) -> folium.map.Layer:
    """Units as circles of `color` sized by residents, in a layer of their own."""
    scale = max(float(out["pop"].max()), 1.0) if len(out) else 1.0
    # Whole-pixel radii keep the number of distinct styles, and so the file, small.
    out["radius"] = np.round(4 + 8 * np.sqrt(out["pop"].to_numpy(dtype=float) / scale))

    def style(feature):
        return _point_style(color, radius=feature["properties"]["radius"], class_name=class_name,
                            stroke=color, fill_opacity=0.5)

    return _add_layer(fmap, out, name=name, style=style, fields=_present(out, fields),
                      style_columns=("radius",), marker=folium.CircleMarker(radius=4), show=show)


def add_forced_undersized(fmap: folium.Map, units: gpd.GeoDataFrame, *,
                          min_pop: float, max_minutes: float) -> folium.map.Layer | None:
    """
    Residents who can only be in an undersized community, whatever the plan (no site they reach
    gathers `min_pop` within the limit; see `covplan.solve.bounds`), as purple circles in their own
    layer. None when the plan has no such column or no such resident.
    """
    if "forced_undersized" not in units.columns:
        return None
    out = units[units["forced_undersized"].astype(bool) & (units["pop"] > 0)].copy()
    if out.empty:
        return None
    out["where"] = np.where(out["island"].astype(bool), "network island", "remote pocket")
    name = (f"residents no balanced community can reach (< {min_pop:,.0f} within "
            f"{max_minutes:g} min): {int(out['pop'].sum()):,}")
    return _resident_circles(fmap, out, color=STYLE["forced_undersized"], class_name="cov-forced",
                             name=name, show=False,
                             fields={"unit_id": "unit", "pop": "residents", "where": "cut off as",
                                     "community_id": "community"})


def add_density(fmap: folium.Map, units: gpd.GeoDataFrame, *,
                show: bool = False) -> folium.map.Layer:
    """Residents per km² on H3 hexagons (about 0.1 km² each), with a legend."""
    import h3

    resolution = STYLE["density_h3_resolution"]
    points = units[units["pop"] > 0].to_crs(4326)
    cells = [h3.latlng_to_cell(y, x, resolution)
             for x, y in zip(points.geometry.x.to_numpy(), points.geometry.y.to_numpy())]
    pop = pd.Series(points["pop"].to_numpy(), index=cells).groupby(level=0).sum().sort_index()
    polygons = [shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(cell)])
                for cell in pop.index]
    area = np.array([h3.cell_area(c, unit="km^2") for c in pop.index])
    frame = gpd.GeoDataFrame({"residents": pop.to_numpy().astype("int64"),
                              "per_km2": np.round(pop.to_numpy() / area, -1)},
                             geometry=polygons, crs=4326)
    breaks, colors = STYLE["density_breaks_km2"], STYLE["density_colors"]
    frame["density_class"] = _classes(frame["per_km2"].to_numpy(), breaks)

    def style(feature):
        return {"color": "#999999", "weight": 0.3, "fillOpacity": 0.6, "className": "cov-density",
                "fillColor": colors[int(feature["properties"]["density_class"])]}

    layer = _add_layer(fmap, frame, name="population density", style=style, show=show,
                       fields={"residents": "residents", "per_km2": "residents per km²"},
                       style_columns=("density_class",))
    MapPanel(_legend("Residents per km²", list(zip(colors, _step_labels(breaks, _int)))),
             layer=layer).add_to(fmap)
    return layer


def _plan_summary(plan: Plan) -> str:
    r, config = plan.report, plan.config
    communities = r.get("communities", len(plan.communities))
    within = round((r.get("within_tolerance_share") or 0.0) * communities)
    lines = [
        f"<b>{communities} communities</b>, {_int(r.get('population_total', 0))} residents",
        (f"{_share(r.get('coverage_share'))} of residents within {config.max_minutes:g} min "
         "of their own community's center"),
        (f"{within} of {communities} communities ({_share(r.get('within_tolerance_share'))}) "
         f"within {_int(config.target_pop)} ± {config.tolerance:.0%}"),
    ]
    if r.get("mean_minutes") is not None:
        lines.append(f"mean walk {r['mean_minutes']:.1f} min, longest {r['max_minutes']:.1f} min")
    if r.get("new_centers") is not None:
        lines.append(f"{len(plan.centers) - r['new_centers']} existing centers kept, "
                     f"{r['new_centers']} new sites")
    if r.get("within_tolerance_pop_share") is not None:
        rules = rules_ceiling(r)
        without_tiny = "" if rules is None else f", {_share(rules)} without tiny communities"
        lines.append(f"{_share(r['within_tolerance_pop_share'])} of residents in balanced "
                     f"communities (at most {_share(r['within_tolerance_pop_share_ceiling'])} "
                     f"possible{without_tiny})")
    if r.get("exception_communities"):
        lines.append(f"{r['exception_communities']} exception communities "
                     f"({_int(r['exception_population'])} residents no balanced community can reach)")
    if r.get("stability_share") is not None:
        lines.append(f"{_share(r['stability_share'])} of residents keep their community")
    return _folding(lines[0], "<br>".join(lines[1:]))


def plan_map(plan: Plan, *, m: folium.Map | None = None,
             base: gpd.GeoDataFrame | None = None,
             grids: Grids | gpd.GeoDataFrame | None = None) -> folium.Map:
    """
    The plan for handing out: communities by residents vs target (with a legend) and labelled
    with their id and residents, service centers with their figures, 15-minute walk areas,
    uncovered residents, old boundaries dashed, population density, a title, a summary panel,
    a north arrow and a scale bar. `base` (from `covplan.output.basemap.base_layer`) is drawn
    under everything, so the map shows streets and water offline, where tiles fail. `grids`
    (`covplan.plan.grids.plan_grids`) adds the grids inside the communities (`add_grids_layer`).
    """
    fmap = base_map(plan.communities, m=m)
    if base is not None:
        add_base(fmap, base)
    count = f"{len(plan.communities)} communities"
    title = (f"Community plan: {len(plan.previous)} → {count}" if plan.previous is not None
             else f"Community plan: {count}")
    titled_map(fmap, title, fresh=m is None)
    MapPanel(_plan_summary(plan), position="topleft").add_to(fmap)
    add_density(fmap, plan.units, show=False)
    add_plan_communities(fmap, plan.communities, target_pop=plan.config.target_pop,
                         tolerance=plan.config.tolerance)
    add_isochrones(fmap, plan.isochrones, show=False)
    if plan.previous is not None:
        add_previous(fmap, plan.previous)
    add_uncovered(fmap, plan.units, minutes_column="minutes", max_minutes=plan.config.max_minutes)
    add_forced_undersized(fmap, plan.units, min_pop=plan.config.min_pop,
                          max_minutes=plan.config.max_minutes)
    if grids is not None:
        add_grids_layer(fmap, grids)
    add_community_labels(fmap, plan.communities, pop_column="population", centers=plan.centers)
    add_plan_centers(fmap, plan.centers, plan.communities)
    return finish_map(fmap)


def add_grids_layer(fmap: folium.Map, grids: Grids | gpd.GeoDataFrame, *,
                    stations: gpd.GeoDataFrame | None = None,
                    label_zoom: float | None = None) -> folium.map.Layer:
    """
    Grids (网格) inside the communities: thin boundaries over the community fills (not filled,
    so the communities' tooltips stay reachable; the lines carry the grid's figures), and a
    label per grid (its number and residents) from zoom `label_zoom` on (default
    ``STYLE["grid_label_zoom"]``), in the layer "grid labels". `grids` is a
    `covplan.plan.grids.Grids` (its stations are drawn too) or its ``grids`` frame; `stations`
    (points with grid_id) are drawn as small dots in the layer "grid stations", off at first.
    """
    if hasattr(grids, "stations"):
        stations = grids.stations if stations is None else stations
        grids = grids.grids
    frame = grids.copy()
    _round_minutes(frame, ("mean_minutes", "max_minutes"))
    fields = _present(frame, {"grid_id": "grid", "population": "residents",
                              "households": "households", "station_id": "station node",
                              "mean_minutes": "mean walk to station (min)",
                              "max_minutes": "longest walk to station (min)", "note": "note"})

    def style(_feature):
        return {"color": STYLE["grid_line"], "weight": STYLE["grid_weight"], "opacity": 0.9,
                "fill": False, "className": "cov-grid"}

    layer = _add_layer(fmap, frame, name=f"grids ({len(frame)})", style=style,
                       fields=fields or {"grid_id": "grid"})
    _pane(fmap, STYLE["labels_pane"], 440)
    shown = frame[~frame.geometry.is_empty & frame.geometry.notna()]
    labels = []
    if len(shown):
        metric = shown.to_crs(shown.estimate_utm_crs())
        spots = gpd.GeoSeries([_label_point(g, None) for g in metric.geometry],
                              crs=metric.crs).to_crs(4326)
        for point, row in zip(spots, shown.itertuples()):
            short = _grid_number(str(row.grid_id), getattr(row, "community_id", None))
            count = (f"<br>{_int(row.population)}" if pd.notna(getattr(row, "population", None))
                     else "")
            labels.append((point.y, point.x, f"{html.escape(short)}{count}"))
    group = folium.FeatureGroup(name="grid labels", show=True).add_to(fmap)
    fmap.get_root().header.add_child(Element(_GRID_LABEL_CSS), name="coverage_grid_label_css")
    LabelLayer(labels, css_class="cov-label cov-grid-label",
               min_zoom=STYLE["grid_label_zoom"] if label_zoom is None else label_zoom).add_to(group)
    if stations is not None and len(stations):
        radius = STYLE["unit_radius"]
        _add_layer(fmap, stations, name="grid stations", show=False,
                   fields=_present(stations, {"grid_id": "grid", "station_id": "station node"}),
                   style=lambda _f: _point_style(STYLE["grid_station"], radius=radius,
                                                 class_name="cov-grid-station", fill_opacity=1),
                   marker=folium.CircleMarker(radius=radius))
    return layer


def _grid_number(grid_id: str, community_id) -> str:
    """'C07-G03' -> 'G03': the community's own label already names it."""
    prefix = f"{community_id}-" if community_id is not None and pd.notna(community_id) else ""
    return grid_id[len(prefix):] if prefix and grid_id.startswith(prefix) else grid_id


# --- coverage (as-is) layers ----------------------------------------------------------------------

def add_communities(fmap: folium.Map, communities: gpd.GeoDataFrame) -> folium.map.Layer:
    """Communities filled by the share of residents within the limit of their own center."""
    breaks, colors = [0.5, 0.8, 0.95, 0.999], STYLE["share_colors"]
    frame = communities.copy()
    frame["share_class"] = _classes(frame["share_within_own"].to_numpy(dtype=float), breaks)
    frame["share_within_own"] = (100 * frame["share_within_own"].astype(float)).round(1)
    _round_minutes(frame, ("mean_minutes_own", "max_minutes_own"))
    fields = _present(frame, {"community_id": "community", "pop": "residents",
                              "pop_within_own": "within reach of own center",
                              "share_within_own": "share within (%)",
                              "mean_minutes_own": "mean walk (min)",
                              "max_minutes_own": "longest walk (min)"})

    def style(feature):
        index = int(feature["properties"]["share_class"])
        return {"color": STYLE["line"], "weight": 1.5, "fillOpacity": 0.45,
                "fillColor": "#cccccc" if index < 0 else colors[index],
                "className": "cov-community"}

    layer = _add_layer(fmap, frame, name="communities by share within reach", style=style,
                       fields=fields, style_columns=("share_class",),
                       simplify_m=STYLE["simplify_m"])
    labels = _step_labels([50, 80, 95, 99.9], lambda v: f"{v:g} %")
    MapPanel(_legend("Residents within reach of their own center", list(zip(colors, labels))),
             layer=layer).add_to(fmap)
    return layer


def add_units(fmap: folium.Map, units: gpd.GeoDataFrame, *, column: str, max_minutes: float,
              name: str = "residents by walk minutes") -> folium.map.Layer:
    """Population units as dots coloured by walk minutes (`column`); grey beyond the range."""
    edges = [max_minutes / 3, 2 * max_minutes / 3, max_minutes, 4 * max_minutes / 3]
    colors = STYLE["minutes_colors"]
    frame = units[units["pop"] > 0].copy()
    frame["minutes_class"] = _classes(frame[column].to_numpy(dtype=float), edges)
    frame[column] = frame[column].astype(float).round(1)
    fields = _present(frame, {"unit_id": "unit", "pop": "residents", column: "walk (min)",
                              "community_id": "community",
                              "nearest_center_id": "nearest center"})

    def style(feature):
        index = int(feature["properties"]["minutes_class"])
        color = STYLE["unreachable"] if index < 0 else colors[index]
        return _point_style(color, radius=STYLE["unit_radius"], class_name="cov-unit",
                            stroke=color, fill_opacity=0.8) | {"weight": 0}

    layer = _add_layer(fmap, frame, name=name, style=style, fields=fields,
                       style_columns=("minutes_class",),
                       marker=folium.CircleMarker(radius=STYLE["unit_radius"]))
    labels = _step_labels(edges, lambda v: f"{v:g} min")
    rows = [*zip(colors, labels), (STYLE["unreachable"], f"over {2 * max_minutes:g} min or none")]
    MapPanel(_legend("Walk to the center", rows), layer=layer).add_to(fmap)
    return layer


def add_centers(fmap: folium.Map, centers: gpd.GeoDataFrame) -> folium.map.Layer:
    """Service centers as circles; popups give the population within the limit."""
    fields = _present(centers, {"center_id": "center", "community_id": "community",
                                "pop_within": "residents within reach"})
    radius = STYLE["center_radius"]
    return _add_layer(fmap, centers, name="service centers", fields=fields, popup=True,
                      style=lambda _f: _point_style(STYLE["center_existing"], radius=radius,
                                                    class_name="cov-center", fill_opacity=1,
                                                    weight=STYLE["center_outline_weight"]),
                      marker=folium.CircleMarker(radius=radius))


def _coverage_summary(result: CoverageResult) -> str:
    s = result.summary()
    limit = f"{s['max_minutes']:g} min"
    lines = [f"<b>{s['centers']} service centers</b>, {_int(s['population_total'])} residents"]
    if result.communities is not None:
        lines += [(f"{_share(s['coverage_share'])} within {limit} of their own community's center "
                   f"({s['communities']} communities); {_int(s['population_uncovered'])} "
                   "residents beyond it"),
                  (f"{_share(s['nearest_center_share'])} within {limit} of the nearest center; "
                   f"{_int(s['population_beyond_nearest'])} residents beyond every center")]
    else:
        lines.append(f"{_share(s['coverage_share'])} within {limit} of the nearest center (no "
                     f"communities given); {_int(s['population_uncovered'])} residents beyond it")
    lines.append(f"{_int(s['population_off_network'])} residents off the walking network")
    if math.isfinite(s["mean_minutes_nearest"]):
        lines.append(f"mean walk to the nearest center {s['mean_minutes_nearest']:.1f} min")
    return _folding(lines[0], "<br>".join(lines[1:]))


def coverage_map(result: CoverageResult, *, isochrones: gpd.GeoDataFrame | None = None,
                 m: folium.Map | None = None,
                 base: gpd.GeoDataFrame | None = None) -> folium.Map:
    """
    The as-is coverage map: communities by share covered (labelled with id and residents),
    isochrones, units by minutes, uncovered residents, population density and centers, with a
    title, a summary panel, a north arrow and a scale bar; `base` (from
    `covplan.output.basemap.base_layer`) is drawn under everything.
    """
    fmap = base_map(result.units, m=m)
    if base is not None:
        add_base(fmap, base)
    titled_map(fmap, f"Walking coverage of {len(result.centers)} service centers", fresh=m is None)
    MapPanel(_coverage_summary(result), position="topleft").add_to(fmap)
    add_density(fmap, result.units, show=False)
    if result.communities is not None:
        add_communities(fmap, result.communities)
    if isochrones is not None:
        add_isochrones(fmap, isochrones, show=False)
    column = "minutes_own" if result.communities is not None else "minutes_nearest"
    add_units(fmap, result.units, column=column, max_minutes=result.max_minutes)
    add_uncovered(fmap, result.units, minutes_column=column, max_minutes=result.max_minutes)
    if result.communities is not None:
        add_community_labels(fmap, result.communities, pop_column="pop",
                             centers=result.centers)
    add_centers(fmap, result.centers)
    return finish_map(fmap)


def isochrone_map(isochrones: gpd.GeoDataFrame, centers: gpd.GeoDataFrame, *,
                  m: folium.Map | None = None) -> folium.Map:
    """Isochrone bands and their centers, with a title."""
    drawn = isochrones[~isochrones.geometry.is_empty]
    fmap = base_map(drawn if len(drawn) else centers, m=m)
    bands = ", ".join(f"{b:g}" for b in sorted(isochrones["minutes"].unique()))
    titled_map(fmap, f"Walk areas ({bands} min) of {len(centers)} service centers", fresh=m is None)
    add_isochrones(fmap, isochrones)
    add_centers(fmap, centers)
    return finish_map(fmap)
