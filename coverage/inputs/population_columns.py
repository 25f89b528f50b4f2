"""
Which column of a population table holds what: counts, cell ids, H3 ids.

Never a guess: a counts column is taken unasked only by its name, and several candidates raise
with the list and the flag or keyword that picks one.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import h3
import numpy as np
import pandas as pd
from covplan._validate import require_columns
from covplan.errors import InputError
from covplan.inputs.areas import LAT_NAMES, LON_NAMES

__all__ = ["find_cell_ids", "find_h3_column", "numeric_hint", "pick_population_column"]

# The population modules log under one name, the one users configured before they were split.
logger = logging.getLogger("covplan.inputs.population")

# Names that mark a population column (case-insensitive; 'asukkaita' is HSY's). Only these or
# popYYYY are taken unasked: any other numeric column may count jobs or households.
_POP_NAMES = ("pop", "population", "pop_total", "population_total", "total", "residents",
              "inhabitants", "people", "persons", "count", "value", "asukkaita", "habitantes",
              "einwohner")
_POP_PATTERN = re.compile(r"^(pop|population)[_-]?(19|20)\d{2}$", re.IGNORECASE)
_ID_NAMES = ("cell_id", "id", "h3", "h3_id", "hex_id", "grid_id", "index", "fid", "objectid")
# Text columns with these names must hold H3 ids (every row); other text columns count as H3
# when most of a sample of _H3_SAMPLE values spread over the column are valid ids.
_H3_NAMES = ("h3", "h3_id", "h3_index", "h3index", "h3_cell", "hex", "hex_id", "hexid",
             "hex_index", "hexagon", "hexagon_id")
_H3_SAMPLE = 1_000


def find_cell_ids(frame: pd.DataFrame, id_column: str | None, *,
                  name: str) -> tuple[pd.Series, Any]:
    """Cell ids as strings and the column they came from (None: numbered 0..n-1)."""
    if id_column is not None:
        require_columns(frame, [id_column], name=name)
        ids = frame[id_column]
        bad = ids.isna() | ids.duplicated(keep=False)
        if bad.any():
            msg = (f"{name}: id column {id_column!r} has missing or repeated values, e.g. "
                   f"{list(ids[bad].head(5))}; cell ids must be unique. Aggregate the rows, pass "
                   "another id_column=, or none to number the cells 0..n-1.")
            raise InputError(msg)
        return _id_strings(ids), id_column
    by_name = {str(c).lower(): c for c in reversed(frame.columns)}
    for want in _ID_NAMES:
        column = by_name.get(want)
        if column is not None and frame[column].notna().all() and frame[column].is_unique:
            return _id_strings(frame[column]), column
    return pd.Series(np.arange(len(frame)).astype(str)), None


def _id_strings(ids: pd.Series) -> pd.Series:
    """Ids as str, writing whole floats (1.0, read from a float column) as '1'."""
    if pd.api.types.is_float_dtype(ids) and (ids == np.round(ids)).all():
        ids = ids.astype(np.int64)
    return ids.astype(str).reset_index(drop=True)


def pick_population_column(frame: pd.DataFrame, *, exclude: set[Any], name: str) -> Any:
    """The one column named like a population count; never a numeric column by elimination
    (a `jobs` column is numeric too), so anything else raises with the candidates."""
    columns = [c for c in frame.columns if c not in exclude]
    named = [c for c in columns
             if str(c).lower() in _POP_NAMES or _POP_PATTERN.match(str(c))]
    if len(named) == 1:
        logger.info("%s: population column %r (by its name)", name, named[0])
        return named[0]
    if named:
        msg = (f"{name}: several columns could hold the population: {named}. Pick one with "
               f"--population-column (CLI) or population_column= (Python), e.g. "
               f"population_column={named[0]!r}.")
        raise InputError(msg)
    msg = (f"{name}: no column is named like a population count (pop, population, residents, "
           f"inhabitants, ... or popYYYY); it has {columns}. Other numeric columns are not "
           "taken unasked, as they may count jobs or households: name the counts column with "
           f"--population-column (CLI) or population_column= (Python){numeric_hint(frame, exclude)}.")
    raise InputError(msg)


def numeric_hint(frame: pd.DataFrame, exclude: set[Any]) -> str:
    """', e.g. one of the numeric columns [...]' for messages, or '' when there is none."""
    skip = {*_ID_NAMES, *LON_NAMES, *LAT_NAMES}
    numeric = [c for c in frame.columns if c not in exclude and str(c).lower() not in skip and
               not pd.api.types.is_bool_dtype(frame[c]) and
               pd.api.types.is_numeric_dtype(frame[c])]
    return f", e.g. one of the numeric columns {numeric}" if numeric else ""


def find_h3_column(table: pd.DataFrame, prefer: Any = None, *, name: str) -> Any:
    """
    The column of H3 ids, or None: a text column named like H3 (h3, hex_id, ...), or one where
    most of a sample spread over the whole column are valid ids. Its every row is checked
    later; several such columns raise rather than pick one.
    """
    found = []
    for column in table.columns:
        values = table[column]
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            continue
        present = values.dropna()
        if str(column).lower() in _H3_NAMES:
            found.append(column)
        elif len(present):
            # evenly spread, so a bad value near the top (or a good one) cannot decide alone
            sample = present.iloc[np.linspace(0, len(present) - 1, min(len(present), _H3_SAMPLE),
                                              dtype=np.int64)]
            share = np.mean([isinstance(v, str) and h3.is_valid_cell(v) for v in sample])
            if share > 0.5:
                found.append(column)
    if prefer is not None and prefer in found:
        return prefer
    if len(found) > 1:
        msg = (f"{name}: several columns look like H3 ids: {found}; keep one in the file, or "
               f"pass h3_column= (Python), e.g. h3_column={found[0]!r}.")
        raise InputError(msg)
    return found[0] if found else None
