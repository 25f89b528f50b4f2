"""
Bounded shortest paths from many sources with sparse output.

scipy's `dijkstra(limit=)` is compiled and exact, but it returns a dense sources x nodes array
and explores every node of an unsimplified street graph. This module gets the same answer with
far less work, in four steps.

1. **Cut the graph at its junctions** (`_contract`). Most nodes of an OSM walking network have
   exactly two neighbours: they only bend a street. Every other node is a *junction* (dead
   ends included), and so is one node of each cycle without any junction and one node in every
   run of `_MAX_CHAIN` such nodes. Between junctions the others form *chains*
   ``a - w1 - ... - wm - b``. The *junction graph* keeps the junctions, the arcs between them
   and, per chain, one arc ``a -> b`` (``b -> a``) of the chain's length where all its arcs run
   that way; parallel arcs keep the shortest. Each chain node keeps its distances along the
   chain from and to both ends (infinite where a one-way arc is in the way).
2. **Search the junction graph** (`_junction_searches`). A walk from a chain node ``s`` leaves
   its chain at ``a`` or ``b``, so for every junction ``j``
   ``d(s, j) = min(s->a + D(a, j), s->b + D(b, j))``, where ``D`` comes from scipy's
   `dijkstra(limit=)` on the junction graph (a junction source is its own ``a = b``). A third of
   those searches are even skipped: ``D(a, .)`` is the minimum over the arcs ``a -> u`` of
   ``len(a, u) + D(u, .)`` when every ``u`` is searched.
3. **Expand to every node** (`_group`). A walk reaches a chain node ``w`` of chain ``c - e``
   through ``c`` or ``e``: ``d(s, w) = min(d(s, c) + c->w, d(s, e) + e->w)``, or along the
   chain when ``s`` lies on it. A group of nearby sources shares a *domain*, the nodes any of
   them reaches, ascending by node index; the formula is evaluated on the whole group x domain
   array in a few numpy operations and the entries within `limit_m` are read out row by row,
   which lists each row's nodes already ascending (no sort of the pairs). Nearby sources reach
   nearly the same nodes, so most of the array is kept: the work follows the pairs reached.
4. **Tiles and threads** (`bounded_distances`). A walk of `limit_m` stays within `limit_m` of
   its source in a straight line, so the sources are cut into square tiles that each search
   only the junctions within reach; tiles run on a thread pool (scipy's dijkstra and numpy's
   large operations release the GIL) and the rows are put in the requested order at the end.
   Nothing depends on which thread did what.

The result is that of `dijkstra(limit=)` on the whole graph: the same pairs, and distances that
agree to rounding (sums are taken in another order; ~1e-14 relative on São Paulo), which could
only tell for a distance within rounding of `limit_m`. Memory follows the pairs reached: the
output, about as much again while the rows are put in order, and per-thread scratch arrays.
No library offers a cut-off multi-source search with sparse output on CSR arrays (igraph has no
cut-off; networkx works per source in Python), hence this module.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from covplan._parallel import usable_cpus
from covplan._progress import progress_bar
from scipy.sparse.csgraph import connected_components, dijkstra

# Most nodes a chain keeps: a chain source walks to every node of its chain and a domain takes
# whole chains, so short chains keep that work small. Longer runs get junctions cut into them.
_MAX_CHAIN = 64
# Sources per group, the rows of one dense array: more rows share the cost of each numpy call,
# fewer keep the domain close to what each source reaches.
_GROUP = 96
# Side of a tile, in limits: larger tiles search more junctions per source, smaller ones
# search the junctions near their edges over and over.
_TILE_FACTOR = 1.0


@dataclass(frozen=True, slots=True, eq=False)
class NodeReach:
    """Nodes reached from each source: row i is ``node[indptr[i]:indptr[i+1]]`` (sorted)."""

    sources: np.ndarray   # int64 node index of each row's source
    indptr: np.ndarray    # int64 (len(sources) + 1,)
    node: np.ndarray      # reached node index (int32 where every index fits, else int64)
    dist_m: np.ndarray    # float64 network distance in metres (<= limit_m)
    limit_m: float

    @property
    def n_pairs(self) -> int:
        return int(self.indptr[-1])

    def to_csr(self, n_nodes: int) -> sp.csr_matrix:
        """Sources x nodes matrix of distances; entries are explicit, including zeros."""
        return sp.csr_matrix((self.dist_m, self.node, self.indptr),
                             shape=(len(self.sources), n_nodes))


def _ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``arange(start, start + count)`` for each pair, and the pair of each entry."""
    total = int(counts.sum())
    offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    positions = np.arange(total, dtype="int64") + offsets
    owner = np.repeat(np.arange(len(starts), dtype="int64"), counts)
    return positions, owner


