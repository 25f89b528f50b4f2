"""Maps: every layer, legend and panel present; self-contained files; small files; composable."""

from __future__ import annotations

import functools
import re

import branca.colormap
import folium
import folium.folium
import folium.plugins
import geopandas as gpd
import numpy as np
import pytest
import shapely
from conftest import grid_graph
from covplan.assess import assess_coverage
from covplan.cities.demo import build_demo_city
from covplan.config import PlanConfig
from covplan.errors import DataSourceError, InputError
from covplan.inputs.areas import load_centers, load_communities, load_districts
from covplan.inputs.network import WalkNetwork, load_network
from covplan.inputs.population import Population, load_population
from covplan.output.basemap import base_layer
from covplan.output.maps import (
    LabelLayer,
    MapPanel,
    add_plan_communities,
    coverage_map,
    isochrone_map,
    plan_map,
    save_map,
)
from covplan.output.offline import map_html
from covplan.plan.pipeline import plan_communities
from covplan.reach.isochrones import compute_isochrones
from shapely.geometry import box

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"
N = 10                  # 10 x 10 streets 100 m apart
FAR_X = X0 + 3_000      # a hamlet 2 km beyond the last street: off the network, so unserved
CONFIG = PlanConfig(target_pop=2_000, tolerance=0.25, max_minutes=8.0, candidate_spacing_m=150.0,
                    max_unit_pop=None, restarts=1)
EXTERNAL_TAG = re.compile(r"<(script|link)\b[^>]*\b(src|href)\s*=", re.IGNORECASE)


@functools.cache
def demo_plan():
    """The demo replay (69 communities -> ~30), shared with test_browser.py."""
    city = build_demo_city(seed=0)
    network = load_network(city.graph)
    population = load_population(city.population, population_column="population",
                                 id_column="cell_id")
    return plan_communities(network, population, communities=load_communities(city.communities),
                            centers=load_centers(city.centers),
                            districts=load_districts(city.districts), config=PlanConfig())


@functools.cache
def demo_base():
    """The demo city's base layer (primary streets and the railway), shared with test_browser.py."""
    city = build_demo_city(seed=0)
    return base_layer(load_network(city.graph), features=city.railway.assign(kind="railway"))


@pytest.fixture(scope="module")
def town():
    """A small town in four old quarters, each with a center, plus an unreachable hamlet."""
    network = WalkNetwork.from_graph(grid_graph(N, 100.0))
    rng = np.random.default_rng(3)
    cells = [box(X0 + 100 * c, Y0 + 100 * r, X0 + 100 * (c + 1), Y0 + 100 * (r + 1))
             for r in range(N - 1) for c in range(N - 1)]
    pops = [int(p) for p in rng.integers(40, 160, len(cells))]
    cells.append(box(FAR_X, Y0, FAR_X + 100, Y0 + 100))
    pops.append(77)
    frame = gpd.GeoDataFrame({"cell_id": [f"c{i}" for i in range(len(cells))], "pop": pops},
                             geometry=cells, crs=CRS)
    population = Population.from_frame(frame, population_column="pop", id_column="cell_id")
    half = 100 * (N - 1) / 2
    quarters = [box(X0 + i * half, Y0 + j * half, X0 + (i + 1) * half, Y0 + (j + 1) * half)
                for j in range(2) for i in range(2)]
    old = gpd.GeoDataFrame({"community_id": ["SW", "SE", "NW", "NE"]}, geometry=quarters, crs=CRS)
    centers = gpd.GeoDataFrame(
        {"center_id": ["a", "b", "c", "d"], "community_id": ["SW", "SE", "NW", "NE"]},
        geometry=gpd.points_from_xy([X0 + 200, X0 + 700, X0 + 200, X0 + 700],
                                    [Y0 + 200, Y0 + 200, Y0 + 700, Y0 + 700]), crs=CRS)
    plan = plan_communities(network, population, communities=old, centers=centers, config=CONFIG)
    return network, population, old, centers, plan


def _layers(fmap: folium.Map) -> dict[str, folium.map.Layer]:
    return {child.layer_name: child for child in fmap._children.values()
            if isinstance(child, folium.map.Layer) and child.control}


def _features(layer) -> list[dict]:
    return layer.data["features"] if isinstance(layer, folium.GeoJson) else []


