"""torchsmith-trainer with torchsmith-losses installed: losses by name agree with the built-ins."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("torchsmith.losses")

from torchsmith.trainer import clip_loss, ntxent, resolve_loss, train


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
    assert metrics["val_loss"] < 5.5  # ln(255) = 5.54: chance for 128 pairs
    assert (tmp_path / "checkpoints" / "latest" / "model.safetensors").is_file()
