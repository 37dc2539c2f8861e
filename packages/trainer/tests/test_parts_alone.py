"""The parts used without Trainer, in a loop of one's own: what they assume is checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from torchsmith.interfaces import CheckpointError, DataError
from torchsmith.trainer import (
    BatchStream,
    CausalLMTask,
    CheckpointManager,
    ClassificationTask,
    CLIPTask,
    ContrastiveTask,
    EarlyStopping,
    ResumableSampler,
    Stepper,
    build_loader,
    evaluate,
    generate,
)


def _linear() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Linear(4, 3)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_a_stepper_alone_checks_every_loss_on_the_models_device() -> None:
    model, opt = _linear()
    stepper = Stepper(model, ClassificationTask(), opt)
    assert stepper.device == torch.device("cpu") and not stepper._defer
    # Deferring, whose checks only a loop calling check_pending() reports, is asked for:
    assert not Stepper(model, ClassificationTask(), opt, device="cuda")._defer
    assert Stepper(
        model, ClassificationTask(), opt, device="cuda", defer_nonfinite_check=None
    )._defer


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "float16"}, "precision: 'fp32', 'bf16' or 'fp16', not 'float16'"),
        ({"nonfinite": "ignore"}, "nonfinite: 'error' or 'skip', not 'ignore'"),
    ],
)
def test_a_stepper_refuses_an_option_it_does_not_know(kwargs: dict, message: str) -> None:
    model, opt = _linear()
    with pytest.raises(ValueError, match=message):
        Stepper(model, ClassificationTask(), opt, **kwargs)


def test_a_checkpoint_of_objects_is_refused_before_anything_is_pruned(tmp_path: Path) -> None:
    model, opt = _linear()
    manager = CheckpointManager(tmp_path, keep_last=1)
    good = manager.save({"model": model.state_dict()}, step=1, metrics={})
    with pytest.raises(CheckpointError, match=r"state \['optimizer'\] holds Python objects .*SGD"):
        manager.save({"model": model.state_dict(), "optimizer": opt}, step=2, metrics={})
    assert manager.all() == [good] and manager.latest() == good
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_numpy_and_tensor_metrics_rank_for_keep_best(tmp_path: Path) -> None:
    model, _ = _linear()
    manager = CheckpointManager(tmp_path, keep_last=1, keep_best=1)
    values = [np.float32(0.1), torch.tensor(0.5), np.array(0.7), 0.9]
    for step, value in enumerate(values, 1):
        manager.save({"model": model.state_dict()}, step=step, metrics={"val_loss": value})
    assert [p.name for p in manager.all()] == ["step-00000001", "step-00000004"]
    for bad in ([0.1], torch.tensor(True), np.bool_(True)):
        with pytest.raises(CheckpointError, match=r"metrics\['val_loss'\] must be a number"):
            manager.save({"model": model.state_dict()}, step=5, metrics={"val_loss": bad})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "minimize"}, "mode: 'min' or 'max', not 'minimize'"),
        ({"keep_last": 0}, r"keep_last: at least 1 \(0\)"),
    ],
)
def test_a_checkpoint_manager_refuses_bad_options(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CheckpointManager(tmp_path, **kwargs)


def test_early_stopping_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="mode: 'min' or 'max', not 'minimize'"):
        EarlyStopping("val_loss", mode="minimize")
    with pytest.raises(ValueError, match="patience: at least 1 evaluation, not 0"):
        EarlyStopping("val_loss", patience=0)
    for delta in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="min_delta: 0 or more, not"):
            EarlyStopping("val_loss", min_delta=delta)


def test_early_stopping_takes_no_saved_best_of_another_metric_or_mode() -> None:
    saved = EarlyStopping("val_loss", mode="min", patience=2)
    saved.update({"val_loss": 1.97})
    saved.update({"val_loss": 2.5})
    for metric, mode in (("val_accuracy", "max"), ("val_loss", "max"), ("val_nll", "min")):
        resumed = EarlyStopping(metric, mode=mode, patience=2)
        with pytest.warns(UserWarning, match=r"now watches .* but the checkpoint's best is of"):
            resumed.load_state_dict(saved.state_dict())
        assert resumed.best is None and resumed.bad_evals == 0
        assert not resumed.update({metric: 0.5})  # the first value is the best so far
    same = EarlyStopping("val_loss", mode="min", patience=5)  # patience may change
    same.load_state_dict(saved.state_dict())
    assert (same.best, same.bad_evals) == (1.97, 1)
    older = EarlyStopping("val_accuracy", mode="max")  # a state that names neither
    older.load_state_dict({"best": 0.8, "bad_evals": 1})
    assert (older.best, older.bad_evals) == (0.8, 1)


def test_a_batch_stream_needs_a_loader_drawing_from_its_sampler() -> None:
    data, sampler = TensorDataset(torch.arange(40)), ResumableSampler(40, 8)
    with pytest.raises(ValueError, match="does not draw from this sampler"):
        BatchStream(build_loader(data, 8), sampler)
    stream = BatchStream(build_loader(data, 8, sampler=sampler), sampler)
    with pytest.raises(ValueError, match="batches_done 6 is beyond an epoch's 5 batches"):
        stream.load_state_dict({"epoch": 0, "batches_done": 6})


def test_causal_lm_ignore_index_applies_to_its_default_loss() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(7, 8), nn.Linear(8, 7))
    x, y = torch.randint(1, 7, (2, 6)), torch.randint(1, 7, (2, 6))
    y[:, -2:] = 0  # padding
    out = CausalLMTask(ignore_index=0)(model, (x, y))
    want = F.cross_entropy(model(x).reshape(-1, 7), y.reshape(-1), ignore_index=0)
    torch.testing.assert_close(out.loss, want)
    assert int(out.num_items) == 8


def test_clip_retrieval_takes_one_id_per_caption() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image, self.text = nn.Linear(4, 3), nn.Embedding(5, 3)

        def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self.image(images), self.text(texts)

    torch.manual_seed(0)
    model, images, texts = Pair().eval(), torch.randn(5, 4), torch.arange(5)  # texts: (B,)
    out = CLIPTask()(model, (images, texts))
    image, text = F.normalize(model.image(images), dim=1), F.normalize(model.text(texts), dim=1)
    right = (image @ text.T).argmax(1) == texts  # distinct captions: the paired one is right
    assert float(out.metrics["retrieval_accuracy"]) == pytest.approx(right.float().mean().item())


def test_the_default_contrastive_views_name_the_shape_they_need() -> None:
    with pytest.raises(DataError, match=r"flattened 8x8 digits, shape \(B, 64\), not \(6, 32\)"):
        ContrastiveTask()(nn.Linear(32, 8), torch.rand(6, 32))


def test_classification_metrics_score_probability_targets_by_their_largest() -> None:
    model = nn.Linear(4, 3).eval()
    x = torch.randn(3, 4)
    labels = model(x).argmax(1)  # the model is right on every example
    soft = F.one_hot(labels, 3).float() * 0.8 + 0.2 / 3  # label-smoothed targets, B == C
    assert float(ClassificationTask(top_k=(1,))(model, (x, soft)).metrics["accuracy"]) == 1.0


def test_evaluate_restores_training_mode_when_the_task_raises() -> None:
    model, _ = _linear()

    def failing(model: nn.Module, batch: object) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        evaluate(model, failing, [(torch.randn(2, 4), torch.tensor([0, 1]))], device="cpu")
    assert model.training


def test_sampling_refuses_a_temperature_of_zero() -> None:
    model = nn.Sequential(nn.Embedding(5, 5))
    with pytest.raises(ValueError, match="temperature: above 0, not 0; for greedy, use top_k=1"):
        generate(model, torch.zeros(1, 1, dtype=torch.long), 2, block_size=4, temperature=0)
