"""Walk times: the shortest-path engine, the units x candidates reach matrix, isochrones."""