def gather_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry positions of CSR `rows` (a vectorised row gather) and the local row of each entry."""
    return _ranges(indptr[rows], indptr[rows + 1] - indptr[rows])


def bounded_distances(graph: sp.csr_matrix, x: np.ndarray, y: np.ndarray,
                      sources: np.ndarray, *, limit_m: float, progress: bool = False,
                      workers: int | None = None) -> NodeReach:
    """
    Exact network distances from each source to every node within `limit_m`.

    Parameters
    ----------
    graph
        Nodes x nodes CSR matrix of arc lengths in metres (arc i -> j walkable); for the reverse
        direction pass its transpose. Read as scipy's dijkstra reads it: explicit zeros are
        arcs, repeated entries count as their minimum.
    x, y
        Node coordinates in metres; straight-line distance must never exceed network distance.
    sources
        Node indices; duplicates are allowed and each gets its own row.
    limit_m
        Largest distance kept (``inf``: everything reachable).
    progress
        Show a progress bar over the tiles.
    workers
        Threads; ``min(2, usable_cpus())`` (the CPUs this process may use) by default. The result never depends on it.

    Returns
    -------
    NodeReach
        One row per source, in the order given.
    """
    sources = np.asarray(sources, dtype="int64")
    limit_m = float(limit_m)
    if len(sources) == 0:
        return NodeReach(sources, np.zeros(1, "int64"), np.zeros(0, _index_dtype(graph.shape[0])),
                         np.zeros(0, "float64"), limit_m)
    if not limit_m >= 0:
        msg = f"limit_m must be >= 0, got {limit_m}"
        raise ValueError(msg)
    # Entries are kept when <= bound: with no limit that still leaves out the unreachable (inf).
    bound = min(limit_m, float(np.finfo("float64").max))
    graph = sp.csr_matrix(graph)
    net = _contract(graph)
    unique, inverse = np.unique(sources, return_inverse=True)
    tiles = _tiles(net, np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64"), unique,
                   limit_m)
    workers = max(1, workers or min(2, usable_cpus()))
    workspaces: dict[int, _Workspace] = {}

    def run(tile: _Tile) -> list[tuple]:
        ws = workspaces.get(threading.get_ident())
        if ws is None:
            ws = workspaces[threading.get_ident()] = _Workspace(net.node_dtype)
        return _run_tile(net, tile, bound, ws)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        # map() yields in submission order, whichever thread finishes first.
        done = progress_bar(pool.map(run, tiles), desc="walk times", total=len(tiles),
                            progress=progress)
        groups = [group for tile_groups in done for group in tile_groups]
        workspaces.clear()   # the scratch arrays go; result blocks live on in `groups`
        return _assemble(sources, unique, inverse, groups, limit_m, pool, workers)


# ---------------------------------------------------------------------------------------------
# Step 1: cut the graph at its junctions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class _Contracted:
    """
    The graph cut at its junctions (see the module docstring).

    Per node ``v``: ``chain`` (-1 for a junction) and ``pos`` (1..m along it); the junction
    indices of the chain's ends ``end_a``/``end_b`` (a junction's own index); the distances along
    the chain ``from_a`` (a -> v), ``from_b`` (b -> v), ``to_a`` (v -> a) and ``to_b`` (v -> b)
    (0 for a junction); and, for walks between two nodes of one chain, the sums ``fwd``/``bwd``
    of the finite a -> b / b -> a arcs before ``v`` with the count of missing arcs among them,
    ``fwd_gap``/``bwd_gap``.
    """

    junction_node: np.ndarray    # int64 node of each junction, ascending
    junction_graph: sp.csr_matrix
    chain: np.ndarray
    pos: np.ndarray
    end_a: np.ndarray
    end_b: np.ndarray
    from_a: np.ndarray
    from_b: np.ndarray
    to_a: np.ndarray
    to_b: np.ndarray
    fwd: np.ndarray
    fwd_gap: np.ndarray
    bwd: np.ndarray
    bwd_gap: np.ndarray
    chain_ptr: np.ndarray        # chain c, in order: chain_node[chain_ptr[c]:chain_ptr[c + 1]]
    chain_node: np.ndarray
    incident_ptr: np.ndarray     # chains ending at junction j: incident[incident_ptr[j]:...[j+1]]
    incident: np.ndarray

    @property
    def node_dtype(self) -> np.dtype:
        return _index_dtype(len(self.chain))


def _index_dtype(n_nodes: int) -> np.dtype:
    """int32 for node indices where they fit (any city), else int64: less memory traffic."""
    return np.dtype("int32") if n_nodes < 2**31 else np.dtype("int64")


def _contract(graph: sp.csr_matrix) -> _Contracted:
    """Cut `graph` at its junctions (see `_Contracted`)."""
    n = graph.shape[0]
    keys, lengths = _canonical_arcs(graph)
    junction, neighbours = _junctions(keys // n, keys % n, n)
    order, ptr, a, b = _chains(junction, neighbours)
    if len(ptr) > 1 and np.diff(ptr).max() > _MAX_CHAIN:
        # Cut long chains: every (_MAX_CHAIN + 1)-th node becomes a junction.
        rank = np.arange(len(order)) - np.repeat(ptr[:-1], np.diff(ptr))
        junction[order[rank % (_MAX_CHAIN + 1) == _MAX_CHAIN]] = True
        order, ptr, a, b = _chains(junction, neighbours)
    junction_node = np.flatnonzero(junction).astype("int64")
    jindex = np.full(n, -1, dtype="int64")
    jindex[junction_node] = np.arange(len(junction_node))
    along = _along_chains(keys, lengths, n, order, ptr, a, b)

    m = np.diff(ptr)
    chain_of = np.repeat(np.arange(len(m)), m)
    # Node k of the chain order (position q = 1..m of its chain) lies between arcs q-1 and q.
    before = np.arange(len(order)) + chain_of

    def per_node(chain_values: np.ndarray, junction_values: np.ndarray | float) -> np.ndarray:
        """One value per node: `chain_values` for the chain nodes (in chain order)."""
        out = np.empty(n, dtype=chain_values.dtype)
        out[:] = junction_values
        out[order] = chain_values
        return out

    fwd, fwd_gap = along["fwd"][before], along["fwd_gap"][before]
    bwd, bwd_gap = along["bwd"][before], along["bwd_gap"][before]
    nodes = {"chain": per_node(chain_of, -1),
             "pos": per_node(np.arange(len(order)) - ptr[chain_of] + 1, 0),
             "end_a": per_node(jindex[a][chain_of], jindex),
             "end_b": per_node(jindex[b][chain_of], jindex),
             "from_a": per_node(np.where(fwd_gap == 0, fwd, np.inf), 0.0),
             "from_b": per_node(along["from_b"][before + 1], 0.0),
             "to_a": per_node(np.where(bwd_gap == 0, bwd, np.inf), 0.0),
             "to_b": per_node(along["to_b"][before + 1], 0.0),
             "fwd": per_node(fwd, 0.0), "fwd_gap": per_node(fwd_gap, 0),
             "bwd": per_node(bwd, 0.0), "bwd_gap": per_node(bwd_gap, 0)}

    first_arc = ptr[:-1] + np.arange(len(m))
    ways = (jindex[a], jindex[b], along["to_b"][first_arc], along["from_b"][first_arc])
    direct = junction[keys // n] & junction[keys % n]
    jgraph = _junction_graph(jindex[keys[direct] // n], jindex[keys[direct] % n],
                             lengths[direct], *ways, len(junction_node))
    # Chains ending at each junction (a loop chain, a == b, once).
    ends = np.concatenate([jindex[a], jindex[b][a != b]])
    which = np.concatenate([np.arange(len(m)), np.flatnonzero(a != b)])
    by_end = np.lexsort((which, ends))
    incident_ptr = np.searchsorted(ends[by_end], np.arange(len(junction_node) + 1))
    return _Contracted(junction_node, jgraph, **nodes, chain_ptr=ptr, chain_node=order,
                       incident_ptr=incident_ptr, incident=which[by_end])


def _canonical_arcs(graph: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """
    Arc keys ``tail * n + head`` (ascending, unique) and lengths, as scipy's dijkstra reads the
    matrix: explicit zeros are arcs, repeated entries keep their minimum, self-loops never
    shorten a path (dropped).
    """
    n = graph.shape[0]
    tail = np.repeat(np.arange(n, dtype="int64"), np.diff(graph.indptr))
    head = np.asarray(graph.indices, dtype="int64")
    length = np.asarray(graph.data, dtype="float64")
    keep = tail != head
    key, length = tail[keep] * n + head[keep], length[keep]
    if graph.has_canonical_format:   # rows sorted, no repeats: the keys ascend already
        return key, length
    order = np.lexsort((length, key))
    key, length = key[order], length[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    return key[first], length[first]


def _junctions(tail: np.ndarray, head: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """
    Which nodes are junctions, and the two neighbours of every other node (-1 rows for
    junctions). Degree counts distinct neighbours whatever the arcs' directions; a cycle of
    degree-2 nodes gets its smallest node as a junction.
    """
    links = np.unique(np.minimum(tail, head) * n + np.maximum(tail, head))
    lu, lv = links // n, links % n
    degree = np.bincount(lu, minlength=n) + np.bincount(lv, minlength=n)
    junction = degree != 2
    side = np.concatenate([lu, lv])
    other = np.concatenate([lv, lu])
    by = np.argsort(side, kind="stable")
    side, other = side[by], other[by]
    slot = np.arange(len(side)) - np.searchsorted(side, side)
    two = degree[side] == 2
    neighbours = np.full((n, 2), -1, dtype="int64")
    neighbours[side[two], slot[two]] = other[two]

    inner = ~junction[lu] & ~junction[lv]
    if inner.any():
        link = sp.csr_matrix((np.ones(int(inner.sum())), (lu[inner], lv[inner])), shape=(n, n))
        _, label = connected_components(link, directed=False)
        chain_nodes = np.flatnonzero(~junction)
        inner_degree = np.bincount(lu[inner], minlength=n) + np.bincount(lv[inner], minlength=n)
        has_end = np.zeros(label.max() + 1, dtype=bool)
        has_end[label[chain_nodes[inner_degree[chain_nodes] < 2]]] = True
        cycle = chain_nodes[~has_end[label[chain_nodes]]]   # ascending
        _, first = np.unique(label[cycle], return_index=True)
        junction[cycle[first]] = True
    return junction, neighbours


def _chains(junction: np.ndarray,
            neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """
    The chains between junctions: their nodes in walking order (chain after chain), the offset
    of each chain (plus the total), and each chain's end junctions ``a`` (before its first
    node) and ``b`` (after its last).
    """
    n = len(junction)
    # Links between two chain nodes, once each (from the smaller node).
    u = np.tile(np.arange(n), 2)
    v = neighbours.T.ravel()
    once = ~junction[u] & (v > u) & ~junction[np.maximum(v, 0)]
    order, ptr = _paths(~junction, u[once], v[once])
    first, last = order[ptr[:-1]], order[ptr[1:] - 1]
    single = ptr[1:] - ptr[:-1] == 1
    second = order[np.minimum(ptr[:-1] + 1, len(order) - 1)]
    before_last = order[np.maximum(ptr[1:] - 2, 0)]
    # The end beyond a chain's first node is its neighbour other than the second node.
    a = np.where(single | (neighbours[first, 0] != second), neighbours[first, 0],
                 neighbours[first, 1])
    b = np.where(single | (neighbours[last, 0] == before_last), neighbours[last, 1],
                 neighbours[last, 0])
    return order, ptr, a, b


def _paths(on_path: np.ndarray, tail: np.ndarray, head: np.ndarray) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """
    Order the `on_path` nodes path by path, from one end to the other; `tail`/`head` hold each
    link between them once, and every component must be a path. Returns the nodes and the
    offset of each path (plus the total).
    """
    n = len(on_path)
    nodes = np.flatnonzero(on_path)
    if len(nodes) == 0:
        return nodes.astype("int64"), np.zeros(1, dtype="int64")
    link = sp.csr_matrix((np.ones(len(tail)), (tail, head)), shape=(n + 1, n + 1))
    _, label = connected_components(link, directed=False)
    degree = np.bincount(tail, minlength=n + 1) + np.bincount(head, minlength=n + 1)
    ends = nodes[degree[nodes] <= 1]
    # One end of each path (its smallest) hangs from an extra root node n: hop counts from the
    # root then number each path's nodes from that end.
    _, first = np.unique(label[ends], return_index=True)
    starts = ends[first]
    rooted = sp.csr_matrix((np.ones(len(tail) + len(starts)),
                            (np.concatenate([tail, np.full(len(starts), n)]),
                             np.concatenate([head, starts]))), shape=(n + 1, n + 1))
    hops = dijkstra(rooted, directed=False, indices=n, unweighted=True)
    order = nodes[np.lexsort((hops[nodes], label[nodes]))]
    new_path = np.ones(len(order), dtype=bool)
    new_path[1:] = label[order[1:]] != label[order[:-1]]
    return order.astype("int64"), np.append(np.flatnonzero(new_path), len(order))


def _along_chains(keys: np.ndarray, lengths: np.ndarray, n: int, order: np.ndarray,
                  ptr: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """
    Sums along each chain ``a, w1..wm, b``, per arc ``i`` (``m + 1`` arcs, chain after chain):
    ``fwd``/``bwd`` sum the finite a -> b / b -> a arcs up to arc ``i`` with the count of
    missing ones, ``fwd_gap``/``bwd_gap``; ``to_b`` is the walk from arc ``i``'s tail to ``b``
    and ``from_b`` from ``b`` back to it (inf when blocked).
    """
    m = np.diff(ptr)
    n_chains = len(m)
    arc_ptr = ptr + np.arange(n_chains + 1)
    seq_ptr = ptr + 2 * np.arange(n_chains + 1)
    # The walk of each chain, ends included; its arcs join consecutive nodes.
    walk = np.empty(seq_ptr[-1], dtype="int64")
    walk[np.arange(len(order)) + 2 * np.repeat(np.arange(n_chains), m) + 1] = order
    walk[seq_ptr[:-1]] = a
    walk[seq_ptr[1:] - 1] = b
    tail_at = np.arange(arc_ptr[-1]) + np.repeat(np.arange(n_chains), m + 1)
    u, v = walk[tail_at], walk[tail_at + 1]
    forward = _arc_length(keys, lengths, u * n + v)
    backward = _arc_length(keys, lengths, v * n + u)
    return {"fwd": _segment_cumsum(np.where(np.isinf(forward), 0.0, forward), arc_ptr),
            "bwd": _segment_cumsum(np.where(np.isinf(backward), 0.0, backward), arc_ptr),
            "fwd_gap": _segment_count(np.isinf(forward), arc_ptr),
            "bwd_gap": _segment_count(np.isinf(backward), arc_ptr),
            "to_b": _segment_cumsum(forward, arc_ptr, reverse=True),
            "from_b": _segment_cumsum(backward, arc_ptr, reverse=True)}


def _arc_length(keys: np.ndarray, lengths: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Length of each queried arc key; inf where there is no such arc."""
    if len(keys) == 0:
        return np.full(len(query), np.inf)
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[at] == query, lengths[at], np.inf)


