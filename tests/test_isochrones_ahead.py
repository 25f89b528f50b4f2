"""Isochrones drawn ahead, beside the planning: the same areas as drawn at the end."""

from __future__ import annotations

import logging
import sys
import time

import geopandas as gpd
import numpy as np
import pytest
import shapely
from conftest import grid_town
from covplan.config import PlanConfig
from covplan.plan.pipeline import plan_communities
from covplan.reach.ahead import IsochronesAhead, drawing_ahead, isochrones_with
from covplan.reach.isochrones import compute_isochrones
from shapely.geometry import Point

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="it forks")

X0, Y0, CRS = 500_000.0, 4_000_000.0, "EPSG:32633"


def _candidates(n: int = 40) -> gpd.GeoDataFrame:
    """Sites on and between the streets of a 14 x 14 grid town (some off the nodes)."""
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1_300, size=(n, 2))
    return gpd.GeoDataFrame({"candidate_id": [f"s{i}" for i in range(n)]}, crs=CRS,
                            geometry=[Point(X0 + x, Y0 + y) for x, y in xy])


def _centers(candidates: gpd.GeoDataFrame, rows) -> gpd.GeoDataFrame:
    picked = candidates.iloc[list(rows)]
    return gpd.GeoDataFrame({"center_id": [f"C{r}" for r in rows]}, crs=CRS,
                            geometry=picked.geometry.to_numpy())


def _same(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> bool:
    return (list(a.columns) == list(b.columns) and list(a["center_id"]) == list(b["center_id"])
            and np.array_equal(a["minutes"], b["minutes"])
            and np.array_equal(a["area_m2"], b["area_m2"])
            and list(shapely.to_wkb(a.geometry.values)) == list(shapely.to_wkb(b.geometry.values)))


def test_areas_drawn_ahead_and_the_rest_at_the_end_equal_all_drawn_at_once():
    net, _ = grid_town()
    candidates = _candidates()
    # At the callers' priority, so that the areas are drawn while the test waits (the
    # pipeline's lowest priority would leave them to the end on a busy machine).
    ahead = IsochronesAhead(net, candidates, 6.0, nice=0)
    ahead.draw(np.array([3, 5, 7, 5]))         # asked twice: drawn once
    ahead.draw(np.array([30, 3, 21, 8, 12, 1, 0, 2, 4, 6, 9, 10, 11, 13, 14, 15, 16, 17]))
    time.sleep(2.0)                            # a tenth of a second's work
    drawn = ahead.drawn()
    assert not ahead._process.is_alive()
    assert set(drawn) == {f"s{r}" for r in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                                              15, 16, 17, 21, 30)}
    rows = [5, 33, 3, 30, 2, 39, 7]             # some drawn ahead, some not, out of order
    centers = _centers(candidates, rows)
    ids = candidates["candidate_id"].to_numpy()[rows]
    whole = compute_isochrones(net, centers, minutes=[6.0])
    assert _same(isochrones_with(drawn, net, centers, ids, minutes=6.0), whole)
    assert _same(isochrones_with({}, net, centers, ids, minutes=6.0), whole)
    known = [5, 3, 30, 2, 7]
    assert _same(isochrones_with(drawn, net, _centers(candidates, known),
                                 candidates["candidate_id"].to_numpy()[known], minutes=6.0),
                 compute_isochrones(net, _centers(candidates, known), minutes=[6.0]))


def test_a_dead_drawing_process_leaves_every_area_to_the_end(caplog):
    net, _ = grid_town()
    candidates = _candidates()
    ahead = IsochronesAhead(net, candidates, 6.0)
    ahead.draw(np.arange(10))
    ahead._process.kill()
    ahead._process.join()
    with caplog.at_level(logging.DEBUG, logger="covplan.reach.ahead"):
        assert ahead.drawn() == {}
    assert "ended before it answered" in caplog.text


def test_nothing_is_drawn_ahead_with_one_job():
    net, _ = grid_town()
    with drawing_ahead(net, _candidates(), 6.0, workers=1) as ahead:
        assert ahead is None
    with drawing_ahead(net, _candidates(), 6.0, workers=2) as ahead:
        process = ahead._process
        assert process.is_alive()
    assert not process.is_alive()          # ended with the block, unasked


def test_a_plan_on_two_jobs_draws_its_isochrones_ahead_and_they_match_one_jobs():
    net, population = grid_town()
    config = dict(target_pop=2_000, tolerance=0.3, max_minutes=8.0, candidate_spacing_m=150.0,
                  max_unit_pop=None, restarts=1)
    one = plan_communities(net, population, config=PlanConfig(jobs=1, **config))
    two = plan_communities(net, population, config=PlanConfig(jobs=2, **config))
    assert list(one.communities["community_id"]) == list(two.communities["community_id"])
    assert _same(one.isochrones[["center_id", "minutes", "area_m2", "geometry"]],
                 two.isochrones[["center_id", "minutes", "area_m2", "geometry"]])
    assert list(one.isochrones.columns) == list(two.isochrones.columns)


def test_a_city_above_the_size_limit_draws_every_isochrone_at_the_end(monkeypatch):
    import covplan.plan.pipeline as pipeline
    import covplan.reach.ahead as ahead

    def refuse(*args, **kwargs):
        raise AssertionError("no drawing process above the size limit")

    net, population = grid_town(8)
    monkeypatch.setattr(pipeline, "AHEAD_MAX_RESIDENTS", 0)
    monkeypatch.setattr(ahead.IsochronesAhead, "__init__", refuse)
    plan = plan_communities(net, population, config=PlanConfig(
        jobs=2, target_pop=1_500, tolerance=0.3, max_minutes=8.0, candidate_spacing_m=150.0,
        max_unit_pop=None, restarts=1))
    assert len(plan.isochrones) == len(plan.centers)


def test_ctrl_c_for_the_process_group_leaves_the_drawing_process_to_its_caller():
    """A terminal's Ctrl-C reaches every process of the group: the drawing process ignores it
    (no traceback of its own; the CLI says one line) and still answers its caller."""
    import os
    import signal

    net, _ = grid_town()
    ahead = IsochronesAhead(net, _candidates(), 6.0, nice=0)
    ahead.draw(np.arange(3))
    time.sleep(1.0)                  # the process has set up its handlers
    os.kill(ahead._process.pid, signal.SIGINT)
    time.sleep(0.5)
    assert ahead._process.is_alive()
    assert set(ahead.drawn()) <= {"s0", "s1", "s2"}
