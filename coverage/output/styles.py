"""
Default QGIS styles for the layers of plan.gpkg, stored in the GeoPackage itself.

QGIS looks for a table ``layer_styles`` in a GeoPackage and applies the row with
``useAsDefault`` for a layer when the layer is opened, so plan.gpkg opens in QGIS styled like
the web map (`covplan.output.maps`): communities filled by residents against the target with
the web legend's classes and colours and labelled with their id and residents, service
centers blue (kept) or green (new) with a white outline, walk areas light and translucent,
old communities dashed, streets thin and grey with dark railways, units small grey points.

The styles are QGIS QML documents written by hand from small templates below: no library on
PyPI writes QML (QGIS writes it from its own C++ classes, and its Python bindings are not an
installable dependency), and a few templates keep the styles readable and checkable. Each
template is the minimum QGIS needs: a renderer (``renderer-v2``) with its symbols, and for
communities a simple labeling. SLD is left empty: QGIS reads the QML.
"""

from __future__ import annotations

import math
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

from covplan.errors import DataSourceError
from covplan.output.maps import RAIL_KINDS, STYLE, population_legend

if TYPE_CHECKING:
    from covplan.config import PlanConfig

QGIS_VERSION = "3.28.0-Firenze"
STYLE_DESCRIPTION = "covplan default style (as the web map)"
# The classes of the communities run from 0 residents to this (QGIS ranges have two ends).
_MAX_POPULATION = 1e12

# The table as QGIS creates it in a GeoPackage (QgsOgrProviderMetadata::saveStyle), registered
# in gpkg_contents as an attribute table, as QGIS (through GDAL) does.
_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS "layer_styles" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "f_table_catalog" TEXT(256),
    "f_table_schema" TEXT(256),
    "f_table_name" TEXT(256),
    "f_geometry_column" TEXT(256),
    "styleName" TEXT(30),
    "styleQML" TEXT,
    "styleSLD" TEXT,
    "useAsDefault" BOOLEAN,
    "description" TEXT,
    "owner" TEXT(30),
    "ui" TEXT(30),
    "update_time" DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
)"""
_REGISTER_TABLE = """
INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, last_change)
VALUES ('layer_styles', 'attributes', 'layer_styles', 'QGIS layer styles',
        strftime('%Y-%m-%dT%H:%M:%fZ','now'))"""

# --- QML templates --------------------------------------------------------------------------------

_DOCUMENT = """<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="{version}" styleCategories="AllStyleCategories" labelsEnabled="{labels_enabled}">
{renderer}
{labeling}
  <blendMode>0</blendMode>
  <featureBlendMode>0</featureBlendMode>
  <layerOpacity>1</layerOpacity>
</qgis>
"""
_RENDERER = """  <renderer-v2 type="{type}"{attributes} symbollevels="0" forceraster="0" enableorderby="0">
{classes}    <symbols>
{symbols}    </symbols>
  </renderer-v2>"""
_SYMBOL = """      <symbol type="{type}" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="{layer_class}" enabled="1" locked="0" pass="0">
          <Option type="Map">
{options}          </Option>
        </layer>
      </symbol>
