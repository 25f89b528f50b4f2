"""The Chengdu suite city: a seeded synthetic H3 grid over the real OSM extract's box."""

from __future__ import annotations

import h3
import numpy as np
import pytest
from covplan.bench import suite as bench_suite
from covplan.cities.chengdu import CHENGDU_BOUNDS, TIANFU_SQUARE, chengdu_population
from covplan.config import PlanConfig
from covplan.errors import InputError


def test_population_is_seeded_whole_and_inside_the_box():
    grid = chengdu_population(seed=0)
    assert grid["population"].sum() == 1_000_000
    assert grid["h3"].is_unique and grid.crs.to_epsg() == 4326
    assert {h3.get_resolution(c) for c in grid["h3"]} == {9}
    west, south, east, north = CHENGDU_BOUNDS
    lat, lon = np.array([h3.cell_to_latlng(c) for c in grid["h3"]]).T
    assert ((west <= lon) & (lon <= east) & (south <= lat) & (lat <= north)).all()
    assert chengdu_population(seed=0).equals(grid)
    assert not chengdu_population(seed=1)["population"].equals(grid["population"])
    assert chengdu_population(seed=0, total=12_345)["population"].sum() == 12_345


def test_density_falls_off_from_tianfu_square():
    grid = chengdu_population(seed=0, noise=0.0)
    lon0, lat0 = TIANFU_SQUARE
    lat, lon = np.array([h3.cell_to_latlng(c) for c in grid["h3"]]).T
    distance = np.hypot(lon - lon0, lat - lat0)
    near = grid["population"][distance < np.quantile(distance, 0.1)]
    far = grid["population"][distance > np.quantile(distance, 0.9)]
    assert near.min() > far.max()


@pytest.mark.parametrize("bad", [{"total": -1}, {"decay_km": 0.0}, {"noise": -0.1}])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(InputError, match="chengdu_population"):
        chengdu_population(**bad)


@pytest.mark.slow
def test_suite_city_loads_from_the_shared_extract(shared_data):
    city = bench_suite._load_city("chengdu", shared_data, PlanConfig())
    assert city.population.total == 1_000_000
    assert city.existing == bench_suite.CHENGDU_EXISTING == 217
    assert city.network.n_nodes > 9_000 and city.network.crs.to_epsg() == 32648


def test_missing_extract_is_skipped(tmp_path):
    result = bench_suite.run_suite(["chengdu"], peers=False, data_dir=tmp_path)
    assert result.rows.empty and "data not found" in result.skipped["chengdu"]
