"""Isochrones on a grid whose reachable streets can be drawn by hand."""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely
from covplan.errors import InputError
from covplan.inputs.network import WalkNetwork
from covplan.reach.isochrones import compute_isochrones, dissolve_isochrones
from shapely.geometry import LineString, Point

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"


def _center(x, y, cid="S1"):
    return gpd.GeoDataFrame({"center_id": [cid]}, geometry=[Point(x, y)], crs=CRS)


def test_isochrone_is_reached_street_pieces_buffered(grid5):
    net = WalkNetwork.from_graph(grid5)
    cx, cy = X0 + 200, Y0 + 200  # the middle node
    # 2 minutes at 75 m/min = 150 m: full edges to the 4 neighbours, then 50 m on from each.
    iso = compute_isochrones(net, _center(cx, cy), minutes=[2], buffer_m=10)
    arms = [LineString([(cx - 150, cy), (cx + 150, cy)]), LineString([(cx, cy - 150), (cx, cy + 150)])]
    stubs = []
    for nx_, ny_ in ((cx - 100, cy), (cx + 100, cy)):
        stubs.append(LineString([(nx_, ny_ - 50), (nx_, ny_ + 50)]))
    for nx_, ny_ in ((cx, cy - 100), (cx, cy + 100)):
        stubs.append(LineString([(nx_ - 50, ny_), (nx_ + 50, ny_)]))
    expected = shapely.buffer(shapely.MultiLineString(arms + stubs), 10, quad_segs=4)
    got = iso.geometry.iloc[0]
    assert got.is_valid
    assert got.symmetric_difference(expected).area < 1.0
    assert iso["area_m2"].iloc[0] == pytest.approx(expected.area, rel=1e-3)


def test_bands_nest_and_leave_holes(grid5):
    net = WalkNetwork.from_graph(grid5)
    iso = compute_isochrones(net, _center(X0 + 200, Y0 + 200), minutes=[15, 3, 6], buffer_m=20)
    assert list(iso["minutes"]) == [3.0, 6.0, 15.0]
    small, mid, big = iso.geometry
    assert mid.buffer(1e-6).contains(small) and big.buffer(1e-6).contains(mid)
    # The whole grid is within 15 minutes, but block interiors (100 m blocks, 20 m strips) are holes.
    assert big.geom_type == "Polygon" and len(big.interiors) == 16
    assert all(g.is_valid for g in iso.geometry)


def test_access_leg_shrinks_the_isochrone(grid5):
    net = WalkNetwork.from_graph(grid5)
    on = compute_isochrones(net, _center(X0 + 200, Y0 + 200), minutes=[3])
    off = compute_isochrones(net, _center(X0 + 200, Y0 + 250), minutes=[3])  # 50 m from a street
    assert off["area_m2"].iloc[0] < on["area_m2"].iloc[0]


def test_off_network_center_gets_empty_area_and_dissolve(grid5):
    net = WalkNetwork.from_graph(grid5)
    centers = gpd.GeoDataFrame({"center_id": ["a", "b", "far"]},
                               geometry=[Point(X0, Y0), Point(X0 + 400, Y0 + 400),
                                         Point(X0 + 9000, Y0)], crs=CRS)
    iso = compute_isochrones(net, centers, minutes=[3])
    assert iso.set_index("center_id").loc["far", "area_m2"] == 0.0
    merged = dissolve_isochrones(iso)
    assert len(merged) == 1
    assert merged.area.iloc[0] == pytest.approx(iso.area.sum(), rel=1e-6)  # a and b don't touch


def test_result_comes_back_in_the_centers_crs(grid5):
    net = WalkNetwork.from_graph(grid5)
    centers = _center(X0 + 200, Y0 + 200).to_crs(4326)
    iso = compute_isochrones(net, centers, minutes=[5])
    assert iso.crs.to_epsg() == 4326


def test_bad_limits_are_refused(grid5):
    net = WalkNetwork.from_graph(grid5)
    with pytest.raises(InputError, match="minutes"):
        compute_isochrones(net, _center(X0, Y0), minutes=[-1])
    with pytest.raises(InputError, match="empty"):
        compute_isochrones(net, _center(X0, Y0), minutes=[])
