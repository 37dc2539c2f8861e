"""DDP under torchrun (gloo, 2 CPU processes) equals one process over the same global batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import assert_same_log, logged_events

SCRIPT = "import sys; from torchsmith.trainer._cli import main; sys.exit(main(sys.argv[1:]))\n"
# gloo on the CPU, also where a GPU is present.
COMMON = ["digits-classifier", "--no-progress", "--set", "model.hidden=[32]",
          "--set", "eval.every_steps=null", "--set", "training.grad_accum=2",
          "--set", "model.dropout=0.1", "--set", "training.log_every=4",
          "--set", "training.device=cpu"]  # fmt: skip


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "latest" / "model.safetensors"))


def _cli_with_modules(tmp_path: Path, **modules: str) -> tuple[Path, dict[str, str]]:
    """The CLI script, and an environment in which ``modules`` (name: source) import."""
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(source)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    paths = [str(tmp_path), os.environ.get("PYTHONPATH", "")]
    return script, {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(paths)}


@pytest.mark.slow
def test_two_gloo_processes_match_one_and_resume_exactly(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def ddp(out: Path, *extra: str) -> None:
        # Per process 16 x 2 micro-batches: 64 examples per step in all.
        args = [*COMMON, "--out", str(out), "--set", "loader.batch_size=16", *extra]
        subprocess.run([*TORCHRUN, str(script), *args], env=env, check=True)

    ddp(tmp_path / "ddp", "--max-steps", "12")
    single = [*COMMON, "--out", str(tmp_path / "single"), "--set", "loader.batch_size=32"]
    # Dropout draws differ between one and two processes, so that comparison runs without it.
    subprocess.run([sys.executable, str(script), *single, "--max-steps", "12",
                    "--set", "model.dropout=0.0"], env=env, check=True)  # fmt: skip
    ddp(tmp_path / "ddp_nodrop", "--max-steps", "12", "--set", "model.dropout=0.0")
    a, b = _weights(tmp_path / "ddp_nodrop"), _weights(tmp_path / "single")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert len(list((tmp_path / "ddp" / "checkpoints").glob("step-*"))) == 1
    # Only rank 0 logs: one end event, and each logged step once (two writers would double
    # them). The logged loss is reduced over both ranks: it is one number per step.
    events = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").open()]
    assert [e["kind"] for e in events].count("end") == 1
    logged = [e["step"] for e in events if e["kind"] == "step"]
    assert logged and len(logged) == len(set(logged))

    # Stop the 2-process run at step 5 and resume it (per-rank RNG, sampler slices): bitwise.
    ddp(tmp_path / "resumed", "--max-steps", "5")
    ddp(tmp_path / "resumed", "--max-steps", "12", "--resume", "latest")
    full, resumed = _weights(tmp_path / "ddp"), _weights(tmp_path / "resumed")
    assert all(torch.equal(full[k], resumed[k]) for k in full)

    # Each rank's checkpoint kept its losses of steps 5 (logged at the stop) and 6-8 are
    # logged at 8 over both ranks, as the uninterrupted run logged them.
    def losses(out: Path) -> dict[int, float]:
        events = map(json.loads, (out / "metrics.jsonl").open())
        return {e["step"]: e["metrics"]["loss"] for e in events if e["kind"] == "step"}

    one_run, resumed_run = losses(tmp_path / "ddp"), losses(tmp_path / "resumed")
    assert resumed_run.keys() == one_run.keys() | {5}
    assert all(resumed_run[step] == loss for step, loss in one_run.items())


POISONED_TASK = """
import os
from itertools import count
from torchsmith.trainer import ClassificationTask

def build(rank, call):
    task, calls = ClassificationTask(), count()
    def poisoned(model, batch):  # the training micro-batch number `call`, on `rank` only
        out = task(model, batch)
        if model.training and next(calls) == call and os.environ["RANK"] == str(rank):
            out.loss = out.loss * float("nan")
        return out
    return poisoned
