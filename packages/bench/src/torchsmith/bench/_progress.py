"""A rich live display of which case is timed and how many samples it has."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

OnProgress = Callable[[str, int, int, int], None]


@contextmanager
def live_progress(
    also: OnProgress | None = None, console: Console | None = None
) -> Iterator[OnProgress]:
    """Yield a progress callback that drives a bar on stderr (and calls ``also``)."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[samples]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console or Console(stderr=True)) as bar:
        task = bar.add_task("benchmarks", total=None, samples="")

        def update(label: str, done: int, total: int, samples: int) -> None:
            text = f"{samples} samples" if samples else ""
            # Case keys hold brackets (name[n=64]) that rich would read as markup.
            bar.update(task, description=escape(label), completed=done, total=total,
                       samples=text)  # fmt: skip
            if also is not None:
                also(label, done, total, samples)

        yield update
