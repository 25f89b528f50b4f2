"""Small vectorised look-ups on CSR matrices whose stored entries (zeros included) carry meaning."""

from __future__ import annotations

import weakref

import numpy as np
import scipy.sparse as sp

# Sorted entry keys (row * n_cols + column) per matrix, built once: the planner looks up
# pieces of one matrix thousands of times, and rebuilding the keys made each look-up cost
# all its stored pairs. Keyed by id with a weak reference (sparse matrices are unhashable); an
# entry whose matrix died or changed its stored pairs is rebuilt.
_KEYS: dict[int, tuple[weakref.ref, int, np.ndarray]] = {}


def _entry_keys(matrix: sp.csr_matrix) -> np.ndarray:
    held = _KEYS.get(id(matrix))
    if held is not None and held[0]() is matrix and held[1] == matrix.nnz:
        return held[2]
    entry_rows = np.repeat(np.arange(matrix.shape[0], dtype="int64"), np.diff(matrix.indptr))
    keys = entry_rows * matrix.shape[1] + matrix.indices
    key = id(matrix)
    _KEYS[key] = (weakref.ref(matrix, lambda _, key=key: _KEYS.pop(key, None)), matrix.nnz, keys)
    return keys


def lookup(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    ``matrix[rows[i], cols[i]]`` for every i, and whether that entry is stored.

    Absent entries give (inf, False); explicit zeros give (0, True). The matrix must have sorted
    indices (CSR entries sorted by row then column give sorted keys row * n_cols + column).
    """
    rows = np.asarray(rows, dtype="int64")
    cols = np.asarray(cols, dtype="int64")
    values = np.full(len(rows), np.inf)
    found = np.zeros(len(rows), dtype=bool)
    if len(rows) == 0 or matrix.nnz == 0:
        return values, found
    n_cols = matrix.shape[1]
    keys = _entry_keys(matrix)
    wanted = rows * n_cols + cols
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    found = keys[pos] == wanted
    values[found] = matrix.data[pos[found]]
    return values, found


def entries_of(indptr: np.ndarray, majors: np.ndarray) -> np.ndarray:
    """Positions of the stored entries of the given rows (CSR; columns for CSC), in order: the
    planner sums a few rows of a matrix thousands of times, and fancy indexing built a new
    sparse matrix for each sum (more than half of `seed_centers` time on Chengdu)."""
    majors = np.asarray(majors, dtype="int64")
    starts = indptr[majors].astype("int64")
    lengths = indptr[majors + 1].astype("int64") - starts
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return offsets + np.arange(int(lengths.sum()), dtype="int64")


def row_slice(matrix: sp.csr_matrix, row: int) -> slice:
    """The stored entries of one row of a CSR matrix (one column of a CSC one): `matrix.indices[...]`,
    `matrix.data[...]`."""
    return slice(matrix.indptr[row], matrix.indptr[row + 1])


def key_groups(keys) -> tuple[np.ndarray, np.ndarray]:
    """Rows with equal keys as one group: each row's group (numbered in order of first
    appearance) and each group's first row."""
    seen: dict = {}
    group = np.array([seen.setdefault(key, len(seen)) for key in keys], dtype="int64")
    return group, np.unique(group, return_index=True)[1]
