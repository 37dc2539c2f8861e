"""CUDA timing and memory; skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from torchsmith.bench import MeasureConfig, measure
from torchsmith.bench._memory import cuda_peak_bytes
from torchsmith.bench._timer import cuda_sync

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_work_is_synchronised_and_its_peak_memory_recorded() -> None:
    a = torch.randn(1024, 1024, device="cuda")

    def matmul() -> object:
        return a @ a

    result = measure(matmul, MeasureConfig(max_time=0.2))
    assert cuda_sync() is torch.cuda.synchronize
    # Asynchronous launches would time at a few microseconds; a synchronised 1024^3
    # matmul takes far longer than a launch.
    assert min(result.samples) > 1e-5
    peak = cuda_peak_bytes(matmul)
    assert peak is not None and peak >= 2 * 1024 * 1024 * 4  # a and the product
