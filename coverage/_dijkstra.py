"""
Bounded shortest paths from many sources with sparse output, region by region.

scipy's `dijkstra(limit=)` is compiled and exact but returns a dense sources x all-nodes array
and pays O(nodes) per source to set it up. A walk of `limit_m` never leaves the disc of radius
`limit_m` around its source, so we group sources into square tiles and run scipy on the subgraph
of nodes within `limit_m` of each tile only. Results are exact; memory and time follow the pairs
actually reached, not sources x nodes. No library offers a cut-off multi-source search with sparse
output on CSR arrays (igraph has no cut-off; networkx is per-source Python), hence this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from coverage._progress import progress_bar

# Sources per scipy call: bounds the dense block (sources x subgraph nodes) held at once.
_MAX_SOURCES_PER_CALL = 256


@dataclass(frozen=True, slots=True, eq=False)
class NodeReach:
    """Nodes reached from each source: row i is ``node[indptr[i]:indptr[i+1]]`` (sorted)."""

    sources: np.ndarray   # int64 node index of each row's source
    indptr: np.ndarray    # int64 (len(sources) + 1,)
    node: np.ndarray      # int64 reached node index
    dist_m: np.ndarray    # float64 network distance in metres (<= limit_m)
    limit_m: float

    @property
    def n_pairs(self) -> int:
        return int(self.indptr[-1])

    def to_csr(self, n_nodes: int) -> sp.csr_matrix:
        """Sources x nodes matrix of distances; entries are explicit, including zeros."""
        return sp.csr_matrix((self.dist_m, self.node, self.indptr),
                             shape=(len(self.sources), n_nodes))


def _tile_keys(x: np.ndarray, y: np.ndarray, x0: float, y0: float, size: float,
               ny: int) -> np.ndarray:
    ix = np.floor((x - x0) / size).astype("int64")
    iy = np.floor((y - y0) / size).astype("int64")
    return ix * ny + iy


def _ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``arange(start, start + count)`` for each pair, and the pair of each entry."""
    total = int(counts.sum())
    offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    positions = np.arange(total, dtype="int64") + offsets
    owner = np.repeat(np.arange(len(starts), dtype="int64"), counts)
    return positions, owner


def _gather_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry positions of CSR `rows` (a vectorised row gather) and the local row of each entry."""
    return _ranges(indptr[rows], indptr[rows + 1] - indptr[rows])


def bounded_distances(graph: sp.csr_matrix, x: np.ndarray, y: np.ndarray,
                      sources: np.ndarray, *, limit_m: float,
                      progress: bool = False) -> NodeReach:
    """
    Exact network distances from each source to every node within `limit_m`.

    Parameters
    ----------
    graph
        Nodes x nodes CSR matrix of arc lengths in metres (arc i -> j walkable); for the reverse
        direction pass its transpose.
    x, y
        Node coordinates in metres; straight-line distance must never exceed network distance.
    sources
        Node indices; duplicates are allowed and each gets its own row.
    limit_m
        Largest distance kept.
    """
    sources = np.asarray(sources, dtype="int64")
    n = graph.shape[0]
    if len(sources) == 0:
        return NodeReach(sources, np.zeros(1, "int64"), np.zeros(0, "int64"),
                         np.zeros(0, "float64"), float(limit_m))
    unique, inverse = np.unique(sources, return_inverse=True)
    tile = max(float(limit_m) / 2.0, 100.0)
    halo = int(np.ceil(limit_m / tile))
    x0, y0 = float(x.min()), float(y.min())
    ny = int(np.floor((y.max() - y0) / tile)) + 1
    node_keys = _tile_keys(x, y, x0, y0, tile, ny)
    order = np.argsort(node_keys, kind="stable")
    sorted_keys = node_keys[order]
    source_keys = node_keys[unique]
    tiles = np.unique(source_keys)
    by_tile = np.argsort(source_keys, kind="stable")
    tile_bounds = np.append(np.searchsorted(source_keys[by_tile], tiles), len(unique))

    local = np.full(n, -1, dtype="int64")
    row_order: list[np.ndarray] = []   # unique-source rows in the order they were computed
    row_counts: list[np.ndarray] = []
    nodes_out: list[np.ndarray] = []
    dist_out: list[np.ndarray] = []
    for t in progress_bar(range(len(tiles)), desc="walk times", progress=progress):
        ix, iy = divmod(int(tiles[t]), ny)
        spans = [np.arange(*np.searchsorted(sorted_keys, [kx * ny + max(iy - halo, 0),
                                                          kx * ny + min(iy + halo + 1, ny)]))
                 for kx in range(ix - halo, ix + halo + 1)]
        # Sorted, so each result row lists its nodes in ascending order without a sort.
        sub_nodes = np.sort(order[np.concatenate(spans)])
        local[sub_nodes] = np.arange(len(sub_nodes))
        positions, arc_rows = _gather_rows(graph.indptr, sub_nodes)
        heads = local[graph.indices[positions]]
        keep = heads >= 0
        sub = sp.csr_matrix((graph.data[positions[keep]], (arc_rows[keep], heads[keep])),
                            shape=(len(sub_nodes), len(sub_nodes)))
        members = by_tile[tile_bounds[t]:tile_bounds[t + 1]]
        for c in range(0, len(members), _MAX_SOURCES_PER_CALL):
            chunk = members[c:c + _MAX_SOURCES_PER_CALL]
            dist = dijkstra(sub, directed=True, indices=local[unique[chunk]], limit=limit_m)
            r, col = np.nonzero(np.isfinite(dist))   # row-major: grouped by row, columns ascending
            row_order.append(chunk)
            row_counts.append(np.bincount(r, minlength=len(chunk)))
            nodes_out.append(sub_nodes[col])
            dist_out.append(dist[r, col])
        local[sub_nodes] = -1

    computed = np.concatenate(row_order)
    counts_computed = np.concatenate(row_counts)
    start = np.empty(len(unique), dtype="int64")
    count = np.empty(len(unique), dtype="int64")
    start[computed] = np.cumsum(counts_computed) - counts_computed
    count[computed] = counts_computed
    # One gather puts the rows in the order of the requested sources (repeats included).
    positions, _ = _ranges(start[inverse], count[inverse])
    indptr = np.concatenate([[0], np.cumsum(count[inverse])]).astype("int64")
    node = np.concatenate(nodes_out)
    dist_m = np.concatenate(dist_out)
    return NodeReach(sources=sources, indptr=indptr, node=node[positions],
                     dist_m=dist_m[positions], limit_m=float(limit_m))
