"""The registry, the public surface, and the components every loss records."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchsmith.losses as losses
from torchsmith.interfaces import ConfigError, LossOutput, RegistryError
from torchsmith.losses import FusionLoss, LossModule, get_loss, list_losses, register_loss

NAMES = [
    "barlow_twins",
    "clip",
    "cross_entropy",
    "cross_modal",
    "focal",
    "fusion",
    "moco",
    "ntxent",
    "siglip",
    "supcon",
    "triplet",
    "vicreg",
]


def test_all_twelve_names_are_registered():
    assert list_losses() == NAMES


def test_public_surface_is_exactly_all():
    assert set(losses.__all__) == {
        *("get_loss", "list_losses", "register_loss"),
        *("LossModule", "LogitScale", "normalize", "gather"),
        *("ProjectionHead", "simclr_projection_head", "moco_v2_projection_head"),
        *("byol_projection_head", "barlow_twins_projector", "vicreg_expander"),
        "clip_projection",
        *("CrossEntropyLoss", "FocalLoss", "ClipLoss", "SigLipLoss", "CrossModalLoss"),
        *("NTXentLoss", "MoCoLoss", "SupConLoss", "TripletLoss", "VICRegLoss"),
        *("BarlowTwinsLoss", "FusionLoss", "INTERFACES_MAJOR", "__version__"),
    }
    assert all(hasattr(losses, name) for name in losses.__all__)


def test_unknown_name_lists_close_matches():
    with pytest.raises(RegistryError, match="Did you mean 'ntxent'") as info:
        get_loss("ntxnet")
    assert isinstance(info.value, KeyError)
    with pytest.raises(RegistryError, match="Registered losses: barlow_twins"):
        get_loss("zzz")


def test_unknown_keyword_names_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"temp.*accepted: temperature"):
        get_loss("ntxent", temp=0.5)


def test_register_loss_adds_a_name_and_refuses_a_taken_one():
    @register_loss("test_only_l1")
    class L1(LossModule):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self._record((a - b).abs().mean())

    try:
        assert "test_only_l1" in list_losses()
        assert get_loss("test_only_l1")(torch.ones(2), torch.zeros(2)).item() == 1.0
        with pytest.raises(RegistryError, match="already registered"):
            register_loss("clip")(L1)
    finally:
        from torchsmith.losses import _registry

        del _registry._REGISTRY["test_only_l1"]


def test_trainer_style_calls():
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    assert get_loss("ntxent", temperature=0.5)(z1, z2).dim() == 0
    assert get_loss("clip")(z1, z2).dim() == 0
    assert get_loss("cross_entropy")(torch.randn(8, 5), torch.randint(0, 5, (8,))).dim() == 0


def test_components_are_recorded_without_recomputation():
    loss = get_loss("vicreg")
    z1, z2 = torch.randn(16, 8, requires_grad=True), torch.randn(16, 8)
    value = loss(z1, z2)
    assert all(not t.requires_grad for t in loss.components.values())
    out = loss.loss_output()
    assert isinstance(out, LossOutput)
    assert out.loss == pytest.approx(value.item())
    assert set(out.components) == {"invariance", "variance", "covariance"}
    c = out.components
    assert out.loss == pytest.approx(25 * c["invariance"] + 25 * c["variance"] + c["covariance"])
    assert LossOutput.read(out.write()) == out


def test_loss_output_before_forward_is_a_clear_error():
    loss = get_loss("clip")
    assert loss.last_output is None
    with pytest.raises(ConfigError, match="before any forward"):
        loss.loss_output()


def test_learnable_temperature_is_a_clamped_parameter():
    loss = get_loss("clip", temperature=0.01, learnable_temperature=True, max_logit_scale=50.0)
    params = dict(loss.named_parameters())
    assert list(params) == ["logit_scale.log_scale"]
    assert params["logit_scale.log_scale"].item() == pytest.approx(math.log(100.0))
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    loss(a, b)
    assert loss.components["logit_scale"].item() == pytest.approx(50.0)  # clamped
    with torch.no_grad():
        params["logit_scale.log_scale"].fill_(math.log(10.0))
    loss(a, b).backward()
    assert params["logit_scale.log_scale"].grad is not None
    assert params["logit_scale.log_scale"].grad.abs() > 0


def test_fixed_temperature_has_no_parameters():
    for name in ("clip", "siglip", "ntxent", "supcon", "moco"):
        assert list(get_loss(name).parameters()) == []


# ------------------------------------------------------------------ moco queue


def test_moco_queue_updates_only_on_training_forwards():
    loss = get_loss("moco", queue_size=8, dim=4)
    before = loss.queue.features.clone()
    q, k = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4)
    loss.eval()
    loss(q, k)
    torch.testing.assert_close(loss.queue.features, before)
    loss.train()
    with torch.no_grad():
        loss(q, k)
    torch.testing.assert_close(loss.queue.features, before)
    loss(q, k)
    torch.testing.assert_close(loss.queue.features[:3], k / k.norm(dim=1, keepdim=True))
    torch.testing.assert_close(loss.queue.features[3:], before[3:])
    assert int(loss.queue.pointer) == 3


def test_moco_queue_wraps_and_round_trips_state_dict():
    loss = get_loss("moco", queue_size=5)  # dim taken from the first batch
    for _ in range(3):
        loss(torch.randn(2, 3, requires_grad=True), torch.randn(2, 3))
    assert int(loss.queue.pointer) == 1
    fresh = get_loss("moco", queue_size=5)
    fresh.load_state_dict(loss.state_dict())
    torch.testing.assert_close(fresh.queue.features, loss.queue.features)


def test_moco_key_gets_no_gradient():
    k = torch.randn(3, 4, requires_grad=True)
    get_loss("moco", queue_size=4)(torch.randn(3, 4, requires_grad=True), k).backward()
    assert k.grad is None


# ------------------------------------------------------------------ fusion


def test_fusion_fixed_weights_sum_named_losses():
    z1, z2 = torch.randn(8, 6), torch.randn(8, 6)
    fusion = FusionLoss(
        losses={"ntxent": {"temperature": 0.2}, "vicreg": None}, weights={"vicreg": 0.1}
    )
    value = fusion(z1, z2)
    expected = get_loss("ntxent", temperature=0.2)(z1, z2) + 0.1 * get_loss("vicreg")(z1, z2)
    torch.testing.assert_close(value, expected)
    assert {"ntxent", "vicreg", "vicreg/invariance", "ntxent/logit_scale"} <= set(
        fusion.loss_output().components
    )


def test_fusion_routes_inputs_by_name():
    a, b, logits, y = torch.randn(6, 4), torch.randn(6, 4), torch.randn(6, 3), torch.arange(6) % 3
    fusion = get_loss("fusion", losses={"clip": None, "ce": {"name": "cross_entropy"}})
    value = fusion({"clip": (a, b), "ce": {"logits": logits, "targets": y}})
    torch.testing.assert_close(value, get_loss("clip")(a, b) + get_loss("cross_entropy")(logits, y))
    with pytest.raises(ConfigError, match="no entry for loss 'ce'"):
        fusion({"clip": (a, b)})


def test_fusion_uncertainty_weights_learn_log_of_each_loss():
    """Kendall et al.: with the losses held fixed, s_i converges to log L_i."""

    class Const(nn.Module):
        def __init__(self, v: float) -> None:
            super().__init__()
            self.v = v

        def forward(self) -> torch.Tensor:
            return torch.tensor(self.v)

    fusion = FusionLoss(losses={"a": Const(4.0), "b": Const(0.25)}, uncertainty=True)
    opt = torch.optim.SGD(fusion.parameters(), lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        fusion().backward()
        opt.step()
    assert fusion.log_vars is not None
    torch.testing.assert_close(
        fusion.log_vars.detach(), torch.log(torch.tensor([4.0, 0.25])), rtol=1e-3, atol=1e-3
    )


def test_fusion_module_entries_are_used_as_given():
    inner = get_loss("ntxent", temperature=0.3)
    fusion = FusionLoss(losses={"mine": inner})
    assert fusion.losses["mine"] is inner
    with pytest.raises(ConfigError, match="must be a loss module"):
        FusionLoss(losses={"x": 3})  # type: ignore[dict-item]