def _segment_cumsum(values: np.ndarray, ptr: np.ndarray, *, reverse: bool = False) -> np.ndarray:
    """
    Inclusive running sums within each segment ``values[ptr[k]:ptr[k+1]]``, adding one term
    after another from the segment's start (its end with `reverse`).

    A global cumsum minus each segment's base would lose short distances to cancellation;
    segments are padded instead into one 2-D array per power-of-two length and summed along
    rows.
    """
    out = np.empty_like(values)
    lengths = np.diff(ptr)
    width_class = np.ceil(np.log2(np.maximum(lengths, 1))).astype("int64")
    for k in np.unique(width_class):
        seg = np.flatnonzero(width_class == k)
        cols = np.arange(1 << int(k))
        valid = cols[None, :] < lengths[seg, None]
        if reverse:   # the padding comes first: adding zeros before the terms changes nothing
            at = ptr[seg + 1, None] - 1 - cols[None, :]
        else:
            at = ptr[seg, None] + cols[None, :]
        block = np.where(valid, values[np.where(valid, at, 0)], 0.0)
        out[at[valid]] = np.cumsum(block, axis=1)[valid]
    return out


def _segment_count(flags: np.ndarray, ptr: np.ndarray) -> np.ndarray:
    """Inclusive running count of `flags` within each segment (integers: exact)."""
    total = np.cumsum(flags, dtype="int64")
    return total - np.repeat(total[ptr[:-1]] - flags[ptr[:-1]], np.diff(ptr))


