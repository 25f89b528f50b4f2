"""Small vectorised look-ups on CSR matrices whose stored entries (zeros included) carry meaning."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


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
    entry_rows = np.repeat(np.arange(matrix.shape[0], dtype="int64"), np.diff(matrix.indptr))
    keys = entry_rows * n_cols + matrix.indices
    wanted = rows * n_cols + cols
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    found = keys[pos] == wanted
    values[found] = matrix.data[pos[found]]
    return values, found
