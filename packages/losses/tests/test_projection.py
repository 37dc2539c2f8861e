"""Projection heads: paper layouts, parameter counts, lightly's heads, losses that own one.

lightly's heads are built from the same block order (Linear, BatchNorm, activation), so
their state dicts load into ours key for key; outputs, input gradients and BatchNorm
running statistics must then match in train and eval mode.
"""

from __future__ import annotations

from itertools import pairwise
from types import ModuleType

import pytest
import torch
from torch import nn

from torchsmith.interfaces import ConfigError, DataError
from torchsmith.losses import (
    BarlowTwinsLoss,
    NTXentLoss,
    ProjectionHead,
    SupConLoss,
    VICRegLoss,
    barlow_twins_projector,
    byol_projection_head,
    clip_projection,
    get_loss,
    moco_v2_projection_head,
    simclr_projection_head,
    vicreg_expander,
)


@pytest.fixture(scope="session")
def lightly_heads() -> ModuleType:
    return pytest.importorskip(
        "lightly.models.modules.heads", reason="lightly is a test-only reference"
    )


def _layout(head: nn.Module) -> list[tuple[str, ...]]:
    """Each layer as (kind, sizes..., bias?) for exact comparison with a paper layout."""
    out: list[tuple[str, ...]] = []
    for layer in head.layers:
        if isinstance(layer, nn.Linear):
            bias = "bias" if layer.bias is not None else "no-bias"
            out.append(("Linear", str(layer.in_features), str(layer.out_features), bias))
        elif isinstance(layer, nn.BatchNorm1d):
            out.append(("BN", str(layer.num_features)))
        else:
            out.append((type(layer).__name__,))
    return out


def _lin(i: int, o: int, bias: bool) -> tuple[str, ...]:
    return ("Linear", str(i), str(o), "bias" if bias else "no-bias")


def _bn(n: int) -> tuple[str, ...]:
    return ("BN", str(n))


RELU = ("ReLU",)


def _hidden(i: int, o: int) -> list[tuple[str, ...]]:
    """Linear (no bias) -> BatchNorm -> ReLU."""
    return [_lin(i, o, False), _bn(o), RELU]


LAYOUTS = {
    # SimCLR v1: W2 relu(W1 h); BatchNorm on every layer as in the official code
    "simclr_v1": (
        lambda: simclr_projection_head(32),
        [_lin(32, 2048, False), _bn(2048), RELU, _lin(2048, 128, False), _bn(128)],
    ),
    "simclr_v2": (
        lambda: simclr_projection_head(32, 64, 16, num_layers=3),
        [*_hidden(32, 64), *_hidden(64, 64), _lin(64, 16, False), _bn(16)],
    ),
    "simclr_no_bn": (
        lambda: simclr_projection_head(32, 64, 16, batch_norm=False),
        [_lin(32, 64, True), RELU, _lin(64, 16, True)],
    ),
    # MoCo v2: 2-layer MLP, hidden 2048, ReLU, output 128
    "moco_v2": (
        lambda: moco_v2_projection_head(32),
        [_lin(32, 2048, True), RELU, _lin(2048, 128, True)],
    ),
    # BYOL: Linear(4096), BN, ReLU, Linear(256)
    "byol": (
        lambda: byol_projection_head(32),
        [_lin(32, 4096, False), _bn(4096), RELU, _lin(4096, 256, True)],
    ),
    # Barlow Twins / VICReg: three 8192 Linear layers, BN + ReLU after the first two
    "barlow_twins": (
        lambda: barlow_twins_projector(32),
        [*_hidden(32, 8192), *_hidden(8192, 8192), _lin(8192, 8192, False)],
    ),
    "vicreg": (
        lambda: vicreg_expander(32, 64, 48),
        [*_hidden(32, 64), *_hidden(64, 64), _lin(64, 48, False)],
    ),
    # CLIP: one bias-free linear map into the joint space
    "clip": (lambda: clip_projection(32, 16), [_lin(32, 16, False)]),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_builders_follow_the_paper_layouts(name: str) -> None:
    build, expected = LAYOUTS[name]
    with torch.device("meta"):  # the 8192-wide heads cost nothing to build here
        head = build()
    assert _layout(head) == expected


def _count(dims: list[int], *, bn: bool, last_bn: bool, last_bias: bool) -> int:
    """sum_l d_in d_out + bias (no BatchNorm after it) + 2 d_out (BatchNorm gamma, beta)."""
    total = 0
    for i, (d_in, d_out) in enumerate(pairwise(dims)):
        last = i == len(dims) - 2
        has_bn = last_bn if last else bn
        has_bias = last_bias if last else not bn
        total += d_in * d_out + (d_out if has_bias else 0) + (2 * d_out if has_bn else 0)
    return total


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: simclr_projection_head(2048), 2048 * 2048 + 2 * 2048 + 2048 * 128 + 2 * 128),
        (lambda: moco_v2_projection_head(2048), 2048 * 2048 + 2048 + 2048 * 128 + 128),
        (lambda: byol_projection_head(2048), 2048 * 4096 + 2 * 4096 + 4096 * 256 + 256),
        (
            lambda: barlow_twins_projector(2048),
            2048 * 8192 + 2 * 8192 + 8192 * 8192 + 2 * 8192 + 8192 * 8192,
        ),
        (lambda: vicreg_expander(2048), 2048 * 8192 + 2 * 8192 + 8192 * 8192 * 2 + 2 * 8192),
        (lambda: clip_projection(768, 512), 768 * 512),
    ],
)
def test_parameter_counts_at_paper_sizes(build, expected: int) -> None:
    with torch.device("meta"):
        head = build()
    assert sum(p.numel() for p in head.parameters()) == expected


