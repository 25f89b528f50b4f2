"""Solvers: the community partition, center siting, the exact MIP yardstick and the feasibility bound."""
