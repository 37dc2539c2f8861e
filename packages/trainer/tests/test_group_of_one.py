"""Every DDP path of the trainer over a process group of one, with gloo and with nccl.

nccl refuses two ranks on one GPU, and the GPU machines we are lent have one, so a
two-process nccl run is out of reach; test_distributed.py runs two gloo processes. What
nccl adds over gloo is that every collective must be given CUDA tensors (gloo takes CPU
ones too), and that DDP binds the GPU. A group of one runs all of it in this process:
the DDP wrapper, the all-reduces of accumulation, logging and evaluation, the broadcast
of buffers before evaluation, the gathered RNG states of a checkpoint and the barriers.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from torchsmith.trainer import ExperimentConfig, ListSink, NonFiniteLossError, build_trainer
from torchsmith.trainer._distributed import Dist, unwrap

from .conftest import poison_step, small_config
from .test_distributed import BATCHNORM_MODEL


class GroupOfOne(Dist):
    """Rank 0 of a world of one that still takes every distributed path (`enabled`)."""

    @property
    def enabled(self) -> bool:
        return True


@pytest.fixture(params=["gloo", "nccl"])
def group(request: pytest.FixtureRequest) -> Iterator[str]:
    """A process group of one, started here and left after the test; yields the device."""
    backend: str = request.param
    if backend == "nccl" and not (torch.cuda.is_available() and dist.is_nccl_available()):
        pytest.skip("nccl needs a CUDA GPU")
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed is missing, or a process group is already running")
    bound = torch.device("cuda", 0) if backend == "nccl" else None  # as init_distributed does
    if bound is not None:
        torch.cuda.set_device(bound)
    store = dist.HashStore()
    dist.init_process_group(backend, store=store, rank=0, world_size=1, device_id=bound)
    try:
        yield "cpu" if bound is None else "cuda"
    finally:
        dist.destroy_process_group()


def _config(out: Path, device: str, *overrides: str) -> ExperimentConfig:
    return small_config(
        out, f"training.device={device}", "training.grad_accum=2", "eval.every_steps=4",
        "model={kind: import, target: 'bn_model_of_one:build'}", *overrides,
    )  # fmt: skip


def _fit(config: ExperimentConfig, distributed: bool, stop: int | None = None,
         resume: bool = False) -> tuple[dict[str, torch.Tensor], list[float]]:  # fmt: skip
    """The final weights (on the CPU) and the logged losses and validation losses."""
    config = config.model_copy(deep=True)
    config.training.stop_after = stop
    sink = ListSink()
    trainer = build_trainer(config, sinks=[sink], dist=GroupOfOne() if distributed else None)
    assert isinstance(trainer.stepper.model, nn.parallel.DistributedDataParallel) == distributed
    if resume:
        trainer.resume("latest")
    trainer.fit()
    logged = [
        value
        for event in sink.events
        for name, value in event.metrics.items()
        if (event.kind, name) in (("step", "loss"), ("eval", "val_loss"))
    ]
    weights = unwrap(trainer.stepper.model).state_dict()
    return {name: t.detach().cpu().clone() for name, t in weights.items()}, logged


@pytest.mark.filterwarnings("ignore:data. the validation set")
def test_a_group_of_one_trains_as_one_process_does_and_resumes_bitwise(
    group: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bn_model_of_one.py").write_text(BATCHNORM_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    alone, alone_logged = _fit(_config(tmp_path / "alone", group), distributed=False)
    config = _config(tmp_path / "group", group)
    grouped, grouped_logged = _fit(config, distributed=True)
    assert alone.keys() == grouped.keys()
    for name in alone:  # DDP over one rank: its all-reduce is a copy, its average a / 1
        torch.testing.assert_close(grouped[name], alone[name], msg=name)
    assert len(grouped_logged) == len(alone_logged) > 10
    assert grouped_logged == pytest.approx(alone_logged, rel=1e-5)

    config = _config(tmp_path / "resumed", group)
    _fit(config, distributed=True, stop=7)  # mid-epoch, between two evaluations
    resumed, _ = _fit(config, distributed=True, resume=True)
    for name in grouped:
        assert torch.equal(resumed[name], grouped[name]), name


@pytest.mark.parametrize("check", ["step", "window"])
def test_a_nan_in_a_group_of_one_stops_the_run_and_saves_nothing_after_it(
    group: str, tmp_path: Path, check: str
) -> None:
    """The step check reads the flag the step's all-reduce carries; the window check (what
    'auto' is on CUDA) marks bad micro-batches in check_pending's all-reduce at the next pause."""
    config = small_config(
        tmp_path, f"training.device={group}", "training.grad_accum=2",
        f"training.nonfinite_check={check}", "checkpoint.every_steps=2",
    )  # fmt: skip
    trainer = build_trainer(config, dist=GroupOfOne())
    poison_step(trainer, 4)  # the fifth step: micro-batches 8 and 9
    with pytest.raises(
        NonFiniteLossError, match="loss is nan at step 5, batch 8 of the epoch on rank 0"
    ):
        trainer.fit()
    saved = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert saved[-1] == "step-00000004", saved


def test_ddp_steps_on_a_gpu_read_nothing_back_until_the_pause(group: str, tmp_path: Path) -> None:
    """Under DDP on CUDA ('auto'), a step reads no loss, flag or count back to the host:
    nothing in the trainer's code syncs (torch's own syncs, if any, are printed)."""
    if group != "cuda":
        pytest.skip("host syncs are a GPU's")
    config = small_config(tmp_path, "training.device=cuda", "training.grad_accum=2")
    trainer = build_trainer(config, dist=GroupOfOne())
    stepper, data = trainer.stepper, trainer.data
    stepper([next(data), next(data)], 0)  # DDP's first step lays out its buckets
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for step in range(1, 4):
                stepper([next(data), next(data)], step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [
        f"{w.filename}:{w.lineno}"
        for w in caught
        if "synchroniz" in str(w.message) and "debug mode" not in str(w.message)  # not the notice
    ]
    print("host syncs in 3 DDP steps:", syncs)
    assert not [where for where in syncs if "torchsmith/trainer/" in where], syncs
    stepper.check_pending()