def _junction_graph(tail: np.ndarray, head: np.ndarray, length: np.ndarray, a: np.ndarray,
                    b: np.ndarray, a_to_b: np.ndarray, b_to_a: np.ndarray,
                    n_junctions: int) -> sp.csr_matrix:
    """The arcs between junctions plus each passable chain direction; the shortest of
    parallel arcs (explicit zero lengths stay arcs, as scipy reads them)."""
    tail = np.concatenate([tail, a, b])
    head = np.concatenate([head, b, a])
    length = np.concatenate([length, a_to_b, b_to_a])
    keep = np.isfinite(length) & (tail != head)
    key, length = tail[keep] * n_junctions + head[keep], length[keep]
    order = np.lexsort((length, key))
    key, length = key[order], length[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key, length = key[first], length[first]
    indptr = np.searchsorted(key, np.arange(n_junctions + 1) * n_junctions)
    return sp.csr_matrix((length, key % n_junctions, indptr), shape=(n_junctions, n_junctions))


# ---------------------------------------------------------------------------------------------
# Step 2: tiles and junction searches
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class _Tile:
    """A tile's sources (node indices, with coordinates) and the junctions within reach."""

    sources: np.ndarray
    x: np.ndarray
    y: np.ndarray
    junctions: np.ndarray        # junction indices, ascending


def _tiles(net: _Contracted, x: np.ndarray, y: np.ndarray, sources: np.ndarray,
           limit_m: float) -> list[_Tile]:
    """Square tiles of `sources`, each with the junctions in it and its 8 neighbours (a walk
    of `limit_m` cannot leave them); a single tile when there is no limit."""
    jx, jy = x[net.junction_node], y[net.junction_node]
    if np.isfinite(limit_m):
        size = max(limit_m * _TILE_FACTOR, 100.0)
        halo = math.ceil(limit_m / size)
        x0, y0 = float(x.min()), float(y.min())
        ny = int((y.max() - y0) // size) + 1
        junction_key = _tile_keys(jx, jy, x0, y0, size, ny)
        source_key = _tile_keys(x[sources], y[sources], x0, y0, size, ny)
    else:
        halo, ny = 0, 1
        junction_key = np.zeros(len(jx), dtype="int64")
        source_key = np.zeros(len(sources), dtype="int64")
    by_key = np.argsort(junction_key, kind="stable")
    sorted_keys = junction_key[by_key]
    by_tile = np.argsort(source_key, kind="stable")
    keys, starts = np.unique(source_key[by_tile], return_index=True)
    tiles = []
    for key, members in zip(keys.tolist(), np.split(sources[by_tile], starts[1:])):
        ix, iy = divmod(key, ny)
        spans = [np.arange(*np.searchsorted(sorted_keys, [kx * ny + max(iy - halo, 0),
                                                         kx * ny + min(iy + halo + 1, ny)]))
                 for kx in range(ix - halo, ix + halo + 1)]
        tiles.append(_Tile(members, x[members], y[members],
                           np.sort(by_key[np.concatenate(spans)])))
    return tiles


def _tile_keys(x: np.ndarray, y: np.ndarray, x0: float, y0: float, size: float,
               ny: int) -> np.ndarray:
    ix = np.floor((x - x0) / size).astype("int64")
    iy = np.floor((y - y0) / size).astype("int64")
    return ix * ny + iy


def _run_tile(net: _Contracted, tile: _Tile, limit_m: float, ws: _Workspace) -> list[tuple]:
    """
    The reached nodes of the tile's sources, group by group: ``(sources, counts, nodes,
    distances)`` with each group's rows one after another (see `_group`).
    """
    # Sources along a Z-order curve, so that consecutive ones (a group) lie close together.
    s = tile.sources[np.argsort(_z_order(tile.x, tile.y), kind="stable")]
    graph = _local_graph(net, tile.junctions)
    ends_a = _local_index(tile.junctions, net.end_a[s], -1)
    ends_b = _local_index(tile.junctions, net.end_b[s], -1)
    # An end outside the tile lies beyond the limit: leaving through it costs inf.
    to_a = np.where(ends_a >= 0, net.to_a[s], np.inf)
    to_b = np.where(ends_b >= 0, net.to_b[s], np.inf)
    need = np.unique(np.concatenate([ends_a[np.isfinite(to_a)], ends_b[np.isfinite(to_b)]]))
    found = _junction_searches(graph, need, limit_m)
    ra = np.maximum(_local_index(need, ends_a, 0), 0)   # an unused row, added to inf
    rb = np.maximum(_local_index(need, ends_b, 0), 0)
    nodes = _TileNodes.build(net, tile)
    along_row, along_node, along_length = _along_own_chain(net, s, limit_m)
    along_at = np.searchsorted(nodes.node, along_node)
    splits = np.searchsorted(along_row, np.arange(0, len(s) + _GROUP, _GROUP))
    column = np.full(nodes.n_junctions + 1, -1, dtype="intp")   # see `_group`
    out = []
    for k, g in enumerate(range(0, len(s), _GROUP)):
        rows, along = slice(g, g + _GROUP), slice(splits[k], splits[k + 1])
        reached, near = _near_junctions(found, ra[rows], rb[rows], to_a[rows], to_b[rows],
                                        limit_m, ws)
        out.append((s[rows], *_group(nodes, reached, near, column, along_row[along] - g,
                                     along_at[along], along_length[along], limit_m, ws)))
    return out


def _z_order(x: np.ndarray, y: np.ndarray, bits: int = 4) -> np.ndarray:
    """Morton (Z-order) key of each point on a 2**bits square grid over the points' extent."""
    cells = 1 << bits
    span = max(float(np.ptp(x)), float(np.ptp(y)), 1e-9)
    ix = np.minimum((x - x.min()) / span * cells, cells - 1).astype("int64")
    iy = np.minimum((y - y.min()) / span * cells, cells - 1).astype("int64")
    key = np.zeros(len(x), dtype="int64")
    for bit in range(bits):
        key |= ((ix >> bit) & 1) << (2 * bit + 1) | ((iy >> bit) & 1) << (2 * bit)
    return key


def _local_graph(net: _Contracted, junctions: np.ndarray) -> sp.csr_matrix:
    """The junction graph among `junctions` (ascending junction indices), renumbered."""
    g = net.junction_graph
    positions, rows = gather_rows(g.indptr, junctions)
    heads = _local_index(junctions, g.indices[positions], -1)
    inside = heads >= 0
    counts = np.bincount(rows[inside], minlength=len(junctions))
    return sp.csr_matrix((g.data[positions[inside]], heads[inside],
                          np.concatenate([[0], np.cumsum(counts)])),
                         shape=(len(junctions), len(junctions)))


def _local_index(sorted_values: np.ndarray, query: np.ndarray, missing: int) -> np.ndarray:
    """Position of each query in `sorted_values`, or `missing` where absent."""
    at = np.searchsorted(sorted_values, query)
    found = at < len(sorted_values)
    found[found] = sorted_values[at[found]] == query[found]
    return np.where(found, at, missing)


def _junction_searches(graph: sp.csr_matrix, need: np.ndarray, limit_m: float) -> np.ndarray:
    """
    Distances within `limit_m` from each `need` junction (rows) to every junction of `graph`.

    scipy searches from some of them only. A junction whose successors all have rows gets
    ``D(a, .) = min over arcs a -> u of (len(a, u) + D(u, .))``, exact wherever ``D(a, .)`` is
    within the limit (the rest of such a path starts at ``u`` and is shorter still); sums past
    the limit are never kept. Returns one all-inf row when `need` is empty.
    """
    if len(need) == 0:
        return np.full((1, graph.shape[0]), np.inf)
    derived = _derivable(graph, need)
    found = np.empty((len(need), graph.shape[0]))
    found[~derived] = dijkstra(graph, directed=True, indices=need[~derived], limit=limit_m)
    rows = np.flatnonzero(derived)
    first, count = graph.indptr[need[rows]], np.diff(graph.indptr)[need[rows]]
    found[rows] = np.inf
    for k in range(int(count.max(initial=0))):   # the k-th successor of each derived junction
        some = count > k
        arc = first[some] + k
        via = found[np.searchsorted(need, graph.indices[arc])]
        via += graph.data[arc][:, None]
        found[rows[some]] = np.minimum(found[rows[some]], via)
    found[rows, need[rows]] = 0.0
    return found


def _derivable(graph: sp.csr_matrix, need: np.ndarray, rounds: int = 3) -> np.ndarray:
    """
    Which `need` junctions to derive from their successors (boolean over `need`): only those
    whose successors are all in `need`, never two joined by an arc, preferring few successors.
    A few rounds of picking candidates that come first among their candidate neighbours in that
    order (Luby's independent set, made deterministic) come close to a maximal set.
    """
    n = graph.shape[0]
    out_degree = np.diff(graph.indptr)
    tails = np.repeat(np.arange(n), out_degree)
    in_need = np.zeros(n, dtype=bool)
    in_need[need] = True
    candidate = in_need.copy()
    candidate[tails[~in_need[graph.indices]]] = False
    rank = out_degree.astype("int64") * n + np.arange(n)
    u = np.concatenate([tails, graph.indices])   # both directions of every arc
    v = np.concatenate([graph.indices, tails])
    chosen = np.zeros(n, dtype=bool)
    for _ in range(rounds):
        live = candidate[u] & candidate[v]
        lowest = np.full(n, np.iinfo("int64").max)
        np.minimum.at(lowest, u[live], rank[v[live]])
        pick = candidate & (rank < lowest)
        if not pick.any():
            break
        chosen |= pick
        candidate &= ~pick
        candidate[v[pick[u]]] = False
    return chosen[need]


def _near_junctions(found: np.ndarray, ra: np.ndarray, rb: np.ndarray, to_a: np.ndarray,
                    to_b: np.ndarray, limit_m: float,
                    ws: _Workspace) -> tuple[np.ndarray, np.ndarray]:
    """
    A group's junction distances ``min(s->a + D(a, j), s->b + D(b, j))``: the tile junctions
    its sources' ends reach (a superset of what the sources reach), and the group x those
    junctions array, plus a last inf column that stands for ends out of reach.
    """
    used = np.zeros(len(found), dtype=bool)
    used[ra] = True
    used[rb] = True
    # (Array methods rather than numpy's module functions throughout the per-group code:
    # fewer Python-level calls, which matters when allocations are traced, as in benchmarks.)
    rows = used.nonzero()[0]             # each searched end once
    searched = found.take(rows, axis=0, out=ws.scratch("searched", (len(rows), found.shape[1])))
    reached = (np.minimum.reduce(searched, axis=0) <= limit_m).nonzero()[0]
    searched = searched.take(reached, axis=1, mode="clip",
                             out=ws.scratch("searched_reached", (len(rows), len(reached))))
    near = ws.scratch("near", (len(ra), len(reached) + 1))
    searched.take(rows.searchsorted(ra), axis=0, out=near[:, :-1])
    near[:, :-1] += to_a[:, None]
    via_b = searched.take(rows.searchsorted(rb), axis=0,
                          out=ws.scratch("via_b", (len(rb), len(reached))))
    via_b += to_b[:, None]
    np.minimum(near[:, :-1], via_b, out=near[:, :-1])
    near[:, -1] = np.inf
    return reached, near


def _along_own_chain(net: _Contracted, sources: np.ndarray,
                     limit_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Walks along the chain from each chain source to the nodes of its chain, within the limit:
    rows (ascending), target nodes and lengths. Prefix sums of the finite arcs give the length
    between two positions; a missing arc between them (a one-way street) blocks the walk.
    """
    row = np.flatnonzero(net.chain[sources] >= 0)
    positions, owner = gather_rows(net.chain_ptr, net.chain[sources[row]])
    w = net.chain_node[positions]
    s = sources[row][owner]
    forward = np.where(net.fwd_gap[w] == net.fwd_gap[s], net.fwd[w] - net.fwd[s], np.inf)
    backward = np.where(net.bwd_gap[w] == net.bwd_gap[s], net.bwd[s] - net.bwd[w], np.inf)
    length = np.where(net.pos[w] > net.pos[s], forward, np.where(w == s, 0.0, backward))
    keep = length <= limit_m
    return row[owner][keep], w[keep], length[keep]


# ---------------------------------------------------------------------------------------------
# Step 3: expand to every node, a group of sources at a time
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class _TileNodes:
    """
    Every node a walk from the tile can reach, ascending: the tile's junctions and the nodes of
    the chains ending at them or holding a tile source. Per node, its two ways in: the local
    index of each chain end (``n_junctions`` where that end is outside the tile) and the
    distance from that end along the chain (a junction is its own end, at 0).
    """

    node: np.ndarray
    ends: np.ndarray             # (2, n): end a, end b
    offsets: np.ndarray          # (2, n): a -> node, b -> node
    n_junctions: int

    @classmethod
    def build(cls, net: _Contracted, tile: _Tile) -> _TileNodes:
        incident, _ = gather_rows(net.incident_ptr, tile.junctions)
        chains = np.unique(np.concatenate([net.incident[incident], net.chain[tile.sources]]))
        positions, _ = gather_rows(net.chain_ptr, chains[chains >= 0])
        node = np.sort(np.concatenate([net.junction_node[tile.junctions],
                                       net.chain_node[positions]]))
        n_sub = len(tile.junctions)
        ends = np.stack([_local_index(tile.junctions, net.end_a[node], n_sub),
                         _local_index(tile.junctions, net.end_b[node], n_sub)])
        return cls(node.astype(net.node_dtype), ends,
                   np.stack([net.from_a[node], net.from_b[node]]), n_sub)


def _group(nodes: _TileNodes, reached: np.ndarray, near: np.ndarray, column: np.ndarray,
           along_row: np.ndarray, along_at: np.ndarray, along_length: np.ndarray,
           limit_m: float, ws: _Workspace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Nodes within `limit_m` of a group of nearby sources.

    `near` holds the group's distances to the tile junctions `reached`, then an inf column;
    ``along_*`` the walks along their own chains (row, position among the tile's nodes,
    length). `column` is an all -1 scratch array over the tile junctions and one more slot,
    and is left so. Returns each source's count of reached nodes, then the reached nodes
    (ascending within each source) and their distances, source after source.
    """
    column[reached] = np.arange(len(reached))
    ways = column[nodes.ends]        # column of each way in; -1 reads the inf column
    column[reached] = -1
    # The domain: the nodes some source of the group reaches through an end (from the group's
    # nearest distance to that end) or along its own chain.
    nearest = np.minimum.reduce(near, axis=0)[ways]
    nearest += nodes.offsets
    inside = np.minimum(nearest[0], nearest[1]) <= limit_m
    inside[along_at] = True
    inside = inside.nonzero()[0]
    domain = nodes.node[inside]
    rows, width = len(near), len(domain)
    # In through either end, whichever is nearer (mode="wrap" reads column -1 as the last; it
    # also writes into `out` directly, where the default mode would buffer).
    both = near.take(ways[:, inside], axis=1, mode="wrap",
                     out=ws.scratch("both", (rows, 2, width)))
    both += nodes.offsets[:, inside]
    dist = np.minimum(both[:, 0], both[:, 1], out=ws.scratch("dist", (rows, width)))
    if len(along_row):
        at = (along_row, inside.searchsorted(along_at))
        dist[at] = np.minimum(dist[at], along_length)
    # Kept entries in row-major order: rows in turn, each row's nodes ascending.
    keep = np.less_equal(dist, limit_m, out=ws.scratch("keep", (rows, width), "bool"))
    kept = keep.reshape(-1).nonzero()[0]
    bounds = kept.searchsorted(np.arange(0, rows * width + 1, width))
    reached_nodes, values = ws.results(len(kept))
    dist.take(kept, out=values, mode="clip")
    tiled = ws.scratch("tiled", (rows, width), domain.dtype)   # the domain on every row
    tiled[:] = domain
    tiled.take(kept, out=reached_nodes, mode="clip")
    return bounds[1:] - bounds[:-1], reached_nodes, values


class _Workspace:
    """
    One thread's arrays. Large temporaries are reused from group to group: fresh ones would go
    back to the system when freed and fault in again, page by page, on every use. Results are
    handed out from blocks for the same reason (blocks under 4 MB, where numpy would ask for
    huge pages, which the kernel may stall to compact memory for).
    """

    _BLOCK = 1 << 18     # results per block

    def __init__(self, node_dtype: np.dtype):
        self.node_dtype = node_dtype
        self._scratch: dict[str, np.ndarray] = {}
        self._nodes = np.empty(0, dtype=node_dtype)
        self._values = np.empty(0)
        self._used = 0

    def scratch(self, name: str, shape: tuple[int, ...], dtype: str = "float64") -> np.ndarray:
        """A C-contiguous array of `shape` on buffer `name`; its content is left over."""
        size = math.prod(shape)
        buffer = self._scratch.get(name)
        if buffer is None or len(buffer) < size or buffer.dtype != dtype:
            grown = 2 * len(buffer) if buffer is not None else 0
            buffer = self._scratch[name] = np.empty(max(size, grown), dtype=dtype)
        return buffer[:size].reshape(shape)

    def results(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Room for `size` reached nodes and their distances, which stay valid."""
        if self._used + size > len(self._values):
            self._nodes = np.empty(max(size, self._BLOCK), dtype=self.node_dtype)
            self._values = np.empty(max(size, self._BLOCK))
            self._used = 0
        at = slice(self._used, self._used + size)
        self._used += size
        return self._nodes[at], self._values[at]


# ---------------------------------------------------------------------------------------------
# Step 4: rows in the requested order
# ---------------------------------------------------------------------------------------------


def _assemble(sources: np.ndarray, unique: np.ndarray, inverse: np.ndarray,
              groups: list[tuple], limit_m: float, pool: ThreadPoolExecutor,
              workers: int) -> NodeReach:
    """
    The rows in the order of the requested sources (repeats included).

    A group's rows lie one after another in its results: one vectorised scatter per group puts
    them in place, the threads taking turns over the groups (numpy releases the GIL for the
    copies). A repeated source copies its first row.
    """
    count = np.zeros(len(unique), dtype="int64")
    slots = [np.searchsorted(unique, group[0]) for group in groups]
    for slot, group in zip(slots, groups):
        count[slot] = group[1]
    indptr = np.zeros(len(sources) + 1, dtype="int64")
    np.cumsum(count[inverse], out=indptr[1:])
    node = np.empty(int(indptr[-1]), dtype=groups[0][2].dtype)
    dist_m = np.empty(int(indptr[-1]), dtype="float64")
    first = np.full(len(unique), -1, dtype="int64")
    first[inverse[::-1]] = np.arange(len(sources) - 1, -1, -1)
    start = indptr[first]

    def place(part: int) -> None:
        steps = np.empty(0, dtype="int64")
        for k in range(part, len(groups), workers):
            _, counts, nodes, values = groups[k]
            if len(steps) < len(nodes):
                steps = np.empty(2 * len(nodes), dtype="int64")
            # Destinations as a running sum of +1 steps that jump to the start of each row.
            at = steps[:len(nodes)]
            at[:] = 1
            rows = counts.nonzero()[0]
            row_start = start[slots[k][rows]]
            jumps = row_start.copy()
            jumps[1:] -= row_start[:-1] + counts[rows][:-1] - 1
            at[np.cumsum(counts[rows]) - counts[rows]] = jumps
            np.cumsum(at, out=at)
            node[at] = nodes
            dist_m[at] = values

    list(pool.map(place, range(workers)))
    repeats = np.flatnonzero(first[inverse] != np.arange(len(sources)))
    if len(repeats):
        copied, _ = _ranges(start[inverse[repeats]], count[inverse[repeats]])
        at, _ = _ranges(indptr[repeats], count[inverse[repeats]])
        node[at] = node[copied]
        dist_m[at] = dist_m[copied]
    return NodeReach(sources=sources, indptr=indptr, node=node, dist_m=dist_m, limit_m=limit_m)
