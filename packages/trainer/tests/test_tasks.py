"""Tasks and built-in losses, each against a loop written straight from its paper."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchsmith.interfaces import ConfigError, DataError, MissingSuiteError, Task
from torchsmith.trainer import (
    CausalLMTask,
    ClassificationTask,
    CLIPTask,
    ContrastiveTask,
    ExperimentConfig,
    build_trainer,
    clip_loss,
    ntxent,
    resolve_loss,
)
from torchsmith.trainer._data import move_to
from torchsmith.trainer._evaluate import evaluate
from torchsmith.trainer._metrics import RunningMean
from torchsmith.trainer._models import GPT, DualEncoder, Encoder
from torchsmith.trainer._tasks import build_task, takes_logit_scale

from .conftest import small_config


def _ntxent_reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """SimCLR eq. 1, one anchor at a time."""
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / den)
    return total / n


def test_ntxent_matches_the_paper() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    assert float(ntxent(z1, z2, 0.5)) == pytest.approx(_ntxent_reference(z1, z2, 0.5), rel=1e-5)


def test_clip_loss_matches_symmetric_cross_entropy() -> None:
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    total = 0.0
    for a, b in ((img, txt), (txt, img)):
        for i in range(4):
            row = [
                10.0 * float(F.normalize(a[i], dim=0) @ F.normalize(b[k], dim=0)) for k in range(4)
            ]
            total += -row[i] + math.log(sum(math.exp(r) for r in row))
    assert float(clip_loss(img, txt, 10.0)) == pytest.approx(total / 8, rel=1e-5)


def test_resolve_loss() -> None:
    assert resolve_loss(F.mse_loss) is F.mse_loss
    z = torch.randn(3, 2)
    # torchsmith-losses' NT-Xent when installed, ours otherwise: the same value either way.
    got = float(resolve_loss("ntxent", temperature=0.2)(z, z))
    assert got == pytest.approx(float(ntxent(z, z, 0.2)), rel=1e-5)
    try:
        import torchsmith.losses as losses
    except ImportError:
        losses = None
    if losses is None or not hasattr(losses, "get_loss"):
        with pytest.raises(MissingSuiteError, match=r"torchsmith-trainer\[losses\]"):
            resolve_loss("focal")


def _train(task: Task, model: nn.Module, batch: tuple, steps: int = 60) -> tuple[float, float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        out = task(model, batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(out.loss.detach()))
    return losses[0], losses[-1]


def test_every_task_learns() -> None:
    torch.manual_seed(0)
    x, y = torch.rand(32, 64), torch.randint(0, 10, (32,))
    first, last = _train(ClassificationTask(), nn.Linear(64, 10), (x, y))
    assert last < first / 2
    first, last = _train(ContrastiveTask(), Encoder(64, 32, 8), (x, y))
    assert last < first
    captions = torch.randint(1, 256, (32, 6))
    first, last = _train(CLIPTask(), DualEncoder(64, 256, 16, 32), (x, captions))
    assert last < first / 2
    tokens = torch.randint(0, 7, (8, 9))
    first, last = _train(CausalLMTask(), GPT(7, 8, 1, 2, 16), (tokens[:, :-1], tokens[:, 1:]))
    assert last < first


def test_metrics_only_in_eval_mode() -> None:
    model, task = nn.Linear(4, 6), ClassificationTask(top_k=(1, 3))
    x, y = torch.randn(10, 4), torch.randint(0, 6, (10,))
    assert task(model, (x, y)).metrics == {}
    model.eval()
    metrics = task(model, (x, y)).metrics
    logits = model(x)
    assert float(metrics["accuracy"]) == pytest.approx(
        float((logits.argmax(1) == y).float().mean())
    )
    top3 = sum(int(y[i]) in logits[i].topk(3).indices.tolist() for i in range(10)) / 10
    assert float(metrics["top3_accuracy"]) == pytest.approx(top3)


def test_language_model_counts_tokens() -> None:
    tokens = torch.randint(0, 5, (3, 7))
    out = CausalLMTask()(GPT(5, 8, 1, 1, 8), (tokens[:, :-1], tokens[:, 1:]))
    assert out.num_items == 18


def test_padding_is_neither_counted_nor_scored() -> None:
    """Targets of -100 (what F.cross_entropy ignores) are padding: not items, not accuracy."""
    torch.manual_seed(0)
    model = GPT(5, 8, 1, 1, 8).eval()
    x, y = torch.randint(0, 5, (3, 6)), torch.randint(0, 5, (3, 6))
    y[1, 3:], y[2, :] = -100, -100
    out = CausalLMTask()(model, (x, y))
    kept = y != -100
    assert isinstance(out.num_items, torch.Tensor) and int(out.num_items) == 9
    with torch.no_grad():
        predicted = model(x).argmax(-1)
    expected = (predicted[kept] == y[kept]).double().mean()
    torch.testing.assert_close(out.metrics["accuracy"].double(), expected)  # type: ignore[union-attr]


def test_evaluation_weighs_batches_by_their_real_tokens() -> None:
    """A padded batch counts its target tokens; one with none adds nothing (its mean is NaN)."""
    torch.manual_seed(0)
    model = GPT(5, 8, 1, 1, 8)
    x, y = torch.randint(0, 5, (4, 6)), torch.randint(0, 5, (4, 6))
    y[1, 2:] = -100
    empty = y[3:].clone().fill_(-100)
    values = evaluate(model, CausalLMTask(), [(x[:2], y[:2]), (x[2:3], y[2:3]), (x[3:], empty)])
    with torch.no_grad():
        logits = model(x[:3]).reshape(-1, 5)
    expected = F.cross_entropy(logits.double(), y[:3].reshape(-1))  # the mean over 14 tokens
    assert values["val_loss"] == pytest.approx(float(expected), rel=1e-5)


def test_builtin_losses_without_the_losses_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torchsmith.losses", None)  # import now fails
    assert resolve_loss("cross_entropy") is F.cross_entropy
    assert resolve_loss("clip") is clip_loss
    z = torch.randn(4, 3)
    assert float(resolve_loss("ntxent", temperature=0.3)(z, z)) == float(ntxent(z, z, 0.3))
    with pytest.raises(MissingSuiteError, match=r"pip install \"torchsmith-trainer\[losses\]\""):
        resolve_loss("focal")
    with pytest.raises(ConfigError, match="'temprature'; accepted keywords: temperature"):
        resolve_loss("ntxent", temprature=0.3)  # at build time, not at the first step


def _clip_config(tmp_path: Path, *overrides: str, **task: Any) -> ExperimentConfig:
    return small_config(
        tmp_path,
        *overrides,
        model={"kind": "clip"},
        data={"kind": "digits", "captions": True},
        task={"kind": "clip", **task},
        training={"max_steps": 30},
    )


def test_clip_from_config_trains_the_models_logit_scale(tmp_path: Path) -> None:
    # With torchsmith-losses installed, "clip" by name once meant ClipLoss, which takes
    # no scale: the model's logit_scale got no gradient and never moved.
    trainer = build_trainer(_clip_config(tmp_path))
    model = trainer.stepper.model
    assert isinstance(model, DualEncoder)
    before = float(model.logit_scale.detach())
    batch = move_to(next(iter(trainer.evaluation.data)), trainer.stepper.device)
    trainer.stepper.task(model, batch).loss.backward()
    assert model.logit_scale.grad is not None and float(model.logit_scale.grad) != 0.0
    model.zero_grad()
    metrics = trainer.fit()
    assert float(model.logit_scale.detach()) != pytest.approx(before, abs=1e-4)
    # Chance is ln(64) = 4.16 for a batch of 64 (the validation batch here).
    assert metrics["val_loss"] < 0.75 * math.log(64)


def test_clip_loss_named_explicitly_also_takes_the_models_scale(tmp_path: Path) -> None:
    task = build_trainer(_clip_config(tmp_path, loss="clip")).stepper.task
    assert task.loss is clip_loss


def test_a_clip_loss_without_the_models_scale_is_refused() -> None:
    def two_args(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return clip_loss(image, text)

    assert not takes_logit_scale(two_args) and takes_logit_scale(clip_loss)
    x, captions = torch.rand(4, 64), torch.randint(1, 256, (4, 6))
    with pytest.raises(ConfigError, match=r"task\.loss: the model returns a logit scale"):
        CLIPTask(two_args)(DualEncoder(64, 256, 16, 32), (x, captions))


@pytest.mark.parametrize("losses", ["installed", "absent"])
def test_a_logit_scale_given_beside_the_models_own_names_the_keyword(
    losses: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if losses == "absent":  # the built-in clip loss: it was blamed on the model instead
        monkeypatch.setitem(sys.modules, "torchsmith.losses", None)
    else:
        pytest.importorskip("torchsmith.losses")
    for name in (None, "clip"):
        with pytest.raises(ConfigError, match=r"^task\.loss_kwargs\.logit_scale: the model"):
            build_task("clip", name, {"logit_scale": 20.0}, [], model_scale=True)


def test_perplexity_is_of_the_token_cross_entropy_whatever_the_loss() -> None:
    """With label smoothing the loss is not the NLL: ``val_perplexity`` is exp of the NLL,
    computed here by hand over every token of the validation set."""
    torch.manual_seed(0)
    model = GPT(20, 8, n_layer=1, n_head=2, n_embd=16)
    x = torch.randint(0, 20, (10, 8))
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # peaked predictions, mostly right: a low NLL that
        y = model(x).argmax(-1)  # label smoothing then raises a lot
    y[:, 0] = torch.randint(0, 20, (10,))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    smoothed = CausalLMTask(lambda logits, t: F.cross_entropy(logits, t, label_smoothing=0.3))
    result = evaluate(model, smoothed, data, perplexity_of_loss=True)
    with torch.no_grad():
        nll = F.cross_entropy(model(x).reshape(-1, 20), y.reshape(-1)).item()
    assert result["val_nll"] == pytest.approx(nll, rel=1e-5)
    assert result["val_perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert abs(result["val_loss"] - nll) > 0.1  # the smoothed loss, reported as it is


def test_an_lm_task_counts_only_what_its_loss_does_not_ignore() -> None:
    """``task.loss_kwargs.ignore_index`` reaches the task: ignored targets are not items."""
    task = build_task("causal_lm", None, {"ignore_index": 0}, [])
    model = GPT(5, 4, n_layer=1, n_head=1, n_embd=8).eval()
    out = task(model, (torch.tensor([[1, 2, 3, 4]]), torch.tensor([[2, 0, 0, 0]])))
    assert int(out.num_items) == 1
    with pytest.raises(ConfigError, match=r"task\.loss_kwargs\.ignore_index: an integer"):
        build_task("causal_lm", None, {"ignore_index": "pad"}, [])


def test_the_clip_logit_scale_is_kept_at_most_100_and_still_learns() -> None:
    """Clamped in place (as CLIP clamps after each step), not in the graph, where the clamp's
    zero gradient would hold it above the cap for good."""
    model = DualEncoder(64, 256, 16, 32)
    with torch.no_grad():
        model.logit_scale.fill_(7.0)  # exp(7) = 1097
    _, _, scale = model(torch.rand(4, 64), torch.randint(1, 256, (4, 5)))
    assert scale.item() == pytest.approx(100.0)
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))
    scale.backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.item() > 0.0


def test_a_config_built_classification_task_takes_class_probabilities() -> None:
    """Mixup-style targets, whichever cross-entropy the config resolves to (torchsmith-losses'
    where it is installed, torch's where not)."""
    torch.manual_seed(0)
    model, x = nn.Linear(5, 3), torch.randn(4, 5)
    probs = torch.softmax(torch.randn(4, 3), dim=1)
    out = build_task("classification", None, {}, [1])(model, (x, probs))
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x), probs))
    assert out.num_items == 4 and out.loss_weight is None


