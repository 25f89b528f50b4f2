"""coverage — plan 15-minute service circles: who walks to which service center, and communities of ~10,000."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# The public entry points, importable from the package (`from covplan import plan_communities`).
# They load on first use, so `import covplan` and `covplan --help` stay quick.
_PUBLIC = {
    "load_network": "covplan.network", "WalkNetwork": "covplan.network",
    "load_population": "covplan.population", "Population": "covplan.population",
    "load_centers": "covplan.inputs", "load_communities": "covplan.inputs",
    "load_districts": "covplan.inputs",
    "compute_reach": "covplan.reach", "ReachMatrix": "covplan.reach",
    "compute_isochrones": "covplan.isochrones", "dissolve_isochrones": "covplan.isochrones",
    "assess_coverage": "covplan.assess", "CoverageResult": "covplan.assess",
    "PlanConfig": "covplan.config",
    "plan_communities": "covplan.plan", "Plan": "covplan.plan",
    "choose_community_centers": "covplan.siting", "site_new_centers": "covplan.siting",
    "load_scenario": "covplan.scenarios", "load_inputs": "covplan.scenarios",
    "apply_scenario": "covplan.scenarios", "Scenario": "covplan.scenarios",
    "plan_scenario": "covplan.replan", "replan_scenario": "covplan.replan",
    "replan": "covplan.replan",
    "compare_plans": "covplan.compare", "write_comparison": "covplan.compare",
    "coverage_map": "covplan.maps", "isochrone_map": "covplan.maps",
    "plan_map": "covplan.maps", "save_map": "covplan.maps",
    "write_plan": "covplan.io", "read_plan": "covplan.io",
    "feasibility_bound": "covplan.bounds", "FeasibilityBound": "covplan.bounds",
    "build_demo_city": "covplan.demo",
    "build_synthetic_city": "covplan.synthetic", "SYNTHETIC_KINDS": "covplan.synthetic",
    "CoverageError": "covplan._errors", "InputError": "covplan._errors",
    "CRSError": "covplan._errors", "DataSourceError": "covplan._errors",
    "InfeasibleError": "covplan._errors", "CoverageWarning": "covplan._errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        msg = f"module 'covplan' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
