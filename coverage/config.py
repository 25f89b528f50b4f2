"""Frozen parameter sets shared by the planner, the CLI and scenarios."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from covplan._parallel import usable_cpus
from covplan.defaults import (
    DEFAULT_CANDIDATE_SPACING_M,
    DEFAULT_MAX_MINUTES,
    DEFAULT_WALK_SPEED_KMH,
    MAX_MINUTES_LIMIT,
    MAX_WALK_SPEED_KMH,
    population_band,
)
from covplan.errors import InputError

EXCEPTION_MODES = ("separate", "attach")

# PlanConfig field -> the `covplan plan` / `covplan demo` flag that sets it (None: no flag; the
# scenario's [plan] table and the API set it). covplan.cli maps its flags to fields likewise.
FLAGS = {"target_pop": "--target", "tolerance": "--tolerance", "max_minutes": "--minutes",
         "walk_speed_kmh": "--walk-speed", "candidate_spacing_m": "--candidate-spacing",
         "max_unit_pop": "--max-unit-pop", "restarts": "--restarts", "tries": "--tries",
         "seed": "--seed",
         "stability_minutes": "--stability-weight", "exceptions": "--exceptions",
         "min_pop_exception": None, "max_new_centers": "--max-new-centers",
         "new_center_cost": "--new-center-cost", "grids": "--grids",
         "grid_target": "--grid-target", "grid_tolerance": "--grid-tolerance",
         "grid_minutes": "--grid-minutes", "household_size": "--household-size",
         "jobs": "--jobs"}


def parameter_names(field: str) -> str:
    """Where a PlanConfig field is set: '--seed / PlanConfig.seed' (with its scenario key)."""
    flag = FLAGS.get(field)
    api = f"PlanConfig.{field}, [plan] {field} in a scenario"
    return f"{flag} / {api}" if flag else api


def _number(value) -> bool:
    """A finite real number; bool is not one (True would silently be 1)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# Field -> (test, what a valid value is); the message names the flag and the field.
_RULES = {
    "target_pop": (lambda v: _number(v) and v > 0, "a positive number of residents"),
    "tolerance": (lambda v: _number(v) and 0 < v < 1,
                  "a share strictly between 0 and 1, e.g. 0.2 for ±20 %"),
    "max_minutes": (lambda v: _number(v) and 0 < v <= MAX_MINUTES_LIMIT,
                    f"greater than 0 and at most {MAX_MINUTES_LIMIT:g} minutes"),
    "walk_speed_kmh": (lambda v: _number(v) and 0 < v <= MAX_WALK_SPEED_KMH,
                       f"greater than 0 and at most {MAX_WALK_SPEED_KMH:g} km/h"),
    "candidate_spacing_m": (lambda v: _number(v) and v > 0, "a positive distance in metres"),
    "max_unit_pop": (lambda v: v is None or (_whole(v) and v > 0),
                     ("a positive whole number of residents, or None to never split, written 0 "
                      "on the command line and in a scenario")),
    "restarts": (lambda v: _whole(v) and v >= 1, "a whole number, at least 1"),
    "tries": (lambda v: _whole(v) and v >= 1, "a whole number, at least 1"),
    "seed": (lambda v: _whole(v) and v >= 0, "a whole number ≥ 0"),
    "stability_minutes": (lambda v: _number(v) and v >= 0, "a number of minutes ≥ 0"),
    "exceptions": (lambda v: isinstance(v, str) and v in EXCEPTION_MODES,
                   f"one of {', '.join(EXCEPTION_MODES)}"),
    "min_pop_exception": (lambda v: _number(v) and 0 <= v < 1,
                          "a share of the target in [0, 1)"),
    "max_new_centers": (lambda v: v is None or (_whole(v) and v >= 0),
                        "a whole number of new sites ≥ 0, or None for no limit"),
    "new_center_cost": (lambda v: _number(v) and v >= 0,
                        "a number of residents ≥ 0 (0: new sites cost nothing)"),
    "grids": (lambda v: isinstance(v, bool), "true or false"),
    "grid_target": (lambda v: _number(v) and v > 0, "a positive number of residents"),
    "grid_tolerance": (lambda v: _number(v) and 0 < v < 1, "a share strictly between 0 and 1"),
    "grid_minutes": (lambda v: _number(v) and 0 < v <= MAX_MINUTES_LIMIT,
                     f"greater than 0 and at most {MAX_MINUTES_LIMIT:g} minutes"),
    "household_size": (lambda v: v is None or (_number(v) and v > 0),
                       "a positive number of residents per household, or None"),
    "jobs": (lambda v: v == "auto" or (_whole(v) and v >= 1),
             "a whole number of worker processes, at least 1, or 'auto' for one per CPU"),
}


