"""The one percentile the benchmarks report: the kit's nearest rank, so their figures
compare with every other tool's."""

from __future__ import annotations

from aimesh_common.stats import percentile

__all__ = ["percentile"]
