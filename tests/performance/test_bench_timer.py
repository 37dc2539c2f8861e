"""torchsmith-bench's timer against torch.utils.benchmark, side by side in one process.

Both time the same MLP forward, alternating, several times; their medians must agree.
This checks the calibration and per-call normalisation against a timer we did not write.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.utils.benchmark as torch_benchmark

from torchsmith.bench import MeasureConfig, measure

pytestmark = pytest.mark.perf


@pytest.fixture
def one_thread():
    # Two OpenMP threads on a shared 2-core machine stall on each other (40 ms calls seen).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_median_agrees_with_torch_utils_benchmark() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    x = torch.randn(32, 256)

    def forward() -> object:
        with torch.no_grad():
            return net(x)

    ours, theirs = [], []
    for _ in range(5):  # alternate so drift hits both timers alike
        ours.append(float(np.median(measure(forward, MeasureConfig(max_time=0.3)).samples)))
        # torch's Timer defaults to one thread; ours times with whatever torch is set to.
        timer = torch_benchmark.Timer(
            "forward()", globals={"forward": forward}, num_threads=torch.get_num_threads()
        )
        theirs.append(timer.blocked_autorange(min_run_time=0.3).median)
    ratio = float(np.median(ours) / np.median(theirs))
    print(f"torchsmith-bench / torch.utils.benchmark median: {ratio:.3f}")
    assert 0.8 < ratio < 1.25
