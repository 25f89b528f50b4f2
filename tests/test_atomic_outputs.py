"""Plan folders are written whole or not at all: one plan id in every file, a manifest that
read_plan checks, a lock against a second writer, and kill -9 at any step leaves the old or the
new complete plan."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pyogrio
import pytest
from conftest import merge_split_town_plan
from covplan.errors import DataSourceError, InputError, OutputBusyError
from covplan.output.files import output_folder, read_plan, write_plan
from covplan.plan.pipeline import plan_communities

N = 8           # 8 x 8 streets: a plan in well under a second


@pytest.fixture(scope="module")
def plans():
    """A merge/split plan (it has changes.csv) and a redraw of the same town (it has none)."""
    plan, net, population = merge_split_town_plan(N)
    redraw = plan_communities(net, population, config=replace(plan.config, target_pop=1_000))
    return plan, redraw


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _beside(folder: Path) -> list[str]:
    """What covplan left beside `folder` (lock, staging, swapped-out folders)."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def _layer_ids(gpkg: Path) -> set:
    return {(pyogrio.read_info(gpkg, layer=name)["layer_metadata"] or {}).get("plan_id")
            for name, _ in pyogrio.list_layers(gpkg) if name != "layer_styles"}


def test_a_new_plan_replaces_the_old_folder_whole(plans, tmp_path):
    merge_split, redraw = plans
    out = tmp_path / "plan"
    write_plan(merge_split, out)
    assert (out / "changes.csv").is_file()
    write_plan(redraw, out)
    assert not (out / "changes.csv").exists()            # the old plan's file did not survive
    assert read_plan(out).changes is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(p.name for p in out.iterdir() if p.name != "manifest.json")
    pid = manifest["plan_id"]
    assert json.loads((out / "report.json").read_text())["plan_id"] == pid
    assert _layer_ids(out / "plan.gpkg") == {pid}
    assert "plan_id" not in read_plan(out).report                 # not part of the plan itself
    assert _beside(out) == []                                     # no lock or staging left


def test_the_plan_id_is_a_hash_of_the_content(plans, tmp_path):
    merge_split, redraw = plans
    ids = [json.loads((write_plan(p, tmp_path / name) / "manifest.json").read_text())["plan_id"]
           for name, p in (("a", merge_split), ("b", merge_split), ("c", redraw))]
    assert ids[0] == ids[1] != ids[2]


def test_files_of_different_plans_are_refused(plans, tmp_path):
    merge_split, redraw = plans
    a, b = write_plan(merge_split, tmp_path / "a"), write_plan(redraw, tmp_path / "b")
    shutil.copy(a / "changes.csv", b / "changes.csv")             # a stray file of an older plan
    with pytest.raises(DataSourceError, match=r"files of different plans in .*b .*changes.csv is "
                                              r"not part of this plan; write the plan again"):
        read_plan(b)
    (b / "changes.csv").unlink()
    shutil.copy(a / "report.json", b / "report.json")
    with pytest.raises(DataSourceError, match="report.json is not the one written with this plan"):
        read_plan(b)
    write_plan(redraw, b)
    shutil.copy(a / "plan.gpkg", b / "plan.gpkg")
    with pytest.raises(DataSourceError, match="plan.gpkg layer communities is of plan"):
        read_plan(b)
    write_plan(redraw, b)
    (b / "map.html").unlink()
    with pytest.raises(DataSourceError, match="map.html is missing"):
        read_plan(b)


def test_a_geopackage_rewritten_by_a_gis_still_reads(plans, tmp_path):
    """QGIS rewrites a GeoPackage it opens; its layers keep the plan id, so the plan reads."""
    out = write_plan(plans[1], tmp_path / "plan")
    before = (out / "plan.gpkg").read_bytes()
    with closing(sqlite3.connect(out / "plan.gpkg")) as db:
        db.execute("UPDATE gpkg_contents SET last_change = '2030-01-01T00:00:00.000Z'")
        db.commit()
    assert (out / "plan.gpkg").read_bytes() != before
    assert len(read_plan(out).communities) == len(plans[1].communities)


def test_a_folder_without_manifest_reads_with_a_warning(plans, tmp_path, caplog):
    out = write_plan(plans[1], tmp_path / "plan")
    (out / "manifest.json").unlink()
    with caplog.at_level(logging.WARNING, logger="covplan.output.files"):
        read_plan(out)
    assert "has no manifest.json" in caplog.text


