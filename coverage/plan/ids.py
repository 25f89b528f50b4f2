"""
Stable community ids: which new community continues which old one, by the residents they share.
One rule for merge/split plans (`covplan.plan.pipeline`) and incremental re-plans
(`covplan.plan.replan`); see `inherit_ids`. Its two steps, `shared_residents` and `link_pairs`
(`covplan.metrics`), also count the residents who keep their community (`stability_share`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from covplan.metrics import link_pairs, shared_residents

__all__ = ["ID_RULE", "inherit_ids"]

ID_RULE = (
    "A new community inherits the id of the old community it continues: shared residents are "
    "counted for every (new, old) pair and pairs are taken largest first (ties: more shared "
    "units, then the old id, then the new community's order); a pair links when neither its "
    "new nor its old community is linked yet. So a community kept unchanged keeps its id, a "
    "merge takes the id of the old community giving it most residents, and each old id goes to "
    "at most one community. An old community split into several: the one inheriting its id and "
    "every community inheriting none whose largest group of residents comes from it share its "
    "id with a suffix, by its residents held, largest first: C012-a (the one that would have "
    "kept the bare id), C012-b, ... Every other community gets a new id N01, N02, ... (skipping "
    "ids in use).")


def _suffix(k: int) -> str:
    """-a ... -z, then -aa, -ab, ..."""
    letters = ""
    k += 1
    while k:
        k, r = divmod(k - 1, 26)
        letters = chr(ord("a") + r) + letters
    return letters


def inherit_ids(new_of_unit: np.ndarray, old_of_unit: np.ndarray, pop: np.ndarray,
                old_ids: Sequence[str], n_new: int, *, reserved: Iterable[str] = (),
                first_new: int = 1) -> list[str]:
    """
    Each new community's id by `ID_RULE`, from which old community its units came.

    Parameters
    ----------
    new_of_unit
        New community index per unit (0 .. n_new - 1; -1: in none, ignored).
    old_of_unit
        Old community index per unit (into `old_ids`; -1: in none).
    pop
        Residents per unit.
    old_ids
        The old communities' ids.
    n_new
        Number of new communities.
    reserved
        Ids in use elsewhere (e.g. frozen communities): never handed out. Old ids are never
        handed out as new ids either, so a retired id is not reused.
    first_new
        Number of the first new id tried (N01 by default).

    Returns
    -------
    list[str]
        One unique id per new community, deterministic for the same inputs.
    """
    n_old = len(old_ids)
    # Old index n_old: residents outside every old community (they compete as "largest group").
    shared = shared_residents(new_of_unit, old_of_unit, pop, n_old)
    groups: dict[int, list[int]] = {}                          # new -> the old it shares with
    for r, c in shared:
        groups.setdefault(r, []).append(c)

    ids: list[str | None] = [None] * n_new
    order = sorted((rc for rc in shared if rc[1] < n_old),
                   key=lambda rc: (-shared[rc][0], -shared[rc][1], str(old_ids[rc[1]]), rc[0]))
    heir = link_pairs(order)                                    # old -> new
    for k, r in heir.items():
        ids[r] = str(old_ids[k])

    used = set(reserved) | {str(i) for i in old_ids} | {i for i in ids if i is not None}
    # Splits: communities inheriting nothing whose largest group comes from an inherited old one.
    pieces: dict[int, list[int]] = {}
    for r in range(n_new):
        if ids[r] is not None or r not in groups:
            continue
        k = max(groups[r], key=lambda c: (*shared[r, c], -c))
        if k < n_old and k in heir:
            pieces.setdefault(k, [heir[k]]).append(r)
    for k in sorted(pieces, key=lambda k: str(old_ids[k])):
        members = sorted(pieces[k], key=lambda r: (-shared[r, k][0], -shared[r, k][1], r))
        base, n = str(old_ids[k]), 0
        for r in members:
            while f"{base}-{_suffix(n)}" in used:
                n += 1
            ids[r] = f"{base}-{_suffix(n)}"
            used.add(ids[r])
            n += 1
    number = first_new
    for r in range(n_new):
        if ids[r] is None:
            while f"N{number:02d}" in used:
                number += 1
            ids[r] = f"N{number:02d}"
            used.add(ids[r])
    return [str(i) for i in ids]