@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("last_bn", [True, False])
@pytest.mark.parametrize("last_bias", [None, True, False])
@pytest.mark.parametrize("dims", [[7, 3], [7, 11, 3], [5, 9, 9, 13, 2]])
def test_parameter_count_formula(dims, bn, last_bn, last_bias) -> None:
    head = ProjectionHead(dims, batch_norm=bn, last_batch_norm=last_bn, last_bias=last_bias)
    bias = (not last_bn) if last_bias is None else last_bias
    expected = _count(dims, bn=bn, last_bn=last_bn, last_bias=bias)
    assert sum(p.numel() for p in head.parameters()) == expected
    assert head(torch.randn(4, dims[0])).shape == (4, dims[-1])
    assert (head.in_dim, head.out_dim) == (dims[0], dims[-1])


@pytest.mark.parametrize(("activation", "kind"), [("gelu", nn.GELU), (nn.Tanh, nn.Tanh)])
def test_activation_by_name_or_callable(activation, kind) -> None:
    head = ProjectionHead([4, 6, 6, 2], activation=activation)
    acts = [m for m in head.layers if isinstance(m, kind)]
    assert len(acts) == 2 and acts[0] is not acts[1]


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ProjectionHead([]), "dims"),
        (lambda: ProjectionHead([8]), "dims"),
        (lambda: ProjectionHead(8), "dims"),  # type: ignore[arg-type]
        (lambda: ProjectionHead([8, 0]), r"dims\[1\]"),
        (lambda: ProjectionHead([8, -4, 2]), r"dims\[1\]"),
        (lambda: ProjectionHead([8, True]), r"dims\[1\]"),
        (lambda: ProjectionHead([8, 2.0]), r"dims\[1\]"),  # type: ignore[list-item]
        (lambda: ProjectionHead([8, 2], activation="swishy"), "activation"),
        (lambda: simclr_projection_head(0), "in_dim"),
        (lambda: simclr_projection_head(8, hidden_dim=-1), "hidden_dim"),
        (lambda: simclr_projection_head(8, num_layers=1), "num_layers"),
        (lambda: moco_v2_projection_head(8, out_dim=0), "out_dim"),
        (lambda: byol_projection_head(8, hidden_dim=0), "hidden_dim"),
        (lambda: vicreg_expander(8, out_dim=0), "out_dim"),
        (lambda: barlow_twins_projector(8, num_layers=0), "num_layers"),
        (lambda: clip_projection(8, 0), "out_dim"),
        (lambda: get_loss("ntxent", projection="head"), "projection"),
    ],
)
def test_bad_config_names_the_argument(build, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        build()


def test_wrong_input_width_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"\(batch, 8\).*\(4, 6\)"):
        ProjectionHead([8, 2])(torch.randn(4, 6))


def test_clip_projection_is_x_times_w() -> None:
    w = torch.randn(12, 5, dtype=torch.float64)  # CLIP's (width, embed_dim) matrix
    head = clip_projection(12, 5).double()
    head.layers[0].weight.data.copy_(w.T)
    x = torch.randn(3, 12, dtype=torch.float64)
    torch.testing.assert_close(head(x), x @ w)


def _pairs(lightly_heads: ModuleType) -> dict[str, tuple[nn.Module, nn.Module]]:
    h = lightly_heads
    return {
        "simclr_v1": (h.SimCLRProjectionHead(12, 20, 6), simclr_projection_head(12, 20, 6)),
        "simclr_v2": (
            h.SimCLRProjectionHead(12, 20, 6, num_layers=3),
            simclr_projection_head(12, 20, 6, num_layers=3),
        ),
        "simclr_no_bn": (
            h.SimCLRProjectionHead(12, 20, 6, batch_norm=False),
            simclr_projection_head(12, 20, 6, batch_norm=False),
        ),
        "moco_v2": (h.MoCoProjectionHead(12, 20, 6), moco_v2_projection_head(12, 20, 6)),
        "byol": (h.BYOLProjectionHead(12, 20, 6), byol_projection_head(12, 20, 6)),
        # lightly gives the last Linear a bias; the official code (and we) do not
        "barlow_twins": (
            h.BarlowTwinsProjectionHead(12, 20, 6),
            ProjectionHead([12, 20, 20, 6], last_bias=True),
        ),
        "vicreg": (
            h.VICRegProjectionHead(12, 20, 6, num_layers=4),
            ProjectionHead([12, 20, 20, 20, 6], last_bias=True),
        ),
    }


