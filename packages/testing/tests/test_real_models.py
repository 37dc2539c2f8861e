"""The ModelTest suite on real models we did not write: transformers models in tiny configs.

The models are built from configs in code, so nothing is downloaded. Each class below is an
ordinary ModelTest subclass, collected by pytest like a user's; parameter counts are the
analytic formulas of each architecture, written out independently of the implementation.
GPT-2 runs by default; the others are marked slow (run with --run-slow).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from torchsmith.testing import ModelTest  # noqa: E402

VOCAB, SEQ, D = 97, 7, 16


class TestTinyGPT2(ModelTest):
    n_layer, n_positions = 2, 16
    expected_num_parameters = (
        VOCAB * D + n_positions * D + n_layer * (12 * D * D + 13 * D) + 2 * D
    )  # wte, wpe, blocks, ln_f; lm_head is tied to wte

    def make_model(self) -> nn.Module:
        config = transformers.GPT2Config(
            vocab_size=VOCAB,
            n_positions=self.n_positions,
            n_embd=D,
            n_layer=self.n_layer,
            n_head=2,
        )
        return transformers.GPT2LMHeadModel(config)

    def make_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.randint(0, VOCAB, (batch_size, SEQ))}

    def expected_output_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, SEQ, VOCAB)


@pytest.mark.slow
class TestTinyBert(ModelTest):
    layers, inner, positions = 2, 37, 32
    expected_num_parameters = (
        (VOCAB + positions + 2) * D
        + 2 * D  # word, position, token-type embeddings; LayerNorm
        + layers * (4 * (D * D + D) + 2 * D + (D * inner + inner) + (inner * D + D) + 2 * D)
        + D * D
        + D  # pooler
    )

    def make_model(self) -> nn.Module:
        config = transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=D,
            num_hidden_layers=self.layers,
            num_attention_heads=2,
            intermediate_size=self.inner,
            max_position_embeddings=self.positions,
        )
        return transformers.BertModel(config)

    def make_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        mask = torch.ones(batch_size, SEQ, dtype=torch.long)
        mask[0, SEQ - 2 :] = 0  # a padded row: padding must not leak across the batch
        return {"input_ids": torch.randint(0, VOCAB, (batch_size, SEQ)), "attention_mask": mask}


@pytest.mark.slow
class TestTinyT5(ModelTest):
    def make_model(self) -> nn.Module:
        config = transformers.T5Config(
            vocab_size=VOCAB,
            d_model=D,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=2,
            decoder_start_token_id=0,
        )
        return transformers.T5ForConditionalGeneration(config)

    def make_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": torch.randint(0, VOCAB, (batch_size, SEQ)),
            "decoder_input_ids": torch.randint(0, VOCAB, (batch_size, 5)),
        }


@pytest.mark.slow
class TestTinyViT(ModelTest):
    def make_model(self) -> nn.Module:
        config = transformers.ViTConfig(
            image_size=16,
            patch_size=4,
            num_channels=3,
            hidden_size=D,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
        )
        return transformers.ViTModel(config)

    def make_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.randn(batch_size, 3, 16, 16)}

    def expected_output_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, (16 // 4) ** 2 + 1, D)  # patches plus the CLS token


@pytest.mark.slow
class TestTinyCLIP(ModelTest):
    def make_model(self) -> nn.Module:
        text = {
            "vocab_size": VOCAB,
            "hidden_size": D,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
        }
        vision = {
            "image_size": 16,
            "patch_size": 8,
            "hidden_size": D,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
        }
        config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)
        return transformers.CLIPModel(config)

    def make_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": torch.randint(0, VOCAB, (batch_size, SEQ)),
            "pixel_values": torch.randn(batch_size, 3, 16, 16),
        }

    def output_of(self, output: Any) -> torch.Tensor:
        # logits_per_image is (images, texts): its rows are not independent of the batch.
        return torch.cat([output.image_embeds, output.text_embeds], dim=-1)
