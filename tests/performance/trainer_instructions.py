"""Instructions per training step, the trainer against a hand-written loop, counted by callgrind.

Timing a 0.45 ms step to 0.1% on a shared machine takes hundreds of interleaved rounds,
and even then the ratio moves by about half a percent from run to run. Callgrind counts
the instructions each side executes, the same count on every run: the work the trainer
adds per step, free of noise. It does not count what that work costs in time (cache
misses, branch mispredictions), so it complements ``test_trainer_overhead.py`` rather than
replacing it.

    python tests/performance/trainer_instructions.py [--epochs 20]
    python tests/performance/trainer_instructions.py --work char-gpt --epochs 2

Each side (the digits MLP of ``test_digits_mlp_overhead``, or the char-GPT of
``test_char_gpt_overhead``: batch 32, one thread, the same model and optimizer, the
trainer's own loader on both sides) runs under valgrind in its own process twice: one
warm-up epoch, then none or ``--epochs`` more. Imports and set-up cancel in the
difference. Needs valgrind (Debian: ``apt install valgrind``); about 10 minutes on two
cores either way. ``--simulate`` adds callgrind's cache and branch-predictor models and a cycle
estimate from them: the extra work is interpreter code, which misses and mispredicts more
per instruction than the tensor kernels, so it costs more time than its share of
instructions. TORCHSMITH_BENCH_DIR, if set, keeps the counts as JSON.
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


def child(side: str, epochs: int, work: str) -> None:
    """Run one warm-up epoch, then ``epochs`` more, of ``side`` on ``work``."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(HERE))
    import test_trainer_overhead as bench

    from torchsmith.trainer import CausalLMTask, ClassificationTask, digits

    torch.set_num_threads(1)
    if work == "digits":
        train, _ = digits()
        model, opt = bench._digits_parts()
        task, loss_fn = ClassificationTask(), F.cross_entropy
    else:
        train, model, opt = bench._char_gpt_parts()
        task, loss_fn = CausalLMTask(), bench._lm_loss
    print(f"steps per epoch: {len(train) // 32}")
    if side == "hand":
        loader = bench._hand_loader(train, 32)
        bench._hand_epoch(model, opt, loader, loss_fn, 1 + epochs)
    else:
        trainer = bench._trainer(model, opt, train, 32, task)
        bench._trainer_epoch(trainer, 1)
        if epochs:
            bench._trainer_epoch(trainer, epochs)


# With --simulate: callgrind's cache (I1, D1, LL) and branch predictor models add these.
EVENTS = ("Ir", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw", "Bcm", "Bim")


def count(side: str, epochs: int, work: str, simulate: bool = False) -> tuple[dict[str, int], int]:
    """The events callgrind counts for ``child(side, epochs, work)`` in a fresh process (``Ir``,
    instructions, alone unless ``simulate``), and the steps per epoch."""
    sims = ["--cache-sim=yes", "--branch-sim=yes"] if simulate else []
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            *sims,
            sys.executable,
            __file__,
            "--child",
            side,
            str(epochs),
            work,
        ],
        capture_output=True,
        text=True,
        check=True,
        # A fixed hash seed: with a random one, set and dict layouts (and so the count of
        # an import) differ by millions of instructions from process to process.
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"},
    )
    names = re.search(r"Events +: ([\w ]+)", out.stderr)
    found = re.search(r"Collected : ([\d ]+)", out.stderr)
    per_epoch = re.search(r"steps per epoch: (\d+)", out.stdout)
    if names is None or found is None or per_epoch is None:
        raise RuntimeError(f"no counts in valgrind's output:\n{out.stderr[-2000:]}")
    counts = dict(zip(names.group(1).split(), map(int, found.group(1).split()), strict=True))
    return {k: v for k, v in counts.items() if k in EVENTS}, int(per_epoch.group(1))


def cycle_estimate(events: dict[str, float]) -> float:
    """KCachegrind's cycle estimate: Ir + 10 per L1 miss or mispredicted branch + 100 per
    last-level miss. Crude (no overlap, simple models), but it weighs what Ir alone does not."""
    l1 = events["I1mr"] + events["D1mr"] + events["D1mw"]
    last_level = events["ILmr"] + events["DLmr"] + events["DLmw"]
    return events["Ir"] + 10 * (l1 + events["Bcm"] + events["Bim"]) + 100 * last_level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--work",
        choices=["digits", "char-gpt"],
        default="digits",
        help="the digits MLP (default), or char-GPT (about 1 s an epoch under callgrind: "
        "give it --epochs 2)",
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="also simulate caches and branch prediction (about 3x slower)",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("SIDE", "EPOCHS", "WORK"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return
    runs = [(side, n) for side in ("hand", "trainer") for n in (0, args.epochs)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = list(pool.map(lambda run: count(run[0], run[1], args.work, args.simulate), runs))
    results = dict(zip(runs, found, strict=True))
    steps = args.epochs * results["hand", 0][1]
    per_step = {  # each event's count per step: the epochs' run less the warm-up alone
        side: {
            name: (results[side, args.epochs][0][name] - results[side, 0][0][name]) / steps
            for name in results[side, 0][0]
        }
        for side in ("hand", "trainer")
    }
    hand, ours = per_step["hand"], per_step["trainer"]
    work = "digits MLP" if args.work == "digits" else "char-GPT (2x64, block 64)"
    print(
        f"{work}, batch 32, 1 thread, {steps} steps: hand {hand['Ir']:,.0f} "
        f"instructions/step, trainer {ours['Ir']:,.0f}, ratio {ours['Ir'] / hand['Ir']:.4f} "
        f"({ours['Ir'] - hand['Ir']:+,.0f} per step)"
    )
    if args.simulate:
        for name in EVENTS[1:]:
            print(f"  {name}/step: hand {hand[name]:,.0f}, trainer {ours[name] - hand[name]:+,.0f}")
        estimate = {side: cycle_estimate(events) for side, events in per_step.items()}
        print(
            f"  cycle estimate/step: hand {estimate['hand']:,.0f}, trainer "
            f"{estimate['trainer']:,.0f}, ratio {estimate['trainer'] / estimate['hand']:.4f}"
        )
    if out := os.environ.get("TORCHSMITH_BENCH_DIR"):
        path = Path(out) / f"trainer_instructions_{args.work}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [[side, epochs, events] for (side, epochs), (events, _) in results.items()]
        path.write_text(json.dumps({"steps": steps, "counts": rows}))


if __name__ == "__main__":
    main()
