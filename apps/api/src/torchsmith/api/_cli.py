"""``torchsmith serve``: run the service, and manage its API keys.

torchsmith serve [--host 127.0.0.1] [--port 8000] [--data-dir DIR] [--workers N]
                 [--read-access public|key] [--cors-origin URL ...] [--allowed-host NAME ...]
torchsmith serve keys create NAME [--data-dir DIR]   # prints the key once
torchsmith serve keys list [--data-dir DIR]
torchsmith serve keys revoke KEY_ID [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._settings import Settings

DEFAULT_DATA_DIR = os.environ.get("TORCHSMITH_DATA_DIR", ".torchsmith")


def _bounded(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``, else a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not {what} ({low}-{high})")
        return value

    return parse


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchsmith serve",
        description="Run the torchsmith service (REST, WebSocket, dashboard). "
        "Manage API keys with 'torchsmith serve keys --help'.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: loopback only)"
    )
    parser.add_argument("--port", type=_bounded(1, 65535, "a TCP port"), default=8000)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(DEFAULT_DATA_DIR),
        help="store, keys and job files (default: ./.torchsmith)",
    )
    parser.add_argument(
        "--workers",
        type=_bounded(1, 64, "a number of jobs"),
        default=2,
        help="jobs running at once (1-64)",
    )
    parser.add_argument(
        "--read-access",
        choices=["public", "key"],
        default="public",
        help="whether read routes and the dashboard need a key",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="URL",
        help="allow this origin cross-site (repeatable; CORS is off without it)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this Host name (repeatable; a server bound to loopback "
        "answers only localhost, 127.0.0.1 and ::1, say a reverse proxy's name here)",
    )
    parser.add_argument("--log-level", default="warning")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The app's settings for ``torchsmith serve``'s arguments."""
    from ._origin import LOOPBACK_NAMES, is_loopback
    from ._settings import Settings

    own = LOOPBACK_NAMES if is_loopback(args.host) else ()  # else any, unless named
    return Settings(
        data_dir=args.data_dir,
        workers=args.workers,
        read_access=args.read_access,
        cors_origins=tuple(args.cors_origin),
        allowed_hosts=(*own, *args.allowed_host),
    )


def _keys_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchsmith serve keys", description="Create, list or revoke API keys."
    )
    parser.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR))
    # --data-dir is accepted after the action too; SUPPRESS keeps the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser(
        "create", parents=[common], help="create a key and print it (shown only once)"
    )
    create.add_argument("name")
    sub.add_parser("list", parents=[common], help="list keys (ids and names, never secrets)")
    revoke = sub.add_parser("revoke", parents=[common], help="revoke a key by id")
    revoke.add_argument("key_id")
    return parser


def _keys(argv: list[str]) -> int:
    from ._keys import KeyStore

    args = _keys_parser().parse_args(argv)
    keys = KeyStore(args.data_dir.expanduser().resolve() / "keys.duckdb")
    if args.action == "create":
        key, secret = keys.create(args.name)
        print(secret)
        print(
            f"created key {key.key_id} ({key.name}); it is shown only once: store it now",
            file=sys.stderr,
        )
    elif args.action == "list":
        for item in keys.list():
            state = "revoked" if item.revoked_at is not None else "active"
            print(f"{item.key_id}  {state:<8} {item.name}")
    else:
        item = keys.revoke(args.key_id)
        print(f"revoked {item.key_id} ({item.name})")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["keys"]:
        return _keys(argv[1:])
    args = _serve_parser().parse_args(argv)
    import logging

    import uvicorn

    from ._app import create_app
    from ._origin import RedactKeys

    settings = settings_from_args(args)
    _check_data_dir(settings)
    url = f"http://{_display_host(args.host)}:{args.port}/"

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
            await super().startup(sockets)
            if self.started:
                print(
                    f"torchsmith dashboard: {url}  (API docs: {url}docs, data: "
                    f"{settings.data_dir})",
                    flush=True,
                )

    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        ws=ws_protocol(),
    )
    for name in ("uvicorn.access", "uvicorn.error"):  # paths are logged with their query
        logging.getLogger(name).addFilter(RedactKeys())
    server = _Server(config)
    server.run()
    return 0 if server.started else 1


def _check_data_dir(settings: Settings) -> None:
    """Make and open what the app opens as it starts (it opens them again), so that a data
    directory it cannot use, or one another server holds, is one line and exit code 2 here
    rather than a traceback from inside the server."""
    from torchsmith.interfaces import ConfigError

    from ._store import Store

    try:
        settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"--data-dir {settings.data_dir}: cannot make it: {reason}") from None
    Store(settings.store_path).close()  # a TorchsmithError asking whether a server holds it


def ws_protocol() -> str:
    """uvicorn's sans-I/O websockets protocol where this uvicorn has it (the legacy one warns)."""
    from uvicorn.config import WS_PROTOCOLS

    return "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "auto"


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
