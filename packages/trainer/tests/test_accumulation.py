"""Gradient accumulation equals one large batch, with micro-batches of unequal size (and
unequal numbers of targets that count)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from torchsmith.trainer import CausalLMTask, ClassificationTask, Stepper, build_loader, evaluate
from torchsmith.trainer._tasks import build_task


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (n,), generator=g
    )


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


class _KeepGrads(torch.optim.SGD):
    """SGD whose zero_grad keeps the gradients, so the test can read them after a step."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        return None


# items_per_micro_batch only sizes each backward's gradients; the step's gradient is the same.
@pytest.mark.parametrize("nominal", [1.0, 8.0])
def test_unequal_micro_batches_give_the_large_batch_gradient(nominal: float) -> None:
    x, y = _data(23)
    reference = _model()
    F.cross_entropy(reference(x), y).backward()  # one batch of 23: the mean over 23 items

    model = _model()
    opt = _KeepGrads(model.parameters(), lr=0.0)
    stepper = Stepper(model, ClassificationTask(), opt, items_per_micro_batch=nominal)
    sizes = [(0, 3), (3, 16), (16, 23)]  # 3 + 13 + 7 items
    stepper([(x[a:b], y[a:b]) for a, b in sizes], step=0)
    for got, want in zip(_grads(model), _grads(reference), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)

    # The HF bug (transformers #34191): a mean of micro-batch means is a different gradient.
    naive = _model()
    for a, b in sizes:
        (F.cross_entropy(naive(x[a:b]), y[a:b]) / len(sizes)).backward()
    assert not torch.allclose(_grads(naive)[0], _grads(reference)[0], rtol=1e-6)


def test_each_backward_carries_gradients_the_size_of_one_mean_loss() -> None:
    # With loss * n_i instead, an fp16 backward over 2048 tokens would be 2^11 times larger
    # and overflow; GradScaler would then skip steps that one large batch does not.
    x, y = _data(32)
    first = _model()
    F.cross_entropy(first(x[:16]), y[:16]).backward()
    model = _model()
    seen: list[torch.Tensor] = []
    model[0].weight.register_hook(lambda grad: seen.append(grad.clone()))
    opt = _KeepGrads(model.parameters(), lr=0.0)
    stepper = Stepper(model, ClassificationTask(), opt, items_per_micro_batch=16)
    stepper([(x[:16], y[:16]), (x[16:], y[16:])], step=0)
    torch.testing.assert_close(seen[0], first[0].weight.grad, rtol=1e-12, atol=1e-14)


def test_accumulated_adamw_training_matches_large_batches() -> None:
    x, y = _data(64)
    big, small = _model(), _model()
    opt_big = torch.optim.AdamW(big.parameters(), lr=1e-2)
    opt_small = torch.optim.AdamW(small.parameters(), lr=1e-2)
    big_step = Stepper(big, ClassificationTask(), opt_big, clip_grad_norm=0.5)
    small_step = Stepper(small, ClassificationTask(), opt_small, clip_grad_norm=0.5)
    for step in range(4):
        batch = slice(step * 16, step * 16 + 16)
        xb, yb = x[batch], y[batch]
        big_step([(xb, yb)], step)
        small_step([(xb[:5], yb[:5]), (xb[5:11], yb[5:11]), (xb[11:], yb[11:])], step)
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


class _TokenLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(11, 11).double()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.emb(idx)  # (B, T, vocab)


@pytest.mark.parametrize("lengths", [(4, 9), (2, 3, 12)])
def test_language_model_accumulation_weights_by_tokens(lengths: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(0, 11, (2, t + 1), generator=g) for t in lengths]
    reference = _TokenLM()
    logits = torch.cat([reference(s[:, :-1]).reshape(-1, 11) for s in seqs])
    targets = torch.cat([s[:, 1:].reshape(-1) for s in seqs])
    F.cross_entropy(logits, targets).backward()  # the mean over every token of the window

    model = _TokenLM()
    stepper = Stepper(model, CausalLMTask(), _KeepGrads(model.parameters(), lr=0.0))
    stepper([(s[:, :-1], s[:, 1:]) for s in seqs], step=0)
    torch.testing.assert_close(
        model.emb.weight.grad, reference.emb.weight.grad, rtol=1e-12, atol=1e-14
    )


def test_padding_tokens_do_not_count_towards_the_mean() -> None:
    """Micro-batches of one shape, mostly padding (-100) in one: weighting them by their
    shape, as transformers did before PR #34191, is the bug; by their real tokens, one batch."""
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 11, (4, 8), generator=g)
    y = torch.randint(0, 11, (4, 8), generator=g)
    y[2:, 2:] = -100  # the second micro-batch has 4 target tokens, the first 16
    reference = _TokenLM()
    F.cross_entropy(reference(x).reshape(-1, 11), y.reshape(-1)).backward()

    model = _TokenLM()
    stepper = Stepper(model, CausalLMTask(), _KeepGrads(model.parameters(), lr=0.0),
                      items_per_micro_batch=16.0)  # fmt: skip
    stepper([(x[:2], y[:2]), (x[2:], y[2:])], step=0)
    grad, want = model.emb.weight.grad, reference.emb.weight.grad
    torch.testing.assert_close(grad, want, rtol=1e-12, atol=1e-14)

    by_shape = _TokenLM()  # each micro-batch's mean weighted by its 16 positions
    for a, b in [(0, 2), (2, 4)]:
        (F.cross_entropy(by_shape(x[a:b]).reshape(-1, 11), y[a:b].reshape(-1)) / 2).backward()
    assert (by_shape.emb.weight.grad - want).abs().max() > 1e-3


