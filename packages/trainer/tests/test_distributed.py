"""DDP under torchrun (gloo, 2 CPU processes) equals one process over the same global batches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = "import sys; from torchsmith.trainer._cli import main; sys.exit(main(sys.argv[1:]))\n"
ARGS = [
    "digits-classifier",
    "--max-steps",
    "12",
    "--no-progress",
    "--set",
    "model.hidden=[32]",
    "--set",
    "eval.every_steps=null",
    "--set",
    "training.grad_accum=2",
]


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    # Per process 16 x 2 micro-batches; one process sees the same 64 examples per step.
    subprocess.run(
        [*torchrun, str(script), *ARGS, "--out", str(ddp), "--set", "loader.batch_size=16"],
        env=env,
        check=True,
    )
    subprocess.run(
        [sys.executable, str(script), *ARGS, "--out", str(single), "--set", "loader.batch_size=32"],
        env=env,
        check=True,
    )
    a = load_file(str(ddp / "checkpoints" / "latest" / "model.safetensors"))
    b = load_file(str(single / "checkpoints" / "latest" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    # Only rank 0 wrote: one metrics log, one set of checkpoints.
    assert len(list((ddp / "checkpoints").glob("step-*"))) == 1
