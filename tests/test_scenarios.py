"""Scenarios: TOML in, new inputs out (the base never changes), and clear errors naming the entry."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from conftest import grid_graph
from covplan.config import PlanConfig
from covplan.errors import InputError
from covplan.inputs.areas import load_centers, load_communities, load_districts
from covplan.inputs.network import WalkNetwork
from covplan.inputs.population import Population
from covplan.scenarios import (
    AddLink,
    AddResidents,
    CloseRoad,
    RemoveCenter,
    ScenarioInputs,
    apply_scenario,
    load_scenario,
    write_scenario,
)
from pyproj import Transformer
from scipy.sparse.csgraph import dijkstra

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"
EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "scenarios"
_TO_LONLAT = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)


def lonlat(x: float, y: float) -> list[float]:
    """Grid metres (from the south-west node) as [lon, lat]."""
    lon, lat = _TO_LONLAT.transform(X0 + x, Y0 + y)
    return [lon, lat]


def ring(x0: float, y0: float, x1: float, y1: float) -> str:
    corners = [lonlat(x0, y0), lonlat(x1, y0), lonlat(x1, y1), lonlat(x0, y1)]
    return "[" + ", ".join(f"[{lon!r}, {lat!r}]" for lon, lat in corners) + "]"


@pytest.fixture
def grid_inputs() -> ScenarioInputs:
    """5 x 5 grid of 100 m blocks; a 100 m cell of 10 people around each node; two centers."""
    network = WalkNetwork.from_graph(grid_graph())
    cells = gpd.GeoDataFrame(
        {"cell_id": [f"c{r}{c}" for r in range(5) for c in range(5)], "pop": [10] * 25},
        geometry=[shapely.box(X0 + 100 * c - 50, Y0 + 100 * r - 50, X0 + 100 * c + 50, Y0 + 100 * r + 50)
                  for r in range(5) for c in range(5)], crs=CRS)
    centers = gpd.GeoDataFrame({"center_id": ["A", "B"], "community_id": ["C1", "C2"]},
                               geometry=gpd.points_from_xy([X0 + 100, X0 + 300], [Y0 + 200, Y0 + 200]),
                               crs=CRS)
    halves = gpd.GeoDataFrame({"community_id": ["C1", "C2"]},
                              geometry=[shapely.box(X0 - 50, Y0 - 50, X0 + 250, Y0 + 450),
                                        shapely.box(X0 + 250, Y0 - 50, X0 + 450, Y0 + 450)], crs=CRS)
    return ScenarioInputs(network=network, population=Population.from_frame(cells),
                          centers=load_centers(centers), communities=load_communities(halves),
                          districts=load_districts(halves.rename(columns={"community_id": "id"})))


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def snapshot(inputs: ScenarioInputs) -> dict:
    net = inputs.network
    return {"arrays": [a.copy() for a in (net.x, net.y, net.indptr, net.indices, net.length_m,
                                          net.arc_edge, net.component)],
            "edges": net.edges.copy(), "speed": net.walk_speed_kmh,
            "cells": inputs.population.cells.copy(), "units": inputs.population.units.copy(),
            "centers": inputs.centers.copy(), "districts": inputs.districts.copy(),
            "config": inputs.config}


def test_every_example_file_reads():
    kinds = {}
    for path in sorted(EXAMPLES.glob("*.toml")):
        scenario = load_scenario(path)
        assert scenario.base.demo
        kinds[path.stem] = [c.kind for c in scenario.changes]
    assert kinds["new_estate"] == ["add_residents"]
    assert kinds["closed_center"] == ["remove_center"]
    assert kinds["footbridge"] == ["add_link"]
    assert load_scenario(EXAMPLES / "elderly_walking.toml").config().walk_speed_kmh == 3.0
    assert load_scenario(EXAMPLES / "target_8000.toml").config().target_pop == 8000


def test_apply_returns_new_inputs_and_never_mutates_the_base(tmp_path, grid_inputs):
    path = write(tmp_path, f"""
