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

SCRIPT = "import sys; from torchsmith.trainer._cli import main; sys.exit(main(sys.argv[1:]))\n"
COMMON = ["digits-classifier", "--no-progress", "--set", "model.hidden=[32]",
          "--set", "eval.every_steps=null", "--set", "training.grad_accum=2",
          "--set", "model.dropout=0.1", "--set", "training.log_every=4"]  # fmt: skip


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "latest" / "model.safetensors"))


@pytest.mark.slow
def test_two_gloo_processes_match_one_and_resume_exactly(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

    def ddp(out: Path, *extra: str) -> None:
        # Per process 16 x 2 micro-batches: 64 examples per step in all.
        args = [*COMMON, "--out", str(out), "--set", "loader.batch_size=16", *extra]
        subprocess.run([*torchrun, str(script), *args], env=env, check=True)

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
