"""The ``torchsmith`` command: a thin dispatcher over installed suites.

Each suite registers its subcommand in the ``torchsmith.commands`` entry-point
group as ``name = "module:function"``; the function takes the remaining
arguments and returns an exit code. Nothing is imported until a command runs,
so ``torchsmith --version`` stays fast whatever is installed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from ._errors import MissingSuiteError, TorchsmithError
from ._version import INTERFACES_VERSION

ENTRY_POINT_GROUP = "torchsmith.commands"

# The command each suite provides, so a missing one can name its package.
KNOWN_COMMANDS: dict[str, str] = {
    "train": "torchsmith-trainer",
    "generate": "torchsmith-generator",
    "bench": "torchsmith-bench",
    "doctor": "torchsmith-testing",
    "serve": "torchsmith-api",
}

CommandMain = Callable[[list[str]], int | None]


def installed_commands() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def installed_suites() -> list[tuple[str, str, str]]:
    """(distribution, version, interfaces requirement) for each installed torchsmith suite."""
    suites = []
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or ""
        if not name.startswith("torchsmith-") or name == "torchsmith-workspace":
            continue
        requirement = "-" if name == "torchsmith-interfaces" else "?"
        for req in dist.requires or []:
            if req.replace("_", "-").startswith("torchsmith-interfaces"):
                requirement = req.split(";")[0].removeprefix("torchsmith-interfaces").strip()
        suites.append((name, dist.version, requirement))
    return sorted(set(suites))


def _version_text() -> str:
    lines = [f"torchsmith interfaces {INTERFACES_VERSION}", ""]
    rows = [("suite", "version", "interfaces"), *installed_suites()]
    width = max(len(r[0]) for r in rows)
    lines += [f"{n:<{width}}  {v:<10}  {i}" for n, v, i in rows]
    return "\n".join(lines)


def _help_text() -> str:
    commands = installed_commands()
    lines = ["usage: torchsmith [--version] <command> [args...]", "", "commands:"]
    for name in sorted(set(commands) | set(KNOWN_COMMANDS)):
        if name in commands:
            dist = commands[name].dist
            lines.append(f"  {name:<10} ({dist.name if dist else 'installed'})")
        else:
            lines.append(f"  {name:<10} not installed: pip install {KNOWN_COMMANDS[name]}")
    lines.append("")
    lines.append("Run 'torchsmith <command> --help' for a command's options.")
    return "\n".join(lines)


def load_command(name: str) -> CommandMain:
    """The main function of subcommand ``name``, or a MissingSuiteError with the install line."""
    entry = installed_commands().get(name)
    if entry is None:
        if name in KNOWN_COMMANDS:
            package = KNOWN_COMMANDS[name]
            raise MissingSuiteError(
                f"'torchsmith {name}' needs {package}, which is not installed: "
                f"pip install {package}"
            )
        known = ", ".join(sorted(set(installed_commands()) | set(KNOWN_COMMANDS)))
        raise MissingSuiteError(f"unknown command {name!r}; commands are: {known}")
    try:
        main: CommandMain = entry.load()
    except ImportError as exc:
        dist = entry.dist.name if entry.dist else "its suite"
        raise MissingSuiteError(
            f"'torchsmith {name}' could not be loaded ({exc}); reinstall {dist}"
        ) from exc
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:  # a script that lost its command must not pass: usage, and exit 2
        print(_help_text(), file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help", "help"):
        print(_help_text())
        return 0
    if args[0] in ("-V", "--version"):
        print(_version_text())
        return 0
    try:
        command = load_command(args[0])
        code = command(args[1:])
    except TorchsmithError as exc:
        print(f"torchsmith {args[0]}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
