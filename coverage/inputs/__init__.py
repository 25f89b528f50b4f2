"""Reading the inputs: the walking network, the population grid, centers, communities, districts."""