def _panels(fmap: folium.Map) -> list[str]:
    return [child.content for child in fmap._children.values() if isinstance(child, MapPanel)]


# --- layers, legends, panels -----------------------------------------------------------------

def test_plan_map_has_every_layer_with_tooltips(town):
    *_, plan = town
    fmap = plan_map(plan)
    layers = _layers(fmap)
    assert {"communities", "service centers", "8-minute walk", "old communities (dashed)",
            "population density"} <= set(layers)
    uncovered = [name for name in layers if name.startswith("uncovered residents")]
    assert len(uncovered) == 1
    assert len(_features(layers["communities"])) == len(plan.communities)
    assert len(_features(layers["service centers"])) == len(plan.centers)
    assert len(_features(layers["old communities (dashed)"])) == 4
    for name in ("communities", "service centers", "8-minute walk", "population density"):
        children = layers[name]._children.values()
        assert any(isinstance(c, folium.GeoJsonTooltip) for c in children), name
    # Centers' popups carry the figures of their community, the old ones it replaces included.
    popup = next(c for c in layers["service centers"]._children.values()
                 if isinstance(c, folium.GeoJsonPopup))
    assert {"population", "mean_minutes", "max_minutes", "previous_ids"} <= set(popup.fields)
    first = _features(layers["service centers"])[0]["properties"]
    row = plan.communities.set_index("community_id").loc[first["community_id"]]
    assert first["population"] == row["population"]
    assert first["previous_ids"] == row["previous_ids"] != ""
    # Only the last child is a layer control, and only one.
    controls = [c for c in fmap._children.values() if isinstance(c, folium.LayerControl)]
    assert len(controls) == 1 and list(fmap._children.values())[-1] is controls[0]


def test_unreachable_residents_appear_in_the_uncovered_layer(town):
    *_, plan = town
    unserved = plan.units[~(plan.units["minutes"] <= CONFIG.max_minutes)]
    assert int(unserved["pop"].sum()) == 77              # the hamlet, and only it
    layers = _layers(plan_map(plan))
    name = next(n for n in layers if n.startswith("uncovered residents"))
    assert name.endswith(": 77")
    features = _features(layers[name])
    assert [f["properties"]["pop"] for f in features] == [77]
    lon, lat = features[0]["geometry"]["coordinates"]
    hamlet = gpd.GeoSeries([shapely.Point(FAR_X + 50, Y0 + 50)], crs=CRS).to_crs(4326)[0]
    assert abs(lon - hamlet.x) < 1e-4 and abs(lat - hamlet.y) < 1e-4


def test_legend_summary_and_title_state_the_plan(town):
    *_, plan = town
    fmap = plan_map(plan)
    panels = " ".join(_panels(fmap))
    assert "Residents per community (target 2,000 ± 25%)" in panels
    assert f"Community plan: 4 → {len(plan.communities)} communities" in panels
    r = plan.report
    assert f"<b>{r['communities']} communities</b>" in panels
    assert f"{100 * r['coverage_share']:.1f} % of residents within 8 min" in panels
    assert f"mean walk {r['mean_minutes']:.1f} min" in panels
    assert "Residents per km²" in panels
    html = map_html(fmap)
    assert "<title>Community plan: 4 → " in html
    assert '"attribution": "\\u00a9 OpenStreetMap contributors"' in html


def test_communities_at_the_tolerance_limits_count_as_within():
    target, tolerance = 10_000, 0.2
    sizes = [12_000, 12_001, 8_000, 7_999, 10_000, 3_000, 25_000]
    frame = gpd.GeoDataFrame({"community_id": [f"N{i}" for i in range(len(sizes))],
                              "population": sizes},
                             geometry=[box(100 * i, 0, 100 * i + 90, 90)
                                       for i in range(len(sizes))],
                             crs=CRS)
    layer = add_plan_communities(folium.Map(), frame, target_pop=target, tolerance=tolerance)
    colors = [layer.style_function(f)["fillColor"] for f in layer.data["features"]]
    palette = ["#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b"]
    assert [palette.index(c) for c in colors] == [4, 5, 2, 1, 3, 0, 6]


def test_density_layer_holds_every_resident(town):
    *_, plan = town
    features = _features(_layers(plan_map(plan))["population density"])
    assert sum(f["properties"]["residents"] for f in features) == plan.units["pop"].sum()
    assert all(f["properties"]["per_km2"] > 0 for f in features)