name = "everything"
[base]
network = "net.graphml"
population = "pop.gpkg"
[plan]
target_pop = 60
walk_speed_kmh = 3.0
use_districts = false
[[changes]]
type = "move_center"
center_id = "A"
to = {lonlat(100, 100)}
[[changes]]
type = "remove_center"
center_id = "B"
[[changes]]
type = "add_center"
center_id = "N"
at = {lonlat(400, 400)}
[[changes]]
type = "add_residents"
count = 100
polygon = {ring(150, 150, 250, 250)}
[[changes]]
type = "scale_population"
factor = 2.0
polygon = {ring(-50, -50, 50, 50)}
[[changes]]
type = "close_road"
nodes = [12, 13]
[[changes]]
type = "add_link"
from = {lonlat(0, 0)}
to = {lonlat(100, 100)}
""")
    before = snapshot(grid_inputs)
    scenario = load_scenario(path)
    new = apply_scenario(grid_inputs, scenario)
    after = snapshot(grid_inputs)
    for a, b in zip(before["arrays"], after["arrays"]):
        np.testing.assert_array_equal(a, b)
    for key in ("edges", "cells", "units", "centers", "districts"):
        assert before[key].equals(after[key]), key
    assert after["speed"] == before["speed"] and after["config"] == PlanConfig()
    # ... while the new inputs carry every change.
    assert new.config.target_pop == 60 and new.network.walk_speed_kmh == 3.0
    assert new.districts is None and new.communities is grid_inputs.communities
    assert sorted(new.centers["center_id"]) == ["A", "N"]
    moved = new.centers.set_index("center_id").geometry["A"]
    assert moved.distance(shapely.Point(X0 + 100, Y0 + 100)) < 0.01
    assert new.population.total == 250 + 100 + 10     # +100 added, the corner cell's 10 doubled
    assert new.network.n_edges == grid_inputs.network.n_edges - 1 + 1


def test_add_residents_spreads_by_area_over_cells_and_new_cells(grid_inputs, tmp_path):
    # Half over the top-right cell (x 350..450, y 350..450), half beyond the grid's cells.
    path = write(tmp_path, f"""
base = "demo"
[[changes]]
type = "add_residents"
count = 1000
polygon = {ring(350, 350, 550, 450)}
""")
    new = apply_scenario(grid_inputs, load_scenario(path))
    cells = new.population.cells.set_index("cell_id")
    assert new.population.total == 250 + 1000
    assert cells.loc["c44", "pop"] == 10 + 500
    # New cells follow a 100 m grid of the working CRS: 450..550 x 350..450 touches four squares.
    fresh = cells[cells.index.str.startswith("scenario0-")]
    assert list(fresh["pop"]) == [125, 125, 125, 125]
    assert fresh.to_crs(CRS).area.sum() == pytest.approx(100 * 100, rel=1e-3)
    # spread = "cells" keeps everything on existing cells.
    only = write(tmp_path, path.read_text() + 'spread = "cells"\n', "cells.toml")
    cells = apply_scenario(grid_inputs, load_scenario(only)).population.cells.set_index("cell_id")
    assert cells.loc["c44", "pop"] == 1010 and len(cells) == 25


def test_scale_population_counts_the_share_inside(grid_inputs, tmp_path):
    # The polygon covers cell c00 wholly and half of c01; factor 0 empties what it covers.
    path = write(tmp_path, f"""
base = "demo"
[[changes]]
type = "scale_population"
factor = 0
polygon = {ring(-50, -50, 100, 50)}
""")
    cells = apply_scenario(grid_inputs, load_scenario(path)).population.cells.set_index("cell_id")
    assert cells.loc["c00", "pop"] == 0
    assert cells.loc["c01", "pop"] == 5
    assert cells["pop"].sum() == 250 - 15


def _distances(network: WalkNetwork) -> np.ndarray:
    return dijkstra(network.csr_length(), directed=True)


def test_closing_and_adding_roads_matches_an_independent_graph(grid_inputs, tmp_path):
    path = write(tmp_path, f"""
base = "demo"
[[changes]]
type = "close_road"
nodes = [2, 7, 12]            # the middle column's two southern blocks
[[changes]]
type = "close_road"
line = [{lonlat(350, 350)}, {lonlat(450, 350)}]   # crosses the block from node 19 to 24
[[changes]]
type = "add_link"
from = {lonlat(0, 0)}
to = {lonlat(110, 95)}
""")
    new = apply_scenario(grid_inputs, load_scenario(path)).network
    G = grid_graph()
    for a, b in ((2, 7), (7, 12), (19, 24)):
        G.remove_edges_from([(a, b), (b, a)])
    G.add_edge(0, 6, length=float(np.hypot(100, 100)), highway="footway")
    G.add_edge(6, 0, length=float(np.hypot(100, 100)), highway="footway")
    expected = WalkNetwork.from_graph(G)
    np.testing.assert_array_equal(new.node_id, expected.node_id)
    np.testing.assert_allclose(_distances(new), _distances(expected))
    assert new.n_edges == expected.n_edges == 40 - 3 + 1
    assert (new.component == 0).all()


def test_closing_a_road_by_point_and_dropping_a_dead_end_node(tmp_path, grid_inputs):
    path = write(tmp_path, f"""