def _mean_or_zero(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy that gives 0, not NaN, when every target is ignored (as
    torchsmith-losses' does): such a micro-batch passes the NaN check."""
    total = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), reduction="sum")
    return total / (targets != -100).sum().clamp_min(1)


def test_a_window_with_no_target_token_is_one_empty_batch_not_nan_weights() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 11, (4, 8), generator=g)
    y = torch.full((4, 8), -100)  # nothing to predict in either micro-batch: N = 0
    model = _TokenLM()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    task = CausalLMTask(_mean_or_zero)
    Stepper(model, task, opt, items_per_micro_batch=16.0)([(x[:2], y[:2]), (x[2:], y[2:])], 0)

    reference = _TokenLM()  # one batch of no tokens: a zero gradient, and AdamW's step on it
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=0.1)
    _mean_or_zero(reference(x), y).backward()
    ref_opt.step()
    assert torch.isfinite(model.emb.weight).all()
    torch.testing.assert_close(model.emb.weight, reference.emb.weight, rtol=0, atol=0)


def test_last_loss_is_the_steps_item_weighted_mean_over_its_micro_batches() -> None:
    x, y = _data(23)
    want = F.cross_entropy(_model()(x), y)  # the one batch's loss, before the step
    model = _model()
    stepper = Stepper(model, ClassificationTask(), torch.optim.SGD(model.parameters(), lr=0.1))
    assert stepper.last_loss is None
    stepper([(x[:3], y[:3]), (x[3:16], y[3:16]), (x[16:], y[16:])], step=0)
    assert stepper.last_loss is not None
    torch.testing.assert_close(stepper.last_loss, want.detach(), rtol=1e-12, atol=0)


def test_single_micro_batch_path_is_exactly_the_hand_written_step() -> None:
    x, y = _data(16)
    a, b = _model(), copy.deepcopy(_model())
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    Stepper(a, ClassificationTask(), opt_a)([(x, y)], 0)
    F.cross_entropy(b(x), y).backward()
    opt_b.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


class _ScaledCE(nn.Module):
    """Cross-entropy over logits times a learnable scale: a loss with its own parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5, dtype=torch.float64))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits * self.scale, targets)


def test_a_loss_parameter_is_accumulated_like_the_model() -> None:
    x, y = _data(23)
    reference, ref_loss = _model(), _ScaledCE()
    ref_loss(reference(x), y).backward()

    model, loss = _model(), _ScaledCE()
    groups = [{"params": list(model.parameters())}, {"params": list(loss.parameters())}]
    stepper = Stepper(model, ClassificationTask(loss=loss), _KeepGrads(groups, lr=0.0))
    stepper([(x[a:b], y[a:b]) for a, b in [(0, 3), (3, 16), (16, 23)]], step=0)
    assert loss.scale.grad is not None and ref_loss.scale.grad is not None
    torch.testing.assert_close(loss.scale.grad, ref_loss.scale.grad, rtol=1e-12, atol=1e-14)


def _ignored_data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _data(8)
    y[:5] = -100  # the first micro-batch below is mostly unlabelled: 1 of its 6 targets counts
    return x, y


@pytest.mark.parametrize("via", ["config", "python"])
def test_ignored_class_ids_are_not_items_so_micro_batches_equal_one_batch(via: str) -> None:
    x, y = _ignored_data()
    reference = _model()
    F.cross_entropy(reference(x), y).backward()  # the mean over the 3 targets that count

    task = (
        build_task("classification", None, {"ignore_index": -100}, [1])
        if via == "config"
        else ClassificationTask(ignore_index=-100)
    )
    model = _model()
    stepper = Stepper(model, task, _KeepGrads(model.parameters(), lr=0.0))
    stepper([(x[:6], y[:6]), (x[6:], y[6:])], step=0)
    for got, want in zip(_grads(model), _grads(reference), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)

    by_size = _model()  # each micro-batch weighted by its size: what counting every example gives
    for a, b in [(0, 6), (6, 8)]:
        (F.cross_entropy(by_size(x[a:b]), y[a:b]) * (b - a) / 8).backward()
    assert (by_size[2].bias.grad - reference[2].bias.grad).abs().max() > 1e-2


def test_evaluation_over_ignored_class_ids_is_the_mean_over_the_labelled_examples() -> None:
    x, y = _ignored_data()
    x, y = x.repeat(3, 1), torch.cat([y, torch.tensor([0, 1, 2, -100] * 4)])  # 24 examples
    model = _model()
    task = build_task("classification", None, {"ignore_index": -100}, [1, 2])
    got = evaluate(model, task, build_loader(TensorDataset(x, y), 6, drop_last=False))

    kept = y != -100
    with torch.no_grad():
        logits = model(x)
    want_loss = F.cross_entropy(logits, y)  # torch's mean over the labelled examples
    assert got["val_loss"] == pytest.approx(float(want_loss), rel=1e-6)
    hits = logits[kept].argmax(1) == y[kept]
    assert got["val_accuracy"] == pytest.approx(float(hits.double().mean()), rel=1e-6)
    top2 = (logits[kept].topk(2).indices == y[kept, None]).any(1)
    assert got["val_top2_accuracy"] == pytest.approx(float(top2.double().mean()), rel=1e-6)

    metrics = pytest.importorskip("torchmetrics.functional.classification")
    ref = metrics.multiclass_accuracy(logits, y, 3, average="micro", ignore_index=-100)
    assert got["val_accuracy"] == pytest.approx(float(ref), rel=1e-6)


def test_without_ignore_index_every_example_counts_as_a_hand_written_loop_does() -> None:
    x, y = _ignored_data()
    out = ClassificationTask()(_model(), (x, y))
    assert out.num_items == 8 and isinstance(out.num_items, int)  # no count on the device
