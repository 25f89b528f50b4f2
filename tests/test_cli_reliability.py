"""The command never leaves a wrong or half-written folder: bad input is one line and exit 2
before anything is computed or written, Ctrl-C is exit 130 with the old plan intact, and two
runs into one folder end with one complete plan and one clear message."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import osmnx as ox
import pytest
from conftest import grid_graph
from covplan.cli import _PLAN_FLAGS, _build_parser, main
from covplan.config import FLAGS
from covplan.output.files import output_folder, read_plan
from shapely.geometry import Point

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:32633"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """A 5 x 5 street grid, 10 residents at each node and one center, as files."""
    folder = tmp_path_factory.mktemp("inputs")
    ox.save_graphml(grid_graph(), folder / "grid.graphml")
    pts = [Point(X0 + 100 * c, Y0 + 100 * r) for r in range(5) for c in range(5)]
    gpd.GeoDataFrame({"population": [10] * 25}, geometry=pts, crs=CRS).to_file(folder / "pop.gpkg")
    gpd.GeoDataFrame({"center_id": ["A"]}, geometry=[Point(X0 + 200, Y0 + 200)],
                     crs=CRS).to_file(folder / "centers.gpkg")
    return {"network": str(folder / "grid.graphml"), "population": str(folder / "pop.gpkg"),
            "centers": str(folder / "centers.gpkg")}


PLAN = ["-q", "plan", "--network", "{network}", "--population", "{population}", "--centers",
        "{centers}", "--target", "60", "--tolerance", "0.5", "--minutes", "3", "--out", "{out}"]


def _argv(template, inputs, **more) -> list[str]:
    return [part.format(**inputs, **more) for part in template]


@pytest.fixture(scope="module")
def old_plan(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("old") / "plan"
    assert main(_argv(PLAN, inputs, out=out)) == 0
    return out


@pytest.fixture
def out(old_plan, tmp_path) -> Path:
    """A copy of the old plan: what every failed run must leave as it was."""
    return Path(shutil.copytree(old_plan, tmp_path / "plan"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


_CASES = [
    ([*PLAN, "--seed", "abc"], "argument --seed: invalid int value: 'abc'"),
    ([*PLAN, "--seed", "-1"], "seed must be a whole number ≥ 0 (--seed / PlanConfig.seed"),
    ([*PLAN, "--restarts", "0"], "restarts must be a whole number, at least 1 (--restarts"),
    ([*PLAN, "--tries", "0"], "tries must be a whole number, at least 1 (--tries"),
    ([*PLAN, "--tolerance", "1.5"], "tolerance must be a share strictly between 0 and 1"),
    ([*PLAN, "--tolerance", "nan"], "(--tolerance / PlanConfig.tolerance"),
    ([*PLAN, "--minutes", "0"], ("max_minutes must be greater than 0 and at most 1440 minutes "
                                 "(--minutes / PlanConfig.max_minutes")),
    ([*PLAN, "--walk-speed", "99"], "(--walk-speed / PlanConfig.walk_speed_kmh"),
    ([*PLAN, "--target", "0"], "target_pop must be a positive number of residents (--target"),
    ([*PLAN, "--max-new-centers", "-1"],
     "max_new_centers must be a whole number of new sites ≥ 0, or None for no limit (--max-new-centers"),
    ([*PLAN, "--lock-centers", "A,Z"],
     "--lock-centers / lock_centers names 1 center id(s) not among the existing centers: Z"),
    ([*PLAN, "--target", "1e4"], "argument --target: invalid int value: '1e4'"),
    ([*PLAN, "--candidate-spacing", "-5"], "(--candidate-spacing / PlanConfig.candidate_spacing_m"),
    ([*PLAN, "--max-unit-pop", "-3"], "(--max-unit-pop / PlanConfig.max_unit_pop"),
    ([*PLAN, "--stability-weight", "-1"], "(--stability-weight / PlanConfig.stability_minutes"),
    ([*PLAN, "--exceptions", "merge"], "argument --exceptions: invalid choice: 'merge'"),
    ([*PLAN, "--bogus"], "unrecognized arguments: --bogus"),
    (["plan", "--out", "{out}"], "--network and --population, or --scenario"),
    ([*PLAN, "--network", "{tmp}/missing.graphml"], "missing.graphml' does not exist"),
    ([*PLAN, "--population", "{tmp}/missing.gpkg"], "missing.gpkg' does not exist"),
    ([*PLAN, "--population-column", "nope"], "nope"),
    (["plan", "--scenario", "{tmp}/missing.toml", "--out", "{out}"], "missing.toml' cannot be read"),
    ([*PLAN, "--scenario", "{tmp}/any.toml"], "cannot be combined with --scenario"),
    ([*PLAN, "--base-plan", "{tmp}/mine"], "is not a plan folder"),
    ([*PLAN, "--out", "{tmp}/file.txt"], "is a file, not a folder"),
    ([*PLAN, "--out", "{tmp}/file.txt/plan"], "file.txt' is a file; choose another folder"),
    ([*PLAN, "--out", "{tmp}/mine"], ("holds files covplan did not write (notes.txt); choose a "
                                      "new or empty folder, or pass --force")),
    ([*PLAN, "--out", "{unwritable}/plan"], "choose a folder you can write to (--out / out=)"),
    (["-q", "demo", "--seed", "-2", "--out", "{out}"], "seed must be a whole number ≥ 0"),
    (["-q", "demo", "--out", "{tmp}/mine"], "holds files covplan did not write"),
    (["-q", "coverage", "--network", "{network}", "--population", "{population}", "--centers",
      "{centers}", "--out", "{tmp}/file.txt"], "is a file, not a folder"),
    (["-q", "compare", "{tmp}/nowhere", "{out}", "--out", "{tmp}/cmp"], "does not exist"),
]


@pytest.fixture
def unwritable(tmp_path) -> str:
    """A folder no one may create anything in (as root, chmod does not stop us: /sys does)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return str(locked)
    if not Path("/sys").is_dir():
        pytest.skip("no unwritable folder for root on this system")
    return "/sys/covplan-test"


