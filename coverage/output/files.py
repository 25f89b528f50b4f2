"""Writing and reading results: GeoPackage layers, JSON summaries and whole plan folders."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from covplan import __version__
from covplan.errors import DataSourceError, InputError, OutputBusyError
from covplan.metrics import parse_previous_ids
from shapely.geometry import GeometryCollection, MultiPolygon, Polygon

if TYPE_CHECKING:
    from covplan.plan.pipeline import Plan

try:
    import fcntl
except ImportError:                     # Windows: the folder lock uses msvcrt instead
    fcntl = None
    import msvcrt

logger = logging.getLogger(__name__)


def prepare_folder(path: str | os.PathLike[str]) -> Path:
    """Create the output folder (and parents); raise DataSourceError if that is impossible."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create output folder '{out}': {exc.strerror}; choose another --out."
        raise DataSourceError(msg) from exc
    return out


def _polygon_parts(geom) -> list[Polygon]:
    """The non-empty polygons in `geom` (lines and points dropped, collections opened)."""
    if isinstance(geom, Polygon):
        return [] if geom.is_empty else [geom]
    if isinstance(geom, (MultiPolygon, GeometryCollection)):
        return [p for part in geom.geoms for p in _polygon_parts(part)]
    return []


def _valid_multipolygon(geom):
    """`geom` as a valid MultiPolygon (None stays None): repaired with `shapely.make_valid`,
    keeping only its polygonal parts (an empty MultiPolygon when none is left)."""
    if geom is None:
        return None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    out = MultiPolygon(_polygon_parts(geom))
    if not out.is_valid:                        # parts that touch or overlap: merge them
        out = MultiPolygon(_polygon_parts(shapely.make_valid(shapely.union_all(out.geoms))))
    return out