"""


@pytest.mark.slow
@pytest.mark.parametrize("check", ["step", "window"])
def test_a_nan_on_one_rank_stops_both_and_saves_nothing_after_it(
    tmp_path: Path, check: str
) -> None:
    """Rank 1's micro-batch 9 (step 5 of 2 micro-batches) is NaN. Both ranks must stop, at
    the step ("step": the step's all-reduce carries the flag) or at the next pause, before
    step 6's checkpoint ("window": check_pending's all-reduce); neither may hang or save."""
    script, env = _cli_with_modules(tmp_path, poisoned_task=POISONED_TASK)
    out = tmp_path / "run"
    args = [*COMMON, "--out", str(out), "--max-steps", "12", "--set", "loader.batch_size=16",
            "--set", "task={kind: import, target: 'poisoned_task:build', "
                     "kwargs: {rank: 1, call: 9}}",
            "--set", f"training.nonfinite_check={check}",
            "--set", "checkpoint.every_steps=2"]  # fmt: skip
    run = subprocess.run([*TORCHRUN, str(script), *args], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode != 0
    # Each rank's error names the batch and the rank that saw it (rank 0's is the one logged).
    named = "loss is nan at step 5, batch 9 of the epoch on rank 1"
    assert run.stderr.count(named) == 2, run.stderr[-3000:]
    saved = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert saved[-1] == "step-00000004", saved


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl needs a GPU per process: 2")
def test_two_nccl_processes_match_one_gpu(tmp_path: Path) -> None:
    """The gloo test's first comparison on two GPUs (nccl). The machines we are lent have
    one GPU; test_group_of_one.py runs every nccl path there in a group of one."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    on_gpu = [*COMMON, "--set", "training.device=cuda", "--set", "model.dropout=0.0",
              "--max-steps", "12"]  # fmt: skip
    subprocess.run([*TORCHRUN, str(script), *on_gpu, "--out", str(tmp_path / "ddp"),
                    "--set", "loader.batch_size=16"], check=True, timeout=300)  # fmt: skip
    subprocess.run([sys.executable, str(script), *on_gpu, "--out", str(tmp_path / "single"),
                    "--set", "loader.batch_size=32"], check=True, timeout=300)  # fmt: skip
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "single")
    assert a.keys() == b.keys()
    for key in a:  # cuBLAS may sum a batch of 16 and one of 32 in different orders
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def _two_ranks(script: str, out: Path) -> None:
    """Run ``script`` in 2 gloo processes under torchrun; it writes its results into ``out``."""
    path = out / "two_ranks.py"
    path.write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*TORCHRUN, str(path), str(out)], env=env, check=True)


LOSS_PARAMETER_SCRIPT = """
import os, sys, torch, torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchsmith.trainer import ClassificationTask, Stepper
from torchsmith.trainer._distributed import Dist

class ScaledCE(nn.Module):  # a loss with its own learnable parameter, outside DDP
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5, dtype=torch.float64))
    def forward(self, logits, targets):
        return F.cross_entropy(logits * self.scale, targets)

class KeepGrads(torch.optim.SGD):
    def zero_grad(self, set_to_none=True):
        return None

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
loss = ScaledCE()
g = torch.Generator().manual_seed(1)
x, y = torch.randn(23, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (23,), generator=g)
ddp = nn.parallel.DistributedDataParallel(model)
groups = [{"params": list(model.parameters())}, {"params": list(loss.parameters())}]
stepper = Stepper(ddp, ClassificationTask(loss=loss), KeepGrads(groups, lr=0.0), dist=Dist(rank, 2))
# Unequal shares, two micro-batches each: rank 0 takes 3 + 7 items, rank 1 takes 6 + 7.
cuts = [(0, 3), (3, 10)] if rank == 0 else [(10, 16), (16, 23)]
stepper([(x[a:b], y[a:b]) for a, b in cuts], step=0)
grads = {"scale": loss.scale.grad, **{n: p.grad for n, p in model.named_parameters()}}
torch.save(grads, os.path.join(sys.argv[1], f"rank{rank}.pt"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_a_loss_parameter_gets_the_one_batch_gradient_under_ddp(tmp_path: Path) -> None:
    _two_ranks(LOSS_PARAMETER_SCRIPT, tmp_path)

    # The reference: one process, one batch of all 23 items.
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ).double()
    scale = torch.nn.Parameter(torch.tensor(1.5, dtype=torch.float64))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(23, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (23,), generator=g)
    torch.nn.functional.cross_entropy(model(x) * scale, y).backward()
    expected = {"scale": scale.grad, **{n: p.grad for n, p in model.named_parameters()}}
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name, want in expected.items():
            torch.testing.assert_close(got[name], want, rtol=1e-10, atol=1e-12, msg=name)


EVALUATION_SCRIPT = """
import json, os, sys, torch, torch.distributed as dist
from torch.utils.data import DataLoader
from torchsmith.trainer import ClassificationTask, digits, evaluate
from torchsmith.trainer._distributed import Dist
from torchsmith.trainer._models import mlp

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = mlp(64, [32], 10)
_, val = digits()
loader = DataLoader(val, batch_size=50)  # 359 examples: 8 batches, the last of 9
task = ClassificationTask(top_k=[1, 3])
seen = []
def count(model, batch, out):
    seen.append(len(batch[1]))
    return 0.0
out = {}
for max_batches in (None, 3, 1):  # 1: rank 1 evaluates nothing and still agrees
    out[str(max_batches)] = evaluate(model, task, loader, max_batches=max_batches,
                                     metrics={"zero": count}, dist=Dist(rank, 2))
