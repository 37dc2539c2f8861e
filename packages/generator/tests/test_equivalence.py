"""The generated models reproduce transformers' outputs with transformers' weights.

For each family: build the transformers model from the generated config.json (tiny
sizes), save it with save_pretrained (the checkpoint layout users have on disk), load
that safetensors file into the generated model and compare the main outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from torchsmith.generator import resolve_spec

transformers = pytest.importorskip("transformers")

# (preset, extra overrides, transformers class)
CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "gpt2": ("gpt2", {}, "GPT2LMHeadModel"),
    "gpt2-untied-relu": (
        "gpt2",
        {"tie_word_embeddings": False, "activation_function": "relu", "n_inner": 48},
        "GPT2LMHeadModel",
    ),
    "bert": ("bert-base-uncased", {}, "BertModel"),
    "llama-gqa-tied": ("smollm-135m", {}, "LlamaForCausalLM"),
    "llama-mha-bias": (
        "smollm-135m",
        {"num_key_value_heads": 4, "attention_bias": True, "tie_word_embeddings": False},
        "LlamaForCausalLM",
    ),
    "vit": ("vit-base-patch16-224", {}, "ViTModel"),
    "vit-no-qkv-bias": ("vit-base-patch16-224", {"qkv_bias": False}, "ViTModel"),
    "clip-legacy-eos": ("clip-vit-base-patch32", {}, "CLIPModel"),
    "clip-eos-id": ("clip-vit-base-patch32", {"text_config.eos_token_id": 127}, "CLIPModel"),
    "t5": ("t5-small", {}, "T5ForConditionalGeneration"),
    # transformers 5 always ties T5's head (v1.1 checkpoints with their own lm_head are
    # then loaded differently), so only tied variants are compared.
    "t5-gated-gelu": (
        "t5-small",
        {"feed_forward_proj": "gated-gelu"},
        "T5ForConditionalGeneration",
    ),
    "t5-gated-silu": (
        "t5-small",
        {"feed_forward_proj": "gated-silu"},
        "T5ForConditionalGeneration",
    ),
}


def tiny_overrides(preset: str, extra: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in resolve_spec(preset).spec.tiny().items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat | extra


def main_output(output: Any, field: str) -> torch.Tensor:
    return getattr(output, field)


# One case per family runs by default; the variants run with --run-slow.
BASE_CASES = {"gpt2", "bert", "llama-gqa-tied", "vit", "clip-legacy-eos", "t5"}


@pytest.mark.parametrize(
    "case",
    [name if name in BASE_CASES else pytest.param(name, marks=pytest.mark.slow) for name in CASES],
)
def test_matches_transformers_with_its_weights(case: str, generated: Any, tmp_path: Path) -> None:
    preset, extra, hf_class = CASES[case]
    directory, module = generated(preset, tiny_overrides(preset, extra))
    spec = resolve_spec(preset, tiny_overrides(preset, extra)).spec

    torch.manual_seed(1)
    config = transformers.AutoConfig.from_pretrained(directory)
    reference = getattr(transformers, hf_class)(config).eval()
    reference.save_pretrained(tmp_path)

    ours = module.build_model(device="cpu")
    inputs = module.example_inputs(batch_size=3, device="cpu")
    with torch.no_grad():
        before = ours(**inputs)
        ignored = module.load_weights(ours, tmp_path / "model.safetensors")
        expected = main_output(reference(**inputs), spec.main_output)
        actual = ours(**inputs)

    assert not any(
        key.startswith(("encoder", "decoder", "transformer", "model.")) for key in ignored
    )
    assert actual.shape == expected.shape
    assert not torch.allclose(before, expected, atol=1e-3)  # the weights really changed it
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_parameter_names_are_transformers_names(generated: Any) -> None:
    preset = "bert-base-uncased"
    directory, module = generated(preset, tiny_overrides(preset, {}))
    config = transformers.AutoConfig.from_pretrained(directory)
    reference = transformers.BertModel(config, add_pooling_layer=False)
    assert set(module.build_model(device="cpu").state_dict()) == set(reference.state_dict())


def test_load_weights_names_missing_parameters(generated: Any, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    preset = "gpt2"
    _, module = generated(preset, tiny_overrides(preset, {}))
    model = module.build_model(device="cpu")
    state = {k: v for k, v in model.state_dict().items() if "ln_f" not in k}
    save_file(
        {k: v.contiguous() for k, v in state.items() if k != "lm_head.weight"},
        tmp_path / "w.safetensors",
    )
    with pytest.raises(KeyError, match="ln_f"):
        module.load_weights(model, tmp_path / "w.safetensors")


FAMILY_PRESETS = ["gpt2", "bert-base-uncased", "smollm-135m", "vit-base-patch16-224", "t5-small"]


@pytest.mark.parametrize("preset", [*FAMILY_PRESETS, "clip-vit-base-patch32"])
@pytest.mark.parametrize("backend", ["cuda", "mps"])
def test_runs_example_inputs_in_the_backends_dtype(
    preset: str, backend: str, generated: Any
) -> None:
    """example_inputs() stay float32 (pixel values too); the model casts them to its dtype.

    Built on the CPU in the backend's half dtype, as build_model() builds it on the GPU.
    """
    _, module = generated(preset, tiny_overrides(preset, {}), backend=backend)
    assert module.DTYPE in (torch.bfloat16, torch.float16)
    model = module.build_model(device="cpu", dtype=module.DTYPE).eval()
    inputs = module.example_inputs(batch_size=2, device="cpu")
    with torch.no_grad():
        output = model(**inputs)
    assert output.dtype == module.DTYPE
    assert torch.isfinite(output.float()).all()
