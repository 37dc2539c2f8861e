"""Seeding helpers and finding the main tensor in a model output."""

from __future__ import annotations

import dataclasses
import random
from collections import OrderedDict

import numpy as np
import pytest
import torch

from torchsmith.interfaces import DataError
from torchsmith.testing import main_tensor, seed_everything, seeded
from torchsmith.testing._outputs import iter_tensors


def draw() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seed_everything_makes_python_numpy_and_torch_repeat() -> None:
    seed_everything(3)
    first = draw()
    seed_everything(3)
    assert draw() == first
    seed_everything(4)
    assert draw() != first


def test_seeded_restores_the_outer_state() -> None:
    seed_everything(0)
    expected = draw()
    seed_everything(0)
    with seeded(123):
        draw()
    assert draw() == expected


def test_rng_fixture_is_seeded(rng: torch.Generator) -> None:
    assert rng.initial_seed() == 0
    now = draw()
    seed_everything(0)
    assert draw() == now


@dataclasses.dataclass
class Output:
    hidden: torch.Tensor
    logits: torch.Tensor | None = None


class HasLastHidden:
    def __init__(self) -> None:
        self.last_hidden_state = torch.ones(2)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (torch.zeros(1), torch.zeros(1)),
        ((torch.ones(1), torch.zeros(1)), torch.ones(1)),
        ({"aux": torch.zeros(3), "logits": torch.ones(3)}, torch.ones(3)),
        (OrderedDict(a=None, b=torch.full((2,), 5.0)), torch.full((2,), 5.0)),
        (Output(hidden=torch.zeros(4), logits=torch.ones(4)), torch.ones(4)),
        (Output(hidden=torch.zeros(4)), torch.zeros(4)),
        (HasLastHidden(), torch.ones(2)),
    ],
)
def test_main_tensor(output: object, expected: torch.Tensor) -> None:
    assert torch.equal(main_tensor(output), expected)


def test_main_tensor_without_a_tensor_says_what_to_override() -> None:
    with pytest.raises(DataError, match="override output_of"):
        main_tensor("text")


def test_iter_tensors_names_paths() -> None:
    output = {"logits": torch.zeros(1), "past": [(torch.ones(1), torch.ones(2))]}
    assert [name for name, _ in iter_tensors(output)] == [
        "output.logits",
        "output.past[0][0]",
        "output.past[0][1]",
    ]