@pytest.mark.parametrize("template, needle", _CASES, ids=[" ".join(c[0][-2:]) for c in _CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(inputs, out, tmp_path, unwritable,
                                                          capfd, template, needle):
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "any.toml").write_text('name = "x"\nbase = "demo"\n')
    before, tree = _snapshot(out), _tree(tmp_path)
    assert main(_argv(template, inputs, out=out, tmp=tmp_path, unwritable=unwritable)) == 2
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0] and lines[0].startswith("covplan"), lines[0]
    assert _snapshot(out) == before and _tree(tmp_path) == tree      # nothing written anywhere


def test_out_cannot_be_the_current_folder(inputs, out, monkeypatch, capfd):
    monkeypatch.chdir(out)
    assert main(_argv(PLAN, inputs, out=".")) == 2
    assert "is the current folder or holds it" in capfd.readouterr().err
    read_plan(out)


def test_a_run_while_another_writes_the_folder_is_refused(inputs, out, capfd):
    before = _snapshot(out)
    with pytest.raises(KeyboardInterrupt), output_folder(out):   # another run holds the folder
        assert main(_argv(PLAN, inputs, out=out)) == 2
        raise KeyboardInterrupt                    # and is stopped: nothing of it is kept
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"another covplan run is writing {out} (pid {os.getpid()}, started " in err
    assert "wait for it or choose another --out" in err
    assert _snapshot(out) == before


def test_force_writes_beside_other_files_and_keeps_them(inputs, out):
    (out / "notes.txt").write_text("mine")
    assert main(_argv(PLAN, inputs, out=out) + ["--target", "120", "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert read_plan(out).config.target_pop == 120


def test_every_plan_flag_names_its_config_field():
    """config.FLAGS (named in PlanConfig's messages) and the CLI's flag -> field map agree."""
    plan = _build_parser()._subparsers._group_actions[0].choices["plan"]
    by_flag = {flag: action.dest for action in plan._actions for flag in action.option_strings}
    for field, flag in FLAGS.items():
        if flag is not None:
            assert _PLAN_FLAGS[by_flag[flag]] == field, flag
    assert set(_PLAN_FLAGS.values()) == {f for f, flag in FLAGS.items() if flag}


# ---- in another process: concurrency and Ctrl-C ---------------------------------------------
def _start(argv, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "covplan.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONSAFEPATH": "1", **env})


def _wait_for(check, run: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert run.poll() is None, f"the run ended before {what}: {run.stderr.read()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def _beside(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_two_runs_into_one_folder_end_with_one_plan_and_one_message(inputs, out):
    first = _start(_argv(PLAN, inputs, out=out) + ["--target", "120"])
    lock = out.parent / f".{out.name}.covplan-lock"
    _wait_for(lambda: lock.exists() and lock.read_text(), first, "lock")
    first.send_signal(signal.SIGSTOP)               # hold it mid-run while the second starts
    try:
        second = _start(_argv(PLAN, inputs, out=out) + ["--target", "90"])
        err = second.communicate(timeout=60)[1]
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"covplan plan: error: another covplan run is writing {out} (pid {first.pid}, started "), err
    first_err = first.communicate(timeout=120)[1]
    assert first.returncode == 0, first_err
    assert read_plan(out).config.target_pop == 120 and _beside(out) == []


def test_ctrl_c_is_one_line_exit_130_and_the_old_plan_stays(inputs, old_plan, tmp_path):
    """Ctrl-C while computing, inside the GeoPackage and once the new folder is in place (three
    runs at once, each on its own copy of the old plan). The run signals itself at a named step:
    a Ctrl-C sent from outside at a moment chosen by a timer can land while Python imports a
    module, where the interpreter may drop it (a callback of the import lock) or, after our
    one-line message, end the process by the signal instead of exit 130 (an ``exec`` inside
    dataclasses); neither is ours to change."""
    runs = {}
    computing = "stage plan (reach, partition, isochrones)@SIGINT"
    for kill_at in (computing, "plan.gpkg/units@SIGINT", "swapped@SIGINT"):
        out = Path(shutil.copytree(old_plan, tmp_path / kill_at.replace("/", "_") / "plan"))
        runs[kill_at] = out, _snapshot(out), _start(
            _argv(PLAN, inputs, out=out) + ["--target", "120"], COVPLAN_TEST_KILL_AT=kill_at)
    for kill_at, (out, before, run) in runs.items():
        err = run.communicate(timeout=120)[1]
        assert run.returncode == 130, (kill_at, err)
        if kill_at == "swapped@SIGINT":             # too late: the new plan is in place, whole
            assert err.strip().splitlines() == [f"covplan plan: interrupted; {out} was already written"]
            assert read_plan(out).config.target_pop == 120
            continue
        assert err.strip().splitlines() == [f"covplan plan: interrupted; {out} left unchanged"], err
        assert _snapshot(out) == before and _beside(out) == [], kill_at
