"""
`covplan bench reach`: time our bounded walk-time engine against its peers in one run, on the
same graph, origins and limit — scipy's dense `dijkstra(limit=)`, networkx per origin (what
osmnx users do) and pandana (build + precompute + query) when it is installed.

Honest by construction: every method is called once before timing (imports, caches, page
faults); then in each of `rounds` paired rounds every peer runs right after a call of ours, so
machine noise hits both sides, and the ratio reported is the median of the per-round ratios.
Peak memory is the resident set size of a fresh process per method, which counts native
allocations that tracemalloc never sees.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from covplan.errors import InputError
from covplan.reach.engine import bounded_distances
from scipy.sparse.csgraph import dijkstra

if TYPE_CHECKING:
    from covplan.inputs.network import WalkNetwork
    from covplan.inputs.population import Population
    from scipy import sparse

logger = logging.getLogger(__name__)

# scipy returns origins x nodes float64; calls are chunked so the dense block stays < ~1 GB.
_SCIPY_CHUNK = 4096

# networkx answers ~1 origin per ms on a city centre: a sample spread through the origins keeps
# the benchmark minutes long, and its time is reported per origin.
NETWORKX_SAMPLE = 500

OURS = "covplan (tiled bounded Dijkstra, sparse)"
_NAMES = {"scipy": "scipy dijkstra(limit=), dense",
          "networkx": "networkx single_source_dijkstra (cutoff), per origin",
          "pandana": "pandana (build + precompute + query)"}

# ru_maxrss is in KiB on Linux, bytes on macOS.
_MAXRSS_BYTES = 1 if sys.platform == "darwin" else 1024


class _Inputs(NamedTuple):
    """What the methods read, as plain arrays so a child process gets them by pickling."""

    graph: sparse.csr_matrix  # nodes x nodes arc lengths (m), shortest of parallel arcs
    x: np.ndarray
    y: np.ndarray
    edge_u: np.ndarray        # street segments, pandana's input
    edge_v: np.ndarray
    edge_length_m: np.ndarray
    directed: bool


def origin_nodes(network: WalkNetwork, population: Population) -> np.ndarray:
    """The distinct network nodes that populated units snap to (off-network units excluded)."""
    # Imported here so a memory-measuring child process does not load geopandas.
    from covplan.inputs.snap import snap_points

    pts = population.units.to_crs(network.crs).geometry
    snap = snap_points(network, pts.x.to_numpy(), pts.y.to_numpy())
    return np.unique(snap.node[snap.node >= 0])


def spread_sample(origins: np.ndarray, size: int | None) -> np.ndarray:
    """`size` origins evenly spaced through the sorted `origins` (all of them if None or more)."""
    if size is None or size >= len(origins):
        return origins
    # Steps of (n - 1) / (size - 1) >= 1 round to distinct positions.
    return origins[np.linspace(0, len(origins) - 1, size).round().astype("int64")]


def _scipy_dense(graph, origins: np.ndarray, limit_m: float) -> int:
    pairs = 0
    for start in range(0, len(origins), _SCIPY_CHUNK):
        dist = dijkstra(graph, directed=True, indices=origins[start:start + _SCIPY_CHUNK],
                        limit=limit_m)
        pairs += int(np.isfinite(dist).sum())
    return pairs


def _pandana(inputs: _Inputs, origins: np.ndarray, limit_m: float) -> int:
    import pandana
    import pandas as pd

    net = pandana.Network(pd.Series(inputs.x), pd.Series(inputs.y), pd.Series(inputs.edge_u),
                          pd.Series(inputs.edge_v),
                          pd.DataFrame({"length_m": inputs.edge_length_m}),
                          twoway=not inputs.directed)
    net.precompute(limit_m)
    return len(net.nodes_in_range(origins.tolist(), limit_m, "length_m"))


def _prepare(kind: str, inputs: _Inputs, origins: np.ndarray, limit_m: float) -> Callable[[], int]:
    """Import `kind`'s library and build its input form (untimed); the call to time, -> pairs."""
    if kind == "ours":
        return lambda: bounded_distances(inputs.graph, inputs.x, inputs.y, origins,
                                         limit_m=limit_m).n_pairs
    if kind == "scipy":
        return lambda: _scipy_dense(inputs.graph, origins, limit_m)
    if kind == "networkx":
        import networkx as nx

        # osmnx users hold the graph already, and building it outside the timing keeps the
        # per-origin time independent of the sample size.
        coo = inputs.graph.tocoo()
        G = nx.DiGraph()
        G.add_nodes_from(range(inputs.graph.shape[0]))
        G.add_weighted_edges_from(zip(coo.row.tolist(), coo.col.tolist(), coo.data.tolist()),
                                  weight="length")
        return lambda: sum(len(nx.single_source_dijkstra_path_length(
            G, int(o), cutoff=limit_m, weight="length")) for o in origins)
    if kind == "pandana":
        import pandana  # noqa: F401
        import pandas  # noqa: F401

        return lambda: _pandana(inputs, origins, limit_m)
    msg = f"unknown benchmark method {kind!r}"
    raise ValueError(msg)


