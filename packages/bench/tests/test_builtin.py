"""Built-in cases register only for installed suites; the NT-Xent reference is right."""

from __future__ import annotations

import importlib
import math
from importlib.util import find_spec

import pytest
import torch

from torchsmith.bench import REGISTRY
from torchsmith.bench._builtin import ntxent_reference

SUITE_CASES = {
    "torchsmith.losses": ["losses.forward_backward", "losses.ntxent", "losses.ntxent_reference"],
    "torchsmith.trainer": ["trainer.step", "trainer.step_reference", "data.build_loader",
                           "data.dataloader_reference"],
}  # fmt: skip


@pytest.mark.parametrize("suite", sorted(SUITE_CASES))
def test_cases_exist_exactly_when_their_suite_is_installed(suite: str) -> None:
    importlib.import_module("torchsmith.bench._builtin")
    installed = find_spec(suite) is not None
    for name in SUITE_CASES[suite]:
        assert (name in REGISTRY) == installed, name


def test_ntxent_reference_of_identical_views_is_log_2n_minus_1() -> None:
    # Every logit equal: each view picks its pair among 2N - 1 equally likely candidates.
    z = torch.ones(4, 8)
    assert ntxent_reference(z, z).item() == pytest.approx(math.log(7))


def test_ntxent_reference_matches_a_loop_over_views() -> None:
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 3), torch.randn(5, 3)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    n, total = 5, 0.0
    for i in range(2 * n):
        pair = (i + n) % (2 * n)
        sims = [float(z[i] @ z[k]) / 0.5 for k in range(2 * n) if k != i]
        positive = float(z[i] @ z[pair]) / 0.5
        total += -positive + math.log(sum(math.exp(s) for s in sims))
    assert ntxent_reference(z1, z2).item() == pytest.approx(total / (2 * n), rel=1e-5)
