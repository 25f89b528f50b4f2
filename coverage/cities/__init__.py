"""Built-in cities: the embedded demo city and the synthetic cities of the quality suite."""
