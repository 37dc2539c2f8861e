"""Generated models against transformers, side by side in one process, same weights.

For GPT-2, BERT and the Llama-style model at a small but not tiny size (4 layers, width
256, batch 4, 128 tokens) on CPU with one thread: forward under inference_mode, timed
interleaved A/B (the order alternates every round) so load on a shared machine hits both
sides alike. Prints the raw samples, medians, spread and ratio = generated / transformers;
asserts only a generous sanity bound. TORCHSMITH_BENCH_DIR keeps the samples as JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from torchsmith.generator import generate

pytestmark = pytest.mark.perf
transformers = pytest.importorskip("transformers")

ROUNDS = 15
CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "gpt2": (
        "gpt2",
        {"n_layer": 4, "n_embd": 256, "n_head": 8, "vocab_size": 1000},
        "GPT2LMHeadModel",
    ),
    "bert": (
        "bert-base-uncased",
        {
            "num_hidden_layers": 4,
            "hidden_size": 256,
            "num_attention_heads": 8,
            "intermediate_size": 1024,
            "vocab_size": 1000,
        },
        "BertModel",
    ),
    "llama": (
        "smollm-135m",
        {
            "num_hidden_layers": 4,
            "hidden_size": 256,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "intermediate_size": 704,
            "vocab_size": 1000,
        },
        "LlamaForCausalLM",
    ),
}


def _import(directory: Path) -> Any:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"perf_{directory.name}", directory / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _interleaved(
    a: Callable[[], object], b: Callable[[], object]
) -> tuple[list[float], list[float]]:
    times_a: list[float] = []
    times_b: list[float] = []
    for _ in range(3):
        a(), b()  # warm-up
    for round_ in range(ROUNDS):
        order = [(a, times_a), (b, times_b)] if round_ % 2 == 0 else [(b, times_b), (a, times_a)]
        for fn, times in order:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times_a, times_b


@pytest.mark.parametrize("case", list(CASES))
def test_generated_forward_speed_against_transformers(case: str, tmp_path: Path) -> None:
    preset, overrides, hf_class = CASES[case]
    out = tmp_path / case
    generate(preset, out, overrides=overrides, validate=False)
    module = _import(out)
    torch.manual_seed(0)
    reference = getattr(transformers, hf_class)(transformers.AutoConfig.from_pretrained(out)).eval()
    reference.save_pretrained(tmp_path / "hf")
    ours = module.build_model(device="cpu").eval()
    module.load_weights(ours, tmp_path / "hf" / "model.safetensors")
    inputs = module.example_inputs(batch_size=4, seq_len=128, device="cpu")

    def run_ours() -> object:
        with torch.inference_mode():
            return ours(**inputs)

    def run_reference() -> object:
        with torch.inference_mode():
            return reference(**inputs)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ours_s, reference_s = _interleaved(run_ours, run_reference)
    finally:
        torch.set_num_threads(threads)
    ratio = statistics.median(ours_s) / statistics.median(reference_s)
    spread = (min(ours_s) / max(reference_s), max(ours_s) / min(reference_s))
    print(
        f"\n{case}: generated median {statistics.median(ours_s) * 1e3:.2f} ms, "
        f"transformers {statistics.median(reference_s) * 1e3:.2f} ms, ratio {ratio:.3f} "
        f"(extremes {spread[0]:.2f}-{spread[1]:.2f})\n"
        f"  generated samples (ms): {[round(t * 1e3, 2) for t in ours_s]}\n"
        f"  transformers samples (ms): {[round(t * 1e3, 2) for t in reference_s]}"
    )
    if os.environ.get("TORCHSMITH_BENCH_DIR"):
        target = Path(os.environ["TORCHSMITH_BENCH_DIR"]) / f"generator_{case}.json"
        target.write_text(json.dumps({"generated": ours_s, "transformers": reference_s}))
    assert ratio < 3.0, f"generated {case} is {ratio:.2f}x slower than transformers"
