"""The synthetic metropolis: deterministic, exact residents, area in proportion, districts along
arterials, and a river and a railway crossed only where the city says."""

from __future__ import annotations

import functools
import warnings

import geopandas as gpd
import numpy as np
import pytest
import shapely
from covplan.cities.metropolis import DENSITY_PER_KM2, MIN_RESIDENTS, build_metropolis
from covplan.errors import CoverageWarning, InputError
from covplan.inputs.areas import label_units
from covplan.inputs.network import load_network
from covplan.inputs.population import load_population
from geopandas.testing import assert_geodataframe_equal

N = 120_000


@functools.cache
def _city(residents: int = N, seed: int = 0):
    return build_metropolis(residents, seed=seed)


def _segments(city) -> tuple[list[dict], np.ndarray]:
    """Each street once (u < v) with its data, and its line in the work CRS."""
    G = city.graph
    lonlat = np.array([(d["x"], d["y"]) for _, d in G.nodes(data=True)])
    xy = gpd.GeoSeries(gpd.points_from_xy(*lonlat.T), crs=4326).to_crs(city.work_crs)
    where = dict(zip(G.nodes, zip(xy.x, xy.y)))
    edges = [(u, v, d) for u, v, d in G.edges(data=True) if u < v]
    return [d for _, _, d in edges], shapely.linestrings([[where[u], where[v]] for u, v, _ in edges])


def test_same_seed_same_city_other_seed_same_residents() -> None:
    city, again = _city(), build_metropolis(N, seed=0)
    for name in ("population", "communities", "centers", "districts", "railway", "features"):
        assert_geodataframe_equal(getattr(again, name), getattr(city, name))
    assert list(again.graph.nodes(data=True)) == list(city.graph.nodes(data=True))
    assert list(again.graph.edges(keys=True, data=True)) == list(city.graph.edges(keys=True, data=True))
    other = _city(N, 1)
    assert int(other.population["population"].sum()) == N
    assert not other.population["population"].equals(city.population["population"])


def test_residents_exact_and_area_in_proportion() -> None:
    small, large = _city(), _city(4 * N)
    for city, n in ((small, N), (large, 4 * N)):
        pop = city.population["population"]
        assert pop.dtype.kind == "i" and (pop > 0).all() and int(pop.sum()) == n
        assert city.population["cell_id"].is_unique
        # The homes' area follows São Paulo's density (a little above it: water, rail, parks
        # and vacant lots of the footprint hold no one).
        area_km2 = city.population.to_crs(city.work_crs).area.sum() / 1e6
        assert 1.0 <= n / area_km2 / DENSITY_PER_KM2 <= 1.4
        # Existing communities hold everyone and the figures match their cells.
        assert int(city.communities["population"].sum()) == n
        assert len(city.centers) == len(city.communities) and city.centers["center_id"].is_unique
    ratio = (large.population.to_crs(large.work_crs).area.sum()
             / small.population.to_crs(small.work_crs).area.sum())
    assert 3.2 <= ratio <= 4.8      # fixed-size river, rail and parks weigh more in a small city
    assert len(small.districts) == len(large.districts) == 3    # one per 400,000, at least 3


def test_districts_follow_arterials_and_hold_their_communities() -> None:
    city = _city(4 * N)
    cells = city.population.to_crs(city.work_crs)
    districts = city.districts.to_crs(city.work_crs)
    # No populated cell is cut by a district limit: each lies inside one district.
    inside = shapely.contains(np.asarray(districts.geometry.values)[:, None],
                              np.asarray(cells.geometry.buffer(-1.0).values)[None, :])
    assert (inside.sum(axis=0) == 1).all()
    centroids = gpd.GeoDataFrame(geometry=cells.centroid, crs=city.work_crs)
    community = label_units(centroids, city.communities.to_crs(city.work_crs))
    district = label_units(centroids, districts)
    assert (community >= 0).all() and (district >= 0).all()
    # Every cell's community lies in the cell's district.
    assert (city.communities["district_id"].to_numpy()[community]
            == city.districts["district_id"].to_numpy()[district]).all()
    # A dense core and a sparser fringe.
    pop = cells["population"].to_numpy()
    middle = np.hypot(*np.column_stack([cells.centroid.x, cells.centroid.y]).T
                      - np.average(np.column_stack([cells.centroid.x, cells.centroid.y]), axis=0,
                                   weights=pop)[:, None])
    core, fringe = pop[middle < np.quantile(middle, 0.1)], pop[middle > np.quantile(middle, 0.9)]
    assert core.mean() > 4 * fringe.mean()


