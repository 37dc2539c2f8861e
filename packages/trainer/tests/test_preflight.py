"""A run's parts meet one validation batch before the first step: a loss that does not fit
the task, or a user metric that cannot run, is a ConfigError naming the field, and nothing
is written. User metric values are checked at evaluation too."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from torchsmith.interfaces import ConfigError
from torchsmith.trainer import ClassificationTask, _build, build_trainer, validate_config
from torchsmith.trainer._evaluate import evaluate

from .conftest import small_config


@pytest.fixture
def user_metrics(monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of metric functions, importable as ``user_metrics_mod:<name>``."""
    module = types.ModuleType("user_metrics_mod")

    def good(model: object, batch: tuple[torch.Tensor, torch.Tensor], out: object) -> torch.Tensor:
        return batch[0].mean()

    def per_example(model: object, batch: tuple[torch.Tensor, ...], out: object) -> torch.Tensor:
        return batch[0].mean(dim=1)

    def nothing(model: object, batch: object, out: object) -> None:
        return None

    module.good, module.per_example, module.nothing = good, per_example, nothing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "user_metrics_mod", module)
    return "user_metrics_mod"


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (["task.loss=ntxent"], "task.loss", "the loss 'ntxent' fails on a classification task"),
        (["eval.metrics={cwd: 'os:getcwd'}"], "eval.metrics.cwd", "fn\\(model, batch, output\\)"),
        (["eval.metrics={m: 'user_metrics_mod:per_example'}"], "eval.metrics.m", r"shape \(2,\)"),
        (["eval.metrics={m: 'user_metrics_mod:nothing'}"], "eval.metrics.m", "got NoneType"),
    ],
)
def test_what_cannot_run_is_refused_before_the_first_step(
    tmp_path: Path, user_metrics: str, overrides: list[str], field: str, message: str
) -> None:
    config = small_config(tmp_path / "run", *overrides, "eval.every_steps=10")
    with pytest.raises(ConfigError, match=rf"^{field}: .*{message}"):
        build_trainer(config)
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"in_features": 64, "out_features": 10, "bogus": 1}, "TypeError: .*'bogus'"),
        ({}, "TypeError: .*missing 2 required"),
        ({"in_features": 64, "out_features": -10}, "RuntimeError: .*negative dimension"),
    ],
)
def test_an_imported_model_that_cannot_be_built_names_its_kwargs(
    tmp_path: Path, kwargs: dict[str, int], error: str
) -> None:
    model = {"kind": "import", "target": "torch.nn:Linear", "kwargs": kwargs}
    config = small_config(tmp_path / "run", model=model)
    with pytest.raises(
        ConfigError, match=rf"^model\.kwargs: torch\.nn:Linear\(.*\) failed: {error}"
    ):
        build_trainer(config)
    assert not (tmp_path / "run").exists()


def test_a_metric_module_that_fails_to_import_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_metric_mod.py").write_text("def m(model, batch, out:\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"^eval\.metrics\.m: importing .* failed: SyntaxError"):
        build_trainer(small_config(tmp_path / "run", "eval.metrics={m: 'broken_metric_mod:m'}"))
    assert not (tmp_path / "run").exists()


def test_a_top_k_asked_for_beyond_the_classes_is_refused(tmp_path: Path) -> None:
    """Asked for, it would be missing from every evaluation without a word."""
    with pytest.raises(ConfigError, match=r"^task\.top_k: 11 is more than the 10 classes"):
        build_trainer(small_config(tmp_path / "run", "task.top_k=[1, 11]"))
    linear = {"kind": "import", "target": "torch.nn:Linear", "kwargs": {"in_features": 64,
              "out_features": 10}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"^task\.top_k: 12 is more than the 10 classes 'torch"):
        build_trainer(small_config(tmp_path / "run", "task.top_k=[12]", model=linear))
    assert not (tmp_path / "run").exists()
    # Within the classes, or none at all (accuracy alone), a run builds; so does the
    # default, also once the config has made a round trip through its own dump.
    for top_k in ("[1, 10]", "[]"):
        build_trainer(small_config(tmp_path / top_k, f"task.top_k={top_k}", model=linear))
    dumped = small_config(tmp_path / "dumped", model=linear).model_dump(mode="json")
    build_trainer(validate_config(dumped))


def test_the_preflight_batch_changes_nothing_the_run_does(
    tmp_path: Path, user_metrics: str
) -> None:
    """Same weights with a metric (one preflight batch through it) as without, bit for bit,
    and dropout (in the small config) draws the same numbers either way."""
    plain = build_trainer(small_config(tmp_path / "a", "eval.every_steps=10"))
    plain.fit()
    metric = f"eval.metrics={{mean_x: '{user_metrics}:good'}}"
    measured = build_trainer(small_config(tmp_path / "b", "eval.every_steps=10", metric))
    metrics = measured.fit()
    assert 0.0 < metrics["val_mean_x"] < 1.0
    for a, b in zip(
        plain.stepper.model.state_dict().values(),
        measured.stepper.model.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)


def test_evaluate_checks_what_a_metric_returns() -> None:
    data = DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,))), batch_size=4)
    model = torch.nn.Linear(4, 3)

    def vector(model: object, batch: tuple[torch.Tensor, ...], out: object) -> torch.Tensor:
        return batch[0].sum(dim=1)

    with pytest.raises(ConfigError, match=r"^eval.metrics.v: .*float32 tensor of shape \(4,\)"):
        evaluate(model, ClassificationTask(), data, metrics={"v": vector})
    result = evaluate(
        model,
        ClassificationTask(),
        data,
        metrics={
            "one": lambda *_: 1,
            "half": lambda *_: np.float32(0.5),
            "count": lambda m, batch, out: (batch[1] >= 0).sum(),  # an int64 tensor of 4
        },
    )
    assert (result["val_one"], result["val_half"], result["val_count"]) == (1.0, 0.5, 4.0)


def test_the_preflight_leaves_a_memory_bank_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loss that fills its memory bank on first use fills a copy's in the preflight: the
    run's weights equal those of a run built with no preflight at all."""
    pytest.importorskip("torchsmith.losses", reason="the memory bank is torchsmith-losses'")
    contrastive = [
        "task.kind=contrastive",
        "task.loss=ntxent",
        "task.loss_kwargs={memory_bank_size: 64}",
        "training.max_steps=6",
    ]

    def final_weights(out: Path) -> list[torch.Tensor]:
        trainer = build_trainer(small_config(out, *contrastive, model={"kind": "encoder"}))
        trainer.fit()
        return list(trainer.stepper.model.state_dict().values())

    with_preflight = final_weights(tmp_path / "a")
    monkeypatch.setattr(_build, "preflight", lambda *args, **kwargs: None)
    without = final_weights(tmp_path / "b")
    assert all(torch.equal(a, b) for a, b in zip(with_preflight, without, strict=True))