def _proc_rss() -> tuple[int, int] | None:
    """(current, peak) resident set size in bytes from /proc/self/status, or None off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    kib = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in text.splitlines()
                                              if line.startswith(("VmRSS:", "VmHWM:")))}
    return kib["VmRSS"] * 1024, kib["VmHWM"] * 1024


def _rss_child(kind: str, inputs: _Inputs, origins: np.ndarray, limit_m: float, conn) -> None:
    """In a fresh process: one call of `kind`; sends the RSS before it, the peak during it, the
    process's overall peak and the pairs."""
    try:
        call = _prepare(kind, inputs, origins, limit_m)
        gc.collect()
        loaded = _proc_rss()
        if loaded is not None:
            # Not ru_maxrss: Linux carries the parent's RSS at fork into it across exec. The
            # address space's own high-water mark is reset ("5" > clear_refs) to span the call.
            try:
                Path("/proc/self/clear_refs").write_text("5")
                before = _proc_rss()[0]
            except OSError:
                before = loaded[1]
            pairs = call()
            peak = _proc_rss()[1]
            conn.send(("ok", before, peak, max(peak, loaded[1]), int(pairs), "VmHWM"))
        else:
            import resource

            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_BYTES
            pairs = call()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_BYTES
            conn.send(("ok", before, peak, peak, int(pairs), "ru_maxrss"))
    except Exception as exc:  # noqa: BLE001 - the parent reports it and benchmarks the others
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _peak_rss(kind: str, inputs: _Inputs, origins: np.ndarray, limit_m: float) -> dict[str, Any]:
    """Peak RSS (MB) of a spawned process that loads only `kind`'s library and the inputs and
    calls it once, its RSS before the call, and the rise of its peak during the call."""
    if sys.platform == "win32":  # no `resource` module
        return {"peak_rss_mb": None, "rss_note": "not measured on Windows"}
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter, not a copy of this one
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_rss_child, args=(kind, inputs, origins, limit_m, send))
    child.start()
    send.close()
    try:
        message = receive.recv()
    except EOFError:  # killed (out of memory, say) before it could answer
        message = ("error", "the process died")
    child.join()
    if message[0] != "ok":
        logger.warning("Benchmark: peak RSS of %s not measured: %s (exit code %s)", kind,
                       message[1], child.exitcode)
        return {"peak_rss_mb": None, "rss_note": f"{message[1]} (exit code {child.exitcode})"}
    _, before, peak, overall, pairs, source = message
    return {"peak_rss_mb": round(overall / 1e6, 1), "rss_baseline_mb": round(before / 1e6, 1),
            "rss_rise_mb": round((peak - before) / 1e6, 1), "rss_pairs": pairs,
            "rss_source": source}


def _timed(call: Callable[[], int]) -> tuple[float, int]:
    gc.collect()
    started = time.perf_counter()
    pairs = call()
    return time.perf_counter() - started, int(pairs)


def _check_options(rounds: int, networkx_origins: int | None, call_budget_s: float) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        msg = f"rounds must be a whole number >= 1, got {rounds!r}; set --rounds / rounds="
        raise InputError(msg)
    if networkx_origins is not None and (isinstance(networkx_origins, bool)
                                         or not isinstance(networkx_origins, int)
                                         or networkx_origins < 1):
        msg = (f"networkx_origins must be a whole number >= 1 or None (all origins), got "
               f"{networkx_origins!r}; set --networkx-origins (0 = all) / networkx_origins=")
        raise InputError(msg)
    if not call_budget_s > 0:
        msg = f"call_budget_s must be > 0 seconds, got {call_budget_s!r}; set call_budget_s="
        raise InputError(msg)