@dataclass(frozen=True, slots=True)
class PlanConfig:
    """
    What a plan aims at. Every field is a keyword of `plan_communities` and a `covplan plan` flag.

    target_pop, tolerance
        Residents per community and the allowed relative deviation (0 < tolerance < 1).
    max_minutes, walk_speed_kmh
        The service circle: walking minutes to the center (access legs included) at this speed.
    candidate_spacing_m
        Density of candidate sites for new centers: one per populated square of this side.
    max_unit_pop
        Cells holding more residents are split onto the network nodes inside them, so
        communities can be balanced finer than the grid (None: never split).
    restarts, seed
        Seeded restarts of the planner (plus one from a minimum cover where covering everyone
        takes nearly as many centers as the target allows communities: slow walking); the same
        seed gives the same plan.
    tries
        Whole plans made from the seeds `seed`, `seed` + 1, ... (each with its restarts,
        improvement and last steps); the best in the rules' order wins, ties to the earliest
        seed, and no more are tried once a plan has every resident in a balanced community and
        none tiny. Each try costs a plan's time; where a stretch is thin for the band (slow
        walking, a large target, a narrow tolerance), seeds end up to about 4 points of balanced
        residents apart, so more tries buy balance with time.
    stability_minutes
        Per-person cost, in walking minutes, of moving a resident out of their old community.
    exceptions
        Residents who provably can only be in an undersized community (on a network island, or
        in a pocket where no site gathers the band's floor within the limit) form exception
        communities of their own ("separate", each with a center they reach), or join the
        bordering community as an area served remotely, beyond the walking limit ("attach").
    min_pop_exception
        A community below this share of the target must be a proven exception; the planner
        dissolves others into their neighbours.
    max_new_centers
        At most this many new sites (None: no limit). A plan that wants more is made again on
        the existing centers and the new sites it needed most; residents then beyond every
        open site are reported as not covered.
    new_center_cost
        What a new site costs, in residents in balanced communities: the plan is also made
        with half, a quarter and none of its new sites, and the one with the fewest residents
        outside balanced communities (the unserved included) plus this cost per new site wins
        (0: not weighed, one plan).
    grids, grid_target, grid_tolerance, grid_minutes, household_size
        Also split every community into grids (网格) of about `grid_target` residents (±
        `grid_tolerance`), each with a grid station its residents reach within `grid_minutes`;
        `household_size` gives each grid's households (see `covplan.plan.grids.plan_grids`).
    jobs
        Worker processes planning districts (or a large city's regions) side by side, or,
        for a city planned in one part, its restarts and its two merge/split plans ("auto":
        one per CPU this process may use). How the plan is computed, not what: every output
        is the same for any value, so it is left out of `to_dict` (the report, the resolved
        scenario).
    """

    target_pop: int = 10_000
    tolerance: float = 0.2
    max_minutes: float = DEFAULT_MAX_MINUTES
    walk_speed_kmh: float = DEFAULT_WALK_SPEED_KMH
    candidate_spacing_m: float = DEFAULT_CANDIDATE_SPACING_M
    max_unit_pop: int | None = 500
    restarts: int = 3
    tries: int = 1
    seed: int = 0
    stability_minutes: float = 2.0
    exceptions: str = "separate"
    min_pop_exception: float = 0.5
    max_new_centers: int | None = None
    new_center_cost: float = 0.0
    grids: bool = False
    grid_target: int = 1_000
    grid_tolerance: float = 0.25
    grid_minutes: float = 5.0
    household_size: float | None = None
    jobs: int | str = 1

    def __post_init__(self) -> None:
        # Checked once here, so a bad value fails at once with its flag named, not deep in numpy.
        for name, (ok, rule) in _RULES.items():
            value = getattr(self, name)
            if not ok(value):
                msg = f"{name} must be {rule} ({parameter_names(name)}), got {value!r}."
                raise InputError(msg)

    @property
    def min_pop(self) -> float:
        return population_band(self.target_pop, self.tolerance)[0]

    @property
    def max_pop(self) -> float:
        return population_band(self.target_pop, self.tolerance)[1]

    @property
    def tiny_pop(self) -> float:
        """The tiny-community floor: a regular community below it breaks the
        `min_pop_exception` rule."""
        return self.min_pop_exception * self.target_pop

    @property
    def workers(self) -> int:
        """`jobs` as a number of processes."""
        return usable_cpus() if self.jobs == "auto" else int(self.jobs)

    def to_dict(self) -> dict:
        """The parameters that shape the plan (`jobs` does not, so plan files never differ by it)."""
        return {k: v for k, v in asdict(self).items() if k != "jobs"}
