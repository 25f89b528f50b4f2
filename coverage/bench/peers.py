"""
The peers of `covplan bench plan`: spopt's Max-p regionalisation and population-weighted
k-means (scikit-learn), run in this process on plain arrays (coordinates in metres,
populations, adjacency as (i, j) edges). They return one region label per input.

spopt, libpysal and scikit-learn are optional: ``pip install "coverage-planner[peers]"``.
They are imported on first use, so the rest of the package never needs them.
"""

from __future__ import annotations

import importlib

import numpy as np
from covplan.errors import InputError

# What each peer imports (spopt brings libpysal, and numba under both).
_MODULES = {"maxp": ("libpysal", "spopt.region"), "kmeans": ("sklearn.cluster",)}
PEERS = tuple(_MODULES)


def require(*methods: str) -> None:
    """Import the libraries of `methods` now, or raise InputError naming the extra to install.

    Callers do it before a long run (to fail early) and before timing a peer (to leave the
    imports out of its time)."""
    for method in methods:
        if method not in _MODULES:
            msg = f"unknown peer {method!r}; choose from {', '.join(PEERS)}."
            raise InputError(msg)
        for module in _MODULES[method]:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                msg = (f"the {method} peer needs {exc.name or module}, which is not installed: "
                       'pip install "coverage-planner[peers]" (or leave the peers out).')
                raise InputError(msg) from exc


def maxp(x: np.ndarray, y: np.ndarray, pop: np.ndarray, edges: np.ndarray, *, floor: float,
         seed: int = 0, construction: int = 99, annealing: int = 10) -> np.ndarray:
    """spopt's `MaxPHeuristic`: as many regions as it can make of at least `floor` residents,
    contiguous in `edges`, with the coordinates as attributes (regions as compact as Max-p
    makes them)."""
    require("maxp")
    import geopandas as gpd
    import libpysal
    from spopt.region import MaxPHeuristic

    neighbors: dict[int, list[int]] = {i: [] for i in range(len(pop))}
    for a, b in edges:
        neighbors[int(a)].append(int(b))
        neighbors[int(b)].append(int(a))
    w = libpysal.weights.W(neighbors, silence_warnings=True)
    # The points are the geometry spopt uses to join disconnected components, if any.
    frame = gpd.GeoDataFrame({"x": x, "y": y, "pop": pop}, geometry=gpd.points_from_xy(x, y))
    # spopt draws from numpy's global generator and has no seed argument: seed it for this
    # call and give the caller's state back.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        model = MaxPHeuristic(frame, w, ["x", "y"], "pop", floor, top_n=2,
                              max_iterations_construction=construction,
                              max_iterations_sa=annealing)
        model.solve()
    finally:
        np.random.set_state(state)
    return np.asarray(model.labels_, dtype="int64")


def kmeans(x: np.ndarray, y: np.ndarray, pop: np.ndarray, *, k: int, seed: int = 0) -> np.ndarray:
    """k-means on the coordinates, each input weighted by its residents (10 starts)."""
    require("kmeans")
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=10, random_state=seed)
    return model.fit_predict(np.column_stack([x, y]), sample_weight=pop).astype("int64")
