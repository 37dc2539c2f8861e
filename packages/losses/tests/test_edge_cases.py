"""Half precision, tiny and degenerate batches, and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchsmith.interfaces import ConfigError, DataError
from torchsmith.losses import (
    BarlowTwinsLoss,
    ClipLoss,
    CrossEntropyLoss,
    FocalLoss,
    NTXentLoss,
    SigLipLoss,
    SupConLoss,
    TripletLoss,
    VICRegLoss,
    get_loss,
    list_losses,
)

PAIRED = ["clip", "siglip", "ntxent", "moco", "vicreg", "barlow_twins", "cross_modal"]
LABELLED = ["supcon", "triplet", "cross_entropy", "focal"]


def _args(name: str, n: int, d: int, dtype: torch.dtype) -> tuple[list[torch.Tensor], list]:
    a = torch.randn(n, d).to(dtype)
    b = (a.float() + 0.1 * torch.randn(n, d)).to(dtype)
    labels = torch.arange(n) % 3
    if name in PAIRED:
        return [a, b], []
    if name == "fusion":
        return [a, b], []
    return [a], [labels]


def _build(name: str):
    if name == "fusion":
        return get_loss(name, losses={"ntxent": None, "barlow_twins": None})
    return get_loss(name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(list_losses()))
def test_half_precision_gives_finite_values_and_grads(name, dtype):
    diff, fixed = _args(name, 8, 16, dtype)
    leaves = [x.clone().requires_grad_() for x in diff]
    value = _build(name)(*leaves, *fixed)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    for x in leaves:
        if x.grad is not None:  # moco's key is detached by design
            assert x.grad.dtype == dtype
            assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("name", ["clip", "siglip", "ntxent", "moco", "cross_modal", "supcon",
                                  "triplet"])  # fmt: skip
def test_a_zero_row_among_others_stays_zero_with_a_zero_gradient(name, dtype):
    """F.normalize's 1e-12 underflows in fp16 (lightly #1259); and where it does not, the
    zero row's gradient is 1e12 times the upstream one: inf once cast back to fp16. An
    all-zero batch hides that, since every upstream gradient is 0 there."""
    torch.manual_seed(0)
    a = torch.randn(4, 8).to(dtype)
    a[0] = 0
    a.requires_grad_()
    other = [torch.tensor([0, 0, 1, 1])] if name in LABELLED else [torch.randn(4, 8).to(dtype)]
    value = get_loss(name)(a, *other)
    value.backward()
    assert torch.isfinite(value)
    assert a.grad is not None and torch.isfinite(a.grad).all()
    assert (a.grad[0] == 0).all()  # a zero vector has no direction to move along
    assert a.grad[1:].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_zero_batches_stay_finite(dtype):
    z = torch.zeros(4, 8, dtype=dtype, requires_grad=True)
    for loss in (NTXentLoss(), ClipLoss(), SigLipLoss()):
        value = loss(z, z)
        value.backward()
        assert torch.isfinite(value)
        assert z.grad is not None and torch.isfinite(z.grad).all()


def test_normalize_equals_f_normalize_away_from_zero() -> None:
    from torchsmith.losses._base import normalize

    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    weights = torch.randn(6, 5, dtype=torch.float64)
    (normalize(x) * weights).sum().backward()
    (F.normalize(y, dim=-1) * weights).sum().backward()
    torch.testing.assert_close(normalize(x), F.normalize(y, dim=-1), rtol=0, atol=1e-15)
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["clip", "siglip", "ntxent", "cross_modal"])
def test_a_learnable_scale_past_its_cap_is_pulled_back_not_stuck(name):
    """clamp passes no gradient above its bound, so a scale stepped past 100 never came
    back; open_clip clamps the parameter after each step instead, gradient intact. Past
    the cap, a gradient that lowers the scale (positive) passes; one that would raise it
    further (negative) is held at 0."""
    torch.manual_seed(0)
    img, txt = torch.randn(64, 16), torch.randn(64, 16)
    flag = "learnable" if name == "siglip" else "learnable_temperature"
    grads = []
    for sign in (1.0, -1.0):  # the loss, and one whose gradient points the other way
        loss = get_loss(name, temperature=1 / 101.0, **{flag: True})
        assert loss.logit_scale.temperature == pytest.approx(1 / 100.0)
        (sign * loss(img, txt)).backward()
        grads.append(float(loss.logit_scale.log_scale.grad))
    held, passed = sorted(grads)
    assert held == 0.0 and passed > 0


def test_half_precision_is_close_to_fp32():
    a, b = torch.randn(16, 32), torch.randn(16, 32)
    for loss in (NTXentLoss(temperature=0.1), ClipLoss(), SupConLoss()):
        if isinstance(loss, SupConLoss):
            full = loss(a, torch.arange(16) % 4)
            half = loss(a.bfloat16(), torch.arange(16) % 4)
        else:
            full, half = loss(a, b), loss(a.bfloat16(), b.bfloat16())
        assert half.item() == pytest.approx(full.item(), rel=0.05)


@pytest.mark.parametrize("name", ["clip", "siglip", "ntxent", "moco", "cross_modal"])
def test_batch_of_one_is_defined(name):
    diff, fixed = _args(name, 1, 4, torch.float32)
    leaves = [x.clone().requires_grad_() for x in diff]
    value = _build(name)(*leaves, *fixed)
    value.backward()
    assert torch.isfinite(value)
    assert all(torch.isfinite(x.grad).all() for x in leaves if x.grad is not None)


def test_ntxent_batch_of_one_has_one_negative():
    """Two views, each the other's positive and nothing else: log(1) = 0 only if aligned."""
    z1, z2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # candidates of z1: z2 only -> softmax over one entry -> 0
    assert NTXentLoss()(z1, z2).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("name", ["vicreg", "barlow_twins"])