def _assert_same_function(ref: nn.Module, ours: nn.Module) -> None:
    ref, ours = ref.double(), ours.double()
    for _ in range(3):  # train mode: batch statistics, running stats updated alike
        x = torch.randn(16, 12, dtype=torch.float64)
        xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
        yr, yo = ref(xr), ours(xo)
        torch.testing.assert_close(yo, yr, rtol=1e-12, atol=1e-12)
        (gr,) = torch.autograd.grad(yr.pow(2).sum(), xr)
        (go,) = torch.autograd.grad(yo.pow(2).sum(), xo)
        torch.testing.assert_close(go, gr, rtol=1e-12, atol=1e-12)
    for (name, a), (_, b) in zip(ref.named_buffers(), ours.named_buffers(), strict=True):
        torch.testing.assert_close(b, a, msg=name)
    ref.eval()
    ours.eval()
    x = torch.randn(5, 12, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "name",
    ["simclr_v1", "simclr_v2", "simclr_no_bn", "moco_v2", "byol", "barlow_twins", "vicreg"],
)
def test_matches_lightly_heads(lightly_heads: ModuleType, name: str) -> None:
    ref, ours = _pairs(lightly_heads)[name]
    for m in ref.modules():  # non-trivial BatchNorm affine parameters
        if isinstance(m, nn.BatchNorm1d):
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)
    ours.load_state_dict(ref.state_dict(), strict=True)  # same layers, same order
    _assert_same_function(ref, ours)


@pytest.mark.parametrize("build", [barlow_twins_projector, vicreg_expander])
def test_paper_expanders_match_lightly_with_a_zero_last_bias(lightly_heads, build) -> None:
    ref = lightly_heads.VICRegProjectionHead(12, 20, 6, num_layers=3)
    ours = build(12, 20, 6)
    last = f"layers.{len(ref.layers) - 1}.bias"
    nn.init.zeros_(ref.layers[-1].bias)
    result = ours.load_state_dict(ref.state_dict(), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == [last]
    _assert_same_function(ref, ours)


# --- losses that own a head --------------------------------------------------------


def _views(n: int = 8, d: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.randn(n, d, dtype=torch.float64)
    return a, a + 0.3 * torch.randn(n, d, dtype=torch.float64)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("ntxent", NTXentLoss), ("vicreg", VICRegLoss), ("barlow_twins", BarlowTwinsLoss)],
)
def test_a_loss_with_a_head_equals_the_loss_of_the_projected_views(name, cls) -> None:
    head = simclr_projection_head(10, 16, 6).double()
    loss_fn = get_loss(name, projection=head)
    assert any(p is head.layers[0].weight for p in loss_fn.parameters())
    assert any(k.startswith("projection.layers.0") for k in loss_fn.state_dict())
    z1, z2 = _views()
    got = loss_fn(z1, z2)
    got.backward()
    grad = head.layers[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # the same head, called once per view, then the plain loss
    torch.testing.assert_close(got.detach(), cls()(head(z1), head(z2)).detach())
    for mode in (True, False):
        head.train(mode)
        torch.testing.assert_close(loss_fn(z1, z2), cls()(head(z1), head(z2)))


def test_supcon_projects_every_view_in_one_call() -> None:
    head = ProjectionHead([10, 16, 6]).double()
    features = torch.randn(6, 2, 10, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    got = SupConLoss(projection=head)(features, labels)
    projected = head(features.reshape(12, 10)).reshape(6, 2, 6)
    torch.testing.assert_close(got, SupConLoss()(projected, labels))


def test_input_checks_run_before_the_head() -> None:
    loss_fn = NTXentLoss(projection=ProjectionHead([10, 4]))
    with pytest.raises(DataError, match=r"z1 \(4, 10\) and z2 \(5, 10\)"):
        loss_fn(torch.randn(4, 10), torch.randn(5, 10))


@pytest.mark.parametrize("name", ["clip", "siglip", "moco", "cross_modal", "triplet"])
def test_losses_without_a_shared_head_refuse_projection(name: str) -> None:
    with pytest.raises(ConfigError, match=r"projection.*accepted"):
        get_loss(name, projection=ProjectionHead([4, 2]))
