"""A class-weighted cross-entropy accumulates, evaluates and logs as one batch would.

``F.cross_entropy(weight=w)`` divides by the targets' total weight, not by their count, so
micro-batches must weigh in by that total (``TaskOutput.loss_weight``); the metrics, still
means over examples, by their count.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from torchsmith.interfaces import ConfigError
from torchsmith.trainer import ClassificationTask, Stepper, build_loader, evaluate
from torchsmith.trainer._losses import _builtin
from torchsmith.trainer._tasks import build_task

WEIGHT = [1.0, 5.0, 0.2]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(5, 3).double()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    # Micro-batches of very different total weight: class 1 weighs 25 times class 2.
    y = torch.tensor([1, 1, 1, 1, 0, 2, 2, 2, 2, 2, -100, 0])
    return x, y


def _reference_grads(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    model = _model()
    F.cross_entropy(model(x), y, weight=torch.tensor(WEIGHT, dtype=torch.float64)).backward()
    return [p.grad for p in model.parameters()]


class _KeepGrads(torch.optim.SGD):
    def zero_grad(self, set_to_none: bool = True) -> None:
        return None


def _tasks() -> list[ClassificationTask]:
    """The config's task (torchsmith-losses' cross-entropy), and one with torch's, as a
    config builds it where torchsmith-losses is not installed."""
    ours = build_task("classification", "cross_entropy", {"weight": WEIGHT}, [1])
    assert isinstance(ours, ClassificationTask) and ours.class_weight is not None
    torchs = _builtin("cross_entropy", {"weight": WEIGHT})
    return [
        ours,
        ClassificationTask(torchs, [1], class_weight=torch.tensor(WEIGHT, dtype=torch.float64)),
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["torchsmith-losses", "torch"])
def test_accumulated_micro_batches_give_the_one_batch_gradient(which: int) -> None:
    task = _tasks()[which]
    x, y = _data()
    model = _model()
    stepper = Stepper(model, task, _KeepGrads(model.parameters(), lr=0.0), items_per_micro_batch=4)
    stepper([(x[i : i + 4], y[i : i + 4]) for i in (0, 4, 8)], step=0)
    for got, want in zip((p.grad for p in model.parameters()), _reference_grads(x, y), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)

    # Weighted by example counts instead (as before TaskOutput.loss_weight), it is not.
    by_count = _model()
    for i in (0, 4, 8):
        xb, yb = x[i : i + 4], y[i : i + 4]
        kept = int((yb != -100).sum())
        (task.loss(by_count(xb), yb) * kept / 11).backward()
    assert (by_count.weight.grad - _reference_grads(x, y)[0]).abs().max() > 1e-2


def test_validation_loss_is_the_weighted_mean_over_the_set_and_accuracy_over_examples() -> None:
    task = _tasks()[0]
    x, y = _data()
    model = _model()
    got = evaluate(model, task, build_loader(TensorDataset(x, y), 4, drop_last=False))
    want = F.cross_entropy(model(x), y, weight=torch.tensor(WEIGHT, dtype=torch.float64))
    assert got["val_loss"] == pytest.approx(float(want.detach()), rel=1e-6)
    kept = y != -100  # the ignored target is no example to score either
    hits = model(x)[kept].argmax(1) == y[kept]
    assert got["val_accuracy"] == pytest.approx(float(hits.double().mean()), rel=1e-6)


def test_the_logged_loss_is_the_weighted_mean_over_the_interval() -> None:
    task = _tasks()[0]
    x, y = _data()
    model = _model()
    stepper = Stepper(model, task, _KeepGrads(model.parameters(), lr=0.0), track=True)
    stepper([(x[:4], y[:4]), (x[4:8], y[4:8])], step=0)
    stepper([(x[8:], y[8:])], step=1)
    loss_sum, weight, items = stepper.pop_tracked()
    assert loss_sum is not None
    want = F.cross_entropy(model(x), y, weight=torch.tensor(WEIGHT, dtype=torch.float64))
    assert float(loss_sum) / weight == pytest.approx(float(want.detach()), rel=1e-6)
    assert weight == pytest.approx(4 * 5.0 + 1.0 + 5 * 0.2 + 1.0)  # the -100 target: none
    assert items == 11  # a rate counts examples (or tokens), not their weight; -100 is none


def test_probability_targets_are_a_mean_over_examples_as_torch_takes_them() -> None:
    task = _tasks()[1]
    x, _ = _data()
    probs = torch.softmax(torch.randn(12, 3, dtype=torch.float64), dim=1)
    out = task(_model(), (x, probs))
    assert out.loss_weight is None and out.weight == 12


def test_class_weights_for_a_language_model_are_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"task\.loss_kwargs\.weight: class weights are for"):
        build_task("causal_lm", None, {"weight": [1.0, 2.0]}, [1])


@pytest.mark.parametrize("which", [0, 1], ids=["torchsmith-losses", "torch"])
def test_a_micro_batch_of_weightless_targets_adds_nothing_and_is_not_nan(which: int) -> None:
    weight = [0.0, 1.0]
    task = [
        build_task("classification", "cross_entropy", {"weight": weight}, [1]),
        ClassificationTask(_builtin("cross_entropy", {"weight": weight}), [1],
                           class_weight=torch.tensor(weight, dtype=torch.float64)),
    ][which]  # fmt: skip
    torch.manual_seed(0)
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.tensor([0, 0, 0, 0, 1, 0, 1, 0])
    model = nn.Linear(4, 2).double()
    reference = copy.deepcopy(model)
    F.cross_entropy(reference(x), y, weight=torch.tensor(weight, dtype=torch.float64)).backward()
    stepper = Stepper(model, task, _KeepGrads(model.parameters(), lr=0.0), items_per_micro_batch=4)
    stepper([(x[:4], y[:4]), (x[4:], y[4:])], step=0)  # the first weighs nothing
    torch.testing.assert_close(model.weight.grad, reference.weight.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("weight", [[1.0, -2.0], [[1.0]], ["a"], [float("nan")], [], [True, False]])
def test_bad_weights_for_torchs_cross_entropy_fail_before_training(weight: object) -> None:
    with pytest.raises(ConfigError, match="weight must be a list of one finite, non-negative"):
        _builtin("cross_entropy", {"weight": weight})


def test_a_rate_of_items_counts_items_not_the_losss_weight() -> None:
    from torchsmith.trainer import BatchStream, ListSink, ResumableSampler, Schedule, Trainer

    x, y = _data()
    data = TensorDataset(x, y)
    sampler = ResumableSampler(len(data), 4, seed=0)
    sink = ListSink()
    model = _model()
    trainer = Trainer(
        stepper=Stepper(model, _tasks()[0], torch.optim.SGD(model.parameters(), lr=0.1)),
        data=BatchStream(build_loader(data, 4, sampler=sampler), sampler),
        schedule=Schedule(max_steps=3, log_every=3),
        sinks=[sink],
        items_name="tokens",  # one "token" per labelled example here
        samples_per_micro_batch=4,
    )
    trainer.fit()
    (step,) = [e for e in sink.events if e.kind == "step"]
    # The 12 examples hold 11 labelled ones (one is -100): a weight-based rate would be 44/12.
    rate = step.metrics["tokens_per_s"] / step.metrics["samples_per_s"]
    assert rate == pytest.approx(11 / 12)