def test_other_files_are_refused_unless_force_which_keeps_them(plans, tmp_path):
    out = write_plan(plans[0], tmp_path / "plan")
    (out / "notes.txt").write_text("mine")
    (out / "photos").mkdir()
    (out / "photos" / "a.jpg").write_bytes(b"jpg")
    before = _snapshot(out)
    with pytest.raises(InputError, match=r"holds files covplan did not write \(notes.txt, "
                                         r"photos/\); .*--force \(force=True\)"):
        write_plan(plans[1], out)
    assert _snapshot(out) == before and _beside(out) == []
    write_plan(plans[1], out, force=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "photos" / "a.jpg").is_file()
    assert not (out / "changes.csv").exists()
    read_plan(out)


def test_bad_places_are_refused_before_anything_is_written(plans, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        write_plan(plans[1], blocker)
    with pytest.raises(InputError, match="file.txt' is a file"):
        write_plan(plans[1], blocker / "sub" / "plan")
    with pytest.raises(InputError, match="current folder or holds it"):
        write_plan(plans[1], Path.cwd())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_an_error_while_writing_leaves_the_old_folder_and_no_new_parents(plans, tmp_path):
    out = write_plan(plans[0], tmp_path / "plan")
    before = _snapshot(out)
    with pytest.raises(RuntimeError), output_folder(out) as stage:
        (stage.path / "report.json").write_text("{}")
        raise RuntimeError("stop")
    assert _snapshot(out) == before and _beside(out) == []
    deep = tmp_path / "new" / "deeper" / "plan"
    with pytest.raises(RuntimeError), output_folder(deep):
        raise RuntimeError("stop")
    assert not (tmp_path / "new").exists()                   # parents made for it are removed


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(plans, tmp_path, caplog):
    out = tmp_path / "plan"
    busy = rf"another covplan run is writing {out} \(pid {os.getpid()}, started .*\); wait for it"
    with output_folder(out), pytest.raises(OutputBusyError, match=busy):
        write_plan(plans[1], out)
    lock = tmp_path / ".plan.covplan-lock"
    assert not lock.exists()
    lock.write_text("pid 999999, started 2026-01-01 00:00:00")      # its run was killed
    with caplog.at_level(logging.WARNING, logger="covplan.output.files"):
        write_plan(plans[1], out)
    assert "Took over the lock" in caplog.text and "pid 999999" in caplog.text
    assert not lock.exists()
    read_plan(out)


def test_a_folder_swapped_aside_is_read_and_then_put_back(plans, tmp_path, caplog):
    """A run killed between its two renames leaves no folder but the complete old one aside."""
    out = write_plan(plans[0], tmp_path / "plan")
    aside = tmp_path / ".plan.covplan-old-0123456789ab"
    out.rename(aside)
    (tmp_path / ".plan.covplan-new-ba9876543210").mkdir()          # the killed run's new folder
    with caplog.at_level(logging.WARNING, logger="covplan.output.files"):
        assert read_plan(out).changes is not None
    assert "reading the previous plan kept at" in caplog.text
    write_plan(plans[1], out)
    assert read_plan(out).changes is None and _beside(out) == []


# The new plan is made here and handed over pickled: the child only writes (2 s, not 7).
_WRITER = """
import pickle, sys
from covplan.output.files import write_plan

with open(sys.argv[1], "rb") as stream:
    write_plan(pickle.load(stream), sys.argv[2])
"""

# Where the writer is killed: inside the GeoPackage, after the last file, after the manifest,
# between the two renames of the swap and after it.
_STEPS = ["plan.gpkg/units", "map.html", "manifest.json", "swap", "swapped"]


def test_kill_9_at_any_step_leaves_the_old_or_the_new_complete_plan(plans, tmp_path):
    old = write_plan(plans[0], tmp_path / "old")
    pickled = tmp_path / "new.pickle"
    pickled.write_bytes(pickle.dumps(plans[1]))
    runs = {}
    for step in _STEPS:                      # all at once: 2 cores, about 6 s in all
        folder = tmp_path / step.replace("/", "_")
        shutil.copytree(old, folder)
        runs[step] = (folder, subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(pickled), str(folder)], cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONSAFEPATH": "1", "COVPLAN_TEST_KILL_AT": step}))
    for step, (folder, run) in runs.items():
        _, err = run.communicate(timeout=120)
        assert run.returncode == -signal.SIGKILL, (step, err.decode()[-2000:])
        plan = read_plan(folder)                   # complete and of one plan (manifest checked)
        new = step == "swapped"
        assert plan.config.target_pop == (1_000 if new else plans[0].config.target_pop), step
        assert (plan.changes is None) == new, step
        if step in ("map.html", "swap"):           # the next run cleans up after the killed one
            write_plan(plans[1], folder)
            assert _beside(folder) == [] and read_plan(folder).changes is None, step
