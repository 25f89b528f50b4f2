"""
Coverage of a set of service centers: who reaches a center within the limit, how far each unit is
from the nearest center and from its own community's center, and who is left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
from covplan._sparse import lookup
from covplan.errors import InputError
from covplan.inputs.areas import label_units
from covplan.reach.matrix import DEFAULT_MAX_MINUTES, compute_reach

if TYPE_CHECKING:
    from covplan.inputs.network import WalkNetwork
    from covplan.inputs.population import Population

logger = logging.getLogger(__name__)

# Times are computed up to this multiple of the limit so maps can show how far beyond it people are.
_DISPLAY_FACTOR = 2.0


@dataclass(frozen=True, slots=True, eq=False)
class CoverageResult:
    """
    Coverage of centers, in the population's CRS. Minutes beyond twice the limit are inf.

    A resident's own center is their community's center, or the nearest center when no
    communities were given; `summary` counts coverage by it (`covplan.metrics.coverage_figures`).
    """

    units: gpd.GeoDataFrame        # unit_id, cell_id, pop, community_id, nearest_center_id, minutes_nearest, own_center_id, minutes_own, covered, covered_own, off_network
    centers: gpd.GeoDataFrame      # center_id, community_id, pop_within (total_pop within the limit), node, access_min
    communities: gpd.GeoDataFrame | None  # community_id, pop, pop_within_own, share_within_own, mean_minutes_own, max_minutes_own
    max_minutes: float
    walk_speed_kmh: float

    def summary(self) -> dict[str, float | int]:
        """
        Headline figures, by `covplan.metrics.coverage_figures`: ``coverage_share``,
        ``population_covered`` and ``population_uncovered`` count residents within the limit of
        their own community's center (of the nearest center when no communities were given);
        ``nearest_center_share`` and ``population_beyond_nearest`` the nearest center. Then the
        off-network population, centers, limit, walking speed, mean walk to the nearest center
        and, with communities, their count and the residents outside every community.
        """
        from covplan.metrics import coverage_figures

        u = self.units
        own = u.minutes_own if self.communities is not None else u.minutes_nearest
        out: dict[str, float | int] = {
            **coverage_figures(u["pop"].to_numpy(), minutes_own=own.to_numpy(dtype="float64"),
                               minutes_nearest=u.minutes_nearest.to_numpy(dtype="float64"),
                               max_minutes=self.max_minutes),
            "population_off_network": int(u.loc[u.off_network, "pop"].sum()),
            "centers": len(self.centers),
            "max_minutes": self.max_minutes,
            "walk_speed_kmh": self.walk_speed_kmh,
        }
        finite = np.isfinite(u.minutes_nearest)
        out["mean_minutes_nearest"] = float(np.average(u.minutes_nearest[finite],
                                                       weights=u["pop"][finite])) if finite.any() else float("nan")
        if self.communities is not None:
            out["communities"] = len(self.communities)
            out["population_outside_communities"] = int(u.loc[u.community_id.isna(), "pop"].sum())
        return out


def _assign_communities(units: gpd.GeoDataFrame, communities: gpd.GeoDataFrame) -> pd.Series:
    """Community of each unit by `label_units`: on a shared border the first listed; None outside."""
    return pd.Series(label_units(units, communities, id_column="community_id"), index=units.index)


def _centers_community(centers: gpd.GeoDataFrame, communities: gpd.GeoDataFrame) -> pd.Series:
    if "community_id" in centers.columns:
        known = set(communities["community_id"])
        unknown = sorted(set(centers["community_id"].dropna().astype(str)) - known)
        if unknown:
            msg = (f"centers name community ids {unknown[:5]} that are not among the communities; "
                   "fix the centers' community_id column.")
            raise InputError(msg)
        return centers["community_id"].astype(str)
    return _assign_communities(centers, communities)


def assess_coverage(network: WalkNetwork, population: Population | gpd.GeoDataFrame,
                    centers: gpd.GeoDataFrame, *,
                    communities: gpd.GeoDataFrame | None = None,
                    max_minutes: float = DEFAULT_MAX_MINUTES,
                    progress: bool = False,
                    population_column: str | None = None) -> CoverageResult:
    """
    Walk times from every resident to the nearest center and to their own community's center.

    Parameters
    ----------
    network
        As for `compute_reach`: a WalkNetwork, or an osmnx/networkx graph converted by
        `as_walk_network`.
    population
        As for `compute_reach`: a Population, or a GeoDataFrame of cells converted by
        `as_population`. Results come back in its CRS.
    centers
        Service-center points with ``center_id`` (any CRS). With `communities`, a center belongs
        to the community in its ``community_id`` column, else to the one it stands in.
    communities
        Existing community polygons with ``community_id``, or None.
    max_minutes
        The service-circle limit.
    progress
        Show a progress bar over the network searches.
    population_column
        Column of counts when `population` is a GeoDataFrame; None detects it.

    Returns
    -------
    CoverageResult
        Units, centers and (with `communities`) communities with their walk times and
        coverage, in the population's CRS.

    Raises
    ------
    InputError
        For a limit out of range, a population that misses the network, an ambiguous
        population column, or centers naming unknown community ids.
    TypeError
        If `network` or `population` is of an unsupported type.
    """
    from covplan.inputs.network import as_walk_network
    from covplan.inputs.population import as_population

    network = as_walk_network(network)
    population = as_population(population, population_column=population_column)
    display = max_minutes * _DISPLAY_FACTOR
    reach = compute_reach(network, population, centers=centers, max_minutes=display,
                          node_candidates=False, progress=progress)
    cand = reach.candidates
    units = reach.units
    idx, minutes = reach.nearest()
    units["nearest_center_id"] = np.where(idx >= 0, cand["center_id"].to_numpy()[np.maximum(idx, 0)], None)
    units["minutes_nearest"] = minutes
    units["covered"] = minutes <= max_minutes

    within = reach.minutes.copy()
    within.data = (within.data <= max_minutes).astype("float64")
    pop_within = np.asarray(within.T @ units["pop"].to_numpy(dtype="float64")).round().astype("int64")
    centers_out = cand[["center_id", "node", "access_min", "geometry"]].copy()
    centers_out["pop_within"] = pop_within

    community_table = None
    if communities is not None:
        comm = communities.to_crs(network.crs)
        units["community_id"] = _assign_communities(units, comm).to_numpy()
        centers_work = centers.to_crs(network.crs).reset_index(drop=True)
        centers_out["community_id"] = _centers_community(centers_work, comm).to_numpy()
        own_center = (centers_out.dropna(subset=["community_id"])
                      .drop_duplicates("community_id").set_index("community_id")["center_id"])
        units["own_center_id"] = units["community_id"].map(own_center)
        col_of = pd.Series(np.arange(len(cand)), index=cand["center_id"])
        units["minutes_own"] = _lookup(reach.minutes, units["own_center_id"].map(col_of))
        units["covered_own"] = units["minutes_own"] <= max_minutes
        community_table = _community_table(comm, units, max_minutes)
    else:
        units["community_id"] = None
        units["own_center_id"] = None
        units["minutes_own"] = np.inf
        units["covered_own"] = False

    columns = ["unit_id", "cell_id", "pop", "community_id", "nearest_center_id", "minutes_nearest",
               "own_center_id", "minutes_own", "covered", "covered_own", "off_network", "geometry"]
    result = CoverageResult(
        units=units[columns].to_crs(population.crs),
        centers=centers_out.to_crs(population.crs),
        communities=None if community_table is None else community_table.to_crs(population.crs),
        max_minutes=float(max_minutes), walk_speed_kmh=network.walk_speed_kmh)
    s = result.summary()
    logger.info("Coverage: %d of %d people (%.1f %%) within %g min of %s",
                s["population_covered"], s["population_total"], 100 * s["coverage_share"],
                max_minutes, "the nearest center" if communities is None
                else "their own community's center")
    return result


def _lookup(matrix, columns: pd.Series) -> np.ndarray:
    """matrix[i, columns[i]] per row; inf where the column is missing or the entry absent."""
    cols = columns.to_numpy(dtype="float64")
    rows = np.flatnonzero(np.isfinite(cols))
    out = np.full(matrix.shape[0], np.inf)
    out[rows] = lookup(matrix, rows, cols[rows].astype("int64"))[0]
    return out


def _community_table(communities: gpd.GeoDataFrame, units: gpd.GeoDataFrame,
                     max_minutes: float) -> gpd.GeoDataFrame:
    u = units.dropna(subset=["community_id"])
    pop = u.groupby("community_id")["pop"].sum()
    within = u[u.covered_own].groupby("community_id")["pop"].sum()
    finite = u[np.isfinite(u.minutes_own)]
    mean = (finite.minutes_own * finite["pop"]).groupby(finite.community_id).sum() / \
        finite.groupby("community_id")["pop"].sum()
    worst = u.groupby("community_id")["minutes_own"].max()
    table = communities[["community_id", "geometry"]].copy()
    table["pop"] = table.community_id.map(pop).fillna(0).astype("int64")
    table["pop_within_own"] = table.community_id.map(within).fillna(0).astype("int64")
    table["share_within_own"] = np.where(table["pop"] > 0, table.pop_within_own / table["pop"].clip(lower=1), 1.0)
    table["mean_minutes_own"] = table.community_id.map(mean)
    table["max_minutes_own"] = table.community_id.map(worst)
    return table
