"""Tests for covplan.inputs.tessellation: unit pieces, their adjacency, dissolving and district cuts."""

from __future__ import annotations

import geopandas as gpd
import h3
import numpy as np
import pytest
import shapely
from covplan.errors import CRSError, InputError
from covplan.inputs.tessellation import (
    dissolve_pieces,
    piece_adjacency,
    unit_districts,
    unit_pieces,
)
from shapely.geometry import Point, box

UTM = "EPSG:32633"


def frame(cell_ids: list[str], geometries: list, *, pop: list[int] | None = None,
          index: list[int] | None = None, crs: str = UTM) -> gpd.GeoDataFrame:
    """A units or cells frame with `cell_id`, `pop` (1 each unless given) and geometry."""
    pop = pop if pop is not None else [1] * len(cell_ids)
    return gpd.GeoDataFrame({"cell_id": cell_ids, "pop": pop}, geometry=geometries, index=index,
                            crs=crs)


@pytest.fixture
def two_squares() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Cell a = [0,100]^2 with one unit; cell b = [100,200]x[0,100] with units at x=120, 180."""
    cells = frame(["a", "b"], [box(0, 0, 100, 100), box(100, 0, 200, 100)], pop=[10, 20])
    units = frame(["a", "b", "b"], [Point(50, 50), Point(120, 50), Point(180, 50)],
                  pop=[10, 5, 15], index=[7, 8, 9])
    return units, cells


@pytest.fixture(scope="module")
def hexagons() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """H3 resolution-9 disk of radius 4 in Helsinki, 1-5 seeded random units inside each."""
    ids = sorted(h3.grid_disk(h3.latlng_to_cell(60.17, 24.94, 9), 4))
    polygons = [shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(i)]) for i in ids]
    cells = frame(ids, polygons, crs="EPSG:4326").to_crs("EPSG:32635")
    rng = np.random.default_rng(42)
    cell_ids, points = [], []
    for cell_id, polygon in zip(cells["cell_id"], cells.geometry, strict=True):
        x0, y0, x1, y1 = polygon.bounds
        candidates = shapely.points(rng.uniform(x0, x1, 40), rng.uniform(y0, y1, 40))
        inside = candidates[shapely.contains(polygon, candidates)][: rng.integers(1, 6)]
        cell_ids += [cell_id] * len(inside)
        points += list(inside)
    return frame(cell_ids, points, crs=cells.crs), cells


def test_pieces_of_two_squares_split_at_the_bisector(two_squares):
    units, cells = two_squares
    pieces = unit_pieces(units, cells)
    assert list(pieces.index) == [7, 8, 9] and pieces.crs == units.crs
    assert pieces.iloc[0].equals(cells.geometry.iloc[0])        # a lone unit gets its cell
    assert pieces.iloc[1].bounds == pytest.approx((100, 0, 150, 100))
    assert pieces.iloc[2].bounds == pytest.approx((150, 0, 200, 100))
    assert pieces.area.tolist() == pytest.approx([10_000, 5_000, 5_000])


def test_adjacency_of_two_squares(two_squares):
    pieces = unit_pieces(*two_squares)
    adjacency = piece_adjacency(pieces)
    assert adjacency.dtype == bool and adjacency.shape == (3, 3)
    assert adjacency.toarray().tolist() == [[False, True, False], [True, False, True],
                                            [False, True, False]]
    # The shared edges are 100 m long: a higher threshold removes them.
    assert piece_adjacency(pieces, min_shared_m=150).nnz == 0


def test_corner_contact_is_not_adjacent():
    pieces = gpd.GeoSeries([box(0, 0, 10, 10), box(10, 10, 20, 20), box(10, 0, 20, 10)], crs=UTM)
    assert piece_adjacency(pieces).toarray().tolist() == [[False, False, True],
                                                          [False, False, True],
                                                          [True, True, False]]
    corner = dissolve_pieces(pieces, np.array([0, 0, -1]))
    assert not corner["contiguous"].item() and corner["n_parts"].item() == 2


# Three pieces of one community of a plan on Chengdu's network (H3 cells split onto network
# nodes; UTM 48N). Pieces 0 and 1 share about 6 m of edge within 1 mm, then their edges part by
# a wedge up to 5 mm wide: shapely's union touches itself at a point and comes out as two
# polygons, even snap-rounded to 1 mm.
_SEAM = [
    "POLYGON ((414104.1908061007 3398554.4189706575, 414033.96804151556 3398578.059578942, "
    "413988.2066455094 3398766.527522179, 414136.8508290793 3398889.5446753297, "
    "414150.85575546214 3398884.8298658654, 414104.1908061007 3398554.4189706575))",
    "POLYGON ((414027.3224850982 3398605.4292498645, 414033.96804151556 3398578.059578942, "
    "413885.31971278106 3398455.036422, 413690.90864998207 3398520.48510247, "
    "413661.27314890904 3398642.5481664673, 414027.3224850982 3398605.4292498645))",
    "POLYGON ((413904.18576771196 3398928.37955475, 414001.80651871266 3398981.417709525, "
    "414114.09955546324 3398983.2422295096, 414136.8508290793 3398889.5446753297, "
    "414080.53696488537 3398842.939614239, 413904.18576771196 3398928.37955475))",
]


def test_dissolve_reads_contiguity_from_shared_edges_not_from_a_float_seam():
    pieces = gpd.GeoSeries(shapely.from_wkt(_SEAM), crs="EPSG:32648")
    assert shapely.union_all(pieces.values, grid_size=1e-3).geom_type == "MultiPolygon"
    assert piece_adjacency(pieces).toarray().tolist() == [[False, True, True],
                                                          [True, False, False],
                                                          [True, False, False]]
    whole = dissolve_pieces(pieces, np.zeros(3, dtype=int))
    # The planner's rule (shared edges) says one piece; the drawn union agrees, healed of the
    # seam without moving an edge by more than 1 mm.
    assert whole["contiguous"].item() and whole["n_parts"].item() == 1
    assert whole.geometry.item().geom_type == "Polygon"
    assert whole["area_m2"].item() == pytest.approx(pieces.area.sum(), abs=0.1)
    assert whole.geometry.item().hausdorff_distance(shapely.union_all(pieces.values)) < 2e-3
    # Pieces 1 and 2 share no edge: without piece 0 they are two parts, and not contiguous.
    apart = dissolve_pieces(pieces, np.array([-1, 0, 0]))
    assert not apart["contiguous"].item() and apart["n_parts"].item() == 2


def test_adjacency_tolerates_float_gaps():
    pieces = gpd.GeoSeries([box(0, 0, 10, 10), box(10 + 1e-9, 0, 20, 10)], crs=UTM)
    assert piece_adjacency(pieces)[0, 1]


def test_dissolve_labels(two_squares):
    pieces = unit_pieces(*two_squares)
    joined = dissolve_pieces(pieces, np.array([1, 1, -1]))
    assert joined["label"].tolist() == [1]
    assert joined["contiguous"].item() and joined["n_parts"].item() == 1
    assert joined["area_m2"].item() == pytest.approx(15_000)
    assert joined.geometry.item().equals(box(0, 0, 150, 100))
    split = dissolve_pieces(pieces, np.array([0, 1, 0]))
    assert split["label"].tolist() == [0, 1]
    assert split["contiguous"].tolist() == [False, True]
    assert split["n_parts"].tolist() == [2, 1]
    assert split.crs == pieces.crs


def test_dissolve_checks_label_length(two_squares):
    with pytest.raises(InputError, match="one value per piece"):
        dissolve_pieces(unit_pieces(*two_squares), np.array([0, 1]))


def test_hexagon_pieces_cover_each_cell_without_overlap(hexagons):
    units, cells = hexagons
    pieces = unit_pieces(units, cells)
    assert len(pieces) == len(units) > len(cells)
    assert shapely.is_valid(pieces.values).all()
    assert shapely.intersects(pieces.values, units.geometry.values).all()
    per_cell = pieces.area.groupby(units["cell_id"].to_numpy()).sum()
    cell_area = cells.set_index("cell_id").area.loc[per_cell.index]
    np.testing.assert_allclose(per_cell.to_numpy(), cell_area.to_numpy(), rtol=1e-6)
    union = shapely.union_all(pieces.values)
    assert union.area == pytest.approx(pieces.area.sum(), rel=1e-9)   # no overlaps
    whole = dissolve_pieces(pieces, np.zeros(len(pieces), dtype=int))
    assert whole["contiguous"].item() and len(whole.geometry.item().interiors) == 0
    assert whole["area_m2"].item() == pytest.approx(cells.area.sum(), rel=1e-6)


def test_hexagon_adjacency_is_symmetric(hexagons):
    adjacency = piece_adjacency(unit_pieces(*hexagons))
    assert (adjacency != adjacency.T).nnz == 0
    assert not adjacency.diagonal().any()
    assert (adjacency.sum(axis=1) > 0).all()      # every piece touches another along an edge


def test_point_cells_share_discs():
    radius = 150.0
    points = [Point(0, 0), Point(100, 0), Point(5_000, 0)]
    cells = frame(["a", "b", "far"], points)
    pieces = unit_pieces(frame(["a", "b", "far"], points), cells, point_cell_radius_m=radius)
    assert pieces.iloc[0].bounds[2] == pytest.approx(50)          # cut at the bisector x = 50
    assert pieces.iloc[0].area == pytest.approx(pieces.iloc[1].area)
    assert pieces.iloc[2].area == pytest.approx(np.pi * radius**2, rel=0.01)
    assert shapely.union_all(pieces.values).area == pytest.approx(pieces.area.sum())
    assert piece_adjacency(pieces).toarray()[0].tolist() == [False, True, False]


def test_point_cell_pieces_avoid_polygon_cells():
    cells = frame(["p", "sq"], [Point(0, 0), box(50, -100, 250, 100)])
    units = frame(["p", "sq", "sq"], [Point(0, 0), Point(100, 0), Point(200, 0)])
    pieces = unit_pieces(units, cells)
    assert shapely.union_all(pieces.values).area == pytest.approx(pieces.area.sum())
    assert pieces.iloc[1:].area.sum() == pytest.approx(40_000)


def test_colocated_units_get_equal_slices():
    cells = frame(["a"], [box(0, 0, 90, 100)])
    spots = [Point(30, 50), Point(30, 50), Point(80, 50), Point(30, 50)]
    units = frame(["a"] * 4, spots)
    pieces = unit_pieces(units, cells)
    assert pieces.area.sum() == pytest.approx(9_000)
    assert shapely.union_all(pieces.values).area == pytest.approx(9_000)
    shared = pieces.iloc[[0, 1, 3]]
    assert shared.area.tolist() == pytest.approx([55 * 100 / 3] * 3)
    assert shared.bounds["minx"].is_monotonic_increasing          # west to east in unit order
    again = unit_pieces(units, cells)
    assert all(a.equals(b) for a, b in zip(pieces, again, strict=True))   # no jitter


def test_unit_districts_and_cut_cells():
    units = frame(["a", "b", "b", "b"], [Point(50, 50), Point(150, 50), Point(180, 50),
                                         Point(190, 150)], pop=[10, 5, 15, 4])
    cells = frame(["a", "b"], [box(0, 0, 100, 100), box(100, 0, 200, 200)])
    districts = frame(["west", "east"], [box(0, 0, 150, 100), box(150, 0, 300, 100)])
    district, report = unit_districts(units, districts, cells)
    assert district.tolist() == [0, 0, 1, -1]       # x = 150 is on both: lowest index wins
    assert report["cells_cut"] == 1 and report["cut_cell_ids"] == ["b"]
    assert report["units_outside"] == 1 and report["population_outside"] == 4


def test_cut_needs_more_than_one_percent_each_side():
    cells = frame(["a"], [box(0, 0, 100, 100)])
    units = frame(["a"], [Point(50, 50)])
    districts = frame(["d"], [box(0.5, 0, 300, 100)])       # 0.5% of the cell outside
    assert unit_districts(units, districts, cells)[1]["cells_cut"] == 0


def test_input_errors(two_squares):
    units, cells = two_squares
    with pytest.raises(InputError, match="not in `cells`"):
        unit_pieces(units, cells[cells["cell_id"] == "a"])
    with pytest.raises(CRSError, match="must be in the CRS"):
        unit_pieces(units, cells.to_crs("EPSG:32634"))
    with pytest.raises(CRSError, match="projected CRS"):
        unit_pieces(units.to_crs("EPSG:4326"), cells.to_crs("EPSG:4326"))
    with pytest.raises(InputError, match="lacks column"):
        unit_pieces(units.drop(columns="cell_id"), cells)


def test_twenty_thousand_units_on_a_grid():
    rng = np.random.default_rng(0)
    col, row = np.divmod(np.arange(400), 20)
    cells = frame([str(i) for i in range(400)],
                  list(shapely.box(col * 250.0, row * 250.0, (col + 1) * 250.0, (row + 1) * 250.0)))
    owner = rng.integers(0, 400, 20_000)
    xy = np.column_stack([col[owner], row[owner]]) * 250.0 + rng.uniform(0, 250, (20_000, 2))
    units = frame(cells["cell_id"].to_numpy()[owner].tolist(), list(shapely.points(xy)))
    pieces = unit_pieces(units, cells)
    assert pieces.area.sum() == pytest.approx(cells.area.sum(), rel=1e-9)
    adjacency = piece_adjacency(pieces)
    assert (adjacency != adjacency.T).nnz == 0
    communities = dissolve_pieces(pieces, owner // 20)
    assert len(communities) == 20 and communities["contiguous"].all()
