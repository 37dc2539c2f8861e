"""Trainer overhead: time per epoch of torchsmith's Trainer vs a hand-written loop.

Both do the same work on the same model and data (forward, backward, step,
zero_grad; no progress bar, no logging sink, no scheduler), measured side by
side in one process, interleaved ABBA, one thread. The hand-written loop reads
the trainer's own loader, so the ratio is what the loop costs, and saves: the trainer
clears gradients without the profiler range ``opt.zero_grad()`` opens. A second hand
loop clearing them the same way isolates the loop's own cost; a third, over a plain
DataLoader, shows what a user's own loop gets. ``test_digits_mlp_as_configured``
gives the trainer the optimizer its config builds (fused AdamW) against a hand-written
loop with torch's defaults: what a user gets end to end. Ratios are printed, not
asserted tightly: timing on a shared machine is noisy. PyTorch Lightning's ratio on
the same work is reported when it is installed. Set TORCHSMITH_BENCH_DIR to keep the raw
samples (seconds per sample, each side) as JSON lines.

    uv run pytest tests/performance/test_trainer_overhead.py -m perf -s
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from torchsmith.bench import bootstrap_median_ci
from torchsmith.trainer import (
    BatchStream,
    CausalLMTask,
    ClassificationTask,
    OptimConfig,
    ResumableSampler,
    Schedule,
    Stepper,
    Trainer,
    build_loader,
    build_optimizer,
    digits,
    text_corpus,
)
from torchsmith.trainer._datasets import shipped_corpus
from torchsmith.trainer._grads import clear_grads
from torchsmith.trainer._models import GPT, mlp

pytestmark = pytest.mark.perf


def _hand_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loader: DataLoader[Any],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    epochs: int = 1,
    zero_grad: Callable[[torch.optim.Optimizer], None] | None = None,
) -> None:
    """``epochs`` epochs of the loop a user writes; ``zero_grad``: clear the gradients with
    this instead of ``opt.zero_grad(set_to_none=True)``."""
    for _ in range(epochs):
        for x, y in loader:
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if zero_grad is None:
                opt.zero_grad(set_to_none=True)
            else:
                zero_grad(opt)


def _trainer(
    model: nn.Module, opt: torch.optim.Optimizer, dataset: Any, batch: int, task: Any
) -> Trainer:
    sampler = ResumableSampler(len(dataset), batch, seed=0)
    data = BatchStream(build_loader(dataset, batch, sampler=sampler), sampler)
    return Trainer(
        stepper=Stepper(model, task, opt),
        data=data,
        schedule=Schedule(max_steps=10**9, log_every=10**9),
    )


def _trainer_epoch(trainer: Trainer, epochs: int = 1) -> None:
    """``epochs`` epochs in one ``fit()`` (whose set-up, ``model.train()``, is once per run)."""
    trainer.schedule.stop_after = trainer.step + epochs * trainer.data.batches_per_epoch
    trainer.fit()


def _timed(fn: Callable[[], None], clock: Callable[[], float] = time.process_time) -> float:
    start = clock()
    fn()
    return clock() - start


def _interleaved(
    *fns: Callable[[], None],
    rounds: int,
    clock: Callable[[], float] = time.process_time,
) -> list[list[float]]:
    """Samples of each of ``fns``, in forward then reverse order by round (ABBA for two),
    after one warm-up call each."""
    for fn in fns:
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    for i in range(rounds):
        order = range(len(fns)) if i % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            samples[k].append(_timed(fns[k], clock))
    return samples


def _report(name: str, hand: list[float], other: list[float], steps: int, epochs: int = 1) -> float:
    """Print the ratio of ``other`` to ``hand`` (samples of ``epochs`` epochs of ``steps``);
    with TORCHSMITH_BENCH_DIR set, also append the raw samples to trainer_overhead.jsonl."""
    _save({"name": name, "steps_per_sample": steps * epochs, "hand_s": hand, "other_s": other})
    steps *= epochs
    ratio = statistics.median(other) / statistics.median(hand)
    ratio_of_mins = min(other) / min(hand)
    pairs = sorted(o / h for h in hand for o in other)  # every pairing: the ratio's spread
    q1, q3 = pairs[len(pairs) // 4], pairs[3 * len(pairs) // 4]
    paired, low, high = _paired_ratio(hand, other)
    overhead_us = (statistics.median(other) - statistics.median(hand)) / steps * 1e6
    print(
        f"\n{name}: hand {statistics.median(hand) / epochs * 1e3:.2f} ms/epoch, "
        f"other {statistics.median(other) / epochs * 1e3:.2f} ms/epoch, "
        f"ratio of medians {ratio:.3f} (of minima {ratio_of_mins:.3f}), "
        f"ratio IQR [{q1:.3f}, {q3:.3f}], {overhead_us:+.1f} us/step over {steps} steps; "
        f"paired ratio {paired:.4f} (95% CI {low:.4f}-{high:.4f})"
    )
    return ratio


def _paired_ratio(hand: list[float], other: list[float]) -> tuple[float, float, float]:
    """The median of each round's ratio (the two samples of a round ran back to back, so
    they share the machine's state), with torchsmith-bench's bootstrap 95% interval."""
    ratios = [o / h for h, o in zip(hand, other, strict=True)]
    low, high = bootstrap_median_ci(ratios)
    return statistics.median(ratios), low, high


def _save(record: dict[str, object]) -> None:
    if out := os.environ.get("TORCHSMITH_BENCH_DIR"):
        path = Path(out) / "trainer_overhead.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _digits_parts(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = mlp(64, [128], 10)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def _hand_loader(dataset: Any, batch: int) -> DataLoader[Any]:
    """The trainer's own loader, for a hand-written loop: the same batches, read the same way."""
    return build_loader(dataset, batch, sampler=ResumableSampler(len(dataset), batch, seed=0))