def as_multipolygons(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """
    A polygon layer with every geometry a valid MultiPolygon, in the CRS it is written in.

    A layer is polygonal when its non-empty geometries are (Multi)Polygons or collections
    holding a polygon; other layers (points, lines) come back unchanged. Invalid shapes (a
    bow-tie, a ring that crosses itself after reprojection) are repaired with
    `shapely.make_valid` and only their polygonal parts are kept, so one layer has one
    geometry type in every plan, whether a shape has one part or several.
    """
    geoms = frame.geometry
    present = geoms[geoms.notna() & ~geoms.is_empty]
    types = set(present.geom_type)
    if not present.size or not types <= {"Polygon", "MultiPolygon", "GeometryCollection"}:
        return frame
    if "GeometryCollection" in types and not any(_polygon_parts(g) for g in present):
        return frame
    out = frame.copy()
    out[geoms.name] = gpd.GeoSeries([_valid_multipolygon(g) for g in geoms], index=frame.index,
                                    crs=frame.crs)
    return out


def write_layers(path: str | os.PathLike[str], layers: Mapping[str, gpd.GeoDataFrame], *,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write each frame as a layer of one GeoPackage, replacing the file; polygon layers are
    written as valid MultiPolygons (`as_multipolygons`). `metadata` (e.g. the plan id) is stored
    with every layer (GeoPackage metadata, `pyogrio.read_info(...)["layer_metadata"]`)."""
    target = Path(path)
    if target.exists():
        target.unlink()
    for name, frame in layers.items():
        clean = as_multipolygons(frame).copy()
        for col in clean.columns:
            if col != clean.geometry.name and clean[col].dtype == object:
                clean[col] = clean[col].astype("string")
        clean.to_file(target, layer=name, driver="GPKG", engine="pyogrio",
                      metadata=dict(metadata) if metadata else None)
        _fault_point(f"{target.name}/{name}")
    logger.info("Wrote %s (layers: %s)", target, ", ".join(layers))
    return target


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_json(path: str | os.PathLike[str], data: Mapping) -> Path:
    """Write `data` as indented JSON (numpy scalars become plain numbers, inf/NaN null)."""
    target = Path(path)
    clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in data.items()}
    target.write_text(json.dumps(clean, indent=2, default=_plain, ensure_ascii=False) + "\n")
    _fault_point(target.name)
    logger.info("Wrote %s", target)
    return target


# Residents are `population` in every layer and file of a plan folder. In memory the units keep
# `pop` (as every planner module reads it) and the changes `residents`: renamed when written,
# back when read.
_WRITTEN_NAMES = {"units": {"pop": "population"}, "changes": {"residents": "population"}}


def _units_layer(units: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The units as written: `population` for `pop`."""
    return units.rename(columns=_WRITTEN_NAMES["units"])


def _list_column(cell, counts: dict[str, int] | None) -> tuple[str, str]:
    """The previous communities of one community as ("C03;C07", "4512;2100"), largest first."""
    if counts is None:          # no changes table: read the readable column, 'C03 (4,512); …'
        counts = parse_previous_ids(cell)
    order = sorted(counts, key=lambda k: (-counts[k], k))
    return ";".join(order), ";".join(str(int(counts[k])) for k in order)


def community_rows(plan) -> pd.DataFrame:
    """
    The communities layer without geometry, machine-readable (communities.csv / .xlsx).

    Every column of the layer, numbers as numbers (never formatted), except ``previous_ids``:
    the ids of the old communities contributing residents, separated by ";" and largest first
    (no counts), with ``previous_population`` the matching resident counts, also separated by
    ";" (both empty without existing communities). The layer keeps the readable
    'C03 (4,512); C07 (2,100)'.
    """
    table = pd.DataFrame(plan.communities.drop(columns=plan.communities.geometry.name))
    if "previous_ids" not in table:
        return table
    flows = None
    if plan.changes is not None and {"old_community_id", "new_community_id"} <= set(plan.changes):
        ch = plan.changes.rename(columns=_WRITTEN_NAMES["changes"])
        ch = ch[(ch["old_community_id"] != "(none)") & (ch["population"] > 0)]
        flows = {str(new): dict(zip(part["old_community_id"].astype(str), part["population"]))
                 for new, part in ch.groupby("new_community_id")}
    pairs = [_list_column(cell, None if flows is None else flows.get(str(cid), {}))
             for cid, cell in zip(table["community_id"], table["previous_ids"])]
    at = list(table.columns).index("previous_ids")
    table["previous_ids"] = [ids for ids, _ in pairs]
    table.insert(at + 1, "previous_population", [counts for _, counts in pairs])
    return table


def write_community_tables(plan, folder: Path) -> list[Path]:
    """communities.csv, and communities.xlsx when openpyxl is installed (an optional
    dependency: without it the workbook is skipped with a log line)."""
    rows = community_rows(plan)
    written = [folder / "communities.csv"]
    rows.to_csv(written[0], index=False)
    if importlib.util.find_spec("openpyxl") is None:
        logger.info("Skipped communities.xlsx: openpyxl is not installed (pip install openpyxl); "
                    "communities.csv holds the same table")
    else:
        rows.to_excel(folder / "communities.xlsx", index=False, sheet_name="communities",
                      engine="openpyxl")
        written.append(folder / "communities.xlsx")
    logger.info("Wrote %s", ", ".join(str(p) for p in written))
    return written


def report_document(report: Mapping) -> dict:
    """The report as written to report.json: its keys, then `problems`
    (`covplan.output.glossary.problems`) and last a `glossary` of every key."""
    from covplan.output.glossary import glossary_for, problems

    out = {k: v for k, v in report.items() if k not in _DERIVED_REPORT_KEYS}
    out["problems"] = problems(report)
    out["glossary"] = glossary_for(out)
    return out


_DERIVED_REPORT_KEYS = ("problems", "glossary")    # built at write time, dropped at read time
# Written to report.json but not part of the plan in memory (read_plan drops them too).
_WRITE_ONLY_REPORT_KEYS = ("plan_id", *_DERIVED_REPORT_KEYS)


def plan_id(plan) -> str:
    """
    The id every file of a written plan carries (report.json, each plan.gpkg layer's metadata,
    manifest.json): a hash of the plan's content (its report without the run time, its units,
    communities and changes). The same inputs, parameters, seed and version give the same id,
    so written plans stay comparable byte for byte; any other plan gets another id.
    """
    digest = hashlib.sha256()
    report = {k: v for k, v in plan.report.items() if k not in ("runtime_s", *_WRITE_ONLY_REPORT_KEYS)}
    if isinstance(report.get("grids"), dict):      # the grids' own run time too
        report["grids"] = {k: v for k, v in report["grids"].items() if k != "runtime_s"}
    digest.update(json.dumps(report, sort_keys=True, default=_plain).encode())
    communities = plan.communities.drop(columns=plan.communities.geometry.name)
    for frame in (plan.units, communities, plan.changes):
        if frame is not None:
            digest.update(pd.DataFrame(frame).to_csv(index=False).encode())
    return digest.hexdigest()[:16]


def write_plan_files(plan, folder: Path, *, self_contained: bool = True,
                     base: gpd.GeoDataFrame | None = None) -> str:
    """The files of `write_plan` written into an existing folder (an `OutputStage`'s path, so
    they reach their place only complete); returns the plan id (`plan_id`)."""
    from covplan.output.maps import plan_map, save_map
    from covplan.output.styles import write_layer_styles

    pid = plan_id(plan)
    layers = {"communities": plan.communities, "centers": plan.centers,
              "units": _units_layer(plan.units), "isochrones": plan.isochrones}
    if plan.previous is not None:
        layers["previous_communities"] = plan.previous
    decisions = getattr(plan, "center_decisions", None)
    if decisions is not None:
        layers["center_decisions"] = decisions
    grids = getattr(plan, "grids", None)
    if grids is not None:
        layers["grids"], layers["grid_stations"] = grids.grids, grids.stations
    if base is not None:
        lines = base[base.geom_type.isin(["LineString", "MultiLineString"])]
        if len(lines):
            layers["streets"] = lines
    write_layers(folder / "plan.gpkg", layers, metadata={"plan_id": pid})
    write_layer_styles(folder / "plan.gpkg", layers=list(layers), config=plan.config)
    write_community_tables(plan, folder)
    if grids is not None:
        pd.DataFrame(grids.grids.drop(columns=grids.grids.geometry.name)).to_csv(
            folder / "grids.csv", index=False)
    if decisions is not None:
        lonlat = decisions.geometry.to_crs("EPSG:4326")
        pd.DataFrame(decisions.drop(columns=decisions.geometry.name)).assign(
            lon=lonlat.x.to_numpy(), lat=lonlat.y.to_numpy()).to_csv(
            folder / "center_decisions.csv", index=False)
    write_json(folder / "report.json", report_document({"plan_id": pid, **plan.report}))
    if plan.changes is not None:
        plan.changes.rename(columns=_WRITTEN_NAMES["changes"]).to_csv(folder / "changes.csv",
                                                                      index=False)
        _fault_point("changes.csv")
    save_map(plan_map(plan, base=base, grids=grids), folder / "map.html",
             self_contained=self_contained)
    _fault_point("map.html")
    return pid


def write_plan(plan, out: str | os.PathLike[str], *, self_contained: bool = True,
               base: gpd.GeoDataFrame | None = None, force: bool = False) -> Path:
    """
    Write a plan folder into `out`: plan.gpkg (layers communities, centers, units, isochrones,
    center_decisions and, in merge/split mode, previous_communities), center_decisions.csv
    (no geometry; lon/lat of each site), communities.csv (and communities.xlsx
    with openpyxl, see `write_community_tables`), report.json (the report, its `problems` and
    a `glossary` of its keys), changes.csv (merge/split mode), map.html and manifest.json.

    Residents are `population` in every layer and file (see `_WRITTEN_NAMES`); polygon layers
    are valid MultiPolygons. The map embeds Leaflet (opens offline) unless `self_contained` is
    False (CDN links). `base` (`covplan.output.basemap.base_layer`) draws under the map and
    its lines (main streets, railways) are kept as the layer `streets`, which the atlas draws.

    The folder is written whole or not at all (`output_folder`): an older plan in `out` is
    replaced as a whole, and a folder holding files covplan did not write is refused unless
    `force` (they are then kept).

    Raises
    ------
    InputError
        If `out` is a file, or a folder holding other files and not `force`.
    OutputBusyError
        If another run is writing `out`.
    DataSourceError
        If `out` cannot be created or written.
    """
    with output_folder(out, force=force) as stage:
        stage.plan_id = write_plan_files(plan, stage.path, self_contained=self_contained,
                                         base=base)
    return Path(out)


# --- Output folders: locked, staged beside, swapped in whole ---------------------------------
#
# Guarantee: a folder written through `output_folder` holds, at every instant, either its
# previous content or the complete new one, never a mix. The files are written into a hidden
# sibling (same parent, so one filesystem) while `.<name>.covplan-lock` (flock) keeps other runs
# out; manifest.json is written last; then two renames swap the folders (SIGINT/SIGTERM held
# meanwhile) and the old one is deleted. A run killed (kill -9, power loss) between the two
# renames leaves no `out` but the complete old folder as `.<name>.covplan-old-*`: `read_plan`
# reads that, and the next run into `out` puts it back first. Stale staging folders are
# deleted by the next run.

MANIFEST = "manifest.json"
# The files of a plan folder (plan, demo): read_plan refuses one its manifest does not list.
PLAN_FOLDER_FILES = frozenset({
    "plan.gpkg", "report.json", "communities.csv", "communities.xlsx", "center_decisions.csv",
    "changes.csv", "map.html", "scenario.toml", "resolved.json", MANIFEST, "grids.csv",
    "asis.gpkg", "asis.json", "asis_map.html"})                       # covplan demo
# Every name covplan writes into an --out folder (also coverage, site, isochrones, compare;
# atlas.pdf by `covplan atlas DIR`): a folder holding only these may be replaced without --force.
OUTPUT_FILES = PLAN_FOLDER_FILES | {
    "coverage.gpkg", "coverage.json", "site.gpkg", "site.json", "isochrones.gpkg",
    "comparison.json", "compare_map.html", "atlas.pdf", "summary.csv", "summary.png"}
# Sub-folders covplan writes (`covplan sweep`: a plan folder per scenario, GeoParquet copies).
OUTPUT_FOLDERS = frozenset({"plans", "communities"})
_SQLITE_SIDECARS = ("-journal", "-wal", "-shm")       # beside a GeoPackage open in QGIS
_CLUTTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})   # file managers' own files
_KILL_AT = "COVPLAN_TEST_KILL_AT"


