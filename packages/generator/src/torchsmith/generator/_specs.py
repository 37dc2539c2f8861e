"""One validated schema per model family, with Hugging Face config key names.

A transformers ``config.json`` of the same architecture validates as a spec: keys this
generator does not use are dropped by the loader, the ones it uses keep their HF names
and defaults. Each schema knows its analytic parameter count and a tiny variant of
itself used by the generated tests and by validation.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PositiveInt = Field(ge=1)


class FamilySpec(BaseModel):
    """Fields and metadata shared by every family's schema."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    family: ClassVar[str]
    kind: ClassVar[str]
    model_type: ClassVar[str]
    hf_class: ClassVar[str]
    main_output: ClassVar[str]

    def num_parameters(self) -> int:
        raise NotImplementedError

    def tiny(self) -> dict[str, Any]:
        """Overrides that shrink this spec to a model that runs in milliseconds."""
        raise NotImplementedError

    def output_shape(self, inputs: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        """The main output's shape for inputs of these shapes (checked by validation)."""
        raise NotImplementedError

    def shrunk(self) -> FamilySpec:
        """This spec with its tiny overrides applied (nested configs merged)."""
        data = self.model_dump()
        for key, value in self.tiny().items():
            data[key] = {**data[key], **value} if isinstance(value, dict) else value
        return type(self).model_validate(data)

    def config_json(self) -> dict[str, Any]:
        """The generated config.json: the spec plus what transformers needs to read it."""
        return {"model_type": self.model_type, "architectures": [self.hf_class]} | (
            self.model_dump(mode="json")
        )


def _divides(heads: int, width: int, heads_field: str, width_field: str) -> None:
    if width % heads:
        raise ValueError(
            f"{heads_field}={heads} must divide {width_field}={width} "
            f"(allowed: a divisor of {width})"
        )


def _layer(hidden: int, inner: int, norms: int, bias: bool = True) -> int:
    """Attention (four hidden x hidden projections) + two-layer MLP + LayerNorms."""
    b = 1 if bias else 0
    attention = 4 * (hidden * hidden + b * hidden)
    mlp = hidden * inner + b * inner + inner * hidden + b * hidden
    return attention + mlp + norms * 2 * hidden


class GPT2Spec(FamilySpec):
    family: ClassVar[str] = "gpt2"
    kind: ClassVar[str] = "decoder-only"
    model_type: ClassVar[str] = "gpt2"
    hf_class: ClassVar[str] = "GPT2LMHeadModel"
    main_output: ClassVar[str] = "logits"

    vocab_size: int = Field(default=50257, ge=1)
    n_positions: int = Field(default=1024, ge=1)
    n_embd: int = Field(default=768, ge=1)
    n_layer: int = Field(default=12, ge=1)
    n_head: int = Field(default=12, ge=1)
    n_inner: int | None = Field(default=None, ge=1)
    activation_function: Literal["gelu_new", "gelu", "gelu_pytorch_tanh", "relu", "silu"] = (
        "gelu_new"
    )
    layer_norm_epsilon: float = Field(default=1e-5, gt=0, lt=1)
    tie_word_embeddings: bool = True

    @model_validator(mode="after")
    def _check_heads(self) -> GPT2Spec:
        _divides(self.n_head, self.n_embd, "n_head", "n_embd")
        return self

    def num_parameters(self) -> int:
        e, inner = self.n_embd, self.n_inner or 4 * self.n_embd
        # c_attn is one (e, 3e) projection, c_proj (e, e): the same count as four (e, e).
        per_layer = _layer(e, inner, norms=2)
        head = 0 if self.tie_word_embeddings else self.vocab_size * e
        return (self.vocab_size + self.n_positions) * e + self.n_layer * per_layer + 2 * e + head

    def output_shape(self, inputs: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        return (*inputs["input_ids"], self.vocab_size)

    def tiny(self) -> dict[str, Any]:
        return {
            "vocab_size": min(self.vocab_size, 128),
            "n_positions": min(self.n_positions, 64),
            "n_embd": 32,
            "n_layer": 2,
            "n_head": 4,
            "n_inner": None if self.n_inner is None else 64,
        }


class LlamaSpec(FamilySpec):
    family: ClassVar[str] = "llama"
    kind: ClassVar[str] = "decoder-only (RoPE, RMSNorm, SwiGLU)"
    model_type: ClassVar[str] = "llama"
    hf_class: ClassVar[str] = "LlamaForCausalLM"
    main_output: ClassVar[str] = "logits"

    vocab_size: int = Field(default=32000, ge=1)
    hidden_size: int = Field(default=4096, ge=1)
    intermediate_size: int = Field(default=11008, ge=1)
    num_hidden_layers: int = Field(default=32, ge=1)
    num_attention_heads: int = Field(default=32, ge=1)
    num_key_value_heads: int | None = Field(default=None, ge=1)
    head_dim: int | None = Field(default=None, ge=2)
    max_position_embeddings: int = Field(default=2048, ge=1)
    rms_norm_eps: float = Field(default=1e-6, gt=0, lt=1)
    rope_theta: float = Field(default=10000.0, gt=0)
    hidden_act: Literal["silu"] = "silu"
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False

    @model_validator(mode="before")
    @classmethod
    def _rope_parameters(cls, data: Any) -> Any:
        # transformers >= 5 nests rope_theta in rope_parameters; accept both layouts.
        if isinstance(data, dict) and isinstance(data.get("rope_parameters"), dict):
            data = dict(data)
            rope = data.pop("rope_parameters")
            if rope.get("rope_type", "default") != "default":
                raise ValueError(
                    f"rope_parameters.rope_type={rope['rope_type']!r} is not supported "
                    "(allowed: 'default')"
                )
            data.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
        return data

    @model_validator(mode="after")
    def _check_heads(self) -> LlamaSpec:
        if self.head_dim is None:
            _divides(
                self.num_attention_heads, self.hidden_size, "num_attention_heads", "hidden_size"
            )
        if self.head_dim is not None and self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        _divides(
            self.kv_heads, self.num_attention_heads, "num_key_value_heads", "num_attention_heads"
        )
        return self

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    def num_parameters(self) -> int:
        h, i = self.hidden_size, self.intermediate_size
        hd = self.head_dim or h // self.num_attention_heads
        q, kv = self.num_attention_heads * hd, self.kv_heads * hd
        attention = h * q + 2 * h * kv + q * h + (q + 2 * kv + h if self.attention_bias else 0)
        mlp = 3 * h * i + (2 * i + h if self.mlp_bias else 0)
        per_layer = attention + mlp + 2 * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return self.vocab_size * h + self.num_hidden_layers * per_layer + h + head

    def output_shape(self, inputs: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        return (*inputs["input_ids"], self.vocab_size)

    def tiny(self) -> dict[str, Any]:
        grouped = self.kv_heads < self.num_attention_heads
        return {
            "vocab_size": min(self.vocab_size, 128),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2 if grouped else 4,
            "head_dim": None if self.head_dim is None else 8,
            "max_position_embeddings": min(self.max_position_embeddings, 64),
        }

    def config_json(self) -> dict[str, Any]:
        # Write both rope layouts so transformers 4 and 5 read the same theta.
        config = super().config_json()
        config["rope_parameters"] = {"rope_type": "default", "rope_theta": self.rope_theta}
        return config


class BertSpec(FamilySpec):
    family: ClassVar[str] = "bert"
    kind: ClassVar[str] = "encoder-only"
    model_type: ClassVar[str] = "bert"
    hf_class: ClassVar[str] = "BertModel"
    main_output: ClassVar[str] = "last_hidden_state"

    vocab_size: int = Field(default=30522, ge=1)
    hidden_size: int = Field(default=768, ge=1)
    num_hidden_layers: int = Field(default=12, ge=1)
    num_attention_heads: int = Field(default=12, ge=1)
    intermediate_size: int = Field(default=3072, ge=1)
    hidden_act: Literal["gelu", "gelu_new", "relu", "silu"] = "gelu"
    max_position_embeddings: int = Field(default=512, ge=1)
    type_vocab_size: int = Field(default=2, ge=1)
    layer_norm_eps: float = Field(default=1e-12, gt=0, lt=1)
    pad_token_id: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> BertSpec:
        _divides(self.num_attention_heads, self.hidden_size, "num_attention_heads", "hidden_size")
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"pad_token_id={self.pad_token_id} must be < vocab_size")
        return self

    def num_parameters(self) -> int:
        h = self.hidden_size
        embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * h
        per_layer = _layer(h, self.intermediate_size, norms=2)
        return embeddings + 2 * h + self.num_hidden_layers * per_layer

    def output_shape(self, inputs: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        return (*inputs["input_ids"], self.hidden_size)

    def tiny(self) -> dict[str, Any]:
        return {
            "vocab_size": min(self.vocab_size, 128),
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "max_position_embeddings": min(self.max_position_embeddings, 64),
            "pad_token_id": min(self.pad_token_id, 127),
        }


class T5Spec(FamilySpec):
    family: ClassVar[str] = "t5"
    kind: ClassVar[str] = "encoder-decoder"
    model_type: ClassVar[str] = "t5"
    hf_class: ClassVar[str] = "T5ForConditionalGeneration"
    main_output: ClassVar[str] = "logits"

    vocab_size: int = Field(default=32128, ge=3)  # pad and EOS, and one token to draw
    d_model: int = Field(default=512, ge=1)
    d_kv: int = Field(default=64, ge=1)
    d_ff: int = Field(default=2048, ge=1)
    num_layers: int = Field(default=6, ge=1)
    num_decoder_layers: int | None = Field(default=None, ge=1)
    num_heads: int = Field(default=8, ge=1)
    relative_attention_num_buckets: int = Field(default=32, ge=4)
    relative_attention_max_distance: int = Field(default=128, ge=2)
    layer_norm_epsilon: float = Field(default=1e-6, gt=0, lt=1)
    feed_forward_proj: Literal["relu", "gelu", "gated-gelu", "gated-relu", "gated-silu"] = "relu"
    tie_word_embeddings: bool = True

    @model_validator(mode="after")
    def _check(self) -> T5Spec:
        # The decoder's one-directional buckets: half of them exact, the rest log-spaced up
        # to max_distance, which must lie beyond them (the encoder needs only a quarter).
        exact = self.relative_attention_num_buckets // 2
        if self.relative_attention_max_distance <= exact:
            raise ValueError(
                f"relative_attention_max_distance={self.relative_attention_max_distance} must "
                f"exceed relative_attention_num_buckets // 2 = {exact} (the decoder's exact "
                "buckets)"
            )
        return self

    def num_parameters(self) -> int:
        d, inner, ff = self.d_model, self.num_heads * self.d_kv, self.d_ff
        attention = 4 * d * inner
        feed_forward = (3 if self.feed_forward_proj.startswith("gated") else 2) * d * ff
        encoder_block = attention + feed_forward + 2 * d
        decoder_block = 2 * attention + feed_forward + 3 * d
        decoder_layers = self.num_decoder_layers or self.num_layers
        relative_bias = 2 * self.relative_attention_num_buckets * self.num_heads
        head = 0 if self.tie_word_embeddings else self.vocab_size * d
        return (
            self.vocab_size * d
            + self.num_layers * encoder_block
            + decoder_layers * decoder_block
            + relative_bias
            + 2 * d
            + head
        )

    def output_shape(self, inputs: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        return (*inputs["decoder_input_ids"], self.vocab_size)

    def tiny(self) -> dict[str, Any]:
        return {
            "vocab_size": min(self.vocab_size, 128),
            "d_model": 32,
            "d_kv": 8,
            "d_ff": 64,
            "num_layers": 2,
            "num_decoder_layers": None if self.num_decoder_layers is None else 2,
            "num_heads": 4,
        }