def test_batch_statistics_losses_reject_a_batch_of_one(name):
    with pytest.raises(DataError, match="at least 2"):
        get_loss(name)(torch.randn(1, 4), torch.randn(1, 4))


def test_supcon_without_positives_warns_and_stays_nonzero():
    x = torch.randn(6, 4, requires_grad=True)
    loss = SupConLoss()
    with pytest.warns(RuntimeWarning, match="no anchor has a positive"):
        value = loss(x, torch.arange(6))
    value.backward()
    assert torch.isfinite(value) and value.item() != 0.0
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert loss.loss_output().components["anchors_with_positives"] == 0.0


def test_supcon_single_sample_warns_and_is_finite():
    x = torch.randn(1, 4, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="single sample"):
        value = SupConLoss()(x, torch.tensor([3]))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(x.grad).all()


def test_supcon_identical_embeddings_closed_form():
    """All cosines equal: every log-prob is -log(n - 1)."""
    x = torch.randn(1, 5).expand(6, 5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert SupConLoss()(x, labels).item() == pytest.approx(torch.log(torch.tensor(5.0)).item())


def test_triplet_identical_embeddings_give_margin_and_finite_grads():
    x = torch.randn(1, 5).expand(6, 5).clone().requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    value = TripletLoss(margin=0.3)(x, labels)
    value.backward()
    assert value.item() == pytest.approx(0.3, abs=1e-3)
    assert torch.isfinite(x.grad).all()


def test_triplet_without_valid_triplet_warns():
    with pytest.warns(RuntimeWarning, match="no anchor"):
        value = TripletLoss()(
            torch.randn(4, 3, requires_grad=True), torch.zeros(4, dtype=torch.long)
        )
    assert value.item() == 0.0 and value.requires_grad


@pytest.mark.parametrize("name", ["vicreg", "barlow_twins", "ntxent", "clip", "siglip"])
def test_identical_embeddings_are_finite(name):
    z = torch.randn(1, 6).expand(5, 6).clone().requires_grad_()
    value = get_loss(name)(z, z)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()


def test_cross_entropy_all_ignored_warns_instead_of_nan():
    logits = torch.randn(3, 4, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="ignore_index"):
        value = CrossEntropyLoss()(logits, torch.full((3,), -100))
    assert value.item() == 0.0


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", PAIRED)
def test_mismatched_batch_sizes_name_arguments_and_shapes(name):
    with pytest.raises(DataError, match=r"\(4, 8\).*\(5, 8\)"):
        get_loss(name)(torch.randn(4, 8), torch.randn(5, 8))


@pytest.mark.parametrize("name", PAIRED)
def test_mismatched_feature_dims_raise_value_error(name):
    with pytest.raises(ValueError, match=r"\(4, 8\).*\(4, 6\)"):
        get_loss(name)(torch.randn(4, 8), torch.randn(4, 6))


@pytest.mark.parametrize("name", ["clip", "ntxent", "vicreg"])
def test_wrong_rank_names_the_argument(name):
    first = {"clip": "image_emb", "ntxent": "z1", "vicreg": "z_a"}[name]
    with pytest.raises(DataError, match=rf"{first}.*\(4,\)"):
        get_loss(name)(torch.randn(4), torch.randn(4))


@pytest.mark.parametrize("name", ["supcon", "triplet"])
def test_label_dtype_and_shape(name):
    x = torch.randn(4, 3)
    with pytest.raises(
        DataError, match=r"labels must be an integer tensor, got dtype torch\.float32"
    ):
        get_loss(name)(x, torch.zeros(4))
    with pytest.raises(DataError, match=r"labels must have shape \(4,\).*\(5,\)"):
        get_loss(name)(x, torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("loss", [CrossEntropyLoss(), FocalLoss()])
def test_classification_targets_checked(loss):
    with pytest.raises(DataError, match=r"targets must have shape \(4,\).*\(3,\)"):
        loss(torch.randn(4, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(DataError, match="logits must be"):
        loss(torch.randn(4), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("loss", [CrossEntropyLoss(), FocalLoss()])
@pytest.mark.parametrize("bad", [5, -3])
def test_a_class_id_out_of_range_names_the_targets(loss, bad):
    name = "cross_entropy" if isinstance(loss, CrossEntropyLoss) else "focal"
    with pytest.raises(DataError, match=rf"{name}: targets hold a class id outside 0\.\.4"):
        loss(torch.randn(4, 5), torch.tensor([0, 1, bad, 2]))


def test_cross_entropy_takes_float_targets_of_another_shape_for_neither_kind():
    with pytest.raises(DataError, match=r"probabilities and must have the logits' shape \(4, 5\)"):
        CrossEntropyLoss()(torch.randn(4, 5), torch.zeros(4))
    with pytest.raises(DataError, match="logits must be a floating tensor of shape"):
        CrossEntropyLoss()(torch.randn(4), torch.rand(4))


@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5, 1.0, 3.0]])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_over_probabilities_is_torchs(weight, smoothing):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 3, generator=g, dtype=torch.float64)  # (N, C, d1) too
    probs = torch.softmax(torch.randn(6, 5, 3, generator=g, dtype=torch.float64), dim=1)
    loss = CrossEntropyLoss(weight=weight, label_smoothing=smoothing)
    w = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    want = F.cross_entropy(logits, probs, weight=w, label_smoothing=smoothing)
    torch.testing.assert_close(loss(logits, probs), want)
    hits = (logits.argmax(1) == probs.argmax(1)).double().mean()
    torch.testing.assert_close(loss.components["accuracy"].double(), hits)


def test_class_weight_count_must_match_classes():
    with pytest.raises(DataError, match="weight has 3 entries but logits have 5 classes"):
        CrossEntropyLoss(weight=[1.0, 2.0, 3.0])(
            torch.randn(4, 5), torch.zeros(4, dtype=torch.long)
        )


@pytest.mark.parametrize("name", ["clip", "siglip", "ntxent", "supcon", "moco", "cross_modal"])
@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan")])
def test_temperature_must_be_positive(name, temperature):
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
        get_loss(name, temperature=temperature)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("clip", {"chunk_size": 0}, "chunk_size"),
        ("ntxent", {"memory_bank_size": -1}, "memory_bank_size"),
        ("moco", {"queue_size": 0}, "queue_size"),
        ("triplet", {"mining": "semi"}, "mining"),
        ("focal", {"gamma": -1.0}, "gamma"),
        ("cross_entropy", {"label_smoothing": 1.5}, "label_smoothing"),
        ("vicreg", {"eps": 0.0}, "eps"),
        ("fusion", {"losses": {}}, "at least one"),
        ("fusion", {"losses": {"clip": None}, "weights": {"ntxent": 1.0}}, "ntxent"),
        ("moco", {"dim": -3}, "dim must be an int >= 0"),
        ("moco", {"dim": 0}, "dim must be >= 1"),
        ("clip", {"temperature": None}, "temperature must be a finite number > 0, got None"),
        ("ntxent", {"temperature": "warm"}, "temperature must be a finite number > 0"),
        ("siglip", {"bias": float("nan")}, "bias must be a finite number, got nan"),
        ("triplet", {"soft_margin": True, "margin": -0.1}, "margin must be a finite number >= 0"),
        ("triplet", {"soft_margin": True, "margin": float("nan")}, "margin must be a finite"),
    ],
)
def test_bad_config_raises_config_error(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        get_loss(name, **kwargs)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        VICRegLoss()(torch.randn(4, 3), torch.randn(3, 3))
    with pytest.raises(ValueError):
        BarlowTwinsLoss()(torch.randn(4, 3), "not a tensor")  # type: ignore[arg-type]


def test_a_losss_warning_points_at_the_line_that_called_it():
    """Through nn.Module.__call__, a fixed stacklevel named torch's module.py."""
    cases = [
        (get_loss("cross_entropy"), (torch.randn(3, 4), torch.full((3,), -100))),
        (get_loss("supcon"), (torch.randn(3, 4), torch.arange(3))),
        (get_loss("triplet"), (torch.randn(3, 4), torch.zeros(3, dtype=torch.long))),
    ]
    for loss, args in cases:
        with pytest.warns(RuntimeWarning) as caught:
            loss(*args)
        assert {w.filename for w in caught} == {__file__}, [w.filename for w in caught]


@pytest.mark.parametrize("name", ["cross_entropy", "focal"])
@pytest.mark.parametrize("targets", ["ids", "probabilities"])
def test_an_empty_batch_is_a_data_error_as_for_every_other_loss(name, targets):
    """torch gives NaN (probabilities, sigmoid focal) or 0 with an 'every target ignored'
    warning (ids): neither says what happened."""
    logits = torch.randn(0, 5)
    target = torch.zeros(0, dtype=torch.long) if targets == "ids" else torch.zeros(0, 5)
    with pytest.raises(DataError, match=r"logits is empty: shape \(0, 5\)"):
        get_loss(name)(logits, target)
