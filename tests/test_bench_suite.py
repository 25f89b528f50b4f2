"""The planner suite's plumbing on a small town: rows, ceilings, peers' blocks, the table."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import grid_town
from covplan.bench import peers as bench_peers
from covplan.bench import planner as bench_plan
from covplan.bench import suite as bench_suite
from covplan.cli import main
from covplan.config import PlanConfig
from covplan.errors import InputError
from covplan.plan.pipeline import plan_communities
from covplan.reach.matrix import ReachMatrix

X0, Y0, CRS, N = 500_000.0, 4_000_000.0, "EPSG:32633", 14
CONFIG = PlanConfig(target_pop=3_000, tolerance=0.25, max_minutes=8.0, candidate_spacing_m=150.0,
                    max_unit_pop=None, restarts=2)


@pytest.fixture(scope="module")
def town():
    net, population = grid_town(N)
    return net, population, bench_plan.build_instance(net, population, config=CONFIG)


def test_evaluator_counts_residents_in_balanced_regions():
    # Regions {0, 1, 2} and {3, 4} hold 3,000 each (in the band), {5} 400 (out of it).
    minutes = sp.csr_matrix(([2.0, 4.0, 6.0, 3.0, 1.0, 9.0],
                             ([0, 1, 2, 3, 4, 4], [0, 0, 1, 1, 1, 2])), shape=(6, 3))
    minutes.sort_indices()
    pop = np.array([1_000, 1_500, 500, 2_000, 1_000, 400])
    units = gpd.GeoDataFrame({"unit_id": np.arange(6), "pop": pop},
                             geometry=gpd.points_from_xy(np.arange(6), np.zeros(6)), crs=CRS)
    candidates = gpd.GeoDataFrame({"candidate_id": np.arange(3), "existing": False,
                                   "center_id": ""},
                                  geometry=gpd.points_from_xy(np.arange(3), np.ones(3)), crs=CRS)
    reach = ReachMatrix(units=units, candidates=candidates, minutes=minutes, max_minutes=15.0,
                        walk_speed_kmh=4.5, direction="to_center", input_crs=CRS, work_crs=CRS)
    adjacency = sp.diags([np.ones(5), np.ones(5)], [1, -1], shape=(6, 6), format="csr")
    score = bench_plan.evaluate_partition(reach, np.array([7, 7, 7, 3, 3, 9]), adjacency=adjacency,
                                          config=PlanConfig(target_pop=3_000, tolerance=0.2))
    assert score.within_tolerance_pop_share == pytest.approx(6_000 / 6_400)


def test_city_rows_sit_below_their_ceilings(town):
    net, population, _ = town
    rows = bench_suite._run_city("town", bench_suite._City(net, population, existing=5),
                                 config=CONFIG, peers=False, progress=False)
    frame = pd.DataFrame(rows)
    assert list(frame["mode"]) == ["redraw", "merge-split"]
    assert (frame["residents"] == population.total).all()
    assert (frame["coverage"] <= frame["coverage_ceiling"] + 1e-9).all()
    assert (frame["within_tolerance_pop_share"]
            <= frame["within_tolerance_pop_share_ceiling"] + 1e-9).all()
    assert np.isnan(frame.loc[0, "stability"]) and 0 < frame.loc[1, "stability"] <= 1
    assert (frame["time_s"] > 0).all() and (frame["within_band"] <= frame["communities"]).all()
    assert (frame["tiny_locked"] <= frame["tiny"]).all()
    result = bench_suite.SuiteResult(rows=frame, skipped={"atlantis": "data not found: x"})
    table = result.to_markdown()
    assert "| town | redraw |" in table and "| town | merge-split |" in table
    assert "Skipped atlantis: data not found: x" in table
    json.dumps(result.to_dict(), allow_nan=False)          # NaN became null


def test_peers_rows_a_failing_peer_is_a_row(town, monkeypatch):
    net, population, instance = town
    plan = plan_communities(net, population, config=CONFIG)

    def broken(*args, **kwargs):
        raise RuntimeError("no regions")

    monkeypatch.setattr(bench_peers, "maxp", broken)
    rows = bench_suite._peer_rows("town", instance, plan)
    by_mode = {r["mode"]: r for r in rows}
    k = round(instance.reach.pop.sum() / CONFIG.target_pop)
    assert by_mode["weighted k-means"]["communities"] == k
    assert by_mode["weighted k-means"]["coverage_ceiling"] == plan.report["coverage_ceiling"]
    assert by_mode["spopt Max-p"]["within_tolerance_pop_share_ceiling"] == \
        plan.report["within_tolerance_pop_share_ceiling"]
    assert by_mode["weighted k-means"]["smallest_regular"] > 0
    assert by_mode["spopt Max-p"]["note"] == "failed: no regions"
    assert by_mode["spopt Max-p"]["communities"] == 0


def test_maxp_gets_blocks_when_cells_are_many(town, monkeypatch):
    _, population, instance = town
    monkeypatch.setattr(bench_suite, "MAXP_MAX_CELLS", 10)
    inputs, note = bench_suite._inputs_for_peers(instance)
    assert "blocks of 400 m" in note
    blocks = inputs.cells
    n_blocks = len(blocks.pop)
    assert n_blocks <= 16 and blocks.pop.sum() == population.total
    assert np.array_equal(np.bincount(inputs.unit_cell, weights=inputs.units.pop,
                                      minlength=n_blocks), blocks.pop)
    edges = blocks.edges
    assert len(edges) and (edges[:, 0] < edges[:, 1]).all() and edges.max() < n_blocks
    # Max-p runs on the blocks; its labels come back per unit.
    run = bench_plan.run_peer(inputs, method="maxp", level="cells", floor=2_000,
                              construction=2, annealing=1)
    assert run.n_inputs == n_blocks and run.labels.shape == (len(instance.reach.units),)
    assert bench_plan.score(instance, run.labels).population_min >= 2_000


def test_unknown_and_missing_cities(tmp_path):
    with pytest.raises(InputError, match="unknown suite cities"):
        bench_suite.run_suite(["atlantis"], peers=False)
    result = bench_suite.run_suite(["sao_paulo", "helsinki"], peers=False, data_dir=tmp_path)
    assert result.rows.empty and set(result.skipped) == {"sao_paulo", "helsinki"}
    assert "data not found" in result.skipped["helsinki"]


def test_cli_needs_inputs_or_suite(capsys):
    assert main(["bench", "plan", "--no-peers"]) == 2
    assert "--suite" in capsys.readouterr().err
    assert main(["bench", "plan", "--suite", "--cities", "atlantis", "--no-peers"]) == 2
    assert "unknown suite cities" in capsys.readouterr().err
    assert main(["bench", "plan", "--suite", "--network", "x.pbf", "--no-peers"]) == 2