def _fault_point(step: str) -> None:
    """Fault injection for the interruption tests: COVPLAN_TEST_KILL_AT=STEP[@SIGNAL] sends
    SIGNAL (default SIGKILL) to this process when it reaches STEP (a file written, a layer as
    'plan.gpkg/units', 'manifest.json', 'swap' between the two renames, 'swapped' after)."""
    wanted = os.environ.get(_KILL_AT)
    if wanted:
        name, _, sig = wanted.partition("@")
        if name == step:
            os.kill(os.getpid(), getattr(signal, sig or "SIGKILL"))


def _ours(entry: Path) -> bool:
    name = entry.name
    if entry.is_dir():
        return name in OUTPUT_FOLDERS
    return (name in OUTPUT_FILES or name in _CLUTTER
            or (name.endswith(_SQLITE_SIDECARS) and name.rsplit("-", 1)[0] in OUTPUT_FILES))


def _foreign(folder: Path) -> list[str]:
    """What in `folder` covplan did not write (folders end in '/')."""
    if not folder.is_dir():
        return []
    return sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not _ours(p))


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.covplan-{kind}-{uuid.uuid4().hex[:12]}"


@dataclass
class OutputStage:
    """A folder being written: files go into `path`; `commit` moves them to `out` whole."""

    out: Path                       # where the folder goes (resolved)
    path: Path                      # the staging folder beside it
    keep: list[str] = field(default_factory=list)    # foreign entries of `out` kept (force)
    plan_id: str | None = None      # recorded in manifest.json
    committed: bool = False

    def commit(self) -> None:
        """Write manifest.json, then replace `out` by the staging folder (no-op once done)."""
        if self.committed:
            return
        _write_manifest(self.path, self.plan_id)
        for name in self.keep:
            _keep_entry(self.out / name.rstrip("/"), self.path / name.rstrip("/"))
        with _signals_held():          # Ctrl-C now takes effect once the folder is in place
            trash = _swap(self.path, self.out)
            self.committed = True
        _fault_point("swapped")
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        logger.info("Moved the complete folder into place: %s", self.out)


