"""
Pieces of territory for population units: each unit gets the part of its source cell nearest
to it, so communities drawn from units become areas (unions of pieces) that can be checked for
contiguity and cut against district limits.

Everything happens in one projected metric CRS (the working CRS); callers project first.
"""

from __future__ import annotations

import logging
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import scipy.sparse
import shapely
from covplan._validate import require_columns, require_crs, require_positive, require_projected
from covplan.errors import CRSError, InputError
from covplan.inputs.areas import label_units

__all__ = ["unit_pieces", "piece_adjacency", "dissolve_pieces", "unit_districts"]

logger = logging.getLogger(__name__)

# Unit coordinates are compared on a 1 mm grid: points closer than that are one site, which
# also keeps GEOS's Delaunay away from near-duplicate sites it cannot separate robustly.
_SITE_GRID_M = 1e-3
# Floating-point tolerance between pieces: gaps narrower than this still count as shared edges,
# and dissolve snap-rounds to it when the fast coverage union is not clean.
_SNAP_M = 1e-3
# Pieces sharing this much boundary (metres) are adjacent: the planner's contiguity rule.
_MIN_SHARED_M = 1.0
# Holes smaller than this in a dissolved label are float gaps between pieces (a 1 km long gap
# 1e-6 m wide is 1e-3 m2); a real hole is at least a cell without units.
_SLIVER_M2 = 0.01
_BISECT_STEPS = 48           # halves the slice search interval to ~1e-14 of its width
_PAIR_BATCH = 1 << 15        # candidate pairs per numpy batch in the adjacency test
_CUT_SHARE = 0.01            # a cell is cut if more than 1% of its area lies on each side


def unit_pieces(units: gpd.GeoDataFrame, cells: gpd.GeoDataFrame, *,
                point_cell_radius_m: float = 150.0) -> gpd.GeoSeries:
    """
    One polygon per unit: the part of its source cell nearer to it than to the cell's other units.

    Parameters
    ----------
    units
        Points with a `cell_id` naming their cell in `cells`, in a projected CRS in metres.
    cells
        Source cells with unique `cell_id`, Polygon/MultiPolygon or Point, in the CRS of `units`.
    point_cell_radius_m
        For Point cells (e.g. CSV lon/lat sources), which have no area: the territory is the
        union of discs of this radius around their units, shared out by one Voronoi diagram of
        all point-cell units. Pieces of point cells exclude any polygon cell they overlap.

    Returns
    -------
    geopandas.GeoSeries
        Index and order of `units`, same CRS. A cell's pieces partition it (a lone unit gets the
        whole cell); pieces of different cells do not overlap. Units at the same coordinates
        (within 1 mm) in a cell share their Voronoi region cut in equal-area vertical slices,
        assigned west to east in unit order (no jitter, so results are deterministic; a slice
        of a non-convex region may be a MultiPolygon). A unit far outside its cell may get an
        empty piece.

    Raises
    ------
    CRSError
        If a CRS is missing, not metric, or differs between `units` and `cells`.
    InputError
        If a column is missing, cell ids repeat, or a unit names a cell not in `cells`.
    """
    _require_metric_pair(units, cells, first="`units`", second="`cells`")
    require_columns(units, ["cell_id"], name="`units`")
    require_columns(cells, ["cell_id"], name="`cells`")
    radius = require_positive(point_cell_radius_m, name="point_cell_radius_m")
    cell_pos = _cell_positions(units, cells)
    points = np.asarray(units.geometry.values)
    not_point = (shapely.get_type_id(points) != 0) | shapely.is_empty(points)
    if not_point.any():
        msg = (f"`units` must be non-empty Points; rows {list(units.index[not_point][:5])} are "
               "not. Use Population.units, or centroids of the units' shapes.")
        raise InputError(msg)
    if len(units) == 0:
        return gpd.GeoSeries([], index=units.index, crs=units.crs)
    cell_geoms = np.asarray(cells.geometry.values)
    is_point = shapely.get_type_id(cell_geoms) == 0
    # Polygon cells get one diagram each; all point-cell units share one (group = len(cells)).
    group = np.where(is_point[cell_pos], len(cells), cell_pos)
    site_group, site_xy, unit_site = _sites(group, shapely.get_coordinates(points))
    on_point = site_group == len(cells)
    clip = np.empty(len(site_group), dtype=object)
    clip[~on_point] = cell_geoms[site_group[~on_point]]
    clip[on_point] = shapely.buffer(shapely.points(site_xy[on_point]), radius)
    regions = _site_regions(site_xy, site_group, clip, radius)
    if on_point.any() and not is_point.all():
        regions[on_point] = _carve_polygon_cells(regions[on_point], cell_geoms[~is_point])
    pieces = _split_shared_sites(regions, unit_site)
    logger.info("Cut %d cells into %d unit pieces (%d sites, %d point-cell units)",
                len(np.unique(cell_pos)), len(pieces), len(site_group),
                int(is_point[cell_pos].sum()))
    return gpd.GeoSeries(pieces, index=units.index, crs=units.crs)


