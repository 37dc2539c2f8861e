"""Property tests: invariances every implementation must have, over varied shapes."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchsmith.losses import ClipLoss, NTXentLoss, SigLipLoss, SupConLoss

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
shapes = st.tuples(st.integers(1, 12), st.integers(1, 8))
temperatures = st.floats(0.05, 2.0)


def _pair(seed: int, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(
        n, d, generator=g, dtype=torch.float64
    )


@SETTINGS
@given(shape=shapes, t=temperatures, chunk=st.integers(1, 13), seed=st.integers(0, 2**16))
def test_chunked_equals_dense_for_any_shape(shape, t, chunk, seed):
    a, b = _pair(seed, *shape)
    for dense, chunked in (
        (ClipLoss(temperature=t), ClipLoss(temperature=t, chunk_size=chunk)),
        (NTXentLoss(temperature=t), NTXentLoss(temperature=t, chunk_size=chunk)),
        (SigLipLoss(temperature=t), SigLipLoss(temperature=t, chunk_size=chunk)),
    ):
        torch.testing.assert_close(chunked(a, b), dense(a, b), rtol=1e-11, atol=1e-11)


@SETTINGS
@given(shape=shapes, t=temperatures, seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3))
def test_cosine_losses_ignore_the_scale_of_embeddings(shape, t, seed, scale):
    a, b = _pair(seed, *shape)
    for loss in (ClipLoss(temperature=t), NTXentLoss(temperature=t), SigLipLoss()):
        torch.testing.assert_close(loss(a * scale, b), loss(a, b), rtol=1e-9, atol=1e-9)


@SETTINGS
@given(shape=shapes, t=temperatures, seed=st.integers(0, 2**16))
def test_symmetric_losses_do_not_care_which_side_is_which(shape, t, seed):
    a, b = _pair(seed, *shape)
    for loss in (ClipLoss(temperature=t), NTXentLoss(temperature=t)):
        torch.testing.assert_close(loss(a, b), loss(b, a), rtol=1e-10, atol=1e-10)


@SETTINGS
@given(shape=shapes, t=temperatures, seed=st.integers(0, 2**16))
def test_permuting_the_batch_changes_nothing(shape, t, seed):
    a, b = _pair(seed, *shape)
    perm = torch.randperm(a.shape[0], generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(a.shape[0]) % 3
    for loss in (ClipLoss(temperature=t), NTXentLoss(temperature=t), SigLipLoss()):
        torch.testing.assert_close(loss(a[perm], b[perm]), loss(a, b), rtol=1e-10, atol=1e-10)
    if a.shape[0] > 3:  # some label repeats: SupCon is defined without warning
        sup = SupConLoss(temperature=t)
        torch.testing.assert_close(
            sup(a[perm], labels[perm]), sup(a, labels), rtol=1e-10, atol=1e-10
        )


@SETTINGS
@given(n=st.integers(1, 16), d=st.integers(1, 8), t=temperatures, seed=st.integers(0, 2**16))
def test_ntxent_bounds(n, d, t, seed):
    """0 <= loss, and <= log(2n - 1) + 2/t (cosines lie in [-1, 1])."""
    a, b = _pair(seed, n, d)
    value = NTXentLoss(temperature=t)(a, b).item()
    assert 0.0 <= value <= math.log(2 * n - 1) + 2.0 / t + 1e-9
