"""Properties of every plan, on random small synthetic towns (hypothesis): residents are
conserved, each unit is in one community, every broken rule is reported, and the same seed
writes the same files in two processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from conftest import grid_graph
from covplan.config import PlanConfig
from covplan.errors import InfeasibleError
from covplan.plan.pipeline import plan_communities
from covplan.plan.replan import rule_issues
from geopandas.testing import assert_geodataframe_equal
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from shapely.geometry import box

X0, Y0, CRS = 500_000.0, 4_000_000.0, "EPSG:32633"


def town(n: int, pops: list[int], *, river: bool = False):
    """An n x n street grid 100 m apart and its (n-1)^2 block cells holding `pops`; with
    `river`, no street crosses between the two western columns and the rest (an island)."""
    graph = grid_graph(n, 100.0, crs=CRS, x0=X0, y0=Y0)
    if river:
        cut = [(u, v) for u, v in graph.edges() if {u % n, v % n} == {1, 2}]
        graph.remove_edges_from(cut)
    cells = [box(X0 + 100 * c, Y0 + 100 * r, X0 + 100 * (c + 1), Y0 + 100 * (r + 1))
             for r in range(n - 1) for c in range(n - 1)]
    frame = gpd.GeoDataFrame({"cell_id": [f"c{i}" for i in range(len(cells))],
                              "population": pops}, geometry=cells, crs=CRS)
    return graph, frame


@st.composite
def towns(draw):
    n = draw(st.integers(4, 6))
    pops = draw(st.lists(st.integers(0, 250), min_size=(n - 1) ** 2, max_size=(n - 1) ** 2))
    pops[0] = max(pops[0], 1)                      # somebody lives there
    # A target the town can meet once or a few times over, so most draws make a plan.
    config = PlanConfig(target_pop=max(20, sum(pops) // draw(st.integers(1, 4))),
                        tolerance=draw(st.sampled_from([0.2, 0.35, 0.5])),
                        max_minutes=draw(st.sampled_from([4.0, 6.0, 9.0])),
                        candidate_spacing_m=150.0,
                        max_unit_pop=draw(st.sampled_from([None, 120])),
                        exceptions=draw(st.sampled_from(["separate", "attach"])),
                        restarts=1, seed=draw(st.integers(0, 3)))
    return (*town(n, pops, river=draw(st.booleans())), config)


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(towns())
def test_every_plan_conserves_residents_and_reports_every_broken_rule(case):
    graph, cells, config = case
    try:
        plan = plan_communities(graph, cells, config=config)
    except InfeasibleError as exc:                 # a clear stop, naming the flag to change
        assert "--target" in str(exc) and "no community can reach" in str(exc)
        event("infeasible")
        return
    event(f"{len(plan.communities)} communities, {len(rule_issues(plan))} rule issues")
    units, table, report = plan.units, plan.communities, plan.report
    total = int(cells["population"].sum())
    # Residents in == residents out, whatever cells were split into.
    assert int(units["pop"].sum()) == total == report["population_total"]
    # Each unit is in one community (or in none, and then reported), and the communities'
    # figures add up from their units.
    assert units["unit_id"].is_unique
    assigned = units["community_id"].notna()
    assert set(units.loc[assigned, "community_id"]) == set(table["community_id"])
    by_community = units[assigned].groupby("community_id")["pop"].sum()
    assert by_community.to_dict() == dict(zip(table["community_id"], table["population"]))
    assert int(table["population"].sum()) == report["population_assigned"]
    issues = rule_issues(plan)
    if not assigned.all():
        lost = int(units.loc[~assigned, "pop"].sum())
        assert any(i.startswith(f"walking rule: {lost:,} residents") for i in issues), issues
    # Every community outside the band or in pieces is flagged and reported; the flag is true.
    for row in table.itertuples():
        in_band = config.min_pop <= row.population <= config.max_pop
        assert bool(row.within_tolerance) == in_band, row.community_id
        if not in_band or not row.contiguous:
            assert any(f"community {row.community_id} " in i for i in issues), (row, issues)
    # Every assigned resident walks to the center within the limit, or is counted as served
    # remotely (attach mode) in the community's figures.
    minutes = units.loc[assigned, "minutes"].to_numpy()
    beyond = units[assigned][~(minutes <= config.max_minutes + 1e-9)]
    remote = dict(zip(table["community_id"], table["remote_population"]))
    for cid, part in beyond.groupby("community_id"):
        assert remote[cid] >= int(part["pop"].sum()), (cid, part)


# ---- the same seed writes the same files ------------------------------------------------------
_WRITE = """
import sys
sys.path.insert(0, {tests!r})
from test_properties import town
from covplan.config import PlanConfig
from covplan.output.files import write_plan
from covplan.plan.pipeline import plan_communities

pops = [(37 * i) % 211 + 5 for i in range(36)]
graph, cells = town(7, pops, river=True)
config = PlanConfig(target_pop=800, tolerance=0.3, max_minutes=5.0, candidate_spacing_m=150.0,
                    max_unit_pop=120, restarts=2, seed=5)
write_plan(plan_communities(graph, cells, config=config), sys.argv[1])
"""

# folium names each map element with a random 32-digit hex id; the rest of the map is the plan.
_FOLIUM_ID = re.compile(rb"[0-9a-f]{32}")


def test_the_same_seed_writes_the_same_files_in_two_processes(tmp_path):
    script = _WRITE.format(tests=str(Path(__file__).parent))
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / name)], cwd=tmp_path,
                             stderr=subprocess.PIPE, env={**os.environ, "PYTHONSAFEPATH": "1"})
            for name in ("a", "b")]
    for run in runs:
        assert run.wait(timeout=120) == 0, run.stderr.read().decode()[-2000:]
    a, b = tmp_path / "a", tmp_path / "b"
    manifest = [json.loads((f / "manifest.json").read_text()) for f in (a, b)]
    assert manifest[0]["plan_id"] == manifest[1]["plan_id"]          # a hash of the content
    assert sorted(manifest[0]["files"]) == sorted(manifest[1]["files"])
    for name, entry in manifest[0]["files"].items():
        if name == "report.json":                     # the planning time differs, nothing else
            first, second = (json.loads((f / name).read_text()) for f in (a, b))
            assert first.pop("runtime_s") >= 0 and second.pop("runtime_s") >= 0
            assert first == second
        elif name == "map.html":
            assert (_FOLIUM_ID.sub(b"", (a / name).read_bytes())
                    == _FOLIUM_ID.sub(b"", (b / name).read_bytes()))
        elif name == "plan.gpkg":                     # GeoPackages hold their write time
            for layer in ("communities", "centers", "units", "isochrones"):
                assert_geodataframe_equal(gpd.read_file(a / name, layer=layer),
                                          gpd.read_file(b / name, layer=layer))
        else:
            assert entry == manifest[1]["files"][name], name
    units = pd.read_csv(a / "communities.csv")
    assert np.isclose(units["population"].sum(), sum((37 * i) % 211 + 5 for i in range(36)))