def _require_metric_pair(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame, *, first: str,
                         second: str) -> None:
    """Both frames in one projected metric CRS."""
    crs_a, crs_b = require_crs(a, name=first), require_crs(b, name=second)
    require_projected(crs_a, name=first)
    if crs_a != crs_b:
        msg = (f"{second} must be in the CRS of {first} ({crs_a.to_string()!r}), got "
               f"{crs_b.to_string()!r}; project it with `.to_crs(...)` first.")
        raise CRSError(msg)


def _cell_positions(units: gpd.GeoDataFrame, cells: gpd.GeoDataFrame) -> np.ndarray:
    """Row position in `cells` of each unit's cell."""
    index = pd.Index(cells["cell_id"].astype(str))
    if not index.is_unique:
        repeated = index[index.duplicated()].unique()[:5].tolist()
        msg = f"`cells` repeats cell_id values, e.g. {repeated}; ids must be unique."
        raise InputError(msg)
    pos = index.get_indexer(units["cell_id"].astype(str))
    if (pos < 0).any():
        missing = units["cell_id"][pos < 0].unique()[:5].tolist()
        msg = (f"{int((pos < 0).sum())} unit(s) name cells not in `cells`, e.g. {missing}; "
               "pass the cells the units were built from.")
        raise InputError(msg)
    return pos