def test_coverage_and_isochrone_maps(town):
    network, population, old, centers, _ = town
    result = assess_coverage(network, population, centers, communities=old, max_minutes=8.0)
    isochrones = compute_isochrones(network, centers, minutes=[5, 8])
    fmap = coverage_map(result, isochrones=isochrones)
    layers = _layers(fmap)
    assert {"communities by share within reach", "residents by walk minutes", "service centers",
            "5-minute walk",
            "8-minute walk", "population density"} <= set(layers)
    dots = _features(layers["residents by walk minutes"])
    assert len(dots) == int((result.units["pop"] > 0).sum())
    panels = " ".join(_panels(fmap))
    assert "Walking coverage of 4 service centers" in panels
    assert f"{100 * result.summary()['coverage_share']:.1f} % within 8 min" in panels
    iso_layers = _layers(isochrone_map(isochrones, centers))
    assert {"5-minute walk", "8-minute walk", "service centers"} <= set(iso_layers)


def test_maps_compose_with_m(town):
    network, population, old, centers, plan = town
    result = assess_coverage(network, population, centers, communities=old, max_minutes=8.0)
    first = coverage_map(result)
    combined = plan_map(plan, m=first)
    assert combined is first
    names = list(_layers(combined))
    assert {"communities by share within reach", "residents by walk minutes", "communities",
            "old communities (dashed)"} <= set(names)
    controls = [c for c in combined._children.values() if isinstance(c, folium.LayerControl)]
    assert len(controls) == 1 and list(combined._children.values())[-1] is controls[0]
    titles = [p for p in _panels(combined) if "Community plan" in p or "Walking coverage" in p]
    assert titles == ["Walking coverage of 4 service centers"]   # the composed map keeps its own
    assert not EXTERNAL_TAG.search(map_html(combined))


def test_plan_on_a_plain_folium_map_gets_its_points_pane_first(town):
    *_, plan = town
    fmap = folium.Map(tiles=None)
    assert plan_map(plan, m=fmap) is fmap
    children = list(fmap._children.values())
    pane = next(i for i, c in enumerate(children) if isinstance(c, folium.map.CustomPane))
    centers = next(i for i, c in enumerate(children)
                   if getattr(c, "layer_name", None) == "service centers")
    assert pane < centers and children[pane].name == "coverage-points"
    assert '"pane": "coverage-points"' in map_html(fmap)


# --- files: self-contained, deterministic, small ----------------------------------------------

def test_self_contained_file_links_nothing_but_tiles(town, tmp_path):
    *_, plan = town
    path = save_map(plan_map(plan), tmp_path / "map.html")
    page = path.read_text(encoding="utf-8")
    assert not EXTERNAL_TAG.search(page)
    assert "Leaflet 1.9.3" in page                      # Leaflet itself is in the file
    assert "jQuery" not in page and "d3.js" not in page   # nothing the map does not use
    assert "bootstrap" not in page.lower() and "font-awesome" not in page.lower()
    urls = set(re.findall(r"https?://[^\s\"'<>()]+", page))
    fetched = {u for u in urls if "{z}" in u}
    assert fetched == {"https://tile.openstreetmap.org/{z}/{x}/{y}.png"}


def test_cdn_file_keeps_folium_links(town, tmp_path):
    *_, plan = town
    page = save_map(plan_map(plan), tmp_path / "map.html", self_contained=False).read_text()
    links = [m.group(0) for m in EXTERNAL_TAG.finditer(page)]
    assert len(links) >= 2
    assert "leaflet@1.9.3/dist/leaflet.js" in page
    assert len(page) < len(save_map(plan_map(plan), tmp_path / "own.html").read_text())


def test_same_plan_gives_the_same_file(town, tmp_path):
    *_, plan = town
    a = save_map(plan_map(plan), tmp_path / "a.html").read_bytes()
    b = save_map(plan_map(plan), tmp_path / "b.html").read_bytes()
    assert a == b


def test_bundled_leaflet_is_the_version_folium_links():
    folium_url = dict(folium.folium._default_js)["leaflet"]
    version = re.search(r"leaflet@([\d.]+)/", folium_url).group(1)
    page = map_html(folium.Map(tiles=None))
    assert f"Leaflet {version}," in page


