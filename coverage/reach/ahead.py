"""
Isochrones drawn ahead: a plan's last stages (the CP-SAT windows, the recombination, the center
swaps) run on one process, and by then most of its centers are known (Chengdu's redraw keeps 89
of its improved plan's 97 centers, and its 35 exception centers are known before planning). A
process beside the planning draws the isochrones of the centers it is told of meanwhile, and
the plan draws only the rest (`isochrones_with`). An area depends only on its center, so the
isochrones are the same as drawn all at once.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
from functools import partial
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
from covplan._parallel import can_fork
from covplan.reach.isochrones import compute_isochrones

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from covplan.inputs.network import WalkNetwork

logger = logging.getLogger(__name__)

_BATCH = 16         # centers drawn in one call between looks for new asks (a call costs ~30 ms
                    # beyond its centers: 5x the time one center at a time on Chengdu)
_WAIT_S = 60.0      # the longest wait for the drawn areas before drawing them all here


def _draw(asks, answers, network: WalkNetwork, candidates: gpd.GeoDataFrame, minutes: float,
          nice: int) -> None:
    """The drawing process: isochrones of the candidate rows asked for, in batches, until asked
    for what it has (None), which it sends as {candidate_id: area}."""
    os.nice(nice)
    # Ctrl-C in a terminal reaches the whole process group: it is the caller's to handle (the
    # CLI's one line), and the caller ends this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.disable(logging.INFO)     # the plan's log reports its isochrones once
    drawn: dict[str, object] = {}
    todo: list[int] = []
    try:
        while True:
            if not todo or not asks.empty():
                rows = asks.get()
                if rows is None:
                    break
                queued = set(todo)
                todo += [r for r in dict.fromkeys(rows.tolist())
                         if r not in queued and candidates["candidate_id"].iat[r] not in drawn]
                continue
            batch, todo = todo[:_BATCH], todo[_BATCH:]
            frame = candidates.iloc[batch][["candidate_id", "geometry"]].rename(
                columns={"candidate_id": "center_id"})
            areas = compute_isochrones(network, frame, minutes=[minutes])
            drawn.update(zip(areas["center_id"], areas.geometry))
    except Exception:   # noqa: BLE001 - what is not drawn here is drawn at the end
        pass
    answers.send(drawn)
    answers.close()


class IsochronesAhead:
    """
    A process drawing the `minutes` isochrones of `candidates` (in the network's CRS) that
    `draw` asks for, from any process forked after it started; `drawn` ends it and returns
    them. It runs at niceness `nice`: by default the lowest priority, only on what the
    planning leaves idle. It forks: see `drawing_ahead`.
    """

    def __init__(self, network: WalkNetwork, candidates: gpd.GeoDataFrame, minutes: float, *,
                 nice: int = 19):
        context = multiprocessing.get_context("fork")
        self._asks = context.SimpleQueue()     # no feeder thread: safe in processes that fork
        self._answers, sending = context.Pipe(duplex=False)
        self._process = context.Process(target=_draw, daemon=True,
                                        args=(self._asks, sending, network, candidates, minutes,
                                              nice))
        self._process.start()
        sending.close()

    def draw(self, rows: np.ndarray) -> None:
        """Ask for the isochrones of these candidate rows (positions in `candidates`). A plan
        asks a few times, some hundred bytes each: far below what the pipe holds, so an ask
        never waits, even on a process that died."""
        if len(rows):
            self._asks.put(np.asarray(rows, dtype="int64"))

    def drawn(self) -> dict[str, object]:
        """The areas drawn so far by candidate id, once the batch in hand is done; the process
        ends. Empty if it died or did not answer (the pipeline then draws them all)."""
        try:
            self._asks.put(None)
            if self._answers.poll(_WAIT_S):
                return self._answers.recv()
            logger.warning("The isochrones drawn ahead did not come within %g s; drawing them "
                           "all now", _WAIT_S)
        except (EOFError, OSError):
            logger.debug("The process drawing isochrones ahead ended before it answered")
        finally:
            self.close()
        return {}

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._answers.close()


@contextlib.contextmanager
def drawing_ahead(network: WalkNetwork, candidates: gpd.GeoDataFrame, minutes: float, *,
                  workers: int) -> Iterator[IsochronesAhead | None]:
    """An `IsochronesAhead` for the planning inside the block, ended after it; None where
    nothing is idle to draw on (one job), or no process can fork (not Linux, or inside a
    daemonic process): the pipeline then draws every isochrone at the end."""
    if workers < 2 or not can_fork():
        yield None
        return
    ahead = IsochronesAhead(network, candidates, minutes)
    try:
        yield ahead
    finally:
        ahead.close()


def columns_told(ahead: IsochronesAhead | None,
                 cols: np.ndarray) -> Callable[[np.ndarray], None] | None:
    """A partition problem's `on_centers` hook (None without `ahead`): its centers, given as
    its columns `cols`, asked for ahead."""
    return None if ahead is None else partial(_draw_columns, ahead, cols)


def _draw_columns(ahead: IsochronesAhead, cols: np.ndarray, local: np.ndarray) -> None:
    ahead.draw(cols[np.asarray(local, dtype="int64")])


def isochrones_with(drawn: Mapping[str, object], network: WalkNetwork,
                    centers: gpd.GeoDataFrame, candidate_ids: np.ndarray, *, minutes: float,
                    progress: bool = False) -> gpd.GeoDataFrame:
    """`compute_isochrones` of `centers` (in the network's CRS) at one limit, taking the areas
    of `drawn` (by the centers' `candidate_ids`) and drawing only the others."""
    known = np.array([c in drawn for c in candidate_ids], dtype=bool)
    work = centers.reset_index(drop=True)
    if not known.any():
        return compute_isochrones(network, work, minutes=[minutes], progress=progress)
    old = gpd.GeoDataFrame({"center_id": work.loc[known, "center_id"].to_numpy(),
                            "minutes": float(minutes)},
                           geometry=[drawn[c] for c in candidate_ids[known]], crs=network.crs)
    old["area_m2"] = old.area
    old = old[["center_id", "minutes", "area_m2", "geometry"]].to_crs(centers.crs)
    if known.all():
        return old
    new = compute_isochrones(network, work[~known], minutes=[minutes], progress=progress)
    parts = pd.concat([new.assign(_at=np.flatnonzero(~known)),
                       old.assign(_at=np.flatnonzero(known))], ignore_index=True)
    return parts.sort_values("_at", kind="stable").drop(columns="_at").reset_index(drop=True)