def _sites(group: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (group, location on the 1 mm grid), sorted by group; and each unit's site."""
    keys, unit_site = np.unique(np.column_stack([group, np.round(xy / _SITE_GRID_M)]), axis=0,
                                return_inverse=True)
    return keys[:, 0].astype(np.int64), keys[:, 1:] * _SITE_GRID_M, unit_site.ravel()


def _site_regions(site_xy: np.ndarray, site_group: np.ndarray, clip: np.ndarray,
                  radius: float) -> np.ndarray:
    """Voronoi region of each site within its group, clipped; a lone site gets its clip whole."""
    regions = clip.copy()
    first, count = np.unique(site_group, return_index=True, return_counts=True)[1:]
    multi = count > 1
    if not multi.any():
        return regions
    in_multi = np.repeat(multi, count)   # sites are sorted by group, so groups are runs
    members = np.flatnonzero(in_multi)
    multipoints = shapely.multipoints(site_xy[members], indices=np.repeat(np.arange(multi.sum()),
                                                                         count[multi]))
    # The diagram must reach past the clip area: the cell, or every disc (radius around sites).
    box_sites, box_clip = shapely.bounds(multipoints), shapely.bounds(clip[first[multi]])
    low = np.minimum(box_sites[:, :2], box_clip[:, :2]) - radius
    high = np.maximum(box_sites[:, 2:], box_clip[:, 2:]) + radius
    extent = shapely.box(low[:, 0], low[:, 1], high[:, 0], high[:, 1])
    diagrams = shapely.voronoi_polygons(multipoints, extend_to=extent, ordered=True)
    voronoi, owner = shapely.get_parts(diagrams, return_index=True)
    if not np.array_equal(np.bincount(owner, minlength=multi.sum()), count[multi]):
        msg = "Voronoi diagram lost a site; report this input (sites are >= 1 mm apart)."
        raise RuntimeError(msg)
    regions[members] = _clip_convex(voronoi, clip[members])
    return regions


def _clip_convex(regions: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Regions intersected with their clip shapes; regions already inside skip the overlay,
    which is the costly step (a prepared `covers` test is ~50 times cheaper)."""
    shapely.prepare(clip)
    rest = np.flatnonzero(~shapely.covers(clip, regions))
    out = regions.copy()
    out[rest] = shapely.intersection(regions[rest], clip[rest])
    return out


def _carve_polygon_cells(regions: np.ndarray, polygons: np.ndarray) -> np.ndarray:
    """Point-cell regions minus the polygon cells they overlap (mixed sources are rare)."""
    region_idx, poly_idx = shapely.STRtree(polygons).query(regions, predicate="intersects")
    order = np.argsort(region_idx, kind="stable")
    region_idx, poly_idx = region_idx[order], poly_idx[order]
    hit, first = np.unique(region_idx, return_index=True)
    overlapped = [shapely.union_all(group) for group in np.split(polygons[poly_idx], first[1:])]
    out = regions.copy()
    if len(hit):
        out[hit] = shapely.difference(regions[hit], np.array(overlapped, dtype=object))
    return out


def _split_shared_sites(regions: np.ndarray, unit_site: np.ndarray) -> np.ndarray:
    """Per unit, its site's region, or an equal-area vertical slice when units share the site."""
    pieces = regions[unit_site]
    order = np.argsort(unit_site, kind="stable")      # units of a site in unit order
    sites, first, count = np.unique(unit_site[order], return_index=True, return_counts=True)
    shared = count > 1
    if not shared.any():
        return pieces
    k = count[shared]
    slices = _equal_area_slices(regions[sites[shared]], k)
    pieces[order[np.repeat(first[shared], k) + _ranks(k)]] = slices
    logger.info("%d unit(s) share %d location(s); their regions were cut into equal-area slices",
                int(k.sum()), len(k))
    return pieces


def _equal_area_slices(regions: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Each region cut by vertical lines into k[i] parts of equal area, west to east.

    The cut abscissas are found by bisection on all cuts at once, each step one vectorised
    intersection, so the cost does not grow with a Python loop over regions.
    """
    owner = np.repeat(np.arange(len(regions)), k)
    rank = _ranks(k)
    xmin, ymin, xmax, ymax = shapely.bounds(regions)[owner].T
    goal = shapely.area(regions)[owner] * rank / k[owner]
    lo, hi = xmin.copy(), xmax.copy()
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2
        west = shapely.area(shapely.intersection(regions[owner],
                                                 shapely.box(xmin - 1, ymin - 1, mid, ymax + 1)))
        below = west < goal
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    left = np.where(rank == 0, xmin - 1, (lo + hi) / 2)
    right = np.append(left[1:], 0.0)
    right = np.where(rank == k[owner] - 1, xmax + 1, right)
    return shapely.intersection(regions[owner], shapely.box(left, ymin - 1, right, ymax + 1))


def piece_adjacency(pieces: gpd.GeoSeries, *,
                    min_shared_m: float = _MIN_SHARED_M) -> scipy.sparse.csr_matrix:
    """
    Which pieces share a stretch of boundary.

    Parameters
    ----------
    pieces
        Polygons in a metric CRS, e.g. from `unit_pieces`; row i of the result is row i here.
    min_shared_m
        Shortest shared boundary, metres, that makes two pieces adjacent. Pieces meeting only
        at a corner never are: their union would be a MultiPolygon. Gaps below 1 mm (floating
        point) are tolerated, so values below ~0.01 m may pick up corner contacts.

    Returns
    -------
    scipy.sparse.csr_matrix
        Symmetric boolean n x n matrix without diagonal.
    """
    min_shared = require_positive(min_shared_m, name="min_shared_m")
    adjacency = _adjacency(np.asarray(pieces.values), min_shared)
    logger.info("Adjacency of %d pieces: %d shared edges", adjacency.shape[0], adjacency.nnz // 2)
    return adjacency


def _adjacency(geoms: np.ndarray, min_shared: float) -> scipy.sparse.csr_matrix:
    """`piece_adjacency` of an array of polygons, without its log line."""
    bounds = shapely.bounds(geoms)
    # Envelopes grown by the tolerance, so pieces split by a float gap still meet as candidates.
    grown = shapely.box(*(bounds + [-_SNAP_M, -_SNAP_M, _SNAP_M, _SNAP_M]).T)
    grown[shapely.is_missing(geoms) | shapely.is_empty(geoms)] = None
    a, b = shapely.STRtree(grown).query(grown)
    keep = a < b
    a, b = a[keep], b[keep]
    shared = _shared_lengths(geoms, a, b, bounds)
    hit = shared >= min_shared
    a, b, n = a[hit], b[hit], len(geoms)
    return scipy.sparse.coo_matrix((np.ones(2 * len(a), dtype=bool),
                                    (np.concatenate([a, b]), np.concatenate([b, a]))),
                                   shape=(n, n)).tocsr()


def _segments(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boundary segments of all geometries grouped by owner: start xy, end xy, envelopes
    (xmin, ymin, xmax, ymax) and the first segment of each owner (n + 1 entries)."""
    lines, line_owner = shapely.get_parts(shapely.boundary(geoms), return_index=True)
    coords, coord_line = shapely.get_coordinates(lines, return_index=True)
    same = (coord_line[:-1] == coord_line[1:]) & np.any(coords[:-1] != coords[1:], axis=1)
    start, end = coords[:-1][same], coords[1:][same]
    envelope = np.hstack([np.minimum(start, end), np.maximum(start, end)])
    owner = line_owner[coord_line[:-1][same]]
    return start, end, envelope, np.searchsorted(owner, np.arange(len(geoms) + 1))


def _pair_segments(piece: np.ndarray, first: np.ndarray, envelope: np.ndarray,
                   box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pair, segment) for each segment of pair p's `piece[p]` whose envelope meets `box[p]`.

    Only segments in the overlap of the two envelopes can be shared, which keeps the pairwise
    product small even for cells with thousands of vertices.
    """
    count = first[piece + 1] - first[piece]
    pair = np.repeat(np.arange(len(piece)), count)
    segment = first[piece][pair] + _ranks(count)
    seg, pair_box = envelope[segment], box[pair]
    meets = ((seg[:, 0] <= pair_box[:, 2]) & (seg[:, 1] <= pair_box[:, 3])
             & (seg[:, 2] >= pair_box[:, 0]) & (seg[:, 3] >= pair_box[:, 1]))
    return pair[meets], segment[meets]


def _shared_lengths(geoms: np.ndarray, a: np.ndarray, b: np.ndarray,
                    bounds: np.ndarray) -> np.ndarray:
    """Length of boundary that pieces a[p] and b[p] share, up to `_SNAP_M`, for every pair p.

    Pure numpy on segment pairs: a GEOS overlay per pair costs ~40 us, far too slow for 10^5
    pairs, and exact overlays miss edges whose vertices differ in the last bits. Pairs go in
    batches so the ragged arrays stay small enough to sit in cache.
    """
    start, end, envelope, first = _segments(geoms)
    shared = np.zeros(len(a))
    for lo in range(0, len(a), _PAIR_BATCH):
        pa, pb = a[lo:lo + _PAIR_BATCH], b[lo:lo + _PAIR_BATCH]
        box = np.column_stack([np.maximum(bounds[pa, :2], bounds[pb, :2]) - _SNAP_M,
                               np.minimum(bounds[pa, 2:], bounds[pb, 2:]) + _SNAP_M])
        pair_a, seg_a = _pair_segments(pa, first, envelope, box)
        pair_b, seg_b = _pair_segments(pb, first, envelope, box)
        count_b = np.bincount(pair_b, minlength=len(pa))
        first_b = np.cumsum(count_b) - count_b
        repeat = count_b[pair_a]           # each kept segment of a meets each kept one of b
        row = np.repeat(np.arange(len(pair_a)), repeat)
        s, t = seg_a[row], seg_b[first_b[pair_a[row]] + _ranks(repeat)]
        shared[lo:lo + len(pa)] = np.bincount(pair_a[row], minlength=len(pa),
                                              weights=_overlap(start[s], end[s], start[t], end[t]))
    return shared


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., counts[i] - 1 for each i, concatenated: positions within ragged runs."""
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


def _overlap(p0: np.ndarray, p1: np.ndarray, q0: np.ndarray, q1: np.ndarray) -> np.ndarray:
    """Length along segment p of segment q where q lies on p's line within `_SNAP_M`."""
    length = np.hypot(*(p1 - p0).T)
    direction = (p1 - p0) / length[:, None]
    d0, d1 = q0 - p0, q1 - p0
    cross0 = direction[:, 0] * d0[:, 1] - direction[:, 1] * d0[:, 0]
    cross1 = direction[:, 0] * d1[:, 1] - direction[:, 1] * d1[:, 0]
    off_line = np.maximum(np.abs(cross0), np.abs(cross1))
    t0, t1 = np.sum(direction * d0, axis=1), np.sum(direction * d1, axis=1)
    lo = np.maximum(np.minimum(t0, t1), 0.0)
    hi = np.minimum(np.maximum(t0, t1), length)
    return np.where(off_line <= _SNAP_M, np.clip(hi - lo, 0.0, None), 0.0)


def dissolve_pieces(pieces: gpd.GeoSeries, labels: np.ndarray, *,
                    crs: Any = None) -> gpd.GeoDataFrame:
    """
    Union of the pieces of each label, with its contiguity.

    Parameters
    ----------
    pieces
        Polygons forming a coverage (no overlaps), e.g. from `unit_pieces`.
    labels
        One integer per piece; labels < 0 (unassigned) are skipped.
    crs
        CRS of the result; None takes the CRS of `pieces`.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per label >= 0, sorted: `label`, `contiguous` (its pieces join through shared
        edges, as `piece_adjacency` sees them: the planner's rule), `n_parts` (polygons of the
        union), `area_m2`, `geometry`.

    Raises
    ------
    InputError
        If `labels` does not hold one value per piece.
    """
    labels = np.asarray(labels)
    if labels.shape != (len(pieces),):
        msg = f"`labels` must hold one value per piece ({len(pieces)}), got shape {labels.shape}."
        raise InputError(msg)
    geoms = np.asarray(pieces.values)
    order = np.flatnonzero(labels >= 0)
    order = order[np.argsort(labels[order], kind="stable")]
    names, first = np.unique(labels[order], return_index=True)
    groups = np.split(geoms[order], first[1:]) if len(order) else []
    unions, edge_matched = np.empty(len(groups), dtype=object), True
    joined = np.ones(len(groups), dtype=bool)
    for i, group in enumerate(groups):
        group = group[~(shapely.is_missing(group) | shapely.is_empty(group))]
        # Once the coverage union rejects a label, the pieces are not edge-matched (T-junctions
        # between cells): stop trying it, as each rejection costs about a fifth of a union.
        unions[i], edge_matched = _union_pieces(group, try_coverage=edge_matched)
        if shapely.get_type_id(unions[i]) != 3:
            unions[i], joined[i] = _heal_seams(unions[i], group)
    frame = gpd.GeoDataFrame({"label": names, "contiguous": joined,
                              "n_parts": shapely.get_num_geometries(unions).astype(np.int64),
                              "area_m2": shapely.area(unions)},
                             geometry=gpd.GeoSeries(unions, crs=pieces.crs if crs is None else crs))
    logger.info("Dissolved %d pieces into %d labels (%d non-contiguous)", len(order), len(frame),
                int((~frame["contiguous"]).sum()))
    return frame


def _union_pieces(parts: np.ndarray, *, try_coverage: bool) -> tuple[Any, bool]:
    """Union of pieces (none missing or empty; float gaps healed), and whether the coverage
    union is still worth trying.

    Pieces of neighbouring cells meet at T-junctions, which the fast coverage union rejects;
    a plain overlay then does it. If that leaves several parts, they may be split only by
    float noise, so they are merged again snap-rounded to 1 mm. Parts left are apart, touch at
    a corner, or meet along a seam that snapping misses (`_heal_seams` tells them apart).
    """
    exact = False
    if try_coverage:
        try:
            union = shapely.coverage_union_all(parts)
            exact = shapely.is_valid(union) and np.isclose(union.area, shapely.area(parts).sum(),
                                                             rtol=1e-9)
        except shapely.errors.GEOSException:
            try_coverage = False
    if not exact:
        union = shapely.union_all(parts)
    if not shapely.is_valid(union):
        union = shapely.union_all(parts, grid_size=_SNAP_M)
    elif union.geom_type != "Polygon":
        # Re-noding the few parts is far cheaper than redoing the whole union snap-rounded.
        union = shapely.union_all(shapely.get_parts(union), grid_size=_SNAP_M)
    return _drop_slivers(union), try_coverage


def _heal_seams(union: Any, parts: np.ndarray) -> tuple[Any, bool]:
    """A union of several polygons, and whether its pieces (none missing or empty) join through
    shared edges.

    Pieces of neighbouring cells can share an edge only within float noise: on Chengdu's
    network, a few metres within 1 mm, after which the two edges part by a wedge a few
    millimetres wide. Even snap-rounded, their union then touches itself at a point and comes
    out as several polygons. Contiguity is the planner's rule, so it is read from
    `piece_adjacency` (1 m of edge within `_SNAP_M`); where the pieces join, a closing by
    `_SNAP_M` draws the union as one polygon, filling only gaps narrower than twice that.
    Pieces that do not join are left as they are.
    """
    from scipy.sparse.csgraph import connected_components

    n_joined, _ = connected_components(_adjacency(parts, _MIN_SHARED_M), directed=False)
    if n_joined != 1:        # apart (or no piece at all)
        return union, False
    closed = shapely.buffer(shapely.buffer(union, _SNAP_M, join_style="mitre"), -_SNAP_M,
                            join_style="mitre")
    return (_drop_slivers(closed) if shapely.get_type_id(closed) == 3 else union), True


def _drop_slivers(union: Any) -> Any:
    """`union` without holes smaller than `_SLIVER_M2`: float gaps between pieces, not holes."""
    polygons = shapely.get_parts(union)
    if not any(len(polygon.interiors) for polygon in polygons):
        return union
    kept = [shapely.Polygon(polygon.exterior, [ring for ring in polygon.interiors
                                               if shapely.Polygon(ring).area >= _SLIVER_M2])
            for polygon in polygons]
    return kept[0] if union.geom_type == "Polygon" else shapely.MultiPolygon(kept)


def unit_districts(units: gpd.GeoDataFrame, districts: gpd.GeoDataFrame,
                   cells: gpd.GeoDataFrame) -> tuple[np.ndarray, dict]:
    """
    District of each unit by its point, and which populated cells the district limits cut.

    Parameters
    ----------
    units
        Points with `cell_id` and `pop`, in a metric CRS.
    districts
        Polygons in the CRS of `units`; a unit on a shared border goes to the lowest row.
    cells
        Source cells with `cell_id`, in the CRS of `units`.

    Returns
    -------
    district : numpy.ndarray
        Row position in `districts` of each unit, -1 outside all.
    report : dict
        `cells_cut` (int): polygon cells holding units whose area lies more than 1% on each
        side of a district limit; `cut_cell_ids` (list of str, sorted); `units_outside` (int);
        `population_outside` (sum of `pop` of those units). Cut cells are repaired by sending
        each unit with its point, so their units may end up in different districts.

    Raises
    ------
    CRSError
        If a CRS is missing, not metric or differs between the inputs.
    InputError
        If a column is missing.
    """
    _require_metric_pair(units, districts, first="`units`", second="`districts`")
    _require_metric_pair(units, cells, first="`units`", second="`cells`")
    require_columns(units, ["cell_id", "pop"], name="`units`")
    require_columns(cells, ["cell_id"], name="`cells`")
    shapes = np.asarray(districts.geometry.values)
    tree = shapely.STRtree(shapes)
    district = label_units(units, districts)
    outside = district < 0
    cut_ids = _cut_cells(cells[cells["cell_id"].astype(str).isin(units["cell_id"].astype(str))],
                         shapes, tree)
    report = {"cells_cut": len(cut_ids), "cut_cell_ids": cut_ids,
              "units_outside": int(outside.sum()),
              "population_outside": units["pop"].to_numpy()[outside].sum().item()}
    logger.info("Units in %d districts: %d outside (pop %s); %d populated cells cut by limits",
                len(shapes), report["units_outside"], report["population_outside"], len(cut_ids))
    return district, report


def _cut_cells(cells: gpd.GeoDataFrame, shapes: np.ndarray, tree: shapely.STRtree) -> list[str]:
    """Ids of polygon cells whose largest share in one district is between 1% and 99%."""
    geoms = np.asarray(cells.geometry.values)
    area = shapely.area(geoms)
    # Cells wholly inside a district (the common case) skip the costly intersections.
    inside = np.zeros(len(geoms), dtype=bool)
    inside[tree.query(geoms, predicate="within")[0]] = True
    candidate = np.flatnonzero(~inside & (area > 0))
    cell_idx, district_idx = tree.query(geoms[candidate], predicate="intersects")
    cell_idx = candidate[cell_idx]
    inside_area = shapely.area(shapely.intersection(geoms[cell_idx], shapes[district_idx]))
    share = inside_area / area[cell_idx]
    largest = np.zeros(len(geoms))
    np.maximum.at(largest, cell_idx, share)
    cut = (largest > _CUT_SHARE) & (largest < 1 - _CUT_SHARE)
    return sorted(cells["cell_id"].astype(str).to_numpy()[cut].tolist())


def adjacency_graph(adjacency: scipy.sparse.spmatrix | scipy.sparse.sparray,
                    ids: Any = None) -> Any:
    """
    A unit adjacency (e.g. from `piece_adjacency`) as a libpysal ``Graph``, for PySAL tools.

    Parameters
    ----------
    adjacency
        Square n x n sparse matrix; a stored non-zero (i, j) makes unit j a neighbour of unit i.
        Its values become the weights as float64 (1.0 for the boolean `piece_adjacency`).
    ids
        n unique labels for rows/columns, e.g. the units' ``unit_id``; None numbers them 0..n-1.

    Returns
    -------
    libpysal.graph.Graph
        Built with ``Graph.from_sparse``; units without neighbours are its isolates.

    Raises
    ------
    InputError
        If libpysal is not installed (the ``peers`` extra), the matrix is not square, or `ids`
        is not n unique labels.
    """
    try:
        from libpysal.graph import Graph
    except ImportError as exc:
        msg = ("adjacency_graph needs libpysal: pip install \"coverage-planner[peers]\" (or use "
               "the scipy.sparse adjacency as it is).")
        raise InputError(msg) from exc
    matrix = scipy.sparse.csr_array(adjacency, dtype=np.float64)
    n, m = matrix.shape
    if n != m:
        msg = f"`adjacency` must be a square n x n matrix, got {n} x {m}."
        raise InputError(msg)
    if ids is not None:
        ids = pd.Index(ids)
        if len(ids) != n or not ids.is_unique:
            msg = (f"`ids` must be {n} unique labels, one per row of `adjacency`; got "
                   f"{len(ids)} label(s), {len(ids) - ids.nunique()} repeated.")
            raise InputError(msg)
    return Graph.from_sparse(matrix, ids=ids)
