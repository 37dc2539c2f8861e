"""``torchsmith serve`` in a real process: loopback by default, prints the address, serves."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from torchsmith.api._cli import _display_host, _serve_parser


def test_defaults_bind_loopback_with_a_local_data_dir() -> None:
    args = _serve_parser().parse_args([])
    assert (args.host, args.port, args.read_access) == ("127.0.0.1", 8000, "public")
    assert args.data_dir == Path(".torchsmith")
    assert _display_host("0.0.0.0") == "127.0.0.1"
    assert _display_host("::1") == "[::1]"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_prints_the_dashboard_address_and_answers(tmp_path: Path) -> None:
    port = _free_port()
    code = "import sys; from torchsmith.interfaces._cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--port", str(port), "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"torchsmith dashboard: http://127.0.0.1:{port}/" in line, (
            proc.stderr.read() if proc.poll() is not None else line
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=10) as r:
            assert json.load(r)["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert b"torchsmith" in r.read()
        assert (tmp_path / "torchsmith.duckdb").exists()
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_second_server_on_the_same_data_dir_fails_clearly(tmp_path: Path) -> None:
    from torchsmith.api._store import Store

    first = Store(tmp_path / "torchsmith.duckdb")
    try:
        code = (
            "import sys; from pathlib import Path; from torchsmith.api._store import Store; "
            "Store(Path(sys.argv[1]))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "torchsmith.duckdb")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert "another torchsmith server" in result.stderr
    finally:
        first.close()


def test_a_bad_port_or_worker_count_is_a_usage_error(capsys) -> None:
    import pytest

    for argv, message in (
        (["--port", "70000"], "70000 is not a TCP port (1-65535)"),
        (["--port", "http"], "'http' is not a TCP port"),
        (["--workers", "0"], "0 is not a number of jobs (1-64)"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            _serve_parser().parse_args(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    import pytest

    from torchsmith.api._cli import _check_data_dir, settings_from_args
    from torchsmith.interfaces import ConfigError

    (tmp_path / "file").write_text("")
    args = _serve_parser().parse_args(["--data-dir", str(tmp_path / "file" / "data")])
    with pytest.raises(ConfigError, match=r"--data-dir .*file/data: cannot make it: Not a dir"):
        _check_data_dir(settings_from_args(args))


def test_serve_on_a_data_dir_another_server_holds_exits_with_one_line(tmp_path: Path) -> None:
    from torchsmith.api._store import Store

    first = Store(tmp_path / "torchsmith.duckdb")
    try:
        code = "import sys; from torchsmith.interfaces._cli import main; sys.exit(main())"
        result = subprocess.run(
            [sys.executable, "-c", code, "serve", "--port", str(_free_port()),
             "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        first.close()
    assert result.returncode == 2, result.stderr
    assert "Is another torchsmith server using this data directory?" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_damaged_store_is_not_blamed_on_another_server(tmp_path: Path) -> None:
    import pytest

    from torchsmith.api._store import Store
    from torchsmith.interfaces import TorchsmithError

    (tmp_path / "torchsmith.duckdb").write_bytes(b"not a database" * 1000)
    with pytest.raises(TorchsmithError, match="cannot open the store") as refused:
        Store(tmp_path / "torchsmith.duckdb")
    assert "another torchsmith server" not in str(refused.value)
