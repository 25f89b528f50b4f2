"""QGIS styles in plan.gpkg: a default QML style per layer, like the web map, in `layer_styles`."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from contextlib import closing

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from conftest import merge_split_town_plan
from covplan.output.files import read_plan, write_plan
from covplan.output.maps import STYLE
from covplan.output.styles import population_classes, write_layer_styles
from shapely.geometry import LineString

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"
N = 8
STYLED = {"communities": "graduatedSymbol", "centers": "categorizedSymbol",
          "isochrones": "singleSymbol", "units": "singleSymbol",
          "previous_communities": "singleSymbol", "streets": "categorizedSymbol"}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A merge/split plan of a small grid town, written with streets and a railway."""
    plan, _, _ = merge_split_town_plan(N, seed=5, target_pop=1_000,
                                       centers_xy=((200, 300), (500, 300)))
    base = gpd.GeoDataFrame(
        {"kind": ["primary", "railway"], "name": ["", ""], "street": [True, False]},
        geometry=[LineString([(X0, Y0 + 50), (X0 + 700, Y0 + 50)]),
                  LineString([(X0 + 50, Y0), (X0 + 50, Y0 + 700)])], crs=CRS).to_crs(4326)
    folder = write_plan(plan, tmp_path_factory.mktemp("styles") / "town", base=base)
    return plan, folder


def _styles(folder) -> dict[str, tuple]:
    with closing(sqlite3.connect(folder / "plan.gpkg")) as db:
        rows = db.execute('SELECT f_table_name, f_geometry_column, "styleName", "styleQML", '
                          '"styleSLD", "useAsDefault" FROM layer_styles').fetchall()
    return {row[0]: row[1:] for row in rows}


def test_layer_styles_table_is_registered_as_qgis_makes_it(written):
    _, folder = written
    with closing(sqlite3.connect(folder / "plan.gpkg")) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(layer_styles)")]
        contents = db.execute("SELECT data_type, identifier FROM gpkg_contents "
                              "WHERE table_name = 'layer_styles'").fetchall()
        geometry = dict(db.execute("SELECT table_name, column_name FROM gpkg_geometry_columns"))
        rows = db.execute('SELECT f_table_name, COUNT(*) FROM layer_styles WHERE "useAsDefault" '
                          "GROUP BY f_table_name").fetchall()
    assert columns == ["id", "f_table_catalog", "f_table_schema", "f_table_name",
                       "f_geometry_column", "styleName", "styleQML", "styleSLD", "useAsDefault",
                       "description", "owner", "ui", "update_time"]
    assert contents == [("attributes", "layer_styles")]
    assert dict(rows) == dict.fromkeys(STYLED, 1)      # one default style per styled layer
    for name, (column, style_name, _, sld, default) in _styles(folder).items():
        assert column == geometry[name]
        assert style_name == name and sld == "" and default == 1


def test_each_style_is_qml_with_the_web_map_renderer(written):
    _, folder = written
    for name, (_, _, qml, _, _) in _styles(folder).items():
        root = ET.fromstring(qml)
        assert root.tag == "qgis" and root.get("version").startswith("3.28")
        renderer = root.find("renderer-v2")
        assert renderer.get("type") == STYLED[name], name
        symbols = renderer.findall("symbols/symbol")
        assert symbols and all(s.find("layer/Option[@type='Map']") is not None for s in symbols)
        assert (root.find("labeling") is not None) == (name == "communities"), name
        assert root.get("labelsEnabled") == ("1" if name == "communities" else "0")


