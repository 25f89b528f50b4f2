"""
Peer regionalisations for `covplan bench plan`, run in a separate environment.

spopt and libpysal pull in numba, which does ``import covplan`` to find coverage.py and finds
our package instead, so the peers cannot share our environment. `covplan.bench_plan` exports
an instance to .npz, runs this script with the peers' interpreter and reads the labels back.

    python -m venv .venv-peers && .venv-peers/bin/pip install spopt scikit-learn geopandas
    .venv-peers/bin/python benchmarks/peers_regionalize.py instance.npz --method maxp \
        --level cells --floor 8000 --out labels.npz

Input (.npz): unit_x, unit_y (metres), unit_pop, unit_edges (i, j pairs of the rook adjacency),
unit_cell, and the same for populated cells (cell_x, cell_y, cell_pop, cell_edges).
Output (.npz): labels (one per unit or cell, by --level), solve_s (the method's own call),
n_inputs. Nothing here imports the `coverage` package.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _maxp(x, y, pop, edges, *, floor, seed, construction, annealing):
    import geopandas as gpd
    import libpysal
    from spopt.region import MaxPHeuristic

    # spopt draws from numpy's global generator and offers no seed argument: seed it here.
    np.random.seed(seed)
    neighbors = {i: [] for i in range(len(pop))}
    for a, b in edges:
        neighbors[int(a)].append(int(b))
        neighbors[int(b)].append(int(a))
    w = libpysal.weights.W(neighbors, silence_warnings=True)
    # Coordinates as the attributes: regions as compact as Max-p makes them; the points are
    # the geometry spopt uses to join disconnected components, if any.
    frame = gpd.GeoDataFrame({"x": x, "y": y, "pop": pop}, geometry=gpd.points_from_xy(x, y))
    model = MaxPHeuristic(frame, w, ["x", "y"], "pop", floor, top_n=2,
                          max_iterations_construction=construction, max_iterations_sa=annealing)
    model.solve()
    return np.asarray(model.labels_)


def _kmeans(x, y, pop, *, k, seed):
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=10, random_state=seed)
    return model.fit_predict(np.column_stack([x, y]), sample_weight=pop)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("instance")
    parser.add_argument("--method", choices=("maxp", "kmeans"), required=True)
    parser.add_argument("--level", choices=("units", "cells"), default="units")
    parser.add_argument("--floor", type=float, default=8_000, help="Max-p population floor")
    parser.add_argument("--k", type=int, default=None, help="k-means clusters (default total/10,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--construction", type=int, default=99, help="Max-p construction iterations")
    parser.add_argument("--annealing", type=int, default=10, help="Max-p simulated-annealing runs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    data = np.load(args.instance)
    prefix = "unit" if args.level == "units" else "cell"
    x, y = data[f"{prefix}_x"], data[f"{prefix}_y"]
    pop = data[f"{prefix}_pop"].astype("float64")
    started = time.perf_counter()
    if args.method == "maxp":
        labels = _maxp(x, y, pop, data[f"{prefix}_edges"], floor=args.floor, seed=args.seed,
                       construction=args.construction, annealing=args.annealing)
    else:
        k = args.k or max(1, round(pop.sum() / 10_000))
        labels = _kmeans(x, y, pop, k=k, seed=args.seed)
    solve_s = time.perf_counter() - started
    np.savez(args.out, labels=np.asarray(labels, dtype="int64"), solve_s=solve_s, n_inputs=len(pop))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
