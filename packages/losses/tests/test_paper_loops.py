"""Losses against plain loops written from the papers' equations, and gradcheck in fp64.

Each loop is scalar-by-scalar on purpose: slow, but easy to check against the paper.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from torchsmith.losses import (
    ClipLoss,
    CrossEntropyLoss,
    CrossModalLoss,
    FocalLoss,
    NTXentLoss,
    SigLipLoss,
    SupConLoss,
    TripletLoss,
    get_loss,
    list_losses,
)

DTYPES = [torch.float32, torch.float64]


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b) / (a.norm() * b.norm())


def ntxent_loop(z1: torch.Tensor, z2: torch.Tensor, t: float, bank=None) -> torch.Tensor:
    """SimCLR eq. (1), averaged over all 2N anchors; ``bank`` rows are extra negatives."""
    z = list(z1) + list(z2)
    n2 = len(z)
    total = z1.new_zeros(())
    for i in range(n2):
        j = (i + n2 // 2) % n2
        denominator = sum(torch.exp(_cos(z[i], z[k]) / t) for k in range(n2) if k != i)
        if bank is not None:
            # bank rows are stored unit-norm
            denominator = denominator + sum(torch.exp(z[i] @ b / z[i].norm() / t) for b in bank)
        total = total - torch.log(torch.exp(_cos(z[i], z[j]) / t) / denominator)
    return total / n2


def clip_loop(img: torch.Tensor, txt: torch.Tensor, t: float) -> torch.Tensor:
    """CLIP's pseudo-code: symmetric cross-entropy over cosine / t."""
    n = len(img)
    total = img.new_zeros(())
    for i in range(n):
        i2t = torch.stack([_cos(img[i], txt[j]) / t for j in range(n)])
        t2i = torch.stack([_cos(txt[i], img[j]) / t for j in range(n)])
        total = total - i2t[i] + torch.logsumexp(i2t, 0) - t2i[i] + torch.logsumexp(t2i, 0)
    return total / (2 * n)


def siglip_loop(img: torch.Tensor, txt: torch.Tensor, t: float, b: float) -> torch.Tensor:
    """SigLIP eq. (1): -1/|B| sum_i sum_j log sigmoid(z_ij (t x_i.y_j + b))."""
    n = len(img)
    total = img.new_zeros(())
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = t * _cos(img[i], txt[j]) + b
            total = total - torch.log(1 / (1 + torch.exp(-z * logit)))
    return total / n


def supcon_loop(x: torch.Tensor, labels: torch.Tensor, t: float) -> torch.Tensor:
    """SupCon eq. (2), L_out, averaged over anchors that have a positive."""
    n = len(x)
    per_anchor = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(torch.exp(_cos(x[i], x[a]) / t) for a in range(n) if a != i)
        terms = [torch.log(torch.exp(_cos(x[i], x[p]) / t) / denominator) for p in positives]
        per_anchor.append(-sum(terms) / len(positives))
    return torch.stack(per_anchor).mean()


