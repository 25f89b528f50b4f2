"""
`covplan bench reach`: time our bounded walk-time engine against its peers in one run, on the
same graph, origins and limit — scipy's dense `dijkstra(limit=)`, networkx per origin (what
osmnx users do) and pandana (build + precompute + query) when it is installed.
"""

from __future__ import annotations

import gc
import logging
import time
import tracemalloc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from covplan.inputs.snap import snap_points
from covplan.reach.engine import bounded_distances
from scipy.sparse.csgraph import dijkstra

if TYPE_CHECKING:
    from covplan.inputs.network import WalkNetwork
    from covplan.inputs.population import Population

logger = logging.getLogger(__name__)

# scipy returns origins x nodes float64; calls are chunked so the dense block stays < ~1 GB.
_SCIPY_CHUNK = 4096


# tracemalloc slows code that makes many numpy calls far more than code that makes a few big
# ones, so time and memory come from separate calls; methods slower than this skip the second.
_TRACE_MAX_SECONDS = 60.0


def _time(func: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time (s) of one untraced call, and its result."""
    gc.collect()
    started = time.perf_counter()
    result = func()
    return time.perf_counter() - started, result


def _peak_bytes(func: Callable[[], Any]) -> int:
    """Peak traced allocation (bytes) of one more call."""
    gc.collect()
    tracemalloc.start()
    func()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def origin_nodes(network: WalkNetwork, population: Population) -> np.ndarray:
    """The distinct network nodes that populated units snap to (off-network units excluded)."""
    pts = population.units.to_crs(network.crs).geometry
    snap = snap_points(network, pts.x.to_numpy(), pts.y.to_numpy())
    return np.unique(snap.node[snap.node >= 0])


def _ours(network: WalkNetwork, graph, origins: np.ndarray, limit_m: float) -> int:
    return bounded_distances(graph, network.x, network.y, origins, limit_m=limit_m).n_pairs


def _scipy_dense(graph, origins: np.ndarray, limit_m: float) -> int:
    pairs = 0
    for start in range(0, len(origins), _SCIPY_CHUNK):
        dist = dijkstra(graph, directed=True, indices=origins[start:start + _SCIPY_CHUNK],
                        limit=limit_m)
        pairs += int(np.isfinite(dist).sum())
    return pairs


def _networkx(network: WalkNetwork, origins: np.ndarray, limit_m: float) -> int:
    import networkx as nx

    G = nx.DiGraph()
    G.add_nodes_from(range(network.n_nodes))
    tails = np.repeat(np.arange(network.n_nodes), np.diff(network.indptr))
    G.add_weighted_edges_from(zip(tails.tolist(), network.indices.tolist(),
                                  network.length_m.tolist()), weight="length")
    return sum(len(nx.single_source_dijkstra_path_length(G, int(o), cutoff=limit_m,
                                                         weight="length")) for o in origins)


def _pandana(network: WalkNetwork, origins: np.ndarray, limit_m: float) -> int:
    import pandana
    import pandas as pd

    edges = network.edges
    nodes = pd.DataFrame({"x": network.x, "y": network.y})
    net = pandana.Network(nodes["x"], nodes["y"], edges["u"], edges["v"],
                          edges[["length_m"]], twoway=not network.directed)
    net.precompute(limit_m)
    reached = net.nodes_in_range(origins.tolist(), limit_m, "length_m")
    return len(reached)


def run_reach_benchmark(network: WalkNetwork, population: Population, *,
                        max_minutes: float = 15.0, peers: tuple[str, ...] = ("scipy", "networkx", "pandana"),
                        networkx_origins: int | None = None) -> dict[str, Any]:
    """
    Time every method on the same origins (all populated units' nodes) and limit.

    Parameters
    ----------
    networkx_origins
        Run networkx on only the first N origins (it is slow); its time is then reported for
        those N and per origin, never extrapolated silently. None runs all of them.

    Returns
    -------
    dict
        ``graph`` (nodes, arcs), ``origins``, ``limit_m`` and per method: seconds (untraced),
        peak_mb (traced in a second call; None for methods slower than 60 s), pairs, origins,
        and the ratio of its per-origin time to ours.
    """
    origins = origin_nodes(network, population)
    limit_m = max_minutes * network.speed_m_per_min
    graph = network.csr_length()
    methods: dict[str, Callable[[], int]] = {
        "covplan (tiled bounded Dijkstra, sparse)": lambda: _ours(network, graph, origins, limit_m)}
    counts = {"covplan (tiled bounded Dijkstra, sparse)": len(origins)}
    if "scipy" in peers:
        methods["scipy dijkstra(limit=), dense"] = lambda: _scipy_dense(graph, origins, limit_m)
        counts["scipy dijkstra(limit=), dense"] = len(origins)
    if "networkx" in peers:
        sample = origins[:networkx_origins] if networkx_origins else origins
        methods["networkx single_source_dijkstra (cutoff), per origin"] = \
            lambda: _networkx(network, sample, limit_m)
        counts["networkx single_source_dijkstra (cutoff), per origin"] = len(sample)
    if "pandana" in peers:
        try:
            import pandana  # noqa: F401
        except ImportError:
            logger.warning("pandana is not installed; `pip install pandana` to include it")
        else:
            methods["pandana (build + precompute + query)"] = lambda: _pandana(network, origins, limit_m)
            counts["pandana (build + precompute + query)"] = len(origins)

    results: dict[str, dict[str, Any]] = {}
    for name, func in methods.items():
        logger.info("Benchmark: %s on %d origins", name, counts[name])
        seconds, pairs = _time(func)
        peak = _peak_bytes(func) if seconds <= _TRACE_MAX_SECONDS else None
        results[name] = {"seconds": round(seconds, 3),
                         "peak_mb": None if peak is None else round(peak / 1e6, 1),
                         "pairs": int(pairs), "origins": counts[name],
                         "us_per_origin": round(1e6 * seconds / max(counts[name], 1), 1)}
    ours = next(iter(results.values()))
    for res in results.values():
        res["times_slower_than_coverage"] = round(res["us_per_origin"] / ours["us_per_origin"], 1)
    return {"graph_nodes": network.n_nodes, "graph_arcs": int(network.indptr[-1]),
            "origins": len(origins), "limit_m": limit_m, "max_minutes": max_minutes,
            "walk_speed_kmh": network.walk_speed_kmh, "methods": results}


def format_table(report: dict[str, Any]) -> str:
    """The benchmark as a Markdown table."""
    lines = [f"{report['graph_nodes']:,} nodes, {report['graph_arcs']:,} arcs, "
             f"{report['origins']:,} origins, limit {report['max_minutes']:g} min "
             f"({report['limit_m']:.0f} m)", "",
             "| method | origins | seconds | µs / origin | × ours | peak MB | pairs |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in report["methods"].items():
        lines.append(f"| {name} | {r['origins']:,} | {r['seconds']:.2f} | {r['us_per_origin']:,.0f} | "
                     f"{r['times_slower_than_coverage']:g} | "
                     f"{'not traced' if r['peak_mb'] is None else format(r['peak_mb'], ',.1f')} | {r['pairs']:,} |")
    return "\n".join(lines)