def run_reach_benchmark(network: WalkNetwork, population: Population, *,
                        max_minutes: float = 15.0, peers: tuple[str, ...] = ("scipy", "networkx", "pandana"),
                        networkx_origins: int | None = NETWORKX_SAMPLE, rounds: int = 5,
                        warmup: bool = True, rss: bool = True,
                        call_budget_s: float = 120.0) -> dict[str, Any]:
    """
    Time every method on the same origins (all populated units' nodes) and limit.

    Parameters
    ----------
    networkx_origins
        Run networkx on this many origins spread evenly through the sorted origins (it is
        slow); its time and ratio are per origin, and the table says "sample of N". None runs
        all of them.
    rounds
        Paired rounds: in each, every peer runs right after a call of ours; each peer's ratio
        is the median over rounds of (its µs per origin / ours in the same pair).
    warmup
        Call every method once before timing (imports, caches, page faults).
    rss
        Measure each method's peak RSS in a fresh spawned process (one more call each); a
        script calling this needs the ``if __name__ == "__main__":`` guard spawn needs.
    call_budget_s
        A method whose call takes longer runs only once (its warm-up call, or its first round
        without warm-up); the table says so and its ratio is to ours' median.

    Returns
    -------
    dict
        ``graph_nodes``, ``graph_arcs``, ``origins``, ``limit_m``, ``rounds`` and ``methods``:
        per method ``origins``, ``sample``, ``runs``, ``round_seconds`` with the paired
        ``ours_seconds`` and ``ratio_rounds``, ``seconds`` (median), ``min_seconds``,
        ``max_seconds``, ``us_per_origin``, ``times_slower_than_coverage`` (median ratio),
        ``over_budget``, ``pairs`` and ``pairs_ours`` (ours on the same origins), and
        ``peak_rss_mb``, ``rss_baseline_mb``, ``rss_rise_mb`` (or ``rss_note``).
    """
    _check_options(rounds, networkx_origins, call_budget_s)
    origins = origin_nodes(network, population)
    limit_m = max_minutes * network.speed_m_per_min
    edges = network.edges
    inputs = _Inputs(network.csr_length(), network.x, network.y, edges["u"].to_numpy(),
                     edges["v"].to_numpy(), edges["length_m"].to_numpy(), bool(network.directed))
    plan: dict[str, tuple[str, np.ndarray]] = {OURS: ("ours", origins)}
    for kind in ("scipy", "networkx", "pandana"):
        if kind not in peers:
            continue
        if kind == "pandana":
            try:
                import pandana  # noqa: F401
            except ImportError:
                logger.warning("pandana is not installed; `pip install pandana` to include it")
                continue
        plan[_NAMES[kind]] = (kind, spread_sample(origins, networkx_origins)
                              if kind == "networkx" else origins)

    results: dict[str, dict[str, Any]] = {
        name: {"origins": len(o), "sample": len(o) < len(origins), "round_seconds": [],
               "ours_seconds": [], "over_budget": False, "warmup_seconds": None}
        for name, (_, o) in plan.items()}
    # Memory first, while this process is still small: pandana's child alone needs gigabytes.
    if rss:
        for name, (kind, o) in plan.items():
            logger.info("Benchmark: peak RSS of %s in a fresh process", name)
            results[name].update(_peak_rss(kind, inputs, o, limit_m))
    calls = {name: _prepare(kind, inputs, o, limit_m) for name, (kind, o) in plan.items()}
    pairs: dict[str, int] = {}
    if warmup:
        for name, call in calls.items():
            logger.info("Benchmark: warm-up call of %s on %d origins", name, len(plan[name][1]))
            seconds, pairs[name] = _timed(call)
            results[name]["warmup_seconds"] = seconds
            if seconds > call_budget_s and name != OURS:  # its one run: warm matters little
                results[name].update(over_budget=True, round_seconds=[seconds])
    for r in range(rounds):
        logger.info("Benchmark: round %d of %d", r + 1, rounds)
        for name, call in calls.items():
            if name == OURS or results[name]["over_budget"]:
                continue
            ours_s, pairs[OURS] = _timed(calls[OURS])
            results[OURS]["round_seconds"].append(ours_s)
            peer_s, pairs[name] = _timed(call)
            results[name]["round_seconds"].append(peer_s)
            results[name]["ours_seconds"].append(ours_s)
            results[name]["over_budget"] = peer_s > call_budget_s
    if not results[OURS]["round_seconds"]:  # no peer to pair with: time ours alone
        for _ in range(rounds):
            seconds, pairs[OURS] = _timed(calls[OURS])
            results[OURS]["round_seconds"].append(seconds)

    ours = results[OURS]
    ours_median = statistics.median(ours["round_seconds"])
    for name, res in results.items():
        times, n = res["round_seconds"], res["origins"]
        seconds = statistics.median(times)
        if name == OURS:
            ratios = [1.0] * len(times)
        elif res["ours_seconds"]:
            ratios = [(t / n) / (o / len(origins)) for t, o in zip(times, res["ours_seconds"])]
        else:  # over budget at warm-up: no round of its own
            ratios = [(times[0] / n) / (ours_median / len(origins))]
        res.update(runs=len(times), seconds=seconds, min_seconds=min(times),
                   max_seconds=max(times), us_per_origin=1e6 * seconds / max(n, 1),
                   ratio_rounds=ratios, times_slower_than_coverage=statistics.median(ratios),
                   pairs=pairs[name])
        res["pairs_ours"] = pairs[OURS] if n == len(origins) else bounded_distances(
            inputs.graph, inputs.x, inputs.y, plan[name][1], limit_m=limit_m).n_pairs
        if res["pairs"] != res["pairs_ours"]:
            logger.warning("Benchmark: %s reached %d pairs, ours %d on the same origins", name,
                           res["pairs"], res["pairs_ours"])
    return {"graph_nodes": network.n_nodes, "graph_arcs": int(network.indptr[-1]),
            "origins": len(origins), "limit_m": limit_m, "max_minutes": max_minutes,
            "walk_speed_kmh": network.walk_speed_kmh, "rounds": rounds, "warmup": warmup,
            "call_budget_s": call_budget_s, "methods": results}


