"""assert_close_tensors, assert_finite and count_parameters."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from torchsmith.testing import assert_close_tensors, assert_finite, count_parameters

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=64)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.tuples(finite, finite), min_size=1, max_size=12),
    rtol=st.sampled_from([0.0, 1e-6, 1e-3, 0.1]),
    atol=st.sampled_from([0.0, 1e-8, 1e-3, 1.0]),
)
def test_agrees_with_torch_testing_assert_close(
    values: list[tuple[float, float]], rtol: float, atol: float
) -> None:
    actual = torch.tensor([a for a, _ in values], dtype=torch.float64)
    expected = torch.tensor([e for _, e in values], dtype=torch.float64)
    try:
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
        reference_ok = True
    except AssertionError:
        reference_ok = False
    try:
        assert_close_tensors(actual, expected, rtol=rtol, atol=atol)
        ours_ok = True
    except AssertionError:
        ours_ok = False
    assert ours_ok == reference_ok


def test_the_message_says_how_far_and_where() -> None:
    expected = torch.zeros(2, 3)
    actual = expected.clone()
    actual[1, 2] = 0.5
    actual[0, 1] = 1e-7
    with pytest.raises(AssertionError) as info:
        assert_close_tensors(actual, expected, name="logits")
    text = str(info.value)
    assert text.startswith("logits: 1 of 6 elements differ beyond rtol=0.0001, atol=1e-05")
    assert "max abs error 5.000e-01 at (1, 2): actual 0.5, expected 0" in text


def test_shape_and_nan_mismatches_are_named() -> None:
    with pytest.raises(AssertionError, match=r"shape \(2,\) != expected \(3,\)"):
        assert_close_tensors(torch.zeros(2), torch.zeros(3))
    with pytest.raises(
        AssertionError, match=r"NaN in one tensor but not the other, first at \(1,\)"
    ):
        assert_close_tensors(torch.tensor([0.0, math.nan]), torch.zeros(2))
    assert_close_tensors(torch.tensor([math.nan, math.inf]), torch.tensor([math.nan, math.inf]))


def test_dtype_decides_the_default_tolerance() -> None:
    base = torch.ones(4)
    assert_close_tensors((base + 5e-3).bfloat16(), base.bfloat16())
    with pytest.raises(AssertionError):
        assert_close_tensors(base + 5e-3, base)


def test_assert_finite_counts_nan_and_inf() -> None:
    assert_finite(torch.ones(3))
    assert_finite(torch.tensor([1, 2]))  # integers are always finite
    bad = torch.tensor([[1.0, math.nan], [math.inf, -math.inf]])
    with pytest.raises(
        AssertionError,
        match=r"grad of shape \(2, 2\) is not finite: 1 NaN and 2 "
        r"inf of 4 elements, first at \(0, 1\)",
    ):
        assert_finite(bad, name="grad")


def test_count_parameters_counts_tied_weights_once() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))
    model[1].weight = model[0].weight  # tie the output projection to the embedding
    assert count_parameters(model) == 10 * 4 + 10
    model[1].bias.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 40
