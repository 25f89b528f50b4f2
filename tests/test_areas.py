"""The one point-in-polygon rule (`label_units`), by hand, and the as-is report and the planner
agreeing on a unit that lies on a shared community border."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from conftest import grid_town
from covplan.assess import assess_coverage
from covplan.config import PlanConfig
from covplan.errors import CRSError, InputError
from covplan.inputs.areas import label_units
from covplan.plan.pipeline import prepare_planning
from shapely.geometry import LineString, Point, box

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"


def _polygons(ids=("B", "A", "O")):
    # B and A share the edge x = 100; O overlaps both on their upper halves.
    return gpd.GeoDataFrame(
        {"cid": list(ids)},
        geometry=[box(X0, Y0, X0 + 100, Y0 + 100), box(X0 + 100, Y0, X0 + 200, Y0 + 100),
                  box(X0 + 50, Y0 + 50, X0 + 150, Y0 + 200)], crs=CRS)


def _points(*xy):
    return gpd.GeoDataFrame(geometry=[Point(X0 + x, Y0 + y) for x, y in xy], crs=CRS)


def test_inside_and_outside():
    pts = _points((20, 20), (180, 20), (100, 150), (500, 500), (-1, 20))
    assert label_units(pts, _polygons()).tolist() == [0, 1, 2, -1, -1]


def test_shared_border_goes_to_the_first_polygon_in_input_order():
    # On the shared edge, at its end (a corner of both) and on an outer edge.
    pts = _points((100, 20), (100, 0), (0, 30))
    assert label_units(pts, _polygons()).tolist() == [0, 0, 0]
    # Input order decides, not the ids: swap the rows and the other polygon wins.
    swapped = _polygons().iloc[[1, 0, 2]].reset_index(drop=True)
    assert label_units(pts, swapped).tolist() == [0, 0, 1]
    assert label_units(pts, swapped, id_column="cid").tolist() == ["A", "A", "B"]


def test_overlap_goes_to_the_first_polygon_in_input_order():
    pts = _points((75, 75), (125, 75), (100, 150))
    assert label_units(pts, _polygons()).tolist() == [0, 1, 2]
    reordered = _polygons().iloc[[2, 0, 1]]      # O first; the index is not used, positions are
    assert label_units(pts, reordered).tolist() == [0, 0, 0]
    assert label_units(pts, reordered, id_column="cid").tolist() == ["O", "O", "O"]


def test_ids_none_outside_and_series_inputs():
    pts = _points((20, 20), (500, 500))
    ids = label_units(pts, _polygons(), id_column="cid")
    assert ids.dtype == object and ids.tolist() == ["B", None]
    assert label_units(pts.geometry, _polygons().geometry).tolist() == [0, -1]


def test_missing_and_empty_points_lie_in_no_polygon():
    pts = gpd.GeoDataFrame(geometry=[None, Point(), Point(X0 + 20, Y0 + 20)], crs=CRS)
    assert label_units(pts, _polygons()).tolist() == [-1, -1, 0]
    assert label_units(pts, _polygons().iloc[:0]).tolist() == [-1, -1, -1]


def test_polygons_are_reprojected_to_the_points_crs():
    pts = _points((20, 20), (180, 20), (500, 500))
    assert label_units(pts, _polygons().to_crs(4326)).tolist() == [0, 1, -1]
    assert label_units(pts.to_crs(4326), _polygons()).tolist() == [0, 1, -1]


def test_refuses_a_missing_crs_non_points_and_a_missing_id_column():
    with pytest.raises(CRSError, match="CRS"):
        label_units(_points((20, 20)).set_crs(None, allow_override=True), _polygons())
    lines = gpd.GeoDataFrame(geometry=[LineString([(X0, Y0), (X0 + 1, Y0 + 1)])], crs=CRS)
    with pytest.raises(InputError, match="points"):
        label_units(lines, _polygons())
    with pytest.raises(InputError, match="nope"):
        label_units(_points((20, 20)), _polygons(), id_column="nope")


def test_assess_and_plan_put_a_border_unit_in_the_same_community():
    # Cells of 100 m; units at their centroids x = X0 + 50 + 100 c. The border x = X0 + 650 runs
    # through the units of column 6. "west" is listed first but sorts after "east".
    net, population = grid_town(14)
    communities = gpd.GeoDataFrame(
        {"community_id": ["west", "east"]},
        geometry=[box(X0, Y0, X0 + 650, Y0 + 1300), box(X0 + 650, Y0, X0 + 1300, Y0 + 1300)],
        crs=CRS)
    centers = gpd.GeoDataFrame({"center_id": ["W", "E"]},
                               geometry=[Point(X0 + 300, Y0 + 600), Point(X0 + 1000, Y0 + 600)],
                               crs=CRS)
    assessed = assess_coverage(net, population, centers, communities=communities).units
    x = assessed.geometry.x.to_numpy() - X0
    border = np.isclose(x, 650)
    assert border.sum() == 13
    assert (assessed.loc[border, "community_id"] == "west").all()
    assert (assessed.loc[x > 650, "community_id"] == "east").all()
    # Centers without a community_id column are labelled by the same rule.
    assert assessed["own_center_id"].notna().all()

    config = PlanConfig(target_pop=3_000, tolerance=0.25, max_minutes=8.0,
                        candidate_spacing_m=150.0, max_unit_pop=None, restarts=1)
    ready = prepare_planning(net, population, centers=centers, communities=communities,
                             config=config)
    units = ready.reach.units
    planned = np.array(ready.prior.ids, dtype=object)[ready.prior.unit]
    assert (ready.prior.unit >= 0).all()
    by_cell = dict(zip(units["cell_id"], planned))
    assert [by_cell[c] for c in assessed["cell_id"]] == assessed["community_id"].tolist()
    # A unit on the shared border is neither an overlap nor a gap.
    assert not any("overlap" in issue or "gap" in issue for issue in ready.prior.issues)


# --- PATH:LAYER ---------------------------------------------------------------------------------

def test_split_layer_only_splits_when_the_left_part_is_a_file(tmp_path):
    from covplan._validate import split_layer

    gpkg = tmp_path / "plan.gpkg"
    gpkg.write_bytes(b"x")
    assert split_layer(f"{gpkg}:communities", None) == (str(gpkg), "communities")
    assert split_layer(gpkg, None) == (gpkg, None)                         # a plain path
    assert split_layer(f"{gpkg}:communities", "communities")[1] == "communities"
    # A file whose name really holds a ':' is taken whole, not split.
    odd = tmp_path / "town:2020.gpkg"
    odd.write_bytes(b"x")
    assert split_layer(str(odd), None) == (str(odd), None)
    # Windows drive letters and a missing left part are left alone (the file check reports them).
    assert split_layer(r"C:\data\pop.gpkg", None) == (r"C:\data\pop.gpkg", None)
    assert split_layer(f"{tmp_path}/missing.gpkg:layer", None)[1] is None
    # GDAL virtual paths: a layer after the last ':' unless it is part of the path.
    assert split_layer("/vsizip/a.zip/b.gpkg:grid", None) == ("/vsizip/a.zip/b.gpkg", "grid")
    assert split_layer("/vsicurl/https://host/b.gpkg", None)[1] is None


def test_every_vector_input_takes_path_layer(tmp_path):
    from covplan.inputs.areas import load_centers, load_communities, load_districts

    path = tmp_path / "town.gpkg"
    _polygons().rename(columns={"cid": "community_id"}).to_file(path, layer="communities")
    _polygons().rename(columns={"cid": "district_id"}).to_file(path, layer="districts")
    _points((20, 20), (180, 20)).to_file(path, layer="centers")
    assert load_communities(f"{path}:communities")["community_id"].tolist() == ["B", "A", "O"]
    assert len(load_districts(f"{path}:districts")) == 3
    assert len(load_centers(f"{path}:centers")) == 2
    for loader in (load_centers, load_communities, load_districts):
        with pytest.raises(InputError, match=r"3 layers.*pick one as PATH:LAYER"):
            loader(path)
