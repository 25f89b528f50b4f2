"""The one place progress bars are made: tqdm, off unless asked for."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_bar(items: Iterable[T], *, desc: str, total: int | None = None,
                 progress: bool = False) -> Iterable[T]:
    """Wrap `items` in a tqdm bar when `progress` is true; tests and the library stay quiet."""
    return tqdm(items, desc=desc, total=total, disable=not progress, leave=False)