base = "demo"
[[changes]]
type = "close_road"
point = {lonlat(0, 40)}       # nearest: the block from node 0 to node 5
[[changes]]
type = "close_road"
edges = [0]                   # row 0 of the edge table: node 0 to node 1
""")
    before = grid_inputs.network
    assert set(before.edges.loc[0, ["u", "v"]]) == {0, 1}
    new = apply_scenario(grid_inputs, load_scenario(path)).network
    # Node 0 lost both its blocks: it is dropped, as the loaders drop nodes without edges.
    assert new.n_nodes == 24 and 0 not in set(new.node_id)
    assert new.n_edges == 38
    assert len(new.indices) == 2 * 38


@pytest.mark.parametrize("body, needle", [
    ('base = "demo"\ncolour = "red"\n', "top level: unknown key 'colour'"),
    ('base = "demo"\n[plan]\ntarget = 8000\n', "plan: unknown key 'target'; did you mean 'target_pop'"),
    ('base = "demo"\n[plan]\ntolerance = 1.5\n', "[plan]"),
    ('base = "demo"\n[[changes]]\ntype = "remove_center"\ncenter = "A"\n',
     "changes[0]: unknown key 'center'; did you mean 'center_id'"),
    ('base = "demo"\n[[changes]]\ntype = "close_center"\n', "changes[0].type: unknown change type 'close_center'"),
    (('base = "demo"\n[[changes]]\ntype = "remove_center"\ncenter_id = "A"\n[[changes]]\n'
      'type = "add_residents"\ncount = -5\npolygon = [[0, 0], [1, 0], [1, 1]]\n'), "changes[1].count"),
    ('base = "demo"\n[[changes]]\ntype = "move_center"\ncenter_id = "A"\nto = [4000000, 500000]\n',
     "changes[0].to"),
    ('base = "demo"\n[[changes]]\ntype = "close_road"\nnodes = [1, 2]\npoint = [0, 0]\n', "exactly one"),
    ('[base]\nnetwork = "n.pbf"\n', "missing population"),
    ('base = "demo"\nname = \n', "not valid TOML"),
])
def test_bad_scenario_files_name_the_entry(tmp_path, body, needle):
    with pytest.raises(InputError) as info:
        load_scenario(write(tmp_path, body))
    assert needle in str(info.value)
    assert "s.toml" in str(info.value)


def test_invalid_toml_gives_the_line(tmp_path):
    with pytest.raises(InputError, match=r"line 3"):
        load_scenario(write(tmp_path, 'base = "demo"\nname = "x"\nname = "y"\n'))


@pytest.mark.parametrize("change, needle", [
    ('type = "remove_center"\ncenter_id = "Z"', "changes[0].center_id: no center 'Z'"),
    ('type = "move_center"\ncenter_id = "Q"\nto = [15.0, 36.1]', "changes[0].center_id: no center 'Q'"),
    ('type = "add_center"\ncenter_id = "A"\nat = {at}', "changes[0].center_id: a center 'A' already exists"),
    ('type = "add_center"\ncenter_id = "far"\nat = [16.0, 36.1]', "changes[0].at"),
    ('type = "add_residents"\ncount = 10\npolygon = [[16.0, 36.0], [16.1, 36.0], [16.1, 36.1]]',
     "changes[0].polygon: the polygon"),
    ('type = "close_road"\nnodes = [0, 24]', "no road segment joins nodes 0 and 24"),
    ('type = "close_road"\nnodes = [0, 99]', "[99]"),
    ('type = "close_road"\npoint = {far}', "changes[0].point: no walkable way within 50 m"),
    ('type = "add_link"\nfrom = {at}\nto = {at}', "same network node"),
])
def test_changes_that_do_not_fit_the_city_name_the_entry(tmp_path, grid_inputs, change, needle):
    text = change.replace("{at}", str(lonlat(100, 200))).replace("{far}", str(lonlat(-100, 200)))
    path = write(tmp_path, f'base = "demo"\n[[changes]]\n{text}\n')
    with pytest.raises(InputError) as info:
        apply_scenario(grid_inputs, load_scenario(path))
    assert needle in str(info.value)


def test_polygon_outside_the_city_says_so(tmp_path, grid_inputs):
    path = write(tmp_path, 'base = "demo"\n[[changes]]\ntype = "add_residents"\ncount = 10\n'
                           'polygon = [[16.0, 36.0], [16.1, 36.0], [16.1, 36.1]]\n')
    with pytest.raises(InputError, match=r"changes\[0\]\.polygon: .*lies outside the city"):
        apply_scenario(grid_inputs, load_scenario(path))


def test_written_scenario_reads_back_the_same(tmp_path):
    (tmp_path / "area.geojson").write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, '
        '"geometry": {"type": "Polygon", "coordinates": [[[15, 36], [15.01, 36], [15.01, 36.01], [15, 36]]]}}]}')
    source = write(tmp_path, f"""
