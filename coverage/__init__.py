"""coverage — plan 15-minute service circles: who walks to which service center, and communities of ~10,000."""

from __future__ import annotations

__version__ = "0.1.0"
