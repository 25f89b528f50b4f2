"""
Output folders: locked, staged beside, swapped in whole.

Guarantee: a folder written through `output_folder` holds, at every instant, either its
previous content or the complete new one, never a mix. The files are written into a hidden
sibling (same parent, so one filesystem) while `.<name>.covplan-lock` (flock) keeps other runs
out; manifest.json is written last; then two renames swap the folders (SIGINT/SIGTERM held
meanwhile) and the old one is deleted. A run killed (kill -9, power loss) between the two
renames leaves no `out` but the complete old folder as `.<name>.covplan-old-*`: `read_plan`
reads that, and the next run into `out` puts it back first. Stale staging folders are
deleted by the next run. A command that adds one file to an existing folder (`covplan atlas`)
takes the same lock (`locked_folder`) and writes the file beside, renamed over (`staged_file`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from covplan import __version__
from covplan.errors import DataSourceError, InputError, OutputBusyError
from covplan.output.writers import fault_point, write_json

try:
    import fcntl
except ImportError:                     # Windows: the folder lock uses msvcrt instead
    fcntl = None
    import msvcrt

__all__ = ["MANIFEST", "OUTPUT_FILES", "OUTPUT_FOLDERS", "PLAN_FOLDER_FILES", "OutputStage",
           "file_sha256", "folder_lock", "folders_aside", "locked_folder", "output_folder",
           "prepare_folder", "staged_file"]

# The output modules log under the name users configured before they were split.
logger = logging.getLogger("covplan.output.files")

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
_PARTIAL = ".covplan-partial-"          # a `staged_file` a killed run left: dropped, not kept


def prepare_folder(path: str | os.PathLike[str]) -> Path:
    """Create the output folder (and parents); raise DataSourceError if that is impossible."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create output folder '{out}': {exc.strerror}; choose another --out."
        raise DataSourceError(msg) from exc
    return out


def _ours(entry: Path) -> bool:
    name = entry.name
    if entry.is_dir():
        return name in OUTPUT_FOLDERS
    return (name in OUTPUT_FILES or name in _CLUTTER
            or (name.startswith(".") and _PARTIAL in name)
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
        fault_point("swapped")
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
        with folder_lock(target, shown):
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


@contextlib.contextmanager
def locked_folder(folder: str | os.PathLike[str], *, busy: str, missing: str) -> Iterator[Path]:
    """
    Hold the lock of an existing output folder, as `output_folder` does, after putting back a
    folder a killed run left aside; for a command that adds a file to it (`covplan atlas DIR`).
    Yields the folder (resolved).

    Raises DataSourceError(`missing`) when there is no such folder (nor one kept aside), and
    OutputBusyError, ending with `busy`, when another run holds the lock.
    """
    target = Path(folder).resolve()
    if not target.is_dir() and not folders_aside(target, "old"):
        raise DataSourceError(missing)
    with folder_lock(target, os.fspath(folder), advice=busy):
        _recover(target)
        yield target


@contextlib.contextmanager
def staged_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A path beside `path` to write, renamed over `path` when the block ends without error
    and removed otherwise, so an interrupted run never leaves half a file at `path`."""
    target = Path(path)
    partial = target.with_name(f".{target.stem}{_PARTIAL}{os.getpid()}{target.suffix}")
    try:
        yield partial
        try:
            os.replace(partial, target)
        except OSError as exc:
            msg = f"cannot write '{target}': {exc.strerror or exc}; choose another --out."
            raise DataSourceError(msg) from exc
    finally:
        partial.unlink(missing_ok=True)


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
def folder_lock(target: Path, shown: str, *,
                advice: str = "wait for it or choose another --out (out=)") -> Iterator[None]:
    """Hold `.<name>.covplan-lock` beside `target` (an OS lock: the kernel drops it when its
    process dies, so a stale lock file is simply taken over); `advice` ends the message when
    another run holds it."""
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
            msg = f"another covplan run is writing {shown} ({holder}); {advice}."
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


def folders_aside(target: Path, *kinds: str) -> list[Path]:
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
    backups = folders_aside(target, "old")
    if backups and not target.exists():
        backups[-1].rename(target)
        logger.warning("Restored %s: a covplan run was stopped while replacing it", target)
    for path in folders_aside(target, "new", "old", "trash"):
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
    fault_point("swap")
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


def file_sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _write_manifest(folder: Path, pid: str | None) -> None:
    """manifest.json, written last: the plan id and every file with its size and sha256."""
    files = {p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    write_json(folder / MANIFEST, {"plan_id": pid, "version": __version__, "files": files})
