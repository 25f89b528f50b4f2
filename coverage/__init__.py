"""coverage — plan 15-minute service circles: who walks to which service center, and communities of ~10,000."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# The public entry points, importable from the package (`from covplan import plan_communities`).
# They load on first use, so `import covplan` and `covplan --help` stay quick.
_PUBLIC = {
    "load_network": "covplan.inputs.network", "WalkNetwork": "covplan.inputs.network",
    "as_walk_network": "covplan.inputs.network",
    "load_population": "covplan.inputs.population", "Population": "covplan.inputs.population",
    "as_population": "covplan.inputs.population",
    "adjacency_graph": "covplan.inputs.tessellation",
    "load_centers": "covplan.inputs.areas", "load_communities": "covplan.inputs.areas",
    "load_districts": "covplan.inputs.areas",
    "compute_reach": "covplan.reach.matrix", "ReachMatrix": "covplan.reach.matrix",
    "compute_isochrones": "covplan.reach.isochrones", "dissolve_isochrones": "covplan.reach.isochrones",
    "assess_coverage": "covplan.assess", "CoverageResult": "covplan.assess",
    "PlanConfig": "covplan.config",
    "plan_communities": "covplan.plan.pipeline", "Plan": "covplan.plan.pipeline",
    "choose_community_centers": "covplan.solve.siting", "site_new_centers": "covplan.solve.siting",
    "load_scenario": "covplan.scenarios", "load_inputs": "covplan.scenarios",
    "apply_scenario": "covplan.scenarios", "Scenario": "covplan.scenarios",
    "plan_scenario": "covplan.plan.replan", "replan_scenario": "covplan.plan.replan",
    "replan": "covplan.plan.replan",
    "compare_plans": "covplan.output.compare", "compare_map": "covplan.output.compare", "write_comparison": "covplan.output.compare",
    "coverage_map": "covplan.output.maps", "isochrone_map": "covplan.output.maps",
    "plan_map": "covplan.output.maps", "save_map": "covplan.output.maps",
    "write_plan": "covplan.output.files", "read_plan": "covplan.output.files",
    "feasibility_bound": "covplan.solve.bounds", "FeasibilityBound": "covplan.solve.bounds",
    "build_demo_city": "covplan.cities.demo",
    "build_synthetic_city": "covplan.cities.synthetic", "SYNTHETIC_KINDS": "covplan.cities.synthetic",
    "STRESS_KINDS": "covplan.cities.synthetic",
    "CoverageError": "covplan.errors", "InputError": "covplan.errors",
    "CRSError": "covplan.errors", "DataSourceError": "covplan.errors",
    "InfeasibleError": "covplan.errors", "CoverageWarning": "covplan.errors",
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
