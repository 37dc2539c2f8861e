"""Families by name and the named presets, with their published sizes.

Each preset is plain data in its family's Hugging Face config names; the sizes are those
of the released checkpoints (parameter counts are checked in the tests).
"""

from __future__ import annotations

from typing import Any

from ._specs import BertSpec, FamilySpec, GPT2Spec, LlamaSpec, T5Spec
from ._specs_vision import CLIPSpec, ViTSpec

FAMILIES: dict[str, type[FamilySpec]] = {
    spec.family: spec for spec in (BertSpec, GPT2Spec, LlamaSpec, T5Spec, ViTSpec, CLIPSpec)
}

# transformers model_type -> family, so a config.json names its own family.
MODEL_TYPES: dict[str, str] = {
    "bert": "bert",
    "gpt2": "gpt2",
    "llama": "llama",
    "t5": "t5",
    "vit": "vit",
    "clip": "clip",
}

PRESETS: dict[str, dict[str, Any]] = {
    "bert-base-uncased": {"family": "bert"},  # the family defaults are bert-base
    "gpt2": {"family": "gpt2"},  # 124M
    "gpt2-medium": {"family": "gpt2", "n_embd": 1024, "n_layer": 24, "n_head": 16},
    "t5-small": {"family": "t5"},
    "vit-base-patch16-224": {"family": "vit"},
    "clip-vit-base-patch32": {
        "family": "clip",
        # openai's config keeps the legacy eos_token_id=2: pool at the highest token id.
        "text_config": {"eos_token_id": 2},
    },
    # HuggingFaceTB/SmolLM-135M: a small Llama-architecture model with grouped KV heads.
    "smollm-135m": {
        "family": "llama",
        "vocab_size": 49152,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
    },
}
