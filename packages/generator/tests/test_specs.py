"""Spec schemas, presets and their loading: names, validation errors, overrides, files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from torchsmith.generator import (
    GPT2Spec,
    LlamaSpec,
    list_backends,
    list_families,
    list_presets,
    resolve_spec,
)
from torchsmith.generator._spec_loading import _parse_value
from torchsmith.interfaces import ConfigError

transformers = pytest.importorskip("transformers")

# preset -> transformers (config class, model class, extra model kwargs)
REFERENCES = {
    "bert-base-uncased": ("BertConfig", "BertModel", {"add_pooling_layer": False}),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", {}),
    "gpt2-medium": ("GPT2Config", "GPT2LMHeadModel", {}),
    "t5-small": ("T5Config", "T5ForConditionalGeneration", {}),
    "vit-base-patch16-224": ("ViTConfig", "ViTModel", {"add_pooling_layer": False}),
    "clip-vit-base-patch32": ("CLIPConfig", "CLIPModel", {}),
    "smollm-135m": ("LlamaConfig", "LlamaForCausalLM", {}),
}

# Published sizes of the released checkpoints' base models (without poolers).
PUBLISHED = {"gpt2": 124_439_808, "bert-base-uncased": 108_891_648, "t5-small": 60_506_624}


def test_listings() -> None:
    assert list_families() == ["bert", "gpt2", "llama", "t5", "vit", "clip"]
    assert set(list_presets()) == set(REFERENCES)
    assert list_presets()["smollm-135m"] == "llama"
    assert list_backends() == ["cpu", "cuda", "mps"]


@pytest.mark.parametrize("preset", list(REFERENCES))
def test_analytic_parameter_count_matches_transformers(preset: str) -> None:
    config_cls, model_cls, kwargs = REFERENCES[preset]
    spec = resolve_spec(preset).spec
    config = getattr(transformers, config_cls)(**spec.config_json())
    with torch.device("meta"):
        model = getattr(transformers, model_cls)(config, **kwargs)
    assert spec.num_parameters() == sum(p.numel() for p in model.parameters())
    if preset in PUBLISHED:
        assert spec.num_parameters() == PUBLISHED[preset]


def test_transformers_config_json_is_a_spec(tmp_path: Path) -> None:
    config = transformers.GPT2Config(n_layer=3, n_embd=48, n_head=6, vocab_size=99)
    config.save_pretrained(tmp_path / "tiny-gpt")
    resolved = resolve_spec(tmp_path / "tiny-gpt" / "config.json")
    assert resolved.name == "tiny-gpt"
    assert isinstance(resolved.spec, GPT2Spec)
    assert (resolved.spec.n_layer, resolved.spec.n_embd, resolved.spec.vocab_size) == (3, 48, 99)


def test_llama_config_json_of_transformers_5_reads_rope_theta(tmp_path: Path) -> None:
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, vocab_size=50)
    config.rope_parameters = {"rope_type": "default", "rope_theta": 500000.0}
    config.save_pretrained(tmp_path)
    spec = resolve_spec(tmp_path / "config.json").spec
    assert isinstance(spec, LlamaSpec)
    assert spec.rope_theta == 500000.0


def test_spec_files_in_toml_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('family = "gpt2"\nn_layer = 2\nname = "tiny"\n')
    (tmp_path / "b.yaml").write_text("family: bert\nnum_hidden_layers: 3\n")
    (tmp_path / "c.json").write_text(json.dumps({"family": "vit", "patch_size": 32}))
    assert resolve_spec(tmp_path / "a.toml").name == "tiny"
    assert resolve_spec(tmp_path / "b.yaml").spec.num_hidden_layers == 3  # type: ignore[attr-defined]
    assert resolve_spec(tmp_path / "c.json").spec.patch_size == 32  # type: ignore[attr-defined]


def test_overrides_from_strings_dicts_and_nested_paths() -> None:
    spec = resolve_spec(
        "gpt2", ["n_layer=2", "layer_norm_epsilon=1e-6", "tie_word_embeddings=false"]
    ).spec
    assert (spec.n_layer, spec.layer_norm_epsilon, spec.tie_word_embeddings) == (2, 1e-6, False)  # type: ignore[attr-defined]
    clip = resolve_spec("clip-vit-base-patch32", {"text_config.hidden_size": 64}).spec
    assert clip.text_config.hidden_size == 64  # type: ignore[attr-defined]
    assert clip.text_config.eos_token_id == 2  # type: ignore[attr-defined]  # preset kept


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["n_layers=2"], ["'n_layers'", "n_layer", "n_head"]),
        (["activation_function=tanh"], ["activation_function", "'gelu_new'", "'relu'"]),
        (["n_head=5"], ["n_head=5", "n_embd=768"]),
        (["n_layer=0"], ["n_layer", "greater than or equal to 1"]),
        (["n_layer"], ["key=value"]),
        (["n_layer.x=1"], ["no sub-fields"]),
    ],
)
def test_invalid_specs_name_the_field_and_allowed_values(
    overrides: list[str], words: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_spec("gpt2", overrides)
    for word in words:
        assert word in str(info.value)


def test_unknown_family_preset_and_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allowed are bert, gpt2"):
        resolve_spec({"family": "mamba"})
    with pytest.raises(ConfigError, match=r"model_type.*allowed are"):
        resolve_spec({"model_type": "mamba"})
    with pytest.raises(ConfigError, match="presets: bert-base-uncased"):
        resolve_spec("gpt-9")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_spec(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("n_layer = = 2")
    with pytest.raises(ConfigError, match=r"bad.toml.*could not be parsed"):
        resolve_spec(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="unknown field 'typo'"):
        resolve_spec({"family": "bert", "typo": 1})


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
          "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
        ({"model_type": "gpt2", "n_embd": 48, "n_head": 6, "scale_attn_weights": False},
         "scale_attn_weights"),
        ({"model_type": "gpt2", "n_embd": 48, "n_head": 6,
          "scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ({"model_type": "bert", "position_embedding_type": "relative_key"},
         "position_embedding_type"),
    ],
)  # fmt: skip
def test_a_config_key_that_changes_the_model_is_refused_not_dropped(
    tmp_path: Path, config: dict, key: str
) -> None:
    """A Llama 3.1 config's rope_scaling was dropped, so plain RoPE was built without a word."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=rf"spec field '{key}' = .* is not supported"):
        resolve_spec(tmp_path / "config.json")


