"""Benchmarks: walk-time engines, the planner against its peers, the planner-quality suite."""
