"""
Snapping points (population units, service centers) to the walking network.

A point joins its nearest network node by an access leg: the straight-line distance times a detour
factor, walked at the network's speed, counted in every travel time. Points farther than
`max_access_m` from any walkable way are off-network: reported with their population, never dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from covplan._validate import require_positive
from covplan.errors import InputError
from scipy.spatial import cKDTree

if TYPE_CHECKING:
    from covplan.inputs.network import WalkNetwork

logger = logging.getLogger(__name__)

DEFAULT_DETOUR_FACTOR = 1.3
DEFAULT_MAX_ACCESS_M = 500.0
# A component holding at least this share of the network's nodes is a real part of the city,
# not a stray island (a courtyard path, a mapping error).
MAJOR_COMPONENT_SHARE = 0.01


@dataclass(frozen=True, slots=True, eq=False)
class Snap:
    """Where each point joins the network. Arrays are aligned with the points passed in."""

    node: np.ndarray         # int64 node index, -1 when off-network
    access_m: np.ndarray     # float64 walked access-leg length (straight line x detour factor)
    straight_m: np.ndarray   # float64 straight-line distance to the node
    on_island: np.ndarray    # bool: snapped to a minor component because no major one is near
    detour_factor: float
    max_access_m: float

    @property
    def off_network(self) -> np.ndarray:
        """True where the point is farther than `max_access_m` from any walkable way."""
        return self.node < 0

    def access_min(self, walk_speed_kmh: float) -> np.ndarray:
        """Access-leg minutes at `walk_speed_kmh` (inf when off-network)."""
        minutes = self.access_m / (walk_speed_kmh * 1000.0 / 60.0)
        return np.where(self.off_network, np.inf, minutes)


def snap_points(network: WalkNetwork, x: np.ndarray, y: np.ndarray, *,
                detour_factor: float = DEFAULT_DETOUR_FACTOR,
                max_access_m: float = DEFAULT_MAX_ACCESS_M) -> Snap:
    """
    Snap points given in the network's CRS to network nodes.

    A point goes to the nearest node of a major component (one holding at least 1 % of the
    nodes) when that node is within `max_access_m`; only when none is does it join a nearer
    minor island, and it is flagged `on_island`. Farther than `max_access_m` from every node, it is
    off-network (`node == -1`).

    Parameters
    ----------
    x, y
        Coordinates in metres, in ``network.crs``.
    detour_factor
        Walked length of the access leg per metre of straight line (>= 1).
    max_access_m
        Largest straight-line distance from a point to the network that still counts as on it.
    """
    if float(detour_factor) < 1.0:
        msg = f"`detour_factor` must be at least 1 (a walk is never shorter than a straight line), got {detour_factor!r}."
        raise InputError(msg)
    require_positive(max_access_m, name="max_access_m")
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    points = np.column_stack([x, y])
    coords = np.column_stack([network.x, network.y])

    major = network.component_sizes[network.component] >= max(1, MAJOR_COMPONENT_SHARE * network.n_nodes)
    major |= network.component == 0
    major_idx = np.flatnonzero(major)
    dist_major, pos = cKDTree(coords[major_idx]).query(points, k=1)
    node = major_idx[pos].astype("int64")
    on_island = np.zeros(len(x), dtype=bool)

    far = dist_major > max_access_m
    if far.any() and len(major_idx) < network.n_nodes:
        dist_any, node_any = cKDTree(coords).query(points[far], k=1)
        use_island = dist_any <= max_access_m
        far_idx = np.flatnonzero(far)
        node[far_idx[use_island]] = node_any[use_island]
        dist_major[far_idx[use_island]] = dist_any[use_island]
        on_island[far_idx[use_island]] = True
    off = dist_major > max_access_m
    node[off] = -1
    return Snap(node=node, access_m=dist_major * float(detour_factor), straight_m=dist_major, on_island=on_island,
                detour_factor=float(detour_factor), max_access_m=float(max_access_m))