"""
_OPTION = '            <Option type="QString" name="{name}" value={value}/>\n'
_LABELING = """  <labeling type="simple">
    <settings calloutType="simple">
      <text-style fieldName={expression} isExpression="1" fontFamily="Arial" fontSize="9"
                  fontSizeUnit="Point" fontWeight="50" textColor="17,17,17,255" textOpacity="1"
                  multilineHeight="1" blendMode="0">
        <text-buffer bufferDraw="1" bufferSize="1" bufferSizeUnits="MM"
                     bufferColor="255,255,255,255" bufferOpacity="1" bufferJoinStyle="128"
                     bufferNoFill="1" bufferBlendMode="0"/>
      </text-style>
      <text-format wrapChar="" multilineAlign="1" formatNumbers="0" plussign="0"/>
      <placement placement="1" centroidInside="1" centroidWhole="0" fitInPolygonOnly="0"
                 priority="5" dist="0" offsetType="0" quadOffset="4"/>
      <rendering drawLabels="1" obstacle="1" obstacleType="1" scaleVisibility="0"
                 upsidedownLabels="0" limitNumLabels="0" displayAll="0"/>
    </settings>
  </labeling>"""


def _rgba(color: str, opacity: float = 1.0) -> str:
    """'#rrggbb' as QGIS writes colours: 'r,g,b,a' (0-255)."""
    code = color.lstrip("#")
    red, green, blue = (int(code[i:i + 2], 16) for i in (0, 2, 4))
    return f"{red},{green},{blue},{round(255 * opacity)}"


def _symbol(name: str, kind: str, options: dict[str, str]) -> str:
    layer_class = {"fill": "SimpleFill", "marker": "SimpleMarker", "line": "SimpleLine"}[kind]
    body = "".join(_OPTION.format(name=key, value=quoteattr(str(value)))
                   for key, value in options.items())
    return _SYMBOL.format(type=kind, name=name, layer_class=layer_class, options=body)


def _fill(color: str, *, opacity: float, outline: str, width_px: float,
          outline_style: str = "solid", fill: bool = True) -> dict[str, str]:
    return {"color": _rgba(color, opacity), "style": "solid" if fill else "no",
            "outline_color": _rgba(outline), "outline_style": outline_style,
            "outline_width": f"{width_px:g}", "outline_width_unit": "Pixel",
            "joinstyle": "round"}


def _marker(color: str, *, size_px: float, outline: str, outline_px: float) -> dict[str, str]:
    return {"name": "circle", "color": _rgba(color), "size": f"{size_px:g}",
            "size_unit": "Pixel", "outline_color": _rgba(outline), "outline_style": "solid",
            "outline_width": f"{outline_px:g}", "outline_width_unit": "Pixel"}


def _line(color: str, *, width_px: float, opacity: float = 1.0) -> dict[str, str]:
    return {"line_color": _rgba(color, opacity), "line_width": f"{width_px:g}",
            "line_width_unit": "Pixel", "line_style": "solid", "capstyle": "round",
            "joinstyle": "round"}


def _document(renderer: str, labeling: str = "") -> str:
    return _DOCUMENT.format(version=QGIS_VERSION, labels_enabled=int(bool(labeling)),
                            renderer=renderer, labeling=labeling)


def _single(kind: str, options: dict[str, str]) -> str:
    return _RENDERER.format(type="singleSymbol", attributes="", classes="",
                            symbols=_symbol("0", kind, options))


def _categorized(expression: str, kind: str, categories: list[tuple[str, str, dict]]) -> str:
    """A categorized renderer on `expression`: (value, legend label, symbol options) rows."""
    rows = "".join(f'      <category value={quoteattr(value)} symbol="{i}" '
                   f'label={quoteattr(label)} render="true"/>\n'
                   for i, (value, label, _) in enumerate(categories))
    symbols = "".join(_symbol(str(i), kind, options)
                      for i, (_, _, options) in enumerate(categories))
    return _RENDERER.format(type="categorizedSymbol", attributes=f" attr={quoteattr(expression)}",
                            classes=f"    <categories>\n{rows}    </categories>\n",
                            symbols=symbols)


# --- the styles of a plan's layers ----------------------------------------------------------------

def population_classes(target_pop: float, tolerance: float) -> list[tuple[float, float, str]]:
    """
    The classes of the communities' residents as in the web map's legend: (lower, upper,
    label) per class, from the same deviations from the target as
    `covplan.output.maps.add_plan_communities` (± tolerance / 2, ± tolerance, ± 2 tolerance).

    The web map closes its classes towards the target (exactly target ± tolerance is within);
    QGIS gives a value on a shared bound to the first of two ranges, so below the target a
    range ends just under its upper break (the next smaller float) and the break belongs to
    the class above it, as on the web map.
    """
    deviations, labels = population_legend(target_pop, tolerance)
    breaks = [round(target_pop * (1 + d), 6) for d in deviations]
    lowers = [0.0, *breaks]
    uppers = [*breaks, _MAX_POPULATION]
    return [(low, math.nextafter(high, -math.inf) if d < 0 else high, label)
            for low, high, label, d in zip(lowers, uppers, labels, [*deviations, math.inf],
                                           strict=True)]


def communities_qml(target_pop: float, tolerance: float) -> str:
    """Communities: a graduated fill by `population`, dark outline, labels id and residents."""
    classes = population_classes(target_pop, tolerance)
    colors = STYLE["deviation_colors"]
    ranges = "".join(f'      <range lower="{low!r}" upper="{high!r}" symbol="{i}" '
                     f'label={quoteattr(label)} render="true"/>\n'
                     for i, (low, high, label) in enumerate(classes))
    symbols = "".join(
        _symbol(str(i), "fill", _fill(color, opacity=0.55, outline=STYLE["line"], width_px=1.5))
        for i, color in enumerate(colors))
    renderer = _RENDERER.format(
        type="graduatedSymbol", attributes=' attr="population" graduatedMethod="GraduatedColor"',
        classes=f"    <ranges>\n{ranges}    </ranges>\n", symbols=symbols)
    expression = "\"community_id\" || '\\n' || format_number(\"population\", 0)"
    return _document(renderer, _LABELING.format(expression=quoteattr(expression)))


def centers_qml() -> str:
    """Service centers: kept sites blue, new sites green, white outline (`existing`)."""
    # An expression rather than the bare field: QGIS may read `existing` as a boolean or as
    # 0/1 depending on the GDAL version; the expression gives the same two values either way.
    expression = "CASE WHEN \"existing\" THEN 'existing' ELSE 'new' END"
    size, outline = 2 * STYLE["center_radius"], STYLE["center_outline_weight"]
    return _document(_categorized(expression, "marker", [
        ("existing", "existing center kept",
         _marker(STYLE["center_existing"], size_px=size, outline="#ffffff", outline_px=outline)),
        ("new", "new site",
         _marker(STYLE["center_new"], size_px=size, outline="#ffffff", outline_px=outline)),
    ]))


def isochrones_qml() -> str:
    """Walk areas: a light translucent fill with a thin outline of the same colour."""
    color = STYLE["band_colors"][15.0]
    return _document(_single("fill", _fill(color, opacity=0.2, outline=color, width_px=0.8)))


def previous_qml() -> str:
    """Old communities: a dashed outline, no fill."""
    return _document(_single("fill", _fill(STYLE["previous_line"], opacity=0.0,
                                           outline=STYLE["previous_line"], width_px=1.5,
                                           outline_style="dash", fill=False)))


def streets_qml() -> str:
    """Streets as thin grey lines, railways dark and wider."""
    rails = ", ".join(f"'{kind}'" for kind in sorted(RAIL_KINDS))
    expression = f"CASE WHEN \"kind\" IN ({rails}) THEN 'railway' ELSE 'street' END"
    street_color, street_width = STYLE["base_street"]["tertiary"]
    return _document(_categorized(expression, "line", [
        ("street", "street", _line(street_color, width_px=street_width, opacity=0.8)),
        ("railway", "railway", _line(STYLE["base_rail"], width_px=2.5)),
    ]))


def units_qml() -> str:
    """Units (population points): small grey points."""
    return _document(_single("marker", _marker(STYLE["unreachable"], size_px=4,
                                                outline=STYLE["unreachable"], outline_px=0)))


def layer_qml(layer: str, config: PlanConfig) -> str | None:
    """The QML style of a plan layer, or None for a layer without one."""
    builders = {"communities": lambda: communities_qml(config.target_pop, config.tolerance),
                "centers": centers_qml, "isochrones": isochrones_qml,
                "previous_communities": previous_qml, "streets": streets_qml,
                "units": units_qml}
    build = builders.get(layer)
    return build() if build else None


def write_layer_styles(gpkg_path: str | os.PathLike[str], *, layers: list[str],
                       config: PlanConfig) -> None:
    """
    Store a default QGIS style for each of `layers` in the GeoPackage's ``layer_styles`` table.

    Parameters
    ----------
    gpkg_path
        A GeoPackage already written (e.g. by `covplan.output.files.write_layers`) and closed:
        the table is added with sqlite3, so no other writer may hold the file open.
    layers
        The names of the layers to style; names without a style here (see `layer_qml`) and
        names not in the GeoPackage are skipped.
    config
        The plan's parameters: ``target_pop`` and ``tolerance`` set the communities' classes,
        as on the web map.

    Raises
    ------
    DataSourceError
        If the file is not a GeoPackage or cannot be written.

    Notes
    -----
    The table has QGIS's schema and is registered in ``gpkg_contents`` as an attribute table,
    as QGIS does, so GDAL lists it as a layer ``layer_styles``. A layer's earlier styles from
    covplan are replaced; each styled layer has one row with ``useAsDefault`` true, which QGIS
    applies when it opens the layer. ``styleSLD`` is empty.
    """
    target = Path(gpkg_path)
    try:
        with closing(sqlite3.connect(target)) as db, db:
            geometry_columns = dict(db.execute(
                "SELECT table_name, column_name FROM gpkg_geometry_columns").fetchall())
            rows = [(name, geometry_columns[name], qml) for name in layers
                    if name in geometry_columns
                    and (qml := layer_qml(name, config)) is not None]
            db.execute(_CREATE_TABLE)
            db.execute(_REGISTER_TABLE)
            db.executemany("DELETE FROM layer_styles WHERE f_table_name = ? AND description = ?",
                           [(name, STYLE_DESCRIPTION) for name, _, _ in rows])
            db.executemany(
                'INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, '
                'f_geometry_column, "styleName", "styleQML", "styleSLD", "useAsDefault", '
                "description, owner, ui) VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', NULL)",
                [(name, column, name, qml, STYLE_DESCRIPTION) for name, column, qml in rows])
    except sqlite3.Error as exc:
        msg = (f"cannot store the QGIS styles in '{target}': {exc}; write the plan again into a "
               "folder you can write to.")
        raise DataSourceError(msg) from exc
