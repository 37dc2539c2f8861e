"""Measure this machine's timing noise, to calibrate torchsmith-bench's synthetic study.

    python tests/performance/bench_noise.py [processes] [> noise.json]

Each process times the same small MLP forward with the default MeasureConfig (as
``torchsmith bench run`` would) and reports its samples. Printed: the within-run spread
(robust CV of samples), the between-run spread (CV of the per-process medians) and the
right-tail outlier rate, and for interleaved A/B of one callable against itself the ratio
of medians; packages/bench/tests/test_decision_study.py models those numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

CHILD = """
import json, torch
from torchsmith.bench._timer import measure, measure_interleaved
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
x = torch.randn(32, 256)
with torch.no_grad():
    m = measure(lambda: net(x))
    a, b = measure_interleaved(lambda: net(x), lambda: net(x))
print(json.dumps({"samples": m.samples, "a": a.samples, "b": b.samples}))
"""


def main(processes: int = 12) -> None:
    runs, ab = [], []
    for _ in range(processes):
        out = subprocess.run(
            [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True
        )
        data = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append(np.array(data["samples"]))
        ab.append(float(np.median(data["b"]) / np.median(data["a"])))
    medians = np.array([np.median(r) for r in runs])
    # Robust within-run CV: IQR / 1.349 is sigma for a normal; relative to the median.
    within = [
        float(np.subtract(*np.quantile(r, [0.75, 0.25])) / 1.349 / np.median(r)) for r in runs
    ]
    log_medians = np.log(medians)
    outliers = [float(np.mean(r > np.median(r) * 1.10)) for r in runs]
    print(
        json.dumps(
            {
                "processes": processes,
                "samples_per_run": [len(r) for r in runs],
                "within_run_cv_median": float(np.median(within)),
                "within_run_cv_max": float(np.max(within)),
                "between_run_sd_log": float(log_medians.std(ddof=1)),
                "outlier_rate_gt_10pct": float(np.mean(outliers)),
                "medians_us": [round(m * 1e6, 3) for m in medians],
                "interleaved_identical_ratios": [round(r, 4) for r in ab],
                "within_run_cv": [round(w, 4) for w in within],
                # Pooling two processes' samples (as --rounds 2 does): spread of the pooled medians.
                "between_pooled_pairs_sd_log": float(
                    np.log(
                        [
                            np.median(np.concatenate([runs[i], runs[i + 1]]))
                            for i in range(0, len(runs) - 1, 2)
                        ]
                    ).std(ddof=1)
                ),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 12)