def test_community_classes_follow_the_configs_band(written):
    plan, folder = written
    root = ET.fromstring(_styles(folder)["communities"][2])
    renderer = root.find("renderer-v2")
    assert renderer.get("attr") == "population"
    ranges = renderer.findall("ranges/range")
    target, t = plan.config.target_pop, plan.config.tolerance
    breaks = [target * (1 + d) for d in (-2 * t, -t, -t / 2, t / 2, t, 2 * t)]
    assert [float(r.get("upper")) for r in ranges[:-1]] == pytest.approx(breaks, rel=1e-12)
    assert [float(r.get("lower")) for r in ranges[1:]] == pytest.approx(breaks, rel=1e-12)
    assert [r.get("label") for r in ranges] == [
        "under 400", "400 – 700", "700 – 850 (within)", "850 – 1,150 (within)",
        "1,150 – 1,300 (within)", "1,300 – 1,600", "1,600 or more"]
    colors = [s.find("layer/Option/Option[@name='color']").get("value")
              for s in renderer.findall("symbols/symbol")]
    expected = [",".join(str(int(c[i:i + 2], 16)) for i in (1, 3, 5)) + ",140"
                for c in STYLE["deviation_colors"]]
    assert colors == expected
    label = root.find("labeling/settings/text-style")
    assert label.get("isExpression") == "1"
    assert '"community_id"' in label.get("fieldName") and '"population"' in label.get("fieldName")


def _web_class(pop: float, target: float, t: float) -> int:
    """The web map's class of `pop` (covplan.output.maps.add_plan_communities)."""
    deviations = [-2 * t, -t, -t / 2, t / 2, t, 2 * t]
    d = round(pop / target - 1, 9)
    return int(np.searchsorted(deviations, d, side="right" if d <= 0 else "left"))


def _qgis_class(pop: float, classes) -> int:
    """QGIS's graduated renderer: the first range with lower <= value <= upper."""
    return next(i for i, (low, high, _) in enumerate(classes) if low <= pop <= high)


@pytest.mark.parametrize(("target", "tolerance"), [(10_000, 0.2), (1_000, 0.3), (7_500, 0.15)])
def test_values_on_the_breaks_fall_in_the_web_maps_class(target, tolerance):
    classes = population_classes(target, tolerance)
    pops = sorted({round(target * (1 + k * tolerance / 2)) + s
                   for k in range(-4, 5) for s in (-1, 0, 1)} | {0, 10 * target})
    assert [_qgis_class(p, classes) for p in pops] == [_web_class(p, target, tolerance)
                                                       for p in pops]


def test_centers_and_streets_categories(written):
    _, folder = written
    styles = _styles(folder)
    centers = ET.fromstring(styles["centers"][2]).find("renderer-v2")
    assert '"existing"' in centers.get("attr")
    cats = {c.get("value"): c.get("symbol") for c in centers.findall("categories/category")}
    symbols = {s.get("name"): {o.get("name"): o.get("value") for o in s.iter("Option")
                               if o.get("name")} for s in centers.findall("symbols/symbol")}
    assert symbols[cats["existing"]]["color"] == "31,78,156,255"      # blue, as the web map
    assert symbols[cats["new"]]["color"] == "26,150,65,255"           # green
    assert {s["outline_color"] for s in symbols.values()} == {"255,255,255,255"}
    streets = ET.fromstring(styles["streets"][2]).find("renderer-v2")
    assert "'railway'" in streets.get("attr")
    assert {c.get("value") for c in streets.findall("categories/category")} == {"street",
                                                                               "railway"}
    previous = ET.fromstring(styles["previous_communities"][2])
    options = {o.get("name"): o.get("value") for o in previous.iter("Option") if o.get("name")}
    assert options["style"] == "no" and options["outline_style"] == "dash"


def test_the_geopackage_still_reads(written):
    plan, folder = written
    layers = {str(name) for name, _ in pyogrio.list_layers(folder / "plan.gpkg")}
    assert set(STYLED) | {"layer_styles"} <= layers
    back = read_plan(folder)
    assert len(back.communities) == len(plan.communities)
    assert back.config == plan.config


def test_styles_are_replaced_not_added_and_unknown_layers_skipped(written, tmp_path):
    plan, folder = written
    copy = tmp_path / "plan.gpkg"
    copy.write_bytes((folder / "plan.gpkg").read_bytes())
    write_layer_styles(copy, layers=["communities", "nonexistent", "layer_styles"],
                       config=plan.config)
    with closing(sqlite3.connect(copy)) as db:
        counts = dict(db.execute("SELECT f_table_name, COUNT(*) FROM layer_styles "
                                 "GROUP BY f_table_name"))
    assert counts == dict.fromkeys(STYLED, 1)
