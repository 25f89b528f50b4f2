"""Frozen parameter sets shared by the planner, the CLI and scenarios."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
        Seeded restarts of the planner; the same seed gives the same plan.
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
    """

    target_pop: int = 10_000
    tolerance: float = 0.2
    max_minutes: float = DEFAULT_MAX_MINUTES
    walk_speed_kmh: float = DEFAULT_WALK_SPEED_KMH
    candidate_spacing_m: float = DEFAULT_CANDIDATE_SPACING_M
    max_unit_pop: int | None = 500
    restarts: int = 3
    seed: int = 0
    stability_minutes: float = 2.0
    exceptions: str = "separate"
    min_pop_exception: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.target_pop, (int, float)) or self.target_pop <= 0:
            msg = f"`target_pop` must be a positive number of residents, got {self.target_pop!r}."
            raise InputError(msg)
        if not 0 < self.tolerance < 1:
            msg = f"`tolerance` must lie strictly between 0 and 1 (e.g. 0.2 for ±20 %), got {self.tolerance!r}."
            raise InputError(msg)
        if not 0 < self.max_minutes <= MAX_MINUTES_LIMIT:
            msg = f"`max_minutes` must be greater than 0 and at most {MAX_MINUTES_LIMIT:g}, got {self.max_minutes!r}."
            raise InputError(msg)
        if not 0 < self.walk_speed_kmh <= MAX_WALK_SPEED_KMH:
            msg = (f"`walk_speed_kmh` must be greater than 0 and at most {MAX_WALK_SPEED_KMH:g}, "
                   f"got {self.walk_speed_kmh!r}.")
            raise InputError(msg)
        if self.candidate_spacing_m <= 0:
            msg = f"`candidate_spacing_m` must be positive, got {self.candidate_spacing_m!r}."
            raise InputError(msg)
        if self.max_unit_pop is not None and self.max_unit_pop <= 0:
            msg = f"`max_unit_pop` must be positive or None, got {self.max_unit_pop!r}."
            raise InputError(msg)
        if self.exceptions not in EXCEPTION_MODES:
            msg = f"`exceptions` must be one of {', '.join(EXCEPTION_MODES)}, got {self.exceptions!r}."
            raise InputError(msg)
        if not 0 <= self.min_pop_exception < 1:
            msg = ("`min_pop_exception` must lie in [0, 1) (a share of the target), got "
                   f"{self.min_pop_exception!r}.")
            raise InputError(msg)
        if self.restarts < 1:
            msg = f"`restarts` must be at least 1, got {self.restarts!r}."
            raise InputError(msg)

    @property
    def min_pop(self) -> float:
        return population_band(self.target_pop, self.tolerance)[0]

    @property
    def max_pop(self) -> float:
        return population_band(self.target_pop, self.tolerance)[1]

    def to_dict(self) -> dict:
        return asdict(self)
