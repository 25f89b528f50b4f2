"""A short fuzz of the loaders: truncated and byte-flipped copies of small valid inputs (seeded)
either load or raise a CoverageError subclass, never another exception type."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from covplan.errors import CoverageError, CoverageWarning
from covplan.inputs.areas import load_centers, load_communities
from covplan.inputs.network import load_network
from covplan.inputs.population import load_population
from shapely.geometry import Point, box

UTM = "EPSG:32633"
X0, Y0 = 500_000.0, 4_000_000.0
COPIES = 15         # truncated and as many byte-flipped copies per file: 180 loads, a few s


def _pbf(path: Path) -> Path:
    """A 6 x 6 street grid about 80-110 m apart as OSM PBF (written by pyosmium)."""
    import osmium

    n = 6
    with osmium.SimpleWriter(str(path)) as writer:
        for r in range(n):
            for c in range(n):
                writer.add_node(osmium.osm.mutable.Node(
                    id=r * n + c + 1, location=(3.0 + 0.001 * c, 45.0 + 0.001 * r), version=1))
        for i in range(n):
            writer.add_way(osmium.osm.mutable.Way(
                id=i + 1, nodes=[i * n + c + 1 for c in range(n)], version=1,
                tags={"highway": "residential", "name": f"Row {i}"}))
            writer.add_way(osmium.osm.mutable.Way(
                id=n + i + 1, nodes=[r * n + i + 1 for r in range(n)], version=1,
                tags={"highway": "footway"}))
    return path


def _sources(folder: Path) -> dict[str, tuple[Path, object]]:
    """file kind -> (a small valid file, its loader)."""
    cells = [box(X0 + 100 * c, Y0 + 100 * r, X0 + 100 * (c + 1), Y0 + 100 * (r + 1))
             for r in range(4) for c in range(4)]
    grid = gpd.GeoDataFrame({"cell_id": [f"c{i}" for i in range(16)],
                             "pop": np.arange(16) * 7 + 1}, geometry=cells, crs=UTM)
    grid.to_file(folder / "pop.gpkg", layer="grid")
    tif = folder / "pop.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=5, height=4, count=1, dtype="int32",
                       crs=UTM, nodata=-1, transform=Affine(100, 0, X0, 0, -100, Y0)) as dst:
        dst.write((np.arange(20).reshape(4, 5) * 3 + 1).astype("int32"), 1)
    pd.DataFrame({"lon": [13.40, 13.41, 13.42], "lat": [52.50, 52.51, 52.50],
                  "population": [3, 4, 5]}).to_csv(folder / "pop.csv", index=False)
    centers = gpd.GeoDataFrame({"center_id": ["a", "b"]}, crs=UTM,
                               geometry=[Point(X0 + 50, Y0 + 50), Point(X0 + 250, Y0 + 150)])
    centers.to_file(folder / "centers.geojson")
    grid.rename(columns={"cell_id": "community_id"}).to_file(folder / "communities.fgb")
    return {"pbf": (_pbf(folder / "net.osm.pbf"), load_network),
            "gpkg": (folder / "pop.gpkg", load_population),
            "tif": (tif, load_population),
            "csv": (folder / "pop.csv", load_population),
            "geojson": (folder / "centers.geojson", load_centers),
            "fgb": (folder / "communities.fgb", load_communities)}


def _damaged(raw: bytes, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """COPIES truncated and COPIES byte-flipped copies of `raw`."""
    out = [(f"cut{i}", raw[:int(rng.integers(1, len(raw)))]) for i in range(COPIES)]
    for i in range(COPIES):
        flipped = bytearray(raw)
        for pos in rng.integers(0, len(raw), int(rng.integers(1, 9))):
            flipped[pos] ^= int(rng.integers(1, 256))
        out.append((f"flip{i}", bytes(flipped)))
    return out


KINDS = ("pbf", "gpkg", "tif", "csv", "geojson", "fgb")


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_files_load_or_raise_a_coverage_error(tmp_path: Path, kind: str) -> None:
    path, loader = _sources(tmp_path)[kind]
    loader(path)                                   # the intact file loads
    rng = np.random.default_rng(sorted(KINDS).index(kind))
    outcomes = {"loaded": 0, "refused": 0}
    for label, blob in _damaged(path.read_bytes(), rng):
        copy = path.with_name(f"{label}_{path.name}")
        copy.write_bytes(blob)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CoverageWarning)   # e.g. a flipped count
                loader(copy)
        except CoverageError as exc:
            assert copy.name in str(exc), f"{label}: the message does not name the file: {exc}"
            outcomes["refused"] += 1
        else:
            outcomes["loaded"] += 1
    assert sum(outcomes.values()) == 2 * COPIES
    assert outcomes["refused"] > 0, "no damaged copy was refused: the fuzz does not bite"