@contextlib.contextmanager
def output_folder(out: str | os.PathLike[str], *, force: bool = False) -> Iterator[OutputStage]:
    """
    Lock `out`, stage a folder beside it and, when the block ends without error, move it into
    place whole (`OutputStage.commit`, unless the block did); on any error or interruption the
    staging folder is removed and `out` is left as it was.

    `out` must be a new folder, or one holding only files covplan writes (`OUTPUT_FILES`); other
    files are refused unless `force`, which keeps them in the new folder. Checked before the
    block runs, so the CLI refuses a bad --out before any computation.

    Raises
    ------
    InputError
        `out` is a file, lies under a file, is the current folder (or holds it), or holds
        files covplan did not write and not `force`.
    OutputBusyError
        Another run holds the lock of `out`.
    DataSourceError
        The folder (or its parent) cannot be created or written.
    """
    shown = os.fspath(out)
    target = Path(out).resolve()
    if target.exists() and not target.is_dir():
        msg = (f"--out '{shown}' is a file, not a folder; name a new folder or a plan folder "
               "(--out / out=).")
        raise InputError(msg)
    if target == target.parent or target in (Path.cwd(), *Path.cwd().parents):
        msg = (f"--out '{shown}' is the current folder or holds it, and an output folder is "
               f"replaced as a whole; name a subfolder, e.g. --out {Path(shown) / 'plan'}.")
        raise InputError(msg)
    created = _make_parents(target.parent, shown)
    try:
        with _folder_lock(target, shown):
            _recover(target)
            keep = _foreign(target)
            if keep and not force:
                listing = ", ".join(keep[:5]) + (f", … {len(keep) - 5} more" if len(keep) > 5 else "")
                msg = (f"--out '{shown}' holds files covplan did not write ({listing}); choose a "
                       "new or empty folder, or pass --force (force=True) to write there and "
                       "keep them.")
                raise InputError(msg)
            stage = OutputStage(out=target, path=_sibling(target, "new"), keep=keep)
            try:
                stage.path.mkdir()
                yield stage
                stage.commit()
            finally:
                if not stage.committed:
                    shutil.rmtree(stage.path, ignore_errors=True)
    except BaseException:
        for folder in reversed(created):       # parents made for a folder never written
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _make_parents(parent: Path, shown: str) -> list[Path]:
    """Create `parent` and the folders above it that are missing; the ones created, top first."""
    ancestors = (parent, *parent.parents)
    blocker = next((p for p in ancestors if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        msg = (f"--out '{shown}' cannot be created: '{blocker}' is a file; choose another "
               "folder (--out / out=).")
        raise InputError(msg)
    missing = [p for p in ancestors if not p.exists()][::-1]
    for p in missing:
        try:
            p.mkdir(exist_ok=True)
        except OSError as exc:
            msg = (f"cannot create --out '{shown}': {exc.strerror} ('{p}'); choose a folder you "
                   "can write to (--out / out=).")
            raise DataSourceError(msg) from exc
    return missing


@contextlib.contextmanager
def _folder_lock(target: Path, shown: str) -> Iterator[None]:
    """Hold `.<name>.covplan-lock` beside `target` (an OS lock: the kernel drops it when its
    process dies, so a stale lock file is simply taken over)."""
    path = target.parent / f".{target.name}.covplan-lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            msg = (f"cannot write in '{target.parent}' ({exc.strerror}), where --out '{shown}' "
                   "goes; choose a folder you can write to (--out / out=).")
            raise DataSourceError(msg) from exc
        if not _try_lock(fd, path):
            holder = os.read(fd, 200).decode(errors="replace").strip() or "pid unknown"
            os.close(fd)
            msg = (f"another covplan run is writing {shown} ({holder}); wait for it or choose "
                   "another --out (out=).")
            raise OutputBusyError(msg)
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break                  # still the file at `path` (not one a finished run removed)
        os.close(fd)
    try:
        stale = os.read(fd, 200).decode(errors="replace").strip()
        if stale:
            logger.warning("Took over the lock of %s from a covplan run that stopped without "
                           "releasing it (%s)", shown, stale)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, started {started}".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)            # before unlocking: a waiting run then makes a new file
        os.close(fd)


def _try_lock(fd: int, path: Path) -> bool:
    """True once this process holds the lock, False while another one does."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:                          # Windows
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except (BlockingIOError, PermissionError):
        return False
    except OSError as exc:             # a filesystem without locks (some network shares)
        logger.warning("Cannot lock %s (%s): a second run into the same folder is not detected",
                       path, exc.strerror)
    return True


def _aside(target: Path, *kinds: str) -> list[Path]:
    """The staging ('new'), swapped-out ('old') and doomed ('trash') folders of `target`'s
    runs, oldest first."""
    prefix = f".{target.name}.covplan-"
    if not target.name or not target.parent.is_dir():
        return []
    found = [p for p in target.parent.iterdir() if p.name.startswith(prefix)
             and p.name[len(prefix):].split("-")[0] in kinds and p.is_dir()]
    return sorted(found, key=os.path.getmtime)


def _recover(target: Path) -> None:
    """Under the lock: put back a folder a killed run left renamed aside, delete the rest."""
    backups = _aside(target, "old")
    if backups and not target.exists():
        backups[-1].rename(target)
        logger.warning("Restored %s: a covplan run was stopped while replacing it", target)
    for path in _aside(target, "new", "old", "trash"):
        logger.info("Removing %s, left by a covplan run that was stopped", path)
        shutil.rmtree(path, ignore_errors=True)


def _keep_entry(source: Path, dest: Path) -> None:
    """A foreign entry of the old folder into the new one: hard links (no copy, and the old
    folder keeps its own until the swap), a copy where links are impossible."""
    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, dest, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(source, dest)


def _link_or_copy(source, dest) -> None:
    try:
        os.link(source, dest, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, dest, follow_symlinks=False)


def _swap(new: Path, target: Path) -> Path | None:
    """Put `new` at `target` (old -> aside, new -> target); returns the old folder, renamed
    for deletion, if there was one."""
    if not target.exists():
        new.rename(target)
        return None
    old = _sibling(target, "old")
    target.rename(old)
    _fault_point("swap")
    new.rename(target)
    trash = _sibling(target, "trash")          # never put back, unlike an "old" folder
    old.rename(trash)
    return trash


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM received in the block take effect after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for name in ("SIGINT", "SIGTERM"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is not None:
            previous[sig] = signal.signal(sig, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in caught:
            signal.raise_signal(signum)


def _sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _write_manifest(folder: Path, pid: str | None) -> None:
    """manifest.json, written last: the plan id and every file with its size and sha256."""
    files = {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    write_json(folder / MANIFEST, {"plan_id": pid, "version": __version__, "files": files})


PLAN_FILES = ("plan.gpkg", "report.json")     # changes.csv only exists in merge/split mode
PLAN_LAYERS = ("communities", "centers", "units", "isochrones")


def read_plan(folder: str | os.PathLike[str]) -> Plan:
    """
    Load a plan folder written by `write_plan` back into a `Plan`.

    The units' `population` comes back as `pop` and the changes' as `residents` (their names in
    memory); the report without its derived `problems` and `glossary`; communities.csv/.xlsx
    are not read. The layers come back in the CRS they were written in (the population input's); ``config``
    is rebuilt from the report's parameters, and ``work_crs`` is the local UTM zone of the units
    (the planner's working CRS is not stored in the folder).

    The folder's manifest.json must match it: every file it lists present and unchanged (for
    plan.gpkg, which QGIS rewrites when it opens it: every layer tagged with the plan id), and
    no plan file it does not list (e.g. the changes.csv of an older plan). A folder without a
    manifest (written by hand or by an older covplan) is read with a warning. When `folder`
    is missing because a run was killed while replacing it, the previous plan kept beside it
    is read (see `output_folder`).

    Raises
    ------
    DataSourceError
        If `folder` is not a folder, lacks a file or layer of a plan, holds files of different
        plans, or a file cannot be read.
    """
    from covplan.config import PlanConfig
    from covplan.inputs.crs import local_metric_crs
    from covplan.plan.pipeline import Plan

    root = Path(folder)
    backups = [] if root.is_dir() else _aside(root, "old")
    if backups:
        logger.warning("%s is missing: a covplan run was stopped while replacing it; reading the "
                       "previous plan kept at %s (the next run into %s puts it back)", root,
                       backups[-1], root)
        root = backups[-1]
    if not root.is_dir():
        msg = (f"plan folder '{root}' does not exist or is not a folder; pass the --out folder "
               "of `covplan plan` (it holds plan.gpkg and report.json).")
        raise DataSourceError(msg)
    for name in PLAN_FILES:
        if not (root / name).is_file():
            msg = (f"'{root}' is not a plan folder: it lacks {name}; pass the --out folder of "
                   "`covplan plan` (it holds plan.gpkg and report.json).")
            raise DataSourceError(msg)
    gpkg = root / "plan.gpkg"
    try:
        present = {str(row[0]) for row in pyogrio.list_layers(gpkg)}
    except pyogrio.errors.DataSourceError as exc:
        msg = f"cannot read '{gpkg}': {exc}; write the plan again with `covplan plan`."
        raise DataSourceError(msg) from exc
    missing = [name for name in PLAN_LAYERS if name not in present]
    if missing:
        msg = (f"'{gpkg}' lacks layer(s) {missing} of a plan (it has {sorted(present)}); "
               "write the plan again with `covplan plan`.")
        raise DataSourceError(msg)
    read = [name for name in (*PLAN_LAYERS, "previous_communities", "center_decisions",
                              "grids", "grid_stations") if name in present]
    _check_manifest(root, read)
    layers = {name: _read_layer(gpkg, name) for name in read}
    report = _read_report(root / "report.json")
    for key in _WRITE_ONLY_REPORT_KEYS:
        report.pop(key, None)
    layers["units"] = _in_memory_names(layers["units"], "units")
    changes = None
    if (root / "changes.csv").is_file():
        changes = pd.read_csv(root / "changes.csv", dtype={"old_community_id": str,
                                                           "new_community_id": str})
        changes = _in_memory_names(changes, "changes")
    known = {f.name for f in fields(PlanConfig)}
    config = PlanConfig(**{k: v for k, v in report.get("parameters", {}).items() if k in known})
    units = layers["units"]
    work_crs = local_metric_crs(tuple(units.total_bounds), units.crs)
    logger.info("Read plan %s: %d communities, %d units", root, len(layers["communities"]),
                len(units))
    grids = None
    if "grids" in layers and "grid_stations" in layers:
        from covplan.plan.grids import Grids

        # The units' grid ids are not stored: the grids' polygons carry the plan's grids.
        grids = Grids(grids=layers["grids"], stations=layers["grid_stations"],
                      units=pd.DataFrame(), report=report.get("grids") or {})
    return Plan(communities=layers["communities"], centers=layers["centers"], units=units,
                isochrones=layers["isochrones"], changes=changes,
                previous=layers.get("previous_communities"), report=report, config=config,
                work_crs=work_crs, version=str(report.get("version", "")),
                center_decisions=layers.get("center_decisions"), grids=grids)


def _check_manifest(root: Path, layers: list[str]) -> str | None:
    """The plan id of `root` once its manifest.json matches its files (see `read_plan`); None,
    with a warning, for a folder without a manifest."""
    path = root / MANIFEST
    if not path.is_file():
        logger.warning("%s has no %s (written by hand or by an older covplan): its files are "
                       "not checked to belong to one plan; write the plan again to add one",
                       root, MANIFEST)
        return None
    again = f"write the plan again (`covplan plan --out {root}` / write_plan)"
    manifest = _read_report(path)
    listed, pid = manifest.get("files"), manifest.get("plan_id")
    if not isinstance(listed, dict) or not isinstance(pid, str):
        msg = f"'{path}' is not a plan manifest (it lacks plan_id or files); {again}."
        raise DataSourceError(msg)
    problems = []
    for name, entry in sorted(listed.items()):
        if not (root / name).is_file():
            problems.append(f"{name} is missing")
        elif name != "plan.gpkg" and _sha256(root / name) != (entry or {}).get("sha256"):
            problems.append(f"{name} is not the one written with this plan")
    problems += [f"{p.name} is not part of this plan" for p in sorted(root.iterdir())
                 if p.name in PLAN_FOLDER_FILES and p.name not in listed and p.name != MANIFEST]
    if "plan.gpkg" in listed and (root / "plan.gpkg").is_file():
        for layer in layers:
            info = pyogrio.read_info(root / "plan.gpkg", layer=layer)
            got = (info.get("layer_metadata") or {}).get("plan_id")
            if got != pid:
                problems.append(f"plan.gpkg layer {layer} is of plan {got or '(none)'}")
    if problems:
        msg = f"files of different plans in {root} (manifest.json: plan {pid}): {'; '.join(problems)}; {again}."
        raise DataSourceError(msg)
    return pid


def _in_memory_names(frame, kind: str):
    """Undo `_WRITTEN_NAMES`: a column written under its new name gets its in-memory name
    back (and a legacy duplicate under the in-memory name wins)."""
    renames = {}
    for memory, written in _WRITTEN_NAMES[kind].items():
        if written in frame and memory in frame:
            frame = frame.drop(columns=written)
        elif written in frame:
            renames[written] = memory
    return frame.rename(columns=renames) if renames else frame


def _read_layer(path: Path, layer: str) -> gpd.GeoDataFrame:
    try:
        return gpd.read_file(path, layer=layer, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        msg = f"cannot read layer '{layer}' of '{path}': {exc}; write the plan again."
        raise DataSourceError(msg) from exc


def _read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        msg = f"cannot read '{path}' as JSON: {exc}; write the plan again with `covplan plan`."
        raise DataSourceError(msg) from exc
    if not isinstance(report, dict):
        msg = f"'{path}' holds {type(report).__name__}, not a plan report (a JSON object)."
        raise DataSourceError(msg)
    return report
