"""The PDF atlas: an overview page and one page per community, identical bytes on every run."""

from __future__ import annotations

import re

import geopandas as gpd
import pytest
from conftest import merge_split_town_plan
from covplan.errors import DataSourceError
from covplan.output.atlas import _previous_ids, read_streets, write_atlas
from covplan.output.files import read_plan, write_layers, write_plan
from shapely.geometry import LineString

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"
N = 10          # 10 x 10 streets, 100 m apart


def page_count(pdf: bytes) -> int:
    """Pages of a PDF: with pypdf when installed, else its /Type /Page objects (not /Pages)."""
    try:
        import pypdf
    except ImportError:
        return len(re.findall(rb"/Type\s*/Page(?![A-Za-z])", pdf))
    import io

    return len(pypdf.PdfReader(io.BytesIO(pdf)).pages)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A merge/split plan of a small grid town (old communities W and E), written and read."""
    plan, _, _ = merge_split_town_plan(N)
    return write_plan(plan, tmp_path_factory.mktemp("plans") / "town")


@pytest.fixture(scope="module")
def plan(folder):
    return read_plan(folder)


def test_atlas_has_an_overview_and_one_page_per_community(plan, tmp_path):
    assert plan.previous is not None and len(plan.communities) >= 2
    out = write_atlas(plan, tmp_path / "sub" / "atlas.pdf", title="Grid town")
    assert out == tmp_path / "sub" / "atlas.pdf"
    data = out.read_bytes()
    assert data.startswith(b"%PDF")
    assert page_count(data) == 1 + len(plan.communities)


def test_atlas_bytes_are_identical_on_every_run(plan, tmp_path):
    first = write_atlas(plan, tmp_path / "a.pdf").read_bytes()
    second = write_atlas(plan, tmp_path / "b.pdf").read_bytes()
    assert b"/CreationDate" not in first
    assert first == second


def test_atlas_from_a_folder_draws_its_street_layer(folder, plan, tmp_path):
    assert read_streets(folder) is None
    copy = tmp_path / "with_streets"
    copy.mkdir()
    (copy / "report.json").write_bytes((folder / "report.json").read_bytes())
    streets = gpd.GeoDataFrame(
        {"highway": ["residential"] * N}, crs=CRS,
        geometry=[LineString([(X0, Y0 + 100 * r), (X0 + 900, Y0 + 100 * r)]) for r in range(N)])
    layers = {"communities": plan.communities, "centers": plan.centers, "units": plan.units,
              "isochrones": plan.isochrones, "previous_communities": plan.previous,
              "streets": streets}
    write_layers(copy / "plan.gpkg", layers)
    assert len(read_streets(copy)) == N
    with_streets = write_atlas(copy, tmp_path / "streets.pdf").read_bytes()
    without = write_atlas(plan, tmp_path / "plain.pdf").read_bytes()
    assert page_count(with_streets) == 1 + len(plan.communities)
    assert with_streets != without


def test_atlas_of_a_redraw_has_no_old_communities(plan, tmp_path):
    from dataclasses import replace

    redraw = replace(plan, previous=None, communities=plan.communities.assign(previous_ids=""))
    data = write_atlas(redraw, tmp_path / "redraw.pdf", progress=True).read_bytes()
    assert page_count(data) == 1 + len(plan.communities)


def test_atlas_draws_units_given_as_cells(plan, tmp_path):
    from dataclasses import replace

    metric = plan.units.to_crs(CRS)
    cells = metric.set_geometry(metric.geometry.buffer(50.0, cap_style="square")).to_crs(4326)
    data = write_atlas(replace(plan, units=cells), tmp_path / "cells.pdf").read_bytes()
    assert page_count(data) == 1 + len(plan.communities)


def test_atlas_to_an_impossible_place_is_a_data_source_error(plan, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataSourceError, match="cannot"):
        write_atlas(plan, blocker / "atlas.pdf")
    with pytest.raises(DataSourceError, match="not a folder|does not exist"):
        write_atlas(tmp_path / "nowhere", tmp_path / "x.pdf")


def test_previous_ids_are_parsed_from_the_communities_column():
    assert _previous_ids("C03 (4,512); C07 (2,100)") == ["C03", "C07"]
    assert _previous_ids("W (1,234)") == ["W"]
    assert _previous_ids("") == []
    assert _previous_ids(None) == []
    assert _previous_ids(float("nan")) == []
