"""Progress while running: which case is timed and how many samples it has.

On a terminal a rich live bar; elsewhere (CI logs, a pipe), where a live display prints
nothing until it stops, one plain line when a case starts and one when it finishes.
"""

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
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield plain_lines(console, also)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[samples]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("benchmarks", total=None, samples="")

        def update(label: str, done: int, total: int, samples: int) -> None:
            text = f"{samples} samples" if samples else ""
            # Case keys hold brackets (name[n=64]) that rich would read as markup.
            bar.update(task, description=escape(label), completed=done, total=total,
                       samples=text)  # fmt: skip
            if also is not None:
                also(label, done, total, samples)

        yield update


def plain_lines(console: Console, also: OnProgress | None = None) -> OnProgress:
    """A progress callback printing ``label: started`` and ``label: N samples`` lines."""
    samples_of: dict[str, int] = {}

    def update(label: str, done: int, total: int, samples: int) -> None:
        if label not in samples_of:
            samples_of[label] = 0
            _line(console, f"[{done + 1}/{total}] {label}: started")
        elif samples:
            samples_of[label] = samples
        elif done > 0:  # the runner's finishing call carries no sample count
            _line(console, f"[{done}/{total}] {label}: {samples_of[label]} samples")
        if also is not None:
            also(label, done, total, samples)

    return update


def _line(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)