def test_digits_mlp_overhead() -> None:
    """Three comparisons, from one interleaved run.

    Against a hand-written loop over the trainer's own loader: the 1.01 target. Against
    the same loop clearing gradients as the trainer does (``clear_grads``: no profiler
    range, about 8 us a step): the trainer's own loop, its task call and NaN check, alone.
    Against one over a plain ``DataLoader(shuffle=True)``: what a user's own loop gets,
    where the trainer's batched read of a tensor dataset saves about 200 us of the 0.8 ms
    step (see ``Gathered``).

    Every loop trains the same model and optimizer objects, in turn: copies of them sit at
    other addresses, and that alone moved a hand-written loop against its own copy by 0.8%
    (0.9924 over 500 rounds); sharing them, five processes' A/A ratios had a median of
    1.0004. Timing does not depend on the weights' values.
    """
    torch.set_num_threads(1)
    train, _ = digits()
    model, opt = _digits_parts()
    plain = DataLoader(train, batch_size=32, shuffle=True, drop_last=True)
    same, same_too = _hand_loader(train, 32), _hand_loader(train, 32)
    trainer = _trainer(model, opt, train, 32, ClassificationTask())
    epochs = 3  # per sample: fit()'s once-per-run set-up (about 10 us) is not an epoch's cost
    by_hand, by_hand_clearing, by_hand_plain, ours = _interleaved(
        lambda: _hand_epoch(model, opt, same, F.cross_entropy, epochs),
        lambda: _hand_epoch(model, opt, same_too, F.cross_entropy, epochs, clear_grads),
        lambda: _hand_epoch(model, opt, plain, F.cross_entropy, epochs),
        lambda: _trainer_epoch(trainer, epochs),
        rounds=60,
    )
    steps = len(same)
    ratio = _report("digits MLP, batch 32, 1 thread: trainer", by_hand, ours, steps, epochs)
    _report("  ...against a hand-written loop clearing gradients as the trainer does",
            by_hand_clearing, ours, steps, epochs)  # fmt: skip
    _report("  ...against a hand-written loop over a plain DataLoader", by_hand_plain, ours,
            steps, epochs)  # fmt: skip
    assert ratio < 1.5  # a loose guard against a gross regression, not the 1.01 target


def _configured_digits_parts(device: str = "cpu") -> tuple[nn.Module, torch.optim.Optimizer]:
    """The digits MLP with the optimizer a config builds: AdamW, fused where torch has it."""
    torch.manual_seed(0)
    model = mlp(64, [128], 10).to(device)
    return model, build_optimizer(model, OptimConfig(lr=1e-3))


