"""Root test configuration shared by every member's tests and tests/.

``slow`` tests are skipped unless ``--run-slow`` is given. torchsmith-testing's plugin
registers the same option when it is installed; this fallback keeps the rule for members
whose tests run without it.
"""

from __future__ import annotations

import argparse
import contextlib

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    # torchsmith-testing's plugin adds the same option when installed.
    # pytest 9 reports the clash as ValueError, pytest 8 as argparse.ArgumentError.
    with contextlib.suppress(ValueError, argparse.ArgumentError):
        parser.addoption("--run-slow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow test: pass --run-slow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
