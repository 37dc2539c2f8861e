"""torchsmith-bench timing the other suites: built-in cases and a generated model's bench file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchsmith.bench import REGISTRY, MeasureConfig, discover, measure_cases

FAST = MeasureConfig(warmup_time=0.0, min_block_time=0.001, min_samples=3, max_samples=4,
                     max_time=0.02)  # fmt: skip


def test_builtin_loss_and_trainer_cases_run() -> None:
    pytest.importorskip("torchsmith.losses")
    pytest.importorskip("torchsmith.trainer")
    import torchsmith.bench._builtin  # noqa: F401  (registers the cases)

    # One round, no memory probe: this checks the suites' cases, not the rounds or the probe
    # (the generated-model test below runs those defaults).
    cases = ["losses.ntxent", "trainer.step", "data.build_loader"]
    results = {r.case: r for r in measure_cases(cases, config=FAST, rounds=1, memory="off")}
    assert set(results) >= {"losses.ntxent", "losses.ntxent_reference", "trainer.step",
                            "trainer.step_reference", "data.build_loader"}  # fmt: skip
    assert 0.0 < results["trainer.step"].extra["data_wait_fraction"] < 1.0
    assert results["trainer.step"].extra["throughput"] > 0
    assert "baseline_ratio" in results["losses.ntxent"].extra


def test_suite_ntxent_agrees_with_the_reference_it_is_timed_against() -> None:
    losses = pytest.importorskip("torchsmith.losses")
    from torchsmith.bench._builtin import ntxent_reference

    torch.manual_seed(0)
    z1, z2 = torch.randn(16, 8), torch.randn(16, 8)
    ours = losses.get_loss("ntxent", temperature=0.5)(z1, z2)
    assert ours.item() == pytest.approx(ntxent_reference(z1, z2).item(), rel=1e-5)


def test_a_generated_models_bench_file_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = pytest.importorskip("torchsmith.generator")
    monkeypatch.setattr(REGISTRY, "_cases", {})
    tiny = ["vocab_size=64", "n_positions=32", "n_embd=16", "n_layer=1", "n_head=2"]
    generator.generate("gpt2", tmp_path / "model", overrides=tiny, validate=False)
    files = discover([tmp_path / "model"])
    assert [f.name for f in files] == ["bench_model.py"]
    results = measure_cases(config=FAST)
    assert {r.params["batch_size"] for r in results} == {1, 8}
    assert all(r.extra["throughput"] > 0 for r in results)
