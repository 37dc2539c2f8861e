"""Instructions per training step, the trainer against a hand-written loop, counted by callgrind.

Timing a 0.45 ms step to 0.1% on a shared machine takes hundreds of interleaved rounds,
and even then the ratio moves by about half a percent from run to run. Callgrind counts
the instructions each side executes, the same count on every run: the work the trainer
adds per step, free of noise. It does not count what that work costs in time (cache
misses, branch mispredictions), so it complements ``test_trainer_overhead.py`` rather than
replacing it.

    python tests/performance/trainer_instructions.py [--epochs 20]

Each side (the digits MLP of ``test_digits_mlp_overhead``: batch 32, one thread, the
trainer's own loader on both sides) runs under valgrind in its own process twice: one
warm-up epoch, then none or ``--epochs`` more. Imports and set-up cancel in the
difference. Needs valgrind (Debian: ``apt install valgrind``); about 10 minutes on two
cores. TORCHSMITH_BENCH_DIR, if set, keeps the counts as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).parent


def child(side: str, epochs: int) -> None:
    """Run one warm-up epoch, then ``epochs`` more, of ``side``."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(HERE))
    import test_trainer_overhead as bench

    from torchsmith.trainer import ClassificationTask, digits

    torch.set_num_threads(1)
    train, _ = digits()
    model, opt = bench._digits_parts()
    print(f"steps per epoch: {len(train) // 32}")
    if side == "hand":
        loader = bench._hand_loader(train, 32)
        bench._hand_epoch(model, opt, loader, F.cross_entropy, 1 + epochs)
    else:
        trainer = bench._trainer(model, opt, train, 32, ClassificationTask())
        bench._trainer_epoch(trainer, 1)
        if epochs:
            bench._trainer_epoch(trainer, epochs)


def count(side: str, epochs: int) -> tuple[int, int]:
    """Instructions callgrind counts for ``child(side, epochs)`` in a fresh process, and the
    steps per epoch."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            side,
            str(epochs),
        ],
        capture_output=True,
        text=True,
        check=True,
        # A fixed hash seed: with a random one, set and dict layouts (and so the count of
        # an import) differ by millions of instructions from process to process.
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    per_epoch = re.search(r"steps per epoch: (\d+)", out.stdout)
    if found is None or per_epoch is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(found.group(1)), int(per_epoch.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "EPOCHS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    runs = [(side, n) for side in ("hand", "trainer") for n in (0, args.epochs)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(runs, pool.map(lambda run: count(*run), runs), strict=True))
    counts = {run: instructions for run, (instructions, _) in results.items()}
    steps = args.epochs * results["hand", 0][1]
    per_step = {
        side: (counts[side, args.epochs] - counts[side, 0]) / steps for side in ("hand", "trainer")
    }
    ratio = per_step["trainer"] / per_step["hand"]
    print(
        f"digits MLP, batch 32, 1 thread, {steps} steps: hand {per_step['hand']:,.0f} "
        f"instructions/step, trainer {per_step['trainer']:,.0f}, ratio {ratio:.4f} "
        f"({per_step['trainer'] - per_step['hand']:+,.0f} per step)"
    )
    if out := os.environ.get("TORCHSMITH_BENCH_DIR"):
        path = Path(out) / "trainer_instructions.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [[side, epochs, n] for (side, epochs), n in counts.items()]
        path.write_text(json.dumps({"steps": steps, "counts": rows}))


if __name__ == "__main__":
    main()
