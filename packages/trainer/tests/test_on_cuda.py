"""The trainer on a real GPU: what test_cuda_paths.py can only stand in for on the CPU.

Skipped without CUDA (CI has none). On a GPU machine every other test of this suite
runs on the GPU too, since ``training.device`` defaults to ``auto``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchsmith.trainer import ListSink, NonFiniteLossError, build_trainer, load_checkpoint
from torchsmith.trainer._distributed import unwrap

from .conftest import poison_step, small_config
from .test_resume import _assert_bitwise_equal, _run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_trains_on_the_gpu_and_saves_a_checkpoint_the_cpu_reads(
    tmp_path: Path, precision: str
) -> None:
    sink = ListSink()
    config = small_config(
        tmp_path, "training.device=cuda", f"training.precision={precision}",
        "training.max_steps=60", "training.log_every=10", "optim.lr=1e-2",
    )  # fmt: skip
    trainer = build_trainer(config, sinks=[sink])
    assert next(trainer.stepper.model.parameters()).is_cuda
    assert trainer.data.loader.pin_memory
    metrics = trainer.fit()
    losses = [e.metrics["loss"] for e in sink.events if e.kind == "step"]
    assert losses[-1] < losses[0] - 0.5, losses
    assert metrics["val_accuracy"] > 0.5
    state = load_checkpoint(tmp_path / "checkpoints" / "latest")
    tensors = [*state["model"].values(), *state["optimizer"]["state"][0].values()]
    assert all(t.device.type == "cpu" for t in tensors)


# Dropout draws from the GPU's generator; evaluation every 4 steps must leave it alone.
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_resume_on_the_gpu_is_bitwise_identical(tmp_path: Path, precision: str) -> None:
    overrides = ("training.device=cuda", f"training.precision={precision}",
                 "training.grad_accum=2", "eval.every_steps=4")  # fmt: skip
    reference = _run(small_config(tmp_path / "a", *overrides))
    _run(small_config(tmp_path / "b", *overrides), stop_after=7)
    _assert_bitwise_equal(_run(small_config(tmp_path / "b", *overrides), resume=True), reference)


def test_fp16_accumulation_skips_no_more_steps_than_one_large_batch(tmp_path: Path) -> None:
    # GradScaler starts at 2^16 and halves on each overflow. A backward of loss * n_i would
    # overflow n_i times sooner than one of a mean loss, and skip steps a large batch takes.
    scales = {}
    for accum, batch in [(1, 64), (4, 16)]:
        config = small_config(
            tmp_path / str(accum), "training.device=cuda", "training.precision=fp16",
            f"training.grad_accum={accum}", f"loader.batch_size={batch}",
        )  # fmt: skip
        trainer = build_trainer(config)
        trainer.fit()
        assert trainer.stepper.scaler is not None
        scales[accum] = trainer.stepper.scaler.get_scale()
    assert scales[4] >= scales[1] / 2, scales  # at most one overflow more


def test_a_nan_is_found_at_the_next_pause_and_no_checkpoint_follows(tmp_path: Path) -> None:
    trainer = build_trainer(small_config(tmp_path, "training.device=cuda",
                                         "checkpoint.every_steps=5"))  # fmt: skip
    assert trainer.stepper._defer  # 'auto' on CUDA: no host sync per step
    trainer.save()
    good = (tmp_path / "checkpoints" / "latest" / "model.safetensors").read_bytes()
    poison_step(trainer, 3)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 4, batch 3 of the epoch"):
        trainer.fit()
    assert (tmp_path / "checkpoints" / "latest" / "model.safetensors").read_bytes() == good
    assert not (tmp_path / "checkpoints" / "step-00000005").exists()


@pytest.mark.parametrize(
    ("sections", "overrides"),
    [
        ({"model": {"kind": "encoder", "hidden": 32, "projection": 8},
          "task": {"kind": "contrastive"}}, ()),
        ({"model": {"kind": "gpt", "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16},
          "data": {"kind": "text", "block_size": 16}, "task": {"kind": "causal_lm"}},
         ("eval.every_steps=5", "eval.sample_tokens=20", "training.precision=bf16")),
    ],
    ids=["contrastive", "causal_lm_bf16_sampling"],
)  # fmt: skip
def test_every_task_trains_on_the_gpu(
    tmp_path: Path, sections: dict, overrides: tuple[str, ...]
) -> None:
    sink = ListSink()
    config = small_config(tmp_path, "training.device=cuda", "training.max_steps=10",
                          *overrides, **sections)  # fmt: skip
    metrics = build_trainer(config, sinks=[sink]).fit()
    assert metrics["step"] == 10 and torch.isfinite(torch.tensor(metrics["train_loss"]))
    samples = [e.message for e in sink.events if e.kind == "eval" and e.message]
    if "eval.sample_tokens=20" in overrides:
        assert samples and all(len(s) == 21 for s in samples)


def test_compiled_model_on_the_gpu_matches_eager_closely(tmp_path: Path) -> None:
    def weights(out: Path, *extra: str) -> dict[str, torch.Tensor]:
        config = small_config(out, "training.device=cuda", "training.max_steps=8", *extra)
        trainer = build_trainer(config)
        trainer.fit()
        return {k: v.float().cpu() for k, v in unwrap(trainer.stepper.model).state_dict().items()}

    eager = weights(tmp_path / "eager", "model.dropout=0.0")
    compiled = weights(tmp_path / "compiled", "model.dropout=0.0", "training.compile=true")
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5)


def test_a_tensor_dataset_on_the_gpu_is_gathered_there() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from torchsmith.trainer import ResumableSampler, build_loader

    dataset = TensorDataset(torch.randn(40, 3, device="cuda"), torch.arange(40, device="cuda"))
    sampler = ResumableSampler(40, 8, seed=3)
    expected = list(DataLoader(dataset, batch_size=8, sampler=sampler))
    got = list(build_loader(dataset, 8, sampler=sampler))
    assert len(got) == len(expected) == 5
    for ours, theirs in zip(got, expected, strict=True):
        assert all(a.is_cuda and torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_padded_language_model_accumulation_on_the_gpu_is_one_batch() -> None:
    """Token counts stay on the GPU (no sync): the step's scale is a device tensor there."""
    import torch.nn.functional as F

    from torchsmith.trainer import CausalLMTask, Stepper

    from .test_accumulation import _KeepGrads, _TokenLM

    cuda = torch.device("cuda")
    g = torch.Generator().manual_seed(2)
    x, y = torch.randint(0, 11, (4, 8), generator=g), torch.randint(0, 11, (4, 8), generator=g)
    y[2:, 2:] = -100
    x, y = x.to(cuda), y.to(cuda)
    reference = _TokenLM().to(cuda)
    F.cross_entropy(reference(x).reshape(-1, 11), y.reshape(-1)).backward()
    model = _TokenLM().to(cuda)
    opt = _KeepGrads(model.parameters(), lr=0.0)
    stepper = Stepper(
        model,
        CausalLMTask(),
        opt,
        device=cuda,
        items_per_micro_batch=16.0,
        defer_nonfinite_check=None,  # as a config builds it on CUDA: no host sync per step
    )
    torch.cuda.set_sync_debug_mode("error")  # a host sync in the step raises
    try:
        stepper([(x[:2], y[:2]), (x[2:], y[2:])], step=0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert reference.emb.weight.grad is not None and model.emb.weight.grad is not None
    torch.testing.assert_close(
        model.emb.weight.grad, reference.emb.weight.grad, rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("which", [0, 1], ids=["torchsmith-losses", "torch"])
def test_class_weighted_accumulation_on_the_gpu_is_one_batch_without_a_sync(which: int) -> None:
    """The targets' total weight is summed on the GPU; the weights go there once."""
    import torch.nn.functional as F

    from torchsmith.trainer import Stepper

    from .test_accumulation import _KeepGrads
    from .test_class_weights import WEIGHT, _data, _model, _tasks

    cuda = torch.device("cuda")
    task = _tasks()[which]
    x, y = (t.to(cuda) for t in _data())
    if isinstance(task.loss, torch.nn.Module):
        task.loss.to(cuda)  # as the trainer moves a loss with state
    reference = _model().to(cuda)
    weight = torch.tensor(WEIGHT, dtype=torch.float64, device=cuda)
    F.cross_entropy(reference(x), y, weight=weight).backward()
    model = _model().to(cuda)
    opt = _KeepGrads(model.parameters(), lr=0.0)
    stepper = Stepper(model, task, opt, device=cuda, items_per_micro_batch=4,
                      defer_nonfinite_check=None)  # fmt: skip
    task(model, (x[:4], y[:4]))  # the first call puts the weights on the GPU
    torch.cuda.set_sync_debug_mode("error")
    try:
        stepper([(x[i : i + 4], y[i : i + 4]) for i in (0, 4, 8)], step=0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for got, want in zip(model.parameters(), reference.parameters(), strict=True):
        assert got.grad is not None and want.grad is not None
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-12, atol=1e-14)
