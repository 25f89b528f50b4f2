"""The planning pipeline: a full plan of the city and an incremental re-plan of a scenario."""