def test_popups_and_colour_scales_bring_only_what_they_need():
    fmap = folium.Map(tiles=None)
    folium.Marker([39.8, 98.3], popup="a popup needs jQuery").add_to(fmap)
    branca.colormap.LinearColormap(["red", "blue"], caption="a legend needs D3").add_to(fmap)
    page = map_html(fmap)
    assert not EXTERNAL_TAG.search(page)
    assert "jQuery v3.7.1" in page and 'var d3 = {\n    version: "3.5.' in page
    assert "data:image/png;base64," in page             # Leaflet's default marker images
    assert "bootstrap" not in page.lower()


@pytest.mark.parametrize("element, needle", [
    (lambda: folium.Marker([39.8, 98.3], icon=folium.Icon(icon="home")), "CircleMarker"),
    (lambda: folium.plugins.MiniMap(), "not bundled"),
])
def test_self_contained_refuses_what_it_cannot_embed(element, needle, tmp_path):
    fmap = folium.Map(tiles=None)
    element().add_to(fmap)
    with pytest.raises(InputError, match=needle):
        save_map(fmap, tmp_path / "map.html")
    cdn = save_map(fmap, tmp_path / "cdn.html", self_contained=False)
    assert EXTERNAL_TAG.search(cdn.read_text())


def test_unwritable_path_is_a_data_source_error(tmp_path):
    with pytest.raises(DataSourceError, match="cannot write map"):
        save_map(folium.Map(tiles=None), tmp_path / "missing" / "map.html")


def test_demo_map_is_small_and_faithful(tmp_path):
    plan = demo_plan()
    fmap = plan_map(plan)
    own = save_map(fmap, tmp_path / "map.html").stat().st_size
    cdn = save_map(plan_map(plan), tmp_path / "cdn.html", self_contained=False).stat().st_size
    assert own < 650_000 and cdn < 450_000          # 1.02 MB before display simplification
    # Simplified for display, yet each community keeps its area within 1 %.
    shown = gpd.GeoDataFrame.from_features(_features(_layers(fmap)["communities"]), crs=4326)
    metric = plan.work_crs
    ratio = shown.to_crs(metric).area.to_numpy() / plan.communities.to_crs(metric).area.to_numpy()
    assert np.all(np.abs(ratio - 1) < 0.01)


# --- offline base layer, labels, north arrow, scale ------------------------------------------

def _graph_with_main_street():
    """The 10 x 10 grid with its bottom row a primary road and its left column secondary."""
    G = grid_graph(N, 100.0)
    for u, v, data in G.edges(data=True):
        if u < N and v < N:
            data["highway"] = "primary"
        elif u % N == 0 and v % N == 0:
            data["highway"] = "secondary_link" if max(u, v) == N * (N - 1) else "secondary"
    return G


def test_base_layer_holds_the_main_streets_merged():
    network = WalkNetwork.from_graph(_graph_with_main_street())
    base = base_layer(network)
    assert base.crs.to_epsg() == 4326
    assert list(base["kind"]) == ["residential", "secondary", "primary"]   # main ones on top
    assert base["street"].all() and (base["name"] == "").all()   # the grid has no names
    metric = base.to_crs(CRS).set_index("kind").geometry
    assert metric["primary"].length == pytest.approx(100 * (N - 1), rel=1e-3)
    assert metric["secondary"].length == pytest.approx(100 * (N - 1), rel=1e-3)  # _link included
    # Merged: the primary street is one line from x0 to the last node, not nine segments.
    assert shapely.get_num_geometries(metric["primary"]) == 1
    assert metric["primary"].distance(shapely.Point(X0 + 450, Y0)) < 1.5
    # Residential streets only while they are few.
    assert list(base_layer(network, max_residential_km=1.0)["kind"]) == ["secondary", "primary"]


def test_base_layer_adds_named_features_and_needs_their_kind():
    network = WalkNetwork.from_graph(_graph_with_main_street())
    river = shapely.LineString([(X0 - 200, Y0 + 450), (X0 + 1_100, Y0 + 480)])
    features = gpd.GeoDataFrame({"kind": ["river", "lake"], "name": ["Blue River", "Pond"]},
                                geometry=[river, river.buffer(40).centroid.buffer(60)], crs=CRS)
    base = base_layer(network, features=features)
    assert list(base["kind"][:2]) == ["river", "lake"]
    assert list(base["name"][:2]) == ["Blue River", "Pond"]
    assert not base["street"][:2].any()
    with pytest.raises(InputError, match="kind"):
        base_layer(network, features=features.drop(columns="kind"))