@pytest.mark.parametrize(
    ("task", "name"),
    [(ClassificationTask(), "classification"), (CausalLMTask(), "causal_lm"), (CLIPTask(), "clip")],
)
@pytest.mark.parametrize(
    ("batch", "got"),
    [
        ({"x": 1, "y": 2}, "dict"),  # two keys: unpacking would have given the keys
        ((1, 2, 3), "a tuple of 3"),
        ([torch.zeros(2)], "a list of 1"),
        (torch.zeros(2, 3), "Tensor"),
        ("xy", "str"),
    ],
)
def test_a_batch_that_is_not_a_pair_is_named(task: Task, name: str, batch: Any, got: str) -> None:
    expected = rf"^{name} expects batches of \(inputs, targets\), got {got}$"
    with pytest.raises(DataError, match=expected):
        task(nn.Linear(2, 2), batch)


def test_a_pair_may_be_a_tuple_subclass() -> None:
    """A named tuple is a tuple: the inline check must not ask for exactly ``tuple``."""
    from collections import namedtuple

    pair = namedtuple("pair", "x y")(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    out = ClassificationTask()(nn.Linear(3, 3), pair)
    assert out.num_items == 4 and out.loss.ndim == 0


def test_evaluating_restores_python_and_numpy_generators_even_when_it_fails() -> None:
    import random

    import numpy as np

    def drawing(model: nn.Module, batch: Any, out: Any) -> float:  # a user's metric
        return random.random() + float(np.random.rand())

    def same_numpy_state(before: Any) -> bool:  # the position too, not only the keys
        now = np.random.get_state()
        return bool(now[0] == before[0] and (now[1] == before[1]).all() and now[2:] == before[2:])

    batches = [(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))] * 3
    python, numpy = random.getstate(), np.random.get_state()
    evaluate(nn.Linear(3, 3), ClassificationTask(), batches, metrics={"d": drawing})
    assert random.getstate() == python and same_numpy_state(numpy)

    def failing(model: nn.Module, batch: Any, out: Any) -> float:
        random.random(), np.random.rand()
        raise RuntimeError("metric failed")

    with pytest.raises(RuntimeError, match="metric failed"):
        evaluate(nn.Linear(3, 3), ClassificationTask(), batches, metrics={"f": failing})
    assert random.getstate() == python and same_numpy_state(numpy)


