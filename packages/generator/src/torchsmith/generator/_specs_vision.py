"""Schemas of the vision families: ViT and the CLIP dual encoder."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._specs import FamilySpec, _divides, _layer


class ViTSpec(FamilySpec):
    family: ClassVar[str] = "vit"
    kind: ClassVar[str] = "vision encoder"
    model_type: ClassVar[str] = "vit"
    hf_class: ClassVar[str] = "ViTModel"
    main_output: ClassVar[str] = "last_hidden_state"

    hidden_size: int = Field(default=768, ge=1)
    num_hidden_layers: int = Field(default=12, ge=1)
    num_attention_heads: int = Field(default=12, ge=1)
    intermediate_size: int = Field(default=3072, ge=1)
    hidden_act: Literal["gelu", "gelu_new", "relu", "silu", "quick_gelu"] = "gelu"
    layer_norm_eps: float = Field(default=1e-12, gt=0, lt=1)
    image_size: int = Field(default=224, ge=1)
    patch_size: int = Field(default=16, ge=1)
    num_channels: int = Field(default=3, ge=1)
    qkv_bias: bool = True

    @model_validator(mode="after")
    def _check(self) -> ViTSpec:
        _divides(self.num_attention_heads, self.hidden_size, "num_attention_heads", "hidden_size")
        _divides(self.patch_size, self.image_size, "patch_size", "image_size")
        return self

    def num_parameters(self) -> int:
        h, p = self.hidden_size, self.patch_size
        patches = (self.image_size // p) ** 2
        embeddings = h + (patches + 1) * h + self.num_channels * p * p * h + h
        per_layer = _layer(h, self.intermediate_size, norms=2)
        if not self.qkv_bias:
            per_layer -= 3 * h
        return embeddings + self.num_hidden_layers * per_layer + 2 * h

    def output_shape(self, inputs: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        patches = (self.image_size // self.patch_size) ** 2
        return (inputs["pixel_values"][0], patches + 1, self.hidden_size)

    def tiny(self) -> dict[str, Any]:
        return {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "image_size": 32,
            "patch_size": 8,
        }


class CLIPTextSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    vocab_size: int = Field(default=49408, ge=1)
    hidden_size: int = Field(default=512, ge=1)
    intermediate_size: int = Field(default=2048, ge=1)
    num_hidden_layers: int = Field(default=12, ge=1)
    num_attention_heads: int = Field(default=8, ge=1)
    max_position_embeddings: int = Field(default=77, ge=2)  # a text is at least BOS, EOS
    hidden_act: Literal["quick_gelu", "gelu", "gelu_new", "relu"] = "quick_gelu"
    layer_norm_eps: float = Field(default=1e-5, gt=0, lt=1)
    # 2 is the original CLIP config's, where the highest id ends a text (HF's legacy rule)
    eos_token_id: int = Field(default=49407, ge=0)

    @model_validator(mode="after")
    def _check(self) -> CLIPTextSpec:
        _divides(self.num_attention_heads, self.hidden_size, "num_attention_heads", "hidden_size")
        # example_inputs draws the other tokens from 3 (after CLIP's specials) up to the end
        # token, which must lie in the embedding table
        end = self.vocab_size - 1 if self.eos_token_id == 2 else self.eos_token_id
        if not 4 <= end < self.vocab_size:
            raise ValueError(
                f"eos_token_id={self.eos_token_id} must be 2 (the original CLIP config: the "
                f"highest id ends a text, so vocab_size of at least 5) or from 4 to vocab_size "
                f"- 1 = {self.vocab_size - 1}"
            )
        return self


class CLIPVisionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    hidden_size: int = Field(default=768, ge=1)
    intermediate_size: int = Field(default=3072, ge=1)
    num_hidden_layers: int = Field(default=12, ge=1)
    num_attention_heads: int = Field(default=12, ge=1)
    image_size: int = Field(default=224, ge=1)
    patch_size: int = Field(default=32, ge=1)
    num_channels: int = Field(default=3, ge=1)
    hidden_act: Literal["quick_gelu", "gelu", "gelu_new", "relu"] = "quick_gelu"
    layer_norm_eps: float = Field(default=1e-5, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> CLIPVisionSpec:
        _divides(self.num_attention_heads, self.hidden_size, "num_attention_heads", "hidden_size")
        _divides(self.patch_size, self.image_size, "patch_size", "image_size")
        return self


class CLIPSpec(FamilySpec):
    family: ClassVar[str] = "clip"
    kind: ClassVar[str] = "dual encoder"
    model_type: ClassVar[str] = "clip"
    hf_class: ClassVar[str] = "CLIPModel"
    main_output: ClassVar[str] = "logits_per_image"

    text_config: CLIPTextSpec = Field(default_factory=CLIPTextSpec)
    vision_config: CLIPVisionSpec = Field(default_factory=CLIPVisionSpec)
    projection_dim: int = Field(default=512, ge=1)
    # log of the logit scale; CLIP's scale never exceeds 100 (log 100 = 4.605): a larger
    # one overflowed the forward check to "NaN or infinite values".
    logit_scale_init_value: float = Field(default=2.6592, ge=-10.0, le=4.6052)

    def num_parameters(self) -> int:
        t, v = self.text_config, self.vision_config
        text = (
            (t.vocab_size + t.max_position_embeddings) * t.hidden_size
            + t.num_hidden_layers * _layer(t.hidden_size, t.intermediate_size, norms=2)
            + 2 * t.hidden_size
        )
        patches = (v.image_size // v.patch_size) ** 2
        vision = (
            v.hidden_size * (1 + v.num_channels * v.patch_size**2 + patches + 1)
            + 4 * v.hidden_size  # pre_layrnorm and post_layernorm
            + v.num_hidden_layers * _layer(v.hidden_size, v.intermediate_size, norms=2)
        )
        projections = (t.hidden_size + v.hidden_size) * self.projection_dim
        return text + vision + projections + 1  # + logit_scale

    def output_shape(self, inputs: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        return (inputs["pixel_values"][0], inputs["input_ids"][0])

    def tiny(self) -> dict[str, Any]:
        shared = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
        t = self.text_config
        eos = t.eos_token_id if t.eos_token_id == 2 else 127  # keep the legacy argmax rule
        return {
            "text_config": shared
            | {
                "vocab_size": 128,
                "num_attention_heads": 4,
                "max_position_embeddings": min(t.max_position_embeddings, 32),
                "eos_token_id": eos,
            },
            "vision_config": shared | {"num_attention_heads": 4, "image_size": 32, "patch_size": 8},
            "projection_dim": 16,
        }
