"""`covplan bench reach`: paired rounds, median ratios, peak RSS of a fresh process, a networkx
sample — on a small grid town, every method checked against ours on the same origins."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import numpy as np
import pytest
from conftest import grid_town
from covplan.bench.engines import OURS, format_table, run_reach_benchmark, spread_sample
from covplan.errors import InputError

# 645 m: no grid node lies exactly at the limit (nodes are 100 m apart), so a float32 peer
# (pandana) cannot round a boundary node in or out.
MINUTES = 8.6


@pytest.fixture(scope="module")
def town():
    return grid_town(14)


@pytest.fixture(scope="module")
def report(town):
    net, population = town
    return run_reach_benchmark(net, population, max_minutes=MINUTES, rounds=2,
                               networkx_origins=40)


def test_every_method_reaches_the_pairs_ours_reaches(report):
    methods = report["methods"]
    expected = {OURS, "scipy dijkstra(limit=), dense",
                "networkx single_source_dijkstra (cutoff), per origin"}
    if importlib.util.find_spec("pandana") is not None:
        expected.add("pandana (build + precompute + query)")
    assert set(methods) == expected
    ours = methods[OURS]
    assert ours["pairs"] == ours["pairs_ours"] > report["origins"]
    for name, res in methods.items():
        assert res["pairs"] == res["pairs_ours"], name
        if not res["sample"]:
            assert res["pairs"] == ours["pairs"], name


def test_ratios_are_medians_of_the_paired_rounds(report):
    methods, n_all = report["methods"], report["origins"]
    ours = methods[OURS]
    for name, res in methods.items():
        times = res["round_seconds"]
        # ours ran once per peer per round
        assert res["runs"] == len(times) == (2 * (len(methods) - 1) if name == OURS else 2)
        assert res["seconds"] == statistics.median(times)
        assert (res["min_seconds"], res["max_seconds"]) == (min(times), max(times))
        assert res["us_per_origin"] == pytest.approx(1e6 * res["seconds"] / res["origins"])
        if name == OURS:
            continue
        # each peer run is paired with the call of ours just before it
        assert len(res["ours_seconds"]) == 2
        assert set(res["ours_seconds"]) <= set(ours["round_seconds"])
        per_round = [(t / res["origins"]) / (o / n_all)
                     for t, o in zip(times, res["ours_seconds"])]
        assert res["ratio_rounds"] == pytest.approx(per_round)
        assert res["times_slower_than_coverage"] == pytest.approx(statistics.median(per_round))


def test_peak_rss_is_measured_in_a_fresh_process(report):
    for name, res in report["methods"].items():
        assert res["peak_rss_mb"] > 0, name
        assert 0 <= res["rss_rise_mb"] <= res["peak_rss_mb"]
        assert res["rss_baseline_mb"] > 0
        assert res["rss_pairs"] == res["pairs"], name  # the child did the same work
    status = Path("/proc/self/status")
    if status.exists():
        # The kernel's high-water mark of the child's own address space, not ru_maxrss, which
        # Linux carries over from this (larger, geopandas-loaded) process across fork and exec.
        ours = report["methods"][OURS]
        assert ours["rss_source"] == "VmHWM"
        hwm_kib = next(int(line.split()[1]) for line in status.read_text().splitlines()
                       if line.startswith("VmHWM:"))
        assert ours["peak_rss_mb"] < hwm_kib * 1024 / 1e6


def test_networkx_runs_on_a_spread_sample(report):
    nx = report["methods"]["networkx single_source_dijkstra (cutoff), per origin"]
    assert nx["origins"] == 40 and nx["sample"]
    assert report["origins"] > 40
    table = format_table(report)
    assert "sample of 40" in table
    assert "| method | origins | median s (min–max) | µs / origin | median ratio × ours | peak RSS MB | pairs |" in table
    assert "peak of a fresh process" in table


def test_spread_sample_spans_the_sorted_origins():
    origins = np.arange(10) * 3
    assert spread_sample(origins, 4).tolist() == [0, 9, 18, 27]
    assert len(np.unique(spread_sample(np.arange(1000), 999))) == 999
    assert spread_sample(origins, None) is origins
    assert spread_sample(origins, 50) is origins


def test_a_peer_over_the_call_budget_runs_once(town):
    net, population = town
    report = run_reach_benchmark(net, population, max_minutes=MINUTES, rounds=3, rss=False,
                                 peers=("scipy",), call_budget_s=1e-9)
    ours, scipy = report["methods"][OURS], report["methods"]["scipy dijkstra(limit=), dense"]
    assert scipy["over_budget"] and scipy["runs"] == 1
    assert scipy["round_seconds"] == [scipy["warmup_seconds"]]
    # ours is never cut short; with no round to pair in, the ratio is to ours' median
    assert ours["runs"] == 3 and not ours["over_budget"]
    assert scipy["times_slower_than_coverage"] == pytest.approx(
        scipy["seconds"] / statistics.median(ours["round_seconds"]))
    assert "1 run, over the 1e-09 s budget" in format_table(report)
    assert scipy["pairs"] == ours["pairs"]


@pytest.mark.parametrize(("options", "flag"), [({"rounds": 0}, "--rounds"),
                                               ({"networkx_origins": 0}, "--networkx-origins"),
                                               ({"call_budget_s": 0.0}, "call_budget_s=")])
def test_bad_options_are_refused_naming_the_flag(town, options, flag):
    net, population = town
    with pytest.raises(InputError, match=flag):
        run_reach_benchmark(net, population, **options)
