"""
The library's default parameters, in one light module.

The loaders, the reach matrix, the planner, `PlanConfig` and the ``covplan`` command all take
their defaults and limits from here. The module imports nothing beyond the standard library, so
`covplan.config` and ``covplan --help`` can use these values without loading geopandas, scipy
or OR-Tools.

Notes
-----
DEFAULT_WALK_SPEED_KMH, MAX_WALK_SPEED_KMH
    Walking speed in km/h used to turn network metres into minutes, and its upper limit.
DEFAULT_MAX_MINUTES, MAX_MINUTES_LIMIT
    The service-circle limit in walking minutes (access legs included), and the largest
    limit accepted.
DEFAULT_CANDIDATE_SPACING_M
    One candidate site for a new center per populated square of this side, in metres.
DEFAULT_BANDS
    The walking-minute limits of isochrones when none are given.
population_band
    The smallest and largest community population within a tolerance of the target.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_BANDS",
    "DEFAULT_CANDIDATE_SPACING_M",
    "DEFAULT_MAX_MINUTES",
    "DEFAULT_WALK_SPEED_KMH",
    "MAX_MINUTES_LIMIT",
    "MAX_WALK_SPEED_KMH",
    "population_band",
]

DEFAULT_WALK_SPEED_KMH = 4.5
MAX_WALK_SPEED_KMH = 30.0
DEFAULT_MAX_MINUTES = 15.0
MAX_MINUTES_LIMIT = 24 * 60.0
DEFAULT_CANDIDATE_SPACING_M = 200.0
DEFAULT_BANDS = (5.0, 10.0, 15.0)


def population_band(target_pop: float, tolerance: float) -> tuple[float, float]:
    """The smallest and largest community population within `tolerance` of `target_pop`."""
    return target_pop * (1 - tolerance), target_pop * (1 + tolerance)
