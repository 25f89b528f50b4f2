"""Plan folders: read_plan gives back what write_plan wrote; broken folders name what is missing."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from conftest import grid_graph
from covplan.config import PlanConfig
from covplan.errors import DataSourceError
from covplan.inputs.network import WalkNetwork
from covplan.inputs.population import Population
from covplan.output.files import read_plan, write_layers, write_plan
from covplan.plan.pipeline import plan_communities
from geopandas.testing import assert_geodataframe_equal
from shapely.geometry import box

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"
N = 10          # 10 x 10 streets, 100 m apart


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A merge/split plan of a small grid town (so every optional file exists), and its folder."""
    net = WalkNetwork.from_graph(grid_graph(N, 100.0))
    rng = np.random.default_rng(3)
    cells = [box(X0 + 100 * c, Y0 + 100 * r, X0 + 100 * (c + 1), Y0 + 100 * (r + 1))
             for r in range(N - 1) for c in range(N - 1)]
    frame = gpd.GeoDataFrame({"cell_id": [f"c{i}" for i in range(len(cells))],
                              "pop": rng.integers(20, 120, len(cells))}, geometry=cells, crs=CRS)
    population = Population.from_frame(frame.to_crs(4326), population_column="pop",
                                       id_column="cell_id")
    half = 100 * (N - 1) / 2
    old = gpd.GeoDataFrame({"community_id": ["W", "E"]}, crs=CRS, geometry=[
        box(X0, Y0, X0 + half, Y0 + 2 * half), box(X0 + half, Y0, X0 + 2 * half, Y0 + 2 * half)])
    centers = gpd.GeoDataFrame({"center_id": ["w", "e"], "community_id": ["W", "E"]}, crs=CRS,
                               geometry=gpd.points_from_xy([X0 + 200, X0 + 700], [Y0 + 400] * 2))
    config = PlanConfig(target_pop=1_500, tolerance=0.3, max_minutes=8.0, candidate_spacing_m=150.0,
                        max_unit_pop=None, restarts=1)
    plan = plan_communities(net, population, communities=old, centers=centers, config=config)
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
