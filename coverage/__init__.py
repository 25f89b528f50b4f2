"""coverage — plan 15-minute service circles: who walks to which service center, and communities of ~10,000."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# The public entry points, importable from the package (`from coverage import plan_communities`).
# They load on first use, so `import coverage` and `covplan --help` stay quick.
_PUBLIC = {
    "load_network": "coverage.network", "WalkNetwork": "coverage.network",
    "load_population": "coverage.population", "Population": "coverage.population",
    "load_centers": "coverage.inputs", "load_communities": "coverage.inputs",
    "load_districts": "coverage.inputs",
    "compute_reach": "coverage.reach", "ReachMatrix": "coverage.reach",
    "compute_isochrones": "coverage.isochrones", "dissolve_isochrones": "coverage.isochrones",
    "assess_coverage": "coverage.assess", "CoverageResult": "coverage.assess",
    "PlanConfig": "coverage.config",
    "plan_communities": "coverage.plan", "Plan": "coverage.plan",
    "choose_community_centers": "coverage.siting", "site_new_centers": "coverage.siting",
    "load_scenario": "coverage.scenarios", "load_inputs": "coverage.scenarios",
    "apply_scenario": "coverage.scenarios", "Scenario": "coverage.scenarios",
    "plan_scenario": "coverage.replan", "replan_scenario": "coverage.replan",
    "replan": "coverage.replan",
    "compare_plans": "coverage.compare", "write_comparison": "coverage.compare",
    "coverage_map": "coverage.maps", "isochrone_map": "coverage.maps",
    "plan_map": "coverage.maps", "save_map": "coverage.maps",
    "write_plan": "coverage.io", "read_plan": "coverage.io",
    "build_demo_city": "coverage.demo",
    "CoverageError": "coverage._errors", "InputError": "coverage._errors",
    "CRSError": "coverage._errors", "DataSourceError": "coverage._errors",
    "InfeasibleError": "coverage._errors", "CoverageWarning": "coverage._errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        msg = f"module 'coverage' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
