"""Plan folders: read_plan gives back what write_plan wrote; broken folders name what is missing."""

from __future__ import annotations

import importlib.util
import json
import logging

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from conftest import merge_split_town_plan
from covplan.errors import DataSourceError
from covplan.output.files import (
    as_multipolygons,
    community_rows,
    read_plan,
    write_community_tables,
    write_layers,
    write_plan,
)
from covplan.plan.pipeline import plan_communities
from geopandas.testing import assert_geodataframe_equal
from shapely.geometry import GeometryCollection, LineString, Point, Polygon, box

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"
N = 10          # 10 x 10 streets, 100 m apart


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A merge/split plan of a small grid town (so every optional file exists), and its folder."""
    plan, net, population = merge_split_town_plan(N)
    folder = write_plan(plan, tmp_path_factory.mktemp("plans") / "town")
    return plan, folder, net, population


def test_read_plan_gives_the_written_plan_back(written):
    plan, folder, _, _ = written
    back = read_plan(folder)
    for name in ("communities", "centers", "units", "isochrones", "previous"):
        assert_geodataframe_equal(getattr(back, name), getattr(plan, name).reset_index(drop=True),
                                  check_dtype=False, check_like=True)   # gpkg puts geometry last
    pd.testing.assert_frame_equal(back.changes, plan.changes, check_dtype=False)
    assert back.report == plan.report
    assert back.config == plan.config
    assert back.work_crs == plan.work_crs
    assert back.version == plan.version
    assert back.units.crs == plan.units.crs == "EPSG:4326"
    assert back.units["pop"].sum() == plan.report["population_total"]


def test_read_plan_of_a_redraw_has_no_changes(written, tmp_path):
    plan, _, net, population = written
    redraw = plan_communities(net, population, config=plan.config)
    back = read_plan(write_plan(redraw, tmp_path / "redraw"))
    assert back.changes is None and back.previous is None
    assert len(back.communities) == len(redraw.communities)


def test_not_a_plan_folder_names_the_missing_file(written, tmp_path):
    folder = written[1]
    with pytest.raises(DataSourceError, match="does not exist or is not a folder"):
        read_plan(tmp_path / "nowhere")
    with pytest.raises(DataSourceError, match="lacks plan.gpkg"):
        read_plan(tmp_path)
    (tmp_path / "plan.gpkg").write_bytes((folder / "plan.gpkg").read_bytes())
    with pytest.raises(DataSourceError, match="lacks report.json"):
        read_plan(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(DataSourceError, match="cannot read .*report.json"):
        read_plan(tmp_path)


def test_a_gpkg_without_plan_layers_is_refused(written, tmp_path):
    plan, folder, _, _ = written
    write_layers(tmp_path / "plan.gpkg", {"communities": plan.communities, "centers": plan.centers})
    (tmp_path / "report.json").write_text((folder / "report.json").read_text())
    with pytest.raises(DataSourceError, match=r"lacks layer\(s\) \['units', 'isochrones'\]"):
        read_plan(tmp_path)
    (tmp_path / "plan.gpkg").write_text("not a geopackage")
    with pytest.raises(DataSourceError, match="cannot read"):
        read_plan(tmp_path)


def test_communities_csv_is_the_layer_machine_readable(written):
    plan, folder, _, _ = written
    table = pd.read_csv(folder / "communities.csv", dtype={"previous_ids": str,
                                                           "previous_population": str})
    layer = plan.communities.drop(columns="geometry")
    assert list(table.columns) == [*layer.columns[:list(layer.columns).index("previous_ids") + 1],
                                   "previous_population",
                                   *layer.columns[list(layer.columns).index("previous_ids") + 1:]]
    assert list(table["community_id"]) == list(layer["community_id"])
    for column in ("population", "remote_population", "candidate_id"):
        assert pd.api.types.is_integer_dtype(table[column]), column
    for column in ("max_minutes", "mean_minutes"):
        np.testing.assert_allclose(table[column], layer[column])
    assert table["within_tolerance"].dtype == bool and table["contiguous"].dtype == bool
    # previous_ids: ids separated by ';' (no counts), previous_population the matching counts.
    flows = plan.changes[plan.changes["old_community_id"] != "(none)"]
    for row in table.itertuples():
        ids, counts = row.previous_ids.split(";"), [int(c) for c in row.previous_population.split(";")]
        assert all("(" not in i for i in ids) and counts == sorted(counts, reverse=True)
        mine = flows[flows["new_community_id"] == row.community_id]
        assert dict(zip(ids, counts)) == dict(zip(mine["old_community_id"], mine["residents"]))
        assert sum(counts) == row.population        # the old W and E cover the whole town
        readable = layer.set_index("community_id").loc[row.community_id, "previous_ids"]
        assert readable == "; ".join(f"{i} ({c:,})" for i, c in zip(ids, counts))


def test_community_rows_read_the_readable_column_without_changes(written):
    plan = written[0]
    from dataclasses import replace

    rows = community_rows(replace(plan, changes=None))
    assert rows.equals(community_rows(plan))


def test_communities_xlsx_only_with_openpyxl(written, tmp_path, caplog):
    plan = written[0]
    with caplog.at_level(logging.INFO, logger="covplan.output.files"):
        paths = write_community_tables(plan, tmp_path)
    if importlib.util.find_spec("openpyxl") is None:
        assert [p.name for p in paths] == ["communities.csv"]
        assert not (tmp_path / "communities.xlsx").exists()
        assert "Skipped communities.xlsx: openpyxl is not installed" in caplog.text
    else:
        assert [p.name for p in paths] == ["communities.csv", "communities.xlsx"]
        book = pd.read_excel(tmp_path / "communities.xlsx", dtype={"previous_ids": str,
                                                                   "previous_population": str})
        csv = pd.read_csv(tmp_path / "communities.csv", dtype={"previous_ids": str,
                                                               "previous_population": str})
        pd.testing.assert_frame_equal(book, csv, check_dtype=False)


def test_residents_are_population_in_every_layer_and_file(written):
    _, folder, _, _ = written
    gpkg = folder / "plan.gpkg"
    for layer in ("communities", "centers", "units"):
        assert "population" in pyogrio.read_info(gpkg, layer=layer)["fields"], layer
    assert "pop" not in pyogrio.read_info(gpkg, layer="units")["fields"]
    for name in ("changes.csv", "communities.csv"):
        columns = list(pd.read_csv(folder / name).columns)
        assert "population" in columns and "residents" not in columns, name
    back = read_plan(folder)                                   # in memory: `pop`, `residents`
    assert "population" not in back.units and "residents" in back.changes


def test_polygon_layers_are_valid_multipolygons(written):
    _, folder, _, _ = written
    gpkg = folder / "plan.gpkg"
    for layer in ("communities", "isochrones", "previous_communities"):
        assert pyogrio.read_info(gpkg, layer=layer)["geometry_type"] == "MultiPolygon", layer
        shapes = gpd.read_file(gpkg, layer=layer).geometry
        assert (shapes.geom_type == "MultiPolygon").all() and shapes.is_valid.all(), layer
    for layer in ("centers", "units"):
        assert pyogrio.read_info(gpkg, layer=layer)["geometry_type"] == "Point", layer


def test_a_bow_tie_is_written_as_a_valid_multipolygon(tmp_path):
    bow_tie = Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])          # crosses itself at (1, 1)
    mixed = GeometryCollection([box(5, 5, 6, 6), LineString([(7, 7), (8, 8)])])
    frame = gpd.GeoDataFrame({"name": ["bow tie", "square", "mixed", "none"]}, crs=CRS,
                             geometry=[bow_tie, box(3, 3, 4, 4), mixed, None])
    assert not frame.is_valid.iloc[0]
    fixed = as_multipolygons(frame)
    assert list(fixed.geom_type[:3]) == ["MultiPolygon"] * 3 and fixed.geometry.iloc[3] is None
    assert fixed.geometry.iloc[:3].is_valid.all()
    assert len(fixed.geometry.iloc[0].geoms) == 2 and fixed.geometry.iloc[0].area == pytest.approx(2.0)
    assert fixed.geometry.iloc[2].equals(box(5, 5, 6, 6))      # the line is dropped
    assert frame.geometry.iloc[0].equals(bow_tie)              # the input is left as it was
    points = gpd.GeoDataFrame(geometry=[Point(0, 0)], crs=CRS)
    assert as_multipolygons(points) is points
    write_layers(tmp_path / "t.gpkg", {"shapes": frame, "points": points})
    back = gpd.read_file(tmp_path / "t.gpkg", layer="shapes")
    assert pyogrio.read_info(tmp_path / "t.gpkg", layer="shapes")["geometry_type"] == "MultiPolygon"
    assert back.geometry.iloc[:3].is_valid.all()


def test_a_shape_that_reprojection_breaks_is_repaired():
    """A square with a 1 mm slit is valid in metres; in lon/lat rounded to 1e-7° (about 1 cm)
    the slit's sides meet and the ring crosses itself. Written, it is valid again."""
    x, y = X0, Y0
    slit = Polygon([(x, y), (x + 100, y), (x + 100, y + 100), (x + 50.001, y + 100),
                    (x + 50.0005, y + 10), (x + 50.0, y + 100), (x, y + 100)])
    frame = gpd.GeoDataFrame({"name": ["slit"]}, geometry=[slit], crs=CRS)
    assert frame.is_valid.all()
    frame = frame.to_crs(4326)
    frame["geometry"] = shapely.set_precision(frame.geometry.values, 1e-7, mode="pointwise")
    assert not frame.is_valid.any()
    fixed = as_multipolygons(frame)
    assert fixed.is_valid.all() and (fixed.geom_type == "MultiPolygon").all()
    assert fixed.geometry.iloc[0].area == pytest.approx(frame.geometry.iloc[0].area, rel=1e-3)


def test_report_json_has_problems_and_a_glossary(written):
    plan, folder, _, _ = written
    report = json.loads((folder / "report.json").read_text())
    assert report["problems"] == [{"severity": "warning", "kind": k, "message": m}
                                  for k, m in zip([p["kind"] for p in report["problems"]],
                                                  plan.report["issues"])]
    assert set(report["glossary"]) == set(report)
    assert read_plan(folder).report == plan.report             # derived keys are not read back