def test_river_and_railway_are_crossed_at_few_places() -> None:
    city = _city(4 * N)
    data, lines = _segments(city)
    features = city.features.to_crs(city.work_crs).set_index("kind").geometry
    river, rail = features["river"], features["railway"]
    bridge = np.array([d.get("bridge") == "yes" for d in data])
    tunnel = np.array([d.get("tunnel") == "yes" for d in data])
    over_river = shapely.intersects(lines, river)
    over_rail = shapely.intersects(lines, rail)
    assert over_river.any() and over_rail.any()
    assert not (over_river & ~bridge).any()            # every way across the water is a bridge
    assert not (over_rail & ~tunnel).any()             # every way across the tracks an underpass
    width_km = (river.bounds[2] - river.bounds[0]) / 1e3
    bridges = {d["osmid"] for d, b in zip(data, bridge) if b}
    assert 2 <= len(bridges) <= width_km / 3 + 1
    assert 2 <= tunnel.sum() <= rail.length / 2_000 + 1
    # Few crossings, yet one walkable network the loaders take whole.
    network = load_network(city.graph)
    assert network.crs == city.work_crs and network.component_sizes.size == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)     # no implausibly dense cell
        population = load_population(city.population, population_column="population",
                                     id_column="cell_id")
    assert population.total == 4 * N


@pytest.mark.parametrize(("residents", "error"), [(MIN_RESIDENTS - 1, InputError),
                                                  (1.5e6, TypeError), (True, TypeError)])
def test_bad_sizes_say_what_to_do(residents, error) -> None:
    with pytest.raises(error, match="residents"):
        build_metropolis(residents)


def test_scale_benchmark_runs_each_size_apart_and_stops_at_the_time_limit(tmp_path) -> None:
    import json

    from covplan.bench.scale import PIPELINE, parse_sizes, run_scale

    assert parse_sizes("0.3M, 300k,3e6,40000") == [3e5, 3e5, 3e6, 4e4]
    result = run_scale([40_000], json_path=tmp_path / "scale.json")
    (size,) = result.sizes
    assert size.status == "ok" and size.figures["communities"] >= 3
    assert set(size.seconds) >= {"city", *PIPELINE, "reach", "isochrones", "partition"}
    assert size.seconds["plan"] >= size.seconds["reach"] > 0 and size.peak_rss_mb > 50
    assert json.loads((tmp_path / "scale.json").read_text())["sizes"][0]["status"] == "ok"
    assert result.to_markdown().splitlines()[2].startswith("| 40,000 |")
    stopped = run_scale([40_000, 50_000], stages=False, time_limit_s=0.3)
    assert [s.status for s in stopped.sizes] == ["timed out", "skipped"]
    with pytest.raises(InputError, match="ascending"):
        run_scale([50_000, 40_000])


def test_demo_plans_a_metropolis_of_the_given_size(tmp_path):
    """`covplan demo --residents N`: the metropolis instead of the embedded demo, written whole
    (no scenario file: a scenario names the embedded demo only)."""
    import json

    from covplan.cli import main

    out = tmp_path / "metro"
    assert main(["-q", "demo", "--residents", "60000", "--restarts", "1", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["population_total"] == 60_000
    assert report["coverage_share"] == report["coverage_ceiling"]
    assert not (out / "scenario.toml").exists()
