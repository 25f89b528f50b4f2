"""Partition population units into contiguous communities within a population band (see core)."""

from covplan.solve.partition.core import (
                                          Partition,
                                          PartitionProblem,
                                          choose_k,
                                          partition_units,
                                          population_band,
)
from covplan.solve.partition.search import band_key

__all__ = ["Partition", "PartitionProblem", "band_key", "choose_k", "partition_units",
           "population_band"]