out["batches_seen"] = len(seen)
with open(os.path.join(sys.argv[1], f"eval{rank}.json"), "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_evaluation_is_split_across_ranks_and_reduced(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    from torchsmith.trainer import ClassificationTask, digits, evaluate
    from torchsmith.trainer._models import mlp

    _two_ranks(EVALUATION_SCRIPT, tmp_path)

    torch.manual_seed(0)
    model = mlp(64, [32], 10)
    _, val = digits()
    loader = DataLoader(val, batch_size=50)
    task = ClassificationTask(top_k=[1, 3])
    ranks = [json.loads((tmp_path / f"eval{r}.json").read_text()) for r in (0, 1)]
    # Rank 0 takes batches 0, 2, 4, 6 (+0, 2, +0), rank 1 batches 1, 3, 5, 7 (+1, +0).
    assert [r["batches_seen"] for r in ranks] == [4 + 2 + 1, 4 + 1 + 0]
    for max_batches in (None, 3, 1):
        single = evaluate(model, task, loader, max_batches=max_batches,
                          metrics={"zero": lambda *_: 0.0})  # fmt: skip
        for rank in ranks:
            got = rank[str(max_batches)]
            assert got.keys() == single.keys()
            for name, value in single.items():
                assert got[name] == pytest.approx(value, rel=1e-6), (max_batches, name)


BATCHNORM_MODEL = """
from torch import nn

def build():
    return nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
"""


@pytest.mark.slow
def test_a_rank_with_no_evaluation_batch_does_not_hang_a_model_with_buffers(
    tmp_path: Path,
) -> None:
    """DDP's forward is itself a collective (it broadcasts buffers); with one validation
    batch for two ranks, rank 1 never calls it. Evaluation runs the inner module instead,
    after one broadcast of rank 0's buffers on every rank."""
    script, env = _cli_with_modules(tmp_path, bn_model=BATCHNORM_MODEL)
    out = tmp_path / "run"
    args = ["digits-classifier", "--no-progress", "--out", str(out), "--max-steps", "6",
            "--set", "model={kind: import, target: 'bn_model:build'}",
            "--set", "eval={every_steps: 3, max_batches: 1}",
            "--set", "training.device=cpu"]  # fmt: skip
    subprocess.run([*TORCHRUN, str(script), *args], env=env, check=True, timeout=300)
    events = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    evals = {e["step"]: e["metrics"]["val_loss"] for e in events if e["kind"] == "eval"}
    assert sorted(evals) == [3, 6] and all(0.0 < v < 10.0 for v in evals.values())


def test_each_rank_draws_the_views_one_process_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """Contrastive evaluation draws random views: rank 1 of 2, taking batches 1 and 3, must
    draw for them what one process evaluating all four draws, so the reduced numbers are
    one process's. (The reduction itself is left out: each rank's means are combined here,
    its batches being the same size.)"""
    from torchsmith.trainer import ContrastiveTask, RunningMean, evaluate
    from torchsmith.trainer._distributed import Dist
    from torchsmith.trainer._models import Encoder

    monkeypatch.setattr("torchsmith.trainer._evaluate._reduce", lambda *args: None)
    torch.manual_seed(0)
    model, task = Encoder(64, 32, 16), ContrastiveTask()
    batches = [(torch.rand(8, 64), torch.zeros(8)) for _ in range(4)]
    one = evaluate(model, task, batches, seed=5)
    ranks = [evaluate(model, task, batches, seed=5, dist=Dist(rank, 2)) for rank in (0, 1)]
    combined = RunningMean()
    for values in ranks:
        combined.update(values, 2)  # two batches of 8 each
    for name, value in combined.compute().items():
        assert value == pytest.approx(one[name], rel=1e-6), name


# Per rank: the augmentation RNG (contrastive), a memory bank of its own batches (ntxent),
# the CLIP scale, token counts that differ by rank (causal_lm, reduced for the loss).
DDP_TASKS = {
    "contrastive, memory bank": [
        "task={kind: contrastive, loss: ntxent, loss_kwargs: {memory_bank_size: 32}}",
        "model={kind: encoder, hidden: 16}",
    ],
    "clip": [
        "task.kind=clip",
        "model={kind: clip, embed_dim: 8, hidden: 16}",
        "data={kind: digits, captions: true}",
    ],
    "causal_lm": [
        "task.kind=causal_lm",
        "data={kind: text, block_size: 8}",
        "model={kind: gpt, block_size: 8, n_layer: 1, n_head: 2, n_embd: 8}",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(DDP_TASKS))
def test_every_task_resumes_exactly_under_ddp(tmp_path: Path, task: str) -> None:
    """Stopped at step 5 (between logs, evaluations and checkpoints) and resumed, a
    2-process run ends on the same weights and writes the same log as one that never
    stopped, its stop's own events aside."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    settings = [
        *DDP_TASKS[task],
        "loader.batch_size=8",
        "training.grad_accum=2",
        "training.log_every=3",
        "eval={every_steps: 4, max_batches: 2}",
        "checkpoint={every_steps: 6, metric: val_loss, mode: min}",
        "training.device=cpu",
    ]

    def ddp(out: Path, *extra: str) -> None:
        args = ["digits-classifier", "--no-progress", "--out", str(out), "--max-steps", "10"]
        args += [arg for setting in settings for arg in ("--set", setting)]
        subprocess.run([*TORCHRUN, str(script), *args, *extra], env=env, check=True)

    ddp(tmp_path / "one")
    ddp(tmp_path / "two", "--max-steps", "5")
    ddp(tmp_path / "two", "--resume", "latest")
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    assert_same_log(logged_events(tmp_path / "one"), logged_events(tmp_path / "two"), {5})