def format_table(report: dict[str, Any]) -> str:
    """The benchmark as a Markdown table."""
    methods = report["methods"]
    header = (f"{report['graph_nodes']:,} nodes, {report['graph_arcs']:,} arcs, "
              f"{report['origins']:,} origins, limit {report['max_minutes']:g} min "
              f"({report['limit_m']:.0f} m); median of {report.get('rounds', 1)} paired rounds"
              f"{' after a warm-up call' if report.get('warmup') else ''}, each peer timed "
              "right after a call of ours; × ours = median over rounds of the per-origin time "
              "ratio; peak RSS = peak of a fresh process that loaded only the method's library "
              "and the inputs (its rise during the call in brackets)")
    lines = [header, "",
             "| method | origins | median s (min–max) | µs / origin | median ratio × ours | peak RSS MB | pairs |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in methods.items():
        origins = f"sample of {r['origins']:,}" if r["sample"] else f"{r['origins']:,}"
        if r["over_budget"] and r["runs"] == 1:
            seconds = f"{r['seconds']:.2f} (1 run, over the {report['call_budget_s']:g} s budget)"
        else:
            runs = "" if r["runs"] == report.get("rounds") else f", {r['runs']} runs"
            seconds = f"{r['seconds']:.2f} ({r['min_seconds']:.2f}–{r['max_seconds']:.2f}{runs})"
        if r.get("peak_rss_mb") is None:
            rss = r.get("rss_note", "not measured")
        else:
            rss = f"{r['peak_rss_mb']:,.0f} (+{r['rss_rise_mb']:,.0f})"
        found = f"{r['pairs']:,}"
        if r["pairs"] != r["pairs_ours"]:
            found += f" (ours: {r['pairs_ours']:,})"
        lines.append(f"| {name} | {origins} | {seconds} | {r['us_per_origin']:,.0f} | "
                     f"{r['times_slower_than_coverage']:.1f} | {rss} | {found} |")
    return "\n".join(lines)
