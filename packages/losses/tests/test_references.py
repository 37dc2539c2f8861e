"""Values and gradients against implementations we did not write.

lightly (NT-Xent, VICReg, Barlow Twins, NT-Xent-with-memory-bank as MoCo),
pytorch-metric-learning (SupCon, triplet with BatchHardMiner, NT-Xent) and open_clip
(ClipLoss, SigLipLoss), in fp32 and fp64. Their defaults differ from ours (temperature,
normalisation, reduction), so each test passes the settings explicitly.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchsmith.losses import (
    BarlowTwinsLoss,
    ClipLoss,
    MoCoLoss,
    NTXentLoss,
    SigLipLoss,
    SupConLoss,
    TripletLoss,
    VICRegLoss,
)

DTYPES = [torch.float32, torch.float64]


def _pair(n: int, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.randn(n, d, dtype=dtype)
    return a, a + 0.5 * torch.randn(n, d, dtype=dtype)  # correlated views


def _labels(n: int, classes: int) -> torch.Tensor:
    """Every class appears at least twice, shuffled."""
    return torch.arange(n)[torch.randperm(n)] % classes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_clip_matches_open_clip(open_clip_loss, value_and_grads, same, dtype, temperature):
    img, txt = _pair(12, 8, dtype)
    ref = open_clip_loss.ClipLoss()
    ours = value_and_grads(ClipLoss(temperature=temperature), img, txt)
    theirs = value_and_grads(
        lambda i, t: ref(F.normalize(i, dim=-1), F.normalize(t, dim=-1), 1.0 / temperature),
        img,
        txt,
    )
    same(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_siglip_matches_open_clip(open_clip_loss, value_and_grads, same, dtype):
    img, txt = _pair(10, 6, dtype)
    ref = open_clip_loss.SigLipLoss()
    scale, bias = torch.tensor(10.0, dtype=dtype), torch.tensor(-10.0, dtype=dtype)
    ours = value_and_grads(SigLipLoss(), img, txt)
    theirs = value_and_grads(
        lambda i, t: ref(F.normalize(i, dim=-1), F.normalize(t, dim=-1), scale, bias), img, txt
    )
    same(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ntxent_matches_lightly(lightly_loss, value_and_grads, same, dtype):
    z1, z2 = _pair(9, 7, dtype)
    ours = value_and_grads(NTXentLoss(temperature=0.5), z1, z2)
    theirs = value_and_grads(lightly_loss.NTXentLoss(temperature=0.5), z1, z2)
    same(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ntxent_matches_pytorch_metric_learning(pml, value_and_grads, same, dtype):
    losses, _, _ = pml
    z1, z2 = _pair(8, 5, dtype)
    ref = losses.NTXentLoss(temperature=0.1)
    labels = torch.arange(8).repeat(2)  # view i of item k and view j of item k are positives
    ours = value_and_grads(NTXentLoss(temperature=0.1), z1, z2)
    theirs = value_and_grads(lambda a, b: ref(torch.cat([a, b]), labels), z1, z2)
    same(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vicreg_matches_lightly(lightly_loss, value_and_grads, same, dtype):
    z1, z2 = _pair(16, 6, dtype)
    ours = value_and_grads(VICRegLoss(), z1, z2)
    theirs = value_and_grads(lightly_loss.VICRegLoss(), z1, z2)
    same(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_barlow_twins_matches_lightly(lightly_loss, value_and_grads, same, dtype):
    z1, z2 = _pair(16, 6, dtype)
    ours = value_and_grads(BarlowTwinsLoss(), z1, z2)
    theirs = value_and_grads(lightly_loss.BarlowTwinsLoss(), z1, z2)
    same(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_supcon_matches_pytorch_metric_learning(pml, value_and_grads, same, dtype):
    losses, _, _ = pml
    x, labels = torch.randn(12, 5, dtype=dtype), _labels(12, 4)
    ref = losses.SupConLoss(temperature=0.1)
    ours = value_and_grads(lambda e: SupConLoss(temperature=0.1)(e, labels), x)
    theirs = value_and_grads(lambda e: ref(e, labels), x)
    same(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_hard_triplet_matches_pytorch_metric_learning(pml, value_and_grads, same, dtype):
    losses, miners, reducers = pml
    x, labels = torch.randn(12, 5, dtype=dtype), _labels(12, 3)
    miner = miners.BatchHardMiner()
    ref = losses.TripletMarginLoss(margin=0.3, reducer=reducers.MeanReducer())
    ours = value_and_grads(lambda e: TripletLoss(margin=0.3)(e, labels), x)
    theirs = value_and_grads(lambda e: ref(e, labels, miner(e, labels)), x)
    same(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_all_triplet_matches_pytorch_metric_learning(pml, value_and_grads, same, dtype):
    losses, _, reducers = pml
    x, labels = torch.randn(10, 4, dtype=dtype), _labels(10, 3)
    ref = losses.TripletMarginLoss(margin=0.5, reducer=reducers.MeanReducer())
    ours = value_and_grads(lambda e: TripletLoss(margin=0.5, mining="all")(e, labels), x)
    theirs = value_and_grads(lambda e: ref(e, labels), x)
    same(ours, theirs, dtype)


@pytest.mark.parametrize("mining", ["batch_hard", "all"])
@pytest.mark.parametrize("margin", [0.0, 0.2])
def test_soft_margin_triplet_matches_pytorch_metric_learnings_smooth_loss(
    pml, value_and_grads, same, margin, mining
):
    """softplus(margin + d_p - d_n); with margin 0, Hermans et al.'s soft margin."""
    losses, miners, reducers = pml
    dtype = torch.float64
    x, labels = torch.randn(12, 5, dtype=dtype), _labels(12, 3)
    ref = losses.TripletMarginLoss(margin=margin, smooth_loss=True, reducer=reducers.MeanReducer())
    miner = miners.BatchHardMiner() if mining == "batch_hard" else None
    loss = TripletLoss(margin=margin, mining=mining, soft_margin=True)
    ours = value_and_grads(lambda e: loss(e, labels), x)
    theirs = value_and_grads(lambda e: ref(e, labels, miner(e, labels) if miner else None), x)
    same(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_moco_matches_lightly_memory_bank(lightly_loss, same, dtype):
    """lightly's NT-Xent with a memory bank is MoCo's loss: q vs k and the bank."""
    n, d, size = 4, 6, 12
    ref = lightly_loss.NTXentLoss(temperature=0.2, memory_bank_size=(size, d)).to(dtype)
    ours = MoCoLoss(queue_size=size, dim=d, temperature=0.2).to(dtype)
    ours.queue.features.copy_(ref.memory_bank.bank)
    for _ in range(4):  # the queue wraps: both must enqueue the same keys in the same slots
        q, k = _pair(n, d, dtype)
        q1, q2 = q.clone().requires_grad_(), q.clone().requires_grad_()
        mine, theirs = ours(q1, k), ref(q2, k)
        mine.backward()
        theirs.backward()
        same((mine.detach(), [q1.grad]), (theirs.detach(), [q2.grad]), dtype)
        torch.testing.assert_close(ours.queue.features, ref.memory_bank.bank)
