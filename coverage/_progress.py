"""The one place progress bars are made: tqdm, off unless asked for, and only on a terminal."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_bar(items: Iterable[T], *, desc: str, total: int | None = None,
                 progress: bool = False) -> Iterable[T]:
    """
    Wrap `items` in a tqdm bar when `progress` is true; tests and the library stay quiet.

    Even when asked for, the bar is drawn only where stderr is a terminal (tqdm's
    ``disable=None``): a log file, a pipe or CI gets no carriage-return output. In a notebook
    with ipywidgets, tqdm.auto draws its widget.
    """
    return tqdm(items, desc=desc, total=total, disable=None if progress else True, leave=False)