def _labels(fmap: folium.Map, layer: str) -> list[list]:
    group = _layers(fmap)[layer]
    return [row for child in group._children.values() if isinstance(child, LabelLayer)
            for row in child.rows]


def test_plan_map_with_base_labels_every_community(town):
    *_, plan = town
    base = base_layer(WalkNetwork.from_graph(_graph_with_main_street()))
    fmap = plan_map(plan, base=base)
    layers = _layers(fmap)
    assert {"streets and water (base)", "community labels", "communities"} <= set(layers)
    names = list(layers)
    assert names.index("streets and water (base)") < names.index("communities")   # underneath
    page = map_html(fmap)
    # One label per community, "id<br>residents", in the page's label array (HTML is escaped).
    lt, gt = r"\\u003c", r"\\u003e"
    shown = dict(re.findall(rf"{lt}b{gt}([^\\]+){lt}/b{gt}{lt}br{gt}([\d,]+)", page))
    expected = {cid: f"{pop:,}" for cid, pop in zip(plan.communities["community_id"],
                                                     plan.communities["population"])}
    assert shown == expected
    rows = _labels(fmap, "community labels")
    assert len(rows) == len(plan.communities)
    for (lat, lon, _), shape in zip(rows, plan.communities.to_crs(4326).geometry):
        assert shape.buffer(1e-6).contains(shapely.Point(lon, lat))
    assert '"pane": "coverage-streets"' in page and '"interactive": false' in page
    assert page.count("cov-north-arrow") == 1
    assert "L.control.scale(" in page
    controls = [c for c in fmap._children.values() if isinstance(c, folium.LayerControl)]
    assert controls[0].options["collapsed"] is True
    # Legends fold to their title.
    legend = next(p for p in _panels(fmap) if "Residents per community" in p)
    assert legend.startswith("<details open><summary>")
    assert not EXTERNAL_TAG.search(page)


def test_coverage_map_with_base_labels_communities(town):
    network, population, old, centers, _ = town
    result = assess_coverage(network, population, centers, communities=old, max_minutes=8.0)
    fmap = coverage_map(result, base=base_layer(network))
    rows = _labels(fmap, "community labels")
    assert sorted(r[2].split("</b>")[0].removeprefix("<b>") for r in rows) == [
        "NE", "NW", "SE", "SW"]
    assert "streets and water (base)" in _layers(fmap)


def test_named_main_streets_are_labelled_once_per_km(town):
    *_, plan = town
    G = _graph_with_main_street()
    for u, v, data in G.edges(data=True):
        if data.get("highway") == "primary":
            data["name"] = "Avenida Paulista"
        elif data.get("highway") == "secondary":
            data["name"] = ["Rua & Co", "Rua B"]         # an osmnx list, joined with " / "
    base = base_layer(WalkNetwork.from_graph(G))
    streets = base[base["street"]].set_index("kind")["name"]
    assert streets["primary"] == "Avenida Paulista"
    assert set(streets["secondary"]) == {"Rua & Co / Rua B", ""}   # the _link ramp is unnamed
    fmap = plan_map(plan, base=base)
    rows = _labels(fmap, "streets and water (base)")
    # The 900 m primary street: one label, at its middle; few secondary names: labelled too.
    assert sorted(r[2] for r in rows) == ["Avenida Paulista", "Rua &amp; Co / Rua B"]
    lat, lon, _ = next(r for r in rows if r[2] == "Avenida Paulista")
    spot = gpd.GeoSeries([shapely.Point(lon, lat)], crs=4326).to_crs(CRS)[0]
    assert spot.distance(shapely.Point(X0 + 450, Y0)) < 5
    page = map_html(fmap)
    assert page.count("Avenida Paulista") == 1 and "cov-base-label cov-street" in page
    # Still one drawn line per street class, whatever the names.
    assert page.count('"kind": "primary"') == 1


def test_demo_base_layer_is_small():
    base = demo_base()
    assert sorted(set(base["kind"])) == ["primary", "railway"]
    assert "Jianshe Road" in set(base["name"])       # a primary row per street name
    assert len(base.to_json(drop_id=True)) < 30_000