def test_perplexity_of_a_diverged_evaluation_is_infinite_not_a_large_number() -> None:
    """exp(inf) is inf; it was capped at exp(80), so a diverged evaluation could rank best."""
    from torchsmith.trainer._metrics import perplexity

    assert perplexity(math.inf) == math.inf and perplexity(1000.0) == math.inf
    assert math.isnan(perplexity(math.nan)) and perplexity(100.0) == math.exp(100.0)


def test_running_mean_is_item_weighted() -> None:
    mean = RunningMean()
    mean.update({"x": torch.tensor(1.0)}, 3)
    mean.update({"x": 5.0}, 1)
    assert mean.compute() == {"x": 2.0}
    mean.reset()
    assert mean.compute() == {}
    # A value some batches do not report is the mean over the batches that do.
    mean.update({"x": 1.0, "y": 3.0}, 2)
    mean.update({"x": 5.0}, 2)
    assert mean.compute() == {"x": 3.0, "y": 3.0}


def test_running_mean_sums_in_float64() -> None:
    """A long evaluation's float32 batch means, summed in float32, drift (by 3e-6 after
    20,000 batches); the mean here is float64's to 1e-12."""
    values = torch.rand(5000, generator=torch.Generator().manual_seed(0)) * 3 + 1
    mean = RunningMean()
    for value in values:
        mean.update({"loss": value}, torch.tensor(512))
    assert mean.compute()["loss"] == pytest.approx(values.double().mean().item(), rel=1e-12)
