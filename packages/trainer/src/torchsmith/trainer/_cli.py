"""``torchsmith train RECIPE_OR_CONFIG [--set k=v ...] [--out DIR] [--max-steps N]
[--resume latest|PATH] [--seed S]`` and ``torchsmith train --list``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from torchsmith.interfaces import TorchsmithError

from ._api import list_recipes, train
from ._distributed import shutdown
from ._step import NonFiniteLossError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="torchsmith train", description="Train a shipped recipe or a config file."
    )
    p.add_argument("config", nargs="?", help="recipe name (see --list) or a .toml/.yaml path")
    p.add_argument("--list", action="store_true", help="list the shipped recipes and exit")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set optim.lr=3e-4 (repeatable)",
    )
    p.add_argument("--out", help="run directory (checkpoints in OUT/checkpoints)")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps, with a checkpoint")
    p.add_argument("--resume", help="'latest' (newest checkpoint in OUT) or a checkpoint path")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _format_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """A warning on the command line: one line, without the source line that raised it.
    (Formatting, not showing, is replaced: a caller recording warnings still records them.)"""
    kind = "" if category is UserWarning else f"{category.__name__}: "
    return f"torchsmith train: warning: {kind}{message}\n"


def _print(line: str) -> None:
    """``line`` on stdout; if its reader went away (``| head``), nothing more is printed
    and the run's outcome, not the pipe's, decides the exit code."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again


def _shown(name: str, value: float) -> str:
    counted = name in ("step", "skipped_steps")  # whole numbers a script reads back
    return f"{name}={int(value)}" if counted else f"{name}={value:.4g}"


def main(argv: list[str]) -> int:
    """Run ``torchsmith train``: 0 on success, 2 on a bad config or checkpoint (or usage),
    3 when training stopped on a NaN/Inf loss, 130 on Ctrl-C."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also under `python -m torchsmith.trainer` (torchrun)
        print("torchsmith train: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for name in list_recipes():
            _print(name)
        return 0
    if not args.config:
        _parser().print_usage(sys.stderr)
        print(
            "torchsmith train: error: give a recipe name or config path (or --list)",
            file=sys.stderr,
        )
        return 2
    if args.max_steps is not None and args.max_steps <= 0:
        print("torchsmith train: error: --max-steps must be positive", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    formatted_before, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        metrics = train(
            args.config,
            overrides=args.overrides,
            out_dir=args.out,
            max_steps=args.max_steps,
            resume=args.resume,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except TorchsmithError as exc:
        print(f"torchsmith train: error: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, NonFiniteLossError) else 2
    finally:
        warnings.formatwarning = formatted_before
        shutdown()
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary line, not one a rank
        _print("done: " + ", ".join(_shown(k, v) for k, v in sorted(metrics.items())))
    return 0