def test_digits_mlp_as_configured() -> None:
    """What a user gets end to end, not the loop's overhead: the trainer with the optimizer
    its config builds (fused AdamW, norms and biases exempt from decay) against a
    hand-written loop with torch's default AdamW over a plain ``DataLoader``. The two train
    alike to rounding (``test_optim.py``), by different operations."""
    torch.set_num_threads(1)
    train, _ = digits()
    hand_model, hand_opt = _digits_parts()
    plain = DataLoader(train, batch_size=32, shuffle=True, drop_last=True)
    trainer = _trainer(*_configured_digits_parts(), train, 32, ClassificationTask())
    epochs = 3
    by_hand, ours = _interleaved(
        lambda: _hand_epoch(hand_model, hand_opt, plain, F.cross_entropy, epochs),
        lambda: _trainer_epoch(trainer, epochs),
        rounds=40,
    )
    name = "digits MLP, batch 32, 1 thread: trainer as configured (fused AdamW) vs hand"
    ratio = _report(name, by_hand, ours, len(plain), epochs)
    assert ratio < 1.0  # 0.66 measured: batched reads and the fused step, not noise


def test_digits_hand_written_against_itself() -> None:
    """The harness's floor: two hand-written loops (A/A) should give 1.000 within noise."""
    torch.set_num_threads(1)
    train, _ = digits()

    model, opt = _digits_parts()  # shared, as in test_digits_mlp_overhead

    def hand_loop() -> Callable[[], None]:
        loader = DataLoader(train, batch_size=32, shuffle=True, drop_last=True)
        return lambda: _hand_epoch(model, opt, loader, F.cross_entropy, epochs=3)

    a, b = _interleaved(hand_loop(), hand_loop(), rounds=60)
    ratio = _report("A/A: digits MLP, hand-written against itself", a, b, 44, epochs=3)
    assert 0.8 < ratio < 1.25  # only a gross harness fault fails this


def _char_gpt_parts() -> tuple[Any, nn.Module, torch.optim.Optimizer]:
    """The char-GPT recipe's shape at test size: (training set, model, optimizer)."""
    train, _, tok = text_corpus(shipped_corpus(), "char", 64, 0.1)
    torch.manual_seed(0)
    model = GPT(tok.vocab_size, 64, 2, 4, 64)
    return train, model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def _lm_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def test_char_gpt_overhead() -> None:
    torch.set_num_threads(1)
    train, model, opt = _char_gpt_parts()  # every loop trains these, as for the digits
    plain = DataLoader(train, batch_size=32, shuffle=True, drop_last=True)
    same = _hand_loader(train, 32)
    trainer = _trainer(model, opt, train, 32, CausalLMTask())
    by_hand, by_hand_plain, ours = _interleaved(
        lambda: _hand_epoch(model, opt, same, _lm_loss),
        lambda: _hand_epoch(model, opt, plain, _lm_loss),
        lambda: _trainer_epoch(trainer),
        rounds=40,  # a 40 ms step varies by more than the loop's cost: many rounds
    )
    name = "char-GPT (2x64, block 64), batch 32, 1 thread: trainer"
    ratio = _report(name, by_hand, ours, len(same))
    _report("  ...against a hand-written loop over a plain DataLoader", by_hand_plain, ours,
            len(same))  # fmt: skip
    assert ratio < 1.5