name = "round trip"
description = "all change types"
[base]
network = "net.graphml"
population = "sub/pop.gpkg"
population_column = "residents"
[plan]
seed = 3
[[changes]]
type = "add_center"
center_id = "N"
at = {lonlat(1, 2)}
community_id = "C1"
[[changes]]
type = "scale_population"
factor = 1.5
polygon_file = "area.geojson"
[[changes]]
type = "close_road"
line = [{lonlat(0, 0)}, {lonlat(5, 5)}]
max_distance_m = 20
[[changes]]
type = "add_link"
from = {lonlat(0, 0)}
to = {lonlat(10, 0)}
length_m = 12.5
""")
    scenario = load_scenario(source)
    assert scenario.base.population == str((tmp_path / "sub" / "pop.gpkg").resolve())
    assert isinstance(scenario.changes[2], CloseRoad) and isinstance(scenario.changes[3], AddLink)
    elsewhere = tmp_path / "out"
    elsewhere.mkdir()
    again = load_scenario(write_scenario(scenario, elsewhere / "scenario.toml"))
    assert again.to_dict() == scenario.to_dict()
    assert again.changes == scenario.changes and again.base == scenario.base
    resolved = load_scenario(write_scenario(scenario.resolved(scenario.config()), elsewhere / "r.toml"))
    assert resolved.config() == scenario.config() and dict(resolved.plan)["restarts"] == 3
    # TOML has no None: "never split cells" is written as max_unit_pop = 0 and read back as None.
    never = PlanConfig(max_unit_pop=None, seed=3)
    again = load_scenario(write_scenario(scenario.resolved(never), elsewhere / "never.toml"))
    assert dict(again.plan)["max_unit_pop"] == 0 and again.config() == never


def test_change_dataclasses_are_frozen(tmp_path):
    scenario = load_scenario(EXAMPLES / "closed_center.toml")
    change = scenario.changes[0]
    assert isinstance(change, RemoveCenter) and change.center_id == "S31"
    with pytest.raises(AttributeError):
        change.center_id = "S01"
    assert isinstance(load_scenario(EXAMPLES / "new_estate.toml").changes[0], AddResidents)



def test_each_change_type_applies_itself_and_says_where_it_lies():
    """A change type is one class: `apply`, and where re-planning looks (replan.py asks it)."""
    from covplan.scenarios import _CHANGE_TYPES, _Change

    for cls in _CHANGE_TYPES.values():
        assert issubclass(cls, _Change) and cls.apply is not _Change.apply, cls.kind
    link = AddLink(0, (1.0, 2.0), (3.0, 4.0))
    assert link.touched_points() == [(1.0, 2.0), (3.0, 4.0)] and link.touched_center() is None
    [(shape, slack)] = link.changed_roads()
    assert shape.equals(shapely.LineString([(1, 2), (3, 4)])) and slack == 0
    closed = CloseRoad(1, point=(1.0, 2.0), max_distance_m=30.0)
    assert closed.touched_points() == [(1.0, 2.0)] and closed.changed_roads()[0][1] == 30.0
    assert CloseRoad(2, nodes=(5, 6)).changed_roads() is None     # only the base network knows
    removed = RemoveCenter(3, "S1")
    assert removed.touched_center() == ("S1", "closed") and removed.touched_points() == []
    assert AddResidents(4, 10, polygon=((0, 0), (1, 0), (1, 1))).changed_roads() == []


def test_a_new_estate_mostly_outside_the_city_is_planned_and_warned(grid_inputs, tmp_path):
    """92 % of this estate lies beyond the network's extent: accepted (it touches the city), but
    said in the log, as a CoverageWarning and in the population's warnings (report.json)."""
    from covplan.errors import CoverageWarning

    path = write(tmp_path, f"""
base = "demo"
[[changes]]
type = "add_residents"
count = 500
polygon = {ring(300, 300, 650, 650)}
""")
    with pytest.warns(CoverageWarning, match=r"changes\[0\]: 92 % of the new estate's polygon lies outside"):
        new = apply_scenario(grid_inputs, load_scenario(path))
    assert new.population.total == 250 + 500
    assert any("92 % of the new estate" in w for w in new.population.warnings)
