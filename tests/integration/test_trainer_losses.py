"""torchsmith-trainer with torchsmith-losses installed: losses by name agree with the built-ins."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("torchsmith.losses")

from torchsmith.interfaces import ConfigError
from torchsmith.trainer import (
    TaskConfig,
    Trainer,
    build_trainer,
    clip_loss,
    load_config,
    ntxent,
    resolve_loss,
    train,
)


def test_losses_by_name_match_the_trainer_builtins() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    logits, targets = torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g)
    assert float(resolve_loss("ntxent", temperature=0.5)(a, b)) == pytest.approx(
        float(ntxent(a, b, 0.5)), rel=1e-5
    )
    assert float(resolve_loss("clip")(a, b)) == pytest.approx(
        float(clip_loss(a, b, 1 / 0.07)), rel=1e-5
    )
    assert float(resolve_loss("cross_entropy")(logits, targets)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, targets)), rel=1e-6
    )


def test_simclr_recipe_trains_with_the_losses_suite(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    metrics = train(
        "simclr-digits",
        overrides=["training.max_steps=40", "eval.every_steps=null", "checkpoint.every_steps=null"],
        out_dir=tmp_path,
    )
    assert metrics["step"] == 40
    # Chance: ln(255) = 5.54 for 128 pairs (the last, short batch: ln(205) = 5.32); a view
    # finds its partner among 128 by chance 1 time in 128. After 40 steps: 4.45 and 0.18.
    assert metrics["val_loss"] < 5.0
    assert metrics["val_pair_accuracy"] > 0.1
    assert (tmp_path / "checkpoints" / "latest" / "model.safetensors").is_file()


def test_a_learnable_loss_temperature_is_optimized(tmp_path: Path) -> None:
    config, _ = load_config(
        "simclr-digits",
        [
            "training.max_steps=5",
            "eval.every_steps=null",
            "checkpoint.every_steps=null",
            "loader.batch_size=32",
            "model.hidden=32",
            f"out_dir={tmp_path}",
            "task.loss_kwargs={temperature: 0.5, learnable_temperature: true}",
        ],
    )
    trainer = build_trainer(config)
    loss = trainer.stepper.task.loss
    assert isinstance(loss, torch.nn.Module)
    (log_scale,) = list(loss.parameters())
    group = trainer.stepper.optimizer.param_groups[-1]
    assert group["params"] == [log_scale] and group["weight_decay"] == 0.0
    before = float(log_scale.detach())
    trainer.fit()
    assert float(log_scale.detach()) != pytest.approx(before, abs=1e-6)
    # Under DDP its gradient is averaged over ranks with the model's (test_distributed.py).


def test_a_loss_that_cannot_take_the_models_scale_is_a_config_error(tmp_path: Path) -> None:
    # torchsmith-losses' ClipLoss owns its temperature; the DualEncoder owns one too.
    clip = {"model": {"kind": "clip"}, "data": {"captions": True}, "out_dir": str(tmp_path)}
    config, _ = load_config(
        clip, ["task.kind=clip", "task.loss=clip", "task.loss_kwargs={learnable_temperature: true}"]
    )
    with pytest.raises(ConfigError, match=r"task\.loss: the model returns a logit scale"):
        build_trainer(config)
    with pytest.raises(ConfigError, match=r"task\.loss: unknown loss 'clipp'"):
        build_trainer(config.model_copy(update={"task": TaskConfig(kind="clip", loss="clipp")}))


def test_loss_state_resumes_exactly(tmp_path: Path) -> None:
    """A learnable temperature and a memory bank live in the loss: checkpoints carry them."""
    torch.set_num_threads(1)

    def trainer(out: Path, stop_after: int | None = None) -> Trainer:
        config, _ = load_config(
            "simclr-digits",
            [
                "training.max_steps=8",
                "eval.every_steps=null",
                "checkpoint.every_steps=null",
                "loader.batch_size=32",
                "model.hidden=32",
                f"out_dir={out}",
                "task.loss_kwargs={temperature: 0.5, learnable_temperature: true, "
                "memory_bank_size: 64}",
            ],
        )
        config.training.stop_after = stop_after
        return build_trainer(config)

    reference = trainer(tmp_path / "a")
    reference.fit()
    trainer(tmp_path / "b", stop_after=4).fit()
    resumed = trainer(tmp_path / "b")
    resumed.resume("latest")
    resumed.fit()
    (loss_state,) = resumed.state_dict()["loss"]  # one entry per rank
    assert "logit_scale.log_scale" in loss_state
    for part in ("model", "loss"):
        expected, got = reference.state_dict()[part], resumed.state_dict()[part]
        if part == "loss":
            expected, got = expected[0], got[0]
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), f"{part}.{key} differs"
