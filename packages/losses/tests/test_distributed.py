"""gather_distributed=True on 2 CPU ranks (gloo) equals one process on the whole batch.

Guards against lightly #1528 (gather backward that does not sum), lightly #1977
(all_reduce outside autograd scaling gradients by 1/world) and open_clip #616.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

WORKER = Path(__file__).with_name("dist_worker.py")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    tmp = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(tmp / "store"), str(tmp)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(2)]


CASES = [
    "clip",
    "clip_chunked",
    "siglip",
    "siglip_chunked",
    "ntxent",
    "ntxent_chunked",
    "cross_modal",
    "vicreg",
    "barlow_twins",
    "supcon",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_two_ranks_equal_one_process(results, case):
    for rank in results:
        r = rank[case]
        torch.testing.assert_close(r["value"], r["ref_value"], rtol=1e-10, atol=1e-12)
        for got, want in zip(r["grads"], r["ref_grads"], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(r["x_grad"], r["ref_x_grad"], rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_a_gather_without_summed_backward_would_be_caught(results):
    for rank in results:
        r = rank["unsummed_backward"]
        assert not torch.allclose(r["grad"], r["ref_grad"], rtol=1e-3)


@pytest.mark.slow
def test_moco_enqueues_keys_of_every_rank(results):
    for rank in results:
        r = rank["moco_queue"]
        keys = r["keys"] / r["keys"].norm(dim=1, keepdim=True)
        torch.testing.assert_close(r["queue"], keys)
