"""
Who can walk to which candidate service center: a sparse units x candidates matrix of minutes.

Every time includes both access legs (unit -> nearest node, node -> center) and the network walk
between them. Only pairs within `max_minutes` are stored, so memory follows the pairs reached.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import scipy.sparse as sp
from covplan._validate import require_positive
from covplan.defaults import DEFAULT_CANDIDATE_SPACING_M, DEFAULT_MAX_MINUTES, MAX_MINUTES_LIMIT
from covplan.errors import CoverageWarning, InputError
from covplan.inputs.network import WalkNetwork, as_walk_network
from covplan.inputs.population import Population, as_population
from covplan.inputs.snap import DEFAULT_DETOUR_FACTOR, DEFAULT_MAX_ACCESS_M, Snap, snap_points
from covplan.reach.engine import bounded_distances, gather_rows

if TYPE_CHECKING:
    import networkx as nx
    import pyproj

logger = logging.getLogger(__name__)

Direction = Literal["to_center", "from_center"]


@dataclass(frozen=True, slots=True, eq=False)
class ReachMatrix:
    """
    Walk minutes from population units to candidate centers, within `max_minutes`.

    ``minutes[i, j]`` is stored (explicitly, zeros included) only when unit i reaches candidate
    j within the limit; absent means beyond it. Frames are in the working CRS.
    """

    units: gpd.GeoDataFrame       # unit_id, cell_id, pop, node, access_min, off_network, on_island
    candidates: gpd.GeoDataFrame  # candidate_id, center_id ('' for network nodes), existing, node, access_min
    minutes: sp.csr_matrix        # units x candidates
    max_minutes: float
    walk_speed_kmh: float
    direction: str
    input_crs: pyproj.CRS         # the population's CRS, for results
    work_crs: pyproj.CRS

    @property
    def pop(self) -> np.ndarray:
        return self.units["pop"].to_numpy()

    @property
    def reachable(self) -> np.ndarray:
        """True for units that reach at least one candidate within the limit."""
        return np.diff(self.minutes.indptr) > 0

    @property
    def unreachable_population(self) -> int:
        return int(self.pop[~self.reachable].sum())

    @property
    def nbytes(self) -> int:
        """Memory held by the sparse matrix."""
        m = self.minutes
        return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)

    def nearest(self) -> tuple[np.ndarray, np.ndarray]:
        """Per unit, the nearest candidate (index, -1 if none) and its minutes (inf if none)."""
        return _row_argmin(self.minutes)

    def population_within(self) -> np.ndarray:
        """Per candidate, the population that reaches it within the limit (ORS' total_pop)."""
        csc = self.minutes.tocsc()
        return np.bincount(np.repeat(np.arange(csc.shape[1]), np.diff(csc.indptr)),
                           weights=self.pop[csc.indices], minlength=csc.shape[1]).astype("int64")

    def to_frame(self) -> pd.DataFrame:
        """
        The stored pairs in long form, e.g. for pandas joins or an origin-destination table.

        Returns
        -------
        pandas.DataFrame
            One row per stored (unit, candidate) pair, explicit zeros included, ordered by unit
            then candidate: ``unit_id`` and ``candidate_id`` (int64, as in `units` and
            `candidates`) and ``minutes`` (float64, within `max_minutes`). Pairs beyond the
            limit have no row.
        """
        m = self.minutes.tocsr()
        if not m.has_sorted_indices:
            m = m.sorted_indices()   # a sorted copy: the stored matrix is left as it is
        rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        return pd.DataFrame({
            "unit_id": self.units["unit_id"].to_numpy(dtype="int64")[rows],
            "candidate_id": self.candidates["candidate_id"].to_numpy(dtype="int64")[m.indices],
            "minutes": m.data.astype("float64")})


def _row_argmin(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    n = matrix.shape[0]
    best = np.full(n, -1, dtype="int64")
    best_min = np.full(n, np.inf)
    counts = np.diff(matrix.indptr)
    rows = np.repeat(np.arange(n), counts)
    # Sort by (row, minutes, column): the first entry of each row is its minimum, ties to lowest id.
    order = np.lexsort((matrix.indices, matrix.data, rows))
    first = matrix.indptr[:-1][counts > 0]
    picked = order[first]
    best[counts > 0] = matrix.indices[picked]
    best_min[counts > 0] = matrix.data[picked]
    return best, best_min


def node_times(network: WalkNetwork, sources: np.ndarray, *, max_minutes: float,
               direction: Direction = "from_center", progress: bool = False):
    """
    Bounded walk distances between source nodes and all nodes (see `NodeReach`).

    ``direction="from_center"`` walks out of the sources; ``"to_center"`` walks into them (the
    reverse graph), which differs only on directed profiles.
    """
    graph = network.csr_length()
    if direction == "to_center":
        graph = graph.T.tocsr()
    elif direction != "from_center":
        msg = f"`direction` must be 'to_center' or 'from_center', got {direction!r}."
        raise InputError(msg)
    limit_m = max_minutes * network.speed_m_per_min
    return bounded_distances(graph, network.x, network.y, sources, limit_m=limit_m,
                             progress=progress)


def _units_table(network: WalkNetwork, population: Population, snap: Snap) -> gpd.GeoDataFrame:
    units = population.units.to_crs(network.crs).reset_index(drop=True)
    units["node"] = snap.node
    units["access_min"] = snap.access_min(network.walk_speed_kmh)
    units["off_network"] = snap.off_network
    units["on_island"] = snap.on_island
    return units


def _candidate_nodes(network: WalkNetwork, units: gpd.GeoDataFrame, spacing_m: float) -> np.ndarray:
    """One node per populated square of `spacing_m`: the unit node nearest its weighted centre."""
    on = units[(units["pop"] > 0) & (units["node"] >= 0)]
    if on.empty:
        return np.zeros(0, dtype="int64")
    nodes = on["node"].to_numpy()
    nx_, ny_ = network.x[nodes], network.y[nodes]
    key = (np.floor(nx_ / spacing_m).astype("int64") * 10_000_000
           + np.floor(ny_ / spacing_m).astype("int64"))
    frame = pd.DataFrame({"key": key, "node": nodes, "x": nx_, "y": ny_,
                          "w": on["pop"].to_numpy(dtype="float64")})
    frame["wx"], frame["wy"] = frame.x * frame.w, frame.y * frame.w
    centre = frame.groupby("key")[["wx", "wy", "w"]].transform("sum")
    frame["d2"] = (frame.x - centre.wx / centre.w) ** 2 + (frame.y - centre.wy / centre.w) ** 2
    picked = frame.sort_values(["key", "d2", "node"]).drop_duplicates("key")["node"]
    return np.unique(picked.to_numpy())


def _candidates_table(network: WalkNetwork, centers: gpd.GeoDataFrame | None,
                      node_candidates: np.ndarray, *, detour_factor: float,
                      max_access_m: float) -> gpd.GeoDataFrame:
    parts = []
    if centers is not None and len(centers):
        c = centers.to_crs(network.crs).reset_index(drop=True)
        snap = snap_points(network, c.geometry.x.to_numpy(), c.geometry.y.to_numpy(),
                           detour_factor=detour_factor, max_access_m=max_access_m)
        off = snap.off_network
        if off.any():
            ids = list(c.loc[off, "center_id"][:10])
            warnings.warn(f"{int(off.sum())} center(s) lie farther than {max_access_m:g} m from "
                          f"any walkable way and reach nobody: {ids}", CoverageWarning, stacklevel=3)
        island = snap.on_island
        if island.any():
            logger.warning("Centers on disconnected islands of the network: %s",
                           list(c.loc[island, "center_id"]))
        parts.append(gpd.GeoDataFrame({
            "center_id": c["center_id"].astype(str), "existing": True, "node": snap.node,
            "access_min": snap.access_min(network.walk_speed_kmh), "on_island": island},
            geometry=c.geometry.values, crs=network.crs))
    if len(node_candidates):
        pts = gpd.points_from_xy(network.x[node_candidates], network.y[node_candidates])
        parts.append(gpd.GeoDataFrame({
            "center_id": "", "existing": False, "node": node_candidates.astype("int64"),
            "access_min": 0.0, "on_island": network.component[node_candidates] != 0},
            geometry=pts, crs=network.crs))
    if not parts:
        msg = "no candidate centers: pass `centers` or allow network-node candidates."
        raise InputError(msg)
    table = pd.concat(parts, ignore_index=True)
    table.insert(0, "candidate_id", np.arange(len(table), dtype="int64"))
    return gpd.GeoDataFrame(table, geometry="geometry", crs=network.crs)


def compute_reach(network: WalkNetwork | nx.Graph, population: Population | gpd.GeoDataFrame,
                  *, centers: gpd.GeoDataFrame | None = None,
                  max_minutes: float = DEFAULT_MAX_MINUTES,
                  node_candidates: bool = True,
                  candidate_spacing_m: float = DEFAULT_CANDIDATE_SPACING_M,
                  direction: Direction = "to_center",
                  detour_factor: float = DEFAULT_DETOUR_FACTOR,
                  max_access_m: float = DEFAULT_MAX_ACCESS_M,
                  progress: bool = False,
                  population_column: str | None = None) -> ReachMatrix:
    """
    Walk minutes from every population unit to every candidate center within `max_minutes`.

    Parameters
    ----------
    network
        The walking network; its CRS is the working CRS and its speed sets the minutes. A
        WalkNetwork, or an osmnx/networkx graph converted by `as_walk_network`.
    population
        Population units (any CRS); its CRS is recorded for results. A Population, or a
        GeoDataFrame of cells converted by `as_population`.
    centers
        Existing or proposed service-center sites (points with ``center_id``, any CRS), or None.
    max_minutes
        Time limit including both access legs (0 < limit <= 24 h).
    node_candidates
        Also offer network nodes near populated units as candidate sites (to site new centers).
    candidate_spacing_m
        Density of those node candidates: one per populated square of this side.
    direction
        ``"to_center"`` (residents walk to the center, default) or ``"from_center"``.
    detour_factor
        Access legs (unit or center to its nearest node) are the straight line times this.
    max_access_m
        Points farther than this from any node are off-network: reported, reaching nothing.
    progress
        Show a progress bar over the network searches.
    population_column
        Column of counts when `population` is a GeoDataFrame; None detects it.

    Returns
    -------
    ReachMatrix
        Units x candidates minutes within the limit, with the unit and candidate tables in the
        network's CRS and the population's CRS recorded as ``input_crs``.

    Raises
    ------
    InputError
        For a limit out of range, no population units or no candidate at all, a population
        that misses the network, or an ambiguous population column.
    TypeError
        If `network` or `population` is of an unsupported type.
    """
    network = as_walk_network(network)
    population = as_population(population, population_column=population_column)
    require_positive(max_minutes, name="max_minutes", upper=MAX_MINUTES_LIMIT)
    require_positive(candidate_spacing_m, name="candidate_spacing_m")
    if len(population.units) == 0:
        msg = "the population has no populated units; nothing to compute reach for."
        raise InputError(msg)
    pts = population.units.to_crs(network.crs).geometry
    snap = snap_points(network, pts.x.to_numpy(), pts.y.to_numpy(),
                       detour_factor=detour_factor, max_access_m=max_access_m)
    if snap.off_network.all():
        _raise_no_overlap(network, population, max_access_m)
    units = _units_table(network, population, snap)
    node_cands = (_candidate_nodes(network, units, candidate_spacing_m) if node_candidates
                  else np.zeros(0, dtype="int64"))
    candidates = _candidates_table(network, centers, node_cands, detour_factor=detour_factor,
                                   max_access_m=max_access_m)
    minutes = _unit_candidate_minutes(network, units, candidates, max_minutes=max_minutes,
                                      direction=direction, progress=progress)
    reach = ReachMatrix(units=units, candidates=candidates, minutes=minutes,
                        max_minutes=float(max_minutes), walk_speed_kmh=network.walk_speed_kmh,
                        direction=direction, input_crs=population.crs, work_crs=network.crs)
    off_pop = int(units.loc[units.off_network, "pop"].sum())
    _warn_partial_overlap(network, population, units, off_pop, max_access_m)
    logger.info("Reach: %d units x %d candidates, %d pairs within %g min (%.1f MB); "
                "%d people cannot reach any candidate (%d of them off-network)",
                len(units), len(candidates), minutes.nnz, max_minutes, reach.nbytes / 1e6,
                reach.unreachable_population, off_pop)
    return reach


OFF_NETWORK_WARNING_SHARE = 0.05  # residents off the network above this share: the extract
                                  # is likely smaller than the grid (a plan still follows)


def _warn_partial_overlap(network: WalkNetwork, population: Population, units: gpd.GeoDataFrame,
                          off_pop: int, max_access_m: float) -> None:
    """Warn when many residents lie off the network: they reach nothing and count as uncovered,
    which is rarely what a planner wants when the network extract is simply too small."""
    total = float(units["pop"].sum())
    if total <= 0 or off_pop / total <= OFF_NETWORK_WARNING_SHARE:
        return
    message = (f"{off_pop:,} of {total:,.0f} residents ({off_pop / total:.0%}) of the population "
               f"({population.source}) lie farther than {max_access_m:g} m from any walkable way "
               f"of the network ({network.source}) and reach no center; the network covers "
               f"{_lonlat_extent(network)}. Load a network covering the whole population, or clip "
               "the population to the network's area.")
    logger.warning("%s", message)
    warnings.warn(message, CoverageWarning, stacklevel=3)


_LONLAT_BOX = "lon {0:.4f}..{2:.4f}, lat {1:.4f}..{3:.4f}"


def _lonlat_extent(network: WalkNetwork) -> str:
    """The network's nodes' extent in lon/lat, for messages."""
    box = gpd.GeoSeries(gpd.points_from_xy(network.x, network.y), crs=network.crs).to_crs(4326)
    return _LONLAT_BOX.format(*box.total_bounds)


def _raise_no_overlap(network: WalkNetwork, population: Population, max_access_m: float) -> None:
    pop_box = population.units.to_crs(4326)
    msg = (f"the population ({population.source}) does not overlap the network ({network.source}): "
           f"no populated unit lies within {max_access_m:g} m of a walkable way. Population "
           f"covers {_LONLAT_BOX.format(*pop_box.total_bounds)}, the network "
           f"{_lonlat_extent(network)}; load a network of the same area (or check the "
           "population's CRS).")
    raise InputError(msg)


def _unit_candidate_minutes(network: WalkNetwork, units: gpd.GeoDataFrame,
                            candidates: gpd.GeoDataFrame, *, max_minutes: float,
                            direction: Direction, progress: bool) -> sp.csr_matrix:
    speed = network.speed_m_per_min
    cand_node = candidates["node"].to_numpy()
    cand_access = candidates["access_min"].to_numpy()
    usable = np.flatnonzero((cand_node >= 0) & (cand_access <= max_minutes))
    slack = max_minutes - (cand_access[usable].min() if len(usable) else 0.0)
    reach = node_times(network, cand_node[usable], max_minutes=max(slack, 0.0),
                       direction=direction, progress=progress)

    unit_node = units["node"].to_numpy()
    unit_access = units["access_min"].to_numpy()
    on = np.flatnonzero(unit_node >= 0)
    order = on[np.argsort(unit_node[on], kind="stable")]
    node_ptr = np.searchsorted(unit_node[order], np.arange(network.n_nodes + 1))
    # Every (candidate, node) pair expands to the units snapped to that node.
    pair_cand = np.repeat(usable, np.diff(reach.indptr))
    positions, pair_idx = gather_rows(node_ptr, reach.node)
    unit = order[positions]
    cand = pair_cand[pair_idx]
    minutes = unit_access[unit] + reach.dist_m[pair_idx] / speed + cand_access[cand]
    keep = minutes <= max_minutes + 1e-9
    matrix = sp.coo_matrix((minutes[keep], (unit[keep], cand[keep])),
                           shape=(len(units), len(candidates))).tocsr()
    matrix.sort_indices()
    return matrix