def test_digits_mlp_overhead_on_cuda() -> None:
    """The loop's overhead on a GPU: batches copied from pinned memory, wall-clock epochs.

    A step this small is bound by kernel launches on the host, so the trainer's Python
    shows more here than on the CPU; its NaN check waits for the loop's next pause
    (``nonfinite_check='auto'``), so neither loop syncs with the GPU inside an epoch.
    """
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cuda = torch.device("cuda")
    train, _ = digits()

    def parts() -> tuple[nn.Module, torch.optim.Optimizer]:
        model, _ = _digits_parts()
        model.to(cuda)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)

    def hand_epoch(model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader[Any]) -> None:
        for x, y in loader:
            x, y = x.to(cuda, non_blocking=True), y.to(cuda, non_blocking=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    def synced(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            fn()
            torch.cuda.synchronize()

        return run

    hand_model, hand_opt = parts()
    sampler = ResumableSampler(len(train), 32, seed=0)
    loader = build_loader(train, 32, sampler=sampler, pin_memory=True)  # the trainer's reads
    model, opt = parts()
    trainer = _cuda_trainer(model, opt, train)
    configured = _cuda_trainer(*_configured_digits_parts("cuda"), train)
    hand, ours, fused = _interleaved(
        synced(lambda: hand_epoch(hand_model, hand_opt, loader)),
        synced(lambda: _trainer_epoch(trainer)),
        synced(lambda: _trainer_epoch(configured)),
        rounds=30,
        clock=time.perf_counter,
    )
    ratio = _report("digits MLP on CUDA, batch 32", hand, ours, len(loader))
    _report("  ...the trainer as configured (fused AdamW)", hand, fused, len(loader))
    assert ratio < 1.5


def _cuda_trainer(model: nn.Module, opt: torch.optim.Optimizer, dataset: Any) -> Trainer:
    sampler = ResumableSampler(len(dataset), 32, seed=0)
    data = BatchStream(build_loader(dataset, 32, sampler=sampler, pin_memory=True), sampler)
    # None: the deferred NaN check a config's nonfinite_check="auto" gives on CUDA
    stepper = Stepper(
        model, ClassificationTask(), opt, device=torch.device("cuda"), defer_nonfinite_check=None
    )
    return Trainer(stepper=stepper, data=data, schedule=Schedule(10**9, log_every=10**9))


_MEMORY_PROBE = """
import json, resource, sys, torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
sys.path.insert(0, {here!r})
import test_trainer_overhead as b
from torchsmith.trainer import digits, ClassificationTask
torch.set_num_threads(1)
train, _ = digits()
model, opt = b._digits_parts()
if sys.argv[1] == "hand":
    loader = DataLoader(train, batch_size=32, shuffle=True, drop_last=True)
    for _ in range(3):
        b._hand_epoch(model, opt, loader, F.cross_entropy)
else:
    trainer = b._trainer(model, opt, train, 32, ClassificationTask())
    for _ in range(3):
        b._trainer_epoch(trainer)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def test_digits_peak_memory() -> None:
    """Peak RSS of a fresh process running 3 epochs each way (imports included in both)."""
    probe = _MEMORY_PROBE.format(here=str(Path(__file__).parent))
    peaks = {}
    for kind in ("hand", "trainer"):
        out = subprocess.run(
            [sys.executable, "-c", probe, kind],
            capture_output=True,
            text=True,
            check=True,
            # A bare environment, but for where the packages are (PYTHONPATH, if set).
            env={
                "OMP_NUM_THREADS": "1",
                "PATH": "",
                "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            },
        )
        peaks[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = peaks["trainer"] / peaks["hand"]
    print(
        f"\npeak RSS: hand {peaks['hand'] / 1024:.1f} MiB, trainer "
        f"{peaks['trainer'] / 1024:.1f} MiB, ratio {ratio:.3f}"
    )
    assert ratio < 1.25


def test_lightning_overhead_when_installed() -> None:
    L = pytest.importorskip("lightning.pytorch", reason="pytorch-lightning is not installed")
    torch.set_num_threads(1)
    train, _ = digits()

    class Module(L.LightningModule):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.model, _ = _digits_parts()

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.model(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    epochs: list[float] = []

    class EpochTimer(L.Callback):  # type: ignore[misc, name-defined]
        def on_train_epoch_start(self, *_: Any) -> None:
            self.start = time.process_time()

        def on_train_epoch_end(self, *_: Any) -> None:
            epochs.append(time.process_time() - self.start)

    hand_model, hand_opt = _digits_parts()
    loader = DataLoader(train, batch_size=32, shuffle=True, drop_last=True)
    hand = [
        _timed(lambda: _hand_epoch(hand_model, hand_opt, loader, F.cross_entropy))
        for _ in range(16)
    ]
    trainer = L.Trainer(
        max_epochs=16,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[EpochTimer()],
    )
    trainer.fit(Module(), loader)
    after = [
        _timed(lambda: _hand_epoch(hand_model, hand_opt, loader, F.cross_entropy))
        for _ in range(16)
    ]
    # fit() runs its epochs in one go, so they cannot be interleaved with the hand loop's:
    # Lightning's k-th epoch is paired with the mean of the k-th hand epoch before and after
    # it (the first of each, a warm-up, left out).
    around = [(b + a) / 2 for b, a in zip(hand[1:], after[1:], strict=True)]
    _report("Lightning, digits MLP (hand epochs before and after)", around, epochs[1:], len(loader))