def test_a_default_rope_scaling_and_the_defaults_are_taken(tmp_path: Path) -> None:
    base = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}
    for rope in (None, {"rope_type": "default"}, {"type": "default"}):
        (tmp_path / "config.json").write_text(json.dumps({**base, "rope_scaling": rope}))
        assert isinstance(resolve_spec(tmp_path / "config.json").spec, LlamaSpec)
    gpt2 = transformers.GPT2Config(n_layer=1, n_embd=48, n_head=6)  # every key as saved
    gpt2.save_pretrained(tmp_path / "g")
    assert isinstance(resolve_spec(tmp_path / "g" / "config.json").spec, GPT2Spec)


def test_names_that_could_escape_are_refused() -> None:
    for name in ['x"""; import os', "../up", "a b", "", "evil\n"]:
        with pytest.raises(ConfigError, match="'name'"):
            resolve_spec({"family": "gpt2", "name": name})


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_override_values_parse_integers(value: int) -> None:
    assert _parse_value(str(value)) == value


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_override_values_parse_floats(value: float) -> None:
    assert _parse_value(repr(value)) == value


@given(st.text(alphabet=st.characters(categories=["L"]), min_size=1))
def test_override_words_stay_strings(text: str) -> None:
    parsed = _parse_value(text)
    assert parsed == text or isinstance(parsed, bool | None)


def test_clip_config_json_keeps_nested_fields_and_drops_the_rest(tmp_path: Path) -> None:
    config = transformers.CLIPConfig(
        text_config={
            "hidden_size": 64,
            "num_attention_heads": 4,
            "vocab_size": 300,
            "eos_token_id": 299,
        },  # transformers' default, 49407, is past 300
        vision_config={"hidden_size": 48, "num_attention_heads": 4, "patch_size": 16},
        projection_dim=24,
    )
    config.save_pretrained(tmp_path)
    spec = resolve_spec(tmp_path / "config.json").spec
    assert spec.projection_dim == 24  # type: ignore[attr-defined]
    assert spec.text_config.vocab_size == 300  # type: ignore[attr-defined]
    assert spec.vision_config.patch_size == 16  # type: ignore[attr-defined]


@given(
    n_embd=st.integers(min_value=-4, max_value=96),
    n_head=st.integers(min_value=-2, max_value=12),
    eps=st.floats(min_value=-1.0, max_value=2.0),
)
def test_gpt2_numbers_validate_exactly_when_the_rules_hold(
    n_embd: int, n_head: int, eps: float
) -> None:
    overrides = {"n_embd": n_embd, "n_head": n_head, "layer_norm_epsilon": eps}
    valid = n_embd >= 1 and n_head >= 1 and n_embd % n_head == 0 and 0 < eps < 1
    if valid:
        spec = resolve_spec("gpt2", overrides).spec
        assert (spec.n_embd, spec.n_head) == (n_embd, n_head)  # type: ignore[attr-defined]
        assert spec.num_parameters() > 0
    else:
        with pytest.raises(ConfigError, match=r"n_embd|n_head|layer_norm_epsilon"):
            resolve_spec("gpt2", overrides)


@pytest.mark.parametrize("raw", ["None", "null", "~"])
def test_override_to_none_restores_an_optional_default(raw: str) -> None:
    spec = resolve_spec("gpt2", ["n_inner=64", f"n_inner={raw}"]).spec
    assert spec.n_inner is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", ".nan", ".inf"])
def test_non_finite_numbers_are_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="logit_scale_init_value"):
        resolve_spec("clip-vit-base-patch32", [f"logit_scale_init_value={raw}"])


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"family": "clip", "text_config": {"vocab_size": 1000}}, "eos_token_id=49407 must be"),
        ({"family": "clip", "text_config": {"vocab_size": 4, "eos_token_id": 2}}, "at least 5"),
        ({"family": "clip", "text_config": {"max_position_embeddings": 1}},
         "max_position_embeddings"),
        ({"family": "clip", "logit_scale_init_value": 1000.0}, "logit_scale_init_value"),
        ({"family": "t5", "relative_attention_max_distance": 10}, "num_buckets // 2 = 16"),
        ({"family": "t5", "vocab_size": 2}, "vocab_size"),
    ],
)  # fmt: skip
def test_values_the_generated_model_would_crash_on_are_refused_by_name(
    spec: dict, words: str
) -> None:
    """They passed on the tiny variant the checks build, then crashed full size."""
    with pytest.raises(ConfigError, match=re.escape(words)):
        resolve_spec(spec)


@pytest.mark.parametrize("name", ["007", "1.10", "yes", "null"])
def test_a_name_set_on_the_command_line_is_kept_as_typed(name: str) -> None:
    assert resolve_spec("gpt2", [f"name={name}"]).name == name