def batch_hard_loop(x: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Hermans et al. eq. (5), hinge, Euclidean distance of L2-normalised embeddings."""
    x = x / x.norm(dim=1, keepdim=True)
    n = len(x)
    losses = []
    for a in range(n):
        pos = [(x[a] - x[p]).norm() for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [(x[a] - x[k]).norm() for k in range(n) if labels[k] != labels[a]]
        if pos and neg:
            losses.append(torch.relu(margin + max(pos) - min(neg)))
    return torch.stack(losses).mean()


def focal_loop(logits: torch.Tensor, targets: torch.Tensor, gamma: float, alpha) -> torch.Tensor:
    """Lin et al. eq. (5), softmax form: -alpha_y (1 - p_y)^gamma log p_y, mean."""
    total = logits.new_zeros(())
    for row, y in zip(logits, targets.tolist(), strict=True):
        p = torch.exp(row[y]) / torch.exp(row).sum()
        weight = 1.0 if alpha is None else alpha[y]
        total = total - weight * (1 - p) ** gamma * torch.log(p)
    return total / len(logits)


def smoothed_ce_loop(logits, targets, eps: float, weight) -> torch.Tensor:
    """Label smoothing as torch documents it, weighted mean over targets."""
    c = logits.shape[1]
    num, den = logits.new_zeros(()), 0.0
    for row, y in zip(logits, targets.tolist(), strict=True):
        log_p = row - torch.logsumexp(row, 0)
        w = [1.0] * c if weight is None else weight
        num = num - (1 - eps) * w[y] * log_p[y] - eps / c * sum(w[k] * log_p[k] for k in range(c))
        den += w[y]
    return num / den


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> None:
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(a, b.to(a.dtype), rtol=tol, atol=tol)


def _check(ours, loop, inputs, dtype) -> None:
    leaves = [x.clone().requires_grad_() for x in inputs]
    copies = [x.clone().requires_grad_() for x in inputs]
    mine, theirs = ours(*leaves), loop(*copies)
    _close(mine, theirs, dtype)
    for g1, g2 in zip(
        torch.autograd.grad(mine, leaves), torch.autograd.grad(theirs, copies), strict=True
    ):
        _close(g1, g2, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ntxent_matches_simclr_equation(dtype):
    z1, z2 = torch.randn(5, 4, dtype=dtype), torch.randn(5, 4, dtype=dtype)
    _check(NTXentLoss(temperature=0.3), lambda a, b: ntxent_loop(a, b, 0.3), [z1, z2], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ntxent_memory_bank_adds_past_views_as_negatives(dtype):
    loss = NTXentLoss(temperature=0.4, memory_bank_size=6).to(dtype)
    first = [torch.randn(3, 4, dtype=dtype) for _ in range(2)]
    loss(*first)  # training forward with grad enabled: pushes both views
    bank = loss.memory_bank.features.clone()
    assert bank.dtype == dtype
    torch.testing.assert_close(
        bank.to(dtype), F.normalize(torch.cat(first), dim=1), rtol=1e-6, atol=1e-6
    )
    z1, z2 = torch.randn(3, 4, dtype=dtype), torch.randn(3, 4, dtype=dtype)
    loss.eval()  # no update: the loop sees the same bank
    _check(loss, lambda a, b: ntxent_loop(a, b, 0.4, bank.to(dtype)), [z1, z2], dtype)
    torch.testing.assert_close(loss.memory_bank.features, bank)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_matches_paper_pseudocode(dtype):
    img, txt = torch.randn(6, 3, dtype=dtype), torch.randn(6, 3, dtype=dtype)
    _check(ClipLoss(temperature=0.2), lambda a, b: clip_loop(a, b, 0.2), [img, txt], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_siglip_matches_paper_equation(dtype):
    img, txt = torch.randn(5, 3, dtype=dtype), torch.randn(5, 3, dtype=dtype)
    ours = SigLipLoss(temperature=0.5, bias=-1.0)
    _check(ours, lambda a, b: siglip_loop(a, b, 2.0, -1.0), [img, txt], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_modal_is_mean_of_pairwise_clip(dtype):
    mods = [torch.randn(4, 3, dtype=dtype) for _ in range(3)]

    def loop(a, b, c):
        return (clip_loop(a, b, 0.1) + clip_loop(a, c, 0.1) + clip_loop(b, c, 0.1)) / 3

    _check(CrossModalLoss(temperature=0.1), loop, mods, dtype)


def test_cross_modal_accepts_named_modalities():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    loss = CrossModalLoss()
    value = loss({"image": a, "text": b})
    torch.testing.assert_close(value, ClipLoss()(a, b))
    assert set(loss.components) == {"image-text", "logit_scale"}


@pytest.mark.parametrize("dtype", DTYPES)
def test_supcon_matches_paper_equation(dtype):
    x, labels = torch.randn(7, 3, dtype=dtype), torch.tensor([0, 1, 0, 2, 1, 0, 3])
    # label 2 and 3 have no positive: those anchors are left out, as in the paper
    _check(
        lambda e: SupConLoss(temperature=0.2)(e, labels),
        lambda e: supcon_loop(e, labels, 0.2),
        [x],
        dtype,
    )


def test_supcon_multiview_input_equals_flattened_views():
    x, labels = torch.randn(4, 2, 3), torch.tensor([0, 1, 2, 1])
    flat_labels = labels.repeat_interleave(2)
    torch.testing.assert_close(
        SupConLoss()(x, labels), supcon_loop(x.reshape(8, 3), flat_labels, 0.1)
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_hard_triplet_matches_hermans_equation(dtype):
    x, labels = torch.randn(8, 3, dtype=dtype), torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    _check(
        lambda e: TripletLoss(margin=0.4)(e, labels),
        lambda e: batch_hard_loop(e, labels, 0.4),
        [x],
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, None), (0.5, [0.2, 0.3, 0.5]), (0.0, None)])
def test_focal_softmax_matches_lin_equation(dtype, gamma, alpha):
    logits, y = torch.randn(6, 3, dtype=dtype), torch.tensor([0, 2, 1, 1, 0, 2])
    _check(
        lambda x: FocalLoss(gamma=gamma, alpha=alpha)(x, y),
        lambda x: focal_loop(x, y, gamma, alpha),
        [logits],
        dtype,
    )


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, y), F.cross_entropy(logits, y))


def test_sigmoid_focal_matches_torchvision():
    ops = pytest.importorskip("torchvision.ops", reason="torchvision comes with lightly")
    logits, t = torch.randn(5, 4, dtype=torch.float64), (torch.rand(5, 4) > 0.5).double()
    ref = ops.sigmoid_focal_loss(logits, t, alpha=0.25, gamma=2.0, reduction="mean")
    torch.testing.assert_close(FocalLoss(gamma=2.0, alpha=0.25)(logits, t), ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("eps", "weight"), [(0.1, None), (0.2, [1.0, 2.0, 0.5, 1.5])])
def test_cross_entropy_smoothing_and_weights_match_formula(dtype, eps, weight):
    logits, y = torch.randn(6, 4, dtype=dtype), torch.tensor([0, 3, 1, 1, 2, 3])
    ours = CrossEntropyLoss(label_smoothing=eps, weight=weight)
    _check(lambda x: ours(x, y), lambda x: smoothed_ce_loop(x, y, eps, weight), [logits], dtype)


def test_cross_entropy_ignore_index_drops_targets():
    logits, y = torch.randn(5, 3), torch.tensor([0, -100, 2, -100, 1])
    kept = y != -100
    torch.testing.assert_close(
        CrossEntropyLoss()(logits, y), F.cross_entropy(logits[kept], y[kept])
    )


def _gradcheck_inputs(name: str) -> tuple[dict, list[torch.Tensor], list[torch.Tensor]]:
    d = torch.float64
    a, b = torch.randn(4, 3, dtype=d), torch.randn(4, 3, dtype=d)
    labels = torch.tensor([0, 1, 0, 1])
    table: dict[str, tuple[dict, list[torch.Tensor], list[torch.Tensor]]] = {
        "cross_entropy": ({"label_smoothing": 0.1}, [a], [labels]),
        "focal": ({}, [a], [labels]),
        "clip": ({"temperature": 0.5}, [a, b], []),
        "siglip": ({}, [a, b], []),
        "ntxent": ({}, [a, b], []),
        "supcon": ({}, [a], [labels]),
        "moco": ({"queue_size": 5, "dim": 3}, [a], [b]),
        "vicreg": ({}, [a, b], []),
        "barlow_twins": ({}, [a, b], []),
        "triplet": ({"margin": 1.0}, [a], [labels]),
        "cross_modal": ({}, [a, b, torch.randn(4, 3, dtype=d)], []),
        "fusion": ({"losses": {"ntxent": None, "vicreg": None}, "uncertainty": True}, [a, b], []),
    }
    return table[name]


@pytest.mark.parametrize("name", sorted(list_losses()))
def test_gradcheck_fp64(name):
    kwargs, diff, fixed = _gradcheck_inputs(name)
    loss = get_loss(name, **kwargs).double().eval()  # eval: moco's queue stays put
    leaves = [x.clone().requires_grad_() for x in diff]
    assert torch.autograd.gradcheck(lambda *xs: loss(*xs, *fixed), leaves, eps=1e-6, atol=1e-5)


def test_ntxent_aligned_embeddings_give_log_2n_minus_1():
    n = 6
    z = torch.randn(1, 8).expand(n, 8)
    for t in (0.1, 0.5, 2.0):
        assert NTXentLoss(temperature=t)(z, z).item() == pytest.approx(
            math.log(2 * n - 1), rel=1e-6
        )


def test_clip_identical_embeddings_give_log_n():
    z = torch.randn(1, 5).expand(7, 5)
    assert ClipLoss()(z, z).item() == pytest.approx(math.log(7), rel=1e-6)


def test_clip_orthogonal_pairs_closed_form():
    """One-hot pairs: positives cos 1, negatives cos 0 -> log(1 + (n-1) e^{-1/t})."""
    n, t = 5, 0.25
    e = torch.eye(n)
    expected = math.log(1 + (n - 1) * math.exp(-1 / t))
    assert ClipLoss(temperature=t)(e, e).item() == pytest.approx(expected, rel=1e-6)
    assert NTXentLoss(temperature=t)(e, e).item() == pytest.approx(
        math.log(math.exp(1 / t) + 2 * (n - 1)) - 1 / t, rel=1e-6
    )
