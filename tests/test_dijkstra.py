"""Bounded multi-source Dijkstra: checked against scipy's plain `dijkstra(limit=)` on graphs
built to contain what the chain contraction must get right."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from covplan.reach import engine as _dijkstra
from covplan.reach.engine import bounded_distances
from scipy.sparse.csgraph import dijkstra


class _Builder:
    """Nodes with coordinates and arcs whose lengths never undercut the straight line."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.x: list[float] = []
        self.y: list[float] = []
        self.tails: list[int] = []
        self.heads: list[int] = []
        self.lengths: list[float] = []

    def node(self, x: float, y: float) -> int:
        self.x.append(x)
        self.y.append(y)
        return len(self.x) - 1

    def arc(self, u: int, v: int, *, both: bool = True, length: float | None = None) -> None:
        straight = float(np.hypot(self.x[u] - self.x[v], self.y[u] - self.y[v]))
        forward = straight * (1 + 0.3 * self.rng.random()) if length is None else length
        self.tails.append(u)
        self.heads.append(v)
        self.lengths.append(forward)
        if both:   # the way back may be a little longer (a different kerb)
            back = forward if length is not None else forward * (1 + 0.05 * self.rng.random())
            self.tails.append(v)
            self.heads.append(u)
            self.lengths.append(back)

    def chain(self, u: int, v: int, interior: int, *, both: bool = True,
              bend: float = 0.0) -> list[int]:
        """`interior` degree-2 nodes between `u` and `v` (u == v makes a loop)."""
        ts = np.linspace(0, 1, interior + 2)[1:-1]
        path = [u]
        for k, t in enumerate(ts):
            wobble = bend * np.sin(np.pi * t) + self.rng.normal(0, 3)
            path.append(self.node(self.x[u] + t * (self.x[v] - self.x[u]) + wobble,
                                  self.y[u] + t * (self.y[v] - self.y[u]) + wobble * (k % 2)))
        path.append(v)
        for a, b in zip(path[:-1], path[1:]):
            self.arc(a, b, both=both)
        return path[1:-1]

    def csr(self) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        n = len(self.x)
        # COO -> CSR would add up repeated (tail, head) entries; keep the shortest, as streets do.
        key = np.array(self.tails, dtype="int64") * n + np.array(self.heads, dtype="int64")
        length = np.array(self.lengths)
        order = np.lexsort((length, key))
        key, length = key[order], length[order]
        first = np.r_[True, key[1:] != key[:-1]]
        graph = sp.csr_matrix((length[first], (key[first] // n, key[first] % n)), shape=(n, n))
        return graph, np.array(self.x), np.array(self.y)


def _street_network(seed: int, *, n_junctions: int = 50, size_m: float = 2000.0):
    """Junctions joined by chains of 0..40 nodes, plus every awkward case the contraction has."""
    b = _Builder(seed)
    rng = b.rng
    junctions = [b.node(*rng.uniform(0, size_m, 2)) for _ in range(n_junctions)]
    pts = np.column_stack([b.x, b.y])
    for u in range(n_junctions):
        near = np.argsort(np.hypot(*(pts - pts[u]).T))[1:4]
        for v in near:
            if u < v:
                b.chain(junctions[u], junctions[int(v)], int(rng.integers(0, 40)))
    j = junctions
    special = {}
    special["dead_end"] = b.chain(j[0], b.node(b.x[j[0]] + 150, b.y[j[0]] - 120), 12)
    special["parallel"] = b.chain(j[1], j[2], 9, bend=80.0)           # a second way between two
    b.arc(j[1], j[2])                                                  # ... and a direct one
    special["one_way"] = b.chain(j[3], j[4], 15, both=False, bend=60.0)
    special["long"] = b.chain(j[5], j[6], 150, bend=200.0)             # longer than _MAX_CHAIN
    special["loop"] = _loop(b, j[7], 11)
    special["cycle"] = _ring(b, size_m + 300.0, 300.0, 14)             # no junction at all
    special["spur_to_sink"] = b.chain(j[8], b.node(b.x[j[8]] - 90, b.y[j[8]] + 70), 5, both=False)
    twin = b.node(b.x[j[9]], b.y[j[9]])          # a junction 0 m from another one
    b.arc(j[9], twin, length=0.0)
    special["from_twin"] = b.chain(twin, j[0], 6) + b.chain(twin, j[1], 4)
    graph, x, y = b.csr()
    return graph, x, y, special


def test_sources_far_inside_long_chains():
    """Chain ends beyond the limit: only the walks along the chain count."""
    b = _Builder(11)
    path = [b.node(10.0 * k, 0.0) for k in range(600)]
    for u, v in zip(path[:-1], path[1:]):
        b.arc(u, v)
    b.chain(path[300], b.node(3000.0, 400.0), 30)   # one side street
    graph, x, y = b.csr()
    sources = np.array([1, 150, 299, 300, 301, 450, 598])
    for limit_m in (0.0, 35.0, 120.0):
        out = bounded_distances(graph, x, y, sources, limit_m=limit_m)
        _assert_matches(out, graph, sources, limit_m)


def _loop(b: _Builder, at: int, count: int) -> list[int]:
    """A loop street leaving junction `at` and coming back to it."""
    angles = np.linspace(0, 2 * np.pi, count + 2)[1:-1]
    ring = [b.node(b.x[at] + 60 * (1 - np.cos(a)), b.y[at] + 60 * np.sin(a)) for a in angles]
    for u, v in zip([at] + ring, ring + [at]):
        b.arc(u, v)
    return ring


def _ring(b: _Builder, cx: float, cy: float, count: int) -> list[int]:
    """An isolated cycle of degree-2 nodes."""
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
    ring = [b.node(cx + 100 * np.cos(a), cy + 100 * np.sin(a)) for a in angles]
    for u, v in zip(ring, ring[1:] + ring[:1]):
        b.arc(u, v)
    return ring


def _expected(graph, sources, limit_m):
    if len(sources) == 0:
        return np.zeros((0, graph.shape[0]))
    return dijkstra(graph, directed=True, indices=sources, limit=limit_m)


def _assert_matches(out, graph, sources, limit_m):
    dense = _expected(graph, sources, limit_m)
    assert out.indptr.dtype == np.int64 and out.dist_m.dtype == np.float64
    assert out.node.dtype == np.int32   # node indices fit: half the memory of int64
    assert len(out.indptr) == len(sources) + 1 and out.indptr[0] == 0
    assert np.array_equal(out.sources, sources)
    for row in range(len(sources)):
        lo, hi = out.indptr[row], out.indptr[row + 1]
        expected_nodes = np.flatnonzero(np.isfinite(dense[row]))
        assert np.array_equal(out.node[lo:hi], expected_nodes), f"row {row} (source {sources[row]})"
        np.testing.assert_allclose(out.dist_m[lo:hi], dense[row, expected_nodes], rtol=1e-9,
                                   atol=1e-9)
    assert out.n_pairs == int(np.isfinite(dense).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_node_as_source_matches_scipy(seed):
    graph, x, y, _ = _street_network(seed)
    sources = np.arange(graph.shape[0])
    for limit_m in (250.0, 900.0):
        out = bounded_distances(graph, x, y, sources, limit_m=limit_m)
        _assert_matches(out, graph, sources, limit_m)


def test_special_structures_match_scipy_both_ways():
    graph, x, y, special = _street_network(3)
    # Sources inside every special chain, its targets on the same chain, in shuffled order.
    sources = np.concatenate([np.asarray(v) for v in special.values()])
    sources = np.random.default_rng(0).permutation(sources)
    for g in (graph, graph.T.tocsr()):   # the reverse graph walks the one-way chain backwards
        out = bounded_distances(g, x, y, sources, limit_m=600.0)
        _assert_matches(out, g, sources, 600.0)


def test_no_limit_reaches_whole_components():
    graph, x, y, special = _street_network(4, n_junctions=20)
    sources = np.array([0, special["cycle"][3], special["long"][70], special["one_way"][2]])
    out = bounded_distances(graph, x, y, sources, limit_m=np.inf)
    _assert_matches(out, graph, sources, np.inf)


def test_repeated_and_unsorted_sources_get_their_own_rows():
    graph, x, y, special = _street_network(5)
    inner = special["parallel"][4]
    sources = np.array([inner, 7, inner, 0, 7, inner])
    out = bounded_distances(graph, x, y, sources, limit_m=500.0)
    _assert_matches(out, graph, sources, 500.0)


def test_empty_sources():
    graph, x, y, _ = _street_network(6, n_junctions=10)
    out = bounded_distances(graph, x, y, np.array([], dtype=int), limit_m=500.0)
    assert out.n_pairs == 0 and list(out.indptr) == [0] and len(out.sources) == 0


def test_one_or_two_workers_give_identical_arrays():
    graph, x, y, _ = _street_network(7, n_junctions=120, size_m=4000.0)
    sources = np.arange(0, graph.shape[0], 2)
    one = bounded_distances(graph, x, y, sources, limit_m=700.0, workers=1)
    two = bounded_distances(graph, x, y, sources, limit_m=700.0, workers=2)
    for name in ("indptr", "node", "dist_m"):
        assert np.array_equal(getattr(one, name), getattr(two, name))
    _assert_matches(two, graph, sources, 700.0)


def test_arcs_as_scipy_reads_them():
    """Explicit zeros are arcs, repeated CSR entries keep their minimum, self-loops are inert."""
    x = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    y = np.zeros(5)
    # 0 -> 1 (0 m, stored explicitly), 1 -> 2 twice (50 m and 12 m), 2 -> 2, 2 -> 3, 3 -> 4.
    indptr = np.array([0, 1, 3, 5, 6, 6])
    indices = np.array([1, 2, 2, 2, 3, 4])
    data = np.array([0.0, 50.0, 12.0, 7.0, 10.0, 10.0])
    graph = sp.csr_matrix((data, indices, indptr), shape=(5, 5))
    assert not graph.has_canonical_format
    out = bounded_distances(graph, x, y, np.array([0, 1, 2]), limit_m=30.0)
    _assert_matches(out, graph, np.array([0, 1, 2]), 30.0)
    assert list(out.node[:out.indptr[1]]) == [0, 1, 2, 3]


def test_many_long_chains_are_split(monkeypatch):
    """Chains longer than the cap are cut by promoting nodes to junctions; small caps stress it."""
    monkeypatch.setattr(_dijkstra, "_MAX_CHAIN", 3)
    graph, x, y, special = _street_network(8, n_junctions=25)
    sources = np.concatenate([special["long"][::7], special["one_way"], special["cycle"][:3]])
    out = bounded_distances(graph, x, y, sources, limit_m=400.0)
    _assert_matches(out, graph, sources, 400.0)


def test_small_groups_and_tiles_stay_exact(monkeypatch):
    monkeypatch.setattr(_dijkstra, "_GROUP", 5)
    graph, x, y, _ = _street_network(9, n_junctions=80, size_m=3000.0)
    sources = np.arange(graph.shape[0])[::3]
    out = bounded_distances(graph, x, y, sources, limit_m=300.0)
    _assert_matches(out, graph, sources, 300.0)


@pytest.mark.parametrize("case", ["single", "pair", "pure_cycle", "pure_path", "star"])
def test_degenerate_graphs(case):
    if case == "single":
        graph, x, y = sp.csr_matrix((1, 1)), np.zeros(1), np.zeros(1)
    else:
        b = _Builder(0)
        if case == "pair":
            b.arc(b.node(0, 0), b.node(30, 0))
        elif case == "pure_cycle":
            _ring(b, 0.0, 0.0, 9)
        elif case == "pure_path":
            path = [b.node(10.0 * k, 0.0) for k in range(200)]
            for u, v in zip(path[:-1], path[1:]):
                b.arc(u, v)
        else:   # a hub with short spokes, one of them one-way out
            hub = b.node(0, 0)
            for k in range(5):
                b.chain(hub, b.node(100 * np.cos(k), 100 * np.sin(k)), 3, both=k != 0)
        graph, x, y = b.csr()
    sources = np.arange(graph.shape[0])
    out = bounded_distances(graph, x, y, sources, limit_m=250.0)
    _assert_matches(out, graph, sources, 250.0)
